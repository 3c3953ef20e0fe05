/*
 * Allocation failures on the whole dial path against csql-emulator: config,
 * dialer, credentials, a real refresh (both Admin API calls), the TLS
 * handshake with the server-side proxy, the connection and its teardown.
 * Every allocation csql makes (any thread) fails in turn, then every one of
 * libcurl and jansson, then, with a stride, all of them and OpenSSL's too. Each failure must surface as a
 * clean error with a message from the call that hit it (CSQL_ERR_NOMEM for
 * csql's own allocations), never crash or leak (asan preset), and the next
 * run, with memory back, must work.
 * The LAZY strategy and a caller-supplied RSA key keep every run short and on
 * the calling thread as far as csql allows.
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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "csql/csql.h"
#include "failalloc.h"
#include "support.h"

#define TOKEN "static-token-for-failalloc-dial"
#define I_PG "p:us-central1:pg"

static csqlt_emulator g_em;
static uint16_t g_port;
static char *g_key_pem;

/* ---------------- echo backend ---------------- */

static int g_echo_fd = -1;
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
        char buf[1024];
        for (int i = 0; c >= 0 && i < 100; i++) {
            struct pollfd q = {c, POLLIN, 0};
            ssize_t n = poll(&q, 1, 5000) == 1 ? read(c, buf, sizeof(buf)) : 0;
            if (n <= 0 || write(c, buf, (size_t)n) != n) {
                break;
            }
        }
        if (c >= 0) {
            close(c);
        }
    }
    return NULL;
}

static int local_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    return getsockname(fd, (struct sockaddr *)&sa, &len) == 0 ? ntohs(sa.sin_port) : -1;
}

static int group_setup(void **state)
{
    (void)state;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    g_echo_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (g_echo_fd < 0 || bind(g_echo_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(g_echo_fd, 8) != 0 || pthread_create(&g_echo_thread, NULL, echo_main, NULL) != 0) {
        return -1;
    }
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    if (probe < 0 || bind(probe, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        return -1;
    }
    g_port = (uint16_t)local_port(probe);
    close(probe);

    char ip[32], spec[256], port[16];
    csqlt_unique_ip(51, ip, sizeof(ip));
    snprintf(spec, sizeof(spec), I_PG "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:%d",
             ip, local_port(g_echo_fd));
    snprintf(port, sizeof(port), "%u", (unsigned)g_port);
    const char *argv[] = {"--static-token", TOKEN, "--server-port", port, "--instance", spec,
                          NULL};
    if (csqlt_emulator_start(&g_em, 0, argv) != 0) {
        fprintf(stderr, "cannot start csql-emulator ($CSQL_EMULATOR)\n");
        return -1;
    }
    EVP_PKEY *key = EVP_RSA_gen(2048);
    BIO *bio = BIO_new(BIO_s_mem());
    if (key == NULL || bio == NULL ||
        PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1) {
        return -1;
    }
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    g_key_pem = calloc(1, (size_t)n + 1);
    memcpy(g_key_pem, data, (size_t)n);
    BIO_free(bio);
    EVP_PKEY_free(key);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_key_pem);
    int st = csqlt_emulator_stop(&g_em);
    atomic_store(&g_echo_stop, true);
    pthread_join(g_echo_thread, NULL);
    close(g_echo_fd);
    return st == 0 ? 0 : -1;
}

/* ---------------- the scenario ---------------- */

typedef struct run_state {
    int step;           /* where it failed: 1 config, 2 dialer, 3 dial, 4 I/O */
    char msg[512];
} run_state;

static int fail_at(run_state *s, int step, int rc)
{
    s->step = step;
    snprintf(s->msg, sizeof(s->msg), "%s", csql_error_last()->message);
    return rc;
}

static int run(void *arg)
{
    run_state *s = arg;
    s->step = 0;
    s->msg[0] = '\0';
    csql_config *cfg = NULL;
    csql_dialer *d = NULL;
    csql_conn *conn = NULL;
    int rc = csql_config_new(&cfg);
    if (rc == 0) {
        rc = csql_config_set_admin_api_endpoint(cfg, g_em.url);
    }
    if (rc == 0) {
        rc = csql_config_set_token(cfg, TOKEN);
    }
    if (rc == 0) {
        rc = csql_config_set_server_port(cfg, g_port);
    }
    if (rc == 0) {
        rc = csql_config_set_refresh_strategy(cfg, CSQL_REFRESH_LAZY);
    }
    if (rc == 0) {
        rc = csql_config_set_rsa_key_pem(cfg, g_key_pem, strlen(g_key_pem));
    }
    if (rc == 0) {
        rc = csql_config_set_dial_timeout_ms(cfg, 10000);
    }
    if (rc != 0) {
        csql_config_free(cfg);
        return fail_at(s, 1, rc);
    }
    rc = csql_dialer_new(&d, cfg);
    csql_config_free(cfg);
    if (rc != 0) {
        return fail_at(s, 2, rc);
    }
    rc = csql_dial(d, I_PG, NULL, &conn);
    if (rc != 0) {
        fail_at(s, 3, rc);
    } else {
        char buf[4] = {0};
        rc = csql_conn_write_all(conn, "ping", 4);
        ssize_t n = rc == 0 ? csql_conn_read(conn, buf, sizeof(buf)) : rc;
        if (rc != 0 || n <= 0) {
            rc = fail_at(s, 4, rc != 0 ? rc : (n < 0 ? (int)n : CSQL_ERR_IO));
        }
        csql_conn_close(conn);
    }
    csql_dialer_free(d);
    return rc;
}

/* Which codes an injected failure may surface as, by source. */
static int g_allowed_extra[6];
static long g_failed_runs;

static void check(void *arg, int rc, int injected)
{
    run_state *s = arg;
    if (rc == 0) {
        return;
    }
    g_failed_runs++;
    if (!injected) {
        fail_msg("dial failed without an injected failure (step %d): %s", s->step, s->msg);
    }
    if (strlen(s->msg) <= strlen("csql: ")) {
        fail_msg("error %d (%s) at step %d without a message", rc, csql_strerror(rc), s->step);
    }
    if (rc == CSQL_ERR_NOMEM) {
        return;
    }
    for (size_t i = 0; i < sizeof(g_allowed_extra) / sizeof(g_allowed_extra[0]); i++) {
        if (g_allowed_extra[i] != 0 && rc == g_allowed_extra[i]) {
            return;
        }
    }
    fail_msg("an allocation failure (source %d) at step %d surfaced as %d (%s): %s", injected,
             s->step, rc, csql_strerror(rc), s->msg);
}

static void test_every_csql_allocation(void **state)
{
    (void)state;
    run_state s;
    memset(&s, 0, sizeof(s));
    memset(g_allowed_extra, 0, sizeof(g_allowed_extra));
    g_failed_runs = 0;
    csqlt_failalloc_only(CSQLT_FA_BIT(CSQLT_FA_CSQL));
    long n = csqlt_failalloc_each_global(run, check, &s, 20000);
    csqlt_failalloc_only(CSQLT_FA_ALL);
    assert_true(n > 0);
    print_message("dial path: %ld csql allocations, each failed in turn (%ld runs failed)\n", n,
                  g_failed_runs);
}

/* libcurl's and jansson's allocations too (HTTP transfers, JSON answers), each in turn. */
static void test_every_curl_and_jansson_allocation(void **state)
{
    (void)state;
    run_state s;
    memset(&s, 0, sizeof(s));
    memset(g_allowed_extra, 0, sizeof(g_allowed_extra));
    /* jansson's lexer may drop a byte instead of failing (docs/SECURITY.md): the damaged
     * answer is then refused as not JSON or as a bad field. */
    g_allowed_extra[0] = CSQL_ERR_API_RESPONSE;
    /* A transfer that runs out of memory inside libcurl is a failed request. */
    g_allowed_extra[1] = CSQL_ERR_API;
    g_failed_runs = 0;
    csqlt_failalloc_only(CSQLT_FA_BIT(CSQLT_FA_CURL) | CSQLT_FA_BIT(CSQLT_FA_JANSSON));
    long n = csqlt_failalloc_each_global(run, check, &s, 20000);
    csqlt_failalloc_only(CSQLT_FA_ALL);
    assert_true(n > 0);
    print_message("dial path: %ld libcurl and jansson allocations, each failed in turn (%ld runs "
                  "failed)\n",
                  n, g_failed_runs);
}

/*
 * jansson and OpenSSL allocations too (thousands: the handshake, PEM and
 * X.509 parsing), every stride-th one so the test stays short. Out of
 * memory inside OpenSSL or jansson may show as the failing step's own error
 * (a handshake, a certificate that "does not parse", a body that is "not
 * JSON"), but always as a clean error with a message.
 */
static void test_library_allocations_strided(void **state)
{
    (void)state;
    run_state s;
    memset(&s, 0, sizeof(s));
    g_allowed_extra[0] = CSQL_ERR_API_RESPONSE;
    g_allowed_extra[1] = CSQL_ERR_TLS_HANDSHAKE;
    g_allowed_extra[2] = CSQL_ERR_INTERNAL;
    g_allowed_extra[3] = CSQL_ERR_TLS_IO;
    /* The check of a caller's key (sign, then verify) reports a failed allocation as halves
     * that do not match: the key then reads as a bad key at csql_dialer_new. */
    g_allowed_extra[4] = CSQL_ERR_BAD_CONFIG;
    /* Verification that runs out of memory fails closed: the genuine server is refused
     * ("self-signed certificate in certificate chain"), never a wrong one accepted. */
    g_allowed_extra[5] = CSQL_ERR_TLS_VERIFY;
    g_failed_runs = 0;
    csqlt_failalloc_arm_global(1L << 40);
    assert_int_equal(run(&s), 0);
    long total = csqlt_failalloc_disarm();
    long stride = total / 150 + 1;
    long runs = 0;
    for (long n = 0; n < total; n += stride, runs++) {
        csqlt_failalloc_arm_global(n);
        int rc = run(&s);
        csqlt_failalloc_disarm();
        check(&s, rc, csqlt_failalloc_injected());
    }
    /* Memory is back: the next dial works. */
    assert_int_equal(run(&s), 0);
    print_message("dial path: %ld allocations in all; every %ld-th failed (%ld runs, %ld failed)\n",
                  total, stride, runs, g_failed_runs);
}

static int reset_mask(void **state)
{
    (void)state;
    csqlt_failalloc_disarm();
    csqlt_failalloc_only(CSQLT_FA_ALL);
    return 0;
}

int main(void)
{
    if (csqlt_failalloc_install() != 0) {
        fprintf(stderr, "cannot install the OpenSSL allocation hooks\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_every_csql_allocation, reset_mask),
        cmocka_unit_test_teardown(test_every_curl_and_jansson_allocation, reset_mask),
        cmocka_unit_test_teardown(test_library_allocations_strided, reset_mask),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
