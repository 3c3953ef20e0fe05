/*
 * csql_dialer: the connector. Holds the credentials, the RSA key and a
 * certificate cache per (instance, IAM authn flag); dials TLS connections to
 * Cloud SQL instances. Every function here is thread-safe unless noted.
 */
#ifndef CSQL_DIALER_H
#define CSQL_DIALER_H

#include <stddef.h>
#include <stdint.h>

#include "csql/config.h"
#include "csql/conn.h"
#include "csql/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct csql_dialer csql_dialer;

/* Per-dial options. Initialise with CSQL_DIAL_OPTIONS_INIT; fields are only ever appended. */
typedef struct csql_dial_options {
    unsigned int version;    /* CSQL_DIAL_OPTIONS_VERSION */
    csql_ip_type ip_type;    /* CSQL_IP_DEFAULT: the dialer's */
    int iam_authn;           /* -1: the dialer's; 0 off; 1 on */
    uint32_t timeout_ms;     /* 0: the dialer's dial timeout */
} csql_dial_options;

#define CSQL_DIAL_OPTIONS_VERSION 1
#define CSQL_DIAL_OPTIONS_INIT {CSQL_DIAL_OPTIONS_VERSION, CSQL_IP_DEFAULT, -1, 0}

/*
 * Create a dialer from a copy of `cfg`. Credentials are resolved now (a bad
 * credentials file fails here); the RSA key is generated in the background
 * (background strategy) or on first use (lazy). One background thread serves
 * every instance of the dialer (none with the lazy strategy).
 */
CSQL_EXTERN int csql_dialer_new(csql_dialer **out, const csql_config *cfg);

/*
 * Stop the dialer: later dials fail with CSQL_ERR_CLOSED, pending refreshes
 * are cancelled, the background thread is joined. Connections already dialled
 * stay open. Idempotent.
 */
CSQL_EXTERN int csql_dialer_close(csql_dialer *d);

/* Close (if needed) and free. Connections from this dialer must be closed first. NULL is ignored. */
CSQL_EXTERN void csql_dialer_free(csql_dialer *d);

/*
 * Dial `instance` ("project:region:instance"): get a valid certificate
 * (from cache, or refresh and wait), connect TCP to the instance's address on
 * port 3307, do the TLS 1.3 handshake with the ephemeral client certificate and
 * verify the server, then the metadata exchange if enabled. Blocks up to the
 * dial timeout. opts may be NULL. On success *out is a connection the caller
 * must close with csql_conn_close().
 */
CSQL_EXTERN int csql_dial(csql_dialer *d, const char *instance, const csql_dial_options *opts,
                          csql_conn **out);

/*
 * Start fetching the certificate of `instance` now so later dials do not
 * wait. With wait != 0, block until it is ready (or failed, returning the
 * error) within the refresh timeout.
 */
CSQL_EXTERN int csql_dialer_warmup(csql_dialer *d, const char *instance,
                                   const csql_dial_options *opts, int wait);

/* What the connector knows of an instance (from its current certificate refresh). */
typedef struct csql_instance_info csql_instance_info;

/* Fetch (from cache, or by refreshing) the information on `instance`. Free with csql_instance_info_free. */
CSQL_EXTERN int csql_dialer_instance_info(csql_dialer *d, const char *instance,
                                          const csql_dial_options *opts,
                                          csql_instance_info **out);
/* "POSTGRES_15", "MYSQL_8_0", "SQLSERVER_2019_STANDARD", ... */
CSQL_EXTERN const char *csql_instance_info_database_version(const csql_instance_info *info);
/* The address of that type (IP literal, or the PSC DNS name), or NULL if the instance has none. */
CSQL_EXTERN const char *csql_instance_info_address(const csql_instance_info *info,
                                                   csql_ip_type type);
/* The region the instance is in. */
CSQL_EXTERN const char *csql_instance_info_region(const csql_instance_info *info);
/* Unix time when the current client certificate stops being usable. */
CSQL_EXTERN int64_t csql_instance_info_cert_expiry(const csql_instance_info *info);
CSQL_EXTERN void csql_instance_info_free(csql_instance_info *info);

/*
 * The database user name automatic IAM authn expects for `principal` (an IAM
 * email) on `database_version`: POSTGRES_* drops ".gserviceaccount.com";
 * MYSQL_* keeps what is before '@'. SQLSERVER_*: CSQL_ERR_IAM_UNSUPPORTED.
 * Writes a NUL-terminated name into buf; CSQL_ERR_INVALID_ARGUMENT if it does not fit.
 */
CSQL_EXTERN int csql_iam_db_user(const char *database_version, const char *principal, char *buf,
                                 size_t buflen);

#ifdef __cplusplus
}
#endif
#endif
