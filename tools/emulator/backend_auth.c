/*
 * Automatic IAM database authentication, server side. A client certificate
 * issued with an access_token is bound (auth_iam.c) to the token's principal
 * and expiry. For such a connection the proxy reads the login the client
 * sends (PostgreSQL startup packet; MySQL HandshakeResponse) and lets it
 * through only if the user is the principal's database user and the token is
 * unexpired; the database itself trusts IAM users only from the emulator's
 * --backend-source address (docs/internals/emulator-data-plane.md).
 * Otherwise the client gets the engine's own authentication error.
 */
#include "server_proxy_internal.h"

#include <stdio.h>
#include <string.h>

static const char GSA_SUFFIX[] = ".gserviceaccount.com";

int emu_iam_db_user(const char *version, const char *principal, char *out, size_t len)
{
    if (version == NULL || principal == NULL || out == NULL || len == 0) {
        return -1;
    }
    size_t n = strlen(principal);
    if (strncmp(version, "POSTGRES_", 9) == 0) {
        size_t sl = sizeof(GSA_SUFFIX) - 1;
        if (n > sl && strcmp(principal + n - sl, GSA_SUFFIX) == 0) {
            n -= sl;
        }
    } else if (strncmp(version, "MYSQL_", 6) == 0) {
        const char *at = strchr(principal, '@');
        if (at != NULL) {
            n = (size_t)(at - principal);
        }
    } else {
        return -1;
    }
    if (n == 0 || n >= len) {
        return -1;
    }
    memcpy(out, principal, n);
    out[n] = '\0';
    return 0;
}

int emu_iam_check_user(const char *version, const char *principal, time_t token_expiry,
                       const char *user, time_t now, char *msg, size_t msglen)
{
    char want[256];
    if (emu_iam_db_user(version, principal, want, sizeof(want)) != 0) {
        snprintf(msg, msglen, "Cloud SQL IAM authentication is not supported for %s",
                 version ? version : "this engine");
        return -1;
    }
    if (token_expiry <= now) {
        snprintf(msg, msglen,
                 "Cloud SQL IAM user authentication failed for user \"%.100s\": "
                 "the login token has expired",
                 user);
        return -1;
    }
    if (strcmp(user, want) != 0) {
        snprintf(msg, msglen,
                 "Cloud SQL IAM user authentication failed for user \"%.100s\": "
                 "the certificate belongs to IAM user \"%.100s\"",
                 user, want);
        return -1;
    }
    return 0;
}

/* ---------------- PostgreSQL ---------------- */

static void pg_refuse(emu_conn *c, const char *sqlstate, const char *msg, int64_t deadline)
{
    uint8_t out[512];
    size_t n = emu_pg_error_response(sqlstate, msg, out, sizeof(out));
    if (n > 0) {
        emu_conn_client_write(c, out, n, deadline);
    }
}

/*
 * Reads the startup packet from c2b (reading more as needed). An SSLRequest
 * or GSSENCRequest inside the tunnel is answered 'N' (at most twice) so the
 * client falls back to a plain startup, which is then checked.
 */
static int pg_check(emu_conn *c, int64_t deadline)
{
    char err[160], msg[400];
    emu_pg_startup st;
    for (int requests = 0; requests <= 2;) {
        emu_parse_rc rc = emu_pg_startup_parse(c->c2b.data + c->c2b.head, emu_buf_len(&c->c2b),
                                               &st, err, sizeof(err));
        if (rc == EMU_PARSE_MORE) {
            if (emu_conn_client_read(c, deadline) <= 0) {
                return -1;
            }
            continue;
        }
        if (rc == EMU_PARSE_BAD) {
            pg_refuse(c, "08P01", err, deadline);
            return -1;
        }
        switch (st.kind) {
        case EMU_PG_CANCEL:
            return 0; /* carries a backend key, no user: the database checks it */
        case EMU_PG_SSLREQ:
        case EMU_PG_GSSENCREQ:
            emu_buf_consume(&c->c2b, st.length);
            if (emu_conn_client_write(c, (const uint8_t *)"N", 1, deadline) != 0) {
                return -1;
            }
            requests++;
            continue;
        case EMU_PG_STARTUP:
            if (emu_iam_check_user(c->px->version, c->principal, c->token_expiry, st.user,
                                   time(NULL), msg, sizeof(msg)) != 0) {
                pg_refuse(c, "28000", msg, deadline);
                return -1;
            }
            return 0;
        }
    }
    pg_refuse(c, "08P01", "too many encryption requests", deadline);
    return -1;
}

/* ---------------- MySQL ---------------- */

static void mysql_refuse(emu_conn *c, uint8_t seq, const char *msg, int64_t deadline)
{
    uint8_t out[512];
    size_t n = emu_mysql_err_packet(seq, 1045, "28000", msg, out, sizeof(out));
    if (n > 0) {
        emu_conn_client_write(c, out, n, deadline);
    }
}

/*
 * The server speaks first: forward its greeting (with CLIENT_SSL cleared, so
 * the client does not start TLS inside the tunnel), then check the client's
 * HandshakeResponse before the database sees it.
 */
static int mysql_check(emu_conn *c, int64_t deadline)
{
    size_t plen = 0;
    uint8_t seq = 0;
    emu_parse_rc rc;
    /* Each read adds at least one byte; the packet bound ends the loop. */
    while ((rc = emu_mysql_packet(c->b2c.data + c->b2c.head, emu_buf_len(&c->b2c),
                                  EMU_MYSQL_PACKET_MAX, &plen, &seq)) == EMU_PARSE_MORE) {
        if (emu_conn_backend_read(c, deadline) <= 0) {
            return -1;
        }
    }
    if (rc != EMU_PARSE_OK) {
        return -1;
    }
    rc = emu_mysql_greeting_clear_ssl(c->b2c.data + c->b2c.head + 4, plen);
    if (rc == EMU_PARSE_BAD) {
        return -1;
    }
    if (emu_conn_client_write(c, c->b2c.data + c->b2c.head, emu_buf_len(&c->b2c), deadline) !=
        0) {
        return -1;
    }
    emu_buf_consume(&c->b2c, emu_buf_len(&c->b2c));
    if (rc == EMU_PARSE_NOT) {
        return 0; /* the database refused us (ERR packet): nothing to check */
    }

    char err[160], msg[400];
    emu_mysql_response resp;
    while ((rc = emu_mysql_packet(c->c2b.data + c->c2b.head, emu_buf_len(&c->c2b),
                                  EMU_MYSQL_PACKET_MAX, &plen, &seq)) == EMU_PARSE_MORE) {
        if (emu_conn_client_read(c, deadline) <= 0) {
            return -1;
        }
    }
    if (rc != EMU_PARSE_OK) {
        mysql_refuse(c, 2, "Access denied: handshake response too large", deadline);
        return -1;
    }
    uint8_t reply_seq = (uint8_t)(seq + 1);
    if (emu_mysql_response_parse(c->c2b.data + c->c2b.head + 4, plen, &resp, err, sizeof(err)) !=
        EMU_PARSE_OK) {
        mysql_refuse(c, reply_seq, err, deadline);
        return -1;
    }
    if (resp.ssl_request) {
        mysql_refuse(c, reply_seq,
                     "Access denied: Cloud SQL IAM authentication needs the client without "
                     "its own TLS (the connection is already encrypted)",
                     deadline);
        return -1;
    }
    if (emu_iam_check_user(c->px->version, c->principal, c->token_expiry, resp.user, time(NULL),
                           msg, sizeof(msg)) != 0) {
        char full[560];
        snprintf(full, sizeof(full), "Access denied for user '%.100s' (%s)", resp.user, msg);
        mysql_refuse(c, reply_seq, full, deadline);
        return -1;
    }
    return 0;
}

int emu_backend_auth(emu_conn *c, int64_t deadline)
{
    switch (c->px->engine) {
    case EMU_ENGINE_POSTGRES:
        return pg_check(c, deadline);
    case EMU_ENGINE_MYSQL:
        return mysql_check(c, deadline);
    case EMU_ENGINE_SQLSERVER:
        break;
    }
    return -1; /* SQL Server has no automatic IAM authn: close */
}
