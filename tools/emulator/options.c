/*
 * csql-emulator's command line and --config file. The config file is read
 * first; flags then override its scalars and add to its lists. Every value is
 * validated here and errors name the flag (or config key) and the bad value.
 */
#include "options.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "auth.h"
#include "util.h"

#ifndef CSQL_EMULATOR_VERSION
#define CSQL_EMULATOR_VERSION "0"
#endif

/* Process-wide settings (emulator.h); options fill them in main. */
emu_globals emu_g = {.cert_lifetime_s = EMU_CERT_LIFETIME_DEFAULT,
                     .server_port = EMU_SERVER_PORT_DEFAULT,
                     .backend_source = NULL};

#define CONFIG_MAX_BYTES (1024 * 1024)

static const char USAGE[] =
    "Usage: csql-emulator [OPTIONS] --instance SPEC [--instance SPEC]...\n"
    "\n"
    "Cloud SQL on one machine: the SQL Admin API, OAuth token, metadata and IAM\n"
    "Credentials endpoints over HTTP on loopback, and a server-side proxy on\n"
    "IP:3307 per instance in front of a real database. Prints the API base URL\n"
    "on the first line of stdout and runs until SIGTERM or SIGINT.\n"
    "\n"
    "Instances:\n"
    "  --instance 'PROJECT:REGION:NAME?key=value&...'   (repeatable)\n"
    "      version=POSTGRES_15|MYSQL_8_0|SQLSERVER_2019_STANDARD|...  (required)\n"
    "      public-ip=127.0.0.2   private-ip=127.0.0.3   (loopback literals)\n"
    "      psc-dns=localhost     (enables PSC; must resolve to loopback)\n"
    "      ca-mode=legacy|cas    backend=HOST:PORT or /unix/socket/path\n"
    "\n"
    "Options:\n"
    "  --api-address ADDR       HTTP API address, a loopback literal (127.0.0.1)\n"
    "  --api-port PORT          HTTP API port; 0 picks a free one (0)\n"
    "  --server-port PORT       server-side proxy port on every instance IP (3307)\n"
    "  --backend-source ADDR    IAM-checked backend connections come from this loopback address\n"
    "  --static-token TOKEN     accept TOKEN as a bearer token with every scope (repeatable)\n"
    "  --static-principal EMAIL the principal static tokens stand for\n"
    "                           (" EMU_STATIC_PRINCIPAL_DEFAULT ")\n"
    "  --cert-lifetime SECONDS  ephemeral client certificate lifetime (3600)\n"
    "  --token-lifetime SECONDS lifetime of issued access tokens (3600)\n"
    "  --write-credentials DIR  write DIR/service_account.json and DIR/authorized_user.json\n"
    "  --fault SPEC             inject a fault from the start (repeatable), e.g.\n"
    "                           'endpoint=generateEphemeralCert&status=503&count=2'\n"
    "  --config FILE            JSON file with the same settings (flags override it)\n"
    "  --verbose                log one line per HTTP request to stderr\n"
    "  --help, --version\n"
    "\n"
    "Bad flags or config exit with status 2. See docs/emulator.md.\n";

/* ---------------- lists ---------------- */

static int push_string(char ***list, size_t *n, size_t max, const char *s)
{
    if (*n >= max)
        return -1;
    char **nl = realloc(*list, (*n + 1) * sizeof *nl);
    if (!nl)
        return -1;
    *list = nl;
    if (!(nl[*n] = strdup(s)))
        return -1;
    (*n)++;
    return 0;
}

static int push_instance(emu_options *o, emu_instance *inst, char *err, size_t errlen)
{
    emu_instance **nl;
    if (o->n_instances >= EMU_MAX_INSTANCES) {
        emu_instance_free(inst);
        return emu_fail(err, errlen, "too many instances (at most %d)", EMU_MAX_INSTANCES);
    }
    if (!(nl = realloc(o->instances, (o->n_instances + 1) * sizeof *nl))) {
        emu_instance_free(inst);
        return emu_fail(err, errlen, "out of memory");
    }
    o->instances = nl;
    nl[o->n_instances++] = inst;
    return 0;
}

static int push_fault(emu_options *o, const emu_fault *f, char *err, size_t errlen)
{
    emu_fault *nl;
    if (o->n_faults >= EMU_MAX_FAULTS)
        return emu_fail(err, errlen, "too many faults (at most %d)", EMU_MAX_FAULTS);
    if (!(nl = realloc(o->faults, (o->n_faults + 1) * sizeof *nl)))
        return emu_fail(err, errlen, "out of memory");
    o->faults = nl;
    nl[o->n_faults++] = *f;
    return 0;
}

/* ---------------- one setting, from a flag or the config ---------------- */

static int replace(char **field, const char *value, char *err, size_t errlen)
{
    char *copy = strdup(value);
    if (!copy)
        return emu_fail(err, errlen, "out of memory");
    free(*field);
    *field = copy;
    return 0;
}

static int token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n >= EMU_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            return 0;
    }
    return 1;
}

/*
 * Apply setting `name` (flag spelling without "--") with a text value. `src`
 * prefixes messages: "--" for flags, "config FILE: " for the file.
 */
static int apply(emu_options *o, const char *name, const char *value, const char *src,
                 char *err, size_t errlen)
{
    long v;
    if (strcmp(name, "api-address") == 0) {
        if (!emu_ip_is_loopback_literal(value))
            return emu_fail(err, errlen,
                            "%sapi-address '%.100s' is not a loopback IP literal (e.g. "
                            "127.0.0.1 or ::1)",
                            src, value);
        return replace(&o->api_address, value, err, errlen);
    }
    if (strcmp(name, "backend-source") == 0) {
        if (!emu_ip_is_loopback_literal(value))
            return emu_fail(err, errlen,
                            "%sbackend-source '%.100s' is not a loopback IP literal", src, value);
        return replace(&o->backend_source, value, err, errlen);
    }
    if (strcmp(name, "api-port") == 0 || strcmp(name, "server-port") == 0) {
        bool api = name[0] == 'a';
        if (emu_parse_long(value, api ? 0 : 1, 65535, &v) != 0)
            return emu_fail(err, errlen, "%s%s '%.100s' is not a port number (%d-65535)", src,
                            name, value, api ? 0 : 1);
        *(api ? &o->api_port : &o->server_port) = (int)v;
        return 0;
    }
    if (strcmp(name, "cert-lifetime") == 0 || strcmp(name, "token-lifetime") == 0) {
        if (emu_parse_long(value, 1, EMU_LIFETIME_MAX, &v) != 0)
            return emu_fail(err, errlen, "%s%s '%.100s' is not a number of seconds (1-%ld)",
                            src, name, value, EMU_LIFETIME_MAX);
        *(name[0] == 'c' ? &o->cert_lifetime_s : &o->token_lifetime_s) = v;
        return 0;
    }
    if (strcmp(name, "static-principal") == 0) {
        if (!strchr(value, '@') || strlen(value) >= EMU_PRINCIPAL_MAX || !token_ok(value))
            return emu_fail(err, errlen, "%sstatic-principal '%.100s' is not an email address",
                            src, value);
        return replace(&o->static_principal, value, err, errlen);
    }
    if (strcmp(name, "static-token") == 0) {
        /* The token itself is a secret: name it by position, never by value. */
        if (!token_ok(value))
            return emu_fail(err, errlen,
                            "%sstatic-token number %zu is empty, too long or has spaces", src,
                            o->n_static_tokens + 1);
        if (push_string(&o->static_tokens, &o->n_static_tokens, EMU_MAX_STATIC_TOKENS, value))
            return emu_fail(err, errlen, "too many static tokens (at most %d)",
                            EMU_MAX_STATIC_TOKENS);
        return 0;
    }
    if (strcmp(name, "write-credentials") == 0) {
        if (!value[0])
            return emu_fail(err, errlen, "%swrite-credentials: empty directory name", src);
        return replace(&o->write_credentials, value, err, errlen);
    }
    if (strcmp(name, "instance") == 0) {
        char ierr[512];
        emu_instance *inst = emu_instance_parse(value, ierr, sizeof ierr);
        if (!inst)
            return emu_fail(err, errlen, "%sinstance: %s", src, ierr);
        return push_instance(o, inst, err, errlen);
    }
    if (strcmp(name, "fault") == 0) {
        emu_fault f;
        char ferr[512];
        if (emu_fault_from_spec(value, &f, ferr, sizeof ferr) != 0)
            return emu_fail(err, errlen, "%sfault '%.200s': %s", src, value, ferr);
        return push_fault(o, &f, err, errlen);
    }
    return emu_fail(err, errlen, "%s%s: unknown setting", src, name);
}

/* ---------------- config file ---------------- */

static int config_instance(emu_options *o, json_t *v, const char *src, char *err,
                           size_t errlen)
{
    char ierr[512];
    const char *key;
    json_t *val;
    if (json_is_string(v))
        return apply(o, "instance", json_string_value(v), src, err, errlen);
    if (!json_is_object(v))
        return emu_fail(err, errlen, "%sinstances: each entry must be a string or an object",
                        src);
    json_t *name = json_object_get(v, "connection_name");
    if (!name)
        name = json_object_get(v, "name");
    if (!json_is_string(name))
        return emu_fail(err, errlen, "%sinstances: an object lacks \"connection_name\"", src);
    emu_instance *inst = emu_instance_new(json_string_value(name), ierr, sizeof ierr);
    if (!inst)
        return emu_fail(err, errlen, "%sinstances: %s", src, ierr);
    json_object_foreach(v, key, val) {
        if (strcmp(key, "connection_name") == 0 || strcmp(key, "name") == 0)
            continue;
        if (!json_is_string(val)) {
            emu_fail(err, errlen, "%sinstances: %s: %s must be a string", src,
                     inst->connection_name, key);
            emu_instance_free(inst);
            return -1;
        }
        if (emu_instance_set(inst, key, json_string_value(val), ierr, sizeof ierr) != 0) {
            emu_instance_free(inst);
            return emu_fail(err, errlen, "%sinstances: %s", src, ierr);
        }
    }
    if (emu_instance_finish(inst, ierr, sizeof ierr) != 0) {
        emu_instance_free(inst);
        return emu_fail(err, errlen, "%sinstances: %s", src, ierr);
    }
    return push_instance(o, inst, err, errlen);
}

static int config_fault(emu_options *o, json_t *v, const char *src, char *err,
                        size_t errlen)
{
    emu_fault f;
    char ferr[512];
    if (json_is_string(v))
        return apply(o, "fault", json_string_value(v), src, err, errlen);
    if (emu_fault_from_json(v, &f, ferr, sizeof ferr) != 0)
        return emu_fail(err, errlen, "%sfaults: %s", src, ferr);
    return push_fault(o, &f, err, errlen);
}

/* A config value as the text a flag would carry (numbers and strings only). */
static int config_text(const json_t *v, char *buf, size_t cap)
{
    if (json_is_string(v))
        return emu_copy(buf, cap, json_string_value(v));
    if (json_is_integer(v)) {
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
        return 0;
    }
    return -1;
}

static int load_config(emu_options *o, const char *path, char *err, size_t errlen)
{
    static const char *const LISTS[] = {"static_tokens", "instances", "faults"};
    static const char *const SCALARS[][2] = {
        {"api_address", "api-address"},       {"api_port", "api-port"},
        {"server_port", "server-port"},       {"backend_source", "backend-source"},
        {"static_principal", "static-principal"}, {"cert_lifetime", "cert-lifetime"},
        {"token_lifetime", "token-lifetime"}, {"write_credentials", "write-credentials"}};
    char src[600], text[EMU_TOKEN_MAX + 1];
    json_error_t jerr;
    const char *key;
    json_t *v;
    int rc = -1;

    snprintf(src, sizeof src, "config %.500s: ", path);
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return emu_fail(err, errlen, "--config '%.500s': %s (line %d)", path, jerr.text,
                        jerr.line);
    if (!json_is_object(root)) {
        emu_fail(err, errlen, "%sthe top level must be an object", src);
        goto out;
    }
    json_object_foreach(root, key, v) {
        const char *flag = NULL;
        size_t li = 0, n_lists = sizeof LISTS / sizeof LISTS[0];
        for (; li < n_lists && strcmp(key, LISTS[li]) != 0; li++)
            ;
        if (li < n_lists) {
            size_t i;
            json_t *item;
            if (!json_is_array(v)) {
                emu_fail(err, errlen, "%s%s must be a list", src, key);
                goto out;
            }
            json_array_foreach(v, i, item) {
                int r;
                if (li == 1)
                    r = config_instance(o, item, src, err, errlen);
                else if (li == 2)
                    r = config_fault(o, item, src, err, errlen);
                else if (!json_is_string(item))
                    r = emu_fail(err, errlen, "%sstatic_tokens must hold strings", src);
                else
                    r = apply(o, "static-token", json_string_value(item), src, err, errlen);
                if (r != 0)
                    goto out;
            }
            continue;
        }
        if (strcmp(key, "verbose") == 0) {
            if (!json_is_boolean(v)) {
                emu_fail(err, errlen, "%sverbose must be true or false", src);
                goto out;
            }
            o->verbose = json_is_true(v);
            continue;
        }
        for (size_t i = 0; !flag && i < sizeof SCALARS / sizeof SCALARS[0]; i++) {
            if (strcmp(key, SCALARS[i][0]) == 0)
                flag = SCALARS[i][1];
        }
        if (!flag) {
            emu_fail(err, errlen, "%sunknown key '%.64s'", src, key);
            goto out;
        }
        if (config_text(v, text, sizeof text) != 0) {
            emu_fail(err, errlen, "%s%s must be a string or an integer", src, key);
            goto out;
        }
        if (apply(o, flag, text, src, err, errlen) != 0)
            goto out;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* ---------------- the command line ---------------- */

static const char *const VALUE_FLAGS[] = {
    "api-address",   "api-port",       "server-port",       "backend-source", "static-token",
    "static-principal", "cert-lifetime", "token-lifetime", "write-credentials", "instance",
    "fault",         "config"};

/* Split argv[*i] into a flag name and its value (next argument or "=value"). */
static int next_flag(int argc, const char *const *argv, int *i, char *name, size_t cap,
                     const char **value, char *err, size_t errlen)
{
    const char *arg = argv[*i];
    *value = NULL;
    if (strcmp(arg, "-h") == 0) {
        snprintf(name, cap, "help");
        return 0;
    }
    if (strncmp(arg, "--", 2) != 0 || !arg[2])
        return emu_fail(err, errlen, "unexpected argument '%.200s' (instances are given with "
                                     "--instance)",
                        arg);
    const char *eq = strchr(arg + 2, '=');
    size_t n = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
    if (n >= cap)
        return emu_fail(err, errlen, "unknown flag '%.100s'", arg);
    memcpy(name, arg + 2, n);
    name[n] = '\0';
    bool takes_value = false;
    for (size_t k = 0; k < sizeof VALUE_FLAGS / sizeof VALUE_FLAGS[0]; k++)
        takes_value |= strcmp(name, VALUE_FLAGS[k]) == 0;
    if (!takes_value) {
        if (strcmp(name, "help") && strcmp(name, "version") && strcmp(name, "verbose"))
            return emu_fail(err, errlen, "unknown flag '%.100s' (see --help)", arg);
        if (eq)
            return emu_fail(err, errlen, "flag --%s takes no value", name);
        return 0;
    }
    if (eq) {
        *value = eq + 1;
    } else if (*i + 1 < argc) {
        *value = argv[++*i];
    } else {
        return emu_fail(err, errlen, "flag --%s needs a value", name);
    }
    return 0;
}

emu_options_result emu_options_parse(emu_options *o, int argc, const char *const *argv, FILE *out,
                                     char *err, size_t errlen)
{
    char name[32];
    const char *value, *config = NULL;

    memset(o, 0, sizeof *o);
    o->cert_lifetime_s = EMU_CERT_LIFETIME_DEFAULT;
    o->token_lifetime_s = EMU_TOKEN_LIFETIME_DEFAULT;
    o->server_port = EMU_SERVER_PORT_DEFAULT;
    if (!(o->api_address = strdup("127.0.0.1")) ||
        !(o->static_principal = strdup(EMU_STATIC_PRINCIPAL_DEFAULT))) {
        emu_fail(err, errlen, "out of memory");
        return EMU_OPTIONS_ERROR;
    }

    /* First pass: help, version, syntax, and where the config file is. */
    for (int i = 1; i < argc; i++) {
        if (next_flag(argc, argv, &i, name, sizeof name, &value, err, errlen) != 0)
            return EMU_OPTIONS_ERROR;
        if (strcmp(name, "help") == 0) {
            fputs(USAGE, out);
            return EMU_OPTIONS_EXIT;
        }
        if (strcmp(name, "version") == 0) {
            fprintf(out, "csql-emulator %s\n", CSQL_EMULATOR_VERSION);
            return EMU_OPTIONS_EXIT;
        }
        if (strcmp(name, "config") == 0) {
            if (config) {
                emu_fail(err, errlen, "--config given twice");
                return EMU_OPTIONS_ERROR;
            }
            config = value;
        }
    }
    if (config && load_config(o, config, err, errlen) != 0)
        return EMU_OPTIONS_ERROR;

    /* Second pass: flags override the file's scalars and add to its lists. */
    for (int i = 1; i < argc; i++) {
        if (next_flag(argc, argv, &i, name, sizeof name, &value, err, errlen) != 0)
            return EMU_OPTIONS_ERROR;
        if (strcmp(name, "verbose") == 0)
            o->verbose = true;
        else if (strcmp(name, "config") != 0 && apply(o, name, value, "--", err, errlen) != 0)
            return EMU_OPTIONS_ERROR;
    }

    if (emu_instances_check(o->instances, o->n_instances, err, errlen) != 0)
        return EMU_OPTIONS_ERROR;
    for (size_t i = 0; i < o->n_faults; i++) {
        const char *inst = o->faults[i].instance;
        if (inst[0] && !emu_instances_find(o->instances, o->n_instances, inst)) {
            emu_fail(err, errlen, "fault: unknown instance '%s'", inst);
            return EMU_OPTIONS_ERROR;
        }
    }
    return EMU_OPTIONS_RUN;
}

void emu_options_free(emu_options *o)
{
    free(o->api_address);
    for (size_t i = 0; i < o->n_static_tokens; i++) {
        OPENSSL_cleanse(o->static_tokens[i], strlen(o->static_tokens[i]));
        free(o->static_tokens[i]);
    }
    free(o->static_tokens);
    free(o->static_principal);
    free(o->write_credentials);
    free(o->backend_source);
    for (size_t i = 0; i < o->n_instances; i++)
        emu_instance_free(o->instances[i]);
    free(o->instances);
    free(o->faults);
    memset(o, 0, sizeof *o);
}
