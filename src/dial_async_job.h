/*
 * Internal: the two pieces of a non-blocking dial that can block a thread,
 * run on the dialer's event loop workers (loop.h) instead of the caller's
 * thread: resolving a PSC DNS name (getaddrinfo has no non-blocking form)
 * and a LAZY-strategy certificate refresh. Each job owns what it uses, so
 * the dial that started it may be cancelled at any time; the dial learns the
 * outcome through its eventfd (a dup of it is kept by the job).
 */
#ifndef CSQL_SRC_DIAL_ASYNC_JOB_H
#define CSQL_SRC_DIAL_ASYNC_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include <netdb.h>

#include "cache.h"

typedef struct csql__resolve_job csql__resolve_job;

/*
 * Resolve host:port on a worker of loop_key's event loop; when done, write
 * to notify_fd (an eventfd; duplicated, so the caller may close its own).
 * where names the destination in messages. On failure to start, a csql error.
 */
int csql__resolve_job_start(const void *loop_key, const char *host, uint16_t port,
                            const char *where, int notify_fd, csql__resolve_job **out);
/* true once the result is in. */
bool csql__resolve_job_finished(csql__resolve_job *j);
/*
 * After finished: 0 with *res (ownership passes), or the error, raised on
 * this thread (CSQL_ERR_DNS, CSQL_ERR_CLOSED if the loop stopped first).
 */
int csql__resolve_job_result(csql__resolve_job *j, struct addrinfo **res);
/* Drop the caller's interest (any time); the job frees itself when it is done too. */
void csql__resolve_job_release(csql__resolve_job *j);

/*
 * LAZY: run csql__cache_lazy_refresh(e, now + timeout_ms) on a worker of
 * loop_key's event loop. If it cannot be queued, the kick is abandoned
 * (csql__cache_lazy_abandon) and the error returned: the dial that kicked
 * fails with it rather than kick again.
 */
int csql__lazy_refresh_job_start(const void *loop_key, csql__cache_entry *e,
                                 uint32_t timeout_ms);

#endif
