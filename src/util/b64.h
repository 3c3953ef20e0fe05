/* Internal: base64 and base64url (no padding) encoding/decoding over bounded buffers. */
#ifndef CSQL_SRC_UTIL_B64_H
#define CSQL_SRC_UTIL_B64_H

#include <stddef.h>

/* Encode; returns malloc'd NUL-terminated text or NULL on OOM. url=1: base64url without padding. */
char *csql__b64_encode(const unsigned char *in, size_t len, int url);
/* Decode standard or url alphabet, padding optional; *out malloc'd. 0, or -1 on bad input/OOM. */
int csql__b64_decode(const char *in, size_t len, unsigned char **out, size_t *out_len);

#endif
