/*
 * Authentication in csql-emulator: the access tokens it issues and accepts
 * (auth_tokens.c), the credentials files it writes (credentials_writer.c),
 * and JWT-bearer assertion checks for its OAuth token endpoint (auth_oauth.c).
 */
#ifndef CSQL_EMULATOR_AUTH_H
#define CSQL_EMULATOR_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#define EMU_SCOPE_CLOUD_PLATFORM "https://www.googleapis.com/auth/cloud-platform"
#define EMU_SCOPE_SQL_ADMIN "https://www.googleapis.com/auth/sqlservice.admin"
#define EMU_SCOPE_SQL_LOGIN "https://www.googleapis.com/auth/sqlservice.login"
#define EMU_SCOPE_USERINFO_EMAIL "https://www.googleapis.com/auth/userinfo.email"

#define EMU_TOKEN_PREFIX "ya29.emu-"
#define EMU_TOKEN_MAX 4096 /* longest bearer or static token accepted */
#define EMU_ISSUED_TOKEN_MAX 64 /* room for an issued token: prefix + 43 base64url + NUL */
#define EMU_PRINCIPAL_MAX 256
#define EMU_SCOPES_MAX 1024 /* space-separated scope list */

/* ---------------- tokens (auth_tokens.c) ---------------- */

typedef struct emu_token_info {
    char principal[EMU_PRINCIPAL_MAX];
    char scopes[EMU_SCOPES_MAX]; /* space separated; "*" for static tokens (all scopes) */
    time_t expiry;               /* 0 for static tokens (never expire) */
} emu_token_info;

typedef enum emu_token_status {
    EMU_TOKEN_OK = 0,
    EMU_TOKEN_UNKNOWN = 1,
    EMU_TOKEN_EXPIRED = 2
} emu_token_status;

typedef struct emu_tokens emu_tokens;

emu_tokens *emu_tokens_new(const char *static_principal);
void emu_tokens_free(emu_tokens *t);
/* A token that never expires and carries every scope. -1 if too long or empty. */
int emu_tokens_add_static(emu_tokens *t, const char *token);
/*
 * Issue a new random token for principal with the space-separated scopes,
 * valid for lifetime_s seconds (0 gives a token that is already expired, for
 * tests). Writes it to out[cap] (cap >= EMU_ISSUED_TOKEN_MAX) and its expiry.
 */
int emu_tokens_issue(emu_tokens *t, const char *principal, const char *scopes, long lifetime_s,
                     char *out, size_t cap, time_t *expiry);
emu_token_status emu_tokens_lookup(emu_tokens *t, const char *token, time_t now,
                                   emu_token_info *out);
/* Issued tokens currently held (expired ones linger a while to be reported as expired). */
size_t emu_tokens_count(emu_tokens *t);

/* 1 when the space-separated list holds scope (or is "*"). */
bool emu_scopes_contain(const char *scopes, const char *scope);
/*
 * Normalize a scope list given with separators sep (" " for OAuth, "," for
 * the metadata server) into a space-separated list in out[cap]. -1 when empty,
 * too long, or a scope has characters outside printable ASCII.
 */
int emu_scopes_normalize(const char *in, char sep, char *out, size_t cap);

/*
 * Join a JSON array of scopes into a space-separated list in out[cap]. -1
 * unless it is a non-empty array of non-empty printable strings without
 * spaces that fits.
 */
int emu_scopes_from_json(json_t *arr, char *out, size_t cap);

/* ---------------- credentials files (credentials_writer.c) ---------------- */

#define EMU_SA_EMAIL "csql-test@emulator-project.iam.gserviceaccount.com"
#define EMU_SA_PROJECT "emulator-project"
#define EMU_AU_PRINCIPAL "user@example.com"

typedef struct emu_credentials {
    EVP_PKEY *sa_key; /* RSA-2048; its public half verifies JWT assertions */
    char sa_key_id[41];
    char sa_client_id[24];
    char au_client_id[96];
    char au_client_secret[48];
    char au_refresh_token[96];
} emu_credentials;

/* Generate the service-account key and the authorized_user secrets. */
int emu_credentials_create(emu_credentials *c, char *err, size_t errlen);
/* Write DIR/service_account.json and DIR/authorized_user.json (0600, dir 0700). */
int emu_credentials_write(const emu_credentials *c, const char *dir, const char *token_uri,
                          char *err, size_t errlen);
void emu_credentials_clear(emu_credentials *c);

/* ---------------- JWT-bearer assertions (auth_oauth.c) ---------------- */

#define EMU_JWT_MAX 8192
#define EMU_JWT_MAX_LIFETIME 3600

typedef enum emu_jwt_result {
    EMU_JWT_OK = 0,
    EMU_JWT_INVALID_GRANT = -1, /* OAuth "invalid_grant": signature, issuer, times, audience */
    EMU_JWT_INVALID_SCOPE = -2  /* OAuth "invalid_scope": no usable scope claim */
} emu_jwt_result;

/*
 * Verify an RS256 assertion signed with the service-account key in c: header
 * alg RS256 and kid (if any) = c->sa_key_id; claims iss = EMU_SA_EMAIL, aud =
 * audience, now < exp, exp - iat <= 3600, iat not in the future (60 s skew).
 * On success writes the normalized scope claim to scopes[cap]. The message in
 * err never holds the assertion.
 */
emu_jwt_result emu_jwt_verify(const char *jwt, size_t len, const emu_credentials *c,
                              const char *audience, time_t now, char *scopes, size_t cap,
                              char *err, size_t errlen);

#endif
