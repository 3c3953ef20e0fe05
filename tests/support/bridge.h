/*
 * Test support: a byte bridge between a Unix socket and csql connections, so
 * that unmodified drivers (libpq with host=<dir>, libmariadb with
 * unix_socket=<path>) run real sessions through csql. The socket lives in a
 * fresh 0700 directory under /tmp. Every accepted connection gets its own
 * csql_conn from the dial callback and two threads, one per direction;
 * end-of-stream is passed on as a half-close each way (csql_conn_shutdown /
 * shutdown(SHUT_WR)), and the pair is torn down when both directions are done.
 */
#ifndef CSQL_TEST_BRIDGE_H
#define CSQL_TEST_BRIDGE_H

#include "csql/csql.h"

typedef struct csqlt_bridge csqlt_bridge;

/* Make a connection for one accepted client: 0 and *out, or a csql error code. */
typedef int (*csqlt_bridge_dial_fn)(void *arg, csql_conn **out);

/*
 * Listen on "<fresh dir>/<sock_name>" (e.g. ".s.PGSQL.5432" for libpq).
 * 0 on success, -1 on failure (message on stderr).
 */
int csqlt_bridge_start(csqlt_bridge **out, const char *sock_name, csqlt_bridge_dial_fn dial,
                       void *arg);

/* The directory (libpq's host=) and the full socket path (libmariadb's unix_socket). */
const char *csqlt_bridge_dir(const csqlt_bridge *b);
const char *csqlt_bridge_path(const csqlt_bridge *b);

/* Connections accepted, and those whose dial failed (with the last failure's code). */
int csqlt_bridge_accepted(csqlt_bridge *b);
int csqlt_bridge_dial_failures(csqlt_bridge *b, int *last_code);

/* Stop accepting, cut open connections, join every thread, remove the directory. NULL ok. */
void csqlt_bridge_stop(csqlt_bridge *b);

#endif
