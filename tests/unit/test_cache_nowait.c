/*
 * Non-blocking gets from the certificate cache (cache_nowait.c) against a
 * fake refresh: a waiter is armed, woken through an eventfd when the
 * refresh completes, fails fast on a saved error, is woken by close, stays
 * silent once cancelled, and LAZY never refreshes on the caller's thread
 * (the refresh is "kicked" to another thread).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "error.h"
#include "util/clock.h"

/* ---- a fake refresh ---- */

typedef struct fake {
    atomic_int calls;
    atomic_int fail_code;     /* 0: succeed */
    atomic_llong lifetime_s;
    atomic_int delay_ms;
} fake;

static int fake_refresh(void *arg, const csql__instance_name *name, bool iam, int64_t deadline_ms,
                        const atomic_bool *cancel, csql__certset **out)
{
    (void)iam;
    fake *f = arg;
    atomic_fetch_add(&f->calls, 1);
    for (int waited = 0; waited < atomic_load(&f->delay_ms); waited += 5) {
        if (atomic_load(cancel) || csql__mono_ms() >= deadline_ms) {
            return csql__error(CSQL_ERR_CLOSED, "refresh of %s cancelled", name->full);
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    int code = atomic_load(&f->fail_code);
    if (code != 0) {
        return csql__error_http(code, 503, "UNAVAILABLE", "fake refresh of %s failed: boom",
                                name->full);
    }
    csql__certset *cs = calloc(1, sizeof(*cs));
    if (cs == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "fake: out of memory");
    }
    atomic_init(&cs->refs, 1);
    cs->expires_at = csql__wall_s() + atomic_load(&f->lifetime_s);
    *out = cs;
    return 0;
}

static fake F;

static csql__cache *mkcache(csql_refresh_strategy s, int64_t rl_interval_ms)
{
    memset(&F, 0, sizeof(F));
    atomic_store(&F.lifetime_s, 3600);
    csql__cache_opts o = {0};
    o.strategy = s;
    o.refresh = fake_refresh;
    o.refresh_arg = &F;
    o.refresh_timeout_ms = 5000;
    o.rl_interval_ms = rl_interval_ms;
    o.max_sleep_ms = 20;
    csql__cache *c = NULL;
    assert_int_equal(csql__cache_new(&o, &c), 0);
    return c;
}

static csql__cache_entry *entry(csql__cache *c, const char *inst)
{
    csql__instance_name n;
    memset(&n, 0, sizeof(n));
    snprintf(n.project, sizeof(n.project), "proj");
    snprintf(n.region, sizeof(n.region), "reg");
    snprintf(n.instance, sizeof(n.instance), "%s", inst);
    snprintf(n.full, sizeof(n.full), "proj:reg:%s", inst);
    csql__cache_entry *e = NULL;
    assert_int_equal(csql__cache_entry_get(c, &n, false, &e), 0);
    return e;
}

/* A waiter whose notify writes an eventfd, as csql_dial_async's does. */
typedef struct ewaiter {
    csql__cache_waiter w;
    int fd;
    atomic_int notified;
} ewaiter;

static void on_notify(void *arg)
{
    ewaiter *x = arg;
    atomic_fetch_add(&x->notified, 1);
    uint64_t one = 1;
    (void)!write(x->fd, &one, sizeof(one));
}

static void ew_init(ewaiter *x)
{
    memset(x, 0, sizeof(*x));
    x->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(x->fd >= 0);
    x->w.notify = on_notify;
    x->w.arg = x;
}

/* Wait for the eventfd: 1 signalled (and drained), 0 not within ms. */
static int ew_wait(ewaiter *x, int ms)
{
    struct pollfd p = {.fd = x->fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1) {
        return 0;
    }
    uint64_t v;
    (void)!read(x->fd, &v, sizeof(v));
    return 1;
}

static void ew_dispose(csql__cache_entry *e, ewaiter *x)
{
    csql__cache_waiter_cancel(e, &x->w);
    close(x->fd);
}

/* get_nowait until it stops saying WOULD_BLOCK, waiting on the eventfd between tries. */
static int get_until_done(csql__cache_entry *e, ewaiter *x, csql__certset **cs, int ms)
{
    int64_t deadline = csql__mono_ms() + ms;
    for (;;) {
        bool kick = false;
        int rc = csql__cache_get_nowait(e, &x->w, cs, &kick);
        assert_false(kick);
        if (rc != CSQL_ERR_WOULD_BLOCK || csql__mono_ms() > deadline) {
            return rc;
        }
        ew_wait(x, (int)csql__ms_left(deadline) + 1);
    }
}

/* ---------------- BACKGROUND ---------------- */

static void test_first_get_waits_and_is_woken(void **state)
{
    (void)state;
    csql__cache *c = mkcache(CSQL_REFRESH_BACKGROUND, 30000);
    atomic_store(&F.delay_ms, 50);
    csql__cache_entry *e = entry(c, "a");
    ewaiter x;
    ew_init(&x);
    csql__certset *cs = NULL;
    bool kick = true;
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    assert_false(kick);
    assert_null(cs);
    assert_int_equal(ew_wait(&x, 2000), 1);
    assert_int_equal(atomic_load(&x.notified), 1);
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), 0);
    assert_non_null(cs);
    assert_int_equal(atomic_load(&F.calls), 1);
    /* A valid certset: the next get answers at once and arms nothing. */
    csql__certset *again = NULL;
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &again, &kick), 0);
    assert_ptr_equal(again, cs);
    csql__certset_unref(again);
    csql__certset_unref(cs);
    ew_dispose(e, &x);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

static void test_many_waiters_one_refresh(void **state)
{
    (void)state;
    enum { N = 100 };
    csql__cache *c = mkcache(CSQL_REFRESH_BACKGROUND, 30000);
    atomic_store(&F.delay_ms, 100);
    csql__cache_entry *e = entry(c, "many");
    static ewaiter xs[N];
    for (int i = 0; i < N; i++) {
        ew_init(&xs[i]);
        csql__certset *cs = NULL;
        bool kick;
        assert_int_equal(csql__cache_get_nowait(e, &xs[i].w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    }
    for (int i = 0; i < N; i++) {
        csql__certset *cs = NULL;
        assert_int_equal(get_until_done(e, &xs[i], &cs, 3000), 0);
        csql__certset_unref(cs);
        ew_dispose(e, &xs[i]);
    }
    assert_int_equal(atomic_load(&F.calls), 1);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

static void test_failure_is_raised_then_fails_fast(void **state)
{
    (void)state;
    csql__cache *c = mkcache(CSQL_REFRESH_BACKGROUND, 60000);
    atomic_store(&F.fail_code, CSQL_ERR_API);
    csql__cache_entry *e = entry(c, "bad");
    ewaiter x;
    ew_init(&x);
    csql__certset *cs = NULL;
    csql_error_clear();
    assert_int_equal(get_until_done(e, &x, &cs, 3000), CSQL_ERR_API);
    assert_non_null(strstr(csql_error_last()->message, "boom"));
    assert_int_equal(csql_error_last()->http_status, 503);
    /* Burst 2: a second failure uses the last token; then a new waiter fails at once. */
    ewaiter y;
    ew_init(&y);
    assert_int_equal(get_until_done(e, &y, &cs, 3000), CSQL_ERR_API);
    ewaiter z;
    ew_init(&z);
    bool kick;
    int64_t t0 = csql__mono_ms();
    assert_int_equal(csql__cache_get_nowait(e, &z.w, &cs, &kick), CSQL_ERR_API);
    assert_true(csql__mono_ms() - t0 < 100);
    assert_false(z.w.linked);
    assert_int_equal(atomic_load(&F.calls), 2);
    ew_dispose(e, &x);
    ew_dispose(e, &y);
    ew_dispose(e, &z);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

static void test_cancelled_waiter_is_not_notified(void **state)
{
    (void)state;
    csql__cache *c = mkcache(CSQL_REFRESH_BACKGROUND, 30000);
    atomic_store(&F.delay_ms, 50);
    csql__cache_entry *e = entry(c, "cancel");
    ewaiter x, y;
    ew_init(&x);
    ew_init(&y);
    csql__certset *cs = NULL;
    bool kick;
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    assert_int_equal(csql__cache_get_nowait(e, &y.w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    csql__cache_waiter_cancel(e, &x.w);
    csql__cache_waiter_cancel(e, &x.w); /* twice is harmless */
    assert_int_equal(ew_wait(&y, 2000), 1);
    assert_int_equal(atomic_load(&x.notified), 0);
    assert_int_equal(ew_wait(&x, 50), 0);
    ew_dispose(e, &x);
    ew_dispose(e, &y);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

static void test_close_wakes_waiters(void **state)
{
    (void)state;
    csql__cache *c = mkcache(CSQL_REFRESH_BACKGROUND, 30000);
    atomic_store(&F.delay_ms, 5000);
    csql__cache_entry *e = entry(c, "closing");
    ewaiter x;
    ew_init(&x);
    csql__certset *cs = NULL;
    bool kick;
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    int64_t t0 = csql__mono_ms();
    csql__cache_close(c);
    assert_true(csql__mono_ms() - t0 < 1000); /* the fake gives up on cancel */
    assert_int_equal(ew_wait(&x, 100), 1);
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_CLOSED);
    assert_non_null(strstr(csql_error_last()->message, "proj:reg:closing"));
    csql__cache_free(c);
    /* After the cache is gone: cancelling and getting are safe, getting says CLOSED. */
    csql__cache_waiter_cancel(e, &x.w);
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_CLOSED);
    assert_int_equal(csql__cache_timeout_error(e, 10), CSQL_ERR_CLOSED);
    ew_dispose(e, &x);
    csql__cache_entry_unref(e);
}

static void test_timeout_error_names_instance(void **state)
{
    (void)state;
    csql__cache *c = mkcache(CSQL_REFRESH_BACKGROUND, 30000);
    csql__cache_entry *e = entry(c, "slowpoke");
    assert_int_equal(csql__cache_timeout_error(e, 1234), CSQL_ERR_TIMEOUT);
    assert_non_null(strstr(csql_error_last()->message, "1234 ms"));
    assert_non_null(strstr(csql_error_last()->message, "proj:reg:slowpoke"));
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

/* ---------------- LAZY ---------------- */

typedef struct kick_arg {
    csql__cache_entry *e;
} kick_arg;

static void *run_kick(void *arg)
{
    kick_arg *k = arg;
    csql__cache_lazy_refresh(k->e, csql__mono_ms() + 5000);
    return NULL;
}

static void test_lazy_kicks_instead_of_refreshing(void **state)
{
    (void)state;
    csql__cache *c = mkcache(CSQL_REFRESH_LAZY, 30000);
    atomic_store(&F.delay_ms, 50);
    csql__cache_entry *e = entry(c, "lazy");
    ewaiter x, y;
    ew_init(&x);
    ew_init(&y);
    csql__certset *cs = NULL;
    bool kick = false;
    int64_t t0 = csql__mono_ms();
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    assert_true(kick);
    assert_int_equal(atomic_load(&F.calls), 0); /* nothing ran on this thread */
    assert_true(csql__mono_ms() - t0 < 40);
    /* A second dial joins the same refresh: no second kick. */
    assert_int_equal(csql__cache_get_nowait(e, &y.w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    assert_false(kick);
    pthread_t t;
    kick_arg k = {.e = e};
    assert_int_equal(pthread_create(&t, NULL, run_kick, &k), 0);
    assert_int_equal(ew_wait(&x, 2000), 1);
    assert_int_equal(ew_wait(&y, 2000), 1);
    pthread_join(t, NULL);
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), 0);
    assert_false(kick);
    csql__certset_unref(cs);
    assert_int_equal(csql__cache_get_nowait(e, &y.w, &cs, &kick), 0);
    csql__certset_unref(cs);
    assert_int_equal(atomic_load(&F.calls), 1);
    ew_dispose(e, &x);
    ew_dispose(e, &y);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

static void test_lazy_near_expiry_answers_now_and_kicks(void **state)
{
    (void)state;
    csql__cache *c = mkcache(CSQL_REFRESH_LAZY, 1);
    atomic_store(&F.lifetime_s, 100); /* inside the 4-minute window from the start */
    csql__cache_entry *e = entry(c, "near");
    ewaiter x;
    ew_init(&x);
    csql__certset *cs = NULL;
    bool kick = false;
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    assert_true(kick);
    csql__cache_lazy_refresh(e, csql__mono_ms() + 5000);
    assert_int_equal(ew_wait(&x, 1000), 1);
    /* Valid but near expiry: returned at once, with a kick for a refresh behind it. */
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL); /* let the 1 ms limiter earn a token */
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), 0);
    assert_true(kick);
    csql__certset_unref(cs);
    /* While that kick is pending, no other. */
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), 0);
    assert_false(kick);
    csql__certset_unref(cs);
    csql__cache_lazy_abandon(e);
    assert_int_equal(atomic_load(&F.calls), 1);
    ew_dispose(e, &x);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

static void test_lazy_abandon_wakes_waiters(void **state)
{
    (void)state;
    csql__cache *c = mkcache(CSQL_REFRESH_LAZY, 30000);
    csql__cache_entry *e = entry(c, "abandoned");
    ewaiter x;
    ew_init(&x);
    csql__certset *cs = NULL;
    bool kick = false;
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    assert_true(kick);
    csql__cache_lazy_abandon(e);
    assert_int_equal(ew_wait(&x, 1000), 1);
    /* The waiter decides again: nobody refreshes, so it asks again. */
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    assert_true(kick);
    csql__cache_lazy_abandon(e);
    ew_dispose(e, &x);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

static void test_lazy_failure_is_raised(void **state)
{
    (void)state;
    csql__cache *c = mkcache(CSQL_REFRESH_LAZY, 30000);
    atomic_store(&F.fail_code, CSQL_ERR_PERMISSION_DENIED);
    csql__cache_entry *e = entry(c, "denied");
    ewaiter x;
    ew_init(&x);
    csql__certset *cs = NULL;
    bool kick = false;
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_WOULD_BLOCK);
    assert_true(kick);
    csql__cache_lazy_refresh(e, csql__mono_ms() + 5000);
    assert_int_equal(ew_wait(&x, 1000), 1);
    csql_error_clear();
    assert_int_equal(csql__cache_get_nowait(e, &x.w, &cs, &kick), CSQL_ERR_PERMISSION_DENIED);
    assert_false(kick);
    assert_non_null(strstr(csql_error_last()->message, "boom"));
    ew_dispose(e, &x);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_get_waits_and_is_woken),
        cmocka_unit_test(test_many_waiters_one_refresh),
        cmocka_unit_test(test_failure_is_raised_then_fails_fast),
        cmocka_unit_test(test_cancelled_waiter_is_not_notified),
        cmocka_unit_test(test_close_wakes_waiters),
        cmocka_unit_test(test_timeout_error_names_instance),
        cmocka_unit_test(test_lazy_kicks_instead_of_refreshing),
        cmocka_unit_test(test_lazy_near_expiry_answers_now_and_kicks),
        cmocka_unit_test(test_lazy_abandon_wakes_waiters),
        cmocka_unit_test(test_lazy_failure_is_raised),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
