/*
 * csql-emulator server-side proxy, in-process: real listeners on test-unique
 * loopback addresses at :3307, scripted backends on a unix socket and a TCP
 * port, OpenSSL clients. Covers byte-exact forwarding (0 B..8 MiB), half-close
 * both ways, every refusal (no certificate, foreign CA, expired, TLS 1.2), MDX,
 * faults (drop, refuse), CA rotation, the IAM authn check, timeouts and stop.
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
#include <pthread.h>
#include <stdatomic.h>
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
#include <openssl/x509v3.h>

#include "data_plane.h"
#include "emulator_proxy_harness.h"
#include "support.h"

#define PORT 3307
#define IAM_SA "sa@p.iam.gserviceaccount.com"

/* ---------------- fixture ---------------- */

static struct fix {
    emu_signing_ca *ca;
    EVP_PKEY *key;
    char *spki;
    X509 *good, *expired, *foreign;
    char ip[8][32];
    emu_instance *pg, *my, *tcp;
    int port_override; /* instance(): listen here instead of PORT */
} F;

static X509 *pem_cert(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *c = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    return c;
}

/* A client certificate for F.key from ca, valid for lifetime seconds; serial out. */
static X509 *client_cert(emu_signing_ca *ca, long lifetime, uint64_t *serial)
{
    char *pem = NULL, err[256];
    uint64_t s = 0;
    time_t na;
    if (emu_signing_ca_sign(ca, F.spki, strlen(F.spki), lifetime, &pem, &s, &na, err,
                            sizeof(err)) != 0) {
        fprintf(stderr, "sign: %s\n", err);
        return NULL;
    }
    X509 *c = pem_cert(pem);
    free(pem);
    if (serial) {
        *serial = s;
    }
    return c;
}

static emu_instance *instance(const char *name, const char *version, const char *ip1,
                              const char *ip2, const char *backend, const char *mode,
                              const char *source)
{
    char spec[512], err[256];
    snprintf(spec, sizeof(spec), "proj:us-central1:%s?version=%s&public-ip=%s%s%s&backend=%s"
             "&ca-mode=%s",
             name, version, ip1, ip2 ? "&private-ip=" : "", ip2 ? ip2 : "", backend, mode);
    emu_instance *inst = emu_instance_parse(spec, err, sizeof(err));
    if (inst == NULL || emu_instance_rotate_ca(inst, err, sizeof(err)) != 0) {
        fprintf(stderr, "instance %s: %s\n", spec, err);
        return NULL;
    }
    emu_proxy_config cfg = {.signing_ca = F.ca,
                            .server_port = F.port_override ? F.port_override : PORT,
                            .backend_source = source};
    if (emu_proxy_start(inst, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "proxy %s: %s\n", spec, err);
        emu_instance_free(inst);
        return NULL;
    }
    return inst;
}

static int setup(void **state)
{
    (void)state;
    char err[256];
    for (int i = 0; i < 8; i++) {
        csqlt_unique_ip(i + 1, F.ip[i], sizeof(F.ip[i]));
    }
    if (bk_start() != 0 || (F.ca = emu_signing_ca_new(err, sizeof(err))) == NULL ||
        (F.key = EVP_RSA_gen(2048)) == NULL) {
        return -1;
    }
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, F.key);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    F.spki = strndup(data, (size_t)n);
    BIO_free(b);
    emu_signing_ca *other = emu_signing_ca_new(err, sizeof(err));
    F.good = client_cert(F.ca, 3600, NULL);
    F.expired = client_cert(F.ca, -60, NULL);
    F.foreign = client_cert(other, 3600, NULL);
    emu_signing_ca_free(other);
    char tcp_backend[64];
    snprintf(tcp_backend, sizeof(tcp_backend), "127.0.0.1:%d", bk.tport);
    F.pg = instance("pg", "POSTGRES_15", F.ip[0], F.ip[1], bk.path, "legacy", NULL);
    F.my = instance("my", "MYSQL_8_0", F.ip[2], NULL, bk.path, "cas", NULL);
    F.tcp = instance("tcp", "POSTGRES_15", F.ip[3], NULL, tcp_backend, "legacy", F.ip[4]);
    return F.good && F.expired && F.foreign && F.pg && F.my && F.tcp ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    emu_instance *all[] = {F.pg, F.my, F.tcp};
    for (size_t i = 0; i < 3; i++) {
        if (all[i] != NULL) {
            emu_proxy_stop(all[i]);
            assert_null(all[i]->proxy);
            emu_instance_free(all[i]);
        }
    }
    bk_stop();
    X509_free(F.good);
    X509_free(F.expired);
    X509_free(F.foreign);
    EVP_PKEY_free(F.key);
    free(F.spki);
    emu_signing_ca_free(F.ca);
    return 0;
}

/* Before each test: echo backend, default MDX wait, no leftovers. */
static int per_test(void **state)
{
    (void)state;
    atomic_store(&bk.mode, BK_ECHO);
    bk_wait_idle();
    return 0;
}

/* ---------------- clients of the fixture's instances ---------------- */

/* tls_client_open with F.key, the instance's current CA bundle unless o->trust, port PORT. */
static int client_open(client *c, emu_instance *inst, const char *ip, const cli_opts *o)
{
    cli_opts full = *o;
    char *bundle = o->trust ? NULL : emu_instance_ca_pem_copy(inst, NULL);
    full.key = F.key;
    full.trust = o->trust ? o->trust : bundle;
    full.port = o->port ? o->port : PORT;
    int rc = tls_client_open(c, ip, &full);
    free(bundle);
    return rc;
}

static int good_client(client *c, emu_instance *inst, const char *ip)
{
    cli_opts o = {.cert = F.good};
    return client_open(c, inst, ip, &o);
}

static void stats(emu_instance *inst, emu_proxy_stats *s)
{
    emu_proxy_stats_get(inst, s);
}

/* Waits up to 5 s for the counter picked by field to exceed before. */
#define WAIT_STAT(inst, field, before)                                                        \
    do {                                                                                      \
        emu_proxy_stats s_;                                                                   \
        for (int i_ = 0; i_ < 500; i_++) {                                                    \
            stats(inst, &s_);                                                                 \
            if (s_.field > (before)) {                                                        \
                break;                                                                        \
            }                                                                                 \
            sleep_ms(10);                                                                     \
        }                                                                                     \
        assert_true(s_.field > (before));                                                     \
    } while (0)

static void wait_inactive(emu_instance *inst)
{
    emu_proxy_stats s;
    for (int i = 0; i < 500; i++) {
        stats(inst, &s);
        if (s.active == 0) {
            return;
        }
        sleep_ms(10);
    }
    fail_msg("connections still active: %llu", (unsigned long long)s.active);
}

static size_t pg_startup(uint8_t *out, const char *user);
static X509 *iam_cert(const char *principal, long token_ttl);

/* ---------------- forwarding ---------------- */

static void echo_roundtrip(emu_instance *inst, const char *ip, size_t n)
{
    client c;
    assert_int_equal(good_client(&c, inst, ip), 0);
    uint8_t *out = random_bytes(n), *in = NULL;
    size_t inlen = 0;
    assert_int_equal(exchange(&c, out, n, true, &in, &inlen), 0);
    assert_int_equal(inlen, n);
    unsigned char a[32], b[32];
    sha256(out, n, a);
    sha256(in, inlen, b);
    assert_memory_equal(a, b, 32);
    assert_true(n == 0 || memcmp(out, in, n) == 0);
    free(out);
    free(in);
    client_close(&c);
}

static void test_echo_sizes(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 1000, 65535, 65536, 65537, 1 << 20, 8 << 20};
    emu_proxy_stats_ext before, after;
    emu_proxy_stats acc0, acc1;
    emu_proxy_stats_ext_get(F.pg, &before);
    stats(F.pg, &acc0);
    size_t total = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        echo_roundtrip(F.pg, F.ip[0], sizes[i]);
        total += sizes[i];
    }
    /* The private address of the same instance works too. */
    echo_roundtrip(F.pg, F.ip[1], 4096);
    total += 4096;
    wait_inactive(F.pg);
    emu_proxy_stats_ext_get(F.pg, &after);
    assert_true(after.bytes_up - before.bytes_up == total);
    assert_true(after.bytes_down - before.bytes_down == total);
    stats(F.pg, &acc1);
    assert_true(acc1.accepted - acc0.accepted == sizeof(sizes) / sizeof(sizes[0]) + 1);
    assert_true(acc1.active == 0);
}

/* A client that stops reading stalls the backend: bounded buffers, no unbounded queueing. */
static void test_backpressure(void **state)
{
    (void)state;
    const size_t n = 64u << 20;
    atomic_store(&bk.mode, BK_SPEAK_FIRST);
    bk.speak_len = n;
    bk.got_done = 0;
    client c;
    assert_int_equal(good_client(&c, F.pg, F.ip[0]), 0);
    send_all(&c, "x", 1);
    sleep_ms(700); /* not reading */
    size_t spoken = atomic_load(&bk.spoken);
    /* Kernel socket buffers (a few MiB on loopback) plus 64 KiB in the proxy, not 64 MiB. */
    assert_true(spoken < 24u << 20);
    uint8_t *in = malloc(65536);
    size_t got = 0, bad = 0;
    for (;;) {
        size_t k = 0;
        if (SSL_read_ex(c.ssl, in, 65536, &k) != 1) {
            break;
        }
        for (size_t i = 0; i < k; i++) {
            bad += in[i] != (uint8_t)((got + i) * 7 + 3);
        }
        got += k;
    }
    assert_true(got == n);
    assert_true(bad == 0);
    assert_int_equal(SSL_get_error(c.ssl, 0), SSL_ERROR_ZERO_RETURN);
    ERR_clear_error();
    free(in);
    client_close(&c);
    wait_inactive(F.pg);
}

/* A backend reset ends the client's connection with an error, not a clean close. */
static void test_backend_reset(void **state)
{
    (void)state;
    atomic_store(&bk.mode, BK_RESET);
    client c;
    uint8_t in[1000];
    assert_int_equal(good_client(&c, F.pg, F.ip[0]), 0);
    send_all(&c, "x", 1);
    assert_int_equal(recv_exact(&c, in, sizeof(in)), 0);
    assert_int_equal(in[999], 'r');
    assert_int_equal(recv_end(&c), -1);
    client_close(&c);
    wait_inactive(F.pg);
}

/* A client that vanishes without close_notify: the backend connection is closed promptly. */
static void test_client_abort(void **state)
{
    (void)state;
    client c;
    uint8_t in[4];
    assert_int_equal(good_client(&c, F.pg, F.ip[0]), 0);
    send_all(&c, "ping", 4);
    assert_int_equal(recv_exact(&c, in, 4), 0);
    assert_int_equal(atomic_load(&bk.live), 1);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(c.fd); /* RST, no TLS goodbye */
    c.fd = -1;
    int64_t t0 = now_ms();
    while (atomic_load(&bk.live) > 0 && now_ms() - t0 < 5000) {
        sleep_ms(5);
    }
    assert_int_equal(atomic_load(&bk.live), 0); /* the echo backend saw EOF */
    assert_true(now_ms() - t0 < 2000);
    client_close(&c);
    wait_inactive(F.pg);
}

/* No session resumption: every connection presents and proves its certificate afresh. */
static void test_no_resumption(void **state)
{
    (void)state;
    client a;
    uint8_t in[1];
    assert_int_equal(good_client(&a, F.pg, F.ip[0]), 0);
    send_all(&a, "a", 1);
    assert_int_equal(recv_exact(&a, in, 1), 0); /* tickets, if any, arrive before data */
    SSL_SESSION *sess = SSL_get1_session(a.ssl);
    assert_non_null(sess);
    int resumable = SSL_SESSION_is_resumable(sess);
    SSL_SESSION_free(sess);
    client_close(&a);
    wait_inactive(F.pg);
    assert_int_equal(resumable, 0); /* no ticket was issued */
}

/* The client half-closes first and only then reads: the answer still arrives. */
static void test_half_close_client_first(void **state)
{
    (void)state;
    client c;
    assert_int_equal(good_client(&c, F.pg, F.ip[0]), 0);
    uint8_t *out = random_bytes(32768), in[32768];
    send_all(&c, out, 32768);
    assert_true(SSL_shutdown(c.ssl) >= 0); /* close_notify: no more from us */
    assert_int_equal(recv_exact(&c, in, sizeof(in)), 0);
    assert_memory_equal(in, out, sizeof(in));
    assert_int_equal(recv_end(&c), 1); /* the backend's EOF arrives as close_notify */
    free(out);
    client_close(&c);
}

/* The backend half-closes first: the client sees close_notify and can still send. */
static void test_half_close_backend_first(void **state)
{
    (void)state;
    atomic_store(&bk.mode, BK_SPEAK_FIRST);
    bk.speak_len = 100000;
    bk.got_done = 0;
    client c;
    assert_int_equal(good_client(&c, F.pg, F.ip[0]), 0);
    /* PostgreSQL clients speak first; one byte lets the proxy past its first-bytes check. */
    const size_t n = 1 << 20;
    uint8_t *out = random_bytes(n), *in = malloc(100000);
    send_all(&c, out, 1);
    assert_int_equal(recv_exact(&c, in, 100000), 0);
    for (size_t i = 0; i < 100000; i++) {
        assert_int_equal(in[i], (uint8_t)(i * 7 + 3));
    }
    assert_int_equal(recv_end(&c), 1);
    send_all(&c, out + 1, n - 1);
    assert_true(SSL_shutdown(c.ssl) >= 0);
    pthread_mutex_lock(&bk.mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    while (!bk.got_done && pthread_cond_timedwait(&bk.cv, &bk.mu, &until) == 0) {
    }
    int done = bk.got_done;
    uint64_t got = bk.got_bytes;
    unsigned char want[32], have[32];
    memcpy(have, bk.got_sha, 32);
    pthread_mutex_unlock(&bk.mu);
    assert_true(done);
    assert_true(got == n);
    sha256(out, n, want);
    assert_memory_equal(want, have, 32);
    free(out);
    free(in);
    client_close(&c);
    wait_inactive(F.pg);
}

typedef struct par_arg {
    int id;
    atomic_int *ok;
} par_arg;

static void *parallel_client(void *arg)
{
    par_arg *a = arg;
    for (int round = 0; round < 3; round++) {
        client c;
        cli_opts o = {.cert = F.good};
        if (client_open(&c, F.pg, F.ip[a->id % 2], &o) != 0) {
            client_close(&c);
            continue;
        }
        size_t n = 131072 + (size_t)a->id * 1000;
        uint8_t *out = malloc(n), *in = NULL;
        size_t inlen = 0;
        for (size_t i = 0; i < n; i++) {
            out[i] = (uint8_t)(i ^ (size_t)a->id);
        }
        if (exchange(&c, out, n, true, &in, &inlen) == 0 && inlen == n &&
            memcmp(in, out, n) == 0) {
            atomic_fetch_add(a->ok, 1);
        }
        free(out);
        free(in);
        client_close(&c);
    }
    return NULL;
}

static void test_parallel_clients(void **state)
{
    (void)state;
    enum { N = 16 };
    pthread_t t[N];
    par_arg args[N];
    atomic_int ok = 0;
    for (int i = 0; i < N; i++) {
        args[i] = (par_arg){.id = i, .ok = &ok};
        assert_int_equal(pthread_create(&t[i], NULL, parallel_client, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
    }
    assert_int_equal(atomic_load(&ok), N * 3);
    wait_inactive(F.pg);
}

/* ---------------- refusals ---------------- */

/* The handshake may look fine to a TLS 1.3 client; the refusal shows on the first read. */
static void expect_refused(emu_instance *inst, const char *ip, const cli_opts *o)
{
    emu_proxy_stats before;
    stats(inst, &before);
    int bk_before = atomic_load(&bk.conns);
    client c;
    if (client_open(&c, inst, ip, o) == 0) {
        size_t put;
        SSL_write_ex(c.ssl, "ping", 4, &put);
        ERR_clear_error();
        uint8_t b[4];
        assert_int_equal(recv_exact(&c, b, 4), -1);
    }
    client_close(&c);
    WAIT_STAT(inst, tls_refused, before.tls_refused);
    assert_int_equal(atomic_load(&bk.conns), bk_before); /* the database never saw it */
}

static void test_refuse_no_client_cert(void **state)
{
    (void)state;
    cli_opts o = {.cert = NULL};
    expect_refused(F.pg, F.ip[0], &o);
}

static void test_refuse_foreign_ca(void **state)
{
    (void)state;
    cli_opts o = {.cert = F.foreign};
    expect_refused(F.pg, F.ip[0], &o);
}

static void test_refuse_expired_cert(void **state)
{
    (void)state;
    cli_opts o = {.cert = F.expired};
    expect_refused(F.pg, F.ip[0], &o);
}

static void test_refuse_tls12(void **state)
{
    (void)state;
    cli_opts o = {.cert = F.good, .max_proto = TLS1_2_VERSION};
    client c;
    emu_proxy_stats before;
    stats(F.pg, &before);
    assert_int_equal(client_open(&c, F.pg, F.ip[0], &o), -1);
    client_close(&c);
    WAIT_STAT(F.pg, tls_refused, before.tls_refused);
    /* And the same client allowed TLS 1.3 gets through. */
    echo_roundtrip(F.pg, F.ip[0], 10);
}

/* A client that connects and says nothing is cut off at the handshake deadline. */
static void test_handshake_timeout(void **state)
{
    (void)state;
    emu_proxy_stats before;
    stats(F.pg, &before);
    emu_proxy_set_timeouts(F.pg, 300, 30000);
    int fd = tcp_connect(F.ip[0], PORT);
    assert_true(fd >= 0);
    int64_t t0 = now_ms();
    char b;
    ssize_t r = recv(fd, &b, 1, 0);
    int64_t took = now_ms() - t0;
    assert_true(r <= 0);
    assert_true(took >= 250 && took < 5000);
    close(fd);
    WAIT_STAT(F.pg, tls_refused, before.tls_refused);
    emu_proxy_set_timeouts(F.pg, 10000, 30000);
}

/* After the handshake, a PostgreSQL client that never sends its startup is closed too. */
static void test_prelude_timeout(void **state)
{
    (void)state;
    emu_proxy_set_timeouts(F.pg, 10000, 300);
    int bk_before = atomic_load(&bk.conns);
    client c;
    assert_int_equal(good_client(&c, F.pg, F.ip[0]), 0);
    int64_t t0 = now_ms();
    assert_int_equal(recv_end(&c), -1);
    int64_t took = now_ms() - t0;
    assert_true(took >= 250 && took < 5000);
    client_close(&c);
    assert_int_equal(atomic_load(&bk.conns), bk_before);
    emu_proxy_set_timeouts(F.pg, 10000, 30000);
}

/* ---------------- metadata exchange ---------------- */

static size_t mdx_frame(uint8_t *out, const uint8_t *body, size_t len)
{
    memcpy(out, "CSQLMDEX", 8);
    out[8] = (uint8_t)(len >> 24);
    out[9] = (uint8_t)(len >> 16);
    out[10] = (uint8_t)(len >> 8);
    out[11] = (uint8_t)len;
    if (len > 0) {
        memcpy(out + 12, body, len);
    }
    return 12 + len;
}

static const uint8_t MDX_OK[14] = {'C', 'S', 'Q', 'L', 'M', 'D', 'E', 'X', 0, 0, 0, 2, 8, 1};

static void test_mdx_ok(void **state)
{
    (void)state;
    const uint8_t body[] = {0x0a, 4, 't', 'e', 's', 't', 0x10, 1};
    uint8_t buf[64], in[32];
    size_t n = mdx_frame(buf, body, sizeof(body));
    memcpy(buf + n, "hello", 5); /* database bytes in the same write */
    client c;
    assert_int_equal(good_client(&c, F.pg, F.ip[0]), 0);
    send_all(&c, buf, n + 5);
    assert_int_equal(recv_exact(&c, in, 14), 0);
    assert_memory_equal(in, MDX_OK, 14);
    assert_int_equal(recv_exact(&c, in, 5), 0);
    assert_memory_equal(in, "hello", 5); /* the frame itself never reached the database */
    client_close(&c);
    emu_mdx_request last;
    assert_int_equal(emu_proxy_last_mdx(F.pg, &last), 1);
    assert_string_equal(last.user_agent, "test");
    assert_int_equal(last.protocol_type, 1);
}

/* A frame split across writes is reassembled. */
static void test_mdx_split(void **state)
{
    (void)state;
    const uint8_t body[] = {0x10, 3};
    uint8_t buf[32], in[14];
    size_t n = mdx_frame(buf, body, sizeof(body));
    client c;
    assert_int_equal(good_client(&c, F.pg, F.ip[0]), 0);
    send_all(&c, buf, 5);
    sleep_ms(50);
    send_all(&c, buf + 5, n - 5);
    assert_int_equal(recv_exact(&c, in, 14), 0);
    assert_memory_equal(in, MDX_OK, 14);
    send_all(&c, "x", 1);
    assert_int_equal(recv_exact(&c, in, 1), 0);
    assert_int_equal(in[0], 'x');
    client_close(&c);
}

static void expect_mdx_error(const uint8_t *frame, size_t n)
{
    emu_proxy_stats_ext before, after;
    emu_proxy_stats_ext_get(F.pg, &before);
    int bk_before = atomic_load(&bk.conns);
    client c;
    uint8_t in[200];
    assert_int_equal(good_client(&c, F.pg, F.ip[0]), 0);
    send_all(&c, frame, n);
    assert_int_equal(recv_exact(&c, in, 12), 0);
    assert_memory_equal(in, "CSQLMDEX", 8);
    size_t len = (size_t)in[11];
    assert_true(len > 4 && len < sizeof(in));
    assert_int_equal(recv_exact(&c, in, len), 0);
    assert_int_equal(in[0], 0x08);
    assert_int_equal(in[1], 2); /* ERROR */
    assert_int_equal(in[2], 0x12);
    assert_true(in[3] > 0);
    assert_int_not_equal(recv_end(&c), 0); /* then the connection ends */
    client_close(&c);
    emu_proxy_stats_ext_get(F.pg, &after);
    assert_true(after.mdx_error == before.mdx_error + 1);
    assert_int_equal(atomic_load(&bk.conns), bk_before);
}

static void test_mdx_error(void **state)
{
    (void)state;
    uint8_t buf[64];
    const uint8_t bad_body[] = {0x0a, 9, 'x'}; /* length beyond the body */
    expect_mdx_error(buf, mdx_frame(buf, bad_body, sizeof(bad_body)));
    const uint8_t huge[12] = {'C', 'S', 'Q', 'L', 'M', 'D', 'E', 'X', 0, 1, 0, 0}; /* 64 KiB */
    expect_mdx_error(huge, sizeof(huge));
}

/* MySQL: the server speaks first, so the proxy holds the greeting for a possible MDX. */
static void test_mdx_mysql(void **state)
{
    (void)state;
    atomic_store(&bk.mode, BK_MYSQL);
    uint8_t greeting[128], in[128];
    size_t glen = mysql_greeting(greeting);
    client c;

    /* With MDX: the answer comes at once, then the greeting. */
    emu_proxy_set_mdx_wait_ms(F.my, 5000);
    const uint8_t body[] = {0x10, 3};
    uint8_t frame[32];
    size_t n = mdx_frame(frame, body, sizeof(body));
    assert_int_equal(good_client(&c, F.my, F.ip[2]), 0);
    int64_t t0 = now_ms();
    send_all(&c, frame, n);
    assert_int_equal(recv_exact(&c, in, 14), 0);
    assert_memory_equal(in, MDX_OK, 14);
    assert_int_equal(recv_exact(&c, in, glen), 0);
    assert_memory_equal(in, greeting, glen); /* not IAM: unchanged */
    assert_true(now_ms() - t0 < 2500);
    client_close(&c);

    /* Without MDX: the greeting after the wait. */
    emu_proxy_set_mdx_wait_ms(F.my, 1000);
    assert_int_equal(good_client(&c, F.my, F.ip[2]), 0);
    t0 = now_ms();
    assert_int_equal(recv_exact(&c, in, glen), 0);
    int64_t took = now_ms() - t0;
    assert_memory_equal(in, greeting, glen);
    assert_true(took >= 900);
    client_close(&c);

    /* Wait 0: MDX off for this instance, greeting without the wait. */
    emu_proxy_set_mdx_wait_ms(F.my, 0);
    assert_int_equal(good_client(&c, F.my, F.ip[2]), 0);
    t0 = now_ms();
    assert_int_equal(recv_exact(&c, in, glen), 0);
    assert_true(now_ms() - t0 < 900);
    client_close(&c);
    wait_inactive(F.my);
}

/* ---------------- faults ---------------- */

static void test_drop_connections(void **state)
{
    (void)state;
    client a, b;
    uint8_t in[4];
    assert_int_equal(good_client(&a, F.pg, F.ip[0]), 0);
    assert_int_equal(good_client(&b, F.pg, F.ip[1]), 0);
    send_all(&a, "ping", 4);
    send_all(&b, "ping", 4);
    assert_int_equal(recv_exact(&a, in, 4), 0);
    assert_int_equal(recv_exact(&b, in, 4), 0);
    emu_proxy_stats s;
    stats(F.pg, &s);
    assert_true(s.active >= 2);
    int64_t t0 = now_ms();
    emu_proxy_drop_connections(F.pg);
    assert_int_not_equal(recv_end(&a), 0); /* ends one way or another... */
    assert_int_equal(recv_exact(&b, in, 1), -1);
    assert_true(now_ms() - t0 < 2000); /* ...promptly */
    client_close(&a);
    client_close(&b);
    wait_inactive(F.pg);
    /* New connections are unaffected. */
    echo_roundtrip(F.pg, F.ip[0], 100);
}

static void test_refuse_tcp(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(emu_proxy_set_refuse(F.pg, true, err, sizeof(err)), 0);
    assert_int_equal(tcp_connect(F.ip[0], PORT), -ECONNREFUSED);
    assert_int_equal(tcp_connect(F.ip[1], PORT), -ECONNREFUSED);
    assert_int_equal(emu_proxy_set_refuse(F.pg, true, err, sizeof(err)), 0); /* idempotent */
    echo_roundtrip(F.my, F.ip[2], 0); /* other instances are unaffected */
    assert_int_equal(emu_proxy_set_refuse(F.pg, false, err, sizeof(err)), 0);
    echo_roundtrip(F.pg, F.ip[0], 1000);
    echo_roundtrip(F.pg, F.ip[1], 1000);
    assert_int_equal(emu_proxy_set_refuse(F.pg, false, err, sizeof(err)), 0);
}

static void test_rotation(void **state)
{
    (void)state;
    char err[256], *old_pem = emu_instance_ca_pem_copy(F.pg, NULL);
    client live, c;
    uint8_t in[4];
    assert_int_equal(good_client(&live, F.pg, F.ip[0]), 0);
    send_all(&live, "one!", 4);
    assert_int_equal(recv_exact(&live, in, 4), 0);

    assert_int_equal(emu_instance_rotate_ca(F.pg, err, sizeof(err)), 0);
    char *new_pem = emu_instance_ca_pem_copy(F.pg, NULL);
    assert_string_not_equal(old_pem, new_pem);

    /* A client that still trusts the old CA fails the handshake... */
    cli_opts stale = {.cert = F.good, .trust = old_pem};
    assert_int_equal(client_open(&c, F.pg, F.ip[0], &stale), -1);
    client_close(&c);
    /* ...one with the new bundle sees the new leaf. */
    assert_int_equal(good_client(&c, F.pg, F.ip[0]), 0);
    emu_instance_lock();
    X509 *leaf = X509_dup(emu_server_id_leaf(F.pg->server_id));
    emu_instance_unlock();
    assert_int_equal(X509_cmp(SSL_get0_peer_certificate(c.ssl), leaf), 0);
    X509_free(leaf);
    send_all(&c, "two!", 4);
    assert_int_equal(recv_exact(&c, in, 4), 0);
    client_close(&c);

    /* The connection made before the rotation keeps working. */
    send_all(&live, "thr!", 4);
    assert_int_equal(recv_exact(&live, in, 4), 0);
    assert_memory_equal(in, "thr!", 4);
    client_close(&live);
    free(old_pem);
    free(new_pem);
}

/* CAS instance: the client trusts root + intermediate and sees the SAN. */
static void test_cas_chain(void **state)
{
    (void)state;
    client c;
    assert_int_equal(good_client(&c, F.my, F.ip[2]), 0);
    X509 *peer = SSL_get0_peer_certificate(c.ssl);
    assert_int_equal(X509_check_host(peer, "my.proj.us-central1.sql.goog", 0, 0, NULL), 1);
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(c.ssl);
    assert_int_equal(sk_X509_num(chain), 3); /* leaf, intermediate, root */
    client_close(&c);
}

/* ---------------- backends ---------------- */

/* Connects with cert, sends first (first_len bytes); expects "PEER <ip>\n" then the echo. */
static void expect_peer(X509 *cert, const uint8_t *first, size_t first_len, const char *ip)
{
    client c;
    cli_opts o = {.cert = cert};
    char line[64], want[64];
    uint8_t echo[256];
    assert_int_equal(client_open(&c, F.tcp, F.ip[3], &o), 0);
    send_all(&c, first, first_len);
    int n = snprintf(want, sizeof(want), "PEER %s\n", ip);
    assert_int_equal(recv_exact(&c, line, (size_t)n), 0);
    line[n] = '\0';
    assert_string_equal(line, want);
    assert_int_equal(recv_exact(&c, echo, first_len), 0);
    assert_memory_equal(echo, first, first_len);
    client_close(&c);
}

/*
 * Only IAM-checked connections come from --backend-source (the address the
 * database trusts without a password); the rest come from the default
 * address and meet the database's password checks.
 */
static void test_backend_source(void **state)
{
    (void)state;
    atomic_store(&bk.mode, BK_PEER);
    expect_peer(F.good, (const uint8_t *)"x", 1, "127.0.0.1");
    X509 *cert = iam_cert(IAM_SA, 600);
    uint8_t pkt[256];
    size_t n = pg_startup(pkt, "sa@p.iam");
    expect_peer(cert, pkt, n, F.ip[4]);
    X509_free(cert);
}

static void test_backend_down_and_stop(void **state)
{
    (void)state;
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/nothing.sock", bk.dir);
    emu_instance *down = instance("down", "POSTGRES_15", F.ip[5], NULL, missing, "legacy", NULL);
    assert_non_null(down);
    client c;
    assert_int_equal(good_client(&c, down, F.ip[5]), 0);
    send_all(&c, "x", 1);
    assert_int_not_equal(recv_end(&c), 0);
    client_close(&c);
    emu_proxy_stats_ext ext;
    for (int i = 0; i < 500; i++) {
        emu_proxy_stats_ext_get(down, &ext);
        if (ext.backend_failed > 0) {
            break;
        }
        sleep_ms(10);
    }
    assert_true(ext.backend_failed == 1);
    emu_proxy_stop(down);
    emu_instance_free(down);

    /* Stop with live connections: they end, the listeners go, stop returns promptly. */
    emu_instance *st = instance("stop", "POSTGRES_15", F.ip[6], NULL, bk.path, "legacy", NULL);
    assert_non_null(st);
    client a[3];
    uint8_t in[2];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(good_client(&a[i], st, F.ip[6]), 0);
        send_all(&a[i], "hi", 2);
        assert_int_equal(recv_exact(&a[i], in, 2), 0);
    }
    client idle; /* mid-handshake: connected, nothing sent */
    idle.fd = tcp_connect(F.ip[6], PORT);
    assert_true(idle.fd >= 0);
    int64_t t0 = now_ms();
    emu_proxy_stop(st);
    assert_true(now_ms() - t0 < 3000);
    assert_null(st->proxy);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(recv_exact(&a[i], in, 1), -1);
        client_close(&a[i]);
    }
    close(idle.fd);
    assert_int_equal(tcp_connect(F.ip[6], PORT), -ECONNREFUSED);
    emu_proxy_stop(st); /* idempotent */
    emu_instance_free(st);
}

/* An IPv6 loopback instance address (on a pid-derived port: ::1 is shared by all tests). */
static void test_ipv6_address(void **state)
{
    (void)state;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int have_v6 = probe >= 0 && bind(probe, (struct sockaddr *)&s6, sizeof(s6)) == 0;
    if (probe >= 0) {
        close(probe);
    }
    if (!have_v6) {
        skip();
    }
    F.port_override = 20000 + (int)(getpid() % 20000);
    emu_instance *v6 = instance("v6", "POSTGRES_15", "::1", NULL, bk.path, "legacy", NULL);
    F.port_override = 0;
    assert_non_null(v6);
    client c;
    cli_opts o = {.cert = F.good, .port = 20000 + (int)(getpid() % 20000)};
    uint8_t in[3];
    assert_int_equal(client_open(&c, v6, "::1", &o), 0);
    send_all(&c, "six", 3);
    assert_int_equal(recv_exact(&c, in, 3), 0);
    assert_memory_equal(in, "six", 3);
    client_close(&c);
    emu_proxy_stop(v6);
    emu_instance_free(v6);
}

static void test_bad_config(void **state)
{
    (void)state;
    char err[256] = "";
    emu_instance *inst = emu_instance_parse(
        "proj:r:bad?version=POSTGRES_15&public-ip=127.0.0.1&backend=/tmp/x.sock", err,
        sizeof(err));
    assert_non_null(inst);
    emu_proxy_config cfg = {.signing_ca = F.ca, .server_port = PORT};
    /* No server identity yet. */
    assert_int_equal(emu_proxy_start(inst, &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "identity"));
    assert_int_equal(emu_instance_rotate_ca(inst, err, sizeof(err)), 0);
    /* Port already taken by the pg instance's address. */
    free(inst->public_ip);
    inst->public_ip = strdup(F.ip[0]);
    assert_int_equal(emu_proxy_start(inst, &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot listen"));
    assert_null(inst->proxy);
    /* Errors from a proxy that is not running. */
    assert_int_equal(emu_proxy_set_refuse(inst, false, err, sizeof(err)), -1);
    emu_proxy_stats s;
    emu_proxy_stats_get(inst, &s);
    assert_true(s.accepted == 0);
    emu_proxy_drop_connections(inst);
    emu_proxy_stop(inst);
    emu_instance_free(inst);
}

/* ---------------- IAM authn ---------------- */

/* A startup packet for user; returns its length. */
static size_t pg_startup(uint8_t *out, const char *user)
{
    size_t n = 8;
    n += (size_t)sprintf((char *)out + n, "user") + 1;
    n += (size_t)sprintf((char *)out + n, "%s", user) + 1;
    n += (size_t)sprintf((char *)out + n, "database") + 1;
    n += (size_t)sprintf((char *)out + n, "postgres") + 1;
    out[n++] = 0;
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    out[4] = 0;
    out[5] = 3;
    out[6] = 0;
    out[7] = 0;
    return n;
}

static X509 *iam_cert(const char *principal, long token_ttl)
{
    uint64_t serial;
    X509 *c = client_cert(F.ca, 3600, &serial);
    assert_non_null(c);
    emu_iam_bind(serial, principal, time(NULL) + token_ttl);
    return c;
}

/* Sends a startup for user with cert; expects it echoed (accepted) or an ErrorResponse. */
static void pg_login(X509 *cert, const char *user, bool accept, const char *msg_fragment)
{
    emu_proxy_stats before;
    stats(F.pg, &before);
    int bk_before = atomic_load(&bk.conns);
    client c;
    cli_opts o = {.cert = cert};
    uint8_t pkt[256], in[512];
    size_t n = pg_startup(pkt, user);
    assert_int_equal(client_open(&c, F.pg, F.ip[0], &o), 0);
    send_all(&c, pkt, n);
    if (accept) {
        assert_int_equal(recv_exact(&c, in, n), 0);
        assert_memory_equal(in, pkt, n);
        client_close(&c);
        return;
    }
    assert_int_equal(recv_exact(&c, in, 5), 0);
    assert_int_equal(in[0], 'E');
    size_t len = (size_t)in[1] << 24 | (size_t)in[2] << 16 | (size_t)in[3] << 8 | in[4];
    assert_true(len > 4 && len - 4 < sizeof(in));
    assert_int_equal(recv_exact(&c, in, len - 4), 0);
    const char *fields = (const char *)in;
    bool fatal = false, code = false, msg = false;
    for (size_t i = 0; i < len - 4 && fields[i] != '\0'; i += strlen(fields + i + 1) + 2) {
        const char *v = fields + i + 1;
        fatal |= fields[i] == 'S' && strcmp(v, "FATAL") == 0;
        code |= fields[i] == 'C' && strcmp(v, "28000") == 0;
        msg |= fields[i] == 'M' && strstr(v, msg_fragment) != NULL;
    }
    assert_true(fatal);
    assert_true(code);
    assert_true(msg);
    assert_int_not_equal(recv_end(&c), 0);
    client_close(&c);
    WAIT_STAT(F.pg, iam_refused, before.iam_refused);
    assert_int_equal(atomic_load(&bk.conns), bk_before);
}

static void test_iam_postgres(void **state)
{
    (void)state;
    X509 *cert = iam_cert(IAM_SA, 600);
    pg_login(cert, "sa@p.iam", true, NULL);
    pg_login(cert, "postgres", false,
             "Cloud SQL IAM user authentication failed for user \"postgres\"");
    /* The MySQL form of the name is not the PostgreSQL one. */
    pg_login(cert, "sa", false, "authentication failed");
    X509_free(cert);

    X509 *expired = iam_cert(IAM_SA, -1);
    pg_login(expired, "sa@p.iam", false, "expired");
    X509_free(expired);

    /* A certificate issued without IAM authn is forwarded whatever the user. */
    pg_login(F.good, "postgres", true, NULL);
}

/* SSLRequest inside the tunnel is answered 'N'; the real startup is then checked. */
static void test_iam_postgres_sslrequest_and_cancel(void **state)
{
    (void)state;
    X509 *cert = iam_cert(IAM_SA, 600);
    client c;
    cli_opts o = {.cert = cert};
    uint8_t sslreq[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}, in[256], pkt[256];
    assert_int_equal(client_open(&c, F.pg, F.ip[0], &o), 0);
    send_all(&c, sslreq, 8);
    assert_int_equal(recv_exact(&c, in, 1), 0);
    assert_int_equal(in[0], 'N');
    size_t n = pg_startup(pkt, "postgres");
    send_all(&c, pkt, n);
    assert_int_equal(recv_exact(&c, in, 1), 0);
    assert_int_equal(in[0], 'E');
    client_close(&c);

    /* A CancelRequest carries no user: forwarded. */
    uint8_t cancel[16] = {0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(client_open(&c, F.pg, F.ip[0], &o), 0);
    send_all(&c, cancel, 16);
    assert_int_equal(recv_exact(&c, in, 16), 0);
    assert_memory_equal(in, cancel, 16);
    client_close(&c);
    X509_free(cert);
}

/* HandshakeResponse41 packet (seq 1) for user; returns its length. */
static size_t mysql_response(uint8_t *p, const char *user)
{
    memset(p, 0, 36);
    uint32_t caps = 0x000aa20f; /* PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH ... no SSL */
    p[4] = (uint8_t)caps;
    p[5] = (uint8_t)(caps >> 8);
    p[6] = (uint8_t)(caps >> 16);
    p[7] = (uint8_t)(caps >> 24);
    p[12] = 33;
    size_t n = 36;
    size_t ul = strlen(user) + 1;
    memcpy(p + n, user, ul);
    n += ul;
    p[n++] = 0; /* empty auth response */
    size_t payload = n - 4;
    p[0] = (uint8_t)payload;
    p[1] = 0;
    p[2] = 0;
    p[3] = 1;
    return n;
}

static void test_iam_mysql(void **state)
{
    (void)state;
    atomic_store(&bk.mode, BK_MYSQL);
    emu_proxy_set_mdx_wait_ms(F.my, 0);
    X509 *cert = iam_cert(IAM_SA, 600);
    cli_opts o = {.cert = cert};
    uint8_t greeting[128], in[256], pkt[128];
    size_t glen = mysql_greeting(greeting);
    client c;

    /* Right user: greeting with CLIENT_SSL cleared, response forwarded. */
    assert_int_equal(client_open(&c, F.my, F.ip[2], &o), 0);
    assert_int_equal(recv_exact(&c, in, glen), 0);
    assert_int_equal(in[4 + 31] & 0x08, 0);
    in[4 + 31] |= 0x08;
    assert_memory_equal(in, greeting, glen);
    size_t n = mysql_response(pkt, "sa");
    send_all(&c, pkt, n);
    assert_int_equal(recv_exact(&c, in, n), 0);
    assert_memory_equal(in, pkt, n);
    client_close(&c);

    /* Wrong user: ERR 1045 with sequence id 2, then the end. */
    emu_proxy_stats before;
    stats(F.my, &before);
    assert_int_equal(client_open(&c, F.my, F.ip[2], &o), 0);
    assert_int_equal(recv_exact(&c, in, glen), 0);
    n = mysql_response(pkt, "root");
    send_all(&c, pkt, n);
    assert_int_equal(recv_exact(&c, in, 4), 0);
    size_t plen = (size_t)in[0] | (size_t)in[1] << 8 | (size_t)in[2] << 16;
    assert_int_equal(in[3], 2);
    assert_true(plen < sizeof(in));
    assert_int_equal(recv_exact(&c, in, plen), 0);
    assert_int_equal(in[0], 0xff);
    assert_int_equal(in[1] | in[2] << 8, 1045);
    assert_memory_equal(in + 3, "#28000", 6);
    in[plen] = '\0';
    assert_non_null(strstr((const char *)in + 9, "Access denied for user 'root'"));
    assert_non_null(strstr((const char *)in + 9, "IAM"));
    assert_int_not_equal(recv_end(&c), 0);
    client_close(&c);
    WAIT_STAT(F.my, iam_refused, before.iam_refused);
    X509_free(cert);

    /* Not bound: greeting untouched, any user forwarded. */
    cli_opts plain = {.cert = F.good};
    assert_int_equal(client_open(&c, F.my, F.ip[2], &plain), 0);
    assert_int_equal(recv_exact(&c, in, glen), 0);
    assert_memory_equal(in, greeting, glen);
    n = mysql_response(pkt, "root");
    send_all(&c, pkt, n);
    assert_int_equal(recv_exact(&c, in, n), 0);
    client_close(&c);
    wait_inactive(F.my);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_echo_sizes, per_test),
        cmocka_unit_test_setup(test_backpressure, per_test),
        cmocka_unit_test_setup(test_backend_reset, per_test),
        cmocka_unit_test_setup(test_client_abort, per_test),
        cmocka_unit_test_setup(test_no_resumption, per_test),
        cmocka_unit_test_setup(test_half_close_client_first, per_test),
        cmocka_unit_test_setup(test_half_close_backend_first, per_test),
        cmocka_unit_test_setup(test_parallel_clients, per_test),
        cmocka_unit_test_setup(test_refuse_no_client_cert, per_test),
        cmocka_unit_test_setup(test_refuse_foreign_ca, per_test),
        cmocka_unit_test_setup(test_refuse_expired_cert, per_test),
        cmocka_unit_test_setup(test_refuse_tls12, per_test),
        cmocka_unit_test_setup(test_handshake_timeout, per_test),
        cmocka_unit_test_setup(test_prelude_timeout, per_test),
        cmocka_unit_test_setup(test_mdx_ok, per_test),
        cmocka_unit_test_setup(test_mdx_split, per_test),
        cmocka_unit_test_setup(test_mdx_error, per_test),
        cmocka_unit_test_setup(test_mdx_mysql, per_test),
        cmocka_unit_test_setup(test_drop_connections, per_test),
        cmocka_unit_test_setup(test_refuse_tcp, per_test),
        cmocka_unit_test_setup(test_rotation, per_test),
        cmocka_unit_test_setup(test_cas_chain, per_test),
        cmocka_unit_test_setup(test_backend_source, per_test),
        cmocka_unit_test_setup(test_backend_down_and_stop, per_test),
        cmocka_unit_test_setup(test_ipv6_address, per_test),
        cmocka_unit_test_setup(test_bad_config, per_test),
        cmocka_unit_test_setup(test_iam_postgres, per_test),
        cmocka_unit_test_setup(test_iam_postgres_sslrequest_and_cancel, per_test),
        cmocka_unit_test_setup(test_iam_mysql, per_test),
    };
    const char *filter = getenv("CSQL_TEST_FILTER"); /* e.g. "test_iam_*" */
    if (filter != NULL && *filter) {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests(tests, setup, teardown);
}
