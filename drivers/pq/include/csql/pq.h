/*
 * libcsql-pq: a libpq PGconn to a Cloud SQL for PostgreSQL instance through
 * csql. csql dials first (certificate, TLS 1.3, server identity), then libpq
 * connects over csql's in-process local endpoint: a Unix socket in a private
 * 0700 directory, forwarded over the TLS connection by the dialer's event loop.
 *
 * Two kinds of failure, two channels:
 *   - csql could not reach the instance, or the arguments are wrong: the
 *     functions return NULL and csql_error_last() says why (code, message,
 *     HTTP status), e.g. CSQL_ERR_NOT_FOUND for an unknown instance.
 *   - the database refused (wrong password, no such database): a PGconn in
 *     CONNECTION_BAD comes back, as from PQconnectdb, with the server's own
 *     message in PQerrorMessage(). PQfinish it.
 * PQfinish releases everything csql set up for the connection. PQcancel /
 * PQcancelConn and PQreset work: their new connections are dialled afresh.
 */
#ifndef CSQL_PQ_H
#define CSQL_PQ_H

#include <libpq-fe.h>

#include "csql/dialer.h"
#include "csql/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Connect to `instance` ("project:region:instance"). `conninfo` is a libpq
 * connection string (key=value or URI; NULL or "" for none) with everything
 * but the address: host, hostaddr, port, sslmode (and requiressl) are chosen
 * by csql (host=<private dir>, sslmode=disable: the link is already TLS 1.3)
 * and are refused with CSQL_ERR_INVALID_ARGUMENT naming the key.
 *
 * Automatic IAM database authentication: set opts->iam_authn = 1 (or enable
 * it on the dialer) and give the IAM principal as user= (e.g.
 * "sa@project.iam.gserviceaccount.com" or "alice@example.com"); it is turned
 * into the database user name (csql_iam_db_user: ".gserviceaccount.com" is
 * dropped). No password is needed. A user= containing '@' is always treated
 * as an IAM principal and formatted the same way, since that is the only
 * database user Cloud SQL makes for it.
 *
 * Blocks for the dial and the PostgreSQL startup. Returns NULL with
 * csql_error_last() set, or a PGconn (check PQstatus). opts may be NULL.
 */
CSQL_EXTERN PGconn *csql_pq_connect(csql_dialer *d, const char *instance, const char *conninfo,
                                    const csql_dial_options *opts);

/*
 * The non-blocking flavour of libpq's startup: csql dials (blocking, up to
 * the dial timeout), then PQconnectStartParams; drive the returned PGconn
 * with PQconnectPoll as usual. NULL with csql_error_last() set on failure.
 */
CSQL_EXTERN PGconn *csql_pq_connect_start(csql_dialer *d, const char *instance,
                                          const char *conninfo, const csql_dial_options *opts);

/*
 * ---- Without blocking at all (docs/async.md) ----
 * csql_pq_connect_start still blocks for csql's dial. These do not: the dial
 * runs as csql_dial_async, then PQconnectStartParams / PQconnectPoll, all
 * driven by your event loop through one handle with the contract of
 * csql/async.h (fd, events, timeout, continue; the fd changes from csql's
 * to libpq's socket on the way, with one round between that reports no fd
 * and a zero timeout, so that csql's socket is out of the caller's loop
 * before csql's event loop takes it over). One deadline covers both: opts->timeout_ms
 * or the dialer's dial timeout.
 */
typedef struct csql_pq_async csql_pq_async;

/*
 * Check conninfo (as csql_pq_connect: host, hostaddr, port and sslmode are
 * refused) and start the dial. Returns at once: 0 with *out, or a csql_err
 * (nothing to free).
 */
CSQL_EXTERN int csql_pq_connect_async_start(csql_dialer *d, const char *instance,
                                            const char *conninfo, const csql_dial_options *opts,
                                            csql_pq_async **out);

/*
 * Make progress: CSQL_ERR_WOULD_BLOCK (wait for fd/events/timeout, call
 * again); 0 with *out a PGconn, CONNECTION_OK, or CONNECTION_BAD when the
 * database refused (its message in PQerrorMessage; PQfinish it); or a
 * negative csql_err when csql could not reach the instance (csql_error_last()).
 * The PGconn's socket is the last fd reported. After the end, later calls
 * return CSQL_ERR_INVALID_ARGUMENT.
 */
CSQL_EXTERN int csql_pq_async_continue(csql_pq_async *a, PGconn **out);

/* The fd to watch (-1: none; call continue when the timeout expires). */
CSQL_EXTERN int csql_pq_async_fd(const csql_pq_async *a);
/* CSQL_ASYNC_READ and/or CSQL_ASYNC_WRITE (csql/async.h), or 0. */
CSQL_EXTERN int csql_pq_async_events(const csql_pq_async *a);
/* Milliseconds until continue must be called anyway (0: now). */
CSQL_EXTERN int csql_pq_async_timeout_ms(const csql_pq_async *a);

/* Cancel at any point and free everything (a PGconn not handed over is PQfinish'ed). NULL is ignored. */
CSQL_EXTERN void csql_pq_async_free(csql_pq_async *a);

#ifdef __cplusplus
}
#endif
#endif
