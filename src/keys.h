/* Internal: the dialer's RSA-2048 key, made once in the background or supplied by the caller. */
#ifndef CSQL_SRC_KEYS_H
#define CSQL_SRC_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

typedef struct csql__keypair csql__keypair;

/* Background generators a dialer races: one per online CPU, at most this many. */
#define CSQL__KEYGEN_THREADS_DEFAULT 2

/*
 * From a caller's PEM (validated: RSA, >= 2048 bits; CSQL_ERR_BAD_CONFIG otherwise),
 * or, with pem == NULL, generated: with background > 0 by that many short-lived
 * threads started now (at most 4) racing each other, the first key found wins and
 * stops the others; with background == 0 on the first csql__keypair_get.
 */
int csql__keypair_new(const char *pem, size_t pem_len, int background, csql__keypair **out);
/*
 * Wait (until deadline_ms, monotonic) for the key; *pkey is borrowed (valid
 * for the life of the keypair) and *pub_pem is its SubjectPublicKeyInfo PEM
 * ("-----BEGIN PUBLIC KEY-----"), borrowed too. CSQL_ERR_TIMEOUT or CSQL_ERR_INTERNAL.
 */
int csql__keypair_get(csql__keypair *kp, int64_t deadline_ms, EVP_PKEY **pkey, const char **pub_pem);
/* Joins the generation threads if any. */
void csql__keypair_free(csql__keypair *kp);
/* How many background generators to race: min(online CPUs, CSQL__KEYGEN_THREADS_DEFAULT). */
int csql__keygen_threads(void);
/*
 * For tests and benchmarks: background generators started, how many of them the
 * winner stopped early, and how many finished just after it (their key thrown away).
 */
void csql__keypair_race_stats(csql__keypair *kp, int *started, int *stopped, int *discarded);

#endif
