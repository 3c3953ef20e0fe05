/* Retry backoff and refresh delay (REFERENCE §2, §5). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "refresh.h"

static void test_backoff_ranges(void **state)
{
    (void)state;
    /* 200ms * 1.618^(attempt+1+rand[0,1)), rounded: the table of go-and-proxy.md §1.7. */
    static const int64_t low[] = {324, 524, 847, 1371, 2218};
    static const int64_t high[] = {524, 847, 1371, 2218, 3588};
    for (int a = 0; a < 5; a++) {
        assert_int_equal(csql__backoff_ms(a, 0.0), low[a]);
        assert_int_equal(csql__backoff_ms(a, 0.9999999), high[a]);
        int64_t prev = 0;
        for (int k = 0; k < 100; k++) {
            int64_t v = csql__backoff_ms(a, k / 100.0);
            assert_true(v >= low[a] && v <= high[a]);
            assert_true(v >= prev); /* monotonic in the random part */
            prev = v;
        }
    }
    /* Halfway: 200 * 1.618^1.5 = 411.6. */
    assert_int_equal(csql__backoff_ms(0, 0.5), 412);
}

static void test_backoff_clamps(void **state)
{
    (void)state;
    assert_int_equal(csql__backoff_ms(-3, 0.0), 324);
    assert_int_equal(csql__backoff_ms(0, -1.0), 324);
    assert_int_equal(csql__backoff_ms(0, 5.0), 524);
    assert_int_equal(csql__backoff_ms(0, (double)NAN), 324);
    int64_t big = csql__backoff_ms(1000, 0.5);
    assert_true(big > 0);
    assert_int_equal(big, csql__backoff_ms(30, 0.5));
}

static void test_refresh_delay(void **state)
{
    (void)state;
    const int64_t now = 1700000000;
    /* d >= 1h: half of it. */
    assert_int_equal(csql__refresh_delay_s(now + 7200, now), 3600);
    assert_int_equal(csql__refresh_delay_s(now + 3600, now), 1800);
    assert_int_equal(csql__refresh_delay_s(now + 3601, now), 1800);
    /* 4 min <= d < 1h: 4 min before expiry. */
    assert_int_equal(csql__refresh_delay_s(now + 3599, now), 3359);
    assert_int_equal(csql__refresh_delay_s(now + 300, now), 60);
    assert_int_equal(csql__refresh_delay_s(now + 241, now), 1);
    assert_int_equal(csql__refresh_delay_s(now + 240, now), 0);
    /* d < 4 min, or already expired: now. */
    assert_int_equal(csql__refresh_delay_s(now + 239, now), 0);
    assert_int_equal(csql__refresh_delay_s(now + 1, now), 0);
    assert_int_equal(csql__refresh_delay_s(now, now), 0);
    assert_int_equal(csql__refresh_delay_s(now - 100, now), 0);
    assert_int_equal(csql__refresh_delay_s(0, now), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_ranges),
        cmocka_unit_test(test_backoff_clamps),
        cmocka_unit_test(test_refresh_delay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
