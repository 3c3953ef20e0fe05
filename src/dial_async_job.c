/* Blocking pieces of a non-blocking dial, run on the dialer's loop workers (dial_async_job.h). */
#include "dial_async_job.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dial_socket.h"
#include "error.h"
#include "loop.h"
#include "util/clock.h"

/* Wake whoever watches the eventfd behind fd (its counter is never read here). */
static void signal_fd(int fd)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(fd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
    /* EAGAIN: the counter is already huge, the reader is awake anyway. */
}

/* ---- resolving ---- */

struct csql__resolve_job {
    csql__loop_job job;
    csql__loop *loop;
    atomic_int refs;             /* the dial's and the job's */
    int notify_fd;               /* our own dup of the dial's eventfd */
    char *host;
    uint16_t port;
    char where[CSQL__DIAL_WHERE_MAX];
    /* written by the worker (or the stopper) before `finished` is set */
    int rc;
    struct addrinfo *res;
    csql__saved_error err;
    atomic_bool finished;
};

static void resolve_job_unref(csql__resolve_job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) != 1) {
        return;
    }
    if (j->res != NULL) {
        freeaddrinfo(j->res);
    }
    csql__saved_error_dispose(&j->err);
    if (j->notify_fd >= 0) {
        close(j->notify_fd);
    }
    free(j->host);
    free(j);
}

static void resolve_finish(csql__resolve_job *j, int rc)
{
    j->rc = rc;
    if (rc != CSQL_OK && csql__error_save(&j->err) != 0) {
        j->err.code = rc;
    }
    atomic_store(&j->finished, true);
    signal_fd(j->notify_fd);
}

static void resolve_work(void *arg)
{
    csql__resolve_job *j = arg;
    struct addrinfo *res = NULL;
    int rc = csql__dial_resolve(j->host, j->port, j->where, &res);
    j->res = res;
    resolve_finish(j, rc);
}

/* On the loop thread, or on the stopper's thread when the loop stopped first. */
static void resolve_done(void *arg, int status)
{
    csql__resolve_job *j = arg;
    (void)status;
    if (!j->job.ran) {
        resolve_finish(j, csql__error(CSQL_ERR_CLOSED, "resolving %s: the dialer was closed",
                                      j->where));
    }
    csql__loop *loop = j->loop;
    resolve_job_unref(j);
    csql__loop_release(loop);
}

int csql__resolve_job_start(const void *loop_key, const char *host, uint16_t port,
                            const char *where, int notify_fd, csql__resolve_job **out)
{
    *out = NULL;
    csql__resolve_job *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->host = strdup(host)) == NULL) {
        free(j);
        return csql__error(CSQL_ERR_NOMEM, "out of memory resolving %s", where);
    }
    j->notify_fd = fcntl(notify_fd, F_DUPFD_CLOEXEC, 0);
    if (j->notify_fd < 0) {
        int e = errno;
        free(j->host);
        free(j);
        return csql__error(e == EMFILE || e == ENFILE ? CSQL_ERR_IO : CSQL_ERR_INTERNAL,
                           "resolving %s: could not duplicate the notification fd: %s", where,
                           strerror(e));
    }
    j->port = port;
    snprintf(j->where, sizeof(j->where), "%s", where);
    atomic_init(&j->refs, 2);
    atomic_init(&j->finished, false);
    j->job.work = resolve_work;
    j->job.done = resolve_done;
    j->job.arg = j;
    int rc = csql__loop_acquire(loop_key, &j->loop);
    if (rc == CSQL_OK) {
        rc = csql__loop_submit(j->loop, &j->job);
        if (rc != CSQL_OK) {
            csql__loop_release(j->loop);
        }
    }
    if (rc != CSQL_OK) {
        atomic_store(&j->refs, 1);
        resolve_job_unref(j);
        return rc;
    }
    *out = j;
    return CSQL_OK;
}

bool csql__resolve_job_finished(csql__resolve_job *j)
{
    return atomic_load(&j->finished);
}

int csql__resolve_job_result(csql__resolve_job *j, struct addrinfo **res)
{
    *res = NULL;
    if (!atomic_load(&j->finished)) {
        return CSQL_ERR_WOULD_BLOCK;
    }
    if (j->rc != CSQL_OK) {
        return csql__error_restore(&j->err);
    }
    *res = j->res;
    j->res = NULL;
    return CSQL_OK;
}

void csql__resolve_job_release(csql__resolve_job *j)
{
    if (j != NULL) {
        resolve_job_unref(j);
    }
}

/* ---- LAZY refreshes ---- */

typedef struct lazy_job {
    csql__loop_job job;
    csql__loop *loop;
    csql__cache_entry *e;        /* one reference */
    uint32_t timeout_ms;
} lazy_job;

static void lazy_work(void *arg)
{
    lazy_job *j = arg;
    csql__cache_lazy_refresh(j->e, csql__mono_ms() + j->timeout_ms);
}

static void lazy_done(void *arg, int status)
{
    (void)status;
    lazy_job *j = arg;
    if (!j->job.ran) {
        csql__cache_lazy_abandon(j->e);
    }
    csql__loop *loop = j->loop;
    csql__cache_entry_unref(j->e);
    free(j);
    csql__loop_release(loop);
}

int csql__lazy_refresh_job_start(const void *loop_key, csql__cache_entry *e,
                                 uint32_t timeout_ms)
{
    lazy_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        csql__cache_lazy_abandon(e);
        return csql__error(CSQL_ERR_NOMEM, "out of memory starting a certificate refresh");
    }
    j->e = csql__cache_entry_ref(e);
    j->timeout_ms = timeout_ms;
    j->job.work = lazy_work;
    j->job.done = lazy_done;
    j->job.arg = j;
    int rc = csql__loop_acquire(loop_key, &j->loop);
    if (rc == CSQL_OK) {
        rc = csql__loop_submit(j->loop, &j->job);
        if (rc != CSQL_OK) {
            csql__loop_release(j->loop);
        }
    }
    if (rc != CSQL_OK) {
        csql__cache_lazy_abandon(e);
        csql__cache_entry_unref(j->e);
        free(j);
    }
    return rc;
}
