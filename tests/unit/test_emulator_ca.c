/* csql-emulator certificate authorities: client signing, legacy and CAS server identities. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "data_plane.h"

typedef struct fixture {
    emu_signing_ca *ca;
    char *spki_pem;  /* "PUBLIC KEY" */
    char *pkcs1_pem; /* "RSA PUBLIC KEY" */
    EVP_PKEY *key;
} fixture;

static char *bio_string(BIO *bio)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    char err[256] = "";
    f->ca = emu_signing_ca_new(err, sizeof(err));
    if (f->ca == NULL) {
        fprintf(stderr, "signing CA: %s\n", err);
        return -1;
    }
    f->key = EVP_RSA_gen(2048);
    BIO *b1 = BIO_new(BIO_s_mem()), *b2 = BIO_new(BIO_s_mem());
    if (f->key == NULL || PEM_write_bio_PUBKEY(b1, f->key) != 1) {
        return -1;
    }
    OSSL_ENCODER_CTX *ectx = OSSL_ENCODER_CTX_new_for_pkey(f->key, EVP_PKEY_PUBLIC_KEY, "PEM",
                                                           "type-specific", NULL);
    if (ectx == NULL || OSSL_ENCODER_to_bio(ectx, b2) != 1) {
        return -1;
    }
    OSSL_ENCODER_CTX_free(ectx);
    f->spki_pem = bio_string(b1);
    f->pkcs1_pem = bio_string(b2);
    BIO_free(b1);
    BIO_free(b2);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    emu_signing_ca_free(f->ca);
    EVP_PKEY_free(f->key);
    free(f->spki_pem);
    free(f->pkcs1_pem);
    free(f);
    return 0;
}

static X509 *parse_cert(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *c = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(c);
    return c;
}

static int count_certs(const char *pem)
{
    int n = 0;
    for (const char *p = pem; (p = strstr(p, "-----BEGIN CERTIFICATE-----")) != NULL; p++) {
        n++;
    }
    return n;
}

static void name_entry(X509_NAME *name, int nid, char *out, size_t len)
{
    out[0] = '\0';
    X509_NAME_get_text_by_NID(name, nid, out, (int)len);
}

static time_t asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    assert_int_equal(ASN1_TIME_to_tm(t, &tm), 1);
    return timegm(&tm);
}

/* X509_verify_cert of leaf against trusted PEMs; returns the verify error (X509_V_OK = 0). */
static int verify(X509 *leaf, const char *trusted_pem, STACK_OF(X509) *untrusted, int purpose,
                  unsigned long flags)
{
    X509_STORE *store = X509_STORE_new();
    BIO *bio = BIO_new_mem_buf(trusted_pem, -1);
    X509 *c;
    while ((c = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(store, c);
        X509_free(c);
    }
    ERR_clear_error();
    BIO_free(bio);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf, untrusted);
    X509_STORE_CTX_set_purpose(ctx, purpose);
    if (flags) {
        X509_STORE_CTX_set_flags(ctx, flags);
    }
    int ok = X509_verify_cert(ctx);
    int e = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return e;
}

static char *ca_pem(emu_signing_ca *ca)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, emu_signing_ca_cert(ca));
    char *s = bio_string(bio);
    BIO_free(bio);
    return s;
}

/* ---------------- signing CA ---------------- */

static void test_signing_ca_cert(void **state)
{
    fixture *f = *state;
    X509 *c = emu_signing_ca_cert(f->ca);
    char cn[128];
    assert_non_null(c);
    name_entry(X509_get_subject_name(c), NID_commonName, cn, sizeof(cn));
    assert_string_equal(cn, "Google Cloud SQL Signing CA");
    assert_int_equal(X509_check_ca(c), 1);
    assert_int_equal(X509_check_issued(c, c), X509_V_OK);
    assert_int_equal(EVP_PKEY_get_base_id(X509_get0_pubkey(c)), EVP_PKEY_EC);
    assert_null(emu_signing_ca_cert(NULL));
    emu_signing_ca_free(NULL);
}

static void check_client_cert(fixture *f, const char *pem_in, long lifetime)
{
    char *pem = NULL, err[256] = "";
    uint64_t serial = 0;
    time_t not_after = 0, now = time(NULL);
    int rc = emu_signing_ca_sign(f->ca, pem_in, strlen(pem_in), lifetime, &pem, &serial,
                                 &not_after, err, sizeof(err));
    assert_int_equal(rc, 0);
    assert_non_null(pem);
    assert_int_equal(count_certs(pem), 1);
    X509 *c = parse_cert(pem);
    char cn[128];
    name_entry(X509_get_subject_name(c), NID_commonName, cn, sizeof(cn));
    assert_string_equal(cn, "Google Cloud SQL Client");
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(c),
                                   X509_get_subject_name(emu_signing_ca_cert(f->ca))),
                     0);
    /* The certified key is the one we sent. */
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(c), f->key), 1);
    uint64_t got = 0;
    assert_int_equal(ASN1_INTEGER_get_uint64(&got, X509_get0_serialNumber(c)), 1);
    assert_true(serial == got);
    assert_true(serial != 0);
    time_t nb = asn1_time(X509_get0_notBefore(c)), na = asn1_time(X509_get0_notAfter(c));
    assert_true(na == not_after);
    assert_true(na >= now + lifetime - 2 && na <= now + lifetime + 2);
    assert_true(nb <= now - 59 && nb >= now - 62);
    char *trusted = ca_pem(f->ca);
    assert_int_equal(verify(c, trusted, NULL, X509_PURPOSE_SSL_CLIENT, 0), X509_V_OK);
    free(trusted);
    X509_free(c);
    free(pem);
}

static void test_sign_spki(void **state)
{
    fixture *f = *state;
    assert_non_null(strstr(f->spki_pem, "BEGIN PUBLIC KEY"));
    check_client_cert(f, f->spki_pem, 3600);
}

static void test_sign_pkcs1(void **state)
{
    fixture *f = *state;
    assert_non_null(strstr(f->pkcs1_pem, "BEGIN RSA PUBLIC KEY"));
    check_client_cert(f, f->pkcs1_pem, 20);
}

/* The Go connector puts SPKI DER under the "RSA PUBLIC KEY" label. */
static void test_sign_spki_under_rsa_label(void **state)
{
    fixture *f = *state;
    char *s = malloc(strlen(f->spki_pem) + 16);
    const char *body = strchr(f->spki_pem, '\n') + 1;
    size_t blen = (size_t)(strstr(body, "-----END") - body);
    sprintf(s, "-----BEGIN RSA PUBLIC KEY-----\n%.*s-----END RSA PUBLIC KEY-----\n", (int)blen,
            body);
    check_client_cert(f, s, 5);
    free(s);
}

static void expect_sign_error(fixture *f, const char *pem, size_t len, const char *fragment)
{
    static char sentinel[] = "untouched";
    char *out = sentinel, err[256] = "";
    uint64_t serial = 0;
    time_t na = 0;
    assert_int_equal(emu_signing_ca_sign(f->ca, pem, len, 60, &out, &serial, &na, err,
                                         sizeof(err)),
                     -1);
    assert_null(out);
    assert_non_null(strstr(err, fragment));
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_sign_rejects_garbage(void **state)
{
    fixture *f = *state;
    expect_sign_error(f, "hello", 5, "not a PEM block");
    expect_sign_error(f, "", 0, "PEM public key");
    expect_sign_error(f, NULL, 0, "PEM public key");
    const char *cert_label = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    expect_sign_error(f, cert_label, strlen(cert_label), "want PUBLIC KEY");
    const char *junk = "-----BEGIN PUBLIC KEY-----\nAAAAAAAA\n-----END PUBLIC KEY-----\n";
    expect_sign_error(f, junk, strlen(junk), "does not hold a valid key");
    /* Truncated: the len given cuts the PEM. */
    expect_sign_error(f, f->spki_pem, strlen(f->spki_pem) / 2, "not a PEM block");
    /* Oversized input is refused before parsing. */
    size_t big = 20000;
    char *huge = malloc(big);
    memset(huge, 'A', big);
    expect_sign_error(f, huge, big, "at most");
    free(huge);
}

static void test_sign_rejects_non_rsa_and_small(void **state)
{
    fixture *f = *state;
    EVP_PKEY *ec = EVP_EC_gen("P-256"), *small = EVP_RSA_gen(1024);
    BIO *b1 = BIO_new(BIO_s_mem()), *b2 = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b1, ec);
    PEM_write_bio_PUBKEY(b2, small);
    char *s1 = bio_string(b1), *s2 = bio_string(b2);
    expect_sign_error(f, s1, strlen(s1), "RSA key of at least 2048");
    expect_sign_error(f, s2, strlen(s2), "RSA key of at least 2048");
    free(s1);
    free(s2);
    BIO_free(b1);
    BIO_free(b2);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(small);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_serials_unique(void **state)
{
    fixture *f = *state;
    enum { N = 300 };
    uint64_t serials[N];
    for (int i = 0; i < N; i++) {
        char *pem = NULL, err[128];
        time_t na;
        assert_int_equal(emu_signing_ca_sign(f->ca, f->spki_pem, strlen(f->spki_pem), 60, &pem,
                                             &serials[i], &na, err, sizeof(err)),
                         0);
        free(pem);
    }
    qsort(serials, N, sizeof(serials[0]), cmp_u64);
    for (int i = 1; i < N; i++) {
        assert_true(serials[i] != serials[i - 1]);
    }
    assert_true(serials[0] != 0);
    /* Random, not sequential: spread over the 63-bit range. */
    assert_true(serials[N - 1] - serials[0] > (UINT64_C(1) << 56));
}

/* A negative lifetime yields a certificate that is already expired (tests use it). */
static void test_sign_expired(void **state)
{
    fixture *f = *state;
    char *pem = NULL, err[128];
    uint64_t serial;
    time_t na, now = time(NULL);
    assert_int_equal(emu_signing_ca_sign(f->ca, f->spki_pem, strlen(f->spki_pem), -120, &pem,
                                         &serial, &na, err, sizeof(err)),
                     0);
    X509 *c = parse_cert(pem);
    assert_true(na <= now - 119);
    assert_true(asn1_time(X509_get0_notBefore(c)) < na);
    char *trusted = ca_pem(f->ca);
    assert_int_equal(verify(c, trusted, NULL, X509_PURPOSE_SSL_CLIENT, 0),
                     X509_V_ERR_CERT_HAS_EXPIRED);
    free(trusted);
    X509_free(c);
    free(pem);
}

/* A client certificate from another signing CA does not verify against ours. */
static void test_other_ca_does_not_verify(void **state)
{
    fixture *f = *state;
    char err[128], *pem = NULL;
    uint64_t serial;
    time_t na;
    emu_signing_ca *other = emu_signing_ca_new(err, sizeof(err));
    assert_non_null(other);
    assert_int_equal(emu_signing_ca_sign(other, f->spki_pem, strlen(f->spki_pem), 60, &pem,
                                         &serial, &na, err, sizeof(err)),
                     0);
    X509 *c = parse_cert(pem);
    char *trusted = ca_pem(f->ca);
    assert_int_not_equal(verify(c, trusted, NULL, X509_PURPOSE_SSL_CLIENT, 0), X509_V_OK);
    free(trusted);
    X509_free(c);
    free(pem);
    emu_signing_ca_free(other);
}

/* ---------------- server identities ---------------- */

static bool has_san(X509 *c, char *dns, size_t len)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(c, NID_subject_alt_name, NULL, NULL);
    if (names == NULL) {
        return false;
    }
    dns[0] = '\0';
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_DNS) {
            snprintf(dns, len, "%s", (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        }
    }
    GENERAL_NAMES_free(names);
    return true;
}

static void test_legacy_identity(void **state)
{
    (void)state;
    char err[256] = "", cn[256], org[128], dns[256];
    time_t now = time(NULL);
    emu_server_id *id = emu_server_id_new(EMU_CA_LEGACY, "my-proj", "us-central1", "db1",
                                          "ignored.example.", err, sizeof(err));
    assert_non_null(id);
    X509 *leaf = emu_server_id_leaf(id);
    name_entry(X509_get_subject_name(leaf), NID_commonName, cn, sizeof(cn));
    assert_string_equal(cn, "my-proj:db1");
    assert_false(has_san(leaf, dns, sizeof(dns)));
    assert_null(emu_server_id_dns_name(id));
    assert_int_equal(X509_check_ca(leaf), 0);

    const char *bundle = emu_server_id_ca_pem(id);
    assert_int_equal(count_certs(bundle), 1);
    X509 *ca = parse_cert(bundle);
    name_entry(X509_get_subject_name(ca), NID_commonName, cn, sizeof(cn));
    name_entry(X509_get_subject_name(ca), NID_organizationName, org, sizeof(org));
    assert_string_equal(cn, "Google Cloud SQL Server CA");
    assert_string_equal(org, "Google, Inc");
    assert_int_equal(X509_check_issued(ca, ca), X509_V_OK); /* self-signed */
    assert_int_equal(X509_check_issued(ca, leaf), X509_V_OK);
    assert_int_equal(verify(leaf, bundle, NULL, X509_PURPOSE_SSL_SERVER, 0), X509_V_OK);

    /* CA ~10 years, leaf ~1 year. */
    time_t ca_exp = emu_server_id_ca_expiry(id);
    assert_true(ca_exp == asn1_time(X509_get0_notAfter(ca)));
    assert_true(ca_exp > now + 9L * 365 * 86400);
    time_t leaf_exp = asn1_time(X509_get0_notAfter(leaf));
    assert_true(leaf_exp > now + 360L * 86400 && leaf_exp < now + 370L * 86400);
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(leaf), emu_server_id_leaf_key(id)), 1);
    assert_int_equal(sk_X509_num(emu_server_id_chain(id)), 1);
    X509_free(ca);
    emu_server_id_free(id);
    emu_server_id_free(NULL);
}

static void test_legacy_domain_scoped(void **state)
{
    (void)state;
    char err[256], cn[256];
    emu_server_id *id = emu_server_id_new(EMU_CA_LEGACY, "google.com:proj", "europe-west1", "db",
                                          NULL, err, sizeof(err));
    assert_non_null(id);
    name_entry(X509_get_subject_name(emu_server_id_leaf(id)), NID_commonName, cn, sizeof(cn));
    assert_string_equal(cn, "google.com:proj:db");
    emu_server_id_free(id);
}

static void test_cas_identity(void **state)
{
    (void)state;
    char err[256] = "", dns[256], cn[256];
    emu_server_id *id = emu_server_id_new(EMU_CA_CAS, "my-proj", "us-central1", "db1",
                                          "abc.def.us-central1.sql.goog.", err, sizeof(err));
    assert_non_null(id);
    X509 *leaf = emu_server_id_leaf(id);
    assert_true(has_san(leaf, dns, sizeof(dns)));
    assert_string_equal(dns, "abc.def.us-central1.sql.goog"); /* no trailing dot in a SAN */
    assert_string_equal(emu_server_id_dns_name(id), "abc.def.us-central1.sql.goog");
    assert_int_equal(X509_check_host(leaf, "abc.def.us-central1.sql.goog", 0, 0, NULL), 1);

    const char *bundle = emu_server_id_ca_pem(id);
    assert_int_equal(count_certs(bundle), 2);
    /* Bundle = root then intermediate. */
    BIO *bio = BIO_new_mem_buf(bundle, -1);
    X509 *root = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    X509 *inter = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(root);
    assert_non_null(inter);
    name_entry(X509_get_subject_name(root), NID_commonName, cn, sizeof(cn));
    assert_string_equal(cn, "Google Cloud SQL Root CA");
    name_entry(X509_get_subject_name(inter), NID_commonName, cn, sizeof(cn));
    assert_string_equal(cn, "Google Cloud SQL Intermediate CA");
    assert_int_equal(X509_check_issued(root, inter), X509_V_OK);
    assert_int_equal(X509_check_issued(inter, leaf), X509_V_OK);
    assert_int_not_equal(X509_check_issued(root, leaf), X509_V_OK);

    /* Trusting the whole bundle verifies; so does only the intermediate with partial chains. */
    assert_int_equal(verify(leaf, bundle, NULL, X509_PURPOSE_SSL_SERVER, 0), X509_V_OK);
    BIO *ib = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(ib, inter);
    char *inter_pem = bio_string(ib);
    BIO_free(ib);
    assert_int_not_equal(verify(leaf, inter_pem, NULL, X509_PURPOSE_SSL_SERVER, 0), X509_V_OK);
    assert_int_equal(verify(leaf, inter_pem, NULL, X509_PURPOSE_SSL_SERVER,
                            X509_V_FLAG_PARTIAL_CHAIN),
                     X509_V_OK);
    /* The chain sent after the leaf is [intermediate, root]. */
    STACK_OF(X509) *chain = emu_server_id_chain(id);
    assert_int_equal(sk_X509_num(chain), 2);
    assert_int_equal(X509_cmp(sk_X509_value(chain, 0), inter), 0);
    assert_int_equal(X509_cmp(sk_X509_value(chain, 1), root), 0);
    time_t a = asn1_time(X509_get0_notAfter(root)), b = asn1_time(X509_get0_notAfter(inter));
    assert_true(emu_server_id_ca_expiry(id) == (a < b ? a : b));
    free(inter_pem);
    X509_free(root);
    X509_free(inter);
    emu_server_id_free(id);
}

static void test_cas_default_dns_name(void **state)
{
    (void)state;
    char err[256], dns[256];
    emu_server_id *id = emu_server_id_new(EMU_CA_CAS, "google.com:proj", "us-east1", "db2", NULL,
                                          err, sizeof(err));
    assert_non_null(id);
    assert_string_equal(emu_server_id_dns_name(id), "db2.google.com-proj.us-east1.sql.goog");
    assert_true(has_san(emu_server_id_leaf(id), dns, sizeof(dns)));
    assert_string_equal(dns, "db2.google.com-proj.us-east1.sql.goog");
    emu_server_id_free(id);
    char *s = emu_ca_default_dns_name("p", "r", "i");
    assert_string_equal(s, "i.p.r.sql.goog");
    free(s);
}

/* Rotation builds a different identity: new CA, new leaf key. */
static void test_identities_differ(void **state)
{
    (void)state;
    char err[256];
    emu_server_id *a = emu_server_id_new(EMU_CA_LEGACY, "p", "r", "i", NULL, err, sizeof(err));
    emu_server_id *b = emu_server_id_new(EMU_CA_LEGACY, "p", "r", "i", NULL, err, sizeof(err));
    assert_non_null(a);
    assert_non_null(b);
    assert_string_not_equal(emu_server_id_ca_pem(a), emu_server_id_ca_pem(b));
    assert_int_not_equal(EVP_PKEY_eq(emu_server_id_leaf_key(a), emu_server_id_leaf_key(b)), 1);
    /* b's leaf does not verify against a's CA. */
    assert_int_not_equal(verify(emu_server_id_leaf(b), emu_server_id_ca_pem(a), NULL,
                                X509_PURPOSE_SSL_SERVER, 0),
                         X509_V_OK);
    emu_server_id_free(a);
    emu_server_id_free(b);
}

static void test_identity_too_long(void **state)
{
    (void)state;
    char err[256] = "", name[400];
    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    assert_null(emu_server_id_new(EMU_CA_LEGACY, "p", "r", name, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "too long"));
}

/* The emulator starts many times in tests: identities must be cheap. */
static void test_generation_is_fast(void **state)
{
    (void)state;
    char err[256];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 10; i++) {
        emu_server_id *id =
            emu_server_id_new(i % 2 ? EMU_CA_CAS : EMU_CA_LEGACY, "p", "r", "i", NULL, err,
                              sizeof(err));
        assert_non_null(id);
        emu_server_id_free(id);
    }
    emu_signing_ca_free(emu_signing_ca_new(err, sizeof(err)));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    print_message("10 identities + 1 signing CA: %.1f ms\n", ms);
    assert_true(ms < 500.0); /* generous for sanitizer builds; ~10 ms in release */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signing_ca_cert),
        cmocka_unit_test(test_sign_spki),
        cmocka_unit_test(test_sign_pkcs1),
        cmocka_unit_test(test_sign_spki_under_rsa_label),
        cmocka_unit_test(test_sign_rejects_garbage),
        cmocka_unit_test(test_sign_rejects_non_rsa_and_small),
        cmocka_unit_test(test_serials_unique),
        cmocka_unit_test(test_sign_expired),
        cmocka_unit_test(test_other_ca_does_not_verify),
        cmocka_unit_test(test_legacy_identity),
        cmocka_unit_test(test_legacy_domain_scoped),
        cmocka_unit_test(test_cas_identity),
        cmocka_unit_test(test_cas_default_dns_name),
        cmocka_unit_test(test_identities_differ),
        cmocka_unit_test(test_identity_too_long),
        cmocka_unit_test(test_generation_is_fast),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
