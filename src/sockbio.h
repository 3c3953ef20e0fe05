/*
 * Internal: an OpenSSL BIO over a connected socket. Like BIO_s_socket, but
 * writes with send(MSG_NOSIGNAL): a write to a peer that reset the
 * connection fails with EPIPE instead of raising SIGPIPE, which would kill an
 * application that keeps SIGPIPE's default action. No signal masks, no extra
 * system calls.
 */
#ifndef CSQL_SRC_SOCKBIO_H
#define CSQL_SRC_SOCKBIO_H

#include <openssl/bio.h>

/* A BIO reading and writing fd (not owned: freeing the BIO leaves fd open). NULL on failure. */
BIO *csql__sockbio_new(int fd);

#endif
