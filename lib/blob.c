/* SPDX-License-Identifier: MIT */
/*
 * blob.c -- the bytes of a value: making and dropping blobs; see blob.h.
 */
#include "blob.h"

#include "alloc.h"

#include <stdatomic.h>
#include <string.h>

struct axstm__blob *axstm__blob_new(const void *data, size_t len)
{
    struct axstm__blob *b = axstm__malloc(axstm__blob_size(len));
    if (b == NULL)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = len;
    if (len != 0)
        memcpy(b->data, data, len);
    return b;
}

void axstm__blob_unref(struct axstm__blob *b)
{
    if (b != NULL && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        axstm__free(b);
}

int axstm__val_make_blob(struct axstm__val *v, const void *data, size_t len)
{
    struct axstm__blob *b = axstm__blob_new(data, len);
    if (b == NULL)
        return AXSTM_ENOMEM;
    axstm__val_release(v);
    v->word = (uint64_t)(uintptr_t)b;
    v->meta = AXSTM__VAL_BLOB;
    return AXSTM_OK;
}
