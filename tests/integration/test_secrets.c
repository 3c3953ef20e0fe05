/*
 * Secrets scan: every log line (DEBUG and up) and every error message csql
 * produces while it runs its credentials, refresh and dial flows against
 * csql-emulator, successful and failing, is captured and searched for secret
 * material: the access and login tokens in use, any emulator-issued token
 * ("ya29.emu-..."), the authorized_user client secret and refresh token, the
 * service account's private key, JWT assertions and Authorization headers.
 *
 * Flows: static token (+ a separate IAM login token), a token callback,
 * service_account and authorized_user files, credentials JSON, the metadata
 * server through ADC, impersonation; faults on the token endpoint, metadata
 * server, IAM Credentials, connectSettings and generateEphemeralCert
 * (errors with messages, malformed bodies that cut a token in half), wrong
 * tokens and client secrets, a bad key, a token URI over plain http.
 *
 * Also: the private directory and socket of a Unix endpoint are 0700/0600,
 * and plain http:// endpoints are refused unless loopback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "csql/csql.h"
#include "csql/endpoint.h"
#include "support.h"

#define TOKEN "static-admin-token-4f1d9c2e7b"
#define LOGIN_TOKEN "static-login-token-8a3e5d1c0f"
#define REGION "us-central1"
#define I_PG "p:" REGION ":pg"
#define I_SS "p:" REGION ":ss"
#define TARGET "target@p.iam.gserviceaccount.com"

static csqlt_emulator g_em;
static char g_sa_path[512];
static char g_au_path[512];
static char g_scratch[256];
static uint16_t g_port;

/* ---------------- secrets and the capture ---------------- */

#define MAX_NEEDLES 16
static char g_needles[MAX_NEEDLES][256];
static int g_nneedles;

static void add_needle(const char *s)
{
    assert_true(g_nneedles < MAX_NEEDLES);
    assert_true(strlen(s) >= 3 && strlen(s) < sizeof(g_needles[0]));
    snprintf(g_needles[g_nneedles++], sizeof(g_needles[0]), "%s", s);
}

/* The first needle found in s, or NULL. */
static const char *secret_in(const char *s)
{
    for (int i = 0; i < g_nneedles; i++) {
        if (strstr(s, g_needles[i]) != NULL) {
            return g_needles[i];
        }
    }
    return NULL;
}

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static long g_lines;        /* log lines seen */
static long g_messages;     /* error messages seen */
static char g_leak[2048];   /* the first offending line */

static void inspect(const char *what, const char *text)
{
    const char *needle = secret_in(text);
    pthread_mutex_lock(&g_mu);
    if (what[0] == 'l') {
        g_lines++;
    } else {
        g_messages++;
    }
    if (needle != NULL && g_leak[0] == '\0') {
        snprintf(g_leak, sizeof(g_leak), "%s contains secret material: %s", what, text);
    }
    pthread_mutex_unlock(&g_mu);
    if (getenv("CSQL_TEST_VERBOSE") != NULL) {
        fprintf(stderr, "%s: %s\n", what, text);
    }
}

static void log_fn(csql_log_level level, const char *line, void *userdata)
{
    (void)level;
    (void)userdata;
    inspect("log line", line);
}

/* Record the message of the last error (after every failed call). */
static int seen(int rc)
{
    if (rc != 0) {
        inspect("error message", csql_error_last()->message);
        inspect("error reason", csql_error_last()->api_reason);
    }
    return rc;
}

/* 0, or -1 after printing the first leak seen since the last call. */
static int leak_check(void)
{
    pthread_mutex_lock(&g_mu);
    char leak[sizeof(g_leak)];
    snprintf(leak, sizeof(leak), "%s", g_leak);
    g_leak[0] = '\0';
    pthread_mutex_unlock(&g_mu);
    if (leak[0] != '\0') {
        fprintf(stderr, "SECRET LEAK: %s\n", leak);
        return -1;
    }
    return 0;
}

/* ---------------- emulator, echo backend ---------------- */

static int g_echo_fd = -1;
static atomic_bool g_echo_stop;
static pthread_t g_echo_thread;

static void *echo_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&g_echo_stop)) {
        struct pollfd p = {g_echo_fd, POLLIN, 0};
        if (poll(&p, 1, 100) != 1) {
            continue;
        }
        int c = accept(g_echo_fd, NULL, NULL);
        char buf[4096];
        for (int i = 0; c >= 0 && i < 1000; i++) {
            struct pollfd q = {c, POLLIN, 0};
            ssize_t n = poll(&q, 1, 5000) == 1 ? read(c, buf, sizeof(buf)) : 0;
            if (n <= 0 || write(c, buf, (size_t)n) != n) {
                break;
            }
        }
        if (c >= 0) {
            close(c);
        }
    }
    return NULL;
}

static int echo_start(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    g_echo_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (g_echo_fd < 0 || bind(g_echo_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(g_echo_fd, 8) != 0 || getsockname(g_echo_fd, (struct sockaddr *)&sa, &len) != 0 ||
        pthread_create(&g_echo_thread, NULL, echo_main, NULL) != 0) {
        return -1;
    }
    return ntohs(sa.sin_port);
}

static uint16_t free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint16_t port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0) {
        port = ntohs(sa.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

/* Secrets of the written credentials files become needles. */
static void needles_from_files(void)
{
    json_t *au = json_load_file(g_au_path, 0, NULL);
    json_t *sa = json_load_file(g_sa_path, 0, NULL);
    assert_non_null(au);
    assert_non_null(sa);
    add_needle(json_string_value(json_object_get(au, "client_secret")));
    add_needle(json_string_value(json_object_get(au, "refresh_token")));
    /* 40 characters from the third line of the key's base64 body. */
    const char *key = json_string_value(json_object_get(sa, "private_key"));
    assert_non_null(key);
    const char *line = key;
    for (int i = 0; i < 3 && line != NULL; i++) {
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    assert_non_null(line);
    assert_true(strlen(line) > 200);
    char slice[41];
    memcpy(slice, line, 40);
    slice[40] = '\0';
    assert_null(strchr(slice, '\n'));
    add_needle(slice);
    json_decref(au);
    json_decref(sa);
}

static int group_setup(void **state)
{
    (void)state;
    int echo_port = echo_start();
    if (echo_port < 0 || csqlt_tempdir(g_scratch, sizeof(g_scratch), "csql-secrets") != 0) {
        return -1;
    }
    char ip_pg[32], ip_ss[32], specs[2][256], port[16];
    csqlt_unique_ip(41, ip_pg, sizeof(ip_pg));
    csqlt_unique_ip(42, ip_ss, sizeof(ip_ss));
    g_port = free_port();
    snprintf(port, sizeof(port), "%u", (unsigned)g_port);
    snprintf(specs[0], sizeof(specs[0]), I_PG "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:%d",
             ip_pg, echo_port);
    snprintf(specs[1], sizeof(specs[1]),
             I_SS "?version=SQLSERVER_2019_STANDARD&public-ip=%s&backend=127.0.0.1:%d", ip_ss,
             echo_port);
    const char *argv[] = {"--static-token", TOKEN,    "--static-token", LOGIN_TOKEN,
                          "--server-port",  port,     "--instance",     specs[0],
                          "--instance",     specs[1], NULL};
    if (csqlt_emulator_start(&g_em, 1, argv) != 0) {
        fprintf(stderr, "cannot start csql-emulator ($CSQL_EMULATOR)\n");
        return -1;
    }
    snprintf(g_sa_path, sizeof(g_sa_path), "%s/service_account.json", g_em.creds_dir);
    snprintf(g_au_path, sizeof(g_au_path), "%s/authorized_user.json", g_em.creds_dir);
    add_needle(TOKEN);
    add_needle(LOGIN_TOKEN);
    add_needle("ya29.");        /* every token the emulator issues starts with ya29.emu- */
    add_needle("PRIVATE KEY");
    add_needle("eyJ");          /* a JWT (assertion or id token): base64url of '{"' */
    add_needle("Bearer ");      /* an Authorization header */
    add_needle("assertion=");
    add_needle("client_secret=");
    add_needle("refresh_token=");
    needles_from_files();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int st = csqlt_emulator_stop(&g_em);
    atomic_store(&g_echo_stop, true);
    pthread_join(g_echo_thread, NULL);
    close(g_echo_fd);
    csqlt_rmdir(g_scratch);
    return st == 0 ? 0 : -1;
}

static int test_setup(void **state)
{
    (void)state;
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    unsetenv("CLOUDSDK_CONFIG");
    unsetenv("GCE_METADATA_HOST");
    setenv("HOME", g_scratch, 1); /* never a developer's own gcloud login */
    csql_error_clear();
    if (csqlt_emulator_admin(&g_em, "DELETE", "/emulator/faults", NULL) != 200) {
        return -1;
    }
    return 0;
}

/* Every test ends with the scan (run_flow also fails a flow that logged nothing). */
static int test_teardown(void **state)
{
    (void)state;
    return leak_check();
}

static void fault(const char *json)
{
    long st = csqlt_emulator_admin(&g_em, "POST", "/emulator/faults", json);
    if (st != 200) {
        fail_msg("emulator refused fault %s (HTTP %ld)", json, st);
    }
}

/* ---------------- flows ---------------- */

static csql_config *base_config(void)
{
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, g_em.url), 0);
    assert_int_equal(csql_config_set_server_port(cfg, g_port), 0);
    assert_int_equal(csql_config_set_refresh_timeout_ms(cfg, 8000), 0);
    assert_int_equal(csql_config_set_dial_timeout_ms(cfg, 8000), 0);
    assert_int_equal(csql_config_set_log(cfg, log_fn, NULL, CSQL_LOG_DEBUG), 0);
    return cfg;
}

/*
 * Dialer from cfg (freed here), then a refresh (warmup, IAM as asked), and
 * with dial: a connection and an echo round trip. Returns the first error.
 */
static int run_flow(csql_config *cfg, const char *instance, int iam, int dial)
{
    long lines_before = g_lines;
    csql_dialer *d = NULL;
    int rc = seen(csql_dialer_new(&d, cfg));
    csql_config_free(cfg);
    if (rc != 0) {
        return rc;
    }
    csql_dial_options o = CSQL_DIAL_OPTIONS_INIT;
    o.iam_authn = iam;
    rc = seen(csql_dialer_warmup(d, instance, &o, 1));
    if (rc == 0 && dial) {
        csql_conn *conn = NULL;
        rc = seen(csql_dial(d, instance, &o, &conn));
        if (rc == 0) {
            char buf[4] = {0};
            rc = seen(csql_conn_write_all(conn, "ping", 4));
            if (rc == 0 && csql_conn_read(conn, buf, sizeof(buf)) <= 0) {
                rc = seen(CSQL_ERR_IO);
            }
            csql_conn_close(conn);
        }
    }
    csql_dialer_free(d);
    /* DEBUG logging was on: a flow that logs nothing would make the scan vacuous. */
    assert_true(g_lines > lines_before);
    return rc;
}

/* A fresh token from the emulator's test endpoint (a "ya29.emu-" token). */
static char g_minted[512];

static void mint(const char *scope)
{
    char url[256], body[256];
    long status = 0;
    char *resp = NULL;
    snprintf(url, sizeof(url), "%s/emulator/tokens", g_em.url);
    snprintf(body, sizeof(body),
             "{\"principal\":\"cb@p.iam.gserviceaccount.com\",\"scopes\":[\"%s\"],\"lifetime\":600}",
             scope);
    assert_int_equal(csqlt_http("POST", url, NULL, body, &status, &resp), 0);
    assert_int_equal(status, 200);
    json_t *j = json_loads(resp, 0, NULL);
    free(resp);
    snprintf(g_minted, sizeof(g_minted), "%s", json_string_value(json_object_get(j, "access_token")));
    json_decref(j);
    assert_non_null(strstr(g_minted, "ya29."));
}

static int token_cb(csql_token_kind kind, char *buf, size_t buflen, int64_t *expires_at,
                    void *userdata)
{
    (void)kind;
    (void)userdata;
    snprintf(buf, buflen, "%s", g_minted);
    *expires_at = 0;
    return 0;
}

static void test_static_token_flows(void **state)
{
    (void)state;
    csql_config *cfg = base_config();
    assert_int_equal(csql_config_set_token(cfg, TOKEN), 0);
    assert_int_equal(run_flow(cfg, I_PG, 0, 1), 0);

    cfg = base_config();
    assert_int_equal(csql_config_set_token(cfg, TOKEN), 0);
    assert_int_equal(csql_config_set_login_token(cfg, LOGIN_TOKEN), 0);
    assert_int_equal(run_flow(cfg, I_PG, 1, 0), 0);

    /* IAM authn on SQL Server is refused, and says so without the tokens. */
    cfg = base_config();
    assert_int_equal(csql_config_set_token(cfg, TOKEN), 0);
    assert_int_equal(csql_config_set_login_token(cfg, LOGIN_TOKEN), 0);
    assert_int_equal(run_flow(cfg, I_SS, 1, 0), CSQL_ERR_IAM_UNSUPPORTED);
}

static void test_token_callback(void **state)
{
    (void)state;
    mint("https://www.googleapis.com/auth/sqlservice.admin");
    csql_config *cfg = base_config();
    assert_int_equal(csql_config_set_token_callback(cfg, token_cb, NULL), 0);
    assert_int_equal(run_flow(cfg, I_PG, 0, 1), 0);
    /* A token without the admin scope: 403 from the Admin API. */
    mint("https://www.googleapis.com/auth/userinfo.email");
    cfg = base_config();
    assert_int_equal(csql_config_set_token_callback(cfg, token_cb, NULL), 0);
    assert_int_not_equal(run_flow(cfg, I_PG, 0, 0), 0);
}

static void test_credentials_files(void **state)
{
    (void)state;
    const char *paths[] = {g_sa_path, g_au_path};
    for (int i = 0; i < 2; i++) {
        csql_config *cfg = base_config();
        assert_int_equal(csql_config_set_credentials_file(cfg, paths[i]), 0);
        assert_int_equal(run_flow(cfg, I_PG, 0, 1), 0);
        cfg = base_config();
        assert_int_equal(csql_config_set_credentials_file(cfg, paths[i]), 0);
        assert_int_equal(run_flow(cfg, I_PG, 1, 0), 0);
        /* The same file through GOOGLE_APPLICATION_CREDENTIALS (ADC). */
        setenv("GOOGLE_APPLICATION_CREDENTIALS", paths[i], 1);
        assert_int_equal(run_flow(base_config(), I_PG, 0, 0), 0);
        unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    }
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    assert_non_null(buf);
    size_t n = fread(buf, 1, 65535, f);
    fclose(f);
    assert_true(n > 0);
    return buf;
}

static void test_credentials_json_and_bad_files(void **state)
{
    (void)state;
    char *sa = read_file(g_sa_path);
    csql_config *cfg = base_config();
    assert_int_equal(csql_config_set_credentials_json(cfg, sa), 0);
    assert_int_equal(run_flow(cfg, I_PG, 0, 0), 0);

    /* The key damaged: refused by name, not by quoting it. */
    json_t *j = json_loads(sa, 0, NULL);
    const char *key = json_string_value(json_object_get(j, "private_key"));
    char *bad = strdup(key);
    bad[120] = bad[120] == 'A' ? 'B' : 'A';
    memmove(bad + 200, bad + 260, strlen(bad + 260) + 1);
    json_object_set_new(j, "private_key", json_string(bad));
    char *text = json_dumps(j, 0);
    cfg = base_config();
    int rc = seen(csql_config_set_credentials_json(cfg, text));
    if (rc == 0) {
        rc = run_flow(cfg, I_PG, 0, 0);
    } else {
        csql_config_free(cfg);
    }
    assert_int_equal(rc, CSQL_ERR_CREDENTIALS);
    free(text);

    /* A missing field next to the secrets; a token URI over plain http to a remote host. */
    json_object_del(j, "client_email");
    text = json_dumps(j, 0);
    cfg = base_config();
    rc = seen(csql_config_set_credentials_json(cfg, text));
    if (rc == 0) {
        rc = run_flow(cfg, I_PG, 0, 0);
    } else {
        csql_config_free(cfg);
    }
    assert_int_equal(rc, CSQL_ERR_CREDENTIALS);
    free(text);
    json_decref(j);

    j = json_loads(sa, 0, NULL);
    json_object_set_new(j, "token_uri", json_string("http://192.0.2.1/token"));
    text = json_dumps(j, 0);
    cfg = base_config();
    assert_int_equal(seen(csql_config_set_credentials_json(cfg, text)), 0);
    rc = run_flow(cfg, I_PG, 0, 0);
    assert_true(rc == CSQL_ERR_BAD_CONFIG || rc == CSQL_ERR_TOKEN ||
                rc == CSQL_ERR_CREDENTIALS);
    assert_non_null(strstr(csql_error_last()->message, "http"));
    free(text);
    json_decref(j);

    /* Wrong client secret: 401 invalid_client from the token endpoint. */
    j = json_load_file(g_au_path, 0, NULL);
    json_object_set_new(j, "client_secret", json_string("0123456789abcdef0123456789abcdef"));
    text = json_dumps(j, 0);
    add_needle("0123456789abcdef0123456789abcdef");
    cfg = base_config();
    assert_int_equal(csql_config_set_credentials_json(cfg, text), 0);
    assert_int_equal(run_flow(cfg, I_PG, 0, 0), CSQL_ERR_TOKEN);
    free(text);
    json_decref(j);
    free(bad);
    free(sa);
}

static void test_metadata_and_impersonation(void **state)
{
    (void)state;
    setenv("GCE_METADATA_HOST", g_em.host_port, 1);
    assert_int_equal(run_flow(base_config(), I_PG, 0, 1), 0);
    assert_int_equal(run_flow(base_config(), I_PG, 1, 0), 0);
    fault("{\"endpoint\":\"metadata\",\"status\":503,\"message\":\"metadata down\"}");
    assert_int_not_equal(run_flow(base_config(), I_PG, 0, 0), 0);
    unsetenv("GCE_METADATA_HOST");

    csql_config *cfg = base_config();
    assert_int_equal(csql_config_set_credentials_file(cfg, g_sa_path), 0);
    assert_int_equal(csql_config_set_impersonate_service_account(cfg, TARGET), 0);
    assert_int_equal(csql_config_set_iam_credentials_endpoint(cfg, g_em.url), 0);
    assert_int_equal(run_flow(cfg, I_PG, 0, 1), 0);
    fault("{\"endpoint\":\"generateAccessToken\",\"status\":403,\"message\":\"no actAs\"}");
    cfg = base_config();
    assert_int_equal(csql_config_set_credentials_file(cfg, g_sa_path), 0);
    assert_int_equal(csql_config_set_impersonate_service_account(cfg, TARGET), 0);
    assert_int_equal(csql_config_set_iam_credentials_endpoint(cfg, g_em.url), 0);
    assert_int_equal(run_flow(cfg, I_PG, 0, 0), CSQL_ERR_TOKEN);
}

static void test_token_endpoint_faults(void **state)
{
    (void)state;
    const char *faults[] = {
        "{\"endpoint\":\"token\",\"status\":400,\"reason\":\"invalid_grant\","
        "\"message\":\"Token has been expired or revoked.\"}",
        "{\"endpoint\":\"token\",\"status\":500}",
        /* 200 with the body cut in half: half an access token, not JSON. */
        "{\"endpoint\":\"token\",\"malformed\":true}",
        "{\"endpoint\":\"token\",\"status\":502,\"malformed\":true}",
    };
    const char *paths[] = {g_sa_path, g_au_path};
    for (size_t f = 0; f < sizeof(faults) / sizeof(faults[0]); f++) {
        assert_int_equal(csqlt_emulator_admin(&g_em, "DELETE", "/emulator/faults", NULL), 200);
        fault(faults[f]);
        for (int i = 0; i < 2; i++) {
            csql_config *cfg = base_config();
            assert_int_equal(csql_config_set_credentials_file(cfg, paths[i]), 0);
            int rc = run_flow(cfg, I_PG, 0, 0);
            assert_int_equal(rc, CSQL_ERR_TOKEN);
        }
    }
}

static void test_admin_api_faults(void **state)
{
    (void)state;
    const char *faults[] = {
        "{\"endpoint\":\"connectSettings\",\"status\":403,"
        "\"message\":\"Cloud SQL Admin API has not been used in project p\"}",
        "{\"endpoint\":\"generateEphemeralCert\",\"status\":400,\"message\":\"bad public key\"}",
        "{\"endpoint\":\"generateEphemeralCert\",\"malformed\":true}",
        "{\"endpoint\":\"connectSettings\",\"status\":500,\"count\":1}",
    };
    for (size_t f = 0; f < sizeof(faults) / sizeof(faults[0]); f++) {
        assert_int_equal(csqlt_emulator_admin(&g_em, "DELETE", "/emulator/faults", NULL), 200);
        fault(faults[f]);
        csql_config *cfg = base_config();
        assert_int_equal(csql_config_set_credentials_file(cfg, g_au_path), 0);
        int rc = run_flow(cfg, I_PG, 1, 0);
        if (f == 3) {
            assert_int_equal(rc, 0); /* retried */
        } else {
            assert_int_not_equal(rc, 0);
        }
    }
    /* A token the Admin API does not know: 401. */
    csql_config *cfg = base_config();
    assert_int_equal(csql_config_set_token(cfg, "ya29.emu-not-issued-by-this-emulator"), 0);
    assert_int_equal(run_flow(cfg, I_PG, 0, 0), CSQL_ERR_PERMISSION_DENIED);
}

static void test_bad_tokens_in_setters_not_echoed(void **state)
{
    (void)state;
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    assert_int_not_equal(seen(csql_config_set_token(cfg, "ya29.has a space " TOKEN)), 0);
    assert_int_not_equal(seen(csql_config_set_login_token(cfg, "ya29.\x01" LOGIN_TOKEN)), 0);
    assert_int_not_equal(seen(csql_config_set_credentials_json(cfg, "{\"type\":\"authorized_user\","
                                                                    "\"client_secret\":\"ya29.x")),
                         0);
    csql_config_free(cfg);
}

/* ---------------- local socket access, plain http ---------------- */

static void test_unix_endpoint_is_private(void **state)
{
    (void)state;
    csql_config *cfg = base_config();
    csql_dialer *d = NULL;
    assert_int_equal(csql_config_set_token(cfg, TOKEN), 0);
    assert_int_equal(csql_dialer_new(&d, cfg), 0);
    csql_config_free(cfg);

    csql_endpoint *ep = NULL;
    assert_int_equal(csql_endpoint_open_unix(&ep, d, I_PG, NULL, NULL), 0);
    char dir[512], path[512];
    snprintf(dir, sizeof(dir), "%s", csql_endpoint_dir(ep));
    snprintf(path, sizeof(path), "%s", csql_endpoint_path(ep));
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(st.st_uid, getuid());
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0077, 0); /* no access for group or others */
    csql_endpoint_close(ep);
    assert_int_not_equal(stat(path, &st), 0);
    assert_int_not_equal(stat(dir, &st), 0);

    /* The one-shot form over a dialled connection: a private directory too. */
    csql_conn *conn = NULL;
    assert_int_equal(seen(csql_dial(d, I_PG, NULL, &conn)), 0);
    assert_int_equal(csql_endpoint_open_conn(&ep, conn, NULL, NULL), 0);
    assert_int_equal(stat(csql_endpoint_dir(ep), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    csql_endpoint_close(ep);
    csql_dialer_free(d);
}

static void test_plain_http_only_to_loopback(void **state)
{
    (void)state;
    static const char *refused[] = {
        "http://sqladmin.googleapis.com",
        "http://192.0.2.1:8080",
        "http://127.0.0.1.nip.io",
        "http://[2001:db8::1]:80",
        "http://localhost.example.com",
        "http://user:hunter2-password@127.0.0.1:80",
        "ftp://127.0.0.1",
    };
    static const char *accepted[] = {
        "https://sqladmin.googleapis.com",
        "https://sqladmin.example.com:8443/",
        "http://127.0.0.1:8080",
        "http://127.1.2.3",
        "http://[::1]:8080",
        "http://localhost:8080",
    };
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    add_needle("hunter2-password");
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        int rc = seen(csql_config_set_admin_api_endpoint(cfg, refused[i]));
        if (rc != CSQL_ERR_BAD_CONFIG) {
            fail_msg("admin API endpoint %s: want CSQL_ERR_BAD_CONFIG, got %d", refused[i], rc);
        }
        rc = seen(csql_config_set_iam_credentials_endpoint(cfg, refused[i]));
        if (rc != CSQL_ERR_BAD_CONFIG) {
            fail_msg("IAM credentials endpoint %s: want CSQL_ERR_BAD_CONFIG, got %d", refused[i],
                     rc);
        }
    }
    for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
        if (csql_config_set_admin_api_endpoint(cfg, accepted[i]) != 0 ||
            csql_config_set_iam_credentials_endpoint(cfg, accepted[i]) != 0) {
            fail_msg("endpoint %s refused: %s", accepted[i], csql_error_last()->message);
        }
    }
    csql_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_static_token_flows, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_token_callback, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_credentials_files, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_credentials_json_and_bad_files, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_metadata_and_impersonation, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_token_endpoint_faults, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_admin_api_faults, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_bad_tokens_in_setters_not_echoed, test_setup,
                                        test_teardown),
        cmocka_unit_test_setup_teardown(test_unix_endpoint_is_private, test_setup, test_teardown),
        cmocka_unit_test_setup_teardown(test_plain_http_only_to_loopback, test_setup,
                                        test_teardown),
    };
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    fprintf(stderr, "secrets scan: %ld log lines and %ld error messages checked\n", g_lines,
            g_messages);
    return failed;
}
