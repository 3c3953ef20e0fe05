/*
 * csql__creds: picks the token source the config asks for and puts a cache
 * with single-flight fetching in front of it. One cached token per scope kind;
 * a token is refreshed when fewer than max(4 min, 1/4 of its lifetime) remain
 * (capped at half its lifetime, so a short-lived token is still reused).
 * Concurrent callers of one kind share one fetch, and its failure.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "creds_internal.h"
#include "error.h"
#include "http.h"
#include "util/clock.h"

#define REFRESH_MARGIN_S 240

typedef struct slot {
    csql__token tok;     /* cached, value NULL when none */
    int64_t obtained_at; /* wall seconds */
    bool fetching;
    uint64_t gen;        /* completed fetches */
    int last_rc;
    csql__saved_error last_err;
} slot;

struct csql__creds {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot slots[CSQL__SK_COUNT];
    csql__token_source src;
    const csql__logger *lg;
};

/* ---------------- small shared helpers ---------------- */

const char *csql__scope_of(csql__scope_kind kind)
{
    switch (kind) {
    case CSQL__SK_LOGIN:
        return CSQL__SCOPE_LOGIN;
    case CSQL__SK_CLOUD:
        return CSQL__SCOPE_CLOUD_PLATFORM;
    default:
        return CSQL__SCOPE_ADMIN;
    }
}

const char *csql__scope_kind_name(csql__scope_kind kind)
{
    switch (kind) {
    case CSQL__SK_LOGIN:
        return "login";
    case CSQL__SK_CLOUD:
        return "cloud-platform";
    default:
        return "admin";
    }
}

int csql__token_value_ok(const char *t, size_t len)
{
    if (t == NULL || len == 0 || len > CSQL__ACCESS_TOKEN_MAX) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c >= 0x7f) {
            return 0; /* no spaces, controls (header injection) or non-ASCII */
        }
    }
    return 1;
}

void csql__secret_free(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void csql__json_wipe_string(json_t *v)
{
    if (v != NULL && json_is_string(v)) {
        /* jansson owns the bytes and frees them with the value right after this. */
        OPENSSL_cleanse((void *)(uintptr_t)json_string_value(v), json_string_length(v));
    }
}

void csql__token_dispose(csql__token *t)
{
    if (t == NULL) {
        return;
    }
    csql__secret_free(t->value);
    t->value = NULL;
    t->expires_at = 0;
}

void csql__token_source_dispose(csql__token_source *src)
{
    if (src == NULL) {
        return;
    }
    if (src->free != NULL) {
        src->free(src->state);
    }
    free(src->description);
    memset(src, 0, sizeof(*src));
}

/* ---------------- creation ---------------- */

int csql__creds_from_source(csql__token_source *src, const csql__logger *lg, csql__creds **out)
{
    *out = NULL;
    csql__creds *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        csql__token_source_dispose(src);
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating credentials");
    }
    pthread_condattr_t ca;
    bool cv_ok = false;
    if (pthread_condattr_init(&ca) == 0) {
        cv_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
                pthread_cond_init(&c->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    if (!cv_ok) {
        free(c);
        csql__token_source_dispose(src);
        return csql__error(CSQL_ERR_INTERNAL, "cannot create a condition variable");
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        pthread_cond_destroy(&c->cv);
        free(c);
        csql__token_source_dispose(src);
        return csql__error(CSQL_ERR_INTERNAL, "cannot create a mutex");
    }
    c->src = *src;
    memset(src, 0, sizeof(*src));
    c->lg = lg;
    *out = c;
    return CSQL_OK;
}

static int base_source(const csql_config *cfg, csql__token_source *src)
{
    switch (cfg->cred_kind) {
    case CSQL__CRED_ADC:
        return csql__source_adc(src);
    case CSQL__CRED_FILE: {
        if (cfg->credentials_file == NULL) {
            return csql__error(CSQL_ERR_CREDENTIALS, "credentials file not set");
        }
        csql__creds_file f;
        int rc = csql__creds_file_load(cfg->credentials_file, "credentials file", &f);
        if (rc == CSQL_OK) {
            char origin[4200];
            snprintf(origin, sizeof(origin), "credentials file %s", cfg->credentials_file);
            rc = csql__source_from_file(&f, origin, src);
            csql__creds_file_dispose(&f);
        }
        return rc;
    }
    case CSQL__CRED_JSON: {
        if (cfg->credentials_json == NULL) {
            return csql__error(CSQL_ERR_CREDENTIALS, "credentials JSON not set");
        }
        csql__creds_file f;
        int rc = csql__creds_file_parse(cfg->credentials_json, strlen(cfg->credentials_json),
                                        "credentials JSON", &f);
        if (rc == CSQL_OK) {
            rc = csql__source_from_file(&f, "credentials JSON", src);
            csql__creds_file_dispose(&f);
        }
        return rc;
    }
    case CSQL__CRED_TOKEN:
        return csql__source_static(cfg, src);
    case CSQL__CRED_CALLBACK:
        return csql__source_callback(cfg, src);
    }
    return csql__error(CSQL_ERR_BAD_CONFIG, "unknown credentials kind %d", (int)cfg->cred_kind);
}

int csql__creds_new(const csql_config *cfg, const csql__logger *lg, csql__creds **out)
{
    *out = NULL;
    int rc = csql__http_global_init();
    if (rc != CSQL_OK) {
        return rc;
    }
    csql__token_source src;
    rc = base_source(cfg, &src);
    if (rc != CSQL_OK) {
        return rc;
    }
    csql__creds *c = NULL;
    rc = csql__creds_from_source(&src, lg, &c);
    if (rc != CSQL_OK) {
        return rc;
    }
    if (cfg->impersonate_chain != NULL && cfg->impersonate_chain[0] != '\0') {
        csql__token_source imp;
        rc = csql__source_impersonate(c, cfg->impersonate_chain, cfg->iam_credentials_endpoint,
                                      &imp); /* takes c */
        c = NULL;
        if (rc == CSQL_OK) {
            rc = csql__creds_from_source(&imp, lg, &c);
        }
        if (rc != CSQL_OK) {
            return rc;
        }
    }
    csql__log(lg, CSQL_LOG_DEBUG, "credentials: %s", c->src.description);
    *out = c;
    return CSQL_OK;
}

void csql__creds_free(csql__creds *c)
{
    if (c == NULL) {
        return;
    }
    for (int i = 0; i < CSQL__SK_COUNT; i++) {
        csql__token_dispose(&c->slots[i].tok);
        csql__saved_error_dispose(&c->slots[i].last_err);
    }
    csql__token_source_dispose(&c->src);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

const char *csql__creds_describe(const csql__creds *c)
{
    return c && c->src.description ? c->src.description : "no credentials";
}

/* ---------------- tokens ---------------- */

static bool fresh(const slot *s, int64_t now)
{
    if (s->tok.value == NULL) {
        return false;
    }
    int64_t lifetime = s->tok.expires_at - s->obtained_at;
    int64_t margin = lifetime / 4 > REFRESH_MARGIN_S ? lifetime / 4 : REFRESH_MARGIN_S;
    if (margin > lifetime / 2) {
        margin = lifetime / 2;
    }
    return s->tok.expires_at - now > margin;
}

static int copy_token(const csql__token *src, csql__token *dst)
{
    dst->value = strdup(src->value);
    dst->expires_at = src->expires_at;
    if (dst->value == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory copying a token");
    }
    return CSQL_OK;
}

/* Wait (mu held) until the fetch in flight for s finishes or the deadline passes. */
static int wait_for_fetch(csql__creds *c, slot *s, csql__scope_kind kind, int64_t deadline_ms)
{
    uint64_t gen = s->gen;
    struct timespec ts = {.tv_sec = (time_t)(deadline_ms / 1000),
                          .tv_nsec = (long)(deadline_ms % 1000) * 1000000L};
    while (s->fetching && s->gen == gen) {
        int e = pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        if (e == ETIMEDOUT && s->fetching && s->gen == gen) {
            return csql__error(CSQL_ERR_TIMEOUT, "timed out waiting for the %s token from %s",
                               csql__scope_kind_name(kind), c->src.description);
        }
    }
    if (s->gen != gen && s->last_rc != CSQL_OK) {
        /* The fetch we waited for failed: share its error rather than retrying at once. */
        return s->last_err.message ? csql__error_restore(&s->last_err) : s->last_rc;
    }
    return CSQL_OK;
}

int csql__creds_token_scoped(csql__creds *c, csql__scope_kind kind, int64_t deadline_ms,
                             csql__token *out)
{
    memset(out, 0, sizeof(*out));
    if (c == NULL || (int)kind < 0 || kind >= CSQL__SK_COUNT) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "bad token request");
    }
    slot *s = &c->slots[kind];
    int rc = CSQL_OK;
    pthread_mutex_lock(&c->mu);
    /* Each pass either returns or waits for a fetch that ends; the deadline bounds the waits. */
    for (;;) {
        if (fresh(s, csql__wall_s())) {
            rc = copy_token(&s->tok, out);
            pthread_mutex_unlock(&c->mu);
            return rc;
        }
        if (!s->fetching) {
            break;
        }
        rc = wait_for_fetch(c, s, kind, deadline_ms);
        if (rc != CSQL_OK) {
            pthread_mutex_unlock(&c->mu);
            return rc;
        }
    }
    s->fetching = true;
    pthread_mutex_unlock(&c->mu);

    csql__token tok = {0};
    rc = c->src.fetch(c->src.state, kind, deadline_ms, &tok);
    int64_t now = csql__wall_s();
    if (rc == CSQL_OK && !csql__token_value_ok(tok.value, tok.value ? strlen(tok.value) : 0)) {
        csql__token_dispose(&tok);
        rc = csql__error(CSQL_ERR_TOKEN, "%s gave a token with characters not allowed in a token",
                         c->src.description);
    }
    csql__token cached = {0};
    bool cache = rc == CSQL_OK && c->src.cacheable && tok.expires_at != 0;
    if (cache && copy_token(&tok, &cached) != CSQL_OK) {
        cache = false; /* still answer this caller; the next one fetches again */
    }

    pthread_mutex_lock(&c->mu);
    s->fetching = false;
    s->gen++;
    s->last_rc = rc;
    if (rc != CSQL_OK) {
        csql__error_save(&s->last_err);
    } else if (cache) {
        csql__token_dispose(&s->tok);
        s->tok = cached;
        s->obtained_at = now;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);

    if (rc != CSQL_OK) {
        return rc;
    }
    if (tok.expires_at != 0) {
        csql__log(c->lg, CSQL_LOG_DEBUG, "fetched a %s token from %s (expires in %lld s)",
                  csql__scope_kind_name(kind), c->src.description,
                  (long long)(tok.expires_at - now));
    }
    *out = tok;
    return CSQL_OK;
}

int csql__creds_token(csql__creds *c, csql_token_kind kind, int64_t deadline_ms, csql__token *out)
{
    if (kind != CSQL_TOKEN_ADMIN && kind != CSQL_TOKEN_LOGIN) {
        memset(out, 0, sizeof(*out));
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "unknown token kind %d", (int)kind);
    }
    return csql__creds_token_scoped(c, kind == CSQL_TOKEN_LOGIN ? CSQL__SK_LOGIN : CSQL__SK_ADMIN,
                                    deadline_ms, out);
}
