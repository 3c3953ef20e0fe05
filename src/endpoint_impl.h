/*
 * Internal to the endpoint: endpoint.c (listeners, lifecycle, accepting) and
 * endpoint_conn.c (what happens to one accepted connection: its dial, its
 * forwarding, its events). Fields marked "loop" are touched on the loop
 * thread only.
 */
#ifndef CSQL_SRC_ENDPOINT_IMPL_H
#define CSQL_SRC_ENDPOINT_IMPL_H

#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdbool.h>
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

struct csql_endpoint {
    atomic_int refs; /* the caller's, one per forwarded connection, one per dial in flight */
    csql__loop *loop;
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
    bool paused;          /* loop: not watching the listener for now */
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
    int active;              /* loop: forwarded connections */
    int dials;               /* loop: dials in flight */
    csql__ep_conn *conns;    /* loop */
    csql__endpoint_stats st; /* loop */
};

/* ---- endpoint.c ---- */

void csql__ep_ref(csql_endpoint *ep);
void csql__ep_unref(csql_endpoint *ep);
/* A connection or a dial ended: accept again if a limit had paused accepting (loop). */
void csql__ep_slot_freed(csql_endpoint *ep);

/* ---- endpoint_conn.c ---- */

/* Close a remote that will not be forwarded (any thread). */
void csql__ep_remote_dispose(csql__fwd_remote *r);
/* Close a local connection; a TCP one with a reset, so its peer cannot take it for a clean end. */
void csql__ep_abortive_close(int fd, bool tcp);
/* ACCEPTED (loop): 0 to go on; non-zero when the application refused the connection. */
int csql__ep_accepted(csql_endpoint *ep, const csql__ep_peer *peer);
/* Forward fd over remote, both owned from here (loop): DIALLED now, CLOSED when it ends. */
void csql__ep_forward(csql_endpoint *ep, int fd, const csql__ep_peer *peer,
                      const csql__fwd_remote *remote);
/* Dial for fd, owned from here, with the endpoint's dial_async or dial (loop). */
void csql__ep_dial(csql_endpoint *ep, int fd, const csql__ep_peer *peer);
/* The highest ring fill of the connections being forwarded (loop; stats). */
size_t csql__ep_conns_max_buffered(const csql_endpoint *ep);

#endif
