/*
 * csql_conn: one established, verified TLS 1.3 connection to a Cloud SQL
 * instance. The database protocol runs over it unchanged. One thread may read
 * while another writes; two concurrent readers (or writers) are not allowed.
 */
#ifndef CSQL_CONN_H
#define CSQL_CONN_H

#include <stddef.h>
#include <sys/types.h>

#include "csql/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct csql_conn csql_conn;
struct ssl_st; /* OpenSSL's SSL */

/*
 * Read up to len bytes (len > 0). Blocks until at least one byte is available.
 * Returns the number of bytes read (> 0), 0 at end of stream (the server shut
 * down its side: TLS close_notify or TCP FIN), or a negative csql_err with
 * details in csql_error_last():
 *   CSQL_ERR_TLS_IO  a TLS-level failure (bad record, alert from the server,
 *                    e.g. the server refused the client certificate);
 *   CSQL_ERR_IO      the socket failed (connection reset);
 *   CSQL_ERR_INVALID_ARGUMENT  c or buf is NULL, or len is 0.
 *   CSQL_ERR_TIMEOUT nothing arrived within csql_conn_set_timeout's time (not
 *                    final: the connection stays usable);
 *   CSQL_ERR_CLOSED  csql_conn_abort was called (final).
 * End of stream is not an error: reading again returns 0 again, and writing
 * still works (the server may keep reading after its own half-close). An
 * error is final: later reads and writes return the same code.
 */
CSQL_EXTERN ssize_t csql_conn_read(csql_conn *c, void *buf, size_t len);

/*
 * Write up to len bytes. Blocks until at least one byte is written; may write
 * fewer than len (a partial write): the caller writes the rest. Returns the
 * number of bytes written (> 0; 0 only when len is 0) or a negative csql_err
 * (CSQL_ERR_TLS_IO, CSQL_ERR_IO, CSQL_ERR_CLOSED after csql_conn_shutdown or
 * csql_conn_abort, CSQL_ERR_TIMEOUT when the server took nothing within
 * csql_conn_set_timeout's time: final, as TLS cannot take back the record it
 * began to send).
 * After a failure the bytes not reported as written were not delivered.
 */
CSQL_EXTERN ssize_t csql_conn_write(csql_conn *c, const void *buf, size_t len);

/* Write all len bytes or fail: 0 or a negative csql_err. */
CSQL_EXTERN int csql_conn_write_all(csql_conn *c, const void *buf, size_t len);

/*
 * Half-close: tell the server no more data will be written (TLS close_notify,
 * then TCP shutdown of the write side). Reading continues to work; later
 * writes fail with CSQL_ERR_CLOSED. Calling it again does nothing. Call it from
 * the writer thread (it is a write).
 */
CSQL_EXTERN int csql_conn_shutdown(csql_conn *c);

/*
 * Abort from any thread: a read, write or shutdown blocked on the connection
 * in another thread returns CSQL_ERR_CLOSED at once, and so does every later
 * one (the socket is shut down both ways; no close_notify is sent). The
 * connection must still be closed with csql_conn_close, once the other
 * threads are done with it. Calling it again does nothing. NULL is ignored.
 */
CSQL_EXTERN void csql_conn_abort(csql_conn *c);

/*
 * Bound each csql_conn_read / csql_conn_write call: one that waited this long
 * for the socket returns CSQL_ERR_TIMEOUT. After a read timeout the
 * connection stays usable (call again to go on waiting); a write timeout is
 * final (the record OpenSSL began to send cannot be taken back: later calls
 * fail, and the bytes not reported as written were not delivered). 0 (the
 * default) waits for ever; at most CSQL_CONN_TIMEOUT_MAX_MS. Any thread;
 * applies to calls that start after it.
 */
#define CSQL_CONN_TIMEOUT_MAX_MS 86400000u
CSQL_EXTERN int csql_conn_set_timeout(csql_conn *c, unsigned int timeout_ms);

/*
 * Close the connection and free it: a best-effort close_notify (never waits),
 * then the socket is closed. No other thread may be using the connection.
 * NULL is ignored.
 */
CSQL_EXTERN void csql_conn_close(csql_conn *c);

/*
 * The socket, for poll()/select() readiness. Blocking semantics of read/write
 * are kept by csql; do not read or write the fd directly. Note that TLS may
 * buffer decrypted bytes: call csql_conn_pending() before polling for input.
 */
CSQL_EXTERN int csql_conn_fd(const csql_conn *c);

/* Bytes already decrypted and readable without touching the socket. */
CSQL_EXTERN size_t csql_conn_pending(const csql_conn *c);

/* The OpenSSL connection, for advanced use (inspection). Borrowed; valid until close. */
CSQL_EXTERN struct ssl_st *csql_conn_ssl(csql_conn *c);

/* The instance connection name this connection was dialled to. */
CSQL_EXTERN const char *csql_conn_instance(const csql_conn *c);

#ifdef __cplusplus
}
#endif
#endif
