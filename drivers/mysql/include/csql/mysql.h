/*
 * libcsql-mysql: connect a MariaDB Connector/C (or libmysqlclient-compatible)
 * MYSQL handle to a Cloud SQL for MySQL instance through csql. csql dials
 * first (certificate, TLS 1.3, server identity), then the driver connects
 * over a one-shot Unix socket in a private 0700 directory that csql's event
 * loop forwards over the TLS connection.
 */
#ifndef CSQL_MYSQL_H
#define CSQL_MYSQL_H

#include <mysql.h>

#include "csql/dialer.h"
#include "csql/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * As mysql_real_connect(m, ...) to `instance` ("project:region:instance").
 * `m` comes from mysql_init (options may be set on it; the protocol is set to
 * the Unix socket). Returns:
 *    0   connected;
 *   < 0  a csql_err: csql could not reach the instance or the arguments are
 *        wrong (csql_error_last() has the message; the driver was not called);
 *   > 0  the database refused: the value is mysql_errno(m) (e.g. 1045 for a
 *        wrong password), and mysql_error(m) has the server's own message.
 * In every case the caller still owns m and frees it with mysql_close.
 *
 * Automatic IAM database authentication: opts->iam_authn = 1 (or the
 * dialer's default) and the IAM principal as `user`; it becomes the database
 * user (the part before '@'); password may be NULL. A user containing '@' is
 * always formatted that way. SQL Server instances are refused
 * (CSQL_ERR_IAM_UNSUPPORTED with IAM, else CSQL_ERR_UNSUPPORTED_INSTANCE),
 * as are PostgreSQL ones.
 *
 * The socket accepts only this connection: MYSQL_OPT_RECONNECT cannot
 * reconnect through it; call csql_mysql_connect again on a fresh handle.
 */
CSQL_EXTERN int csql_mysql_connect(csql_dialer *d, MYSQL *m, const char *instance,
                                   const char *user, const char *password, const char *db,
                                   unsigned long client_flags, const csql_dial_options *opts);

/*
 * ---- Without blocking (docs/async.md) ----
 * csql_mysql_connect blocks. These do not: csql_dial_async, then MariaDB
 * Connector/C's non-blocking mysql_real_connect_start / _cont over the
 * one-shot endpoint, driven by your event loop through one handle with the
 * contract of csql/async.h (fd, events, timeout, continue; the fd changes
 * from csql's socket to the driver's on the way, with one round between that
 * reports no fd and a zero timeout, so that csql's socket is out of the
 * caller's loop before csql's event loop takes it over). The dial is bounded by
 * opts->timeout_ms or the dialer's dial timeout; the MySQL handshake by the
 * driver's own timeouts (MYSQL_OPT_CONNECT_TIMEOUT...) and the same deadline.
 */
typedef struct csql_mysql_async csql_mysql_async;

/*
 * Start connecting m (from mysql_init; MYSQL_OPT_NONBLOCK and the Unix
 * socket protocol are set on it here) to `instance`. user, password and db
 * are copied. Returns at once: 0 with *out, or a csql_err. m stays yours in
 * every case; while a connect is in progress use it for nothing else.
 */
CSQL_EXTERN int csql_mysql_connect_async_start(csql_dialer *d, MYSQL *m, const char *instance,
                                               const char *user, const char *password,
                                               const char *db, unsigned long client_flags,
                                               const csql_dial_options *opts,
                                               csql_mysql_async **out);

/*
 * Make progress: CSQL_ERR_WOULD_BLOCK (wait, call again); then the result of
 * csql_mysql_connect: 0 connected, > 0 the database refused (mysql_errno(m)),
 * < 0 a csql_err. After the end, later calls return CSQL_ERR_INVALID_ARGUMENT.
 */
CSQL_EXTERN int csql_mysql_async_continue(csql_mysql_async *a);

/* The fd to watch (-1: none; call continue when the timeout expires). */
CSQL_EXTERN int csql_mysql_async_fd(const csql_mysql_async *a);
/* CSQL_ASYNC_READ and/or CSQL_ASYNC_WRITE (csql/async.h), or 0. */
CSQL_EXTERN int csql_mysql_async_events(const csql_mysql_async *a);
/* Milliseconds until continue must be called anyway (0: now). */
CSQL_EXTERN int csql_mysql_async_timeout_ms(const csql_mysql_async *a);

/*
 * Free the handle (wiping the password copy). Cancelling mid-connect leaves
 * m good only for mysql_close. NULL is ignored.
 */
CSQL_EXTERN void csql_mysql_async_free(csql_mysql_async *a);

#ifdef __cplusplus
}
#endif
#endif
