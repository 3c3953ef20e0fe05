/*
 * Man-in-the-middle tests: something other than the instance's server-side
 * proxy answers at the instance's IP:port, and csql must refuse it with a TLS
 * error whose message says why.
 *
 * Part A runs the whole public dial path (csql_dial): a real refresh against
 * csql-emulator (so the trust anchors are the instance's real CA), then a
 * dial to the instance's IP where the test's impostor listens (the dialer's
 * server port points at it; the emulator's proxy listens on its own port):
 * a server certificate from another CA, a self-signed one with the right
 * name, the instance's own name in an ephemeral client certificate the
 * emulator issued to the attacker, a relay to another instance's genuine
 * server, a TLS 1.2-only server, a plaintext server.
 *
 * Part B needs a server certificate signed by a CA csql trusts but naming
 * something else, which only the CA can make: the test is that CA. It builds
 * the certset a refresh would build (tests/unit/testserver.h) and dials with
 * csql__dial_socket: a wrong CN (legacy mode), a wrong SAN (CAS mode), a
 * wildcard SAN, a CN with the region in it, an expired and a not-yet-valid
 * certificate, and TLS 1.2 with a good certificate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "csql/csql.h"
#include "dial_socket.h"
#include "support.h"
#include "testcerts.h"
#include "testserver.h"
#include "util/clock.h"

#define TOKEN "static-token-for-mitm-tests"
#define REGION "us-central1"
#define I_PG "p:" REGION ":pg"
#define I_OTHER "p:" REGION ":other"
#define I_CAS "p:" REGION ":cas"
#define CAS_DNS "cas.p." REGION ".sql.goog"

static csqlt_emulator g_em;
static uint16_t g_emu_port;   /* the emulator's server-side proxy port */
static char g_ip_pg[32], g_ip_other[32], g_ip_cas[32], g_ip_b[32];

/* ---------------- an echo backend behind the emulator ---------------- */

static int g_echo_fd = -1;
static int g_echo_port;
static atomic_bool g_echo_stop;
static pthread_t g_echo_thread;

static void *echo_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_echo_stop)) {
        struct pollfd p = {g_echo_fd, POLLIN, 0};
        if (poll(&p, 1, 100) != 1) {
            continue;
        }
        int c = accept(g_echo_fd, NULL, NULL);
        if (c < 0) {
            continue;
        }
        char buf[4096];
        for (int i = 0; i < 1000; i++) {
            struct pollfd q = {c, POLLIN, 0};
            ssize_t n = poll(&q, 1, 5000) == 1 ? read(c, buf, sizeof(buf)) : 0;
            if (n <= 0 || write(c, buf, (size_t)n) != n) {
                break;
            }
        }
        close(c);
    }
    return NULL;
}

static int listen_on(const char *ip, int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || inet_pton(AF_INET, ip, &sa.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* ---------------- fixtures ---------------- */

static csqlt_cert g_evil_ca;     /* the attacker's own CA */
static csqlt_cert g_trusted_ca;  /* part B: a CA csql trusts */
static csqlt_cert g_client_ca;   /* part B: signs csql's client certificate */
static csqlt_cert g_client;
static char *g_trusted_pem;

static int group_setup(void **state)
{
    (void)state;
    g_echo_fd = listen_on("127.0.0.1", &g_echo_port);
    if (g_echo_fd < 0 || pthread_create(&g_echo_thread, NULL, echo_main, NULL) != 0) {
        return -1;
    }
    csqlt_unique_ip(31, g_ip_pg, sizeof(g_ip_pg));
    csqlt_unique_ip(32, g_ip_other, sizeof(g_ip_other));
    csqlt_unique_ip(33, g_ip_cas, sizeof(g_ip_cas));
    csqlt_unique_ip(34, g_ip_b, sizeof(g_ip_b));
    g_emu_port = csqlt_unused_port();
    char port[16];
    char specs[3][256];
    snprintf(port, sizeof(port), "%u", (unsigned)g_emu_port);
    snprintf(specs[0], sizeof(specs[0]), I_PG "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:%d",
             g_ip_pg, g_echo_port);
    snprintf(specs[1], sizeof(specs[1]),
             I_OTHER "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:%d", g_ip_other,
             g_echo_port);
    snprintf(specs[2], sizeof(specs[2]),
             I_CAS "?version=POSTGRES_15&public-ip=%s&ca-mode=cas&backend=127.0.0.1:%d", g_ip_cas,
             g_echo_port);
    const char *argv[] = {"--static-token", TOKEN,     "--server-port", port,
                          "--instance",     specs[0],  "--instance",    specs[1],
                          "--instance",     specs[2],  NULL};
    if (csqlt_emulator_start(&g_em, 0, argv) != 0) {
        fprintf(stderr, "cannot start csql-emulator ($CSQL_EMULATOR)\n");
        return -1;
    }
    csqlt_make_ca(&g_evil_ca, "Google Cloud SQL Server CA");
    csqlt_make_ca(&g_trusted_ca, "trusted server CA");
    csqlt_make_ca(&g_client_ca, "client signer");
    csqlt_make_leaf(&g_client, &g_client_ca, "Google Cloud SQL Client", NULL);
    g_trusted_pem = csqlt_pem(g_trusted_ca.cert, NULL, NULL);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    csqlt_cert_free(&g_evil_ca);
    csqlt_cert_free(&g_trusted_ca);
    csqlt_cert_free(&g_client_ca);
    csqlt_cert_free(&g_client);
    free(g_trusted_pem);
    int st = csqlt_emulator_stop(&g_em);
    atomic_store(&g_echo_stop, true);
    pthread_join(g_echo_thread, NULL);
    close(g_echo_fd);
    return st == 0 ? 0 : -1;
}

/* ---------------- helpers ---------------- */

static csql_dialer *dialer_for_port(uint16_t port)
{
    csql_config *cfg = NULL;
    csql_dialer *d = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, g_em.url), 0);
    assert_int_equal(csql_config_set_token(cfg, TOKEN), 0);
    assert_int_equal(csql_config_set_server_port(cfg, port), 0);
    assert_int_equal(csql_config_set_dial_timeout_ms(cfg, 10000), 0);
    assert_int_equal(csql_dialer_new(&d, cfg), 0);
    csql_config_free(cfg);
    return d;
}

static void assert_tls_refusal(int rc, int want_code, const char *reason1, const char *reason2)
{
    const csql_error *e = csql_error_last();
    if (getenv("CSQL_TEST_VERBOSE") != NULL) {
        print_message("refused: %s\n", e->message);
    }
    if (rc != want_code) {
        fail_msg("want %s, got %d (%s): %s", csql_strerror(want_code), rc, csql_strerror(rc),
                 e->message);
    }
    assert_int_equal(csql_err_category_of(rc), CSQL_CAT_TLS);
    assert_int_equal(e->code, rc);
    if (reason1 != NULL && strstr(e->message, reason1) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", e->message, reason1);
    }
    if (reason2 != NULL && strstr(e->message, reason2) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", e->message, reason2);
    }
}

/* Records whether the impostor ever got application bytes (it must not). */
static atomic_int g_impostor_reads;

static void impostor_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    (void)arg;
    unsigned char buf[256];
    size_t n = 0;
    if (SSL_read_ex(ssl, buf, sizeof(buf), &n) == 1 && n > 0) {
        atomic_fetch_add(&g_impostor_reads, 1);
    }
}

/* Dial `instance` through a dialer whose server port is the impostor's; expect a refusal. */
static void dial_impostor(const csqlt_server_opts *o, const char *instance, int want_code,
                          const char *reason1, const char *reason2)
{
    csqlt_server srv;
    csqlt_server_opts so = *o;
    so.handler = impostor_handler;
    so.connections = 2;
    csqlt_server_start(&srv, &so);
    atomic_store(&g_impostor_reads, 0);
    csql_dialer *d = dialer_for_port(srv.port);
    csql_conn *conn = NULL;
    csql_error_clear();
    int rc = csql_dial(d, instance, NULL, &conn);
    assert_null(conn);
    assert_tls_refusal(rc, want_code, reason1, reason2);
    /* The dialer is not talked into trusting it later either. */
    rc = csql_dial(d, instance, NULL, &conn);
    assert_null(conn);
    assert_int_equal(csql_err_category_of(rc), CSQL_CAT_TLS);
    csql_dialer_free(d);
    csqlt_server_stop(&srv);
    assert_int_equal(atomic_load(&g_impostor_reads), 0);
    assert_int_equal(atomic_load(&srv.handshakes), 0);
}

/* ---------------- part A: the public dial path, real refresh ---------------- */

/* Control: the genuine server on the emulator's port works, so refusals below are about the impostor. */
static void test_genuine_server_accepted(void **state)
{
    (void)state;
    csql_dialer *d = dialer_for_port(g_emu_port);
    const char *instances[] = {I_PG, I_CAS};
    for (size_t i = 0; i < 2; i++) {
        csql_conn *conn = NULL;
        int rc = csql_dial(d, instances[i], NULL, &conn);
        if (rc != 0) {
            fail_msg("dial %s: %s", instances[i], csql_error_last()->message);
        }
        assert_int_equal(csql_conn_write_all(conn, "ping", 4), 0);
        char buf[4];
        size_t got = 0;
        for (int k = 0; k < 10 && got < 4; k++) {
            ssize_t n = csql_conn_read(conn, buf + got, 4 - got);
            assert_true(n > 0);
            got += (size_t)n;
        }
        assert_memory_equal(buf, "ping", 4);
        csql_conn_close(conn);
    }
    csql_dialer_free(d);
}

static void test_other_ca(void **state)
{
    (void)state;
    csqlt_cert leaf;
    csqlt_make_leaf(&leaf, &g_evil_ca, "p:pg", NULL);
    csqlt_server_opts o = {.cert = &leaf, .chain = g_evil_ca.cert, .bind_addr = g_ip_pg};
    dial_impostor(&o, I_PG, CSQL_ERR_TLS_VERIFY, "server certificate rejected",
                  "self-signed certificate in certificate chain");
    csqlt_cert_free(&leaf);
}

static void test_other_ca_cas(void **state)
{
    (void)state;
    csqlt_cert leaf;
    csqlt_make_leaf(&leaf, &g_evil_ca, CAS_DNS, CAS_DNS);
    csqlt_server_opts o = {.cert = &leaf, .bind_addr = g_ip_cas};
    dial_impostor(&o, I_CAS, CSQL_ERR_TLS_VERIFY, "server certificate rejected",
                  "unable to get local issuer certificate");
    csqlt_cert_free(&leaf);
}

static void test_self_signed_with_right_name(void **state)
{
    (void)state;
    csqlt_cert self;
    csqlt_cert_opts so = {.cn = "p:pg"};
    csqlt_make_cert(&self, NULL, &so);
    csqlt_server_opts o = {.cert = &self, .bind_addr = g_ip_pg};
    dial_impostor(&o, I_PG, CSQL_ERR_TLS_VERIFY, "server certificate rejected", "self-signed");
    csqlt_cert_free(&self);
}

/* POST generateEphemeralCert for instance with our own key, as any Cloud SQL Client could. */
static char *ephemeral_cert_for(const char *instance, EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(bio, key), 1);
    char *pub = NULL;
    long n = BIO_get_mem_data(bio, &pub);
    json_t *req = json_pack("{s:s%}", "public_key", pub, (size_t)n);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    BIO_free(bio);
    char url[512];
    const char *inst = strrchr(instance, ':') + 1;
    snprintf(url, sizeof(url), "%s/sql/v1beta4/projects/p/instances/%s:generateEphemeralCert",
             g_em.url, inst);
    long status = 0;
    char *resp = NULL;
    assert_int_equal(csqlt_http("POST", url, TOKEN, body, &status, &resp), 0);
    free(body);
    assert_int_equal(status, 200);
    json_t *root = json_loads(resp, 0, NULL);
    free(resp);
    const char *pem = json_string_value(json_object_get(json_object_get(root, "ephemeralCert"),
                                                        "cert"));
    assert_non_null(pem);
    char *out = strdup(pem);
    json_decref(root);
    return out;
}

/*
 * Another user of the project (or a stolen client key) holds a certificate
 * the emulator itself issued: a client certificate, from the signing CA,
 * which csql must never accept as the server's.
 */
static void test_issued_client_certificate_as_server(void **state)
{
    (void)state;
    csqlt_cert stolen = {EVP_RSA_gen(2048), NULL};
    assert_non_null(stolen.key);
    char *pem = ephemeral_cert_for(I_PG, stolen.key);
    BIO *bio = BIO_new_mem_buf(pem, -1);
    stolen.cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    free(pem);
    assert_non_null(stolen.cert);
    csqlt_server_opts o = {.cert = &stolen, .bind_addr = g_ip_pg};
    dial_impostor(&o, I_PG, CSQL_ERR_TLS_VERIFY, "server certificate rejected", "issuer");
    csqlt_cert_free(&stolen);
}

/* ---- a TCP relay to another instance's genuine server ---- */

typedef struct relay {
    int lfd;
    int port;
    char target_ip[32];
    uint16_t target_port;
    pthread_t thread;
    atomic_int relayed; /* connections carried */
} relay;

static void pump(int a, int b)
{
    char buf[16384];
    for (int i = 0; i < 10000; i++) {
        struct pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
        if (poll(p, 2, 5000) <= 0) {
            return;
        }
        for (int k = 0; k < 2; k++) {
            if (p[k].revents == 0) {
                continue;
            }
            int from = k == 0 ? a : b;
            int to = k == 0 ? b : a;
            ssize_t n = read(from, buf, sizeof(buf));
            if (n <= 0 || write(to, buf, (size_t)n) != n) {
                return;
            }
        }
    }
}

static void *relay_main(void *arg)
{
    relay *r = arg;
    for (int i = 0; i < 2; i++) {
        struct pollfd p = {r->lfd, POLLIN, 0};
        if (poll(&p, 1, 15000) != 1) {
            return NULL;
        }
        int c = accept(r->lfd, NULL, NULL);
        if (c < 0) {
            return NULL;
        }
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(r->target_port)};
        inet_pton(AF_INET, r->target_ip, &sa.sin_addr);
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            atomic_fetch_add(&r->relayed, 1);
            pump(c, s);
        }
        if (s >= 0) {
            close(s);
        }
        close(c);
    }
    return NULL;
}

/* Traffic for pg is redirected to the genuine server of another instance of the same project. */
static void test_relay_to_another_instance(void **state)
{
    (void)state;
    relay r;
    memset(&r, 0, sizeof(r));
    r.lfd = listen_on(g_ip_pg, &r.port);
    assert_true(r.lfd >= 0);
    snprintf(r.target_ip, sizeof(r.target_ip), "%s", g_ip_other);
    r.target_port = g_emu_port;
    assert_int_equal(pthread_create(&r.thread, NULL, relay_main, &r), 0);

    csql_dialer *d = dialer_for_port((uint16_t)r.port);
    csql_conn *conn = NULL;
    csql_error_clear();
    int rc = csql_dial(d, I_PG, NULL, &conn);
    assert_null(conn);
    assert_tls_refusal(rc, CSQL_ERR_TLS_VERIFY, "server certificate rejected", "certificate");
    csql_dialer_free(d);
    shutdown(r.lfd, SHUT_RDWR);
    pthread_join(r.thread, NULL);
    close(r.lfd);
    assert_true(atomic_load(&r.relayed) >= 1);
}

static void test_tls12_only_impostor(void **state)
{
    (void)state;
    csqlt_cert leaf;
    csqlt_make_leaf(&leaf, &g_evil_ca, "p:pg", NULL);
    csqlt_server_opts o = {.cert = &leaf, .bind_addr = g_ip_pg, .max_version = TLS1_2_VERSION};
    dial_impostor(&o, I_PG, CSQL_ERR_TLS_HANDSHAKE, "protocol version", "TLS 1.3");
    csqlt_cert_free(&leaf);
}

/* A server that answers in plaintext (no TLS at all): never a silent downgrade. */
typedef struct plain {
    int lfd;
    int port;
    pthread_t thread;
    atomic_int got_bytes;
} plain;

static void *plain_main(void *arg)
{
    plain *p = arg;
    struct pollfd pl = {p->lfd, POLLIN, 0};
    if (poll(&pl, 1, 15000) != 1) {
        return NULL;
    }
    int c = accept(p->lfd, NULL, NULL);
    if (c < 0) {
        return NULL;
    }
    char buf[1024];
    struct pollfd q = {c, POLLIN, 0};
    if (poll(&q, 1, 5000) == 1 && read(c, buf, sizeof(buf)) > 0) {
        atomic_fetch_add(&p->got_bytes, 1);
    }
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    if (write(c, answer, sizeof(answer) - 1) < 0) {
        /* the client may be gone already */
    }
    usleep(200 * 1000);
    close(c);
    return NULL;
}

static void test_plaintext_impostor(void **state)
{
    (void)state;
    plain p;
    memset(&p, 0, sizeof(p));
    p.lfd = listen_on(g_ip_pg, &p.port);
    assert_true(p.lfd >= 0);
    assert_int_equal(pthread_create(&p.thread, NULL, plain_main, &p), 0);
    csql_dialer *d = dialer_for_port((uint16_t)p.port);
    csql_conn *conn = NULL;
    csql_error_clear();
    int rc = csql_dial(d, I_PG, NULL, &conn);
    assert_null(conn);
    assert_tls_refusal(rc, CSQL_ERR_TLS_HANDSHAKE, "TLS handshake", "wrong version number");
    csql_dialer_free(d);
    shutdown(p.lfd, SHUT_RDWR);
    pthread_join(p.thread, NULL);
    close(p.lfd);
    assert_int_equal(atomic_load(&p.got_bytes), 1); /* only a ClientHello went out */
}

/* ---------------- part B: certificates from a trusted CA naming something else ---------------- */

/* Dial instance at g_ip_b with a certset trusting g_trusted_ca; dns may be NULL (legacy). */
static int dial_trusting(const csqlt_server_opts *o, const char *instance, const char *dns)
{
    csqlt_server srv;
    csqlt_server_opts so = *o;
    so.bind_addr = g_ip_b;
    so.client_ca = g_client_ca.cert;
    so.handler = impostor_handler;
    csqlt_server_start(&srv, &so);
    atomic_store(&g_impostor_reads, 0);

    csql__certset cs;
    csqlt_certset_init(&cs, &g_client, g_trusted_pem, dns, 0);
    csql__instance_name name;
    assert_int_equal(csql__instance_name_parse(instance, &name), 0);
    csql__dial_params p = {
        .host = g_ip_b,
        .port = srv.port,
        .keepalive_s = 30,
        .user_agent = "csql-test-mitm",
        .deadline_ms = csql__mono_ms() + 10000,
    };
    int fd = -1;
    SSL *ssl = NULL;
    csql_error_clear();
    int rc = csql__dial_socket(&cs, &name, &p, &fd, &ssl);
    if (rc == 0) {
        SSL_write(ssl, "x", 1); /* lets the server's handler finish */
        SSL_free(ssl);
        close(fd);
    }
    csqlt_certset_dispose(&cs);
    csqlt_server_stop(&srv);
    if (rc != 0) {
        assert_int_equal(atomic_load(&g_impostor_reads), 0);
    }
    return rc;
}

static void expect_refused(csqlt_cert *leaf, int max_version, const char *instance,
                           const char *dns, int want, const char *r1, const char *r2)
{
    csqlt_server_opts o = {.cert = leaf, .max_version = max_version};
    int rc = dial_trusting(&o, instance, dns);
    assert_tls_refusal(rc, want, r1, r2);
    csqlt_cert_free(leaf);
}

/* Control for part B: the right certificate is accepted, legacy and CAS. */
static void test_trusted_right_names_accepted(void **state)
{
    (void)state;
    csqlt_cert legacy, cas;
    csqlt_make_leaf(&legacy, &g_trusted_ca, "p:i", NULL);
    csqlt_make_leaf(&cas, &g_trusted_ca, "cn-does-not-matter", CAS_DNS ".");
    csqlt_server_opts o1 = {.cert = &legacy};
    csqlt_server_opts o2 = {.cert = &cas};
    assert_int_equal(dial_trusting(&o1, "p:" REGION ":i", NULL), 0);
    assert_int_equal(dial_trusting(&o2, I_CAS, CAS_DNS), 0);
    csqlt_cert_free(&legacy);
    csqlt_cert_free(&cas);
}

static void test_wrong_cn_legacy(void **state)
{
    (void)state;
    csqlt_cert leaf;
    csqlt_make_leaf(&leaf, &g_trusted_ca, "p:other", NULL);
    expect_refused(&leaf, 0, "p:" REGION ":i", NULL, CSQL_ERR_TLS_VERIFY, "server name mismatch",
                   "CN \"p:other\" is not \"p:i\"");
}

static void test_cn_with_region_refused(void **state)
{
    (void)state;
    csqlt_cert leaf;
    csqlt_make_leaf(&leaf, &g_trusted_ca, "p:" REGION ":i", NULL);
    expect_refused(&leaf, 0, "p:" REGION ":i", NULL, CSQL_ERR_TLS_VERIFY, "server name mismatch",
                   "is not \"p:i\"");
}

static void test_wrong_san_cas(void **state)
{
    (void)state;
    csqlt_cert leaf;
    csqlt_make_leaf(&leaf, &g_trusted_ca, "other.p." REGION ".sql.goog",
                    "other.p." REGION ".sql.goog");
    expect_refused(&leaf, 0, I_CAS, CAS_DNS, CSQL_ERR_TLS_VERIFY, "server name mismatch",
                   "no DNS SAN \"" CAS_DNS "\"");
}

static void test_wildcard_san_refused(void **state)
{
    (void)state;
    csqlt_cert leaf;
    csqlt_make_leaf(&leaf, &g_trusted_ca, "*.p." REGION ".sql.goog", "*.p." REGION ".sql.goog");
    expect_refused(&leaf, 0, I_CAS, CAS_DNS, CSQL_ERR_TLS_VERIFY, "server name mismatch",
                   "no DNS SAN");
}

static void test_expired_server_certificate(void **state)
{
    (void)state;
    csqlt_cert leaf;
    csqlt_cert_opts o = {.cn = "p:i", .not_before_s = -7200, .not_after_s = -60};
    csqlt_make_cert(&leaf, &g_trusted_ca, &o);
    expect_refused(&leaf, 0, "p:" REGION ":i", NULL, CSQL_ERR_TLS_VERIFY,
                   "server certificate rejected", "certificate has expired");
}

static void test_not_yet_valid_server_certificate(void **state)
{
    (void)state;
    csqlt_cert leaf;
    csqlt_cert_opts o = {.cn = "p:i", .not_before_s = 3600, .not_after_s = 7200};
    csqlt_make_cert(&leaf, &g_trusted_ca, &o);
    expect_refused(&leaf, 0, "p:" REGION ":i", NULL, CSQL_ERR_TLS_VERIFY,
                   "server certificate rejected", "not yet valid");
}

static void test_tls12_with_good_certificate(void **state)
{
    (void)state;
    csqlt_cert leaf;
    csqlt_make_leaf(&leaf, &g_trusted_ca, "p:i", NULL);
    expect_refused(&leaf, TLS1_2_VERSION, "p:" REGION ":i", NULL, CSQL_ERR_TLS_HANDSHAKE,
                   "protocol version", "TLS 1.3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_genuine_server_accepted),
        cmocka_unit_test(test_other_ca),
        cmocka_unit_test(test_other_ca_cas),
        cmocka_unit_test(test_self_signed_with_right_name),
        cmocka_unit_test(test_issued_client_certificate_as_server),
        cmocka_unit_test(test_relay_to_another_instance),
        cmocka_unit_test(test_tls12_only_impostor),
        cmocka_unit_test(test_plaintext_impostor),
        cmocka_unit_test(test_trusted_right_names_accepted),
        cmocka_unit_test(test_wrong_cn_legacy),
        cmocka_unit_test(test_cn_with_region_refused),
        cmocka_unit_test(test_wrong_san_cas),
        cmocka_unit_test(test_wildcard_san_refused),
        cmocka_unit_test(test_expired_server_certificate),
        cmocka_unit_test(test_not_yet_valid_server_certificate),
        cmocka_unit_test(test_tls12_with_good_certificate),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
