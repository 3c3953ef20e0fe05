/* csql-proxy metrics: counters and the Prometheus text exposition format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csql/errors.h"
#include "metrics.h"

static char *render(metrics *m, const char *ns)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(metrics_render(m, ns, &out, &len), 0);
    assert_int_equal(strlen(out), len);
    return out;
}

static void expect_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "%s\n", line);
    if (strstr(text, want) == NULL) {
        fail_msg("missing line \"%s\" in:\n%s", line, text);
    }
}

/* Every line is a comment (# HELP / # TYPE) or "name{labels} value" / "name value". */
static void check_syntax(const char *text)
{
    const char *p = text;
    while (*p != '\0') {
        const char *eol = strchr(p, '\n');
        assert_non_null(eol);
        if (strncmp(p, "# HELP ", 7) != 0 && strncmp(p, "# TYPE ", 7) != 0) {
            const char *sp = memrchr(p, ' ', (size_t)(eol - p));
            assert_non_null(sp);
            char *end;
            strtod(sp + 1, &end);
            assert_ptr_equal(end, eol);
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        }
        p = eol + 1;
    }
}

static void test_families_and_labels(void **state)
{
    (void)state;
    metrics m;
    const char *names[] = {"p:r:a", "p:r:b", "p:r:a", "we\"ird\\n:r:i"};
    assert_int_equal(metrics_init(&m, names, 4, 10, "9.9.9"), 0);
    assert_int_equal(m.n, 3); /* duplicates share counters */
    assert_ptr_equal(metrics_find(&m, "p:r:a"), &m.inst[0]);
    assert_null(metrics_find(&m, "p:r:zz"));
    m.have_conn_events = true;
    m.have_refresh_events = true;
    metrics_instance *a = &m.inst[0];
    atomic_store(&a->open, 2);
    atomic_store(&a->accepted, 7);
    atomic_store(&a->refused, 1);
    atomic_store(&a->bytes_sent, 100);
    atomic_store(&a->bytes_received, 2000);
    atomic_store(&a->serving, true);
    metrics_dial_done(a, 3000, true);     /* 3 ms: bucket le=5 */
    metrics_dial_done(a, 5000, true);     /* exactly 5 ms: le=5 */
    metrics_dial_done(a, 40000000, false); /* 40 s: only +Inf */
    metrics_refresh_done(a, true, NULL);
    metrics_refresh_done(a, false, "PERMISSION_DENIED");
    metrics_refresh_done(a, false, "PERMISSION_DENIED");
    metrics_refresh_done(a, false, metrics_error_reason(CSQL_ERR_TIMEOUT, ""));

    char *t = render(&m, NULL);
    check_syntax(t);
    expect_line(t, "# TYPE cloudsqlconn_dial_latency histogram");
    expect_line(t, "cloudsqlconn_dial_latency_bucket{cloudsql_instance=\"p:r:a\",le=\"0\"} 0");
    expect_line(t, "cloudsqlconn_dial_latency_bucket{cloudsql_instance=\"p:r:a\",le=\"5\"} 2");
    expect_line(t, "cloudsqlconn_dial_latency_bucket{cloudsql_instance=\"p:r:a\",le=\"30000\"} 2");
    expect_line(t, "cloudsqlconn_dial_latency_bucket{cloudsql_instance=\"p:r:a\",le=\"+Inf\"} 3");
    expect_line(t, "cloudsqlconn_dial_latency_sum{cloudsql_instance=\"p:r:a\"} 40008.000");
    expect_line(t, "cloudsqlconn_dial_latency_count{cloudsql_instance=\"p:r:a\"} 3");
    expect_line(t, "# TYPE cloudsqlconn_open_connections gauge");
    expect_line(t, "cloudsqlconn_open_connections{cloudsql_instance=\"p:r:a\"} 2");
    expect_line(t, "cloudsqlconn_open_connections{cloudsql_instance=\"p:r:b\"} 0");
    expect_line(t, "cloudsqlconn_dial_failure_count{cloudsql_instance=\"p:r:a\"} 1");
    expect_line(t, "cloudsqlconn_refresh_success_count{cloudsql_instance=\"p:r:a\"} 1");
    expect_line(t, "cloudsqlconn_refresh_failure_count{cloudsql_error_code=\"PERMISSION_DENIED\","
                   "cloudsql_instance=\"p:r:a\"} 2");
    expect_line(t, "cloudsqlconn_refresh_failure_count{cloudsql_error_code=\"TIMEOUT\","
                   "cloudsql_instance=\"p:r:a\"} 1");
    expect_line(t, "cloudsqlconn_bytes_sent{cloudsql_instance=\"p:r:a\"} 100");
    expect_line(t, "cloudsqlconn_bytes_received{cloudsql_instance=\"p:r:a\"} 2000");
    expect_line(t, "csql_proxy_connections_accepted_total{cloudsql_instance=\"p:r:a\"} 7");
    expect_line(t, "csql_proxy_connections_refused_total{cloudsql_instance=\"p:r:a\"} 1");
    expect_line(t, "csql_proxy_instance_serving{cloudsql_instance=\"p:r:a\"} 1");
    expect_line(t, "csql_proxy_instance_serving{cloudsql_instance=\"p:r:b\"} 0");
    expect_line(t, "csql_proxy_max_connections 10");
    expect_line(t, "csql_proxy_build_info{version=\"9.9.9\"} 1");
    /* label values escape backslash, quote and newline */
    expect_line(t, "cloudsqlconn_open_connections{cloudsql_instance=\"we\\\"ird\\\\n:r:i\"} 0");
    free(t);

    t = render(&m, "myns");
    check_syntax(t);
    expect_line(t, "# TYPE myns_cloudsqlconn_open_connections gauge");
    expect_line(t, "myns_csql_proxy_max_connections 10");
    assert_null(strstr(t, "\ncloudsqlconn_"));
    free(t);
    metrics_free(&m);
}

static void test_without_engine_events(void **state)
{
    (void)state;
    metrics m;
    const char *names[] = {"p:r:a"};
    assert_int_equal(metrics_init(&m, names, 1, 0, "1"), 0);
    metrics_dial_done(&m.inst[0], 1000, false);
    char *t = render(&m, "");
    check_syntax(t);
    /* what cannot be counted is left out, not shown as 0 */
    assert_null(strstr(t, "dial_latency"));
    assert_null(strstr(t, "open_connections"));
    assert_null(strstr(t, "refresh_"));
    assert_null(strstr(t, "bytes_"));
    expect_line(t, "cloudsqlconn_dial_failure_count{cloudsql_instance=\"p:r:a\"} 1");
    free(t);
    metrics_free(&m);
}

static void test_reason_table_is_bounded(void **state)
{
    (void)state;
    metrics m;
    const char *names[] = {"p:r:a"};
    assert_int_equal(metrics_init(&m, names, 1, 0, "1"), 0);
    m.have_refresh_events = true;
    char reason[32];
    for (int i = 0; i < METRICS_MAX_REASONS + 5; i++) {
        snprintf(reason, sizeof(reason), "R%d", i);
        metrics_refresh_done(&m.inst[0], false, reason);
    }
    char *t = render(&m, NULL);
    expect_line(t, "cloudsqlconn_refresh_failure_count{cloudsql_error_code=\"OTHER\","
                   "cloudsql_instance=\"p:r:a\"} 5");
    free(t);
    metrics_free(&m);
}

static void test_error_reasons(void **state)
{
    (void)state;
    assert_string_equal(metrics_error_reason(CSQL_ERR_API, "RESOURCE_EXHAUSTED"),
                        "RESOURCE_EXHAUSTED");
    assert_string_equal(metrics_error_reason(CSQL_ERR_NOT_FOUND, ""), "NOT_FOUND");
    assert_string_equal(metrics_error_reason(CSQL_ERR_TLS_VERIFY, NULL), "TLS_VERIFY");
    for (int code = CSQL_ERR_INTERNAL; code >= CSQL_ERR_WOULD_BLOCK; code--) {
        const char *r = metrics_error_reason(code, NULL);
        assert_true(strlen(r) > 1);
        if (code != CSQL_ERR_INTERNAL && code != CSQL_ERR_WOULD_BLOCK) {
            assert_string_not_equal(r, "INTERNAL");
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families_and_labels),
        cmocka_unit_test(test_without_engine_events),
        cmocka_unit_test(test_reason_table_is_bounded),
        cmocka_unit_test(test_error_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
