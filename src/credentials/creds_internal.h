/*
 * Internal to src/credentials/: the pieces behind csql__creds. Parsers are
 * pure functions over bounded buffers (unit-tested and fuzzable); token
 * sources do the I/O; creds.c adds the cache and single-flight on top.
 */
#ifndef CSQL_SRC_CREDENTIALS_INTERNAL_H
#define CSQL_SRC_CREDENTIALS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "credentials.h"

#define CSQL__GOOGLE_TOKEN_URI "https://oauth2.googleapis.com/token"
#define CSQL__METADATA_HOST_DEFAULT "metadata.google.internal"
#define CSQL__CREDS_FILE_MAX (64 * 1024)       /* a key file is ~2.4 KiB */
#define CSQL__TOKEN_RESPONSE_MAX (64 * 1024)   /* token answers are < 4 KiB */
#define CSQL__ACCESS_TOKEN_MAX 8192            /* longest access token accepted */
#define CSQL__TOKEN_LIFETIME_MAX (7L * 24 * 3600) /* expires_in beyond this is clamped */

/* What a token is for. ADMIN and LOGIN match csql_token_kind; CLOUD is the
 * cloud-platform token an impersonation's base credentials mint. */
typedef enum csql__scope_kind {
    CSQL__SK_ADMIN = 0,
    CSQL__SK_LOGIN = 1,
    CSQL__SK_CLOUD = 2,
    CSQL__SK_COUNT = 3
} csql__scope_kind;

/* The OAuth scope of a kind. */
const char *csql__scope_of(csql__scope_kind kind);
/* "admin", "login", "cloud-platform": for messages. */
const char *csql__scope_kind_name(csql__scope_kind kind);

/* ---------------- credentials files (creds_file.c) ---------------- */

typedef enum csql__creds_file_type {
    CSQL__FILE_SERVICE_ACCOUNT = 1,
    CSQL__FILE_AUTHORIZED_USER = 2
} csql__creds_file_type;

/* A parsed service_account or authorized_user file. Strings malloc'd; secrets wiped on dispose. */
typedef struct csql__creds_file {
    csql__creds_file_type type;
    char *client_email;   /* service_account */
    char *private_key;    /* service_account, PEM; secret */
    char *private_key_id; /* service_account, or NULL */
    char *client_id;      /* authorized_user */
    char *client_secret;  /* authorized_user; secret */
    char *refresh_token;  /* authorized_user; secret */
    char *token_uri;      /* the file's, else CSQL__GOOGLE_TOKEN_URI */
} csql__creds_file;

/*
 * Parse credentials JSON. `origin` names it in messages ("credentials file
 * /x.json", "credentials JSON"). CSQL_ERR_CREDENTIALS naming the origin and
 * the missing or bad field, or the unsupported type. Never quotes the input.
 */
int csql__creds_file_parse(const char *json, size_t len, const char *origin,
                           csql__creds_file *out);
/* Read (bounded by CSQL__CREDS_FILE_MAX) and parse `path`; `what` prefixes messages
 * ("credentials file", "GOOGLE_APPLICATION_CREDENTIALS file"). */
int csql__creds_file_load(const char *path, const char *what, csql__creds_file *out);
void csql__creds_file_dispose(csql__creds_file *f);

/* ---------------- JWT (jwt.c) ---------------- */

/* Load a PEM private key (PKCS#8 or PKCS#1) that must be RSA. -1 if it does not parse or is not RSA. */
int csql__rsa_key_from_pem(const char *pem, size_t len, EVP_PKEY **out);

typedef struct csql__jwt_claims {
    const char *kid;   /* header kid, or NULL to omit */
    const char *iss;
    const char *scope;
    const char *aud;
    int64_t iat;       /* exp = iat + 3600 */
} csql__jwt_claims;

/* An RS256-signed JWT (malloc'd) for the JWT-bearer grant. CSQL_ERR_NOMEM or CSQL_ERR_INTERNAL. */
int csql__jwt_sign(EVP_PKEY *key, const csql__jwt_claims *claims, char **out);

/* ---------------- token responses (token_response.c) ---------------- */

/*
 * An OAuth token endpoint or metadata server answer: on 2xx, parse
 * {"access_token","expires_in","token_type"} (expires_at = now + expires_in;
 * 0 when expires_in is absent); otherwise raise CSQL_ERR_TOKEN from an OAuth
 * error {"error","error_description"}, a Google error {"error":{...}}, or a
 * bounded summary of the body. `what` names the endpoint ("token endpoint
 * oauth2.googleapis.com"). Never puts the token in a message.
 */
int csql__token_response_parse(long status, const char *body, size_t len, const char *what,
                               int64_t now, csql__token *out);

/* generateAccessToken: {"accessToken","expireTime":RFC 3339}. Errors as above. */
int csql__impersonate_response_parse(long status, const char *body, size_t len, const char *what,
                                     csql__token *out);

/*
 * After csql__http_perform failed with rc on a token request: prefix the
 * message with `what` and report a transport failure (DNS, connect, I/O, an
 * oversized answer) as CSQL_ERR_TOKEN, keeping the detail. Timeouts, refused
 * URLs (CSQL_ERR_BAD_CONFIG) and NOMEM keep their codes. Returns the code.
 */
int csql__token_transport_error(int rc, const char *what);

/* RFC 3339 UTC or with offset ("2024-05-01T10:00:00.5Z") to Unix seconds. -1 on bad input. */
int csql__rfc3339_parse(const char *s, size_t len, int64_t *out);

/* ---------------- token sources ---------------- */

typedef struct csql__token_source {
    /* Mint a token of `kind` (no caching here). Raises the error it returns. */
    int (*fetch)(void *state, csql__scope_kind kind, int64_t deadline_ms, csql__token *out);
    void (*free)(void *state);
    void *state;
    char *description; /* malloc'd: "service account x@y", ... */
    bool cacheable;    /* false: fetch on every call (static tokens) */
} csql__token_source;

void csql__token_source_dispose(csql__token_source *src);

/* static_token.c: cfg->token (+ login_token). Borrowed from cfg. */
int csql__source_static(const csql_config *cfg, csql__token_source *out);
/* callback.c: cfg->token_fn. */
int csql__source_callback(const csql_config *cfg, csql__token_source *out);
/* creds_file.c: from a parsed file (its contents are moved into the source). */
int csql__source_from_file(csql__creds_file *file, const char *origin, csql__token_source *out);
/* metadata.c: the metadata server at host ("host[:port]"). via_adc: the ADC chain fell through
 * to it, so a server that cannot be reached means "no credentials found". */
int csql__source_metadata(const char *host, bool via_adc, csql__token_source *out);
/* impersonate.c: the base creds (owned) mint a cloud-platform token for generateAccessToken. */
int csql__source_impersonate(csql__creds *base, const char *chain, const char *endpoint,
                             csql__token_source *out);
/* adc.c: the Application Default Credentials chain. */
int csql__source_adc(csql__token_source *out);

/* creds.c: a creds object over an already-built source (moved in). */
int csql__creds_from_source(csql__token_source *src, const csql__logger *lg, csql__creds **out);
/* Like csql__creds_token, for any scope kind. */
int csql__creds_token_scoped(csql__creds *c, csql__scope_kind kind, int64_t deadline_ms,
                             csql__token *out);

/* 1 when t is a plausible bearer token: 1..CSQL__ACCESS_TOKEN_MAX visible ASCII characters. */
int csql__token_value_ok(const char *t, size_t len);

/* Wipe and free a NUL-terminated secret string. */
void csql__secret_free(char *s);

/* Wipe a jansson string value in place (before the json_t holding it is released). */
struct json_t;
void csql__json_wipe_string(struct json_t *v);

#endif
