/*
 * collection.c -- collection handles (Axon's using): several keys checked
 * out as one consistent snapshot and committed all or nothing.
 */
#include "axstm-internal.h"

#include <stdlib.h>
#include <string.h>

/* Hands a consistent set of states to the items, releasing what they held.
 * Caller pinned (so the blobs are alive to take references on). */
static void adopt(struct axstm__item *const *items, size_t n, const uint64_t *version,
                  const struct axstm__val *val)
{
    for (size_t i = 0; i < n; i++) {
        axstm__val_retain(&val[i]);
        axstm__val_release(&items[i]->val);
        items[i]->val = val[i];
        items[i]->version = version[i];
    }
}

/*
 * The fallback for a snapshot that commits keep spoiling (many keys under
 * steady writers): hold every key's lock for the instant of the read.  It
 * still never waits: a lock held by someone else is AXSTM_BUSY_RETRY.
 */
static int locked_snapshot(struct axstm__item *const *items, size_t n, uint64_t *old,
                           uint64_t *version, struct axstm__val *val)
{
    for (size_t i = 0; i < n; i++)
        if (!axstm__entry_trylock(items[i]->entry, &old[i])) {
            while (i-- > 0)
                axstm__entry_restore(items[i]->entry, old[i]);
            return AXSTM_BUSY_RETRY;
        }
    for (size_t i = 0; i < n; i++) {
        val[i] = axstm__entry_val_locked(items[i]->entry);
        version[i] = atomic_load_explicit(&items[i]->entry->version, memory_order_relaxed);
    }
    adopt(items, n, version, val);
    for (size_t i = 0; i < n; i++)
        axstm__entry_restore(items[i]->entry, old[i]);
    return AXSTM_OK;
}

/*
 * A consistent snapshot without locks: read every key with its version-lock
 * word, then check that no word has changed.  Each key then held what was
 * read from its first read to the check, so all of them held it at once
 * (the instant between the last read and the first check).  A commit locks
 * all its keys before writing any, so it is seen whole or not at all.
 */
int axstm__snapshot(axstm_store *s, struct axstm__item *const *items, size_t n,
                    uint64_t *vlock, uint64_t *version, struct axstm__val *val)
{
    enum { OPTIMISTIC_ATTEMPTS = 4 };
    (void)s;
    for (int attempt = 0; attempt < OPTIMISTIC_ATTEMPTS; attempt++) {
        bool stable = true;
        for (size_t i = 0; i < n; i++) {
            int rc = axstm__entry_read(items[i]->entry, &vlock[i], &version[i], &val[i]);
            if (rc != AXSTM_OK)
                return rc;
        }
        for (size_t i = 0; i < n && n > 1 && stable; i++)
            stable = atomic_load_explicit(&items[i]->entry->vlock, memory_order_acquire) ==
                     vlock[i];
        if (stable) {
            adopt(items, n, version, val);
            return AXSTM_OK;
        }
    }
    return locked_snapshot(items, n, vlock, version, val);
}

/* A key of the using() call, for finding duplicates. */
struct key_slot {
    struct axstm__entry *entry;
    size_t index; /* position in keys[] */
};

static int by_entry_then_index(const void *a, const void *b)
{
    const struct key_slot *x = a, *y = b;
    if (x->entry != y->entry)
        return (uintptr_t)x->entry < (uintptr_t)y->entry ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* One allocation holds the collection and all its arrays. */
static axstm_collection *collection_new(axstm_store *s, size_t n)
{
    size_t per_key = sizeof(axstm_value) + sizeof(struct axstm__item *) + 2 * sizeof(uint64_t) +
                     sizeof(struct axstm__val);
    if (n > (SIZE_MAX - sizeof(axstm_collection)) / per_key)
        return NULL;
    size_t size = sizeof(axstm_collection) + n * per_key;
    axstm_collection *c = axstm__handle_alloc(size);
    if (c == NULL)
        return NULL;
    char *p = (char *)(c + 1);
    c->size = size;
    c->store = s;
    c->n = 0;
    c->values = (axstm_value *)p;
    p += n * sizeof(axstm_value);
    c->order = (struct axstm__item **)p;
    p += n * sizeof(struct axstm__item *);
    c->scratch_vlock = (uint64_t *)p;
    p += n * sizeof(uint64_t);
    c->scratch_version = (uint64_t *)p;
    p += n * sizeof(uint64_t);
    c->scratch_val = (struct axstm__val *)p;
    return c;
}

/*
 * Fills c's values with the distinct entries of refs, in order of first
 * appearance, and c->order with them sorted by entry (the lock order).
 * slots and position are scratch of n elements each.
 */
static void gather_distinct(axstm_collection *c, const struct axstm__keyref *refs, size_t n,
                            struct key_slot *slots, size_t *position)
{
    for (size_t i = 0; i < n; i++)
        slots[i] = (struct key_slot){refs[i].entry, i};
    axstm__sort(slots, n, sizeof *slots, by_entry_then_index);

    /* position[i]: 1 for the first appearance of an entry, 0 for repeats... */
    for (size_t i = 0; i < n; i++)
        position[slots[i].index] = i == 0 || slots[i].entry != slots[i - 1].entry;
    /* ...then, for first appearances, the index of its value in c. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!position[i]) {
            position[i] = SIZE_MAX;
            continue;
        }
        axstm_value *v = &c->values[m];
        v->item = (struct axstm__item){refs[i].entry, 0, {0, 0}};
        v->store = c->store;
        v->owner = c;
        position[i] = m++;
    }
    c->n = m;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (position[slots[i].index] != SIZE_MAX)
            c->order[k++] = &c->values[position[slots[i].index]].item;
}

/*
 * gather_distinct for a few keys: the same result without sorting, by
 * looking for each entry among those already taken and inserting it into
 * the lock order in place (n^2 steps, fewer than a sort's calls up to a
 * dozen keys or so).
 */
static void gather_few(axstm_collection *c, const struct axstm__keyref *refs, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        struct axstm__entry *e = refs[i].entry;
        size_t k = 0;
        while (k < m && c->values[k].item.entry != e)
            k++;
        if (k < m)
            continue; /* a repeat */
        axstm_value *v = &c->values[m++];
        v->item = (struct axstm__item){e, 0, {0, 0}};
        v->store = c->store;
        v->owner = c;
        size_t j = m - 1;
        while (j > 0 && (uintptr_t)c->order[j - 1]->entry > (uintptr_t)e) {
            c->order[j] = c->order[j - 1];
            j--;
        }
        c->order[j] = &v->item;
    }
    c->n = m;
}

AXSTM_API int axstm_using(axstm_store *s, const char *const keys[], size_t nkeys,
                          axstm_collection **out)
{
    if (s == NULL || out == NULL || (keys == NULL && nkeys != 0))
        return AXSTM_EINVAL;

    /* Scratch for the lookup; on the stack for the common small case so a
     * checkout of a few keys makes no allocation but its handle (which the
     * handle cache usually serves). */
    enum { SMALL = 8 };
    struct axstm__keyref small_refs[SMALL];
    struct axstm__keyref *refs = small_refs;
    struct key_slot *slots = NULL;
    size_t *position = NULL;
    void *heap = NULL;
    size_t per_key = sizeof *refs + sizeof *slots + sizeof *position;
    for (size_t i = 0; i < nkeys; i++) {
        size_t len;
        int rc = axstm__check_key(keys[i], &len);
        if (rc != AXSTM_OK)
            return rc;
        if (i < SMALL)
            refs[i].len = len;
    }
    if (nkeys > SMALL) {
        if (nkeys > SIZE_MAX / per_key || (heap = axstm__malloc(nkeys * per_key)) == NULL)
            return AXSTM_ENOMEM;
        refs = heap;
        slots = (struct key_slot *)(refs + nkeys);
        position = (size_t *)(slots + nkeys);
        for (size_t i = 0; i < nkeys; i++)
            refs[i].len = strlen(keys[i]);
    }
    axstm_collection *c = collection_new(s, nkeys);
    if (c == NULL) {
        axstm__free(heap);
        return AXSTM_ENOMEM;
    }

    for (size_t i = 0; i < nkeys; i++)
        refs[i] = (struct axstm__keyref){keys[i], refs[i].len, 0, NULL};
    unsigned pin = axstm__epoch_pin(&s->epoch);
    int rc = axstm__table_find_or_create(&s->table, refs, nkeys);
    if (rc == AXSTM_OK) {
        if (nkeys <= SMALL)
            gather_few(c, refs, nkeys);
        else
            gather_distinct(c, refs, nkeys, slots, position);
        rc = axstm__snapshot(s, c->order, c->n, c->scratch_vlock, c->scratch_version,
                             c->scratch_val);
    }
    axstm__epoch_unpin(&s->epoch, pin);
    if (heap != NULL)
        axstm__free(heap);
    if (rc != AXSTM_OK) {
        axstm__handle_free(c, c->size); /* its values hold nothing: the snapshot failed */
        return axstm__busy(s, rc);
    }
    *out = c;
    return AXSTM_OK;
}

AXSTM_API size_t axstm_collection_size(const axstm_collection *c)
{
    return c != NULL ? c->n : 0;
}

AXSTM_API axstm_value *axstm_collection_at(axstm_collection *c, size_t i)
{
    return c != NULL && i < c->n ? &c->values[i] : NULL;
}

AXSTM_API axstm_value *axstm_collection_value(axstm_collection *c, const char *key)
{
    if (c == NULL || key == NULL)
        return NULL;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->values[i].item.entry->key, key) == 0)
            return &c->values[i];
    return NULL;
}

AXSTM_API int axstm_collection_commit(axstm_collection *c)
{
    if (c == NULL)
        return AXSTM_EINVAL;
    if (c->n == 0)
        return AXSTM_OK;
    return axstm__commit(c->store, c->order, c->n, c->scratch_vlock, NULL);
}

AXSTM_API int axstm_collection_refresh(axstm_collection *c)
{
    if (c == NULL)
        return AXSTM_EINVAL;
    unsigned pin = axstm__epoch_pin(&c->store->epoch);
    int rc = axstm__snapshot(c->store, c->order, c->n, c->scratch_vlock, c->scratch_version,
                             c->scratch_val);
    axstm__epoch_unpin(&c->store->epoch, pin);
    return axstm__busy(c->store, rc);
}

AXSTM_API void axstm_collection_free(axstm_collection *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++)
        axstm__val_release(&c->values[i].item.val);
    axstm__handle_free(c, c->size);
}
