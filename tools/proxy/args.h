/*
 * csql-proxy: the command line, merged with the environment and the config
 * file (precedence: flag, then CSQL_PROXY_<FLAG>, then the config file), then
 * checked for bad values and conflicts with the Auth Proxy's rules.
 */
#ifndef CSQL_PROXY_ARGS_H
#define CSQL_PROXY_ARGS_H

#include <stddef.h>

#include "opts.h"

/* Reads an environment variable (getenv in the program; a table in tests). */
typedef const char *(*proxy_env_fn)(const char *name, void *userdata);

/*
 * Parse argv (argv[0] is the program) into *o. Returns 0, or -1 with one line
 * in err naming the flag, variable or file entry at fault (never a secret's
 * value). o->cmd tells what to do; for HELP and VERSION nothing else is
 * checked. Free *o with proxy_opts_free in both cases.
 */
int proxy_args_parse(int argc, const char *const argv[], proxy_env_fn env, void *env_userdata,
                     proxy_opts *o, char *err, size_t errlen);

/*
 * Overwrite the values of secret flags (--token, --login-token,
 * --json-credentials) in argv with 'x', so that they do not show in
 * /proc/PID/cmdline or ps. Call after proxy_args_parse copied them.
 */
void proxy_args_scrub(int argc, char *argv[]);

/* getenv, as a proxy_env_fn. */
const char *proxy_getenv(const char *name, void *userdata);

#endif
