/*
 * For libraries built on csql (the driver helpers libcsql-pq, libcsql-mysql,
 * or your own): report failures through csql's error channel so that callers
 * read every failure the same way, with csql_error_last().
 */
#ifndef CSQL_HELPER_H
#define CSQL_HELPER_H

#include "csql/errors.h"
#include "csql/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Record `code` (a negative csql_err) with a printf-style message as the
 * calling thread's last error and return `code`:
 *     return csql_error_set(CSQL_ERR_INVALID_ARGUMENT, "conninfo sets \"%s\"", key);
 * Never put secrets in the message.
 */
CSQL_EXTERN int csql_error_set(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif
