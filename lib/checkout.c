/* SPDX-License-Identifier: MIT */
/*
 * checkout.c -- reading keys into handles: finding (or creating) their
 * entries, and one consistent snapshot of several keys.  Shared by value
 * and collection handles (value.c, collection.c).
 */
#include "axstm-internal.h"

#include <string.h>

int axstm__find_for_checkout(axstm_store *s, struct axstm__keyref *refs, size_t n, bool *anchored)
{
    bool missing = false;
    for (size_t i = 0; i < n; i++) {
        anchored[i] = false;
        axstm__table_find(&s->table, &refs[i]);
        struct axstm__entry *e = refs[i].entry;
        /* A gone key is to be born again: anchor it so that it cannot be
         * taken out meanwhile; a dead one is on its way out: add anew. */
        if (e != NULL && axstm__entry_gone(e)) {
            if (axstm__entry_anchor(e))
                anchored[i] = true;
            else
                refs[i].entry = NULL;
        }
        missing |= refs[i].entry == NULL;
    }
    if (!missing)
        return AXSTM_OK;
    bool *added = anchored + n; /* the caller gave 2n flags */
    int rc = axstm__table_add(&s->table, refs, n, added);
    for (size_t i = 0; i < n; i++) {
        if (rc != AXSTM_OK && anchored[i])
            axstm__entry_unanchor(refs[i].entry);
        anchored[i] = rc == AXSTM_OK && (anchored[i] || added[i]);
    }
    return rc;
}

void axstm__release_anchors(axstm_store *s, struct axstm__keyref *refs, size_t n,
                            const bool *anchored)
{
    for (size_t i = 0; i < n; i++)
        if (anchored[i]) {
            axstm__entry_unanchor(refs[i].entry);
            /* A key that could not be born (a busy lock) leaves nothing. */
            axstm__table_remove(&s->table, refs[i].entry);
        }
}

void axstm__copy_bytes(char *dst, const char *src, size_t len)
{
    memcpy(dst, src, len);
}

bool axstm__still_there_slow(axstm_store *s, uint64_t *removals, const axstm_value *values,
                             size_t n)
{
    uint64_t now = axstm__table_removals(&s->table);
    if (now == *removals)
        return true;
    /* Pinned, for the table's arrays; the entries are only compared. */
    unsigned pin = axstm__epoch_pin(&s->epoch);
    bool there = true;
    for (size_t i = 0; i < n && there; i++) {
        struct axstm__keyref ref = {values[i].key, values[i].keylen, 0, NULL};
        axstm__table_find(&s->table, &ref);
        there = ref.entry == values[i].item.entry;
    }
    axstm__epoch_leave(&s->epoch, pin);
    if (there)
        *removals = now;
    return there;
}

/* Hands a consistent set of states to the items, releasing what they held.
 * Caller pinned (so the blobs are alive to take references on). */
static void adopt(struct axstm__item *const *items, size_t n, const uint64_t *vlock,
                  const uint64_t *version, const struct axstm__val *val)
{
    for (size_t i = 0; i < n; i++) {
        axstm__val_retain(&val[i]);
        axstm__val_release(&items[i]->val);
        items[i]->val = val[i];
        items[i]->version = version[i];
        items[i]->seen = vlock[i];
    }
}

/*
 * The fallback for a snapshot that commits keep spoiling (many keys under
 * steady writers): hold every key's lock for the instant of the read, as a
 * commit takes them (commit.c).  It still never waits: a lock held by
 * someone else is AXSTM_BUSY_RETRY.
 */
static int locked_snapshot(axstm_store *s, struct axstm__item *const *items, size_t n,
                           uint64_t *old, uint64_t *version, struct axstm__val *val)
{
    int rc = axstm__lock_all(s, items, n, old);
    if (rc != AXSTM_OK)
        return rc;
    bool gone = false;
    for (size_t i = 0; i < n; i++) {
        struct axstm__entry *e = items[i]->entry;
        gone |= axstm__lock_gone(old[i]);
        val[i] = axstm__entry_val_locked(e);
        version[i] = axstm__entry_version_locked(e);
    }
    if (!gone)
        adopt(items, n, old, version, val);
    axstm__restore_locks(items, old, n);
    return gone ? AXSTM__KEY_GONE : AXSTM_OK;
}

/*
 * A consistent snapshot without locks: read every key with its version-lock
 * word, then check that no word has changed.  Each key then held what was
 * read from its first read to the check, so all of them held it at once
 * (the instant between the last read and the first check).  A commit locks
 * all its keys before writing any, so it is seen whole or not at all.
 */
int axstm__snapshot(axstm_store *s, struct axstm__item *const *items, size_t n, uint64_t *vlock,
                    uint64_t *version, struct axstm__val *val)
{
    enum { OPTIMISTIC_ATTEMPTS = 4 };
    for (int attempt = 0; attempt < OPTIMISTIC_ATTEMPTS; attempt++) {
        bool stable = true;
        for (size_t i = 0; i < n; i++) {
            int rc = axstm__entry_read(items[i]->entry, &vlock[i], &version[i], &val[i]);
            if (rc != AXSTM_OK)
                return rc;
            if (axstm__lock_gone(vlock[i]))
                return AXSTM__KEY_GONE;
        }
        for (size_t i = 0; i < n && n > 1 && stable; i++)
            stable = axstm__entry_vlock_acquire(items[i]->entry) == vlock[i];
        if (stable) {
            adopt(items, n, vlock, version, val);
            return AXSTM_OK;
        }
    }
    return locked_snapshot(s, items, n, vlock, version, val);
}
