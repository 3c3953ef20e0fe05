/* The public ways to open a csql_endpoint: a non-blocking dial per connection, or a pre-dialled conn. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dialer_internal.h"
#include "endpoint_internal.h"
#include "error.h"
#include "instance_name.h"

typedef struct dial_ctx {
    csql_dialer *d;
    char *instance;
    csql_dial_options opts;
    bool has_opts;
} dial_ctx;

static void dial_ctx_free(void *arg)
{
    dial_ctx *c = arg;
    if (c != NULL) {
        free(c->instance);
        free(c);
    }
}

/* On the loop thread: a non-blocking dial the loop drives. */
static int dial_async_with_dialer(void *arg, csql_dial_async **out)
{
    dial_ctx *c = arg;
    return csql_dial_async_start(c->d, c->instance, c->has_opts ? &c->opts : NULL, NULL, NULL, out);
}

static int dial_ctx_new(csql_dialer *d, const char *instance, const csql_endpoint_options *opts,
                        dial_ctx **out)
{
    *out = NULL;
    if (d == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_endpoint_open: dialer is NULL");
    }
    csql__instance_name name;
    int rc = csql__instance_name_parse(instance, &name);
    if (rc != CSQL_OK) {
        return rc;
    }
    dial_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->instance = strdup(instance)) == NULL) {
        free(c);
        return csql__error(CSQL_ERR_NOMEM, "out of memory for an endpoint");
    }
    c->d = d;
    if (opts != NULL && opts->dial != NULL) {
        c->opts = *opts->dial;
        c->has_opts = true;
    }
    *out = c;
    return CSQL_OK;
}

static int open_listener(csql_endpoint **out, csql_dialer *d, const char *instance, bool tcp,
                         const char *dir, const char *address, uint16_t port, int fd,
                         const csql_endpoint_options *opts)
{
    if (out == NULL) {
        if (fd >= 0) {
            close(fd);
        }
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_endpoint_open: out is NULL");
    }
    *out = NULL;
    dial_ctx *c;
    int rc = dial_ctx_new(d, instance, opts, &c);
    if (rc != CSQL_OK) {
        if (fd >= 0) {
            close(fd);
        }
        return rc;
    }
    csql__endpoint_params p = {
        .loop_key = d,
        .loops = d->cfg->event_loops,
        .tcp = tcp,
        .adopt_fd = fd >= 0,
        .fd = fd,
        .dir = dir,
        .address = address,
        .port = port,
        .dial_async = dial_async_with_dialer,
        .dial_ctx = c,
        .dial_ctx_free = dial_ctx_free,
        .opts = opts,
    };
    return csql__endpoint_open(out, &p);
}

int csql_endpoint_open_unix(csql_endpoint **out, csql_dialer *d, const char *instance,
                            const char *dir, const csql_endpoint_options *opts)
{
    return open_listener(out, d, instance, false, dir, NULL, 0, -1, opts);
}

int csql_endpoint_open_tcp(csql_endpoint **out, csql_dialer *d, const char *instance,
                           const char *address, uint16_t port, const csql_endpoint_options *opts)
{
    return open_listener(out, d, instance, true, NULL, address, port, -1, opts);
}

int csql_endpoint_open_fd(csql_endpoint **out, csql_dialer *d, const char *instance, int fd,
                          const csql_endpoint_options *opts)
{
    if (fd < 0) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_endpoint_open_fd: fd %d is invalid",
                           fd);
    }
    return open_listener(out, d, instance, false, NULL, NULL, 0, fd, opts);
}

int csql_endpoint_open_conn(csql_endpoint **out, csql_conn *conn, csql_dialer *d,
                            const csql_endpoint_options *opts)
{
    if (conn == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_endpoint_open_conn: conn is NULL");
    }
    csql__fwd_remote first = {
        .fd = csql_conn_fd(conn),
        .ssl = csql_conn_ssl(conn),
        .conn = conn,
    };
    dial_ctx *c = NULL;
    if (d != NULL) {
        int rc = dial_ctx_new(d, csql_conn_instance(conn), opts, &c);
        if (rc != CSQL_OK) {
            csql_conn_close(conn);
            return rc;
        }
    }
    csql__endpoint_params p = {
        /* Without a dialer, dialer-less one-shot endpoints share the loop keyed NULL. */
        .loop_key = d,
        .loops = d != NULL ? d->cfg->event_loops : 1,
        .first = &first,
        .one_shot = d == NULL,
        .dial_async = d ? dial_async_with_dialer : NULL,
        .dial_ctx = c,
        .dial_ctx_free = d ? dial_ctx_free : NULL,
        .opts = opts,
    };
    if (out == NULL) {
        csql_conn_close(conn);
        dial_ctx_free(c);
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_endpoint_open_conn: out is NULL");
    }
    return csql__endpoint_open(out, &p);
}
