/* Internal: token bucket per instance (burst 2, one token per 30 s; REFERENCE §5). Not locked: callers hold the cache lock. */
#ifndef CSQL_SRC_RATELIMIT_H
#define CSQL_SRC_RATELIMIT_H

#include <stdint.h>

typedef struct csql__ratelimit {
    double tokens;
    double burst;
    int64_t interval_ms;  /* one token per interval */
    int64_t last_ms;      /* monotonic time of the last update */
} csql__ratelimit;

void csql__ratelimit_init(csql__ratelimit *rl, int burst, int64_t interval_ms, int64_t now_ms);
/* Take a token now if one is available (returns 0), else return the ms to wait until one is (> 0). */
int64_t csql__ratelimit_take(csql__ratelimit *rl, int64_t now_ms);

#endif
