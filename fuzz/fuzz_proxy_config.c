/*
 * libFuzzer target: csql-proxy's configuration surface over arbitrary bytes.
 * The first byte picks the parser:
 *   0: the command line: the rest split at NUL bytes into argv (flags,
 *      values, instance arguments with query parameters); a segment
 *      "ENV:NAME=VALUE" is an environment variable instead, read through the
 *      parser's environment hook (CSQL_PROXY_<FLAG>, ..._INSTANCE_CONNECTION_NAME_N);
 *   1, 2, 3: --config-file text as JSON, TOML, YAML.
 * Nothing is read from disk: inputs naming a config file are skipped.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "config_file.h"
#include "opts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 64
#define MAX_ENV 16

typedef struct env_table {
    const char *name[MAX_ENV];
    const char *value[MAX_ENV];
    int n;
} env_table;

static const char *env_lookup(const char *name, void *userdata)
{
    const env_table *t = userdata;
    for (int i = 0; i < t->n; i++) {
        if (strcmp(t->name[i], name) == 0) {
            return t->value[i];
        }
    }
    return NULL;
}

static void command_line(char *text, size_t len)
{
    const char *argv[MAX_ARGS + 1];
    int argc = 0;
    env_table env = {.n = 0};
    argv[argc++] = "csql-proxy";
    for (size_t i = 0; i <= len && argc < MAX_ARGS;) {
        char *seg = text + i;
        size_t n = strnlen(seg, len - i);
        if (strcasestr(seg, "config") != NULL) {
            return; /* --config-file, CSQL_PROXY_CONFIG_FILE: would read a file */
        }
        char *eq;
        if (strncmp(seg, "ENV:", 4) == 0 && (eq = strchr(seg + 4, '=')) != NULL) {
            if (env.n < MAX_ENV) {
                *eq = '\0';
                env.name[env.n] = seg + 4;
                env.value[env.n] = eq + 1;
                env.n++;
            }
        } else {
            argv[argc++] = seg;
        }
        i += n + 1;
    }
    argv[argc] = NULL;
    proxy_opts o;
    char err[512];
    proxy_args_parse(argc, argv, env_lookup, &env, &o, err, sizeof(err));
    proxy_opts_free(&o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > CF_MAX_BYTES) {
        return 0;
    }
    int mode = data[0] % 4;
    size_t len = size - 1;
    char *text = malloc(len + 1); /* NUL-terminated copy; cf_parse gets the exact length */
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data + 1, len);
    text[len] = '\0';
    if (mode == 0) {
        command_line(text, len);
    } else {
        static const int formats[] = {CF_JSON, CF_TOML, CF_YAML};
        cf_entries e = {0};
        char err[512];
        if (cf_parse("fuzz.conf", text, len, formats[mode - 1], &e, err, sizeof(err)) == 0) {
            for (size_t i = 0; i < e.n; i++) {
                (void)cf_get(&e, e.v[i].key);
            }
        }
        cf_entries_free(&e);
    }
    free(text);
    return 0;
}
