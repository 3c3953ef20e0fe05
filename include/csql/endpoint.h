/*
 * csql_endpoint: an in-process local endpoint for drivers that cannot take an
 * existing TLS socket (libpq, MariaDB Connector/C, FreeTDS). It listens on a
 * Unix socket or a loopback TCP port; each accepted connection is forwarded,
 * byte for byte, over a csql TLS connection to the instance by the dialer's
 * event loops (one thread by default, csql_config_set_event_loops for more;
 * started on first use; no thread per connection). Half-close works both ways; buffers are bounded per
 * connection and direction (a slow reader slows the sender, it never grows
 * memory); an error on either side closes the other.
 *
 * Lifetime: close every endpoint before freeing its dialer. Closing an
 * endpoint stops it accepting; connections already forwarded carry on until
 * either side closes them (so a driver connection outlives the endpoint that
 * made it), and end at the latest when the dialer is freed.
 * Thread safety: every function may be called from any thread; one thread
 * closes an endpoint, and nothing uses it after that.
 * See docs/internals/local-endpoint.md and docs/drivers/.
 */
#ifndef CSQL_ENDPOINT_H
#define CSQL_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "csql/conn.h"
#include "csql/dialer.h"
#include "csql/errors.h"
#include "csql/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct csql_endpoint csql_endpoint;

/*
 * Called when an accepted connection could not be forwarded (its csql_dial
 * failed; the local connection was closed, with a reset on TCP). Runs on
 * csql's event loop thread (with several loops, the connection's one: calls
 * for different connections may run at once): it must not block, nor call
 * csql_endpoint_close.
 */
typedef void (*csql_endpoint_error_fn)(const csql_error *err, void *userdata);

/* What happened to one connection of an endpoint (csql_endpoint_options.on_event). */
typedef enum csql_endpoint_event_kind {
    CSQL_ENDPOINT_ACCEPTED = 1,    /* a client connected; return non-zero to refuse it (closed) */
    CSQL_ENDPOINT_DIALLED = 2,     /* its connection to the instance is up (dial_us) */
    CSQL_ENDPOINT_DIAL_FAILED = 3, /* it could not be dialled (error); the client was closed. Last event */
    CSQL_ENDPOINT_CLOSED = 4       /* forwarding ended (bytes, error NULL if clean). Last event */
} csql_endpoint_event_kind;

typedef struct csql_endpoint_event {
    csql_endpoint_event_kind kind;
    uint64_t id;              /* the connection's number on this endpoint, from 1 */
    const char *peer;         /* "ip:port" of a TCP client; "" for a Unix socket */
    uint64_t dial_us;         /* DIALLED, DIAL_FAILED: accept to dial done (0: pre-dialled) */
    uint64_t bytes_up;        /* CLOSED: client -> instance */
    uint64_t bytes_down;      /* CLOSED: instance -> client */
    const csql_error *error;  /* DIAL_FAILED; CLOSED when it did not end cleanly; else NULL */
} csql_endpoint_event;

/*
 * Every connection gets ACCEPTED, then either nothing more (refused), or
 * DIALLED then CLOSED, or DIAL_FAILED. Runs on csql's event loop thread (or,
 * for connections cut short by csql_dialer_free, on its thread): it must not
 * block, nor call csql_endpoint_close. With several event loops
 * (csql_config_set_event_loops), events of different connections may run at
 * the same time on different threads; a connection's events after ACCEPTED
 * all run on the one loop that forwards it. The event and its strings are valid
 * during the call only. The return value matters for ACCEPTED only.
 */
typedef int (*csql_endpoint_event_fn)(const csql_endpoint_event *ev, void *userdata);

/* Options of an endpoint. Initialise with CSQL_ENDPOINT_OPTIONS_INIT; fields are only ever appended. */
typedef struct csql_endpoint_options {
    unsigned int version;            /* CSQL_ENDPOINT_OPTIONS_VERSION */
    const csql_dial_options *dial;   /* for the dials of accepted connections (copied); NULL: defaults */
    uint32_t buffer_size;            /* bytes per direction per connection; 0: 32768; 4096..1048576 */
    uint32_t max_connections;        /* forwarded connections open at once; 0: no limit. Beyond it,
                                        new connections wait in the listen backlog */
    const char *unix_socket_name;    /* file name of the socket in its directory; NULL: "csql.sock"
                                        (libpq wants ".s.PGSQL.<port>") */
    csql_endpoint_error_fn on_error; /* may be NULL */
    void *userdata;                  /* for on_error and on_event */
    /* version >= 2 */
    csql_endpoint_event_fn on_event; /* per-connection events (metrics, logs, limits); may be NULL */
} csql_endpoint_options;

#define CSQL_ENDPOINT_OPTIONS_VERSION 2
#define CSQL_ENDPOINT_OPTIONS_INIT {CSQL_ENDPOINT_OPTIONS_VERSION, NULL, 0, 0, NULL, NULL, NULL, NULL}

/*
 * Listen on a Unix socket for `instance`; every accepted connection gets a
 * fresh csql_dial. `dir` is an existing directory for the socket; NULL makes
 * a private one (mode 0700, fresh name under $TMPDIR or /tmp) that close
 * removes. The socket itself is mode 0600 and is removed by close.
 * Errors: CSQL_ERR_INVALID_ARGUMENT (bad option, path too long),
 * CSQL_ERR_BAD_INSTANCE_NAME, CSQL_ERR_IO (socket, bind, listen), CSQL_ERR_NOMEM.
 * The instance is not contacted here: dial errors are reported per connection
 * through opts->on_error.
 */
CSQL_EXTERN int csql_endpoint_open_unix(csql_endpoint **out, csql_dialer *d, const char *instance,
                                        const char *dir, const csql_endpoint_options *opts);

/*
 * Listen on a loopback TCP address for `instance` (address NULL: "127.0.0.1";
 * only 127.0.0.0/8 and ::1 are accepted; port 0: an ephemeral port, see
 * csql_endpoint_port). Otherwise as csql_endpoint_open_unix.
 */
CSQL_EXTERN int csql_endpoint_open_tcp(csql_endpoint **out, csql_dialer *d, const char *instance,
                                       const char *address, uint16_t port,
                                       const csql_endpoint_options *opts);

/*
 * The one-shot form: serve an already dialled connection on a Unix socket in
 * a private directory (mode 0700). The first connection accepted is forwarded
 * over `conn`. With d == NULL that is the only one: the socket and its
 * directory are removed as soon as it is accepted. With a dialer, later
 * connections (a driver's cancel request or reconnect) are forwarded over
 * fresh dials to the same instance until the endpoint is closed.
 * Ownership of conn passes to the endpoint, also on failure; nothing else
 * may use it afterwards. Closing the endpoint before anything connected
 * closes conn.
 */
CSQL_EXTERN int csql_endpoint_open_conn(csql_endpoint **out, csql_conn *conn, csql_dialer *d,
                                        const csql_endpoint_options *opts);

/*
 * Serve a socket the caller made, bound and listening (TCP or Unix: its own
 * address, permissions, or one inherited through socket activation); every
 * accepted connection gets a fresh dial as with csql_endpoint_open_unix.
 * Ownership of fd passes to the endpoint, also on failure; close closes it
 * but removes no file. Errors: CSQL_ERR_INVALID_ARGUMENT (not a listening
 * stream socket), CSQL_ERR_BAD_INSTANCE_NAME, CSQL_ERR_NOMEM.
 */
CSQL_EXTERN int csql_endpoint_open_fd(csql_endpoint **out, csql_dialer *d, const char *instance,
                                      int fd, const csql_endpoint_options *opts);

/* The socket's path ("<dir>/<name>"), or NULL for TCP. Valid until close. */
CSQL_EXTERN const char *csql_endpoint_path(const csql_endpoint *ep);
/* The directory holding the socket (for libpq's host=), or NULL for TCP. */
CSQL_EXTERN const char *csql_endpoint_dir(const csql_endpoint *ep);
/* The TCP port listened on, or 0 for a Unix socket. */
CSQL_EXTERN uint16_t csql_endpoint_port(const csql_endpoint *ep);
/* The TCP address listened on ("127.0.0.1"), or NULL for a Unix socket. */
CSQL_EXTERN const char *csql_endpoint_address(const csql_endpoint *ep);

/*
 * Stop listening, remove the socket file (and the private directory), close
 * an unused pre-dialled conn, and free. Forwarded connections carry on (see
 * above). Waits for nothing but the event loop to take note. NULL is ignored.
 */
CSQL_EXTERN void csql_endpoint_close(csql_endpoint *ep);

#ifdef __cplusplus
}
#endif
#endif
