/*
 * The header-only adapters (csql/adapters/libuv.h, csql/adapters/libevent.h)
 * against csql-emulator: many dials on one loop with a 1 ms timer ticking
 * alongside (its largest gap is printed), cancellation while waiting for a
 * certificate, a deadline reported through the callback, and start errors
 * that never call back. Built with the loops that are installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "csql/csql.h"
#include "support.h"

#ifdef CSQLT_HAVE_LIBUV
#include "csql/adapters/libuv.h"
#endif
#ifdef CSQLT_HAVE_LIBEVENT
#include "csql/adapters/libevent.h"
#endif

#define TOKEN "adapter-test-token"
#define I_A "p:r:a"
#define I_SLOW "p:r:slow"
#define N_DIALS 200
/*
 * The adapters' budget bounds the loop CPU between two ticks (without it, a
 * burst of 200 handshakes is 100+ ms in one go). Sanitizers cost ~5x.
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MAX_BUSY_US 50000
#else
#define MAX_BUSY_US 10000
#endif

static csqlt_emulator g_em;
static uint16_t g_port;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return 0;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static int group_setup(void **state)
{
    (void)state;
    char ip[2][32], port[16];
    csqlt_unique_ip(40, ip[0], sizeof(ip[0]));
    csqlt_unique_ip(41, ip[1], sizeof(ip[1]));
    g_port = free_port();
    snprintf(port, sizeof(port), "%u", (unsigned)g_port);
    static char spec[2][256];
    snprintf(spec[0], sizeof(spec[0]),
             I_A "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", ip[0]);
    snprintf(spec[1], sizeof(spec[1]),
             I_SLOW "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", ip[1]);
    const char *argv[] = {"--instance", spec[0], "--instance", spec[1], "--static-token",
                          TOKEN, "--server-port", port, NULL};
    return csqlt_emulator_start(&g_em, 0, argv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return csqlt_emulator_stop(&g_em) == 0 ? 0 : -1;
}

static int test_setup(void **state)
{
    (void)state;
    csqlt_emulator_admin(&g_em, "DELETE", "/emulator/faults", NULL);
    return 0;
}

static csql_dialer *mkdialer(void)
{
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    assert_int_equal(csql_config_set_token(cfg, TOKEN), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, g_em.url), 0);
    assert_int_equal(csql_config_set_server_port(cfg, g_port), 0);
    csql_dialer *d = NULL;
    assert_int_equal(csql_dialer_new(&d, cfg), 0);
    csql_config_free(cfg);
    return d;
}

/* What the callbacks saw. */
typedef struct tally {
    int ok;
    int failed;
    int calls;
    int last_status;
    char last_msg[256];
    int64_t max_gap_us;
    int64_t max_gap_cpu_us;  /* the loop thread's CPU time during that gap */
    int64_t max_busy_us;     /* the most CPU the loop thread used between two ticks */
    int64_t last_tick_us;
    int64_t last_tick_cpu_us;
} tally;

static int64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void tally_result(tally *t, int status, csql_conn *conn)
{
    t->calls++;
    t->last_status = status;
    if (status == 0) {
        t->ok++;
        csql_conn_close(conn);
    } else {
        t->failed++;
        snprintf(t->last_msg, sizeof(t->last_msg), "%s", csql_error_last()->message);
    }
}

static void tally_tick(tally *t)
{
    int64_t now = now_us();
    int64_t cpu = cpu_us();
    if (t->last_tick_us != 0 && now - t->last_tick_us > t->max_gap_us) {
        t->max_gap_us = now - t->last_tick_us;
        t->max_gap_cpu_us = cpu - t->last_tick_cpu_us;
    }
    if (t->last_tick_us != 0 && cpu - t->last_tick_cpu_us > t->max_busy_us) {
        t->max_busy_us = cpu - t->last_tick_cpu_us;
    }
    t->last_tick_us = now;
    t->last_tick_cpu_us = cpu;
}

/* ---------------- libuv ---------------- */

#ifdef CSQLT_HAVE_LIBUV

typedef struct uv_fixture {
    uv_loop_t loop;
    uv_timer_t tick;
    tally t;
    int expected;
} uv_fixture;

static void uv_done(csql_uv_dial *req, int status, csql_conn *conn, void *ud)
{
    (void)req;
    uv_fixture *f = ud;
    tally_result(&f->t, status, conn);
    if (f->t.calls == f->expected) {
        uv_timer_stop(&f->tick);
    }
}

static void uv_on_tick(uv_timer_t *t)
{
    tally_tick(&((uv_fixture *)t->data)->t);
}

static void uv_fixture_init(uv_fixture *f, int expected)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->tick);
    f->tick.data = f;
    f->expected = expected;
    uv_timer_start(&f->tick, uv_on_tick, 1, 1);
}

static void uv_fixture_dispose(uv_fixture *f)
{
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* every handle closes, requests free themselves */
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void test_libuv_many_dials(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer();
    uv_fixture f;
    uv_fixture_init(&f, N_DIALS);
    int64_t t0 = now_us();
    for (int i = 0; i < N_DIALS; i++) {
        csql_uv_dial *req;
        assert_int_equal(csql_uv_dial_start(&f.loop, d, I_A, NULL, uv_done, &f, &req), 0);
    }
    assert_int_equal(f.t.calls, 0); /* never from inside start */
    uv_run(&f.loop, UV_RUN_DEFAULT);
    int64_t took = (now_us() - t0) / 1000;
    print_message("async-figure: libuv adapter: %d dials in %lld ms, %d ok; 1 ms timer's "
                  "largest gap %lld us (loop thread CPU in it: %lld us); most loop CPU between two "
                  "ticks %lld us\n",
                  N_DIALS, (long long)took, f.t.ok, (long long)f.t.max_gap_us,
                  (long long)f.t.max_gap_cpu_us, (long long)f.t.max_busy_us);
    if (f.t.failed) {
        print_message("last failure: %s\n", f.t.last_msg);
    }
    assert_int_equal(f.t.ok, N_DIALS);
    assert_true(f.t.max_busy_us < MAX_BUSY_US);
    uv_fixture_dispose(&f);
    csql_dialer_free(d);
}

static void uv_cancel_all(uv_timer_t *t)
{
    csql_uv_dial **reqs = t->data;
    for (int i = 0; i < 20; i++) {
        csql_uv_dial_cancel(reqs[i]);
    }
    uv_close((uv_handle_t *)t, NULL);
}

static void test_libuv_cancel_and_deadline(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer();
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST", "/emulator/faults",
                                          "{\"endpoint\":\"*\",\"latency_ms\":700}"),
                     200);
    uv_fixture f;
    uv_fixture_init(&f, 1);
    /* 20 dials cancelled while their certificate is on its way. */
    csql_uv_dial *reqs[20];
    for (int i = 0; i < 20; i++) {
        assert_int_equal(csql_uv_dial_start(&f.loop, d, I_SLOW, NULL, uv_done, &f, &reqs[i]), 0);
    }
    uv_timer_t cancel;
    uv_timer_init(&f.loop, &cancel);
    cancel.data = reqs;
    uv_timer_start(&cancel, uv_cancel_all, 100, 0);
    /* One with a 200 ms deadline: the callback says CSQL_ERR_TIMEOUT. */
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.timeout_ms = 200;
    csql_uv_dial *late;
    int64_t t0 = now_us();
    assert_int_equal(csql_uv_dial_start(&f.loop, d, I_SLOW, &o, uv_done, &f, &late), 0);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    int64_t took = (now_us() - t0) / 1000;
    assert_int_equal(f.t.calls, 1); /* only the timed-out one: cancelled ones never call back */
    assert_int_equal(f.t.last_status, CSQL_ERR_TIMEOUT);
    assert_non_null(strstr(f.t.last_msg, I_SLOW));
    assert_true(took >= 190 && took < 2000);
    /* Start errors: no request, no callback. */
    csql_uv_dial *bad = (csql_uv_dial *)1;
    assert_int_equal(csql_uv_dial_start(&f.loop, d, "bad name", NULL, uv_done, &f, &bad),
                     CSQL_ERR_BAD_INSTANCE_NAME);
    assert_null(bad);
    assert_int_equal(csql_uv_dial_start(&f.loop, d, I_A, NULL, NULL, &f, &bad),
                     CSQL_ERR_INVALID_ARGUMENT);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    assert_int_equal(f.t.calls, 1);
    uv_fixture_dispose(&f);
    csql_dialer_free(d);
}

#endif

/* ---------------- libevent ---------------- */

#ifdef CSQLT_HAVE_LIBEVENT

typedef struct ev_fixture {
    struct event_base *base;
    struct event *tick;
    tally t;
    int expected;
} ev_fixture;

static void ev_done(csql_event_dial *req, int status, csql_conn *conn, void *ud)
{
    (void)req;
    ev_fixture *f = ud;
    tally_result(&f->t, status, conn);
    if (f->t.calls == f->expected) {
        event_del(f->tick);
    }
}

static void ev_on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tally_tick(&((ev_fixture *)arg)->t);
}

static void ev_fixture_init(ev_fixture *f, int expected)
{
    memset(f, 0, sizeof(*f));
    f->base = event_base_new();
    assert_non_null(f->base);
    /* libevent runs a round's I/O callbacks before its timers: give the tick precedence. */
    assert_int_equal(event_base_priority_init(f->base, 2), 0);
    f->expected = expected;
    f->tick = event_new(f->base, -1, EV_PERSIST, ev_on_tick, f);
    event_priority_set(f->tick, 0);
    struct timeval ms = {0, 1000};
    event_add(f->tick, &ms);
}

static void ev_fixture_dispose(ev_fixture *f)
{
    event_free(f->tick);
    event_base_free(f->base);
}

static void test_libevent_many_dials(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer();
    ev_fixture f;
    ev_fixture_init(&f, N_DIALS);
    int64_t t0 = now_us();
    for (int i = 0; i < N_DIALS; i++) {
        csql_event_dial *req;
        assert_int_equal(csql_event_dial_start(f.base, d, I_A, NULL, ev_done, &f, &req), 0);
    }
    assert_int_equal(f.t.calls, 0);
    event_base_dispatch(f.base);
    int64_t took = (now_us() - t0) / 1000;
    print_message("async-figure: libevent adapter: %d dials in %lld ms, %d ok; 1 ms timer's "
                  "largest gap %lld us (loop thread CPU in it: %lld us); most loop CPU between two "
                  "ticks %lld us\n",
                  N_DIALS, (long long)took, f.t.ok, (long long)f.t.max_gap_us,
                  (long long)f.t.max_gap_cpu_us, (long long)f.t.max_busy_us);
    if (f.t.failed) {
        print_message("last failure: %s\n", f.t.last_msg);
    }
    assert_int_equal(f.t.ok, N_DIALS);
    assert_true(f.t.max_busy_us < MAX_BUSY_US);
    ev_fixture_dispose(&f);
    csql_dialer_free(d);
}

typedef struct cancel_ctx {
    csql_event_dial *reqs[20];
    struct event *ev;
} cancel_ctx;

static void ev_cancel_all(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cancel_ctx *c = arg;
    for (int i = 0; i < 20; i++) {
        csql_event_dial_cancel(c->reqs[i]);
    }
}

static void test_libevent_cancel_and_deadline(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer();
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST", "/emulator/faults",
                                          "{\"endpoint\":\"*\",\"latency_ms\":700}"),
                     200);
    ev_fixture f;
    ev_fixture_init(&f, 1);
    cancel_ctx c;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(csql_event_dial_start(f.base, d, I_SLOW, NULL, ev_done, &f, &c.reqs[i]),
                         0);
    }
    c.ev = evtimer_new(f.base, ev_cancel_all, &c);
    struct timeval t100 = {0, 100000};
    evtimer_add(c.ev, &t100);
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.timeout_ms = 200;
    csql_event_dial *late;
    int64_t t0 = now_us();
    assert_int_equal(csql_event_dial_start(f.base, d, I_SLOW, &o, ev_done, &f, &late), 0);
    event_base_dispatch(f.base);
    int64_t took = (now_us() - t0) / 1000;
    assert_int_equal(f.t.calls, 1);
    assert_int_equal(f.t.last_status, CSQL_ERR_TIMEOUT);
    assert_true(took >= 190 && took < 2000);
    csql_event_dial *bad = (csql_event_dial *)1;
    assert_int_equal(csql_event_dial_start(f.base, d, "bad name", NULL, ev_done, &f, &bad),
                     CSQL_ERR_BAD_INSTANCE_NAME);
    assert_null(bad);
    event_free(c.ev);
    ev_fixture_dispose(&f);
    csql_dialer_free(d);
}

#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
#ifdef CSQLT_HAVE_LIBUV
        cmocka_unit_test_setup(test_libuv_many_dials, test_setup),
        cmocka_unit_test_setup(test_libuv_cancel_and_deadline, test_setup),
#endif
#ifdef CSQLT_HAVE_LIBEVENT
        cmocka_unit_test_setup(test_libevent_many_dials, test_setup),
        cmocka_unit_test_setup(test_libevent_cancel_and_deadline, test_setup),
#endif
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
