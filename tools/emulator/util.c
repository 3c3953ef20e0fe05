/* Small pure helpers for the emulator's control plane (see util.h). */
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int emu_parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    if (!s || !*s || (*s != '-' && (*s < '0' || *s > '9')))
        return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int emu_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

char *emu_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

int emu_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (cap == 0)
        return -1;
    if (n >= cap) {
        dst[0] = '\0';
        return -1;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int emu_url_decode(const char *in, size_t len, char *out, size_t cap, int plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)in[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        if (c == 0 || o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    if (cap == 0)
        return -1;
    out[o] = '\0';
    return 0;
}

int emu_form_get(const char *body, size_t len, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < len) {
        const char *amp = memchr(body + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - body) : len;
        const char *eq = memchr(body + i, '=', end - i);
        size_t name_end = eq ? (size_t)(eq - body) : end;
        char name[128];
        if (emu_url_decode(body + i, name_end - i, name, sizeof name, 1) == 0 &&
            strlen(name) == klen && memcmp(name, key, klen) == 0) {
            size_t vstart = eq ? name_end + 1 : end;
            return emu_url_decode(body + vstart, end - vstart, out, cap, 1) == 0 ? 1 : -1;
        }
        i = end + 1;
    }
    return 0;
}

int emu_kv_next(const char *s, size_t len, size_t *pos, char *key, size_t kcap, char *value,
                size_t vcap)
{
    size_t i = *pos;
    if (i >= len)
        return 0;
    const char *amp = memchr(s + i, '&', len - i);
    size_t end = amp ? (size_t)(amp - s) : len;
    const char *eq = memchr(s + i, '=', end - i);
    *pos = end + 1;
    if (!eq)
        return -1;
    size_t klen = (size_t)(eq - s) - i;
    if (emu_url_decode(s + i, klen, key, kcap, 0) != 0 ||
        emu_url_decode(eq + 1, end - i - klen - 1, value, vcap, 0) != 0)
        return -1;
    return 1;
}

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int emu_b64url_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
    size_t need = (len / 3) * 4 + (len % 3 ? len % 3 + 1 : 0);
    if (need + 1 > cap)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = B64URL[(v >> 18) & 63];
        out[o++] = B64URL[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = B64URL[(v >> 6) & 63];
        if (i + 2 < len)
            out[o++] = B64URL[v & 63];
    }
    out[o] = '\0';
    return (int)o;
}

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long emu_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    /* Leftover bits must be zero, or the text is not canonical base64url. */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)o;
}

void emu_rfc3339(time_t t, char *out, size_t cap)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
