/*
 * libFuzzer target: what the emulator's server-side proxy reads from clients
 * and backends for the automatic IAM authn check: the PostgreSQL startup
 * packet, MySQL packet framing, the MySQL greeting (patched in place) and
 * HandshakeResponse, and the IAM user decision. Byte 0 picks the parser.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data_plane.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_err(const char *err, size_t cap)
{
    if (memchr(err, '\0', cap) == NULL || err[0] == '\0') {
        abort();
    }
}

static void pg(const uint8_t *p, size_t n)
{
    emu_pg_startup st;
    char err[160];
    emu_parse_rc rc = emu_pg_startup_parse(p, n, &st, err, sizeof(err));
    if (rc == EMU_PARSE_OK) {
        if (st.length < 8 || st.length > n || st.length > EMU_PG_STARTUP_MAX ||
            memchr(st.user, '\0', sizeof(st.user)) == NULL) {
            abort();
        }
        /* A complete packet is complete whatever follows it. */
        if (emu_pg_startup_parse(p, st.length, &st, err, sizeof(err)) != EMU_PARSE_OK) {
            abort();
        }
    } else if (rc == EMU_PARSE_BAD) {
        check_err(err, sizeof(err));
    } else if (rc != EMU_PARSE_MORE) {
        abort();
    }
}

static void mysql_client(const uint8_t *p, size_t n)
{
    size_t len = 0;
    uint8_t seq = 0;
    emu_parse_rc rc = emu_mysql_packet(p, n, EMU_MYSQL_PACKET_MAX, &len, &seq);
    if (rc != EMU_PARSE_OK) {
        return;
    }
    if (len > EMU_MYSQL_PACKET_MAX || 4 + len > n) {
        abort();
    }
    emu_mysql_response r;
    char err[160];
    rc = emu_mysql_response_parse(p + 4, len, &r, err, sizeof(err));
    if (rc == EMU_PARSE_OK) {
        if (memchr(r.user, '\0', sizeof(r.user)) == NULL) {
            abort();
        }
    } else if (rc == EMU_PARSE_BAD) {
        check_err(err, sizeof(err));
    } else {
        abort();
    }
}

static void mysql_greeting(const uint8_t *p, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (copy == NULL) {
        return;
    }
    if (n > 0) {
        memcpy(copy, p, n);
    }
    emu_parse_rc rc = emu_mysql_greeting_clear_ssl(copy, n);
    if (rc == EMU_PARSE_OK) {
        /* Exactly one bit of one byte may change: CLIENT_SSL in the capability flags. */
        size_t changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (copy[i] != p[i]) {
                changed++;
                if ((copy[i] ^ p[i]) != (EMU_MYSQL_CLIENT_SSL >> 8)) {
                    abort();
                }
            }
        }
        if (changed > 1 || emu_mysql_greeting_clear_ssl(copy, n) != EMU_PARSE_OK) {
            abort();
        }
    } else if (memcmp(copy, p, n) != 0) {
        abort();
    }
    free(copy);
}

/* "version\0principal\0user", token expiry relative to now from the first byte. */
static void iam(const uint8_t *p, size_t n)
{
    if (n < 1) {
        return;
    }
    /* n - 1 input bytes and three NULs, so each of the three strings ends inside s. */
    char *s = calloc(1, n + 2);
    if (s == NULL) {
        return;
    }
    memcpy(s, p + 1, n - 1);
    const char *version = s;
    const char *principal = version + strlen(version) + 1;
    const char *user = principal + strlen(principal) + 1;
    char msg[256];
    msg[0] = '\0';
    time_t now = 1700000000;
    int rc = emu_iam_check_user(version, principal, now + (time_t)(p[0] % 3) - 1, user, now, msg,
                                sizeof(msg));
    if (rc != 0 && (rc != -1 || memchr(msg, '\0', sizeof(msg)) == NULL || msg[0] == '\0')) {
        abort();
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0:
        pg(p, n);
        break;
    case 1:
        mysql_client(p, n);
        break;
    case 2:
        mysql_greeting(p, n);
        break;
    default:
        iam(p, n);
        break;
    }
    return 0;
}
