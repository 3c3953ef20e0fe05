/*
 * The loop registry (src/loop.c) with several loops per key: numbered loops
 * are distinct threads, a forced reap stops the extra loops before loop 0,
 * nothing can start a new loop for a key while it is being reaped (a dial
 * finishing on a loop not stopped yet), a loop thread never joins another
 * loop (dropping the last reference there leaves it idle), and posted tasks
 * run on their loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "csql/errors.h"
#include "loop.h"

static int g_key;

static int teardown(void **state)
{
    (void)state;
    csql__loop_reap(&g_key, true);
    assert_int_equal(csql__loop_count(), 0);
    return 0;
}

/* ---- a member whose close (run while its loop is being reaped) tries to acquire ---- */

typedef struct probe {
    csql__loop *loop;
    csql__loop_member member;
    int acquire_rc;       /* what csql__loop_acquire returned during the reap */
    int closed_seq;       /* order in which probes were closed */
} probe;

static atomic_int g_close_seq;

static void probe_close(void *arg)
{
    probe *p = arg;
    p->closed_seq = atomic_fetch_add(&g_close_seq, 1) + 1;
    csql__loop *again = NULL;
    p->acquire_rc = csql__loop_acquire(&g_key, &again);
    if (again != NULL) {
        csql__loop_release(again);
    }
    csql__loop_member_remove(p->loop, &p->member);
}

static void probe_add(void *arg)
{
    probe *p = arg;
    p->member.close = probe_close;
    p->member.arg = p;
    csql__loop_member_add(p->loop, &p->member);
}

static void test_reap_order_and_no_new_loop_meanwhile(void **state)
{
    (void)state;
    csql__loop *l0, *l1, *l2;
    assert_int_equal(csql__loop_acquire_nth(&g_key, 0, &l0), 0);
    assert_int_equal(csql__loop_acquire_nth(&g_key, 1, &l1), 0);
    assert_int_equal(csql__loop_acquire_nth(&g_key, 2, &l2), 0);
    assert_true(l0 != l1 && l1 != l2 && l0 != l2);
    assert_int_equal(csql__loop_count(), 3);
    csql__loop *again;
    assert_int_equal(csql__loop_acquire_nth(&g_key, 1, &again), 0);
    assert_ptr_equal(again, l1); /* same number, same loop */
    csql__loop_release(again);

    atomic_store(&g_close_seq, 0);
    probe p[3] = {{.loop = l0}, {.loop = l1}, {.loop = l2}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(csql__loop_call(p[i].loop, probe_add, &p[i]), 0);
    }
    csql__loop_reap(&g_key, true); /* what csql_dialer_free does */
    /* Loops 2, 1, then 0; during the reap the key refuses new loops. */
    assert_int_equal(p[2].closed_seq, 1);
    assert_int_equal(p[1].closed_seq, 2);
    assert_int_equal(p[0].closed_seq, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(p[i].acquire_rc, CSQL_ERR_CLOSED);
    }
    assert_int_equal(csql__loop_count(), 0);
    /* The references the test still holds end on halted loops: freed by the last release. */
    assert_int_equal(csql__loop_call(l1, probe_add, &p[1]), CSQL_ERR_CLOSED);
    csql__loop_release(l0);
    csql__loop_release(l1);
    csql__loop_release(l2);
    /* Once reaped, the key may have loops again (a new dialer at the same address). */
    assert_int_equal(csql__loop_acquire(&g_key, &again), 0);
    csql__loop_release(again);
}

/* ---- a loop thread drops the last reference of another loop ---- */

typedef struct drop_call {
    csql__loop *other;
} drop_call;

static void drop_other(void *arg)
{
    drop_call *d = arg;
    csql__loop_release(d->other); /* on loop 0's thread: must not join loop 1 */
}

static void test_loop_thread_never_joins_another(void **state)
{
    (void)state;
    csql__loop *l0, *l1;
    assert_int_equal(csql__loop_acquire_nth(&g_key, 0, &l0), 0);
    assert_int_equal(csql__loop_acquire_nth(&g_key, 1, &l1), 0);
    drop_call d = {l1};
    assert_int_equal(csql__loop_call(l0, drop_other, &d), 0);
    /* Loop 1 has no reference left but still runs, idle, until a reap. */
    assert_int_equal(csql__loop_count(), 2);
    csql__loop_release(l0); /* here, on the test's thread: loop 0 is stopped and joined */
    assert_int_equal(csql__loop_count(), 1);
    csql__loop_reap(&g_key, false);
    assert_int_equal(csql__loop_count(), 0);
}

/* ---- posted tasks ---- */

typedef struct post_probe {
    csql__loop *loop;
    csql__loop_task task;
    atomic_bool ran_on_loop;
    atomic_int runs;
} post_probe;

static void post_run(void *arg)
{
    post_probe *p = arg;
    atomic_store(&p->ran_on_loop, csql__loop_in_thread(p->loop));
    atomic_fetch_add(&p->runs, 1);
}

static void test_post_runs_once_on_the_loop(void **state)
{
    (void)state;
    csql__loop *l1;
    assert_int_equal(csql__loop_acquire_nth(&g_key, 1, &l1), 0);
    post_probe p = {.loop = l1};
    p.task.fn = post_run;
    p.task.arg = &p;
    assert_int_equal(csql__loop_post(l1, &p.task), 0);
    for (int i = 0; i < 500 && atomic_load(&p.runs) == 0; i++) {
        usleep(2000);
    }
    assert_int_equal(atomic_load(&p.runs), 1);
    assert_true(atomic_load(&p.ran_on_loop));
    csql__loop_release(l1);
    /* A halted loop refuses posts (the task would never run). */
    csql__loop *l2;
    assert_int_equal(csql__loop_acquire_nth(&g_key, 2, &l2), 0);
    csql__loop_reap(&g_key, true);
    p.loop = l2;
    assert_int_equal(csql__loop_post(l2, &p.task), CSQL_ERR_CLOSED);
    csql__loop_release(l2);
    assert_int_equal(atomic_load(&p.runs), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reap_order_and_no_new_loop_meanwhile, teardown),
        cmocka_unit_test_teardown(test_loop_thread_never_joins_another, teardown),
        cmocka_unit_test_teardown(test_post_runs_once_on_the_loop, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
