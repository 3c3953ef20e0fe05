/*
 * csql__refresh_once against csql-emulator: a real refresh and a TLS 1.3
 * handshake with the emulator's server-side proxy, concurrency of the two
 * Admin API calls, retries (5xx, 429 with Retry-After), every error path,
 * deadlines, and IAM authn rules (REFERENCE §2, §5, §6).
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
#include <openssl/ssl.h>

#include "certset.h"
#include "config_internal.h"
#include "credentials/credentials.h"
#include "csql/config.h"
#include "csql/errors.h"
#include "instance_name.h"
#include "keys.h"
#include "log.h"
#include "refresh.h"
#include "support.h"
#include "tls.h"
#include "util/clock.h"

#define GOOD_TOKEN "good-token-for-refresh-tests"
#define PG "p:us-central1:pg"
#define SS "p:us-central1:ss"
#define CAS "google.com:p:us-central1:cas"

/* ---- an echo server standing in for the database ---- */

static int g_echo_fd = -1;
static int g_echo_port;
static atomic_bool g_echo_stop;
static pthread_t g_echo_thread;

static void echo_one(int fd)
{
    char buf[4096];
    for (int i = 0; i < 1000; i++) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) <= 0) {
            break;
        }
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0 || write(fd, buf, (size_t)n) != n) {
            break;
        }
    }
    close(fd);
}

static void *echo_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_echo_stop)) {
        struct pollfd p = {g_echo_fd, POLLIN, 0};
        if (poll(&p, 1, 100) == 1) {
            int c = accept(g_echo_fd, NULL, NULL);
            if (c >= 0) {
                echo_one(c);
            }
        }
    }
    return NULL;
}

static int echo_start(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    g_echo_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (g_echo_fd < 0 || bind(g_echo_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(g_echo_fd, 8) != 0 || getsockname(g_echo_fd, (struct sockaddr *)&sa, &len) != 0) {
        return -1;
    }
    g_echo_port = ntohs(sa.sin_port);
    return pthread_create(&g_echo_thread, NULL, echo_main, NULL);
}

static void echo_stop(void)
{
    atomic_store(&g_echo_stop, true);
    pthread_join(g_echo_thread, NULL);
    close(g_echo_fd);
}

/* ---- the refresh environment: config, credentials, key, logger ---- */

typedef struct env {
    csql_config *cfg;
    csql__creds *creds;
    csql__logger log;
    csql__refresh_ctx ctx;
} env;

static csqlt_emulator g_em;
static csql__keypair *g_keys;
static char g_ip_pg[32];
static char g_ip_ss[32];
static char g_ip_cas[32];
static env g_env;         /* static good token */
static int64_t g_login_expiry;

/* Every log line is checked for the token and collected for assertions. */
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_log[65536];
static size_t g_log_len;

static void log_fn(csql_log_level level, const char *line, void *userdata)
{
    (void)level;
    (void)userdata;
    if (strstr(line, GOOD_TOKEN) != NULL || strstr(line, "Bearer") != NULL) {
        fprintf(stderr, "SECRET IN LOG: %s\n", line);
        abort();
    }
    if (getenv("CSQL_TEST_VERBOSE")) {
        fprintf(stderr, "log: %s\n", line);
    }
    pthread_mutex_lock(&g_log_mu);
    size_t n = strlen(line);
    if (g_log_len + n + 2 < sizeof(g_log)) {
        memcpy(g_log + g_log_len, line, n);
        g_log_len += n;
        g_log[g_log_len++] = '\n';
        g_log[g_log_len] = '\0';
    }
    pthread_mutex_unlock(&g_log_mu);
}

static void log_reset(void)
{
    pthread_mutex_lock(&g_log_mu);
    g_log_len = 0;
    g_log[0] = '\0';
    pthread_mutex_unlock(&g_log_mu);
}

/* Admin token: static; login token: expires 10 minutes from now. */
static int token_cb(csql_token_kind kind, char *buf, size_t buflen, int64_t *expires_at,
                    void *userdata)
{
    (void)userdata;
    snprintf(buf, buflen, "%s", GOOD_TOKEN);
    *expires_at = kind == CSQL_TOKEN_LOGIN ? g_login_expiry : 0;
    return 0;
}

static void env_init(env *e, const char *token, bool callback)
{
    memset(e, 0, sizeof(*e));
    assert_int_equal(csql_config_new(&e->cfg), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(e->cfg, g_em.url), 0);
    if (callback) {
        assert_int_equal(csql_config_set_token_callback(e->cfg, token_cb, NULL), 0);
    } else {
        assert_int_equal(csql_config_set_token(e->cfg, token), 0);
    }
    assert_int_equal(csql_config_set_log(e->cfg, log_fn, NULL, CSQL_LOG_DEBUG), 0);
    assert_int_equal(csql__config_resolve(e->cfg), 0);
    e->log = (csql__logger){log_fn, NULL, CSQL_LOG_DEBUG};
    assert_int_equal(csql__creds_new(e->cfg, &e->log, &e->creds), 0);
    e->ctx = (csql__refresh_ctx){e->cfg, e->creds, g_keys, &e->log, "csql/test refresh"};
}

static void env_dispose(env *e)
{
    csql__creds_free(e->creds);
    csql_config_free(e->cfg);
    memset(e, 0, sizeof(*e));
}

static int group_setup(void **state)
{
    (void)state;
    if (echo_start() != 0) {
        return -1;
    }
    char specs[3][512];
    csqlt_unique_ip(11, g_ip_pg, sizeof(g_ip_pg));
    csqlt_unique_ip(12, g_ip_ss, sizeof(g_ip_ss));
    csqlt_unique_ip(13, g_ip_cas, sizeof(g_ip_cas));
    snprintf(specs[0], sizeof(specs[0]),
             PG "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:%d", g_ip_pg, g_echo_port);
    snprintf(specs[1], sizeof(specs[1]),
             SS "?version=SQLSERVER_2019_STANDARD&public-ip=%s&backend=127.0.0.1:%d", g_ip_ss,
             g_echo_port);
    snprintf(specs[2], sizeof(specs[2]),
             CAS "?version=MYSQL_8_0&public-ip=%s&ca-mode=cas&backend=127.0.0.1:%d",
             g_ip_cas, g_echo_port);
    const char *argv[] = {"--static-token", GOOD_TOKEN, "--instance", specs[0], "--instance",
                          specs[1], "--instance", specs[2], NULL};
    if (csqlt_emulator_start(&g_em, 0, argv) != 0) {
        fprintf(stderr, "cannot start csql-emulator ($CSQL_EMULATOR)\n");
        return -1;
    }
    if (csql__keypair_new(NULL, 0, 1, &g_keys) != 0) {
        return -1;
    }
    /* Wait for the key once so that timings below measure only the refresh. */
    EVP_PKEY *pkey = NULL;
    const char *pub = NULL;
    if (csql__keypair_get(g_keys, csql__mono_ms() + 30000, &pkey, &pub) != 0) {
        return -1;
    }
    env_init(&g_env, GOOD_TOKEN, false);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    env_dispose(&g_env);
    csql__keypair_free(g_keys);
    int st = csqlt_emulator_stop(&g_em);
    echo_stop();
    return st == 0 ? 0 : -1;
}

static int test_setup(void **state)
{
    (void)state;
    log_reset();
    csql_error_clear();
    if (csqlt_emulator_admin(&g_em, "DELETE", "/emulator/faults", NULL) != 200 ||
        csqlt_emulator_admin(&g_em, "POST", "/emulator/counters/reset", NULL) != 200) {
        return -1;
    }
    return 0;
}

/* ---- helpers ---- */

static void add_fault(const char *json)
{
    long st = csqlt_emulator_admin(&g_em, "POST", "/emulator/faults", json);
    if (st < 200 || st > 299) {
        fail_msg("emulator refused fault %s (HTTP %ld)", json, st);
    }
}

static long counter(const char *endpoint, const char *instance)
{
    char url[256];
    long status = 0;
    char *body = NULL;
    snprintf(url, sizeof(url), "%s/emulator/counters", g_em.url);
    assert_int_equal(csqlt_http("GET", url, NULL, NULL, &status, &body), 0);
    assert_int_equal(status, 200);
    json_t *root = json_loads(body, 0, NULL);
    free(body);
    assert_non_null(root);
    json_t *ep = json_object_get(json_object_get(root, "endpoints"), endpoint);
    json_t *v = json_object_get(json_object_get(ep, "instances"), instance);
    long n = json_is_integer(v) ? (long)json_integer_value(v) : 0;
    json_decref(root);
    return n;
}

static int refresh(env *e, const char *instance, bool iam, int64_t timeout_ms,
                   csql__certset **out, int64_t *took_ms)
{
    csql__instance_name name;
    assert_int_equal(csql__instance_name_parse(instance, &name), 0);
    int64_t t0 = csql__mono_ms();
    *out = NULL;
    int rc = csql__refresh_once(&e->ctx, &name, iam, t0 + timeout_ms, out);
    if (took_ms) {
        *took_ms = csql__mono_ms() - t0;
    }
    if (rc == 0) {
        assert_non_null(*out);
    } else {
        assert_null(*out);
    }
    return rc;
}

static void assert_msg_contains(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", m, needle);
    }
}

static void assert_log_contains(const char *needle)
{
    pthread_mutex_lock(&g_log_mu);
    bool found = strstr(g_log, needle) != NULL;
    pthread_mutex_unlock(&g_log_mu);
    if (!found) {
        fail_msg("log lacks \"%s\":\n%s", needle, g_log);
    }
}

/*
 * Connect to ip:3307, handshake with cs->ctx, and (echo) see bytes come back
 * from the echo backend, which proves the server accepted the client
 * certificate (TLS 1.3 reports a refusal only on the first read).
 */
static void handshake(const csql__certset *cs, const char *ip, const char *instance, bool echo)
{
    csql__instance_name name;
    char cn[CSQL__INSTANCE_NAME_MAX];
    assert_int_equal(csql__instance_name_parse(instance, &name), 0);
    assert_int_equal(csql__instance_name_cn(&name, cn, sizeof(cn)), 0);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(3307)};
    assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    SSL *ssl = SSL_new(cs->ctx);
    assert_non_null(ssl);
    assert_int_equal(csql__tls_expect(ssl, cs->info.dns_name, cn), 0);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        csql__tls_raise(ssl, CSQL_ERR_TLS_HANDSHAKE, "handshake");
        fail_msg("handshake with %s failed: %s", ip, csql_error_last()->message);
    }
    assert_int_equal(SSL_version(ssl), TLS1_3_VERSION);
    if (!echo) {
        goto done;
    }
    assert_int_equal(SSL_write(ssl, "ping", 4), 4);
    char buf[8] = {0};
    int n = SSL_read(ssl, buf, sizeof(buf));
    if (n != 4) {
        csql__tls_raise(ssl, CSQL_ERR_TLS_IO, "read");
        fail_msg("no echo through %s: %d: %s", ip, n, csql_error_last()->message);
    }
    assert_memory_equal(buf, "ping", 4);
    SSL_shutdown(ssl);
done:
    SSL_free(ssl);
    close(fd);
}

/* ---- tests ---- */

static void test_refresh_and_handshake(void **state)
{
    (void)state;
    csql__certset *cs = NULL;
    int64_t took = 0;
    int rc = refresh(&g_env, PG, false, 10000, &cs, &took);
    if (rc != 0) {
        fail_msg("refresh: %s", csql_error_last()->message);
    }
    assert_int_equal(atomic_load(&cs->refs), 1);
    assert_string_equal(cs->info.database_version, "POSTGRES_15");
    assert_string_equal(cs->info.region, "us-central1");
    assert_string_equal(cs->info.public_ip, g_ip_pg);
    assert_null(cs->info.psc_dns);
    assert_non_null(strstr(cs->info.ca_pem, "BEGIN CERTIFICATE"));
    assert_non_null(cs->ctx);
    int64_t now = csql__wall_s();
    assert_true(cs->expires_at > now + 3000 && cs->expires_at <= now + 3700);
    handshake(cs, g_ip_pg, PG, true);
    assert_int_equal(counter("connectSettings", PG), 1);
    assert_int_equal(counter("generateEphemeralCert", PG), 1);
    assert_log_contains("refresh " PG ": connectSettings attempt 1: HTTP 200");
    assert_log_contains("refresh " PG ": generateEphemeralCert attempt 1: HTTP 200");
    csql__certset_unref(cs);
}

/* (No psc-dns here: it would listen on 127.0.0.1:3307, shared with parallel tests.) */
static void test_cas_domain_scoped(void **state)
{
    (void)state;
    csql__certset *cs = NULL;
    if (refresh(&g_env, CAS, false, 10000, &cs, NULL) != 0) {
        fail_msg("refresh: %s", csql_error_last()->message);
    }
    assert_string_equal(cs->info.database_version, "MYSQL_8_0");
    assert_null(cs->info.psc_dns);
    assert_non_null(cs->info.dns_name);
    assert_non_null(cs->info.server_ca_mode);
    handshake(cs, g_ip_cas, CAS, true);
    /* The project kept its colon: the emulator counted the request for this instance. */
    assert_int_equal(counter("connectSettings", CAS), 1);
    csql__certset_unref(cs);
}

static void test_calls_run_concurrently(void **state)
{
    (void)state;
    add_fault("{\"endpoint\":\"connectSettings\",\"latency_ms\":400,\"count\":1}");
    add_fault("{\"endpoint\":\"generateEphemeralCert\",\"latency_ms\":400,\"count\":1}");
    csql__certset *cs = NULL;
    int64_t took = 0;
    assert_int_equal(refresh(&g_env, PG, false, 10000, &cs, &took), 0);
    csql__certset_unref(cs);
    if (took < 400 || took >= 780) {
        fail_msg("refresh with 400 ms latency on both calls took %lld ms (want ~400, not 800)",
                 (long long)took);
    }
}

static void test_503_twice_then_ok(void **state)
{
    (void)state;
    add_fault("{\"endpoint\":\"connectSettings\",\"status\":503,\"count\":2}");
    csql__certset *cs = NULL;
    int64_t took = 0;
    int rc = refresh(&g_env, PG, false, 30000, &cs, &took);
    if (rc != 0) {
        fail_msg("refresh: %s", csql_error_last()->message);
    }
    csql__certset_unref(cs);
    assert_int_equal(counter("connectSettings", PG), 3);
    assert_int_equal(counter("generateEphemeralCert", PG), 1);
    /* Two backoffs: 324..524 ms, then 524..847 ms. */
    assert_true(took >= 324 + 524 - 20);
    assert_true(took < 524 + 847 + 1500);
    assert_log_contains("retrying connectSettings in");
    assert_log_contains("connectSettings attempt 3: HTTP 200");
}

static void test_429_honours_retry_after(void **state)
{
    (void)state;
    add_fault("{\"endpoint\":\"generateEphemeralCert\",\"status\":429,\"retry_after\":1,"
              "\"count\":1}");
    csql__certset *cs = NULL;
    int64_t took = 0;
    int rc = refresh(&g_env, PG, false, 30000, &cs, &took);
    if (rc != 0) {
        fail_msg("refresh: %s", csql_error_last()->message);
    }
    csql__certset_unref(cs);
    assert_true(took >= 1000);
    assert_true(took < 3000);
    assert_int_equal(counter("generateEphemeralCert", PG), 2);
    assert_int_equal(counter("connectSettings", PG), 1);
}

static void test_persistent_500_gives_up_after_6(void **state)
{
    (void)state;
    add_fault("{\"endpoint\":\"connectSettings\",\"status\":500}");
    csql__certset *cs = NULL;
    int64_t took = 0;
    assert_int_equal(refresh(&g_env, PG, false, 60000, &cs, &took), CSQL_ERR_API);
    assert_int_equal(csql_error_last()->http_status, 500);
    assert_msg_contains("connectSettings for " PG);
    assert_msg_contains("HTTP 500");
    assert_int_equal(counter("connectSettings", PG), 6);
    /* Five backoffs: 5284..8548 ms in all. */
    assert_true(took >= 5284 - 50);
    assert_true(took < 8548 + 3000);
}

static void test_retries_stop_at_the_deadline(void **state)
{
    (void)state;
    add_fault("{\"endpoint\":\"connectSettings\",\"status\":503}");
    csql__certset *cs = NULL;
    int64_t took = 0;
    assert_int_equal(refresh(&g_env, PG, false, 1500, &cs, &took), CSQL_ERR_TIMEOUT);
    assert_msg_contains(PG);
    assert_msg_contains("HTTP 503");
    assert_true(took <= 1600);
    long calls = counter("connectSettings", PG);
    assert_true(calls >= 2 && calls <= 3);
}

static void test_not_found(void **state)
{
    (void)state;
    csql__certset *cs = NULL;
    assert_int_equal(refresh(&g_env, "p:us-central1:nope", false, 10000, &cs, NULL),
                     CSQL_ERR_NOT_FOUND);
    assert_int_equal(csql_error_last()->http_status, 404);
    assert_msg_contains("p:us-central1:nope");
}

static void test_forbidden_has_hint(void **state)
{
    (void)state;
    add_fault("{\"endpoint\":\"connectSettings\",\"status\":403}");
    csql__certset *cs = NULL;
    assert_int_equal(refresh(&g_env, PG, false, 10000, &cs, NULL), CSQL_ERR_PERMISSION_DENIED);
    assert_int_equal(csql_error_last()->http_status, 403);
    assert_msg_contains(PG);
    assert_msg_contains("Cloud SQL Client role");
    assert_int_equal(counter("connectSettings", PG), 1); /* not retried */
}

static void test_bad_token_is_401(void **state)
{
    (void)state;
    env bad;
    env_init(&bad, "not-a-known-token", false);
    csql__certset *cs = NULL;
    assert_int_equal(refresh(&bad, PG, false, 10000, &cs, NULL), CSQL_ERR_PERMISSION_DENIED);
    assert_int_equal(csql_error_last()->http_status, 401);
    assert_msg_contains(PG);
    assert_null(strstr(csql_error_last()->message, "not-a-known-token"));
    env_dispose(&bad);
}

static void test_region_mismatch(void **state)
{
    (void)state;
    csql__certset *cs = NULL;
    assert_int_equal(refresh(&g_env, "p:europe-west1:pg", false, 10000, &cs, NULL),
                     CSQL_ERR_REGION_MISMATCH);
    assert_msg_contains("provided region was mismatched - got europe-west1, want us-central1");
}

static void test_malformed_answers(void **state)
{
    (void)state;
    csql__certset *cs = NULL;
    add_fault("{\"endpoint\":\"connectSettings\",\"malformed\":true,\"count\":1}");
    assert_int_equal(refresh(&g_env, PG, false, 10000, &cs, NULL), CSQL_ERR_API_RESPONSE);
    assert_msg_contains(PG);
    add_fault("{\"endpoint\":\"generateEphemeralCert\",\"malformed\":true,\"count\":1}");
    assert_int_equal(refresh(&g_env, PG, false, 10000, &cs, NULL), CSQL_ERR_API_RESPONSE);
    assert_msg_contains(PG);
    assert_msg_contains("generateEphemeralCert");
}

static void test_latency_beyond_deadline(void **state)
{
    (void)state;
    add_fault("{\"endpoint\":\"connectSettings\",\"latency_ms\":3000,\"count\":1}");
    csql__certset *cs = NULL;
    int64_t took = 0;
    assert_int_equal(refresh(&g_env, PG, false, 1000, &cs, &took), CSQL_ERR_TIMEOUT);
    assert_msg_contains(PG);
    if (took < 950 || took > 1500) {
        fail_msg("deadline of 1000 ms, refresh returned after %lld ms", (long long)took);
    }
}

static void test_iam_on_sqlserver_refused(void **state)
{
    (void)state;
    env e;
    g_login_expiry = csql__wall_s() + 600;
    env_init(&e, NULL, true);
    csql__certset *cs = NULL;
    assert_int_equal(refresh(&e, SS, true, 10000, &cs, NULL), CSQL_ERR_IAM_UNSUPPORTED);
    assert_msg_contains(SS);
    assert_msg_contains("SQLSERVER_2019_STANDARD");
    /* Without IAM the same instance refreshes. */
    assert_int_equal(refresh(&e, SS, false, 10000, &cs, NULL), 0);
    csql__certset_unref(cs);
    env_dispose(&e);
}

static void test_iam_expiry_clamped_to_login_token(void **state)
{
    (void)state;
    env e;
    g_login_expiry = csql__wall_s() + 600;
    env_init(&e, NULL, true);
    csql__certset *cs = NULL;
    if (refresh(&e, PG, true, 10000, &cs, NULL) != 0) {
        fail_msg("refresh: %s", csql_error_last()->message);
    }
    assert_int_equal(cs->expires_at, g_login_expiry);
    /* An IAM-bound certificate makes the server check the database login: handshake only. */
    handshake(cs, g_ip_pg, PG, false);
    csql__certset_unref(cs);

    /* Without IAM the login token plays no part. */
    assert_int_equal(refresh(&e, PG, false, 10000, &cs, NULL), 0);
    assert_true(cs->expires_at > g_login_expiry + 2000);
    csql__certset_unref(cs);
    env_dispose(&e);
}

int main(void)
{
    if (getenv("CSQL_EMULATOR") == NULL) {
        fprintf(stderr, "CSQL_EMULATOR is not set: skipping\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_refresh_and_handshake, test_setup),
        cmocka_unit_test_setup(test_cas_domain_scoped, test_setup),
        cmocka_unit_test_setup(test_calls_run_concurrently, test_setup),
        cmocka_unit_test_setup(test_503_twice_then_ok, test_setup),
        cmocka_unit_test_setup(test_429_honours_retry_after, test_setup),
        cmocka_unit_test_setup(test_persistent_500_gives_up_after_6, test_setup),
        cmocka_unit_test_setup(test_retries_stop_at_the_deadline, test_setup),
        cmocka_unit_test_setup(test_not_found, test_setup),
        cmocka_unit_test_setup(test_forbidden_has_hint, test_setup),
        cmocka_unit_test_setup(test_bad_token_is_401, test_setup),
        cmocka_unit_test_setup(test_region_mismatch, test_setup),
        cmocka_unit_test_setup(test_malformed_answers, test_setup),
        cmocka_unit_test_setup(test_latency_beyond_deadline, test_setup),
        cmocka_unit_test_setup(test_iam_on_sqlserver_refused, test_setup),
        cmocka_unit_test_setup(test_iam_expiry_clamped_to_login_token, test_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
