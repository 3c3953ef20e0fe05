/*
 * Fake transports for the forwarding engine's unit tests: an echo server
 * thread over many sockets, a TLS 1.3 connection over a socketpair (with a
 * throwaway self-signed certificate), and bounded I/O helpers.
 */
#ifndef CSQL_TEST_FWD_TESTLIB_H
#define CSQL_TEST_FWD_TESTLIB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "fwd.h"

/* A thread echoing every byte it reads on each socket handed to it; on EOF it shuts its write side. */
typedef struct tl_echo tl_echo;
tl_echo *tl_echo_start(void);
/* Hand over fd (the echo server closes it when the peer finished and everything was echoed). */
void tl_echo_add(tl_echo *e, int fd);
/* Sockets the echo server still holds. */
int tl_echo_open(tl_echo *e);
void tl_echo_stop(tl_echo *e);
/* A fake dial for endpoint tests: a socketpair whose far end the echo server takes. */
int tl_echo_dial(tl_echo *e, csql__fwd_remote *out);

/* A connected TLS 1.3 pair over a socketpair; both fds blocking. 0 on success. */
int tl_tls_pair(int *cfd, SSL **cssl, int *sfd, SSL **sssl);
void tl_tls_free_server_ctx(void);

/* Read exactly n bytes (or to EOF) within timeout_ms; returns bytes read, -1 on error/timeout. */
ssize_t tl_read_n(int fd, void *buf, size_t n, int timeout_ms);
/* Read until EOF within timeout_ms; returns bytes read (up to cap), -1 on error/timeout, -2 on reset. */
ssize_t tl_read_to_eof(int fd, void *buf, size_t cap, int timeout_ms);
int tl_write_all(int fd, const void *buf, size_t n, int timeout_ms);
/* 0 if fd reaches EOF (or reset, when allow_reset) within timeout_ms, discarding data. */
int tl_wait_eof(int fd, int timeout_ms, int *was_reset);

/* A deterministic pseudo-random pattern and a 64-bit FNV-1a digest. */
void tl_fill(uint8_t *buf, size_t n, uint64_t seed);
uint64_t tl_fnv(uint64_t h, const void *buf, size_t n);
#define TL_FNV_INIT 1469598103934665603ULL

/* Clients of an endpoint: a connected socket, or -1 with errno set. */
int tl_connect_unix(const char *path);
int tl_connect_tcp(uint16_t port); /* 127.0.0.1 */

int64_t tl_now_ms(void);
/* Resident set size of this process in KiB (from /proc/self/status). */
long tl_rss_kib(void);

#endif
