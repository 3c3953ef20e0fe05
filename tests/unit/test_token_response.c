/* Token endpoint, metadata and generateAccessToken answers: good, error bodies, bad shapes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "credentials/creds_internal.h"
#include "error.h"

#define WHAT "token endpoint example.test"

static int parse(long status, const char *body, csql__token *t)
{
    csql_error_clear();
    return csql__token_response_parse(status, body, body ? strlen(body) : 0, WHAT, 1000, t);
}

static void assert_msg_has(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", m, needle);
    }
}

static void assert_msg_lacks(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) != NULL) {
        fail_msg("message \"%s\" contains \"%s\"", m, needle);
    }
}

static void test_good_answer(void **state)
{
    (void)state;
    csql__token t;
    assert_int_equal(
        parse(200, "{\"access_token\":\"ya29.abc-DEF_1\",\"expires_in\":3599,\"token_type\":\"Bearer\"}",
              &t),
        CSQL_OK);
    assert_string_equal(t.value, "ya29.abc-DEF_1");
    assert_int_equal(t.expires_at, 1000 + 3599);
    csql__token_dispose(&t);
    assert_null(t.value);

    /* Unknown fields ignored, token_type case-insensitive, expires_in may be a real. */
    assert_int_equal(parse(200, "{\"id_token\":\"x\",\"access_token\":\"a\",\"expires_in\":59.9,"
                                "\"token_type\":\"bearer\",\"scope\":\"s\"}",
                           &t),
                     CSQL_OK);
    assert_int_equal(t.expires_at, 1000 + 59);
    csql__token_dispose(&t);

    /* No expires_in: expiry unknown. No token_type: accepted. */
    assert_int_equal(parse(200, "{\"access_token\":\"a\"}", &t), CSQL_OK);
    assert_int_equal(t.expires_at, 0);
    csql__token_dispose(&t);
}

static void test_huge_expiry_is_clamped(void **state)
{
    (void)state;
    csql__token t;
    assert_int_equal(parse(200, "{\"access_token\":\"a\",\"expires_in\":1e300}", &t), CSQL_OK);
    assert_int_equal(t.expires_at, 1000 + CSQL__TOKEN_LIFETIME_MAX);
    csql__token_dispose(&t);
    assert_int_equal(parse(200, "{\"access_token\":\"a\",\"expires_in\":9223372036854775807}", &t),
                     CSQL_OK);
    assert_int_equal(t.expires_at, 1000 + CSQL__TOKEN_LIFETIME_MAX);
    csql__token_dispose(&t);
}

static void test_bad_fields(void **state)
{
    (void)state;
    csql__token t;
    assert_int_equal(parse(200, "{\"expires_in\":3600}", &t), CSQL_ERR_TOKEN);
    assert_msg_has("without \"access_token\"");
    assert_msg_has(WHAT);
    assert_null(t.value);

    assert_int_equal(parse(200, "{\"access_token\":42}", &t), CSQL_ERR_TOKEN);
    assert_msg_has("\"access_token\" is not a string");

    assert_int_equal(parse(200, "{\"access_token\":\"\"}", &t), CSQL_ERR_TOKEN);
    assert_int_equal(parse(200, "{\"access_token\":\"a\",\"expires_in\":\"3600\"}", &t),
                     CSQL_ERR_TOKEN);
    assert_msg_has("expires_in");
    assert_int_equal(parse(200, "{\"access_token\":\"a\",\"expires_in\":-5}", &t),
                     CSQL_ERR_TOKEN);
    assert_msg_has("not positive");
    assert_int_equal(parse(200, "{\"access_token\":\"a\",\"expires_in\":0}", &t), CSQL_ERR_TOKEN);
    /* Found by fuzz_token_response: 0 < expires_in < 1 gave a token expiring on arrival. */
    assert_int_equal(parse(200, "{\"access_token\":\"a\",\"expires_in\":1e-2}", &t),
                     CSQL_ERR_TOKEN);
    assert_msg_has("under one second");
    assert_int_equal(parse(200, "{\"access_token\":\"a\",\"token_type\":\"MAC\"}", &t),
                     CSQL_ERR_TOKEN);
    assert_msg_has("token_type");
    assert_null(t.value);
}

static void test_token_characters_and_size(void **state)
{
    (void)state;
    csql__token t;
    /* A token that would inject a header, and one with a space: refused, never echoed. */
    assert_int_equal(parse(200, "{\"access_token\":\"SECRETPART\\r\\nX-Evil: 1\"}", &t),
                     CSQL_ERR_TOKEN);
    assert_msg_lacks("SECRETPART");
    assert_int_equal(parse(200, "{\"access_token\":\"SECRET PART\"}", &t), CSQL_ERR_TOKEN);
    assert_msg_lacks("SECRET");

    /* Longest accepted, and one byte more. */
    size_t n = CSQL__ACCESS_TOKEN_MAX;
    char *body = malloc(n + 64);
    assert_non_null(body);
    memcpy(body, "{\"access_token\":\"", 17);
    memset(body + 17, 'k', n);
    strcpy(body + 17 + n, "\"}");
    assert_int_equal(parse(200, body, &t), CSQL_OK);
    assert_int_equal(strlen(t.value), n);
    csql__token_dispose(&t);
    memset(body + 17, 'k', n + 1);
    strcpy(body + 17 + n + 1, "\"}");
    assert_int_equal(parse(200, body, &t), CSQL_ERR_TOKEN);
    assert_msg_lacks("kkkk");
    free(body);
}

static void test_not_json(void **state)
{
    (void)state;
    csql__token t;
    assert_int_equal(parse(200, "<html>hello</html>", &t), CSQL_ERR_TOKEN);
    assert_msg_has("not JSON");
    assert_int_equal(csql_error_last()->http_status, 200);
    assert_int_equal(parse(200, "[\"access_token\"]", &t), CSQL_ERR_TOKEN);
    assert_msg_has("not an object");
    assert_int_equal(parse(200, "", &t), CSQL_ERR_TOKEN);
    assert_int_equal(parse(200, NULL, &t), CSQL_ERR_TOKEN);
    /* Duplicate keys are ambiguous: refused. */
    assert_int_equal(parse(200, "{\"access_token\":\"a\",\"access_token\":\"b\"}", &t),
                     CSQL_ERR_TOKEN);
    /* Truncated JSON (a body cut in half) */
    assert_int_equal(parse(200, "{\"access_token\":\"abc", &t), CSQL_ERR_TOKEN);
    assert_msg_lacks("abc");
}

static void test_oauth_error_body(void **state)
{
    (void)state;
    csql__token t;
    assert_int_equal(
        parse(400, "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT Signature.\"}",
              &t),
        CSQL_ERR_TOKEN);
    const csql_error *e = csql_error_last();
    assert_int_equal(e->http_status, 400);
    assert_string_equal(e->api_reason, "invalid_grant");
    assert_int_equal(e->category, CSQL_CAT_AUTH);
    assert_msg_has(WHAT);
    assert_msg_has("HTTP 400");
    assert_msg_has("invalid_grant: Invalid JWT Signature.");
    assert_null(t.value);

    assert_int_equal(parse(401, "{\"error\":\"unauthorized_client\"}", &t), CSQL_ERR_TOKEN);
    assert_msg_has("unauthorized_client");
}

static void test_google_error_body(void **state)
{
    (void)state;
    csql__token t;
    assert_int_equal(parse(500,
                           "{\"error\":{\"code\":500,\"message\":\"backend exploded\","
                           "\"status\":\"INTERNAL\"}}",
                           &t),
                     CSQL_ERR_TOKEN);
    assert_int_equal(csql_error_last()->http_status, 500);
    assert_string_equal(csql_error_last()->api_reason, "INTERNAL");
    assert_msg_has("backend exploded");
    /* A 2xx status is what decides success, not the body. */
    assert_int_equal(parse(302, "{\"access_token\":\"a\"}", &t), CSQL_ERR_TOKEN);
}

static void test_error_body_not_json_is_bounded(void **state)
{
    (void)state;
    csql__token t;
    assert_int_equal(parse(503, "Service Unavailable\r\n", &t), CSQL_ERR_TOKEN);
    assert_msg_has("HTTP 503: Service Unavailable");
    assert_int_equal(parse(502, "", &t), CSQL_ERR_TOKEN);
    assert_msg_has("(empty body)");

    size_t n = 100000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    assert_int_equal(parse(500, big, &t), CSQL_ERR_TOKEN);
    assert_true(strlen(csql_error_last()->message) < 400);
    assert_msg_has("...");
    free(big);
}

static int imp(long status, const char *body, csql__token *t)
{
    csql_error_clear();
    return csql__impersonate_response_parse(status, body, strlen(body), "generateAccessToken", t);
}

/* Found by fuzz_token_response: a non-2xx JSON answer was quoted whole, token included. */
static void test_error_body_never_quotes_a_token(void **state)
{
    (void)state;
    csql__token t;
    assert_int_equal(parse(500, "{\"access_token\":\"ya29.secret-token-value\",\"expires_in\":3599}",
                           &t),
                     CSQL_ERR_TOKEN);
    assert_msg_lacks("ya29.secret-token-value");
    assert_msg_has("HTTP 500: a JSON answer of");
    assert_int_equal(parse(503, "{\"error\":{},\"access_token\":\"ya29.secret-token-value\"}", &t),
                     CSQL_ERR_TOKEN);
    assert_msg_lacks("ya29.secret-token-value");
    assert_int_equal(imp(502, "{\"accessToken\":\"ya29.secret-token-value\"}", &t),
                     CSQL_ERR_TOKEN);
    assert_msg_lacks("ya29.secret-token-value");
}

static void test_impersonate_answer(void **state)
{
    (void)state;
    csql__token t;
    assert_int_equal(imp(200, "{\"accessToken\":\"ya29.imp\",\"expireTime\":\"2030-01-01T00:00:00Z\"}",
                         &t),
                     CSQL_OK);
    assert_string_equal(t.value, "ya29.imp");
    assert_int_equal(t.expires_at, 1893456000);
    csql__token_dispose(&t);

    assert_int_equal(imp(200, "{\"accessToken\":\"a\"}", &t), CSQL_ERR_TOKEN);
    assert_msg_has("expireTime");
    assert_int_equal(imp(200, "{\"accessToken\":\"a\",\"expireTime\":\"tomorrow\"}", &t),
                     CSQL_ERR_TOKEN);
    assert_msg_has("RFC 3339");
    assert_int_equal(imp(200, "{\"expireTime\":\"2030-01-01T00:00:00Z\"}", &t), CSQL_ERR_TOKEN);
    assert_msg_has("accessToken");
    assert_int_equal(imp(403,
                         "{\"error\":{\"code\":403,\"message\":\"Permission "
                         "'iam.serviceAccounts.getAccessToken' denied\",\"status\":"
                         "\"PERMISSION_DENIED\"}}",
                         &t),
                     CSQL_ERR_TOKEN);
    assert_string_equal(csql_error_last()->api_reason, "PERMISSION_DENIED");
    assert_msg_has("getAccessToken' denied");
    assert_null(t.value);
}

static int64_t rfc(const char *s)
{
    int64_t v = 0;
    if (csql__rfc3339_parse(s, strlen(s), &v) != 0) {
        return INT64_MIN;
    }
    return v;
}

static void test_rfc3339(void **state)
{
    (void)state;
    assert_int_equal(rfc("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(rfc("2030-01-01T00:00:00Z"), 1893456000);
    assert_int_equal(rfc("2030-01-01t00:00:00.123456789z"), 1893456000);
    assert_int_equal(rfc("2024-02-29T12:34:56+02:00"), 1709202896);
    assert_int_equal(rfc("1970-01-01T00:00:00+01:00"), -3600);
    assert_int_equal(rfc("2000-03-01T00:00:00Z"), 951868800);
    const char *bad[] = {"",
                         "2030-01-01",
                         "2030-01-01T00:00:00",
                         "2030-13-01T00:00:00Z",
                         "2030-01-00T00:00:00Z",
                         "2030-01-01T24:00:00Z",
                         "2030-01-01T00:00:00.Z",
                         "2030-01-01T00:00:00Zjunk",
                         "2030-01-01T00:00:00+0100",
                         "2030-01-01 00:00:00Z",
                         "20x0-01-01T00:00:00Z",
                         "2030-01-01T00:00:00+25:00"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (rfc(bad[i]) != INT64_MIN) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
    }
}

static long g_allocs_left;

static void *failing_malloc(size_t n)
{
    if (g_allocs_left-- <= 0) {
        return NULL;
    }
    return malloc(n);
}

static void test_parse_survives_allocation_failures(void **state)
{
    (void)state;
    const char *ok = "{\"access_token\":\"ya29.x\",\"expires_in\":3600,\"token_type\":\"Bearer\"}";
    const char *err = "{\"error\":{\"code\":500,\"message\":\"m\",\"status\":\"INTERNAL\"}}";
    const char *imp_ok = "{\"accessToken\":\"a\",\"expireTime\":\"2030-01-01T00:00:00Z\"}";
    for (long n = 0; n < 200; n++) {
        csql__token t;
        g_allocs_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        int rc1 = csql__token_response_parse(200, ok, strlen(ok), WHAT, 0, &t);
        json_set_alloc_funcs(malloc, free);
        /* jansson does not always tell an allocation failure from bad input */
        assert_true(rc1 == CSQL_OK || rc1 == CSQL_ERR_NOMEM || rc1 == CSQL_ERR_TOKEN);
        csql__token_dispose(&t);

        g_allocs_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        int rc2 = csql__token_response_parse(500, err, strlen(err), WHAT, 0, &t);
        json_set_alloc_funcs(malloc, free);
        assert_int_equal(rc2, CSQL_ERR_TOKEN); /* a summary of the body at worst */
        assert_null(t.value);

        g_allocs_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        int rc3 = csql__impersonate_response_parse(200, imp_ok, strlen(imp_ok), WHAT, &t);
        json_set_alloc_funcs(malloc, free);
        assert_true(rc3 == CSQL_OK || rc3 == CSQL_ERR_NOMEM || rc3 == CSQL_ERR_TOKEN);
        csql__token_dispose(&t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_answer),
        cmocka_unit_test(test_huge_expiry_is_clamped),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_token_characters_and_size),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_oauth_error_body),
        cmocka_unit_test(test_google_error_body),
        cmocka_unit_test(test_error_body_not_json_is_bounded),
        cmocka_unit_test(test_error_body_never_quotes_a_token),
        cmocka_unit_test(test_impersonate_answer),
        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_parse_survives_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
