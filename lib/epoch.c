/* SPDX-License-Identifier: MIT */
/*
 * epoch.c -- epoch-based reclamation; see epoch.h for the idea.
 *
 * The epoch and the reclaimer's reads of the pin counts are sequentially
 * consistent: the proof that a retired node is unreachable relies on a
 * reader's pin being ordered before its loads of shared pointers, and on a
 * retirer's unlink being ordered before its read of the epoch.
 *
 * The reader's side of that order is paid by the reclaimer where the
 * system allows (Linux membarrier): a pin is then a plain store, and
 * try_advance, before it trusts a pin count of zero, makes every running
 * thread of the process execute a full barrier.  A pin store still in a
 * reader's store buffer is then visible; a reader whose pin comes after
 * that barrier reads the epoch and the pointers afterwards, so it sees the
 * unlinks made before it.  Without membarrier each pin executes the fence
 * itself (epoch.h).  Readers pin on every checkout and transaction, while
 * reclaiming is rare, and a fence in a reader also keeps the CPU from
 * overlapping that reader's cache misses with the next operation's.
 */
#include "epoch.h"

#include "fork.h"
#include "thread.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/*
 * A slot asks for a reclaim each time the weight retired into it crosses a
 * multiple of RECLAIM_BYTES, a node weighing what it holds but at least
 * RECLAIM_BYTES / RECLAIM_EVERY: so after at most RECLAIM_EVERY small
 * nodes, or as soon as RECLAIM_BYTES of big ones have piled up (at once
 * for a node that big).  Once a slot's threads stop retiring, what they
 * left on its list is under RECLAIM_BYTES past their last reclaim, and the
 * other threads' reclaims free even that (axstm__epoch_reclaim).  A reclaim
 * costs two scans of the pin counts and, unfenced, two system calls: at
 * most one per RECLAIM_BYTES retired, that is little next to copying the
 * bytes in the first place.
 */
#define RECLAIM_EVERY 256
#define RECLAIM_BYTES ((uint64_t)256 * 1024)

_Atomic bool axstm__pins_unfenced;
AXSTM__TLS struct axstm__epoch *axstm__reclaim_wanted;

static pthread_once_t barrier_once = PTHREAD_ONCE_INIT;

/* Registers for expedited membarrier; pins go unfenced if that works. */
static void barrier_setup(void)
{
#if defined(__linux__) && defined(SYS_membarrier)
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0);
    if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        (cmds & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0)
        atomic_store(&axstm__pins_unfenced, true);
#endif
}

/* A full barrier in every running thread of the process (see the top).
 * A child made by fork may not have inherited the registration: it then
 * registers again, once per failure. */
bool axstm__barrier_everywhere(void)
{
#if defined(__linux__) && defined(SYS_membarrier)
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0)
        return true;
    return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0 &&
           syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0;
#else
    return false;
#endif
}

void axstm__epoch_init(struct axstm__epoch *ep, void *owner)
{
    /* Before the store exists, so before any pin anywhere: every thread
     * that pins sees the flag as every reclaimer does. */
    pthread_once(&barrier_once, barrier_setup);
    /* Start at 2 so that "epoch - 1" and "epoch + 2" never wrap around. */
    atomic_init(&ep->now, 2);
    ep->owner = owner;
    for (size_t i = 0; i < AXSTM__ALL_SLOTS; i++) {
        atomic_init(&ep->slot[i].pins[0], 0);
        atomic_init(&ep->slot[i].pins[1], 0);
        atomic_init(&ep->slot[i].retired, NULL);
        atomic_init(&ep->slot[i].weight, 0);
        atomic_init(&ep->slot[i].walked, 0);
    }
    atomic_init(&ep->swept, 0);
}

static bool anyone_pinned(struct axstm__epoch *ep, unsigned parity)
{
    for (size_t i = 0; i < AXSTM__ALL_SLOTS; i++)
        if (atomic_load(&ep->slot[i].pins[parity]) != 0)
            return true;
    return false;
}

unsigned axstm__epoch_pin_slow(struct axstm__epoch *ep, unsigned index, uint64_t e)
{
    struct axstm__epoch_slot *slot = &ep->slot[index];
    for (;;) {
        axstm__pin_add(&slot->pins[e & 1], 1, index);
        /* As in axstm__epoch_pin: the pin counts only if e still holds. */
        uint64_t again = atomic_load(&ep->now);
        if (again == e)
            return index << 1 | (unsigned)(e & 1);
        axstm__pin_add(&slot->pins[e & 1], (uint64_t)-1, index);
        e = again;
    }
}

/* Advances the epoch from e to e+1 if nobody is pinned in e-1. */
static void try_advance(struct axstm__epoch *ep)
{
    /* The epoch is read before the barrier: a reader whose pin the scan
     * misses then re-checks the epoch after the barrier, sees at least e,
     * and is pinned in e or later, which this advance does not need. */
    uint64_t e = atomic_load(&ep->now);
    unsigned parity = (unsigned)((e - 1) & 1);
    if (anyone_pinned(ep, parity))
        return; /* visibly pinned: no need to look closer */
    if (atomic_load_explicit(&axstm__pins_unfenced, memory_order_relaxed)) {
        if (!axstm__barrier_everywhere() || anyone_pinned(ep, parity))
            return; /* (a failed barrier proves nothing: do not advance) */
    }
    atomic_compare_exchange_strong(&ep->now, &e, e + 1);
}

static void push_chain(struct axstm__epoch_slot *slot, struct axstm__retired *first,
                       struct axstm__retired *last)
{
    struct axstm__retired *head = atomic_load_explicit(&slot->retired, memory_order_relaxed);
    do
        last->next = head;
    while (!atomic_compare_exchange_weak_explicit(&slot->retired, &head, first,
                                                  memory_order_release, memory_order_relaxed));
}

int axstm__epoch_retire(struct axstm__epoch *ep, struct axstm__retired *node,
                        axstm__reclaim_fn reclaim, size_t weight)
{
    unsigned index = axstm__thread_slot();
    struct axstm__epoch_slot *slot = &ep->slot[index];
    node->reclaim = reclaim;
    /* The node was unlinked before this point; the fence orders that
     * unlink before the epoch read that dates the node. */
    atomic_thread_fence(memory_order_seq_cst);
    node->epoch = atomic_load(&ep->now);
    push_chain(slot, node, node);
    /* A plain update in a slot of our own (the push above is the one
     * locked instruction a retire needs: other reclaimers take the list). */
    uint64_t w = weight > RECLAIM_BYTES / RECLAIM_EVERY ? weight : RECLAIM_BYTES / RECLAIM_EVERY;
    uint64_t before = axstm__slot_fetch_add(&slot->weight, w, index);
    return (before + w) / RECLAIM_BYTES != before / RECLAIM_BYTES;
}

/* Reclaims the nodes of one slot retired before now - 1; puts the others
 * back.  Any thread may do this to any slot, several at once: each takes
 * what is on the list at that instant. */
static void reclaim_slot(struct axstm__epoch *ep, struct axstm__epoch_slot *slot, uint64_t now)
{
    struct axstm__retired *node =
        atomic_exchange_explicit(&slot->retired, NULL, memory_order_acquire);
    if (node == NULL)
        return;
    struct axstm__retired *keep_first = NULL, *keep_last = NULL;
    while (node != NULL) {
        struct axstm__retired *next = node->next;
        if (node->epoch + 2 <= now) {
            node->reclaim(node, ep->owner);
        } else {
            node->next = keep_first;
            keep_first = node;
            if (keep_last == NULL)
                keep_last = node;
        }
        node = next;
    }
    if (keep_first != NULL)
        push_chain(slot, keep_first, keep_last);
}

static void reclaim(struct axstm__epoch *ep);

void axstm__epoch_reclaim(struct axstm__epoch *ep)
{
    /* A reclaimer holds the lists it took off the slots while it frees
     * them: no fork may copy that (fork.h).  Closed: reclaim next time. */
    unsigned gate = axstm__gate_enter();
    if (gate == AXSTM__GATE_CLOSED)
        return;
    reclaim(ep);
    axstm__gate_leave(gate);
}

static void reclaim(struct axstm__epoch *ep)
{
    /* Two advances make everything retired before this call reclaimable
     * when no reader is in the way; cheap when one is (a scan of counters). */
    try_advance(ep);
    try_advance(ep);
    uint64_t now = atomic_load(&ep->now);
    unsigned index = axstm__thread_slot();
    struct axstm__epoch_slot *mine = &ep->slot[index];

    /* Our own list, unless we went through it at this epoch already: then
     * nothing on it has grown old enough since (what we retired since is
     * dated this epoch or later).  While a reader stays pinned for long the
     * epoch stands still, and the list is not walked again and again. */
    if (atomic_load_explicit(&mine->walked, memory_order_relaxed) != now) {
        atomic_store_explicit(&mine->walked, now, memory_order_relaxed);
        reclaim_slot(ep, mine, now);
    }

    /* Every other slot's list, by the first reclaim to see this epoch: a
     * thread that went idle or exited (its slot perhaps reused by a thread
     * that never retires) reclaims nothing itself.  Once per epoch, for the
     * same reason as above; the lists are taken whole, so two reclaimers
     * never free one node twice. */
    uint64_t swept = atomic_load_explicit(&ep->swept, memory_order_relaxed);
    if (swept == now || !atomic_compare_exchange_strong(&ep->swept, &swept, now))
        return;
    for (unsigned i = 0; i < AXSTM__ALL_SLOTS; i++)
        if (i != index && atomic_load_explicit(&ep->slot[i].retired, memory_order_relaxed) != NULL)
            reclaim_slot(ep, &ep->slot[i], now);
}

void axstm__epoch_drain(struct axstm__epoch *ep)
{
    for (size_t i = 0; i < AXSTM__ALL_SLOTS; i++) {
        struct axstm__retired *node = atomic_exchange(&ep->slot[i].retired, NULL);
        while (node != NULL) {
            struct axstm__retired *next = node->next;
            node->reclaim(node, ep->owner);
            node = next;
        }
    }
}
