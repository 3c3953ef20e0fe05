/*
 * csql-proxy: parsers for the values of flags, environment variables, config
 * file entries and query parameters, with the Auth Proxy's spellings. Pure
 * functions: they set *out only on success and return 0, else -1.
 */
#ifndef CSQL_PROXY_VALUES_H
#define CSQL_PROXY_VALUES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Go's strconv.ParseBool: 1 t T TRUE true True / 0 f F FALSE false False. */
int pv_bool(const char *s, bool *out);

/* A query parameter boolean: "", true, t (any case) => true; false, f (any case) => false. */
int pv_query_bool(const char *s, bool *out);

/* A decimal TCP port 0..65535 (no sign, no spaces). */
int pv_port(const char *s, int *out);

/* A decimal unsigned integer that fits in 64 bits. */
int pv_uint64(const char *s, uint64_t *out);

/*
 * A Go duration ("0", "30s", "1m30s", "1.5h", "500ms", "250us"; units ns us
 * µs ms s m h; no sign) rounded up to whole milliseconds, at most 7 days.
 */
int pv_duration_ms(const char *s, uint64_t *out);

/* An IPv4 or IPv6 literal (what Go's net.ParseIP accepts, without zones). */
bool pv_is_ip(const char *s);

/*
 * Percent-decode a query component of `len` bytes ('+' is a space, as Go's
 * url.ParseQuery) into a new NUL-terminated string. NULL on a bad escape, an
 * embedded NUL or no memory.
 */
char *pv_query_unescape(const char *s, size_t len);

#endif
