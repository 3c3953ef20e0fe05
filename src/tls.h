/* Internal: OpenSSL contexts for dialling, and server identity checks (REFERENCE §4). */
#ifndef CSQL_SRC_TLS_H
#define CSQL_SRC_TLS_H

#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

/*
 * A client SSL_CTX: TLS 1.3 only; client certificate `cert_pem` with `key`
 * (from memory, never written to disk); trust anchors = every certificate in
 * `ca_pem` (and no system roots) with X509_V_FLAG_PARTIAL_CHAIN; peer
 * verification on, with the identity check below run by a verify callback
 * using the expectations set per SSL by csql__tls_expect(). *cert_not_after gets the
 * client certificate's notAfter (Unix seconds).
 * Errors: CSQL_ERR_API_RESPONSE (PEM does not parse / cert does not match the key), CSQL_ERR_NOMEM.
 */
int csql__tls_client_ctx_new(EVP_PKEY *key, const char *cert_pem, const char *ca_pem,
                             SSL_CTX **out, int64_t *cert_not_after);

/*
 * Set on a new SSL (from such a ctx) the identity the server must prove:
 * dns_name (may be NULL) for a SAN match (trailing dots ignored on both sides)
 * and expected_cn ("project:instance") as the fallback. Copies both.
 */
int csql__tls_expect(SSL *ssl, const char *dns_name, const char *expected_cn);

/*
 * The identity rule itself, pure: 1 if `leaf` has a SAN DNS entry equal to
 * dns_name (case-insensitive, trailing dots ignored), or, failing that, a
 * subject CN equal to expected_cn; else 0 with a reason in why.
 */
int csql__tls_identity_ok(X509 *leaf, const char *dns_name, const char *expected_cn, char *why,
                          size_t whylen);

/*
 * After a failed handshake or TLS I/O: raise a csql error with the OpenSSL
 * reason and the verify result (CSQL_ERR_TLS_VERIFY when verification failed,
 * else `code`), prefixed by `what`; clears the OpenSSL error queue.
 */
int csql__tls_raise(SSL *ssl, int code, const char *what);

#endif
