/*
 * What csql__refresh_once puts on the wire (REFERENCE §2, §6): URLs (the
 * project keeps its colon), headers, the generateEphemeralCert body with and
 * without access_token, and transport-failure retries, checked against a
 * small HTTP server inside the test that records every request and signs the
 * public key it is sent.
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
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "certset.h"
#include "config_internal.h"
#include "credentials/credentials.h"
#include "csql/config.h"
#include "csql/errors.h"
#include "instance_name.h"
#include "keys.h"
#include "refresh.h"
#include "util/clock.h"

#define MAX_REQS 32

typedef struct fake_req {
    char method[8];
    char path[512];
    char head[4096]; /* request line and headers */
    char body[8192];
} fake_req;

static struct {
    int fd;
    int port;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t mu;
    fake_req reqs[MAX_REQS];
    int n;
    EVP_PKEY *ca_key;
    X509 *ca;
    char *ca_pem;
    atomic_int force_status; /* non-zero: answer this with Retry-After: 30 */
} g_srv = {.fd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

static csql__keypair *g_keys;
static int64_t g_login_expiry;

/* ---- the fake SQL Admin API ---- */

static char *pem_of_cert(X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, x);
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

static X509 *make_cert(EVP_PKEY *subject_key, const char *cn, EVP_PKEY *signer, X509 *issuer,
                       long lifetime)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), lifetime);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : X509_get_subject_name(x));
    X509_set_pubkey(x, subject_key);
    X509_sign(x, signer, EVP_sha256());
    return x;
}

static char *connect_settings_json(void)
{
    json_t *o = json_pack("{s:s,s:{s:s},s:[{s:s,s:s}],s:s,s:s,s:s}", "kind", "sql#connectSettings",
                          "serverCaCert", "cert", g_srv.ca_pem, "ipAddresses", "type", "PRIMARY",
                          "ipAddress", "127.0.0.1", "region", "us-central1", "databaseVersion",
                          "POSTGRES_16", "backendType", "SECOND_GEN");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Sign the public_key of the request body into an ephemeral certificate. */
static char *ephemeral_json(const char *body)
{
    json_t *req = json_loads(body, 0, NULL);
    const char *pem = json_string_value(json_object_get(req, "public_key"));
    char *out = NULL;
    if (pem != NULL) {
        BIO *bio = BIO_new_mem_buf(pem, -1);
        EVP_PKEY *pub = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
        BIO_free(bio);
        if (pub != NULL) {
            X509 *x = make_cert(pub, "Google Cloud SQL Client", g_srv.ca_key, g_srv.ca, 3600);
            char *cert = pem_of_cert(x);
            json_t *o = json_pack("{s:{s:s}}", "ephemeralCert", "cert", cert);
            out = json_dumps(o, JSON_COMPACT);
            json_decref(o);
            free(cert);
            X509_free(x);
            EVP_PKEY_free(pub);
        }
    }
    json_decref(req);
    return out;
}

static void respond(int fd, int status, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "%sConnection: close\r\n\r\n",
                     status, strlen(body), status == 200 ? "" : "Retry-After: 30\r\n");
    if (write(fd, head, (size_t)n) != n || write(fd, body, strlen(body)) < 0) {
        return;
    }
}

static void serve_one(int fd)
{
    fake_req rq;
    memset(&rq, 0, sizeof(rq));
    char buf[16384];
    size_t used = 0;
    char *end = NULL;
    /* Read headers, then Content-Length bytes of body; bounded by the buffer. */
    while (used + 1 < sizeof(buf)) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) <= 0) {
            close(fd);
            return;
        }
        ssize_t n = read(fd, buf + used, sizeof(buf) - 1 - used);
        if (n <= 0) {
            close(fd);
            return;
        }
        used += (size_t)n;
        buf[used] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            size_t want = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
            if (used >= (size_t)(end + 4 - buf) + want) {
                break;
            }
        }
    }
    if (end == NULL) {
        close(fd);
        return;
    }
    *end = '\0';
    snprintf(rq.head, sizeof(rq.head), "%s", buf);
    snprintf(rq.body, sizeof(rq.body), "%s", end + 4);
    sscanf(buf, "%7s %511s", rq.method, rq.path);
    pthread_mutex_lock(&g_srv.mu);
    if (g_srv.n < MAX_REQS) {
        g_srv.reqs[g_srv.n++] = rq;
    }
    pthread_mutex_unlock(&g_srv.mu);

    char *reply = NULL;
    size_t plen = strlen(rq.path);
    int forced = atomic_load(&g_srv.force_status);
    if (forced != 0) {
        respond(fd, forced, "{\"error\":{\"code\":503,\"message\":\"busy\"}}");
        close(fd);
        return;
    }
    if (plen > 16 && strcmp(rq.path + plen - 16, "/connectSettings") == 0) {
        reply = connect_settings_json();
    } else if (plen > 22 && strcmp(rq.path + plen - 22, ":generateEphemeralCert") == 0) {
        reply = ephemeral_json(rq.body);
    }
    if (reply != NULL) {
        respond(fd, 200, reply);
    } else {
        respond(fd, 400, "{\"error\":{\"code\":400,\"message\":\"bad request\"}}");
    }
    free(reply);
    close(fd);
}

static void *server_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_srv.stop)) {
        struct pollfd p = {g_srv.fd, POLLIN, 0};
        if (poll(&p, 1, 50) == 1) {
            int c = accept(g_srv.fd, NULL, NULL);
            if (c >= 0) {
                serve_one(c);
            }
        }
    }
    return NULL;
}

static int group_setup(void **state)
{
    (void)state;
    g_srv.ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    g_srv.ca = make_cert(g_srv.ca_key, "Test CA", g_srv.ca_key, NULL, 86400);
    g_srv.ca_pem = pem_of_cert(g_srv.ca);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    g_srv.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (g_srv.fd < 0 || bind(g_srv.fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(g_srv.fd, 16) != 0 || getsockname(g_srv.fd, (struct sockaddr *)&sa, &len) != 0) {
        return -1;
    }
    g_srv.port = ntohs(sa.sin_port);
    if (pthread_create(&g_srv.thread, NULL, server_main, NULL) != 0) {
        return -1;
    }
    return csql__keypair_new(NULL, 0, 1, &g_keys);
}

static int group_teardown(void **state)
{
    (void)state;
    atomic_store(&g_srv.stop, true);
    pthread_join(g_srv.thread, NULL);
    close(g_srv.fd);
    csql__keypair_free(g_keys);
    X509_free(g_srv.ca);
    EVP_PKEY_free(g_srv.ca_key);
    free(g_srv.ca_pem);
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    pthread_mutex_lock(&g_srv.mu);
    g_srv.n = 0;
    pthread_mutex_unlock(&g_srv.mu);
    csql_error_clear();
    return 0;
}

/* ---- the refresh side ---- */

typedef struct env {
    csql_config *cfg;
    csql__creds *creds;
    csql__refresh_ctx ctx;
} env;

static int token_cb(csql_token_kind kind, char *buf, size_t buflen, int64_t *expires_at,
                    void *userdata)
{
    (void)userdata;
    snprintf(buf, buflen, "%s", kind == CSQL_TOKEN_LOGIN ? "login-tok" : "admin-tok");
    *expires_at = kind == CSQL_TOKEN_LOGIN ? g_login_expiry : 0;
    return 0;
}

static void env_init(env *e, const char *endpoint, bool callback)
{
    char url[128];
    memset(e, 0, sizeof(*e));
    if (endpoint == NULL) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/", g_srv.port); /* trailing slash */
        endpoint = url;
    }
    assert_int_equal(csql_config_new(&e->cfg), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(e->cfg, endpoint), 0);
    assert_int_equal(csql_config_set_quota_project(e->cfg, "quota-proj"), 0);
    if (callback) {
        assert_int_equal(csql_config_set_token_callback(e->cfg, token_cb, NULL), 0);
    } else {
        assert_int_equal(csql_config_set_token(e->cfg, "static-tok"), 0);
    }
    assert_int_equal(csql__config_resolve(e->cfg), 0);
    assert_int_equal(csql__creds_new(e->cfg, NULL, &e->creds), 0);
    e->ctx = (csql__refresh_ctx){e->cfg, e->creds, g_keys, NULL, "csql/9.9.9 unit-test"};
}

static void env_dispose(env *e)
{
    csql__creds_free(e->creds);
    csql_config_free(e->cfg);
}

static const fake_req *find_req(const char *method)
{
    for (int i = 0; i < g_srv.n; i++) {
        if (strcmp(g_srv.reqs[i].method, method) == 0) {
            return &g_srv.reqs[i];
        }
    }
    fail_msg("no %s request recorded", method);
    return NULL;
}

static void assert_header(const fake_req *rq, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\r\n%s\r\n", line);
    char head[4100];
    snprintf(head, sizeof(head), "%s\r\n", rq->head);
    if (strcasestr(head, want) == NULL) {
        fail_msg("request %s %s lacks header \"%s\":\n%s", rq->method, rq->path, line, rq->head);
    }
}

static void check_common(const fake_req *rq, const char *bearer)
{
    char auth[128];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer);
    assert_header(rq, auth);
    assert_header(rq, "User-Agent: csql/9.9.9 unit-test");
    assert_header(rq, "Content-Type: application/json");
    assert_header(rq, "x-goog-user-project: quota-proj");
}

static void test_requests_without_iam(void **state)
{
    (void)state;
    env e;
    env_init(&e, NULL, false);
    csql__instance_name name;
    assert_int_equal(csql__instance_name_parse("google.com:proj:us-central1:db-1", &name), 0);
    csql__certset *cs = NULL;
    int rc = csql__refresh_once(&e.ctx, &name, false, csql__mono_ms() + 10000, &cs);
    if (rc != 0) {
        fail_msg("refresh: %s", csql_error_last()->message);
    }
    assert_string_equal(cs->info.database_version, "POSTGRES_16");
    assert_string_equal(cs->info.public_ip, "127.0.0.1");
    int64_t now = csql__wall_s();
    assert_true(cs->expires_at > now + 3500 && cs->expires_at <= now + 3600);
    csql__certset_unref(cs);

    pthread_mutex_lock(&g_srv.mu);
    assert_int_equal(g_srv.n, 2);
    const fake_req *get = find_req("GET");
    const fake_req *post = find_req("POST");
    assert_string_equal(get->path, "/sql/v1beta4/projects/google.com:proj/instances/db-1/"
                                   "connectSettings");
    assert_string_equal(post->path, "/sql/v1beta4/projects/google.com:proj/instances/"
                                    "db-1:generateEphemeralCert");
    check_common(get, "static-tok");
    check_common(post, "static-tok");

    json_error_t jerr;
    json_t *body = json_loads(post->body, 0, &jerr);
    if (body == NULL) {
        fail_msg("body is not JSON: %s: %s", jerr.text, post->body);
    }
    assert_int_equal(json_object_size(body), 1);
    const char *pub = json_string_value(json_object_get(body, "public_key"));
    assert_non_null(pub);
    EVP_PKEY *pkey = NULL;
    const char *want_pub = NULL;
    assert_int_equal(csql__keypair_get(g_keys, csql__mono_ms(), &pkey, &want_pub), 0);
    assert_string_equal(pub, want_pub);
    assert_true(strncmp(pub, "-----BEGIN PUBLIC KEY-----\n", 27) == 0);
    json_decref(body);
    pthread_mutex_unlock(&g_srv.mu);
    env_dispose(&e);
}

static void test_requests_with_iam(void **state)
{
    (void)state;
    env e;
    env_init(&e, NULL, true);
    g_login_expiry = csql__wall_s() + 900;
    csql__instance_name name;
    assert_int_equal(csql__instance_name_parse("p:us-central1:i", &name), 0);
    csql__certset *cs = NULL;
    int rc = csql__refresh_once(&e.ctx, &name, true, csql__mono_ms() + 10000, &cs);
    if (rc != 0) {
        fail_msg("refresh: %s", csql_error_last()->message);
    }
    assert_int_equal(cs->expires_at, g_login_expiry);
    csql__certset_unref(cs);

    pthread_mutex_lock(&g_srv.mu);
    const fake_req *get = find_req("GET");
    const fake_req *post = find_req("POST");
    check_common(get, "admin-tok");
    check_common(post, "admin-tok");
    json_t *body = json_loads(post->body, 0, NULL);
    assert_non_null(body);
    assert_int_equal(json_object_size(body), 2);
    assert_string_equal(json_string_value(json_object_get(body, "access_token")), "login-tok");
    assert_non_null(json_string_value(json_object_get(body, "public_key")));
    json_decref(body);
    pthread_mutex_unlock(&g_srv.mu);
    env_dispose(&e);
}

static void test_connect_refused_is_retried_until_deadline(void **state)
{
    (void)state;
    /* A port nobody listens on: bind one and close it. */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(sa.sin_port));
    env e;
    env_init(&e, url, false);
    csql__instance_name name;
    assert_int_equal(csql__instance_name_parse("p:us-central1:i", &name), 0);
    csql__certset *cs = NULL;
    int64_t t0 = csql__mono_ms();
    int rc = csql__refresh_once(&e.ctx, &name, false, t0 + 1200, &cs);
    int64_t took = csql__mono_ms() - t0;
    assert_int_equal(rc, CSQL_ERR_TIMEOUT);
    assert_null(cs);
    const char *m = csql_error_last()->message;
    assert_non_null(strstr(m, "p:us-central1:i"));
    /* Attempts at 0, after 324..524 ms and maybe after 848..1371 ms; then no time is left. */
    assert_true(strstr(m, "attempt 2") != NULL || strstr(m, "attempt 3") != NULL);
    assert_non_null(strstr(m, "would pass the deadline"));
    assert_true(took <= 1250);
    env_dispose(&e);
}

typedef struct canceller {
    atomic_bool *flag;
    int after_ms;
} canceller;

static void *cancel_main(void *arg)
{
    canceller *c = arg;
    struct timespec ts = {0, (long)c->after_ms * 1000000L};
    nanosleep(&ts, NULL);
    atomic_store(c->flag, true);
    return NULL;
}

static void test_cancel_interrupts_retry_wait(void **state)
{
    (void)state;
    env e;
    env_init(&e, NULL, false);
    csql__instance_name name;
    assert_int_equal(csql__instance_name_parse("p:us-central1:i", &name), 0);
    atomic_store(&g_srv.force_status, 503);
    atomic_bool flag;
    atomic_init(&flag, false);
    canceller c = {&flag, 300};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_main, &c), 0);
    csql__certset *cs = NULL;
    int64_t t0 = csql__mono_ms();
    /* Retry-After: 30 fits in the 60 s deadline, so without cancel this would wait 30 s. */
    int rc = csql__refresh_once_cancellable(&e.ctx, &name, false, t0 + 60000, &flag, &cs);
    int64_t took = csql__mono_ms() - t0;
    pthread_join(t, NULL);
    atomic_store(&g_srv.force_status, 0);
    assert_int_equal(rc, CSQL_ERR_CLOSED);
    assert_null(cs);
    assert_non_null(strstr(csql_error_last()->message, "p:us-central1:i"));
    assert_true(took >= 300 && took < 1000);

    /* Already cancelled: no request at all. */
    pthread_mutex_lock(&g_srv.mu);
    g_srv.n = 0;
    pthread_mutex_unlock(&g_srv.mu);
    assert_int_equal(csql__refresh_once_cancellable(&e.ctx, &name, false, csql__mono_ms() + 5000,
                                                    &flag, &cs),
                     CSQL_ERR_CLOSED);
    assert_int_equal(g_srv.n, 0);
    env_dispose(&e);
}

static void test_expired_deadline_and_bad_arguments(void **state)
{
    (void)state;
    env e;
    env_init(&e, NULL, false);
    csql__instance_name name;
    assert_int_equal(csql__instance_name_parse("p:us-central1:i", &name), 0);
    csql__certset *cs = NULL;
    assert_int_equal(csql__refresh_once(&e.ctx, &name, false, csql__mono_ms() - 1, &cs),
                     CSQL_ERR_TIMEOUT);
    assert_non_null(strstr(csql_error_last()->message, "p:us-central1:i"));
    assert_int_equal(g_srv.n, 0);
    assert_int_equal(csql__refresh_once(NULL, &name, false, 0, &cs), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql__refresh_once(&e.ctx, NULL, false, 0, &cs), CSQL_ERR_INVALID_ARGUMENT);
    env_dispose(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_requests_without_iam, test_setup),
        cmocka_unit_test_setup(test_requests_with_iam, test_setup),
        cmocka_unit_test_setup(test_connect_refused_is_retried_until_deadline, test_setup),
        cmocka_unit_test_setup(test_cancel_interrupts_retry_wait, test_setup),
        cmocka_unit_test_setup(test_expired_deadline_and_bad_arguments, test_setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
