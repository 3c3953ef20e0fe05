/*
 * libFuzzer target: the credentials parsers over arbitrary bytes, i.e.
 * service_account / authorized_user JSON, OAuth and metadata token answers
 * (any status), generateAccessToken answers and RFC 3339 times.
 * The first byte picks the parser (and the HTTP status); the rest is the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "credentials/creds_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    long status = (data[0] & 0x80) ? 400 + (data[0] & 0x7f) : 200;
    csql__token t;
    switch (data[0] % 4) {
    case 0: {
        csql__creds_file f;
        if (csql__creds_file_parse(in, len, "fuzz", &f) == 0) {
            csql__creds_file_dispose(&f);
        }
        break;
    }
    case 1:
        if (csql__token_response_parse(status, in, len, "fuzz", 1000, &t) == 0) {
            csql__token_dispose(&t);
        }
        break;
    case 2:
        if (csql__impersonate_response_parse(status, in, len, "fuzz", &t) == 0) {
            csql__token_dispose(&t);
        }
        break;
    default: {
        int64_t v;
        (void)csql__rfc3339_parse(in, len, &v);
        break;
    }
    }
    return 0;
}
