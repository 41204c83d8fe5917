/* SPDX-License-Identifier: MIT */
/*
 * blob.h -- the bytes of a value: inline when small, a shared blob otherwise.
 *
 * A value (struct axstm__val) is one of four things:
 *   - none: the key has never been given a value;
 *   - inline: up to 8 bytes held in the word itself, so the common small
 *     values (counters, flags, short strings) cost no allocation and no
 *     indirection, and are simply copied;
 *   - a blob: an immutable, reference-counted byte string.  The entry holds
 *     one reference to its current blob and each handle that checked it out
 *     another, so an unchanged checkout shares the committed bytes.  The
 *     entry's reference is dropped through epoch reclamation (a reader may be
 *     between loading the pointer and taking its own reference), a handle's
 *     directly;
 *   - a delete: only ever in a handle or a transaction's write, never in an
 *     entry: committing it removes the key.
 *
 * Entries (entry.h) store values, handles and transactions hold private
 * ones; this file knows nothing of either.
 */
#ifndef AXSTM_BLOB_H
#define AXSTM_BLOB_H

#include "axstm.h"
#include "epoch.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct axstm__blob {
    struct axstm__retired retire; /* used once the entry lets go of it */
    _Atomic uint32_t refs;
    size_t len;
    unsigned char data[];
};

#define AXSTM__INLINE_MAX 8
#define AXSTM__VAL_LEN UINT32_C(0x0f)        /* an inline value's length (0..8) */
#define AXSTM__VAL_INLINE (UINT32_C(1) << 4) /* | length */
#define AXSTM__VAL_BLOB (UINT32_C(1) << 5)   /* word is a blob pointer */
#define AXSTM__VAL_DELETE (UINT32_C(1) << 6) /* a delete (handles, writes) */
/* The bits an entry stores (entry.h keeps them beside the version): a
 * delete never reaches an entry. */
#define AXSTM__VAL_STORED_BITS 6

struct axstm__val {
    uint64_t word; /* the inline bytes, or the blob's address */
    uint32_t meta; /* 0: no value; else AXSTM__VAL_INLINE | len, AXSTM__VAL_BLOB
                    * or AXSTM__VAL_DELETE */
};

/* Memory a blob of len bytes occupies. */
static inline size_t axstm__blob_size(size_t len)
{
    return sizeof(struct axstm__blob) + len;
}

static inline struct axstm__blob *axstm__val_blob(const struct axstm__val *v)
{
    return (v->meta & AXSTM__VAL_BLOB) ? (struct axstm__blob *)(uintptr_t)v->word : NULL;
}

/* The bytes of v (NULL when no value) and their length. */
static inline const void *axstm__val_data(const struct axstm__val *v, size_t *len)
{
    if (v->meta & AXSTM__VAL_INLINE) {
        *len = v->meta & AXSTM__VAL_LEN;
        return &v->word;
    }
    const struct axstm__blob *b = axstm__val_blob(v);
    *len = b != NULL ? b->len : 0;
    return b != NULL ? b->data : NULL;
}

/* v as a 64-bit integer: AXSTM_OK, AXSTM_ENOVALUE (no value) or AXSTM_ETYPE
 * (not 8 bytes long); *out is written only on AXSTM_OK. */
static inline int axstm__val_get_i64(const struct axstm__val *v, int64_t *out)
{
    size_t len;
    const void *data = axstm__val_data(v, &len);
    if (data == NULL)
        return AXSTM_ENOVALUE;
    if (len != sizeof *out)
        return AXSTM_ETYPE;
    memcpy(out, data, sizeof *out);
    return AXSTM_OK;
}

/* Takes a reference on v's blob, if any.  Caller pinned, or holding one. */
static inline void axstm__val_retain(const struct axstm__val *v)
{
    struct axstm__blob *b = axstm__val_blob(v);
    if (b != NULL)
        atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

/* Out of line (blob.c): these allocate or free. */
struct axstm__blob *axstm__blob_new(const void *data, size_t len);
void axstm__blob_unref(struct axstm__blob *b);
int axstm__val_make_blob(struct axstm__val *v, const void *data, size_t len);

/* Drops v's reference, if any, and makes it "no value". */
static inline void axstm__val_release(struct axstm__val *v)
{
    if (v->meta & AXSTM__VAL_BLOB)
        axstm__blob_unref(axstm__val_blob(v));
    v->word = 0;
    v->meta = 0;
}

/* Makes *v a new value holding a copy of data[0..len) (inline when small).
 * Returns AXSTM_OK or AXSTM_ENOMEM (then *v is untouched).  Inline here:
 * every set of a small value comes through, and costs no call. */
static inline int axstm__val_make(struct axstm__val *v, const void *data, size_t len)
{
    if (len > AXSTM__INLINE_MAX)
        return axstm__val_make_blob(v, data, len);
    uint64_t word = 0;
    if (len == sizeof word)
        memcpy(&word, data, sizeof word); /* the common int64: one load */
    else if (len != 0)
        memcpy(&word, data, len);
    axstm__val_release(v);
    v->word = word;
    v->meta = AXSTM__VAL_INLINE | (uint32_t)len;
    return AXSTM_OK;
}

#endif
