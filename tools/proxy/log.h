/*
 * csql-proxy logs. Human lines ("2006/01/02 15:04:05 message", as the Auth
 * Proxy prints them) or, with --structured-logs, JSON lines with timestamp,
 * severity and message. Info and debug go to stdout, warnings and errors to
 * stderr; one write per line, safe from any thread. --quiet keeps warnings
 * and errors, --debug-logs adds debug lines. Never pass a secret.
 */
#ifndef CSQL_PROXY_LOG_H
#define CSQL_PROXY_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "csql/log.h"

void plog_init(bool structured, bool quiet, bool debug);

/* The most verbose level written (for csql_config_set_log). */
csql_log_level plog_max_level(void);

void plog(csql_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define plog_error(...) plog(CSQL_LOG_ERROR, __VA_ARGS__)
#define plog_warn(...) plog(CSQL_LOG_WARN, __VA_ARGS__)
#define plog_info(...) plog(CSQL_LOG_INFO, __VA_ARGS__)
#define plog_debug(...) plog(CSQL_LOG_DEBUG, __VA_ARGS__)

/* libcsql's log callback (csql_log_fn): its lines, prefixed "csql: ". */
void plog_csql(csql_log_level level, const char *line, void *userdata);

/*
 * Format one line into buf (no newline added by the caller; this adds it).
 * Exposed for tests: `when` is Unix time in microseconds.
 */
size_t plog_format(char *buf, size_t cap, bool structured, csql_log_level level, long long when_us,
                   const char *msg);

#endif
