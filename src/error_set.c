/* csql_error_set: the public door to the thread-local error, for helper libraries. */
#include <stdarg.h>
#include <stdio.h>

#include "csql/helper.h"
#include "error.h"

int csql_error_set(int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return csql__error(code, "%s", msg);
}
