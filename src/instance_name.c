/* Instance connection names: ([^:]+(:[^:]+)?):([^:]+):([^:]+) (REFERENCE §1). */
#include "instance_name.h"

#include <stdio.h>
#include <string.h>

#include "error.h"

/* How much of a bad name is echoed back in the message. */
#define SHOWN_MAX 200

static int bad_name(const char *s)
{
    if (s == NULL) {
        return csql__error(CSQL_ERR_BAD_INSTANCE_NAME,
                           "instance connection name \"(null)\" is not of the form "
                           "project:region:instance");
    }
    /* Echo a bounded, printable rendering so a huge or binary input stays readable. */
    char shown[SHOWN_MAX + 4];
    size_t n = 0;
    for (; s[n] != '\0' && n < SHOWN_MAX; n++) {
        unsigned char c = (unsigned char)s[n];
        shown[n] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (s[n] != '\0') {
        memcpy(shown + n, "...", 3);
        n += 3;
    }
    shown[n] = '\0';
    return csql__error(CSQL_ERR_BAD_INSTANCE_NAME,
                       "instance connection name \"%s\" is not of the form project:region:instance",
                       shown);
}

static void copy_part(char *dst, const char *start, size_t len)
{
    memcpy(dst, start, len);
    dst[len] = '\0';
}

int csql__instance_name_parse(const char *s, csql__instance_name *out)
{
    if (s == NULL || out == NULL) {
        return bad_name(s);
    }
    size_t len = strnlen(s, CSQL__INSTANCE_NAME_MAX);
    if (len == 0 || len >= CSQL__INSTANCE_NAME_MAX) {
        return bad_name(s);
    }
    size_t colons[3];
    size_t ncolons = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) {
            return bad_name(s);
        }
        if (c == ':') {
            if (ncolons == 3) {
                return bad_name(s);
            }
            colons[ncolons++] = i;
        }
    }
    if (ncolons < 2) {
        return bad_name(s);
    }
    /* The last two colons split region and instance; everything before is the project. */
    size_t c_region = colons[ncolons - 2];
    size_t c_inst = colons[ncolons - 1];
    /* Every part, including both halves of a domain-scoped project, is non-empty. */
    size_t prev = 0;
    for (size_t k = 0; k < ncolons; k++) {
        if (colons[k] == prev) {
            return bad_name(s);
        }
        prev = colons[k] + 1;
    }
    if (prev == len) {
        return bad_name(s);
    }
    copy_part(out->full, s, len);
    copy_part(out->project, s, c_region);
    copy_part(out->region, s + c_region + 1, c_inst - c_region - 1);
    copy_part(out->instance, s + c_inst + 1, len - c_inst - 1);
    return CSQL_OK;
}

int csql__instance_name_cn(const csql__instance_name *n, char *buf, size_t len)
{
    if (n == NULL || buf == NULL || len == 0) {
        return CSQL_ERR_INVALID_ARGUMENT;
    }
    int w = snprintf(buf, len, "%s:%s", n->project, n->instance);
    if (w < 0 || (size_t)w >= len) {
        buf[0] = '\0';
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "certificate name of instance \"%s\" does not fit in %zu bytes",
                           n->full, len);
    }
    return CSQL_OK;
}
