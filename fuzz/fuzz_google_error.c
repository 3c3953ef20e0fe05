/*
 * libFuzzer target: csql__google_error_raise, the turn of a non-2xx SQL Admin
 * API answer into a csql error. Bytes 0-1 pick the HTTP status; the rest is
 * the body. Checks what every such message promises: bounded, one printable
 * line (no control bytes a log could be spoofed with), and an API reason of
 * identifier characters only.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "connect_info.h"
#include "csql/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_printable(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (n >= max) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    long status = 100 + (long)(((unsigned)data[0] << 8 | data[1]) % 500);
    const char *body = (const char *)data + 2;
    size_t len = size - 2;
    int rc = csql__google_error_raise(status, body, len, "connectSettings for p:r:i");
    const csql_error *e = csql_error_last();
    if (rc >= 0 || e->code != rc || e->http_status != status) {
        abort();
    }
    if (rc != CSQL_ERR_API && rc != CSQL_ERR_NOT_FOUND && rc != CSQL_ERR_PERMISSION_DENIED &&
        rc != CSQL_ERR_RATE_LIMITED) {
        abort();
    }
    check_printable(e->message, 1024);
    if (strncmp(e->message, "csql: connectSettings for p:r:i: HTTP ", 38) != 0) {
        abort();
    }
    for (const char *r = e->api_reason; *r != '\0'; r++) {
        char c = *r;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_')) {
            abort();
        }
    }
    /* Without a body the answer is never summarised from stale data. */
    rc = csql__google_error_raise(status, NULL, 0, NULL);
    if (strstr(csql_error_last()->message, "empty body") == NULL) {
        abort();
    }
    csql_error_clear();
    return 0;
}
