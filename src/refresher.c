/*
 * The BACKGROUND strategy's threads: one scheduler ("csql-refresh") that
 * keeps the entries in a min-heap ordered by the wall-clock time of their
 * next refresh, takes rate-limit tokens, and queues due refreshes for a pool
 * of at most max_workers workers ("csql-refresh-N", started on demand, joined
 * on close). A refresh never runs under the cache lock.
 */
#include "cache_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/clock.h"

/* ---- min-heap on due_wall_ms; every entry knows its index ---- */

static void heap_set(csql__cache *c, size_t i, csql__cache_entry *e)
{
    c->heap[i] = e;
    e->heap_idx = (int)i;
}

static void sift_up(csql__cache *c, size_t i)
{
    csql__cache_entry *e = c->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (c->heap[parent]->due_wall_ms <= e->due_wall_ms) {
            break;
        }
        heap_set(c, i, c->heap[parent]);
        i = parent;
    }
    heap_set(c, i, e);
}

static void sift_down(csql__cache *c, size_t i)
{
    csql__cache_entry *e = c->heap[i];
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= c->n_heap) {
            break;
        }
        size_t m = l;
        if (l + 1 < c->n_heap && c->heap[l + 1]->due_wall_ms < c->heap[l]->due_wall_ms) {
            m = l + 1;
        }
        if (e->due_wall_ms <= c->heap[m]->due_wall_ms) {
            break;
        }
        heap_set(c, i, c->heap[m]);
        i = m;
    }
    heap_set(c, i, e);
}

int csql__sched_reserve_locked(csql__cache *c, size_t n)
{
    if (n <= c->cap_heap) {
        return 0;
    }
    csql__cache_entry **grown = realloc(c->heap, n * sizeof(*grown));
    if (grown == NULL) {
        return -1;
    }
    c->heap = grown;
    c->cap_heap = n;
    return 0;
}

static int heap_push(csql__cache *c, csql__cache_entry *e)
{
    /* Room for every entry is reserved when the entry is made; this is a backstop. */
    if (c->n_heap == c->cap_heap && csql__sched_reserve_locked(c, c->cap_heap * 2 + 8) != 0) {
        return -1;
    }
    heap_set(c, c->n_heap++, e);
    sift_up(c, c->n_heap - 1);
    return 0;
}

void csql__sched_remove_locked(csql__cache *c, csql__cache_entry *e)
{
    if (e->heap_idx < 0) {
        return;
    }
    size_t i = (size_t)e->heap_idx;
    e->heap_idx = -1;
    c->n_heap--;
    if (i == c->n_heap) {
        return;
    }
    csql__cache_entry *last = c->heap[c->n_heap];
    heap_set(c, i, last);
    sift_down(c, i);
    sift_up(c, (size_t)last->heap_idx);
}

void csql__sched_at_locked(csql__cache *c, csql__cache_entry *e, int64_t due_wall_ms)
{
    if (c->o.strategy != CSQL_REFRESH_BACKGROUND || e->refreshing || atomic_load(&c->closing)) {
        return;
    }
    if (e->heap_idx >= 0) {
        if (due_wall_ms < e->due_wall_ms) {
            e->due_wall_ms = due_wall_ms;
            sift_up(c, (size_t)e->heap_idx);
        }
        /* Wake the scheduler even if nothing moved: the wall clock may have jumped past it. */
    } else {
        e->due_wall_ms = due_wall_ms;
        if (heap_push(c, e) != 0) {
            csql__log(c->o.log, CSQL_LOG_ERROR,
                      "out of memory scheduling the refresh of %s; the next dial will retry",
                      e->name.full);
            return;
        }
    }
    pthread_cond_signal(&c->sched_cv);
}

/* ---- threads ---- */

/* Start a thread that blocks every signal (they belong to the application), and name it. */
static int spawn(pthread_t *t, void *(*fn)(void *), void *arg, const char *name)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) {
        pthread_setname_np(*t, name);
    }
    return rc;
}

static csql__cache_entry *dequeue_locked(csql__cache *c)
{
    csql__cache_entry *e = c->job_head;
    if (e != NULL) {
        c->job_head = e->job_next;
        if (c->job_head == NULL) {
            c->job_tail = NULL;
        }
        e->job_next = NULL;
        c->n_queued--;
    }
    return e;
}

static void *worker_main(void *arg)
{
    csql__cache *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!atomic_load(&c->closing) && c->job_head == NULL) {
            c->idle_workers++;
            pthread_cond_wait(&c->work_cv, &c->mu);
            c->idle_workers--;
        }
        if (atomic_load(&c->closing)) {
            break;
        }
        csql__cache_entry *e = dequeue_locked(c);
        pthread_mutex_unlock(&c->mu);

        csql__certset *cs = NULL;
        csql__saved_error saved = {0};
        int64_t deadline = csql__mono_ms() + c->o.refresh_timeout_ms;
        int rc = csql__cache_run_refresh(c, e, deadline, &cs, &saved);

        pthread_mutex_lock(&c->mu);
        c->running--;
        csql__cache_complete_locked(c, e, rc, cs, &saved);
        csql__saved_error_dispose(&saved);
        pthread_cond_signal(&c->sched_cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* No worker could be started for e: fail its refresh so that dials see why. */
static void fail_dispatch_locked(csql__cache *c, csql__cache_entry *e, int err)
{
    csql__saved_error saved = {0};
    csql__error(CSQL_ERR_INTERNAL, "could not start a refresh thread for %s (error %d)",
                e->name.full, err);
    if (csql__error_save(&saved) != 0) {
        saved.code = CSQL_ERR_INTERNAL;
    }
    c->running--;
    csql__cache_complete_locked(c, e, CSQL_ERR_INTERNAL, NULL, &saved);
    csql__saved_error_dispose(&saved);
}

static void dispatch_locked(csql__cache *c, csql__cache_entry *e)
{
    e->refreshing = true;
    e->started++;
    c->running++;
    if (c->job_tail != NULL) {
        c->job_tail->job_next = e;
    } else {
        c->job_head = e;
    }
    c->job_tail = e;
    c->n_queued++;
    if (c->n_queued <= c->idle_workers || c->n_workers >= c->o.max_workers) {
        pthread_cond_signal(&c->work_cv);
        return;
    }
    char name[16];
    snprintf(name, sizeof(name), "csql-refresh-%d", c->n_workers + 1);
    int err = spawn(&c->workers[c->n_workers], worker_main, c, name);
    if (err == 0) {
        c->n_workers++;
        return;
    }
    csql__log(c->o.log, CSQL_LOG_ERROR, "could not start refresh worker %s (error %d)", name, err);
    if (c->n_workers == 0) {
        /* Nobody will ever pick the job up: take it back and fail it. */
        c->job_head = c->job_tail = NULL;
        c->n_queued = 0;
        e->job_next = NULL;
        fail_dispatch_locked(c, e, err);
    }
}

static void *sched_main(void *arg)
{
    csql__cache *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!atomic_load(&c->closing)) {
        int64_t wall = csql__wall_ms();
        int64_t sleep_ms = c->o.max_sleep_ms;
        /* Each pass defers or dispatches every due entry once, so it ends. */
        while (c->n_heap > 0 && c->running < c->o.max_workers) {
            csql__cache_entry *e = c->heap[0];
            if (e->due_wall_ms > wall) {
                if (e->due_wall_ms - wall < sleep_ms) {
                    sleep_ms = e->due_wall_ms - wall;
                }
                break;
            }
            int64_t wait = csql__ratelimit_take(&e->rl, csql__mono_ms());
            if (wait > 0) {
                e->due_wall_ms = wall + wait;
                sift_down(c, 0);
                continue;
            }
            csql__sched_remove_locked(c, e);
            dispatch_locked(c, e);
        }
        csql__cache_wait_locked(c, &c->sched_cv, csql__mono_ms() + sleep_ms);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int csql__refresher_start(csql__cache *c)
{
    int err = spawn(&c->sched_thread, sched_main, c, "csql-refresh");
    if (err != 0) {
        return csql__error(CSQL_ERR_INTERNAL, "could not start the csql-refresh thread (error %d)",
                           err);
    }
    c->sched_started = true;
    return 0;
}

void csql__refresher_join(csql__cache *c)
{
    if (c->sched_started) {
        pthread_join(c->sched_thread, NULL);
        c->sched_started = false;
    }
    /* The scheduler was the only thread starting workers: the count is final. */
    pthread_mutex_lock(&c->mu);
    int n = c->n_workers;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++) {
        pthread_join(c->workers[i], NULL);
    }
    pthread_mutex_lock(&c->mu);
    csql__cache_entry *e;
    while ((e = dequeue_locked(c)) != NULL) {
        e->refreshing = false; /* a job nobody ran */
    }
    c->running = 0;
    pthread_mutex_unlock(&c->mu);
}
