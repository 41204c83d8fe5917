/* SPDX-License-Identifier: MIT */
/*
 * axstm-internal.h -- what the handle files share: the store, handles and
 * their items, counting, and the declarations of the checkout and commit
 * paths (checkout.c, commit.c).  Included first by value.c, collection.c,
 * checkout.c, commit.c, txn.c, store.c and watch.c; it brings the modules
 * they all use (alloc, blob, entry, epoch, table, thread, wait), and each
 * includes any other it needs itself.  The modules below the handles
 * (table.c, wait.c and the base: alloc, hash, thread, epoch, fork, blob,
 * status) include only their own headers and those they use.
 */
#ifndef AXSTM_INTERNAL_H
#define AXSTM_INTERNAL_H

#include "axstm.h"

#include "alloc.h"
#include "blob.h"
#include "entry.h"
#include "epoch.h"
#include "table.h"
#include "thread.h"
#include "redis.h"
#include "wait.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Per-thread-slot counters: each thread counts on its own cache line and
 * axstm_store_stats sums them, so counting never contends. */
struct axstm__counters {
    _Alignas(AXSTM__CACHELINE) _Atomic uint64_t commits;
    _Atomic uint64_t conflicts;
    _Atomic uint64_t busy;
    _Atomic uint64_t retries_waited;
    _Atomic uint64_t value_bytes; /* blobs referenced by entries: an int64_t,
                                   * kept wrapping so it can be added to */
    _Atomic uint64_t keys;        /* keys born minus keys deleted, likewise */
};

struct axstm_store {
    /* A store kept in a Redis server (redis.h), or NULL: in-process.  Every
     * public call on a store or its handles looks at it first. */
    struct axstm__redis *remote;
    struct axstm__epoch epoch;
    struct axstm__keytable table;
    /* The clock transactions take snapshots from; commits stamp keys above
     * it (commit.c), transactions advance it (txn.c).  Own cache line. */
    _Alignas(2 * AXSTM__CACHELINE) _Atomic uint64_t clock;
    struct axstm__counters counters[AXSTM__ALL_SLOTS];
    struct axstm__wait_bucket wait[AXSTM__WAIT_BUCKETS];
    /* Held by the one transaction running irrevocably, if any (txn.c). */
    pthread_mutex_t irrevocable;
    /* The key that transaction is waiting to lock, or NULL: commits leave
     * it alone (AXSTM_BUSY_RETRY) until it has it, so that a stream of
     * commits to one key cannot keep it out forever (commit.c). */
    _Alignas(AXSTM__CACHELINE) _Atomic(struct axstm__entry *) irrevocable_wants;
};

enum axstm__counter { AXSTM__COMMITS, AXSTM__CONFLICTS, AXSTM__BUSY, AXSTM__WAITED };

/* Counts one event in the calling thread's counters: a plain increment in
 * a slot of its own (thread.h), so counting costs no locked instruction. */
static inline void axstm__count(axstm_store *s, enum axstm__counter which)
{
    unsigned slot = axstm__thread_slot();
    struct axstm__counters *c = &s->counters[slot];
    _Atomic uint64_t *field = which == AXSTM__COMMITS     ? &c->commits
                              : which == AXSTM__CONFLICTS ? &c->conflicts
                              : which == AXSTM__BUSY      ? &c->busy
                                                          : &c->retries_waited;
    axstm__slot_add(field, 1, slot);
}

static inline void axstm__count_value_bytes(axstm_store *s, int64_t delta)
{
    if (delta != 0) {
        unsigned slot = axstm__thread_slot();
        axstm__slot_add(&s->counters[slot].value_bytes, (uint64_t)delta, slot);
    }
}

static inline void axstm__count_keys(axstm_store *s, int64_t delta)
{
    if (delta != 0) {
        unsigned slot = axstm__thread_slot();
        axstm__slot_add(&s->counters[slot].keys, (uint64_t)delta, slot);
    }
}

/* Passes code through, counting it when it is AXSTM_BUSY_RETRY. */
int axstm__busy(axstm_store *s, int code);

/* Checks a key: AXSTM_OK with *len set, AXSTM_EINVAL or AXSTM_E2BIG. */
static inline int axstm__check_key(const char *key, size_t *len)
{
    if (key == NULL || key[0] == '\0')
        return AXSTM_EINVAL;
    *len = strnlen(key, AXSTM_KEY_MAX + 1);
    return *len > AXSTM_KEY_MAX ? AXSTM_E2BIG : AXSTM_OK;
}

/* Checks every key of keys[0..n) (keys not NULL when n is not 0): the
 * first failing check's code, else AXSTM_OK. */
static inline int axstm__check_keys(const char *const keys[], size_t n)
{
    size_t len;
    for (size_t i = 0; i < n; i++) {
        int rc = axstm__check_key(keys[i], &len);
        if (rc != AXSTM_OK)
            return rc;
    }
    return AXSTM_OK;
}

/* memcpy, out of line (checkout.c): see axstm__copy_key. */
void axstm__copy_bytes(char *dst, const char *src, size_t len);

/* Copies the key of len bytes (checked) and a NUL to dst, for a handle.
 * Keys of 4 to 16 bytes, most of them, as two overlapping words: no call.
 * (A memcpy of a length gcc knows to be at most AXSTM_KEY_MAX may be
 * inlined as `rep movsq`, whose start-up cost is worse than the call: the
 * other lengths get an opaque-length call.) */
static inline void axstm__copy_key(char *dst, const char *key, size_t len)
{
    if (len >= 8 && len <= 16) {
        uint64_t head, tail;
        memcpy(&head, key, sizeof head);
        memcpy(&tail, key + len - 8, sizeof tail);
        memcpy(dst, &head, sizeof head);
        memcpy(dst + len - 8, &tail, sizeof tail);
    } else if (len >= 4 && len < 8) {
        uint32_t head, tail;
        memcpy(&head, key, sizeof head);
        memcpy(&tail, key + len - 4, sizeof tail);
        memcpy(dst, &head, sizeof head);
        memcpy(dst + len - 4, &tail, sizeof tail);
    } else {
        axstm__copy_bytes(dst, key, len);
    }
    dst[len] = '\0';
}

/* A private copy of one key: the state a handle checked out or will commit. */
struct axstm__item {
    struct axstm__entry *entry;
    /* What tells the state checked out from any later one of the key: the
     * lock word it was read under (entry.h), or on a Redis store the
     * server's incarnation number (with the version: redis.c). */
    uint64_t seen;
    uint64_t version;
    struct axstm__val val; /* owns one reference if it is a blob */
};

/*
 * The lock order of items: by entry address (commit.c locks in that order),
 * and among items of one entry the later in memory first: a transaction's
 * write log puts later writes higher, and its commit keeps the first item
 * of each entry.  Whether a goes after b:
 */
static inline bool axstm__item_after(const struct axstm__item *a, const struct axstm__item *b)
{
    if (a->entry != b->entry)
        return (uintptr_t)a->entry > (uintptr_t)b->entry;
    return (uintptr_t)a < (uintptr_t)b;
}

static inline int axstm__item_order(const void *a, const void *b)
{
    const struct axstm__item *x = *(struct axstm__item *const *)a;
    const struct axstm__item *y = *(struct axstm__item *const *)b;
    return axstm__item_after(x, y) ? 1 : axstm__item_after(y, x) ? -1 : 0;
}

/* Sorts items[0..n) into the lock order: the one sort of the library.  An
 * inline insertion sort for the handful of items most commits and
 * checkouts have, where qsort's calls of the comparison would cost more
 * than the sorting; qsort beyond. */
static inline void axstm__sort_items(struct axstm__item **items, size_t n)
{
    enum { SMALL = 16 };
    if (n > SMALL) {
        qsort(items, n, sizeof *items, axstm__item_order);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        struct axstm__item *x = items[i];
        size_t j = i;
        while (j > 0 && axstm__item_after(items[j - 1], x)) {
            items[j] = items[j - 1];
            j--;
        }
        items[j] = x;
    }
}

/*
 * A handle keeps its entry's address while it lives, but entries of keys
 * that are deleted are freed: the handle also keeps its key's name and the
 * table's removal count from when it found the entry (table.h).  While the
 * count is unchanged the entry is known to be there; otherwise the name is
 * looked up again, and a different entry means the key was deleted since
 * (AXSTM_CONCURRENT_UPDATE).
 */
struct axstm_value {
    struct axstm__item item;
    axstm_store *store;
    axstm_collection *owner; /* non-NULL: borrowed from this collection */
    uint64_t removals;       /* own handles; a collection keeps one for all */
    const char *key;         /* the handle's own copy */
    size_t keylen;
};

struct axstm_collection {
    size_t size; /* bytes allocated, for axstm__handle_free */
    axstm_store *store;
    size_t n;
    uint64_t removals;
    size_t cap;                 /* keys named: each array's length */
    axstm_value *values;        /* in order of first appearance */
    struct axstm__item **order; /* the same items sorted by entry: lock order */
    /* Scratch, so refresh needs no allocation: the arrays every checkout
     * and commit use.  The rest follow them in the same allocation, found
     * by collection.c from cap, so that a new collection sets up only
     * these pointers. */
    struct axstm__keyref *scratch_refs;
    uint64_t *scratch_vlock;
};

/* What axstm__snapshot answers when a key it reads is gone. */
#define AXSTM__KEY_GONE 1

/*
 * Takes one consistent snapshot of items[0..n) (sorted by entry, no
 * duplicates): on success each item's lock word, version and value are
 * replaced (the old values released); on failure nothing changes.
 * scratch arrays hold n elements.  Returns AXSTM_OK, AXSTM_BUSY_RETRY, or
 * AXSTM__KEY_GONE when a key is gone.  Caller pinned.
 */
int axstm__snapshot(axstm_store *s, struct axstm__item *const *items, size_t n,
                    uint64_t *scratch_vlock, uint64_t *scratch_version,
                    struct axstm__val *scratch_val);

/*
 * Brings the gone entries among entries[0..n) (distinct, each anchored by
 * the caller) back to life, as keys at version 0 with no value: what
 * axstm_usevar does to a missing key.  Never waits: a lock held elsewhere
 * is AXSTM_BUSY_RETRY, with nothing changed.  scratch holds n words.
 */
int axstm__revive(axstm_store *s, struct axstm__entry *const *entries, size_t n, uint64_t *scratch);

/*
 * Finds the entries of refs[0..n) (key and len filled in) for a checkout:
 * missing and gone keys get an entry, anchored, with anchored[i] set (the
 * caller revives them and then drops the anchors with
 * axstm__release_anchors).  anchored holds 2n flags (the second half is
 * scratch).  Returns AXSTM_OK, AXSTM_BUSY_RETRY or
 * AXSTM_ENOMEM (nothing anchored then).  Caller pinned.
 */
int axstm__find_for_checkout(axstm_store *s, struct axstm__keyref *refs, size_t n, bool *anchored);
void axstm__release_anchors(axstm_store *s, struct axstm__keyref *refs, size_t n,
                            const bool *anchored);

/*
 * Whether the entries of values[0..n), found when the table's removal
 * count was *removals, are still the entries of their keys (table.h);
 * refreshes *removals when they are.  The slow path pins for its lookups;
 * an entry freed after the count was read is still an entry (entry.h).
 */
bool axstm__still_there_slow(axstm_store *s, uint64_t *removals, const axstm_value *values,
                             size_t n);
static inline bool axstm__still_there(axstm_store *s, uint64_t *removals, const axstm_value *values,
                                      size_t n)
{
    /* Nothing taken out of the table since: nothing to look up. */
    return axstm__table_removals(&s->table) == *removals ||
           axstm__still_there_slow(s, removals, values, n);
}

/* A transaction's reads, validated by its commit. */
struct axstm__readset {
    const struct axstm__read *reads;
    size_t n;
};

/*
 * The one commit path (commit.c).  items[0..n) sorted by entry address, no
 * duplicates.  With rs NULL (handles), rejected iff some entry's version is
 * greater than its item's; otherwise (transactions) iff some key of rs
 * changed since it was read.  Then nothing is written.  On success every
 * item is published and its version set to the key's new version.  Returns
 * AXSTM_OK, AXSTM_CONCURRENT_UPDATE or AXSTM_BUSY_RETRY, counting each in the
 * store's counters.  scratch holds n words.  Allocates nothing.
 */
int axstm__commit(axstm_store *s, struct axstm__item *const *items, size_t n, uint64_t *scratch,
                  const struct axstm__readset *rs);

/*
 * The commit's step 1 and its undoing, for a reader that holds keys still
 * for an instant (checkout.c).  Locks the entry of every item of
 * items[0..n) (sorted by entry, no duplicates), each with a try-lock, and
 * keeps their words in old[0..n): AXSTM_OK, or AXSTM_BUSY_RETRY, holding
 * nothing, when one is held elsewhere or is the key the irrevocable
 * transaction waits to lock.  axstm__restore_locks unlocks them unchanged.
 */
int axstm__lock_all(axstm_store *s, struct axstm__item *const *items, size_t n, uint64_t *old);
void axstm__restore_locks(struct axstm__item *const *items, const uint64_t *old, size_t n);

/*
 * The commit of handles of a store in this process (commit.c): their items
 * in the lock order, distinct keys.  `there` is whether every handle's key
 * is still in the table (axstm__still_there, asked before): a key deleted
 * since is a conflict, found without locking anything; otherwise
 * axstm__commit's rule for handles decides.  scratch holds n words.
 */
int axstm__commit_handles(axstm_store *s, bool there, struct axstm__item *const *items, size_t n,
                          uint64_t *scratch);
/* The commit of one handle of its own (axstm_value_commit), on either
 * kind of store. */
int axstm__commit_handle(axstm_value *v);

/* Publishes items whose keys the caller already holds locked (an
 * irrevocable transaction), and unlocks them.  Cannot fail. */
void axstm__commit_locked(axstm_store *s, struct axstm__item *const *items, size_t n);

/*
 * Makes a watch over the keys of reads[0..n) (watch.c).  With
 * fire_if_changed, the watch is readable at once if a key has changed since
 * it was read.  Returns AXSTM_OK or AXSTM_ENOMEM.
 */
int axstm__watch_reads(axstm_store *s, const struct axstm__read *reads, size_t n,
                       bool fire_if_changed, axstm_watch **out);

/* A watch over keys[0..n) (lens[i] bytes each) on a remote store, made
 * once the store's subscriber is subscribed (watch.c, redis_listen.c);
 * AXSTM_EIO if it cannot be within the timeout.  _fire makes it
 * readable now. */
int axstm__watch_remote(axstm_store *s, const char *const keys[], const size_t lens[], size_t n,
                        axstm_watch **out);
void axstm__watch_remote_fire(axstm_watch *w);

#endif
