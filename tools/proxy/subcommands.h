/* csql-proxy wait and csql-proxy shutdown: talk to a running proxy over HTTP. */
#ifndef CSQL_PROXY_SUBCOMMANDS_H
#define CSQL_PROXY_SUBCOMMANDS_H

#include "opts.h"

/* Poll http://--http-address:--http-port/startup every second until 200 (0) or --max (1). */
int proxy_cmd_wait(const proxy_opts *o);

/* POST http://localhost:--admin-port/quitquitquit: 0 when answered 200, else 1. */
int proxy_cmd_shutdown(const proxy_opts *o);

#endif
