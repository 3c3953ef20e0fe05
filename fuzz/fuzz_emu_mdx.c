/*
 * libFuzzer target: the emulator's server-side MDX request parser
 * (emu_mdx_parse), and both MDX directions across the two implementations:
 * a request csql encodes must parse on the emulator with the same user agent
 * and protocol, and a response the emulator encodes must decode in csql with
 * the same status and message.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data_plane.h"
#include "mdx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse_checked(const uint8_t *data, size_t size)
{
    emu_mdx_request req;
    size_t frame_len = 0;
    char err[128];
    err[0] = '\0';
    emu_parse_rc rc = emu_mdx_parse(data, size, &req, &frame_len, err, sizeof(err));
    if (rc == EMU_PARSE_OK) {
        if (frame_len < EMU_MDX_HEADER_LEN || frame_len > size ||
            memchr(req.user_agent, '\0', sizeof(req.user_agent)) == NULL) {
            abort();
        }
        /* Every proper prefix of a whole frame asks for more. */
        for (size_t n = 0; n < frame_len; n++) {
            if (emu_mdx_parse(data, n, &req, &frame_len, err, sizeof(err)) != EMU_PARSE_MORE) {
                abort();
            }
        }
    } else if (rc == EMU_PARSE_BAD) {
        if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0') {
            abort();
        }
    } else if (rc != EMU_PARSE_MORE && rc != EMU_PARSE_NOT) {
        abort();
    }
}

/* csql's request encoder, then the emulator's parser. */
static void request_round_trip(const uint8_t *data, size_t size)
{
    char ua[200];
    size_t n = size < sizeof(ua) - 1 ? size : sizeof(ua) - 1;
    memcpy(ua, data, n);
    ua[n] = '\0';
    int proto = 1 + (int)(size % 3);
    unsigned char frame[512];
    int len = csql__mdx_encode_request(ua, proto, frame, sizeof(frame));
    if (len <= 0) {
        abort();
    }
    emu_mdx_request req;
    size_t frame_len = 0;
    char err[128];
    if (emu_mdx_parse(frame, (size_t)len, &req, &frame_len, err, sizeof(err)) != EMU_PARSE_OK ||
        frame_len != (size_t)len || req.protocol_type != proto || strcmp(req.user_agent, ua) != 0) {
        abort();
    }
}

/* The emulator's response encoder, then csql's decoder. */
static void response_round_trip(const uint8_t *data, size_t size)
{
    char msg[160];
    size_t n = size < sizeof(msg) - 1 ? size : sizeof(msg) - 1;
    memcpy(msg, data, n);
    msg[n] = '\0';
    int status = size > 0 && (data[0] & 1) ? EMU_MDX_STATUS_OK : EMU_MDX_STATUS_ERROR;
    uint8_t frame[256];
    size_t len = emu_mdx_encode_response(status, msg, frame, sizeof(frame));
    if (len == 0) {
        abort();
    }
    int got = 0;
    char out[200];
    if (csql__mdx_decode_response(frame, len, &got, out, sizeof(out)) != (int)len || got != status) {
        abort();
    }
    /* The emulator sends at most 127 message bytes, and none for OK. */
    size_t want = status == EMU_MDX_STATUS_OK ? 0 : (strlen(msg) < 127 ? strlen(msg) : 127);
    if (strlen(out) > want || strncmp(out, msg, strlen(out)) != 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parse_checked(data, size);
    request_round_trip(data, size);
    response_round_trip(data, size);
    return 0;
}
