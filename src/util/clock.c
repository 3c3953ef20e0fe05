/* Clocks: monotonic for deadlines, wall clock (shiftable by tests) for expiry. */
#include "util/clock.h"

#include <stdatomic.h>
#include <time.h>

static atomic_llong wall_offset_s;

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0) {
        return 0;
    }
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t csql__mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

int64_t csql__wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME) + (int64_t)atomic_load(&wall_offset_s) * 1000;
}

int64_t csql__wall_s(void)
{
    return csql__wall_ms() / 1000;
}

void csql__clock_set_offset_s(int64_t seconds)
{
    atomic_store(&wall_offset_s, (long long)seconds);
}

int64_t csql__ms_left(int64_t deadline_ms)
{
    int64_t left = deadline_ms - csql__mono_ms();
    return left > 0 ? left : 0;
}
