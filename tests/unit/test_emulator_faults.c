/*
 * csql-emulator fault injection, request counters and request routing
 * (tools/emulator/faults.c and the path parsers of api_sqladmin.c and
 * auth_oauth.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api.h"
#include "emulator.h"
#include "faults.h"

static char err[512];

static int from_json_text(const char *text, emu_fault *f)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    int rc = emu_fault_from_json(j, f, err, sizeof err);
    json_decref(j);
    return rc;
}

static void test_fault_json(void **state)
{
    (void)state;
    emu_fault f;
    assert_int_equal(from_json_text("{\"endpoint\":\"generateEphemeralCert\","
                                    "\"instance\":\"p:r:i\","
                                    "\"status\":429,\"message\":\"slow down\",\"reason\":\"X\","
                                    "\"retry_after\":2,\"latency_ms\":300,\"malformed\":true,"
                                    "\"count\":3}",
                                    &f),
                     0);
    assert_int_equal(f.endpoint, EMU_EP_GENERATE_EPHEMERAL_CERT);
    assert_string_equal(f.instance, "p:r:i");
    assert_int_equal(f.status, 429);
    assert_string_equal(f.message, "slow down");
    assert_string_equal(f.reason, "X");
    assert_int_equal(f.retry_after, 2);
    assert_int_equal(f.latency_ms, 300);
    assert_true(f.malformed);
    assert_int_equal(f.count, 3);

    /* Round trip through the admin API's JSON form. */
    json_t *j = emu_fault_to_json(&f);
    emu_fault g;
    assert_int_equal(emu_fault_from_json(j, &g, err, sizeof err), 0);
    json_decref(j);
    assert_memory_equal(&f, &g, sizeof f);

    assert_int_equal(from_json_text("{\"endpoint\":\"*\",\"latency_ms\":1}", &f), 0);
    assert_int_equal(f.endpoint, EMU_EP_ANY);
    assert_int_equal(f.count, -1);
    assert_int_equal(f.status, 0);
}

static void test_fault_json_errors(void **state)
{
    (void)state;
    emu_fault f;
    struct {
        const char *json, *needle;
    } cases[] = {
        {"{\"status\":503}", "endpoint is required"},
        {"{\"endpoint\":\"getFoo\",\"status\":503}", "'getFoo'"},
        {"{\"endpoint\":7,\"status\":503}", "endpoint"},
        {"{\"endpoint\":\"token\"}", "no effect"},
        {"{\"endpoint\":\"token\",\"status\":302}", "status 302"},
        {"{\"endpoint\":\"token\",\"status\":600}", "status 600"},
        {"{\"endpoint\":\"token\",\"status\":\"503\"}", "status must be an integer"},
        {"{\"endpoint\":\"token\",\"latency_ms\":60001}", "latency_ms"},
        {"{\"endpoint\":\"token\",\"status\":503,\"count\":0}", "count"},
        {"{\"endpoint\":\"token\",\"status\":503,\"retry_after\":-1}", "retry_after"},
        {"{\"endpoint\":\"token\",\"latency_ms\":5,\"retry_after\":1}", "retry_after needs"},
        {"{\"endpoint\":\"token\",\"malformed\":\"yes\"}", "malformed"},
        {"{\"endpoint\":\"token\",\"status\":503,\"colour\":1}", "unknown key 'colour'"},
        {"[]", "object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (from_json_text(cases[i].json, &f) == 0 || !strstr(err, cases[i].needle))
            fail_msg("%s: \"%s\" lacks \"%s\"", cases[i].json, err, cases[i].needle);
    }
}

static void test_fault_spec(void **state)
{
    (void)state;
    emu_fault f;
    assert_int_equal(emu_fault_from_spec("endpoint=token&status=503&message=try%20later&"
                                         "malformed=1&count=1&instance=google.com%3Ap%3Ar%3Ai",
                                         &f, err, sizeof err),
                     0);
    assert_int_equal(f.endpoint, EMU_EP_TOKEN);
    assert_int_equal(f.status, 503);
    assert_string_equal(f.message, "try later");
    assert_string_equal(f.instance, "google.com:p:r:i");
    assert_true(f.malformed);
    assert_int_equal(f.count, 1);
    assert_int_equal(emu_fault_from_spec("endpoint=token&status", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "not key=value"));
    assert_int_equal(emu_fault_from_spec("endpoint=token&status=1&status=2", &f, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "twice"));
    assert_int_equal(emu_fault_from_spec("endpoint=token&latency_ms=x", &f, err, sizeof err), -1);
    assert_int_equal(emu_fault_from_spec("endpoint=token&malformed=maybe", &f, err, sizeof err),
                     -1);
}

static emu_fault fault(emu_endpoint ep, const char *instance, int status, long count)
{
    emu_fault f = {.endpoint = ep, .status = status, .count = count};
    strcpy(f.instance, instance);
    return f;
}

static void test_faults_take(void **state)
{
    (void)state;
    emu_faults *fs = emu_faults_new();
    emu_fault got;

    emu_fault a = fault(EMU_EP_CONNECT_SETTINGS, "p:r:a", 503, 2);
    emu_fault b = fault(EMU_EP_ANY, "", 500, -1);
    assert_int_equal(emu_faults_add(fs, &a), 0);
    assert_false(emu_faults_take(fs, EMU_EP_CONNECT_SETTINGS, "p:r:b", &got));
    assert_false(emu_faults_take(fs, EMU_EP_CONNECT_SETTINGS, NULL, &got));
    assert_false(emu_faults_take(fs, EMU_EP_GET_INSTANCE, "p:r:a", &got));
    assert_true(emu_faults_take(fs, EMU_EP_CONNECT_SETTINGS, "p:r:a", &got));
    assert_int_equal(got.status, 503);

    /* The first match wins; a counted fault disappears when used up. */
    assert_int_equal(emu_faults_add(fs, &b), 0);
    assert_true(emu_faults_take(fs, EMU_EP_CONNECT_SETTINGS, "p:r:a", &got));
    assert_int_equal(got.status, 503);
    assert_true(emu_faults_take(fs, EMU_EP_CONNECT_SETTINGS, "p:r:a", &got));
    assert_int_equal(got.status, 500);
    json_t *list = emu_faults_json(fs);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);

    /* "*" matches every endpoint, with or without an instance, until cleared. */
    for (int i = 0; i < 5; i++) {
        assert_true(emu_faults_take(fs, EMU_EP_TOKEN, NULL, &got));
        assert_int_equal(got.status, 500);
    }
    emu_faults_clear(fs);
    assert_false(emu_faults_take(fs, EMU_EP_TOKEN, NULL, &got));

    for (int i = 0; i < EMU_MAX_FAULTS; i++)
        assert_int_equal(emu_faults_add(fs, &b), 0);
    assert_int_equal(emu_faults_add(fs, &b), -1);
    emu_faults_free(fs);
}

static void test_endpoint_names(void **state)
{
    (void)state;
    emu_endpoint ep;
    for (int i = 0; i < EMU_EP_COUNT; i++) {
        assert_int_equal(emu_endpoint_from_name(emu_endpoint_name((emu_endpoint)i), &ep), 0);
        assert_int_equal(ep, i);
    }
    assert_int_equal(emu_endpoint_from_name("*", &ep), 0);
    assert_int_equal(ep, EMU_EP_ANY);
    assert_int_equal(emu_endpoint_from_name("connectsettings", &ep), -1);
    assert_string_equal(emu_http_status_name(429), "RESOURCE_EXHAUSTED");
    assert_string_equal(emu_http_status_name(503), "UNAVAILABLE");
    assert_string_equal(emu_http_status_name(401), "UNAUTHENTICATED");
    assert_string_equal(emu_http_status_name(599), "INTERNAL");
}

static void test_counters(void **state)
{
    (void)state;
    char na[] = "p:r:a", nb[] = "p:r:b";
    emu_instance a = {.connection_name = na}, b = {.connection_name = nb};
    emu_instance *list[] = {&a, &b};
    emu_counters *c = emu_counters_new(list, 2);

    emu_counters_hit(c, EMU_EP_CONNECT_SETTINGS, 0);
    emu_counters_hit(c, EMU_EP_CONNECT_SETTINGS, 1);
    emu_counters_hit(c, EMU_EP_CONNECT_SETTINGS, 1);
    emu_counters_hit(c, EMU_EP_CONNECT_SETTINGS, -1);
    emu_counters_hit(c, EMU_EP_TOKEN, -1);
    emu_counters_hit(c, EMU_EP_ANY, 0); /* not an endpoint: ignored */
    assert_int_equal(emu_counters_get(c, EMU_EP_CONNECT_SETTINGS, -1), 4);
    assert_int_equal(emu_counters_get(c, EMU_EP_CONNECT_SETTINGS, 1), 2);
    assert_int_equal(emu_counters_get(c, EMU_EP_TOKEN, -1), 1);

    json_t *j = emu_counters_json(c);
    json_t *cs = json_object_get(j, "connectSettings");
    assert_int_equal(json_integer_value(json_object_get(cs, "total")), 4);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(cs, "instances"), "p:r:a")), 1);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(cs, "instances"), "p:r:b")), 2);
    assert_non_null(json_object_get(j, "generateAccessToken"));
    json_decref(j);

    emu_counters_reset(c);
    assert_int_equal(emu_counters_get(c, EMU_EP_CONNECT_SETTINGS, -1), 0);
    assert_int_equal(emu_counters_get(c, EMU_EP_CONNECT_SETTINGS, 1), 0);
    emu_counters_free(c);
}

static void test_sqladmin_paths(void **state)
{
    (void)state;
    emu_sqladmin_path p;
    assert_int_equal(
        emu_sqladmin_parse_path("/sql/v1beta4/projects/my-proj/instances/db/connectSettings", &p),
        0);
    assert_int_equal(p.endpoint, EMU_EP_CONNECT_SETTINGS);
    assert_string_equal(p.project, "my-proj");
    assert_string_equal(p.instance, "db");
    assert_int_equal(emu_sqladmin_parse_path(
                         "/sql/v1beta4/projects/google.com:p/instances/db:generateEphemeralCert",
                         &p),
                     0);
    assert_int_equal(p.endpoint, EMU_EP_GENERATE_EPHEMERAL_CERT);
    assert_string_equal(p.project, "google.com:p");
    assert_string_equal(p.instance, "db");
    assert_int_equal(emu_sqladmin_parse_path("/sql/v1beta4/projects/p/instances/db", &p), 0);
    assert_int_equal(p.endpoint, EMU_EP_GET_INSTANCE);
    assert_int_equal(
        emu_sqladmin_parse_path("/sql/v1beta4/projects/p/instances/db/createEphemeral", &p), 0);
    assert_int_equal(p.endpoint, EMU_EP_CREATE_EPHEMERAL);

    static const char *const bad[] = {
        "/sql/v1beta4/projects/p/instances/db/other",
        "/sql/v1beta4/projects/p/instances/db:other",
        "/sql/v1beta4/projects/p/instances/db:generateEphemeralCert/x",
        "/sql/v1beta4/projects/p/instances/",
        "/sql/v1beta4/projects//instances/db",
        "/sql/v1beta4/projects/p/databases/db",
        "/sql/v1/projects/p/instances/db",
        "/sql/v1beta4/projects/p/instances/:generateEphemeralCert",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (emu_sqladmin_parse_path(bad[i], &p) == 0)
            fail_msg("accepted %s", bad[i]);
    }
}

static void test_other_paths(void **state)
{
    (void)state;
    char email[64];
    assert_int_equal(emu_iamcredentials_parse_path(
                         "/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com"
                         ":generateAccessToken",
                         email, sizeof email),
                     0);
    assert_string_equal(email, "sa@p.iam.gserviceaccount.com");
    assert_int_equal(emu_iamcredentials_parse_path("/v1/projects/-/serviceAccounts/"
                                                   ":generateAccessToken",
                                                   email, sizeof email),
                     -1);
    assert_int_equal(emu_iamcredentials_parse_path("/v1/projects/-/serviceAccounts/a/b"
                                                   ":generateAccessToken",
                                                   email, sizeof email),
                     -1);
    assert_int_equal(emu_iamcredentials_parse_path("/v1/projects/-/serviceAccounts/x"
                                                   ":signBlob",
                                                   email, sizeof email),
                     -1);
    assert_int_equal(emu_iamcredentials_parse_path("/v1/projects/-/serviceAccounts/"
                                                   "a-very-long-address@example.com"
                                                   ":generateAccessToken",
                                                   email, 8),
                     -1);
    assert_true(emu_metadata_is_path("/computeMetadata/v1"));
    assert_true(emu_metadata_is_path("/computeMetadata/v1/instance/service-accounts/x/token"));
    assert_true(emu_metadata_is_path("/"));
    assert_false(emu_metadata_is_path("/computeMetadata/v10"));
    assert_false(emu_metadata_is_path("/token"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_json),
        cmocka_unit_test(test_fault_json_errors),
        cmocka_unit_test(test_fault_spec),
        cmocka_unit_test(test_faults_take),
        cmocka_unit_test(test_endpoint_names),
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_sqladmin_paths),
        cmocka_unit_test(test_other_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
