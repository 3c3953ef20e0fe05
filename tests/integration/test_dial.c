/*
 * csql_dial end to end: csql-emulator (SQL Admin API + server-side proxy) in
 * front of a real PostgreSQL and MariaDB, with unmodified libpq and
 * libmariadb sessions running through csql connections (tests/support
 * bridge). Covers every IP type, IAM authn, short-lived certificates under
 * load, the Admin API failing while a certificate is cached, CA rotation,
 * clock jumps, a 429 storm, refused TCP, closing, and 32 threads at once.
 * Each test makes its own dialer, so caches never leak between tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <mysql.h>
#include <openssl/ssl.h>

#include "bridge.h"
#include "csql/csql.h"
#include "support.h"
#include "util/clock.h"

#define TOKEN "static-token-for-dial-tests"
#define PRINCIPAL "static-user@emulator.iam.gserviceaccount.com"
#define REGION "us-central1"
#define I_PG "p:" REGION ":pg"
#define I_MY "p:" REGION ":my"
#define I_PRIV "p:" REGION ":priv"
#define I_CAS "p:" REGION ":cas"
#define I_MSSQL "p:" REGION ":mssql"
#define I_REFUSE "p:" REGION ":refuse"
#define I_ROT "p:" REGION ":rot"
#define I_STORM "p:" REGION ":storm"
#define I_DOWN "p:" REGION ":down"
#define I_SHORT "p:" REGION ":short"
#define I_JUMP "p:" REGION ":jump"

static csqlt_emulator g_em;
static csqlt_pg g_pg;
static csqlt_my g_my;
static char g_src[32];   /* the emulator's backend source address (IAM users' host) */
static uint16_t g_port;  /* server-side proxy port, unique to this process */
static int g_soak_s = 60;

/* ---------------- setup ---------------- */

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return 0;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static int group_setup(void **state)
{
    (void)state;
    const char *soak = getenv("CSQL_TEST_SOAK_S");
    if (soak != NULL && atoi(soak) > 0) {
        g_soak_s = atoi(soak);
    }
    csqlt_unique_ip(200, g_src, sizeof(g_src));
    if (csqlt_pg_start(&g_pg, g_src) != 0 || csqlt_my_start(&g_my, g_src) != 0) {
        return -1;
    }
    /* IAM database users for the static token's principal (csql_iam_db_user's names). */
    if (csqlt_sh(NULL, 0,
                 "psql -q -h '%s' -p %d -U postgres -d postgres -c "
                 "'CREATE ROLE \"static-user@emulator.iam\" LOGIN SUPERUSER' >/dev/null 2>&1",
                 g_pg.sockdir, g_pg.port) != 0 ||
        csqlt_sh(NULL, 0,
                 "mariadb --no-defaults --socket='%s' -uroot -e \"CREATE USER "
                 "'static-user'@'%s'; GRANT ALL ON *.* TO 'static-user'@'%s';\"",
                 g_my.socket, g_src, g_src) != 0) {
        fprintf(stderr, "test_dial: could not create the IAM database users\n");
        return -1;
    }
    g_port = free_port();
    char ip[16][32];
    for (int i = 0; i < 16; i++) {
        csqlt_unique_ip(201 + i, ip[i], sizeof(ip[i]));
    }
    char pgb[64], myb[64], port[16];
    snprintf(pgb, sizeof(pgb), "127.0.0.1:%d", g_pg.port);
    snprintf(myb, sizeof(myb), "127.0.0.1:%d", g_my.port);
    snprintf(port, sizeof(port), "%u", (unsigned)g_port);
    char spec[16][512];
    int n = 0;
#define SPEC(...) snprintf(spec[n++], sizeof(spec[0]), __VA_ARGS__)
    SPEC(I_PG "?version=POSTGRES_15&public-ip=%s&private-ip=%s&psc-dns=localhost&backend=%s",
         ip[0], ip[1], pgb);
    SPEC(I_MY "?version=MYSQL_8_0&public-ip=%s&private-ip=%s&backend=%s", ip[2], ip[3], myb);
    SPEC(I_PRIV "?version=POSTGRES_15&private-ip=%s&backend=%s", ip[4], pgb);
    SPEC(I_CAS "?version=POSTGRES_15&public-ip=%s&ca-mode=cas&backend=%s/.s.PGSQL.%d", ip[5],
         g_pg.sockdir, g_pg.port);
    SPEC(I_MSSQL "?version=SQLSERVER_2019_STANDARD&public-ip=%s&backend=127.0.0.1:1", ip[6]);
    SPEC(I_REFUSE "?version=POSTGRES_15&public-ip=%s&backend=%s", ip[7], pgb);
    SPEC(I_ROT "?version=POSTGRES_15&public-ip=%s&backend=%s", ip[8], pgb);
    SPEC(I_STORM "?version=POSTGRES_15&public-ip=%s&backend=%s", ip[9], pgb);
    SPEC(I_DOWN "?version=POSTGRES_15&public-ip=%s&backend=%s", ip[10], pgb);
    SPEC(I_SHORT "?version=POSTGRES_15&public-ip=%s&backend=%s", ip[11], pgb);
    SPEC(I_JUMP "?version=POSTGRES_15&public-ip=%s&backend=%s", ip[12], pgb);
#undef SPEC
    const char *argv[2 * 16 + 8];
    int a = 0;
    for (int i = 0; i < n; i++) {
        argv[a++] = "--instance";
        argv[a++] = spec[i];
    }
    argv[a++] = "--static-token";
    argv[a++] = TOKEN;
    argv[a++] = "--backend-source";
    argv[a++] = g_src;
    argv[a++] = "--server-port";
    argv[a++] = port;
    argv[a] = NULL;
    if (csqlt_emulator_start(&g_em, 0, argv) != 0) {
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    csql__clock_set_offset_s(0);
    int rc = csqlt_emulator_stop(&g_em);
    csqlt_pg_stop(&g_pg);
    csqlt_my_stop(&g_my);
    return rc == 0 ? 0 : -1;
}

static int test_setup(void **state)
{
    (void)state;
    csql__clock_set_offset_s(0);
    csql_error_clear();
    csqlt_emulator_admin(&g_em, "DELETE", "/emulator/faults", NULL);
    csqlt_emulator_admin(&g_em, "POST", "/emulator/cert-lifetime", "{\"seconds\":3600}");
    return 0;
}

/* ---------------- helpers ---------------- */

/* Bridges started by the current test; the teardown stops any an assertion left running. */
#define MAX_BRIDGES 8
static csqlt_bridge *g_bridges[MAX_BRIDGES];

static int bridge_start(csqlt_bridge **out, const char *sock_name, csqlt_bridge_dial_fn dial,
                        void *arg)
{
    int rc = csqlt_bridge_start(out, sock_name, dial, arg);
    for (int i = 0; rc == 0 && i < MAX_BRIDGES; i++) {
        if (g_bridges[i] == NULL) {
            g_bridges[i] = *out;
            break;
        }
    }
    return rc;
}

static void bridge_stop(csqlt_bridge *b)
{
    for (int i = 0; i < MAX_BRIDGES; i++) {
        if (g_bridges[i] == b) {
            g_bridges[i] = NULL;
        }
    }
    csqlt_bridge_stop(b);
}

static int test_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_BRIDGES; i++) {
        if (g_bridges[i] != NULL) {
            csqlt_bridge_stop(g_bridges[i]);
            g_bridges[i] = NULL;
        }
    }
    csql__clock_set_offset_s(0);
    return 0;
}

static void log_to_stderr(csql_log_level level, const char *line, void *ud)
{
    (void)ud;
    fprintf(stderr, "[csql %d] %s\n", (int)level, line);
}

typedef struct dopts {
    csql_refresh_strategy strategy;
    int iam;
    uint32_t dial_timeout_ms;
    uint32_t refresh_timeout_ms;
    const char *token;
} dopts;

static csql_dialer *mkdialer_with(const dopts *o)
{
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    assert_int_equal(csql_config_set_token(cfg, o->token ? o->token : TOKEN), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, g_em.url), 0);
    assert_int_equal(csql_config_set_server_port(cfg, g_port), 0);
    assert_int_equal(csql_config_set_refresh_strategy(cfg, o->strategy), 0);
    assert_int_equal(csql_config_set_iam_authn(cfg, o->iam), 0);
    assert_int_equal(csql_config_set_user_agent(cfg, "test_dial"), 0);
    if (o->dial_timeout_ms) {
        assert_int_equal(csql_config_set_dial_timeout_ms(cfg, o->dial_timeout_ms), 0);
    }
    if (o->refresh_timeout_ms) {
        assert_int_equal(csql_config_set_refresh_timeout_ms(cfg, o->refresh_timeout_ms), 0);
    }
    if (getenv("CSQL_TEST_LOG") != NULL) {
        assert_int_equal(csql_config_set_log(cfg, log_to_stderr, NULL, CSQL_LOG_DEBUG), 0);
    }
    csql_dialer *d = NULL;
    assert_int_equal(csql_dialer_new(&d, cfg), 0);
    csql_config_free(cfg);
    return d;
}

static csql_dialer *mkdialer(csql_refresh_strategy s, int iam)
{
    dopts o = {.strategy = s, .iam = iam};
    return mkdialer_with(&o);
}

static csql_dial_options ipopt(csql_ip_type t)
{
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.ip_type = t;
    return o;
}

/* The emulator's per-instance count for an endpoint, or the proxy's "accepted" (endpoint NULL). */
static long counter(const char *endpoint, const char *instance)
{
    char url[256];
    long status = 0;
    char *body = NULL;
    snprintf(url, sizeof(url), "%s/emulator/counters", g_em.url);
    assert_int_equal(csqlt_http("GET", url, NULL, NULL, &status, &body), 0);
    assert_int_equal(status, 200);
    json_t *j = json_loads(body, 0, NULL);
    free(body);
    assert_non_null(j);
    json_t *v = endpoint ? json_object_get(
                               json_object_get(json_object_get(json_object_get(j, "endpoints"),
                                                               endpoint),
                                               "instances"),
                               instance)
                         : json_object_get(json_object_get(json_object_get(j, "proxy"), instance),
                                           "accepted");
    long n = json_is_integer(v) ? (long)json_integer_value(v) : 0;
    json_decref(j);
    return n;
}

static void admin(const char *method, const char *path, const char *json)
{
    long st = csqlt_emulator_admin(&g_em, method, path, json);
    if (st != 200) {
        fprintf(stderr, "emulator %s %s %s -> %ld\n", method, path, json ? json : "", st);
    }
    assert_int_equal(st, 200);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* What a bridge dials for each accepted client. */
typedef struct target {
    csql_dialer *d;
    const char *instance;
    csql_dial_options o;
} target;

static int target_dial(void *arg, csql_conn **out)
{
    target *t = arg;
    return csql_dial(t->d, t->instance, &t->o, out);
}

/* One libpq session through the bridge: connect, check identity and a computed value. */
static int pg_session(const csqlt_bridge *b, const char *user, int queries)
{
    char conninfo[512];
    snprintf(conninfo, sizeof(conninfo),
             "host=%s port=5432 user='%s' password=secret dbname=postgres sslmode=disable "
             "connect_timeout=30",
             csqlt_bridge_dir(b), user);
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "libpq: %s\n", PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    int ok = 0;
    for (int i = 0; i < queries && ok == 0; i++) {
        PGresult *r = PQexec(pg, "SELECT current_user, 6 * 7, repeat('x', 10000)");
        if (PQresultStatus(r) != PGRES_TUPLES_OK || strcmp(PQgetvalue(r, 0, 0), user) != 0 ||
            strcmp(PQgetvalue(r, 0, 1), "42") != 0 || strlen(PQgetvalue(r, 0, 2)) != 10000) {
            fprintf(stderr, "libpq query: %s\n", PQerrorMessage(pg));
            ok = -1;
        }
        PQclear(r);
    }
    PQfinish(pg);
    return ok;
}

static int my_session(const csqlt_bridge *b, const char *user, const char *pass, int queries)
{
    MYSQL *m = mysql_init(NULL);
    unsigned int timeout = 30;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (mysql_real_connect(m, NULL, user, pass, NULL, 0, csqlt_bridge_path(b), 0) == NULL) {
        fprintf(stderr, "libmariadb: %s\n", mysql_error(m));
        mysql_close(m);
        return -1;
    }
    int ok = 0;
    for (int i = 0; i < queries && ok == 0; i++) {
        if (mysql_query(m, "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), 6 * 7") != 0) {
            fprintf(stderr, "libmariadb query: %s\n", mysql_error(m));
            ok = -1;
            break;
        }
        MYSQL_RES *res = mysql_store_result(m);
        MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
        if (row == NULL || strcmp(row[0], user) != 0 || strcmp(row[1], "42") != 0) {
            ok = -1;
        }
        mysql_free_result(res);
    }
    mysql_close(m);
    return ok;
}

/* ---------------- tests ---------------- */

static void test_pg_every_ip_type(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    const csql_ip_type types[] = {CSQL_IP_PUBLIC, CSQL_IP_PRIVATE, CSQL_IP_PSC, CSQL_IP_AUTO,
                                  CSQL_IP_DEFAULT};
    long before = counter(NULL, I_PG);
    long certs_before = counter("generateEphemeralCert", I_PG);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        target t = {d, I_PG, ipopt(types[i])};
        csqlt_bridge *b = NULL;
        assert_int_equal(bridge_start(&b, ".s.PGSQL.5432", target_dial, &t), 0);
        assert_int_equal(pg_session(b, "postgres", 3), 0);
        assert_int_equal(csqlt_bridge_dial_failures(b, NULL), 0);
        bridge_stop(b);
    }
    assert_int_equal(counter(NULL, I_PG) - before, 5);
    /* One certificate served all five dials. */
    assert_int_equal(counter("generateEphemeralCert", I_PG) - certs_before, 1);

    /* A direct conn: TLS 1.3, the instance name, and the half-close API. */
    csql_conn *c = NULL;
    assert_int_equal(csql_dial(d, I_PG, NULL, &c), 0);
    assert_string_equal(SSL_get_version(csql_conn_ssl(c)), "TLSv1.3");
    assert_string_equal(csql_conn_instance(c), I_PG);
    assert_true(csql_conn_fd(c) >= 0);
    csql_conn_close(c);
    csql_dialer_free(d);
}

static void test_cas_instance_with_unix_socket_backend(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_LAZY, 0);
    target t = {d, I_CAS, ipopt(CSQL_IP_DEFAULT)};
    csqlt_bridge *b = NULL;
    assert_int_equal(bridge_start(&b, ".s.PGSQL.5432", target_dial, &t), 0);
    assert_int_equal(pg_session(b, "postgres", 2), 0);
    bridge_stop(b);
    csql_dialer_free(d);
}

static void test_mysql_sessions(void **state)
{
    (void)state;
    for (int s = CSQL_REFRESH_BACKGROUND; s <= CSQL_REFRESH_LAZY; s++) {
        csql_dialer *d = mkdialer((csql_refresh_strategy)s, 0);
        target t = {d, I_MY, ipopt(s == CSQL_REFRESH_LAZY ? CSQL_IP_PRIVATE : CSQL_IP_PUBLIC)};
        csqlt_bridge *b = NULL;
        assert_int_equal(bridge_start(&b, "mysql.sock", target_dial, &t), 0);
        assert_int_equal(my_session(b, "app", "secret", 3), 0);
        assert_int_equal(my_session(b, "app", "secret", 1), 0);
        bridge_stop(b);
        csql_dialer_free(d);
    }
}

static void test_auto_and_missing_ip_types(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    csql_conn *c = NULL;
    csql_dial_options o = ipopt(CSQL_IP_AUTO);
    /* No public IP: AUTO takes the private one. */
    assert_int_equal(csql_dial(d, I_PRIV, &o, &c), 0);
    csql_conn_close(c);
    c = NULL;
    o = ipopt(CSQL_IP_PUBLIC);
    assert_int_equal(csql_dial(d, I_PRIV, &o, &c), CSQL_ERR_NO_IP_TYPE);
    assert_null(c);
    const char *msg = csql_error_last()->message;
    assert_non_null(strstr(msg, I_PRIV));
    assert_non_null(strstr(msg, "public IP"));
    assert_non_null(strstr(msg, "PRIVATE"));
    o = ipopt(CSQL_IP_PSC);
    assert_int_equal(csql_dial(d, I_PRIV, &o, &c), CSQL_ERR_NO_IP_TYPE);
    assert_non_null(strstr(csql_error_last()->message, "PSC"));
    assert_int_equal(csql_err_category_of(CSQL_ERR_NO_IP_TYPE), CSQL_CAT_CONFIG);
    csql_dialer_free(d);
}

static void test_instance_info_and_warmup(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    long certs_before = counter("generateEphemeralCert", I_MY);
    assert_int_equal(csql_dialer_warmup(d, I_MY, NULL, 0), 0);
    assert_int_equal(csql_dialer_warmup(d, I_MY, NULL, 1), 0);
    csql_instance_info *info = NULL;
    assert_int_equal(csql_dialer_instance_info(d, I_MY, NULL, &info), 0);
    assert_string_equal(csql_instance_info_database_version(info), "MYSQL_8_0");
    assert_string_equal(csql_instance_info_region(info), REGION);
    assert_non_null(csql_instance_info_address(info, CSQL_IP_PUBLIC));
    assert_non_null(csql_instance_info_address(info, CSQL_IP_PRIVATE));
    assert_null(csql_instance_info_address(info, CSQL_IP_PSC));
    assert_string_equal(csql_instance_info_address(info, CSQL_IP_AUTO),
                        csql_instance_info_address(info, CSQL_IP_PUBLIC));
    int64_t left = csql_instance_info_cert_expiry(info) - (int64_t)time(NULL);
    assert_true(left > 3500 && left <= 3600);
    csql_instance_info_free(info);
    /* Warm-up and info used the same single refresh. */
    assert_int_equal(counter("generateEphemeralCert", I_MY) - certs_before, 1);

    assert_int_equal(csql_dialer_instance_info(d, I_PG, NULL, &info), 0);
    assert_string_equal(csql_instance_info_address(info, CSQL_IP_PSC), "localhost");
    csql_instance_info_free(info);
    csql_dialer_free(d);
}

static void test_api_errors_reach_the_dialer(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    csql_conn *c = NULL;
    assert_int_equal(csql_dial(d, "p:" REGION ":nope", NULL, &c), CSQL_ERR_NOT_FOUND);
    assert_non_null(strstr(csql_error_last()->message, "p:" REGION ":nope"));
    assert_int_equal(csql_error_last()->http_status, 404);
    assert_int_equal(csql_dial(d, "p:europe-west1:pg", NULL, &c), CSQL_ERR_REGION_MISMATCH);
    assert_non_null(strstr(csql_error_last()->message, "europe-west1"));
    assert_non_null(strstr(csql_error_last()->message, REGION));
    csql_dialer_free(d);

    /* A token the API does not accept. */
    dopts bad = {.strategy = CSQL_REFRESH_LAZY, .token = "not-the-emulator-token"};
    d = mkdialer_with(&bad);
    int rc = csql_dial(d, I_PG, NULL, &c);
    assert_int_equal(rc, CSQL_ERR_PERMISSION_DENIED);
    assert_int_equal(csql_error_last()->category, CSQL_CAT_AUTH);
    assert_null(strstr(csql_error_last()->message, "not-the-emulator-token"));
    csql_dialer_free(d);

    /* A 4xx the API answers that is not retried. */
    d = mkdialer(CSQL_REFRESH_LAZY, 0);
    admin("POST", "/emulator/faults",
          "{\"endpoint\":\"connectSettings\",\"instance\":\"" I_DOWN "\",\"status\":400,"
          "\"count\":1}");
    assert_int_equal(csql_dial(d, I_DOWN, NULL, &c), CSQL_ERR_API);
    assert_int_equal(csql_error_last()->http_status, 400);
    csql_dialer_free(d);

    /* IAM authn on SQL Server. */
    d = mkdialer(CSQL_REFRESH_LAZY, 1);
    assert_int_equal(csql_dial(d, I_MSSQL, NULL, &c), CSQL_ERR_IAM_UNSUPPORTED);
    assert_non_null(strstr(csql_error_last()->message, I_MSSQL));
    csql_dialer_free(d);
}

static void test_iam_authn_sessions(void **state)
{
    (void)state;
    char pguser[128], myuser[128];
    assert_int_equal(csql_iam_db_user("POSTGRES_15", PRINCIPAL, pguser, sizeof(pguser)), 0);
    assert_int_equal(csql_iam_db_user("MYSQL_8_0", PRINCIPAL, myuser, sizeof(myuser)), 0);
    assert_string_equal(pguser, "static-user@emulator.iam");
    assert_string_equal(myuser, "static-user");

    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 1);
    target tp = {d, I_PG, ipopt(CSQL_IP_DEFAULT)};
    csqlt_bridge *b = NULL;
    assert_int_equal(bridge_start(&b, ".s.PGSQL.5432", target_dial, &tp), 0);
    assert_int_equal(pg_session(b, pguser, 2), 0);
    bridge_stop(b);

    target tm = {d, I_MY, ipopt(CSQL_IP_DEFAULT)};
    assert_int_equal(bridge_start(&b, "mysql.sock", target_dial, &tm), 0);
    assert_int_equal(my_session(b, myuser, "", 2), 0);
    bridge_stop(b);

    /* An IAM certificate logs in as its principal's user only. */
    assert_int_equal(bridge_start(&b, ".s.PGSQL.5432", target_dial, &tp), 0);
    assert_int_not_equal(pg_session(b, "postgres", 1), 0);
    bridge_stop(b);

    /* A per-dial override: the same dialer without IAM, as a password user. */
    tp.o.iam_authn = 0;
    assert_int_equal(bridge_start(&b, ".s.PGSQL.5432", target_dial, &tp), 0);
    assert_int_equal(pg_session(b, "postgres", 1), 0);
    bridge_stop(b);
    csql_dialer_free(d);
}

typedef struct soak {
    csql_dialer *d;
    csqlt_bridge *b;
    int64_t until;
    atomic_int ok, failed;
} soak;

static void *soak_main(void *arg)
{
    soak *s = arg;
    while (csql__mono_ms() < s->until) {
        if (pg_session(s->b, "postgres", 2) == 0) {
            atomic_fetch_add(&s->ok, 1);
        } else {
            atomic_fetch_add(&s->failed, 1);
        }
        sleep_ms(100);
    }
    return NULL;
}

static void test_short_certificates_under_load(void **state)
{
    (void)state;
    admin("POST", "/emulator/cert-lifetime", "{\"seconds\":20}");
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    target t = {d, I_SHORT, ipopt(CSQL_IP_DEFAULT)};
    csqlt_bridge *b = NULL;
    assert_int_equal(bridge_start(&b, ".s.PGSQL.5432", target_dial, &t), 0);
    enum { N = 4 };
    soak s = {.d = d, .b = b, .until = csql__mono_ms() + g_soak_s * 1000};
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, soak_main, &s), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
    }
    long certs = counter("generateEphemeralCert", I_SHORT);
    fprintf(stderr, "short certificates: %d sessions ok, %d failed, %ld certificates in %d s\n",
            atomic_load(&s.ok), atomic_load(&s.failed), certs, g_soak_s);
    assert_int_equal(atomic_load(&s.failed), 0);
    assert_true(atomic_load(&s.ok) >= N * 5);
    /* Several generations of 20 s certificates, but never more than the limiter allows. */
    assert_true(certs >= 2 + (g_soak_s - 1) / 30);
    assert_true(certs <= 2 + g_soak_s / 30 + 1);
    bridge_stop(b);
    csql_dialer_free(d);
}

static void test_admin_api_down_while_cert_is_valid(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    csql_conn *c = NULL;
    assert_int_equal(csql_dial(d, I_DOWN, NULL, &c), 0);
    csql_conn_close(c);
    admin("POST", "/emulator/faults",
          "{\"endpoint\":\"connectSettings\",\"status\":503,\"count\":100000}");
    admin("POST", "/emulator/faults",
          "{\"endpoint\":\"generateEphemeralCert\",\"status\":503,\"count\":100000}");
    for (int i = 0; i < 10; i++) {
        c = NULL;
        assert_int_equal(csql_dial(d, I_DOWN, NULL, &c), 0);
        csql_conn_close(c);
    }
    /* An instance never fetched has no certificate to fall back on: the dial times out. */
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.timeout_ms = 1500;
    int64_t t0 = csql__mono_ms();
    assert_int_equal(csql_dial(d, I_PG, &o, &c), CSQL_ERR_TIMEOUT);
    assert_true(csql__mono_ms() - t0 < 4000);
    assert_non_null(strstr(csql_error_last()->message, I_PG));
    admin("DELETE", "/emulator/faults", NULL);
    csql_dialer_free(d);
}

static void test_ca_rotation_recovers_without_restart(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    target t = {d, I_ROT, ipopt(CSQL_IP_DEFAULT)};
    csqlt_bridge *b = NULL;
    assert_int_equal(bridge_start(&b, ".s.PGSQL.5432", target_dial, &t), 0);
    assert_int_equal(pg_session(b, "postgres", 1), 0);
    long certs = counter("generateEphemeralCert", I_ROT);
    admin("POST", "/emulator/instances/" I_ROT "/rotate-ca", "{}");
    /* The first dial may meet the new server certificate with the old CA; dials then recover. */
    int failures = 0, ok = 0;
    for (int i = 0; i < 5; i++) {
        if (pg_session(b, "postgres", 1) == 0) {
            ok++;
        } else {
            failures++;
        }
    }
    int last = 0;
    int dial_failures = csqlt_bridge_dial_failures(b, &last);
    fprintf(stderr, "rotation: %d ok, %d failed (last dial error %d)\n", ok, failures, last);
    assert_true(failures <= 1);
    assert_true(ok >= 4);
    assert_true(dial_failures == 0 || last == CSQL_ERR_TLS_VERIFY ||
                last == CSQL_ERR_TLS_HANDSHAKE);
    assert_int_equal(counter("generateEphemeralCert", I_ROT), certs + 1);

    /* Connections cut under a live session: the client sees an error, new sessions work. */
    csql_conn *c = NULL;
    assert_int_equal(csql_dial(d, I_ROT, NULL, &c), 0);
    admin("POST", "/emulator/instances/" I_ROT "/drop-connections", "{}");
    char buf[64];
    assert_true(csql_conn_read(c, buf, sizeof(buf)) <= 0);
    csql_conn_close(c);
    assert_int_equal(pg_session(b, "postgres", 1), 0);
    bridge_stop(b);
    csql_dialer_free(d);
}

static void test_clock_jump_refreshes_at_dial(void **state)
{
    (void)state;
    admin("POST", "/emulator/cert-lifetime", "{\"seconds\":3000}");
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    csql_conn *c = NULL;
    assert_int_equal(csql_dial(d, I_JUMP, NULL, &c), 0);
    csql_conn_close(c);
    assert_int_equal(counter("generateEphemeralCert", I_JUMP), 1);
    admin("POST", "/emulator/cert-lifetime", "{\"seconds\":7200}");
    /* An hour passes in a blink (a suspended laptop): the cached certificate is stale. */
    csql__clock_set_offset_s(3600);
    c = NULL;
    assert_int_equal(csql_dial(d, I_JUMP, NULL, &c), 0);
    csql_conn_close(c);
    assert_int_equal(counter("generateEphemeralCert", I_JUMP), 2);
    csql_instance_info *info = NULL;
    assert_int_equal(csql_dialer_instance_info(d, I_JUMP, NULL, &info), 0);
    assert_true(csql_instance_info_cert_expiry(info) > csql__wall_s());
    csql_instance_info_free(info);
    csql__clock_set_offset_s(0);
    csql_dialer_free(d);
}

static void test_429_storm_is_rate_limited(void **state)
{
    (void)state;
    admin("POST", "/emulator/faults",
          "{\"endpoint\":\"*\",\"instance\":\"" I_STORM "\",\"status\":429,\"retry_after\":1,"
          "\"count\":100000}");
    dopts o = {.strategy = CSQL_REFRESH_BACKGROUND, .dial_timeout_ms = 2500,
               .refresh_timeout_ms = 2000};
    csql_dialer *d = mkdialer_with(&o);
    int64_t t0 = csql__mono_ms();
    int rate_limited = 0, dials = 0;
    while (csql__mono_ms() - t0 < 8000) {
        csql_conn *c = NULL;
        int rc = csql_dial(d, I_STORM, NULL, &c);
        assert_true(rc == CSQL_ERR_RATE_LIMITED || rc == CSQL_ERR_TIMEOUT);
        /* Whichever way it ends, the user is told the API said 429. */
        if (strstr(csql_error_last()->message, "429") == NULL) {
            fprintf(stderr, "429 storm: %s\n", csql_error_last()->message);
            fail();
        }
        rate_limited += rc == CSQL_ERR_RATE_LIMITED;
        dials++;
        sleep_ms(200);
    }
    long settings = counter("connectSettings", I_STORM);
    long certs = counter("generateEphemeralCert", I_STORM);
    fprintf(stderr, "429 storm: %d dials (%d rate limited), %ld connectSettings, %ld certs\n",
            dials, rate_limited, settings, certs);
    assert_true(dials >= 10);
    /* Two refreshes in 8 s (burst 2, then one per 30 s), each bounded by its own retries. */
    assert_true(settings >= 2);
    assert_true(settings <= 2 * 6);
    assert_true(certs <= 2 * 6);
    csql_dialer_free(d);
}

static void test_refused_tcp_forces_refresh(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    csql_conn *c = NULL;
    assert_int_equal(csql_dial(d, I_REFUSE, NULL, &c), 0);
    csql_conn_close(c);
    assert_int_equal(counter("generateEphemeralCert", I_REFUSE), 1);
    admin("POST", "/emulator/instances/" I_REFUSE "/refuse-tcp", "{\"refuse\":true}");
    c = NULL;
    assert_int_equal(csql_dial(d, I_REFUSE, NULL, &c), CSQL_ERR_CONNECT);
    assert_null(c);
    assert_int_equal(csql_error_last()->category, CSQL_CAT_NETWORK);
    assert_non_null(strstr(csql_error_last()->message, I_REFUSE));
    /* The failure scheduled a refresh in the background. */
    for (int i = 0; i < 100 && counter("generateEphemeralCert", I_REFUSE) < 2; i++) {
        sleep_ms(50);
    }
    assert_int_equal(counter("generateEphemeralCert", I_REFUSE), 2);
    admin("POST", "/emulator/instances/" I_REFUSE "/refuse-tcp", "{\"refuse\":false}");
    assert_int_equal(csql_dial(d, I_REFUSE, NULL, &c), 0);
    csql_conn_close(c);
    csql_dialer_free(d);
}

static void test_dial_after_close(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    csql_conn *c = NULL;
    assert_int_equal(csql_dial(d, I_PG, NULL, &c), 0);
    assert_int_equal(csql_dialer_close(d), 0);
    csql_conn *c2 = NULL;
    assert_int_equal(csql_dial(d, I_PG, NULL, &c2), CSQL_ERR_CLOSED);
    assert_null(c2);
    /* A connection dialled before close keeps working. */
    static const unsigned char ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    assert_int_equal(csql_conn_write_all(c, ssl_request, sizeof(ssl_request)), 0);
    char reply;
    assert_int_equal(csql_conn_read(c, &reply, 1), 1);
    assert_true(reply == 'N' || reply == 'S');
    csql_conn_close(c);
    csql_dialer_free(d);
}

typedef struct crowd {
    csqlt_bridge *pg;
    csqlt_bridge *my;
    atomic_int ok, failed;
} crowd;

static void *crowd_main(void *arg)
{
    crowd *cr = arg;
    static atomic_int next;
    int me = atomic_fetch_add(&next, 1);
    for (int i = 0; i < 3; i++) {
        int rc = (me % 4 == 3) ? my_session(cr->my, "app", "secret", 3)
                               : pg_session(cr->pg, "postgres", 3);
        atomic_fetch_add(rc == 0 ? &cr->ok : &cr->failed, 1);
    }
    return NULL;
}

static void test_32_threads_dial_and_query(void **state)
{
    (void)state;
    csql_dialer *d = mkdialer(CSQL_REFRESH_BACKGROUND, 0);
    target tp = {d, I_PG, ipopt(CSQL_IP_DEFAULT)};
    target tm = {d, I_MY, ipopt(CSQL_IP_DEFAULT)};
    crowd cr = {0};
    assert_int_equal(bridge_start(&cr.pg, ".s.PGSQL.5432", target_dial, &tp), 0);
    assert_int_equal(bridge_start(&cr.my, "mysql.sock", target_dial, &tm), 0);
    enum { N = 32 };
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, crowd_main, &cr), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
    }
    assert_int_equal(atomic_load(&cr.failed), 0);
    assert_int_equal(atomic_load(&cr.ok), N * 3);
    /* 96 sessions, one certificate per instance. */
    assert_int_equal(csqlt_bridge_accepted(cr.pg) + csqlt_bridge_accepted(cr.my), N * 3);
    bridge_stop(cr.pg);
    bridge_stop(cr.my);
    csql_dialer_free(d);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_pg_every_ip_type),
        T(test_cas_instance_with_unix_socket_backend),
        T(test_mysql_sessions),
        T(test_auto_and_missing_ip_types),
        T(test_instance_info_and_warmup),
        T(test_api_errors_reach_the_dialer),
        T(test_iam_authn_sessions),
        T(test_admin_api_down_while_cert_is_valid),
        T(test_ca_rotation_recovers_without_restart),
        T(test_clock_jump_refreshes_at_dial),
        T(test_429_storm_is_rate_limited),
        T(test_refused_tcp_forces_refresh),
        T(test_dial_after_close),
        T(test_32_threads_dial_and_query),
        T(test_short_certificates_under_load),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
