/*
 * csql's event loop: one epoll thread per key (dialer), an eventfd for work
 * posted from other threads, and a few worker threads for blocking jobs.
 * See loop.h for the contract and docs/internals/local-endpoint.md for why.
 */
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "error.h"
#include "util/clock.h"

#define LOOP_MAX_EVENTS 64
#define LOOP_MAX_WORKERS 4
/* Bound on the rounds of deferred work run while stopping (each round may queue more). */
#define LOOP_STOP_ROUNDS 1000

struct csql__loop {
    /* registry (g_reg_mu) */
    const void *key;
    unsigned idx; /* which of the key's loops */
    size_t refs;
    bool linked;
    bool reaping; /* csql__loop_reap is stopping the key's loops: no new user, no other stopper */
    bool stopped; /* halted by a forced reap while references remained: freed by the last release */
    struct csql__loop *reg_next;

    int epfd;
    int wakefd;
    csql__loop_io wake_io;
    pthread_t thread;
    atomic_bool stop_flag; /* read by the loop thread without mu */
    atomic_int load;       /* connections assigned to this loop (csql__loop_load_add) */

    pthread_mutex_t mu;
    pthread_cond_t cv;           /* call completions, job queue, worker exit */
    bool stopping;               /* mu: no more posts or jobs */
    csql__loop_task *posted_head; /* mu */
    csql__loop_task *posted_tail;
    csql__loop_job *jobs_head;   /* mu: queued, not started */
    csql__loop_job *jobs_tail;
    csql__loop_job *done_head;   /* mu: work finished, done() pending */
    csql__loop_job *done_tail;
    pthread_t workers[LOOP_MAX_WORKERS];
    int n_workers;               /* mu */
    int idle_workers;            /* mu */

    /* loop thread only */
    csql__loop_task *later_head;
    csql__loop_task *later_tail;
    csql__loop_member members;   /* sentinel of a circular list */
    csql__loop_timer timers;     /* sentinel of a circular list of armed timers */
};

static pthread_mutex_t g_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static csql__loop *g_reg_head;
static atomic_int g_loop_count;
static _Thread_local const csql__loop *t_current_loop;

/* ------------------------------------------------------------------ */
/* queues                                                              */

static void task_append(csql__loop_task **head, csql__loop_task **tail, csql__loop_task *t)
{
    t->next = NULL;
    if (*tail != NULL) {
        (*tail)->next = t;
    } else {
        *head = t;
    }
    *tail = t;
}

static void job_append(csql__loop_job **head, csql__loop_job **tail, csql__loop_job *j)
{
    j->next = NULL;
    if (*tail != NULL) {
        (*tail)->next = j;
    } else {
        *head = j;
    }
    *tail = j;
}

static void wake(csql__loop *loop)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(loop->wakefd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
    /* EAGAIN means the counter is already non-zero: the loop will wake anyway. */
}

/* Take everything posted and every finished job; run them (loop thread). True if there were any. */
static bool run_posted(csql__loop *loop)
{
    pthread_mutex_lock(&loop->mu);
    csql__loop_task *tasks = loop->posted_head;
    csql__loop_job *done = loop->done_head;
    loop->posted_head = loop->posted_tail = NULL;
    loop->done_head = loop->done_tail = NULL;
    pthread_mutex_unlock(&loop->mu);

    while (tasks != NULL) {
        csql__loop_task *t = tasks;
        tasks = t->next;
        t->queued = false;
        t->fn(t->arg);
    }
    bool any = tasks != NULL || done != NULL;
    while (done != NULL) {
        csql__loop_job *j = done;
        done = j->next;
        j->done(j->arg, 0);
    }
    return any;
}

/* Run deferred tasks; tasks queued while running wait for the next round. */
static void run_later(csql__loop *loop)
{
    csql__loop_task *t = loop->later_head;
    loop->later_head = loop->later_tail = NULL;
    while (t != NULL) {
        csql__loop_task *next = t->next;
        t->queued = false;
        t->fn(t->arg);
        t = next;
    }
}

/* ------------------------------------------------------------------ */
/* the loop thread                                                     */

static void close_members(csql__loop *loop)
{
    /* Each close removes its member; the bound guards against a member that does not. */
    for (int i = 0; i < 1000000 && loop->members.next != &loop->members; i++) {
        csql__loop_member *m = loop->members.next;
        m->close(m->arg);
        if (loop->members.next == m) {
            csql__loop_member_remove(loop, m); /* a buggy close: do not spin */
        }
    }
}

/* Milliseconds until the nearest timer (0 if due), or -1 with none armed. */
static int next_timeout(const csql__loop *loop)
{
    if (loop->timers.next == &loop->timers) {
        return -1;
    }
    int64_t now = csql__mono_ms();
    int64_t best = INT64_MAX;
    for (const csql__loop_timer *t = loop->timers.next; t != &loop->timers; t = t->next) {
        if (t->due_ms < best) {
            best = t->due_ms;
        }
    }
    int64_t left = best - now;
    return left <= 0 ? 0 : (left > 60000 ? 60000 : (int)left);
}

/* Fire every due timer; a timer re-armed by its own function waits for the next round. */
static void run_timers(csql__loop *loop)
{
    if (loop->timers.next == &loop->timers) {
        return;
    }
    int64_t now = csql__mono_ms();
    csql__loop_timer due;
    due.next = due.prev = &due;
    for (csql__loop_timer *t = loop->timers.next, *next; t != &loop->timers; t = next) {
        next = t->next;
        if (t->due_ms <= now) {
            t->prev->next = t->next;
            t->next->prev = t->prev;
            t->next = &due;
            t->prev = due.prev;
            due.prev->next = t;
            due.prev = t;
        }
    }
    while (due.next != &due) {
        csql__loop_timer *t = due.next;
        due.next = t->next;
        t->next->prev = &due;
        t->next = t->prev = NULL;
        t->armed = false;
        t->fn(t->arg);
    }
}

static void *loop_main(void *arg)
{
    csql__loop *loop = arg;
    struct epoll_event evs[LOOP_MAX_EVENTS];
    t_current_loop = loop;
    char name[16];
    if (loop->idx == 0) {
        snprintf(name, sizeof(name), "csql-loop");
    } else {
        snprintf(name, sizeof(name), "csql-loop-%u", loop->idx % 1000);
    }
    pthread_setname_np(pthread_self(), name);

    while (!atomic_load(&loop->stop_flag)) {
        int timeout = loop->later_head != NULL ? 0 : next_timeout(loop);
        int n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break; /* epoll itself failed (EBADF/EINVAL): nothing sane left to do */
        }
        for (int i = 0; i < n; i++) {
            csql__loop_io *io = evs[i].data.ptr;
            if (io == &loop->wake_io) {
                uint64_t v;
                while (read(loop->wakefd, &v, sizeof(v)) < 0 && errno == EINTR) {
                }
                run_posted(loop);
                continue;
            }
            if (io->fd < 0) {
                continue; /* removed earlier in this batch */
            }
            io->fn(io->arg, evs[i].events);
        }
        run_timers(loop);
        run_later(loop);
    }

    /*
     * Stopping: finish what was posted (nothing new can be: posts are refused
     * now), close what is left, settle deferred frees and call answers.
     */
    run_posted(loop);
    close_members(loop);
    for (int i = 0; i < LOOP_STOP_ROUNDS; i++) {
        bool later = loop->later_head != NULL;
        run_later(loop);
        if (!run_posted(loop) && !later) {
            break;
        }
    }
    t_current_loop = NULL;
    return NULL;
}

/*
 * Start a library thread with every signal blocked: the application's handlers
 * run on its own threads, and a write to a socket the peer reset (OpenSSL
 * writes with write(), not send(MSG_NOSIGNAL)) leaves SIGPIPE pending on our
 * thread instead of killing the process.
 */
static int spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}

/* ------------------------------------------------------------------ */
/* workers                                                             */

static void *worker_main(void *arg)
{
    csql__loop *loop = arg;
    pthread_setname_np(pthread_self(), "csql-dial");

    pthread_mutex_lock(&loop->mu);
    for (;;) {
        while (loop->jobs_head == NULL && !loop->stopping) {
            loop->idle_workers++;
            pthread_cond_wait(&loop->cv, &loop->mu);
            loop->idle_workers--;
        }
        if (loop->jobs_head == NULL) {
            break; /* stopping and nothing queued */
        }
        if (loop->stopping) {
            break; /* queued jobs are cancelled by the stopper */
        }
        csql__loop_job *j = loop->jobs_head;
        loop->jobs_head = j->next;
        if (loop->jobs_head == NULL) {
            loop->jobs_tail = NULL;
        }
        pthread_mutex_unlock(&loop->mu);
        j->work(j->arg);
        pthread_mutex_lock(&loop->mu);
        j->ran = true;
        job_append(&loop->done_head, &loop->done_tail, j);
        pthread_mutex_unlock(&loop->mu);
        wake(loop);
        pthread_mutex_lock(&loop->mu);
    }
    pthread_mutex_unlock(&loop->mu);
    return NULL;
}

int csql__loop_submit(csql__loop *loop, csql__loop_job *job)
{
    job->ran = false;
    pthread_mutex_lock(&loop->mu);
    if (loop->stopping) {
        pthread_mutex_unlock(&loop->mu);
        return csql__error(CSQL_ERR_CLOSED, "the csql event loop is stopping");
    }
    job_append(&loop->jobs_head, &loop->jobs_tail, job);
    if (loop->idle_workers == 0 && loop->n_workers < LOOP_MAX_WORKERS) {
        if (spawn(&loop->workers[loop->n_workers], worker_main, loop) == 0) {
            loop->n_workers++;
        }
    }
    if (loop->n_workers == 0) {
        /* Not even one worker could start: the job cannot run. */
        loop->jobs_head = loop->jobs_tail = NULL;
        pthread_mutex_unlock(&loop->mu);
        return csql__error(CSQL_ERR_INTERNAL, "could not start a csql dial worker thread");
    }
    pthread_cond_broadcast(&loop->cv);
    pthread_mutex_unlock(&loop->mu);
    return CSQL_OK;
}

/* ------------------------------------------------------------------ */
/* create / stop                                                       */

static void loop_free_resources(csql__loop *loop)
{
    if (loop->epfd >= 0) {
        close(loop->epfd);
    }
    if (loop->wakefd >= 0) {
        close(loop->wakefd);
    }
    pthread_cond_destroy(&loop->cv);
    pthread_mutex_destroy(&loop->mu);
    free(loop);
}

static int loop_start(const void *key, unsigned idx, csql__loop **out)
{
    int rc = CSQL_ERR_INTERNAL;
    csql__loop *loop = calloc(1, sizeof(*loop));
    if (loop == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating the csql event loop");
    }
    loop->key = key;
    loop->idx = idx;
    loop->epfd = -1;
    loop->wakefd = -1;
    loop->members.next = loop->members.prev = &loop->members;
    loop->timers.next = loop->timers.prev = &loop->timers;
    atomic_init(&loop->stop_flag, false);
    atomic_init(&loop->load, 0);
    pthread_mutex_init(&loop->mu, NULL);
    pthread_cond_init(&loop->cv, NULL);

    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->epfd < 0 || loop->wakefd < 0) {
        rc = csql__error(CSQL_ERR_INTERNAL, "event loop: epoll/eventfd failed: %s",
                         strerrordesc_np(errno));
        goto fail;
    }
    loop->wake_io.fd = loop->wakefd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &loop->wake_io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) != 0) {
        rc = csql__error(CSQL_ERR_INTERNAL, "event loop: epoll_ctl failed: %s",
                         strerrordesc_np(errno));
        goto fail;
    }
    int err = spawn(&loop->thread, loop_main, loop);
    if (err != 0) {
        rc = csql__error(CSQL_ERR_INTERNAL, "could not start the csql event loop thread: %s",
                         strerrordesc_np(err));
        goto fail;
    }
    atomic_fetch_add(&g_loop_count, 1);
    *out = loop;
    return CSQL_OK;

fail:
    loop_free_resources(loop);
    return rc;
}

/* Stop the thread and the workers, cancel queued jobs. Not on the loop thread. */
static void loop_halt(csql__loop *loop)
{
    pthread_mutex_lock(&loop->mu);
    loop->stopping = true;
    pthread_cond_broadcast(&loop->cv);
    pthread_mutex_unlock(&loop->mu);
    atomic_store(&loop->stop_flag, true);
    wake(loop);
    pthread_join(loop->thread, NULL);

    /* Workers finish the job they run (a dial is bounded by its timeout); then exit. */
    for (int i = 0; i < loop->n_workers; i++) {
        pthread_join(loop->workers[i], NULL);
    }
    /* The loop thread is gone: hand back every job not completed on it. Single-threaded now. */
    csql__loop_job *lists[2] = {loop->done_head, loop->jobs_head};
    loop->done_head = loop->done_tail = loop->jobs_head = loop->jobs_tail = NULL;
    for (int k = 0; k < 2; k++) {
        while (lists[k] != NULL) {
            csql__loop_job *j = lists[k];
            lists[k] = j->next;
            j->done(j->arg, CSQL_ERR_CLOSED);
        }
    }
    atomic_fetch_sub(&g_loop_count, 1);
}

static void reg_unlink(csql__loop *loop);

/*
 * Halt, then free unless something still holds a reference (an endpoint the
 * application has not closed when its dialer was freed): that last release
 * frees it, and every call on a halted loop fails with CSQL_ERR_CLOSED.
 */
static void loop_stop(csql__loop *loop)
{
    loop_halt(loop);
    pthread_mutex_lock(&g_reg_mu);
    reg_unlink(loop); /* a reap's victims stay linked (marked) until here; others are already out */
    loop->stopped = true;
    bool free_now = loop->refs == 0;
    pthread_mutex_unlock(&g_reg_mu);
    if (free_now) {
        loop_free_resources(loop);
    }
}

/* ------------------------------------------------------------------ */
/* registry                                                            */

static void reg_unlink(csql__loop *loop)
{
    csql__loop **pp = &g_reg_head;
    while (*pp != NULL && *pp != loop) {
        pp = &(*pp)->reg_next;
    }
    if (*pp == loop) {
        *pp = loop->reg_next;
    }
    loop->linked = false;
}

int csql__loop_acquire(const void *key, csql__loop **out)
{
    return csql__loop_acquire_nth(key, 0, out);
}

int csql__loop_acquire_nth(const void *key, unsigned idx, csql__loop **out)
{
    *out = NULL;
    csql__loop *idle = NULL; /* idle loops of other keys, joined after unlocking */
    pthread_mutex_lock(&g_reg_mu);
    csql__loop *found = NULL;
    /* A loop thread never joins another loop (it may be waited on): idle loops wait for a reap. */
    bool may_join = t_current_loop == NULL;
    bool reaping = false;
    for (csql__loop *l = g_reg_head, *next; l != NULL; l = next) {
        next = l->reg_next;
        if (l->key == key) {
            reaping = reaping || l->reaping;
            if (l->idx == idx) {
                found = l;
            }
        } else if (l->refs == 0 && !l->reaping && may_join) {
            reg_unlink(l);
            l->reg_next = idle;
            idle = l;
        }
    }
    int rc = CSQL_OK;
    if (reaping) {
        /* Its dialer is being freed: a dial still finishing must not start a loop nobody joins. */
        found = NULL;
        rc = csql__error(CSQL_ERR_CLOSED, "the csql event loop is stopping (dialer freed)");
    } else if (found == NULL) {
        csql__loop *fresh = NULL;
        rc = loop_start(key, idx, &fresh);
        if (rc == CSQL_OK && fresh != NULL) {
            fresh->linked = true;
            fresh->reg_next = g_reg_head;
            g_reg_head = fresh;
            found = fresh;
        }
    }
    if (found != NULL) {
        found->refs++;
        *out = found;
    }
    pthread_mutex_unlock(&g_reg_mu);

    while (idle != NULL) {
        csql__loop *l = idle;
        idle = l->reg_next;
        loop_stop(l);
    }
    return rc;
}

void csql__loop_release(csql__loop *loop)
{
    if (loop == NULL) {
        return;
    }
    bool stop = false;
    bool free_now = false;
    pthread_mutex_lock(&g_reg_mu);
    loop->refs--;
    if (loop->refs == 0 && loop->stopped) {
        free_now = true;
    } else if (loop->refs == 0 && loop->linked && !loop->reaping && t_current_loop == NULL) {
        /* On a loop thread (any) the loop is left idle instead: a loop never joins another. */
        reg_unlink(loop);
        stop = true;
    }
    pthread_mutex_unlock(&g_reg_mu);
    if (stop) {
        loop_stop(loop);
    }
    if (free_now) {
        loop_free_resources(loop);
    }
}

void csql__loop_reap(const void *key, bool force)
{
    /*
     * Every loop of the key; the extra loops (idx > 0) first, so that what
     * their members post to loop 0 while closing still finds it running.
     * The victims stay in the registry, marked, until each is stopped: an
     * acquire for the key meanwhile (a dial finishing on a loop not stopped
     * yet) fails instead of starting a loop nobody would join.
     */
    csql__loop *victims[64];
    size_t n = 0;
    pthread_mutex_lock(&g_reg_mu);
    for (csql__loop *l = g_reg_head; l != NULL && n < sizeof(victims) / sizeof(victims[0]);
         l = l->reg_next) {
        if (l->key == key && !l->reaping && (l->refs == 0 || force)) {
            l->reaping = true;
            victims[n++] = l;
        }
    }
    pthread_mutex_unlock(&g_reg_mu);
    /* Highest number first: loop 0 last. */
    for (size_t i = 0; i + 1 < n; i++) {
        for (size_t k = i + 1; k < n; k++) {
            if (victims[k]->idx > victims[i]->idx) {
                csql__loop *t = victims[i];
                victims[i] = victims[k];
                victims[k] = t;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        loop_stop(victims[i]);
    }
}

int csql__loop_count(void)
{
    return atomic_load(&g_loop_count);
}

/* ------------------------------------------------------------------ */
/* any thread                                                          */

bool csql__loop_in_thread(const csql__loop *loop)
{
    return t_current_loop == loop;
}

typedef struct sync_call {
    void (*fn)(void *);
    void *arg;
    csql__loop *loop;
    bool done;
    csql__loop_task task;
    csql__loop_task finish;
} sync_call;

static void sync_call_finish(void *arg)
{
    sync_call *c = arg;
    pthread_mutex_lock(&c->loop->mu);
    c->done = true;
    pthread_cond_broadcast(&c->loop->cv);
    pthread_mutex_unlock(&c->loop->mu);
}

static void sync_call_run(void *arg)
{
    sync_call *c = arg;
    c->fn(c->arg);
    /*
     * Answer only after the current batch of events: events already fetched
     * for an io that fn removed are skipped by reading that io, so the caller
     * may free it only once the batch is over.
     */
    c->finish.fn = sync_call_finish;
    c->finish.arg = c;
    csql__loop_later(c->loop, &c->finish);
}

int csql__loop_call(csql__loop *loop, void (*fn)(void *), void *arg)
{
    if (csql__loop_in_thread(loop)) {
        fn(arg);
        return CSQL_OK;
    }
    sync_call c = {.fn = fn, .arg = arg, .loop = loop, .done = false};
    c.task.fn = sync_call_run;
    c.task.arg = &c;
    pthread_mutex_lock(&loop->mu);
    if (loop->stopping) {
        pthread_mutex_unlock(&loop->mu);
        return csql__error(CSQL_ERR_CLOSED, "the csql event loop is stopping");
    }
    c.task.queued = true;
    task_append(&loop->posted_head, &loop->posted_tail, &c.task);
    pthread_mutex_unlock(&loop->mu);
    wake(loop);
    pthread_mutex_lock(&loop->mu);
    while (!c.done) {
        pthread_cond_wait(&loop->cv, &loop->mu);
    }
    pthread_mutex_unlock(&loop->mu);
    return CSQL_OK;
}

int csql__loop_post(csql__loop *loop, csql__loop_task *task)
{
    pthread_mutex_lock(&loop->mu);
    if (loop->stopping) {
        pthread_mutex_unlock(&loop->mu);
        return csql__error(CSQL_ERR_CLOSED, "the csql event loop is stopping");
    }
    task->queued = true;
    task_append(&loop->posted_head, &loop->posted_tail, task);
    pthread_mutex_unlock(&loop->mu);
    wake(loop);
    return CSQL_OK;
}

void csql__loop_load_add(csql__loop *loop, int delta)
{
    atomic_fetch_add_explicit(&loop->load, delta, memory_order_relaxed);
}

int csql__loop_load(const csql__loop *loop)
{
    return atomic_load_explicit(&loop->load, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* loop thread                                                         */

int csql__loop_io_add(csql__loop *loop, csql__loop_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) != 0) {
        return csql__error(CSQL_ERR_INTERNAL, "event loop: cannot watch fd %d: %s", io->fd,
                           strerrordesc_np(errno));
    }
    io->events = events;
    return CSQL_OK;
}

int csql__loop_io_set(csql__loop *loop, csql__loop_io *io, uint32_t events)
{
    if (io->events == events) {
        return CSQL_OK;
    }
    struct epoll_event ev = {.events = events, .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) != 0) {
        return csql__error(CSQL_ERR_INTERNAL, "event loop: cannot change fd %d: %s", io->fd,
                           strerrordesc_np(errno));
    }
    io->events = events;
    return CSQL_OK;
}

void csql__loop_io_del(csql__loop *loop, csql__loop_io *io)
{
    if (io->fd >= 0) {
        epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    }
    io->fd = -1;
    io->events = 0;
}

void csql__loop_later(csql__loop *loop, csql__loop_task *task)
{
    if (task->queued) {
        return;
    }
    task->queued = true;
    task_append(&loop->later_head, &loop->later_tail, task);
}

void csql__loop_timer_cancel(csql__loop *loop, csql__loop_timer *t)
{
    (void)loop;
    if (!t->armed) {
        return;
    }
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->next = t->prev = NULL;
    t->armed = false;
}

void csql__loop_timer_set(csql__loop *loop, csql__loop_timer *t, int64_t delay_ms)
{
    csql__loop_timer_cancel(loop, t);
    t->due_ms = csql__mono_ms() + (delay_ms > 0 ? delay_ms : 0);
    t->next = &loop->timers;
    t->prev = loop->timers.prev;
    loop->timers.prev->next = t;
    loop->timers.prev = t;
    t->armed = true;
}

void csql__loop_member_add(csql__loop *loop, csql__loop_member *m)
{
    m->next = loop->members.next;
    m->prev = &loop->members;
    loop->members.next->prev = m;
    loop->members.next = m;
}

void csql__loop_member_remove(csql__loop *loop, csql__loop_member *m)
{
    (void)loop;
    if (m->next == NULL) {
        return;
    }
    m->prev->next = m->next;
    m->next->prev = m->prev;
    m->next = m->prev = NULL;
}

void csql__loop_ref(csql__loop *loop)
{
    pthread_mutex_lock(&g_reg_mu);
    loop->refs++;
    pthread_mutex_unlock(&g_reg_mu);
}
