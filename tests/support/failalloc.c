/*
 * Allocation-failure injection (failalloc.h). The --wrap'ed entry points and
 * the jansson, OpenSSL and libcurl hooks all ask one countdown (the calling
 * thread's, or in global mode a shared one) whether this allocation fails;
 * the real allocators are reached through __real_*, so the sanitizers'
 * allocators keep working under the asan preset.
 */
#include "failalloc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static _Thread_local int fa_armed;
static _Thread_local long fa_left;  /* allocations still allowed before the failing one */
static _Thread_local long fa_seen;  /* allocations since arm */
static _Thread_local int fa_injected; /* CSQLT_FA_* of the first injected failure */
static _Thread_local int fa_sticky;   /* every allocation after the first failure fails too */

static atomic_int fa_mask = CSQLT_FA_ALL;

/* Global mode (every thread): one shared countdown. */
static atomic_int fa_g_armed;
static atomic_long fa_g_left;
static atomic_long fa_g_seen;
static atomic_int fa_g_injected;

static int fa_fail_now_global(int where)
{
    atomic_fetch_add(&fa_g_seen, 1);
    if (atomic_load(&fa_g_injected) != 0 || atomic_fetch_sub(&fa_g_left, 1) > 0) {
        return 0;
    }
    int none = 0;
    if (!atomic_compare_exchange_strong(&fa_g_injected, &none, where)) {
        return 0; /* another thread took the one failure */
    }
    errno = ENOMEM;
    return 1;
}

static int fa_fail_now(int where)
{
    if ((atomic_load_explicit(&fa_mask, memory_order_relaxed) & CSQLT_FA_BIT(where)) == 0) {
        return 0;
    }
    if (atomic_load_explicit(&fa_g_armed, memory_order_relaxed)) {
        return fa_fail_now_global(where);
    }
    if (!fa_armed) {
        return 0;
    }
    fa_seen++;
    if (fa_injected) {
        if (fa_sticky) {
            errno = ENOMEM;
        }
        return fa_sticky;
    }
    if (fa_left-- > 0) {
        return 0;
    }
    fa_injected = where;
    errno = ENOMEM;
    return 1;
}

void *__wrap_malloc(size_t n)
{
    return fa_fail_now(CSQLT_FA_CSQL) ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fa_fail_now(CSQLT_FA_CSQL) ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return fa_fail_now(CSQLT_FA_CSQL) ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return fa_fail_now(CSQLT_FA_CSQL) ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    return fa_fail_now(CSQLT_FA_CSQL) ? NULL : __real_strndup(s, n);
}

static void *fa_json_malloc(size_t n)
{
    return fa_fail_now(CSQLT_FA_JANSSON) ? NULL : __real_malloc(n);
}

static void *fa_crypto_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return fa_fail_now(CSQLT_FA_OPENSSL) ? NULL : __real_malloc(n);
}

static void *fa_crypto_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return fa_fail_now(CSQLT_FA_OPENSSL) ? NULL : __real_realloc(p, n);
}

static void fa_crypto_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    free(p);
}

static void *fa_curl_malloc(size_t n)
{
    return fa_fail_now(CSQLT_FA_CURL) ? NULL : __real_malloc(n);
}

static void *fa_curl_calloc(size_t n, size_t size)
{
    return fa_fail_now(CSQLT_FA_CURL) ? NULL : __real_calloc(n, size);
}

static void *fa_curl_realloc(void *p, size_t n)
{
    return fa_fail_now(CSQLT_FA_CURL) ? NULL : __real_realloc(p, n);
}

static char *fa_curl_strdup(const char *s)
{
    return fa_fail_now(CSQLT_FA_CURL) ? NULL : __real_strdup(s);
}

int csqlt_failalloc_install(void)
{
    json_set_alloc_funcs(fa_json_malloc, free);
    if (CRYPTO_set_mem_functions(fa_crypto_malloc, fa_crypto_realloc, fa_crypto_free) != 1) {
        return -1;
    }
    /* csql's own curl_global_init later only counts a reference. */
    return curl_global_init_mem(CURL_GLOBAL_DEFAULT, fa_curl_malloc, free, fa_curl_realloc,
                                fa_curl_strdup, fa_curl_calloc) == CURLE_OK
               ? 0
               : -1;
}

void csqlt_failalloc_only(int mask)
{
    atomic_store(&fa_mask, mask == 0 ? CSQLT_FA_ALL : mask);
}

void csqlt_failalloc_arm(long n)
{
    fa_sticky = 0;
    fa_left = n;
    fa_seen = 0;
    fa_injected = 0;
    fa_armed = 1;
}

void csqlt_failalloc_arm_sticky(long n)
{
    csqlt_failalloc_arm(n);
    fa_sticky = 1;
}

void csqlt_failalloc_arm_global(long n)
{
    atomic_store(&fa_g_left, n);
    atomic_store(&fa_g_seen, 0);
    atomic_store(&fa_g_injected, 0);
    atomic_store(&fa_g_armed, 1);
}

long csqlt_failalloc_disarm(void)
{
    if (atomic_exchange(&fa_g_armed, 0)) {
        fa_injected = atomic_load(&fa_g_injected);
        return atomic_load(&fa_g_seen);
    }
    fa_armed = 0;
    return fa_seen;
}

int csqlt_failalloc_injected(void)
{
    return fa_injected;
}

enum { MODE_ONE, MODE_STICKY, MODE_GLOBAL };

static long each(csqlt_failalloc_run_fn run, csqlt_failalloc_check_fn check, void *arg, long max,
                 int mode)
{
    for (long n = 0; n < max; n++) {
        if (mode == MODE_STICKY) {
            csqlt_failalloc_arm_sticky(n);
        } else if (mode == MODE_GLOBAL) {
            fa_injected = 0;
            csqlt_failalloc_arm_global(n);
        } else {
            csqlt_failalloc_arm(n);
        }
        int rc = run(arg);
        csqlt_failalloc_disarm();
        int injected = fa_injected;
        check(arg, rc, injected);
        if (!injected) {
            return n;
        }
    }
    return -1;
}

long csqlt_failalloc_each(csqlt_failalloc_run_fn run, csqlt_failalloc_check_fn check, void *arg,
                          long max)
{
    return each(run, check, arg, max, MODE_ONE);
}

long csqlt_failalloc_each_global(csqlt_failalloc_run_fn run, csqlt_failalloc_check_fn check,
                                 void *arg, long max)
{
    return each(run, check, arg, max, MODE_GLOBAL);
}

long csqlt_failalloc_each_sticky(csqlt_failalloc_run_fn run, csqlt_failalloc_check_fn check,
                                 void *arg, long max)
{
    return each(run, check, arg, max, MODE_STICKY);
}
