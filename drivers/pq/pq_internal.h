/* Internal to libcsql-pq: what csql_pq_async.c borrows from csql_pq.c. */
#ifndef CSQL_DRIVERS_PQ_INTERNAL_H
#define CSQL_DRIVERS_PQ_INTERNAL_H

#include <libpq-fe.h>

#include "csql/conn.h"
#include "csql/dialer.h"

/*
 * csql_pq_connect_start over a connection already dialled (ownership of conn
 * passes, also on failure): engine and user checks, the one-shot endpoint,
 * PQconnectStartParams. NULL with csql_error_last() set.
 */
PGconn *csql_pq__start_over_conn(csql_dialer *d, const char *instance, const char *conninfo,
                                 const csql_dial_options *opts, csql_conn *conn);

/* Parse conninfo and refuse the keys csql sets: 0 or CSQL_ERR_INVALID_ARGUMENT. */
int csql_pq__check_conninfo(const char *conninfo);

#endif
