/*
 * dial_socket.c against an in-test TLS server on loopback: success over IPv4,
 * IPv6 and a name, identity and chain failures, old TLS, refused and silent
 * peers, DNS failure, and the metadata exchange.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "csql/errors.h"
#include "dial_socket.h"
#include "mdx.h"
#include "testcerts.h"
#include "testserver.h"
#include "util/clock.h"

typedef struct fixture {
    csqlt_cert root;
    csqlt_cert leaf;        /* SAN x.y.sql.goog., CN p:i */
    csqlt_cert wrong_leaf;  /* SAN other.sql.goog, CN p:other */
    csqlt_cert expired;
    csqlt_cert other_ca;
    csqlt_cert other_leaf;
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
    csqlt_cert_opts eo = {.cn = "p:i", .not_before_s = -7200, .not_after_s = -60};
    csqlt_make_cert(&F.expired, &F.root, &eo);
    csqlt_make_ca(&F.other_ca, "other root");
    csqlt_make_leaf(&F.other_leaf, &F.other_ca, "p:i", "x.y.sql.goog.");
    csqlt_make_ca(&F.client_ca, "client signer");
    csqlt_make_leaf(&F.client, &F.client_ca, "Google Cloud SQL Client", NULL);
    F.root_pem = csqlt_pem(F.root.cert, NULL, NULL);
    assert_int_equal(csql__instance_name_parse("p:r:i", &F.name), 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    csqlt_cert *all[] = {&F.root, &F.leaf, &F.wrong_leaf, &F.expired,
                         &F.other_ca, &F.other_leaf, &F.client_ca, &F.client};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        csqlt_cert_free(all[i]);
    }
    free(F.root_pem);
    return 0;
}

static csqlt_server_opts server_opts(const csqlt_cert *leaf)
{
    csqlt_server_opts o = {.cert = leaf, .client_ca = F.client_ca.cert};
    return o;
}

/* Dial host:port with a certset trusting root (dns_name and mdx as given). */
static int dial(const char *host, uint16_t port, const char *dns, int mdx_supported, int mdx,
                uint32_t timeout_ms, int *fd, SSL **ssl)
{
    csql__certset cs;
    csqlt_certset_init(&cs, &F.client, F.root_pem, dns, mdx_supported);
    csql__dial_params p = {
        .host = host,
        .port = port,
        .keepalive_s = 30,
        .mdx = mdx != 0,
        .user_agent = "csql-test/1",
        .deadline_ms = csql__mono_ms() + timeout_ms,
    };
    csql_error_clear();
    int rc = csql__dial_socket(&cs, &F.name, &p, fd, ssl);
    csqlt_certset_dispose(&cs);
    return rc;
}

static void close_dialled(int fd, SSL *ssl)
{
    SSL_free(ssl);
    close(fd);
}

static void expect_message(const char *a, const char *b)
{
    const char *msg = csql_error_last()->message;
    if (getenv("CSQLT_VERBOSE") != NULL) {
        print_message("%s\n", msg);
    }
    if (a != NULL && strstr(msg, a) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", msg, a);
    }
    if (b != NULL && strstr(msg, b) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", msg, b);
    }
}

/* What the server saw, recorded by a handler. */
typedef struct seen {
    char sni[256];
    int version;
} seen;

static void record_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    seen *s = arg;
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    snprintf(s->sni, sizeof(s->sni), "%s", sni ? sni : "");
    s->version = SSL_version(ssl);
    csqlt_echo_handler(ssl, fd, NULL);
}

static void test_success_ipv4(void **state)
{
    (void)state;
    seen seen_by_server = {0};
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.handler = record_handler;
    o.arg = &seen_by_server;
    csqlt_server_start(&srv, &o);
    int fd = -1;
    SSL *ssl = NULL;
    assert_int_equal(dial("127.0.0.1", srv.port, "x.y.sql.goog", 0, 1, 5000, &fd, &ssl), 0);
    assert_true(fd >= 0);
    assert_non_null(ssl);
    assert_int_equal(SSL_version(ssl), TLS1_3_VERSION);
    /* Returned non-blocking, with the socket options set. */
    assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    int v = 0;
    socklen_t len = sizeof(v);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    assert_int_equal(v, 1);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len), 0);
    assert_int_equal(v, 1);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len), 0);
    assert_int_equal(v, 30);
    close_dialled(fd, ssl);
    csqlt_server_stop(&srv);
    assert_int_equal(atomic_load(&srv.handshakes), 1);
    assert_string_equal(seen_by_server.sni, "x.y.sql.goog");
    assert_int_equal(seen_by_server.version, TLS1_3_VERSION);
}

static void test_success_ipv6_and_cn_only(void **state)
{
    (void)state;
    seen seen_by_server = {0};
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.bind_addr = "::1";
    o.handler = record_handler;
    o.arg = &seen_by_server;
    csqlt_server_start(&srv, &o);
    int fd = -1;
    SSL *ssl = NULL;
    /* No DNS name: no SNI, CN p:i must match. */
    assert_int_equal(dial("::1", srv.port, NULL, 0, 1, 5000, &fd, &ssl), 0);
    close_dialled(fd, ssl);
    csqlt_server_stop(&srv);
    assert_string_equal(seen_by_server.sni, "");
}

static void test_success_by_name(void **state)
{
    (void)state;
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    csqlt_server_start(&srv, &o);
    int fd = -1;
    SSL *ssl = NULL;
    assert_int_equal(dial("localhost", srv.port, "x.y.sql.goog.", 0, 1, 5000, &fd, &ssl), 0);
    close_dialled(fd, ssl);
    csqlt_server_stop(&srv);
}

static void expect_dial_fails(const csqlt_cert *leaf, int max_version, int code, const char *a,
                              const char *b)
{
    csqlt_server srv;
    csqlt_server_opts o = server_opts(leaf);
    o.max_version = max_version;
    csqlt_server_start(&srv, &o);
    int fd = 7;
    SSL *ssl = (SSL *)&fd;
    assert_int_equal(dial("127.0.0.1", srv.port, "x.y.sql.goog", 0, 1, 5000, &fd, &ssl), code);
    assert_int_equal(fd, -1);
    assert_null(ssl);
    expect_message(a, b);
    char where[64];
    snprintf(where, sizeof(where), "127.0.0.1:%u (instance p:r:i)", (unsigned)srv.port);
    expect_message(where, NULL);
    csqlt_server_stop(&srv);
}

static void test_wrong_name(void **state)
{
    (void)state;
    expect_dial_fails(&F.wrong_leaf, 0, CSQL_ERR_TLS_VERIFY, "server name mismatch",
                      "x.y.sql.goog");
}

static void test_other_ca(void **state)
{
    (void)state;
    expect_dial_fails(&F.other_leaf, 0, CSQL_ERR_TLS_VERIFY,
                      "unable to get local issuer certificate", NULL);
}

static void test_expired(void **state)
{
    (void)state;
    expect_dial_fails(&F.expired, 0, CSQL_ERR_TLS_VERIFY, "certificate has expired", NULL);
}

static void test_tls12_only_server(void **state)
{
    (void)state;
    expect_dial_fails(&F.leaf, TLS1_2_VERSION, CSQL_ERR_TLS_HANDSHAKE, "protocol version", NULL);
}

static void test_connect_refused(void **state)
{
    (void)state;
    uint16_t port = csqlt_unused_port();
    int fd = -1;
    SSL *ssl = NULL;
    assert_int_equal(dial("127.0.0.1", port, NULL, 0, 1, 5000, &fd, &ssl), CSQL_ERR_CONNECT);
    char where[64];
    snprintf(where, sizeof(where), "127.0.0.1:%u", (unsigned)port);
    expect_message(where, "p:r:i");
    expect_message("refused", NULL);
    assert_int_equal(csql_error_last()->category, CSQL_CAT_NETWORK);
}

static void test_handshake_timeout(void **state)
{
    (void)state;
    csqlt_server srv;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.silent = 1;
    csqlt_server_start(&srv, &o);
    int fd = -1;
    SSL *ssl = NULL;
    int64_t t0 = csql__mono_ms();
    assert_int_equal(dial("127.0.0.1", srv.port, NULL, 0, 1, 300, &fd, &ssl), CSQL_ERR_TIMEOUT);
    int64_t took = csql__mono_ms() - t0;
    assert_true(took >= 290);
    assert_true(took < 800);
    expect_message("TLS handshake", "timed out");
    csqlt_server_stop(&srv);
}

static void test_tcp_connect_timeout(void **state)
{
    (void)state;
    /* A listener whose accept queue is full drops further SYNs: connect never completes. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(lfd >= 0);
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
    int fd = -1;
    SSL *ssl = NULL;
    int64_t t0 = csql__mono_ms();
    int rc = dial("127.0.0.1", ntohs(a.sin_port), NULL, 0, 1, 300, &fd, &ssl);
    int64_t took = csql__mono_ms() - t0;
    assert_int_equal(rc, CSQL_ERR_TIMEOUT);
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
    int fd = -1;
    SSL *ssl = NULL;
    csql__certset cs;
    csqlt_certset_init(&cs, &F.client, F.root_pem, NULL, 0);
    csql__dial_params p = {.host = "127.0.0.1", .port = 1, .deadline_ms = csql__mono_ms() - 1};
    assert_int_equal(csql__dial_socket(&cs, &F.name, &p, &fd, &ssl), CSQL_ERR_TIMEOUT);
    csqlt_certset_dispose(&cs);
}

static void test_unresolvable(void **state)
{
    (void)state;
    int fd = -1;
    SSL *ssl = NULL;
    assert_int_equal(dial("no-such-host.invalid", 3307, NULL, 0, 1, 5000, &fd, &ssl),
                     CSQL_ERR_DNS);
    expect_message("no-such-host.invalid:3307", "p:r:i");
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    int fd;
    SSL *ssl;
    csql__certset cs;
    csqlt_certset_init(&cs, &F.client, F.root_pem, NULL, 0);
    csql__dial_params p = {.host = "127.0.0.1", .port = 3307, .deadline_ms = csql__mono_ms() + 100};
    assert_int_equal(csql__dial_socket(NULL, &F.name, &p, &fd, &ssl), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql__dial_socket(&cs, NULL, &p, &fd, &ssl), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql__dial_socket(&cs, &F.name, NULL, &fd, &ssl), CSQL_ERR_INVALID_ARGUMENT);
    p.port = 0;
    assert_int_equal(csql__dial_socket(&cs, &F.name, &p, &fd, &ssl), CSQL_ERR_INVALID_ARGUMENT);
    p.port = 1;
    p.host = "";
    assert_int_equal(csql__dial_socket(&cs, &F.name, &p, &fd, &ssl), CSQL_ERR_INVALID_ARGUMENT);
    csqlt_certset_dispose(&cs);
}

/* ---- metadata exchange ---- */

static int dial_mdx(csqlt_server_opts *o, int mdx_supported, int mdx, uint32_t timeout_ms)
{
    csqlt_server srv;
    csqlt_server_start(&srv, o);
    int fd = -1;
    SSL *ssl = NULL;
    int rc = dial("127.0.0.1", srv.port, "x.y.sql.goog", mdx_supported, mdx, timeout_ms, &fd,
                  &ssl);
    if (rc == 0) {
        close_dialled(fd, ssl);
    }
    csqlt_server_stop(&srv);
    return rc;
}

static void test_mdx_ok(void **state)
{
    (void)state;
    csqlt_mdx_reply reply = {.status = CSQL__MDX_OK};
    csqlt_server_opts o = server_opts(&F.leaf);
    o.handler = csqlt_mdx_handler;
    o.arg = &reply;
    assert_int_equal(dial_mdx(&o, 1, 1, 5000), 0);
    assert_int_equal(atomic_load(&reply.got_request), 1);
    assert_string_equal(reply.got_user_agent, "csql-test/1");
    assert_int_equal(reply.got_protocol, CSQL__MDX_PROTO_TLS);
}

static void test_mdx_error(void **state)
{
    (void)state;
    csqlt_mdx_reply reply = {.status = CSQL__MDX_ERROR, .message = "denied by org policy"};
    csqlt_server_opts o = server_opts(&F.leaf);
    o.handler = csqlt_mdx_handler;
    o.arg = &reply;
    assert_int_equal(dial_mdx(&o, 1, 1, 5000), CSQL_ERR_MDX);
    expect_message("denied by org policy", "p:r:i");
}

static void test_mdx_skipped_when_unsupported_or_off(void **state)
{
    (void)state;
    /* The echo server would answer an MDX frame with the same frame: status 0 would fail. */
    csqlt_server_opts o = server_opts(&F.leaf);
    o.handler = csqlt_echo_handler;
    assert_int_equal(dial_mdx(&o, 0, 1, 5000), 0);
    assert_int_equal(dial_mdx(&o, 1, 0, 5000), 0);
    assert_int_equal(dial_mdx(&o, 1, 1, 5000), CSQL_ERR_MDX);
    expect_message("unexpected status 0", NULL);
}

/* The handlers below read the client's request first: closing with it unread would reset. */
static void garbage_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    (void)arg;
    (void)csqlt_mdx_skip_request(ssl);
    csqlt_ssl_write_all(ssl, "hello world!", 12);
}

static void test_mdx_not_a_frame(void **state)
{
    (void)state;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.handler = garbage_handler;
    assert_int_equal(dial_mdx(&o, 1, 1, 5000), CSQL_ERR_MDX);
    expect_message("not a metadata exchange frame", NULL);
}

static void close_notify_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    (void)arg;
    (void)csqlt_mdx_skip_request(ssl);
    SSL_shutdown(ssl);
}

static void test_mdx_server_closes(void **state)
{
    (void)state;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.handler = close_notify_handler;
    assert_int_equal(dial_mdx(&o, 1, 1, 5000), CSQL_ERR_MDX);
    expect_message("closed the connection", NULL);
}

/* Read and ignore everything, never answer, until the client goes away. */
static void hang_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    (void)arg;
    char buf[256];
    size_t n;
    while (SSL_read_ex(ssl, buf, sizeof(buf), &n) == 1) {
    }
}

static void test_mdx_timeout(void **state)
{
    (void)state;
    csqlt_server_opts o = server_opts(&F.leaf);
    o.handler = hang_handler;
    int64_t t0 = csql__mono_ms();
    assert_int_equal(dial_mdx(&o, 1, 1, 300), CSQL_ERR_TIMEOUT);
    int64_t took = csql__mono_ms() - t0;
    assert_true(took >= 290 && took < 1000);
    expect_message("metadata exchange", "timed out");
}

static void test_mdx_client_cert_rejected(void **state)
{
    (void)state;
    /* TLS 1.3: the server's refusal of our certificate arrives on the first read. */
    csqlt_mdx_reply reply = {.status = CSQL__MDX_OK};
    csqlt_server_opts o = server_opts(&F.leaf);
    o.client_ca = F.other_ca.cert;
    o.handler = csqlt_mdx_handler;
    o.arg = &reply;
    assert_int_equal(dial_mdx(&o, 1, 1, 5000), CSQL_ERR_TLS_HANDSHAKE);
    expect_message("metadata exchange", NULL);
    expect_message("alert", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success_ipv4),
        cmocka_unit_test(test_success_ipv6_and_cn_only),
        cmocka_unit_test(test_success_by_name),
        cmocka_unit_test(test_wrong_name),
        cmocka_unit_test(test_other_ca),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_tls12_only_server),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_tcp_connect_timeout),
        cmocka_unit_test(test_deadline_already_passed),
        cmocka_unit_test(test_unresolvable),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_mdx_ok),
        cmocka_unit_test(test_mdx_error),
        cmocka_unit_test(test_mdx_skipped_when_unsupported_or_off),
        cmocka_unit_test(test_mdx_not_a_frame),
        cmocka_unit_test(test_mdx_server_closes),
        cmocka_unit_test(test_mdx_timeout),
        cmocka_unit_test(test_mdx_client_cert_rejected),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
