/*
 * Shared by the driver helper integration tests (test_driver_pq, _mysql,
 * _tds): csql-emulator with a given set of instances, a dialer pointed at
 * it, MD5 digests, timing and memory figures.
 */
#ifndef CSQL_TEST_DRIVER_COMMON_H
#define CSQL_TEST_DRIVER_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "csql/csql.h"
#include "support.h"

#define DRV_TOKEN "driver-test-token"
/* The emulator's default principal for static tokens, and its database user names. */
#define DRV_IAM_PRINCIPAL "static-user@emulator.iam.gserviceaccount.com"

typedef struct drv_env {
    csqlt_emulator em;
    csql_dialer *d;
    char ip[8][32]; /* test-unique loopback addresses, ip[n] = 127.A.B.(n+1) */
} drv_env;

/*
 * Start the emulator with `specs` (NULL-terminated instance specs, which
 * may use "%IP0%".."%IP7%" for this test's addresses) and make a dialer
 * (static token, Admin API = the emulator). backend_source may be NULL. 0 on success.
 */
int drv_start(drv_env *e, const char *const *specs, const char *backend_source);
void drv_stop(drv_env *e);

/* POST /emulator/instances/{name}/refuse-tcp {"refuse": on}; the HTTP status. */
long drv_refuse_tcp(drv_env *e, const char *instance, int on);

/* MD5 as 32 lowercase hex digits. */
typedef struct drv_md5 {
    EVP_MD_CTX *ctx;
} drv_md5;
void drv_md5_init(drv_md5 *m);
void drv_md5_update(drv_md5 *m, const void *p, size_t n);
void drv_md5_final(drv_md5 *m, char hex[33]);

/* Line i (0-based) of the bulk data sets: 1023 printable bytes (no tab, newline or backslash). */
void drv_line(uint32_t i, char out[1024]);

int64_t drv_now_ms(void);
long drv_rss_kib(void);
size_t drv_heap_bytes(void);
int drv_open_fds(void);

/* Run fn(arg, index) on n threads and join them. */
void drv_run_threads(int n, void *(*fn)(void *), void *args, size_t arg_size);

#endif
