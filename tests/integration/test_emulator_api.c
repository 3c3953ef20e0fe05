/*
 * csql-emulator's control plane end to end: the binary is started as a child
 * process ($CSQL_EMULATOR) and driven over HTTP with libcurl: SQL Admin API
 * (current and legacy endpoints), bearer auth and scopes, OAuth token,
 * metadata and impersonation endpoints, IAM login tokens, faults, counters,
 * the admin API, and the command line (exit codes, messages, signals).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "support.h"

#define STATIC_TOKEN "static-test-token"
#define SCOPE_ADMIN "https://www.googleapis.com/auth/sqlservice.admin"
#define SCOPE_LOGIN "https://www.googleapis.com/auth/sqlservice.login"
#define SCOPE_CLOUD "https://www.googleapis.com/auth/cloud-platform"
#define SCOPE_EMAIL "https://www.googleapis.com/auth/userinfo.email"
#define SA_EMAIL "csql-test@emulator-project.iam.gserviceaccount.com"

static csqlt_emulator em;
static int server_port;
static char ip_pg[32], ip_pg_private[32], ip_cas[32], ip_ss[32];
static char *pub_pem;     /* SPKI PEM of the test's RSA key */
static char *pkcs1_pem;   /* the same key as "RSA PUBLIC KEY" */
static EVP_PKEY *test_key;
static X509 *signing_ca;

/* ---------------- HTTP ---------------- */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char retry_after[32];
    char flavor[32];
    char content_type[64];
    double secs;
} resp;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    resp *r = ud;
    size_t len = size * n;
    char *nb = realloc(r->body, r->len + len + 1);
    if (!nb)
        return 0;
    memcpy(nb + r->len, p, len);
    r->body = nb;
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) != 0)
        return;
    const char *v = line + n;
    size_t vl = len - n;
    while (vl && (*v == ' '))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
        vl--;
    snprintf(out, cap, "%.*s", (int)vl, v);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    resp *r = ud;
    size_t len = size * n;
    header_value(p, len, "Retry-After:", r->retry_after, sizeof r->retry_after);
    header_value(p, len, "Metadata-Flavor:", r->flavor, sizeof r->flavor);
    header_value(p, len, "Content-Type:", r->content_type, sizeof r->content_type);
    return len;
}

/* One request; extra headers as a NULL-terminated list. Asserts the transport works. */
static resp http(const char *method, const char *path, const char *bearer, const char *body,
                 const char *const *headers)
{
    resp r = {0};
    char url[1024], auth[4200];
    struct curl_slist *h = NULL;
    CURL *c = curl_easy_init();
    snprintf(url, sizeof url, "%s%s", em.url, path);
    if (bearer) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", bearer);
        h = curl_slist_append(h, auth);
    }
    for (size_t i = 0; headers && headers[i]; i++)
        h = curl_slist_append(h, headers[i]);
    h = curl_slist_append(h, "Expect:");
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK)
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(cc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &r.secs);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r.body)
        r.body = strdup("");
    return r;
}

static json_t *json_of(const resp *r)
{
    json_error_t e;
    json_t *j = json_loads(r->body, 0, &e);
    if (!j)
        fail_msg("not JSON (%s): %.300s", e.text, r->body);
    return j;
}

static const char *jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

/* The response is Google error JSON with this code and status string. */
static void expect_google_error(resp *r, long code, const char *status)
{
    if (r->status != code)
        fail_msg("want HTTP %ld, got %ld: %.300s", code, r->status, r->body);
    json_t *j = json_of(r);
    json_t *e = json_object_get(j, "error");
    assert_non_null(e);
    assert_int_equal(json_integer_value(json_object_get(e, "code")), code);
    assert_string_equal(jstr(e, "status"), status);
    assert_non_null(jstr(e, "message"));
    assert_true(json_array_size(json_object_get(e, "errors")) >= 1);
    json_decref(j);
}

static void resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

static const char *PG_PATH = "/sql/v1beta4/projects/p-test/instances/pg";
static const char *CAS_PATH = "/sql/v1beta4/projects/google.com%3Adom-proj/instances/my";
static const char *PSC_PATH = "/sql/v1beta4/projects/p-test/instances/psc";
static const char *SS_PATH = "/sql/v1beta4/projects/p-test/instances/ss";

static resp get_settings(const char *inst_path, const char *bearer)
{
    char path[512];
    snprintf(path, sizeof path, "%s/connectSettings", inst_path);
    return http("GET", path, bearer, NULL, NULL);
}

static char *gen_body(const char *pem, const char *access_token)
{
    json_t *b = json_pack("{s:s}", "public_key", pem);
    if (access_token)
        json_object_set_new(b, "access_token", json_string(access_token));
    char *text = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return text;
}

static resp generate(const char *inst_path, const char *bearer, const char *body)
{
    char path[512];
    snprintf(path, sizeof path, "%s:generateEphemeralCert", inst_path);
    return http("POST", path, bearer, body, (const char *[]){"Content-Type: application/json",
                                                             NULL});
}

/* generateEphemeralCert with the static bearer for key pem and login token (or NULL). */
static resp generate_for(const char *inst_path, const char *pem, const char *access_token)
{
    char *body = gen_body(pem, access_token);
    resp r = generate(inst_path, STATIC_TOKEN, body);
    free(body);
    return r;
}

/* A token from POST /emulator/tokens (lifetime < 0: the default). Caller frees. */
static char *mint(const char *principal, const char *scope, long lifetime)
{
    json_t *b = json_pack("{s:s,s:[s]}", "principal", principal, "scopes", scope);
    if (lifetime >= 0)
        json_object_set_new(b, "lifetime", json_integer(lifetime));
    char *text = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    resp r = http("POST", "/emulator/tokens", NULL, text, NULL);
    free(text);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    char *tok = strdup(jstr(j, "access_token"));
    json_decref(j);
    resp_free(&r);
    return tok;
}

static long admin(const char *method, const char *path, const char *body)
{
    return csqlt_emulator_admin(&em, method, path, body);
}

/* ---------------- certificates ---------------- */

static X509 *pem_cert(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    return x;
}

static int count_pem_certs(const char *pem)
{
    int n = 0;
    for (const char *p = pem; (p = strstr(p, "-----BEGIN CERTIFICATE-----")); p++)
        n++;
    return n;
}

/* The client certificate verifies against the signing CA and carries the test key. */
static void check_client_cert(const char *pem)
{
    X509 *x = pem_cert(pem);
    assert_non_null(x);
    EVP_PKEY *ca_key = X509_get0_pubkey(signing_ca);
    assert_int_equal(X509_verify(x, ca_key), 1);
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(x), test_key), 1);
    char cn[128];
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    assert_string_equal(cn, "Google Cloud SQL Client");
    X509_free(x);
}

static time_t cert_not_after(const char *pem)
{
    X509 *x = pem_cert(pem);
    struct tm tm;
    assert_non_null(x);
    assert_int_equal(ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm), 1);
    X509_free(x);
    return timegm(&tm);
}

/* ---------------- running the binary ---------------- */

/* Run the emulator with args to completion (bad command lines exit at once). */
static int run_emulator(const char *const *args, char *out, size_t outcap, char *err,
                        size_t errcap)
{
    const char *bin = getenv("CSQL_EMULATOR");
    int po[2], pe[2];
    assert_non_null(bin);
    assert_int_equal(pipe(po), 0);
    assert_int_equal(pipe(pe), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *argv[32] = {strdup(bin)};
        for (int i = 0; args[i] && i < 30; i++)
            argv[i + 1] = strdup(args[i]);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]), close(pe[0]), close(po[1]), close(pe[1]);
        execv(bin, argv);
        _exit(127);
    }
    close(po[1]), close(pe[1]);
    size_t on = 0, en = 0;
    struct pollfd fds[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    time_t deadline = time(NULL) + 20;
    while ((fds[0].fd >= 0 || fds[1].fd >= 0) && time(NULL) < deadline) {
        if (poll(fds, 2, 1000) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP)))
                continue;
            char *buf = i ? err : out;
            size_t *n = i ? &en : &on, cap = i ? errcap : outcap;
            ssize_t r = read(fds[i].fd, buf + *n, cap - 1 - *n);
            if (r <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
            } else {
                *n += (size_t)r;
            }
        }
    }
    out[on] = '\0';
    err[en] = '\0';
    int st = 0;
    if (fds[0].fd >= 0 || fds[1].fd >= 0) {
        kill(pid, SIGKILL);
        fail_msg("emulator did not exit: %s", err);
    }
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---------------- setup ---------------- */

static char *bio_text(BIO *b)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *text = strndup(data, (size_t)n);
    BIO_free(b);
    return text;
}

/* The test key as SPKI "PUBLIC KEY" PEM, as most connectors send it. */
static char *spki_pem(void)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, test_key), 1);
    return bio_text(b);
}

/* The test key as PKCS#1 "RSA PUBLIC KEY" PEM, as some clients label it. */
static char *rsa_public_key_pem(void)
{
    BIO *b = BIO_new(BIO_s_mem());
    unsigned char *der = NULL;
    int len = i2d_PublicKey(test_key, &der);
    assert_true(len > 0);
    PEM_write_bio(b, "RSA PUBLIC KEY", "", der, len);
    OPENSSL_free(der);
    return bio_text(b);
}

static int setup(void **state)
{
    (void)state;
    char ports[16];
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_key = EVP_RSA_gen(2048);
    pub_pem = spki_pem();
    pkcs1_pem = rsa_public_key_pem();

    server_port = 40000 + (int)(getpid() % 20000);
    snprintf(ports, sizeof ports, "%d", server_port);
    csqlt_unique_ip(11, ip_pg, sizeof ip_pg);
    csqlt_unique_ip(12, ip_pg_private, sizeof ip_pg_private);
    csqlt_unique_ip(13, ip_cas, sizeof ip_cas);
    csqlt_unique_ip(14, ip_ss, sizeof ip_ss);

    char pg[256], cas[256], ss[256];
    snprintf(pg, sizeof pg,
             "p-test:us-central1:pg?version=POSTGRES_15&public-ip=%s&private-ip=%s"
             "&backend=127.0.0.1:9",
             ip_pg, ip_pg_private);
    snprintf(cas, sizeof cas,
             "google.com:dom-proj:europe-west1:my?version=MYSQL_8_0&public-ip=%s&ca-mode=cas"
             "&backend=127.0.0.1:9",
             ip_cas);
    snprintf(ss, sizeof ss,
             "p-test:us-central1:ss?version=SQLSERVER_2019_STANDARD&public-ip=%s"
             "&backend=127.0.0.1:9",
             ip_ss);
    const char *args[] = {"--server-port", ports, "--static-token", STATIC_TOKEN,
                          "--instance", pg, "--instance", cas, "--instance", ss,
                          "--instance",
                          "p-test:us-central1:psc?version=POSTGRES_15&psc-dns=localhost"
                          "&backend=127.0.0.1:9",
                          NULL};
    if (csqlt_emulator_start(&em, 1, args) != 0)
        return -1;

    resp r = http("GET", "/emulator/signing-ca", NULL, NULL, NULL);
    signing_ca = r.status == 200 ? pem_cert(r.body) : NULL;
    resp_free(&r);
    return signing_ca ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int rc = csqlt_emulator_stop(&em);
    X509_free(signing_ca);
    EVP_PKEY_free(test_key);
    free(pub_pem);
    free(pkcs1_pem);
    curl_global_cleanup();
    /* SIGTERM must end it cleanly with status 0. */
    return rc == 0 ? 0 : -1;
}

/* Each test starts without faults and with the default certificate lifetime. */
static int reset(void **state)
{
    (void)state;
    admin("DELETE", "/emulator/faults", NULL);
    admin("POST", "/emulator/cert-lifetime", "{\"seconds\":3600}");
    return 0;
}

/* ---------------- auth ---------------- */

static void test_bearer_required(void **state)
{
    (void)state;
    resp r = get_settings(PG_PATH, NULL);
    expect_google_error(&r, 401, "UNAUTHENTICATED");
    resp_free(&r);
    r = get_settings(PG_PATH, "not-a-token");
    expect_google_error(&r, 401, "UNAUTHENTICATED");
    resp_free(&r);
    r = http("GET", "/sql/v1beta4/projects/p-test/instances/pg/connectSettings", NULL, NULL,
             (const char *[]){"Authorization: Basic " STATIC_TOKEN, NULL});
    expect_google_error(&r, 401, "UNAUTHENTICATED");
    resp_free(&r);

    char *expired = mint("u@example.com", SCOPE_ADMIN, 0);
    r = get_settings(PG_PATH, expired);
    expect_google_error(&r, 401, "UNAUTHENTICATED");
    assert_non_null(strstr(r.body, "expired"));
    resp_free(&r);
    free(expired);

    /* The static token works, and so does an issued one with either accepted scope. */
    r = get_settings(PG_PATH, STATIC_TOKEN);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    const char *ok_scopes[] = {SCOPE_ADMIN, SCOPE_CLOUD};
    for (int i = 0; i < 2; i++) {
        char *tok = mint("u@example.com", ok_scopes[i], -1);
        assert_true(strncmp(tok, "ya29.emu-", 9) == 0);
        r = get_settings(PG_PATH, tok);
        assert_int_equal(r.status, 200);
        resp_free(&r);
        free(tok);
    }
}

static void test_wrong_scope_is_403(void **state)
{
    (void)state;
    char *tok = mint("u@example.com", SCOPE_LOGIN, -1);
    resp r = get_settings(PG_PATH, tok);
    expect_google_error(&r, 403, "PERMISSION_DENIED");
    assert_non_null(strstr(r.body, "insufficient"));
    resp_free(&r);
    r = generate(PG_PATH, tok, "{}");
    expect_google_error(&r, 403, "PERMISSION_DENIED");
    resp_free(&r);
    free(tok);
}

/* ---------------- SQL Admin API ---------------- */

static void test_unknown_instance_and_path(void **state)
{
    (void)state;
    resp r = get_settings("/sql/v1beta4/projects/p-test/instances/nope", STATIC_TOKEN);
    expect_google_error(&r, 404, "NOT_FOUND");
    assert_non_null(strstr(r.body, "nope"));
    resp_free(&r);
    /* The project must match too. */
    r = get_settings("/sql/v1beta4/projects/other/instances/pg", STATIC_TOKEN);
    expect_google_error(&r, 404, "NOT_FOUND");
    resp_free(&r);
    r = http("GET", "/sql/v1beta4/projects/p-test/instances/pg/users", STATIC_TOKEN, NULL, NULL);
    expect_google_error(&r, 404, "NOT_FOUND");
    resp_free(&r);
    r = http("GET", "/nothing/here", STATIC_TOKEN, NULL, NULL);
    expect_google_error(&r, 404, "NOT_FOUND");
    resp_free(&r);
    /* Wrong method. */
    r = http("GET", "/sql/v1beta4/projects/p-test/instances/pg:generateEphemeralCert",
             STATIC_TOKEN, NULL, NULL);
    expect_google_error(&r, 404, "NOT_FOUND");
    resp_free(&r);
}

static const char *ip_of(json_t *settings, const char *type)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(settings, "ipAddresses"), i, v) {
        if (strcmp(jstr(v, "type"), type) == 0)
            return jstr(v, "ipAddress");
    }
    return NULL;
}

static void test_connect_settings_legacy(void **state)
{
    (void)state;
    /* Query strings are ignored, as Google's clients append them. */
    resp r = http("GET",
                  "/sql/v1beta4/projects/p-test/instances/pg/connectSettings?alt=json&"
                  "prettyPrint=false",
                  STATIC_TOKEN, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.content_type, "application/json"));
    json_t *j = json_of(&r);
    assert_string_equal(jstr(j, "kind"), "sql#connectSettings");
    assert_string_equal(jstr(j, "region"), "us-central1");
    assert_string_equal(jstr(j, "databaseVersion"), "POSTGRES_15");
    assert_string_equal(jstr(j, "backendType"), "SECOND_GEN");
    assert_string_equal(jstr(j, "serverCaMode"), "GOOGLE_MANAGED_INTERNAL_CA");
    assert_true(json_is_false(json_object_get(j, "pscEnabled")));
    assert_null(json_object_get(j, "dnsName"));
    assert_string_equal(ip_of(j, "PRIMARY"), ip_pg);
    assert_string_equal(ip_of(j, "PRIVATE"), ip_pg_private);
    const char *outgoing = ip_of(j, "OUTGOING");
    assert_non_null(outgoing);
    assert_true(strncmp(outgoing, "127.", 4) != 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "mdxProtocolSupport"),
                                                         0)),
                        "CLIENT_PROTOCOL_TYPE");
    json_t *ca = json_object_get(j, "serverCaCert");
    assert_int_equal(count_pem_certs(jstr(ca, "cert")), 1);
    X509 *x = pem_cert(jstr(ca, "cert"));
    assert_non_null(x);
    X509_free(x);
    assert_non_null(jstr(ca, "expirationTime"));
    json_decref(j);
    resp_free(&r);
}

static void test_connect_settings_cas_and_domain_project(void **state)
{
    (void)state;
    /* The project's colon may come escaped ... */
    resp r = get_settings(CAS_PATH, STATIC_TOKEN);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    assert_string_equal(jstr(j, "region"), "europe-west1");
    assert_string_equal(jstr(j, "databaseVersion"), "MYSQL_8_0");
    assert_string_equal(jstr(j, "serverCaMode"), "GOOGLE_MANAGED_CAS_CA");
    assert_true(count_pem_certs(jstr(json_object_get(j, "serverCaCert"), "cert")) >= 2);
    assert_non_null(jstr(j, "dnsName"));
    assert_null(ip_of(j, "PRIVATE"));
    json_decref(j);
    resp_free(&r);
    /* ... or as is, and runs of '/' are tolerated. */
    r = get_settings("//sql/v1beta4/projects/google.com:dom-proj/instances/my", STATIC_TOKEN);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static void test_connect_settings_psc(void **state)
{
    (void)state;
    resp r = get_settings(PSC_PATH, STATIC_TOKEN);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    assert_true(json_is_true(json_object_get(j, "pscEnabled")));
    assert_string_equal(jstr(j, "dnsName"), "localhost.");
    json_t *dn = json_array_get(json_object_get(j, "dnsNames"), 0);
    assert_string_equal(jstr(dn, "name"), "localhost.");
    assert_string_equal(jstr(dn, "connectionType"), "PRIVATE_SERVICE_CONNECT");
    assert_string_equal(jstr(dn, "dnsScope"), "INSTANCE");
    assert_null(ip_of(j, "PRIMARY"));
    json_decref(j);
    resp_free(&r);
}

static void test_generate_ephemeral_cert(void **state)
{
    (void)state;
    const char *pems[] = {pub_pem, pkcs1_pem};
    for (int i = 0; i < 2; i++) {
        resp r = generate_for(PG_PATH, pems[i], NULL);
        if (r.status != 200)
            fail_msg("key form %d: %ld %s", i, r.status, r.body);
        json_t *j = json_of(&r);
        json_t *ec = json_object_get(j, "ephemeralCert");
        assert_string_equal(jstr(ec, "kind"), "sql#sslCert");
        check_client_cert(jstr(ec, "cert"));
        time_t na = cert_not_after(jstr(ec, "cert"));
        char want[32];
        struct tm tm;
        gmtime_r(&na, &tm);
        strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%SZ", &tm);
        assert_string_equal(jstr(ec, "expirationTime"), want);
        time_t now = time(NULL);
        assert_true(na > now + 3500 && na <= now + 3700);
        json_decref(j);
        resp_free(&r);
    }
}

static void test_generate_bad_requests(void **state)
{
    (void)state;
    resp r = generate(PG_PATH, STATIC_TOKEN, "{not json");
    expect_google_error(&r, 400, "INVALID_ARGUMENT");
    resp_free(&r);
    r = generate(PG_PATH, STATIC_TOKEN, "[]");
    expect_google_error(&r, 400, "INVALID_ARGUMENT");
    resp_free(&r);
    r = generate(PG_PATH, STATIC_TOKEN, "{}");
    expect_google_error(&r, 400, "INVALID_ARGUMENT");
    assert_non_null(strstr(r.body, "public_key"));
    resp_free(&r);
    r = generate(PG_PATH, STATIC_TOKEN, "{\"public_key\":42}");
    expect_google_error(&r, 400, "INVALID_ARGUMENT");
    resp_free(&r);
    r = generate(PG_PATH, STATIC_TOKEN,
                 "{\"public_key\":\"-----BEGIN PUBLIC KEY-----\\nAAAA\\n"
                 "-----END PUBLIC KEY-----\\n\"}");
    expect_google_error(&r, 400, "INVALID_ARGUMENT");
    resp_free(&r);

    /* Bodies are bounded. */
    size_t big = 70 * 1024;
    char *body = malloc(big + 32);
    memset(body, ' ', big);
    strcpy(body + big, "{}");
    r = generate(PG_PATH, STATIC_TOKEN, body);
    free(body);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    /* The server still answers afterwards. */
    r = get_settings(PG_PATH, STATIC_TOKEN);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

static long iam_bindings(void)
{
    resp r = http("GET", "/emulator/counters", NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    long n = (long)json_integer_value(json_object_get(j, "iam_bindings"));
    json_decref(j);
    resp_free(&r);
    return n;
}

static void test_iam_login_token(void **state)
{
    (void)state;
    char *login = mint("sa@p-test.iam.gserviceaccount.com", SCOPE_LOGIN, -1);
    long before = iam_bindings();
    resp r = generate_for(PG_PATH, pub_pem, login);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    check_client_cert(jstr(json_object_get(j, "ephemeralCert"), "cert"));
    json_decref(j);
    resp_free(&r);
    assert_int_equal(iam_bindings(), before + 1);

    /* A static token is a valid login token too. */
    r = generate_for(CAS_PATH, pub_pem, STATIC_TOKEN);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(iam_bindings(), before + 2);

    /* Wrong scope, unknown, expired: refused, nothing bound. */
    char *no_login = mint("sa@p-test.iam.gserviceaccount.com", SCOPE_EMAIL, -1);
    r = generate_for(PG_PATH, pub_pem, no_login);
    expect_google_error(&r, 400, "INVALID_ARGUMENT");
    assert_non_null(strstr(r.body, "sqlservice.login"));
    resp_free(&r);
    r = generate_for(PG_PATH, pub_pem, "ya29.emu-unknown");
    expect_google_error(&r, 401, "UNAUTHENTICATED");
    resp_free(&r);
    char *expired = mint("sa@p-test.iam.gserviceaccount.com", SCOPE_LOGIN, 0);
    r = generate_for(PG_PATH, pub_pem, expired);
    expect_google_error(&r, 401, "UNAUTHENTICATED");
    assert_non_null(strstr(r.body, "expired"));
    resp_free(&r);

    /* SQL Server has no IAM database authentication. */
    r = generate_for(SS_PATH, pub_pem, login);
    expect_google_error(&r, 400, "INVALID_ARGUMENT");
    assert_non_null(strstr(r.body, "SQL Server"));
    resp_free(&r);
    /* Without a login token SQL Server certificates are fine. */
    r = generate_for(SS_PATH, pub_pem, NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(iam_bindings(), before + 2);
    free(login);
    free(no_login);
    free(expired);
}

static void test_legacy_endpoints(void **state)
{
    (void)state;
    resp r = http("GET", "/sql/v1beta4/projects/p-test/instances/pg?alt=json", STATIC_TOKEN,
                  NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    assert_string_equal(jstr(j, "kind"), "sql#instance");
    assert_string_equal(jstr(j, "connectionName"), "p-test:us-central1:pg");
    assert_string_equal(jstr(j, "name"), "pg");
    assert_string_equal(jstr(j, "project"), "p-test");
    assert_string_equal(jstr(j, "region"), "us-central1");
    assert_string_equal(jstr(j, "databaseVersion"), "POSTGRES_15");
    assert_string_equal(jstr(j, "backendType"), "SECOND_GEN");
    assert_string_equal(ip_of(j, "PRIMARY"), ip_pg);
    assert_int_equal(count_pem_certs(jstr(json_object_get(j, "serverCaCert"), "cert")), 1);
    assert_non_null(jstr(json_object_get(j, "serverCaCert"), "expirationTime"));
    assert_null(json_object_get(j, "pscServiceAttachmentLink"));
    json_decref(j);
    resp_free(&r);

    r = http("GET", PSC_PATH, STATIC_TOKEN, NULL, NULL);
    j = json_of(&r);
    assert_string_equal(jstr(j, "dnsName"), "localhost.");
    assert_non_null(jstr(j, "pscServiceAttachmentLink"));
    json_decref(j);
    resp_free(&r);

    char path[256], *body = gen_body(pub_pem, NULL);
    snprintf(path, sizeof path, "%s/createEphemeral", PG_PATH);
    r = http("POST", path, STATIC_TOKEN, body, NULL);
    assert_int_equal(r.status, 200);
    j = json_of(&r);
    assert_string_equal(jstr(j, "kind"), "sql#sslCert");
    check_client_cert(jstr(j, "cert"));
    json_decref(j);
    resp_free(&r);
    r = http("POST", path, NULL, body, NULL);
    expect_google_error(&r, 401, "UNAUTHENTICATED");
    resp_free(&r);
    free(body);
    r = http("GET", "/sql/v1beta4/projects/p-test/instances/gone", STATIC_TOKEN, NULL, NULL);
    expect_google_error(&r, 404, "NOT_FOUND");
    resp_free(&r);
}

/* ---------------- OAuth token endpoint ---------------- */

static json_t *read_json_file(const char *name, mode_t *mode)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", em.creds_dir, name);
    assert_int_equal(stat(path, &st), 0);
    *mode = st.st_mode & 0777;
    json_t *j = json_load_file(path, 0, NULL);
    assert_non_null(j);
    return j;
}

static void b64url(const unsigned char *in, size_t len, char *out)
{
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    for (int i = 0; i < n; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
        else if (out[i] == '=') {
            out[i] = '\0';
            return;
        }
    }
    out[n] = '\0';
}

/* An RS256 assertion signed with key. Caller frees. */
static char *sign_jwt(EVP_PKEY *key, const char *kid, const char *aud, time_t iat, time_t exp,
                      const char *scope)
{
    char h[512], c[2048], *jwt = malloc(4096);
    unsigned char sig[512];
    size_t siglen = sizeof sig;
    json_t *hj = json_pack("{s:s,s:s,s:s}", "alg", "RS256", "typ", "JWT", "kid", kid);
    json_t *cj = json_pack("{s:s,s:s,s:I,s:I,s:s}", "iss", SA_EMAIL, "aud", aud, "iat",
                           (json_int_t)iat, "exp", (json_int_t)exp, "scope", scope);
    char *ht = json_dumps(hj, JSON_COMPACT), *ct = json_dumps(cj, JSON_COMPACT);
    b64url((unsigned char *)ht, strlen(ht), h);
    b64url((unsigned char *)ct, strlen(ct), c);
    free(ht), free(ct);
    json_decref(hj), json_decref(cj);
    int n = snprintf(jwt, 4096, "%s.%s", h, c);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &siglen, (unsigned char *)jwt, (size_t)n), 1);
    EVP_MD_CTX_free(md);
    jwt[n++] = '.';
    b64url(sig, siglen, jwt + n);
    return jwt;
}

static resp post_form(const char *form)
{
    return http("POST", "/token", NULL, form,
                (const char *[]){"Content-Type: application/x-www-form-urlencoded", NULL});
}

static resp jwt_grant(const char *jwt)
{
    char *form = malloc(strlen(jwt) + 128);
    sprintf(form, "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer"
                  "&assertion=%s",
            jwt);
    resp r = post_form(form);
    free(form);
    return r;
}

static void expect_oauth_error(resp *r, long status, const char *error)
{
    if (r->status != status)
        fail_msg("want %ld, got %ld: %s", status, r->status, r->body);
    json_t *j = json_of(r);
    assert_string_equal(jstr(j, "error"), error);
    assert_non_null(jstr(j, "error_description"));
    json_decref(j);
}

static void test_credentials_files(void **state)
{
    (void)state;
    char token_uri[256];
    struct stat st;
    mode_t mode;
    snprintf(token_uri, sizeof token_uri, "%s/token", em.url);
    assert_int_equal(stat(em.creds_dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    json_t *sa = read_json_file("service_account.json", &mode);
    assert_int_equal(mode, 0600);
    assert_string_equal(jstr(sa, "type"), "service_account");
    assert_string_equal(jstr(sa, "client_email"), SA_EMAIL);
    assert_string_equal(jstr(sa, "token_uri"), token_uri);
    assert_non_null(jstr(sa, "project_id"));
    assert_non_null(jstr(sa, "private_key_id"));
    assert_non_null(jstr(sa, "client_id"));
    assert_true(strncmp(jstr(sa, "private_key"), "-----BEGIN PRIVATE KEY-----", 27) == 0);
    json_decref(sa);

    json_t *au = read_json_file("authorized_user.json", &mode);
    assert_int_equal(mode, 0600);
    assert_string_equal(jstr(au, "type"), "authorized_user");
    assert_string_equal(jstr(au, "token_uri"), token_uri);
    assert_non_null(jstr(au, "client_id"));
    assert_non_null(jstr(au, "client_secret"));
    assert_non_null(jstr(au, "refresh_token"));
    json_decref(au);
}

static void test_token_jwt_grant(void **state)
{
    (void)state;
    mode_t mode;
    char aud[256];
    json_t *sa = read_json_file("service_account.json", &mode);
    BIO *b = BIO_new_mem_buf(jstr(sa, "private_key"), -1);
    EVP_PKEY *key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(key);
    const char *kid = jstr(sa, "private_key_id");
    snprintf(aud, sizeof aud, "%s", jstr(sa, "token_uri"));
    time_t now = time(NULL);

    char *jwt = sign_jwt(key, kid, aud, now, now + 3600, SCOPE_ADMIN);
    resp r = jwt_grant(jwt);
    free(jwt);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    const char *tok = jstr(j, "access_token");
    assert_true(strncmp(tok, "ya29.emu-", 9) == 0);
    assert_string_equal(jstr(j, "token_type"), "Bearer");
    assert_true(json_integer_value(json_object_get(j, "expires_in")) > 3000);
    assert_string_equal(jstr(j, "scope"), SCOPE_ADMIN);
    resp api = get_settings(PG_PATH, tok);
    assert_int_equal(api.status, 200);
    resp_free(&api);
    json_decref(j);
    resp_free(&r);

    /* The token carries the assertion's scopes, no more. */
    jwt = sign_jwt(key, kid, aud, now, now + 600, SCOPE_EMAIL);
    r = jwt_grant(jwt);
    free(jwt);
    j = json_of(&r);
    api = get_settings(PG_PATH, jstr(j, "access_token"));
    expect_google_error(&api, 403, "PERMISSION_DENIED");
    resp_free(&api);
    json_decref(j);
    resp_free(&r);

    jwt = sign_jwt(key, kid, "https://oauth2.googleapis.com/token", now, now + 600, SCOPE_ADMIN);
    r = jwt_grant(jwt);
    free(jwt);
    expect_oauth_error(&r, 400, "invalid_grant");
    resp_free(&r);
    jwt = sign_jwt(key, kid, aud, now - 7200, now - 3600, SCOPE_ADMIN);
    r = jwt_grant(jwt);
    free(jwt);
    expect_oauth_error(&r, 400, "invalid_grant");
    resp_free(&r);
    EVP_PKEY *other = EVP_RSA_gen(2048);
    jwt = sign_jwt(other, kid, aud, now, now + 600, SCOPE_ADMIN);
    r = jwt_grant(jwt);
    free(jwt);
    expect_oauth_error(&r, 400, "invalid_grant");
    assert_non_null(strstr(r.body, "Signature"));
    resp_free(&r);
    EVP_PKEY_free(other);

    r = post_form("grant_type=password&username=a&password=b");
    expect_oauth_error(&r, 400, "unsupported_grant_type");
    resp_free(&r);
    r = post_form("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
    expect_oauth_error(&r, 400, "invalid_request");
    resp_free(&r);
    r = http("GET", "/token", NULL, NULL, NULL);
    assert_int_equal(r.status, 405);
    resp_free(&r);
    EVP_PKEY_free(key);
    json_decref(sa);
}

static void test_token_refresh_grant(void **state)
{
    (void)state;
    mode_t mode;
    char form[1024];
    json_t *au = read_json_file("authorized_user.json", &mode);
    char *id = curl_easy_escape(NULL, jstr(au, "client_id"), 0);
    char *secret = curl_easy_escape(NULL, jstr(au, "client_secret"), 0);
    char *refresh = curl_easy_escape(NULL, jstr(au, "refresh_token"), 0);

    snprintf(form, sizeof form, "grant_type=refresh_token&client_id=%s&client_secret=%s"
                                "&refresh_token=%s", id, secret, refresh);
    resp r = post_form(form);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    const char *scope = jstr(j, "scope");
    assert_non_null(strstr(scope, SCOPE_CLOUD));
    assert_non_null(strstr(scope, SCOPE_LOGIN));
    assert_non_null(strstr(scope, SCOPE_EMAIL));
    /* The user's token works for the Admin API and as a login token. */
    resp api = get_settings(PG_PATH, jstr(j, "access_token"));
    assert_int_equal(api.status, 200);
    resp_free(&api);
    api = generate_for(PG_PATH, pub_pem, jstr(j, "access_token"));
    assert_int_equal(api.status, 200);
    resp_free(&api);
    json_decref(j);
    resp_free(&r);

    snprintf(form, sizeof form, "grant_type=refresh_token&client_id=%s&client_secret=%s"
                                "&refresh_token=%s&scope=%s", id, secret, refresh,
             "https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fuserinfo.email");
    r = post_form(form);
    j = json_of(&r);
    assert_string_equal(jstr(j, "scope"), SCOPE_EMAIL);
    json_decref(j);
    resp_free(&r);

    snprintf(form, sizeof form, "grant_type=refresh_token&client_id=%s&client_secret=%s"
                                "&refresh_token=1%%2F%%2Fwrong", id, secret);
    r = post_form(form);
    expect_oauth_error(&r, 400, "invalid_grant");
    resp_free(&r);
    snprintf(form, sizeof form, "grant_type=refresh_token&client_id=%s&client_secret=nope"
                                "&refresh_token=%s", id, refresh);
    r = post_form(form);
    expect_oauth_error(&r, 401, "invalid_client");
    resp_free(&r);
    r = post_form("grant_type=refresh_token&client_id=x");
    expect_oauth_error(&r, 400, "invalid_request");
    resp_free(&r);
    curl_free(id), curl_free(secret), curl_free(refresh);
    json_decref(au);
}

/* ---------------- metadata and impersonation ---------------- */

static const char *const FLAVOR[] = {"Metadata-Flavor: Google", NULL};

static void test_metadata(void **state)
{
    (void)state;
    const char *tok_path = "/computeMetadata/v1/instance/service-accounts/default/token";
    resp r = http("GET", tok_path, NULL, NULL, NULL);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.flavor, "Google");
    resp_free(&r);
    r = http("GET", tok_path, NULL, NULL, (const char *[]){"Metadata-Flavor: Other", NULL});
    assert_int_equal(r.status, 403);
    resp_free(&r);

    r = http("GET", tok_path, NULL, NULL, FLAVOR);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.flavor, "Google");
    json_t *j = json_of(&r);
    assert_string_equal(jstr(j, "token_type"), "Bearer");
    assert_true(json_integer_value(json_object_get(j, "expires_in")) > 0);
    resp api = get_settings(PG_PATH, jstr(j, "access_token")); /* cloud-platform by default */
    assert_int_equal(api.status, 200);
    resp_free(&api);
    json_decref(j);
    resp_free(&r);

    char path[512];
    snprintf(path, sizeof path, "%s?scopes=%s,%s", tok_path, SCOPE_EMAIL, SCOPE_LOGIN);
    r = http("GET", path, NULL, NULL, FLAVOR);
    j = json_of(&r);
    api = get_settings(PG_PATH, jstr(j, "access_token"));
    expect_google_error(&api, 403, "PERMISSION_DENIED");
    resp_free(&api);
    json_decref(j);
    resp_free(&r);

    r = http("GET", "/computeMetadata/v1/instance/service-accounts/default/email", NULL, NULL,
             FLAVOR);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, SA_EMAIL);
    resp_free(&r);
    r = http("GET", "/computeMetadata/v1/instance/service-accounts/default/?recursive=true", NULL,
             NULL, FLAVOR);
    assert_int_equal(r.status, 200);
    j = json_of(&r);
    assert_string_equal(jstr(j, "email"), SA_EMAIL);
    assert_true(json_array_size(json_object_get(j, "scopes")) >= 1);
    json_decref(j);
    resp_free(&r);
    r = http("GET", "/computeMetadata/v1/project/project-id", NULL, NULL, FLAVOR);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    r = http("GET", "/computeMetadata/v1/instance/service-accounts/x@y.com/token", NULL, NULL,
             FLAVOR);
    assert_int_equal(r.status, 404);
    resp_free(&r);
}

static void test_impersonation(void **state)
{
    (void)state;
    const char *path = "/v1/projects/-/serviceAccounts/"
                       "target%40p-test.iam.gserviceaccount.com:generateAccessToken";
    const char *body = "{\"scope\":[\"" SCOPE_ADMIN "\"],\"lifetime\":\"600s\","
                       "\"delegates\":[]}";
    resp r = http("POST", path, STATIC_TOKEN, body, NULL);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    const char *tok = jstr(j, "accessToken");
    assert_true(strncmp(tok, "ya29.emu-", 9) == 0);
    assert_non_null(jstr(j, "expireTime"));
    resp api = get_settings(PG_PATH, tok);
    assert_int_equal(api.status, 200);
    resp_free(&api);
    /* It has only the scopes asked for: not a login token. */
    api = generate_for(PG_PATH, pub_pem, tok);
    expect_google_error(&api, 400, "INVALID_ARGUMENT");
    resp_free(&api);
    json_decref(j);
    resp_free(&r);

    r = http("POST", path, NULL, body, NULL);
    expect_google_error(&r, 401, "UNAUTHENTICATED");
    resp_free(&r);
    char *admin_only = mint("u@example.com", SCOPE_ADMIN, -1);
    r = http("POST", path, admin_only, body, NULL);
    expect_google_error(&r, 403, "PERMISSION_DENIED");
    resp_free(&r);
    free(admin_only);
    r = http("POST", path, STATIC_TOKEN, "{\"scope\":[]}", NULL);
    expect_google_error(&r, 400, "INVALID_ARGUMENT");
    resp_free(&r);
    r = http("POST", path, STATIC_TOKEN, "{\"scope\":[\"a\"],\"lifetime\":\"1h\"}", NULL);
    expect_google_error(&r, 400, "INVALID_ARGUMENT");
    resp_free(&r);
}

/* ---------------- faults and counters ---------------- */

static void add_fault(const char *json)
{
    long st = admin("POST", "/emulator/faults", json);
    if (st != 200)
        fail_msg("POST /emulator/faults %s: %ld", json, st);
}

static void test_fault_statuses(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *status;
    } cases[] = {{401, "UNAUTHENTICATED"}, {403, "PERMISSION_DENIED"}, {404, "NOT_FOUND"},
                 {429, "RESOURCE_EXHAUSTED"}, {500, "INTERNAL"}, {503, "UNAVAILABLE"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char f[256];
        snprintf(f, sizeof f,
                 "{\"endpoint\":\"connectSettings\",\"status\":%d,\"count\":1%s}",
                 cases[i].code, cases[i].code == 429 ? ",\"retry_after\":2" : "");
        add_fault(f);
        resp r = get_settings(PG_PATH, STATIC_TOKEN);
        expect_google_error(&r, cases[i].code, cases[i].status);
        assert_string_equal(r.retry_after, cases[i].code == 429 ? "2" : "");
        resp_free(&r);
        r = get_settings(PG_PATH, STATIC_TOKEN); /* count 1: gone again */
        assert_int_equal(r.status, 200);
        resp_free(&r);
    }
    add_fault("{\"endpoint\":\"generateEphemeralCert\",\"status\":503,\"message\":\"maintenance\","
              "\"reason\":\"BACKEND_BUSY\",\"count\":1}");
    resp r = generate_for(PG_PATH, pub_pem, NULL);
    expect_google_error(&r, 503, "BACKEND_BUSY");
    assert_non_null(strstr(r.body, "maintenance"));
    resp_free(&r);
}

static void test_fault_latency_and_malformed(void **state)
{
    (void)state;
    add_fault("{\"endpoint\":\"connectSettings\",\"latency_ms\":300,\"count\":1}");
    resp r = get_settings(PG_PATH, STATIC_TOKEN);
    assert_int_equal(r.status, 200);
    assert_true(r.secs >= 0.3);
    resp_free(&r);

    add_fault("{\"endpoint\":\"connectSettings\",\"malformed\":true,\"count\":1}");
    r = get_settings(PG_PATH, STATIC_TOKEN);
    assert_int_equal(r.status, 200);
    assert_true(r.len > 10);
    assert_null(json_loads(r.body, 0, NULL));
    resp_free(&r);
    r = get_settings(PG_PATH, STATIC_TOKEN);
    json_t *j = json_of(&r);
    json_decref(j);
    resp_free(&r);

    /* An error status with a malformed body. */
    add_fault("{\"endpoint\":\"connectSettings\",\"status\":503,\"malformed\":true,\"count\":1}");
    r = get_settings(PG_PATH, STATIC_TOKEN);
    assert_int_equal(r.status, 503);
    assert_null(json_loads(r.body, 0, NULL));
    resp_free(&r);
}

static void test_fault_count_instance_and_clear(void **state)
{
    (void)state;
    add_fault("{\"endpoint\":\"connectSettings\",\"instance\":\"p-test:us-central1:pg\","
              "\"status\":500,\"count\":2}");
    resp r = get_settings(CAS_PATH, STATIC_TOKEN); /* another instance: unaffected */
    assert_int_equal(r.status, 200);
    resp_free(&r);
    for (int i = 0; i < 2; i++) {
        r = get_settings(PG_PATH, STATIC_TOKEN);
        assert_int_equal(r.status, 500);
        resp_free(&r);
    }
    r = get_settings(PG_PATH, STATIC_TOKEN);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    /* "*" covers the token and metadata endpoints, in their own error styles. */
    add_fault("{\"endpoint\":\"*\",\"status\":503}");
    r = post_form("grant_type=refresh_token");
    expect_oauth_error(&r, 503, "server_error");
    resp_free(&r);
    r = http("GET", "/computeMetadata/v1/instance/service-accounts/default/token", NULL, NULL,
             FLAVOR);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.flavor, "Google");
    resp_free(&r);
    r = http("GET", "/emulator/faults", NULL, NULL, NULL);
    json_t *j = json_of(&r);
    assert_int_equal(json_array_size(json_object_get(j, "faults")), 1);
    json_decref(j);
    resp_free(&r);
    assert_int_equal(admin("DELETE", "/emulator/faults", NULL), 200);
    r = get_settings(PG_PATH, STATIC_TOKEN);
    assert_int_equal(r.status, 200);
    resp_free(&r);

    assert_int_equal(admin("POST", "/emulator/faults", "{\"endpoint\":\"nope\",\"status\":1}"),
                     400);
    assert_int_equal(admin("POST", "/emulator/faults",
                           "{\"endpoint\":\"token\",\"status\":503,\"instance\":\"p:r:x\"}"),
                     400);
    assert_int_equal(admin("POST", "/emulator/faults", "{"), 400);
}

static uint64_t counter(json_t *c, const char *ep, const char *inst)
{
    json_t *e = json_object_get(json_object_get(c, "endpoints"), ep);
    if (!inst)
        return (uint64_t)json_integer_value(json_object_get(e, "total"));
    return (uint64_t)json_integer_value(json_object_get(json_object_get(e, "instances"), inst));
}

static void test_counters(void **state)
{
    (void)state;
    assert_int_equal(admin("POST", "/emulator/counters/reset", NULL), 200);
    for (int i = 0; i < 3; i++) {
        resp r = get_settings(PG_PATH, STATIC_TOKEN);
        resp_free(&r);
    }
    resp r = get_settings(CAS_PATH, NULL); /* refused requests count too */
    resp_free(&r);
    r = http("GET", "/computeMetadata/v1/instance/service-accounts/default/email", NULL, NULL,
             FLAVOR);
    resp_free(&r);

    r = http("GET", "/emulator/counters", NULL, NULL, NULL);
    json_t *c = json_of(&r);
    assert_int_equal(counter(c, "connectSettings", NULL), 4);
    assert_int_equal(counter(c, "connectSettings", "p-test:us-central1:pg"), 3);
    assert_int_equal(counter(c, "connectSettings", "google.com:dom-proj:europe-west1:my"), 1);
    assert_int_equal(counter(c, "metadata", NULL), 1);
    assert_int_equal(counter(c, "generateEphemeralCert", NULL), 0);
    json_t *px = json_object_get(json_object_get(c, "proxy"), "p-test:us-central1:pg");
    assert_non_null(json_object_get(px, "accepted"));
    assert_non_null(json_object_get(px, "active"));
    json_decref(c);
    resp_free(&r);

    assert_int_equal(admin("POST", "/emulator/counters/reset", NULL), 200);
    r = http("GET", "/emulator/counters", NULL, NULL, NULL);
    c = json_of(&r);
    assert_int_equal(counter(c, "connectSettings", NULL), 0);
    json_decref(c);
    resp_free(&r);
}

static void test_cert_lifetime(void **state)
{
    (void)state;
    assert_int_equal(admin("POST", "/emulator/cert-lifetime", "{\"seconds\":20}"), 200);
    resp r = generate_for(PG_PATH, pub_pem, NULL);
    json_t *j = json_of(&r);
    time_t na = cert_not_after(jstr(json_object_get(j, "ephemeralCert"), "cert"));
    time_t now = time(NULL);
    assert_true(na >= now + 15 && na <= now + 25);
    json_decref(j);
    resp_free(&r);
    assert_int_equal(admin("POST", "/emulator/cert-lifetime", "{\"seconds\":0}"), 400);
    assert_int_equal(admin("POST", "/emulator/cert-lifetime", "{\"seconds\":\"5\"}"), 400);
}

static int tcp_connect(const char *ip, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    close(fd);
    return rc;
}

static void test_instance_actions(void **state)
{
    (void)state;
    resp r = get_settings(PG_PATH, STATIC_TOKEN);
    json_t *j = json_of(&r);
    char *before = strdup(jstr(json_object_get(j, "serverCaCert"), "cert"));
    json_decref(j);
    resp_free(&r);

    assert_int_equal(admin("POST", "/emulator/instances/p-test:us-central1:pg/rotate-ca", NULL),
                     200);
    r = get_settings(PG_PATH, STATIC_TOKEN);
    j = json_of(&r);
    assert_string_not_equal(jstr(json_object_get(j, "serverCaCert"), "cert"), before);
    json_decref(j);
    resp_free(&r);
    free(before);
    /* The escaped form names the same instance. */
    assert_int_equal(admin("POST",
                           "/emulator/instances/google.com%3Adom-proj%3Aeurope-west1%3Amy/"
                           "rotate-ca",
                           NULL),
                     200);

    assert_int_equal(tcp_connect(ip_pg, server_port), 0);
    assert_int_equal(admin("POST", "/emulator/instances/p-test:us-central1:pg/refuse-tcp",
                           "{\"refuse\":true}"),
                     200);
    assert_int_equal(tcp_connect(ip_pg, server_port), -1);
    assert_int_equal(admin("POST", "/emulator/instances/p-test:us-central1:pg/refuse-tcp",
                           "{\"refuse\":false}"),
                     200);
    assert_int_equal(tcp_connect(ip_pg, server_port), 0);
    assert_int_equal(admin("POST", "/emulator/instances/p-test:us-central1:pg/refuse-tcp",
                           "{\"refuse\":1}"),
                     400);
    assert_int_equal(
        admin("POST", "/emulator/instances/p-test:us-central1:pg/drop-connections", NULL), 200);
    assert_int_equal(admin("POST", "/emulator/instances/p:r:nope/rotate-ca", NULL), 404);
    assert_int_equal(admin("POST", "/emulator/instances/p-test:us-central1:pg/explode", NULL),
                     404);
    assert_int_equal(admin("GET", "/emulator/nothing", NULL), 404);
}

typedef struct worker {
    int ok;
} worker;

static void *concurrent_worker(void *p)
{
    worker *w = p;
    resp r = get_settings(PG_PATH, STATIC_TOKEN);
    w->ok = r.status == 200;
    free(r.body);
    return NULL;
}

static void test_concurrent_requests(void **state)
{
    (void)state;
    enum { N = 8 };
    pthread_t th[N];
    worker w[N] = {0};
    struct timespec t0, t1;
    /* Each request waits 400 ms: served one at a time they would take 3.2 s. */
    add_fault("{\"endpoint\":\"connectSettings\",\"latency_ms\":400,\"count\":8}");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++)
        pthread_create(&th[i], NULL, concurrent_worker, &w[i]);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_true(w[i].ok);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (secs > 2.0)
        fail_msg("8 delayed requests took %.2f s: not served concurrently", secs);
}

/* ---------------- the command line ---------------- */

static void test_bad_command_lines_exit_2(void **state)
{
    (void)state;
    static const struct {
        const char *args[6];
        const char *needle;
    } cases[] = {
        {{"--api-port", "abc"}, "'abc'"},
        {{"--frobnicate"}, "--frobnicate"},
        {{"--instance", "p:r:i?version=ORACLE_19&public-ip=127.0.0.2&backend=127.0.0.1:1"},
         "ORACLE_19"},
        {{"--instance", "p:r:i?version=POSTGRES_15&public-ip=10.1.1.1&backend=127.0.0.1:1"},
         "10.1.1.1"},
        {{"--instance", "bad-name?version=POSTGRES_15&public-ip=127.0.0.2&backend=127.0.0.1:1"},
         "bad-name"},
        {{"--instance", "p:r:i?version=POSTGRES_15&public-ip=127.0.0.2&backend=127.0.0.1:1",
          "--instance", "p:r:i?version=POSTGRES_15&public-ip=127.0.0.3&backend=127.0.0.1:1"},
         "p:r:i"},
        {{"--fault", "endpoint=everything&status=503"}, "everything"},
        {{"--config", "/nonexistent/csql-emulator.json"}, "/nonexistent/csql-emulator.json"},
    };
    char out[4096], err[4096];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = run_emulator(cases[i].args, out, sizeof out, err, sizeof err);
        if (st != 2 || !strstr(err, cases[i].needle))
            fail_msg("case %zu: exit %d, stderr \"%s\" (want 2 and \"%s\")", i, st, err,
                     cases[i].needle);
        assert_string_equal(out, "");
    }
    /* A start-up failure (the API port is taken) is not a usage error: exit 1. */
    char ip[32], spec[256], ports[16];
    const char *api_port = strrchr(em.url, ':') + 1;
    csqlt_unique_ip(23, ip, sizeof ip);
    snprintf(ports, sizeof ports, "%d", server_port + 3);
    snprintf(spec, sizeof spec, "b:r:i?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:9", ip);
    int st = run_emulator((const char *[]){"--api-port", api_port, "--server-port", ports,
                                           "--instance", spec, NULL},
                          out, sizeof out, err, sizeof err);
    assert_int_equal(st, 1);
    assert_non_null(strstr(err, api_port));
    assert_string_equal(out, "");

    st = run_emulator((const char *[]){"--help", NULL}, out, sizeof out, err, sizeof err);
    assert_int_equal(st, 0);
    assert_non_null(strstr(out, "--instance"));
    st = run_emulator((const char *[]){"--version", NULL}, out, sizeof out, err, sizeof err);
    assert_int_equal(st, 0);
    assert_true(strncmp(out, "csql-emulator ", 14) == 0);
}

/* Start a second emulator with a config file and a startup fault; SIGINT ends it with 0. */
static void test_config_fault_and_sigint(void **state)
{
    (void)state;
    char dir[256], path[300], ip[32], ports[16], cfg[1024];
    assert_int_equal(csqlt_tempdir(dir, sizeof dir, "csql-emu-cfg"), 0);
    snprintf(path, sizeof path, "%s/emu.json", dir);
    snprintf(ports, sizeof ports, "%d", server_port + 1);
    csqlt_unique_ip(21, ip, sizeof ip);
    snprintf(cfg, sizeof cfg,
             "{\"static_tokens\":[\"cfg-token\"],\"server_port\":%d,\"cert_lifetime\":50,"
             "\"token_lifetime\":77,"
             "\"instances\":[{\"connection_name\":\"c:r:db\",\"version\":\"POSTGRES_15\","
             "\"public_ip\":\"%s\",\"backend\":\"127.0.0.1:9\"}],"
             "\"faults\":[{\"endpoint\":\"connectSettings\",\"status\":503,\"count\":1}]}",
             server_port + 1, ip);
    FILE *f = fopen(path, "w");
    fputs(cfg, f);
    fclose(f);

    csqlt_emulator em2;
    const char *args[] = {"--config", path, "--fault",
                          "endpoint=generateEphemeralCert&status=429&retry_after=7&count=1",
                          NULL};
    assert_int_equal(csqlt_emulator_start(&em2, 0, args), 0);
    csqlt_emulator saved = em;
    em = em2;
    resp r = get_settings("/sql/v1beta4/projects/c/instances/db", "cfg-token");
    expect_google_error(&r, 503, "UNAVAILABLE");
    resp_free(&r);
    r = get_settings("/sql/v1beta4/projects/c/instances/db", "cfg-token");
    assert_int_equal(r.status, 200);
    resp_free(&r);
    char *body = gen_body(pub_pem, NULL);
    r = generate("/sql/v1beta4/projects/c/instances/db", "cfg-token", body);
    free(body);
    expect_google_error(&r, 429, "RESOURCE_EXHAUSTED");
    assert_string_equal(r.retry_after, "7");
    resp_free(&r);

    /* cert_lifetime and token_lifetime from the file apply. */
    body = gen_body(pub_pem, NULL);
    r = generate("/sql/v1beta4/projects/c/instances/db", "cfg-token", body);
    free(body);
    assert_int_equal(r.status, 200);
    json_t *j = json_of(&r);
    time_t na = cert_not_after(jstr(json_object_get(j, "ephemeralCert"), "cert"));
    assert_true(na >= time(NULL) + 45 && na <= time(NULL) + 55);
    json_decref(j);
    resp_free(&r);
    r = http("GET", "/computeMetadata/v1/instance/service-accounts/default/token", NULL, NULL,
             FLAVOR);
    j = json_of(&r);
    assert_int_equal(json_integer_value(json_object_get(j, "expires_in")), 77);
    json_decref(j);
    resp_free(&r);
    em = saved;

    kill(em2.pid, SIGINT);
    int st = -1;
    for (int i = 0; i < 100; i++) {
        if (waitpid(em2.pid, &st, WNOHANG) == em2.pid)
            break;
        usleep(50000);
    }
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    em2.pid = -1;
    csqlt_emulator_stop(&em2);
    csqlt_rmdir(dir);
}

/* --verbose logs one line per request, without tokens. */
static void test_verbose_log_has_no_secrets(void **state)
{
    (void)state;
    const char *bin = getenv("CSQL_EMULATOR");
    char dir[256], log[300], ip[32], ports[16], spec[256], url[128] = "";
    assert_int_equal(csqlt_tempdir(dir, sizeof dir, "csql-emu-log"), 0);
    snprintf(log, sizeof log, "%s/stderr", dir);
    snprintf(ports, sizeof ports, "%d", server_port + 2);
    csqlt_unique_ip(22, ip, sizeof ip);
    snprintf(spec, sizeof spec, "v:r:db?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:9", ip);
    int po[2];
    assert_int_equal(pipe(po), 0);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 2);
        dup2(po[1], 1);
        close(po[0]);
        execl(bin, bin, "--verbose", "--static-token", "secret-static-token", "--server-port",
              ports, "--instance", spec, (char *)NULL);
        _exit(127);
    }
    close(po[1]);
    FILE *out = fdopen(po[0], "r");
    assert_non_null(fgets(url, sizeof url, out));
    url[strcspn(url, "\n")] = '\0';
    csqlt_emulator saved = em;
    snprintf(em.url, sizeof em.url, "%s", url);
    resp r = get_settings("/sql/v1beta4/projects/v/instances/db", "secret-static-token");
    assert_int_equal(r.status, 200);
    resp_free(&r);
    char *body = gen_body(pub_pem, "secret-static-token");
    r = generate("/sql/v1beta4/projects/v/instances/db", "secret-static-token", body);
    free(body);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    em = saved;
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    fclose(out);
    assert_int_equal(WEXITSTATUS(st), 0);

    char text[8192] = "";
    FILE *lf = fopen(log, "r");
    size_t n = fread(text, 1, sizeof text - 1, lf);
    text[n] = '\0';
    fclose(lf);
    assert_non_null(strstr(text, "GET /sql/v1beta4/projects/v/instances/db/connectSettings -> "
                                 "200"));
    assert_non_null(strstr(text, "POST /sql/v1beta4/projects/v/instances/db:"
                                 "generateEphemeralCert -> 200"));
    assert_null(strstr(text, "secret-static-token"));
    assert_null(strstr(text, "BEGIN"));
    csqlt_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_bearer_required, reset),
        cmocka_unit_test_setup(test_wrong_scope_is_403, reset),
        cmocka_unit_test_setup(test_unknown_instance_and_path, reset),
        cmocka_unit_test_setup(test_connect_settings_legacy, reset),
        cmocka_unit_test_setup(test_connect_settings_cas_and_domain_project, reset),
        cmocka_unit_test_setup(test_connect_settings_psc, reset),
        cmocka_unit_test_setup(test_generate_ephemeral_cert, reset),
        cmocka_unit_test_setup(test_generate_bad_requests, reset),
        cmocka_unit_test_setup(test_iam_login_token, reset),
        cmocka_unit_test_setup(test_legacy_endpoints, reset),
        cmocka_unit_test_setup(test_credentials_files, reset),
        cmocka_unit_test_setup(test_token_jwt_grant, reset),
        cmocka_unit_test_setup(test_token_refresh_grant, reset),
        cmocka_unit_test_setup(test_metadata, reset),
        cmocka_unit_test_setup(test_impersonation, reset),
        cmocka_unit_test_setup(test_fault_statuses, reset),
        cmocka_unit_test_setup(test_fault_latency_and_malformed, reset),
        cmocka_unit_test_setup(test_fault_count_instance_and_clear, reset),
        cmocka_unit_test_setup(test_counters, reset),
        cmocka_unit_test_setup(test_cert_lifetime, reset),
        cmocka_unit_test_setup(test_instance_actions, reset),
        cmocka_unit_test_setup(test_concurrent_requests, reset),
        cmocka_unit_test(test_bad_command_lines_exit_2),
        cmocka_unit_test(test_config_fault_and_sigint),
        cmocka_unit_test(test_verbose_log_has_no_secrets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
