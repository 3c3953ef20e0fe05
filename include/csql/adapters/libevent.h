/*
 * csql/adapters/libevent.h: run csql_dial_async on a libevent 2 event_base.
 * Header-only (like hiredis' adapters): include it and link libevent
 * yourself; libcsql does not depend on libevent.
 *
 *     static void on_conn(csql_event_dial *req, int status, csql_conn *conn, void *ud)
 *     {
 *         if (status != 0) { report(csql_error_last()->message); return; }
 *         ... use conn (csql_conn_close it when done) ...
 *     }
 *     csql_event_dial *req;
 *     if (csql_event_dial_start(base, dialer, "p:r:i", NULL, on_conn, ud, &req) != 0)
 *         report(csql_error_last()->message);     // on_conn will not be called
 *
 * The callback runs exactly once, from the base's loop (never from inside
 * csql_event_dial_start). The request is freed right after the callback
 * returns. csql_event_dial_cancel stops a dial that has not called back yet
 * and frees everything; the callback is not called. Use the request from the
 * thread running the base only.
 *
 * Fairness: a TLS handshake step costs the loop thread about half a
 * millisecond of CPU (the client certificate's RSA signature). So that a
 * burst of dials never stalls the loop, a request that becomes ready after
 * the base has already spent CSQL_EVENT_BUDGET_MS since it last woke waits
 * for the next round; other events run in between. Define
 * CSQL_EVENT_BUDGET_MS to 0 before including this header to turn that off.
 */
#ifndef CSQL_ADAPTERS_LIBEVENT_H
#define CSQL_ADAPTERS_LIBEVENT_H

#include <stdlib.h>
#include <sys/time.h>

#include <event2/event.h>

#include "csql/async.h"
#include "csql/errors.h"
#include "csql/helper.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef CSQL_EVENT_BUDGET_MS
#define CSQL_EVENT_BUDGET_MS 1
#endif

typedef struct csql_event_dial csql_event_dial;

/* status 0: conn is yours; else a csql_err with conn NULL and csql_error_last() set. */
typedef void (*csql_event_dial_cb)(csql_event_dial *req, int status, csql_conn *conn,
                                   void *userdata);

struct csql_event_dial {
    struct event_base *base;
    csql_dial_async *h;
    csql_event_dial_cb cb;
    void *userdata;
    struct event *ev;      /* csql's fd (or none) with the dial's deadline as its timeout */
    int ev_fd;
    int ev_events;
};

/* ---- internals ---- */

static inline void csql_event__drop(csql_event_dial *req)
{
    if (req->ev != NULL) {
        event_free(req->ev); /* before csql closes the fd */
        req->ev = NULL;
    }
    csql_dial_async_free(req->h);
    req->h = NULL;
}

static inline void csql_event__fire(evutil_socket_t fd, short what, void *arg);

/* Follow csql's fd, events and deadline after a continue. 0, or -1 if libevent failed. */
static inline int csql_event__rearm(csql_event_dial *req)
{
    int fd = csql_dial_async_fd(req->h);
    int ev = csql_dial_async_events(req->h);
    /* Persistent: a ready fd left for the next round stays registered (no re-adding). */
    short what = (short)(EV_PERSIST | (ev & CSQL_ASYNC_READ ? EV_READ : 0) |
                         (ev & CSQL_ASYNC_WRITE ? EV_WRITE : 0));
    if (req->ev == NULL || fd != req->ev_fd || ev != req->ev_events) {
        if (req->ev != NULL) {
            event_free(req->ev); /* the old fd is still open here: csql closes it later */
        }
        req->ev = event_new(req->base, fd, what, csql_event__fire, req);
        if (req->ev == NULL) {
            return -1;
        }
        req->ev_fd = fd;
        req->ev_events = ev;
    }
    int ms = csql_dial_async_timeout_ms(req->h);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return event_add(req->ev, &tv); /* on a pending event: only the timeout moves */
}

#if defined(__cplusplus)
#define CSQL_EVENT__TLS thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define CSQL_EVENT__TLS _Thread_local
#else
#define CSQL_EVENT__TLS __thread
#endif

/*
 * The base has worked CSQL_EVENT_BUDGET_MS since it last woke. The base's
 * cached time changes once per round (it is taken when the poll returns), so
 * it marks a new round; the time spent is measured from the first dial
 * callback of the round. One loop per thread.
 */
static inline int csql_event__over_budget(struct event_base *base)
{
    static CSQL_EVENT__TLS struct timeval round_mark;
    static CSQL_EVENT__TLS long long round_start_us;
    struct timeval mark, now;
    if (CSQL_EVENT_BUDGET_MS <= 0 || event_base_gettimeofday_cached(base, &mark) != 0 ||
        evutil_gettimeofday(&now, NULL) != 0) {
        return 0;
    }
    long long now_us = (long long)now.tv_sec * 1000000 + now.tv_usec;
    if (mark.tv_sec != round_mark.tv_sec || mark.tv_usec != round_mark.tv_usec) {
        round_mark = mark;
        round_start_us = now_us;
        return 0;
    }
    return now_us - round_start_us >= (long long)CSQL_EVENT_BUDGET_MS * 1000;
}

static inline void csql_event__fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    csql_event_dial *req = (csql_event_dial *)arg;
    if (csql_event__over_budget(req->base)) {
        if (!(what & EV_TIMEOUT)) {
            return; /* the fd is still ready: reported again in the next round */
        }
        struct timeval zero = {0, 0};
        if (event_add(req->ev, &zero) == 0) {
            return; /* the deadline: again in the next round */
        }
    }
    csql_conn *conn = NULL;
    int rc = csql_dial_async_continue(req->h, &conn);
    if (rc == CSQL_ERR_WOULD_BLOCK) {
        if (csql_event__rearm(req) == 0) {
            return;
        }
        rc = csql_error_set(CSQL_ERR_INTERNAL,
                            "csql libevent adapter: could not watch the dial's fd");
    }
    csql_event__drop(req);
    req->cb(req, rc, conn, req->userdata);
    free(req);
}

/* ---- API ---- */

/*
 * Start dialling `instance` on `base`. Returns 0 (cb will run once) or a
 * csql_err (cb will never run): the errors of csql_dial_async_start, or
 * CSQL_ERR_NOMEM / CSQL_ERR_INTERNAL if libevent could not make an event.
 */
static inline int csql_event_dial_start(struct event_base *base, csql_dialer *d,
                                        const char *instance, const csql_dial_options *opts,
                                        csql_event_dial_cb cb, void *userdata,
                                        csql_event_dial **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (base == NULL || cb == NULL || out == NULL) {
        return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                              "csql_event_dial_start: base, cb and out are required");
    }
    csql_event_dial *req = (csql_event_dial *)calloc(1, sizeof(*req));
    if (req == NULL) {
        return csql_error_set(CSQL_ERR_NOMEM, "csql_event_dial_start: out of memory");
    }
    int rc = csql_dial_async_start(d, instance, opts, NULL, NULL, &req->h);
    if (rc != 0) {
        free(req);
        return rc;
    }
    req->base = base;
    req->cb = cb;
    req->userdata = userdata;
    req->ev_fd = -1;
    /* fd -1 and a zero timeout: the first continue runs from the loop, not from here. */
    if (csql_event__rearm(req) != 0) {
        csql_event__drop(req);
        free(req);
        return csql_error_set(CSQL_ERR_INTERNAL, "csql_event_dial_start: libevent failed");
    }
    *out = req;
    return 0;
}

/* Cancel a dial that has not called back; frees everything. Not after the callback started. */
static inline void csql_event_dial_cancel(csql_event_dial *req)
{
    if (req != NULL) {
        csql_event__drop(req);
        free(req);
    }
}

#ifdef __cplusplus
}
#endif
#endif
