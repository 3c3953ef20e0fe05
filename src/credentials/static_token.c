/*
 * A fixed access token from the config: ADMIN (and cloud-platform, for an
 * impersonation's base) use the token, LOGIN the login token if one was set.
 * Never refreshed; expiry unknown (0).
 */
#include <stdlib.h>
#include <string.h>

#include "creds_internal.h"
#include "error.h"

static int static_fetch(void *state, csql__scope_kind kind, int64_t deadline_ms, csql__token *out)
{
    (void)deadline_ms;
    const csql_config *cfg = state;
    const char *v = cfg->token;
    if (kind == CSQL__SK_LOGIN && cfg->login_token != NULL && cfg->login_token[0] != '\0') {
        v = cfg->login_token;
    }
    memset(out, 0, sizeof(*out));
    if (v == NULL || !csql__token_value_ok(v, strlen(v))) {
        return csql__error(CSQL_ERR_CREDENTIALS,
                           "the configured %s token is empty, too long, or has characters not "
                           "allowed in a token",
                           v == cfg->login_token ? "login" : "access");
    }
    out->value = strdup(v);
    if (out->value == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory copying a token");
    }
    return CSQL_OK;
}

int csql__source_static(const csql_config *cfg, csql__token_source *out)
{
    memset(out, 0, sizeof(*out));
    if (cfg->token == NULL || cfg->token[0] == '\0') {
        return csql__error(CSQL_ERR_CREDENTIALS, "static token credentials without a token");
    }
    out->description = strdup("static token");
    if (out->description == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory");
    }
    out->fetch = static_fetch;
    out->free = NULL; /* cfg is borrowed */
    /* csql__token_source keeps a non-const state pointer; cfg is only read. */
    out->state = (void *)(uintptr_t)cfg;
    out->cacheable = false;
    return CSQL_OK;
}
