/*
 * csql_config: typed setters that validate and copy, the dialer's deep copy,
 * and resolution of what the environment decides (quota project, universe
 * domain, endpoints). Messages name the option and its value, except for
 * secrets (tokens, credentials JSON, keys), which are never echoed.
 */
#include "config_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "error.h"
#include "url.h"

#define DEFAULT_DIAL_TIMEOUT_MS 30000
#define DEFAULT_REFRESH_TIMEOUT_MS 60000
#define MAX_TIMEOUT_MS 3600000u
#define DEFAULT_KEEPALIVE_S 30
#define MAX_KEEPALIVE_S 32767 /* Linux MAX_TCP_KEEPIDLE */
#define DEFAULT_SERVER_PORT 3307
#define DEFAULT_UNIVERSE "googleapis.com"

#define MAX_PATH_LEN 4096
#define MAX_JSON_LEN (1024 * 1024)
#define MAX_TOKEN_LEN 16384
#define MAX_CHAIN_LEN 4096
#define MAX_CHAIN_ITEMS 16
#define MAX_PROJECT_LEN 256
#define MAX_DOMAIN_LEN 253
#define MAX_USER_AGENT_LEN 256
#define MAX_KEY_PEM_LEN (64 * 1024)
#define MIN_RSA_BITS 2048

#define ENV_QUOTA_PROJECT "GOOGLE_CLOUD_QUOTA_PROJECT"
#define ENV_UNIVERSE_DOMAIN "GOOGLE_CLOUD_UNIVERSE_DOMAIN"

/* ---- small helpers ---- */

static int null_cfg(const char *setter)
{
    return csql__error(CSQL_ERR_INVALID_ARGUMENT, "%s: config is NULL", setter);
}

static void free_secret(char **p, size_t len)
{
    if (*p != NULL) {
        OPENSSL_cleanse(*p, len);
        free(*p);
        *p = NULL;
    }
}

static void free_secret_str(char **p)
{
    free_secret(p, *p ? strlen(*p) : 0);
}

static void replace_str(char **slot, char *value)
{
    free(*slot);
    *slot = value;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int nomem(const char *option)
{
    return csql__error(CSQL_ERR_NOMEM, "out of memory copying %s", option);
}

/* A bounded, printable rendering of a (non-secret) value for messages. */
typedef struct shown_value {
    char s[204];
} shown_value;

static shown_value show(const char *v)
{
    shown_value out;
    size_t i = 0;
    for (; v[i] != '\0' && i < 200; i++) {
        unsigned char c = (unsigned char)v[i];
        out.s[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (v[i] != '\0') {
        memcpy(out.s + i, "...", 3);
        i += 3;
    }
    out.s[i] = '\0';
    return out;
}

/* Printable ASCII, optionally excluding the space; bounded by max. */
static int printable(const char *s, size_t max, int allow_space, size_t *len_out)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= max || c > 0x7e || c < 0x20 || (c == 0x20 && !allow_space)) {
            return 0;
        }
    }
    *len_out = n;
    return 1;
}

/* ---- lifecycle ---- */

int csql_config_new(csql_config **out)
{
    if (out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_config_new: out is NULL");
    }
    *out = NULL;
    csql_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory allocating a config");
    }
    cfg->ip_type = CSQL_IP_PUBLIC;
    cfg->dial_timeout_ms = DEFAULT_DIAL_TIMEOUT_MS;
    cfg->refresh_timeout_ms = DEFAULT_REFRESH_TIMEOUT_MS;
    cfg->cred_kind = CSQL__CRED_ADC;
    cfg->refresh_strategy = CSQL_REFRESH_BACKGROUND;
    cfg->tcp_keepalive_s = DEFAULT_KEEPALIVE_S;
    cfg->mdx = true;
    cfg->server_port = DEFAULT_SERVER_PORT;
    cfg->event_loops = 1;
    cfg->log_level = CSQL_LOG_ERROR;
    *out = cfg;
    return CSQL_OK;
}

/* Drop every credentials option (secrets wiped). */
static void clear_credentials(csql_config *cfg)
{
    replace_str(&cfg->credentials_file, NULL);
    free_secret_str(&cfg->credentials_json);
    free_secret_str(&cfg->token);
    free_secret_str(&cfg->login_token);
    cfg->token_fn = NULL;
    cfg->token_fn_userdata = NULL;
    cfg->cred_kind = CSQL__CRED_ADC;
}

void csql_config_free(csql_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    clear_credentials(cfg);
    free(cfg->impersonate_chain);
    free(cfg->quota_project);
    free(cfg->admin_api_endpoint);
    free(cfg->universe_domain);
    free(cfg->iam_credentials_endpoint);
    free(cfg->user_agent);
    free_secret(&cfg->rsa_key_pem, cfg->rsa_key_pem_len);
    free(cfg);
}

/* ---- plain values ---- */

int csql_config_set_ip_type(csql_config *cfg, csql_ip_type type)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_ip_type");
    }
    switch (type) {
    case CSQL_IP_DEFAULT:
        cfg->ip_type = CSQL_IP_PUBLIC;
        return CSQL_OK;
    case CSQL_IP_PUBLIC:
    case CSQL_IP_PRIVATE:
    case CSQL_IP_PSC:
    case CSQL_IP_AUTO:
        cfg->ip_type = type;
        return CSQL_OK;
    }
    return csql__error(CSQL_ERR_BAD_CONFIG,
                       "ip_type %d is not one of DEFAULT, PUBLIC, PRIVATE, PSC, AUTO", (int)type);
}

int csql_config_set_iam_authn(csql_config *cfg, int enabled)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_iam_authn");
    }
    cfg->iam_authn = enabled != 0;
    return CSQL_OK;
}

static int set_timeout(csql_config *cfg, uint32_t *slot, const char *option, uint32_t ms)
{
    if (cfg == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "%s: config is NULL", option);
    }
    if (ms < 1 || ms > MAX_TIMEOUT_MS) {
        return csql__error(CSQL_ERR_BAD_CONFIG, "%s %u is out of range (1..%u ms)", option, ms,
                           MAX_TIMEOUT_MS);
    }
    *slot = ms;
    return CSQL_OK;
}

int csql_config_set_dial_timeout_ms(csql_config *cfg, uint32_t ms)
{
    return set_timeout(cfg, cfg ? &cfg->dial_timeout_ms : NULL, "dial_timeout_ms", ms);
}

int csql_config_set_refresh_timeout_ms(csql_config *cfg, uint32_t ms)
{
    return set_timeout(cfg, cfg ? &cfg->refresh_timeout_ms : NULL, "refresh_timeout_ms", ms);
}

int csql_config_set_refresh_strategy(csql_config *cfg, csql_refresh_strategy s)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_refresh_strategy");
    }
    if (s != CSQL_REFRESH_BACKGROUND && s != CSQL_REFRESH_LAZY) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "refresh_strategy %d is not one of BACKGROUND, LAZY", (int)s);
    }
    cfg->refresh_strategy = s;
    return CSQL_OK;
}

int csql_config_set_tcp_keepalive_s(csql_config *cfg, uint32_t seconds)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_tcp_keepalive_s");
    }
    if (seconds > MAX_KEEPALIVE_S) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "tcp_keepalive_s %u is out of range (0 = off, or 1..%d s)", seconds,
                           MAX_KEEPALIVE_S);
    }
    cfg->tcp_keepalive_s = seconds;
    return CSQL_OK;
}

int csql_config_set_mdx(csql_config *cfg, int enabled)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_mdx");
    }
    cfg->mdx = enabled != 0;
    return CSQL_OK;
}

int csql_config_set_server_port(csql_config *cfg, uint16_t port)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_server_port");
    }
    if (port == 0) {
        return csql__error(CSQL_ERR_BAD_CONFIG, "server_port 0 is out of range (1..65535)");
    }
    cfg->server_port = port;
    return CSQL_OK;
}

int csql_config_set_event_loops(csql_config *cfg, unsigned int n)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_event_loops");
    }
    if (n > CSQL_EVENT_LOOPS_MAX) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "event_loops %u is out of range (0 = one per CPU, or 1..%d)", n,
                           CSQL_EVENT_LOOPS_MAX);
    }
    cfg->event_loops = n;
    return CSQL_OK;
}

int csql_config_set_log(csql_config *cfg, csql_log_fn fn, void *userdata, csql_log_level max_level)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_log");
    }
    if ((int)max_level < CSQL_LOG_ERROR || (int)max_level > CSQL_LOG_DEBUG) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "log level %d is not one of ERROR, WARN, INFO, DEBUG", (int)max_level);
    }
    cfg->log_fn = fn;
    cfg->log_userdata = fn ? userdata : NULL;
    cfg->log_level = max_level;
    return CSQL_OK;
}

int csql_config_set_refresh_callback(csql_config *cfg, csql_refresh_fn fn, void *userdata)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_refresh_callback");
    }
    cfg->refresh_fn = fn;
    cfg->refresh_userdata = fn ? userdata : NULL;
    return CSQL_OK;
}

/* ---- credentials ---- */

int csql_config_set_credentials_file(csql_config *cfg, const char *path)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_credentials_file");
    }
    if (path == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "credentials_file: path is NULL");
    }
    size_t n = strnlen(path, MAX_PATH_LEN + 1);
    if (n == 0 || n > MAX_PATH_LEN) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "credentials_file \"%s\" is not a usable path (1..%d bytes)",
                           show(path).s,
                           MAX_PATH_LEN);
    }
    char *copy = dup_n(path, n);
    if (copy == NULL) {
        return nomem("credentials_file");
    }
    clear_credentials(cfg);
    cfg->credentials_file = copy;
    cfg->cred_kind = CSQL__CRED_FILE;
    return CSQL_OK;
}

/* A JSON object at a glance: '{' ... '}' around the text. The credentials module parses it. */
static int looks_like_json_object(const char *s, size_t n)
{
    size_t a = 0;
    size_t b = n;
    while (a < b && strchr(" \t\r\n", s[a]) != NULL) {
        a++;
    }
    while (b > a && strchr(" \t\r\n", s[b - 1]) != NULL) {
        b--;
    }
    return b - a >= 2 && s[a] == '{' && s[b - 1] == '}';
}

int csql_config_set_credentials_json(csql_config *cfg, const char *json)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_credentials_json");
    }
    if (json == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "credentials_json: json is NULL");
    }
    size_t n = strnlen(json, MAX_JSON_LEN + 1);
    if (n > MAX_JSON_LEN) {
        return csql__error(CSQL_ERR_BAD_CONFIG, "credentials_json is longer than %d bytes",
                           MAX_JSON_LEN);
    }
    if (!looks_like_json_object(json, n)) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "credentials_json is not a JSON object (%zu bytes; content not shown)",
                           n);
    }
    char *copy = dup_n(json, n);
    if (copy == NULL) {
        return nomem("credentials_json");
    }
    clear_credentials(cfg);
    cfg->credentials_json = copy;
    cfg->cred_kind = CSQL__CRED_JSON;
    return CSQL_OK;
}

/* A token goes into an HTTP header: visible ASCII only, bounded. Never echoed. */
static int copy_token(const char *option, const char *tok, char **out)
{
    size_t n;
    if (!printable(tok, MAX_TOKEN_LEN, 0, &n) || n == 0) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "%s is not valid: it must be 1..%d printable ASCII characters without "
                           "spaces (value not shown)",
                           option, MAX_TOKEN_LEN);
    }
    *out = dup_n(tok, n);
    return *out ? CSQL_OK : nomem(option);
}

int csql_config_set_token(csql_config *cfg, const char *access_token)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_token");
    }
    if (access_token == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "token: access_token is NULL");
    }
    char *copy = NULL;
    int rc = copy_token("token", access_token, &copy);
    if (rc != CSQL_OK) {
        return rc;
    }
    /* A login token set before (or after) the access token belongs with it: keep it. */
    char *login = cfg->login_token;
    cfg->login_token = NULL;
    clear_credentials(cfg);
    cfg->token = copy;
    cfg->login_token = login;
    cfg->cred_kind = CSQL__CRED_TOKEN;
    return CSQL_OK;
}

int csql_config_set_login_token(csql_config *cfg, const char *login_token)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_login_token");
    }
    char *copy = NULL;
    if (login_token != NULL) {
        int rc = copy_token("login_token", login_token, &copy);
        if (rc != CSQL_OK) {
            return rc;
        }
    }
    free_secret_str(&cfg->login_token);
    cfg->login_token = copy;
    return CSQL_OK;
}

int csql_config_set_token_callback(csql_config *cfg, csql_token_fn fn, void *userdata)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_token_callback");
    }
    if (fn == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "token_callback: fn is NULL");
    }
    clear_credentials(cfg);
    cfg->token_fn = fn;
    cfg->token_fn_userdata = userdata;
    cfg->cred_kind = CSQL__CRED_CALLBACK;
    return CSQL_OK;
}

/* "target@x,delegate1,..." : non-empty items of visible ASCII, target holds an '@'. */
static int chain_ok(const char *s, size_t *len_out)
{
    size_t n;
    if (!printable(s, MAX_CHAIN_LEN, 0, &n) || n == 0) {
        return 0;
    }
    size_t items = 0;
    const char *item = s;
    for (;;) {
        const char *comma = strchr(item, ',');
        size_t ilen = comma ? (size_t)(comma - item) : strlen(item);
        if (ilen == 0 || ++items > MAX_CHAIN_ITEMS) {
            return 0;
        }
        if (items == 1 && memchr(item, '@', ilen) == NULL) {
            return 0;
        }
        if (comma == NULL) {
            break;
        }
        item = comma + 1;
    }
    *len_out = n;
    return 1;
}

int csql_config_set_impersonate_service_account(csql_config *cfg, const char *chain)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_impersonate_service_account");
    }
    if (chain == NULL) {
        replace_str(&cfg->impersonate_chain, NULL);
        return CSQL_OK;
    }
    size_t n;
    if (!chain_ok(chain, &n)) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "impersonate_service_account \"%s\" is not a service account email "
                           "optionally followed by comma-separated delegates (at most %d)",
                           show(chain).s, MAX_CHAIN_ITEMS - 1);
    }
    char *copy = dup_n(chain, n);
    if (copy == NULL) {
        return nomem("impersonate_service_account");
    }
    replace_str(&cfg->impersonate_chain, copy);
    return CSQL_OK;
}

/* ---- API endpoints and identity ---- */

static int quota_project_ok(const char *s, size_t *len_out)
{
    return printable(s, MAX_PROJECT_LEN, 0, len_out) && *len_out > 0;
}

int csql_config_set_quota_project(csql_config *cfg, const char *project)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_quota_project");
    }
    if (project == NULL) {
        replace_str(&cfg->quota_project, NULL);
        return CSQL_OK;
    }
    size_t n;
    if (!quota_project_ok(project, &n)) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "quota_project \"%s\" is not 1..%d printable ASCII characters "
                           "without spaces",
                           show(project).s, MAX_PROJECT_LEN);
    }
    char *copy = dup_n(project, n);
    if (copy == NULL) {
        return nomem("quota_project");
    }
    replace_str(&cfg->quota_project, copy);
    return CSQL_OK;
}

/* A DNS domain: dot-separated labels of letters, digits and inner hyphens. */
static int domain_ok(const char *s)
{
    size_t n = strnlen(s, MAX_DOMAIN_LEN + 1);
    if (n == 0 || n > MAX_DOMAIN_LEN) {
        return 0;
    }
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-') {
                return 0;
            }
            label = 0;
            continue;
        }
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && label > 0)) {
            return 0;
        }
        if (++label > 63) {
            return 0;
        }
    }
    return label > 0 && s[n - 1] != '-';
}

int csql_config_set_universe_domain(csql_config *cfg, const char *domain)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_universe_domain");
    }
    if (domain == NULL) {
        replace_str(&cfg->universe_domain, NULL);
        return CSQL_OK;
    }
    if (!domain_ok(domain)) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "universe_domain \"%s\" is not a DNS domain such as googleapis.com",
                           show(domain).s);
    }
    char *copy = strdup(domain);
    if (copy == NULL) {
        return nomem("universe_domain");
    }
    replace_str(&cfg->universe_domain, copy);
    return CSQL_OK;
}

/*
 * Validate a base URL for `option` and return a trimmed copy in *out:
 * http(s) with a host, plain http only to loopback, no query or fragment
 * (paths are appended to it).
 */
static int endpoint_copy(const char *option, const char *url, char **out)
{
    char safe[256];
    csql__url_redact(url, safe, sizeof(safe));
    if (!csql__url_allowed(url)) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "%s \"%s\" is not allowed: it must be an https:// URL with a host "
                           "(http:// only to 127.0.0.0/8, ::1 or localhost)",
                           option, safe);
    }
    if (strpbrk(url, "?#") != NULL) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "%s \"%s\" is not allowed: a base URL has no query or fragment",
                           option, safe);
    }
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/') {
        n--;
    }
    *out = dup_n(url, n);
    return *out ? CSQL_OK : nomem(option);
}

static int set_endpoint(csql_config *cfg, char **slot, const char *option, const char *url)
{
    if (cfg == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "%s: config is NULL", option);
    }
    if (url == NULL) {
        replace_str(slot, NULL);
        return CSQL_OK;
    }
    char *copy = NULL;
    int rc = endpoint_copy(option, url, &copy);
    if (rc != CSQL_OK) {
        return rc;
    }
    replace_str(slot, copy);
    return CSQL_OK;
}

int csql_config_set_admin_api_endpoint(csql_config *cfg, const char *url)
{
    return set_endpoint(cfg, cfg ? &cfg->admin_api_endpoint : NULL, "admin_api_endpoint", url);
}

int csql_config_set_iam_credentials_endpoint(csql_config *cfg, const char *url)
{
    return set_endpoint(cfg, cfg ? &cfg->iam_credentials_endpoint : NULL,
                        "iam_credentials_endpoint", url);
}

int csql_config_set_user_agent(csql_config *cfg, const char *suffix)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_user_agent");
    }
    if (suffix == NULL || suffix[0] == '\0') {
        replace_str(&cfg->user_agent, NULL);
        return CSQL_OK;
    }
    size_t n;
    if (!printable(suffix, MAX_USER_AGENT_LEN, 1, &n)) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "user_agent \"%s\" is not 1..%d printable ASCII characters",
                           show(suffix).s, MAX_USER_AGENT_LEN);
    }
    char *copy = dup_n(suffix, n);
    if (copy == NULL) {
        return nomem("user_agent");
    }
    replace_str(&cfg->user_agent, copy);
    return CSQL_OK;
}

/* ---- RSA key ---- */

/* Refuse to prompt for a passphrase: OpenSSL's default callback reads the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int rsa_key_ok(const char *pem, size_t len, int *bits)
{
    *bits = 0;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        return 0;
    }
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (key == NULL) {
        return 0;
    }
    int ok = EVP_PKEY_is_a(key, "RSA");
    *bits = EVP_PKEY_get_bits(key);
    EVP_PKEY_free(key);
    return ok ? 1 : -1;
}

int csql_config_set_rsa_key_pem(csql_config *cfg, const char *pem, size_t len)
{
    if (cfg == NULL) {
        return null_cfg("csql_config_set_rsa_key_pem");
    }
    if (pem == NULL) {
        free_secret(&cfg->rsa_key_pem, cfg->rsa_key_pem_len);
        cfg->rsa_key_pem_len = 0;
        return CSQL_OK;
    }
    if (len == 0 || len > MAX_KEY_PEM_LEN) {
        return csql__error(CSQL_ERR_BAD_CONFIG, "rsa_key_pem length %zu is out of range (1..%d)",
                           len, MAX_KEY_PEM_LEN);
    }
    int bits;
    int ok = rsa_key_ok(pem, len, &bits);
    if (ok == 0) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "rsa_key_pem is not an unencrypted PEM private key (PKCS#1 or PKCS#8; "
                           "content not shown)");
    }
    if (ok < 0 || bits < MIN_RSA_BITS) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "rsa_key_pem is not an RSA key of at least %d bits (got %s, %d bits)",
                           MIN_RSA_BITS, ok < 0 ? "another key type" : "RSA", bits);
    }
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        return nomem("rsa_key_pem");
    }
    memcpy(copy, pem, len);
    copy[len] = '\0';
    free_secret(&cfg->rsa_key_pem, cfg->rsa_key_pem_len);
    cfg->rsa_key_pem = copy;
    cfg->rsa_key_pem_len = len;
    return CSQL_OK;
}

/* ---- copy and resolve ---- */

static int dup_field(char **dst, const char *src)
{
    if (src == NULL) {
        *dst = NULL;
        return 0;
    }
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

int csql__config_copy(const csql_config *src, csql_config **out)
{
    if (src == NULL || out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "config copy: NULL argument");
    }
    *out = NULL;
    csql_config *c = malloc(sizeof(*c));
    if (c == NULL) {
        return nomem("config");
    }
    *c = *src;
    c->credentials_file = c->credentials_json = c->token = c->login_token = NULL;
    c->impersonate_chain = c->quota_project = c->admin_api_endpoint = NULL;
    c->universe_domain = c->iam_credentials_endpoint = c->user_agent = c->rsa_key_pem = NULL;
    int bad = 0;
    bad |= dup_field(&c->credentials_file, src->credentials_file);
    bad |= dup_field(&c->credentials_json, src->credentials_json);
    bad |= dup_field(&c->token, src->token);
    bad |= dup_field(&c->login_token, src->login_token);
    bad |= dup_field(&c->impersonate_chain, src->impersonate_chain);
    bad |= dup_field(&c->quota_project, src->quota_project);
    bad |= dup_field(&c->admin_api_endpoint, src->admin_api_endpoint);
    bad |= dup_field(&c->universe_domain, src->universe_domain);
    bad |= dup_field(&c->iam_credentials_endpoint, src->iam_credentials_endpoint);
    bad |= dup_field(&c->user_agent, src->user_agent);
    if (src->rsa_key_pem != NULL) {
        c->rsa_key_pem = malloc(src->rsa_key_pem_len + 1);
        if (c->rsa_key_pem == NULL) {
            bad = 1;
        } else {
            memcpy(c->rsa_key_pem, src->rsa_key_pem, src->rsa_key_pem_len);
            c->rsa_key_pem[src->rsa_key_pem_len] = '\0';
        }
    }
    if (bad) {
        csql_config_free(c);
        return nomem("config");
    }
    *out = c;
    return CSQL_OK;
}

static const char *env_value(const char *name)
{
    const char *v = getenv(name);
    return (v != NULL && v[0] != '\0') ? v : NULL;
}

/* Fill `slot` with "https://<service>.<universe>" when the caller set nothing, then validate. */
static int resolve_endpoint(char **slot, const char *option, const char *service,
                            const char *universe)
{
    if (*slot == NULL) {
        size_t n = strlen("https://") + strlen(service) + 1 + strlen(universe) + 1;
        char *url = malloc(n);
        if (url == NULL) {
            return nomem(option);
        }
        snprintf(url, n, "https://%s.%s", service, universe);
        *slot = url;
    }
    char *checked = NULL;
    int rc = endpoint_copy(option, *slot, &checked);
    if (rc != CSQL_OK) {
        return rc;
    }
    replace_str(slot, checked);
    return CSQL_OK;
}

int csql__config_resolve(csql_config *cfg)
{
    if (cfg == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "config resolve: config is NULL");
    }
    if (cfg->login_token != NULL && cfg->cred_kind != CSQL__CRED_TOKEN) {
        return csql__error(CSQL_ERR_BAD_CONFIG,
                           "login_token is set but token is not: a login token is only used with "
                           "a fixed access token");
    }
    const char *env = env_value(ENV_QUOTA_PROJECT);
    if (cfg->quota_project == NULL && env != NULL) {
        size_t n;
        if (!quota_project_ok(env, &n)) {
            return csql__error(CSQL_ERR_BAD_CONFIG,
                               "environment variable " ENV_QUOTA_PROJECT
                               " \"%s\" is not a valid quota project",
                               show(env).s);
        }
        if ((cfg->quota_project = dup_n(env, n)) == NULL) {
            return nomem("quota_project");
        }
    }
    env = env_value(ENV_UNIVERSE_DOMAIN);
    if (cfg->universe_domain == NULL && env != NULL) {
        if (!domain_ok(env)) {
            return csql__error(CSQL_ERR_BAD_CONFIG,
                               "environment variable " ENV_UNIVERSE_DOMAIN
                               " \"%s\" is not a DNS domain such as googleapis.com",
                               show(env).s);
        }
        if ((cfg->universe_domain = strdup(env)) == NULL) {
            return nomem("universe_domain");
        }
    }
    if (cfg->universe_domain == NULL && (cfg->universe_domain = strdup(DEFAULT_UNIVERSE)) == NULL) {
        return nomem("universe_domain");
    }
    if (cfg->event_loops == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->event_loops = cpus < 1 ? 1 : (cpus > CSQL_EVENT_LOOPS_MAX ? CSQL_EVENT_LOOPS_MAX
                                                                        : (uint32_t)cpus);
    }
    int rc = resolve_endpoint(&cfg->admin_api_endpoint, "admin_api_endpoint", "sqladmin",
                              cfg->universe_domain);
    if (rc != CSQL_OK) {
        return rc;
    }
    return resolve_endpoint(&cfg->iam_credentials_endpoint, "iam_credentials_endpoint",
                            "iamcredentials", cfg->universe_domain);
}
