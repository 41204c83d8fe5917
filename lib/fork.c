/* SPDX-License-Identifier: MIT */
/*
 * fork.c -- the library across fork(); see fork.h for the gate.
 *
 * The child of a multithreaded parent has only the thread that called
 * fork: whatever the other threads held at that instant stays held there
 * for good.  What they held inside a store (key locks, shard and wait
 * mutexes, pins) is that store's affair: axstm.h says the child may only
 * free such a store, and the gate makes sure it is whole to be freed.
 * What must go on working is the state shared by every store, so that the
 * child can make new stores and use them from new threads:
 *   - the list of handle caches (alloc.c): its mutex, held by a thread
 *     while it adds or drops its cache, is taken around the fork, so that
 *     no child finds it held;
 *   - the per-thread slots (thread.c): those of the parent's other threads
 *     are given back in the child, where those threads do not exist, so
 *     that its new threads get slots of their own again.
 *
 * The handlers are registered by the first axstm_store_new: until then no
 * thread has a slot or a cache, and nothing is inside the gate.  They
 * allocate nothing.  The prepare handler waits for threads inside the gate,
 * which may be freeing memory: it relies on the allocator's own fork
 * handler, if any, running after it (registered before it: glibc's malloc
 * takes its locks after every handler, and jemalloc and tcmalloc register
 * theirs when they start, before any store exists).
 */
#include "fork.h"

#include "alloc.h"
#include "epoch.h"
#include "thread.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

struct axstm__gate_count axstm__gate[AXSTM__ALL_SLOTS];
_Alignas(2 * AXSTM__CACHELINE) _Atomic bool axstm__gate_closed;

unsigned axstm__gate_enter_wait(void)
{
    for (;;) {
        unsigned token = axstm__gate_enter();
        if (token != AXSTM__GATE_CLOSED)
            return token;
        while (atomic_load_explicit(&axstm__gate_closed, memory_order_relaxed))
            sched_yield();
    }
}

/* Closes the gate and waits until nobody is inside. */
static void close_gate(void)
{
    atomic_store(&axstm__gate_closed, true);
    /* A thread that entered without seeing the gate closed has its count
     * visible to the scan below: ordered before its read of the flag by its
     * own fence, or (unfenced, as pins are) by this barrier.  The barrier
     * does not fail once registered; should it, try again a few times,
     * then go on (a thread would have to be within a few instructions of
     * entering, and the fork would copy its change half done). */
    if (atomic_load_explicit(&axstm__pins_unfenced, memory_order_relaxed))
        for (int attempt = 0; attempt < 8 && !axstm__barrier_everywhere(); attempt++)
            sched_yield();
    for (unsigned i = 0; i < AXSTM__ALL_SLOTS; i++)
        while (atomic_load(&axstm__gate[i].inside) != 0)
            sched_yield();
}

static void before_fork(void)
{
    close_gate();
    axstm__caches_before_fork();
}

static void after_fork_in_parent(void)
{
    axstm__caches_after_fork();
    atomic_store(&axstm__gate_closed, false);
}

static void after_fork_in_child(void)
{
    axstm__caches_after_fork();
    axstm__slots_after_fork();
    atomic_store(&axstm__gate_closed, false);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void register_handlers(void)
{
    /* Fails only when out of memory; the library then works as before,
     * except in a child of a fork. */
    (void)pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
}

void axstm__fork_setup(void)
{
    pthread_once(&fork_once, register_handlers);
}
