/*
 * libFuzzer target: the emulator's parser of the client public key in a
 * generateEphemeralCert request (emu_ca_parse_pubkey): PEM PUBLIC KEY or
 * RSA PUBLIC KEY, SPKI or PKCS#1 under either label, RSA >= 2048 bits.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "data_plane.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[200];
    err[0] = '\0';
    EVP_PKEY *key = emu_ca_parse_pubkey((const char *)data, size, err, sizeof(err));
    if (key != NULL) {
        if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA || EVP_PKEY_get_bits(key) < 2048) {
            abort();
        }
        EVP_PKEY_free(key);
    } else if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0') {
        abort();
    }
    if (ERR_peek_error() != 0) {
        abort();
    }
    return 0;
}
