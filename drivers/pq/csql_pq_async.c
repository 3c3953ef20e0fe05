/*
 * libcsql-pq without blocking (include/csql/pq.h, docs/async.md): a
 * csql_dial_async, then the one-shot endpoint and PQconnectStartParams over
 * the dialled connection, then PQconnectPoll, behind one pollable handle.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "csql/async.h"
#include "csql/errors.h"
#include "csql/helper.h"
#include "csql/pq.h"
#include "dial_phase.h"
#include "pq_internal.h"

#define DEFAULT_DEADLINE_MS 30000 /* only if the dial never had to wait */

/*
 * PA_HANDOVER: the dial is done, its conn waits one call before libpq's
 * endpoint takes it: the caller watched the dial's socket and must be able to
 * take it out of its loop while it is still open (csql/async.h), so the
 * handle reports no fd and a zero timeout for one round.
 */
enum { PA_DIAL, PA_HANDOVER, PA_PQ, PA_DONE, PA_FAILED };

struct csql_pq_async {
    csql_dialer *d;
    char *instance;
    char *conninfo;
    csql_dial_options opts;
    bool has_opts;
    int state;
    csql__drv_dial dial; /* PA_DIAL, PA_HANDOVER */
    PGconn *pg;
    PostgresPollingStatusType last;  /* what PQconnectPoll asked for */
};

int csql_pq_connect_async_start(csql_dialer *d, const char *instance, const char *conninfo,
                                const csql_dial_options *opts, csql_pq_async **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (d == NULL || instance == NULL || out == NULL) {
        return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                              "csql_pq_connect_async_start: dialer, instance and out are "
                              "required");
    }
    int rc = csql_pq__check_conninfo(conninfo);
    if (rc != CSQL_OK) {
        return rc;
    }
    csql_pq_async *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->instance = strdup(instance)) == NULL ||
        (a->conninfo = strdup(conninfo ? conninfo : "")) == NULL) {
        if (a != NULL) {
            free(a->instance);
        }
        free(a);
        return csql_error_set(CSQL_ERR_NOMEM, "csql_pq_connect_async_start: out of memory");
    }
    rc = csql_dial_async_start(d, instance, opts, NULL, NULL, &a->dial.h);
    if (rc != CSQL_OK) {
        free(a->conninfo);
        free(a->instance);
        free(a);
        return rc;
    }
    a->d = d;
    if (opts != NULL) {
        a->opts = *opts;
        a->has_opts = true;
    }
    a->state = PA_DIAL;
    *out = a;
    return CSQL_OK;
}

/* Whether libpq's socket is ready for what PQconnectPoll last asked (so a spurious call waits). */
static bool pq_ready(const csql_pq_async *a)
{
    struct pollfd p = {.fd = PQsocket(a->pg),
                       .events = a->last == PGRES_POLLING_READING ? POLLIN : POLLOUT};
    int r;
    do {
        r = poll(&p, 1, 0);
    } while (r < 0 && errno == EINTR);
    return r != 0;
}

static int dial_step(csql_pq_async *a)
{
    int rc = csql__drv_dial_step(&a->dial, DEFAULT_DEADLINE_MS);
    if (rc == CSQL_OK) {
        a->state = PA_HANDOVER; /* one round with no fd: see dial_phase.h */
        return CSQL_ERR_WOULD_BLOCK;
    }
    return rc;
}

/* One call after the dial: the caller no longer watches its socket; libpq's endpoint may take it. */
static int handover_step(csql_pq_async *a)
{
    csql_conn *conn = csql__drv_dial_take(&a->dial);
    /* The certificate is cached now: the engine check reads it without waiting. */
    a->pg = csql_pq__start_over_conn(a->d, a->instance, a->conninfo,
                                     a->has_opts ? &a->opts : NULL, conn);
    if (a->pg == NULL) {
        return csql_error_last()->code != 0 ? csql_error_last()->code : CSQL_ERR_INTERNAL;
    }
    /* libpq: behave as if PQconnectPoll had just asked to write. */
    a->last = PGRES_POLLING_WRITING;
    a->state = PA_PQ;
    return CSQL_ERR_WOULD_BLOCK;
}

static int pq_step(csql_pq_async *a)
{
    if (csql__drv_now_ms() >= a->dial.deadline_ms) {
        return csql_error_set(CSQL_ERR_TIMEOUT,
                              "csql_pq_async_continue: PostgreSQL startup with instance %s "
                              "timed out",
                              a->instance);
    }
    if (PQsocket(a->pg) < 0 || !pq_ready(a)) {
        return CSQL_ERR_WOULD_BLOCK;
    }
    a->last = PQconnectPoll(a->pg);
    if (a->last == PGRES_POLLING_READING || a->last == PGRES_POLLING_WRITING) {
        return CSQL_ERR_WOULD_BLOCK;
    }
    /* OK, or FAILED: the database's own answer, in the PGconn (CONNECTION_BAD). */
    a->state = PA_DONE;
    return CSQL_OK;
}

int csql_pq_async_continue(csql_pq_async *a, PGconn **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (a == NULL || out == NULL) {
        return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                              "csql_pq_async_continue: handle and out are required");
    }
    if (a->state == PA_DONE || a->state == PA_FAILED) {
        return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                              "csql_pq_async_continue: the connect to %s has already ended",
                              a->instance);
    }
    int rc = a->state == PA_DIAL        ? dial_step(a)
             : a->state == PA_HANDOVER ? handover_step(a)
                                       : pq_step(a);
    if (rc == CSQL_ERR_WOULD_BLOCK && a->state == PA_PQ && a->pg != NULL &&
        a->last == PGRES_POLLING_WRITING && pq_ready(a)) {
        rc = pq_step(a); /* the endpoint's socket is usually writable at once */
    }
    if (rc == CSQL_ERR_WOULD_BLOCK) {
        return rc;
    }
    if (rc != CSQL_OK) {
        /* a->pg (and its socket, the fd last reported) is finished by free, not now. */
        a->state = PA_FAILED;
        return rc;
    }
    *out = a->pg;
    a->pg = NULL;
    return CSQL_OK;
}

int csql_pq_async_fd(const csql_pq_async *a)
{
    if (a == NULL) {
        return -1;
    }
    if (a->state == PA_DIAL) {
        return csql_dial_async_fd(a->dial.h);
    }
    return a->state == PA_PQ ? PQsocket(a->pg) : -1;
}

int csql_pq_async_events(const csql_pq_async *a)
{
    if (a == NULL) {
        return 0;
    }
    if (a->state == PA_DIAL) {
        return csql_dial_async_events(a->dial.h);
    }
    if (a->state != PA_PQ) {
        return 0;
    }
    return a->last == PGRES_POLLING_READING ? CSQL_ASYNC_READ : CSQL_ASYNC_WRITE;
}

int csql_pq_async_timeout_ms(const csql_pq_async *a)
{
    if (a == NULL || a->state == PA_DONE || a->state == PA_FAILED || a->state == PA_HANDOVER) {
        return 0;
    }
    if (a->state == PA_DIAL) {
        return csql_dial_async_timeout_ms(a->dial.h);
    }
    int64_t left = a->dial.deadline_ms - csql__drv_now_ms();
    return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

void csql_pq_async_free(csql_pq_async *a)
{
    if (a == NULL) {
        return;
    }
    csql__drv_dial_dispose(&a->dial);
    if (a->pg != NULL) {
        PQfinish(a->pg);
    }
    explicit_bzero(a->conninfo, strlen(a->conninfo)); /* it may hold a password */
    free(a->conninfo);
    free(a->instance);
    free(a);
}
