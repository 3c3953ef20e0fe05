/*
 * dial_nb.c (the non-blocking network half of csql_dial_async) against the
 * in-test TLS server: success with and without MDX, by name, the failures of
 * csql__dial_socket with the same codes and messages, deadlines on a silent
 * server and a full accept queue, spurious steps, and disposal at every step
 * (run under ASan: nothing leaks, no fd is left open).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "csql/errors.h"
#include "dial_nb.h"
#include "mdx.h"
#include "testcerts.h"
#include "testserver.h"
#include "util/clock.h"

typedef struct fixture {
    csqlt_cert root;
    csqlt_cert leaf;       /* SAN x.y.sql.goog., CN p:i */
    csqlt_cert wrong_leaf; /* SAN other.sql.goog, CN p:other */
    csqlt_cert client_ca;
    csqlt_cert client;
    char *root_pem;
    csql__instance_name name;
} fixture;

static fixture F;

static int group_setup(void **state)
{
    (void)state;
    csqlt_make_ca(&F.root, "server root");
    csqlt_make_leaf(&F.leaf, &F.root, "p:i", "x.y.sql.goog.");
    csqlt_make_leaf(&F.wrong_leaf, &F.root, "p:other", "other.sql.goog");
    csqlt_make_ca(&F.client_ca, "client signer");
    csqlt_make_leaf(&F.client, &F.client_ca, "Google Cloud SQL Client", NULL);
    F.root_pem = csqlt_pem(F.root.cert, NULL, NULL);
    assert_int_equal(csql__instance_name_parse("p:r:i", &F.name), 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    csqlt_cert *all[] = {&F.root, &F.leaf, &F.wrong_leaf, &F.client_ca, &F.client};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        csqlt_cert_free(all[i]);
    }
    free(F.root_pem);
    return 0;
}

static int open_fds(void)
{
    int n = 0;
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL) {
        return -1;
    }
    while (readdir(dir) != NULL) {
        n++;
    }
    closedir(dir);
    return n;
}

/* How a test drives the machine. */
typedef struct drive_opts {
    int spurious;    /* call step again before waiting, every time */
    int stop_after;  /* > 0: dispose after this many WOULD_BLOCKs (cancellation) */
} drive_opts;

typedef struct drive_result {
    int rc;
    int waits;
    int fd_changes;
    int fd;
    SSL *ssl;
} drive_result;

/* Run one dial of host:port to the end (or the cancellation point), polling as it asks. */
static drive_result drive(const char *host, uint16_t port, const char *dns, int mdx_supported,
                          uint32_t timeout_ms, const drive_opts *o)
{
    drive_result r = {.rc = CSQL_ERR_INTERNAL, .fd = -1};
    csql__certset cs;
    csqlt_certset_init(&cs, &F.client, F.root_pem, dns, mdx_supported);
    csql__dial_params p = {
        .host = host,
        .port = port,
        .keepalive_s = 30,
        .mdx = true,
        .user_agent = "csql-test/1",
        .deadline_ms = csql__mono_ms() + timeout_ms,
    };
    csql__dial_nb nb;
    csql_error_clear();
    assert_int_equal(csql__dial_nb_init(&nb, &cs, &F.name, &p), 0);
    int last_fd = -1;
    /* Bounded by the deadline: every round waits for readiness or the time left. */
    for (int round = 0; round < 100000; round++) {
        r.rc = csql__dial_nb_step(&nb);
        if (r.rc == CSQL_ERR_WOULD_BLOCK && o != NULL && o->spurious) {
            r.rc = csql__dial_nb_step(&nb);
        }
        if (r.rc != CSQL_ERR_WOULD_BLOCK) {
            break;
        }
        r.waits++;
        int fd = csql__dial_nb_fd(&nb);
        unsigned ev = csql__dial_nb_events(&nb);
        assert_true(fd >= 0);
        assert_true(ev != 0);
        if (fd != last_fd) {
            r.fd_changes++;
            last_fd = fd;
        }
        if (o != NULL && o->stop_after > 0 && r.waits >= o->stop_after) {
            break;
        }
        struct pollfd pfd = {.fd = fd,
                             .events = (short)((ev & CSQL__NB_READ ? POLLIN : 0) |
                                               (ev & CSQL__NB_WRITE ? POLLOUT : 0))};
        int64_t left = csql__ms_left(p.deadline_ms);
        (void)poll(&pfd, 1, (int)(left + 1));
    }
    if (r.rc == 0) {
        assert_int_equal(csql__dial_nb_fd(&nb), -1);
        csql__dial_nb_take(&nb, &r.fd, &r.ssl);
    }
    csql__dial_nb_dispose(&nb);
    csqlt_certset_dispose(&cs);
    return r;
}

static void expect_message(const char *a, const char *b)
{
    const char *msg = csql_error_last()->message;
    if (a != NULL && strstr(msg, a) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", msg, a);
    }
    if (b != NULL && strstr(msg, b) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", msg, b);
    }
}

static csqlt_server_opts server_opts(const csqlt_cert *leaf)
{
    csqlt_server_opts o = {.cert = leaf, .client_ca = F.client_ca.cert};
    return o;
}

static void close_dialled(drive_result *r)
{
    SSL_free(r->ssl);
    close(r->fd);
}

/* ---------------- tests ---------------- */

static void test_success_with_mdx(void **state)
{
    (void)state;
    csqlt_mdx_reply reply = {.status = CSQL__MDX_OK};
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.handler = csqlt_mdx_handler;
    o.arg = &reply;
    csqlt_server_start(&srv, &o);
    drive_result r = drive("127.0.0.1", srv.port, "x.y.sql.goog", 1, 5000, NULL);
    assert_int_equal(r.rc, 0);
    assert_true(r.waits >= 2); /* connect, then handshake reads at least */
    assert_int_equal(r.fd_changes, 1);
    assert_int_equal(SSL_version(r.ssl), TLS1_3_VERSION);
    assert_true(fcntl(r.fd, F_GETFL) & O_NONBLOCK);
    /* The conn is usable: the server echoes after the MDX answer. */
    size_t n = 0;
    assert_int_equal(SSL_write_ex(r.ssl, "ping", 4, &n), 1);
    struct pollfd pfd = {.fd = r.fd, .events = POLLIN};
    char buf[8];
    int got = 0;
    for (int i = 0; i < 100 && got < 4; i++) {
        (void)poll(&pfd, 1, 100);
        if (SSL_read_ex(r.ssl, buf + got, sizeof(buf) - (size_t)got, &n) == 1) {
            got += (int)n;
        }
    }
    assert_int_equal(got, 4);
    assert_memory_equal(buf, "ping", 4);
    close_dialled(&r);
    csqlt_server_stop(&srv);
    assert_int_equal(atomic_load(&reply.got_request), 1);
    assert_string_equal(reply.got_user_agent, "csql-test/1");
}

static void test_success_by_name_and_spurious_steps(void **state)
{
    (void)state;
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    csqlt_server_start(&srv, &o);
    drive_opts d = {.spurious = 1};
    drive_result r = drive("localhost", srv.port, "x.y.sql.goog.", 0, 5000, &d);
    assert_int_equal(r.rc, 0);
    close_dialled(&r);
    csqlt_server_stop(&srv);
}

static void test_needs_resolver(void **state)
{
    (void)state;
    csql__certset cs;
    csqlt_certset_init(&cs, &F.client, F.root_pem, NULL, 0);
    const char *hosts[] = {"127.0.0.1", "::1", "localhost", "abc.def.sql.goog."};
    const bool want[] = {false, false, true, true};
    for (int i = 0; i < 4; i++) {
        csql__dial_params p = {.host = hosts[i], .port = 3307, .deadline_ms = csql__mono_ms()};
        csql__dial_nb nb;
        assert_int_equal(csql__dial_nb_init(&nb, &cs, &F.name, &p), 0);
        assert_int_equal(csql__dial_nb_needs_resolver(&nb), want[i]);
        assert_int_equal(csql__dial_nb_fd(&nb), -1);
        csql__dial_nb_dispose(&nb);
    }
    csql__dial_params bad = {.host = "", .port = 3307};
    csql__dial_nb nb;
    assert_int_equal(csql__dial_nb_init(&nb, &cs, &F.name, &bad), CSQL_ERR_INVALID_ARGUMENT);
    csqlt_certset_dispose(&cs);
}

static void test_wrong_name(void **state)
{
    (void)state;
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.wrong_leaf);
    csqlt_server_start(&srv, &o);
    drive_result r = drive("127.0.0.1", srv.port, "x.y.sql.goog", 0, 5000, NULL);
    assert_int_equal(r.rc, CSQL_ERR_TLS_VERIFY);
    expect_message("server name mismatch", "x.y.sql.goog");
    char where[64];
    snprintf(where, sizeof(where), "127.0.0.1:%u (instance p:r:i)", (unsigned)srv.port);
    expect_message(where, NULL);
    csqlt_server_stop(&srv);
}

static void test_tls12_only_server(void **state)
{
    (void)state;
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.max_version = TLS1_2_VERSION;
    csqlt_server_start(&srv, &o);
    drive_result r = drive("127.0.0.1", srv.port, "x.y.sql.goog", 0, 5000, NULL);
    assert_int_equal(r.rc, CSQL_ERR_TLS_HANDSHAKE);
    expect_message("protocol version", NULL);
    csqlt_server_stop(&srv);
}

static void test_connect_refused(void **state)
{
    (void)state;
    uint16_t port = csqlt_unused_port();
    drive_result r = drive("127.0.0.1", port, NULL, 0, 5000, NULL);
    assert_int_equal(r.rc, CSQL_ERR_CONNECT);
    expect_message("refused", "p:r:i");
}

static void test_handshake_timeout(void **state)
{
    (void)state;
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.silent = 1;
    csqlt_server_start(&srv, &o);
    int64_t t0 = csql__mono_ms();
    drive_result r = drive("127.0.0.1", srv.port, NULL, 0, 300, NULL);
    int64_t took = csql__mono_ms() - t0;
    assert_int_equal(r.rc, CSQL_ERR_TIMEOUT);
    expect_message("TLS handshake", "timed out");
    assert_true(took >= 290 && took < 800);
    csqlt_server_stop(&srv);
}

static void test_tcp_connect_timeout(void **state)
{
    (void)state;
    /* A listener whose accept queue is full drops further SYNs: connect never completes. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, len), 0);
    assert_int_equal(listen(lfd, 0), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        (void)connect(fill[i], (struct sockaddr *)&a, len);
    }
    usleep(50000);
    int64_t t0 = csql__mono_ms();
    drive_opts d = {.spurious = 1}; /* a spurious step must not take "in progress" for "connected" */
    drive_result r = drive("127.0.0.1", ntohs(a.sin_port), NULL, 0, 300, &d);
    int64_t took = csql__mono_ms() - t0;
    assert_int_equal(r.rc, CSQL_ERR_TIMEOUT);
    expect_message("TCP connect", "timed out");
    assert_true(took >= 290 && took < 800);
    for (int i = 0; i < 4; i++) {
        close(fill[i]);
    }
    close(lfd);
}

static void test_deadline_already_passed(void **state)
{
    (void)state;
    drive_result r = drive("127.0.0.1", 1, NULL, 0, 0, NULL);
    assert_int_equal(r.rc, CSQL_ERR_TIMEOUT);
}

static void test_unresolvable(void **state)
{
    (void)state;
    drive_result r = drive("no-such-host.invalid", 3307, NULL, 0, 5000, NULL);
    assert_int_equal(r.rc, CSQL_ERR_DNS);
    expect_message("no-such-host.invalid:3307", "p:r:i");
}

static void test_mdx_error(void **state)
{
    (void)state;
    csqlt_mdx_reply reply = {.status = CSQL__MDX_ERROR, .message = "denied by org policy"};
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.handler = csqlt_mdx_handler;
    o.arg = &reply;
    csqlt_server_start(&srv, &o);
    drive_result r = drive("127.0.0.1", srv.port, "x.y.sql.goog", 1, 5000, NULL);
    assert_int_equal(r.rc, CSQL_ERR_MDX);
    expect_message("denied by org policy", "p:r:i");
    csqlt_server_stop(&srv);
}

static void test_mdx_client_cert_rejected(void **state)
{
    (void)state;
    csqlt_mdx_reply reply = {.status = CSQL__MDX_OK};
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.client_ca = F.root.cert; /* our client certificate is not from this CA */
    o.handler = csqlt_mdx_handler;
    o.arg = &reply;
    csqlt_server_start(&srv, &o);
    drive_result r = drive("127.0.0.1", srv.port, "x.y.sql.goog", 1, 5000, NULL);
    assert_int_equal(r.rc, CSQL_ERR_TLS_HANDSHAKE);
    expect_message("metadata exchange", "alert");
    csqlt_server_stop(&srv);
}

/* Cancel after every possible number of waits: each state is disposed of mid-flight. */
static void test_dispose_at_every_step(void **state)
{
    (void)state;
    csqlt_mdx_reply reply = {.status = CSQL__MDX_OK};
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.handler = csqlt_mdx_handler;
    o.arg = &reply;
    o.connections = 64;
    int fds_before = open_fds();
    csqlt_server_start(&srv, &o);
    drive_result full = drive("127.0.0.1", srv.port, "x.y.sql.goog", 1, 5000, NULL);
    assert_int_equal(full.rc, 0);
    close_dialled(&full);
    int cancelled = 0;
    for (int k = 1; k <= full.waits; k++) {
        drive_opts d = {.stop_after = k};
        drive_result r = drive("127.0.0.1", srv.port, "x.y.sql.goog", 1, 5000, &d);
        /* The number of waits varies a little from run to run (how reads split). */
        if (r.rc == 0) {
            close_dialled(&r);
            continue;
        }
        assert_int_equal(r.rc, CSQL_ERR_WOULD_BLOCK);
        cancelled++;
    }
    assert_true(cancelled >= full.waits - 1);
    /* The server ends each cancelled session when it reads EOF; let it catch up. */
    csqlt_server_stop(&srv);
    assert_int_equal(open_fds(), fds_before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success_with_mdx),
        cmocka_unit_test(test_success_by_name_and_spurious_steps),
        cmocka_unit_test(test_needs_resolver),
        cmocka_unit_test(test_wrong_name),
        cmocka_unit_test(test_tls12_only_server),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_tcp_connect_timeout),
        cmocka_unit_test(test_deadline_already_passed),
        cmocka_unit_test(test_unresolvable),
        cmocka_unit_test(test_mdx_error),
        cmocka_unit_test(test_mdx_client_cert_rejected),
        cmocka_unit_test(test_dispose_at_every_step),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
