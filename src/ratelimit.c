/*
 * Token bucket (REFERENCE §5): `burst` tokens at most, one more every
 * `interval_ms`. Pure integer arithmetic on caller-supplied monotonic times,
 * so tests drive it with fake time; callers serialise access (the cache lock).
 */
#include "ratelimit.h"

void csql__ratelimit_init(csql__ratelimit *rl, int burst, int64_t interval_ms, int64_t now_ms)
{
    rl->interval_ms = interval_ms > 0 ? interval_ms : 1;
    rl->max_credit_ms = (int64_t)(burst > 0 ? burst : 1) * rl->interval_ms;
    rl->credit_ms = rl->max_credit_ms;
    rl->last_ms = now_ms;
}

/* Credit the time elapsed since the last update; time going backwards earns nothing. */
static void refill(csql__ratelimit *rl, int64_t now_ms)
{
    if (now_ms <= rl->last_ms) {
        return;
    }
    int64_t elapsed = now_ms - rl->last_ms;
    int64_t room = rl->max_credit_ms - rl->credit_ms;
    rl->credit_ms += elapsed < room ? elapsed : room;
    rl->last_ms = now_ms;
}

int64_t csql__ratelimit_peek(csql__ratelimit *rl, int64_t now_ms)
{
    refill(rl, now_ms);
    return rl->credit_ms >= rl->interval_ms ? 0 : rl->interval_ms - rl->credit_ms;
}

int64_t csql__ratelimit_take(csql__ratelimit *rl, int64_t now_ms)
{
    int64_t wait = csql__ratelimit_peek(rl, now_ms);
    if (wait == 0) {
        rl->credit_ms -= rl->interval_ms;
    }
    return wait;
}
