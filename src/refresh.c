/*
 * One certificate refresh (REFERENCE §2, §5, §6): tokens, then connectSettings
 * and generateEphemeralCert concurrently, each retried on 5xx, 429 and
 * transport failures with jittered exponential backoff (or Retry-After when
 * longer) within the deadline, then a new certset.
 */
#include "refresh.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "csql/version.h"
#include "error.h"
#include "http.h"
#include "tls.h"
#include "util/clock.h"

#define MAX_RETRIES 5 /* after the first attempt: 6 attempts per call at most */
#define DEFAULT_ENDPOINT "https://sqladmin.googleapis.com"

enum { CALL_SETTINGS = 0, CALL_CERT = 1, CALL_COUNT = 2 };

static const char *const call_names[CALL_COUNT] = {"connectSettings", "generateEphemeralCert"};

typedef struct call {
    csql__http_request req;
    csql__http_response resp; /* of the last attempt */
    int rc;                   /* transport result of the last attempt */
    csql__saved_error err;    /* its message, when rc != 0 */
    int attempts;
    bool done;
    bool ok;
} call;

typedef struct refresh_run {
    const csql__refresh_ctx *ctx;
    const csql__instance_name *name;
    bool iam;
    int64_t deadline_ms;
    const atomic_bool *cancel;
    int64_t started_ms;
    csql__token admin;
    csql__token login;
    char *urls[CALL_COUNT];
    char *body;     /* secret when iam: holds the login token */
    char *auth;     /* secret: "Authorization: Bearer ..." */
    char *agent;
    char *quota;
    const char *headers[5];
    call calls[CALL_COUNT];
} refresh_run;

/* ---- helpers ---- */

static double random01(void)
{
    uint32_t r;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1) {
        return 0.5;
    }
    return r / 4294967296.0;
}

static bool cancelled(const atomic_bool *cancel)
{
    return cancel != NULL && atomic_load(cancel);
}

/* Sleep ms on the monotonic clock, in slices so that a cancel is noticed within 20 ms. */
static void sleep_ms(int64_t ms, const atomic_bool *cancel)
{
    int64_t end = csql__mono_ms() + ms;
    for (int64_t left = ms; left > 0 && !cancelled(cancel); left = end - csql__mono_ms()) {
        int64_t slice = cancel != NULL && left > 20 ? 20 : left;
        struct timespec ts = {(time_t)(slice / 1000), (long)(slice % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* ---- building the requests ---- */

/* Path segment: unreserved characters and ':' (domain-scoped projects keep theirs) stay as is. */
static char *path_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = malloc(n * 3 + 1);
    size_t o = 0;
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || c == ':') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

/* Append s as a JSON string literal to buf (sized by the caller for the worst case, 6 per byte). */
static size_t json_quote(char *buf, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)*p;
        } else if (*p == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else if (*p < 0x20) {
            memcpy(buf + o, "\\u00", 4);
            buf[o + 4] = hex[*p >> 4];
            buf[o + 5] = hex[*p & 15];
            o += 6;
        } else {
            buf[o++] = (char)*p;
        }
    }
    buf[o++] = '"';
    return o;
}

/* {"public_key": PEM} plus "access_token" for IAM authn. */
static char *make_body(const char *pub_pem, const char *login_token)
{
    size_t need = 64 + strlen(pub_pem) * 6 + (login_token ? strlen(login_token) * 6 : 0);
    char *b = malloc(need);
    size_t o = 0;
    if (b == NULL) {
        return NULL;
    }
    o += (size_t)sprintf(b, "{\"public_key\":");
    o += json_quote(b + o, pub_pem);
    if (login_token != NULL) {
        o += (size_t)sprintf(b + o, ",\"access_token\":");
        o += json_quote(b + o, login_token);
    }
    b[o++] = '}';
    b[o] = '\0';
    return b;
}

/* A value that goes into a header line must not be able to start another one. */
static bool header_safe(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return false;
        }
    }
    return true;
}

static void free_secret(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static char *join_endpoint(const char *endpoint, const char *project, const char *instance,
                           const char *suffix)
{
    size_t n = strlen(endpoint);
    while (n > 0 && endpoint[n - 1] == '/') {
        n--;
    }
    char *url = NULL;
    if (asprintf(&url, "%.*s/sql/v1beta4/projects/%s/instances/%s%s", (int)n, endpoint, project,
                 instance, suffix) < 0) {
        return NULL;
    }
    return url;
}

static int get_tokens(refresh_run *r)
{
    int rc = csql__creds_token(r->ctx->creds, CSQL_TOKEN_ADMIN, r->deadline_ms, &r->admin);
    if (rc == 0 && r->iam) {
        rc = csql__creds_token(r->ctx->creds, CSQL_TOKEN_LOGIN, r->deadline_ms, &r->login);
    }
    if (rc != 0) {
        return rc;
    }
    if (r->admin.value == NULL || !header_safe(r->admin.value) ||
        (r->iam && (r->login.value == NULL || !header_safe(r->login.value)))) {
        return csql__error(CSQL_ERR_TOKEN, "the credentials returned an empty or malformed token");
    }
    return 0;
}

static int build_requests(refresh_run *r, const char *pub_pem)
{
    const csql_config *cfg = r->ctx->cfg;
    const char *endpoint = cfg->admin_api_endpoint ? cfg->admin_api_endpoint : DEFAULT_ENDPOINT;
    const char *ua = r->ctx->user_agent ? r->ctx->user_agent : "csql/" CSQL_VERSION_STRING;
    char *project = path_escape(r->name->project);
    char *instance = path_escape(r->name->instance);
    int rc = CSQL_ERR_NOMEM;
    size_t h = 0;

    if (!header_safe(ua) || (cfg->quota_project && !header_safe(cfg->quota_project))) {
        rc = csql__error(CSQL_ERR_BAD_CONFIG, "user agent or quota project holds control "
                                              "characters");
        goto done;
    }
    if (project == NULL || instance == NULL) {
        goto done;
    }
    r->urls[CALL_SETTINGS] = join_endpoint(endpoint, project, instance, "/connectSettings");
    r->urls[CALL_CERT] = join_endpoint(endpoint, project, instance, ":generateEphemeralCert");
    r->body = make_body(pub_pem, r->iam ? r->login.value : NULL);
    if (asprintf(&r->auth, "Authorization: Bearer %s", r->admin.value) < 0) {
        r->auth = NULL;
    }
    if (asprintf(&r->agent, "User-Agent: %s", ua) < 0) {
        r->agent = NULL;
    }
    if (cfg->quota_project && asprintf(&r->quota, "x-goog-user-project: %s",
                                       cfg->quota_project) < 0) {
        r->quota = NULL;
    }
    if (!r->urls[0] || !r->urls[1] || !r->body || !r->auth || !r->agent ||
        (cfg->quota_project && !r->quota)) {
        goto done;
    }
    r->headers[h++] = r->auth;
    r->headers[h++] = r->agent;
    r->headers[h++] = "Content-Type: application/json";
    if (r->quota) {
        r->headers[h++] = r->quota;
    }
    r->headers[h] = NULL;
    for (int i = 0; i < CALL_COUNT; i++) {
        csql__http_request *q = &r->calls[i].req;
        q->method = i == CALL_SETTINGS ? "GET" : "POST";
        q->url = r->urls[i];
        q->headers = r->headers;
        q->deadline_ms = r->deadline_ms;
        q->cancel = r->cancel; /* a closing dialer ends the call in flight */
    }
    r->calls[CALL_CERT].req.body = r->body;
    r->calls[CALL_CERT].req.body_len = strlen(r->body);
    rc = 0;
done:
    if (rc == CSQL_ERR_NOMEM) {
        csql__error(rc, "out of memory building the SQL Admin API requests");
    }
    free(project);
    free(instance);
    return rc;
}

/* ---- running them ---- */

static bool retryable(const call *c)
{
    if (c->rc == 0) {
        return c->resp.status >= 500 || c->resp.status == 429;
    }
    /* DNS, connect and I/O failures may pass; a refused URL, a deadline or a huge body will not. */
    return c->rc == CSQL_ERR_DNS || c->rc == CSQL_ERR_CONNECT || c->rc == CSQL_ERR_IO;
}

/* A transport error's message without the library prefix, to nest it in another message. */
static const char *bare_message(const call *c)
{
    const char *m = c->err.message ? c->err.message : csql_strerror(c->rc);
    return strncmp(m, "csql: ", 6) == 0 ? m + 6 : m;
}

static void log_attempt(const refresh_run *r, int i, int64_t took_ms)
{
    const call *c = &r->calls[i];
    if (c->rc == 0) {
        csql__log(r->ctx->log, CSQL_LOG_DEBUG, "refresh %s: %s attempt %d: HTTP %ld in %lld ms",
                  r->name->full, call_names[i], c->attempts, c->resp.status, (long long)took_ms);
    } else {
        csql__log(r->ctx->log, CSQL_LOG_DEBUG, "refresh %s: %s attempt %d failed in %lld ms: %s",
                  r->name->full, call_names[i], c->attempts, (long long)took_ms,
                  bare_message(c));
    }
}

/* Run every unfinished call once, concurrently, and classify the results. */
static void run_round(refresh_run *r)
{
    csql__http_request reqs[CALL_COUNT];
    csql__http_response resps[CALL_COUNT];
    int rcs[CALL_COUNT] = {0};
    int idx[CALL_COUNT];
    size_t n = 0;
    for (int i = 0; i < CALL_COUNT; i++) {
        if (!r->calls[i].done) {
            reqs[n] = r->calls[i].req;
            idx[n++] = i;
        }
    }
    memset(resps, 0, sizeof(resps));
    int64_t t0 = csql__mono_ms();
    csql_error_clear();
    csql__http_perform_many(reqs, resps, rcs, n);
    int64_t took = csql__mono_ms() - t0;

    /* perform_many leaves the message of the first failing request on this thread. */
    size_t first_failed = n;
    for (size_t k = 0; k < n && first_failed == n; k++) {
        if (rcs[k] != 0) {
            first_failed = k;
        }
    }
    for (size_t k = 0; k < n; k++) {
        call *c = &r->calls[idx[k]];
        csql__http_response_dispose(&c->resp);
        c->resp = resps[k];
        c->rc = rcs[k];
        c->attempts++;
        csql__saved_error_dispose(&c->err);
        if (c->rc != 0) {
            if (k == first_failed && csql_error_last()->code == c->rc) {
                csql__error_save(&c->err);
            } else {
                csql__error(c->rc, "%s", csql_strerror(c->rc));
                csql__error_save(&c->err);
            }
        }
        log_attempt(r, idx[k], took);
        if (c->rc == 0 && c->resp.status >= 200 && c->resp.status < 300) {
            c->done = c->ok = true;
        } else if (!retryable(c) || c->attempts > MAX_RETRIES) {
            c->done = true;
        }
    }
}

/* How long to wait before the next round: the longest wait any retrying call asks for. */
static int64_t next_wait_ms(const refresh_run *r, int *which)
{
    int64_t wait = 0;
    for (int i = 0; i < CALL_COUNT; i++) {
        const call *c = &r->calls[i];
        if (c->done) {
            continue;
        }
        int64_t w = csql__backoff_ms(c->attempts - 1, random01());
        if (c->rc == 0 && c->resp.retry_after_s > 0 && c->resp.retry_after_s * 1000 > w) {
            w = c->resp.retry_after_s > 86400 ? 86400000 : c->resp.retry_after_s * 1000;
        }
        if (w > wait) {
            wait = w;
            *which = i;
        }
    }
    return wait;
}

/* A one-line summary of a call's last failure, for logs and timeout messages. */
static void describe_failure(const call *c, char *buf, size_t len)
{
    if (c->rc == 0) {
        snprintf(buf, len, "HTTP %ld", c->resp.status);
    } else {
        snprintf(buf, len, "%s", bare_message(c));
    }
}

static int timeout_error(const refresh_run *r, int which, const char *why)
{
    char last[512];
    const call *c = &r->calls[which];
    describe_failure(c, last, sizeof(last));
    return csql__error_http(CSQL_ERR_TIMEOUT, c->rc == 0 ? c->resp.status : 0, NULL,
                            "refresh of %s timed out after %lld ms: %s (%s attempt %d: %s)",
                            r->name->full, (long long)(csql__mono_ms() - r->started_ms), why,
                            call_names[which], c->attempts, last);
}

/* Rounds until both calls succeed, one fails for good, or the deadline would pass. */
static int run_calls(refresh_run *r)
{
    for (int round = 0; round <= MAX_RETRIES; round++) {
        if (cancelled(r->cancel)) {
            return csql__error(CSQL_ERR_CLOSED, "refresh of %s cancelled: the dialer is closing",
                               r->name->full);
        }
        run_round(r);
        bool all_done = true;
        for (int i = 0; i < CALL_COUNT; i++) {
            if (r->calls[i].done && !r->calls[i].ok) {
                return 0; /* a final failure: reported by the caller, in priority order */
            }
            all_done = all_done && r->calls[i].done;
        }
        if (all_done) {
            return 0;
        }
        int which = 0;
        int64_t wait = next_wait_ms(r, &which);
        if (wait >= csql__ms_left(r->deadline_ms)) {
            char why[128];
            snprintf(why, sizeof(why), "the next retry, in %lld ms, would pass the deadline",
                     (long long)wait);
            return timeout_error(r, which, why);
        }
        char last[512];
        describe_failure(&r->calls[which], last, sizeof(last));
        csql__log(r->ctx->log, CSQL_LOG_DEBUG, "refresh %s: retrying %s in %lld ms after: %s",
                  r->name->full, call_names[which], (long long)wait, last);
        sleep_ms(wait, r->cancel);
    }
    return csql__error(CSQL_ERR_INTERNAL, "refresh of %s: retry loop ended early", r->name->full);
}

/* Raise the final failure of call i. */
static int call_error(const refresh_run *r, int i)
{
    const call *c = &r->calls[i];
    char what[CSQL__INSTANCE_NAME_MAX + 64];
    if (c->attempts > 1) {
        snprintf(what, sizeof(what), "%s for %s (after %d attempts)", call_names[i],
                 r->name->full, c->attempts);
    } else {
        snprintf(what, sizeof(what), "%s for %s", call_names[i], r->name->full);
    }
    if (c->rc == 0) {
        return csql__google_error_raise(c->resp.status, c->resp.body, c->resp.body_len, what);
    }
    csql__error_restore(&c->err);
    if (c->rc == CSQL_ERR_TIMEOUT) {
        csql__error_prefix("refresh of %s timed out after %lld ms in %s attempt %d", r->name->full,
                           (long long)(csql__mono_ms() - r->started_ms), call_names[i],
                           c->attempts);
    } else {
        csql__error_prefix("%s", what);
    }
    return c->rc;
}

static bool is_sqlserver(const char *version)
{
    return strncmp(version, "SQLSERVER", 9) == 0;
}

/* Parse both answers, check IAM support, build the TLS context and the certset. */
static int finish(refresh_run *r, EVP_PKEY *pkey, csql__certset **out)
{
    csql__connect_info info = {0};
    char *cert_pem = NULL;
    SSL_CTX *ctx = NULL;
    int64_t not_after = 0;
    int rc;

    if (r->calls[CALL_SETTINGS].done && !r->calls[CALL_SETTINGS].ok) {
        return call_error(r, CALL_SETTINGS);
    }
    if (r->calls[CALL_SETTINGS].ok) {
        const csql__http_response *s = &r->calls[CALL_SETTINGS].resp;
        if ((rc = csql__connect_info_parse(s->body, s->body_len, r->name, &info)) != 0) {
            goto done;
        }
        if (r->iam && is_sqlserver(info.database_version)) {
            rc = csql__error(CSQL_ERR_IAM_UNSUPPORTED,
                             "instance %s: automatic IAM database authentication is not "
                             "supported for %s (only POSTGRES and MYSQL instances)",
                             r->name->full, info.database_version);
            goto done;
        }
    }
    if (!r->calls[CALL_CERT].ok) {
        rc = call_error(r, CALL_CERT);
        goto done;
    }
    if (!r->calls[CALL_SETTINGS].ok) {
        rc = call_error(r, CALL_SETTINGS);
        goto done;
    }
    const csql__http_response *e = &r->calls[CALL_CERT].resp;
    if ((rc = csql__ephemeral_cert_parse(e->body, e->body_len, &cert_pem)) != 0) {
        csql__error_prefix("instance %s", r->name->full);
        goto done;
    }
    if ((rc = csql__tls_client_ctx_new(pkey, cert_pem, info.ca_pem, &ctx, &not_after)) != 0) {
        csql__error_prefix("instance %s", r->name->full);
        goto done;
    }
    csql__certset *cs = calloc(1, sizeof(*cs));
    if (cs == NULL) {
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory refreshing %s", r->name->full);
        goto done;
    }
    atomic_init(&cs->refs, 1);
    cs->info = info;
    memset(&info, 0, sizeof(info));
    cs->ctx = ctx;
    ctx = NULL;
    cs->expires_at = not_after;
    if (r->iam && r->login.expires_at > 0 && r->login.expires_at < cs->expires_at) {
        cs->expires_at = r->login.expires_at;
    }
    *out = cs;
done:
    SSL_CTX_free(ctx);
    free(cert_pem);
    csql__connect_info_dispose(&info);
    return rc;
}

static void run_dispose(refresh_run *r)
{
    csql__token_dispose(&r->admin);
    csql__token_dispose(&r->login);
    free_secret(r->body);
    free_secret(r->auth);
    free(r->agent);
    free(r->quota);
    for (int i = 0; i < CALL_COUNT; i++) {
        free(r->urls[i]);
        csql__http_response_dispose(&r->calls[i].resp);
        csql__saved_error_dispose(&r->calls[i].err);
    }
}

int csql__refresh_once(const csql__refresh_ctx *ctx, const csql__instance_name *name, bool iam,
                       int64_t deadline_ms, csql__certset **out)
{
    return csql__refresh_once_cancellable(ctx, name, iam, deadline_ms, NULL, out);
}

int csql__refresh_once_cancellable(const csql__refresh_ctx *ctx, const csql__instance_name *name,
                                   bool iam, int64_t deadline_ms, const atomic_bool *cancel,
                                   csql__certset **out)
{
    if (ctx == NULL || ctx->cfg == NULL || ctx->creds == NULL || ctx->keys == NULL ||
        name == NULL || out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "refresh: NULL argument");
    }
    *out = NULL;
    refresh_run r = {
        .ctx = ctx, .name = name, .iam = iam, .deadline_ms = deadline_ms, .cancel = cancel};
    r.started_ms = csql__mono_ms();
    EVP_PKEY *pkey = NULL;
    const char *pub_pem = NULL;
    int rc;

    csql__log(ctx->log, CSQL_LOG_DEBUG, "refresh %s: starting (IAM authn %s, credentials: %s)",
              name->full, iam ? "on" : "off", csql__creds_describe(ctx->creds));
    if (csql__ms_left(deadline_ms) <= 0) {
        rc = csql__error(CSQL_ERR_TIMEOUT, "refresh of %s: the deadline had passed before it "
                                           "started", name->full);
        goto done;
    }
    if ((rc = get_tokens(&r)) != 0 || (rc = csql__keypair_get(ctx->keys, deadline_ms, &pkey,
                                                                &pub_pem)) != 0) {
        csql__error_prefix("refresh of %s", name->full);
        goto done;
    }
    if ((rc = build_requests(&r, pub_pem)) != 0 || (rc = run_calls(&r)) != 0) {
        goto done;
    }
    rc = finish(&r, pkey, out);
    if (rc == 0) {
        csql__log(ctx->log, CSQL_LOG_DEBUG,
                  "refresh %s: done in %lld ms; %s, certificate valid until %lld (Unix s)",
                  name->full, (long long)(csql__mono_ms() - r.started_ms),
                  (*out)->info.database_version, (long long)(*out)->expires_at);
    }
done:
    if (rc != 0) {
        csql__log(ctx->log, CSQL_LOG_DEBUG, "refresh %s: failed: %s", name->full,
                  csql_error_last()->message);
    }
    run_dispose(&r);
    return rc;
}
