/* csql__log: level filtering, one line per call, bounded lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "log.h"

typedef struct captured {
    int calls;
    csql_log_level level;
    char line[2048];
    size_t len;
} captured;

static void capture(csql_log_level level, const char *line, void *userdata)
{
    captured *c = userdata;
    c->calls++;
    c->level = level;
    c->len = strlen(line);
    memcpy(c->line, line, c->len < sizeof(c->line) ? c->len + 1 : sizeof(c->line));
}

static void test_levels(void **state)
{
    (void)state;
    captured c = {0};
    csql__logger lg = {capture, &c, CSQL_LOG_INFO};
    csql__log(&lg, CSQL_LOG_DEBUG, "debug %d", 1);
    assert_int_equal(c.calls, 0);
    csql__log(&lg, CSQL_LOG_INFO, "refresh of %s done in %d ms", "p:r:i", 42);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.level, CSQL_LOG_INFO);
    assert_string_equal(c.line, "refresh of p:r:i done in 42 ms");
    csql__log(&lg, CSQL_LOG_ERROR, "boom");
    assert_int_equal(c.calls, 2);
    assert_int_equal(c.level, CSQL_LOG_ERROR);
    lg.max_level = CSQL_LOG_ERROR;
    csql__log(&lg, CSQL_LOG_WARN, "quiet");
    assert_int_equal(c.calls, 2);
}

static void test_no_logger(void **state)
{
    (void)state;
    csql__log(NULL, CSQL_LOG_ERROR, "nobody listens");
    csql__logger lg = {NULL, NULL, CSQL_LOG_DEBUG};
    csql__log(&lg, CSQL_LOG_ERROR, "nobody listens");
}

static void test_one_line_and_bounded(void **state)
{
    (void)state;
    captured c = {0};
    csql__logger lg = {capture, &c, CSQL_LOG_DEBUG};
    csql__log(&lg, CSQL_LOG_WARN, "first\nsecond");
    assert_string_equal(c.line, "first");
    csql__log(&lg, CSQL_LOG_WARN, "a\rb");
    assert_string_equal(c.line, "a");
    char big[5000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    csql__log(&lg, CSQL_LOG_WARN, "%s", big);
    assert_true(c.len > 500 && c.len < 1024);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_no_logger),
        cmocka_unit_test(test_one_line_and_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
