/* RS256 JWT for the JWT-bearer grant: header, claims, and a signature OpenSSL verifies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "credentials/creds_internal.h"
#include "error.h"
#include "util/b64.h"

static EVP_PKEY *g_key;

static int setup(void **state)
{
    (void)state;
    g_key = EVP_RSA_gen(2048);
    return g_key ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(g_key);
    return 0;
}

/* Split a JWT into its three parts (malloc'd copies). */
static void split(const char *jwt, char **h, char **c, char **s)
{
    const char *d1 = strchr(jwt, '.');
    assert_non_null(d1);
    const char *d2 = strchr(d1 + 1, '.');
    assert_non_null(d2);
    assert_null(strchr(d2 + 1, '.'));
    *h = strndup(jwt, (size_t)(d1 - jwt));
    *c = strndup(d1 + 1, (size_t)(d2 - d1 - 1));
    *s = strdup(d2 + 1);
}

static json_t *decode_json(const char *part)
{
    unsigned char *raw = NULL;
    size_t len = 0;
    assert_int_equal(csql__b64_decode(part, strlen(part), &raw, &len), 0);
    json_error_t err;
    json_t *j = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, &err);
    free(raw);
    assert_non_null(j);
    return j;
}

static int verify(EVP_PKEY *key, const char *jwt)
{
    const char *last = strrchr(jwt, '.');
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    assert_int_equal(csql__b64_decode(last + 1, strlen(last + 1), &sig, &sig_len), 0);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
    int ok = EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)jwt,
                              (size_t)(last - jwt));
    EVP_MD_CTX_free(md);
    free(sig);
    return ok;
}

static void test_header_claims_signature(void **state)
{
    (void)state;
    csql__jwt_claims cl = {
        .kid = "kid-1",
        .iss = "sa@p.iam.gserviceaccount.com",
        .scope = CSQL__SCOPE_ADMIN,
        .aud = "http://127.0.0.1:1234/token",
        .iat = 1700000000,
    };
    char *jwt = NULL;
    assert_int_equal(csql__jwt_sign(g_key, &cl, &jwt), CSQL_OK);
    /* base64url without padding */
    assert_null(strpbrk(jwt, "+/= \n"));

    char *h, *c, *s;
    split(jwt, &h, &c, &s);
    json_t *hj = decode_json(h);
    assert_string_equal(json_string_value(json_object_get(hj, "alg")), "RS256");
    assert_string_equal(json_string_value(json_object_get(hj, "typ")), "JWT");
    assert_string_equal(json_string_value(json_object_get(hj, "kid")), "kid-1");
    assert_int_equal(json_object_size(hj), 3);

    json_t *cj = decode_json(c);
    assert_string_equal(json_string_value(json_object_get(cj, "iss")), cl.iss);
    assert_string_equal(json_string_value(json_object_get(cj, "scope")), CSQL__SCOPE_ADMIN);
    assert_string_equal(json_string_value(json_object_get(cj, "aud")), cl.aud);
    assert_int_equal(json_integer_value(json_object_get(cj, "iat")), 1700000000);
    assert_int_equal(json_integer_value(json_object_get(cj, "exp")), 1700000000 + 3600);
    assert_int_equal(json_object_size(cj), 5);

    /* The signature verifies with the public half, exported and re-imported as SPKI PEM. */
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(b, g_key), 1);
    EVP_PKEY *pub = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(pub);
    assert_int_equal(verify(pub, jwt), 1);

    /* Any change to the signed part breaks it. */
    char *tampered = strdup(jwt);
    size_t hl = strlen(h);
    tampered[hl + 2] = tampered[hl + 2] == 'A' ? 'B' : 'A';
    assert_int_not_equal(verify(pub, tampered), 1);

    /* Signing is deterministic (PKCS#1 v1.5) for the same input. */
    char *again = NULL;
    assert_int_equal(csql__jwt_sign(g_key, &cl, &again), CSQL_OK);
    assert_string_equal(again, jwt);

    EVP_PKEY_free(pub);
    json_decref(hj);
    json_decref(cj);
    free(h);
    free(c);
    free(s);
    free(tampered);
    free(again);
    free(jwt);
}

static void test_no_kid_and_escaping(void **state)
{
    (void)state;
    csql__jwt_claims cl = {
        .iss = "a\"b\\c@p",
        .scope = CSQL__SCOPE_LOGIN,
        .aud = "https://oauth2.googleapis.com/token",
        .iat = 5,
    };
    char *jwt = NULL;
    assert_int_equal(csql__jwt_sign(g_key, &cl, &jwt), CSQL_OK);
    char *h, *c, *s;
    split(jwt, &h, &c, &s);
    json_t *hj = decode_json(h);
    assert_null(json_object_get(hj, "kid"));
    json_t *cj = decode_json(c);
    assert_string_equal(json_string_value(json_object_get(cj, "iss")), "a\"b\\c@p");
    assert_int_equal(json_integer_value(json_object_get(cj, "exp")), 3605);
    assert_int_equal(verify(g_key, jwt), 1);
    json_decref(hj);
    json_decref(cj);
    free(h);
    free(c);
    free(s);
    free(jwt);
}

static void test_key_loading(void **state)
{
    (void)state;
    EVP_PKEY *k = NULL;
    /* PKCS#8 and PKCS#1 PEM both load. */
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, g_key, NULL, NULL, 0, NULL, NULL), 1);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    assert_int_equal(csql__rsa_key_from_pem(p, (size_t)n, &k), 0);
    assert_int_equal(EVP_PKEY_eq(k, g_key), 1);
    EVP_PKEY_free(k);
    BIO_free(b);

    b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey_traditional(b, g_key, NULL, NULL, 0, NULL, NULL), 1);
    n = BIO_get_mem_data(b, &p);
    assert_non_null(strstr(p, "BEGIN RSA PRIVATE KEY"));
    assert_int_equal(csql__rsa_key_from_pem(p, (size_t)n, &k), 0);
    EVP_PKEY_free(k);
    BIO_free(b);

    /* Encrypted keys fail (no prompt), as do garbage and EC keys. */
    b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, g_key, EVP_aes_128_cbc(), NULL, 0, NULL,
                                              (void *)(uintptr_t) "pw"),
                     1);
    n = BIO_get_mem_data(b, &p);
    assert_int_equal(csql__rsa_key_from_pem(p, (size_t)n, &k), -1);
    assert_null(k);
    BIO_free(b);

    assert_int_equal(csql__rsa_key_from_pem("junk", 4, &k), -1);
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, ec, NULL, NULL, 0, NULL, NULL), 1);
    n = BIO_get_mem_data(b, &p);
    assert_int_equal(csql__rsa_key_from_pem(p, (size_t)n, &k), -1);
    BIO_free(b);
    EVP_PKEY_free(ec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_claims_signature),
        cmocka_unit_test(test_no_kid_and_escaping),
        cmocka_unit_test(test_key_loading),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
