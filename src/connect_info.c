/*
 * Parsers for the SQL Admin API's connectSettings and generateEphemeralCert
 * answers (REFERENCE §2). Every field is type-checked; unknown fields are
 * ignored; every loop over the document is bounded.
 */
#include "connect_info.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "error.h"
#include "http.h"

#define MAX_BODY CSQL__HTTP_MAX_RESPONSE
#define MAX_IP_ENTRIES 64
#define MAX_DNS_ENTRIES 64
#define MAX_MDX_ENTRIES 64
#define MAX_CA_CERTS 64
#define MAX_DNS_NAME 253
#define PEM_CERT_BEGIN "-----BEGIN CERTIFICATE-----"

/* Shared state of one parse, so that every message can name the instance. */
typedef struct parse_ctx {
    const char *instance;
    csql__connect_info *out;
} parse_ctx;

static int bad(const parse_ctx *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(const parse_ctx *p, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return csql__error(CSQL_ERR_API_RESPONSE, "connectSettings for %s: %s", p->instance, what);
}

/*
 * An optional string member: *out = its value (NULL when absent, null or empty).
 * Anything other than a string is an error naming the field.
 */
static int opt_string(const parse_ctx *p, json_t *obj, const char *key, const char *label,
                      const char **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        return bad(p, "field %s is not a string", label);
    }
    if (json_string_length(v) > 0) {
        *out = json_string_value(v);
    }
    return 0;
}

static int req_string(const parse_ctx *p, json_t *obj, const char *key, const char *label,
                      const char **out)
{
    int rc = opt_string(p, obj, key, label, out);
    if (rc == 0 && *out == NULL) {
        return bad(p, "field %s is missing or empty", label);
    }
    return rc;
}

static int dup_into(char **dst, const char *s)
{
    if (s == NULL) {
        *dst = NULL;
        return 0;
    }
    *dst = strdup(s);
    return *dst ? 0 : csql__error(CSQL_ERR_NOMEM, "out of memory parsing connectSettings");
}

/* A DNS name from the API, stored without its trailing dot(s); validated for a sane shape. */
static int dup_dns_name(const parse_ctx *p, const char *label, const char *s, char **dst)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '.') {
        n--;
    }
    if (n == 0) {
        *dst = NULL;
        return 0;
    }
    if (n > MAX_DNS_NAME) {
        return bad(p, "%s is longer than 253 characters", label);
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_';
        if (!ok) {
            return bad(p, "%s is not a DNS name", label);
        }
    }
    *dst = strndup(s, n);
    return *dst ? 0 : csql__error(CSQL_ERR_NOMEM, "out of memory parsing connectSettings");
}

static int check_ip(const parse_ctx *p, const char *type, const char *ip)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, ip, buf) == 1 || inet_pton(AF_INET6, ip, buf) == 1) {
        return 0;
    }
    return bad(p, "ipAddress of the %s entry is not an IP address", type);
}

static int parse_ip_addresses(const parse_ctx *p, json_t *root)
{
    json_t *arr = json_object_get(root, "ipAddresses");
    if (arr == NULL || json_is_null(arr)) {
        return 0; /* PSC-only instances have none; checked once everything is parsed */
    }
    if (!json_is_array(arr)) {
        return bad(p, "field %s is not an array", "ipAddresses");
    }
    if (json_array_size(arr) > MAX_IP_ENTRIES) {
        return bad(p, "field %s has too many entries", "ipAddresses");
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *e = json_array_get(arr, i);
        const char *type = NULL;
        const char *ip = NULL;
        if (!json_is_object(e)) {
            return bad(p, "an entry of %s is not an object", "ipAddresses");
        }
        int rc = req_string(p, e, "type", "ipAddresses[].type", &type);
        if (rc == 0) {
            rc = req_string(p, e, "ipAddress", "ipAddresses[].ipAddress", &ip);
        }
        if (rc != 0) {
            return rc;
        }
        char **slot = NULL;
        if (strcmp(type, "PRIMARY") == 0) {
            slot = &p->out->public_ip;
        } else if (strcmp(type, "PRIVATE") == 0) {
            slot = &p->out->private_ip;
        } else {
            continue; /* OUTGOING and others are never dialled */
        }
        if (*slot != NULL) {
            continue; /* the first entry of a type wins */
        }
        if ((rc = check_ip(p, type, ip)) != 0 || (rc = dup_into(slot, ip)) != 0) {
            return rc;
        }
    }
    return 0;
}

/*
 * dnsNames[]: the first name is the one the server certificate carries (SAN);
 * the PSC name is the PRIVATE_SERVICE_CONNECT/INSTANCE entry. Either may be
 * NULL when absent. Entries are type-checked even when not used.
 */
static int scan_dns_names(const parse_ctx *p, json_t *root, const char **first, const char **psc)
{
    json_t *arr = json_object_get(root, "dnsNames");
    *first = NULL;
    *psc = NULL;
    if (arr == NULL || json_is_null(arr)) {
        return 0;
    }
    if (!json_is_array(arr)) {
        return bad(p, "field %s is not an array", "dnsNames");
    }
    if (json_array_size(arr) > MAX_DNS_ENTRIES) {
        return bad(p, "field %s has too many entries", "dnsNames");
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *e = json_array_get(arr, i);
        const char *name = NULL;
        const char *ctype = NULL;
        const char *scope = NULL;
        if (!json_is_object(e)) {
            return bad(p, "an entry of %s is not an object", "dnsNames");
        }
        int rc = req_string(p, e, "name", "dnsNames[].name", &name);
        if (rc == 0) {
            rc = opt_string(p, e, "connectionType", "dnsNames[].connectionType", &ctype);
        }
        if (rc == 0) {
            rc = opt_string(p, e, "dnsScope", "dnsNames[].dnsScope", &scope);
        }
        if (rc != 0) {
            return rc;
        }
        if (i == 0) {
            *first = name;
        }
        if (*psc == NULL && ctype && scope && strcmp(ctype, "PRIVATE_SERVICE_CONNECT") == 0 &&
            strcmp(scope, "INSTANCE") == 0) {
            *psc = name;
        }
    }
    return 0;
}

static int parse_dns(const parse_ctx *p, json_t *root)
{
    const char *dns_name = NULL;
    const char *first = NULL;
    const char *psc = NULL;
    bool psc_enabled = false;
    json_t *pe = json_object_get(root, "pscEnabled");

    if (pe != NULL && !json_is_null(pe)) {
        if (!json_is_boolean(pe)) {
            return bad(p, "field %s is not a boolean", "pscEnabled");
        }
        psc_enabled = json_is_true(pe);
    }
    int rc = opt_string(p, root, "dnsName", "dnsName", &dns_name);
    if (rc == 0) {
        rc = scan_dns_names(p, root, &first, &psc);
    }
    if (rc != 0) {
        return rc;
    }
    const char *san = first ? first : dns_name;
    if (san != NULL && (rc = dup_dns_name(p, "the DNS name", san, &p->out->dns_name)) != 0) {
        return rc;
    }
    if (psc_enabled) {
        const char *name = psc ? psc : dns_name;
        if (name != NULL) {
            return dup_dns_name(p, "the PSC DNS name", name, &p->out->psc_dns);
        }
    }
    return 0;
}

static int parse_mdx(const parse_ctx *p, json_t *root)
{
    json_t *arr = json_object_get(root, "mdxProtocolSupport");
    if (arr == NULL || json_is_null(arr)) {
        return 0;
    }
    if (!json_is_array(arr)) {
        return bad(p, "field %s is not an array", "mdxProtocolSupport");
    }
    if (json_array_size(arr) > MAX_MDX_ENTRIES) {
        return bad(p, "field %s has too many entries", "mdxProtocolSupport");
    }
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_string(v)) {
            return bad(p, "an entry of %s is not a string", "mdxProtocolSupport");
        }
        if (strcmp(json_string_value(v), "CLIENT_PROTOCOL_TYPE") == 0) {
            p->out->mdx_supported = true;
        }
    }
    return 0;
}

/* Count the certificates of a PEM bundle (CAS modes send several). -1 on a broken one. */
static int count_pem_certs(const char *pem)
{
    size_t len = strlen(pem);
    if (len > (size_t)MAX_BODY) {
        return -1;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        return -1;
    }
    int n = 0;
    for (int i = 0; i < MAX_CA_CERTS + 1; i++) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL) {
            break;
        }
        X509_free(x);
        n++;
    }
    /* The loop ends on "no start line" at the end of the data; anything else is damage. */
    unsigned long e = ERR_peek_last_error();
    if (n > MAX_CA_CERTS ||
        (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))) {
        n = -1;
    }
    ERR_clear_error();
    BIO_free(bio);
    return n;
}

static int parse_server_ca(const parse_ctx *p, json_t *root)
{
    json_t *ca = json_object_get(root, "serverCaCert");
    const char *pem = NULL;
    if (ca == NULL || json_is_null(ca)) {
        return bad(p, "field %s is missing", "serverCaCert");
    }
    if (!json_is_object(ca)) {
        return bad(p, "field %s is not an object", "serverCaCert");
    }
    int rc = req_string(p, ca, "cert", "serverCaCert.cert", &pem);
    if (rc != 0) {
        return rc;
    }
    if (strstr(pem, PEM_CERT_BEGIN) == NULL) {
        return bad(p, "%s holds no PEM certificate", "serverCaCert.cert");
    }
    ERR_clear_error();
    int n = count_pem_certs(pem);
    if (n <= 0) {
        return bad(p, "%s holds a PEM certificate that does not parse (or too many)",
                   "serverCaCert.cert");
    }
    return dup_into(&p->out->ca_pem, pem);
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int parse_instance_kind(const parse_ctx *p, json_t *root, const csql__instance_name *name)
{
    const char *region = NULL;
    const char *version = NULL;
    const char *backend = NULL;
    int rc = req_string(p, root, "region", "region", &region);
    if (rc == 0) {
        rc = req_string(p, root, "databaseVersion", "databaseVersion", &version);
    }
    if (rc == 0) {
        rc = req_string(p, root, "backendType", "backendType", &backend);
    }
    if (rc != 0) {
        return rc;
    }
    if (strcmp(region, name->region) != 0) {
        return csql__error(CSQL_ERR_REGION_MISMATCH,
                           "instance %s: provided region was mismatched - got %.64s, want %.64s",
                           p->instance, name->region, region);
    }
    if (strcmp(backend, "SECOND_GEN") != 0) {
        return csql__error(CSQL_ERR_UNSUPPORTED_INSTANCE,
                           "instance %s: unsupported instance - only Second Generation instances "
                           "are supported (backendType %.64s)",
                           p->instance, backend);
    }
    if (!has_prefix(version, "POSTGRES_") && !has_prefix(version, "MYSQL_") &&
        !has_prefix(version, "SQLSERVER_")) {
        return csql__error(CSQL_ERR_UNSUPPORTED_INSTANCE,
                           "instance %s: unsupported databaseVersion \"%.64s\" (expected "
                           "POSTGRES_*, MYSQL_* or SQLSERVER_*)",
                           p->instance, version);
    }
    if ((rc = dup_into(&p->out->region, region)) != 0) {
        return rc;
    }
    return dup_into(&p->out->database_version, version);
}

static int parse_root(const parse_ctx *p, json_t *root, const csql__instance_name *name)
{
    const char *mode = NULL;
    int rc = parse_instance_kind(p, root, name);
    if (rc == 0) {
        rc = parse_server_ca(p, root);
    }
    if (rc == 0) {
        rc = parse_ip_addresses(p, root);
    }
    if (rc == 0) {
        rc = parse_dns(p, root);
    }
    if (rc == 0) {
        rc = parse_mdx(p, root);
    }
    if (rc == 0) {
        rc = opt_string(p, root, "serverCaMode", "serverCaMode", &mode);
    }
    if (rc == 0) {
        rc = dup_into(&p->out->server_ca_mode, mode);
    }
    if (rc == 0 && !p->out->public_ip && !p->out->private_ip && !p->out->psc_dns) {
        rc = csql__error(CSQL_ERR_NO_IP_TYPE,
                         "instance %s has no supported IP address (no PRIMARY or PRIVATE address "
                         "and no PSC DNS name)",
                         p->instance);
    }
    return rc;
}

int csql__connect_info_parse(const char *json, size_t len, const csql__instance_name *name,
                             csql__connect_info *out)
{
    if (json == NULL || name == NULL || out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "connect_info_parse: NULL argument");
    }
    memset(out, 0, sizeof(*out));
    parse_ctx p = {name->full, out};
    if (len > (size_t)MAX_BODY) {
        return csql__error(CSQL_ERR_API_RESPONSE,
                           "connectSettings for %s: response of %zu bytes is too large",
                           p.instance, len);
    }
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (root == NULL) {
        return csql__error(CSQL_ERR_API_RESPONSE,
                           "connectSettings for %s: response is not JSON (%.80s at byte %d)",
                           p.instance, jerr.text, jerr.position);
    }
    int rc = json_is_object(root) ? parse_root(&p, root, name)
                                  : bad(&p, "response is not a JSON %s", "object");
    json_decref(root);
    if (rc != 0) {
        csql__connect_info_dispose(out);
    }
    return rc;
}

void csql__connect_info_dispose(csql__connect_info *ci)
{
    if (ci == NULL) {
        return;
    }
    free(ci->database_version);
    free(ci->region);
    free(ci->public_ip);
    free(ci->private_ip);
    free(ci->psc_dns);
    free(ci->dns_name);
    free(ci->ca_pem);
    free(ci->server_ca_mode);
    memset(ci, 0, sizeof(*ci));
}

int csql__connect_info_copy(const csql__connect_info *src, csql__connect_info *dst)
{
    memset(dst, 0, sizeof(*dst));
    const char *const from[] = {src->database_version, src->region,   src->public_ip,
                                src->private_ip,       src->psc_dns,  src->dns_name,
                                src->ca_pem,           src->server_ca_mode};
    char **const to[] = {&dst->database_version, &dst->region,   &dst->public_ip,
                         &dst->private_ip,       &dst->psc_dns,  &dst->dns_name,
                         &dst->ca_pem,           &dst->server_ca_mode};
    for (size_t i = 0; i < sizeof(from) / sizeof(from[0]); i++) {
        if (from[i] != NULL && (*to[i] = strdup(from[i])) == NULL) {
            csql__connect_info_dispose(dst);
            return csql__error(CSQL_ERR_NOMEM, "out of memory copying connect info");
        }
    }
    dst->mdx_supported = src->mdx_supported;
    return 0;
}

int csql__ephemeral_cert_parse(const char *json, size_t len, char **cert_pem)
{
    if (json == NULL || cert_pem == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "ephemeral_cert_parse: NULL argument");
    }
    *cert_pem = NULL;
    if (len > (size_t)MAX_BODY) {
        return csql__error(CSQL_ERR_API_RESPONSE,
                           "generateEphemeralCert: response of %zu bytes is too large", len);
    }
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (root == NULL) {
        return csql__error(CSQL_ERR_API_RESPONSE,
                           "generateEphemeralCert: response is not JSON (%.80s at byte %d)",
                           jerr.text, jerr.position);
    }
    int rc = CSQL_ERR_API_RESPONSE;
    json_t *ec = json_is_object(root) ? json_object_get(root, "ephemeralCert") : NULL;
    json_t *cert = json_is_object(ec) ? json_object_get(ec, "cert") : NULL;
    if (!json_is_object(root)) {
        csql__error(rc, "generateEphemeralCert: response is not a JSON object");
    } else if (!json_is_object(ec)) {
        csql__error(rc, "generateEphemeralCert: field ephemeralCert is missing or not an object");
    } else if (!json_is_string(cert)) {
        csql__error(rc, "generateEphemeralCert: field ephemeralCert.cert is missing or not a "
                        "string");
    } else if (strstr(json_string_value(cert), PEM_CERT_BEGIN) == NULL) {
        csql__error(rc, "generateEphemeralCert: ephemeralCert.cert holds no PEM certificate");
    } else if ((*cert_pem = strdup(json_string_value(cert))) == NULL) {
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory parsing generateEphemeralCert");
    } else {
        rc = 0;
    }
    json_decref(root);
    return rc;
}
