/*
 * csql__http_* against a tiny HTTP/1.1 server on 127.0.0.1 run by this test:
 * status and body, request headers, Retry-After, the response bound,
 * deadlines, the plain-http policy, no redirects, and concurrency of
 * perform_many.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "http.h"
#include "util/clock.h"

/* ---------------- the test server ---------------- */

#define MAX_CONN_THREADS 128

typedef struct server {
    int fd;
    int port;
    pthread_t accept_thread;
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_t conns[MAX_CONN_THREADS];
    int n_conns;
} server;

static server g_srv;

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void respond(int fd, int status, const char *extra_headers, const char *body, size_t len)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", status,
                     len, extra_headers ? extra_headers : "");
    write_all(fd, head, (size_t)n);
    write_all(fd, body, len);
}

/* Sleep up to ms, waking early when the server stops. */
static void nap(long ms)
{
    for (long slept = 0; slept < ms && !atomic_load(&g_srv.stop); slept += 10) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void handle(int fd)
{
    char req[16384];
    size_t n = 0;
    char *end = NULL;
    while (n < sizeof(req) - 1 && end == NULL) {
        ssize_t r = recv(fd, req + n, sizeof(req) - 1 - n, 0);
        if (r <= 0) {
            return;
        }
        n += (size_t)r;
        req[n] = '\0';
        if ((unsigned char)req[0] == 0x16) {
            /* A TLS ClientHello: answer plain text, as a misconfigured server would. */
            write_all(fd, "HTTP/1.1 400 Bad\r\n\r\n", 21);
            return;
        }
        end = strstr(req, "\r\n\r\n");
    }
    if (end == NULL) {
        return;
    }
    size_t head_len = (size_t)(end - req) + 4;
    size_t clen = 0;
    const char *cl = strcasestr(req, "\r\ncontent-length:");
    if (cl != NULL && cl < end) {
        clen = (size_t)strtoul(cl + 17, NULL, 10);
    }
    while (n < head_len + clen && n < sizeof(req) - 1) {
        ssize_t r = recv(fd, req + n, sizeof(req) - 1 - n, 0);
        if (r <= 0) {
            break;
        }
        n += (size_t)r;
    }
    req[n] = '\0';
    char method[16], path[1024];
    if (sscanf(req, "%15s %1023s", method, path) != 2) {
        return;
    }
    if (strncmp(path, "http://", 7) == 0) {
        /* Asked as a forward proxy (absolute URI in the request line). */
        char body[1100];
        int bl = snprintf(body, sizeof(body), "proxied %s", path);
        respond(fd, 200, NULL, body, (size_t)bl);
    } else if (strncmp(path, "/status/", 8) == 0) {
        int st = atoi(path + 8);
        char body[64];
        int bl = snprintf(body, sizeof(body), "status %d", st);
        respond(fd, st, NULL, body, (size_t)bl);
    } else if (strcmp(path, "/echo") == 0) {
        respond(fd, 200, NULL, req, n); /* the whole request, head and body */
    } else if (strncmp(path, "/big/", 5) == 0) {
        size_t sz = (size_t)strtoul(path + 5, NULL, 10);
        char *b = malloc(sz + 1);
        memset(b, 'x', sz);
        respond(fd, 200, NULL, b, sz);
        free(b);
    } else if (strncmp(path, "/stream/", 8) == 0) {
        /* No Content-Length: the body runs until close. */
        size_t sz = (size_t)strtoul(path + 8, NULL, 10);
        const char *head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        write_all(fd, head, strlen(head));
        char chunk[1024];
        memset(chunk, 'y', sizeof(chunk));
        for (size_t sent = 0; sent < sz && !atomic_load(&g_srv.stop); sent += sizeof(chunk)) {
            write_all(fd, chunk, sizeof(chunk) < sz - sent ? sizeof(chunk) : sz - sent);
        }
    } else if (strncmp(path, "/delay/", 7) == 0) {
        nap(atol(path + 7));
        respond(fd, 200, NULL, "slept", 5);
    } else if (strncmp(path, "/retry-after/", 13) == 0) {
        char h[256];
        snprintf(h, sizeof(h), "Retry-After: %s\r\n", path + 13);
        respond(fd, 429, h, "slow down", 9);
    } else if (strcmp(path, "/retry-date") == 0) {
        char date[64], h[128];
        time_t when = time(NULL) + 100;
        struct tm tm;
        gmtime_r(&when, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        snprintf(h, sizeof(h), "Retry-After: %s\r\n", date);
        respond(fd, 503, h, "", 0);
    } else if (strcmp(path, "/redirect") == 0) {
        respond(fd, 302, "Location: /echo\r\n", "moved", 5);
    } else {
        respond(fd, 404, NULL, "no route", 8);
    }
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    handle(fd);
    shutdown(fd, SHUT_WR);
    close(fd);
    return NULL;
}

static void *accept_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_srv.stop)) {
        struct pollfd p = {.fd = g_srv.fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) {
            continue;
        }
        int c = accept(g_srv.fd, NULL, NULL);
        if (c < 0) {
            continue;
        }
        pthread_mutex_lock(&g_srv.mu);
        if (g_srv.n_conns < MAX_CONN_THREADS &&
            pthread_create(&g_srv.conns[g_srv.n_conns], NULL, conn_main, (void *)(intptr_t)c) ==
                0) {
            g_srv.n_conns++;
        } else {
            close(c);
        }
        pthread_mutex_unlock(&g_srv.mu);
    }
    return NULL;
}

static int server_start(void **state)
{
    (void)state;
    memset(&g_srv, 0, sizeof(g_srv));
    pthread_mutex_init(&g_srv.mu, NULL);
    g_srv.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (g_srv.fd < 0 || bind(g_srv.fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(g_srv.fd, 64) != 0 || getsockname(g_srv.fd, (struct sockaddr *)&a, &al) != 0) {
        return -1;
    }
    g_srv.port = ntohs(a.sin_port);
    return pthread_create(&g_srv.accept_thread, NULL, accept_main, NULL) == 0 ? 0 : -1;
}

static int server_stop(void **state)
{
    (void)state;
    atomic_store(&g_srv.stop, 1);
    pthread_join(g_srv.accept_thread, NULL);
    for (int i = 0; i < g_srv.n_conns; i++) {
        pthread_join(g_srv.conns[i], NULL);
    }
    close(g_srv.fd);
    pthread_mutex_destroy(&g_srv.mu);
    return 0;
}

/* ---------------- helpers ---------------- */

static char g_url[256];

static const char *url(const char *path)
{
    snprintf(g_url, sizeof(g_url), "http://127.0.0.1:%d%s", g_srv.port, path);
    return g_url;
}

static csql__http_request get(const char *u, int64_t timeout_ms)
{
    csql__http_request r = {
        .method = "GET",
        .url = u,
        .deadline_ms = csql__mono_ms() + timeout_ms,
    };
    return r;
}

static void assert_msg_has(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", m, needle);
    }
}

static void assert_msg_lacks(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) != NULL) {
        fail_msg("message \"%s\" contains \"%s\"", m, needle);
    }
}

/* ---------------- tests ---------------- */

static void test_status_and_body(void **state)
{
    (void)state;
    assert_int_equal(csql__http_global_init(), CSQL_OK);
    csql__http_request r = get(url("/status/404"), 5000);
    csql__http_response resp;
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.status, 404);
    assert_string_equal(resp.body, "status 404");
    assert_int_equal(resp.body_len, 10);
    assert_int_equal(resp.retry_after_s, -1);
    csql__http_response_dispose(&resp);
    assert_null(resp.body);

    r = get(url("/status/204"), 5000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.status, 204);
    assert_non_null(resp.body); /* "" rather than NULL */
    assert_int_equal(resp.body_len, 0);
    csql__http_response_dispose(&resp);
}

static void test_post_sends_headers_and_body(void **state)
{
    (void)state;
    const char *headers[] = {"X-Test: one", "Content-Type: application/json", NULL};
    const char body[] = "{\"a\":1}";
    csql__http_request r = {
        .method = "POST",
        .url = url("/echo"),
        .headers = headers,
        .body = body,
        .body_len = sizeof(body) - 1,
        .deadline_ms = csql__mono_ms() + 5000,
    };
    csql__http_response resp;
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.status, 200);
    assert_true(strncmp(resp.body, "POST /echo HTTP/1.1\r\n", 21) == 0);
    assert_non_null(strstr(resp.body, "\r\nX-Test: one\r\n"));
    assert_non_null(strstr(resp.body, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(resp.body, "\r\nUser-Agent: csql/"));
    assert_non_null(strstr(resp.body, "\r\nContent-Length: 7\r\n"));
    assert_null(strcasestr(resp.body, "Expect:"));
    assert_non_null(strstr(resp.body, "\r\n\r\n{\"a\":1}"));
    csql__http_response_dispose(&resp);

    /* A caller's User-Agent replaces the default; POST without a body sends an empty one. */
    const char *ua[] = {"User-Agent: csql/9 test", NULL};
    csql__http_request r2 = {.method = "POST", .url = url("/echo"), .headers = ua,
                             .deadline_ms = csql__mono_ms() + 5000};
    assert_int_equal(csql__http_perform(&r2, &resp), CSQL_OK);
    assert_non_null(strstr(resp.body, "\r\nUser-Agent: csql/9 test\r\n"));
    assert_non_null(strstr(resp.body, "\r\nContent-Length: 0\r\n"));
    csql__http_response_dispose(&resp);
}

static void test_retry_after(void **state)
{
    (void)state;
    csql__http_response resp;
    csql__http_request r = get(url("/retry-after/120"), 5000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.status, 429);
    assert_int_equal(resp.retry_after_s, 120);
    csql__http_response_dispose(&resp);

    r = get(url("/retry-after/0"), 5000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.retry_after_s, 0);
    csql__http_response_dispose(&resp);

    r = get(url("/retry-after/soon"), 5000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.retry_after_s, -1);
    csql__http_response_dispose(&resp);

    r = get(url("/retry-after/99999999999999999999999"), 5000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.retry_after_s, 24 * 3600);
    csql__http_response_dispose(&resp);

    r = get(url("/retry-after/12x"), 5000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.retry_after_s, -1);
    csql__http_response_dispose(&resp);

    r = get(url("/retry-date"), 5000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.status, 503);
    assert_in_range(resp.retry_after_s, 97, 101);
    csql__http_response_dispose(&resp);
}

static void test_response_bound(void **state)
{
    (void)state;
    csql__http_response resp;
    csql__http_request r = get(url("/big/1000"), 5000);
    r.max_response = 1000;
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.body_len, 1000);
    csql__http_response_dispose(&resp);

    r = get(url("/big/1001"), 5000);
    r.max_response = 1000;
    csql_error_clear();
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_API_RESPONSE);
    assert_msg_has("response from 127.0.0.1 larger than 1000 bytes");
    assert_null(resp.body);

    /* No Content-Length, 5 MiB streamed: cut at the default bound (1 MiB). */
    r = get(url("/stream/5242880"), 10000);
    int64_t t0 = csql__mono_ms();
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_API_RESPONSE);
    assert_true(csql__mono_ms() - t0 < 5000);
    assert_msg_has("larger than 1048576 bytes");
}

static void test_deadline(void **state)
{
    (void)state;
    csql__http_response resp;
    const char *headers[] = {"Authorization: Bearer SECRET-TOKEN-VALUE", NULL};
    csql__http_request r = get(url("/delay/3000"), 200);
    r.headers = headers;
    int64_t t0 = csql__mono_ms();
    csql_error_clear();
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_TIMEOUT);
    int64_t took = csql__mono_ms() - t0;
    assert_in_range(took, 150, 1500);
    assert_msg_has("127.0.0.1");
    assert_msg_lacks("SECRET");
    assert_int_equal(csql_error_last()->category, CSQL_CAT_TIMEOUT);

    /* A deadline already past: no request at all. */
    r = get(url("/status/200"), -1);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_TIMEOUT);
    assert_msg_has("deadline");
}

static void test_url_policy(void **state)
{
    (void)state;
    csql__http_response resp;
    csql__http_request r = get("http://example.com/path?token=SECRET", 1000);
    csql_error_clear();
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_BAD_CONFIG);
    assert_msg_has("http://example.com/path");
    assert_msg_has("loopback");
    assert_msg_lacks("SECRET");
    assert_msg_lacks("?");

    r = get("http://user:SECRET@example.com/x#frag", 1000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_BAD_CONFIG);
    assert_msg_has("http://example.com/x");
    assert_msg_lacks("SECRET");
    assert_msg_lacks("user");
    assert_msg_lacks("frag");

    r = get("http://10.1.2.3:8080/x", 1000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_BAD_CONFIG);
    r = get("http://127.0.0.1.example.com/x", 1000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_BAD_CONFIG);

    r = get("ftp://127.0.0.1/x", 1000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_BAD_CONFIG);
    assert_msg_has("ftp://127.0.0.1/x");
    r = get("file:///etc/passwd", 1000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_BAD_CONFIG);
    r = get("not a url", 1000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_BAD_CONFIG);
    r = get(NULL, 1000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_BAD_CONFIG);

    /* Loopback by name and by other 127/8 addresses is fine. */
    char u[128];
    snprintf(u, sizeof(u), "http://localhost:%d/status/200", g_srv.port);
    r = get(u, 5000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.status, 200);
    csql__http_response_dispose(&resp);

    /* allow_plain_http lifts the loopback rule (the metadata server). */
    r = get("http://192.0.2.1:9/x", 300);
    r.allow_plain_http = 1;
    int rc = csql__http_perform(&r, &resp);
    assert_int_not_equal(rc, CSQL_ERR_BAD_CONFIG);
    assert_int_not_equal(rc, CSQL_OK);
}

static void test_transport_errors(void **state)
{
    (void)state;
    csql__http_response resp;
    /* Nothing listens on port 1. */
    csql__http_request r = get("http://127.0.0.1:1/x", 5000);
    csql_error_clear();
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_CONNECT);
    assert_msg_has("127.0.0.1");
    assert_int_equal(resp.status, 0);

    /* https to a plain-HTTP server: the TLS handshake fails. */
    char u[128];
    snprintf(u, sizeof(u), "https://127.0.0.1:%d/status/200", g_srv.port);
    r = get(u, 5000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_IO);
    assert_msg_has("127.0.0.1");

    /* A name that cannot resolve (.invalid is reserved). */
    r = get("https://no-such-host.invalid/x", 4000);
    int rc = csql__http_perform(&r, &resp);
    assert_true(rc == CSQL_ERR_DNS || rc == CSQL_ERR_TIMEOUT);
    if (rc == CSQL_ERR_DNS) {
        assert_msg_has("no-such-host.invalid");
    }
}

static void test_no_redirects(void **state)
{
    (void)state;
    csql__http_response resp;
    csql__http_request r = get(url("/redirect"), 5000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.status, 302);
    assert_string_equal(resp.body, "moved");
    csql__http_response_dispose(&resp);
}

static void test_perform_many_concurrent(void **state)
{
    (void)state;
    char u1[128], u2[128];
    snprintf(u1, sizeof(u1), "http://127.0.0.1:%d/delay/300", g_srv.port);
    snprintf(u2, sizeof(u2), "http://127.0.0.1:%d/delay/300", g_srv.port);
    csql__http_request reqs[2] = {get(u1, 5000), get(u2, 5000)};
    csql__http_response resps[2];
    int rcs[2];
    int64_t t0 = csql__mono_ms();
    assert_int_equal(csql__http_perform_many(reqs, resps, rcs, 2), CSQL_OK);
    int64_t took = csql__mono_ms() - t0;
    assert_int_equal(rcs[0], CSQL_OK);
    assert_int_equal(rcs[1], CSQL_OK);
    assert_int_equal(resps[0].status, 200);
    assert_string_equal(resps[1].body, "slept");
    /* Both together take about 300 ms; one after the other would take 600. */
    assert_in_range(took, 280, 550);
    csql__http_response_dispose(&resps[0]);
    csql__http_response_dispose(&resps[1]);
}

static void test_perform_many_mixed(void **state)
{
    (void)state;
    char u0[128], u2[128];
    snprintf(u0, sizeof(u0), "http://127.0.0.1:%d/status/201", g_srv.port);
    snprintf(u2, sizeof(u2), "http://127.0.0.1:%d/big/5000", g_srv.port);
    csql__http_request reqs[3] = {get(u0, 5000), get("http://example.com/x", 5000),
                                  get(u2, 5000)};
    reqs[2].max_response = 100;
    csql__http_response resps[3];
    int rcs[3];
    csql_error_clear();
    assert_int_equal(csql__http_perform_many(reqs, resps, rcs, 3), CSQL_ERR_BAD_CONFIG);
    assert_int_equal(rcs[0], CSQL_OK);
    assert_int_equal(rcs[1], CSQL_ERR_BAD_CONFIG);
    assert_int_equal(rcs[2], CSQL_ERR_API_RESPONSE);
    assert_int_equal(resps[0].status, 201);
    /* The thread's error is the first failing request's. */
    assert_msg_has("example.com");
    csql__http_response_dispose(&resps[0]);
    csql__http_response_dispose(&resps[1]);
    csql__http_response_dispose(&resps[2]);

    /* n = 1 and n = 0 */
    csql__http_request one = get(u0, 5000);
    assert_int_equal(csql__http_perform_many(&one, resps, rcs, 1), CSQL_OK);
    assert_int_equal(resps[0].status, 201);
    csql__http_response_dispose(&resps[0]);
    assert_int_equal(csql__http_perform_many(NULL, NULL, NULL, 0), CSQL_OK);
}

static void test_perform_many_timeouts(void **state)
{
    (void)state;
    char u0[128], u1[128];
    snprintf(u0, sizeof(u0), "http://127.0.0.1:%d/delay/2000", g_srv.port);
    snprintf(u1, sizeof(u1), "http://127.0.0.1:%d/status/200", g_srv.port);
    csql__http_request reqs[2] = {get(u0, 200), get(u1, 5000)};
    csql__http_response resps[2];
    int rcs[2];
    int64_t t0 = csql__mono_ms();
    assert_int_equal(csql__http_perform_many(reqs, resps, rcs, 2), CSQL_ERR_TIMEOUT);
    assert_true(csql__mono_ms() - t0 < 1500);
    assert_int_equal(rcs[0], CSQL_ERR_TIMEOUT);
    assert_int_equal(rcs[1], CSQL_OK);
    assert_int_equal(resps[1].status, 200);
    csql__http_response_dispose(&resps[0]);
    csql__http_response_dispose(&resps[1]);
}

/* Set *flag after ms (another thread), as csql_dialer_close does to a refresh in flight. */
typedef struct late_cancel {
    atomic_bool *flag;
    long ms;
} late_cancel;

static void *cancel_main(void *arg)
{
    late_cancel *lc = arg;
    nap(lc->ms);
    atomic_store(lc->flag, true);
    return NULL;
}

/* A request in flight ends soon after its cancel flag is set, with CSQL_ERR_CLOSED. */
static void test_cancel_in_flight(void **state)
{
    (void)state;
    atomic_bool cancel = false;
    csql__http_response resp;
    csql__http_request r = get(url("/delay/5000"), 10000);
    r.cancel = &cancel;
    late_cancel lc = {&cancel, 200};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_main, &lc), 0);
    int64_t t0 = csql__mono_ms();
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_ERR_CLOSED);
    int64_t took = csql__mono_ms() - t0;
    pthread_join(t, NULL);
    assert_in_range(took, 150, 1600); /* libcurl looks at least once a second */
    assert_msg_has("cancelled");
    assert_msg_has("127.0.0.1");
    csql__http_response_dispose(&resp);

    /* Two at once (the refresh's pair): within the 100 ms polling slice. */
    atomic_store(&cancel, false);
    char u0[128], u1[128];
    snprintf(u0, sizeof(u0), "http://127.0.0.1:%d/delay/5000", g_srv.port);
    snprintf(u1, sizeof(u1), "http://127.0.0.1:%d/delay/5000", g_srv.port);
    csql__http_request reqs[2] = {get(u0, 10000), get(u1, 10000)};
    reqs[0].cancel = reqs[1].cancel = &cancel;
    csql__http_response resps[2];
    int rcs[2];
    assert_int_equal(pthread_create(&t, NULL, cancel_main, &lc), 0);
    t0 = csql__mono_ms();
    assert_int_equal(csql__http_perform_many(reqs, resps, rcs, 2), CSQL_ERR_CLOSED);
    took = csql__mono_ms() - t0;
    pthread_join(t, NULL);
    assert_in_range(took, 150, 1000);
    assert_int_equal(rcs[0], CSQL_ERR_CLOSED);
    assert_int_equal(rcs[1], CSQL_ERR_CLOSED);
    csql__http_response_dispose(&resps[0]);
    csql__http_response_dispose(&resps[1]);

    /* One cancellable request through perform_many: the multi loop's 100 ms slices too. */
    atomic_store(&cancel, false);
    csql__http_request one = get(u0, 10000);
    one.cancel = &cancel;
    assert_int_equal(pthread_create(&t, NULL, cancel_main, &lc), 0);
    t0 = csql__mono_ms();
    assert_int_equal(csql__http_perform_many(&one, resps, rcs, 1), CSQL_ERR_CLOSED);
    took = csql__mono_ms() - t0;
    pthread_join(t, NULL);
    assert_in_range(took, 150, 1000);
    csql__http_response_dispose(&resps[0]);

    /* A flag that stays false changes nothing. */
    atomic_store(&cancel, false);
    r = get(url("/status/200"), 5000);
    r.cancel = &cancel;
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_int_equal(resp.status, 200);
    csql__http_response_dispose(&resp);
}

static void test_env_proxy(void **state)
{
    (void)state;
    char proxy[64];
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", g_srv.port);
    setenv("http_proxy", proxy, 1);
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    csql__http_response resp;

    /* Other hosts go through the proxy from the environment... */
    csql__http_request r = get("http://192.0.2.1/x?y=1", 3000);
    r.allow_plain_http = 1;
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_string_equal(resp.body, "proxied http://192.0.2.1/x?y=1");
    csql__http_response_dispose(&resp);

    /* ...but never loopback, nor a request marked no_proxy (the metadata server). */
    r = get(url("/status/200"), 3000);
    assert_int_equal(csql__http_perform(&r, &resp), CSQL_OK);
    assert_string_equal(resp.body, "status 200");
    csql__http_response_dispose(&resp);

    r = get("http://192.0.2.1/x", 300);
    r.allow_plain_http = 1;
    r.no_proxy = 1;
    int rc = csql__http_perform(&r, &resp);
    assert_int_not_equal(rc, CSQL_OK); /* went direct to an unroutable address */
    csql__http_response_dispose(&resp);
    unsetenv("http_proxy");
}

static void test_escape(void **state)
{
    (void)state;
    char *e = csql__http_escape("a b/c@d~e-f_g.h+i=j&k\xc3\xa9");
    assert_string_equal(e, "a%20b%2Fc%40d~e-f_g.h%2Bi%3Dj%26k%C3%A9");
    free(e);
    e = csql__http_escape("");
    assert_string_equal(e, "");
    free(e);
}

static void *threaded_get(void *arg)
{
    int *ok = arg;
    char u[128];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/status/200", g_srv.port);
    for (int i = 0; i < 5; i++) {
        csql__http_request r = get(u, 5000);
        csql__http_response resp;
        if (csql__http_perform(&r, &resp) == CSQL_OK && resp.status == 200) {
            (*ok)++;
        }
        csql__http_response_dispose(&resp);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    pthread_t th[4];
    int ok[4] = {0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, threaded_get, &ok[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(ok[i], 5);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_and_body),
        cmocka_unit_test(test_post_sends_headers_and_body),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_response_bound),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_url_policy),
        cmocka_unit_test(test_transport_errors),
        cmocka_unit_test(test_no_redirects),
        cmocka_unit_test(test_perform_many_concurrent),
        cmocka_unit_test(test_perform_many_mixed),
        cmocka_unit_test(test_perform_many_timeouts),
        cmocka_unit_test(test_cancel_in_flight),
        cmocka_unit_test(test_env_proxy),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, server_start, server_stop);
}
