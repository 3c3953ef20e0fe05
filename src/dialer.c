/*
 * csql_dialer: the connector (include/csql/dialer.h). Owns a resolved copy of
 * the config, the credentials, the RSA key and the certificate cache; a dial
 * is cache get -> address for the IP type -> TCP + TLS (dial_socket) -> conn.
 * Thread-safe: the dialer's own fields are read-only after creation, the
 * cache locks internally and no lock is held across network I/O.
 */
#include "dialer_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn_internal.h"
#include "csql/version.h"
#include "dial_socket.h"
#include "http.h"
#include "loop.h"
#include "util/clock.h"

#define MAX_TIMEOUT_MS 3600000u

/* The cache's refresh function: one refresh with the dialer's context. */
static int dialer_refresh(void *arg, const csql__instance_name *name, bool iam,
                          int64_t deadline_ms, const atomic_bool *cancel, csql__certset **out)
{
    const csql_dialer *d = arg;
    int64_t t0 = csql__mono_ms();
    int rc = csql__refresh_once_cancellable(&d->rctx, name, iam, deadline_ms, cancel, out);
    if (d->cfg->refresh_fn != NULL) {
        const csql_error *e = csql_error_last();
        csql_refresh_event ev = {
            .instance = name->full,
            .iam_authn = iam,
            .error = rc,
            .http_status = rc != 0 ? e->http_status : 0,
            .api_reason = rc != 0 ? e->api_reason : "",
            .message = rc != 0 ? e->message : "",
            .expires_at = (rc == 0 && *out != NULL) ? (*out)->expires_at : 0,
            .duration_ms = (uint64_t)(csql__mono_ms() - t0),
        };
        d->cfg->refresh_fn(&ev, d->cfg->refresh_userdata);
    }
    return rc;
}

static char *make_user_agent(const char *suffix)
{
    size_t n = strlen("csql/") + strlen(csql_version()) + 1 + (suffix ? strlen(suffix) + 1 : 0);
    char *ua = malloc(n);
    if (ua != NULL) {
        snprintf(ua, n, "csql/%s%s%s", csql_version(), suffix ? " " : "", suffix ? suffix : "");
    }
    return ua;
}

static void dialer_destroy(csql_dialer *d)
{
    if (d == NULL) {
        return;
    }
    csql__cache_free(d->cache); /* joins the refresh threads, which use everything below */
    csql__keypair_free(d->keys);
    csql__creds_free(d->creds);
    csql_config_free(d->cfg);
    free(d->user_agent);
    free(d);
}

int csql_dialer_new(csql_dialer **out, const csql_config *cfg)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (out == NULL || cfg == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_dialer_new: %s is NULL",
                           out == NULL ? "out" : "cfg");
    }
    csql_dialer *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return csql__error(CSQL_ERR_NOMEM, "out of memory creating a dialer");
    }
    atomic_init(&d->closed, false);
    int rc = csql__http_global_init();
    if (rc != 0) {
        goto fail;
    }
    rc = csql__config_copy(cfg, &d->cfg);
    if (rc != 0) {
        goto fail;
    }
    rc = csql__config_resolve(d->cfg);
    if (rc != 0) {
        goto fail;
    }
    d->log.fn = d->cfg->log_fn;
    d->log.userdata = d->cfg->log_userdata;
    d->log.max_level = d->cfg->log_level;
    rc = csql__creds_new(d->cfg, &d->log, &d->creds);
    if (rc != 0) {
        goto fail;
    }
    bool background = d->cfg->refresh_strategy == CSQL_REFRESH_BACKGROUND;
    /* Background: race one generator per CPU (2 at most) for a shorter, steadier cold start. */
    rc = csql__keypair_new(d->cfg->rsa_key_pem, d->cfg->rsa_key_pem_len,
                           background ? csql__keygen_threads() : 0, &d->keys);
    if (rc != 0) {
        goto fail;
    }
    d->user_agent = make_user_agent(d->cfg->user_agent);
    if (d->user_agent == NULL) {
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory creating a dialer");
        goto fail;
    }
    d->rctx.cfg = d->cfg;
    d->rctx.creds = d->creds;
    d->rctx.keys = d->keys;
    d->rctx.log = &d->log;
    d->rctx.user_agent = d->user_agent;

    csql__cache_opts co = {0};
    co.strategy = d->cfg->refresh_strategy;
    co.refresh = dialer_refresh;
    co.refresh_arg = d;
    co.refresh_timeout_ms = d->cfg->refresh_timeout_ms;
    co.log = &d->log;
    rc = csql__cache_new(&co, &d->cache);
    if (rc != 0) {
        goto fail;
    }
    csql__log(&d->log, CSQL_LOG_INFO, "dialer ready: %s, %s refresh, %s", d->user_agent,
              background ? "background" : "lazy", csql__creds_describe(d->creds));
    *out = d;
    return 0;
fail:
    dialer_destroy(d);
    return rc;
}

int csql_dialer_close(csql_dialer *d)
{
    if (d == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_dialer_close: dialer is NULL");
    }
    if (!atomic_exchange(&d->closed, true)) {
        csql__log(&d->log, CSQL_LOG_INFO, "dialer closing");
    }
    csql__cache_close(d->cache);
    return 0;
}

void csql_dialer_free(csql_dialer *d)
{
    if (d != NULL) {
        atomic_store(&d->closed, true);
        /* Local endpoints' forwarding (keyed by this dialer) ends first: it dials through us. */
        csql__loop_reap(d, true);
        dialer_destroy(d);
    }
}

/* ---- per-call options ---- */

int csql__dialer_resolve_opts(const csql_dialer *d, const csql_dial_options *opts,
                              const char *fn, csql__dial_settings *out)
{
    out->ip_type = d->cfg->ip_type == CSQL_IP_DEFAULT ? CSQL_IP_PUBLIC : d->cfg->ip_type;
    out->iam = d->cfg->iam_authn;
    out->timeout_ms = d->cfg->dial_timeout_ms;
    if (opts == NULL) {
        return 0;
    }
    if (opts->version != CSQL_DIAL_OPTIONS_VERSION) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "%s: csql_dial_options version %u is not supported (this library "
                           "knows version %d; initialise the struct with CSQL_DIAL_OPTIONS_INIT)",
                           fn, opts->version, CSQL_DIAL_OPTIONS_VERSION);
    }
    if ((int)opts->ip_type < CSQL_IP_DEFAULT || (int)opts->ip_type > CSQL_IP_AUTO) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "%s: ip_type %d is not a csql_ip_type", fn,
                           (int)opts->ip_type);
    }
    if (opts->iam_authn < -1 || opts->iam_authn > 1) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "%s: iam_authn %d is not -1 (dialer's), 0 or 1", fn, opts->iam_authn);
    }
    if (opts->timeout_ms > MAX_TIMEOUT_MS) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT,
                           "%s: timeout_ms %" PRIu32 " is over the maximum of %u ms", fn,
                           opts->timeout_ms, MAX_TIMEOUT_MS);
    }
    if (opts->ip_type != CSQL_IP_DEFAULT) {
        out->ip_type = opts->ip_type;
    }
    if (opts->iam_authn >= 0) {
        out->iam = opts->iam_authn == 1;
    }
    if (opts->timeout_ms != 0) {
        out->timeout_ms = opts->timeout_ms;
    }
    return 0;
}

int csql__dialer_check_open(const csql_dialer *d, const char *fn, const char *instance)
{
    if (atomic_load(&d->closed)) {
        return csql__error(CSQL_ERR_CLOSED, "%s(%s): the dialer is closed", fn,
                           instance ? instance : "");
    }
    return 0;
}

/* ---- addresses ---- */

static const char *ip_type_name(csql_ip_type t)
{
    switch (t) {
    case CSQL_IP_PUBLIC:
        return "public IP (PRIMARY)";
    case CSQL_IP_PRIVATE:
        return "private IP (PRIVATE)";
    case CSQL_IP_PSC:
        return "Private Service Connect DNS name (PSC)";
    case CSQL_IP_AUTO:
        return "public or private IP (AUTO)";
    default:
        return "address";
    }
}

const char *csql__address_of(const csql__connect_info *ci, csql_ip_type t)
{
    switch (t) {
    case CSQL_IP_DEFAULT:
    case CSQL_IP_PUBLIC:
        return ci->public_ip;
    case CSQL_IP_PRIVATE:
        return ci->private_ip;
    case CSQL_IP_PSC:
        return ci->psc_dns;
    case CSQL_IP_AUTO:
        return ci->public_ip ? ci->public_ip : ci->private_ip;
    default:
        return NULL;
    }
}

static int pick_address(const csql__certset *cs, csql_ip_type t, const char *instance,
                        const char **host)
{
    *host = csql__address_of(&cs->info, t);
    if (*host != NULL && (*host)[0] != '\0') {
        return 0;
    }
    char has[160] = "";
    const csql__connect_info *ci = &cs->info;
    snprintf(has, sizeof(has), "%s%s%s", ci->public_ip ? " PUBLIC" : "",
             ci->private_ip ? " PRIVATE" : "", ci->psc_dns ? " PSC" : "");
    return csql__error(CSQL_ERR_NO_IP_TYPE, "instance %s has no %s; it has:%s", instance,
                       ip_type_name(t), has[0] ? has : " no address at all");
}

/* ---- dial ---- */

static int connect_once(csql_dialer *d, const csql__instance_name *name,
                        const csql__dial_settings *ds, int64_t deadline, csql_conn **out)
{
    csql__cache_entry *e = NULL;
    csql__certset *cs = NULL;
    int fd = -1;
    SSL *ssl = NULL;
    int rc = csql__cache_get(d->cache, name, ds->iam, deadline, &e, &cs);
    if (rc != 0) {
        return rc;
    }
    const char *host = NULL;
    rc = pick_address(cs, ds->ip_type, name->full, &host);
    if (rc != 0) {
        goto out;
    }
    csql__dial_params p = {
        .host = host,
        .port = d->cfg->server_port,
        .keepalive_s = d->cfg->tcp_keepalive_s,
        .mdx = d->cfg->mdx,
        .user_agent = d->user_agent,
        .deadline_ms = deadline,
    };
    csql__log(&d->log, CSQL_LOG_DEBUG, "dialling %s at %s port %u", name->full, host,
              (unsigned)p.port);
    rc = csql__dial_socket(cs, name, &p, &fd, &ssl);
    if (rc == CSQL_ERR_CONNECT || rc == CSQL_ERR_TIMEOUT) {
        /* The address may have changed (failover, maintenance): look again, rate-limited. */
        csql__cache_force_refresh(e);
        goto out;
    }
    if (rc == CSQL_ERR_TLS_HANDSHAKE || rc == CSQL_ERR_TLS_VERIFY) {
        csql__cache_drop(e, cs);
        goto out;
    }
    if (rc != 0) {
        goto out;
    }
    csql__cache_hook *hook = csql__cache_hook_new(e, cs);
    if (hook == NULL) {
        SSL_free(ssl);
        close(fd);
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory dialling %s", name->full);
        goto out;
    }
    /* The conn owns fd, ssl and hook from here, also when it fails. */
    rc = csql__conn_new(fd, ssl, name->full, csql__cache_hook_fire, csql__cache_hook_release,
                        hook, out);
out:
    csql__certset_unref(cs);
    csql__cache_entry_unref(e);
    return rc;
}

int csql__dialer_begin(const csql_dialer *d, const char *instance, const csql_dial_options *opts,
                       const char *fn, csql__dial_settings *ds, csql__instance_name *name)
{
    int rc = csql__dialer_resolve_opts(d, opts, fn, ds);
    if (rc != 0) {
        return rc;
    }
    rc = csql__dialer_check_open(d, fn, instance);
    if (rc != 0) {
        return rc;
    }
    return csql__instance_name_parse(instance, name);
}

int csql_dial(csql_dialer *d, const char *instance, const csql_dial_options *opts,
              csql_conn **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (d == NULL || instance == NULL || out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_dial: %s is NULL",
                           d == NULL ? "dialer" : instance == NULL ? "instance" : "out");
    }
    csql__dial_settings ds;
    csql__instance_name name;
    int rc = csql__dialer_begin(d, instance, opts, "csql_dial", &ds, &name);
    if (rc != 0) {
        return rc;
    }
    int64_t deadline = csql__mono_ms() + ds.timeout_ms;
    return connect_once(d, &name, &ds, deadline, out);
}

int csql_dialer_warmup(csql_dialer *d, const char *instance, const csql_dial_options *opts,
                       int wait)
{
    if (d == NULL || instance == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_dialer_warmup: %s is NULL",
                           d == NULL ? "dialer" : "instance");
    }
    csql__dial_settings ds;
    csql__instance_name name;
    int rc = csql__dialer_begin(d, instance, opts, "csql_dialer_warmup", &ds, &name);
    if (rc != 0) {
        return rc;
    }
    uint32_t ms = opts != NULL && opts->timeout_ms != 0 ? opts->timeout_ms
                                                        : d->cfg->refresh_timeout_ms;
    return csql__cache_warmup(d->cache, &name, ds.iam, wait, csql__mono_ms() + ms);
}

/* ---- for the non-blocking dial (dial_async.c) ---- */

int csql__dialer_pick_address(const csql__certset *cs, csql_ip_type t, const char *instance,
                              const char **host)
{
    return pick_address(cs, t, instance, host);
}
