/*
 * Allocation failures on the dial path: the cache and csql_dialer_new fail
 * with CSQL_ERR_NOMEM (or another clean error), never crash, and work again
 * once memory is back. malloc/calloc/realloc are replaced for this program;
 * only the test thread's allocations fail (a thread-local countdown), so the
 * refresh threads and cmocka are unaffected. Sanitizer builds bring their own
 * allocator, so there the tests are skipped.
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
#include "csql/csql.h"
#include "error.h"
#include "util/clock.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CSQL_NOMEM_SKIP 1
#else
#define CSQL_NOMEM_SKIP 0

/* -1: never fail; n >= 0: the allocation after n more succeeds fails, and all after it. */
static _Thread_local long fail_after = -1;

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);

static int should_fail(void)
{
    if (fail_after < 0) {
        return 0;
    }
    if (fail_after == 0) {
        return 1;
    }
    fail_after--;
    return 0;
}

void *malloc(size_t n)
{
    return should_fail() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    return should_fail() ? NULL : __libc_realloc(p, n);
}
#endif

#if !CSQL_NOMEM_SKIP
static int fake_refresh(void *arg, const csql__instance_name *name, bool iam, int64_t deadline_ms,
                        const atomic_bool *cancel, csql__certset **out)
{
    (void)arg;
    (void)name;
    (void)iam;
    (void)deadline_ms;
    (void)cancel;
    csql__certset *cs = malloc(sizeof(*cs));
    if (cs == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "fake: out of memory");
    }
    memset(cs, 0, sizeof(*cs));
    atomic_init(&cs->refs, 1);
    cs->expires_at = csql__wall_s() + 3600;
    *out = cs;
    return 0;
}
#endif

static void test_cache_get_reports_nomem(void **state)
{
    (void)state;
    if (CSQL_NOMEM_SKIP) {
        skip();
    }
#if !CSQL_NOMEM_SKIP
    csql__cache_opts o = {0};
    o.strategy = CSQL_REFRESH_BACKGROUND;
    o.refresh = fake_refresh;
    csql__cache *c = NULL;
    assert_int_equal(csql__cache_new(&o, &c), 0);
    int nomem = 0, ok = 0;
    for (long k = 0; k < 20 && ok == 0; k++) {
        char inst[32];
        snprintf(inst, sizeof(inst), "i%ld", k);
        csql__instance_name n;
        memset(&n, 0, sizeof(n));
        snprintf(n.full, sizeof(n.full), "proj:reg:%s", inst);
        csql__cache_entry *e = NULL;
        csql__certset *cs = NULL;
        fail_after = k;
        int rc = csql__cache_get(c, &n, false, csql__mono_ms() + 5000, &e, &cs);
        fail_after = -1;
        if (rc == CSQL_ERR_NOMEM) {
            nomem++;
            assert_non_null(strstr(csql_error_last()->message, n.full));
            assert_null(e);
        } else {
            assert_int_equal(rc, 0);
            ok++;
        }
        csql__certset_unref(cs);
        csql__cache_entry_unref(e);
    }
    assert_true(nomem >= 1);
    assert_int_equal(ok, 1);
    csql__cache_free(c);
#endif
}

static void test_dialer_new_survives_every_allocation_failure(void **state)
{
    (void)state;
    if (CSQL_NOMEM_SKIP) {
        skip();
    }
#if !CSQL_NOMEM_SKIP
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    assert_int_equal(csql_config_set_token(cfg, "a-token"), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, "http://127.0.0.1:9"), 0);
    assert_int_equal(csql_config_set_refresh_strategy(cfg, CSQL_REFRESH_LAZY), 0);
    /* Once without failures, so process-wide initialisation (curl, OpenSSL) is done. */
    csql_dialer *d = NULL;
    assert_int_equal(csql_dialer_new(&d, cfg), 0);
    csql_dialer_free(d);
    int nomem = 0;
    long k;
    for (k = 0; k < 500; k++) {
        d = NULL;
        fail_after = k;
        int rc = csql_dialer_new(&d, cfg);
        fail_after = -1;
        if (rc == 0) {
            break;
        }
        assert_null(d);
        assert_true(rc < 0);
        nomem += rc == CSQL_ERR_NOMEM;
    }
    assert_non_null(d);
    assert_true(nomem >= 1);
    fprintf(stderr, "csql_dialer_new: %ld allocations, %d failed with CSQL_ERR_NOMEM\n", k, nomem);
    csql_dialer_free(d);
    csql_config_free(cfg);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_get_reports_nomem),
        cmocka_unit_test(test_dialer_new_survives_every_allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
