/* csql-proxy: value parsers (values.h). */
#include "values.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int pv_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const no[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

int pv_query_bool(const char *s, bool *out)
{
    if (s[0] == '\0' || strcasecmp(s, "true") == 0 || strcasecmp(s, "t") == 0) {
        *out = true;
        return 0;
    }
    if (strcasecmp(s, "false") == 0 || strcasecmp(s, "f") == 0) {
        *out = false;
        return 0;
    }
    return -1;
}

int pv_uint64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (s[0] == '\0') {
        return -1;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return -1;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int pv_port(const char *s, int *out)
{
    uint64_t v;
    if (strlen(s) > 5 || pv_uint64(s, &v) != 0 || v > 65535) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Nanoseconds per unit; the longest unit names first so "ms" is not read as "m". */
typedef struct unit {
    const char *name;
    uint64_t ns;
} unit;

static const unit units[] = {
    {"ns", 1},
    {"us", 1000},
    {"\xc2\xb5s", 1000}, /* U+00B5 micro sign */
    {"\xce\xbcs", 1000}, /* U+03BC Greek small mu */
    {"ms", 1000000},
    {"s", 1000000000ull},
    {"m", 60000000000ull},
    {"h", 3600000000000ull},
};

#define DURATION_MAX_NS (7ull * 24 * 3600 * 1000000000ull)

/* One "<number><unit>" term at *p; adds its nanoseconds to *total. */
static int duration_term(const char **p, uint64_t *total)
{
    const char *s = *p;
    uint64_t whole = 0, frac = 0, frac_scale = 1;
    bool digits = false;
    while (isdigit((unsigned char)*s)) {
        if (whole > DURATION_MAX_NS) {
            return -1;
        }
        whole = whole * 10 + (uint64_t)(*s++ - '0');
        digits = true;
    }
    if (*s == '.') {
        s++;
        while (isdigit((unsigned char)*s)) {
            if (frac_scale < 1000000000000ull) { /* more digits than ns need are dropped */
                frac = frac * 10 + (uint64_t)(*s - '0');
                frac_scale *= 10;
            }
            s++;
            digits = true;
        }
    }
    if (!digits) {
        return -1;
    }
    const unit *u = NULL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        size_t n = strlen(units[i].name);
        if (strncmp(s, units[i].name, n) == 0 && (u == NULL || n > strlen(u->name))) {
            u = &units[i];
        }
    }
    if (u == NULL) {
        return -1;
    }
    s += strlen(u->name);
    if (whole > DURATION_MAX_NS / u->ns) {
        return -1;
    }
    /* frac/frac_scale of a unit, rounded up to the nanosecond (frac_scale <= 1e12, ns <= 3.6e12). */
    long double part = (long double)frac * (long double)u->ns / (long double)frac_scale;
    uint64_t add = whole * u->ns + (uint64_t)part + ((long double)(uint64_t)part < part ? 1 : 0);
    if (add > DURATION_MAX_NS || *total > DURATION_MAX_NS - add) {
        return -1;
    }
    *total += add;
    *p = s;
    return 0;
}

int pv_duration_ms(const char *s, uint64_t *out)
{
    if (strcmp(s, "0") == 0) {
        *out = 0;
        return 0;
    }
    if (s[0] == '\0') {
        return -1;
    }
    uint64_t ns = 0;
    const char *p = s;
    while (*p != '\0') {
        if (duration_term(&p, &ns) != 0) {
            return -1;
        }
    }
    *out = ns / 1000000 + (ns % 1000000 != 0 ? 1 : 0);
    return 0;
}

bool pv_is_ip(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

char *pv_query_unescape(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (len - i < 3) {
                free(out);
                return NULL;
            }
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                free(out);
                return NULL;
            }
            c = (char)(h * 16 + l);
            i += 2;
        } else if (c == '\0') {
            free(out);
            return NULL;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}
