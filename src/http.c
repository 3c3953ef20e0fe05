/*
 * HTTP over libcurl: one easy handle per request, a multi handle when several
 * requests run together. Responses are bounded, deadlines are monotonic, and
 * messages name the host (never a header, never the query string).
 */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "csql/version.h"
#include "error.h"
#include "util/clock.h"

#define HOST_MAX 256
#define URL_SHOWN_MAX 512
#define RETRY_AFTER_MAX_S (24L * 3600) /* a longer wait is as good as "never" for us */
#define MULTI_POLL_MS 1000
#define CANCEL_POLL_MS 100
#define MULTI_GRACE_MS 5000 /* curl enforces each timeout; this only bounds our own loop */

typedef struct transfer {
    const csql__http_request *req;
    csql__http_response *resp;
    CURL *easy;
    struct curl_slist *headers;
    char *data;
    size_t len;
    size_t cap;
    size_t max;
    bool overflow;
    long timeout_ms;
    char host[HOST_MAX];           /* for messages */
    char shown_url[URL_SHOWN_MAX]; /* scheme://host[:port]/path, no query */
    char errbuf[CURL_ERROR_SIZE];
} transfer;

/* ---------------- global init ---------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init_once(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int csql__http_global_init(void)
{
    pthread_once(&global_once, global_init_once);
    if (global_rc != CURLE_OK) {
        return csql__error(CSQL_ERR_INTERNAL, "libcurl global initialisation failed: %s",
                           curl_easy_strerror(global_rc));
    }
    return CSQL_OK;
}

/* ---------------- URL policy ---------------- */

static bool host_is_loopback(const char *host)
{
    if (strcasecmp(host, "localhost") == 0) {
        return true;
    }
    unsigned char a4[4];
    if (inet_pton(AF_INET, host, a4) == 1) {
        return a4[0] == 127;
    }
    /* curl reports IPv6 literals in brackets. */
    size_t n = strlen(host);
    if (n > 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < 64) {
        char inner[64];
        unsigned char a6[16];
        memcpy(inner, host + 1, n - 2);
        inner[n - 2] = '\0';
        if (inet_pton(AF_INET6, inner, a6) == 1) {
            static const unsigned char lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
            return memcmp(a6, lo, sizeof(lo)) == 0;
        }
    }
    return false;
}

/* A printable, bounded copy of s for messages. */
static void copy_printable(char *dst, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s[i] != '\0' && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[i] = '\0';
}

/* The URL as shown in messages: no user:password@, nothing from '?' or '#' on, bounded. */
static void url_without_query(char *dst, size_t cap, const char *url)
{
    size_t n = strcspn(url, "?#");
    char tmp[URL_SHOWN_MAX];
    const char *auth = strstr(url, "://");
    size_t o = 0;
    if (auth != NULL && (size_t)(auth - url) < n) {
        auth += 3;
        size_t prefix = (size_t)(auth - url);
        size_t authority = strcspn(auth, "/?#");
        const char *at = memchr(auth, '@', authority);
        if (at != NULL && prefix < sizeof(tmp)) {
            memcpy(tmp, url, prefix); /* scheme:// */
            o = prefix;
            url = at + 1;
            n -= (size_t)(url - (auth - prefix));
        }
    }
    if (o + n >= sizeof(tmp)) {
        n = sizeof(tmp) - 1 - o;
    }
    memcpy(tmp + o, url, n);
    tmp[o + n] = '\0';
    copy_printable(dst, cap, tmp);
}

/* Parse the URL, fill t->host and check the scheme policy. */
static int check_url(transfer *t)
{
    const csql__http_request *req = t->req;
    url_without_query(t->shown_url, sizeof(t->shown_url), req->url ? req->url : "(null)");
    if (req->url == NULL) {
        return csql__error(CSQL_ERR_BAD_CONFIG, "HTTP request without a URL");
    }
    int rc = CSQL_OK;
    char *scheme = NULL;
    char *host = NULL;
    CURLU *u = curl_url();
    if (u == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory parsing URL %s", t->shown_url);
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, req->url, 0);
    if (uc == CURLUE_OK) {
        uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    }
    if (uc == CURLUE_OK) {
        uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    }
    if (uc == CURLUE_OUT_OF_MEMORY) {
        /* Not the URL's fault: a permanent BAD_CONFIG would stop background refreshes. */
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory parsing URL %s", t->shown_url);
        goto done;
    }
    if (uc != CURLUE_OK || host[0] == '\0') {
        rc = csql__error(CSQL_ERR_BAD_CONFIG, "invalid URL %s", t->shown_url);
        goto done;
    }
    copy_printable(t->host, sizeof(t->host), host);
    if (strcasecmp(scheme, "https") == 0) {
        goto done;
    }
    if (strcasecmp(scheme, "http") != 0) {
        rc = csql__error(CSQL_ERR_BAD_CONFIG, "URL %s: only http:// and https:// are supported",
                         t->shown_url);
        goto done;
    }
    if (!req->allow_plain_http && !host_is_loopback(host)) {
        rc = csql__error(CSQL_ERR_BAD_CONFIG,
                         "URL %s: plain http:// is only allowed to loopback hosts; use https://",
                         t->shown_url);
        goto done;
    }
done:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

/* ---------------- callbacks ---------------- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    transfer *t = userdata;
    size_t n = size * nmemb;
    if (n > t->max - t->len) {
        t->overflow = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 1024;
        while (cap < t->len + n + 1) {
            cap *= 2;
        }
        if (cap > t->max + 1) {
            cap = t->max + 1;
        }
        /* Not realloc: the old buffer may hold a token and must be wiped, not just freed. */
        char *p = malloc(cap);
        if (p == NULL) {
            return 0;
        }
        if (t->data != NULL) {
            memcpy(p, t->data, t->len);
            OPENSSL_cleanse(t->data, t->len);
            free(t->data);
        }
        t->data = p;
        t->cap = cap;
    }
    memcpy(t->data + t->len, ptr, n);
    t->len += n;
    return n;
}

/* Retry-After: delta-seconds, or an HTTP-date. -1 when it cannot be read. */
static long parse_retry_after(const char *v, size_t n)
{
    while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t')) {
        n--;
    }
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    if (n == 0 || n >= 64) {
        return -1;
    }
    char buf[64];
    memcpy(buf, v, n);
    buf[n] = '\0';
    if (isdigit((unsigned char)buf[0])) {
        long s = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)buf[i])) {
                return -1;
            }
            if (s < RETRY_AFTER_MAX_S) {
                s = s * 10 + (buf[i] - '0');
            }
        }
        return s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : s;
    }
    time_t when = curl_getdate(buf, NULL);
    if (when == (time_t)-1) {
        return -1;
    }
    int64_t delta = (int64_t)when - (int64_t)time(NULL);
    if (delta < 0) {
        return 0;
    }
    return delta > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : (long)delta;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    transfer *t = userdata;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        t->resp->retry_after_s = -1; /* a new response (after 100-continue): forget the old */
    } else if (n > sizeof(name) - 1 && strncasecmp(ptr, name, sizeof(name) - 1) == 0) {
        t->resp->retry_after_s =
            parse_retry_after(ptr + sizeof(name) - 1, n - (sizeof(name) - 1));
    }
    return n;
}

/* Progress callback of a cancellable request: non-zero aborts it (CURLE_ABORTED_BY_CALLBACK). */
static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    const transfer *t = userdata;
    return atomic_load(t->req->cancel) ? 1 : 0;
}

/* ---------------- setup and outcome ---------------- */

static int setup(transfer *t)
{
    const csql__http_request *req = t->req;
    t->resp->retry_after_s = -1;
    t->max = req->max_response ? req->max_response : CSQL__HTTP_MAX_RESPONSE;

    int rc = csql__http_global_init();
    if (rc != CSQL_OK) {
        return rc;
    }
    rc = check_url(t);
    if (rc != CSQL_OK) {
        return rc;
    }
    int64_t left = csql__ms_left(req->deadline_ms);
    if (left <= 0) {
        return csql__error(CSQL_ERR_TIMEOUT, "deadline passed before the request to %s", t->host);
    }
    t->timeout_ms = left > LONG_MAX ? LONG_MAX : (long)left;

    t->easy = curl_easy_init();
    if (t->easy == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating a request to %s", t->host);
    }
    for (size_t i = 0; req->headers != NULL && req->headers[i] != NULL; i++) {
        struct curl_slist *l = curl_slist_append(t->headers, req->headers[i]);
        if (l == NULL) {
            return csql__error(CSQL_ERR_NOMEM, "out of memory creating a request to %s", t->host);
        }
        t->headers = l;
    }
    /* No "Expect: 100-continue" round trip for our small bodies. */
    struct curl_slist *l = curl_slist_append(t->headers, "Expect:");
    if (l == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating a request to %s", t->host);
    }
    t->headers = l;

    CURL *e = t->easy;
    CURLcode cc = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (cc == CURLE_OK) {                                                                      \
            cc = curl_easy_setopt(e, opt, val);                                                    \
        }                                                                                          \
    } while (0)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_TIMEOUT_MS, t->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, t->timeout_ms);
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, t);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, t);
    SET(CURLOPT_HTTPHEADER, t->headers);
    SET(CURLOPT_USERAGENT, "csql/" CSQL_VERSION_STRING);
    SET(CURLOPT_ACCEPT_ENCODING, ""); /* the bound applies to decoded bytes */
    if (req->cancel != NULL) {
        SET(CURLOPT_XFERINFOFUNCTION, on_progress);
        SET(CURLOPT_XFERINFODATA, t);
        SET(CURLOPT_NOPROGRESS, 0L);
    }
    if (req->no_proxy || host_is_loopback(t->host)) {
        /* A proxy's loopback (or metadata server) is not ours; other hosts keep env proxies. */
        SET(CURLOPT_NOPROXY, "*");
    }
    const char *method = req->method ? req->method : "GET";
    if (strcmp(method, "GET") == 0) {
        SET(CURLOPT_HTTPGET, 1L);
    } else {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
        SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
        if (strcmp(method, "POST") != 0) {
            SET(CURLOPT_CUSTOMREQUEST, method);
        }
    }
#undef SET
    if (cc == CURLE_OUT_OF_MEMORY) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating a request to %s", t->host);
    }
    if (cc != CURLE_OK) {
        return csql__error(CSQL_ERR_INTERNAL, "request to %s: libcurl option failed: %s", t->host,
                           curl_easy_strerror(cc));
    }
    t->errbuf[0] = '\0';
    return CSQL_OK;
}

/* What the request came to: 0 with resp filled, or a raised error. */
static int outcome(transfer *t, CURLcode cc)
{
    csql__http_response *resp = t->resp;
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    resp->status = status;
    const char *detail = t->errbuf[0] ? t->errbuf : curl_easy_strerror(cc);

    if (t->overflow) {
        return csql__error_http(CSQL_ERR_API_RESPONSE, status, NULL,
                                "response from %s larger than %zu bytes", t->host, t->max);
    }
    switch (cc) {
    case CURLE_OK:
        break;
    case CURLE_OPERATION_TIMEDOUT:
        return csql__error(CSQL_ERR_TIMEOUT, "request to %s timed out after %ld ms", t->host,
                           t->timeout_ms);
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return csql__error(CSQL_ERR_DNS, "could not resolve the host of %s: %s", t->shown_url,
                           detail);
    case CURLE_COULDNT_CONNECT:
        return csql__error(CSQL_ERR_CONNECT, "could not connect to %s: %s", t->host, detail);
    case CURLE_UNSUPPORTED_PROTOCOL:
        return csql__error(CSQL_ERR_BAD_CONFIG, "URL %s: unsupported protocol", t->shown_url);
    case CURLE_OUT_OF_MEMORY:
        return csql__error(CSQL_ERR_NOMEM, "out of memory talking to %s", t->host);
    case CURLE_WRITE_ERROR:
        return csql__error(CSQL_ERR_NOMEM, "out of memory reading the response from %s", t->host);
    case CURLE_ABORTED_BY_CALLBACK:
        return csql__error(CSQL_ERR_CLOSED, "request to %s cancelled: the dialer is closing",
                           t->host);
    default:
        return csql__error(CSQL_ERR_IO, "request to %s failed: %s", t->host, detail);
    }

    if (t->data == NULL) {
        t->data = malloc(1);
        if (t->data == NULL) {
            return csql__error(CSQL_ERR_NOMEM, "out of memory reading the response from %s",
                               t->host);
        }
    }
    t->data[t->len] = '\0';
    resp->body = t->data;
    resp->body_len = t->len;
    t->data = NULL;
    t->len = t->cap = 0;
    return CSQL_OK;
}

static void transfer_cleanup(transfer *t)
{
    if (t->easy != NULL) {
        curl_easy_cleanup(t->easy);
    }
    /* Header copies may hold a bearer token, a failed body part of one. */
    for (struct curl_slist *h = t->headers; h != NULL; h = h->next) {
        OPENSSL_cleanse(h->data, strlen(h->data));
    }
    curl_slist_free_all(t->headers);
    if (t->data != NULL) {
        OPENSSL_cleanse(t->data, t->len);
    }
    free(t->data);
    memset(t, 0, sizeof(*t));
}

static void transfer_init(transfer *t, const csql__http_request *req, csql__http_response *resp)
{
    memset(t, 0, sizeof(*t));
    memset(resp, 0, sizeof(*resp));
    resp->retry_after_s = -1;
    t->req = req;
    t->resp = resp;
}

/* ---------------- public ---------------- */

int csql__http_perform(const csql__http_request *req, csql__http_response *resp)
{
    transfer t;
    transfer_init(&t, req, resp);
    int rc = setup(&t);
    if (rc == CSQL_OK) {
        rc = outcome(&t, curl_easy_perform(t.easy));
    }
    transfer_cleanup(&t);
    return rc;
}

/* The latest deadline among the started transfers, to bound the multi loop. */
static int64_t latest_deadline(const transfer *ts, size_t n)
{
    int64_t latest = csql__mono_ms();
    for (size_t i = 0; i < n; i++) {
        if (ts[i].easy != NULL && ts[i].req->deadline_ms > latest) {
            latest = ts[i].req->deadline_ms;
        }
    }
    return latest + MULTI_GRACE_MS;
}

/* Run the multi handle until every transfer finished; record each CURLcode. */
static int run_multi(CURLM *m, transfer *ts, CURLcode *codes, bool *done, size_t n)
{
    int64_t stop_at = latest_deadline(ts, n);
    /* A cancellable request is looked at every CANCEL_POLL_MS (its progress callback runs then). */
    int poll_ms = MULTI_POLL_MS;
    for (size_t i = 0; i < n; i++) {
        if (ts[i].easy != NULL && ts[i].req->cancel != NULL) {
            poll_ms = CANCEL_POLL_MS;
        }
    }
    int running = 1;
    while (running > 0) {
        CURLMcode mc = curl_multi_perform(m, &running);
        if (mc == CURLM_OK && running > 0) {
            mc = curl_multi_poll(m, NULL, 0, poll_ms, NULL);
        }
        if (mc != CURLM_OK) {
            return csql__error(CSQL_ERR_INTERNAL, "libcurl multi failed: %s",
                               curl_multi_strerror(mc));
        }
        if (running > 0 && csql__mono_ms() > stop_at) {
            break; /* curl's own timeouts should have fired; never spin forever */
        }
    }
    int left = 0;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (ts[i].easy == msg->easy_handle) {
                codes[i] = msg->data.result;
                done[i] = true;
            }
        }
    }
    return CSQL_OK;
}

int csql__http_perform_many(const csql__http_request *reqs, csql__http_response *resps, int *rcs,
                            size_t n)
{
    if (n == 0) {
        return CSQL_OK;
    }
    if (n == 1 && reqs[0].cancel == NULL) {
        /* One request alone: the easy interface (a cancellable one takes the multi loop, which
           looks at its flag every CANCEL_POLL_MS instead of libcurl's once a second). */
        rcs[0] = csql__http_perform(&reqs[0], &resps[0]);
        return rcs[0];
    }
    int first_rc = CSQL_OK;
    transfer *ts = calloc(n, sizeof(*ts));
    CURLcode *codes = calloc(n, sizeof(*codes));
    bool *done = calloc(n, sizeof(*done));
    csql__saved_error *errs = calloc(n, sizeof(*errs)); /* each request's error, by index */
    CURLM *m = NULL;
    if (ts == NULL || codes == NULL || done == NULL || errs == NULL ||
        (m = curl_multi_init()) == NULL) {
        for (size_t i = 0; i < n; i++) {
            memset(&resps[i], 0, sizeof(resps[i]));
            resps[i].retry_after_s = -1;
            rcs[i] = CSQL_ERR_NOMEM;
        }
        first_rc = csql__error(CSQL_ERR_NOMEM, "out of memory starting %zu HTTP requests", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        transfer_init(&ts[i], &reqs[i], &resps[i]);
        rcs[i] = setup(&ts[i]);
        if (rcs[i] == CSQL_OK && curl_multi_add_handle(m, ts[i].easy) != CURLM_OK) {
            rcs[i] = csql__error(CSQL_ERR_INTERNAL, "libcurl refused a request to %s", ts[i].host);
        }
        if (rcs[i] != CSQL_OK) {
            csql__error_save(&errs[i]);
            if (ts[i].easy != NULL) {
                curl_easy_cleanup(ts[i].easy);
                ts[i].easy = NULL;
            }
        }
    }
    int mrc = run_multi(m, ts, codes, done, n);
    for (size_t i = 0; i < n; i++) {
        if (ts[i].easy == NULL) {
            continue;
        }
        if (mrc != CSQL_OK) {
            rcs[i] = mrc;
        } else if (!done[i]) {
            rcs[i] = csql__error(CSQL_ERR_TIMEOUT, "request to %s timed out", ts[i].host);
        } else {
            rcs[i] = outcome(&ts[i], codes[i]);
        }
        if (rcs[i] != CSQL_OK) {
            csql__error_save(&errs[i]);
        }
        curl_multi_remove_handle(m, ts[i].easy);
    }
    /* The first failing request, by index, is the one reported on this thread. */
    for (size_t i = 0; i < n && first_rc == CSQL_OK; i++) {
        if (rcs[i] != CSQL_OK) {
            first_rc = errs[i].message != NULL ? csql__error_restore(&errs[i]) : rcs[i];
        }
    }
done:
    for (size_t i = 0; ts != NULL && i < n; i++) {
        if (ts[i].easy != NULL && m != NULL) {
            curl_multi_remove_handle(m, ts[i].easy);
        }
        transfer_cleanup(&ts[i]);
    }
    for (size_t i = 0; errs != NULL && i < n; i++) {
        csql__saved_error_dispose(&errs[i]);
    }
    if (m != NULL) {
        curl_multi_cleanup(m);
    }
    free(ts);
    free(codes);
    free(done);
    free(errs);
    return first_rc;
}

void csql__http_response_dispose(csql__http_response *resp)
{
    if (resp == NULL) {
        return;
    }
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
    resp->status = 0;
    resp->retry_after_s = -1;
}

char *csql__http_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    if (n > (SIZE_MAX - 1) / 3) {
        return NULL;
    }
    char *out = malloc(n * 3 + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0xf];
        }
    }
    out[o] = '\0';
    return out;
}
