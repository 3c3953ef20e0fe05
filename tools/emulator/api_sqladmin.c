/*
 * SQL Admin API v1beta4 as connectors use it: connectSettings and
 * generateEphemeralCert (current connectors), and the instance resource and
 * createEphemeral (Google's v1 proxy).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "api.h"
#include "util.h"

#define PREFIX "/sql/v1beta4/projects/"
#define OUTGOING_IP "192.0.2.1" /* TEST-NET-1: listed as Google does, never dialled */

/* ---------------- paths ---------------- */

/* Copy the segment at *p up to '/' (or end) into out[cap]; advance *p past it. */
static int take_segment(const char **p, char *out, size_t cap)
{
    const char *slash = strchr(*p, '/');
    size_t n = slash ? (size_t)(slash - *p) : strlen(*p);
    if (n == 0 || n >= cap)
        return -1;
    memcpy(out, *p, n);
    out[n] = '\0';
    *p += n;
    return 0;
}

int emu_sqladmin_parse_path(const char *path, emu_sqladmin_path *out)
{
    const char *p = path;
    char seg[160];

    memset(out, 0, sizeof *out);
    if (strncmp(p, PREFIX, strlen(PREFIX)) != 0)
        return -1;
    p += strlen(PREFIX);
    if (take_segment(&p, out->project, sizeof out->project) != 0)
        return -1;
    if (strncmp(p, "/instances/", 11) != 0)
        return -1;
    p += 11;
    if (take_segment(&p, seg, sizeof seg) != 0)
        return -1;

    /* Custom methods ride on the last segment: "my-db:generateEphemeralCert". */
    char *colon = strchr(seg, ':');
    if (colon) {
        if (*p != '\0' || strcmp(colon + 1, "generateEphemeralCert") != 0)
            return -1;
        *colon = '\0';
        out->endpoint = EMU_EP_GENERATE_EPHEMERAL_CERT;
    } else if (*p == '\0' || strcmp(p, "/") == 0) {
        out->endpoint = EMU_EP_GET_INSTANCE;
    } else if (strcmp(p, "/connectSettings") == 0) {
        out->endpoint = EMU_EP_CONNECT_SETTINGS;
    } else if (strcmp(p, "/createEphemeral") == 0) {
        out->endpoint = EMU_EP_CREATE_EPHEMERAL;
    } else {
        return -1;
    }
    if (seg[0] == '\0' || strlen(seg) >= sizeof out->instance)
        return -1;
    memcpy(out->instance, seg, strlen(seg) + 1);
    return 0;
}

/* ---------------- certificates as SslCert JSON ---------------- */

/* {"kind":"sql#sslCert","cert":...} with fields read from the first PEM certificate. */
static json_t *sslcert_json(const char *pem, const char *instance, time_t expiry)
{
    char when[32], serial[64] = "", cn[512] = "", sha1[41] = "";
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    json_t *o = json_pack("{s:s,s:s,s:s}", "kind", "sql#sslCert", "cert", pem, "instance",
                          instance);

    emu_rfc3339(expiry, when, sizeof when);
    json_object_set_new(o, "expirationTime", json_string(when));
    if (x) {
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        char *dec = bn ? BN_bn2dec(bn) : NULL;
        if (dec)
            snprintf(serial, sizeof serial, "%s", dec);
        OPENSSL_free(dec);
        BN_free(bn);

        BIO *nb = BIO_new(BIO_s_mem());
        if (nb && X509_NAME_print_ex(nb, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
            int n = BIO_read(nb, cn, sizeof cn - 1);
            cn[n > 0 ? n : 0] = '\0';
        }
        BIO_free(nb);

        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        if (X509_digest(x, EVP_sha1(), md, &mdlen) == 1) {
            for (unsigned i = 0; i < mdlen && i < 20; i++)
                snprintf(sha1 + 2 * i, 3, "%02x", md[i]);
        }

        struct tm tm;
        if (ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm) == 1) {
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
            json_object_set_new(o, "createTime", json_string(when));
        }
        json_object_set_new(o, "certSerialNumber", json_string(serial));
        json_object_set_new(o, "commonName", json_string(cn));
        json_object_set_new(o, "sha1Fingerprint", json_string(sha1));
    }
    X509_free(x);
    BIO_free(bio);
    return o;
}

/* ---------------- instance views ---------------- */

/* What rotation may change, copied under the instance lock. */
typedef struct id_snapshot {
    char *ca_pem;
    time_t ca_expiry;
    char *dns_name; /* SAN of a CAS leaf, or NULL */
} id_snapshot;

static int snapshot(emu_instance *inst, id_snapshot *s)
{
    memset(s, 0, sizeof *s);
    emu_instance_lock();
    if (inst->server_id) {
        s->ca_pem = emu_strdup(emu_server_id_ca_pem(inst->server_id));
        s->ca_expiry = emu_server_id_ca_expiry(inst->server_id);
        s->dns_name = emu_strdup(emu_server_id_dns_name(inst->server_id));
    }
    emu_instance_unlock();
    return s->ca_pem ? 0 : -1;
}

static void snapshot_free(id_snapshot *s)
{
    free(s->ca_pem);
    free(s->dns_name);
}

static json_t *ip_addresses(const emu_instance *inst)
{
    json_t *a = json_array();
    if (inst->public_ip)
        json_array_append_new(a, json_pack("{s:s,s:s}", "type", "PRIMARY", "ipAddress",
                                           inst->public_ip));
    if (inst->private_ip)
        json_array_append_new(a, json_pack("{s:s,s:s}", "type", "PRIVATE", "ipAddress",
                                           inst->private_ip));
    json_array_append_new(a, json_pack("{s:s,s:s}", "type", "OUTGOING", "ipAddress",
                                       OUTGOING_IP));
    return a;
}

/* dnsName with the trailing dot real responses carry. */
static json_t *fqdn(const char *name)
{
    size_t n = strlen(name);
    char buf[300];
    snprintf(buf, sizeof buf, "%s%s", name, n && name[n - 1] == '.' ? "" : ".");
    return json_string(buf);
}

/* dnsName and dnsNames: the PSC name, else the CAS leaf's name. */
static void add_dns(json_t *o, const emu_instance *inst, const id_snapshot *s)
{
    const char *name = inst->psc_dns ? inst->psc_dns : s->dns_name;
    const char *type = inst->psc_dns     ? "PRIVATE_SERVICE_CONNECT"
                       : inst->public_ip ? "PUBLIC"
                                         : "PRIVATE_SERVICES_ACCESS";
    if (!name)
        return;
    json_object_set_new(o, "dnsName", fqdn(name));
    json_t *entry = json_pack("{s:o,s:s,s:s}", "name", fqdn(name), "connectionType", type,
                              "dnsScope", "INSTANCE");
    json_object_set_new(o, "dnsNames", json_pack("[o]", entry));
}

static const char *ca_mode_name(const emu_instance *inst)
{
    return inst->ca_mode == EMU_CA_CAS ? "GOOGLE_MANAGED_CAS_CA" : "GOOGLE_MANAGED_INTERNAL_CA";
}

static void connect_settings(const emu_instance *inst, const id_snapshot *s, emu_response *rs)
{
    json_t *o = json_pack("{s:s,s:o,s:o,s:s,s:s,s:s,s:b,s:s,s:[s]}", "kind",
                          "sql#connectSettings", "serverCaCert",
                          sslcert_json(s->ca_pem, inst->name, s->ca_expiry), "ipAddresses",
                          ip_addresses(inst), "region", inst->region, "databaseVersion",
                          inst->version, "backendType", "SECOND_GEN", "pscEnabled",
                          inst->psc_dns != NULL, "serverCaMode", ca_mode_name(inst),
                          "mdxProtocolSupport", "CLIENT_PROTOCOL_TYPE");
    if (o)
        add_dns(o, inst, s);
    emu_respond_json(rs, 200, o);
}

static void get_instance(const emu_api *api, const emu_instance *inst, const id_snapshot *s,
                         emu_response *rs)
{
    char self[600];
    snprintf(self, sizeof self, "%s/sql/v1beta4/projects/%s/instances/%s", api->base_url,
             inst->project, inst->name);
    json_t *ipcfg = json_pack("{s:b}", "ipv4Enabled", inst->public_ip != NULL);
    if (inst->psc_dns)
        json_object_set_new(ipcfg, "pscConfig", json_pack("{s:b}", "pscEnabled", 1));
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:{s:s,s:s,s:o},s:s}", "kind",
        "sql#instance", "connectionName", inst->connection_name, "name", inst->name, "project",
        inst->project, "region", inst->region, "databaseVersion", inst->version, "backendType",
        "SECOND_GEN", "instanceType", "CLOUD_SQL_INSTANCE", "state", "RUNNABLE", "selfLink",
        self, "ipAddresses", ip_addresses(inst), "serverCaCert",
        sslcert_json(s->ca_pem, inst->name, s->ca_expiry), "settings", "kind", "sql#settings",
        "tier", "db-custom-1-3840", "ipConfiguration", ipcfg, "serverCaMode",
        ca_mode_name(inst));
    if (o) {
        add_dns(o, inst, s);
        if (inst->psc_dns) {
            char link[600];
            snprintf(link, sizeof link, "projects/%s/regions/%s/serviceAttachments/%s-psc",
                     inst->project, inst->region, inst->name);
            json_object_set_new(o, "pscServiceAttachmentLink", json_string(link));
        }
    }
    emu_respond_json(rs, 200, o);
}

/* ---------------- ephemeral certificates ---------------- */

static const char *body_string(json_t *body, const char *snake, const char *camel, int *bad)
{
    json_t *v = json_object_get(body, snake);
    if (!v)
        v = json_object_get(body, camel);
    if (v && !json_is_string(v))
        *bad = 1;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The login token's principal and expiry, or -1 with the error answered. */
static int check_login_token(const emu_request *rq, const emu_instance *inst, const char *token,
                             emu_token_info *who, emu_response *rs)
{
    if (strncmp(inst->version, "SQLSERVER_", 10) == 0) {
        emu_respond_error(rs, 400, NULL,
                          "Automatic IAM database authentication is not supported for SQL "
                          "Server instances (%s is %s).",
                          inst->connection_name, inst->version);
        return -1;
    }
    switch (emu_tokens_lookup(rq->api->tokens, token, time(NULL), who)) {
    case EMU_TOKEN_OK:
        break;
    case EMU_TOKEN_EXPIRED:
        emu_respond_error(rs, 401, NULL, "The access_token for IAM database login has expired.");
        return -1;
    default:
        emu_respond_error(rs, 401, NULL,
                          "The access_token for IAM database login is not a valid token.");
        return -1;
    }
    if (!emu_scopes_contain(who->scopes, EMU_SCOPE_SQL_LOGIN) &&
        !emu_scopes_contain(who->scopes, EMU_SCOPE_CLOUD_PLATFORM)) {
        emu_respond_error(rs, 400, NULL,
                          "The access_token for IAM database login lacks the scope "
                          EMU_SCOPE_SQL_LOGIN ".");
        return -1;
    }
    return 0;
}

static void ephemeral_cert(const emu_request *rq, emu_endpoint ep, emu_instance *inst,
                           emu_response *rs)
{
    int bad = 0;
    char err[256];
    char *cert = NULL;
    uint64_t serial = 0;
    time_t not_after = 0;
    emu_token_info who;
    json_t *body = emu_request_json(rq, rs);

    if (!body)
        return;
    const char *pub = body_string(body, "public_key", "publicKey", &bad);
    const char *login = ep == EMU_EP_GENERATE_EPHEMERAL_CERT
                            ? body_string(body, "access_token", "accessToken", &bad)
                            : NULL;
    if (bad || !pub || !pub[0]) {
        emu_respond_error(rs, 400, NULL,
                          bad ? "Invalid JSON payload: public_key and access_token must be "
                                "strings."
                              : "Missing required field: public_key.");
        goto out;
    }
    if (login && check_login_token(rq, inst, login, &who, rs) != 0)
        goto out;
    long lifetime = atomic_load(&emu_g.cert_lifetime_s);
    if (emu_signing_ca_sign(rq->api->cfg.signing_ca, pub, strlen(pub), lifetime, &cert, &serial,
                            &not_after, err, sizeof err) != 0) {
        emu_respond_error(rs, 400, NULL, "Invalid request: %s", err);
        goto out;
    }
    if (login)
        emu_iam_bind(serial, who.principal, who.expiry ? who.expiry : not_after);
    json_t *sc = sslcert_json(cert, inst->name, not_after);
    if (ep == EMU_EP_GENERATE_EPHEMERAL_CERT)
        emu_respond_json(rs, 200, json_pack("{s:o}", "ephemeralCert", sc));
    else
        emu_respond_json(rs, 200, sc);
out:
    free(cert);
    json_decref(body);
}

/* ---------------- entry point ---------------- */

void emu_sqladmin_handle(const emu_request *rq, const emu_sqladmin_path *sp, emu_instance *inst,
                         emu_response *rs)
{
    emu_endpoint ep = sp->endpoint;
    bool post = ep == EMU_EP_GENERATE_EPHEMERAL_CERT || ep == EMU_EP_CREATE_EPHEMERAL;
    id_snapshot s;

    if (strcmp(rq->method, post ? "POST" : "GET") != 0) {
        emu_respond_error(rs, 404, NULL, "Not found: %s %s (want %s)", rq->method, rq->path,
                          post ? "POST" : "GET");
        return;
    }
    if (emu_authorize(rq, rs, EMU_SCOPE_SQL_ADMIN, EMU_SCOPE_CLOUD_PLATFORM, NULL) != 0)
        return;
    if (!inst) {
        emu_respond_error(rs, 404, NULL,
                          "The Cloud SQL instance does not exist: project '%s', instance '%s'.",
                          sp->project, sp->instance);
        return;
    }
    if (post) {
        ephemeral_cert(rq, ep, inst, rs);
        return;
    }
    if (snapshot(inst, &s) != 0) {
        emu_respond_error(rs, 500, NULL, "Instance %s has no server certificate yet.",
                          inst->connection_name);
        return;
    }
    if (ep == EMU_EP_CONNECT_SETTINGS)
        connect_settings(inst, &s, rs);
    else
        get_instance(rq->api, inst, &s, rs);
    snapshot_free(&s);
}
