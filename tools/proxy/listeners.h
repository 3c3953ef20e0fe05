/*
 * csql-proxy: the dialer and one csql_endpoint per instance (the local
 * endpoint engine forwards every accepted connection over a fresh csql_dial
 * on the dialer's event loop: no thread per connection, bounded buffers,
 * half-close). Startup isolates instances: one that cannot be set up fails
 * the start, or with --skip-failed-instance-config is logged and skipped; at
 * run time a failed dial only closes that client.
 */
#ifndef CSQL_PROXY_LISTENERS_H
#define CSQL_PROXY_LISTENERS_H

#include <stdbool.h>
#include <stddef.h>

#include "opts.h"
#include "state.h"

typedef struct proxy_listeners proxy_listeners;

/* What the linked libcsql lets csql-proxy do (see docs/proxy.md, "Engine hooks"). */
typedef struct proxy_engine_features {
    bool connection_events; /* immediate refusal, open counts, dial latency, bytes */
    bool listen_fd;         /* any listen address, socket modes set by the proxy */
    bool refresh_events;    /* refresh success and failure counts */
} proxy_engine_features;

proxy_engine_features proxy_engine_features_get(void);

/* Build the dialer. `st->metrics` must hold one entry per instance, in order. */
int proxy_listeners_new(proxy_listeners **out, const proxy_opts *o, proxy_state *st, char *err,
                        size_t errlen);

/*
 * Fetch what must be known (database versions), then listen for every
 * instance, in order. Returns the number of instances served, or -1 with a
 * message (the first failure, unless --skip-failed-instance-config).
 * May be interrupted from another thread with proxy_listeners_close_dialer.
 */
int proxy_listeners_start(proxy_listeners *l, char *err, size_t errlen);

/* --run-connection-test: one csql_dial per served instance. 0, or -1 with a message. */
int proxy_listeners_connection_test(proxy_listeners *l, char *err, size_t errlen);

/* Stop accepting everywhere and remove the Unix sockets (forwarded connections carry on). */
void proxy_listeners_stop_accepting(proxy_listeners *l);

/* Stop the dialer's refreshes; later dials fail. Safe from any thread, idempotent. */
void proxy_listeners_close_dialer(proxy_listeners *l);

/* Free everything; connections still forwarded are cut. NULL is ignored. */
void proxy_listeners_free(proxy_listeners *l);

#endif
