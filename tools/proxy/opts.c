/* csql-proxy: freeing options (opts.h) and secrets (secret.h). */
#include "opts.h"

#include <stdlib.h>
#include <string.h>

#include "secret.h"

void secret_free(char *s)
{
    if (s != NULL) {
        secret_wipe(s, strlen(s));
        free(s);
    }
}

void proxy_instance_clear(proxy_instance *inst)
{
    free(inst->spec);
    free(inst->name);
    free(inst->address);
    free(inst->unix_socket);
    free(inst->unix_socket_path);
    memset(inst, 0, sizeof(*inst));
    inst->port = -1;
    inst->iam_authn = inst->private_ip = inst->psc = TRI_UNSET;
}

void proxy_opts_free(proxy_opts *o)
{
    char **strings[] = {
        &o->address,          &o->unix_socket,     &o->http_address,
        &o->prometheus_namespace, &o->credentials_file, &o->impersonate_service_account,
        &o->iam_credentials_endpoint,
        &o->quota_project,    &o->sqladmin_api_endpoint, &o->universe_domain,
        &o->user_agent,       &o->config_file,
    };
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        free(*strings[i]);
    }
    secret_free(o->token);
    secret_free(o->login_token);
    secret_free(o->json_credentials);
    for (size_t i = 0; i < o->n_instances; i++) {
        proxy_instance_clear(&o->instances[i]);
    }
    free(o->instances);
    free(o->given);
    memset(o, 0, sizeof(*o));
}
