/* csql-proxy --config-file: JSON and flat TOML into key/value text (config_file.h); YAML in config_yaml.c. */
#include "config_file.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "secret.h"

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int dup_key(const cf_entries *e, const char *key, size_t klen);

static int add(cf_entries *e, const char *key, size_t klen, const char *value, int line)
{
    cf_entry *v = realloc(e->v, (e->n + 1) * sizeof(*v));
    if (v == NULL) {
        return -1;
    }
    e->v = v;
    cf_entry *x = &v[e->n];
    x->key = strndup(key, klen);
    x->value = strdup(value);
    x->line = line;
    if (x->key == NULL || x->value == NULL) {
        free(x->key);
        free(x->value);
        return -1;
    }
    /* Keys are flag names; '_' is accepted for '-'. */
    for (char *p = x->key; *p != '\0'; p++) {
        if (*p == '_') {
            *p = '-';
        }
    }
    e->n++;
    return 0;
}

static int dup_key(const cf_entries *e, const char *key, size_t klen)
{
    for (size_t i = 0; i < e->n; i++) {
        size_t n = strlen(e->v[i].key);
        if (n == klen) {
            int same = 1;
            for (size_t j = 0; j < n && same; j++) {
                char c = key[j] == '_' ? '-' : key[j];
                same = e->v[i].key[j] == c;
            }
            if (same) {
                return 1;
            }
        }
    }
    return 0;
}

int cf_add(cf_entries *e, const char *key, size_t klen, const char *value, int line)
{
    if (dup_key(e, key, klen)) {
        return 1;
    }
    return add(e, key, klen, value, line);
}

/* ---- JSON ---- */

static int parse_json(const char *path, const char *text, size_t len, cf_entries *out, char *err,
                      size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        return fail(err, errlen, "config file %s: line %d: %s", path, je.line, je.text);
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = fail(err, errlen, "config file %s: the top level must be a JSON object", path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        char buf[32];
        const char *text_val;
        if (json_is_string(val)) {
            text_val = json_string_value(val);
        } else if (json_is_boolean(val)) {
            text_val = json_is_true(val) ? "true" : "false";
        } else if (json_is_integer(val)) {
            snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(val));
            text_val = buf;
        } else {
            rc = fail(err, errlen,
                      "config file %s: \"%s\" must be a string, a boolean or an integer", path,
                      key);
            goto out;
        }
        if (json_is_string(val) && strlen(text_val) != json_string_length(val)) {
            rc = fail(err, errlen, "config file %s: \"%s\" holds a NUL character", path, key);
            goto out;
        }
        if (dup_key(out, key, strlen(key))) {
            rc = fail(err, errlen, "config file %s: \"%s\" is set twice", path, key);
            goto out;
        }
        if (add(out, key, strlen(key), text_val, 0) != 0) {
            rc = fail(err, errlen, "config file %s: out of memory", path);
            goto out;
        }
    }
out:
    json_decref(root);
    return rc;
}

/* ---- TOML (flat: key = "string" | 'literal' | true | false | integer) ---- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }
    return p;
}

static int is_bare_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* A basic string body from p (after the opening quote) to the closing quote; *pp after it. */
static int toml_basic_string(const char **pp, const char *end, char *buf, size_t cap)
{
    const char *p = *pp;
    size_t o = 0;
    while (p < end && *p != '"') {
        char c = *p++;
        if (c == '\\') {
            if (p >= end) {
                return -1;
            }
            char e = *p++;
            switch (e) {
            case '"': c = '"'; break;
            case '\\': c = '\\'; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            default: return -1; /* \uXXXX and friends: not needed for flag values */
            }
        } else if (c == '\0') {
            return -1;
        }
        if (o + 1 >= cap) {
            return -1;
        }
        buf[o++] = c;
    }
    if (p >= end) {
        return -1;
    }
    buf[o] = '\0';
    *pp = p + 1;
    return 0;
}

static int parse_toml(const char *path, const char *text, size_t len, cf_entries *out, char *err,
                      size_t errlen)
{
    const char *p = text, *end = text + len;
    int line = 0;
    char *value = malloc(len + 1);
    if (value == NULL) {
        return fail(err, errlen, "config file %s: out of memory", path);
    }
    int rc = 0;
    while (p < end) {
        line++;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL) {
            eol = end;
        }
        const char *q = skip_ws(p, eol);
        if (q == eol || *q == '#' || (*q == '\r' && q + 1 == eol)) {
            p = eol + (eol < end);
            continue;
        }
        if (*q == '[') {
            rc = fail(err, errlen,
                      "config file %s: line %d: tables are not supported (keys are flag names at "
                      "the top level)",
                      path, line);
            goto out;
        }
        const char *k = q;
        while (q < eol && is_bare_key_char(*q)) {
            q++;
        }
        size_t klen = (size_t)(q - k);
        q = skip_ws(q, eol);
        if (klen == 0 || q >= eol || *q != '=') {
            rc = fail(err, errlen, "config file %s: line %d: expected key = value", path, line);
            goto out;
        }
        q = skip_ws(q + 1, eol);
        if (q < eol && *q == '"') {
            q++;
            if (toml_basic_string(&q, eol, value, len + 1) != 0) {
                rc = fail(err, errlen, "config file %s: line %d: bad or unterminated string", path,
                          line);
                goto out;
            }
        } else if (q < eol && *q == '\'') {
            const char *s = ++q;
            while (q < eol && *q != '\'') {
                q++;
            }
            if (q >= eol) {
                rc = fail(err, errlen, "config file %s: line %d: unterminated string", path, line);
                goto out;
            }
            memcpy(value, s, (size_t)(q - s));
            value[q - s] = '\0';
            q++;
        } else {
            const char *s = q;
            while (q < eol && *q != ' ' && *q != '\t' && *q != '#' && *q != '\r') {
                q++;
            }
            memcpy(value, s, (size_t)(q - s));
            value[q - s] = '\0';
            if (value[0] == '\0') {
                rc = fail(err, errlen, "config file %s: line %d: missing value", path, line);
                goto out;
            }
        }
        q = skip_ws(q, eol);
        if (q < eol && *q != '#' && !(*q == '\r' && q + 1 == eol)) {
            rc = fail(err, errlen, "config file %s: line %d: unexpected text after the value",
                      path, line);
            goto out;
        }
        if (dup_key(out, k, klen)) {
            rc = fail(err, errlen, "config file %s: line %d: \"%.*s\" is set twice", path, line,
                      (int)klen, k);
            goto out;
        }
        if (add(out, k, klen, value, line) != 0) {
            rc = fail(err, errlen, "config file %s: out of memory", path);
            goto out;
        }
        p = eol + (eol < end);
    }
out:
    secret_wipe(value, len + 1);
    free(value);
    return rc;
}

int cf_parse(const char *path, const char *text, size_t len, int format, cf_entries *out,
             char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    int rc = format == CF_YAML   ? cf_parse_yaml(path, text, len, out, err, errlen)
             : format == CF_TOML ? parse_toml(path, text, len, out, err, errlen)
                                 : parse_json(path, text, len, out, err, errlen);
    if (rc != 0) {
        cf_entries_free(out);
    }
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int cf_load(const char *path, cf_entries *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    int format;
    if (ends_with(path, ".json")) {
        format = CF_JSON;
    } else if (ends_with(path, ".toml")) {
        format = CF_TOML;
    } else if (ends_with(path, ".yaml") || ends_with(path, ".yml")) {
        format = CF_YAML;
    } else {
        return fail(err, errlen, "config file %s: the name must end in .json, .toml, .yaml or .yml",
                    path);
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return fail(err, errlen, "config file %s: %s", path, strerrordesc_np(errno));
    }
    char *buf = malloc(CF_MAX_BYTES + 1);
    size_t n = 0;
    int rc = -1;
    if (buf == NULL) {
        fail(err, errlen, "config file %s: out of memory", path);
        goto out;
    }
    n = fread(buf, 1, CF_MAX_BYTES + 1, f);
    if (ferror(f)) {
        fail(err, errlen, "config file %s: read error", path);
        goto out;
    }
    if (n > CF_MAX_BYTES) {
        fail(err, errlen, "config file %s: larger than %d bytes", path, CF_MAX_BYTES);
        goto out;
    }
    buf[n] = '\0';
    rc = cf_parse(path, buf, n, format, out, err, errlen);
out:
    if (buf != NULL) {
        secret_wipe(buf, n);
    }
    free(buf);
    fclose(f);
    return rc;
}

const cf_entry *cf_get(const cf_entries *e, const char *key)
{
    for (size_t i = 0; i < e->n; i++) {
        if (strcmp(e->v[i].key, key) == 0) {
            return &e->v[i];
        }
    }
    return NULL;
}

void cf_entries_free(cf_entries *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].key);
        secret_free(e->v[i].value);
    }
    free(e->v);
    e->v = NULL;
    e->n = 0;
}
