/*
 * watch.c -- watch handles: a descriptor that becomes readable when a
 * watched key is committed, for event loops.
 *
 * A watch is a waiter of wait.c whose notification is a write to an
 * eventfd, and which stays registered until freed.  Re-arming reads the
 * eventfd's counter back to zero.
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

/* Closes a watch's descriptor; close() is a cancellation point. */
static void close_fd(int fd)
{
    int cancel_state = axstm__cancel_off();
    close(fd);
    axstm__cancel_restore(cancel_state);
}

static void watch_discard(axstm_watch *w)
{
    close_fd(w->waiter.fd);
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
     * otherwise go unnoticed. */
    if (fire_if_changed && axstm__reads_changed(reads, n)) {
        int cancel_state = axstm__cancel_off(); /* it writes to the descriptor */
        axstm__waiter_notify(&w->waiter);
        axstm__cancel_restore(cancel_state);
    }
    *out = w;
    return AXSTM_OK;
}

AXSTM_API int axstm_watch_new(axstm_store *s, const char *const keys[], size_t nkeys,
                              axstm_watch **out)
{
    if (s == NULL || out == NULL || (keys == NULL && nkeys != 0))
        return AXSTM_EINVAL;
    struct axstm__keyref *refs = NULL;
    struct axstm__read *reads = NULL;
    size_t len;
    for (size_t i = 0; i < nkeys; i++) {
        int rc = axstm__check_key(keys[i], &len);
        if (rc != AXSTM_OK)
            return rc;
    }
    if (nkeys != 0) {
        refs = axstm__calloc(nkeys, sizeof *refs + sizeof *reads);
        if (refs == NULL)
            return AXSTM_ENOMEM;
        reads = (struct axstm__read *)(refs + nkeys);
    }
    /* Allocate before creating any key: a failed call must leave the store
     * as it was (creation itself is all-or-none). */
    axstm_watch *w;
    int rc = watch_alloc(s, nkeys, &w);
    if (rc != AXSTM_OK) {
        axstm__free(refs);
        return rc;
    }

    for (size_t i = 0; i < nkeys; i++)
        refs[i] = (struct axstm__keyref){keys[i], strlen(keys[i]), 0, NULL};
    unsigned pin = axstm__epoch_pin(&s->epoch);
    rc = axstm__table_find_or_create(&s->table, refs, nkeys);
    axstm__epoch_unpin(&s->epoch, pin);
    if (rc == AXSTM_OK) {
        for (size_t i = 0; i < nkeys; i++)
            reads[i] = (struct axstm__read){refs[i].entry, 0};
        axstm__wait_link(s->wait, &w->waiter, reads, nkeys, w->nodes);
        *out = w;
    } else {
        watch_discard(w);
    }
    axstm__free(refs);
    return axstm__busy(s, rc);
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
    int cancel_state = axstm__cancel_off();
    while (read(w->waiter.fd, &count, sizeof count) < 0 && errno == EINTR)
        ;
    axstm__cancel_restore(cancel_state);
    atomic_store(&w->waiter.fired, false);
    return AXSTM_OK;
}

AXSTM_API void axstm_watch_free(axstm_watch *w)
{
    if (w == NULL)
        return;
    /* After this no commit can reach the descriptor. */
    axstm__wait_unregister(w->store->wait, w->nodes, w->n);
    close_fd(w->waiter.fd);
    axstm__free(w);
}
