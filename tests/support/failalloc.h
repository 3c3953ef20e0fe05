/*
 * Test helper: allocation-failure injection. Makes the Nth allocation made
 * by the calling thread fail (returns NULL with errno ENOMEM), for tests that
 * fail each allocation of an operation in turn and check that it reports
 * CSQL_ERR_NOMEM (or its own error), crashes nowhere and leaks nothing (run
 * them under the asan preset: LeakSanitizer checks at exit).
 *
 * What is counted, on the armed thread only:
 *   - csql's own malloc/calloc/realloc/strdup/strndup: link the test with
 *       LINKER:--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup
 *     (CSQLT_FAILALLOC_LINK_OPTIONS in CMake; without it this file does not link);
 *   - jansson's allocations (json_set_alloc_funcs);
 *   - OpenSSL's allocations (CRYPTO_set_mem_functions), so PEM, X.509 and
 *     SSL_CTX failures are injected too;
 *   - libcurl's (curl_global_init_mem, before csql initialises curl).
 * Other threads (cmocka, refresh workers) are never affected, and neither is
 * libc-internal allocation (getaddrinfo, stdio).
 */
#ifndef CSQL_TEST_FAILALLOC_H
#define CSQL_TEST_FAILALLOC_H

/*
 * Install the jansson, OpenSSL and libcurl hooks. Call first thing in main(),
 * before anything has used OpenSSL or curl: 0, or -1 if OpenSSL had already
 * allocated (its hooks can then no longer be set) or curl failed to start.
 */
int csqlt_failalloc_install(void);

/* From now on, on this thread: let n allocations succeed, fail the next one, let the rest succeed. */
void csqlt_failalloc_arm(long n);
/* The same, but every allocation after the nth fails too (memory stays short). */
void csqlt_failalloc_arm_sticky(long n);
/*
 * Count (and fail the nth) allocation of every thread, not only this one:
 * for code whose work happens on its own threads (a refresh worker). Which
 * allocation is the nth then depends on scheduling; disarm and injected work
 * as for this thread.
 */
void csqlt_failalloc_arm_global(long n);
/* Stop injecting on this thread; returns the number of allocations seen since arm. */
long csqlt_failalloc_disarm(void);
/* Where the failure injected since the last arm on this thread happened; 0 if none yet. */
enum {
    CSQLT_FA_NONE = 0,
    CSQLT_FA_CSQL = 1,    /* csql's own malloc/calloc/realloc/strdup/strndup */
    CSQLT_FA_JANSSON = 2, /* jansson (note: its lexer ignores a failed string buffer growth
                           * and drops the byte, so a parse may "succeed" with a damaged string) */
    CSQLT_FA_OPENSSL = 3,
    CSQLT_FA_CURL = 4     /* libcurl (curl_global_init_mem) */
};
int csqlt_failalloc_injected(void);

/*
 * Count and fail only allocations from these sources (a mask of
 * CSQLT_FA_BIT(CSQLT_FA_CSQL) etc.; 0 or CSQLT_FA_ALL: every source). For
 * long operations where failing every OpenSSL allocation would take too long.
 */
#define CSQLT_FA_BIT(src) (1 << (src))
#define CSQLT_FA_ALL (CSQLT_FA_BIT(CSQLT_FA_CSQL) | CSQLT_FA_BIT(CSQLT_FA_JANSSON) | \
                      CSQLT_FA_BIT(CSQLT_FA_OPENSSL) | CSQLT_FA_BIT(CSQLT_FA_CURL))
void csqlt_failalloc_only(int mask);

/*
 * Fail each allocation of run(arg) in turn: for n = 0, 1, 2, ... arm(n), call
 * run, disarm, and hand its result to check(arg, rc, injected) (injected as
 * csqlt_failalloc_injected() returned it), which asserts
 * and frees whatever run produced. Stops after the first run in which no
 * failure was injected (it allocated n times or fewer) and returns that n, the
 * number of allocations of a clean run; -1 if max runs all had injections.
 */
typedef int (*csqlt_failalloc_run_fn)(void *arg);
typedef void (*csqlt_failalloc_check_fn)(void *arg, int rc, int injected);
long csqlt_failalloc_each(csqlt_failalloc_run_fn run, csqlt_failalloc_check_fn check, void *arg,
                          long max);
/* The same with csqlt_failalloc_arm_global: the nth allocation of any thread fails. */
long csqlt_failalloc_each_global(csqlt_failalloc_run_fn run, csqlt_failalloc_check_fn check,
                                 void *arg, long max);
/* The same with csqlt_failalloc_arm_sticky: from the nth allocation on, all fail. */
long csqlt_failalloc_each_sticky(csqlt_failalloc_run_fn run, csqlt_failalloc_check_fn check,
                                 void *arg, long max);

#endif
