/*
 * csql-proxy instances: query parameters and their conflicts, how each
 * instance is dialled, TCP port assignment and Unix socket naming.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "instances.h"

static char err[512];

static char loopback[] = "127.0.0.1";
static char any_ipv4[] = "0.0.0.0";
static char cloudsql_dir[] = "/cloudsql/";

static proxy_opts defaults(void)
{
    proxy_opts g;
    memset(&g, 0, sizeof(g));
    g.address = loopback;
    return g;
}

static void parse_ok(const char *spec, const proxy_opts *g, proxy_instance *in)
{
    if (proxy_instance_parse(spec, g, in, err, sizeof(err)) != 0) {
        fail_msg("%s: %s", spec, err);
    }
}

static void parse_bad(const char *spec, const proxy_opts *g, const char *needle)
{
    proxy_instance in;
    err[0] = '\0';
    if (proxy_instance_parse(spec, g, &in, err, sizeof(err)) == 0 || strstr(err, needle) == NULL) {
        fail_msg("%s: expected an error containing \"%s\", got \"%s\"", spec, needle, err);
    }
    assert_null(in.name); /* cleared on failure */
}

static void test_query_parameters(void **state)
{
    (void)state;
    proxy_opts g = defaults();
    proxy_instance in;
    parse_ok("p:r:i?address=::1&port=6000&auto-iam-authn&private-ip=FALSE&psc=f", &g, &in);
    assert_string_equal(in.name, "p:r:i");
    assert_string_equal(in.address, "::1");
    assert_int_equal(in.port, 6000);
    assert_int_equal(in.iam_authn, TRI_TRUE);
    assert_int_equal(in.private_ip, TRI_FALSE);
    assert_int_equal(in.psc, TRI_FALSE);
    proxy_instance_clear(&in);

    parse_ok("dom.com:p:r:i?unix-socket=%2Ftmp%2Fx+y", &g, &in);
    assert_string_equal(in.name, "dom.com:p:r:i");
    assert_string_equal(in.unix_socket, "/tmp/x y");
    assert_int_equal(in.port, -1);
    assert_int_equal(in.iam_authn, TRI_UNSET);
    proxy_instance_clear(&in);

    parse_ok("p:r:i?port=0&sql-data=false&&", &g, &in); /* port 0 is "not set", as in Go */
    assert_int_equal(in.port, -1);
    proxy_instance_clear(&in);
    parse_ok("p:r:i?", &g, &in);
    proxy_instance_clear(&in);
}

static void test_query_errors(void **state)
{
    (void)state;
    proxy_opts g = defaults();
    parse_bad("p:r:i?address=localhost", &g, "address=\"localhost\" is not an IPv4 or IPv6");
    parse_bad("p:r:i?port=x", &g, "port=\"x\" is not a port number");
    parse_bad("p:r:i?port=65536", &g, "port=\"65536\"");
    parse_bad("p:r:i?port=1&port=2", &g, "query parameter \"port\" is given twice");
    parse_bad("p:r:i?auto-iam-authn=yes", &g, "auto-iam-authn=\"yes\" is not true, t, false or f");
    parse_bad("p:r:i?private-ip=1", &g, "private-ip=\"1\"");
    parse_bad("p:r:i?bogus=1", &g, "unknown query parameter \"bogus\"");
    parse_bad("p:r:i?sql-data=true", &g, "SQL Data API is not supported");
    parse_bad("p:r:i?port=1;psc=true", &g, "';' is not a query separator");
    parse_bad("p:r:i?unix-socket=%zz", &g, "bad %-escape");
    parse_bad("p:r:i?unix-socket=", &g, "query parameter unix-socket is empty");
    parse_bad("p:r:i?address=127.0.0.1&unix-socket=/tmp", &g,
              "address cannot be combined with unix-socket or unix-socket-path");
    parse_bad("p:r:i?address=127.0.0.1&unix-socket-path=/tmp/s", &g,
              "address cannot be combined with unix-socket");
    parse_bad("p:r:i?port=5000&unix-socket=/tmp", &g, "port cannot be combined with unix-socket");
    parse_bad("p:r:i?port=5000&unix-socket-path=/tmp/s", &g, "port cannot be combined");
    parse_bad("p:r:i?unix-socket=/tmp&unix-socket-path=/tmp/s", &g,
              "unix-socket and unix-socket-path cannot be used together");
    parse_bad("p:r:i?private-ip=true&psc=true", &g, "private-ip and psc cannot both be true");
    g.auto_ip = true;
    parse_bad("p:r:i?private-ip", &g, "private-ip=true cannot be combined with --auto-ip");
    parse_bad("p:r?port=1", &g, "is not an instance connection name");
    parse_bad("p:r:i j", &g, "is not an instance connection name");
    parse_bad("p/x:r:i", &g, "is not an instance connection name");
    parse_bad(":r:i", &g, "is not an instance connection name");
}

static void test_ip_type_and_iam(void **state)
{
    (void)state;
    proxy_opts g = defaults();
    proxy_instance in;
    parse_ok("p:r:i", &g, &in);
    assert_int_equal(proxy_instance_ip_type(&g, &in), CSQL_IP_PUBLIC);
    assert_false(proxy_instance_iam(&g, &in));
    g.private_ip = true;
    assert_int_equal(proxy_instance_ip_type(&g, &in), CSQL_IP_PRIVATE);
    g.private_ip = false;
    g.psc = true;
    assert_int_equal(proxy_instance_ip_type(&g, &in), CSQL_IP_PSC);
    g.psc = false;
    g.auto_ip = true;
    assert_int_equal(proxy_instance_ip_type(&g, &in), CSQL_IP_AUTO);
    g.auto_iam_authn = true;
    assert_true(proxy_instance_iam(&g, &in));
    proxy_instance_clear(&in);

    g = defaults();
    g.private_ip = true;
    g.auto_iam_authn = true;
    parse_ok("p:r:i?private-ip=false&auto-iam-authn=false", &g, &in);
    assert_int_equal(proxy_instance_ip_type(&g, &in), CSQL_IP_PUBLIC);
    assert_false(proxy_instance_iam(&g, &in));
    proxy_instance_clear(&in);
    g = defaults();
    g.psc = true;
    parse_ok("p:r:i?private-ip=false", &g, &in); /* the global PSC still applies (Auth Proxy order) */
    assert_int_equal(proxy_instance_ip_type(&g, &in), CSQL_IP_PSC);
    proxy_instance_clear(&in);
    g = defaults();
    parse_ok("p:r:i?psc", &g, &in);
    assert_int_equal(proxy_instance_ip_type(&g, &in), CSQL_IP_PSC);
    proxy_instance_clear(&in);
}

typedef struct plan_case {
    const char *spec;
    const char *version;
    const char *shown;
} plan_case;

/* Plan instances in order with one port counter, as the proxy does. */
static void check_plans(const proxy_opts *g, const plan_case *cases, size_t n)
{
    proxy_ports ports;
    proxy_ports_init(&ports, g->port);
    for (size_t i = 0; i < n; i++) {
        proxy_instance in;
        parse_ok(cases[i].spec, g, &in);
        proxy_listen_plan p;
        if (proxy_instance_plan(g, &in, cases[i].version, &ports, &p, err, sizeof(err)) != 0) {
            fail_msg("%s: %s", cases[i].spec, err);
        }
        if (strcmp(p.shown, cases[i].shown) != 0) {
            fail_msg("%s (%s): listens on \"%s\", expected \"%s\"", cases[i].spec,
                     cases[i].version ? cases[i].version : "-", p.shown, cases[i].shown);
        }
        proxy_instance_clear(&in);
    }
}

static void test_default_ports_per_engine(void **state)
{
    (void)state;
    proxy_opts g = defaults();
    const plan_case cases[] = {
        {"p:r:pg1", "POSTGRES_15", "127.0.0.1:5432"},
        {"p:r:my1", "MYSQL_8_0", "127.0.0.1:3306"},
        {"p:r:pg2", "POSTGRES_14", "127.0.0.1:5433"},
        {"p:r:ms1", "SQLSERVER_2019_STANDARD", "127.0.0.1:1433"},
        {"p:r:my2", "MYSQL_5_7", "127.0.0.1:3307"},
        {"p:r:own?port=7777", "POSTGRES_15", "127.0.0.1:7777"}, /* does not use up a port */
        {"p:r:pg3", "POSTGRES_15", "127.0.0.1:5434"},
        {"p:r:odd", "SOMETHING_NEW", "127.0.0.1:5435"}, /* unknown engines count as PostgreSQL */
        {"p:r:v6?address=::1", "MYSQL_8_0", "[::1]:3308"},
    };
    check_plans(&g, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_global_port_sequence(void **state)
{
    (void)state;
    proxy_opts g = defaults();
    g.port = 6000;
    g.address = any_ipv4;
    const plan_case cases[] = {
        {"p:r:a", NULL, "0.0.0.0:6000"},
        {"p:r:b?port=5000", NULL, "0.0.0.0:5000"},
        {"p:r:c", NULL, "0.0.0.0:6001"},
        {"p:r:d?address=127.0.0.2", NULL, "127.0.0.2:6002"},
    };
    check_plans(&g, cases, sizeof(cases) / sizeof(cases[0]));

    proxy_instance in;
    parse_ok("p:r:a", &g, &in);
    assert_false(proxy_instance_needs_version(&g, &in));
    proxy_ports ports;
    proxy_ports_init(&ports, 65535);
    proxy_listen_plan p;
    assert_int_equal(proxy_instance_plan(&g, &in, NULL, &ports, &p, err, sizeof(err)), 0);
    assert_int_equal(p.port, 65535);
    assert_int_equal(proxy_instance_plan(&g, &in, NULL, &ports, &p, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "its port would be 65536, above 65535"));
    proxy_instance_clear(&in);
}

static void test_unix_socket_naming(void **state)
{
    (void)state;
    proxy_opts g = defaults();
    g.unix_socket = cloudsql_dir;
    const plan_case cases[] = {
        {"p:r:pg", "POSTGRES_15", "/cloudsql/p:r:pg/.s.PGSQL.5432"},
        {"p:r:my", "MYSQL_8_0", "/cloudsql/p:r:my"},
        {"p:r:ms", "SQLSERVER_2019_STANDARD", "/cloudsql/p:r:ms"},
        {"dom.com:p:r:pg", "POSTGRES_15", "/cloudsql/dom.com:p:r:pg/.s.PGSQL.5432"},
        {"p:r:pg?unix-socket=/other", "POSTGRES_15", "/other/p:r:pg/.s.PGSQL.5432"},
        {"p:r:pg?unix-socket-path=/run/pg", "POSTGRES_15", "/run/pg/.s.PGSQL.5432"},
        {"p:r:pg?unix-socket-path=/run/pg/.s.PGSQL.5432", "POSTGRES_15", "/run/pg/.s.PGSQL.5432"},
        {"p:r:my?unix-socket-path=/run/mysqld/mysqld.sock", "MYSQL_8_0", "/run/mysqld/mysqld.sock"},
        /* an instance-level address or port means TCP despite --unix-socket; its port is the engine's */
        {"p:r:tcp?port=6543", "POSTGRES_15", "127.0.0.1:6543"},
        {"p:r:tcp2?address=127.0.0.3", "POSTGRES_15", "127.0.0.3:5432"},
    };
    check_plans(&g, cases, sizeof(cases) / sizeof(cases[0]));

    proxy_instance in;
    parse_ok("p:r:pg", &g, &in);
    assert_true(proxy_instance_needs_version(&g, &in));
    assert_false(proxy_instance_is_tcp(&g, &in));
    proxy_listen_plan p;
    proxy_ports ports;
    proxy_ports_init(&ports, 0);
    assert_int_equal(proxy_instance_plan(&g, &in, "POSTGRES_15", &ports, &p, err, sizeof(err)), 0);
    assert_string_equal(p.dir, "/cloudsql/p:r:pg");
    assert_string_equal(p.name, ".s.PGSQL.5432");
    assert_true(p.make_dir);
    assert_int_equal(proxy_instance_plan(&g, &in, "MYSQL_8_0", &ports, &p, err, sizeof(err)), 0);
    assert_string_equal(p.dir, "/cloudsql");
    assert_string_equal(p.name, "p:r:pg");
    assert_false(p.make_dir);
    proxy_instance_clear(&in);

    char longdir[120];
    memset(longdir, 'd', sizeof(longdir));
    longdir[0] = '/';
    longdir[100] = '\0';
    g.unix_socket = longdir;
    parse_ok("p:r:pg", &g, &in);
    assert_int_equal(proxy_instance_plan(&g, &in, "POSTGRES_15", &ports, &p, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "is longer than 107 bytes"));
    proxy_instance_clear(&in);
}

static void test_db_of(void **state)
{
    (void)state;
    assert_int_equal(proxy_db_of("POSTGRES_9_6"), DB_POSTGRES);
    assert_int_equal(proxy_db_of("MYSQL_8_4"), DB_MYSQL);
    assert_int_equal(proxy_db_of("SQLSERVER_2022_WEB"), DB_SQLSERVER);
    assert_int_equal(proxy_db_of(NULL), DB_POSTGRES);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_parameters),
        cmocka_unit_test(test_query_errors),
        cmocka_unit_test(test_ip_type_and_iam),
        cmocka_unit_test(test_default_ports_per_engine),
        cmocka_unit_test(test_global_port_sequence),
        cmocka_unit_test(test_unix_socket_naming),
        cmocka_unit_test(test_db_of),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
