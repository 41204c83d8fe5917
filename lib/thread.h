/* SPDX-License-Identifier: MIT */
/*
 * thread.h -- per-thread slots: a small number for each live thread.
 *
 * Several structures keep one cache-line-sized slot per thread, so that the
 * hot paths write only lines no other thread writes: the epoch pin counts,
 * the store's counters.  Each live thread gets a slot of its own among
 * AXSTM__SLOTS (lowest free first); only that thread writes its slot, so it
 * may update it with a plain load and store instead of an atomic
 * read-modify-write (a locked instruction, some 20 cycles on x86).  A slot
 * is given back when its thread exits and is reused by a later thread.
 * Threads beyond AXSTM__SLOTS live at once share one more slot,
 * AXSTM__SHARED_SLOT, and update it with atomic read-modify-writes.
 *
 * Threads do not register: the slot is assigned on a thread's first call
 * and handed back by a thread-exit destructor.  In the child of a fork,
 * the slots of the parent's other threads are free again (fork.c).
 *
 * The other thing kept per thread is POSIX's: whether a cancellation
 * request may act (axstm__cancel_off, below).
 */
#ifndef AXSTM_THREAD_H
#define AXSTM_THREAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define AXSTM__SLOTS 64
#define AXSTM__SHARED_SLOT AXSTM__SLOTS
#define AXSTM__ALL_SLOTS (AXSTM__SLOTS + 1)

/*
 * Thread-local storage for the hot paths.  In a shared library the default
 * model calls __tls_get_addr on every access; initial-exec makes it one
 * load from the thread pointer.  It takes a little of the static TLS space
 * the C library keeps for libraries (ours: a few words), so the library can
 * still be loaded with dlopen.  The shared library is linked -z nodelete
 * (configure.ac), so that reserve is taken once per process however often
 * it is opened and closed.
 */
#if defined(__GNUC__) || defined(__clang__)
#define AXSTM__TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define AXSTM__TLS _Thread_local
#endif

/* For the few steps of every commit that the compiler would otherwise
 * call out of line (a call there costs more than the step). */
#if defined(__GNUC__) || defined(__clang__)
#define AXSTM__ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define AXSTM__ALWAYS_INLINE inline
#endif

/* For a rare path that the compiler would otherwise inline into a hot one,
 * where its registers and stack cost the hot path on every call. */
#if defined(__GNUC__) || defined(__clang__)
#define AXSTM__NOINLINE __attribute__((noinline))
#else
#define AXSTM__NOINLINE
#endif

/* This thread's slot + 1; 0 until its first call. */
extern AXSTM__TLS unsigned axstm__slot_plus_one;
unsigned axstm__slot_assign(void);

/* In the child of fork() (fork.c), where the calling thread is the only
 * one: every slot but the caller's own is free again.  (A store made
 * before the fork keeps whatever pins those threads held in it: axstm.h
 * says what a child may do with such a store.) */
void axstm__slots_after_fork(void);

/* The calling thread's slot: below AXSTM__SLOTS its own, else shared. */
static inline unsigned axstm__thread_slot(void)
{
    unsigned s = axstm__slot_plus_one;
    return s != 0 ? s - 1 : axstm__slot_assign();
}

/* Adds d to a counter of the calling thread's slot `slot` (wrapping);
 * returns the counter's value before the add. */
static inline uint64_t axstm__slot_fetch_add(_Atomic uint64_t *counter, uint64_t d, unsigned slot)
{
    if (slot >= AXSTM__SLOTS)
        return atomic_fetch_add_explicit(counter, d, memory_order_relaxed);
    uint64_t before = atomic_load_explicit(counter, memory_order_relaxed);
    atomic_store_explicit(counter, before + d, memory_order_relaxed);
    return before;
}

/* Adds d to a counter of the calling thread's slot `slot` (wrapping). */
static inline void axstm__slot_add(_Atomic uint64_t *counter, uint64_t d, unsigned slot)
{
    (void)axstm__slot_fetch_add(counter, d, slot);
}

/* Around system calls that are cancellation points (getrandom, read, write,
 * close): no call but axstm_atomically's sleeps may act on a cancellation
 * request (axstm.h), since acting there would leak what the call holds.
 * The request stays pending for the caller's next cancellation point.
 * axstm__cancel_off returns the caller's state, to give to the other. */
static inline int axstm__cancel_off(void)
{
    int state;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &state);
    return state;
}

static inline void axstm__cancel_restore(int state)
{
    pthread_setcancelstate(state, NULL);
}

#endif
