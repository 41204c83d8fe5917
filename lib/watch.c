/* SPDX-License-Identifier: MIT */
/*
 * watch.c -- watch handles: a descriptor that becomes readable when a
 * watched key is committed, for event loops.
 *
 * A watch is a registration of wait.h whose waiter writes to an eventfd,
 * and which stays linked until freed.  Re-arming reads the eventfd's
 * counter back to zero.  A watched key that does not exist (or is
 * deleted) keeps a gone entry (entry.h) in the table while the watch
 * lives, so that the commit that makes it appear finds the watch.
 */
#include "axstm-internal.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct axstm_watch {
    axstm_store *store;
    struct axstm__wait_reg *reg;      /* in process; else NULL */
    struct axstm__listener *listener; /* on a remote store; else NULL */
    int fd;                           /* the eventfd, either way */
};

/* close() is a cancellation point; the library promises none outside
 * axstm_atomically (axstm.h), and a watch cancelled halfway through being
 * freed would leak. */
static void close_quietly(int fd)
{
    int cancel_state = axstm__cancel_off();
    close(fd);
    axstm__cancel_restore(cancel_state);
}

/* A watch's block and its eventfd, nothing linked yet. */
static int watch_begin(axstm_store *s, axstm_watch **out)
{
    axstm_watch *w = axstm__malloc(sizeof *w);
    if (w == NULL)
        return AXSTM_ENOMEM;
    w->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->fd < 0) {
        axstm__free(w);
        return AXSTM_ENOMEM;
    }
    w->store = s;
    w->reg = NULL;
    w->listener = NULL;
    *out = w;
    return AXSTM_OK;
}

/* Undoes watch_begin. */
static void watch_abandon(axstm_watch *w)
{
    close_quietly(w->fd);
    axstm__free(w);
}

/* A watch with its descriptor and nodes allocated but not linked yet:
 * everything that can fail, done before anything is changed. */
static int watch_alloc(axstm_store *s, size_t n, axstm_watch **out)
{
    axstm_watch *w;
    int rc = watch_begin(s, &w);
    if (rc != AXSTM_OK)
        return rc;
    if ((w->reg = axstm__wait_reg_new(n, w->fd)) == NULL) {
        watch_abandon(w);
        return AXSTM_ENOMEM;
    }
    *out = w;
    return AXSTM_OK;
}

/*
 * A watch on a remote store: its eventfd is written by the store's
 * subscriber (redis_listen.c) when another client, or this one, commits
 * one of the keys, and also when the subscription had to be made again
 * (a commit may have been missed).  Returns once subscribed.
 */
int axstm__watch_remote(axstm_store *s, const char *const keys[], const size_t lens[], size_t n,
                        axstm_watch **out)
{
    axstm_watch *w;
    int rc = watch_begin(s, &w);
    if (rc != AXSTM_OK)
        return rc;
    rc = axstm__listener_new(keys, lens, n, w->fd, &w->listener);
    if (rc == AXSTM_OK && (rc = axstm__listen_add(s->remote, w->listener)) != AXSTM_OK)
        axstm__listener_free(w->listener);
    if (rc != AXSTM_OK) {
        watch_abandon(w);
        return rc;
    }
    *out = w;
    return AXSTM_OK;
}

void axstm__watch_remote_fire(axstm_watch *w)
{
    axstm__listen_fire(w->store->remote, w->listener);
}

int axstm__watch_reads(axstm_store *s, const struct axstm__read *reads, size_t n,
                       bool fire_if_changed, axstm_watch **out)
{
    axstm_watch *w;
    int rc = watch_alloc(s, n, &w);
    if (rc != AXSTM_OK)
        return rc;
    axstm__wait_link_reads(s->wait, w->reg, reads, n);
    /* A commit that landed between the reads and the linking would
     * otherwise go unnoticed (so would an entry left out as dead). */
    if (fire_if_changed && axstm__reads_changed(reads, n)) {
        int cancel_state = axstm__cancel_off(); /* it writes to the descriptor */
        axstm__waiter_notify(&w->reg->waiter);
        axstm__cancel_restore(cancel_state);
    }
    *out = w;
    return AXSTM_OK;
}

/* Links node i on the entry of key (len bytes), adding a gone one when
 * the key does not exist.  Caller pinned. */
static int watch_key(axstm_store *s, axstm_watch *w, size_t i, const char *key, size_t len)
{
    for (;;) {
        struct axstm__keyref ref = {key, len, 0, NULL};
        bool anchored = false;
        axstm__table_find(&s->table, &ref);
        if (ref.entry == NULL) {
            int rc = axstm__table_add(&s->table, &ref, 1, &anchored);
            if (rc != AXSTM_OK)
                return rc;
        }
        bool linked = axstm__wait_link(s->wait, w->reg, i, ref.entry);
        if (anchored)
            axstm__entry_unanchor(ref.entry);
        if (linked)
            return AXSTM_OK;
        /* It died as we came: look again (it is out of the table now). */
    }
}

/*
 * Unlinks w and retires its registration; takes out the gone entries
 * only w kept.  Then closes the descriptor, once no commit is writing to
 * it (a commit that has just found the watch may be inside write(): a
 * system call's time).  Frees w.
 */
static void watch_destroy(axstm_watch *w)
{
    axstm_store *s = w->store;
    if (w->listener != NULL) {
        axstm__listen_remove(s->remote, w->listener);
        axstm__listener_free(w->listener);
        close_quietly(w->fd);
        axstm__free(w);
        return;
    }
    struct axstm__wait_reg *r = w->reg;
    size_t n = r->n;
    int fd = r->waiter.fd;
    struct axstm__entry *small[16],
        **entries = n <= 16 ? small : axstm__malloc(n * sizeof *entries);
    unsigned pin = axstm__epoch_pin(&s->epoch);
    for (size_t i = 0; entries != NULL && i < n; i++)
        entries[i] = axstm__wait_reg_entry(r, i);
    atomic_fetch_or(&r->waiter.users, AXSTM__WAITER_CLOSING);
    axstm__wait_unlink(s->wait, &s->epoch, r);
    /* Without the list (out of memory) they wait for a table rebuild. */
    for (size_t i = 0; entries != NULL && i < n; i++)
        if (entries[i] != NULL)
            axstm__table_remove(&s->table, entries[i]);
    /* Still pinned: r is not freed under us. */
    while ((atomic_load(&r->waiter.users) & ~AXSTM__WAITER_CLOSING) != 0)
        sched_yield();
    axstm__epoch_unpin(&s->epoch, pin);
    if (entries != small)
        axstm__free(entries);
    close_quietly(fd);
    axstm__free(w);
}

/* axstm_watch_new on a remote store (keys checked). */
static int remote_watch_new(axstm_store *s, const char *const keys[], size_t nkeys,
                            axstm_watch **out)
{
    size_t small[16] = {0}, *lens = nkeys <= 16 ? small : axstm__malloc(nkeys * sizeof *lens);
    if (lens == NULL)
        return AXSTM_ENOMEM;
    for (size_t i = 0; i < nkeys; i++)
        lens[i] = strlen(keys[i]);
    int rc = axstm__watch_remote(s, keys, lens, nkeys, out);
    if (lens != small)
        axstm__free(lens);
    return axstm__busy(s, rc);
}

AXSTM_API int axstm_watch_new(axstm_store *s, const char *const keys[], size_t nkeys,
                              axstm_watch **out)
{
    if (s == NULL || out == NULL || (keys == NULL && nkeys != 0))
        return AXSTM_EINVAL;
    int rc = axstm__check_keys(keys, nkeys);
    if (rc != AXSTM_OK)
        return rc;
    if (s->remote != NULL)
        return remote_watch_new(s, keys, nkeys, out);
    /* Allocate first: a failed call must leave the store as it was. */
    axstm_watch *w;
    rc = watch_alloc(s, nkeys, &w);
    if (rc != AXSTM_OK)
        return rc;

    unsigned pin = axstm__epoch_pin(&s->epoch);
    for (size_t i = 0; i < nkeys && rc == AXSTM_OK; i++)
        rc = watch_key(s, w, i, keys[i], strlen(keys[i]));
    axstm__epoch_unpin(&s->epoch, pin);
    if (rc != AXSTM_OK) {
        watch_destroy(w);
        return axstm__busy(s, rc);
    }
    *out = w;
    return AXSTM_OK;
}

AXSTM_API int axstm_watch_fd(const axstm_watch *w)
{
    return w != NULL ? w->fd : AXSTM_EINVAL;
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
    if (w->listener != NULL) {
        axstm__listen_rearm(w->store->remote, w->listener);
        return AXSTM_OK;
    }
    int cancel_state = axstm__cancel_off();
    while (read(w->fd, &count, sizeof count) < 0 && errno == EINTR)
        ;
    axstm__cancel_restore(cancel_state);
    atomic_store(&w->reg->waiter.fired, false);
    return AXSTM_OK;
}

AXSTM_API void axstm_watch_free(axstm_watch *w)
{
    if (w != NULL)
        watch_destroy(w);
}
