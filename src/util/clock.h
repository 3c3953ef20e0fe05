/* Internal: clocks. Monotonic for deadlines; wall clock (with a test offset) for expiry. */
#ifndef CSQL_SRC_UTIL_CLOCK_H
#define CSQL_SRC_UTIL_CLOCK_H

#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t csql__mono_ms(void);
/* Unix time in seconds (CLOCK_REALTIME plus the test offset). */
int64_t csql__wall_s(void);
/* Unix time in milliseconds (CLOCK_REALTIME plus the test offset). */
int64_t csql__wall_ms(void);
/* Tests only: shift the wall clock by `seconds` (a simulated sleep/clock jump). Thread-safe. */
void csql__clock_set_offset_s(int64_t seconds);

/* Milliseconds left until deadline_ms (monotonic), clamped at 0. */
int64_t csql__ms_left(int64_t deadline_ms);

#endif
