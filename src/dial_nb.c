/*
 * The network half of a dial, non-blocking (dial_nb.h): the steps of
 * dial_socket.c run from a state machine that returns instead of polling.
 */
#include "dial_nb.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "csql/errors.h"
#include "error.h"
#include "mdx.h"
#include "util/clock.h"

#define MAX_ADDRESSES 16 /* as csql__dial_socket */
#define MDX_HEADER_LEN 12

enum nb_state {
    NB_INIT,        /* addresses not known yet */
    NB_NEXT,        /* start a connect to the next address */
    NB_CONNECTING,  /* connect in progress: wait for writability */
    NB_TLS,         /* SSL_connect */
    NB_MDX_WRITE,   /* the request frame */
    NB_MDX_READ,    /* the answer: header, then body, exactly */
    NB_DONE,        /* established; waiting to be taken */
    NB_OVER         /* failed, or taken */
};

int csql__dial_nb_init(csql__dial_nb *nb, csql__certset *cs, const csql__instance_name *name,
                       const csql__dial_params *p)
{
    memset(nb, 0, sizeof(*nb));
    nb->fd = -1;
    nb->retired_fd = -1;
    if (cs == NULL || cs->ctx == NULL || name == NULL || p == NULL || p->host == NULL ||
        p->host[0] == '\0' || p->port == 0) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "dial: certificate set, instance, host "
                                                      "and port are required");
    }
    nb->host = strdup(p->host);
    nb->user_agent = p->user_agent ? strdup(p->user_agent) : NULL;
    if (nb->host == NULL || (p->user_agent != NULL && nb->user_agent == NULL)) {
        free(nb->host);
        free(nb->user_agent);
        nb->host = nb->user_agent = NULL;
        return csql__error(CSQL_ERR_NOMEM, "out of memory dialling %s", name->full);
    }
    nb->cs = csql__certset_ref(cs);
    nb->name = *name;
    nb->port = p->port;
    nb->keepalive_s = p->keepalive_s;
    nb->mdx = p->mdx && cs->info.mdx_supported;
    nb->deadline_ms = p->deadline_ms;
    nb->start_ms = csql__mono_ms();
    nb->state = NB_INIT;
    csql__dial_where(nb->host, nb->port, name, nb->where, sizeof(nb->where));
    return CSQL_OK;
}

bool csql__dial_nb_needs_resolver(const csql__dial_nb *nb)
{
    unsigned char probe[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, nb->host, probe) != 1 && inet_pton(AF_INET6, nb->host, probe) != 1;
}

void csql__dial_nb_set_addresses(csql__dial_nb *nb, struct addrinfo *res)
{
    if (nb->res != NULL) {
        freeaddrinfo(nb->res);
    }
    nb->res = res;
    nb->next_ai = res;
    if (nb->state == NB_INIT) {
        nb->state = NB_NEXT;
    }
}

int csql__dial_nb_fd(const csql__dial_nb *nb)
{
    return nb->state == NB_DONE || nb->state == NB_OVER ? -1 : nb->fd;
}

unsigned csql__dial_nb_events(const csql__dial_nb *nb)
{
    return csql__dial_nb_fd(nb) >= 0 ? nb->events : 0;
}

static const char *step_name(int state)
{
    switch (state) {
    case NB_TLS:
        return "TLS handshake";
    case NB_MDX_WRITE:
    case NB_MDX_READ:
        return "metadata exchange";
    default:
        return "TCP connect";
    }
}

static int timed_out(csql__dial_nb *nb)
{
    ERR_clear_error();
    return csql__error(CSQL_ERR_TIMEOUT, "%s with %s timed out after %lld ms",
                       step_name(nb->state), nb->where,
                       (long long)(csql__mono_ms() - nb->start_ms));
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/*
 * A socket the caller may still watch is not closed at once: it is retired
 * and closed at the next step, so the caller can take it out of its event
 * loop first (see csql_dial_async_fd).
 */
static void retire_fd(csql__dial_nb *nb)
{
    close_fd(&nb->retired_fd);
    nb->retired_fd = nb->fd;
    nb->fd = -1;
}

/* ---- TCP ---- */

/* Start a connect to the next address: WOULD_BLOCK (in progress), 0 (connected), or an error. */
static int connect_next(csql__dial_nb *nb)
{
    /* Each round consumes an address: bounded by the list and MAX_ADDRESSES. */
    while (nb->next_ai != NULL && nb->tries < MAX_ADDRESSES) {
        const struct addrinfo *ai = nb->next_ai;
        nb->next_ai = ai->ai_next;
        nb->tries++;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            nb->last_errno = errno;
            continue;
        }
        nb->fd = fd;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            return CSQL_OK;
        }
        if (errno == EINPROGRESS) {
            nb->state = NB_CONNECTING;
            nb->events = CSQL__NB_WRITE;
            return CSQL_ERR_WOULD_BLOCK;
        }
        nb->last_errno = errno;
        /* Never reported to the caller: close it now, keep the retired one (it was). */
        close_fd(&nb->fd);
    }
    return csql__error(CSQL_ERR_CONNECT, "TCP connect to %s failed: %s", nb->where,
                       nb->last_errno ? strerror(nb->last_errno) : "no usable address");
}

/* The connect in progress: WOULD_BLOCK (not yet), 0 (connected), 1 (failed: try the next). */
static int connect_result(csql__dial_nb *nb)
{
    /* A spurious call must not read SO_ERROR of a connect still in progress. */
    struct pollfd pfd = {.fd = nb->fd, .events = POLLOUT};
    int r;
    do {
        r = poll(&pfd, 1, 0);
    } while (r < 0 && errno == EINTR);
    if (r == 0) {
        return CSQL_ERR_WOULD_BLOCK;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (r < 0) {
        err = errno;
    } else if (getsockopt(nb->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
    }
    if (err != 0) {
        nb->last_errno = err;
        retire_fd(nb);
        return 1;
    }
    return CSQL_OK;
}

/* Connected: socket options, then a fresh SSL for the handshake. */
static int start_tls(csql__dial_nb *nb)
{
    csql__dial_set_socket_options(nb->fd, nb->keepalive_s);
    char what[CSQL__DIAL_WHERE_MAX + 32];
    snprintf(what, sizeof(what), "TLS handshake with %s", nb->where);
    int rc = csql__dial_tls_new(nb->cs, &nb->name, nb->fd, what, &nb->ssl);
    if (rc != CSQL_OK) {
        return rc;
    }
    nb->state = NB_TLS;
    return CSQL_OK;
}

/* ---- TLS ---- */

/*
 * Map a non-successful SSL call: WOULD_BLOCK with the readiness it needs, or
 * the failure as a csql error of `code`.
 */
static int ssl_wait_or_fail(csql__dial_nb *nb, int r, int code, const char *what)
{
    int sys_errno = errno;
    int err = SSL_get_error(nb->ssl, r);
    if (err == SSL_ERROR_WANT_READ) {
        nb->events = CSQL__NB_READ;
        return CSQL_ERR_WOULD_BLOCK;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        nb->events = CSQL__NB_WRITE;
        return CSQL_ERR_WOULD_BLOCK;
    }
    return csql__dial_ssl_failure(nb->ssl, code, err, sys_errno, what);
}

static int do_handshake(csql__dial_nb *nb)
{
    char what[CSQL__DIAL_WHERE_MAX + 32];
    snprintf(what, sizeof(what), "TLS handshake with %s", nb->where);
    ERR_clear_error(); /* SSL_get_error reads this thread's queue: start it empty */
    errno = 0;
    int r = SSL_connect(nb->ssl);
    if (r != 1) {
        return ssl_wait_or_fail(nb, r, CSQL_ERR_TLS_HANDSHAKE, what);
    }
    int rc = csql__dial_tls_verified(nb->ssl, what);
    if (rc != CSQL_OK) {
        return rc;
    }
    if (!nb->mdx) {
        nb->state = NB_DONE;
        return CSQL_OK;
    }
    nb->mdx_buf = malloc(MDX_HEADER_LEN + CSQL__MDX_MAX_BODY);
    if (nb->mdx_buf == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "metadata exchange with %s: out of memory", nb->where);
    }
    rc = csql__dial_mdx_request(nb->user_agent, nb->mdx_buf, MDX_HEADER_LEN + CSQL__MDX_MAX_BODY,
                                what);
    if (rc < 0) {
        return rc;
    }
    nb->mdx_len = (size_t)rc;
    nb->mdx_done = 0;
    nb->state = NB_MDX_WRITE;
    return CSQL_OK;
}

/* ---- metadata exchange (REFERENCE §7) ---- */

static int mdx_write(csql__dial_nb *nb, const char *what)
{
    ERR_clear_error();
    errno = 0;
    size_t n = 0;
    /* Without partial writes, a retry after WANT_* passes the same buffer and length. */
    int r = SSL_write_ex(nb->ssl, nb->mdx_buf, nb->mdx_len, &n);
    if (r != 1) {
        return ssl_wait_or_fail(nb, r, CSQL_ERR_TLS_HANDSHAKE, what);
    }
    nb->state = NB_MDX_READ;
    nb->mdx_len = MDX_HEADER_LEN;
    nb->mdx_done = 0;
    nb->mdx_have_header = false;
    return CSQL_OK;
}

/* Read exactly the header, then exactly the body: database bytes may follow the answer. */
static int mdx_read(csql__dial_nb *nb, const char *what)
{
    /* Each round reads at least one byte or returns: bounded by header + body. */
    for (;;) {
        while (nb->mdx_done < nb->mdx_len) {
            ERR_clear_error();
            errno = 0;
            size_t n = 0;
            int r = SSL_read_ex(nb->ssl, nb->mdx_buf + nb->mdx_done, nb->mdx_len - nb->mdx_done,
                                &n);
            if (r == 1) {
                nb->mdx_done += n;
                continue;
            }
            if (SSL_get_error(nb->ssl, r) == SSL_ERROR_ZERO_RETURN) {
                ERR_clear_error();
                return csql__error(CSQL_ERR_MDX,
                                   "%s: the server closed the connection before answering", what);
            }
            /* A TLS 1.3 server refusing our certificate says so here: a handshake failure. */
            return ssl_wait_or_fail(nb, r, CSQL_ERR_TLS_HANDSHAKE, what);
        }
        if (nb->mdx_have_header) {
            break;
        }
        size_t body = 0;
        int rc = csql__dial_mdx_header(nb->mdx_buf, &body, what);
        if (rc != CSQL_OK) {
            return rc;
        }
        nb->mdx_have_header = true;
        nb->mdx_len = MDX_HEADER_LEN + body;
    }
    int rc = csql__dial_mdx_verdict(nb->mdx_buf, nb->mdx_len, what);
    if (rc == CSQL_OK) {
        nb->state = NB_DONE;
    }
    return rc;
}

static int mdx_step(csql__dial_nb *nb)
{
    char what[CSQL__DIAL_WHERE_MAX + 40];
    snprintf(what, sizeof(what), "metadata exchange with %s", nb->where);
    if (nb->state == NB_MDX_WRITE) {
        int rc = mdx_write(nb, what);
        if (rc != CSQL_OK) {
            return rc;
        }
    }
    return mdx_read(nb, what);
}

/* ---- the machine ---- */

/* One transition; CSQL_OK means "go on". */
static int advance(csql__dial_nb *nb)
{
    switch (nb->state) {
    case NB_INIT: {
        struct addrinfo *res = NULL;
        int rc = csql__dial_resolve(nb->host, nb->port, nb->where, &res);
        if (rc != CSQL_OK) {
            return rc;
        }
        csql__dial_nb_set_addresses(nb, res);
        return CSQL_OK;
    }
    case NB_NEXT: {
        int rc = connect_next(nb);
        return rc == CSQL_OK ? start_tls(nb) : rc;
    }
    case NB_CONNECTING: {
        int rc = connect_result(nb);
        if (rc == 1) {
            nb->state = NB_NEXT;
            return CSQL_OK;
        }
        return rc == CSQL_OK ? start_tls(nb) : rc;
    }
    case NB_TLS:
        return do_handshake(nb);
    case NB_MDX_WRITE:
    case NB_MDX_READ:
        return mdx_step(nb);
    default:
        return csql__error(CSQL_ERR_INTERNAL, "dial of %s: bad state %d", nb->where, nb->state);
    }
}

int csql__dial_nb_step(csql__dial_nb *nb)
{
    close_fd(&nb->retired_fd);
    if (nb->state == NB_DONE) {
        return CSQL_OK;
    }
    if (nb->state == NB_OVER) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "dial of %s: already finished", nb->where);
    }
    /* Each transition either waits, ends, or moves forward (addresses are bounded). */
    for (;;) {
        if (csql__ms_left(nb->deadline_ms) <= 0) {
            int rc = timed_out(nb);
            nb->state = NB_OVER;
            return rc;
        }
        int rc = advance(nb);
        if (rc == CSQL_ERR_WOULD_BLOCK) {
            return rc;
        }
        if (rc != CSQL_OK) {
            nb->state = NB_OVER;
            nb->events = 0;
            return rc;
        }
        if (nb->state == NB_DONE) {
            nb->events = 0;
            return CSQL_OK;
        }
    }
}

void csql__dial_nb_take(csql__dial_nb *nb, int *fd, SSL **ssl)
{
    *fd = nb->fd;
    *ssl = nb->ssl;
    nb->fd = -1;
    nb->ssl = NULL;
    nb->state = NB_OVER;
}

int csql__dial_nb_release_fd(csql__dial_nb *nb, int fd)
{
    if (fd < 0) {
        return -1;
    }
    if (fd == nb->retired_fd) {
        nb->retired_fd = -1;
        return fd;
    }
    if (fd != nb->fd) {
        return -1;
    }
    if (nb->ssl != NULL) {
        SSL_free(nb->ssl); /* our socket BIO never closes the fd */
        ERR_clear_error();
        nb->ssl = NULL;
    }
    nb->fd = -1;
    return fd;
}

void csql__dial_nb_dispose(csql__dial_nb *nb)
{
    if (nb->ssl != NULL) {
        SSL_free(nb->ssl);
        ERR_clear_error();
        nb->ssl = NULL;
    }
    close_fd(&nb->fd);
    close_fd(&nb->retired_fd);
    if (nb->res != NULL) {
        freeaddrinfo(nb->res);
        nb->res = NULL;
    }
    free(nb->mdx_buf);
    nb->mdx_buf = NULL;
    free(nb->host);
    free(nb->user_agent);
    nb->host = nb->user_agent = NULL;
    csql__certset_unref(nb->cs);
    nb->cs = NULL;
    nb->state = NB_OVER;
}
