/*
 * csql/adapters/libuv.h: run csql_dial_async on a libuv loop. Header-only
 * (like hiredis' adapters): include it in one or more of your files and link
 * libuv yourself; libcsql does not depend on libuv.
 *
 *     static void on_conn(csql_uv_dial *req, int status, csql_conn *conn, void *ud)
 *     {
 *         if (status != 0) { report(csql_error_last()->message); return; }
 *         ... use conn (csql_conn_close it when done) ...
 *     }
 *     csql_uv_dial *req;
 *     if (csql_uv_dial_start(uv_default_loop(), dialer, "p:r:i", NULL, on_conn, ud, &req) != 0)
 *         report(csql_error_last()->message);     // on_conn will not be called
 *
 * The callback runs exactly once, on the loop thread, from a libuv callback
 * (never from inside csql_uv_dial_start). csql_uv_dial_cancel stops a dial
 * that has not called back yet: everything is released, the callback is not
 * called. The request frees itself after the callback returns (its libuv
 * handles close asynchronously; the loop must run once more for that).
 * One loop thread only: start, cancel and the callback all happen on it.
 *
 * Fairness: a TLS handshake step costs the loop thread about half a
 * millisecond of CPU (the client certificate's RSA signature). So that a
 * burst of dials never stalls the loop, a request whose fd is ready after
 * the loop has already spent CSQL_UV_BUDGET_MS in this iteration waits for
 * the next one (libuv polls level-triggered, so it is reported again); timers
 * and other I/O run in between. Define CSQL_UV_BUDGET_MS to 0 before
 * including this header to turn that off.
 */
#ifndef CSQL_ADAPTERS_LIBUV_H
#define CSQL_ADAPTERS_LIBUV_H

#include <stdlib.h>

#include <uv.h>

#include "csql/async.h"
#include "csql/errors.h"
#include "csql/helper.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef CSQL_UV_BUDGET_MS
#define CSQL_UV_BUDGET_MS 1
#endif

typedef struct csql_uv_dial csql_uv_dial;

/* status 0: conn is yours; else a csql_err with conn NULL and csql_error_last() set. */
typedef void (*csql_uv_dial_cb)(csql_uv_dial *req, int status, csql_conn *conn, void *userdata);

struct csql_uv_dial {
    uv_loop_t *loop;
    csql_dial_async *h;
    csql_uv_dial_cb cb;
    void *userdata;
    uv_timer_t *timer;     /* the dial's deadline, and the first continue */
    uv_poll_t *poll;       /* on the fd csql reports; replaced when the fd changes */
    int poll_fd;
    int poll_events;
    int open_handles;      /* libuv handles not yet closed; the request is freed at 0 */
    int finished;          /* called back or cancelled */
};

/* ---- internals ---- */

static inline void csql_uv__handle_closed(uv_handle_t *handle)
{
    csql_uv_dial *req = (csql_uv_dial *)handle->data;
    free(handle);
    if (--req->open_handles == 0 && req->finished) {
        free(req);
    }
}

/* Stop watching the current fd (before csql may close it). */
static inline void csql_uv__drop_poll(csql_uv_dial *req)
{
    if (req->poll != NULL) {
        uv_poll_stop(req->poll);
        uv_close((uv_handle_t *)req->poll, csql_uv__handle_closed);
        req->poll = NULL;
        req->poll_fd = -1;
        req->poll_events = 0;
    }
}

static inline void csql_uv__teardown(csql_uv_dial *req)
{
    req->finished = 1;
    csql_uv__drop_poll(req);
    if (req->timer != NULL) {
        uv_timer_stop(req->timer);
        uv_close((uv_handle_t *)req->timer, csql_uv__handle_closed);
        req->timer = NULL;
    }
    csql_dial_async_free(req->h); /* after the poll stopped: it closes the fds */
    req->h = NULL;
    if (req->open_handles == 0) {
        free(req);
    }
}

static inline void csql_uv__step(csql_uv_dial *req);

/* The loop has worked CSQL_UV_BUDGET_MS since it last woke (uv_now is that moment). */
static inline int csql_uv__over_budget(uv_loop_t *loop)
{
    return CSQL_UV_BUDGET_MS > 0 && uv_hrtime() / 1000000 >= uv_now(loop) + CSQL_UV_BUDGET_MS;
}

static inline void csql_uv__on_timer(uv_timer_t *t);

static inline void csql_uv__on_poll(uv_poll_t *p, int status, int events)
{
    (void)status; /* an error is csql's to find: continue reports it */
    (void)events;
    csql_uv_dial *req = (csql_uv_dial *)p->data;
    if (csql_uv__over_budget(req->loop)) {
        return; /* still ready: reported again in the next iteration */
    }
    csql_uv__step(req);
}

static inline void csql_uv__on_timer(uv_timer_t *t)
{
    csql_uv_dial *req = (csql_uv_dial *)t->data;
    if (csql_uv__over_budget(req->loop)) {
        /* 1 ms, not 0: a 0 ms timer re-armed inside the timer phase runs again in that phase. */
        uv_timer_start(t, csql_uv__on_timer, 1, 0);
        return;
    }
    csql_uv__step(req);
}

/* Follow csql's fd, events and deadline after a continue. 0, or a libuv error. */
static inline int csql_uv__rearm(csql_uv_dial *req)
{
    int fd = csql_dial_async_fd(req->h);
    int ev = csql_dial_async_events(req->h);
    int uv_ev = (ev & CSQL_ASYNC_READ ? UV_READABLE : 0) | (ev & CSQL_ASYNC_WRITE ? UV_WRITABLE : 0);
    if (fd != req->poll_fd) {
        csql_uv__drop_poll(req);
        if (fd >= 0) {
            uv_poll_t *p = (uv_poll_t *)malloc(sizeof(*p));
            if (p == NULL) {
                return UV_ENOMEM;
            }
            int rc = uv_poll_init(req->loop, p, fd);
            if (rc != 0) {
                free(p);
                return rc;
            }
            p->data = req;
            req->open_handles++;
            req->poll = p;
            req->poll_fd = fd;
            req->poll_events = -1;
        }
    }
    if (req->poll != NULL && uv_ev != req->poll_events) {
        int rc = uv_poll_start(req->poll, uv_ev, csql_uv__on_poll);
        if (rc != 0) {
            return rc;
        }
        req->poll_events = uv_ev;
    }
    return uv_timer_start(req->timer, csql_uv__on_timer,
                          (uint64_t)csql_dial_async_timeout_ms(req->h), 0);
}

static inline void csql_uv__step(csql_uv_dial *req)
{
    csql_conn *conn = NULL;
    int rc = csql_dial_async_continue(req->h, &conn);
    if (rc == CSQL_ERR_WOULD_BLOCK) {
        int urc = csql_uv__rearm(req);
        if (urc == 0) {
            return;
        }
        rc = csql_error_set(urc == UV_ENOMEM ? CSQL_ERR_NOMEM : CSQL_ERR_INTERNAL,
                            "csql libuv adapter: could not watch the dial's fd: %s",
                            uv_strerror(urc));
    }
    csql_uv_dial_cb cb = req->cb;
    void *ud = req->userdata;
    csql_uv__teardown(req);
    /* req stays allocated until libuv has closed its timer, after this callback. */
    cb(req, rc, conn, ud);
}

/* ---- API ---- */

/*
 * Start dialling `instance` on `loop`. Returns 0 (cb will run once) or a
 * csql_err (cb will never run): the errors of csql_dial_async_start, or
 * CSQL_ERR_NOMEM / CSQL_ERR_INTERNAL if libuv could not set up a timer.
 */
static inline int csql_uv_dial_start(uv_loop_t *loop, csql_dialer *d, const char *instance,
                                     const csql_dial_options *opts, csql_uv_dial_cb cb,
                                     void *userdata, csql_uv_dial **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (loop == NULL || cb == NULL || out == NULL) {
        return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                              "csql_uv_dial_start: loop, cb and out are required");
    }
    csql_uv_dial *req = (csql_uv_dial *)calloc(1, sizeof(*req));
    uv_timer_t *timer = (uv_timer_t *)malloc(sizeof(*timer));
    if (req == NULL || timer == NULL) {
        free(req);
        free(timer);
        return csql_error_set(CSQL_ERR_NOMEM, "csql_uv_dial_start: out of memory");
    }
    int rc = csql_dial_async_start(d, instance, opts, NULL, NULL, &req->h);
    if (rc != 0) {
        free(req);
        free(timer);
        return rc;
    }
    req->loop = loop;
    req->cb = cb;
    req->userdata = userdata;
    req->poll_fd = -1;
    uv_timer_init(loop, timer);
    timer->data = req;
    req->timer = timer;
    req->open_handles = 1;
    /* The first continue runs from the loop: never call back from inside start. */
    int urc = uv_timer_start(timer, csql_uv__on_timer, 0, 0);
    if (urc != 0) {
        req->finished = 1;
        csql_dial_async_free(req->h);
        req->h = NULL;
        uv_close((uv_handle_t *)timer, csql_uv__handle_closed);
        return csql_error_set(CSQL_ERR_INTERNAL, "csql_uv_dial_start: %s", uv_strerror(urc));
    }
    *out = req;
    return 0;
}

/*
 * Cancel a dial that has not called back: the callback will not run and
 * everything is released (the request itself once libuv closed its
 * handles). Not after the callback has started.
 */
static inline void csql_uv_dial_cancel(csql_uv_dial *req)
{
    if (req != NULL && !req->finished) {
        csql_uv__teardown(req);
    }
}

#ifdef __cplusplus
}
#endif
#endif
