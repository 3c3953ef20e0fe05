/*
 * csql-proxy --config-file: YAML (config_file.h), with libyaml's event parser.
 * Like the Auth Proxy's YAML files: one document, a mapping of flag names to
 * scalars. Scalars stay text, as typed on the command line, so the flag
 * parsers check them (a bad boolean names the file and the key); nesting,
 * aliases, null values and a second document are errors naming the line.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "config_file.h"
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

static int line_of(const yaml_event_t *ev)
{
    return (int)ev->start_mark.line + 1;
}

/* A plain `~`, `null` or nothing is YAML's null: a key without a value. */
static int is_null(const yaml_event_t *ev)
{
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return 0;
    }
    const char *v = (const char *)ev->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcasecmp(v, "null") == 0;
}

static const char *kind_of(yaml_event_type_t t)
{
    switch (t) {
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_SEQUENCE_START_EVENT: return "a list";
    case YAML_ALIAS_EVENT: return "an alias";
    default: return "not a scalar";
    }
}

typedef struct yparse {
    yaml_parser_t parser;
    const char *path;
    char *err;
    size_t errlen;
} yparse;

/* The next event into *ev; on a syntax error, the message with its line. */
static int next(yparse *y, yaml_event_t *ev)
{
    if (yaml_parser_parse(&y->parser, ev)) {
        return 0;
    }
    const char *problem = y->parser.problem ? y->parser.problem : "syntax error";
    const char *context = y->parser.context ? y->parser.context : NULL;
    return fail(y->err, y->errlen, "config file %s: line %d: %s%s%s", y->path,
                (int)y->parser.problem_mark.line + 1, context ? context : "", context ? ": " : "",
                problem);
}

/* After MAPPING_START: key/value pairs until MAPPING_END. */
static int read_mapping(yparse *y, cf_entries *out)
{
    for (;;) {
        yaml_event_t k, v;
        if (next(y, &k) != 0) {
            return -1;
        }
        if (k.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&k);
            return 0;
        }
        if (k.type != YAML_SCALAR_EVENT || is_null(&k)) {
            int line = line_of(&k);
            yaml_event_delete(&k);
            return fail(y->err, y->errlen, "config file %s: line %d: a key must be a flag name",
                        y->path, line);
        }
        const char *key = (const char *)k.data.scalar.value;
        size_t klen = k.data.scalar.length;
        if (strlen(key) != klen) {
            int line = line_of(&k);
            yaml_event_delete(&k);
            return fail(y->err, y->errlen, "config file %s: line %d: a key holds a NUL character",
                        y->path, line);
        }
        if (next(y, &v) != 0) {
            yaml_event_delete(&k);
            return -1;
        }
        int rc = 0;
        int line = line_of(&k); /* where the key is: a block value starts on a later line */
        if (v.type != YAML_SCALAR_EVENT) {
            rc = fail(y->err, y->errlen,
                      "config file %s: line %d: \"%s\" is %s; values are strings, booleans or "
                      "integers",
                      y->path, line, key, kind_of(v.type));
        } else if (is_null(&v)) {
            rc = fail(y->err, y->errlen, "config file %s: line %d: \"%s\" has no value", y->path,
                      line, key);
        } else if (strlen((const char *)v.data.scalar.value) != v.data.scalar.length) {
            rc = fail(y->err, y->errlen, "config file %s: line %d: \"%s\" holds a NUL character",
                      y->path, line, key);
        } else if ((rc = cf_add(out, key, klen, (const char *)v.data.scalar.value, line)) > 0) {
            rc = fail(y->err, y->errlen, "config file %s: line %d: \"%s\" is set twice", y->path,
                      line, key);
        } else if (rc < 0) {
            rc = fail(y->err, y->errlen, "config file %s: out of memory", y->path);
        }
        if (v.type == YAML_SCALAR_EVENT) {
            secret_wipe(v.data.scalar.value, v.data.scalar.length); /* may be a token */
        }
        yaml_event_delete(&k);
        yaml_event_delete(&v);
        if (rc != 0) {
            return rc;
        }
    }
}

int cf_parse_yaml(const char *path, const char *text, size_t len, cf_entries *out, char *err,
                  size_t errlen)
{
    yparse y = {.path = path, .err = err, .errlen = errlen};
    if (!yaml_parser_initialize(&y.parser)) {
        return fail(err, errlen, "config file %s: out of memory", path);
    }
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
    int rc = 0;
    int documents = 0;
    for (;;) {
        yaml_event_t ev;
        if (next(&y, &ev) != 0) {
            rc = -1;
            break;
        }
        yaml_event_type_t t = ev.type;
        int line = line_of(&ev);
        yaml_event_delete(&ev);
        if (t == YAML_STREAM_END_EVENT) {
            break;
        }
        if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_END_EVENT) {
            continue;
        }
        if (t == YAML_DOCUMENT_START_EVENT) {
            if (++documents > 1) {
                rc = fail(err, errlen, "config file %s: line %d: only one YAML document is read",
                          path, line);
                break;
            }
            continue;
        }
        if (t != YAML_MAPPING_START_EVENT) {
            rc = fail(err, errlen,
                      "config file %s: line %d: the top level must be a mapping of flag names to "
                      "values",
                      path, line);
            break;
        }
        if (read_mapping(&y, out) != 0) {
            rc = -1;
            break;
        }
    }
    yaml_parser_delete(&y.parser);
    return rc;
}
