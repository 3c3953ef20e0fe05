/*
 * csql_config: every option of a dialer. Setters validate and copy their
 * arguments (the caller keeps ownership of what it passed). A config may be
 * reused for several dialers; each dialer takes its own copy at creation, so
 * later changes to the config do not affect existing dialers.
 * A config is not thread-safe: set it up on one thread.
 *
 * Every setter returns 0, CSQL_ERR_INVALID_ARGUMENT for a NULL config (or a
 * NULL where a value is required), or CSQL_ERR_BAD_CONFIG with a message
 * naming the option and the bad value (secrets are never echoed); a failed
 * setter leaves the option as it was. Optional string options (login token,
 * impersonation, quota project, endpoints, universe domain, user agent, RSA
 * key) accept NULL to go back to the default.
 */
#ifndef CSQL_CONFIG_H
#define CSQL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "csql/export.h"
#include "csql/log.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct csql_config csql_config;

/* Which address of the instance to dial. */
typedef enum csql_ip_type {
    CSQL_IP_DEFAULT = 0, /* in dial options: use the dialer's; in a config: PUBLIC */
    CSQL_IP_PUBLIC = 1,  /* ipAddresses type PRIMARY */
    CSQL_IP_PRIVATE = 2, /* ipAddresses type PRIVATE */
    CSQL_IP_PSC = 3,     /* the Private Service Connect DNS name */
    CSQL_IP_AUTO = 4     /* public if the instance has one, else private */
} csql_ip_type;

typedef enum csql_refresh_strategy {
    CSQL_REFRESH_BACKGROUND = 0, /* refresh ahead of expiry on a background thread */
    CSQL_REFRESH_LAZY = 1        /* no background work; refresh during dials when needed */
} csql_refresh_strategy;

/* Which token a token callback is asked for. */
typedef enum csql_token_kind {
    CSQL_TOKEN_ADMIN = 0, /* scope https://www.googleapis.com/auth/sqlservice.admin */
    CSQL_TOKEN_LOGIN = 1  /* scope https://www.googleapis.com/auth/sqlservice.login (IAM authn) */
} csql_token_kind;

/*
 * A caller-supplied token source. Write a NUL-terminated OAuth2 access token
 * into buf (at most buflen bytes including the NUL) and its expiry as Unix
 * seconds into *expires_at (0 if unknown), and return 0. Return non-zero to
 * fail the refresh (reported as CSQL_ERR_TOKEN). Called from csql's threads.
 */
typedef int (*csql_token_fn)(csql_token_kind kind, char *buf, size_t buflen, int64_t *expires_at,
                             void *userdata);

/* Create a config with every option at its default. */
CSQL_EXTERN int csql_config_new(csql_config **out);
/* Free a config (NULL is ignored). Dialers made from it are unaffected. */
CSQL_EXTERN void csql_config_free(csql_config *cfg);

/* Default IP type for dials (default PUBLIC). CSQL_IP_DEFAULT means PUBLIC. */
CSQL_EXTERN int csql_config_set_ip_type(csql_config *cfg, csql_ip_type type);
/* Automatic IAM database authentication for dials by default (default off). */
CSQL_EXTERN int csql_config_set_iam_authn(csql_config *cfg, int enabled);
/* Deadline of one dial, from call to established TLS (default 30000 ms; 1..3600000). */
CSQL_EXTERN int csql_config_set_dial_timeout_ms(csql_config *cfg, uint32_t ms);
/* Deadline of one certificate refresh (default 60000 ms; 1..3600000). */
CSQL_EXTERN int csql_config_set_refresh_timeout_ms(csql_config *cfg, uint32_t ms);

/*
 * Credentials. Without any of these, Application Default Credentials are used:
 * GOOGLE_APPLICATION_CREDENTIALS, then gcloud's application_default_credentials.json
 * (under $CLOUDSDK_CONFIG or ~/.config/gcloud), then the GCE metadata server
 * (host from GCE_METADATA_HOST). Setting one kind clears the others.
 */
/* A service_account or authorized_user JSON file. Read when the dialer is created. */
CSQL_EXTERN int csql_config_set_credentials_file(csql_config *cfg, const char *path);
/* The same, as a JSON string. */
CSQL_EXTERN int csql_config_set_credentials_json(csql_config *cfg, const char *json);
/* A fixed OAuth2 access token (never refreshed): printable ASCII, no spaces, at most 16 KiB. */
CSQL_EXTERN int csql_config_set_token(csql_config *cfg, const char *access_token);
/*
 * With a fixed token: a separate fixed token for IAM authn (default: the
 * access token). Kept when the access token changes; creating a dialer with a
 * login token but no access token fails with CSQL_ERR_BAD_CONFIG.
 */
CSQL_EXTERN int csql_config_set_login_token(csql_config *cfg, const char *login_token);
/* A callback that supplies tokens. */
CSQL_EXTERN int csql_config_set_token_callback(csql_config *cfg, csql_token_fn fn, void *userdata);
/*
 * Impersonate a service account: the base credentials mint its tokens through
 * the IAM Credentials API. `chain` is the target's email, optionally followed
 * by delegates: "target@p.iam.gserviceaccount.com,delegate1,delegate2". NULL clears.
 */
CSQL_EXTERN int csql_config_set_impersonate_service_account(csql_config *cfg, const char *chain);

/* Quota project sent as x-goog-user-project (default: $GOOGLE_CLOUD_QUOTA_PROJECT). */
CSQL_EXTERN int csql_config_set_quota_project(csql_config *cfg, const char *project);
/*
 * SQL Admin API base URL (default https://sqladmin.googleapis.com, or
 * https://sqladmin.<universe domain>). http:// is accepted only for loopback
 * hosts (127.0.0.0/8, ::1, localhost). No user:password@, query or fragment;
 * trailing slashes are dropped. NULL: default.
 */
CSQL_EXTERN int csql_config_set_admin_api_endpoint(csql_config *cfg, const char *url);
/* Universe domain (default googleapis.com, or $GOOGLE_CLOUD_UNIVERSE_DOMAIN). NULL: default. */
CSQL_EXTERN int csql_config_set_universe_domain(csql_config *cfg, const char *domain);
/*
 * IAM Credentials API base URL for impersonation (default
 * https://iamcredentials.<universe>). Same rules as the Admin API endpoint.
 */
CSQL_EXTERN int csql_config_set_iam_credentials_endpoint(csql_config *cfg, const char *url);
/*
 * Appended to the User-Agent header: "csql/<version> <suffix>". Printable
 * ASCII, at most 256 bytes; NULL or "" removes it.
 */
CSQL_EXTERN int csql_config_set_user_agent(csql_config *cfg, const char *suffix);

CSQL_EXTERN int csql_config_set_refresh_strategy(csql_config *cfg, csql_refresh_strategy s);
/*
 * Use this RSA private key (PEM, PKCS#1 or PKCS#8, unencrypted, at least 2048
 * bits) instead of generating one. The key is copied; the copy is wiped when
 * freed. pem == NULL goes back to a generated key.
 */
CSQL_EXTERN int csql_config_set_rsa_key_pem(csql_config *cfg, const char *pem, size_t len);
/* TCP keepalive idle time in s for dialled sockets (default 30; 0 turns it off; at most 32767). */
CSQL_EXTERN int csql_config_set_tcp_keepalive_s(csql_config *cfg, uint32_t seconds);
/* Metadata exchange with the server when it supports it (default on). */
CSQL_EXTERN int csql_config_set_mdx(csql_config *cfg, int enabled);
/* Server-side proxy port (default 3307). For emulators and tests. */
CSQL_EXTERN int csql_config_set_server_port(csql_config *cfg, uint16_t port);
/*
 * Event loops (threads) forwarding the connections of this dialer's
 * endpoints (csql/endpoint.h): each accepted connection is dialled and
 * forwarded on the least loaded one. Default 1; 0 means one per online CPU;
 * at most CSQL_EVENT_LOOPS_MAX. Loops start on first use. More loops help a
 * process that forwards many busy connections (csql-proxy); a driver helper
 * with a few connections needs one.
 */
#define CSQL_EVENT_LOOPS_MAX 64
CSQL_EXTERN int csql_config_set_event_loops(csql_config *cfg, unsigned int n);
/* Log callback and the most verbose level passed to it (default: no logging). */
CSQL_EXTERN int csql_config_set_log(csql_config *cfg, csql_log_fn fn, void *userdata,
                                    csql_log_level max_level);

/* The outcome of one certificate refresh (after its retries), for metrics and monitoring. */
typedef struct csql_refresh_event {
    const char *instance;   /* "project:region:instance" */
    int iam_authn;          /* the refreshed cache entry is for IAM authn dials */
    int error;              /* 0 on success, else the csql_err that failed it */
    long http_status;       /* on failure: the HTTP status behind it, or 0 */
    const char *api_reason; /* on failure: the Google error status ("PERMISSION_DENIED"), or "" */
    const char *message;    /* on failure: the error message (never a secret), else "" */
    int64_t expires_at;     /* on success: Unix time the new certificate stops being usable */
    uint64_t duration_ms;   /* time the refresh took */
} csql_refresh_event;

/*
 * Called after every refresh of every instance, on the thread that ran it (the
 * dialer's refresh thread, or with CSQL_REFRESH_LAZY the dialling thread).
 * Must not block, nor call into the dialer. The event and its strings are
 * valid only during the call.
 */
typedef void (*csql_refresh_fn)(const csql_refresh_event *ev, void *userdata);

/* Call fn after each certificate refresh (default: none; fn NULL removes it). */
CSQL_EXTERN int csql_config_set_refresh_callback(csql_config *cfg, csql_refresh_fn fn,
                                                 void *userdata);

#ifdef __cplusplus
}
#endif
#endif
