/*
 * csql_endpoint: listeners (Unix socket in a private 0700 directory, or
 * loopback TCP) whose accepted connections are forwarded by the event loop.
 * Sockets are made on the caller's thread (so bind errors come back from
 * open); everything after that happens on the loop thread.
 */
#include "endpoint_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

#define EP_BACKLOG 512
#define EP_ACCEPTS_PER_WAKEUP 64
#define EP_ACCEPT_BACKOFF_MS 100
#define EP_SOCKET_NAME_DEFAULT "csql.sock"
#define EP_SOCKET_NAME_MAX 64

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static void ep_free(csql_endpoint *ep)
{
    csql__loop *loops[CSQL__EP_MAX_LOOPS];
    unsigned n = ep->nloops;
    memcpy(loops, ep->loops, sizeof(loops));
    if (ep->has_first) {
        csql__ep_remote_dispose(&ep->first);
    }
    if (ep->dial_ctx_free != NULL) {
        ep->dial_ctx_free(ep->dial_ctx);
    }
    pthread_mutex_destroy(&ep->conns_mu);
    free(ep);
    /* The other loops first: loop 0 is the one a dialer's other users share. */
    for (unsigned i = n; i-- > 0;) {
        csql__loop_release(loops[i]);
    }
}

void csql__ep_ref(csql_endpoint *ep)
{
    atomic_fetch_add(&ep->refs, 1);
}

void csql__ep_unref(csql_endpoint *ep)
{
    if (atomic_fetch_sub(&ep->refs, 1) == 1) {
        ep_free(ep);
    }
}

/* ------------------------------------------------------------------ */
/* listening (loop thread)                                             */

static void set_listening(csql_endpoint *ep, bool on)
{
    if (!ep->listening) {
        return;
    }
    ep->paused = !on;
    csql__loop_io_set(ep->loop, &ep->lio, on ? EPOLLIN : 0);
}

static void stop_listening(csql_endpoint *ep)
{
    if (!ep->listening) {
        return;
    }
    ep->listening = false;
    csql__loop_io_del(ep->loop, &ep->lio);
    close(ep->lfd);
    ep->lfd = -1;
    if (ep->unlink_on_close) {
        unlink(ep->path);
    }
    if (ep->private_dir) {
        rmdir(ep->dir);
    }
    if (ep->tio.fd >= 0) {
        int tfd = ep->tio.fd;
        csql__loop_io_del(ep->loop, &ep->tio);
        close(tfd);
    }
}

static void arm_backoff(csql_endpoint *ep)
{
    set_listening(ep, false);
    if (ep->tio.fd < 0) {
        int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (tfd < 0) {
            set_listening(ep, true); /* no timer: keep trying rather than stall */
            return;
        }
        ep->tio.fd = tfd;
        if (csql__loop_io_add(ep->loop, &ep->tio, EPOLLIN) != CSQL_OK) {
            ep->tio.fd = -1;
            close(tfd);
            set_listening(ep, true);
            return;
        }
    }
    struct itimerspec its = {.it_value = {.tv_sec = 0, .tv_nsec = EP_ACCEPT_BACKOFF_MS * 1000000L}};
    timerfd_settime(ep->tio.fd, 0, &its, NULL);
}

static void on_backoff(void *arg, uint32_t events)
{
    (void)events;
    csql_endpoint *ep = arg;
    uint64_t v;
    while (read(ep->tio.fd, &v, sizeof(v)) < 0 && errno == EINTR) {
    }
    if (!ep->closed) {
        set_listening(ep, true);
    }
}

static bool at_capacity(const csql_endpoint *ep)
{
    if (ep->max_connections == 0) {
        return false;
    }
    int busy = atomic_load(&ep->active) + atomic_load(&ep->dials);
    return busy >= 0 && (uint32_t)busy >= ep->max_connections;
}

/* On the endpoint's loop: a slot was freed on another loop while accepting was paused. */
static void on_resume(void *arg)
{
    csql_endpoint *ep = arg;
    atomic_store(&ep->resume_pending, false);
    if (ep->paused && !ep->closed && !at_capacity(ep)) {
        set_listening(ep, true);
    }
    csql__ep_unref(ep);
}

void csql__ep_slot_freed(csql_endpoint *ep)
{
    if (csql__loop_in_thread(ep->loop)) {
        if (ep->paused && !ep->closed && !at_capacity(ep)) {
            set_listening(ep, true);
        }
        return;
    }
    /* Another loop: only the endpoint's own may touch the listener. */
    if (!atomic_load(&ep->paused) || atomic_exchange(&ep->resume_pending, true)) {
        return;
    }
    csql__ep_ref(ep);
    ep->resume_task.fn = on_resume;
    ep->resume_task.arg = ep;
    if (csql__loop_post(ep->loop, &ep->resume_task) != CSQL_OK) {
        /* The endpoint's loop is stopping: nothing will accept again anyway. */
        atomic_store(&ep->resume_pending, false);
        csql__ep_unref(ep);
    }
}

csql__loop *csql__ep_pick_loop(const csql_endpoint *ep)
{
    csql__loop *best = ep->loops[0];
    int best_load = csql__loop_load(best);
    for (unsigned i = 1; i < ep->nloops; i++) {
        int l = csql__loop_load(ep->loops[i]);
        if (l < best_load) {
            best = ep->loops[i];
            best_load = l;
        }
    }
    return best;
}

/* ------------------------------------------------------------------ */
/* accepting (loop thread)                                             */

static void peer_of(csql_endpoint *ep, int fd, csql__ep_peer *peer)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    peer->id = ++ep->next_id;
    peer->accepted_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    peer->addr[0] = '\0';
    if (!ep->tcp) {
        return;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) {
        return;
    }
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(peer->addr, sizeof(peer->addr), "%s:%u", ip, ntohs(s4->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(peer->addr, sizeof(peer->addr), "[%s]:%u", ip, ntohs(s6->sin6_port));
    }
}

static void on_accept(void *arg, uint32_t events)
{
    (void)events;
    csql_endpoint *ep = arg;
    for (int i = 0; i < EP_ACCEPTS_PER_WAKEUP && ep->listening && !ep->paused; i++) {
        if (at_capacity(ep)) {
            set_listening(ep, false); /* resumed when a connection ends */
            /*
             * A connection may have ended on another loop between the check
             * and the pause, seeing paused still false (so posting no
             * resume): look again now that paused is visible (seq_cst on
             * both sides: it sees paused, or we see its decrement).
             */
            if (!at_capacity(ep)) {
                set_listening(ep, true);
                continue;
            }
            return;
        }
        int fd = accept4(ep->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            /* EMFILE, ENFILE, ENOBUFS...: back off instead of spinning on a ready listener. */
            arm_backoff(ep);
            return;
        }
        ep->st.accepted++;
        csql__ep_peer peer;
        peer_of(ep, fd, &peer);
        if (csql__ep_accepted(ep, &peer) != 0) {
            csql__ep_abortive_close(fd, ep->tcp); /* refused by the application */
            continue;
        }
        if (ep->has_first) {
            ep->has_first = false;
            csql__fwd_remote first = ep->first;
            ep->first.conn = NULL;
            ep->first.ssl = NULL;
            ep->first.fd = -1;
            if (ep->one_shot) {
                stop_listening(ep); /* the socket and its directory go at once */
            }
            peer.accepted_us = 0; /* pre-dialled */
            csql__ep_forward(ep, ep->loop, fd, &peer, &first);
            continue;
        }
        csql__ep_dial(ep, csql__ep_pick_loop(ep), fd, &peer);
    }
}

static void ep_shut_on_loop(void *arg)
{
    csql_endpoint *ep = arg;
    if (ep->closed) {
        return;
    }
    ep->closed = true;
    stop_listening(ep);
    if (ep->has_first) {
        ep->has_first = false;
        csql__ep_remote_dispose(&ep->first);
    }
    csql__loop_member_remove(ep->loop, &ep->member);
}

static void ep_register_on_loop(void *arg)
{
    csql_endpoint *ep = arg;
    ep->lio = (csql__loop_io){.fd = ep->lfd, .fn = on_accept, .arg = ep};
    if (csql__loop_io_add(ep->loop, &ep->lio, EPOLLIN) == CSQL_OK) {
        ep->listening = true;
    }
    csql__loop_member_add(ep->loop, &ep->member);
}

/* ------------------------------------------------------------------ */
/* sockets (caller's thread)                                           */

static int make_private_dir(char *dir, size_t len)
{
    const char *base = getenv("TMPDIR");
    /* Leave room in sun_path for "/" and the socket name. */
    if (base == NULL || base[0] != '/' || strlen(base) > 40) {
        base = "/tmp";
    }
    int n = snprintf(dir, len, "%s/csql-XXXXXX", base);
    if (n < 0 || (size_t)n >= len) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "temporary directory path is too long");
    }
    if (mkdtemp(dir) == NULL) {
        return csql__error(CSQL_ERR_IO, "cannot create a private directory in %s: %s", base,
                           strerrordesc_np(errno));
    }
    if (chmod(dir, 0700) != 0) {
        int e = errno;
        rmdir(dir);
        return csql__error(CSQL_ERR_IO, "cannot set mode 0700 on %s: %s", dir,
                           strerrordesc_np(e));
    }
    return CSQL_OK;
}

/* A socket file left by a dead process refuses connections: remove it. A live one is an error. */
static void remove_stale_socket(const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(sa->sun_path, &st) != 0 || !S_ISSOCK(st.st_mode)) {
        return;
    }
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe < 0) {
        return;
    }
    if (connect(probe, (const struct sockaddr *)sa, sizeof(*sa)) != 0 && errno == ECONNREFUSED) {
        unlink(sa->sun_path);
    }
    close(probe);
}

static int listen_unix(csql_endpoint *ep, const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(ep->path, sizeof(ep->path), "%s/%s", ep->dir, name);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "unix socket path \"%s/%s\" is longer than %zu bytes", ep->dir, name,
                           sizeof(sa.sun_path) - 1);
    }
    memcpy(sa.sun_path, ep->path, (size_t)n + 1);
    if (!ep->private_dir) {
        remove_stale_socket(&sa);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return csql__error(CSQL_ERR_IO, "cannot create a unix socket: %s", strerrordesc_np(errno));
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        return csql__error(CSQL_ERR_IO, "cannot bind unix socket %s: %s", ep->path,
                           strerrordesc_np(e));
    }
    ep->unlink_on_close = true;
    /* Only this user may connect (the private directory already ensures it). */
    if (chmod(ep->path, 0600) != 0 || listen(fd, EP_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        unlink(ep->path);
        return csql__error(CSQL_ERR_IO, "cannot listen on unix socket %s: %s", ep->path,
                           strerrordesc_np(e));
    }
    ep->lfd = fd;
    return CSQL_OK;
}

static int listen_tcp(csql_endpoint *ep, const char *address, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, address, &s4->sin_addr) == 1) {
        if ((ntohl(s4->sin_addr.s_addr) >> 24) != 127) {
            return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                               "endpoint address \"%.64s\" is not a loopback address (127.0.0.0/8)",
                               address);
        }
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, address, &s6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr)) {
            return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                               "endpoint address \"%.64s\" is not the loopback address ::1",
                               address);
        }
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        sl = sizeof(*s6);
    } else {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "endpoint address \"%.64s\" is not an IP literal", address);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return csql__error(CSQL_ERR_IO, "cannot create a TCP socket: %s", strerrordesc_np(errno));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, EP_BACKLOG) != 0) {
        int e = errno;
        close(fd);
        return csql__error(CSQL_ERR_IO, "cannot listen on %s port %u: %s", address, port,
                           strerrordesc_np(e));
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        port = ntohs(ss.ss_family == AF_INET ? s4->sin_port : s6->sin6_port);
    }
    snprintf(ep->address, sizeof(ep->address), "%s", address);
    ep->port = port;
    ep->lfd = fd;
    return CSQL_OK;
}

/* A listening socket from the caller: learn what it is; ours to close, its file is not ours. */
static int adopt_listener(csql_endpoint *ep, int fd)
{
    int type = 0, listening = 0;
    socklen_t ol = sizeof(type);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ol) != 0 || type != SOCK_STREAM) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "csql_endpoint_open_fd: fd %d is not a stream socket", fd);
    }
    ol = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ol) != 0 || !listening ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "csql_endpoint_open_fd: socket %d is not listening (call listen first)",
                           fd);
    }
    if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *su = (const struct sockaddr_un *)&ss;
        size_t n = sl > offsetof(struct sockaddr_un, sun_path)
                       ? sl - offsetof(struct sockaddr_un, sun_path)
                       : 0;
        n = n < sizeof(ep->path) - 1 ? n : sizeof(ep->path) - 1;
        memcpy(ep->path, su->sun_path, n);
        ep->path[n] = '\0'; /* "" for an abstract or unnamed socket */
        snprintf(ep->dir, sizeof(ep->dir), "%s", ep->path);
        char *slash = strrchr(ep->dir, '/');
        if (slash != NULL) {
            *(slash == ep->dir ? slash + 1 : slash) = '\0';
        } else {
            ep->dir[0] = '\0';
        }
    } else if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        ep->tcp = true;
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &s4->sin_addr, ep->address, sizeof(ep->address));
            ep->port = ntohs(s4->sin_port);
        } else {
            inet_ntop(AF_INET6, &s6->sin6_addr, ep->address, sizeof(ep->address));
            ep->port = ntohs(s6->sin6_port);
        }
    } else {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "csql_endpoint_open_fd: socket %d is neither TCP nor Unix", fd);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        return csql__error(CSQL_ERR_IO, "csql_endpoint_open_fd: cannot make socket %d non-blocking",
                           fd);
    }
    ep->lfd = fd;
    return CSQL_OK;
}

/* ------------------------------------------------------------------ */
/* open / close                                                        */

static int check_options(const csql_endpoint_options *o)
{
    if (o == NULL) {
        return CSQL_OK;
    }
    if (o->version < 1 || o->version > CSQL_ENDPOINT_OPTIONS_VERSION) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "csql_endpoint_options.version is %u, expected 1..%u (use "
                           "CSQL_ENDPOINT_OPTIONS_INIT)",
                           o->version, CSQL_ENDPOINT_OPTIONS_VERSION);
    }
    if (o->buffer_size != 0 &&
        (o->buffer_size < CSQL__FWD_BUFFER_MIN || o->buffer_size > CSQL__FWD_BUFFER_MAX)) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "endpoint buffer_size %u is outside %u..%u bytes", o->buffer_size,
                           CSQL__FWD_BUFFER_MIN, CSQL__FWD_BUFFER_MAX);
    }
    const char *name = o->unix_socket_name;
    if (name != NULL && (name[0] == '\0' || strlen(name) > EP_SOCKET_NAME_MAX ||
                         strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
                         strcmp(name, "..") == 0)) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "unix_socket_name \"%.80s\" must be a plain file name of 1..%d bytes",
                           name, EP_SOCKET_NAME_MAX);
    }
    return CSQL_OK;
}

int csql__endpoint_open(csql_endpoint **out, const csql__endpoint_params *p)
{
    int rc;
    csql__fwd_remote first = {.fd = -1};
    if (p->first != NULL) {
        first = *p->first;
    }
    csql_endpoint *ep = NULL;
    if (out == NULL) {
        rc = csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_endpoint_open: out is NULL");
        goto fail;
    }
    *out = NULL;
    rc = check_options(p->opts);
    if (rc != CSQL_OK) {
        goto fail;
    }
    ep = calloc(1, sizeof(*ep));
    if (ep == NULL) {
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory for an endpoint");
        goto fail;
    }
    atomic_init(&ep->refs, 1);
    atomic_init(&ep->paused, false);
    atomic_init(&ep->resume_pending, false);
    atomic_init(&ep->active, 0);
    atomic_init(&ep->dials, 0);
    atomic_init(&ep->dial_failures, 0);
    atomic_init(&ep->closed_clean, 0);
    atomic_init(&ep->closed_error, 0);
    atomic_init(&ep->max_buffered, 0);
    pthread_mutex_init(&ep->conns_mu, NULL);
    ep->lfd = -1;
    ep->tio.fd = -1;
    ep->tio.fn = on_backoff;
    ep->tio.arg = ep;
    ep->tcp = p->tcp;
    ep->one_shot = p->one_shot;
    ep->first = first;
    ep->has_first = p->first != NULL;
    first.fd = -1; /* owned by ep now */
    first.conn = NULL;
    first.ssl = NULL;
    ep->dial = p->dial;
    ep->dial_async = p->dial_async;
    ep->dial_ctx = p->dial_ctx;
    ep->dial_ctx_free = p->dial_ctx_free;
    ep->member.close = ep_shut_on_loop;
    ep->member.arg = ep;
    const csql_endpoint_options *o = p->opts;
    ep->buffer_size = (o && o->buffer_size) ? o->buffer_size : CSQL__FWD_BUFFER_DEFAULT;
    ep->max_connections = o ? o->max_connections : 0;
    ep->on_error = o ? o->on_error : NULL;
    ep->on_event = (o && o->version >= 2) ? o->on_event : NULL; /* absent from version 1 */
    ep->userdata = o ? o->userdata : NULL;
    ep->st.buffer_cap = ep->buffer_size;

    if (p->adopt_fd) {
        rc = adopt_listener(ep, p->fd);
        if (rc != CSQL_OK && p->fd >= 0) {
            close(p->fd); /* ours even on failure */
        }
    } else if (p->tcp) {
        rc = listen_tcp(ep, p->address ? p->address : "127.0.0.1", p->port);
    } else {
        if (p->dir == NULL) {
            rc = make_private_dir(ep->dir, sizeof(ep->dir));
            ep->private_dir = rc == CSQL_OK;
        } else if (snprintf(ep->dir, sizeof(ep->dir), "%s", p->dir) >= (int)sizeof(ep->dir)) {
            rc = csql__error(CSQL_ERR_INVALID_ARGUMENT, "unix socket directory \"%.80s...\" is too long",
                             p->dir);
        } else {
            rc = CSQL_OK;
        }
        if (rc == CSQL_OK) {
            rc = listen_unix(ep, (o && o->unix_socket_name) ? o->unix_socket_name
                                                            : EP_SOCKET_NAME_DEFAULT);
        }
    }
    if (rc != CSQL_OK) {
        goto fail;
    }
    rc = csql__loop_acquire(p->loop_key, &ep->loop);
    if (rc != CSQL_OK) {
        goto fail;
    }
    ep->loops[0] = ep->loop;
    ep->nloops = 1;
    unsigned want = p->loops == 0 ? 1 : (p->loops > CSQL__EP_MAX_LOOPS ? CSQL__EP_MAX_LOOPS : p->loops);
    while (rc == CSQL_OK && ep->nloops < want) {
        rc = csql__loop_acquire_nth(p->loop_key, ep->nloops, &ep->loops[ep->nloops]);
        if (rc == CSQL_OK) {
            ep->nloops++;
        }
    }
    if (rc == CSQL_OK) {
        rc = csql__loop_call(ep->loop, ep_register_on_loop, ep);
    }
    if (rc == CSQL_OK && !ep->listening) {
        rc = csql__error(CSQL_ERR_INTERNAL, "cannot watch the endpoint socket");
        csql__loop_call(ep->loop, ep_shut_on_loop, ep);
    }
    if (rc != CSQL_OK) {
        /* Never registered with the loop: undo the socket here. */
        if (ep->lfd >= 0) {
            close(ep->lfd);
            ep->lfd = -1;
            if (ep->unlink_on_close) {
                unlink(ep->path);
            }
            if (ep->private_dir) {
                rmdir(ep->dir);
            }
        }
        csql__ep_unref(ep);
        return rc;
    }
    *out = ep;
    return CSQL_OK;

fail:
    if (ep != NULL) {
        if (ep->lfd >= 0) {
            close(ep->lfd);
            if (ep->unlink_on_close) {
                unlink(ep->path);
            }
        }
        if (ep->private_dir) {
            rmdir(ep->dir);
        }
        if (ep->has_first) {
            csql__ep_remote_dispose(&ep->first);
        }
        if (ep->dial_ctx_free != NULL) {
            ep->dial_ctx_free(ep->dial_ctx);
        }
        pthread_mutex_destroy(&ep->conns_mu);
        free(ep);
    } else {
        if (p->adopt_fd && p->fd >= 0) {
            close(p->fd);
        }
        if (p->first != NULL) {
            csql__ep_remote_dispose(&first);
        }
        if (p->dial_ctx_free != NULL) {
            p->dial_ctx_free(p->dial_ctx);
        }
    }
    return rc;
}

void csql_endpoint_close(csql_endpoint *ep)
{
    if (ep == NULL) {
        return;
    }
    /* CSQL_ERR_CLOSED: the loop was stopped under us and already shut the endpoint. */
    csql__loop_call(ep->loop, ep_shut_on_loop, ep);
    csql__ep_unref(ep);
}

const char *csql_endpoint_path(const csql_endpoint *ep)
{
    return (ep == NULL || ep->tcp) ? NULL : ep->path;
}

const char *csql_endpoint_dir(const csql_endpoint *ep)
{
    return (ep == NULL || ep->tcp) ? NULL : ep->dir;
}

uint16_t csql_endpoint_port(const csql_endpoint *ep)
{
    return (ep == NULL || !ep->tcp) ? 0 : ep->port;
}

const char *csql_endpoint_address(const csql_endpoint *ep)
{
    return (ep == NULL || !ep->tcp) ? NULL : ep->address;
}

typedef struct stats_call {
    csql_endpoint *ep;
    csql__loop *loop;
    csql__endpoint_stats *out;
} stats_call;

static void stats_on_loop(void *arg)
{
    stats_call *sc = arg;
    csql_endpoint *ep = sc->ep;
    *sc->out = ep->st;
    sc->out->dial_failures = atomic_load(&ep->dial_failures);
    sc->out->closed_clean = atomic_load(&ep->closed_clean);
    sc->out->closed_error = atomic_load(&ep->closed_error);
    sc->out->active = atomic_load(&ep->active);
    sc->out->listening = ep->listening && !ep->paused;
    sc->out->max_buffered = atomic_load(&ep->max_buffered);
}

static void live_buffered_on_loop(void *arg)
{
    stats_call *sc = arg;
    size_t live = csql__ep_conns_max_buffered(sc->ep, sc->loop);
    if (live > sc->out->max_buffered) {
        sc->out->max_buffered = live;
    }
}

int csql__endpoint_stats_get(csql_endpoint *ep, csql__endpoint_stats *out)
{
    stats_call sc = {ep, ep->loop, out};
    memset(out, 0, sizeof(*out));
    int rc = csql__loop_call(ep->loop, stats_on_loop, &sc);
    for (unsigned i = 0; rc == CSQL_OK && i < ep->nloops; i++) {
        sc.loop = ep->loops[i];
        rc = csql__loop_call(sc.loop, live_buffered_on_loop, &sc);
    }
    return rc;
}
