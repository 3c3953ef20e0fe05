/*
 * libcsql-mysql without blocking (include/csql/mysql.h, docs/async.md): a
 * csql_dial_async, then the one-shot endpoint and MariaDB Connector/C's
 * mysql_real_connect_start / _cont over it, behind one pollable handle.
 */
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "csql/async.h"
#include "csql/endpoint.h"
#include "csql/errors.h"
#include "csql/helper.h"
#include "csql/mysql.h"
#include "dial_phase.h"
#include "mysql_internal.h"

#define MY_USER_MAX 256
#define DEFAULT_DEADLINE_MS 30000 /* only if the dial never had to wait */

/*
 * MA_HANDOVER: the dial is done, its conn waits one call before it goes to
 * the endpoint: the caller watched the dial's socket and must be able to
 * take it out of its loop while it is still open (csql/async.h), so the
 * handle reports no fd and a zero timeout for one round.
 */
enum { MA_DIAL, MA_HANDOVER, MA_MY, MA_DONE };

struct csql_mysql_async {
    csql_dialer *d;
    MYSQL *m;
    char *instance;
    char *user;          /* may be NULL */
    char *password;      /* may be NULL; wiped on free */
    char *db;            /* may be NULL */
    unsigned long flags;
    csql_dial_options opts;
    bool has_opts;
    int state;
    csql__drv_dial dial; /* MA_DIAL, MA_HANDOVER */
    csql_endpoint *ep;
    char dbuser[MY_USER_MAX];
    int wait;            /* MYSQL_WAIT_* the driver asked for */
    int64_t driver_due_ms; /* when the driver's own timeout fires, if it asked for one */
};

static char *dup_or_null(const char *s, bool *failed)
{
    if (s == NULL) {
        return NULL;
    }
    char *c = strdup(s);
    if (c == NULL) {
        *failed = true;
    }
    return c;
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void csql_mysql_async_free(csql_mysql_async *a)
{
    if (a == NULL) {
        return;
    }
    csql__drv_dial_dispose(&a->dial);
    csql_endpoint_close(a->ep);
    free(a->instance);
    free(a->user);
    wipe_free(a->password);
    free(a->db);
    free(a);
}

int csql_mysql_connect_async_start(csql_dialer *d, MYSQL *m, const char *instance,
                                   const char *user, const char *password, const char *db,
                                   unsigned long client_flags, const csql_dial_options *opts,
                                   csql_mysql_async **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (d == NULL || m == NULL || instance == NULL || out == NULL) {
        return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                              "csql_mysql_connect_async_start: dialer, MYSQL handle, instance "
                              "and out are required");
    }
    csql_mysql_async *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return csql_error_set(CSQL_ERR_NOMEM, "csql_mysql_connect_async_start: out of memory");
    }
    bool failed = false;
    a->instance = dup_or_null(instance, &failed);
    a->user = dup_or_null(user, &failed);
    a->password = dup_or_null(password, &failed);
    a->db = dup_or_null(db, &failed);
    if (failed) {
        csql_mysql_async_free(a);
        return csql_error_set(CSQL_ERR_NOMEM, "csql_mysql_connect_async_start: out of memory");
    }
    int rc = csql_dial_async_start(d, instance, opts, NULL, NULL, &a->dial.h);
    if (rc != CSQL_OK) {
        csql_mysql_async_free(a);
        return rc;
    }
    a->d = d;
    a->m = m;
    a->flags = client_flags;
    if (opts != NULL) {
        a->opts = *opts;
        a->has_opts = true;
    }
    a->state = MA_DIAL;
    *out = a;
    return CSQL_OK;
}

/* The driver's answer to start/cont: WOULD_BLOCK with what it waits for, or the result. */
static int driver_status(csql_mysql_async *a, int status, MYSQL *ret)
{
    if (status != 0) {
        a->wait = status;
        a->driver_due_ms = 0;
        if (status & MYSQL_WAIT_TIMEOUT) {
            a->driver_due_ms = csql__drv_now_ms() + (int64_t)mysql_get_timeout_value_ms(a->m);
        }
        return CSQL_ERR_WOULD_BLOCK;
    }
    a->state = MA_DONE;
    /* Stop listening: the connection made carries on, forwarded by csql's loop. */
    csql_endpoint_close(a->ep);
    a->ep = NULL;
    if (ret == NULL) {
        unsigned int e = mysql_errno(a->m);
        return e != 0 ? (int)e : 2000; /* CR_UNKNOWN_ERROR */
    }
    return CSQL_OK;
}

static int dial_step(csql_mysql_async *a)
{
    int rc = csql__drv_dial_step(&a->dial, DEFAULT_DEADLINE_MS);
    if (rc == CSQL_OK) {
        a->state = MA_HANDOVER; /* one round with no fd: see dial_phase.h */
        return CSQL_ERR_WOULD_BLOCK;
    }
    return rc;
}

/* One call after the dial: the caller no longer watches its socket; the endpoint may take it. */
static int handover_step(csql_mysql_async *a)
{
    csql_conn *conn = csql__drv_dial_take(&a->dial);
    int rc;
    /* The certificate is cached now: the engine check reads it without waiting. */
    const csql_dial_options *opts = a->has_opts ? &a->opts : NULL;
    rc = csql_mysql__check(a->d, a->instance, opts, a->user, a->dbuser, sizeof(a->dbuser));
    if (rc != CSQL_OK) {
        csql_conn_close(conn);
        return rc;
    }
    csql_endpoint_options eo = CSQL_ENDPOINT_OPTIONS_INIT;
    eo.dial = opts;
    rc = csql_endpoint_open_conn(&a->ep, conn, a->d, &eo);
    if (rc != CSQL_OK) {
        return rc;
    }
    unsigned int proto = MYSQL_PROTOCOL_SOCKET;
    mysql_options(a->m, MYSQL_OPT_PROTOCOL, &proto);
    mysql_options(a->m, MYSQL_OPT_NONBLOCK, 0);
    a->state = MA_MY;
    MYSQL *ret = NULL;
    int status = mysql_real_connect_start(&ret, a->m, "localhost",
                                          a->dbuser[0] ? a->dbuser : a->user, a->password, a->db,
                                          0, csql_endpoint_path(a->ep), a->flags);
    return driver_status(a, status, ret);
}

static int my_step(csql_mysql_async *a)
{
    int64_t now = csql__drv_now_ms();
    if (now >= a->dial.deadline_ms) {
        return csql_error_set(CSQL_ERR_TIMEOUT,
                              "csql_mysql_async_continue: MySQL handshake with instance %s "
                              "timed out",
                              a->instance);
    }
    int ready = 0;
    int fd = mysql_get_socket(a->m);
    if (fd >= 0 && (a->wait & (MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_EXCEPT))) {
        struct pollfd p = {.fd = fd,
                           .events = (short)((a->wait & MYSQL_WAIT_READ ? POLLIN : 0) |
                                             (a->wait & MYSQL_WAIT_WRITE ? POLLOUT : 0) |
                                             (a->wait & MYSQL_WAIT_EXCEPT ? POLLPRI : 0))};
        if (poll(&p, 1, 0) == 1) {
            ready |= (p.revents & (POLLIN | POLLHUP | POLLERR) ? MYSQL_WAIT_READ : 0) |
                     (p.revents & (POLLOUT | POLLHUP | POLLERR) ? MYSQL_WAIT_WRITE : 0) |
                     (p.revents & POLLPRI ? MYSQL_WAIT_EXCEPT : 0);
            ready &= a->wait; /* a hang-up or error wakes whichever the driver waits for */
        }
    }
    if ((a->wait & MYSQL_WAIT_TIMEOUT) && a->driver_due_ms != 0 && now >= a->driver_due_ms) {
        ready |= MYSQL_WAIT_TIMEOUT;
    }
    if (ready == 0) {
        return CSQL_ERR_WOULD_BLOCK; /* a spurious call: nothing the driver waits for is here */
    }
    MYSQL *ret = NULL;
    int status = mysql_real_connect_cont(&ret, a->m, ready);
    return driver_status(a, status, ret);
}

int csql_mysql_async_continue(csql_mysql_async *a)
{
    if (a == NULL) {
        return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                              "csql_mysql_async_continue: handle is NULL");
    }
    if (a->state == MA_DONE) {
        return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                              "csql_mysql_async_continue: the connect to %s has already ended",
                              a->instance);
    }
    int rc = a->state == MA_DIAL        ? dial_step(a)
             : a->state == MA_HANDOVER ? handover_step(a)
                                       : my_step(a);
    if (rc != CSQL_ERR_WOULD_BLOCK) {
        a->state = MA_DONE;
        csql_endpoint_close(a->ep);
        a->ep = NULL;
    }
    return rc;
}

int csql_mysql_async_fd(const csql_mysql_async *a)
{
    if (a == NULL) {
        return -1;
    }
    if (a->state == MA_DIAL) {
        return csql_dial_async_fd(a->dial.h);
    }
    if (a->state != MA_MY || !(a->wait & (MYSQL_WAIT_READ | MYSQL_WAIT_WRITE | MYSQL_WAIT_EXCEPT))) {
        return -1;
    }
    return (int)mysql_get_socket(a->m);
}

int csql_mysql_async_events(const csql_mysql_async *a)
{
    if (a == NULL) {
        return 0;
    }
    if (a->state == MA_DIAL) {
        return csql_dial_async_events(a->dial.h);
    }
    if (a->state != MA_MY) {
        return 0;
    }
    return (a->wait & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT) ? CSQL_ASYNC_READ : 0) |
           (a->wait & MYSQL_WAIT_WRITE ? CSQL_ASYNC_WRITE : 0);
}

int csql_mysql_async_timeout_ms(const csql_mysql_async *a)
{
    if (a == NULL || a->state == MA_DONE || a->state == MA_HANDOVER) {
        return 0;
    }
    if (a->state == MA_DIAL) {
        return csql_dial_async_timeout_ms(a->dial.h);
    }
    int64_t due = a->dial.deadline_ms;
    if ((a->wait & MYSQL_WAIT_TIMEOUT) && a->driver_due_ms != 0 && a->driver_due_ms < due) {
        due = a->driver_due_ms;
    }
    int64_t left = due - csql__drv_now_ms();
    return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}
