/*
 * connect_latency: new connection to first query answer, through any path libpq can reach.
 *
 *   connect_latency CONNINFO N
 *
 * Each of N rounds: PQconnectdb (TCP, TLS if the conninfo asks, authentication),
 * then "select 1" answered, then PQfinish. Prints {"ms":[...]} (the caller computes
 * the percentiles).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <libpq-fe.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: connect_latency CONNINFO N\n");
        return 2;
    }
    long n = strtol(argv[2], NULL, 10);
    if (n < 1 || n > 100000) {
        fprintf(stderr, "connect_latency: N must be 1..100000\n");
        return 2;
    }
    double *ms = calloc((size_t)n, sizeof(*ms));
    if (ms == NULL) {
        return 1;
    }
    for (long i = 0; i < n; i++) {
        double t0 = now_ms();
        PGconn *c = PQconnectdb(argv[1]);
        if (PQstatus(c) != CONNECTION_OK) {
            fprintf(stderr, "connect_latency: connect failed: %s", PQerrorMessage(c));
            PQfinish(c);
            free(ms);
            return 1;
        }
        PGresult *r = PQexec(c, "select 1");
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        ms[i] = now_ms() - t0;
        if (!ok) {
            fprintf(stderr, "connect_latency: query failed: %s", PQerrorMessage(c));
            PQfinish(c);
            free(ms);
            return 1;
        }
        PQfinish(c);
    }
    printf("{\"ms\":[");
    for (long i = 0; i < n; i++) {
        printf("%s%.3f", i ? "," : "", ms[i]);
    }
    printf("]}\n");
    free(ms);
    return 0;
}
