/*
 * bench_fwd: what csql's local-endpoint engine costs, in isolation. A TLS 1.3
 * connection over a socketpair (an in-process server) is forwarded to a local
 * socketpair by the event loop; 256 MiB go each way. Reports throughput and
 * the loop thread's CPU time per MiB (from /proc/self/task/<tid>/schedstat),
 * for each buffer size, and the heap of idle forwarded connections.
 *
 *   bench_fwd [MiB]
 */
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "fwd.h"
#include "fwd_testlib.h"
#include "loop.h"

static int g_key;

/* CPU nanoseconds used so far by the thread named csql-loop. */
static long long loop_cpu_ns(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    long long ns = 0;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char path[128], name[64] = "";
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(name, sizeof(name), f) == NULL) {
                name[0] = '\0';
            }
            fclose(f);
        }
        if (strncmp(name, "csql-loop", 9) != 0) {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat", e->d_name);
        f = fopen(path, "r");
        if (f) {
            long long v = 0;
            if (fscanf(f, "%lld", &v) == 1) {
                ns += v;
            }
            fclose(f);
        }
    }
    if (d) {
        closedir(d);
    }
    return ns;
}

typedef struct start_call {
    csql__loop *loop;
    int local;
    csql__fwd_remote remote;
    csql__fwd_opts opts;
    csql__fwd *f;
    int rc;
} start_call;

static void start_on_loop(void *arg)
{
    start_call *c = arg;
    c->rc = csql__fwd_start(c->loop, c->local, &c->remote, &c->opts, &c->f);
}

typedef struct pump_arg {
    SSL *ssl;
    int fd;
    size_t total;
    int up; /* 1: read from the TLS server side; 0: write to it */
} pump_arg;

static void *server_side(void *arg)
{
    pump_arg *p = arg;
    static _Thread_local unsigned char buf[65536];
    memset(buf, 'x', sizeof(buf));
    size_t done = 0;
    while (done < p->total) {
        size_t n = 0;
        size_t want = p->total - done < sizeof(buf) ? p->total - done : sizeof(buf);
        int ok = p->up ? SSL_read_ex(p->ssl, buf, want, &n) : SSL_write_ex(p->ssl, buf, want, &n);
        if (ok != 1) {
            break;
        }
        done += n;
    }
    return NULL;
}

static void run(csql__loop *loop, size_t bufsize, size_t mib)
{
    int a[2];
    int cfd, sfd;
    SSL *cssl, *sssl;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a) != 0 ||
        tl_tls_pair(&cfd, &cssl, &sfd, &sssl) != 0) {
        fprintf(stderr, "setup failed\n");
        exit(1);
    }
    start_call c = {.loop = loop, .local = a[1], .remote = {.fd = cfd, .ssl = cssl}};
    c.opts.buffer_size = bufsize;
    csql__loop_call(loop, start_on_loop, &c);
    size_t total = mib << 20;
    static unsigned char buf[1 << 20];
    for (int up = 0; up <= 1; up++) {
        pump_arg pa = {.ssl = sssl, .fd = sfd, .total = total, .up = up};
        pthread_t t;
        long long cpu0 = loop_cpu_ns();
        int64_t t0 = tl_now_ms();
        pthread_create(&t, NULL, server_side, &pa);
        size_t done = 0;
        while (done < total) {
            size_t want = total - done < sizeof(buf) ? total - done : sizeof(buf);
            ssize_t n = up ? write(a[0], buf, want) : read(a[0], buf, want);
            if (n <= 0) {
                break;
            }
            done += (size_t)n;
        }
        pthread_join(t, NULL);
        int64_t ms = tl_now_ms() - t0;
        long long cpu = loop_cpu_ns() - cpu0;
        printf("buffer %3zu KiB  %-4s %4zu MiB: %7.1f MiB/s, loop thread %.2f ms CPU per MiB "
               "(%.0f MiB/s per core)\n",
               bufsize >> 10, up ? "up" : "down", mib, ms ? (double)mib * 1000.0 / (double)ms : 0.0,
               (double)cpu / 1e6 / (double)mib, cpu ? (double)mib * 1e9 / (double)cpu : 0.0);
    }
    close(a[0]);
    SSL_shutdown(sssl);
    SSL_free(sssl);
    close(sfd);
    while (csql__fwd_live_count() != 0) {
        usleep(1000);
    }
}

static size_t heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void idle_memory(csql__loop *loop)
{
    enum { N = 500 };
    static int app[N], srv[N];
    static SSL *sssl[N];
    size_t h0 = heap_bytes();
    size_t ssl_only = 0;
    for (int i = 0; i < N; i++) {
        int a[2], cfd;
        SSL *cssl;
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a);
        size_t before = heap_bytes();
        tl_tls_pair(&cfd, &cssl, &srv[i], &sssl[i]);
        /* Let the client take in the server's session tickets, as a real dial does (MDX
         * aside), and drop idle TLS buffers, so that what follows is the engine's own. */
        SSL_set_mode(cssl, SSL_MODE_RELEASE_BUFFERS);
        SSL_set_mode(sssl[i], SSL_MODE_RELEASE_BUFFERS);
        int fl = fcntl(cfd, F_GETFL);
        fcntl(cfd, F_SETFL, fl | O_NONBLOCK);
        unsigned char b;
        size_t got;
        SSL_read_ex(cssl, &b, 1, &got);
        ssl_only += heap_bytes() - before;
        app[i] = a[0];
        start_call c = {.loop = loop, .local = a[1], .remote = {.fd = cfd, .ssl = cssl}};
        csql__loop_call(loop, start_on_loop, &c);
    }
    usleep(200000);
    size_t h1 = heap_bytes();
    printf("idle forwarded connection: %.1f KiB heap each, of which both TLS ends of this test "
           "%.1f KiB; the engine (pair, endpoint-free) %.2f KiB\n",
           (double)(h1 - h0) / 1024.0 / N, (double)ssl_only / 1024.0 / N,
           (double)((h1 - h0) - ssl_only) / 1024.0 / N);
    for (int i = 0; i < N; i++) {
        close(app[i]);
        SSL_free(sssl[i]);
        close(srv[i]);
    }
    while (csql__fwd_live_count() != 0) {
        usleep(1000);
    }
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    csql__loop *loop;
    if (csql__loop_acquire(&g_key, &loop) != 0) {
        return 1;
    }
    const size_t sizes[] = {16384, 32768, 65536};
    for (size_t i = 0; i < 3; i++) {
        run(loop, sizes[i], mib);
    }
    idle_memory(loop);
    csql__loop_release(loop);
    tl_tls_free_server_ctx();
    return 0;
}
