/*
 * An endpoint spreading its connections over several event loops
 * (csql_config_set_event_loops; src/endpoint_conn.c hand-over): each
 * connection goes to the least loaded loop and lives there from dial to
 * close, accepting stays on the endpoint's own loop, max_connections holds
 * across loops (a slot freed on another loop resumes accepting), a forced
 * reap closes what every loop holds, and bytes are intact with connections
 * busy on all loops at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "csql/endpoint.h"
#include "csql/errors.h"
#include "endpoint_internal.h"
#include "error.h"
#include "fwd_testlib.h"
#include "loop.h"
#include "util/ring.h"

#define MAX_EVENTS 256

static int g_key;
static tl_echo *g_echo;

static int dial_to_echo(void *ctx, csql__fwd_remote *out)
{
    (void)ctx;
    return tl_echo_dial(g_echo, out);
}

/* Every event with the thread it ran on. */
typedef struct thread_log {
    pthread_mutex_t mu;
    int n;
    csql_endpoint_event_kind kind[MAX_EVENTS];
    uint64_t id[MAX_EVENTS];
    pthread_t thread[MAX_EVENTS];
    int err[MAX_EVENTS];
} thread_log;

static int on_event(const csql_endpoint_event *ev, void *userdata)
{
    thread_log *l = userdata;
    pthread_mutex_lock(&l->mu);
    if (l->n < MAX_EVENTS) {
        int i = l->n++;
        l->kind[i] = ev->kind;
        l->id[i] = ev->id;
        l->thread[i] = pthread_self();
        l->err[i] = ev->error != NULL ? ev->error->code : 0;
    }
    pthread_mutex_unlock(&l->mu);
    return 0;
}

static int count_kind(thread_log *l, csql_endpoint_event_kind kind)
{
    pthread_mutex_lock(&l->mu);
    int n = 0;
    for (int i = 0; i < l->n; i++) {
        n += l->kind[i] == kind;
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

static int wait_kind(thread_log *l, csql_endpoint_event_kind kind, int want, int timeout_ms)
{
    int64_t deadline = tl_now_ms() + timeout_ms;
    while (count_kind(l, kind) < want) {
        if (tl_now_ms() > deadline) {
            return -1;
        }
        usleep(2000);
    }
    return 0;
}

/* The thread an event of `kind` for connection `id` ran on (log locked by the caller). */
static pthread_t thread_of(const thread_log *l, csql_endpoint_event_kind kind, uint64_t id)
{
    for (int i = 0; i < l->n; i++) {
        if (l->kind[i] == kind && l->id[i] == id) {
            return l->thread[i];
        }
    }
    fail_msg("no event %d for connection %llu", (int)kind, (unsigned long long)id);
    return pthread_self();
}

static int open_loops(csql_endpoint **ep, const void *key, unsigned loops, thread_log *l,
                      uint32_t max_connections)
{
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.on_event = on_event;
    o.userdata = l;
    o.max_connections = max_connections;
    csql__endpoint_params p = {
        .loop_key = key,
        .loops = loops,
        .dial = dial_to_echo,
        .opts = &o,
    };
    return csql__endpoint_open(ep, &p);
}

static void expect_echo(int fd, const char *msg)
{
    size_t n = strlen(msg);
    char buf[64];
    assert_int_equal(tl_write_all(fd, msg, n, 2000), 0);
    assert_int_equal(tl_read_n(fd, buf, n, 5000), (ssize_t)n);
    assert_memory_equal(buf, msg, n);
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
    int64_t deadline = tl_now_ms() + 5000;
    while (csql__fwd_live_count() != 0 && tl_now_ms() < deadline) {
        usleep(2000);
    }
    assert_int_equal(csql__fwd_live_count(), 0);
    csql__loop_reap(&g_key, false);
    deadline = tl_now_ms() + 2000;
    while (csql__loop_count() != 0 && tl_now_ms() < deadline) {
        usleep(2000);
    }
    assert_int_equal(csql__loop_count(), 0);
    assert_int_equal(csql__ring_allocated_bytes(), 0);
    tl_echo_stop(g_echo);
    g_echo = NULL;
    return 0;
}

/*
 * Eight connections opened one after the other over two loops: they
 * alternate (least loaded first, ties to the endpoint's own loop), every one
 * is accepted on the endpoint's loop, and dialled, forwarded and closed on
 * one loop.
 */
static void test_connections_spread_over_loops(void **state)
{
    (void)state;
    thread_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    csql_endpoint *ep;
    assert_int_equal(open_loops(&ep, &g_key, 2, &l, 0), 0);
    assert_int_equal(csql__loop_count(), 2);
    int c[8];
    for (int i = 0; i < 8; i++) {
        c[i] = tl_connect_unix(csql_endpoint_path(ep));
        assert_true(c[i] >= 0);
        char msg[16];
        snprintf(msg, sizeof(msg), "conn %d", i);
        expect_echo(c[i], msg);
    }
    for (int i = 0; i < 8; i++) {
        close(c[i]);
    }
    assert_int_equal(wait_kind(&l, CSQL_ENDPOINT_CLOSED, 8, 5000), 0);

    pthread_mutex_lock(&l.mu);
    pthread_t home = thread_of(&l, CSQL_ENDPOINT_ACCEPTED, 1);
    pthread_t other = thread_of(&l, CSQL_ENDPOINT_DIALLED, 2);
    assert_false(pthread_equal(home, other));
    assert_false(pthread_equal(home, pthread_self()));
    int on_home = 0, on_other = 0;
    for (uint64_t id = 1; id <= 8; id++) {
        assert_true(pthread_equal(thread_of(&l, CSQL_ENDPOINT_ACCEPTED, id), home));
        pthread_t t = thread_of(&l, CSQL_ENDPOINT_DIALLED, id);
        assert_true(pthread_equal(thread_of(&l, CSQL_ENDPOINT_CLOSED, id), t));
        if (pthread_equal(t, home)) {
            on_home++;
        } else {
            assert_true(pthread_equal(t, other));
            on_other++;
        }
    }
    pthread_mutex_unlock(&l.mu);
    assert_int_equal(on_home, 4);
    assert_int_equal(on_other, 4);

    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_int_equal(st.accepted, 8);
    assert_int_equal(st.closed_clean, 8);
    assert_int_equal(st.closed_error, 0);
    assert_int_equal(st.active, 0);
    assert_true(st.max_buffered > 0);
    csql_endpoint_close(ep);
}

/*
 * max_connections across loops: with the cap reached, the next client waits
 * in the backlog; when the connection on the *other* loop ends, the
 * endpoint's loop is told and serves the waiting one.
 */
static void test_max_connections_resumes_from_another_loop(void **state)
{
    (void)state;
    thread_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    csql_endpoint *ep;
    assert_int_equal(open_loops(&ep, &g_key, 2, &l, 2), 0);
    int c1 = tl_connect_unix(csql_endpoint_path(ep));
    expect_echo(c1, "one");
    int c2 = tl_connect_unix(csql_endpoint_path(ep));
    expect_echo(c2, "two");
    pthread_mutex_lock(&l.mu);
    assert_false(pthread_equal(thread_of(&l, CSQL_ENDPOINT_DIALLED, 1),
                               thread_of(&l, CSQL_ENDPOINT_DIALLED, 2)));
    pthread_mutex_unlock(&l.mu);

    int c3 = tl_connect_unix(csql_endpoint_path(ep)); /* in the backlog, not served */
    assert_true(c3 >= 0);
    assert_int_equal(tl_write_all(c3, "three", 5, 2000), 0);
    char buf[8];
    assert_int_equal(tl_read_n(c3, buf, 5, 300), -1);
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_false(st.listening); /* paused at the cap */

    close(c2); /* forwarded on the other loop */
    assert_int_equal(tl_read_n(c3, buf, 5, 5000), 5);
    assert_memory_equal(buf, "three", 5);
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_int_equal(st.accepted, 3);
    close(c1);
    close(c3);
    assert_int_equal(wait_kind(&l, CSQL_ENDPOINT_CLOSED, 3, 5000), 0);
    csql_endpoint_close(ep);
}

/*
 * What csql_dialer_free does: a forced reap of the key stops all its loops;
 * the connections on each are closed (clients see EOF) with a CLOSED event,
 * and the endpoint closed afterwards is no use after free (ASan).
 */
static void test_forced_reap_closes_every_loop(void **state)
{
    (void)state;
    static int key;
    thread_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    csql_endpoint *ep;
    assert_int_equal(open_loops(&ep, &key, 3, &l, 0), 0);
    assert_int_equal(csql__loop_count(), 3);
    int c[6];
    for (int i = 0; i < 6; i++) {
        c[i] = tl_connect_unix(csql_endpoint_path(ep));
        expect_echo(c[i], "before");
    }
    pthread_mutex_lock(&l.mu);
    int threads = 0;
    pthread_t seen[3];
    for (uint64_t id = 1; id <= 6; id++) {
        pthread_t t = thread_of(&l, CSQL_ENDPOINT_DIALLED, id);
        bool known = false;
        for (int k = 0; k < threads; k++) {
            known = known || pthread_equal(seen[k], t);
        }
        if (!known) {
            assert_true(threads < 3);
            seen[threads++] = t;
        }
    }
    pthread_mutex_unlock(&l.mu);
    assert_int_equal(threads, 3);

    csql__loop_reap(&key, true);
    assert_int_equal(csql__loop_count(), 0);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(tl_wait_eof(c[i], 2000, NULL), 0);
        close(c[i]);
    }
    assert_int_equal(count_kind(&l, CSQL_ENDPOINT_CLOSED), 6);
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), CSQL_ERR_CLOSED);
    csql_endpoint_close(ep);
}

/* Four clients stream 1 MiB each at once over two loops: every byte comes back, in order. */
typedef struct streamer {
    const char *path;
    uint64_t seed;
    int ok;
} streamer;

#define STREAM_BYTES (1u << 20)

static void *stream_main(void *arg)
{
    streamer *s = arg;
    int fd = tl_connect_unix(s->path);
    uint8_t *out = malloc(STREAM_BYTES);
    uint8_t *in = malloc(STREAM_BYTES);
    if (fd < 0 || out == NULL || in == NULL) {
        goto done;
    }
    tl_fill(out, STREAM_BYTES, s->seed);
    /* The echo answers as we send: write in pieces, reading back each before the next. */
    size_t chunk = 64 * 1024;
    for (size_t off = 0; off < STREAM_BYTES; off += chunk) {
        if (tl_write_all(fd, out + off, chunk, 5000) != 0 ||
            tl_read_n(fd, in + off, chunk, 5000) != (ssize_t)chunk) {
            goto done;
        }
    }
    shutdown(fd, SHUT_WR); /* half-close: the echo ends its side after ours */
    char extra;
    s->ok = tl_read_n(fd, &extra, 1, 5000) == 0 &&
            tl_fnv(TL_FNV_INIT, in, STREAM_BYTES) == tl_fnv(TL_FNV_INIT, out, STREAM_BYTES);
done:
    if (fd >= 0) {
        close(fd);
    }
    free(out);
    free(in);
    return NULL;
}

static void test_bytes_intact_with_every_loop_busy(void **state)
{
    (void)state;
    thread_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    csql_endpoint *ep;
    assert_int_equal(open_loops(&ep, &g_key, 2, &l, 0), 0);
    pthread_t t[4];
    streamer s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = (streamer){.path = csql_endpoint_path(ep), .seed = 1000 + (uint64_t)i};
        assert_int_equal(pthread_create(&t[i], NULL, stream_main, &s[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(s[i].ok);
    }
    assert_int_equal(wait_kind(&l, CSQL_ENDPOINT_CLOSED, 4, 5000), 0);
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_int_equal(st.closed_clean, 4);
    assert_int_equal(st.dial_failures, 0);
    csql_endpoint_close(ep);
}

/*
 * max_connections 1 over two loops, two clients taking turns as fast as they
 * can: connections end on either loop while the endpoint's loop pauses and
 * resumes accepting. Every client is served (a slot freed on the other loop
 * between the capacity check and the pause must not leave accepting paused).
 */
typedef struct cycler {
    const char *path;
    int rounds;
    int served;
} cycler;

static void *cycle_main(void *arg)
{
    cycler *c = arg;
    for (int i = 0; i < c->rounds; i++) {
        int fd = tl_connect_unix(c->path);
        char b = 0;
        if (fd < 0 || tl_write_all(fd, "z", 1, 5000) != 0 || tl_read_n(fd, &b, 1, 5000) != 1 ||
            b != 'z') {
            if (fd >= 0) {
                close(fd);
            }
            return NULL;
        }
        close(fd);
        c->served++;
    }
    return NULL;
}

static void test_capacity_one_over_two_loops_never_stalls(void **state)
{
    (void)state;
    thread_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    csql_endpoint *ep;
    assert_int_equal(open_loops(&ep, &g_key, 2, &l, 1), 0);
    pthread_t t[2];
    cycler c[2];
    for (int i = 0; i < 2; i++) {
        c[i] = (cycler){.path = csql_endpoint_path(ep), .rounds = 150};
        assert_int_equal(pthread_create(&t[i], NULL, cycle_main, &c[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(c[i].served, 150);
    }
    csql__endpoint_stats st;
    assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
    assert_int_equal(st.accepted, 300);
    csql_endpoint_close(ep);
}

/* Out of range loop counts are clamped by the engine; 0 means one. */
static void test_zero_loops_means_one(void **state)
{
    (void)state;
    thread_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    csql_endpoint *ep;
    assert_int_equal(open_loops(&ep, &g_key, 0, &l, 0), 0);
    assert_int_equal(csql__loop_count(), 1);
    int c = tl_connect_unix(csql_endpoint_path(ep));
    expect_echo(c, "x");
    close(c);
    assert_int_equal(wait_kind(&l, CSQL_ENDPOINT_CLOSED, 1, 5000), 0);
    csql_endpoint_close(ep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connections_spread_over_loops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_connections_resumes_from_another_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_forced_reap_closes_every_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_intact_with_every_loop_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity_one_over_two_loops_never_stalls, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_zero_loops_means_one, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
