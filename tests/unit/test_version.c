/* The run-time version matches the header the caller compiled against. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "csql/version.h"

static void test_runtime_matches_header(void **state)
{
    (void)state;
    char expect[32];
    snprintf(expect, sizeof(expect), "%d.%d.%d", CSQL_VERSION_MAJOR, CSQL_VERSION_MINOR,
             CSQL_VERSION_PATCH);
    assert_string_equal(csql_version(), expect);
    assert_string_equal(csql_version(), CSQL_VERSION_STRING);
    assert_int_equal(csql_version_number(), CSQL_VERSION_NUMBER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_runtime_matches_header)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
