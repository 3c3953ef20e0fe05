/*
 * Internal: the network half of a dial as a non-blocking state machine, for
 * csql_dial_async (docs/async.md). The same steps as csql__dial_socket (TCP
 * connect to each address in turn, socket options, TLS handshake with the
 * certset's context and identity checks, the optional metadata exchange),
 * with the same errors and messages, but never waiting: each step runs as far
 * as the socket allows and then says which readiness it needs.
 *
 * Single-threaded: one thread at a time drives a csql__dial_nb.
 */
#ifndef CSQL_SRC_DIAL_NB_H
#define CSQL_SRC_DIAL_NB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netdb.h>
#include <openssl/ssl.h>

#include "certset.h"
#include "dial_socket.h"
#include "instance_name.h"

/* Readiness a step waits for (the values of CSQL_ASYNC_READ / CSQL_ASYNC_WRITE). */
enum { CSQL__NB_READ = 1, CSQL__NB_WRITE = 2 };

typedef struct csql__dial_nb {
    /* set by init */
    csql__certset *cs;             /* one reference */
    csql__instance_name name;
    char *host;
    uint16_t port;
    uint32_t keepalive_s;
    bool mdx;
    char *user_agent;              /* or NULL */
    int64_t deadline_ms;           /* monotonic */
    int64_t start_ms;
    char where[CSQL__DIAL_WHERE_MAX];
    /* progress */
    int state;
    struct addrinfo *res;          /* owned */
    const struct addrinfo *next_ai;
    int tries;
    int last_errno;
    int fd;                        /* the socket being dialled, or -1 */
    int retired_fd;                /* a failed attempt's socket, closed at the next step */
    SSL *ssl;
    unsigned events;               /* CSQL__NB_* wanted now */
    unsigned char *mdx_buf;        /* request, then answer */
    size_t mdx_len;                /* request length, then bytes of the answer wanted so far */
    size_t mdx_done;               /* bytes written / read */
    bool mdx_have_header;
} csql__dial_nb;

/*
 * Prepare a dial of p->host:p->port with certset cs (a reference is taken;
 * host and user agent are copied). No I/O. CSQL_ERR_INVALID_ARGUMENT, CSQL_ERR_NOMEM.
 * On failure nothing needs disposing; on success call csql__dial_nb_dispose.
 */
int csql__dial_nb_init(csql__dial_nb *nb, csql__certset *cs, const csql__instance_name *name,
                       const csql__dial_params *p);

/* True when the host is a name (PSC) that getaddrinfo must resolve (which may block). */
bool csql__dial_nb_needs_resolver(const csql__dial_nb *nb);

/*
 * Give the addresses to try (from csql__dial_resolve, possibly run on another
 * thread); ownership passes. Without this, the first step resolves inline
 * (instantly for an IP literal).
 */
void csql__dial_nb_set_addresses(csql__dial_nb *nb, struct addrinfo *res);

/*
 * Make progress. Returns CSQL_ERR_WOULD_BLOCK when waiting for
 * csql__dial_nb_events() on csql__dial_nb_fd(); 0 when the connection is
 * established and verified (take it with csql__dial_nb_take); or a final
 * csql error raised on this thread: CSQL_ERR_DNS, CSQL_ERR_CONNECT,
 * CSQL_ERR_TLS_HANDSHAKE, CSQL_ERR_TLS_VERIFY, CSQL_ERR_MDX, CSQL_ERR_TIMEOUT
 * (the deadline passed), CSQL_ERR_NOMEM. Calling it without the fd being
 * ready is harmless. After an error it only returns CSQL_ERR_INVALID_ARGUMENT.
 */
int csql__dial_nb_step(csql__dial_nb *nb);

/* The socket to watch, or -1 (before the first step, and after the end). */
int csql__dial_nb_fd(const csql__dial_nb *nb);
/* CSQL__NB_READ and/or CSQL__NB_WRITE, or 0. */
unsigned csql__dial_nb_events(const csql__dial_nb *nb);

/* After step returned 0: hand over the non-blocking socket and the SSL. */
void csql__dial_nb_take(csql__dial_nb *nb, int *fd, SSL **ssl);

/*
 * Give up socket fd if the dial holds it (the one being dialled, whose SSL
 * is then freed, or a retired one): returns fd, which the caller closes, or
 * -1. For a dial that ended while the caller still watches that fd.
 */
int csql__dial_nb_release_fd(csql__dial_nb *nb, int fd);

/* Close and free whatever the dial still holds (any state). */
void csql__dial_nb_dispose(csql__dial_nb *nb);

#endif
