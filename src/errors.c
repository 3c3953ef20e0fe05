/* Error codes, categories and the thread-local last error. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CSQL_ERRMSG_MAX 1024
#define CSQL_REASON_MAX 64

typedef struct {
    csql_error pub;
    char message[CSQL_ERRMSG_MAX];
    char reason[CSQL_REASON_MAX];
} error_slot;

static _Thread_local error_slot tls_error;

typedef struct {
    int code;
    csql_err_category cat;
    const char *text;
} err_entry;

static const err_entry err_table[] = {
    {CSQL_OK, CSQL_CAT_OK, "success"},
    {CSQL_ERR_INTERNAL, CSQL_CAT_INTERNAL, "internal error"},
    {CSQL_ERR_INVALID_ARGUMENT, CSQL_CAT_USAGE, "invalid argument"},
    {CSQL_ERR_NOMEM, CSQL_CAT_INTERNAL, "out of memory"},
    {CSQL_ERR_BAD_INSTANCE_NAME, CSQL_CAT_CONFIG, "invalid instance connection name"},
    {CSQL_ERR_BAD_CONFIG, CSQL_CAT_CONFIG, "invalid configuration"},
    {CSQL_ERR_CREDENTIALS, CSQL_CAT_AUTH, "credentials missing or invalid"},
    {CSQL_ERR_TOKEN, CSQL_CAT_AUTH, "could not obtain an access token"},
    {CSQL_ERR_API, CSQL_CAT_API, "SQL Admin API error"},
    {CSQL_ERR_API_RESPONSE, CSQL_CAT_API, "malformed SQL Admin API response"},
    {CSQL_ERR_NOT_FOUND, CSQL_CAT_API, "instance not found"},
    {CSQL_ERR_PERMISSION_DENIED, CSQL_CAT_AUTH, "permission denied"},
    {CSQL_ERR_REGION_MISMATCH, CSQL_CAT_CONFIG, "instance region mismatch"},
    {CSQL_ERR_UNSUPPORTED_INSTANCE, CSQL_CAT_CONFIG, "unsupported instance"},
    {CSQL_ERR_NO_IP_TYPE, CSQL_CAT_CONFIG, "instance has no address of the requested type"},
    {CSQL_ERR_DNS, CSQL_CAT_NETWORK, "name resolution failed"},
    {CSQL_ERR_CONNECT, CSQL_CAT_NETWORK, "TCP connect failed"},
    {CSQL_ERR_IO, CSQL_CAT_NETWORK, "socket I/O error"},
    {CSQL_ERR_TLS_HANDSHAKE, CSQL_CAT_TLS, "TLS handshake failed"},
    {CSQL_ERR_TLS_VERIFY, CSQL_CAT_TLS, "server certificate rejected"},
    {CSQL_ERR_TLS_IO, CSQL_CAT_TLS, "TLS I/O error"},
    {CSQL_ERR_TIMEOUT, CSQL_CAT_TIMEOUT, "timed out"},
    {CSQL_ERR_CLOSED, CSQL_CAT_CLOSED, "closed"},
    {CSQL_ERR_IAM_UNSUPPORTED, CSQL_CAT_CONFIG, "automatic IAM authentication not supported"},
    {CSQL_ERR_RATE_LIMITED, CSQL_CAT_API, "rate limited by the SQL Admin API"},
    {CSQL_ERR_MDX, CSQL_CAT_TLS, "metadata exchange refused"},
    {CSQL_ERR_WOULD_BLOCK, CSQL_CAT_USAGE, "operation would block"},
};

static const err_entry *find_entry(int code)
{
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++) {
        if (err_table[i].code == code) {
            return &err_table[i];
        }
    }
    return NULL;
}

csql_err_category csql_err_category_of(int err)
{
    const err_entry *e = find_entry(err);
    return e ? e->cat : CSQL_CAT_INTERNAL;
}

const char *csql_strerror(int err)
{
    const err_entry *e = find_entry(err);
    return e ? e->text : "unknown error";
}

const char *csql_err_category_name(csql_err_category cat)
{
    static const char *const names[] = {"OK", "USAGE", "CONFIG", "AUTH", "API",
                                        "NETWORK", "TLS", "TIMEOUT", "CLOSED", "INTERNAL"};
    if ((int)cat < 0 || (size_t)cat >= sizeof(names) / sizeof(names[0])) {
        return "UNKNOWN";
    }
    return names[cat];
}

static void set_fields(int code, long http_status, const char *reason)
{
    tls_error.pub.code = code;
    tls_error.pub.category = csql_err_category_of(code);
    tls_error.pub.http_status = http_status;
    snprintf(tls_error.reason, sizeof(tls_error.reason), "%s", reason ? reason : "");
    tls_error.pub.message = tls_error.message;
    tls_error.pub.api_reason = tls_error.reason;
}

static void format_message(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

static void format_message(const char *fmt, va_list ap)
{
    char tmp[CSQL_ERRMSG_MAX - 6];
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    /* Every message carries the library's name so it can be told apart in logs. */
    snprintf(tls_error.message, sizeof(tls_error.message), "csql: %s", tmp);
}

int csql__error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    format_message(fmt, ap);
    va_end(ap);
    set_fields(code, 0, NULL);
    return code;
}

int csql__error_http(int code, long http_status, const char *api_reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    format_message(fmt, ap);
    va_end(ap);
    set_fields(code, http_status, api_reason);
    return code;
}

void csql__error_prefix(const char *fmt, ...)
{
    char prefix[256];
    char old[CSQL_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    const char *body = tls_error.message;
    if (strncmp(body, "csql: ", 6) == 0) {
        body += 6;
    }
    snprintf(old, sizeof(old), "%s", body);
    snprintf(tls_error.message, sizeof(tls_error.message), "csql: %s: %s", prefix, old);
    tls_error.pub.message = tls_error.message;
}

int csql__error_raise_copy(const csql_error *e)
{
    char msg[CSQL_ERRMSG_MAX];
    char reason[CSQL_REASON_MAX];
    snprintf(msg, sizeof(msg), "%s", e->message ? e->message : "");
    snprintf(reason, sizeof(reason), "%s", e->api_reason ? e->api_reason : "");
    snprintf(tls_error.message, sizeof(tls_error.message), "%s", msg);
    set_fields(e->code, e->http_status, reason);
    return e->code;
}

const csql_error *csql_error_last(void)
{
    if (tls_error.pub.message == NULL) {
        tls_error.pub.message = tls_error.message;
        tls_error.pub.api_reason = tls_error.reason;
    }
    return &tls_error.pub;
}

void csql_error_clear(void)
{
    tls_error.message[0] = '\0';
    set_fields(CSQL_OK, 0, NULL);
}

int csql__error_save(csql__saved_error *out)
{
    const csql_error *e = csql_error_last();
    char *msg = strdup(e->message);
    char *reason = strdup(e->api_reason);
    if (msg == NULL || reason == NULL) {
        free(msg);
        free(reason);
        return CSQL_ERR_NOMEM;
    }
    csql__saved_error_dispose(out);
    out->code = e->code;
    out->http_status = e->http_status;
    out->message = msg;
    out->api_reason = reason;
    return CSQL_OK;
}

int csql__error_restore(const csql__saved_error *saved)
{
    char fallback[160];
    const char *msg = saved->message;
    if (msg == NULL) {
        /* Saving the message needed memory that was not there: still say what the code means. */
        snprintf(fallback, sizeof(fallback), "csql: %s (details lost: out of memory)",
                 csql_strerror(saved->code));
        msg = fallback;
    }
    csql_error e = {saved->code, csql_err_category_of(saved->code), msg, saved->http_status,
                    saved->api_reason ? saved->api_reason : ""};
    return csql__error_raise_copy(&e);
}

void csql__saved_error_dispose(csql__saved_error *saved)
{
    free(saved->message);
    free(saved->api_reason);
    saved->message = NULL;
    saved->api_reason = NULL;
    saved->code = 0;
    saved->http_status = 0;
}
