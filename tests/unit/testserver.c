/* A small blocking TLS server on a thread, for dial and connection tests. */
#include "testserver.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "mdx.h"
#include "tls.h"

static int make_listener(const char *addr, uint16_t *port)
{
    int v6 = strchr(addr, ':') != NULL;
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, addr, &a->sin6_addr), 1);
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, addr, &a->sin_addr), 1);
        len = sizeof(*a);
    }
    assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    *port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                     : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

uint16_t csqlt_unused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, len), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void serve_one(csqlt_server *s, int fd)
{
    /* Never hang a test run: blocking I/O gives up after a while. */
    struct timeval tv = {20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    SSL *ssl = SSL_new(s->ctx);
    if (ssl == NULL) {
        close(fd);
        return;
    }
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
        atomic_fetch_add(&s->handshakes, 1);
        if (s->o.handler != NULL) {
            s->o.handler(ssl, fd, s->o.arg);
        }
    } else {
        atomic_fetch_add(&s->failures, 1);
        /*
         * Let the client read our alert: closing with its unread bytes in our
         * buffer would send a TCP reset that can overtake the alert.
         */
        shutdown(fd, SHUT_WR);
        struct timeval drain = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &drain, sizeof(drain));
        char junk[4096];
        for (int i = 0; i < 1024 && recv(fd, junk, sizeof(junk), 0) > 0; i++) {
        }
    }
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
}

static void *server_main(void *arg)
{
    csqlt_server *s = arg;
    /* The client may go away while we write: SIGPIPE stays blocked (and dropped) on this thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int todo = s->o.connections > 0 ? s->o.connections : 1;
    while (!atomic_load(&s->stop) && todo > 0) {
        if (s->o.silent) {
            usleep(10000);
            continue;
        }
        struct pollfd pfd = {.fd = s->lfd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0) {
            continue;
        }
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        serve_one(s, fd);
        todo--;
    }
    OPENSSL_thread_stop();
    return NULL;
}

void csqlt_server_start(csqlt_server *s, const csqlt_server_opts *o)
{
    memset(s, 0, sizeof(*s));
    s->o = *o;
    s->ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(s->ctx);
    assert_int_equal(SSL_CTX_use_certificate(s->ctx, o->cert->cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(s->ctx, o->cert->key), 1);
    if (o->chain != NULL) {
        assert_int_equal(SSL_CTX_add1_chain_cert(s->ctx, o->chain), 1);
    }
    if (o->max_version != 0) {
        SSL_CTX_set_max_proto_version(s->ctx, o->max_version);
    }
    if (o->client_ca != NULL) {
        X509_STORE_add_cert(SSL_CTX_get_cert_store(s->ctx), o->client_ca);
        SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    SSL_CTX_set_options(s->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    s->lfd = make_listener(o->bind_addr ? o->bind_addr : "127.0.0.1", &s->port);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

void csqlt_server_stop(csqlt_server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->lfd);
    SSL_CTX_free(s->ctx);
}

void csqlt_certset_init(csql__certset *cs, const csqlt_cert *client, const char *ca_pem,
                        const char *dns_name, int mdx_supported)
{
    memset(cs, 0, sizeof(*cs));
    atomic_init(&cs->refs, 1);
    char *cert_pem = csqlt_pem(client->cert, NULL, NULL);
    int64_t not_after = 0;
    assert_int_equal(csql__tls_client_ctx_new(client->key, cert_pem, ca_pem, &cs->ctx, &not_after),
                     0);
    free(cert_pem);
    cs->expires_at = not_after;
    cs->info.database_version = strdup("POSTGRES_15");
    cs->info.region = strdup("r");
    cs->info.public_ip = strdup("127.0.0.1");
    cs->info.ca_pem = strdup(ca_pem);
    cs->info.dns_name = dns_name ? strdup(dns_name) : NULL;
    cs->info.mdx_supported = mdx_supported != 0;
}

void csqlt_certset_dispose(csql__certset *cs)
{
    SSL_CTX_free(cs->ctx);
    free(cs->info.database_version);
    free(cs->info.region);
    free(cs->info.public_ip);
    free(cs->info.ca_pem);
    free(cs->info.dns_name);
    memset(cs, 0, sizeof(*cs));
}

int csqlt_ssl_read_exact(SSL *ssl, void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        size_t n = 0;
        if (SSL_read_ex(ssl, p, len, &n) != 1) {
            return -1;
        }
        p += n;
        len -= n;
    }
    return 0;
}

int csqlt_ssl_write_all(SSL *ssl, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len > 0) {
        size_t n = 0;
        if (SSL_write_ex(ssl, p, len, &n) != 1) {
            return -1;
        }
        p += n;
        len -= n;
    }
    return 0;
}

int csqlt_mdx_skip_request(SSL *ssl)
{
    unsigned char hdr[12];
    unsigned char body[1024];
    if (csqlt_ssl_read_exact(ssl, hdr, sizeof(hdr)) != 0 || memcmp(hdr, "CSQLMDEX", 8) != 0) {
        return -1;
    }
    size_t n = (size_t)hdr[8] << 24 | (size_t)hdr[9] << 16 | (size_t)hdr[10] << 8 | hdr[11];
    return n <= sizeof(body) ? csqlt_ssl_read_exact(ssl, body, n) : -1;
}

void csqlt_echo_handler(SSL *ssl, int fd, void *arg)
{
    (void)fd;
    (void)arg;
    unsigned char buf[32768];
    for (;;) {
        size_t n = 0;
        if (SSL_read_ex(ssl, buf, sizeof(buf), &n) != 1) {
            break;
        }
        if (csqlt_ssl_write_all(ssl, buf, n) != 0) {
            return;
        }
    }
    SSL_shutdown(ssl);
}

void csqlt_mdx_handler(SSL *ssl, int fd, void *arg)
{
    csqlt_mdx_reply *r = arg;
    unsigned char hdr[12];
    if (csqlt_ssl_read_exact(ssl, hdr, sizeof(hdr)) != 0 || memcmp(hdr, "CSQLMDEX", 8) != 0) {
        return;
    }
    size_t body = (size_t)hdr[8] << 24 | (size_t)hdr[9] << 16 | (size_t)hdr[10] << 8 | hdr[11];
    unsigned char req[1024];
    if (body > sizeof(req) || csqlt_ssl_read_exact(ssl, req, body) != 0) {
        return;
    }
    /* Parse {1: string, 2: varint} (short lengths only: enough for tests). */
    size_t i = 0;
    while (i + 1 < body) {
        unsigned char key = req[i++];
        if (key == 0x0a) {
            size_t n = req[i++];
            if (n < sizeof(r->got_user_agent) && i + n <= body) {
                memcpy(r->got_user_agent, req + i, n);
                r->got_user_agent[n] = '\0';
            }
            i += n;
        } else if (key == 0x10) {
            r->got_protocol = req[i++];
        } else {
            break;
        }
    }
    atomic_store(&r->got_request, 1);
    unsigned char resp[300];
    size_t m = 12;
    resp[m++] = 0x08;
    resp[m++] = (unsigned char)r->status;
    if (r->message != NULL) {
        size_t n = strlen(r->message);
        resp[m++] = 0x12;
        resp[m++] = (unsigned char)n;
        memcpy(resp + m, r->message, n);
        m += n;
    }
    memcpy(resp, "CSQLMDEX", 8);
    size_t b = m - 12;
    resp[8] = 0;
    resp[9] = 0;
    resp[10] = (unsigned char)(b >> 8);
    resp[11] = (unsigned char)b;
    if (csqlt_ssl_write_all(ssl, resp, m) != 0) {
        return;
    }
    if (r->status == CSQL__MDX_OK) {
        csqlt_echo_handler(ssl, fd, NULL);
    }
}
