/*
 * libFuzzer target: the small string parsers of the core over arbitrary
 * bytes: instance connection names, URL rules and redaction, base64.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "instance_name.h"
#include "url.h"
#include "util/b64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL) {
        return 0;
    }
    if (size > 0) {
        memcpy(s, data, size);
    }
    s[size] = '\0';

    csql__instance_name name;
    if (csql__instance_name_parse(s, &name) == 0) {
        char cn[2 * CSQL__INSTANCE_NAME_MAX];
        if (csql__instance_name_cn(&name, cn, sizeof(cn)) != 0) {
            abort();
        }
        if (strchr(name.region, ':') != NULL || strchr(name.instance, ':') != NULL ||
            name.project[0] == '\0' || name.region[0] == '\0' || name.instance[0] == '\0') {
            abort();
        }
    }

    (void)csql__url_allowed(s);
    char shown[64];
    csql__url_redact(s, shown, sizeof(shown));
    if (strlen(shown) >= sizeof(shown)) {
        abort();
    }

    unsigned char *dec = NULL;
    size_t dec_len = 0;
    if (csql__b64_decode((const char *)data, size, &dec, &dec_len) == 0) {
        /* Decoding then encoding gives back the input, up to padding and alphabet. */
        char *enc = csql__b64_encode(dec, dec_len, 1);
        if (enc == NULL || strlen(enc) > size) {
            abort();
        }
        free(enc);
        free(dec);
    }
    free(s);
    return 0;
}
