/* A socket BIO that never raises SIGPIPE (see sockbio.h). */
#include "sockbio.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

static BIO_METHOD *sock_method;
static pthread_once_t sock_method_once = PTHREAD_ONCE_INIT;

static int fd_of(BIO *b)
{
    return (int)(intptr_t)BIO_get_data(b);
}

static int would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK;
}

static int sock_read(BIO *b, char *buf, int len)
{
    BIO_clear_retry_flags(b);
    if (buf == NULL || len <= 0) {
        return 0;
    }
    ssize_t n;
    do {
        n = recv(fd_of(b), buf, (size_t)len, 0);
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
        /* OpenSSL asks BIO_eof() to tell a clean EOF from an error. */
        BIO_set_flags(b, BIO_FLAGS_IN_EOF);
    } else if (n < 0 && would_block(errno)) {
        BIO_set_retry_read(b);
    }
    return (int)n;
}

static int sock_write(BIO *b, const char *buf, int len)
{
    BIO_clear_retry_flags(b);
    if (buf == NULL || len <= 0) {
        return 0;
    }
    ssize_t n;
    do {
        n = send(fd_of(b), buf, (size_t)len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && would_block(errno)) {
        BIO_set_retry_write(b);
    }
    return (int)n;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    switch (cmd) {
    case BIO_C_GET_FD:
        if (ptr != NULL) {
            *(int *)ptr = fd_of(b);
        }
        return fd_of(b);
    case BIO_CTRL_EOF:
        return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
    case BIO_CTRL_GET_CLOSE:
        return BIO_get_shutdown(b);
    case BIO_CTRL_SET_CLOSE:
        BIO_set_shutdown(b, (int)num);
        return 1;
    case BIO_CTRL_FLUSH:
    case BIO_CTRL_DUP:
        return 1;
    default:
        return 0;
    }
}

static void sock_method_init(void)
{
    int index = BIO_get_new_index();
    if (index < 0) {
        return;
    }
    BIO_METHOD *m =
        BIO_meth_new(index | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "csql socket");
    if (m == NULL) {
        return;
    }
    if (BIO_meth_set_read(m, sock_read) != 1 || BIO_meth_set_write(m, sock_write) != 1 ||
        BIO_meth_set_ctrl(m, sock_ctrl) != 1) {
        BIO_meth_free(m);
        return;
    }
    sock_method = m;
}

BIO *csql__sockbio_new(int fd)
{
    pthread_once(&sock_method_once, sock_method_init);
    if (sock_method == NULL || fd < 0) {
        return NULL;
    }
    BIO *b = BIO_new(sock_method);
    if (b == NULL) {
        return NULL;
    }
    BIO_set_data(b, (void *)(intptr_t)fd);
    BIO_set_shutdown(b, BIO_NOCLOSE);
    BIO_set_init(b, 1);
    return b;
}
