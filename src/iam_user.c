/* Database user names for automatic IAM authentication (REFERENCE §6). */
#include <string.h>
#include <strings.h>

#include "csql/dialer.h"
#include "error.h"

#define SA_SUFFIX ".gserviceaccount.com"

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

int csql_iam_db_user(const char *database_version, const char *principal, char *buf, size_t buflen)
{
    if (database_version == NULL || principal == NULL || buf == NULL || buflen == 0) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "csql_iam_db_user: database_version, principal and buf are required");
    }
    buf[0] = '\0';
    size_t plen = strlen(principal);
    if (plen == 0) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "IAM principal is empty");
    }
    size_t keep;
    if (starts_with(database_version, "POSTGRES_")) {
        /* PostgreSQL: the full email, minus the service account domain suffix. */
        size_t slen = strlen(SA_SUFFIX);
        keep = plen;
        if (plen > slen && strcasecmp(principal + plen - slen, SA_SUFFIX) == 0) {
            keep = plen - slen;
        }
    } else if (starts_with(database_version, "MYSQL_")) {
        /* MySQL: user names are short; the part before '@'. */
        const char *at = strchr(principal, '@');
        keep = at ? (size_t)(at - principal) : plen;
        if (keep == 0) {
            return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                               "IAM principal \"%.200s\" has no user part before '@'", principal);
        }
    } else if (starts_with(database_version, "SQLSERVER_")) {
        return csql__error(CSQL_ERR_IAM_UNSUPPORTED,
                           "automatic IAM authentication is not supported on %.100s (SQL Server)",
                           database_version);
    } else {
        return csql__error(CSQL_ERR_UNSUPPORTED_INSTANCE,
                           "database version \"%.100s\" is not POSTGRES_*, MYSQL_* or SQLSERVER_*",
                           database_version);
    }
    if (keep + 1 > buflen) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "IAM database user for \"%.200s\" needs %zu bytes, buffer has %zu",
                           principal, keep + 1, buflen);
    }
    memcpy(buf, principal, keep);
    buf[keep] = '\0';
    return CSQL_OK;
}
