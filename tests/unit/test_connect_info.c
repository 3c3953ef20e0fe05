/* connectSettings / generateEphemeralCert parsing (REFERENCE §2). */
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
#include "csql/errors.h"
#include "error.h"

static char *g_ca1;
static char *g_ca2;
static char *g_ca3;

/* A small self-signed certificate (EC P-256 keeps it fast), as PEM. */
static char *make_cert_pem(const char *cn)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    assert_non_null(key);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, x);
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    X509_free(x);
    EVP_PKEY_free(key);
    return out;
}

static int setup(void **state)
{
    (void)state;
    g_ca1 = make_cert_pem("root");
    g_ca2 = make_cert_pem("intermediate");
    g_ca3 = make_cert_pem("p:i");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(g_ca1);
    free(g_ca2);
    free(g_ca3);
    return 0;
}

static csql__instance_name name_of(const char *project, const char *region, const char *inst)
{
    csql__instance_name n;
    memset(&n, 0, sizeof(n));
    snprintf(n.full, sizeof(n.full), "%s:%s:%s", project, region, inst);
    snprintf(n.project, sizeof(n.project), "%s", project);
    snprintf(n.region, sizeof(n.region), "%s", region);
    snprintf(n.instance, sizeof(n.instance), "%s", inst);
    return n;
}

/* The sample of REFERENCE §2 as a jansson object, with our CA in serverCaCert. */
static json_t *sample(void)
{
    json_error_t err;
    json_t *root = json_loads(
        "{\"kind\":\"sql#connectSettings\","
        " \"serverCaCert\":{\"cert\":\"\", \"expirationTime\":\"2035-01-01T00:00:00Z\"},"
        " \"ipAddresses\":[{\"type\":\"PRIMARY\",\"ipAddress\":\"34.1.2.3\"},"
        "                {\"type\":\"PRIVATE\",\"ipAddress\":\"10.0.0.5\"},"
        "                {\"type\":\"OUTGOING\",\"ipAddress\":\"35.9.9.9\"}],"
        " \"region\":\"us-central1\", \"databaseVersion\":\"POSTGRES_15\","
        " \"backendType\":\"SECOND_GEN\","
        " \"pscEnabled\":true, \"dnsName\":\"abc.def.us-central1.sql.goog.\","
        " \"dnsNames\":[{\"name\":\"abc.def.us-central1.sql.goog.\","
        "   \"connectionType\":\"PRIVATE_SERVICE_CONNECT\",\"dnsScope\":\"INSTANCE\"}],"
        " \"serverCaMode\":\"GOOGLE_MANAGED_INTERNAL_CA\","
        " \"mdxProtocolSupport\":[\"CLIENT_PROTOCOL_TYPE\"],"
        " \"someFutureField\":{\"nested\":[1,2,3]}}",
        0, &err);
    assert_non_null(root);
    json_object_set_new(json_object_get(root, "serverCaCert"), "cert", json_string(g_ca1));
    return root;
}

/* Parse `root` (consumed) for p:us-central1:i. */
static int parse_json(json_t *root, csql__connect_info *ci)
{
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    assert_non_null(s);
    csql__instance_name n = name_of("p", "us-central1", "i");
    int rc = csql__connect_info_parse(s, strlen(s), &n, ci);
    free(s);
    return rc;
}

static void assert_msg_contains(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", m, needle);
    }
}

static void test_full_sample(void **state)
{
    (void)state;
    csql__connect_info ci;
    assert_int_equal(parse_json(sample(), &ci), 0);
    assert_string_equal(ci.database_version, "POSTGRES_15");
    assert_string_equal(ci.region, "us-central1");
    assert_string_equal(ci.public_ip, "34.1.2.3");
    assert_string_equal(ci.private_ip, "10.0.0.5");
    assert_string_equal(ci.psc_dns, "abc.def.us-central1.sql.goog");
    assert_string_equal(ci.dns_name, "abc.def.us-central1.sql.goog");
    assert_string_equal(ci.ca_pem, g_ca1);
    assert_string_equal(ci.server_ca_mode, "GOOGLE_MANAGED_INTERNAL_CA");
    assert_true(ci.mdx_supported);

    csql__connect_info copy;
    assert_int_equal(csql__connect_info_copy(&ci, &copy), 0);
    csql__connect_info_dispose(&ci);
    assert_null(ci.public_ip);
    assert_string_equal(copy.public_ip, "34.1.2.3");
    assert_string_equal(copy.psc_dns, "abc.def.us-central1.sql.goog");
    assert_string_equal(copy.ca_pem, g_ca1);
    assert_true(copy.mdx_supported);
    csql__connect_info_dispose(&copy);
    csql__connect_info_dispose(&copy); /* idempotent */
}

static void test_legacy_without_psc(void **state)
{
    (void)state;
    json_t *root = sample();
    json_object_del(root, "pscEnabled");
    json_object_del(root, "dnsName");
    json_object_del(root, "dnsNames");
    json_object_del(root, "serverCaMode");
    json_object_del(root, "mdxProtocolSupport");
    json_array_remove(json_object_get(root, "ipAddresses"), 1); /* no PRIVATE */
    csql__connect_info ci;
    assert_int_equal(parse_json(root, &ci), 0);
    assert_string_equal(ci.public_ip, "34.1.2.3");
    assert_null(ci.private_ip);
    assert_null(ci.psc_dns);
    assert_null(ci.dns_name);
    assert_null(ci.server_ca_mode);
    assert_false(ci.mdx_supported);
    csql__connect_info_dispose(&ci);
}

static void test_cas_bundle_kept_whole(void **state)
{
    (void)state;
    char bundle[16384];
    snprintf(bundle, sizeof(bundle), "%s%s%s", g_ca3, g_ca2, g_ca1);
    json_t *root = sample();
    json_object_set_new(json_object_get(root, "serverCaCert"), "cert", json_string(bundle));
    json_object_set_new(root, "serverCaMode", json_string("GOOGLE_MANAGED_CAS_CA"));
    csql__connect_info ci;
    assert_int_equal(parse_json(root, &ci), 0);
    assert_string_equal(ci.ca_pem, bundle);
    assert_string_equal(ci.server_ca_mode, "GOOGLE_MANAGED_CAS_CA");
    csql__connect_info_dispose(&ci);
}

static void test_region_mismatch(void **state)
{
    (void)state;
    json_t *root = sample();
    json_object_set_new(root, "region", json_string("europe-west1"));
    csql__connect_info ci;
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_REGION_MISMATCH);
    assert_msg_contains("p:us-central1:i");
    assert_msg_contains("provided region was mismatched - got us-central1, want europe-west1");
    assert_null(ci.database_version);
    assert_int_equal(csql_err_category_of(CSQL_ERR_REGION_MISMATCH), CSQL_CAT_CONFIG);
}

static void test_not_second_gen(void **state)
{
    (void)state;
    json_t *root = sample();
    json_object_set_new(root, "backendType", json_string("FIRST_GEN"));
    csql__connect_info ci;
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_UNSUPPORTED_INSTANCE);
    assert_msg_contains("p:us-central1:i");
    assert_msg_contains("FIRST_GEN");

    root = sample();
    json_object_del(root, "backendType");
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_API_RESPONSE);
    assert_msg_contains("backendType");
}

static void test_database_versions(void **state)
{
    (void)state;
    static const char *const good[] = {"POSTGRES_9_6", "MYSQL_8_0_31", "SQLSERVER_2019_STANDARD"};
    static const char *const bad_versions[] = {"ORACLE_19", "POSTGRES", "postgres_15", "MYSQL"};
    csql__connect_info ci;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        json_t *root = sample();
        json_object_set_new(root, "databaseVersion", json_string(good[i]));
        assert_int_equal(parse_json(root, &ci), 0);
        assert_string_equal(ci.database_version, good[i]);
        csql__connect_info_dispose(&ci);
    }
    for (size_t i = 0; i < sizeof(bad_versions) / sizeof(bad_versions[0]); i++) {
        json_t *root = sample();
        json_object_set_new(root, "databaseVersion", json_string(bad_versions[i]));
        assert_int_equal(parse_json(root, &ci), CSQL_ERR_UNSUPPORTED_INSTANCE);
        assert_msg_contains(bad_versions[i]);
        assert_msg_contains("p:us-central1:i");
    }
}

static void test_server_ca_problems(void **state)
{
    (void)state;
    csql__connect_info ci;
    json_t *root = sample();
    json_object_del(root, "serverCaCert");
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_API_RESPONSE);
    assert_msg_contains("serverCaCert");
    assert_msg_contains("p:us-central1:i");

    root = sample();
    json_object_del(json_object_get(root, "serverCaCert"), "cert");
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_API_RESPONSE);
    assert_msg_contains("serverCaCert.cert");

    root = sample();
    json_object_set_new(json_object_get(root, "serverCaCert"), "cert", json_string("not a pem"));
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_API_RESPONSE);
    assert_msg_contains("serverCaCert.cert");

    /* A PEM whose base64 is damaged. */
    char broken[8192];
    snprintf(broken, sizeof(broken), "%s", g_ca1);
    char *body = strchr(broken, '\n') + 1;
    memset(body + 10, '!', 20);
    root = sample();
    json_object_set_new(json_object_get(root, "serverCaCert"), "cert", json_string(broken));
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_API_RESPONSE);

    /* A good certificate followed by a damaged one. */
    char two[16384];
    snprintf(two, sizeof(two), "%s%s", g_ca2, broken);
    root = sample();
    json_object_set_new(json_object_get(root, "serverCaCert"), "cert", json_string(two));
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_API_RESPONSE);
}

static void test_ip_addresses(void **state)
{
    (void)state;
    csql__connect_info ci;
    /* Missing ipAddresses with PSC: fine, PSC is the only way in. */
    json_t *root = sample();
    json_object_del(root, "ipAddresses");
    assert_int_equal(parse_json(root, &ci), 0);
    assert_null(ci.public_ip);
    assert_null(ci.private_ip);
    assert_string_equal(ci.psc_dns, "abc.def.us-central1.sql.goog");
    csql__connect_info_dispose(&ci);

    /* Missing ipAddresses and no PSC: nothing to dial. */
    root = sample();
    json_object_del(root, "ipAddresses");
    json_object_set_new(root, "pscEnabled", json_false());
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_NO_IP_TYPE);
    assert_msg_contains("p:us-central1:i");

    /* OUTGOING is never used. */
    root = sample();
    json_object_set_new(root, "pscEnabled", json_false());
    json_object_set_new(root, "ipAddresses",
                        json_pack("[{s:s,s:s}]", "type", "OUTGOING", "ipAddress", "35.9.9.9"));
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_NO_IP_TYPE);

    /* IPv6 and the first of duplicate types. */
    root = sample();
    json_object_set_new(root, "ipAddresses",
                        json_pack("[{s:s,s:s},{s:s,s:s}]", "type", "PRIMARY", "ipAddress",
                                  "2001:db8::1", "type", "PRIMARY", "ipAddress", "1.2.3.4"));
    assert_int_equal(parse_json(root, &ci), 0);
    assert_string_equal(ci.public_ip, "2001:db8::1");
    csql__connect_info_dispose(&ci);

    /* Not an IP literal. */
    root = sample();
    json_object_set_new(root, "ipAddresses",
                        json_pack("[{s:s,s:s}]", "type", "PRIVATE", "ipAddress", "evil.example"));
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_API_RESPONSE);
    assert_msg_contains("PRIVATE");
}

/* Each mutation sets one field to a value of the wrong type; all must fail cleanly. */
static void test_wrong_types_everywhere(void **state)
{
    (void)state;
    static const struct {
        const char *path; /* "a" or "a.b" or "a[0].b" */
        const char *value_json;
        const char *field_in_message;
    } cases[] = {
        {"region", "42", "region"},
        {"region", "\"\"", "region"},
        {"databaseVersion", "[\"POSTGRES_15\"]", "databaseVersion"},
        {"backendType", "true", "backendType"},
        {"serverCaCert", "\"pem\"", "serverCaCert"},
        {"serverCaCert.cert", "{}", "serverCaCert.cert"},
        {"ipAddresses", "{}", "ipAddresses"},
        {"ipAddresses[0]", "\"34.1.2.3\"", "ipAddresses"},
        {"ipAddresses[0].type", "1", "ipAddresses[].type"},
        {"ipAddresses[0].ipAddress", "[1]", "ipAddresses[].ipAddress"},
        {"pscEnabled", "\"true\"", "pscEnabled"},
        {"dnsName", "7", "dnsName"},
        {"dnsNames", "\"x\"", "dnsNames"},
        {"dnsNames[0]", "null", "dnsNames"},
        {"dnsNames[0].name", "{}", "dnsNames[].name"},
        {"dnsNames[0].connectionType", "3", "dnsNames[].connectionType"},
        {"dnsNames[0].dnsScope", "false", "dnsNames[].dnsScope"},
        {"serverCaMode", "1.5", "serverCaMode"},
        {"mdxProtocolSupport", "\"CLIENT_PROTOCOL_TYPE\"", "mdxProtocolSupport"},
        {"mdxProtocolSupport[0]", "1", "mdxProtocolSupport"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *root = sample();
        json_t *value = json_loads(cases[i].value_json, JSON_DECODE_ANY, NULL);
        char path[64];
        snprintf(path, sizeof(path), "%s", cases[i].path);
        char *dot = strchr(path, '.');
        char *bracket = strchr(path, '[');
        json_t *parent = root;
        char *key = path;
        if (bracket != NULL) {
            *bracket = '\0';
            json_t *arr = json_object_get(root, path);
            if (dot == NULL) {
                json_array_set_new(arr, 0, value);
                value = NULL;
            } else {
                parent = json_array_get(arr, 0);
                key = dot + 1;
            }
        } else if (dot != NULL) {
            *dot = '\0';
            parent = json_object_get(root, path);
            key = dot + 1;
        }
        if (value != NULL) {
            json_object_set_new(parent, key, value);
        }
        csql__connect_info ci;
        int rc = parse_json(root, &ci);
        if (rc != CSQL_ERR_API_RESPONSE) {
            fail_msg("case %s=%s: rc %d (%s)", cases[i].path, cases[i].value_json, rc,
                     csql_error_last()->message);
        }
        assert_msg_contains(cases[i].field_in_message);
        assert_msg_contains("p:us-central1:i");
        assert_null(ci.region);
    }
}

static void test_psc_disabled_but_dns_name_present(void **state)
{
    (void)state;
    json_t *root = sample();
    json_object_set_new(root, "pscEnabled", json_false());
    json_object_del(root, "dnsNames");
    csql__connect_info ci;
    assert_int_equal(parse_json(root, &ci), 0);
    assert_null(ci.psc_dns);
    assert_string_equal(ci.dns_name, "abc.def.us-central1.sql.goog");
    csql__connect_info_dispose(&ci);

    /* pscEnabled absent counts as false; null is accepted as absent. */
    root = sample();
    json_object_set_new(root, "pscEnabled", json_null());
    assert_int_equal(parse_json(root, &ci), 0);
    assert_null(ci.psc_dns);
    assert_non_null(ci.dns_name);
    csql__connect_info_dispose(&ci);
}

static void test_dns_names_selection(void **state)
{
    (void)state;
    json_t *root = sample();
    json_object_set_new(root, "dnsName", json_string("legacy.sql.goog."));
    json_object_set_new(root, "dnsNames",
                        json_pack("[{s:s,s:s,s:s},{s:s,s:s,s:s}]", "name", "first.sql.goog.",
                                  "connectionType", "PRIVATE_SERVICE_ACCESS", "dnsScope",
                                  "INSTANCE", "name", "psc.sql.goog.", "connectionType",
                                  "PRIVATE_SERVICE_CONNECT", "dnsScope", "INSTANCE"));
    csql__connect_info ci;
    assert_int_equal(parse_json(root, &ci), 0);
    assert_string_equal(ci.dns_name, "first.sql.goog");
    assert_string_equal(ci.psc_dns, "psc.sql.goog");
    csql__connect_info_dispose(&ci);

    /* No PSC entry in dnsNames: the legacy dnsName is the PSC name. */
    root = sample();
    json_object_set_new(root, "dnsName", json_string("legacy.sql.goog."));
    json_object_set_new(root, "dnsNames",
                        json_pack("[{s:s,s:s,s:s}]", "name", "global.sql.goog", "connectionType",
                                  "PRIVATE_SERVICE_CONNECT", "dnsScope", "GLOBAL"));
    assert_int_equal(parse_json(root, &ci), 0);
    assert_string_equal(ci.dns_name, "global.sql.goog");
    assert_string_equal(ci.psc_dns, "legacy.sql.goog");
    csql__connect_info_dispose(&ci);

    /* A name that is not a DNS name. */
    root = sample();
    json_object_set_new(root, "dnsName", json_string("bad name\r\n.sql.goog"));
    json_object_del(root, "dnsNames");
    assert_int_equal(parse_json(root, &ci), CSQL_ERR_API_RESPONSE);
    assert_msg_contains("DNS name");
}

static void test_trailing_dots(void **state)
{
    (void)state;
    json_t *root = sample();
    json_object_del(root, "dnsNames");
    json_object_set_new(root, "dnsName", json_string("x.y.sql.goog..."));
    csql__connect_info ci;
    assert_int_equal(parse_json(root, &ci), 0);
    assert_string_equal(ci.dns_name, "x.y.sql.goog");
    assert_string_equal(ci.psc_dns, "x.y.sql.goog");
    csql__connect_info_dispose(&ci);

    root = sample();
    json_object_del(root, "dnsNames");
    json_object_set_new(root, "dnsName", json_string("."));
    assert_int_equal(parse_json(root, &ci), 0);
    assert_null(ci.dns_name);
    assert_null(ci.psc_dns);
    csql__connect_info_dispose(&ci);
}

static void test_bad_documents(void **state)
{
    (void)state;
    csql__instance_name n = name_of("google.com:p", "us-central1", "i");
    csql__connect_info ci;
    static const char *const docs[] = {"", "{", "[]", "null", "\"str\"", "{\"a\":1}{}",
                                       "{\"region\":\"us-central1\"", "\xff\xfe"};
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        int rc = csql__connect_info_parse(docs[i], strlen(docs[i]), &n, &ci);
        assert_int_equal(rc, CSQL_ERR_API_RESPONSE);
        assert_msg_contains("google.com:p:us-central1:i");
    }
    /* Length is honoured: a valid document cut short is invalid. */
    json_t *root = sample();
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    csql__instance_name n2 = name_of("p", "us-central1", "i");
    assert_int_equal(csql__connect_info_parse(s, strlen(s) / 2, &n2, &ci), CSQL_ERR_API_RESPONSE);
    /* An embedded NUL inside a string is refused. */
    const char *nul = "{\"region\":\"a\\u0000b\"}";
    assert_int_equal(csql__connect_info_parse(nul, strlen(nul), &n2, &ci), CSQL_ERR_API_RESPONSE);
    free(s);

    /* Over 1 MiB: refused before parsing. */
    size_t big = 2 * 1024 * 1024;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    assert_int_equal(csql__connect_info_parse(huge, big, &n2, &ci), CSQL_ERR_API_RESPONSE);
    assert_msg_contains("too large");
    /* Deep nesting within the bound. */
    size_t depth = 100000;
    for (size_t i = 0; i < depth; i++) {
        huge[i] = '[';
        huge[depth * 2 - 1 - i] = ']';
    }
    assert_int_equal(csql__connect_info_parse(huge, depth * 2, &n2, &ci), CSQL_ERR_API_RESPONSE);
    free(huge);

    assert_int_equal(csql__connect_info_parse(NULL, 0, &n2, &ci), CSQL_ERR_INVALID_ARGUMENT);
}

static void test_ephemeral_cert(void **state)
{
    (void)state;
    char *pem = NULL;
    json_t *doc = json_pack("{s:{s:s,s:s}}", "ephemeralCert", "cert", g_ca3, "expirationTime",
                            "2035-01-01T00:00:00Z");
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    assert_int_equal(csql__ephemeral_cert_parse(s, strlen(s), &pem), 0);
    assert_string_equal(pem, g_ca3);
    free(pem);
    free(s);

    static const char *const bad_docs[] = {
        "", "nope", "[]", "{}", "{\"ephemeralCert\":null}", "{\"ephemeralCert\":\"x\"}",
        "{\"ephemeralCert\":{}}", "{\"ephemeralCert\":{\"cert\":5}}",
        "{\"ephemeralCert\":{\"cert\":\"not pem\"}}",
    };
    for (size_t i = 0; i < sizeof(bad_docs) / sizeof(bad_docs[0]); i++) {
        pem = (char *)1;
        assert_int_equal(csql__ephemeral_cert_parse(bad_docs[i], strlen(bad_docs[i]), &pem),
                         CSQL_ERR_API_RESPONSE);
        assert_null(pem);
        assert_msg_contains("generateEphemeralCert");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_sample),
        cmocka_unit_test(test_legacy_without_psc),
        cmocka_unit_test(test_cas_bundle_kept_whole),
        cmocka_unit_test(test_region_mismatch),
        cmocka_unit_test(test_not_second_gen),
        cmocka_unit_test(test_database_versions),
        cmocka_unit_test(test_server_ca_problems),
        cmocka_unit_test(test_ip_addresses),
        cmocka_unit_test(test_wrong_types_everywhere),
        cmocka_unit_test(test_psc_disabled_but_dns_name_present),
        cmocka_unit_test(test_dns_names_selection),
        cmocka_unit_test(test_trailing_dots),
        cmocka_unit_test(test_bad_documents),
        cmocka_unit_test(test_ephemeral_cert),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
