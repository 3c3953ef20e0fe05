/* csql-proxy wait / shutdown: one bounded HTTP/1.0 request to a running proxy. */
#ifndef CSQL_PROXY_HTTP_CLIENT_H
#define CSQL_PROXY_HTTP_CLIENT_H

#include <stddef.h>

/*
 * `method` `path` on host:port (host: a name or IP literal) within timeout_ms.
 * Returns the HTTP status (100..599), or -1 with a reason in err (connection
 * refused, timeout, bad answer).
 */
int proxy_http_request(const char *host, int port, const char *method, const char *path,
                       int timeout_ms, char *err, size_t errlen);

#endif
