/*
 * Internal: one certificate refresh (REFERENCE §2, §5, §6): tokens, then
 * connectSettings and generateEphemeralCert concurrently (5xx and 429 retried
 * with jittered exponential backoff honouring Retry-After, within the
 * deadline), then a new certset. Stateless apart from what `ctx` points to.
 */
#ifndef CSQL_SRC_REFRESH_H
#define CSQL_SRC_REFRESH_H

#include <stdbool.h>
#include <stdint.h>

#include "certset.h"
#include "config_internal.h"
#include "credentials/credentials.h"
#include "instance_name.h"
#include "keys.h"
#include "log.h"

typedef struct csql__refresh_ctx {
    const csql_config *cfg;  /* resolved dialer copy */
    csql__creds *creds;
    csql__keypair *keys;
    const csql__logger *log;
    const char *user_agent;  /* full User-Agent header value */
} csql__refresh_ctx;

/*
 * Refresh `name` (with IAM authn when iam): on success *out holds a new
 * certset (refs = 1). Errors as raised by the steps, prefixed with the
 * instance name; CSQL_ERR_IAM_UNSUPPORTED for IAM on a SQLSERVER instance;
 * CSQL_ERR_TIMEOUT past deadline_ms (monotonic).
 */
int csql__refresh_once(const csql__refresh_ctx *ctx, const csql__instance_name *name, bool iam,
                       int64_t deadline_ms, csql__certset **out);

/*
 * As csql__refresh_once, but gives up with CSQL_ERR_CLOSED once *cancel (may
 * be NULL) is true: checked before each round of Admin API calls and every
 * 20 ms of a retry wait (a call already in flight runs to its answer or the
 * deadline).
 */
int csql__refresh_once_cancellable(const csql__refresh_ctx *ctx, const csql__instance_name *name,
                                   bool iam, int64_t deadline_ms, const atomic_bool *cancel,
                                   csql__certset **out);

/* Backoff before retry `attempt` (0-based): 200ms * 1.618^(attempt+1+rand[0,1)), in ms. */
int64_t csql__backoff_ms(int attempt, double rand01);

/* The refresh delay rule of REFERENCE §5: seconds from now until the next refresh. */
int64_t csql__refresh_delay_s(int64_t expires_at, int64_t now);

#endif
