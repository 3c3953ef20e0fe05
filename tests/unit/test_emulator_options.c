/* csql-emulator's command line, config file and instance specs (options.c, instance.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "emulator.h"
#include "options.h"

#define PG "version=POSTGRES_15&backend=127.0.0.1:5432"

static char err[1024];

/* Parse a NULL-terminated argument list (without argv[0]). */
static emu_options_result parse(emu_options *o, const char *const *args)
{
    const char *argv[64] = {"csql-emulator"};
    int argc = 1;
    for (; args[argc - 1]; argc++)
        argv[argc] = args[argc - 1];
    err[0] = '\0';
    FILE *out = fopen("/dev/null", "w");
    emu_options_result r = emu_options_parse(o, argc, argv, out, err, sizeof err);
    fclose(out);
    return r;
}

/* The parse fails and the message holds `needle`. */
static void expect_error(const char *const *args, const char *needle)
{
    emu_options o;
    emu_options_result r = parse(&o, args);
    emu_options_free(&o);
    if (r != EMU_OPTIONS_ERROR)
        fail_msg("expected an error naming \"%s\", got success", needle);
    if (!strstr(err, needle))
        fail_msg("error \"%s\" lacks \"%s\"", err, needle);
}

static void test_defaults(void **state)
{
    (void)state;
    emu_options o;
    const char *args[] = {"--instance", "p:r:i?public-ip=127.0.0.2&" PG, NULL};
    assert_int_equal(parse(&o, args), EMU_OPTIONS_RUN);
    assert_string_equal(o.api_address, "127.0.0.1");
    assert_int_equal(o.api_port, 0);
    assert_int_equal(o.server_port, 3307);
    assert_int_equal(o.cert_lifetime_s, 3600);
    assert_int_equal(o.token_lifetime_s, 3600);
    assert_string_equal(o.static_principal, EMU_STATIC_PRINCIPAL_DEFAULT);
    assert_null(o.write_credentials);
    assert_null(o.backend_source);
    assert_false(o.verbose);
    assert_int_equal(o.n_instances, 1);
    emu_instance *in = o.instances[0];
    assert_string_equal(in->connection_name, "p:r:i");
    assert_string_equal(in->project, "p");
    assert_string_equal(in->region, "r");
    assert_string_equal(in->name, "i");
    assert_string_equal(in->version, "POSTGRES_15");
    assert_string_equal(in->public_ip, "127.0.0.2");
    assert_null(in->private_ip);
    assert_null(in->psc_dns);
    assert_int_equal(in->ca_mode, EMU_CA_LEGACY);
    assert_string_equal(in->backend, "127.0.0.1:5432");
    emu_options_free(&o);
}

static void test_every_flag(void **state)
{
    (void)state;
    emu_options o;
    const char *args[] = {"--api-address=::1", "--api-port", "8080", "--server-port", "43307",
                          "--backend-source", "127.0.0.9", "--static-token", "t1",
                          "--static-token=t2", "--static-principal", "me@example.com",
                          "--cert-lifetime", "20", "--token-lifetime", "30",
                          "--write-credentials", "/tmp/x", "--verbose", "--fault",
                          "endpoint=token&status=503&count=2",
                          "--instance",
                          "google.com:my-proj:us-central1:db?version=MYSQL_8_0&private-ip=127.0.0.3"
                          "&ca-mode=cas&backend=/tmp/my.sock",
                          NULL};
    assert_int_equal(parse(&o, args), EMU_OPTIONS_RUN);
    assert_string_equal(o.api_address, "::1");
    assert_int_equal(o.api_port, 8080);
    assert_int_equal(o.server_port, 43307);
    assert_string_equal(o.backend_source, "127.0.0.9");
    assert_int_equal(o.n_static_tokens, 2);
    assert_string_equal(o.static_tokens[0], "t1");
    assert_string_equal(o.static_tokens[1], "t2");
    assert_string_equal(o.static_principal, "me@example.com");
    assert_int_equal(o.cert_lifetime_s, 20);
    assert_int_equal(o.token_lifetime_s, 30);
    assert_string_equal(o.write_credentials, "/tmp/x");
    assert_true(o.verbose);
    assert_int_equal(o.n_faults, 1);
    assert_int_equal(o.faults[0].endpoint, EMU_EP_TOKEN);
    assert_int_equal(o.faults[0].status, 503);
    assert_int_equal(o.faults[0].count, 2);
    emu_instance *in = o.instances[0];
    assert_string_equal(in->project, "google.com:my-proj");
    assert_string_equal(in->region, "us-central1");
    assert_string_equal(in->name, "db");
    assert_int_equal(in->ca_mode, EMU_CA_CAS);
    assert_string_equal(in->private_ip, "127.0.0.3");
    assert_string_equal(in->backend, "/tmp/my.sock");
    emu_options_free(&o);
}

static void test_help_and_version_exit(void **state)
{
    (void)state;
    emu_options o;
    char *text = NULL;
    size_t len = 0;
    const char *argv[] = {"csql-emulator", "--api-port", "1", "--help"};
    FILE *out = open_memstream(&text, &len);
    assert_int_equal(emu_options_parse(&o, 4, argv, out, err, sizeof err), EMU_OPTIONS_EXIT);
    fclose(out);
    assert_non_null(strstr(text, "--instance"));
    assert_non_null(strstr(text, "--server-port"));
    free(text);
    emu_options_free(&o);

    const char *argv2[] = {"csql-emulator", "--version"};
    out = open_memstream(&text, &len);
    assert_int_equal(emu_options_parse(&o, 2, argv2, out, err, sizeof err), EMU_OPTIONS_EXIT);
    fclose(out);
    assert_true(strncmp(text, "csql-emulator ", 14) == 0);
    free(text);
    emu_options_free(&o);
}

static void test_bad_flags_name_the_value(void **state)
{
    (void)state;
    expect_error((const char *[]){"--api-port", "abc", NULL}, "'abc'");
    expect_error((const char *[]){"--api-port", "65536", NULL}, "'65536'");
    expect_error((const char *[]){"--api-port", "-1", NULL}, "'-1'");
    expect_error((const char *[]){"--server-port", "0", NULL}, "--server-port '0'");
    expect_error((const char *[]){"--cert-lifetime", "0", NULL}, "--cert-lifetime '0'");
    expect_error((const char *[]){"--token-lifetime", "1x", NULL}, "'1x'");
    expect_error((const char *[]){"--api-address", "0.0.0.0", NULL}, "'0.0.0.0'");
    expect_error((const char *[]){"--api-address", "localhost", NULL}, "'localhost'");
    expect_error((const char *[]){"--backend-source", "10.1.2.3", NULL}, "'10.1.2.3'");
    expect_error((const char *[]){"--static-principal", "nobody", NULL}, "'nobody'");
    expect_error((const char *[]){"--bogus", NULL}, "'--bogus'");
    expect_error((const char *[]){"stray", NULL}, "'stray'");
    expect_error((const char *[]){"--api-port", NULL}, "--api-port needs a value");
    expect_error((const char *[]){"--verbose=yes", NULL}, "takes no value");
    expect_error((const char *[]){"--write-credentials", "", NULL}, "empty");
    expect_error((const char *[]){"--config", "/nonexistent/emu.json", NULL},
                 "/nonexistent/emu.json");
}

static void test_static_token_error_hides_the_token(void **state)
{
    (void)state;
    expect_error((const char *[]){"--static-token", "ok", "--static-token", "sec ret", NULL},
                 "static-token number 2");
    assert_null(strstr(err, "sec ret"));
}

static void test_instance_names(void **state)
{
    (void)state;
    static const char *const bad[] = {"p:i", "a:b:c:d:e", ":r:i", "p::i", "p:r:", "p:r:i/x",
                                      "p r:x:i", "", "p:r:i#"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char spec[128];
        snprintf(spec, sizeof spec, "%s?public-ip=127.0.0.2&" PG, bad[i]);
        expect_error((const char *[]){"--instance", spec, NULL}, "connection name");
        if (bad[i][0])
            assert_non_null(strstr(err, bad[i]));
    }
    char *p, *r, *n;
    assert_int_equal(emu_connection_name_split("example.com:proj:us-east1:db-1", &p, &r, &n,
                                               err, sizeof err),
                     0);
    assert_string_equal(p, "example.com:proj");
    assert_string_equal(r, "us-east1");
    assert_string_equal(n, "db-1");
    free(p), free(r), free(n);
}

static void test_instance_keys(void **state)
{
    (void)state;
    struct {
        const char *spec, *needle;
    } cases[] = {
        {"p:r:i?public-ip=127.0.0.2&version=ORACLE_19&backend=127.0.0.1:1", "'ORACLE_19'"},
        {"p:r:i?public-ip=127.0.0.2&version=POSTGRES_&backend=127.0.0.1:1", "'POSTGRES_'"},
        {"p:r:i?public-ip=127.0.0.2&version=postgres_15&backend=127.0.0.1:1", "'postgres_15'"},
        {"p:r:i?public-ip=10.0.0.1&" PG, "public-ip '10.0.0.1'"},
        {"p:r:i?private-ip=192.168.1.1&" PG, "private-ip '192.168.1.1'"},
        {"p:r:i?public-ip=fe80::1&" PG, "'fe80::1'"},
        {"p:r:i?public-ip=127.0.0.2&ca-mode=custom&" PG, "ca-mode 'custom'"},
        {"p:r:i?public-ip=127.0.0.2&version=POSTGRES_15&backend=127.0.0.1", "'127.0.0.1'"},
        {"p:r:i?public-ip=127.0.0.2&version=POSTGRES_15&backend=127.0.0.1:0", "'127.0.0.1:0'"},
        {"p:r:i?public-ip=127.0.0.2&version=POSTGRES_15&backend=h:70000", "'h:70000'"},
        {"p:r:i?public-ip=127.0.0.2&version=POSTGRES_15&backend=rel/sock", "'rel/sock'"},
        {"p:r:i?public-ip=127.0.0.2&version=POSTGRES_15&backend=::1:5432", "'::1:5432'"},
        {"p:r:i?public-ip=127.0.0.2&color=blue&" PG, "unknown key 'color'"},
        {"p:r:i?public-ip=127.0.0.2&public-ip=127.0.0.3&" PG, "'public-ip' given twice"},
        {"p:r:i?public-ip=127.0.0.2&ca-mode=cas&ca_mode=legacy&" PG, "given twice"},
        {"p:r:i?public-ip=127.0.0.2&novalue&" PG, "'novalue' is not key=value"},
        {"p:r:i?public-ip=127.0.0.2&backend=127.0.0.1:1", "version is required"},
        {"p:r:i?public-ip=127.0.0.2&version=POSTGRES_15", "backend is required"},
        {"p:r:i?" PG, "no address"},
        {"p:r:i?psc-dns=no-such-host.invalid&" PG, "'no-such-host.invalid' does not resolve"},
        {"p:r:i?psc-dns=bad_name!&" PG, "psc-dns 'bad_name!'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_error((const char *[]){"--instance", cases[i].spec, NULL}, cases[i].needle);
}

static void test_instance_good_variants(void **state)
{
    (void)state;
    emu_instance *in =
        emu_instance_parse("p:r:i?public-ip=::1&psc-dns=localhost&version=SQLSERVER_2019_STANDARD"
                           "&backend=[::1]:1433&ca-mode=legacy",
                           err, sizeof err);
    assert_non_null(in);
    assert_string_equal(in->public_ip, "::1");
    assert_string_equal(in->psc_dns, "localhost");
    assert_non_null(in->psc_ip);
    assert_true(emu_ip_is_loopback_literal(in->psc_ip));
    assert_string_equal(in->backend, "[::1]:1433");
    emu_instance_free(in);

    /* Values are percent-decoded; addresses are normalized. */
    in = emu_instance_parse("p:r:i?public-ip=127.0.0.2&version=POSTGRES_15&backend=%2Ftmp%2Fs",
                            err, sizeof err);
    assert_non_null(in);
    assert_string_equal(in->backend, "/tmp/s");
    emu_instance_free(in);
    in = emu_instance_parse("p:r:i?public-ip=0:0:0:0:0:0:0:1&" PG, err, sizeof err);
    assert_non_null(in);
    assert_string_equal(in->public_ip, "::1");
    emu_instance_free(in);

    assert_true(emu_ip_is_loopback_literal("127.255.0.1"));
    assert_false(emu_ip_is_loopback_literal("128.0.0.1"));
    assert_false(emu_ip_is_loopback_literal("::ffff:127.0.0.1"));
    assert_false(emu_ip_is_loopback_literal("localhost"));
}

static void test_duplicates_rejected(void **state)
{
    (void)state;
    expect_error((const char *[]){"--instance", "p:r:i?public-ip=127.0.0.2&" PG, "--instance",
                                  "p:r:i?public-ip=127.0.0.3&" PG, NULL},
                 "p:r:i is given twice");
    /* The API path has no region: project + name must be unique. */
    expect_error((const char *[]){"--instance", "p:r1:i?public-ip=127.0.0.2&" PG, "--instance",
                                  "p:r2:i?public-ip=127.0.0.3&" PG, NULL},
                 "p:r2:i");
    expect_error((const char *[]){"--instance", "p:r:a?public-ip=127.0.0.2&" PG, "--instance",
                                  "p:r:b?private-ip=127.0.0.2&" PG, NULL},
                 "both use address 127.0.0.2");
    expect_error((const char *[]){"--instance",
                                  "p:r:a?public-ip=127.0.0.2&private-ip=127.0.0.2&" PG, NULL},
                 "public-ip and private-ip are both 127.0.0.2");
    /* psc-dns=localhost resolves to 127.0.0.1, so a public-ip there collides. */
    expect_error((const char *[]){"--instance", "p:r:a?public-ip=127.0.0.1&" PG, "--instance",
                                  "p:r:b?psc-dns=localhost&" PG, NULL},
                 "127.0.0.1");

    emu_options o;
    assert_int_equal(parse(&o, (const char *[]){"--instance", "p:r:a?public-ip=127.0.0.2&" PG,
                                                "--instance", "q:r:a?public-ip=127.0.0.3&" PG,
                                                NULL}),
                     EMU_OPTIONS_RUN);
    assert_ptr_equal(emu_instances_find(o.instances, o.n_instances, "q:r:a"), o.instances[1]);
    assert_null(emu_instances_find(o.instances, o.n_instances, "q:x:a"));
    emu_options_free(&o);
}

static void test_faults_on_command_line(void **state)
{
    (void)state;
    expect_error((const char *[]){"--fault", "endpoint=nope&status=503", NULL},
                 "unknown endpoint 'nope'");
    expect_error((const char *[]){"--fault", "endpoint=token&status=200", NULL}, "status 200");
    expect_error((const char *[]){"--fault", "endpoint=token", NULL}, "no effect");
    expect_error((const char *[]){"--fault", "endpoint=token&status=abc", NULL}, "integer");
    expect_error((const char *[]){"--fault", "endpoint=token&status=503&count=0", NULL}, "count");
    expect_error((const char *[]){"--fault", "endpoint=token&status=503&when=now", NULL},
                 "unknown key 'when'");
    expect_error((const char *[]){"--fault", "endpoint=*&status=503&instance=p:r:x",
                                  "--instance", "p:r:i?public-ip=127.0.0.2&" PG, NULL},
                 "unknown instance 'p:r:x'");
}

static char *write_config(const char *json)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/emu-opt-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    return path;
}

static void test_config_file(void **state)
{
    (void)state;
    emu_options o;
    char *path = write_config(
        "{\"api_address\":\"127.0.0.1\",\"api_port\":9000,\"server_port\":43000,"
        "\"static_tokens\":[\"a\"],\"cert_lifetime\":100,\"token_lifetime\":\"200\","
        "\"write_credentials\":\"/tmp/c\",\"backend_source\":\"127.0.0.8\",\"verbose\":true,"
        "\"static_principal\":\"s@x.iam.gserviceaccount.com\","
        "\"instances\":[\"p:r:a?public-ip=127.0.0.2&" PG "\","
        "{\"connection_name\":\"p:r:b\",\"version\":\"MYSQL_8_0\",\"private_ip\":\"127.0.0.3\","
        "\"backend\":\"127.0.0.1:3306\",\"ca-mode\":\"cas\"}],"
        "\"faults\":[\"endpoint=token&status=500\",{\"endpoint\":\"connectSettings\","
        "\"instance\":\"p:r:b\",\"latency_ms\":5}]}");
    const char *args[] = {"--config", path, "--api-port", "9001", "--static-token", "b",
                          "--instance", "p:r:c?public-ip=127.0.0.4&" PG, NULL};
    assert_int_equal(parse(&o, args), EMU_OPTIONS_RUN);
    assert_int_equal(o.api_port, 9001); /* the flag overrides */
    assert_int_equal(o.server_port, 43000);
    assert_int_equal(o.cert_lifetime_s, 100);
    assert_int_equal(o.token_lifetime_s, 200);
    assert_string_equal(o.write_credentials, "/tmp/c");
    assert_string_equal(o.backend_source, "127.0.0.8");
    assert_string_equal(o.static_principal, "s@x.iam.gserviceaccount.com");
    assert_true(o.verbose);
    assert_int_equal(o.n_static_tokens, 2); /* lists add up */
    assert_int_equal(o.n_instances, 3);
    assert_string_equal(o.instances[1]->connection_name, "p:r:b");
    assert_string_equal(o.instances[1]->private_ip, "127.0.0.3");
    assert_int_equal(o.instances[1]->ca_mode, EMU_CA_CAS);
    assert_string_equal(o.instances[2]->connection_name, "p:r:c");
    assert_int_equal(o.n_faults, 2);
    assert_int_equal(o.faults[1].endpoint, EMU_EP_CONNECT_SETTINGS);
    assert_string_equal(o.faults[1].instance, "p:r:b");
    assert_int_equal(o.faults[1].latency_ms, 5);
    emu_options_free(&o);
    unlink(path);
}

static void test_config_errors(void **state)
{
    (void)state;
    struct {
        const char *json, *needle;
    } cases[] = {
        {"{\"api_port\":\"x\"}", "api-port 'x'"},
        {"{\"apiport\":1}", "unknown key 'apiport'"},
        {"{\"api-port\":1}", "unknown key 'api-port'"},
        {"{\"api_port\":1.5}", "api_port must be a string or an integer"},
        {"{\"instances\":\"p:r:i\"}", "instances must be a list"},
        {"{\"instances\":[42]}", "string or an object"},
        {"{\"instances\":[{\"version\":\"POSTGRES_15\"}]}", "connection_name"},
        {"{\"instances\":[{\"connection_name\":\"p:r:i\",\"public_ip\":\"8.8.8.8\"}]}",
         "'8.8.8.8'"},
        {"{\"instances\":[{\"connection_name\":\"p:r:i\",\"public_ip\":2}]}", "must be a string"},
        {"{\"static_tokens\":[1]}", "static_tokens must hold strings"},
        {"{\"faults\":[{\"endpoint\":\"token\"}]}", "no effect"},
        {"{\"verbose\":1}", "verbose must be true or false"},
        {"[1]", "top level must be an object"},
        {"{\"api_port\":1,\"api_port\":2}", "duplicate"},
        {"{not json", "--config"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_config(cases[i].json);
        expect_error((const char *[]){"--config", path, NULL}, cases[i].needle);
        unlink(path);
    }
    expect_error((const char *[]){"--config", "/a", "--config", "/b", NULL}, "twice");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_flag),
        cmocka_unit_test(test_help_and_version_exit),
        cmocka_unit_test(test_bad_flags_name_the_value),
        cmocka_unit_test(test_static_token_error_hides_the_token),
        cmocka_unit_test(test_instance_names),
        cmocka_unit_test(test_instance_keys),
        cmocka_unit_test(test_instance_good_variants),
        cmocka_unit_test(test_duplicates_rejected),
        cmocka_unit_test(test_faults_on_command_line),
        cmocka_unit_test(test_config_file),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
