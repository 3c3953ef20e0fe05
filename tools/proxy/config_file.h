/*
 * csql-proxy --config-file: a flat JSON object, TOML document or YAML mapping whose keys are
 * flag names (and instance-connection-name[-N]). Values are kept as text, the
 * way they would be typed on the command line, so one parser checks them all.
 */
#ifndef CSQL_PROXY_CONFIG_FILE_H
#define CSQL_PROXY_CONFIG_FILE_H

#include <stddef.h>

typedef struct cf_entry {
    char *key;
    char *value;
    int line; /* 1-based, 0 if unknown */
} cf_entry;

typedef struct cf_entries {
    cf_entry *v;
    size_t n;
} cf_entries;

/* Files above this size are refused. */
#define CF_MAX_BYTES (1024 * 1024)

/* Syntaxes for cf_parse. */
enum { CF_JSON = 0, CF_TOML = 1, CF_YAML = 2 };

/*
 * Read `path` (by extension: .json, .toml, .yaml or .yml) into *out. On
 * failure return -1 with one line naming the file and the problem in err.
 */
int cf_load(const char *path, cf_entries *out, char *err, size_t errlen);

/* Parse text already in memory. `format` is CF_JSON, CF_TOML or CF_YAML; `path` is for messages. */
int cf_parse(const char *path, const char *text, size_t len, int format, cf_entries *out,
             char *err, size_t errlen);

/* YAML (config_yaml.c): one document, a mapping of flag names to scalars. */
int cf_parse_yaml(const char *path, const char *text, size_t len, cf_entries *out, char *err,
                  size_t errlen);

/* Append key (with '_' read as '-') = value; 1 if the key is already there, -1 out of memory. */
int cf_add(cf_entries *e, const char *key, size_t klen, const char *value, int line);

/* The entry for `key`, or NULL. */
const cf_entry *cf_get(const cf_entries *e, const char *key);

/* Free (values wiped: they may hold tokens). */
void cf_entries_free(cf_entries *e);

#endif
