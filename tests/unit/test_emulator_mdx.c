/* csql-emulator metadata exchange (MDX) frames: recognition, parsing, responses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "data_plane.h"

/* "CSQLMDEX" + be32(len) + body. */
static size_t frame(uint8_t *out, const uint8_t *body, size_t len)
{
    memcpy(out, "CSQLMDEX", 8);
    out[8] = (uint8_t)(len >> 24);
    out[9] = (uint8_t)(len >> 16);
    out[10] = (uint8_t)(len >> 8);
    out[11] = (uint8_t)len;
    if (len > 0) {
        memcpy(out + 12, body, len);
    }
    return 12 + len;
}

static void test_request_ok(void **state)
{
    (void)state;
    /* {1: "csql/1.0", 2: UDS(3)} */
    const uint8_t body[] = {0x0a, 8, 'c', 's', 'q', 'l', '/', '1', '.', '0', 0x10, 3};
    uint8_t buf[64];
    size_t n = frame(buf, body, sizeof(body)), flen = 0;
    memcpy(buf + n, "\0\0\0\x08", 4); /* database bytes pipelined behind the frame */
    emu_mdx_request req;
    char err[160];
    assert_int_equal(emu_mdx_parse(buf, n + 4, &req, &flen, err, sizeof(err)), EMU_PARSE_OK);
    assert_int_equal(flen, n);
    assert_string_equal(req.user_agent, "csql/1.0");
    assert_int_equal(req.protocol_type, 3);
}

static void test_request_empty_and_unknown_fields(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t flen = 0;
    emu_mdx_request req;
    char err[160];
    size_t n = frame(buf, NULL, 0);
    assert_int_equal(emu_mdx_parse(buf, n, &req, &flen, err, sizeof(err)), EMU_PARSE_OK);
    assert_int_equal(flen, 12);
    assert_int_equal(req.protocol_type, 0);
    /* Unknown fields of every wire type are skipped (forward compatibility). */
    const uint8_t body[] = {0x18, 0x96, 0x01,                   /* 3: varint 150 */
                            0x21, 1, 2, 3, 4, 5, 6, 7, 8,       /* 4: fixed64 */
                            0x2a, 2, 'h', 'i',                  /* 5: bytes */
                            0x35, 1, 2, 3, 4,                   /* 6: fixed32 */
                            0x10, 1};                           /* 2: TCP */
    n = frame(buf, body, sizeof(body));
    assert_int_equal(emu_mdx_parse(buf, n, &req, &flen, err, sizeof(err)), EMU_PARSE_OK);
    assert_int_equal(req.protocol_type, 1);
}

static void test_not_mdx(void **state)
{
    (void)state;
    emu_mdx_request req;
    size_t flen;
    char err[160];
    /* A PostgreSQL startup packet: decided on the first byte. */
    const uint8_t pg[] = {0, 0, 0, 0x50, 0, 3, 0, 0};
    assert_int_equal(emu_mdx_parse(pg, 1, &req, &flen, err, sizeof(err)), EMU_PARSE_NOT);
    assert_int_equal(emu_mdx_parse(pg, sizeof(pg), &req, &flen, err, sizeof(err)),
                     EMU_PARSE_NOT);
    /* Diverging after a common prefix. */
    assert_int_equal(emu_mdx_parse((const uint8_t *)"CSQX", 4, &req, &flen, err, sizeof(err)),
                     EMU_PARSE_NOT);
    assert_int_equal(emu_mdx_parse((const uint8_t *)"CSQLMDEY", 8, &req, &flen, err,
                                   sizeof(err)),
                     EMU_PARSE_NOT);
}

static void test_prefixes_need_more(void **state)
{
    (void)state;
    const uint8_t body[] = {0x0a, 2, 'u', 'a', 0x10, 2};
    uint8_t buf[64];
    size_t n = frame(buf, body, sizeof(body)), flen;
    emu_mdx_request req;
    char err[160];
    assert_int_equal(emu_mdx_parse(buf, 0, &req, &flen, err, sizeof(err)), EMU_PARSE_MORE);
    for (size_t i = 1; i < n; i++) {
        assert_int_equal(emu_mdx_parse(buf, i, &req, &flen, err, sizeof(err)), EMU_PARSE_MORE);
    }
    assert_int_equal(emu_mdx_parse(buf, n, &req, &flen, err, sizeof(err)), EMU_PARSE_OK);
}

static void expect_bad(const uint8_t *body, size_t len, const char *fragment)
{
    uint8_t buf[128];
    size_t n = frame(buf, body, len), flen = 0;
    emu_mdx_request req;
    char err[160] = "";
    assert_int_equal(emu_mdx_parse(buf, n, &req, &flen, err, sizeof(err)), EMU_PARSE_BAD);
    assert_non_null(strstr(err, fragment));
}

static void test_malformed(void **state)
{
    (void)state;
    expect_bad((const uint8_t[]){0x0a, 5, 'a'}, 3, "truncated length-delimited");
    expect_bad((const uint8_t[]){0x10}, 1, "truncated varint");
    expect_bad((const uint8_t[]){0x10, 0x80}, 2, "truncated varint");
    expect_bad((const uint8_t[]){0x80}, 1, "truncated field key");
    expect_bad((const uint8_t[]){0x08, 1}, 2, "wrong wire type");  /* field 1 as varint */
    expect_bad((const uint8_t[]){0x12, 1, 'x'}, 3, "wrong wire type"); /* field 2 as bytes */
    expect_bad((const uint8_t[]){0x02, 0}, 2, "field number 0");
    expect_bad((const uint8_t[]){0x1b}, 1, "unsupported wire type"); /* group start */
    expect_bad((const uint8_t[]){0x25, 1, 2}, 3, "truncated fixed-width");
    expect_bad((const uint8_t[]){0x0a, 3, 'a', 0, 'b'}, 5, "NUL");
    expect_bad((const uint8_t[]){0x10, 0xff, 0xff, 0xff, 0xff, 0x0f}, 6, "out of range");
    /* An 11-byte varint. */
    expect_bad((const uint8_t[]){0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                 0xff, 0x01},
               12, "truncated varint");
}

static void test_oversized(void **state)
{
    (void)state;
    uint8_t hdr[12] = {'C', 'S', 'Q', 'L', 'M', 'D', 'E', 'X', 0, 0, 0x10, 0x01}; /* 4097 */
    emu_mdx_request req;
    size_t flen;
    char err[160] = "";
    /* Refused from the header alone: no waiting for 4 KiB that will never be accepted. */
    assert_int_equal(emu_mdx_parse(hdr, sizeof(hdr), &req, &flen, err, sizeof(err)),
                     EMU_PARSE_BAD);
    assert_non_null(strstr(err, "exceeds"));
    hdr[8] = 0xff;
    assert_int_equal(emu_mdx_parse(hdr, sizeof(hdr), &req, &flen, err, sizeof(err)),
                     EMU_PARSE_BAD);
    /* Exactly the limit is fine once complete. */
    static uint8_t big[12 + EMU_MDX_MAX_BODY];
    uint8_t body[EMU_MDX_MAX_BODY];
    body[0] = 0x0a;
    body[1] = 0xfd; /* varint 4093 = 0xfd 0x1f */
    body[2] = 0x1f;
    memset(body + 3, 'a', sizeof(body) - 3);
    size_t n = frame(big, body, sizeof(body));
    assert_int_equal(emu_mdx_parse(big, n, &req, &flen, err, sizeof(err)), EMU_PARSE_OK);
    assert_int_equal(strlen(req.user_agent), sizeof(req.user_agent) - 1); /* truncated copy */
}

static void test_responses(void **state)
{
    (void)state;
    uint8_t out[256];
    size_t n = emu_mdx_encode_response(EMU_MDX_STATUS_OK, NULL, out, sizeof(out));
    const uint8_t ok[] = {'C', 'S', 'Q', 'L', 'M', 'D', 'E', 'X', 0, 0, 0, 2, 0x08, 0x01};
    assert_int_equal(n, sizeof(ok));
    assert_memory_equal(out, ok, sizeof(ok));
    /* OK ignores any message. */
    assert_int_equal(emu_mdx_encode_response(EMU_MDX_STATUS_OK, "x", out, sizeof(out)), 14);

    n = emu_mdx_encode_response(EMU_MDX_STATUS_ERROR, "bad frame", out, sizeof(out));
    const uint8_t bad[] = {'C', 'S', 'Q', 'L', 'M', 'D', 'E', 'X', 0, 0, 0, 13, 0x08, 0x02,
                           0x12, 9, 'b', 'a', 'd', ' ', 'f', 'r', 'a', 'm', 'e'};
    assert_int_equal(n, sizeof(bad));
    assert_memory_equal(out, bad, sizeof(bad));
    assert_int_equal(emu_mdx_encode_response(EMU_MDX_STATUS_OK, NULL, out, 13), 0);
    /* Long messages are cut to keep a one-byte length. */
    char longmsg[300];
    memset(longmsg, 'm', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = '\0';
    n = emu_mdx_encode_response(EMU_MDX_STATUS_ERROR, longmsg, out, sizeof(out));
    assert_int_equal(n, 12 + 4 + 127);
    assert_int_equal(out[15], 127);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_ok),
        cmocka_unit_test(test_request_empty_and_unknown_fields),
        cmocka_unit_test(test_not_mdx),
        cmocka_unit_test(test_prefixes_need_more),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_responses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
