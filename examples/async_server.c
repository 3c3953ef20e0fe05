/*
 * async_server: a small HTTP-ish server on libuv that dials Cloud SQL without
 * ever stalling its loop (csql/adapters/libuv.h). While dials are in flight
 * it keeps answering requests, and a 1 ms timer measures how late the loop
 * runs (the largest gap between its ticks).
 *
 *   async_server --instance p:r:i [--admin-api URL] [--token T] [--server-port N]
 *                [--listen PORT] [--timeout-ms N]
 *
 * It prints "listening on 127.0.0.1:PORT" and serves, one request per connection:
 *   GET /            "hello" at once
 *   GET /dial?n=N    dial the instance N times at once; answers when all are done:
 *                    {"ok":..,"failed":..,"ms":..,"first_error":".."}
 *   GET /stats       {"max_gap_us":..,"max_gap_during_dials_us":..,"max_gap_cpu_us":..,
 *                    "max_busy_us":..,"ticks":..,"in_flight":..}: gaps are wall-clock time
 *                    between ticks while dials run; cpu is the loop thread's own CPU time in
 *                    the largest gap; busy the most CPU it used between any two ticks
 *   GET /reset       start measuring the gaps afresh
 *   GET /quit        stop
 * Without --token it uses Application Default Credentials.
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "csql/adapters/libuv.h"
#include "csql/csql.h"

#define REQ_MAX 4096
#define MAX_DIALS_PER_REQUEST 10000

typedef struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t tick;
    csql_dialer *dialer;
    const char *instance;
    csql_dial_options opts;
    /* the loop's latency */
    uint64_t last_tick_ns;
    uint64_t last_tick_cpu_ns;
    uint64_t max_gap_us;
    uint64_t max_gap_cpu_us;      /* the loop thread's own CPU time in the largest gap */
    uint64_t max_busy_us;         /* the most CPU the loop thread used between two ticks */
    uint64_t max_gap_during_dials_us;
    uint64_t ticks;
    int in_flight;
    int quitting;
} server;

typedef struct client {
    uv_tcp_t tcp;
    server *srv;
    char buf[REQ_MAX];
    size_t len;
    int answered;
} client;

/* One GET /dial: its dials report here; the answer goes out when the last one has. */
typedef struct batch {
    client *c;
    int total, done, ok, failed;
    uint64_t start_ns;
    char first_error[256];
} batch;

typedef struct write_req {
    uv_write_t w;
    char *data;
} write_req;

/* ---- responses ---- */

static void on_closed(uv_handle_t *h)
{
    free(h->data); /* the client around the handle */
}

static void close_client(client *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        c->tcp.data = c;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    write_req *wr = (write_req *)w;
    client *c = w->handle->data;
    free(wr->data);
    free(wr);
    close_client(c);
}

static void respond(client *c, int code, const char *body)
{
    if (c->answered) {
        return;
    }
    c->answered = 1;
    write_req *wr = malloc(sizeof(*wr));
    size_t cap = strlen(body) + 128;
    char *out = malloc(cap);
    if (wr == NULL || out == NULL) {
        free(wr);
        free(out);
        close_client(c);
        return;
    }
    int n = snprintf(out, cap,
                     "HTTP/1.0 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
                     code, code == 200 ? "OK" : "Error", strlen(body), body);
    wr->data = out;
    uv_buf_t b = uv_buf_init(out, (unsigned)n);
    c->tcp.data = c;
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
        free(out);
        free(wr);
        close_client(c);
    }
}

/* ---- dials ---- */

static void on_dialled(csql_uv_dial *req, int status, csql_conn *conn, void *ud)
{
    (void)req;
    batch *b = ud;
    server *srv = b->c->srv;
    srv->in_flight--;
    b->done++;
    if (status == 0) {
        b->ok++;
        /* A real server would now speak its database protocol over conn. */
        csql_conn_close(conn);
    } else {
        b->failed++;
        if (b->first_error[0] == '\0') {
            snprintf(b->first_error, sizeof(b->first_error), "%s", csql_error_last()->message);
            for (char *p = b->first_error; *p; p++) {
                if (*p == '"' || *p == '\\') {
                    *p = '\'';
                }
            }
        }
    }
    if (b->done == b->total) {
        char body[512];
        snprintf(body, sizeof(body), "{\"ok\":%d,\"failed\":%d,\"ms\":%llu,\"first_error\":\"%s\"}\n",
                 b->ok, b->failed,
                 (unsigned long long)((uv_hrtime() - b->start_ns) / 1000000), b->first_error);
        respond(b->c, 200, body);
        free(b);
    }
}

static void start_dials(client *c, int n)
{
    server *srv = c->srv;
    batch *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        respond(c, 500, "out of memory\n");
        return;
    }
    b->c = c;
    b->total = n;
    b->start_ns = uv_hrtime();
    for (int i = 0; i < n; i++) {
        csql_uv_dial *req;
        if (csql_uv_dial_start(srv->loop, srv->dialer, srv->instance, &srv->opts, on_dialled, b,
                               &req) != 0) {
            /* Not started: its callback will not run; count it here. */
            b->total--;
            b->failed++;
            snprintf(b->first_error, sizeof(b->first_error), "%s", csql_error_last()->message);
            continue;
        }
        srv->in_flight++;
    }
    if (b->total == 0) {
        respond(c, 500, "no dial could start\n");
        free(b);
    }
}

/* ---- requests ---- */

static void handle_request(client *c)
{
    server *srv = c->srv;
    char path[256] = "";
    if (sscanf(c->buf, "GET %255s", path) != 1) {
        respond(c, 400, "only GET\n");
        return;
    }
    if (strcmp(path, "/") == 0) {
        respond(c, 200, "hello\n");
    } else if (strncmp(path, "/dial", 5) == 0) {
        const char *q = strstr(path, "n=");
        int n = q ? atoi(q + 2) : 1;
        if (n < 1 || n > MAX_DIALS_PER_REQUEST) {
            respond(c, 400, "n must be 1..10000\n");
            return;
        }
        start_dials(c, n);
    } else if (strcmp(path, "/stats") == 0) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"max_gap_us\":%llu,\"max_gap_during_dials_us\":%llu,"
                 "\"max_gap_cpu_us\":%llu,\"max_busy_us\":%llu,\"ticks\":%llu,"
                 "\"in_flight\":%d}\n",
                 (unsigned long long)srv->max_gap_us,
                 (unsigned long long)srv->max_gap_during_dials_us,
                 (unsigned long long)srv->max_gap_cpu_us, (unsigned long long)srv->max_busy_us,
                 (unsigned long long)srv->ticks, srv->in_flight);
        respond(c, 200, body);
    } else if (strcmp(path, "/reset") == 0) {
        srv->max_gap_us = srv->max_gap_during_dials_us = srv->max_gap_cpu_us = 0;
        srv->max_busy_us = 0;
        srv->ticks = 0;
        respond(c, 200, "reset\n");
    } else if (strcmp(path, "/quit") == 0) {
        respond(c, 200, "bye\n");
        srv->quitting = 1;
        uv_close((uv_handle_t *)&srv->listener, NULL);
        uv_close((uv_handle_t *)&srv->tick, NULL); /* the loop ends once dials in flight are done */
    } else {
        respond(c, 404, "not found\n");
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    client *c = h->data;
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    client *c = s->data;
    if (n < 0) {
        close_client(c);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (strstr(c->buf, "\r\n\r\n") != NULL || strstr(c->buf, "\n\n") != NULL) {
        uv_read_stop(s);
        handle_request(c);
    } else if (c->len >= sizeof(c->buf) - 1) {
        uv_read_stop(s);
        respond(c, 400, "request too long\n");
    }
}

static void on_connection(uv_stream_t *l, int status)
{
    server *srv = l->data;
    if (status != 0) {
        return;
    }
    client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return;
    }
    c->srv = srv;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        close_client(c);
    }
}

/* ---- the loop's latency ---- */

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_tick(uv_timer_t *t)
{
    server *srv = t->data;
    uint64_t now = uv_hrtime();
    uint64_t cpu = thread_cpu_ns();
    if (srv->last_tick_ns != 0) {
        uint64_t gap = (now - srv->last_tick_ns) / 1000;
        if (gap > srv->max_gap_us) {
            srv->max_gap_us = gap;
        }
        uint64_t busy = (cpu - srv->last_tick_cpu_ns) / 1000;
        if (srv->in_flight > 0 && gap > srv->max_gap_during_dials_us) {
            srv->max_gap_during_dials_us = gap;
            srv->max_gap_cpu_us = busy;
        }
        if (srv->in_flight > 0 && busy > srv->max_busy_us) {
            srv->max_busy_us = busy;
        }
    }
    srv->last_tick_ns = now;
    srv->last_tick_cpu_ns = cpu;
    srv->ticks++;
}

/* ---- main ---- */

static int usage(void)
{
    fprintf(stderr, "usage: async_server --instance p:r:i [--admin-api URL] [--token T] "
                    "[--server-port N] [--listen PORT] [--timeout-ms N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    server srv;
    memset(&srv, 0, sizeof(srv));
    csql_dial_options init = CSQL_DIAL_OPTIONS_INIT;
    srv.opts = init;
    const char *api = NULL, *token = NULL;
    int server_port = 0, listen_port = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--instance") == 0) {
            srv.instance = argv[i + 1];
        } else if (strcmp(argv[i], "--admin-api") == 0) {
            api = argv[i + 1];
        } else if (strcmp(argv[i], "--token") == 0) {
            token = argv[i + 1];
        } else if (strcmp(argv[i], "--server-port") == 0) {
            server_port = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--listen") == 0) {
            listen_port = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--timeout-ms") == 0) {
            srv.opts.timeout_ms = (uint32_t)atoi(argv[i + 1]);
        } else {
            return usage();
        }
    }
    if (srv.instance == NULL || (argc % 2) != 1) {
        return usage();
    }
    csql_config *cfg = NULL;
    int rc = csql_config_new(&cfg);
    if (rc == 0 && api != NULL) {
        rc = csql_config_set_admin_api_endpoint(cfg, api);
    }
    if (rc == 0 && token != NULL) {
        rc = csql_config_set_token(cfg, token);
    }
    if (rc == 0 && server_port > 0) {
        rc = csql_config_set_server_port(cfg, (uint16_t)server_port);
    }
    if (rc == 0) {
        rc = csql_dialer_new(&srv.dialer, cfg);
    }
    csql_config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "async_server: %s\n", csql_error_last()->message);
        return 1;
    }

    srv.loop = uv_default_loop();
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", listen_port, &addr);
    uv_tcp_init(srv.loop, &srv.listener);
    srv.listener.data = &srv;
    if (uv_tcp_bind(&srv.listener, (const struct sockaddr *)&addr, 0) != 0 ||
        uv_listen((uv_stream_t *)&srv.listener, 512, on_connection) != 0) {
        fprintf(stderr, "async_server: cannot listen on 127.0.0.1:%d\n", listen_port);
        csql_dialer_free(srv.dialer);
        return 1;
    }
    struct sockaddr_in bound;
    int blen = sizeof(bound);
    uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&bound, &blen);
    printf("listening on 127.0.0.1:%d\n", ntohs(bound.sin_port));
    fflush(stdout);

    uv_timer_init(srv.loop, &srv.tick);
    srv.tick.data = &srv;
    uv_timer_start(&srv.tick, on_tick, 1, 1);

    uv_run(srv.loop, UV_RUN_DEFAULT);

    uv_loop_close(srv.loop);
    csql_dialer_free(srv.dialer);
    return 0;
}
