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
 *      - handles (Axon): a key whose committed version is greater than the
 *        handle's, or that is gone or was born again since the handle
 *        checked it out (entry.h), means AXSTM_CONCURRENT_UPDATE;
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

/* Step 2, handles: Axon's rule, on the incarnation checked out.  Keys
 * locked; old holds their words from before. */
static bool versions_current(struct axstm__item *const *items, size_t n, const uint64_t *old)
{
    for (size_t i = 0; i < n; i++) {
        struct axstm__entry *e = items[i]->entry;
        if (axstm__lock_gone(old[i]) || axstm__entry_born_locked(e) != items[i]->born ||
            axstm__entry_version_locked(e) > items[i]->version)
            return false;
    }
    return true;
}

/* Where e is among the locked items (sorted by entry), or n. */
static size_t find_locked(struct axstm__item *const *items, size_t n, const struct axstm__entry *e)
{
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
 */
static uint64_t choose_stamp(axstm_store *s, struct axstm__item *const *items, size_t n)
{
    uint64_t stamp = atomic_load(&s->clock) + 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t held = axstm__lock_stamp(axstm__entry_vlock_relaxed(items[i]->entry));
        if (held >= stamp)
            stamp = held + 1;
    }
    return stamp;
}

/* Makes a gone entry (locked by the caller) a key again: a new
 * incarnation at version 0 with no value. */
static void rebirth(axstm_store *s, struct axstm__entry *e)
{
    uint64_t born = atomic_fetch_add_explicit(&s->births, 1, memory_order_relaxed) + 1;
    axstm__entry_set_born_locked(e, born);
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

/* Steps 3 to 7 for items whose keys the caller has locked. */
static void publish(axstm_store *s, struct axstm__item *const *items, size_t n)
{
    static const struct axstm__val no_value = {0, 0};
    uint64_t stamp = choose_stamp(s, items, n);
    int reclaim_due = 0;
    int64_t value_bytes = 0, keys = 0;
    bool deleted = false;
    for (size_t i = 0; i < n; i++) {
        struct axstm__item *it = items[i];
        struct axstm__entry *e = it->entry;
        bool was_gone = axstm__lock_gone(axstm__entry_vlock_relaxed(e));
        bool deleting = (it->val.meta & AXSTM__VAL_DELETE) != 0;
        const struct axstm__val *val = deleting ? &no_value : &it->val;
        struct axstm__val old = axstm__entry_val_locked(e);
        struct axstm__blob *replaced = axstm__val_blob(&old);
        struct axstm__blob *published = axstm__val_blob(val);
        if (published == NULL || published != replaced) {
            if (published != NULL) {
                axstm__val_retain(val); /* the entry's own reference */
                value_bytes += (int64_t)axstm__blob_size(published->len);
            }
            axstm__entry_store_val(e, val);
            if (replaced != NULL)
                reclaim_due |= axstm__epoch_retire(&s->epoch, &replaced->retire, reclaim_entry_blob,
                                                   axstm__blob_size(replaced->len));
        }
        if (was_gone && !deleting) {
            rebirth(s, e);
            keys++;
        } else if (!was_gone && deleting) {
            keys--;
        }
        deleted |= deleting;
        it->born = axstm__entry_born_locked(e);
        it->version = axstm__entry_version_locked(e) + 1;
        axstm__entry_set_version_locked(e, it->version);
    }
    for (size_t i = 0; i < n; i++)
        axstm__entry_unlock(items[i]->entry, stamp, (items[i]->val.meta & AXSTM__VAL_DELETE) != 0);
    for (size_t i = 0; i < n; i++)
        if (axstm__entry_waiters_seq_cst(items[i]->entry) != NULL)
            axstm__wake(items[i]->entry);

    axstm__count_value_bytes(s, value_bytes);
    axstm__count_keys(s, keys);
    axstm__count(s, AXSTM__COMMITS);
    if (deleted)
        remove_deleted(s, items, n);
    if (reclaim_due)
        axstm__epoch_reclaim_soon(&s->epoch);
}

int axstm__commit(axstm_store *s, struct axstm__item *const *items, size_t n, uint64_t *old,
                  const struct axstm__readset *rs)
{
    /* No fork may copy the store halfway through (fork.h). */
    unsigned gate = axstm__gate_enter();
    if (gate == AXSTM__GATE_CLOSED) {
        axstm__count(s, AXSTM__BUSY);
        return AXSTM_BUSY_RETRY;
    }
    int rc = lock_all(s, items, n, old);
    if (rc == AXSTM_OK) {
        bool valid =
            rs == NULL ? versions_current(items, n, old) : reads_current(items, n, old, rs);
        if (!valid) {
            restore_locks(items, old, n);
            rc = AXSTM_CONCURRENT_UPDATE;
        }
    }
    if (rc != AXSTM_OK)
        axstm__count(s, rc == AXSTM_BUSY_RETRY ? AXSTM__BUSY : AXSTM__CONFLICTS);
    else
        publish(s, items, n);
    axstm__gate_leave(gate);
    return rc;
}

void axstm__commit_locked(axstm_store *s, struct axstm__item *const *items, size_t n)
{
    unsigned gate = axstm__gate_enter_wait();
    publish(s, items, n);
    axstm__gate_leave(gate);
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
            rebirth(s, entries[i]);
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
