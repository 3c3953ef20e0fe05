/*
 * Internal: HTTP over libcurl for the SQL Admin API, token endpoints and the
 * metadata server. Bounded responses, deadlines, several requests at once.
 */
#ifndef CSQL_SRC_HTTP_H
#define CSQL_SRC_HTTP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define CSQL__HTTP_MAX_RESPONSE (1024 * 1024) /* default response bound */

typedef struct csql__http_request {
    const char *method;          /* "GET", "POST" */
    const char *url;
    const char *const *headers;  /* NULL-terminated "Name: value" list, or NULL */
    const char *body;            /* or NULL */
    size_t body_len;
    size_t max_response;         /* 0: CSQL__HTTP_MAX_RESPONSE */
    int64_t deadline_ms;         /* monotonic (csql__mono_ms) */
    int allow_plain_http;        /* 1: http:// to any host (GCE metadata); else loopback only */
    int no_proxy;                /* 1: never via a proxy from the environment (metadata server) */
    const atomic_bool *cancel;   /* or NULL; when it becomes true the request ends with
                                    CSQL_ERR_CLOSED (within ~100 ms through csql__http_perform_many,
                                    even for one request; ~1 s through csql__http_perform) */
} csql__http_request;

typedef struct csql__http_response {
    long status;                 /* HTTP status, 0 if no response */
    char *body;                  /* malloc'd, NUL-terminated (may be "") */
    size_t body_len;
    long retry_after_s;          /* Retry-After header in seconds, or -1 */
} csql__http_response;

/*
 * Perform one request. Returns 0 when an HTTP response arrived (any status),
 * else CSQL_ERR_TIMEOUT, CSQL_ERR_DNS, CSQL_ERR_CONNECT, CSQL_ERR_IO, CSQL_ERR_CLOSED (cancelled),
 * CSQL_ERR_BAD_CONFIG (URL refused), CSQL_ERR_API_RESPONSE (response too
 * large) with a message naming the URL's host (never a token).
 */
int csql__http_perform(const csql__http_request *req, csql__http_response *resp);

/*
 * Perform n requests concurrently (curl multi). rcs[i] gets what
 * csql__http_perform would have returned for request i. Returns 0 if all
 * got a response, else the first failing rc.
 */
int csql__http_perform_many(const csql__http_request *reqs, csql__http_response *resps, int *rcs,
                            size_t n);

void csql__http_response_dispose(csql__http_response *resp);

/* Percent-encode s for a URL path segment or form value; malloc'd or NULL on OOM. */
char *csql__http_escape(const char *s);

/* Process-wide curl_global_init, once (thread-safe). 0 or CSQL_ERR_INTERNAL. */
int csql__http_global_init(void);

#endif
