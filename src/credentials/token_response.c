/*
 * Token endpoint answers: OAuth {"access_token","expires_in","token_type"}
 * (the metadata server answers the same shape), IAM Credentials
 * {"accessToken","expireTime"}, and the error bodies they send instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "creds_internal.h"
#include "error.h"

#define SUMMARY_MAX 200

/* A printable one-line copy of at most SUMMARY_MAX bytes of s. */
static void summarise(char *dst, size_t cap, const char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < cap && i < SUMMARY_MAX; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : ' ';
    }
    if (len > SUMMARY_MAX && o + 4 < cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

static const char *string_field(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Raise CSQL_ERR_TOKEN for a non-2xx answer. */
static int raise_error_body(long status, const char *body, size_t len, const char *what)
{
    char msg[SUMMARY_MAX + 8] = "";
    char reason[64] = "";
    json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *err = json_is_object(root) ? json_object_get(root, "error") : NULL;
    if (json_is_string(err)) {
        /* OAuth: {"error":"invalid_grant","error_description":"..."} */
        const char *code = json_string_value(err);
        const char *desc = string_field(root, "error_description");
        summarise(reason, sizeof(reason), code, strlen(code));
        if (desc != NULL) {
            char d[SUMMARY_MAX + 8];
            summarise(d, sizeof(d), desc, strlen(desc));
            snprintf(msg, sizeof(msg), "%s: %s", reason, d);
        } else {
            snprintf(msg, sizeof(msg), "%s", reason);
        }
    } else if (json_is_object(err)) {
        /* Google: {"error":{"code":403,"message":"...","status":"PERMISSION_DENIED"}} */
        const char *m = string_field(err, "message");
        const char *s = string_field(err, "status");
        if (s != NULL) {
            summarise(reason, sizeof(reason), s, strlen(s));
        }
        if (m != NULL) {
            summarise(msg, sizeof(msg), m, strlen(m));
        }
    }
    if (msg[0] == '\0' && root != NULL) {
        /* JSON without an error text may carry a token (a proxy relaying a 2xx body with a
         * 5xx status): never quote it. */
        snprintf(msg, sizeof(msg), "a JSON answer of %zu bytes without an error description", len);
    } else if (msg[0] == '\0' && body != NULL && len > 0) {
        summarise(msg, sizeof(msg), body, len);
    }
    json_decref(root);
    return csql__error_http(CSQL_ERR_TOKEN, status, reason, "%s answered HTTP %ld: %s", what,
                            status, msg[0] ? msg : "(empty body)");
}

/* Parse a 2xx body as a JSON object. */
static int load_object(const char *body, size_t len, const char *what, long status, json_t **out)
{
    json_error_t jerr;
    *out = NULL;
    json_t *root = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (root == NULL && body != NULL && json_error_code(&jerr) == json_error_out_of_memory) {
        return csql__error(CSQL_ERR_NOMEM, "%s: out of memory parsing the answer", what);
    }
    if (root == NULL) {
        return csql__error_http(CSQL_ERR_TOKEN, status, NULL,
                                "%s answered with a body that is not JSON", what);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return csql__error_http(CSQL_ERR_TOKEN, status, NULL,
                                "%s answered with JSON that is not an object", what);
    }
    *out = root;
    return CSQL_OK;
}

/* Take a copy of the access token field `name`, checked. */
static int take_token(json_t *root, const char *name, const char *what, long status,
                      csql__token *out)
{
    json_t *v = json_object_get(root, name);
    if (v == NULL) {
        return csql__error_http(CSQL_ERR_TOKEN, status, NULL, "%s answered without \"%s\"",
                                what, name);
    }
    if (!json_is_string(v)) {
        return csql__error_http(CSQL_ERR_TOKEN, status, NULL, "%s: \"%s\" is not a string",
                                what, name);
    }
    size_t len = json_string_length(v);
    if (!csql__token_value_ok(json_string_value(v), len)) {
        return csql__error_http(CSQL_ERR_TOKEN, status, NULL,
                                "%s: \"%s\" is empty, longer than %d bytes, or has characters "
                                "not allowed in a token",
                                what, name, CSQL__ACCESS_TOKEN_MAX);
    }
    out->value = strndup(json_string_value(v), len);
    if (out->value == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory reading a token from %s", what);
    }
    return CSQL_OK;
}

int csql__token_response_parse(long status, const char *body, size_t len, const char *what,
                               int64_t now, csql__token *out)
{
    memset(out, 0, sizeof(*out));
    if (status < 200 || status > 299) {
        return raise_error_body(status, body, len, what);
    }
    json_t *root = NULL;
    int rc = load_object(body, len, what, status, &root);
    if (rc != CSQL_OK) {
        return rc;
    }
    const char *type = string_field(root, "token_type");
    json_t *exp = json_object_get(root, "expires_in");
    if (type != NULL && strcasecmp(type, "Bearer") != 0) {
        rc = csql__error_http(CSQL_ERR_TOKEN, status, NULL,
                              "%s answered token_type other than Bearer", what);
        goto done;
    }
    if (exp != NULL && !json_is_integer(exp) && !json_is_real(exp)) {
        rc = csql__error_http(CSQL_ERR_TOKEN, status, NULL,
                              "%s: \"expires_in\" is not a number", what);
        goto done;
    }
    double secs = exp ? json_number_value(exp) : 0.0;
    /* Whole seconds count: under one second the token would expire as it arrives. */
    if (exp != NULL && !(secs >= 1.0)) {
        rc = csql__error_http(CSQL_ERR_TOKEN, status, NULL,
                              "%s: \"expires_in\" is not positive (or under one second)", what);
        goto done;
    }
    rc = take_token(root, "access_token", what, status, out);
    if (rc != CSQL_OK) {
        goto done;
    }
    if (exp != NULL) {
        int64_t s = secs > (double)CSQL__TOKEN_LIFETIME_MAX ? CSQL__TOKEN_LIFETIME_MAX
                                                             : (int64_t)secs;
        out->expires_at = now + s;
    }
done:
    csql__json_wipe_string(json_object_get(root, "access_token"));
    json_decref(root);
    return rc;
}

int csql__token_transport_error(int rc, const char *what)
{
    csql__error_prefix("%s", what);
    if (rc != CSQL_ERR_DNS && rc != CSQL_ERR_CONNECT && rc != CSQL_ERR_IO &&
        rc != CSQL_ERR_API_RESPONSE) {
        return rc;
    }
    csql_error e = *csql_error_last();
    e.code = CSQL_ERR_TOKEN;
    return csql__error_raise_copy(&e);
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int csql__rfc3339_parse(const char *s, size_t len, int64_t *out)
{
    int y, mo, d, h, mi, se;
    /* YYYY-MM-DDTHH:MM:SS at least */
    if (len < 20 || len > 64 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':' || digits(s, 4, &y) || digits(s + 5, 2, &mo) ||
        digits(s + 8, 2, &d) || digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) ||
        digits(s + 17, 2, &se)) {
        return -1;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) {
        return -1;
    }
    size_t i = 19;
    if (s[i] == '.') {
        i++;
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
        if (i == start) {
            return -1;
        }
    }
    int64_t offset = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh, om;
        if (digits(s + i + 1, 2, &oh) || digits(s + i + 4, 2, &om) || oh > 23 || om > 59) {
            return -1;
        }
        offset = (int64_t)(oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
        i += 6;
    } else {
        return -1;
    }
    if (i != len) {
        return -1;
    }
    *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
    return 0;
}

int csql__impersonate_response_parse(long status, const char *body, size_t len, const char *what,
                                     csql__token *out)
{
    memset(out, 0, sizeof(*out));
    if (status < 200 || status > 299) {
        return raise_error_body(status, body, len, what);
    }
    json_t *root = NULL;
    int rc = load_object(body, len, what, status, &root);
    if (rc != CSQL_OK) {
        return rc;
    }
    const char *exp = string_field(root, "expireTime");
    int64_t when = 0;
    if (exp == NULL) {
        rc = csql__error_http(CSQL_ERR_TOKEN, status, NULL, "%s answered without \"expireTime\"",
                              what);
        goto done;
    }
    if (csql__rfc3339_parse(exp, strlen(exp), &when) != 0) {
        rc = csql__error_http(CSQL_ERR_TOKEN, status, NULL,
                              "%s: \"expireTime\" is not an RFC 3339 time", what);
        goto done;
    }
    rc = take_token(root, "accessToken", what, status, out);
    if (rc == CSQL_OK) {
        out->expires_at = when;
    }
done:
    csql__json_wipe_string(json_object_get(root, "accessToken"));
    json_decref(root);
    return rc;
}
