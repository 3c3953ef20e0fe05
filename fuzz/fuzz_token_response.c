/*
 * libFuzzer target: token endpoint answers (OAuth token endpoint, metadata
 * server, IAM Credentials generateAccessToken) with any HTTP status.
 * Byte 0 picks the parser, byte 1 the status; the rest is the body.
 * Beyond memory safety it checks the promises of creds_internal.h: a token
 * taken is a plausible bearer token, expiries are sane, and an error message
 * is one printable line that never quotes a token or secret from the body.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "credentials/creds_internal.h"
#include "csql/errors.h"

#define NOW 1700000000
#define WHAT "tok"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const long statuses[] = {200, 201, 204, 299, 300, 400, 401, 403, 404, 429, 500, 503};

static void check_line(const char *s)
{
    size_t n = strnlen(s, 1024);
    if (n >= 1024) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            abort();
        }
    }
}

/* True when v occurs in a string value of obj that is not a secret (an error text may echo it). */
static int echoed_by_non_secret(json_t *obj, const char *v, int depth)
{
    const char *key;
    json_t *val;
    if (!json_is_object(obj) || depth > 2) {
        return 0;
    }
    json_object_foreach(obj, key, val) {
        if (json_is_string(val) && strstr(key, "oken") == NULL && strstr(key, "ecret") == NULL &&
            strstr(json_string_value(val), v) != NULL) {
            return 1;
        }
        if (echoed_by_non_secret(val, v, depth + 1)) {
            return 1;
        }
    }
    return 0;
}

/* Abort if the message quotes a secret-looking value of the body (16+ bytes, no spaces). */
static void check_no_secret(const char *msg, const char *body, size_t len)
{
    static const char *const keys[] = {"access_token", "accessToken", "refresh_token",
                                       "id_token", "client_secret", "private_key"};
    json_t *root = json_loadb(body, len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return;
    }
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(root, keys[i]);
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        if (s == NULL || strlen(s) < 16 || strchr(s, ' ') != NULL ||
            echoed_by_non_secret(root, s, 0)) {
            continue;
        }
        if (strstr(msg, s) != NULL) {
            abort();
        }
    }
    json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    long status = statuses[data[1] % (sizeof(statuses) / sizeof(statuses[0]))];
    const char *body = (const char *)data + 2;
    size_t len = size - 2;
    csql__token t;
    int rc = (data[0] & 1) ? csql__impersonate_response_parse(status, body, len, WHAT, &t)
                           : csql__token_response_parse(status, body, len, WHAT, NOW, &t);
    if (rc == CSQL_OK) {
        if (status < 200 || status > 299 || t.value == NULL ||
            !csql__token_value_ok(t.value, strlen(t.value))) {
            abort();
        }
        if (!(data[0] & 1) && t.expires_at != 0 &&
            (t.expires_at <= NOW || t.expires_at > NOW + CSQL__TOKEN_LIFETIME_MAX)) {
            abort();
        }
        csql__token_dispose(&t);
    } else {
        if (t.value != NULL || csql_error_last()->code != rc) {
            abort();
        }
        if (rc != CSQL_ERR_TOKEN && rc != CSQL_ERR_NOMEM) {
            abort();
        }
        check_line(csql_error_last()->message);
        check_no_secret(csql_error_last()->message, body, len);
    }
    csql_error_clear();
    return 0;
}
