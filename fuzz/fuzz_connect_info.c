/*
 * libFuzzer target: the SQL Admin API answer parsers (connectSettings,
 * generateEphemeralCert) and the Google error summariser, over arbitrary bytes.
 * The first byte picks the parser; the rest is the body.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "connect_info.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    csql__instance_name name;
    memset(&name, 0, sizeof(name));
    strcpy(name.full, "google.com:p:us-central1:i");
    strcpy(name.project, "google.com:p");
    strcpy(name.region, "us-central1");
    strcpy(name.instance, "i");

    switch (data[0] % 3) {
    case 0: {
        csql__connect_info ci;
        if (csql__connect_info_parse(body, len, &name, &ci) == 0) {
            csql__connect_info copy;
            if (csql__connect_info_copy(&ci, &copy) == 0) {
                csql__connect_info_dispose(&copy);
            }
            csql__connect_info_dispose(&ci);
        }
        break;
    }
    case 1: {
        char *pem = NULL;
        if (csql__ephemeral_cert_parse(body, len, &pem) == 0) {
            free(pem);
        }
        break;
    }
    default:
        csql__google_error_raise(400 + (long)(len % 200), body, len, "connectSettings for p:r:i");
        break;
    }
    return 0;
}
