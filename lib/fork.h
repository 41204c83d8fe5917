/* SPDX-License-Identifier: MIT */
/*
 * fork.h -- keeping fork() from copying a store halfway through a change.
 *
 * fork() copies the parent's memory as it stands when fork() runs, while
 * the parent's other threads are wherever they are: one may be halfway through
 * a commit, having stored a key's new value kind but not its bytes (the
 * child would take inline bytes for a blob's address and free it), or
 * having taken the old value off its key but not yet put it on a retired
 * list (the child could never free it); a reclaimer may hold a retired
 * list it took off its slot.  The child has none of those threads to
 * finish the change.
 *
 * So the code that changes what axstm_store_free walks (entries' values,
 * retired lists, key tables: commits with their reclaims, key creation)
 * runs inside a gate, and the library's fork handler (fork.c) closes the
 * gate and waits until no thread is inside before fork() copies anything.
 * These stretches wait for nothing but, for a moment, a wait-bucket mutex,
 * so the fork waits a moment too.  A thread that finds the gate closed
 * does not go in: a commit or key creation then answers AXSTM_BUSY_RETRY,
 * having changed nothing.  (Key locks taken by an irrevocable body, pins
 * and mutexes are not covered: a child may only free a store that another
 * thread was using, which takes none of them.  It does destroy the
 * mutexes, and glibc's pthread_mutex_destroy of one that a vanished thread
 * held answers EBUSY and changes nothing.)
 *
 * The gate costs a thread what a pin costs (epoch.h), on its own slot's
 * count in a process-wide array: a plain increment, a load of the closed
 * flag (read-mostly), a plain decrement.  The fork handler pays for the
 * order with a membarrier, where pins go unfenced; else entering fences.
 */
#ifndef AXSTM_FORK_H
#define AXSTM_FORK_H

#include "epoch.h"
#include "thread.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct axstm__gate_count {
    _Alignas(2 * AXSTM__CACHELINE) _Atomic uint64_t inside;
};

/* Threads inside the gate, per slot; set while a fork is being prepared
 * (its own line: every gate entry reads it). */
extern struct axstm__gate_count axstm__gate[AXSTM__ALL_SLOTS];
extern _Alignas(2 * AXSTM__CACHELINE) _Atomic bool axstm__gate_closed;

#define AXSTM__GATE_CLOSED UINT32_MAX

/* Enters the gate: returns the token for axstm__gate_leave, or
 * AXSTM__GATE_CLOSED (not entered) while a fork is being prepared.
 * Inline: every commit enters once. */
static inline unsigned axstm__gate_enter(void)
{
    unsigned slot = axstm__thread_slot();
    _Atomic uint64_t *inside = &axstm__gate[slot].inside;
    axstm__pin_add(inside, 1, slot); /* ordered as a pin is */
    if (!atomic_load_explicit(&axstm__gate_closed, memory_order_relaxed))
        return slot;
    axstm__pin_add(inside, (uint64_t)-1, slot);
    return AXSTM__GATE_CLOSED;
}

/*
 * Pins the calling thread in ep (epoch.h) and enters the gate, for a
 * change that needs both (a handle's commit): one slot lookup and one
 * fence for the two counts, each stored before the loads that check them
 * (the epoch, the closed flag) as axstm__epoch_pin and axstm__gate_enter
 * order them.  Returns false, holding neither, while a fork is being
 * prepared.  axstm__leave_and_unpin undoes both.
 */
static inline bool axstm__pin_and_enter(struct axstm__epoch *ep, unsigned *pin, unsigned *gate)
{
    unsigned index = axstm__thread_slot();
    if (index < AXSTM__SLOTS) {
        uint64_t e = atomic_load(&ep->now);
        _Atomic uint64_t *pins = &ep->slot[index].pins[e & 1];
        _Atomic uint64_t *inside = &axstm__gate[index].inside;
        axstm__slot_add(pins, 1, index);
        axstm__slot_add(inside, 1, index);
        axstm__pin_fence();
        if (atomic_load(&ep->now) == e &&
            !atomic_load_explicit(&axstm__gate_closed, memory_order_relaxed)) {
            *pin = index << 1 | (unsigned)(e & 1);
            *gate = index;
            return true;
        }
        axstm__pin_add(inside, (uint64_t)-1, index);
        axstm__pin_add(pins, (uint64_t)-1, index);
    }
    /* The epoch moved, a fork is coming, or the shared slot: one by one. */
    *pin = axstm__epoch_pin(ep);
    *gate = axstm__gate_enter();
    if (*gate != AXSTM__GATE_CLOSED)
        return true;
    axstm__epoch_unpin(ep, *pin);
    return false;
}

/* Enters the gate, waiting while a fork is being prepared: for changes
 * that cannot be called off (an irrevocable transaction's commit). */
unsigned axstm__gate_enter_wait(void);

static inline void axstm__gate_leave(unsigned token)
{
    _Atomic uint64_t *inside = &axstm__gate[token].inside;
    /* Release: the changes are done before the fork handler sees the
     * count drop and lets fork() copy them. */
    if (token < AXSTM__SLOTS)
        atomic_store_explicit(inside, atomic_load_explicit(inside, memory_order_relaxed) - 1,
                              memory_order_release);
    else
        atomic_fetch_sub(inside, 1);
}

/* Leaves the gate and unpins: what axstm__pin_and_enter took. */
static inline void axstm__leave_and_unpin(struct axstm__epoch *ep, unsigned pin, unsigned gate)
{
    axstm__gate_leave(gate);
    axstm__epoch_unpin(ep, pin);
}

/* Registers the library's fork() handlers, once. */
void axstm__fork_setup(void);

#endif
