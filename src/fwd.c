/*
 * One forwarded connection: a local stream socket <-> a remote TLS (or plain)
 * stream, pumped on the event loop with edge-triggered readiness flags and
 * two bounded rings. See fwd.h for the contract.
 */
#include "fwd.h"
#include "conn_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "error.h"
#include "util/ring.h"

/* Bytes moved in one pump before yielding to other connections (fairness). */
#define FWD_PUMP_BUDGET (512u * 1024u)
/* Bound on pump rounds per wakeup; each round moves at most one span per step. */
#define FWD_PUMP_ROUNDS 64

/*
 * Report a TLS failure of a conn to its cache entry (drop the certset: CA
 * rotation). Provided by conn.c when available; weak so that the engine links
 * before it exists (then the report is skipped).
 */

enum { WANT_NONE = 0, WANT_RD = 1, WANT_WR = 2 };

struct csql__fwd {
    csql__loop *loop;
    csql__loop_io lio; /* local */
    csql__loop_io rio; /* remote */
    csql__loop_member member;
    csql__loop_task resume; /* more work after yielding, or the final free */
    csql__fwd_remote r;
    int lfd;
    csql__ring up;   /* local -> remote */
    csql__ring down; /* remote -> local */
    csql__fwd_opts opts;
    csql__fwd_stats st;

    /* edge-triggered readiness, cleared when an operation would block */
    bool l_rd, l_wr, r_rd, r_wr;
    /* what the last blocked TLS operation of each kind waits for */
    uint8_t up_wants, down_wants, shut_wants;

    bool l_eof;     /* the driver finished sending */
    bool up_shut;   /* close_notify + SHUT_WR sent to the remote */
    bool r_eof;     /* the server finished sending */
    bool down_shut; /* SHUT_WR sent to the driver */
    bool closed;    /* both fds closed; free pending */
};

static atomic_int g_live;

int csql__fwd_live_count(void)
{
    return atomic_load(&g_live);
}

/* ------------------------------------------------------------------ */
/* teardown                                                            */

static void fwd_free(void *arg)
{
    csql__fwd *f = arg;
    csql__loop *loop = f->loop;
    if (f->opts.on_close != NULL) {
        f->opts.on_close(f->opts.arg, &f->st);
    }
    csql__ring_dispose(&f->up);
    csql__ring_dispose(&f->down);
    free(f);
    atomic_fetch_sub(&g_live, 1);
    csql__loop_release(loop);
}

static void close_remote(csql__fwd *f, bool tls_failed)
{
    if (f->r.conn != NULL) {
        if (tls_failed) {
            csql__conn_report_tls_error(f->r.conn);
        }
        csql_conn_close(f->r.conn);
    } else {
        if (f->r.ssl != NULL) {
            SSL_free(f->r.ssl);
        }
        if (f->r.fd >= 0) {
            close(f->r.fd);
        }
    }
    f->r.conn = NULL;
    f->r.ssl = NULL;
    f->r.fd = -1;
}

/* Close both sides now; the memory goes after the current batch of events. */
static void fwd_close(csql__fwd *f, bool abortive_local, bool tls_failed)
{
    if (f->closed) {
        return;
    }
    f->closed = true;
    csql__loop_io_del(f->loop, &f->lio);
    csql__loop_io_del(f->loop, &f->rio);
    csql__loop_member_remove(f->loop, &f->member);
    if (abortive_local && f->opts.local_is_tcp) {
        /* A reset tells a TCP peer the stream did not end cleanly. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(f->lfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(f->lfd);
    f->lfd = -1;
    close_remote(f, tls_failed);
    f->resume.fn = fwd_free;
    f->resume.arg = f;
    if (f->resume.queued) {
        return; /* already queued as a resume: it will find fn == fwd_free */
    }
    csql__loop_later(f->loop, &f->resume);
}

/* Best effort: hand the driver what the server already sent, without blocking. */
static void flush_down_once(csql__fwd *f)
{
    for (int i = 0; i < 2; i++) {
        const uint8_t *p;
        size_t n = csql__ring_read_span(&f->down, &p);
        if (n == 0) {
            return;
        }
        ssize_t w = send(f->lfd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w <= 0) {
            return;
        }
        csql__ring_consume(&f->down, (size_t)w);
        f->st.down_bytes += (uint64_t)w;
    }
}

/* The remote failed (TLS or socket error): close the driver's side too. */
static void fail_remote(csql__fwd *f, int code, bool tls_failed, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail_remote(csql__fwd *f, int code, bool tls_failed, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    f->st.error = code;
    vsnprintf(f->st.message, sizeof(f->st.message), fmt, ap);
    va_end(ap);
    flush_down_once(f);
    fwd_close(f, true, tls_failed);
}

/* The driver's side failed: tell the server with close_notify (if it can take it) and close. */
static void fail_local(csql__fwd *f, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_local(csql__fwd *f, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    f->st.error = code;
    vsnprintf(f->st.message, sizeof(f->st.message), fmt, ap);
    va_end(ap);
    if (f->r.ssl != NULL && !f->up_shut) {
        ERR_clear_error();
        SSL_shutdown(f->r.ssl); /* one non-blocking attempt */
        ERR_clear_error();
    }
    fwd_close(f, true, false);
}

void csql__fwd_abort(csql__fwd *f)
{
    if (f->closed) {
        return;
    }
    fail_local(f, CSQL_ERR_CLOSED, "%s", "forwarded connection aborted (endpoint or loop closing)");
}

static void fwd_member_close(void *arg)
{
    csql__fwd_abort(arg);
}

/* ------------------------------------------------------------------ */
/* TLS helpers                                                         */

static bool may_try(uint8_t wants, bool rd, bool wr)
{
    return wants == WANT_NONE || (wants == WANT_RD && rd) || (wants == WANT_WR && wr);
}

/* Note what a blocked TLS call waits for; clear the readiness it found missing. */
static void tls_blocked(csql__fwd *f, int sslerr, uint8_t *wants)
{
    if (sslerr == SSL_ERROR_WANT_READ) {
        *wants = WANT_RD;
        f->r_rd = false;
    } else {
        *wants = WANT_WR;
        f->r_wr = false;
    }
}

/* A short description of the OpenSSL error at the top of the queue (clears the queue). */
static const char *tls_reason(char *buf, size_t len, int sslerr)
{
    unsigned long e = ERR_peek_last_error();
    if (e != 0) {
        ERR_error_string_n(e, buf, len);
    } else if (sslerr == SSL_ERROR_SYSCALL && errno != 0) {
        snprintf(buf, len, "%s", strerrordesc_np(errno));
    } else {
        snprintf(buf, len, "SSL error %d", sslerr);
    }
    ERR_clear_error();
    return buf;
}

/*
 * A TLS call on the server connection failed (not WANT_*). A socket failure
 * (the server or the network dropped the connection: EPIPE, ECONNRESET) is
 * CSQL_ERR_IO and says nothing about the certificate; only a TLS-level
 * failure (an alert, a bad record) is reported to the cache as one, which
 * drops the certificate and refreshes.
 */
static void remote_tls_failed(csql__fwd *f, int sslerr, int sys_errno, const char *what)
{
    if (sslerr == SSL_ERROR_ZERO_RETURN) {
        /* Writing after the server's end of stream (close_notify, or a bare FIN taken as one). */
        ERR_clear_error();
        fail_remote(f, CSQL_ERR_IO, false, "server connection: %s failed: the server closed the "
                                           "connection",
                    what);
        return;
    }
    if (sslerr == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        fail_remote(f, CSQL_ERR_IO, false, "server connection: %s failed: %s", what,
                    sys_errno != 0 ? strerrordesc_np(sys_errno) : "connection closed unexpectedly");
        return;
    }
    char why[160];
    fail_remote(f, CSQL_ERR_TLS_IO, true, "server connection: TLS %s failed: %s", what,
                tls_reason(why, sizeof(why), sslerr));
}

/* OpenSSL 3 reports a TCP FIN without close_notify as an error; we treat it as the end. */
static bool is_unexpected_eof(int sslerr)
{
    unsigned long e = ERR_peek_error();
    return sslerr == SSL_ERROR_SSL && ERR_GET_LIB(e) == ERR_LIB_SSL &&
           ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

/* ------------------------------------------------------------------ */
/* the six steps of a pump; each returns bytes moved or 1 for other progress */

static size_t step_local_read(csql__fwd *f)
{
    if (!f->l_rd || f->l_eof || csql__ring_space(&f->up) == 0) {
        return 0;
    }
    uint8_t *p;
    size_t span;
    if (csql__ring_write_span(&f->up, &p, &span) != CSQL_OK) {
        fail_local(f, CSQL_ERR_NOMEM, "%s", "out of memory for a forwarding buffer");
        return 0;
    }
    ssize_t n = recv(f->lfd, p, span, 0);
    if (n > 0) {
        csql__ring_commit(&f->up, (size_t)n);
        if (csql__ring_len(&f->up) > f->st.up_max_buffered) {
            f->st.up_max_buffered = csql__ring_len(&f->up);
        }
        return (size_t)n;
    }
    if (n == 0) {
        f->l_eof = true;
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        f->l_rd = false;
        return 0;
    }
    if (errno == EINTR) {
        return 1;
    }
    fail_local(f, CSQL_ERR_IO, "local connection: read failed: %s", strerrordesc_np(errno));
    return 0;
}

static size_t step_remote_write(csql__fwd *f)
{
    const uint8_t *p;
    size_t n = csql__ring_read_span(&f->up, &p);
    if (n == 0 || !may_try(f->up_wants, f->r_rd, f->r_wr)) {
        return 0;
    }
    size_t put = 0;
    if (f->r.ssl == NULL) {
        ssize_t w = send(f->r.fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                f->up_wants = WANT_WR;
                f->r_wr = false;
                return 0;
            }
            if (errno == EINTR) {
                return 1;
            }
            fail_remote(f, CSQL_ERR_IO, false, "server connection: write failed: %s",
                        strerrordesc_np(errno));
            return 0;
        }
        put = (size_t)w;
    } else {
        ERR_clear_error();
        errno = 0;
        if (SSL_write_ex(f->r.ssl, p, n, &put) != 1) {
            int sys_errno = errno;
            int e = SSL_get_error(f->r.ssl, 0);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                tls_blocked(f, e, &f->up_wants);
                return 0;
            }
            remote_tls_failed(f, e, sys_errno, "write");
            return 0;
        }
    }
    f->up_wants = WANT_NONE;
    csql__ring_consume(&f->up, put);
    f->st.up_bytes += put;
    return put;
}

static size_t step_up_shutdown(csql__fwd *f)
{
    if (!f->l_eof || f->up_shut || csql__ring_len(&f->up) != 0 ||
        !may_try(f->shut_wants, f->r_rd, f->r_wr)) {
        return 0;
    }
    if (f->r.ssl != NULL) {
        ERR_clear_error();
        errno = 0;
        int rc = SSL_shutdown(f->r.ssl);
        if (rc < 0) {
            int sys_errno = errno;
            int e = SSL_get_error(f->r.ssl, rc);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                tls_blocked(f, e, &f->shut_wants);
                return 0;
            }
            remote_tls_failed(f, e, sys_errno, "close_notify");
            return 0;
        }
    }
    f->shut_wants = WANT_NONE;
    shutdown(f->r.fd, SHUT_WR);
    f->up_shut = true;
    return 1;
}

static size_t step_remote_read(csql__fwd *f)
{
    if (f->r_eof || csql__ring_space(&f->down) == 0 || !may_try(f->down_wants, f->r_rd, f->r_wr)) {
        return 0;
    }
    uint8_t *p;
    size_t span;
    if (csql__ring_write_span(&f->down, &p, &span) != CSQL_OK) {
        fail_local(f, CSQL_ERR_NOMEM, "%s", "out of memory for a forwarding buffer");
        return 0;
    }
    size_t got = 0;
    if (f->r.ssl == NULL) {
        ssize_t n = recv(f->r.fd, p, span, 0);
        if (n == 0) {
            f->r_eof = true;
            return 1;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                f->down_wants = WANT_RD;
                f->r_rd = false;
                return 0;
            }
            if (errno == EINTR) {
                return 1;
            }
            fail_remote(f, CSQL_ERR_IO, false, "server connection: read failed: %s",
                        strerrordesc_np(errno));
            return 0;
        }
        got = (size_t)n;
    } else {
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(f->r.ssl, p, span, &got) != 1) {
            int sys_errno = errno;
            int e = SSL_get_error(f->r.ssl, 0);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                tls_blocked(f, e, &f->down_wants);
                return 0;
            }
            if (e == SSL_ERROR_ZERO_RETURN || is_unexpected_eof(e)) {
                ERR_clear_error();
                f->r_eof = true;
                return 1;
            }
            remote_tls_failed(f, e, sys_errno, "read");
            return 0;
        }
    }
    f->down_wants = WANT_NONE;
    csql__ring_commit(&f->down, got);
    if (csql__ring_len(&f->down) > f->st.down_max_buffered) {
        f->st.down_max_buffered = csql__ring_len(&f->down);
    }
    return got;
}

static size_t step_local_write(csql__fwd *f)
{
    const uint8_t *p;
    size_t n = csql__ring_read_span(&f->down, &p);
    if (n == 0 || !f->l_wr) {
        return 0;
    }
    ssize_t w = send(f->lfd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            f->l_wr = false;
            return 0;
        }
        if (errno == EINTR) {
            return 1;
        }
        fail_local(f, CSQL_ERR_IO, "local connection: write failed: %s", strerrordesc_np(errno));
        return 0;
    }
    csql__ring_consume(&f->down, (size_t)w);
    f->st.down_bytes += (uint64_t)w;
    return (size_t)w;
}

static size_t step_down_shutdown(csql__fwd *f)
{
    if (!f->r_eof || f->down_shut || csql__ring_len(&f->down) != 0) {
        return 0;
    }
    shutdown(f->lfd, SHUT_WR);
    f->down_shut = true;
    return 1;
}

/* ------------------------------------------------------------------ */
/* the pump                                                            */

static void pump(csql__fwd *f)
{
    size_t moved = 0;
    for (int round = 0; round < FWD_PUMP_ROUNDS && !f->closed; round++) {
        size_t progress = step_local_read(f);
        if (!f->closed) {
            progress += step_remote_write(f);
        }
        if (!f->closed) {
            progress += step_up_shutdown(f);
        }
        if (!f->closed) {
            progress += step_remote_read(f);
        }
        if (!f->closed) {
            progress += step_local_write(f);
        }
        if (!f->closed) {
            progress += step_down_shutdown(f);
        }
        if (progress == 0) {
            break;
        }
        moved += progress;
        if (moved >= FWD_PUMP_BUDGET || round == FWD_PUMP_ROUNDS - 1) {
            /* Yield to other connections; the readiness flags remember where we were. */
            if (!f->closed) {
                csql__loop_later(f->loop, &f->resume);
            }
            break;
        }
    }
    if (f->closed) {
        return;
    }
    if (f->l_eof && f->up_shut && f->r_eof && f->down_shut) {
        snprintf(f->st.message, sizeof(f->st.message), "both sides finished");
        fwd_close(f, false, false);
        return;
    }
    /* Idle connections hold no buffer. */
    csql__ring_trim(&f->up);
    csql__ring_trim(&f->down);
}

static void on_resume(void *arg)
{
    pump(arg);
}

static void on_local(void *arg, uint32_t events)
{
    csql__fwd *f = arg;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        f->l_rd = true;
    }
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
        f->l_wr = true;
    }
    pump(f);
}

static void on_remote(void *arg, uint32_t events)
{
    csql__fwd *f = arg;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        f->r_rd = true;
    }
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
        f->r_wr = true;
    }
    pump(f);
}

/* ------------------------------------------------------------------ */
/* start                                                               */

static void set_nonblocking_nodelay(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) {
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails harmlessly off TCP */
}

int csql__fwd_start(csql__loop *loop, int local_fd, const csql__fwd_remote *remote,
                    const csql__fwd_opts *opts, csql__fwd **out)
{
    int rc;
    *out = NULL;
    size_t cap = opts->buffer_size ? opts->buffer_size : CSQL__FWD_BUFFER_DEFAULT;
    csql__fwd *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory for a forwarded connection");
        goto fail_unowned;
    }
    f->loop = loop;
    f->lfd = local_fd;
    f->r = *remote;
    f->opts = *opts;
    f->st.buffer_cap = cap;
    csql__ring_init(&f->up, cap);
    csql__ring_init(&f->down, cap);
    /* Unknown readiness: try everything once; would-block clears the flags. */
    f->l_rd = f->l_wr = f->r_rd = f->r_wr = true;
    f->resume.fn = on_resume;
    f->resume.arg = f;
    f->member.close = fwd_member_close;
    f->member.arg = f;

    set_nonblocking_nodelay(local_fd);
    set_nonblocking_nodelay(remote->fd);
    if (remote->ssl != NULL) {
        SSL_set_mode(remote->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_AUTO_RETRY |
                                      SSL_MODE_RELEASE_BUFFERS);
        /* Whole socket reads instead of header-then-body per record: fewer system calls. */
        SSL_set_read_ahead(remote->ssl, 1);
    }

    f->lio = (csql__loop_io){.fd = local_fd, .fn = on_local, .arg = f};
    f->rio = (csql__loop_io){.fd = remote->fd, .fn = on_remote, .arg = f};
    const uint32_t ev = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    rc = csql__loop_io_add(loop, &f->lio, ev);
    if (rc != CSQL_OK) {
        goto fail;
    }
    rc = csql__loop_io_add(loop, &f->rio, ev);
    if (rc != CSQL_OK) {
        csql__loop_io_del(loop, &f->lio);
        goto fail;
    }
    csql__loop_ref(loop);
    csql__loop_member_add(loop, &f->member);
    atomic_fetch_add(&g_live, 1);
    *out = f;
    /* Bytes may already be waiting on either side (or inside the SSL). */
    csql__loop_later(loop, &f->resume);
    return CSQL_OK;

fail:
    f->lfd = -1;
    close(local_fd);
    close_remote(f, false);
    free(f);
    return rc;

fail_unowned:
    close(local_fd);
    if (remote->conn != NULL) {
        csql_conn_close(remote->conn);
    } else {
        if (remote->ssl != NULL) {
            SSL_free(remote->ssl);
        }
        close(remote->fd);
    }
    return rc;
}

void csql__fwd_get_stats(const csql__fwd *f, csql__fwd_stats *out)
{
    *out = f->st;
}
