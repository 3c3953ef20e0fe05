/* Base64 (RFC 4648 §4) and base64url without padding (§5), by hand over bounded buffers. */
#include "util/b64.h"

#include <stdint.h>
#include <stdlib.h>

static const char std_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *csql__b64_encode(const unsigned char *in, size_t len, int url)
{
    const char *alpha = url ? url_alpha : std_alpha;
    if (len > (SIZE_MAX - 4) / 4 * 3) {
        return NULL;
    }
    size_t cap = (len + 2) / 3 * 4 + 1;
    char *out = malloc(cap);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        out[o++] = alpha[v & 63];
    }
    size_t rest = len - i;
    if (rest > 0) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (rest == 2) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        if (rest == 2) {
            out[o++] = alpha[v >> 6 & 63];
        } else if (!url) {
            out[o++] = '=';
        }
        if (!url) {
            out[o++] = '=';
        }
    }
    out[o] = '\0';
    return out;
}

/* Value of one character in either alphabet, or -1. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+' || c == '-') {
        return 62;
    }
    if (c == '/' || c == '_') {
        return 63;
    }
    return -1;
}

int csql__b64_decode(const char *in, size_t len, unsigned char **out, size_t *out_len)
{
    if (in == NULL || out == NULL || out_len == NULL) {
        return -1;
    }
    /* Padding is optional, but if present it must complete the last quantum. */
    size_t data_len = len;
    size_t pad = 0;
    while (data_len > 0 && in[data_len - 1] == '=' && pad < 2) {
        data_len--;
        pad++;
    }
    if (pad > 0 && len % 4 != 0) {
        return -1;
    }
    if (data_len % 4 == 1) {
        return -1;
    }
    unsigned char *buf = malloc(data_len / 4 * 3 + 3);
    if (buf == NULL) {
        return -1;
    }
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < data_len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0) {
            free(buf);
            return -1;
        }
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    /* Leftover bits of the final character must be zero (canonical encoding). */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = o;
    return 0;
}
