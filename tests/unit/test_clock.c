/* Clocks: monotonic deadlines, wall clock with a test offset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <time.h>
#include <unistd.h>

#include "util/clock.h"

static void test_monotonic_moves_forward(void **state)
{
    (void)state;
    int64_t a = csql__mono_ms();
    usleep(20000);
    int64_t b = csql__mono_ms();
    assert_true(b - a >= 19);
    assert_true(b - a < 2000);
}

static void test_wall_clock_and_offset(void **state)
{
    (void)state;
    int64_t now = (int64_t)time(NULL);
    assert_true(csql__wall_s() - now <= 1 && now - csql__wall_s() <= 1);
    assert_true(csql__wall_ms() / 1000 - csql__wall_s() <= 1);
    csql__clock_set_offset_s(3600);
    assert_true(csql__wall_s() - now >= 3599 && csql__wall_s() - now <= 3601);
    assert_true(csql__wall_ms() / 1000 - now >= 3599);
    csql__clock_set_offset_s(-86400);
    assert_true(now - csql__wall_s() >= 86399);
    csql__clock_set_offset_s(0);
    assert_true(csql__wall_s() - now <= 1);
    /* The monotonic clock ignores the offset. */
    int64_t m = csql__mono_ms();
    csql__clock_set_offset_s(1000000);
    assert_true(csql__mono_ms() - m < 1000);
    csql__clock_set_offset_s(0);
}

static void test_ms_left(void **state)
{
    (void)state;
    int64_t now = csql__mono_ms();
    assert_int_equal(csql__ms_left(now - 5), 0);
    assert_int_equal(csql__ms_left(INT64_MIN / 2), 0);
    int64_t left = csql__ms_left(now + 10000);
    assert_true(left > 9000 && left <= 10000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_monotonic_moves_forward),
        cmocka_unit_test(test_wall_clock_and_offset),
        cmocka_unit_test(test_ms_left),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
