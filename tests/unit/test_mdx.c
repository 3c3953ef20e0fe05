/* Metadata exchange frames (REFERENCE §7): encoder, decoder, and hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "mdx.h"

static void put_len(unsigned char *f, size_t body)
{
    f[8] = (unsigned char)(body >> 24);
    f[9] = (unsigned char)(body >> 16);
    f[10] = (unsigned char)(body >> 8);
    f[11] = (unsigned char)body;
}

/* A response frame with the given protobuf body. */
static size_t frame(unsigned char *out, const unsigned char *body, size_t n)
{
    memcpy(out, "CSQLMDEX", 8);
    put_len(out, n);
    memcpy(out + 12, body, n);
    return 12 + n;
}

static void test_request_bytes(void **state)
{
    (void)state;
    unsigned char buf[64];
    int n = csql__mdx_encode_request("ua/1", CSQL__MDX_PROTO_TLS, buf, sizeof(buf));
    const unsigned char want[] = {'C', 'S', 'Q', 'L', 'M', 'D', 'E', 'X', 0, 0, 0, 8,
                                  0x0a, 4, 'u', 'a', '/', '1', 0x10, 0x02};
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
}

static void test_request_without_user_agent(void **state)
{
    (void)state;
    unsigned char buf[64];
    int n = csql__mdx_encode_request(NULL, CSQL__MDX_PROTO_TCP, buf, sizeof(buf));
    const unsigned char want[] = {'C', 'S', 'Q', 'L', 'M', 'D', 'E', 'X', 0, 0, 0, 2, 0x10, 0x01};
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
}

static void test_request_long_user_agent_uses_multibyte_varint(void **state)
{
    (void)state;
    char ua[300];
    memset(ua, 'a', sizeof(ua) - 1);
    ua[sizeof(ua) - 1] = '\0';
    unsigned char buf[512];
    int n = csql__mdx_encode_request(ua, CSQL__MDX_PROTO_UDS, buf, sizeof(buf));
    assert_int_equal(n, 12 + 1 + 2 + 299 + 2);
    assert_int_equal(buf[12], 0x0a);
    assert_int_equal(buf[13], (299 & 0x7f) | 0x80);
    assert_int_equal(buf[14], 299 >> 7);
    assert_int_equal(buf[n - 1], 3);
}

static void test_request_does_not_fit(void **state)
{
    (void)state;
    unsigned char buf[64];
    for (size_t len = 0; len < 20; len++) {
        assert_int_equal(csql__mdx_encode_request("ua/1", 2, buf, len), -1);
    }
    assert_int_equal(csql__mdx_encode_request("ua/1", 2, buf, 20), 20);
    assert_int_equal(csql__mdx_encode_request("ua", -1, buf, sizeof(buf)), -1);
    static char huge[CSQL__MDX_MAX_BODY + 10];
    static unsigned char big[CSQL__MDX_MAX_BODY * 2];
    memset(huge, 'x', sizeof(huge) - 1);
    assert_int_equal(csql__mdx_encode_request(huge, 2, big, sizeof(big)), -1);
}

static void test_ok_response_from_reference(void **state)
{
    (void)state;
    const unsigned char ok[] = {'C', 'S', 'Q', 'L', 'M', 'D', 'E', 'X', 0, 0, 0, 2, 0x08, 0x01};
    int status = -1;
    char msg[32] = "junk";
    assert_int_equal(csql__mdx_decode_response(ok, sizeof(ok), &status, msg, sizeof(msg)),
                     sizeof(ok));
    assert_int_equal(status, CSQL__MDX_OK);
    assert_string_equal(msg, "");
}

static void test_error_response_with_message(void **state)
{
    (void)state;
    const unsigned char body[] = {0x08, 0x02, 0x12, 6, 'd', 'e', 'n', 'i', 'e', 'd'};
    unsigned char f[64];
    size_t n = frame(f, body, sizeof(body));
    f[n] = 'X'; /* database bytes after the frame are not consumed */
    int status = 0;
    char msg[32];
    assert_int_equal(csql__mdx_decode_response(f, n + 1, &status, msg, sizeof(msg)), (int)n);
    assert_int_equal(status, CSQL__MDX_ERROR);
    assert_string_equal(msg, "denied");
    /* The message is truncated to the caller's buffer, always terminated. */
    char small[4];
    assert_int_equal(csql__mdx_decode_response(f, n, &status, small, sizeof(small)), (int)n);
    assert_string_equal(small, "den");
    assert_int_equal(csql__mdx_decode_response(f, n, &status, NULL, 0), (int)n);
}

static void test_unknown_fields_skipped(void **state)
{
    (void)state;
    const unsigned char body[] = {
        0x18, 0x96, 0x01,                         /* field 3 varint */
        0x21, 1, 2, 3, 4, 5, 6, 7, 8,             /* field 4 fixed64 */
        0x2d, 1, 2, 3, 4,                         /* field 5 fixed32 */
        0x32, 3, 'a', 'b', 'c',                   /* field 6 bytes */
        0x08, 0x01,                               /* status OK */
    };
    unsigned char f[64];
    size_t n = frame(f, body, sizeof(body));
    int status = 0;
    char msg[8];
    assert_int_equal(csql__mdx_decode_response(f, n, &status, msg, sizeof(msg)), (int)n);
    assert_int_equal(status, CSQL__MDX_OK);
}

static void test_request_frames_decode_as_frames(void **state)
{
    (void)state;
    /* The request encoder's output is a valid frame for the decoder's framing;
       fields of the wrong wire type are skipped like unknown ones. */
    unsigned char buf[64];
    int n = csql__mdx_encode_request("x", 2, buf, sizeof(buf));
    assert_true(n > 12);
    int status = 0;
    /* Field 1 is a string in requests but a varint in responses: skipped, status unset. */
    assert_int_equal(csql__mdx_decode_response(buf, (size_t)n, &status, NULL, 0), n);
    assert_int_equal(status, 0);
    /* Without a user agent, field 2 is a varint: skipped as unknown, status stays 0. */
    n = csql__mdx_encode_request(NULL, 2, buf, sizeof(buf));
    assert_int_equal(csql__mdx_decode_response(buf, (size_t)n, &status, NULL, 0), n);
    assert_int_equal(status, 0);
}

static void test_truncated_needs_more(void **state)
{
    (void)state;
    const unsigned char body[] = {0x08, 0x02, 0x12, 3, 'b', 'a', 'd'};
    unsigned char f[64];
    size_t n = frame(f, body, sizeof(body));
    int status;
    for (size_t len = 0; len < n; len++) {
        assert_int_equal(csql__mdx_decode_response(f, len, &status, NULL, 0), 0);
    }
    assert_int_equal(csql__mdx_decode_response(f, n, &status, NULL, 0), (int)n);
}

static void test_bad_magic_fails_fast(void **state)
{
    (void)state;
    int status;
    const unsigned char pg[] = {'R', 0, 0, 0, 8};
    assert_int_equal(csql__mdx_decode_response(pg, 1, &status, NULL, 0), -1);
    const unsigned char almost[] = {'C', 'S', 'Q', 'L', 'X'};
    assert_int_equal(csql__mdx_decode_response(almost, 4, &status, NULL, 0), 0);
    assert_int_equal(csql__mdx_decode_response(almost, 5, &status, NULL, 0), -1);
}

static void test_oversized_length(void **state)
{
    (void)state;
    unsigned char f[12];
    memcpy(f, "CSQLMDEX", 8);
    put_len(f, CSQL__MDX_MAX_BODY + 1);
    int status;
    assert_int_equal(csql__mdx_decode_response(f, sizeof(f), &status, NULL, 0), -1);
    put_len(f, 0xffffffffu);
    assert_int_equal(csql__mdx_decode_response(f, sizeof(f), &status, NULL, 0), -1);
    put_len(f, CSQL__MDX_MAX_BODY);
    assert_int_equal(csql__mdx_decode_response(f, sizeof(f), &status, NULL, 0), 0);
}

static void expect_malformed(const unsigned char *body, size_t n)
{
    unsigned char f[64];
    size_t len = frame(f, body, n);
    int status;
    char msg[16];
    assert_int_equal(csql__mdx_decode_response(f, len, &status, msg, sizeof(msg)), -1);
}

static void test_bad_varints_and_fields(void **state)
{
    (void)state;
    const unsigned char unterminated[] = {0x08, 0x81};
    expect_malformed(unterminated, sizeof(unterminated));
    const unsigned char eleven[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                    0xff, 0xff, 0xff, 0xff, 0x01};
    expect_malformed(eleven, sizeof(eleven));
    const unsigned char tenth_too_big[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                           0xff, 0xff, 0xff, 0xff, 0x02};
    expect_malformed(tenth_too_big, sizeof(tenth_too_big));
    const unsigned char status_too_big[] = {0x08, 0x80, 0x80, 0x80, 0x80, 0x08};
    expect_malformed(status_too_big, sizeof(status_too_big));
    const unsigned char field_zero[] = {0x00, 0x01};
    expect_malformed(field_zero, sizeof(field_zero));
    const unsigned char group[] = {0x1b, 0x1c};
    expect_malformed(group, sizeof(group));
    const unsigned char msg_overruns[] = {0x12, 10, 'a', 'b'};
    expect_malformed(msg_overruns, sizeof(msg_overruns));
    const unsigned char msg_len_huge[] = {0x12, 0xff, 0xff, 0xff, 0xff, 0x0f};
    expect_malformed(msg_len_huge, sizeof(msg_len_huge));
    const unsigned char fixed64_short[] = {0x21, 1, 2, 3};
    expect_malformed(fixed64_short, sizeof(fixed64_short));
    const unsigned char fixed32_short[] = {0x2d, 1, 2};
    expect_malformed(fixed32_short, sizeof(fixed32_short));
    const unsigned char key_unterminated[] = {0x88};
    expect_malformed(key_unterminated, sizeof(key_unterminated));
}

static void test_every_prefix_of_garbage_is_safe(void **state)
{
    (void)state;
    /* A crude fuzz: deterministic pseudo-random bodies never crash or over-read. */
    uint32_t x = 12345;
    unsigned char body[48];
    unsigned char f[64];
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(round % (int)sizeof(body));
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            body[i] = (unsigned char)(x >> 16);
        }
        size_t len = frame(f, body, n);
        int status;
        char msg[8];
        int r = csql__mdx_decode_response(f, len, &status, msg, sizeof(msg));
        assert_true(r == -1 || r == (int)len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_bytes),
        cmocka_unit_test(test_request_without_user_agent),
        cmocka_unit_test(test_request_long_user_agent_uses_multibyte_varint),
        cmocka_unit_test(test_request_does_not_fit),
        cmocka_unit_test(test_ok_response_from_reference),
        cmocka_unit_test(test_error_response_with_message),
        cmocka_unit_test(test_unknown_fields_skipped),
        cmocka_unit_test(test_request_frames_decode_as_frames),
        cmocka_unit_test(test_truncated_needs_more),
        cmocka_unit_test(test_bad_magic_fails_fast),
        cmocka_unit_test(test_oversized_length),
        cmocka_unit_test(test_bad_varints_and_fields),
        cmocka_unit_test(test_every_prefix_of_garbage_is_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
