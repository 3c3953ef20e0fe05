/*
 * Client TLS contexts and server identity (REFERENCE §4): TLS 1.3 and up,
 * trust = the instance's CA PEMs only (partial chains allowed), and a verify
 * callback that, once the chain is good, checks the leaf against the
 * expectations stored on each SSL.
 */
#include "tls.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "error.h"

#define MAX_CA_CERTS 64
#define MAX_CHAIN_CERTS 8
#define MAX_SAN_ENTRIES 1024
#define WHY_MAX 256

/* What the server must prove, stored on each SSL (ex_data); freed with the SSL. */
typedef struct expect {
    char *dns_name;        /* or NULL */
    char *expected_cn;     /* or NULL */
    char reason[WHY_MAX];  /* why verification failed, recorded by the callback */
} expect;

static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void expect_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                        void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    expect *e = ptr;
    if (e != NULL) {
        free(e->dns_name);
        free(e->expected_cn);
        free(e);
    }
}

static void ex_index_init(void)
{
    ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, expect_free);
}

static int get_ex_index(void)
{
    pthread_once(&ex_once, ex_index_init);
    return ex_index;
}

static expect *expect_of(const SSL *ssl)
{
    int idx = get_ex_index();
    return (ssl != NULL && idx >= 0) ? SSL_get_ex_data(ssl, idx) : NULL;
}

/* ---- identity ---- */

/* Length of s without trailing dots. */
static size_t undotted_len(const char *s, size_t n)
{
    while (n > 0 && s[n - 1] == '.') {
        n--;
    }
    return n;
}

static int san_matches(const ASN1_IA5STRING *san, const char *want, size_t want_len)
{
    const char *have = (const char *)ASN1_STRING_get0_data(san);
    int hn = ASN1_STRING_length(san);
    if (have == NULL || hn <= 0 || memchr(have, '\0', (size_t)hn) != NULL) {
        return 0; /* an embedded NUL is an attack, never a match */
    }
    size_t have_len = undotted_len(have, (size_t)hn);
    return have_len == want_len && have_len > 0 && strncasecmp(have, want, want_len) == 0;
}

static int leaf_has_san(X509 *leaf, const char *dns_name)
{
    size_t want_len = undotted_len(dns_name, strlen(dns_name));
    if (want_len == 0) {
        return 0;
    }
    GENERAL_NAMES *names = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    if (names == NULL) {
        return 0;
    }
    int found = 0;
    int n = sk_GENERAL_NAME_num(names);
    for (int i = 0; i < n && i < MAX_SAN_ENTRIES && !found; i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type == GEN_DNS) {
            found = san_matches(gn->d.dNSName, dns_name, want_len);
        }
    }
    GENERAL_NAMES_free(names);
    return found;
}

/* The most specific (last) subject CN, copied into buf; 0 if there is none usable. */
static int leaf_cn(X509 *leaf, char *buf, size_t len)
{
    const X509_NAME *subj = X509_get_subject_name(leaf);
    int idx = -1;
    int last = -1;
    for (int i = 0; i < 64; i++) {
        idx = X509_NAME_get_index_by_NID(subj, NID_commonName, idx);
        if (idx < 0) {
            break;
        }
        last = idx;
    }
    if (last < 0) {
        return 0;
    }
    const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, last));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, s);
    if (n < 0) {
        return 0;
    }
    int ok = memchr(utf8, '\0', (size_t)n) == NULL && (size_t)n < len;
    if (ok) {
        memcpy(buf, utf8, (size_t)n);
        buf[n] = '\0';
    }
    OPENSSL_free(utf8);
    return ok;
}

int csql__tls_identity_ok(X509 *leaf, const char *dns_name, const char *expected_cn, char *why,
                          size_t whylen)
{
    char dummy[1];
    if (why == NULL || whylen == 0) {
        why = dummy;
        whylen = sizeof(dummy);
    }
    why[0] = '\0';
    int want_dns = dns_name != NULL && dns_name[0] != '\0';
    int want_cn = expected_cn != NULL && expected_cn[0] != '\0';
    if (leaf == NULL || (!want_dns && !want_cn)) {
        snprintf(why, whylen, "no server identity to check against");
        return 0;
    }
    if (want_dns && leaf_has_san(leaf, dns_name)) {
        return 1;
    }
    char cn[256];
    int have_cn = leaf_cn(leaf, cn, sizeof(cn));
    if (want_cn && have_cn && strcmp(cn, expected_cn) == 0) {
        return 1;
    }
    char cn_desc[300];
    if (have_cn) {
        snprintf(cn_desc, sizeof(cn_desc), "CN \"%.200s\"", cn);
    } else {
        snprintf(cn_desc, sizeof(cn_desc), "no usable CN");
    }
    if (want_dns && want_cn) {
        snprintf(why, whylen, "certificate has no DNS SAN \"%s\" and its %s is not \"%s\"",
                 dns_name, cn_desc, expected_cn);
    } else if (want_dns) {
        snprintf(why, whylen, "certificate has no DNS SAN \"%s\"", dns_name);
    } else {
        snprintf(why, whylen, "certificate %s is not \"%s\"", cn_desc, expected_cn);
    }
    return 0;
}

int csql__tls_expect(SSL *ssl, const char *dns_name, const char *expected_cn)
{
    int idx = get_ex_index();
    if (ssl == NULL || idx < 0) {
        return csql__error(CSQL_ERR_INTERNAL, "TLS identity expectations: no SSL or ex_data index");
    }
    expect *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory for TLS identity expectations");
    }
    if ((dns_name != NULL && (e->dns_name = strdup(dns_name)) == NULL) ||
        (expected_cn != NULL && (e->expected_cn = strdup(expected_cn)) == NULL)) {
        expect_free(NULL, e, NULL, 0, 0, NULL);
        return csql__error(CSQL_ERR_NOMEM, "out of memory for TLS identity expectations");
    }
    expect *old = SSL_get_ex_data(ssl, idx);
    if (SSL_set_ex_data(ssl, idx, e) != 1) {
        expect_free(NULL, e, NULL, 0, 0, NULL);
        return csql__error(CSQL_ERR_INTERNAL, "could not store TLS identity expectations");
    }
    expect_free(NULL, old, NULL, 0, 0, NULL);
    return CSQL_OK;
}

static int verify_cb(int preverify_ok, X509_STORE_CTX *xctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(xctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    expect *e = expect_of(ssl);
    int depth = X509_STORE_CTX_get_error_depth(xctx);
    if (!preverify_ok) {
        if (e != NULL && e->reason[0] == '\0') {
            int err = X509_STORE_CTX_get_error(xctx);
            snprintf(e->reason, sizeof(e->reason), "%s (certificate at depth %d)",
                     X509_verify_cert_error_string(err), depth);
        }
        return 0;
    }
    if (depth != 0) {
        return 1;
    }
    if (e == NULL) {
        /* Fail closed: a handshake without expectations is a bug in the caller. */
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    char why[WHY_MAX];
    if (!csql__tls_identity_ok(X509_STORE_CTX_get_current_cert(xctx), e->dns_name, e->expected_cn,
                               why, sizeof(why))) {
        snprintf(e->reason, sizeof(e->reason), "server name mismatch: %s", why);
        X509_STORE_CTX_set_error(xctx, X509_V_ERR_HOSTNAME_MISMATCH);
        return 0;
    }
    return 1;
}

/* ---- contexts ---- */

static int bad_pem(const char *what)
{
    ERR_clear_error();
    return csql__error(CSQL_ERR_API_RESPONSE, "%s", what);
}

/* Unix seconds of an ASN1_TIME, or 0 on failure. */
static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) {
        return 0;
    }
    return (int64_t)timegm(&tm);
}

/* True when the last OpenSSL error says PEM input simply ran out (not malformed). */
static int pem_at_end(void)
{
    unsigned long err = ERR_peek_last_error();
    return ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE;
}

static int load_trust(SSL_CTX *ctx, const char *ca_pem)
{
    BIO *bio = BIO_new_mem_buf(ca_pem, -1);
    if (bio == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory reading the server CA certificates");
    }
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int count = 0;
    int rc = CSQL_OK;
    for (;;) {
        X509 *ca = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (ca == NULL) {
            if (!pem_at_end()) {
                rc = bad_pem("server CA certificate PEM does not parse");
            }
            break;
        }
        if (++count > MAX_CA_CERTS) {
            X509_free(ca);
            rc = csql__error(CSQL_ERR_API_RESPONSE,
                             "server CA PEM holds more than %d certificates", MAX_CA_CERTS);
            break;
        }
        int ok = X509_STORE_add_cert(store, ca);
        X509_free(ca);
        if (!ok) {
            unsigned long err = ERR_peek_last_error();
            /* A duplicate in the bundle is harmless. */
            if (ERR_GET_REASON(err) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
                rc = bad_pem("server CA certificate could not be added to the trust store");
                break;
            }
        }
    }
    ERR_clear_error();
    BIO_free(bio);
    if (rc == CSQL_OK && count == 0) {
        rc = csql__error(CSQL_ERR_API_RESPONSE, "server CA PEM holds no certificate");
    }
    if (rc == CSQL_OK) {
        X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    }
    return rc;
}

/* Leaf from cert_pem, any following certificates as the chain. */
static int load_client_cert(SSL_CTX *ctx, EVP_PKEY *key, const char *cert_pem, int64_t *not_after)
{
    BIO *bio = BIO_new_mem_buf(cert_pem, -1);
    if (bio == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory reading the client certificate");
    }
    int rc = CSQL_OK;
    X509 *leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (leaf == NULL) {
        rc = bad_pem("client certificate PEM does not parse");
        goto out;
    }
    if (SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        rc = bad_pem("client certificate does not match the private key");
        goto out;
    }
    for (int i = 0; i < MAX_CHAIN_CERTS; i++) {
        X509 *extra = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (extra == NULL) {
            break;
        }
        if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
            X509_free(extra);
            rc = bad_pem("client certificate chain could not be loaded");
            goto out;
        }
    }
    ERR_clear_error();
    if (not_after != NULL) {
        *not_after = asn1_time_unix(X509_get0_notAfter(leaf));
    }
out:
    X509_free(leaf);
    BIO_free(bio);
    return rc;
}

int csql__tls_client_ctx_new(EVP_PKEY *key, const char *cert_pem, const char *ca_pem,
                             SSL_CTX **out, int64_t *cert_not_after)
{
    if (key == NULL || cert_pem == NULL || ca_pem == NULL || out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "TLS context: key, certificates required");
    }
    *out = NULL;
    if (get_ex_index() < 0) {
        return csql__error(CSQL_ERR_INTERNAL, "could not register the TLS ex_data index");
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        ERR_clear_error();
        return csql__error(CSQL_ERR_NOMEM, "could not create a TLS context");
    }
    int rc = CSQL_OK;
    /* 1.3 at least; no maximum, so a later version is used when both sides have it. */
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1) {
        rc = csql__error(CSQL_ERR_INTERNAL, "TLS 1.3 is not available in this OpenSSL");
        goto fail;
    }
    rc = load_client_cert(ctx, key, cert_pem, cert_not_after);
    if (rc != CSQL_OK) {
        goto fail;
    }
    rc = load_trust(ctx, ca_pem);
    if (rc != CSQL_OK) {
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    *out = ctx;
    return CSQL_OK;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return rc;
}

/* ---- errors ---- */

/* The most telling OpenSSL reason in the queue ("tlsv1 alert protocol version", ...). */
static void openssl_reason(char *buf, size_t len)
{
    buf[0] = '\0';
    unsigned long err;
    unsigned long first = 0;
    /* The queue is bounded by OpenSSL (ERR_NUM_ERRORS); the counter is a second guard. */
    for (int i = 0; i < 32 && (err = ERR_get_error()) != 0; i++) {
        if (first == 0) {
            first = err;
        }
    }
    if (first != 0) {
        const char *r = ERR_reason_error_string(first);
        if (r != NULL) {
            snprintf(buf, len, "%s", r);
        } else {
            ERR_error_string_n(first, buf, len);
        }
    }
}

int csql__tls_raise(SSL *ssl, int code, const char *what)
{
    if (what == NULL) {
        what = "TLS";
    }
    char reason[256];
    openssl_reason(reason, sizeof(reason));
    ERR_clear_error();
    expect *e = expect_of(ssl);
    if (e != NULL && e->reason[0] != '\0') {
        return csql__error(CSQL_ERR_TLS_VERIFY, "%s: server certificate rejected: %s", what,
                           e->reason);
    }
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        return csql__error(CSQL_ERR_TLS_VERIFY, "%s: server certificate rejected: %s", what,
                           X509_verify_cert_error_string(vr));
    }
    if (strstr(reason, "protocol version") != NULL || strstr(reason, "unsupported protocol")) {
        return csql__error(code, "%s: %s (csql requires TLS 1.3 or later)", what, reason);
    }
    if (reason[0] != '\0') {
        return csql__error(code, "%s: %s", what, reason);
    }
    return csql__error(code, "%s: connection closed or reset by the server", what);
}
