/* Base64 and base64url encoding/decoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "util/b64.h"

static void check_encode(const char *in, int url, const char *want)
{
    char *out = csql__b64_encode((const unsigned char *)in, strlen(in), url);
    assert_non_null(out);
    assert_string_equal(out, want);
    free(out);
}

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    check_encode("", 0, "");
    check_encode("f", 0, "Zg==");
    check_encode("fo", 0, "Zm8=");
    check_encode("foo", 0, "Zm9v");
    check_encode("foob", 0, "Zm9vYg==");
    check_encode("fooba", 0, "Zm9vYmE=");
    check_encode("foobar", 0, "Zm9vYmFy");
    check_encode("f", 1, "Zg");
    check_encode("fo", 1, "Zm8");
    check_encode("foobar", 1, "Zm9vYmFy");
}

static void test_url_alphabet(void **state)
{
    (void)state;
    const unsigned char in[] = {0xfb, 0xff, 0xbf};
    char *std = csql__b64_encode(in, sizeof(in), 0);
    char *url = csql__b64_encode(in, sizeof(in), 1);
    assert_string_equal(std, "+/+/");
    assert_string_equal(url, "-_-_");
    unsigned char *out;
    size_t n;
    assert_int_equal(csql__b64_decode(url, strlen(url), &out, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(out, in, 3);
    free(out);
    free(std);
    free(url);
}

static void test_round_trip_all_lengths(void **state)
{
    (void)state;
    unsigned char buf[300];
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (unsigned char)(i * 37 + 11);
    }
    for (size_t len = 0; len <= sizeof(buf); len++) {
        for (int url = 0; url <= 1; url++) {
            char *enc = csql__b64_encode(buf, len, url);
            assert_non_null(enc);
            unsigned char *dec = NULL;
            size_t n = 99;
            assert_int_equal(csql__b64_decode(enc, strlen(enc), &dec, &n), 0);
            assert_int_equal(n, len);
            if (len > 0) {
                assert_memory_equal(dec, buf, len);
            }
            free(dec);
            free(enc);
        }
    }
}

static void test_padding_optional(void **state)
{
    (void)state;
    unsigned char *out;
    size_t n;
    assert_int_equal(csql__b64_decode("Zm8=", 4, &out, &n), 0);
    assert_int_equal(n, 2);
    free(out);
    assert_int_equal(csql__b64_decode("Zm8", 3, &out, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "fo", 2);
    free(out);
}

static void expect_bad(const char *s)
{
    unsigned char *out = NULL;
    size_t n = 0;
    assert_int_equal(csql__b64_decode(s, strlen(s), &out, &n), -1);
    assert_null(out);
}

static void test_bad_input(void **state)
{
    (void)state;
    expect_bad("Z");          /* one char cannot hold a byte */
    expect_bad("Zm9vY");      /* 5 chars: same */
    expect_bad("Zm 8");       /* whitespace */
    expect_bad("Zm8*");       /* not in either alphabet */
    expect_bad("Zm8==");      /* padding that does not complete a quantum */
    expect_bad("Zg=");        /* padding with a bad total length */
    expect_bad("Zh==");       /* non-zero leftover bits */
    expect_bad("Zm9=");       /* non-zero leftover bits */
    expect_bad("===");
    unsigned char *out;
    size_t n;
    assert_int_equal(csql__b64_decode(NULL, 0, &out, &n), -1);
}

static void test_embedded_nul_is_bad(void **state)
{
    (void)state;
    unsigned char *out = NULL;
    size_t n;
    assert_int_equal(csql__b64_decode("Zm\0v", 4, &out, &n), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_url_alphabet),
        cmocka_unit_test(test_round_trip_all_lengths),
        cmocka_unit_test(test_padding_optional),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_embedded_nul_is_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
