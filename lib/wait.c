/* SPDX-License-Identifier: MIT */
/*
 * wait.c -- blocking retry and watches; see wait.h.
 */
#include "wait.h"

#include "alloc.h"
#include "axstm.h"
#include "entry.h"
#include "epoch.h"
#include "thread.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

static struct axstm__wait_bucket *bucket_of(struct axstm__wait_bucket *buckets,
                                            const struct axstm__entry *e)
{
    uint64_t h = (uint64_t)(uintptr_t)e * UINT64_C(0x9e3779b97f4a7c15);
    return &buckets[h >> 58]; /* 64 buckets */
}

int axstm__wait_init(struct axstm__wait_bucket *buckets)
{
    for (size_t i = 0; i < AXSTM__WAIT_BUCKETS; i++)
        if (pthread_mutex_init(&buckets[i].lock, NULL) != 0) {
            while (i-- > 0)
                pthread_mutex_destroy(&buckets[i].lock);
            return AXSTM_ENOMEM;
        }
    return AXSTM_OK;
}

void axstm__wait_destroy(struct axstm__wait_bucket *buckets)
{
    for (size_t i = 0; i < AXSTM__WAIT_BUCKETS; i++)
        pthread_mutex_destroy(&buckets[i].lock);
}

struct axstm__wait_reg *axstm__wait_reg_new(size_t n, int fd)
{
    if (n > (SIZE_MAX - sizeof(struct axstm__wait_reg)) / sizeof(struct axstm__waitnode))
        return NULL;
    struct axstm__wait_reg *r = axstm__calloc(1, sizeof *r + n * sizeof(struct axstm__waitnode));
    if (r == NULL)
        return NULL;
    r->n = n;
    r->waiter.fd = fd;
    atomic_init(&r->waiter.fired, false);
    atomic_init(&r->waiter.users, 0);
    if (fd < 0 && sem_init(&r->waiter.sem, 0, 0) != 0) {
        axstm__free(r);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        r->node[i].waiter = &r->waiter;
    return r;
}

void axstm__wait_reg_discard(struct axstm__wait_reg *r)
{
    if (r->waiter.fd < 0)
        sem_destroy(&r->waiter.sem);
    axstm__free(r);
}

static void reclaim_reg(struct axstm__retired *node, void *owner)
{
    (void)owner;
    axstm__wait_reg_discard((struct axstm__wait_reg *)node);
}

/* Takes node out of e's list, under b's lock.  The node keeps its own
 * forward link: a commit standing on it goes on to the rest of the list. */
static void unlink_node(struct axstm__wait_bucket *b, struct axstm__entry *e,
                        struct axstm__waitnode *node)
{
    pthread_mutex_lock(&b->lock);
    struct axstm__waitnode *next = atomic_load_explicit(&node->next, memory_order_relaxed);
    if (node->prev != NULL)
        atomic_store_explicit(&node->prev->next, next, memory_order_release);
    else
        axstm__entry_set_waiters_seq_cst(e, next);
    if (next != NULL)
        next->prev = node->prev;
    pthread_mutex_unlock(&b->lock);
}

bool axstm__wait_link(struct axstm__wait_bucket *buckets, struct axstm__wait_reg *r, size_t i,
                      struct axstm__entry *e)
{
    struct axstm__waitnode *node = &r->node[i];
    struct axstm__wait_bucket *b = bucket_of(buckets, e);
    pthread_mutex_lock(&b->lock);
    struct axstm__waitnode *head = axstm__entry_waiters_relaxed(e);
    node->entry = e;
    node->prev = NULL;
    atomic_init(&node->next, head);
    if (head != NULL)
        head->prev = node;
    /* Sequentially consistent, and before the lock word is read below:
     * the wake-up protocol (wait.h) and entry.h's kill both rely on it. */
    axstm__entry_set_waiters_seq_cst(e, node);
    pthread_mutex_unlock(&b->lock);
    if (axstm__entry_vlock_seq_cst(e) != AXSTM__DEAD)
        return true;
    /* Dead (or, for an instant, being looked at by a kill that will see
     * us and give up): either way, not an entry to stay on. */
    unlink_node(b, e, node);
    node->entry = NULL;
    return false;
}

void axstm__wait_link_reads(struct axstm__wait_bucket *buckets, struct axstm__wait_reg *r,
                            const struct axstm__read *reads, size_t n)
{
    for (size_t i = 0; i < n; i++)
        (void)axstm__wait_link(buckets, r, i, reads[i].entry);
}

void axstm__wait_unlink(struct axstm__wait_bucket *buckets, struct axstm__epoch *ep,
                        struct axstm__wait_reg *r)
{
    for (size_t i = 0; i < r->n; i++) {
        struct axstm__waitnode *node = &r->node[i];
        struct axstm__entry *e = node->entry;
        if (e == NULL)
            continue;
        unlink_node(bucket_of(buckets, e), e, node);
    }
    if (axstm__epoch_retire(ep, &r->retire, reclaim_reg, 0))
        axstm__epoch_reclaim_soon(ep);
}

bool axstm__reads_changed(const struct axstm__read *reads, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (axstm__entry_vlock_seq_cst(reads[i].entry) != reads[i].vlock)
            return true;
    return false;
}

void axstm__waiter_notify(struct axstm__waiter *w)
{
    if (w->fd < 0) {
        sem_post(&w->sem); /* never blocks */
        return;
    }
    if (atomic_exchange(&w->fired, true))
        return;
    /* Counted, so that the watch's owner closes the descriptor only after
     * this write (wait.h). */
    if (atomic_fetch_add(&w->users, 1) & AXSTM__WAITER_CLOSING) {
        atomic_fetch_sub(&w->users, 1);
        return;
    }
    uint64_t one = 1;
    /* Non-blocking; EAGAIN means the counter is already huge: readable
     * either way. */
    while (write(w->fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    atomic_fetch_sub_explicit(&w->users, 1, memory_order_release);
}

void axstm__wake(struct axstm__entry *e)
{
    /* write() to an eventfd is a cancellation point: a commit must not be
     * cancelled halfway through its notifications. */
    int cancel_state = axstm__cancel_off();
    for (struct axstm__waitnode *node = axstm__entry_waiters_seq_cst(e); node != NULL;
         node = atomic_load_explicit(&node->next, memory_order_acquire))
        axstm__waiter_notify(node->waiter);
    axstm__cancel_restore(cancel_state);
}

int axstm__wait_begin(struct axstm__wait *w, struct axstm__wait_bucket *buckets,
                      struct axstm__epoch *ep, const struct axstm__read *reads, size_t n)
{
    w->reg = axstm__wait_reg_new(n, -1);
    if (w->reg == NULL)
        return AXSTM_ENOMEM;
    w->buckets = buckets;
    w->epoch = ep;
    w->reads = reads;
    w->n = n;
    axstm__wait_link_reads(buckets, w->reg, reads, n);
    return AXSTM_OK;
}

/* A waiter cancelled in its sleep unregisters. */
static void wait_cancelled(void *arg)
{
    axstm__wait_end(arg);
}

int axstm__wait_sleep(struct axstm__wait *w, const struct timespec *deadline)
{
    /* A commit that landed before we registered is seen here. */
    if (axstm__reads_changed(w->reads, w->n))
        return AXSTM_OK;
    volatile int rc = AXSTM_OK; /* lives across pthread_cleanup_push's setjmp */
    pthread_cleanup_push(wait_cancelled, w);
    for (;;) {
        int err = deadline != NULL ? sem_clockwait(&w->reg->waiter.sem, CLOCK_MONOTONIC, deadline)
                                   : sem_wait(&w->reg->waiter.sem);
        if (err == 0)
            break;
        if (errno == ETIMEDOUT) {
            rc = AXSTM_ETIMEDOUT;
            break;
        }
        /* EINTR: a signal handler ran; wait on. */
    }
    pthread_cleanup_pop(0);
    return rc;
}

void axstm__wait_end(struct axstm__wait *w)
{
    axstm__wait_unlink(w->buckets, w->epoch, w->reg);
}
