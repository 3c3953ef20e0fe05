/*
 * Server-side proxy internals shared by server_proxy.c (listeners, accept
 * thread, connection registry, TLS contexts), server_proxy_conn.c (one
 * connection's thread: handshake, MDX, backend connect, byte pump) and
 * backend_auth.c (the automatic IAM authn check on the first database bytes).
 */
#ifndef CSQL_EMULATOR_SERVER_PROXY_INTERNAL_H
#define CSQL_EMULATOR_SERVER_PROXY_INTERNAL_H

#include "data_plane.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#define EMU_PROXY_BUF_SIZE (64 * 1024)   /* per direction */
#define EMU_PROXY_MAX_ADDRS 3            /* public, private, PSC */
#define EMU_PROXY_HANDSHAKE_MS 10000     /* TLS handshake deadline */
#define EMU_PROXY_PRELUDE_MS 30000       /* first database bytes (MDX, IAM check) */
#define EMU_PROXY_CONNECT_MS 10000       /* backend connect deadline */
#define EMU_PROXY_MDX_WAIT_MS_DEFAULT 250 /* server-speaks-first engines wait this long for MDX */

typedef enum emu_engine { EMU_ENGINE_POSTGRES, EMU_ENGINE_MYSQL, EMU_ENGINE_SQLSERVER } emu_engine;

/* A linear buffer of EMU_PROXY_BUF_SIZE bytes: data in [head, tail). */
typedef struct emu_buf {
    uint8_t *data;
    size_t head, tail;
} emu_buf;

typedef struct emu_conn {
    struct emu_proxy *px;
    struct emu_conn *next; /* px->mu */
    pthread_t thread;
    atomic_bool done;      /* the thread has released everything but this struct */
    /* Written under px->mu (so drop never shuts down a reused descriptor). */
    int cfd, bfd;
    bool dropped;
    SSL *ssl;
    emu_buf c2b, b2c;
    bool client_eof; /* close_notify seen before the pump started */
    /* IAM binding of the client certificate, if any. */
    bool iam_bound;
    char principal[256];
    time_t token_expiry;
} emu_conn;

struct emu_proxy {
    emu_instance *inst;
    emu_engine engine;
    char *version;
    X509 *signing_cert; /* own reference */
    int port;
    _Atomic int mdx_wait_ms;
    _Atomic int handshake_ms, prelude_ms;

    /* Backend address, resolved once at start. */
    struct sockaddr_storage backend_addr, source_addr;
    socklen_t backend_len, source_len; /* source_len 0: no --backend-source */

    char addrs[EMU_PROXY_MAX_ADDRS][64];
    int naddrs;
    int lfds[EMU_PROXY_MAX_ADDRS];

    pthread_mutex_t ctl; /* serialises start/stop/refuse */
    bool accepting;      /* ctl */
    pthread_t acceptor;  /* ctl */
    int wake[2];         /* ctl: acceptor stop pipe */

    pthread_mutex_t mu; /* conns, ctx cache, last_mdx */
    emu_conn *conns;
    X509 *ctx_leaf;     /* own reference: the identity ctx was built for */
    SSL_CTX *ctx;
    emu_mdx_request last_mdx;

    _Atomic uint64_t accepted, tls_refused, iam_refused, active;
    _Atomic uint64_t mdx_ok, mdx_error, backend_failed, bytes_up, bytes_down;
};

/* server_proxy.c: an SSL_CTX (new reference) for the instance's current identity. */
SSL_CTX *emu_proxy_ctx_get(struct emu_proxy *px);

/* server_proxy_conn.c: the connection thread. */
void *emu_conn_main(void *arg);

/* Monotonic milliseconds. */
int64_t emu_now_ms(void);

/* Connection I/O with deadlines (monotonic ms), used before the pump starts. */
size_t emu_buf_len(const emu_buf *b);
void emu_buf_consume(emu_buf *b, size_t n);
/* Read some client bytes into c2b: >0 bytes, 0 close_notify, -1 error, -2 deadline. */
int emu_conn_client_read(emu_conn *c, int64_t deadline);
/* Read some backend bytes into b2c: >0 bytes, 0 EOF, -1 error, -2 deadline. */
int emu_conn_backend_read(emu_conn *c, int64_t deadline);
/* Write all of p to the client (TLS). 0 or -1. */
int emu_conn_client_write(emu_conn *c, const uint8_t *p, size_t n, int64_t deadline);

/* backend_auth.c: the IAM check for a bound certificate; 0 = let the bytes through. */
int emu_backend_auth(emu_conn *c, int64_t deadline);

#endif
