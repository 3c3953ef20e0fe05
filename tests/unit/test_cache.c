/*
 * The certificate cache against a fake refresh function: waiting, single
 * flight, failures, scheduling, lazy strategy, force refresh, drop, close and
 * wall-clock jumps. Time is shortened through the cache's tunables and the
 * wall-clock test offset (csql__clock_set_offset_s).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <time.h>

#include "cache.h"
#include "error.h"
#include "util/clock.h"

/* ---- the fake refresh ---- */

typedef struct fake {
    atomic_int calls;
    atomic_int fail_code;       /* 0: succeed */
    atomic_long http_status;    /* with fail_code */
    atomic_llong lifetime_s;    /* validity of the certsets made */
    atomic_int delay_ms;        /* how long a refresh takes */
    atomic_int slow_delay_ms;   /* for instances named "...:slow" */
    atomic_llong last_deadline; /* deadline_ms of the last call */
    atomic_int last_iam;
    atomic_int cancelled;       /* refreshes that gave up because of cancel */
    atomic_int misbehave;       /* 1: succeed without a certset; 2: fail without raising */
} fake;

static void fake_init(fake *f)
{
    memset(f, 0, sizeof(*f));
    atomic_store(&f->lifetime_s, 3600);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int fake_refresh(void *arg, const csql__instance_name *name, bool iam, int64_t deadline_ms,
                        const atomic_bool *cancel, csql__certset **out)
{
    fake *f = arg;
    atomic_fetch_add(&f->calls, 1);
    atomic_store(&f->last_deadline, deadline_ms);
    atomic_store(&f->last_iam, iam);
    int delay = strstr(name->full, ":slow") ? atomic_load(&f->slow_delay_ms)
                                            : atomic_load(&f->delay_ms);
    for (int waited = 0; waited < delay; waited += 5) {
        if (atomic_load(cancel)) {
            atomic_fetch_add(&f->cancelled, 1);
            return csql__error(CSQL_ERR_CLOSED, "refresh of %s cancelled", name->full);
        }
        if (csql__mono_ms() >= deadline_ms) {
            return csql__error(CSQL_ERR_TIMEOUT, "refresh of %s timed out", name->full);
        }
        sleep_ms(5);
    }
    if (atomic_load(&f->misbehave) == 1) {
        return 0;
    }
    if (atomic_load(&f->misbehave) == 2) {
        return 7;
    }
    int code = atomic_load(&f->fail_code);
    if (code != 0) {
        return csql__error_http(code, atomic_load(&f->http_status), "UNAVAILABLE",
                                "fake refresh of %s failed: boom", name->full);
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

/* ---- helpers ---- */

static csql__instance_name mkname(const char *instance)
{
    csql__instance_name n;
    memset(&n, 0, sizeof(n));
    snprintf(n.project, sizeof(n.project), "proj");
    snprintf(n.region, sizeof(n.region), "reg");
    snprintf(n.instance, sizeof(n.instance), "%s", instance);
    snprintf(n.full, sizeof(n.full), "proj:reg:%s", instance);
    return n;
}

static csql__cache *mkcache(fake *f, csql_refresh_strategy s, int64_t rl_interval_ms)
{
    csql__cache_opts o = {0};
    o.strategy = s;
    o.refresh = fake_refresh;
    o.refresh_arg = f;
    o.refresh_timeout_ms = 5000;
    o.rl_interval_ms = rl_interval_ms;
    o.max_sleep_ms = 20;
    csql__cache *c = NULL;
    assert_int_equal(csql__cache_new(&o, &c), 0);
    assert_non_null(c);
    return c;
}

static int64_t deadline_in(int ms)
{
    return csql__mono_ms() + ms;
}

static int get(csql__cache *c, const char *inst, bool iam, int timeout_ms, csql__certset **cs)
{
    csql__instance_name n = mkname(inst);
    csql__cache_entry *e = NULL;
    csql__certset *got = NULL;
    int rc = csql__cache_get(c, &n, iam, deadline_in(timeout_ms), &e, &got);
    if (rc == 0) {
        assert_non_null(e);
        assert_non_null(got);
        assert_true(got->expires_at > csql__wall_s());
    } else {
        assert_null(e);
        assert_null(got);
    }
    csql__cache_entry_unref(e);
    if (cs != NULL) {
        *cs = got;
    } else {
        csql__certset_unref(got);
    }
    return rc;
}

static csql__cache_entry_stats stats(csql__cache *c, const char *inst, bool iam)
{
    csql__instance_name n = mkname(inst);
    csql__cache_entry_stats st;
    assert_int_equal(csql__cache_stats(c, &n, iam, &st), 0);
    return st;
}

/* Poll until calls reaches n, up to ms. */
static int wait_calls(fake *f, int n, int ms)
{
    for (int i = 0; i < ms / 5; i++) {
        if (atomic_load(&f->calls) >= n) {
            return 1;
        }
        sleep_ms(5);
    }
    return atomic_load(&f->calls) >= n;
}

static int teardown_clock(void **state)
{
    (void)state;
    csql__clock_set_offset_s(0);
    return 0;
}

/* ---- tests ---- */

static void test_first_get_waits_for_first_refresh(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.delay_ms, 150);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 0);
    int64_t t0 = csql__mono_ms();
    csql__certset *cs1 = NULL, *cs2 = NULL;
    assert_int_equal(get(c, "a", false, 5000, &cs1), 0);
    assert_true(csql__mono_ms() - t0 >= 140);
    assert_int_equal(atomic_load(&f.calls), 1);
    /* Cached: no new refresh, same certset, no waiting. */
    t0 = csql__mono_ms();
    assert_int_equal(get(c, "a", false, 5000, &cs2), 0);
    assert_ptr_equal(cs1, cs2);
    assert_true(csql__mono_ms() - t0 < 100);
    assert_int_equal(atomic_load(&f.calls), 1);
    /* The refresh got the configured refresh timeout as its deadline. */
    assert_true(atomic_load(&f.last_deadline) - t0 <= 5000);
    csql__certset_unref(cs1);
    csql__certset_unref(cs2);
    assert_int_equal(csql__cache_worker_count(c), 1);
    csql__cache_free(c);
}

typedef struct getter {
    csql__cache *c;
    const char *inst;
    int rc;
    int code;
    csql__certset *cs;
    int64_t took_ms;
} getter;

static void *getter_main(void *arg)
{
    getter *g = arg;
    int64_t t0 = csql__mono_ms();
    g->rc = get(g->c, g->inst, false, 10000, &g->cs);
    g->code = csql_error_last()->code;
    g->took_ms = csql__mono_ms() - t0;
    return NULL;
}

static void single_flight(csql_refresh_strategy s)
{
    fake f;
    fake_init(&f);
    atomic_store(&f.delay_ms, 200);
    csql__cache *c = mkcache(&f, s, 0);
    enum { N = 16 };
    getter g[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        g[i] = (getter){.c = c, .inst = "shared"};
        assert_int_equal(pthread_create(&t[i], NULL, getter_main, &g[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(g[i].rc, 0);
        assert_ptr_equal(g[i].cs, g[0].cs);
    }
    assert_int_equal(atomic_load(&f.calls), 1);
    for (int i = 0; i < N; i++) {
        csql__certset_unref(g[i].cs);
    }
    csql__cache_free(c);
}

static void test_concurrent_gets_single_flight_background(void **state)
{
    (void)state;
    single_flight(CSQL_REFRESH_BACKGROUND);
}

static void test_concurrent_gets_single_flight_lazy(void **state)
{
    (void)state;
    single_flight(CSQL_REFRESH_LAZY);
}

static void test_failed_refresh_keeps_valid_certset(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    /* 200 s certificates: refresh due at once, so the limiter (50 ms) paces retries. */
    atomic_store(&f.lifetime_s, 200);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 50);
    assert_int_equal(get(c, "a", false, 5000, NULL), 0);
    atomic_store(&f.http_status, 503);
    atomic_store(&f.fail_code, CSQL_ERR_API);
    int first_failure = atomic_load(&f.calls) + 1;
    assert_true(wait_calls(&f, first_failure + 3, 3000));
    /* Whatever certset was current when failures began stays in use. */
    csql__certset *good = NULL;
    assert_int_equal(get(c, "a", false, 5000, &good), 0);
    for (int i = 0; i < 5; i++) {
        csql__certset *cs = NULL;
        assert_int_equal(get(c, "a", false, 1000, &cs), 0);
        assert_ptr_equal(cs, good);
        csql__certset_unref(cs);
    }
    csql__cache_entry_stats st = stats(c, "a", false);
    assert_true(st.refreshes_failed >= 3);
    assert_true(st.has_certset);
    assert_int_equal(st.saved_error, CSQL_ERR_API);
    /* Failures keep being retried, no faster than the limiter allows. */
    int before = atomic_load(&f.calls);
    sleep_ms(500);
    int during = atomic_load(&f.calls) - before;
    assert_true(during >= 3);
    assert_true(during <= 500 / 50 + 2);
    /* Recovery replaces the certset. */
    atomic_store(&f.fail_code, 0);
    before = atomic_load(&f.calls);
    assert_true(wait_calls(&f, before + 1, 2000));
    sleep_ms(50);
    csql__certset *fresh = NULL;
    assert_int_equal(get(c, "a", false, 1000, &fresh), 0);
    assert_ptr_not_equal(fresh, good);
    assert_int_equal(stats(c, "a", false).saved_error, 0);
    csql__certset_unref(fresh);
    csql__certset_unref(good);
    csql__cache_free(c);
}

static void test_no_valid_certset_surfaces_saved_error(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.fail_code, CSQL_ERR_API);
    atomic_store(&f.http_status, 503);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 60000);
    /* The first failure, raised on this thread with its message and HTTP details. */
    assert_int_equal(get(c, "down", false, 5000, NULL), CSQL_ERR_API);
    const csql_error *e = csql_error_last();
    assert_int_equal(e->code, CSQL_ERR_API);
    assert_non_null(strstr(e->message, "fake refresh of proj:reg:down failed: boom"));
    assert_int_equal(e->http_status, 503);
    assert_string_equal(e->api_reason, "UNAVAILABLE");
    /* The burst allows one more try ... */
    assert_int_equal(get(c, "down", false, 5000, NULL), CSQL_ERR_API);
    assert_true(wait_calls(&f, 2, 1000));
    /* ... then the limiter holds: the saved error comes back at once, without a call. */
    csql_error_clear();
    int64_t t0 = csql__mono_ms();
    assert_int_equal(get(c, "down", false, 5000, NULL), CSQL_ERR_API);
    assert_true(csql__mono_ms() - t0 < 500);
    assert_non_null(strstr(csql_error_last()->message, "boom"));
    assert_int_equal(csql_error_last()->http_status, 503);
    assert_int_equal(atomic_load(&f.calls), 2);
    csql__cache_free(c);
}

static void test_permanent_error_is_not_retried_in_background(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.fail_code, CSQL_ERR_NOT_FOUND);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 20);
    assert_int_equal(get(c, "gone", false, 5000, NULL), CSQL_ERR_NOT_FOUND);
    sleep_ms(200);
    assert_int_equal(atomic_load(&f.calls), 1);
    assert_false(stats(c, "gone", false).scheduled);
    /* A dial asks again (a token is there): one more call. */
    assert_int_equal(get(c, "gone", false, 5000, NULL), CSQL_ERR_NOT_FOUND);
    assert_int_equal(atomic_load(&f.calls), 2);
    csql__cache_free(c);
}

static void test_background_schedule_follows_expiry(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.lifetime_s, 7200); /* d >= 1h: refresh at d/2 = 3600 s */
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 10);
    assert_int_equal(get(c, "a", false, 5000, NULL), 0);
    csql__cache_entry_stats st = stats(c, "a", false);
    assert_true(st.scheduled);
    int64_t in_ms = st.next_refresh_wall_ms - csql__wall_ms();
    assert_true(in_ms > 3595 * 1000 && in_ms <= 3600 * 1000);

    csql__clock_set_offset_s(3590);
    sleep_ms(150);
    assert_int_equal(atomic_load(&f.calls), 1);
    csql__clock_set_offset_s(3601);
    assert_true(wait_calls(&f, 2, 2000));

    /* d < 1h: at d - 4 min. The fake now issues 250 s certificates: next in 10 s. */
    atomic_store(&f.lifetime_s, 250);
    csql__clock_set_offset_s(3601 + 3601);
    assert_true(wait_calls(&f, 3, 2000));
    sleep_ms(50);
    st = stats(c, "a", false);
    in_ms = st.next_refresh_wall_ms - csql__wall_ms();
    assert_true(in_ms > 8000 && in_ms <= 10000);
    assert_int_equal(atomic_load(&f.calls), 3);
    csql__cache_free(c);
}

static void test_lazy_refreshes_on_dial_within_four_minutes(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.lifetime_s, 600);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_LAZY, 0);
    csql__certset *cs1 = NULL, *cs2 = NULL;
    assert_int_equal(get(c, "a", false, 5000, &cs1), 0);
    assert_int_equal(get(c, "a", false, 5000, NULL), 0);
    assert_int_equal(atomic_load(&f.calls), 1);
    /* No background work at all. */
    assert_int_equal(csql__cache_worker_count(c), 0);
    assert_false(stats(c, "a", false).scheduled);
    sleep_ms(50);
    assert_int_equal(atomic_load(&f.calls), 1);
    /* 361 s later 239 s remain: the next dial refreshes. */
    csql__clock_set_offset_s(361);
    assert_int_equal(get(c, "a", false, 5000, &cs2), 0);
    assert_int_equal(atomic_load(&f.calls), 2);
    assert_ptr_not_equal(cs1, cs2);
    csql__certset_unref(cs1);
    csql__certset_unref(cs2);
    csql__cache_free(c);
}

static void test_lazy_keeps_rate_limit(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.fail_code, CSQL_ERR_API);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_LAZY, 60000);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(get(c, "a", false, 2000, NULL), CSQL_ERR_API);
        assert_non_null(strstr(csql_error_last()->message, "boom"));
    }
    assert_int_equal(atomic_load(&f.calls), 2);
    /* A failure while a still-valid certset exists (inside the 4 min window) is hidden. */
    csql__cache *c2 = mkcache(&f, CSQL_REFRESH_LAZY, 0);
    atomic_store(&f.fail_code, 0);
    atomic_store(&f.lifetime_s, 100);
    csql__certset *cs = NULL, *again = NULL;
    assert_int_equal(get(c2, "a", false, 2000, &cs), 0);
    atomic_store(&f.fail_code, CSQL_ERR_API);
    assert_int_equal(get(c2, "a", false, 2000, &again), 0);
    assert_ptr_equal(cs, again);
    assert_int_equal(stats(c2, "a", false).saved_error, CSQL_ERR_API);
    csql__certset_unref(cs);
    csql__certset_unref(again);
    csql__cache_free(c2);
    csql__cache_free(c);
}

static void force_refresh(csql_refresh_strategy s)
{
    fake f;
    fake_init(&f);
    csql__cache *c = mkcache(&f, s, 0);
    csql__instance_name n = mkname("a");
    csql__cache_entry *e = NULL;
    csql__certset *cs1 = NULL, *cs2 = NULL;
    assert_int_equal(csql__cache_get(c, &n, false, deadline_in(5000), &e, &cs1), 0);
    csql__cache_force_refresh(e);
    if (s == CSQL_REFRESH_BACKGROUND) {
        assert_true(wait_calls(&f, 2, 2000)); /* without any dial */
        sleep_ms(50);
    } else {
        sleep_ms(50);
        assert_int_equal(atomic_load(&f.calls), 1); /* lazy: only on the next dial */
    }
    assert_int_equal(get(c, "a", false, 5000, &cs2), 0);
    assert_int_equal(atomic_load(&f.calls), 2);
    assert_ptr_not_equal(cs1, cs2);
    csql__certset_unref(cs1);
    csql__certset_unref(cs2);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

static void test_force_refresh_background(void **state)
{
    (void)state;
    force_refresh(CSQL_REFRESH_BACKGROUND);
}

static void test_force_refresh_lazy(void **state)
{
    (void)state;
    force_refresh(CSQL_REFRESH_LAZY);
}

static void drop(csql_refresh_strategy s)
{
    fake f;
    fake_init(&f);
    atomic_store(&f.delay_ms, 50);
    csql__cache *c = mkcache(&f, s, 10);
    csql__instance_name n = mkname("a");
    csql__cache_entry *e = NULL;
    csql__certset *cs1 = NULL, *cs2 = NULL, *cs3 = NULL;
    assert_int_equal(csql__cache_get(c, &n, false, deadline_in(5000), &e, &cs1), 0);
    csql__cache_drop(e, cs1);
    /* The next dial waits for a fresh certset. */
    assert_int_equal(get(c, "a", false, 5000, &cs2), 0);
    assert_ptr_not_equal(cs1, cs2);
    assert_int_equal(atomic_load(&f.calls), 2);
    /* A late TLS error from a connection made with cs1 changes nothing. */
    csql__cache_drop(e, cs1);
    assert_true(stats(c, "a", false).has_certset);
    assert_int_equal(get(c, "a", false, 5000, &cs3), 0);
    assert_ptr_equal(cs2, cs3);
    assert_int_equal(atomic_load(&f.calls), 2);

    /* The connection hook fires at most once and drops only its own certset. */
    csql__cache_hook *h = csql__cache_hook_new(e, cs3);
    assert_non_null(h);
    csql__cache_hook_fire(h);
    csql__cache_hook_fire(h);
    assert_false(stats(c, "a", false).has_certset && s == CSQL_REFRESH_LAZY);
    csql__cache_hook_release(h);
    assert_int_equal(get(c, "a", false, 5000, NULL), 0);
    assert_int_equal(atomic_load(&f.calls), 3);
    csql__certset_unref(cs1);
    csql__certset_unref(cs2);
    csql__certset_unref(cs3);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

static void test_drop_background(void **state)
{
    (void)state;
    drop(CSQL_REFRESH_BACKGROUND);
}

static void test_drop_lazy(void **state)
{
    (void)state;
    drop(CSQL_REFRESH_LAZY);
}

static void test_drop_after_tls_error_fails_fast_when_rate_limited(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 60000);
    csql__instance_name n = mkname("a");
    csql__cache_entry *e = NULL;
    csql__certset *cs1 = NULL, *cs2 = NULL;
    assert_int_equal(csql__cache_get(c, &n, false, deadline_in(5000), &e, &cs1), 0);
    /* A handshake failure (CA rotation): the second token refreshes at once. */
    csql__error(CSQL_ERR_TLS_VERIFY, "server certificate for proj:reg:a not trusted");
    csql__cache_drop(e, cs1);
    assert_int_equal(get(c, "a", false, 5000, &cs2), 0);
    assert_int_equal(atomic_load(&f.calls), 2);
    /* It fails again: no token for 60 s, so dials report the TLS failure at once. */
    csql__error(CSQL_ERR_TLS_VERIFY, "server certificate for proj:reg:a not trusted");
    csql__cache_drop(e, cs2);
    int64_t t0 = csql__mono_ms();
    assert_int_equal(get(c, "a", false, 5000, NULL), CSQL_ERR_TLS_VERIFY);
    assert_true(csql__mono_ms() - t0 < 500);
    assert_non_null(strstr(csql_error_last()->message, "not trusted"));
    assert_int_equal(atomic_load(&f.calls), 2);
    csql__certset_unref(cs1);
    csql__certset_unref(cs2);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
}

static void test_hook_outlives_cache(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 0);
    csql__instance_name n = mkname("a");
    csql__cache_entry *e = NULL;
    csql__certset *cs = NULL;
    assert_int_equal(csql__cache_get(c, &n, false, deadline_in(5000), &e, &cs), 0);
    csql__cache_hook *h = csql__cache_hook_new(e, cs);
    csql__certset_unref(cs);
    csql__cache_entry_unref(e);
    csql__cache_free(c);
    /* A connection reporting a TLS error after the dialer is gone: no effect, no crash. */
    csql__cache_hook_fire(h);
    csql__cache_hook_release(h);
}

static void test_close_cancels_and_wakes_waiters(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.delay_ms, 4000);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 0);
    getter g = {.c = c, .inst = "a"};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, getter_main, &g), 0);
    assert_true(wait_calls(&f, 1, 2000));
    int64_t t0 = csql__mono_ms();
    csql__cache_close(c);
    pthread_join(t, NULL);
    assert_true(csql__mono_ms() - t0 < 1000);
    assert_int_equal(g.rc, CSQL_ERR_CLOSED);
    assert_int_equal(g.code, CSQL_ERR_CLOSED);
    assert_int_equal(atomic_load(&f.cancelled), 1);
    /* Later gets fail at once; close is idempotent. */
    assert_int_equal(get(c, "a", false, 5000, NULL), CSQL_ERR_CLOSED);
    assert_non_null(strstr(csql_error_last()->message, "closed"));
    csql__cache_close(c);
    csql__cache_free(c);
}

static void test_clock_jump_refreshes_at_dial(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    csql__cache_opts o = {0};
    o.strategy = CSQL_REFRESH_BACKGROUND;
    o.refresh = fake_refresh;
    o.refresh_arg = &f;
    o.max_sleep_ms = 600000; /* the scheduler will not notice the jump by itself */
    csql__cache *c = NULL;
    assert_int_equal(csql__cache_new(&o, &c), 0);
    csql__certset *cs1 = NULL, *cs2 = NULL;
    assert_int_equal(get(c, "a", false, 5000, &cs1), 0);
    /* The machine slept for an hour and more: the certificate expired meanwhile. */
    csql__clock_set_offset_s(3700);
    assert_int_equal(get(c, "a", false, 5000, &cs2), 0);
    assert_int_equal(atomic_load(&f.calls), 2);
    assert_ptr_not_equal(cs1, cs2);
    assert_true(cs2->expires_at > csql__wall_s());
    csql__certset_unref(cs1);
    csql__certset_unref(cs2);
    csql__cache_free(c);
}

/* A certificate with only seconds left is not handed to a new dial: it could lapse mid-handshake. */
static void test_nearly_expired_certificate_is_not_used(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    csql__cache_opts o = {0};
    o.strategy = CSQL_REFRESH_BACKGROUND;
    o.refresh = fake_refresh;
    o.refresh_arg = &f;
    o.max_sleep_ms = 600000; /* the scheduler will not notice the jump by itself */
    csql__cache *c = NULL;
    assert_int_equal(csql__cache_new(&o, &c), 0);
    csql__certset *cs1 = NULL, *cs2 = NULL;
    assert_int_equal(get(c, "a", false, 5000, &cs1), 0);
    /* Still valid for CSQL__CERT_MIN_LEFT_S - 1 seconds: too little for a new connection. */
    csql__clock_set_offset_s(cs1->expires_at - csql__wall_s() - (CSQL__CERT_MIN_LEFT_S - 1));
    assert_int_equal(get(c, "a", false, 5000, &cs2), 0);
    assert_int_equal(atomic_load(&f.calls), 2);
    assert_ptr_not_equal(cs1, cs2);
    assert_true(cs2->expires_at - csql__wall_s() > CSQL__CERT_MIN_LEFT_S);
    csql__certset_unref(cs1);
    csql__certset_unref(cs2);
    csql__cache_free(c);
}

static void test_result_with_seconds_left_is_an_error(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.lifetime_s, CSQL__CERT_MIN_LEFT_S - 1);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_LAZY, 0);
    assert_int_equal(get(c, "a", false, 5000, NULL), CSQL_ERR_API_RESPONSE);
    assert_non_null(strstr(csql_error_last()->message, "check the system clock"));
    csql__cache_free(c);
}

static void test_slow_instance_does_not_block_others(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.slow_delay_ms, 1500);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 0);
    getter g = {.c = c, .inst = "slow"};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, getter_main, &g), 0);
    assert_true(wait_calls(&f, 1, 2000));
    int64_t t0 = csql__mono_ms();
    assert_int_equal(get(c, "fast", false, 5000, NULL), 0);
    assert_true(csql__mono_ms() - t0 < 700);
    pthread_join(t, NULL);
    assert_int_equal(g.rc, 0);
    assert_true(g.took_ms >= 1400);
    assert_int_equal(csql__cache_worker_count(c), 2);
    csql__certset_unref(g.cs);
    csql__cache_free(c);
}

static void test_get_times_out_naming_instance(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.delay_ms, 1000);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 0);
    int64_t t0 = csql__mono_ms();
    assert_int_equal(get(c, "sluggish", false, 100, NULL), CSQL_ERR_TIMEOUT);
    assert_true(csql__mono_ms() - t0 < 600);
    assert_non_null(strstr(csql_error_last()->message, "proj:reg:sluggish"));
    /* The refresh finishes in the background; the next dial gets its result. */
    assert_int_equal(get(c, "sluggish", false, 5000, NULL), 0);
    assert_int_equal(atomic_load(&f.calls), 1);
    csql__cache_free(c);
}

static void test_iam_flag_is_part_of_the_key(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 0);
    assert_int_equal(get(c, "a", false, 5000, NULL), 0);
    assert_int_equal(atomic_load(&f.last_iam), 0);
    assert_int_equal(get(c, "a", true, 5000, NULL), 0);
    assert_int_equal(atomic_load(&f.last_iam), 1);
    assert_int_equal(get(c, "a", true, 5000, NULL), 0);
    assert_int_equal(atomic_load(&f.calls), 2);
    csql__cache_free(c);
}

static void test_expired_result_is_an_error(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.lifetime_s, -10);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_LAZY, 0);
    assert_int_equal(get(c, "a", false, 5000, NULL), CSQL_ERR_API_RESPONSE);
    assert_non_null(strstr(csql_error_last()->message, "check the system clock"));
    csql__cache_free(c);
}

static void test_misbehaving_refresh_is_an_internal_error(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.misbehave, 1);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_LAZY, 0);
    assert_int_equal(get(c, "a", false, 5000, NULL), CSQL_ERR_INTERNAL);
    assert_non_null(strstr(csql_error_last()->message, "returned no certificate"));
    atomic_store(&f.misbehave, 2);
    assert_int_equal(get(c, "b", false, 5000, NULL), CSQL_ERR_INTERNAL);
    assert_non_null(strstr(csql_error_last()->message, "proj:reg:b failed without details"));
    assert_int_equal(csql_err_category_of(CSQL_ERR_INTERNAL), CSQL_CAT_INTERNAL);
    csql__cache_free(c);
}

/* Threads of this process whose name starts with `prefix` (/proc/self/task/N/comm). */
static int count_threads(const char *prefix)
{
    DIR *dir = opendir("/proc/self/task");
    if (dir == NULL) {
        return -1;
    }
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        char path[300], name[64] = "";
        if (de->d_name[0] == '.') {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            if (fgets(name, sizeof(name), f) != NULL &&
                strncmp(name, prefix, strlen(prefix)) == 0) {
                n++;
            }
            fclose(f);
        }
    }
    closedir(dir);
    return n;
}

static void test_threads_are_few_named_and_joined(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.slow_delay_ms, 300);
    csql__cache *lazy = mkcache(&f, CSQL_REFRESH_LAZY, 0);
    assert_int_equal(get(lazy, "a", false, 5000, NULL), 0);
    assert_int_equal(count_threads("csql-refresh"), 0);
    csql__cache_free(lazy);

    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 0);
    assert_int_equal(count_threads("csql-refresh"), 1); /* the scheduler only */
    /* Ten instances at once need at most max_workers (4) workers. */
    getter g[10];
    pthread_t t[10];
    char names[10][16];
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof(names[i]), "slow%d:slow", i);
        g[i] = (getter){.c = c, .inst = names[i]};
        assert_int_equal(pthread_create(&t[i], NULL, getter_main, &g[i]), 0);
    }
    for (int i = 0; i < 10; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(g[i].rc, 0);
        csql__certset_unref(g[i].cs);
    }
    assert_int_equal(csql__cache_worker_count(c), 4);
    assert_int_equal(count_threads("csql-refresh"), 5);
    csql__cache_close(c);
    assert_int_equal(count_threads("csql-refresh"), 0);
    csql__cache_free(c);
}

static void test_warmup(void **state)
{
    (void)state;
    fake f;
    fake_init(&f);
    atomic_store(&f.delay_ms, 100);
    csql__cache *c = mkcache(&f, CSQL_REFRESH_BACKGROUND, 0);
    csql__instance_name n = mkname("w");
    int64_t t0 = csql__mono_ms();
    assert_int_equal(csql__cache_warmup(c, &n, false, 0, deadline_in(5000)), 0);
    assert_true(csql__mono_ms() - t0 < 80);
    assert_true(wait_calls(&f, 1, 2000));
    assert_int_equal(csql__cache_warmup(c, &n, false, 1, deadline_in(5000)), 0);
    assert_int_equal(get(c, "w", false, 50, NULL), 0);
    assert_int_equal(atomic_load(&f.calls), 1);
    csql__cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_get_waits_for_first_refresh),
        cmocka_unit_test(test_concurrent_gets_single_flight_background),
        cmocka_unit_test(test_concurrent_gets_single_flight_lazy),
        cmocka_unit_test(test_failed_refresh_keeps_valid_certset),
        cmocka_unit_test(test_no_valid_certset_surfaces_saved_error),
        cmocka_unit_test(test_permanent_error_is_not_retried_in_background),
        cmocka_unit_test_teardown(test_background_schedule_follows_expiry, teardown_clock),
        cmocka_unit_test_teardown(test_lazy_refreshes_on_dial_within_four_minutes, teardown_clock),
        cmocka_unit_test(test_lazy_keeps_rate_limit),
        cmocka_unit_test(test_force_refresh_background),
        cmocka_unit_test(test_force_refresh_lazy),
        cmocka_unit_test(test_drop_background),
        cmocka_unit_test(test_drop_lazy),
        cmocka_unit_test(test_drop_after_tls_error_fails_fast_when_rate_limited),
        cmocka_unit_test(test_hook_outlives_cache),
        cmocka_unit_test(test_close_cancels_and_wakes_waiters),
        cmocka_unit_test_teardown(test_clock_jump_refreshes_at_dial, teardown_clock),
        cmocka_unit_test_teardown(test_nearly_expired_certificate_is_not_used, teardown_clock),
        cmocka_unit_test(test_result_with_seconds_left_is_an_error),
        cmocka_unit_test(test_slow_instance_does_not_block_others),
        cmocka_unit_test(test_get_times_out_naming_instance),
        cmocka_unit_test(test_iam_flag_is_part_of_the_key),
        cmocka_unit_test(test_expired_result_is_an_error),
        cmocka_unit_test(test_misbehaving_refresh_is_an_internal_error),
        cmocka_unit_test(test_threads_are_few_named_and_joined),
        cmocka_unit_test(test_warmup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
