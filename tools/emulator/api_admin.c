/*
 * The /emulator/ admin API tests drive the emulator with (no auth): faults,
 * counters, the client certificate lifetime, CA rotation, dropping and
 * refusing connections, minting tokens, and the signing CA certificate.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "api.h"
#include "options.h"
#include "util.h"

#define INSTANCES_PREFIX "/emulator/instances/"

static bool is(const emu_request *rq, const char *method, const char *path)
{
    return strcmp(rq->method, method) == 0 && strcmp(rq->path, path) == 0;
}

static void respond_ok(emu_response *rs)
{
    emu_respond_json(rs, 200, json_pack("{s:b}", "ok", 1));
}

/* ---------------- faults ---------------- */

static int add_fault(const emu_request *rq, json_t *obj, emu_response *rs)
{
    emu_fault f;
    char err[512];
    if (emu_fault_from_json(obj, &f, err, sizeof err) != 0) {
        emu_respond_error(rs, 400, NULL, "%s", err);
        return -1;
    }
    if (f.instance[0] &&
        !emu_instances_find(rq->api->cfg.instances, rq->api->cfg.n_instances, f.instance)) {
        emu_respond_error(rs, 400, NULL, "fault: unknown instance '%s'", f.instance);
        return -1;
    }
    if (emu_faults_add(rq->api->faults, &f) != 0) {
        emu_respond_error(rs, 400, NULL, "too many faults (at most %d)", EMU_MAX_FAULTS);
        return -1;
    }
    return 0;
}

/* POST a fault object, or an array of them (all or nothing is not promised). */
static void post_faults(const emu_request *rq, emu_response *rs)
{
    json_error_t jerr;
    json_t *body = json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &jerr);
    size_t i;
    json_t *v;

    if (!body) {
        emu_respond_error(rs, 400, NULL, "Invalid JSON payload received: %s", jerr.text);
        return;
    }
    if (json_is_array(body)) {
        json_array_foreach(body, i, v) {
            if (add_fault(rq, v, rs) != 0)
                goto out;
        }
    } else if (add_fault(rq, body, rs) != 0) {
        goto out;
    }
    emu_respond_json(rs, 200, json_pack("{s:o}", "faults", emu_faults_json(rq->api->faults)));
out:
    json_decref(body);
}

/* ---------------- counters ---------------- */

static void get_counters(const emu_request *rq, emu_response *rs)
{
    const emu_api *api = rq->api;
    json_t *proxy = json_object();
    for (size_t i = 0; i < api->cfg.n_instances; i++) {
        emu_proxy_stats st = {0};
        emu_proxy_stats_get(api->cfg.instances[i], &st);
        json_object_set_new(proxy, api->cfg.instances[i]->connection_name,
                            json_pack("{s:I,s:I,s:I,s:I}", "accepted", (json_int_t)st.accepted,
                                      "tls_refused", (json_int_t)st.tls_refused, "iam_refused",
                                      (json_int_t)st.iam_refused, "active",
                                      (json_int_t)st.active));
    }
    emu_respond_json(rs, 200,
                     json_pack("{s:o,s:o,s:I}", "endpoints", emu_counters_json(api->counters),
                               "proxy", proxy, "iam_bindings", (json_int_t)emu_iam_count()));
}

/* ---------------- settings ---------------- */

static void cert_lifetime(const emu_request *rq, emu_response *rs)
{
    if (strcmp(rq->method, "POST") == 0) {
        json_t *body = emu_request_json(rq, rs);
        if (!body)
            return;
        json_t *s = json_object_get(body, "seconds");
        json_int_t v = json_is_integer(s) ? json_integer_value(s) : 0;
        json_decref(body);
        if (v < 1 || v > EMU_LIFETIME_MAX) {
            emu_respond_error(rs, 400, NULL, "seconds must be an integer in [1, %ld]",
                              EMU_LIFETIME_MAX);
            return;
        }
        atomic_store(&emu_g.cert_lifetime_s, (long)v);
    }
    json_int_t now = (json_int_t)atomic_load(&emu_g.cert_lifetime_s);
    emu_respond_json(rs, 200, json_pack("{s:I}", "seconds", now));
}

/* POST /emulator/tokens {"principal","scopes":[...],"lifetime":N}: a token for tests. */
static void mint_token(const emu_request *rq, emu_response *rs)
{
    char scopes[EMU_SCOPES_MAX], token[EMU_ISSUED_TOKEN_MAX], when[32];
    json_t *body = emu_request_json(rq, rs);
    time_t expiry;

    if (!body)
        return;
    const char *principal = json_string_value(json_object_get(body, "principal"));
    json_t *sc = json_object_get(body, "scopes"), *life = json_object_get(body, "lifetime");
    long lifetime = rq->api->cfg.token_lifetime_s;
    if (!principal || !principal[0] || strlen(principal) >= EMU_PRINCIPAL_MAX) {
        emu_respond_error(rs, 400, NULL, "principal must be a non-empty string");
        goto out;
    }
    if (life && (!json_is_integer(life) || json_integer_value(life) < 0 ||
                 json_integer_value(life) > EMU_LIFETIME_MAX)) {
        emu_respond_error(rs, 400, NULL, "lifetime must be an integer in [0, %ld]",
                          EMU_LIFETIME_MAX);
        goto out;
    }
    if (life)
        lifetime = (long)json_integer_value(life);
    if (!sc) {
        snprintf(scopes, sizeof scopes, "%s", EMU_SCOPE_CLOUD_PLATFORM);
    } else if (emu_scopes_from_json(sc, scopes, sizeof scopes) != 0) {
        emu_respond_error(rs, 400, NULL, "scopes must be a non-empty list of scope strings");
        goto out;
    }
    if (emu_tokens_issue(rq->api->tokens, principal, scopes, lifetime, token, sizeof token,
                         &expiry) != 0) {
        emu_respond_error(rs, 500, NULL, "cannot issue a token");
        goto out;
    }
    emu_rfc3339(expiry, when, sizeof when);
    emu_respond_json(rs, 200, json_pack("{s:s,s:s,s:s,s:I}", "access_token", token,
                                        "expire_time", when, "scope", scopes, "expires_in",
                                        (json_int_t)lifetime));
out:
    json_decref(body);
}

static void signing_ca(const emu_request *rq, emu_response *rs)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    X509 *ca = emu_signing_ca_cert(rq->api->cfg.signing_ca);
    if (!bio || !ca || PEM_write_bio_X509(bio, ca) != 1) {
        emu_respond_error(rs, 500, NULL, "cannot encode the signing CA");
    } else {
        long n = BIO_get_mem_data(bio, &data);
        char *pem = strndup(data, (size_t)n);
        if (pem) {
            emu_respond_text(rs, 200, pem);
            rs->content_type = "application/x-pem-file";
        } else {
            emu_respond_error(rs, 500, NULL, "out of memory");
        }
        free(pem);
    }
    BIO_free(bio);
}

/* ---------------- instances ---------------- */

static void instance_action(const emu_request *rq, emu_response *rs)
{
    const char *rest = rq->path + strlen(INSTANCES_PREFIX);
    const char *slash = strrchr(rest, '/');
    char name[256], err[512];
    emu_instance *inst;

    if (!slash || slash == rest || (size_t)(slash - rest) >= sizeof name) {
        emu_respond_error(rs, 404, NULL, "Not found: %s", rq->path);
        return;
    }
    memcpy(name, rest, (size_t)(slash - rest));
    name[slash - rest] = '\0';
    const char *action = slash + 1;
    if (!(inst = emu_instances_find(rq->api->cfg.instances, rq->api->cfg.n_instances, name))) {
        emu_respond_error(rs, 404, NULL, "No such instance: %s", name);
        return;
    }
    if (strcmp(rq->method, "POST") != 0) {
        emu_respond_error(rs, 404, NULL, "Not found: %s %s (want POST)", rq->method, rq->path);
    } else if (strcmp(action, "rotate-ca") == 0) {
        if (emu_instance_rotate_ca(inst, err, sizeof err) != 0)
            emu_respond_error(rs, 500, NULL, "rotate-ca %s: %s", name, err);
        else
            respond_ok(rs);
    } else if (strcmp(action, "drop-connections") == 0) {
        emu_proxy_drop_connections(inst);
        respond_ok(rs);
    } else if (strcmp(action, "refuse-tcp") == 0) {
        json_t *body = emu_request_json(rq, rs);
        if (!body)
            return;
        json_t *refuse = json_object_get(body, "refuse");
        bool value = json_is_true(refuse), valid = json_is_boolean(refuse);
        json_decref(body);
        if (!valid)
            emu_respond_error(rs, 400, NULL, "refuse must be true or false");
        else if (emu_proxy_set_refuse(inst, value, err, sizeof err) != 0)
            emu_respond_error(rs, 500, NULL, "refuse-tcp %s: %s", name, err);
        else
            respond_ok(rs);
    } else {
        emu_respond_error(rs, 404, NULL,
                          "Unknown action '%.64s' (want rotate-ca, drop-connections or "
                          "refuse-tcp)",
                          action);
    }
}

void emu_admin_handle(const emu_request *rq, emu_response *rs)
{
    emu_api *api = rq->api;
    if (is(rq, "GET", "/emulator/faults")) {
        emu_respond_json(rs, 200, json_pack("{s:o}", "faults", emu_faults_json(api->faults)));
    } else if (is(rq, "POST", "/emulator/faults")) {
        post_faults(rq, rs);
    } else if (is(rq, "DELETE", "/emulator/faults")) {
        emu_faults_clear(api->faults);
        respond_ok(rs);
    } else if (is(rq, "GET", "/emulator/counters")) {
        get_counters(rq, rs);
    } else if (is(rq, "POST", "/emulator/counters/reset")) {
        emu_counters_reset(api->counters);
        respond_ok(rs);
    } else if (is(rq, "GET", "/emulator/cert-lifetime") ||
               is(rq, "POST", "/emulator/cert-lifetime")) {
        cert_lifetime(rq, rs);
    } else if (is(rq, "POST", "/emulator/tokens")) {
        mint_token(rq, rs);
    } else if (is(rq, "GET", "/emulator/signing-ca")) {
        signing_ca(rq, rs);
    } else if (strncmp(rq->path, INSTANCES_PREFIX, strlen(INSTANCES_PREFIX)) == 0) {
        instance_action(rq, rs);
    } else {
        emu_respond_error(rs, 404, NULL, "Not found: %s %s", rq->method, rq->path);
    }
}
