/* SPDX-License-Identifier: MIT */
/*
 * txn.c -- transactions: axstm_atomically, AXSTM_RETRY and axstm_or_else.
 *
 * The design is TL2's (Dice, Shalev, Shavit), on the store's own pieces:
 * the store clock and the per-key version locks that handles already use.
 *
 *   - An attempt starts by reading the clock: its snapshot stamp `rv`.
 *   - A read takes no lock: it reads the key under its lock word and checks
 *     that the word's stamp is at most rv, i.e. that the key was last
 *     committed before the snapshot.  A newer key does not abort at once:
 *     the snapshot is extended (a new rv, after checking that nothing read
 *     so far has changed), which keeps long read-mostly attempts alive.
 *     Every read is therefore consistent with all earlier reads (opacity),
 *     and a read-only transaction commits without writing anything shared.
 *   - Writes go to a private log (read-your-own-writes) and are published by
 *     commit.c, which locks the written keys, checks that every key read is
 *     unchanged, and publishes.  Only written keys get new versions.
 *   - Keys that do not exist are not created: reading, writing or deleting
 *     one uses a gone entry (entry.h), which only a commit that writes it
 *     brings to life, so a transaction that does not commit leaves no key
 *     behind.  Reading a gone entry records its lock word like any read,
 *     so validation and waiting (for the key to appear) work the same.
 *     Gone entries nobody uses are taken out when the run ends.
 *   - After IRREVOCABLE_AFTER failed attempts in a row the transaction runs
 *     irrevocably: alone among irrevocable transactions (a store mutex), it
 *     locks each key when it first touches it, waiting out the few
 *     instructions of any commit holding it.  Nothing can then change under
 *     it, so that attempt cannot fail: no transaction starves.  (A timed
 *     call's deadline ends that waiting too, and the call with it.)
 *
 * The write log is append-only within an attempt, so axstm_or_else can drop
 * a branch's writes by marking them dead, and every byte handed out by
 * axstm_txn_get stays valid until the attempt ends: blobs are kept alive by
 * the attempt's pin or its write log, and small inline values are copied
 * into a per-attempt byte arena (the arrays themselves may move as they
 * grow, so they cannot be pointed into).
 */
#include "axstm-internal.h"
#include "pacing.h"
#include "redis_txn.h"

#include <sched.h>
#include <string.h>
#include <time.h>

#define IRREVOCABLE_AFTER 8
#define INLINE_READS 32
#define INLINE_WRITES 8
#define INLINE_ANCHORS 8
#define INLINE_BYTES 256
#define BYTES_CHUNK 4096
#define RECENT_KEYS 8
/* room_now of a run's first attempt: its arrays inline and empty. */
#define MIN2(a, b) ((a) < (b) ? (a) : (b))
#define FRESH_ROOM \
    MIN2(MIN2(INLINE_READS, INLINE_WRITES), MIN2(INLINE_ANCHORS, INLINE_BYTES / AXSTM__INLINE_MAX))

struct txn_write {
    struct axstm__item item; /* entry, version (set at commit), value */
    bool live;               /* false once an or_else branch is dropped */
};

struct txn_lock {
    struct axstm__entry *entry;
    uint64_t old; /* the lock word to restore if the key is not written */
};

/* More room for inline bytes handed out by axstm_txn_get. */
struct bytes_chunk {
    struct bytes_chunk *next;
    size_t used;
    _Alignas(8) unsigned char data[BYTES_CHUNK];
};

/* A growable array whose first elements live inside the transaction. */
#define TXN_ARRAY(type) \
    struct {            \
        type *v;        \
        size_t n, cap;  \
    }

/* A key string this run looked up, and its entry. */
struct recent_key {
    const char *key;
    struct axstm__entry *entry;
};

struct axstm_txn {
    axstm_store *store;
    const struct timespec *deadline; /* of a timed call; NULL otherwise */
    uint64_t rv;
    bool irrevocable;
    bool touched_gone; /* this attempt used a gone entry */
    unsigned pin;
    /* The last keys looked up, by the address of the caller's string: a
     * body nearly always reads a key and then writes it, passing the same
     * string both times.  They stay right across attempts while the
     * table's removal count does not move (table.h). */
    struct recent_key recent[RECENT_KEYS];
    unsigned nrecent, recent_next;
    uint64_t recent_removals;
    TXN_ARRAY(struct axstm__read) reads;
    TXN_ARRAY(struct txn_write) writes;
    TXN_ARRAY(struct txn_lock) locks; /* irrevocable attempts only */
    /* Gone entries this attempt added (reading, writing or deleting a key
     * that does not exist): anchored until the attempt ends, so that no
     * table rebuild (not even one of this attempt's own) takes them out
     * from under its reads. */
    TXN_ARRAY(struct axstm__entry *) anchors;
    const struct axstm__run_mode *mode;
    bool waiting; /* wait registered by the last attempt */
    struct axstm__wait wait;
    struct axstm__read reads_inline[INLINE_READS];
    struct txn_write writes_inline[INLINE_WRITES];
    struct axstm__entry *anchors_inline[INLINE_ANCHORS];
    size_t bytes_used;
    struct bytes_chunk *chunks;
    /* Accesses (gets, sets, deletes) that will find room for all they
     * record without allocating: counted down by each, recounted when it
     * reaches 0 (see prepare_access). */
    size_t room;
    _Alignas(8) unsigned char bytes_inline[INLINE_BYTES];
};

/* The transaction running on this thread: bodies must not nest them. */
static AXSTM__TLS axstm_txn *running;

/* Makes room for one more element; inline_buf is the array's first home. */
static int reserve_one(void **v, size_t n, size_t *cap, size_t size, void *inline_buf)
{
    if (n < *cap)
        return AXSTM_OK;
    size_t want = *cap ? *cap * 2 : 8;
    if (want > SIZE_MAX / size)
        return AXSTM_ENOMEM;
    void *grown = axstm__malloc(want * size);
    if (grown == NULL)
        return AXSTM_ENOMEM;
    if (n != 0)
        memcpy(grown, *v, n * size);
    if (*v != inline_buf)
        axstm__free(*v);
    *v = grown;
    *cap = want;
    return AXSTM_OK;
}

#define RESERVE(arr, inline_buf) \
    reserve_one((void **)&(arr).v, (arr).n, &(arr).cap, sizeof *(arr).v, (void *)(inline_buf))

/* ------------------------------------------------------------------ */
/* Keys                                                               */
/* ------------------------------------------------------------------ */

/* A key looked up recently, found without hashing.  The same address is
 * only a hint (the caller may have rewritten its buffer): the bytes decide. */
static inline struct axstm__entry *recently_found(const axstm_txn *tx, const char *key, size_t len)
{
    for (unsigned i = 0; i < tx->nrecent; i++)
        if (tx->recent[i].key == key) {
            struct axstm__entry *e = tx->recent[i].entry;
            if (e->keylen == len && axstm__same_bytes(e->key, key, len))
                return e;
        }
    return NULL;
}

static int find_entry_slow(axstm_txn *tx, const char *key, size_t len, bool add,
                           struct axstm__entry **out);

/* Finds key's entry (len bytes, already checked).  A key that does not
 * exist gets a gone entry when `add` is set; otherwise *out is NULL.
 * Inline for a key the body used just before (a read, then its write);
 * the table lookup is out of line. */
static inline int find_entry(axstm_txn *tx, const char *key, size_t len, bool add,
                             struct axstm__entry **out)
{
    if ((*out = recently_found(tx, key, len)) != NULL)
        return AXSTM_OK;
    return find_entry_slow(tx, key, len, add, out);
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline))
#endif
static int
find_entry_slow(axstm_txn *tx, const char *key, size_t len, bool add, struct axstm__entry **out)
{
    int rc = AXSTM_OK;
    struct axstm__keyref ref = {key, len, 0, NULL};
    axstm__table_find(&tx->store->table, &ref);
    if (ref.entry == NULL && add) {
        bool anchored;
        rc = axstm__table_add(&tx->store->table, &ref, 1, &anchored);
        if (rc == AXSTM_OK && anchored) /* room was reserved */
            tx->anchors.v[tx->anchors.n++] = ref.entry;
    }
    if (rc == AXSTM_OK && ref.entry != NULL) {
        *out = ref.entry;
        tx->recent[tx->recent_next] = (struct recent_key){key, ref.entry};
        tx->recent_next = (tx->recent_next + 1) % RECENT_KEYS;
        if (tx->nrecent < RECENT_KEYS)
            tx->nrecent++;
    }
    return rc;
}

/* The latest live write of e in this attempt, or NULL. */
static struct txn_write *find_write(axstm_txn *tx, const struct axstm__entry *e)
{
    for (size_t i = tx->writes.n; i-- > 0;)
        if (tx->writes.v[i].live && tx->writes.v[i].item.entry == e)
            return &tx->writes.v[i];
    return NULL;
}

/* Irrevocable attempts: lock e unless this attempt already has; *old gets
 * the word e had before this attempt locked it. */
static int lock_entry(axstm_txn *tx, struct axstm__entry *e, uint64_t *old)
{
    for (size_t i = 0; i < tx->locks.n; i++)
        if (tx->locks.v[i].entry == e) {
            *old = tx->locks.v[i].old;
            return AXSTM_OK;
        }
    int rc = RESERVE(tx->locks, NULL);
    if (rc != AXSTM_OK)
        return rc;
    /* Whoever holds it is a commit in progress, which never waits while
     * holding locks (and no other irrevocable attempt exists): short.  But
     * under a stream of commits the key may be free only for moments that
     * we keep missing, so a timed call stops at its deadline: the body
     * passes BUSY_RETRY back, and the call times out.  A dead entry stays
     * locked: the key must be looked up again. */
    if (!axstm__entry_trylock(e, old)) {
        /* Commits that have not locked it yet now leave it to us. */
        _Atomic(struct axstm__entry *) *wants = &tx->store->irrevocable_wants;
        atomic_store_explicit(wants, e, memory_order_relaxed);
        rc = AXSTM_OK;
        for (unsigned spins = 0; !axstm__entry_trylock(e, old); spins++) {
            if (axstm__entry_vlock_relaxed(e) == AXSTM__DEAD) {
                rc = AXSTM_CONCURRENT_UPDATE;
                break;
            }
            if (spins % 64 == 63) {
                if (axstm__past(tx->deadline)) {
                    rc = AXSTM_BUSY_RETRY;
                    break;
                }
                sched_yield();
            }
        }
        atomic_store_explicit(wants, NULL, memory_order_relaxed);
        if (rc != AXSTM_OK)
            return rc;
    }
    tx->locks.v[tx->locks.n++] = (struct txn_lock){e, *old};
    return AXSTM_OK;
}

static void unlock_all(axstm_txn *tx)
{
    for (size_t i = 0; i < tx->locks.n; i++)
        axstm__entry_restore(tx->locks.v[i].entry, tx->locks.v[i].old);
    tx->locks.n = 0;
}

/* ------------------------------------------------------------------ */
/* Reads                                                              */
/* ------------------------------------------------------------------ */

/* Advances the store clock to at least stamp (commits leave that to us:
 * see choose_stamp in commit.c). */
static void advance_clock(axstm_store *s, uint64_t stamp)
{
    uint64_t now = atomic_load(&s->clock);
    while (now < stamp && !atomic_compare_exchange_weak(&s->clock, &now, stamp))
        ;
}

/* Moves the snapshot forward to now, if nothing read so far has changed. */
static int extend_snapshot(axstm_txn *tx)
{
    uint64_t now = atomic_load(&tx->store->clock);
    if (axstm__reads_changed(tx->reads.v, tx->reads.n))
        return AXSTM_CONCURRENT_UPDATE;
    tx->rv = now;
    return AXSTM_OK;
}

/* Reads e's committed value into *val, consistently with the snapshot, and
 * records the read.  A blob in *val lives as long as the attempt's pin. */
static int read_entry(axstm_txn *tx, struct axstm__entry *e, struct axstm__val *val)
{
    int rc;
    uint64_t vlock, version;
    if (tx->irrevocable) {
        rc = lock_entry(tx, e, &vlock); /* then nobody can change it */
        if (rc != AXSTM_OK)
            return rc;
        *val = axstm__entry_val_locked(e);
    } else {
        for (;;) {
            rc = axstm__entry_read(e, &vlock, &version, val);
            if (rc != AXSTM_OK)
                return rc;
            if (axstm__lock_stamp(vlock) <= tx->rv)
                break;
            advance_clock(tx->store, axstm__lock_stamp(vlock));
            rc = extend_snapshot(tx);
            if (rc != AXSTM_OK)
                return rc;
        }
    }
    tx->touched_gone |= axstm__lock_gone(vlock);
    tx->reads.v[tx->reads.n++] = (struct axstm__read){e, vlock};
    return AXSTM_OK;
}

/* Makes sure keep_bytes will find room without allocating. */
static int reserve_bytes(axstm_txn *tx)
{
    if (tx->bytes_used + AXSTM__INLINE_MAX <= INLINE_BYTES)
        return AXSTM_OK;
    struct bytes_chunk *c = tx->chunks;
    if (c != NULL && c->used + AXSTM__INLINE_MAX <= BYTES_CHUNK)
        return AXSTM_OK;
    c = axstm__malloc(sizeof *c);
    if (c == NULL)
        return AXSTM_ENOMEM;
    c->next = tx->chunks;
    c->used = 0;
    tx->chunks = c;
    return AXSTM_OK;
}

/* A copy of a small value's bytes that stays put until the attempt ends.
 * reserve_bytes came first. */
static const void *keep_bytes(axstm_txn *tx, const void *src, size_t len)
{
    unsigned char *p;
    if (tx->bytes_used + AXSTM__INLINE_MAX <= INLINE_BYTES) {
        p = tx->bytes_inline + tx->bytes_used;
        tx->bytes_used += AXSTM__INLINE_MAX;
    } else {
        p = tx->chunks->data + tx->chunks->used;
        tx->chunks->used += AXSTM__INLINE_MAX;
    }
    memcpy(p, src, len);
    return p;
}

static void forget_bytes(axstm_txn *tx)
{
    while (tx->chunks != NULL) {
        struct bytes_chunk *next = tx->chunks->next;
        axstm__free(tx->chunks);
        tx->chunks = next;
    }
    tx->bytes_used = 0;
}

/* How many accesses can still record what they record without allocating:
 * each records at most one read, one write, one anchor and one kept value
 * (lock_entry makes its own room, so an irrevocable attempt counts none). */
static size_t room_now(const axstm_txn *tx)
{
    if (tx->irrevocable)
        return 0;
    size_t room = tx->reads.cap - tx->reads.n;
    if (room > tx->writes.cap - tx->writes.n)
        room = tx->writes.cap - tx->writes.n;
    if (room > tx->anchors.cap - tx->anchors.n)
        room = tx->anchors.cap - tx->anchors.n;
    size_t bytes = tx->bytes_used <= INLINE_BYTES - AXSTM__INLINE_MAX
                       ? (INLINE_BYTES - tx->bytes_used) / AXSTM__INLINE_MAX
                   : tx->chunks != NULL ? (BYTES_CHUNK - tx->chunks->used) / AXSTM__INLINE_MAX
                                        : 0;
    return room < bytes ? room : bytes;
}

/* Everything a get or set may allocate, done before its key may be created,
 * so that a failed call leaves the store as it was; then the room counted
 * again, less this access's. */
static int reserve_for_access_slow(axstm_txn *tx)
{
    int rc = RESERVE(tx->reads, tx->reads_inline);
    if (rc == AXSTM_OK)
        rc = RESERVE(tx->writes, tx->writes_inline);
    if (rc == AXSTM_OK)
        rc = RESERVE(tx->anchors, tx->anchors_inline);
    if (rc == AXSTM_OK && tx->irrevocable)
        rc = RESERVE(tx->locks, NULL);
    if (rc == AXSTM_OK)
        rc = reserve_bytes(tx);
    if (rc == AXSTM_OK && (tx->room = room_now(tx)) != 0)
        tx->room--;
    return rc;
}

/* What every access of the running body does before it looks its key up:
 * checks the key (*keylen gets its length), and makes room for what the
 * access records, so that nothing fails after an entry is added. */
static inline int prepare_access(axstm_txn *tx, const char *key, size_t *keylen)
{
    int rc = axstm__check_key(key, keylen);
    if (rc != AXSTM_OK)
        return rc;
    /* The common case first: room everywhere, nothing to allocate. */
    if (tx->room != 0) {
        tx->room--;
        return AXSTM_OK;
    }
    return reserve_for_access_slow(tx);
}

/* The entry of key for a get or a delete in the running body, a gone
 * entry added for a missing key. */
static inline int access_entry(axstm_txn *tx, const char *key, struct axstm__entry **e)
{
    if (tx == NULL || tx != running)
        return AXSTM_EINVAL;
    size_t keylen;
    int rc = prepare_access(tx, key, &keylen);
    if (rc == AXSTM_OK)
        rc = find_entry(tx, key, keylen, true, e);
    return rc;
}

/* The value of key as this attempt sees it (its own latest write, else the
 * snapshot's), into *val: a blob there lives until the attempt ends. */
static inline int get_value(axstm_txn *tx, const char *key, struct axstm__val *val)
{
    struct axstm__entry *e;
    int rc = access_entry(tx, key, &e);
    if (rc != AXSTM_OK)
        return rc;
    struct txn_write *w = find_write(tx, e);
    if (w != NULL) {
        *val = w->item.val;
        return AXSTM_OK;
    }
    return read_entry(tx, e, val);
}

/* A remote transaction's values stay put until its attempt ends: handed
 * out as they are. */
static int remote_get(axstm_txn *tx, const char *key, const void **data, size_t *len)
{
    const struct axstm__val *val;
    int rc = axstm__remote_get(tx, key, &val);
    if (rc != AXSTM_OK)
        return rc;
    size_t n;
    const void *bytes = axstm__val_data(val, &n);
    if (bytes == NULL)
        return AXSTM_ENOVALUE;
    if (data != NULL)
        *data = bytes;
    if (len != NULL)
        *len = n;
    return AXSTM_OK;
}

AXSTM_API int axstm_txn_get(axstm_txn *tx, const char *key, const void **data, size_t *len)
{
    if (tx != running)
        return remote_get(tx, key, data, len);
    struct axstm__val val;
    int rc = get_value(tx, key, &val);
    if (rc != AXSTM_OK)
        return rc;
    size_t n;
    const void *bytes = axstm__val_data(&val, &n);
    if (bytes == NULL)
        return AXSTM_ENOVALUE;
    if ((val.meta & AXSTM__VAL_INLINE) && data != NULL)
        bytes = keep_bytes(tx, bytes, n); /* ours is a local copy: keep it */
    if (data != NULL)
        *data = bytes;
    if (len != NULL)
        *len = n;
    return AXSTM_OK;
}

AXSTM_API int axstm_txn_get_i64(axstm_txn *tx, const char *key, int64_t *out)
{
    if (out == NULL)
        return AXSTM_EINVAL;
    if (tx != running) {
        const struct axstm__val *remote;
        int rc = axstm__remote_get(tx, key, &remote);
        return rc == AXSTM_OK ? axstm__val_get_i64(remote, out) : rc;
    }
    struct axstm__val val;
    int rc = get_value(tx, key, &val);
    /* Read here, so no copy of the bytes needs keeping. */
    return rc == AXSTM_OK ? axstm__val_get_i64(&val, out) : rc;
}

AXSTM_API int axstm_txn_prefetch(axstm_txn *tx, const char *const keys[], size_t nkeys)
{
    if (keys == NULL && nkeys != 0)
        return AXSTM_EINVAL;
    if (tx != running)
        return axstm__remote_prefetch(tx, keys, nkeys);
    if (tx == NULL)
        return AXSTM_EINVAL;
    int rc = axstm__check_keys(keys, nkeys);
    if (rc != AXSTM_OK)
        return rc;
    /* In process a read costs no more alone: each is read as
     * axstm_txn_get reads it. */
    for (size_t i = 0; i < nkeys; i++) {
        struct axstm__val val;
        if ((rc = get_value(tx, keys[i], &val)) != AXSTM_OK)
            return rc;
    }
    return AXSTM_OK;
}

/* ------------------------------------------------------------------ */
/* Writes                                                             */
/* ------------------------------------------------------------------ */

AXSTM_API int axstm_txn_set(axstm_txn *tx, const char *key, const void *data, size_t len)
{
    if (tx != running)
        return axstm__remote_set(tx, key, data, len);
    if (tx == NULL || (data == NULL && len != 0))
        return AXSTM_EINVAL;
    if (len > AXSTM_VALUE_MAX)
        return AXSTM_E2BIG;
    struct axstm__val val = {0, 0};
    struct axstm__entry *e;
    uint64_t old;
    size_t keylen;
    int rc = prepare_access(tx, key, &keylen);
    if (rc == AXSTM_OK)
        rc = axstm__val_make(&val, data, len);
    if (rc == AXSTM_OK)
        rc = find_entry(tx, key, keylen, true, &e);
    if (rc == AXSTM_OK && tx->irrevocable)
        rc = lock_entry(tx, e, &old);
    if (rc != AXSTM_OK) {
        axstm__val_release(&val);
        return rc;
    }
    tx->touched_gone |= axstm__entry_gone(e);
    tx->writes.v[tx->writes.n++] = (struct txn_write){{e, 0, 0, val}, true};
    return AXSTM_OK;
}

AXSTM_API int axstm_txn_delete(axstm_txn *tx, const char *key)
{
    if (tx != running)
        return axstm__remote_delete(tx, key);
    struct axstm__entry *e;
    uint64_t old;
    int rc = access_entry(tx, key, &e);
    if (rc != AXSTM_OK)
        return rc;
    /* A key that does not exist, and that this attempt has not written,
     * needs no delete: its absence is read instead, so that the commit is
     * refused if the key appears before it (a blind no-op would let the
     * transaction serialize after a creation it ignored). */
    if (axstm__entry_gone(e) && find_write(tx, e) == NULL) {
        struct axstm__val val;
        rc = read_entry(tx, e, &val);
        if (rc == AXSTM_OK && !axstm__lock_gone(tx->reads.v[tx->reads.n - 1].vlock))
            rc = AXSTM_CONCURRENT_UPDATE; /* it appeared meanwhile: run again */
        return rc;
    }
    if (tx->irrevocable && (rc = lock_entry(tx, e, &old)) != AXSTM_OK)
        return rc;
    tx->touched_gone = true; /* the run's end looks at it */
    tx->writes.v[tx->writes.n++] = (struct txn_write){{e, 0, 0, {0, AXSTM__VAL_DELETE}}, true};
    return AXSTM_OK;
}

AXSTM_API int axstm_txn_set_i64(axstm_txn *tx, const char *key, int64_t x)
{
    return axstm_txn_set(tx, key, &x, sizeof x);
}

/* ------------------------------------------------------------------ */
/* or_else                                                            */
/* ------------------------------------------------------------------ */

static void drop_writes_from(axstm_txn *tx, size_t mark)
{
    for (size_t i = mark; i < tx->writes.n; i++)
        tx->writes.v[i].live = false;
}

AXSTM_API int axstm_or_else(axstm_txn *tx, axstm_fn first, axstm_fn second, void *arg)
{
    if (tx != running)
        return axstm__remote_or_else(tx, first, second, arg);
    if (tx == NULL || first == NULL || second == NULL)
        return AXSTM_EINVAL;
    size_t mark = tx->writes.n;
    int rc = first(tx, arg);
    if (rc != AXSTM_RETRY)
        return rc;
    drop_writes_from(tx, mark); /* the reads stay: a wait watches them too */
    return second(tx, arg);
}

/* ------------------------------------------------------------------ */
/* Commit                                                             */
/* ------------------------------------------------------------------ */

static int commit(axstm_txn *tx)
{
    enum { SMALL = 16 };
    struct axstm__item *small_items[SMALL];
    uint64_t small_scratch[SMALL];
    struct axstm__item **items = small_items;
    uint64_t *scratch = small_scratch;
    size_t n = 0;

    /* A few writes (most transactions) fit the small arrays whatever
     * or_else dropped: no count first. */
    if (tx->writes.n <= SMALL)
        n = tx->writes.n;
    else
        for (size_t i = 0; i < tx->writes.n; i++)
            n += tx->writes.v[i].live;
    if (n == 0) {
        /* Read-only: every read was consistent with the snapshot rv, so the
         * transaction serializes at rv.  Nothing shared is written. */
        unlock_all(tx);
        return AXSTM_OK;
    }
    if (n > SMALL) {
        items = axstm__malloc(n * (sizeof *items + sizeof *scratch));
        if (items == NULL)
            return AXSTM_ENOMEM;
        scratch = (uint64_t *)(items + n);
    }
    n = 0;
    for (size_t i = 0; i < tx->writes.n; i++)
        if (tx->writes.v[i].live)
            items[n++] = &tx->writes.v[i].item;
    if (n == 0) {
        unlock_all(tx); /* every write dropped: read-only after all */
        return AXSTM_OK;
    }
    /* The lock order puts the latest write of a key first: it is kept. */
    axstm__sort_items(items, n);
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++)
        if (distinct == 0 || items[i]->entry != items[distinct - 1]->entry)
            items[distinct++] = items[i];

    int rc = AXSTM_OK;
    if (tx->irrevocable) {
        /* Its keys are all locked by us: publish those written, then let go
         * of those only read. */
        axstm__commit_locked(tx->store, items, distinct);
        size_t kept = 0;
        for (size_t i = 0; i < tx->locks.n; i++) {
            struct txn_lock *l = &tx->locks.v[i];
            bool written = false;
            for (size_t k = 0; k < distinct && !written; k++)
                written = items[k]->entry == l->entry;
            if (!written)
                tx->locks.v[kept++] = *l;
        }
        tx->locks.n = kept;
        unlock_all(tx);
    } else {
        struct axstm__readset rs = {tx->reads.v, tx->reads.n};
        rc = axstm__commit(tx->store, items, distinct, scratch, &rs);
    }
    if (items != small_items)
        axstm__free(items);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Attempts                                                           */
/* ------------------------------------------------------------------ */

/* Takes out the gone entries this attempt used that nobody else needs
 * (a key read or written but never created, or deleted).  Pinned. */
static void remove_unused(axstm_txn *tx)
{
    for (size_t i = 0; i < tx->reads.n; i++)
        axstm__table_remove(&tx->store->table, tx->reads.v[i].entry);
    for (size_t i = 0; i < tx->writes.n; i++)
        axstm__table_remove(&tx->store->table, tx->writes.v[i].item.entry);
}

/* Ends an attempt: drops its blobs (published ones are held by their keys
 * now) and its locks, and lets go of the snapshot. */
static void end_attempt(axstm_txn *tx)
{
    for (size_t i = 0; i < tx->anchors.n; i++)
        axstm__entry_unanchor(tx->anchors.v[i]);
    tx->anchors.n = 0;
    if (tx->touched_gone && !tx->waiting)
        remove_unused(tx);
    for (size_t i = 0; i < tx->writes.n; i++)
        axstm__val_release(&tx->writes.v[i].item.val);
    tx->writes.n = 0;
    forget_bytes(tx);
    unlock_all(tx);
    if (tx->irrevocable)
        pthread_mutex_unlock(&tx->store->irrevocable);
    axstm__epoch_unpin(&tx->store->epoch, tx->pin);
}

/*
 * After a body returned AXSTM_RETRY: gets ready to wait for a key it read
 * to change, while the attempt is still pinned (the entries read are then
 * alive; once registered, they stay).  Returns AXSTM_RETRY, or the error
 * that ends the run.
 */
static int prepare_wait(axstm_txn *tx)
{
    const struct axstm__run_mode *mode = tx->mode;
    axstm_store *s = tx->store;
    if (tx->reads.n == 0)
        return AXSTM_EINVAL; /* nothing read could ever change */
    if (mode->watch != NULL) {
        int rc = axstm__watch_reads(s, tx->reads.v, tx->reads.n, true, mode->watch);
        return rc == AXSTM_OK ? AXSTM_RETRY : rc;
    }
    if (mode->never_wait)
        return AXSTM_RETRY;
    int rc = axstm__wait_begin(&tx->wait, s->wait, &s->epoch, tx->reads.v, tx->reads.n);
    if (rc != AXSTM_OK)
        return rc;
    tx->waiting = true;
    return AXSTM_RETRY;
}

/* Runs fn once and commits.  The read set is kept for a wait. */
static int attempt(axstm_txn *tx, axstm_fn fn, void *arg)
{
    axstm_store *s = tx->store;
    tx->reads.n = 0;
    tx->writes.n = 0;
    tx->touched_gone = false;
    if (tx->irrevocable) {
        /* A timed call does not queue behind another irrevocable attempt,
         * whose length it cannot bound: while one runs, it runs as any
         * other. */
        if (tx->deadline == NULL)
            pthread_mutex_lock(&s->irrevocable);
        else if (pthread_mutex_trylock(&s->irrevocable) != 0)
            tx->irrevocable = false;
    }
    tx->pin = axstm__epoch_pin(&s->epoch);
    /* Entries remembered by an earlier attempt may have been freed since. */
    uint64_t removals = axstm__table_removals(&s->table);
    if (removals != tx->recent_removals) {
        tx->nrecent = tx->recent_next = 0;
        tx->recent_removals = removals;
    }
    tx->rv = atomic_load(&s->clock);
    int rc = fn(tx, arg);
    if (rc == AXSTM_OK) {
        rc = commit(tx);
    } else if (rc == AXSTM_CONCURRENT_UPDATE || rc == AXSTM_BUSY_RETRY) {
        /* Found by a read rather than by commit.c: count it here. */
        axstm__count(s, rc == AXSTM_BUSY_RETRY ? AXSTM__BUSY : AXSTM__CONFLICTS);
    } else if (rc == AXSTM_RETRY) {
        rc = prepare_wait(tx);
    }
    end_attempt(tx);
    return rc;
}

/* A small per-thread generator for backoff jitter. */
static uint64_t jitter(void)
{
    static AXSTM__TLS uint64_t state;
    if (state == 0)
        state = (uint64_t)(uintptr_t)&state | 1;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

/* Randomised, bounded exponential backoff after the n-th failure in a row:
 * first a few yields, then sleeps of up to 2^n microseconds (at most 1 ms),
 * so that colliding transactions spread out instead of colliding again.
 * A sleep never reaches past the deadline (NULL: none). */
void axstm__backoff(unsigned failures, const struct timespec *deadline)
{
    if (failures < 3) {
        sched_yield();
        return;
    }
    unsigned shift = failures < 10 ? failures : 10;
    int64_t ns = (int64_t)(jitter() % ((uint64_t)1000 << shift));
    if (deadline != NULL) {
        int64_t left = axstm__ns_left(deadline);
        if (left < ns)
            ns = left;
    }
    if (ns == 0) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, (long)ns};
    nanosleep(&ts, NULL);
}

static void deadline_after(struct timespec *d, int64_t timeout_ns)
{
    clock_gettime(CLOCK_MONOTONIC, d);
    int64_t sec = timeout_ns / 1000000000, nsec = timeout_ns % 1000000000;
    d->tv_sec += (time_t)sec;
    d->tv_nsec += (long)nsec;
    if (d->tv_nsec >= 1000000000) {
        d->tv_sec++;
        d->tv_nsec -= 1000000000;
    }
}

/* Ends a run: frees what its arrays grew into (also if cancelled). */
static void run_end(void *arg)
{
    axstm_txn *tx = arg;
    running = NULL;
    if (tx->reads.v != tx->reads_inline)
        axstm__free(tx->reads.v);
    if (tx->writes.v != tx->writes_inline)
        axstm__free(tx->writes.v);
    if (tx->anchors.v != tx->anchors_inline)
        axstm__free(tx->anchors.v);
    if (tx->locks.v != NULL) /* irrevocable runs only */
        axstm__free(tx->locks.v);
    forget_bytes(tx);
}

/* Whether an attempt's result ends the call at once (no wait, no retry). */
static bool final_result(int rc)
{
    return rc != AXSTM_CONCURRENT_UPDATE && rc != AXSTM_BUSY_RETRY && rc != AXSTM_RETRY;
}

/* After a wait: lets go of it and of the gone entries it kept. */
static void finish_wait(axstm_txn *tx)
{
    axstm_store *s = tx->store;
    /* Pinned before the entries lose their waiter, which kept them. */
    unsigned pin = axstm__epoch_pin(&s->epoch);
    axstm__wait_end(&tx->wait);
    tx->waiting = false;
    for (size_t i = 0; i < tx->reads.n; i++)
        axstm__table_remove(&s->table, tx->reads.v[i].entry);
    axstm__epoch_unpin(&s->epoch, pin);
}

/* Runs attempts after a first one that returned rc, until one ends the
 * call; returns its result.  This is where a run may sleep. */
static int run_attempts(axstm_txn *tx, axstm_fn fn, void *arg, const struct axstm__run_mode *mode,
                        int rc)
{
    axstm_store *s = tx->store;
    unsigned failures = 0;
    for (;;) {
        if (rc == AXSTM_CONCURRENT_UPDATE || rc == AXSTM_BUSY_RETRY) {
            ++failures;
            if (mode->watch != NULL) {
                if (failures >= AXSTM__TRY_ATTEMPTS)
                    return AXSTM_BUSY_RETRY;
            } else if (axstm__past(mode->deadline)) {
                return AXSTM_ETIMEDOUT; /* no time left for another run */
            } else {
                axstm__backoff(failures, mode->deadline);
            }
        } else if (rc == AXSTM_RETRY) {
            if (mode->watch != NULL)
                return AXSTM_RETRY; /* with the watch handed out */
            if (!tx->waiting)
                return AXSTM_ETIMEDOUT; /* never_wait */
            rc = axstm__wait_sleep(&tx->wait, mode->deadline);
            finish_wait(tx);
            if (rc != AXSTM_OK)
                return rc;
            axstm__count(s, AXSTM__WAITED);
            /* The wait ends with OK whenever a key has changed, and does
             * not even read the clock if one changed before it could sleep:
             * under steady commits the body would otherwise run again and
             * again past the deadline. */
            if (axstm__past(mode->deadline))
                return AXSTM_ETIMEDOUT;
            failures = 0;
        } else {
            return rc;
        }
        tx->irrevocable = mode->watch == NULL && failures >= IRREVOCABLE_AFTER;
        tx->room = 0; /* the first access counts it */
        rc = attempt(tx, fn, arg);
    }
}

static int run(axstm_store *s, axstm_fn fn, void *arg, const struct axstm__run_mode *mode)
{
    if (s == NULL || fn == NULL || running != NULL || axstm__remote_running != NULL)
        return AXSTM_EINVAL;
    if (s->remote != NULL)
        return axstm__remote_run(s, fn, arg, mode);
    axstm_txn tx;
    tx.store = s;
    tx.deadline = mode->deadline;
    tx.reads.v = tx.reads_inline;
    tx.reads.n = 0;
    tx.reads.cap = INLINE_READS;
    tx.writes.v = tx.writes_inline;
    tx.writes.n = 0;
    tx.writes.cap = INLINE_WRITES;
    tx.locks.v = NULL;
    tx.locks.n = tx.locks.cap = 0;
    tx.anchors.v = tx.anchors_inline;
    tx.anchors.n = 0;
    tx.anchors.cap = INLINE_ANCHORS;
    tx.bytes_used = 0;
    tx.chunks = NULL;
    tx.room = FRESH_ROOM;
    tx.nrecent = tx.recent_next = 0;
    tx.recent_removals = axstm__table_removals(&s->table);
    tx.irrevocable = false;
    tx.mode = mode;
    tx.waiting = false;
    running = &tx;

    /* Most runs are one attempt that commits: it never sleeps, so it needs
     * no cancellation handler (registering one costs a setjmp). */
    int rc = attempt(&tx, fn, arg);
    if (final_result(rc)) {
        run_end(&tx);
        return rc;
    }
    /* Between attempts the thread may sleep (a wait, a backoff), and a
     * sleep is a cancellation point: then nothing is locked or pinned, and
     * only this run's own memory needs freeing. */
    pthread_cleanup_push(run_end, &tx);
    rc = run_attempts(&tx, fn, arg, mode, rc);
    pthread_cleanup_pop(1);
    return rc;
}

AXSTM_API int axstm_atomically(axstm_store *s, axstm_fn fn, void *arg)
{
    struct axstm__run_mode mode = {NULL, false, NULL};
    return run(s, fn, arg, &mode);
}

AXSTM_API int axstm_atomically_timed(axstm_store *s, axstm_fn fn, void *arg, int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return AXSTM_EINVAL;
    struct timespec deadline;
    deadline_after(&deadline, timeout_ns);
    struct axstm__run_mode mode = {&deadline, timeout_ns == 0, NULL};
    return run(s, fn, arg, &mode);
}

AXSTM_API int axstm_try_atomically(axstm_store *s, axstm_fn fn, void *arg, axstm_watch **w)
{
    if (w == NULL)
        return AXSTM_EINVAL;
    struct axstm__run_mode mode = {NULL, false, w};
    return run(s, fn, arg, &mode);
}
