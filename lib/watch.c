/*
 * watch.c -- watch handles: a descriptor that becomes readable when a
 * watched key is committed, for event loops.
 *
 * A watch is a waiter of wait.c whose notification is a write to an
 * eventfd, and which stays registered until freed.  Re-arming reads the
 * eventfd's counter back to zero.  A watched key that does not exist (or
 * is deleted) keeps a gone entry (entry.h) in the table while the watch
 * lives, so that the commit that makes it appear finds the watch.
 */
#include "axstm-internal.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct axstm_watch {
    axstm_store *store;
    struct axstm__waiter waiter; /* only waiter.fd is used */
    struct axstm__waitnode *nodes;
    size_t n;
};

/* A watch with its descriptor and nodes allocated but not registered yet:
 * everything that can fail, done before anything is changed. */
static int watch_alloc(axstm_store *s, size_t n, axstm_watch **out)
{
    axstm_watch *w = axstm__malloc(sizeof *w);
    if (w == NULL)
        return AXSTM_ENOMEM;
    w->store = s;
    w->n = n;
    atomic_init(&w->waiter.fired, false);
    w->nodes = axstm__wait_nodes_new(n);
    w->waiter.fd = w->nodes != NULL ? eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : -1;
    if (w->waiter.fd < 0) {
        axstm__free(w->nodes);
        axstm__free(w);
        return AXSTM_ENOMEM;
    }
    *out = w;
    return AXSTM_OK;
}

static void watch_discard(axstm_watch *w)
{
    close(w->waiter.fd);
    axstm__free(w->nodes);
    axstm__free(w);
}

int axstm__watch_reads(axstm_store *s, const struct axstm__read *reads, size_t n,
                       bool fire_if_changed, axstm_watch **out)
{
    axstm_watch *w;
    int rc = watch_alloc(s, n, &w);
    if (rc != AXSTM_OK)
        return rc;
    axstm__wait_link(s->wait, &w->waiter, reads, n, w->nodes);
    /* A commit that landed between the reads and the registration would
     * otherwise go unnoticed (so would an entry left out as dead). */
    if (fire_if_changed && axstm__reads_changed(reads, n))
        axstm__waiter_notify(&w->waiter);
    *out = w;
    return AXSTM_OK;
}

/* Takes out the gone entries that only w's nodes[0..n) kept.  Pinned, and
 * called before the nodes let go of them. */
static void unregister_and_tidy(axstm_store *s, struct axstm__waitnode *nodes, size_t n)
{
    struct axstm__entry *small[16], **entries = n <= 16 ? small : axstm__malloc(n * sizeof *entries);
    for (size_t i = 0; entries != NULL && i < n; i++)
        entries[i] = axstm__wait_node_entry(nodes, i);
    axstm__wait_unregister(s->wait, nodes, n);
    /* Without the list (out of memory) they wait for a table rebuild. */
    for (size_t i = 0; entries != NULL && i < n; i++)
        if (entries[i] != NULL)
            axstm__table_remove(&s->table, entries[i]);
    if (entries != small)
        axstm__free(entries);
}

/* Registers w's node i on the entry of key (len bytes), adding a gone one
 * when the key does not exist.  Caller pinned. */
static int watch_key(axstm_store *s, axstm_watch *w, size_t i, const char *key, size_t len)
{
    struct axstm__waitnode *node = (struct axstm__waitnode *)((char *)w->nodes +
                                                              i * axstm__wait_node_size());
    for (;;) {
        struct axstm__keyref ref = {key, len, 0, NULL};
        bool anchored = false;
        axstm__table_find(&s->table, &ref);
        if (ref.entry == NULL) {
            int rc = axstm__table_add(&s->table, &ref, 1, &anchored);
            if (rc != AXSTM_OK)
                return rc;
        }
        bool linked = axstm__wait_link_one(s->wait, &w->waiter, ref.entry, node);
        if (anchored)
            axstm__entry_unanchor(ref.entry);
        if (linked)
            return AXSTM_OK;
        /* It died as we came: look again (it is out of the table now). */
    }
}

AXSTM_API int axstm_watch_new(axstm_store *s, const char *const keys[], size_t nkeys,
                              axstm_watch **out)
{
    if (s == NULL || out == NULL || (keys == NULL && nkeys != 0))
        return AXSTM_EINVAL;
    size_t len;
    for (size_t i = 0; i < nkeys; i++) {
        int rc = axstm__check_key(keys[i], &len);
        if (rc != AXSTM_OK)
            return rc;
    }
    /* Allocate first: a failed call must leave the store as it was. */
    axstm_watch *w;
    int rc = watch_alloc(s, nkeys, &w);
    if (rc != AXSTM_OK)
        return rc;

    unsigned pin = axstm__epoch_pin(&s->epoch);
    size_t done = 0;
    for (; done < nkeys && rc == AXSTM_OK; done++)
        rc = watch_key(s, w, done, keys[done], strlen(keys[done]));
    if (rc != AXSTM_OK)
        unregister_and_tidy(s, w->nodes, done);
    axstm__epoch_unpin(&s->epoch, pin);
    if (rc != AXSTM_OK) {
        watch_discard(w);
        return axstm__busy(s, rc);
    }
    *out = w;
    return AXSTM_OK;
}

AXSTM_API int axstm_watch_fd(const axstm_watch *w)
{
    return w != NULL ? w->waiter.fd : AXSTM_EINVAL;
}

AXSTM_API int axstm_watch_rearm(axstm_watch *w)
{
    if (w == NULL)
        return AXSTM_EINVAL;
    uint64_t count;
    /* EAGAIN: nothing pending, which is fine.  The descriptor is drained
     * before `fired` is cleared: the other order could let a commit in
     * between set `fired` and have its event drained, after which no
     * commit would ever write again. */
    while (read(w->waiter.fd, &count, sizeof count) < 0 && errno == EINTR)
        ;
    atomic_store(&w->waiter.fired, false);
    return AXSTM_OK;
}

AXSTM_API void axstm_watch_free(axstm_watch *w)
{
    if (w == NULL)
        return;
    /* After this no commit can reach the descriptor. */
    unsigned pin = axstm__epoch_pin(&w->store->epoch);
    unregister_and_tidy(w->store, w->nodes, w->n);
    axstm__epoch_unpin(&w->store->epoch, pin);
    watch_discard(w);
}
