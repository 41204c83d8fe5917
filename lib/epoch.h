/* SPDX-License-Identifier: MIT */
/*
 * epoch.h -- epoch-based memory reclamation without thread registration.
 *
 * Readers never lock and never write to the things they read, so a writer
 * cannot free an old value (or an old table array) the moment it replaces
 * it: a reader may still be looking at it.  Instead the writer *retires* it,
 * and it is freed once every reader that could have seen it has finished.
 *
 * Readers bracket their reads with pin/unpin.  A pin increments one of two
 * counters (by the parity of the global epoch) in the thread's slot (see
 * thread.h).  The global epoch may advance from e to e+1 only when no
 * reader is pinned in e-1, so something retired while the epoch was e is
 * unreachable by any pinned reader once the epoch reaches e+2.
 *
 * Cost of a pin, in a slot of the thread's own: a plain increment and two
 * loads of the epoch (plus one full fence where the system has no
 * membarrier, see epoch.c); of an unpin: a plain decrement with release
 * order.  No shared cache line is written.  In the shared slot both use
 * atomic read-modify-writes.
 *
 * A retired node goes on a list in the retiring thread's slot.  Every
 * thread's reclaim frees what is old enough on its own list, and the first
 * reclaim to see a new epoch does the same for every other slot's list, so
 * that what a thread retired before it went idle or exited is freed by the
 * threads still working (epoch.c).
 */
#ifndef AXSTM_EPOCH_H
#define AXSTM_EPOCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "thread.h"

#define AXSTM__CACHELINE 64

struct axstm__retired;
typedef void (*axstm__reclaim_fn)(struct axstm__retired *node, void *owner);

/* Embedded in whatever is retired: no allocation is needed to retire it. */
struct axstm__retired {
    struct axstm__retired *next;
    uint64_t epoch;
    axstm__reclaim_fn reclaim;
};

struct axstm__epoch_slot {
    _Alignas(2 * AXSTM__CACHELINE) _Atomic uint64_t pins[2];
    /* A stack: the slot's threads push, any reclaimer takes it whole. */
    _Atomic(struct axstm__retired *) retired;
    /* Written by the slot's threads only (thread.h), never by other
     * reclaimers, so that a retire updates them without a locked
     * instruction: the weight ever retired here, and the epoch at which
     * this slot's threads last went through their list. */
    _Atomic uint64_t weight;
    _Atomic uint64_t walked;
};

struct axstm__epoch {
    _Alignas(2 * AXSTM__CACHELINE) _Atomic uint64_t now;
    void *owner; /* passed to every reclaim function */
    /* The last epoch at which a reclaim went through every slot's list.
     * Its own line: pins read `now` and must not miss on its writes. */
    _Alignas(2 * AXSTM__CACHELINE) _Atomic uint64_t swept;
    struct axstm__epoch_slot slot[AXSTM__ALL_SLOTS];
};

void axstm__epoch_init(struct axstm__epoch *ep, void *owner);

/* Reclaims everything still retired.  Only when no thread uses the owner. */
void axstm__epoch_drain(struct axstm__epoch *ep);

/* True when reclaimers make every thread execute a barrier before they
 * trust a pin count (epoch.c): pins then need no fence of their own. */
extern _Atomic bool axstm__pins_unfenced;

/* Makes every running thread of the process execute a full barrier, so
 * that what each stored before it is visible to the caller afterwards
 * (membarrier).  False when the system would not: then nothing is proved. */
bool axstm__barrier_everywhere(void);

/* Orders the pin counts this thread stored in its own slot before its
 * later loads (of the epoch, and of whatever it is about to read): the
 * reclaimer's barrier sees to that, or else this fence. */
static inline void axstm__pin_fence(void)
{
    if (atomic_load_explicit(&axstm__pins_unfenced, memory_order_relaxed))
        atomic_signal_fence(memory_order_seq_cst);
    else
        atomic_thread_fence(memory_order_seq_cst);
}

/* Adds d (1 or -1) to a pin count of the calling thread's slot. */
static inline void axstm__pin_add(_Atomic uint64_t *count, uint64_t d, unsigned slot)
{
    if (slot >= AXSTM__SLOTS) {
        atomic_fetch_add(count, d); /* shared: a seq_cst RMW, its own fence */
        return;
    }
    axstm__slot_add(count, d, slot);
    axstm__pin_fence();
}

/* The pin's rare cases (epoch.c): a thread in the shared slot, or an
 * epoch that moved while the pin was being taken. */
unsigned axstm__epoch_pin_slow(struct axstm__epoch *ep, unsigned index, uint64_t e);

/* Pins the calling thread; returns the token to give to unpin.  Nestable.
 * Inline: every checkout and transaction attempt pins once; what only the
 * rare cases need is out of line. */
static AXSTM__ALWAYS_INLINE unsigned axstm__epoch_pin(struct axstm__epoch *ep)
{
    unsigned index = axstm__thread_slot();
    uint64_t e = atomic_load(&ep->now);
    if (index < AXSTM__SLOTS) {
        axstm__pin_add(&ep->slot[index].pins[e & 1], 1, index);
        /* The pin counts for e only if the epoch did not move meanwhile;
         * otherwise a reclaimer may already have looked at this counter. */
        if (atomic_load(&ep->now) == e)
            return index << 1 | (unsigned)(e & 1);
        axstm__pin_add(&ep->slot[index].pins[e & 1], (uint64_t)-1, index);
        e = atomic_load(&ep->now);
    }
    return axstm__epoch_pin_slow(ep, index, e);
}

/* The epoch this thread should reclaim in once it unpins (see
 * axstm__epoch_reclaim_soon), or NULL. */
extern AXSTM__TLS struct axstm__epoch *axstm__reclaim_wanted;

void axstm__epoch_reclaim(struct axstm__epoch *ep);

/*
 * Asks for axstm__epoch_reclaim once the calling thread unpins: a thread
 * that is pinned itself holds the epoch back, so reclaiming then would
 * free nothing new.
 */
static inline void axstm__epoch_reclaim_soon(struct axstm__epoch *ep)
{
    axstm__reclaim_wanted = ep;
}

/* Drops the pin that token stands for, and nothing else. */
static AXSTM__ALWAYS_INLINE void axstm__epoch_leave(struct axstm__epoch *ep, unsigned token)
{
    unsigned index = token >> 1;
    _Atomic uint64_t *count = &ep->slot[index].pins[token & 1];
    /* Release: this thread's reads are done before a reclaimer can see the
     * count drop and free what they read. */
    if (index < AXSTM__SLOTS)
        atomic_store_explicit(count, atomic_load_explicit(count, memory_order_relaxed) - 1,
                              memory_order_release);
    else
        atomic_fetch_sub(count, 1);
}

/* Runs the reclaim that axstm__epoch_reclaim_soon asked for, if it did.
 * Only when not pinned in ep. */
static inline void axstm__epoch_reclaim_if_wanted(struct axstm__epoch *ep)
{
    if (axstm__reclaim_wanted == ep) {
        axstm__reclaim_wanted = NULL;
        axstm__epoch_reclaim(ep);
    }
}

static inline void axstm__epoch_unpin(struct axstm__epoch *ep, unsigned token)
{
    axstm__epoch_leave(ep, token);
    axstm__epoch_reclaim_if_wanted(ep);
}

/*
 * Retires node (already unreachable for new readers); reclaim(node, owner)
 * runs once no pinned reader can still hold it, in whichever thread
 * reclaims it.  weight is the memory it holds: a slot asks for a reclaim
 * after every so many nodes or so many bytes retired into it (epoch.c), so
 * what waits to be freed stays bounded in both.  Returns non-zero when the
 * caller should have it reclaimed (axstm__epoch_reclaim_soon, or
 * axstm__epoch_reclaim when it is not pinned).
 */
int axstm__epoch_retire(struct axstm__epoch *ep, struct axstm__retired *node,
                        axstm__reclaim_fn reclaim, size_t weight);

/* Tries to advance the epoch and reclaims what is old enough in this
 * thread's slot, and in every other slot once per epoch.  Never blocks.
 * (Declared above.) */

#endif
