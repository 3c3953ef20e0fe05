/*
 * The few database protocol messages the server-side proxy reads or writes
 * for the automatic IAM authn check: PostgreSQL's startup packet and
 * ErrorResponse; MySQL's packet framing, greeting, HandshakeResponse and ERR
 * packet. Pure functions over bounded buffers.
 */
#include "data_plane.h"

#include <stdio.h>
#include <string.h>

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static emu_parse_rc bad(char *err, size_t errlen, const char *proto, const char *why)
{
    snprintf(err, errlen, "malformed %s: %s", proto, why);
    return EMU_PARSE_BAD;
}

/* ---------------- PostgreSQL ---------------- */

/* The key/value list of a StartupMessage: p[0..n) ends with the list terminator. */
static emu_parse_rc pg_parse_params(const uint8_t *p, size_t n, emu_pg_startup *out, char *err,
                                    size_t errlen)
{
    size_t pos = 0;
    /* Each pass consumes at least two bytes of p, so n bounds the loop. */
    while (pos < n) {
        const uint8_t *key = p + pos;
        const uint8_t *kend = memchr(key, '\0', n - pos);
        if (kend == NULL) {
            return bad(err, errlen, "startup packet", "unterminated parameter name");
        }
        if (kend == key) {
            if (pos + 1 != n) {
                return bad(err, errlen, "startup packet", "bytes after the parameter list");
            }
            return EMU_PARSE_OK;
        }
        pos = (size_t)(kend - p) + 1;
        const uint8_t *val = p + pos;
        const uint8_t *vend = pos < n ? memchr(val, '\0', n - pos) : NULL;
        if (vend == NULL) {
            return bad(err, errlen, "startup packet", "unterminated parameter value");
        }
        size_t vlen = (size_t)(vend - val);
        if (strcmp((const char *)key, "user") == 0) {
            if (vlen >= sizeof(out->user)) {
                return bad(err, errlen, "startup packet", "user name too long");
            }
            memcpy(out->user, val, vlen + 1);
        }
        pos += vlen + 1;
    }
    return bad(err, errlen, "startup packet", "missing parameter list terminator");
}

emu_parse_rc emu_pg_startup_parse(const uint8_t *p, size_t n, emu_pg_startup *out, char *err,
                                  size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (n < 4) {
        return EMU_PARSE_MORE;
    }
    uint32_t len = be32(p);
    if (len < 8 || len > EMU_PG_STARTUP_MAX) {
        snprintf(err, errlen, "malformed startup packet: length %u outside 8..%d", len,
                 EMU_PG_STARTUP_MAX);
        return EMU_PARSE_BAD;
    }
    if (n < 8) {
        return EMU_PARSE_MORE;
    }
    uint32_t code = be32(p + 4);
    out->length = len;
    if (code == EMU_PG_CANCEL_CODE || code == EMU_PG_SSL_CODE || code == EMU_PG_GSSENC_CODE) {
        uint32_t want = code == EMU_PG_CANCEL_CODE ? 16 : 8;
        if (len != want) {
            return bad(err, errlen, "startup packet", "wrong length for a request code");
        }
        if (n < len) {
            return EMU_PARSE_MORE;
        }
        out->kind = code == EMU_PG_CANCEL_CODE ? EMU_PG_CANCEL
                    : code == EMU_PG_SSL_CODE  ? EMU_PG_SSLREQ
                                               : EMU_PG_GSSENCREQ;
        return EMU_PARSE_OK;
    }
    if (code >> 16 != 3) {
        snprintf(err, errlen, "unsupported frontend protocol %u.%u", code >> 16, code & 0xffff);
        return EMU_PARSE_BAD;
    }
    if (n < len) {
        return EMU_PARSE_MORE;
    }
    out->kind = EMU_PG_STARTUP;
    return pg_parse_params(p + 8, len - 8, out, err, errlen);
}

static size_t put_field(uint8_t *out, size_t pos, size_t cap, char tag, const char *s)
{
    size_t n = strlen(s);
    if (pos == 0 || pos + 1 + n + 1 > cap) {
        return 0;
    }
    out[pos] = (uint8_t)tag;
    memcpy(out + pos + 1, s, n + 1);
    return pos + 1 + n + 1;
}

size_t emu_pg_error_response(const char *sqlstate, const char *message, uint8_t *out, size_t cap)
{
    if (cap < 5) {
        return 0;
    }
    size_t pos = 5;
    pos = put_field(out, pos, cap, 'S', "FATAL");
    pos = put_field(out, pos, cap, 'V', "FATAL");
    pos = put_field(out, pos, cap, 'C', sqlstate);
    pos = put_field(out, pos, cap, 'M', message);
    if (pos == 0 || pos + 1 > cap) {
        return 0;
    }
    out[pos++] = '\0';
    uint32_t len = (uint32_t)(pos - 1);
    out[0] = 'E';
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
    return pos;
}

/* ---------------- MySQL ---------------- */

emu_parse_rc emu_mysql_packet(const uint8_t *p, size_t n, size_t max_payload, size_t *payload_len,
                              uint8_t *seq)
{
    if (n < 4) {
        return EMU_PARSE_MORE;
    }
    size_t len = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16;
    if (len > max_payload) {
        return EMU_PARSE_BAD;
    }
    if (n - 4 < len) {
        return EMU_PARSE_MORE;
    }
    *payload_len = len;
    *seq = p[3];
    return EMU_PARSE_OK;
}

emu_parse_rc emu_mysql_greeting_clear_ssl(uint8_t *payload, size_t len)
{
    if (len >= 1 && payload[0] == 0xff) {
        return EMU_PARSE_NOT;
    }
    if (len < 2 || payload[0] != 10) {
        return EMU_PARSE_BAD;
    }
    const uint8_t *vend = memchr(payload + 1, '\0', len - 1);
    if (vend == NULL) {
        return EMU_PARSE_BAD;
    }
    /* version NUL, connection id (4), auth-plugin-data part 1 (8), filler (1). */
    size_t cap_off = (size_t)(vend - payload) + 1 + 4 + 8 + 1;
    if (cap_off + 2 > len) {
        return EMU_PARSE_BAD;
    }
    payload[cap_off + 1] &= (uint8_t)~(EMU_MYSQL_CLIENT_SSL >> 8);
    return EMU_PARSE_OK;
}

emu_parse_rc emu_mysql_response_parse(const uint8_t *payload, size_t len, emu_mysql_response *out,
                                      char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    size_t user_off;
    if (len < 2) {
        return bad(err, errlen, "handshake response", "too short");
    }
    out->caps = (uint32_t)payload[0] | (uint32_t)payload[1] << 8;
    if (out->caps & EMU_MYSQL_CLIENT_PROTOCOL_41) {
        /* caps (4), max packet (4), charset (1), filler (23), user NUL. */
        if (len < 32) {
            return bad(err, errlen, "handshake response", "too short");
        }
        out->caps = le32(payload);
        user_off = 32;
    } else {
        /* HandshakeResponse320: caps (2), max packet (3), user NUL. */
        if (len < 5) {
            return bad(err, errlen, "handshake response", "too short");
        }
        user_off = 5;
    }
    if (len == user_off && (out->caps & EMU_MYSQL_CLIENT_SSL)) {
        out->ssl_request = true;
        return EMU_PARSE_OK;
    }
    const uint8_t *uend = user_off < len ? memchr(payload + user_off, '\0', len - user_off) : NULL;
    if (uend == NULL) {
        return bad(err, errlen, "handshake response", "unterminated user name");
    }
    size_t ulen = (size_t)(uend - (payload + user_off));
    if (ulen >= sizeof(out->user)) {
        return bad(err, errlen, "handshake response", "user name too long");
    }
    memcpy(out->user, payload + user_off, ulen + 1);
    return EMU_PARSE_OK;
}

size_t emu_mysql_err_packet(uint8_t seq, uint16_t code, const char *sqlstate, const char *message,
                            uint8_t *out, size_t cap)
{
    size_t mlen = strlen(message);
    size_t payload = 1 + 2 + 1 + 5 + mlen;
    if (strlen(sqlstate) != 5 || 4 + payload > cap || payload > 0xffffff) {
        return 0;
    }
    out[0] = (uint8_t)payload;
    out[1] = (uint8_t)(payload >> 8);
    out[2] = (uint8_t)(payload >> 16);
    out[3] = seq;
    out[4] = 0xff;
    out[5] = (uint8_t)code;
    out[6] = (uint8_t)(code >> 8);
    out[7] = '#';
    memcpy(out + 8, sqlstate, 5);
    memcpy(out + 13, message, mlen);
    return 4 + payload;
}
