/* csql-proxy wait / shutdown (subcommands.h). */
#include "subcommands.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "http_client.h"

#define POLL_INTERVAL_MS 1000
#define REQUEST_TIMEOUT_MS 5000

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int proxy_cmd_wait(const proxy_opts *o)
{
    int64_t deadline = now_ms() + (int64_t)o->wait_max_ms;
    char last[256] = "no answer yet";
    for (;;) {
        int64_t left = deadline - now_ms();
        int timeout = left < REQUEST_TIMEOUT_MS ? (int)(left > 0 ? left : 1) : REQUEST_TIMEOUT_MS;
        int status = proxy_http_request(o->http_address, o->http_port, "GET", "/startup", timeout,
                                        last, sizeof(last));
        if (status == 200) {
            return 0;
        }
        if (status > 0) {
            snprintf(last, sizeof(last), "/startup answered %d", status);
        }
        left = deadline - now_ms();
        if (left <= 0) {
            break;
        }
        sleep_ms(left < POLL_INTERVAL_MS ? left : POLL_INTERVAL_MS);
    }
    fprintf(stderr, "csql-proxy wait: the proxy at %s:%d did not report started within %" PRIu64
                    " ms (%s)\n",
            o->http_address, o->http_port, o->wait_max_ms, last);
    return 1;
}

int proxy_cmd_shutdown(const proxy_opts *o)
{
    char err[256];
    int status = proxy_http_request("localhost", o->admin_port, "POST", "/quitquitquit",
                                    REQUEST_TIMEOUT_MS, err, sizeof(err));
    if (status == 200) {
        return 0;
    }
    if (status > 0) {
        snprintf(err, sizeof(err), "/quitquitquit answered %d (is --quitquitquit set?)", status);
    }
    fprintf(stderr, "csql-proxy shutdown: %s\n", err);
    return 1;
}
