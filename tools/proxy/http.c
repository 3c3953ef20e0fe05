/* csql-proxy HTTP servers: health checks, /metrics and /quitquitquit (http.h). */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define HTTP_BACKLOG 64
#define HTTP_CONNECTION_LIMIT 64
#define HTTP_TIMEOUT_S 10
#define HTTP_STOP_GRACE_MS 1000

struct proxy_http {
    struct MHD_Daemon *d;
    proxy_http_routes routes;
    proxy_state *st;
    char what[32];
    char where[80];
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

void proxy_state_request_quit(proxy_state *st)
{
    atomic_store(&st->quit_requested, true);
    uint64_t one = 1;
    ssize_t w = write(st->wake_fd, &one, sizeof(one));
    (void)w; /* the counter cannot overflow in practice; the flag is what counts */
}

int proxy_health_answer(const proxy_state *st, const char *path, char *body, size_t cap)
{
    int phase = atomic_load(&st->phase);
    if (strcmp(path, "/liveness") == 0) {
        snprintf(body, cap, "ok");
        return MHD_HTTP_OK;
    }
    if (strcmp(path, "/startup") == 0) {
        /* Once started, /startup stays 200 (also while stopping), like the Auth Proxy's. */
        if (phase == PHASE_STARTING) {
            snprintf(body, cap, "error");
            return MHD_HTTP_SERVICE_UNAVAILABLE;
        }
        snprintf(body, cap, "ok");
        return MHD_HTTP_OK;
    }
    if (strcmp(path, "/readiness") == 0) {
        if (phase == PHASE_STARTING) {
            snprintf(body, cap, "proxy is not started");
            return MHD_HTTP_SERVICE_UNAVAILABLE;
        }
        if (phase == PHASE_STOPPING) {
            snprintf(body, cap, "proxy is shutting down");
            return MHD_HTTP_SERVICE_UNAVAILABLE;
        }
        int_fast64_t open = atomic_load(&st->open);
        if (st->max_connections > 0 && open >= 0 && (uint64_t)open >= st->max_connections) {
            snprintf(body, cap, "max connections reached (open = %" PRIdFAST64 ", max = %" PRIu64 ")",
                     open, st->max_connections);
            return MHD_HTTP_SERVICE_UNAVAILABLE;
        }
        snprintf(body, cap, "ok");
        return MHD_HTTP_OK;
    }
    snprintf(body, cap, "404 page not found");
    return MHD_HTTP_NOT_FOUND;
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
                               const char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, mode);
    if (r == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *body)
{
    return respond(c, status, "text/plain; charset=utf-8", body, strlen(body),
                   MHD_RESPMEM_MUST_COPY);
}

static enum MHD_Result serve_metrics(proxy_http *h, struct MHD_Connection *c)
{
    char *body = NULL;
    size_t len = 0;
    if (metrics_render(h->st->metrics, h->st->prometheus_namespace, &body, &len) != 0) {
        return text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    }
    return respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
                   MHD_RESPMEM_MUST_FREE);
}

static bool is_health_path(const char *url)
{
    return strcmp(url, "/startup") == 0 || strcmp(url, "/liveness") == 0 ||
           strcmp(url, "/readiness") == 0;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    (void)version;
    (void)upload_data;
    proxy_http *h = cls;
    static int marker;
    if (*con_cls == NULL) {
        *con_cls = &marker; /* headers only so far: answer once the body (if any) is in */
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* bodies are ignored */
        return MHD_YES;
    }
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (h->routes.quitquitquit && strcmp(url, "/quitquitquit") == 0) {
        if (!get && strcmp(method, "POST") != 0) {
            return text(c, MHD_HTTP_BAD_REQUEST, "use POST or GET");
        }
        if (!atomic_load(&h->st->quit_requested)) {
            plog_info("/quitquitquit received request");
        }
        proxy_state_request_quit(h->st);
        return text(c, MHD_HTTP_OK, "");
    }
    if (h->routes.health && is_health_path(url)) {
        if (!get) {
            return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET");
        }
        char body[160];
        int status = proxy_health_answer(h->st, url, body, sizeof(body));
        if (status != MHD_HTTP_OK && strcmp(url, "/liveness") != 0) {
            plog_debug("[Health Check] %s failed: %s", url + 1, body);
        }
        return text(c, (unsigned)status, body);
    }
    if (h->routes.metrics && strcmp(url, "/metrics") == 0) {
        if (!get) {
            return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET");
        }
        return serve_metrics(h, c);
    }
    return text(c, MHD_HTTP_NOT_FOUND, "404 page not found");
}

/* A listening socket on address:port; IPv4 first when a name has both. */
static int listen_on(const char *address, int port, char *where, size_t wlen, bool *v6, char *err,
                     size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ps[8];
    snprintf(ps, sizeof(ps), "%d", port);
    int gai = getaddrinfo(address, ps, &hints, &res);
    if (gai != 0) {
        return fail(err, errlen, "cannot resolve \"%s\": %s", address, gai_strerror(gai));
    }
    if (res == NULL) {
        return fail(err, errlen, "cannot resolve \"%s\": no addresses", address);
    }
    struct addrinfo *pick = res;
    for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    }
    int fd = socket(pick->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    int rc = -1;
    if (fd < 0) {
        fail(err, errlen, "socket: %s", strerrordesc_np(errno));
        goto out;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, pick->ai_addr, pick->ai_addrlen) != 0 || listen(fd, HTTP_BACKLOG) != 0) {
        fail(err, errlen, "cannot listen on %s port %d: %s", address, port, strerrordesc_np(errno));
        goto out;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    int bound = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
            bound = ntohs(s4->sin_port);
        } else {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
            bound = ntohs(s6->sin6_port);
        }
    }
    *v6 = pick->ai_family == AF_INET6;
    snprintf(where, wlen, *v6 ? "[%s]:%d" : "%s:%d", ip, bound);
    rc = fd;
    fd = -1;
out:
    if (fd >= 0) {
        close(fd);
    }
    freeaddrinfo(res);
    return rc;
}

int proxy_http_start(proxy_http **out, const char *what, const char *address, int port,
                     proxy_http_routes routes, proxy_state *st, char *err, size_t errlen)
{
    *out = NULL;
    proxy_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return fail(err, errlen, "%s: out of memory", what);
    }
    h->routes = routes;
    h->st = st;
    snprintf(h->what, sizeof(h->what), "%s", what);
    char why[200];
    bool v6 = false;
    int fd = listen_on(address, port, h->where, sizeof(h->where), &v6, why, sizeof(why));
    if (fd < 0) {
        free(h);
        return fail(err, errlen, "%s: %s", what, why);
    }
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | (v6 ? MHD_USE_IPv6 : 0);
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, h, MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTION_LIMIT,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S,
                            MHD_OPTION_END);
    if (h->d == NULL) {
        close(fd);
        free(h);
        return fail(err, errlen, "%s: cannot start the HTTP server on %s", what, address);
    }
    *out = h;
    return 0;
}

const char *proxy_http_where(const proxy_http *h)
{
    return h->where;
}

void proxy_http_stop(proxy_http *h)
{
    if (h == NULL) {
        return;
    }
    /*
     * Stop accepting, then give answers in flight (the 200 of /quitquitquit
     * that started this shutdown) up to HTTP_STOP_GRACE_MS to go out.
     */
    MHD_socket lfd = MHD_quiesce_daemon(h->d);
    for (int waited = 0; waited < HTTP_STOP_GRACE_MS; waited += 10) {
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (info == NULL || info->num_connections == 0) {
            break;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(h->d);
    if (lfd != MHD_INVALID_SOCKET) {
        close(lfd);
    }
    free(h);
}
