/* Internal: token bucket per instance (burst 2, one token per 30 s; REFERENCE §5). Not locked: callers hold the cache lock. */
#ifndef CSQL_SRC_RATELIMIT_H
#define CSQL_SRC_RATELIMIT_H

#include <stdint.h>

/*
 * Exact integer bookkeeping: the bucket holds `credit_ms` of earned time,
 * capped at burst * interval_ms; a token costs interval_ms.
 */
typedef struct csql__ratelimit {
    int64_t credit_ms;
    int64_t max_credit_ms; /* burst * interval_ms */
    int64_t interval_ms;   /* one token per interval */
    int64_t last_ms;       /* monotonic time of the last update */
} csql__ratelimit;

/* A full bucket (burst tokens available now). burst < 1 and interval_ms < 1 are taken as 1. */
void csql__ratelimit_init(csql__ratelimit *rl, int burst, int64_t interval_ms, int64_t now_ms);
/* Take a token now if one is available (returns 0), else return the ms to wait until one is (> 0). */
int64_t csql__ratelimit_take(csql__ratelimit *rl, int64_t now_ms);
/* As take, without taking: 0 if a token is available now, else the ms until one is. */
int64_t csql__ratelimit_peek(csql__ratelimit *rl, int64_t now_ms);

#endif
