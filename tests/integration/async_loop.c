/* The async tests' epoll loop (async_loop.h). */
#include "async_loop.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "csql/async.h"
#include "csql/errors.h"

int64_t al_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    while (d != NULL && readdir(d) != NULL) {
        n++;
    }
    if (d != NULL) {
        closedir(d);
    }
    return n - 2;
}

int al_threads(void)
{
    return count_dir("/proc/self/task");
}

int al_open_fds(void)
{
    return count_dir("/proc/self/fd") - 1; /* the DIR's own */
}

int al_open_sockets(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;
    while (d != NULL && (de = readdir(d)) != NULL) {
        char path[300], target[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
        ssize_t len = readlink(path, target, sizeof(target) - 1);
        if (len > 0) {
            target[len] = '\0';
            n += strncmp(target, "socket:", 7) == 0;
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

/* ---- csql_dial_async as an op ---- */

static int dial_step(void *h, void **out)
{
    csql_conn *c = NULL;
    int rc = csql_dial_async_continue(h, &c);
    *out = c;
    return rc;
}

static int dial_fd(const void *h)
{
    return csql_dial_async_fd(h);
}

static int dial_events(const void *h)
{
    return csql_dial_async_events(h);
}

static int dial_timeout(const void *h)
{
    return csql_dial_async_timeout_ms(h);
}

const al_ops al_dial_ops = {dial_step, dial_fd, dial_events, dial_timeout};

/* ---- the loop ---- */

void al_init(al_loop *L, bool tick_1ms)
{
    memset(L, 0, sizeof(*L));
    L->ep = epoll_create1(EPOLL_CLOEXEC);
    L->tfd = -1;
    L->count_threads = true;
    if (tick_1ms) {
        L->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
        timerfd_settime(L->tfd, 0, &its, NULL);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(L->ep, EPOLL_CTL_ADD, L->tfd, &ev);
        L->last_tick_us = al_now_us();
    }
}

void al_dispose(al_loop *L)
{
    if (L->stale_fds != 0) {
        fprintf(stderr, "async_loop: %d fds were closed or replaced while still in the caller's "
                        "loop (csql/async.h: an fd stays open until the continue call after the "
                        "one that stopped reporting it)\n",
                L->stale_fds);
        abort();
    }
    if (L->tfd >= 0) {
        close(L->tfd);
    }
    close(L->ep);
    free(L->ops);
}

static uint32_t to_epoll(int ev)
{
    return (ev & CSQL_ASYNC_READ ? EPOLLIN : 0) | (ev & CSQL_ASYNC_WRITE ? EPOLLOUT : 0);
}

static void unregister_checked(al_loop *L, al_op *op, bool check);

static void unregister(al_loop *L, al_op *op)
{
    unregister_checked(L, op, true);
}

/*
 * check: the fd must still be the file registered. Not checked when an op has
 * just failed: a driver helper's last fd is the driver's own socket, which
 * libpq or MariaDB Connector/C may close as it fails.
 */
static void unregister_checked(al_loop *L, al_op *op, bool check)
{
    if (op->reg_fd >= 0 && !check) {
        (void)epoll_ctl(L->ep, EPOLL_CTL_DEL, op->reg_fd, NULL);
        op->reg_fd = -1;
        op->reg_events = 0;
        return;
    }
    if (op->reg_fd >= 0) {
        /* Still the file we registered: csql must not close (or let another thread close) an
           fd before the caller could take it out of its loop. */
        struct stat st;
        if (fstat(op->reg_fd, &st) != 0 || (unsigned long)st.st_dev != op->reg_dev ||
            (unsigned long)st.st_ino != op->reg_ino) {
            fprintf(stderr,
                    "async_loop: fd %d was closed or replaced before it left the loop (op %p: "
                    "step %d, done %d, rc %d, now fd %d)\n",
                    op->reg_fd, (void *)op, op->steps, op->done, op->rc, op->ops->fd(op->h));
            L->stale_fds++;
        }
        (void)epoll_ctl(L->ep, EPOLL_CTL_DEL, op->reg_fd, NULL);
        op->reg_fd = -1;
        op->reg_events = 0;
    }
}

/* Follow the op's fd and events after a continue. */
static void reregister(al_loop *L, al_op *op)
{
    int fd = op->ops->fd(op->h);
    int ev = op->ops->events(op->h);
    if (fd != op->reg_fd) {
        unregister(L, op);
        if (fd >= 0) {
            struct epoll_event e = {.events = to_epoll(ev), .data.ptr = op};
            if (epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &e) != 0) {
                fprintf(stderr, "async_loop: EPOLL_CTL_ADD fd %d: %s\n", fd, strerror(errno));
            }
            op->reg_fd = fd;
            op->reg_events = ev;
            struct stat st;
            op->reg_dev = op->reg_ino = 0;
            if (fstat(fd, &st) == 0) {
                op->reg_dev = (unsigned long)st.st_dev;
                op->reg_ino = (unsigned long)st.st_ino;
            }
            op->fds_seen++;
        }
    } else if (fd >= 0 && ev != op->reg_events) {
        struct epoll_event e = {.events = to_epoll(ev), .data.ptr = op};
        (void)epoll_ctl(L->ep, EPOLL_CTL_MOD, fd, &e);
        op->reg_events = ev;
    }
    op->due_ms = al_now_us() / 1000 + op->ops->timeout_ms(op->h);
}

static int64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void step(al_loop *L, al_op *op)
{
    if (op->done) {
        return;
    }
    int64_t t0 = al_now_us();
    int64_t c0 = cpu_us();
    void *out = NULL;
    int rc = op->ops->step(op->h, &out);
    int64_t took = al_now_us() - t0;
    int64_t cpu = cpu_us() - c0;
    if (took > L->max_step_us) {
        L->max_step_us = took;
    }
    if (cpu > L->max_step_cpu_us) {
        L->max_step_cpu_us = cpu;
    }
    op->steps++;
    if (rc == CSQL_ERR_WOULD_BLOCK) {
        reregister(L, op);
        return;
    }
    unregister_checked(L, op, rc == 0);
    op->done = true;
    op->rc = rc;
    op->out = out;
    op->done_ms = al_now_us() / 1000;
    if (rc != 0) {
        snprintf(op->msg, sizeof(op->msg), "%s", csql_error_last()->message);
    }
    L->live--;
}

void al_add(al_loop *L, al_op *op, const al_ops *ops, void *h)
{
    memset(op, 0, sizeof(*op));
    op->ops = ops;
    op->h = h;
    op->reg_fd = -1;
    if (L->n_ops == L->cap_ops) {
        L->cap_ops = L->cap_ops ? 2 * L->cap_ops : 64;
        L->ops = realloc(L->ops, (size_t)L->cap_ops * sizeof(*L->ops));
    }
    L->ops[L->n_ops++] = op;
    L->live++;
    step(L, op);
}

void al_remove(al_loop *L, al_op *op)
{
    unregister(L, op);
    if (!op->done) {
        op->done = true;
        op->rc = CSQL_ERR_CLOSED;
        L->live--;
    }
}

static void on_tick(al_loop *L)
{
    uint64_t n;
    (void)!read(L->tfd, &n, sizeof(n));
    int64_t now = al_now_us();
    int64_t gap = now - L->last_tick_us;
    if (gap > L->max_gap_us) {
        L->max_gap_us = gap;
    }
    L->last_tick_us = now;
    L->ticks++;
    if (L->count_threads) {
        int t = al_threads();
        if (t > L->max_threads) {
            L->max_threads = t;
        }
    }
}

/* One round: wait for events or the earliest op deadline, then step what is due. */
static void round_once(al_loop *L, int64_t until_ms)
{
    int64_t now_ms = al_now_us() / 1000;
    int64_t wait = until_ms - now_ms;
    for (int i = 0; i < L->n_ops; i++) {
        al_op *op = L->ops[i];
        if (!op->done && op->due_ms - now_ms < wait) {
            wait = op->due_ms - now_ms;
        }
    }
    if (wait < 0) {
        wait = 0;
    }
    if (L->tfd >= 0 && wait > 1) {
        wait = 1;
    }
    struct epoll_event evs[256];
    int n = epoll_wait(L->ep, evs, 256, (int)wait);
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == NULL) {
            on_tick(L);
        }
    }
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr != NULL) {
            step(L, evs[i].data.ptr);
        }
    }
    now_ms = al_now_us() / 1000;
    for (int i = 0; i < L->n_ops; i++) {
        al_op *op = L->ops[i];
        if (!op->done && op->due_ms <= now_ms) {
            step(L, op);
        }
    }
    if (L->tfd < 0 && L->count_threads) {
        int t = al_threads();
        if (t > L->max_threads) {
            L->max_threads = t;
        }
    }
}

int al_run(al_loop *L, int64_t deadline_ms)
{
    /* Bounded by the deadline: every round waits at most until it. */
    while (L->live > 0 && al_now_us() / 1000 < deadline_ms) {
        round_once(L, deadline_ms);
    }
    return L->live;
}

void al_run_for(al_loop *L, int ms)
{
    int64_t until = al_now_us() / 1000 + ms;
    while (al_now_us() / 1000 < until) {
        round_once(L, until);
    }
}
