/*
 * Internal: parsers for SQL Admin API answers (REFERENCE §2). Pure functions
 * over bounded buffers: no I/O, easy to unit-test and fuzz.
 */
#ifndef CSQL_SRC_CONNECT_INFO_H
#define CSQL_SRC_CONNECT_INFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "instance_name.h"

/* What connectSettings says about an instance. All strings malloc'd or NULL. */
typedef struct csql__connect_info {
    char *database_version; /* "POSTGRES_15" */
    char *region;
    char *public_ip;        /* PRIMARY */
    char *private_ip;       /* PRIVATE */
    char *psc_dns;          /* PSC DNS name (trailing dot removed), only when pscEnabled */
    char *dns_name;         /* name for the server SAN check (trailing dot removed), or NULL */
    char *ca_pem;           /* every serverCaCert PEM, as given */
    char *server_ca_mode;   /* or NULL */
    bool mdx_supported;     /* mdxProtocolSupport contains CLIENT_PROTOCOL_TYPE */
} csql__connect_info;

/*
 * Parse a connectSettings JSON body for instance `name` and validate it:
 * region equals name->region (CSQL_ERR_REGION_MISMATCH: "provided region was
 * mismatched - got X, want Y"), backendType SECOND_GEN and databaseVersion
 * POSTGRES_/MYSQL_/SQLSERVER_ (CSQL_ERR_UNSUPPORTED_INSTANCE), serverCaCert.cert
 * present with at least one PEM certificate (CSQL_ERR_API_RESPONSE), and at
 * least one of PRIMARY, PRIVATE or a PSC name (CSQL_ERR_NO_IP_TYPE). Unknown
 * fields are ignored. Errors name the instance.
 */
int csql__connect_info_parse(const char *json, size_t len, const csql__instance_name *name,
                             csql__connect_info *out);
void csql__connect_info_dispose(csql__connect_info *ci);
/* Deep copy. 0 or CSQL_ERR_NOMEM. */
int csql__connect_info_copy(const csql__connect_info *src, csql__connect_info *dst);

/* Parse a generateEphemeralCert body into the certificate PEM (malloc'd). CSQL_ERR_API_RESPONSE if absent. */
int csql__ephemeral_cert_parse(const char *json, size_t len, char **cert_pem);

/*
 * Turn a non-2xx Admin API answer into a csql error raised on this thread and
 * return its code: 404 CSQL_ERR_NOT_FOUND, 401/403 CSQL_ERR_PERMISSION_DENIED
 * (403 with a hint: the Cloud SQL Admin API may be disabled or the principal
 * may lack the Cloud SQL Client role), 429 CSQL_ERR_RATE_LIMITED, else
 * CSQL_ERR_API. Google error JSON's error.message and error.status are
 * surfaced; a body that is not Google error JSON is summarised, bounded.
 * `what` names the call and instance ("connectSettings for p:r:i").
 */
int csql__google_error_raise(long http_status, const char *body, size_t len, const char *what);

#endif
