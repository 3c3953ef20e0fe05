/*
 * Internal: a fixed-capacity byte ring for one direction of a forwarded
 * connection. The storage is allocated on first use and released whenever the
 * ring is empty, so an idle connection holds no buffer at all. The capacity is
 * a hard cap: nothing here ever grows past it (that is the backpressure).
 */
#ifndef CSQL_SRC_UTIL_RING_H
#define CSQL_SRC_UTIL_RING_H

#include <stddef.h>
#include <stdint.h>

typedef struct csql__ring {
    uint8_t *data; /* NULL while empty and released */
    size_t cap;    /* fixed at init */
    size_t head;   /* offset of the first stored byte */
    size_t len;    /* bytes stored, <= cap */
} csql__ring;

void csql__ring_init(csql__ring *r, size_t cap);
/* Free the storage whatever it holds. */
void csql__ring_dispose(csql__ring *r);

/*
 * Where the next bytes can be written, contiguously: *p and the span length
 * (0 when full). Allocates the storage if needed: CSQL_ERR_NOMEM (then *span = 0).
 */
int csql__ring_write_span(csql__ring *r, uint8_t **p, size_t *span);
/* n bytes were written at the write span (n <= span). */
void csql__ring_commit(csql__ring *r, size_t n);

/* The stored bytes that are contiguous from the head; 0 when empty. */
size_t csql__ring_read_span(const csql__ring *r, const uint8_t **p);
/* n bytes from the head were consumed (n <= read span). */
void csql__ring_consume(csql__ring *r, size_t n);

/* Release the storage if the ring is empty (idle connections hold no buffer). */
void csql__ring_trim(csql__ring *r);

static inline size_t csql__ring_len(const csql__ring *r) { return r->len; }
static inline size_t csql__ring_space(const csql__ring *r) { return r->cap - r->len; }

/* Bytes of ring storage allocated right now, process-wide (for memory tests). */
size_t csql__ring_allocated_bytes(void);

#endif
