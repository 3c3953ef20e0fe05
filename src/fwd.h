/*
 * Internal: one forwarded connection, a local stream socket (the driver's
 * end) paired with a remote stream (a csql_conn's TLS, or a plain socket in
 * tests), pumped by the event loop (docs/internals/local-endpoint.md).
 *
 * - Bounded: one ring of opts->buffer_size bytes per direction, allocated
 *   while data is in flight and released when empty; a full ring stops reading
 *   its source (backpressure), so a slow reader never grows memory.
 * - Half-close both ways: local EOF -> TLS close_notify + shutdown(SHUT_WR)
 *   towards the server while server bytes keep flowing to the driver; server
 *   close_notify/EOF -> shutdown(local, SHUT_WR) while driver bytes keep flowing.
 * - An error on either side closes the other: the remote gets close_notify
 *   (if it can still take it), a TCP local peer gets a reset so that it cannot
 *   mistake the end for a clean one; bytes already received from the healthy
 *   side are flushed best-effort first.
 */
#ifndef CSQL_SRC_FWD_H
#define CSQL_SRC_FWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "csql/conn.h"
#include "loop.h"

#define CSQL__FWD_BUFFER_DEFAULT 32768u
#define CSQL__FWD_BUFFER_MIN 4096u
#define CSQL__FWD_BUFFER_MAX 1048576u

typedef struct csql__fwd csql__fwd;

/* The server side of a forwarded connection. */
typedef struct csql__fwd_remote {
    int fd;
    SSL *ssl;        /* NULL: a plain stream (tests, fake transports) */
    csql_conn *conn; /* when set it owns fd and ssl and is closed with csql_conn_close */
} csql__fwd_remote;

typedef struct csql__fwd_stats {
    uint64_t up_bytes;        /* local -> remote */
    uint64_t down_bytes;      /* remote -> local */
    size_t up_max_buffered;   /* high-water mark of each ring, never above the cap */
    size_t down_max_buffered;
    size_t buffer_cap;
    int error;                /* 0 for a clean end, else the csql_err that ended it */
    char message[200];        /* what ended it, for logs */
} csql__fwd_stats;

typedef struct csql__fwd_opts {
    size_t buffer_size; /* per direction; 0: CSQL__FWD_BUFFER_DEFAULT */
    bool local_is_tcp;  /* abortive close (RST) on errors */
    /* Called on the loop thread once both sides are closed, just before the pair is freed. */
    void (*on_close)(void *arg, const csql__fwd_stats *stats);
    void *arg;
} csql__fwd_opts;

/*
 * Start forwarding (loop thread). Takes ownership of local_fd and *remote,
 * also on failure (then both are closed and on_close is not called). Both fds
 * are made non-blocking. The pair holds a reference on the loop until freed.
 */
int csql__fwd_start(csql__loop *loop, int local_fd, const csql__fwd_remote *remote,
                    const csql__fwd_opts *opts, csql__fwd **out);

/* Abort: close both sides now (loop thread). on_close follows, with error CSQL_ERR_CLOSED. */
void csql__fwd_abort(csql__fwd *f);

/* Current counters (loop thread). */
void csql__fwd_get_stats(const csql__fwd *f, csql__fwd_stats *out);

/* Forwarded connections alive in the process, and their bytes of ring storage (tests). */
int csql__fwd_live_count(void);

#endif
