/* Token bucket: burst 2, then one token per 30 s, driven by fake monotonic time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ratelimit.h"

#define S(x) ((int64_t)(x) * 1000)

static void test_burst_then_spacing(void **state)
{
    (void)state;
    csql__ratelimit rl;
    int64_t t = S(1000);
    csql__ratelimit_init(&rl, 2, S(30), t);

    assert_int_equal(csql__ratelimit_take(&rl, t), 0);
    assert_int_equal(csql__ratelimit_take(&rl, t), 0);
    /* Burst spent: the next token is a whole interval away. */
    assert_int_equal(csql__ratelimit_take(&rl, t), S(30));
    /* Asking again does not consume anything or move the goal. */
    assert_int_equal(csql__ratelimit_take(&rl, t), S(30));
    assert_int_equal(csql__ratelimit_take(&rl, t + S(10)), S(20));
    assert_int_equal(csql__ratelimit_take(&rl, t + S(30) - 1), 1);
    assert_int_equal(csql__ratelimit_take(&rl, t + S(30)), 0);
    assert_int_equal(csql__ratelimit_take(&rl, t + S(30)), S(30));
    assert_int_equal(csql__ratelimit_take(&rl, t + S(60)), 0);
}

static void test_steady_rate_is_one_per_interval(void **state)
{
    (void)state;
    csql__ratelimit rl;
    int64_t t = 0;
    csql__ratelimit_init(&rl, 2, S(30), t);
    /* Someone asking every second for 10 minutes gets 2 + 600/30 = 22 tokens. */
    int granted = 0;
    for (int i = 0; i <= 600; i++) {
        if (csql__ratelimit_take(&rl, t + S(i)) == 0) {
            granted++;
        }
    }
    assert_int_equal(granted, 22);
}

static void test_refills_up_to_burst_only(void **state)
{
    (void)state;
    csql__ratelimit rl;
    csql__ratelimit_init(&rl, 2, S(30), 0);
    assert_int_equal(csql__ratelimit_take(&rl, 0), 0);
    assert_int_equal(csql__ratelimit_take(&rl, 0), 0);
    /* An hour idle earns only `burst` tokens. */
    int64_t t = S(3600);
    assert_int_equal(csql__ratelimit_take(&rl, t), 0);
    assert_int_equal(csql__ratelimit_take(&rl, t), 0);
    assert_true(csql__ratelimit_take(&rl, t) > 0);
}

static void test_peek_does_not_consume(void **state)
{
    (void)state;
    csql__ratelimit rl;
    csql__ratelimit_init(&rl, 2, S(30), 0);
    assert_int_equal(csql__ratelimit_peek(&rl, 0), 0);
    assert_int_equal(csql__ratelimit_peek(&rl, 0), 0);
    assert_int_equal(csql__ratelimit_take(&rl, 0), 0);
    assert_int_equal(csql__ratelimit_take(&rl, 0), 0);
    assert_int_equal(csql__ratelimit_peek(&rl, S(15)), S(15));
    assert_int_equal(csql__ratelimit_peek(&rl, S(30)), 0);
    assert_int_equal(csql__ratelimit_take(&rl, S(30)), 0);
}

static void test_time_going_backwards_earns_nothing(void **state)
{
    (void)state;
    csql__ratelimit rl;
    csql__ratelimit_init(&rl, 2, S(30), S(100));
    assert_int_equal(csql__ratelimit_take(&rl, S(100)), 0);
    assert_int_equal(csql__ratelimit_take(&rl, S(100)), 0);
    assert_true(csql__ratelimit_take(&rl, S(50)) > 0);
    assert_int_equal(csql__ratelimit_take(&rl, S(130)), 0);
}

static void test_degenerate_parameters_are_clamped(void **state)
{
    (void)state;
    csql__ratelimit rl;
    csql__ratelimit_init(&rl, 0, 0, 0);
    assert_int_equal(csql__ratelimit_take(&rl, 0), 0);
    assert_int_equal(csql__ratelimit_take(&rl, 0), 1);
    assert_int_equal(csql__ratelimit_take(&rl, 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_spacing),
        cmocka_unit_test(test_steady_rate_is_one_per_interval),
        cmocka_unit_test(test_refills_up_to_burst_only),
        cmocka_unit_test(test_peek_does_not_consume),
        cmocka_unit_test(test_time_going_backwards_earns_nothing),
        cmocka_unit_test(test_degenerate_parameters_are_clamped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
