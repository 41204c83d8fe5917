/*
 * table.h -- the concurrent key table: key string -> entry.
 *
 * 64 shards chosen by the top bits of a seeded hash; each shard is an
 * open-addressing array of entry pointers (linear probing).  Entries are
 * never removed, which keeps everything simple:
 *   - lookups take no lock: they read the shard's current array (the caller
 *     is pinned, so an array replaced by growth stays readable);
 *   - creating keys takes the shard's lock with a try-lock, so creation in
 *     one shard never waits and never stalls readers; growth copies the
 *     array under that lock and publishes the copy with one pointer store.
 * The table knows nothing of handles, commits or waiting.
 */
#ifndef AXSTM_TABLE_H
#define AXSTM_TABLE_H

#include "entry.h"
#include "epoch.h"
#include "hash.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define AXSTM__SHARDS 64

struct axstm__table;
struct axstm__arena_chunk;

struct axstm__shard {
    _Alignas(2 * AXSTM__CACHELINE) pthread_mutex_t lock; /* creation and growth */
    _Atomic(struct axstm__table *) table;                 /* NULL until first key */
    _Atomic uint64_t count;                               /* entries */
    _Atomic uint64_t bytes;                               /* memory held */
    /* Entries are carved from chunks: they live as long as the store, so a
     * bump allocator saves malloc's per-block overhead. */
    struct axstm__arena_chunk *chunks;
    char *arena_next;
    size_t arena_left;
};

struct axstm__keytable {
    struct axstm__hash_key seed;
    struct axstm__epoch *epoch;
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

/* Fills r->hash and r->entry (NULL when absent).  Caller pinned. */
void axstm__table_find(struct axstm__keytable *t, struct axstm__keyref *r);

/*
 * Creates every key of refs[0..n) whose entry is NULL (finding those that
 * appeared meanwhile, and duplicates within refs), all or none.  Caller
 * pinned.  Returns AXSTM_OK, AXSTM_BUSY_RETRY (a shard lock was held) or
 * AXSTM_ENOMEM; on failure no key was created and no entry field written.
 */
int axstm__table_create(struct axstm__keytable *t, struct axstm__keyref *refs, size_t n);

/* Finds every key of refs[0..n) (key and len filled in), creating the
 * missing ones as axstm__table_create does.  Caller pinned. */
int axstm__table_find_or_create(struct axstm__keytable *t, struct axstm__keyref *refs, size_t n);

/* Calls fn on every entry until it returns non-zero (returned).  Pinned. */
int axstm__table_foreach(struct axstm__keytable *t,
                         int (*fn)(struct axstm__entry *, void *), void *arg);

uint64_t axstm__table_keys(const struct axstm__keytable *t);
uint64_t axstm__table_bytes(const struct axstm__keytable *t);

#endif
