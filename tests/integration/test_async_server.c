/*
 * examples/async_server (libuv + csql/adapters/libuv.h) against csql-emulator:
 * while the server has 100 dials in flight it keeps answering HTTP requests,
 * and its 1 ms timer never runs more than 5 ms late. Measured twice: with a
 * cold certificate cache (the dials wait for a refresh first) and a warm one.
 *
 * The emulator's server-side TLS runs on the same two cores with a thread
 * per connection; at normal priority its 100 handshake threads take CPU from
 * the server's one loop thread by plain CFS fairness, whatever the loop does.
 * The asserted figures therefore run the emulator at nice 19 (as if it were
 * the remote server it stands for); a first pass at normal priority is
 * printed for comparison.
 *
 * Two figures per pass: the largest wall-clock gap between ticks, and the
 * most CPU the loop thread spent between two ticks ("busy": what csql's work
 * and the server's own cost the loop, without preemption by other
 * processes). Busy must stay under 5 ms always. The wall-clock gap is
 * asserted only when the host is not oversubscribed (1-minute load average
 * below the CPU count): on a loaded host even an idle loop misses its ticks
 * by several ms, so each pass also reports that noise floor (the same server,
 * idle, for one second). Where allowed (root), the server runs at nice -10 so
 * that other processes disturb the figures less.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support.h"

#ifndef ASYNC_SERVER_EXE
#define ASYNC_SERVER_EXE ""
#endif

#define TOKEN "async-server-token"
#define INSTANCE "p:r:srv"
#define DIALS 100
/* Sanitized builds spend 3-6x the CPU per handshake step: the bound scales with them. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MAX_GAP_US 20000
#else
#define MAX_GAP_US 5000
#endif

static csqlt_emulator g_em;
static uint16_t g_port;
static pid_t g_srv = -1;
static int g_srv_port;
static int g_srv_boosted; /* the server runs at nice -10 */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return 0;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

/* Every thread of pid (new ones inherit from their creator, e.g. the proxy's acceptor). */
static void renice_all(pid_t pid, int nice)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            (void)setpriority(PRIO_PROCESS, (id_t)atoi(de->d_name), nice);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
}

static int start_server(void)
{
    char port[16], api[160];
    snprintf(port, sizeof(port), "%u", (unsigned)g_port);
    snprintf(api, sizeof(api), "%s", g_em.url);
    int out[2];
    if (pipe(out) != 0) {
        return -1;
    }
    g_srv = fork();
    if (g_srv == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execl(ASYNC_SERVER_EXE, "async_server", "--instance", INSTANCE, "--admin-api", api,
              "--token", TOKEN, "--server-port", port, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char line[128] = "";
    size_t n = 0;
    struct pollfd p = {.fd = out[0], .events = POLLIN};
    int64_t deadline = now_us() + 10 * 1000000;
    while (n < sizeof(line) - 1 && strchr(line, '\n') == NULL && now_us() < deadline) {
        if (poll(&p, 1, 100) == 1) {
            ssize_t r = read(out[0], line + n, sizeof(line) - 1 - n);
            if (r <= 0) {
                break;
            }
            n += (size_t)r;
            line[n] = '\0';
        }
    }
    close(out[0]);
    if (sscanf(line, "listening on 127.0.0.1:%d", &g_srv_port) != 1) {
        fprintf(stderr, "async_server did not start: \"%s\"\n", line);
        return -1;
    }
    return 0;
}

/* Give the server's threads precedence over other processes, if allowed: 1 if done. */
static int boost_server(void)
{
    errno = 0;
    if (setpriority(PRIO_PROCESS, (id_t)g_srv, -10) != 0) {
        return 0;
    }
    renice_all(g_srv, -10); /* its other threads too (csql's refresh threads) */
    return 1;
}

static int group_setup(void **state)
{
    (void)state;
    if (ASYNC_SERVER_EXE[0] == '\0') {
        return -1;
    }
    char ip[32], port[16];
    csqlt_unique_ip(60, ip, sizeof(ip));
    g_port = free_port();
    snprintf(port, sizeof(port), "%u", (unsigned)g_port);
    static char spec[256];
    snprintf(spec, sizeof(spec), INSTANCE "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1",
             ip);
    const char *argv[] = {"--instance", spec, "--static-token", TOKEN, "--server-port", port,
                          NULL};
    if (csqlt_emulator_start(&g_em, 0, argv) != 0) {
        return -1;
    }
    if (start_server() != 0) {
        csqlt_emulator_stop(&g_em);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g_srv > 0) {
        kill(g_srv, SIGTERM);
        waitpid(g_srv, NULL, 0);
    }
    return csqlt_emulator_stop(&g_em) == 0 ? 0 : -1;
}

/* ---- HTTP ---- */

static int http_send(const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_srv_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read the whole answer (the server closes after it); the body in out. */
static int http_read(int fd, char *out, size_t len, int timeout_ms)
{
    char buf[4096];
    size_t n = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int64_t deadline = now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int64_t left = (deadline - now_us()) / 1000;
        if (left <= 0 || poll(&p, 1, (int)left) != 1) {
            close(fd);
            return -1;
        }
        ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
        if (r <= 0 || n + (size_t)r >= sizeof(buf) - 1) {
            if (r > 0) {
                n += (size_t)r;
            }
            break;
        }
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    const char *body = strstr(buf, "\r\n\r\n");
    snprintf(out, len, "%s", body ? body + 4 : "");
    return strncmp(buf, "HTTP/1.0 200", 12) == 0 ? 0 : -1;
}

static int http_get(const char *path, char *out, size_t len)
{
    int fd = http_send(path);
    return fd < 0 ? -1 : http_read(fd, out, len, 30000);
}

static long long json_num(const char *json, const char *key)
{
    char k[64];
    snprintf(k, sizeof(k), "\"%s\":", key);
    const char *p = strstr(json, k);
    return p ? atoll(p + strlen(k)) : -1;
}

/* ---- the measurement ---- */

typedef struct pass {
    long long dial_ms;
    long long ok;
    long long max_gap_us;
    long long max_gap_cpu_us;
    long long max_busy_us;
    long long idle_gap_us;
    int requests;
    long long max_request_us;
} pass;

static pass run_pass(const char *label)
{
    pass r = {0};
    char body[1024];
    /* The noise floor: the same loop, idle, for one second. */
    assert_int_equal(http_get("/reset", body, sizeof(body)), 0);
    usleep(1000 * 1000);
    assert_int_equal(http_get("/stats", body, sizeof(body)), 0);
    r.idle_gap_us = json_num(body, "max_gap_us");
    assert_int_equal(http_get("/reset", body, sizeof(body)), 0);
    char path[64];
    snprintf(path, sizeof(path), "/dial?n=%d", DIALS);
    int dial_fd = http_send(path);
    assert_true(dial_fd >= 0);
    struct pollfd p = {.fd = dial_fd, .events = POLLIN};
    /* While the dials run, keep asking: every answer must come back promptly. */
    while (poll(&p, 1, 0) == 0) {
        int64_t t0 = now_us();
        assert_int_equal(http_get("/", body, sizeof(body)), 0);
        assert_string_equal(body, "hello\n");
        int64_t took = now_us() - t0;
        if (took > r.max_request_us) {
            r.max_request_us = took;
        }
        r.requests++;
        usleep(2000);
    }
    assert_int_equal(http_read(dial_fd, body, sizeof(body), 60000), 0);
    r.ok = json_num(body, "ok");
    r.dial_ms = json_num(body, "ms");
    if (r.ok != DIALS) {
        print_message("dials: %s", body);
    }
    assert_int_equal(http_get("/stats", body, sizeof(body)), 0);
    r.max_gap_us = json_num(body, "max_gap_during_dials_us");
    r.max_gap_cpu_us = json_num(body, "max_gap_cpu_us");
    r.max_busy_us = json_num(body, "max_busy_us");
    double load = 0;
    getloadavg(&load, 1);
    print_message("async-figure: async_server, %s: %lld/%d dials in %lld ms; 1 ms timer's largest "
                  "gap while dials were in flight %lld us (loop thread CPU in it %lld us), most "
                  "loop CPU between two ticks %lld us; %d requests served meanwhile, slowest "
                  "%lld us; idle noise floor %lld us; load average %.1f on %ld CPUs\n",
                  label, r.ok, DIALS, r.dial_ms, r.max_gap_us, r.max_gap_cpu_us, r.max_busy_us,
                  r.requests, r.max_request_us, r.idle_gap_us, load,
                  sysconf(_SC_NPROCESSORS_ONLN));
    return r;
}

/* The loop's latency: busy always; the wall-clock gap when the host has CPU to spare. */
static void check_latency(const pass *r)
{
    assert_true(r->max_busy_us >= 0);
    assert_true(r->max_busy_us < MAX_GAP_US);
    double load = 0;
    int idle_host = getloadavg(&load, 1) == 1 && load < (double)sysconf(_SC_NPROCESSORS_ONLN);
    if (idle_host) {
        assert_true(r->max_gap_us < MAX_GAP_US);
    } else {
        print_message("async-figure: wall-clock gap not asserted: load average %.1f on %ld CPUs\n",
                      load, sysconf(_SC_NPROCESSORS_ONLN));
    }
}

static void test_loop_latency_while_dialling(void **state)
{
    (void)state;
    /* For comparison: the emulator at normal priority, certificate fetched during the pass. */
    pass normal = run_pass("emulator at normal priority, cold cache");
    assert_int_equal(normal.ok, DIALS);
    renice_all(g_em.pid, 19);
    g_srv_boosted = boost_server();
    pass warm = run_pass(g_srv_boosted ? "emulator at nice 19, server at nice -10, warm cache"
                                       : "emulator at nice 19, warm cache");
    assert_int_equal(warm.ok, DIALS);
    assert_true(warm.requests > 0);
    check_latency(&warm);
    /* Once more, the dials waiting for a fresh certificate first. */
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST", "/emulator/faults",
                                          "{\"endpoint\":\"*\",\"latency_ms\":300}"),
                     200);
    char body[256];
    assert_int_equal(http_get("/quit", body, sizeof(body)), 0);
    int status = -1;
    waitpid(g_srv, &status, 0);
    g_srv = -1;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0); /* clean (and leak-free under ASan) */
    assert_int_equal(start_server(), 0);
    g_srv_boosted = boost_server();
    pass cold = run_pass(g_srv_boosted
                             ? "emulator at nice 19, server at nice -10, cold cache, Admin API "
                               "+300 ms"
                             : "emulator at nice 19, cold cache, Admin API +300 ms");
    assert_int_equal(cold.ok, DIALS);
    assert_true(cold.dial_ms >= 300);
    check_latency(&cold);
    assert_int_equal(http_get("/quit", body, sizeof(body)), 0);
    waitpid(g_srv, &status, 0);
    g_srv = -1;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop_latency_while_dialling),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
