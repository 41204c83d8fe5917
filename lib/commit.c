/*
 * commit.c -- the one commit path, shared by values and collections.
 *
 * Top to bottom:
 *   1. lock every key, in address order, each with a try-lock: a lock held
 *      by someone else means AXSTM_BUSY_RETRY at once (nothing was written);
 *   2. validate: a key whose committed version is greater than the
 *      handle's means AXSTM_CONCURRENT_UPDATE (nothing was written);
 *   3. draw a stamp from the store clock;
 *   4. publish every key: its value (sharing the handle's blob, no copy) and
 *      the handle's version + 1;
 *   5. unlock with the stamp, so lock-free readers see the keys changed;
 *   6. retire the replaced blobs (freed once no reader can hold them).
 * A blob is published at most once, so its embedded retire node is used at
 * most once: a handle whose version is current holds either the entry's own
 * blob (then nothing is replaced) or a fresh one from axstm_value_set.
 * While all the keys are locked nobody can read a half-written set, which is
 * what makes a collection's commit atomic.
 */
#include "axstm-internal.h"

static void reclaim_entry_blob(struct axstm__retired *node, void *owner)
{
    struct axstm__blob *b = (struct axstm__blob *)node;
    axstm__count_value_bytes(owner, -(int64_t)axstm__blob_size(b->len));
    axstm__blob_unref(b);
}

static void restore_locks(struct axstm__item *const *items, const uint64_t *old, size_t n)
{
    for (size_t i = 0; i < n; i++)
        axstm__entry_restore(items[i]->entry, old[i]);
}

int axstm__commit(axstm_store *s, struct axstm__item *const *items, size_t n, uint64_t *old)
{
    int rc = AXSTM_OK;
    size_t locked = 0;

    for (; locked < n; locked++)
        if (!axstm__entry_trylock(items[locked]->entry, &old[locked])) {
            rc = AXSTM_BUSY_RETRY;
            break;
        }
    for (size_t i = 0; rc == AXSTM_OK && i < n; i++)
        if (atomic_load_explicit(&items[i]->entry->version, memory_order_relaxed) >
            items[i]->version)
            rc = AXSTM_CONCURRENT_UPDATE;
    if (rc != AXSTM_OK) {
        restore_locks(items, old, locked);
        axstm__count(s, rc == AXSTM_BUSY_RETRY ? AXSTM__BUSY : AXSTM__CONFLICTS);
        return rc;
    }

    uint64_t stamp = atomic_fetch_add_explicit(&s->clock, 1, memory_order_relaxed) + 1;
    int reclaim_due = 0;
    int64_t value_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        struct axstm__item *it = items[i];
        struct axstm__entry *e = it->entry;
        struct axstm__blob *replaced = atomic_load_explicit(&e->value, memory_order_relaxed);
        if (replaced != it->blob) {
            axstm__blob_ref(it->blob); /* the entry's own reference */
            atomic_store_explicit(&e->value, it->blob, memory_order_release);
            if (it->blob != NULL)
                value_bytes += (int64_t)axstm__blob_size(it->blob->len);
            if (replaced != NULL)
                reclaim_due |= axstm__epoch_retire(&s->epoch, &replaced->retire,
                                                   reclaim_entry_blob,
                                                   axstm__blob_size(replaced->len));
        }
        atomic_store_explicit(&e->version, it->version + 1, memory_order_relaxed);
    }
    for (size_t i = 0; i < n; i++) {
        axstm__entry_unlock(items[i]->entry, stamp);
        items[i]->version++;
    }

    axstm__count_value_bytes(s, value_bytes);
    axstm__count(s, AXSTM__COMMITS);
    if (reclaim_due)
        axstm__epoch_reclaim(&s->epoch);
    return AXSTM_OK;
}
