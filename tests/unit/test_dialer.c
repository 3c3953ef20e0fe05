/*
 * csql_dialer's argument checking, options versioning, closing and instance
 * info, offline (no dial reaches the network: a closed dialer, bad names and
 * bad options fail before any refresh).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "csql/csql.h"

static csql_dialer *mkdialer(csql_refresh_strategy s)
{
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    assert_int_equal(csql_config_set_token(cfg, "not-a-real-token"), 0);
    /* Nothing listens here: a refresh that ran anyway would fail fast. */
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, "http://127.0.0.1:9"), 0);
    assert_int_equal(csql_config_set_refresh_strategy(cfg, s), 0);
    csql_dialer *d = NULL;
    assert_int_equal(csql_dialer_new(&d, cfg), 0);
    csql_config_free(cfg); /* the dialer keeps its own copy */
    return d;
}

static void test_new_rejects_null(void **state)
{
    (void)state;
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    csql_dialer *d = (csql_dialer *)1;
    assert_int_equal(csql_dialer_new(&d, NULL), CSQL_ERR_INVALID_ARGUMENT);
    assert_null(d);
    assert_non_null(strstr(csql_error_last()->message, "cfg"));
    assert_int_equal(csql_dialer_new(NULL, cfg), CSQL_ERR_INVALID_ARGUMENT);
    csql_config_free(cfg);
    csql_dialer_free(NULL);
    assert_int_equal(csql_dialer_close(NULL), CSQL_ERR_INVALID_ARGUMENT);
}

static void test_new_reports_bad_credentials_file(void **state)
{
    (void)state;
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    int rc = csql_config_set_credentials_file(cfg, "/nonexistent/creds.json");
    if (rc == 0) {
        csql_dialer *d = NULL;
        rc = csql_dialer_new(&d, cfg);
        assert_null(d);
    }
    assert_int_equal(rc, CSQL_ERR_CREDENTIALS);
    assert_non_null(strstr(csql_error_last()->message, "/nonexistent/creds.json"));
    csql_config_free(cfg);
}

static void test_dial_argument_checks(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND);
    csql_conn *c = (csql_conn *)1;
    assert_int_equal(csql_dial(NULL, "p:r:i", NULL, &c), CSQL_ERR_INVALID_ARGUMENT);
    assert_null(c);
    assert_int_equal(csql_dial(d, NULL, NULL, &c), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_dial(d, "p:r:i", NULL, NULL), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_dial(d, "not an instance", NULL, &c), CSQL_ERR_BAD_INSTANCE_NAME);
    assert_non_null(strstr(csql_error_last()->message, "not an instance"));
    assert_int_equal(csql_dial(d, "p:i", NULL, &c), CSQL_ERR_BAD_INSTANCE_NAME);
    csql_dialer_free(d);
}

static void test_dial_options_are_versioned_and_checked(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND);
    csql_conn *c = NULL;
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    assert_int_equal(o.version, 1);
    assert_int_equal(o.ip_type, CSQL_IP_DEFAULT);
    assert_int_equal(o.iam_authn, -1);

    o.version = 0; /* a struct zeroed instead of initialised */
    assert_int_equal(csql_dial(d, "p:r:i", &o, &c), CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "version 0"));
    o.version = 2; /* from a newer header */
    assert_int_equal(csql_dial(d, "p:r:i", &o, &c), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_dialer_warmup(d, "p:r:i", &o, 0), CSQL_ERR_INVALID_ARGUMENT);
    csql_instance_info *info = NULL;
    assert_int_equal(csql_dialer_instance_info(d, "p:r:i", &o, &info), CSQL_ERR_INVALID_ARGUMENT);
    assert_null(info);

    o = (csql_dial_options)CSQL_DIAL_OPTIONS_INIT;
    o.ip_type = (csql_ip_type)9;
    assert_int_equal(csql_dial(d, "p:r:i", &o, &c), CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "ip_type 9"));
    o = (csql_dial_options)CSQL_DIAL_OPTIONS_INIT;
    o.iam_authn = 2;
    assert_int_equal(csql_dial(d, "p:r:i", &o, &c), CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "iam_authn 2"));
    o = (csql_dial_options)CSQL_DIAL_OPTIONS_INIT;
    o.timeout_ms = 3600001;
    assert_int_equal(csql_dial(d, "p:r:i", &o, &c), CSQL_ERR_INVALID_ARGUMENT);
    csql_dialer_free(d);
}

static void test_closed_dialer_refuses_work(void **state)
{
    (void)state;
    for (int s = CSQL_REFRESH_BACKGROUND; s <= CSQL_REFRESH_LAZY; s++) {
        csql_dialer *d = mkdialer((csql_refresh_strategy)s);
        assert_int_equal(csql_dialer_close(d), 0);
        assert_int_equal(csql_dialer_close(d), 0); /* idempotent */
        csql_conn *c = NULL;
        assert_int_equal(csql_dial(d, "p:r:i", NULL, &c), CSQL_ERR_CLOSED);
        assert_int_equal(csql_error_last()->category, CSQL_CAT_CLOSED);
        assert_non_null(strstr(csql_error_last()->message, "p:r:i"));
        assert_null(c);
        assert_int_equal(csql_dialer_warmup(d, "p:r:i", NULL, 1), CSQL_ERR_CLOSED);
        csql_instance_info *info = NULL;
        assert_int_equal(csql_dialer_instance_info(d, "p:r:i", NULL, &info), CSQL_ERR_CLOSED);
        csql_dialer_free(d);
    }
}

static void test_unreachable_api_fails_dial_with_a_reason(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_LAZY);
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.timeout_ms = 3000;
    csql_conn *c = NULL;
    int rc = csql_dial(d, "proj:reg:inst", &o, &c);
    assert_true(rc < 0);
    assert_null(c);
    /* Whatever the transport said, the message names the instance. */
    assert_non_null(strstr(csql_error_last()->message, "proj:reg:inst"));
    csql_dialer_free(d);
}

static void test_instance_info_accessors_tolerate_null(void **state)
{
    (void)state;
    assert_null(csql_instance_info_database_version(NULL));
    assert_null(csql_instance_info_region(NULL));
    assert_null(csql_instance_info_address(NULL, CSQL_IP_PUBLIC));
    assert_int_equal(csql_instance_info_cert_expiry(NULL), 0);
    csql_instance_info_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_null),
        cmocka_unit_test(test_new_reports_bad_credentials_file),
        cmocka_unit_test(test_dial_argument_checks),
        cmocka_unit_test(test_dial_options_are_versioned_and_checked),
        cmocka_unit_test(test_closed_dialer_refuses_work),
        cmocka_unit_test(test_unreachable_api_fails_dial_with_a_reason),
        cmocka_unit_test(test_instance_info_accessors_tolerate_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
