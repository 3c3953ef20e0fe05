/* csql-proxy log lines: the human format and JSON lines (severity, message, timestamp). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static void test_structured_is_one_json_object(void **state)
{
    (void)state;
    char buf[512];
    /* 2024-01-02T03:04:05.000006Z */
    long long when = 1704164645LL * 1000000 + 6;
    size_t n = plog_format(buf, sizeof(buf), true, CSQL_LOG_WARN, when,
                           "a \"quoted\" \\ line\nwith\tcontrol \x01 chars");
    assert_int_equal(strlen(buf), n);
    assert_int_equal(buf[n - 1], '\n');
    assert_null(memchr(buf, '\n', n - 1)); /* one line */
    json_error_t je;
    json_t *j = json_loads(buf, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "severity")), "WARNING");
    assert_string_equal(json_string_value(json_object_get(j, "timestamp")),
                        "2024-01-02T03:04:05.000006Z");
    assert_string_equal(json_string_value(json_object_get(j, "message")),
                        "a \"quoted\" \\ line\nwith\tcontrol \x01 chars");
    json_decref(j);

    plog_format(buf, sizeof(buf), true, CSQL_LOG_ERROR, when, "x");
    assert_non_null(strstr(buf, "\"severity\":\"ERROR\""));
    plog_format(buf, sizeof(buf), true, CSQL_LOG_INFO, when, "x");
    assert_non_null(strstr(buf, "\"severity\":\"INFO\""));
    plog_format(buf, sizeof(buf), true, CSQL_LOG_DEBUG, when, "x");
    assert_non_null(strstr(buf, "\"severity\":\"DEBUG\""));
}

static void test_structured_truncation_stays_valid(void **state)
{
    (void)state;
    char msg[300];
    memset(msg, '"', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    char buf[128];
    size_t n = plog_format(buf, sizeof(buf), true, CSQL_LOG_INFO, 0, msg);
    assert_true(n < sizeof(buf));
    json_t *j = json_loads(buf, 0, NULL);
    assert_non_null(j); /* a cut never splits an escape */
    json_decref(j);
}

static void test_human_line(void **state)
{
    (void)state;
    char buf[256];
    size_t n = plog_format(buf, sizeof(buf), false, CSQL_LOG_INFO, 0, "two\nlines");
    assert_int_equal(buf[n - 1], '\n');
    /* "YYYY/MM/DD hh:mm:ss message" */
    assert_int_equal(buf[4], '/');
    assert_int_equal(buf[7], '/');
    assert_int_equal(buf[13], ':');
    assert_string_equal(buf + 20, "two lines\n");
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structured_is_one_json_object),
        cmocka_unit_test(test_structured_truncation_stays_valid),
        cmocka_unit_test(test_human_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
