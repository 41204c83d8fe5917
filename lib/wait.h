/*
 * wait.h -- who waits on which key: blocking AXSTM_RETRY and watches.
 *
 * A waiter registers a node per key in one of the store's wait buckets
 * (hashed by entry) and raises the key's `waiters` count; a commit, after
 * unlocking a key, loads that count and only when it is non-zero takes the
 * bucket's lock to notify the key's waiters.
 *
 * No lost wake-up: the waiter raises the count and then re-reads the key's
 * lock word; the committer takes the lock and then reads the count (all
 * sequentially consistent).  Either the committer sees the waiter, or the
 * waiter sees the lock (or the new stamp) and does not go to sleep.
 */
#ifndef AXSTM_WAIT_H
#define AXSTM_WAIT_H

#include "entry.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define AXSTM__WAIT_BUCKETS 64

struct axstm__waitnode;

struct axstm__wait_bucket {
    _Alignas(AXSTM__CACHELINE) pthread_mutex_t lock;
    struct axstm__waitnode *head;
};

/* Something to notify: a sleeping thread, or an event descriptor. */
struct axstm__waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool woken;
    int fd; /* >= 0: an eventfd to write to instead of signalling cond */
    /* For descriptors: already readable, so later commits need not write
     * again until the watch is re-armed (a system call saved per commit). */
    _Atomic bool fired;
};

/* Wakes w: signals its thread, or makes its descriptor readable. */
void axstm__waiter_notify(struct axstm__waiter *w);

/* A key read by a transaction, with the lock word it was read under. */
struct axstm__read {
    struct axstm__entry *entry;
    uint64_t vlock;
};

int axstm__wait_init(struct axstm__wait_bucket *buckets);
void axstm__wait_destroy(struct axstm__wait_bucket *buckets);

/* Allocates the n nodes a registration needs (NULL when out of memory), so
 * that a caller can fail before it changes anything. */
struct axstm__waitnode *axstm__wait_nodes_new(size_t n);

/* Registers w on e with node (caller pinned).  Returns false, with
 * nothing registered, when e is dead (entry.h): look the key up again. */
bool axstm__wait_link_one(struct axstm__wait_bucket *buckets, struct axstm__waiter *w,
                          struct axstm__entry *e, struct axstm__waitnode *node);

/* Registers w on every entry of reads[0..n), using nodes from
 * axstm__wait_nodes_new(n), leaving out dead ones.  Caller pinned. */
void axstm__wait_link(struct axstm__wait_bucket *buckets, struct axstm__waiter *w,
                      const struct axstm__read *reads, size_t n, struct axstm__waitnode *nodes);

/* The size of a node, for finding node i in an array of them. */
size_t axstm__wait_node_size(void);

/* The entry node i is registered on, or NULL. */
struct axstm__entry *axstm__wait_node_entry(const struct axstm__waitnode *nodes, size_t i);

/* Both of the above: AXSTM_OK with *nodes set, or AXSTM_ENOMEM. */
int axstm__wait_register(struct axstm__wait_bucket *buckets, struct axstm__waiter *w,
                         const struct axstm__read *reads, size_t n,
                         struct axstm__waitnode **nodes);
/* Undoes the registrations of nodes[0..n) (the nodes stay allocated: the
 * caller frees them).  The entries may be freed once it returns. */
void axstm__wait_unregister(struct axstm__wait_bucket *buckets, struct axstm__waitnode *nodes,
                            size_t n);

/* True when some key of reads has been locked or committed since read. */
bool axstm__reads_changed(const struct axstm__read *reads, size_t n);

/*
 * A thread's wait for a change of some key it read, in three steps:
 *   begin  registers it on every key (the caller still pinned, so that the
 *          entries are alive; registered, they stay: entry.h);
 *   sleep  blocks until one of them is committed or the deadline passes
 *          (a cancellation point: cancelled, it unregisters);
 *   end    unregisters it.
 */
struct axstm__wait {
    struct axstm__waiter waiter;
    struct axstm__wait_bucket *buckets;
    const struct axstm__read *reads;
    size_t n;
    struct axstm__waitnode *nodes;
};

/* Returns AXSTM_OK or AXSTM_ENOMEM (then nothing is registered). */
int axstm__wait_begin(struct axstm__wait *w, struct axstm__wait_bucket *buckets,
                      const struct axstm__read *reads, size_t n);

/* Blocks until some key read has changed since it was read, or until
 * *deadline (CLOCK_MONOTONIC; NULL: no limit).  Returns AXSTM_OK (changed:
 * run again) or AXSTM_ETIMEDOUT. */
int axstm__wait_sleep(struct axstm__wait *w, const struct timespec *deadline);

void axstm__wait_end(struct axstm__wait *w);

/* Notifies everyone waiting on e.  Called by commits after unlocking e,
 * only when e->waiters is non-zero. */
void axstm__wake(struct axstm__wait_bucket *buckets, struct axstm__entry *e);

#endif
