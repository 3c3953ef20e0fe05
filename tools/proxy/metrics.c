/* csql-proxy metrics: counters and the Prometheus text format (metrics.h). */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csql/errors.h"

const double metrics_latency_bounds_ms[METRICS_LATENCY_BUCKETS] = {0,   5,    25,   100,  250,
                                                                   500, 1000, 2000, 5000, 30000};

int metrics_init(metrics *m, const char *const *names, size_t n, uint64_t max_connections,
                 const char *version)
{
    memset(m, 0, sizeof(*m));
    m->inst = calloc(n > 0 ? n : 1, sizeof(*m->inst));
    if (m->inst == NULL) {
        return -1;
    }
    m->max_connections = max_connections;
    m->version = version;
    for (size_t i = 0; i < n; i++) {
        if (metrics_find(m, names[i]) != NULL) {
            continue;
        }
        metrics_instance *mi = &m->inst[m->n];
        pthread_mutex_init(&mi->mu, NULL);
        m->n++;
        if ((mi->name = strdup(names[i])) == NULL) {
            metrics_free(m);
            return -1;
        }
    }
    return 0;
}

void metrics_free(metrics *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->inst[i].name);
        pthread_mutex_destroy(&m->inst[i].mu);
    }
    free(m->inst);
    memset(m, 0, sizeof(*m));
}

metrics_instance *metrics_find(metrics *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->inst[i].name, name) == 0) {
            return &m->inst[i];
        }
    }
    return NULL;
}

void metrics_dial_done(metrics_instance *mi, uint64_t dial_us, bool ok)
{
    double ms = (double)dial_us / 1000.0;
    size_t b = 0;
    while (b < METRICS_LATENCY_BUCKETS && ms > metrics_latency_bounds_ms[b]) {
        b++;
    }
    atomic_fetch_add(&mi->dial_buckets[b], 1);
    atomic_fetch_add(&mi->dial_count, 1);
    atomic_fetch_add(&mi->dial_sum_us, dial_us);
    if (!ok) {
        atomic_fetch_add(&mi->dial_failures, 1);
    }
}

void metrics_refresh_done(metrics_instance *mi, bool ok, const char *reason)
{
    if (ok) {
        atomic_fetch_add(&mi->refresh_ok, 1);
        return;
    }
    pthread_mutex_lock(&mi->mu);
    size_t i = 0;
    while (i < mi->n_reasons && strcmp(mi->reasons[i].reason, reason) != 0) {
        i++;
    }
    if (i == mi->n_reasons && i < METRICS_MAX_REASONS) {
        snprintf(mi->reasons[i].reason, sizeof(mi->reasons[i].reason), "%s", reason);
        mi->n_reasons++;
    }
    if (i < METRICS_MAX_REASONS) {
        mi->reasons[i].count++;
    } else {
        mi->refresh_failed_other++;
    }
    pthread_mutex_unlock(&mi->mu);
}

const char *metrics_error_reason(int code, const char *api_reason)
{
    if (api_reason != NULL && api_reason[0] != '\0') {
        return api_reason;
    }
    switch (code) {
    case CSQL_ERR_NOMEM: return "NOMEM";
    case CSQL_ERR_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case CSQL_ERR_BAD_INSTANCE_NAME: return "BAD_INSTANCE_NAME";
    case CSQL_ERR_BAD_CONFIG: return "BAD_CONFIG";
    case CSQL_ERR_CREDENTIALS: return "CREDENTIALS";
    case CSQL_ERR_TOKEN: return "TOKEN";
    case CSQL_ERR_API: return "API";
    case CSQL_ERR_API_RESPONSE: return "API_RESPONSE";
    case CSQL_ERR_NOT_FOUND: return "NOT_FOUND";
    case CSQL_ERR_PERMISSION_DENIED: return "PERMISSION_DENIED";
    case CSQL_ERR_REGION_MISMATCH: return "REGION_MISMATCH";
    case CSQL_ERR_UNSUPPORTED_INSTANCE: return "UNSUPPORTED_INSTANCE";
    case CSQL_ERR_NO_IP_TYPE: return "NO_IP_TYPE";
    case CSQL_ERR_DNS: return "DNS";
    case CSQL_ERR_CONNECT: return "CONNECT";
    case CSQL_ERR_IO: return "IO";
    case CSQL_ERR_TLS_HANDSHAKE: return "TLS_HANDSHAKE";
    case CSQL_ERR_TLS_VERIFY: return "TLS_VERIFY";
    case CSQL_ERR_TLS_IO: return "TLS_IO";
    case CSQL_ERR_TIMEOUT: return "TIMEOUT";
    case CSQL_ERR_CLOSED: return "CLOSED";
    case CSQL_ERR_IAM_UNSUPPORTED: return "IAM_UNSUPPORTED";
    case CSQL_ERR_RATE_LIMITED: return "RATE_LIMITED";
    case CSQL_ERR_MDX: return "MDX";
    default: return "INTERNAL";
    }
}

/* ---- rendering ---- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(sbuf *b, const char *fmt, ...)
{
    if (b->oom) {
        return;
    }
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A label value with \, " and newline escaped, into buf. */
static const char *esc(const char *s, char *buf, size_t cap)
{
    size_t o = 0;
    for (; *s != '\0' && o + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            buf[o++] = '\\';
            buf[o++] = *s;
        } else if (*s == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else {
            buf[o++] = *s;
        }
    }
    buf[o] = '\0';
    return buf;
}

typedef struct renderer {
    sbuf b;
    const char *ns;
    const char *sep;
} renderer;

static void header(renderer *r, const char *name, const char *type, const char *help)
{
    put(&r->b, "# HELP %s%s%s %s\n# TYPE %s%s%s %s\n", r->ns, r->sep, name, help, r->ns, r->sep,
        name, type);
}

static void sample(renderer *r, const char *name, const char *inst, uint64_t v)
{
    char e[512];
    put(&r->b, "%s%s%s{cloudsql_instance=\"%s\"} %" PRIu64 "\n", r->ns, r->sep, name,
        esc(inst, e, sizeof(e)), v);
}

typedef enum per_instance {
    PI_OPEN,
    PI_DIAL_FAILURES,
    PI_REFRESH_OK,
    PI_BYTES_SENT,
    PI_BYTES_RECEIVED,
    PI_ACCEPTED,
    PI_REFUSED,
    PI_SERVING,
} per_instance;

static uint64_t value_of(metrics_instance *mi, per_instance which)
{
    switch (which) {
    case PI_OPEN: {
        int_fast64_t v = atomic_load(&mi->open);
        return v > 0 ? (uint64_t)v : 0;
    }
    case PI_DIAL_FAILURES: return atomic_load(&mi->dial_failures);
    case PI_REFRESH_OK: return atomic_load(&mi->refresh_ok);
    case PI_BYTES_SENT: return atomic_load(&mi->bytes_sent);
    case PI_BYTES_RECEIVED: return atomic_load(&mi->bytes_received);
    case PI_ACCEPTED: return atomic_load(&mi->accepted);
    case PI_REFUSED: return atomic_load(&mi->refused);
    case PI_SERVING: return atomic_load(&mi->serving) ? 1 : 0;
    default: return 0;
    }
}

static void family(renderer *r, metrics *m, const char *name, const char *type, const char *help,
                   per_instance which)
{
    header(r, name, type, help);
    for (size_t i = 0; i < m->n; i++) {
        sample(r, name, m->inst[i].name, value_of(&m->inst[i], which));
    }
}

static void latency(renderer *r, metrics *m)
{
    const char *name = "cloudsqlconn_dial_latency";
    header(r, name, "histogram", "The distribution of dialer latencies (ms)");
    for (size_t i = 0; i < m->n; i++) {
        metrics_instance *mi = &m->inst[i];
        char e[512];
        esc(mi->name, e, sizeof(e));
        uint64_t cum = 0;
        for (size_t b = 0; b <= METRICS_LATENCY_BUCKETS; b++) {
            cum += atomic_load(&mi->dial_buckets[b]);
            if (b < METRICS_LATENCY_BUCKETS) {
                put(&r->b, "%s%s%s_bucket{cloudsql_instance=\"%s\",le=\"%g\"} %" PRIu64 "\n",
                    r->ns, r->sep, name, e, metrics_latency_bounds_ms[b], cum);
            } else {
                put(&r->b, "%s%s%s_bucket{cloudsql_instance=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
                    r->ns, r->sep, name, e, cum);
            }
        }
        /* Count from the buckets so that count == +Inf bucket even while dials land. */
        uint64_t sum_us = atomic_load(&mi->dial_sum_us);
        put(&r->b, "%s%s%s_sum{cloudsql_instance=\"%s\"} %.3f\n", r->ns, r->sep, name, e,
            (double)sum_us / 1000.0);
        put(&r->b, "%s%s%s_count{cloudsql_instance=\"%s\"} %" PRIu64 "\n", r->ns, r->sep, name,
            e, cum);
    }
}

static void refresh_failures(renderer *r, metrics *m)
{
    const char *name = "cloudsqlconn_refresh_failure_count";
    header(r, name, "counter", "The number of failed certificate refresh operations");
    for (size_t i = 0; i < m->n; i++) {
        metrics_instance *mi = &m->inst[i];
        char e[512], er[2 * METRICS_REASON_LEN + 4];
        esc(mi->name, e, sizeof(e));
        pthread_mutex_lock(&mi->mu);
        for (size_t k = 0; k < mi->n_reasons; k++) {
            put(&r->b,
                "%s%s%s{cloudsql_error_code=\"%s\",cloudsql_instance=\"%s\"} %" PRIu64 "\n",
                r->ns, r->sep, name, esc(mi->reasons[k].reason, er, sizeof(er)), e,
                mi->reasons[k].count);
        }
        if (mi->refresh_failed_other > 0) {
            put(&r->b,
                "%s%s%s{cloudsql_error_code=\"OTHER\",cloudsql_instance=\"%s\"} %" PRIu64 "\n",
                r->ns, r->sep, name, e, mi->refresh_failed_other);
        }
        pthread_mutex_unlock(&mi->mu);
    }
}

int metrics_render(metrics *m, const char *ns, char **out, size_t *len)
{
    renderer r = {.ns = ns ? ns : "", .sep = (ns && ns[0]) ? "_" : ""};
    r.b.cap = 4096;
    r.b.p = malloc(r.b.cap);
    if (r.b.p == NULL) {
        return -1;
    }
    r.b.p[0] = '\0';
    if (m->have_conn_events) {
        latency(&r, m);
        family(&r, m, "cloudsqlconn_open_connections", "gauge",
               "The current number of open Cloud SQL connections", PI_OPEN);
    }
    family(&r, m, "cloudsqlconn_dial_failure_count", "counter",
           "The number of failed dial attempts", PI_DIAL_FAILURES);
    if (m->have_refresh_events) {
        family(&r, m, "cloudsqlconn_refresh_success_count", "counter",
               "The number of successful certificate refresh operations", PI_REFRESH_OK);
        refresh_failures(&r, m);
    }
    if (m->have_conn_events) {
        family(&r, m, "cloudsqlconn_bytes_sent", "counter",
               "The number of bytes sent to Cloud SQL", PI_BYTES_SENT);
        family(&r, m, "cloudsqlconn_bytes_received", "counter",
               "The number of bytes received from Cloud SQL", PI_BYTES_RECEIVED);
        family(&r, m, "csql_proxy_connections_accepted_total", "counter",
               "Client connections accepted by the listeners", PI_ACCEPTED);
        family(&r, m, "csql_proxy_connections_refused_total", "counter",
               "Client connections refused at --max-connections", PI_REFUSED);
    }
    family(&r, m, "csql_proxy_instance_serving", "gauge",
           "1 when the instance's listener is up, 0 when it failed or was skipped", PI_SERVING);
    header(&r, "csql_proxy_max_connections", "gauge", "--max-connections (0: no limit)");
    put(&r.b, "%s%scsql_proxy_max_connections %" PRIu64 "\n", r.ns, r.sep, m->max_connections);
    header(&r, "csql_proxy_build_info", "gauge", "csql-proxy version");
    put(&r.b, "%s%scsql_proxy_build_info{version=\"%s\"} 1\n", r.ns, r.sep,
        m->version ? m->version : "");
    if (r.b.oom) {
        free(r.b.p);
        return -1;
    }
    *out = r.b.p;
    *len = r.b.len;
    return 0;
}
