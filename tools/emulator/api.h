/*
 * csql-emulator's HTTP server (libmicrohttpd, a thread per connection): the
 * SQL Admin API (api_sqladmin.c), OAuth, metadata and IAM Credentials
 * endpoints (auth_oauth.c) and the /emulator/ admin API (api_admin.c).
 * api.c owns the daemon, request bodies, routing, faults, counters and the
 * response helpers the handlers share.
 */
#ifndef CSQL_EMULATOR_API_H
#define CSQL_EMULATOR_API_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "auth.h"
#include "emulator.h"
#include "faults.h"

#define EMU_API_BODY_MAX (64 * 1024)

typedef struct emu_api_config {
    emu_instance *const *instances;
    size_t n_instances;
    emu_signing_ca *signing_ca;
    const char *address; /* loopback literal */
    int port;            /* 0: ephemeral */
    char *const *static_tokens;
    size_t n_static_tokens;
    const char *static_principal;
    long token_lifetime_s;
    const emu_credentials *credentials; /* NULL: the token endpoint knows no client */
    const emu_fault *faults;            /* faults active from the start */
    size_t n_faults;
    bool verbose; /* one line per request on stderr */
} emu_api_config;

typedef struct emu_api emu_api;

emu_api *emu_api_start(const emu_api_config *cfg, char *err, size_t errlen);
/* "http://127.0.0.1:PORT" (no trailing slash). */
const char *emu_api_url(const emu_api *api);
/* The OAuth token URI written into credentials files: base URL + "/token". */
const char *emu_api_token_uri(const emu_api *api);
/* Stops the daemon (waits for requests in flight) and frees everything. NULL-safe. */
void emu_api_stop(emu_api *api);

/* ---------------- shared by the handlers ---------------- */

struct MHD_Connection;

struct emu_api {
    struct MHD_Daemon *daemon;
    emu_api_config cfg;
    char base_url[80];
    char token_uri[96];
    emu_tokens *tokens;
    emu_faults *faults;
    emu_counters *counters;
    atomic_bool stopping;
};

typedef struct emu_request {
    emu_api *api;
    struct MHD_Connection *conn;
    const char *method;
    const char *path; /* percent-decoded by libmicrohttpd, duplicate '/' collapsed */
    const char *body; /* NUL-terminated, may be empty */
    size_t body_len;
} emu_request;

typedef struct emu_response {
    int status;
    char *body; /* malloc'd */
    size_t len;
    const char *content_type;
    long retry_after;     /* > 0: a Retry-After header */
    bool metadata_flavor; /* "Metadata-Flavor: Google" header */
} emu_response;

const char *emu_request_header(const emu_request *rq, const char *name);
const char *emu_request_query(const emu_request *rq, const char *name);
/* The body as a JSON object, or NULL with a 400 answered in rs. */
json_t *emu_request_json(const emu_request *rq, emu_response *rs);

/* Answer body (stolen; NULL answers 500). */
void emu_respond_json(emu_response *rs, int status, json_t *body);
/* Google error JSON {"error":{"code","message","status","errors":[...]}}; NULL reason: derived. */
void emu_respond_error(emu_response *rs, int status, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* OAuth error JSON {"error": error, "error_description": ...}. */
void emu_respond_oauth_error(emu_response *rs, int status, const char *error, const char *fmt,
                             ...) __attribute__((format(printf, 4, 5)));
void emu_respond_text(emu_response *rs, int status, const char *text);

/*
 * Check "Authorization: Bearer T": T must be static or issued and unexpired
 * (else 401) and carry scope_a or scope_b (else 403). 0, or -1 answered.
 */
int emu_authorize(const emu_request *rq, emu_response *rs, const char *scope_a,
                  const char *scope_b, emu_token_info *who);

/* ---------------- SQL Admin API (api_sqladmin.c) ---------------- */

typedef struct emu_sqladmin_path {
    /* connectSettings, generateEphemeralCert, getInstance or createEphemeral */
    emu_endpoint endpoint;
    char project[256];
    char instance[128];
} emu_sqladmin_path;

/* Recognize /sql/v1beta4/projects/P/instances/I[/connectSettings|:generateEphemeralCert|...]. */
int emu_sqladmin_parse_path(const char *path, emu_sqladmin_path *out);
/* inst is NULL when no such instance exists (answers 404 after auth). */
void emu_sqladmin_handle(const emu_request *rq, const emu_sqladmin_path *sp, emu_instance *inst,
                         emu_response *rs);

/* ---------------- OAuth, metadata, IAM Credentials (auth_oauth.c) ---------------- */

void emu_oauth_token(const emu_request *rq, emu_response *rs);
int emu_metadata_is_path(const char *path);
void emu_metadata_handle(const emu_request *rq, emu_response *rs);
/* /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken: EMAIL into email[cap]. */
int emu_iamcredentials_parse_path(const char *path, char *email, size_t cap);
void emu_iamcredentials_generate(const emu_request *rq, const char *email, emu_response *rs);

/* ---------------- /emulator/ admin API (api_admin.c) ---------------- */

void emu_admin_handle(const emu_request *rq, emu_response *rs);

#endif
