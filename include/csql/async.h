/*
 * Non-blocking dials, for programs built around an event loop (epoll, libuv,
 * libevent...). A dial handle never blocks the calling thread: it waits for
 * its certificate on an eventfd that csql's refresh threads signal, and runs
 * the TCP connect, the TLS handshake and the metadata exchange as a state
 * machine driven by the caller's readiness events. See docs/async.md.
 *
 * The loop contract (like libpq's PQconnectPoll, libcurl's multi interface):
 *
 *     csql_dial_async *h;
 *     csql_dial_async_start(d, "p:r:i", NULL, NULL, NULL, &h);
 *     for (;;) {
 *         csql_conn *conn;
 *         int rc = csql_dial_async_continue(h, &conn);
 *         if (rc != CSQL_ERR_WOULD_BLOCK) { ... done: rc == 0 and conn, or an error ...; break; }
 *         wait until csql_dial_async_fd(h) is ready for csql_dial_async_events(h),
 *         or csql_dial_async_timeout_ms(h) milliseconds have passed;
 *     }
 *     csql_dial_async_free(h);
 *
 * The fd may change from one continue call to the next (certificate wait ->
 * socket; another address). An fd stays open until the continue call after
 * the one that stopped reporting it (or free), so the caller can take it out
 * of its loop first; compare the fd after every continue. When the dial
 * fails, the last fd reported stays open until free; when it succeeds, the
 * last socket reported is the conn's (csql_conn_fd).
 *
 * Adapters: csql/adapters/libuv.h, csql/adapters/libevent.h (header-only).
 * Threads: a handle is used by one thread at a time; different handles may
 * live on different threads. The dialer must outlive its handles.
 */
#ifndef CSQL_ASYNC_H
#define CSQL_ASYNC_H

#include <stdint.h>

#include "csql/conn.h"
#include "csql/dialer.h"
#include "csql/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct csql_dial_async csql_dial_async;

/* Readiness bits of csql_dial_async_events (also used by the driver helpers' async calls). */
#define CSQL_ASYNC_READ 1
#define CSQL_ASYNC_WRITE 2

/*
 * Completion callback (optional). Runs once, inside the csql_dial_async_continue
 * call that finished the dial, on that thread: status 0 with conn (owned by
 * the callee: csql_conn_close it), or a negative csql_err with conn NULL and
 * csql_error_last() set. It may call csql_dial_async_free(h).
 */
typedef void (*csql_dial_async_cb)(csql_dial_async *h, int status, csql_conn *conn,
                                   void *userdata);

/*
 * Start dialling `instance` without blocking: checks the arguments and
 * options, allocates, and returns at once (no I/O, no lock held for long).
 * Then call csql_dial_async_continue (at once: the first call does the first
 * steps). cb may be NULL (then continue hands over the conn). opts as for
 * csql_dial; its timeout (or the dialer's dial timeout) is the deadline of
 * the whole dial, counted from now.
 * Errors (nothing allocated, cb never called): CSQL_ERR_INVALID_ARGUMENT,
 * CSQL_ERR_BAD_INSTANCE_NAME, CSQL_ERR_CLOSED, CSQL_ERR_NOMEM.
 */
CSQL_EXTERN int csql_dial_async_start(csql_dialer *d, const char *instance,
                                      const csql_dial_options *opts, csql_dial_async_cb cb,
                                      void *userdata, csql_dial_async **out);

/*
 * Make progress. Returns:
 *   CSQL_ERR_WOULD_BLOCK  in progress: wait for the fd, events and timeout
 *                         below, then call again (spurious calls are harmless);
 *   0                     connected: *out is the conn (without a callback), or
 *                         the callback got it;
 *   < 0                   failed, with csql_error_last() set: the errors of
 *                         csql_dial (CSQL_ERR_TIMEOUT once the deadline has
 *                         passed, whatever the dial was doing).
 * Cache reactions are those of csql_dial: a failed TCP connect (or a timeout
 * while connecting) schedules a refresh; a TLS handshake failure drops the
 * certificate. After the end, later calls return the same error again (or
 * CSQL_ERR_INVALID_ARGUMENT once the conn was handed over). out may be NULL
 * with a callback. With a callback that freed h, h must not be used again.
 */
CSQL_EXTERN int csql_dial_async_continue(csql_dial_async *h, csql_conn **out);

/* The fd to watch now, or -1 when there is none (call continue when the timeout expires). */
CSQL_EXTERN int csql_dial_async_fd(const csql_dial_async *h);

/* What to wait for on that fd: CSQL_ASYNC_READ and/or CSQL_ASYNC_WRITE, or 0. */
CSQL_EXTERN int csql_dial_async_events(const csql_dial_async *h);

/*
 * Milliseconds until continue must be called even if the fd is not ready:
 * the time left before the dial's deadline (0: call it now). Arm a timer
 * with it after every continue.
 */
CSQL_EXTERN int csql_dial_async_timeout_ms(const csql_dial_async *h);

/*
 * Cancel (at any point: waiting for a certificate, connecting, mid-handshake)
 * and free everything the dial holds, including a connection not handed over.
 * The callback is not called. Closes the fds this handle reported, so take
 * them out of your event loop first. NULL is ignored.
 */
CSQL_EXTERN void csql_dial_async_free(csql_dial_async *h);

#ifdef __cplusplus
}
#endif
#endif
