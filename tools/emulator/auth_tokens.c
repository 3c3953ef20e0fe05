/*
 * Access tokens the emulator accepts: static ones from the command line and
 * random ones it issues. A chained hash table under one mutex; expired tokens
 * stay a grace period so a late caller hears "expired" rather than "unknown",
 * then are purged.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "auth.h"
#include "util.h"

#define BUCKETS 4096
#define EXPIRED_GRACE_S 3600
#define PURGE_EVERY 256
#define MAX_TOKENS 100000

typedef struct token_entry {
    char *token;
    emu_token_info info;
    struct token_entry *next;
} token_entry;

struct emu_tokens {
    pthread_mutex_t mu;
    char static_principal[EMU_PRINCIPAL_MAX];
    token_entry *buckets[BUCKETS];
    size_t count;
    size_t issued_since_purge;
};

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % BUCKETS;
}

emu_tokens *emu_tokens_new(const char *static_principal)
{
    emu_tokens *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (emu_copy(t->static_principal, sizeof t->static_principal, static_principal) != 0) {
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

static void entry_free(token_entry *e)
{
    if (e->token) {
        OPENSSL_cleanse(e->token, strlen(e->token));
        free(e->token);
    }
    free(e);
}

void emu_tokens_free(emu_tokens *t)
{
    if (!t)
        return;
    for (size_t b = 0; b < BUCKETS; b++) {
        token_entry *e = t->buckets[b];
        while (e) {
            token_entry *next = e->next;
            entry_free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* Caller holds the lock. */
static void insert_locked(emu_tokens *t, token_entry *e)
{
    uint32_t b = hash(e->token);
    e->next = t->buckets[b];
    t->buckets[b] = e;
    t->count++;
}

/* Drop tokens expired longer than the grace period. Caller holds the lock. */
static void purge_locked(emu_tokens *t, time_t now)
{
    for (size_t b = 0; b < BUCKETS; b++) {
        token_entry **pp = &t->buckets[b];
        while (*pp) {
            token_entry *e = *pp;
            if (e->info.expiry != 0 && e->info.expiry + EXPIRED_GRACE_S < now) {
                *pp = e->next;
                entry_free(e);
                t->count--;
            } else {
                pp = &e->next;
            }
        }
    }
    t->issued_since_purge = 0;
}

int emu_tokens_add_static(emu_tokens *t, const char *token)
{
    token_entry *e = calloc(1, sizeof *e);
    if (!e)
        return -1;
    if (!token[0] || strlen(token) >= EMU_TOKEN_MAX || !(e->token = strdup(token))) {
        entry_free(e);
        return -1;
    }
    memcpy(e->info.principal, t->static_principal, sizeof e->info.principal);
    strcpy(e->info.scopes, "*");
    pthread_mutex_lock(&t->mu);
    insert_locked(t, e);
    pthread_mutex_unlock(&t->mu);
    return 0;
}

int emu_tokens_issue(emu_tokens *t, const char *principal, const char *scopes, long lifetime_s,
                     char *out, size_t cap, time_t *expiry)
{
    unsigned char rnd[32];
    token_entry *e = calloc(1, sizeof *e);
    int rc = -1;

    if (!e || lifetime_s < 0 || cap < EMU_ISSUED_TOKEN_MAX)
        goto out;
    if (emu_copy(e->info.principal, sizeof e->info.principal, principal) != 0 ||
        emu_copy(e->info.scopes, sizeof e->info.scopes, scopes) != 0)
        goto out;
    size_t plen = strlen(EMU_TOKEN_PREFIX), tlen = plen + (sizeof rnd * 4 + 2) / 3;
    if (RAND_bytes(rnd, sizeof rnd) != 1 || !(e->token = malloc(tlen + 1)))
        goto out;
    memcpy(e->token, EMU_TOKEN_PREFIX, plen);
    if (emu_b64url_encode(rnd, sizeof rnd, e->token + plen, tlen + 1 - plen) < 0)
        goto out;
    time_t now = time(NULL);
    e->info.expiry = now + lifetime_s;

    pthread_mutex_lock(&t->mu);
    if (++t->issued_since_purge >= PURGE_EVERY || t->count >= MAX_TOKENS)
        purge_locked(t, now);
    if (t->count < MAX_TOKENS) {
        memcpy(out, e->token, strlen(e->token) + 1);
        *expiry = e->info.expiry;
        insert_locked(t, e);
        e = NULL;
        rc = 0;
    }
    pthread_mutex_unlock(&t->mu);
out:
    OPENSSL_cleanse(rnd, sizeof rnd);
    if (e)
        entry_free(e);
    return rc;
}

emu_token_status emu_tokens_lookup(emu_tokens *t, const char *token, time_t now,
                                   emu_token_info *out)
{
    emu_token_status st = EMU_TOKEN_UNKNOWN;
    if (strlen(token) >= EMU_TOKEN_MAX)
        return st;
    pthread_mutex_lock(&t->mu);
    for (token_entry *e = t->buckets[hash(token)]; e; e = e->next) {
        if (strcmp(e->token, token) != 0)
            continue;
        st = (e->info.expiry != 0 && now >= e->info.expiry) ? EMU_TOKEN_EXPIRED : EMU_TOKEN_OK;
        if (out)
            *out = e->info;
        break;
    }
    pthread_mutex_unlock(&t->mu);
    return st;
}

size_t emu_tokens_count(emu_tokens *t)
{
    pthread_mutex_lock(&t->mu);
    size_t n = t->count;
    pthread_mutex_unlock(&t->mu);
    return n;
}

bool emu_scopes_contain(const char *scopes, const char *scope)
{
    size_t n = strlen(scope);
    if (strcmp(scopes, "*") == 0)
        return true;
    for (const char *p = scopes; *p;) {
        const char *sp = strchr(p, ' ');
        size_t len = sp ? (size_t)(sp - p) : strlen(p);
        if (len == n && memcmp(p, scope, n) == 0)
            return true;
        if (!sp)
            break;
        p = sp + 1;
    }
    return false;
}

int emu_scopes_from_json(json_t *arr, char *out, size_t cap)
{
    size_t i, o = 0;
    json_t *v;
    if (!json_is_array(arr) || json_array_size(arr) == 0 || cap == 0)
        return -1;
    json_array_foreach(arr, i, v) {
        const char *s = json_string_value(v);
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || o + n + 2 > cap)
            return -1;
        for (size_t k = 0; k < n; k++) {
            if ((unsigned char)s[k] <= 0x20 || (unsigned char)s[k] >= 0x7f)
                return -1;
        }
        if (o)
            out[o++] = ' ';
        memcpy(out + o, s, n + 1);
        o += n;
    }
    return 0;
}

int emu_scopes_normalize(const char *in, char sep, char *out, size_t cap)
{
    size_t o = 0;
    int pending_space = 0;
    if (cap == 0)
        return -1;
    for (const char *p = in; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == (unsigned char)sep || c == ' ') {
            pending_space = o > 0;
            continue;
        }
        if (c <= 0x20 || c >= 0x7f)
            return -1;
        if (o + (size_t)pending_space + 1 >= cap)
            return -1;
        if (pending_space)
            out[o++] = ' ';
        pending_space = 0;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return o ? 0 : -1;
}
