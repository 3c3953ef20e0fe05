/* In-memory test PKI. */
#include "testcerts.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(cert, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

void csqlt_make_cert(csqlt_cert *out, const csqlt_cert *issuer, const csqlt_cert_opts *o)
{
    static long serial = 1000;
    out->key = o->rsa_bits > 0 ? EVP_RSA_gen((unsigned)o->rsa_bits) : EVP_EC_gen("P-256");
    assert_non_null(out->key);
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    ASN1_INTEGER_set(X509_get_serialNumber(x), __atomic_add_fetch(&serial, 1, __ATOMIC_SEQ_CST));
    X509_gmtime_adj(X509_getm_notBefore(x), o->not_before_s ? o->not_before_s : -60);
    X509_gmtime_adj(X509_getm_notAfter(x), o->not_after_s ? o->not_after_s : 3600);
    assert_int_equal(X509_set_pubkey(x, out->key), 1);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"csql tests", -1,
                               -1, 0);
    if (o->cn != NULL) {
        assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                                    (const unsigned char *)o->cn, -1, -1, 0),
                         1);
    }
    X509 *issuer_cert = issuer ? issuer->cert : x;
    assert_int_equal(X509_set_issuer_name(x, X509_get_subject_name(issuer_cert)), 1);
    if (o->is_ca) {
        add_ext(x, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, issuer_cert, NID_basic_constraints, "CA:FALSE");
        add_ext(x, issuer_cert, NID_ext_key_usage, "serverAuth,clientAuth");
    }
    add_ext(x, issuer_cert, NID_subject_key_identifier, "hash");
    if (issuer != NULL) {
        add_ext(x, issuer_cert, NID_authority_key_identifier, "keyid:always");
    }
    if (o->san_dns != NULL) {
        char san[512];
        if (o->san_dns2 != NULL) {
            snprintf(san, sizeof(san), "DNS:%s,DNS:%s", o->san_dns, o->san_dns2);
        } else {
            snprintf(san, sizeof(san), "DNS:%s", o->san_dns);
        }
        add_ext(x, issuer_cert, NID_subject_alt_name, san);
    }
    EVP_PKEY *signer = issuer ? issuer->key : out->key;
    assert_true(X509_sign(x, signer, EVP_sha256()) > 0);
    out->cert = x;
}

void csqlt_make_ca(csqlt_cert *out, const char *cn)
{
    csqlt_cert_opts o = {.cn = cn, .is_ca = 1};
    csqlt_make_cert(out, NULL, &o);
}

void csqlt_make_leaf(csqlt_cert *out, const csqlt_cert *issuer, const char *cn, const char *san)
{
    csqlt_cert_opts o = {.cn = cn, .san_dns = san};
    csqlt_make_cert(out, issuer, &o);
}

void csqlt_cert_free(csqlt_cert *c)
{
    EVP_PKEY_free(c->key);
    X509_free(c->cert);
    c->key = NULL;
    c->cert = NULL;
}

char *csqlt_pem(X509 *a, X509 *b, X509 *c)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    X509 *certs[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        if (certs[i] != NULL) {
            assert_int_equal(PEM_write_bio_X509(bio, certs[i]), 1);
        }
    }
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *pem = malloc((size_t)n + 1);
    assert_non_null(pem);
    memcpy(pem, data, (size_t)n);
    pem[n] = '\0';
    BIO_free(bio);
    return pem;
}
