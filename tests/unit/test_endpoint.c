/*
 * csql_endpoint (src/endpoint.c) with the dial injected: Unix sockets in a
 * private 0700 directory, loopback TCP, the one-shot form, dial failures
 * reported per connection, connection limits, option checks, and a real
 * csql_conn (over an in-test TLS server) handed to csql_endpoint_open_conn.
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
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn_internal.h"
#include "csql/endpoint.h"
#include "csql/errors.h"
#include "endpoint_internal.h"
#include "error.h"
#include "fwd_testlib.h"
#include "loop.h"
#include "util/ring.h"

static int g_key;
static tl_echo *g_echo;

/* ---------------- fake dials ---------------- */

typedef struct fake_dial {
    atomic_int calls;
    int fail_code; /* 0: succeed */
} fake_dial;

static int dial_to_echo(void *ctx, csql__fwd_remote *out)
{
    fake_dial *fd = ctx;
    atomic_fetch_add(&fd->calls, 1);
    if (fd->fail_code != 0) {
        return csql__error(fd->fail_code, "instance p:r:down: connection refused by the fake");
    }
    return tl_echo_dial(g_echo, out);
}

static int open_fake(csql_endpoint **ep, bool tcp, const char *dir, fake_dial *fd,
                     const csql__fwd_remote *first, bool one_shot, const csql_endpoint_options *o)
{
    csql__endpoint_params p = {
        .loop_key = &g_key,
        .tcp = tcp,
        .dir = dir,
        .first = first,
        .one_shot = one_shot,
        .dial = fd ? dial_to_echo : NULL,
        .dial_ctx = fd,
        .opts = o,
    };
    return csql__endpoint_open(ep, &p);
}

/* ---------------- clients ---------------- */



static void expect_echo(int fd, const char *msg)
{
    size_t n = strlen(msg);
    char buf[256];
    assert_int_equal(tl_write_all(fd, msg, n, 2000), 0);
    assert_int_equal(tl_read_n(fd, buf, n, 5000), (ssize_t)n);
    assert_memory_equal(buf, msg, n);
}

static int wait_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
    int64_t deadline = tl_now_ms() + timeout_ms;
    while (!cond(arg)) {
        if (tl_now_ms() > deadline) {
            return -1;
        }
        usleep(2000);
    }
    return 0;
}

static bool path_gone(void *arg)
{
    struct stat st;
    return lstat(arg, &st) != 0 && errno == ENOENT;
}

static bool no_live_forwards(void *arg)
{
    (void)arg;
    return csql__fwd_live_count() == 0;
}

static bool no_loops(void *arg)
{
    (void)arg;
    return csql__loop_count() == 0;
}

static int setup(void **state)
{
    (void)state;
    g_echo = tl_echo_start();
    return g_echo ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    /* Every forwarded connection ended; the loop is gone or idle: reap it. */
    assert_int_equal(wait_until(no_live_forwards, NULL, 5000), 0);
    csql__loop_reap(&g_key, false);
    csql__loop_reap(NULL, false);
    assert_int_equal(wait_until(no_loops, NULL, 2000), 0);
    assert_int_equal(csql__ring_allocated_bytes(), 0);
    tl_echo_stop(g_echo);
    g_echo = NULL;
    return 0;
}

/* ---------------- tests ---------------- */

static void test_private_dir_is_0700_and_removed(void **state)
{
    (void)state;
    fake_dial fd = {0};
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, false, NULL, &fd, NULL, false, NULL), 0);
    const char *dir = csql_endpoint_dir(ep);
    const char *path = csql_endpoint_path(ep);
    struct stat st;
    assert_int_equal(lstat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(csql_endpoint_port(ep), 0);
    assert_null(csql_endpoint_address(ep));
    char saved_dir[128], saved_path[128];
    snprintf(saved_dir, sizeof(saved_dir), "%s", dir);
    snprintf(saved_path, sizeof(saved_path), "%s", path);

    int c = tl_connect_unix(path);
    assert_true(c >= 0);
    expect_echo(c, "through the unix endpoint");
    close(c);
    csql_endpoint_close(ep);
    assert_true(path_gone(saved_path));
    assert_true(path_gone(saved_dir));
    assert_int_equal(atomic_load(&fd.calls), 1);
}

static void test_fresh_private_dir_per_endpoint(void **state)
{
    (void)state;
    fake_dial fd = {0};
    csql_endpoint *a, *b;
    assert_int_equal(open_fake(&a, false, NULL, &fd, NULL, false, NULL), 0);
    assert_int_equal(open_fake(&b, false, NULL, &fd, NULL, false, NULL), 0);
    assert_string_not_equal(csql_endpoint_dir(a), csql_endpoint_dir(b));
    csql_endpoint_close(a);
    csql_endpoint_close(b);
}

static void test_many_connections_over_dials(void **state)
{
    (void)state;
    fake_dial fd = {0};
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, false, NULL, &fd, NULL, false, NULL), 0);
    int c[20];
    for (int i = 0; i < 20; i++) {
        c[i] = tl_connect_unix(csql_endpoint_path(ep));
        assert_true(c[i] >= 0);
    }
    for (int i = 0; i < 20; i++) {
        char msg[32];
        snprintf(msg, sizeof(msg), "conn %d", i);
        expect_echo(c[i], msg);
    }
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_int_equal(st.accepted, 20);
    assert_int_equal(st.active, 20);
    /* Connections outlive the endpoint: close it first, they still work. */
    csql_endpoint_close(ep);
    expect_echo(c[3], "after close");
    for (int i = 0; i < 20; i++) {
        shutdown(c[i], SHUT_WR);
        assert_int_equal(tl_wait_eof(c[i], 5000, NULL), 0);
        close(c[i]);
    }
}

static void test_one_shot_accepts_exactly_one(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    tl_echo_add(g_echo, sv[1]);
    csql__fwd_remote first = {.fd = sv[0]};
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, false, NULL, NULL, &first, true, NULL), 0);
    char path[128], dir[128];
    snprintf(path, sizeof(path), "%s", csql_endpoint_path(ep));
    snprintf(dir, sizeof(dir), "%s", csql_endpoint_dir(ep));
    int c = tl_connect_unix(path);
    assert_true(c >= 0);
    /* The socket and its directory go as soon as the one connection is accepted. */
    assert_int_equal(wait_until(path_gone, dir, 2000), 0);
    assert_int_equal(tl_connect_unix(path), -1);
    expect_echo(c, "pre-dialled");
    csql_endpoint_close(ep);
    expect_echo(c, "still forwarding after close");
    close(c);
}

static void test_first_conn_then_fresh_dials(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    tl_echo_add(g_echo, sv[1]);
    csql__fwd_remote first = {.fd = sv[0]};
    fake_dial fd = {0};
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, false, NULL, &fd, &first, false, NULL), 0);
    int c1 = tl_connect_unix(csql_endpoint_path(ep));
    expect_echo(c1, "first");
    assert_int_equal(atomic_load(&fd.calls), 0); /* served by the pre-dialled conn */
    int c2 = tl_connect_unix(csql_endpoint_path(ep)); /* e.g. libpq's cancel request */
    expect_echo(c2, "second");
    assert_int_equal(atomic_load(&fd.calls), 1);
    close(c1);
    close(c2);
    csql_endpoint_close(ep);
}

static void test_unused_first_conn_closed_with_endpoint(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    csql__fwd_remote first = {.fd = sv[0]};
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, false, NULL, NULL, &first, true, NULL), 0);
    csql_endpoint_close(ep);
    assert_int_equal(tl_wait_eof(sv[1], 2000, NULL), 0); /* the server side sees the close */
    close(sv[1]);
}

typedef struct err_seen {
    pthread_mutex_t mu;
    int n;
    int code;
    char message[256];
} err_seen;

static void on_error(const csql_error *err, void *userdata)
{
    err_seen *s = userdata;
    pthread_mutex_lock(&s->mu);
    s->n++;
    s->code = err->code;
    snprintf(s->message, sizeof(s->message), "%s", err->message);
    pthread_mutex_unlock(&s->mu);
}

static void test_dial_failure_reported_and_local_closed(void **state)
{
    (void)state;
    fake_dial fd = {.fail_code = CSQL_ERR_CONNECT};
    err_seen seen = {.mu = PTHREAD_MUTEX_INITIALIZER};
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.on_error = on_error;
    o.userdata = &seen;
    /* Unix: the driver sees EOF. */
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, false, NULL, &fd, NULL, false, &o), 0);
    int c = tl_connect_unix(csql_endpoint_path(ep));
    assert_int_equal(tl_wait_eof(c, 5000, NULL), 0);
    close(c);
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_int_equal(st.dial_failures, 1);
    csql_endpoint_close(ep);
    pthread_mutex_lock(&seen.mu);
    assert_int_equal(seen.n, 1);
    assert_int_equal(seen.code, CSQL_ERR_CONNECT);
    assert_non_null(strstr(seen.message, "connection refused by the fake"));
    pthread_mutex_unlock(&seen.mu);

    /* TCP: the driver sees a reset, so it cannot take it for a clean end. */
    assert_int_equal(open_fake(&ep, true, NULL, &fd, NULL, false, &o), 0);
    c = tl_connect_tcp(csql_endpoint_port(ep));
    assert_true(c >= 0);
    int reset = 0;
    assert_int_equal(tl_wait_eof(c, 5000, &reset), 0);
    assert_true(reset);
    close(c);
    csql_endpoint_close(ep);
}

static void test_tcp_endpoint(void **state)
{
    (void)state;
    fake_dial fd = {0};
    csql_endpoint *ep;
    csql__endpoint_params p = {.loop_key = &g_key, .tcp = true, .address = "127.0.0.1",
                               .dial = dial_to_echo, .dial_ctx = &fd};
    assert_int_equal(csql__endpoint_open(&ep, &p), 0);
    assert_true(csql_endpoint_port(ep) > 0);
    assert_string_equal(csql_endpoint_address(ep), "127.0.0.1");
    assert_null(csql_endpoint_path(ep));
    assert_null(csql_endpoint_dir(ep));
    int c = tl_connect_tcp(csql_endpoint_port(ep));
    expect_echo(c, "over loopback tcp");
    close(c);
    /* The port is taken while open. */
    csql_endpoint *dup;
    p.port = csql_endpoint_port(ep);
    assert_int_equal(csql__endpoint_open(&dup, &p), CSQL_ERR_IO);
    assert_non_null(strstr(csql_error_last()->message, "cannot listen on 127.0.0.1 port"));
    csql_endpoint_close(ep);

    p.port = 0;
    p.address = "10.1.2.3";
    assert_int_equal(csql__endpoint_open(&dup, &p), CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "\"10.1.2.3\" is not a loopback"));
    p.address = "localhost";
    assert_int_equal(csql__endpoint_open(&dup, &p), CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "not an IP literal"));
    p.address = "::1";
    assert_int_equal(csql__endpoint_open(&ep, &p), 0);
    csql_endpoint_close(ep);
}

static void test_bad_options_are_named(void **state)
{
    (void)state;
    csql_endpoint *ep = (csql_endpoint *)0x1;
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.version = 99;
    assert_int_equal(open_fake(&ep, false, NULL, NULL, NULL, true, &o), CSQL_ERR_INVALID_ARGUMENT);
    assert_null(ep);
    assert_non_null(strstr(csql_error_last()->message, "version is 99"));
    o.version = 0;
    assert_int_equal(open_fake(&ep, false, NULL, NULL, NULL, true, &o), CSQL_ERR_INVALID_ARGUMENT);
    o.version = CSQL_ENDPOINT_OPTIONS_VERSION;
    o.buffer_size = 100;
    assert_int_equal(open_fake(&ep, false, NULL, NULL, NULL, true, &o), CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "buffer_size 100"));
    o.buffer_size = 0;
    o.unix_socket_name = "../escape";
    assert_int_equal(open_fake(&ep, false, NULL, NULL, NULL, true, &o), CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "\"../escape\""));
    o.unix_socket_name = NULL;
    char longdir[200];
    memset(longdir, 'd', sizeof(longdir) - 1);
    longdir[0] = '/';
    longdir[sizeof(longdir) - 1] = '\0';
    assert_int_equal(open_fake(&ep, false, longdir, NULL, NULL, true, &o), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(open_fake(&ep, false, "/nonexistent-csql-dir", NULL, NULL, true, &o),
                     CSQL_ERR_IO);
    assert_non_null(strstr(csql_error_last()->message, "/nonexistent-csql-dir/csql.sock"));
    /* Public entry points check their own arguments. */
    assert_int_equal(csql_endpoint_open_conn(&ep, NULL, NULL, NULL), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_endpoint_open_unix(&ep, NULL, "p:r:i", NULL, NULL),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_endpoint_open_tcp(&ep, (csql_dialer *)&g_key, "not-an-instance", NULL, 0,
                                            NULL),
                     CSQL_ERR_BAD_INSTANCE_NAME);
    csql_endpoint_close(NULL);
}

static void test_user_dir_and_stale_socket(void **state)
{
    (void)state;
    char dir[] = "/tmp/csql-ep-test.XXXXXX";
    assert_non_null(mkdtemp(dir));
    /* A stale socket (its listener is gone) is replaced. */
    char path[128];
    snprintf(path, sizeof(path), "%s/app.sock", dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int stale = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(stale, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(stale);
    fake_dial fd = {0};
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.unix_socket_name = "app.sock";
    csql_endpoint *ep, *ep2;
    assert_int_equal(open_fake(&ep, false, dir, &fd, NULL, false, &o), 0);
    assert_string_equal(csql_endpoint_path(ep), path);
    /* A live one is not. */
    assert_int_equal(open_fake(&ep2, false, dir, &fd, NULL, false, &o), CSQL_ERR_IO);
    assert_non_null(strstr(csql_error_last()->message, "Address already in use"));
    int c = tl_connect_unix(path);
    expect_echo(c, "user dir");
    close(c);
    csql_endpoint_close(ep);
    assert_true(path_gone(path));
    assert_int_equal(rmdir(dir), 0); /* the user's directory stays, empty */
}

static void test_max_connections_waits_in_backlog(void **state)
{
    (void)state;
    fake_dial fd = {0};
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.max_connections = 2;
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, false, NULL, &fd, NULL, false, &o), 0);
    int c1 = tl_connect_unix(csql_endpoint_path(ep));
    int c2 = tl_connect_unix(csql_endpoint_path(ep));
    expect_echo(c1, "one");
    expect_echo(c2, "two");
    int c3 = tl_connect_unix(csql_endpoint_path(ep)); /* connects (backlog) but is not served */
    assert_true(c3 >= 0);
    assert_int_equal(tl_write_all(c3, "three", 5, 2000), 0);
    char buf[8];
    assert_int_equal(tl_read_n(c3, buf, 5, 200), -1);
    close(c1); /* a slot frees: the third is accepted and served */
    assert_int_equal(tl_read_n(c3, buf, 5, 5000), 5);
    assert_memory_equal(buf, "three", 5);
    close(c2);
    close(c3);
    csql_endpoint_close(ep);
}

/* A slow driver through an endpoint: the per-connection buffer never exceeds its cap. */
static void test_endpoint_backpressure_bounded(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    csql__fwd_remote first = {.fd = sv[0]};
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.buffer_size = 16384;
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, false, NULL, NULL, &first, true, &o), 0);
    int c = tl_connect_unix(csql_endpoint_path(ep));
    /* The server floods; the driver does not read. */
    uint8_t chunk[65536];
    tl_fill(chunk, sizeof(chunk), 3);
    size_t sent = 0;
    for (int i = 0; i < 400; i++) {
        ssize_t w = send(sv[1], chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
        } else {
            usleep(2000);
        }
    }
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_int_equal(st.buffer_cap, 16384);
    assert_true(st.max_buffered <= 16384);
    assert_true(csql__ring_allocated_bytes() <= 2 * 16384);
    assert_true(sent < 400 * sizeof(chunk)); /* the flood was held back */
    close(sv[1]);
    assert_int_equal(tl_wait_eof(c, 10000, NULL), 0);
    close(c);
    csql_endpoint_close(ep);
}

/* 1000 concurrent driver connections through one endpoint, one loop thread. */
static void test_thousand_connections_through_endpoint(void **state)
{
    (void)state;
    enum { N = 1000 };
    fake_dial fd = {0};
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, false, NULL, &fd, NULL, false, NULL), 0);
    int *c = calloc(N, sizeof(int));
    for (int i = 0; i < N; i++) {
        c[i] = tl_connect_unix(csql_endpoint_path(ep));
        assert_true(c[i] >= 0);
        char msg[32];
        int n = snprintf(msg, sizeof(msg), "m%04d", i);
        assert_int_equal(tl_write_all(c[i], msg, (size_t)n, 2000), 0);
    }
    for (int i = 0; i < N; i++) {
        char got[32], want[32];
        int n = snprintf(want, sizeof(want), "m%04d", i);
        assert_int_equal(tl_read_n(c[i], got, (size_t)n, 10000), n);
        assert_memory_equal(got, want, (size_t)n);
    }
    assert_int_equal(csql__loop_count(), 1);
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_int_equal(st.active, N);
    for (int i = 0; i < N; i++) {
        close(c[i]);
    }
    free(c);
    csql_endpoint_close(ep);
}

/* The dialer is freed (its loop reaped) before the application closes an endpoint: safe. */
static void test_endpoint_closed_after_forced_reap(void **state)
{
    (void)state;
    static int key;
    fake_dial fd = {0};
    csql__endpoint_params p = {.loop_key = &key, .dial = dial_to_echo, .dial_ctx = &fd};
    csql_endpoint *ep;
    assert_int_equal(csql__endpoint_open(&ep, &p), 0);
    int c = tl_connect_unix(csql_endpoint_path(ep));
    expect_echo(c, "before the reap");
    char path[128];
    snprintf(path, sizeof(path), "%s", csql_endpoint_path(ep));
    csql__loop_reap(&key, true); /* what csql_dialer_free does */
    assert_int_equal(tl_wait_eof(c, 2000, NULL), 0); /* the forwarded connection was closed */
    assert_true(path_gone(path));                     /* and the socket removed */
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), CSQL_ERR_CLOSED);
    csql_endpoint_close(ep); /* late, but no use after free (ASan) */
    close(c);
}

/* ---------------- events ---------------- */

typedef struct ev_log {
    pthread_mutex_t mu;
    int n;
    csql_endpoint_event_kind kind[64];
    uint64_t id[64];
    char peer[64][64];
    uint64_t up[64], down[64];
    int err[64];
    int refuse_id; /* refuse the connection with this id */
} ev_log;

static int on_event(const csql_endpoint_event *ev, void *userdata)
{
    ev_log *l = userdata;
    pthread_mutex_lock(&l->mu);
    if (l->n < 64) {
        int i = l->n++;
        l->kind[i] = ev->kind;
        l->id[i] = ev->id;
        snprintf(l->peer[i], sizeof(l->peer[i]), "%s", ev->peer);
        l->up[i] = ev->bytes_up;
        l->down[i] = ev->bytes_down;
        l->err[i] = ev->error != NULL ? ev->error->code : 0;
    }
    int refuse = ev->kind == CSQL_ENDPOINT_ACCEPTED && (int)ev->id == l->refuse_id;
    pthread_mutex_unlock(&l->mu);
    return refuse;
}

static int events_seen(ev_log *l)
{
    pthread_mutex_lock(&l->mu);
    int n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

static void test_connection_events(void **state)
{
    (void)state;
    ev_log l = {.mu = PTHREAD_MUTEX_INITIALIZER, .refuse_id = 2};
    fake_dial fd = {0};
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.on_event = on_event;
    o.userdata = &l;
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, true, NULL, &fd, NULL, false, &o), 0);
    /* #1: accepted, dialled, forwarded, closed with its byte counts. */
    int c = tl_connect_tcp(csql_endpoint_port(ep));
    expect_echo(c, "12345");
    close(c);
    int64_t deadline = tl_now_ms() + 5000;
    while (events_seen(&l) < 3 && tl_now_ms() < deadline) {
        usleep(2000);
    }
    /* #2: refused by the application: the client is closed, nothing else happens. */
    c = tl_connect_tcp(csql_endpoint_port(ep));
    assert_int_equal(tl_wait_eof(c, 5000, NULL), 0);
    close(c);
    /* #3: the dial fails: DIAL_FAILED is its last event. */
    fd.fail_code = CSQL_ERR_CONNECT;
    c = tl_connect_tcp(csql_endpoint_port(ep));
    assert_int_equal(tl_wait_eof(c, 5000, NULL), 0);
    close(c);
    csql_endpoint_close(ep);
    assert_int_equal(wait_until(no_live_forwards, NULL, 5000), 0);
    pthread_mutex_lock(&l.mu);
    assert_int_equal(l.n, 6);
    assert_int_equal(l.kind[0], CSQL_ENDPOINT_ACCEPTED);
    assert_int_equal(l.id[0], 1);
    assert_non_null(strstr(l.peer[0], "127.0.0.1:"));
    assert_int_equal(l.kind[1], CSQL_ENDPOINT_DIALLED);
    assert_int_equal(l.kind[2], CSQL_ENDPOINT_CLOSED);
    assert_int_equal(l.up[2], 5);
    assert_int_equal(l.down[2], 5);
    assert_int_equal(l.err[2], 0);
    assert_int_equal(l.kind[3], CSQL_ENDPOINT_ACCEPTED);
    assert_int_equal(l.id[3], 2);
    assert_int_equal(l.kind[4], CSQL_ENDPOINT_ACCEPTED);
    assert_int_equal(l.id[4], 3);
    assert_int_equal(l.kind[5], CSQL_ENDPOINT_DIAL_FAILED);
    assert_int_equal(l.err[5], CSQL_ERR_CONNECT);
    pthread_mutex_unlock(&l.mu);
    assert_int_equal(atomic_load(&fd.calls), 2); /* the refused one was never dialled */
}

static void test_options_version_1_has_no_events(void **state)
{
    (void)state;
    ev_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    fake_dial fd = {0};
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.version = 1; /* an application built before on_event existed */
    o.on_event = on_event;
    o.userdata = &l;
    csql_endpoint *ep;
    assert_int_equal(open_fake(&ep, false, NULL, &fd, NULL, false, &o), 0);
    int c = tl_connect_unix(csql_endpoint_path(ep));
    expect_echo(c, "v1");
    close(c);
    csql_endpoint_close(ep);
    assert_int_equal(events_seen(&l), 0);
}

/* ---------------- a listening socket from the caller ---------------- */

static void test_open_fd_tcp_and_unix(void **state)
{
    (void)state;
    fake_dial fd = {0};
    /* TCP, bound by the caller. */
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sl), 0);
    assert_int_equal(listen(l, 8), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
    csql__endpoint_params p = {.loop_key = &g_key, .adopt_fd = true, .fd = l,
                               .dial = dial_to_echo, .dial_ctx = &fd};
    csql_endpoint *ep;
    assert_int_equal(csql__endpoint_open(&ep, &p), 0);
    assert_int_equal(csql_endpoint_port(ep), ntohs(sa.sin_port));
    assert_string_equal(csql_endpoint_address(ep), "127.0.0.1");
    int c = tl_connect_tcp(csql_endpoint_port(ep));
    expect_echo(c, "adopted tcp");
    close(c);
    csql_endpoint_close(ep); /* closes l */

    /* Unix, with the caller's own path and mode: the file stays the caller's. */
    char dir[] = "/tmp/csql-ep-fd.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/proxy.sock", dir);
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    snprintf(su.sun_path, sizeof(su.sun_path), "%s", path);
    l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(l, (struct sockaddr *)&su, sizeof(su)), 0);
    assert_int_equal(listen(l, 8), 0);
    p.fd = l;
    assert_int_equal(csql__endpoint_open(&ep, &p), 0);
    assert_string_equal(csql_endpoint_path(ep), path);
    assert_string_equal(csql_endpoint_dir(ep), dir);
    c = tl_connect_unix(path);
    expect_echo(c, "adopted unix");
    close(c);
    csql_endpoint_close(ep);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0); /* not ours to remove */
    unlink(path);
    rmdir(dir);

    /* Not listening: refused, and the fd is closed all the same. */
    l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    p.fd = l;
    assert_int_equal(csql__endpoint_open(&ep, &p), CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "not listening"));
    assert_int_equal(fcntl(l, F_GETFD), -1);
    assert_int_equal(csql_endpoint_open_fd(&ep, (csql_dialer *)&g_key, "p:r:i", -1, NULL),
                     CSQL_ERR_INVALID_ARGUMENT);
}

/* ---------------- with a real csql_conn ---------------- */

/* Provided by conn.c once it exposes the report (see src/fwd.c). */

static atomic_int g_tls_errors;
static void count_tls_error(void *ud)
{
    (void)ud;
    atomic_fetch_add(&g_tls_errors, 1);
}

static void test_open_conn_with_real_conn(void **state)
{
    (void)state;
    int cfd, sfd;
    SSL *cssl, *sssl;
    assert_int_equal(tl_tls_pair(&cfd, &cssl, &sfd, &sssl), 0);
    csql_conn *conn;
    assert_int_equal(csql__conn_new(cfd, cssl, "p:r:i", count_tls_error, NULL, NULL, &conn), 0);
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_conn(&ep, conn, NULL, NULL), 0);
    int c = tl_connect_unix(csql_endpoint_path(ep));
    assert_true(c >= 0);
    assert_int_equal(tl_write_all(c, "startup", 7, 2000), 0);
    char buf[16];
    size_t r = 0;
    assert_int_equal(SSL_read_ex(sssl, buf, 7, &r), 1);
    assert_int_equal(r, 7);
    assert_int_equal(SSL_write_ex(sssl, "ready", 5, &r), 1);
    assert_int_equal(tl_read_n(c, buf, 5, 2000), 5);
    assert_memory_equal(buf, "ready", 5);
    csql_endpoint_close(ep);
    /* A TLS failure is reported to the conn's cache hook. */
    assert_int_equal(tl_write_all(sfd, "\x17\x03\x03\x00\x05garbage", 12, 2000), 0);
    assert_int_equal(tl_wait_eof(c, 5000, NULL), 0);
    close(c);
    assert_int_equal(wait_until(no_live_forwards, NULL, 5000), 0);
    assert_int_equal(atomic_load(&g_tls_errors), 1);
    SSL_free(sssl);
    close(sfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_private_dir_is_0700_and_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fresh_private_dir_per_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_connections_over_dials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_shot_accepts_exactly_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_conn_then_fresh_dials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unused_first_conn_closed_with_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dial_failure_reported_and_local_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_options_are_named, setup, teardown),
        cmocka_unit_test_setup_teardown(test_user_dir_and_stale_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_connections_waits_in_backlog, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_backpressure_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thousand_connections_through_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_closed_after_forced_reap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_options_version_1_has_no_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_fd_tcp_and_unix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_conn_with_real_conn, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tl_tls_free_server_ctx();
    return rc;
}
