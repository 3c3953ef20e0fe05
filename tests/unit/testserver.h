/*
 * Test helpers: an OpenSSL TLS server on a loopback ephemeral port, run on
 * its own thread with blocking sockets, and a hand-built certset for the
 * client side (what a refresh would produce).
 */
#ifndef CSQL_TESTSERVER_H
#define CSQL_TESTSERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "certset.h"
#include "testcerts.h"

/* Runs on the server thread after each handshake; the server frees ssl and closes fd after. */
typedef void (*csqlt_handler)(SSL *ssl, int fd, void *arg);

typedef struct csqlt_server_opts {
    const csqlt_cert *cert;  /* server leaf and key */
    X509 *chain;             /* an intermediate to send, or NULL */
    X509 *client_ca;         /* require client certificates from this CA; NULL: do not ask */
    int max_version;         /* 0, or e.g. TLS1_2_VERSION */
    int silent;              /* listen, never accept: TCP connects, the handshake never answers */
    int connections;         /* handled one after another; 0 means 1 */
    const char *bind_addr;   /* "127.0.0.1" (default) or "::1" */
    csqlt_handler handler;   /* NULL: close right after the handshake */
    void *arg;
} csqlt_server_opts;

typedef struct csqlt_server {
    csqlt_server_opts o;
    int lfd;
    uint16_t port;
    SSL_CTX *ctx;
    pthread_t thread;
    atomic_int stop;
    atomic_int handshakes;   /* completed */
    atomic_int failures;     /* failed server-side handshakes */
} csqlt_server;

/* Start listening and the server thread. Asserts on failure (call from the test thread). */
void csqlt_server_start(csqlt_server *s, const csqlt_server_opts *o);
/* Stop accepting, join the thread, free everything. */
void csqlt_server_stop(csqlt_server *s);

/* A loopback TCP port with nothing listening on it (bound, then closed). */
uint16_t csqlt_unused_port(void);

/* Fill cs as a refresh would: client cert + key, trust anchors, DNS name, MDX support. */
void csqlt_certset_init(csql__certset *cs, const csqlt_cert *client, const char *ca_pem,
                        const char *dns_name, int mdx_supported);
void csqlt_certset_dispose(csql__certset *cs);

/* Server-side helpers for handlers: 0 on success, -1 on failure or EOF. */
int csqlt_ssl_read_exact(SSL *ssl, void *buf, size_t len);
int csqlt_ssl_write_all(SSL *ssl, const void *buf, size_t len);

/* Read (and drop) one MDX request frame: 0, or -1 if it is not one. */
int csqlt_mdx_skip_request(SSL *ssl);

/* Handler: echo everything back until EOF, then send close_notify. */
void csqlt_echo_handler(SSL *ssl, int fd, void *arg);

/* Handler arg for MDX: answer the request frame with status/message, then echo. */
typedef struct csqlt_mdx_reply {
    int status;              /* CSQL__MDX_OK or CSQL__MDX_ERROR */
    const char *message;     /* for ERROR */
    char got_user_agent[256];
    int got_protocol;
    atomic_int got_request;
} csqlt_mdx_reply;
void csqlt_mdx_handler(SSL *ssl, int fd, void *arg);

#endif
