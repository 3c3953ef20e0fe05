/* Automatic IAM database authentication check of csql-emulator's server-side proxy. */
#include "emulator.h"

#include <stdio.h>
#include <string.h>

static const char GSA_SUFFIX[] = ".gserviceaccount.com";

int emu_iam_db_user(const char *version, const char *principal, char *out, size_t len)
{
    size_t n = strlen(principal);
    if (strncmp(version, "POSTGRES_", 9) == 0) {
        size_t sl = sizeof(GSA_SUFFIX) - 1;
        if (n > sl && strcmp(principal + n - sl, GSA_SUFFIX) == 0)
            n -= sl;
    } else if (strncmp(version, "MYSQL_", 6) == 0) {
        const char *at = strchr(principal, '@');
        if (at)
            n = (size_t)(at - principal);
    } else {
        return -1;
    }
    if (n == 0 || n >= len)
        return -1;
    memcpy(out, principal, n);
    out[n] = '\0';
    return 0;
}
