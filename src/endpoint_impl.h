/*
 * Internal to the endpoint: endpoint.c (listeners, lifecycle, accepting) and
 * endpoint_conn.c (what happens to one accepted connection: its dial, its
 * forwarding, its events). Fields marked "loop" are touched on the
 * endpoint's own loop thread only (loops[0]: listening, accepting); the
 * connections it accepts are dialled and forwarded on whichever of the
 * dialer's loops is least loaded, so what they share is atomic or under
 * conns_mu.
 */
#ifndef CSQL_SRC_ENDPOINT_IMPL_H
#define CSQL_SRC_ENDPOINT_IMPL_H

#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/un.h>

#include "endpoint_internal.h"
#include "loop.h"

/* Who an accepted connection is, for its events. */
typedef struct csql__ep_peer {
    uint64_t id;                     /* from 1, per endpoint */
    int64_t accepted_us;             /* monotonic */
    char addr[INET6_ADDRSTRLEN + 8]; /* "ip:port" or "[ip6]:port"; "" for a Unix socket */
} csql__ep_peer;

typedef struct csql__ep_conn csql__ep_conn;

/* The most event loops an endpoint spreads its connections over. */
#define CSQL__EP_MAX_LOOPS 64

struct csql_endpoint {
    atomic_int refs; /* the caller's, one per forwarded connection, one per dial in flight */
    csql__loop *loop;                       /* loops[0]: the endpoint's own */
    csql__loop *loops[CSQL__EP_MAX_LOOPS];  /* where connections go (each referenced) */
    unsigned nloops;
    csql__loop_io lio;
    csql__loop_io tio; /* accept backoff timer */
    csql__loop_member member;
    int lfd;
    bool tcp;
    bool one_shot;
    bool private_dir;
    bool unlink_on_close; /* the socket file is ours */
    bool closed;          /* loop */
    bool listening;       /* loop: the listener is open */
    atomic_bool paused;   /* written on the loop: not watching the listener for now */
    atomic_bool resume_pending;     /* a resume task is posted to the endpoint's loop */
    csql__loop_task resume_task;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char address[INET6_ADDRSTRLEN];
    uint16_t port;

    csql__fwd_remote first;
    bool has_first;
    csql__endpoint_dial_fn dial;
    csql__endpoint_dial_async_fn dial_async;
    void *dial_ctx;
    void (*dial_ctx_free)(void *);

    size_t buffer_size;
    uint32_t max_connections;
    csql_endpoint_error_fn on_error;
    csql_endpoint_event_fn on_event;
    void *userdata;

    uint64_t next_id;        /* loop */
    atomic_int active;       /* forwarded connections */
    atomic_int dials;        /* dials in flight (and hand-offs to other loops) */
    pthread_mutex_t conns_mu;
    csql__ep_conn *conns;    /* conns_mu */
    csql__endpoint_stats st; /* loop: accepted, buffer_cap (the others below) */
    atomic_uint_fast64_t dial_failures;
    atomic_uint_fast64_t closed_clean;
    atomic_uint_fast64_t closed_error;
    atomic_size_t max_buffered; /* of connections closed */
};

/* ---- endpoint.c ---- */

void csql__ep_ref(csql_endpoint *ep);
void csql__ep_unref(csql_endpoint *ep);
/* A connection or a dial ended: accept again if a limit had paused accepting (any loop). */
void csql__ep_slot_freed(csql_endpoint *ep);
/* The least loaded of the endpoint's loops (ties: the endpoint's own). */
csql__loop *csql__ep_pick_loop(const csql_endpoint *ep);

/* ---- endpoint_conn.c ---- */

/* Close a remote that will not be forwarded (any thread). */
void csql__ep_remote_dispose(csql__fwd_remote *r);
/* Close a local connection; a TCP one with a reset, so its peer cannot take it for a clean end. */
void csql__ep_abortive_close(int fd, bool tcp);
/* ACCEPTED (loop): 0 to go on; non-zero when the application refused the connection. */
int csql__ep_accepted(csql_endpoint *ep, const csql__ep_peer *peer);
/*
 * Forward fd over remote, both owned from here, on `loop` (its thread):
 * DIALLED now, CLOSED when it ends.
 */
void csql__ep_forward(csql_endpoint *ep, csql__loop *loop, int fd, const csql__ep_peer *peer,
                      const csql__fwd_remote *remote);
/*
 * Dial for fd, owned from here, with the endpoint's dial_async or dial, then
 * forward, on `loop`: called on the endpoint's loop thread, it hands the
 * connection over when `loop` is another one.
 */
void csql__ep_dial(csql_endpoint *ep, csql__loop *loop, int fd, const csql__ep_peer *peer);
/* The highest ring fill of the connections forwarded on `loop` (its thread; stats). */
size_t csql__ep_conns_max_buffered(csql_endpoint *ep, const csql__loop *loop);

#endif
