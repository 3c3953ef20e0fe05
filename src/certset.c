/* The refcounted result of one refresh: freed with its SSL_CTX when the last user lets go. */
#include "certset.h"

#include <stdlib.h>

csql__certset *csql__certset_ref(csql__certset *cs)
{
    if (cs != NULL) {
        atomic_fetch_add_explicit(&cs->refs, 1, memory_order_relaxed);
    }
    return cs;
}

void csql__certset_unref(csql__certset *cs)
{
    if (cs == NULL) {
        return;
    }
    /* acq_rel: the thread that frees sees every write made by the others before they let go. */
    if (atomic_fetch_sub_explicit(&cs->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    csql__connect_info_dispose(&cs->info);
    SSL_CTX_free(cs->ctx);
    free(cs);
}
