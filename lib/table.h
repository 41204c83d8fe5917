/* SPDX-License-Identifier: MIT */
/*
 * table.h -- the concurrent key table: key string -> entry.
 *
 * 64 shards chosen by the top bits of a seeded hash; each shard is an
 * open-addressing array (linear probing) of 4-byte references to entries,
 * which live in the shard's chunks (table.c):
 *   - lookups take no lock: they read the shard's current array (the caller
 *     is pinned, so an array replaced by a rebuild stays readable);
 *   - adding entries takes the shard's lock with a try-lock, so it never
 *     waits and never stalls readers; a rebuild copies the array under that
 *     lock and publishes the copy with one pointer store;
 *   - taking an entry out (a gone key nobody needs: see entry.h) leaves a
 *     tombstone in its slot, so that probes for the keys behind it go on;
 *     rebuilds drop the tombstones, and shrink the array as keys go.
 * An entry taken out is freed through the epoch, and only after
 * `removals` has been raised: a handle that remembers the count it saw
 * when it found its entry knows, while the count is unchanged, that the
 * entry has not been freed (value.c); its commit, which is not pinned,
 * relies on entry memory being reused only as entries (entry.h).  Freed
 * entries go to per-shard free lists by size and are reused for new keys.
 * The table knows nothing of handles, commits or waiting.
 */
#ifndef AXSTM_TABLE_H
#define AXSTM_TABLE_H

#include "entry.h"
#include "epoch.h"
#include "hash.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AXSTM__SHARDS 64

struct axstm__shard_array;
struct axstm__chunk_dir;

#define AXSTM__ENTRY_CLASSES 24

struct axstm__shard {
    _Alignas(2 * AXSTM__CACHELINE) pthread_mutex_t lock; /* adding and removing */
    _Atomic(struct axstm__shard_array *) array;          /* NULL until first key */
    _Atomic uint64_t count;                              /* entries in the array */
    _Atomic uint64_t bytes;                              /* memory held */
    size_t tombstones;                                   /* under the lock */
    /* The newest stamp of the entries taken out, under the lock.  A new
     * entry starts gone at that stamp, not at 0: a transaction whose
     * snapshot is older than the delete that made a key gone must not
     * read the key's absence from a fresh entry as if nothing had
     * happened (txn.c reads by stamp).  A key always lands in the same
     * shard, so this bounds every stamp its earlier entries had. */
    uint64_t removed_stamp;
    /* Entries are carved from chunks, which saves malloc's per-block
     * overhead and lets a slot name its entry in 4 bytes (table.c): the
     * directory of the chunks (read by lookups, replaced under the lock
     * when it grows), how many there are, and the one being carved;
     * chunks after it are reserved, not yet used.  Freed entries wait on
     * a list per size class for reuse (pushed by any thread, popped under
     * the lock). */
    _Atomic(struct axstm__chunk_dir *) dir;
    _Atomic(char *) chunk0; /* the first chunk, set once: lookups' fast way */
    size_t nchunks, carving;
    char *arena_next;
    size_t arena_left;
    _Atomic(struct axstm__entry *) free_list[AXSTM__ENTRY_CLASSES];
};

struct axstm__keytable {
    struct axstm__hash_key seed;
    struct axstm__epoch *epoch;
    /* Raised before every entry taken out is retired; read-mostly. */
    _Alignas(2 * AXSTM__CACHELINE) _Atomic uint64_t removals;
    struct axstm__shard shard[AXSTM__SHARDS];
};

/* A key being looked up or created; entry is NULL until found. */
struct axstm__keyref {
    const char *key;
    size_t len;
    uint64_t hash;
    struct axstm__entry *entry;
};

int axstm__table_init(struct axstm__keytable *t, struct axstm__epoch *epoch);
/* Frees arrays and entries; calls drop(entry), if given, on each first. */
void axstm__table_destroy(struct axstm__keytable *t, void (*drop)(struct axstm__entry *));

/* Fills r->hash and r->entry (NULL when absent); the entry found may be
 * gone or dead (entry.h).  Caller pinned. */
void axstm__table_find(struct axstm__keytable *t, struct axstm__keyref *r);

/* The removal count, read before a lookup whose entry is kept (table.h). */
static inline uint64_t axstm__table_removals(struct axstm__keytable *t)
{
    return atomic_load(&t->removals);
}

/*
 * Adds a gone entry (entry.h) for every key of refs[0..n) whose entry is
 * NULL (finding those that appeared meanwhile, and duplicates within
 * refs), all or none, and anchors each entry it adds or finds that way;
 * the caller drops those anchors (axstm__entry_unanchor) and marks which
 * refs it must drop them for by `anchored`.  Caller pinned.  Returns
 * AXSTM_OK, AXSTM_BUSY_RETRY (a shard lock was held) or AXSTM_ENOMEM; on
 * failure nothing was added and nothing is anchored.
 */
int axstm__table_add(struct axstm__keytable *t, struct axstm__keyref *refs, size_t n,
                     bool *anchored);

/*
 * Takes e out of the table if it is unused (gone, no waiters, no anchors:
 * entry.h) and its shard's lock is free, and retires it.  Returns whether
 * it did.  Caller pinned.
 */
bool axstm__table_remove(struct axstm__keytable *t, struct axstm__entry *e);

/* Calls fn on every entry of shard i until it returns non-zero (returned).
 * Pinned. */
int axstm__table_foreach_shard(struct axstm__keytable *t, size_t i,
                               int (*fn)(struct axstm__entry *, void *), void *arg);

/*
 * Copies the entries of shard i (gone ones too) into a new array *out of
 * *n entries, anchoring each; NULL with *n == 0 when the shard is empty.
 * Returns AXSTM_OK or AXSTM_ENOMEM.  Caller pinned.
 */
int axstm__table_shard_entries(struct axstm__keytable *t, size_t i, struct axstm__entry ***out,
                               size_t *n);

uint64_t axstm__table_bytes(const struct axstm__keytable *t);

#endif
