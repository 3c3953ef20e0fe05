/*
 * Internal to the driver helpers: the csql phase of csql_pq_async and
 * csql_mysql_async (compiled into each library). csql_dial_async runs until
 * the TLS connection is up; then the helper reports no fd and a zero timeout
 * for one round, so that the caller takes csql's socket out of its loop while
 * it is still open (csql/async.h), and only then takes the connection to hand
 * it to an endpoint. The dial handle, and the fds it reported, live until
 * that round or free.
 */
#ifndef CSQL_DRIVERS_DIAL_PHASE_H
#define CSQL_DRIVERS_DIAL_PHASE_H

#include <stdint.h>

#include "csql/async.h"
#include "csql/conn.h"
#include "csql/errors.h"

typedef struct csql__drv_dial {
    csql_dial_async *h; /* from csql_dial_async_start until the hand-over round */
    csql_conn *conn;    /* dialled, not taken yet */
    int64_t
        deadline_ms; /* monotonic: the dial's own deadline, or default_ms after it; 0 until known */
} csql__drv_dial;

/* Monotonic milliseconds. */
int64_t csql__drv_now_ms(void);

/*
 * Continue the dial: CSQL_ERR_WOULD_BLOCK while it runs (wait for h's fd,
 * events and timeout); CSQL_OK once the connection is up (the caller then
 * spends one round with no fd before csql__drv_dial_take); else the dial's
 * error. Sets deadline_ms on the way (default_ms from now if the dial never
 * had to wait).
 */
int csql__drv_dial_step(csql__drv_dial *d, int64_t default_ms);

/* The hand-over round: frees the dial handle and returns the connection, now the caller's. */
csql_conn *csql__drv_dial_take(csql__drv_dial *d);

/* Free what is left (the helper's free). */
void csql__drv_dial_dispose(csql__drv_dial *d);

#endif
