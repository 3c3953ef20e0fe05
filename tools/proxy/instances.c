/* csql-proxy: instance arguments, conflict rules and listener plans (instances.h). */
#include "instances.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "values.h"

#define PG_SOCKET_NAME ".s.PGSQL.5432"
#define MAX_QUERY_KEYS 16

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

proxy_db proxy_db_of(const char *v)
{
    if (v != NULL && strncmp(v, "MYSQL", 5) == 0) {
        return DB_MYSQL;
    }
    if (v != NULL && strncmp(v, "SQLSERVER", 9) == 0) {
        return DB_SQLSERVER;
    }
    return DB_POSTGRES;
}

/* project:region:instance, or domain:project:region:instance; no empty part, no blanks or '/'. */
static bool name_ok(const char *name)
{
    int parts = 1;
    size_t part_len = 0;
    for (const char *p = name; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == ':') {
            if (part_len == 0) {
                return false;
            }
            parts++;
            part_len = 0;
        } else if (c <= ' ' || c == '/' || c == 0x7f) {
            return false;
        } else {
            part_len++;
        }
    }
    return part_len > 0 && (parts == 3 || parts == 4);
}

typedef struct qparam {
    char *key;
    char *value;
} qparam;

static void qparams_free(qparam *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(q[i].key);
        free(q[i].value);
    }
}

/* Split "k=v&k2=v2" (Go url.ParseQuery rules; ';' is refused as Go 1.17+ does). */
static int split_query(const char *spec, const char *query, qparam *q, size_t *n, char *err,
                       size_t errlen)
{
    *n = 0;
    const char *p = query;
    while (*p != '\0') {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > 0) {
            if (memchr(p, ';', len) != NULL) {
                return fail(err, errlen, "instance \"%s\": ';' is not a query separator (use '&')",
                            spec);
            }
            if (*n == MAX_QUERY_KEYS) {
                return fail(err, errlen, "instance \"%s\": more than %d query parameters", spec,
                            MAX_QUERY_KEYS);
            }
            const char *eq = memchr(p, '=', len);
            size_t klen = eq ? (size_t)(eq - p) : len;
            q[*n].key = pv_query_unescape(p, klen);
            q[*n].value = eq ? pv_query_unescape(eq + 1, len - klen - 1) : strdup("");
            (*n)++;
            if (q[*n - 1].key == NULL || q[*n - 1].value == NULL) {
                return fail(err, errlen,
                            "instance \"%s\": bad %%-escape in query parameter \"%.*s\"", spec,
                            (int)len, p);
            }
        }
        p += len + (amp != NULL);
    }
    return 0;
}

static int take_bool(const char *spec, const qparam *q, proxy_tri *out, char *err, size_t errlen)
{
    bool b;
    if (pv_query_bool(q->value, &b) != 0) {
        return fail(err, errlen,
                    "instance \"%s\": query parameter %s=\"%s\" is not true, t, false or f", spec,
                    q->key, q->value);
    }
    *out = b ? TRI_TRUE : TRI_FALSE;
    return 0;
}

static int take_string(char **slot, const qparam *q)
{
    *slot = strdup(q->value);
    return *slot == NULL ? -1 : 0;
}

/* Apply one query parameter to *out. */
static int apply_param(const char *spec, const qparam *q, proxy_instance *out, char *err,
                       size_t errlen)
{
    const char *k = q->key;
    if (strcmp(k, "address") == 0) {
        if (!pv_is_ip(q->value)) {
            return fail(err, errlen,
                        "instance \"%s\": query parameter address=\"%s\" is not an IPv4 or IPv6 "
                        "address",
                        spec, q->value);
        }
        return take_string(&out->address, q);
    }
    if (strcmp(k, "port") == 0) {
        int port;
        if (pv_port(q->value, &port) != 0) {
            return fail(err, errlen,
                        "instance \"%s\": query parameter port=\"%s\" is not a port number "
                        "(0..65535)",
                        spec, q->value);
        }
        out->port = port == 0 ? -1 : port; /* 0 means unset, as in the Auth Proxy */
        return 0;
    }
    if (strcmp(k, "unix-socket") == 0 || strcmp(k, "unix-socket-path") == 0) {
        if (q->value[0] == '\0') {
            return fail(err, errlen, "instance \"%s\": query parameter %s is empty", spec, k);
        }
        return take_string(k[11] == '\0' ? &out->unix_socket : &out->unix_socket_path, q);
    }
    if (strcmp(k, "auto-iam-authn") == 0) {
        return take_bool(spec, q, &out->iam_authn, err, errlen);
    }
    if (strcmp(k, "private-ip") == 0) {
        return take_bool(spec, q, &out->private_ip, err, errlen);
    }
    if (strcmp(k, "psc") == 0) {
        return take_bool(spec, q, &out->psc, err, errlen);
    }
    if (strcmp(k, "sql-data") == 0) {
        if (strcmp(q->value, "false") == 0) {
            return 0;
        }
        return fail(err, errlen, "instance \"%s\": sql-data=\"%s\": the SQL Data API is not "
                                 "supported by csql-proxy",
                    spec, q->value);
    }
    return fail(err, errlen,
                "instance \"%s\": unknown query parameter \"%s\" (known: address, port, "
                "unix-socket, unix-socket-path, auto-iam-authn, private-ip, psc)",
                spec, k);
}

static int check_conflicts(const char *spec, const proxy_opts *g, const proxy_instance *in,
                           char *err, size_t errlen)
{
    bool unix_any = in->unix_socket != NULL || in->unix_socket_path != NULL;
    if (in->address != NULL && unix_any) {
        return fail(err, errlen,
                    "instance \"%s\": address cannot be combined with unix-socket or "
                    "unix-socket-path",
                    spec);
    }
    if (in->port >= 0 && unix_any) {
        return fail(err, errlen,
                    "instance \"%s\": port cannot be combined with unix-socket or "
                    "unix-socket-path",
                    spec);
    }
    if (in->unix_socket != NULL && in->unix_socket_path != NULL) {
        return fail(err, errlen,
                    "instance \"%s\": unix-socket and unix-socket-path cannot be used together",
                    spec);
    }
    if (in->private_ip == TRI_TRUE && in->psc == TRI_TRUE) {
        return fail(err, errlen, "instance \"%s\": private-ip and psc cannot both be true", spec);
    }
    if (in->private_ip == TRI_TRUE && g->auto_ip) {
        return fail(err, errlen,
                    "instance \"%s\": private-ip=true cannot be combined with --auto-ip", spec);
    }
    return 0;
}

int proxy_instance_parse(const char *spec, const proxy_opts *g, proxy_instance *out, char *err,
                         size_t errlen)
{
    qparam q[MAX_QUERY_KEYS];
    size_t nq = 0;
    int rc = -1;
    if (errlen > 0) {
        err[0] = '\0';
    }
    memset(out, 0, sizeof(*out));
    proxy_instance_clear(out);
    out->spec = strdup(spec);
    const char *qm = strchr(spec, '?');
    size_t name_len = qm ? (size_t)(qm - spec) : strlen(spec);
    out->name = strndup(spec, name_len);
    if (out->spec == NULL || out->name == NULL) {
        fail(err, errlen, "out of memory");
        goto out;
    }
    if (!name_ok(out->name)) {
        fail(err, errlen,
             "instance \"%s\": \"%s\" is not an instance connection name "
             "(PROJECT:REGION:INSTANCE)",
             spec, out->name);
        goto out;
    }
    if (qm != NULL && split_query(spec, qm + 1, q, &nq, err, errlen) != 0) {
        goto out;
    }
    for (size_t i = 0; i < nq; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(q[i].key, q[j].key) == 0) {
                fail(err, errlen, "instance \"%s\": query parameter \"%s\" is given twice", spec,
                     q[i].key);
                goto out;
            }
        }
        if (apply_param(spec, &q[i], out, err, errlen) != 0) {
            if (err[0] == '\0') {
                fail(err, errlen, "out of memory");
            }
            goto out;
        }
    }
    rc = check_conflicts(spec, g, out, err, errlen);
out:
    qparams_free(q, nq);
    if (rc != 0) {
        proxy_instance_clear(out);
    }
    return rc;
}

csql_ip_type proxy_instance_ip_type(const proxy_opts *g, const proxy_instance *in)
{
    if (in->private_ip == TRI_TRUE || (in->private_ip == TRI_UNSET && g->private_ip)) {
        return CSQL_IP_PRIVATE;
    }
    if (in->psc == TRI_TRUE || (in->psc == TRI_UNSET && g->psc)) {
        return CSQL_IP_PSC;
    }
    if (g->auto_ip) {
        return CSQL_IP_AUTO;
    }
    return CSQL_IP_PUBLIC;
}

bool proxy_instance_iam(const proxy_opts *g, const proxy_instance *in)
{
    return in->iam_authn == TRI_UNSET ? g->auto_iam_authn : in->iam_authn == TRI_TRUE;
}

bool proxy_instance_is_tcp(const proxy_opts *g, const proxy_instance *in)
{
    bool no_unix = g->unix_socket == NULL && in->unix_socket == NULL && in->unix_socket_path == NULL;
    return no_unix || in->address != NULL || in->port >= 0;
}

bool proxy_instance_needs_version(const proxy_opts *g, const proxy_instance *in)
{
    if (!proxy_instance_is_tcp(g, in)) {
        return true;
    }
    return in->port < 0 && g->port == 0;
}

void proxy_ports_init(proxy_ports *p, int global_port)
{
    p->global = global_port;
    p->postgres = 5432;
    p->mysql = 3306;
    p->sqlserver = 1433;
}

static int next_db_port(proxy_ports *p, const char *version)
{
    switch (proxy_db_of(version)) {
    case DB_MYSQL:
        return p->mysql++;
    case DB_SQLSERVER:
        return p->sqlserver++;
    default:
        return p->postgres++;
    }
}

/* Split path into dir and base (no trailing slashes on either). */
static int split_path(const char *path, char *dir, char *base, size_t cap)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') {
        n--;
    }
    const char *slash = memrchr(path, '/', n);
    size_t dlen = slash == NULL ? 1 : (slash == path ? 1 : (size_t)(slash - path));
    const char *b = slash == NULL ? path : slash + 1;
    size_t blen = n - (size_t)(b - path);
    if (dlen >= cap || blen >= cap || blen == 0) {
        return -1;
    }
    if (slash == NULL) {
        dir[0] = '.';
    } else {
        memcpy(dir, slash == path ? "/" : path, dlen);
    }
    dir[dlen] = '\0';
    memcpy(base, b, blen);
    base[blen] = '\0';
    return 0;
}

static int plan_unix(const proxy_opts *g, const proxy_instance *in, bool postgres,
                     proxy_listen_plan *out, char *err, size_t errlen)
{
    char where[PROXY_UNIX_PATH_MAX * 2 + 2];
    if (in->unix_socket_path != NULL) {
        char d[sizeof(where)], b[sizeof(where)];
        snprintf(where, sizeof(where), "%s", in->unix_socket_path);
        if (postgres && split_path(where, d, b, sizeof(d)) == 0 && strcmp(b, PG_SOCKET_NAME) == 0) {
            snprintf(where, sizeof(where), "%s", d); /* the directory libpq's host= names */
        }
    } else {
        const char *dir = in->unix_socket != NULL ? in->unix_socket : g->unix_socket;
        size_t dl = strlen(dir);
        while (dl > 1 && dir[dl - 1] == '/') {
            dl--;
        }
        snprintf(where, sizeof(where), "%.*s/%s", (int)dl, dir, in->name);
    }
    if (postgres) {
        snprintf(out->dir, sizeof(out->dir), "%s", where);
        snprintf(out->name, sizeof(out->name), "%s", PG_SOCKET_NAME);
        out->make_dir = true;
    } else if (split_path(where, out->dir, out->name, sizeof(out->dir)) != 0) {
        return fail(err, errlen, "instance \"%s\": Unix socket path \"%s\" is not usable",
                    in->spec, where);
    }
    int n = snprintf(out->shown, sizeof(out->shown), "%s/%s", out->dir, out->name);
    if (n < 0 || n > PROXY_UNIX_PATH_MAX || strlen(where) > PROXY_UNIX_PATH_MAX) {
        return fail(err, errlen,
                    "instance \"%s\": Unix socket path \"%s/%s\" is longer than %d bytes", in->spec,
                    out->dir, out->name, PROXY_UNIX_PATH_MAX);
    }
    return 0;
}

int proxy_instance_plan(const proxy_opts *g, const proxy_instance *in,
                        const char *database_version, proxy_ports *ports,
                        proxy_listen_plan *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!proxy_instance_is_tcp(g, in)) {
        out->tcp = false;
        return plan_unix(g, in, proxy_db_of(database_version) == DB_POSTGRES, out, err,
                         errlen);
    }
    out->tcp = true;
    const char *addr = in->address != NULL ? in->address : g->address;
    snprintf(out->address, sizeof(out->address), "%s", addr);
    int port;
    if (in->port >= 0) {
        port = in->port;
    } else if (g->port != 0) {
        port = ports->global++;
    } else {
        port = next_db_port(ports, database_version);
    }
    if (port > 65535) {
        return fail(err, errlen, "instance \"%s\": its port would be %d, above 65535", in->spec,
                    port);
    }
    out->port = port;
    snprintf(out->shown, sizeof(out->shown), strchr(addr, ':') ? "[%s]:%d" : "%s:%d", addr, port);
    return 0;
}
