/*
 * libFuzzer target: what csql-emulator's HTTP API parses from clients:
 * form bodies and percent-decoding, key=value specs and --fault specs,
 * base64url, request paths, scope lists, fault and scope JSON, and JWT-bearer
 * assertions (emu_jwt_verify), both as sent and re-signed with the
 * emulator's own service-account key so that header and claims parsing past
 * the signature check is reached. Byte 0 picks the parser.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "api.h"
#include "auth.h"
#include "faults.h"
#include "util.h"

#define AUD "http://127.0.0.1:1/token"
#define NOW 1700000000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static emu_credentials g_creds;
static int g_ready;

static void init_once(void)
{
    char err[256];
    if (!g_ready) {
        if (emu_credentials_create(&g_creds, err, sizeof(err)) != 0) {
            abort();
        }
        g_ready = 1;
    }
}

static void check_text(const char *s, size_t cap)
{
    if (memchr(s, '\0', cap) == NULL) {
        abort();
    }
}

static void form(const char *in, size_t len)
{
    static const char *const keys[] = {"grant_type", "assertion", "refresh_token", "scope",
                                       "client_secret"};
    char out[512];
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        int r = emu_form_get(in, len, keys[i], out, sizeof(out));
        if (r < -1 || r > 1 || (r == 1 && memchr(out, '\0', sizeof(out)) == NULL)) {
            abort();
        }
    }
    for (int plus = 0; plus < 2; plus++) {
        int r = emu_url_decode(in, len, out, sizeof(out), plus);
        if (r == 0) {
            check_text(out, sizeof(out));
        }
    }
}

static void specs(const char *s, size_t len)
{
    char key[64], value[256];
    size_t pos = 0;
    for (int i = 0; i < 4096; i++) {
        size_t before = pos;
        int r = emu_kv_next(s, len, &pos, key, sizeof(key), value, sizeof(value));
        if (r == 0) {
            break;
        }
        if (pos <= before || pos > len + 1) {
            abort(); /* no progress, or past the end */
        }
        if (r == 1) {
            check_text(key, sizeof(key));
            check_text(value, sizeof(value));
        }
    }
    emu_fault f;
    char err[256];
    err[0] = '\0';
    if (emu_fault_from_spec(s, &f, err, sizeof(err)) == 0) {
        json_t *j = emu_fault_to_json(&f);
        json_decref(j);
    } else {
        check_text(err, sizeof(err));
    }
}

static void b64(const char *in, size_t len)
{
    unsigned char dec[1024];
    char enc[1400];
    long n = emu_b64url_decode(in, len, dec, sizeof(dec));
    if (n < -1 || n > (long)sizeof(dec)) {
        abort();
    }
    if (n >= 0) {
        int m = emu_b64url_encode(dec, (size_t)n, enc, sizeof(enc));
        if (m < 0 || (size_t)m > len) {
            abort();
        }
        /* Decoding what was encoded gives the bytes back. */
        unsigned char again[1024];
        if (emu_b64url_decode(enc, (size_t)m, again, sizeof(again)) != n ||
            memcmp(again, dec, (size_t)n) != 0) {
            abort();
        }
    }
}

static void paths(const char *s)
{
    emu_sqladmin_path sp;
    char email[256];
    (void)emu_sqladmin_parse_path(s, &sp);
    if (emu_iamcredentials_parse_path(s, email, sizeof(email)) == 0) {
        check_text(email, sizeof(email));
    }
    char out[512];
    if (emu_scopes_normalize(s, ' ', out, sizeof(out)) == 0) {
        check_text(out, sizeof(out));
        (void)emu_scopes_contain(out, "https://www.googleapis.com/auth/sqlservice.admin");
    }
    (void)emu_scopes_normalize(s, ',', out, sizeof(out));
}

static void json_inputs(const char *in, size_t len)
{
    json_t *j = json_loadb(in, len, 0, NULL);
    if (j == NULL) {
        return;
    }
    emu_fault f;
    char err[256];
    char out[512];
    if (json_is_object(j)) {
        (void)emu_fault_from_json(j, &f, err, sizeof(err));
    }
    (void)emu_scopes_from_json(j, out, sizeof(out));
    json_decref(j);
}

static void verify(const char *jwt, size_t len)
{
    char scopes[512], err[256];
    err[0] = '\0';
    emu_jwt_result r =
        emu_jwt_verify(jwt, len, &g_creds, AUD, NOW, scopes, sizeof(scopes), err, sizeof(err));
    if (r != EMU_JWT_OK && r != EMU_JWT_INVALID_GRANT && r != EMU_JWT_INVALID_SCOPE) {
        abort();
    }
    check_text(err, sizeof(err));
    if (r == EMU_JWT_OK) {
        check_text(scopes, sizeof(scopes));
    }
}

/* "header JSON" NUL "claims JSON": encode both, sign with the emulator's key, verify. */
static void signed_jwt(const char *in, size_t len)
{
    const char *nul = memchr(in, '\0', len);
    size_t hlen = nul ? (size_t)(nul - in) : len;
    const char *claims = nul ? nul + 1 : "";
    size_t clen = nul ? len - hlen - 1 : 0;
    if (hlen > 2048 || clen > 2048) {
        return;
    }
    char input[6000];
    int a = emu_b64url_encode((const unsigned char *)in, hlen, input, sizeof(input));
    if (a < 0) {
        return;
    }
    input[a] = '.';
    int b = emu_b64url_encode((const unsigned char *)claims, clen, input + a + 1,
                              sizeof(input) - (size_t)a - 1);
    if (b < 0) {
        return;
    }
    size_t signing_len = (size_t)a + 1 + (size_t)b;
    unsigned char sig[512];
    size_t sig_len = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, g_creds.sa_key) != 1 ||
        EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)input, signing_len) != 1) {
        abort();
    }
    EVP_MD_CTX_free(md);
    input[signing_len] = '.';
    int c = emu_b64url_encode(sig, sig_len, input + signing_len + 1,
                              sizeof(input) - signing_len - 1);
    if (c < 0) {
        return;
    }
    verify(input, signing_len + 1 + (size_t)c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_once();
    if (size < 1) {
        return 0;
    }
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    char *s = malloc(len + 1);
    if (s == NULL) {
        return 0;
    }
    memcpy(s, in, len);
    s[len] = '\0';
    switch (data[0] % 7) {
    case 0:
        form(in, len);
        break;
    case 1:
        specs(s, strlen(s));
        break;
    case 2:
        b64(in, len);
        break;
    case 3:
        paths(s);
        break;
    case 4:
        json_inputs(in, len);
        break;
    case 5:
        verify(in, len);
        break;
    default:
        signed_jwt(in, len);
        break;
    }
    free(s);
    return 0;
}
