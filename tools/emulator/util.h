/*
 * Small pure helpers shared by the emulator's control plane: bounded string
 * copies, URL and base64url decoding, RFC 3339 times. The emulator does not
 * reuse libcsql's src/util on purpose: it is the oracle the library is tested
 * against, and a bug shared by both sides would pass every test.
 */
#ifndef CSQL_EMULATOR_UTIL_H
#define CSQL_EMULATOR_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <time.h>

/* Strict decimal integer in [min, max] (no spaces, no sign but '-'); 0 or -1. */
int emu_parse_long(const char *s, long min, long max, long *out);

/* snprintf into err (NULL-safe); always returns -1 for `return emu_fail(...)`. */
int emu_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* strdup that tolerates NULL (returns NULL). */
char *emu_strdup(const char *s);

/* Copy src into dst[cap]; -1 (dst emptied) when it does not fit. */
int emu_copy(char *dst, size_t cap, const char *src);

/*
 * Percent-decode in[0..len) into out[cap], NUL-terminated. With plus_is_space
 * (form bodies) '+' becomes ' '. -1 on a bad escape, an embedded NUL or
 * overflow.
 */
int emu_url_decode(const char *in, size_t len, char *out, size_t cap, int plus_is_space);

/*
 * Find `key` in an application/x-www-form-urlencoded body (or query string)
 * and decode its value into out[cap]. 1 found, 0 absent, -1 malformed or too
 * long. Pairs scanned are bounded by the body length.
 */
int emu_form_get(const char *body, size_t len, const char *key, char *out, size_t cap);

/*
 * The next "key=value" pair of a spec string s[0..len) ('&'-separated, as in
 * instance specs and --fault) from *pos, percent-decoded into key[kcap] and
 * value[vcap]. *pos always moves past the pair, so s[old pos..new pos) names
 * it in messages. 1 for a pair, 0 at the end, -1 when the pair has no '=',
 * a bad escape, or does not fit.
 */
int emu_kv_next(const char *s, size_t len, size_t *pos, char *key, size_t kcap, char *value,
                size_t vcap);

/* base64url without padding; encode returns the length written (or -1). */
int emu_b64url_encode(const unsigned char *in, size_t len, char *out, size_t cap);
/* Decode base64url (padding optional) into out[cap]; length or -1. */
long emu_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/* "2024-05-01T12:00:00Z" into out[cap] (cap >= 21). */
void emu_rfc3339(time_t t, char *out, size_t cap);

#endif
