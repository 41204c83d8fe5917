/* SPDX-License-Identifier: MIT */
/*
 * thread.c -- assigning per-thread slots; see thread.h.
 */
#include "thread.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

AXSTM__TLS unsigned axstm__slot_plus_one;

/* Bit i set: slot i belongs to a live thread. */
static _Atomic uint64_t taken;

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t slot_key;
static bool key_ok;

_Static_assert(AXSTM__SLOTS == 64, "the taken bitmap is one 64-bit word");

/* At thread exit: the slot goes back.  Should the thread call the library
 * again (from a later destructor), it uses the shared slot. */
static void give_back(void *arg)
{
    unsigned slot = (unsigned)(uintptr_t)arg - 1;
    axstm__slot_plus_one = AXSTM__SHARED_SLOT + 1;
    atomic_fetch_and_explicit(&taken, ~(UINT64_C(1) << slot), memory_order_release);
}

static void make_key(void)
{
    key_ok = pthread_key_create(&slot_key, give_back) == 0;
}

unsigned axstm__slot_assign(void)
{
    unsigned slot = AXSTM__SHARED_SLOT;
    pthread_once(&key_once, make_key);
    uint64_t t = atomic_load_explicit(&taken, memory_order_relaxed);
    while (key_ok && t != UINT64_MAX) {
        unsigned free_slot = (unsigned)__builtin_ctzll(~t);
        /* Acquire: whatever the slot's last owner wrote is seen here. */
        if (atomic_compare_exchange_weak_explicit(&taken, &t, t | UINT64_C(1) << free_slot,
                                                  memory_order_acquire, memory_order_relaxed)) {
            if (pthread_setspecific(slot_key, (void *)(uintptr_t)(free_slot + 1)) == 0)
                slot = free_slot;
            else /* no destructor to give it back: give it back now */
                atomic_fetch_and_explicit(&taken, ~(UINT64_C(1) << free_slot),
                                          memory_order_release);
            break;
        }
    }
    axstm__slot_plus_one = slot + 1;
    return slot;
}

void axstm__slots_after_fork(void)
{
    unsigned s = axstm__slot_plus_one;
    uint64_t mine = s != 0 && s - 1 < AXSTM__SLOTS ? UINT64_C(1) << (s - 1) : 0;
    atomic_store_explicit(&taken, mine, memory_order_relaxed);
}
