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

#ifdef __cplusplus
}
#endif
#endif
