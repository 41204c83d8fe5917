/*
 * epoch.c -- epoch-based reclamation; see epoch.h for the idea.
 *
 * The epoch and the reclaimer's reads of the pin counts are sequentially
 * consistent, and so is a pin (a seq_cst fence after the increment, see
 * epoch.h): the proof that a retired node is unreachable relies on a
 * reader's pin being ordered before its loads of shared pointers, and on a
 * retirer's unlink being ordered before its read of the epoch.
 */
#include "axstm-internal.h"

/* Retire this many nodes on one slot between reclaim attempts... */
#define RECLAIM_EVERY 64
/* ...or sooner when a node holds at least this much memory. */
#define RECLAIM_HEAVY ((size_t)64 * 1024)

static struct axstm__epoch_slot *my_slot(struct axstm__epoch *ep)
{
    return &ep->slot[axstm__thread_slot()];
}

void axstm__epoch_init(struct axstm__epoch *ep, void *owner)
{
    /* Start at 2 so that "epoch - 1" and "epoch + 2" never wrap around. */
    atomic_init(&ep->now, 2);
    ep->owner = owner;
    for (size_t i = 0; i < AXSTM__ALL_SLOTS; i++) {
        atomic_init(&ep->slot[i].pins[0], 0);
        atomic_init(&ep->slot[i].pins[1], 0);
        atomic_init(&ep->slot[i].retired, NULL);
        atomic_init(&ep->slot[i].nretired, 0);
    }
}

/* Advances the epoch from e to e+1 if nobody is pinned in e-1. */
static void try_advance(struct axstm__epoch *ep)
{
    uint64_t e = atomic_load(&ep->now);
    unsigned parity = (unsigned)((e - 1) & 1);
    for (size_t i = 0; i < AXSTM__ALL_SLOTS; i++)
        if (atomic_load(&ep->slot[i].pins[parity]) != 0)
            return;
    atomic_compare_exchange_strong(&ep->now, &e, e + 1);
}

static void push_chain(struct axstm__epoch_slot *slot, struct axstm__retired *first,
                       struct axstm__retired *last)
{
    struct axstm__retired *head = atomic_load_explicit(&slot->retired, memory_order_relaxed);
    do
        last->next = head;
    while (!atomic_compare_exchange_weak_explicit(&slot->retired, &head, first,
                                                  memory_order_release,
                                                  memory_order_relaxed));
}

int axstm__epoch_retire(struct axstm__epoch *ep, struct axstm__retired *node,
                        axstm__reclaim_fn reclaim, size_t weight)
{
    struct axstm__epoch_slot *slot = my_slot(ep);
    node->reclaim = reclaim;
    /* The node was unlinked before this point; the fence orders that
     * unlink before the epoch read that dates the node. */
    atomic_thread_fence(memory_order_seq_cst);
    node->epoch = atomic_load(&ep->now);
    push_chain(slot, node, node);
    uint64_t n = atomic_fetch_add_explicit(&slot->nretired, 1, memory_order_relaxed) + 1;
    return n % RECLAIM_EVERY == 0 || weight >= RECLAIM_HEAVY;
}

/* Reclaims the old-enough nodes of one slot; puts the others back. */
static void reclaim_slot(struct axstm__epoch *ep, struct axstm__epoch_slot *slot)
{
    struct axstm__retired *node = atomic_exchange_explicit(&slot->retired, NULL,
                                                           memory_order_acquire);
    if (node == NULL)
        return;
    uint64_t now = atomic_load(&ep->now);
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

void axstm__epoch_reclaim(struct axstm__epoch *ep)
{
    /* Two advances make everything retired before this call reclaimable
     * when no reader is in the way; cheap when one is (a scan of counters). */
    try_advance(ep);
    try_advance(ep);
    reclaim_slot(ep, my_slot(ep));
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
