/*
 * csql-proxy metrics: lock-free counters per instance, updated from the
 * event loop and refresh threads, rendered in the Prometheus text format
 * (version 0.0.4) for /metrics. Names shared with the Auth Proxy (the Go
 * connector's OpenCensus views, as its Prometheus exporter names them) keep
 * dashboards working: cloudsqlconn_dial_latency (histogram, ms, same
 * buckets), cloudsqlconn_open_connections, cloudsqlconn_dial_failure_count,
 * cloudsqlconn_refresh_success_count, cloudsqlconn_refresh_failure_count,
 * cloudsqlconn_bytes_sent, cloudsqlconn_bytes_received; csql_proxy_* are ours.
 * Families the linked libcsql cannot feed (see have_*) are left out rather
 * than shown as zeros.
 */
#ifndef CSQL_PROXY_METRICS_H
#define CSQL_PROXY_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_LATENCY_BUCKETS 10 /* upper bounds in ms: 0 5 25 100 250 500 1000 2000 5000 30000 */
#define METRICS_MAX_REASONS 16     /* distinct refresh failure reasons kept per instance */
#define METRICS_REASON_LEN 48

extern const double metrics_latency_bounds_ms[METRICS_LATENCY_BUCKETS];

typedef struct metrics_reason {
    char reason[METRICS_REASON_LEN];
    uint64_t count;
} metrics_reason;

typedef struct metrics_instance {
    char *name;
    atomic_bool serving;              /* its listener is up */
    atomic_int_fast64_t open;         /* forwarded or dialling now */
    atomic_uint_fast64_t accepted;
    atomic_uint_fast64_t refused;     /* over --max-connections */
    atomic_uint_fast64_t dial_failures;
    atomic_uint_fast64_t dial_buckets[METRICS_LATENCY_BUCKETS + 1]; /* last: above 30000 */
    atomic_uint_fast64_t dial_count;
    atomic_uint_fast64_t dial_sum_us;
    atomic_uint_fast64_t bytes_sent;     /* client -> instance */
    atomic_uint_fast64_t bytes_received; /* instance -> client */
    atomic_uint_fast64_t refresh_ok;
    pthread_mutex_t mu; /* guards reasons */
    metrics_reason reasons[METRICS_MAX_REASONS];
    size_t n_reasons;
    uint64_t refresh_failed_other; /* failures past METRICS_MAX_REASONS distinct reasons */
} metrics_instance;

typedef struct metrics {
    metrics_instance *inst;
    size_t n;
    uint64_t max_connections;
    const char *version;
    bool have_conn_events;    /* accepted, refused, open, latency and bytes are counted */
    bool have_refresh_events; /* refresh outcomes are counted */
} metrics;

/* Make counters for the distinct names among n (copied, first-seen order). -1 if out of memory. */
int metrics_init(metrics *m, const char *const *names, size_t n, uint64_t max_connections,
                 const char *version);
void metrics_free(metrics *m);

/* The counters of instance `name`, or NULL. */
metrics_instance *metrics_find(metrics *m, const char *name);

void metrics_dial_done(metrics_instance *mi, uint64_t dial_us, bool ok);
void metrics_refresh_done(metrics_instance *mi, bool ok, const char *reason);

/* A label value for a failed csql call: its API reason if any, else a short name for the code. */
const char *metrics_error_reason(int csql_err, const char *api_reason);

/*
 * Render every metric into a malloc'd NUL-terminated string (*out, length
 * *len). `ns` (may be NULL or "") prefixes "ns_" to every name. -1 if out of memory.
 */
int metrics_render(metrics *m, const char *ns, char **out, size_t *len);

#endif
