/*
 * Internal: the result of one certificate refresh for one (instance, IAM flag):
 * immutable once built, shared by reference between the cache and dials in
 * flight. Refresh builds a new one and swaps it in; it never mutates one.
 */
#ifndef CSQL_SRC_CERTSET_H
#define CSQL_SRC_CERTSET_H

#include <stdatomic.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "connect_info.h"

typedef struct csql__certset {
    atomic_int refs;
    csql__connect_info info;
    SSL_CTX *ctx;        /* client context (tls.h) */
    int64_t expires_at;  /* Unix s: min(client cert notAfter, login token expiry if IAM) */
} csql__certset;

csql__certset *csql__certset_ref(csql__certset *cs);
void csql__certset_unref(csql__certset *cs);

#endif
