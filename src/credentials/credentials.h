/*
 * Internal: OAuth2 access tokens from the configured credentials (REFERENCE §3).
 * A csql__creds is thread-safe and caches one token per scope kind, refreshing
 * it when fewer than 4 minutes (or a quarter of its lifetime) remain.
 */
#ifndef CSQL_SRC_CREDENTIALS_H
#define CSQL_SRC_CREDENTIALS_H

#include <stdint.h>

#include "config_internal.h"
#include "log.h"

#define CSQL__SCOPE_ADMIN "https://www.googleapis.com/auth/sqlservice.admin"
#define CSQL__SCOPE_LOGIN "https://www.googleapis.com/auth/sqlservice.login"
#define CSQL__SCOPE_CLOUD_PLATFORM "https://www.googleapis.com/auth/cloud-platform"

typedef struct csql__creds csql__creds;

typedef struct csql__token {
    char *value;        /* secret: wipe with csql__token_dispose */
    int64_t expires_at; /* Unix seconds; 0 = unknown (never expires) */
} csql__token;

/*
 * Resolve the credentials of `cfg` (a resolved dialer copy; borrowed for the
 * life of the creds). Files are read and parsed here (ADC chain: env file,
 * gcloud file, else metadata server, which is only contacted on first use).
 * Errors: CSQL_ERR_CREDENTIALS naming the file and what is wrong with it.
 */
int csql__creds_new(const csql_config *cfg, const csql__logger *lg, csql__creds **out);
void csql__creds_free(csql__creds *c);

/*
 * A token of `kind` (CSQL_TOKEN_ADMIN: sqlservice.admin scope;
 * CSQL_TOKEN_LOGIN: sqlservice.login scope for IAM authn), from cache or
 * fetched before deadline_ms (monotonic). Errors: CSQL_ERR_TOKEN (with the
 * endpoint's error text, never the token), CSQL_ERR_TIMEOUT, CSQL_ERR_CREDENTIALS.
 */
int csql__creds_token(csql__creds *c, csql_token_kind kind, int64_t deadline_ms, csql__token *out);

/* A short description for logs: "service account x@y", "authorized user", "metadata server", ... */
const char *csql__creds_describe(const csql__creds *c);

void csql__token_dispose(csql__token *t);

#endif
