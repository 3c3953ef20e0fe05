/* Internal: the layout of csql_config, shared by the modules that read options. */
#ifndef CSQL_SRC_CONFIG_INTERNAL_H
#define CSQL_SRC_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "csql/config.h"

typedef enum csql__cred_kind {
    CSQL__CRED_ADC = 0,      /* Application Default Credentials chain */
    CSQL__CRED_FILE = 1,     /* credentials_file */
    CSQL__CRED_JSON = 2,     /* credentials_json */
    CSQL__CRED_TOKEN = 3,    /* static token (+ login_token) */
    CSQL__CRED_CALLBACK = 4  /* token_fn */
} csql__cred_kind;

struct csql_config {
    csql_ip_type ip_type;            /* never CSQL_IP_DEFAULT after set: PUBLIC by default */
    bool iam_authn;
    uint32_t dial_timeout_ms;        /* default 30000 */
    uint32_t refresh_timeout_ms;     /* default 60000 */

    csql__cred_kind cred_kind;
    char *credentials_file;
    char *credentials_json;          /* secret: wiped on free */
    char *token;                     /* secret */
    char *login_token;               /* secret */
    csql_token_fn token_fn;
    void *token_fn_userdata;
    char *impersonate_chain;         /* "target,delegate1,..." or NULL */

    char *quota_project;             /* NULL: $GOOGLE_CLOUD_QUOTA_PROJECT at dialer creation */
    char *admin_api_endpoint;        /* NULL: https://sqladmin.<universe> */
    char *universe_domain;           /* NULL: $GOOGLE_CLOUD_UNIVERSE_DOMAIN or googleapis.com */
    char *iam_credentials_endpoint;  /* NULL: https://iamcredentials.<universe> */
    char *user_agent;                /* suffix, or NULL */

    csql_refresh_strategy refresh_strategy;
    char *rsa_key_pem;               /* secret, or NULL */
    size_t rsa_key_pem_len;
    uint32_t tcp_keepalive_s;        /* default 30; 0 = off */
    bool mdx;                        /* default true */
    uint16_t server_port;            /* default 3307 */
    uint32_t event_loops;            /* default 1; 0: one per online CPU (resolved by the dialer) */

    csql_log_fn log_fn;
    void *log_userdata;
    csql_log_level log_level;

    csql_refresh_fn refresh_fn;
    void *refresh_userdata;
};

/* Deep copy (for the dialer). 0 or CSQL_ERR_NOMEM. */
int csql__config_copy(const csql_config *src, csql_config **out);

/*
 * Fill what the environment decides into a dialer's private copy: quota
 * project, universe domain, Admin API and IAM Credentials endpoints (each
 * only where the caller set nothing). Validates the final endpoints
 * (CSQL_ERR_BAD_CONFIG naming the bad value, e.g. http:// to a non-loopback host).
 */
int csql__config_resolve(csql_config *cfg);

/* 1 when url is http:// or https:// with a host, and http:// only to 127.0.0.0/8, ::1 or localhost. */
int csql__url_allowed(const char *url);

#endif
