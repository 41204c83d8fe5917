/* SPDX-License-Identifier: MIT */
/*
 * entry.h -- one key's committed state, and the life of its entry.
 *
 * An entry holds one key's committed state, (version, value), guarded by a
 * version lock:
 *
 *   vlock = stamp << 2 | GONE << 1 | LOCKED
 *
 * A committer takes the lock (a compare-and-swap, never a wait), writes,
 * and releases it with a new stamp drawn from the store's clock, so the
 * word changes on every write and never repeats, not even across the
 * entries that the same memory holds one after another (table.c starts a
 * new entry at a stamp no older than any entry taken out of its shard).
 * Readers take no lock at all: they read vlock, the state, and vlock again
 * (a sequence lock); equal words with the lock bit clear mean the state
 * they read was committed.
 *
 * Keys come and go, so an entry has a life of its own:
 *   - live (GONE clear): the key exists, with or without a value;
 *   - gone (GONE set): the entry is in the table but the key does not
 *     exist.  It was deleted, or it was made to be created by a commit
 *     that has not happened yet, or somebody waits for the key to appear.
 *     A gone entry is brought back to life by the next commit that writes
 *     the key (or by axstm_usevar), at version 0;
 *   - dead (vlock == AXSTM__DEAD): a gone entry nobody waits on, anchors
 *     or is about to revive, taken out of the table by table.c and freed
 *     once no reader can still hold it (epoch reclamation).  Its word looks
 *     locked for good, so no commit can take it and readers look again.
 *     A freed entry keeps that word on its free list, and its memory is
 *     only ever reused as an entry, of a key born anew: a handle's commit,
 *     which holds its entry neither pinned nor in the fork gate (commit.c),
 *     may still try the lock of such an entry, and either fails or finds
 *     another word than its own, puts the word back and reports a conflict.
 *
 * So the lock word tells states apart, incarnations included: a handle
 * remembers the word it checked out under, and a commit of it is rejected
 * when the word has changed since (a commit, a delete, a rebirth, a new
 * key in the same memory), whatever the version numbers say (no ABA).
 * Within one incarnation a changed word means a higher version, which is
 * Axon's rule.  `waiters` and `anchors` keep a gone entry in the table: waiters for wake-ups
 * (wait.c), anchors for a caller that must not see it freed meanwhile
 * (creating a key, a foreach walk).
 *
 * The value itself, inline bytes or a shared blob, is blob.h's.
 */
#ifndef AXSTM_ENTRY_H
#define AXSTM_ENTRY_H

#include "axstm.h"
#include "blob.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct axstm__waitnode;

struct axstm__entry {
    _Atomic uint64_t vlock;
    /* Axon's per-key version in the low bits, and the kind of the value
     * (blob.h's meta: none, inline and its length, or a blob) in the top
     * AXSTM__VAL_STORED_BITS: both change only together, under the lock. */
    _Atomic uint64_t version;
    _Atomic uint64_t vword; /* the inline bytes, or the blob's address */
    /* The key's waiters (wait.h), on the cache line a commit already owns
     * (for all entries that fit one line), so checking for them costs a
     * commit nothing when nobody waits. */
    _Atomic(struct axstm__waitnode *) waiters;
    _Atomic uint16_t anchors;
    uint16_t keylen;
    char key[]; /* NUL-terminated */
};

/* 36 bytes before the key: a key of up to 11 bytes (12 with its NUL) fits
 * a 48-byte entry, one of up to 27 bytes a 64-byte one. */
_Static_assert(offsetof(struct axstm__entry, key) == 36, "no padding in an entry's header");

/* Versions count in the low 58 bits of their word, and wrap to 0 after
 * 2^58 - 1 commits of one key (nine years of a billion commits a second):
 * whether a handle is current is decided by the lock word (commit.c), so
 * a wrapped number changes what a caller is told, never what commits. */
#define AXSTM__VERSION_SHIFT (64 - AXSTM__VAL_STORED_BITS)
#define AXSTM__VERSION_MASK ((UINT64_C(1) << AXSTM__VERSION_SHIFT) - 1)
_Static_assert(((AXSTM__VAL_INLINE | AXSTM__VAL_BLOB | AXSTM__VAL_LEN) >> AXSTM__VAL_STORED_BITS) ==
                   0,
               "an entry's value kinds fit beside its version");

#define AXSTM__LOCKED UINT64_C(1)
#define AXSTM__GONE UINT64_C(2)
#define AXSTM__DEAD UINT64_MAX

/* The commit stamp a lock word carries, and whether it says "gone". */
static inline uint64_t axstm__lock_stamp(uint64_t vlock)
{
    return vlock >> 2;
}

/* The unlocked word of a key committed at stamp. */
static inline uint64_t axstm__lock_word(uint64_t stamp, bool gone)
{
    return stamp << 2 | (gone ? AXSTM__GONE : 0);
}

static inline bool axstm__lock_gone(uint64_t vlock)
{
    return (vlock & AXSTM__GONE) != 0;
}

/*
 * The fields, read and written only through what follows, so that every
 * argument about the order of memory accesses to entries is made in this
 * file.
 *
 * The lock word, three ways:
 *   _seq_cst: in one total order with the other sequentially consistent
 *     accesses: wait.h's wake-up protocol (a waiter links itself and then
 *     reads the word; a committer locks it and then reads the waiters),
 *     and the handshake between anchors, waiters and kills (below);
 *   _acquire: what the caller reads afterwards is no older than the word
 *     (checking that a key read earlier still holds what was read);
 *   _relaxed: the word of a key the caller holds locked, or a hint.
 */
static inline uint64_t axstm__entry_vlock_seq_cst(struct axstm__entry *e)
{
    return atomic_load(&e->vlock);
}

static inline uint64_t axstm__entry_vlock_acquire(struct axstm__entry *e)
{
    return atomic_load_explicit(&e->vlock, memory_order_acquire);
}

static inline uint64_t axstm__entry_vlock_relaxed(struct axstm__entry *e)
{
    return atomic_load_explicit(&e->vlock, memory_order_relaxed);
}

/* The version is written only by the holder of e's lock, and read either
 * by it (these) or inside axstm__entry_read's sequence lock: the lock
 * orders it, so it needs no order of its own. */
static inline uint64_t axstm__entry_version_locked(struct axstm__entry *e)
{
    return atomic_load_explicit(&e->version, memory_order_relaxed) & AXSTM__VERSION_MASK;
}

static inline void axstm__entry_set_version_locked(struct axstm__entry *e, uint64_t version)
{
    uint64_t word = atomic_load_explicit(&e->version, memory_order_relaxed);
    atomic_store_explicit(&e->version,
                          (word & ~AXSTM__VERSION_MASK) | (version & AXSTM__VERSION_MASK),
                          memory_order_relaxed);
}

/* The head of e's list of waiters (wait.h).  Written only under the wait
 * bucket's lock, sequentially consistent (the wake-up protocol, and the
 * kill below).  Read _seq_cst by committers (the protocol's other side)
 * and _relaxed by a writer holding the bucket's lock. */
static inline struct axstm__waitnode *axstm__entry_waiters_seq_cst(struct axstm__entry *e)
{
    return atomic_load(&e->waiters);
}

static inline struct axstm__waitnode *axstm__entry_waiters_relaxed(struct axstm__entry *e)
{
    return atomic_load_explicit(&e->waiters, memory_order_relaxed);
}

static inline void axstm__entry_set_waiters_seq_cst(struct axstm__entry *e,
                                                    struct axstm__waitnode *head)
{
    atomic_store(&e->waiters, head);
}

/* Makes the memory at e a gone entry of key (len bytes, checked) at stamp,
 * anchored once by its maker, before any other thread can reach it. */
static inline void axstm__entry_init(struct axstm__entry *e, uint64_t stamp, const char *key,
                                     size_t len)
{
    /* Atomic stores, not initialisation: the memory may be an entry that
     * was freed, which a stale handle's commit may still try to lock (it
     * finds the word gone, and puts it back: commit.c). */
    atomic_store_explicit(&e->version, 0, memory_order_relaxed); /* and no value */
    atomic_store_explicit(&e->vword, 0, memory_order_relaxed);
    atomic_store_explicit(&e->waiters, NULL, memory_order_relaxed);
    atomic_store_explicit(&e->anchors, 1, memory_order_relaxed);
    atomic_store_explicit(&e->vlock, stamp << 2 | AXSTM__GONE, memory_order_release);
    e->keylen = (uint16_t)len;
    memcpy(e->key, key, len);
    e->key[len] = '\0';
}

/* Whether e is gone at this instant (a hint: the state may change). */
static inline bool axstm__entry_gone(struct axstm__entry *e)
{
    return (atomic_load_explicit(&e->vlock, memory_order_acquire) & AXSTM__GONE) != 0;
}

/*
 * Reads one committed state of e without locking.  Returns AXSTM_OK with
 * the vlock word it was read under, or AXSTM_BUSY_RETRY when e is locked
 * (or keeps changing under us).  The caller must be pinned: a blob in *val
 * is only safe to use (or to take a reference on) while it stays pinned.
 */
static inline int axstm__entry_read(struct axstm__entry *e, uint64_t *vlock, uint64_t *version,
                                    struct axstm__val *val)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        /* Sequentially consistent (a plain load on x86): a transaction's
         * snapshot relies on it being ordered after its read of the clock. */
        uint64_t before = atomic_load(&e->vlock);
        if (before & AXSTM__LOCKED)
            return AXSTM_BUSY_RETRY;
        uint64_t ver = atomic_load_explicit(&e->version, memory_order_relaxed);
        uint64_t word = atomic_load_explicit(&e->vword, memory_order_acquire);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->vlock, memory_order_relaxed) == before) {
            *vlock = before;
            *version = ver & AXSTM__VERSION_MASK;
            val->word = word;
            val->meta = (uint32_t)(ver >> AXSTM__VERSION_SHIFT);
            return AXSTM_OK;
        }
    }
    return AXSTM_BUSY_RETRY;
}

/* The committed value of e, for a caller holding e's lock. */
static inline struct axstm__val axstm__entry_val_locked(struct axstm__entry *e)
{
    struct axstm__val v = {atomic_load_explicit(&e->vword, memory_order_relaxed),
                           (uint32_t)(atomic_load_explicit(&e->version, memory_order_relaxed) >>
                                      AXSTM__VERSION_SHIFT)};
    return v;
}

/* The committed version and value of e in one look at each word, for a
 * caller holding e's lock. */
static inline uint64_t axstm__entry_state_locked(struct axstm__entry *e, struct axstm__val *val)
{
    uint64_t ver = atomic_load_explicit(&e->version, memory_order_relaxed);
    val->word = atomic_load_explicit(&e->vword, memory_order_relaxed);
    val->meta = (uint32_t)(ver >> AXSTM__VERSION_SHIFT);
    return ver & AXSTM__VERSION_MASK;
}

/* Stores v (never a delete) as e's value at version (below 2^58), for a
 * caller holding e's lock: a commit's common write, each word once. */
static inline void axstm__entry_write_locked(struct axstm__entry *e, const struct axstm__val *v,
                                             uint64_t version)
{
    atomic_store_explicit(&e->version, version | (uint64_t)v->meta << AXSTM__VERSION_SHIFT,
                          memory_order_relaxed);
    atomic_store_explicit(&e->vword, v->word, memory_order_release);
}

/* Stores v (never a delete) as e's value, for a caller holding e's lock.
 * The release store publishes a blob's bytes to readers that load the
 * word. */
static inline void axstm__entry_store_val(struct axstm__entry *e, const struct axstm__val *v)
{
    uint64_t ver = atomic_load_explicit(&e->version, memory_order_relaxed) & AXSTM__VERSION_MASK;
    atomic_store_explicit(&e->version, ver | (uint64_t)v->meta << AXSTM__VERSION_SHIFT,
                          memory_order_relaxed);
    atomic_store_explicit(&e->vword, v->word, memory_order_release);
}

/* Takes e's lock if it is free at this instant; *old gets the word to
 * restore if nothing is written after all. */
static inline bool axstm__entry_trylock(struct axstm__entry *e, uint64_t *old)
{
    uint64_t w = atomic_load_explicit(&e->vlock, memory_order_relaxed);
    if (w & AXSTM__LOCKED)
        return false;
    /* Sequentially consistent: wait.h relies on a waiter either seeing this
     * lock or being seen by the committer's later load of e->waiters. */
    if (!atomic_compare_exchange_strong_explicit(&e->vlock, &w, w | AXSTM__LOCKED,
                                                 memory_order_seq_cst, memory_order_relaxed))
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

/* Releases e's lock after a write, with the commit's stamp; gone says
 * whether the key exists afterwards. */
static inline void axstm__entry_unlock(struct axstm__entry *e, uint64_t stamp, bool gone)
{
    atomic_store_explicit(&e->vlock, axstm__lock_word(stamp, gone), memory_order_release);
}

/* Anchors e: it stays in the table (it may still become gone).  Returns
 * false, with nothing held, when e is already dead: look the key up again.
 * The anchor is raised before the lock word is read, and table.c's
 * axstm__entry_kill takes the word before it reads the anchors (both
 * sequentially consistent): one of the two sees the other. */
static inline bool axstm__entry_anchor(struct axstm__entry *e)
{
    atomic_fetch_add(&e->anchors, 1);
    if (atomic_load(&e->vlock) != AXSTM__DEAD)
        return true;
    atomic_fetch_sub(&e->anchors, 1);
    return false;
}

static inline void axstm__entry_unanchor(struct axstm__entry *e)
{
    atomic_fetch_sub_explicit(&e->anchors, 1, memory_order_release);
}

/* Whether e is gone with nobody keeping it: worth taking out (a hint). */
static inline bool axstm__entry_unused(struct axstm__entry *e)
{
    uint64_t w = atomic_load_explicit(&e->vlock, memory_order_relaxed);
    return w != AXSTM__DEAD && (w & (AXSTM__GONE | AXSTM__LOCKED)) == AXSTM__GONE &&
           atomic_load_explicit(&e->waiters, memory_order_relaxed) == NULL &&
           atomic_load_explicit(&e->anchors, memory_order_relaxed) == 0;
}

/*
 * Marks e dead if it is gone, unlocked, and has no waiters and no anchors:
 * from then on no commit, waiter or anchor can take it.  *was gets the
 * word it had (its last stamp: see table.h on `removed_stamp`).  A waiter or anchor
 * raises its count before it reads the lock word, and this takes the word
 * before it reads the counts (all sequentially consistent): either it sees
 * them and gives the word back, or they see it dead.
 */
static inline bool axstm__entry_kill(struct axstm__entry *e, uint64_t *was)
{
    uint64_t w = atomic_load_explicit(&e->vlock, memory_order_relaxed);
    if (w == AXSTM__DEAD || (w & (AXSTM__GONE | AXSTM__LOCKED)) != AXSTM__GONE)
        return false;
    if (!atomic_compare_exchange_strong(&e->vlock, &w, AXSTM__DEAD))
        return false;
    if (atomic_load(&e->waiters) == NULL && atomic_load(&e->anchors) == 0) {
        *was = w;
        return true;
    }
    atomic_store(&e->vlock, w);
    return false;
}

#endif
