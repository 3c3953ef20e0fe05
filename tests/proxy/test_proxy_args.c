/*
 * csql-proxy command line: flag syntax, environment variables, config files,
 * precedence, the Auth Proxy's conflict rules, subcommands and argv scrubbing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "flags.h"

/* ---- helpers ---- */

typedef struct env_table {
    const char *kv[32]; /* "NAME=value" */
} env_table;

static const char *table_env(const char *name, void *ud)
{
    const env_table *t = ud;
    size_t n = strlen(name);
    for (size_t i = 0; t != NULL && i < 32 && t->kv[i] != NULL; i++) {
        if (strncmp(t->kv[i], name, n) == 0 && t->kv[i][n] == '=') {
            return t->kv[i] + n + 1;
        }
    }
    return NULL;
}

static char err[1024];

/* Parse a NULL-terminated list of arguments (after the program name) with an env table. */
static int parse_env(proxy_opts *o, env_table *env, const char *first, ...)
{
    const char *argv[64] = {"csql-proxy"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && argc < 63; a = va_arg(ap, const char *)) {
        argv[argc++] = a;
    }
    va_end(ap);
    err[0] = '\0';
    return proxy_args_parse(argc, argv, table_env, env, o, err, sizeof(err));
}

#define parse(o, ...) parse_env(o, NULL, __VA_ARGS__, (const char *)NULL)

/* The parse must fail with a message containing `needle`. */
static void expect_error(const char *needle, const char *first, ...)
{
    const char *argv[64] = {"csql-proxy"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a != NULL && argc < 63; a = va_arg(ap, const char *)) {
        argv[argc++] = a;
    }
    va_end(ap);
    proxy_opts o;
    err[0] = '\0';
    int rc = proxy_args_parse(argc, argv, table_env, NULL, &o, err, sizeof(err));
    if (rc == 0 || strstr(err, needle) == NULL) {
        fail_msg("args after %s: expected an error containing \"%s\", got rc %d \"%s\"", first,
                 needle, rc, err);
    }
    assert_null(strchr(err, '\n')); /* one line */
    proxy_opts_free(&o);
}

#define expect_err(needle, ...) expect_error(needle, __VA_ARGS__, (const char *)NULL)

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_proxy_args.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int remove_tmpdir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *write_file(const char *name, const char *text)
{
    static char path[160];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* ---- tests ---- */

static void test_defaults(void **state)
{
    (void)state;
    proxy_opts o;
    assert_int_equal(parse(&o, "p:r:i"), 0);
    assert_int_equal(o.cmd, PROXY_CMD_RUN);
    assert_string_equal(o.address, "127.0.0.1");
    assert_int_equal(o.port, 0);
    assert_null(o.unix_socket);
    assert_string_equal(o.http_address, "localhost");
    assert_int_equal(o.http_port, 9090);
    assert_int_equal(o.admin_port, 9091);
    assert_true(o.max_connections == 0);
    assert_true(o.event_loops == 0); /* one per CPU */
    assert_true(o.min_sigterm_delay_ms == 0 && o.max_sigterm_delay_ms == 0);
    assert_false(o.auto_iam_authn || o.private_ip || o.psc || o.auto_ip || o.lazy_refresh);
    assert_int_equal(o.n_instances, 1);
    assert_string_equal(o.instances[0].name, "p:r:i");
    proxy_opts_free(&o);
}

static void test_flag_syntax(void **state)
{
    (void)state;
    proxy_opts o;
    /* long with space and '=', short with space, glued and '=', bool clusters, flags after args */
    assert_int_equal(parse(&o, "--port", "6000", "p:r:a", "--address=::1", "-il",
                           "--max-sigterm-delay", "1m30s", "g.com:p:r:b", "-t", "tok", "--login-token", "lt",
                           "--lazy-refresh=false", "--quiet=true", "--max-connections=10",
                           "--event-loops", "3"),
                     0);
    assert_int_equal(o.port, 6000);
    assert_string_equal(o.address, "::1");
    assert_true(o.auto_iam_authn);
    assert_true(o.structured_logs);
    assert_false(o.lazy_refresh);
    assert_true(o.quiet);
    assert_true(o.max_connections == 10);
    assert_true(o.event_loops == 3);
    assert_true(o.max_sigterm_delay_ms == 90000);
    assert_string_equal(o.token, "tok");
    assert_int_equal(o.n_instances, 2);
    assert_string_equal(o.instances[1].name, "g.com:p:r:b");
    proxy_opts_free(&o);

    assert_int_equal(parse(&o, "-p6000", "-a=127.0.0.2", "--", "-weird:r:i"), 0);
    assert_int_equal(o.port, 6000);
    assert_string_equal(o.address, "127.0.0.2");
    assert_string_equal(o.instances[0].name, "-weird:r:i");
    proxy_opts_free(&o);

    /* the last occurrence wins, as with pflag */
    assert_int_equal(parse(&o, "-p", "1", "-p", "2", "p:r:i"), 0);
    assert_int_equal(o.port, 2);
    proxy_opts_free(&o);
}

static void test_flag_errors(void **state)
{
    (void)state;
    expect_err("unknown flag --nope", "--nope", "p:r:i");
    expect_err("unknown flag -x", "-x", "p:r:i");
    expect_err("--port needs a value", "p:r:i", "--port");
    expect_err("-p (--port) needs a value", "p:r:i", "-p");
    expect_err("--port \"abc\": not a port number", "--port", "abc", "p:r:i");
    expect_err("--port \"70000\"", "--port=70000", "p:r:i");
    expect_err("--max-connections \"-1\": not a non-negative integer", "--max-connections=-1",
               "p:r:i");
    expect_err("--min-sigterm-delay \"10\": not a duration", "--min-sigterm-delay", "10", "p:r:i");
    expect_err("--private-ip \"yes\": not a boolean", "--private-ip=yes", "p:r:i");
    expect_err("--help takes no value", "--help=1");
    expect_err("--fuse is an Auth Proxy flag that csql-proxy does not support", "--fuse", "/x");
    expect_err("-g is an Auth Proxy flag that csql-proxy does not support", "-g", "p:r:i");
    expect_err("--telemetry-project is an Auth Proxy flag", "--telemetry-project=x", "p:r:i");
    expect_err("no instance given", "--port", "5000");
    expect_err("\"p:r\" is not an instance connection name", "p:r");
    expect_err("is not an instance connection name", "p::i");
    expect_err("is not an instance connection name", "a:b:c:d:e");
}

static void test_help_and_version(void **state)
{
    (void)state;
    proxy_opts o;
    assert_int_equal(parse(&o, "--help"), 0);
    assert_int_equal(o.cmd, PROXY_CMD_HELP);
    assert_int_equal(o.help_for, PROXY_CMD_RUN);
    proxy_opts_free(&o);
    /* help wins over version and over values that would not parse */
    assert_int_equal(parse(&o, "-v", "--port", "nope", "-h"), 0);
    assert_int_equal(o.cmd, PROXY_CMD_HELP);
    proxy_opts_free(&o);
    assert_int_equal(parse(&o, "--version"), 0);
    assert_int_equal(o.cmd, PROXY_CMD_VERSION);
    proxy_opts_free(&o);
    assert_int_equal(parse(&o, "wait", "-h"), 0);
    assert_int_equal(o.cmd, PROXY_CMD_HELP);
    assert_int_equal(o.help_for, PROXY_CMD_WAIT);
    proxy_opts_free(&o);
}

static void test_subcommands(void **state)
{
    (void)state;
    proxy_opts o;
    assert_int_equal(parse(&o, "wait"), 0);
    assert_int_equal(o.cmd, PROXY_CMD_WAIT);
    assert_true(o.wait_max_ms == 30000);
    assert_string_equal(o.http_address, "localhost");
    assert_int_equal(o.http_port, 9090);
    proxy_opts_free(&o);
    assert_int_equal(parse(&o, "wait", "--max", "5s", "--http-port", "9999", "--http-address",
                           "127.0.0.5"),
                     0);
    assert_true(o.wait_max_ms == 5000);
    assert_int_equal(o.http_port, 9999);
    assert_string_equal(o.http_address, "127.0.0.5");
    proxy_opts_free(&o);
    assert_int_equal(parse(&o, "shutdown", "--admin-port=9555"), 0);
    assert_int_equal(o.cmd, PROXY_CMD_SHUTDOWN);
    assert_int_equal(o.admin_port, 9555);
    proxy_opts_free(&o);
    env_table env = {{"CSQL_PROXY_ADMIN_PORT=9666"}};
    assert_int_equal(parse_env(&o, &env, "shutdown", (const char *)NULL), 0);
    assert_int_equal(o.admin_port, 9666);
    proxy_opts_free(&o);
    expect_err("csql-proxy wait takes no arguments", "wait", "p:r:i");
    expect_err("unknown flag --port", "shutdown", "--port", "1");
    expect_err("--max \"soon\": not a duration", "wait", "--max", "soon");
}

static void test_environment(void **state)
{
    (void)state;
    proxy_opts o;
    env_table env = {{
        "CSQL_PROXY_PORT=7000",
        "CSQL_PROXY_AUTO_IAM_AUTHN=true",
        "CSQL_PROXY_TOKEN=t1",
        "CSQL_PROXY_LOGIN_TOKEN=t2",
        "CSQL_PROXY_MAX_SIGTERM_DELAY=10s",
        "CSQL_PROXY_HTTP_ADDRESS=",  /* empty is unset */
        "CSQL_PROXY_INSTANCE_CONNECTION_NAME=p:r:a",
        "CSQL_PROXY_INSTANCE_CONNECTION_NAME_1=p:r:b?port=9000",
        "CSQL_PROXY_INSTANCE_CONNECTION_NAME_2=p:r:c",
        "CSQL_PROXY_INSTANCE_CONNECTION_NAME_4=p:r:after-a-gap",
    }};
    assert_int_equal(parse_env(&o, &env, (const char *)NULL), 0);
    assert_int_equal(o.port, 7000);
    assert_true(o.auto_iam_authn);
    assert_string_equal(o.token, "t1");
    assert_string_equal(o.login_token, "t2");
    assert_true(o.max_sigterm_delay_ms == 10000);
    assert_string_equal(o.http_address, "localhost");
    assert_int_equal(o.n_instances, 3);
    assert_string_equal(o.instances[1].name, "p:r:b");
    assert_int_equal(o.instances[1].port, 9000);
    proxy_opts_free(&o);

    /* flags beat the environment; arguments replace the environment's instances */
    assert_int_equal(parse_env(&o, &env, "--port", "7500", "x:y:z", (const char *)NULL), 0);
    assert_int_equal(o.port, 7500);
    assert_int_equal(o.n_instances, 1);
    assert_string_equal(o.instances[0].name, "x:y:z");
    proxy_opts_free(&o);

    /* _0 starts the list when the plain name is absent */
    env_table env0 = {{"CSQL_PROXY_INSTANCE_CONNECTION_NAME_0=p:r:zero",
                       "CSQL_PROXY_INSTANCE_CONNECTION_NAME_1=p:r:one"}};
    assert_int_equal(parse_env(&o, &env0, (const char *)NULL), 0);
    assert_int_equal(o.n_instances, 2);
    assert_string_equal(o.instances[0].name, "p:r:zero");
    proxy_opts_free(&o);

    env_table bad = {{"CSQL_PROXY_PORT=many"}};
    assert_int_not_equal(parse_env(&o, &bad, "p:r:i", (const char *)NULL), 0);
    assert_non_null(strstr(err, "environment variable CSQL_PROXY_PORT \"many\": not a port"));
    proxy_opts_free(&o);
    env_table badb = {{"CSQL_PROXY_QUIET=yes"}};
    assert_int_not_equal(parse_env(&o, &badb, "p:r:i", (const char *)NULL), 0);
    assert_non_null(strstr(err, "CSQL_PROXY_QUIET \"yes\": not a boolean"));
    proxy_opts_free(&o);
}

static void test_config_file_json(void **state)
{
    (void)state;
    const char *path = write_file("c.json", "{\"port\": 6100, \"auto-iam-authn\": true, "
                                            "\"token\": \"ft\", \"login_token\": \"fl\", "
                                            "\"max-sigterm-delay\": \"3s\", "
                                            "\"instance-connection-name\": \"p:r:a\", "
                                            "\"instance-connection-name-1\": \"p:r:b\"}");
    proxy_opts o;
    assert_int_equal(parse(&o, "--config-file", path), 0);
    assert_int_equal(o.port, 6100);
    assert_true(o.auto_iam_authn);
    assert_string_equal(o.login_token, "fl");
    assert_true(o.max_sigterm_delay_ms == 3000);
    assert_int_equal(o.n_instances, 2);
    assert_string_equal(o.instances[1].name, "p:r:b");
    proxy_opts_free(&o);

    /* precedence: flag > environment > file; the file may come from the environment */
    char fileenv[200];
    snprintf(fileenv, sizeof(fileenv), "CSQL_PROXY_CONFIG_FILE=%s", path);
    env_table env = {{fileenv, "CSQL_PROXY_PORT=6200"}};
    assert_int_equal(parse_env(&o, &env, (const char *)NULL), 0);
    assert_int_equal(o.port, 6200);
    assert_int_equal(o.n_instances, 2);
    proxy_opts_free(&o);
    assert_int_equal(parse_env(&o, &env, "-p", "6300", (const char *)NULL), 0);
    assert_int_equal(o.port, 6300);
    proxy_opts_free(&o);

    expect_err("unknown key \"porty\"", "--config-file",
               write_file("u.json", "{\"porty\": 1, \"instance-connection-name\": \"p:r:i\"}"));
    expect_err("\"fuse\" is an Auth Proxy flag", "--config-file",
               write_file("f.json", "{\"fuse\": \"/x\", \"instance-connection-name\": \"p:r:i\"}"));
    expect_err("must be a string, a boolean or an integer", "--config-file",
               write_file("t.json", "{\"port\": [1]}"));
    expect_err("v.json: port \"x\": not a port number", "--config-file",
               write_file("v.json", "{\"port\": \"x\", \"instance-connection-name\": \"p:r:i\"}"));
    expect_err("line 1", "--config-file", write_file("s.json", "{\"port\": "));
    expect_err("the top level must be a JSON object", "--config-file",
               write_file("a.json", "[1]"));
    expect_err("is set twice", "--config-file",
               write_file("d.json", "{\"auto-iam-authn\": true, \"auto_iam_authn\": false}"));
    expect_err("must end in .json, .toml, .yaml or .yml", "--config-file",
               write_file("c.conf", "{}"));
    expect_err("No such file or directory", "--config-file", "/nonexistent/c.json", "p:r:i");
}

static void test_config_file_toml(void **state)
{
    (void)state;
    const char *path = write_file("c.toml",
                                  "# csql-proxy\n"
                                  "instance-connection-name = \"p:r:a?port=7001\"\n"
                                  "instance-connection-name-1 = 'p:r:b'\n"
                                  "  auto-ip = true   # trailing comment\n"
                                  "max-connections = 12\r\n"
                                  "user-agent = \"a \\\"quoted\\\" agent\"\n"
                                  "\n");
    proxy_opts o;
    assert_int_equal(parse(&o, "--config-file", path), 0);
    assert_true(o.auto_ip);
    assert_true(o.max_connections == 12);
    assert_string_equal(o.user_agent, "a \"quoted\" agent");
    assert_int_equal(o.n_instances, 2);
    assert_int_equal(o.instances[0].port, 7001);
    proxy_opts_free(&o);
    expect_err("line 2: tables are not supported", "--config-file",
               write_file("t.toml", "port = 1\n[section]\n"));
    expect_err("line 1: expected key = value", "--config-file", write_file("k.toml", "port 1\n"));
    expect_err("line 1: bad or unterminated string", "--config-file",
               write_file("q.toml", "token = \"abc\n"));
    expect_err("line 1: unexpected text after the value", "--config-file",
               write_file("x.toml", "port = 1 2\n"));
    expect_err("line 2: \"port\" is set twice", "--config-file",
               write_file("d.toml", "port = 1\nport = 2\n"));
}

static void test_config_file_yaml(void **state)
{
    (void)state;
    /* The Auth Proxy's own test files use instance_connection_name_N with underscores. */
    const char *path = write_file("c.yaml",
                                  "# csql-proxy\n"
                                  "---\n"
                                  "instance_connection_name_0: \"p:r:a?port=7001\"\n"
                                  "instance_connection_name_1: 'p:r:b'\n"
                                  "auto-ip: true   # trailing comment\n"
                                  "max-connections: 12\r\n"
                                  "max-sigterm-delay: 1m30s\n"
                                  "user-agent: a \"quoted\" agent\n"
                                  "token: >-\n"
                                  "  folded\n"
                                  "  token\n"
                                  "...\n");
    proxy_opts o;
    assert_int_equal(parse(&o, "--config-file", path), 0);
    assert_true(o.auto_ip);
    assert_true(o.max_connections == 12);
    assert_true(o.max_sigterm_delay_ms == 90000);
    assert_string_equal(o.user_agent, "a \"quoted\" agent");
    assert_string_equal(o.token, "folded token");
    assert_int_equal(o.n_instances, 2);
    assert_int_equal(o.instances[0].port, 7001);
    assert_string_equal(o.instances[1].name, "p:r:b");
    proxy_opts_free(&o);
    /* .yml too; the environment beats the file */
    env_table env = {{"CSQL_PROXY_MAX_CONNECTIONS=3"}};
    assert_int_equal(parse_env(&o, &env, "--config-file",
                               write_file("c.yml", "instance-connection-name: p:r:i\n"
                                                   "max-connections: 12\n"),
                               (const char *)NULL),
                     0);
    assert_true(o.max_connections == 3);
    assert_string_equal(o.instances[0].name, "p:r:i");
    proxy_opts_free(&o);
    /* an empty file sets nothing */
    assert_int_equal(parse(&o, "--config-file", write_file("e.yaml", "# nothing\n"), "p:r:i"), 0);
    proxy_opts_free(&o);

    expect_err("n.yaml: line 2: \"port\" is a mapping", "--config-file",
               write_file("n.yaml", "token: x\nport:\n  tcp: 1\n"));
    expect_err("line 1: \"instance-connection-name\" is a list", "--config-file",
               write_file("l.yaml", "instance-connection-name: [p:r:a, p:r:b]\n"));
    expect_err("line 2: \"port\" is an alias", "--config-file",
               write_file("a.yaml", "admin-port: &p 9100\nport: *p\n"));
    expect_err("line 1: \"port\" has no value", "--config-file", write_file("z.yaml", "port:\n"));
    expect_err("line 1: \"port\" has no value", "--config-file",
               write_file("z2.yaml", "port: ~\n"));
    expect_err("line 2: \"port\" is set twice", "--config-file",
               write_file("d.yaml", "port: 1\nport: 2\n"));
    expect_err("line 2: \"auto_iam_authn\" is set twice", "--config-file",
               write_file("d2.yaml", "auto-iam-authn: true\nauto_iam_authn: false\n"));
    expect_err("line 2: only one YAML document is read", "--config-file",
               write_file("m.yaml", "port: 1\n---\nport: 2\n"));
    expect_err("line 1: the top level must be a mapping", "--config-file",
               write_file("s.yaml", "- port: 1\n"));
    expect_err("line 1: a key must be a flag name", "--config-file",
               write_file("k.yaml", "[a]: 1\n"));
    expect_err("config file", "--config-file", write_file("x.yaml", "port: \"1\nx: 2\n"));
    expect_err("line 2: auto-iam-authn \"yes\": not a boolean", "--config-file",
               write_file("b.yaml", "instance-connection-name: p:r:i\nauto-iam-authn: yes\n"));
    expect_err("unknown key \"porty\"", "--config-file",
               write_file("u.yaml", "porty: 1\ninstance-connection-name: p:r:i\n"));
    expect_err("\"fuse\" is an Auth Proxy flag", "--config-file",
               write_file("f.yaml", "fuse: /x\ninstance-connection-name: p:r:i\n"));
}

static void test_conflicts(void **state)
{
    (void)state;
    expect_err("--unix-socket and --address cannot be used together", "-u", "/tmp", "-a",
               "127.0.0.1", "p:r:i");
    expect_err("--unix-socket and --port cannot be used together", "-u", "/tmp", "-p", "5000",
               "p:r:i");
    expect_err("--private-ip and --psc cannot be used together", "--private-ip", "--psc", "p:r:i");
    expect_err("--private-ip and --auto-ip cannot be used together", "--private-ip", "--auto-ip",
               "p:r:i");
    expect_err("--token and --credentials-file", "-t", "x", "-c", "/f.json", "p:r:i");
    expect_err("--token and --json-credentials", "-t", "x", "-j", "{}", "p:r:i");
    expect_err("--credentials-file and --json-credentials", "-c", "/f", "-j", "{}", "p:r:i");
    expect_err("--login-token needs both --token and --auto-iam-authn", "--login-token", "l",
               "-t", "x", "p:r:i");
    expect_err("--login-token needs both --token and --auto-iam-authn", "--login-token", "l", "-i",
               "p:r:i");
    expect_err("--auto-iam-authn with --token also needs --login-token", "-i", "-t", "x", "p:r:i");
    expect_err("--sqladmin-api-endpoint and --universe-domain", "--sqladmin-api-endpoint",
               "https://x", "--universe-domain", "y.com", "p:r:i");
    expect_err("--iam-credentials-endpoint needs --impersonate-service-account",
               "--iam-credentials-endpoint", "http://127.0.0.1:1", "p:r:i");
    expect_err("--iam-credentials-endpoint and --universe-domain",
               "--impersonate-service-account", "a@p.iam.gserviceaccount.com",
               "--iam-credentials-endpoint", "https://x", "--universe-domain", "y.com", "p:r:i");
    expect_err("--quiet and --debug-logs", "--quiet", "--debug-logs", "p:r:i");
    expect_err("--prometheus-namespace needs --prometheus", "--prometheus-namespace", "x",
               "p:r:i");
    expect_err("--address \"localhost\": not an IPv4 or IPv6 address", "-a", "localhost", "p:r:i");
    expect_err("--address is empty", "--address=", "p:r:i");
    expect_err("--http-port and --admin-port are both 9100", "--health-check", "--quitquitquit",
               "--http-port", "9100", "--admin-port", "9100", "p:r:i");

    /* allowed: auto-ip with psc; the same ports when one server is off; a token with -i and a login token */
    proxy_opts o;
    assert_int_equal(parse(&o, "--auto-ip", "--psc", "p:r:i"), 0);
    proxy_opts_free(&o);
    assert_int_equal(parse(&o, "--health-check", "--http-port", "9100", "--admin-port", "9100",
                           "p:r:i"),
                     0);
    proxy_opts_free(&o);
    assert_int_equal(parse(&o, "-i", "-t", "a", "--login-token", "b", "p:r:i"), 0);
    proxy_opts_free(&o);
    assert_int_equal(parse(&o, "--impersonate-service-account", "a@p.iam.gserviceaccount.com",
                           "--iam-credentials-endpoint", "http://127.0.0.1:1", "p:r:i"),
                     0);
    assert_string_equal(o.iam_credentials_endpoint, "http://127.0.0.1:1");
    proxy_opts_free(&o);
    /* --unix-socket with the default address and port is fine */
    assert_int_equal(parse(&o, "-u", "/tmp", "p:r:i?port=5000"), 0);
    proxy_opts_free(&o);
}

static void test_scrub_hides_secrets(void **state)
{
    (void)state;
    char a0[] = "csql-proxy", a1[] = "--token", a2[] = "secret1", a3[] = "--login-token=secret2",
         a4[] = "-jsecret3", a5[] = "-t", a6[] = "secret4", a7[] = "--port", a8[] = "5000",
         a9[] = "-i", a10[] = "p:r:i";
    char *argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, NULL};
    proxy_args_scrub(11, argv);
    assert_string_equal(a2, "xxxxxxx");
    assert_string_equal(a3, "--login-token=xxxxxxx");
    assert_string_equal(a4, "-jxxxxxxx");
    assert_string_equal(a6, "xxxxxxx");
    assert_string_equal(a8, "5000");
    assert_string_equal(a10, "p:r:i");
}

static void test_env_names(void **state)
{
    (void)state;
    char buf[96];
    flags_env_name("auto-iam-authn", buf, sizeof(buf));
    assert_string_equal(buf, "CSQL_PROXY_AUTO_IAM_AUTHN");
    flags_env_name("sqladmin-api-endpoint", buf, sizeof(buf));
    assert_string_equal(buf, "CSQL_PROXY_SQLADMIN_API_ENDPOINT");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_flag_syntax),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_help_and_version),
        cmocka_unit_test(test_subcommands),
        cmocka_unit_test(test_environment),
        cmocka_unit_test(test_config_file_json),
        cmocka_unit_test(test_config_file_toml),
        cmocka_unit_test(test_config_file_yaml),
        cmocka_unit_test(test_conflicts),
        cmocka_unit_test(test_scrub_hides_secrets),
        cmocka_unit_test(test_env_names),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
