/*
 * epoch.h -- epoch-based memory reclamation without thread registration.
 *
 * Readers never lock and never write to the things they read, so a writer
 * cannot free an old value (or an old table array) the moment it replaces
 * it: a reader may still be looking at it.  Instead the writer *retires* it,
 * and it is freed once every reader that could have seen it has finished.
 *
 * Readers bracket their reads with pin/unpin.  A pin increments one of two
 * counters (by the parity of the global epoch) in one of AXSTM__SLOTS
 * cache-line-sized slots, chosen by a per-thread index; threads do not
 * register, they are simply hashed onto slots, and slots may be shared.
 * The global epoch may advance from e to e+1 only when no reader is pinned
 * in e-1, so something retired while the epoch was e is unreachable by any
 * pinned reader once the epoch reaches e+2.
 *
 * Cost of a pin: two loads of the epoch and one atomic add on a slot that is
 * normally private to the thread; no shared cache line is written.
 */
#ifndef AXSTM_EPOCH_H
#define AXSTM_EPOCH_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define AXSTM__SLOTS 64
#define AXSTM__CACHELINE 64

/*
 * Thread-local storage for the hot paths.  In a shared library the default
 * model calls __tls_get_addr on every access; initial-exec makes it one
 * load from the thread pointer.  It takes a little of the static TLS space
 * the C library keeps for libraries (ours: a few words), so the library can
 * still be loaded with dlopen.
 */
#if defined(__GNUC__) || defined(__clang__)
#define AXSTM__TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define AXSTM__TLS _Thread_local
#endif

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
    _Atomic(struct axstm__retired *) retired;
    _Atomic uint64_t nretired;
};

struct axstm__epoch {
    _Alignas(2 * AXSTM__CACHELINE) _Atomic uint64_t now;
    void *owner; /* passed to every reclaim function */
    struct axstm__epoch_slot slot[AXSTM__SLOTS];
};

/* This thread's small integer index (assigned on first use, never reused). */
extern AXSTM__TLS unsigned axstm__thread_index_plus_one;
unsigned axstm__thread_index_assign(void);

static inline unsigned axstm__thread_index(void)
{
    unsigned i = axstm__thread_index_plus_one;
    return i != 0 ? i - 1 : axstm__thread_index_assign();
}

void axstm__epoch_init(struct axstm__epoch *ep, void *owner);

/* Reclaims everything still retired.  Only when no thread uses the owner. */
void axstm__epoch_drain(struct axstm__epoch *ep);

/* Pins the calling thread; returns the token to give to unpin.  Nestable. */
unsigned axstm__epoch_pin(struct axstm__epoch *ep);
void axstm__epoch_unpin(struct axstm__epoch *ep, unsigned token);

/*
 * Retires node (already unreachable for new readers); reclaim(node, owner)
 * runs once no pinned reader can still hold it.  weight is the memory it
 * holds, so big things are reclaimed sooner.  Returns non-zero when the
 * caller should call axstm__epoch_reclaim soon (outside any lock it holds).
 */
int axstm__epoch_retire(struct axstm__epoch *ep, struct axstm__retired *node,
                        axstm__reclaim_fn reclaim, size_t weight);

/* Tries to advance the epoch and reclaims what is old enough in this
 * thread's slot.  Never blocks. */
void axstm__epoch_reclaim(struct axstm__epoch *ep);

#endif
