/*
 * Test helpers: keys and X.509 certificates made in memory (CAs, server
 * leaves with SAN/CN, client certificates, expired ones) and PEM text.
 */
#ifndef CSQL_TESTCERTS_H
#define CSQL_TESTCERTS_H

#include <openssl/evp.h>
#include <openssl/x509.h>

typedef struct csqlt_cert {
    EVP_PKEY *key;
    X509 *cert;
} csqlt_cert;

typedef struct csqlt_cert_opts {
    const char *cn;       /* subject CN, or NULL for none */
    const char *san_dns;  /* a DNS SAN, or NULL */
    const char *san_dns2; /* a second DNS SAN, or NULL */
    long not_before_s;    /* validity start relative to now (default 0: now - 60 s) */
    long not_after_s;     /* validity end relative to now (default 0: now + 1 h) */
    int is_ca;
    int rsa_bits;         /* 0: an EC P-256 key (fast) */
} csqlt_cert_opts;

/* Make a key and a certificate signed by issuer (NULL: self-signed). Aborts the test on failure. */
void csqlt_make_cert(csqlt_cert *out, const csqlt_cert *issuer, const csqlt_cert_opts *o);
/* A self-signed CA named cn. */
void csqlt_make_ca(csqlt_cert *out, const char *cn);
/* A leaf signed by issuer with subject CN cn and optional DNS SAN. */
void csqlt_make_leaf(csqlt_cert *out, const csqlt_cert *issuer, const char *cn, const char *san);
void csqlt_cert_free(csqlt_cert *c);

/* PEM text of up to three certificates concatenated (NULLs skipped); malloc'd. */
char *csqlt_pem(X509 *a, X509 *b, X509 *c);

#endif
