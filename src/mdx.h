/*
 * Internal: metadata exchange frames (REFERENCE §7). Pure encoders/decoders.
 * Frame: "CSQLMDEX" + uint32 big-endian length + protobuf message.
 */
#ifndef CSQL_SRC_MDX_H
#define CSQL_SRC_MDX_H

#include <stddef.h>
#include <stdint.h>

#define CSQL__MDX_MAGIC "CSQLMDEX"
#define CSQL__MDX_MAX_BODY 16384

enum { CSQL__MDX_PROTO_TCP = 1, CSQL__MDX_PROTO_TLS = 2, CSQL__MDX_PROTO_UDS = 3 };
enum { CSQL__MDX_OK = 1, CSQL__MDX_ERROR = 2 };

/* Encode a request {1: user_agent, 2: protocol}. Writes into buf; returns bytes or -1 if it does not fit. */
int csql__mdx_encode_request(const char *user_agent, int protocol, unsigned char *buf, size_t len);

/*
 * Decode a response from `in`. Returns bytes consumed (> 0) with *status and
 * message (NUL-terminated, truncated to msglen) filled; 0 if more bytes are
 * needed; -1 if malformed (bad magic, length over CSQL__MDX_MAX_BODY, bad protobuf).
 */
int csql__mdx_decode_response(const unsigned char *in, size_t len, int *status, char *msg,
                              size_t msglen);

#endif
