/* SPDX-License-Identifier: MIT */
/*
 * table.c -- the concurrent key table; see table.h.
 */
#include "table.h"

#include "alloc.h"
#include "axstm.h"
#include "entry.h"
#include "epoch.h"
#include "fork.h"
#include "hash.h"
#include "thread.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A shard's array.  Beside each entry's reference (below) it keeps a
 * one-byte tag: 0 for an empty slot, TOMBSTONE for a slot whose entry was
 * taken out (probes go on past it), else 0x80 | 7 bits of the key's hash
 * (bits the slot position does not use).  A probe scans the tags, which
 * sit 64 to a cache line, and follows a reference only when its tag
 * matches: a lookup then touches, besides the tags, only the entry it is
 * after (1 in 128 others), where comparing each passed entry's hash would
 * miss the cache once per slot passed.  The tags come right after the
 * header, so that in a small array the capacity and the tags share a line;
 * the references follow them.
 *
 * The capacity is any number (not a power of two), so that a rebuild can
 * size the array to the keys it holds.  A small array (SPARSE_SLOTS or
 * fewer) is rebuilt half full and at 3/4, a large one 3/5 full and at
 * 4/5: in a small table the slots are few bytes in all and a lookup is
 * cheap, so the shorter probes of a sparser array count; in a large one
 * the slots are most of the table's memory, and a lookup's cache misses
 * dwarf a probe or two.  A key's first slot is its hash's low 32 bits
 * scaled to the capacity (a multiply and a shift, no division).
 */
struct axstm__shard_array {
    struct axstm__retired retire; /* when growth replaces it */
    size_t capacity;              /* slots, at most 2^32 */
    _Atomic uint8_t tag[];        /* capacity of them, then the references */
};

/*
 * Entries are carved from chunks of CHUNK_BYTES, each starting at a cache
 * line, so that an entry of a size class that is a multiple of the line
 * never straddles two: a lookup reads its lock word and its key, at either
 * end.  Size classes are multiples of UNIT bytes, so a slot names its
 * entry in 4 bytes where a pointer takes 8: the chunk's number in the
 * shard's directory, and the entry's place in the chunk in units.  An
 * entry never spans two chunks.
 */
#define UNIT 16
#define UNIT_BITS 11
#define CHUNK_BYTES ((size_t)UNIT << UNIT_BITS) /* 32 KiB */
#define MAX_CHUNKS ((size_t)1 << (32 - UNIT_BITS))

/* The shard's chunks: replaced by a larger copy when full, under the
 * shard lock; lookups read it without one (pinned). */
struct axstm__chunk_dir {
    struct axstm__retired retire; /* when growth replaces it */
    size_t cap;
    char *chunk[];
};

static inline struct axstm__entry *entry_at(const struct axstm__chunk_dir *dir, uint32_t ref)
{
    size_t place = (size_t)(ref & ((UINT32_C(1) << UNIT_BITS) - 1)) * UNIT;
    return (struct axstm__entry *)(void *)(dir->chunk[ref >> UNIT_BITS] + place);
}

/* The directory, for a caller holding the shard lock or pinned after
 * reading a reference (whose chunk the directory it reads then holds:
 * the reference was stored after the directory that holds its chunk). */
static inline struct axstm__chunk_dir *dir_of(struct axstm__shard *sh)
{
    return atomic_load_explicit(&sh->dir, memory_order_acquire);
}

/* entry_at for a lookup: an entry in the shard's first chunk, where every
 * entry of a shard of up to 680 or so short keys lies, is found without
 * waiting for a load of the directory (the address then depends on the
 * reference alone: the first chunk's address is loaded beside it). */
static inline struct axstm__entry *entry_of(struct axstm__shard *sh, uint32_t ref)
{
    if (__builtin_expect((ref >> UNIT_BITS) != 0, 0))
        return entry_at(dir_of(sh), ref);
    char *chunk0 = atomic_load_explicit(&sh->chunk0, memory_order_relaxed);
    return (struct axstm__entry *)(void *)(chunk0 + (size_t)ref * UNIT);
}

_Static_assert(AXSTM_KEY_MAX <= UINT16_MAX, "key lengths are stored in 16 bits");

#define FIRST_CAPACITY 8
#define MAX_CAPACITY (UINT64_C(1) << 32)
#define SPARSE_SLOTS 4096

/* The most entries (tombstones counting) an array of capacity holds
 * before it is rebuilt, and the capacity a rebuild gives n entries. */
static size_t fill_limit(size_t capacity)
{
    return capacity <= SPARSE_SLOTS ? capacity / 4 * 3 : capacity / 5 * 4;
}

static size_t capacity_for(size_t n)
{
    size_t want = n * 2 <= SPARSE_SLOTS ? n * 2 : n * 5 / 3 + 1;
    return want < FIRST_CAPACITY ? FIRST_CAPACITY : (want + 7) / 8 * 8;
}

/* The first slot to probe for a key of that hash, and the one after i. */
static inline size_t home_slot(uint64_t hash, size_t capacity)
{
    return (size_t)(((hash & UINT32_MAX) * (uint64_t)capacity) >> 32);
}

static inline size_t next_slot(size_t i, size_t capacity)
{
    return i + 1 < capacity ? i + 1 : 0;
}
#define TOMBSTONE 0x01

static size_t shard_of(uint64_t hash)
{
    return (size_t)(hash >> 58); /* top 6 bits: 64 shards */
}

/* Where the references start: after the tags, rounded up for alignment. */
static size_t slots_offset(size_t capacity)
{
    size_t n = sizeof(struct axstm__shard_array) + capacity;
    return (n + sizeof(uint32_t) - 1) & ~(sizeof(uint32_t) - 1);
}

static size_t array_size(size_t capacity)
{
    return slots_offset(capacity) + capacity * sizeof(uint32_t);
}

static _Atomic uint32_t *slots(const struct axstm__shard_array *arr)
{
    return (_Atomic uint32_t *)(void *)((uintptr_t)arr + slots_offset(arr->capacity));
}

/* The tag of a key: 7 bits of its hash that neither the shard (the top 6)
 * nor the position (the low 32) uses, marked as a full slot. */
static uint8_t tag_of(uint64_t hash)
{
    return (uint8_t)(0x80 | (hash >> 50 & 0x7f));
}

/* Entries come in size classes, so that a freed one fits the next key of
 * about its length: 16-byte steps up to 256 bytes (nearly every key), then
 * 128-byte steps up to the longest key. */
static size_t class_of(size_t size)
{
    return size <= 256 ? (size + 15) / 16 - 1 : 15 + (size - 256 + 127) / 128;
}

static size_t class_size(size_t cls)
{
    return cls < 16 ? (cls + 1) * 16 : 256 + (cls - 15) * 128;
}

static size_t entry_size(size_t keylen)
{
    return class_size(class_of(offsetof(struct axstm__entry, key) + keylen + 1));
}

_Static_assert(AXSTM__ENTRY_CLASSES >
                   15 + (offsetof(struct axstm__entry, key) + AXSTM_KEY_MAX + 1 - 256 + 127) / 128,
               "a size class for the longest key");

/* The largest entry, and what a chunk is sure to hold of a batch: the
 * tail of a chunk that the next entry does not fit is left unused. */
#define LARGEST_ENTRY \
    (256 + ((offsetof(struct axstm__entry, key) + AXSTM_KEY_MAX + 1 - 256 + 127) / 128) * 128)
_Static_assert(LARGEST_ENTRY * 8 <= CHUNK_BYTES, "a chunk holds several of the largest entries");
_Static_assert(UNIT == 16 && CHUNK_BYTES % AXSTM__CACHELINE == 0, "entries sit at whole units");

int axstm__table_init(struct axstm__keytable *t, struct axstm__epoch *epoch)
{
    axstm__hash_seed(&t->seed);
    t->epoch = epoch;
    atomic_init(&t->removals, 0);
    for (size_t i = 0; i < AXSTM__SHARDS; i++) {
        struct axstm__shard *sh = &t->shard[i];
        if (pthread_mutex_init(&sh->lock, NULL) != 0) {
            while (i-- > 0)
                pthread_mutex_destroy(&t->shard[i].lock);
            return AXSTM_ENOMEM;
        }
        atomic_init(&sh->array, NULL);
        atomic_init(&sh->count, 0);
        atomic_init(&sh->bytes, 0);
        sh->tombstones = 0;
        sh->removed_stamp = 0;
        atomic_init(&sh->dir, NULL);
        atomic_init(&sh->chunk0, NULL);
        sh->nchunks = 0;
        sh->carving = 0;
        sh->arena_next = NULL;
        sh->arena_left = 0;
        for (size_t k = 0; k < AXSTM__ENTRY_CLASSES; k++)
            atomic_init(&sh->free_list[k], NULL);
    }
    return AXSTM_OK;
}

void axstm__table_destroy(struct axstm__keytable *t, void (*drop)(struct axstm__entry *))
{
    for (size_t i = 0; i < AXSTM__SHARDS; i++) {
        struct axstm__shard *sh = &t->shard[i];
        struct axstm__shard_array *arr = atomic_load(&sh->array);
        struct axstm__chunk_dir *dir = atomic_load(&sh->dir);
        if (arr != NULL) {
            for (size_t j = 0; j < arr->capacity; j++) {
                if (atomic_load_explicit(&arr->tag[j], memory_order_relaxed) < 0x80)
                    continue;
                uint32_t ref = atomic_load_explicit(&slots(arr)[j], memory_order_relaxed);
                if (drop != NULL)
                    drop(entry_at(dir, ref));
            }
            axstm__free(arr);
        }
        for (size_t k = 0; k < sh->nchunks; k++)
            axstm__free(dir->chunk[k]);
        axstm__free(dir);
        pthread_mutex_destroy(&sh->lock);
    }
}

static AXSTM__ALWAYS_INLINE struct axstm__entry *probe(struct axstm__shard *sh,
                                                       const struct axstm__shard_array *arr,
                                                       const struct axstm__keyref *r, size_t *where)
{
    const _Atomic uint8_t *tag = arr->tag;
    uint8_t want = tag_of(r->hash);
    size_t capacity = arr->capacity;
    size_t i = home_slot(r->hash, capacity);
    for (;;) {
        /* Acquire: a tag is stored after its pointer and entry (place). */
        uint8_t t = atomic_load_explicit(&tag[i], memory_order_acquire);
        if (t == 0)
            return NULL;
        if (t == want) {
            /* Acquire too: the tag seen may be older than the reference.
             * A slot emptied by a removal can be reused for the same key
             * (same tag) between the two loads; only this load then orders
             * the new entry's initialisation (and its chunk's place in the
             * directory) before the reads below. */
            uint32_t ref = atomic_load_explicit(&slots(arr)[i], memory_order_acquire);
            struct axstm__entry *e = entry_of(sh, ref);
            if (e->keylen == r->len && axstm__same_bytes(e->key, r->key, r->len)) {
                if (where != NULL)
                    *where = i;
                return e;
            }
        }
        i = next_slot(i, capacity);
    }
}

void axstm__table_find(struct axstm__keytable *t, struct axstm__keyref *r)
{
    r->hash = axstm__hash(&t->seed, r->key, r->len);
    struct axstm__shard *sh = &t->shard[shard_of(r->hash)];
    struct axstm__shard_array *arr = atomic_load_explicit(&sh->array, memory_order_acquire);
    r->entry = arr != NULL ? probe(sh, arr, r, NULL) : NULL;
}

/* Places e (whose key hashes to hash) in an array nobody else writes
 * (a rebuild) or under the shard lock.  Returns whether it took a
 * tombstone's slot. */
static bool place(struct axstm__shard_array *arr, uint32_t ref, uint64_t hash)
{
    _Atomic uint8_t *tag = arr->tag;
    size_t i = home_slot(hash, arr->capacity);
    uint8_t t;
    while ((t = atomic_load_explicit(&tag[i], memory_order_relaxed)) >= 0x80)
        i = next_slot(i, arr->capacity);
    /* Both release: probes find the entry through the tag, foreach through
     * the reference, and either must then see the entry whole.  A probe for
     * another key that passes a tombstone being reused sees either the
     * tombstone or this entry, and goes on past both. */
    atomic_store_explicit(&slots(arr)[i], ref, memory_order_release);
    atomic_store_explicit(&tag[i], tag_of(hash), memory_order_release);
    return t == TOMBSTONE;
}

static void reclaim_array(struct axstm__retired *node, void *owner)
{
    (void)owner;
    axstm__free((struct axstm__shard_array *)node);
}

/* An entry taken out, waiting for its readers: pinned readers may still
 * read every field of the entry, so the retire node is kept beside it. */
struct dead_entry {
    struct axstm__retired retire;
    struct axstm__shard *shard;
    struct axstm__entry *entry;
    uint32_t ref;
};

/* The entry's memory goes back to its shard's free list. */
static void free_entry(struct axstm__shard *sh, struct axstm__entry *e, uint32_t ref)
{
    size_t cls = class_of(offsetof(struct axstm__entry, key) + e->keylen + 1);
    /* The link goes in the value word and the reference in the version
     * word, never in the lock word: that stays AXSTM__DEAD, which every
     * try-lock refuses, while the entry waits to be reused (a handle's
     * commit may still try it: commit.c).  Pushes race with each other,
     * and the one popper holds the shard lock, so no pop can see a node
     * come back under it (no ABA). */
    atomic_store_explicit(&e->version, ref, memory_order_relaxed);
    struct axstm__entry *head = atomic_load_explicit(&sh->free_list[cls], memory_order_relaxed);
    do
        atomic_store_explicit(&e->vword, (uint64_t)(uintptr_t)head, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&sh->free_list[cls], &head, e,
                                                  memory_order_release, memory_order_relaxed));
}

static void reclaim_entry(struct axstm__retired *node, void *owner)
{
    (void)owner;
    struct dead_entry *d = (struct dead_entry *)node;
    free_entry(d->shard, d->entry, d->ref);
    axstm__free(d);
}

/* Retires e (of shard sh, at ref), already out of every array, with the
 * node d: `removals` is raised first (see table.h), then e waits out the
 * readers. */
static int retire_entry(struct axstm__keytable *t, struct axstm__shard *sh, struct axstm__entry *e,
                        uint32_t ref, struct dead_entry *d)
{
    atomic_fetch_add(&t->removals, 1);
    d->shard = sh;
    d->entry = e;
    d->ref = ref;
    return axstm__epoch_retire(t->epoch, &d->retire, reclaim_entry, 0);
}

/* Remembers the stamp of an entry taken out.  Lock held. */
static void note_removed(struct axstm__shard *sh, uint64_t was)
{
    if (axstm__lock_stamp(was) > sh->removed_stamp)
        sh->removed_stamp = axstm__lock_stamp(was);
}

/*
 * Replaces the shard's array with one sized for its entries and `more`
 * new ones (capacity_for), dropping
 * tombstones and the entries nobody uses (gone, unwaited, unanchored: they
 * are retired).  Shard lock held.  Returns AXSTM_OK or AXSTM_ENOMEM (then
 * nothing changed).
 */
static int rebuild(struct axstm__keytable *t, struct axstm__shard *sh, size_t more,
                   int *reclaim_due)
{
    struct axstm__shard_array *old = atomic_load_explicit(&sh->array, memory_order_relaxed);
    size_t count = (size_t)atomic_load_explicit(&sh->count, memory_order_relaxed);
    size_t capacity = old != NULL ? old->capacity : 0;
    if (count + more > MAX_CAPACITY / 5 * 3 - 8 ||
        count + more >
            (SIZE_MAX - sizeof(struct axstm__shard_array) - 8) / 2 / (1 + sizeof(uint32_t)))
        return AXSTM_ENOMEM;
    size_t want = capacity_for(count + more);
    struct axstm__shard_array *grown = axstm__calloc(1, array_size(want));
    if (grown == NULL)
        return AXSTM_ENOMEM;
    grown->capacity = want;
    size_t kept = 0;
    struct axstm__chunk_dir *dir = dir_of(sh);
    if (old != NULL)
        for (size_t j = 0; j < capacity; j++) {
            if (atomic_load_explicit(&old->tag[j], memory_order_relaxed) < 0x80)
                continue;
            uint32_t ref = atomic_load_explicit(&slots(old)[j], memory_order_relaxed);
            struct axstm__entry *e = entry_at(dir, ref);
            if (axstm__entry_unused(e)) {
                /* Without a node it simply stays until a later rebuild. */
                struct dead_entry *d = axstm__malloc(sizeof *d);
                uint64_t was;
                if (d != NULL && axstm__entry_kill(e, &was)) {
                    note_removed(sh, was);
                    *reclaim_due |= retire_entry(t, sh, e, ref, d);
                    continue;
                }
                axstm__free(d);
            }
            /* Entries keep no hash: a rebuild computes them again (cheap,
             * and rebuilds are rare; the bytes per key are saved). */
            place(grown, ref, axstm__hash(&t->seed, e->key, e->keylen));
            kept++;
        }
    /* Readers switch to the copy with this one store; those still in the
     * old array find the same entries there until they unpin. */
    atomic_store_explicit(&sh->array, grown, memory_order_release);
    atomic_store_explicit(&sh->count, kept, memory_order_relaxed);
    sh->tombstones = 0;
    atomic_fetch_add_explicit(&sh->bytes, array_size(want), memory_order_relaxed);
    if (old != NULL) {
        atomic_fetch_sub_explicit(&sh->bytes, array_size(capacity), memory_order_relaxed);
        *reclaim_due |=
            axstm__epoch_retire(t->epoch, &old->retire, reclaim_array, array_size(capacity));
    }
    return AXSTM_OK;
}

/* Makes room for `more` entries, keeping the load factor (tombstones
 * count: probes pass them) within fill_limit.  Shard lock held. */
static int reserve_slots(struct axstm__keytable *t, struct axstm__shard *sh, size_t more,
                         int *reclaim_due)
{
    struct axstm__shard_array *old = atomic_load_explicit(&sh->array, memory_order_relaxed);
    size_t count = (size_t)atomic_load_explicit(&sh->count, memory_order_relaxed);
    size_t capacity = old != NULL ? old->capacity : 0;
    if (count + sh->tombstones + more <= fill_limit(capacity))
        return AXSTM_OK;
    return rebuild(t, sh, more, reclaim_due);
}

static void reclaim_dir(struct axstm__retired *node, void *owner)
{
    (void)owner;
    axstm__free((struct axstm__chunk_dir *)node);
}

static size_t dir_size(size_t cap)
{
    return sizeof(struct axstm__chunk_dir) + cap * sizeof(char *);
}

/* Adds a chunk to the shard's directory, after the one being carved.
 * Lock held.  Returns AXSTM_OK or AXSTM_ENOMEM (then nothing changed). */
static int add_chunk(struct axstm__keytable *t, struct axstm__shard *sh, int *reclaim_due)
{
    if (sh->nchunks == MAX_CHUNKS)
        return AXSTM_ENOMEM;
    char *chunk = axstm__aligned_alloc(AXSTM__CACHELINE, CHUNK_BYTES);
    if (chunk == NULL)
        return AXSTM_ENOMEM;
    struct axstm__chunk_dir *dir = dir_of(sh);
    if (dir == NULL || sh->nchunks == dir->cap) {
        size_t cap = dir != NULL ? dir->cap * 2 : 4;
        struct axstm__chunk_dir *grown = axstm__malloc(dir_size(cap));
        if (grown == NULL) {
            axstm__free(chunk);
            return AXSTM_ENOMEM;
        }
        grown->cap = cap;
        for (size_t k = 0; k < sh->nchunks; k++)
            grown->chunk[k] = dir->chunk[k];
        /* Lookups switch with this store; those holding the old copy find
         * every chunk a reference they can have read names. */
        atomic_store_explicit(&sh->dir, grown, memory_order_release);
        atomic_fetch_add_explicit(&sh->bytes, dir_size(cap), memory_order_relaxed);
        if (dir != NULL) {
            atomic_fetch_sub_explicit(&sh->bytes, dir_size(dir->cap), memory_order_relaxed);
            *reclaim_due |=
                axstm__epoch_retire(t->epoch, &dir->retire, reclaim_dir, dir_size(dir->cap));
        }
        dir = grown;
    }
    /* Read by lookups only through a reference into it, stored later. */
    dir->chunk[sh->nchunks++] = chunk;
    if (sh->nchunks == 1)
        atomic_store_explicit(&sh->chunk0, chunk, memory_order_relaxed);
    atomic_fetch_add_explicit(&sh->bytes, CHUNK_BYTES, memory_order_relaxed);
    return AXSTM_OK;
}

/* Makes sure the shard's arena can hand out `need` bytes of entries: in
 * what is left of the chunk being carved, or else in chunks reserved
 * after it, each counted for what it is sure to hold.  Lock held. */
static int reserve_arena(struct axstm__keytable *t, struct axstm__shard *sh, size_t need,
                         int *reclaim_due)
{
    if (sh->arena_left >= need)
        return AXSTM_OK;
    while ((sh->nchunks - sh->carving) * (CHUNK_BYTES - LARGEST_ENTRY) < need) {
        int rc = add_chunk(t, sh, reclaim_due);
        if (rc != AXSTM_OK)
            return rc;
    }
    return AXSTM_OK;
}

/* Carves size bytes from the arena, reserved by reserve_arena, and gives
 * their reference.  Lock held. */
static struct axstm__entry *carve(struct axstm__shard *sh, size_t size, uint32_t *ref)
{
    if (sh->arena_left < size) { /* the rest of this chunk stays unused */
        sh->arena_next = dir_of(sh)->chunk[sh->carving++];
        sh->arena_left = CHUNK_BYTES;
    }
    struct axstm__entry *e = (struct axstm__entry *)(void *)sh->arena_next;
    size_t place = CHUNK_BYTES - sh->arena_left;
    *ref = (uint32_t)((sh->carving - 1) << UNIT_BITS | place / UNIT);
    sh->arena_next += size;
    sh->arena_left -= size;
    return e;
}

/* A new gone entry, anchored once, and its reference.  Lock held; the
 * arena was reserved for it, in case its free list is empty. */
static struct axstm__entry *new_entry(struct axstm__shard *sh, const struct axstm__keyref *r,
                                      uint32_t *ref)
{
    size_t cls = class_of(offsetof(struct axstm__entry, key) + r->len + 1);
    struct axstm__entry *e = atomic_load_explicit(&sh->free_list[cls], memory_order_acquire);
    while (e != NULL) {
        struct axstm__entry *next =
            (struct axstm__entry *)(uintptr_t)atomic_load_explicit(&e->vword, memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&sh->free_list[cls], &e, next,
                                                  memory_order_acquire, memory_order_acquire))
            break;
    }
    if (e != NULL)
        *ref = (uint32_t)atomic_load_explicit(&e->version, memory_order_relaxed); /* free_entry */
    else
        e = carve(sh, class_size(cls), ref);
    axstm__entry_init(e, sh->removed_stamp, r->key, r->len);
    return e;
}

static void unlock_shards(struct axstm__keytable *t, uint64_t locked)
{
    for (size_t i = 0; i < AXSTM__SHARDS; i++)
        if (locked & (UINT64_C(1) << i))
            pthread_mutex_unlock(&t->shard[i].lock);
}

static int add(struct axstm__keytable *t, struct axstm__keyref *refs, size_t n, bool *anchored)
{
    uint64_t wanted = 0, locked = 0;
    for (size_t i = 0; i < n; i++) {
        anchored[i] = false;
        if (refs[i].entry == NULL)
            wanted |= UINT64_C(1) << shard_of(refs[i].hash);
    }
    if (wanted == 0)
        return AXSTM_OK;

    for (size_t i = 0; i < AXSTM__SHARDS; i++) {
        if (!(wanted & (UINT64_C(1) << i)))
            continue;
        if (pthread_mutex_trylock(&t->shard[i].lock) != 0) {
            unlock_shards(t, locked);
            return AXSTM_BUSY_RETRY;
        }
        locked |= UINT64_C(1) << i;
    }

    /* Under the locks: what is still missing, and how much room it needs.
     * Every fallible step happens before the first entry is published.
     * A missing key may have been added meanwhile; a dead entry found is
     * on its way out and does not count (a new one is made). */
    size_t slots_needed[AXSTM__SHARDS] = {0}, bytes_needed[AXSTM__SHARDS] = {0};
    for (size_t i = 0; i < n; i++) {
        if (refs[i].entry != NULL)
            continue;
        struct axstm__shard *sh = &t->shard[shard_of(refs[i].hash)];
        struct axstm__shard_array *arr = atomic_load_explicit(&sh->array, memory_order_relaxed);
        if (arr != NULL && probe(sh, arr, &refs[i], NULL) != NULL)
            continue; /* added meanwhile; found again below */
        slots_needed[shard_of(refs[i].hash)]++;
        bytes_needed[shard_of(refs[i].hash)] += entry_size(refs[i].len);
    }
    int rc = AXSTM_OK, reclaim_due = 0;
    for (size_t i = 0; i < AXSTM__SHARDS && rc == AXSTM_OK; i++)
        if (slots_needed[i] != 0) {
            rc = reserve_slots(t, &t->shard[i], slots_needed[i], &reclaim_due);
            if (rc == AXSTM_OK)
                rc = reserve_arena(t, &t->shard[i], bytes_needed[i], &reclaim_due);
        }
    if (rc != AXSTM_OK) {
        unlock_shards(t, locked);
        if (reclaim_due)
            axstm__epoch_reclaim_soon(t->epoch);
        return rc;
    }

    /* Under the shard lock nothing leaves the table, so an entry found
     * here can be anchored unless it died before we took the lock: such
     * an entry is out of the array already (removals take the lock), so
     * probe cannot return it. */
    for (size_t i = 0; i < n; i++) {
        if (refs[i].entry != NULL)
            continue;
        struct axstm__shard *sh = &t->shard[shard_of(refs[i].hash)];
        struct axstm__shard_array *arr = atomic_load_explicit(&sh->array, memory_order_relaxed);
        struct axstm__entry *e = probe(sh, arr, &refs[i], NULL);
        if (e != NULL) { /* added meanwhile, or a duplicate within refs */
            if (axstm__entry_anchor(e)) {
                refs[i].entry = e;
                anchored[i] = true;
            }
            continue;
        }
        uint32_t ref;
        refs[i].entry = new_entry(sh, &refs[i], &ref);
        anchored[i] = true;
        if (place(arr, ref, refs[i].hash))
            sh->tombstones--;
        atomic_fetch_add_explicit(&sh->count, 1, memory_order_relaxed);
    }
    unlock_shards(t, locked);
    if (reclaim_due)
        axstm__epoch_reclaim_soon(t->epoch);
    return AXSTM_OK;
}

int axstm__table_add(struct axstm__keytable *t, struct axstm__keyref *refs, size_t n,
                     bool *anchored)
{
    /* No fork may copy the table halfway through (fork.h). */
    unsigned gate = axstm__gate_enter();
    if (gate == AXSTM__GATE_CLOSED) {
        for (size_t i = 0; i < n; i++)
            anchored[i] = false;
        return AXSTM_BUSY_RETRY;
    }
    int rc = add(t, refs, n, anchored);
    axstm__gate_leave(gate);
    return rc;
}

static bool remove_entry(struct axstm__keytable *t, struct axstm__entry *e);

bool axstm__table_remove(struct axstm__keytable *t, struct axstm__entry *e)
{
    if (!axstm__entry_unused(e))
        return false;
    unsigned gate = axstm__gate_enter(); /* fork.h */
    if (gate == AXSTM__GATE_CLOSED)
        return false; /* it stays until a later chance */
    bool removed = remove_entry(t, e);
    axstm__gate_leave(gate);
    return removed;
}

static bool remove_entry(struct axstm__keytable *t, struct axstm__entry *e)
{
    if (!axstm__entry_unused(e))
        return false;
    struct axstm__keyref r = {e->key, e->keylen, 0, NULL};
    r.hash = axstm__hash(&t->seed, r.key, r.len);
    struct axstm__shard *sh = &t->shard[shard_of(r.hash)];
    struct dead_entry *d = axstm__malloc(sizeof *d);
    if (d == NULL)
        return false; /* it stays until a later chance */
    if (pthread_mutex_trylock(&sh->lock) != 0) {
        axstm__free(d); /* somebody else is changing the shard: later */
        return false;
    }
    struct axstm__shard_array *arr = atomic_load_explicit(&sh->array, memory_order_relaxed);
    size_t where;
    bool removed = false;
    int reclaim_due = 0;
    uint64_t was;
    if (arr != NULL && probe(sh, arr, &r, &where) == e && axstm__entry_kill(e, &was)) {
        note_removed(sh, was);
        atomic_store_explicit(&arr->tag[where], TOMBSTONE, memory_order_release);
        atomic_fetch_sub_explicit(&sh->count, 1, memory_order_relaxed);
        sh->tombstones++;
        uint32_t ref = atomic_load_explicit(&slots(arr)[where], memory_order_relaxed);
        reclaim_due = retire_entry(t, sh, e, ref, d);
        d = NULL;
        removed = true;
        /* Many tombstones: shrink (a failure to allocate just waits for
         * the next chance). */
        if (sh->tombstones > arr->capacity / 2)
            (void)rebuild(t, sh, 0, &reclaim_due);
    }
    pthread_mutex_unlock(&sh->lock);
    axstm__free(d);
    if (reclaim_due)
        axstm__epoch_reclaim_soon(t->epoch);
    return removed;
}

int axstm__table_foreach_shard(struct axstm__keytable *t, size_t i,
                               int (*fn)(struct axstm__entry *, void *), void *arg)
{
    struct axstm__shard *sh = &t->shard[i];
    struct axstm__shard_array *arr = atomic_load_explicit(&sh->array, memory_order_acquire);
    if (arr == NULL)
        return 0;
    for (size_t j = 0; j < arr->capacity; j++) {
        if (atomic_load_explicit(&arr->tag[j], memory_order_acquire) < 0x80)
            continue;
        uint32_t ref = atomic_load_explicit(&slots(arr)[j], memory_order_acquire);
        int rc = fn(entry_at(dir_of(sh), ref), arg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int axstm__table_shard_entries(struct axstm__keytable *t, size_t i, struct axstm__entry ***out,
                               size_t *n)
{
    struct axstm__shard *sh = &t->shard[i];
    struct axstm__shard_array *arr = atomic_load_explicit(&sh->array, memory_order_acquire);
    *out = NULL;
    *n = 0;
    if (arr == NULL)
        return AXSTM_OK;
    size_t m = 0, cap = 0;
    for (size_t j = 0; j < arr->capacity; j++)
        cap += atomic_load_explicit(&arr->tag[j], memory_order_relaxed) >= 0x80;
    if (cap == 0)
        return AXSTM_OK;
    struct axstm__entry **a = axstm__malloc(cap * sizeof *a);
    if (a == NULL)
        return AXSTM_ENOMEM;
    for (size_t j = 0; j < arr->capacity && m < cap; j++) {
        if (atomic_load_explicit(&arr->tag[j], memory_order_acquire) < 0x80)
            continue;
        uint32_t ref = atomic_load_explicit(&slots(arr)[j], memory_order_acquire);
        struct axstm__entry *e = entry_at(dir_of(sh), ref);
        if (axstm__entry_anchor(e))
            a[m++] = e;
    }
    *out = a;
    *n = m;
    return AXSTM_OK;
}

uint64_t axstm__table_bytes(const struct axstm__keytable *t)
{
    uint64_t n = 0;
    for (size_t i = 0; i < AXSTM__SHARDS; i++)
        n += atomic_load_explicit(&t->shard[i].bytes, memory_order_relaxed);
    return n;
}
