/*
 * Tokens from the caller's csql_token_fn. The callback writes into an 8 KiB
 * buffer that is wiped after use; a non-zero return fails with CSQL_ERR_TOKEN.
 * Tokens with a known expiry are cached by creds.c like any other; with
 * expiry 0 the callback is asked every time.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "creds_internal.h"
#include "error.h"

#define CALLBACK_BUF 8192

typedef struct callback_source {
    csql_token_fn fn;
    void *userdata;
} callback_source;

static int callback_fetch(void *state, csql__scope_kind kind, int64_t deadline_ms,
                          csql__token *out)
{
    (void)deadline_ms;
    callback_source *cs = state;
    /* The callback knows only the public kinds; cloud-platform is asked as ADMIN. */
    csql_token_kind pub = kind == CSQL__SK_LOGIN ? CSQL_TOKEN_LOGIN : CSQL_TOKEN_ADMIN;
    const char *name = pub == CSQL_TOKEN_LOGIN ? "login" : "admin";
    memset(out, 0, sizeof(*out));
    char *buf = calloc(1, CALLBACK_BUF);
    if (buf == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory calling the token callback");
    }
    int64_t expires_at = 0;
    int rc = CSQL_OK;
    int r = cs->fn(pub, buf, CALLBACK_BUF, &expires_at, cs->userdata);
    size_t len = strnlen(buf, CALLBACK_BUF);
    if (r != 0) {
        rc = csql__error(CSQL_ERR_TOKEN, "the token callback failed (returned %d) for the %s token",
                         r, name);
    } else if (len == CALLBACK_BUF) {
        rc = csql__error(CSQL_ERR_TOKEN,
                         "the token callback wrote no NUL-terminated token into %d bytes for the "
                         "%s token",
                         CALLBACK_BUF, name);
    } else if (!csql__token_value_ok(buf, len)) {
        rc = csql__error(CSQL_ERR_TOKEN,
                         "the token callback returned an empty %s token or one with characters "
                         "not allowed in a token",
                         name);
    } else if (expires_at < 0) {
        rc = csql__error(CSQL_ERR_TOKEN, "the token callback returned a negative expiry");
    } else if ((out->value = strndup(buf, len)) == NULL) {
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory copying a token");
    } else {
        out->expires_at = expires_at;
    }
    OPENSSL_cleanse(buf, CALLBACK_BUF);
    free(buf);
    return rc;
}

int csql__source_callback(const csql_config *cfg, csql__token_source *out)
{
    memset(out, 0, sizeof(*out));
    if (cfg->token_fn == NULL) {
        return csql__error(CSQL_ERR_CREDENTIALS, "token callback credentials without a callback");
    }
    callback_source *cs = calloc(1, sizeof(*cs));
    out->description = strdup("token callback");
    if (cs == NULL || out->description == NULL) {
        free(cs);
        free(out->description);
        out->description = NULL;
        return csql__error(CSQL_ERR_NOMEM, "out of memory");
    }
    cs->fn = cfg->token_fn;
    cs->userdata = cfg->token_fn_userdata;
    out->fetch = callback_fetch;
    out->free = free;
    out->state = cs;
    out->cacheable = true;
    return CSQL_OK;
}
