/* One bounded HTTP/1.0 request (http_client.h). */
#include "http_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for `events` on fd until the deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0) {
            return 0;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        return r < 0 ? -1 : r;
    }
}

static int connect_to(const char *host, int port, long long deadline, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ps[8];
    snprintf(ps, sizeof(ps), "%d", port);
    int gai = getaddrinfo(host, ps, &hints, &res);
    if (gai != 0) {
        return fail(err, errlen, "cannot resolve \"%s\": %s", host, gai_strerror(gai));
    }
    int fd = -1;
    int e = 0;
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            e = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            e = errno;
        } else if (wait_fd(fd, POLLOUT, deadline) != 1) {
            e = ETIMEDOUT;
        } else {
            socklen_t el = sizeof(e);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
        }
        if (e != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        return fail(err, errlen, "cannot connect to %s port %d: %s", host, port,
                    strerrordesc_np(e ? e : ECONNREFUSED));
    }
    return fd;
}

int proxy_http_request(const char *host, int port, const char *method, const char *path,
                       int timeout_ms, char *err, size_t errlen)
{
    long long deadline = now_ms() + timeout_ms;
    int fd = connect_to(host, port, deadline, err, errlen);
    if (fd < 0) {
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.0\r\nHost: %s:%d\r\nUser-Agent: csql-proxy\r\n"
                     "Content-Length: 0\r\n\r\n",
                     method, path, host, port);
    int rc = -1;
    size_t off = 0;
    while (off < (size_t)n) {
        if (wait_fd(fd, POLLOUT, deadline) != 1) {
            fail(err, errlen, "timed out sending to %s port %d", host, port);
            goto out;
        }
        ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            fail(err, errlen, "send to %s port %d: %s", host, port, strerrordesc_np(errno));
            goto out;
        }
        off += w > 0 ? (size_t)w : 0;
    }
    char buf[64];
    size_t got = 0;
    while (got < sizeof(buf) - 1 && memchr(buf, '\n', got) == NULL) {
        if (wait_fd(fd, POLLIN, deadline) != 1) {
            fail(err, errlen, "timed out waiting for %s port %d", host, port);
            goto out;
        }
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r == 0) {
            break;
        }
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            fail(err, errlen, "receive from %s port %d: %s", host, port, strerrordesc_np(errno));
            goto out;
        }
        got += r > 0 ? (size_t)r : 0;
    }
    buf[got] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/%*d.%*d %3d", &status) != 1 || status < 100 || status > 599) {
        fail(err, errlen, "%s port %d did not answer HTTP", host, port);
        goto out;
    }
    rc = status;
out:
    close(fd);
    return rc;
}
