/* Logging: the library never prints; it hands lines to a caller's callback. */
#ifndef CSQL_LOG_H
#define CSQL_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum csql_log_level {
    CSQL_LOG_ERROR = 0,
    CSQL_LOG_WARN = 1,
    CSQL_LOG_INFO = 2,
    CSQL_LOG_DEBUG = 3
} csql_log_level;

/*
 * Called with one complete line (no trailing newline) at `level`. May be
 * called from any thread, including csql's background refresh thread, and
 * must not call back into the dialer that logs. Lines never contain secrets.
 */
typedef void (*csql_log_fn)(csql_log_level level, const char *line, void *userdata);

#ifdef __cplusplus
}
#endif
#endif
