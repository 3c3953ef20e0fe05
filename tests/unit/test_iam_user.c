/* csql_iam_db_user: database user names for automatic IAM authn (REFERENCE §6). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "csql/dialer.h"
#include "csql/errors.h"

static void expect_user(const char *version, const char *principal, const char *want)
{
    char buf[128];
    assert_int_equal(csql_iam_db_user(version, principal, buf, sizeof(buf)), 0);
    assert_string_equal(buf, want);
}

static void test_postgres(void **state)
{
    (void)state;
    expect_user("POSTGRES_15", "sa@proj.iam.gserviceaccount.com", "sa@proj.iam");
    expect_user("POSTGRES_15", "alice@example.com", "alice@example.com");
    expect_user("POSTGRES_9_6", "SA@P.IAM.GSERVICEACCOUNT.COM", "SA@P.IAM");
    /* Only the suffix is removed, and never to nothing. */
    expect_user("POSTGRES_15", ".gserviceaccount.com", ".gserviceaccount.com");
}

static void test_mysql(void **state)
{
    (void)state;
    expect_user("MYSQL_8_0", "sa@proj.iam.gserviceaccount.com", "sa");
    expect_user("MYSQL_5_7", "alice@example.com", "alice");
    expect_user("MYSQL_8_0", "noat", "noat");
    char buf[16];
    assert_int_equal(csql_iam_db_user("MYSQL_8_0", "@example.com", buf, sizeof(buf)),
                     CSQL_ERR_INVALID_ARGUMENT);
}

static void test_sqlserver_unsupported(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(csql_iam_db_user("SQLSERVER_2019_STANDARD", "a@b.com", buf, sizeof(buf)),
                     CSQL_ERR_IAM_UNSUPPORTED);
    assert_non_null(strstr(csql_error_last()->message, "SQLSERVER_2019_STANDARD"));
}

static void test_unknown_engine(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(csql_iam_db_user("ORACLE_19", "a@b.com", buf, sizeof(buf)),
                     CSQL_ERR_UNSUPPORTED_INSTANCE);
    assert_non_null(strstr(csql_error_last()->message, "ORACLE_19"));
}

static void test_buffer_bounds(void **state)
{
    (void)state;
    char buf[12];
    /* "sa@proj.iam" is 11 bytes + NUL: fits exactly. */
    assert_int_equal(csql_iam_db_user("POSTGRES_15", "sa@proj.iam.gserviceaccount.com", buf, 12),
                     0);
    assert_string_equal(buf, "sa@proj.iam");
    assert_int_equal(csql_iam_db_user("POSTGRES_15", "sa@proj.iam.gserviceaccount.com", buf, 11),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_string_equal(buf, "");
}

static void test_null_and_empty(void **state)
{
    (void)state;
    char buf[16];
    assert_int_equal(csql_iam_db_user(NULL, "a@b", buf, sizeof(buf)), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_iam_db_user("POSTGRES_15", NULL, buf, sizeof(buf)),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_iam_db_user("POSTGRES_15", "a@b", NULL, 0), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_iam_db_user("POSTGRES_15", "a@b", buf, 0), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_iam_db_user("POSTGRES_15", "", buf, sizeof(buf)),
                     CSQL_ERR_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_postgres),
        cmocka_unit_test(test_mysql),
        cmocka_unit_test(test_sqlserver_unsupported),
        cmocka_unit_test(test_unknown_engine),
        cmocka_unit_test(test_buffer_bounds),
        cmocka_unit_test(test_null_and_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
