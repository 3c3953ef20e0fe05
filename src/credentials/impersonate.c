/*
 * Service account impersonation: the base credentials' cloud-platform token
 * calls IAM Credentials generateAccessToken for the target account.
 * The chain reads like the Auth Proxy's --impersonate-service-account:
 * "target,d1,d2" means the base credentials act as d2, d2 as d1, d1 as the
 * target, so the request's delegates are [d2, d1].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "creds_internal.h"
#include "error.h"
#include "http.h"

#define CHAIN_MAX 16
#define ACCOUNT_MAX 256
#define DEFAULT_IAM_ENDPOINT "https://iamcredentials.googleapis.com"

typedef struct imp_source {
    csql__creds *base;
    char *endpoint; /* no trailing '/' */
    char *target;
    char *delegates[CHAIN_MAX];
    size_t n_delegates;
} imp_source;

static void imp_free(void *state)
{
    imp_source *s = state;
    if (s == NULL) {
        return;
    }
    csql__creds_free(s->base);
    free(s->endpoint);
    free(s->target);
    for (size_t i = 0; i < s->n_delegates; i++) {
        free(s->delegates[i]);
    }
    free(s);
}

static bool account_ok(const char *a, size_t n)
{
    if (n == 0 || n >= ACCOUNT_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = a[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '@' || c == '.' || c == '-' || c == '_';
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* Split the chain into target and reversed delegates. */
static int parse_chain(imp_source *s, const char *chain)
{
    char *parts[CHAIN_MAX];
    size_t n = 0;
    const char *p = chain;
    int rc = CSQL_OK;
    while (rc == CSQL_OK) {
        size_t len = strcspn(p, ",");
        const char *start = p;
        while (len > 0 && (*start == ' ' || *start == '\t')) {
            start++;
            len--;
        }
        while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t')) {
            len--;
        }
        if (n == CHAIN_MAX) {
            rc = csql__error(CSQL_ERR_BAD_CONFIG,
                             "impersonation chain has more than %d accounts", CHAIN_MAX);
        } else if (!account_ok(start, len)) {
            rc = csql__error(CSQL_ERR_BAD_CONFIG,
                             "impersonation chain entry %zu is not a service account email", n + 1);
        } else if ((parts[n] = strndup(start, len)) == NULL) {
            rc = csql__error(CSQL_ERR_NOMEM, "out of memory");
        } else {
            n++;
        }
        p += strcspn(p, ",");
        if (*p == '\0') {
            break;
        }
        p++;
    }
    if (rc != CSQL_OK) {
        for (size_t i = 0; i < n; i++) {
            free(parts[i]);
        }
        return rc;
    }
    s->target = parts[0];
    for (size_t i = n - 1; i >= 1; i--) {
        s->delegates[s->n_delegates++] = parts[i];
    }
    return CSQL_OK;
}

static char *request_body(const imp_source *s, csql__scope_kind kind)
{
    json_t *delegates = json_array();
    json_t *root = json_pack("{s:[s], s:s}", "scope", csql__scope_of(kind), "lifetime", "3600s");
    char *text = NULL;
    if (delegates == NULL || root == NULL) {
        goto done;
    }
    for (size_t i = 0; i < s->n_delegates; i++) {
        char name[ACCOUNT_MAX + 32];
        snprintf(name, sizeof(name), "projects/-/serviceAccounts/%s", s->delegates[i]);
        if (json_array_append_new(delegates, json_string(name)) != 0) {
            goto done;
        }
    }
    if (s->n_delegates > 0 && json_object_set(root, "delegates", delegates) != 0) {
        goto done;
    }
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
done:
    json_decref(delegates);
    json_decref(root);
    return text;
}

static int imp_fetch(void *state, csql__scope_kind kind, int64_t deadline_ms, csql__token *out)
{
    imp_source *s = state;
    csql__token base = {0};
    char *body = NULL;
    char *auth = NULL;
    char url[1024];
    char what[ACCOUNT_MAX + 64];
    csql__http_response resp = {0};
    int rc = csql__creds_token_scoped(s->base, CSQL__SK_CLOUD, deadline_ms, &base);
    if (rc != CSQL_OK) {
        csql__error_prefix("impersonating %s: base credentials", s->target);
        return rc;
    }
    snprintf(what, sizeof(what), "generateAccessToken for %s", s->target);
    size_t auth_len = strlen(base.value) + 32;
    auth = malloc(auth_len);
    body = request_body(s, kind);
    if (auth == NULL || body == NULL) {
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory building %s", what);
        goto done;
    }
    snprintf(auth, auth_len, "Authorization: Bearer %s", base.value);
    snprintf(url, sizeof(url), "%s/v1/projects/-/serviceAccounts/%s:generateAccessToken",
             s->endpoint, s->target);
    const char *headers[] = {auth, "Content-Type: application/json", "Accept: application/json",
                             NULL};
    csql__http_request req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = strlen(body),
        .max_response = CSQL__TOKEN_RESPONSE_MAX,
        .deadline_ms = deadline_ms,
    };
    rc = csql__http_perform(&req, &resp);
    if (rc != CSQL_OK) {
        rc = csql__token_transport_error(rc, what);
        goto done;
    }
    rc = csql__impersonate_response_parse(resp.status, resp.body, resp.body_len, what, out);
done:
    if (resp.body != NULL) {
        OPENSSL_cleanse(resp.body, resp.body_len);
    }
    csql__http_response_dispose(&resp);
    csql__secret_free(auth);
    free(body);
    csql__token_dispose(&base);
    return rc;
}

int csql__source_impersonate(csql__creds *base, const char *chain, const char *endpoint,
                             csql__token_source *out)
{
    memset(out, 0, sizeof(*out));
    imp_source *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        csql__creds_free(base);
        return csql__error(CSQL_ERR_NOMEM, "out of memory");
    }
    s->base = base;
    int rc = parse_chain(s, chain);
    if (rc != CSQL_OK) {
        imp_free(s);
        return rc;
    }
    const char *ep = endpoint && endpoint[0] ? endpoint : DEFAULT_IAM_ENDPOINT;
    size_t n = strlen(ep);
    while (n > 0 && ep[n - 1] == '/') {
        n--;
    }
    s->endpoint = strndup(ep, n);
    char desc[2 * ACCOUNT_MAX + 64];
    snprintf(desc, sizeof(desc), "%s impersonated by %s", s->target, csql__creds_describe(base));
    out->description = strdup(desc);
    if (s->endpoint == NULL || out->description == NULL) {
        imp_free(s);
        free(out->description);
        out->description = NULL;
        return csql__error(CSQL_ERR_NOMEM, "out of memory");
    }
    out->fetch = imp_fetch;
    out->free = imp_free;
    out->state = s;
    out->cacheable = true;
    return CSQL_OK;
}
