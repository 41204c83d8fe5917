/* SPDX-License-Identifier: MIT */
/*
 * collection.c -- collection handles (Axon's using): several keys checked
 * out as one consistent snapshot and committed all or nothing.
 */
#include "axstm-internal.h"

#include <stdlib.h>
#include <string.h>

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

/*
 * One allocation holds the collection, all its arrays and a copy of every
 * key named (nkeys of them, keybytes bytes with their NULs).
 */
static axstm_collection *collection_new(axstm_store *s, size_t nkeys, size_t keybytes)
{
    size_t per_key = sizeof(axstm_value) + sizeof(struct axstm__item *) + 3 * sizeof(uint64_t) +
                     sizeof(struct axstm__val) + sizeof(struct axstm__keyref) +
                     sizeof(struct key_slot) + sizeof(size_t) + 2 * sizeof(bool);
    if (nkeys > (SIZE_MAX / 2 - sizeof(axstm_collection)) / per_key || keybytes > SIZE_MAX / 2)
        return NULL;
    size_t size = sizeof(axstm_collection) + nkeys * per_key + keybytes;
    axstm_collection *c = axstm__handle_alloc(size);
    if (c == NULL)
        return NULL;
    /* Widest elements first, so that each array stays aligned. */
    char *p = (char *)(c + 1);
    c->size = size;
    c->store = s;
    c->n = 0;
    c->values = (axstm_value *)p;
    p += nkeys * sizeof(axstm_value);
    c->scratch_refs = (struct axstm__keyref *)p;
    p += nkeys * sizeof(struct axstm__keyref);
    c->scratch_val = (struct axstm__val *)p;
    p += nkeys * sizeof(struct axstm__val);
    c->scratch_slots = p;
    p += nkeys * sizeof(struct key_slot);
    c->order = (struct axstm__item **)p;
    p += nkeys * sizeof(struct axstm__item *);
    c->scratch_vlock = (uint64_t *)p;
    p += nkeys * sizeof(uint64_t);
    c->scratch_version = (uint64_t *)p;
    p += nkeys * sizeof(uint64_t);
    c->scratch_born = (uint64_t *)p;
    p += nkeys * sizeof(uint64_t);
    c->scratch_positions = (size_t *)p;
    p += nkeys * sizeof(size_t);
    c->scratch_anchored = (bool *)p;
    return c;
}

static char *key_copies(axstm_collection *c, size_t nkeys)
{
    return (char *)(c->scratch_anchored + 2 * nkeys);
}

static void init_value(axstm_collection *c, axstm_value *v, const struct axstm__keyref *ref)
{
    v->item = (struct axstm__item){ref->entry, 0, 0, {0, 0}};
    v->store = c->store;
    v->owner = c;
    v->removals = 0;
    v->key = ref->key;
    v->keylen = ref->len;
}

/*
 * Fills c's values with the distinct entries of refs, in order of first
 * appearance, and c->order with them sorted by entry (the lock order).
 */
static void gather_distinct(axstm_collection *c, const struct axstm__keyref *refs, size_t n)
{
    struct key_slot *slots = c->scratch_slots;
    size_t *position = c->scratch_positions;
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
        init_value(c, &c->values[m], &refs[i]);
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
        init_value(c, v, &refs[i]);
        size_t j = m - 1;
        while (j > 0 && (uintptr_t)c->order[j - 1]->entry > (uintptr_t)e) {
            c->order[j] = c->order[j - 1];
            j--;
        }
        c->order[j] = &v->item;
    }
    c->n = m;
}

static int by_item_entry(const void *a, const void *b)
{
    const struct axstm__item *x = *(struct axstm__item *const *)a;
    const struct axstm__item *y = *(struct axstm__item *const *)b;
    return (uintptr_t)x->entry < (uintptr_t)y->entry ? -1 : (uintptr_t)x->entry > (uintptr_t)y->entry;
}

/* Points c's values (distinct keys, in order) at the entries found for
 * them, keeping the old ones in `saved`, and sorts the lock order again. */
static void repoint(axstm_collection *c, const struct axstm__keyref *refs,
                    struct key_slot *saved)
{
    for (size_t i = 0; i < c->n; i++) {
        saved[i].entry = c->values[i].item.entry;
        c->values[i].item.entry = refs[i].entry;
    }
    axstm__sort(c->order, c->n, sizeof *c->order, by_item_entry);
}

static void repoint_back(axstm_collection *c, const struct key_slot *saved)
{
    for (size_t i = 0; i < c->n; i++)
        c->values[i].item.entry = saved[i].entry;
    axstm__sort(c->order, c->n, sizeof *c->order, by_item_entry);
}

/*
 * Checks out the keys of c->scratch_refs[0..nkeys) (keys and lengths
 * filled in) into c: finds them, creating or bringing back the missing
 * ones, and takes one snapshot.  A fresh collection (from using) gathers
 * its distinct keys; a refresh has them already (nkeys == c->n, in the
 * order of c->values).  On failure c is as it was (a fresh one holds
 * nothing).  Caller pinned.
 */
static int checkout(axstm_collection *c, size_t nkeys, bool fresh)
{
    enum { ATTEMPTS = 4, SMALL = 8 };
    axstm_store *s = c->store;
    struct axstm__keyref *refs = c->scratch_refs;
    bool *anchored = c->scratch_anchored;
    struct key_slot *saved = c->scratch_slots;
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        for (size_t i = 0; i < nkeys; i++)
            refs[i].entry = NULL;
        uint64_t removals = axstm__table_removals(&s->table); /* before the lookups */
        int rc = axstm__find_for_checkout(s, refs, nkeys, anchored);
        if (rc != AXSTM_OK)
            return rc;
        if (!fresh)
            repoint(c, refs, saved);
        else if (nkeys <= SMALL)
            gather_few(c, refs, nkeys);
        else
            gather_distinct(c, refs, nkeys);
        bool any = false;
        for (size_t i = 0; i < nkeys; i++)
            any |= anchored[i];
        if (any) {
            /* scratch_val is free until the snapshot: it holds the
             * distinct entries for revive (a val is wider than a pointer). */
            struct axstm__entry **entries = (struct axstm__entry **)(void *)c->scratch_val;
            for (size_t i = 0; i < c->n; i++)
                entries[i] = c->order[i]->entry;
            rc = axstm__revive(s, entries, c->n, c->scratch_vlock);
        }
        axstm__release_anchors(s, refs, nkeys, anchored);
        if (rc == AXSTM_OK)
            rc = axstm__snapshot(s, c->order, c->n, c->scratch_vlock, c->scratch_version,
                                 c->scratch_born, c->scratch_val);
        if (rc == AXSTM_OK) {
            c->removals = removals;
            return AXSTM_OK;
        }
        if (!fresh)
            repoint_back(c, saved);
        if (rc != AXSTM__KEY_GONE)
            return rc;
    }
    return AXSTM_BUSY_RETRY;
}

AXSTM_API int axstm_using(axstm_store *s, const char *const keys[], size_t nkeys,
                          axstm_collection **out)
{
    if (s == NULL || out == NULL || (keys == NULL && nkeys != 0))
        return AXSTM_EINVAL;
    size_t keybytes = 0;
    for (size_t i = 0; i < nkeys; i++) {
        size_t len;
        int rc = axstm__check_key(keys[i], &len);
        if (rc != AXSTM_OK)
            return rc;
        keybytes += len + 1;
    }
    axstm_collection *c = collection_new(s, nkeys, keybytes);
    if (c == NULL)
        return AXSTM_ENOMEM;
    char *copy = key_copies(c, nkeys);
    for (size_t i = 0; i < nkeys; i++) {
        size_t len = strlen(keys[i]);
        axstm__copy_key(copy, keys[i], len);
        c->scratch_refs[i] = (struct axstm__keyref){copy, len, 0, NULL};
        copy += len + 1;
    }

    unsigned pin = axstm__epoch_pin(&s->epoch);
    int rc = checkout(c, nkeys, true);
    axstm__epoch_unpin(&s->epoch, pin);
    if (rc != AXSTM_OK) {
        axstm__handle_free(c, c->size); /* its values hold nothing: the checkout failed */
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
        if (strcmp(c->values[i].key, key) == 0)
            return &c->values[i];
    return NULL;
}

AXSTM_API int axstm_collection_commit(axstm_collection *c)
{
    if (c == NULL)
        return AXSTM_EINVAL;
    if (c->n == 0)
        return AXSTM_OK;
    axstm_store *s = c->store;
    int rc;
    unsigned pin = axstm__epoch_pin(&s->epoch);
    if (axstm__still_there(s, &c->removals, c->values, c->n)) {
        rc = axstm__commit(s, c->order, c->n, c->scratch_vlock, NULL);
    } else {
        axstm__count(s, AXSTM__CONFLICTS);
        rc = AXSTM_CONCURRENT_UPDATE;
    }
    axstm__epoch_unpin(&s->epoch, pin);
    return rc;
}

AXSTM_API int axstm_collection_refresh(axstm_collection *c)
{
    if (c == NULL)
        return AXSTM_EINVAL;
    for (size_t i = 0; i < c->n; i++)
        c->scratch_refs[i] = (struct axstm__keyref){c->values[i].key, c->values[i].keylen, 0, NULL};
    unsigned pin = axstm__epoch_pin(&c->store->epoch);
    int rc = checkout(c, c->n, false);
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
