/* SPDX-License-Identifier: MIT */
/*
 * wait.h -- who waits on which key: blocking AXSTM_RETRY and watches.
 *
 * Each key keeps its own list of waiters, headed in its entry (`waiters`),
 * so a commit pays only for the waiters of the keys it writes: one load of
 * the head when nobody waits.
 *
 * A commit walks a key's list without taking any lock: nodes are linked
 * and unlinked under a lock of the registering side only (one of 64
 * buckets, by entry), a node taken out keeps its forward link, and nodes
 * (with their waiter) are freed through the epoch, so a committer that is
 * pinned can always finish its walk.  Notifying never waits either: a
 * sleeping thread waits on a semaphore (sem_post), a watch on an eventfd
 * (a non-blocking write).  So no commit ever waits for another thread.
 *
 * No lost wake-up: the waiter links its node and then re-reads the key's
 * lock word; the committer takes the lock and then reads the head (all
 * sequentially consistent).  Either the committer sees the waiter, or the
 * waiter sees the lock (or the new stamp) and does not go to sleep.
 */
#ifndef AXSTM_WAIT_H
#define AXSTM_WAIT_H

#include "entry.h"
#include "epoch.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define AXSTM__WAIT_BUCKETS 64

/* The registering side's locks: held for a few instructions (linking or
 * unlinking one node), never by a commit. */
struct axstm__wait_bucket {
    _Alignas(AXSTM__CACHELINE) pthread_mutex_t lock;
};

/* Something to notify: a sleeping thread, or an event descriptor. */
struct axstm__waiter {
    int fd; /* >= 0: an eventfd to write to; else `sem` is posted */
    sem_t sem;
    /* For descriptors: already readable, so later commits need not write
     * again until the watch is re-armed (a system call saved per commit). */
    _Atomic bool fired;
    /* Notifications writing to fd right now, | CLOSING once the watch is
     * being freed: the descriptor is closed only after the last of them. */
    _Atomic uint32_t users;
};

#define AXSTM__WAITER_CLOSING (UINT32_C(1) << 31)

/* A key read by a transaction, with the lock word it was read under. */
struct axstm__read {
    struct axstm__entry *entry;
    uint64_t vlock;
};

struct axstm__waitnode {
    _Atomic(struct axstm__waitnode *) next; /* walked by commits, lock-free */
    struct axstm__waitnode *prev;           /* under the bucket lock */
    struct axstm__entry *entry;             /* NULL: not linked */
    struct axstm__waiter *waiter;
};

/* One waiter and its nodes, one per key, in one block freed through the
 * epoch once unlinked (commits may still be walking its nodes). */
struct axstm__wait_reg {
    struct axstm__retired retire;
    struct axstm__waiter waiter;
    size_t n;
    struct axstm__waitnode node[];
};

int axstm__wait_init(struct axstm__wait_bucket *buckets);
void axstm__wait_destroy(struct axstm__wait_bucket *buckets);

/* A registration for n keys whose waiter notifies fd (>= 0, which the
 * caller closes) or a semaphore (fd < 0).  NULL when out of memory. */
struct axstm__wait_reg *axstm__wait_reg_new(size_t n, int fd);

/* Frees a registration that was never linked (or wholly unlinked, when
 * no commit can have seen it). */
void axstm__wait_reg_discard(struct axstm__wait_reg *r);

/* Links node i of r on e (caller pinned).  Returns false, with nothing
 * linked, when e is dead (entry.h): look the key up again. */
bool axstm__wait_link(struct axstm__wait_bucket *buckets, struct axstm__wait_reg *r, size_t i,
                      struct axstm__entry *e);

/* Links node i of r on reads[i].entry for i < n, leaving out dead ones
 * (their reads have changed: the caller sees that).  Caller pinned. */
void axstm__wait_link_reads(struct axstm__wait_bucket *buckets, struct axstm__wait_reg *r,
                            const struct axstm__read *reads, size_t n);

/*
 * Unlinks every node of r and retires r (freed once no commit can be
 * walking it).  The entries may be freed once it returns: a caller that
 * wants them collects them first (axstm__wait_reg_entry), pinned.
 */
void axstm__wait_unlink(struct axstm__wait_bucket *buckets, struct axstm__epoch *ep,
                        struct axstm__wait_reg *r);

/* The entry node i of r is linked on, or NULL. */
static inline struct axstm__entry *axstm__wait_reg_entry(const struct axstm__wait_reg *r, size_t i)
{
    return r->node[i].entry;
}

/* Wakes w: posts its semaphore, or makes its descriptor readable. */
void axstm__waiter_notify(struct axstm__waiter *w);

/* True when some key of reads has been locked or committed since read. */
bool axstm__reads_changed(const struct axstm__read *reads, size_t n);

/* Notifies everyone waiting on e.  Called by commits after unlocking e,
 * pinned, only when e has waiters.  Takes no lock. */
void axstm__wake(struct axstm__entry *e);

/*
 * A thread's wait for a change of some key it read, in three steps:
 *   begin  registers it on every key (the caller still pinned, so that the
 *          entries are alive; registered, they stay: entry.h);
 *   sleep  blocks until one of them is committed or the deadline passes
 *          (a cancellation point: cancelled, it unregisters);
 *   end    unregisters it.
 */
struct axstm__wait {
    struct axstm__wait_reg *reg;
    struct axstm__wait_bucket *buckets;
    struct axstm__epoch *epoch;
    const struct axstm__read *reads;
    size_t n;
};

/* Returns AXSTM_OK or AXSTM_ENOMEM (then nothing is registered). */
int axstm__wait_begin(struct axstm__wait *w, struct axstm__wait_bucket *buckets,
                      struct axstm__epoch *ep, const struct axstm__read *reads, size_t n);

/* Blocks until some key read has changed since it was read, or until
 * *deadline (CLOCK_MONOTONIC; NULL: no limit).  Returns AXSTM_OK (changed:
 * run again) or AXSTM_ETIMEDOUT. */
int axstm__wait_sleep(struct axstm__wait *w, const struct timespec *deadline);

void axstm__wait_end(struct axstm__wait *w);

#endif
