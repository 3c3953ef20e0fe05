/*
 * dial_latency: the library's connect cost, measured to the first byte the database sends.
 *
 *   dial_latency TOKEN ADMIN_API_URL PROJECT:REGION:INSTANCE N [COLD_N [DIRECT_HOST:PORT [KEY_PEM]]]
 *
 * cold: csql_config_new -> csql_dialer_new -> csql_dial -> PostgreSQL startup message
 *       written -> first response byte read (metadata + ephemeral cert fetch, key, TLS),
 *       COLD_N times (default 1), each with a new dialer (so a new RSA key).
 * cold_key: the same with the RSA key supplied (csql_config_set_rsa_key_pem, KEY_PEM a
 *       file), i.e. the cold start without key generation (only when KEY_PEM is given).
 * warm: N more dials with the first dialer (cached certificate), each to the first
 *       response byte, then closed; warm_dial: the part of each spent in csql_dial (TCP +
 *       TLS 1.3 handshake with the server-side proxy); cpu_us_per_warm: this process's
 *       CPU time (user + system) per warm dial.
 * direct: with DIRECT_HOST:PORT (the database itself), N plain TCP connects + the same
 *       startup message to the first byte, interleaved with the warm dials: the floor.
 * Prints one JSON object (the caller computes the stats).
 */
#define _POSIX_C_SOURCE 200809L

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <csql/csql.h>

#define COLD_MAX 1000
#define KEY_MAX (64 * 1024)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
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

/* Dial, send the startup message, wait for the first response byte; *dial_ms = csql_dial. */
static int dial_once(csql_dialer *d, const char *instance, double *dial_ms)
{
    unsigned char msg[64];
    size_t len = startup_message(msg, sizeof(msg));
    csql_conn *conn = NULL;
    double t0 = now_ms();
    if (csql_dial(d, instance, NULL, &conn) != 0) {
        return fail("csql_dial");
    }
    if (dial_ms != NULL) {
        *dial_ms = now_ms() - t0;
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

/* The floor: plain TCP to the database, the same startup message, its first byte. */
static int direct_once(const struct addrinfo *ai, double *ms)
{
    unsigned char msg[64];
    size_t len = startup_message(msg, sizeof(msg));
    double t0 = now_ms();
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
        perror("dial_latency: socket");
        return 1;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char b;
    int rc = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 || send(fd, msg, len, 0) != (ssize_t)len ||
        recv(fd, &b, 1, 0) != 1) {
        perror("dial_latency: direct connection to the database");
        rc = 1;
    }
    close(fd);
    *ms = now_ms() - t0;
    return rc;
}

/* New config and dialer (with the key PEM if given), one dial: the cold start. */
static int cold_start(const char *token, const char *url, const char *instance, const char *key,
                      double *ms, csql_dialer **keep, csql_config **keep_cfg)
{
    csql_config *cfg = NULL;
    csql_dialer *d = NULL;
    int rc = 1;
    double t0 = now_ms();
    if (csql_config_new(&cfg) != 0 || csql_config_set_token(cfg, token) != 0 ||
        csql_config_set_admin_api_endpoint(cfg, url) != 0 ||
        (key != NULL && csql_config_set_rsa_key_pem(cfg, key, strlen(key)) != 0)) {
        fail("csql_config");
        goto out;
    }
    if (csql_dialer_new(&d, cfg) != 0) {
        fail("csql_dialer_new");
        goto out;
    }
    if (dial_once(d, instance, NULL) != 0) {
        goto out;
    }
    *ms = now_ms() - t0;
    rc = 0;
    if (keep != NULL) {
        *keep = d;
        *keep_cfg = cfg;
        return 0;
    }
out:
    csql_dialer_free(d);
    csql_config_free(cfg);
    return rc;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        return NULL;
    }
    char *buf = calloc(1, KEY_MAX + 1);
    size_t n = buf ? fread(buf, 1, KEY_MAX, f) : 0;
    fclose(f);
    if (n == 0) {
        fprintf(stderr, "dial_latency: %s is empty or unreadable\n", path);
        free(buf);
        return NULL;
    }
    return buf;
}

static void print_list(const char *name, const double *v, long n, int last)
{
    printf("\"%s\":[", name);
    for (long i = 0; i < n; i++) {
        printf("%s%.3f", i ? "," : "", v[i]);
    }
    printf("]%s", last ? "" : ",");
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 8) {
        fprintf(stderr, "usage: dial_latency TOKEN ADMIN_API_URL INSTANCE N [COLD_N "
                        "[DIRECT_HOST:PORT [KEY_PEM]]]\n");
        return 2;
    }
    const char *token = argv[1];
    const char *url = argv[2];
    const char *instance = argv[3];
    long n = strtol(argv[4], NULL, 10);
    long cold_n = argc > 5 ? strtol(argv[5], NULL, 10) : 1;
    if (n < 1 || n > 100000 || cold_n < 1 || cold_n > COLD_MAX) {
        fprintf(stderr, "dial_latency: N must be 1..100000 and COLD_N 1..%d\n", COLD_MAX);
        return 2;
    }
    struct addrinfo *direct = NULL;
    if (argc > 6 && argv[6][0] != '\0') {
        char host[256];
        snprintf(host, sizeof(host), "%s", argv[6]);
        char *colon = strrchr(host, ':');
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
        if (colon == NULL) {
            fprintf(stderr, "dial_latency: DIRECT must be HOST:PORT (got '%s')\n", argv[6]);
            return 2;
        }
        *colon = '\0';
        int g = getaddrinfo(host, colon + 1, &hints, &direct);
        if (g != 0) {
            fprintf(stderr, "dial_latency: %s: %s\n", argv[6], gai_strerror(g));
            return 2;
        }
    }
    char *key = NULL;
    if (argc > 7 && (key = read_file(argv[7])) == NULL) {
        freeaddrinfo(direct);
        return 2;
    }
    double *warm = calloc((size_t)n, sizeof(*warm));
    double *warm_dial = calloc((size_t)n, sizeof(*warm_dial));
    double *floor_ms = calloc((size_t)n, sizeof(*floor_ms));
    double *cold = calloc((size_t)cold_n, sizeof(*cold));
    double *cold_key = calloc((size_t)cold_n, sizeof(*cold_key));
    int status = 1;
    csql_config *cfg = NULL;
    csql_dialer *d = NULL;
    if (warm == NULL || warm_dial == NULL || floor_ms == NULL || cold == NULL ||
        cold_key == NULL) {
        goto out;
    }
    /* Cold starts, with a generated key and (interleaved) with a supplied one. */
    for (long i = 0; i < cold_n; i++) {
        int keep = i == 0;
        if (cold_start(token, url, instance, NULL, &cold[i], keep ? &d : NULL,
                       keep ? &cfg : NULL) != 0 ||
            (key != NULL && cold_start(token, url, instance, key, &cold_key[i], NULL, NULL) != 0)) {
            goto out;
        }
    }
    double c0 = 0;
    double cpu = 0;
    for (long i = 0; i < n; i++) {
        if (direct != NULL && direct_once(direct, &floor_ms[i]) != 0) {
            goto out;
        }
        c0 = cpu_ms();
        double s = now_ms();
        if (dial_once(d, instance, &warm_dial[i]) != 0) {
            goto out;
        }
        warm[i] = now_ms() - s;
        cpu += cpu_ms() - c0;
    }
    printf("{");
    print_list("cold_ms", cold, cold_n, 0);
    if (key != NULL) {
        print_list("cold_key_ms", cold_key, cold_n, 0);
    }
    if (direct != NULL) {
        print_list("direct_ms", floor_ms, n, 0);
    }
    print_list("warm_dial_ms", warm_dial, n, 0);
    printf("\"cpu_us_per_warm\":%.1f,", cpu * 1e3 / (double)n);
    print_list("warm_ms", warm, n, 1);
    printf("}\n");
    status = 0;
out:
    csql_dialer_free(d);
    csql_config_free(cfg);
    free(warm);
    free(warm_dial);
    free(floor_ms);
    free(cold);
    free(cold_key);
    free(key);
    if (direct != NULL) {
        freeaddrinfo(direct);
    }
    return status;
}
