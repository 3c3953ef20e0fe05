/*
 * SQL Server through csql's local TCP endpoint, with FreeTDS clients.
 * Debian has no SQL Server, so the database behind csql-emulator
 * (version=SQLSERVER_2019_STANDARD) is a scripted TDS 7.4 responder in this
 * test: PRELOGIN (no encryption: the link is already TLS), LOGIN7 (sa /
 * Secret_1, else error 18456), and SQL batches ("select ..." answers one INT
 * column "answer" = 42). FreeTDS's tsql and db-lib (examples/tds_endpoint)
 * talk to it through csql: this proves the forwarding path, not SQL Server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "csql/endpoint.h"
#include "driver_common.h"

#ifndef TDS_ENDPOINT_EXE
#define TDS_ENDPOINT_EXE ""
#endif

static drv_env g_env;

/* ---------------- the scripted TDS backend ---------------- */

enum { TDS_BATCH = 0x01, TDS_REPLY = 0x04, TDS_LOGIN7 = 0x10, TDS_PRELOGIN = 0x12 };

static struct tds_backend {
    int lfd;
    uint16_t port;
    pthread_t thread;
    atomic_int prelogins, logins, batches, conns;
    char last_user[64];
    pthread_mutex_t mu;
} g_tds;

typedef struct tbuf {
    uint8_t b[8192];
    size_t n;
} tbuf;

static void put8(tbuf *t, uint8_t v) { t->b[t->n++] = v; }
static void put16le(tbuf *t, uint16_t v) { put8(t, v & 0xff); put8(t, v >> 8); }
static void put32le(tbuf *t, uint32_t v) { put16le(t, v & 0xffff); put16le(t, v >> 16); }
static void put_ucs2(tbuf *t, const char *s)
{
    for (; *s; s++) {
        put16le(t, (uint8_t)*s);
    }
}
static void put_bvarchar(tbuf *t, const char *s)
{
    put8(t, (uint8_t)strlen(s));
    put_ucs2(t, s);
}

static int read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0) {
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* One TDS message (all packets up to EOM): its type, body in out. */
static int read_message(int fd, uint8_t *type, tbuf *out)
{
    out->n = 0;
    for (int packets = 0; packets < 64; packets++) {
        uint8_t h[8];
        if (read_full(fd, h, 8) != 0) {
            return -1;
        }
        size_t len = ((size_t)h[2] << 8) | h[3];
        if (len < 8 || out->n + len - 8 > sizeof(out->b)) {
            return -1;
        }
        if (read_full(fd, out->b + out->n, len - 8) != 0) {
            return -1;
        }
        out->n += len - 8;
        *type = h[0];
        if (h[1] & 0x01) {
            return 0;
        }
    }
    return -1;
}

static int send_message(int fd, const tbuf *body)
{
    uint8_t h[8] = {TDS_REPLY, 0x01, (uint8_t)((body->n + 8) >> 8), (uint8_t)(body->n + 8), 0, 0,
                    1, 0};
    if (write(fd, h, 8) != 8 || write(fd, body->b, body->n) != (ssize_t)body->n) {
        return -1;
    }
    return 0;
}

static void done_token(tbuf *t, uint16_t status, uint64_t rows)
{
    put8(t, 0xFD);
    put16le(t, status);
    put16le(t, 0xC1); /* curcmd: SELECT */
    put32le(t, (uint32_t)rows);
    put32le(t, (uint32_t)(rows >> 32));
}

static void prelogin_reply(tbuf *t)
{
    /* VERSION at 11 (6 bytes), ENCRYPTION at 17 (1 byte: NOT_SUP), terminator. */
    const uint8_t r[] = {0x00, 0x00, 0x0B, 0x00, 0x06, 0x01, 0x00, 0x11, 0x00, 0x01, 0xFF,
                         0x0F, 0x00, 0x07, 0xD0, 0x00, 0x00, 0x02};
    memcpy(t->b, r, sizeof(r));
    t->n = sizeof(r);
}

/* UCS-2LE at body[off], n characters, to ASCII; `pw` undoes LOGIN7's password scrambling. */
static void ucs2_field(const tbuf *in, size_t off, size_t n, bool pw, char *out, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < len && off + 2 * i + 1 < in->n; i++) {
        uint8_t lo = in->b[off + 2 * i];
        if (pw) {
            lo ^= 0xA5;
            lo = (uint8_t)((lo << 4) | (lo >> 4));
        }
        out[o++] = (char)lo;
    }
    out[o] = '\0';
}

static void login_reply(const tbuf *in, tbuf *t)
{
    char user[64] = "", pass[64] = "";
    if (in->n >= 48) {
        size_t uoff = in->b[40] | (in->b[41] << 8), ulen = in->b[42] | (in->b[43] << 8);
        size_t poff = in->b[44] | (in->b[45] << 8), plen = in->b[46] | (in->b[47] << 8);
        ucs2_field(in, uoff, ulen, false, user, sizeof(user));
        ucs2_field(in, poff, plen, true, pass, sizeof(pass));
    }
    pthread_mutex_lock(&g_tds.mu);
    snprintf(g_tds.last_user, sizeof(g_tds.last_user), "%s", user);
    pthread_mutex_unlock(&g_tds.mu);
    t->n = 0;
    if (strcmp(user, "sa") != 0 || strcmp(pass, "Secret_1") != 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "Login failed for user '%s'.", user);
        tbuf e = {.n = 0};
        put32le(&e, 18456);
        put8(&e, 1);  /* state */
        put8(&e, 14); /* class */
        put16le(&e, (uint16_t)strlen(msg));
        put_ucs2(&e, msg);
        put_bvarchar(&e, "scripted");
        put_bvarchar(&e, "");
        put32le(&e, 1);
        put8(t, 0xAA);
        put16le(t, (uint16_t)e.n);
        memcpy(t->b + t->n, e.b, e.n);
        t->n += e.n;
        done_token(t, 0x0002, 0);
        return;
    }
    /* LOGINACK: interface 1, TDS 7.4, program name, version. */
    const char *prog = "Scripted SQL Server";
    put8(t, 0xAD);
    put16le(t, (uint16_t)(1 + 4 + 1 + 2 * strlen(prog) + 4));
    put8(t, 1);
    put8(t, 0x74);
    put8(t, 0x00);
    put8(t, 0x00);
    put8(t, 0x04);
    put_bvarchar(t, prog);
    put8(t, 15);
    put8(t, 0);
    put8(t, 0x07);
    put8(t, 0xD0);
    done_token(t, 0x0000, 0);
}

static void batch_reply(const tbuf *in, tbuf *t)
{
    char sql[512];
    size_t skip = in->n >= 4 ? (in->b[0] | (in->b[1] << 8) | (in->b[2] << 16)) : 0; /* ALL_HEADERS */
    if (skip > in->n) {
        skip = in->n;
    }
    ucs2_field(in, skip, (in->n - skip) / 2, false, sql, sizeof(sql));
    for (char *p = sql; *p; p++) {
        *p = (char)tolower((unsigned char)*p);
    }
    t->n = 0;
    if (strstr(sql, "select") == NULL) {
        done_token(t, 0x0000, 0);
        return;
    }
    put8(t, 0x81); /* COLMETADATA: one INT4 column "answer" */
    put16le(t, 1);
    put32le(t, 0);    /* user type */
    put16le(t, 0x09); /* flags: nullable unknown, updatable no */
    put8(t, 0x38);    /* INT4 */
    put_bvarchar(t, "answer");
    put8(t, 0xD1); /* ROW */
    put32le(t, 42);
    done_token(t, 0x0010, 1);
}

static void *tds_conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    tbuf in, out;
    uint8_t type;
    for (int i = 0; i < 1000 && read_message(fd, &type, &in) == 0; i++) {
        if (type == TDS_PRELOGIN) {
            atomic_fetch_add(&g_tds.prelogins, 1);
            prelogin_reply(&out);
        } else if (type == TDS_LOGIN7) {
            atomic_fetch_add(&g_tds.logins, 1);
            login_reply(&in, &out);
        } else if (type == TDS_BATCH) {
            atomic_fetch_add(&g_tds.batches, 1);
            batch_reply(&in, &out);
        } else {
            break;
        }
        if (send_message(fd, &out) != 0) {
            break;
        }
    }
    close(fd);
    return NULL;
}

static void *tds_accept_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(g_tds.lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            return NULL; /* listener shut down */
        }
        atomic_fetch_add(&g_tds.conns, 1);
        pthread_t t;
        pthread_create(&t, NULL, tds_conn_main, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static int tds_backend_start(void)
{
    pthread_mutex_init(&g_tds.mu, NULL);
    g_tds.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (bind(g_tds.lfd, (struct sockaddr *)&sa, sl) != 0 || listen(g_tds.lfd, 64) != 0 ||
        getsockname(g_tds.lfd, (struct sockaddr *)&sa, &sl) != 0) {
        return -1;
    }
    g_tds.port = ntohs(sa.sin_port);
    return pthread_create(&g_tds.thread, NULL, tds_accept_main, NULL);
}

static void tds_backend_stop(void)
{
    shutdown(g_tds.lfd, SHUT_RDWR);
    pthread_join(g_tds.thread, NULL);
    close(g_tds.lfd);
}

/* ---------------- fixture ---------------- */

static int group_setup(void **state)
{
    (void)state;
    if (tds_backend_start() != 0) {
        return -1;
    }
    char ss[256];
    snprintf(ss, sizeof(ss),
             "p:r:ss?version=SQLSERVER_2019_STANDARD&public-ip=%%IP0%%&backend=127.0.0.1:%u",
             g_tds.port);
    const char *specs[] = {ss, NULL};
    if (drv_start(&g_env, specs, NULL) != 0) {
        tds_backend_stop();
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    drv_stop(&g_env);
    tds_backend_stop();
    return 0;
}

typedef struct errors_seen {
    pthread_mutex_t mu;
    int n;
    int code;
    char message[300];
} errors_seen;

static void on_error(const csql_error *err, void *userdata)
{
    errors_seen *s = userdata;
    pthread_mutex_lock(&s->mu);
    s->n++;
    s->code = err->code;
    snprintf(s->message, sizeof(s->message), "%s", err->message);
    pthread_mutex_unlock(&s->mu);
}

/* Run tsql against the endpoint with `input` on stdin; its output (stdout+stderr) in out. */
static int run_tsql(uint16_t port, const char *password, const char *input, char *out, size_t len)
{
    return csqlt_sh(out, len,
                    "printf '%s' | TDSVER=7.4 timeout 30 tsql -H 127.0.0.1 -p %u -U sa -P '%s' 2>&1",
                    input, port, password);
}

/* ---------------- tests ---------------- */

static void test_tsql_query_through_endpoint(void **state)
{
    (void)state;
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_tcp(&ep, g_env.d, "p:r:ss", NULL, 0, NULL), 0);
    char out[4096];
    run_tsql(csql_endpoint_port(ep), "Secret_1", "select 42\\ngo\\nexit\\n", out, sizeof(out));
    fprintf(stderr, "tsql says:\n%s\n", out);
    assert_non_null(strstr(out, "answer"));
    assert_non_null(strstr(out, "42"));
    assert_true(atomic_load(&g_tds.prelogins) >= 1);
    assert_true(atomic_load(&g_tds.logins) >= 1);
    assert_true(atomic_load(&g_tds.batches) >= 1);
    pthread_mutex_lock(&g_tds.mu);
    assert_string_equal(g_tds.last_user, "sa");
    pthread_mutex_unlock(&g_tds.mu);
    csql_endpoint_close(ep);
}

static void test_tsql_wrong_password_is_the_server_error(void **state)
{
    (void)state;
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_tcp(&ep, g_env.d, "p:r:ss", NULL, 0, NULL), 0);
    char out[4096];
    run_tsql(csql_endpoint_port(ep), "wrong", "exit\\n", out, sizeof(out));
    assert_non_null(strstr(out, "Login failed for user 'sa'"));
    csql_endpoint_close(ep);
}

static void test_dblib_example(void **state)
{
    (void)state;
    if (TDS_ENDPOINT_EXE[0] == '\0') {
        skip();
    }
    char out[4096];
    int rc = csqlt_sh(out, sizeof(out),
                      "CSQL_API_ENDPOINT='%s' CSQL_TOKEN='%s' timeout 60 '%s' p:r:ss --query sa "
                      "Secret_1 'select 42' 2>&1",
                      g_env.em.url, DRV_TOKEN, TDS_ENDPOINT_EXE);
    fprintf(stderr, "tds_endpoint --query says: %s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "42"));
    rc = csqlt_sh(out, sizeof(out),
                  "CSQL_API_ENDPOINT='%s' CSQL_TOKEN='%s' timeout 60 '%s' p:r:nope --query sa x "
                  "'select 1' 2>&1",
                  g_env.em.url, DRV_TOKEN, TDS_ENDPOINT_EXE);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "dial failed:")); /* the dial error, through on_error */
    assert_non_null(strstr(out, "does not exist"));
}

static void test_instance_down_reported_per_connection(void **state)
{
    (void)state;
    errors_seen seen = {.mu = PTHREAD_MUTEX_INITIALIZER};
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.on_error = on_error;
    o.userdata = &seen;
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_tcp(&ep, g_env.d, "p:r:ss", NULL, 0, &o), 0);
    assert_int_equal(drv_refuse_tcp(&g_env, "p:r:ss", 1), 200);
    char out[4096];
    run_tsql(csql_endpoint_port(ep), "Secret_1", "exit\\n", out, sizeof(out));
    assert_int_equal(drv_refuse_tcp(&g_env, "p:r:ss", 0), 200);
    csql_endpoint_close(ep);
    pthread_mutex_lock(&seen.mu);
    assert_true(seen.n >= 1);
    assert_int_equal(seen.code, CSQL_ERR_CONNECT);
    fprintf(stderr, "on_error: %s\n", seen.message);
    assert_non_null(strstr(seen.message, "p:r:ss"));
    pthread_mutex_unlock(&seen.mu);
}

static void test_sqlserver_iam_is_an_error(void **state)
{
    (void)state;
    errors_seen seen = {.mu = PTHREAD_MUTEX_INITIALIZER};
    csql_dial_options dial = CSQL_DIAL_OPTIONS_INIT;
    dial.iam_authn = 1;
    csql_endpoint_options o = CSQL_ENDPOINT_OPTIONS_INIT;
    o.dial = &dial;
    o.on_error = on_error;
    o.userdata = &seen;
    csql_endpoint *ep;
    assert_int_equal(csql_endpoint_open_tcp(&ep, g_env.d, "p:r:ss", NULL, 0, &o), 0);
    char out[4096];
    run_tsql(csql_endpoint_port(ep), "Secret_1", "exit\\n", out, sizeof(out));
    csql_endpoint_close(ep);
    pthread_mutex_lock(&seen.mu);
    assert_true(seen.n >= 1);
    assert_int_equal(seen.code, CSQL_ERR_IAM_UNSUPPORTED);
    pthread_mutex_unlock(&seen.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tsql_query_through_endpoint),
        cmocka_unit_test(test_tsql_wrong_password_is_the_server_error),
        cmocka_unit_test(test_dblib_example),
        cmocka_unit_test(test_instance_down_reported_per_connection),
        cmocka_unit_test(test_sqlserver_iam_is_an_error),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
