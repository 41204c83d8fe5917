/*
 * store.c -- the store's lifecycle, counters, key checks and foreach.
 */
#include "axstm-internal.h"

#include <sched.h>
#include <string.h>

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
    atomic_init(&s->clock, 0);
    for (size_t i = 0; i < AXSTM__ALL_SLOTS; i++) {
        struct axstm__counters *c = &s->counters[i];
        atomic_init(&c->commits, 0);
        atomic_init(&c->conflicts, 0);
        atomic_init(&c->busy, 0);
        atomic_init(&c->retries_waited, 0);
        atomic_init(&c->value_bytes, 0);
    }
    return s;
}

/* Drops an entry's reference to its value when the store goes away. */
static void drop_entry_value(struct axstm__entry *e)
{
    struct axstm__val v = axstm__entry_val_locked(e);
    axstm__val_release(&v);
}

AXSTM_API void axstm_store_free(axstm_store *s)
{
    if (s == NULL)
        return;
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
    int64_t value_bytes = 0;
    for (size_t i = 0; i < AXSTM__ALL_SLOTS; i++) {
        struct axstm__counters *c = &s->counters[i];
        st.commits += atomic_load_explicit(&c->commits, memory_order_relaxed);
        st.conflicts += atomic_load_explicit(&c->conflicts, memory_order_relaxed);
        st.busy += atomic_load_explicit(&c->busy, memory_order_relaxed);
        st.retries_waited += atomic_load_explicit(&c->retries_waited, memory_order_relaxed);
        value_bytes += (int64_t)atomic_load_explicit(&c->value_bytes, memory_order_relaxed);
    }
    st.keys = axstm__table_keys(&s->table);
    /* Per-thread sums can be momentarily negative while a thread that
     * published a blob has not yet been summed next to one that freed it. */
    st.bytes = sizeof *s + axstm__table_bytes(&s->table) + (value_bytes > 0 ? (uint64_t)value_bytes : 0);
    *out = st;
    return AXSTM_OK;
}

struct visit_ctx {
    axstm_visit_fn visit;
    void *arg;
};

static int visit_entry(struct axstm__entry *e, void *arg)
{
    struct visit_ctx *ctx = arg;
    uint64_t vlock, version;
    struct axstm__val val;
    size_t len;
    /* The one place that waits: a commit holds a key's lock for a few
     * instructions and never blocks while holding it. */
    while (axstm__entry_read(e, &vlock, &version, &val) != AXSTM_OK)
        sched_yield();
    /* The walk stays pinned, so a blob stays alive during the call; inline
     * bytes are read from our own copy. */
    const void *data = axstm__val_data(&val, &len);
    return ctx->visit(e->key, version, data, len, ctx->arg);
}

AXSTM_API int axstm_store_foreach(axstm_store *s, axstm_visit_fn visit, void *arg)
{
    if (s == NULL || visit == NULL)
        return AXSTM_EINVAL;
    struct visit_ctx ctx = {visit, arg};
    unsigned pin = axstm__epoch_pin(&s->epoch);
    int rc = axstm__table_foreach(&s->table, visit_entry, &ctx);
    axstm__epoch_unpin(&s->epoch, pin);
    return rc;
}
