/*
 * Emulated instances: parsing and validating instance specs, the instance
 * set's uniqueness rules, and CA rotation (a new server identity swapped in
 * under a lock; the old one is kept until the instance is freed).
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "emulator.h"
#include "util.h"

#define CONN_NAME_MAX 255
#define DNS_NAME_MAX 253
#define ADDRS_PER_INSTANCE 3

struct emu_retired_id {
    emu_server_id *id;
    struct emu_retired_id *next;
};

static pthread_mutex_t instance_mu = PTHREAD_MUTEX_INITIALIZER;

void emu_instance_lock(void)
{
    pthread_mutex_lock(&instance_mu);
}

void emu_instance_unlock(void)
{
    pthread_mutex_unlock(&instance_mu);
}

/* ---------------- names and addresses ---------------- */

static int name_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_';
}

int emu_connection_name_split(const char *s, char **project, char **region, char **name,
                              char *err, size_t errlen)
{
    const char *parts[5];
    size_t lens[5], n = 0, len = strlen(s);
    const char *start = s;

    *project = *region = *name = NULL;
    if (len == 0 || len > CONN_NAME_MAX)
        goto bad;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != ':') {
            if (!name_char_ok(s[i]))
                goto bad;
            continue;
        }
        if (n == 4 || s + i == start)
            goto bad;
        parts[n] = start;
        lens[n++] = (size_t)(s + i - start);
        start = s + i + 1;
    }
    if (n < 3)
        goto bad;
    /* Domain-scoped projects keep their colon: "google.com:my-project". */
    size_t plen = n == 4 ? (size_t)(parts[1] + lens[1] - parts[0]) : lens[0];
    *project = strndup(parts[0], plen);
    *region = strndup(parts[n - 2], lens[n - 2]);
    *name = strndup(parts[n - 1], lens[n - 1]);
    if (!*project || !*region || !*name) {
        free(*project), free(*region), free(*name);
        *project = *region = *name = NULL;
        return emu_fail(err, errlen, "out of memory");
    }
    return 0;
bad:
    return emu_fail(err, errlen,
                    "instance connection name '%.300s' is not valid: want "
                    "PROJECT:REGION:NAME or DOMAIN:PROJECT:REGION:NAME (letters, digits, "
                    "'-', '.', '_')",
                    s);
}

/* Normalized text of a loopback literal into out[INET6_ADDRSTRLEN], or -1. */
static int loopback_normalize(const char *ip, char *out)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, ip, &a4) == 1) {
        if ((ntohl(a4.s_addr) >> 24) != 127)
            return -1;
        inet_ntop(AF_INET, &a4, out, INET6_ADDRSTRLEN);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &a6) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6))
            return -1;
        inet_ntop(AF_INET6, &a6, out, INET6_ADDRSTRLEN);
        return 0;
    }
    return -1;
}

int emu_ip_is_loopback_literal(const char *ip)
{
    char buf[INET6_ADDRSTRLEN];
    return loopback_normalize(ip, buf) == 0;
}

static int hostname_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > DNS_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!name_char_ok(h[i]) || h[i] == '_')
            return 0;
    }
    return 1;
}

static int version_ok(const char *v)
{
    static const char *const PREFIXES[] = {"POSTGRES_", "MYSQL_", "SQLSERVER_"};
    for (size_t i = 0; i < sizeof PREFIXES / sizeof PREFIXES[0]; i++) {
        size_t p = strlen(PREFIXES[i]);
        if (strncmp(v, PREFIXES[i], p) != 0 || v[p] == '\0')
            continue;
        for (const char *c = v + p; *c; c++) {
            if (!((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_'))
                return 0;
        }
        return strlen(v) <= 64;
    }
    return 0;
}

/* "host:port", "[v6]:port" or an absolute unix socket path. */
static int backend_ok(const char *b)
{
    if (b[0] == '/')
        return strlen(b) < sizeof(((struct sockaddr_un *)0)->sun_path);
    const char *colon = strrchr(b, ':');
    if (!colon)
        return 0;
    long port;
    if (emu_parse_long(colon + 1, 1, 65535, &port) != 0)
        return 0;
    size_t hlen = (size_t)(colon - b);
    char host[DNS_NAME_MAX + 1];
    if (hlen == 0 || hlen > DNS_NAME_MAX)
        return 0;
    if (b[0] == '[') {
        struct in6_addr a6;
        if (hlen < 3 || b[hlen - 1] != ']')
            return 0;
        memcpy(host, b + 1, hlen - 2);
        host[hlen - 2] = '\0';
        return inet_pton(AF_INET6, host, &a6) == 1;
    }
    memcpy(host, b, hlen);
    host[hlen] = '\0';
    return hostname_ok(host);
}

/* ---------------- building an instance ---------------- */

emu_instance *emu_instance_new(const char *conn_name, char *err, size_t errlen)
{
    emu_instance *inst = calloc(1, sizeof *inst);
    if (!inst) {
        emu_fail(err, errlen, "out of memory");
        return NULL;
    }
    if (emu_connection_name_split(conn_name, &inst->project, &inst->region, &inst->name, err,
                                  errlen) != 0 ||
        !(inst->connection_name = strdup(conn_name))) {
        if (inst->project)
            emu_fail(err, errlen, "out of memory");
        emu_instance_free(inst);
        return NULL;
    }
    return inst;
}

static int set_string(emu_instance *inst, char **field, const char *key, const char *value,
                      char *err, size_t errlen)
{
    if (*field)
        return emu_fail(err, errlen, "instance %s: key '%s' given twice", inst->connection_name,
                        key);
    *field = strdup(value);
    return *field ? 0 : emu_fail(err, errlen, "out of memory");
}

static int set_ip(emu_instance *inst, char **field, const char *key, const char *value,
                  char *err, size_t errlen)
{
    char norm[INET6_ADDRSTRLEN];
    if (loopback_normalize(value, norm) != 0)
        return emu_fail(err, errlen,
                        "instance %s: %s '%.100s' is not a loopback IP literal "
                        "(127.0.0.0/8 or ::1)",
                        inst->connection_name, key, value);
    return set_string(inst, field, key, norm, err, errlen);
}

int emu_instance_set(emu_instance *inst, const char *key_in, const char *value, char *err,
                     size_t errlen)
{
    char key[32];
    const char *name = inst->connection_name;

    /* Config objects may spell keys with '_' ("public_ip"). */
    if (emu_copy(key, sizeof key, key_in) != 0)
        return emu_fail(err, errlen, "instance %s: unknown key '%.64s'", name, key_in);
    for (char *c = key; *c; c++)
        *c = *c == '_' ? '-' : *c;

    if (strcmp(key, "version") == 0) {
        if (!version_ok(value))
            return emu_fail(err, errlen,
                            "instance %s: version '%.100s' is not valid (want POSTGRES_*, "
                            "MYSQL_* or SQLSERVER_*, e.g. POSTGRES_15)",
                            name, value);
        return set_string(inst, &inst->version, key, value, err, errlen);
    }
    if (strcmp(key, "public-ip") == 0)
        return set_ip(inst, &inst->public_ip, key, value, err, errlen);
    if (strcmp(key, "private-ip") == 0)
        return set_ip(inst, &inst->private_ip, key, value, err, errlen);
    if (strcmp(key, "psc-dns") == 0) {
        if (!hostname_ok(value))
            return emu_fail(err, errlen, "instance %s: psc-dns '%.100s' is not a DNS name",
                            name, value);
        return set_string(inst, &inst->psc_dns, key, value, err, errlen);
    }
    if (strcmp(key, "ca-mode") == 0) {
        if (strcmp(value, "legacy") == 0)
            inst->ca_mode = EMU_CA_LEGACY;
        else if (strcmp(value, "cas") == 0)
            inst->ca_mode = EMU_CA_CAS;
        else
            return emu_fail(err, errlen,
                            "instance %s: ca-mode '%.100s' is not valid (want legacy or cas)",
                            name, value);
        return 0;
    }
    if (strcmp(key, "backend") == 0) {
        if (!backend_ok(value))
            return emu_fail(err, errlen,
                            "instance %s: backend '%.200s' is not valid (want HOST:PORT, "
                            "[IPV6]:PORT or an absolute unix socket path)",
                            name, value);
        return set_string(inst, &inst->backend, key, value, err, errlen);
    }
    return emu_fail(err, errlen,
                    "instance %s: unknown key '%.64s' (want version, public-ip, private-ip, "
                    "psc-dns, ca-mode, backend)",
                    name, key_in);
}

/* Resolve psc-dns like a client would; every answer must be loopback. */
static int resolve_psc(emu_instance *inst, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char first[INET6_ADDRSTRLEN] = "";
    int rc = getaddrinfo(inst->psc_dns, NULL, &hints, &res);

    if (rc != 0)
        return emu_fail(err, errlen, "instance %s: psc-dns '%s' does not resolve: %s",
                        inst->connection_name, inst->psc_dns, gai_strerror(rc));
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char text[INET6_ADDRSTRLEN] = "?";
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        inet_ntop(ai->ai_family, a, text, sizeof text);
        if (!emu_ip_is_loopback_literal(text)) {
            freeaddrinfo(res);
            return emu_fail(err, errlen,
                            "instance %s: psc-dns '%s' resolves to %s, which is not a loopback "
                            "address",
                            inst->connection_name, inst->psc_dns, text);
        }
        if (!first[0])
            memcpy(first, text, sizeof text);
    }
    freeaddrinfo(res);
    inst->psc_ip = strdup(first);
    return inst->psc_ip ? 0 : emu_fail(err, errlen, "out of memory");
}

int emu_instance_finish(emu_instance *inst, char *err, size_t errlen)
{
    if (!inst->version)
        return emu_fail(err, errlen, "instance %s: version is required (e.g. version=POSTGRES_15)",
                        inst->connection_name);
    if (!inst->backend)
        return emu_fail(err, errlen,
                        "instance %s: backend is required (e.g. backend=127.0.0.1:5432)",
                        inst->connection_name);
    if (!inst->public_ip && !inst->private_ip && !inst->psc_dns)
        return emu_fail(err, errlen,
                        "instance %s: no address: give public-ip, private-ip or psc-dns",
                        inst->connection_name);
    if (inst->psc_dns && resolve_psc(inst, err, errlen) != 0)
        return -1;
    return 0;
}

emu_instance *emu_instance_parse(const char *spec, char *err, size_t errlen)
{
    const char *q = strchr(spec, '?');
    size_t nlen = q ? (size_t)(q - spec) : strlen(spec);
    char name[CONN_NAME_MAX + 1];
    emu_instance *inst;

    if (nlen > CONN_NAME_MAX) {
        emu_fail(err, errlen, "instance connection name '%.*s...' is too long", 40, spec);
        return NULL;
    }
    memcpy(name, spec, nlen);
    name[nlen] = '\0';
    if (!(inst = emu_instance_new(name, err, errlen)))
        return NULL;

    const char *query = q ? q + 1 : "";
    size_t len = strlen(query), pos = 0, at = 0;
    char seen[8][64]; /* keys given so far: a spec has at most 6 distinct ones */
    size_t n_seen = 0;
    char key[64], value[1024];
    int r;
    while ((r = emu_kv_next(query, len, &pos, key, sizeof key, value, sizeof value)) != 0) {
        if (r < 0) {
            size_t n = pos - at - 1;
            emu_fail(err, errlen, "instance %s: '%.*s' is not key=value (or is too long)", name,
                     (int)(n > 100 ? 100 : n), query + at);
            goto fail;
        }
        at = pos;
        for (char *c = key; *c; c++)
            *c = *c == '_' ? '-' : *c;
        for (size_t k = 0; k < n_seen; k++) {
            if (strcmp(seen[k], key) == 0) {
                emu_fail(err, errlen, "instance %s: key '%s' given twice", name, key);
                goto fail;
            }
        }
        if (emu_instance_set(inst, key, value, err, errlen) != 0)
            goto fail;
        if (n_seen < sizeof seen / sizeof seen[0])
            memcpy(seen[n_seen++], key, sizeof key);
    }
    if (emu_instance_finish(inst, err, errlen) != 0)
        goto fail;
    return inst;
fail:
    emu_instance_free(inst);
    return NULL;
}

void emu_instance_free(emu_instance *inst)
{
    if (!inst)
        return;
    struct emu_retired_id *r = inst->retired_ids;
    for (int i = 0; r && i < 1 << 20; i++) {
        struct emu_retired_id *next = r->next;
        emu_server_id_free(r->id);
        free(r);
        r = next;
    }
    emu_server_id_free(inst->server_id);
    free(inst->connection_name);
    free(inst->project);
    free(inst->region);
    free(inst->name);
    free(inst->version);
    free(inst->public_ip);
    free(inst->private_ip);
    free(inst->psc_dns);
    free(inst->psc_ip);
    free(inst->backend);
    free(inst);
}

/* ---------------- the instance set ---------------- */

static size_t instance_addrs(const emu_instance *inst, const char *out[ADDRS_PER_INSTANCE],
                             const char *kinds[ADDRS_PER_INSTANCE])
{
    size_t n = 0;
    if (inst->public_ip)
        kinds[n] = "public-ip", out[n++] = inst->public_ip;
    if (inst->private_ip)
        kinds[n] = "private-ip", out[n++] = inst->private_ip;
    if (inst->psc_ip)
        kinds[n] = "psc-dns", out[n++] = inst->psc_ip;
    return n;
}

int emu_instances_check(emu_instance *const *list, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const char *ai[ADDRS_PER_INSTANCE], *ki[ADDRS_PER_INSTANCE];
        size_t na = instance_addrs(list[i], ai, ki);
        for (size_t x = 0; x < na; x++) {
            for (size_t y = x + 1; y < na; y++) {
                if (strcmp(ai[x], ai[y]) == 0)
                    return emu_fail(err, errlen, "instance %s: %s and %s are both %s",
                                    list[i]->connection_name, ki[x], ki[y], ai[x]);
            }
        }
        for (size_t j = 0; j < i; j++) {
            const emu_instance *a = list[j], *b = list[i];
            if (strcmp(a->project, b->project) == 0 && strcmp(a->name, b->name) == 0)
                return emu_fail(err, errlen,
                                "instance %s is given twice (or shares project and name with "
                                "%s)",
                                b->connection_name, a->connection_name);
            const char *aj[ADDRS_PER_INSTANCE], *kj[ADDRS_PER_INSTANCE];
            size_t nj = instance_addrs(a, aj, kj);
            for (size_t x = 0; x < na; x++) {
                for (size_t y = 0; y < nj; y++) {
                    if (strcmp(ai[x], aj[y]) == 0)
                        return emu_fail(err, errlen,
                                        "instances %s and %s both use address %s (%s, %s)",
                                        a->connection_name, b->connection_name, ai[x], kj[y],
                                        ki[x]);
                }
            }
        }
    }
    return 0;
}

emu_instance *emu_instances_find(emu_instance *const *list, size_t n, const char *conn_name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i]->connection_name, conn_name) == 0)
            return list[i];
    }
    return NULL;
}

/* ---------------- server identity ---------------- */

int emu_instance_rotate_ca(emu_instance *inst, char *err, size_t errlen)
{
    /* Built outside the lock: key generation takes a while. */
    emu_server_id *id = emu_server_id_new(inst->ca_mode, inst->project, inst->region, inst->name,
                                          inst->psc_dns, err, errlen);
    struct emu_retired_id *r = calloc(1, sizeof *r);
    if (!id || !r) {
        if (id && !r)
            emu_fail(err, errlen, "out of memory");
        emu_server_id_free(id);
        free(r);
        return -1;
    }
    emu_instance_lock();
    emu_server_id *old = inst->server_id;
    inst->server_id = id;
    if (old) {
        r->id = old;
        r->next = inst->retired_ids;
        inst->retired_ids = r;
        r = NULL;
    }
    emu_instance_unlock();
    free(r);
    return 0;
}

char *emu_instance_ca_pem_copy(emu_instance *inst, time_t *expiry)
{
    char *pem = NULL;
    emu_instance_lock();
    if (inst->server_id) {
        pem = emu_strdup(emu_server_id_ca_pem(inst->server_id));
        if (expiry)
            *expiry = emu_server_id_ca_expiry(inst->server_id);
    }
    emu_instance_unlock();
    return pem;
}
