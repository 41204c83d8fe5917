/* SPDX-License-Identifier: MIT */
/*
 * commit.c -- the one commit path, shared by values, collections and
 * transactions.
 *
 * Top to bottom:
 *   1. lock every key written, in address order, each with a try-lock: a
 *      lock held by someone else means AXSTM_BUSY_RETRY at once (nothing
 *      was written);
 *   2. validate, by one of two rules (nothing is written if it fails):
 *      - handles (Axon): a key committed since the handle checked it out
 *        (its version is then greater than the handle's), or that is gone
 *        or was born again since, means AXSTM_CONCURRENT_UPDATE: all of
 *        them change the key's lock word (entry.h);
 *      - transactions: a key read whose lock word has changed since it was
 *        read (other than by our own lock) means AXSTM_CONCURRENT_UPDATE;
 *   3. choose a stamp: above the store clock and above every written key's
 *      current stamp (see below);
 *   4. publish every key: its value (inline bytes are copied, a blob is
 *      shared with the writer, not copied) and its version + 1.  A delete
 *      makes the key gone; a write to a gone key brings it back, born
 *      again at version 1;
 *   5. unlock with the stamp, so lock-free readers see the keys changed;
 *   6. wake whoever waits on those keys (one load per key when nobody does);
 *   7. retire the replaced blobs (freed once no reader can hold them), and
 *      take the deleted keys nobody waits on out of the table.
 * While all the keys are locked nobody can read a half-written set, which is
 * what makes a commit atomic.
 *
 * A blob is published at most once, so its embedded retire node is used at
 * most once: a writer whose version is current holds either the entry's own
 * blob (then nothing is replaced) or a fresh one.
 */
#include "axstm-internal.h"

#include "fork.h"

static void reclaim_entry_blob(struct axstm__retired *node, void *owner)
{
    struct axstm__blob *b = (struct axstm__blob *)node;
    axstm__count_value_bytes(owner, -(int64_t)axstm__blob_size(b->len));
    axstm__blob_unref(b);
}

static inline void restore_locks(struct axstm__item *const *items, const uint64_t *old, size_t n)
{
    for (size_t i = 0; i < n; i++)
        axstm__entry_restore(items[i]->entry, old[i]);
}

/* Step 1.  On failure the locks taken so far are released.  A key that
 * the irrevocable transaction is waiting to lock counts as locked: it is
 * let through (txn.c), however often we would have taken it first. */
static inline int lock_all(axstm_store *s, struct axstm__item *const *items, size_t n,
                           uint64_t *old)
{
    const struct axstm__entry *wanted =
        atomic_load_explicit(&s->irrevocable_wants, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        if (items[i]->entry == wanted || !axstm__entry_trylock(items[i]->entry, &old[i])) {
            restore_locks(items, old, i);
            return AXSTM_BUSY_RETRY;
        }
    return AXSTM_OK;
}

/* Step 1 and its undoing for checkout.c's locked snapshot (axstm-internal.h).
 * Wrappers, so that the commit path keeps its own calls inline. */
int axstm__lock_all(axstm_store *s, struct axstm__item *const *items, size_t n, uint64_t *old)
{
    return lock_all(s, items, n, old);
}

void axstm__restore_locks(struct axstm__item *const *items, const uint64_t *old, size_t n)
{
    restore_locks(items, old, n);
}

/* Step 2, handles: Axon's rule, as the lock word tells it (entry.h): the
 * word from before our lock is the one the item was checked out under (or
 * last committed with), and the key is not gone. */
static inline bool version_current(const struct axstm__item *it, uint64_t old)
{
    return old == it->seen && !axstm__lock_gone(old);
}

/* Steps 1 and 2 for handles, in one pass: each key is checked as soon as
 * it is locked (its version and incarnation change only under its lock,
 * so the check holds until the commit lets go).  On failure every lock
 * taken is released: AXSTM_BUSY_RETRY or AXSTM_CONCURRENT_UPDATE. */
static inline int lock_current(axstm_store *s, struct axstm__item *const *items, size_t n,
                               uint64_t *old)
{
    const struct axstm__entry *wanted =
        atomic_load_explicit(&s->irrevocable_wants, memory_order_relaxed);
    for (size_t i = 0; i < n; i++) {
        struct axstm__entry *e = items[i]->entry;
        if (e == wanted || !axstm__entry_trylock(e, &old[i])) {
            restore_locks(items, old, i);
            return AXSTM_BUSY_RETRY;
        }
        if (!version_current(items[i], old[i])) {
            restore_locks(items, old, i + 1);
            return AXSTM_CONCURRENT_UPDATE;
        }
    }
    return AXSTM_OK;
}

/* Where e is among the locked items (sorted by entry), or n. */
static size_t find_locked(struct axstm__item *const *items, size_t n, const struct axstm__entry *e)
{
    enum { FEW = 4 };
    if (n <= FEW) { /* a scan is cheaper than halving a few */
        size_t i = 0;
        while (i < n && items[i]->entry != e)
            i++;
        return i;
    }
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (items[mid]->entry == e)
            return mid;
        if ((uintptr_t)items[mid]->entry < (uintptr_t)e)
            lo = mid + 1;
        else
            hi = mid;
    }
    return n;
}

/* Step 2, transactions: every key read still holds what was read. */
static bool reads_current(struct axstm__item *const *items, size_t n, const uint64_t *old,
                          const struct axstm__readset *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        const struct axstm__read *r = &rs->reads[i];
        uint64_t now = axstm__entry_vlock_acquire(r->entry);
        if (now == r->vlock)
            continue;
        size_t k = (now & AXSTM__LOCKED) ? find_locked(items, n, r->entry) : n;
        if (k == n || old[k] != r->vlock)
            return false;
    }
    return true;
}

/*
 * Step 3.  A commit does not advance the store clock: on a busy store that
 * one shared counter would be written by every commit of every thread, and
 * commits of disjoint keys would contend on it.  The stamp only has to be
 *   - above each written key's current stamp, so that a key's lock word
 *     never repeats (what lock-free readers rely on), and
 *   - above the clock as read now, with every key already locked: then a
 *     transaction whose snapshot stamp rv is at least this stamp read the
 *     clock after it was advanced past it, which is after these locks were
 *     taken (all sequentially consistent), so it can never have seen one of
 *     these keys unlocked with its old value.
 * A transaction that meets a stamp above its snapshot advances the clock
 * itself (txn.c), so only transactions that actually race write it.
 * (publish reads the clock first and raises the stamp past each key's as
 * it goes through them.)
 */

/* Makes a gone entry (locked by the caller) a key again, at version 0.
 * The new stamp it is unlocked with tells it from its earlier lives. */
static void rebirth(struct axstm__entry *e)
{
    axstm__entry_set_version_locked(e, 0);
}

/* Step 7's second half: deleted keys that nobody waits on leave the
 * table now; those that cannot (a shard busy) go at its next rebuild. */
static void remove_deleted(axstm_store *s, struct axstm__item *const *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (items[i]->val.meta & AXSTM__VAL_DELETE)
            axstm__table_remove(&s->table, items[i]->entry);
}

/* What publish_rare counts up for the commit's end. */
struct publish_rare_tally {
    int reclaim_due;
    int64_t value_bytes, keys;
    bool deleted;
};

/* Step 4 for an item that shares, replaces or deletes a blob, deletes its
 * key or brings it back (was_gone): the entry's value, the retiring of the
 * blob it replaces, and the key's incarnation.  Out of line: a commit of
 * small values to live keys never comes here. */
static void publish_rare(axstm_store *s, struct axstm__item *it, struct axstm__val old,
                         bool was_gone, struct publish_rare_tally *t)
{
    static const struct axstm__val no_value = {0, 0};
    struct axstm__entry *e = it->entry;
    bool deleting = (it->val.meta & AXSTM__VAL_DELETE) != 0;
    const struct axstm__val *val = deleting ? &no_value : &it->val;
    struct axstm__blob *replaced = axstm__val_blob(&old);
    struct axstm__blob *published = axstm__val_blob(val);
    if (published == NULL || published != replaced) {
        if (published != NULL) {
            axstm__val_retain(val); /* the entry's own reference */
            t->value_bytes += (int64_t)axstm__blob_size(published->len);
        }
        axstm__entry_store_val(e, val);
        if (replaced != NULL)
            t->reclaim_due |= axstm__epoch_retire(&s->epoch, &replaced->retire, reclaim_entry_blob,
                                                  axstm__blob_size(replaced->len));
    }
    if (was_gone && !deleting) {
        rebirth(e);
        t->keys++;
    } else if (!was_gone && deleting) {
        t->keys--;
    }
    t->deleted |= deleting;
}

/* Steps 3 to 7 for items whose keys the caller has locked.  The common
 * item (a small value to a live key) is published in one loop that also
 * chooses the stamp; whatever involves blobs, deletes or rebirths goes to
 * publish_rare, and the counting it needs happens only when it was used. */
static AXSTM__ALWAYS_INLINE void publish(axstm_store *s, struct axstm__item *const *items, size_t n)
{
    unsigned gate = AXSTM__GATE_OUTSIDE; /* entered only for the rare items */
    uint64_t stamp = atomic_load(&s->clock) + 1;
    struct publish_rare_tally t; /* set up at the first rare item */
    bool rare = false, waited = false;
    for (size_t i = 0; i < n; i++) {
        struct axstm__item *it = items[i];
        struct axstm__entry *e = it->entry;
        uint64_t held = axstm__entry_vlock_relaxed(e);
        /* Step 6's look for waiters, taken now: the lock is held, which is
         * all the wake-up protocol asks (wait.h), and the common commit
         * (nobody waits) then needs no third pass over its keys. */
        waited |= axstm__entry_waiters_seq_cst(e) != NULL;
        if (axstm__lock_stamp(held) >= stamp)
            stamp = axstm__lock_stamp(held) + 1;
        struct axstm__val old;
        uint64_t version = axstm__entry_state_locked(e, &old);
        if (((old.meta | it->val.meta) & (AXSTM__VAL_BLOB | AXSTM__VAL_DELETE)) == 0 &&
            !axstm__lock_gone(held)) {
            it->version = (version + 1) & AXSTM__VERSION_MASK;
            axstm__entry_write_locked(e, &it->val, it->version);
        } else {
            /* What axstm_store_free walks changes from here: no fork may
             * copy it halfway (fork.h).  A fork being prepared does not
             * wait for us (we are not inside yet): we wait for it. */
            if (!rare) {
                gate = axstm__gate_enter_wait();
                t = (struct publish_rare_tally){0, 0, 0, false};
                rare = true;
            }
            publish_rare(s, it, old, axstm__lock_gone(held), &t);
            it->version = (axstm__entry_version_locked(e) + 1) & AXSTM__VERSION_MASK;
            axstm__entry_set_version_locked(e, it->version);
        }
    }
    /* Once unlocked, a key may be deleted and its entry freed, and a
     * waiter's registration with it: whatever is still to be done with
     * the entries (wake-ups, taking deleted keys out) is done pinned, from
     * before the unlock.  The common commit needs neither (a handle's
     * commit is not pinned otherwise: commit_handles). */
    bool after = waited || (rare && t.deleted);
    unsigned pin = after ? axstm__epoch_pin(&s->epoch) : 0;
    for (size_t i = 0; i < n; i++) {
        bool gone = (items[i]->val.meta & AXSTM__VAL_DELETE) != 0;
        items[i]->seen = axstm__lock_word(stamp, gone);
        axstm__entry_unlock(items[i]->entry, stamp, gone);
    }
    for (size_t i = 0; i < n && waited; i++)
        if (axstm__entry_waiters_seq_cst(items[i]->entry) != NULL)
            axstm__wake(items[i]->entry);

    axstm__count(s, AXSTM__COMMITS);
    if (rare) {
        axstm__count_value_bytes(s, t.value_bytes);
        axstm__count_keys(s, t.keys);
        if (t.deleted)
            remove_deleted(s, items, n);
        if (t.reclaim_due)
            axstm__epoch_reclaim_soon(&s->epoch);
    }
    if (after) /* the caller reclaims, if asked, once out of the gate */
        axstm__epoch_leave(&s->epoch, pin);
    if (gate != AXSTM__GATE_OUTSIDE)
        axstm__gate_leave(gate);
}

int axstm__commit(axstm_store *s, struct axstm__item *const *items, size_t n, uint64_t *old,
                  const struct axstm__readset *rs)
{
    int rc = lock_all(s, items, n, old);
    if (rc == AXSTM_OK) {
        bool valid = true;
        for (size_t i = 0; i < n && rs == NULL && valid; i++)
            valid = version_current(items[i], old[i]);
        if (valid && rs != NULL)
            valid = reads_current(items, n, old, rs);
        if (!valid) {
            restore_locks(items, old, n);
            rc = AXSTM_CONCURRENT_UPDATE;
        }
    }
    if (rc != AXSTM_OK)
        axstm__count(s, rc == AXSTM_BUSY_RETRY ? AXSTM__BUSY : AXSTM__CONFLICTS);
    else
        publish(s, items, n);
    return rc;
}

/* Steps 1 to 7 for handles of a store in this process, `there` saying
 * whether every handle's key is still in the table (axstm__still_there):
 * if not, the commit fails.  Inline in its two callers below: with n = 1
 * the compiler drops every loop. */
static AXSTM__ALWAYS_INLINE int commit_handles(axstm_store *s, bool there,
                                               struct axstm__item *const *items, size_t n,
                                               uint64_t *old)
{
    /* Neither pinned nor in the gate: a key deleted since the checkout
     * may have had its entry freed, even after still_there looked.  Entry
     * memory is only ever reused as an entry, and a freed one reads as
     * locked for good (table.c), so lock_current fails on it; on an entry
     * reused for a new key it finds the incarnation changed and puts the
     * lock word back (nobody else could change it meanwhile).  So nothing
     * but the lock word of an entry that is not ours is ever written.
     * Once all the keys are locked, nothing can free their entries until
     * publish lets go, and it pins before that if it still needs them. */
    int rc = there ? lock_current(s, items, n, old) : AXSTM_CONCURRENT_UPDATE;
    if (rc == AXSTM_OK)
        publish(s, items, n);
    else
        axstm__count(s, rc == AXSTM_BUSY_RETRY ? AXSTM__BUSY : AXSTM__CONFLICTS);
    axstm__epoch_reclaim_if_wanted(&s->epoch); /* asked for by publish */
    return rc;
}

int axstm__commit_handles(axstm_store *s, bool there, struct axstm__item *const *items, size_t n,
                          uint64_t *old)
{
    return commit_handles(s, there, items, n, old);
}

int axstm__commit_handle(axstm_value *v)
{
    axstm_store *s = v->store;
    if (s->remote != NULL)
        return axstm__busy(s, axstm__redis_commit(s->remote, &v, 1));
    struct axstm__item *items[1] = {&v->item};
    uint64_t old;
    return commit_handles(s, axstm__still_there(s, &v->removals, v, 1), items, 1, &old);
}

void axstm__commit_locked(axstm_store *s, struct axstm__item *const *items, size_t n)
{
    publish(s, items, n);
}

static int revive(axstm_store *s, struct axstm__entry *const *entries, size_t n, uint64_t *old);

int axstm__revive(axstm_store *s, struct axstm__entry *const *entries, size_t n, uint64_t *old)
{
    unsigned gate = axstm__gate_enter(); /* fork.h */
    if (gate == AXSTM__GATE_CLOSED)
        return AXSTM_BUSY_RETRY;
    int rc = revive(s, entries, n, old);
    axstm__gate_leave(gate);
    return rc;
}

static int revive(axstm_store *s, struct axstm__entry *const *entries, size_t n, uint64_t *old)
{
    /* Lock the gone ones; old[i] stays 0 for the others (a gone entry's
     * word is never 0). */
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        uint64_t w;
        old[i] = 0;
        if (!axstm__entry_gone(entries[i]))
            continue;
        if (!axstm__entry_trylock(entries[i], &w)) {
            while (i-- > 0)
                if (old[i] != 0)
                    axstm__entry_restore(entries[i], old[i]);
            return AXSTM_BUSY_RETRY;
        }
        if (!axstm__lock_gone(w)) { /* born meanwhile */
            axstm__entry_restore(entries[i], w);
            continue;
        }
        old[i] = w;
        any = true;
    }
    if (!any)
        return AXSTM_OK;
    uint64_t stamp = atomic_load(&s->clock) + 1;
    int64_t born = 0;
    for (size_t i = 0; i < n; i++)
        if (old[i] != 0 && axstm__lock_stamp(old[i]) >= stamp)
            stamp = axstm__lock_stamp(old[i]) + 1;
    for (size_t i = 0; i < n; i++)
        if (old[i] != 0) {
            rebirth(entries[i]);
            born++;
        }
    for (size_t i = 0; i < n; i++)
        if (old[i] != 0)
            axstm__entry_unlock(entries[i], stamp, false);
    /* No wake-up: a key coming into existence with no value is not a
     * commit of it (a watch fires on commits). */
    axstm__count_keys(s, born);
    return AXSTM_OK;
}
