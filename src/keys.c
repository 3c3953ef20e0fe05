/*
 * The dialer's RSA-2048 key (REFERENCE §4): generated once, on short-lived
 * background threads or on first use, or supplied by the caller as PEM.
 * Background generation may race several threads (one per CPU, at most
 * KEYGEN_THREADS_MAX): RSA key generation is a random search for two primes
 * whose time varies 60-600 ms on one core, so the first of two searches to
 * finish cuts the median and above all the tail of a dialer's cold start
 * (docs/benchmarks/README.md). The others see the winner through OpenSSL's
 * generation callback and stop within a prime candidate.
 * The public half is cached as a SubjectPublicKeyInfo PEM for
 * generateEphemeralCert. Private key material lives only inside the EVP_PKEY,
 * which OpenSSL clears when it is freed.
 */
#include "keys.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "error.h"
#include "util/clock.h"

#define KEY_BITS 2048
#define KEY_BITS_MAX 16384
#define KEY_PEM_MAX (64 * 1024)
#define KEYGEN_THREADS_MAX 4

typedef enum key_state {
    KEY_PENDING = 0, /* nobody is generating; the next get generates */
    KEY_BUSY,        /* a thread is generating */
    KEY_READY
} key_state;

struct csql__keypair {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC, signalled when state leaves KEY_BUSY */
    key_state state;
    int threads_started;               /* background generators started (joined by free) */
    int threads_running;               /* of those, still generating (under mu) */
    pthread_t threads[KEYGEN_THREADS_MAX];
    atomic_bool won;                   /* a generator published a key: the others stop */
    int stopped;                       /* generators whose search the winner cut short (mu) */
    int discarded;                     /* generators that finished after the winner (mu) */
    EVP_PKEY *pkey;
    char *pub_pem;
    char why[256]; /* reason of the last failed generation */
};

/* The OpenSSL reason for the last failure on this thread, then a clean queue. */
static void openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e != 0) {
        ERR_error_string_n(e, buf, len);
    } else {
        snprintf(buf, len, "unknown OpenSSL failure");
    }
    ERR_clear_error();
}

/* SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY") of pkey's public half; malloc'd or NULL. */
static char *public_pem(EVP_PKEY *pkey)
{
    char *out = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    if (bio == NULL || PEM_write_bio_PUBKEY(bio, pkey) != 1) {
        goto done;
    }
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || (out = malloc((size_t)n + 1)) == NULL) {
        goto done;
    }
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
done:
    BIO_free(bio);
    return out;
}

/* OpenSSL's generation callback, called for every prime candidate: 0 stops the search. */
static int keygen_cb(EVP_PKEY_CTX *ctx)
{
    const csql__keypair *kp = EVP_PKEY_CTX_get_app_data(ctx);
    return kp == NULL || !atomic_load(&kp->won);
}

/*
 * Make a fresh RSA-2048 key (e = 65537, OpenSSL's default) and its public PEM. With kp,
 * the search stops early (false) once another generator has won.
 */
static bool generate(csql__keypair *kp, EVP_PKEY **pkey, char **pub, char *why, size_t whylen)
{
    *pkey = NULL;
    *pub = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, KEY_BITS) != 1) {
        openssl_reason(why, whylen);
        EVP_PKEY_CTX_free(ctx);
        return false;
    }
    if (kp != NULL) {
        EVP_PKEY_CTX_set_app_data(ctx, kp);
        EVP_PKEY_CTX_set_cb(ctx, keygen_cb);
    }
    int ok = EVP_PKEY_generate(ctx, pkey);
    EVP_PKEY_CTX_free(ctx);
    if (ok != 1) {
        EVP_PKEY_free(*pkey);
        *pkey = NULL;
        openssl_reason(why, whylen);
        return false;
    }
    *pub = public_pem(*pkey);
    if (*pub == NULL) {
        openssl_reason(why, whylen);
        EVP_PKEY_free(*pkey);
        *pkey = NULL;
        return false;
    }
    return true;
}

/* Store a generation result and wake waiters. Called with kp->mu held. */
static void publish(csql__keypair *kp, bool ok, EVP_PKEY *pkey, char *pub, const char *why)
{
    if (ok) {
        kp->pkey = pkey;
        kp->pub_pem = pub;
        kp->state = KEY_READY;
        atomic_store(&kp->won, true);
    } else {
        /* Back to pending: the next get tries again (failures are transient, e.g. memory). */
        kp->state = KEY_PENDING;
        snprintf(kp->why, sizeof(kp->why), "%s", why);
    }
    pthread_cond_broadcast(&kp->cv);
}

static void *keygen_main(void *arg)
{
    csql__keypair *kp = arg;
    EVP_PKEY *pkey = NULL;
    char *pub = NULL;
    char why[256] = "";
    pthread_setname_np(pthread_self(), "csql-keygen");
    bool ok = generate(kp, &pkey, &pub, why, sizeof(why));
    pthread_mutex_lock(&kp->mu);
    kp->threads_running--;
    if (kp->state == KEY_READY) {
        /* Another generator won: this one was stopped, or finished just after it. */
        EVP_PKEY_free(pkey);
        free(pub);
        if (ok) {
            kp->discarded++;
        } else {
            kp->stopped++;
        }
    } else if (ok) {
        publish(kp, true, pkey, pub, why);
    } else if (kp->threads_running == 0) {
        publish(kp, false, NULL, NULL, why); /* every generator failed */
    }
    pthread_mutex_unlock(&kp->mu);
    return NULL;
}

/* Start generator i with every signal blocked, so signals go to the application. */
static bool start_thread(csql__keypair *kp, int i)
{
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&kp->threads[i], NULL, keygen_main, kp);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc == 0;
}

int csql__keygen_threads(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1) {
        return 1;
    }
    return cpus < CSQL__KEYGEN_THREADS_DEFAULT ? (int)cpus : CSQL__KEYGEN_THREADS_DEFAULT;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1; /* never prompt on a terminal: encrypted keys are refused */
}

/*
 * The private half signs what the public half verifies: proof that they belong together.
 * A signature costs well under a millisecond; EVP_PKEY_pairwise_check, used before, also
 * tests p and q for primality, 50-70 ms on this project's machines, paid at every
 * csql_dialer_new with a caller's key (docs/benchmarks/README.md).
 */
static bool halves_match(EVP_PKEY *pkey)
{
    static const unsigned char msg[] = "csql: RSA key consistency check";
    unsigned char sig[KEY_BITS_MAX / 8];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *sign = EVP_MD_CTX_new();
    EVP_MD_CTX *verify = EVP_MD_CTX_new();
    bool ok = sign != NULL && verify != NULL &&
              EVP_DigestSignInit_ex(sign, NULL, "SHA256", NULL, NULL, pkey, NULL) == 1 &&
              EVP_DigestSign(sign, sig, &siglen, msg, sizeof(msg)) == 1 &&
              EVP_DigestVerifyInit_ex(verify, NULL, "SHA256", NULL, NULL, pkey, NULL) == 1 &&
              EVP_DigestVerify(verify, sig, siglen, msg, sizeof(msg)) == 1;
    EVP_MD_CTX_free(sign);
    EVP_MD_CTX_free(verify);
    return ok;
}

/* Parse and validate a caller's private key PEM: RSA, private, 2048..16384 bits, consistent. */
static int load_caller_key(const char *pem, size_t len, EVP_PKEY **out)
{
    char why[256];
    EVP_PKEY *pkey = NULL;
    BIGNUM *d = NULL;
    int rc = CSQL_ERR_BAD_CONFIG;

    *out = NULL;
    if (len == 0 || len > KEY_PEM_MAX) {
        return csql__error(rc, "RSA key: PEM of %zu bytes (expected 1..%d)", len, KEY_PEM_MAX);
    }
    ERR_clear_error();
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "RSA key: out of memory");
    }
    pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (pkey == NULL) {
        openssl_reason(why, sizeof(why));
        csql__error(rc, "RSA key: the PEM does not hold an unencrypted private key (PKCS#1 or "
                        "PKCS#8): %s", why);
        goto done;
    }
    if (!EVP_PKEY_is_a(pkey, "RSA")) {
        const char *type = EVP_PKEY_get0_type_name(pkey);
        csql__error(rc, "RSA key: the PEM holds a %s key, not an RSA key", type ? type : "non-RSA");
        goto done;
    }
    int bits = EVP_PKEY_get_bits(pkey);
    if (bits < KEY_BITS || bits > KEY_BITS_MAX) {
        csql__error(rc, "RSA key: %d bits, expected at least %d (and at most %d)", bits, KEY_BITS,
                    KEY_BITS_MAX);
        goto done;
    }
    if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &d) || BN_is_zero(d)) {
        csql__error(rc, "RSA key: the PEM holds no private exponent");
        goto done;
    }
    if (!halves_match(pkey)) {
        openssl_reason(why, sizeof(why));
        csql__error(rc, "RSA key: the private and public halves do not match: %s", why);
        goto done;
    }
    *out = pkey;
    pkey = NULL;
    rc = 0;
done:
    ERR_clear_error();
    BN_clear_free(d);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    return rc;
}

static int keypair_alloc(csql__keypair **out)
{
    csql__keypair *kp = calloc(1, sizeof(*kp));
    pthread_condattr_t attr;
    if (kp == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating the RSA key");
    }
    if (pthread_condattr_init(&attr) != 0) {
        free(kp);
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating the RSA key");
    }
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&kp->cv, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0) {
        free(kp);
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating the RSA key");
    }
    if (pthread_mutex_init(&kp->mu, NULL) != 0) {
        pthread_cond_destroy(&kp->cv);
        free(kp);
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating the RSA key");
    }
    *out = kp;
    return 0;
}

int csql__keypair_new(const char *pem, size_t pem_len, int background, csql__keypair **out)
{
    csql__keypair *kp = NULL;
    EVP_PKEY *pkey = NULL;
    if (out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "keypair_new: NULL out");
    }
    *out = NULL;
    if (pem != NULL) {
        int rc = load_caller_key(pem, pem_len, &pkey);
        if (rc != 0) {
            return rc;
        }
    }
    int rc = keypair_alloc(&kp);
    if (rc != 0) {
        EVP_PKEY_free(pkey);
        return rc;
    }
    if (pkey != NULL) {
        kp->pub_pem = public_pem(pkey);
        kp->pkey = pkey;
        if (kp->pub_pem == NULL) {
            csql__keypair_free(kp);
            ERR_clear_error();
            return csql__error(CSQL_ERR_NOMEM, "RSA key: could not encode the public key");
        }
        kp->state = KEY_READY;
    } else if (background > 0) {
        int n = background > KEYGEN_THREADS_MAX ? KEYGEN_THREADS_MAX : background;
        kp->state = KEY_BUSY;
        /* Under mu: a generator that fails at once must see the others counted. */
        pthread_mutex_lock(&kp->mu);
        for (int i = 0; i < n && start_thread(kp, kp->threads_started); i++) {
            kp->threads_started++;
            kp->threads_running++;
        }
        if (kp->threads_started == 0) {
            kp->state = KEY_PENDING; /* no thread: the first get generates */
        }
        pthread_mutex_unlock(&kp->mu);
    }
    *out = kp;
    return 0;
}

static struct timespec mono_timespec(int64_t ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    return ts;
}

int csql__keypair_get(csql__keypair *kp, int64_t deadline_ms, EVP_PKEY **pkey, const char **pub_pem)
{
    int rc = 0;
    bool tried = false;
    if (kp == NULL || pkey == NULL || pub_pem == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "keypair_get: NULL argument");
    }
    pthread_mutex_lock(&kp->mu);
    /* Each pass either returns, waits for another thread, or generates once here. */
    for (;;) {
        if (kp->state == KEY_READY) {
            *pkey = kp->pkey;
            *pub_pem = kp->pub_pem;
            break;
        }
        if (kp->state == KEY_PENDING) {
            if (tried) {
                rc = csql__error(CSQL_ERR_INTERNAL, "RSA key generation failed: %s", kp->why);
                break;
            }
            tried = true;
            kp->state = KEY_BUSY;
            pthread_mutex_unlock(&kp->mu);
            EVP_PKEY *k = NULL;
            char *pub = NULL;
            char why[256] = "";
            bool ok = generate(NULL, &k, &pub, why, sizeof(why));
            pthread_mutex_lock(&kp->mu);
            publish(kp, ok, k, pub, why);
            continue;
        }
        struct timespec ts = mono_timespec(deadline_ms);
        if (csql__ms_left(deadline_ms) <= 0 ||
            pthread_cond_timedwait(&kp->cv, &kp->mu, &ts) == ETIMEDOUT) {
            if (kp->state == KEY_BUSY) {
                rc = csql__error(CSQL_ERR_TIMEOUT, "timed out waiting for the RSA key to be "
                                                   "generated");
                break;
            }
        }
    }
    pthread_mutex_unlock(&kp->mu);
    return rc;
}

void csql__keypair_free(csql__keypair *kp)
{
    if (kp == NULL) {
        return;
    }
    /* Generation takes a fraction of a second and cannot be interrupted: wait for it. */
    for (int i = 0; i < kp->threads_started; i++) {
        pthread_join(kp->threads[i], NULL);
    }
    EVP_PKEY_free(kp->pkey);
    free(kp->pub_pem);
    pthread_cond_destroy(&kp->cv);
    pthread_mutex_destroy(&kp->mu);
    free(kp);
}

void csql__keypair_race_stats(csql__keypair *kp, int *started, int *stopped, int *discarded)
{
    pthread_mutex_lock(&kp->mu);
    *started = kp->threads_started;
    *stopped = kp->stopped;
    *discarded = kp->discarded;
    pthread_mutex_unlock(&kp->mu);
}
