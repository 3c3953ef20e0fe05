/*
 * Internal: csql's event loop (docs/internals/local-endpoint.md). One thread
 * waiting in epoll, woken by an eventfd for work posted from other threads,
 * plus a small pool of worker threads for the few blocking jobs (csql_dial of
 * a connection accepted by an endpoint). Everything registered with the loop
 * is touched only on the loop thread.
 *
 * A key (a dialer) may have several loops, numbered from 0
 * (csql_config_set_event_loops): loop 0 runs the listeners, the blocking-job
 * workers and the dialer's background jobs; every loop forwards connections.
 *
 * Lifetime: a loop is shared by reference (csql__loop_acquire / _release,
 * one loop per key and number, the key being a dialer). The thread that drops the last
 * reference stops and joins the loop, unless it is a loop thread (this loop's
 * or another's: a loop never waits for another loop): then the loop idles
 * (blocked in epoll_wait, no CPU) until a later acquire reuses it or
 * csql__loop_reap() joins it. While a reap stops a key's loops, acquiring a
 * loop of that key fails with CSQL_ERR_CLOSED.
 */
#ifndef CSQL_SRC_LOOP_H
#define CSQL_SRC_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct csql__loop csql__loop;

/* A file descriptor watched by the loop. fn runs on the loop thread with the epoll events. */
typedef void (*csql__loop_io_fn)(void *arg, uint32_t events);

typedef struct csql__loop_io {
    int fd;
    csql__loop_io_fn fn;
    void *arg;
    uint32_t events; /* current epoll interest */
} csql__loop_io;

/* A unit of work run on the loop thread; embedded in its owner, queued at most once. */
typedef struct csql__loop_task {
    void (*fn)(void *arg);
    void *arg;
    struct csql__loop_task *next;
    bool queued;
} csql__loop_task;

/*
 * Something that lives on the loop and must be closed if the loop is stopped
 * under it (csql__loop_reap with live members). close runs on the loop thread
 * and must csql__loop_member_remove() the member.
 */
typedef struct csql__loop_member {
    void (*close)(void *arg);
    void *arg;
    struct csql__loop_member *prev, *next;
} csql__loop_member;

/* A one-shot timer on the loop thread; embedded in its owner. */
typedef struct csql__loop_timer {
    void (*fn)(void *arg);
    void *arg;
    int64_t due_ms; /* monotonic */
    struct csql__loop_timer *prev, *next;
    bool armed;
} csql__loop_timer;

/* A blocking job: work() on a worker thread, then done(status) on the loop thread. */
typedef struct csql__loop_job {
    void (*work)(void *arg);
    /* status 0: work ran; CSQL_ERR_CLOSED: the loop stopped first (work may not have run). */
    void (*done)(void *arg, int status);
    void *arg;
    struct csql__loop_job *next;
    bool ran;
} csql__loop_job;

/* ---- lifetime ---- */

/* Loop 0 of `key` (created and started if needed), with one more reference. */
int csql__loop_acquire(const void *key, csql__loop **out);
/* Loop number idx of `key` (created and started if needed), with one more reference. */
int csql__loop_acquire_nth(const void *key, unsigned idx, csql__loop **out);
/* One more reference on a loop already held (any thread). */
void csql__loop_ref(csql__loop *loop);
/* Drop a reference (see the header comment for who joins). NULL is ignored. */
void csql__loop_release(csql__loop *loop);
/*
 * Stop and join the loops of `key` (every number; loop 0 last) now if it has no references, or, with
 * force, whatever it holds: every member is closed on the loop thread first.
 * For csql_dialer_free (the loop must not outlive the dialer it serves) and
 * for tests. Must not be called on a loop thread. A loop halted while
 * references remain (an endpoint not closed yet) is freed by the last
 * release; meanwhile csql__loop_call and csql__loop_submit fail with
 * CSQL_ERR_CLOSED.
 */
void csql__loop_reap(const void *key, bool force);
/* Number of loops alive (started and not yet joined), for tests. */
int csql__loop_count(void);

/* ---- any thread ---- */

/* 1 when called on this loop's thread. */
bool csql__loop_in_thread(const csql__loop *loop);
/*
 * Run fn(arg) on the loop thread and wait for it (inline when already there).
 * Returns once the loop finished the batch of events fn ran in, so memory of
 * an io that fn removed may be freed by the caller. CSQL_ERR_CLOSED if stopping.
 */
int csql__loop_call(csql__loop *loop, void (*fn)(void *), void *arg);
/* Queue a blocking job. CSQL_ERR_CLOSED if the loop is stopping. */
int csql__loop_submit(csql__loop *loop, csql__loop_job *job);
/*
 * Run task on the loop thread soon, without waiting for it (the hand-off of
 * work between loops). The task must not be queued already; it runs exactly
 * once when this returns CSQL_OK (a loop that stops runs what was posted
 * before it closes its members), never with CSQL_ERR_CLOSED.
 */
int csql__loop_post(csql__loop *loop, csql__loop_task *task);
/* Connections assigned to a loop (kept by its users; to pick the least loaded). */
void csql__loop_load_add(csql__loop *loop, int delta);
int csql__loop_load(const csql__loop *loop);

/* ---- loop thread only ---- */

/* Watch io->fd for `events` (EPOLLIN, EPOLLOUT, EPOLLET...). */
int csql__loop_io_add(csql__loop *loop, csql__loop_io *io, uint32_t events);
/* Change the interest; no system call when unchanged. */
int csql__loop_io_set(csql__loop *loop, csql__loop_io *io, uint32_t events);
/* Stop watching (before closing the fd). Events already fetched for io are dropped. */
void csql__loop_io_del(csql__loop *loop, csql__loop_io *io);
/*
 * Run task after the current batch of events, before waiting again (used to
 * free objects safely and to resume work cut short for fairness).
 */
void csql__loop_later(csql__loop *loop, csql__loop_task *task);
/*
 * (Re)arm t to run fn(arg) once, delay_ms from now (0: after the current
 * batch). Timers are few (one per dial in progress): kept in a list, the
 * nearest bounds epoll_wait.
 */
void csql__loop_timer_set(csql__loop *loop, csql__loop_timer *t, int64_t delay_ms);
void csql__loop_timer_cancel(csql__loop *loop, csql__loop_timer *t);
void csql__loop_member_add(csql__loop *loop, csql__loop_member *m);
void csql__loop_member_remove(csql__loop *loop, csql__loop_member *m);

#endif
