/*
 * One accepted connection of an endpoint: its hand-over from the endpoint's
 * loop to the least loaded of the dialer's loops, its dial there (a
 * non-blocking csql_dial_async the loop drives, or an injected blocking dial
 * on a loop worker), its forwarding (fwd.c) on that same loop, and the
 * events the application sees: ACCEPTED (on the endpoint's loop), then
 * DIALLED and CLOSED, or DIAL_FAILED (on the connection's loop).
 */
#include "endpoint_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

struct csql__ep_conn {
    csql_endpoint *ep;
    csql__loop *loop; /* the loop forwarding it */
    csql__fwd *fwd;
    csql__ep_peer peer;
    struct csql__ep_conn *prev, *next;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void csql__ep_remote_dispose(csql__fwd_remote *r)
{
    if (r->conn != NULL) {
        csql_conn_close(r->conn);
    } else {
        if (r->ssl != NULL) {
            SSL_free(r->ssl);
        }
        if (r->fd >= 0) {
            close(r->fd);
        }
    }
    r->conn = NULL;
    r->ssl = NULL;
    r->fd = -1;
}

void csql__ep_abortive_close(int fd, bool tcp)
{
    if (fd < 0) {
        return;
    }
    if (tcp) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(fd);
}

/* ------------------------------------------------------------------ */
/* events                                                              */

static int emit(csql_endpoint *ep, csql_endpoint_event_kind kind, const csql__ep_peer *peer,
                uint64_t up, uint64_t down, const csql_error *err)
{
    if (ep->on_event == NULL) {
        return 0;
    }
    csql_endpoint_event ev = {
        .kind = kind,
        .id = peer->id,
        .peer = peer->addr,
        .bytes_up = up,
        .bytes_down = down,
        .error = err,
    };
    if (kind == CSQL_ENDPOINT_DIALLED || kind == CSQL_ENDPOINT_DIAL_FAILED) {
        ev.dial_us = peer->accepted_us ? (uint64_t)(now_us() - peer->accepted_us) : 0;
    }
    return ep->on_event(&ev, ep->userdata);
}

int csql__ep_accepted(csql_endpoint *ep, const csql__ep_peer *peer)
{
    return emit(ep, CSQL_ENDPOINT_ACCEPTED, peer, 0, 0, NULL);
}

/* A dial failed with the error raised on this thread: tell the application, close the client. */
static void dial_failed(csql_endpoint *ep, int fd, const csql__ep_peer *peer)
{
    atomic_fetch_add(&ep->dial_failures, 1);
    csql__ep_abortive_close(fd, ep->tcp);
    const csql_error *err = csql_error_last();
    emit(ep, CSQL_ENDPOINT_DIAL_FAILED, peer, 0, 0, err);
    if (ep->on_error != NULL) {
        ep->on_error(err, ep->userdata);
    }
}

/* ------------------------------------------------------------------ */
/* forwarding                                                          */

/* A forwarded connection counted and listed (undone by conn_unlist). */
static void conn_list(csql_endpoint *ep, csql__ep_conn *c)
{
    csql__ep_ref(ep);
    atomic_fetch_add(&ep->active, 1);
    csql__loop_load_add(c->loop, 1);
    pthread_mutex_lock(&ep->conns_mu);
    c->next = ep->conns;
    if (ep->conns != NULL) {
        ep->conns->prev = c;
    }
    ep->conns = c;
    pthread_mutex_unlock(&ep->conns_mu);
}

/* Off the list and uncounted; the caller then frees c, calls slot_freed and drops the ref. */
static void conn_unlist(csql_endpoint *ep, csql__ep_conn *c)
{
    pthread_mutex_lock(&ep->conns_mu);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        ep->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    pthread_mutex_unlock(&ep->conns_mu);
    atomic_fetch_sub(&ep->active, 1);
    csql__loop_load_add(c->loop, -1);
}

static void note_max_buffered(csql_endpoint *ep, size_t hw)
{
    size_t cur = atomic_load(&ep->max_buffered);
    while (hw > cur && !atomic_compare_exchange_weak(&ep->max_buffered, &cur, hw)) {
    }
}

static void on_conn_closed(void *arg, const csql__fwd_stats *fs)
{
    csql__ep_conn *c = arg;
    csql_endpoint *ep = c->ep;
    if (fs->error == 0) {
        atomic_fetch_add(&ep->closed_clean, 1);
    } else {
        atomic_fetch_add(&ep->closed_error, 1);
    }
    note_max_buffered(ep, fs->up_max_buffered > fs->down_max_buffered ? fs->up_max_buffered
                                                                      : fs->down_max_buffered);
    csql_error err = {
        .code = fs->error,
        .category = csql_err_category_of(fs->error),
        .message = fs->message,
        .http_status = 0,
        .api_reason = "",
    };
    emit(ep, CSQL_ENDPOINT_CLOSED, &c->peer, fs->up_bytes, fs->down_bytes,
         fs->error != 0 ? &err : NULL);
    conn_unlist(ep, c);
    free(c);
    csql__ep_slot_freed(ep);
    csql__ep_unref(ep);
}

void csql__ep_forward(csql_endpoint *ep, csql__loop *loop, int fd, const csql__ep_peer *peer,
                      const csql__fwd_remote *remote)
{
    emit(ep, CSQL_ENDPOINT_DIALLED, peer, 0, 0, NULL);
    csql__ep_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        csql__ep_abortive_close(fd, ep->tcp);
        csql__fwd_remote r = *remote;
        csql__ep_remote_dispose(&r);
        atomic_fetch_add(&ep->closed_error, 1);
        csql__error(CSQL_ERR_NOMEM, "out of memory forwarding a connection");
        emit(ep, CSQL_ENDPOINT_CLOSED, peer, 0, 0, csql_error_last());
        return;
    }
    c->ep = ep;
    c->loop = loop;
    c->peer = *peer;
    csql__fwd_opts fo = {
        .buffer_size = ep->buffer_size,
        .local_is_tcp = ep->tcp,
        .on_close = on_conn_closed,
        .arg = c,
    };
    /* Counted before the start: the forwarding may end (and be uncounted) on this loop only. */
    conn_list(ep, c);
    if (csql__fwd_start(loop, fd, remote, &fo, &c->fwd) != CSQL_OK) {
        conn_unlist(ep, c);
        atomic_fetch_add(&ep->closed_error, 1);
        emit(ep, CSQL_ENDPOINT_CLOSED, peer, 0, 0, csql_error_last());
        free(c);
        csql__ep_slot_freed(ep);
        csql__ep_unref(ep);
    }
}

size_t csql__ep_conns_max_buffered(csql_endpoint *ep, const csql__loop *loop)
{
    size_t best = 0;
    pthread_mutex_lock(&ep->conns_mu);
    for (const csql__ep_conn *c = ep->conns; c != NULL; c = c->next) {
        if (c->loop != loop || c->fwd == NULL) {
            continue;
        }
        csql__fwd_stats fs;
        csql__fwd_get_stats(c->fwd, &fs);
        size_t hw = fs.up_max_buffered > fs.down_max_buffered ? fs.up_max_buffered
                                                               : fs.down_max_buffered;
        if (hw > best) {
            best = hw;
        }
    }
    pthread_mutex_unlock(&ep->conns_mu);
    return best;
}

/* ------------------------------------------------------------------ */
/* non-blocking dials, driven by the loop (no worker thread)          */

typedef struct ep_adial {
    csql_endpoint *ep;
    csql__loop *loop; /* the loop driving the dial, and forwarding after it */
    int lfd; /* the accepted connection waiting for its dial */
    csql__ep_peer peer;
    csql_dial_async *h;
    csql__loop_io io; /* the dial's current fd, registered (fd -1: none) */
    csql__loop_timer timer;
    csql__loop_member member;
    csql__loop_task free_task;
} ep_adial;

static void adial_free(void *arg)
{
    ep_adial *a = arg;
    csql_endpoint *ep = a->ep;
    free(a);
    csql__ep_unref(ep);
}

/* Take the dial out of the loop, free it after this batch (its io may have events pending). */
static void adial_end(ep_adial *a)
{
    csql_endpoint *ep = a->ep;
    if (a->io.fd >= 0) {
        csql__loop_io_del(a->loop, &a->io);
    }
    csql__loop_timer_cancel(a->loop, &a->timer);
    csql__loop_member_remove(a->loop, &a->member);
    csql_dial_async_free(a->h); /* closes the fds it reported: already out of the loop */
    a->h = NULL;
    atomic_fetch_sub(&ep->dials, 1);
    csql__loop_load_add(a->loop, -1);
    csql__ep_slot_freed(ep);
    a->free_task.fn = adial_free;
    a->free_task.arg = a;
    csql__loop_later(a->loop, &a->free_task);
}

static void adial_step(ep_adial *a)
{
    csql_endpoint *ep = a->ep;
    csql_conn *conn = NULL;
    int rc = csql_dial_async_continue(a->h, &conn);
    if (rc == CSQL_ERR_WOULD_BLOCK) {
        int fd = csql_dial_async_fd(a->h);
        int want = csql_dial_async_events(a->h);
        uint32_t ev = ((want & CSQL_ASYNC_READ) ? EPOLLIN : 0) |
                      ((want & CSQL_ASYNC_WRITE) ? EPOLLOUT : 0);
        /* The fd reported before this call is still open: take it out before it goes. */
        if (a->io.fd >= 0 && a->io.fd != fd) {
            csql__loop_io_del(a->loop, &a->io);
        }
        if (fd >= 0 && a->io.fd != fd) {
            a->io.fd = fd;
            if (csql__loop_io_add(a->loop, &a->io, ev) != CSQL_OK) {
                a->io.fd = -1; /* rely on the timer */
            }
        } else if (fd >= 0) {
            csql__loop_io_set(a->loop, &a->io, ev);
        }
        int tmo = csql_dial_async_timeout_ms(a->h);
        csql__loop_timer_set(a->loop, &a->timer, tmo < 0 ? 1000 : tmo);
        return;
    }
    int lfd = a->lfd;
    a->lfd = -1;
    if (a->io.fd >= 0) {
        /* The conn's socket was the dial's last fd: the forwarding registers it anew. */
        csql__loop_io_del(a->loop, &a->io);
    }
    if (rc == CSQL_OK) {
        csql__fwd_remote r = {
            .fd = csql_conn_fd(conn),
            .ssl = csql_conn_ssl(conn),
            .conn = conn,
        };
        csql__ep_forward(ep, a->loop, lfd, &a->peer, &r);
    } else {
        dial_failed(ep, lfd, &a->peer);
    }
    adial_end(a);
}

static void adial_on_io(void *arg, uint32_t events)
{
    (void)events;
    adial_step(arg);
}

static void adial_on_timer(void *arg)
{
    adial_step(arg);
}

/* The loop stops under a dial in progress (the dialer is being freed): cancel it. */
static void adial_member_close(void *arg)
{
    ep_adial *a = arg;
    int lfd = a->lfd;
    a->lfd = -1;
    csql__error(CSQL_ERR_CLOSED, "the dialer was freed before the dial finished");
    dial_failed(a->ep, lfd, &a->peer);
    adial_end(a);
}

static void dial_async(csql_endpoint *ep, csql__loop *loop, int fd, const csql__ep_peer *peer)
{
    ep_adial *a = calloc(1, sizeof(*a));
    csql_dial_async *h = NULL;
    int rc = a == NULL ? csql__error(CSQL_ERR_NOMEM, "out of memory dialling for an endpoint")
                       : ep->dial_async(ep->dial_ctx, &h);
    if (rc != CSQL_OK) {
        free(a);
        dial_failed(ep, fd, peer);
        return;
    }
    a->ep = ep;
    a->loop = loop;
    a->lfd = fd;
    a->peer = *peer;
    a->h = h;
    a->io = (csql__loop_io){.fd = -1, .fn = adial_on_io, .arg = a};
    a->timer.fn = adial_on_timer;
    a->timer.arg = a;
    a->member.close = adial_member_close;
    a->member.arg = a;
    csql__ep_ref(ep);
    atomic_fetch_add(&ep->dials, 1);
    csql__loop_load_add(loop, 1);
    csql__loop_member_add(loop, &a->member);
    adial_step(a); /* the first call does the first steps */
}

/* ------------------------------------------------------------------ */
/* injected blocking dials, on a loop worker                          */

typedef struct ep_dial_job {
    csql__loop_job job;
    csql_endpoint *ep;
    csql__loop *loop;
    int fd;
    csql__ep_peer peer;
    int rc;
    csql__fwd_remote remote;
    csql__saved_error err;
} ep_dial_job;

static void dial_work(void *arg)
{
    ep_dial_job *j = arg;
    j->remote.fd = -1;
    j->rc = j->ep->dial(j->ep->dial_ctx, &j->remote);
    if (j->rc != CSQL_OK) {
        csql__error_save(&j->err);
    }
}

/* On the loop thread; with status CSQL_ERR_CLOSED maybe on the thread stopping the loop. */
static void dial_done(void *arg, int status)
{
    ep_dial_job *j = arg;
    csql_endpoint *ep = j->ep;
    if (status != CSQL_OK) {
        if (j->rc == CSQL_OK && j->remote.fd >= 0) {
            csql__ep_remote_dispose(&j->remote);
        }
        csql__error(CSQL_ERR_CLOSED, "the dialer was freed before the dial finished");
        dial_failed(ep, j->fd, &j->peer); /* touches no loop state */
        atomic_fetch_sub(&ep->dials, 1);
        csql__loop_load_add(j->loop, -1);
    } else {
        if (j->rc == CSQL_OK) {
            csql__ep_forward(ep, j->loop, j->fd, &j->peer, &j->remote);
        } else {
            csql__error_restore(&j->err);
            dial_failed(ep, j->fd, &j->peer);
        }
        /* Uncounted once forwarded (counted as active) or failed: never one too few. */
        atomic_fetch_sub(&ep->dials, 1);
        csql__loop_load_add(j->loop, -1);
        csql__ep_slot_freed(ep);
    }
    csql__saved_error_dispose(&j->err);
    free(j);
    csql__ep_unref(ep);
}

static void dial_blocking(csql_endpoint *ep, csql__loop *loop, int fd, const csql__ep_peer *peer)
{
    ep_dial_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        csql__error(CSQL_ERR_NOMEM, "out of memory dialling for an endpoint");
        dial_failed(ep, fd, peer);
        return;
    }
    j->ep = ep;
    j->loop = loop;
    j->fd = fd;
    j->peer = *peer;
    j->remote.fd = -1;
    j->job.work = dial_work;
    j->job.done = dial_done;
    j->job.arg = j;
    csql__ep_ref(ep);
    atomic_fetch_add(&ep->dials, 1);
    csql__loop_load_add(loop, 1);
    if (csql__loop_submit(loop, &j->job) != CSQL_OK) {
        atomic_fetch_sub(&ep->dials, 1);
        csql__loop_load_add(loop, -1);
        dial_failed(ep, fd, peer);
        free(j);
        csql__ep_unref(ep);
    }
}

/* Dial on the loop whose thread this is. */
static void dial_here(csql_endpoint *ep, csql__loop *loop, int fd, const csql__ep_peer *peer)
{
    if (ep->dial_async != NULL) {
        dial_async(ep, loop, fd, peer);
    } else if (ep->dial != NULL) {
        dial_blocking(ep, loop, fd, peer);
    } else {
        csql__error(CSQL_ERR_INTERNAL, "endpoint has no way to dial");
        dial_failed(ep, fd, peer);
    }
}

/* ------------------------------------------------------------------ */
/* hand-over to another loop                                           */

typedef struct ep_handoff {
    csql__loop_task task;
    csql_endpoint *ep;
    csql__loop *loop;
    int fd;
    csql__ep_peer peer;
} ep_handoff;

/* On the target loop (a loop that stops runs what was posted to it first). */
static void handoff_run(void *arg)
{
    ep_handoff *h = arg;
    csql_endpoint *ep = h->ep;
    /* The dial counts itself before the hand-off stops counting: never under the real number. */
    dial_here(ep, h->loop, h->fd, &h->peer);
    atomic_fetch_sub(&ep->dials, 1);
    csql__loop_load_add(h->loop, -1);
    free(h);
    csql__ep_slot_freed(ep);
    csql__ep_unref(ep);
}

void csql__ep_dial(csql_endpoint *ep, csql__loop *loop, int fd, const csql__ep_peer *peer)
{
    if (loop == ep->loop) {
        dial_here(ep, loop, fd, peer);
        return;
    }
    ep_handoff *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        dial_here(ep, ep->loop, fd, peer); /* no memory to hand it over: keep it */
        return;
    }
    h->ep = ep;
    h->loop = loop;
    h->fd = fd;
    h->peer = *peer;
    h->task.fn = handoff_run;
    h->task.arg = h;
    /* Counted as a dial from now, so that max_connections sees it while in transit. */
    csql__ep_ref(ep);
    atomic_fetch_add(&ep->dials, 1);
    csql__loop_load_add(loop, 1);
    if (csql__loop_post(loop, &h->task) != CSQL_OK) {
        atomic_fetch_sub(&ep->dials, 1);
        csql__loop_load_add(loop, -1);
        free(h);
        csql__error(CSQL_ERR_CLOSED, "the dialer was freed before the dial started");
        dial_failed(ep, fd, peer);
        csql__ep_unref(ep);
    }
}
