/*
 * Allocation failures in the local endpoint (src/endpoint.c, fwd.c, loop.c,
 * util/ring.c): every allocation of opening an endpoint fails in turn on the
 * caller's thread, and every allocation the loop thread makes for an accepted
 * connection (dial job, bookkeeping, the forwarded connection, its rings)
 * fails in turn there. Each failure must be CSQL_ERR_NOMEM (open) or close
 * the connection it hit (the driver sees EOF; the endpoint keeps serving),
 * never crash or leak (asan preset), and leave no socket file behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "csql/config.h"
#include "csql/errors.h"
#include "endpoint_internal.h"
#include "error.h"
#include "failalloc.h"
#include "fwd_testlib.h"
#include "loop.h"
#include "util/ring.h"

#define MAX_RUNS 200

static int g_key;
static tl_echo *g_echo;

static int dial_to_echo(void *ctx, csql__fwd_remote *out)
{
    (void)ctx;
    return tl_echo_dial(g_echo, out);
}


/* ---------------- opening, on the caller's thread ---------------- */

typedef struct open_run {
    int server_end;   /* the other end of the pre-dialled "conn" */
    csql_endpoint *ep;
    char dir[128];
} open_run;

static int run_open(void *arg)
{
    open_run *r = arg;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return CSQL_ERR_IO;
    }
    r->server_end = sv[1];
    csql__fwd_remote first = {.fd = sv[0]};
    csql__endpoint_params p = {.loop_key = &g_key, .first = &first, .dial = dial_to_echo};
    r->ep = NULL;
    int rc = csql__endpoint_open(&r->ep, &p);
    if (rc == CSQL_OK) {
        snprintf(r->dir, sizeof(r->dir), "%s", csql_endpoint_dir(r->ep));
    }
    return rc;
}

static void check_open(void *arg, int rc, int injected)
{
    open_run *r = arg;
    if (injected == CSQLT_FA_NONE || rc == CSQL_OK) {
        assert_int_equal(rc, CSQL_OK);
        csql_endpoint_close(r->ep);
        struct stat st;
        assert_int_not_equal(lstat(r->dir, &st), 0); /* the private directory went with it */
    } else {
        assert_int_equal(rc, CSQL_ERR_NOMEM);
        assert_non_null(strstr(csql_error_last()->message, "memory"));
        assert_null(r->ep);
    }
    /* Either way the pre-dialled connection was closed: its server end sees EOF. */
    assert_int_equal(tl_wait_eof(r->server_end, 2000, NULL), 0);
    close(r->server_end);
}

static void test_open_fails_cleanly(void **state)
{
    (void)state;
    open_run r;
    memset(&r, 0, sizeof(r));
    long n = csqlt_failalloc_each(run_open, check_open, &r, MAX_RUNS);
    assert_true(n > 0);
    fprintf(stderr, "csql__endpoint_open: %ld allocations on the caller's thread, each failed once\n",
            n);
    csql__loop_reap(&g_key, false);
}

/* The public form: dial context (instance copy, options) and the endpoint. Never dials. */
static csql_endpoint *g_tcp_ep;
static csql_dialer *g_dialer;

static int run_open_tcp(void *arg)
{
    (void)arg;
    csql_dial_options dial = CSQL_DIAL_OPTIONS_INIT;
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.dial = &dial;
    g_tcp_ep = NULL;
    return csql_endpoint_open_tcp(&g_tcp_ep, g_dialer, "p:r:i", NULL, 0, &o);
}

static void check_open_tcp(void *arg, int rc, int injected)
{
    (void)arg;
    if (injected == CSQLT_FA_NONE || rc == CSQL_OK) {
        assert_int_equal(rc, CSQL_OK);
        assert_true(csql_endpoint_port(g_tcp_ep) > 0);
        csql_endpoint_close(g_tcp_ep);
    } else {
        assert_int_equal(rc, CSQL_ERR_NOMEM);
        assert_null(g_tcp_ep);
    }
}

static void test_public_open_fails_cleanly(void **state)
{
    (void)state;
    /* A real dialer (never contacted: nothing listens on port 9) with two event loops. */
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    assert_int_equal(csql_config_set_token(cfg, "not-a-real-token"), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, "http://127.0.0.1:9"), 0);
    assert_int_equal(csql_config_set_refresh_strategy(cfg, CSQL_REFRESH_LAZY), 0);
    assert_int_equal(csql_config_set_event_loops(cfg, 2), 0);
    assert_int_equal(csql_dialer_new(&g_dialer, cfg), 0);
    csql_config_free(cfg);
    long n = csqlt_failalloc_each(run_open_tcp, check_open_tcp, NULL, MAX_RUNS);
    assert_true(n > 0);
    fprintf(stderr, "csql_endpoint_open_tcp: %ld allocations, each failed once\n", n);
    csql_dialer_free(g_dialer);
    g_dialer = NULL;
}

/* ---------------- accepted connections, on the loop thread ---------------- */

static void arm_on_loop(void *arg)
{
    csqlt_failalloc_arm(*(long *)arg);
}

static long g_seen;
static int g_injected;
static void disarm_on_loop(void *arg)
{
    (void)arg;
    g_injected = csqlt_failalloc_injected();
    g_seen = csqlt_failalloc_disarm();
}

static void test_loop_allocations_fail_one_connection_at_a_time(void **state)
{
    (void)state;
    csql__endpoint_params p = {.loop_key = &g_key, .dial = dial_to_echo};
    csql_endpoint *ep;
    assert_int_equal(csql__endpoint_open(&ep, &p), 0);
    csql__loop *loop;
    assert_int_equal(csql__loop_acquire(&g_key, &loop), 0);
    long n;
    int failed_conns = 0;
    for (n = 0; n < MAX_RUNS; n++) {
        assert_int_equal(csql__loop_call(loop, arm_on_loop, &n), 0);
        int c = tl_connect_unix(csql_endpoint_path(ep));
        assert_true(c >= 0);
        char buf[8];
        int ok = tl_write_all(c, "ping", 4, 2000) == 0 && tl_read_n(c, buf, 4, 2000) == 4 &&
                 memcmp(buf, "ping", 4) == 0;
        assert_int_equal(csql__loop_call(loop, disarm_on_loop, NULL), 0);
        if (!ok) {
            /* The allocation that failed ended this connection, and only this one. */
            assert_int_not_equal(g_injected, CSQLT_FA_NONE);
            assert_int_equal(tl_wait_eof(c, 2000, NULL), 0);
            failed_conns++;
        }
        close(c);
        if (g_injected == CSQLT_FA_NONE) {
            break; /* the whole path ran with fewer than n allocations */
        }
    }
    fprintf(stderr, "accepted connection: %ld allocations on the loop thread; %d runs lost their "
                    "connection to an injected failure\n",
            n, failed_conns);
    assert_true(n > 0 && n < MAX_RUNS);
    /* The endpoint still serves. */
    int c = tl_connect_unix(csql_endpoint_path(ep));
    char buf[8];
    assert_int_equal(tl_write_all(c, "again", 5, 2000), 0);
    assert_int_equal(tl_read_n(c, buf, 5, 2000), 5);
    close(c);
    csql_endpoint_close(ep);
    while (csql__fwd_live_count() != 0) {
        usleep(1000);
    }
    csql__loop_release(loop);
    assert_int_equal(csql__loop_count(), 0);
    assert_int_equal(csql__ring_allocated_bytes(), 0);
}

int main(void)
{
    if (csqlt_failalloc_install() != 0) {
        return 1;
    }
    g_echo = tl_echo_start();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_fails_cleanly),
        cmocka_unit_test(test_public_open_fails_cleanly),
        cmocka_unit_test(test_loop_allocations_fail_one_connection_at_a_time),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tl_echo_stop(g_echo);
    return rc;
}
