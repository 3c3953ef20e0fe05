/* Certificate authorities of csql-emulator (placeholder; real implementation follows). */
#include "emulator.h"

#include <stdio.h>

emu_signing_ca *emu_signing_ca_new(char *err, size_t errlen)
{
    snprintf(err, errlen, "signing CA not implemented yet");
    return NULL;
}

void emu_signing_ca_free(emu_signing_ca *ca)
{
    (void)ca;
}

X509 *emu_signing_ca_cert(emu_signing_ca *ca)
{
    (void)ca;
    return NULL;
}

int emu_signing_ca_sign(emu_signing_ca *ca, const char *pubkey_pem, size_t len, long lifetime_s,
                        char **cert_pem, uint64_t *serial, time_t *not_after, char *err,
                        size_t errlen)
{
    (void)ca, (void)pubkey_pem, (void)len, (void)lifetime_s;
    *cert_pem = NULL;
    *serial = 0;
    *not_after = 0;
    snprintf(err, errlen, "signing not implemented yet");
    return -1;
}

emu_server_id *emu_server_id_new(emu_ca_mode mode, const char *project, const char *region,
                                 const char *instance, const char *dns_name, char *err,
                                 size_t errlen)
{
    (void)mode, (void)project, (void)region, (void)instance, (void)dns_name;
    snprintf(err, errlen, "server identity not implemented yet");
    return NULL;
}

void emu_server_id_free(emu_server_id *id)
{
    (void)id;
}

const char *emu_server_id_ca_pem(const emu_server_id *id)
{
    (void)id;
    return "";
}

time_t emu_server_id_ca_expiry(const emu_server_id *id)
{
    (void)id;
    return 0;
}

const char *emu_server_id_dns_name(const emu_server_id *id)
{
    (void)id;
    return NULL;
}

X509 *emu_server_id_leaf(const emu_server_id *id)
{
    (void)id;
    return NULL;
}

EVP_PKEY *emu_server_id_leaf_key(const emu_server_id *id)
{
    (void)id;
    return NULL;
}

STACK_OF(X509) *emu_server_id_chain(const emu_server_id *id)
{
    (void)id;
    return NULL;
}
