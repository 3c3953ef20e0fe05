/* csql-proxy: the libcsql config (credentials, API endpoint, refresh, logs) from the options. */
#ifndef CSQL_PROXY_DIALER_CONFIG_H
#define CSQL_PROXY_DIALER_CONFIG_H

#include <stddef.h>

#include "csql/config.h"
#include "opts.h"

/* The User-Agent suffix: "csql-proxy/<version>[ <--user-agent>]". */
void proxy_user_agent(const proxy_opts *o, char *buf, size_t len);

/* Build *out (free with csql_config_free). -1 with a message naming the option on failure. */
int proxy_dialer_config(const proxy_opts *o, csql_config **out, char *err, size_t errlen);

#endif
