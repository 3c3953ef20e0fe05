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


/*
 * ---- The steps of a dial, for the non-blocking dial (dial_nb.c) ----
 * csql__dial_socket is built from these; the messages are the same either way.
 */
#include <netdb.h>
#include <stddef.h>

/* Room for csql__dial_where's text. */
#define CSQL__DIAL_WHERE_MAX 600

/* "host:port (instance p:r:i)" ("[host]" for IPv6) into buf, for messages. */
void csql__dial_where(const char *host, uint16_t port, const csql__instance_name *name, char *buf,
                      size_t len);

/*
 * Resolve host:port for a TCP connect; IP literals skip the resolver. May
 * block in getaddrinfo for a name. CSQL_ERR_DNS naming `where`.
 */
int csql__dial_resolve(const char *host, uint16_t port, const char *where, struct addrinfo **res);

/* TCP_NODELAY and keepalive (0 = off); best effort. */
void csql__dial_set_socket_options(int fd, uint32_t keepalive_s);

/*
 * A client SSL over the connected fd for certset cs: csql's socket BIO
 * (no SIGPIPE), SNI and the server identity to expect for `name`. `what`
 * prefixes messages. CSQL_ERR_NOMEM, CSQL_ERR_INTERNAL.
 */
int csql__dial_tls_new(const csql__certset *cs, const csql__instance_name *name, int fd,
                       const char *what, SSL **out);

/* After SSL_connect returned 1: the server was verified and sent a certificate, else CSQL_ERR_TLS_VERIFY. */
int csql__dial_tls_verified(SSL *ssl, const char *what);

/*
 * A failed SSL operation (ssl_err from SSL_get_error, sys_errno = errno
 * right after the call) as a csql error of `code`; a bare socket failure
 * names the errno or the server's close; a verification failure is CSQL_ERR_TLS_VERIFY.
 */
int csql__dial_ssl_failure(SSL *ssl, int code, int ssl_err, int sys_errno, const char *what);

/* The MDX request frame into buf (cap >= 12 + CSQL__MDX_MAX_BODY): its length, or a csql error. */
int csql__dial_mdx_request(const char *user_agent, unsigned char *buf, size_t cap,
                           const char *what);
/* A 12-byte MDX answer header: 0 with *body = the announced body length, or CSQL_ERR_MDX. */
int csql__dial_mdx_header(const unsigned char *hdr, size_t *body, const char *what);
/* A whole MDX answer (header + body): 0 if the server said OK, else CSQL_ERR_MDX with its message. */
int csql__dial_mdx_verdict(const unsigned char *frame, size_t len, const char *what);

#endif
