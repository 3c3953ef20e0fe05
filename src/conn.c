/*
 * csql_conn: a TLS connection shared by one reader and one writer thread.
 * The socket is non-blocking; every SSL_* call runs under one mutex, and the
 * waits OpenSSL asks for (poll on WANT_READ / WANT_WRITE) happen outside it,
 * so a blocked reader never stalls the writer. TLS 1.3 post-handshake
 * messages (tickets, key updates) may make a read want to write and a write
 * want to read; both are handled.
 */
#include "conn_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "error.h"
#include "tls.h"

/*
 * A wait for the "other" direction (a read that must write, a write that must
 * read) is short and retried: the other thread may consume the event we wait for.
 */
#define CROSS_WAIT_MS 50

struct csql_conn {
    int fd;
    SSL *ssl;
    char *instance;
    pthread_mutex_t lock_storage;
    pthread_mutex_t *lock;      /* = &lock_storage; usable through a const conn */
    bool write_shut;            /* csql_conn_shutdown done (under lock) */
    int failed;                 /* first fatal error code, 0 if none (under lock) */
    atomic_bool tls_error_reported;
    atomic_bool aborted;        /* csql_conn_abort (any thread) */
    atomic_uint timeout_ms;     /* csql_conn_set_timeout; 0: wait for ever */
    csql__conn_tls_error_fn on_tls_error;
    csql__conn_release_fn release;
    void *userdata;
};

int csql__conn_new(int fd, SSL *ssl, const char *instance, csql__conn_tls_error_fn on_tls_error,
                   csql__conn_release_fn release, void *userdata, csql_conn **out)
{
    int rc = CSQL_OK;
    csql_conn *c = NULL;
    if (out != NULL) {
        *out = NULL;
    }
    if (fd < 0 || ssl == NULL || out == NULL) {
        rc = csql__error(CSQL_ERR_INVALID_ARGUMENT, "connection: fd, SSL and out are required");
        goto fail;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        rc = csql__error(CSQL_ERR_IO, "connection to instance %s: could not make the socket "
                                      "non-blocking: %s",
                         instance ? instance : "?", strerror(errno));
        goto fail;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->instance = strdup(instance ? instance : "")) == NULL) {
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory creating a connection");
        goto fail;
    }
    if (pthread_mutex_init(&c->lock_storage, NULL) != 0) {
        rc = csql__error(CSQL_ERR_INTERNAL, "could not create a connection lock");
        goto fail;
    }
    c->lock = &c->lock_storage;
    c->fd = fd;
    c->ssl = ssl;
    c->on_tls_error = on_tls_error;
    c->release = release;
    c->userdata = userdata;
    atomic_init(&c->tls_error_reported, false);
    atomic_init(&c->aborted, false);
    atomic_init(&c->timeout_ms, 0);
    /*
     * Partial writes let a writer return after one record; the buffer may
     * move between retries. Released buffers: an idle connection holds no
     * 16 KiB read and write buffers (about 58 KiB per connection becomes 25).
     */
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                      SSL_MODE_RELEASE_BUFFERS);
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
    *out = c;
    return CSQL_OK;
fail:
    if (c != NULL) {
        free(c->instance);
        free(c);
    }
    SSL_free(ssl);
    if (fd >= 0) {
        close(fd);
    }
    if (release != NULL) {
        release(userdata);
    }
    return rc;
}

/* Wait for events on the socket; timeout_ms < 0 waits for ever. 0, or -1 with errno. */
static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = events};
    int r = poll(&pfd, 1, timeout_ms);
    if (r < 0 && errno != EINTR) {
        return -1;
    }
    return 0;
}

/*
 * A write that must first read: the bytes it needs may sit behind
 * application data that only the reader thread consumes, so POLLIN can stay
 * ready without helping us. Wait briefly and pause, rather than spin.
 */
static int wait_cross_read(int fd)
{
    if (wait_fd(fd, POLLIN, CROSS_WAIT_MS) < 0) {
        return -1;
    }
    struct timespec pause = {0, 1000000};
    nanosleep(&pause, NULL);
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The deadline of one read or write call (monotonic ms), or -1 without a timeout. */
static int64_t call_deadline(const csql_conn *c)
{
    unsigned t = atomic_load(&c->timeout_ms);
    return t == 0 ? -1 : mono_ms() + (int64_t)t;
}

/* What to pass to poll: the time left before the deadline, at most cap (cap < 0: none). */
static int poll_budget(int64_t deadline, int cap)
{
    if (deadline < 0) {
        return cap;
    }
    int64_t left = deadline - mono_ms();
    if (left < 0) {
        left = 0;
    }
    return (cap >= 0 && left > cap) ? cap : (int)left;
}

static bool past(int64_t deadline)
{
    return deadline >= 0 && mono_ms() >= deadline;
}

static int aborted_error(const csql_conn *c, const char *dir)
{
    return csql__error(CSQL_ERR_CLOSED, "%s instance %s: the connection was aborted", dir,
                       c->instance);
}

static int timeout_error(const csql_conn *c, const char *dir, const char *what, bool usable)
{
    return csql__error(CSQL_ERR_TIMEOUT, "%s instance %s: %s within %u ms (%s)", dir, c->instance,
                       what, atomic_load(&c->timeout_ms),
                       usable ? "the connection stays usable" : "the connection is closed");
}

static void report_tls_error(csql_conn *c)
{
    bool expected = false;
    if (c->on_tls_error != NULL &&
        atomic_compare_exchange_strong(&c->tls_error_reported, &expected, true)) {
        c->on_tls_error(c->userdata);
    }
}

void csql__conn_report_tls_error(csql_conn *c)
{
    if (c != NULL) {
        report_tls_error(c);
    }
}

/*
 * Turn a failed SSL call into a csql error, under the lock. TLS-level
 * failures (CSQL_ERR_TLS_IO) are fatal for the conn and reported once;
 * socket failures are CSQL_ERR_IO and fatal too (OpenSSL forbids further I/O).
 */
static int io_failure(csql_conn *c, int ssl_err, int sys_errno, const char *dir, bool *tls_error)
{
    int rc;
    char what[600];
    snprintf(what, sizeof(what), "%s instance %s", dir, c->instance);
    *tls_error = false;
    if (ssl_err == SSL_ERROR_ZERO_RETURN) {
        /* A write after the server's end of stream: the server went, the certificate is fine. */
        ERR_clear_error();
        rc = csql__error(CSQL_ERR_IO, "%s failed: the server closed the connection", what);
    } else if (ssl_err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        rc = csql__error(CSQL_ERR_IO, "%s failed: %s", what,
                         sys_errno ? strerror(sys_errno) : "connection closed unexpectedly");
    } else {
        rc = csql__tls_raise(c->ssl, CSQL_ERR_TLS_IO, what);
        *tls_error = true;
    }
    c->failed = rc;
    return rc;
}

static int failed_earlier(const csql_conn *c, const char *dir)
{
    return csql__error(c->failed, "%s instance %s: the connection failed earlier (%s)", dir,
                       c->instance, csql_strerror(c->failed));
}

/* What a drive() call does; each names itself in messages. */
typedef enum io_op { OP_READ, OP_WRITE, OP_SHUTDOWN } io_op;

static const char *const OP_DIR[] = {"read from", "write to", "shutdown of"};

/*
 * One SSL call under the lock: 1 done (*n bytes), else OpenSSL's failure
 * result for SSL_get_error. A shutdown that went out also half-closes.
 */
static int ssl_call(csql_conn *c, io_op op, void *buf, size_t len, size_t *n)
{
    *n = 0;
    if (op == OP_READ) {
        return SSL_read_ex(c->ssl, buf, len, n);
    }
    if (op == OP_WRITE) {
        return SSL_write_ex(c->ssl, buf, len, n);
    }
    /* First call only: sends close_notify and does not wait for the server's. */
    int r = SSL_shutdown(c->ssl);
    if (r < 0) {
        return r;
    }
    c->write_shut = true;
    /* The TCP half-close follows the close_notify out; reads go on. */
    (void)shutdown(c->fd, SHUT_WR);
    /*
     * Nothing may follow close_notify, but OpenSSL still answers a server's
     * KeyUpdate request from inside SSL_read; on our half-closed socket that
     * write fails (EPIPE) and takes the read side down with it. Send such
     * writes nowhere instead.
     */
    BIO *sink = BIO_new(BIO_s_null());
    if (sink != NULL) {
        SSL_set0_wbio(c->ssl, sink);
    }
    ERR_clear_error();
    return 1;
}

/*
 * Run op to completion: the SSL call under the lock, the waits it asks for
 * (WANT_READ / WANT_WRITE) outside it, an abort or the call's timeout
 * checked each round. Returns bytes (read/write; 0 is end of stream for a
 * read), CSQL_OK for a shutdown, or a negative csql_err. Each round either
 * returns or waits on the socket: no busy loop.
 */
static ssize_t drive(csql_conn *c, io_op op, void *buf, size_t len)
{
    const char *dir = OP_DIR[op];
    int64_t deadline = op == OP_SHUTDOWN ? -1 : call_deadline(c);
    for (;;) {
        if (atomic_load(&c->aborted)) {
            return aborted_error(c, dir);
        }
        pthread_mutex_lock(c->lock);
        if (c->failed) {
            int rc = failed_earlier(c, dir);
            pthread_mutex_unlock(c->lock);
            return rc;
        }
        if (op != OP_READ && c->write_shut) {
            pthread_mutex_unlock(c->lock);
            return op == OP_SHUTDOWN ? CSQL_OK
                                     : csql__error(CSQL_ERR_CLOSED,
                                                   "write to instance %s: the connection was "
                                                   "shut down for writing",
                                                   c->instance);
        }
        errno = 0;
        size_t n;
        int r = ssl_call(c, op, buf, len, &n);
        int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
        int sys_errno = errno;
        if (r == 1) {
            pthread_mutex_unlock(c->lock);
            return op == OP_SHUTDOWN ? CSQL_OK : (ssize_t)n;
        }
        if (atomic_load(&c->aborted)) {
            /* The end of stream or failure an abort causes is not the server's doing. */
            ERR_clear_error();
            pthread_mutex_unlock(c->lock);
            return aborted_error(c, dir);
        }
        if (op == OP_READ && err == SSL_ERROR_ZERO_RETURN) {
            /* close_notify, or a clean TCP EOF (SSL_OP_IGNORE_UNEXPECTED_EOF). */
            ERR_clear_error();
            pthread_mutex_unlock(c->lock);
            return 0;
        }
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
            bool tls_error;
            int rc = io_failure(c, err, sys_errno, dir, &tls_error);
            pthread_mutex_unlock(c->lock);
            if (tls_error) {
                report_tls_error(c);
            }
            return rc;
        }
        if (past(deadline)) {
            if (op == OP_READ) {
                pthread_mutex_unlock(c->lock);
                return timeout_error(c, dir, "no data", true);
            }
            /*
             * A write that waits has handed OpenSSL a record built from the
             * caller's bytes; TLS cannot take it back, and a retry would
             * have to carry the same bytes. So a write timeout is final.
             */
            int rc = timeout_error(c, dir, "no room to send", false);
            c->failed = rc;
            pthread_mutex_unlock(c->lock);
            return rc;
        }
        pthread_mutex_unlock(c->lock);
        /* A read waits for input, a write or shutdown for room; the other direction briefly. */
        short mine = op == OP_READ ? POLLIN : POLLOUT;
        short want = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        int w;
        if (want == mine) {
            w = wait_fd(c->fd, want, poll_budget(deadline, -1));
        } else if (op == OP_READ) {
            w = wait_fd(c->fd, POLLOUT, poll_budget(deadline, CROSS_WAIT_MS));
        } else {
            w = wait_cross_read(c->fd);
        }
        if (w < 0) {
            return csql__error(CSQL_ERR_IO, "%s instance %s: poll failed: %s", dir, c->instance,
                               strerror(errno));
        }
    }
}

ssize_t csql_conn_read(csql_conn *c, void *buf, size_t len)
{
    if (c == NULL || buf == NULL || len == 0) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "csql_conn_read: a connection and a non-empty buffer are required");
    }
    return drive(c, OP_READ, buf, len > INT_MAX ? INT_MAX : len);
}

ssize_t csql_conn_write(csql_conn *c, const void *buf, size_t len)
{
    if (c == NULL || (buf == NULL && len > 0)) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "csql_conn_write: a connection and a buffer are required");
    }
    if (len == 0) {
        return 0;
    }
    /* SSL_write_ex does not write to buf; drive() takes one pointer type for all three. */
    void *p;
    memcpy(&p, &buf, sizeof(p));
    return drive(c, OP_WRITE, p, len > INT_MAX ? INT_MAX : len);
}

int csql_conn_write_all(csql_conn *c, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    if (c == NULL || (buf == NULL && len > 0)) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "csql_conn_write_all: a connection and a buffer are required");
    }
    /* Every round writes at least one byte or returns: bounded by len. */
    while (len > 0) {
        ssize_t n = csql_conn_write(c, p, len);
        if (n < 0) {
            return (int)n;
        }
        p += n;
        len -= (size_t)n;
    }
    return CSQL_OK;
}

int csql_conn_shutdown(csql_conn *c)
{
    if (c == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_conn_shutdown: connection is NULL");
    }
    return (int)drive(c, OP_SHUTDOWN, NULL, 0);
}

void csql_conn_close(csql_conn *c)
{
    if (c == NULL) {
        return;
    }
    pthread_mutex_lock(c->lock);
    if (!c->failed && !c->write_shut && !atomic_load(&c->aborted) && SSL_is_init_finished(c->ssl)) {
        /* Best effort close_notify: the socket is non-blocking, so this never waits. */
        (void)SSL_shutdown(c->ssl);
    }
    ERR_clear_error();
    SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
    pthread_mutex_unlock(c->lock);
    pthread_mutex_destroy(c->lock);
    if (c->release != NULL) {
        c->release(c->userdata);
    }
    free(c->instance);
    free(c);
}

void csql_conn_abort(csql_conn *c)
{
    if (c == NULL || atomic_exchange(&c->aborted, true)) {
        return;
    }
    /* Wakes every poll on the socket (POLLHUP); no lock: a waiter never holds it. */
    (void)shutdown(c->fd, SHUT_RDWR);
}

int csql_conn_set_timeout(csql_conn *c, unsigned int timeout_ms)
{
    if (c == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_conn_set_timeout: connection is NULL");
    }
    if (timeout_ms > CSQL_CONN_TIMEOUT_MAX_MS) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "csql_conn_set_timeout: %u ms is over the maximum of %u ms", timeout_ms,
                           (unsigned)CSQL_CONN_TIMEOUT_MAX_MS);
    }
    atomic_store(&c->timeout_ms, timeout_ms);
    return CSQL_OK;
}

int csql_conn_fd(const csql_conn *c)
{
    return c ? c->fd : -1;
}

size_t csql_conn_pending(const csql_conn *c)
{
    if (c == NULL) {
        return 0;
    }
    pthread_mutex_lock(c->lock);
    int n = c->failed ? 0 : SSL_pending(c->ssl);
    pthread_mutex_unlock(c->lock);
    return n > 0 ? (size_t)n : 0;
}

struct ssl_st *csql_conn_ssl(csql_conn *c)
{
    return c ? c->ssl : NULL;
}

const char *csql_conn_instance(const csql_conn *c)
{
    return c ? c->instance : NULL;
}
