/* Shared helpers of the driver helper integration tests. */
#include "driver_common.h"

#include <dirent.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t drv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long drv_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
        }
    }
    if (f) {
        fclose(f);
    }
    return kib;
}

size_t drv_heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

int drv_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (d && readdir(d) != NULL) {
        n++;
    }
    if (d) {
        closedir(d);
    }
    return n - 3; /* ".", ".." and the DIR's own fd */
}

static void subst_ips(const drv_env *e, const char *in, char *out, size_t len)
{
    size_t o = 0;
    for (const char *p = in; *p && o + 1 < len;) {
        if (strncmp(p, "%IP", 3) == 0 && p[3] >= '0' && p[3] <= '7' && p[4] == '%') {
            int n = snprintf(out + o, len - o, "%s", e->ip[p[3] - '0']);
            o += (size_t)n < len - o ? (size_t)n : len - o - 1;
            p += 5;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}

int drv_start(drv_env *e, const char *const *specs, const char *backend_source)
{
    memset(e, 0, sizeof(*e));
    for (int i = 0; i < 8; i++) {
        csqlt_unique_ip(i + 1, e->ip[i], sizeof(e->ip[i]));
    }
    static char bufs[16][512];
    const char *argv[48];
    int n = 0;
    argv[n++] = "--static-token";
    argv[n++] = DRV_TOKEN;
    if (backend_source != NULL) {
        argv[n++] = "--backend-source";
        argv[n++] = backend_source;
    }
    for (int i = 0; specs[i] != NULL && i < 16; i++) {
        subst_ips(e, specs[i], bufs[i], sizeof(bufs[i]));
        argv[n++] = "--instance";
        argv[n++] = bufs[i];
    }
    argv[n] = NULL;
    if (csqlt_emulator_start(&e->em, 0, argv) != 0) {
        return -1;
    }
    csql_config *cfg = NULL;
    int rc = csql_config_new(&cfg);
    if (rc == 0) {
        rc = csql_config_set_admin_api_endpoint(cfg, e->em.url);
    }
    if (rc == 0) {
        rc = csql_config_set_token(cfg, DRV_TOKEN);
    }
    if (rc == 0) {
        rc = csql_dialer_new(&e->d, cfg);
    }
    csql_config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "drv_start: dialer: %s\n", csql_error_last()->message);
        csqlt_emulator_stop(&e->em);
        return -1;
    }
    return 0;
}

void drv_stop(drv_env *e)
{
    csql_dialer_free(e->d);
    e->d = NULL;
    csqlt_emulator_stop(&e->em);
}

long drv_refuse_tcp(drv_env *e, const char *instance, int on)
{
    char path[256];
    snprintf(path, sizeof(path), "/emulator/instances/%s/refuse-tcp", instance);
    return csqlt_emulator_admin(&e->em, "POST", path, on ? "{\"refuse\":true}" : "{\"refuse\":false}");
}

void drv_md5_init(drv_md5 *m)
{
    m->ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(m->ctx, EVP_md5(), NULL);
}

void drv_md5_update(drv_md5 *m, const void *p, size_t n)
{
    EVP_DigestUpdate(m->ctx, p, n);
}

void drv_md5_final(drv_md5 *m, char hex[33])
{
    unsigned char d[16];
    unsigned int len = 0;
    EVP_DigestFinal_ex(m->ctx, d, &len);
    EVP_MD_CTX_free(m->ctx);
    m->ctx = NULL;
    for (int i = 0; i < 16; i++) {
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    }
}

void drv_line(uint32_t i, char out[1024])
{
    uint32_t x = i * 2654435761u + 12345u;
    for (int j = 0; j < 1023; j++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out[j] = (char)('!' + (x % 90)); /* '!'..'z' minus nothing special below */
        if (out[j] == '\\') {
            out[j] = 'Z';
        }
    }
    out[1023] = '\0';
}

void drv_run_threads(int n, void *(*fn)(void *), void *args, size_t arg_size)
{
    pthread_t *t = calloc((size_t)n, sizeof(*t));
    for (int i = 0; i < n; i++) {
        pthread_create(&t[i], NULL, fn, (char *)args + (size_t)i * arg_size);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
    }
    free(t);
}
