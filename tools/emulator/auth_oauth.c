/*
 * Where the emulator issues access tokens: the OAuth 2 token endpoint
 * (JWT-bearer and refresh_token grants), the GCE metadata server's token and
 * email, and IAM Credentials generateAccessToken (impersonation).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "api.h"
#include "util.h"

#define JWT_SKEW_S 60
#define IMPERSONATION_LIFETIME_MAX 43200L
#define DEFAULT_USER_SCOPES \
    EMU_SCOPE_CLOUD_PLATFORM " " EMU_SCOPE_SQL_LOGIN " " EMU_SCOPE_USERINFO_EMAIL

/* ---------------- JWT-bearer assertions ---------------- */

static json_t *decode_json_part(const char *p, size_t len)
{
    unsigned char buf[EMU_JWT_MAX];
    long n = emu_b64url_decode(p, len, buf, sizeof buf);
    return n < 0 ? NULL : json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
}

static int verify_signature(EVP_PKEY *key, const char *signed_part, size_t signed_len,
                            const char *sig_b64, size_t sig_len)
{
    unsigned char sig[1024];
    long n = emu_b64url_decode(sig_b64, sig_len, sig, sizeof sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = n > 0 && md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestVerify(md, sig, (size_t)n, (const unsigned char *)signed_part,
                              signed_len) == 1;
    EVP_MD_CTX_free(md);
    return ok ? 0 : -1;
}

emu_jwt_result emu_jwt_verify(const char *jwt, size_t len, const emu_credentials *c,
                              const char *audience, time_t now, char *scopes, size_t cap,
                              char *err, size_t errlen)
{
    emu_jwt_result rc = EMU_JWT_INVALID_GRANT;
    json_t *hdr = NULL, *claims = NULL;
    const char *dot1 = len ? memchr(jwt, '.', len) : NULL;
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - jwt)) : NULL;

    if (len > EMU_JWT_MAX || !dot1 || !dot2 ||
        memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - jwt))) {
        emu_fail(err, errlen, "Invalid JWT: not three base64url parts.");
        goto out;
    }
    hdr = decode_json_part(jwt, (size_t)(dot1 - jwt));
    claims = decode_json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!json_is_object(hdr) || !json_is_object(claims)) {
        emu_fail(err, errlen, "Invalid JWT: header or claims are not base64url JSON objects.");
        goto out;
    }
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    json_t *kid = json_object_get(hdr, "kid");
    if (!alg || strcmp(alg, "RS256") != 0) {
        emu_fail(err, errlen, "Invalid JWT: alg must be RS256.");
        goto out;
    }
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    if (!c || !c->sa_key || !iss || strcmp(iss, EMU_SA_EMAIL) != 0) {
        emu_fail(err, errlen, "Invalid JWT: issuer '%.100s' is not a known service account.",
                 iss ? iss : "");
        goto out;
    }
    if (kid && (!json_is_string(kid) || strcmp(json_string_value(kid), c->sa_key_id) != 0)) {
        emu_fail(err, errlen, "Invalid JWT: kid does not name the service account's key.");
        goto out;
    }
    if (verify_signature(c->sa_key, jwt, (size_t)(dot2 - jwt), dot2 + 1,
                         len - (size_t)(dot2 + 1 - jwt)) != 0) {
        emu_fail(err, errlen, "Invalid JWT Signature.");
        goto out;
    }
    const char *aud = json_string_value(json_object_get(claims, "aud"));
    if (!aud || strcmp(aud, audience) != 0) {
        emu_fail(err, errlen, "Invalid JWT: aud must be %s.", audience);
        goto out;
    }
    json_t *iat = json_object_get(claims, "iat"), *exp = json_object_get(claims, "exp");
    if (!json_is_number(iat) || !json_is_number(exp)) {
        emu_fail(err, errlen, "Invalid JWT: iat and exp must be numbers.");
        goto out;
    }
    double t_iat = json_number_value(iat), t_exp = json_number_value(exp);
    if (t_exp <= (double)now || t_iat > (double)(now + JWT_SKEW_S) || t_exp <= t_iat ||
        t_exp - t_iat > EMU_JWT_MAX_LIFETIME) {
        emu_fail(err, errlen,
                 "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                 "reasonable timeframe. Check your iat and exp values in the JWT claim.");
        goto out;
    }
    const char *scope = json_string_value(json_object_get(claims, "scope"));
    if (!scope || emu_scopes_normalize(scope, ' ', scopes, cap) != 0) {
        emu_fail(err, errlen, "Invalid JWT: the scope claim is missing, empty or too long.");
        rc = EMU_JWT_INVALID_SCOPE;
        goto out;
    }
    rc = EMU_JWT_OK;
out:
    json_decref(hdr);
    json_decref(claims);
    return rc;
}

/* ---------------- token answers ---------------- */

/* {"access_token","expires_in","token_type","scope"} for a fresh token. */
static void respond_token(const emu_request *rq, emu_response *rs, const char *principal,
                          const char *scopes, bool with_scope)
{
    char token[EMU_ISSUED_TOKEN_MAX];
    time_t expiry;
    long lifetime = rq->api->cfg.token_lifetime_s;
    if (emu_tokens_issue(rq->api->tokens, principal, scopes, lifetime, token, sizeof token,
                         &expiry) != 0) {
        emu_respond_oauth_error(rs, 500, "server_error", "cannot issue a token");
        return;
    }
    json_t *o = json_pack("{s:s,s:I,s:s}", "access_token", token, "expires_in",
                          (json_int_t)lifetime, "token_type", "Bearer");
    if (with_scope && o)
        json_object_set_new(o, "scope", json_string(scopes));
    OPENSSL_cleanse(token, sizeof token);
    emu_respond_json(rs, 200, o);
}

static int form_param(const emu_request *rq, const char *key, char *out, size_t cap,
                      emu_response *rs, bool required)
{
    int r = emu_form_get(rq->body, rq->body_len, key, out, cap);
    if (r < 0) {
        emu_respond_oauth_error(rs, 400, "invalid_request", "Parameter %s is malformed.", key);
        return -1;
    }
    if (r == 0) {
        out[0] = '\0';
        if (required) {
            emu_respond_oauth_error(rs, 400, "invalid_request", "Missing required parameter: %s",
                                    key);
            return -1;
        }
    }
    return 0;
}

static void jwt_grant(const emu_request *rq, emu_response *rs)
{
    char *assertion = malloc(EMU_JWT_MAX + 1);
    char scopes[EMU_SCOPES_MAX], err[256];

    if (!assertion) {
        emu_respond_oauth_error(rs, 500, "server_error", "out of memory");
        return;
    }
    if (form_param(rq, "assertion", assertion, EMU_JWT_MAX + 1, rs, true) == 0) {
        switch (emu_jwt_verify(assertion, strlen(assertion), rq->api->cfg.credentials,
                               rq->api->token_uri, time(NULL), scopes, sizeof scopes, err,
                               sizeof err)) {
        case EMU_JWT_OK:
            respond_token(rq, rs, EMU_SA_EMAIL, scopes, true);
            break;
        case EMU_JWT_INVALID_SCOPE:
            emu_respond_oauth_error(rs, 400, "invalid_scope", "%s", err);
            break;
        default:
            emu_respond_oauth_error(rs, 400, "invalid_grant", "%s", err);
            break;
        }
    }
    OPENSSL_cleanse(assertion, EMU_JWT_MAX + 1);
    free(assertion);
}

static bool secret_equal(const char *a, const char *b)
{
    size_t n = strlen(a);
    return n == strlen(b) && CRYPTO_memcmp(a, b, n) == 0;
}

static void refresh_grant(const emu_request *rq, emu_response *rs)
{
    const emu_credentials *c = rq->api->cfg.credentials;
    char id[256], secret[256], refresh[256], scope_in[EMU_SCOPES_MAX], scopes[EMU_SCOPES_MAX];

    if (form_param(rq, "client_id", id, sizeof id, rs, true) ||
        form_param(rq, "client_secret", secret, sizeof secret, rs, true) ||
        form_param(rq, "refresh_token", refresh, sizeof refresh, rs, true) ||
        form_param(rq, "scope", scope_in, sizeof scope_in, rs, false))
        goto out;
    if (!c || !secret_equal(id, c->au_client_id) || !secret_equal(secret, c->au_client_secret)) {
        emu_respond_oauth_error(rs, 401, "invalid_client", "The OAuth client was not found.");
        goto out;
    }
    if (!secret_equal(refresh, c->au_refresh_token)) {
        emu_respond_oauth_error(rs, 400, "invalid_grant", "Token has been expired or revoked.");
        goto out;
    }
    if (!scope_in[0])
        snprintf(scopes, sizeof scopes, "%s", DEFAULT_USER_SCOPES);
    else if (emu_scopes_normalize(scope_in, ' ', scopes, sizeof scopes) != 0) {
        emu_respond_oauth_error(rs, 400, "invalid_scope", "The scope parameter is not valid.");
        goto out;
    }
    respond_token(rq, rs, EMU_AU_PRINCIPAL, scopes, true);
out:
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(refresh, sizeof refresh);
}

void emu_oauth_token(const emu_request *rq, emu_response *rs)
{
    char grant[128];
    if (strcmp(rq->method, "POST") != 0) {
        emu_respond_oauth_error(rs, 405, "invalid_request", "The token endpoint wants POST.");
        return;
    }
    if (form_param(rq, "grant_type", grant, sizeof grant, rs, true) != 0)
        return;
    if (strcmp(grant, "urn:ietf:params:oauth:grant-type:jwt-bearer") == 0)
        jwt_grant(rq, rs);
    else if (strcmp(grant, "refresh_token") == 0)
        refresh_grant(rq, rs);
    else
        emu_respond_oauth_error(rs, 400, "unsupported_grant_type", "Invalid grant_type: %.100s",
                                grant);
}

/* ---------------- GCE metadata server ---------------- */

#define MD_PREFIX "/computeMetadata/v1"
#define MD_SA "/instance/service-accounts/"

int emu_metadata_is_path(const char *path)
{
    size_t n = strlen(MD_PREFIX);
    /* "/" is the ping some clients send to detect a metadata server. */
    return strcmp(path, "/") == 0 ||
           (strncmp(path, MD_PREFIX, n) == 0 && (path[n] == '\0' || path[n] == '/'));
}

static void metadata_token(const emu_request *rq, emu_response *rs)
{
    const char *q = emu_request_query(rq, "scopes");
    char scopes[EMU_SCOPES_MAX];
    if (!q || !q[0])
        snprintf(scopes, sizeof scopes, "%s", EMU_SCOPE_CLOUD_PLATFORM);
    else if (emu_scopes_normalize(q, ',', scopes, sizeof scopes) != 0) {
        emu_respond_text(rs, 400, "invalid scopes parameter\n");
        return;
    }
    respond_token(rq, rs, EMU_SA_EMAIL, scopes, false);
}

/* The account's directory; with ?recursive=true the JSON google-auth reads first. */
static void service_account_info(const emu_request *rq, emu_response *rs)
{
    const char *rec = emu_request_query(rq, "recursive");
    if (rec && strcmp(rec, "true") == 0)
        emu_respond_json(rs, 200, json_pack("{s:[s],s:s,s:[s]}", "aliases", "default", "email",
                                            EMU_SA_EMAIL, "scopes", EMU_SCOPE_CLOUD_PLATFORM));
    else
        emu_respond_text(rs, 200, "aliases\nemail\nscopes\ntoken\n");
}

void emu_metadata_handle(const emu_request *rq, emu_response *rs)
{
    const char *flavor = emu_request_header(rq, "Metadata-Flavor");
    const char *p = rq->path + (strcmp(rq->path, "/") == 0 ? 1 : strlen(MD_PREFIX));

    if (strcmp(rq->method, "GET") != 0) {
        emu_respond_text(rs, 405, "Method not allowed\n");
    } else if (!flavor || strcmp(flavor, "Google") != 0) {
        emu_respond_text(rs, 403, "Missing Metadata-Flavor:Google header.\n");
    } else if (*p == '\0' || strcmp(p, "/") == 0) {
        emu_respond_text(rs, 200, rq->path[1] ? "instance/\nproject/\nuniverse/\n"
                                              : "computeMetadata/\n");
    } else if (strcmp(p, "/project/project-id") == 0) {
        emu_respond_text(rs, 200, EMU_SA_PROJECT);
    } else if (strcmp(p, "/universe/universe-domain") == 0) {
        emu_respond_text(rs, 200, "googleapis.com");
    } else if (strncmp(p, MD_SA, strlen(MD_SA)) == 0) {
        const char *acct = p + strlen(MD_SA);
        const char *slash = strchr(acct, '/');
        size_t alen = slash ? (size_t)(slash - acct) : strlen(acct);
        bool known = (alen == 7 && strncmp(acct, "default", 7) == 0) ||
                     (alen == strlen(EMU_SA_EMAIL) && strncmp(acct, EMU_SA_EMAIL, alen) == 0);
        const char *what = slash ? slash : "";
        if (!known)
            emu_respond_text(rs, 404, "Not Found\n");
        else if (strcmp(what, "/token") == 0)
            metadata_token(rq, rs);
        else if (strcmp(what, "/email") == 0)
            emu_respond_text(rs, 200, EMU_SA_EMAIL);
        else if (strcmp(what, "/scopes") == 0)
            emu_respond_text(rs, 200, EMU_SCOPE_CLOUD_PLATFORM "\n");
        else if (what[0] == '\0' || strcmp(what, "/") == 0)
            service_account_info(rq, rs);
        else
            emu_respond_text(rs, 404, "Not Found\n");
    } else {
        emu_respond_text(rs, 404, "Not Found\n");
    }
    rs->metadata_flavor = true;
}

/* ---------------- IAM Credentials: generateAccessToken ---------------- */

#define IAM_PREFIX "/v1/projects/"
#define IAM_SA "/serviceAccounts/"
#define IAM_METHOD ":generateAccessToken"

int emu_iamcredentials_parse_path(const char *path, char *email, size_t cap)
{
    if (strncmp(path, IAM_PREFIX, strlen(IAM_PREFIX)) != 0)
        return -1;
    const char *p = strchr(path + strlen(IAM_PREFIX), '/');
    if (!p || p == path + strlen(IAM_PREFIX) || strncmp(p, IAM_SA, strlen(IAM_SA)) != 0)
        return -1;
    p += strlen(IAM_SA);
    size_t n = strlen(p), m = strlen(IAM_METHOD);
    if (n <= m || strcmp(p + n - m, IAM_METHOD) != 0 || n - m >= cap ||
        memchr(p, '/', n - m))
        return -1;
    memcpy(email, p, n - m);
    email[n - m] = '\0';
    return 0;
}

/* "3600s" -> 3600; -1 if malformed or out of range. */
static long parse_duration(const char *s)
{
    char num[24];
    size_t n = strlen(s);
    long v;
    if (n < 2 || n > sizeof num || s[n - 1] != 's')
        return -1;
    memcpy(num, s, n - 1);
    num[n - 1] = '\0';
    return emu_parse_long(num, 1, IMPERSONATION_LIFETIME_MAX, &v) == 0 ? v : -1;
}

void emu_iamcredentials_generate(const emu_request *rq, const char *email, emu_response *rs)
{
    char scopes[EMU_SCOPES_MAX], token[EMU_ISSUED_TOKEN_MAX], when[32];
    size_t i;
    json_t *v, *body = NULL;
    time_t expiry;

    if (strcmp(rq->method, "POST") != 0) {
        emu_respond_error(rs, 404, NULL, "Not found: %s %s (want POST)", rq->method, rq->path);
        return;
    }
    if (emu_authorize(rq, rs, EMU_SCOPE_CLOUD_PLATFORM, NULL, NULL) != 0)
        return;
    if (!strchr(email, '@') || strlen(email) >= EMU_PRINCIPAL_MAX) {
        emu_respond_error(rs, 400, NULL, "Invalid service account email: %.200s", email);
        return;
    }
    if (!(body = emu_request_json(rq, rs)))
        return;
    json_t *scope = json_object_get(body, "scope");
    json_t *life = json_object_get(body, "lifetime");
    json_t *delegates = json_object_get(body, "delegates");
    if (emu_scopes_from_json(scope, scopes, sizeof scopes) != 0) {
        emu_respond_error(rs, 400, NULL, "Request contains an invalid argument: scope must be a "
                                         "non-empty list of scope strings.");
        goto out;
    }
    if (delegates && !json_is_array(delegates)) {
        emu_respond_error(rs, 400, NULL, "Request contains an invalid argument: delegates must "
                                         "be a list of strings.");
        goto out;
    }
    json_array_foreach(delegates, i, v) {
        if (!json_is_string(v)) {
            emu_respond_error(rs, 400, NULL, "Request contains an invalid argument: "
                                             "delegates[%zu].", i);
            goto out;
        }
    }
    long lifetime = life ? parse_duration(json_is_string(life) ? json_string_value(life) : "")
                         : 3600;
    if (lifetime < 0) {
        emu_respond_error(rs, 400, NULL,
                          "Request contains an invalid argument: lifetime must be \"Ns\" with N "
                          "in [1, %ld].", IMPERSONATION_LIFETIME_MAX);
        goto out;
    }
    if (emu_tokens_issue(rq->api->tokens, email, scopes, lifetime, token, sizeof token,
                         &expiry) != 0) {
        emu_respond_error(rs, 500, NULL, "cannot issue a token");
        goto out;
    }
    emu_rfc3339(expiry, when, sizeof when);
    emu_respond_json(rs, 200, json_pack("{s:s,s:s}", "accessToken", token, "expireTime", when));
    OPENSSL_cleanse(token, sizeof token);
out:
    json_decref(body);
}
