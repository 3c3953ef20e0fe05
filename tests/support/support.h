/*
 * Test support: throwaway databases (scripts/db), csql-emulator as a child
 * process, test-unique loopback addresses and small HTTP calls. Used by the
 * integration tests; every start has a matching stop that tests always call.
 */
#ifndef CSQL_TEST_SUPPORT_H
#define CSQL_TEST_SUPPORT_H

#include <stddef.h>
#include <sys/types.h>

typedef struct csqlt_pg {
    char dir[256];
    int port;
    char sockdir[256];
} csqlt_pg;

typedef struct csqlt_my {
    char dir[256];
    int port;
    char socket[256];
} csqlt_my;

typedef struct csqlt_emulator {
    pid_t pid;
    char url[128];   /* API base URL, e.g. http://127.0.0.1:41234 */
    char host_port[64]; /* "127.0.0.1:41234", for GCE_METADATA_HOST */
    char creds_dir[256]; /* where --write-credentials wrote, if asked */
} csqlt_emulator;

/* The source tree (env CSQL_SOURCE_DIR, else the compile-time path). */
const char *csqlt_source_dir(void);

/* Start/stop a throwaway PostgreSQL (scripts/db/pg-start.sh). iam_source may be NULL. 0 on success. */
int csqlt_pg_start(csqlt_pg *pg, const char *iam_source);
void csqlt_pg_stop(csqlt_pg *pg);
/* Start/stop a throwaway MariaDB (scripts/db/mariadb-start.sh). */
int csqlt_my_start(csqlt_my *my, const char *iam_source);
void csqlt_my_stop(csqlt_my *my);

/*
 * Run $CSQL_EMULATOR with argv (NULL-terminated, without argv[0]) and wait up to
 * 10 s for the URL line it prints. When write_creds is non-zero a fresh temp
 * dir is passed as --write-credentials. 0 on success.
 */
int csqlt_emulator_start(csqlt_emulator *em, int write_creds, const char *const *argv);
/* SIGTERM the emulator and wait; returns its exit status (0 = clean), -1 if it had to be killed. */
int csqlt_emulator_stop(csqlt_emulator *em);

/*
 * A loopback IPv4 address unique to this test process: "127.A.B.n" with A.B
 * derived from the pid, so parallel tests never share IP:3307. n in 1..250.
 */
const char *csqlt_unique_ip(int n, char *buf, size_t len);

/*
 * One HTTP request with libcurl. bearer and body may be NULL. On success
 * returns 0 and sets *status and *resp (malloc'd, NUL-terminated; may be NULL
 * if resp is NULL). -1 on transport failure.
 */
int csqlt_http(const char *method, const char *url, const char *bearer, const char *body,
               long *status, char **resp);

/* POST/DELETE/GET on the emulator's /emulator/ admin API; returns the HTTP status or -1. */
long csqlt_emulator_admin(const csqlt_emulator *em, const char *method, const char *path,
                          const char *json_body);

/* Run a shell command; capture up to outlen-1 bytes of stdout into out (may be NULL). Returns exit status. */
int csqlt_sh(char *out, size_t outlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Make a fresh temp dir (mode 0755) under /tmp; returns 0 and fills buf. */
int csqlt_tempdir(char *buf, size_t len, const char *prefix);
/* rm -rf a dir made by csqlt_tempdir (refuses anything outside /tmp). */
void csqlt_rmdir(const char *dir);

#endif
