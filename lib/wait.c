/*
 * wait.c -- blocking retry and watches; see wait.h.
 */
#include "axstm-internal.h"

#include <errno.h>
#include <unistd.h>

struct axstm__waitnode {
    struct axstm__waitnode *next;
    struct axstm__waitnode **pprev; /* unlink in O(1) */
    struct axstm__entry *entry;
    struct axstm__waiter *waiter;
};

static struct axstm__wait_bucket *bucket_of(struct axstm__wait_bucket *buckets,
                                            const struct axstm__entry *e)
{
    uint64_t h = (uint64_t)(uintptr_t)e * UINT64_C(0x9e3779b97f4a7c15);
    return &buckets[h >> 58]; /* 64 buckets */
}

int axstm__wait_init(struct axstm__wait_bucket *buckets)
{
    for (size_t i = 0; i < AXSTM__WAIT_BUCKETS; i++) {
        if (pthread_mutex_init(&buckets[i].lock, NULL) != 0) {
            while (i-- > 0)
                pthread_mutex_destroy(&buckets[i].lock);
            return AXSTM_ENOMEM;
        }
        buckets[i].head = NULL;
    }
    return AXSTM_OK;
}

void axstm__wait_destroy(struct axstm__wait_bucket *buckets)
{
    for (size_t i = 0; i < AXSTM__WAIT_BUCKETS; i++)
        pthread_mutex_destroy(&buckets[i].lock);
}

struct axstm__waitnode *axstm__wait_nodes_new(size_t n)
{
    return axstm__calloc(n, sizeof(struct axstm__waitnode));
}

int axstm__wait_register(struct axstm__wait_bucket *buckets, struct axstm__waiter *w,
                         const struct axstm__read *reads, size_t n,
                         struct axstm__waitnode **nodes)
{
    struct axstm__waitnode *node = axstm__wait_nodes_new(n);
    if (node == NULL)
        return AXSTM_ENOMEM;
    axstm__wait_link(buckets, w, reads, n, node);
    *nodes = node;
    return AXSTM_OK;
}

static void unlink_node(struct axstm__wait_bucket *buckets, struct axstm__waitnode *node)
{
    struct axstm__wait_bucket *b = bucket_of(buckets, node->entry);
    atomic_fetch_sub(&node->entry->waiters, 1);
    pthread_mutex_lock(&b->lock);
    *node->pprev = node->next;
    if (node->next != NULL)
        node->next->pprev = node->pprev;
    pthread_mutex_unlock(&b->lock);
    node->entry = NULL;
}

bool axstm__wait_link_one(struct axstm__wait_bucket *buckets, struct axstm__waiter *w,
                          struct axstm__entry *e, struct axstm__waitnode *node)
{
    struct axstm__wait_bucket *b = bucket_of(buckets, e);
    node->entry = e;
    node->waiter = w;
    pthread_mutex_lock(&b->lock);
    node->next = b->head;
    node->pprev = &b->head;
    if (b->head != NULL)
        b->head->pprev = &node->next;
    b->head = node;
    pthread_mutex_unlock(&b->lock);
    /* Raised before the lock word is read, as entry.h's kill requires:
     * an entry seen dead here is on its way out (or was, for an instant),
     * and must not be kept. */
    atomic_fetch_add(&e->waiters, 1);
    if (atomic_load(&e->vlock) != AXSTM__DEAD)
        return true;
    unlink_node(buckets, node);
    return false;
}

void axstm__wait_link(struct axstm__wait_bucket *buckets, struct axstm__waiter *w,
                      const struct axstm__read *reads, size_t n, struct axstm__waitnode *node)
{
    /* A dead entry is left out: its read differs from its word now, so
     * the caller sees the change and does not sleep on it. */
    for (size_t i = 0; i < n; i++)
        (void)axstm__wait_link_one(buckets, w, reads[i].entry, &node[i]);
}

void axstm__wait_unregister(struct axstm__wait_bucket *buckets, struct axstm__waitnode *nodes,
                            size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (nodes[i].entry != NULL)
            unlink_node(buckets, &nodes[i]);
}

size_t axstm__wait_node_size(void)
{
    return sizeof(struct axstm__waitnode);
}

struct axstm__entry *axstm__wait_node_entry(const struct axstm__waitnode *nodes, size_t i)
{
    return nodes[i].entry;
}

bool axstm__reads_changed(const struct axstm__read *reads, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&reads[i].entry->vlock) != reads[i].vlock)
            return true;
    return false;
}

void axstm__waiter_notify(struct axstm__waiter *w)
{
    if (w->fd >= 0) {
        if (atomic_exchange(&w->fired, true))
            return;
        uint64_t one = 1;
        /* EAGAIN means the counter is already huge: readable either way. */
        while (write(w->fd, &one, sizeof one) < 0 && errno == EINTR)
            ;
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->woken = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

void axstm__wake(struct axstm__wait_bucket *buckets, struct axstm__entry *e)
{
    struct axstm__wait_bucket *b = bucket_of(buckets, e);
    /* write() to an eventfd is a cancellation point: a commit cancelled
     * there would leave the bucket locked for good. */
    int cancel_state;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
    pthread_mutex_lock(&b->lock);
    for (struct axstm__waitnode *node = b->head; node != NULL; node = node->next)
        if (node->entry == e)
            axstm__waiter_notify(node->waiter);
    pthread_mutex_unlock(&b->lock);
    pthread_setcancelstate(cancel_state, NULL);
}

int axstm__wait_begin(struct axstm__wait *w, struct axstm__wait_bucket *buckets,
                      const struct axstm__read *reads, size_t n)
{
    w->waiter.woken = false;
    w->waiter.fd = -1;
    atomic_init(&w->waiter.fired, false);
    w->buckets = buckets;
    w->reads = reads;
    w->n = n;
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return AXSTM_ENOMEM;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int init_cond = pthread_cond_init(&w->waiter.cond, &attr);
    pthread_condattr_destroy(&attr);
    if (init_cond != 0)
        return AXSTM_ENOMEM;
    if (pthread_mutex_init(&w->waiter.lock, NULL) != 0) {
        pthread_cond_destroy(&w->waiter.cond);
        return AXSTM_ENOMEM;
    }
    if (axstm__wait_register(buckets, &w->waiter, reads, n, &w->nodes) != AXSTM_OK) {
        pthread_mutex_destroy(&w->waiter.lock);
        pthread_cond_destroy(&w->waiter.cond);
        return AXSTM_ENOMEM;
    }
    return AXSTM_OK;
}

/* What a waiter cancelled in its sleep must undo: its nodes point at its
 * waiter, which is about to go away with its stack. */
static void wait_cancelled(void *arg)
{
    struct axstm__wait *w = arg;
    pthread_mutex_unlock(&w->waiter.lock); /* a cancelled cond wait holds it */
    axstm__wait_end(w);
}

int axstm__wait_sleep(struct axstm__wait *w, const struct timespec *deadline)
{
    volatile int rc = AXSTM_OK; /* lives across pthread_cleanup_push's setjmp */
    /* A commit that landed before we registered is seen here. */
    if (axstm__reads_changed(w->reads, w->n))
        return AXSTM_OK;
    pthread_mutex_lock(&w->waiter.lock);
    pthread_cleanup_push(wait_cancelled, w);
    while (!w->waiter.woken && rc == AXSTM_OK) {
        int err = deadline != NULL
                      ? pthread_cond_timedwait(&w->waiter.cond, &w->waiter.lock, deadline)
                      : pthread_cond_wait(&w->waiter.cond, &w->waiter.lock);
        if (err == ETIMEDOUT && !w->waiter.woken)
            rc = AXSTM_ETIMEDOUT;
    }
    pthread_cleanup_pop(0);
    pthread_mutex_unlock(&w->waiter.lock);
    return rc;
}

void axstm__wait_end(struct axstm__wait *w)
{
    axstm__wait_unregister(w->buckets, w->nodes, w->n);
    axstm__free(w->nodes);
    pthread_mutex_destroy(&w->waiter.lock);
    pthread_cond_destroy(&w->waiter.cond);
}
