/*
 * The emulator's HTTP daemon: bounded request bodies, routing to the
 * handlers, per-endpoint counters, injected faults, response helpers, bearer
 * token checks and the optional request log.
 */
#include "api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "util.h"

#define CONNECTION_LIMIT 512
#define CONNECTION_TIMEOUT_S 60
#define DRAIN_MAX (16u * 1024 * 1024) /* oversized bodies read and dropped before hanging up */
#define PATH_MAX_LEN 2048
#define LATENCY_SLICE_MS 20

/* ---------------- response helpers ---------------- */

static void set_body(emu_response *rs, int status, char *body, size_t len, const char *type)
{
    free(rs->body);
    rs->status = status;
    rs->body = body;
    rs->len = len;
    rs->content_type = type;
}

void emu_respond_json(emu_response *rs, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        set_body(rs, 500, strdup("{\"error\":{\"code\":500,\"message\":\"out of memory\","
                                 "\"status\":\"INTERNAL\"}}"),
                 0, "application/json; charset=UTF-8");
        rs->len = rs->body ? strlen(rs->body) : 0;
        return;
    }
    set_body(rs, status, text, strlen(text), "application/json; charset=UTF-8");
}

/* The legacy "errors[].reason" Google puts beside the status. */
static const char *legacy_reason(int status)
{
    switch (status) {
    case 400: return "invalid";
    case 401: return "authError";
    case 403: return "forbidden";
    case 404: return "notFound";
    case 413: return "uploadTooLarge";
    case 429: return "rateLimitExceeded";
    case 503: return "backendError";
    default: return status >= 500 ? "internalError" : "invalid";
    }
}

static void respond_error_v(emu_response *rs, int status, const char *reason, const char *fmt,
                            va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    json_t *err = json_pack("{s:{s:i,s:s,s:s,s:[{s:s,s:s,s:s}]}}", "error", "code", status,
                            "message", msg, "status",
                            reason && reason[0] ? reason : emu_http_status_name(status),
                            "errors", "message", msg, "domain", "global", "reason",
                            legacy_reason(status));
    emu_respond_json(rs, status, err);
}

void emu_respond_error(emu_response *rs, int status, const char *reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    respond_error_v(rs, status, reason, fmt, ap);
    va_end(ap);
}

void emu_respond_oauth_error(emu_response *rs, int status, const char *error, const char *fmt,
                             ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emu_respond_json(rs, status,
                     json_pack("{s:s,s:s}", "error", error, "error_description", msg));
}

void emu_respond_text(emu_response *rs, int status, const char *text)
{
    char *body = strdup(text);
    set_body(rs, body ? status : 500, body, body ? strlen(body) : 0,
             "text/plain; charset=UTF-8");
}

/* ---------------- request helpers ---------------- */

const char *emu_request_header(const emu_request *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *emu_request_query(const emu_request *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

json_t *emu_request_json(const emu_request *rq, emu_response *rs)
{
    json_error_t jerr;
    json_t *j = json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        emu_respond_error(rs, 400, NULL, "Invalid JSON payload received: %s (line %d, column %d)",
                          jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        emu_respond_error(rs, 400, NULL, "Invalid JSON payload received: want an object");
        return NULL;
    }
    return j;
}

int emu_authorize(const emu_request *rq, emu_response *rs, const char *scope_a,
                  const char *scope_b, emu_token_info *who)
{
    const char *h = emu_request_header(rq, "Authorization");
    emu_token_info info;

    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        emu_respond_error(rs, 401, NULL,
                          "Request is missing required authentication credential. Expected "
                          "OAuth 2 access token, login cookie or other valid authentication "
                          "credential.");
        return -1;
    }
    const char *token = h + 7;
    while (*token == ' ')
        token++;
    switch (emu_tokens_lookup(rq->api->tokens, token, time(NULL), &info)) {
    case EMU_TOKEN_OK:
        break;
    case EMU_TOKEN_EXPIRED:
        emu_respond_error(rs, 401, NULL,
                          "Request had invalid authentication credentials: the access token "
                          "has expired.");
        return -1;
    default:
        emu_respond_error(rs, 401, NULL,
                          "Request had invalid authentication credentials. Expected OAuth 2 "
                          "access token, login cookie or other valid authentication "
                          "credential.");
        return -1;
    }
    if (!emu_scopes_contain(info.scopes, scope_a) &&
        !(scope_b && emu_scopes_contain(info.scopes, scope_b))) {
        emu_respond_error(rs, 403, NULL,
                          "Request had insufficient authentication scopes (want %s%s%s).",
                          scope_a, scope_b ? " or " : "", scope_b ? scope_b : "");
        return -1;
    }
    if (who)
        *who = info;
    return 0;
}

/* ---------------- routing ---------------- */

typedef struct route {
    emu_endpoint endpoint; /* EMU_EP_COUNT: not counted (admin, unknown) */
    emu_instance *inst;
    int inst_index;
    emu_sqladmin_path sql;
    char email[EMU_PRINCIPAL_MAX];
    bool admin;
} route;

static void find_route(const emu_api *api, const char *path, route *r)
{
    memset(r, 0, sizeof *r);
    r->endpoint = EMU_EP_COUNT;
    r->inst_index = -1;
    if (strncmp(path, "/emulator/", 10) == 0 || strcmp(path, "/emulator") == 0) {
        r->admin = true;
    } else if (emu_sqladmin_parse_path(path, &r->sql) == 0) {
        r->endpoint = r->sql.endpoint;
        for (size_t i = 0; i < api->cfg.n_instances; i++) {
            emu_instance *inst = api->cfg.instances[i];
            if (strcmp(inst->project, r->sql.project) == 0 &&
                strcmp(inst->name, r->sql.instance) == 0) {
                r->inst = inst;
                r->inst_index = (int)i;
                break;
            }
        }
    } else if (strcmp(path, "/token") == 0) {
        r->endpoint = EMU_EP_TOKEN;
    } else if (emu_metadata_is_path(path)) {
        r->endpoint = EMU_EP_METADATA;
    } else if (emu_iamcredentials_parse_path(path, r->email, sizeof r->email) == 0) {
        r->endpoint = EMU_EP_GENERATE_ACCESS_TOKEN;
    }
}

static void sleep_ms(const emu_api *api, long ms)
{
    /* In slices so shutdown is not held up by a long injected latency. */
    while (ms > 0 && !atomic_load(&api->stopping)) {
        long slice = ms < LATENCY_SLICE_MS ? ms : LATENCY_SLICE_MS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = slice * 1000000L};
        nanosleep(&ts, NULL);
        ms -= slice;
    }
}

static void respond_fault(const emu_fault *f, emu_endpoint ep, emu_response *rs)
{
    const char *msg = f->message[0] ? f->message : "Injected fault (csql-emulator).";
    if (ep == EMU_EP_TOKEN) {
        emu_respond_oauth_error(rs, f->status, f->reason[0] ? f->reason : "server_error", "%s",
                                msg);
    } else if (ep == EMU_EP_METADATA) {
        emu_respond_text(rs, f->status, msg);
        rs->metadata_flavor = true;
    } else {
        emu_respond_error(rs, f->status, f->reason, "%s", msg);
    }
    rs->retry_after = f->retry_after;
}

static void dispatch(const emu_request *rq, emu_response *rs)
{
    emu_api *api = rq->api;
    route r;
    emu_fault f;
    bool faulted = false;

    find_route(api, rq->path, &r);
    if (r.admin) {
        emu_admin_handle(rq, rs);
        return;
    }
    if (r.endpoint == EMU_EP_COUNT) {
        emu_respond_error(rs, 404, NULL, "Not found: %s %s", rq->method, rq->path);
        return;
    }
    emu_counters_hit(api->counters, r.endpoint, r.inst_index);
    if (emu_faults_take(api->faults, r.endpoint, r.inst ? r.inst->connection_name : NULL, &f)) {
        faulted = true;
        sleep_ms(api, f.latency_ms);
    }
    if (faulted && f.status) {
        respond_fault(&f, r.endpoint, rs);
    } else {
        switch (r.endpoint) {
        case EMU_EP_TOKEN: emu_oauth_token(rq, rs); break;
        case EMU_EP_METADATA: emu_metadata_handle(rq, rs); break;
        case EMU_EP_GENERATE_ACCESS_TOKEN: emu_iamcredentials_generate(rq, r.email, rs); break;
        default: emu_sqladmin_handle(rq, &r.sql, r.inst, rs); break;
        }
    }
    if (faulted && f.malformed) {
        /* Half an object is never valid JSON: the client's parser must cope. */
        rs->len /= 2;
        if (!f.status)
            rs->status = 200;
    }
}

/* ---------------- libmicrohttpd glue ---------------- */

typedef struct conn_state {
    char *body;
    size_t len;
    size_t drained;
    bool too_large;
} conn_state;

/* Copy url with runs of '/' collapsed (clients that join "host/" + "/path"). */
static int normalize_path(const char *url, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = url; *p; p++) {
        if (*p == '/' && o > 0 && out[o - 1] == '/')
            continue;
        if (o + 1 >= cap)
            return -1;
        out[o++] = *p;
    }
    out[o] = '\0';
    return 0;
}

static enum MHD_Result queue(struct MHD_Connection *conn, emu_response *rs)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(rs->len, rs->body, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        return MHD_NO;
    rs->body = NULL;
    if (rs->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rs->content_type);
    if (rs->retry_after > 0) {
        char ra[24];
        snprintf(ra, sizeof ra, "%ld", rs->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (rs->metadata_flavor)
        MHD_add_response_header(resp, "Metadata-Flavor", "Google");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)rs->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void log_request(const emu_api *api, const char *method, const char *path, int status,
                        const struct timespec *t0)
{
    struct timespec t1;
    if (!api->cfg.verbose)
        return;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
    /* The path only: never headers, bodies or query strings (tokens, keys). */
    fprintf(stderr, "csql-emulator: %s %.200s -> %d (%ld ms)\n", method, path, status, ms);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    emu_api *api = cls;
    conn_state *st = *con_cls;
    emu_response rs = {0};
    struct timespec t0;
    char path[PATH_MAX_LEN];
    (void)version;

    if (!st) {
        if (!(st = calloc(1, sizeof *st)))
            return MHD_NO;
        *con_cls = st;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > EMU_API_BODY_MAX) {
            /* Refuse before reading: a client sending "Expect: 100-continue" stops here. */
            emu_respond_error(&rs, 413, NULL, "Request body is larger than %d bytes.",
                              EMU_API_BODY_MAX);
            enum MHD_Result ret = queue(conn, &rs);
            clock_gettime(CLOCK_MONOTONIC, &t0);
            log_request(api, method, url, 413, &t0);
            free(rs.body);
            return ret;
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (st->too_large || st->len + n > EMU_API_BODY_MAX) {
            st->too_large = true;
            st->drained += n;
            return st->drained > DRAIN_MAX ? MHD_NO : MHD_YES;
        }
        char *nb = realloc(st->body, st->len + n + 1);
        if (!nb)
            return MHD_NO;
        memcpy(nb + st->len, upload_data, n);
        st->body = nb;
        st->len += n;
        st->body[st->len] = '\0';
        return MHD_YES;
    }

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (st->too_large) {
        emu_respond_error(&rs, 413, NULL, "Request body is larger than %d bytes.",
                          EMU_API_BODY_MAX);
    } else if (normalize_path(url, path, sizeof path) != 0) {
        emu_respond_error(&rs, 404, NULL, "Not found: path too long");
    } else {
        emu_request rq = {.api = api,
                          .conn = conn,
                          .method = method,
                          .path = path,
                          .body = st->body ? st->body : "",
                          .body_len = st->len};
        dispatch(&rq, &rs);
    }
    if (!rs.status)
        emu_respond_error(&rs, 500, NULL, "internal error: no response");
    log_request(api, method, url, rs.status, &t0);
    enum MHD_Result ret = queue(conn, &rs);
    free(rs.body);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    conn_state *st = *con_cls;
    (void)cls, (void)conn, (void)toe;
    if (st) {
        free(st->body);
        free(st);
        *con_cls = NULL;
    }
}

/* ---------------- lifecycle ---------------- */

static int make_addr(const char *address, int port, struct sockaddr_storage *ss, bool *v6)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, address, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *v6 = false;
        return 0;
    }
    if (inet_pton(AF_INET6, address, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *v6 = true;
        return 0;
    }
    return -1;
}

emu_api *emu_api_start(const emu_api_config *cfg, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    bool v6;
    emu_api *api = calloc(1, sizeof *api);

    if (!api) {
        emu_fail(err, errlen, "out of memory");
        return NULL;
    }
    api->cfg = *cfg;
    atomic_init(&api->stopping, false);
    api->tokens = emu_tokens_new(cfg->static_principal);
    api->faults = emu_faults_new();
    api->counters = emu_counters_new(cfg->instances, cfg->n_instances);
    if (!api->tokens || !api->faults || !api->counters) {
        emu_fail(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cfg->n_static_tokens; i++) {
        if (emu_tokens_add_static(api->tokens, cfg->static_tokens[i]) != 0) {
            emu_fail(err, errlen, "--static-token number %zu is empty or too long", i + 1);
            goto fail;
        }
    }
    for (size_t i = 0; i < cfg->n_faults; i++) {
        if (emu_faults_add(api->faults, &cfg->faults[i]) != 0) {
            emu_fail(err, errlen, "too many faults (at most %d)", EMU_MAX_FAULTS);
            goto fail;
        }
    }
    if (make_addr(cfg->address, cfg->port, &ss, &v6) != 0) {
        emu_fail(err, errlen, "--api-address '%s' is not an IP literal", cfg->address);
        goto fail;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    api->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, api, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)CONNECTION_TIMEOUT_S, MHD_OPTION_NOTIFY_COMPLETED, on_completed, api,
        MHD_OPTION_END);
    if (!api->daemon) {
        emu_fail(err, errlen, "cannot listen on %s port %d (in use?)", cfg->address, cfg->port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(api->daemon, MHD_DAEMON_INFO_BIND_PORT);
    int port = di ? di->port : cfg->port;
    snprintf(api->base_url, sizeof api->base_url, v6 ? "http://[%s]:%d" : "http://%s:%d",
             cfg->address, port);
    snprintf(api->token_uri, sizeof api->token_uri, "%s/token", api->base_url);
    return api;
fail:
    emu_api_stop(api);
    return NULL;
}

const char *emu_api_url(const emu_api *api)
{
    return api->base_url;
}

const char *emu_api_token_uri(const emu_api *api)
{
    return api->token_uri;
}

void emu_api_stop(emu_api *api)
{
    if (!api)
        return;
    atomic_store(&api->stopping, true);
    if (api->daemon)
        MHD_stop_daemon(api->daemon);
    emu_tokens_free(api->tokens);
    emu_faults_free(api->faults);
    emu_counters_free(api->counters);
    free(api);
}
