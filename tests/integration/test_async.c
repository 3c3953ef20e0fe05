/*
 * csql_dial_async end to end against csql-emulator, driven by one epoll loop
 * on the test thread (async_loop.c): 1,000 concurrent dials with and without
 * a slow Admin API and no thread per dial; cancellation while waiting for a
 * certificate, mid-handshake and at every step (fds and memory come back:
 * run it under ASan); deadlines in the certificate wait and in the handshake;
 * the cache reactions of csql_dial (refused TCP forces a refresh); LAZY
 * refreshes off the caller's thread; PSC names resolved off it; callbacks,
 * closing, and start errors that never call the callback.
 * Figures are printed as "async-figure: ..." lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "async_loop.h"
#include "cache.h"
#include "csql/async.h"
#include "csql/csql.h"
#include "dialer_internal.h"
#include "support.h"

#define TOKEN "async-test-token"
#define I_PG "p:r:pg"
#define I_MANY "p:r:many"
#define I_SLOW "p:r:slow"
#define I_SLOW2 "p:r:slow2"
#define I_STALL "p:r:stall"
#define I_REFUSE "p:r:refuse"
#define I_PSC "p:r:psc"
#define I_LAZY "p:r:lazy"
#define I_CB "p:r:cb"
#define I_CLOSE "p:r:close"
#define I_ROT "p:r:rot"

static csqlt_emulator g_em;
static csqlt_pg g_pg;
static uint16_t g_port;
static char g_ip[16][32];

/* ---------------- setup ---------------- */

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

static int group_setup(void **state)
{
    (void)state;
    /* 1000 dials hold about 2000 fds at the peak. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 8192) {
        rl.rlim_cur = rl.rlim_max < 8192 ? rl.rlim_max : 8192;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (csqlt_pg_start(&g_pg, NULL) != 0) {
        return -1;
    }
    g_port = free_port();
    for (int i = 0; i < 16; i++) {
        csqlt_unique_ip(150 + i, g_ip[i], sizeof(g_ip[i]));
    }
    char pgb[64], port[16];
    snprintf(pgb, sizeof(pgb), "127.0.0.1:%d", g_pg.port);
    snprintf(port, sizeof(port), "%u", (unsigned)g_port);
    static char spec[16][512];
    int n = 0;
#define SPEC(...) snprintf(spec[n++], sizeof(spec[0]), __VA_ARGS__)
    SPEC(I_PG "?version=POSTGRES_15&public-ip=%s&backend=%s", g_ip[0], pgb);
    /* The many-dials instances need no database: the dial ends with the MDX answer. */
    SPEC(I_MANY "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", g_ip[1]);
    SPEC(I_SLOW "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", g_ip[2]);
    SPEC(I_SLOW2 "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", g_ip[3]);
    SPEC(I_STALL "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", g_ip[4]);
    SPEC(I_REFUSE "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", g_ip[5]);
    SPEC(I_PSC "?version=POSTGRES_15&public-ip=%s&psc-dns=localhost&backend=%s", g_ip[6], pgb);
    SPEC(I_LAZY "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", g_ip[7]);
    SPEC(I_CB "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", g_ip[8]);
    SPEC(I_CLOSE "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", g_ip[9]);
    SPEC(I_ROT "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", g_ip[10]);
#undef SPEC
    const char *argv[2 * 16 + 8];
    int a = 0;
    for (int i = 0; i < n; i++) {
        argv[a++] = "--instance";
        argv[a++] = spec[i];
    }
    argv[a++] = "--static-token";
    argv[a++] = TOKEN;
    argv[a++] = "--server-port";
    argv[a++] = port;
    argv[a] = NULL;
    if (csqlt_emulator_start(&g_em, 0, argv) != 0) {
        csqlt_pg_stop(&g_pg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = csqlt_emulator_stop(&g_em);
    csqlt_pg_stop(&g_pg);
    return rc == 0 ? 0 : -1;
}

static int test_setup(void **state)
{
    (void)state;
    csql_error_clear();
    csqlt_emulator_admin(&g_em, "DELETE", "/emulator/faults", NULL);
    return 0;
}

static csql_dialer *mkdialer(csql_refresh_strategy s, uint32_t dial_timeout_ms)
{
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    assert_int_equal(csql_config_set_token(cfg, TOKEN), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, g_em.url), 0);
    assert_int_equal(csql_config_set_server_port(cfg, g_port), 0);
    assert_int_equal(csql_config_set_refresh_strategy(cfg, s), 0);
    assert_int_equal(csql_config_set_user_agent(cfg, "test_async"), 0);
    if (dial_timeout_ms != 0) {
        assert_int_equal(csql_config_set_dial_timeout_ms(cfg, dial_timeout_ms), 0);
    }
    csql_dialer *d = NULL;
    if (csql_dialer_new(&d, cfg) != 0) {
        fail_msg("csql_dialer_new: %s", csql_error_last()->message);
    }
    csql_config_free(cfg);
    return d;
}

static void add_fault(const char *json)
{
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST", "/emulator/faults", json), 200);
}

/* Start n dials of instance, add them to L. */
static void start_dials(al_loop *L, csql_dialer *d, const char *instance,
                        const csql_dial_options *opts, al_op *ops, csql_dial_async **hs, int n)
{
    for (int i = 0; i < n; i++) {
        if (csql_dial_async_start(d, instance, opts, NULL, NULL, &hs[i]) != 0) {
            fail_msg("csql_dial_async_start: %s", csql_error_last()->message);
        }
        al_add(L, &ops[i], &al_dial_ops, hs[i]);
    }
}

static void finish_dials(al_op *ops, csql_dial_async **hs, int n, int *ok, int *failed)
{
    *ok = *failed = 0;
    for (int i = 0; i < n; i++) {
        if (ops[i].done && ops[i].rc == 0) {
            (*ok)++;
            csql_conn_close(ops[i].out);
        } else if (ops[i].done) {
            if (*failed == 0) {
                print_message("dial %d failed: %s\n", i, ops[i].msg);
            }
            (*failed)++;
        }
        csql_dial_async_free(hs[i]);
    }
}

/* ---------------- tests ---------------- */

static void test_dial_and_use(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    al_loop L;
    al_init(&L, false);
    al_op op;
    csql_dial_async *h = NULL;
    assert_int_equal(csql_dial_async_start(d, I_PG, NULL, NULL, NULL, &h), 0);
    /* Nothing to watch before the first continue: call it now. */
    assert_int_equal(csql_dial_async_fd(h), -1);
    assert_int_equal(csql_dial_async_timeout_ms(h), 0);
    al_add(&L, &op, &al_dial_ops, h);
    /* Cold cache: the first continue waits for the certificate on an eventfd. */
    assert_int_equal(op.done, false);
    assert_true(csql_dial_async_fd(h) >= 0);
    assert_int_equal(csql_dial_async_events(h), CSQL_ASYNC_READ);
    int t = csql_dial_async_timeout_ms(h);
    assert_true(t > 25000 && t <= 30000);
    assert_int_equal(al_run(&L, al_now_us() / 1000 + 10000), 0);
    if (op.rc != 0) {
        fail_msg("dial: %s", op.msg);
    }
    assert_true(op.fds_seen >= 2); /* eventfd, then the socket */
    csql_conn *c = op.out;
    assert_int_equal(SSL_version(csql_conn_ssl(c)), TLS1_3_VERSION);
    assert_string_equal(csql_conn_instance(c), I_PG);
    /* The database speaks through it: a startup message gets an answer from PostgreSQL. */
    static const char params[] = "user\0nobody\0database\0postgres\0";
    unsigned char startup[64];
    size_t len = 8 + sizeof(params); /* the array's own NUL ends the list */
    startup[0] = 0;
    startup[1] = 0;
    startup[2] = 0;
    startup[3] = (unsigned char)len;
    startup[4] = 0;
    startup[5] = 3;
    startup[6] = 0;
    startup[7] = 0;
    memcpy(startup + 8, params, sizeof(params));
    assert_int_equal(csql_conn_write_all(c, startup, len), 0);
    unsigned char buf[1] = {0};
    assert_true(csql_conn_read(c, buf, 1) == 1);
    assert_true(buf[0] == 'R' || buf[0] == 'E'); /* an auth request or an error: PostgreSQL */
    csql_conn_close(c);
    /* After the end: the handle says so, and later continues do not hand out anything. */
    assert_int_equal(csql_dial_async_fd(h), -1);
    csql_conn *again = (csql_conn *)1;
    assert_int_equal(csql_dial_async_continue(h, &again), CSQL_ERR_INVALID_ARGUMENT);
    assert_null(again);
    csql_dial_async_free(h);

    /* Warm cache: one continue goes from the certificate straight to the socket. */
    assert_int_equal(csql_dial_async_start(d, I_PG, NULL, NULL, NULL, &h), 0);
    al_add(&L, &op, &al_dial_ops, h);
    assert_int_equal(csql_dial_async_events(h), CSQL_ASYNC_WRITE); /* connecting */
    assert_int_equal(al_run(&L, al_now_us() / 1000 + 10000), 0);
    assert_int_equal(op.rc, 0);
    assert_int_equal(op.fds_seen, 1);
    csql_conn_close(op.out);
    csql_dial_async_free(h);
    al_dispose(&L);
    csql_dialer_free(d);
}

static bool fd_open(int fd)
{
    return fd >= 0 && fcntl(fd, F_GETFD) != -1;
}

/* The open file behind fd (0 if closed): tells a closed fd from its number reused by another thread. */
static ino_t fd_inode(int fd)
{
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 ? st.st_ino : 0;
}

/* The fd rule of csql/async.h: an fd stays open until the continue after the one that dropped it. */
static void test_fd_rule(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    csql_dial_async *h = NULL;
    assert_int_equal(csql_dial_async_start(d, I_PG, NULL, NULL, NULL, &h), 0);
    csql_conn *c = NULL;
    assert_int_equal(csql_dial_async_continue(h, &c), CSQL_ERR_WOULD_BLOCK);
    int evfd = csql_dial_async_fd(h); /* cold cache: the certificate wait */
    assert_true(fd_open(evfd));
    ino_t evfd_ino = fd_inode(evfd);
    struct pollfd p = {.fd = evfd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_int_equal(csql_dial_async_continue(h, &c), CSQL_ERR_WOULD_BLOCK);
    int sock = csql_dial_async_fd(h);
    assert_true(sock != evfd);
    assert_true(fd_open(evfd)); /* still open: the caller takes it out of its loop now */
    p.fd = sock;
    p.events = POLLOUT;
    assert_int_equal(poll(&p, 1, 10000), 1);
    int rc = csql_dial_async_continue(h, &c);
    assert_true(fd_inode(evfd) != evfd_ino); /* closed by the next call */
    /* Bounded by the dial's deadline. */
    while (rc == CSQL_ERR_WOULD_BLOCK) {
        p.fd = csql_dial_async_fd(h);
        p.events = (short)(csql_dial_async_events(h) & CSQL_ASYNC_READ ? POLLIN : POLLOUT);
        (void)poll(&p, 1, csql_dial_async_timeout_ms(h));
        rc = csql_dial_async_continue(h, &c);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(csql_conn_fd(c), sock); /* the last socket reported is the conn's */
    csql_conn_close(c);
    csql_dial_async_free(h);

    /* A failure keeps the last fd open until free. */
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST",
                                          "/emulator/instances/" I_REFUSE "/refuse-tcp",
                                          "{\"refuse\":true}"),
                     200);
    assert_int_equal(csql_dialer_warmup(d, I_REFUSE, NULL, 1), 0);
    assert_int_equal(csql_dial_async_start(d, I_REFUSE, NULL, NULL, NULL, &h), 0);
    rc = csql_dial_async_continue(h, &c);
    int last = csql_dial_async_fd(h);
    while (rc == CSQL_ERR_WOULD_BLOCK) {
        last = csql_dial_async_fd(h);
        p.fd = last;
        p.events = POLLOUT;
        (void)poll(&p, 1, csql_dial_async_timeout_ms(h));
        rc = csql_dial_async_continue(h, &c);
    }
    assert_int_equal(rc, CSQL_ERR_CONNECT);
    assert_int_equal(csql_dial_async_fd(h), -1);
    ino_t last_ino = fd_inode(last);
    if (last >= 0) {
        assert_true(last_ino != 0); /* still open after the failure */
    }
    csql_dial_async_free(h);
    if (last >= 0) {
        assert_true(fd_inode(last) != last_ino); /* closed by free */
    }
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST",
                                          "/emulator/instances/" I_REFUSE "/refuse-tcp",
                                          "{\"refuse\":false}"),
                     200);
    csql_dialer_free(d);
}

/*
 * Under ASan/TSan a handshake costs ~10x more CPU: 1000 of them on one thread
 * then outlast the emulator's 10 s server-side handshake deadline. Fewer there.
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MANY_DIALS 300
#else
#define MANY_DIALS 1000
#endif

/* 1000 dials from one loop; cold cache; threads counted all along. */
static void many_dials(const char *instance, const char *fault, int expect_min_ms)
{
    enum { N = MANY_DIALS };
    int threads_before = al_threads();
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 60000);
    if (fault != NULL) {
        add_fault(fault);
    }
    static al_op ops[N];
    static csql_dial_async *hs[N];
    al_loop L;
    al_init(&L, false);
    int64_t t0 = al_now_us();
    start_dials(&L, d, instance, NULL, ops, hs, N);
    int64_t started_us = al_now_us() - t0;
    int live = al_run(&L, al_now_us() / 1000 + 90000);
    int64_t took_ms = (al_now_us() - t0) / 1000;
    assert_int_equal(live, 0);
    int ok, failed;
    finish_dials(ops, hs, N, &ok, &failed);
    print_message("async-figure: %d dials (%s%s) on one loop thread: %d ok, %d failed in %lld ms "
                  "(starting them took %lld us); threads before %d, peak during %d; longest "
                  "continue %lld us wall, %lld us CPU\n",
                  N, instance, fault ? ", slow Admin API" : "", ok, failed, (long long)took_ms,
                  (long long)started_us, threads_before, L.max_threads,
                  (long long)L.max_step_us, (long long)L.max_step_cpu_us);
    assert_int_equal(ok, N);
    assert_true(took_ms >= expect_min_ms);
    /* csql-refresh + at most 4 refresh workers: no thread per dial. */
    assert_true(L.max_threads <= threads_before + 5);
    al_dispose(&L);
    csql_dialer_free(d);
}

static void test_1000_dials(void **state)
{
    (void)state;
    many_dials(I_MANY, NULL, 0);
}

static void test_1000_dials_slow_admin_api(void **state)
{
    (void)state;
    many_dials(I_SLOW, "{\"endpoint\":\"*\",\"latency_ms\":500}", 500);
}

/* Cancel every dial while its certificate is still being fetched. */
static void test_cancel_mid_refresh(void **state)
{
    (void)state;
    enum { N = 50 };
    int fds_before = al_open_fds();
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    add_fault("{\"endpoint\":\"*\",\"latency_ms\":600}");
    static al_op ops[N];
    static csql_dial_async *hs[N];
    al_loop L;
    al_init(&L, false);
    start_dials(&L, d, I_SLOW2, NULL, ops, hs, N);
    al_run_for(&L, 100);
    for (int i = 0; i < N; i++) {
        assert_false(ops[i].done);
        al_remove(&L, &ops[i]);
        csql_dial_async_free(hs[i]);
    }
    /* The refresh finishes later and wakes nobody; the certificate is cached. */
    assert_int_equal(csql_dialer_warmup(d, I_SLOW2, NULL, 1), 0);
    csqlt_emulator_admin(&g_em, "DELETE", "/emulator/faults", NULL);
    csql_dial_async *h;
    al_op op;
    assert_int_equal(csql_dial_async_start(d, I_SLOW2, NULL, NULL, NULL, &h), 0);
    al_add(&L, &op, &al_dial_ops, h);
    assert_int_equal(csql_dial_async_events(h), CSQL_ASYNC_WRITE); /* no wait: cached */
    al_run(&L, al_now_us() / 1000 + 5000);
    assert_int_equal(op.rc, 0);
    csql_conn_close(op.out);
    csql_dial_async_free(h);
    al_dispose(&L);
    csql_dialer_free(d);
    assert_int_equal(al_open_fds(), fds_before);
}

/* Cancel a warm dial after every possible number of waits: connect, handshake, MDX. */
static void test_cancel_at_every_step(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    assert_int_equal(csql_dialer_warmup(d, I_MANY, NULL, 1), 0);
    int fds_before = al_open_fds();
    int cancelled = 0;
    for (int k = 1; k < 12; k++) {
        csql_dial_async *h = NULL;
        assert_int_equal(csql_dial_async_start(d, I_MANY, NULL, NULL, NULL, &h), 0);
        int rc = CSQL_ERR_WOULD_BLOCK;
        csql_conn *c = NULL;
        for (int waits = 0; waits < k && rc == CSQL_ERR_WOULD_BLOCK; waits++) {
            rc = csql_dial_async_continue(h, &c);
            if (rc == CSQL_ERR_WOULD_BLOCK) {
                struct pollfd p = {.fd = csql_dial_async_fd(h),
                                   .events = (short)((csql_dial_async_events(h) & CSQL_ASYNC_READ
                                                          ? POLLIN
                                                          : 0) |
                                                     (csql_dial_async_events(h) & CSQL_ASYNC_WRITE
                                                          ? POLLOUT
                                                          : 0))};
                (void)poll(&p, 1, 2000);
            }
        }
        if (rc == CSQL_ERR_WOULD_BLOCK) {
            cancelled++;
        } else {
            assert_int_equal(rc, 0);
            csql_conn_close(c);
        }
        csql_dial_async_free(h);
    }
    print_message("async-figure: cancelled %d dials at successive steps\n", cancelled);
    assert_true(cancelled >= 2);
    assert_int_equal(al_open_fds(), fds_before);
    csql_dialer_free(d);
}

/* A TCP listener that never answers, on the stalled instance's address (the emulator's is off). */
static int stall_listener(void)
{
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST",
                                          "/emulator/instances/" I_STALL "/refuse-tcp",
                                          "{\"refuse\":true}"),
                     200);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(g_port)};
    inet_pton(AF_INET, g_ip[4], &sa.sin_addr);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 64) != 0) {
        fail_msg("stall listener on %s:%u: %s", g_ip[4], (unsigned)g_port, strerror(errno));
    }
    return fd;
}

static void test_deadlines(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    al_loop L;
    al_init(&L, false);
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.timeout_ms = 300;

    /* 1. While waiting for the certificate (the Admin API answers after 3 s). */
    add_fault("{\"endpoint\":\"*\",\"instance\":\"" I_STALL "\",\"latency_ms\":3000}");
    csql_dial_async *h;
    al_op op;
    assert_int_equal(csql_dial_async_start(d, I_STALL, &o, NULL, NULL, &h), 0);
    int64_t t0 = al_now_us();
    al_add(&L, &op, &al_dial_ops, h);
    assert_true(csql_dial_async_timeout_ms(h) <= 300);
    al_run(&L, al_now_us() / 1000 + 5000);
    int64_t took = (al_now_us() - t0) / 1000;
    assert_int_equal(op.rc, CSQL_ERR_TIMEOUT);
    assert_non_null(strstr(op.msg, "waiting for a certificate for " I_STALL));
    assert_true(took >= 290 && took < 800);
    print_message("async-figure: certificate-wait deadline 300 ms, reported after %lld ms\n",
                  (long long)took);
    csql_dial_async_free(h);
    csqlt_emulator_admin(&g_em, "DELETE", "/emulator/faults", NULL);
    assert_int_equal(csql_dialer_warmup(d, I_STALL, NULL, 1), 0);

    /* 2. Mid-handshake: TCP connects, TLS never answers. */
    int lfd = stall_listener();
    assert_int_equal(csql_dial_async_start(d, I_STALL, &o, NULL, NULL, &h), 0);
    t0 = al_now_us();
    al_add(&L, &op, &al_dial_ops, h);
    al_run(&L, al_now_us() / 1000 + 5000);
    took = (al_now_us() - t0) / 1000;
    assert_int_equal(op.rc, CSQL_ERR_TIMEOUT);
    assert_non_null(strstr(op.msg, "TLS handshake"));
    assert_true(took >= 290 && took < 800);
    print_message("async-figure: handshake deadline 300 ms, reported after %lld ms\n",
                  (long long)took);
    csql_dial_async_free(h);
    close(lfd);
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST",
                                          "/emulator/instances/" I_STALL "/refuse-tcp",
                                          "{\"refuse\":false}"),
                     200);
    al_dispose(&L);
    csql_dialer_free(d);
}

static int connect_settings_count(const char *instance)
{
    char *resp = NULL;
    long status = 0;
    char url[256];
    snprintf(url, sizeof(url), "%s/emulator/counters", g_em.url);
    if (csqlt_http("GET", url, NULL, NULL, &status, &resp) != 0 || status != 200) {
        free(resp);
        return -1;
    }
    /* "connectSettings":{"total":N,"instances":{"p:r:x":M,...}} */
    int n = 0;
    const char *cs = strstr(resp, "\"connectSettings\"");
    char key[64];
    snprintf(key, sizeof(key), "\"%s\":", instance);
    const char *p = cs ? strstr(cs, key) : NULL;
    if (p != NULL) {
        n = atoi(p + strlen(key));
    }
    free(resp);
    return n;
}

static void test_refused_tcp_forces_refresh(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    assert_int_equal(csql_dialer_warmup(d, I_REFUSE, NULL, 1), 0);
    int before = connect_settings_count(I_REFUSE);
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST",
                                          "/emulator/instances/" I_REFUSE "/refuse-tcp",
                                          "{\"refuse\":true}"),
                     200);
    al_loop L;
    al_init(&L, false);
    csql_dial_async *h;
    al_op op;
    assert_int_equal(csql_dial_async_start(d, I_REFUSE, NULL, NULL, NULL, &h), 0);
    al_add(&L, &op, &al_dial_ops, h);
    al_run(&L, al_now_us() / 1000 + 5000);
    assert_int_equal(op.rc, CSQL_ERR_CONNECT);
    assert_non_null(strstr(op.msg, "refused"));
    /* The error is raised again on later calls. */
    assert_int_equal(csql_dial_async_continue(h, NULL), CSQL_ERR_CONNECT);
    assert_non_null(strstr(csql_error_last()->message, "refused"));
    csql_dial_async_free(h);
    /* As csql_dial: a refresh follows (burst 2: the warm-up used one token). */
    int after = before;
    for (int i = 0; i < 100 && after == before; i++) {
        usleep(20000);
        after = connect_settings_count(I_REFUSE);
    }
    assert_true(after > before);
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST",
                                          "/emulator/instances/" I_REFUSE "/refuse-tcp",
                                          "{\"refuse\":false}"),
                     200);
    al_dispose(&L);
    csql_dialer_free(d);
}

/* One dial of instance on L: its rc (and message in op->msg). */
static int dial_once(al_loop *L, csql_dialer *d, const char *instance, al_op *op)
{
    csql_dial_async *h;
    assert_int_equal(csql_dial_async_start(d, instance, NULL, NULL, NULL, &h), 0);
    al_add(L, op, &al_dial_ops, h);
    al_run(L, al_now_us() / 1000 + 10000);
    assert_true(op->done);
    if (op->rc == 0) {
        csql_conn_close(op->out);
    }
    csql_dial_async_free(h);
    return op->rc;
}

/* As csql_dial: a TLS failure drops the cached certificate; the next dial fetches a fresh CA. */
static void test_ca_rotation_drops_the_certificate(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    al_loop L;
    al_init(&L, false);
    al_op op;
    assert_int_equal(dial_once(&L, d, I_ROT, &op), 0);
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST", "/emulator/instances/" I_ROT "/rotate-ca",
                                          "{}"),
                     200);
    /* The cached CA no longer matches the server's certificate. */
    int rc = dial_once(&L, d, I_ROT, &op);
    assert_int_equal(rc, CSQL_ERR_TLS_VERIFY);
    assert_non_null(strstr(op.msg, "server certificate rejected"));
    csql__instance_name name;
    assert_int_equal(csql__instance_name_parse(I_ROT, &name), 0);
    csql__cache_entry_stats st;
    assert_int_equal(csql__cache_stats(d->cache, &name, false, &st), 0);
    assert_true(!st.has_certset || st.refreshing || st.refreshes_started >= 2);
    /* The next dial waits for the refresh the drop scheduled, and connects. */
    rc = dial_once(&L, d, I_ROT, &op);
    if (rc != 0) {
        fail_msg("after rotation: %s", op.msg);
    }
    assert_true(op.fds_seen >= 1);
    assert_int_equal(csql__cache_stats(d->cache, &name, false, &st), 0);
    assert_int_equal(st.refreshes_started, 2);
    al_dispose(&L);
    csql_dialer_free(d);
}

static void test_lazy_refresh_off_the_loop(void **state)
{
    (void)state;
    enum { N = 20 };
    csql_dialer *d = mkdialer(CSQL_REFRESH_LAZY, 0);
    add_fault("{\"endpoint\":\"*\",\"instance\":\"" I_LAZY "\",\"latency_ms\":400}");
    static al_op ops[N];
    static csql_dial_async *hs[N];
    al_loop L;
    al_init(&L, false);
    int64_t t0 = al_now_us();
    start_dials(&L, d, I_LAZY, NULL, ops, hs, N);
    al_run(&L, al_now_us() / 1000 + 10000);
    int64_t took = (al_now_us() - t0) / 1000;
    int ok, failed;
    int64_t longest = L.max_step_us;
    finish_dials(ops, hs, N, &ok, &failed);
    print_message("async-figure: LAZY, %d dials behind a 400 ms refresh: %lld ms, longest "
                  "continue %lld us wall, %lld us CPU\n",
                  N, (long long)took, (long long)longest, (long long)L.max_step_cpu_us);
    assert_int_equal(ok, N);
    assert_true(took >= 400);
    assert_true(longest < 350000); /* the 400 ms refresh never ran inside a continue */
    al_dispose(&L);
    csql_dialer_free(d);
}

static void test_psc_name_resolved_off_the_loop(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.ip_type = CSQL_IP_PSC;
    al_loop L;
    al_init(&L, false);
    csql_dial_async *h;
    al_op op;
    assert_int_equal(csql_dial_async_start(d, I_PSC, &o, NULL, NULL, &h), 0);
    al_add(&L, &op, &al_dial_ops, h);
    al_run(&L, al_now_us() / 1000 + 10000);
    if (op.rc != 0) {
        fail_msg("PSC dial: %s", op.msg);
    }
    /* certificate eventfd, resolver eventfd (unless the name resolved at once), socket */
    assert_true(op.fds_seen >= 2);
    csql_conn_close(op.out);
    csql_dial_async_free(h);
    al_dispose(&L);
    csql_dialer_free(d);
}

typedef struct cb_state {
    int calls;
    int status;
    csql_conn *conn;
    char msg[256];
    bool free_in_cb;
} cb_state;

static void on_done(csql_dial_async *h, int status, csql_conn *conn, void *ud)
{
    cb_state *s = ud;
    s->calls++;
    s->status = status;
    s->conn = conn;
    snprintf(s->msg, sizeof(s->msg), "%s", status ? csql_error_last()->message : "");
    if (s->free_in_cb) {
        csql_dial_async_free(h);
    }
}

static void test_callback_mode(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    cb_state s = {.free_in_cb = true};
    csql_dial_async *h = NULL;
    assert_int_equal(csql_dial_async_start(d, I_CB, NULL, on_done, &s, &h), 0);
    int rc;
    /* Bounded: each wait is for readiness, the dial has a 30 s deadline. */
    while ((rc = csql_dial_async_continue(h, NULL)) == CSQL_ERR_WOULD_BLOCK) {
        struct pollfd p = {.fd = csql_dial_async_fd(h),
                           .events = (short)((csql_dial_async_events(h) & CSQL_ASYNC_READ
                                                  ? POLLIN
                                                  : 0) |
                                             (csql_dial_async_events(h) & CSQL_ASYNC_WRITE
                                                  ? POLLOUT
                                                  : 0))};
        (void)poll(&p, 1, csql_dial_async_timeout_ms(h));
    }
    /* h was freed by the callback: not touched again. */
    assert_int_equal(rc, 0);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, 0);
    assert_non_null(s.conn);
    csql_conn_close(s.conn);

    /* A failure goes to the callback too, with the message on the thread. */
    cb_state f = {.free_in_cb = false};
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.ip_type = CSQL_IP_PRIVATE; /* the instance has none */
    assert_int_equal(csql_dial_async_start(d, I_CB, &o, on_done, &f, &h), 0);
    assert_int_equal(csql_dial_async_continue(h, NULL), CSQL_ERR_NO_IP_TYPE);
    assert_int_equal(f.calls, 1);
    assert_int_equal(f.status, CSQL_ERR_NO_IP_TYPE);
    assert_null(f.conn);
    assert_non_null(strstr(f.msg, "PRIVATE"));
    assert_int_equal(csql_dial_async_continue(h, NULL), CSQL_ERR_NO_IP_TYPE);
    assert_int_equal(f.calls, 1); /* once only */
    csql_dial_async_free(h);
    csql_dialer_free(d);
}

static void test_start_errors_never_call_back(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    cb_state s = {0};
    csql_dial_async *h = (csql_dial_async *)1;
    assert_int_equal(csql_dial_async_start(NULL, I_CB, NULL, on_done, &s, &h),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_null(h);
    assert_int_equal(csql_dial_async_start(d, NULL, NULL, on_done, &s, &h),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_dial_async_start(d, I_CB, NULL, on_done, &s, NULL),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_dial_async_start(d, "not-an-instance", NULL, on_done, &s, &h),
                     CSQL_ERR_BAD_INSTANCE_NAME);
    assert_non_null(strstr(csql_error_last()->message, "not-an-instance"));
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.version = 99;
    assert_int_equal(csql_dial_async_start(d, I_CB, &o, on_done, &s, &h),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "version"));
    csql_dialer_close(d);
    assert_int_equal(csql_dial_async_start(d, I_CB, NULL, on_done, &s, &h), CSQL_ERR_CLOSED);
    assert_null(h);
    assert_int_equal(s.calls, 0);
    /* NULL handles are harmless. */
    csql_dial_async_free(NULL);
    assert_int_equal(csql_dial_async_continue(NULL, NULL), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_dial_async_fd(NULL), -1);
    assert_int_equal(csql_dial_async_events(NULL), 0);
    assert_int_equal(csql_dial_async_timeout_ms(NULL), 0);
    csql_dialer_free(d);
}

static void test_close_wakes_waiting_dials(void **state)
{
    (void)state;
    enum { N = 10 };
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    add_fault("{\"endpoint\":\"*\",\"instance\":\"" I_CLOSE "\",\"latency_ms\":2000}");
    static al_op ops[N];
    static csql_dial_async *hs[N];
    al_loop L;
    al_init(&L, false);
    int before = connect_settings_count(I_CLOSE);
    start_dials(&L, d, I_CLOSE, NULL, ops, hs, N);
    /* Until the refresh's slow request is in flight (key generation, slow under TSan, is over). */
    for (int i = 0; i < 400 && connect_settings_count(I_CLOSE) <= before; i++) {
        al_run_for(&L, 25);
    }
    assert_true(connect_settings_count(I_CLOSE) > before);
    al_run_for(&L, 50);
    int64_t t0 = al_now_us();
    csql_dialer_close(d); /* cancels the refresh's HTTP calls in flight and joins it */
    int64_t close_ms = (al_now_us() - t0) / 1000;
    assert_true(close_ms < 1000); /* not the 2 s the Admin API would have taken */
    al_run(&L, al_now_us() / 1000 + 5000);
    for (int i = 0; i < N; i++) {
        assert_true(ops[i].done);
        assert_int_equal(ops[i].rc, CSQL_ERR_CLOSED);
        csql_dial_async_free(hs[i]);
    }
    print_message("async-figure: close returned in %lld ms and woke %d waiting dials after %lld ms\n",
                  (long long)close_ms, N, (long long)((al_now_us() - t0) / 1000));
    al_dispose(&L);
    csql_dialer_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_dial_and_use, test_setup),
        cmocka_unit_test_setup(test_fd_rule, test_setup),
        cmocka_unit_test_setup(test_1000_dials, test_setup),
        cmocka_unit_test_setup(test_1000_dials_slow_admin_api, test_setup),
        cmocka_unit_test_setup(test_cancel_mid_refresh, test_setup),
        cmocka_unit_test_setup(test_cancel_at_every_step, test_setup),
        cmocka_unit_test_setup(test_deadlines, test_setup),
        cmocka_unit_test_setup(test_refused_tcp_forces_refresh, test_setup),
        cmocka_unit_test_setup(test_ca_rotation_drops_the_certificate, test_setup),
        cmocka_unit_test_setup(test_lazy_refresh_off_the_loop, test_setup),
        cmocka_unit_test_setup(test_psc_name_resolved_off_the_loop, test_setup),
        cmocka_unit_test_setup(test_callback_mode, test_setup),
        cmocka_unit_test_setup(test_start_errors_never_call_back, test_setup),
        cmocka_unit_test_setup(test_close_wakes_waiting_dials, test_setup),
    };
    const char *filter = getenv("CSQL_TEST_FILTER");
    if (filter != NULL) {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
