/*
 * Internal: the engine behind csql_endpoint, with the dial injected so that
 * unit tests run it against fake transports (socketpairs, in-test TLS servers)
 * without a dialer.
 */
#ifndef CSQL_SRC_ENDPOINT_INTERNAL_H
#define CSQL_SRC_ENDPOINT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "csql/async.h"
#include "csql/endpoint.h"
#include "fwd.h"

/*
 * Make the remote side for one accepted connection. Runs on a loop worker
 * thread and may block (tests inject fake transports this way). On failure
 * raise a csql error (csql__error) and return its code.
 */
typedef int (*csql__endpoint_dial_fn)(void *ctx, csql__fwd_remote *out);

/*
 * Or start a non-blocking dial (csql/async.h) for one accepted connection, on
 * the loop thread; the loop drives it (no worker thread). Preferred when set.
 */
typedef int (*csql__endpoint_dial_async_fn)(void *ctx, csql_dial_async **out);

typedef struct csql__endpoint_params {
    const void *loop_key;        /* whose loop: the dialer (tests: anything) */
    unsigned loops;              /* the key's loops connections are spread over (0 or 1: one) */
    bool tcp;
    bool adopt_fd;               /* serve fd, a listening socket the caller made (owned from here) */
    int fd;
    const char *dir;             /* unix: NULL for a private 0700 directory */
    const char *address;         /* tcp: NULL for 127.0.0.1 */
    uint16_t port;               /* tcp: 0 for ephemeral */
    const csql__fwd_remote *first; /* served to the first accepted connection (owned from here) */
    bool one_shot;               /* accept exactly one connection */
    csql__endpoint_dial_fn dial; /* NULL: no dials (then one_shot) */
    csql__endpoint_dial_async_fn dial_async; /* used instead of dial when set */
    void *dial_ctx;              /* owned: freed with dial_ctx_free when the endpoint goes */
    void (*dial_ctx_free)(void *ctx);
    const csql_endpoint_options *opts; /* may be NULL */
} csql__endpoint_params;

/* Ownership of first and dial_ctx passes to the endpoint, also on failure. */
int csql__endpoint_open(csql_endpoint **out, const csql__endpoint_params *p);

typedef struct csql__endpoint_stats {
    uint64_t accepted;
    uint64_t dial_failures;
    uint64_t closed_clean;
    uint64_t closed_error;
    int active;                 /* forwarded connections open now */
    size_t max_buffered;        /* highest ring fill of any connection, live or closed */
    size_t buffer_cap;
    bool listening;
} csql__endpoint_stats;

/* Counters of an endpoint (taken on the loop thread). */
int csql__endpoint_stats_get(csql_endpoint *ep, csql__endpoint_stats *out);

#endif
