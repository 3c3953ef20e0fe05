/*
 * Internal: the certificate cache of a dialer (REFERENCE §5; docs/internals/refresh.md).
 *
 * One entry per (instance name, IAM flag). An entry holds the current certset
 * (refcounted), the error of the last failed refresh while no valid certset
 * exists, a rate limiter (burst 2, one refresh per 30 s) and its schedule.
 *
 * BACKGROUND: one scheduler thread ("csql-refresh") keeps every entry in a
 * min-heap ordered by the wall-clock time of its next refresh and hands due
 * refreshes to a small pool of worker threads ("csql-refresh-N", at most
 * max_workers, created on demand, joined on close), so one slow instance
 * never holds up the others.
 * LAZY: no threads; the dialing thread refreshes when the certset is within
 * 4 minutes of expiry or invalid, one refresh per entry at a time (other
 * dialers use the still-valid certset or wait), rate-limited all the same.
 *
 * The refresh itself is injected (csql__cache_refresh_fn), so unit tests run
 * the cache against a fake. All functions are thread-safe.
 */
#ifndef CSQL_SRC_CACHE_H
#define CSQL_SRC_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "certset.h"
#include "csql/config.h"
#include "instance_name.h"
#include "log.h"

/* Seconds a certificate must have left to be used for a new dial. */
#define CSQL__CERT_MIN_LEFT_S 5

/*
 * Make one certset for (name, iam) before deadline_ms (monotonic). On success
 * return 0 with *out holding one reference; on failure raise a csql error on
 * the calling thread (csql__error) and return its code. `cancel` becomes true
 * when the cache is closing: a refresh that can notice it should give up early.
 */
typedef int (*csql__cache_refresh_fn)(void *arg, const csql__instance_name *name, bool iam,
                                      int64_t deadline_ms, const atomic_bool *cancel,
                                      csql__certset **out);

typedef struct csql__cache_opts {
    csql_refresh_strategy strategy;
    csql__cache_refresh_fn refresh;
    void *refresh_arg;
    uint32_t refresh_timeout_ms;  /* deadline of one background refresh */
    const csql__logger *log;      /* may be NULL; must outlive the cache */
    /* Tunables; 0 means the default. Tests shrink them. */
    int rl_burst;                 /* 2 */
    int64_t rl_interval_ms;       /* 30000 */
    int max_workers;              /* 4 */
    int64_t max_sleep_ms;         /* 30000: longest scheduler sleep between wall-clock checks */
} csql__cache_opts;

typedef struct csql__cache csql__cache;
typedef struct csql__cache_entry csql__cache_entry;

/* Create a cache; BACKGROUND starts the scheduler thread. CSQL_ERR_NOMEM / CSQL_ERR_INTERNAL. */
int csql__cache_new(const csql__cache_opts *opts, csql__cache **out);

/*
 * Stop: later gets fail with CSQL_ERR_CLOSED, waiting dials wake with it,
 * pending refreshes are cancelled and every cache thread is joined (an
 * in-flight refresh is waited for; it is told to stop through `cancel`).
 * Idempotent. Must not be called from a refresh function.
 */
void csql__cache_close(csql__cache *c);

/* Close if needed and free. Entries still held by connections become inert. NULL is ignored. */
void csql__cache_free(csql__cache *c);

/*
 * Find or create the entry of (name, iam) and return a valid certset for it:
 * from the entry if its certset is unexpired by the wall clock, else after a
 * refresh (waiting up to deadline_ms, monotonic). On success *entry and *cs
 * hold one reference each. Errors: CSQL_ERR_CLOSED; the saved error of the
 * failed refresh (with its message) when no valid certset exists;
 * CSQL_ERR_TIMEOUT (naming the instance and the last refresh error, if any).
 */
int csql__cache_get(csql__cache *c, const csql__instance_name *name, bool iam,
                    int64_t deadline_ms, csql__cache_entry **entry, csql__certset **cs);

/*
 * Create the entry if needed and get its first refresh going. With wait,
 * as csql__cache_get without returning anything. Without wait, BACKGROUND
 * returns at once; LAZY refreshes on the calling thread (there is no other).
 */
int csql__cache_warmup(csql__cache *c, const csql__instance_name *name, bool iam, int wait,
                       int64_t deadline_ms);

/*
 * A TCP connect to the instance failed: refresh soon (rate-limited), keep
 * using the current certset meanwhile. BACKGROUND: the refresh is scheduled
 * now; LAZY: the next dial refreshes.
 */
void csql__cache_force_refresh(csql__cache_entry *e);

/*
 * A TLS handshake or TLS I/O error happened with certset `used`: if it is
 * still the entry's current certset, forget it so the next dial waits for a
 * fresh one (CA rotation), and schedule that refresh. A later error from a
 * connection made with an older certset changes nothing. If the calling
 * thread's last error is a TLS error it is saved on the entry: dials that
 * find no certset and may not refresh yet (rate limit) fail fast with it.
 */
void csql__cache_drop(csql__cache_entry *e, const csql__certset *used);

csql__cache_entry *csql__cache_entry_ref(csql__cache_entry *e);
void csql__cache_entry_unref(csql__cache_entry *e);

/*
 * A connection's link back to its entry, for csql__conn_new's on_tls_error /
 * release pair. Holds references on the entry and on the certset used, so it
 * stays safe after the cache is freed (it then does nothing).
 */
typedef struct csql__cache_hook csql__cache_hook;
/* NULL on allocation failure. */
csql__cache_hook *csql__cache_hook_new(csql__cache_entry *e, csql__certset *used);
/* csql__conn_tls_error_fn: drop the entry's certset if it is still `used`. */
void csql__cache_hook_fire(void *hook);
/* csql__conn_release_fn: free the hook. */
void csql__cache_hook_release(void *hook);

/* What the cache knows of an entry, for tests and diagnostics. */
typedef struct csql__cache_entry_stats {
    uint64_t refreshes_started;
    uint64_t refreshes_failed;
    bool has_certset;       /* a certset is held (it may have expired) */
    bool refreshing;        /* a refresh is queued or running */
    bool scheduled;         /* BACKGROUND: a refresh is planned */
    int64_t next_refresh_wall_ms; /* when, if scheduled */
    int saved_error;        /* code of the saved error, or 0 */
} csql__cache_entry_stats;

/* 0, or CSQL_ERR_NOT_FOUND when the cache has no such entry. */
int csql__cache_stats(csql__cache *c, const csql__instance_name *name, bool iam,
                      csql__cache_entry_stats *out);

/* Number of refresh worker threads started so far (BACKGROUND), for tests. */
int csql__cache_worker_count(csql__cache *c);


/* ---- Getting a certset without blocking (csql_dial_async; cache_nowait.c) ---- */

/*
 * A non-blocking get's registration on its entry. Embed it in the waiting
 * object and zero it before first use. notify(arg) runs when something the
 * waiter may be waiting for happened (a refresh of the entry finished, or the
 * cache is closing): on any thread, under the cache lock, so it must only
 * signal (write an eventfd) and never call into the cache. One-shot: each
 * csql__cache_get_nowait returning CSQL_ERR_WOULD_BLOCK arms it again.
 */
typedef struct csql__cache_waiter {
    void (*notify)(void *arg);
    void *arg;
    /* private to the cache (under its lock) */
    struct csql__cache_waiter *prev, *next;
    bool linked;
    bool started;     /* seen is set */
    bool tried;       /* LAZY: this waiter asked for a refresh */
    uint64_t seen;    /* the entry's completed refreshes at the first get */
} csql__cache_waiter;

/* Find or create the entry of (name, iam), with one reference. CSQL_ERR_CLOSED, CSQL_ERR_NOMEM. */
int csql__cache_entry_get(csql__cache *c, const csql__instance_name *name, bool iam,
                          csql__cache_entry **out);

/*
 * csql__cache_get without waiting, for entry e (from csql__cache_entry_get):
 *   0: *cs holds a reference on a valid certset;
 *   CSQL_ERR_WOULD_BLOCK: w is armed; call again after its notify ran
 *     (spurious calls are harmless);
 *   else the error csql__cache_get would have returned, raised on this
 *     thread (CSQL_ERR_CLOSED, the saved refresh error).
 * No deadline here: the caller keeps its own and raises
 * csql__cache_timeout_error when it passes (after csql__cache_waiter_cancel).
 * LAZY never refreshes on the calling thread: *kick set means a refresh must
 * run elsewhere with csql__cache_lazy_refresh(e), or, if that cannot be
 * arranged, csql__cache_lazy_abandon(e). A certset with under 4 minutes
 * left is returned at once (with a kick), where csql__cache_get would have
 * refreshed first.
 */
int csql__cache_get_nowait(csql__cache_entry *e, csql__cache_waiter *w, csql__certset **cs,
                           bool *kick);

/* Disarm w: no notify runs once this returns. Safe when not armed and after the cache is freed. */
void csql__cache_waiter_cancel(csql__cache_entry *e, csql__cache_waiter *w);

/* Raise and return csql__cache_get's CSQL_ERR_TIMEOUT for e (instance, rate limit, last error). */
int csql__cache_timeout_error(csql__cache_entry *e, int64_t waited_ms);

/*
 * LAZY, after a kick, on a thread that may block: refresh e as a dial of
 * csql__cache_get would (single flight, rate-limited) within deadline_ms,
 * then wake e's waiters. The result reaches them through the entry.
 */
void csql__cache_lazy_refresh(csql__cache_entry *e, int64_t deadline_ms);
/* LAZY: a kick that will not run: forget it and wake e's waiters. */
void csql__cache_lazy_abandon(csql__cache_entry *e);

#endif
