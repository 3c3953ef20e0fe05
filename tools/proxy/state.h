/*
 * csql-proxy: the state shared by the main thread (startup, shutdown), the
 * event loop callbacks (connection counts) and the HTTP handlers (health
 * checks, metrics, /quitquitquit). Plain atomics; no locks.
 */
#ifndef CSQL_PROXY_STATE_H
#define CSQL_PROXY_STATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "metrics.h"

typedef enum proxy_phase {
    PHASE_STARTING = 0, /* /startup and /readiness answer 503 */
    PHASE_SERVING = 1,  /* every listener that could start is up */
    PHASE_STOPPING = 2, /* shutting down: /readiness answers 503 */
} proxy_phase;

typedef struct proxy_state {
    atomic_int phase;
    atomic_int_fast64_t open; /* client connections open over all instances */
    bool open_known;          /* the engine reports connection events (else open stays 0) */
    uint64_t max_connections; /* 0: no limit */
    metrics *metrics;
    const char *prometheus_namespace;
    int wake_fd;              /* eventfd the main thread polls */
    atomic_bool quit_requested; /* /quitquitquit was called */
} proxy_state;

/* Ask the main thread to shut down (exit 0), from any thread. */
void proxy_state_request_quit(proxy_state *st);

#endif
