/* Internal: making a csql_conn, and how a conn reports TLS failures back to the cache. */
#ifndef CSQL_SRC_CONN_INTERNAL_H
#define CSQL_SRC_CONN_INTERNAL_H

#include <openssl/ssl.h>

#include "csql/conn.h"

/* Called once, on the first TLS read/write error of a conn (from the reader or writer thread). */
typedef void (*csql__conn_tls_error_fn)(void *userdata);

/* Releases the conn's reference on userdata when the conn is closed. */
typedef void (*csql__conn_release_fn)(void *userdata);

/*
 * Wrap an established fd + SSL (ownership passes to the conn, also on
 * failure). on_tls_error (may be NULL) lets the dialer drop the cache entry;
 * the conn holds `userdata` until close, then calls release(userdata) (may be
 * NULL). On failure, too, fd and SSL are freed and release(userdata) is
 * called, so the caller has nothing left to clean up. Copies instance. The
 * fd is made non-blocking. One reader thread and one writer thread may use the
 * conn at once: the SSL is used under a lock and waits (poll) happen outside it.
 */
int csql__conn_new(int fd, SSL *ssl, const char *instance, csql__conn_tls_error_fn on_tls_error,
                   csql__conn_release_fn release, void *userdata, csql_conn **out);

/*
 * For code that drives the conn's SSL itself (the local endpoint's event
 * loop): report a TLS-level failure so the cache drops its entry, exactly as
 * csql_conn_read/write would. Fires on_tls_error at most once per conn.
 */
void csql__conn_report_tls_error(csql_conn *c);

#endif
