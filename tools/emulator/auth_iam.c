/*
 * Certificate-to-principal bindings for automatic IAM database authentication.
 * generateEphemeralCert with an access_token records (serial, principal, token
 * expiry); the server-side proxy looks the serial up after the handshake.
 *
 * A binding outlives its token on purpose: a certificate whose login token has
 * expired must still be recognised as an IAM certificate (and refused), not
 * mistaken for one issued without IAM authn. It is purged once the certificate
 * it belongs to must have expired too (token expiry + cert lifetime).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "emulator.h"
#include "util.h"

#define MAX_BINDINGS 100000

typedef struct binding {
    uint64_t serial;
    time_t expiry;
    char principal[EMU_PRINCIPAL_MAX];
} binding;

static pthread_mutex_t iam_mu = PTHREAD_MUTEX_INITIALIZER;
static binding *table;
static size_t count, cap;

/* Caller holds the lock. */
static void purge_locked(time_t now)
{
    long keep = atomic_load(&emu_g.cert_lifetime_s);
    if (keep < 3600)
        keep = 3600;
    size_t o = 0;
    for (size_t i = 0; i < count; i++) {
        if (table[i].expiry + keep >= now)
            table[o++] = table[i];
    }
    count = o;
}

void emu_iam_bind(uint64_t cert_serial, const char *principal, time_t token_expiry)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&iam_mu);
    purge_locked(now);
    binding *b = NULL;
    for (size_t i = 0; i < count && !b; i++) {
        if (table[i].serial == cert_serial)
            b = &table[i];
    }
    if (!b && count == MAX_BINDINGS) {
        /* Full of live bindings: forget the oldest. */
        memmove(table, table + 1, (count - 1) * sizeof *table);
        count--;
    }
    if (!b && count == cap) {
        size_t ncap = cap ? cap * 2 : 64;
        binding *nt = realloc(table, ncap * sizeof *nt);
        if (nt) {
            table = nt;
            cap = ncap;
        }
    }
    if (!b && count < cap)
        b = &table[count++];
    if (b) {
        b->serial = cert_serial;
        b->expiry = token_expiry;
        if (emu_copy(b->principal, sizeof b->principal, principal) != 0)
            b->principal[0] = '\0';
    }
    pthread_mutex_unlock(&iam_mu);
}

int emu_iam_lookup(uint64_t cert_serial, char *principal, size_t len, time_t *token_expiry)
{
    int found = 0;
    pthread_mutex_lock(&iam_mu);
    for (size_t i = 0; i < count; i++) {
        if (table[i].serial != cert_serial)
            continue;
        if (principal && len)
            snprintf(principal, len, "%s", table[i].principal);
        if (token_expiry)
            *token_expiry = table[i].expiry;
        found = 1;
        break;
    }
    pthread_mutex_unlock(&iam_mu);
    return found;
}

size_t emu_iam_count(void)
{
    pthread_mutex_lock(&iam_mu);
    purge_locked(time(NULL));
    size_t n = count;
    pthread_mutex_unlock(&iam_mu);
    return n;
}

void emu_iam_clear(void)
{
    pthread_mutex_lock(&iam_mu);
    free(table);
    table = NULL;
    count = cap = 0;
    pthread_mutex_unlock(&iam_mu);
}
