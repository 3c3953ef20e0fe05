/*
 * Metadata exchange frames (REFERENCE §7): "CSQLMDEX" + uint32 BE length +
 * protobuf. The protobuf subset is written by hand: varints and
 * length-delimited fields, every read bounded by the frame.
 */
#include "mdx.h"

#include <limits.h>
#include <string.h>

#define MAGIC_LEN 8
#define HEADER_LEN 12
#define VARINT_MAX_BYTES 10

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

/* Append a varint; returns the new offset or 0 if it does not fit. */
static size_t put_varint(unsigned char *buf, size_t len, size_t off, uint64_t v)
{
    do {
        if (off >= len) {
            return 0;
        }
        unsigned char b = (unsigned char)(v & 0x7f);
        v >>= 7;
        buf[off++] = (unsigned char)(v ? (b | 0x80) : b);
    } while (v != 0);
    return off;
}

int csql__mdx_encode_request(const char *user_agent, int protocol, unsigned char *buf, size_t len)
{
    if (buf == NULL || protocol < 0 || len < HEADER_LEN) {
        return -1;
    }
    size_t ua_len = user_agent ? strnlen(user_agent, CSQL__MDX_MAX_BODY + 1) : 0;
    if (ua_len > CSQL__MDX_MAX_BODY) {
        return -1;
    }
    size_t off = HEADER_LEN;
    if (ua_len > 0) {
        off = put_varint(buf, len, off, (1u << 3) | WIRE_LEN);
        off = off ? put_varint(buf, len, off, ua_len) : 0;
        if (off == 0 || len - off < ua_len) {
            return -1;
        }
        memcpy(buf + off, user_agent, ua_len);
        off += ua_len;
    }
    off = put_varint(buf, len, off, (2u << 3) | WIRE_VARINT);
    off = off ? put_varint(buf, len, off, (uint64_t)protocol) : 0;
    if (off == 0) {
        return -1;
    }
    size_t body = off - HEADER_LEN;
    if (body > CSQL__MDX_MAX_BODY || off > INT_MAX) {
        return -1;
    }
    memcpy(buf, CSQL__MDX_MAGIC, MAGIC_LEN);
    buf[8] = (unsigned char)(body >> 24);
    buf[9] = (unsigned char)(body >> 16);
    buf[10] = (unsigned char)(body >> 8);
    buf[11] = (unsigned char)body;
    return (int)off;
}

/* Read a varint from [*p, end): 0 and *p advanced, or -1 if truncated or longer than 64 bits. */
static int get_varint(const unsigned char **p, const unsigned char *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < VARINT_MAX_BYTES; i++) {
        if (*p >= end) {
            return -1;
        }
        unsigned char b = *(*p)++;
        if (i == VARINT_MAX_BYTES - 1 && b > 1) {
            return -1; /* the tenth byte may only carry bit 63 */
        }
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Skip one field of wire type `wt`; 0 or -1 if malformed. */
static int skip_field(const unsigned char **p, const unsigned char *end, unsigned wt)
{
    uint64_t v;
    switch (wt) {
    case WIRE_VARINT:
        return get_varint(p, end, &v);
    case WIRE_I64:
        if (end - *p < 8) {
            return -1;
        }
        *p += 8;
        return 0;
    case WIRE_I32:
        if (end - *p < 4) {
            return -1;
        }
        *p += 4;
        return 0;
    case WIRE_LEN:
        if (get_varint(p, end, &v) != 0 || v > (uint64_t)(end - *p)) {
            return -1;
        }
        *p += v;
        return 0;
    default:
        return -1; /* groups (3, 4) and reserved types are not expected here */
    }
}

static int parse_body(const unsigned char *p, const unsigned char *end, int *status, char *msg,
                      size_t msglen)
{
    /* Every field consumes at least one byte, so the loop is bounded by the body length. */
    while (p < end) {
        uint64_t key;
        if (get_varint(&p, end, &key) != 0) {
            return -1;
        }
        uint64_t field = key >> 3;
        unsigned wt = (unsigned)(key & 7);
        if (field == 0) {
            return -1;
        }
        if (field == 1 && wt == WIRE_VARINT) {
            uint64_t v;
            if (get_varint(&p, end, &v) != 0 || v > INT_MAX) {
                return -1;
            }
            *status = (int)v;
        } else if (field == 2 && wt == WIRE_LEN) {
            uint64_t n;
            if (get_varint(&p, end, &n) != 0 || n > (uint64_t)(end - p)) {
                return -1;
            }
            if (msg != NULL && msglen > 0) {
                size_t copy = n < msglen - 1 ? (size_t)n : msglen - 1;
                memcpy(msg, p, copy);
                msg[copy] = '\0';
            }
            p += n;
        } else if (skip_field(&p, end, wt) != 0) {
            return -1;
        }
    }
    return 0;
}

int csql__mdx_decode_response(const unsigned char *in, size_t len, int *status, char *msg,
                              size_t msglen)
{
    if (in == NULL || status == NULL) {
        return -1;
    }
    /* Reject a wrong magic as soon as it shows, so a non-MDX peer fails fast. */
    size_t have = len < MAGIC_LEN ? len : MAGIC_LEN;
    if (memcmp(in, CSQL__MDX_MAGIC, have) != 0) {
        return -1;
    }
    if (len < HEADER_LEN) {
        return 0;
    }
    uint32_t body = (uint32_t)in[8] << 24 | (uint32_t)in[9] << 16 | (uint32_t)in[10] << 8 | in[11];
    if (body > CSQL__MDX_MAX_BODY) {
        return -1;
    }
    if (len - HEADER_LEN < body) {
        return 0;
    }
    *status = 0;
    if (msg != NULL && msglen > 0) {
        msg[0] = '\0';
    }
    if (parse_body(in + HEADER_LEN, in + HEADER_LEN + body, status, msg, msglen) != 0) {
        return -1;
    }
    return (int)(HEADER_LEN + body);
}
