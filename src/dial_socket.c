/*
 * The network half of a dial: resolve, non-blocking TCP connect to each
 * address until one answers, socket options, the TLS handshake and the
 * optional metadata exchange, all within one monotonic deadline.
 */
#include "dial_socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "csql/version.h"
#include "error.h"
#include "mdx.h"
#include "sockbio.h"
#include "tls.h"
#include "util/clock.h"

#define MAX_ADDRESSES 16
#define MDX_HEADER_LEN 12
#define MDX_MSG_MAX 512
#define KEEPALIVE_PROBES 3
#define WHERE_MAX 600

/* Everything the steps need to name what they were doing in a message. */
typedef struct dial_ctx {
    const csql__certset *cs;
    const csql__instance_name *name;
    const csql__dial_params *p;
    char where[WHERE_MAX]; /* "host:port (instance p:r:i)" */
    int64_t start_ms;
} dial_ctx;

static int timed_out(const dial_ctx *d, const char *step)
{
    ERR_clear_error();
    return csql__error(CSQL_ERR_TIMEOUT, "%s with %s timed out after %lld ms", step, d->where,
                       (long long)(csql__mono_ms() - d->start_ms));
}

/* Wait for `events` on fd until the deadline: 1 ready, 0 deadline passed, -1 poll failed. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = csql__ms_left(deadline_ms);
        if (left <= 0) {
            return 0;
        }
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0) {
            return 1;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
    }
}

/* ---- TCP ---- */

int csql__dial_resolve(const char *host, uint16_t port_no, const char *where,
                       struct addrinfo **res)
{
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)port_no);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    /* No AI_ADDRCONFIG: it hides ::1 on hosts without a global IPv6 address. */
    hints.ai_flags = AI_NUMERICSERV;
    unsigned char probe[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, host, probe) == 1 || inet_pton(AF_INET6, host, probe) == 1) {
        hints.ai_flags |= AI_NUMERICHOST; /* an IP literal: no resolver round trip */
    }
    /*
     * getaddrinfo cannot be bounded by our deadline; names are only PSC DNS
     * names, resolved by the local resolver. The deadline is checked after.
     */
    int rc = getaddrinfo(host, port, &hints, res);
    if (rc != 0) {
        *res = NULL;
        return csql__error(CSQL_ERR_DNS, "could not resolve %s: %s", where,
                           rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    }
    return CSQL_OK;
}

/* One non-blocking connect: 0 with *out set, a csql error (TIMEOUT), or 1 to try the next one. */
static int connect_one(dial_ctx *d, const struct addrinfo *ai, int *out, int *last_errno)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        *last_errno = errno;
        return 1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            *last_errno = errno;
            close(fd);
            return 1;
        }
        int w = wait_fd(fd, POLLOUT, d->p->deadline_ms);
        if (w == 0) {
            close(fd);
            return timed_out(d, "TCP connect");
        }
        int err = 0;
        socklen_t len = sizeof(err);
        if (w < 0) {
            err = errno;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
        if (err != 0) {
            *last_errno = err;
            close(fd);
            return 1;
        }
    }
    *out = fd;
    return CSQL_OK;
}

static int tcp_connect(dial_ctx *d, int *out)
{
    struct addrinfo *res = NULL;
    int rc = csql__dial_resolve(d->p->host, d->p->port, d->where, &res);
    if (rc != CSQL_OK) {
        return rc;
    }
    int last_errno = 0;
    rc = 1;
    int tries = 0;
    for (const struct addrinfo *ai = res; ai != NULL && tries < MAX_ADDRESSES; ai = ai->ai_next) {
        if (csql__ms_left(d->p->deadline_ms) <= 0) {
            rc = timed_out(d, "TCP connect");
            break;
        }
        tries++;
        rc = connect_one(d, ai, out, &last_errno);
        if (rc <= 0) {
            break;
        }
    }
    freeaddrinfo(res);
    if (rc == 1) {
        rc = csql__error(CSQL_ERR_CONNECT, "TCP connect to %s failed: %s", d->where,
                         last_errno ? strerror(last_errno) : "no usable address");
    }
    return rc;
}

/* Best effort: a socket without these still works, only less well. */
void csql__dial_set_socket_options(int fd, uint32_t keepalive_s)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (keepalive_s == 0) {
        return;
    }
    int idle = keepalive_s > INT_MAX ? INT_MAX : (int)keepalive_s;
    int probes = KEEPALIVE_PROBES;
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
}

/* ---- TLS ---- */

enum { OP_CONNECT, OP_READ, OP_WRITE };

/*
 * Run one SSL operation to completion (or until the deadline), waiting on the
 * socket as OpenSSL asks. Returns 1 done (*n = bytes for read/write), 0 the
 * deadline passed, or -1 failed with *ssl_err = SSL_get_error() and *sys_errno.
 */
static int ssl_op(SSL *ssl, int fd, int op, void *buf, size_t len, int64_t deadline_ms, size_t *n,
                  int *ssl_err, int *sys_errno)
{
    for (;;) {
        errno = 0;
        int r;
        size_t done = 0;
        if (op == OP_CONNECT) {
            r = SSL_connect(ssl);
        } else if (op == OP_READ) {
            r = SSL_read_ex(ssl, buf, len, &done);
        } else {
            r = SSL_write_ex(ssl, buf, len, &done);
        }
        int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, r);
        *sys_errno = errno;
        if (r == 1) {
            *n = done;
            return 1;
        }
        short events;
        if (err == SSL_ERROR_WANT_READ) {
            events = POLLIN;
        } else if (err == SSL_ERROR_WANT_WRITE) {
            events = POLLOUT;
        } else {
            *ssl_err = err;
            return -1;
        }
        int w = wait_fd(fd, events, deadline_ms);
        if (w <= 0) {
            if (w < 0) {
                *ssl_err = SSL_ERROR_SYSCALL;
                *sys_errno = errno;
                return -1;
            }
            return 0;
        }
    }
}

/* A failed SSL op: the TLS reason, or for a bare socket failure the errno / EOF. */
int csql__dial_ssl_failure(SSL *ssl, int code, int ssl_err, int sys_errno, const char *what)
{
    int openssl_has_reason = ERR_peek_error() != 0;
    if (ssl_err == SSL_ERROR_SYSCALL && !openssl_has_reason &&
        SSL_get_verify_result(ssl) == X509_V_OK) {
        ERR_clear_error();
        return csql__error(code, "%s: %s", what,
                           sys_errno ? strerror(sys_errno) : "the server closed the connection");
    }
    return csql__tls_raise(ssl, code, what);
}

int csql__dial_tls_new(const csql__certset *cs, const csql__instance_name *name, int fd,
                       const char *what, SSL **out)
{
    const csql__connect_info *info = &cs->info;
    *out = NULL;
    char cn[2 * CSQL__INSTANCE_NAME_MAX];
    int rc = csql__instance_name_cn(name, cn, sizeof(cn));
    if (rc != CSQL_OK) {
        return rc;
    }
    SSL *ssl = SSL_new(cs->ctx);
    if (ssl == NULL) {
        ERR_clear_error();
        return csql__error(CSQL_ERR_NOMEM, "%s: could not create the TLS connection", what);
    }
    /* A clean TCP EOF reads as end of stream rather than as a TLS error. */
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Our socket BIO writes with MSG_NOSIGNAL: no SIGPIPE for the application. */
    BIO *bio = csql__sockbio_new(fd);
    if (bio == NULL) {
        ERR_clear_error();
        rc = csql__error(CSQL_ERR_NOMEM, "%s: could not create the socket BIO", what);
        goto fail;
    }
    SSL_set_bio(ssl, bio, bio);
    if (info->dns_name != NULL && info->dns_name[0] != '\0' &&
        SSL_set_tlsext_host_name(ssl, info->dns_name) != 1) {
        rc = csql__tls_raise(ssl, CSQL_ERR_INTERNAL, what);
        goto fail;
    }
    rc = csql__tls_expect(ssl, info->dns_name, cn);
    if (rc != CSQL_OK) {
        goto fail;
    }
    *out = ssl;
    return CSQL_OK;
fail:
    SSL_free(ssl);
    return rc;
}

int csql__dial_tls_verified(SSL *ssl, const char *what)
{
    /* Belt and braces: the callback already refused anything else. */
    if (SSL_get_verify_result(ssl) != X509_V_OK || SSL_get0_peer_certificate(ssl) == NULL) {
        int rc = csql__tls_raise(ssl, CSQL_ERR_TLS_VERIFY, what);
        if (rc != CSQL_ERR_TLS_VERIFY) {
            rc = csql__error(CSQL_ERR_TLS_VERIFY, "%s: the server sent no certificate", what);
        }
        return rc;
    }
    return CSQL_OK;
}

static int tls_handshake(dial_ctx *d, int fd, SSL **out)
{
    char what[WHERE_MAX + 32];
    snprintf(what, sizeof(what), "TLS handshake with %s", d->where);
    SSL *ssl = NULL;
    int rc = csql__dial_tls_new(d->cs, d->name, fd, what, &ssl);
    if (rc != CSQL_OK) {
        return rc;
    }
    size_t n;
    int ssl_err = 0;
    int sys_errno = 0;
    int r = ssl_op(ssl, fd, OP_CONNECT, NULL, 0, d->p->deadline_ms, &n, &ssl_err, &sys_errno);
    if (r == 0) {
        rc = timed_out(d, "TLS handshake");
        goto fail;
    }
    if (r < 0) {
        rc = csql__dial_ssl_failure(ssl, CSQL_ERR_TLS_HANDSHAKE, ssl_err, sys_errno, what);
        goto fail;
    }
    rc = csql__dial_tls_verified(ssl, what);
    if (rc != CSQL_OK) {
        goto fail;
    }
    *out = ssl;
    return CSQL_OK;
fail:
    SSL_free(ssl);
    return rc;
}

/* ---- metadata exchange (REFERENCE §7) ---- */

static void printable_copy(char *dst, const char *src)
{
    size_t i = 0;
    for (; src[i] != '\0'; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[i] = '\0';
}

/* Read exactly len bytes (never more: database bytes may follow the answer). */
static int mdx_read(dial_ctx *d, SSL *ssl, int fd, unsigned char *buf, size_t len)
{
    char what[WHERE_MAX + 40];
    snprintf(what, sizeof(what), "metadata exchange with %s", d->where);
    size_t got = 0;
    /* Each round reads at least one byte or ends the loop: bounded by len. */
    while (got < len) {
        size_t n = 0;
        int ssl_err = 0;
        int sys_errno = 0;
        int r = ssl_op(ssl, fd, OP_READ, buf + got, len - got, d->p->deadline_ms, &n, &ssl_err,
                       &sys_errno);
        if (r == 0) {
            return timed_out(d, "metadata exchange");
        }
        if (r < 0) {
            if (ssl_err == SSL_ERROR_ZERO_RETURN) {
                ERR_clear_error();
                return csql__error(CSQL_ERR_MDX,
                                   "%s: the server closed the connection before answering", what);
            }
            /* A TLS 1.3 server refusing our certificate says so here: a handshake failure. */
            return csql__dial_ssl_failure(ssl, CSQL_ERR_TLS_HANDSHAKE, ssl_err, sys_errno, what);
        }
        got += n;
    }
    return CSQL_OK;
}

int csql__dial_mdx_request(const char *user_agent, unsigned char *buf, size_t cap,
                           const char *what)
{
    char default_ua[64];
    snprintf(default_ua, sizeof(default_ua), "csql/%s", CSQL_VERSION_STRING);
    int len = csql__mdx_encode_request(user_agent ? user_agent : default_ua, CSQL__MDX_PROTO_TLS,
                                       buf, cap);
    if (len < 0) {
        return csql__error(CSQL_ERR_INTERNAL, "%s: the request does not fit in a frame", what);
    }
    return len;
}

int csql__dial_mdx_header(const unsigned char *hdr, size_t *body, const char *what)
{
    int status = 0;
    char msg[MDX_MSG_MAX];
    if (csql__mdx_decode_response(hdr, MDX_HEADER_LEN, &status, msg, sizeof(msg)) < 0) {
        return csql__error(CSQL_ERR_MDX, "%s: the server's answer is not a metadata exchange frame",
                           what);
    }
    *body = (size_t)hdr[8] << 24 | (size_t)hdr[9] << 16 | (size_t)hdr[10] << 8 | hdr[11];
    return CSQL_OK;
}

int csql__dial_mdx_verdict(const unsigned char *frame, size_t len, const char *what)
{
    int status = 0;
    char msg[MDX_MSG_MAX];
    if (csql__mdx_decode_response(frame, len, &status, msg, sizeof(msg)) <= 0) {
        return csql__error(CSQL_ERR_MDX, "%s: the server's answer is malformed", what);
    }
    if (status == CSQL__MDX_OK) {
        return CSQL_OK;
    }
    char shown[MDX_MSG_MAX];
    printable_copy(shown, msg);
    if (status == CSQL__MDX_ERROR) {
        return csql__error(CSQL_ERR_MDX, "%s: refused by the server: %s", what,
                           shown[0] ? shown : "(no message)");
    }
    return csql__error(CSQL_ERR_MDX, "%s: unexpected status %d from the server", what, status);
}

static int mdx_exchange(dial_ctx *d, SSL *ssl, int fd)
{
    char what[WHERE_MAX + 40];
    snprintf(what, sizeof(what), "metadata exchange with %s", d->where);
    size_t cap = MDX_HEADER_LEN + CSQL__MDX_MAX_BODY;
    unsigned char *buf = malloc(cap);
    if (buf == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "%s: out of memory", what);
    }
    int rc = csql__dial_mdx_request(d->p->user_agent, buf, cap, what);
    if (rc < 0) {
        goto out;
    }
    size_t n;
    int ssl_err = 0;
    int sys_errno = 0;
    int r = ssl_op(ssl, fd, OP_WRITE, buf, (size_t)rc, d->p->deadline_ms, &n, &ssl_err,
                   &sys_errno);
    if (r == 0) {
        rc = timed_out(d, "metadata exchange");
        goto out;
    }
    if (r < 0) {
        rc = csql__dial_ssl_failure(ssl, CSQL_ERR_TLS_HANDSHAKE, ssl_err, sys_errno, what);
        goto out;
    }
    rc = mdx_read(d, ssl, fd, buf, MDX_HEADER_LEN);
    if (rc != CSQL_OK) {
        goto out;
    }
    size_t body = 0;
    rc = csql__dial_mdx_header(buf, &body, what);
    if (rc != CSQL_OK) {
        goto out;
    }
    rc = mdx_read(d, ssl, fd, buf + MDX_HEADER_LEN, body);
    if (rc != CSQL_OK) {
        goto out;
    }
    rc = csql__dial_mdx_verdict(buf, MDX_HEADER_LEN + body, what);
out:
    free(buf);
    return rc;
}

/* ---- entry point ---- */

void csql__dial_where(const char *host, uint16_t port, const csql__instance_name *name, char *buf,
                      size_t len)
{
    int v6 = strchr(host, ':') != NULL;
    snprintf(buf, len, "%s%.255s%s:%u (instance %s)", v6 ? "[" : "", host, v6 ? "]" : "",
             (unsigned)port, name->full);
}

int csql__dial_socket(const csql__certset *cs, const csql__instance_name *name,
                      const csql__dial_params *p, int *fd_out, SSL **ssl_out)
{
    if (cs == NULL || cs->ctx == NULL || name == NULL || p == NULL || p->host == NULL ||
        p->host[0] == '\0' || p->port == 0 || fd_out == NULL || ssl_out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "dial: certificate set, instance, host "
                                                      "and port are required");
    }
    *fd_out = -1;
    *ssl_out = NULL;
    dial_ctx d = {.cs = cs, .name = name, .p = p, .start_ms = csql__mono_ms()};
    csql__dial_where(p->host, p->port, name, d.where, sizeof(d.where));
    if (csql__ms_left(p->deadline_ms) <= 0) {
        return timed_out(&d, "dial");
    }
    int fd = -1;
    SSL *ssl = NULL;
    int rc = tcp_connect(&d, &fd);
    if (rc != CSQL_OK) {
        goto fail;
    }
    csql__dial_set_socket_options(fd, p->keepalive_s);
    rc = tls_handshake(&d, fd, &ssl);
    if (rc != CSQL_OK) {
        goto fail;
    }
    if (p->mdx && cs->info.mdx_supported) {
        rc = mdx_exchange(&d, ssl, fd);
        if (rc != CSQL_OK) {
            goto fail;
        }
    }
    *fd_out = fd;
    *ssl_out = ssl;
    return CSQL_OK;
fail:
    SSL_free(ssl);
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}
