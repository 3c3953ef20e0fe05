/*
 * The forwarding engine (src/loop.c, src/fwd.c) against fake transports:
 * socketpairs, loopback TCP pairs and an in-test TLS 1.3 server. Half-close
 * both ways, backpressure with a bounded buffer, errors closing the other
 * side, and 1000 connections through one loop thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conn_internal.h"
#include "csql/errors.h"
#include "fwd.h"
#include "fwd_testlib.h"
#include "loop.h"
#include "util/ring.h"

static int g_key; /* the loop key of these tests */

/* ---------------- fixture ---------------- */

typedef struct pair_fx {
    int app; /* the driver's end */
    int srv; /* the server's end (plain) */
    SSL *srv_ssl;
    csql__fwd *f;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool closed;
    csql__fwd_stats st;
} pair_fx;

static void on_close(void *arg, const csql__fwd_stats *st)
{
    pair_fx *p = arg;
    pthread_mutex_lock(&p->mu);
    p->closed = true;
    p->st = *st;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

typedef struct start_call {
    csql__loop *loop;
    int local;
    csql__fwd_remote remote;
    csql__fwd_opts opts;
    csql__fwd **out;
    int rc;
} start_call;

static void start_on_loop(void *arg)
{
    start_call *c = arg;
    c->rc = csql__fwd_start(c->loop, c->local, &c->remote, &c->opts, c->out);
}

static void start_pair(csql__loop *loop, pair_fx *p, int local, csql__fwd_remote remote,
                       size_t bufsize, bool tcp)
{
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    start_call c = {.loop = loop, .local = local, .remote = remote, .out = &p->f};
    c.opts.buffer_size = bufsize;
    c.opts.local_is_tcp = tcp;
    c.opts.on_close = on_close;
    c.opts.arg = p;
    assert_int_equal(csql__loop_call(loop, start_on_loop, &c), 0);
    assert_int_equal(c.rc, 0);
}

/* Plain socketpairs on both sides. */
static void plain_pair(csql__loop *loop, pair_fx *p, size_t bufsize)
{
    memset(p, 0, sizeof(*p));
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
    p->app = a[0];
    p->srv = b[1];
    csql__fwd_remote r = {.fd = b[0]};
    start_pair(loop, p, a[1], r, bufsize, false);
}

static int wait_closed(pair_fx *p, int timeout_ms)
{
    int64_t deadline = tl_now_ms() + timeout_ms;
    pthread_mutex_lock(&p->mu);
    while (!p->closed && tl_now_ms() < deadline) {
        pthread_mutex_unlock(&p->mu);
        usleep(1000);
        pthread_mutex_lock(&p->mu);
    }
    bool c = p->closed;
    pthread_mutex_unlock(&p->mu);
    return c ? 0 : -1;
}

static void pair_dispose(pair_fx *p)
{
    if (p->app >= 0) {
        close(p->app);
    }
    if (p->srv_ssl) {
        SSL_free(p->srv_ssl);
    }
    if (p->srv >= 0) {
        close(p->srv);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
}

static int setup(void **state)
{
    csql__loop *loop;
    if (csql__loop_acquire(&g_key, &loop) != 0) {
        return -1;
    }
    *state = loop;
    return 0;
}

static int teardown(void **state)
{
    csql__loop *loop = *state;
    csql__loop_release(loop); /* last reference, on this thread: stopped and joined */
    assert_int_equal(csql__loop_count(), 0);
    assert_int_equal(csql__fwd_live_count(), 0);
    assert_int_equal(csql__ring_allocated_bytes(), 0);
    return 0;
}

/* ---------------- ring ---------------- */

static void test_ring_wraps_and_never_exceeds_cap(void **state)
{
    (void)state;
    csql__ring r;
    csql__ring_init(&r, 10);
    uint8_t *w;
    const uint8_t *rd;
    size_t span;
    assert_int_equal(csql__ring_write_span(&r, &w, &span), 0);
    assert_int_equal(span, 10);
    memcpy(w, "abcdefgh", 8);
    csql__ring_commit(&r, 8);
    assert_int_equal(csql__ring_read_span(&r, &rd), 8);
    csql__ring_consume(&r, 6); /* "gh" left at offset 6 */
    assert_int_equal(csql__ring_write_span(&r, &w, &span), 0);
    assert_int_equal(span, 2); /* to the end */
    memcpy(w, "ij", 2);
    csql__ring_commit(&r, 2);
    assert_int_equal(csql__ring_write_span(&r, &w, &span), 0);
    assert_int_equal(span, 6); /* wrapped: up to head */
    memcpy(w, "klmnop", 6);
    csql__ring_commit(&r, 6);
    assert_int_equal(csql__ring_len(&r), 10);
    assert_int_equal(csql__ring_write_span(&r, &w, &span), 0);
    assert_int_equal(span, 0); /* full: the cap holds */
    assert_int_equal(csql__ring_read_span(&r, &rd), 4);
    assert_memory_equal(rd, "ghij", 4);
    csql__ring_consume(&r, 4);
    assert_int_equal(csql__ring_read_span(&r, &rd), 6);
    assert_memory_equal(rd, "klmnop", 6);
    csql__ring_consume(&r, 6);
    assert_int_equal(csql__ring_allocated_bytes(), 10);
    csql__ring_trim(&r);
    assert_null(r.data);
    assert_int_equal(csql__ring_allocated_bytes(), 0);
}

/* ---------------- plain transport ---------------- */

static void test_bytes_flow_both_ways(void **state)
{
    csql__loop *loop = *state;
    pair_fx p;
    plain_pair(loop, &p, 0);
    char buf[64];
    assert_int_equal(tl_write_all(p.app, "hello server", 12, 2000), 0);
    assert_int_equal(tl_read_n(p.srv, buf, 12, 2000), 12);
    assert_memory_equal(buf, "hello server", 12);
    assert_int_equal(tl_write_all(p.srv, "hello app", 9, 2000), 0);
    assert_int_equal(tl_read_n(p.app, buf, 9, 2000), 9);
    assert_memory_equal(buf, "hello app", 9);
    close(p.app);
    p.app = -1;
    close(p.srv);
    p.srv = -1;
    assert_int_equal(wait_closed(&p, 5000), 0);
    assert_int_equal(p.st.up_bytes, 12);
    assert_int_equal(p.st.down_bytes, 9);
    pair_dispose(&p);
}

static void test_half_close_local_first(void **state)
{
    csql__loop *loop = *state;
    pair_fx p;
    plain_pair(loop, &p, 0);
    char buf[64];
    /* The driver sends a request and half-closes; the server still answers. */
    assert_int_equal(tl_write_all(p.app, "request", 7, 2000), 0);
    assert_int_equal(shutdown(p.app, SHUT_WR), 0);
    assert_int_equal(tl_read_to_eof(p.srv, buf, sizeof(buf), 2000), 7);
    assert_memory_equal(buf, "request", 7);
    assert_int_equal(tl_write_all(p.srv, "answer after EOF", 16, 2000), 0);
    assert_int_equal(tl_read_n(p.app, buf, 16, 2000), 16);
    assert_memory_equal(buf, "answer after EOF", 16);
    /* Not finished yet: one direction is still open. */
    assert_int_equal(wait_closed(&p, 50), -1);
    assert_int_equal(shutdown(p.srv, SHUT_WR), 0);
    assert_int_equal(tl_read_to_eof(p.app, buf, sizeof(buf), 2000), 0);
    assert_int_equal(wait_closed(&p, 5000), 0);
    assert_int_equal(p.st.error, 0);
    pair_dispose(&p);
}

static void test_half_close_server_first(void **state)
{
    csql__loop *loop = *state;
    pair_fx p;
    plain_pair(loop, &p, 0);
    char buf[64];
    assert_int_equal(tl_write_all(p.srv, "greeting", 8, 2000), 0);
    assert_int_equal(shutdown(p.srv, SHUT_WR), 0);
    assert_int_equal(tl_read_to_eof(p.app, buf, sizeof(buf), 2000), 8);
    /* The driver still sends after the server's EOF. */
    assert_int_equal(tl_write_all(p.app, "late data", 9, 2000), 0);
    assert_int_equal(tl_read_n(p.srv, buf, 9, 2000), 9);
    assert_memory_equal(buf, "late data", 9);
    assert_int_equal(shutdown(p.app, SHUT_WR), 0);
    assert_int_equal(tl_read_to_eof(p.srv, buf, sizeof(buf), 2000), 0);
    assert_int_equal(wait_closed(&p, 5000), 0);
    assert_int_equal(p.st.error, 0);
    pair_dispose(&p);
}

static void shrink_buffers(int fd)
{
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
}

typedef struct bp_write {
    int fd;
    uint8_t *d;
    size_t off, n;
} bp_write;

static void *bp_writer(void *arg)
{
    bp_write *w = arg;
    tl_write_all(w->fd, w->d + w->off, w->n, 20000);
    return NULL;
}

/* A driver that does not read: the server is slowed down, memory stays at the cap. */
static void test_backpressure_slow_reader(void **state)
{
    csql__loop *loop = *state;
    const size_t cap = 16384;
    pair_fx p;
    memset(&p, 0, sizeof(p));
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
    for (int i = 0; i < 2; i++) {
        shrink_buffers(a[i]);
        shrink_buffers(b[i]);
    }
    p.app = a[0];
    p.srv = b[1];
    start_pair(loop, &p, a[1], (csql__fwd_remote){.fd = b[0]}, cap, false);

    /* The server pushes 8 MiB without anyone reading at the driver's end. */
    const size_t total = 8u << 20;
    uint8_t *data = malloc(total);
    tl_fill(data, total, 42);
    fcntl(p.srv, F_SETFL, O_NONBLOCK);
    size_t sent = 0;
    int64_t stalled_since = -1;
    for (int i = 0; i < 100000 && sent < total; i++) {
        ssize_t w = send(p.srv, data + sent, total - sent, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            stalled_since = -1;
            continue;
        }
        if (stalled_since < 0) {
            stalled_since = tl_now_ms();
        }
        if (tl_now_ms() - stalled_since > 300) {
            break; /* the sender is blocked: backpressure reached it */
        }
        usleep(1000);
    }
    assert_true(sent < total);
    /* What is in flight: socket buffers on both hops plus at most one ring. */
    assert_true(csql__ring_allocated_bytes() <= 2 * cap);
    fprintf(stderr, "backpressure: sender blocked after %zu bytes (ring cap %zu)\n", sent, cap);

    /* The driver finally reads everything, in order. */
    uint64_t want = tl_fnv(TL_FNV_INIT, data, total);
    fcntl(p.srv, F_SETFL, 0);
    uint8_t *got = malloc(total);
    /* Finish the send on a helper thread while we read. */
    pthread_t t;
    bp_write w = {p.srv, data, sent, total - sent};
    pthread_create(&t, NULL, bp_writer, &w);
    assert_int_equal(tl_read_n(p.app, got, total, 20000), (ssize_t)total);
    pthread_join(t, NULL);
    assert_true(tl_fnv(TL_FNV_INIT, got, total) == want);

    close(p.srv);
    p.srv = -1;
    assert_int_equal(tl_wait_eof(p.app, 5000, NULL), 0);
    close(p.app);
    p.app = -1;
    assert_int_equal(wait_closed(&p, 5000), 0);
    assert_true(p.st.down_max_buffered <= cap);
    assert_true(p.st.up_max_buffered <= cap);
    assert_int_equal(p.st.down_bytes, total);
    free(data);
    free(got);
    pair_dispose(&p);
}

static int tcp_pair(int out[2])
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (bind(l, (struct sockaddr *)&sa, sl) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &sl) != 0) {
        close(l);
        return -1;
    }
    out[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(out[0], (struct sockaddr *)&sa, sl) != 0) {
        close(l);
        return -1;
    }
    out[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    close(l);
    return out[1] >= 0 ? 0 : -1;
}

static void reset_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* The server resets: the driver (TCP) gets a reset too, not a clean EOF. */
static void test_remote_error_resets_local(void **state)
{
    csql__loop *loop = *state;
    pair_fx p;
    memset(&p, 0, sizeof(p));
    int a[2], b[2];
    assert_int_equal(tcp_pair(a), 0);
    assert_int_equal(tcp_pair(b), 0);
    p.app = a[0];
    p.srv = b[1];
    start_pair(loop, &p, a[1], (csql__fwd_remote){.fd = b[0]}, 0, true);
    char buf[16];
    assert_int_equal(tl_write_all(p.app, "x", 1, 2000), 0);
    assert_int_equal(tl_read_n(p.srv, buf, 1, 2000), 1);
    reset_close(p.srv);
    p.srv = -1;
    int was_reset = 0;
    assert_int_equal(tl_wait_eof(p.app, 5000, &was_reset), 0);
    assert_true(was_reset);
    assert_int_equal(wait_closed(&p, 5000), 0);
    assert_int_equal(p.st.error, CSQL_ERR_IO);
    fprintf(stderr, "remote error: %s\n", p.st.message);
    pair_dispose(&p);
}

/* The driver resets: the server side is closed too. */
static void test_local_error_closes_remote(void **state)
{
    csql__loop *loop = *state;
    pair_fx p;
    memset(&p, 0, sizeof(p));
    int a[2], b[2];
    assert_int_equal(tcp_pair(a), 0);
    assert_int_equal(tcp_pair(b), 0);
    p.app = a[0];
    p.srv = b[1];
    start_pair(loop, &p, a[1], (csql__fwd_remote){.fd = b[0]}, 0, true);
    char buf[16];
    assert_int_equal(tl_write_all(p.srv, "y", 1, 2000), 0);
    assert_int_equal(tl_read_n(p.app, buf, 1, 2000), 1);
    reset_close(p.app);
    p.app = -1;
    assert_int_equal(tl_wait_eof(p.srv, 5000, NULL), 0);
    assert_int_equal(wait_closed(&p, 5000), 0);
    assert_int_equal(p.st.error, CSQL_ERR_IO);
    pair_dispose(&p);
}

/* 1000 forwarded connections on one loop thread, all alive at once. */
static void test_thousand_connections_one_thread(void **state)
{
    csql__loop *loop = *state;
    enum { N = 1000 };
    pair_fx *p = calloc(N, sizeof(*p));
    for (int i = 0; i < N; i++) {
        plain_pair(loop, &p[i], 0);
    }
    assert_int_equal(csql__fwd_live_count(), N);
    assert_int_equal(csql__loop_count(), 1);
    for (int i = 0; i < N; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof(msg), "ping %04d", i);
        assert_int_equal(tl_write_all(p[i].app, msg, (size_t)n, 2000), 0);
    }
    for (int i = 0; i < N; i++) {
        char got[32], want[32];
        int n = snprintf(want, sizeof(want), "ping %04d", i);
        assert_int_equal(tl_read_n(p[i].srv, got, (size_t)n, 5000), n);
        assert_memory_equal(got, want, (size_t)n);
        assert_int_equal(tl_write_all(p[i].srv, got, (size_t)n, 2000), 0);
    }
    for (int i = 0; i < N; i++) {
        char got[32], want[32];
        int n = snprintf(want, sizeof(want), "ping %04d", i);
        assert_int_equal(tl_read_n(p[i].app, got, (size_t)n, 5000), n);
        assert_memory_equal(got, want, (size_t)n);
    }
    /* Idle connections hold no ring storage. */
    usleep(20000);
    assert_int_equal(csql__ring_allocated_bytes(), 0);
    for (int i = 0; i < N; i++) {
        close(p[i].app);
        p[i].app = -1;
        close(p[i].srv);
        p[i].srv = -1;
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(wait_closed(&p[i], 5000), 0);
        pair_dispose(&p[i]);
    }
    assert_int_equal(csql__fwd_live_count(), 0);
    free(p);
}

/* ---------------- TLS transport ---------------- */

static void tls_pair(csql__loop *loop, pair_fx *p, size_t bufsize)
{
    memset(p, 0, sizeof(*p));
    int a[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    int cfd, sfd;
    SSL *cssl, *sssl;
    assert_int_equal(tl_tls_pair(&cfd, &cssl, &sfd, &sssl), 0);
    p->app = a[0];
    p->srv = sfd;
    p->srv_ssl = sssl;
    start_pair(loop, p, a[1], (csql__fwd_remote){.fd = cfd, .ssl = cssl}, bufsize, false);
}

static int ssl_read_n(SSL *s, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        size_t r = 0;
        if (SSL_read_ex(s, (char *)buf + got, n - got, &r) != 1) {
            return SSL_get_error(s, 0) == SSL_ERROR_ZERO_RETURN ? (int)got : -1;
        }
        got += r;
    }
    return (int)got;
}

static void test_tls_half_close_and_close_notify(void **state)
{
    csql__loop *loop = *state;
    pair_fx p;
    tls_pair(loop, &p, 0);
    char buf[64];
    assert_int_equal(tl_write_all(p.app, "Q", 1, 2000), 0);
    assert_int_equal(shutdown(p.app, SHUT_WR), 0);
    /* The server sees the byte, then close_notify (a clean TLS EOF)... */
    assert_int_equal(ssl_read_n(p.srv_ssl, buf, 1), 1);
    size_t r;
    assert_int_equal(SSL_read_ex(p.srv_ssl, buf, sizeof(buf), &r), 0);
    assert_int_equal(SSL_get_error(p.srv_ssl, 0), SSL_ERROR_ZERO_RETURN);
    /* ...and can still answer. */
    size_t w;
    assert_int_equal(SSL_write_ex(p.srv_ssl, "answer", 6, &w), 1);
    assert_int_equal(tl_read_n(p.app, buf, 6, 2000), 6);
    assert_memory_equal(buf, "answer", 6);
    /* The server's close_notify becomes the driver's EOF. */
    SSL_shutdown(p.srv_ssl);
    assert_int_equal(tl_read_to_eof(p.app, buf, sizeof(buf), 2000), 0);
    assert_int_equal(wait_closed(&p, 5000), 0);
    assert_int_equal(p.st.error, 0);
    pair_dispose(&p);
}

typedef struct tls_sink {
    SSL *ssl;
    size_t n;
    uint64_t digest;
} tls_sink;

static void *tls_sink_main(void *arg)
{
    tls_sink *s = arg;
    static _Thread_local char buf[65536];
    s->digest = TL_FNV_INIT;
    for (;;) {
        size_t r = 0;
        if (SSL_read_ex(s->ssl, buf, sizeof(buf), &r) != 1) {
            break;
        }
        s->digest = tl_fnv(s->digest, buf, r);
        s->n += r;
    }
    return NULL;
}

typedef struct tls_write {
    SSL *s;
    const uint8_t *d;
    size_t total;
} tls_write;

static void *tls_writer(void *arg)
{
    tls_write *w = arg;
    size_t off = 0;
    while (off < w->total) {
        size_t n = 0;
        size_t chunk = w->total - off < 65536 ? w->total - off : 65536;
        if (SSL_write_ex(w->s, w->d + off, chunk, &n) != 1) {
            break;
        }
        off += n;
    }
    return NULL;
}

/* 16 MiB each way through TLS; digests equal on both ends. */
static void test_tls_bulk_both_ways(void **state)
{
    csql__loop *loop = *state;
    pair_fx p;
    tls_pair(loop, &p, 0);
    const size_t total = 16u << 20;
    uint8_t *data = malloc(total);
    tl_fill(data, total, 7);
    uint64_t want = tl_fnv(TL_FNV_INIT, data, total);

    /* up: driver -> server */
    tls_sink sink = {.ssl = p.srv_ssl};
    pthread_t t;
    pthread_create(&t, NULL, tls_sink_main, &sink);
    int64_t t0 = tl_now_ms();
    assert_int_equal(tl_write_all(p.app, data, total, 30000), 0);
    shutdown(p.app, SHUT_WR);
    pthread_join(t, NULL);
    int64_t up_ms = tl_now_ms() - t0;
    assert_int_equal(sink.n, total);
    assert_true(sink.digest == want);

    /* down: server -> driver, after the driver's half-close; written from a thread */
    uint8_t *got = malloc(total);
    t0 = tl_now_ms();
    tls_write wr = {p.srv_ssl, data, total};
    pthread_create(&t, NULL, tls_writer, &wr);
    assert_int_equal(tl_read_n(p.app, got, total, 30000), (ssize_t)total);
    pthread_join(t, NULL);
    int64_t down_ms = tl_now_ms() - t0;
    assert_true(tl_fnv(TL_FNV_INIT, got, total) == want);
    SSL_shutdown(p.srv_ssl);
    assert_int_equal(tl_read_to_eof(p.app, got, 16, 5000), 0);
    assert_int_equal(wait_closed(&p, 5000), 0);
    assert_int_equal(p.st.error, 0);
    assert_true(p.st.up_max_buffered <= p.st.buffer_cap);
    assert_true(p.st.down_max_buffered <= p.st.buffer_cap);
    fprintf(stderr, "tls 16 MiB: up %lld ms, down %lld ms\n", (long long)up_ms,
            (long long)down_ms);
    free(data);
    free(got);
    pair_dispose(&p);
}

/* The server rotates keys and asks us to as well: SSL_read must answer (a write inside a read). */
static void test_tls_key_update_both_ways(void **state)
{
    csql__loop *loop = *state;
    pair_fx p;
    tls_pair(loop, &p, 0);
    char buf[64];
    size_t w = 0, r = 0;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(SSL_key_update(p.srv_ssl, SSL_KEY_UPDATE_REQUESTED), 1);
        assert_int_equal(SSL_write_ex(p.srv_ssl, "after update", 12, &w), 1);
        assert_int_equal(tl_read_n(p.app, buf, 12, 2000), 12);
        assert_memory_equal(buf, "after update", 12);
        /* Our answer (the client's own KeyUpdate) arrives before the next data, under new keys. */
        assert_int_equal(tl_write_all(p.app, "ack", 3, 2000), 0);
        assert_int_equal(SSL_read_ex(p.srv_ssl, buf, 3, &r), 1);
        assert_int_equal(r, 3);
        assert_memory_equal(buf, "ack", 3);
    }
    close(p.app);
    p.app = -1;
    SSL_shutdown(p.srv_ssl);
    assert_int_equal(wait_closed(&p, 5000), 0);
    pair_dispose(&p);
}

/* Garbage on the TLS stream: a TLS error, and the driver's side is closed. */
static void test_tls_error_closes_local(void **state)
{
    csql__loop *loop = *state;
    pair_fx p;
    tls_pair(loop, &p, 0);
    char buf[16];
    size_t w;
    assert_int_equal(SSL_write_ex(p.srv_ssl, "ok", 2, &w), 1);
    assert_int_equal(tl_read_n(p.app, buf, 2, 2000), 2);
    /* Not a TLS record: the client's SSL_read fails. */
    assert_int_equal(tl_write_all(p.srv, "\x17\x03\x03\x00\x05garbage", 12, 2000), 0);
    assert_int_equal(tl_wait_eof(p.app, 5000, NULL), 0);
    assert_int_equal(wait_closed(&p, 5000), 0);
    assert_int_equal(p.st.error, CSQL_ERR_TLS_IO);
    fprintf(stderr, "tls error: %s\n", p.st.message);
    pair_dispose(&p);
}

/* A TLS pair whose client side is a csql_conn (as the endpoint forwards it), counting TLS reports. */
static void on_conn_tls_error(void *userdata)
{
    atomic_fetch_add((atomic_int *)userdata, 1);
}

static void tls_conn_pair(csql__loop *loop, pair_fx *p, atomic_int *tls_reports)
{
    memset(p, 0, sizeof(*p));
    int a[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    int cfd, sfd;
    SSL *cssl, *sssl;
    assert_int_equal(tl_tls_pair(&cfd, &cssl, &sfd, &sssl), 0);
    csql_conn *conn = NULL;
    assert_int_equal(csql__conn_new(cfd, cssl, "p:r:i", on_conn_tls_error, NULL, tls_reports, &conn),
                     0);
    p->app = a[0];
    p->srv = sfd;
    p->srv_ssl = sssl;
    start_pair(loop, p, a[1], (csql__fwd_remote){.fd = cfd, .ssl = cssl, .conn = conn}, 0, false);
}

/* A bad record from the server is a TLS failure: reported, so the cache drops its certificate. */
static void test_tls_failure_is_reported_to_the_cache(void **state)
{
    csql__loop *loop = *state;
    atomic_int reports = 0;
    pair_fx p;
    tls_conn_pair(loop, &p, &reports);
    char buf[16];
    size_t w;
    assert_int_equal(SSL_write_ex(p.srv_ssl, "ok", 2, &w), 1);
    assert_int_equal(tl_read_n(p.app, buf, 2, 2000), 2);
    assert_int_equal(tl_write_all(p.srv, "\x17\x03\x03\x00\x05garbage", 12, 2000), 0);
    assert_int_equal(tl_wait_eof(p.app, 5000, NULL), 0);
    assert_int_equal(wait_closed(&p, 5000), 0);
    assert_int_equal(p.st.error, CSQL_ERR_TLS_IO);
    assert_int_equal(atomic_load(&reports), 1);
    pair_dispose(&p);
}

/*
 * The server drops the connection (no close_notify; the next write fails
 * with EPIPE): an I/O error, not a TLS one. The certificate is fine, so the
 * cache is told nothing (tests/faults/connections.sh --strict-drops).
 */
static void test_server_drop_is_not_a_tls_failure(void **state)
{
    csql__loop *loop = *state;
    atomic_int reports = 0;
    pair_fx p;
    tls_conn_pair(loop, &p, &reports);
    char buf[16];
    size_t w;
    assert_int_equal(SSL_write_ex(p.srv_ssl, "ok", 2, &w), 1);
    assert_int_equal(tl_read_n(p.app, buf, 2, 2000), 2);
    SSL_free(p.srv_ssl);
    p.srv_ssl = NULL;
    close(p.srv);
    p.srv = -1;
    /* The driver keeps writing: the forwarder's TLS write meets the closed socket. */
    static char chunk[4096];
    for (int i = 0; i < 64 && tl_write_all(p.app, chunk, sizeof(chunk), 200) == 0; i++) {
        usleep(5000);
    }
    assert_int_equal(wait_closed(&p, 5000), 0);
    fprintf(stderr, "server drop: error %d: %s\n", p.st.error, p.st.message);
    assert_true(p.st.error == CSQL_ERR_IO || p.st.error == 0);
    assert_int_equal(atomic_load(&reports), 0);
    pair_dispose(&p);
}

/* The loop stops under live connections (dialer freed): both sides are closed. */
static void test_reap_aborts_live_connections(void **state)
{
    (void)state;
    static int key2;
    csql__loop *loop;
    assert_int_equal(csql__loop_acquire(&key2, &loop), 0);
    pair_fx p;
    plain_pair(loop, &p, 0);
    csql__loop_release(loop); /* only the pair holds the loop now */
    assert_int_equal(csql__loop_count(), 2);
    csql__loop_reap(&key2, true);
    assert_int_equal(csql__loop_count(), 1);
    assert_int_equal(wait_closed(&p, 1000), 0);
    assert_int_equal(p.st.error, CSQL_ERR_CLOSED);
    assert_int_equal(tl_wait_eof(p.app, 2000, NULL), 0);
    assert_int_equal(tl_wait_eof(p.srv, 2000, NULL), 0);
    pair_dispose(&p);
}

/* ---------------- loop timers ---------------- */

typedef struct timer_fx {
    csql__loop *loop;
    csql__loop_timer t[4];
    int64_t fired_at[4];
    int order[4];
    int64_t t3_first; /* t3 fires twice: the first time, here */
    atomic_int nfired;
} timer_fx;

static timer_fx g_tf;

static void on_timer(void *arg)
{
    int i = (int)(intptr_t)arg;
    g_tf.fired_at[i] = tl_now_ms();
    g_tf.order[atomic_fetch_add(&g_tf.nfired, 1)] = i;
    if (i == 3 && g_tf.t3_first == 0) {
        g_tf.t3_first = g_tf.fired_at[3];
        csql__loop_timer_set(g_tf.loop, &g_tf.t[3], 30); /* re-armed from its own function */
    }
}

static void arm_timers(void *arg)
{
    (void)arg;
    for (int i = 0; i < 4; i++) {
        g_tf.t[i].fn = on_timer;
        g_tf.t[i].arg = (void *)(intptr_t)i;
    }
    csql__loop_timer_set(g_tf.loop, &g_tf.t[0], 120);
    csql__loop_timer_set(g_tf.loop, &g_tf.t[1], 60);
    csql__loop_timer_set(g_tf.loop, &g_tf.t[2], 90);
    csql__loop_timer_set(g_tf.loop, &g_tf.t[2], 150); /* re-set: moves later */
    csql__loop_timer_set(g_tf.loop, &g_tf.t[3], 0);
    csql__loop_timer_cancel(g_tf.loop, &g_tf.t[0]);
}

static void noop(void *arg)
{
    (void)arg;
}

static void test_loop_timers(void **state)
{
    csql__loop *loop = *state;
    memset(&g_tf, 0, sizeof(g_tf));
    g_tf.loop = loop;
    int64_t t0 = tl_now_ms();
    assert_int_equal(csql__loop_call(loop, arm_timers, NULL), 0);
    int64_t deadline = t0 + 3000;
    while (atomic_load(&g_tf.nfired) < 4 && tl_now_ms() < deadline) {
        usleep(5000);
    }
    usleep(200000); /* the cancelled one must not fire late */
    /* A round trip through the loop orders its writes before our reads. */
    assert_int_equal(csql__loop_call(loop, noop, NULL), 0);
    assert_int_equal(atomic_load(&g_tf.nfired), 4);
    /*
     * t3 at once, and again 30 ms after that (re-armed from its own function);
     * t1 at 60 ms, t2 at 150 ms (moved later); t0 never (cancelled). On a
     * loaded machine the loop may run late, so only what timers promise is
     * checked: never early, in due order, each firing once.
     */
    assert_int_equal(g_tf.order[0], 3);
    int seen3 = 0, pos1 = -1, pos2 = -1;
    for (int k = 0; k < 4; k++) {
        seen3 += g_tf.order[k] == 3;
        pos1 = g_tf.order[k] == 1 ? k : pos1;
        pos2 = g_tf.order[k] == 2 ? k : pos2;
    }
    assert_int_equal(seen3, 2);
    assert_true(pos1 >= 0 && pos2 > pos1);
    assert_int_equal(g_tf.fired_at[0], 0);
    assert_true(g_tf.fired_at[3] - g_tf.t3_first >= 30);
    assert_true(g_tf.fired_at[1] - t0 >= 60);
    assert_true(g_tf.fired_at[2] - t0 >= 150);
}

/* A loop whose last reference went away on its own thread idles until reused or reaped. */
static void test_idle_loop_is_reused_then_reaped(void **state)
{
    (void)state;
    static int key3;
    csql__loop *loop, *again;
    assert_int_equal(csql__loop_acquire(&key3, &loop), 0);
    pair_fx p;
    plain_pair(loop, &p, 0);
    csql__loop_release(loop);
    close(p.app);
    p.app = -1;
    close(p.srv);
    p.srv = -1;
    assert_int_equal(wait_closed(&p, 5000), 0);
    usleep(10000);
    assert_int_equal(csql__loop_count(), 2); /* idle, not joined */
    assert_int_equal(csql__loop_acquire(&key3, &again), 0);
    assert_ptr_equal(again, loop); /* reused */
    csql__loop_release(again);     /* user thread: stopped and joined */
    assert_int_equal(csql__loop_count(), 1);
    pair_dispose(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_wraps_and_never_exceeds_cap),
        cmocka_unit_test_setup_teardown(test_bytes_flow_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_close_local_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_close_server_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_slow_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remote_error_resets_local, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_error_closes_remote, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thousand_connections_one_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_half_close_and_close_notify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_bulk_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_key_update_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_error_closes_local, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_failure_is_reported_to_the_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_drop_is_not_a_tls_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loop_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reap_aborts_live_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_loop_is_reused_then_reaped, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tl_tls_free_server_ctx();
    return rc;
}
