/*
 * table.c -- the concurrent key table; see table.h.
 */
#include "axstm-internal.h"

#include <string.h>

/*
 * A shard's array.  Beside each entry pointer it keeps a one-byte tag:
 * 0 for an empty slot, else 0x80 | 7 bits of the key's hash (bits the slot
 * position does not use).  A probe scans the tags, which sit 64 to a cache
 * line, and follows a pointer only when its tag matches: a lookup then
 * touches, besides the tags, only the entry it is after (1 in 128 others),
 * where comparing each passed entry's hash would miss the cache once per
 * slot passed.  The tags come right after the header, so that in a small
 * array the mask and the tags share a line; the pointers follow them.
 */
struct axstm__table {
    struct axstm__retired retire; /* when growth replaces it */
    size_t mask;                  /* capacity - 1; capacity a power of two */
    _Atomic uint8_t tag[];        /* capacity of them, then the pointers */
};

struct axstm__arena_chunk {
    struct axstm__arena_chunk *next;
    size_t size;
    _Alignas(8) char data[];
};

_Static_assert(AXSTM_KEY_MAX <= UINT16_MAX, "key lengths are stored in 16 bits");

#define FIRST_CAPACITY 8
#define ARENA_CHUNK ((size_t)32 * 1024)

static size_t shard_of(uint64_t hash)
{
    return (size_t)(hash >> 58); /* top 6 bits: 64 shards */
}

/* Where the pointers start: after the tags, rounded up for alignment. */
static size_t slots_offset(size_t capacity)
{
    size_t n = sizeof(struct axstm__table) + capacity;
    return (n + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
}

static size_t table_size(size_t capacity)
{
    return slots_offset(capacity) + capacity * sizeof(struct axstm__entry *);
}

static _Atomic(struct axstm__entry *) *slots(const struct axstm__table *tab)
{
    return (_Atomic(struct axstm__entry *) *)((uintptr_t)tab + slots_offset(tab->mask + 1));
}

/* The tag of a key: 7 bits of its hash that neither the shard (the top 6)
 * nor the position (the low ones) uses, marked as a full slot. */
static uint8_t tag_of(uint64_t hash)
{
    return (uint8_t)(0x80 | (hash >> 50 & 0x7f));
}

static size_t entry_size(size_t keylen)
{
    size_t n = offsetof(struct axstm__entry, key) + keylen + 1;
    return (n + 7) & ~(size_t)7;
}

int axstm__table_init(struct axstm__keytable *t, struct axstm__epoch *epoch)
{
    axstm__hash_seed(&t->seed);
    t->epoch = epoch;
    for (size_t i = 0; i < AXSTM__SHARDS; i++) {
        struct axstm__shard *sh = &t->shard[i];
        if (pthread_mutex_init(&sh->lock, NULL) != 0) {
            while (i-- > 0)
                pthread_mutex_destroy(&t->shard[i].lock);
            return AXSTM_ENOMEM;
        }
        atomic_init(&sh->table, NULL);
        atomic_init(&sh->count, 0);
        atomic_init(&sh->bytes, 0);
        sh->chunks = NULL;
        sh->arena_next = NULL;
        sh->arena_left = 0;
    }
    return AXSTM_OK;
}

void axstm__table_destroy(struct axstm__keytable *t, void (*drop)(struct axstm__entry *))
{
    for (size_t i = 0; i < AXSTM__SHARDS; i++) {
        struct axstm__shard *sh = &t->shard[i];
        struct axstm__table *tab = atomic_load(&sh->table);
        if (tab != NULL) {
            for (size_t j = 0; j <= tab->mask; j++) {
                struct axstm__entry *e = atomic_load_explicit(&slots(tab)[j], memory_order_relaxed);
                if (e != NULL && drop != NULL)
                    drop(e);
            }
            axstm__free(tab);
        }
        struct axstm__arena_chunk *c = sh->chunks;
        while (c != NULL) {
            struct axstm__arena_chunk *next = c->next;
            axstm__free(c);
            c = next;
        }
        pthread_mutex_destroy(&sh->lock);
    }
}

static inline struct axstm__entry *probe(const struct axstm__table *tab,
                                         const struct axstm__keyref *r)
{
    const _Atomic uint8_t *tag = tab->tag;
    uint8_t want = tag_of(r->hash);
    size_t i = (size_t)r->hash & tab->mask;
    for (;;) {
        /* Acquire: a tag is stored after its pointer and entry (place). */
        uint8_t t = atomic_load_explicit(&tag[i], memory_order_acquire);
        if (t == 0)
            return NULL;
        if (t == want) {
            struct axstm__entry *e = atomic_load_explicit(&slots(tab)[i], memory_order_relaxed);
            if (e->keylen == r->len && axstm__same_bytes(e->key, r->key, r->len))
                return e;
        }
        i = (i + 1) & tab->mask;
    }
}

void axstm__table_find(struct axstm__keytable *t, struct axstm__keyref *r)
{
    r->hash = axstm__hash(&t->seed, r->key, r->len);
    struct axstm__table *tab =
        atomic_load_explicit(&t->shard[shard_of(r->hash)].table, memory_order_acquire);
    r->entry = tab != NULL ? probe(tab, r) : NULL;
}

/* Places e (whose key hashes to hash) in an array nobody else writes
 * (growth) or under the shard lock. */
static void place(struct axstm__table *tab, struct axstm__entry *e, uint64_t hash)
{
    _Atomic uint8_t *tag = tab->tag;
    size_t i = (size_t)hash & tab->mask;
    while (atomic_load_explicit(&tag[i], memory_order_relaxed) != 0)
        i = (i + 1) & tab->mask;
    /* Both release: probes find the entry through the tag, foreach through
     * the pointer, and either must then see the entry whole. */
    atomic_store_explicit(&slots(tab)[i], e, memory_order_release);
    atomic_store_explicit(&tag[i], tag_of(hash), memory_order_release);
}

static void reclaim_table(struct axstm__retired *node, void *owner)
{
    (void)owner;
    axstm__free((struct axstm__table *)node);
}

/* Makes room for `more` entries, keeping the load factor at most 3/4.
 * Shard lock held. */
static int reserve_slots(struct axstm__keytable *t, struct axstm__shard *sh, size_t more,
                         int *reclaim_due)
{
    struct axstm__table *old = atomic_load_explicit(&sh->table, memory_order_relaxed);
    size_t count = (size_t)atomic_load_explicit(&sh->count, memory_order_relaxed);
    size_t capacity = old != NULL ? old->mask + 1 : 0;
    if (count + more <= capacity / 4 * 3)
        return AXSTM_OK;

    size_t want = capacity ? capacity : FIRST_CAPACITY;
    while (count + more > want / 4 * 3) {
        if (want > SIZE_MAX / 2 / sizeof(struct axstm__entry *))
            return AXSTM_ENOMEM;
        want *= 2;
    }
    struct axstm__table *grown = axstm__calloc(1, table_size(want));
    if (grown == NULL)
        return AXSTM_ENOMEM;
    grown->mask = want - 1;
    if (old != NULL)
        for (size_t j = 0; j < capacity; j++) {
            struct axstm__entry *e = atomic_load_explicit(&slots(old)[j], memory_order_relaxed);
            /* Entries keep no hash: growth computes them again (cheap,
             * and growth is rare; the four bytes per key are saved). */
            if (e != NULL)
                place(grown, e, axstm__hash(&t->seed, e->key, e->keylen));
        }
    /* Readers switch to the copy with this one store; those still in the
     * old array find the same entries there until they unpin. */
    atomic_store_explicit(&sh->table, grown, memory_order_release);
    atomic_fetch_add_explicit(&sh->bytes, table_size(want), memory_order_relaxed);
    if (old != NULL) {
        atomic_fetch_sub_explicit(&sh->bytes, table_size(capacity), memory_order_relaxed);
        *reclaim_due |= axstm__epoch_retire(t->epoch, &old->retire, reclaim_table,
                                            table_size(capacity));
    }
    return AXSTM_OK;
}

/* Makes sure the shard's arena can hand out `need` bytes.  Lock held. */
static int reserve_arena(struct axstm__shard *sh, size_t need)
{
    if (sh->arena_left >= need)
        return AXSTM_OK;
    size_t size = need > ARENA_CHUNK ? need : ARENA_CHUNK;
    struct axstm__arena_chunk *c = axstm__malloc(sizeof *c + size);
    if (c == NULL)
        return AXSTM_ENOMEM;
    c->next = sh->chunks;
    c->size = size;
    sh->chunks = c;
    sh->arena_next = c->data;
    sh->arena_left = size;
    atomic_fetch_add_explicit(&sh->bytes, sizeof *c + size, memory_order_relaxed);
    return AXSTM_OK;
}

static struct axstm__entry *new_entry(struct axstm__shard *sh, const struct axstm__keyref *r)
{
    size_t size = entry_size(r->len);
    struct axstm__entry *e = (struct axstm__entry *)sh->arena_next;
    sh->arena_next += size;
    sh->arena_left -= size;
    atomic_init(&e->vlock, 0);
    atomic_init(&e->version, 0);
    atomic_init(&e->vword, 0);
    atomic_init(&e->vmeta, 0);
    e->keylen = (uint16_t)r->len;
    atomic_init(&e->waiters, 0);
    memcpy(e->key, r->key, r->len);
    e->key[r->len] = '\0';
    return e;
}

static void unlock_shards(struct axstm__keytable *t, uint64_t locked)
{
    for (size_t i = 0; i < AXSTM__SHARDS; i++)
        if (locked & (UINT64_C(1) << i))
            pthread_mutex_unlock(&t->shard[i].lock);
}

static int create(struct axstm__keytable *t, struct axstm__keyref *refs, size_t n)
{
    uint64_t wanted = 0, locked = 0;
    for (size_t i = 0; i < n; i++)
        if (refs[i].entry == NULL)
            wanted |= UINT64_C(1) << shard_of(refs[i].hash);
    if (wanted == 0)
        return AXSTM_OK;

    for (size_t i = 0; i < AXSTM__SHARDS; i++) {
        if (!(wanted & (UINT64_C(1) << i)))
            continue;
        if (pthread_mutex_trylock(&t->shard[i].lock) != 0) {
            unlock_shards(t, locked);
            return AXSTM_BUSY_RETRY;
        }
        locked |= UINT64_C(1) << i;
    }

    /* Under the locks: what is still missing, and how much room it needs.
     * Every fallible step happens before the first key is published. */
    size_t slots_needed[AXSTM__SHARDS] = {0}, bytes_needed[AXSTM__SHARDS] = {0};
    for (size_t i = 0; i < n; i++) {
        if (refs[i].entry != NULL)
            continue;
        struct axstm__shard *sh = &t->shard[shard_of(refs[i].hash)];
        struct axstm__table *tab = atomic_load_explicit(&sh->table, memory_order_relaxed);
        if (tab != NULL && probe(tab, &refs[i]) != NULL)
            continue; /* created meanwhile; found again below */
        slots_needed[shard_of(refs[i].hash)]++;
        bytes_needed[shard_of(refs[i].hash)] += entry_size(refs[i].len);
    }
    int rc = AXSTM_OK, reclaim_due = 0;
    for (size_t i = 0; i < AXSTM__SHARDS && rc == AXSTM_OK; i++)
        if (slots_needed[i] != 0) {
            rc = reserve_slots(t, &t->shard[i], slots_needed[i], &reclaim_due);
            if (rc == AXSTM_OK)
                rc = reserve_arena(&t->shard[i], bytes_needed[i]);
        }
    if (rc != AXSTM_OK) {
        unlock_shards(t, locked);
        if (reclaim_due)
            axstm__epoch_reclaim(t->epoch);
        return rc;
    }

    for (size_t i = 0; i < n; i++) {
        if (refs[i].entry != NULL)
            continue;
        struct axstm__shard *sh = &t->shard[shard_of(refs[i].hash)];
        struct axstm__table *tab = atomic_load_explicit(&sh->table, memory_order_relaxed);
        refs[i].entry = probe(tab, &refs[i]); /* a duplicate made just before */
        if (refs[i].entry != NULL)
            continue;
        refs[i].entry = new_entry(sh, &refs[i]);
        place(tab, refs[i].entry, refs[i].hash);
        atomic_fetch_add_explicit(&sh->count, 1, memory_order_relaxed);
    }
    unlock_shards(t, locked);
    if (reclaim_due)
        axstm__epoch_reclaim(t->epoch);
    return AXSTM_OK;
}

int axstm__table_create(struct axstm__keytable *t, struct axstm__keyref *refs, size_t n)
{
    /* No fork may copy the table halfway through (fork.h). */
    unsigned gate = axstm__gate_enter();
    if (gate == AXSTM__GATE_CLOSED)
        return AXSTM_BUSY_RETRY;
    int rc = create(t, refs, n);
    axstm__gate_leave(gate);
    return rc;
}

int axstm__table_find_or_create(struct axstm__keytable *t, struct axstm__keyref *refs, size_t n)
{
    if (n == 1) { /* the common case, without the loop */
        axstm__table_find(t, refs);
        return refs->entry != NULL ? AXSTM_OK : axstm__table_create(t, refs, 1);
    }
    bool missing = false;
    for (size_t i = 0; i < n; i++) {
        axstm__table_find(t, &refs[i]);
        missing |= refs[i].entry == NULL;
    }
    return missing ? axstm__table_create(t, refs, n) : AXSTM_OK;
}

int axstm__table_foreach(struct axstm__keytable *t,
                         int (*fn)(struct axstm__entry *, void *), void *arg)
{
    for (size_t i = 0; i < AXSTM__SHARDS; i++) {
        struct axstm__table *tab = atomic_load_explicit(&t->shard[i].table, memory_order_acquire);
        if (tab == NULL)
            continue;
        for (size_t j = 0; j <= tab->mask; j++) {
            struct axstm__entry *e = atomic_load_explicit(&slots(tab)[j], memory_order_acquire);
            if (e != NULL) {
                int rc = fn(e, arg);
                if (rc != 0)
                    return rc;
            }
        }
    }
    return 0;
}

uint64_t axstm__table_keys(const struct axstm__keytable *t)
{
    uint64_t n = 0;
    for (size_t i = 0; i < AXSTM__SHARDS; i++)
        n += atomic_load_explicit(&t->shard[i].count, memory_order_relaxed);
    return n;
}

uint64_t axstm__table_bytes(const struct axstm__keytable *t)
{
    uint64_t n = 0;
    for (size_t i = 0; i < AXSTM__SHARDS; i++)
        n += atomic_load_explicit(&t->shard[i].bytes, memory_order_relaxed);
    return n;
}
