/* SPDX-License-Identifier: MIT */
/*
 * collection.c -- collection handles (Axon's using): several keys checked
 * out as one consistent snapshot and committed all or nothing.
 */
#include "axstm-internal.h"

#include <stdint.h>
#include <string.h>

/*
 * One allocation holds the collection, all its arrays and a copy of every
 * key named (nkeys of them, keybytes bytes with their NULs):
 *
 *   values | refs | order | vlock | val | entries | version |
 *   positions | anchored (2 per key) | key copies
 *
 * widest elements first, so that each array stays aligned.  The collection
 * points at the first four (every checkout and commit uses them); the
 * others, scratch of the general checkout, are found from c->cap below.
 */
static axstm_collection *collection_new(axstm_store *s, size_t nkeys, size_t keybytes)
{
    size_t per_key = sizeof(axstm_value) + sizeof(struct axstm__item *) + 2 * sizeof(uint64_t) +
                     sizeof(struct axstm__val) + sizeof(struct axstm__keyref) +
                     sizeof(struct axstm__entry *) + sizeof(size_t) + 2 * sizeof(bool);
    if (nkeys > (SIZE_MAX / 2 - sizeof(axstm_collection)) / per_key || keybytes > SIZE_MAX / 2)
        return NULL;
    size_t size = sizeof(axstm_collection) + nkeys * per_key + keybytes;
    axstm_collection *c = axstm__handle_alloc(size);
    if (c == NULL)
        return NULL;
    c->size = size;
    c->store = s;
    c->n = 0;
    c->cap = nkeys;
    c->values = (axstm_value *)(void *)(c + 1);
    c->scratch_refs = (struct axstm__keyref *)(void *)(c->values + nkeys);
    c->order = (struct axstm__item **)(void *)(c->scratch_refs + nkeys);
    c->scratch_vlock = (uint64_t *)(void *)(c->order + nkeys);
    return c;
}

_Static_assert(sizeof(axstm_value) % _Alignof(struct axstm__keyref) == 0 &&
                   sizeof(struct axstm__keyref) % _Alignof(struct axstm__item *) == 0 &&
                   sizeof(struct axstm__val) % _Alignof(struct axstm__entry *) == 0,
               "each array of a collection starts aligned");

static struct axstm__val *scratch_val(const axstm_collection *c)
{
    return (struct axstm__val *)(void *)(c->scratch_vlock + c->cap);
}

static struct axstm__entry **scratch_entries(const axstm_collection *c)
{
    return (struct axstm__entry **)(void *)(scratch_val(c) + c->cap);
}

static uint64_t *scratch_version(const axstm_collection *c)
{
    return (uint64_t *)(void *)(scratch_entries(c) + c->cap);
}

static size_t *scratch_positions(const axstm_collection *c)
{
    return (size_t *)(void *)(scratch_version(c) + c->cap);
}

static bool *scratch_anchored(const axstm_collection *c)
{
    return (bool *)(void *)(scratch_positions(c) + c->cap);
}

static char *key_copies(axstm_collection *c)
{
    return (char *)(scratch_anchored(c) + 2 * c->cap);
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

_Static_assert(offsetof(axstm_value, item) == 0, "an item's address is its value's");

/* Where the value of `item`, one of c's, sits in c->values. */
static size_t value_index(const axstm_collection *c, const struct axstm__item *item)
{
    return (size_t)((const axstm_value *)(const void *)item - c->values);
}

/*
 * Gives c's values names of their own, copied from their entries: a value
 * may outlive its entry (a deleted key's is freed), and the caller's
 * strings may not outlive the call.  The entries' names are on the lines
 * the lookups just read, where copying the caller's strings before the
 * lookups cost bench/scale's one-thread using row 5-8%.  Caller pinned,
 * so the entries found are still there.
 */
static inline void name_from_entry(axstm_value *v, const struct axstm__entry *e, char **copy)
{
    axstm__copy_key(*copy, e->key, e->keylen);
    v->key = *copy;
    *copy += e->keylen + 1;
}

static void names_from_entries(axstm_collection *c)
{
    char *copy = key_copies(c);
    for (size_t k = 0; k < c->n; k++)
        name_from_entry(&c->values[k], c->values[k].item.entry, &copy);
}

/*
 * Fills c's values with the distinct entries of refs, in order of first
 * appearance, and c->order with them in the lock order: a value for every
 * key, sorted, and the repeats dropped.
 */
static void gather_distinct(axstm_collection *c, const struct axstm__keyref *refs, size_t n)
{
    size_t *position = scratch_positions(c);
    for (size_t i = 0; i < n; i++) {
        init_value(c, &c->values[i], &refs[i]);
        c->order[i] = &c->values[i].item;
    }
    axstm__sort_items(c->order, n);

    /* position[i]: 1 for the first appearance of an entry (the last of its
     * run: the lock order puts later items first), 0 for repeats... */
    for (size_t k = 0; k < n; k++)
        position[value_index(c, c->order[k])] =
            k + 1 == n || c->order[k + 1]->entry != c->order[k]->entry;
    /* ...then, for first appearances, where their values move to. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!position[i]) {
            position[i] = SIZE_MAX;
            continue;
        }
        c->values[m] = c->values[i];
        position[i] = m++;
    }
    c->n = m;
    /* The order still points where the values were: follow them. */
    size_t kept = 0;
    for (size_t k = 0; k < n; k++) {
        size_t moved_to = position[value_index(c, c->order[k])];
        if (moved_to != SIZE_MAX)
            c->order[kept++] = &c->values[moved_to].item;
    }
    names_from_entries(c);
}

/*
 * gather_distinct for a few keys, in one pass: each key is looked for
 * among the entries already taken (n^2 steps, fewer than sorting them all
 * up to a dozen keys or so); a new one is taken, named from its entry
 * (names_from_entries), and put into c->order at its place in the lock
 * order (axstm__item_after: the entries are distinct, so their addresses
 * alone), counted on the way.  Caller pinned.
 */
static AXSTM__ALWAYS_INLINE void gather_few(axstm_collection *c, const struct axstm__keyref *refs,
                                            size_t n)
{
    size_t m = 0;
    char *copy = key_copies(c);
    for (size_t i = 0; i < n; i++) {
        struct axstm__entry *e = refs[i].entry;
        size_t k = 0, below = 0;
        for (; k < m && c->values[k].item.entry != e; k++)
            below += (uintptr_t)c->values[k].item.entry < (uintptr_t)e;
        if (k < m)
            continue; /* a repeat */
        axstm_value *v = &c->values[m];
        init_value(c, v, &refs[i]);
        name_from_entry(v, e, &copy);
        struct axstm__item *carry = &v->item; /* moves the later ones up */
        for (k = below; k < m; k++) {
            struct axstm__item *next = c->order[k];
            c->order[k] = carry;
            carry = next;
        }
        c->order[m] = carry;
        m++;
    }
    c->n = m;
}

/* The distinct keys of refs[0..n) by name, for a remote store (it has no
 * entries to compare), into c's values in order of first appearance and
 * the same items into c->order: n^2 steps. */
static void take_by_name(axstm_collection *c, const struct axstm__keyref *refs, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < m && (c->values[k].keylen != refs[i].len ||
                         memcmp(c->values[k].key, refs[i].key, refs[i].len) != 0))
            k++;
        if (k < m)
            continue; /* a repeat */
        init_value(c, &c->values[m], &refs[i]);
        c->order[m] = &c->values[m].item;
        m++;
    }
    c->n = m;
}

/* Points c's values (distinct keys, in order) at the entries found for
 * them, keeping the old ones in `saved`, and sorts the lock order again. */
static void repoint(axstm_collection *c, const struct axstm__keyref *refs,
                    struct axstm__entry **saved)
{
    for (size_t i = 0; i < c->n; i++) {
        saved[i] = c->values[i].item.entry;
        c->values[i].item.entry = refs[i].entry;
    }
    axstm__sort_items(c->order, c->n);
}

static void repoint_back(axstm_collection *c, struct axstm__entry *const *saved)
{
    for (size_t i = 0; i < c->n; i++)
        c->values[i].item.entry = saved[i];
    axstm__sort_items(c->order, c->n);
}

/*
 * The common checkout of a fresh collection, of the keys of refs[0..nkeys)
 * (keys and lengths filled in), in one pass: every key is there and
 * alive, and its state is read straight into its value; a second look at
 * the lock words (two keys or more) proves them read at one instant, and
 * only then are the blobs read referenced.  Returns
 * AXSTM_OK, or (c then holding nothing, its values' states cleared) any
 * other code for the general path to take over: a key missing, gone,
 * dead or locked, or a snapshot spoiled by a commit.  Caller pinned.
 */
static int checkout_fresh(axstm_collection *c, struct axstm__keyref *refs, size_t nkeys)
{
    enum { SMALL = 8 };
    axstm_store *s = c->store;
    uint64_t removals = axstm__table_removals(&s->table); /* before the lookups */
    for (size_t i = 0; i < nkeys; i++) {
        axstm__table_find(&s->table, &refs[i]);
        if (refs[i].entry == NULL)
            return AXSTM__KEY_GONE;
    }
    if (nkeys <= SMALL)
        gather_few(c, refs, nkeys);
    else
        gather_distinct(c, refs, nkeys);
    uint64_t *vlock = c->scratch_vlock;
    size_t n = c->n;
    int rc = AXSTM_OK;
    for (size_t i = 0; i < n && rc == AXSTM_OK; i++) {
        struct axstm__item *it = c->order[i];
        rc = axstm__entry_read(it->entry, &vlock[i], &it->version, &it->val);
        it->seen = vlock[i];
        if (rc == AXSTM_OK && axstm__lock_gone(vlock[i]))
            rc = AXSTM__KEY_GONE;
    }
    for (size_t i = 0; i < n && n > 1 && rc == AXSTM_OK; i++)
        if (axstm__entry_vlock_acquire(c->order[i]->entry) != vlock[i])
            rc = AXSTM_BUSY_RETRY;
    for (size_t i = 0; i < n; i++) {
        struct axstm__item *it = c->order[i];
        if (rc == AXSTM_OK)
            axstm__val_retain(&it->val);
        else
            it->val = (struct axstm__val){0, 0}; /* no reference was taken */
    }
    if (rc == AXSTM_OK)
        c->removals = removals;
    else
        c->n = 0;
    return rc;
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
    bool *anchored = scratch_anchored(c);
    struct axstm__entry **saved = scratch_entries(c);
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
            struct axstm__entry **entries = (struct axstm__entry **)(void *)scratch_val(c);
            for (size_t i = 0; i < c->n; i++)
                entries[i] = c->order[i]->entry;
            rc = axstm__revive(s, entries, c->n, c->scratch_vlock);
        }
        axstm__release_anchors(s, refs, nkeys, anchored);
        if (rc == AXSTM_OK)
            rc = axstm__snapshot(s, c->order, c->n, c->scratch_vlock, scratch_version(c),
                                 scratch_val(c));
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

/* A remote store's checkout or commit of c's handles, which it takes as
 * an array of pointers to them: on the stack for a few. */
static int remote_call(axstm_collection *c, bool commit)
{
    enum { FEW = 8 };
    axstm_value *few[FEW];
    axstm_value **each = c->n <= FEW ? few : axstm__malloc(c->n * sizeof *each);
    if (each == NULL)
        return AXSTM_ENOMEM;
    for (size_t i = 0; i < c->n; i++)
        each[i] = &c->values[i];
    int rc = commit ? axstm__redis_commit(c->store->remote, each, c->n)
                    : axstm__redis_checkout(c->store->remote, each, c->n);
    if (each != few)
        axstm__free(each);
    return rc;
}

/*
 * A remote store's checkout: the distinct keys of refs[0..nkeys) by name
 * (there are no entries to compare), then one round trip.  On failure c
 * holds nothing.
 */
static int remote_checkout(axstm_collection *c, const struct axstm__keyref *refs, size_t nkeys)
{
    take_by_name(c, refs, nkeys);
    int rc = remote_call(c, false);
    if (rc != AXSTM_OK)
        c->n = 0;
    return rc;
}

AXSTM_API int axstm_using(axstm_store *s, const char *const keys[], size_t nkeys,
                          axstm_collection **out)
{
    if (s == NULL || out == NULL || (keys == NULL && nkeys != 0))
        return AXSTM_EINVAL;
    /* A few keys' references are made here, as the keys are checked, and
     * serve the common checkout as they are; the general paths take them
     * in the collection's scratch. */
    enum { FEW = 8 };
    struct axstm__keyref few[FEW];
    size_t keybytes = 0;
    for (size_t i = 0; i < nkeys; i++) {
        size_t len;
        int rc = axstm__check_key(keys[i], &len);
        if (rc != AXSTM_OK)
            return rc;
        keybytes += len + 1;
        if (i < FEW)
            few[i] = (struct axstm__keyref){keys[i], len, 0, NULL};
    }
    axstm_collection *c = collection_new(s, nkeys, keybytes);
    if (c == NULL)
        return AXSTM_ENOMEM;

    int rc = AXSTM__KEY_GONE; /* no checkout tried yet */
    bool remote = s->remote != NULL;
    unsigned pin = remote ? 0 : axstm__epoch_pin(&s->epoch);
    if (!remote && nkeys <= FEW)
        rc = checkout_fresh(c, few, nkeys);
    if (rc != AXSTM_OK) {
        /* A remote store's values need their names from the start; here
         * they are looked up by the caller's strings and take their names
         * from their entries once found (gather_few, names_from_entries). */
        char *copy = key_copies(c);
        for (size_t i = 0; i < nkeys; i++) {
            size_t len = i < FEW ? few[i].len : strlen(keys[i]);
            c->scratch_refs[i] = (struct axstm__keyref){keys[i], len, 0, NULL};
            if (remote) {
                axstm__copy_key(copy, keys[i], len);
                c->scratch_refs[i].key = copy;
                copy += len + 1;
            }
        }
        if (remote) {
            rc = remote_checkout(c, c->scratch_refs, nkeys);
        } else {
            if (nkeys > FEW)
                rc = checkout_fresh(c, c->scratch_refs, nkeys);
            if (rc != AXSTM_OK)
                rc = checkout(c, nkeys, true);
        }
    }
    if (!remote)
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

/* The commit's two rare cases, out of line so that the common one (keys
 * in this process, nothing taken out of the table since the checkout) is
 * a tail call with nothing to save: a remote store's, and one that must
 * first look its keys up (axstm__still_there). */
static AXSTM__NOINLINE int commit_remote(axstm_collection *c)
{
    return axstm__busy(c->store, remote_call(c, true));
}

static AXSTM__NOINLINE int commit_after_removals(axstm_collection *c)
{
    axstm_store *s = c->store;
    bool there = axstm__still_there_slow(s, &c->removals, c->values, c->n);
    return axstm__commit_handles(s, there, c->order, c->n, c->scratch_vlock);
}

AXSTM_API int axstm_collection_commit(axstm_collection *c)
{
    if (c == NULL)
        return AXSTM_EINVAL;
    if (c->n == 0)
        return AXSTM_OK;
    axstm_store *s = c->store;
    if (s->remote != NULL)
        return commit_remote(c);
    if (axstm__table_removals(&s->table) != c->removals)
        return commit_after_removals(c);
    return axstm__commit_handles(s, true, c->order, c->n, c->scratch_vlock);
}

AXSTM_API int axstm_collection_refresh(axstm_collection *c)
{
    if (c == NULL)
        return AXSTM_EINVAL;
    if (c->store->remote != NULL)
        return axstm__busy(c->store, remote_call(c, false));
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
