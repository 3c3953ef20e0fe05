/*
 * Certificate authorities of csql-emulator: the signing CA that issues
 * ephemeral client certificates, and per-instance server identities (legacy:
 * self-signed CA + leaf CN "project:instance"; CAS: root -> intermediate ->
 * leaf with a DNS SAN). Every key the emulator makes is ECDSA P-256: a key
 * takes microseconds to generate, so an emulator with many instances starts
 * in milliseconds (RSA-2048 would cost ~50 ms a key). Client keys are the
 * connector's own (RSA), only signed here.
 */
#include "data_plane.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define CA_VALIDITY_S (10L * 365 * 24 * 3600)
#define LEAF_VALIDITY_S (365L * 24 * 3600)
#define BACKDATE_S 60L
#define MAX_PUBKEY_PEM 16384

struct emu_signing_ca {
    X509 *cert;
    EVP_PKEY *key;
};

struct emu_server_id {
    emu_ca_mode mode;
    X509 *leaf;
    EVP_PKEY *leaf_key;
    STACK_OF(X509) *chain; /* sent after the leaf: legacy [ca], CAS [intermediate, root] */
    char *ca_pem;          /* every CA a client must trust */
    time_t ca_expiry;
    char *dns_name;        /* CAS only */
};

static void set_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char detail[160] = "";
    if (e != 0) {
        ERR_error_string_n(e, detail, sizeof(detail));
    }
    ERR_clear_error();
    snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", detail);
}

static EVP_PKEY *new_key(void)
{
    return EVP_EC_gen("P-256");
}

static int random_serial(uint64_t *out)
{
    uint64_t v = 0;
    while (v == 0) {
        if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1) {
            return -1;
        }
        /* Positive and non-zero as a DER INTEGER, and representable in an int64. */
        v &= UINT64_C(0x7fffffffffffffff);
    }
    *out = v;
    return 0;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL) {
        return -1;
    }
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

static int add_name(X509_NAME *name, const char *field, const char *value)
{
    return X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, (const unsigned char *)value,
                                      -1, -1, 0) == 1
               ? 0
               : -1;
}

/*
 * A certificate for `key` with subject (O, CN), valid [not_before, not_after],
 * signed by issuer_key (issuer == NULL: self-signed). profile selects the
 * extensions: CA, server leaf (with optional DNS SAN) or client.
 */
typedef enum { PROFILE_CA, PROFILE_SERVER, PROFILE_CLIENT } cert_profile;

typedef struct cert_spec {
    const char *org; /* may be NULL */
    const char *cn;
    const char *dns_san; /* server only; may be NULL */
    time_t not_before, not_after;
    cert_profile profile;
    uint64_t serial;
} cert_spec;

static X509 *make_cert(const cert_spec *spec, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key)
{
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    ASN1_INTEGER *serial = ASN1_INTEGER_new();
    int ok = -1;
    if (cert == NULL || name == NULL || serial == NULL) {
        goto out;
    }
    if (X509_set_version(cert, X509_VERSION_3) != 1 ||
        ASN1_INTEGER_set_uint64(serial, spec->serial) != 1 ||
        X509_set_serialNumber(cert, serial) != 1) {
        goto out;
    }
    if (add_name(name, "C", "US") != 0 ||
        (spec->org != NULL && add_name(name, "O", spec->org) != 0) ||
        add_name(name, "CN", spec->cn) != 0 || X509_set_subject_name(cert, name) != 1 ||
        X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name) != 1) {
        goto out;
    }
    time_t nb = spec->not_before, na = spec->not_after;
    if (X509_time_adj_ex(X509_getm_notBefore(cert), 0, 0, &nb) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(cert), 0, 0, &na) == NULL ||
        X509_set_pubkey(cert, key) != 1) {
        goto out;
    }
    X509 *iss = issuer ? issuer : cert;
    if (add_ext(cert, iss, NID_subject_key_identifier, "hash") != 0 ||
        add_ext(cert, iss, NID_authority_key_identifier, "keyid:always") != 0) {
        goto out;
    }
    switch (spec->profile) {
    case PROFILE_CA:
        if (add_ext(cert, iss, NID_basic_constraints, "critical,CA:TRUE") != 0 ||
            add_ext(cert, iss, NID_key_usage, "critical,keyCertSign,cRLSign") != 0) {
            goto out;
        }
        break;
    case PROFILE_SERVER:
        if (add_ext(cert, iss, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
            add_ext(cert, iss, NID_key_usage, "critical,digitalSignature,keyEncipherment") != 0 ||
            add_ext(cert, iss, NID_ext_key_usage, "serverAuth") != 0) {
            goto out;
        }
        if (spec->dns_san != NULL) {
            char san[300];
            if ((size_t)snprintf(san, sizeof(san), "DNS:%s", spec->dns_san) >= sizeof(san) ||
                add_ext(cert, iss, NID_subject_alt_name, san) != 0) {
                goto out;
            }
        }
        break;
    case PROFILE_CLIENT:
        if (add_ext(cert, iss, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
            add_ext(cert, iss, NID_key_usage, "critical,digitalSignature,keyEncipherment") != 0 ||
            add_ext(cert, iss, NID_ext_key_usage, "clientAuth") != 0) {
            goto out;
        }
        break;
    }
    if (X509_sign(cert, issuer_key ? issuer_key : key, EVP_sha256()) <= 0) {
        goto out;
    }
    ok = 0;
out:
    X509_NAME_free(name);
    ASN1_INTEGER_free(serial);
    if (ok != 0) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

static char *cert_pem_dup(X509 *cert)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (bio == NULL || PEM_write_bio_X509(bio, cert) != 1) {
        goto out;
    }
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || (out = malloc((size_t)n + 1)) == NULL) {
        goto out;
    }
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
out:
    BIO_free(bio);
    return out;
}

static time_t cert_not_after(X509 *cert)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) {
        return 0;
    }
    return timegm(&tm);
}

/* ---------------- signing CA ---------------- */

emu_signing_ca *emu_signing_ca_new(char *err, size_t errlen)
{
    emu_signing_ca *ca = calloc(1, sizeof(*ca));
    time_t now = time(NULL);
    cert_spec spec = {.org = "Google, Inc",
                      .cn = "Google Cloud SQL Signing CA",
                      .not_before = now - 3600,
                      .not_after = now + CA_VALIDITY_S,
                      .profile = PROFILE_CA};
    if (ca == NULL || (ca->key = new_key()) == NULL ||
        random_serial(&spec.serial) != 0 ||
        (ca->cert = make_cert(&spec, ca->key, NULL, NULL)) == NULL) {
        set_err(err, errlen, "signing CA: cannot create the CA certificate");
        emu_signing_ca_free(ca);
        return NULL;
    }
    return ca;
}

void emu_signing_ca_free(emu_signing_ca *ca)
{
    if (ca == NULL) {
        return;
    }
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    free(ca);
}

X509 *emu_signing_ca_cert(emu_signing_ca *ca)
{
    return ca ? ca->cert : NULL;
}

EVP_PKEY *emu_ca_parse_pubkey(const char *pem, size_t len, char *err, size_t errlen)
{
    BIO *bio = NULL;
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long der_len = 0;
    EVP_PKEY *key = NULL;

    if (pem == NULL || len == 0 || len > MAX_PUBKEY_PEM) {
        snprintf(err, errlen, "public_key: expected a PEM public key of at most %d bytes",
                 MAX_PUBKEY_PEM);
        return NULL;
    }
    if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL ||
        PEM_read_bio(bio, &name, &header, &der, &der_len) != 1) {
        snprintf(err, errlen, "public_key: not a PEM block");
        goto out;
    }
    if (strcmp(name, "PUBLIC KEY") != 0 && strcmp(name, "RSA PUBLIC KEY") != 0) {
        snprintf(err, errlen, "public_key: PEM type \"%.40s\", want PUBLIC KEY or RSA PUBLIC KEY",
                 name);
        goto out;
    }
    /* Either label may hold either encoding (the Go connector labels SPKI "RSA PUBLIC KEY"). */
    const unsigned char *p = der;
    key = d2i_PUBKEY(NULL, &p, der_len);
    if (key == NULL || p != der + der_len) {
        EVP_PKEY_free(key);
        p = der;
        key = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, der_len);
        if (key != NULL && p != der + der_len) {
            EVP_PKEY_free(key);
            key = NULL;
        }
    }
    if (key == NULL) {
        snprintf(err, errlen, "public_key: the %s PEM does not hold a valid key", name);
        goto out;
    }
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key) < 2048) {
        snprintf(err, errlen, "public_key: want an RSA key of at least 2048 bits");
        EVP_PKEY_free(key);
        key = NULL;
    }
out:
    ERR_clear_error();
    BIO_free(bio);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    return key;
}

int emu_signing_ca_sign(emu_signing_ca *ca, const char *pubkey_pem, size_t len, long lifetime_s,
                        char **cert_pem, uint64_t *serial, time_t *not_after, char *err,
                        size_t errlen)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    int rc = -1;
    time_t now = time(NULL);
    cert_spec spec = {.cn = "Google Cloud SQL Client",
                      .not_after = now + lifetime_s,
                      .profile = PROFILE_CLIENT};
    /* Backdated for clock skew; a negative lifetime (tests: already expired) stays ordered. */
    spec.not_before = now - BACKDATE_S;
    if (spec.not_before >= spec.not_after) {
        spec.not_before = spec.not_after - BACKDATE_S;
    }

    *cert_pem = NULL;
    if ((key = emu_ca_parse_pubkey(pubkey_pem, len, err, errlen)) == NULL) {
        goto out;
    }
    if (random_serial(&spec.serial) != 0 ||
        (cert = make_cert(&spec, key, ca->cert, ca->key)) == NULL ||
        (*cert_pem = cert_pem_dup(cert)) == NULL) {
        set_err(err, errlen, "signing CA: cannot sign the client certificate");
        goto out;
    }
    *serial = spec.serial;
    *not_after = spec.not_after;
    rc = 0;
out:
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}

/* ---------------- per-instance server identities ---------------- */

char *emu_ca_default_dns_name(const char *project, const char *region, const char *instance)
{
    size_t n = strlen(instance) + strlen(project) + strlen(region) + sizeof("...sql.goog");
    char *s = malloc(n);
    if (s == NULL) {
        return NULL;
    }
    snprintf(s, n, "%s.%s.%s.sql.goog", instance, project, region);
    /* "google.com:proj" is one DNS label: "google.com-proj". */
    for (char *c = s; *c; c++) {
        if (*c == ':') {
            *c = '-';
        }
    }
    return s;
}

/* A CA certificate and its key (self-signed when issuer is NULL). */
static X509 *build_ca(const char *org, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                      EVP_PKEY **key_out, time_t now)
{
    cert_spec spec = {.org = org,
                      .cn = cn,
                      .not_before = now - 3600,
                      .not_after = now + CA_VALIDITY_S,
                      .profile = PROFILE_CA};
    EVP_PKEY *key = new_key();
    X509 *cert = NULL;
    if (key == NULL || random_serial(&spec.serial) != 0 ||
        (cert = make_cert(&spec, key, issuer, issuer_key)) == NULL) {
        EVP_PKEY_free(key);
        return NULL;
    }
    *key_out = key;
    return cert;
}

/* Appends cert's PEM to the bundle clients must trust; tracks the earliest CA expiry. */
static int add_to_bundle(emu_server_id *id, X509 *cert)
{
    char *pem = cert_pem_dup(cert);
    size_t old = id->ca_pem ? strlen(id->ca_pem) : 0, add = pem ? strlen(pem) : 0;
    char *n = pem ? realloc(id->ca_pem, old + add + 1) : NULL;
    if (n == NULL) {
        free(pem);
        return -1;
    }
    memcpy(n + old, pem, add + 1);
    id->ca_pem = n;
    free(pem);
    time_t exp = cert_not_after(cert);
    if (id->ca_expiry == 0 || exp < id->ca_expiry) {
        id->ca_expiry = exp;
    }
    return 0;
}

/* Appends cert (a new reference) to the chain the server sends after its leaf. */
static int add_to_chain(emu_server_id *id, X509 *cert)
{
    if (X509_up_ref(cert) != 1) {
        return -1;
    }
    if (sk_X509_push(id->chain, cert) <= 0) {
        X509_free(cert);
        return -1;
    }
    return 0;
}

/* The server leaf and its key, signed by issuer. */
static int sign_leaf(emu_server_id *id, cert_spec *leaf, X509 *issuer, EVP_PKEY *issuer_key)
{
    if ((id->leaf_key = new_key()) == NULL || random_serial(&leaf->serial) != 0) {
        return -1;
    }
    id->leaf = make_cert(leaf, id->leaf_key, issuer, issuer_key);
    return id->leaf != NULL ? 0 : -1;
}

/* Self-signed per-instance CA; leaf CN "project:instance", no SAN. */
static int build_legacy(emu_server_id *id, const char *cn, time_t now)
{
    EVP_PKEY *ca_key = NULL;
    X509 *ca = build_ca("Google, Inc", "Google Cloud SQL Server CA", NULL, NULL, &ca_key, now);
    cert_spec leaf = {.org = "Google, Inc",
                      .cn = cn,
                      .not_before = now - 3600,
                      .not_after = now + LEAF_VALIDITY_S,
                      .profile = PROFILE_SERVER};
    int rc = ca != NULL && add_to_bundle(id, ca) == 0 && add_to_chain(id, ca) == 0
                 ? sign_leaf(id, &leaf, ca, ca_key)
                 : -1;
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    return rc;
}

/*
 * Root -> intermediate -> leaf with SAN (and CN) = the DNS name. Bundle root
 * then intermediate; the chain sent after the leaf [intermediate, root], as
 * Cloud SQL sends it.
 */
static int build_cas(emu_server_id *id, time_t now)
{
    EVP_PKEY *root_key = NULL, *int_key = NULL;
    X509 *root = build_ca("Google LLC", "Google Cloud SQL Root CA", NULL, NULL, &root_key, now);
    X509 *inter = root ? build_ca("Google LLC", "Google Cloud SQL Intermediate CA", root,
                                  root_key, &int_key, now)
                       : NULL;
    cert_spec leaf = {.org = "Google LLC",
                      .cn = id->dns_name,
                      .dns_san = id->dns_name,
                      .not_before = now - 3600,
                      .not_after = now + LEAF_VALIDITY_S,
                      .profile = PROFILE_SERVER};
    int rc = inter != NULL && add_to_bundle(id, root) == 0 && add_to_bundle(id, inter) == 0 &&
                     add_to_chain(id, inter) == 0 && add_to_chain(id, root) == 0
                 ? sign_leaf(id, &leaf, inter, int_key)
                 : -1;
    X509_free(root);
    X509_free(inter);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(int_key);
    return rc;
}

/* The SAN for a CAS leaf: the given name without its trailing dot, or the default. */
static char *cas_dns_name(const char *dns_name, const char *project, const char *region,
                          const char *instance)
{
    if (dns_name == NULL || dns_name[0] == '\0') {
        return emu_ca_default_dns_name(project, region, instance);
    }
    char *s = strdup(dns_name);
    size_t n = s ? strlen(s) : 0;
    if (n > 0 && s[n - 1] == '.') {
        s[n - 1] = '\0'; /* a SAN has none; clients compare without it (REFERENCE §4) */
    }
    return s;
}

emu_server_id *emu_server_id_new(emu_ca_mode mode, const char *project, const char *region,
                                 const char *instance, const char *dns_name, char *err,
                                 size_t errlen)
{
    char cn[300];
    if ((size_t)snprintf(cn, sizeof(cn), "%s:%s", project, instance) >= sizeof(cn)) {
        snprintf(err, errlen, "server identity: project:instance too long");
        return NULL;
    }
    time_t now = time(NULL);
    emu_server_id *id = calloc(1, sizeof(*id));
    if (id == NULL || (id->chain = sk_X509_new_null()) == NULL) {
        goto fail;
    }
    id->mode = mode;
    if (mode == EMU_CA_LEGACY) {
        if (build_legacy(id, cn, now) != 0) {
            goto fail;
        }
    } else if ((id->dns_name = cas_dns_name(dns_name, project, region, instance)) == NULL ||
               build_cas(id, now) != 0) {
        goto fail;
    }
    return id;
fail:
    set_err(err, errlen, "server identity: cannot create certificates");
    emu_server_id_free(id);
    return NULL;
}

void emu_server_id_free(emu_server_id *id)
{
    if (id == NULL) {
        return;
    }
    X509_free(id->leaf);
    EVP_PKEY_free(id->leaf_key);
    sk_X509_pop_free(id->chain, X509_free);
    free(id->ca_pem);
    free(id->dns_name);
    free(id);
}

const char *emu_server_id_ca_pem(const emu_server_id *id)
{
    return id->ca_pem;
}

time_t emu_server_id_ca_expiry(const emu_server_id *id)
{
    return id->ca_expiry;
}

const char *emu_server_id_dns_name(const emu_server_id *id)
{
    return id->dns_name;
}

X509 *emu_server_id_leaf(const emu_server_id *id)
{
    return id->leaf;
}

EVP_PKEY *emu_server_id_leaf_key(const emu_server_id *id)
{
    return id->leaf_key;
}

STACK_OF(X509) *emu_server_id_chain(const emu_server_id *id)
{
    return id->chain;
}
