/*
 * fault_client: libpq sessions through libcsql (libcsql-pq), one dialer for
 * the whole run, driven line by line from stdin so a fault script can warm an
 * instance, switch a fault on, and dial again with the same cache.
 *
 *   fault_client --api URL --token TOKEN --conninfo 'user=... password=... dbname=...'
 *                [--refresh-timeout-ms N] [--dial-timeout-ms N] [--lazy] [--rsa-key FILE]
 *
 * --rsa-key: the client key as PEM (so a short refresh timeout does not race the
 * background key generation on a loaded host).
 *
 * Commands (one per line on stdin):
 *   q INSTANCE     connect, run "select 1", disconnect; prints
 *                  "ok MS" or "fail MS CODE CATEGORY HTTP_STATUS: MESSAGE"
 *                  (CODE is csql_strerror's text, or "database" when csql dialled
 *                  and the session itself failed, with libpq's message)
 *   expiry INSTANCE   prints "expiry UNIX_SECONDS" of the cached certificate
 *   fds            prints "fds N" (open file descriptors of this process)
 *   quit           exits 0
 * Each answer is one line on stdout, flushed. Log lines of the library go to
 * stderr. Exit status 2 for a bad command line, 1 if the dialer cannot be made.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "csql/csql.h"
#include "csql/pq.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void log_line(csql_log_level level, const char *line, void *ud)
{
    (void)level;
    (void)ud;
    fprintf(stderr, "fault_client: csql: %s\n", line);
}

static void one_line(char *s)
{
    for (char *p = s; *p != '\0'; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
}

static void session(csql_dialer *d, const char *instance, const char *conninfo)
{
    int64_t t0 = now_ms();
    csql_error_clear();
    PGconn *pg = csql_pq_connect(d, instance, conninfo, NULL);
    if (pg == NULL) {
        const csql_error *e = csql_error_last();
        char *msg = strdup(e->message);
        if (msg != NULL) {
            one_line(msg);
        }
        printf("fail %lld %s %s %ld: %s\n", (long long)(now_ms() - t0), csql_strerror(e->code),
               csql_err_category_name(e->category), e->http_status, msg ? msg : "?");
        free(msg);
        return;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        char *msg = strdup(PQerrorMessage(pg));
        if (msg != NULL) {
            one_line(msg);
        }
        printf("fail %lld database - 0: %s\n", (long long)(now_ms() - t0), msg ? msg : "?");
        free(msg);
        PQfinish(pg);
        return;
    }
    PGresult *r = PQexec(pg, "select 1");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || strcmp(PQgetvalue(r, 0, 0), "1") != 0) {
        char *msg = strdup(PQerrorMessage(pg));
        if (msg != NULL) {
            one_line(msg);
        }
        printf("fail %lld database - 0: %s\n", (long long)(now_ms() - t0), msg ? msg : "?");
        free(msg);
    } else {
        printf("ok %lld\n", (long long)(now_ms() - t0));
    }
    PQclear(r);
    PQfinish(pg);
}

static int count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL) {
        return -1;
    }
    int n = 0;
    for (struct dirent *e = readdir(dir); e != NULL; e = readdir(dir)) {
        n += e->d_name[0] != '.';
    }
    closedir(dir);
    return n - 1; /* the directory's own fd */
}

static int usage(void)
{
    fprintf(stderr, "usage: fault_client --api URL --token TOKEN --conninfo CONNINFO "
                    "[--refresh-timeout-ms N] [--dial-timeout-ms N] [--lazy] [--rsa-key FILE]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *api = NULL, *token = NULL, *conninfo = "", *key_file = NULL;
    long refresh_ms = 0, dial_ms = 0;
    int lazy = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--lazy") == 0) {
            lazy = 1;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "fault_client: %s needs a value\n", a);
            return usage();
        }
        i++;
        if (strcmp(a, "--api") == 0) {
            api = v;
        } else if (strcmp(a, "--token") == 0) {
            token = v;
        } else if (strcmp(a, "--conninfo") == 0) {
            conninfo = v;
        } else if (strcmp(a, "--refresh-timeout-ms") == 0) {
            refresh_ms = strtol(v, NULL, 10);
        } else if (strcmp(a, "--rsa-key") == 0) {
            key_file = v;
        } else if (strcmp(a, "--dial-timeout-ms") == 0) {
            dial_ms = strtol(v, NULL, 10);
        } else {
            fprintf(stderr, "fault_client: unknown flag %s\n", a);
            return usage();
        }
    }
    if (api == NULL || token == NULL || refresh_ms < 0 || dial_ms < 0) {
        return usage();
    }
    csql_config *cfg = NULL;
    csql_dialer *d = NULL;
    int rc = csql_config_new(&cfg);
    if (rc == 0) {
        rc = csql_config_set_admin_api_endpoint(cfg, api);
    }
    if (rc == 0) {
        rc = csql_config_set_token(cfg, token);
    }
    if (rc == 0) {
        rc = csql_config_set_log(cfg, log_line, NULL, CSQL_LOG_INFO);
    }
    if (rc == 0 && refresh_ms > 0) {
        rc = csql_config_set_refresh_timeout_ms(cfg, (uint32_t)refresh_ms);
    }
    if (rc == 0 && dial_ms > 0) {
        rc = csql_config_set_dial_timeout_ms(cfg, (uint32_t)dial_ms);
    }
    if (rc == 0 && lazy) {
        rc = csql_config_set_refresh_strategy(cfg, CSQL_REFRESH_LAZY);
    }
    if (rc == 0 && key_file != NULL) {
        char pem[16384];
        FILE *f = fopen(key_file, "r");
        size_t n = f != NULL ? fread(pem, 1, sizeof(pem), f) : 0;
        if (f != NULL) {
            fclose(f);
        }
        if (n == 0 || n == sizeof(pem)) {
            fprintf(stderr, "fault_client: cannot read a PEM key from %s\n", key_file);
            csql_config_free(cfg);
            return 2;
        }
        rc = csql_config_set_rsa_key_pem(cfg, pem, n);
    }
    if (rc == 0) {
        rc = csql_dialer_new(&d, cfg);
    }
    csql_config_free(cfg);
    if (rc != 0) {
        fprintf(stderr, "fault_client: cannot make a dialer: %s\n", csql_error_last()->message);
        return 1;
    }
    char line[1024];
    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "q ", 2) == 0) {
            session(d, line + 2, conninfo);
        } else if (strncmp(line, "expiry ", 7) == 0) {
            csql_instance_info *info = NULL;
            if (csql_dialer_instance_info(d, line + 7, NULL, &info) == 0) {
                printf("expiry %lld\n", (long long)csql_instance_info_cert_expiry(info));
                csql_instance_info_free(info);
            } else {
                printf("fail 0 %s - 0: %s\n", csql_strerror(csql_error_last()->code),
                       csql_error_last()->message);
            }
        } else if (strcmp(line, "fds") == 0) {
            printf("fds %d\n", count_fds());
        } else if (strcmp(line, "quit") == 0) {
            break;
        } else {
            printf("error unknown command '%s'\n", line);
        }
        fflush(stdout);
    }
    csql_dialer_free(d);
    return 0;
}
