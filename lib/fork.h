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
 * So the code that changes what axstm_store_free walks (entries' blob
 * values, retired lists, key tables: commits with their reclaims, key
 * creation) runs inside a gate, and the library's fork handler (fork.c)
 * closes the gate and waits until no thread is inside before fork()
 * copies anything.  A commit that only puts small values on live keys
 * changes nothing axstm_store_free walks (any mix of an inline value's
 * old and new halves frees nothing), so it enters the gate only when it
 * comes to a blob, a delete or a key born again (commit.c).
 * These stretches wait for nothing but, for a moment, a wait-bucket mutex,
 * so the fork waits a moment too.  A thread that finds the gate closed
 * does not go in: key creation then answers AXSTM_BUSY_RETRY, having
 * changed nothing, and a commit that holds its keys' locks already waits
 * for the fork to pass (outside the gate, so the fork does not wait for
 * it; the child finds those keys locked, and may only free the store).  (Key locks taken by an irrevocable body, pins
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
/* The token of a caller that has not entered (yet). */
#define AXSTM__GATE_OUTSIDE AXSTM__GATE_CLOSED

/* Enters the gate: returns the token for axstm__gate_leave, or
 * AXSTM__GATE_CLOSED (not entered) while a fork is being prepared.
 * Inline: every commit enters once. */
static AXSTM__ALWAYS_INLINE unsigned axstm__gate_enter(void)
{
    unsigned slot = axstm__thread_slot();
    _Atomic uint64_t *inside = &axstm__gate[slot].inside;
    axstm__pin_add(inside, 1, slot); /* ordered as a pin is */
    if (!atomic_load_explicit(&axstm__gate_closed, memory_order_relaxed))
        return slot;
    axstm__pin_add(inside, (uint64_t)-1, slot);
    return AXSTM__GATE_CLOSED;
}

/* Enters the gate, waiting while a fork is being prepared: for changes
 * that cannot be called off (an irrevocable transaction's commit). */
unsigned axstm__gate_enter_wait(void);

static AXSTM__ALWAYS_INLINE void axstm__gate_leave(unsigned token)
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

/* Registers the library's fork() handlers, once. */
void axstm__fork_setup(void);

#endif
