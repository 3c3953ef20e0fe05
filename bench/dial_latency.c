/*
 * dial_latency: the library's connect cost, measured to the first byte the database sends.
 *
 *   dial_latency TOKEN ADMIN_API_URL PROJECT:REGION:INSTANCE N
 *
 * cold: csql_config_new -> csql_dialer_new -> csql_dial -> PostgreSQL startup message
 *       written -> first response byte read (metadata + ephemeral cert fetch, key, TLS).
 * warm: N more dials with the same dialer (cached certificate), each to the first
 *       response byte, then closed.
 * Prints one JSON object: {"cold_ms":..,"warm_ms":[..]} (the caller computes the stats).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <csql/csql.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int fail(const char *what)
{
    const csql_error *e = csql_error_last();
    fprintf(stderr, "dial_latency: %s failed: %s (%s)\n", what, e->message, csql_strerror(e->code));
    return 1;
}

/* A PostgreSQL v3 StartupMessage for user=postgres database=postgres. */
static size_t startup_message(unsigned char *buf, size_t cap)
{
    static const char params[] = "user\0postgres\0database\0postgres\0";
    size_t len = 8 + sizeof(params); /* sizeof counts the final terminator */
    if (len > cap) {
        return 0;
    }
    buf[0] = (unsigned char)(len >> 24);
    buf[1] = (unsigned char)(len >> 16);
    buf[2] = (unsigned char)(len >> 8);
    buf[3] = (unsigned char)len;
    buf[4] = 0x00; /* protocol 3.0 */
    buf[5] = 0x03;
    buf[6] = 0x00;
    buf[7] = 0x00;
    memcpy(buf + 8, params, sizeof(params));
    return len;
}

/* Dial, send the startup message, wait for the first response byte. */
static int dial_once(csql_dialer *d, const char *instance)
{
    unsigned char msg[64];
    size_t len = startup_message(msg, sizeof(msg));
    csql_conn *conn = NULL;
    if (csql_dial(d, instance, NULL, &conn) != 0) {
        return fail("csql_dial");
    }
    int rc = 0;
    char b;
    if (csql_conn_write_all(conn, msg, len) != 0) {
        rc = fail("csql_conn_write_all");
    } else if (csql_conn_read(conn, &b, 1) != 1) {
        fprintf(stderr, "dial_latency: no response byte from the database\n");
        rc = 1;
    }
    csql_conn_close(conn);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: dial_latency TOKEN ADMIN_API_URL INSTANCE N\n");
        return 2;
    }
    long n = strtol(argv[4], NULL, 10);
    if (n < 1 || n > 100000) {
        fprintf(stderr, "dial_latency: N must be 1..100000\n");
        return 2;
    }
    double *warm = calloc((size_t)n, sizeof(*warm));
    if (warm == NULL) {
        return 1;
    }
    int status = 1;
    csql_config *cfg = NULL;
    csql_dialer *d = NULL;
    double t0 = now_ms();
    if (csql_config_new(&cfg) != 0 || csql_config_set_token(cfg, argv[1]) != 0 ||
        csql_config_set_admin_api_endpoint(cfg, argv[2]) != 0) {
        fail("csql_config");
        goto out;
    }
    if (csql_dialer_new(&d, cfg) != 0) {
        fail("csql_dialer_new");
        goto out;
    }
    if (dial_once(d, argv[3]) != 0) {
        goto out;
    }
    double cold = now_ms() - t0;
    for (long i = 0; i < n; i++) {
        double s = now_ms();
        if (dial_once(d, argv[3]) != 0) {
            goto out;
        }
        warm[i] = now_ms() - s;
    }
    printf("{\"cold_ms\":%.3f,\"warm_ms\":[", cold);
    for (long i = 0; i < n; i++) {
        printf("%s%.3f", i ? "," : "", warm[i]);
    }
    printf("]}\n");
    status = 0;
out:
    csql_dialer_free(d);
    csql_config_free(cfg);
    free(warm);
    return status;
}
