/* Turning a non-2xx SQL Admin API answer into a csql error (REFERENCE §2, "Errors"). */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "connect_info.h"
#include "error.h"

/* How much of a server's text ends up in a message; the rest is cut with "...". */
#define SNIPPET_MAX 300
/* Larger bodies are not parsed: Google error JSON is small. */
#define ERROR_JSON_MAX (64 * 1024)

/*
 * Copy at most SNIPPET_MAX bytes of peer text into dst as one printable line:
 * control bytes and runs of whitespace become one space, non-ASCII bytes '?'.
 */
static void snippet(char *dst, size_t dstlen, const char *src, size_t len)
{
    size_t o = 0;
    bool space = false;
    size_t limit = len < SNIPPET_MAX ? len : SNIPPET_MAX;
    for (size_t i = 0; i < limit && o + 4 < dstlen; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c <= ' ' || c == 0x7f) {
            space = o > 0;
            continue;
        }
        if (space) {
            dst[o++] = ' ';
            space = false;
        }
        dst[o++] = c < 0x80 ? (char)c : '?';
    }
    if (limit < len && o + 4 <= dstlen) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

static int code_for_status(long status)
{
    switch (status) {
    case 401:
    case 403:
        return CSQL_ERR_PERMISSION_DENIED;
    case 404:
        return CSQL_ERR_NOT_FOUND;
    case 429:
        return CSQL_ERR_RATE_LIMITED;
    default:
        return CSQL_ERR_API;
    }
}

static const char *hint_for_status(long status)
{
    switch (status) {
    case 401:
        return " (the access token was rejected: check that the credentials are valid and not "
               "expired)";
    case 403:
        return " (the Cloud SQL Admin API may be disabled for the project, or the principal may "
               "lack the Cloud SQL Client role roles/cloudsql.client)";
    case 404:
        return " (no such instance: check the project, region and instance name)";
    case 429:
        return " (SQL Admin API quota exceeded, still rate limited after backing off)";
    default:
        return "";
    }
}

/* error.message and error.status of Google error JSON, if the body is that. */
static bool parse_google_error(const char *body, size_t len, char *msg, size_t msglen,
                               char *reason, size_t reasonlen)
{
    if (body == NULL || len == 0 || len > ERROR_JSON_MAX) {
        return false;
    }
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *err = json_is_object(root) ? json_object_get(root, "error") : NULL;
    bool ok = json_is_object(err);
    if (ok) {
        json_t *m = json_object_get(err, "message");
        json_t *s = json_object_get(err, "status");
        if (json_is_string(m)) {
            snippet(msg, msglen, json_string_value(m), json_string_length(m));
        }
        if (json_is_string(s)) {
            /* A reason is an identifier such as PERMISSION_DENIED: keep only those bytes. */
            size_t o = 0;
            const char *sv = json_string_value(s);
            for (size_t i = 0; sv[i] != '\0' && o + 1 < reasonlen; i++) {
                char c = sv[i];
                if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_') {
                    reason[o++] = c;
                }
            }
            reason[o] = '\0';
        }
    }
    json_decref(root);
    return ok;
}

int csql__google_error_raise(long http_status, const char *body, size_t len, const char *what)
{
    char msg[SNIPPET_MAX + 8] = "";
    char reason[64] = "";
    int code = code_for_status(http_status);
    const char *hint = hint_for_status(http_status);
    if (what == NULL) {
        what = "SQL Admin API call";
    }

    if (parse_google_error(body, len, msg, sizeof(msg), reason, sizeof(reason))) {
        return csql__error_http(code, http_status, reason, "%s: HTTP %ld%s%s: %s%s", what,
                                http_status, reason[0] ? " " : "", reason,
                                msg[0] ? msg : "(no message)", hint);
    }
    if (body == NULL || len == 0) {
        return csql__error_http(code, http_status, NULL, "%s: HTTP %ld with an empty body%s", what,
                                http_status, hint);
    }
    snippet(msg, sizeof(msg), body, len);
    return csql__error_http(code, http_status, NULL, "%s: HTTP %ld with a body that is not "
                            "Google error JSON (%zu bytes): \"%s\"%s",
                            what, http_status, len, msg, hint);
}
