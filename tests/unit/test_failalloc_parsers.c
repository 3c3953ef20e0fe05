/*
 * Allocation failures in the parsers: every allocation made while parsing
 * (csql's own, jansson's and OpenSSL's) fails in turn. Each parse must report
 * CSQL_ERR_NOMEM or its own error with a message, leave its output empty, and
 * never crash or leak (the asan preset runs LeakSanitizer at exit); the first
 * run without an injected failure must give the normal result.
 * Parsers that promise not to allocate (instance names, MDX frames) are
 * checked to make no allocation at all.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "connect_info.h"
#include "credentials/creds_internal.h"
#include "csql/errors.h"
#include "failalloc.h"
#include "instance_name.h"
#include "mdx.h"
#include "tls.h"

#define MAX_RUNS 100000

static char *g_ca_pem;     /* two self-signed CAs */
static char *g_cert_pem;   /* client certificate for g_key */
static EVP_PKEY *g_key;    /* EC P-256 */
static char *g_rsa_pem;    /* an RSA private key, PKCS#8 PEM, for service account files */
static csql__instance_name g_name;

/* ---------------- fixtures ---------------- */

static char *pem_of_cert(X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    assert_int_equal(PEM_write_bio_X509(bio, x), 1);
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *out = malloc((size_t)n + 1);
    assert_non_null(out);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

static char *self_signed_pem(EVP_PKEY *key, const char *cn)
{
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    char *pem = pem_of_cert(x);
    X509_free(x);
    return pem;
}

static int group_setup(void **state)
{
    (void)state;
    g_key = EVP_EC_gen("P-256");
    EVP_PKEY *ca_key = EVP_EC_gen("P-256");
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    assert_non_null(g_key);
    assert_non_null(ca_key);
    assert_non_null(rsa);
    g_cert_pem = self_signed_pem(g_key, "Google Cloud SQL Client");
    char *ca1 = self_signed_pem(ca_key, "Google Cloud SQL Server CA");
    char *ca2 = self_signed_pem(ca_key, "Google Cloud SQL Intermediate CA");
    g_ca_pem = malloc(strlen(ca1) + strlen(ca2) + 1);
    assert_non_null(g_ca_pem);
    strcpy(g_ca_pem, ca1);
    strcat(g_ca_pem, ca2);
    free(ca1);
    free(ca2);

    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(bio, rsa, NULL, NULL, 0, NULL, NULL), 1);
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    g_rsa_pem = malloc((size_t)n + 1);
    assert_non_null(g_rsa_pem);
    memcpy(g_rsa_pem, data, (size_t)n);
    g_rsa_pem[n] = '\0';
    BIO_free(bio);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ca_key);
    assert_int_equal(csql__instance_name_parse("google.com:p:us-central1:i", &g_name), 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(g_ca_pem);
    free(g_cert_pem);
    free(g_rsa_pem);
    EVP_PKEY_free(g_key);
    return 0;
}

/* The error of a failed run: NOMEM or one of the parser's own codes, with a message. */
static void assert_clean_error(int rc, int allowed1, int allowed2)
{
    if (rc != CSQL_ERR_NOMEM && rc != allowed1 && rc != allowed2) {
        fail_msg("unexpected error %d (%s): %s", rc, csql_strerror(rc),
                 csql_error_last()->message);
    }
    assert_int_equal(csql_error_last()->code, rc);
    assert_true(strlen(csql_error_last()->message) > strlen("csql: "));
}

/*
 * jansson's lexer drops a byte when growing its string buffer fails and goes
 * on, so a parse whose failed allocation was jansson's may succeed with a
 * damaged string, or fail for what looks like bad input. csql cannot see it;
 * such runs are only checked for clean errors and empty outputs.
 */
static int jansson_damage(int injected)
{
    return injected == CSQLT_FA_JANSSON;
}

/* Fail each allocation in turn, once alone and once with every later allocation failing too. */
static long each_both(csqlt_failalloc_run_fn run, csqlt_failalloc_check_fn check, void *arg)
{
    long n = csqlt_failalloc_each(run, check, arg, MAX_RUNS);
    long m = csqlt_failalloc_each_sticky(run, check, arg, MAX_RUNS);
    assert_int_equal(m, n);
    return n;
}

static void report(const char *what, long allocs)
{
    assert_true(allocs >= 0);
    print_message("%s: %ld allocations, each failed in turn (alone, then with all after it)\n", what,
                  allocs);
}

/* ---------------- pure parsers: no allocation at all ---------------- */

static void test_instance_name_and_mdx_do_not_allocate(void **state)
{
    (void)state;
    csql__instance_name n;
    unsigned char buf[256];
    int status = 0;
    char msg[64];
    static const unsigned char ok[] = "CSQLMDEX\0\0\0\x02\x08\x01";

    csqlt_failalloc_arm(0);
    int r1 = csql__instance_name_parse("google.com:p:us-central1:i", &n);
    int r2 = csql__instance_name_parse("not a name", &n);
    int r3 = csql__mdx_encode_request("csql/1.0", CSQL__MDX_PROTO_TLS, buf, sizeof(buf));
    int r4 = csql__mdx_decode_response(ok, sizeof(ok) - 1, &status, msg, sizeof(msg));
    long allocs = csqlt_failalloc_disarm();

    assert_int_equal(r1, 0);
    assert_int_equal(r2, CSQL_ERR_BAD_INSTANCE_NAME);
    assert_true(r3 > 12);
    assert_int_equal(r4, 14);
    assert_int_equal(status, CSQL__MDX_OK);
    assert_int_equal(allocs, 0);
}

/* ---------------- connectSettings ---------------- */

typedef struct ci_case {
    const char *body;
    int want_rc;           /* of a run without injected failures */
    csql__connect_info ref; /* the result of a run without injection, when want_rc == 0 */
    csql__connect_info got;
} ci_case;

static int ci_run(void *arg)
{
    ci_case *c = arg;
    return csql__connect_info_parse(c->body, strlen(c->body), &g_name, &c->got);
}

static void assert_same_str(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        assert_ptr_equal(a, b);
    } else {
        assert_string_equal(a, b);
    }
}

static void ci_check(void *arg, int rc, int injected)
{
    ci_case *c = arg;
    if (!injected || (rc == CSQL_OK && !jansson_damage(injected))) {
        /* A tolerated failure (an OpenSSL error string, a hash table resize) changes nothing. */
        assert_int_equal(rc, c->want_rc);
    }
    if (rc == CSQL_OK && jansson_damage(injected)) {
        csql__connect_info_dispose(&c->got);
        return;
    }
    if (rc == CSQL_OK) {
        assert_same_str(c->got.database_version, c->ref.database_version);
        assert_same_str(c->got.region, c->ref.region);
        assert_same_str(c->got.public_ip, c->ref.public_ip);
        assert_same_str(c->got.private_ip, c->ref.private_ip);
        assert_same_str(c->got.psc_dns, c->ref.psc_dns);
        assert_same_str(c->got.dns_name, c->ref.dns_name);
        assert_same_str(c->got.ca_pem, c->ref.ca_pem);
        assert_same_str(c->got.server_ca_mode, c->ref.server_ca_mode);
        assert_int_equal(c->got.mdx_supported, c->ref.mdx_supported);
        csql__connect_info_dispose(&c->got);
        return;
    }
    if (jansson_damage(injected)) {
        /* A damaged region, version or address reads as the matching configuration error. */
        assert_true(rc < 0 && csql_error_last()->code == rc);
    } else {
        assert_clean_error(rc, CSQL_ERR_API_RESPONSE, c->want_rc);
    }
    assert_null(c->got.database_version);
    assert_null(c->got.region);
    assert_null(c->got.public_ip);
    assert_null(c->got.private_ip);
    assert_null(c->got.psc_dns);
    assert_null(c->got.dns_name);
    assert_null(c->got.ca_pem);
    assert_null(c->got.server_ca_mode);
}

static char *settings_json(const char *region, int cas)
{
    json_t *o = json_pack("{s:s, s:{s:s}, s:[{s:s, s:s}, {s:s, s:s}], s:s, s:s, s:s, s:[s]}",
                          "kind", "sql#connectSettings", "serverCaCert", "cert", g_ca_pem,
                          "ipAddresses", "type", "PRIMARY", "ipAddress", "34.1.2.3", "type",
                          "PRIVATE", "ipAddress", "10.0.0.5", "region", region,
                          "databaseVersion", "POSTGRES_15", "backendType", "SECOND_GEN",
                          "mdxProtocolSupport", "CLIENT_PROTOCOL_TYPE");
    assert_non_null(o);
    if (cas) {
        json_object_set_new(o, "serverCaMode", json_string("GOOGLE_MANAGED_CAS_CA"));
        json_object_set_new(o, "pscEnabled", json_true());
        json_object_set_new(o, "dnsName", json_string("i.p.us-central1.sql.goog."));
        json_object_set_new(o, "dnsNames",
                            json_pack("[{s:s, s:s, s:s}]", "name", "i.p.us-central1.sql.goog.",
                                      "connectionType", "PRIVATE_SERVICE_CONNECT", "dnsScope",
                                      "INSTANCE"));
    }
    char *s = json_dumps(o, JSON_COMPACT);
    assert_non_null(s);
    json_decref(o);
    return s;
}

static void run_ci(const char *label, char *body, int want_rc)
{
    ci_case c;
    memset(&c, 0, sizeof(c));
    c.body = body;
    c.want_rc = want_rc;
    assert_int_equal(csql__connect_info_parse(body, strlen(body), &g_name, &c.ref), want_rc);
    report(label, each_both(ci_run, ci_check, &c));
    csql__connect_info_dispose(&c.ref);
    free(body);
}

static void test_connect_settings(void **state)
{
    (void)state;
    run_ci("connectSettings (legacy)", settings_json("us-central1", 0), CSQL_OK);
    run_ci("connectSettings (CAS, PSC)", settings_json("us-central1", 1), CSQL_OK);
    run_ci("connectSettings (region mismatch)", settings_json("europe-west1", 0),
           CSQL_ERR_REGION_MISMATCH);
}

/* ---------------- generateEphemeralCert ---------------- */

typedef struct ec_case {
    char *body;
    char *got;
} ec_case;

static int ec_run(void *arg)
{
    ec_case *c = arg;
    return csql__ephemeral_cert_parse(c->body, strlen(c->body), &c->got);
}

static void ec_check(void *arg, int rc, int injected)
{
    ec_case *c = arg;
    if (rc == CSQL_OK) {
        if (!jansson_damage(injected)) {
            assert_string_equal(c->got, g_cert_pem);
        }
        free(c->got);
        c->got = NULL;
        return;
    }
    assert_true(injected);
    assert_clean_error(rc, CSQL_ERR_API_RESPONSE, CSQL_ERR_API_RESPONSE);
    assert_null(c->got);
}

static void test_ephemeral_cert(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:{s:s, s:s}}", "ephemeralCert", "cert", g_cert_pem,
                          "expirationTime", "2030-01-01T00:00:00Z");
    ec_case c = {json_dumps(o, JSON_COMPACT), NULL};
    json_decref(o);
    assert_non_null(c.body);
    report("generateEphemeralCert", each_both(ec_run, ec_check, &c));
    free(c.body);
}

/* ---------------- Google error JSON ---------------- */

typedef struct ge_case {
    long status;
    const char *body;
    int want_rc;
} ge_case;

static int ge_run(void *arg)
{
    ge_case *c = arg;
    return csql__google_error_raise(c->status, c->body, strlen(c->body), "connectSettings for x");
}

static void ge_check(void *arg, int rc, int injected)
{
    ge_case *c = arg;
    /* Out of memory, the body is summarised instead of parsed: same code, still a message. */
    assert_int_equal(rc, c->want_rc);
    assert_int_equal(csql_error_last()->http_status, c->status);
    assert_non_null(strstr(csql_error_last()->message, "connectSettings for x: HTTP"));
    if (!injected) {
        assert_non_null(strstr(csql_error_last()->message, "PERMISSION_DENIED"));
    }
}

static void test_google_error(void **state)
{
    (void)state;
    ge_case c = {403,
                 "{\"error\":{\"code\":403,\"message\":\"The client is not authorized.\","
                 "\"status\":\"PERMISSION_DENIED\",\"errors\":[{\"reason\":\"notAuthorized\"}]}}",
                 CSQL_ERR_PERMISSION_DENIED};
    report("Google error JSON", each_both(ge_run, ge_check, &c));
}

/* ---------------- credentials files ---------------- */

typedef struct cf_case {
    char *json;
    csql__creds_file_type want_type;
    int with_source;  /* also build the token source (parses the RSA key) */
    csql__creds_file got;
    csql__token_source src;
} cf_case;

static int cf_run(void *arg)
{
    cf_case *c = arg;
    memset(&c->src, 0, sizeof(c->src));
    int rc = csql__creds_file_parse(c->json, strlen(c->json), "credentials JSON", &c->got);
    if (rc == CSQL_OK && c->with_source) {
        rc = csql__source_from_file(&c->got, "credentials JSON", &c->src);
        csql__creds_file_dispose(&c->got); /* moved into the source, or already disposed */
    }
    return rc;
}

static void cf_check(void *arg, int rc, int injected)
{
    cf_case *c = arg;
    if (rc == CSQL_OK) {
        if (c->with_source) {
            assert_non_null(c->src.fetch);
            assert_non_null(c->src.description);
            csql__token_source_dispose(&c->src);
        } else {
            assert_int_equal(c->got.type, c->want_type);
            assert_non_null(c->got.token_uri);
            csql__creds_file_dispose(&c->got);
        }
        return;
    }
    assert_true(injected);
    /* An RSA key that cannot be loaded for want of memory reads as a bad key. */
    assert_clean_error(rc, CSQL_ERR_CREDENTIALS, CSQL_ERR_CREDENTIALS);
    assert_null(c->got.client_email);
    assert_null(c->got.private_key);
    assert_null(c->got.client_secret);
    assert_null(c->got.refresh_token);
    assert_null(c->got.token_uri);
    assert_null(c->src.description);
    assert_null(c->src.state);
}

static void test_credentials_files(void **state)
{
    (void)state;
    json_t *sa = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account",
                           "project_id", "p", "private_key_id", "k1", "private_key", g_rsa_pem,
                           "client_email", "sa@p.iam.gserviceaccount.com", "token_uri",
                           "http://127.0.0.1:1/token");
    json_t *au = json_pack("{s:s, s:s, s:s, s:s}", "type", "authorized_user", "client_id",
                           "id.apps.googleusercontent.com", "client_secret", "not-a-real-secret",
                           "refresh_token", "1//not-a-real-refresh-token");
    cf_case c;
    memset(&c, 0, sizeof(c));
    c.json = json_dumps(sa, JSON_COMPACT);
    c.want_type = CSQL__FILE_SERVICE_ACCOUNT;
    report("service_account file", each_both(cf_run, cf_check, &c));
    c.with_source = 1;
    report("service_account file + token source",
           each_both(cf_run, cf_check, &c));
    free(c.json);

    memset(&c, 0, sizeof(c));
    c.json = json_dumps(au, JSON_COMPACT);
    c.want_type = CSQL__FILE_AUTHORIZED_USER;
    report("authorized_user file", each_both(cf_run, cf_check, &c));
    c.with_source = 1;
    report("authorized_user file + token source",
           each_both(cf_run, cf_check, &c));
    free(c.json);
    json_decref(sa);
    json_decref(au);
}

/* ---------------- token endpoint answers ---------------- */

typedef struct tr_case {
    long status;
    const char *body;
    int impersonate;
    int want_rc;
    csql__token got;
} tr_case;

static int tr_run(void *arg)
{
    tr_case *c = arg;
    if (c->impersonate) {
        return csql__impersonate_response_parse(c->status, c->body, strlen(c->body), "iam",
                                                &c->got);
    }
    return csql__token_response_parse(c->status, c->body, strlen(c->body), "tok", 1000, &c->got);
}

static void tr_check(void *arg, int rc, int injected)
{
    tr_case *c = arg;
    if (!injected) {
        assert_int_equal(rc, c->want_rc);
    }
    if (rc == CSQL_OK) {
        if (!jansson_damage(injected)) {
            assert_string_equal(c->got.value, "ya29.emu-not-a-real-token");
        }
        csql__token_dispose(&c->got);
        return;
    }
    assert_clean_error(rc, CSQL_ERR_TOKEN, CSQL_ERR_TOKEN);
    assert_null(c->got.value);
}

static void test_token_responses(void **state)
{
    (void)state;
    tr_case cases[] = {
        {200, "{\"access_token\":\"ya29.emu-not-a-real-token\",\"expires_in\":3599,"
              "\"token_type\":\"Bearer\"}", 0, CSQL_OK, {0}},
        {400, "{\"error\":\"invalid_grant\",\"error_description\":\"Bad Request\"}", 0,
         CSQL_ERR_TOKEN, {0}},
        {200, "{\"accessToken\":\"ya29.emu-not-a-real-token\","
              "\"expireTime\":\"2030-01-01T00:00:00Z\"}", 1, CSQL_OK, {0}},
        {403, "{\"error\":{\"code\":403,\"message\":\"denied\",\"status\":\"PERMISSION_DENIED\"}}",
         1, CSQL_ERR_TOKEN, {0}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char label[64];
        snprintf(label, sizeof(label), "token answer %zu", i);
        report(label, each_both(tr_run, tr_check, &cases[i]));
    }
}

/* ---------------- TLS context from PEM ---------------- */

typedef struct tls_case {
    SSL_CTX *ctx;
    int64_t not_after;
} tls_case;

static int tls_run(void *arg)
{
    tls_case *c = arg;
    return csql__tls_client_ctx_new(g_key, g_cert_pem, g_ca_pem, &c->ctx, &c->not_after);
}

static void tls_check(void *arg, int rc, int injected)
{
    tls_case *c = arg;
    if (rc == CSQL_OK) {
        assert_non_null(c->ctx);
        assert_true(c->not_after > 0);
        SSL_CTX_free(c->ctx);
        c->ctx = NULL;
        return;
    }
    assert_true(injected);
    /* OpenSSL does not always say that memory ran out: a PEM or key failure may show instead. */
    assert_clean_error(rc, CSQL_ERR_API_RESPONSE, CSQL_ERR_INTERNAL);
    assert_null(c->ctx);
}

static void test_tls_context(void **state)
{
    (void)state;
    tls_case c = {NULL, 0};
    /* Once without failures: OpenSSL's one-time initialisation is not what is tested. */
    assert_int_equal(tls_run(&c), CSQL_OK);
    tls_check(&c, CSQL_OK, 0);
    report("TLS client context", each_both(tls_run, tls_check, &c));
}

int main(void)
{
    if (csqlt_failalloc_install() != 0) {
        fprintf(stderr, "cannot install the OpenSSL allocation hooks\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_instance_name_and_mdx_do_not_allocate),
        cmocka_unit_test(test_connect_settings),
        cmocka_unit_test(test_ephemeral_cert),
        cmocka_unit_test(test_google_error),
        cmocka_unit_test(test_credentials_files),
        cmocka_unit_test(test_token_responses),
        cmocka_unit_test(test_tls_context),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
