/*
 * csql-emulator settings: the command line and the --config JSON file.
 * Parsing is pure (no network, no files but the config file) so it can be
 * unit-tested; main.c acts on the result.
 */
#ifndef CSQL_EMULATOR_OPTIONS_H
#define CSQL_EMULATOR_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "emulator.h"
#include "faults.h"

#define EMU_EXIT_USAGE 2

#define EMU_STATIC_PRINCIPAL_DEFAULT "static-user@emulator.iam.gserviceaccount.com"
#define EMU_CERT_LIFETIME_DEFAULT 3600L
#define EMU_TOKEN_LIFETIME_DEFAULT 3600L
/* Upper bounds keep arithmetic on expiry times far from overflow. */
#define EMU_LIFETIME_MAX (10L * 365 * 24 * 3600)
#define EMU_MAX_INSTANCES 64
#define EMU_MAX_STATIC_TOKENS 64

typedef struct emu_options {
    char *api_address; /* loopback literal, default 127.0.0.1 */
    int api_port;      /* 0: ephemeral */
    char **static_tokens;
    size_t n_static_tokens;
    char *static_principal;
    long cert_lifetime_s;
    long token_lifetime_s;
    char *write_credentials; /* directory, or NULL */
    int server_port;
    char *backend_source; /* loopback literal, or NULL */
    emu_instance **instances;
    size_t n_instances;
    emu_fault *faults;
    size_t n_faults;
    bool verbose;
} emu_options;

typedef enum emu_options_result {
    EMU_OPTIONS_RUN = 0,   /* settings are valid: run */
    EMU_OPTIONS_EXIT = 1,  /* --help or --version was printed: exit 0 */
    EMU_OPTIONS_ERROR = -1 /* err names the bad value: exit 2 */
} emu_options_result;

/*
 * Parse argv (and the --config file it names) into o, which is zeroed first.
 * Flags add to (lists) or override (scalars) the config file. Help and version
 * text go to `out`. o must be freed with emu_options_free whatever the result.
 */
emu_options_result emu_options_parse(emu_options *o, int argc, const char *const *argv, FILE *out,
                                     char *err, size_t errlen);
void emu_options_free(emu_options *o);

#endif
