/*
 * The driver helpers' non-blocking connects (csql_pq_connect_async_start,
 * csql_mysql_connect_async_start) against csql-emulator in front of a real
 * PostgreSQL and MariaDB, driven by one epoll loop (async_loop.c): many at
 * once ending in working sessions, the database's refusal on its own channel,
 * csql's failures on csql's, and cancellation at every step (run it under
 * ASan: nothing leaks, every fd comes back).
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

#include "async_loop.h"
#include "csql/async.h"
#include "csql/mysql.h"
#include "csql/pq.h"
#include "driver_common.h"

#define N_PQ 20
#define N_MY 10

static drv_env g_env;
static csqlt_pg g_pg;
static csqlt_my g_my;

static int group_setup(void **state)
{
    (void)state;
    if (csqlt_pg_start(&g_pg, NULL) != 0) {
        return -1;
    }
    if (csqlt_my_start(&g_my, NULL) != 0) {
        csqlt_pg_stop(&g_pg);
        return -1;
    }
    char pg[256], my[256];
    snprintf(pg, sizeof(pg), "p:r:pg?version=POSTGRES_15&public-ip=%%IP0%%&backend=127.0.0.1:%d",
             g_pg.port);
    snprintf(my, sizeof(my), "p:r:my?version=MYSQL_8_0&public-ip=%%IP1%%&backend=127.0.0.1:%d",
             g_my.port);
    const char *specs[] = {pg, my, NULL};
    if (drv_start(&g_env, specs, NULL) != 0) {
        csqlt_my_stop(&g_my);
        csqlt_pg_stop(&g_pg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    drv_stop(&g_env);
    csqlt_my_stop(&g_my);
    csqlt_pg_stop(&g_pg);
    return 0;
}

/* ---- the ops ---- */

static int pq_step(void *h, void **out)
{
    PGconn *pg = NULL;
    int rc = csql_pq_async_continue(h, &pg);
    *out = pg;
    return rc;
}
static int pq_fd(const void *h)
{
    return csql_pq_async_fd(h);
}
static int pq_events(const void *h)
{
    return csql_pq_async_events(h);
}
static int pq_timeout(const void *h)
{
    return csql_pq_async_timeout_ms(h);
}
static const al_ops pq_ops = {pq_step, pq_fd, pq_events, pq_timeout};

static int my_step(void *h, void **out)
{
    *out = NULL;
    return csql_mysql_async_continue(h);
}
static int my_fd(const void *h)
{
    return csql_mysql_async_fd(h);
}
static int my_events(const void *h)
{
    return csql_mysql_async_events(h);
}
static int my_timeout(const void *h)
{
    return csql_mysql_async_timeout_ms(h);
}
static const al_ops my_ops = {my_step, my_fd, my_events, my_timeout};

/* ---- PostgreSQL ---- */

static void test_pq_many_connects(void **state)
{
    (void)state;
    al_loop L;
    al_init(&L, false);
    static al_op ops[N_PQ];
    static csql_pq_async *hs[N_PQ];
    int64_t t0 = al_now_us();
    for (int i = 0; i < N_PQ; i++) {
        assert_int_equal(csql_pq_connect_async_start(g_env.d, "p:r:pg",
                                                     "user=postgres password=secret "
                                                     "dbname=postgres",
                                                     NULL, &hs[i]),
                         0);
        al_add(&L, &ops[i], &pq_ops, hs[i]);
    }
    assert_int_equal(al_run(&L, al_now_us() / 1000 + 30000), 0);
    int64_t took = (al_now_us() - t0) / 1000;
    for (int i = 0; i < N_PQ; i++) {
        if (ops[i].rc != 0) {
            fail_msg("connect %d: %s", i, ops[i].msg);
        }
        PGconn *pg = ops[i].out;
        if (PQstatus(pg) != CONNECTION_OK) {
            fail_msg("connect %d: %s", i, PQerrorMessage(pg));
        }
        assert_true(ops[i].fds_seen >= 2); /* csql's socket, then libpq's */
        PGresult *r = PQexec(pg, "select 20 + 22");
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        assert_string_equal(PQgetvalue(r, 0, 0), "42");
        PQclear(r);
        PQfinish(pg);
        csql_pq_async_free(hs[i]);
    }
    print_message("async-figure: %d libpq connects through csql on one loop: %lld ms, longest "
                  "continue %lld us\n",
                  N_PQ, (long long)took, (long long)L.max_step_us);
    al_dispose(&L);
}

static void test_pq_failures_on_their_channels(void **state)
{
    (void)state;
    csql_pq_async *a = (csql_pq_async *)1;
    /* Refused at start: csql picks the address. */
    assert_int_equal(csql_pq_connect_async_start(g_env.d, "p:r:pg", "host=elsewhere", NULL, &a),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_null(a);
    assert_non_null(strstr(csql_error_last()->message, "host"));
    al_loop L;
    al_init(&L, false);
    al_op op;
    /* The database refuses: a PGconn in CONNECTION_BAD with PostgreSQL's message. */
    assert_int_equal(csql_pq_connect_async_start(g_env.d, "p:r:pg",
                                                 "user=postgres password=wrong dbname=postgres",
                                                 NULL, &a),
                     0);
    al_add(&L, &op, &pq_ops, a);
    al_run(&L, al_now_us() / 1000 + 30000);
    assert_int_equal(op.rc, 0);
    assert_int_equal(PQstatus(op.out), CONNECTION_BAD);
    assert_non_null(strstr(PQerrorMessage(op.out), "password authentication failed"));
    PQfinish(op.out);
    PGconn *none = (PGconn *)1;
    assert_int_equal(csql_pq_async_continue(a, &none), CSQL_ERR_INVALID_ARGUMENT);
    assert_null(none);
    csql_pq_async_free(a);
    /* csql cannot reach it: a csql error, no PGconn. */
    assert_int_equal(csql_pq_connect_async_start(g_env.d, "p:r:nosuch", "user=postgres", NULL,
                                                 &a),
                     0);
    al_add(&L, &op, &pq_ops, a);
    al_run(&L, al_now_us() / 1000 + 30000);
    assert_int_equal(op.rc, CSQL_ERR_NOT_FOUND);
    assert_null(op.out);
    csql_pq_async_free(a);
    /* A MySQL instance is not PostgreSQL. */
    assert_int_equal(csql_pq_connect_async_start(g_env.d, "p:r:my", "user=postgres", NULL, &a), 0);
    al_add(&L, &op, &pq_ops, a);
    al_run(&L, al_now_us() / 1000 + 30000);
    assert_int_equal(op.rc, CSQL_ERR_UNSUPPORTED_INSTANCE);
    csql_pq_async_free(a);
    al_dispose(&L);
}

/* ---- MariaDB ---- */

static void test_mysql_many_connects(void **state)
{
    (void)state;
    al_loop L;
    al_init(&L, false);
    static al_op ops[N_MY];
    static csql_mysql_async *hs[N_MY];
    static MYSQL *ms[N_MY];
    int64_t t0 = al_now_us();
    for (int i = 0; i < N_MY; i++) {
        ms[i] = mysql_init(NULL);
        assert_non_null(ms[i]);
        assert_int_equal(csql_mysql_connect_async_start(g_env.d, ms[i], "p:r:my", "app", "secret",
                                                        "appdb", 0, NULL, &hs[i]),
                         0);
        al_add(&L, &ops[i], &my_ops, hs[i]);
    }
    assert_int_equal(al_run(&L, al_now_us() / 1000 + 30000), 0);
    int64_t took = (al_now_us() - t0) / 1000;
    for (int i = 0; i < N_MY; i++) {
        if (ops[i].rc != 0) {
            fail_msg("connect %d: %d %s %s", i, ops[i].rc, ops[i].msg, mysql_error(ms[i]));
        }
        assert_int_equal(mysql_query(ms[i], "SELECT 6*7"), 0);
        MYSQL_RES *r = mysql_store_result(ms[i]);
        MYSQL_ROW row = mysql_fetch_row(r);
        assert_string_equal(row[0], "42");
        mysql_free_result(r);
        csql_mysql_async_free(hs[i]);
        mysql_close(ms[i]);
    }
    print_message("async-figure: %d MariaDB connects through csql on one loop: %lld ms\n", N_MY,
                  (long long)took);
    al_dispose(&L);
}

static void test_mysql_wrong_password_is_the_database_error(void **state)
{
    (void)state;
    al_loop L;
    al_init(&L, false);
    al_op op;
    MYSQL *m = mysql_init(NULL);
    csql_mysql_async *a;
    assert_int_equal(csql_mysql_connect_async_start(g_env.d, m, "p:r:my", "app", "wrong", "appdb",
                                                    0, NULL, &a),
                     0);
    al_add(&L, &op, &my_ops, a);
    al_run(&L, al_now_us() / 1000 + 30000);
    assert_int_equal(op.rc, 1045);
    assert_non_null(strstr(mysql_error(m), "Access denied"));
    csql_mysql_async_free(a);
    mysql_close(m);
    al_dispose(&L);
}

/* ---- cancellation at every step ---- */

static void test_cancel_at_every_step(void **state)
{
    (void)state;
    /* Warm the certificates so that each run steps through the same states. */
    assert_int_equal(csql_dialer_warmup(g_env.d, "p:r:pg", NULL, 1), 0);
    assert_int_equal(csql_dialer_warmup(g_env.d, "p:r:my", NULL, 1), 0);
    usleep(200000); /* endpoints and forwards of earlier tests settle */
    /* Sockets: csql's own event loop may start or idle meanwhile (an epoll fd and an eventfd). */
    int fds_before = al_open_sockets();
    int cancelled_pq = 0, cancelled_my = 0;
    for (int k = 1; k <= 12; k++) {
        al_loop L;
        al_init(&L, false);
        al_op op;
        csql_pq_async *a;
        assert_int_equal(csql_pq_connect_async_start(g_env.d, "p:r:pg",
                                                     "user=postgres password=secret "
                                                     "dbname=postgres",
                                                     NULL, &a),
                         0);
        al_add(&L, &op, &pq_ops, a);
        /* Run until k continues have happened, then cancel. */
        for (int guard = 0; guard < 1000 && !op.done && op.steps < k; guard++) {
            al_run_for(&L, 1);
        }
        if (!op.done) {
            cancelled_pq++;
        } else if (op.rc == 0) {
            PQfinish(op.out);
        }
        al_remove(&L, &op);
        csql_pq_async_free(a);

        MYSQL *m = mysql_init(NULL);
        csql_mysql_async *b;
        assert_int_equal(csql_mysql_connect_async_start(g_env.d, m, "p:r:my", "app", "secret",
                                                        "appdb", 0, NULL, &b),
                         0);
        al_add(&L, &op, &my_ops, b);
        for (int guard = 0; guard < 1000 && !op.done && op.steps < k; guard++) {
            al_run_for(&L, 1);
        }
        if (!op.done) {
            cancelled_my++;
        }
        al_remove(&L, &op);
        csql_mysql_async_free(b);
        mysql_close(m);
        al_dispose(&L);
    }
    print_message("async-figure: cancelled %d libpq and %d MariaDB connects at successive "
                  "steps\n",
                  cancelled_pq, cancelled_my);
    assert_true(cancelled_pq >= 4);
    assert_true(cancelled_my >= 3);
    /* Forwarded connections end on the csql loop shortly after their driver side closed. */
    int fds = al_open_sockets();
    for (int i = 0; i < 100 && fds > fds_before; i++) {
        usleep(20000);
        fds = al_open_sockets();
    }
    assert_int_equal(fds, fds_before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pq_many_connects),
        cmocka_unit_test(test_pq_failures_on_their_channels),
        cmocka_unit_test(test_mysql_many_connects),
        cmocka_unit_test(test_mysql_wrong_password_is_the_database_error),
        cmocka_unit_test(test_cancel_at_every_step),
    };
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    mysql_library_end();
    return rc;
}
