/*
 * service_account and authorized_user credentials files: parsing (pure) and
 * the token sources they make (JWT-bearer and refresh_token grants).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "creds_internal.h"
#include "error.h"
#include "http.h"
#include "util/clock.h"

/* ---------------- parsing ---------------- */

typedef struct field_spec {
    const char *name;
    size_t offset; /* into csql__creds_file */
    bool required;
    bool secret;
} field_spec;

#define F(name, member, req, sec) {name, offsetof(csql__creds_file, member), req, sec}

static const field_spec sa_fields[] = {
    F("client_email", client_email, true, false),
    F("private_key", private_key, true, true),
    F("private_key_id", private_key_id, false, false),
    F("token_uri", token_uri, false, false),
};

static const field_spec user_fields[] = {
    F("client_id", client_id, true, false),
    F("client_secret", client_secret, true, true),
    F("refresh_token", refresh_token, true, true),
    F("token_uri", token_uri, false, false),
};

#undef F

static int take_field(json_t *root, const field_spec *fs, const char *origin,
                      const char *type, csql__creds_file *out)
{
    json_t *v = json_object_get(root, fs->name);
    if (v == NULL || json_is_null(v)) {
        if (fs->required) {
            return csql__error(CSQL_ERR_CREDENTIALS, "%s: missing field \"%s\" (%s)", origin,
                               fs->name, type);
        }
        return CSQL_OK;
    }
    if (!json_is_string(v)) {
        return csql__error(CSQL_ERR_CREDENTIALS, "%s: field \"%s\" is not a string", origin,
                           fs->name);
    }
    if (json_string_length(v) == 0) {
        if (fs->required) {
            return csql__error(CSQL_ERR_CREDENTIALS, "%s: field \"%s\" is empty (%s)", origin,
                               fs->name, type);
        }
        return CSQL_OK;
    }
    if (strlen(json_string_value(v)) != json_string_length(v)) {
        return csql__error(CSQL_ERR_CREDENTIALS, "%s: field \"%s\" contains a NUL character",
                           origin, fs->name);
    }
    char *copy = strdup(json_string_value(v));
    if (copy == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "%s: out of memory", origin);
    }
    *(char **)((char *)out + fs->offset) = copy;
    return CSQL_OK;
}

/* Wipe every secret field's text inside the parsed JSON before it is released. */
static void wipe_secrets(json_t *root)
{
    static const char *const secret_names[] = {"private_key", "client_secret", "refresh_token"};
    for (size_t i = 0; i < sizeof(secret_names) / sizeof(secret_names[0]); i++) {
        json_t *v = json_object_get(root, secret_names[i]);
        if (v != NULL && json_is_string(v)) {
            csql__json_wipe_string(v);
        }
    }
}

static int check_token_uri(const csql__creds_file *f, const char *origin)
{
    const char *u = f->token_uri;
    if (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0) {
        return csql__error(CSQL_ERR_CREDENTIALS,
                           "%s: token_uri is not an http(s) URL", origin);
    }
    return CSQL_OK;
}

int csql__creds_file_parse(const char *json, size_t len, const char *origin,
                           csql__creds_file *out)
{
    memset(out, 0, sizeof(*out));
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = CSQL_OK;
    if (root == NULL && json_error_code(&jerr) == json_error_out_of_memory) {
        return csql__error(CSQL_ERR_NOMEM, "%s: out of memory parsing JSON", origin);
    }
    if (root == NULL) {
        /* jerr.text may quote the input (a key); report the position only. */
        return csql__error(CSQL_ERR_CREDENTIALS, "%s: not valid JSON (line %d, column %d)",
                           origin, jerr.line, jerr.column);
    }
    if (!json_is_object(root)) {
        rc = csql__error(CSQL_ERR_CREDENTIALS, "%s: not a JSON object", origin);
        goto done;
    }
    json_t *type = json_object_get(root, "type");
    if (type == NULL) {
        rc = csql__error(CSQL_ERR_CREDENTIALS, "%s: missing field \"type\"", origin);
        goto done;
    }
    if (!json_is_string(type)) {
        rc = csql__error(CSQL_ERR_CREDENTIALS, "%s: field \"type\" is not a string", origin);
        goto done;
    }
    const char *t = json_string_value(type);
    const field_spec *fields;
    size_t nfields;
    if (strcmp(t, "service_account") == 0) {
        out->type = CSQL__FILE_SERVICE_ACCOUNT;
        fields = sa_fields;
        nfields = sizeof(sa_fields) / sizeof(sa_fields[0]);
    } else if (strcmp(t, "authorized_user") == 0) {
        out->type = CSQL__FILE_AUTHORIZED_USER;
        fields = user_fields;
        nfields = sizeof(user_fields) / sizeof(user_fields[0]);
    } else {
        char shown[64];
        size_t i = 0;
        for (; t[i] != '\0' && i + 1 < sizeof(shown); i++) {
            unsigned char c = (unsigned char)t[i];
            shown[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
        }
        shown[i] = '\0';
        rc = csql__error(CSQL_ERR_CREDENTIALS,
                         "%s: unsupported credentials type \"%s\" (want service_account or "
                         "authorized_user)",
                         origin, shown);
        goto done;
    }
    for (size_t i = 0; i < nfields && rc == CSQL_OK; i++) {
        rc = take_field(root, &fields[i], origin, t, out);
    }
    if (rc == CSQL_OK && out->token_uri == NULL) {
        out->token_uri = strdup(CSQL__GOOGLE_TOKEN_URI);
        if (out->token_uri == NULL) {
            rc = csql__error(CSQL_ERR_NOMEM, "%s: out of memory", origin);
        }
    }
    if (rc == CSQL_OK) {
        rc = check_token_uri(out, origin);
    }
done:
    wipe_secrets(root);
    json_decref(root);
    if (rc != CSQL_OK) {
        csql__creds_file_dispose(out);
    }
    return rc;
}

static int read_bounded(const char *path, const char *what, char **buf, size_t *len)
{
    char ebuf[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return csql__error(CSQL_ERR_CREDENTIALS, "%s %s: cannot open: %s", what, path,
                           strerror_r(errno, ebuf, sizeof(ebuf)));
    }
    int rc = CSQL_OK;
    char *data = malloc(CSQL__CREDS_FILE_MAX + 1);
    size_t n = 0;
    struct stat st;
    if (data == NULL) {
        rc = csql__error(CSQL_ERR_NOMEM, "%s %s: out of memory", what, path);
        goto done;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = csql__error(CSQL_ERR_CREDENTIALS, "%s %s: not a regular file", what, path);
        goto done;
    }
    while (n <= CSQL__CREDS_FILE_MAX) {
        ssize_t r = read(fd, data + n, CSQL__CREDS_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rc = csql__error(CSQL_ERR_CREDENTIALS, "%s %s: read failed: %s", what, path,
                             strerror_r(errno, ebuf, sizeof(ebuf)));
            goto done;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
    }
    if (n > CSQL__CREDS_FILE_MAX) {
        rc = csql__error(CSQL_ERR_CREDENTIALS, "%s %s: larger than %d bytes", what, path,
                         CSQL__CREDS_FILE_MAX);
        goto done;
    }
    data[n] = '\0';
    *buf = data;
    *len = n;
    data = NULL;
done:
    if (data != NULL) {
        OPENSSL_cleanse(data, n);
        free(data);
    }
    close(fd);
    return rc;
}

int csql__creds_file_load(const char *path, const char *what, csql__creds_file *out)
{
    memset(out, 0, sizeof(*out));
    char *data = NULL;
    size_t len = 0;
    int rc = read_bounded(path, what, &data, &len);
    if (rc != CSQL_OK) {
        return rc;
    }
    char origin[512];
    snprintf(origin, sizeof(origin), "%s %s", what, path);
    rc = csql__creds_file_parse(data, len, origin, out);
    OPENSSL_cleanse(data, len);
    free(data);
    return rc;
}

void csql__creds_file_dispose(csql__creds_file *f)
{
    if (f == NULL) {
        return;
    }
    free(f->client_email);
    csql__secret_free(f->private_key);
    free(f->private_key_id);
    free(f->client_id);
    csql__secret_free(f->client_secret);
    csql__secret_free(f->refresh_token);
    free(f->token_uri);
    memset(f, 0, sizeof(*f));
}

/* ---------------- token sources ---------------- */

typedef struct file_source {
    csql__creds_file file;
    EVP_PKEY *key; /* service_account */
} file_source;

static void file_source_free(void *state)
{
    file_source *fs = state;
    if (fs == NULL) {
        return;
    }
    csql__creds_file_dispose(&fs->file);
    EVP_PKEY_free(fs->key);
    free(fs);
}

/* POST a form to the token endpoint and parse the answer. The caller wipes body. */
static int post_token_form(const char *token_uri, const char *body, size_t body_len,
                           int64_t deadline_ms, csql__token *out)
{
    static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                          "Accept: application/json", NULL};
    csql__http_request req = {
        .method = "POST",
        .url = token_uri,
        .headers = headers,
        .body = body,
        .body_len = body_len,
        .max_response = CSQL__TOKEN_RESPONSE_MAX,
        .deadline_ms = deadline_ms,
    };
    char what[300];
    char host[256] = "";
    const char *h = strstr(token_uri, "://");
    if (h != NULL) {
        h += 3;
        size_t n = strcspn(h, "/?#");
        const char *at = memchr(h, '@', n);
        if (at != NULL) { /* never show user:password@ */
            n -= (size_t)(at + 1 - h);
            h = at + 1;
        }
        if (n >= sizeof(host)) {
            n = sizeof(host) - 1;
        }
        memcpy(host, h, n);
        host[n] = '\0';
    }
    snprintf(what, sizeof(what), "token endpoint %s", host);
    csql__http_response resp = {0};
    int rc = csql__http_perform(&req, &resp);
    if (rc != CSQL_OK) {
        return csql__token_transport_error(rc, what);
    }
    rc = csql__token_response_parse(resp.status, resp.body, resp.body_len, what, csql__wall_s(),
                                    out);
    OPENSSL_cleanse(resp.body, resp.body_len);
    csql__http_response_dispose(&resp);
    return rc;
}

static int sa_fetch(void *state, csql__scope_kind kind, int64_t deadline_ms, csql__token *out)
{
    file_source *fs = state;
    static const char prefix[] =
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
    /* iat is real time (the server checks it), not the test-shifted clock. */
    csql__jwt_claims claims = {
        .kid = fs->file.private_key_id,
        .iss = fs->file.client_email,
        .scope = csql__scope_of(kind),
        .aud = fs->file.token_uri,
        .iat = (int64_t)time(NULL),
    };
    char *jwt = NULL;
    int rc = csql__jwt_sign(fs->key, &claims, &jwt);
    if (rc != CSQL_OK) {
        return rc;
    }
    size_t len = sizeof(prefix) - 1 + strlen(jwt);
    char *body = malloc(len + 1);
    if (body == NULL) {
        csql__secret_free(jwt);
        return csql__error(CSQL_ERR_NOMEM, "out of memory building a token request");
    }
    /* base64url and '.' need no form escaping */
    snprintf(body, len + 1, "%s%s", prefix, jwt);
    csql__secret_free(jwt);
    rc = post_token_form(fs->file.token_uri, body, len, deadline_ms, out);
    csql__secret_free(body);
    return rc;
}

/* Append "&name=escaped(value)" (or "name=..." first) to a growing buffer. */
static int form_add(char **buf, size_t *len, const char *name, const char *value)
{
    char *esc = csql__http_escape(value);
    if (esc == NULL) {
        return CSQL_ERR_NOMEM;
    }
    size_t add = (*len ? 1 : 0) + strlen(name) + 1 + strlen(esc);
    char *p = malloc(*len + add + 1);
    if (p == NULL) {
        csql__secret_free(esc);
        return CSQL_ERR_NOMEM;
    }
    snprintf(p, *len + add + 1, "%s%s%s=%s", *buf ? *buf : "", *len ? "&" : "", name, esc);
    csql__secret_free(esc);
    csql__secret_free(*buf);
    *buf = p;
    *len += add;
    return CSQL_OK;
}

static int user_fetch(void *state, csql__scope_kind kind, int64_t deadline_ms, csql__token *out)
{
    file_source *fs = state;
    char *body = NULL;
    size_t len = 0;
    int rc = form_add(&body, &len, "grant_type", "refresh_token");
    if (rc == CSQL_OK) {
        rc = form_add(&body, &len, "client_id", fs->file.client_id);
    }
    if (rc == CSQL_OK) {
        rc = form_add(&body, &len, "client_secret", fs->file.client_secret);
    }
    if (rc == CSQL_OK) {
        rc = form_add(&body, &len, "refresh_token", fs->file.refresh_token);
    }
    /* A user's refresh token carries the scopes granted at login (gcloud grants
     * cloud-platform and sqlservice.login): only the login token is narrowed. */
    if (rc == CSQL_OK && kind == CSQL__SK_LOGIN) {
        rc = form_add(&body, &len, "scope", csql__scope_of(kind));
    }
    if (rc != CSQL_OK) {
        csql__secret_free(body);
        return csql__error(CSQL_ERR_NOMEM, "out of memory building a token request");
    }
    rc = post_token_form(fs->file.token_uri, body, len, deadline_ms, out);
    csql__secret_free(body);
    return rc;
}

int csql__source_from_file(csql__creds_file *file, const char *origin, csql__token_source *out)
{
    memset(out, 0, sizeof(*out));
    file_source *fs = calloc(1, sizeof(*fs));
    if (fs == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "%s: out of memory", origin);
    }
    fs->file = *file;
    memset(file, 0, sizeof(*file));

    char desc[320];
    if (fs->file.type == CSQL__FILE_SERVICE_ACCOUNT) {
        if (csql__rsa_key_from_pem(fs->file.private_key, strlen(fs->file.private_key), &fs->key) !=
            0) {
            file_source_free(fs);
            return csql__error(CSQL_ERR_CREDENTIALS,
                               "%s: private_key is not a PEM RSA private key", origin);
        }
        /* The parsed key is all we need; drop the PEM copy now. */
        csql__secret_free(fs->file.private_key);
        fs->file.private_key = NULL;
        snprintf(desc, sizeof(desc), "service account %s", fs->file.client_email);
        out->fetch = sa_fetch;
    } else {
        snprintf(desc, sizeof(desc), "authorized user (client %s)", fs->file.client_id);
        out->fetch = user_fetch;
    }
    out->description = strdup(desc);
    if (out->description == NULL) {
        file_source_free(fs);
        memset(out, 0, sizeof(*out));
        return csql__error(CSQL_ERR_NOMEM, "%s: out of memory", origin);
    }
    out->free = file_source_free;
    out->state = fs;
    out->cacheable = true;
    return CSQL_OK;
}
