/* csql-proxy: wiping memory that may hold tokens or keys before it is freed. */
#ifndef CSQL_PROXY_SECRET_H
#define CSQL_PROXY_SECRET_H

#include <stddef.h>
#include <string.h>

/* Zero n bytes in a way the compiler may not drop. */
static inline void secret_wipe(void *p, size_t n)
{
    if (p != NULL) {
        explicit_bzero(p, n);
    }
}

/* Wipe a NUL-terminated string and free it (NULL is ignored). */
void secret_free(char *s);

#endif
