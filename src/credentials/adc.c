/*
 * Application Default Credentials (REFERENCE §3): $GOOGLE_APPLICATION_CREDENTIALS,
 * else gcloud's application_default_credentials.json (under $CLOUDSDK_CONFIG,
 * else $HOME/.config/gcloud), else the metadata server ($GCE_METADATA_HOST or
 * metadata.google.internal), which is only contacted when a token is needed.
 * A file that is named or present but bad is an error, never skipped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "creds_internal.h"
#include "error.h"

#define PATH_MAX_LEN 4096
#define ADC_FILE "application_default_credentials.json"

static int from_file(const char *path, const char *what, csql__token_source *out)
{
    csql__creds_file f;
    int rc = csql__creds_file_load(path, what, &f);
    if (rc != CSQL_OK) {
        return rc;
    }
    char origin[PATH_MAX_LEN + 64];
    snprintf(origin, sizeof(origin), "%s %s", what, path);
    rc = csql__source_from_file(&f, origin, out);
    csql__creds_file_dispose(&f);
    return rc;
}

/* gcloud's ADC file path into buf; 0 when there is no place to look. */
static int gcloud_path(char *buf, size_t cap)
{
    const char *dir = getenv("CLOUDSDK_CONFIG");
    int n;
    if (dir != NULL && dir[0] != '\0') {
        n = snprintf(buf, cap, "%s/%s", dir, ADC_FILE);
    } else {
        const char *home = getenv("HOME");
        if (home == NULL || home[0] == '\0') {
            return 0;
        }
        n = snprintf(buf, cap, "%s/.config/gcloud/%s", home, ADC_FILE);
    }
    return n > 0 && (size_t)n < cap;
}

int csql__source_adc(csql__token_source *out)
{
    memset(out, 0, sizeof(*out));
    const char *env = getenv("GOOGLE_APPLICATION_CREDENTIALS");
    if (env != NULL && env[0] != '\0') {
        /* Named explicitly: any problem with it is the user's to fix, not a reason to fall through. */
        return from_file(env, "GOOGLE_APPLICATION_CREDENTIALS file", out);
    }
    char path[PATH_MAX_LEN];
    struct stat st;
    if (gcloud_path(path, sizeof(path))) {
        if (stat(path, &st) == 0) {
            return from_file(path, "gcloud credentials file", out);
        }
        if (errno != ENOENT && errno != ENOTDIR) {
            char ebuf[128];
            return csql__error(CSQL_ERR_CREDENTIALS, "gcloud credentials file %s: %s", path,
                               strerror_r(errno, ebuf, sizeof(ebuf)));
        }
    }
    const char *host = getenv("GCE_METADATA_HOST");
    if (host == NULL || host[0] == '\0') {
        host = CSQL__METADATA_HOST_DEFAULT;
    }
    return csql__source_metadata(host, true, out);
}
