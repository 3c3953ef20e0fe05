/* A fixed-capacity byte ring, allocated lazily and released when empty. */
#include "util/ring.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "csql/errors.h"

static atomic_size_t g_allocated;

void csql__ring_init(csql__ring *r, size_t cap)
{
    r->data = NULL;
    r->cap = cap;
    r->head = 0;
    r->len = 0;
}

void csql__ring_dispose(csql__ring *r)
{
    if (r->data != NULL) {
        free(r->data);
        atomic_fetch_sub(&g_allocated, r->cap);
        r->data = NULL;
    }
    r->head = 0;
    r->len = 0;
}

int csql__ring_write_span(csql__ring *r, uint8_t **p, size_t *span)
{
    *p = NULL;
    *span = 0;
    if (r->data == NULL) {
        r->data = malloc(r->cap);
        if (r->data == NULL) {
            return CSQL_ERR_NOMEM;
        }
        atomic_fetch_add(&g_allocated, r->cap);
        r->head = 0;
    }
    if (r->len == r->cap) {
        return CSQL_OK;
    }
    size_t tail = (r->head + r->len) % r->cap;
    /* Free space runs from tail to the end, or to head if the data wrapped. */
    size_t end = tail >= r->head ? r->cap : r->head;
    if (r->len == 0) {
        /* Empty: restart at the front to offer the longest span. */
        r->head = 0;
        tail = 0;
        end = r->cap;
    }
    *p = r->data + tail;
    *span = end - tail;
    return CSQL_OK;
}

void csql__ring_commit(csql__ring *r, size_t n)
{
    r->len += n;
}

size_t csql__ring_read_span(const csql__ring *r, const uint8_t **p)
{
    *p = NULL;
    if (r->len == 0 || r->data == NULL) {
        return 0;
    }
    *p = r->data + r->head;
    size_t to_end = r->cap - r->head;
    return r->len < to_end ? r->len : to_end;
}

void csql__ring_consume(csql__ring *r, size_t n)
{
    r->head = (r->head + n) % r->cap;
    r->len -= n;
    if (r->len == 0) {
        r->head = 0;
    }
}

void csql__ring_trim(csql__ring *r)
{
    if (r->len == 0) {
        csql__ring_dispose(r);
    }
}

size_t csql__ring_allocated_bytes(void)
{
    return atomic_load(&g_allocated);
}
