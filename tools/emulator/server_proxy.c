/*
 * Server-side proxy of csql-emulator: what a connector reaches at IP:3307.
 * This file owns the lifecycle: listeners on each instance address, the
 * accept thread, the registry of live connections (so faults can drop them
 * and stop can join them) and the TLS server contexts, one per server
 * identity (CA rotation swaps the identity; handshakes after it use the new
 * one, live connections keep theirs). Each connection runs on its own thread
 * (server_proxy_conn.c).
 */
#include "server_proxy_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>

#define ACCEPT_BURST 64
#define CONN_STACK_SIZE (512 * 1024)

/* ---------------- addresses ---------------- */

static int resolve(const char *host, const char *port, int flags, struct sockaddr_storage *out,
                   socklen_t *len)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = flags};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL) {
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* "host:port", "[v6]:port" or an absolute unix socket path. */
static int parse_backend(emu_proxy *px, const char *backend, const char *source, char *err,
                         size_t errlen)
{
    if (backend == NULL || backend[0] == '\0') {
        snprintf(err, errlen, "instance has no backend");
        return -1;
    }
    if (backend[0] == '/') {
        struct sockaddr_un *un = (struct sockaddr_un *)&px->backend_addr;
        if (strlen(backend) >= sizeof(un->sun_path)) {
            snprintf(err, errlen, "backend socket path too long: %s", backend);
            return -1;
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, backend);
        px->backend_len = sizeof(*un);
        return 0;
    }
    char host[256];
    const char *colon = strrchr(backend, ':');
    size_t hlen = colon ? (size_t)(colon - backend) : 0;
    if (colon == NULL || hlen == 0 || hlen >= sizeof(host) || colon[1] == '\0') {
        snprintf(err, errlen, "backend \"%s\": want host:port or an absolute socket path",
                 backend);
        return -1;
    }
    memcpy(host, backend, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    if (resolve(host, colon + 1, AI_NUMERICSERV, &px->backend_addr, &px->backend_len) != 0) {
        snprintf(err, errlen, "backend \"%s\": cannot resolve", backend);
        return -1;
    }
    if (source != NULL && source[0] != '\0') {
        if (resolve(source, "0", AI_NUMERICHOST | AI_NUMERICSERV, &px->source_addr,
                    &px->source_len) != 0 ||
            px->source_addr.ss_family != px->backend_addr.ss_family) {
            snprintf(err, errlen, "backend source \"%s\": not an address of the backend's family",
                     source);
            return -1;
        }
    }
    return 0;
}

/* ---------------- listeners and the accept thread ---------------- */

static int open_listener(const emu_proxy *px, const char *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char port[16];
    snprintf(port, sizeof(port), "%d", px->port);
    if (resolve(addr, port, AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE, &ss, &len) != 0) {
        snprintf(err, errlen, "server proxy: bad address %s", addr);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, SOMAXCONN) != 0) {
        snprintf(err, errlen, "server proxy: cannot listen on %s:%d: %s", addr, px->port,
                 strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

static void listeners_close(emu_proxy *px)
{
    for (int i = 0; i < px->naddrs; i++) {
        if (px->lfds[i] >= 0) {
            close(px->lfds[i]);
            px->lfds[i] = -1;
        }
    }
}

static int listeners_open(emu_proxy *px, char *err, size_t errlen)
{
    for (int i = 0; i < px->naddrs; i++) {
        if ((px->lfds[i] = open_listener(px, px->addrs[i], err, errlen)) < 0) {
            listeners_close(px);
            return -1;
        }
    }
    return 0;
}

/* Joins and frees finished connections (all of them, waiting, when all is set). */
static void reap(emu_proxy *px, bool all)
{
    emu_conn *done = NULL;
    pthread_mutex_lock(&px->mu);
    emu_conn **pp = &px->conns;
    while (*pp != NULL) {
        emu_conn *c = *pp;
        if (all || atomic_load(&c->done)) {
            *pp = c->next;
            c->next = done;
            done = c;
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&px->mu);
    while (done != NULL) {
        emu_conn *c = done;
        done = c->next;
        pthread_join(c->thread, NULL);
        free(c);
    }
}

static void spawn(emu_proxy *px, int fd)
{
    emu_conn *c = calloc(1, sizeof(*c));
    pthread_attr_t attr;
    if (c == NULL) {
        close(fd);
        return;
    }
    c->px = px;
    c->cfd = fd;
    c->bfd = -1;
    atomic_init(&c->done, false);
    atomic_fetch_add(&px->accepted, 1);
    atomic_fetch_add(&px->active, 1);

    pthread_mutex_lock(&px->mu);
    c->next = px->conns;
    px->conns = c;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, CONN_STACK_SIZE);
    int rc = pthread_create(&c->thread, &attr, emu_conn_main, c);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        px->conns = c->next;
        close(fd);
        free(c);
        atomic_fetch_sub(&px->active, 1);
    }
    pthread_mutex_unlock(&px->mu);
}

static void accept_burst(emu_proxy *px, int lfd)
{
    for (int i = 0; i < ACCEPT_BURST; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: back off instead of spinning on a ready listener. */
                poll(NULL, 0, 10);
            }
            return;
        }
        spawn(px, fd);
    }
}

static void *acceptor_main(void *arg)
{
    emu_proxy *px = arg;
    struct pollfd pf[EMU_PROXY_MAX_ADDRS + 1];
    pthread_setname_np(pthread_self(), "emu-accept");
    for (;;) {
        pf[0] = (struct pollfd){.fd = px->wake[0], .events = POLLIN};
        for (int i = 0; i < px->naddrs; i++) {
            pf[i + 1] = (struct pollfd){.fd = px->lfds[i], .events = POLLIN};
        }
        if (poll(pf, (nfds_t)px->naddrs + 1, -1) < 0 && errno != EINTR) {
            break;
        }
        if (pf[0].revents != 0) {
            break;
        }
        bool broken = false;
        for (int i = 0; i < px->naddrs; i++) {
            if (pf[i + 1].revents & POLLIN) {
                accept_burst(px, px->lfds[i]);
            } else if (pf[i + 1].revents != 0) {
                broken = true;
            }
        }
        if (broken) {
            poll(NULL, 0, 10); /* a listener in error: do not spin on it */
        }
        reap(px, false);
    }
    return NULL;
}

/* With px->ctl held. */
static int acceptor_start(emu_proxy *px, char *err, size_t errlen)
{
    if (listeners_open(px, err, errlen) != 0) {
        return -1;
    }
    if (pipe2(px->wake, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "server proxy: pipe: %s", strerror(errno));
        listeners_close(px);
        return -1;
    }
    if (pthread_create(&px->acceptor, NULL, acceptor_main, px) != 0) {
        snprintf(err, errlen, "server proxy: cannot start the accept thread");
        close(px->wake[0]);
        close(px->wake[1]);
        listeners_close(px);
        return -1;
    }
    px->accepting = true;
    return 0;
}

/* With px->ctl held. */
static void acceptor_stop(emu_proxy *px)
{
    if (!px->accepting) {
        return;
    }
    char b = 1;
    while (write(px->wake[1], &b, 1) < 0 && errno == EINTR) {
    }
    pthread_join(px->acceptor, NULL);
    close(px->wake[0]);
    close(px->wake[1]);
    listeners_close(px);
    px->accepting = false;
}

/* ---------------- TLS contexts ---------------- */

static SSL_CTX *build_ctx(emu_proxy *px, X509 *leaf, EVP_PKEY *key, STACK_OF(X509) *chain)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1 ||
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), px->signing_cert) != 1 ||
        SSL_CTX_add_client_CA(ctx, px->signing_cert) != 1) {
        goto fail;
    }
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) != 1) {
            goto fail;
        }
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_verify_depth(ctx, 4);
    /*
     * No resumption: a resumed session skips client certificate verification,
     * so an expired or re-issued certificate could slip through.
     */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One read(2) takes every record that has arrived, not a header and a body each. */
    SSL_CTX_set_read_ahead(ctx, 1);
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *emu_proxy_ctx_get(emu_proxy *px)
{
    SSL_CTX *ctx = NULL;
    emu_instance_lock();
    emu_server_id *id = px->inst->server_id;
    if (id == NULL) {
        emu_instance_unlock();
        return NULL;
    }
    X509 *leaf = emu_server_id_leaf(id);
    pthread_mutex_lock(&px->mu);
    /* ctx_leaf holds a reference, so an equal pointer is the same certificate. */
    if (px->ctx != NULL && px->ctx_leaf == leaf) {
        ctx = px->ctx;
        SSL_CTX_up_ref(ctx);
        pthread_mutex_unlock(&px->mu);
        emu_instance_unlock();
        return ctx;
    }
    pthread_mutex_unlock(&px->mu);
    /* Take references, then build outside the instance lock (SSL_CTX_new is slow). */
    EVP_PKEY *key = emu_server_id_leaf_key(id);
    STACK_OF(X509) *chain = X509_chain_up_ref(emu_server_id_chain(id));
    X509_up_ref(leaf);
    EVP_PKEY_up_ref(key);
    emu_instance_unlock();

    ctx = build_ctx(px, leaf, key, chain);
    if (ctx != NULL) {
        pthread_mutex_lock(&px->mu);
        SSL_CTX_free(px->ctx);
        X509_free(px->ctx_leaf);
        px->ctx = ctx;
        px->ctx_leaf = leaf;
        leaf = NULL; /* moved into the cache */
        SSL_CTX_up_ref(ctx);
        pthread_mutex_unlock(&px->mu);
    }
    X509_free(leaf);
    EVP_PKEY_free(key);
    sk_X509_pop_free(chain, X509_free);
    return ctx;
}

/* ---------------- public API ---------------- */

static emu_engine engine_of(const char *version)
{
    if (version != NULL && strncmp(version, "MYSQL_", 6) == 0) {
        return EMU_ENGINE_MYSQL;
    }
    if (version != NULL && strncmp(version, "SQLSERVER", 9) == 0) {
        return EMU_ENGINE_SQLSERVER;
    }
    return EMU_ENGINE_POSTGRES;
}

static void add_addr(emu_proxy *px, const char *ip)
{
    if (ip == NULL || ip[0] == '\0' || strlen(ip) >= sizeof(px->addrs[0])) {
        return;
    }
    for (int i = 0; i < px->naddrs; i++) {
        if (strcmp(px->addrs[i], ip) == 0) {
            return;
        }
    }
    strcpy(px->addrs[px->naddrs], ip);
    px->lfds[px->naddrs++] = -1;
}

static void proxy_free(emu_proxy *px)
{
    SSL_CTX_free(px->ctx);
    X509_free(px->ctx_leaf);
    X509_free(px->signing_cert);
    free(px->version);
    pthread_mutex_destroy(&px->mu);
    pthread_mutex_destroy(&px->ctl);
    free(px);
}

static void ignore_sigpipe(void)
{
    /* TLS writes go through write(2): a vanished peer must be EPIPE, not a signal. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

int emu_proxy_start(emu_instance *inst, const emu_proxy_config *cfg, char *err, size_t errlen)
{
    emu_proxy *px = calloc(1, sizeof(*px));
    if (px == NULL) {
        snprintf(err, errlen, "server proxy: out of memory");
        return -1;
    }
    pthread_mutex_init(&px->mu, NULL);
    pthread_mutex_init(&px->ctl, NULL);
    px->inst = inst;
    px->engine = engine_of(inst->version);
    px->version = strdup(inst->version ? inst->version : "POSTGRES_15");
    px->port = cfg->server_port > 0 ? cfg->server_port : EMU_SERVER_PORT_DEFAULT;
    atomic_init(&px->mdx_wait_ms, EMU_PROXY_MDX_WAIT_MS_DEFAULT);
    atomic_init(&px->handshake_ms, EMU_PROXY_HANDSHAKE_MS);
    atomic_init(&px->prelude_ms, EMU_PROXY_PRELUDE_MS);
    add_addr(px, inst->public_ip);
    add_addr(px, inst->private_ip);
    add_addr(px, inst->psc_ip);
    X509 *signing = emu_signing_ca_cert(cfg->signing_ca);
    if (px->version == NULL || signing == NULL) {
        snprintf(err, errlen, "server proxy: no signing CA");
        goto fail;
    }
    X509_up_ref(signing);
    px->signing_cert = signing;
    if (px->naddrs == 0) {
        snprintf(err, errlen, "server proxy: instance %s has no IP address",
                 inst->connection_name ? inst->connection_name : "?");
        goto fail;
    }
    if (parse_backend(px, inst->backend, cfg->backend_source, err, errlen) != 0) {
        goto fail;
    }
    SSL_CTX *ctx = emu_proxy_ctx_get(px); /* builds the first context; fails early */
    if (ctx == NULL) {
        snprintf(err, errlen, "server proxy: no usable server identity for %s",
                 inst->connection_name ? inst->connection_name : "?");
        goto fail;
    }
    SSL_CTX_free(ctx);
    ignore_sigpipe();
    if (acceptor_start(px, err, errlen) != 0) {
        goto fail;
    }
    inst->proxy = px;
    return 0;
fail:
    proxy_free(px);
    return -1;
}

static void drop_all(emu_proxy *px)
{
    pthread_mutex_lock(&px->mu);
    for (emu_conn *c = px->conns; c != NULL; c = c->next) {
        c->dropped = true;
        if (c->cfd >= 0) {
            shutdown(c->cfd, SHUT_RDWR);
        }
        if (c->bfd >= 0) {
            shutdown(c->bfd, SHUT_RDWR);
        }
    }
    pthread_mutex_unlock(&px->mu);
}

void emu_proxy_stop(emu_instance *inst)
{
    emu_proxy *px = inst ? inst->proxy : NULL;
    if (px == NULL) {
        return;
    }
    pthread_mutex_lock(&px->ctl);
    acceptor_stop(px);
    drop_all(px);
    reap(px, true);
    pthread_mutex_unlock(&px->ctl);
    inst->proxy = NULL;
    proxy_free(px);
}

void emu_proxy_drop_connections(emu_instance *inst)
{
    if (inst != NULL && inst->proxy != NULL) {
        drop_all(inst->proxy);
    }
}

int emu_proxy_set_refuse(emu_instance *inst, bool refuse, char *err, size_t errlen)
{
    emu_proxy *px = inst ? inst->proxy : NULL;
    int rc = 0;
    if (px == NULL) {
        snprintf(err, errlen, "server proxy: not running");
        return -1;
    }
    pthread_mutex_lock(&px->ctl);
    if (refuse) {
        acceptor_stop(px);
    } else if (!px->accepting) {
        rc = acceptor_start(px, err, errlen);
    }
    pthread_mutex_unlock(&px->ctl);
    return rc;
}

void emu_proxy_stats_get(emu_instance *inst, emu_proxy_stats *out)
{
    memset(out, 0, sizeof(*out));
    emu_proxy *px = inst ? inst->proxy : NULL;
    if (px == NULL) {
        return;
    }
    out->accepted = atomic_load(&px->accepted);
    out->tls_refused = atomic_load(&px->tls_refused);
    out->iam_refused = atomic_load(&px->iam_refused);
    out->active = atomic_load(&px->active);
}

void emu_proxy_stats_ext_get(emu_instance *inst, emu_proxy_stats_ext *out)
{
    memset(out, 0, sizeof(*out));
    emu_proxy *px = inst ? inst->proxy : NULL;
    if (px == NULL) {
        return;
    }
    out->mdx_ok = atomic_load(&px->mdx_ok);
    out->mdx_error = atomic_load(&px->mdx_error);
    out->backend_failed = atomic_load(&px->backend_failed);
    out->bytes_up = atomic_load(&px->bytes_up);
    out->bytes_down = atomic_load(&px->bytes_down);
}

void emu_proxy_set_mdx_wait_ms(emu_instance *inst, int ms)
{
    if (inst != NULL && inst->proxy != NULL) {
        atomic_store(&inst->proxy->mdx_wait_ms, ms < 0 ? 0 : ms);
    }
}

void emu_proxy_set_timeouts(emu_instance *inst, int handshake_ms, int prelude_ms)
{
    if (inst != NULL && inst->proxy != NULL) {
        atomic_store(&inst->proxy->handshake_ms, handshake_ms > 0 ? handshake_ms : 1);
        atomic_store(&inst->proxy->prelude_ms, prelude_ms > 0 ? prelude_ms : 1);
    }
}

int emu_proxy_last_mdx(emu_instance *inst, emu_mdx_request *out)
{
    emu_proxy *px = inst ? inst->proxy : NULL;
    int have = 0;
    memset(out, 0, sizeof(*out));
    if (px == NULL) {
        return 0;
    }
    pthread_mutex_lock(&px->mu);
    *out = px->last_mdx;
    have = atomic_load(&px->mdx_ok) > 0;
    pthread_mutex_unlock(&px->mu);
    return have;
}
