/*
 * csql-proxy HTTP servers (libmicrohttpd, one internal thread each):
 *  - the HTTP server on --http-address:--http-port: /startup, /liveness,
 *    /readiness with --health-check, /metrics with --prometheus;
 *  - the admin server on localhost:--admin-port: /quitquitquit with --quitquitquit.
 * Health semantics are the Auth Proxy's: /liveness is always 200; /startup is
 * 200 once serving; /readiness is 503 before that, while stopping, and when
 * --max-connections are open. None of them dials an instance.
 */
#ifndef CSQL_PROXY_HTTP_H
#define CSQL_PROXY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state.h"

typedef struct proxy_http proxy_http;

typedef struct proxy_http_routes {
    bool health;
    bool metrics;
    bool quitquitquit;
} proxy_http_routes;

/*
 * Listen on address:port (a name such as "localhost" or an IP literal; port 0
 * picks a free port) and serve `routes`. -1 with a message on failure.
 */
int proxy_http_start(proxy_http **out, const char *what, const char *address, int port,
                     proxy_http_routes routes, proxy_state *st, char *err, size_t errlen);

/* The bound address, e.g. "127.0.0.1:9090". */
const char *proxy_http_where(const proxy_http *h);

/* Stop (waits for the thread) and free. NULL is ignored. */
void proxy_http_stop(proxy_http *h);

/* The body and status of a health route (exposed for tests): path "/startup" etc. */
int proxy_health_answer(const proxy_state *st, const char *path, char *body, size_t cap);

#endif
