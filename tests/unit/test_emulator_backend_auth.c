/*
 * csql-emulator automatic IAM authn check: database user names, the decision,
 * and the parsers/encoders for the PostgreSQL startup packet and the MySQL
 * handshake (good, truncated, malformed and oversized input).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data_plane.h"

/* ---------------- user names and the decision ---------------- */

static void test_db_user_postgres(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(emu_iam_db_user("POSTGRES_15", "sa@p.iam.gserviceaccount.com", out,
                                     sizeof(out)),
                     0);
    assert_string_equal(out, "sa@p.iam");
    assert_int_equal(emu_iam_db_user("POSTGRES_16", "alice@example.com", out, sizeof(out)), 0);
    assert_string_equal(out, "alice@example.com");
    /* The suffix only counts at the end. */
    assert_int_equal(emu_iam_db_user("POSTGRES_15", "a.gserviceaccount.com@x.org", out,
                                     sizeof(out)),
                     0);
    assert_string_equal(out, "a.gserviceaccount.com@x.org");
}

static void test_db_user_mysql(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(emu_iam_db_user("MYSQL_8_0", "sa@p.iam.gserviceaccount.com", out,
                                     sizeof(out)),
                     0);
    assert_string_equal(out, "sa");
    assert_int_equal(emu_iam_db_user("MYSQL_8_4", "alice@example.com", out, sizeof(out)), 0);
    assert_string_equal(out, "alice");
}

static void test_db_user_errors(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(emu_iam_db_user("SQLSERVER_2019_STANDARD", "a@b.c", out, sizeof(out)), -1);
    assert_int_equal(emu_iam_db_user("POSTGRES_15", "", out, sizeof(out)), -1);
    assert_int_equal(emu_iam_db_user("MYSQL_8_0", "@example.com", out, sizeof(out)), -1);
    assert_int_equal(emu_iam_db_user("POSTGRES_15", "toolong@example.com", out, sizeof(out)), -1);
    assert_int_equal(emu_iam_db_user(NULL, "a@b", out, sizeof(out)), -1);
    assert_int_equal(emu_iam_db_user("POSTGRES_15", NULL, out, sizeof(out)), -1);
}

static void test_check_user(void **state)
{
    (void)state;
    char msg[400];
    const char *sa = "sa@p.iam.gserviceaccount.com";
    time_t now = 1000000;
    assert_int_equal(emu_iam_check_user("POSTGRES_15", sa, now + 60, "sa@p.iam", now, msg,
                                        sizeof(msg)),
                     0);
    assert_int_equal(emu_iam_check_user("MYSQL_8_0", sa, now + 60, "sa", now, msg, sizeof(msg)),
                     0);

    assert_int_equal(emu_iam_check_user("POSTGRES_15", sa, now + 60, "postgres", now, msg,
                                        sizeof(msg)),
                     -1);
    assert_non_null(strstr(msg, "Cloud SQL IAM user authentication failed for user \"postgres\""));
    /* Expired token, even for the right user. */
    assert_int_equal(emu_iam_check_user("POSTGRES_15", sa, now, "sa@p.iam", now, msg,
                                        sizeof(msg)),
                     -1);
    assert_non_null(strstr(msg, "expired"));
    assert_int_equal(emu_iam_check_user("SQLSERVER_2019_STANDARD", sa, now + 60, "sa", now, msg,
                                        sizeof(msg)),
                     -1);
    assert_non_null(strstr(msg, "not supported"));
    /* The MySQL rule is not the PostgreSQL one. */
    assert_int_equal(emu_iam_check_user("MYSQL_8_0", sa, now + 60, "sa@p.iam", now, msg,
                                        sizeof(msg)),
                     -1);
}

/* ---------------- PostgreSQL startup packet ---------------- */

static size_t put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return 4;
}

/* A StartupMessage with NUL-separated "k\0v\0..." params (params_len bytes, list terminator added). */
static size_t startup(uint8_t *out, uint32_t code, const char *params, size_t params_len)
{
    size_t n = 8 + params_len + 1;
    put_be32(out, (uint32_t)n);
    put_be32(out + 4, code);
    memcpy(out + 8, params, params_len);
    out[8 + params_len] = '\0';
    return n;
}

#define PARAMS(s) s, sizeof(s) - 1

static void test_pg_startup_good(void **state)
{
    (void)state;
    uint8_t buf[256];
    char err[160];
    emu_pg_startup st;
    size_t n = startup(buf, EMU_PG_PROTOCOL_3,
                       PARAMS("database\0appdb\0user\0sa@p.iam\0application_name\0psql\0"));
    assert_int_equal(emu_pg_startup_parse(buf, n, &st, err, sizeof(err)), EMU_PARSE_OK);
    assert_int_equal(st.kind, EMU_PG_STARTUP);
    assert_int_equal(st.length, n);
    assert_string_equal(st.user, "sa@p.iam");
    /* Protocol 3.2 (PostgreSQL 18) is still major 3. */
    n = startup(buf, EMU_PG_PROTOCOL_3 | 2, PARAMS("user\0bob\0"));
    assert_int_equal(emu_pg_startup_parse(buf, n, &st, err, sizeof(err)), EMU_PARSE_OK);
    assert_string_equal(st.user, "bob");
    /* No user at all: parsed, empty user (the check then refuses it). */
    n = startup(buf, EMU_PG_PROTOCOL_3, PARAMS("database\0x\0"));
    assert_int_equal(emu_pg_startup_parse(buf, n, &st, err, sizeof(err)), EMU_PARSE_OK);
    assert_string_equal(st.user, "");
    /* Trailing bytes after the packet (pipelined) are not part of it. */
    n = startup(buf, EMU_PG_PROTOCOL_3, PARAMS("user\0u\0"));
    memcpy(buf + n, "Qxyz", 4);
    assert_int_equal(emu_pg_startup_parse(buf, n + 4, &st, err, sizeof(err)), EMU_PARSE_OK);
    assert_int_equal(st.length, n);
}

static void test_pg_startup_truncated(void **state)
{
    (void)state;
    uint8_t buf[256];
    char err[160];
    emu_pg_startup st;
    size_t n = startup(buf, EMU_PG_PROTOCOL_3, PARAMS("user\0sa@p.iam\0database\0d\0"));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(emu_pg_startup_parse(buf, i, &st, err, sizeof(err)), EMU_PARSE_MORE);
    }
}

static void test_pg_special_requests(void **state)
{
    (void)state;
    uint8_t buf[32] = {0};
    char err[160];
    emu_pg_startup st;
    put_be32(buf, 16);
    put_be32(buf + 4, EMU_PG_CANCEL_CODE);
    assert_int_equal(emu_pg_startup_parse(buf, 12, &st, err, sizeof(err)), EMU_PARSE_MORE);
    assert_int_equal(emu_pg_startup_parse(buf, 16, &st, err, sizeof(err)), EMU_PARSE_OK);
    assert_int_equal(st.kind, EMU_PG_CANCEL);
    assert_int_equal(st.length, 16);
    put_be32(buf, 8);
    put_be32(buf + 4, EMU_PG_SSL_CODE);
    assert_int_equal(emu_pg_startup_parse(buf, 8, &st, err, sizeof(err)), EMU_PARSE_OK);
    assert_int_equal(st.kind, EMU_PG_SSLREQ);
    put_be32(buf + 4, EMU_PG_GSSENC_CODE);
    assert_int_equal(emu_pg_startup_parse(buf, 8, &st, err, sizeof(err)), EMU_PARSE_OK);
    assert_int_equal(st.kind, EMU_PG_GSSENCREQ);
    /* A cancel request with the wrong length is malformed. */
    put_be32(buf, 12);
    put_be32(buf + 4, EMU_PG_CANCEL_CODE);
    assert_int_equal(emu_pg_startup_parse(buf, 12, &st, err, sizeof(err)), EMU_PARSE_BAD);
}

static void expect_pg_bad(const uint8_t *buf, size_t n, const char *fragment)
{
    char err[160] = "";
    emu_pg_startup st;
    assert_int_equal(emu_pg_startup_parse(buf, n, &st, err, sizeof(err)), EMU_PARSE_BAD);
    assert_non_null(strstr(err, fragment));
}

static void test_pg_startup_bad(void **state)
{
    (void)state;
    uint8_t buf[512];
    /* Oversized: rejected from the length word alone, without waiting for the bytes. */
    put_be32(buf, EMU_PG_STARTUP_MAX + 1);
    expect_pg_bad(buf, 4, "length");
    put_be32(buf, 0xffffffffu);
    expect_pg_bad(buf, 4, "length");
    put_be32(buf, 7);
    expect_pg_bad(buf, 4, "length");
    /* Protocol 2.0. */
    put_be32(buf, 100);
    put_be32(buf + 4, 2u << 16);
    expect_pg_bad(buf, 8, "unsupported frontend protocol 2.0");
    /* Missing list terminator: "user\0x\0" fills the packet exactly. */
    size_t n = startup(buf, EMU_PG_PROTOCOL_3, PARAMS("user\0x\0"));
    put_be32(buf, (uint32_t)(n - 1));
    expect_pg_bad(buf, n - 1, "terminator");
    /* Unterminated value. */
    put_be32(buf, 8 + 6);
    put_be32(buf + 4, EMU_PG_PROTOCOL_3);
    memcpy(buf + 8, "user\0x", 6);
    expect_pg_bad(buf, 14, "unterminated parameter value");
    /* Unterminated name. */
    put_be32(buf, 8 + 4);
    memcpy(buf + 8, "user", 4);
    expect_pg_bad(buf, 12, "unterminated parameter name");
    /* Bytes after the terminator inside the packet. */
    n = startup(buf, EMU_PG_PROTOCOL_3, PARAMS("user\0x\0"));
    buf[n] = 'z';
    put_be32(buf, (uint32_t)(n + 1));
    expect_pg_bad(buf, n + 1, "after the parameter list");
    /* A user name longer than we keep. */
    char params[400];
    memcpy(params, "user\0", 5);
    memset(params + 5, 'u', 300);
    params[305] = '\0';
    n = startup(buf, EMU_PG_PROTOCOL_3, params, 306);
    expect_pg_bad(buf, n, "too long");
}

static void test_pg_error_response(void **state)
{
    (void)state;
    uint8_t out[256];
    size_t n = emu_pg_error_response("28000", "no", out, sizeof(out));
    const uint8_t want[] = "E\0\0\0\x1e"
                           "SFATAL\0VFATAL\0C28000\0Mno\0";
    /* 'E' + len(4) + fields + final NUL; the length counts itself, not the type byte. */
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, want, sizeof(want) - 1);
    assert_int_equal(out[n - 1], 0);
    assert_int_equal(((uint32_t)out[1] << 24 | out[2] << 16 | out[3] << 8 | out[4]), n - 1);
    assert_int_equal(emu_pg_error_response("28000", "no", out, 20), 0);
    assert_int_equal(emu_pg_error_response("28000", "no", out, 3), 0);
}

/* ---------------- MySQL ---------------- */

static void test_mysql_packet(void **state)
{
    (void)state;
    uint8_t p[8] = {3, 0, 0, 7, 'a', 'b', 'c', 'd'};
    size_t len = 0;
    uint8_t seq = 0;
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(emu_mysql_packet(p, i, 100, &len, &seq), EMU_PARSE_MORE);
    }
    assert_int_equal(emu_mysql_packet(p, 8, 100, &len, &seq), EMU_PARSE_OK);
    assert_int_equal(len, 3);
    assert_int_equal(seq, 7);
    uint8_t big[4] = {0xff, 0xff, 0xff, 1};
    assert_int_equal(emu_mysql_packet(big, 4, EMU_MYSQL_PACKET_MAX, &len, &seq), EMU_PARSE_BAD);
}

/* A protocol-10 greeting payload with CLIENT_SSL set; returns its length. */
static size_t greeting(uint8_t *p)
{
    size_t n = 0;
    p[n++] = 10;
    memcpy(p + n, "10.11.6-MariaDB", 16);
    n += 16;
    memcpy(p + n, "\x01\x00\x00\x00", 4); /* connection id */
    n += 4;
    memcpy(p + n, "12345678", 8); /* scramble part 1 */
    n += 8;
    p[n++] = 0;    /* filler */
    p[n++] = 0xfe; /* capability flags, low byte */
    p[n++] = 0xff; /* high byte: CLIENT_SSL (0x0800) set */
    p[n++] = 8;    /* charset */
    memset(p + n, 0, 20);
    return n + 20;
}

static void test_mysql_greeting(void **state)
{
    (void)state;
    uint8_t p[128];
    size_t n = greeting(p);
    assert_int_equal(emu_mysql_greeting_clear_ssl(p, n), EMU_PARSE_OK);
    uint16_t caps = (uint16_t)(p[30] | p[31] << 8);
    assert_int_equal(caps & EMU_MYSQL_CLIENT_SSL, 0);
    assert_int_equal(caps, 0xf7fe); /* nothing else touched */
    uint8_t err_pkt[] = {0xff, 0x10, 0x04, 'T', 'o', 'o'};
    assert_int_equal(emu_mysql_greeting_clear_ssl(err_pkt, sizeof(err_pkt)), EMU_PARSE_NOT);
    p[0] = 9;
    assert_int_equal(emu_mysql_greeting_clear_ssl(p, n), EMU_PARSE_BAD);
    p[0] = 10;
    /* Truncated before the capability flags; unterminated version. */
    assert_int_equal(emu_mysql_greeting_clear_ssl(p, 31), EMU_PARSE_BAD);
    assert_int_equal(emu_mysql_greeting_clear_ssl(p, 10), EMU_PARSE_BAD);
    assert_int_equal(emu_mysql_greeting_clear_ssl(p, 0), EMU_PARSE_BAD);
}

/* HandshakeResponse41 payload for user; returns its length. */
static size_t response41(uint8_t *p, uint32_t caps, const char *user)
{
    memset(p, 0, 32);
    p[0] = (uint8_t)caps;
    p[1] = (uint8_t)(caps >> 8);
    p[2] = (uint8_t)(caps >> 16);
    p[3] = (uint8_t)(caps >> 24);
    p[8] = 33;
    size_t ul = strlen(user) + 1;
    memcpy(p + 32, user, ul);
    memcpy(p + 32 + ul, "\0mysql_native_password\0", 23);
    return 32 + ul + 23;
}

static void test_mysql_response(void **state)
{
    (void)state;
    uint8_t p[512];
    char err[160];
    emu_mysql_response r;
    size_t n = response41(p, 0x000aa20f, "sa");
    assert_int_equal(emu_mysql_response_parse(p, n, &r, err, sizeof(err)), EMU_PARSE_OK);
    assert_string_equal(r.user, "sa");
    assert_false(r.ssl_request);
    assert_int_equal(r.caps, 0x000aa20f);
    /* SSLRequest: the 32-byte prefix alone with CLIENT_SSL. */
    response41(p, 0x000aa20f | EMU_MYSQL_CLIENT_SSL, "x");
    assert_int_equal(emu_mysql_response_parse(p, 32, &r, err, sizeof(err)), EMU_PARSE_OK);
    assert_true(r.ssl_request);
    /* HandshakeResponse320: caps(2) max packet(3) user. */
    uint8_t old[] = {0x05, 0x00, 0xff, 0xff, 0xff, 'b', 'o', 'b', 0, 'x'};
    assert_int_equal(emu_mysql_response_parse(old, sizeof(old), &r, err, sizeof(err)),
                     EMU_PARSE_OK);
    assert_string_equal(r.user, "bob");
}

static void test_mysql_response_bad(void **state)
{
    (void)state;
    uint8_t p[512];
    char err[160];
    emu_mysql_response r;
    size_t n = response41(p, 0x000aa20f, "sa");
    /* Every truncation of the fixed part or the user name is refused. */
    for (size_t i = 0; i < 35; i++) {
        assert_int_equal(emu_mysql_response_parse(p, i, &r, err, sizeof(err)), EMU_PARSE_BAD);
    }
    assert_int_equal(emu_mysql_response_parse(p, n, &r, err, sizeof(err)), EMU_PARSE_OK);
    /* A 32-byte packet without CLIENT_SSL is a truncated response, not an SSLRequest. */
    assert_int_equal(emu_mysql_response_parse(p, 32, &r, err, sizeof(err)), EMU_PARSE_BAD);
    char user[300];
    memset(user, 'u', sizeof(user) - 1);
    user[sizeof(user) - 1] = '\0';
    n = response41(p, 0x000aa20f, user);
    assert_int_equal(emu_mysql_response_parse(p, n, &r, err, sizeof(err)), EMU_PARSE_BAD);
    assert_non_null(strstr(err, "too long"));
}

static void test_mysql_err_packet(void **state)
{
    (void)state;
    uint8_t out[128];
    size_t n = emu_mysql_err_packet(2, 1045, "28000", "Access denied", out, sizeof(out));
    const uint8_t want[] = "\x16\x00\x00\x02\xff\x15\x04#28000Access denied";
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(out, want, n);
    assert_int_equal(emu_mysql_err_packet(2, 1045, "28000", "Access denied", out, 10), 0);
    assert_int_equal(emu_mysql_err_packet(2, 1045, "280", "x", out, sizeof(out)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_db_user_postgres),
        cmocka_unit_test(test_db_user_mysql),
        cmocka_unit_test(test_db_user_errors),
        cmocka_unit_test(test_check_user),
        cmocka_unit_test(test_pg_startup_good),
        cmocka_unit_test(test_pg_startup_truncated),
        cmocka_unit_test(test_pg_special_requests),
        cmocka_unit_test(test_pg_startup_bad),
        cmocka_unit_test(test_pg_error_response),
        cmocka_unit_test(test_mysql_packet),
        cmocka_unit_test(test_mysql_greeting),
        cmocka_unit_test(test_mysql_response),
        cmocka_unit_test(test_mysql_response_bad),
        cmocka_unit_test(test_mysql_err_packet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
