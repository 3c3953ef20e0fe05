/*
 * csql-emulator data plane, private declarations: pure parsers and encoders
 * for the bytes the server-side proxy inspects (MDX frames, the PostgreSQL
 * startup packet, the MySQL greeting and HandshakeResponse), and helpers of
 * the certificate authorities. No I/O here: every function works on a
 * caller-supplied bounded buffer, so each one is unit-tested and fuzzable.
 */
#ifndef CSQL_EMULATOR_DATA_PLANE_H
#define CSQL_EMULATOR_DATA_PLANE_H

#include "emulator.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------- certificate authorities (ca.c) ---------------- */

/*
 * Parse a client public key: PEM "PUBLIC KEY" (SPKI) or "RSA PUBLIC KEY"
 * (PKCS#1; or SPKI under that label, as the Go connector sends it). RSA of
 * at least 2048 bits. NULL with a message naming the problem in err.
 */
EVP_PKEY *emu_ca_parse_pubkey(const char *pem, size_t len, char *err, size_t errlen);
/* "<instance>.<project, ':' -> '-'>.<region>.sql.goog" (malloc'd). */
char *emu_ca_default_dns_name(const char *project, const char *region, const char *instance);

/* ---------------- results shared by the parsers ---------------- */

typedef enum emu_parse_rc {
    EMU_PARSE_BAD = -1,  /* malformed or over the bound; err says why */
    EMU_PARSE_MORE = 0,  /* a prefix of something valid; read more */
    EMU_PARSE_OK = 1,    /* complete */
    EMU_PARSE_NOT = 2,   /* (MDX only) not this protocol at all */
} emu_parse_rc;

/* ---------------- metadata exchange (mdx_server.c) ---------------- */

#define EMU_MDX_MAGIC "CSQLMDEX"
#define EMU_MDX_MAGIC_LEN 8
#define EMU_MDX_HEADER_LEN 12
#define EMU_MDX_MAX_BODY 4096

enum { EMU_MDX_STATUS_OK = 1, EMU_MDX_STATUS_ERROR = 2 };

typedef struct emu_mdx_request {
    char user_agent[256]; /* truncated copy */
    int protocol_type;    /* 0 when absent; TCP=1, TLS=2, UDS=3 */
} emu_mdx_request;

/*
 * Look at the first n client bytes. NOT as soon as they cannot start an MDX
 * frame (so database bytes are never held back longer than needed), MORE for
 * a proper prefix, OK with *frame_len = header + body when a whole valid frame
 * is there, BAD when the frame is malformed or its body exceeds
 * EMU_MDX_MAX_BODY.
 */
emu_parse_rc emu_mdx_parse(const uint8_t *p, size_t n, emu_mdx_request *req, size_t *frame_len,
                           char *err, size_t errlen);
/* A response frame {1: status, 2: message (ERROR only)}; its length, 0 if cap is too small. */
size_t emu_mdx_encode_response(int status, const char *message, uint8_t *out, size_t cap);

/* ---------------- PostgreSQL startup (backend_auth_wire.c) ---------------- */

#define EMU_PG_STARTUP_MAX 10000 /* PostgreSQL's own MAX_STARTUP_PACKET_LENGTH */
#define EMU_PG_PROTOCOL_3 196608u
#define EMU_PG_CANCEL_CODE 80877102u
#define EMU_PG_SSL_CODE 80877103u
#define EMU_PG_GSSENC_CODE 80877104u

typedef enum emu_pg_kind {
    EMU_PG_STARTUP,
    EMU_PG_CANCEL,
    EMU_PG_SSLREQ,
    EMU_PG_GSSENCREQ,
} emu_pg_kind;

typedef struct emu_pg_startup {
    emu_pg_kind kind;
    uint32_t length; /* bytes of the whole packet */
    char user[256];  /* STARTUP only */
} emu_pg_startup;

/* One packet at the start of p: OK (out filled), MORE, or BAD. */
emu_parse_rc emu_pg_startup_parse(const uint8_t *p, size_t n, emu_pg_startup *out, char *err,
                                  size_t errlen);
/* An ErrorResponse (severity FATAL); its length, 0 if cap is too small. */
size_t emu_pg_error_response(const char *sqlstate, const char *message, uint8_t *out, size_t cap);

/* ---------------- MySQL handshake (backend_auth_wire.c) ---------------- */

#define EMU_MYSQL_PACKET_MAX 16384
#define EMU_MYSQL_CLIENT_SSL 0x0800u
#define EMU_MYSQL_CLIENT_PROTOCOL_41 0x0200u

/* A whole packet (header + payload) at the start of p: OK, MORE, or BAD (payload > max). */
emu_parse_rc emu_mysql_packet(const uint8_t *p, size_t n, size_t max_payload, size_t *payload_len,
                              uint8_t *seq);
/*
 * In the server greeting payload, clear CLIENT_SSL so the client does not
 * start a second TLS inside the tunnel (whose bytes could not be inspected).
 * OK when patched, NOT when the payload is an ERR packet (forward as is), BAD
 * when it is not a protocol-10 greeting.
 */
emu_parse_rc emu_mysql_greeting_clear_ssl(uint8_t *payload, size_t len);

typedef struct emu_mysql_response {
    uint32_t caps;
    bool ssl_request; /* the short SSLRequest packet instead of a response */
    char user[256];
} emu_mysql_response;

/* Parse a HandshakeResponse41/320 payload (or an SSLRequest): OK or BAD. */
emu_parse_rc emu_mysql_response_parse(const uint8_t *payload, size_t len, emu_mysql_response *out,
                                      char *err, size_t errlen);
/* An ERR packet with sequence id seq; its length, 0 if cap is too small. */
size_t emu_mysql_err_packet(uint8_t seq, uint16_t code, const char *sqlstate, const char *message,
                            uint8_t *out, size_t cap);

/* ---------------- IAM decision (backend_auth.c) ---------------- */

/*
 * 0 when user may log in as the IAM principal bound to the client certificate
 * (user == emu_iam_db_user(version, principal) and the token is unexpired at
 * now); -1 with a client-facing reason in msg otherwise.
 */
int emu_iam_check_user(const char *version, const char *principal, time_t token_expiry,
                       const char *user, time_t now, char *msg, size_t msglen);

/* ---------------- server-side proxy extras (server_proxy.c) ---------------- */

/* Counters beyond emu_proxy_stats, for tests and benchmarks. */
typedef struct emu_proxy_stats_ext {
    uint64_t mdx_ok, mdx_error;   /* metadata exchanges answered OK / ERROR */
    uint64_t backend_failed;      /* backend connect failures */
    uint64_t bytes_up, bytes_down; /* client->database, database->client */
} emu_proxy_stats_ext;
void emu_proxy_stats_ext_get(emu_instance *inst, emu_proxy_stats_ext *out);
/*
 * How long a connection to a server-speaks-first engine (MySQL) waits for a
 * client MDX frame before forwarding the greeting (default 250 ms, REFERENCE
 * §7). 0 disables MDX for such instances. Takes effect for new connections.
 */
void emu_proxy_set_mdx_wait_ms(emu_instance *inst, int ms);
/*
 * Deadlines for the TLS handshake and for the first database bytes (MDX, IAM
 * check); defaults 10 s and 30 s. For tests of idle clients.
 */
void emu_proxy_set_timeouts(emu_instance *inst, int handshake_ms, int prelude_ms);
/* The last MDX request answered OK on this instance; 0 if none yet, else 1. */
int emu_proxy_last_mdx(emu_instance *inst, emu_mdx_request *out);

#endif
