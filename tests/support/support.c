/* Test support: databases, the emulator as a child process, HTTP. */
#include "support.h"

#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CSQL_TEST_SOURCE_DIR
#define CSQL_TEST_SOURCE_DIR "."
#endif

const char *csqlt_source_dir(void)
{
    const char *s = getenv("CSQL_SOURCE_DIR");
    return (s && *s) ? s : CSQL_TEST_SOURCE_DIR;
}

int csqlt_sh(char *out, size_t outlen, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        return -1;
    }
    size_t used = 0;
    char chunk[1024];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0) {
        if (out != NULL && used + 1 < outlen) {
            size_t take = n < outlen - 1 - used ? n : outlen - 1 - used;
            memcpy(out + used, chunk, take);
            used += take;
        }
    }
    if (out != NULL && outlen > 0) {
        out[used] = '\0';
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Find "KEY=value" in a block of lines; copy value. */
static int env_value(const char *text, const char *key, char *out, size_t len)
{
    size_t klen = strlen(key);
    const char *p = text;
    while (p && *p) {
        if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
            const char *v = p + klen + 1;
            size_t n = strcspn(v, "\n");
            if (n >= len) {
                return -1;
            }
            memcpy(out, v, n);
            out[n] = '\0';
            return 0;
        }
        p = strchr(p, '\n');
        if (p) {
            p++;
        }
    }
    return -1;
}

int csqlt_pg_start(csqlt_pg *pg, const char *iam_source)
{
    char out[2048];
    char port[16];
    memset(pg, 0, sizeof(*pg));
    int rc = csqlt_sh(out, sizeof(out), "CSQL_IAM_SOURCE='%s' '%s/scripts/db/pg-start.sh'",
                      iam_source ? iam_source : "", csqlt_source_dir());
    if (rc != 0 || env_value(out, "CSQL_PG_DIR", pg->dir, sizeof(pg->dir)) != 0 ||
        env_value(out, "CSQL_PG_PORT", port, sizeof(port)) != 0 ||
        env_value(out, "CSQL_PG_SOCKDIR", pg->sockdir, sizeof(pg->sockdir)) != 0) {
        fprintf(stderr, "csqlt_pg_start failed (rc=%d): %s\n", rc, out);
        return -1;
    }
    pg->port = atoi(port);
    return 0;
}

void csqlt_pg_stop(csqlt_pg *pg)
{
    if (pg->dir[0]) {
        csqlt_sh(NULL, 0, "'%s/scripts/db/pg-stop.sh' '%s'", csqlt_source_dir(), pg->dir);
        pg->dir[0] = '\0';
    }
}

int csqlt_my_start(csqlt_my *my, const char *iam_source)
{
    char out[2048];
    char port[16];
    memset(my, 0, sizeof(*my));
    int rc = csqlt_sh(out, sizeof(out), "CSQL_IAM_SOURCE='%s' '%s/scripts/db/mariadb-start.sh'",
                      iam_source ? iam_source : "", csqlt_source_dir());
    if (rc != 0 || env_value(out, "CSQL_MY_DIR", my->dir, sizeof(my->dir)) != 0 ||
        env_value(out, "CSQL_MY_PORT", port, sizeof(port)) != 0 ||
        env_value(out, "CSQL_MY_SOCKET", my->socket, sizeof(my->socket)) != 0) {
        fprintf(stderr, "csqlt_my_start failed (rc=%d): %s\n", rc, out);
        return -1;
    }
    my->port = atoi(port);
    return 0;
}

void csqlt_my_stop(csqlt_my *my)
{
    if (my->dir[0]) {
        csqlt_sh(NULL, 0, "'%s/scripts/db/mariadb-stop.sh' '%s'", csqlt_source_dir(), my->dir);
        my->dir[0] = '\0';
    }
}

int csqlt_tempdir(char *buf, size_t len, const char *prefix)
{
    int n = snprintf(buf, len, "/tmp/%s.XXXXXX", prefix);
    if (n < 0 || (size_t)n >= len || mkdtemp(buf) == NULL) {
        return -1;
    }
    chmod(buf, 0755);
    return 0;
}

void csqlt_rmdir(const char *dir)
{
    if (dir && strncmp(dir, "/tmp/", 5) == 0 && strstr(dir, "..") == NULL) {
        csqlt_sh(NULL, 0, "rm -rf '%s'", dir);
    }
}

static int read_line_with_timeout(int fd, char *buf, size_t len, int timeout_ms)
{
    size_t used = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (used + 1 < len) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed >= timeout_ms) {
            return -1;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        int pr = poll(&pfd, 1, (int)(timeout_ms - elapsed));
        if (pr <= 0) {
            if (pr < 0 && errno == EINTR) {
                continue;
            }
            return -1;
        }
        ssize_t n = read(fd, buf + used, 1);
        if (n <= 0) {
            return -1;
        }
        if (buf[used] == '\n') {
            buf[used] = '\0';
            return 0;
        }
        used++;
    }
    return -1;
}

int csqlt_emulator_start(csqlt_emulator *em, int write_creds, const char *const *argv)
{
    const char *bin = getenv("CSQL_EMULATOR");
    memset(em, 0, sizeof(*em));
    em->pid = -1;
    if (bin == NULL || *bin == '\0') {
        fprintf(stderr, "csqlt_emulator_start: CSQL_EMULATOR is not set\n");
        return -1;
    }
    const char *args[64];
    size_t n = 0;
    args[n++] = bin;
    if (write_creds) {
        if (csqlt_tempdir(em->creds_dir, sizeof(em->creds_dir), "csql-creds") != 0) {
            return -1;
        }
        args[n++] = "--write-credentials";
        args[n++] = em->creds_dir;
    }
    for (size_t i = 0; argv && argv[i] && n < 63; i++) {
        args[n++] = argv[i];
    }
    args[n] = NULL;

    int pipefd[2];
    if (pipe(pipefd) != 0) {
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        /* A test that dies (an abort, a sanitizer report) takes its emulator along: an orphan
           would hold ctest's output pipe open and hang the run. (Tests start emulators from the
           main thread, whose exit is the process's.) */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() == 1) {
            _exit(127);
        }
        dup2(pipefd[1], STDOUT_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        char *cargs[64];
        for (size_t i = 0; i <= n; i++) {
            cargs[i] = args[i] ? strdup(args[i]) : NULL;
        }
        execv(bin, cargs);
        _exit(127);
    }
    close(pipefd[1]);
    em->pid = pid;
    char line[256];
    int rc = read_line_with_timeout(pipefd[0], line, sizeof(line), 10000);
    close(pipefd[0]);
    if (rc != 0 || strncmp(line, "http://", 7) != 0) {
        fprintf(stderr, "csqlt_emulator_start: no URL line from %s\n", bin);
        csqlt_emulator_stop(em);
        return -1;
    }
    snprintf(em->url, sizeof(em->url), "%s", line);
    snprintf(em->host_port, sizeof(em->host_port), "%s", line + 7);
    char *slash = strchr(em->host_port, '/');
    if (slash) {
        *slash = '\0';
    }
    return 0;
}

int csqlt_emulator_stop(csqlt_emulator *em)
{
    int result = -1;
    if (em->pid > 0) {
        kill(em->pid, SIGTERM);
        for (int i = 0; i < 200; i++) {
            int st;
            pid_t r = waitpid(em->pid, &st, WNOHANG);
            if (r == em->pid) {
                result = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
                em->pid = -1;
                break;
            }
            usleep(50000);
        }
        if (em->pid > 0) {
            kill(em->pid, SIGKILL);
            waitpid(em->pid, NULL, 0);
            em->pid = -1;
        }
    }
    if (em->creds_dir[0]) {
        csqlt_rmdir(em->creds_dir);
        em->creds_dir[0] = '\0';
    }
    return result;
}

const char *csqlt_unique_ip(int n, char *buf, size_t len)
{
    unsigned pid = (unsigned)getpid();
    snprintf(buf, len, "127.%u.%u.%d", 10 + (pid / 250) % 240, pid % 250, n);
    return buf;
}

typedef struct {
    char *data;
    size_t len;
} membuf;

static size_t collect(char *ptr, size_t size, size_t nmemb, void *ud)
{
    membuf *b = ud;
    size_t n = size * nmemb;
    char *p = realloc(b->data, b->len + n + 1);
    if (p == NULL) {
        return 0;
    }
    memcpy(p + b->len, ptr, n);
    b->data = p;
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

int csqlt_http(const char *method, const char *url, const char *bearer, const char *body,
               long *status, char **resp)
{
    CURL *c = curl_easy_init();
    if (c == NULL) {
        return -1;
    }
    struct curl_slist *h = NULL;
    char auth[4096];
    if (bearer) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer);
        h = curl_slist_append(h, auth);
    }
    if (body) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    membuf b = {NULL, 0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_OK && status) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK) {
        free(b.data);
        return -1;
    }
    if (resp) {
        *resp = b.data ? b.data : strdup("");
    } else {
        free(b.data);
    }
    return 0;
}

long csqlt_emulator_admin(const csqlt_emulator *em, const char *method, const char *path,
                          const char *json_body)
{
    char url[512];
    long status = -1;
    snprintf(url, sizeof(url), "%s%s", em->url, path);
    if (csqlt_http(method, url, NULL, json_body, &status, NULL) != 0) {
        return -1;
    }
    return status;
}
