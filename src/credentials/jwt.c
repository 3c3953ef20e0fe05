/* RS256 JWTs for the OAuth JWT-bearer grant (RFC 7523), signed with a service account key. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "creds_internal.h"
#include "error.h"
#include "util/b64.h"

#define JWT_LIFETIME_S 3600

int csql__rsa_key_from_pem(const char *pem, size_t len, EVP_PKEY **out)
{
    *out = NULL;
    if (len > INT32_MAX) {
        return -1;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        return -1;
    }
    /* An empty password: an encrypted key fails instead of prompting on a terminal. */
    static char no_password[] = "";
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, no_password);
    BIO_free(bio);
    if (key == NULL || !EVP_PKEY_is_a(key, "RSA")) {
        EVP_PKEY_free(key);
        ERR_clear_error();
        return -1;
    }
    *out = key;
    return 0;
}

/* base64url of a compact JSON rendering of obj (malloc'd), or NULL. */
static char *b64_json(json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        return NULL;
    }
    char *enc = csql__b64_encode((const unsigned char *)text, strlen(text), 1);
    free(text);
    return enc;
}

static json_t *header_json(const char *kid)
{
    json_t *h = json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT");
    if (h != NULL && kid != NULL && json_object_set_new(h, "kid", json_string(kid)) != 0) {
        json_decref(h);
        return NULL;
    }
    return h;
}

/* Sign msg with RSASSA-PKCS1-v1_5 SHA-256; *sig malloc'd. */
static int rs256(EVP_PKEY *key, const char *msg, size_t len, unsigned char **sig, size_t *sig_len)
{
    int rc = CSQL_ERR_INTERNAL;
    unsigned char *buf = NULL;
    size_t n = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, NULL, &n, (const unsigned char *)msg, len) != 1) {
        goto done;
    }
    buf = malloc(n);
    if (buf == NULL) {
        rc = CSQL_ERR_NOMEM;
        goto done;
    }
    if (EVP_DigestSign(md, buf, &n, (const unsigned char *)msg, len) != 1) {
        goto done;
    }
    *sig = buf;
    *sig_len = n;
    buf = NULL;
    rc = CSQL_OK;
done:
    free(buf);
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return rc;
}

int csql__jwt_sign(EVP_PKEY *key, const csql__jwt_claims *c, char **out)
{
    *out = NULL;
    int rc = CSQL_ERR_NOMEM;
    char *h64 = NULL, *c64 = NULL, *s64 = NULL, *input = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    json_t *header = header_json(c->kid);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", c->iss, "scope", c->scope,
                               "aud", c->aud, "iat", (json_int_t)c->iat, "exp",
                               (json_int_t)(c->iat + JWT_LIFETIME_S));
    if (header == NULL || claims == NULL) {
        goto done;
    }
    h64 = b64_json(header);
    c64 = b64_json(claims);
    if (h64 == NULL || c64 == NULL) {
        goto done;
    }
    size_t in_len = strlen(h64) + 1 + strlen(c64);
    input = malloc(in_len + 1);
    if (input == NULL) {
        goto done;
    }
    snprintf(input, in_len + 1, "%s.%s", h64, c64);
    rc = rs256(key, input, in_len, &sig, &sig_len);
    if (rc != CSQL_OK) {
        goto done;
    }
    rc = CSQL_ERR_NOMEM;
    s64 = csql__b64_encode(sig, sig_len, 1);
    if (s64 == NULL) {
        goto done;
    }
    size_t total = in_len + 1 + strlen(s64);
    *out = malloc(total + 1);
    if (*out == NULL) {
        goto done;
    }
    snprintf(*out, total + 1, "%s.%s", input, s64);
    rc = CSQL_OK;
done:
    json_decref(header);
    json_decref(claims);
    free(h64);
    free(c64);
    free(input);
    free(sig);
    free(s64);
    if (rc == CSQL_ERR_NOMEM) {
        return csql__error(rc, "out of memory signing a JWT");
    }
    if (rc != CSQL_OK) {
        return csql__error(rc, "signing a JWT with the service account key failed");
    }
    return CSQL_OK;
}
