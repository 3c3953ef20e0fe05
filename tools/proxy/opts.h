/*
 * csql-proxy: every setting, once flags, environment and config file are
 * merged (args.c), and the instances with their query parameters
 * (instances.c). Plain data; proxy_opts_free releases it.
 */
#ifndef CSQL_PROXY_OPTS_H
#define CSQL_PROXY_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Tri-state for query parameters that may be absent. */
typedef enum proxy_tri { TRI_UNSET = -1, TRI_FALSE = 0, TRI_TRUE = 1 } proxy_tri;

/* One INSTANCE[?query] argument. */
typedef struct proxy_instance {
    char *spec;             /* as given (for messages) */
    char *name;             /* project:region:instance */
    char *address;          /* ?address=, or NULL */
    int port;               /* ?port=, or -1 */
    char *unix_socket;      /* ?unix-socket= directory, or NULL */
    char *unix_socket_path; /* ?unix-socket-path= exact path, or NULL */
    proxy_tri iam_authn;    /* ?auto-iam-authn= */
    proxy_tri private_ip;   /* ?private-ip= */
    proxy_tri psc;          /* ?psc= */
} proxy_instance;

typedef enum proxy_cmd {
    PROXY_CMD_RUN = 0,
    PROXY_CMD_HELP,
    PROXY_CMD_VERSION,
    PROXY_CMD_WAIT,     /* csql-proxy wait */
    PROXY_CMD_SHUTDOWN, /* csql-proxy shutdown */
} proxy_cmd;

typedef struct proxy_opts {
    proxy_cmd cmd;
    proxy_cmd help_for; /* with PROXY_CMD_HELP: RUN, WAIT or SHUTDOWN */

    /* listeners */
    char *address;
    int port;
    char *unix_socket;

    /* dialling */
    bool auto_iam_authn;
    bool private_ip;
    bool psc;
    bool auto_ip;
    bool lazy_refresh;

    /* connections and shutdown */
    uint64_t max_connections;
    uint64_t event_loops;      /* 0: one per CPU */
    uint64_t min_sigterm_delay_ms;
    uint64_t max_sigterm_delay_ms;
    bool exit_zero_on_sigterm;

    /* HTTP servers */
    bool health_check;
    char *http_address;
    int http_port;
    bool prometheus;
    char *prometheus_namespace;
    bool quitquitquit;
    int admin_port;

    /* credentials and API */
    char *token;
    char *login_token;
    char *credentials_file;
    char *json_credentials;
    char *impersonate_service_account;
    char *iam_credentials_endpoint;
    char *quota_project;
    char *sqladmin_api_endpoint;
    char *universe_domain;
    char *user_agent;

    /* logs */
    bool structured_logs;
    bool debug_logs;
    bool quiet;

    /* startup */
    bool run_connection_test;
    bool skip_failed_instance_config;
    char *config_file;

    /* csql-proxy wait */
    uint64_t wait_max_ms;

    proxy_instance *instances;
    size_t n_instances;

    /* Whether each flag (by index in the flag table) was given anywhere. */
    bool *given;
} proxy_opts;

void proxy_instance_clear(proxy_instance *inst);
/* Free everything the options hold (secrets wiped first) and zero them. */
void proxy_opts_free(proxy_opts *o);

#endif
