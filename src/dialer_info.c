/* csql_dialer_instance_info and the csql_instance_info accessors. */
#include "dialer_internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/clock.h"

struct csql_instance_info {
    csql__connect_info ci;   /* a deep copy: the info outlives the certset it came from */
    csql_ip_type default_ip; /* the call's IP type, for CSQL_IP_DEFAULT */
    int64_t cert_expiry;
};

int csql_dialer_instance_info(csql_dialer *d, const char *instance, const csql_dial_options *opts,
                              csql_instance_info **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (d == NULL || instance == NULL || out == NULL) {
        return csql__error(CSQL_ERR_INVALID_ARGUMENT, "csql_dialer_instance_info: %s is NULL",
                           d == NULL ? "dialer" : instance == NULL ? "instance" : "out");
    }
    csql__dial_settings ds;
    csql__instance_name name;
    int rc = csql__dialer_begin(d, instance, opts, "csql_dialer_instance_info", &ds, &name);
    if (rc != 0) {
        return rc;
    }
    csql__cache_entry *e = NULL;
    csql__certset *cs = NULL;
    rc = csql__cache_get(d->cache, &name, ds.iam, csql__mono_ms() + ds.timeout_ms, &e, &cs);
    if (rc != 0) {
        return rc;
    }
    csql_instance_info *info = calloc(1, sizeof(*info));
    if (info == NULL || csql__connect_info_copy(&cs->info, &info->ci) != 0) {
        free(info);
        rc = csql__error(CSQL_ERR_NOMEM, "out of memory copying the information on %s",
                         name.full);
    } else {
        info->default_ip = ds.ip_type;
        info->cert_expiry = cs->expires_at;
        *out = info;
    }
    csql__certset_unref(cs);
    csql__cache_entry_unref(e);
    return rc;
}

const char *csql_instance_info_database_version(const csql_instance_info *info)
{
    return info != NULL ? info->ci.database_version : NULL;
}

const char *csql_instance_info_address(const csql_instance_info *info, csql_ip_type type)
{
    if (info == NULL) {
        return NULL;
    }
    return csql__address_of(&info->ci, type == CSQL_IP_DEFAULT ? info->default_ip : type);
}

const char *csql_instance_info_region(const csql_instance_info *info)
{
    return info != NULL ? info->ci.region : NULL;
}

int64_t csql_instance_info_cert_expiry(const csql_instance_info *info)
{
    return info != NULL ? info->cert_expiry : 0;
}

void csql_instance_info_free(csql_instance_info *info)
{
    if (info != NULL) {
        csql__connect_info_dispose(&info->ci);
        free(info);
    }
}
