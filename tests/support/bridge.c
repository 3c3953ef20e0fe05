/* Test support: Unix socket <-> csql_conn byte bridge (see bridge.h). */
#include "bridge.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define BRIDGE_BUF 16384
#define BRIDGE_MAX_PAIRS 256

typedef struct pair {
    csqlt_bridge *b;
    int fd;               /* the driver's side */
    csql_conn *conn;      /* csql's side; NULL until dialled */
    pthread_t up, down;   /* fd -> conn, conn -> fd */
    bool up_started, down_started;
    atomic_int done;      /* directions finished */
} pair;

struct csqlt_bridge {
    char dir[256];
    char path[512];
    int lfd;
    csqlt_bridge_dial_fn dial;
    void *arg;
    pthread_t acceptor;
    atomic_bool stop;
    pthread_mutex_t mu;
    pair *pairs[BRIDGE_MAX_PAIRS];
    int n_pairs;
    int accepted;
    int dial_failures;
    int last_code;
};

/* Driver -> instance. EOF from the driver becomes a TLS close_notify + TCP half-close. */
static void *up_main(void *arg)
{
    pair *p = arg;
    char *buf = malloc(BRIDGE_BUF);
    for (;;) {
        ssize_t n = buf ? read(p->fd, buf, BRIDGE_BUF) : -1;
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            csql_conn_shutdown(p->conn);
            break;
        }
        if (csql_conn_write_all(p->conn, buf, (size_t)n) != 0) {
            shutdown(p->fd, SHUT_RD);
            break;
        }
    }
    free(buf);
    atomic_fetch_add(&p->done, 1);
    return NULL;
}

/* Instance -> driver. End of stream from the server becomes shutdown(SHUT_WR) on the socket. */
static void *down_main(void *arg)
{
    pair *p = arg;
    char *buf = malloc(BRIDGE_BUF);
    for (;;) {
        ssize_t n = buf ? csql_conn_read(p->conn, buf, BRIDGE_BUF) : -1;
        if (n <= 0) {
            shutdown(p->fd, SHUT_WR);
            break;
        }
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = write(p->fd, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                break;
            }
            off += w;
        }
        if (off < n) {
            break;
        }
    }
    free(buf);
    atomic_fetch_add(&p->done, 1);
    return NULL;
}

/* Join and free pairs whose two directions ended (or all of them, when stopping). */
static void reap(csqlt_bridge *b, bool all)
{
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->n_pairs;) {
        pair *p = b->pairs[i];
        int want = (p->up_started ? 1 : 0) + (p->down_started ? 1 : 0);
        if (!all && atomic_load(&p->done) < want) {
            i++;
            continue;
        }
        if (all) {
            /* Unblock both directions: the driver side and csql's socket. */
            shutdown(p->fd, SHUT_RDWR);
            if (p->conn) {
                shutdown(csql_conn_fd(p->conn), SHUT_RDWR);
            }
        }
        if (p->up_started) {
            pthread_join(p->up, NULL);
        }
        if (p->down_started) {
            pthread_join(p->down, NULL);
        }
        close(p->fd);
        csql_conn_close(p->conn);
        free(p);
        b->pairs[i] = b->pairs[--b->n_pairs];
    }
    pthread_mutex_unlock(&b->mu);
}

static void serve(csqlt_bridge *b, int fd)
{
    pair *p = calloc(1, sizeof(*p));
    csql_conn *conn = NULL;
    int rc = p ? b->dial(b->arg, &conn) : CSQL_ERR_NOMEM;
    pthread_mutex_lock(&b->mu);
    b->accepted++;
    if (rc != 0 || b->n_pairs == BRIDGE_MAX_PAIRS) {
        b->dial_failures += rc != 0;
        b->last_code = rc;
        pthread_mutex_unlock(&b->mu);
        csql_conn_close(conn);
        close(fd);
        free(p);
        return;
    }
    p->b = b;
    p->fd = fd;
    p->conn = conn;
    p->up_started = pthread_create(&p->up, NULL, up_main, p) == 0;
    p->down_started = pthread_create(&p->down, NULL, down_main, p) == 0;
    b->pairs[b->n_pairs++] = p;
    pthread_mutex_unlock(&b->mu);
}

static void *acceptor_main(void *arg)
{
    csqlt_bridge *b = arg;
    while (!atomic_load(&b->stop)) {
        struct pollfd pfd = {.fd = b->lfd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0) {
            reap(b, false);
            continue;
        }
        int fd = accept(b->lfd, NULL, NULL);
        if (fd >= 0) {
            serve(b, fd);
        }
        reap(b, false);
    }
    return NULL;
}

int csqlt_bridge_start(csqlt_bridge **out, const char *sock_name, csqlt_bridge_dial_fn dial,
                       void *arg)
{
    *out = NULL;
    csqlt_bridge *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return -1;
    }
    b->lfd = -1;
    b->dial = dial;
    b->arg = arg;
    atomic_init(&b->stop, false);
    pthread_mutex_init(&b->mu, NULL);
    snprintf(b->dir, sizeof(b->dir), "/tmp/csqlt-bridge.XXXXXX");
    if (mkdtemp(b->dir) == NULL) { /* mkdtemp makes it 0700 */
        fprintf(stderr, "bridge: mkdtemp: %s\n", strerror(errno));
        free(b);
        return -1;
    }
    snprintf(b->path, sizeof(b->path), "%s/%s", b->dir, sock_name);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(b->path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "bridge: socket path too long\n");
        goto fail;
    }
    memcpy(sa.sun_path, b->path, strlen(b->path) + 1);
    b->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (b->lfd < 0 || bind(b->lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(b->lfd, 64) != 0) {
        fprintf(stderr, "bridge: listen on %s: %s\n", b->path, strerror(errno));
        goto fail;
    }
    if (pthread_create(&b->acceptor, NULL, acceptor_main, b) != 0) {
        fprintf(stderr, "bridge: pthread_create failed\n");
        goto fail;
    }
    *out = b;
    return 0;
fail:
    if (b->lfd >= 0) {
        close(b->lfd);
    }
    unlink(b->path);
    rmdir(b->dir);
    pthread_mutex_destroy(&b->mu);
    free(b);
    return -1;
}

const char *csqlt_bridge_dir(const csqlt_bridge *b)
{
    return b->dir;
}

const char *csqlt_bridge_path(const csqlt_bridge *b)
{
    return b->path;
}

int csqlt_bridge_accepted(csqlt_bridge *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->accepted;
    pthread_mutex_unlock(&b->mu);
    return n;
}

int csqlt_bridge_dial_failures(csqlt_bridge *b, int *last_code)
{
    pthread_mutex_lock(&b->mu);
    int n = b->dial_failures;
    if (last_code) {
        *last_code = b->last_code;
    }
    pthread_mutex_unlock(&b->mu);
    return n;
}

void csqlt_bridge_stop(csqlt_bridge *b)
{
    if (b == NULL) {
        return;
    }
    atomic_store(&b->stop, true);
    pthread_join(b->acceptor, NULL);
    close(b->lfd);
    reap(b, true);
    unlink(b->path);
    rmdir(b->dir);
    pthread_mutex_destroy(&b->mu);
    free(b);
}
