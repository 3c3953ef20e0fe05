/* Internal: raising errors into the thread-local slot that csql_error_last() reads. */
#ifndef CSQL_SRC_ERROR_H
#define CSQL_SRC_ERROR_H

#include "csql/errors.h"

/*
 * Record `code` with a printf-style message on this thread and return `code`,
 * so that callers can write `return csql__error(CSQL_ERR_X, "...", ...);`.
 * Messages must never contain secrets (tokens, keys).
 */
int csql__error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* As csql__error, with the HTTP status and Google API reason behind the error. */
int csql__error_http(int code, long http_status, const char *api_reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Store a copy of `e` (an error captured elsewhere, e.g. on a refresh thread) as this thread's. */
int csql__error_raise_copy(const csql_error *e);

/* Prefix this thread's current message with "prefix: " (keeps code and HTTP details). */
void csql__error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * A heap copy of an error, for errors that outlive the thread that raised them
 * (a background refresh failure stored on a cache entry).
 */
typedef struct csql__saved_error {
    int code;
    long http_status;
    char *message;
    char *api_reason;
} csql__saved_error;

/* Save this thread's last error into `out` (freeing what `out` held). 0 or CSQL_ERR_NOMEM. */
int csql__error_save(csql__saved_error *out);
/* Raise a saved error on this thread and return its code. */
int csql__error_restore(const csql__saved_error *saved);
void csql__saved_error_dispose(csql__saved_error *saved);

#endif
