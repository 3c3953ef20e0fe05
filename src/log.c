/* Logging: format one line and hand it to the caller's callback. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

#define CSQL__LOG_LINE_MAX 1024

void csql__log(const csql__logger *lg, csql_log_level level, const char *fmt, ...)
{
    if (lg == NULL || lg->fn == NULL || level > lg->max_level) {
        return;
    }
    char line[CSQL__LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* One line per call: cut at the first newline a formatted value may carry. */
    for (char *p = line; *p != '\0'; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = '\0';
            break;
        }
    }
    lg->fn(level, line, lg->userdata);
}
