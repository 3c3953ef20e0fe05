/* Fake transports for the forwarding engine's tests. */
#include "fwd_testlib.h"

#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

int tl_echo_dial(tl_echo *e, csql__fwd_remote *out)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return csql__error(CSQL_ERR_IO, "socketpair failed");
    }
    tl_echo_add(e, sv[1]);
    out->fd = sv[0];
    out->ssl = NULL;
    out->conn = NULL;
    return CSQL_OK;
}

int tl_connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int tl_connect_tcp(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int64_t tl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long tl_rss_kib(void)
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

/* ---------------- echo server ---------------- */

#define ECHO_MAX 4096

struct tl_echo {
    pthread_t thread;
    int wake[2];
    pthread_mutex_t mu;
    int pending[ECHO_MAX];
    int npending;
    int fds[ECHO_MAX];
    int nfds;
    int open; /* mu */
    bool stop;
};

static void *echo_main(void *arg)
{
    tl_echo *e = arg;
    static _Thread_local struct pollfd pfd[ECHO_MAX + 1];
    char buf[65536];
    for (;;) {
        pthread_mutex_lock(&e->mu);
        for (int i = 0; i < e->npending && e->nfds < ECHO_MAX; i++) {
            e->fds[e->nfds++] = e->pending[i];
        }
        e->npending = 0;
        bool stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop) {
            break;
        }
        pfd[0].fd = e->wake[0];
        pfd[0].events = POLLIN;
        for (int i = 0; i < e->nfds; i++) {
            pfd[i + 1].fd = e->fds[i];
            pfd[i + 1].events = POLLIN;
        }
        int n = poll(pfd, (nfds_t)e->nfds + 1, 1000);
        if (n <= 0) {
            continue;
        }
        if (pfd[0].revents) {
            char c[64];
            while (read(e->wake[0], c, sizeof(c)) > 0) {
            }
        }
        for (int i = e->nfds - 1; i >= 0; i--) {
            if (!pfd[i + 1].revents) {
                continue;
            }
            ssize_t r = read(e->fds[i], buf, sizeof(buf));
            if (r > 0 && tl_write_all(e->fds[i], buf, (size_t)r, 10000) == 0) {
                continue;
            }
            if (r == 0) {
                shutdown(e->fds[i], SHUT_WR);
            }
            close(e->fds[i]);
            e->fds[i] = e->fds[--e->nfds];
            pthread_mutex_lock(&e->mu);
            e->open--;
            pthread_mutex_unlock(&e->mu);
        }
    }
    for (int i = 0; i < e->nfds; i++) {
        close(e->fds[i]);
    }
    return NULL;
}

tl_echo *tl_echo_start(void)
{
    tl_echo *e = calloc(1, sizeof(*e));
    if (pipe2(e->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        free(e);
        return NULL;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_create(&e->thread, NULL, echo_main, e);
    return e;
}

void tl_echo_add(tl_echo *e, int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    pthread_mutex_lock(&e->mu);
    e->pending[e->npending++] = fd;
    e->open++;
    pthread_mutex_unlock(&e->mu);
    ssize_t w = write(e->wake[1], "x", 1);
    (void)w;
}

int tl_echo_open(tl_echo *e)
{
    pthread_mutex_lock(&e->mu);
    int n = e->open;
    pthread_mutex_unlock(&e->mu);
    return n;
}

void tl_echo_stop(tl_echo *e)
{
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_mutex_unlock(&e->mu);
    ssize_t w = write(e->wake[1], "x", 1);
    (void)w;
    pthread_join(e->thread, NULL);
    for (int i = 0; i < e->npending; i++) {
        close(e->pending[i]);
    }
    close(e->wake[0]);
    close(e->wake[1]);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

/* ---------------- TLS pair ---------------- */

static SSL_CTX *g_sctx;
static pthread_mutex_t g_sctx_mu = PTHREAD_MUTEX_INITIALIZER;

static SSL_CTX *server_ctx(void)
{
    pthread_mutex_lock(&g_sctx_mu);
    if (g_sctx == NULL) {
        EVP_PKEY *key = EVP_EC_gen("P-256");
        X509 *x = X509_new();
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), -60);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_set_pubkey(x, key);
        X509_NAME *nm = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"p:i", -1, -1, 0);
        X509_set_issuer_name(x, nm);
        X509_sign(x, key, EVP_sha256());
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
        SSL_CTX_use_certificate(ctx, x);
        SSL_CTX_use_PrivateKey(ctx, key);
        X509_free(x);
        EVP_PKEY_free(key);
        g_sctx = ctx;
    }
    pthread_mutex_unlock(&g_sctx_mu);
    return g_sctx;
}

static SSL_CTX *g_cctx;

static SSL_CTX *client_ctx(void)
{
    pthread_mutex_lock(&g_sctx_mu);
    if (g_cctx == NULL) {
        g_cctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(g_cctx, TLS1_3_VERSION);
        SSL_CTX_set_verify(g_cctx, SSL_VERIFY_NONE, NULL);
    }
    pthread_mutex_unlock(&g_sctx_mu);
    return g_cctx;
}

void tl_tls_free_server_ctx(void)
{
    pthread_mutex_lock(&g_sctx_mu);
    SSL_CTX_free(g_sctx);
    SSL_CTX_free(g_cctx);
    g_sctx = NULL;
    g_cctx = NULL;
    pthread_mutex_unlock(&g_sctx_mu);
}

static void *accept_main(void *arg)
{
    SSL *s = arg;
    return SSL_accept(s) == 1 ? s : NULL;
}

int tl_tls_pair(int *cfd, SSL **cssl, int *sfd, SSL **sssl)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return -1;
    }
    SSL_CTX *sctx = server_ctx();
    SSL_CTX *cctx = client_ctx();
    SSL *c = SSL_new(cctx);
    SSL *s = SSL_new(sctx);
    SSL_set_fd(c, sv[0]);
    SSL_set_fd(s, sv[1]);
    pthread_t t;
    pthread_create(&t, NULL, accept_main, s);
    int ok = SSL_connect(c) == 1;
    void *res = NULL;
    pthread_join(t, &res);
    if (!ok || res == NULL) {
        SSL_free(c);
        SSL_free(s);
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    *cfd = sv[0];
    *cssl = c;
    *sfd = sv[1];
    *sssl = s;
    return 0;
}

/* ---------------- I/O helpers ---------------- */

static int wait_fd(int fd, short ev, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - tl_now_ms();
        if (left <= 0) {
            return -1;
        }
        struct pollfd p = {fd, ev, 0};
        int n = poll(&p, 1, (int)left);
        if (n > 0) {
            return 0;
        }
        if (n < 0 && errno != EINTR) {
            return -1;
        }
    }
}

ssize_t tl_read_n(int fd, void *buf, size_t n, int timeout_ms)
{
    int64_t deadline = tl_now_ms() + timeout_ms;
    size_t got = 0;
    while (got < n) {
        if (wait_fd(fd, POLLIN, deadline) != 0) {
            return -1;
        }
        ssize_t r = recv(fd, (char *)buf + got, n - got, MSG_DONTWAIT);
        if (r == 0) {
            break;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            return -1;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

ssize_t tl_read_to_eof(int fd, void *buf, size_t cap, int timeout_ms)
{
    int64_t deadline = tl_now_ms() + timeout_ms;
    size_t got = 0;
    char sink[65536];
    for (;;) {
        if (wait_fd(fd, POLLIN, deadline) != 0) {
            return -1;
        }
        char *dst = got < cap ? (char *)buf + got : sink;
        size_t room = got < cap ? cap - got : sizeof(sink);
        ssize_t r = recv(fd, dst, room, MSG_DONTWAIT);
        if (r == 0) {
            return (ssize_t)got;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                continue;
            }
            return errno == ECONNRESET ? -2 : -1;
        }
        if (got < cap) {
            got += (size_t)r;
        }
    }
}

int tl_write_all(int fd, const void *buf, size_t n, int timeout_ms)
{
    int64_t deadline = tl_now_ms() + timeout_ms;
    size_t put = 0;
    while (put < n) {
        ssize_t w = send(fd, (const char *)buf + put, n - put, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            put += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            return -1;
        }
        if (wait_fd(fd, POLLOUT, deadline) != 0) {
            return -1;
        }
    }
    return 0;
}

int tl_wait_eof(int fd, int timeout_ms, int *was_reset)
{
    char sink[4096];
    ssize_t r = tl_read_to_eof(fd, sink, 0, timeout_ms);
    (void)sink;
    if (was_reset) {
        *was_reset = r == -2;
    }
    return r >= 0 || r == -2 ? 0 : -1;
}

void tl_fill(uint8_t *buf, size_t n, uint64_t seed)
{
    uint64_t x = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
}

uint64_t tl_fnv(uint64_t h, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}
