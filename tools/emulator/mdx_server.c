/*
 * Metadata exchange (MDX, REFERENCE §7), server side: recognise the
 * "CSQLMDEX" + uint32 big-endian length + protobuf request a client may send
 * before its database bytes, and encode the response. The protobufs have two
 * fields each, so they are decoded and encoded by hand.
 */
#include "data_plane.h"

#include <stdio.h>
#include <string.h>

/* Reads one varint (at most 10 bytes). 0 on success. */
static int read_varint(const uint8_t *p, size_t n, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (*pos >= n) {
            return -1;
        }
        uint8_t b = p[(*pos)++];
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static emu_parse_rc bad(char *err, size_t errlen, const char *why)
{
    snprintf(err, errlen, "malformed metadata exchange request: %s", why);
    return EMU_PARSE_BAD;
}

/* Decodes MetadataExchangeRequest{1: string user_agent, 2: enum client_protocol_type}. */
static emu_parse_rc parse_body(const uint8_t *p, size_t n, emu_mdx_request *req, char *err,
                               size_t errlen)
{
    size_t pos = 0;
    /* Each iteration consumes at least one byte, so n bounds the loop. */
    while (pos < n) {
        uint64_t key, v;
        if (read_varint(p, n, &pos, &key) != 0) {
            return bad(err, errlen, "truncated field key");
        }
        uint64_t field = key >> 3, wt = key & 7;
        if (field == 0) {
            return bad(err, errlen, "field number 0");
        }
        if ((field == 1 && wt != 2) || (field == 2 && wt != 0)) {
            return bad(err, errlen, "field with the wrong wire type");
        }
        switch (wt) {
        case 0:
            if (read_varint(p, n, &pos, &v) != 0) {
                return bad(err, errlen, "truncated varint");
            }
            if (field == 2) {
                if (v > 1000) {
                    return bad(err, errlen, "client_protocol_type out of range");
                }
                req->protocol_type = (int)v;
            }
            break;
        case 1:
        case 5: {
            size_t w = wt == 1 ? 8 : 4;
            if (n - pos < w) {
                return bad(err, errlen, "truncated fixed-width field");
            }
            pos += w;
            break;
        }
        case 2:
            if (read_varint(p, n, &pos, &v) != 0 || v > n - pos) {
                return bad(err, errlen, "truncated length-delimited field");
            }
            if (field == 1) {
                size_t c = v < sizeof(req->user_agent) ? (size_t)v : sizeof(req->user_agent) - 1;
                memcpy(req->user_agent, p + pos, c);
                req->user_agent[c] = '\0';
                if (memchr(req->user_agent, '\0', c) != NULL) {
                    return bad(err, errlen, "NUL in user_agent");
                }
            }
            pos += (size_t)v;
            break;
        default:
            return bad(err, errlen, "unsupported wire type");
        }
    }
    return EMU_PARSE_OK;
}

emu_parse_rc emu_mdx_parse(const uint8_t *p, size_t n, emu_mdx_request *req, size_t *frame_len,
                           char *err, size_t errlen)
{
    size_t cmp = n < EMU_MDX_MAGIC_LEN ? n : EMU_MDX_MAGIC_LEN;
    if (memcmp(p, EMU_MDX_MAGIC, cmp) != 0) {
        return EMU_PARSE_NOT;
    }
    if (n < EMU_MDX_HEADER_LEN) {
        return EMU_PARSE_MORE;
    }
    uint32_t len = (uint32_t)p[8] << 24 | (uint32_t)p[9] << 16 | (uint32_t)p[10] << 8 | p[11];
    if (len > EMU_MDX_MAX_BODY) {
        snprintf(err, errlen, "metadata exchange request of %u bytes exceeds %d", len,
                 EMU_MDX_MAX_BODY);
        return EMU_PARSE_BAD;
    }
    if (n - EMU_MDX_HEADER_LEN < len) {
        return EMU_PARSE_MORE;
    }
    memset(req, 0, sizeof(*req));
    emu_parse_rc rc = parse_body(p + EMU_MDX_HEADER_LEN, len, req, err, errlen);
    if (rc == EMU_PARSE_OK) {
        *frame_len = EMU_MDX_HEADER_LEN + (size_t)len;
    }
    return rc;
}

size_t emu_mdx_encode_response(int status, const char *message, uint8_t *out, size_t cap)
{
    size_t mlen = (status != EMU_MDX_STATUS_OK && message) ? strlen(message) : 0;
    if (mlen > 127) {
        mlen = 127; /* keeps the length a one-byte varint */
    }
    size_t body = 2 + (mlen ? 2 + mlen : 0);
    size_t total = EMU_MDX_HEADER_LEN + body;
    if (total > cap || status < 0 || status > 127) {
        return 0;
    }
    memcpy(out, EMU_MDX_MAGIC, EMU_MDX_MAGIC_LEN);
    out[8] = 0;
    out[9] = 0;
    out[10] = 0;
    out[11] = (uint8_t)body;
    uint8_t *b = out + EMU_MDX_HEADER_LEN;
    b[0] = 0x08; /* field 1, varint */
    b[1] = (uint8_t)status;
    if (mlen) {
        b[2] = 0x12; /* field 2, length-delimited */
        b[3] = (uint8_t)mlen;
        memcpy(b + 4, message, mlen);
    }
    return total;
}
