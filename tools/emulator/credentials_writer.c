/*
 * The credentials files csql-emulator writes with --write-credentials: a
 * service_account key whose JWT assertions its /token endpoint verifies, and
 * an authorized_user file whose refresh token it accepts. Both name the
 * emulator's token URI, so Application Default Credentials flows work offline.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "auth.h"
#include "util.h"

static int random_hex(char *out, size_t nbytes)
{
    unsigned char buf[32];
    if (nbytes > sizeof buf || RAND_bytes(buf, (int)nbytes) != 1)
        return -1;
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", buf[i]);
    OPENSSL_cleanse(buf, sizeof buf);
    return 0;
}

static int random_digits(char *out, size_t n)
{
    unsigned char buf[32];
    if (n > sizeof buf || RAND_bytes(buf, (int)n) != 1)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)('0' + (i == 0 ? 1 + buf[i] % 9 : buf[i] % 10));
    out[n] = '\0';
    return 0;
}

int emu_credentials_create(emu_credentials *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->sa_key = EVP_RSA_gen(2048);
    if (!c->sa_key)
        return emu_fail(err, errlen, "cannot generate the service account key");
    char au_id[25], au_rt[65];
    if (random_hex(c->sa_key_id, 20) || random_digits(c->sa_client_id, 21) ||
        random_digits(au_id, 12) || random_hex(c->au_client_secret, 16) ||
        random_hex(au_rt, 32)) {
        emu_credentials_clear(c);
        return emu_fail(err, errlen, "cannot draw random bytes");
    }
    snprintf(c->au_client_id, sizeof c->au_client_id, "%s-emulator.apps.googleusercontent.com",
             au_id);
    snprintf(c->au_refresh_token, sizeof c->au_refresh_token, "1//emu-%s", au_rt);
    OPENSSL_cleanse(au_rt, sizeof au_rt);
    return 0;
}

void emu_credentials_clear(emu_credentials *c)
{
    EVP_PKEY_free(c->sa_key);
    OPENSSL_cleanse(c, sizeof *c);
}

/* PKCS#8 PEM of the private key (malloc'd), or NULL. */
static char *private_key_pem(EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_secmem());
    char *pem = NULL, *data;
    if (bio && PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1) {
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0 && (pem = malloc((size_t)n + 1))) {
            memcpy(pem, data, (size_t)n);
            pem[n] = '\0';
        }
    }
    BIO_free(bio);
    return pem;
}

/* Write json to dir/name with mode 0600, replacing any old file atomically. */
static int write_json(const char *dir, const char *name, json_t *json, char *err, size_t errlen)
{
    char path[4096], tmp[4200];
    char *text = json_dumps(json, JSON_INDENT(2));
    int fd = -1, rc = -1;

    if (!text)
        return emu_fail(err, errlen, "out of memory");
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        emu_fail(err, errlen, "--write-credentials: directory path is too long");
        goto out;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        emu_fail(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            emu_fail(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
            goto out;
        }
        off += (size_t)w;
    }
    if (write(fd, "\n", 1) != 1 || fchmod(fd, 0600) != 0 || close(fd) != 0) {
        fd = -1;
        emu_fail(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        emu_fail(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (rc != 0)
        unlink(tmp);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    return rc;
}

int emu_credentials_write(const emu_credentials *c, const char *dir, const char *token_uri,
                          char *err, size_t errlen)
{
    struct stat st;
    int rc = -1;
    char *pem = NULL;
    json_t *sa = NULL, *au = NULL;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return emu_fail(err, errlen, "--write-credentials: cannot create %s: %s", dir,
                        strerror(errno));
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return emu_fail(err, errlen, "--write-credentials: %s is not a directory", dir);
    if (chmod(dir, 0700) != 0)
        return emu_fail(err, errlen, "--write-credentials: cannot chmod %s: %s", dir,
                        strerror(errno));
    if (!(pem = private_key_pem(c->sa_key))) {
        emu_fail(err, errlen, "cannot encode the service account key");
        goto out;
    }
    sa = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "type", "service_account",
                   "project_id", EMU_SA_PROJECT, "private_key_id", c->sa_key_id, "private_key",
                   pem, "client_email", EMU_SA_EMAIL, "client_id", c->sa_client_id, "auth_uri",
                   "https://accounts.google.com/o/oauth2/auth", "token_uri", token_uri,
                   "universe_domain", "googleapis.com");
    au = json_pack("{s:s,s:s,s:s,s:s,s:s}", "type", "authorized_user", "client_id",
                   c->au_client_id, "client_secret", c->au_client_secret, "refresh_token",
                   c->au_refresh_token, "token_uri", token_uri);
    if (!sa || !au) {
        emu_fail(err, errlen, "out of memory");
        goto out;
    }
    if (write_json(dir, "service_account.json", sa, err, errlen) != 0 ||
        write_json(dir, "authorized_user.json", au, err, errlen) != 0)
        goto out;
    rc = 0;
out:
    if (pem) {
        OPENSSL_cleanse(pem, strlen(pem));
        free(pem);
    }
    json_decref(sa);
    json_decref(au);
    return rc;
}
