/* csql_config: defaults, validation, copies, environment resolution, secrets never echoed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <unistd.h>

#include "config_internal.h"
#include "csql/config.h"
#include "csql/errors.h"
#include "url.h"

#define SECRET "s3cr3t-Marker"

static int setup(void **state)
{
    csql_config *cfg = NULL;
    assert_int_equal(csql_config_new(&cfg), 0);
    *state = cfg;
    unsetenv("GOOGLE_CLOUD_QUOTA_PROJECT");
    unsetenv("GOOGLE_CLOUD_UNIVERSE_DOMAIN");
    return 0;
}

static int teardown(void **state)
{
    csql_config_free(*state);
    unsetenv("GOOGLE_CLOUD_QUOTA_PROJECT");
    unsetenv("GOOGLE_CLOUD_UNIVERSE_DOMAIN");
    return 0;
}

/* rc is BAD_CONFIG and the message mentions each of the given words. */
static void expect_bad(int rc, const char *word1, const char *word2)
{
    assert_int_equal(rc, CSQL_ERR_BAD_CONFIG);
    const csql_error *e = csql_error_last();
    assert_int_equal(e->code, CSQL_ERR_BAD_CONFIG);
    assert_int_equal(e->category, CSQL_CAT_CONFIG);
    if (word1 != NULL && strstr(e->message, word1) == NULL) {
        fail_msg("message \"%s\" does not name \"%s\"", e->message, word1);
    }
    if (word2 != NULL && strstr(e->message, word2) == NULL) {
        fail_msg("message \"%s\" does not name \"%s\"", e->message, word2);
    }
}

static void expect_no_secret(void)
{
    const char *msg = csql_error_last()->message;
    if (strstr(msg, SECRET) != NULL) {
        fail_msg("message leaks a secret: %s", msg);
    }
}

static int dummy_token(csql_token_kind kind, char *buf, size_t buflen, int64_t *expires_at,
                       void *userdata)
{
    (void)kind;
    (void)buf;
    (void)buflen;
    (void)expires_at;
    (void)userdata;
    return 1;
}

static void dummy_refresh(const csql_refresh_event *ev, void *userdata)
{
    (void)ev;
    (void)userdata;
}

static void dummy_log(csql_log_level level, const char *line, void *userdata)
{
    (void)level;
    (void)line;
    (void)userdata;
}

static void test_defaults(void **state)
{
    const csql_config *cfg = *state;
    assert_int_equal(cfg->ip_type, CSQL_IP_PUBLIC);
    assert_false(cfg->iam_authn);
    assert_int_equal(cfg->dial_timeout_ms, 30000);
    assert_int_equal(cfg->refresh_timeout_ms, 60000);
    assert_int_equal(cfg->cred_kind, CSQL__CRED_ADC);
    assert_null(cfg->credentials_file);
    assert_null(cfg->credentials_json);
    assert_null(cfg->token);
    assert_null(cfg->login_token);
    assert_null(cfg->token_fn);
    assert_null(cfg->impersonate_chain);
    assert_null(cfg->quota_project);
    assert_null(cfg->admin_api_endpoint);
    assert_null(cfg->universe_domain);
    assert_null(cfg->iam_credentials_endpoint);
    assert_null(cfg->user_agent);
    assert_int_equal(cfg->refresh_strategy, CSQL_REFRESH_BACKGROUND);
    assert_null(cfg->rsa_key_pem);
    assert_int_equal(cfg->tcp_keepalive_s, 30);
    assert_true(cfg->mdx);
    assert_int_equal(cfg->server_port, 3307);
    assert_int_equal(cfg->event_loops, 1);
    assert_null(cfg->log_fn);
    assert_int_equal(csql_config_new(NULL), CSQL_ERR_INVALID_ARGUMENT);
    csql_config_free(NULL);
}

static void test_null_config_everywhere(void **state)
{
    (void)state;
    const int inval = CSQL_ERR_INVALID_ARGUMENT;
    assert_int_equal(csql_config_set_ip_type(NULL, CSQL_IP_PUBLIC), inval);
    assert_int_equal(csql_config_set_iam_authn(NULL, 1), inval);
    assert_int_equal(csql_config_set_dial_timeout_ms(NULL, 10), inval);
    assert_int_equal(csql_config_set_refresh_timeout_ms(NULL, 10), inval);
    assert_int_equal(csql_config_set_credentials_file(NULL, "/x"), inval);
    assert_int_equal(csql_config_set_credentials_json(NULL, "{}"), inval);
    assert_int_equal(csql_config_set_token(NULL, "t"), inval);
    assert_int_equal(csql_config_set_login_token(NULL, "t"), inval);
    assert_int_equal(csql_config_set_token_callback(NULL, dummy_token, NULL), inval);
    assert_int_equal(csql_config_set_impersonate_service_account(NULL, "a@b"), inval);
    assert_int_equal(csql_config_set_quota_project(NULL, "p"), inval);
    assert_int_equal(csql_config_set_admin_api_endpoint(NULL, "https://x"), inval);
    assert_int_equal(csql_config_set_universe_domain(NULL, "x.com"), inval);
    assert_int_equal(csql_config_set_iam_credentials_endpoint(NULL, "https://x"), inval);
    assert_int_equal(csql_config_set_user_agent(NULL, "x"), inval);
    assert_int_equal(csql_config_set_refresh_strategy(NULL, CSQL_REFRESH_LAZY), inval);
    assert_int_equal(csql_config_set_rsa_key_pem(NULL, "x", 1), inval);
    assert_int_equal(csql_config_set_tcp_keepalive_s(NULL, 1), inval);
    assert_int_equal(csql_config_set_mdx(NULL, 1), inval);
    assert_int_equal(csql_config_set_server_port(NULL, 1), inval);
    assert_int_equal(csql_config_set_event_loops(NULL, 1), inval);
    assert_int_equal(csql_config_set_log(NULL, dummy_log, NULL, CSQL_LOG_INFO), inval);
    assert_int_equal(csql_config_set_refresh_callback(NULL, NULL, NULL), inval);
    assert_int_equal(csql_error_last()->category, CSQL_CAT_USAGE);
    assert_int_equal(csql__config_copy(NULL, NULL), inval);
    assert_int_equal(csql__config_resolve(NULL), inval);
}

static void test_ip_type(void **state)
{
    csql_config *cfg = *state;
    assert_int_equal(csql_config_set_ip_type(cfg, CSQL_IP_PRIVATE), 0);
    assert_int_equal(cfg->ip_type, CSQL_IP_PRIVATE);
    assert_int_equal(csql_config_set_ip_type(cfg, CSQL_IP_PSC), 0);
    assert_int_equal(csql_config_set_ip_type(cfg, CSQL_IP_AUTO), 0);
    assert_int_equal(cfg->ip_type, CSQL_IP_AUTO);
    assert_int_equal(csql_config_set_ip_type(cfg, CSQL_IP_DEFAULT), 0);
    assert_int_equal(cfg->ip_type, CSQL_IP_PUBLIC);
    expect_bad(csql_config_set_ip_type(cfg, (csql_ip_type)9), "ip_type", "9");
    expect_bad(csql_config_set_ip_type(cfg, (csql_ip_type)-1), "ip_type", "-1");
    assert_int_equal(cfg->ip_type, CSQL_IP_PUBLIC);
}

static void test_flags(void **state)
{
    csql_config *cfg = *state;
    assert_int_equal(csql_config_set_iam_authn(cfg, 1), 0);
    assert_true(cfg->iam_authn);
    assert_int_equal(csql_config_set_iam_authn(cfg, 0), 0);
    assert_false(cfg->iam_authn);
    assert_int_equal(csql_config_set_mdx(cfg, 0), 0);
    assert_false(cfg->mdx);
    assert_int_equal(csql_config_set_mdx(cfg, 7), 0);
    assert_true(cfg->mdx);
}

static void test_timeouts(void **state)
{
    csql_config *cfg = *state;
    assert_int_equal(csql_config_set_dial_timeout_ms(cfg, 1), 0);
    assert_int_equal(cfg->dial_timeout_ms, 1);
    assert_int_equal(csql_config_set_dial_timeout_ms(cfg, 3600000), 0);
    assert_int_equal(cfg->dial_timeout_ms, 3600000);
    expect_bad(csql_config_set_dial_timeout_ms(cfg, 0), "dial_timeout_ms", "0");
    expect_bad(csql_config_set_dial_timeout_ms(cfg, 3600001), "dial_timeout_ms", "3600001");
    assert_int_equal(cfg->dial_timeout_ms, 3600000);
    assert_int_equal(csql_config_set_refresh_timeout_ms(cfg, 500), 0);
    assert_int_equal(cfg->refresh_timeout_ms, 500);
    expect_bad(csql_config_set_refresh_timeout_ms(cfg, 0), "refresh_timeout_ms", NULL);
    expect_bad(csql_config_set_refresh_timeout_ms(cfg, UINT32_MAX), "refresh_timeout_ms",
               "4294967295");
    assert_int_equal(cfg->refresh_timeout_ms, 500);
}

static void test_strategy_keepalive_port_log(void **state)
{
    csql_config *cfg = *state;
    assert_int_equal(csql_config_set_refresh_strategy(cfg, CSQL_REFRESH_LAZY), 0);
    assert_int_equal(cfg->refresh_strategy, CSQL_REFRESH_LAZY);
    expect_bad(csql_config_set_refresh_strategy(cfg, (csql_refresh_strategy)2),
               "refresh_strategy", "2");
    assert_int_equal(csql_config_set_tcp_keepalive_s(cfg, 0), 0);
    assert_int_equal(cfg->tcp_keepalive_s, 0);
    assert_int_equal(csql_config_set_tcp_keepalive_s(cfg, 60), 0);
    assert_int_equal(cfg->tcp_keepalive_s, 60);
    expect_bad(csql_config_set_tcp_keepalive_s(cfg, 40000), "tcp_keepalive_s", "40000");
    assert_int_equal(csql_config_set_server_port(cfg, 13307), 0);
    assert_int_equal(cfg->server_port, 13307);
    expect_bad(csql_config_set_server_port(cfg, 0), "server_port", "0");
    assert_int_equal(csql_config_set_event_loops(cfg, 4), 0);
    assert_int_equal(cfg->event_loops, 4);
    expect_bad(csql_config_set_event_loops(cfg, CSQL_EVENT_LOOPS_MAX + 1), "event_loops", "65");
    assert_int_equal(cfg->event_loops, 4);
    int ud = 0;
    assert_int_equal(csql_config_set_log(cfg, dummy_log, &ud, CSQL_LOG_DEBUG), 0);
    assert_ptr_equal(cfg->log_fn, dummy_log);
    assert_ptr_equal(cfg->log_userdata, &ud);
    assert_int_equal(cfg->log_level, CSQL_LOG_DEBUG);
    expect_bad(csql_config_set_log(cfg, dummy_log, &ud, (csql_log_level)4), "log level", "4");
    assert_int_equal(csql_config_set_log(cfg, NULL, &ud, CSQL_LOG_ERROR), 0);
    assert_null(cfg->log_fn);
    assert_int_equal(csql_config_set_refresh_callback(cfg, dummy_refresh, &ud), 0);
    assert_ptr_equal(cfg->refresh_fn, dummy_refresh);
    assert_ptr_equal(cfg->refresh_userdata, &ud);
    /* Removing the callback forgets its userdata too. */
    assert_int_equal(csql_config_set_refresh_callback(cfg, NULL, &ud), 0);
    assert_null(cfg->refresh_fn);
    assert_null(cfg->refresh_userdata);
}

static void test_credentials_file_and_json(void **state)
{
    csql_config *cfg = *state;
    char path[32] = "/tmp/creds.json";
    assert_int_equal(csql_config_set_credentials_file(cfg, path), 0);
    path[1] = 'X'; /* the config holds its own copy */
    assert_string_equal(cfg->credentials_file, "/tmp/creds.json");
    assert_int_equal(cfg->cred_kind, CSQL__CRED_FILE);
    expect_bad(csql_config_set_credentials_file(cfg, ""), "credentials_file", NULL);
    assert_int_equal(csql_config_set_credentials_file(cfg, NULL), CSQL_ERR_INVALID_ARGUMENT);
    assert_string_equal(cfg->credentials_file, "/tmp/creds.json");

    const char *json = "  {\"type\":\"service_account\",\"private_key\":\"" SECRET "\"}\n";
    assert_int_equal(csql_config_set_credentials_json(cfg, json), 0);
    assert_int_equal(cfg->cred_kind, CSQL__CRED_JSON);
    assert_null(cfg->credentials_file); /* one kind clears the others */
    assert_string_equal(cfg->credentials_json, json);
    expect_bad(csql_config_set_credentials_json(cfg, "not json " SECRET), "credentials_json",
               NULL);
    expect_no_secret();
    expect_bad(csql_config_set_credentials_json(cfg, "{\"k\":\"" SECRET "\""), "credentials_json",
               NULL);
    expect_no_secret();
    expect_bad(csql_config_set_credentials_json(cfg, ""), "credentials_json", NULL);
    assert_int_equal(csql_config_set_credentials_json(cfg, NULL), CSQL_ERR_INVALID_ARGUMENT);
    assert_string_equal(cfg->credentials_json, json);
}

static void test_tokens_and_callback(void **state)
{
    csql_config *cfg = *state;
    assert_int_equal(csql_config_set_login_token(cfg, "login-1"), 0);
    assert_int_equal(csql_config_set_token(cfg, "ya29.token-1"), 0);
    assert_int_equal(cfg->cred_kind, CSQL__CRED_TOKEN);
    assert_string_equal(cfg->token, "ya29.token-1");
    assert_string_equal(cfg->login_token, "login-1"); /* kept with the token */
    assert_int_equal(csql_config_set_token(cfg, "ya29.token-2"), 0);
    assert_string_equal(cfg->token, "ya29.token-2");
    assert_string_equal(cfg->login_token, "login-1");
    assert_int_equal(csql_config_set_login_token(cfg, NULL), 0);
    assert_null(cfg->login_token);

    expect_bad(csql_config_set_token(cfg, "has space " SECRET), "token", NULL);
    expect_no_secret();
    expect_bad(csql_config_set_token(cfg, "crlf\r\nX-Injected: " SECRET), "token", NULL);
    expect_no_secret();
    expect_bad(csql_config_set_token(cfg, ""), "token", NULL);
    expect_bad(csql_config_set_login_token(cfg, "tab\t" SECRET), "login_token", NULL);
    expect_no_secret();
    assert_int_equal(csql_config_set_token(cfg, NULL), CSQL_ERR_INVALID_ARGUMENT);
    char *huge = malloc(20000);
    assert_non_null(huge);
    memset(huge, 'a', 19999);
    huge[19999] = '\0';
    expect_bad(csql_config_set_token(cfg, huge), "token", NULL);
    assert_null(strstr(csql_error_last()->message, "aaaaaaaa"));
    free(huge);
    assert_string_equal(cfg->token, "ya29.token-2");

    int ud = 0;
    assert_int_equal(csql_config_set_token_callback(cfg, dummy_token, &ud), 0);
    assert_int_equal(cfg->cred_kind, CSQL__CRED_CALLBACK);
    assert_null(cfg->token);
    assert_ptr_equal(cfg->token_fn, dummy_token);
    assert_ptr_equal(cfg->token_fn_userdata, &ud);
    assert_int_equal(csql_config_set_token_callback(cfg, NULL, NULL), CSQL_ERR_INVALID_ARGUMENT);

    assert_int_equal(csql_config_set_credentials_file(cfg, "/f.json"), 0);
    assert_null(cfg->token_fn);
    assert_null(cfg->token_fn_userdata);
    assert_int_equal(csql_config_set_token(cfg, "t"), 0);
    assert_null(cfg->credentials_file);
}

static void test_login_token_without_token_fails_resolve(void **state)
{
    csql_config *cfg = *state;
    assert_int_equal(csql_config_set_login_token(cfg, "login"), 0);
    expect_bad(csql__config_resolve(cfg), "login_token", "token");
    expect_no_secret();
}

static void test_impersonation_chain(void **state)
{
    csql_config *cfg = *state;
    const char *chain = "target@p.iam.gserviceaccount.com,d1@p.iam.gserviceaccount.com,d2";
    assert_int_equal(csql_config_set_impersonate_service_account(cfg, chain), 0);
    assert_string_equal(cfg->impersonate_chain, chain);
    expect_bad(csql_config_set_impersonate_service_account(cfg, "no-at-sign"),
               "impersonate_service_account", "no-at-sign");
    expect_bad(csql_config_set_impersonate_service_account(cfg, "a@b,,c"),
               "impersonate_service_account", NULL);
    expect_bad(csql_config_set_impersonate_service_account(cfg, "a@b,"),
               "impersonate_service_account", NULL);
    expect_bad(csql_config_set_impersonate_service_account(cfg, ""),
               "impersonate_service_account", NULL);
    expect_bad(csql_config_set_impersonate_service_account(cfg, "a b@c"),
               "impersonate_service_account", NULL);
    expect_bad(csql_config_set_impersonate_service_account(
                   cfg, "a@b,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16"),
               "impersonate_service_account", NULL);
    assert_string_equal(cfg->impersonate_chain, chain);
    /* Impersonation sits on top of any credentials kind. */
    assert_int_equal(csql_config_set_token(cfg, "t"), 0);
    assert_string_equal(cfg->impersonate_chain, chain);
    assert_int_equal(csql_config_set_impersonate_service_account(cfg, NULL), 0);
    assert_null(cfg->impersonate_chain);
}

static void test_quota_project_universe_user_agent(void **state)
{
    csql_config *cfg = *state;
    assert_int_equal(csql_config_set_quota_project(cfg, "my-project"), 0);
    assert_string_equal(cfg->quota_project, "my-project");
    expect_bad(csql_config_set_quota_project(cfg, "bad project"), "quota_project", "bad project");
    expect_bad(csql_config_set_quota_project(cfg, ""), "quota_project", NULL);
    assert_int_equal(csql_config_set_quota_project(cfg, NULL), 0);
    assert_null(cfg->quota_project);

    assert_int_equal(csql_config_set_universe_domain(cfg, "example-cloud.net"), 0);
    assert_string_equal(cfg->universe_domain, "example-cloud.net");
    expect_bad(csql_config_set_universe_domain(cfg, "bad_domain.com"), "universe_domain",
               "bad_domain.com");
    expect_bad(csql_config_set_universe_domain(cfg, "a..b"), "universe_domain", "a..b");
    expect_bad(csql_config_set_universe_domain(cfg, "-a.com"), "universe_domain", NULL);
    expect_bad(csql_config_set_universe_domain(cfg, "a-.com"), "universe_domain", NULL);
    expect_bad(csql_config_set_universe_domain(cfg, "https://x.com"), "universe_domain", NULL);
    expect_bad(csql_config_set_universe_domain(cfg, ""), "universe_domain", NULL);
    assert_string_equal(cfg->universe_domain, "example-cloud.net");
    assert_int_equal(csql_config_set_universe_domain(cfg, NULL), 0);
    assert_null(cfg->universe_domain);

    assert_int_equal(csql_config_set_user_agent(cfg, "my-app/1.2 (linux)"), 0);
    assert_string_equal(cfg->user_agent, "my-app/1.2 (linux)");
    expect_bad(csql_config_set_user_agent(cfg, "bad\r\nX-Header: 1"), "user_agent", NULL);
    expect_bad(csql_config_set_user_agent(cfg, "caf\xc3\xa9"), "user_agent", NULL);
    char longua[300];
    memset(longua, 'u', sizeof(longua) - 1);
    longua[sizeof(longua) - 1] = '\0';
    expect_bad(csql_config_set_user_agent(cfg, longua), "user_agent", NULL);
    assert_string_equal(cfg->user_agent, "my-app/1.2 (linux)");
    assert_int_equal(csql_config_set_user_agent(cfg, ""), 0);
    assert_null(cfg->user_agent);
}

static void test_endpoints(void **state)
{
    csql_config *cfg = *state;
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, "https://sqladmin.example.com//"), 0);
    assert_string_equal(cfg->admin_api_endpoint, "https://sqladmin.example.com");
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, "http://127.0.0.1:8080/api/"), 0);
    assert_string_equal(cfg->admin_api_endpoint, "http://127.0.0.1:8080/api");
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, "http://[::1]:9000"), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, "HTTP://LOCALHOST:9000"), 0);
    expect_bad(csql_config_set_admin_api_endpoint(cfg, "http://example.com"), "admin_api_endpoint",
               "http://example.com");
    expect_bad(csql_config_set_admin_api_endpoint(cfg, "ftp://127.0.0.1"), "admin_api_endpoint",
               NULL);
    expect_bad(csql_config_set_admin_api_endpoint(cfg, "https://"), "admin_api_endpoint", NULL);
    expect_bad(csql_config_set_admin_api_endpoint(cfg, "https://x.com/?q=1"),
               "admin_api_endpoint", "query");
    expect_bad(csql_config_set_admin_api_endpoint(cfg, "https://user:" SECRET "@x.com"),
               "admin_api_endpoint", "***@x.com");
    expect_no_secret();
    assert_string_equal(cfg->admin_api_endpoint, "HTTP://LOCALHOST:9000");
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, NULL), 0);
    assert_null(cfg->admin_api_endpoint);

    assert_int_equal(csql_config_set_iam_credentials_endpoint(cfg, "https://iam.example.com/"), 0);
    assert_string_equal(cfg->iam_credentials_endpoint, "https://iam.example.com");
    expect_bad(csql_config_set_iam_credentials_endpoint(cfg, "http://10.0.0.1"),
               "iam_credentials_endpoint", "http://10.0.0.1");
    assert_int_equal(csql_config_set_iam_credentials_endpoint(cfg, NULL), 0);
    assert_null(cfg->iam_credentials_endpoint);
}

static void test_url_allowed_table(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        int ok;
    } cases[] = {
        {"https://sqladmin.googleapis.com", 1},
        {"https://sqladmin.googleapis.com/", 1},
        {"https://sqladmin.googleapis.com:443/v1?alt=json", 1},
        {"HTTPS://Example.COM", 1},
        {"https://[2001:db8::1]:8443/x", 1},
        {"http://127.0.0.1", 1},
        {"http://127.255.1.2:80/x", 1},
        {"http://localhost:8080", 1},
        {"http://[::1]:8080/", 1},
        {"http://[::ffff:127.0.0.1]/", 1},
        {"http://128.0.0.1", 0},
        {"http://10.0.0.1", 0},
        {"http://[::2]", 0},
        {"http://localhost.evil.com", 0},
        {"http://127.0.0.1.nip.io", 0},
        {"http://metadata.google.internal", 0},
        {"https://", 0},
        {"https:///path", 0},
        {"https://:443", 0},
        {"https://host:", 0},
        {"https://host:0", 0},
        {"https://host:65536", 0},
        {"https://host:12a", 0},
        {"https://[::1", 0},
        {"https://ho st", 0},
        {"https://host/pa th", 0},
        {"https://host/\r\n", 0},
        {"https://user@host", 0},
        {"ftp://host", 0},
        {"host", 0},
        {"", 0},
        {NULL, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (csql__url_allowed(cases[i].url) != cases[i].ok) {
            fail_msg("csql__url_allowed(\"%s\") != %d", cases[i].url ? cases[i].url : "(null)",
                     cases[i].ok);
        }
    }
}

static void expect_redacted(const char *url, size_t len, const char *want)
{
    char buf[64];
    memset(buf, 'Z', sizeof(buf));
    csql__url_redact(url, buf, len);
    assert_string_equal(buf, want);
    assert_int_equal(buf[len], 'Z'); /* nothing written past len */
}

static void test_url_redact(void **state)
{
    (void)state;
    expect_redacted("https://host/x", 32, "https://host/x");
    expect_redacted("https://user:pw@host/x", 32, "https://***@host/x");
    expect_redacted("user:pw@host/x://y", 32, "***@host/x://y");
    expect_redacted("https://a@b@host", 32, "https://***@host");
    expect_redacted("https://host/a@b", 32, "https://host/a@b");
    expect_redacted("https://h\r\n/", 32, "https://h?" "?/");
    expect_redacted("https://user:pw@host", 10, "https://*");
    expect_redacted("https://user:pw@host", 11, "https://**");
    expect_redacted("https://user:pw@host", 12, "https://***");
    expect_redacted("https://user:pw@host", 13, "https://***@");
    expect_redacted("abcdef", 4, "abc");
    expect_redacted("abcdef", 1, "");
    expect_redacted(NULL, 32, "(null)");
    char untouched = 'Q';
    csql__url_redact("x", &untouched, 0);
    assert_int_equal(untouched, 'Q');
}

/* A PEM private key; bits 0 makes an EC key; passphrase encrypts it. */
static char *make_key_pem(int bits, const char *passphrase, size_t *len)
{
    EVP_PKEY *key = bits > 0 ? EVP_RSA_gen((unsigned)bits) : EVP_EC_gen("P-256");
    assert_non_null(key);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    if (passphrase != NULL) {
        assert_int_equal(PEM_write_bio_PrivateKey(bio, key, EVP_aes_128_cbc(),
                                                  (const unsigned char *)passphrase,
                                                  (int)strlen(passphrase), NULL, NULL),
                         1);
    } else {
        assert_int_equal(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);
    }
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *pem = malloc((size_t)n + 1);
    assert_non_null(pem);
    memcpy(pem, data, (size_t)n);
    pem[n] = '\0';
    *len = (size_t)n;
    BIO_free(bio);
    EVP_PKEY_free(key);
    return pem;
}

static void test_rsa_key(void **state)
{
    csql_config *cfg = *state;
    size_t len;
    char *pem = make_key_pem(2048, NULL, &len);
    assert_int_equal(csql_config_set_rsa_key_pem(cfg, pem, len), 0);
    assert_int_equal(cfg->rsa_key_pem_len, len);
    assert_memory_equal(cfg->rsa_key_pem, pem, len);
    assert_ptr_not_equal(cfg->rsa_key_pem, pem);

    size_t small_len;
    char *small = make_key_pem(1024, NULL, &small_len);
    expect_bad(csql_config_set_rsa_key_pem(cfg, small, small_len), "rsa_key_pem", "1024");
    assert_null(strstr(csql_error_last()->message, "BEGIN"));
    size_t ec_len;
    char *ec = make_key_pem(0, NULL, &ec_len);
    expect_bad(csql_config_set_rsa_key_pem(cfg, ec, ec_len), "rsa_key_pem", "RSA");
    /* Encrypted keys are refused without prompting on a terminal. */
    size_t enc_len;
    char *enc = make_key_pem(2048, "pw", &enc_len);
    expect_bad(csql_config_set_rsa_key_pem(cfg, enc, enc_len), "rsa_key_pem", NULL);
    expect_bad(csql_config_set_rsa_key_pem(cfg, SECRET, strlen(SECRET)), "rsa_key_pem", NULL);
    expect_no_secret();
    expect_bad(csql_config_set_rsa_key_pem(cfg, pem, 0), "rsa_key_pem", NULL);
    /* Truncated PEM. */
    expect_bad(csql_config_set_rsa_key_pem(cfg, pem, len / 2), "rsa_key_pem", NULL);
    assert_int_equal(cfg->rsa_key_pem_len, len); /* unchanged by failures */
    assert_int_equal(csql_config_set_rsa_key_pem(cfg, NULL, 0), 0);
    assert_null(cfg->rsa_key_pem);
    assert_int_equal(cfg->rsa_key_pem_len, 0);
    free(pem);
    free(small);
    free(ec);
    free(enc);
}

static void test_copy_is_deep(void **state)
{
    csql_config *cfg = *state;
    size_t len;
    char *pem = make_key_pem(2048, NULL, &len);
    assert_int_equal(csql_config_set_rsa_key_pem(cfg, pem, len), 0);
    assert_int_equal(csql_config_set_token(cfg, "tok"), 0);
    assert_int_equal(csql_config_set_login_token(cfg, "login"), 0);
    assert_int_equal(csql_config_set_impersonate_service_account(cfg, "a@b"), 0);
    assert_int_equal(csql_config_set_quota_project(cfg, "qp"), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, "https://a.example.com"), 0);
    assert_int_equal(csql_config_set_universe_domain(cfg, "u.example.com"), 0);
    assert_int_equal(csql_config_set_iam_credentials_endpoint(cfg, "https://i.example.com"), 0);
    assert_int_equal(csql_config_set_user_agent(cfg, "ua/1"), 0);
    assert_int_equal(csql_config_set_dial_timeout_ms(cfg, 1234), 0);
    csql_config *copy = NULL;
    assert_int_equal(csql__config_copy(cfg, &copy), 0);
    assert_ptr_not_equal(copy->token, cfg->token);
    assert_ptr_not_equal(copy->rsa_key_pem, cfg->rsa_key_pem);
    /* Later changes to the original do not reach the copy. */
    assert_int_equal(csql_config_set_token(cfg, "other"), 0);
    csql_config_free(cfg);
    *state = NULL;
    assert_int_equal(copy->cred_kind, CSQL__CRED_TOKEN);
    assert_string_equal(copy->token, "tok");
    assert_string_equal(copy->login_token, "login");
    assert_string_equal(copy->impersonate_chain, "a@b");
    assert_string_equal(copy->quota_project, "qp");
    assert_string_equal(copy->admin_api_endpoint, "https://a.example.com");
    assert_string_equal(copy->universe_domain, "u.example.com");
    assert_string_equal(copy->iam_credentials_endpoint, "https://i.example.com");
    assert_string_equal(copy->user_agent, "ua/1");
    assert_int_equal(copy->rsa_key_pem_len, len);
    assert_memory_equal(copy->rsa_key_pem, pem, len);
    assert_int_equal(copy->dial_timeout_ms, 1234);
    csql_config_free(copy);
    free(pem);
}

static void test_resolve_defaults(void **state)
{
    csql_config *cfg = *state;
    assert_int_equal(csql__config_resolve(cfg), 0);
    assert_null(cfg->quota_project);
    assert_string_equal(cfg->universe_domain, "googleapis.com");
    assert_string_equal(cfg->admin_api_endpoint, "https://sqladmin.googleapis.com");
    assert_string_equal(cfg->iam_credentials_endpoint, "https://iamcredentials.googleapis.com");
    assert_int_equal(cfg->event_loops, 1);
    /* Idempotent. */
    assert_int_equal(csql__config_resolve(cfg), 0);
    assert_string_equal(cfg->admin_api_endpoint, "https://sqladmin.googleapis.com");
}

/* event_loops 0 becomes one loop per online CPU in the dialer's copy. */
static void test_resolve_event_loops_per_cpu(void **state)
{
    csql_config *cfg = *state;
    assert_int_equal(csql_config_set_event_loops(cfg, 0), 0);
    assert_int_equal(cfg->event_loops, 0);
    assert_int_equal(csql__config_resolve(cfg), 0);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_true(cpus >= 1);
    assert_int_equal(cfg->event_loops, cpus > CSQL_EVENT_LOOPS_MAX ? CSQL_EVENT_LOOPS_MAX : cpus);
}

static void test_resolve_from_environment(void **state)
{
    csql_config *cfg = *state;
    setenv("GOOGLE_CLOUD_QUOTA_PROJECT", "env-project", 1);
    setenv("GOOGLE_CLOUD_UNIVERSE_DOMAIN", "my-universe.example", 1);
    csql_config *copy = NULL;
    assert_int_equal(csql__config_copy(cfg, &copy), 0);
    assert_int_equal(csql__config_resolve(copy), 0);
    assert_string_equal(copy->quota_project, "env-project");
    assert_string_equal(copy->universe_domain, "my-universe.example");
    assert_string_equal(copy->admin_api_endpoint, "https://sqladmin.my-universe.example");
    assert_string_equal(copy->iam_credentials_endpoint,
                        "https://iamcredentials.my-universe.example");
    csql_config_free(copy);
    /* The caller's config was not touched. */
    assert_null(cfg->quota_project);
    assert_null(cfg->admin_api_endpoint);

    /* Values set by the caller win over the environment. */
    assert_int_equal(csql_config_set_quota_project(cfg, "mine"), 0);
    assert_int_equal(csql_config_set_universe_domain(cfg, "mine.example"), 0);
    assert_int_equal(csql_config_set_admin_api_endpoint(cfg, "http://127.0.0.1:1234/"), 0);
    assert_int_equal(csql__config_resolve(cfg), 0);
    assert_string_equal(cfg->quota_project, "mine");
    assert_string_equal(cfg->admin_api_endpoint, "http://127.0.0.1:1234");
    assert_string_equal(cfg->iam_credentials_endpoint, "https://iamcredentials.mine.example");

    /* An empty variable counts as unset. */
    csql_config *fresh = NULL;
    assert_int_equal(csql_config_new(&fresh), 0);
    setenv("GOOGLE_CLOUD_QUOTA_PROJECT", "", 1);
    setenv("GOOGLE_CLOUD_UNIVERSE_DOMAIN", "", 1);
    assert_int_equal(csql__config_resolve(fresh), 0);
    assert_null(fresh->quota_project);
    assert_string_equal(fresh->universe_domain, "googleapis.com");
    csql_config_free(fresh);
}

static void test_resolve_bad_environment(void **state)
{
    csql_config *cfg = *state;
    setenv("GOOGLE_CLOUD_UNIVERSE_DOMAIN", "not a domain", 1);
    expect_bad(csql__config_resolve(cfg), "GOOGLE_CLOUD_UNIVERSE_DOMAIN", "not a domain");
    unsetenv("GOOGLE_CLOUD_UNIVERSE_DOMAIN");
    setenv("GOOGLE_CLOUD_QUOTA_PROJECT", "bad\nproject", 1);
    csql_config *fresh = NULL;
    assert_int_equal(csql_config_new(&fresh), 0);
    expect_bad(csql__config_resolve(fresh), "GOOGLE_CLOUD_QUOTA_PROJECT", NULL);
    csql_config_free(fresh);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_null_config_everywhere),
        T(test_ip_type),
        T(test_flags),
        T(test_timeouts),
        T(test_strategy_keepalive_port_log),
        T(test_credentials_file_and_json),
        T(test_tokens_and_callback),
        T(test_login_token_without_token_fails_resolve),
        T(test_impersonation_chain),
        T(test_quota_project_universe_user_agent),
        T(test_endpoints),
        T(test_url_allowed_table),
        T(test_url_redact),
        T(test_rsa_key),
        T(test_copy_is_deep),
        T(test_resolve_defaults),
        T(test_resolve_event_loops_per_cpu),
        T(test_resolve_from_environment),
        T(test_resolve_bad_environment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
