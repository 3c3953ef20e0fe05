/* csql-proxy: flags, environment and config file merged into proxy_opts (args.h). */
#include "args.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_file.h"
#include "flags.h"
#include "instances.h"
#include "values.h"

#define INSTANCE_KEY "instance-connection-name"
#define INSTANCE_ENV "CSQL_PROXY_INSTANCE_CONNECTION_NAME"
#define MAX_INSTANCES 4096

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

const char *proxy_getenv(const char *name, void *userdata)
{
    (void)userdata;
    return getenv(name);
}

/* Everything gathered while parsing, before it lands in proxy_opts. */
typedef struct parse_state {
    const flag_def *t;
    size_t n;
    const char **argval; /* per flag: value from argv (last one wins), or NULL */
    const char **pos;    /* positional arguments */
    size_t npos;
    proxy_env_fn env;
    void *env_ud;
    cf_entries file;
    bool *file_used;
    const char *file_path;
} parse_state;

static const char *env_get(const parse_state *s, const char *name)
{
    const char *v = s->env(name, s->env_ud);
    return (v != NULL && v[0] != '\0') ? v : NULL;
}

/* ---- argv ---- */

static int unknown_flag(const char *shown, const char *name, char sh, char *err, size_t errlen)
{
    const char *why = flags_unsupported(name, sh);
    if (why != NULL) {
        return fail(err, errlen, "%s is an Auth Proxy flag that csql-proxy does not support: %s",
                    shown, why);
    }
    return fail(err, errlen, "unknown flag %s (see csql-proxy --help)", shown);
}

static int take_value(parse_state *s, int idx, const char *value, proxy_opts *o)
{
    const flag_def *d = &s->t[idx];
    if (d->type == FT_HELP) {
        o->cmd = PROXY_CMD_HELP;
    } else if (d->type == FT_VERSION) {
        if (o->cmd != PROXY_CMD_HELP) {
            o->cmd = PROXY_CMD_VERSION;
        }
    } else {
        s->argval[idx] = value;
    }
    return 0;
}

static int parse_long(parse_state *s, int argc, const char *const argv[], int *i, proxy_opts *o,
                      char *err, size_t errlen)
{
    const char *a = argv[*i] + 2;
    const char *eq = strchr(a, '=');
    char name[64];
    size_t nl = eq ? (size_t)(eq - a) : strlen(a);
    if (nl == 0 || nl >= sizeof(name)) {
        return fail(err, errlen, "bad flag \"%.80s\"", argv[*i]);
    }
    memcpy(name, a, nl);
    name[nl] = '\0';
    int idx = flags_find(s->t, s->n, name);
    if (idx < 0) {
        char shown[80];
        snprintf(shown, sizeof(shown), "--%s", name);
        return unknown_flag(shown, name, 0, err, errlen);
    }
    const flag_def *d = &s->t[idx];
    if (d->type == FT_BOOL || d->type == FT_HELP || d->type == FT_VERSION) {
        if (eq != NULL && d->type != FT_BOOL) {
            return fail(err, errlen, "--%s takes no value", name);
        }
        return take_value(s, idx, eq ? eq + 1 : "true", o);
    }
    if (eq != NULL) {
        return take_value(s, idx, eq + 1, o);
    }
    if (*i + 1 >= argc) {
        return fail(err, errlen, "--%s needs a value (%s)", name, d->arg);
    }
    (*i)++;
    return take_value(s, idx, argv[*i], o);
}

static int parse_short(parse_state *s, int argc, const char *const argv[], int *i, proxy_opts *o,
                       char *err, size_t errlen)
{
    const char *a = argv[*i];
    for (size_t j = 1; a[j] != '\0'; j++) {
        int idx = flags_find_short(s->t, s->n, a[j]);
        if (idx < 0) {
            char shown[8];
            snprintf(shown, sizeof(shown), "-%c", a[j]);
            return unknown_flag(shown, NULL, a[j], err, errlen);
        }
        const flag_def *d = &s->t[idx];
        if (d->type == FT_HELP || d->type == FT_VERSION) {
            take_value(s, idx, NULL, o);
            continue;
        }
        if (d->type == FT_BOOL) {
            if (a[j + 1] == '=') {
                return take_value(s, idx, a + j + 2, o);
            }
            take_value(s, idx, "true", o);
            continue;
        }
        if (a[j + 1] != '\0') {
            return take_value(s, idx, a + j + 1 + (a[j + 1] == '='), o);
        }
        if (*i + 1 >= argc) {
            return fail(err, errlen, "-%c (--%s) needs a value (%s)", a[j], d->name, d->arg);
        }
        (*i)++;
        return take_value(s, idx, argv[*i], o);
    }
    return 0;
}

static int parse_argv(parse_state *s, int argc, const char *const argv[], int first, proxy_opts *o,
                      char *err, size_t errlen)
{
    bool flags_done = false;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        int rc = 0;
        if (!flags_done && strcmp(a, "--") == 0) {
            flags_done = true;
        } else if (!flags_done && a[0] == '-' && a[1] == '-') {
            rc = parse_long(s, argc, argv, &i, o, err, errlen);
        } else if (!flags_done && a[0] == '-' && a[1] != '\0') {
            rc = parse_short(s, argc, argv, &i, o, err, errlen);
        } else {
            s->pos[s->npos++] = a;
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* ---- values ---- */

/* Set flag d from text `v`; `src` names where it came from for messages. */
static int set_value(proxy_opts *o, const flag_def *d, const char *v, const char *src, char *err,
                     size_t errlen)
{
    void *slot = (char *)o + d->offset;
    switch (d->type) {
    case FT_BOOL:
        if (pv_bool(v, (bool *)slot) != 0) {
            return fail(err, errlen, "%s \"%s\": not a boolean (true or false)", src, v);
        }
        return 0;
    case FT_STRING: {
        char **sp = slot;
        char *copy = v[0] == '\0' ? NULL : strdup(v);
        if (v[0] != '\0' && copy == NULL) {
            return fail(err, errlen, "out of memory");
        }
        free(*sp);
        *sp = copy;
        return 0;
    }
    case FT_PORT:
        if (pv_port(v, (int *)slot) != 0) {
            return fail(err, errlen, "%s \"%s\": not a port number (0..65535)", src, v);
        }
        return 0;
    case FT_UINT64:
        if (pv_uint64(v, (uint64_t *)slot) != 0) {
            return fail(err, errlen, "%s \"%s\": not a non-negative integer", src, v);
        }
        return 0;
    case FT_DURATION:
        if (pv_duration_ms(v, (uint64_t *)slot) != 0) {
            return fail(err, errlen,
                        "%s \"%s\": not a duration such as 0, 500ms, 30s, 1m30s or 2h (at most "
                        "168h)",
                        src, v);
        }
        return 0;
    default:
        return 0;
    }
}

/* The value of flag idx by precedence (argv, env, file) into *out, with its source. */
static const char *pick(parse_state *s, int idx, char *src, size_t srclen, bool *from_file)
{
    const flag_def *d = &s->t[idx];
    *from_file = false;
    if (s->argval[idx] != NULL) {
        snprintf(src, srclen, "--%s", d->name);
        return s->argval[idx];
    }
    char env_name[96];
    flags_env_name(d->name, env_name, sizeof(env_name));
    const char *v = env_get(s, env_name);
    if (v != NULL) {
        snprintf(src, srclen, "environment variable %s", env_name);
        return v;
    }
    const cf_entry *e = cf_get(&s->file, d->name);
    if (e != NULL) {
        *from_file = true;
        s->file_used[e - s->file.v] = true;
        if (e->line > 0) {
            snprintf(src, srclen, "config file %s line %d: %s", s->file_path, e->line, d->name);
        } else {
            snprintf(src, srclen, "config file %s: %s", s->file_path, d->name);
        }
        return e->value;
    }
    return NULL;
}

static int apply_flags(parse_state *s, proxy_opts *o, char *err, size_t errlen)
{
    for (size_t i = 0; i < s->n; i++) {
        const flag_def *d = &s->t[i];
        if (d->type == FT_HELP || d->type == FT_VERSION) {
            continue;
        }
        if (d->def != NULL && set_value(o, d, d->def, "default", err, errlen) != 0) {
            return -1;
        }
        char src[256];
        bool from_file;
        const char *v = pick(s, (int)i, src, sizeof(src), &from_file);
        if (v == NULL) {
            continue;
        }
        if (set_value(o, d, v, src, err, errlen) != 0) {
            return -1;
        }
        o->given[i] = true;
    }
    return 0;
}

/* Config file keys that are neither flags nor instance names are mistakes. */
static int check_file_keys(parse_state *s, char *err, size_t errlen)
{
    for (size_t i = 0; i < s->file.n; i++) {
        const char *k = s->file.v[i].key;
        if (s->file_used[i] || strncmp(k, INSTANCE_KEY, strlen(INSTANCE_KEY)) == 0) {
            continue;
        }
        const char *why = flags_unsupported(k, 0);
        if (why != NULL) {
            return fail(err, errlen,
                        "config file %s: \"%s\" is an Auth Proxy flag that csql-proxy does not "
                        "support: %s",
                        s->file_path, k, why);
        }
        if (flags_find(s->t, s->n, k) < 0 || strcmp(k, "config-file") == 0) {
            return fail(err, errlen, "config file %s: unknown key \"%s\"", s->file_path, k);
        }
    }
    return 0;
}

/* ---- instances ---- */

static int add_spec(const char ***specs, size_t *n, const char *v)
{
    const char **grown = realloc(*specs, (*n + 1) * sizeof(**specs));
    if (grown == NULL) {
        return -1;
    }
    grown[(*n)++] = v;
    *specs = grown;
    return 0;
}

/* Instances from argv, else the environment, else the config file (the Auth Proxy's order). */
static int gather_specs(parse_state *s, const char ***specs, size_t *n, char *err, size_t errlen)
{
    *n = 0;
    if (s->npos > 0) {
        for (size_t i = 0; i < s->npos; i++) {
            if (add_spec(specs, n, s->pos[i]) != 0) {
                return fail(err, errlen, "out of memory");
            }
        }
        return 0;
    }
    char name[96];
    const char *v = env_get(s, INSTANCE_ENV);
    if (v == NULL) {
        v = env_get(s, INSTANCE_ENV "_0");
    }
    for (int i = 1; v != NULL && *n < MAX_INSTANCES; i++) {
        if (add_spec(specs, n, v) != 0) {
            return fail(err, errlen, "out of memory");
        }
        snprintf(name, sizeof(name), INSTANCE_ENV "_%d", i);
        v = env_get(s, name);
    }
    if (*n > 0) {
        return 0;
    }
    const cf_entry *e = cf_get(&s->file, INSTANCE_KEY);
    if (e == NULL) {
        e = cf_get(&s->file, INSTANCE_KEY "-0");
    }
    for (int i = 1; e != NULL && *n < MAX_INSTANCES; i++) {
        if (add_spec(specs, n, e->value) != 0) {
            return fail(err, errlen, "out of memory");
        }
        snprintf(name, sizeof(name), INSTANCE_KEY "-%d", i);
        e = cf_get(&s->file, name);
    }
    return 0;
}

static int parse_instances(parse_state *s, proxy_opts *o, char *err, size_t errlen)
{
    const char **specs = NULL;
    size_t n = 0;
    int rc = gather_specs(s, &specs, &n, err, errlen);
    if (rc == 0 && n == 0) {
        rc = fail(err, errlen,
                  "no instance given: csql-proxy [flags] PROJECT:REGION:INSTANCE... (or "
                  "CSQL_PROXY_INSTANCE_CONNECTION_NAME)");
    }
    if (rc == 0 && (o->instances = calloc(n, sizeof(*o->instances))) == NULL) {
        rc = fail(err, errlen, "out of memory");
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = proxy_instance_parse(specs[i], o, &o->instances[i], err, errlen);
        if (rc == 0) {
            o->n_instances++;
        }
    }
    free(specs);
    return rc;
}

/* ---- conflicts between flags (whatever their source) ---- */

static bool given(const parse_state *s, const proxy_opts *o, const char *name)
{
    int idx = flags_find(s->t, s->n, name);
    return idx >= 0 && o->given[idx];
}

static int check_conflicts(const parse_state *s, const proxy_opts *o, char *err, size_t errlen)
{
    if (o->address == NULL) {
        return fail(err, errlen, "--address is empty");
    }
    if (!pv_is_ip(o->address)) {
        return fail(err, errlen, "--address \"%s\": not an IPv4 or IPv6 address", o->address);
    }
    if (o->unix_socket != NULL && given(s, o, "address")) {
        return fail(err, errlen, "--unix-socket and --address cannot be used together");
    }
    if (o->unix_socket != NULL && given(s, o, "port")) {
        return fail(err, errlen, "--unix-socket and --port cannot be used together");
    }
    if (o->private_ip && o->psc) {
        return fail(err, errlen, "--private-ip and --psc cannot be used together");
    }
    if (o->private_ip && o->auto_ip) {
        return fail(err, errlen, "--private-ip and --auto-ip cannot be used together");
    }
    if (o->token != NULL && o->credentials_file != NULL) {
        return fail(err, errlen, "--token and --credentials-file cannot be used together");
    }
    if (o->token != NULL && o->json_credentials != NULL) {
        return fail(err, errlen, "--token and --json-credentials cannot be used together");
    }
    if (o->credentials_file != NULL && o->json_credentials != NULL) {
        return fail(err, errlen,
                    "--credentials-file and --json-credentials cannot be used together");
    }
    if (o->login_token != NULL && (o->token == NULL || !o->auto_iam_authn)) {
        return fail(err, errlen, "--login-token needs both --token and --auto-iam-authn");
    }
    if (o->token != NULL && o->auto_iam_authn && o->login_token == NULL) {
        return fail(err, errlen, "--auto-iam-authn with --token also needs --login-token");
    }
    if (o->sqladmin_api_endpoint != NULL && o->universe_domain != NULL) {
        return fail(err, errlen,
                    "--sqladmin-api-endpoint and --universe-domain cannot be used together");
    }
    if (o->iam_credentials_endpoint != NULL && o->impersonate_service_account == NULL) {
        return fail(err, errlen, "--iam-credentials-endpoint needs --impersonate-service-account");
    }
    if (o->iam_credentials_endpoint != NULL && o->universe_domain != NULL) {
        return fail(err, errlen,
                    "--iam-credentials-endpoint and --universe-domain cannot be used together");
    }
    if (o->quiet && o->debug_logs) {
        return fail(err, errlen, "--quiet and --debug-logs cannot be used together");
    }
    if (o->prometheus_namespace != NULL && !o->prometheus) {
        return fail(err, errlen, "--prometheus-namespace needs --prometheus");
    }
    if (o->http_address == NULL) {
        return fail(err, errlen, "--http-address is empty");
    }
    bool http_on = o->health_check || o->prometheus;
    bool http_local = strcmp(o->http_address, "localhost") == 0 ||
                      strcmp(o->http_address, "127.0.0.1") == 0;
    if (http_on && o->quitquitquit && http_local && o->http_port == o->admin_port &&
        o->http_port != 0) {
        return fail(err, errlen, "--http-port and --admin-port are both %d on localhost",
                    o->http_port);
    }
    return 0;
}

/* ---- entry ---- */

static int load_config_file(parse_state *s, proxy_opts *o, char *err, size_t errlen)
{
    int idx = flags_find(s->t, s->n, "config-file");
    if (idx < 0) {
        return 0;
    }
    const char *path = s->argval[idx];
    if (path == NULL) {
        path = env_get(s, "CSQL_PROXY_CONFIG_FILE");
    }
    if (path == NULL || path[0] == '\0') {
        return 0;
    }
    if (cf_load(path, &s->file, err, errlen) != 0) {
        return -1;
    }
    s->file_path = path;
    if (s->file.n > 0 && (s->file_used = calloc(s->file.n, sizeof(bool))) == NULL) {
        return fail(err, errlen, "out of memory");
    }
    (void)o;
    return 0;
}

int proxy_args_parse(int argc, const char *const argv[], proxy_env_fn env, void *env_userdata,
                     proxy_opts *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof(*o));
    parse_state s = {.env = env != NULL ? env : proxy_getenv, .env_ud = env_userdata};
    int first = 1;
    o->cmd = PROXY_CMD_RUN;
    if (argc > 1 && strcmp(argv[1], "wait") == 0) {
        o->cmd = PROXY_CMD_WAIT;
        first = 2;
    } else if (argc > 1 && strcmp(argv[1], "shutdown") == 0) {
        o->cmd = PROXY_CMD_SHUTDOWN;
        first = 2;
    }
    proxy_cmd which = o->cmd;
    s.t = flags_table(which, &s.n);
    s.argval = calloc(s.n, sizeof(*s.argval));
    s.pos = calloc((size_t)(argc > 0 ? argc : 1), sizeof(*s.pos));
    o->given = calloc(s.n, sizeof(*o->given));
    int rc = -1;
    if (s.argval == NULL || s.pos == NULL || o->given == NULL) {
        fail(err, errlen, "out of memory");
        goto out;
    }
    if (parse_argv(&s, argc, argv, first, o, err, errlen) != 0) {
        goto out;
    }
    if (o->cmd == PROXY_CMD_HELP || o->cmd == PROXY_CMD_VERSION) {
        o->help_for = which;
        rc = 0;
        goto out;
    }
    if (which != PROXY_CMD_RUN && s.npos > 0) {
        fail(err, errlen, "csql-proxy %s takes no arguments (got \"%s\")",
             which == PROXY_CMD_WAIT ? "wait" : "shutdown", s.pos[0]);
        goto out;
    }
    if (load_config_file(&s, o, err, errlen) != 0 || apply_flags(&s, o, err, errlen) != 0 ||
        check_file_keys(&s, err, errlen) != 0) {
        goto out;
    }
    if (which != PROXY_CMD_RUN) {
        rc = 0;
        goto out;
    }
    if (check_conflicts(&s, o, err, errlen) != 0 || parse_instances(&s, o, err, errlen) != 0) {
        goto out;
    }
    rc = 0;
out:
    free(s.argval);
    free(s.pos);
    free(s.file_used);
    cf_entries_free(&s.file);
    return rc;
}

/* ---- scrubbing secrets out of argv ---- */

static void blank(char *p)
{
    memset(p, 'x', strlen(p));
}

void proxy_args_scrub(int argc, char *argv[])
{
    size_t n;
    const flag_def *t = flags_table(PROXY_CMD_RUN, &n);
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            return;
        }
        if (a[0] != '-' || a[1] == '\0') {
            continue;
        }
        if (a[1] == '-') {
            char *eq = strchr(a, '=');
            size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            for (size_t k = 0; k < n; k++) {
                if (strlen(t[k].name) != nl || strncmp(t[k].name, a + 2, nl) != 0) {
                    continue;
                }
                if (t[k].flags & FF_SECRET) {
                    if (eq != NULL) {
                        blank(eq + 1);
                    } else if (i + 1 < argc) {
                        blank(argv[i + 1]);
                    }
                }
                if (eq == NULL && t[k].type != FT_BOOL && t[k].type != FT_HELP &&
                    t[k].type != FT_VERSION) {
                    i++; /* skip the value */
                }
                break;
            }
            continue;
        }
        for (size_t j = 1; a[j] != '\0'; j++) {
            int idx = flags_find_short(t, n, a[j]);
            if (idx < 0 || t[idx].type == FT_BOOL || t[idx].type == FT_HELP ||
                t[idx].type == FT_VERSION) {
                continue;
            }
            char *value = a[j + 1] != '\0' ? a + j + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
            if ((t[idx].flags & FF_SECRET) && value != NULL) {
                blank(value);
            }
            if (a[j + 1] == '\0') {
                i++;
            }
            break;
        }
    }
}
