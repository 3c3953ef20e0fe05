/* csql-proxy: libcsql config from the options (dialer_config.h). */
#include "dialer_config.h"

#include <stdarg.h>
#include <stdio.h>

#include "csql/errors.h"
#include "log.h"
#include "version.h"

void proxy_user_agent(const proxy_opts *o, char *buf, size_t len)
{
    snprintf(buf, len, "csql-proxy/%s%s%s", CSQL_PROXY_VERSION, o->user_agent ? " " : "",
             o->user_agent ? o->user_agent : "");
}

/* One setter's result: on failure, its flag and libcsql's message (which never holds secrets). */
static int check(int rc, const char *flag, char *err, size_t errlen)
{
    if (rc == 0) {
        return 0;
    }
    const char *msg = csql_error_last()->message;
    snprintf(err, errlen, "%s: %s", flag, msg[0] ? msg : csql_strerror(rc));
    return -1;
}

int proxy_dialer_config(const proxy_opts *o, csql_config **out, char *err, size_t errlen)
{
    csql_config *cfg = NULL;
    *out = NULL;
    if (csql_config_new(&cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char ua[512];
    proxy_user_agent(o, ua, sizeof(ua));
    int rc = check(csql_config_set_user_agent(cfg, ua), "--user-agent", err, errlen);
    if (rc == 0) {
        rc = check(csql_config_set_log(cfg, plog_csql, NULL, plog_max_level()), "logs", err,
                   errlen);
    }
    if (rc == 0 && o->event_loops > CSQL_EVENT_LOOPS_MAX) {
        snprintf(err, errlen, "--event-loops: %llu is out of range (0 = one per CPU, or 1..%d)",
                 (unsigned long long)o->event_loops, CSQL_EVENT_LOOPS_MAX);
        rc = -1;
    }
    if (rc == 0) {
        rc = check(csql_config_set_event_loops(cfg, (unsigned)o->event_loops), "--event-loops",
                   err, errlen);
    }
    if (rc == 0 && o->lazy_refresh) {
        rc = check(csql_config_set_refresh_strategy(cfg, CSQL_REFRESH_LAZY), "--lazy-refresh", err,
                   errlen);
    }
    if (rc == 0 && o->credentials_file) {
        rc = check(csql_config_set_credentials_file(cfg, o->credentials_file),
                   "--credentials-file", err, errlen);
    }
    if (rc == 0 && o->json_credentials) {
        rc = check(csql_config_set_credentials_json(cfg, o->json_credentials),
                   "--json-credentials", err, errlen);
    }
    if (rc == 0 && o->token) {
        rc = check(csql_config_set_token(cfg, o->token), "--token", err, errlen);
    }
    if (rc == 0 && o->login_token) {
        rc = check(csql_config_set_login_token(cfg, o->login_token), "--login-token", err, errlen);
    }
    if (rc == 0 && o->impersonate_service_account) {
        rc = check(csql_config_set_impersonate_service_account(cfg, o->impersonate_service_account),
                   "--impersonate-service-account", err, errlen);
    }
    if (rc == 0 && o->iam_credentials_endpoint) {
        rc = check(csql_config_set_iam_credentials_endpoint(cfg, o->iam_credentials_endpoint),
                   "--iam-credentials-endpoint", err, errlen);
    }
    if (rc == 0 && o->quota_project) {
        rc = check(csql_config_set_quota_project(cfg, o->quota_project), "--quota-project", err,
                   errlen);
    }
    if (rc == 0 && o->sqladmin_api_endpoint) {
        rc = check(csql_config_set_admin_api_endpoint(cfg, o->sqladmin_api_endpoint),
                   "--sqladmin-api-endpoint", err, errlen);
    }
    if (rc == 0 && o->universe_domain) {
        rc = check(csql_config_set_universe_domain(cfg, o->universe_domain), "--universe-domain",
                   err, errlen);
    }
    if (rc != 0) {
        csql_config_free(cfg);
        return -1;
    }
    *out = cfg;
    return 0;
}
