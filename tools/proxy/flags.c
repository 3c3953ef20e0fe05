/* csql-proxy: flag tables and --help (flags.h). Keep docs/csql-proxy.1.md in step. */
#include "flags.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define OFF(field) offsetof(proxy_opts, field)

static const flag_def run_flags[] = {
    {"address", 'a', FT_STRING, OFF(address), "127.0.0.1", "IP",
     "Address the TCP listeners bind to (an IPv4 or IPv6 literal).", FF_QUERY, "Listeners"},
    {"port", 'p', FT_PORT, OFF(port), "0", "PORT",
     "First TCP port; further instances take the next ports. 0: the engine's port (5432, 3306, "
     "1433), plus one for each further instance of that engine.",
     FF_QUERY, NULL},
    {"unix-socket", 'u', FT_STRING, OFF(unix_socket), NULL, "DIR",
     "Listen on Unix sockets in DIR instead of TCP: DIR/PROJECT:REGION:INSTANCE, for PostgreSQL "
     "DIR/PROJECT:REGION:INSTANCE/.s.PGSQL.5432.",
     FF_QUERY, NULL},

    {"auto-iam-authn", 'i', FT_BOOL, OFF(auto_iam_authn), NULL, NULL,
     "Automatic IAM database authentication (PostgreSQL and MySQL).", FF_QUERY, "Connections"},
    {"private-ip", 0, FT_BOOL, OFF(private_ip), NULL, NULL,
     "Connect to the instances' private IP address.", FF_QUERY, NULL},
    {"psc", 0, FT_BOOL, OFF(psc), NULL, NULL, "Connect through Private Service Connect.", FF_QUERY,
     NULL},
    {"auto-ip", 0, FT_BOOL, OFF(auto_ip), NULL, NULL,
     "Connect to the public IP if the instance has one, else to the private IP.", 0, NULL},
    {"lazy-refresh", 0, FT_BOOL, OFF(lazy_refresh), NULL, NULL,
     "Refresh certificates only when a connection needs one (for CPU-throttled hosts).", 0, NULL},
    {"max-connections", 0, FT_UINT64, OFF(max_connections), "0", "N",
     "At most N connections open at once over all instances; more are refused at once. 0: no "
     "limit.",
     0, NULL},
    {"event-loops", 0, FT_UINT64, OFF(event_loops), "0", "N",
     "Event loop threads forwarding connections (csql-proxy's own flag); each new connection "
     "goes to the least loaded. 0: one per CPU. At most 64.",
     0, NULL},
    {"run-connection-test", 0, FT_BOOL, OFF(run_connection_test), NULL, NULL,
     "Connect to every instance once at startup; exit 1 if one fails.", 0, NULL},
    {"skip-failed-instance-config", 0, FT_BOOL, OFF(skip_failed_instance_config), NULL, NULL,
     "Start without the instances whose listener cannot be set up (logged as errors) instead of "
     "exiting.",
     0, NULL},

    {"token", 't', FT_STRING, OFF(token), NULL, "TOKEN", "A fixed OAuth2 access token.", FF_SECRET,
     "Credentials and API"},
    {"login-token", 0, FT_STRING, OFF(login_token), NULL, "TOKEN",
     "With --token and --auto-iam-authn: the OAuth2 token used for IAM database login.", FF_SECRET,
     NULL},
    {"credentials-file", 'c', FT_STRING, OFF(credentials_file), NULL, "FILE",
     "A service account or authorized user JSON credentials file.", 0, NULL},
    {"json-credentials", 'j', FT_STRING, OFF(json_credentials), NULL, "JSON",
     "The same credentials, as a JSON string.", FF_SECRET, NULL},
    {"impersonate-service-account", 0, FT_STRING, OFF(impersonate_service_account), NULL,
     "CHAIN", "Impersonate TARGET[,DELEGATE...]: the first email is the account used.", 0, NULL},
    {"iam-credentials-endpoint", 0, FT_STRING, OFF(iam_credentials_endpoint), NULL, "URL",
     "With --impersonate-service-account: base URL of the IAM Credentials API (csql-proxy's "
     "own flag, for emulators and private endpoints).",
     0, NULL},
    {"quota-project", 0, FT_STRING, OFF(quota_project), NULL, "PROJECT",
     "Project charged for SQL Admin API quota.", 0, NULL},
    {"sqladmin-api-endpoint", 0, FT_STRING, OFF(sqladmin_api_endpoint), NULL, "URL",
     "Base URL of the SQL Admin API.", 0, NULL},
    {"universe-domain", 0, FT_STRING, OFF(universe_domain), NULL, "DOMAIN",
     "Universe domain of the Google APIs (default googleapis.com).", 0, NULL},
    {"user-agent", 0, FT_STRING, OFF(user_agent), NULL, "STRING",
     "Appended to the User-Agent of API requests.", 0, NULL},

    {"min-sigterm-delay", 0, FT_DURATION, OFF(min_sigterm_delay_ms), "0", "DURATION",
     "After SIGTERM or SIGINT keep serving this long (Go syntax: 500ms, 10s, 1m30s).", 0,
     "Shutdown"},
    {"max-sigterm-delay", 0, FT_DURATION, OFF(max_sigterm_delay_ms), "0", "DURATION",
     "Then wait up to this long for open connections to close.", 0, NULL},
    {"exit-zero-on-sigterm", 0, FT_BOOL, OFF(exit_zero_on_sigterm), NULL, NULL,
     "Exit 0 instead of 143 after SIGTERM.", 0, NULL},

    {"health-check", 0, FT_BOOL, OFF(health_check), NULL, NULL,
     "Serve /startup, /liveness and /readiness on the HTTP server.", 0, "HTTP servers"},
    {"http-address", 0, FT_STRING, OFF(http_address), "localhost", "ADDR",
     "Address of the HTTP server (health checks, metrics).", 0, NULL},
    {"http-port", 0, FT_PORT, OFF(http_port), "9090", "PORT", "Port of the HTTP server.", 0, NULL},
    {"prometheus", 0, FT_BOOL, OFF(prometheus), NULL, NULL,
     "Serve Prometheus metrics at /metrics on the HTTP server.", 0, NULL},
    {"prometheus-namespace", 0, FT_STRING, OFF(prometheus_namespace), NULL, "NAME",
     "Prefix NAME_ to the metric names.", 0, NULL},
    {"quitquitquit", 0, FT_BOOL, OFF(quitquitquit), NULL, NULL,
     "Serve /quitquitquit (POST or GET) on localhost:--admin-port: shut down and exit 0.", 0,
     NULL},
    {"admin-port", 0, FT_PORT, OFF(admin_port), "9091", "PORT",
     "Port of the admin server (always on localhost).", 0, NULL},

    {"structured-logs", 'l', FT_BOOL, OFF(structured_logs), NULL, NULL,
     "Log JSON lines with severity, message and timestamp.", 0, "Logs"},
    {"debug-logs", 0, FT_BOOL, OFF(debug_logs), NULL, NULL,
     "Also log debug lines (certificate refreshes, every connection).", 0, NULL},
    {"quiet", 0, FT_BOOL, OFF(quiet), NULL, NULL, "Log warnings and errors only.", 0, NULL},

    {"config-file", 0, FT_STRING, OFF(config_file), NULL, "FILE",
     "Read settings from a JSON (.json), TOML (.toml) or YAML (.yaml, .yml) file; its keys are "
     "the flag names, and "
     "instances are instance-connection-name, instance-connection-name-0, -1...",
     0, "Other"},
    {"version", 'v', FT_VERSION, 0, NULL, NULL, "Print the version and exit.", 0, NULL},
    {"help", 'h', FT_HELP, 0, NULL, NULL, "Print this help and exit.", 0, NULL},
};

static const flag_def wait_flags[] = {
    {"max", 0, FT_DURATION, OFF(wait_max_ms), "30s", "DURATION",
     "Give up (exit 1) after this long.", 0, "Flags"},
    {"http-address", 0, FT_STRING, OFF(http_address), "localhost", "ADDR",
     "Address of the proxy's HTTP server.", 0, NULL},
    {"http-port", 0, FT_PORT, OFF(http_port), "9090", "PORT", "Port of the proxy's HTTP server.", 0,
     NULL},
    {"help", 'h', FT_HELP, 0, NULL, NULL, "Print this help and exit.", 0, NULL},
};

static const flag_def shutdown_flags[] = {
    {"admin-port", 0, FT_PORT, OFF(admin_port), "9091", "PORT",
     "Port of the proxy's admin server on localhost.", 0, "Flags"},
    {"help", 'h', FT_HELP, 0, NULL, NULL, "Print this help and exit.", 0, NULL},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const flag_def *flags_table(proxy_cmd cmd, size_t *n)
{
    switch (cmd) {
    case PROXY_CMD_WAIT:
        *n = COUNT(wait_flags);
        return wait_flags;
    case PROXY_CMD_SHUTDOWN:
        *n = COUNT(shutdown_flags);
        return shutdown_flags;
    default:
        *n = COUNT(run_flags);
        return run_flags;
    }
}

int flags_find(const flag_def *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(t[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

int flags_find_short(const flag_def *t, size_t n, char c)
{
    for (size_t i = 0; i < n; i++) {
        if (c != 0 && t[i].short_name == c) {
            return (int)i;
        }
    }
    return -1;
}

typedef struct unsupported {
    const char *name;
    char short_name;
    const char *why;
} unsupported;

static const unsupported unsupported_flags[] = {
    {"fuse", 0, "FUSE mounts are not implemented"},
    {"fuse-tmp-dir", 0, "FUSE mounts are not implemented"},
    {"gcloud-auth", 'g', "use --credentials-file or Application Default Credentials"},
    {"sql-data", 0, "the SQL Data API is not implemented"},
    {"sqldata-api-endpoint", 0, "the SQL Data API is not implemented"},
    {"debug", 0, "there is no pprof in a C program; use --debug-logs"},
    {"telemetry-project", 0, "Cloud Monitoring and Trace export is not implemented; use --prometheus"},
    {"telemetry-prefix", 0, "Cloud Monitoring and Trace export is not implemented; use --prometheus"},
    {"telemetry-sample-rate", 0, "Cloud Trace export is not implemented"},
    {"disable-metrics", 0, "there is no Cloud Monitoring export to disable"},
    {"disable-traces", 0, "there is no Cloud Trace export to disable"},
    {"resource-exhausted-cooldown-delay", 0, "429 answers are already backed off by libcsql"},
};

const char *flags_unsupported(const char *name, char short_name)
{
    for (size_t i = 0; i < COUNT(unsupported_flags); i++) {
        const unsupported *u = &unsupported_flags[i];
        if ((name != NULL && strcmp(u->name, name) == 0) ||
            (short_name != 0 && u->short_name == short_name)) {
            return u->why;
        }
    }
    return NULL;
}

void flags_env_name(const char *flag, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "CSQL_PROXY_");
    for (const char *p = flag; *p != '\0' && o + 1 < len; p++) {
        buf[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    }
    if (o < len) {
        buf[o] = '\0';
    }
}

/* Print `text` wrapped at `width` columns, continuation lines indented by `indent`. */
static void print_wrapped(FILE *f, const char *text, int col, int indent, int width)
{
    const char *p = text;
    while (*p != '\0') {
        const char *end = p;
        const char *brk = NULL;
        while (*end != '\0' && col + (end - p) < width) {
            if (*end == ' ') {
                brk = end;
            }
            end++;
        }
        if (*end == '\0') {
            brk = end;
        } else if (brk == NULL) {
            brk = end;
        }
        fprintf(f, "%.*s\n", (int)(brk - p), p);
        p = *brk == ' ' ? brk + 1 : brk;
        if (*p != '\0') {
            fprintf(f, "%*s", indent, "");
            col = indent;
        }
    }
}

static void print_flags(FILE *f, const flag_def *t, size_t n)
{
    enum { NAME_COL = 38, WIDTH = 100 };
    for (size_t i = 0; i < n; i++) {
        const flag_def *d = &t[i];
        if (d->group != NULL) {
            fprintf(f, "\n%s:\n", d->group);
        }
        char lead[80];
        char sh[8] = "    ";
        if (d->short_name != 0) {
            snprintf(sh, sizeof(sh), "-%c, ", d->short_name);
        }
        snprintf(lead, sizeof(lead), "  %s--%s%s%s", sh, d->name, d->arg ? " " : "",
                 d->arg ? d->arg : "");
        fputs(lead, f);
        int col = (int)strlen(lead);
        if (col >= NAME_COL - 1) {
            fprintf(f, "\n%*s", NAME_COL, "");
        } else {
            fprintf(f, "%*s", NAME_COL - col, "");
        }
        char text[512];
        snprintf(text, sizeof(text), "%s%s%s%s%s", (d->flags & FF_QUERY) ? "(*) " : "", d->help,
                 d->def ? " (default " : "", d->def ? d->def : "", d->def ? ")" : "");
        print_wrapped(f, text, NAME_COL, NAME_COL, WIDTH);
    }
}

void flags_print_help(FILE *f, proxy_cmd cmd)
{
    size_t n;
    const flag_def *t = flags_table(cmd, &n);
    switch (cmd) {
    case PROXY_CMD_WAIT:
        fputs("Wait until csql-proxy has started: poll http://ADDR:PORT/startup every second until\n"
              "it answers 200 (exit 0) or --max passes (exit 1). Needs --health-check on the proxy.\n"
              "\nUsage:\n  csql-proxy wait [flags]\n",
              f);
        print_flags(f, t, n);
        return;
    case PROXY_CMD_SHUTDOWN:
        fputs("Ask a running csql-proxy to shut down: POST http://localhost:PORT/quitquitquit.\n"
              "Needs --quitquitquit on the proxy. Exit 0 when it accepted, else 1.\n"
              "\nUsage:\n  csql-proxy shutdown [flags]\n",
              f);
        print_flags(f, t, n);
        return;
    default:
        break;
    }
    fputs("csql-proxy: a drop-in, faster replacement for the Cloud SQL Auth Proxy.\n"
          "It listens on local TCP ports or Unix sockets and forwards each connection over\n"
          "mutual TLS 1.3 to a Cloud SQL instance.\n"
          "\nUsage:\n"
          "  csql-proxy [flags] INSTANCE_CONNECTION_NAME[?QUERY]...\n"
          "  csql-proxy wait [--max DURATION] [--http-address ADDR] [--http-port PORT]\n"
          "  csql-proxy shutdown [--admin-port PORT]\n"
          "\nINSTANCE_CONNECTION_NAME is PROJECT:REGION:INSTANCE. QUERY sets (*) flags for one\n"
          "instance: address, port, unix-socket, unix-socket-path, auto-iam-authn, private-ip, psc,\n"
          "e.g. 'my-project:us-central1:db?port=6000&auto-iam-authn=true'.\n",
          f);
    print_flags(f, t, n);
    fputs("\nEvery flag can also be set with the environment variable CSQL_PROXY_<FLAG> (upper\n"
          "snake case, e.g. CSQL_PROXY_AUTO_IAM_AUTHN=true), and instances with\n"
          "CSQL_PROXY_INSTANCE_CONNECTION_NAME or CSQL_PROXY_INSTANCE_CONNECTION_NAME_0, _1...\n"
          "Flags win over the environment, which wins over the config file.\n"
          "\n",
          f);
    char list[512] = "Auth Proxy flags that csql-proxy refuses:";
    size_t used = strlen(list);
    for (size_t i = 0; i < COUNT(unsupported_flags) && used < sizeof(list); i++) {
        used += (size_t)snprintf(list + used, sizeof(list) - used, " --%s%s",
                                 unsupported_flags[i].name,
                                 i + 1 < COUNT(unsupported_flags) ? "," : ".");
    }
    print_wrapped(f, list, 0, 2, 90);
    fputs("\nExit status: 0 after /quitquitquit (or SIGTERM with --exit-zero-on-sigterm), 130\n"
          "after SIGINT, 143 after SIGTERM, 1 on errors. See csql-proxy(1).\n",
          f);
}
