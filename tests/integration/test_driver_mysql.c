/*
 * libcsql-mysql end to end: a real MariaDB behind csql-emulator (as a MYSQL_8_0
 * instance), MariaDB Connector/C through csql's one-shot local endpoint.
 * Queries, transactions, prepared statements, 64 MiB streamed out and loaded
 * in with LOAD DATA LOCAL (MD5 equal on both ends), 16 threads x 50
 * connections, automatic IAM authn, and failures on the right channel.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csql/mysql.h"
#include "driver_common.h"
#include "fwd.h"

#define BULK_ROWS 65536 /* x 1 KiB = 64 MiB */

#ifndef MYSQL_QUERY_EXE
#define MYSQL_QUERY_EXE ""
#endif

static drv_env g_env;
static csqlt_my g_my;
static char g_src[32];

/* ---------------- fixture ---------------- */

static int group_setup(void **state)
{
    (void)state;
    csqlt_unique_ip(3, g_src, sizeof(g_src)); /* = g_env.ip[2]: the emulator's backend source */
    if (csqlt_my_start(&g_my, g_src) != 0) {
        return -1;
    }
    char my[256], down[256], pg[256], ss[256];
    snprintf(my, sizeof(my), "p:r:my?version=MYSQL_8_0&public-ip=%%IP0%%&backend=127.0.0.1:%d",
             g_my.port);
    snprintf(down, sizeof(down), "p:r:down?version=MYSQL_8_0&public-ip=%%IP1%%&backend=127.0.0.1:%d",
             g_my.port);
    snprintf(pg, sizeof(pg), "p:r:pg?version=POSTGRES_15&public-ip=%%IP3%%&backend=127.0.0.1:%d",
             g_my.port);
    snprintf(ss, sizeof(ss),
             "p:r:ss?version=SQLSERVER_2019_STANDARD&public-ip=%%IP4%%&backend=127.0.0.1:%d",
             g_my.port);
    const char *specs[] = {my, down, pg, ss, NULL};
    if (drv_start(&g_env, specs, g_src) != 0) {
        csqlt_my_stop(&g_my);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    drv_stop(&g_env);
    csqlt_my_stop(&g_my);
    return 0;
}

static MYSQL *connect_ok(const char *user, const char *password, const csql_dial_options *opts)
{
    MYSQL *m = mysql_init(NULL);
    int rc = csql_mysql_connect(g_env.d, m, "p:r:my", user, password, "appdb", 0, opts);
    if (rc < 0) {
        fail_msg("csql_mysql_connect: %s", csql_error_last()->message);
    }
    if (rc > 0) {
        fail_msg("mysql: %s (%d)", mysql_error(m), rc);
    }
    return m;
}

static void exec_ok(MYSQL *m, const char *sql)
{
    if (mysql_query(m, sql) != 0) {
        fail_msg("%s: %s", sql, mysql_error(m));
    }
    MYSQL_RES *r = mysql_store_result(m);
    mysql_free_result(r);
}

static char *scalar(MYSQL *m, const char *sql, char *buf, size_t len)
{
    if (mysql_query(m, sql) != 0) {
        fail_msg("%s: %s", sql, mysql_error(m));
    }
    MYSQL_RES *r = mysql_store_result(m);
    MYSQL_ROW row = r ? mysql_fetch_row(r) : NULL;
    if (row == NULL) {
        fail_msg("%s: no row (%s)", sql, mysql_error(m));
        return buf;
    }
    snprintf(buf, len, "%s", row[0] ? row[0] : "NULL");
    mysql_free_result(r);
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
    MYSQL *m = connect_ok("app", "secret", NULL);
    char buf[128];
    assert_string_equal(scalar(m, "select 1+1", buf, sizeof(buf)), "2");
    assert_non_null(strstr(scalar(m, "select current_user()", buf, sizeof(buf)), "app@"));
    assert_string_equal(scalar(m, "select database()", buf, sizeof(buf)), "appdb");
    mysql_close(m);
    assert_int_equal(wait_forwards_gone(5000), 0);
}

static void test_transaction_rollback_and_commit(void **state)
{
    (void)state;
    MYSQL *m = connect_ok("app", "secret", NULL);
    char buf[64];
    exec_ok(m, "drop table if exists tx");
    exec_ok(m, "create table tx (i int) engine=InnoDB");
    exec_ok(m, "start transaction");
    exec_ok(m, "insert into tx select seq from seq_1_to_100");
    assert_string_equal(scalar(m, "select count(*) from tx", buf, sizeof(buf)), "100");
    exec_ok(m, "rollback");
    assert_string_equal(scalar(m, "select count(*) from tx", buf, sizeof(buf)), "0");
    exec_ok(m, "start transaction");
    exec_ok(m, "insert into tx values (7)");
    exec_ok(m, "commit");
    assert_string_equal(scalar(m, "select sum(i) from tx", buf, sizeof(buf)), "7");
    mysql_close(m);
}

static void test_prepared_statement(void **state)
{
    (void)state;
    MYSQL *m = connect_ok("app", "secret", NULL);
    MYSQL_STMT *st = mysql_stmt_init(m);
    const char *sql = "select ? + ?, concat(?, '!')";
    assert_int_equal(mysql_stmt_prepare(st, sql, strlen(sql)), 0);
    for (int i = 0; i < 20; i++) {
        long long a = i, b = i * 10;
        char s[8] = "hi";
        unsigned long slen = 2;
        MYSQL_BIND in[3];
        memset(in, 0, sizeof(in));
        in[0].buffer_type = MYSQL_TYPE_LONGLONG;
        in[0].buffer = &a;
        in[1].buffer_type = MYSQL_TYPE_LONGLONG;
        in[1].buffer = &b;
        in[2].buffer_type = MYSQL_TYPE_STRING;
        in[2].buffer = s;
        in[2].length = &slen;
        assert_int_equal(mysql_stmt_bind_param(st, in), 0);
        assert_int_equal(mysql_stmt_execute(st), 0);
        long long sum = 0;
        char out[16] = {0};
        unsigned long outlen = 0;
        MYSQL_BIND res[2];
        memset(res, 0, sizeof(res));
        res[0].buffer_type = MYSQL_TYPE_LONGLONG;
        res[0].buffer = &sum;
        res[1].buffer_type = MYSQL_TYPE_STRING;
        res[1].buffer = out;
        res[1].buffer_length = sizeof(out) - 1;
        res[1].length = &outlen;
        assert_int_equal(mysql_stmt_bind_result(st, res), 0);
        assert_int_equal(mysql_stmt_fetch(st), 0);
        assert_int_equal(sum, i * 11);
        assert_string_equal(out, "hi!");
        mysql_stmt_free_result(st);
    }
    mysql_stmt_close(st);
    mysql_close(m);
}

#define GEN_ROW "repeat(md5(seq), 32)" /* 1024 bytes per row */

static void test_large_result_streamed(void **state)
{
    (void)state;
    MYSQL *m = connect_ok("app", "secret", NULL);
    char sql[256], want[64], got[33];
    exec_ok(m, "set session group_concat_max_len = 134217728");
    snprintf(sql, sizeof(sql),
             "select md5(group_concat(" GEN_ROW " order by seq separator '')) from seq_1_to_%d",
             BULK_ROWS);
    scalar(m, sql, want, sizeof(want));

    snprintf(sql, sizeof(sql), "select " GEN_ROW " from seq_1_to_%d order by seq", BULK_ROWS);
    int64_t t0 = drv_now_ms();
    assert_int_equal(mysql_query(m, sql), 0);
    MYSQL_RES *r = mysql_use_result(m); /* rows stream in as they are fetched */
    assert_non_null(r);
    drv_md5 md;
    drv_md5_init(&md);
    size_t bytes = 0, rows = 0;
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(r)) != NULL) {
        unsigned long *len = mysql_fetch_lengths(r);
        drv_md5_update(&md, row[0], len[0]);
        bytes += len[0];
        rows++;
    }
    assert_int_equal(mysql_errno(m), 0);
    mysql_free_result(r);
    drv_md5_final(&md, got);
    int64_t ms = drv_now_ms() - t0;
    assert_int_equal(rows, BULK_ROWS);
    assert_int_equal(bytes, (size_t)BULK_ROWS * 1024);
    assert_string_equal(got, want);
    fprintf(stderr, "mysql: streamed out %zu MiB in %lld ms (%.1f MiB/s), md5 %s on both ends\n",
            bytes >> 20, (long long)ms, ms ? (double)(bytes >> 20) * 1000.0 / (double)ms : 0.0,
            got);
    mysql_close(m);
}

/* LOAD DATA LOCAL INFILE fed from memory: generated lines, hashed as they go. */
typedef struct infile {
    uint32_t next;
    char rec[1100];
    size_t rec_len, rec_off;
    drv_md5 md;
    size_t bytes;
} infile;

static int infile_init(void **ptr, const char *filename, void *userdata)
{
    (void)filename;
    *ptr = userdata;
    return 0;
}

static int infile_read(void *ptr, char *buf, unsigned int len)
{
    infile *f = ptr;
    unsigned int put = 0;
    while (put < len) {
        if (f->rec_off == f->rec_len) {
            if (f->next == BULK_ROWS) {
                break;
            }
            char line[1024];
            drv_line(f->next, line);
            drv_md5_update(&f->md, line, 1023);
            f->rec_len = (size_t)snprintf(f->rec, sizeof(f->rec), "%u\t%s\n", f->next, line);
            f->rec_off = 0;
            f->next++;
        }
        size_t n = f->rec_len - f->rec_off;
        if (n > len - put) {
            n = len - put;
        }
        memcpy(buf + put, f->rec + f->rec_off, n);
        f->rec_off += n;
        put += (unsigned int)n;
    }
    f->bytes += put;
    return (int)put;
}

static void infile_end(void *ptr)
{
    (void)ptr;
}

static int infile_error(void *ptr, char *msg, unsigned int len)
{
    (void)ptr;
    snprintf(msg, len, "infile generator failed");
    return 2000;
}

static void test_large_load_data_local(void **state)
{
    (void)state;
    MYSQL *m = mysql_init(NULL);
    unsigned int one = 1;
    mysql_options(m, MYSQL_OPT_LOCAL_INFILE, &one);
    int rc = csql_mysql_connect(g_env.d, m, "p:r:my", "app", "secret", "appdb", 0, NULL);
    assert_int_equal(rc, 0);
    exec_ok(m, "drop table if exists bulk");
    exec_ok(m, "create table bulk (id int primary key, line text) engine=InnoDB");
    infile f;
    memset(&f, 0, sizeof(f));
    drv_md5_init(&f.md);
    mysql_set_local_infile_handler(m, infile_init, infile_read, infile_end, infile_error, &f);
    int64_t t0 = drv_now_ms();
    if (mysql_query(m, "load data local infile 'generated' into table bulk "
                       "fields terminated by '\\t' lines terminated by '\\n' (id, line)") != 0) {
        fail_msg("load data: %s", mysql_error(m));
    }
    int64_t ms = drv_now_ms() - t0;
    assert_int_equal(mysql_affected_rows(m), BULK_ROWS);
    char want[33], got[64];
    drv_md5_final(&f.md, want);
    exec_ok(m, "set session group_concat_max_len = 134217728");
    scalar(m, "select md5(group_concat(line order by id separator '')) from bulk", got, sizeof(got));
    assert_string_equal(got, want);
    fprintf(stderr, "mysql: LOAD DATA LOCAL %zu MiB in %lld ms (%.1f MiB/s), md5 %s on both ends\n",
            f.bytes >> 20, (long long)ms,
            ms ? (double)(f.bytes >> 20) * 1000.0 / (double)ms : 0.0, got);
    exec_ok(m, "drop table bulk");
    mysql_close(m);
}

typedef struct worker {
    int ok;
    int failed;
    char last_error[256];
} worker;

static void *connect_loop(void *arg)
{
    worker *w = arg;
    mysql_thread_init();
    for (int i = 0; i < 50; i++) {
        MYSQL *m = mysql_init(NULL);
        int rc = csql_mysql_connect(g_env.d, m, "p:r:my", "app", "secret", "appdb", 0, NULL);
        if (rc == 0 && mysql_query(m, "select connection_id()") == 0) {
            mysql_free_result(mysql_store_result(m));
            w->ok++;
        } else {
            snprintf(w->last_error, sizeof(w->last_error), "%s",
                     rc < 0 ? csql_error_last()->message : mysql_error(m));
            w->failed++;
        }
        mysql_close(m);
    }
    mysql_thread_end();
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
    assert_true(drv_open_fds() <= fds_before + 1);
    fprintf(stderr, "mysql: 16 threads x 50 connections: 800 ok in %lld ms (%.1f connections/s)\n",
            (long long)ms, ms ? 800.0 * 1000.0 / (double)ms : 0.0);
}

static void test_iam_authn_user(void **state)
{
    (void)state;
    /* A password-less IAM database user, trusted only from the emulator's address. */
    char out[512];
    int rc = csqlt_sh(out, sizeof(out),
                      "mariadb --no-defaults --socket='%s' -uroot -e \"create or replace user "
                      "'static-user'@'%s'; grant all on appdb.* to 'static-user'@'%s'\" 2>&1",
                      g_my.socket, g_src, g_src);
    if (rc != 0) {
        fail_msg("create IAM user: %s", out);
    }

    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.iam_authn = 1;
    MYSQL *m = connect_ok(DRV_IAM_PRINCIPAL, NULL, &o); /* user = the part before '@' */
    char buf[128], want[128];
    snprintf(want, sizeof(want), "static-user@%s", g_src);
    assert_string_equal(scalar(m, "select current_user()", buf, sizeof(buf)), want);
    mysql_close(m);

    m = mysql_init(NULL);
    assert_int_equal(csql_mysql_connect(g_env.d, m, "p:r:my", NULL, NULL, "appdb", 0, &o),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "IAM principal"));
    mysql_close(m);
}

static void test_wrong_password_is_the_database_error(void **state)
{
    (void)state;
    MYSQL *m = mysql_init(NULL);
    int rc = csql_mysql_connect(g_env.d, m, "p:r:my", "app", "wrong", "appdb", 0, NULL);
    assert_int_equal(rc, 1045); /* ER_ACCESS_DENIED_ERROR */
    assert_int_equal(mysql_errno(m), 1045);
    assert_non_null(strstr(mysql_error(m), "Access denied for user 'app'"));
    mysql_close(m);
}

static void test_instance_down_is_a_csql_error(void **state)
{
    (void)state;
    assert_int_equal(drv_refuse_tcp(&g_env, "p:r:down", 1), 200);
    MYSQL *m = mysql_init(NULL);
    int rc = csql_mysql_connect(g_env.d, m, "p:r:down", "app", "secret", "appdb", 0, NULL);
    assert_int_equal(rc, CSQL_ERR_CONNECT);
    assert_non_null(strstr(csql_error_last()->message, g_env.ip[1]));
    assert_int_equal(mysql_errno(m), 0); /* the driver was never called */
    mysql_close(m);
    assert_int_equal(drv_refuse_tcp(&g_env, "p:r:down", 0), 200);

    m = mysql_init(NULL);
    rc = csql_mysql_connect(g_env.d, m, "p:r:nope", "app", "secret", "appdb", 0, NULL);
    assert_int_equal(rc, CSQL_ERR_NOT_FOUND);
    assert_int_equal(csql_error_last()->http_status, 404);
    mysql_close(m);
}

static void test_wrong_engines_refused(void **state)
{
    (void)state;
    MYSQL *m = mysql_init(NULL);
    /* SQL Server with IAM authn: refused (by the refresh, or by the helper). */
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.iam_authn = 1;
    assert_int_equal(csql_mysql_connect(g_env.d, m, "p:r:ss", DRV_IAM_PRINCIPAL, NULL, NULL, 0, &o),
                     CSQL_ERR_IAM_UNSUPPORTED);
    fprintf(stderr, "sql server + IAM: %s\n", csql_error_last()->message);
    /* SQL Server or PostgreSQL without IAM: not a MySQL instance. */
    assert_int_equal(csql_mysql_connect(g_env.d, m, "p:r:ss", "sa", "x", NULL, 0, NULL),
                     CSQL_ERR_UNSUPPORTED_INSTANCE);
    assert_int_equal(csql_mysql_connect(g_env.d, m, "p:r:pg", "app", "x", NULL, 0, NULL),
                     CSQL_ERR_UNSUPPORTED_INSTANCE);
    assert_non_null(strstr(csql_error_last()->message, "POSTGRES_15"));
    assert_int_equal(csql_mysql_connect(NULL, m, "p:r:my", "app", "x", NULL, 0, NULL),
                     CSQL_ERR_INVALID_ARGUMENT);
    mysql_close(m);
    assert_int_equal(wait_forwards_gone(5000), 0);
}

/* examples/mysql_query, as a user would run it against the emulator. */
static void test_example_program(void **state)
{
    (void)state;
    if (MYSQL_QUERY_EXE[0] == '\0') {
        skip();
    }
    char out[1024];
    int rc = csqlt_sh(out, sizeof(out),
                      "CSQL_API_ENDPOINT='%s' CSQL_TOKEN='%s' timeout 60 '%s' p:r:my app secret "
                      "appdb 'select 6*7' 2>&1",
                      g_env.em.url, DRV_TOKEN, MYSQL_QUERY_EXE);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "42\n");
    rc = csqlt_sh(out, sizeof(out),
                  "CSQL_API_ENDPOINT='%s' CSQL_TOKEN='%s' timeout 60 '%s' p:r:my app nope appdb 2>&1",
                  g_env.em.url, DRV_TOKEN, MYSQL_QUERY_EXE);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "Access denied"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_transaction_rollback_and_commit),
        cmocka_unit_test(test_prepared_statement),
        cmocka_unit_test(test_large_result_streamed),
        cmocka_unit_test(test_large_load_data_local),
        cmocka_unit_test(test_sixteen_threads_fifty_connections),
        cmocka_unit_test(test_iam_authn_user),
        cmocka_unit_test(test_wrong_password_is_the_database_error),
        cmocka_unit_test(test_instance_down_is_a_csql_error),
        cmocka_unit_test(test_wrong_engines_refused),
        cmocka_unit_test(test_example_program),
    };
    mysql_library_init(0, NULL, NULL);
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    mysql_library_end();
    return rc;
}
