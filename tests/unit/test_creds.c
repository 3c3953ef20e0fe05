/*
 * csql__creds without a network: static tokens, the token callback, the
 * per-kind cache and its refresh margin (on a shifted wall clock), and
 * single-flight fetching shared by concurrent callers.
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
#include <time.h>

#include "config_internal.h"
#include "credentials/creds_internal.h"
#include "error.h"
#include "util/clock.h"

static void assert_msg_has(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", m, needle);
    }
}

static void assert_msg_lacks(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) != NULL) {
        fail_msg("message \"%s\" contains \"%s\"", m, needle);
    }
}

static int64_t soon(void)
{
    return csql__mono_ms() + 5000;
}

/* ---------------- static tokens ---------------- */

static void test_static_token(void **state)
{
    (void)state;
    struct csql_config cfg = {0};
    cfg.cred_kind = CSQL__CRED_TOKEN;
    cfg.token = (char *)(uintptr_t) "tok-admin";
    csql__creds *c = NULL;
    assert_int_equal(csql__creds_new(&cfg, NULL, &c), CSQL_OK);
    assert_string_equal(csql__creds_describe(c), "static token");
    csql__token t;
    assert_int_equal(csql__creds_token(c, CSQL_TOKEN_ADMIN, soon(), &t), CSQL_OK);
    assert_string_equal(t.value, "tok-admin");
    assert_int_equal(t.expires_at, 0);
    csql__token_dispose(&t);
    assert_int_equal(csql__creds_token(c, CSQL_TOKEN_LOGIN, soon(), &t), CSQL_OK);
    assert_string_equal(t.value, "tok-admin"); /* no login token: the access token */
    csql__token_dispose(&t);
    assert_int_equal(csql__creds_token(c, (csql_token_kind)9, soon(), &t),
                     CSQL_ERR_INVALID_ARGUMENT);
    csql__creds_free(c);

    cfg.login_token = (char *)(uintptr_t) "tok-login";
    assert_int_equal(csql__creds_new(&cfg, NULL, &c), CSQL_OK);
    assert_int_equal(csql__creds_token(c, CSQL_TOKEN_LOGIN, soon(), &t), CSQL_OK);
    assert_string_equal(t.value, "tok-login");
    csql__token_dispose(&t);
    assert_int_equal(csql__creds_token(c, CSQL_TOKEN_ADMIN, soon(), &t), CSQL_OK);
    assert_string_equal(t.value, "tok-admin");
    csql__token_dispose(&t);
    csql__creds_free(c);

    /* A token that would inject a header is refused and never echoed. */
    cfg.login_token = NULL;
    cfg.token = (char *)(uintptr_t) "SECRETTOK\r\nX-Evil: 1";
    assert_int_equal(csql__creds_new(&cfg, NULL, &c), CSQL_OK);
    csql_error_clear();
    assert_int_equal(csql__creds_token(c, CSQL_TOKEN_ADMIN, soon(), &t), CSQL_ERR_CREDENTIALS);
    assert_msg_lacks("SECRETTOK");
    assert_null(t.value);
    csql__creds_free(c);

    cfg.token = NULL;
    assert_int_equal(csql__creds_new(&cfg, NULL, &c), CSQL_ERR_CREDENTIALS);
}

/* ---------------- the callback ---------------- */

typedef struct cb_state {
    atomic_int calls;
    int fail;            /* return this when non-zero */
    long sleep_ms;       /* inside the callback */
    int64_t lifetime_s;  /* 0: expiry unknown */
    int mode;            /* 0 normal, 1 no NUL, 2 bad characters */
} cb_state;

static int token_cb(csql_token_kind kind, char *buf, size_t buflen, int64_t *expires_at,
                    void *userdata)
{
    cb_state *s = userdata;
    int n = atomic_fetch_add(&s->calls, 1) + 1;
    if (s->sleep_ms > 0) {
        struct timespec ts = {s->sleep_ms / 1000, (s->sleep_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (s->fail) {
        return s->fail;
    }
    if (s->mode == 1) {
        memset(buf, 'z', buflen);
        return 0;
    }
    if (s->mode == 2) {
        snprintf(buf, buflen, "SECRETCB with space");
        return 0;
    }
    snprintf(buf, buflen, "cb-%s-%d", kind == CSQL_TOKEN_LOGIN ? "login" : "admin", n);
    *expires_at = s->lifetime_s ? csql__wall_s() + s->lifetime_s : 0;
    return 0;
}

static csql__creds *callback_creds(cb_state *s)
{
    struct csql_config cfg = {0};
    cfg.cred_kind = CSQL__CRED_CALLBACK;
    cfg.token_fn = token_cb;
    cfg.token_fn_userdata = s;
    csql__creds *c = NULL;
    assert_int_equal(csql__creds_new(&cfg, NULL, &c), CSQL_OK);
    assert_string_equal(csql__creds_describe(c), "token callback");
    return c;
}

static void expect_token(csql__creds *c, csql_token_kind kind, const char *want)
{
    csql__token t;
    assert_int_equal(csql__creds_token(c, kind, soon(), &t), CSQL_OK);
    assert_string_equal(t.value, want);
    csql__token_dispose(&t);
}

static void test_callback_cached_per_kind(void **state)
{
    (void)state;
    cb_state s = {.lifetime_s = 3600};
    csql__creds *c = callback_creds(&s);
    for (int i = 0; i < 10; i++) {
        expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-1");
    }
    assert_int_equal(atomic_load(&s.calls), 1);
    expect_token(c, CSQL_TOKEN_LOGIN, "cb-login-2");
    expect_token(c, CSQL_TOKEN_LOGIN, "cb-login-2");
    assert_int_equal(atomic_load(&s.calls), 2);

    /* 1 h token: still cached with 16 min left, refreshed with 14 min (a quarter) left. */
    csql__clock_set_offset_s(3600 - 16 * 60);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-1");
    csql__clock_set_offset_s(3600 - 14 * 60);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-3");
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-3");
    assert_int_equal(atomic_load(&s.calls), 3);
    csql__clock_set_offset_s(0);
    csql__creds_free(c);
}

static void test_refresh_margin_short_tokens(void **state)
{
    (void)state;
    /* 20 min token: refreshed with fewer than 5 min (the 4 min floor is below a quarter). */
    cb_state s = {.lifetime_s = 1200};
    csql__creds *c = callback_creds(&s);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-1");
    csql__clock_set_offset_s(1200 - 301);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-1");
    csql__clock_set_offset_s(1200 - 299);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-2");
    csql__clock_set_offset_s(0);
    csql__creds_free(c);

    /* 10 min token: the 4 min floor applies. */
    cb_state s2 = {.lifetime_s = 600};
    c = callback_creds(&s2);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-1");
    csql__clock_set_offset_s(600 - 241);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-1");
    csql__clock_set_offset_s(600 - 239);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-2");
    csql__clock_set_offset_s(0);
    csql__creds_free(c);

    /* A 2 min token is still reused for half its life rather than fetched on every call. */
    cb_state s3 = {.lifetime_s = 120};
    c = callback_creds(&s3);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-1");
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-1");
    csql__clock_set_offset_s(61);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-2");
    csql__clock_set_offset_s(0);
    csql__creds_free(c);
}

static void test_callback_unknown_expiry_not_cached(void **state)
{
    (void)state;
    cb_state s = {.lifetime_s = 0};
    csql__creds *c = callback_creds(&s);
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-1");
    expect_token(c, CSQL_TOKEN_ADMIN, "cb-admin-2");
    assert_int_equal(atomic_load(&s.calls), 2);
    csql__creds_free(c);
}

static void test_callback_failures(void **state)
{
    (void)state;
    csql__token t;
    cb_state s = {.fail = 7};
    csql__creds *c = callback_creds(&s);
    csql_error_clear();
    assert_int_equal(csql__creds_token(c, CSQL_TOKEN_LOGIN, soon(), &t), CSQL_ERR_TOKEN);
    assert_msg_has("token callback failed (returned 7) for the login token");
    assert_int_equal(csql_error_last()->category, CSQL_CAT_AUTH);
    assert_null(t.value);
    /* Failures are not cached: the next call asks again. */
    assert_int_equal(csql__creds_token(c, CSQL_TOKEN_LOGIN, soon(), &t), CSQL_ERR_TOKEN);
    assert_int_equal(atomic_load(&s.calls), 2);
    s.fail = 0;
    s.lifetime_s = 3600;
    expect_token(c, CSQL_TOKEN_LOGIN, "cb-login-3");
    csql__creds_free(c);

    cb_state s1 = {.mode = 1};
    c = callback_creds(&s1);
    assert_int_equal(csql__creds_token(c, CSQL_TOKEN_ADMIN, soon(), &t), CSQL_ERR_TOKEN);
    assert_msg_has("no NUL-terminated token");
    csql__creds_free(c);

    cb_state s2 = {.mode = 2};
    c = callback_creds(&s2);
    assert_int_equal(csql__creds_token(c, CSQL_TOKEN_ADMIN, soon(), &t), CSQL_ERR_TOKEN);
    assert_msg_lacks("SECRETCB");
    csql__creds_free(c);

    struct csql_config cfg = {0};
    cfg.cred_kind = CSQL__CRED_CALLBACK;
    assert_int_equal(csql__creds_new(&cfg, NULL, &c), CSQL_ERR_CREDENTIALS);
}

/* ---------------- single flight ---------------- */

#define N_THREADS 8

typedef struct caller {
    csql__creds *c;
    int64_t deadline_ms;
    int rc;
    char value[64];
    char message[256];
} caller;

static void *call_token(void *arg)
{
    caller *k = arg;
    csql__token t;
    k->rc = csql__creds_token(k->c, CSQL_TOKEN_ADMIN, k->deadline_ms, &t);
    if (k->rc == CSQL_OK) {
        snprintf(k->value, sizeof(k->value), "%s", t.value);
        csql__token_dispose(&t);
    } else {
        snprintf(k->message, sizeof(k->message), "%s", csql_error_last()->message);
    }
    return NULL;
}

static void run_callers(caller *k, int n)
{
    pthread_t th[N_THREADS];
    for (int i = 0; i < n; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, call_token, &k[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
    }
}

static void test_single_flight_success(void **state)
{
    (void)state;
    cb_state s = {.lifetime_s = 3600, .sleep_ms = 200};
    csql__creds *c = callback_creds(&s);
    caller k[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        k[i] = (caller){.c = c, .deadline_ms = soon()};
    }
    run_callers(k, N_THREADS);
    assert_int_equal(atomic_load(&s.calls), 1);
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(k[i].rc, CSQL_OK);
        assert_string_equal(k[i].value, "cb-admin-1");
    }
    csql__creds_free(c);
}

static void test_single_flight_failure_shared(void **state)
{
    (void)state;
    cb_state s = {.fail = 3, .sleep_ms = 200};
    csql__creds *c = callback_creds(&s);
    caller k[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        k[i] = (caller){.c = c, .deadline_ms = soon()};
    }
    run_callers(k, N_THREADS);
    /* Every caller that waited got the one failure; none started its own fetch at once. */
    assert_int_equal(atomic_load(&s.calls), 1);
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(k[i].rc, CSQL_ERR_TOKEN);
        assert_non_null(strstr(k[i].message, "returned 3"));
    }
    csql__creds_free(c);
}

static void test_waiter_deadline(void **state)
{
    (void)state;
    cb_state s = {.lifetime_s = 3600, .sleep_ms = 600};
    csql__creds *c = callback_creds(&s);
    caller k[2] = {{.c = c, .deadline_ms = soon()}, {.c = c}};
    pthread_t first;
    assert_int_equal(pthread_create(&first, NULL, call_token, &k[0]), 0);
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL); /* let the first caller start the fetch */
    k[1].deadline_ms = csql__mono_ms() + 100;
    int64_t t0 = csql__mono_ms();
    call_token(&k[1]);
    int64_t took = csql__mono_ms() - t0;
    pthread_join(first, NULL);
    assert_int_equal(k[0].rc, CSQL_OK);
    assert_int_equal(k[1].rc, CSQL_ERR_TIMEOUT);
    assert_non_null(strstr(k[1].message, "waiting for the admin token from token callback"));
    assert_in_range(took, 80, 450);
    csql__creds_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_static_token),
        cmocka_unit_test(test_callback_cached_per_kind),
        cmocka_unit_test(test_refresh_margin_short_tokens),
        cmocka_unit_test(test_callback_unknown_expiry_not_cached),
        cmocka_unit_test(test_callback_failures),
        cmocka_unit_test(test_single_flight_success),
        cmocka_unit_test(test_single_flight_failure_shared),
        cmocka_unit_test(test_waiter_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
