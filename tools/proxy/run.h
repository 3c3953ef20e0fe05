/*
 * csql-proxy's life: HTTP servers, dialer, listeners, "ready" (log line,
 * /startup, sd_notify READY=1), then shutdown on SIGTERM, SIGINT or
 * /quitquitquit: --min-sigterm-delay of normal service (signals only), then
 * /readiness 503, listeners closed, the dialer closed, and up to
 * --max-sigterm-delay for open connections to finish.
 *
 * Exit codes: 0 after /quitquitquit (or SIGTERM with --exit-zero-on-sigterm),
 * 130 after SIGINT, 143 after SIGTERM, 1 on errors (also when connections are
 * still open when a non-zero --max-sigterm-delay runs out).
 */
#ifndef CSQL_PROXY_RUN_H
#define CSQL_PROXY_RUN_H

#include "opts.h"

#define PROXY_EXIT_OK 0
#define PROXY_EXIT_ERROR 1
#define PROXY_EXIT_SIGINT 130
#define PROXY_EXIT_SIGTERM 143

/* Run until shut down; returns the exit code. */
int proxy_run(const proxy_opts *o);

#endif
