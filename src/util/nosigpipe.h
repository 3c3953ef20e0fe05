/*
 * Internal: keep SIGPIPE away from the application while OpenSSL writes to a
 * socket whose peer has gone (OpenSSL's socket BIO uses write(), not
 * send(MSG_NOSIGNAL)). The signal is blocked on the calling thread for the
 * duration and a SIGPIPE raised meanwhile is consumed; thread-safe.
 */
#ifndef CSQL_SRC_UTIL_NOSIGPIPE_H
#define CSQL_SRC_UTIL_NOSIGPIPE_H

#include <signal.h>
#include <stdbool.h>

typedef struct csql__sigpipe_guard {
    sigset_t old_mask;
    bool was_pending; /* a SIGPIPE was pending before: leave it for the application */
} csql__sigpipe_guard;

void csql__sigpipe_block(csql__sigpipe_guard *g);
void csql__sigpipe_restore(csql__sigpipe_guard *g);

#endif
