/* Internal: the layout of csql_dialer, shared by dialer.c and dialer_info.c. */
#ifndef CSQL_SRC_DIALER_INTERNAL_H
#define CSQL_SRC_DIALER_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache.h"
#include "config_internal.h"
#include "connect_info.h"
#include "credentials/credentials.h"
#include "csql/dialer.h"
#include "error.h"
#include "instance_name.h"
#include "keys.h"
#include "log.h"
#include "refresh.h"

struct csql_dialer {
    csql_config *cfg;        /* resolved private copy; read-only after creation */
    csql__logger log;
    csql__creds *creds;
    csql__keypair *keys;
    char *user_agent;        /* "csql/<version>[ <suffix>]" */
    csql__refresh_ctx rctx;
    csql__cache *cache;
    atomic_bool closed;
};

/* One call's settings: the dial options over the dialer's defaults. */
typedef struct csql__dial_settings {
    csql_ip_type ip_type;    /* never CSQL_IP_DEFAULT */
    bool iam;
    uint32_t timeout_ms;
} csql__dial_settings;

/* Validate opts (NULL: the dialer's defaults); CSQL_ERR_INVALID_ARGUMENT names fn and the field. */
int csql__dialer_resolve_opts(const csql_dialer *d, const csql_dial_options *opts,
                              const char *fn, csql__dial_settings *out);
/* CSQL_ERR_CLOSED once csql_dialer_close has been called. */
int csql__dialer_check_open(const csql_dialer *d, const char *fn, const char *instance);
/*
 * The common start of every per-instance call (fn names it in errors):
 * resolve opts, refuse a closed dialer, parse the instance name.
 */
int csql__dialer_begin(const csql_dialer *d, const char *instance, const csql_dial_options *opts,
                       const char *fn, csql__dial_settings *ds, csql__instance_name *name);
/* The address of type t (AUTO: public, else private), or NULL. */
const char *csql__address_of(const csql__connect_info *ci, csql_ip_type t);
/* The address to dial in cs for type t, or CSQL_ERR_NO_IP_TYPE naming what the instance has. */
int csql__dialer_pick_address(const csql__certset *cs, csql_ip_type t, const char *instance,
                              const char **host);

#endif
