/* SPDX-License-Identifier: MIT */
/*
 * value.c -- value handles (Axon's usevar).
 */
#include "axstm-internal.h"

#include <stdlib.h>
#include <string.h>

/* Points v at entry e (found when the table's removal count was
 * removals) and reads it; on failure v is as it was.  One key needs no
 * snapshot (axstm__snapshot): its one read is consistent by itself, and
 * goes straight into v.  A dead entry (entry.h) reads as locked, but is
 * on its way out: AXSTM__KEY_GONE, so that the caller looks again.
 * Caller pinned. */
static inline int read_into(axstm_value *v, struct axstm__entry *e, uint64_t removals)
{
    uint64_t vlock, version;
    struct axstm__val val;
    int rc = axstm__entry_read(e, &vlock, &version, &val);
    if (rc != AXSTM_OK)
        return axstm__entry_gone(e) ? AXSTM__KEY_GONE : rc;
    if (axstm__lock_gone(vlock))
        return AXSTM__KEY_GONE;
    axstm__val_retain(&val);
    axstm__val_release(&v->item.val);
    v->item = (struct axstm__item){e, vlock, version, val};
    v->removals = removals;
    return AXSTM_OK;
}

/* Finds the entry of the key name (len bytes) for a checkout, creating it
 * or bringing it back to life (version 0, no value) when it is missing or
 * deleted.  *removals: the table's removal count before the lookup.
 * Caller pinned. */
static int find_or_birth(axstm_store *s, const char *name, size_t len, struct axstm__entry **entry,
                         uint64_t *removals)
{
    struct axstm__keyref ref = {name, len, 0, NULL};
    bool anchored[2];
    uint64_t vlock;
    *removals = axstm__table_removals(&s->table);
    int rc = axstm__find_for_checkout(s, &ref, 1, anchored);
    if (rc != AXSTM_OK)
        return rc;
    if (anchored[0])
        rc = axstm__revive(s, &ref.entry, 1, &vlock);
    axstm__release_anchors(s, &ref, 1, anchored);
    *entry = ref.entry;
    return rc;
}

/* Checks out v's key into v: finds it (creating it, or bringing it back
 * if it was deleted), then reads it.  The name is looked up as `name`, v's
 * key or the caller's string it was copied from: hashing a copy just made
 * would load what small stores have only begun to write, which the CPU
 * cannot forward, and stall on every checkout.  Caller pinned. */
static int checkout(axstm_store *s, axstm_value *v, const char *name)
{
    /* The common case first: the key is there, and is read as it is. */
    struct axstm__keyref found = {name, v->keylen, 0, NULL};
    uint64_t removals = axstm__table_removals(&s->table); /* before the lookup */
    axstm__table_find(&s->table, &found);
    if (found.entry != NULL) {
        int rc = read_into(v, found.entry, removals);
        if (rc != AXSTM__KEY_GONE)
            return rc;
    }
    /* A key deleted between being born and being read is simply born
     * again; a store that keeps deleting it answers BUSY_RETRY. */
    enum { ATTEMPTS = 4 };
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        struct axstm__entry *entry;
        int rc = find_or_birth(s, name, v->keylen, &entry, &removals);
        if (rc == AXSTM_OK)
            rc = read_into(v, entry, removals);
        if (rc != AXSTM__KEY_GONE)
            return rc;
    }
    return AXSTM_BUSY_RETRY;
}

AXSTM_API int axstm_usevar(axstm_store *s, const char *key, axstm_value **out)
{
    size_t len;
    if (s == NULL || out == NULL)
        return AXSTM_EINVAL;
    int rc = axstm__check_key(key, &len);
    if (rc != AXSTM_OK)
        return rc;
    axstm_value *v = axstm__handle_alloc(sizeof *v + len + 1);
    if (v == NULL)
        return AXSTM_ENOMEM;
    char *copy = (char *)(v + 1);
    axstm__copy_key(copy, key, len);
    v->item = (struct axstm__item){NULL, 0, 0, {0, 0}};
    v->store = s;
    v->owner = NULL;
    v->key = copy;
    v->keylen = len;

    if (s->remote != NULL) {
        rc = axstm__redis_checkout(s->remote, &v, 1);
    } else {
        unsigned pin = axstm__epoch_pin(&s->epoch);
        rc = checkout(s, v, key);
        axstm__epoch_unpin(&s->epoch, pin);
    }
    if (rc != AXSTM_OK) {
        axstm__handle_free(v, sizeof *v + len + 1);
        return axstm__busy(s, rc);
    }
    *out = v;
    return AXSTM_OK;
}

AXSTM_API const char *axstm_value_key(const axstm_value *v)
{
    return v != NULL ? v->key : NULL;
}

AXSTM_API uint64_t axstm_value_version(const axstm_value *v)
{
    return v != NULL ? v->item.version : 0;
}

AXSTM_API const void *axstm_value_data(const axstm_value *v, size_t *len)
{
    size_t n = 0;
    const void *data = v != NULL ? axstm__val_data(&v->item.val, &n) : NULL;
    if (len != NULL)
        *len = n;
    return data;
}

AXSTM_API int axstm_value_set(axstm_value *v, const void *data, size_t len)
{
    if (v == NULL || (data == NULL && len != 0))
        return AXSTM_EINVAL;
    if (len > AXSTM_VALUE_MAX)
        return AXSTM_E2BIG;
    return axstm__val_make(&v->item.val, data, len);
}

AXSTM_API int axstm_value_delete(axstm_value *v)
{
    if (v == NULL)
        return AXSTM_EINVAL;
    axstm__val_release(&v->item.val);
    v->item.val.meta = AXSTM__VAL_DELETE;
    return AXSTM_OK;
}

AXSTM_API int axstm_value_get_i64(const axstm_value *v, int64_t *out)
{
    if (v == NULL || out == NULL)
        return AXSTM_EINVAL;
    return axstm__val_get_i64(&v->item.val, out);
}

AXSTM_API int axstm_value_set_i64(axstm_value *v, int64_t x)
{
    if (v == NULL)
        return AXSTM_EINVAL;
    return axstm__val_make(&v->item.val, &x, sizeof x);
}

AXSTM_API int axstm_value_get_str(const axstm_value *v, const char **out)
{
    if (v == NULL || out == NULL)
        return AXSTM_EINVAL;
    size_t len;
    const char *data = axstm__val_data(&v->item.val, &len);
    if (data == NULL)
        return AXSTM_ENOVALUE;
    if (len == 0 || memchr(data, '\0', len) != data + len - 1)
        return AXSTM_ETYPE;
    *out = data;
    return AXSTM_OK;
}

AXSTM_API int axstm_value_set_str(axstm_value *v, const char *str)
{
    if (v == NULL || str == NULL)
        return AXSTM_EINVAL;
    size_t len = strnlen(str, AXSTM_VALUE_MAX);
    if (len >= AXSTM_VALUE_MAX)
        return AXSTM_E2BIG; /* with its NUL it would not fit */
    return axstm_value_set(v, str, len + 1);
}

AXSTM_API int axstm_value_commit(axstm_value *v)
{
    if (v == NULL || v->owner != NULL)
        return AXSTM_EINVAL;
    return axstm__commit_handle(v);
}

/* Whether two handles name the same key. */
static inline bool same_key(const axstm_value *a, const axstm_value *b)
{
    return a->keylen == b->keylen && memcmp(a->key, b->key, a->keylen) == 0;
}

static int by_name(const void *a, const void *b)
{
    const axstm_value *x = *(axstm_value *const *)a, *y = *(axstm_value *const *)b;
    if (x->keylen != y->keylen)
        return x->keylen < y->keylen ? -1 : 1;
    return memcmp(x->key, y->key, x->keylen);
}

/* Up to this many handles, axstm_values_commit works on the stack. */
#define FEW_VALUES 8

/* Whether values[0..n) name n distinct keys: pair by pair for a few, else
 * in a copy sorted by name (in scratch, room for n pointers). */
static bool distinct_keys(axstm_value *const *values, size_t n, axstm_value **scratch)
{
    if (n <= FEW_VALUES) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (same_key(values[i], values[j]))
                    return false;
        return true;
    }
    memcpy(scratch, values, n * sizeof *scratch);
    qsort(scratch, n, sizeof *scratch, by_name);
    for (size_t i = 1; i < n; i++)
        if (same_key(scratch[i - 1], scratch[i]))
            return false;
    return true;
}

/* The arrays a commit of n handles works in: lock order, lock words, and
 * a copy of the handles for distinct_keys (used for more than a few). */
struct values_scratch {
    struct axstm__item **items;
    uint64_t *old;
    axstm_value **names;
};

/*
 * One pass over n handles meant for a commit on s: each checked (NULL,
 * borrowed, or of another store: AXSTM_EINVAL), its item put in the lock
 * order (entry address) in items[].  *current: every handle found its
 * entry at the table's removal count `removals`, so each entry is still
 * its key's and distinct entries are distinct keys; *shared: two handles
 * have one entry.
 */
static AXSTM__ALWAYS_INLINE int order_handles(axstm_store *s, axstm_value *const *values, size_t n,
                                              struct axstm__item **items, uint64_t removals,
                                              bool *current, bool *shared)
{
    bool all_current = true, any_shared = false;
    for (size_t i = 0; i < n; i++) {
        axstm_value *v = values[i];
        if (v == NULL || v->owner != NULL || v->store != s)
            return AXSTM_EINVAL;
        all_current &= v->removals == removals;
        struct axstm__item *it = &v->item;
        size_t j = i;
        for (; j > 0 && (uintptr_t)items[j - 1]->entry > (uintptr_t)it->entry; j--)
            items[j] = items[j - 1];
        items[j] = it;
        any_shared |= j > 0 && items[j - 1]->entry == it->entry;
    }
    *current = all_current;
    *shared = any_shared;
    return AXSTM_OK;
}

/*
 * A commit of n >= 2 handles of s, a store in this process.  While every
 * handle's entry is current (order_handles) nothing needs looking up;
 * otherwise the names are compared, and each key looked up to see that it
 * is still there.
 */
static int commit_local(axstm_store *s, axstm_value *const *values, size_t n,
                        const struct values_scratch *x)
{
    bool current, shared_entry;
    int rc = order_handles(s, values, n, x->items, axstm__table_removals(&s->table), &current,
                           &shared_entry);
    if (rc != AXSTM_OK)
        return rc;
    bool there = current;
    if (!current || shared_entry) {
        if (!distinct_keys(values, n, x->names))
            return AXSTM_EINVAL;
        /* Two handles of one entry under two names: one of them is of a
         * key deleted since, whose entry now serves another. */
        there = !shared_entry;
        for (size_t i = 0; i < n && there; i++)
            there = axstm__still_there(s, &values[i]->removals, values[i], 1);
    }
    return axstm__commit_handles(s, there, x->items, n, x->old);
}

/* The same on a store kept in Redis: checked, and names compared. */
static int commit_remote(axstm_store *s, axstm_value *const *values, size_t n,
                         const struct values_scratch *x)
{
    for (size_t i = 0; i < n; i++)
        if (values[i] == NULL || values[i]->owner != NULL || values[i]->store != s)
            return AXSTM_EINVAL;
    if (!distinct_keys(values, n, x->names))
        return AXSTM_EINVAL;
    return axstm__busy(s, axstm__redis_commit(s->remote, values, n));
}

/* What axstm_values_commit and axstm_values_refresh answer for a list
 * that needs no work (none, or NULL where a handle should be), else
 * LIST_WORK. */
#define LIST_WORK 1
static int list_needs_work(axstm_value *const values[], size_t n)
{
    if (values == NULL)
        return n == 0 ? AXSTM_OK : AXSTM_EINVAL;
    if (n == 0)
        return AXSTM_OK;
    return values[0] == NULL ? AXSTM_EINVAL : LIST_WORK;
}

/* axstm_values_commit in every case: bad input, one handle, many, a
 * remote store, entries that may not be current. */
static AXSTM__NOINLINE int commit_general(axstm_value *const values[], size_t n)
{
    int rc = list_needs_work(values, n);
    if (rc != LIST_WORK)
        return rc;
    axstm_store *s = values[0]->store;
    if (n == 1)
        return values[0]->owner != NULL ? AXSTM_EINVAL : axstm__commit_handle(values[0]);
    if (n <= FEW_VALUES) {
        struct axstm__item *items[FEW_VALUES];
        uint64_t old[FEW_VALUES];
        struct values_scratch x = {items, old, NULL};
        return s->remote != NULL ? commit_remote(s, values, n, &x) : commit_local(s, values, n, &x);
    }
    /* Three arrays of n words: pointers are no wider than a word. */
    _Static_assert(sizeof(void *) <= sizeof(uint64_t), "a pointer fits a word");
    size_t each = 3 * sizeof(uint64_t);
    if (n > SIZE_MAX / each)
        return AXSTM_ENOMEM;
    uint64_t *block = axstm__malloc(n * each);
    if (block == NULL)
        return AXSTM_ENOMEM;
    struct values_scratch x = {(struct axstm__item **)(block + n), block,
                               (axstm_value **)(block + 2 * n)};
    rc = s->remote != NULL ? commit_remote(s, values, n, &x) : commit_local(s, values, n, &x);
    axstm__free(block);
    return rc;
}

AXSTM_API int axstm_values_commit(axstm_value *const values[], size_t n)
{
    /* The common commit here, everything else in commit_general: 2 to a
     * few handles of a store in this process, each entry current. */
    if (values == NULL || n - 2 > FEW_VALUES - 2 || values[0] == NULL ||
        values[0]->store->remote != NULL)
        return commit_general(values, n);
    axstm_store *s = values[0]->store;
    struct axstm__item *items[FEW_VALUES];
    uint64_t old[FEW_VALUES];
    bool current, shared_entry;
    if (order_handles(s, values, n, items, axstm__table_removals(&s->table), &current,
                      &shared_entry) != AXSTM_OK ||
        !current || shared_entry)
        return commit_general(values, n);
    return axstm__commit_handles(s, true, items, n, old);
}

/* ------------------------------------------------------------------ */
/* Refreshing several handles                                         */
/* ------------------------------------------------------------------ */

/* What a refresh of n handles works in: values_scratch's arrays, the
 * snapshot's, and each handle's entry and removal count before. */
struct refresh_scratch {
    struct values_scratch x;
    uint64_t *version;
    struct axstm__val *val;
    struct axstm__entry **entry;
    uint64_t *removals;
};

/* Finds v's key again (a key gone is born again), for a refresh: only the
 * handle's entry and removal count change, and the caller puts them back
 * unless the snapshot that follows succeeds.  Caller pinned. */
static int find_again(axstm_store *s, axstm_value *v)
{
    struct axstm__entry *entry;
    uint64_t removals;
    int rc = find_or_birth(s, v->key, v->keylen, &entry, &removals);
    if (rc == AXSTM_OK) {
        v->item.entry = entry;
        v->removals = removals;
    }
    return rc;
}

/*
 * A refresh of n >= 2 handles of s, a store in this process: one snapshot
 * of their entries while every entry is current; otherwise (or when a key
 * turns out gone) each key is found again first.  On failure every
 * handle is as it was.
 */
static int refresh_local(axstm_store *s, axstm_value *const *values, size_t n,
                         const struct refresh_scratch *r)
{
    enum { ATTEMPTS = 4 };
    for (size_t i = 0; i < n; i++) {
        if (values[i] == NULL || values[i]->owner != NULL || values[i]->store != s)
            return AXSTM_EINVAL;
        r->entry[i] = values[i]->item.entry;
        r->removals[i] = values[i]->removals;
    }
    if (!distinct_keys(values, n, r->x.names))
        return AXSTM_EINVAL;
    unsigned pin = axstm__epoch_pin(&s->epoch);
    int rc = AXSTM_BUSY_RETRY;
    bool find = false;
    for (int attempt = 0; attempt < ATTEMPTS; attempt++) {
        bool current, shared_entry;
        rc = order_handles(s, values, n, r->x.items, axstm__table_removals(&s->table), &current,
                           &shared_entry);
        if (rc == AXSTM_OK && (find || !current || shared_entry)) {
            for (size_t i = 0; i < n && rc == AXSTM_OK; i++)
                rc = find_again(s, values[i]);
            find = false;
            if (rc == AXSTM_OK)
                rc = order_handles(s, values, n, r->x.items, axstm__table_removals(&s->table),
                                   &current, &shared_entry);
        }
        if (rc == AXSTM_OK)
            rc = axstm__snapshot(s, r->x.items, n, r->x.old, r->version, r->val);
        if (rc != AXSTM__KEY_GONE)
            break;
        find = true; /* a key deleted since: found (born) again */
        rc = AXSTM_BUSY_RETRY;
    }
    axstm__epoch_unpin(&s->epoch, pin);
    for (size_t i = 0; i < n && rc != AXSTM_OK; i++) {
        values[i]->item.entry = r->entry[i];
        values[i]->removals = r->removals[i];
    }
    return rc;
}

/* The same on a store kept in Redis: one checkout script for them all. */
static int refresh_remote(axstm_store *s, axstm_value *const *values, size_t n,
                          const struct refresh_scratch *r)
{
    for (size_t i = 0; i < n; i++)
        if (values[i] == NULL || values[i]->owner != NULL || values[i]->store != s)
            return AXSTM_EINVAL;
    if (!distinct_keys(values, n, r->x.names))
        return AXSTM_EINVAL;
    return axstm__redis_checkout(s->remote, values, n);
}

AXSTM_API int axstm_values_refresh(axstm_value *const values[], size_t n)
{
    int rc = list_needs_work(values, n);
    if (rc != LIST_WORK)
        return rc;
    if (n == 1)
        return axstm_value_refresh(values[0]);
    axstm_store *s = values[0]->store;
    if (n <= FEW_VALUES) {
        struct axstm__item *items[FEW_VALUES];
        uint64_t old[FEW_VALUES], version[FEW_VALUES], removals[FEW_VALUES];
        struct axstm__val val[FEW_VALUES];
        struct axstm__entry *entry[FEW_VALUES];
        const struct refresh_scratch r = {{items, old, NULL}, version, val, entry, removals};
        rc = s->remote != NULL ? refresh_remote(s, values, n, &r) : refresh_local(s, values, n, &r);
        return axstm__busy(s, rc);
    }
    /* Six arrays of n words and one of n values. */
    size_t each = 6 * sizeof(uint64_t) + sizeof(struct axstm__val);
    if (n > SIZE_MAX / each)
        return AXSTM_ENOMEM;
    uint64_t *block = axstm__malloc(n * each);
    if (block == NULL)
        return AXSTM_ENOMEM;
    const struct refresh_scratch r = {
        {(struct axstm__item **)(block + n), block, (axstm_value **)(block + 2 * n)},
        block + 3 * n,
        (struct axstm__val *)(block + 6 * n),
        (struct axstm__entry **)(block + 4 * n),
        block + 5 * n};
    rc = s->remote != NULL ? refresh_remote(s, values, n, &r) : refresh_local(s, values, n, &r);
    axstm__free(block);
    return axstm__busy(s, rc);
}

AXSTM_API int axstm_value_refresh(axstm_value *v)
{
    if (v == NULL || v->owner != NULL)
        return AXSTM_EINVAL;
    if (v->store->remote != NULL)
        return axstm__busy(v->store, axstm__redis_checkout(v->store->remote, &v, 1));
    axstm_store *s = v->store;
    unsigned pin = axstm__epoch_pin(&s->epoch);
    /* Nothing taken out of the table since the handle found its entry:
     * the entry is still the key's, so it is read with no lookup (a key
     * deleted meanwhile reads as gone, and is looked up again). */
    uint64_t removals = axstm__table_removals(&s->table);
    int rc = removals == v->removals ? read_into(v, v->item.entry, removals) : AXSTM__KEY_GONE;
    if (rc == AXSTM__KEY_GONE)
        rc = checkout(s, v, v->key);
    axstm__epoch_unpin(&s->epoch, pin);
    return axstm__busy(s, rc);
}

AXSTM_API void axstm_value_free(axstm_value *v)
{
    if (v == NULL || v->owner != NULL)
        return;
    axstm__val_release(&v->item.val);
    axstm__handle_free(v, sizeof *v + v->keylen + 1);
}
