/*
 * Harness for test_emulator_proxy: scripted backends (a unix socket and a
 * TCP port, one thread per connection, behaviour chosen per test) and small
 * OpenSSL clients. Helpers fail the current cmocka test on setup errors.
 */
#ifndef CSQL_TEST_EMULATOR_PROXY_HARNESS_H
#define CSQL_TEST_EMULATOR_PROXY_HARNESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

int64_t now_ms(void);
void sleep_ms(int ms);
void sha256(const uint8_t *p, size_t n, unsigned char out[32]);
int write_all(int fd, const void *p, size_t n);

/* ---------------- scripted backends ---------------- */

typedef enum bk_mode {
    BK_ECHO,        /* echo until EOF, then half-close */
    BK_SPEAK_FIRST, /* send speak_len bytes, half-close, then hash what arrives */
    BK_MYSQL,       /* a MySQL greeting (CLIENT_SSL set), then echo */
    BK_PEER,        /* "PEER <ip>\n", then echo */
    BK_RESET,       /* send 1000 bytes, then reset the connection */
} bk_mode;

typedef struct proxy_backend {
    char dir[256];
    char path[300];
    int ufd, tfd, tport;
    int wake[2];
    pthread_t thread;
    _Atomic int mode;
    atomic_int live;  /* handler threads running */
    atomic_int conns; /* connections accepted, ever */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t speak_len;
    atomic_size_t spoken; /* BK_SPEAK_FIRST progress */
    int got_done;
    uint64_t got_bytes;
    unsigned char got_sha[32];
} proxy_backend;

/* The one backend of the test process; mode applies to connections accepted from then on. */
extern proxy_backend bk;

int bk_start(void);
/* Waits (up to 10 s) until no backend connection is open. */
void bk_wait_idle(void);
void bk_stop(void);
/* A MariaDB-like greeting packet (CLIENT_SSL set); returns its length (< 128). */
size_t mysql_greeting(uint8_t *p);

/* ---------------- TLS clients ---------------- */

typedef struct client {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
} client;

typedef struct cli_opts {
    X509 *cert;        /* NULL: no client certificate */
    EVP_PKEY *key;     /* the certificate's key */
    const char *trust; /* CA PEM(s) to trust */
    int max_proto;     /* 0: TLS 1.3 only; else TLS 1.2 up to this */
    int port;
} cli_opts;

/* fd (blocking, 15 s timeouts), or -errno. IPv4 or IPv6 literal. */
int tcp_connect(const char *ip, int port);
/* 0 when the TLS handshake completed (client view); close the client either way. */
int tls_client_open(client *c, const char *ip, const cli_opts *o);
void client_close(client *c);
void send_all(client *c, const void *p, size_t n);
/* Reads exactly n bytes; 0 or -1. */
int recv_exact(client *c, void *p, size_t n);
/* After the expected bytes: 1 clean close_notify, 0 more data, -1 error/reset. */
int recv_end(client *c);
/*
 * Send out (then close_notify when half_close) while reading everything the
 * proxy sends until its close_notify. 0 when all of it happened.
 */
int exchange(client *c, const uint8_t *out, size_t outlen, bool half_close, uint8_t **in,
             size_t *inlen);
uint8_t *random_bytes(size_t n);

#endif
