/*
 * conn.c over real dials to an in-test TLS server: bytes both ways at many
 * sizes, partial writes, half-close in both directions, EOF vs error
 * semantics, the TLS error callback, SIGPIPE safety, one reader thread
 * with one writer thread at once (also run under TSan), csql_conn_abort
 * waking blocked readers and writers, and per-call timeouts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "conn_internal.h"
#include "csql/conn.h"
#include "csql/errors.h"
#include "dial_socket.h"
#include "mdx.h"
#include "testcerts.h"
#include "testserver.h"
#include "util/clock.h"

typedef struct fixture {
    csqlt_cert root;
    csqlt_cert leaf;
    csqlt_cert other_ca;
    csqlt_cert client_ca;
    csqlt_cert client;
    char *root_pem;
    csql__instance_name name;
} fixture;

static fixture F;

static int group_setup(void **state)
{
    (void)state;
    csqlt_make_ca(&F.root, "server root");
    csqlt_make_leaf(&F.leaf, &F.root, "p:i", "x.y.sql.goog.");
    csqlt_make_ca(&F.other_ca, "other root");
    csqlt_make_ca(&F.client_ca, "client signer");
    csqlt_make_leaf(&F.client, &F.client_ca, "Google Cloud SQL Client", NULL);
    F.root_pem = csqlt_pem(F.root.cert, NULL, NULL);
    assert_int_equal(csql__instance_name_parse("p:r:i", &F.name), 0);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    csqlt_cert_free(&F.root);
    csqlt_cert_free(&F.leaf);
    csqlt_cert_free(&F.other_ca);
    csqlt_cert_free(&F.client_ca);
    csqlt_cert_free(&F.client);
    free(F.root_pem);
    return 0;
}

/* ---- a connected client ---- */

typedef struct client {
    csqlt_server srv;
    csql_conn *c;
    atomic_int tls_errors;
    atomic_int releases;
} client;

static void on_tls_error(void *userdata)
{
    client *cl = userdata;
    atomic_fetch_add(&cl->tls_errors, 1);
}

static void on_release(void *userdata)
{
    client *cl = userdata;
    atomic_fetch_add(&cl->releases, 1);
}

static void open_client(client *cl, csqlt_server_opts *o, int mdx)
{
    memset(cl, 0, sizeof(*cl));
    if (o->cert == NULL) {
        o->cert = &F.leaf;
    }
    if (o->client_ca == NULL) {
        o->client_ca = F.client_ca.cert;
    }
    csqlt_server_start(&cl->srv, o);
    csql__certset cs;
    csqlt_certset_init(&cs, &F.client, F.root_pem, "x.y.sql.goog", mdx);
    csql__dial_params p = {
        .host = "127.0.0.1",
        .port = cl->srv.port,
        .keepalive_s = 30,
        .mdx = mdx != 0,
        .user_agent = "csql-test/1",
        .deadline_ms = csql__mono_ms() + 5000,
    };
    int fd = -1;
    SSL *ssl = NULL;
    assert_int_equal(csql__dial_socket(&cs, &F.name, &p, &fd, &ssl), 0);
    csqlt_certset_dispose(&cs);
    assert_int_equal(csql__conn_new(fd, ssl, "p:r:i", on_tls_error, on_release, cl, &cl->c), 0);
}

static void close_client(client *cl)
{
    csql_conn_close(cl->c);
    cl->c = NULL;
    assert_int_equal(atomic_load(&cl->releases), 1);
    csqlt_server_stop(&cl->srv);
}

/* ---- data ---- */

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

#define FNV_INIT 0xcbf29ce484222325ull

/* Deterministic bytes: position `off` of stream `seed`. */
static void pattern(unsigned char *buf, size_t n, uint64_t off, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t x = (off + i) * 2654435761u + seed;
        buf[i] = (unsigned char)(x ^ (x >> 13) ^ (x >> 21));
    }
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (56 - 8 * i));
    }
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static int read_exact(csql_conn *c, void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = csql_conn_read(c, p, len);
        if (n <= 0) {
            return n == 0 ? -1 : (int)n;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Server: read an 8-byte count M, then bytes until EOF (our close_notify);
 * answer with the count and checksum of what it read, then M pattern bytes,
 * then close_notify.
 */
static void sink_source_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    (void)arg;
    unsigned char hdr[8];
    if (csqlt_ssl_read_exact(ssl, hdr, sizeof(hdr)) != 0) {
        return;
    }
    uint64_t want_back = get64(hdr);
    static _Thread_local unsigned char buf[65536];
    uint64_t count = 0;
    uint64_t sum = FNV_INIT;
    size_t n;
    while (SSL_read_ex(ssl, buf, sizeof(buf), &n) == 1) {
        count += n;
        sum = fnv1a(sum, buf, n);
    }
    if (SSL_get_error(ssl, 0) != SSL_ERROR_ZERO_RETURN &&
        !(SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN)) {
        return;
    }
    unsigned char answer[16];
    put64(answer, count);
    put64(answer + 8, sum);
    if (csqlt_ssl_write_all(ssl, answer, sizeof(answer)) != 0) {
        return;
    }
    for (uint64_t off = 0; off < want_back;) {
        size_t chunk = want_back - off < sizeof(buf) ? (size_t)(want_back - off) : sizeof(buf);
        pattern(buf, chunk, off, 99);
        if (csqlt_ssl_write_all(ssl, buf, chunk) != 0) {
            return;
        }
        off += chunk;
    }
    SSL_shutdown(ssl);
}

static void round_trip(size_t size)
{
    client cl;
    csqlt_server_opts o = {.handler = sink_source_handler};
    open_client(&cl, &o, 0);
    unsigned char hdr[8];
    put64(hdr, size);
    assert_int_equal(csql_conn_write_all(cl.c, hdr, sizeof(hdr)), 0);
    unsigned char *out = malloc(size + 1);
    assert_non_null(out);
    pattern(out, size, 0, 7);
    assert_int_equal(csql_conn_write_all(cl.c, out, size), 0);
    uint64_t sent_sum = fnv1a(FNV_INIT, out, size);
    /* Half-close our side: the server sees EOF and answers; we keep reading. */
    assert_int_equal(csql_conn_shutdown(cl.c), 0);
    assert_int_equal(csql_conn_shutdown(cl.c), 0);
    assert_int_equal(csql_conn_write(cl.c, "x", 1), CSQL_ERR_CLOSED);
    unsigned char answer[16];
    assert_int_equal(read_exact(cl.c, answer, sizeof(answer)), 0);
    assert_int_equal(get64(answer), size);
    assert_true(get64(answer + 8) == sent_sum);
    /* The server's bytes, read in uneven pieces. */
    unsigned char *in = malloc(size + 1);
    assert_non_null(in);
    size_t got = 0;
    size_t piece = 1;
    while (got < size) {
        size_t want = size - got < piece ? size - got : piece;
        ssize_t n = csql_conn_read(cl.c, in + got, want);
        assert_true(n > 0);
        got += (size_t)n;
        piece = piece * 3 + 1;
        if (piece > 200000) {
            piece = 7;
        }
    }
    pattern(out, size, 0, 99);
    assert_memory_equal(in, out, size);
    /* Then the server's close_notify: end of stream, repeatedly. */
    char c;
    assert_int_equal(csql_conn_read(cl.c, &c, 1), 0);
    assert_int_equal(csql_conn_read(cl.c, &c, 1), 0);
    assert_int_equal(atomic_load(&cl.tls_errors), 0);
    free(out);
    free(in);
    close_client(&cl);
}

static void test_sizes_both_ways(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 2, 100, 16383, 16384, 16385, 65543, 1 << 20, 4 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        round_trip(sizes[i]);
    }
}

static void test_partial_writes(void **state)
{
    (void)state;
    client cl;
    csqlt_server_opts o = {.handler = sink_source_handler};
    open_client(&cl, &o, 0);
    unsigned char hdr[8];
    put64(hdr, 0);
    assert_int_equal(csql_conn_write_all(cl.c, hdr, sizeof(hdr)), 0);
    size_t size = 1 << 20;
    unsigned char *buf = malloc(size);
    assert_non_null(buf);
    pattern(buf, size, 0, 3);
    ssize_t n = csql_conn_write(cl.c, buf, size);
    assert_true(n > 0);
    assert_true((size_t)n < size); /* one TLS record at a time */
    size_t done = (size_t)n;
    int rounds = 1;
    while (done < size) {
        n = csql_conn_write(cl.c, buf + done, size - done);
        assert_true(n > 0);
        done += (size_t)n;
        rounds++;
    }
    assert_true(rounds > 1);
    assert_int_equal(csql_conn_write(cl.c, buf, 0), 0);
    assert_int_equal(csql_conn_shutdown(cl.c), 0);
    unsigned char answer[16];
    assert_int_equal(read_exact(cl.c, answer, sizeof(answer)), 0);
    assert_int_equal(get64(answer), size);
    assert_true(get64(answer + 8) == fnv1a(FNV_INIT, buf, size));
    free(buf);
    close_client(&cl);
}

/* Server: say hello, send close_notify, then keep reading what the client still sends. */
typedef struct after_close {
    char got[64];
    atomic_int done;
} after_close;

static void server_half_close_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    after_close *ac = arg;
    csqlt_ssl_write_all(ssl, "hello", 5);
    SSL_shutdown(ssl);
    size_t total = 0;
    size_t n;
    while (total < sizeof(ac->got) - 1 &&
           SSL_read_ex(ssl, ac->got + total, sizeof(ac->got) - 1 - total, &n) == 1) {
        total += n;
    }
    ac->got[total] = '\0';
    atomic_store(&ac->done, 1);
}

static void test_server_close_notify_then_client_writes(void **state)
{
    (void)state;
    after_close ac = {0};
    client cl;
    csqlt_server_opts o = {.handler = server_half_close_handler, .arg = &ac};
    open_client(&cl, &o, 0);
    char buf[16];
    assert_int_equal(read_exact(cl.c, buf, 5), 0);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(csql_conn_read(cl.c, buf, sizeof(buf)), 0);
    assert_int_equal(csql_conn_read(cl.c, buf, sizeof(buf)), 0);
    assert_int_equal(csql_conn_pending(cl.c), 0);
    /* The other direction is still open. */
    assert_int_equal(csql_conn_write_all(cl.c, "after", 5), 0);
    assert_int_equal(csql_conn_shutdown(cl.c), 0);
    csqlt_server_stop(&cl.srv);
    assert_string_equal(ac.got, "after");
    csql_conn_close(cl.c);
    assert_int_equal(atomic_load(&cl.releases), 1);
    assert_int_equal(atomic_load(&cl.tls_errors), 0);
}

static void hello_then_tcp_close_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    (void)arg;
    csqlt_ssl_write_all(ssl, "hello", 5);
    /* Return without close_notify: the server closes the socket. */
}

static void test_tcp_eof_is_end_of_stream(void **state)
{
    (void)state;
    client cl;
    csqlt_server_opts o = {.handler = hello_then_tcp_close_handler};
    open_client(&cl, &o, 0);
    char buf[16];
    assert_int_equal(read_exact(cl.c, buf, 5), 0);
    assert_int_equal(csql_conn_read(cl.c, buf, sizeof(buf)), 0);
    assert_int_equal(atomic_load(&cl.tls_errors), 0);
    /* Writing to the server that went: an I/O error, not a TLS one (the certificate is fine). */
    ssize_t n = 1;
    for (int i = 0; i < 100 && n > 0; i++) {
        n = csql_conn_write(cl.c, "after", 5);
        usleep(2000);
    }
    assert_int_equal(n, CSQL_ERR_IO);
    assert_int_equal(atomic_load(&cl.tls_errors), 0);
    close_client(&cl);
}

static void garbage_handler(SSL *ssl, int fd, void *arg)
{
    (void)arg;
    csqlt_ssl_write_all(ssl, "ok", 2);
    /* Raw bytes that look like an application-data record but do not decrypt. */
    unsigned char junk[64] = {0x17, 0x03, 0x03, 0x00, 0x3b};
    for (size_t i = 5; i < sizeof(junk); i++) {
        junk[i] = (unsigned char)(i * 13);
    }
    (void)send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
    usleep(200000);
}

static void test_tls_error_reported_once(void **state)
{
    (void)state;
    client cl;
    csqlt_server_opts o = {.handler = garbage_handler};
    open_client(&cl, &o, 0);
    char buf[16];
    assert_int_equal(read_exact(cl.c, buf, 2), 0);
    ssize_t n = csql_conn_read(cl.c, buf, sizeof(buf));
    assert_int_equal(n, CSQL_ERR_TLS_IO);
    assert_non_null(strstr(csql_error_last()->message, "p:r:i"));
    assert_int_equal(atomic_load(&cl.tls_errors), 1);
    /* Errors are final, and reported once. */
    assert_int_equal(csql_conn_read(cl.c, buf, sizeof(buf)), CSQL_ERR_TLS_IO);
    assert_int_equal(csql_conn_write(cl.c, "x", 1), CSQL_ERR_TLS_IO);
    assert_int_equal(csql_conn_shutdown(cl.c), CSQL_ERR_TLS_IO);
    assert_non_null(strstr(csql_error_last()->message, "failed earlier"));
    assert_int_equal(csql_conn_pending(cl.c), 0);
    assert_int_equal(atomic_load(&cl.tls_errors), 1);
    close_client(&cl);
}

static void test_client_cert_rejected_on_first_read(void **state)
{
    (void)state;
    /* Without MDX the TLS 1.3 handshake "succeeds"; the refusal arrives on the first read. */
    client cl;
    csqlt_server_opts o = {.client_ca = F.other_ca.cert};
    open_client(&cl, &o, 0);
    char buf[16];
    assert_int_equal(csql_conn_read(cl.c, buf, sizeof(buf)), CSQL_ERR_TLS_IO);
    assert_non_null(strstr(csql_error_last()->message, "alert"));
    assert_int_equal(atomic_load(&cl.tls_errors), 1);
    close_client(&cl);
}

static void reset_handler(SSL *ssl, int fd, void *arg)
{
    (void)arg;
    char c;
    size_t n;
    (void)SSL_read_ex(ssl, &c, 1, &n);
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    shutdown(fd, SHUT_RD);
}

static void test_reset_is_io_error_not_tls(void **state)
{
    (void)state;
    client cl;
    csqlt_server_opts o = {.handler = reset_handler};
    open_client(&cl, &o, 0);
    assert_int_equal(csql_conn_write_all(cl.c, "x", 1), 0);
    char buf[16];
    ssize_t n = csql_conn_read(cl.c, buf, sizeof(buf));
    assert_int_equal(n, CSQL_ERR_IO);
    assert_non_null(strstr(csql_error_last()->message, "reset"));
    assert_int_equal(atomic_load(&cl.tls_errors), 0);
    close_client(&cl);
}

static void read_one_then_close_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    (void)arg;
    char c;
    size_t n;
    (void)SSL_read_ex(ssl, &c, 1, &n);
}

static void test_writing_to_a_closed_peer_does_not_raise_sigpipe(void **state)
{
    (void)state;
    /* SIGPIPE keeps its default action here: it would kill the test. */
    client cl;
    csqlt_server_opts o = {.handler = read_one_then_close_handler};
    open_client(&cl, &o, 0);
    assert_int_equal(csql_conn_write_all(cl.c, "x", 1), 0);
    unsigned char buf[4096];
    memset(buf, 'y', sizeof(buf));
    int rc = 0;
    for (int i = 0; i < 2000 && rc == 0; i++) {
        rc = csql_conn_write_all(cl.c, buf, sizeof(buf));
        if (rc == 0) {
            usleep(1000);
        }
    }
    assert_true(rc == CSQL_ERR_IO || rc == CSQL_ERR_TLS_IO);
    close_client(&cl);
}

/* Server: records whether the client's close ended with a close_notify. */
typedef struct close_seen {
    atomic_int close_notify;
} close_seen;

static void close_watch_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    close_seen *cs = arg;
    char buf[64];
    size_t n;
    while (SSL_read_ex(ssl, buf, sizeof(buf), &n) == 1) {
    }
    if (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN) {
        atomic_store(&cs->close_notify, 1);
    }
}

static void test_close_sends_close_notify(void **state)
{
    (void)state;
    close_seen seen = {0};
    client cl;
    csqlt_server_opts o = {.handler = close_watch_handler, .arg = &seen};
    open_client(&cl, &o, 0);
    assert_int_equal(csql_conn_write_all(cl.c, "bye", 3), 0);
    close_client(&cl);
    assert_int_equal(atomic_load(&seen.close_notify), 1);
}

static void test_accessors(void **state)
{
    (void)state;
    client cl;
    csqlt_server_opts o = {.handler = csqlt_echo_handler};
    open_client(&cl, &o, 0);
    assert_true(csql_conn_fd(cl.c) >= 0);
    assert_non_null(csql_conn_ssl(cl.c));
    assert_int_equal(SSL_version(csql_conn_ssl(cl.c)), TLS1_3_VERSION);
    assert_int_equal(SSL_get_fd(csql_conn_ssl(cl.c)), csql_conn_fd(cl.c)); /* our socket BIO */
    /* An idle connection gives back its 16 KiB read and write buffers (58 -> 26 KiB each). */
    assert_true(SSL_get_mode(csql_conn_ssl(cl.c)) & SSL_MODE_RELEASE_BUFFERS);
    assert_string_equal(csql_conn_instance(cl.c), "p:r:i");
    assert_int_equal(csql_conn_write_all(cl.c, "abcdef", 6), 0);
    char buf[2];
    assert_int_equal(read_exact(cl.c, buf, 2), 0);
    /* The rest of the record is decrypted and waiting. */
    for (int i = 0; i < 100 && csql_conn_pending(cl.c) == 0; i++) {
        usleep(1000);
    }
    assert_int_equal(csql_conn_pending(cl.c), 4);
    assert_int_equal(csql_conn_read(cl.c, NULL, 1), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_conn_read(cl.c, buf, 0), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_conn_write(NULL, buf, 1), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_conn_write_all(NULL, buf, 1), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_conn_shutdown(NULL), CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(csql_conn_fd(NULL), -1);
    assert_null(csql_conn_ssl(NULL));
    assert_null(csql_conn_instance(NULL));
    assert_int_equal(csql_conn_pending(NULL), 0);
    csql_conn_close(NULL);
    close_client(&cl);
}

static void test_new_failure_releases_everything(void **state)
{
    (void)state;
    client cl;
    memset(&cl, 0, sizeof(cl));
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    csql_conn *c = (csql_conn *)&cl;
    assert_int_equal(csql__conn_new(sv[0], NULL, "p:r:i", on_tls_error, on_release, &cl, &c),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_int_equal(atomic_load(&cl.releases), 1);
    errno = 0;
    assert_int_equal(fcntl(sv[0], F_GETFD), -1); /* closed by csql__conn_new */
    assert_int_equal(errno, EBADF);
    close(sv[1]);
}

/* ---- one reader thread, one writer thread ---- */

#define CONCURRENT_BYTES (8u << 20)

/* Echo, asking the client for a TLS key update every 256 KiB: reads must write. */
static void echo_key_update_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    (void)arg;
    static _Thread_local unsigned char buf[32768];
    size_t since_update = 0;
    size_t n;
    while (SSL_read_ex(ssl, buf, sizeof(buf), &n) == 1) {
        if (csqlt_ssl_write_all(ssl, buf, n) != 0) {
            return;
        }
        since_update += n;
        if (since_update >= 256 * 1024) {
            since_update = 0;
            SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED);
        }
    }
    SSL_shutdown(ssl);
}

typedef struct writer_job {
    csql_conn *c;
    int rc;
} writer_job;

static void *writer_main(void *arg)
{
    writer_job *job = arg;
    unsigned char *buf = malloc(70000);
    uint64_t off = 0;
    uint32_t x = 1;
    job->rc = buf ? 0 : -1;
    while (job->rc == 0 && off < CONCURRENT_BYTES) {
        x = x * 1664525u + 1013904223u;
        size_t chunk = 1 + (x >> 8) % 70000;
        if (chunk > CONCURRENT_BYTES - off) {
            chunk = (size_t)(CONCURRENT_BYTES - off);
        }
        pattern(buf, chunk, off, 5);
        size_t done = 0;
        while (done < chunk) {
            ssize_t n = csql_conn_write(job->c, buf + done, chunk - done);
            if (n <= 0) {
                job->rc = (int)n;
                break;
            }
            done += (size_t)n;
        }
        off += done;
    }
    if (job->rc == 0) {
        job->rc = csql_conn_shutdown(job->c);
    }
    free(buf);
    return NULL;
}

static void test_concurrent_reader_and_writer(void **state)
{
    (void)state;
    client cl;
    csqlt_server_opts o = {.handler = echo_key_update_handler};
    open_client(&cl, &o, 0);
    writer_job job = {.c = cl.c};
    pthread_t writer;
    assert_int_equal(pthread_create(&writer, NULL, writer_main, &job), 0);
    unsigned char *buf = malloc(50000);
    unsigned char *want = malloc(50000);
    assert_non_null(buf);
    assert_non_null(want);
    uint64_t got = 0;
    int mismatches = 0;
    for (;;) {
        size_t cap = 1 + (size_t)(got % 49999);
        ssize_t n = csql_conn_read(cl.c, buf, cap);
        if (n == 0) {
            break;
        }
        if (n < 0) {
            fail_msg("read failed after %llu bytes: %s", (unsigned long long)got,
                     csql_error_last()->message);
        }
        (void)csql_conn_pending(cl.c);
        pattern(want, (size_t)n, got, 5);
        mismatches += memcmp(buf, want, (size_t)n) != 0;
        got += (uint64_t)n;
    }
    pthread_join(writer, NULL);
    assert_int_equal(job.rc, 0);
    assert_int_equal(mismatches, 0);
    assert_true(got == CONCURRENT_BYTES);
    assert_int_equal(atomic_load(&cl.tls_errors), 0);
    free(buf);
    free(want);
    close_client(&cl);
}

/* ---- abort and timeouts ---- */

/* "hi", then (arg != NULL) "late" after *(int *)arg ms, then read until the client goes. */
static void hold_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    csqlt_ssl_write_all(ssl, "hi", 2);
    if (arg != NULL) {
        usleep((useconds_t)(*(int *)arg) * 1000);
        csqlt_ssl_write_all(ssl, "late", 4);
    }
    char buf[256];
    while (SSL_read(ssl, buf, sizeof(buf)) > 0) {
    }
}

/* Never reads: the client's writes fill the socket buffers and block. */
static void deaf_handler(SSL *ssl, int fd, void *arg)
{
    (void)ssl;
    (void)arg;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    (void)poll(&p, 1, 10000); /* until the client shuts down (or 10 s) */
}

typedef struct blocked_call {
    csql_conn *c;
    bool write;
    ssize_t rc;
    char msg[256];
    int64_t returned_ms;
} blocked_call;

static void *blocked_main(void *arg)
{
    blocked_call *b = arg;
    static char chunk[65536];
    if (b->write) {
        ssize_t n;
        do {
            n = csql_conn_write(b->c, chunk, sizeof(chunk));
        } while (n > 0);
        b->rc = n;
    } else {
        char buf[64];
        b->rc = csql_conn_read(b->c, buf, sizeof(buf));
    }
    snprintf(b->msg, sizeof(b->msg), "%s", csql_error_last()->message);
    b->returned_ms = csql__mono_ms();
    return NULL;
}

static void abort_blocked(bool write)
{
    client cl;
    csqlt_server_opts o = {.handler = write ? deaf_handler : hold_handler};
    open_client(&cl, &o, 0);
    char buf[16];
    if (!write) {
        assert_int_equal(read_exact(cl.c, buf, 2), 0);
    }
    blocked_call b = {.c = cl.c, .write = write};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, blocked_main, &b), 0);
    usleep(300000); /* the call is blocked in poll by now */
    int64_t t0 = csql__mono_ms();
    csql_conn_abort(cl.c);
    pthread_join(t, NULL);
    assert_int_equal(b.rc, CSQL_ERR_CLOSED);
    assert_non_null(strstr(b.msg, "aborted"));
    assert_non_null(strstr(b.msg, "p:r:i"));
    assert_true(b.returned_ms - t0 < 1000);
    /* Final, for every call; abort again does nothing; not a TLS failure for the cache. */
    assert_int_equal(csql_conn_read(cl.c, buf, sizeof(buf)), CSQL_ERR_CLOSED);
    assert_int_equal(csql_conn_write(cl.c, "x", 1), CSQL_ERR_CLOSED);
    assert_int_equal(csql_conn_shutdown(cl.c), CSQL_ERR_CLOSED);
    csql_conn_abort(cl.c);
    csql_conn_abort(NULL);
    assert_int_equal(atomic_load(&cl.tls_errors), 0);
    close_client(&cl);
}

static void test_abort_wakes_blocked_reader(void **state)
{
    (void)state;
    abort_blocked(false);
}

static void test_abort_wakes_blocked_writer(void **state)
{
    (void)state;
    abort_blocked(true);
}

static void test_read_timeout_then_data(void **state)
{
    (void)state;
    client cl;
    int late_ms = 700;
    csqlt_server_opts o = {.handler = hold_handler, .arg = &late_ms};
    open_client(&cl, &o, 0);
    char buf[16];
    assert_int_equal(read_exact(cl.c, buf, 2), 0);
    assert_int_equal(csql_conn_set_timeout(cl.c, 200), 0);
    int64_t t0 = csql__mono_ms();
    assert_int_equal(csql_conn_read(cl.c, buf, sizeof(buf)), CSQL_ERR_TIMEOUT);
    int64_t took = csql__mono_ms() - t0;
    assert_in_range(took, 190, 650);
    assert_non_null(strstr(csql_error_last()->message, "within 200 ms"));
    assert_non_null(strstr(csql_error_last()->message, "p:r:i"));
    /* Not final: waiting again (without a bound) gets the late bytes. */
    assert_int_equal(csql_conn_set_timeout(cl.c, 0), 0);
    assert_int_equal(read_exact(cl.c, buf, 4), 0);
    assert_memory_equal(buf, "late", 4);
    assert_int_equal(csql_conn_write(cl.c, "ok", 2), 2);
    assert_int_equal(atomic_load(&cl.tls_errors), 0);
    close_client(&cl);
}

static void test_write_timeout(void **state)
{
    (void)state;
    client cl;
    csqlt_server_opts o = {.handler = deaf_handler};
    open_client(&cl, &o, 0);
    assert_int_equal(csql_conn_set_timeout(cl.c, 300), 0);
    static char chunk[65536];
    ssize_t n;
    size_t total = 0;
    int64_t t0 = csql__mono_ms();
    while ((n = csql_conn_write(cl.c, chunk, sizeof(chunk))) > 0 && total < (64u << 20)) {
        total += (size_t)n;
    }
    assert_int_equal(n, CSQL_ERR_TIMEOUT);
    assert_true(csql__mono_ms() - t0 < 5000);
    assert_non_null(strstr(csql_error_last()->message, "no room to send"));
    assert_non_null(strstr(csql_error_last()->message, "the connection is closed"));
    assert_true(total > 0);
    /*
     * Final: OpenSSL holds a record built from the timed-out bytes; writing
     * other bytes would corrupt the stream or fail as a TLS error (which
     * would wrongly make the cache drop the certificate).
     */
    assert_int_equal(csql_conn_write(cl.c, "B", 1), CSQL_ERR_TIMEOUT);
    assert_non_null(strstr(csql_error_last()->message, "failed earlier"));
    char buf[4];
    assert_int_equal(csql_conn_read(cl.c, buf, sizeof(buf)), CSQL_ERR_TIMEOUT);
    assert_int_equal(atomic_load(&cl.tls_errors), 0);
    close_client(&cl);
}

static void test_set_timeout_arguments(void **state)
{
    (void)state;
    assert_int_equal(csql_conn_set_timeout(NULL, 10), CSQL_ERR_INVALID_ARGUMENT);
    client cl;
    csqlt_server_opts o = {.handler = hold_handler};
    open_client(&cl, &o, 0);
    assert_int_equal(csql_conn_set_timeout(cl.c, CSQL_CONN_TIMEOUT_MAX_MS + 1),
                     CSQL_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(csql_error_last()->message, "maximum"));
    assert_int_equal(csql_conn_set_timeout(cl.c, CSQL_CONN_TIMEOUT_MAX_MS), 0);
    close_client(&cl);
}

static void test_mdx_then_data(void **state)
{
    (void)state;
    csqlt_mdx_reply reply = {.status = CSQL__MDX_OK};
    client cl;
    csqlt_server_opts o = {.handler = csqlt_mdx_handler, .arg = &reply};
    open_client(&cl, &o, 1);
    assert_int_equal(csql_conn_write_all(cl.c, "ping", 4), 0);
    char buf[4];
    assert_int_equal(read_exact(cl.c, buf, 4), 0);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(csql_conn_shutdown(cl.c), 0);
    assert_int_equal(csql_conn_read(cl.c, buf, sizeof(buf)), 0);
    close_client(&cl);
    assert_string_equal(reply.got_user_agent, "csql-test/1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_both_ways),
        cmocka_unit_test(test_partial_writes),
        cmocka_unit_test(test_server_close_notify_then_client_writes),
        cmocka_unit_test(test_tcp_eof_is_end_of_stream),
        cmocka_unit_test(test_tls_error_reported_once),
        cmocka_unit_test(test_client_cert_rejected_on_first_read),
        cmocka_unit_test(test_reset_is_io_error_not_tls),
        cmocka_unit_test(test_writing_to_a_closed_peer_does_not_raise_sigpipe),
        cmocka_unit_test(test_close_sends_close_notify),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_new_failure_releases_everything),
        cmocka_unit_test(test_concurrent_reader_and_writer),
        cmocka_unit_test(test_mdx_then_data),
        cmocka_unit_test(test_abort_wakes_blocked_reader),
        cmocka_unit_test(test_abort_wakes_blocked_writer),
        cmocka_unit_test(test_read_timeout_then_data),
        cmocka_unit_test(test_write_timeout),
        cmocka_unit_test(test_set_timeout_arguments),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
