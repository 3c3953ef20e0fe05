/*
 * systemd readiness notification (sd_notify protocol, written by hand): one
 * datagram such as "READY=1" to the unix socket named by $NOTIFY_SOCKET
 * ('@' at the start means the abstract namespace). Nothing when unset.
 */
#ifndef CSQL_PROXY_NOTIFY_H
#define CSQL_PROXY_NOTIFY_H

/* 0 when sent or when NOTIFY_SOCKET is unset; -1 on failure (errno set). */
int proxy_sd_notify(const char *state);

#endif
