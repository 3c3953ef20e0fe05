/*
 * The certificate cache: entries, waiting for a valid certset, the lazy
 * strategy, force refresh and drop. The background scheduler and its workers
 * live in refresher.c. Design notes: docs/internals/refresh.md.
 */
#include "cache_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "refresh.h"
#include "util/clock.h"

#define DEFAULT_RL_BURST 2
#define DEFAULT_RL_INTERVAL_MS 30000
#define DEFAULT_MAX_WORKERS 4
#define DEFAULT_MAX_SLEEP_MS 30000
#define DEFAULT_REFRESH_TIMEOUT_MS 60000

static const char *iam_note(const csql__cache_entry *e)
{
    return e->iam ? " (IAM authn)" : "";
}

/* The message of a saved error without the "csql: " every message starts with. */
static const char *bare_message(const char *m)
{
    if (m == NULL) {
        return "";
    }
    return strncmp(m, "csql: ", 6) == 0 ? m + 6 : m;
}

bool csql__cache_cs_valid(const csql__certset *cs, int64_t wall_s)
{
    /*
     * A certificate about to expire is not used for new connections: the
     * server checks it after the client's side of the handshake is done, so
     * one that lapses mid-dial is refused on the first read. The margin also
     * covers expiry being whole seconds while the clock is not.
     */
    return cs != NULL && cs->expires_at - wall_s > CSQL__CERT_MIN_LEFT_S;
}

static int init_cond(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) {
        return -1;
    }
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0) {
        rc = pthread_cond_init(cv, &attr);
    }
    pthread_condattr_destroy(&attr);
    return rc == 0 ? 0 : -1;
}

int csql__cache_wait_locked(csql__cache *c, pthread_cond_t *cv, int64_t deadline_ms)
{
    int64_t left = csql__ms_left(deadline_ms);
    if (left <= 0) {
        return ETIMEDOUT;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (left % 1000) * 1000000;
    ts.tv_sec += (time_t)(left / 1000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    int rc = pthread_cond_timedwait(cv, &c->mu, &ts);
    return rc == ETIMEDOUT ? ETIMEDOUT : 0;
}

/* ---- entries ---- */

static csql__cache_entry *entry_new(csql__cache *c, const csql__instance_name *name, bool iam)
{
    csql__cache_entry *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    if (pthread_mutex_init(&e->link_mu, NULL) != 0) {
        free(e);
        return NULL;
    }
    if (init_cond(&e->done) != 0) {
        pthread_mutex_destroy(&e->link_mu);
        free(e);
        return NULL;
    }
    atomic_init(&e->refs, 1);
    e->name = *name;
    e->iam = iam;
    e->cache = c;
    e->heap_idx = -1;
    csql__ratelimit_init(&e->rl, c->o.rl_burst, c->o.rl_interval_ms, csql__mono_ms());
    return e;
}

csql__cache_entry *csql__cache_entry_ref(csql__cache_entry *e)
{
    if (e != NULL) {
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    }
    return e;
}

void csql__cache_entry_unref(csql__cache_entry *e)
{
    if (e == NULL || atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    csql__certset_unref(e->cur);
    csql__saved_error_dispose(&e->err);
    pthread_cond_destroy(&e->done);
    pthread_mutex_destroy(&e->link_mu);
    free(e);
}

static csql__cache_entry *find_locked(csql__cache *c, const csql__instance_name *name, bool iam)
{
    for (size_t i = 0; i < c->n_entries; i++) {
        csql__cache_entry *e = c->entries[i];
        if (e->iam == iam && strcmp(e->name.full, name->full) == 0) {
            return e;
        }
    }
    return NULL;
}

static int find_or_create_locked(csql__cache *c, const csql__instance_name *name, bool iam,
                                 csql__cache_entry **out)
{
    csql__cache_entry *e = find_locked(c, name, iam);
    if (e != NULL) {
        *out = e;
        return 0;
    }
    if (c->n_entries == c->cap_entries) {
        size_t cap = c->cap_entries ? c->cap_entries * 2 : 8;
        csql__cache_entry **grown = realloc(c->entries, cap * sizeof(*grown));
        if (grown == NULL) {
            return csql__error(CSQL_ERR_NOMEM, "out of memory adding %s to the certificate cache",
                               name->full);
        }
        c->entries = grown;
        c->cap_entries = cap;
    }
    if (c->o.strategy == CSQL_REFRESH_BACKGROUND &&
        csql__sched_reserve_locked(c, c->cap_entries) != 0) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory adding %s to the certificate cache",
                           name->full);
    }
    e = entry_new(c, name, iam);
    if (e == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory adding %s to the certificate cache",
                           name->full);
    }
    c->entries[c->n_entries++] = e;
    *out = e;
    return 0;
}

/* ---- running one refresh (worker or lazy dialer), outside mu ---- */

int csql__cache_run_refresh(csql__cache *c, csql__cache_entry *e, int64_t deadline_ms,
                            csql__certset **out, csql__saved_error *saved)
{
    csql__certset *cs = NULL;
    csql_error_clear();
    int rc = c->o.refresh(c->o.refresh_arg, &e->name, e->iam, deadline_ms, &c->closing, &cs);
    if (rc == 0 && cs == NULL) {
        rc = csql__error(CSQL_ERR_INTERNAL, "refresh of %s returned no certificate", e->name.full);
    }
    if (rc == 0 && !csql__cache_cs_valid(cs, csql__wall_s())) {
        rc = csql__error(CSQL_ERR_API_RESPONSE,
                         "the new client certificate for %s expires at %" PRId64
                         " (Unix time), not more than %d s after now (%" PRId64
                         "): check the system clock",
                         e->name.full, cs->expires_at, CSQL__CERT_MIN_LEFT_S, csql__wall_s());
        csql__certset_unref(cs);
        cs = NULL;
    }
    if (rc != 0) {
        if (rc > 0 || csql_error_last()->code != rc) {
            /* The refresh function failed without raising: say so rather than lose it. */
            rc = csql__error(rc < 0 ? rc : CSQL_ERR_INTERNAL,
                             "refresh of %s failed without details", e->name.full);
        }
        if (csql__error_save(saved) != 0) {
            csql__saved_error_dispose(saved);
            saved->code = rc;
        }
        csql__certset_unref(cs);
        cs = NULL;
    }
    *out = cs;
    return rc;
}

/* Errors a retry cannot fix: with no valid certset, the entry is not retried in the background. */
static bool permanent_error(int code)
{
    switch (code) {
    case CSQL_ERR_INVALID_ARGUMENT:
    case CSQL_ERR_BAD_INSTANCE_NAME:
    case CSQL_ERR_BAD_CONFIG:
    case CSQL_ERR_CREDENTIALS:
    case CSQL_ERR_NOT_FOUND:
    case CSQL_ERR_PERMISSION_DENIED:
    case CSQL_ERR_REGION_MISMATCH:
    case CSQL_ERR_UNSUPPORTED_INSTANCE:
    case CSQL_ERR_IAM_UNSUPPORTED:
        return true;
    default:
        return false;
    }
}

void csql__cache_complete_locked(csql__cache *c, csql__cache_entry *e, int rc, csql__certset *cs,
                                 csql__saved_error *saved)
{
    int64_t wall_ms = csql__wall_ms();
    int64_t wall_s = wall_ms / 1000;
    bool background = c->o.strategy == CSQL_REFRESH_BACKGROUND;
    bool closing = atomic_load(&c->closing);
    e->refreshing = false;
    e->done_seq++;
    if (rc == 0) {
        csql__certset_unref(e->cur);
        e->cur = cs;
        csql__saved_error_dispose(&e->err);
        e->has_err = false;
        int64_t delay_s = csql__refresh_delay_s(cs->expires_at, wall_s);
        csql__log(c->o.log, CSQL_LOG_DEBUG,
                  "refreshed the certificate of %s%s: valid for %" PRId64 " s%s%" PRId64 " s",
                  e->name.full, iam_note(e), cs->expires_at - wall_s,
                  background ? ", next refresh in " : ", lazy refresh within ",
                  background ? delay_s : cs->expires_at - wall_s - CSQL__REFRESH_BUFFER_S);
        if (background && !closing) {
            csql__sched_at_locked(c, e, wall_ms + delay_s * 1000);
        }
    } else {
        e->failed++;
        csql__saved_error_dispose(&e->err);
        e->err = *saved;
        memset(saved, 0, sizeof(*saved));
        e->has_err = true;
        bool valid = csql__cache_cs_valid(e->cur, wall_s);
        if (valid) {
            csql__log(c->o.log, CSQL_LOG_WARN,
                      "refresh of %s%s failed (%s); the current certificate stays in use for "
                      "%" PRId64 " s more",
                      e->name.full, iam_note(e), bare_message(e->err.message),
                      e->cur->expires_at - wall_s);
        } else {
            csql__log(c->o.log, CSQL_LOG_ERROR, "refresh of %s%s failed: %s", e->name.full,
                      iam_note(e), bare_message(e->err.message));
        }
        /* Retry now: the limiter spaces the attempts. Unfixable errors wait for a dial. */
        if (background && !closing && (valid || !permanent_error(e->err.code))) {
            csql__sched_at_locked(c, e, wall_ms);
        }
    }
    pthread_cond_broadcast(&e->done);
    csql__cache_wake_waiters_locked(e);
}

/* ---- waiting for a valid certset ---- */

static int raise_saved(const csql__cache_entry *e)
{
    return csql__error_restore(&e->err);
}

static int timeout_error(csql__cache *c, csql__cache_entry *e, int64_t waited_ms)
{
    int64_t rl_wait = csql__ratelimit_peek(&e->rl, csql__mono_ms());
    char limit[96] = "";
    if (rl_wait > 0) {
        snprintf(limit, sizeof(limit),
                 " (refresh rate limit: next attempt allowed in %" PRId64 " ms)", rl_wait);
    }
    (void)c;
    if (e->has_err) {
        return csql__error(CSQL_ERR_TIMEOUT,
                           "timed out after %" PRId64
                           " ms waiting for a certificate for %s%s%s; last refresh error: %s",
                           waited_ms, e->name.full, iam_note(e), limit,
                           bare_message(e->err.message));
    }
    return csql__error(CSQL_ERR_TIMEOUT,
                       "timed out after %" PRId64 " ms waiting for a certificate for %s%s%s",
                       waited_ms, e->name.full, iam_note(e), limit);
}

static int closed_error(const csql__cache_entry *e)
{
    return csql__error(CSQL_ERR_CLOSED, "the dialer was closed while getting a certificate for %s",
                       e->name.full);
}

/* Forget a certset that the wall clock says has expired (a sleep, a clock jump). */
static void forget_expired_locked(csql__cache *c, csql__cache_entry *e, int64_t wall_s)
{
    if (e->cur != NULL && !csql__cache_cs_valid(e->cur, wall_s)) {
        csql__log(c->o.log, CSQL_LOG_INFO,
                  "the certificate of %s%s expired %" PRId64 " s ago; refreshing before dialling",
                  e->name.full, iam_note(e), wall_s - e->cur->expires_at);
        csql__certset_unref(e->cur);
        e->cur = NULL;
    }
}

static int get_background_locked(csql__cache *c, csql__cache_entry *e, int64_t deadline_ms,
                                 csql__certset **out)
{
    int64_t start = csql__mono_ms();
    uint64_t seen = e->done_seq;
    for (;;) {
        if (atomic_load(&c->closing)) {
            return closed_error(e);
        }
        int64_t wall_s = csql__wall_s();
        if (csql__cache_cs_valid(e->cur, wall_s)) {
            *out = csql__certset_ref(e->cur);
            return 0;
        }
        forget_expired_locked(c, e, wall_s);
        if (e->has_err && e->done_seq != seen) {
            return raise_saved(e); /* the refresh this dial waited for failed */
        }
        if (!e->refreshing) {
            /* A failure is on record and the limiter forbids a new try: fail fast with it. */
            if (e->has_err && csql__ratelimit_peek(&e->rl, csql__mono_ms()) > 0) {
                return raise_saved(e);
            }
            csql__sched_at_locked(c, e, csql__wall_ms());
        }
        if (csql__cache_wait_locked(c, &e->done, deadline_ms) == ETIMEDOUT &&
            !csql__cache_cs_valid(e->cur, csql__wall_s())) {
            return timeout_error(c, e, csql__mono_ms() - start);
        }
    }
}

static int get_lazy_locked(csql__cache *c, csql__cache_entry *e, int64_t deadline_ms,
                           csql__certset **out)
{
    int64_t start = csql__mono_ms();
    uint64_t seen = e->done_seq;
    bool tried = false;
    for (;;) {
        if (atomic_load(&c->closing)) {
            return closed_error(e);
        }
        int64_t wall_s = csql__wall_s();
        forget_expired_locked(c, e, wall_s);
        bool valid = e->cur != NULL;
        bool fresh = valid && !e->force && e->cur->expires_at - wall_s > CSQL__REFRESH_BUFFER_S;
        if (fresh || (valid && (tried || e->refreshing))) {
            *out = csql__certset_ref(e->cur);
            return 0;
        }
        if (!valid && e->has_err && (tried || e->done_seq != seen)) {
            return raise_saved(e);
        }
        if (e->refreshing) {
            /* Single flight: someone else is refreshing; wait for their result. */
            if (csql__cache_wait_locked(c, &e->done, deadline_ms) == ETIMEDOUT &&
                e->refreshing) {
                return timeout_error(c, e, csql__mono_ms() - start);
            }
            continue;
        }
        int64_t now = csql__mono_ms();
        int64_t rl_wait = csql__ratelimit_take(&e->rl, now);
        if (rl_wait > 0) {
            if (valid) {
                *out = csql__certset_ref(e->cur);
                return 0;
            }
            if (e->has_err) {
                return raise_saved(e);
            }
            if (now + rl_wait > deadline_ms) {
                return timeout_error(c, e, now - start);
            }
            csql__cache_wait_locked(c, &e->done, now + rl_wait);
            continue;
        }
        e->refreshing = true;
        e->force = false;
        e->started++;
        tried = true;
        int64_t rdeadline = now + c->o.refresh_timeout_ms;
        if (deadline_ms < rdeadline) {
            rdeadline = deadline_ms;
        }
        pthread_mutex_unlock(&c->mu);
        csql__certset *cs = NULL;
        csql__saved_error saved = {0};
        int rc = csql__cache_run_refresh(c, e, rdeadline, &cs, &saved);
        pthread_mutex_lock(&c->mu);
        csql__cache_complete_locked(c, e, rc, cs, &saved);
        csql__saved_error_dispose(&saved);
    }
}

int csql__cache_get(csql__cache *c, const csql__instance_name *name, bool iam,
                    int64_t deadline_ms, csql__cache_entry **entry, csql__certset **cs)
{
    csql__cache_entry *e = NULL;
    *entry = NULL;
    *cs = NULL;
    pthread_mutex_lock(&c->mu);
    if (atomic_load(&c->closing)) {
        pthread_mutex_unlock(&c->mu);
        return csql__error(CSQL_ERR_CLOSED, "the dialer is closed (dialling %s)", name->full);
    }
    int rc = find_or_create_locked(c, name, iam, &e);
    if (rc == 0) {
        rc = c->o.strategy == CSQL_REFRESH_LAZY ? get_lazy_locked(c, e, deadline_ms, cs)
                                                : get_background_locked(c, e, deadline_ms, cs);
    }
    if (rc == 0) {
        *entry = csql__cache_entry_ref(e);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int csql__cache_warmup(csql__cache *c, const csql__instance_name *name, bool iam, int wait,
                       int64_t deadline_ms)
{
    if (wait || c->o.strategy == CSQL_REFRESH_LAZY) {
        csql__cache_entry *e = NULL;
        csql__certset *cs = NULL;
        int rc = csql__cache_get(c, name, iam, deadline_ms, &e, &cs);
        csql__certset_unref(cs);
        csql__cache_entry_unref(e);
        return rc;
    }
    csql__cache_entry *e = NULL;
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    if (atomic_load(&c->closing)) {
        rc = csql__error(CSQL_ERR_CLOSED, "the dialer is closed (warming up %s)", name->full);
    } else {
        rc = find_or_create_locked(c, name, iam, &e);
    }
    if (rc == 0 && e->cur == NULL && !e->refreshing && e->heap_idx < 0) {
        csql__sched_at_locked(c, e, csql__wall_ms());
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- reactions to dial and connection failures ---- */

/* Run fn on e's cache with mu held, unless the cache is gone or closing. */
static void with_cache(csql__cache_entry *e, void (*fn)(csql__cache *, csql__cache_entry *))
{
    pthread_mutex_lock(&e->link_mu);
    csql__cache *c = e->cache;
    if (c != NULL) {
        pthread_mutex_lock(&c->mu);
        if (!atomic_load(&c->closing)) {
            fn(c, e);
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&e->link_mu);
}

static void force_locked(csql__cache *c, csql__cache_entry *e)
{
    csql__log(c->o.log, CSQL_LOG_INFO, "connecting to %s failed; refreshing its certificate",
              e->name.full);
    if (c->o.strategy == CSQL_REFRESH_LAZY) {
        e->force = true;
    } else if (!e->refreshing) {
        csql__sched_at_locked(c, e, csql__wall_ms());
    }
}

static void drop_locked(csql__cache *c, csql__cache_entry *e, const csql__certset *used,
                        csql__saved_error *why)
{
    if (used == NULL || e->cur != used) {
        return; /* a newer certset is already in place */
    }
    csql__log(c->o.log, CSQL_LOG_INFO,
              "TLS failed with the certificate of %s%s; dropping it "
              "(the server CA may have rotated)",
              e->name.full, iam_note(e));
    csql__certset_unref(e->cur);
    e->cur = NULL;
    if (why->code != 0) {
        /* Until a new certset arrives, dials that cannot refresh yet report this failure. */
        csql__saved_error_dispose(&e->err);
        e->err = *why;
        memset(why, 0, sizeof(*why));
        e->has_err = true;
    }
    if (c->o.strategy == CSQL_REFRESH_BACKGROUND && !e->refreshing) {
        csql__sched_at_locked(c, e, csql__wall_ms());
    }
}

void csql__cache_force_refresh(csql__cache_entry *e)
{
    if (e != NULL) {
        with_cache(e, force_locked);
    }
}

void csql__cache_drop(csql__cache_entry *e, const csql__certset *used)
{
    if (e == NULL) {
        return;
    }
    csql__saved_error why = {0};
    if (csql_err_category_of(csql_error_last()->code) == CSQL_CAT_TLS &&
        csql__error_save(&why) != 0) {
        csql__saved_error_dispose(&why);
    }
    pthread_mutex_lock(&e->link_mu);
    csql__cache *c = e->cache;
    if (c != NULL) {
        pthread_mutex_lock(&c->mu);
        if (!atomic_load(&c->closing)) {
            drop_locked(c, e, used, &why);
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&e->link_mu);
    csql__saved_error_dispose(&why);
}

struct csql__cache_hook {
    csql__cache_entry *entry;
    csql__certset *used;
    atomic_bool fired;
};

csql__cache_hook *csql__cache_hook_new(csql__cache_entry *e, csql__certset *used)
{
    csql__cache_hook *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return NULL;
    }
    h->entry = csql__cache_entry_ref(e);
    h->used = csql__certset_ref(used);
    atomic_init(&h->fired, false);
    return h;
}

void csql__cache_hook_fire(void *hook)
{
    csql__cache_hook *h = hook;
    if (h != NULL && !atomic_exchange(&h->fired, true)) {
        csql__cache_drop(h->entry, h->used);
    }
}

void csql__cache_hook_release(void *hook)
{
    csql__cache_hook *h = hook;
    if (h != NULL) {
        csql__certset_unref(h->used);
        csql__cache_entry_unref(h->entry);
        free(h);
    }
}

/* ---- life cycle ---- */

int csql__cache_new(const csql__cache_opts *opts, csql__cache **out)
{
    *out = NULL;
    if (opts == NULL || opts->refresh == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "certificate cache needs a refresh function");
    }
    csql__cache *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating the certificate cache");
    }
    c->o = *opts;
    if (c->o.rl_burst <= 0) {
        c->o.rl_burst = DEFAULT_RL_BURST;
    }
    if (c->o.rl_interval_ms <= 0) {
        c->o.rl_interval_ms = DEFAULT_RL_INTERVAL_MS;
    }
    if (c->o.max_workers <= 0) {
        c->o.max_workers = DEFAULT_MAX_WORKERS;
    }
    if (c->o.max_workers > CSQL__CACHE_MAX_WORKERS) {
        c->o.max_workers = CSQL__CACHE_MAX_WORKERS;
    }
    if (c->o.max_sleep_ms <= 0) {
        c->o.max_sleep_ms = DEFAULT_MAX_SLEEP_MS;
    }
    if (c->o.refresh_timeout_ms == 0) {
        c->o.refresh_timeout_ms = DEFAULT_REFRESH_TIMEOUT_MS;
    }
    atomic_init(&c->closing, false);
    int inited = 0;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        goto fail;
    }
    inited = 1;
    if (init_cond(&c->sched_cv) != 0) {
        goto fail;
    }
    inited = 2;
    if (init_cond(&c->work_cv) != 0) {
        goto fail;
    }
    inited = 3;
    if (init_cond(&c->close_cv) != 0) {
        goto fail;
    }
    inited = 4;
    if (c->o.strategy == CSQL_REFRESH_BACKGROUND) {
        int rc = csql__refresher_start(c);
        if (rc != 0) {
            csql__cache_free(c);
            return rc;
        }
    }
    *out = c;
    return 0;
fail:
    if (inited >= 4) {
        pthread_cond_destroy(&c->close_cv);
    }
    if (inited >= 3) {
        pthread_cond_destroy(&c->work_cv);
    }
    if (inited >= 2) {
        pthread_cond_destroy(&c->sched_cv);
    }
    if (inited >= 1) {
        pthread_mutex_destroy(&c->mu);
    }
    free(c);
    return csql__error(CSQL_ERR_INTERNAL, "could not initialise the certificate cache's locks");
}

void csql__cache_close(csql__cache *c)
{
    if (c == NULL) {
        return;
    }
    pthread_mutex_lock(&c->mu);
    if (c->closed) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (c->closing_in_progress) {
        while (!c->closed) {
            pthread_cond_wait(&c->close_cv, &c->mu);
        }
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->closing_in_progress = true;
    atomic_store(&c->closing, true);
    for (size_t i = 0; i < c->n_entries; i++) {
        pthread_cond_broadcast(&c->entries[i]->done);
        csql__cache_wake_waiters_locked(c->entries[i]);
    }
    pthread_cond_broadcast(&c->sched_cv);
    pthread_cond_broadcast(&c->work_cv);
    pthread_mutex_unlock(&c->mu);

    csql__refresher_join(c);

    pthread_mutex_lock(&c->mu);
    c->closed = true;
    pthread_cond_broadcast(&c->close_cv);
    pthread_mutex_unlock(&c->mu);
}

void csql__cache_free(csql__cache *c)
{
    if (c == NULL) {
        return;
    }
    csql__cache_close(c);
    /* No cache thread runs now; hooks still held by connections are cut off here. */
    for (size_t i = 0; i < c->n_entries; i++) {
        csql__cache_entry *e = c->entries[i];
        pthread_mutex_lock(&e->link_mu);
        e->cache = NULL;
        csql__certset_unref(e->cur);
        e->cur = NULL;
        csql__saved_error_dispose(&e->err);
        pthread_mutex_unlock(&e->link_mu);
        csql__cache_entry_unref(e);
    }
    free(c->entries);
    free(c->heap);
    pthread_cond_destroy(&c->close_cv);
    pthread_cond_destroy(&c->work_cv);
    pthread_cond_destroy(&c->sched_cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- diagnostics ---- */

int csql__cache_stats(csql__cache *c, const csql__instance_name *name, bool iam,
                      csql__cache_entry_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&c->mu);
    csql__cache_entry *e = find_locked(c, name, iam);
    if (e != NULL) {
        out->refreshes_started = e->started;
        out->refreshes_failed = e->failed;
        out->has_certset = e->cur != NULL;
        out->refreshing = e->refreshing;
        out->scheduled = e->heap_idx >= 0;
        out->next_refresh_wall_ms = e->heap_idx >= 0 ? e->due_wall_ms : 0;
        out->saved_error = e->has_err ? e->err.code : 0;
    }
    pthread_mutex_unlock(&c->mu);
    if (e == NULL) {
        return csql__error(CSQL_ERR_NOT_FOUND, "no cache entry for %s", name->full);
    }
    return 0;
}

int csql__cache_worker_count(csql__cache *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->n_workers;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ---- pieces for non-blocking gets (cache_nowait.c) ---- */

int csql__cache_find_or_create_locked(csql__cache *c, const csql__instance_name *name, bool iam,
                                      csql__cache_entry **out)
{
    return find_or_create_locked(c, name, iam, out);
}

void csql__cache_forget_expired_locked(csql__cache *c, csql__cache_entry *e, int64_t wall_s)
{
    forget_expired_locked(c, e, wall_s);
}

int csql__cache_timeout_error_locked(csql__cache *c, csql__cache_entry *e, int64_t waited_ms)
{
    return timeout_error(c, e, waited_ms);
}
