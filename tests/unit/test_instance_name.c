/* Instance connection names (REFERENCE §1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csql/errors.h"
#include "instance_name.h"

static void test_plain_name(void **state)
{
    (void)state;
    csql__instance_name n;
    assert_int_equal(csql__instance_name_parse("my-proj:us-central1:my-db", &n), 0);
    assert_string_equal(n.full, "my-proj:us-central1:my-db");
    assert_string_equal(n.project, "my-proj");
    assert_string_equal(n.region, "us-central1");
    assert_string_equal(n.instance, "my-db");
    char cn[64];
    assert_int_equal(csql__instance_name_cn(&n, cn, sizeof(cn)), 0);
    assert_string_equal(cn, "my-proj:my-db");
}

static void test_domain_scoped_name(void **state)
{
    (void)state;
    csql__instance_name n;
    assert_int_equal(csql__instance_name_parse("google.com:proj:us-central1:db", &n), 0);
    assert_string_equal(n.project, "google.com:proj");
    assert_string_equal(n.region, "us-central1");
    assert_string_equal(n.instance, "db");
    char cn[64];
    assert_int_equal(csql__instance_name_cn(&n, cn, sizeof(cn)), 0);
    assert_string_equal(cn, "google.com:proj:db");
}

static void test_cn_buffer_too_small(void **state)
{
    (void)state;
    csql__instance_name n;
    assert_int_equal(csql__instance_name_parse("p:r:instance", &n), 0);
    char cn[5];
    assert_int_equal(csql__instance_name_cn(&n, cn, sizeof(cn)), CSQL_ERR_INVALID_ARGUMENT);
    assert_string_equal(cn, "");
}

static void expect_bad(const char *s)
{
    csql__instance_name n;
    csql_error_clear();
    assert_int_equal(csql__instance_name_parse(s, &n), CSQL_ERR_BAD_INSTANCE_NAME);
    const csql_error *e = csql_error_last();
    assert_int_equal(e->code, CSQL_ERR_BAD_INSTANCE_NAME);
    assert_int_equal(e->category, CSQL_CAT_CONFIG);
    /* Control characters are shown as '?'. */
    char shown[64];
    size_t i = 0;
    for (; s[i] != '\0'; i++) {
        shown[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    }
    shown[i] = '\0';
    char want[256];
    snprintf(want, sizeof(want),
             "csql: instance connection name \"%s\" is not of the form project:region:instance",
             shown);
    assert_string_equal(e->message, want);
}

static void test_invalid_names(void **state)
{
    (void)state;
    expect_bad("");
    expect_bad("foo");
    expect_bad("a:b");
    expect_bad("a::c");
    expect_bad(":b:c");
    expect_bad("a:b:");
    expect_bad("a:b:c:d:e");
    expect_bad(":a:b:c");
    expect_bad("a::b:c");
    expect_bad("a:b:c:");
    expect_bad(" a:b:c");
    expect_bad("a:b:c ");
    expect_bad("a: b:c");
    expect_bad("a:b:c\n");
    expect_bad("a\t:b:c");
}

static void test_null_name(void **state)
{
    (void)state;
    csql__instance_name n;
    assert_int_equal(csql__instance_name_parse(NULL, &n), CSQL_ERR_BAD_INSTANCE_NAME);
    assert_non_null(
        strstr(csql_error_last()->message, "is not of the form project:region:instance"));
}

static void test_control_bytes_not_echoed_raw(void **state)
{
    (void)state;
    csql__instance_name n;
    assert_int_equal(csql__instance_name_parse("a:b\x01:c", &n), CSQL_ERR_BAD_INSTANCE_NAME);
    assert_non_null(strstr(csql_error_last()->message, "\"a:b?:c\""));
}

static void test_huge_input(void **state)
{
    (void)state;
    size_t len = 10 * 1024;
    char *s = malloc(len + 1);
    assert_non_null(s);
    memset(s, 'a', len);
    s[3] = ':';
    s[6] = ':';
    s[len] = '\0';
    csql__instance_name n;
    assert_int_equal(csql__instance_name_parse(s, &n), CSQL_ERR_BAD_INSTANCE_NAME);
    const char *msg = csql_error_last()->message;
    assert_true(strlen(msg) < 400);
    assert_non_null(strstr(msg, "...\" is not of the form project:region:instance"));
    free(s);
}

static void test_longest_accepted(void **state)
{
    (void)state;
    char s[CSQL__INSTANCE_NAME_MAX];
    memset(s, 'x', sizeof(s) - 1);
    s[sizeof(s) - 1] = '\0';
    s[1] = ':';
    s[3] = ':';
    csql__instance_name n;
    assert_int_equal(csql__instance_name_parse(s, &n), 0);
    assert_string_equal(n.project, "x");
    assert_string_equal(n.region, "x");
    assert_int_equal(strlen(n.instance), CSQL__INSTANCE_NAME_MAX - 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_name),
        cmocka_unit_test(test_domain_scoped_name),
        cmocka_unit_test(test_cn_buffer_too_small),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_null_name),
        cmocka_unit_test(test_control_bytes_not_echoed_raw),
        cmocka_unit_test(test_huge_input),
        cmocka_unit_test(test_longest_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
