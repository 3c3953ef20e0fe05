/* Harness for test_emulator_proxy: scripted backends and OpenSSL clients. */
#include "emulator_proxy_harness.h"

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "support.h"

/* ---------------- time ---------------- */

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---------------- scripted backends ---------------- */


proxy_backend bk = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

void sha256(const uint8_t *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    assert_int_equal(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
}

int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) {
                continue;
            }
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void bk_echo(int fd)
{
    uint8_t *buf = malloc(65536);
    for (;;) {
        ssize_t n = recv(fd, buf, 65536, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0 || write_all(fd, buf, (size_t)n) != 0) {
            break;
        }
    }
    shutdown(fd, SHUT_WR);
    free(buf);
}

static void bk_speak_first(int fd)
{
    size_t n = bk.speak_len;
    uint8_t *out = malloc(n ? n : 1), *in = malloc(65536);
    for (size_t i = 0; i < n; i++) {
        out[i] = (uint8_t)(i * 7 + 3);
    }
    atomic_store(&bk.spoken, 0);
    for (size_t off = 0; off < n;) {
        size_t chunk = n - off < 65536 ? n - off : 65536;
        if (write_all(fd, out + off, chunk) != 0) {
            break;
        }
        off += chunk;
        atomic_store(&bk.spoken, off);
    }
    shutdown(fd, SHUT_WR);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    uint64_t total = 0;
    for (;;) {
        ssize_t r = recv(fd, in, 65536, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        EVP_DigestUpdate(md, in, (size_t)r);
        total += (uint64_t)r;
    }
    pthread_mutex_lock(&bk.mu);
    EVP_DigestFinal_ex(md, bk.got_sha, NULL);
    bk.got_bytes = total;
    bk.got_done = 1;
    pthread_cond_broadcast(&bk.cv);
    pthread_mutex_unlock(&bk.mu);
    EVP_MD_CTX_free(md);
    free(out);
    free(in);
}

/* A MariaDB-like greeting payload with CLIENT_SSL (0x0800) in the capability flags. */
size_t mysql_greeting(uint8_t *p)
{
    size_t n = 4;
    p[n++] = 10;
    memcpy(p + n, "10.11.6-MariaDB", 16);
    n += 16;
    memcpy(p + n, "\x07\x00\x00\x00" "abcdefgh", 12);
    n += 12;
    p[n++] = 0;
    p[n++] = 0xfe;
    p[n++] = 0xff;
    p[n++] = 8;
    memset(p + n, 0, 20);
    n += 20;
    size_t payload = n - 4;
    p[0] = (uint8_t)payload;
    p[1] = 0;
    p[2] = 0;
    p[3] = 0;
    return n;
}

typedef struct bk_arg {
    int fd;
    bk_mode mode;
} bk_arg;

static void *bk_conn(void *arg)
{
    bk_arg a = *(bk_arg *)arg;
    free(arg);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(a.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(a.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    switch (a.mode) {
    case BK_ECHO:
        bk_echo(a.fd);
        break;
    case BK_SPEAK_FIRST:
        bk_speak_first(a.fd);
        break;
    case BK_MYSQL: {
        uint8_t g[128];
        write_all(a.fd, g, mysql_greeting(g));
        bk_echo(a.fd);
        break;
    }
    case BK_RESET: {
        uint8_t b[1000];
        memset(b, 'r', sizeof(b));
        write_all(a.fd, b, sizeof(b));
        sleep_ms(100);
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(a.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)); /* close() sends RST */
        break;
    }
    case BK_PEER: {
        struct sockaddr_in sin;
        socklen_t len = sizeof(sin);
        char line[96], ip[INET_ADDRSTRLEN] = "?";
        if (getpeername(a.fd, (struct sockaddr *)&sin, &len) == 0) {
            inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof(ip));
        }
        int n = snprintf(line, sizeof(line), "PEER %s\n", ip);
        write_all(a.fd, line, (size_t)n);
        bk_echo(a.fd);
        break;
    }
    }
    close(a.fd);
    atomic_fetch_sub(&bk.live, 1);
    return NULL;
}

static void *bk_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd pf[3] = {{.fd = bk.wake[0], .events = POLLIN},
                               {.fd = bk.ufd, .events = POLLIN},
                               {.fd = bk.tfd, .events = POLLIN}};
        if (poll(pf, 3, -1) < 0) {
            continue;
        }
        if (pf[0].revents) {
            return NULL;
        }
        for (int i = 1; i < 3; i++) {
            if (!(pf[i].revents & POLLIN)) {
                continue;
            }
            int fd = accept4(pf[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                continue;
            }
            bk_arg *a = malloc(sizeof(*a));
            a->fd = fd;
            a->mode = (bk_mode)atomic_load(&bk.mode);
            atomic_fetch_add(&bk.conns, 1);
            atomic_fetch_add(&bk.live, 1);
            pthread_t t;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&t, &attr, bk_conn, a) != 0) {
                close(fd);
                free(a);
                atomic_fetch_sub(&bk.live, 1);
            }
            pthread_attr_destroy(&attr);
        }
    }
}

int bk_start(void)
{
    if (csqlt_tempdir(bk.dir, sizeof(bk.dir), "csql-proxy-test") != 0) {
        return -1;
    }
    snprintf(bk.path, sizeof(bk.path), "%s/backend.sock", bk.dir);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    if (strlen(bk.path) >= sizeof(un.sun_path)) {
        return -1;
    }
    strcpy(un.sun_path, bk.path);
    bk.ufd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (bind(bk.ufd, (struct sockaddr *)&un, sizeof(un)) != 0 || listen(bk.ufd, 128) != 0) {
        return -1;
    }
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    bk.tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (bind(bk.tfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(bk.tfd, 128) != 0 ||
        getsockname(bk.tfd, (struct sockaddr *)&sin, &len) != 0) {
        return -1;
    }
    bk.tport = ntohs(sin.sin_port);
    if (pipe(bk.wake) != 0 || pthread_create(&bk.thread, NULL, bk_main, NULL) != 0) {
        return -1;
    }
    return 0;
}

void bk_wait_idle(void)
{
    for (int i = 0; i < 1000 && atomic_load(&bk.live) > 0; i++) {
        sleep_ms(10);
    }
}

void bk_stop(void)
{
    if (write(bk.wake[1], "x", 1) != 1) {
        fail_msg("backend wake");
    }
    pthread_join(bk.thread, NULL);
    bk_wait_idle();
    close(bk.ufd);
    close(bk.tfd);
    close(bk.wake[0]);
    close(bk.wake[1]);
    csqlt_rmdir(bk.dir);
}

/* ---------------- TLS clients ---------------- */

/* fd, or -errno. */
int tcp_connect(const char *ip, int port)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, ip, &s6->sin6_addr);
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, ip, &s4->sin_addr);
        len = sizeof(*s4);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct timeval tv = {.tv_sec = 15};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

static int add_trust(SSL_CTX *ctx, const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *c;
    int n = 0;
    while ((c = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), c);
        X509_free(c);
        n++;
    }
    ERR_clear_error();
    BIO_free(bio);
    return n;
}

int tls_client_open(client *c, const char *ip, const cli_opts *o)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(c->ctx, o->max_proto ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(c->ctx, o->max_proto ? o->max_proto : TLS1_3_VERSION);
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (o->cert != NULL) {
        assert_int_equal(SSL_CTX_use_certificate(c->ctx, o->cert), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey(c->ctx, o->key), 1);
    }
    assert_true(add_trust(c->ctx, o->trust) >= 1);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    c->fd = tcp_connect(ip, o->port);
    assert_true(c->fd >= 0);
    c->ssl = SSL_new(c->ctx);
    SSL_set_fd(c->ssl, c->fd);
    int r = SSL_connect(c->ssl);
    ERR_clear_error();
    return r == 1 ? 0 : -1;
}

void client_close(client *c)
{
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0) {
        close(c->fd);
    }
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

void send_all(client *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        size_t put = 0;
        assert_int_equal(SSL_write_ex(c->ssl, b, n, &put), 1); /* partial writes: loop */
        b += put;
        n -= put;
    }
}

/* Reads exactly n bytes; 0 or -1. */
int recv_exact(client *c, void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        size_t got = 0;
        if (SSL_read_ex(c->ssl, b, n, &got) != 1) {
            ERR_clear_error();
            return -1;
        }
        b += got;
        n -= got;
    }
    return 0;
}

/* After the expected bytes: 1 clean close_notify, 0 more data, -1 error/reset. */
int recv_end(client *c)
{
    uint8_t b;
    size_t got = 0;
    int r = SSL_read_ex(c->ssl, &b, 1, &got);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    ERR_clear_error();
    return r == 1 ? 0 : e == SSL_ERROR_ZERO_RETURN ? 1 : -1;
}

/*
 * Send out (then close_notify when half_close) while reading everything the
 * proxy sends until its close_notify. Non-blocking so both directions flow.
 */
int exchange(client *c, const uint8_t *out, size_t outlen, bool half_close, uint8_t **in,
                    size_t *inlen)
{
    size_t sent = 0, cap = outlen + 65536, got = 0;
    uint8_t *buf = malloc(cap);
    bool shut = !half_close, eof = false;
    int64_t deadline = now_ms() + 60000;
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    while (!eof && now_ms() < deadline) {
        short events = 0;
        if (sent < outlen) {
            size_t put = 0, chunk = outlen - sent > 262144 ? 262144 : outlen - sent;
            int r = SSL_write_ex(c->ssl, out + sent, chunk, &put);
            if (r == 1) {
                sent += put;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            ERR_clear_error();
            if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
                break;
            }
            events |= e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
        } else if (!shut) {
            int r = SSL_shutdown(c->ssl);
            if (r >= 0) {
                shut = true;
                continue;
            }
            ERR_clear_error();
            events |= POLLOUT;
        }
        if (cap - got < 65536) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t n = 0;
        int r = SSL_read_ex(c->ssl, buf + got, cap - got, &n);
        if (r == 1) {
            got += n;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        ERR_clear_error();
        if (e == SSL_ERROR_ZERO_RETURN) {
            eof = true;
            break;
        }
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            break;
        }
        events |= POLLIN;
        struct pollfd pf = {.fd = c->fd, .events = events};
        poll(&pf, 1, 1000);
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
    *in = buf;
    *inlen = got;
    return eof && sent == outlen && shut ? 0 : -1;
}

uint8_t *random_bytes(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_int_equal(RAND_bytes(p, (int)(n ? n : 1)), 1);
    return p;
}
