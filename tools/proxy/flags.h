/*
 * csql-proxy: the flag tables (names, types, defaults, help) of the main
 * command and of the wait and shutdown subcommands, and --help. Each flag
 * also reads the environment variable CSQL_PROXY_<NAME IN UPPER SNAKE CASE>
 * and the config file key <name>.
 */
#ifndef CSQL_PROXY_FLAGS_H
#define CSQL_PROXY_FLAGS_H

#include <stddef.h>
#include <stdio.h>

#include "opts.h"

typedef enum flag_type {
    FT_BOOL,
    FT_STRING,
    FT_PORT,
    FT_UINT64,
    FT_DURATION, /* stored as uint64_t milliseconds */
    FT_HELP,
    FT_VERSION,
} flag_type;

enum {
    FF_QUERY = 1u << 0,  /* also a per-instance query parameter (marked (*) in --help) */
    FF_SECRET = 1u << 1, /* never echo the value */
};

typedef struct flag_def {
    const char *name; /* long name, without "--" */
    char short_name;  /* 0 for none */
    flag_type type;
    size_t offset;    /* into proxy_opts (unused for FT_HELP, FT_VERSION) */
    const char *def;  /* default, as it would be typed; NULL for none */
    const char *arg;  /* placeholder shown in --help */
    const char *help;
    unsigned flags;
    const char *group; /* heading in --help; NULL: same as the previous flag */
} flag_def;

/* The table for a command (RUN, WAIT or SHUTDOWN); *n gets its length. */
const flag_def *flags_table(proxy_cmd cmd, size_t *n);

/* Index of the flag named `name` (long) in the table, or -1. */
int flags_find(const flag_def *t, size_t n, const char *name);
int flags_find_short(const flag_def *t, size_t n, char c);

/*
 * Auth Proxy flags that csql-proxy does not implement: the reason, or NULL
 * if `name` is not one of them. `short_name` may be 0.
 */
const char *flags_unsupported(const char *name, char short_name);

/* "CSQL_PROXY_<NAME>" for a flag name into buf. */
void flags_env_name(const char *flag, char *buf, size_t len);

/* Print --help for a command. */
void flags_print_help(FILE *f, proxy_cmd cmd);

#endif
