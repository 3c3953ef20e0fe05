/* csql-proxy's life from start to exit code (run.h). */
#include "run.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "listeners.h"
#include "log.h"
#include "notify.h"
#include "version.h"

#define DRAIN_POLL_MS 100

typedef enum stop_reason { STOP_NONE, STOP_SIGINT, STOP_SIGTERM, STOP_QUIT } stop_reason;

typedef struct run_ctx {
    const proxy_opts *o;
    proxy_state st;
    metrics m;
    int sig_fd;
    proxy_http *http;
    proxy_http *admin;
    proxy_listeners *ls;

    pthread_t starter;
    bool starter_running;
    atomic_bool start_done;
    int start_rc; /* instances served, or -1 */
    char start_err[1024];
    bool stopping_sent; /* STOPPING=1 went to NOTIFY_SOCKET */
} run_ctx;

/* STOPPING=1 once, however the process ends: a shutdown, a signal during startup, a failed start. */
static void notify_stopping(run_ctx *r)
{
    if (!r->stopping_sent) {
        r->stopping_sent = true;
        proxy_sd_notify("STOPPING=1");
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Startup runs on its own thread so that a signal can interrupt a slow Admin API. */
static void *starter_main(void *arg)
{
    run_ctx *r = arg;
    r->start_rc = proxy_listeners_start(r->ls, r->start_err, sizeof(r->start_err));
    if (r->start_rc == 0) {
        snprintf(r->start_err, sizeof(r->start_err), "no instance could be served");
        r->start_rc = -1;
    }
    if (r->start_rc > 0 && r->o->run_connection_test &&
        proxy_listeners_connection_test(r->ls, r->start_err, sizeof(r->start_err)) != 0) {
        r->start_rc = -1;
    }
    atomic_store(&r->start_done, true);
    uint64_t one = 1;
    ssize_t w = write(r->st.wake_fd, &one, sizeof(one));
    (void)w;
    return NULL;
}

/* Drain the wake eventfd. */
static void drain_wake(int fd)
{
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof(v));
    (void)n;
}

/*
 * Wait up to timeout_ms (-1: forever) for a signal or a wake-up. Returns the
 * signal (SIGINT, SIGTERM), 0 for a wake-up, -1 on timeout.
 */
static int wait_event(run_ctx *r, int64_t timeout_ms)
{
    struct pollfd p[2] = {{.fd = r->sig_fd, .events = POLLIN}, {.fd = r->st.wake_fd, .events = POLLIN}};
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0) {
                return -1;
            }
            wait = left > 60000 ? 60000 : (int)left;
        }
        int n = poll(p, 2, wait);
        if (n < 0 && errno != EINTR) {
            return -1;
        }
        if (n > 0 && (p[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(r->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                return (int)si.ssi_signo;
            }
        }
        if (n > 0 && (p[1].revents & POLLIN)) {
            drain_wake(r->st.wake_fd);
            return 0;
        }
    }
}

static stop_reason reason_of(int sig)
{
    return sig == SIGINT ? STOP_SIGINT : STOP_SIGTERM;
}

static int start_http(run_ctx *r)
{
    const proxy_opts *o = r->o;
    char err[512];
    if (o->health_check || o->prometheus) {
        proxy_http_routes routes = {.health = o->health_check, .metrics = o->prometheus};
        if (proxy_http_start(&r->http, "HTTP server", o->http_address, o->http_port, routes, &r->st,
                             err, sizeof(err)) != 0) {
            plog_error("%s", err);
            return -1;
        }
        plog_info("HTTP server listening on %s%s%s", proxy_http_where(r->http),
                  o->health_check ? " (health checks)" : "", o->prometheus ? " (/metrics)" : "");
    }
    if (o->quitquitquit) {
        proxy_http_routes routes = {.quitquitquit = true};
        if (proxy_http_start(&r->admin, "admin server", "localhost", o->admin_port, routes, &r->st,
                             err, sizeof(err)) != 0) {
            plog_error("%s", err);
            return -1;
        }
        plog_info("admin server listening on %s (/quitquitquit)", proxy_http_where(r->admin));
    }
    return 0;
}

/* Wait for startup, or a reason to stop during it. 0 when serving; else the exit code. */
static int await_start(run_ctx *r, stop_reason *why)
{
    for (;;) {
        int ev = wait_event(r, -1);
        if (atomic_load(&r->start_done)) {
            break;
        }
        if (ev > 0 || atomic_load(&r->st.quit_requested)) {
            *why = ev > 0 ? reason_of(ev) : STOP_QUIT;
            plog_info("%s received during startup; stopping",
                      ev == SIGINT ? "SIGINT" : ev > 0 ? "SIGTERM" : "/quitquitquit");
            notify_stopping(r);
            proxy_listeners_close_dialer(r->ls); /* makes a pending Admin API wait return */
            pthread_join(r->starter, NULL);
            r->starter_running = false;
            return -1;
        }
    }
    pthread_join(r->starter, NULL);
    r->starter_running = false;
    if (r->start_rc < 0) {
        /* Logged by proxy_run once the dialer is gone, so that it is the last line. */
        notify_stopping(r);
        return PROXY_EXIT_ERROR;
    }
    atomic_store(&r->st.phase, PHASE_SERVING);
    plog_info("The proxy has started successfully and is ready for new connections!");
    if (proxy_sd_notify("READY=1") != 0) {
        plog_warn("could not notify systemd (NOTIFY_SOCKET): %s", strerrordesc_np(errno));
    }
    return 0;
}

/* Wait for open connections to finish, up to max_ms; a further signal cuts it short. */
static int drain(run_ctx *r, uint64_t max_ms)
{
    if (max_ms == 0) {
        return 0;
    }
    int64_t deadline = now_ms() + (int64_t)max_ms;
    if (!r->st.open_known) {
        plog_info("waiting --max-sigterm-delay (%" PRIu64 " ms): this libcsql cannot count open "
                  "connections",
                  max_ms);
        wait_event(r, (int64_t)max_ms);
        return 0;
    }
    while (atomic_load(&r->st.open) > 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            int_fast64_t open = atomic_load(&r->st.open);
            plog_error("%" PRIdFAST64 " connection(s) still open after waiting %" PRIu64 " ms",
                       open, max_ms);
            return -1;
        }
        int ev = wait_event(r, left < DRAIN_POLL_MS ? left : DRAIN_POLL_MS);
        if (ev > 0) {
            plog_info("second signal: not waiting for the %" PRIdFAST64 " open connection(s)",
                      atomic_load(&r->st.open));
            return 0;
        }
    }
    return 0;
}

static int exit_code(const proxy_opts *o, stop_reason why)
{
    switch (why) {
    case STOP_SIGINT: return PROXY_EXIT_SIGINT;
    case STOP_SIGTERM: return o->exit_zero_on_sigterm ? PROXY_EXIT_OK : PROXY_EXIT_SIGTERM;
    default: return PROXY_EXIT_OK;
    }
}

/* Serve until a signal or /quitquitquit, then shut down. Returns the exit code. */
static int serve(run_ctx *r)
{
    stop_reason why = STOP_NONE;
    while (why == STOP_NONE) {
        int ev = wait_event(r, -1);
        if (ev > 0) {
            why = reason_of(ev);
        } else if (atomic_load(&r->st.quit_requested)) {
            why = STOP_QUIT;
        }
    }
    notify_stopping(r);
    if (why == STOP_QUIT) {
        plog_info("/quitquitquit received request. Shutting down...");
    } else {
        plog_info("%s signal received. Shutting down...", why == STOP_SIGINT ? "SIGINT" : "SIGTERM");
        if (r->o->min_sigterm_delay_ms > 0) {
            plog_info("waiting --min-sigterm-delay (%" PRIu64 " ms) before closing the listeners",
                      r->o->min_sigterm_delay_ms);
            /* The minimum delay is always waited: further signals do not shorten it. */
            int64_t until = now_ms() + (int64_t)r->o->min_sigterm_delay_ms;
            for (int64_t left = until - now_ms(); left > 0; left = until - now_ms()) {
                wait_event(r, left);
            }
        }
    }
    atomic_store(&r->st.phase, PHASE_STOPPING);
    proxy_listeners_stop_accepting(r->ls);
    proxy_listeners_close_dialer(r->ls);
    int rc = exit_code(r->o, why);
    if (drain(r, r->o->max_sigterm_delay_ms) != 0) {
        rc = PROXY_EXIT_ERROR;
    }
    return rc;
}

static int block_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    signal(SIGPIPE, SIG_IGN);
    /* Blocked before any thread starts, so that every thread inherits the mask. */
    return pthread_sigmask(SIG_BLOCK, set, NULL) == 0 ? 0 : -1;
}

int proxy_run(const proxy_opts *o)
{
    run_ctx r;
    memset(&r, 0, sizeof(r));
    r.o = o;
    r.sig_fd = -1;
    r.st.wake_fd = -1;
    int rc = PROXY_EXIT_ERROR;
    bool start_failed = false; /* its message is logged last, after the dialer's lines */
    stop_reason early = STOP_NONE;
    char err[1024];
    sigset_t set;
    const char **names = calloc(o->n_instances, sizeof(*names));
    proxy_engine_features feat = proxy_engine_features_get();
    if (names == NULL || block_signals(&set) != 0) {
        plog_error("cannot set up: %s", strerrordesc_np(errno));
        goto out;
    }
    r.sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    r.st.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    for (size_t i = 0; i < o->n_instances; i++) {
        names[i] = o->instances[i].name;
    }
    if (r.sig_fd < 0 || r.st.wake_fd < 0 ||
        metrics_init(&r.m, names, o->n_instances, o->max_connections, CSQL_PROXY_VERSION) != 0) {
        plog_error("cannot set up: %s", strerrordesc_np(errno));
        goto out;
    }
    r.m.have_conn_events = feat.connection_events;
    r.m.have_refresh_events = feat.refresh_events;
    r.st.metrics = &r.m;
    r.st.max_connections = o->max_connections;
    r.st.open_known = feat.connection_events;
    r.st.prometheus_namespace = o->prometheus_namespace;
    if (o->max_connections > 0 && !feat.connection_events) {
        plog_warn("--max-connections: this libcsql has no connection events, so the limit applies "
                  "per instance and connections over it wait instead of being refused");
    }
    if (start_http(&r) != 0) {
        goto out;
    }
    if (proxy_listeners_new(&r.ls, o, &r.st, err, sizeof(err)) != 0) {
        plog_error("%s", err);
        goto out;
    }
    if (pthread_create(&r.starter, NULL, starter_main, &r) != 0) {
        plog_error("cannot start: %s", strerrordesc_np(errno));
        goto out;
    }
    r.starter_running = true;
    pthread_setname_np(r.starter, "csqlproxy-start");
    int started = await_start(&r, &early);
    if (started < 0) {
        rc = exit_code(o, early);
        goto out;
    }
    if (started > 0) {
        rc = started;
        start_failed = true;
        goto out;
    }
    rc = serve(&r);
out:
    notify_stopping(&r);
    if (r.starter_running) {
        proxy_listeners_close_dialer(r.ls);
        pthread_join(r.starter, NULL);
    }
    proxy_listeners_free(r.ls); /* cuts what is still forwarded */
    if (start_failed) {
        plog_error("%s", r.start_err);
    }
    proxy_http_stop(r.http);
    proxy_http_stop(r.admin);
    metrics_free(&r.m);
    if (r.sig_fd >= 0) {
        close(r.sig_fd);
    }
    if (r.st.wake_fd >= 0) {
        close(r.st.wake_fd);
    }
    free(names);
    plog_debug("exiting with status %d", rc);
    return rc;
}
