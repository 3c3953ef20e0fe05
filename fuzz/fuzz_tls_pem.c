/*
 * libFuzzer target: certificate and PEM input on the TLS side, i.e.
 * csql__tls_client_ctx_new with a fuzzed client certificate PEM and/or a
 * fuzzed server CA bundle, and the server identity rule
 * (csql__tls_identity_ok) over fuzzed DER and PEM leaves.
 * Byte 0 picks the mode; the rest is the input:
 *   0: client certificate PEM (the CA bundle is a good one)
 *   1: CA bundle PEM (the client certificate matches the key)
 *   2: "cert PEM" NUL "CA PEM"
 *   3: the good client certificate followed by fuzzed chain certificates
 *   4: a DER leaf for the identity rule
 *   5: a PEM leaf for the identity rule
 * The key and the good certificates are made once, in memory (EC P-256).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "csql/errors.h"
#include "tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *g_key;
static char *g_cert_pem; /* self-signed, CN "Google Cloud SQL Client", for g_key */
static char *g_ca_pem;   /* a CA certificate, also for g_key (only its parsing matters) */
static int64_t g_not_after;

static char *to_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (b != NULL && PEM_write_bio_X509(b, x) == 1) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        out = malloc((size_t)n + 1);
        if (out != NULL) {
            memcpy(out, p, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(b);
    return out;
}

static X509 *self_signed(const char *cn, int ca)
{
    X509 *x = X509_new();
    if (x == NULL) {
        abort();
    }
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), ca ? 1 : 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, g_key);
    if (X509_sign(x, g_key, EVP_sha256()) == 0) {
        abort();
    }
    return x;
}

static void init_once(void)
{
    if (g_key != NULL) {
        return;
    }
    g_key = EVP_EC_gen("P-256");
    if (g_key == NULL) {
        abort();
    }
    X509 *cert = self_signed("Google Cloud SQL Client", 0);
    X509 *ca = self_signed("Google Cloud SQL Server CA", 1);
    g_cert_pem = to_pem(cert);
    g_ca_pem = to_pem(ca);
    struct tm tm;
    if (g_cert_pem == NULL || g_ca_pem == NULL ||
        ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) {
        abort();
    }
    g_not_after = (int64_t)timegm(&tm);
    X509_free(cert);
    X509_free(ca);
}

/* csql__tls_client_ctx_new over NUL-terminated texts; checks its contract. */
static void try_ctx(const char *cert_pem, const char *ca_pem, int cert_is_good)
{
    SSL_CTX *ctx = (SSL_CTX *)1;
    int64_t not_after = -1;
    int rc = csql__tls_client_ctx_new(g_key, cert_pem, ca_pem, &ctx, &not_after);
    if (rc == CSQL_OK) {
        if (ctx == NULL || (cert_is_good && not_after != g_not_after)) {
            abort();
        }
        SSL_CTX_free(ctx);
    } else if (ctx != NULL || (rc != CSQL_ERR_API_RESPONSE && rc != CSQL_ERR_NOMEM)) {
        abort();
    }
    /* The OpenSSL error queue is left empty for the next caller on this thread. */
    if (ERR_peek_error() != 0) {
        abort();
    }
    csql_error_clear();
}

static void check_identity(X509 *leaf)
{
    static const char *const dns[] = {NULL, "i.p.us-central1.sql.goog", "i.p.us-central1.sql.goog."};
    static const char *const cns[] = {NULL, "p:i", "google.com:p:i"};
    char why[256];
    for (size_t d = 0; d < 3; d++) {
        for (size_t c = 0; c < 3; c++) {
            memset(why, 'x', sizeof(why));
            int ok = csql__tls_identity_ok(leaf, dns[d], cns[c], why, sizeof(why));
            if (memchr(why, '\0', sizeof(why)) == NULL || (ok != 0 && ok != 1) ||
                (dns[d] == NULL && cns[c] == NULL && ok)) {
                abort();
            }
        }
    }
    (void)csql__tls_identity_ok(leaf, "x", "y", NULL, 0);
    ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    if (size < 1) {
        return 0;
    }
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    char *text = malloc(len + 1);
    if (text == NULL) {
        return 0;
    }
    if (len > 0) {
        memcpy(text, in, len);
    }
    text[len] = '\0';

    switch (data[0] % 6) {
    case 0:
        try_ctx(text, g_ca_pem, 0);
        break;
    case 1:
        try_ctx(g_cert_pem, text, 1);
        break;
    case 2: {
        const char *ca = memchr(text, '\0', len) ? text + strlen(text) + 1 : "";
        try_ctx(text, ca, 0);
        break;
    }
    case 3: {
        size_t n = strlen(g_cert_pem);
        char *both = malloc(n + len + 1);
        if (both != NULL) {
            memcpy(both, g_cert_pem, n);
            memcpy(both + n, text, len + 1);
            try_ctx(both, g_ca_pem, 1);
            free(both);
        }
        break;
    }
    case 4: {
        const unsigned char *p = in;
        X509 *x = d2i_X509(NULL, &p, (long)len);
        if (x != NULL) {
            check_identity(x);
            X509_free(x);
        }
        ERR_clear_error();
        break;
    }
    default: {
        BIO *b = BIO_new_mem_buf(in, (int)len);
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        if (x != NULL) {
            check_identity(x);
            X509_free(x);
        }
        BIO_free(b);
        ERR_clear_error();
        break;
    }
    }
    free(text);
    return 0;
}
