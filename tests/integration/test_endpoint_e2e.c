/*
 * csql_endpoint through the whole chain: raw clients on the endpoint's Unix
 * socket, csql's TLS dial, csql-emulator's server-side proxy, and an echo
 * backend. Half-close in both directions end to end, 64 MiB each way at once
 * with equal digests, a reader that stops reading (bounded memory), and a
 * backend that resets; and a dialer with two event loops spreading
 * concurrent connections over both, real TLS dials included.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "csql/endpoint.h"
#include "driver_common.h"
#include "endpoint_internal.h"
#include "fwd.h"
#include "fwd_testlib.h"
#include "util/ring.h"

static drv_env g_env;
static tl_echo *g_echo;
static int g_lfd;
static uint16_t g_port;
static pthread_t g_acceptor;
static atomic_int g_mode; /* 0: echo; 1: reset at once */

static void *acceptor_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(g_lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            return NULL;
        }
        if (atomic_load(&g_mode) == 1) {
            char b[16];
            ssize_t n = read(fd, b, sizeof(b)); /* wait for the first bytes, then reset */
            (void)n;
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            close(fd);
            continue;
        }
        tl_echo_add(g_echo, fd);
    }
}

static int group_setup(void **state)
{
    (void)state;
    g_echo = tl_echo_start();
    g_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (bind(g_lfd, (struct sockaddr *)&sa, sl) != 0 || listen(g_lfd, 64) != 0 ||
        getsockname(g_lfd, (struct sockaddr *)&sa, &sl) != 0) {
        return -1;
    }
    g_port = ntohs(sa.sin_port);
    pthread_create(&g_acceptor, NULL, acceptor_main, NULL);
    char spec[256];
    snprintf(spec, sizeof(spec), "p:r:echo?version=POSTGRES_15&public-ip=%%IP0%%&backend=127.0.0.1:%u",
             g_port);
    const char *specs[] = {spec, NULL};
    return drv_start(&g_env, specs, NULL);
}

static int group_teardown(void **state)
{
    (void)state;
    drv_stop(&g_env);
    shutdown(g_lfd, SHUT_RDWR);
    pthread_join(g_acceptor, NULL);
    close(g_lfd);
    tl_echo_stop(g_echo);
    tl_tls_free_server_ctx();
    return 0;
}

static int wait_forwards_gone(int timeout_ms)
{
    int64_t deadline = drv_now_ms() + timeout_ms;
    while (csql__fwd_live_count() != 0) {
        if (drv_now_ms() > deadline) {
            return -1;
        }
        usleep(2000);
    }
    return 0;
}

/* The driver half-closes; the echo backend answers, sees EOF, half-closes: the driver reads all, then EOF. */
static void test_half_close_end_to_end(void **state)
{
    (void)state;
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_unix(&ep, g_env.d, "p:r:echo", NULL, NULL), 0);
    int c = tl_connect_unix(csql_endpoint_path(ep));
    assert_true(c >= 0);
    assert_int_equal(tl_write_all(c, "last words", 10, 5000), 0);
    assert_int_equal(shutdown(c, SHUT_WR), 0);
    char buf[64];
    /* The echo of everything sent, then EOF: both half-closes crossed the whole chain. */
    assert_int_equal(tl_read_to_eof(c, buf, sizeof(buf), 10000), 10);
    assert_memory_equal(buf, "last words", 10);
    close(c);
    assert_int_equal(wait_forwards_gone(5000), 0);
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_int_equal(st.closed_clean, 1);
    csql_endpoint_close(ep);
}

typedef struct writer {
    int fd;
    const uint8_t *data;
    size_t n;
    int rc;
} writer;

static void *writer_main(void *arg)
{
    writer *w = arg;
    w->rc = tl_write_all(w->fd, w->data, w->n, 60000);
    shutdown(w->fd, SHUT_WR);
    return NULL;
}

/* 64 MiB up and back down at the same time; digests equal. */
static void test_bulk_both_ways_end_to_end(void **state)
{
    (void)state;
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_unix(&ep, g_env.d, "p:r:echo", NULL, NULL), 0);
    const size_t total = 64u << 20;
    uint8_t *data = malloc(total), *got = malloc(total);
    tl_fill(data, total, 99);
    int c = tl_connect_unix(csql_endpoint_path(ep));
    writer w = {c, data, total, -1};
    pthread_t t;
    int64_t t0 = drv_now_ms();
    pthread_create(&t, NULL, writer_main, &w);
    ssize_t n = tl_read_to_eof(c, got, total, 60000);
    pthread_join(t, NULL);
    int64_t ms = drv_now_ms() - t0;
    assert_int_equal(w.rc, 0);
    assert_int_equal(n, (ssize_t)total);
    assert_true(tl_fnv(TL_FNV_INIT, got, total) == tl_fnv(TL_FNV_INIT, data, total));
    fprintf(stderr, "endpoint + emulator + echo: 64 MiB each way at once in %lld ms (%.1f MiB/s "
                    "per direction)\n",
            (long long)ms, ms ? 64.0 * 1000.0 / (double)ms : 0.0);
    close(c);
    free(data);
    free(got);
    assert_int_equal(wait_forwards_gone(5000), 0);
    csql_endpoint_close(ep);
}

/* The driver stops reading while the backend echoes 32 MiB: csql holds at most its cap. */
static void test_slow_reader_bounded_end_to_end(void **state)
{
    (void)state;
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.buffer_size = 16384;
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_unix(&ep, g_env.d, "p:r:echo", NULL, &o), 0);
    int c = tl_connect_unix(csql_endpoint_path(ep));
    const size_t total = 32u << 20;
    uint8_t *data = malloc(total);
    tl_fill(data, total, 5);
    /* Send without reading until the whole chain pushes back. */
    size_t sent = 0;
    int64_t stalled = -1;
    while (sent < total) {
        ssize_t w = send(c, data + sent, total - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
            stalled = -1;
            continue;
        }
        if (stalled < 0) {
            stalled = drv_now_ms();
        } else if (drv_now_ms() - stalled > 500) {
            break;
        }
        usleep(2000);
    }
    assert_true(sent < total); /* backpressure reached the sender */
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_true(st.max_buffered <= 16384);
    assert_true(csql__ring_allocated_bytes() <= 2 * 16384);
    fprintf(stderr, "slow reader: sender held back after %zu KiB in flight across the chain; "
                    "csql buffered at most %zu bytes\n",
            sent >> 10, st.max_buffered);
    /* Now read everything back, in order, while the rest is sent. */
    writer w = {c, data + sent, total - sent, -1};
    pthread_t t;
    pthread_create(&t, NULL, writer_main, &w);
    uint8_t *got = malloc(total);
    assert_int_equal(tl_read_to_eof(c, got, total, 60000), (ssize_t)total);
    pthread_join(t, NULL);
    assert_true(memcmp(got, data, total) == 0);
    close(c);
    free(data);
    free(got);
    assert_int_equal(wait_forwards_gone(5000), 0);
    csql_endpoint_close(ep);
}

/* The backend resets: the forwarded connection ends, the driver sees it, the endpoint serves on. */
static void test_backend_reset_end_to_end(void **state)
{
    (void)state;
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_unix(&ep, g_env.d, "p:r:echo", NULL, NULL), 0);
    atomic_store(&g_mode, 1);
    int c = tl_connect_unix(csql_endpoint_path(ep));
    assert_int_equal(tl_write_all(c, "hello?", 6, 5000), 0);
    assert_int_equal(tl_wait_eof(c, 10000, NULL), 0);
    close(c);
    atomic_store(&g_mode, 0);
    assert_int_equal(wait_forwards_gone(5000), 0);
    c = tl_connect_unix(csql_endpoint_path(ep));
    char buf[8];
    assert_int_equal(tl_write_all(c, "again", 5, 5000), 0);
    assert_int_equal(tl_read_n(c, buf, 5, 10000), 5);
    close(c);
    csql_endpoint_close(ep);
}

/* Which threads dialled (DIALLED events), for the two-loop dialer. */
typedef struct dial_threads {
    pthread_mutex_t mu;
    int n;
    pthread_t t[16];
    int closed;
} dial_threads;

static int on_dial_event(const csql_endpoint_event *ev, void *userdata)
{
    dial_threads *dt = userdata;
    pthread_mutex_lock(&dt->mu);
    if (ev->kind == CSQL_ENDPOINT_DIALLED && dt->n < 16) {
        dt->t[dt->n++] = pthread_self();
    } else if (ev->kind == CSQL_ENDPOINT_CLOSED && ev->error == NULL) {
        dt->closed++;
    }
    pthread_mutex_unlock(&dt->mu);
    return 0;
}

typedef struct round_trip {
    const char *path;
    uint64_t seed;
    int ok;
} round_trip;

/* 8 MiB up and back with the writer on its own thread; digests equal; then EOF. */
static void *round_trip_main(void *arg)
{
    round_trip *r = arg;
    const size_t total = 8u << 20;
    uint8_t *data = malloc(total), *got = malloc(total);
    int c = tl_connect_unix(r->path);
    if (data != NULL && got != NULL && c >= 0) {
        tl_fill(data, total, r->seed);
        writer w = {c, data, total, -1};
        pthread_t t;
        pthread_create(&t, NULL, writer_main, &w);
        ssize_t n = tl_read_to_eof(c, got, total, 60000);
        pthread_join(t, NULL);
        r->ok = w.rc == 0 && n == (ssize_t)total &&
                tl_fnv(TL_FNV_INIT, got, total) == tl_fnv(TL_FNV_INIT, data, total);
    }
    if (c >= 0) {
        close(c);
    }
    free(data);
    free(got);
    return NULL;
}

static void test_two_event_loops_end_to_end(void **state)
{
    (void)state;
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, g_env.em.url), 0);
    assert_int_equal(csql_config_set_token(cfg, DRV_TOKEN), 0);
    assert_int_equal(csql_config_set_event_loops(cfg, 2), 0);
    csql_dialer *d = NULL;
    assert_int_equal(csql_dialer_new(&d, cfg), 0);
    csql_config_free(cfg);

    dial_threads dt = {.mu = PTHREAD_MUTEX_INITIALIZER};
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.on_event = on_dial_event;
    o.userdata = &dt;
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_unix(&ep, d, "p:r:echo", NULL, &o), 0);
    pthread_t th[4];
    round_trip rt[4];
    for (int i = 0; i < 4; i++) {
        rt[i] = (round_trip){.path = csql_endpoint_path(ep), .seed = 7 + (uint64_t)i};
        pthread_create(&th[i], NULL, round_trip_main, &rt[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(rt[i].ok);
    }
    assert_int_equal(wait_forwards_gone(5000), 0);
    pthread_mutex_lock(&dt.mu);
    assert_int_equal(dt.n, 4);
    assert_int_equal(dt.closed, 4);
    int distinct = 0;
    pthread_t uniq[16];
    for (int i = 0; i < dt.n; i++) {
        int k = 0;
        while (k < distinct && !pthread_equal(uniq[k], dt.t[i])) {
            k++;
        }
        if (k == distinct) {
            uniq[distinct++] = dt.t[i];
        }
    }
    pthread_mutex_unlock(&dt.mu);
    assert_int_equal(distinct, 2); /* both loops dialled and forwarded */
    csql_endpoint_close(ep);
    csql_dialer_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_close_end_to_end),
        cmocka_unit_test(test_bulk_both_ways_end_to_end),
        cmocka_unit_test(test_slow_reader_bounded_end_to_end),
        cmocka_unit_test(test_backend_reset_end_to_end),
        cmocka_unit_test(test_two_event_loops_end_to_end),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
