/* Internal: checking base URLs (the rule behind csql__url_allowed) and showing them safely. */
#ifndef CSQL_SRC_URL_H
#define CSQL_SRC_URL_H

#include <stddef.h>

/* csql__url_allowed() is declared in config_internal.h and defined in url.c. */
#include "config_internal.h"

/* 1 when host (no brackets, no port) is localhost, 127.0.0.0/8 or ::1. */
int csql__host_is_loopback(const char *host);

/*
 * Copy url into buf (NUL-terminated, truncated to len) for messages, with any
 * userinfo ("user:pass@") replaced by "***@" and control characters by '?'.
 */
void csql__url_redact(const char *url, char *buf, size_t len);

#endif
