/*
 * One server-side proxy connection, on its own thread: TLS 1.3 handshake
 * with a verified client certificate, the optional metadata exchange, the
 * IAM check for IAM-bound certificates, the backend connect, then a byte pump
 * with bounded 64 KiB buffers each way, backpressure and half-close in both
 * directions. All sockets are non-blocking; the thread waits in poll(), so a
 * drop (shutdown(2) of both sockets from another thread) wakes it at once.
 * Only this thread touches its SSL object.
 */
#include "server_proxy_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

int64_t emu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------- buffers ---------------- */

size_t emu_buf_len(const emu_buf *b)
{
    return b->tail - b->head;
}

void emu_buf_consume(emu_buf *b, size_t n)
{
    b->head += n;
    if (b->head == b->tail) {
        b->head = b->tail = 0;
    }
}

/* Free space at the tail, compacting when the tail reached the end. */
static size_t buf_space(emu_buf *b)
{
    if (b->tail == EMU_PROXY_BUF_SIZE && b->head > 0) {
        memmove(b->data, b->data + b->head, b->tail - b->head);
        b->tail -= b->head;
        b->head = 0;
    }
    return EMU_PROXY_BUF_SIZE - b->tail;
}

/* ---------------- waiting ---------------- */

/* 1 ready, 0 deadline passed, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    struct pollfd pf = {.fd = fd, .events = events};
    for (;;) {
        int64_t left = deadline - emu_now_ms();
        if (left <= 0) {
            return 0;
        }
        int r = poll(&pf, 1, left > 1000000 ? 1000000 : (int)left);
        if (r > 0) {
            return 1;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
    }
}

/* The poll events an SSL call that returned r waits for; 0 = a real error or EOF. */
static short ssl_wants(SSL *ssl, int r, int *ssl_err)
{
    int e = SSL_get_error(ssl, r);
    ERR_clear_error();
    *ssl_err = e;
    return e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
}

/* ---------------- I/O before the pump ---------------- */

int emu_conn_client_read(emu_conn *c, int64_t deadline)
{
    for (;;) {
        size_t space = buf_space(&c->c2b), got = 0;
        if (space == 0) {
            return -1;
        }
        int r = SSL_read_ex(c->ssl, c->c2b.data + c->c2b.tail, space, &got);
        if (r == 1) {
            c->c2b.tail += got;
            return (int)got;
        }
        int e;
        short ev = ssl_wants(c->ssl, r, &e);
        if (ev == 0) {
            return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
        }
        int w = wait_fd(c->cfd, ev, deadline);
        if (w <= 0) {
            return w == 0 ? -2 : -1;
        }
    }
}

int emu_conn_backend_read(emu_conn *c, int64_t deadline)
{
    for (;;) {
        size_t space = buf_space(&c->b2c);
        if (space == 0) {
            return -1;
        }
        ssize_t n = recv(c->bfd, c->b2c.data + c->b2c.tail, space, 0);
        if (n > 0) {
            c->b2c.tail += (size_t)n;
            return (int)n;
        }
        if (n == 0) {
            return 0;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -1;
        }
        int w = wait_fd(c->bfd, POLLIN, deadline);
        if (w <= 0) {
            return w == 0 ? -2 : -1;
        }
    }
}

int emu_conn_client_write(emu_conn *c, const uint8_t *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        size_t put = 0;
        int r = SSL_write_ex(c->ssl, p, n, &put);
        if (r == 1) {
            p += put;
            n -= put;
            continue;
        }
        int e;
        short ev = ssl_wants(c->ssl, r, &e);
        if (ev == 0 || wait_fd(c->cfd, ev, deadline) <= 0) {
            return -1;
        }
    }
    return 0;
}

/* ---------------- connection steps ---------------- */

static int handshake(emu_conn *c)
{
    SSL_CTX *ctx = emu_proxy_ctx_get(c->px);
    if (ctx == NULL) {
        return -1;
    }
    c->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->cfd) != 1) {
        ERR_clear_error();
        return -1;
    }
    int64_t deadline = emu_now_ms() + atomic_load(&c->px->handshake_ms);
    for (;;) {
        int r = SSL_accept(c->ssl);
        if (r == 1) {
            return 0;
        }
        int e;
        short ev = ssl_wants(c->ssl, r, &e);
        if (ev == 0 || wait_fd(c->cfd, ev, deadline) <= 0) {
            return -1;
        }
    }
}

/* Looks up the IAM binding of the verified client certificate. */
static void identify(emu_conn *c)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    uint64_t serial = 0;
    if (peer == NULL || ASN1_INTEGER_get_uint64(&serial, X509_get0_serialNumber(peer)) != 1) {
        ERR_clear_error();
        return;
    }
    c->iam_bound =
        emu_iam_lookup(serial, c->principal, sizeof(c->principal), &c->token_expiry) == 1;
}

static int send_mdx_response(emu_conn *c, int status, const char *msg, int64_t deadline)
{
    uint8_t out[EMU_MDX_HEADER_LEN + 160];
    size_t n = emu_mdx_encode_response(status, msg, out, sizeof(out));
    return n > 0 ? emu_conn_client_write(c, out, n, deadline) : -1;
}

/*
 * The client's first bytes: an MDX frame is answered and consumed; anything
 * else stays in c2b for the database. Clients of server-speaks-first engines
 * (MySQL) send nothing unless they do MDX, so those wait only mdx_wait_ms.
 */
static int metadata_exchange(emu_conn *c)
{
    emu_proxy *px = c->px;
    int64_t start = emu_now_ms();
    int64_t deadline = start + atomic_load(&px->prelude_ms);
    int64_t quiet_deadline =
        px->engine == EMU_ENGINE_MYSQL ? start + atomic_load(&px->mdx_wait_ms) : deadline;
    char err[160];
    emu_mdx_request req;
    size_t frame = 0;
    /* Each pass reads at least one byte; a frame is at most header + 4 KiB. */
    for (;;) {
        emu_parse_rc rc = emu_mdx_parse(c->c2b.data + c->c2b.head, emu_buf_len(&c->c2b), &req,
                                        &frame, err, sizeof(err));
        if (rc == EMU_PARSE_NOT) {
            return 0;
        }
        if (rc == EMU_PARSE_BAD) {
            atomic_fetch_add(&px->mdx_error, 1);
            send_mdx_response(c, EMU_MDX_STATUS_ERROR, err, deadline);
            return -1;
        }
        if (rc == EMU_PARSE_OK) {
            emu_buf_consume(&c->c2b, frame);
            pthread_mutex_lock(&px->mu);
            px->last_mdx = req;
            pthread_mutex_unlock(&px->mu);
            atomic_fetch_add(&px->mdx_ok, 1);
            return send_mdx_response(c, EMU_MDX_STATUS_OK, NULL, deadline);
        }
        bool nothing_yet = emu_buf_len(&c->c2b) == 0;
        int r = emu_conn_client_read(c, nothing_yet ? quiet_deadline : deadline);
        if (r == -2 && nothing_yet) {
            return px->engine == EMU_ENGINE_MYSQL ? 0 : -1;
        }
        if (r == 0 && nothing_yet) {
            c->client_eof = true; /* closed before saying anything: pass the close on */
            return 0;
        }
        if (r <= 0) {
            return -1;
        }
    }
}

/* Registers the backend socket so drop can shut it down; -1 if already dropped. */
static int set_bfd(emu_conn *c, int fd)
{
    pthread_mutex_lock(&c->px->mu);
    bool dropped = c->dropped;
    if (!dropped) {
        c->bfd = fd;
    }
    pthread_mutex_unlock(&c->px->mu);
    if (dropped) {
        close(fd);
        return -1;
    }
    return 0;
}

static int connect_unix(emu_conn *c, int fd)
{
    /* A unix connect to a full backlog blocks (bounded by SO_SNDTIMEO) instead of EAGAIN. */
    struct timeval tv = {.tv_sec = EMU_PROXY_CONNECT_MS / 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, (struct sockaddr *)&c->px->backend_addr, c->px->backend_len) != 0) {
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 ? -1 : 0;
}

static int connect_tcp(emu_conn *c, int fd)
{
    emu_proxy *px = c->px;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /*
     * Only connections whose certificate is IAM-bound come from the source
     * address the database trusts without a password; the IAM check vouches
     * for their user. Everything else arrives from the default address and
     * gets the database's own password authentication.
     */
    if (px->source_len > 0 && c->iam_bound) {
        /* Let connect pick the port, so many connections from one source address do not
         * exhaust ephemeral ports at bind time. */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&px->source_addr, px->source_len) != 0) {
            return -1;
        }
    }
    if (connect(fd, (struct sockaddr *)&px->backend_addr, px->backend_len) == 0) {
        return 0;
    }
    if (errno != EINPROGRESS) {
        return -1;
    }
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (wait_fd(fd, POLLOUT, emu_now_ms() + EMU_PROXY_CONNECT_MS) <= 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
        return -1;
    }
    return 0;
}

static int backend_connect(emu_conn *c)
{
    int family = c->px->backend_addr.ss_family;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | (family == AF_UNIX ? 0 : SOCK_NONBLOCK),
                    0);
    if (fd < 0 || set_bfd(c, fd) != 0) {
        return -1;
    }
    return family == AF_UNIX ? connect_unix(c, fd) : connect_tcp(c, fd);
}

/* ---------------- the pump ---------------- */

/*
 * Each transfer is retried only while it is not known to be blocked: a
 * blocked one records what it waits for and is retried when poll reports
 * that (or an error/hangup, which the retry then surfaces). So an idle
 * direction costs no system calls, and a request/response round trip costs
 * about six: poll, read, send, poll, recv, write.
 */
typedef struct pump {
    bool c_eof;       /* client close_notify read */
    bool b_shut;      /* shutdown(backend, SHUT_WR) done */
    bool b_eof;       /* backend EOF read */
    bool c_shut;      /* close_notify sent */
    short c_rd_wait;  /* poll events the TLS read waits for; 0 = try it */
    short c_wr_wait;  /* the same for the TLS write or close_notify */
    bool b_rd_wait;   /* backend socket not readable */
    bool b_wr_wait;   /* backend socket not writable */
    uint64_t up, down; /* bytes not yet added to the counters */
} pump;

#define RECORDS_PER_PASS 8

static bool would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* client -> c2b. 1 progress, 0 none, -1 error. */
static int client_to_buf(emu_conn *c, pump *s)
{
    int progress = 0, e;
    for (int i = 0; i < RECORDS_PER_PASS && !s->c_eof && s->c_rd_wait == 0; i++) {
        size_t space = buf_space(&c->c2b), got = 0;
        if (space == 0) {
            break; /* backpressure: the backend is slower */
        }
        int r = SSL_read_ex(c->ssl, c->c2b.data + c->c2b.tail, space, &got);
        if (r == 1) {
            c->c2b.tail += got;
            progress = 1;
            if (!SSL_has_pending(c->ssl)) {
                s->c_rd_wait = POLLIN; /* drained, most likely: let poll say */
            }
        } else if ((s->c_rd_wait = ssl_wants(c->ssl, r, &e)) == 0) {
            if (e != SSL_ERROR_ZERO_RETURN) {
                return -1;
            }
            s->c_eof = true;
            progress = 1;
        }
    }
    return progress;
}

/* c2b -> backend, then the backend half-close once the client's is fully forwarded. */
static int buf_to_backend(emu_conn *c, pump *s)
{
    size_t len = emu_buf_len(&c->c2b);
    if (len > 0 && !s->b_wr_wait) {
        ssize_t n = send(c->bfd, c->c2b.data + c->c2b.head, len, MSG_NOSIGNAL);
        if (n < 0) {
            s->b_wr_wait = would_block();
            return s->b_wr_wait ? 0 : -1;
        }
        emu_buf_consume(&c->c2b, (size_t)n);
        s->up += (uint64_t)n;
        s->b_wr_wait = (size_t)n < len;
        return 1;
    }
    if (len == 0 && s->c_eof && !s->b_shut) {
        s->b_shut = true;
        return shutdown(c->bfd, SHUT_WR) == 0 ? 1 : -1;
    }
    return 0;
}

/* backend -> b2c. */
static int backend_to_buf(emu_conn *c, pump *s)
{
    size_t space = s->b_eof || s->b_rd_wait ? 0 : buf_space(&c->b2c);
    if (space == 0) {
        return 0;
    }
    ssize_t n = recv(c->bfd, c->b2c.data + c->b2c.tail, space, 0);
    if (n < 0) {
        s->b_rd_wait = would_block();
        return s->b_rd_wait ? 0 : -1;
    }
    if (n == 0) {
        s->b_eof = true;
        return 1;
    }
    c->b2c.tail += (size_t)n;
    s->b_rd_wait = (size_t)n < space; /* drained, most likely */
    return 1;
}

/* b2c -> client, then close_notify once the backend's EOF is fully forwarded. */
static int buf_to_client(emu_conn *c, pump *s)
{
    int e;
    size_t len = emu_buf_len(&c->b2c);
    if (s->c_wr_wait != 0 || (len == 0 && (!s->b_eof || s->c_shut))) {
        return 0;
    }
    if (len > 0) {
        size_t put = 0;
        int r = SSL_write_ex(c->ssl, c->b2c.data + c->b2c.head, len, &put);
        if (r == 1) {
            emu_buf_consume(&c->b2c, put);
            s->down += put;
            return 1;
        }
        return (s->c_wr_wait = ssl_wants(c->ssl, r, &e)) != 0 ? 0 : -1;
    }
    /* Sends close_notify (0; 1 if the client's came already); reading goes on. */
    int r = SSL_shutdown(c->ssl);
    if (r >= 0) {
        s->c_shut = true;
        return 1;
    }
    return (s->c_wr_wait = ssl_wants(c->ssl, r, &e)) != 0 ? 0 : -1;
}

/* One pass over the four transfers: 1 if any moved, 0 if none could, -1 on error. */
static int pump_pass(emu_conn *c, pump *s)
{
    int a = client_to_buf(c, s);
    int b = a < 0 ? -1 : buf_to_backend(c, s);
    int d = b < 0 ? -1 : backend_to_buf(c, s);
    int f = d < 0 ? -1 : buf_to_client(c, s);
    if (f < 0) {
        return -1;
    }
    return a | b | d | f;
}

static void flush_counters(emu_proxy *px, pump *s)
{
    if (s->up) {
        atomic_fetch_add_explicit(&px->bytes_up, s->up, memory_order_relaxed);
    }
    if (s->down) {
        atomic_fetch_add_explicit(&px->bytes_down, s->down, memory_order_relaxed);
    }
    s->up = s->down = 0;
}

/* Marks as retryable what poll reported ready; errors and hangups retry everything. */
static void apply_revents(pump *s, const struct pollfd pf[2])
{
    short bad = POLLERR | POLLHUP | POLLNVAL;
    if (pf[0].revents & (s->c_rd_wait | bad)) {
        s->c_rd_wait = 0;
    }
    if (pf[0].revents & (s->c_wr_wait | bad)) {
        s->c_wr_wait = 0;
    }
    if (pf[1].revents & (POLLIN | bad)) {
        s->b_rd_wait = false;
    }
    if (pf[1].revents & (POLLOUT | bad)) {
        s->b_wr_wait = false;
    }
}

/* Until both directions are closed, or an error on either side closes both. */
static void pump_run(emu_conn *c)
{
    pump s = {.c_eof = c->client_eof};
    for (;;) {
        int p = 0;
        /* Bounded so the counters are flushed now and then on a busy stream. */
        for (int i = 0; i < 64 && (p = pump_pass(c, &s)) > 0; i++) {
        }
        flush_counters(c->px, &s);
        if (p < 0 || (s.c_eof && s.b_shut && s.b_eof && s.c_shut)) {
            return;
        }
        if (p > 0) {
            continue;
        }
        bool c_rd = !s.c_eof && buf_space(&c->c2b) > 0;
        bool c_wr = emu_buf_len(&c->b2c) > 0 || (s.b_eof && !s.c_shut);
        struct pollfd pf[2] = {
            {.fd = c->cfd,
             .events = (short)((c_rd ? s.c_rd_wait : 0) | (c_wr ? s.c_wr_wait : 0))},
            {.fd = c->bfd,
             .events = (short)((s.b_rd_wait && !s.b_eof && buf_space(&c->b2c) > 0 ? POLLIN : 0) |
                               (s.b_wr_wait && emu_buf_len(&c->c2b) > 0 ? POLLOUT : 0))},
        };
        /* A descriptor with nothing to wait for would still report POLLHUP: leave it out. */
        for (int i = 0; i < 2; i++) {
            if (pf[i].events == 0) {
                pf[i].fd = -1;
            }
        }
        if (pf[0].fd < 0 && pf[1].fd < 0) {
            return; /* nothing can move any more */
        }
        if (poll(pf, 2, -1) < 0 && errno != EINTR) {
            return;
        }
        apply_revents(&s, pf);
    }
}

/* ---------------- the thread ---------------- */

static void release(emu_conn *c)
{
    SSL_free(c->ssl); /* the socket BIO does not close the descriptor */
    c->ssl = NULL;
    pthread_mutex_lock(&c->px->mu);
    if (c->cfd >= 0) {
        close(c->cfd);
    }
    if (c->bfd >= 0) {
        close(c->bfd);
    }
    c->cfd = c->bfd = -1;
    pthread_mutex_unlock(&c->px->mu);
    free(c->c2b.data);
    free(c->b2c.data);
    c->c2b.data = c->b2c.data = NULL;
}

void *emu_conn_main(void *arg)
{
    emu_conn *c = arg;
    emu_proxy *px = c->px;
    int one = 1;
    pthread_setname_np(pthread_self(), "emu-conn");
    setsockopt(c->cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->c2b.data = malloc(EMU_PROXY_BUF_SIZE);
    c->b2c.data = malloc(EMU_PROXY_BUF_SIZE);
    if (c->c2b.data == NULL || c->b2c.data == NULL) {
        goto out;
    }
    if (handshake(c) != 0) {
        atomic_fetch_add(&px->tls_refused, 1);
        goto out;
    }
    identify(c);
    if (metadata_exchange(c) != 0) {
        goto out;
    }
    /* PostgreSQL's check needs only the client: refuse before touching the database. */
    bool check_first = c->iam_bound && px->engine != EMU_ENGINE_MYSQL;
    int64_t deadline = emu_now_ms() + atomic_load(&px->prelude_ms);
    if (check_first && emu_backend_auth(c, deadline) != 0) {
        atomic_fetch_add(&px->iam_refused, 1);
        goto out;
    }
    if (backend_connect(c) != 0) {
        atomic_fetch_add(&px->backend_failed, 1);
        goto out;
    }
    if (c->iam_bound && !check_first && emu_backend_auth(c, deadline) != 0) {
        atomic_fetch_add(&px->iam_refused, 1);
        goto out;
    }
    pump_run(c);
out:
    release(c);
    atomic_fetch_sub(&px->active, 1);
    atomic_store(&c->done, true);
    return NULL;
}
