/*
 * Allocation failures in the certificate cache (src/cache.c, refresher.c)
 * with a fake refresh: every allocation made on the dialing thread (the
 * cache's, the fake refresh's in LAZY mode, jansson's and OpenSSL's) fails in
 * turn through a scenario of gets, a connection hook, a drop, a second
 * entry, a warmup and a forced refresh. Each injected failure must surface as
 * CSQL_ERR_NOMEM with a message, must not crash or leak (asan preset), and
 * must not wedge the cache: the same operation succeeds once memory is back.
 * Unlike test_nomem, this runs under the sanitizers too (tests/support/failalloc.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "csql/errors.h"
#include "error.h"
#include "failalloc.h"
#include "util/clock.h"

#define MAX_RUNS 10000

/* A refresh that allocates like a real one: the certset and its strings. */
static int fake_refresh(void *arg, const csql__instance_name *name, bool iam, int64_t deadline_ms,
                        const atomic_bool *cancel, csql__certset **out)
{
    (void)arg;
    (void)iam;
    (void)deadline_ms;
    (void)cancel;
    csql__certset *cs = calloc(1, sizeof(*cs));
    if (cs == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "fake refresh of %s: out of memory", name->full);
    }
    atomic_init(&cs->refs, 1);
    cs->info.region = strdup(name->region);
    cs->info.public_ip = strdup("127.0.0.1");
    if (cs->info.region == NULL || cs->info.public_ip == NULL) {
        csql__certset_unref(cs);
        return csql__error(CSQL_ERR_NOMEM, "fake refresh of %s: out of memory", name->full);
    }
    cs->expires_at = csql__wall_s() + 3600;
    *out = cs;
    return 0;
}

typedef struct scenario {
    csql_refresh_strategy strategy;
    int failed_rc;        /* the first error of the run */
    char failed_msg[256];
    int recovered;        /* the failed step worked once allocations succeeded again */
    int hook_nomem;       /* csql__cache_hook_new returned NULL */
} scenario;

static csql__instance_name mkname(const char *inst)
{
    csql__instance_name n;
    memset(&n, 0, sizeof(n));
    snprintf(n.full, sizeof(n.full), "p:r:%s", inst);
    snprintf(n.project, sizeof(n.project), "p");
    snprintf(n.region, sizeof(n.region), "r");
    snprintf(n.instance, sizeof(n.instance), "%s", inst);
    return n;
}

/* One get; on failure, remember the error, then retry with allocations working. */
static int get(scenario *s, csql__cache *c, const char *inst, bool iam, csql__cache_entry **e,
               csql__certset **cs)
{
    csql__instance_name n = mkname(inst);
    int rc = csql__cache_get(c, &n, iam, csql__mono_ms() + 5000, e, cs);
    if (rc == 0) {
        return 0;
    }
    s->failed_rc = rc;
    snprintf(s->failed_msg, sizeof(s->failed_msg), "%s", csql_error_last()->message);
    csqlt_failalloc_disarm();
    csql__cache_entry *e2 = NULL;
    csql__certset *cs2 = NULL;
    s->recovered = csql__cache_get(c, &n, iam, csql__mono_ms() + 5000, &e2, &cs2) == 0 &&
                   e2 != NULL && cs2 != NULL;
    csql__certset_unref(cs2);
    csql__cache_entry_unref(e2);
    return rc;
}

static int run(void *arg)
{
    scenario *s = arg;
    s->failed_rc = 0;
    s->failed_msg[0] = '\0';
    s->recovered = 0;
    s->hook_nomem = 0;

    csql__cache_opts o = {0};
    o.strategy = s->strategy;
    o.refresh = fake_refresh;
    o.refresh_timeout_ms = 5000;
    o.rl_burst = 1000; /* failed refreshes must not throttle the retries */
    o.rl_interval_ms = 1;
    o.max_sleep_ms = 20;
    csql__cache *c = NULL;
    int rc = csql__cache_new(&o, &c);
    if (rc != 0) {
        s->failed_rc = rc;
        snprintf(s->failed_msg, sizeof(s->failed_msg), "%s", csql_error_last()->message);
        csqlt_failalloc_disarm();
        s->recovered = csql__cache_new(&o, &c) == 0;
        csql__cache_free(c);
        return rc;
    }
    csql__cache_entry *e = NULL;
    csql__certset *cs = NULL;
    rc = get(s, c, "a", false, &e, &cs);
    if (rc == 0) {
        /* A connection's hook, fired by a TLS error: drops the certset. */
        csql__cache_hook *h = csql__cache_hook_new(e, cs);
        if (h == NULL) {
            s->hook_nomem = 1;
            rc = CSQL_ERR_NOMEM;
        } else {
            csql__cache_hook_fire(h);
            csql__cache_hook_release(h);
        }
        csql__certset_unref(cs);
        csql__cache_entry_unref(e);
    }
    if (rc == 0) {
        /* After the drop the next get refreshes again. */
        rc = get(s, c, "a", false, &e, &cs);
        if (rc == 0) {
            csql__cache_drop(e, cs);
            csql__cache_force_refresh(e);
            csql__certset_unref(cs);
            csql__cache_entry_unref(e);
        }
    }
    if (rc == 0) {
        /* A second entry (the entry table grows) with IAM authn. */
        rc = get(s, c, "b", true, &e, &cs);
        if (rc == 0) {
            csql__certset_unref(cs);
            csql__cache_entry_unref(e);
        }
    }
    if (rc == 0) {
        csql__instance_name n = mkname("c");
        rc = csql__cache_warmup(c, &n, false, 0, csql__mono_ms() + 5000);
        if (rc != 0) {
            s->failed_rc = rc;
            snprintf(s->failed_msg, sizeof(s->failed_msg), "%s", csql_error_last()->message);
            csqlt_failalloc_disarm();
            s->recovered = csql__cache_warmup(c, &n, false, 0, csql__mono_ms() + 5000) == 0;
        }
    }
    csql__cache_free(c);
    return rc;
}

static void check(void *arg, int rc, int injected)
{
    scenario *s = arg;
    if (rc == 0) {
        return;
    }
    assert_true(injected);
    if (s->hook_nomem) {
        return; /* NULL is how csql__cache_hook_new reports it; the dialer turns it into NOMEM */
    }
    if (rc != CSQL_ERR_NOMEM) {
        fail_msg("allocation failure reported as %d (%s): %s", rc, csql_strerror(rc),
                 s->failed_msg);
    }
    if (strlen(s->failed_msg) <= strlen("csql: ")) {
        fail_msg("allocation failure reported as CSQL_ERR_NOMEM without a message");
    }
    if (!s->recovered) {
        fail_msg("the cache did not recover after \"%s\"", s->failed_msg);
    }
}

static void scenario_every_failure(csql_refresh_strategy strategy, const char *label)
{
    scenario s = {.strategy = strategy};
    long n = csqlt_failalloc_each(run, check, &s, MAX_RUNS);
    assert_true(n > 0);
    print_message("cache scenario (%s): %ld allocations, each failed in turn\n", label, n);
    /* Memory that stays short: every allocation from the nth on fails (error saving too). */
    long m = csqlt_failalloc_each_sticky(run, check, &s, MAX_RUNS);
    assert_int_equal(m, n);
}

static void test_lazy(void **state)
{
    (void)state;
    scenario_every_failure(CSQL_REFRESH_LAZY, "lazy");
}

static void test_background(void **state)
{
    (void)state;
    scenario_every_failure(CSQL_REFRESH_BACKGROUND, "background, dialing thread");
}

/* Every allocation of every thread (scheduler, refresh workers, the fake refresh) in turn. */
static void test_background_any_thread(void **state)
{
    (void)state;
    scenario s = {.strategy = CSQL_REFRESH_BACKGROUND};
    long n = csqlt_failalloc_each_global(run, check, &s, MAX_RUNS);
    assert_true(n > 0);
    print_message("cache scenario (background, every thread): about %ld allocations, each failed "
                  "in turn\n",
                  n);
}

int main(void)
{
    if (csqlt_failalloc_install() != 0) {
        fprintf(stderr, "cannot install the OpenSSL allocation hooks\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lazy),
        cmocka_unit_test(test_background),
        cmocka_unit_test(test_background_any_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
