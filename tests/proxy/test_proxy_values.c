/* csql-proxy value parsers: booleans, ports, integers, Go durations, IPs, query escapes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "values.h"

static void test_bool_go_spellings(void **state)
{
    (void)state;
    const char *yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    const char *no[] = {"0", "f", "F", "FALSE", "false", "False"};
    const char *bad[] = {"", "yes", "no", "tRUE", "2", " true", "true ", "on"};
    bool b;
    for (size_t i = 0; i < 6; i++) {
        b = false;
        assert_int_equal(pv_bool(yes[i], &b), 0);
        assert_true(b);
        b = true;
        assert_int_equal(pv_bool(no[i], &b), 0);
        assert_false(b);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b = true;
        assert_int_equal(pv_bool(bad[i], &b), -1);
        assert_true(b); /* untouched on failure */
    }
}

static void test_query_bool(void **state)
{
    (void)state;
    bool b = false;
    assert_int_equal(pv_query_bool("", &b), 0);
    assert_true(b);
    assert_int_equal(pv_query_bool("TrUe", &b), 0);
    assert_true(b);
    assert_int_equal(pv_query_bool("T", &b), 0);
    assert_true(b);
    assert_int_equal(pv_query_bool("FALSE", &b), 0);
    assert_false(b);
    assert_int_equal(pv_query_bool("f", &b), 0);
    assert_false(b);
    assert_int_equal(pv_query_bool("1", &b), -1);
    assert_int_equal(pv_query_bool("yes", &b), -1);
}

static void test_port(void **state)
{
    (void)state;
    int p = -1;
    assert_int_equal(pv_port("0", &p), 0);
    assert_int_equal(p, 0);
    assert_int_equal(pv_port("65535", &p), 0);
    assert_int_equal(p, 65535);
    assert_int_equal(pv_port("05432", &p), 0);
    assert_int_equal(p, 5432);
    const char *bad[] = {"", "65536", "-1", "+1", "1.0", "0x10", "123456", " 1", "abc", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = 7;
        assert_int_equal(pv_port(bad[i], &p), -1);
        assert_int_equal(p, 7);
    }
}

static void test_uint64(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(pv_uint64("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(pv_uint64("18446744073709551616", &v), -1);
    assert_int_equal(pv_uint64("", &v), -1);
    assert_int_equal(pv_uint64("-5", &v), -1);
    assert_int_equal(pv_uint64("12", &v), 0);
    assert_int_equal(v, 12);
}

static void test_duration_go_syntax(void **state)
{
    (void)state;
    struct {
        const char *s;
        uint64_t ms;
    } ok[] = {
        {"0", 0},          {"0s", 0},           {"1s", 1000},       {"30s", 30000},
        {"1m30s", 90000},  {"1.5h", 5400000},   {"500ms", 500},     {"1ms", 1},
        {"1us", 1},        {"1ns", 1},          {"1500us", 2},      {"2h45m", 9900000},
        {".5s", 500},      {"1.s", 1000},       {"10\xc2\xb5s", 1}, {"168h", 604800000},
        {"1h0m0s", 3600000},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t v = 12345;
        assert_int_equal(pv_duration_ms(ok[i].s, &v), 0);
        assert_true(v == ok[i].ms);
    }
    const char *bad[] = {"", "30", "s", "1x", "-1s", "+1s", "1 s", "1s ", "169h", "1.5.5s",
                         "99999999999999999999h", ".s", "1m-5s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 7;
        assert_int_equal(pv_duration_ms(bad[i], &v), -1);
        assert_true(v == 7);
    }
}

static void test_ip(void **state)
{
    (void)state;
    assert_true(pv_is_ip("127.0.0.1"));
    assert_true(pv_is_ip("0.0.0.0"));
    assert_true(pv_is_ip("::1"));
    assert_true(pv_is_ip("::"));
    assert_true(pv_is_ip("fe80::1"));
    assert_false(pv_is_ip("localhost"));
    assert_false(pv_is_ip("127.0.0.256"));
    assert_false(pv_is_ip("[::1]"));
    assert_false(pv_is_ip(""));
}

static void test_query_unescape(void **state)
{
    (void)state;
    char *s = pv_query_unescape("a%2Fb+c%3a", 10);
    assert_non_null(s);
    assert_string_equal(s, "a/b c:");
    free(s);
    s = pv_query_unescape("abc", 2);
    assert_string_equal(s, "ab");
    free(s);
    assert_null(pv_query_unescape("%2", 2));
    assert_null(pv_query_unescape("%zz", 3));
    assert_null(pv_query_unescape("a%00b", 5)); /* no embedded NUL */
    assert_null(pv_query_unescape("%4", 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bool_go_spellings), cmocka_unit_test(test_query_bool),
        cmocka_unit_test(test_port),              cmocka_unit_test(test_uint64),
        cmocka_unit_test(test_duration_go_syntax), cmocka_unit_test(test_ip),
        cmocka_unit_test(test_query_unescape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
