/*
 * entry.h -- one key's committed state, and the immutable value bytes.
 *
 * An entry is never freed before its store: keys, once created, stay.
 * Its committed state is (version, value) guarded by a version lock:
 *
 *   vlock = stamp << 1 | locked
 *
 * A committer takes the lock (a compare-and-swap, never a wait), writes,
 * and releases it with a new stamp drawn from the store's clock, so the
 * word changes on every write and never repeats.  Readers take no lock at
 * all: they read vlock, the state, and vlock again (a sequence lock); equal
 * words with the lock bit clear mean the state they read was committed.
 *
 * Values are blobs: immutable, reference-counted byte strings.  The entry
 * holds one reference to its current blob; each handle that checked it out
 * holds another, so an unchanged checkout shares the committed bytes.  The
 * entry's reference is dropped through epoch reclamation (a reader may be
 * between loading the pointer and taking its own reference), a handle's
 * directly.
 */
#ifndef AXSTM_ENTRY_H
#define AXSTM_ENTRY_H

#include "axstm.h"
#include "epoch.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct axstm__blob {
    struct axstm__retired retire; /* used once the entry lets go of it */
    _Atomic uint32_t refs;
    size_t len;
    unsigned char data[];
};

struct axstm__entry {
    _Atomic uint64_t vlock;
    _Atomic uint64_t version;            /* Axon's per-key version */
    _Atomic(struct axstm__blob *) value; /* NULL: no value yet */
    uint64_t hash;
    uint32_t keylen;
    /* Waiters registered on this key (wait.c).  Sits in what would be
     * padding, on the cache line a commit already owns, so checking it
     * costs a commit nothing when nobody waits. */
    _Atomic uint32_t waiters;
    char key[]; /* NUL-terminated */
};

#define AXSTM__LOCKED UINT64_C(1)

/* Memory a blob of len bytes occupies. */
static inline size_t axstm__blob_size(size_t len)
{
    return sizeof(struct axstm__blob) + len;
}

static inline void axstm__blob_ref(struct axstm__blob *b)
{
    if (b != NULL)
        atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void axstm__blob_unref(struct axstm__blob *b);

/*
 * Reads one committed state of e without locking.  Returns AXSTM_OK with
 * the vlock word it was read under, or AXSTM_BUSY_RETRY when e is locked
 * (or keeps changing under us).  The caller must be pinned: *blob is only
 * safe to use (or to take a reference on) while it stays pinned.
 */
static inline int axstm__entry_read(struct axstm__entry *e, uint64_t *vlock,
                                    uint64_t *version, struct axstm__blob **blob)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        uint64_t before = atomic_load_explicit(&e->vlock, memory_order_acquire);
        if (before & AXSTM__LOCKED)
            return AXSTM_BUSY_RETRY;
        uint64_t ver = atomic_load_explicit(&e->version, memory_order_relaxed);
        struct axstm__blob *b = atomic_load_explicit(&e->value, memory_order_acquire);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->vlock, memory_order_relaxed) == before) {
            *vlock = before;
            *version = ver;
            *blob = b;
            return AXSTM_OK;
        }
    }
    return AXSTM_BUSY_RETRY;
}

/* Takes e's lock if it is free at this instant; *old gets the word to
 * restore if nothing is written after all. */
static inline bool axstm__entry_trylock(struct axstm__entry *e, uint64_t *old)
{
    uint64_t w = atomic_load_explicit(&e->vlock, memory_order_relaxed);
    if (w & AXSTM__LOCKED)
        return false;
    /* Sequentially consistent: wait.c relies on a waiter either seeing this
     * lock or being seen by the committer's later load of e->waiters. */
    if (!atomic_compare_exchange_strong_explicit(&e->vlock, &w, w | AXSTM__LOCKED,
                                                 memory_order_seq_cst,
                                                 memory_order_relaxed))
        return false;
    /* Orders the lock before the writes that follow (sequence-lock writer). */
    atomic_thread_fence(memory_order_release);
    *old = w;
    return true;
}

/* Releases e's lock without a write having happened. */
static inline void axstm__entry_restore(struct axstm__entry *e, uint64_t old)
{
    atomic_store_explicit(&e->vlock, old, memory_order_release);
}

/* Releases e's lock after a write, with the commit's stamp. */
static inline void axstm__entry_unlock(struct axstm__entry *e, uint64_t stamp)
{
    atomic_store_explicit(&e->vlock, stamp << 1, memory_order_release);
}

#endif
