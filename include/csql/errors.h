/* csql error codes, categories and the thread-local last error. */
#ifndef CSQL_ERRORS_H
#define CSQL_ERRORS_H

#include "csql/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Every fallible csql function returns 0 (CSQL_OK) or one of these negative
 * codes. The list only grows: codes are never renumbered or reused.
 */
typedef enum csql_err {
    CSQL_OK = 0,
    CSQL_ERR_INTERNAL = -1,            /* a bug in csql or an unexpected library failure */
    CSQL_ERR_INVALID_ARGUMENT = -2,    /* NULL where a value is needed, out-of-range value */
    CSQL_ERR_NOMEM = -3,               /* an allocation failed */
    CSQL_ERR_BAD_INSTANCE_NAME = -4,   /* not project:region:instance */
    CSQL_ERR_BAD_CONFIG = -5,          /* an option or environment value is invalid */
    CSQL_ERR_CREDENTIALS = -6,         /* no credentials found, or a credentials file is bad */
    CSQL_ERR_TOKEN = -7,               /* the token endpoint refused or failed */
    CSQL_ERR_API = -8,                 /* the SQL Admin API answered with an error */
    CSQL_ERR_API_RESPONSE = -9,        /* the SQL Admin API answer could not be understood */
    CSQL_ERR_NOT_FOUND = -10,          /* the instance does not exist (HTTP 404) */
    CSQL_ERR_PERMISSION_DENIED = -11,  /* HTTP 401/403 from the SQL Admin API */
    CSQL_ERR_REGION_MISMATCH = -12,    /* region in the name differs from the instance's */
    CSQL_ERR_UNSUPPORTED_INSTANCE = -13, /* not SECOND_GEN, or an unknown engine */
    CSQL_ERR_NO_IP_TYPE = -14,         /* the instance has no address of the requested type */
    CSQL_ERR_DNS = -15,                /* a name (PSC DNS name, endpoint host) did not resolve */
    CSQL_ERR_CONNECT = -16,            /* TCP connect to the instance failed */
    CSQL_ERR_IO = -17,                 /* a socket read or write failed */
    CSQL_ERR_TLS_HANDSHAKE = -18,      /* the TLS handshake failed */
    CSQL_ERR_TLS_VERIFY = -19,         /* the server's certificate or identity was rejected */
    CSQL_ERR_TLS_IO = -20,             /* a TLS read or write failed after the handshake */
    CSQL_ERR_TIMEOUT = -21,            /* a deadline passed */
    CSQL_ERR_CLOSED = -22,             /* the dialer or connection was closed */
    CSQL_ERR_IAM_UNSUPPORTED = -23,    /* automatic IAM authn asked for an engine without it */
    CSQL_ERR_RATE_LIMITED = -24,       /* HTTP 429 persisted through every retry */
    CSQL_ERR_MDX = -25,                /* the server refused the metadata exchange */
    CSQL_ERR_WOULD_BLOCK = -26         /* a non-blocking call cannot proceed yet */
} csql_err;

/* Broad classes of error; branch on these rather than on every code. */
typedef enum csql_err_category {
    CSQL_CAT_OK = 0,
    CSQL_CAT_USAGE = 1,    /* the caller misused the API */
    CSQL_CAT_CONFIG = 2,   /* configuration or instance name is wrong */
    CSQL_CAT_AUTH = 3,     /* credentials or tokens */
    CSQL_CAT_API = 4,      /* the SQL Admin API */
    CSQL_CAT_NETWORK = 5,  /* DNS, TCP */
    CSQL_CAT_TLS = 6,      /* TLS handshake, verification, TLS I/O */
    CSQL_CAT_TIMEOUT = 7,
    CSQL_CAT_CLOSED = 8,
    CSQL_CAT_INTERNAL = 9  /* out of memory, bugs */
} csql_err_category;

/* The category of `err`; CSQL_CAT_INTERNAL for unknown codes. */
CSQL_EXTERN csql_err_category csql_err_category_of(int err);

/* A static, never-NULL description of `err` ("unknown error" for unknown codes). */
CSQL_EXTERN const char *csql_strerror(int err);

/* A static name for a category ("TLS", "AUTH", ...). */
CSQL_EXTERN const char *csql_err_category_name(csql_err_category cat);

/* Details of the last error raised on the calling thread. */
typedef struct csql_error {
    int code;                   /* a csql_err */
    csql_err_category category;
    const char *message;        /* never NULL; "" when there is no error */
    long http_status;           /* HTTP status behind the error, or 0 */
    const char *api_reason;     /* Google error "status" (e.g. PERMISSION_DENIED), or "" */
} csql_error;

/*
 * The last error raised on this thread. The pointer and its strings stay valid
 * until the next csql call on this thread. Never NULL: with no error, code is 0.
 */
CSQL_EXTERN const csql_error *csql_error_last(void);

/* Forget the last error of this thread. */
CSQL_EXTERN void csql_error_clear(void);

#ifdef __cplusplus
}
#endif
#endif
