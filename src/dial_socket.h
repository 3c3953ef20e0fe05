/*
 * Internal: the network half of a dial. TCP connect to host:port (IP literal
 * or name, resolved here) within a deadline, keepalive, TLS handshake with a
 * certset's context and identity expectations, then the metadata exchange.
 */
#ifndef CSQL_SRC_DIAL_SOCKET_H
#define CSQL_SRC_DIAL_SOCKET_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "certset.h"
#include "instance_name.h"

typedef struct csql__dial_params {
    const char *host;           /* IP literal or DNS name (PSC) */
    uint16_t port;              /* 3307 */
    uint32_t keepalive_s;       /* 0 = off */
    bool mdx;                   /* send MDX when cs->info.mdx_supported */
    const char *user_agent;     /* for MDX */
    int64_t deadline_ms;        /* monotonic */
} csql__dial_params;

/*
 * Connect and handshake. On success *fd and *ssl are set; the socket is
 * non-blocking (csql__conn_new expects that; it polls).
 * Errors: CSQL_ERR_DNS, CSQL_ERR_CONNECT (the caller forces a refresh),
 * CSQL_ERR_TLS_HANDSHAKE / CSQL_ERR_TLS_VERIFY (the caller drops the cache
 * entry), CSQL_ERR_MDX, CSQL_ERR_TIMEOUT.
 */
int csql__dial_socket(const csql__certset *cs, const csql__instance_name *name,
                      const csql__dial_params *p, int *fd, SSL **ssl);

#endif
