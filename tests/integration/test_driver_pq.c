/*
 * libcsql-pq end to end: a real PostgreSQL behind csql-emulator, libpq
 * through csql's local endpoint. Queries, transactions, prepared statements,
 * 64 MiB streamed out and COPYed in (MD5 equal on both ends), 16 threads x 50
 * connections, automatic IAM authn, cancel and reset, and every failure
 * reported on the right channel (csql's for dials, the database's for logins).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "csql/endpoint.h"
#include "csql/pq.h"
#include "driver_common.h"
#include "endpoint_internal.h"
#include "fwd.h"

#define BULK_ROWS 65536 /* x 1 KiB = 64 MiB */

#ifndef PQ_QUERY_EXE
#define PQ_QUERY_EXE ""
#endif

static drv_env g_env;
static csqlt_pg g_pg;
static char g_conninfo[256];

/* ---------------- fixture ---------------- */

static int group_setup(void **state)
{
    (void)state;
    char src[32];
    csqlt_unique_ip(3, src, sizeof(src)); /* = g_env.ip[2]: the emulator's backend source */
    if (csqlt_pg_start(&g_pg, src) != 0) {
        return -1;
    }
    char pg[256], down[256], my[256];
    snprintf(pg, sizeof(pg), "p:r:pg?version=POSTGRES_15&public-ip=%%IP0%%&backend=127.0.0.1:%d",
             g_pg.port);
    snprintf(down, sizeof(down),
             "p:r:down?version=POSTGRES_15&public-ip=%%IP1%%&backend=127.0.0.1:%d", g_pg.port);
    snprintf(my, sizeof(my), "p:r:my?version=MYSQL_8_0&public-ip=%%IP3%%&backend=127.0.0.1:%d",
             g_pg.port);
    const char *specs[] = {pg, down, my, NULL};
    if (drv_start(&g_env, specs, src) != 0) {
        csqlt_pg_stop(&g_pg);
        return -1;
    }
    snprintf(g_conninfo, sizeof(g_conninfo), "user=postgres password=secret dbname=postgres");
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    drv_stop(&g_env);
    csqlt_pg_stop(&g_pg);
    return 0;
}

static PGconn *connect_ok(const char *conninfo, const csql_dial_options *opts)
{
    PGconn *pg = csql_pq_connect(g_env.d, "p:r:pg", conninfo, opts);
    if (pg == NULL) {
        fail_msg("csql_pq_connect: %s", csql_error_last()->message);
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        fail_msg("postgres: %s", PQerrorMessage(pg));
    }
    return pg;
}

static void exec_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    }
    PQclear(r);
}

static char *scalar(PGconn *pg, const char *sql, char *buf, size_t len)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1) {
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    }
    snprintf(buf, len, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return buf;
}

static int wait_forwards_gone(int timeout_ms)
{
    int64_t deadline = drv_now_ms() + timeout_ms;
    while (csql__fwd_live_count() != 0) {
        if (drv_now_ms() > deadline) {
            return -1;
        }
        usleep(2000);
    }
    return 0;
}

/* ---------------- tests ---------------- */

static void test_query(void **state)
{
    (void)state;
    PGconn *pg = connect_ok(g_conninfo, NULL);
    char buf[128];
    assert_string_equal(scalar(pg, "select 1+1", buf, sizeof(buf)), "2");
    assert_string_equal(scalar(pg, "select current_user", buf, sizeof(buf)), "postgres");
    /* libpq sees a Unix socket in a private directory, without TLS of its own. */
    assert_non_null(strstr(PQhost(pg), "/csql-"));
    assert_null(PQgetssl(pg));
    PQfinish(pg);
    assert_int_equal(wait_forwards_gone(5000), 0); /* the driver's close ends the forwarding */
}

static void test_transaction_rollback_and_commit(void **state)
{
    (void)state;
    PGconn *pg = connect_ok(g_conninfo, NULL);
    char buf[64];
    exec_ok(pg, "drop table if exists tx; create table tx (i int)");
    exec_ok(pg, "begin");
    exec_ok(pg, "insert into tx select generate_series(1, 100)");
    assert_string_equal(scalar(pg, "select count(*) from tx", buf, sizeof(buf)), "100");
    exec_ok(pg, "rollback");
    assert_string_equal(scalar(pg, "select count(*) from tx", buf, sizeof(buf)), "0");
    exec_ok(pg, "begin");
    exec_ok(pg, "insert into tx values (7)");
    exec_ok(pg, "commit");
    assert_string_equal(scalar(pg, "select sum(i) from tx", buf, sizeof(buf)), "7");
    PQfinish(pg);
}

static void test_prepared_statement(void **state)
{
    (void)state;
    PGconn *pg = connect_ok(g_conninfo, NULL);
    PGresult *r = PQprepare(pg, "add", "select $1::int + $2::int, $3::text || '!'", 3, NULL);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    for (int i = 0; i < 20; i++) {
        char a[16], b[16], want[32];
        snprintf(a, sizeof(a), "%d", i);
        snprintf(b, sizeof(b), "%d", i * 10);
        const char *params[3] = {a, b, "hi"};
        r = PQexecPrepared(pg, "add", 3, params, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        snprintf(want, sizeof(want), "%d", i * 11);
        assert_string_equal(PQgetvalue(r, 0, 0), want);
        assert_string_equal(PQgetvalue(r, 0, 1), "hi!");
        PQclear(r);
    }
    PQfinish(pg);
}

#define GEN_ROW "repeat(md5(i::text), 32)" /* 1024 bytes per row */

/* 64 MiB streamed out row by row; MD5 computed here and by the server. */
static void test_large_result_streamed(void **state)
{
    (void)state;
    PGconn *pg = connect_ok(g_conninfo, NULL);
    char sql[256], want[64], got[33];
    snprintf(sql, sizeof(sql),
             "select md5(string_agg(" GEN_ROW ", '' order by i)) from generate_series(1, %d) i",
             BULK_ROWS);
    scalar(pg, sql, want, sizeof(want));

    snprintf(sql, sizeof(sql), "select " GEN_ROW " from generate_series(1, %d) i order by i",
             BULK_ROWS);
    int64_t t0 = drv_now_ms();
    assert_int_equal(PQsendQuery(pg, sql), 1);
    assert_int_equal(PQsetSingleRowMode(pg), 1);
    drv_md5 md;
    drv_md5_init(&md);
    size_t bytes = 0, rows = 0;
    PGresult *r;
    while ((r = PQgetResult(pg)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE) {
            drv_md5_update(&md, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
            bytes += (size_t)PQgetlength(r, 0, 0);
            rows++;
        } else if (st != PGRES_TUPLES_OK) {
            fail_msg("stream: %s", PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    drv_md5_final(&md, got);
    int64_t ms = drv_now_ms() - t0;
    assert_int_equal(rows, BULK_ROWS);
    assert_int_equal(bytes, (size_t)BULK_ROWS * 1024);
    assert_string_equal(got, want);
    fprintf(stderr, "pq: streamed out %zu MiB in %lld ms (%.1f MiB/s), md5 %s on both ends\n",
            bytes >> 20, (long long)ms, ms ? (double)(bytes >> 20) * 1000.0 / (double)ms : 0.0,
            got);
    PQfinish(pg);
}

/* 64 MiB COPYed in; MD5 of what was sent equals the server's MD5 of what it stored. */
static void test_large_copy_in(void **state)
{
    (void)state;
    PGconn *pg = connect_ok(g_conninfo, NULL);
    exec_ok(pg, "drop table if exists bulk; create unlogged table bulk (id int, line text)");
    PGresult *r = PQexec(pg, "copy bulk (id, line) from stdin");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    drv_md5 md;
    drv_md5_init(&md);
    char line[1024], rec[1100];
    size_t bytes = 0;
    int64_t t0 = drv_now_ms();
    for (uint32_t i = 0; i < BULK_ROWS; i++) {
        drv_line(i, line);
        int n = snprintf(rec, sizeof(rec), "%u\t%s\n", i, line);
        assert_int_equal(PQputCopyData(pg, rec, n), 1);
        drv_md5_update(&md, line, 1023);
        bytes += (size_t)n;
    }
    assert_int_equal(PQputCopyEnd(pg, NULL), 1);
    r = PQgetResult(pg);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    while ((r = PQgetResult(pg)) != NULL) {
        PQclear(r);
    }
    int64_t ms = drv_now_ms() - t0;
    char want[33], got[64];
    drv_md5_final(&md, want);
    scalar(pg, "select md5(string_agg(line, '' order by id)) from bulk", got, sizeof(got));
    assert_string_equal(got, want);
    fprintf(stderr, "pq: COPY in %zu MiB in %lld ms (%.1f MiB/s), md5 %s on both ends\n",
            bytes >> 20, (long long)ms, ms ? (double)(bytes >> 20) * 1000.0 / (double)ms : 0.0,
            got);
    exec_ok(pg, "drop table bulk");
    PQfinish(pg);
}

typedef struct worker {
    int index;
    int ok;
    int failed;
    char last_error[256];
} worker;

static void *connect_loop(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < 50; i++) {
        PGconn *pg = csql_pq_connect(g_env.d, "p:r:pg", g_conninfo, NULL);
        if (pg == NULL) {
            snprintf(w->last_error, sizeof(w->last_error), "csql: %s", csql_error_last()->message);
            w->failed++;
            continue;
        }
        PGresult *r = NULL;
        if (PQstatus(pg) == CONNECTION_OK) {
            r = PQexec(pg, "select pg_backend_pid()");
        }
        if (r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK) {
            w->ok++;
        } else {
            snprintf(w->last_error, sizeof(w->last_error), "pg: %s", PQerrorMessage(pg));
            w->failed++;
        }
        PQclear(r);
        PQfinish(pg);
    }
    return NULL;
}

static void test_sixteen_threads_fifty_connections(void **state)
{
    (void)state;
    worker w[16];
    memset(w, 0, sizeof(w));
    int fds_before = drv_open_fds();
    int64_t t0 = drv_now_ms();
    drv_run_threads(16, connect_loop, w, sizeof(w[0]));
    int64_t ms = drv_now_ms() - t0;
    int ok = 0;
    for (int i = 0; i < 16; i++) {
        if (w[i].failed) {
            fprintf(stderr, "thread %d: %d failed, last: %s\n", i, w[i].failed, w[i].last_error);
        }
        ok += w[i].ok;
    }
    assert_int_equal(ok, 16 * 50);
    assert_int_equal(wait_forwards_gone(10000), 0);
    /* Nothing leaked: no socket, no private directory left open. */
    assert_true(drv_open_fds() <= fds_before + 1);
    fprintf(stderr, "pq: 16 threads x 50 connections: 800 ok in %lld ms (%.1f connections/s)\n",
            (long long)ms, ms ? 800.0 * 1000.0 / (double)ms : 0.0);
}

static void test_iam_authn_user(void **state)
{
    (void)state;
    PGconn *admin = connect_ok(g_conninfo, NULL);
    exec_ok(admin, "drop role if exists \"static-user@emulator.iam\"");
    exec_ok(admin, "create role \"static-user@emulator.iam\" login");
    PQfinish(admin);

    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.iam_authn = 1;
    /* The principal is formatted into the database user; no password. */
    PGconn *pg = connect_ok("user=" DRV_IAM_PRINCIPAL " dbname=postgres", &o);
    char buf[128];
    assert_string_equal(scalar(pg, "select current_user", buf, sizeof(buf)),
                        "static-user@emulator.iam");
    PQfinish(pg);

    /* IAM authn without a principal is refused before dialling. */
    assert_null(csql_pq_connect(g_env.d, "p:r:pg", "dbname=postgres", &o));
    assert_int_equal(csql_error_last()->code, CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "user="));
}

static void test_wrong_password_is_the_database_error(void **state)
{
    (void)state;
    PGconn *pg = csql_pq_connect(g_env.d, "p:r:pg", "user=postgres password=wrong dbname=postgres",
                                 NULL);
    assert_non_null(pg);
    assert_int_equal(PQstatus(pg), CONNECTION_BAD);
    assert_non_null(strstr(PQerrorMessage(pg), "password authentication failed for user \"postgres\""));
    PQfinish(pg);
}

static void test_instance_down_is_a_csql_error(void **state)
{
    (void)state;
    assert_int_equal(drv_refuse_tcp(&g_env, "p:r:down", 1), 200);
    PGconn *pg = csql_pq_connect(g_env.d, "p:r:down", g_conninfo, NULL);
    assert_null(pg);
    const csql_error *e = csql_error_last();
    fprintf(stderr, "instance down: [%s] %s\n", csql_strerror(e->code), e->message);
    assert_int_equal(e->code, CSQL_ERR_CONNECT);
    assert_non_null(strstr(e->message, g_env.ip[1]));
    assert_int_equal(drv_refuse_tcp(&g_env, "p:r:down", 0), 200);

    /* Unknown instance: the Admin API's 404, with its message. */
    pg = csql_pq_connect(g_env.d, "p:r:nope", g_conninfo, NULL);
    assert_null(pg);
    e = csql_error_last();
    assert_int_equal(e->code, CSQL_ERR_NOT_FOUND);
    assert_int_equal(e->http_status, 404);
    assert_non_null(strstr(e->message, "nope"));
}

static void test_conninfo_keys_csql_owns_are_refused(void **state)
{
    (void)state;
    const char *bad[][2] = {
        {"host=/tmp user=postgres", "\"host\""},
        {"hostaddr=10.0.0.1", "\"hostaddr\""},
        {"port=5433", "\"port\""},
        {"sslmode=require", "\"sslmode\""},
        {"postgresql://db.example.com/appdb", "\"host\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(csql_pq_connect(g_env.d, "p:r:pg", bad[i][0], NULL));
        assert_int_equal(csql_error_last()->code, CSQL_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(csql_error_last()->message, bad[i][1]));
    }
    assert_null(csql_pq_connect(g_env.d, "p:r:pg", "user", NULL)); /* not conninfo at all */
    assert_int_equal(csql_error_last()->code, CSQL_ERR_INVALID_ARGUMENT);
    assert_null(csql_pq_connect(NULL, "p:r:pg", "", NULL));
    assert_int_equal(csql_error_last()->code, CSQL_ERR_INVALID_ARGUMENT);
    /* A MySQL instance is not for libpq. */
    assert_null(csql_pq_connect(g_env.d, "p:r:my", g_conninfo, NULL));
    assert_int_equal(csql_error_last()->code, CSQL_ERR_UNSUPPORTED_INSTANCE);
    assert_non_null(strstr(csql_error_last()->message, "MYSQL_8_0"));
    assert_int_equal(wait_forwards_gone(5000), 0);
}

static void test_cancel_and_reset_dial_afresh(void **state)
{
    (void)state;
    PGconn *pg = connect_ok(g_conninfo, NULL);
    assert_int_equal(PQsendQuery(pg, "select pg_sleep(30)"), 1);
    usleep(200000);
    PGcancel *cancel = PQgetCancel(pg);
    char err[256];
    int64_t t0 = drv_now_ms();
    assert_int_equal(PQcancel(cancel, err, sizeof(err)), 1);
    PQfreeCancel(cancel);
    PGresult *r = PQgetResult(pg);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_non_null(strstr(PQresultErrorMessage(r), "canceling statement due to user request"));
    assert_true(drv_now_ms() - t0 < 10000);
    PQclear(r);
    while ((r = PQgetResult(pg)) != NULL) {
        PQclear(r);
    }
    PQreset(pg);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    char buf[16];
    assert_string_equal(scalar(pg, "select 41+1", buf, sizeof(buf)), "42");
    PQfinish(pg);
}

static void test_async_connect(void **state)
{
    (void)state;
    PGconn *pg = csql_pq_connect_start(g_env.d, "p:r:pg", g_conninfo, NULL);
    assert_non_null(pg);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (int i = 0; i < 1000 && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED; i++) {
        struct pollfd p = {PQsocket(pg), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0};
        poll(&p, 1, 5000);
        st = PQconnectPoll(pg);
    }
    assert_int_equal(st, PGRES_POLLING_OK);
    char buf[16];
    assert_string_equal(scalar(pg, "select 'async'", buf, sizeof(buf)), "async");
    PQfinish(pg);
}

/* What an idle forwarded connection costs csql (TLS state, buffers released when idle). */
static void test_memory_per_idle_connection(void **state)
{
    (void)state;
    enum { N = 200 };
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_unix(&ep, g_env.d, "p:r:pg", NULL, NULL), 0);
    int *c = calloc(N, sizeof(int));
    /* Warm up (certificate, loop, workers) before measuring. */
    for (int round = 0; round < 2; round++) {
        size_t heap0 = drv_heap_bytes();
        long rss0 = drv_rss_kib();
        for (int i = 0; i < N; i++) {
            struct sockaddr_un sa = {.sun_family = AF_UNIX};
            snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", csql_endpoint_path(ep));
            c[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            assert_int_equal(connect(c[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
        }
        csql__endpoint_stats st;
        int64_t deadline = drv_now_ms() + 30000;
        do {
            usleep(10000);
            assert_int_equal(csql__endpoint_stats_get(ep, &st), 0);
        } while (st.active < N && drv_now_ms() < deadline);
        assert_int_equal(st.active, N);
        usleep(100000);
        size_t heap1 = drv_heap_bytes();
        long rss1 = drv_rss_kib();
        if (round == 1) {
            fprintf(stderr,
                    "idle forwarded connection (TLS conn + pair, buffers released): heap %.1f KiB, "
                    "RSS %.1f KiB each (over %d)\n",
                    (double)(heap1 - heap0) / 1024.0 / N, (double)(rss1 - rss0) / N, N);
        }
        for (int i = 0; i < N; i++) {
            close(c[i]);
        }
        assert_int_equal(wait_forwards_gone(10000), 0);
    }
    free(c);
    csql_endpoint_close(ep);
}

/* examples/pq_query, as a user would run it against the emulator. */
static void test_example_program(void **state)
{
    (void)state;
    if (PQ_QUERY_EXE[0] == '\0') {
        skip();
    }
    char out[1024];
    int rc = csqlt_sh(out, sizeof(out),
                      "CSQL_API_ENDPOINT='%s' CSQL_TOKEN='%s' timeout 60 '%s' p:r:pg "
                      "'user=postgres password=secret dbname=postgres' 'select 6*7' 2>&1",
                      g_env.em.url, DRV_TOKEN, PQ_QUERY_EXE);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "42\n");
    rc = csqlt_sh(out, sizeof(out),
                  "CSQL_API_ENDPOINT='%s' CSQL_TOKEN='%s' timeout 60 '%s' p:r:pg "
                  "'user=postgres password=nope dbname=postgres' 2>&1",
                  g_env.em.url, DRV_TOKEN, PQ_QUERY_EXE);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "password authentication failed"));
    rc = csqlt_sh(out, sizeof(out),
                  "CSQL_API_ENDPOINT='%s' CSQL_TOKEN='%s' timeout 60 '%s' p:r:nope 'user=x' 2>&1",
                  g_env.em.url, DRV_TOKEN, PQ_QUERY_EXE);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "not found")); /* csql_strerror(CSQL_ERR_NOT_FOUND) */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_transaction_rollback_and_commit),
        cmocka_unit_test(test_prepared_statement),
        cmocka_unit_test(test_large_result_streamed),
        cmocka_unit_test(test_large_copy_in),
        cmocka_unit_test(test_sixteen_threads_fifty_connections),
        cmocka_unit_test(test_iam_authn_user),
        cmocka_unit_test(test_wrong_password_is_the_database_error),
        cmocka_unit_test(test_instance_down_is_a_csql_error),
        cmocka_unit_test(test_conninfo_keys_csql_owns_are_refused),
        cmocka_unit_test(test_cancel_and_reset_dial_afresh),
        cmocka_unit_test(test_async_connect),
        cmocka_unit_test(test_memory_per_idle_connection),
        cmocka_unit_test(test_example_program),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
