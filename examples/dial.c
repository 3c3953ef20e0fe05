/*
 * dial: connect to a Cloud SQL instance with csql and report on it.
 *
 *   dial [options] PROJECT:REGION:INSTANCE
 *     -t TOKEN      a fixed OAuth2 access token (default: Application Default Credentials)
 *     -e URL        SQL Admin API endpoint (default: https://sqladmin.googleapis.com)
 *     -p PORT       server-side proxy port (default 3307)
 *     -i TYPE       public | private | psc | auto (default public)
 *     -a            automatic IAM database authentication
 *     -v            log what csql does to stderr
 *
 * Prints the instance's engine, region, addresses and certificate expiry, then
 * dials it and prints the TLS version and cipher. Exit status 0 on success.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include <csql/csql.h>

static void log_line(csql_log_level level, const char *line, void *userdata)
{
    (void)userdata;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    fprintf(stderr, "csql %s: %s\n", names[level], line);
}

static int fail(const char *what)
{
    const csql_error *e = csql_error_last();
    fprintf(stderr, "%s failed: %s (%s, category %s", what, e->message, csql_strerror(e->code),
            csql_err_category_name(e->category));
    if (e->http_status != 0) {
        fprintf(stderr, ", HTTP %ld %s", e->http_status, e->api_reason);
    }
    fprintf(stderr, ")\n");
    return 1;
}

static int parse_ip_type(const char *s, csql_ip_type *out)
{
    static const struct {
        const char *name;
        csql_ip_type type;
    } types[] = {{"public", CSQL_IP_PUBLIC},
                 {"private", CSQL_IP_PRIVATE},
                 {"psc", CSQL_IP_PSC},
                 {"auto", CSQL_IP_AUTO}};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(s, types[i].name) == 0) {
            *out = types[i].type;
            return 0;
        }
    }
    return -1;
}

static void usage(void)
{
    fprintf(stderr, "usage: dial [-t TOKEN] [-e URL] [-p PORT] [-i public|private|psc|auto] [-a] "
                    "[-v] PROJECT:REGION:INSTANCE\n");
}

int main(int argc, char **argv)
{
    const char *token = NULL, *endpoint = NULL;
    long port = 0;
    int iam = 0, verbose = 0;
    csql_ip_type ip = CSQL_IP_PUBLIC;
    int opt;
    while ((opt = getopt(argc, argv, "t:e:p:i:avh")) != -1) {
        switch (opt) {
        case 't': token = optarg; break;
        case 'e': endpoint = optarg; break;
        case 'p': port = strtol(optarg, NULL, 10); break;
        case 'i':
            if (parse_ip_type(optarg, &ip) != 0) {
                usage();
                return 2;
            }
            break;
        case 'a': iam = 1; break;
        case 'v': verbose = 1; break;
        case 'h': usage(); return 0;
        default: usage(); return 2;
        }
    }
    if (optind != argc - 1) {
        usage();
        return 2;
    }
    const char *instance = argv[optind];
    printf("csql %s\n", csql_version());

    csql_config *cfg = NULL;
    csql_dialer *d = NULL;
    csql_instance_info *info = NULL;
    csql_conn *conn = NULL;
    int status = 1;
    if (csql_config_new(&cfg) != 0) {
        return fail("csql_config_new");
    }
    if ((token && csql_config_set_token(cfg, token) != 0) ||
        (endpoint && csql_config_set_admin_api_endpoint(cfg, endpoint) != 0) ||
        (port && csql_config_set_server_port(cfg, (uint16_t)port) != 0) ||
        csql_config_set_ip_type(cfg, ip) != 0 || csql_config_set_iam_authn(cfg, iam) != 0 ||
        csql_config_set_user_agent(cfg, "example-dial") != 0 ||
        (verbose && csql_config_set_log(cfg, log_line, NULL, CSQL_LOG_DEBUG) != 0)) {
        status = fail("configuration");
        goto out;
    }
    if (csql_dialer_new(&d, cfg) != 0) {
        status = fail("csql_dialer_new");
        goto out;
    }
    if (csql_dialer_instance_info(d, instance, NULL, &info) != 0) {
        status = fail("csql_dialer_instance_info");
        goto out;
    }
    const char *pub = csql_instance_info_address(info, CSQL_IP_PUBLIC);
    const char *priv = csql_instance_info_address(info, CSQL_IP_PRIVATE);
    const char *psc = csql_instance_info_address(info, CSQL_IP_PSC);
    printf("instance:     %s\n", instance);
    printf("engine:       %s\n", csql_instance_info_database_version(info));
    printf("region:       %s\n", csql_instance_info_region(info));
    printf("public IP:    %s\n", pub ? pub : "-");
    printf("private IP:   %s\n", priv ? priv : "-");
    printf("PSC name:     %s\n", psc ? psc : "-");
    printf("cert expires: in %lld s\n",
           (long long)(csql_instance_info_cert_expiry(info) - (int64_t)time(NULL)));

    if (csql_dial(d, instance, NULL, &conn) != 0) {
        status = fail("csql_dial");
        goto out;
    }
    SSL *ssl = csql_conn_ssl(conn);
    printf("connected:    %s, %s\n", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
    status = 0;
out:
    csql_conn_close(conn);
    csql_instance_info_free(info);
    if (d != NULL) {
        csql_dialer_close(d);
    }
    csql_dialer_free(d);
    csql_config_free(cfg);
    return status;
}
