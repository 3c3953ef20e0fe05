/* The csql phase shared by the non-blocking driver helpers (dial_phase.h). */
#include "dial_phase.h"

#include <stddef.h>
#include <time.h>

int64_t csql__drv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int csql__drv_dial_step(csql__drv_dial *d, int64_t default_ms)
{
    csql_conn *conn = NULL;
    int rc = csql_dial_async_continue(d->h, &conn);
    if (rc == CSQL_ERR_WOULD_BLOCK) {
        if (d->deadline_ms == 0) {
            d->deadline_ms = csql__drv_now_ms() + csql_dial_async_timeout_ms(d->h);
        }
        return rc;
    }
    /* The handle (and the fds it reported) lives on: the caller may still have its last fd in
       its loop. On failure until free; on success until csql__drv_dial_take. */
    if (rc != CSQL_OK) {
        return rc;
    }
    if (d->deadline_ms == 0) {
        d->deadline_ms = csql__drv_now_ms() + default_ms;
    }
    d->conn = conn;
    return CSQL_OK;
}

csql_conn *csql__drv_dial_take(csql__drv_dial *d)
{
    csql_conn *conn = d->conn;
    d->conn = NULL;
    csql_dial_async_free(d->h); /* the caller has taken its fds out of its loop by now */
    d->h = NULL;
    return conn;
}

void csql__drv_dial_dispose(csql__drv_dial *d)
{
    csql_dial_async_free(d->h);
    d->h = NULL;
    csql_conn_close(d->conn);
    d->conn = NULL;
}
