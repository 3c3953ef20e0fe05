/* The public ways to open a csql_endpoint: over csql_dial for each connection, or a pre-dialled conn. */
#include <stdlib.h>
#include <string.h>

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

/* Runs on a loop worker: one csql_dial per accepted connection. */
static int dial_with_dialer(void *arg, csql__fwd_remote *out)
{
    dial_ctx *c = arg;
    csql_conn *conn = NULL;
    int rc = csql_dial(c->d, c->instance, c->has_opts ? &c->opts : NULL, &conn);
    if (rc != CSQL_OK) {
        return rc;
    }
    out->conn = conn;
    out->fd = csql_conn_fd(conn);
    out->ssl = csql_conn_ssl(conn);
    return CSQL_OK;
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
                         const char *dir, const char *address, uint16_t port,
                         const csql_endpoint_options *opts)
{
    if (out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_endpoint_open: out is NULL");
    }
    *out = NULL;
    dial_ctx *c;
    int rc = dial_ctx_new(d, instance, opts, &c);
    if (rc != CSQL_OK) {
        return rc;
    }
    csql__endpoint_params p = {
        .loop_key = d,
        .tcp = tcp,
        .dir = dir,
        .address = address,
        .port = port,
        .dial = dial_with_dialer,
        .dial_ctx = c,
        .dial_ctx_free = dial_ctx_free,
        .opts = opts,
    };
    return csql__endpoint_open(out, &p);
}

int csql_endpoint_open_unix(csql_endpoint **out, csql_dialer *d, const char *instance,
                            const char *dir, const csql_endpoint_options *opts)
{
    return open_listener(out, d, instance, false, dir, NULL, 0, opts);
}

int csql_endpoint_open_tcp(csql_endpoint **out, csql_dialer *d, const char *instance,
                           const char *address, uint16_t port, const csql_endpoint_options *opts)
{
    return open_listener(out, d, instance, true, NULL, address, port, opts);
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
        .first = &first,
        .one_shot = d == NULL,
        .dial = d ? dial_with_dialer : NULL,
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
