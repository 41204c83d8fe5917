/* SPDX-License-Identifier: MIT */
/*
 * store.c -- a store's life (new, free), its statistics (the per-thread
 * counters of axstm-internal.h, summed) and the walk over its keys
 * (foreach).
 */
#include "axstm-internal.h"

#include "address.h"
#include "fork.h"

#include <sched.h>

AXSTM_API axstm_store *axstm_store_new(void)
{
    axstm__fork_setup();
    axstm_store *s = axstm__aligned_alloc(_Alignof(axstm_store), sizeof *s);
    if (s == NULL)
        return NULL;
    axstm__epoch_init(&s->epoch, s);
    if (axstm__table_init(&s->table, &s->epoch) != AXSTM_OK) {
        axstm__free(s);
        return NULL;
    }
    if (axstm__wait_init(s->wait) != AXSTM_OK) {
        axstm__table_destroy(&s->table, NULL);
        axstm__free(s);
        return NULL;
    }
    if (pthread_mutex_init(&s->irrevocable, NULL) != 0) {
        axstm__wait_destroy(s->wait);
        axstm__table_destroy(&s->table, NULL);
        axstm__free(s);
        return NULL;
    }
    s->remote = NULL;
    atomic_init(&s->clock, 0);
    atomic_init(&s->irrevocable_wants, NULL);
    for (size_t i = 0; i < AXSTM__ALL_SLOTS; i++) {
        struct axstm__counters *c = &s->counters[i];
        atomic_init(&c->commits, 0);
        atomic_init(&c->conflicts, 0);
        atomic_init(&c->busy, 0);
        atomic_init(&c->retries_waited, 0);
        atomic_init(&c->value_bytes, 0);
        atomic_init(&c->keys, 0);
    }
    return s;
}

/* Drops an entry's reference to its value when the store goes away. */
static void drop_entry_value(struct axstm__entry *e)
{
    struct axstm__val v = axstm__entry_val_locked(e);
    axstm__val_release(&v);
}

AXSTM_API int axstm_store_open(const char *uri, axstm_store **out)
{
    struct axstm__address a;
    if (out == NULL)
        return AXSTM_EINVAL;
    int rc = axstm__address_parse(uri, &a);
    if (rc != AXSTM_OK)
        return rc;
    /* A remote store is still a whole store: its counters count the busy
     * answers, and the in-process parts simply stay empty. */
    axstm_store *s = axstm_store_new();
    if (s == NULL)
        rc = AXSTM_ENOMEM;
    else if (a.kind != AXSTM__ADDRESS_MEM)
        rc = axstm__redis_open(&a, &s->remote);
    axstm__address_free(&a);
    if (rc != AXSTM_OK) {
        axstm_store_free(s);
        return rc;
    }
    *out = s;
    return AXSTM_OK;
}

AXSTM_API void axstm_store_free(axstm_store *s)
{
    if (s == NULL)
        return;
    axstm__redis_close(s->remote);
    if (axstm__reclaim_wanted == &s->epoch)
        axstm__reclaim_wanted = NULL;
    axstm__epoch_drain(&s->epoch);
    axstm__table_destroy(&s->table, drop_entry_value);
    axstm__wait_destroy(s->wait);
    pthread_mutex_destroy(&s->irrevocable);
    axstm__free(s);
}

int axstm__busy(axstm_store *s, int code)
{
    if (code == AXSTM_BUSY_RETRY)
        axstm__count(s, AXSTM__BUSY);
    return code;
}

AXSTM_API int axstm_store_stats(axstm_store *s, axstm_stats *out)
{
    if (s == NULL || out == NULL)
        return AXSTM_EINVAL;
    axstm_stats st = {0};
    if (s->remote != NULL) {
        int rc = axstm__redis_stats(s->remote, &st);
        if (rc != AXSTM_OK)
            return axstm__busy(s, rc);
    }
    int64_t value_bytes = 0, keys = 0;
    for (size_t i = 0; i < AXSTM__ALL_SLOTS; i++) {
        struct axstm__counters *c = &s->counters[i];
        st.commits += atomic_load_explicit(&c->commits, memory_order_relaxed);
        st.conflicts += atomic_load_explicit(&c->conflicts, memory_order_relaxed);
        st.busy += atomic_load_explicit(&c->busy, memory_order_relaxed);
        st.retries_waited += atomic_load_explicit(&c->retries_waited, memory_order_relaxed);
        value_bytes += (int64_t)atomic_load_explicit(&c->value_bytes, memory_order_relaxed);
        keys += (int64_t)atomic_load_explicit(&c->keys, memory_order_relaxed);
    }
    if (s->remote == NULL) {
        st.keys = keys > 0 ? (uint64_t)keys : 0;
        /* Per-thread sums can be momentarily negative while a thread that
         * published a blob has not yet been summed next to one that freed
         * it. */
        st.bytes = sizeof *s + axstm__table_bytes(&s->table) +
                   (value_bytes > 0 ? (uint64_t)value_bytes : 0);
    }
    *out = st;
    return AXSTM_OK;
}

struct visit_ctx {
    axstm_visit_fn visit;
    void *arg;
};

/* One committed state of a live e, read lock-free: false if e is gone.
 * The one place that waits: a commit holds a key's lock for a few
 * instructions and never blocks while holding it.  Caller pinned. */
static bool read_live(struct axstm__entry *e, uint64_t *version, struct axstm__val *val)
{
    uint64_t vlock;
    while (axstm__entry_read(e, &vlock, version, val) != AXSTM_OK)
        sched_yield();
    return !axstm__lock_gone(vlock);
}

/* The walk when no list of entries can be had (out of memory): visits
 * pinned, as the walk did before it learnt to let go. */
static int visit_pinned(struct axstm__entry *e, void *arg)
{
    struct visit_ctx *ctx = arg;
    uint64_t version;
    struct axstm__val val;
    size_t len;
    if (!read_live(e, &version, &val))
        return 0;
    const void *data = axstm__val_data(&val, &len);
    return ctx->visit(e->key, version, data, len, ctx->arg);
}

/*
 * Visits entries[0..n) (anchored: they stay in the table, entry.h), each
 * unpinned during its visit, so that a visitor that takes its time (or
 * waits for another thread) does not hold up the reclamation of what other
 * threads replace meanwhile.  The visit gets its own reference on a blob,
 * or its own copy of inline bytes.  Drops every anchor.
 */
static int visit_anchored(axstm_store *s, struct axstm__entry **entries, size_t n,
                          const struct visit_ctx *ctx)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        struct axstm__entry *e = entries[i];
        uint64_t version;
        struct axstm__val val;
        unsigned pin = axstm__epoch_pin(&s->epoch);
        bool live = rc == 0 && read_live(e, &version, &val);
        if (live)
            axstm__val_retain(&val);
        axstm__epoch_unpin(&s->epoch, pin);
        if (live) {
            size_t len;
            const void *data = axstm__val_data(&val, &len);
            rc = ctx->visit(e->key, version, data, len, ctx->arg);
            axstm__val_release(&val);
        }
        pin = axstm__epoch_pin(&s->epoch);
        axstm__entry_unanchor(e);
        axstm__table_remove(&s->table, e); /* deleted while we held it */
        axstm__epoch_unpin(&s->epoch, pin);
    }
    return rc;
}

AXSTM_API int axstm_store_foreach(axstm_store *s, axstm_visit_fn visit, void *arg)
{
    if (s == NULL || visit == NULL)
        return AXSTM_EINVAL;
    if (s->remote != NULL)
        return axstm__busy(s, axstm__redis_foreach(s->remote, visit, arg));
    struct visit_ctx ctx = {visit, arg};
    int rc = 0;
    /* A shard at a time, so the list held is a 64th of the keys. */
    for (size_t i = 0; i < AXSTM__SHARDS && rc == 0; i++) {
        struct axstm__entry **entries;
        size_t n;
        unsigned pin = axstm__epoch_pin(&s->epoch);
        if (axstm__table_shard_entries(&s->table, i, &entries, &n) != AXSTM_OK) {
            rc = axstm__table_foreach_shard(&s->table, i, visit_pinned, &ctx);
            axstm__epoch_unpin(&s->epoch, pin);
            continue;
        }
        axstm__epoch_unpin(&s->epoch, pin);
        rc = visit_anchored(s, entries, n, &ctx);
        axstm__free(entries);
    }
    return rc;
}
