/*
 * A small epoll loop for the async integration tests: drives any number of
 * pollable operations (csql_dial_async and the driver helpers' async
 * connects, which share the fd / events / timeout / continue shape) from the
 * calling thread, re-registering fds as they change, and measures what the
 * tests report: the peak thread count of the process while running, the
 * longest single continue call, and the longest gap between ticks of an
 * optional 1 ms timer (the loop's latency).
 */
#ifndef CSQL_TEST_ASYNC_LOOP_H
#define CSQL_TEST_ASYNC_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct al_ops {
    int (*step)(void *h, void **out); /* continue: CSQL_ERR_WOULD_BLOCK, 0 or an error */
    int (*fd)(const void *h);
    int (*events)(const void *h);     /* CSQL_ASYNC_READ | CSQL_ASYNC_WRITE */
    int (*timeout_ms)(const void *h);
} al_ops;

typedef struct al_op {
    const al_ops *ops;
    void *h;
    /* results */
    bool done;
    int rc;
    void *out;
    char msg[512];
    int64_t done_ms;     /* monotonic time of the end */
    int steps;
    int fds_seen;        /* distinct fd changes */
    /* loop state */
    int reg_fd;
    int reg_events;
    unsigned long reg_dev, reg_ino; /* what reg_fd was when registered (csql/async.h contract) */
    int64_t due_ms;
} al_op;

typedef struct al_loop {
    int ep;
    int tfd;             /* 1 ms timerfd, when ticking */
    int live;
    al_op **ops;
    int n_ops, cap_ops;
    /* measurements */
    int max_threads;
    int64_t max_step_us;     /* wall time of the longest continue */
    int64_t max_step_cpu_us; /* CPU time of the costliest continue */
    int64_t max_gap_us;  /* between 1 ms ticks */
    int64_t ticks;
    int64_t last_tick_us;
    bool count_threads;
    /* fds found closed or replaced when taken out of the loop after a continue stopped
       reporting them: csql/async.h promises they stay open until then (al_dispose aborts) */
    int stale_fds;
} al_loop;

void al_init(al_loop *L, bool tick_1ms);
void al_dispose(al_loop *L);
/* Add an op and run its first continue at once. */
void al_add(al_loop *L, al_op *op, const al_ops *ops, void *h);
/* Run until every op is done or the monotonic deadline passes. Returns ops still live. */
int al_run(al_loop *L, int64_t deadline_ms);
/* Run for ms (ops keep going). */
void al_run_for(al_loop *L, int ms);
/* Take an op out of the loop (before freeing its handle). */
void al_remove(al_loop *L, al_op *op);
/* Threads of this process now (/proc/self/task). */
int al_threads(void);
/* Open fds of this process now. */
int al_open_fds(void);
/* Open sockets of this process now. */
int al_open_sockets(void);
int64_t al_now_us(void);

/* The ops of csql_dial_async (out is a csql_conn *). */
extern const al_ops al_dial_ops;

#endif
