/*
 * async_epoll: csql_dial_async driven by a plain epoll loop, no library.
 * Dials an instance N times at once from one thread and prints how each
 * dial ended. Shows the whole loop contract of csql/async.h: watch the fd
 * for the events it asks, re-register when the fd changes, arm a timeout,
 * call continue, free.
 *
 *   async_epoll p:r:i [N] [--admin-api URL] [--token T] [--server-port P]
 *
 * Without --token it uses Application Default Credentials.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "csql/async.h"
#include "csql/csql.h"

#define MAX_DIALS 10000

static int g_failed;

typedef struct dial {
    csql_dial_async *h;
    int watched_fd;     /* the fd registered with epoll, or -1 */
    int watched_events;
    int64_t due_ms;     /* call continue by then even without events */
    int done;
} dial;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t epoll_events(int ev)
{
    return (ev & CSQL_ASYNC_READ ? EPOLLIN : 0) | (ev & CSQL_ASYNC_WRITE ? EPOLLOUT : 0);
}

/* After a continue: follow the fd (it may change), the events and the deadline. */
static void watch(int ep, dial *x)
{
    int fd = csql_dial_async_fd(x->h);
    int ev = csql_dial_async_events(x->h);
    struct epoll_event e = {.events = epoll_events(ev), .data.ptr = x};
    if (fd != x->watched_fd) {
        /* The old fd is still open until the next continue: removing it is safe. */
        if (x->watched_fd >= 0) {
            epoll_ctl(ep, EPOLL_CTL_DEL, x->watched_fd, NULL);
        }
        if (fd >= 0) {
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        }
        x->watched_fd = fd;
    } else if (fd >= 0 && ev != x->watched_events) {
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
    }
    x->watched_events = ev;
    x->due_ms = now_ms() + csql_dial_async_timeout_ms(x->h);
}

/* Continue one dial; 1 when it has ended. */
static int step(int ep, dial *x, int index)
{
    csql_conn *conn = NULL;
    int rc = csql_dial_async_continue(x->h, &conn);
    if (rc == CSQL_ERR_WOULD_BLOCK) {
        watch(ep, x);
        return 0;
    }
    if (x->watched_fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, x->watched_fd, NULL);
        x->watched_fd = -1;
    }
    if (rc == 0) {
        printf("dial %d: connected to %s with %s\n", index, csql_conn_instance(conn),
               SSL_get_version(csql_conn_ssl(conn)));
        csql_conn_close(conn);
    } else {
        printf("dial %d: %s\n", index, csql_error_last()->message);
        g_failed++;
    }
    csql_dial_async_free(x->h);
    x->h = NULL;
    x->done = 1;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: async_epoll p:r:i [N] [--admin-api URL] [--token T] "
                        "[--server-port P]\n");
        return 2;
    }
    const char *instance = argv[1];
    int n = 1;
    int a = 2;
    if (argc > 2 && argv[2][0] != '-') {
        n = atoi(argv[2]);
        a = 3;
    }
    if (n < 1 || n > MAX_DIALS) {
        fprintf(stderr, "async_epoll: N must be 1..%d\n", MAX_DIALS);
        return 2;
    }
    csql_config *cfg = NULL;
    int rc = csql_config_new(&cfg);
    for (; rc == 0 && a + 1 < argc; a += 2) {
        if (strcmp(argv[a], "--admin-api") == 0) {
            rc = csql_config_set_admin_api_endpoint(cfg, argv[a + 1]);
        } else if (strcmp(argv[a], "--token") == 0) {
            rc = csql_config_set_token(cfg, argv[a + 1]);
        } else if (strcmp(argv[a], "--server-port") == 0) {
            rc = csql_config_set_server_port(cfg, (uint16_t)atoi(argv[a + 1]));
        } else {
            fprintf(stderr, "async_epoll: unknown option %s\n", argv[a]);
            csql_config_free(cfg);
            return 2;
        }
    }
    csql_dialer *d = NULL;
    if (rc == 0) {
        rc = csql_dialer_new(&d, cfg);
    }
    csql_config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "async_epoll: %s\n", csql_error_last()->message);
        return 1;
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    dial *dials = calloc((size_t)n, sizeof(*dials));
    if (ep < 0 || dials == NULL) {
        fprintf(stderr, "async_epoll: out of resources\n");
        return 1;
    }
    int live = 0;
    for (int i = 0; i < n; i++) {
        dials[i].watched_fd = -1;
        if (csql_dial_async_start(d, instance, NULL, NULL, NULL, &dials[i].h) != 0) {
            printf("dial %d: %s\n", i, csql_error_last()->message);
            dials[i].done = 1;
            g_failed++;
            continue;
        }
        live++;
        live -= step(ep, &dials[i], i); /* the first continue: right after start */
    }

    /* Each round waits for events or the nearest deadline; every dial has one. */
    while (live > 0) {
        int64_t now = now_ms();
        int64_t wait = INT32_MAX;
        for (int i = 0; i < n; i++) {
            if (!dials[i].done && dials[i].due_ms - now < wait) {
                wait = dials[i].due_ms - now;
            }
        }
        struct epoll_event evs[64];
        int k = epoll_wait(ep, evs, 64, wait < 0 ? 0 : (int)wait);
        for (int j = 0; j < k; j++) {
            dial *x = evs[j].data.ptr;
            if (!x->done) {
                live -= step(ep, x, (int)(x - dials));
            }
        }
        now = now_ms();
        for (int i = 0; i < n; i++) {
            if (!dials[i].done && dials[i].due_ms <= now) {
                live -= step(ep, &dials[i], i);
            }
        }
    }
    free(dials);
    close(ep);
    csql_dialer_free(d);
    return g_failed ? 1 : 0;
}
