/*
 * csql_dial_async (include/csql/async.h; docs/async.md): csql_dial as a state
 * machine the caller's event loop drives.
 *
 *   START -> CERT (cache, non-blocking; wait on the eventfd the refresher signals)
 *         -> RESOLVE (PSC names only: getaddrinfo on a loop worker; same eventfd)
 *         -> SOCKET (dial_nb: connect, TLS, MDX on the socket's readiness)
 *         -> DONE / FAILED
 *
 * Everything here runs on the caller's thread. Other threads touch a handle
 * only through its eventfd: the cache's notify writes it (under the cache
 * lock, while the waiter is armed) and jobs write their own dup of it.
 */
#include "csql/async.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cache.h"
#include "conn_internal.h"
#include "dial_async_job.h"
#include "dial_nb.h"
#include "dialer_internal.h"
#include "util/clock.h"

enum da_state { DA_START, DA_CERT, DA_RESOLVE, DA_SOCKET, DA_DONE, DA_FAILED };

struct csql_dial_async {
    csql_dialer *d;
    csql__instance_name name;
    csql__dial_settings ds;
    int64_t start_ms;
    int64_t deadline_ms;
    enum da_state state;
    csql_dial_async_cb cb;
    void *userdata;

    csql__cache_entry *e;            /* one reference, from CERT on */
    csql__cache_waiter waiter;
    csql__certset *cs;               /* one reference, once the cache gave one */
    atomic_int evfd;                 /* eventfd while waiting on the cache or a job; read by notify */
    int retired[2];                  /* eventfds no longer used: closed at the next call (the
                                        caller may still watch one) */
    int shown_fd;                    /* the fd the last continue reported, or -1 */
    csql__resolve_job *resolve;
    bool nb_ready;
    csql__dial_nb nb;

    int result;                      /* DONE: 0; FAILED: the code */
    csql__saved_error err;           /* FAILED: the error, raised again on later calls */
    csql_conn *conn;                 /* DONE without a callback, until handed over */
    bool handed;
};

/* ---- the eventfd ---- */

/* The cache's notify: under the cache lock, on a refresh thread. Only signals. */
static void on_cache_notify(void *arg)
{
    csql_dial_async *h = arg;
    int fd = atomic_load(&h->evfd);
    if (fd >= 0) {
        uint64_t one = 1;
        ssize_t n;
        do {
            n = write(fd, &one, sizeof(one));
        } while (n < 0 && errno == EINTR);
    }
}

static int ensure_evfd(csql_dial_async *h)
{
    if (atomic_load(&h->evfd) >= 0) {
        return CSQL_OK;
    }
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
        return csql__error(errno == EMFILE || errno == ENFILE ? CSQL_ERR_IO : CSQL_ERR_INTERNAL,
                           "dialling %s: could not create an eventfd: %s", h->name.full,
                           strerror(errno));
    }
    atomic_store(&h->evfd, fd);
    return CSQL_OK;
}

static void drain_evfd(csql_dial_async *h)
{
    int fd = atomic_load(&h->evfd);
    if (fd >= 0) {
        uint64_t v;
        ssize_t n;
        do {
            n = read(fd, &v, sizeof(v));
        } while (n < 0 && errno == EINTR);
    }
}

/* Close the retired eventfds, except `keep`. */
static void close_retired(csql_dial_async *h, int keep)
{
    for (int i = 0; i < 2; i++) {
        if (h->retired[i] >= 0 && h->retired[i] != keep) {
            close(h->retired[i]);
        }
        h->retired[i] = -1;
    }
}

/*
 * The caller may still watch the eventfd: close it at the next call, not now.
 * One call retires at most two (the certificate wait's, then a name
 * resolution's), so there is always a free slot.
 */
static void retire_evfd(csql_dial_async *h)
{
    int fd = atomic_exchange(&h->evfd, -1);
    if (fd < 0) {
        return;
    }
    int slot = h->retired[0] < 0 ? 0 : 1;
    if (h->retired[slot] >= 0) {
        close(h->retired[slot]); /* cannot happen (see above); never leak */
    }
    h->retired[slot] = fd;
}

/* ---- steps ---- */

static int start_step(csql_dial_async *h)
{
    int rc = csql__dialer_check_open(h->d, "csql_dial_async_continue", h->name.full);
    if (rc != CSQL_OK) {
        return rc;
    }
    rc = csql__cache_entry_get(h->d->cache, &h->name, h->ds.iam, &h->e);
    if (rc != CSQL_OK) {
        return rc;
    }
    h->waiter.notify = on_cache_notify;
    h->waiter.arg = h;
    h->state = DA_CERT;
    return CSQL_OK;
}

/* The certset is in hand: the address, then the socket dial (or its name's resolution first). */
static int begin_socket(csql_dial_async *h)
{
    const char *host = NULL;
    int rc = csql__dialer_pick_address(h->cs, h->ds.ip_type, h->name.full, &host);
    if (rc != CSQL_OK) {
        return rc;
    }
    csql_dialer *d = h->d;
    csql__dial_params p = {
        .host = host,
        .port = d->cfg->server_port,
        .keepalive_s = d->cfg->tcp_keepalive_s,
        .mdx = d->cfg->mdx,
        .user_agent = d->user_agent,
        .deadline_ms = h->deadline_ms,
    };
    csql__log(&d->log, CSQL_LOG_DEBUG, "dialling %s at %s port %u (non-blocking)", h->name.full,
              host, (unsigned)p.port);
    rc = csql__dial_nb_init(&h->nb, h->cs, &h->name, &p);
    if (rc != CSQL_OK) {
        return rc;
    }
    h->nb_ready = true;
    if (!csql__dial_nb_needs_resolver(&h->nb)) {
        h->state = DA_SOCKET;
        return CSQL_OK;
    }
    rc = ensure_evfd(h);
    if (rc != CSQL_OK) {
        return rc;
    }
    rc = csql__resolve_job_start(d, host, p.port, h->nb.where, atomic_load(&h->evfd),
                                 &h->resolve);
    if (rc != CSQL_OK) {
        return rc;
    }
    h->state = DA_RESOLVE;
    return CSQL_OK;
}

static int cert_step(csql_dial_async *h)
{
    /* At most two passes: the second after making the eventfd the waiter signals. */
    for (int pass = 0; pass < 2; pass++) {
        bool kick = false;
        int rc = csql__cache_get_nowait(h->e, &h->waiter, &h->cs, &kick);
        if (kick) {
            int krc = csql__lazy_refresh_job_start(h->d, h->e, h->d->cfg->refresh_timeout_ms);
            if (krc != CSQL_OK && rc != CSQL_OK) {
                return krc; /* nobody will refresh for this dial: fail rather than wait */
            }
            /* With a certset in hand, a refresh that could not be queued is tried by a later dial. */
        }
        if (rc == CSQL_OK) {
            retire_evfd(h);
            return begin_socket(h);
        }
        if (rc != CSQL_ERR_WOULD_BLOCK) {
            return rc;
        }
        if (atomic_load(&h->evfd) >= 0) {
            return CSQL_ERR_WOULD_BLOCK;
        }
        /* A notify may have come before the eventfd existed: decide again with it in place. */
        rc = ensure_evfd(h);
        if (rc != CSQL_OK) {
            return rc;
        }
    }
    return CSQL_ERR_WOULD_BLOCK;
}

static int resolve_step(csql_dial_async *h)
{
    if (!csql__resolve_job_finished(h->resolve)) {
        return CSQL_ERR_WOULD_BLOCK;
    }
    struct addrinfo *res = NULL;
    int rc = csql__resolve_job_result(h->resolve, &res);
    csql__resolve_job_release(h->resolve);
    h->resolve = NULL;
    if (rc != CSQL_OK) {
        return rc;
    }
    retire_evfd(h);
    csql__dial_nb_set_addresses(&h->nb, res);
    h->state = DA_SOCKET;
    return CSQL_OK;
}

/* Connected and verified: wrap fd + SSL in a conn linked to the cache entry, as csql_dial does. */
static int make_conn(csql_dial_async *h)
{
    int fd = -1;
    SSL *ssl = NULL;
    csql__dial_nb_take(&h->nb, &fd, &ssl);
    csql__cache_hook *hook = csql__cache_hook_new(h->e, h->cs);
    if (hook == NULL) {
        SSL_free(ssl);
        close(fd);
        return csql__error(CSQL_ERR_NOMEM, "out of memory dialling %s", h->name.full);
    }
    /* The conn owns fd, ssl and hook from here, also when it fails. */
    return csql__conn_new(fd, ssl, h->name.full, csql__cache_hook_fire, csql__cache_hook_release,
                          hook, &h->conn);
}

static int socket_step(csql_dial_async *h)
{
    int rc = csql__dial_nb_step(&h->nb);
    if (rc == CSQL_ERR_WOULD_BLOCK) {
        return rc;
    }
    if (rc == CSQL_ERR_CONNECT || rc == CSQL_ERR_TIMEOUT) {
        /* The address may have changed (failover, maintenance): look again, rate-limited. */
        csql__cache_force_refresh(h->e);
        return rc;
    }
    if (rc == CSQL_ERR_TLS_HANDSHAKE || rc == CSQL_ERR_TLS_VERIFY) {
        csql__cache_drop(h->e, h->cs);
        return rc;
    }
    if (rc != CSQL_OK) {
        return rc;
    }
    rc = make_conn(h);
    if (rc == CSQL_OK) {
        h->state = DA_DONE;
    }
    return rc;
}

/* The deadline passed: CSQL_ERR_TIMEOUT for what the dial was doing, with csql_dial's reactions. */
static int deadline_step(csql_dial_async *h)
{
    int64_t waited = csql__mono_ms() - h->start_ms;
    switch (h->state) {
    case DA_CERT:
        csql__cache_waiter_cancel(h->e, &h->waiter);
        return csql__cache_timeout_error(h->e, waited);
    case DA_RESOLVE:
        csql__cache_force_refresh(h->e);
        return csql__error(CSQL_ERR_TIMEOUT, "resolving %s timed out after %lld ms", h->nb.where,
                           (long long)waited);
    case DA_SOCKET:
        return socket_step(h); /* dial_nb names the step that timed out */
    default:
        return csql__error(CSQL_ERR_TIMEOUT, "dialling %s timed out after %lld ms", h->name.full,
                           (long long)waited);
    }
}

/* Run until the dial must wait or ends. Each state moves forward or returns. */
static int run(csql_dial_async *h)
{
    for (;;) {
        if (csql__ms_left(h->deadline_ms) <= 0) {
            return deadline_step(h);
        }
        enum da_state before = h->state;
        int rc;
        switch (h->state) {
        case DA_START:
            rc = start_step(h);
            break;
        case DA_CERT:
            rc = cert_step(h);
            break;
        case DA_RESOLVE:
            rc = resolve_step(h);
            break;
        case DA_SOCKET:
            rc = socket_step(h);
            break;
        default:
            return csql__error(CSQL_ERR_INTERNAL, "dialling %s: bad state %d", h->name.full,
                               (int)h->state);
        }
        if (rc != CSQL_OK || h->state == DA_DONE) {
            return rc;
        }
        if (h->state == before) {
            return CSQL_ERR_WOULD_BLOCK; /* a step that neither waits nor moves: wait */
        }
    }
}

/*
 * Let go of everything but the result. `keep` (the fd last reported, or -1)
 * is not closed but retired: the caller may still be watching it, and takes
 * it out of its loop before csql_dial_async_free closes it.
 */
static void release_progress(csql_dial_async *h, int keep)
{
    if (h->e != NULL) {
        csql__cache_waiter_cancel(h->e, &h->waiter);
    }
    if (h->resolve != NULL) {
        csql__resolve_job_release(h->resolve);
        h->resolve = NULL;
    }
    int kept = keep >= 0 && (keep == h->retired[0] || keep == h->retired[1]) ? keep : -1;
    if (h->nb_ready) {
        if (kept < 0) {
            kept = csql__dial_nb_release_fd(&h->nb, keep);
        }
        csql__dial_nb_dispose(&h->nb);
        h->nb_ready = false;
    }
    int fd = atomic_exchange(&h->evfd, -1);
    if (fd >= 0 && keep >= 0 && fd == keep) {
        kept = fd;
    } else if (fd >= 0) {
        close(fd);
    }
    close_retired(h, kept);
    h->retired[0] = kept;
    csql__certset_unref(h->cs);
    h->cs = NULL;
    csql__cache_entry_unref(h->e);
    h->e = NULL;
}

/* ---- public ---- */

int csql_dial_async_start(csql_dialer *d, const char *instance, const csql_dial_options *opts,
                          csql_dial_async_cb cb, void *userdata, csql_dial_async **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (d == NULL || instance == NULL || out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_dial_async_start: %s is NULL",
                           d == NULL ? "dialer" : instance == NULL ? "instance" : "out");
    }
    csql__dial_settings ds;
    csql__instance_name name;
    int rc = csql__dialer_begin(d, instance, opts, "csql_dial_async_start", &ds, &name);
    if (rc != CSQL_OK) {
        return rc;
    }
    csql_dial_async *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory starting a dial of %s", instance);
    }
    h->d = d;
    h->name = name;
    h->ds = ds;
    h->start_ms = csql__mono_ms();
    h->deadline_ms = h->start_ms + ds.timeout_ms;
    h->state = DA_START;
    h->cb = cb;
    h->userdata = userdata;
    atomic_init(&h->evfd, -1);
    h->retired[0] = h->retired[1] = -1;
    h->shown_fd = -1;
    *out = h;
    return CSQL_OK;
}

static int repeat_end(csql_dial_async *h)
{
    if (h->state == DA_FAILED) {
        return csql__error_restore(&h->err);
    }
    return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                       "csql_dial_async_continue: the dial of %s already handed over its "
                       "connection",
                       h->name.full);
}

int csql_dial_async_continue(csql_dial_async *h, csql_conn **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (h == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_dial_async_continue: handle is NULL");
    }
    if (h->state == DA_DONE || h->state == DA_FAILED) {
        if (h->state == DA_DONE && !h->handed && h->cb == NULL && out != NULL) {
            h->handed = true;
            *out = h->conn;
            h->conn = NULL;
            return CSQL_OK;
        }
        return repeat_end(h);
    }
    close_retired(h, -1);
    drain_evfd(h);
    int rc = run(h);
    if (rc == CSQL_ERR_WOULD_BLOCK) {
        h->shown_fd = csql_dial_async_fd(h);
        return rc;
    }
    /* On success that socket belongs to the conn now; on failure it stays open until free. */
    int reported = rc == CSQL_OK ? -1 : h->shown_fd;
    h->shown_fd = -1;
    if (rc == CSQL_OK) {
        h->state = DA_DONE;
        h->result = 0;
    } else {
        h->state = DA_FAILED;
        h->result = rc;
        if (csql__error_save(&h->err) != 0) {
            csql__saved_error_dispose(&h->err);
            h->err.code = rc;
        }
    }
    release_progress(h, reported);
    if (h->cb != NULL) {
        csql_conn *conn = h->conn;
        h->conn = NULL;
        h->handed = true;
        csql_dial_async_cb cb = h->cb;
        void *ud = h->userdata;
        /* The callback may free h: nothing below touches it. */
        cb(h, rc, conn, ud);
        return rc;
    }
    if (rc == CSQL_OK) {
        if (out == NULL) {
            return CSQL_OK; /* kept until a call with out, or free */
        }
        h->handed = true;
        *out = h->conn;
        h->conn = NULL;
    }
    return rc;
}

int csql_dial_async_fd(const csql_dial_async *h)
{
    if (h == NULL) {
        return -1;
    }
    switch (h->state) {
    case DA_CERT:
    case DA_RESOLVE:
        return atomic_load(&h->evfd);
    case DA_SOCKET:
        return csql__dial_nb_fd(&h->nb);
    default:
        return -1;
    }
}

int csql_dial_async_events(const csql_dial_async *h)
{
    if (h == NULL) {
        return 0;
    }
    switch (h->state) {
    case DA_CERT:
    case DA_RESOLVE:
        return csql_dial_async_fd(h) >= 0 ? CSQL_ASYNC_READ : 0;
    case DA_SOCKET: {
        unsigned ev = csql__dial_nb_events(&h->nb);
        return (ev & CSQL__NB_READ ? CSQL_ASYNC_READ : 0) |
               (ev & CSQL__NB_WRITE ? CSQL_ASYNC_WRITE : 0);
    }
    default:
        return 0;
    }
}

int csql_dial_async_timeout_ms(const csql_dial_async *h)
{
    if (h == NULL || h->state == DA_START || h->state == DA_DONE || h->state == DA_FAILED) {
        return 0;
    }
    int64_t left = csql__ms_left(h->deadline_ms);
    return left > INT_MAX ? INT_MAX : (int)left;
}

void csql_dial_async_free(csql_dial_async *h)
{
    if (h == NULL) {
        return;
    }
    release_progress(h, -1);
    csql_conn_close(h->conn);
    csql__saved_error_dispose(&h->err);
    free(h);
}
