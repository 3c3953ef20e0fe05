/*
 * Internal to cache.c and refresher.c: the layout of the cache and its
 * entries, and the few functions the two share. Everything marked "mu" is
 * read and written only with csql__cache.mu held.
 */
#ifndef CSQL_SRC_CACHE_INTERNAL_H
#define CSQL_SRC_CACHE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache.h"
#include "error.h"
#include "ratelimit.h"

#define CSQL__CACHE_MAX_WORKERS 8
#define CSQL__REFRESH_BUFFER_S 240 /* lazy: refresh when this close to expiry */

struct csql__cache_entry {
    atomic_int refs;                /* the cache's map holds one; handles and hooks one each */
    csql__instance_name name;       /* immutable */
    bool iam;                       /* immutable */

    /* link_mu guards `cache`: cleared when the cache is freed, so hooks outliving it do nothing. */
    pthread_mutex_t link_mu;
    csql__cache *cache;

    pthread_cond_t done;            /* broadcast when a refresh completes or the cache closes */
    csql__certset *cur;             /* mu: current certset, or NULL */
    csql__saved_error err;          /* mu: last failure, kept while no valid certset exists */
    bool has_err;                   /* mu */
    csql__ratelimit rl;             /* mu */
    bool refreshing;                /* mu: queued or running */
    bool force;                     /* mu: LAZY: next dial refreshes even if the certset is fresh */
    uint64_t done_seq;              /* mu: completed refreshes (success or failure) */
    uint64_t started;               /* mu: stats */
    uint64_t failed;                /* mu: stats */
    int64_t due_wall_ms;            /* mu: BACKGROUND: when the next refresh should run */
    int heap_idx;                   /* mu: position in the scheduler heap, -1 if unscheduled */
    csql__cache_entry *job_next;    /* mu: link in the job queue */

    /* Non-blocking dials (cache_nowait.c). */
    csql__cache_waiter *waiters;    /* mu: armed waiters, woken when a refresh completes */
    bool lazy_kick;                 /* mu: LAZY: a refresh was asked of a worker, not finished */
};

struct csql__cache {
    csql__cache_opts o;             /* with defaults filled in */
    pthread_mutex_t mu;
    atomic_bool closing;            /* set under mu; read lock-free as the refresh's cancel flag */
    bool closed;                    /* mu: close finished joining */
    bool closing_in_progress;       /* mu: a thread is inside close */

    csql__cache_entry **entries;    /* mu: every entry, owned (one ref each) */
    size_t n_entries, cap_entries;

    /* BACKGROUND only. */
    csql__cache_entry **heap;       /* mu: min-heap on due_wall_ms */
    size_t n_heap, cap_heap;
    csql__cache_entry *job_head, *job_tail; /* mu: due refreshes waiting for a worker */
    pthread_cond_t sched_cv;        /* wakes the scheduler */
    pthread_cond_t work_cv;         /* wakes idle workers */
    pthread_cond_t close_cv;        /* wakes a second closer waiting for the first */
    bool sched_started;
    pthread_t sched_thread;
    pthread_t workers[CSQL__CACHE_MAX_WORKERS];
    int n_workers;                  /* mu */
    int idle_workers;               /* mu */
    int n_queued;                   /* mu: jobs in the queue */
    int running;                    /* mu: refreshes queued or running */
};

/* refresher.c */
int csql__refresher_start(csql__cache *c);
/* Joins the scheduler and every worker; call without mu after setting closing. */
void csql__refresher_join(csql__cache *c);
/* (Re)schedule e at due_wall_ms (earlier of the old and new time if already scheduled). mu held. */
void csql__sched_at_locked(csql__cache *c, csql__cache_entry *e, int64_t due_wall_ms);
/* Make room in the heap for n entries (so scheduling never allocates). 0 or -1. mu held. */
int csql__sched_reserve_locked(csql__cache *c, size_t n);
/* Take e out of the schedule. mu held. */
void csql__sched_remove_locked(csql__cache *c, csql__cache_entry *e);

/* cache.c */
/*
 * Record the outcome of a refresh of e (refreshing -> false): on success cs
 * (reference passed in) becomes current; on failure the error in *saved
 * (moved in) is kept unless a still-valid certset exists. Wakes waiters.
 * BACKGROUND: plans the next refresh. mu held.
 */
void csql__cache_complete_locked(csql__cache *c, csql__cache_entry *e, int rc, csql__certset *cs,
                                 csql__saved_error *saved);
/*
 * Run the refresh function for e outside mu, with deadline_ms (monotonic).
 * On success *out is a valid certset; on failure the error (raised on this
 * thread) is also copied into *saved and its code returned.
 */
int csql__cache_run_refresh(csql__cache *c, csql__cache_entry *e, int64_t deadline_ms,
                            csql__certset **out, csql__saved_error *saved);
/* Wait on cv until deadline_ms (monotonic); 0 if woken, ETIMEDOUT after the deadline. mu held. */
int csql__cache_wait_locked(csql__cache *c, pthread_cond_t *cv, int64_t deadline_ms);
/* An unexpired certset by the wall clock. */
/* Usable for a new dial at wall_s: more than CSQL__CERT_MIN_LEFT_S seconds left. */
bool csql__cache_cs_valid(const csql__certset *cs, int64_t wall_s);

/* cache.c, for cache_nowait.c: what csql__cache_get does, in pieces. mu held. */
int csql__cache_find_or_create_locked(csql__cache *c, const csql__instance_name *name, bool iam,
                                      csql__cache_entry **out);
void csql__cache_forget_expired_locked(csql__cache *c, csql__cache_entry *e, int64_t wall_s);
int csql__cache_timeout_error_locked(csql__cache *c, csql__cache_entry *e, int64_t waited_ms);

/* cache_nowait.c: wake (and disarm) every waiter of e. mu held. */
void csql__cache_wake_waiters_locked(csql__cache_entry *e);

#endif
