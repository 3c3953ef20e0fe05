/*
 * csql-proxy HTTP servers: health answers in each phase (the Auth Proxy's
 * semantics), and the routes over real HTTP on an ephemeral loopback port:
 * health checks, /metrics, /quitquitquit (POST, GET; other methods 400).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "http.h"
#include "http_client.h"

static void state_init(proxy_state *st, metrics *m)
{
    memset(st, 0, sizeof(*st));
    const char *names[] = {"p:r:i"};
    assert_int_equal(metrics_init(m, names, 1, 2, "t"), 0);
    st->metrics = m;
    st->max_connections = 2;
    st->open_known = true;
    st->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(st->wake_fd >= 0);
}

static void expect_answer(const proxy_state *st, const char *path, int status, const char *body)
{
    char b[200];
    assert_int_equal(proxy_health_answer(st, path, b, sizeof(b)), status);
    assert_string_equal(b, body);
}

static void test_health_semantics(void **state)
{
    (void)state;
    proxy_state st;
    metrics m;
    state_init(&st, &m);
    atomic_store(&st.phase, PHASE_STARTING);
    expect_answer(&st, "/liveness", 200, "ok");
    expect_answer(&st, "/startup", 503, "error");
    expect_answer(&st, "/readiness", 503, "proxy is not started");

    atomic_store(&st.phase, PHASE_SERVING);
    expect_answer(&st, "/startup", 200, "ok");
    expect_answer(&st, "/readiness", 200, "ok");
    atomic_store(&st.open, 1);
    expect_answer(&st, "/readiness", 200, "ok");
    atomic_store(&st.open, 2);
    expect_answer(&st, "/readiness", 503, "max connections reached (open = 2, max = 2)");
    expect_answer(&st, "/liveness", 200, "ok");
    atomic_store(&st.open, 0);

    atomic_store(&st.phase, PHASE_STOPPING);
    expect_answer(&st, "/readiness", 503, "proxy is shutting down");
    expect_answer(&st, "/startup", 200, "ok");
    expect_answer(&st, "/liveness", 200, "ok");
    expect_answer(&st, "/other", 404, "404 page not found");

    st.max_connections = 0; /* no limit: never 503 for connections */
    atomic_store(&st.phase, PHASE_SERVING);
    atomic_store(&st.open, 100000);
    expect_answer(&st, "/readiness", 200, "ok");
    close(st.wake_fd);
    metrics_free(&m);
}

static int port_of(const proxy_http *h)
{
    const char *colon = strrchr(proxy_http_where(h), ':');
    assert_non_null(colon);
    return atoi(colon + 1);
}

static int req(int port, const char *method, const char *path)
{
    char err[200];
    int s = proxy_http_request("127.0.0.1", port, method, path, 5000, err, sizeof(err));
    if (s < 0) {
        fail_msg("%s %s: %s", method, path, err);
    }
    return s;
}

static void test_routes_over_http(void **state)
{
    (void)state;
    proxy_state st;
    metrics m;
    state_init(&st, &m);
    char err[256];
    proxy_http *h = NULL;
    proxy_http_routes r = {.health = true, .metrics = true};
    assert_int_equal(proxy_http_start(&h, "HTTP server", "127.0.0.1", 0, r, &st, err, sizeof(err)),
                     0);
    int port = port_of(h);
    assert_true(port > 0);
    assert_int_equal(req(port, "GET", "/startup"), 503);
    assert_int_equal(req(port, "GET", "/liveness"), 200);
    atomic_store(&st.phase, PHASE_SERVING);
    assert_int_equal(req(port, "GET", "/startup"), 200);
    assert_int_equal(req(port, "GET", "/readiness"), 200);
    assert_int_equal(req(port, "HEAD", "/readiness"), 200);
    assert_int_equal(req(port, "POST", "/readiness"), 405);
    assert_int_equal(req(port, "GET", "/metrics"), 200);
    assert_int_equal(req(port, "GET", "/quitquitquit"), 404); /* not on this server */
    assert_int_equal(req(port, "GET", "/nope"), 404);
    assert_false(atomic_load(&st.quit_requested));

    /* a taken port is an error naming it */
    proxy_http *h2 = NULL;
    assert_int_equal(proxy_http_start(&h2, "HTTP server", "127.0.0.1", port, r, &st, err,
                                      sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "HTTP server: cannot listen on 127.0.0.1 port"));
    assert_non_null(strstr(err, "Address already in use"));
    proxy_http_stop(h);

    proxy_http_routes admin = {.quitquitquit = true};
    assert_int_equal(proxy_http_start(&h, "admin server", "localhost", 0, admin, &st, err,
                                      sizeof(err)),
                     0);
    port = port_of(h);
    assert_int_equal(req(port, "GET", "/startup"), 404); /* health is not on the admin server */
    assert_int_equal(req(port, "PUT", "/quitquitquit"), 400);
    assert_false(atomic_load(&st.quit_requested));
    assert_int_equal(req(port, "POST", "/quitquitquit"), 200);
    assert_true(atomic_load(&st.quit_requested));
    uint64_t v = 0;
    assert_int_equal(read(st.wake_fd, &v, sizeof(v)), (ssize_t)sizeof(v));
    assert_true(v >= 1);
    atomic_store(&st.quit_requested, false);
    assert_int_equal(req(port, "GET", "/quitquitquit"), 200);
    assert_true(atomic_load(&st.quit_requested));
    proxy_http_stop(h);

    assert_int_equal(proxy_http_start(&h, "HTTP server", "no-such-host.invalid", 0, r, &st, err,
                                      sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "cannot resolve \"no-such-host.invalid\""));
    close(st.wake_fd);
    metrics_free(&m);
}

static void test_client_errors(void **state)
{
    (void)state;
    char err[200];
    /* a port nobody listens on (bound then closed) */
    proxy_state st;
    metrics m;
    state_init(&st, &m);
    proxy_http *h = NULL;
    proxy_http_routes r = {.health = true};
    assert_int_equal(proxy_http_start(&h, "x", "127.0.0.1", 0, r, &st, err, sizeof(err)), 0);
    int port = port_of(h);
    proxy_http_stop(h);
    assert_int_equal(proxy_http_request("127.0.0.1", port, "GET", "/startup", 2000, err,
                                        sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "Connection refused"));
    close(st.wake_fd);
    metrics_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_semantics),
        cmocka_unit_test(test_routes_over_http),
        cmocka_unit_test(test_client_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
