/* csql-proxy: dialer and per-instance endpoints (listeners.h). */
#include "listeners.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "csql/dialer.h"
#include "csql/endpoint.h"
#include "csql/errors.h"
#include "dialer_config.h"
#include "instances.h"
#include "log.h"

#define LISTEN_BACKLOG 1024
#define TCP_KEEPALIVE_S 30

typedef struct listener {
    proxy_listeners *l;
    const proxy_instance *in;
    metrics_instance *mi;
    csql_dial_options dial;
    proxy_listen_plan plan;
    csql_endpoint *ep;
    bool made_dir;    /* we created plan.dir (PostgreSQL socket directory) */
    bool made_socket; /* we bound the socket file ourselves */
    char version[64];
} listener;

struct proxy_listeners {
    const proxy_opts *o;
    proxy_state *st;
    csql_dialer *d;
    listener *ls;
    size_t n;
};

proxy_engine_features proxy_engine_features_get(void)
{
    proxy_engine_features f = {false, false, false};
#ifdef CSQL_PROXY_HAVE_ENDPOINT_EVENTS
    f.connection_events = true;
#endif
#ifdef CSQL_PROXY_HAVE_ENDPOINT_FD
    f.listen_fd = true;
#endif
#ifdef CSQL_PROXY_HAVE_REFRESH_EVENTS
    f.refresh_events = true;
#endif
    return f;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *csql_message(int rc)
{
    const char *m = csql_error_last()->message;
    return (m != NULL && m[0] != '\0') ? m : csql_strerror(rc);
}

/* ---- connection events (event loop thread) ---- */

#ifdef CSQL_PROXY_HAVE_ENDPOINT_EVENTS
static void one_closed(listener *ln)
{
    atomic_fetch_sub(&ln->l->st->open, 1);
    atomic_fetch_sub(&ln->mi->open, 1);
}

static int on_event(const csql_endpoint_event *ev, void *userdata)
{
    listener *ln = userdata;
    proxy_state *st = ln->l->st;
    const char *name = ln->in->name;
    const char *peer = (ev->peer != NULL && ev->peer[0] != '\0') ? ev->peer : "a Unix socket";
    switch (ev->kind) {
    case CSQL_ENDPOINT_ACCEPTED: {
        int_fast64_t before = atomic_fetch_add(&st->open, 1);
        if (st->max_connections > 0 && before >= 0 && (uint64_t)before >= st->max_connections) {
            atomic_fetch_sub(&st->open, 1);
            atomic_fetch_add(&ln->mi->refused, 1);
            plog_info("[%s] max connections (%" PRIu64 ") exceeded, refusing new connection from %s",
                      name, st->max_connections, peer);
            return 1;
        }
        atomic_fetch_add(&ln->mi->open, 1);
        atomic_fetch_add(&ln->mi->accepted, 1);
        plog_debug("[%s] Accepted connection from %s (#%" PRIu64 ")", name, peer, ev->id);
        return 0;
    }
    case CSQL_ENDPOINT_DIALLED:
        metrics_dial_done(ln->mi, ev->dial_us, true);
        plog_debug("[%s] connection #%" PRIu64 " connected to the instance in %.1f ms", name, ev->id,
                   (double)ev->dial_us / 1000.0);
        return 0;
    case CSQL_ENDPOINT_DIAL_FAILED:
        metrics_dial_done(ln->mi, ev->dial_us, false);
        one_closed(ln);
        plog_error("[%s] failed to connect to instance, closing connection from %s: %s", name, peer,
                   ev->error != NULL ? ev->error->message : "unknown error");
        return 0;
    case CSQL_ENDPOINT_CLOSED:
        atomic_fetch_add(&ln->mi->bytes_sent, ev->bytes_up);
        atomic_fetch_add(&ln->mi->bytes_received, ev->bytes_down);
        one_closed(ln);
        if (ev->error != NULL) {
            plog_info("[%s] connection #%" PRIu64 " from %s aborted after %" PRIu64 " bytes sent, %" PRIu64
                      " received: %s",
                      name, ev->id, peer, ev->bytes_up, ev->bytes_down, ev->error->message);
        } else {
            plog_debug("[%s] connection #%" PRIu64 " from %s closed: %" PRIu64 " bytes sent, %" PRIu64
                       " received",
                       name, ev->id, peer, ev->bytes_up, ev->bytes_down);
        }
        return 0;
    default:
        return 0;
    }
}
#else
/* Without connection events only dial failures are seen. */
static void on_error(const csql_error *e, void *userdata)
{
    listener *ln = userdata;
    atomic_fetch_add(&ln->mi->dial_failures, 1);
    plog_error("[%s] failed to connect to instance, closed the client connection: %s",
               ln->in->name, e->message);
}
#endif

#ifdef CSQL_PROXY_HAVE_REFRESH_EVENTS
/* Refresh thread (or a dialling thread with --lazy-refresh). */
static void on_refresh(const csql_refresh_event *ev, void *userdata)
{
    proxy_listeners *l = userdata;
    metrics_instance *mi = metrics_find(l->st->metrics, ev->instance);
    if (mi == NULL) {
        return;
    }
    metrics_refresh_done(mi, ev->error == 0, metrics_error_reason(ev->error, ev->api_reason));
}
#endif

/* ---- sockets ---- */

static void endpoint_options(listener *ln, csql_endpoint_options *eo)
{
    eo->dial = &ln->dial;
    eo->userdata = ln;
#ifdef CSQL_PROXY_HAVE_ENDPOINT_EVENTS
    eo->on_event = on_event;
#else
    eo->on_error = on_error;
    uint64_t max = ln->l->o->max_connections;
    eo->max_connections = max > UINT32_MAX ? UINT32_MAX : (uint32_t)max;
#endif
}

#ifdef CSQL_PROXY_HAVE_ENDPOINT_FD
static int tcp_socket(const proxy_listen_plan *p, char *why, size_t len)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    socklen_t sl;
    if (inet_pton(AF_INET, p->address, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)p->port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, p->address, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)p->port);
        sl = sizeof(*s6);
    } else {
        return fail(why, len, "\"%s\" is not an IP address", p->address);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return fail(why, len, "socket: %s", strerrordesc_np(errno));
    }
    int one = 1, idle = TCP_KEEPALIVE_S;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Accepted sockets inherit these on Linux: clients get the Auth Proxy's 30 s keepalive. */
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
    if (ss.ss_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        return fail(why, len, "cannot listen on %s: %s", p->shown, strerrordesc_np(e));
    }
    return fd;
}

/* A socket file left by a dead process refuses connections: remove it; a live one is an error. */
static int clear_stale_socket(const char *path, char *why, size_t len)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return 0;
    }
    if (!S_ISSOCK(st.st_mode)) {
        return fail(why, len, "%s exists and is not a socket", path);
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        return fail(why, len, "socket: %s", strerrordesc_np(errno));
    }
    int rc = connect(probe, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    close(probe);
    if (rc == 0) {
        return fail(why, len, "%s is in use by another process", path);
    }
    if (e == ECONNREFUSED && unlink(path) == 0) {
        return 0;
    }
    return fail(why, len, "cannot replace the stale socket %s: %s", path, strerrordesc_np(e));
}

static int unix_socket_fd(listener *ln, char *why, size_t len)
{
    const char *path = ln->plan.shown;
    if (clear_stale_socket(path, why, len) != 0) {
        return -1;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return fail(why, len, "socket: %s", strerrordesc_np(errno));
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        return fail(why, len, "cannot bind %s: %s", path, strerrordesc_np(e));
    }
    ln->made_socket = true;
    /* As the Auth Proxy: any local user (or container) may connect; the database still authenticates. */
    if (chmod(path, 0777) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        return fail(why, len, "cannot listen on %s: %s", path, strerrordesc_np(e));
    }
    return fd;
}
#endif

static int listen_tcp(listener *ln, char *why, size_t len)
{
    csql_endpoint_options eo = CSQL_ENDPOINT_OPTIONS_INIT;
    endpoint_options(ln, &eo);
    int rc;
#ifdef CSQL_PROXY_HAVE_ENDPOINT_FD
    int fd = tcp_socket(&ln->plan, why, len);
    if (fd < 0) {
        return -1;
    }
    rc = csql_endpoint_open_fd(&ln->ep, ln->l->d, ln->in->name, fd, &eo);
#else
    rc = csql_endpoint_open_tcp(&ln->ep, ln->l->d, ln->in->name, ln->plan.address,
                                (uint16_t)ln->plan.port, &eo);
#endif
    if (rc != 0) {
        return fail(why, len, "cannot listen on %s: %s", ln->plan.shown, csql_message(rc));
    }
    return 0;
}

static int prepare_dir(listener *ln, char *why, size_t len)
{
    struct stat st;
    const char *dir = ln->plan.dir;
    if (stat(dir, &st) == 0) {
        return S_ISDIR(st.st_mode) ? 0 : fail(why, len, "%s is not a directory", dir);
    }
    if (!ln->plan.make_dir) {
        return fail(why, len, "Unix socket directory %s: %s", dir, strerrordesc_np(errno));
    }
    if (mkdir(dir, 0777) != 0) {
        return fail(why, len, "cannot create the Unix socket directory %s: %s", dir,
                    strerrordesc_np(errno));
    }
    ln->made_dir = true;
    return 0;
}

static int listen_unix(listener *ln, char *why, size_t len)
{
    if (prepare_dir(ln, why, len) != 0) {
        return -1;
    }
    csql_endpoint_options eo = CSQL_ENDPOINT_OPTIONS_INIT;
    endpoint_options(ln, &eo);
    int rc;
#ifdef CSQL_PROXY_HAVE_ENDPOINT_FD
    int fd = unix_socket_fd(ln, why, len);
    if (fd < 0) {
        return -1;
    }
    rc = csql_endpoint_open_fd(&ln->ep, ln->l->d, ln->in->name, fd, &eo);
#else
    eo.unix_socket_name = ln->plan.name;
    rc = csql_endpoint_open_unix(&ln->ep, ln->l->d, ln->in->name, ln->plan.dir, &eo);
    if (rc == 0) {
        chmod(ln->plan.shown, 0777); /* best effort, as the Auth Proxy */
    }
#endif
    if (rc != 0) {
        return fail(why, len, "cannot listen on %s: %s", ln->plan.shown, csql_message(rc));
    }
    return 0;
}

/* Undo a listener: stop accepting, remove what we created. */
static void listener_close(listener *ln)
{
    if (ln->ep != NULL) {
        csql_endpoint_close(ln->ep);
        ln->ep = NULL;
    }
    if (ln->made_socket) {
        unlink(ln->plan.shown);
        ln->made_socket = false;
    }
    if (ln->made_dir) {
        rmdir(ln->plan.dir); /* only if empty: never remove what others put there */
        ln->made_dir = false;
    }
    if (ln->mi != NULL) {
        atomic_store(&ln->mi->serving, false);
    }
}

/* ---- lifecycle ---- */

int proxy_listeners_new(proxy_listeners **out, const proxy_opts *o, proxy_state *st, char *err,
                        size_t errlen)
{
    *out = NULL;
    proxy_listeners *l = calloc(1, sizeof(*l));
    csql_config *cfg = NULL;
    if (l == NULL || (l->ls = calloc(o->n_instances, sizeof(*l->ls))) == NULL) {
        free(l);
        return fail(err, errlen, "out of memory");
    }
    l->o = o;
    l->st = st;
    l->n = o->n_instances;
    for (size_t i = 0; i < l->n; i++) {
        listener *ln = &l->ls[i];
        ln->l = l;
        ln->in = &o->instances[i];
        ln->mi = metrics_find(st->metrics, ln->in->name);
        ln->dial = (csql_dial_options)CSQL_DIAL_OPTIONS_INIT;
        ln->dial.ip_type = proxy_instance_ip_type(o, ln->in);
        ln->dial.iam_authn = proxy_instance_iam(o, ln->in) ? 1 : 0;
    }
    if (proxy_dialer_config(o, &cfg, err, errlen) != 0) {
        goto fail;
    }
#ifdef CSQL_PROXY_HAVE_REFRESH_EVENTS
    if (csql_config_set_refresh_callback(cfg, on_refresh, l) != 0) {
        fail(err, errlen, "refresh callback: %s", csql_message(-1));
        goto fail;
    }
#endif
    int rc = csql_dialer_new(&l->d, cfg);
    if (rc != 0) {
        fail(err, errlen, "%s", csql_message(rc));
        goto fail;
    }
    csql_config_free(cfg);
    *out = l;
    return 0;
fail:
    csql_config_free(cfg);
    free(l->ls);
    free(l);
    return -1;
}

static int start_one(proxy_listeners *l, listener *ln, proxy_ports *ports, char *why, size_t len)
{
    const char *version = NULL;
    if (proxy_instance_needs_version(l->o, ln->in)) {
        csql_instance_info *info = NULL;
        int rc = csql_dialer_instance_info(l->d, ln->in->name, &ln->dial, &info);
        if (rc != 0) {
            return fail(why, len, "cannot get the instance's details: %s", csql_message(rc));
        }
        snprintf(ln->version, sizeof(ln->version), "%s", csql_instance_info_database_version(info));
        csql_instance_info_free(info);
        version = ln->version;
    }
    if (proxy_instance_plan(l->o, ln->in, version, ports, &ln->plan, why, len) != 0) {
        return -1;
    }
    int rc = ln->plan.tcp ? listen_tcp(ln, why, len) : listen_unix(ln, why, len);
    if (rc != 0) {
        listener_close(ln);
    }
    return rc;
}

int proxy_listeners_start(proxy_listeners *l, char *err, size_t errlen)
{
    if (!l->o->lazy_refresh) {
        /* Fetch every instance's certificate at once; the loop below then waits for each. */
        for (size_t i = 0; i < l->n; i++) {
            csql_dialer_warmup(l->d, l->ls[i].in->name, &l->ls[i].dial, 0);
        }
    }
    proxy_ports ports;
    proxy_ports_init(&ports, l->o->port);
    int served = 0;
    for (size_t i = 0; i < l->n; i++) {
        listener *ln = &l->ls[i];
        char why[1024];
        if (start_one(l, ln, &ports, why, sizeof(why)) != 0) {
            if (!l->o->skip_failed_instance_config) {
                return fail(err, errlen, "[%s] %s", ln->in->name, why);
            }
            plog_error("[%s] skipping this instance (--skip-failed-instance-config): %s",
                       ln->in->name, why);
            continue;
        }
        atomic_store(&ln->mi->serving, true);
        served++;
        plog_info("[%s] Listening on %s", ln->in->name, ln->plan.shown);
    }
    return served;
}

int proxy_listeners_connection_test(proxy_listeners *l, char *err, size_t errlen)
{
    int failed = 0;
    for (size_t i = 0; i < l->n; i++) {
        listener *ln = &l->ls[i];
        if (ln->ep == NULL) {
            continue;
        }
        csql_conn *c = NULL;
        int rc = csql_dial(l->d, ln->in->name, &ln->dial, &c);
        if (rc != 0) {
            if (failed++ == 0) {
                fail(err, errlen, "[%s] connection test failed: %s", ln->in->name,
                     csql_message(rc));
            }
            plog_error("[%s] connection test failed: %s", ln->in->name, csql_message(rc));
            continue;
        }
        csql_conn_close(c);
        plog_info("[%s] connection test passed", ln->in->name);
    }
    return failed ? -1 : 0;
}

void proxy_listeners_stop_accepting(proxy_listeners *l)
{
    for (size_t i = 0; i < l->n; i++) {
        listener_close(&l->ls[i]);
    }
}

void proxy_listeners_close_dialer(proxy_listeners *l)
{
    csql_dialer_close(l->d);
}

void proxy_listeners_free(proxy_listeners *l)
{
    if (l == NULL) {
        return;
    }
    proxy_listeners_stop_accepting(l);
    csql_dialer_free(l->d);
    free(l->ls);
    free(l);
}
