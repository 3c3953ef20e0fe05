/* Non-2xx SQL Admin API answers turned into csql errors (REFERENCE §2, "Errors"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connect_info.h"
#include "csql/errors.h"

#define WHAT "connectSettings for p:r:i"

static int raise_str(long status, const char *body)
{
    return csql__google_error_raise(status, body, body ? strlen(body) : 0, WHAT);
}

static void assert_msg_contains(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", m, needle);
    }
}

static void test_403_has_hint(void **state)
{
    (void)state;
    const char *body = "{\"error\":{\"code\":403,\"message\":\"The client is not authorized to "
                       "make this request.\",\"errors\":[{\"reason\":\"notAuthorized\"}],"
                       "\"status\":\"PERMISSION_DENIED\"}}";
    assert_int_equal(raise_str(403, body), CSQL_ERR_PERMISSION_DENIED);
    const csql_error *e = csql_error_last();
    assert_int_equal(e->code, CSQL_ERR_PERMISSION_DENIED);
    assert_int_equal(e->http_status, 403);
    assert_string_equal(e->api_reason, "PERMISSION_DENIED");
    assert_msg_contains(WHAT);
    assert_msg_contains("HTTP 403");
    assert_msg_contains("The client is not authorized to make this request.");
    assert_msg_contains("Cloud SQL Admin API may be disabled");
    assert_msg_contains("Cloud SQL Client role");
}

static void test_401(void **state)
{
    (void)state;
    const char *body = "{\"error\":{\"code\":401,\"message\":\"Request had invalid authentication "
                       "credentials.\",\"status\":\"UNAUTHENTICATED\"}}";
    assert_int_equal(raise_str(401, body), CSQL_ERR_PERMISSION_DENIED);
    assert_string_equal(csql_error_last()->api_reason, "UNAUTHENTICATED");
    assert_msg_contains("invalid authentication credentials");
    assert_msg_contains("access token was rejected");
}

static void test_404(void **state)
{
    (void)state;
    const char *body = "{\"error\":{\"code\":404,\"message\":\"The Cloud SQL instance does not "
                       "exist.\",\"status\":\"NOT_FOUND\"}}";
    assert_int_equal(raise_str(404, body), CSQL_ERR_NOT_FOUND);
    assert_int_equal(csql_error_last()->http_status, 404);
    assert_string_equal(csql_error_last()->api_reason, "NOT_FOUND");
    assert_msg_contains("The Cloud SQL instance does not exist.");
    assert_msg_contains(WHAT);
}

static void test_429_and_5xx(void **state)
{
    (void)state;
    const char *body = "{\"error\":{\"code\":429,\"message\":\"Quota exceeded for quota metric "
                       "'Connect Queries'\",\"status\":\"RESOURCE_EXHAUSTED\"}}";
    assert_int_equal(raise_str(429, body), CSQL_ERR_RATE_LIMITED);
    assert_string_equal(csql_error_last()->api_reason, "RESOURCE_EXHAUSTED");
    assert_msg_contains("Quota exceeded");

    assert_int_equal(raise_str(503, "{\"error\":{\"code\":503,\"message\":\"backend unavailable\","
                                    "\"status\":\"UNAVAILABLE\"}}"),
                     CSQL_ERR_API);
    assert_int_equal(csql_error_last()->http_status, 503);
    assert_msg_contains("backend unavailable");
    assert_int_equal(raise_str(400, "{\"error\":{\"code\":400}}"), CSQL_ERR_API);
    assert_msg_contains("(no message)");
    assert_string_equal(csql_error_last()->api_reason, "");
}

static void test_non_json_body_is_bounded(void **state)
{
    (void)state;
    size_t n = 100000;
    char *body = malloc(n + 1);
    memset(body, 'A', n);
    memcpy(body, "<html>\r\n<body>\tBad\x01 gateway\xc3\xa9", 29);
    body[n] = '\0';
    assert_int_equal(csql__google_error_raise(502, body, n, WHAT), CSQL_ERR_API);
    const char *m = csql_error_last()->message;
    assert_true(strlen(m) < 600);
    assert_msg_contains("not Google error JSON");
    assert_msg_contains("100000 bytes");
    assert_msg_contains("<html> <body> Bad gateway??AAA");
    assert_msg_contains("...");
    assert_null(strchr(m, '\r'));
    assert_null(strchr(m, '\n'));
    free(body);

    /* JSON, but not Google's shape. */
    assert_int_equal(raise_str(500, "[1,2,3]"), CSQL_ERR_API);
    assert_msg_contains("\"[1,2,3]\"");
    assert_int_equal(raise_str(500, "{\"error\":\"flat string\"}"), CSQL_ERR_API);
    assert_msg_contains("flat string");

    /* Empty and NULL bodies. */
    assert_int_equal(raise_str(404, ""), CSQL_ERR_NOT_FOUND);
    assert_msg_contains("empty body");
    assert_int_equal(csql__google_error_raise(403, NULL, 0, NULL), CSQL_ERR_PERMISSION_DENIED);
    assert_msg_contains("Cloud SQL Client role");
}

static void test_message_sanitised(void **state)
{
    (void)state;
    char msg[2000];
    memset(msg, 'm', sizeof(msg));
    msg[sizeof(msg) - 1] = '\0';
    char body[2200];
    snprintf(body, sizeof(body),
             "{\"error\":{\"message\":\"line1\\nline2 %s\",\"status\":\"BAD\\r\\nX-Injected: 1\"}}",
             msg);
    assert_int_equal(raise_str(500, body), CSQL_ERR_API);
    const csql_error *e = csql_error_last();
    assert_null(strchr(e->message, '\n'));
    assert_string_equal(e->api_reason, "BADXInjected1");
    assert_msg_contains("line1 line2 mmm");
    assert_true(strlen(e->message) < 700);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_403_has_hint),
        cmocka_unit_test(test_401),
        cmocka_unit_test(test_404),
        cmocka_unit_test(test_429_and_5xx),
        cmocka_unit_test(test_non_json_body_is_bounded),
        cmocka_unit_test(test_message_sanitised),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
