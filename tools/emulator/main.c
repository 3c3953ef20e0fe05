/*
 * csql-emulator: parse the settings, build the signing CA and each instance's
 * server identity, start the server-side proxies and the HTTP API, print the
 * API URL, then wait for SIGTERM/SIGINT and take everything down again.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "api.h"
#include "auth.h"
#include "options.h"

int main(int argc, char **argv)
{
    emu_options o;
    emu_credentials creds = {0};
    emu_signing_ca *ca = NULL;
    emu_api *api = NULL;
    size_t started = 0;
    char err[1024];
    int rc = 1, sig = 0;
    sigset_t set;

    switch (emu_options_parse(&o, argc, (const char *const *)argv, stdout, err, sizeof err)) {
    case EMU_OPTIONS_EXIT:
        emu_options_free(&o);
        return 0;
    case EMU_OPTIONS_ERROR:
        fprintf(stderr, "csql-emulator: %s\n", err);
        emu_options_free(&o);
        return EMU_EXIT_USAGE;
    case EMU_OPTIONS_RUN:
        break;
    }

    /* Blocked before any thread starts, so every thread inherits the mask
     * and only sigwait below sees these signals. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    atomic_store(&emu_g.cert_lifetime_s, o.cert_lifetime_s);
    emu_g.server_port = o.server_port;
    emu_g.backend_source = o.backend_source;

    if (!(ca = emu_signing_ca_new(err, sizeof err)))
        goto fail;
    for (size_t i = 0; i < o.n_instances; i++) {
        if (emu_instance_rotate_ca(o.instances[i], err, sizeof err) != 0)
            goto fail;
    }
    if (o.write_credentials && emu_credentials_create(&creds, err, sizeof err) != 0)
        goto fail;

    emu_proxy_config pcfg = {
        .signing_ca = ca, .server_port = o.server_port, .backend_source = o.backend_source};
    for (; started < o.n_instances; started++) {
        if (emu_proxy_start(o.instances[started], &pcfg, err, sizeof err) != 0)
            goto fail;
    }

    emu_api_config acfg = {.instances = o.instances,
                           .n_instances = o.n_instances,
                           .signing_ca = ca,
                           .address = o.api_address,
                           .port = o.api_port,
                           .static_tokens = o.static_tokens,
                           .n_static_tokens = o.n_static_tokens,
                           .static_principal = o.static_principal,
                           .token_lifetime_s = o.token_lifetime_s,
                           .credentials = o.write_credentials ? &creds : NULL,
                           .faults = o.faults,
                           .n_faults = o.n_faults,
                           .verbose = o.verbose};
    if (!(api = emu_api_start(&acfg, err, sizeof err)))
        goto fail;
    if (o.write_credentials && emu_credentials_write(&creds, o.write_credentials,
                                                     emu_api_token_uri(api), err,
                                                     sizeof err) != 0)
        goto fail;

    printf("%s\n", emu_api_url(api));
    fflush(stdout);
    if (o.verbose)
        fprintf(stderr, "csql-emulator: serving %zu instance(s) at %s\n", o.n_instances,
                emu_api_url(api));
    while (sigwait(&set, &sig) != 0)
        ;
    if (o.verbose)
        fprintf(stderr, "csql-emulator: signal %d, shutting down\n", sig);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "csql-emulator: %s\n", err);
out:
    emu_api_stop(api);
    while (started > 0)
        emu_proxy_stop(o.instances[--started]);
    emu_iam_clear();
    if (creds.sa_key)
        emu_credentials_clear(&creds);
    emu_signing_ca_free(ca);
    emu_options_free(&o);
    return rc;
}
