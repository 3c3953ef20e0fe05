/* csql-proxy: a drop-in, faster replacement for the Cloud SQL Auth Proxy (see docs/csql-proxy.1.md). */
#include <stdio.h>
#include <string.h>

#include "args.h"
#include "csql/version.h"
#include "flags.h"
#include "listeners.h"
#include "log.h"
#include "run.h"
#include "subcommands.h"
#include "version.h"

static void print_version(void)
{
    proxy_engine_features f = proxy_engine_features_get();
    printf("csql-proxy version %s (libcsql %s)\n", CSQL_PROXY_VERSION, csql_version());
    printf("engine hooks: connection-events=%s listen-fd=%s refresh-events=%s\n",
           f.connection_events ? "yes" : "no", f.listen_fd ? "yes" : "no",
           f.refresh_events ? "yes" : "no");
}

int main(int argc, char *argv[])
{
    proxy_opts o;
    char err[1024];
    if (proxy_args_parse(argc, (const char *const *)argv, proxy_getenv, NULL, &o, err, sizeof(err)) != 0) {
        fprintf(stderr, "csql-proxy: %s\n", err);
        proxy_opts_free(&o);
        return 1;
    }
    /* The values are copied: take tokens out of /proc/PID/cmdline. */
    proxy_args_scrub(argc, argv);
    int rc;
    switch (o.cmd) {
    case PROXY_CMD_HELP:
        flags_print_help(stdout, o.help_for);
        rc = 0;
        break;
    case PROXY_CMD_VERSION:
        print_version();
        rc = 0;
        break;
    case PROXY_CMD_WAIT:
        rc = proxy_cmd_wait(&o);
        break;
    case PROXY_CMD_SHUTDOWN:
        rc = proxy_cmd_shutdown(&o);
        break;
    default:
        plog_init(o.structured_logs, o.quiet, o.debug_logs);
        rc = proxy_run(&o);
        break;
    }
    proxy_opts_free(&o);
    return rc;
}
