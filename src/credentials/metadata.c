/*
 * The GCE/GKE/Cloud Run metadata server: the default service account's token,
 * GET http://HOST/computeMetadata/v1/instance/service-accounts/default/token
 * with "Metadata-Flavor: Google" (REFERENCE §3).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "creds_internal.h"
#include "error.h"
#include "http.h"
#include "util/clock.h"

#define HOST_MAX 256

typedef struct metadata_source {
    char host[HOST_MAX];
    bool via_adc;
} metadata_source;

static int metadata_fetch(void *state, csql__scope_kind kind, int64_t deadline_ms,
                          csql__token *out)
{
    metadata_source *ms = state;
    static const char *const headers[] = {"Metadata-Flavor: Google", "Accept: application/json",
                                          NULL};
    char *scope = csql__http_escape(csql__scope_of(kind));
    if (scope == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory building a metadata request");
    }
    char url[HOST_MAX + 256];
    snprintf(url, sizeof(url),
             "http://%s/computeMetadata/v1/instance/service-accounts/default/token?scopes=%s",
             ms->host, scope);
    free(scope);
    csql__http_request req = {
        .method = "GET",
        .url = url,
        .headers = headers,
        .max_response = CSQL__TOKEN_RESPONSE_MAX,
        .deadline_ms = deadline_ms,
        .allow_plain_http = 1, /* the metadata server only speaks http, on a link-local address */
        .no_proxy = 1,         /* and is only reachable from this machine, never via a proxy */
    };
    char what[HOST_MAX + 32];
    snprintf(what, sizeof(what), "metadata server %s", ms->host);
    csql__http_response resp = {0};
    int rc = csql__http_perform(&req, &resp);
    if (rc != CSQL_OK) {
        if (ms->via_adc && (rc == CSQL_ERR_DNS || rc == CSQL_ERR_CONNECT)) {
            /* Nothing else was found and this is not a Google Cloud machine. */
            const char *why = csql_error_last()->message;
            if (strncmp(why, "csql: ", 6) == 0) {
                why += 6;
            }
            return csql__error(CSQL_ERR_CREDENTIALS,
                               "no credentials found: GOOGLE_APPLICATION_CREDENTIALS is not set, "
                               "there is no gcloud application_default_credentials.json, and the "
                               "metadata server %s could not be reached (%s)",
                               ms->host, why);
        }
        return csql__token_transport_error(rc, what);
    }
    rc = csql__token_response_parse(resp.status, resp.body, resp.body_len, what, csql__wall_s(),
                                    out);
    OPENSSL_cleanse(resp.body, resp.body_len);
    csql__http_response_dispose(&resp);
    return rc;
}

static void metadata_free(void *state)
{
    free(state);
}

int csql__source_metadata(const char *host, bool via_adc, csql__token_source *out)
{
    memset(out, 0, sizeof(*out));
    size_t n = strlen(host);
    if (n == 0 || n >= HOST_MAX || strcspn(host, "/?#@ \t\r\n") != n) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "GCE_METADATA_HOST must be host[:port], without a scheme or path");
    }
    metadata_source *ms = calloc(1, sizeof(*ms));
    char desc[HOST_MAX + 32];
    snprintf(desc, sizeof(desc), "metadata server %s", host);
    out->description = strdup(desc);
    if (ms == NULL || out->description == NULL) {
        free(ms);
        free(out->description);
        out->description = NULL;
        return csql__error(CSQL_ERR_NOMEM, "out of memory");
    }
    memcpy(ms->host, host, n + 1);
    ms->via_adc = via_adc;
    out->fetch = metadata_fetch;
    out->free = metadata_free;
    out->state = ms;
    out->cacheable = true;
    return CSQL_OK;
}
