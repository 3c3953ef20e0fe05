/* Internal: logging through the config's callback. */
#ifndef CSQL_SRC_LOG_H
#define CSQL_SRC_LOG_H

#include "csql/log.h"

typedef struct csql__logger {
    csql_log_fn fn;
    void *userdata;
    csql_log_level max_level;
} csql__logger;

/* Format one line and hand it to lg->fn if level <= max_level. lg may be NULL. Never log secrets. */
void csql__log(const csql__logger *lg, csql_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
