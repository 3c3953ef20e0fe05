/* The refcounted certset: shared by reference, freed with its SSL_CTX at zero. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "certset.h"

static csql__certset *make_set(void)
{
    csql__certset *cs = calloc(1, sizeof(*cs));
    assert_non_null(cs);
    atomic_init(&cs->refs, 1);
    cs->info.database_version = strdup("POSTGRES_15");
    cs->info.ca_pem = strdup("pem");
    cs->ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(cs->ctx);
    return cs;
}

static void test_ref_unref(void **state)
{
    (void)state;
    csql__certset *cs = make_set();
    assert_ptr_equal(csql__certset_ref(cs), cs);
    assert_int_equal(atomic_load(&cs->refs), 2);
    csql__certset_unref(cs);
    assert_int_equal(atomic_load(&cs->refs), 1);
    assert_string_equal(cs->info.database_version, "POSTGRES_15");
    csql__certset_unref(cs); /* frees; ASan/valgrind would report a leak otherwise */
    assert_null(csql__certset_ref(NULL));
    csql__certset_unref(NULL);
}

static void *churn(void *arg)
{
    csql__certset *cs = arg;
    for (int i = 0; i < 100000; i++) {
        csql__certset_unref(csql__certset_ref(cs));
    }
    csql__certset_unref(cs); /* the reference this thread was given */
    return NULL;
}

static void test_concurrent_refs(void **state)
{
    (void)state;
    csql__certset *cs = make_set();
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        csql__certset_ref(cs);
        assert_int_equal(pthread_create(&t[i], NULL, churn, cs), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
    }
    assert_int_equal(atomic_load(&cs->refs), 1);
    csql__certset_unref(cs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_unref),
        cmocka_unit_test(test_concurrent_refs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
