/*
 * csql__creds against csql-emulator's OAuth token endpoint, metadata server
 * and IAM Credentials API: every credentials source, the ADC chain order,
 * caching (the emulator's counters), expiry-driven refresh, faults surfaced
 * as CSQL_ERR_TOKEN with the endpoint's message, and no secret in any message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "config_internal.h"
#include "credentials/credentials.h"
#include "csql/errors.h"
#include "support.h"
#include "util/clock.h"

#define INST "p:us-central1:creds"
#define STATIC_TOKEN "static-token-for-credentials-tests"
#define SA_EMAIL "csql-test@emulator-project.iam.gserviceaccount.com"
#define TARGET "target@p.iam.gserviceaccount.com"

static csqlt_emulator g_em;
static char g_sa_path[512];
static char g_au_path[512];
static char g_scratch[256]; /* a temp dir for gcloud config dirs and modified files */

/* ---------------- helpers ---------------- */

static void clear_env(void)
{
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    unsetenv("CLOUDSDK_CONFIG");
    unsetenv("GCE_METADATA_HOST");
    /* HOME points at an empty dir so a developer's own gcloud login never leaks in. */
    setenv("HOME", g_scratch, 1);
}

static int group_setup(void **state)
{
    (void)state;
    char ip[32], inst[256];
    csqlt_unique_ip(1, ip, sizeof(ip));
    snprintf(inst, sizeof(inst), INST "?version=POSTGRES_15&public-ip=%s&backend=127.0.0.1:1", ip);
    const char *argv[] = {"--instance", inst, "--static-token", STATIC_TOKEN, NULL};
    if (csqlt_emulator_start(&g_em, 1, argv) != 0) {
        return -1;
    }
    snprintf(g_sa_path, sizeof(g_sa_path), "%s/service_account.json", g_em.creds_dir);
    snprintf(g_au_path, sizeof(g_au_path), "%s/authorized_user.json", g_em.creds_dir);
    if (csqlt_tempdir(g_scratch, sizeof(g_scratch), "csql-credtest") != 0) {
        return -1;
    }
    clear_env();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    csql__clock_set_offset_s(0);
    csqlt_emulator_stop(&g_em);
    csqlt_rmdir(g_scratch);
    return 0;
}

static int test_setup(void **state)
{
    (void)state;
    clear_env();
    csql__clock_set_offset_s(0);
    csql_error_clear();
    csqlt_emulator_admin(&g_em, "DELETE", "/emulator/faults", NULL);
    csqlt_emulator_admin(&g_em, "POST", "/emulator/counters/reset", NULL);
    return 0;
}

/* The emulator's request count for one endpoint ("token", "metadata", "generateAccessToken"). */
static long counter(const char *endpoint)
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
    json_t *v = json_object_get(json_object_get(json_object_get(j, "endpoints"), endpoint), "total");
    assert_true(json_is_integer(v));
    long n = (long)json_integer_value(v);
    json_decref(j);
    return n;
}

static void fault(const char *json)
{
    assert_int_equal(csqlt_emulator_admin(&g_em, "POST", "/emulator/faults", json), 200);
}

/* HTTP status of connectSettings called with this token: 200 when it has an admin scope. */
static long api_status(const char *token)
{
    char url[256];
    long status = 0;
    snprintf(url, sizeof(url), "%s/sql/v1beta4/projects/p/instances/creds/connectSettings",
             g_em.url);
    assert_int_equal(csqlt_http("GET", url, token, NULL, &status, NULL), 0);
    return status;
}

static int64_t soon(void)
{
    return csql__mono_ms() + 10000;
}

static csql__creds *new_creds(const struct csql_config *cfg)
{
    csql__creds *c = NULL;
    int rc = csql__creds_new(cfg, NULL, &c);
    if (rc != CSQL_OK) {
        fail_msg("csql__creds_new: %d %s", rc, csql_error_last()->message);
    }
    return c;
}

/* A token of kind; fails the test with the error message on error. */
static char *token(csql__creds *c, csql_token_kind kind)
{
    csql__token t;
    int rc = csql__creds_token(c, kind, soon(), &t);
    if (rc != CSQL_OK) {
        fail_msg("csql__creds_token: %d %s", rc, csql_error_last()->message);
    }
    assert_true(t.expires_at == 0 || t.expires_at > csql__wall_s());
    return t.value; /* the caller frees */
}

static int token_rc(csql__creds *c, csql_token_kind kind, int64_t deadline_ms)
{
    csql__token t;
    csql_error_clear();
    int rc = csql__creds_token(c, kind, deadline_ms, &t);
    csql__token_dispose(&t);
    return rc;
}

static void assert_msg_has(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (getenv("CSQLT_VERBOSE") != NULL) {
        fprintf(stderr, "    message: %s\n", m);
    }
    if (strstr(m, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", m, needle);
    }
}

static void assert_msg_lacks(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (needle != NULL && needle[0] != '\0' && strstr(m, needle) != NULL) {
        fail_msg("message \"%s\" contains a secret", m);
    }
}

/* The secrets in the emulator's credentials files. */
typedef struct secrets {
    char client_secret[128];
    char refresh_token[256];
    char key_line[80]; /* one line from the middle of the private key */
} secrets;

static void read_secrets(secrets *s)
{
    memset(s, 0, sizeof(*s));
    json_t *au = json_load_file(g_au_path, 0, NULL);
    json_t *sa = json_load_file(g_sa_path, 0, NULL);
    assert_non_null(au);
    assert_non_null(sa);
    snprintf(s->client_secret, sizeof(s->client_secret), "%s",
             json_string_value(json_object_get(au, "client_secret")));
    snprintf(s->refresh_token, sizeof(s->refresh_token), "%s",
             json_string_value(json_object_get(au, "refresh_token")));
    const char *pem = json_string_value(json_object_get(sa, "private_key"));
    const char *nl = strchr(pem, '\n');
    assert_non_null(nl);
    snprintf(s->key_line, sizeof(s->key_line), "%.40s", nl + 100);
    json_decref(au);
    json_decref(sa);
}

static void assert_no_secrets(const secrets *s, const char *const *tokens)
{
    assert_msg_lacks(s->client_secret);
    assert_msg_lacks(s->refresh_token);
    assert_msg_lacks(s->key_line);
    assert_msg_lacks(STATIC_TOKEN);
    assert_msg_lacks("ya29.");
    for (size_t i = 0; tokens != NULL && tokens[i] != NULL; i++) {
        assert_msg_lacks(tokens[i]);
    }
}

static void copy_file(const char *from, const char *to)
{
    assert_int_equal(csqlt_sh(NULL, 0, "cp '%s' '%s'", from, to), 0);
}

/* ---------------- sources ---------------- */

static void test_service_account_file(void **state)
{
    (void)state;
    struct csql_config cfg = {.cred_kind = CSQL__CRED_FILE, .credentials_file = g_sa_path};
    csql__creds *c = new_creds(&cfg);
    assert_string_equal(csql__creds_describe(c), "service account " SA_EMAIL);
    assert_int_equal(counter("token"), 0); /* nothing fetched at creation */

    char *admin = token(c, CSQL_TOKEN_ADMIN);
    assert_int_equal(api_status(admin), 200);
    assert_int_equal(counter("token"), 1);
    for (int i = 0; i < 20; i++) {
        char *again = token(c, CSQL_TOKEN_ADMIN);
        assert_string_equal(again, admin);
        free(again);
    }
    assert_int_equal(counter("token"), 1);

    /* The login token is separate, and has only the login scope. */
    char *login = token(c, CSQL_TOKEN_LOGIN);
    assert_string_not_equal(login, admin);
    assert_int_equal(api_status(login), 403);
    assert_int_equal(counter("token"), 2);
    free(token(c, CSQL_TOKEN_LOGIN));
    assert_int_equal(counter("token"), 2);
    free(admin);
    free(login);
    csql__creds_free(c);
}

static void test_service_account_json_string(void **state)
{
    (void)state;
    FILE *fp = fopen(g_sa_path, "r");
    assert_non_null(fp);
    char *text = calloc(1, 65536);
    size_t n = fread(text, 1, 65535, fp);
    fclose(fp);
    assert_true(n > 0);
    struct csql_config cfg = {.cred_kind = CSQL__CRED_JSON, .credentials_json = text};
    csql__creds *c = new_creds(&cfg);
    char *admin = token(c, CSQL_TOKEN_ADMIN);
    assert_int_equal(api_status(admin), 200);
    free(admin);
    csql__creds_free(c);
    free(text);
}

static void test_service_account_via_env(void **state)
{
    (void)state;
    setenv("GOOGLE_APPLICATION_CREDENTIALS", g_sa_path, 1);
    struct csql_config cfg = {.cred_kind = CSQL__CRED_ADC};
    csql__creds *c = new_creds(&cfg);
    assert_string_equal(csql__creds_describe(c), "service account " SA_EMAIL);
    char *admin = token(c, CSQL_TOKEN_ADMIN);
    assert_int_equal(api_status(admin), 200);
    assert_int_equal(counter("token"), 1);
    free(admin);
    csql__creds_free(c);
}

static void test_authorized_user_file(void **state)
{
    (void)state;
    struct csql_config cfg = {.cred_kind = CSQL__CRED_FILE, .credentials_file = g_au_path};
    csql__creds *c = new_creds(&cfg);
    assert_non_null(strstr(csql__creds_describe(c), "authorized user"));
    char *admin = token(c, CSQL_TOKEN_ADMIN);
    assert_int_equal(api_status(admin), 200); /* the user's cloud-platform scope */
    char *login = token(c, CSQL_TOKEN_LOGIN);
    assert_string_not_equal(login, admin);
    assert_int_equal(api_status(login), 403); /* narrowed to sqlservice.login */
    assert_int_equal(counter("token"), 2);
    free(admin);
    free(login);
    csql__creds_free(c);
}

static void test_gcloud_adc_file(void **state)
{
    (void)state;
    char gdir[512], file[700];
    snprintf(gdir, sizeof(gdir), "%s/cloudsdk", g_scratch);
    mkdir(gdir, 0700);
    snprintf(file, sizeof(file), "%s/application_default_credentials.json", gdir);
    copy_file(g_au_path, file);
    setenv("CLOUDSDK_CONFIG", gdir, 1);
    setenv("GCE_METADATA_HOST", g_em.host_port, 1);
    struct csql_config cfg = {.cred_kind = CSQL__CRED_ADC};
    csql__creds *c = new_creds(&cfg);
    assert_non_null(strstr(csql__creds_describe(c), "authorized user"));
    char *admin = token(c, CSQL_TOKEN_ADMIN);
    assert_int_equal(api_status(admin), 200);
    assert_int_equal(counter("token"), 1);
    assert_int_equal(counter("metadata"), 0);
    free(admin);
    csql__creds_free(c);
    unlink(file);

    /* Without CLOUDSDK_CONFIG: $HOME/.config/gcloud. */
    unsetenv("CLOUDSDK_CONFIG");
    char hdir[600];
    snprintf(hdir, sizeof(hdir), "%s/.config/gcloud", g_scratch);
    assert_int_equal(csqlt_sh(NULL, 0, "mkdir -p '%s'", hdir), 0);
    snprintf(file, sizeof(file), "%s/application_default_credentials.json", hdir);
    copy_file(g_au_path, file);
    c = new_creds(&cfg);
    assert_non_null(strstr(csql__creds_describe(c), "authorized user"));
    admin = token(c, CSQL_TOKEN_ADMIN);
    assert_int_equal(api_status(admin), 200);
    free(admin);
    csql__creds_free(c);
    unlink(file);
}

static void test_metadata_server(void **state)
{
    (void)state;
    setenv("GCE_METADATA_HOST", g_em.host_port, 1);
    struct csql_config cfg = {.cred_kind = CSQL__CRED_ADC};
    csql__creds *c = new_creds(&cfg);
    char want[128];
    snprintf(want, sizeof(want), "metadata server %s", g_em.host_port);
    assert_string_equal(csql__creds_describe(c), want);
    assert_int_equal(counter("metadata"), 0); /* only contacted on first use */
    char *admin = token(c, CSQL_TOKEN_ADMIN);
    assert_int_equal(api_status(admin), 200);
    for (int i = 0; i < 5; i++) {
        free(token(c, CSQL_TOKEN_ADMIN));
    }
    assert_int_equal(counter("metadata"), 1);
    char *login = token(c, CSQL_TOKEN_LOGIN);
    assert_int_equal(api_status(login), 403);
    assert_int_equal(counter("metadata"), 2);
    assert_int_equal(counter("token"), 0);
    free(admin);
    free(login);
    csql__creds_free(c);
}

static void test_adc_chain_order(void **state)
{
    (void)state;
    char gdir[512], file[700];
    snprintf(gdir, sizeof(gdir), "%s/chain", g_scratch);
    mkdir(gdir, 0700);
    snprintf(file, sizeof(file), "%s/application_default_credentials.json", gdir);
    copy_file(g_au_path, file);
    struct csql_config cfg = {.cred_kind = CSQL__CRED_ADC};

    /* All three present: the env file wins. */
    setenv("GOOGLE_APPLICATION_CREDENTIALS", g_sa_path, 1);
    setenv("CLOUDSDK_CONFIG", gdir, 1);
    setenv("GCE_METADATA_HOST", g_em.host_port, 1);
    csql__creds *c = new_creds(&cfg);
    assert_string_equal(csql__creds_describe(c), "service account " SA_EMAIL);
    free(token(c, CSQL_TOKEN_ADMIN));
    csql__creds_free(c);

    /* gcloud file over metadata. */
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    c = new_creds(&cfg);
    assert_non_null(strstr(csql__creds_describe(c), "authorized user"));
    free(token(c, CSQL_TOKEN_ADMIN));
    csql__creds_free(c);
    assert_int_equal(counter("token"), 2);
    assert_int_equal(counter("metadata"), 0);

    /* Only the metadata server left. */
    unlink(file);
    c = new_creds(&cfg);
    free(token(c, CSQL_TOKEN_ADMIN));
    csql__creds_free(c);
    assert_int_equal(counter("metadata"), 1);
    assert_int_equal(counter("token"), 2);
}

static void test_no_credentials_anywhere(void **state)
{
    (void)state;
    setenv("GCE_METADATA_HOST", "127.0.0.1:1", 1);
    struct csql_config cfg = {.cred_kind = CSQL__CRED_ADC};
    csql__creds *c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, soon()), CSQL_ERR_CREDENTIALS);
    assert_msg_has("no credentials found");
    assert_msg_has("GOOGLE_APPLICATION_CREDENTIALS");
    assert_msg_has("127.0.0.1:1");
    csql__creds_free(c);

    /* Set but unreadable: an error at creation naming it. */
    setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/creds.json", 1);
    csql__creds *c2 = NULL;
    assert_int_equal(csql__creds_new(&cfg, NULL, &c2), CSQL_ERR_CREDENTIALS);
    assert_msg_has("/nonexistent/creds.json");
    assert_null(c2);
}

static void test_impersonation(void **state)
{
    (void)state;
    struct csql_config cfg = {.cred_kind = CSQL__CRED_FILE,
                              .credentials_file = g_sa_path,
                              .impersonate_chain = (char *)(uintptr_t)(TARGET ", d1@p.iam.gserviceaccount.com,d2@p.iam.gserviceaccount.com"),
                              .iam_credentials_endpoint = g_em.url};
    csql__creds *c = new_creds(&cfg);
    assert_string_equal(csql__creds_describe(c),
                        TARGET " impersonated by service account " SA_EMAIL);
    char *admin = token(c, CSQL_TOKEN_ADMIN);
    assert_int_equal(api_status(admin), 200);
    assert_int_equal(counter("generateAccessToken"), 1);
    assert_int_equal(counter("token"), 1); /* the base's cloud-platform token */
    free(token(c, CSQL_TOKEN_ADMIN));
    assert_int_equal(counter("generateAccessToken"), 1);

    char *login = token(c, CSQL_TOKEN_LOGIN);
    assert_string_not_equal(login, admin);
    assert_int_equal(api_status(login), 403);
    assert_int_equal(counter("generateAccessToken"), 2);
    assert_int_equal(counter("token"), 1); /* base token reused */
    free(admin);
    free(login);
    csql__creds_free(c);
}

static void test_impersonation_static_base(void **state)
{
    (void)state;
    struct csql_config cfg = {.cred_kind = CSQL__CRED_TOKEN,
                              .token = (char *)(uintptr_t)STATIC_TOKEN,
                              .impersonate_chain = (char *)(uintptr_t)TARGET,
                              .iam_credentials_endpoint = g_em.url};
    csql__creds *c = new_creds(&cfg);
    char *admin = token(c, CSQL_TOKEN_ADMIN);
    assert_string_not_equal(admin, STATIC_TOKEN);
    assert_int_equal(api_status(admin), 200);
    assert_int_equal(counter("generateAccessToken"), 1);
    free(admin);
    csql__creds_free(c);

    /* A base token the IAM API rejects: its error, no token in the message. */
    cfg.token = (char *)(uintptr_t) "not-a-token-the-emulator-knows";
    c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, soon()), CSQL_ERR_TOKEN);
    assert_int_equal(csql_error_last()->http_status, 401);
    assert_msg_has("generateAccessToken for " TARGET);
    assert_msg_lacks("not-a-token-the-emulator-knows");
    csql__creds_free(c);

    /* Bad chains are configuration errors. */
    cfg.impersonate_chain = (char *)(uintptr_t) "target@p,,d1@p";
    csql__creds *bad = NULL;
    assert_int_equal(csql__creds_new(&cfg, NULL, &bad), CSQL_ERR_BAD_CONFIG);
    assert_msg_has("entry 2");
    cfg.impersonate_chain = (char *)(uintptr_t) "target@p/../../x";
    assert_int_equal(csql__creds_new(&cfg, NULL, &bad), CSQL_ERR_BAD_CONFIG);
}

static void test_static_token(void **state)
{
    (void)state;
    struct csql_config cfg = {.cred_kind = CSQL__CRED_TOKEN,
                              .token = (char *)(uintptr_t)STATIC_TOKEN};
    csql__creds *c = new_creds(&cfg);
    char *t = token(c, CSQL_TOKEN_ADMIN);
    assert_string_equal(t, STATIC_TOKEN);
    assert_int_equal(api_status(t), 200);
    free(t);
    csql__creds_free(c);
    assert_int_equal(counter("token"), 0);
    assert_int_equal(counter("metadata"), 0);
}

typedef struct cb_data {
    int calls;
    int fail;
    char token[128];
} cb_data;

static int cb(csql_token_kind kind, char *buf, size_t len, int64_t *exp, void *ud)
{
    cb_data *d = ud;
    d->calls++;
    if (d->fail) {
        return d->fail;
    }
    (void)kind;
    snprintf(buf, len, "%s", d->token);
    *exp = csql__wall_s() + 3600;
    return 0;
}

static void test_callback(void **state)
{
    (void)state;
    /* The callback hands out a token minted by the emulator: the API accepts it. */
    struct csql_config mk = {.cred_kind = CSQL__CRED_FILE, .credentials_file = g_sa_path};
    csql__creds *sa = new_creds(&mk);
    char *minted = token(sa, CSQL_TOKEN_ADMIN);
    csql__creds_free(sa);

    cb_data d = {0};
    snprintf(d.token, sizeof(d.token), "%s", minted);
    struct csql_config cfg = {.cred_kind = CSQL__CRED_CALLBACK, .token_fn = cb,
                              .token_fn_userdata = &d};
    csql__creds *c = new_creds(&cfg);
    char *t = token(c, CSQL_TOKEN_ADMIN);
    assert_string_equal(t, minted);
    assert_int_equal(api_status(t), 200);
    free(token(c, CSQL_TOKEN_ADMIN));
    assert_int_equal(d.calls, 1);
    free(t);
    csql__creds_free(c);

    d.fail = -5;
    c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_LOGIN, soon()), CSQL_ERR_TOKEN);
    assert_msg_has("token callback failed (returned -5)");
    csql__creds_free(c);
    free(minted);
}

/* ---------------- caching and refresh ---------------- */

static void test_expiry_driven_refresh(void **state)
{
    (void)state;
    struct csql_config cfg = {.cred_kind = CSQL__CRED_FILE, .credentials_file = g_sa_path};
    csql__creds *c = new_creds(&cfg);
    char *first = token(c, CSQL_TOKEN_ADMIN);
    /* The emulator's 1 h token: kept with 16 min left, refreshed with 14 min left. */
    csql__clock_set_offset_s(3600 - 16 * 60);
    char *still = token(c, CSQL_TOKEN_ADMIN);
    assert_string_equal(still, first);
    assert_int_equal(counter("token"), 1);
    csql__clock_set_offset_s(3600 - 14 * 60);
    char *fresh = token(c, CSQL_TOKEN_ADMIN);
    assert_string_not_equal(fresh, first);
    assert_int_equal(counter("token"), 2);
    csql__clock_set_offset_s(0);
    free(first);
    free(still);
    free(fresh);
    csql__creds_free(c);
}

static void test_short_token_lifetime(void **state)
{
    (void)state;
    /* A second emulator whose tokens live 4 s: reused for 2 s, then fetched again. */
    csqlt_emulator em;
    const char *argv[] = {"--token-lifetime", "4", NULL};
    assert_int_equal(csqlt_emulator_start(&em, 1, argv), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/service_account.json", em.creds_dir);
    struct csql_config cfg = {.cred_kind = CSQL__CRED_FILE, .credentials_file = path};
    csql__creds *c = new_creds(&cfg);
    char *a = token(c, CSQL_TOKEN_ADMIN);
    char *b = token(c, CSQL_TOKEN_ADMIN);
    assert_string_equal(a, b);
    struct timespec ts = {2, 300 * 1000000L};
    nanosleep(&ts, NULL);
    char *d = token(c, CSQL_TOKEN_ADMIN);
    assert_string_not_equal(a, d);
    free(a);
    free(b);
    free(d);
    csql__creds_free(c);
    csqlt_emulator_stop(&em);
}

typedef struct caller {
    csql__creds *c;
    int rc;
    char value[128];
} caller;

static void *call(void *arg)
{
    caller *k = arg;
    csql__token t;
    k->rc = csql__creds_token(k->c, CSQL_TOKEN_ADMIN, soon(), &t);
    if (k->rc == CSQL_OK) {
        snprintf(k->value, sizeof(k->value), "%s", t.value);
    }
    csql__token_dispose(&t);
    return NULL;
}

static void test_concurrent_callers_share_one_fetch(void **state)
{
    (void)state;
    fault("{\"endpoint\":\"token\",\"latency_ms\":300,\"count\":1}");
    struct csql_config cfg = {.cred_kind = CSQL__CRED_FILE, .credentials_file = g_sa_path};
    csql__creds *c = new_creds(&cfg);
    caller k[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        k[i] = (caller){.c = c};
        assert_int_equal(pthread_create(&th[i], NULL, call, &k[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(k[i].rc, CSQL_OK);
        assert_string_equal(k[i].value, k[0].value);
    }
    assert_int_equal(counter("token"), 1);
    csql__creds_free(c);
}

/* ---------------- failures ---------------- */

static void test_token_endpoint_fault(void **state)
{
    (void)state;
    secrets s;
    read_secrets(&s);
    fault("{\"endpoint\":\"token\",\"status\":500,\"message\":\"the token service fell over\","
          "\"count\":1}");
    struct csql_config cfg = {.cred_kind = CSQL__CRED_FILE, .credentials_file = g_sa_path};
    csql__creds *c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, soon()), CSQL_ERR_TOKEN);
    const csql_error *e = csql_error_last();
    assert_int_equal(e->http_status, 500);
    assert_int_equal(e->category, CSQL_CAT_AUTH);
    assert_msg_has("the token service fell over");
    assert_msg_has("token endpoint 127.0.0.1");
    assert_no_secrets(&s, NULL);
    /* The fault was for one request: the next call fetches afresh and succeeds. */
    char *t = token(c, CSQL_TOKEN_ADMIN);
    assert_int_equal(counter("token"), 2);
    free(t);
    csql__creds_free(c);

    /* Same for an authorized user, whose request carries the refresh token and secret. */
    fault("{\"endpoint\":\"token\",\"status\":503,\"count\":1}");
    cfg.credentials_file = g_au_path;
    c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_LOGIN, soon()), CSQL_ERR_TOKEN);
    assert_int_equal(csql_error_last()->http_status, 503);
    assert_no_secrets(&s, NULL);
    csql__creds_free(c);
}

static void test_metadata_and_iam_faults(void **state)
{
    (void)state;
    setenv("GCE_METADATA_HOST", g_em.host_port, 1);
    fault("{\"endpoint\":\"metadata\",\"status\":503,\"message\":\"metadata is warming up\","
          "\"count\":1}");
    struct csql_config cfg = {.cred_kind = CSQL__CRED_ADC};
    csql__creds *c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, soon()), CSQL_ERR_TOKEN);
    assert_int_equal(csql_error_last()->http_status, 503);
    assert_msg_has("metadata is warming up");
    assert_msg_has("metadata server");
    csql__creds_free(c);

    fault("{\"endpoint\":\"generateAccessToken\",\"status\":403,\"message\":\"caller lacks "
          "iam.serviceAccounts.getAccessToken\",\"count\":1}");
    struct csql_config imp = {.cred_kind = CSQL__CRED_TOKEN,
                              .token = (char *)(uintptr_t)STATIC_TOKEN,
                              .impersonate_chain = (char *)(uintptr_t)TARGET,
                              .iam_credentials_endpoint = g_em.url};
    c = new_creds(&imp);
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, soon()), CSQL_ERR_TOKEN);
    assert_int_equal(csql_error_last()->http_status, 403);
    assert_string_equal(csql_error_last()->api_reason, "PERMISSION_DENIED");
    assert_msg_has("iam.serviceAccounts.getAccessToken");
    assert_msg_lacks(STATIC_TOKEN);
    csql__creds_free(c);
}

static void test_malformed_answer(void **state)
{
    (void)state;
    fault("{\"endpoint\":\"token\",\"malformed\":true,\"count\":1}");
    struct csql_config cfg = {.cred_kind = CSQL__CRED_FILE, .credentials_file = g_sa_path};
    csql__creds *c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, soon()), CSQL_ERR_TOKEN);
    assert_msg_has("not JSON");
    assert_msg_lacks("ya29.");
    csql__creds_free(c);
}

static void test_deadline(void **state)
{
    (void)state;
    fault("{\"endpoint\":\"token\",\"latency_ms\":3000,\"count\":1}");
    struct csql_config cfg = {.cred_kind = CSQL__CRED_FILE, .credentials_file = g_sa_path};
    csql__creds *c = new_creds(&cfg);
    int64_t t0 = csql__mono_ms();
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, csql__mono_ms() + 300), CSQL_ERR_TIMEOUT);
    assert_true(csql__mono_ms() - t0 < 2000);
    csql__creds_free(c);
}

static void test_rejected_credentials_never_leak(void **state)
{
    (void)state;
    secrets s;
    read_secrets(&s);
    char path[600];

    /* A revoked refresh token: the endpoint's OAuth error, none of the secrets. */
    json_t *au = json_load_file(g_au_path, 0, NULL);
    json_object_set_new(au, "refresh_token", json_string("1//emu-revoked-SECRET-VALUE"));
    snprintf(path, sizeof(path), "%s/revoked.json", g_scratch);
    assert_int_equal(json_dump_file(au, path, 0), 0);
    json_decref(au);
    struct csql_config cfg = {.cred_kind = CSQL__CRED_FILE, .credentials_file = path};
    csql__creds *c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, soon()), CSQL_ERR_TOKEN);
    assert_int_equal(csql_error_last()->http_status, 400);
    assert_string_equal(csql_error_last()->api_reason, "invalid_grant");
    assert_msg_has("invalid_grant");
    assert_msg_lacks("SECRET-VALUE");
    assert_no_secrets(&s, NULL);
    csql__creds_free(c);

    /* A service account file whose key is not the one the emulator knows. */
    EVP_PKEY *other = EVP_RSA_gen(2048);
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(b, other, NULL, NULL, 0, NULL, NULL), 1);
    char *pem = NULL;
    long n = BIO_get_mem_data(b, &pem);
    json_t *sa = json_load_file(g_sa_path, 0, NULL);
    json_object_set_new(sa, "private_key", json_stringn(pem, (size_t)n));
    snprintf(path, sizeof(path), "%s/wrongkey.json", g_scratch);
    assert_int_equal(json_dump_file(sa, path, 0), 0);
    json_decref(sa);
    BIO_free(b);
    EVP_PKEY_free(other);
    c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, soon()), CSQL_ERR_TOKEN);
    assert_msg_has("Invalid JWT Signature");
    assert_no_secrets(&s, NULL);
    csql__creds_free(c);

    /* A token endpoint that cannot be reached: CSQL_ERR_TOKEN with the transport detail. */
    sa = json_load_file(g_sa_path, 0, NULL);
    json_object_set_new(sa, "token_uri", json_string("http://someone:SECRET-PW@127.0.0.1:1/token"));
    snprintf(path, sizeof(path), "%s/unreachable.json", g_scratch);
    assert_int_equal(json_dump_file(sa, path, 0), 0);
    json_decref(sa);
    c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, soon()), CSQL_ERR_TOKEN);
    assert_msg_has("token endpoint 127.0.0.1:1");
    assert_msg_has("could not connect");
    assert_msg_lacks("SECRET-PW");
    assert_no_secrets(&s, NULL);
    csql__creds_free(c);

    /* Plain http to a non-loopback token_uri is refused before anything is sent. */
    sa = json_load_file(g_sa_path, 0, NULL);
    json_object_set_new(sa, "token_uri", json_string("http://192.0.2.1/token?x=1"));
    snprintf(path, sizeof(path), "%s/plainhttp.json", g_scratch);
    assert_int_equal(json_dump_file(sa, path, 0), 0);
    json_decref(sa);
    c = new_creds(&cfg);
    assert_int_equal(token_rc(c, CSQL_TOKEN_ADMIN, soon()), CSQL_ERR_BAD_CONFIG);
    assert_msg_has("http://192.0.2.1/token");
    assert_no_secrets(&s, NULL);
    csql__creds_free(c);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, test_setup)
    const struct CMUnitTest tests[] = {
        T(test_service_account_file),
        T(test_service_account_json_string),
        T(test_service_account_via_env),
        T(test_authorized_user_file),
        T(test_gcloud_adc_file),
        T(test_metadata_server),
        T(test_adc_chain_order),
        T(test_no_credentials_anywhere),
        T(test_impersonation),
        T(test_impersonation_static_base),
        T(test_static_token),
        T(test_callback),
        T(test_expiry_driven_refresh),
        T(test_short_token_lifetime),
        T(test_concurrent_callers_share_one_fetch),
        T(test_token_endpoint_fault),
        T(test_metadata_and_iam_faults),
        T(test_malformed_answer),
        T(test_deadline),
        T(test_rejected_credentials_never_leak),
    };
#undef T
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
