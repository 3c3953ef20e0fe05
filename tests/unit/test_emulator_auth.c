/*
 * csql-emulator authentication: issued and static tokens, scopes, IAM
 * certificate bindings, JWT-bearer assertion checks, and the small decoders
 * they rest on (tools/emulator/auth_*.c, util.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "auth.h"
#include "emulator.h"
#include "util.h"

#define AUD "http://127.0.0.1:1234/token"

/* ---------------- util ---------------- */

static void test_url_decode(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(emu_url_decode("a%3Ab+c", 7, out, sizeof out, 1), 0);
    assert_string_equal(out, "a:b c");
    assert_int_equal(emu_url_decode("a+b", 3, out, sizeof out, 0), 0);
    assert_string_equal(out, "a+b");
    assert_int_equal(emu_url_decode("%2", 2, out, sizeof out, 0), -1);
    assert_int_equal(emu_url_decode("%zz", 3, out, sizeof out, 0), -1);
    assert_int_equal(emu_url_decode("%00", 3, out, sizeof out, 0), -1);
    assert_int_equal(emu_url_decode("abcd", 4, out, 4, 0), -1); /* no room for the NUL */
    assert_int_equal(emu_url_decode("abc", 3, out, 4, 0), 0);
}

static void test_form_get(void **state)
{
    (void)state;
    const char *body = "grant_type=refresh_token&scope=a+b%20c&empty=&flag&x%5Fy=1";
    char out[64];
    assert_int_equal(emu_form_get(body, strlen(body), "grant_type", out, sizeof out), 1);
    assert_string_equal(out, "refresh_token");
    assert_int_equal(emu_form_get(body, strlen(body), "scope", out, sizeof out), 1);
    assert_string_equal(out, "a b c");
    assert_int_equal(emu_form_get(body, strlen(body), "empty", out, sizeof out), 1);
    assert_string_equal(out, "");
    assert_int_equal(emu_form_get(body, strlen(body), "flag", out, sizeof out), 1);
    assert_int_equal(emu_form_get(body, strlen(body), "x_y", out, sizeof out), 1);
    assert_string_equal(out, "1");
    assert_int_equal(emu_form_get(body, strlen(body), "missing", out, sizeof out), 0);
    assert_int_equal(emu_form_get(body, strlen(body), "grant", out, sizeof out), 0);
    assert_int_equal(emu_form_get("a=%zz", 5, "a", out, sizeof out), -1);
    assert_int_equal(emu_form_get("a=0123456789", 12, "a", out, 4), -1);
    /* Bounded by the length given, not by a NUL. */
    assert_int_equal(emu_form_get("a=1&b=2", 3, "b", out, sizeof out), 0);
}

static void test_b64url(void **state)
{
    (void)state;
    const unsigned char in[] = {0xfb, 0xff, 0x00, 'a', 'b'};
    char enc[16];
    unsigned char dec[16];
    for (size_t n = 0; n <= sizeof in; n++) {
        int len = emu_b64url_encode(in, n, enc, sizeof enc);
        assert_true(len >= 0);
        assert_null(strchr(enc, '='));
        assert_null(strchr(enc, '+'));
        assert_int_equal(emu_b64url_decode(enc, (size_t)len, dec, sizeof dec), (long)n);
        assert_memory_equal(dec, in, n);
    }
    assert_int_equal(emu_b64url_encode(in, 3, enc, 4), -1); /* no room for the NUL */
    assert_int_equal(emu_b64url_decode("+/==", 4, dec, sizeof dec), -1);
    assert_int_equal(emu_b64url_decode("A", 1, dec, sizeof dec), -1);
    assert_int_equal(emu_b64url_decode("AB", 2, dec, sizeof dec), -1); /* non-zero tail bits */
    assert_int_equal(emu_b64url_decode("AA==", 4, dec, sizeof dec), 1);
    assert_int_equal(emu_b64url_decode("AAAA", 4, dec, 2), -1);
}

static void test_rfc3339_and_parse_long(void **state)
{
    (void)state;
    char out[32];
    emu_rfc3339(0, out, sizeof out);
    assert_string_equal(out, "1970-01-01T00:00:00Z");
    emu_rfc3339(1700000000, out, sizeof out);
    assert_string_equal(out, "2023-11-14T22:13:20Z");
    long v;
    assert_int_equal(emu_parse_long("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(emu_parse_long("-1", -5, 5, &v), 0);
    assert_int_equal(v, -1);
    assert_int_equal(emu_parse_long("101", 0, 100, &v), -1);
    assert_int_equal(emu_parse_long(" 1", 0, 100, &v), -1);
    assert_int_equal(emu_parse_long("+1", 0, 100, &v), -1);
    assert_int_equal(emu_parse_long("1 ", 0, 100, &v), -1);
    assert_int_equal(emu_parse_long("", 0, 100, &v), -1);
    assert_int_equal(emu_parse_long("99999999999999999999", 0, 100, &v), -1);
}

/* ---------------- tokens and scopes ---------------- */

static void test_scopes(void **state)
{
    (void)state;
    assert_true(emu_scopes_contain("a b c", "b"));
    assert_true(emu_scopes_contain("a b c", "c"));
    assert_false(emu_scopes_contain("a b c", "ab"));
    assert_false(emu_scopes_contain("abc", "b"));
    assert_false(emu_scopes_contain("", "a"));
    assert_true(emu_scopes_contain("*", EMU_SCOPE_SQL_ADMIN));

    char out[64];
    assert_int_equal(emu_scopes_normalize("a,b,,c", ',', out, sizeof out), 0);
    assert_string_equal(out, "a b c");
    assert_int_equal(emu_scopes_normalize("  a   b ", ' ', out, sizeof out), 0);
    assert_string_equal(out, "a b");
    assert_int_equal(emu_scopes_normalize(" , ", ',', out, sizeof out), -1);
    assert_int_equal(emu_scopes_normalize("a\tb", ' ', out, sizeof out), -1);
    assert_int_equal(emu_scopes_normalize("abcdef", ' ', out, 4), -1);

    json_t *arr = json_pack("[s,s]", "a", "b");
    assert_int_equal(emu_scopes_from_json(arr, out, sizeof out), 0);
    assert_string_equal(out, "a b");
    assert_int_equal(emu_scopes_from_json(arr, out, 3), -1); /* "a b" needs 4 */
    json_decref(arr);
    static const char *const bad[] = {"[]", "[\"\"]", "[\"a b\"]", "[1]", "{}", "\"a\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        arr = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        assert_non_null(arr);
        assert_int_equal(emu_scopes_from_json(arr, out, sizeof out), -1);
        json_decref(arr);
    }
}

static void test_kv_next(void **state)
{
    (void)state;
    const char *s = "a=1&b%3D=x%26y&&c=";
    size_t pos = 0, len = strlen(s);
    char k[8], v[8];
    assert_int_equal(emu_kv_next(s, len, &pos, k, sizeof k, v, sizeof v), 1);
    assert_string_equal(k, "a");
    assert_string_equal(v, "1");
    assert_int_equal(emu_kv_next(s, len, &pos, k, sizeof k, v, sizeof v), 1);
    assert_string_equal(k, "b=");
    assert_string_equal(v, "x&y");
    size_t at = pos;
    assert_int_equal(emu_kv_next(s, len, &pos, k, sizeof k, v, sizeof v), -1); /* empty pair */
    assert_int_equal(pos, at + 1);
    assert_int_equal(emu_kv_next(s, len, &pos, k, sizeof k, v, sizeof v), 1);
    assert_string_equal(k, "c");
    assert_string_equal(v, "");
    assert_int_equal(emu_kv_next(s, len, &pos, k, sizeof k, v, sizeof v), 0);
    pos = 0;
    assert_int_equal(emu_kv_next("key=toolongvalue", 16, &pos, k, sizeof k, v, sizeof v), -1);
    assert_int_equal(pos, 17);
}

static void test_tokens_issue_and_lookup(void **state)
{
    (void)state;
    emu_tokens *t = emu_tokens_new("static@x.iam.gserviceaccount.com");
    emu_token_info info;
    char a[EMU_ISSUED_TOKEN_MAX], b[EMU_ISSUED_TOKEN_MAX];
    time_t exp_a, exp_b, now = time(NULL);

    assert_non_null(t);
    assert_int_equal(emu_tokens_issue(t, "u@example.com", "s1 s2", 100, a, sizeof a, &exp_a), 0);
    assert_int_equal(emu_tokens_issue(t, "v@example.com", "s3", 100, b, sizeof b, &exp_b), 0);
    assert_true(strncmp(a, EMU_TOKEN_PREFIX, strlen(EMU_TOKEN_PREFIX)) == 0);
    assert_true(strlen(a) > strlen(EMU_TOKEN_PREFIX) + 40);
    assert_string_not_equal(a, b);
    assert_true(exp_a >= now + 100 && exp_a <= now + 102);

    assert_int_equal(emu_tokens_lookup(t, a, now, &info), EMU_TOKEN_OK);
    assert_string_equal(info.principal, "u@example.com");
    assert_string_equal(info.scopes, "s1 s2");
    assert_int_equal(info.expiry, exp_a);
    assert_int_equal(emu_tokens_lookup(t, b, now, &info), EMU_TOKEN_OK);
    assert_string_equal(info.principal, "v@example.com");
    /* At and after the expiry: expired, not unknown. */
    assert_int_equal(emu_tokens_lookup(t, a, exp_a, &info), EMU_TOKEN_EXPIRED);
    assert_int_equal(emu_tokens_lookup(t, "ya29.emu-nope", now, NULL), EMU_TOKEN_UNKNOWN);
    assert_int_equal(emu_tokens_lookup(t, "", now, NULL), EMU_TOKEN_UNKNOWN);

    /* Lifetime 0 gives a token that is already expired (tests use it). */
    assert_int_equal(emu_tokens_issue(t, "u@example.com", "s", 0, a, sizeof a, &exp_a), 0);
    assert_int_equal(emu_tokens_lookup(t, a, time(NULL), NULL), EMU_TOKEN_EXPIRED);
    assert_int_equal(emu_tokens_issue(t, "u@example.com", "s", -1, a, sizeof a, &exp_a), -1);
    assert_int_equal(emu_tokens_issue(t, "u@example.com", "s", 1, a, 10, &exp_a), -1);

    assert_int_equal(emu_tokens_add_static(t, "fixed"), 0);
    assert_int_equal(emu_tokens_add_static(t, ""), -1);
    assert_int_equal(emu_tokens_lookup(t, "fixed", now + 100000000, &info), EMU_TOKEN_OK);
    assert_string_equal(info.principal, "static@x.iam.gserviceaccount.com");
    assert_true(emu_scopes_contain(info.scopes, EMU_SCOPE_SQL_ADMIN));
    assert_int_equal(info.expiry, 0);
    assert_int_equal(emu_tokens_count(t), 4);
    emu_tokens_free(t);
}

typedef struct issue_args {
    emu_tokens *t;
    int ok;
} issue_args;

static void *issue_many(void *p)
{
    issue_args *a = p;
    char tok[EMU_ISSUED_TOKEN_MAX];
    time_t exp;
    for (int i = 0; i < 500; i++) {
        if (emu_tokens_issue(a->t, "p@x", "s", 60, tok, sizeof tok, &exp) == 0 &&
            emu_tokens_lookup(a->t, tok, time(NULL), NULL) == EMU_TOKEN_OK)
            a->ok++;
    }
    return NULL;
}

static void test_tokens_concurrent(void **state)
{
    (void)state;
    emu_tokens *t = emu_tokens_new("s@x");
    pthread_t th[4];
    issue_args args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (issue_args){.t = t};
        pthread_create(&th[i], NULL, issue_many, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].ok, 500);
    }
    assert_int_equal(emu_tokens_count(t), 2000);
    emu_tokens_free(t);
}

/* ---------------- IAM bindings ---------------- */

static void test_iam_bindings(void **state)
{
    (void)state;
    char who[64];
    time_t exp = 0, now = time(NULL);

    emu_iam_clear();
    atomic_store(&emu_g.cert_lifetime_s, 3600);
    emu_iam_bind(7, "sa@p.iam.gserviceaccount.com", now + 600);
    emu_iam_bind(8, "user@example.com", now - 10); /* token expired, cert may still be live */
    assert_int_equal(emu_iam_lookup(7, who, sizeof who, &exp), 1);
    assert_string_equal(who, "sa@p.iam.gserviceaccount.com");
    assert_int_equal(exp, now + 600);
    assert_int_equal(emu_iam_lookup(8, who, sizeof who, &exp), 1);
    assert_int_equal(exp, now - 10);
    assert_int_equal(emu_iam_lookup(9, who, sizeof who, &exp), 0);

    /* Rebinding a serial replaces it. */
    emu_iam_bind(7, "other@example.com", now + 60);
    assert_int_equal(emu_iam_lookup(7, who, sizeof who, &exp), 1);
    assert_string_equal(who, "other@example.com");
    assert_int_equal(emu_iam_count(), 2);

    /* Purged once the certificate must have expired too (token expiry + cert lifetime). */
    emu_iam_bind(10, "old@example.com", now - 3600 - 100);
    assert_int_equal(emu_iam_lookup(10, who, sizeof who, &exp), 1);
    emu_iam_bind(11, "new@example.com", now + 60); /* binding purges */
    assert_int_equal(emu_iam_lookup(10, who, sizeof who, &exp), 0);
    assert_int_equal(emu_iam_count(), 3);

    /* A tiny output buffer truncates, never overflows. */
    char small[4];
    assert_int_equal(emu_iam_lookup(11, small, sizeof small, NULL), 1);
    assert_string_equal(small, "new");

    emu_iam_clear();
    assert_int_equal(emu_iam_count(), 0);
    assert_int_equal(emu_iam_lookup(7, who, sizeof who, &exp), 0);
}

/* ---------------- JWT-bearer assertions ---------------- */

static emu_credentials creds;

static int setup_creds(void **state)
{
    (void)state;
    char err[256];
    return emu_credentials_create(&creds, err, sizeof err);
}

static int teardown_creds(void **state)
{
    (void)state;
    emu_credentials_clear(&creds);
    return 0;
}

static void b64_json(json_t *j, char *out, size_t cap)
{
    char *text = json_dumps(j, JSON_COMPACT);
    assert_true(emu_b64url_encode((unsigned char *)text, strlen(text), out, cap) > 0);
    free(text);
    json_decref(j);
}

/* header.claims.signature signed with key (SHA-256, RSA PKCS#1 v1.5). */
static char *make_jwt(EVP_PKEY *key, json_t *hdr, json_t *claims)
{
    char h[1024], c[2048], *jwt = malloc(8192);
    unsigned char sig[512];
    size_t siglen = sizeof sig;
    b64_json(hdr, h, sizeof h);
    b64_json(claims, c, sizeof c);
    int n = snprintf(jwt, 8192, "%s.%s", h, c);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &siglen, (unsigned char *)jwt, (size_t)n), 1);
    EVP_MD_CTX_free(md);
    jwt[n++] = '.';
    assert_true(emu_b64url_encode(sig, siglen, jwt + n, 8192 - (size_t)n) > 0);
    return jwt;
}

static json_t *good_header(void)
{
    return json_pack("{s:s,s:s,s:s}", "alg", "RS256", "typ", "JWT", "kid", creds.sa_key_id);
}

static json_t *good_claims(time_t now)
{
    return json_pack("{s:s,s:s,s:I,s:I,s:s}", "iss", EMU_SA_EMAIL, "aud", AUD, "iat",
                     (json_int_t)now, "exp", (json_int_t)(now + 3600), "scope",
                     EMU_SCOPE_SQL_ADMIN " " EMU_SCOPE_CLOUD_PLATFORM);
}

static emu_jwt_result verify(const char *jwt, time_t now, char *scopes, char *err)
{
    return emu_jwt_verify(jwt, strlen(jwt), &creds, AUD, now, scopes, EMU_SCOPES_MAX, err, 256);
}

/* A JWT with one claim changed is rejected as invalid_grant with `needle` in the message. */
static void expect_claim_rejected(const char *key, json_t *value, const char *needle)
{
    time_t now = time(NULL);
    char scopes[EMU_SCOPES_MAX], err[256];
    json_t *claims = good_claims(now);
    if (value)
        json_object_set_new(claims, key, value);
    else
        json_object_del(claims, key);
    char *jwt = make_jwt(creds.sa_key, good_header(), claims);
    emu_jwt_result r = verify(jwt, now, scopes, err);
    free(jwt);
    if (r != EMU_JWT_INVALID_GRANT || !strstr(err, needle))
        fail_msg("claim %s: result %d, message \"%s\" (want \"%s\")", key, r, err, needle);
}

static void test_jwt_good(void **state)
{
    (void)state;
    time_t now = time(NULL);
    char scopes[EMU_SCOPES_MAX], err[256];
    char *jwt = make_jwt(creds.sa_key, good_header(), good_claims(now));
    assert_int_equal(verify(jwt, now, scopes, err), EMU_JWT_OK);
    assert_string_equal(scopes, EMU_SCOPE_SQL_ADMIN " " EMU_SCOPE_CLOUD_PLATFORM);
    free(jwt);

    /* kid is optional. */
    jwt = make_jwt(creds.sa_key, json_pack("{s:s}", "alg", "RS256"), good_claims(now));
    assert_int_equal(verify(jwt, now, scopes, err), EMU_JWT_OK);
    free(jwt);
}

static void test_jwt_bad_claims(void **state)
{
    (void)state;
    time_t now = time(NULL);
    expect_claim_rejected("aud", json_string("https://oauth2.googleapis.com/token"), "aud");
    expect_claim_rejected("aud", NULL, "aud");
    expect_claim_rejected("iss", json_string("someone@else.iam.gserviceaccount.com"), "issuer");
    expect_claim_rejected("exp", json_integer(now - 1), "short-lived");
    expect_claim_rejected("exp", json_integer(now + 3601), "short-lived"); /* exp - iat > 1h */
    expect_claim_rejected("iat", json_integer(now + 600), "short-lived");  /* from the future */
    expect_claim_rejected("exp", json_string("soon"), "numbers");
}

static void test_jwt_bad_signature_and_header(void **state)
{
    (void)state;
    time_t now = time(NULL);
    char scopes[EMU_SCOPES_MAX], err[256];

    /* Signed by another key. */
    EVP_PKEY *other = EVP_RSA_gen(2048);
    char *jwt = make_jwt(other, good_header(), good_claims(now));
    assert_int_equal(verify(jwt, now, scopes, err), EMU_JWT_INVALID_GRANT);
    assert_non_null(strstr(err, "Signature"));
    free(jwt);
    EVP_PKEY_free(other);

    /* A flipped signature byte. */
    jwt = make_jwt(creds.sa_key, good_header(), good_claims(now));
    char *last = jwt + strlen(jwt) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    assert_int_equal(verify(jwt, now, scopes, err), EMU_JWT_INVALID_GRANT);
    free(jwt);

    jwt = make_jwt(creds.sa_key, json_pack("{s:s}", "alg", "HS256"), good_claims(now));
    assert_int_equal(verify(jwt, now, scopes, err), EMU_JWT_INVALID_GRANT);
    assert_non_null(strstr(err, "RS256"));
    free(jwt);

    jwt = make_jwt(creds.sa_key, json_pack("{s:s,s:s}", "alg", "RS256", "kid", "0000"),
                   good_claims(now));
    assert_int_equal(verify(jwt, now, scopes, err), EMU_JWT_INVALID_GRANT);
    assert_non_null(strstr(err, "kid"));
    free(jwt);

    static const char *const malformed[] = {"", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.",
                                            "bm90IGpzb24.e30.AAAA"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
        assert_int_equal(verify(malformed[i], now, scopes, err), EMU_JWT_INVALID_GRANT);

    /* No credentials at all: nothing verifies. */
    jwt = make_jwt(creds.sa_key, good_header(), good_claims(now));
    assert_int_equal(emu_jwt_verify(jwt, strlen(jwt), NULL, AUD, now, scopes, sizeof scopes,
                                    err, sizeof err),
                     EMU_JWT_INVALID_GRANT);
    free(jwt);
}

static void test_jwt_scope_claim(void **state)
{
    (void)state;
    time_t now = time(NULL);
    char scopes[EMU_SCOPES_MAX], err[256];
    json_t *claims = good_claims(now);
    json_object_del(claims, "scope");
    char *jwt = make_jwt(creds.sa_key, good_header(), claims);
    assert_int_equal(verify(jwt, now, scopes, err), EMU_JWT_INVALID_SCOPE);
    assert_non_null(strstr(err, "scope"));
    /* The message never echoes the assertion. */
    assert_null(strstr(err, jwt));
    free(jwt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_decode),
        cmocka_unit_test(test_form_get),
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_rfc3339_and_parse_long),
        cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_kv_next),
        cmocka_unit_test(test_tokens_issue_and_lookup),
        cmocka_unit_test(test_tokens_concurrent),
        cmocka_unit_test(test_iam_bindings),
        cmocka_unit_test_setup_teardown(test_jwt_good, setup_creds, teardown_creds),
        cmocka_unit_test_setup_teardown(test_jwt_bad_claims, setup_creds, teardown_creds),
        cmocka_unit_test_setup_teardown(test_jwt_bad_signature_and_header, setup_creds,
                                        teardown_creds),
        cmocka_unit_test_setup_teardown(test_jwt_scope_claim, setup_creds, teardown_creds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
