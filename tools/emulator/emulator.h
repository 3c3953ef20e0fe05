/*
 * csql-emulator internals: the seam between the control plane (command line,
 * SQL Admin API, OAuth and metadata endpoints, faults: main.c, api*.c, auth*.c,
 * faults.c) and the data plane (certificate authorities and the server-side
 * proxy on IP:3307: ca.c, server_proxy.c, backend_auth.c).
 */
#ifndef CSQL_EMULATOR_H
#define CSQL_EMULATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#define EMU_SERVER_PORT_DEFAULT 3307

typedef enum emu_ca_mode { EMU_CA_LEGACY = 0, EMU_CA_CAS = 1 } emu_ca_mode;

/* ---------------- certificate authorities (ca.c) ---------------- */

/* The CA that signs ephemeral client certificates (one per emulator). */
typedef struct emu_signing_ca emu_signing_ca;

emu_signing_ca *emu_signing_ca_new(char *err, size_t errlen);
void emu_signing_ca_free(emu_signing_ca *ca);
/* The signing CA's certificate (borrowed), to verify client certificates against. */
X509 *emu_signing_ca_cert(emu_signing_ca *ca);

/*
 * Sign `pubkey_pem` (a "PUBLIC KEY" SubjectPublicKeyInfo or an "RSA PUBLIC KEY"
 * PKCS#1 PEM) into a client certificate with CN "Google Cloud SQL Client",
 * valid from now-1min... until now + lifetime_s. On success returns 0, sets
 * *cert_pem (malloc'd, NUL-terminated), *serial (the certificate serial number)
 * and *not_after. On failure returns -1 with a message in err (the key did not parse).
 */
int emu_signing_ca_sign(emu_signing_ca *ca, const char *pubkey_pem, size_t len, long lifetime_s,
                        char **cert_pem, uint64_t *serial, time_t *not_after, char *err,
                        size_t errlen);

/*
 * One instance's server identity: in legacy mode a self-signed per-instance CA
 * that signs a leaf with CN "project:instance" and no SAN; in CAS mode a root,
 * an intermediate and a leaf with SAN = the instance DNS name. Immutable once
 * built: rotation builds a new one and swaps it in.
 */
typedef struct emu_server_id emu_server_id;

/*
 * project is the project part of the connection name (may contain a colon
 * for domain-scoped projects); dns_name may be NULL (legacy mode ignores it;
 * CAS mode then uses "<instance>.<project>.<region>.sql.goog").
 */
emu_server_id *emu_server_id_new(emu_ca_mode mode, const char *project, const char *region,
                                 const char *instance, const char *dns_name, char *err,
                                 size_t errlen);
void emu_server_id_free(emu_server_id *id);
/* PEM of every CA certificate a client must trust (several for CAS), concatenated. */
const char *emu_server_id_ca_pem(const emu_server_id *id);
/* Earliest expiry among the CA certificates, for serverCaCert.expirationTime. */
time_t emu_server_id_ca_expiry(const emu_server_id *id);
/* The DNS name in the leaf's SAN (CAS), or NULL (legacy). */
const char *emu_server_id_dns_name(const emu_server_id *id);
/* Leaf certificate, its key, and the chain to send (borrowed). */
X509 *emu_server_id_leaf(const emu_server_id *id);
EVP_PKEY *emu_server_id_leaf_key(const emu_server_id *id);
STACK_OF(X509) *emu_server_id_chain(const emu_server_id *id);

/* ---------------- instances (instance.c) ---------------- */

typedef struct emu_proxy emu_proxy;

typedef struct emu_instance {
    char *connection_name; /* "project:region:name" as given */
    char *project;         /* may contain one colon (domain-scoped) */
    char *region;
    char *name;
    char *version;         /* e.g. POSTGRES_15, MYSQL_8_0, SQLSERVER_2019_STANDARD */
    char *public_ip;       /* NULL when the instance has none */
    char *private_ip;      /* NULL when the instance has none */
    char *psc_dns;         /* NULL when PSC is disabled */
    char *psc_ip;          /* psc_dns resolved to a loopback address at start */
    emu_ca_mode ca_mode;
    char *backend;         /* "host:port" or an absolute unix socket path */

    /* Current server identity; replaced by rotation. Read and swap under emu_instance_lock. */
    emu_server_id *server_id;
    emu_proxy *proxy; /* owned by server_proxy.c */
    /* Identities replaced by rotation, kept until emu_instance_free because
     * readers may still hold pointers borrowed from them (instance.c). */
    struct emu_retired_id *retired_ids;
} emu_instance;

/* Parse 'P:R:I?version=...&public-ip=...' into a new instance. -1 with err naming the bad part. */
emu_instance *emu_instance_parse(const char *spec, char *err, size_t errlen);
void emu_instance_free(emu_instance *inst);
/* Build (or rebuild, for CA rotation) inst->server_id. Thread-safe against readers. */
int emu_instance_rotate_ca(emu_instance *inst, char *err, size_t errlen);
/* A new reference-free snapshot of the CA bundle PEM (malloc'd). */
char *emu_instance_ca_pem_copy(emu_instance *inst, time_t *expiry);
void emu_instance_lock(void);
void emu_instance_unlock(void);

/* Control-plane helpers for instances (instance.c). */

/* Split and check "project:region:name" (REFERENCE §1); out-params malloc'd. */
int emu_connection_name_split(const char *s, char **project, char **region, char **name,
                              char *err, size_t errlen);
/* 1 when ip is an IPv4 (127.0.0.0/8) or IPv6 (::1) loopback literal. */
int emu_ip_is_loopback_literal(const char *ip);
/* A new instance named conn_name with no keys set; finish with emu_instance_finish. */
emu_instance *emu_instance_new(const char *conn_name, char *err, size_t errlen);
/* Set one spec key (version, public-ip, private-ip, psc-dns, ca-mode, backend). */
int emu_instance_set(emu_instance *inst, const char *key, const char *value, char *err,
                     size_t errlen);
/* Check required keys, apply defaults, resolve psc-dns to a loopback address. */
int emu_instance_finish(emu_instance *inst, char *err, size_t errlen);
/* Reject two instances with one name, or one address used twice. */
int emu_instances_check(emu_instance *const *list, size_t n, char *err, size_t errlen);
/* The instance whose connection name is conn_name, or NULL. */
emu_instance *emu_instances_find(emu_instance *const *list, size_t n, const char *conn_name);

/* ---------------- IAM bindings (auth_iam.c) ---------------- */

/*
 * generateEphemeralCert with an access_token binds the issued certificate
 * (by serial) to the token's principal and expiry. The server-side proxy asks
 * for the binding after the TLS handshake.
 */
void emu_iam_bind(uint64_t cert_serial, const char *principal, time_t token_expiry);
/* 1 and fills principal/expiry when bound, 0 when the cert was issued without IAM authn. */
int emu_iam_lookup(uint64_t cert_serial, char *principal, size_t len, time_t *token_expiry);
/* Number of bindings held; those whose certificate must have expired are purged first. */
size_t emu_iam_count(void);
/* Drop every binding (shutdown, tests). */
void emu_iam_clear(void);

/* ---------------- server-side proxy (server_proxy.c) ---------------- */

typedef struct emu_proxy_config {
    emu_signing_ca *signing_ca; /* client certificates must chain to this */
    int server_port;            /* normally 3307 */
    const char *backend_source; /* bind backend TCP connections to this address, or NULL */
} emu_proxy_config;

/* Start listening on every address of inst (public, private, PSC) at cfg->server_port. */
int emu_proxy_start(emu_instance *inst, const emu_proxy_config *cfg, char *err, size_t errlen);
/* Stop listening and close every connection; joins the proxy's threads. */
void emu_proxy_stop(emu_instance *inst);
/* Faults: close every live connection now (clients see EOF/reset). */
void emu_proxy_drop_connections(emu_instance *inst);
/* Faults: refuse TCP (close the listeners) or accept again. */
int emu_proxy_set_refuse(emu_instance *inst, bool refuse, char *err, size_t errlen);
/* Counters for tests: connections accepted, refused at TLS, refused by IAM check. */
typedef struct emu_proxy_stats {
    uint64_t accepted, tls_refused, iam_refused, active;
} emu_proxy_stats;
void emu_proxy_stats_get(emu_instance *inst, emu_proxy_stats *out);

/* ---------------- database user names (backend_auth.c) ---------------- */

/*
 * The database user an IAM principal maps to for an engine version:
 * POSTGRES_*: the email without ".gserviceaccount.com"; MYSQL_*: the part before '@'.
 */
int emu_iam_db_user(const char *version, const char *principal, char *out, size_t len);

/* Process-wide settings read by every module. */
typedef struct emu_globals {
    /* Ephemeral client cert lifetime; the admin API changes it while other
     * threads read it, hence atomic. */
    _Atomic long cert_lifetime_s;
    int server_port;
    const char *backend_source;
} emu_globals;
extern emu_globals emu_g;

#endif
