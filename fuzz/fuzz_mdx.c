/*
 * libFuzzer target: the metadata exchange response decoder over arbitrary
 * bytes, fed whole and in every prefix a reader could see; plus the request
 * encoder with the input as user agent.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mdx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int status = 0;
    char msg[64];
    int r = csql__mdx_decode_response(data, size, &status, msg, sizeof(msg));
    if (r > 0) {
        if ((size_t)r > size || strlen(msg) >= sizeof(msg)) {
            abort();
        }
        /* Every shorter prefix of a complete frame asks for more bytes. */
        for (size_t n = 0; n < (size_t)r; n++) {
            if (csql__mdx_decode_response(data, n, &status, NULL, 0) != 0) {
                abort();
            }
        }
    }
    /* The same bytes behind a valid header. */
    if (size <= CSQL__MDX_MAX_BODY) {
        unsigned char *frame = malloc(12 + size);
        if (frame != NULL) {
            memcpy(frame, CSQL__MDX_MAGIC, 8);
            frame[8] = (unsigned char)(size >> 24);
            frame[9] = (unsigned char)(size >> 16);
            frame[10] = (unsigned char)(size >> 8);
            frame[11] = (unsigned char)size;
            if (size > 0) {
                memcpy(frame + 12, data, size);
            }
            r = csql__mdx_decode_response(frame, 12 + size, &status, msg, sizeof(msg));
            if (r != -1 && r != (int)(12 + size)) {
                abort();
            }
            free(frame);
        }
    }
    char *ua = malloc(size + 1);
    if (ua != NULL) {
        if (size > 0) {
            memcpy(ua, data, size);
        }
        ua[size] = '\0';
        unsigned char out[512];
        r = csql__mdx_encode_request(ua, 2, out, sizeof(out));
        if (r > (int)sizeof(out)) {
            abort();
        }
        free(ua);
    }
    return 0;
}
