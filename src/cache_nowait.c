/*
 * Non-blocking gets from the certificate cache (cache.h, "without blocking"),
 * for csql_dial_async: the decisions of csql__cache_get's wait loops, taken
 * once per call, with a waiter armed on the entry instead of a condition
 * variable wait. The refresher wakes armed waiters when a refresh completes
 * (csql__cache_complete_locked) and close wakes them all. See docs/async.md.
 */
#include "cache_internal.h"

#include <stdlib.h>

#include "util/clock.h"

/* ---- waiter list (mu) ---- */

static void arm_locked(csql__cache_entry *e, csql__cache_waiter *w)
{
    if (w->linked) {
        return;
    }
    w->prev = NULL;
    w->next = e->waiters;
    if (e->waiters != NULL) {
        e->waiters->prev = w;
    }
    e->waiters = w;
    w->linked = true;
}

static void disarm_locked(csql__cache_entry *e, csql__cache_waiter *w)
{
    if (!w->linked) {
        return;
    }
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        e->waiters = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    }
    w->prev = w->next = NULL;
    w->linked = false;
}

void csql__cache_wake_waiters_locked(csql__cache_entry *e)
{
    csql__cache_waiter *w = e->waiters;
    e->waiters = NULL;
    /* Nothing can arm under this lock while we walk: each waiter is visited once. */
    while (w != NULL) {
        csql__cache_waiter *next = w->next;
        w->prev = w->next = NULL;
        w->linked = false;
        w->notify(w->arg);
        w = next;
    }
}

/* ---- the entry's cache, locked ---- */

/* Lock e's cache (link_mu, then mu); NULL (nothing locked) once the cache is freed. */
static csql__cache *lock_cache(csql__cache_entry *e)
{
    pthread_mutex_lock(&e->link_mu);
    csql__cache *c = e->cache;
    if (c == NULL) {
        pthread_mutex_unlock(&e->link_mu);
        return NULL;
    }
    pthread_mutex_lock(&c->mu);
    return c;
}

static void unlock_cache(csql__cache_entry *e, csql__cache *c)
{
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&e->link_mu);
}

static int closed_error(const csql__cache_entry *e)
{
    return csql__error(CSQL_ERR_CLOSED, "the dialer was closed while getting a certificate for %s",
                       e->name.full);
}

int csql__cache_entry_get(csql__cache *c, const csql__instance_name *name, bool iam,
                          csql__cache_entry **out)
{
    *out = NULL;
    csql__cache_entry *e = NULL;
    int rc;
    pthread_mutex_lock(&c->mu);
    if (atomic_load(&c->closing)) {
        rc = csql__error(CSQL_ERR_CLOSED, "the dialer is closed (dialling %s)", name->full);
    } else {
        rc = csql__cache_find_or_create_locked(c, name, iam, &e);
    }
    if (rc == 0) {
        *out = csql__cache_entry_ref(e);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- the decisions ---- */

/* As get_background_locked, one pass. */
static int background_locked(csql__cache *c, csql__cache_entry *e, csql__cache_waiter *w,
                             csql__certset **out)
{
    int64_t wall_s = csql__wall_s();
    if (csql__cache_cs_valid(e->cur, wall_s)) {
        *out = csql__certset_ref(e->cur);
        return 0;
    }
    csql__cache_forget_expired_locked(c, e, wall_s);
    if (e->has_err && e->done_seq != w->seen) {
        return csql__error_restore(&e->err); /* the refresh this dial waited for failed */
    }
    if (!e->refreshing) {
        /* A failure is on record and the limiter forbids a new try: fail fast with it. */
        if (e->has_err && csql__ratelimit_peek(&e->rl, csql__mono_ms()) > 0) {
            return csql__error_restore(&e->err);
        }
        csql__sched_at_locked(c, e, csql__wall_ms());
    }
    arm_locked(e, w);
    return CSQL_ERR_WOULD_BLOCK;
}

/* Ask for a lazy refresh off the caller's thread (one at a time per entry). */
static void kick_locked(csql__cache_entry *e, csql__cache_waiter *w, bool *kick)
{
    e->lazy_kick = true;
    w->tried = true;
    *kick = true;
}

/* As get_lazy_locked, one pass, never refreshing here. */
static int lazy_locked(csql__cache *c, csql__cache_entry *e, csql__cache_waiter *w,
                       csql__certset **out, bool *kick)
{
    int64_t wall_s = csql__wall_s();
    csql__cache_forget_expired_locked(c, e, wall_s);
    bool valid = e->cur != NULL;
    bool fresh = valid && !e->force && e->cur->expires_at - wall_s > CSQL__REFRESH_BUFFER_S;
    bool busy = e->refreshing || e->lazy_kick;
    bool token = csql__ratelimit_peek(&e->rl, csql__mono_ms()) == 0;
    if (fresh) {
        *out = csql__certset_ref(e->cur);
        return 0;
    }
    if (valid && (!e->force || w->tried)) {
        /* Near expiry: use it now and let a worker refresh behind us. */
        if (!busy && token) {
            kick_locked(e, w, kick);
        }
        *out = csql__certset_ref(e->cur);
        return 0;
    }
    if (!valid && e->has_err && (e->done_seq != w->seen || (w->tried && !busy))) {
        return csql__error_restore(&e->err);
    }
    if (!busy) {
        if (!valid && e->has_err && !token) {
            return csql__error_restore(&e->err);
        }
        /* No certset, or a forced refresh (the address may have changed): wait for it. */
        kick_locked(e, w, kick);
    }
    arm_locked(e, w);
    return CSQL_ERR_WOULD_BLOCK;
}

int csql__cache_get_nowait(csql__cache_entry *e, csql__cache_waiter *w, csql__certset **cs,
                           bool *kick)
{
    *cs = NULL;
    *kick = false;
    csql__cache *c = lock_cache(e);
    if (c == NULL) {
        return closed_error(e);
    }
    int rc;
    if (atomic_load(&c->closing)) {
        disarm_locked(e, w);
        rc = closed_error(e);
    } else {
        if (!w->started) {
            w->started = true;
            w->seen = e->done_seq;
        }
        rc = c->o.strategy == CSQL_REFRESH_LAZY ? lazy_locked(c, e, w, cs, kick)
                                                : background_locked(c, e, w, cs);
        if (rc != CSQL_ERR_WOULD_BLOCK) {
            disarm_locked(e, w);
        }
    }
    unlock_cache(e, c);
    return rc;
}

void csql__cache_waiter_cancel(csql__cache_entry *e, csql__cache_waiter *w)
{
    if (e == NULL || w == NULL) {
        return;
    }
    csql__cache *c = lock_cache(e);
    if (c == NULL) {
        return; /* close woke and disarmed every waiter before the cache went away */
    }
    disarm_locked(e, w);
    unlock_cache(e, c);
}

int csql__cache_timeout_error(csql__cache_entry *e, int64_t waited_ms)
{
    csql__cache *c = lock_cache(e);
    if (c == NULL) {
        return closed_error(e);
    }
    int rc = csql__cache_timeout_error_locked(c, e, waited_ms);
    unlock_cache(e, c);
    return rc;
}

/* ---- LAZY refreshes run for non-blocking gets ---- */

static void kick_done(csql__cache_entry *e)
{
    csql__cache *c = lock_cache(e);
    if (c == NULL) {
        return;
    }
    e->lazy_kick = false;
    csql__cache_wake_waiters_locked(e);
    unlock_cache(e, c);
}

void csql__cache_lazy_refresh(csql__cache_entry *e, int64_t deadline_ms)
{
    pthread_mutex_lock(&e->link_mu);
    csql__cache *c = e->cache;
    pthread_mutex_unlock(&e->link_mu);
    /*
     * The cache outlives this call: kicks run on the dialer's event loop
     * workers, which csql_dialer_free joins before it frees the cache.
     */
    if (c != NULL) {
        csql__cache_entry *got = NULL;
        csql__certset *cs = NULL;
        (void)csql__cache_get(c, &e->name, e->iam, deadline_ms, &got, &cs);
        csql__certset_unref(cs);
        csql__cache_entry_unref(got);
    }
    kick_done(e);
}

void csql__cache_lazy_abandon(csql__cache_entry *e)
{
    kick_done(e);
}
