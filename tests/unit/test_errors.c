/* Error codes, categories, strerror and the thread-local last error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "csql/errors.h"
#include "error.h"

static void test_every_code_has_text_and_category(void **state)
{
    (void)state;
    for (int code = CSQL_ERR_INTERNAL; code >= CSQL_ERR_WOULD_BLOCK; code--) {
        assert_string_not_equal(csql_strerror(code), "unknown error");
        assert_int_not_equal(csql_err_category_of(code), CSQL_CAT_OK);
        assert_string_not_equal(csql_err_category_name(csql_err_category_of(code)), "UNKNOWN");
    }
    assert_string_equal(csql_strerror(-9999), "unknown error");
    assert_int_equal(csql_err_category_of(-9999), CSQL_CAT_INTERNAL);
    assert_int_equal(csql_err_category_of(CSQL_ERR_TLS_VERIFY), CSQL_CAT_TLS);
    assert_int_equal(csql_err_category_of(CSQL_ERR_BAD_INSTANCE_NAME), CSQL_CAT_CONFIG);
    assert_string_equal(csql_err_category_name(CSQL_CAT_TLS), "TLS");
    assert_string_equal(csql_err_category_name((csql_err_category)42), "UNKNOWN");
}

static void test_codes_never_renumbered(void **state)
{
    (void)state;
    /* Append-only ABI: these values are published and must never change. */
    assert_int_equal(CSQL_ERR_BAD_INSTANCE_NAME, -4);
    assert_int_equal(CSQL_ERR_TLS_VERIFY, -19);
    assert_int_equal(CSQL_ERR_CLOSED, -22);
    assert_int_equal(CSQL_ERR_WOULD_BLOCK, -26);
}

static void test_last_error_carries_message_and_http(void **state)
{
    (void)state;
    csql_error_clear();
    assert_int_equal(csql_error_last()->code, 0);
    assert_string_equal(csql_error_last()->message, "");

    int rc = csql__error_http(CSQL_ERR_PERMISSION_DENIED, 403, "PERMISSION_DENIED",
                              "instance %s: %s", "p:r:i", "denied");
    assert_int_equal(rc, CSQL_ERR_PERMISSION_DENIED);
    const csql_error *e = csql_error_last();
    assert_int_equal(e->code, CSQL_ERR_PERMISSION_DENIED);
    assert_int_equal(e->category, CSQL_CAT_AUTH);
    assert_int_equal(e->http_status, 403);
    assert_string_equal(e->api_reason, "PERMISSION_DENIED");
    assert_string_equal(e->message, "csql: instance p:r:i: denied");

    csql__error_prefix("dial %s", "p:r:i");
    assert_string_equal(csql_error_last()->message, "csql: dial p:r:i: instance p:r:i: denied");
    assert_int_equal(csql_error_last()->http_status, 403);

    csql_error_clear();
    assert_int_equal(csql_error_last()->code, 0);
    assert_int_equal(csql_error_last()->http_status, 0);
}

static void test_long_message_is_truncated_not_overflowed(void **state)
{
    (void)state;
    char big[4096];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    csql__error(CSQL_ERR_BAD_CONFIG, "%s", big);
    size_t n = strlen(csql_error_last()->message);
    assert_true(n > 100 && n < 1024);
}

static void *other_thread(void *arg)
{
    (void)arg;
    csql__error(CSQL_ERR_TIMEOUT, "other thread");
    return (void *)(intptr_t)csql_error_last()->code;
}

static void test_last_error_is_per_thread(void **state)
{
    (void)state;
    csql__error(CSQL_ERR_DNS, "this thread");
    pthread_t t;
    void *ret = NULL;
    assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
    pthread_join(t, &ret);
    assert_int_equal((intptr_t)ret, CSQL_ERR_TIMEOUT);
    assert_int_equal(csql_error_last()->code, CSQL_ERR_DNS);
    assert_string_equal(csql_error_last()->message, "csql: this thread");
}

static void test_saved_error_round_trip(void **state)
{
    (void)state;
    csql__saved_error saved = {0};
    csql__error_http(CSQL_ERR_API, 503, "UNAVAILABLE", "backend down");
    assert_int_equal(csql__error_save(&saved), 0);
    csql_error_clear();
    assert_int_equal(csql__error_restore(&saved), CSQL_ERR_API);
    assert_int_equal(csql_error_last()->http_status, 503);
    assert_string_equal(csql_error_last()->api_reason, "UNAVAILABLE");
    assert_string_equal(csql_error_last()->message, "csql: backend down");
    csql__saved_error_dispose(&saved);
    assert_null(saved.message);
}

/* A saved error whose message could not be copied (no memory) still reads as something. */
static void test_saved_error_without_message(void **state)
{
    (void)state;
    csql__saved_error saved = {0};
    saved.code = CSQL_ERR_NOMEM;
    csql_error_clear();
    assert_int_equal(csql__error_restore(&saved), CSQL_ERR_NOMEM);
    assert_non_null(strstr(csql_error_last()->message, csql_strerror(CSQL_ERR_NOMEM)));
    assert_string_equal(csql_error_last()->api_reason, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_text_and_category),
        cmocka_unit_test(test_codes_never_renumbered),
        cmocka_unit_test(test_last_error_carries_message_and_http),
        cmocka_unit_test(test_long_message_is_truncated_not_overflowed),
        cmocka_unit_test(test_last_error_is_per_thread),
        cmocka_unit_test(test_saved_error_round_trip),
        cmocka_unit_test(test_saved_error_without_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
