/*
 * tls.c: client contexts from memory, the server identity rule, and full
 * handshakes over in-memory BIO pairs (no sockets) against test PKIs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "csql/errors.h"
#include "testcerts.h"
#include "tls.h"

typedef struct pki {
    csqlt_cert root;       /* server CA (root) */
    csqlt_cert inter;      /* intermediate under root */
    csqlt_cert leaf;       /* SAN x.y.sql.goog., CN p:i, signed by root */
    csqlt_cert cas_leaf;   /* SAN x.y.sql.goog., signed by inter */
    csqlt_cert expired;    /* CN p:i, signed by root, expired */
    csqlt_cert other_ca;
    csqlt_cert other_leaf; /* SAN x.y.sql.goog., CN p:i, signed by other_ca */
    csqlt_cert client_ca;
    csqlt_cert client;     /* CN "Google Cloud SQL Client" */
    char *root_pem;
    char *client_pem;
} pki;

static pki P;

static int pki_setup(void **state)
{
    (void)state;
    csqlt_make_ca(&P.root, "server root");
    csqlt_cert_opts io = {.cn = "server intermediate", .is_ca = 1};
    csqlt_make_cert(&P.inter, &P.root, &io);
    csqlt_make_leaf(&P.leaf, &P.root, "p:i", "x.y.sql.goog.");
    csqlt_make_leaf(&P.cas_leaf, &P.inter, NULL, "x.y.sql.goog.");
    csqlt_cert_opts eo = {.cn = "p:i", .not_before_s = -7200, .not_after_s = -3600};
    csqlt_make_cert(&P.expired, &P.root, &eo);
    csqlt_make_ca(&P.other_ca, "other root");
    csqlt_make_leaf(&P.other_leaf, &P.other_ca, "p:i", "x.y.sql.goog.");
    csqlt_make_ca(&P.client_ca, "client signer");
    csqlt_make_leaf(&P.client, &P.client_ca, "Google Cloud SQL Client", NULL);
    P.root_pem = csqlt_pem(P.root.cert, NULL, NULL);
    P.client_pem = csqlt_pem(P.client.cert, NULL, NULL);
    return 0;
}

static int pki_teardown(void **state)
{
    (void)state;
    csqlt_cert *all[] = {&P.root, &P.inter, &P.leaf, &P.cas_leaf, &P.expired,
                         &P.other_ca, &P.other_leaf, &P.client_ca, &P.client};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        csqlt_cert_free(all[i]);
    }
    free(P.root_pem);
    free(P.client_pem);
    return 0;
}

/* ---- the identity rule ---- */

static void test_identity_san_match(void **state)
{
    (void)state;
    char why[256];
    X509 *leaf = P.leaf.cert;
    assert_int_equal(csql__tls_identity_ok(leaf, "x.y.sql.goog", NULL, why, sizeof(why)), 1);
    assert_int_equal(csql__tls_identity_ok(leaf, "x.y.sql.goog.", NULL, why, sizeof(why)), 1);
    assert_int_equal(csql__tls_identity_ok(leaf, "X.Y.SQL.GOOG", NULL, why, sizeof(why)), 1);
    assert_int_equal(csql__tls_identity_ok(leaf, "x.y.sql.goog..", NULL, why, sizeof(why)), 1);
    assert_int_equal(csql__tls_identity_ok(leaf, "y.sql.goog", NULL, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "y.sql.goog"));
    assert_int_equal(csql__tls_identity_ok(leaf, "x.y.sql.goo", NULL, why, sizeof(why)), 0);
    assert_int_equal(csql__tls_identity_ok(leaf, "xx.y.sql.goog", NULL, why, sizeof(why)), 0);
    assert_int_equal(csql__tls_identity_ok(leaf, ".", NULL, why, sizeof(why)), 0);
}

static void test_identity_cn_fallback(void **state)
{
    (void)state;
    char why[256];
    X509 *leaf = P.leaf.cert;
    /* No DNS name known: CN decides. */
    assert_int_equal(csql__tls_identity_ok(leaf, NULL, "p:i", why, sizeof(why)), 1);
    assert_int_equal(csql__tls_identity_ok(leaf, "", "p:i", why, sizeof(why)), 1);
    /* SAN fails, CN matches. */
    assert_int_equal(csql__tls_identity_ok(leaf, "other.sql.goog", "p:i", why, sizeof(why)), 1);
    /* Both fail: the reason names both. */
    assert_int_equal(csql__tls_identity_ok(leaf, "other.sql.goog", "p:j", why, sizeof(why)), 0);
    assert_non_null(strstr(why, "other.sql.goog"));
    assert_non_null(strstr(why, "\"p:i\""));
    assert_non_null(strstr(why, "\"p:j\""));
    /* CN is compared exactly. */
    assert_int_equal(csql__tls_identity_ok(leaf, NULL, "P:I", why, sizeof(why)), 0);
    assert_int_equal(csql__tls_identity_ok(leaf, NULL, "p:i.", why, sizeof(why)), 0);
    /* A leaf with no CN only matches by SAN. */
    assert_int_equal(csql__tls_identity_ok(P.cas_leaf.cert, NULL, "p:i", why, sizeof(why)), 0);
    assert_non_null(strstr(why, "no usable CN"));
    assert_int_equal(csql__tls_identity_ok(P.cas_leaf.cert, "x.y.sql.goog", "p:i", why,
                                           sizeof(why)),
                     1);
    /* A leaf with no SAN at all (legacy shape) matches by CN. */
    assert_int_equal(csql__tls_identity_ok(P.expired.cert, "x.y.sql.goog", "p:i", why,
                                           sizeof(why)),
                     1);
}

static void test_identity_nothing_expected(void **state)
{
    (void)state;
    char why[256];
    assert_int_equal(csql__tls_identity_ok(P.leaf.cert, NULL, NULL, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "no server identity"));
    assert_int_equal(csql__tls_identity_ok(NULL, "x", "y", why, sizeof(why)), 0);
    assert_int_equal(csql__tls_identity_ok(P.leaf.cert, "nope", NULL, NULL, 0), 0);
}

/* A leaf whose SAN holds an embedded NUL: "x.y.sql.goog\0.evil.com". */
static X509 *nul_san_leaf(void)
{
    X509 *x = X509_dup(P.leaf.cert);
    assert_non_null(x);
    int idx = X509_get_ext_by_NID(x, NID_subject_alt_name, -1);
    assert_true(idx >= 0);
    X509_EXTENSION_free(X509_delete_ext(x, idx));
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    static const char raw[] = "x.y.sql.goog\0.evil.com";
    assert_int_equal(ASN1_STRING_set(ia5, raw, sizeof(raw) - 1), 1);
    GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
    sk_GENERAL_NAME_push(names, gn);
    assert_int_equal(X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_APPEND), 1);
    GENERAL_NAMES_free(names);
    return x;
}

static void test_identity_embedded_nul_never_matches(void **state)
{
    (void)state;
    X509 *x = nul_san_leaf();
    char why[256];
    assert_int_equal(csql__tls_identity_ok(x, "x.y.sql.goog", NULL, why, sizeof(why)), 0);
    assert_int_equal(csql__tls_identity_ok(x, "x.y.sql.goog\0.evil.com", NULL, why, sizeof(why)),
                     0);
    X509_free(x);
}

static void test_identity_second_san(void **state)
{
    (void)state;
    csqlt_cert two;
    csqlt_cert_opts o = {.cn = "p:i", .san_dns = "a.sql.goog", .san_dns2 = "b.sql.goog."};
    csqlt_make_cert(&two, &P.root, &o);
    char why[64];
    assert_int_equal(csql__tls_identity_ok(two.cert, "b.sql.goog", NULL, why, sizeof(why)), 1);
    assert_int_equal(csql__tls_identity_ok(two.cert, "a.sql.goog.", NULL, why, sizeof(why)), 1);
    /* why is truncated safely. */
    assert_int_equal(csql__tls_identity_ok(two.cert, "c.sql.goog", "zz", why, sizeof(why)), 0);
    assert_true(strlen(why) < sizeof(why));
    csqlt_cert_free(&two);
}

/* ---- contexts ---- */

static void test_ctx_settings(void **state)
{
    (void)state;
    SSL_CTX *ctx = NULL;
    int64_t not_after = 0;
    char *two_cas = csqlt_pem(P.root.cert, P.other_ca.cert, NULL);
    assert_int_equal(csql__tls_client_ctx_new(P.client.key, P.client_pem, two_cas, &ctx,
                                              &not_after),
                     0);
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
    assert_int_equal(SSL_CTX_get_max_proto_version(ctx), 0);
    assert_int_equal(SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER, SSL_VERIFY_PEER);
    /* Exactly our two anchors: no system roots. */
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    assert_int_equal(sk_X509_OBJECT_num(X509_STORE_get0_objects(store)), 2);
    assert_true(X509_VERIFY_PARAM_get_flags(X509_STORE_get0_param(store)) &
                X509_V_FLAG_PARTIAL_CHAIN);
    int64_t now = (int64_t)time(NULL);
    assert_true(not_after > now + 3500 && not_after < now + 3700);
    SSL_CTX_free(ctx);
    free(two_cas);
}

static void test_ctx_duplicate_ca_is_fine(void **state)
{
    (void)state;
    SSL_CTX *ctx = NULL;
    char *dup = csqlt_pem(P.root.cert, P.root.cert, NULL);
    assert_int_equal(csql__tls_client_ctx_new(P.client.key, P.client_pem, dup, &ctx, NULL), 0);
    SSL_CTX_free(ctx);
    free(dup);
}

static void test_ctx_errors(void **state)
{
    (void)state;
    SSL_CTX *ctx = (SSL_CTX *)1;
    int64_t na = 0;
    assert_int_equal(csql__tls_client_ctx_new(P.client.key, "not a pem", P.root_pem, &ctx, &na),
                     CSQL_ERR_API_RESPONSE);
    assert_null(ctx);
    assert_non_null(strstr(csql_error_last()->message, "client certificate"));
    /* The certificate belongs to another key. */
    assert_int_equal(csql__tls_client_ctx_new(P.leaf.key, P.client_pem, P.root_pem, &ctx, &na),
                     CSQL_ERR_API_RESPONSE);
    assert_non_null(strstr(csql_error_last()->message, "does not match the private key"));
    assert_int_equal(csql__tls_client_ctx_new(P.client.key, P.client_pem, "", &ctx, &na),
                     CSQL_ERR_API_RESPONSE);
    assert_non_null(strstr(csql_error_last()->message, "no certificate"));
    /* A PEM block whose body is damaged. */
    char *bad = strdup(P.root_pem);
    bad[strlen(bad) / 2] = '!';
    assert_int_equal(csql__tls_client_ctx_new(P.client.key, P.client_pem, bad, &ctx, &na),
                     CSQL_ERR_API_RESPONSE);
    free(bad);
    assert_int_equal(csql__tls_client_ctx_new(NULL, P.client_pem, P.root_pem, &ctx, &na),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(ERR_peek_error(), 0); /* the OpenSSL queue is left clean */
}

/* ---- handshakes over a BIO pair ---- */

static SSL_CTX *server_ctx(const csqlt_cert *leaf, X509 *chain, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate(ctx, leaf->cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, leaf->key), 1);
    if (chain != NULL) {
        assert_int_equal(SSL_CTX_add1_chain_cert(ctx, chain), 1);
    }
    if (max_version != 0) {
        SSL_CTX_set_max_proto_version(ctx, max_version);
    }
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), P.client_ca.cert);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return ctx;
}

typedef struct hs_result {
    int ok;
    int code;         /* csql__tls_raise code when !ok */
    char message[1024];
} hs_result;

/*
 * Handshake a client made from ca_pem (expecting dns/cn; set_expect 0 skips
 * csql__tls_expect) against a server presenting `leaf` (+ chain).
 */
static hs_result handshake(const char *ca_pem, const csqlt_cert *leaf, X509 *chain,
                           int server_max, const char *dns, const char *cn, int set_expect)
{
    hs_result res = {0};
    SSL_CTX *cctx = NULL;
    assert_int_equal(csql__tls_client_ctx_new(P.client.key, P.client_pem, ca_pem, &cctx, NULL), 0);
    SSL_CTX *sctx = server_ctx(leaf, chain, server_max);
    SSL *c = SSL_new(cctx);
    SSL *s = SSL_new(sctx);
    BIO *bc = NULL;
    BIO *bs = NULL;
    assert_int_equal(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
    SSL_set_bio(c, bc, bc);
    SSL_set_bio(s, bs, bs);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    if (set_expect) {
        assert_int_equal(csql__tls_expect(c, dns, cn), 0);
        /* Setting again replaces (and frees) the first copy. */
        assert_int_equal(csql__tls_expect(c, dns, cn), 0);
    }
    int cdone = 0;
    int sdone = 0;
    int failed = 0;
    for (int i = 0; i < 50 && !(cdone && sdone) && !failed; i++) {
        if (!cdone) {
            int r = SSL_do_handshake(c);
            if (r == 1) {
                cdone = 1;
            } else {
                int e = SSL_get_error(c, r);
                failed = e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
            }
        }
        if (!sdone && !failed) {
            int r = SSL_do_handshake(s);
            if (r == 1) {
                sdone = 1;
            } else {
                int e = SSL_get_error(s, r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                    /* The server gave up: let the client read the alert. */
                    ERR_clear_error();
                    int r2 = SSL_do_handshake(c);
                    (void)r2;
                    failed = 1;
                }
            }
        }
    }
    res.ok = cdone && sdone && !failed;
    if (!res.ok) {
        res.code = csql__tls_raise(c, CSQL_ERR_TLS_HANDSHAKE, "test handshake");
        snprintf(res.message, sizeof(res.message), "%s", csql_error_last()->message);
        assert_int_equal(ERR_peek_error(), 0);
    }
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    return res;
}

static void test_handshake_san_ok(void **state)
{
    (void)state;
    hs_result r = handshake(P.root_pem, &P.leaf, NULL, 0, "x.y.sql.goog", "p:i", 1);
    assert_true(r.ok);
    r = handshake(P.root_pem, &P.leaf, NULL, 0, "X.Y.SQL.GOOG.", "nope:nope", 1);
    assert_true(r.ok);
}

static void test_handshake_cn_fallback_ok(void **state)
{
    (void)state;
    hs_result r = handshake(P.root_pem, &P.leaf, NULL, 0, NULL, "p:i", 1);
    assert_true(r.ok);
    r = handshake(P.root_pem, &P.leaf, NULL, 0, "unrelated.sql.goog", "p:i", 1);
    assert_true(r.ok);
}

static void test_handshake_name_mismatch(void **state)
{
    (void)state;
    hs_result r = handshake(P.root_pem, &P.leaf, NULL, 0, "other.sql.goog", "p:other", 1);
    assert_false(r.ok);
    assert_int_equal(r.code, CSQL_ERR_TLS_VERIFY);
    assert_non_null(strstr(r.message, "server name mismatch"));
    assert_non_null(strstr(r.message, "other.sql.goog"));
    assert_non_null(strstr(r.message, "test handshake"));
}

static void test_handshake_expired(void **state)
{
    (void)state;
    hs_result r = handshake(P.root_pem, &P.expired, NULL, 0, NULL, "p:i", 1);
    assert_false(r.ok);
    assert_int_equal(r.code, CSQL_ERR_TLS_VERIFY);
    assert_non_null(strstr(r.message, "certificate has expired"));
}

static void test_handshake_other_ca(void **state)
{
    (void)state;
    hs_result r = handshake(P.root_pem, &P.other_leaf, NULL, 0, "x.y.sql.goog", "p:i", 1);
    assert_false(r.ok);
    assert_int_equal(r.code, CSQL_ERR_TLS_VERIFY);
    assert_non_null(strstr(r.message, "unable to get local issuer certificate"));
}

static void test_handshake_ca_bundle_trusts_all(void **state)
{
    (void)state;
    /* serverCaCert may hold several PEMs: the second one is trusted too. */
    char *bundle = csqlt_pem(P.root.cert, P.other_ca.cert, NULL);
    hs_result r = handshake(bundle, &P.other_leaf, NULL, 0, "x.y.sql.goog", "p:i", 1);
    assert_true(r.ok);
    free(bundle);
}

static void test_handshake_cas_chain(void **state)
{
    (void)state;
    /* Root trusted, server sends leaf + intermediate. */
    hs_result r = handshake(P.root_pem, &P.cas_leaf, P.inter.cert, 0, "x.y.sql.goog", "p:i", 1);
    assert_true(r.ok);
    /* Only the intermediate trusted (partial chain). */
    char *inter_pem = csqlt_pem(P.inter.cert, NULL, NULL);
    r = handshake(inter_pem, &P.cas_leaf, NULL, 0, "x.y.sql.goog", "p:i", 1);
    assert_true(r.ok);
    free(inter_pem);
    /* Root trusted but the intermediate is missing. */
    r = handshake(P.root_pem, &P.cas_leaf, NULL, 0, "x.y.sql.goog", "p:i", 1);
    assert_false(r.ok);
    assert_int_equal(r.code, CSQL_ERR_TLS_VERIFY);
    assert_non_null(strstr(r.message, "unable to get local issuer certificate"));
    /* Good chain, wrong name: identity is checked on the leaf only. */
    r = handshake(P.root_pem, &P.cas_leaf, P.inter.cert, 0, "server.intermediate", "server "
                                                                                    "intermediate",
                  1);
    assert_false(r.ok);
    assert_int_equal(r.code, CSQL_ERR_TLS_VERIFY);
}

static void test_handshake_tls12_server(void **state)
{
    (void)state;
    hs_result r = handshake(P.root_pem, &P.leaf, NULL, TLS1_2_VERSION, "x.y.sql.goog", "p:i", 1);
    assert_false(r.ok);
    assert_int_equal(r.code, CSQL_ERR_TLS_HANDSHAKE);
    assert_non_null(strstr(r.message, "protocol version"));
}

static void test_handshake_without_expectations_fails_closed(void **state)
{
    (void)state;
    hs_result r = handshake(P.root_pem, &P.leaf, NULL, 0, NULL, NULL, 0);
    assert_false(r.ok);
    assert_int_equal(r.code, CSQL_ERR_TLS_VERIFY);
}

static void test_raise_without_ssl(void **state)
{
    (void)state;
    ERR_clear_error();
    assert_int_equal(csql__tls_raise(NULL, CSQL_ERR_TLS_IO, "read"), CSQL_ERR_TLS_IO);
    assert_non_null(strstr(csql_error_last()->message, "read"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_san_match),
        cmocka_unit_test(test_identity_cn_fallback),
        cmocka_unit_test(test_identity_nothing_expected),
        cmocka_unit_test(test_identity_embedded_nul_never_matches),
        cmocka_unit_test(test_identity_second_san),
        cmocka_unit_test(test_ctx_settings),
        cmocka_unit_test(test_ctx_duplicate_ca_is_fine),
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_handshake_san_ok),
        cmocka_unit_test(test_handshake_cn_fallback_ok),
        cmocka_unit_test(test_handshake_name_mismatch),
        cmocka_unit_test(test_handshake_expired),
        cmocka_unit_test(test_handshake_other_ca),
        cmocka_unit_test(test_handshake_ca_bundle_trusts_all),
        cmocka_unit_test(test_handshake_cas_chain),
        cmocka_unit_test(test_handshake_tls12_server),
        cmocka_unit_test(test_handshake_without_expectations_fails_closed),
        cmocka_unit_test(test_raise_without_ssl),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
