/* Blocking SIGPIPE around socket writes (the approach libpq takes). */
#include "util/nosigpipe.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

static void sigpipe_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGPIPE);
}

void csql__sigpipe_block(csql__sigpipe_guard *g)
{
    int saved_errno = errno;
    sigset_t set;
    sigpipe_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, &g->old_mask);
    sigset_t pending;
    sigemptyset(&pending);
    g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    errno = saved_errno;
}

void csql__sigpipe_restore(csql__sigpipe_guard *g)
{
    int saved_errno = errno; /* callers read errno of the I/O call after this */
    if (!g->was_pending) {
        sigset_t pending;
        sigemptyset(&pending);
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
            sigset_t set;
            sigpipe_set(&set);
            const struct timespec zero = {0, 0};
            /* Bounded: at most a few EINTRs before the pending signal is taken. */
            for (int i = 0; i < 8; i++) {
                if (sigtimedwait(&set, NULL, &zero) >= 0 || errno != EINTR) {
                    break;
                }
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old_mask, NULL);
    errno = saved_errno;
}
