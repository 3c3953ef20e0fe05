/* The dialer's RSA key: made in the background or lazily, or supplied as PEM (REFERENCE §4). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "csql/errors.h"
#include "keys.h"
#include "util/clock.h"

static int64_t in_ms(int64_t ms)
{
    return csql__mono_ms() + ms;
}

static void assert_msg_contains(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", m, needle);
    }
}

/* The public PEM is SPKI, parses back to the same public key, RSA-2048 with e = 65537. */
static void check_key(EVP_PKEY *pkey, const char *pub_pem, int bits)
{
    assert_non_null(pkey);
    assert_non_null(pub_pem);
    assert_true(strncmp(pub_pem, "-----BEGIN PUBLIC KEY-----\n", 27) == 0);
    assert_non_null(strstr(pub_pem, "-----END PUBLIC KEY-----"));
    assert_null(strstr(pub_pem, "PRIVATE"));
    assert_true(EVP_PKEY_is_a(pkey, "RSA"));
    assert_int_equal(EVP_PKEY_get_bits(pkey), bits);
    BIGNUM *e = NULL;
    assert_true(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e));
    assert_true(BN_is_word(e, 65537));
    BN_free(e);
    BIO *bio = BIO_new_mem_buf(pub_pem, -1);
    EVP_PKEY *pub = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    assert_non_null(pub);
    assert_int_equal(EVP_PKEY_eq(pub, pkey), 1);
    EVP_PKEY_free(pub);
    BIO_free(bio);
}

static void test_background_generation(void **state)
{
    (void)state;
    csql__keypair *kp = NULL;
    assert_int_equal(csql__keypair_new(NULL, 0, 1, &kp), 0);
    EVP_PKEY *pkey = NULL;
    const char *pub = NULL;
    assert_int_equal(csql__keypair_get(kp, in_ms(30000), &pkey, &pub), 0);
    check_key(pkey, pub, 2048);
    /* The same key every time. */
    EVP_PKEY *again = NULL;
    const char *pub2 = NULL;
    assert_int_equal(csql__keypair_get(kp, in_ms(0), &again, &pub2), 0);
    assert_ptr_equal(again, pkey);
    assert_ptr_equal(pub2, pub);
    csql__keypair_free(kp);
}

static void test_lazy_generation(void **state)
{
    (void)state;
    csql__keypair *kp = NULL;
    assert_int_equal(csql__keypair_new(NULL, 0, 0, &kp), 0);
    EVP_PKEY *pkey = NULL;
    const char *pub = NULL;
    assert_int_equal(csql__keypair_get(kp, in_ms(30000), &pkey, &pub), 0);
    check_key(pkey, pub, 2048);
    csql__keypair_free(kp);
}

static void test_free_without_waiting(void **state)
{
    (void)state;
    /* Must return (joining the generator) without anyone having waited. */
    for (int i = 0; i < 3; i++) {
        csql__keypair *kp = NULL;
        assert_int_equal(csql__keypair_new(NULL, 0, 1, &kp), 0);
        csql__keypair_free(kp);
    }
    csql__keypair *lazy = NULL;
    assert_int_equal(csql__keypair_new(NULL, 0, 0, &lazy), 0);
    csql__keypair_free(lazy);
    csql__keypair_free(NULL);
}

typedef struct waiter {
    csql__keypair *kp;
    EVP_PKEY *pkey;
    int rc;
} waiter;

static void *wait_main(void *arg)
{
    waiter *w = arg;
    const char *pub = NULL;
    w->rc = csql__keypair_get(w->kp, in_ms(30000), &w->pkey, &pub);
    return NULL;
}

static void test_concurrent_getters_share_one_key(void **state)
{
    (void)state;
    for (int background = 0; background <= 2; background++) {
        csql__keypair *kp = NULL;
        assert_int_equal(csql__keypair_new(NULL, 0, background, &kp), 0);
        waiter w[4];
        pthread_t t[4];
        for (int i = 0; i < 4; i++) {
            w[i] = (waiter){kp, NULL, -1};
            assert_int_equal(pthread_create(&t[i], NULL, wait_main, &w[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            assert_int_equal(w[i].rc, 0);
            assert_ptr_equal(w[i].pkey, w[0].pkey);
        }
        csql__keypair_free(kp);
    }
}

/*
 * Racing generators: one key comes out, valid, the same for every getter; every other
 * generator was either stopped by the winner (OpenSSL's callback) or finished after it
 * and threw its key away; the number started is capped at 4; free joins them all.
 */
static void test_racing_generators(void **state)
{
    (void)state;
    int stopped_total = 0;
    const int wanted[] = {2, 4, 9};
    for (size_t c = 0; c < sizeof(wanted) / sizeof(wanted[0]); c++) {
        csql__keypair *kp = NULL;
        assert_int_equal(csql__keypair_new(NULL, 0, wanted[c], &kp), 0);
        EVP_PKEY *pkey = NULL;
        const char *pub = NULL;
        assert_int_equal(csql__keypair_get(kp, in_ms(60000), &pkey, &pub), 0);
        check_key(pkey, pub, 2048);
        EVP_PKEY *again = NULL;
        const char *pub2 = NULL;
        assert_int_equal(csql__keypair_get(kp, in_ms(0), &again, &pub2), 0);
        assert_ptr_equal(again, pkey);
        assert_ptr_equal(pub2, pub);
        /* Wait for the losers (free would join them, but then the stats are gone). */
        int started = 0;
        int stopped = 0;
        int discarded = 0;
        for (int i = 0; i < 6000; i++) {
            csql__keypair_race_stats(kp, &started, &stopped, &discarded);
            if (stopped + discarded == started - 1) {
                break;
            }
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
        int expect_started = wanted[c] > 4 ? 4 : wanted[c];
        assert_int_equal(started, expect_started);
        assert_int_equal(stopped + discarded, started - 1);
        stopped_total += stopped;
        csql__keypair_free(kp);
    }
    /*
     * The callback does stop searches: with 8 losers, each of which needs tens of prime
     * candidates after the winner published, at least one must have been cut short.
     */
    assert_true(stopped_total >= 1);
}

static void test_keygen_threads(void **state)
{
    (void)state;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n = csql__keygen_threads();
    assert_int_equal(n, cpus >= 2 ? 2 : 1);
    /* The lazy and single-thread forms race nobody. */
    csql__keypair *kp = NULL;
    assert_int_equal(csql__keypair_new(NULL, 0, 1, &kp), 0);
    EVP_PKEY *pkey = NULL;
    const char *pub = NULL;
    assert_int_equal(csql__keypair_get(kp, in_ms(60000), &pkey, &pub), 0);
    int started = -1;
    int stopped = -1;
    int discarded = -1;
    csql__keypair_race_stats(kp, &started, &stopped, &discarded);
    assert_int_equal(started, 1);
    assert_int_equal(stopped, 0);
    assert_int_equal(discarded, 0);
    csql__keypair_free(kp);
    assert_int_equal(csql__keypair_new(NULL, 0, 0, &kp), 0);
    assert_int_equal(csql__keypair_get(kp, in_ms(60000), &pkey, &pub), 0);
    check_key(pkey, pub, 2048);
    csql__keypair_race_stats(kp, &started, &stopped, &discarded);
    assert_int_equal(started, 0);
    csql__keypair_free(kp);
}

static char *pem_of(EVP_PKEY *k, int traditional)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (traditional) {
        assert_int_equal(PEM_write_bio_PrivateKey_traditional(bio, k, NULL, NULL, 0, NULL, NULL),
                         1);
    } else {
        assert_int_equal(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL), 1);
    }
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *out = malloc((size_t)n + 1);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(bio);
    return out;
}

static void test_caller_key_accepted(void **state)
{
    (void)state;
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    assert_non_null(k);
    for (int trad = 0; trad <= 1; trad++) {
        char *pem = pem_of(k, trad);
        assert_non_null(strstr(pem, trad ? "BEGIN RSA PRIVATE KEY" : "BEGIN PRIVATE KEY"));
        csql__keypair *kp = NULL;
        /* Not NUL-terminated at pem_len: only pem_len bytes are read. */
        assert_int_equal(csql__keypair_new(pem, strlen(pem), 1, &kp), 0);
        EVP_PKEY *got = NULL;
        const char *pub = NULL;
        assert_int_equal(csql__keypair_get(kp, in_ms(0), &got, &pub), 0);
        check_key(got, pub, 2048);
        assert_int_equal(EVP_PKEY_eq(got, k), 1);
        csql__keypair_free(kp);
        free(pem);
    }
    EVP_PKEY_free(k);
}

static void expect_rejected(const char *pem, size_t len, const char *why)
{
    csql__keypair *kp = (csql__keypair *)1;
    assert_int_equal(csql__keypair_new(pem, len, 1, &kp), CSQL_ERR_BAD_CONFIG);
    assert_null(kp);
    assert_msg_contains("RSA key");
    assert_msg_contains(why);
}

/* A's public half (n, e) with B's private half: a PEM that parses but cannot work. */
static char *mismatched_pem(EVP_PKEY *a, EVP_PKEY *b)
{
    static const char *const priv[] = {
        OSSL_PKEY_PARAM_RSA_D,          OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,    OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2,  OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    BIGNUM *bn[8] = {0};
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    assert_true(EVP_PKEY_get_bn_param(a, OSSL_PKEY_PARAM_RSA_N, &bn[0]));
    assert_true(EVP_PKEY_get_bn_param(a, OSSL_PKEY_PARAM_RSA_E, &bn[1]));
    assert_true(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn[0]));
    assert_true(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn[1]));
    for (int i = 0; i < 6; i++) {
        assert_true(EVP_PKEY_get_bn_param(b, priv[i], &bn[2 + i]));
        assert_true(OSSL_PARAM_BLD_push_BN(bld, priv[i], bn[2 + i]));
    }
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *mixed = NULL;
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &mixed, EVP_PKEY_KEYPAIR, params), 1);
    char *pem = pem_of(mixed, 0);
    EVP_PKEY_free(mixed);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    for (int i = 0; i < 8; i++) {
        BN_free(bn[i]);
    }
    return pem;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/*
 * A caller's key is checked by a signature, not by OpenSSL's pairwise check (which
 * tests p and q for primality, 50-70 ms): mismatched halves are still refused, and a
 * good key loads in a few milliseconds (the best of 5 under 20 ms, even under ASan).
 */
static void test_caller_key_check(void **state)
{
    (void)state;
    EVP_PKEY *a = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *b = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    assert_non_null(a);
    assert_non_null(b);
    char *bad = mismatched_pem(a, b);
    expect_rejected(bad, strlen(bad), "do not match");
    free(bad);

    char *pem = pem_of(a, 0);
    double best = 1e9;
    for (int i = 0; i < 5; i++) {
        csql__keypair *kp = NULL;
        double t0 = now_ms();
        assert_int_equal(csql__keypair_new(pem, strlen(pem), 1, &kp), 0);
        double took = now_ms() - t0;
        best = took < best ? took : best;
        EVP_PKEY *pkey = NULL;
        const char *pub = NULL;
        assert_int_equal(csql__keypair_get(kp, in_ms(0), &pkey, &pub), 0);
        assert_int_equal(EVP_PKEY_eq(pkey, a), 1);
        csql__keypair_free(kp);
    }
    if (best >= 20.0) {
        fail_msg("loading a caller's RSA key took %.1f ms at best (expected < 20)", best);
    }
    free(pem);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

static void test_bad_keys_rejected(void **state)
{
    (void)state;
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    char *pem = pem_of(small, 0);
    expect_rejected(pem, strlen(pem), "1024 bits");
    free(pem);

    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    pem = pem_of(ec, 0);
    expect_rejected(pem, strlen(pem), "not an RSA key");
    free(pem);

    expect_rejected("garbage", 7, "does not hold");
    expect_rejected("", 0, "0 bytes");

    /* A public key alone is not enough. */
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, rsa);
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    expect_rejected(data, (size_t)n, "does not hold");
    BIO_free(bio);

    /* An encrypted key is refused rather than prompting for a passphrase. */
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PKCS8PrivateKey(bio, rsa, EVP_aes_128_cbc(), "pw", 2, NULL, NULL);
    n = BIO_get_mem_data(bio, &data);
    expect_rejected(data, (size_t)n, "does not hold");
    BIO_free(bio);

    /* A truncated PEM. */
    pem = pem_of(rsa, 0);
    expect_rejected(pem, strlen(pem) / 2, "does not hold");
    free(pem);

    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_background_generation),
        cmocka_unit_test(test_lazy_generation),
        cmocka_unit_test(test_free_without_waiting),
        cmocka_unit_test(test_concurrent_getters_share_one_key),
        cmocka_unit_test(test_racing_generators),
        cmocka_unit_test(test_keygen_threads),
        cmocka_unit_test(test_caller_key_accepted),
        cmocka_unit_test(test_bad_keys_rejected),
        cmocka_unit_test(test_caller_key_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
