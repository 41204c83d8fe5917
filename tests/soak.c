/* SPDX-License-Identifier: MIT */
/*
 * soak.c -- the long run: bank, queue and philosophers together on one store.
 *
 *   tests/soak [SECONDS [INTERVAL]]     (defaults 60 and 5)
 *
 * Three workloads share one store for SECONDS, each with its invariants
 * checked while it runs and again at the end:
 *
 *   bank          64 accounts; two threads transfer with axstm_atomically,
 *                 rolling back (a positive code of ours) when the source
 *                 would be overdrawn; one transfers with using/commit; one
 *                 auditor sums every account, alternately in a transaction
 *                 and in one using() snapshot.  Every sum must be the opening
 *                 total, also in transaction attempts that will be re-run
 *                 (opacity).
 *   queue         two bounded rings of 32 slots; two producers put into them
 *                 in turn (waiting with AXSTM_RETRY while a ring is full),
 *                 three consumers take with a blocking get: one from each
 *                 ring and one from either, with or_else.  Every item is
 *                 delivered exactly once and in order per producer and ring.
 *   key queue     one queue with a key per item, as in the README: a
 *                 producer creates a new key "kq.item.<index>" for every
 *                 item (one in a transaction with axstm_txn_set, one by
 *                 reserving the index in a transaction and then creating
 *                 the key with usevar + set + commit), two consumers take
 *                 the item at the head in a transaction that deletes its
 *                 key.  Every index is consumed exactly once, with the
 *                 item that was put there; at most KQ_MAX items wait, so
 *                 the store's key count stays bounded while it runs, and
 *                 no item key is left at the end.
 *   philosophers  Axon's five philosophers: forks are keys, taken with
 *                 using/commit when both are free and released by committing
 *                 the same collection again.  No fork is ever held twice and
 *                 everyone eats.
 *
 * Memory must stay flat: the rings are fixed keys and the producers wait
 * when a ring is full; the key queue makes a key per item, and must stay
 * flat only because its consumers delete what they take.
 * Every INTERVAL seconds one line gives the rates of the last interval, the
 * process's resident memory, the store's keys and its own bytes.  Exit
 * status 1 on any violation (reported on stderr), 0 otherwise.
 */
#include <axstm.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEY_LEN 32
/* Positive codes are the caller's own: they roll a transaction back. */
#define OVERDRAWN 1
#define CLOSED 2
#define BROKEN 3 /* an invariant failed inside a body */
/* A blocking wait this long means a lost wake-up, not a slow machine. */
#define WAIT_LIMIT_NS (INT64_C(30) * 1000000000)

/* ------------------------------------------------------------------ */
/* Shared state, failures, small helpers                              */
/* ------------------------------------------------------------------ */

static axstm_store *store;
static atomic_bool stop;     /* the workloads' threads finish their round */
static atomic_bool violated; /* set with the first failure */

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void violation(const char *fmt, ...)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    va_list ap;
    pthread_mutex_lock(&lock);
    fputs("soak: VIOLATION: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&lock);
    atomic_store(&violated, true);
    atomic_store(&stop, true);
}

/* A library code no workload expects at that point. */
static void unexpected(const char *where, int rc)
{
    violation("%s returned %d (%s)", where, rc, axstm_strerror(rc));
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_ns(long ns)
{
    struct timespec t = {ns / 1000000000L, ns % 1000000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        continue;
}

/* After a BUSY_RETRY or a conflict: yield at first, then sleep a little,
 * since the thread in the way may not be running (two cores). */
static void backoff(unsigned attempt)
{
    if (attempt < 8)
        sched_yield();
    else
        sleep_ns(1000L * (attempt < 64 ? attempt : 64));
}

static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* A checksum of a queue item, so a torn or misplaced value is noticed. */
static uint64_t mix(uint64_t x)
{
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* Resident memory of this process, in bytes (0 if unknown). */
static uint64_t rss_bytes(void)
{
    unsigned long size, resident;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static uint64_t store_bytes(void)
{
    axstm_stats st;
    return axstm_store_stats(store, &st) == AXSTM_OK ? st.bytes : 0;
}

static uint64_t store_keys(void)
{
    axstm_stats st;
    return axstm_store_stats(store, &st) == AXSTM_OK ? st.keys : 0;
}

/* Sets key to x with a usevar/commit of its own (setup and teardown only). */
static void put_i64(const char *key, int64_t x)
{
    axstm_value *v;
    int rc;
    unsigned attempt = 0;
    while ((rc = axstm_usevar(store, key, &v)) == AXSTM_BUSY_RETRY)
        backoff(++attempt);
    if (rc != AXSTM_OK) {
        unexpected("axstm_usevar (setup)", rc);
        return;
    }
    for (;;) {
        if ((rc = axstm_value_set_i64(v, x)) != AXSTM_OK)
            break;
        rc = axstm_value_commit(v);
        if (rc == AXSTM_BUSY_RETRY) {
            backoff(++attempt);
            continue;
        }
        if (rc != AXSTM_CONCURRENT_UPDATE)
            break;
        while ((rc = axstm_value_refresh(v)) == AXSTM_BUSY_RETRY)
            backoff(++attempt);
    }
    if (rc != AXSTM_OK)
        unexpected("axstm_value_commit (setup)", rc);
    axstm_value_free(v);
}

/* ------------------------------------------------------------------ */
/* Bank                                                               */
/* ------------------------------------------------------------------ */

#define ACCOUNTS 64
#define OPENING 1000
#define TOTAL ((int64_t)ACCOUNTS * OPENING)
#define MAX_AMOUNT 1200 /* some transfers overdraw and are rolled back */

static char account[ACCOUNTS][KEY_LEN];
static atomic_ullong transfers, overdrawn, audits;

struct transfer {
    const char *from, *to;
    int64_t amount;
};

/* The stm package's transfer: debit, credit, and raise on overdraft. */
static int transfer_body(axstm_txn *tx, void *arg)
{
    const struct transfer *t = arg;
    int64_t from, to;
    int rc;
    if ((rc = axstm_txn_get_i64(tx, t->from, &from)) != AXSTM_OK ||
        (rc = axstm_txn_get_i64(tx, t->to, &to)) != AXSTM_OK)
        return rc;
    if ((rc = axstm_txn_set_i64(tx, t->from, from - t->amount)) != AXSTM_OK ||
        (rc = axstm_txn_set_i64(tx, t->to, to + t->amount)) != AXSTM_OK)
        return rc;
    return from - t->amount < 0 ? OVERDRAWN : AXSTM_OK;
}

static void pick_pair(uint32_t *rng, struct transfer *t)
{
    unsigned a = xorshift(rng) % ACCOUNTS, b = xorshift(rng) % (ACCOUNTS - 1);
    if (b >= a)
        b++;
    t->from = account[a];
    t->to = account[b];
    t->amount = 1 + (int64_t)(xorshift(rng) % MAX_AMOUNT);
}

static void *txn_teller(void *arg)
{
    uint32_t rng = (uint32_t)(uintptr_t)arg * 2654435761u | 1;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        struct transfer t;
        pick_pair(&rng, &t);
        int rc = axstm_atomically(store, transfer_body, &t);
        if (rc == AXSTM_OK)
            atomic_fetch_add_explicit(&transfers, 1, memory_order_relaxed);
        else if (rc == OVERDRAWN)
            atomic_fetch_add_explicit(&overdrawn, 1, memory_order_relaxed);
        else
            unexpected("axstm_atomically (transfer)", rc);
    }
    return NULL;
}

/* One transfer with Axon's handles: check out both, change, commit; redo
 * it all when someone committed either account meanwhile. */
static int handle_transfer(const struct transfer *t)
{
    const char *keys[2] = {t->from, t->to};
    unsigned attempt = 0;
    for (;;) {
        axstm_collection *c;
        int rc = axstm_using(store, keys, 2, &c);
        if (rc == AXSTM_BUSY_RETRY) {
            backoff(++attempt);
            continue;
        }
        if (rc != AXSTM_OK)
            return rc;
        axstm_value *from = axstm_collection_at(c, 0), *to = axstm_collection_at(c, 1);
        int64_t a, b;
        if ((rc = axstm_value_get_i64(from, &a)) != AXSTM_OK ||
            (rc = axstm_value_get_i64(to, &b)) != AXSTM_OK) {
            axstm_collection_free(c);
            return rc;
        }
        if (a < t->amount) {
            axstm_collection_free(c);
            return OVERDRAWN;
        }
        if ((rc = axstm_value_set_i64(from, a - t->amount)) != AXSTM_OK ||
            (rc = axstm_value_set_i64(to, b + t->amount)) != AXSTM_OK) {
            axstm_collection_free(c);
            return rc;
        }
        while ((rc = axstm_collection_commit(c)) == AXSTM_BUSY_RETRY)
            backoff(++attempt); /* nothing changed: the same commit again */
        axstm_collection_free(c);
        if (rc != AXSTM_CONCURRENT_UPDATE)
            return rc;
        backoff(++attempt);
    }
}

static void *handle_teller(void *arg)
{
    uint32_t rng = (uint32_t)(uintptr_t)arg * 2654435761u | 1;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        struct transfer t;
        pick_pair(&rng, &t);
        int rc = handle_transfer(&t);
        if (rc == AXSTM_OK)
            atomic_fetch_add_explicit(&transfers, 1, memory_order_relaxed);
        else if (rc == OVERDRAWN)
            atomic_fetch_add_explicit(&overdrawn, 1, memory_order_relaxed);
        else
            unexpected("using/commit transfer", rc);
    }
    return NULL;
}

/* Sums every account.  The check is inside the body: opacity promises a
 * consistent view even to an attempt that will be re-run. */
static int audit_body(axstm_txn *tx, void *arg)
{
    int64_t *sum = arg;
    *sum = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        int64_t x;
        int rc = axstm_txn_get_i64(tx, account[i], &x);
        if (rc != AXSTM_OK)
            return rc;
        if (x < 0) {
            violation("audit: account %s at %" PRId64, account[i], x);
            return BROKEN;
        }
        *sum += x;
    }
    if (*sum != TOTAL) {
        violation("audit (transaction): total %" PRId64 ", expected %" PRId64, *sum, TOTAL);
        return BROKEN;
    }
    return AXSTM_OK;
}

static void audit_snapshot(void)
{
    const char *keys[ACCOUNTS];
    for (int i = 0; i < ACCOUNTS; i++)
        keys[i] = account[i];
    axstm_collection *c;
    int rc;
    unsigned attempt = 0;
    while ((rc = axstm_using(store, keys, ACCOUNTS, &c)) == AXSTM_BUSY_RETRY)
        backoff(++attempt);
    if (rc != AXSTM_OK) {
        unexpected("axstm_using (audit)", rc);
        return;
    }
    int64_t sum = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        int64_t x;
        if ((rc = axstm_value_get_i64(axstm_collection_at(c, (size_t)i), &x)) != AXSTM_OK) {
            unexpected("axstm_value_get_i64 (audit)", rc);
            break;
        }
        sum += x;
    }
    axstm_collection_free(c);
    if (rc == AXSTM_OK && sum != TOTAL)
        violation("audit (using snapshot): total %" PRId64 ", expected %" PRId64, sum, TOTAL);
}

static void *auditor(void *arg)
{
    (void)arg;
    for (unsigned long n = 0; !atomic_load_explicit(&stop, memory_order_relaxed); n++) {
        if (n % 2 == 0) {
            int64_t sum;
            int rc = axstm_atomically(store, audit_body, &sum);
            if (rc != AXSTM_OK && rc != BROKEN)
                unexpected("axstm_atomically (audit)", rc);
        } else {
            audit_snapshot();
        }
        atomic_fetch_add_explicit(&audits, 1, memory_order_relaxed);
        sleep_ns(200000); /* an auditor, not a load generator */
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Queue                                                              */
/* ------------------------------------------------------------------ */

#define RING 32
#define PRODUCERS 2
#define NQUEUES 2

struct ring {
    char head[KEY_LEN], tail[KEY_LEN], closed[KEY_LEN];
    char slot[RING][KEY_LEN];
};

static struct ring rings[NQUEUES];

/* An item: who made it and its sequence number, with a checksum.  16 bytes,
 * too long to be held inline, so each put publishes (and each later put
 * over the slot retires) a blob: the soak also shows reclamation keeps up. */
struct item {
    uint64_t id; /* producer << 40 | sequence */
    uint64_t check;
};

/* What each producer made: compared with what the consumers saw. */
struct tally {
    uint64_t count, sum, hash;
};

static struct tally produced[PRODUCERS];
static atomic_ullong consumed_items;

struct put {
    const struct ring *q;
    struct item item;
};

static int read_ends(axstm_txn *tx, const struct ring *q, int64_t *head, int64_t *tail)
{
    int rc;
    if ((rc = axstm_txn_get_i64(tx, q->head, head)) != AXSTM_OK ||
        (rc = axstm_txn_get_i64(tx, q->tail, tail)) != AXSTM_OK)
        return rc;
    if (*tail - *head < 0 || *tail - *head > RING) {
        violation("queue %s: head %" PRId64 ", tail %" PRId64, q->head, *head, *tail);
        return BROKEN;
    }
    return AXSTM_OK;
}

static int put_body(axstm_txn *tx, void *arg)
{
    const struct put *p = arg;
    int64_t head, tail;
    int rc = read_ends(tx, p->q, &head, &tail);
    if (rc != AXSTM_OK)
        return rc;
    if (tail - head == RING)
        return AXSTM_RETRY; /* full: wait until a consumer moves head */
    if ((rc = axstm_txn_set(tx, p->q->slot[tail % RING], &p->item, sizeof p->item)) != AXSTM_OK)
        return rc;
    return axstm_txn_set_i64(tx, p->q->tail, tail + 1);
}

static void *producer(void *arg)
{
    int id = (int)(uintptr_t)arg;
    struct tally *t = &produced[id];
    for (uint64_t seq = 0; !atomic_load_explicit(&stop, memory_order_relaxed); seq++) {
        struct put p;
        p.q = &rings[seq % NQUEUES];
        p.item.id = (uint64_t)id << 40 | seq;
        p.item.check = mix(p.item.id);
        int rc = axstm_atomically_timed(store, put_body, &p, WAIT_LIMIT_NS);
        if (rc != AXSTM_OK) {
            if (rc == AXSTM_ETIMEDOUT)
                violation("a put waited 30 s on a full ring: lost wake-up?");
            else if (rc != BROKEN)
                unexpected("axstm_atomically_timed (put)", rc);
            break;
        }
        t->count++;
        t->sum += seq;
        t->hash += mix(p.item.id ^ UINT64_C(0x5555));
    }
    return NULL;
}

struct consumer {
    int which; /* 0 or 1: that ring only; 2: either, with or_else */
    struct item got;
    int from; /* the ring the last item came from */
    struct tally seen[PRODUCERS];
    int64_t last[PRODUCERS][NQUEUES]; /* last sequence per producer and ring */
};

/* Takes from ring q into c->got.  Empty: AXSTM_RETRY, or CLOSED once the
 * ring is closed (when `closing`: or_else's first branch must retry so
 * that the second gets its turn). */
static int take(axstm_txn *tx, struct consumer *c, int q, bool closing)
{
    const struct ring *r = &rings[q];
    int64_t head, tail, closed;
    int rc;
    if ((rc = axstm_txn_get_i64(tx, r->closed, &closed)) != AXSTM_OK ||
        (rc = read_ends(tx, r, &head, &tail)) != AXSTM_OK)
        return rc;
    if (head == tail)
        return closing && closed ? CLOSED : AXSTM_RETRY;
    const void *data;
    size_t len;
    if ((rc = axstm_txn_get(tx, r->slot[head % RING], &data, &len)) != AXSTM_OK)
        return rc;
    if (len != sizeof c->got) {
        violation("queue slot %s holds %zu bytes", r->slot[head % RING], len);
        return BROKEN;
    }
    memcpy(&c->got, data, sizeof c->got);
    c->from = q;
    return axstm_txn_set_i64(tx, r->head, head + 1);
}

static int take_a(axstm_txn *tx, void *arg)
{
    return take(tx, arg, 0, false);
}

static int take_b_or_close(axstm_txn *tx, void *arg)
{
    struct consumer *c = arg;
    int rc = take(tx, c, 1, true);
    if (rc != CLOSED)
        return rc;
    /* b is closed and empty: finish only if a is too (both close at once,
     * so a retried above only because it was empty). */
    int64_t closed;
    if ((rc = axstm_txn_get_i64(tx, rings[0].closed, &closed)) != AXSTM_OK)
        return rc;
    return closed ? CLOSED : AXSTM_RETRY;
}

static int get_body(axstm_txn *tx, void *arg)
{
    struct consumer *c = arg;
    if (c->which == 2)
        return axstm_or_else(tx, take_a, take_b_or_close, c);
    return take(tx, c, c->which, true);
}

static void *consumer(void *arg)
{
    struct consumer *c = arg;
    for (;;) {
        int rc = axstm_atomically_timed(store, get_body, c, WAIT_LIMIT_NS);
        if (rc == CLOSED || rc == BROKEN)
            break;
        if (rc != AXSTM_OK) {
            if (rc == AXSTM_ETIMEDOUT)
                violation("a get waited 30 s on an empty ring: lost wake-up?");
            else
                unexpected("axstm_atomically_timed (get)", rc);
            break;
        }
        uint64_t p = c->got.id >> 40;
        int64_t seq = (int64_t)(c->got.id & ((UINT64_C(1) << 40) - 1));
        if (p >= PRODUCERS || c->got.check != mix(c->got.id)) {
            violation("queue: a corrupt item (id %#" PRIx64 ")", c->got.id);
            break;
        }
        if (seq <= c->last[p][c->from]) {
            violation("queue: producer %" PRIu64 "'s item %" PRId64 " after %" PRId64
                      " from one ring",
                      p, seq, c->last[p][c->from]);
            break;
        }
        c->last[p][c->from] = seq;
        c->seen[p].count++;
        c->seen[p].sum += (uint64_t)seq;
        c->seen[p].hash += mix(c->got.id ^ UINT64_C(0x5555));
        atomic_fetch_add_explicit(&consumed_items, 1, memory_order_relaxed);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Key queue: a new key per item, deleted by the consumer that takes it */
/* ------------------------------------------------------------------ */

#define KQ_MAX 64      /* items waiting at most: producers retry beyond */
#define KQ_PRODUCERS 2 /* 0: in a transaction; 1: reserve, then usevar + commit */
#define KQ_CONSUMERS 2
#define KQ_PREFIX "kq.item."

static const char kq_head[] = "kq.head", kq_tail[] = "kq.tail", kq_closed[] = "kq.closed";

/* 24 bytes (a blob): who made it, where it was put, and a checksum. */
struct kq_item {
    uint64_t id;    /* producer << 40 | sequence */
    int64_t index;  /* the key it was put under */
    uint64_t check; /* mix(id) ^ mix(index) */
};

static struct tally kq_produced[KQ_PRODUCERS];
static atomic_ullong kq_consumed;

static uint64_t kq_check(const struct kq_item *it)
{
    return mix(it->id) ^ mix((uint64_t)it->index + UINT64_C(0x1234567));
}

static void kq_key(char *buf, int64_t index)
{
    snprintf(buf, KEY_LEN, KQ_PREFIX "%" PRId64, index);
}

/* head and tail, checked: 0 <= tail - head <= KQ_MAX. */
static int kq_ends(axstm_txn *tx, int64_t *head, int64_t *tail)
{
    int rc;
    if ((rc = axstm_txn_get_i64(tx, kq_head, head)) != AXSTM_OK ||
        (rc = axstm_txn_get_i64(tx, kq_tail, tail)) != AXSTM_OK)
        return rc;
    if (*tail - *head < 0 || *tail - *head > KQ_MAX) {
        violation("key queue: head %" PRId64 ", tail %" PRId64, *head, *tail);
        return BROKEN;
    }
    return AXSTM_OK;
}

/* Producer 0: the README's put, in one transaction: a new key at the tail. */
static int kq_put_body(axstm_txn *tx, void *arg)
{
    struct kq_item *it = arg;
    int64_t head, tail;
    char key[KEY_LEN];
    int rc = kq_ends(tx, &head, &tail);
    if (rc != AXSTM_OK)
        return rc;
    if (tail - head == KQ_MAX)
        return AXSTM_RETRY; /* full: wait for a consumer */
    kq_key(key, tail);
    /* The key must not exist: every index is used once, and deleted. */
    if ((rc = axstm_txn_get(tx, key, NULL, NULL)) != AXSTM_ENOVALUE) {
        if (rc == AXSTM_OK) {
            violation("key queue: %s has a value before its put", key);
            return BROKEN;
        }
        return rc;
    }
    it->index = tail;
    it->check = kq_check(it);
    if ((rc = axstm_txn_set(tx, key, it, sizeof *it)) != AXSTM_OK)
        return rc;
    return axstm_txn_set_i64(tx, kq_tail, tail + 1);
}

/* Producer 1, first half: takes the index at the tail (its key does not
 * exist yet: consumers wait on it until the second half commits it). */
static int kq_reserve_body(axstm_txn *tx, void *arg)
{
    int64_t *index = arg;
    int64_t head, tail;
    int rc = kq_ends(tx, &head, &tail);
    if (rc != AXSTM_OK)
        return rc;
    if (tail - head == KQ_MAX)
        return AXSTM_RETRY;
    *index = tail;
    return axstm_txn_set_i64(tx, kq_tail, tail + 1);
}

/* Producer 1, second half: creates the reserved key with usevar, which
 * must find it new (version 0, no value), and commits the item into it. */
static int kq_fill(struct kq_item *it)
{
    char key[KEY_LEN];
    axstm_value *v;
    int rc;
    unsigned attempt = 0;
    kq_key(key, it->index);
    while ((rc = axstm_usevar(store, key, &v)) == AXSTM_BUSY_RETRY)
        backoff(++attempt);
    if (rc != AXSTM_OK)
        return rc;
    if (axstm_value_version(v) != 0 || axstm_value_data(v, NULL) != NULL) {
        violation("key queue: %s existed before its put (version %" PRIu64 ")", key,
                  axstm_value_version(v));
        axstm_value_free(v);
        return BROKEN;
    }
    it->check = kq_check(it);
    rc = axstm_value_set(v, it, sizeof *it);
    /* Only its consumer touches the key next, and only once it has a
     * value: anything but BUSY_RETRY (an irrevocable reader) is wrong. */
    if (rc == AXSTM_OK)
        while ((rc = axstm_value_commit(v)) == AXSTM_BUSY_RETRY)
            backoff(++attempt);
    axstm_value_free(v);
    return rc;
}

static void *kq_producer(void *arg)
{
    int id = (int)(uintptr_t)arg;
    struct tally *t = &kq_produced[id];
    for (uint64_t seq = 0; !atomic_load_explicit(&stop, memory_order_relaxed); seq++) {
        struct kq_item it = {(uint64_t)id << 40 | seq, -1, 0};
        int rc;
        const char *what;
        if (id == 0) {
            what = "axstm_atomically_timed (key queue put)";
            rc = axstm_atomically_timed(store, kq_put_body, &it, WAIT_LIMIT_NS);
        } else {
            what = "axstm_atomically_timed (key queue reserve)";
            rc = axstm_atomically_timed(store, kq_reserve_body, &it.index, WAIT_LIMIT_NS);
            if (rc == AXSTM_OK) {
                what = "usevar + commit (key queue put)";
                rc = kq_fill(&it);
            }
        }
        if (rc != AXSTM_OK) {
            if (rc == AXSTM_ETIMEDOUT)
                violation("a key queue put waited 30 s: lost wake-up?");
            else if (rc != BROKEN)
                unexpected(what, rc);
            break;
        }
        t->count++;
        t->sum += seq;
        t->hash += mix(it.id ^ UINT64_C(0x5555));
    }
    return NULL;
}

struct kq_consumer {
    struct kq_item got;
    struct tally seen[KQ_PRODUCERS];
    int64_t last[KQ_PRODUCERS];              /* last sequence per producer */
    uint64_t indexes, index_sum, index_hash; /* which keys it took */
};

/* Takes the item at the head and deletes its key, in one transaction.
 * An index reserved but not filled yet has no value: wait on its key. */
static int kq_get_body(axstm_txn *tx, void *arg)
{
    struct kq_consumer *c = arg;
    int64_t head, tail, closed;
    char key[KEY_LEN];
    int rc;
    if ((rc = axstm_txn_get_i64(tx, kq_closed, &closed)) != AXSTM_OK ||
        (rc = kq_ends(tx, &head, &tail)) != AXSTM_OK)
        return rc;
    if (head == tail)
        return closed ? CLOSED : AXSTM_RETRY;
    kq_key(key, head);
    const void *data;
    size_t len;
    rc = axstm_txn_get(tx, key, &data, &len);
    if (rc == AXSTM_ENOVALUE)
        return AXSTM_RETRY; /* reserved, not committed yet */
    if (rc != AXSTM_OK)
        return rc;
    if (len != sizeof c->got) {
        violation("key queue: %s holds %zu bytes", key, len);
        return BROKEN;
    }
    memcpy(&c->got, data, sizeof c->got);
    if ((rc = axstm_txn_delete(tx, key)) != AXSTM_OK)
        return rc;
    /* A read after the delete sees no value. */
    if ((rc = axstm_txn_get(tx, key, NULL, NULL)) != AXSTM_ENOVALUE) {
        if (rc == AXSTM_OK) {
            violation("key queue: %s still has a value after its delete", key);
            return BROKEN;
        }
        return rc;
    }
    return axstm_txn_set_i64(tx, kq_head, head + 1);
}

static void *kq_consumer_main(void *arg)
{
    struct kq_consumer *c = arg;
    for (;;) {
        int rc = axstm_atomically_timed(store, kq_get_body, c, WAIT_LIMIT_NS);
        if (rc == CLOSED || rc == BROKEN)
            break;
        if (rc != AXSTM_OK) {
            if (rc == AXSTM_ETIMEDOUT)
                violation("a key queue get waited 30 s: lost wake-up?");
            else
                unexpected("axstm_atomically_timed (key queue get)", rc);
            break;
        }
        const struct kq_item *it = &c->got;
        uint64_t p = it->id >> 40;
        int64_t seq = (int64_t)(it->id & ((UINT64_C(1) << 40) - 1));
        if (p >= KQ_PRODUCERS || it->check != kq_check(it) || it->index < 0) {
            violation("key queue: a corrupt item (id %#" PRIx64 ", index %" PRId64 ")", it->id,
                      it->index);
            break;
        }
        if (seq <= c->last[p]) {
            violation("key queue: producer %" PRIu64 "'s item %" PRId64 " after %" PRId64, p, seq,
                      c->last[p]);
            break;
        }
        c->last[p] = seq;
        c->seen[p].count++;
        c->seen[p].sum += (uint64_t)seq;
        c->seen[p].hash += mix(it->id ^ UINT64_C(0x5555));
        c->indexes++;
        c->index_sum += (uint64_t)it->index;
        c->index_hash += mix((uint64_t)it->index);
        atomic_fetch_add_explicit(&kq_consumed, 1, memory_order_relaxed);
    }
    return NULL;
}

static int visit_kq(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    unsigned long *left = arg;
    (void)version;
    (void)data;
    (void)len;
    if (strncmp(key, KQ_PREFIX, strlen(KQ_PREFIX)) == 0)
        ++*left;
    return 0;
}

/* After the run: every index below the tail was taken exactly once (the
 * consumers' counts, sums and hashes of indexes and of items match), the
 * queue is empty and no item key is left in the store. */
static void check_key_queue(const struct kq_consumer *cons, int ncons)
{
    axstm_value *h, *t;
    int64_t head = -1, tail = -2;
    if (axstm_usevar(store, kq_head, &h) != AXSTM_OK) {
        violation("usevar %s after the run", kq_head);
        return;
    }
    if (axstm_usevar(store, kq_tail, &t) != AXSTM_OK) {
        axstm_value_free(h);
        violation("usevar %s after the run", kq_tail);
        return;
    }
    axstm_value_get_i64(h, &head);
    axstm_value_get_i64(t, &tail);
    axstm_value_free(h);
    axstm_value_free(t);
    if (head != tail)
        violation("key queue not drained: head %" PRId64 ", tail %" PRId64, head, tail);
    uint64_t n = 0, sum = 0, hash = 0;
    for (int i = 0; i < ncons; i++) {
        n += cons[i].indexes;
        sum += cons[i].index_sum;
        hash += cons[i].index_hash;
    }
    uint64_t want_hash = 0;
    for (int64_t i = 0; i < tail; i++)
        want_hash += mix((uint64_t)i);
    if (tail < 0 || n != (uint64_t)tail ||
        sum != (uint64_t)tail * ((uint64_t)tail - 1) / 2 * (tail > 0) || hash != want_hash)
        violation("key queue: %" PRIu64 " items taken for %" PRId64
                  " indexes put, not each index once",
                  n, tail);
    for (int p = 0; p < KQ_PRODUCERS; p++) {
        struct tally seen = {0, 0, 0};
        for (int i = 0; i < ncons; i++) {
            seen.count += cons[i].seen[p].count;
            seen.sum += cons[i].seen[p].sum;
            seen.hash += cons[i].seen[p].hash;
        }
        if (seen.count != kq_produced[p].count || seen.sum != kq_produced[p].sum ||
            seen.hash != kq_produced[p].hash)
            violation("key queue: producer %d put %" PRIu64 " items, consumers took %" PRIu64
                      " (or other ones)",
                      p, kq_produced[p].count, seen.count);
    }
    unsigned long left = 0;
    int rc = axstm_store_foreach(store, visit_kq, &left);
    if (rc != AXSTM_OK)
        unexpected("axstm_store_foreach (key queue)", rc);
    if (left != 0)
        violation("key queue: %lu item keys left in the store after it was drained", left);
}

/* Closes the rings and the key queue: consumers drain them, then end. */
static int close_body(axstm_txn *tx, void *arg)
{
    (void)arg;
    int rc = AXSTM_OK;
    for (int q = 0; q < NQUEUES && rc == AXSTM_OK; q++)
        rc = axstm_txn_set_i64(tx, rings[q].closed, 1);
    if (rc == AXSTM_OK)
        rc = axstm_txn_set_i64(tx, kq_closed, 1);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Philosophers                                                       */
/* ------------------------------------------------------------------ */

#define NPHIL 5

static atomic_int fork_holder[NPHIL]; /* who holds each fork: checked apart from the store */
static atomic_ullong meals_total;

struct philosopher {
    int id;
    char name[16];
    char forks[2][KEY_LEN];
    int fork_index[2];
    unsigned long meals;
};

static bool fork_free(axstm_value *v)
{
    size_t len;
    return axstm_value_data(v, &len) == NULL || len == 0; /* no value, or empty */
}

/* Commits c until it is not busy; the answer of the last try. */
static int commit_busy(axstm_collection *c)
{
    int rc;
    unsigned attempt = 0;
    while ((rc = axstm_collection_commit(c)) == AXSTM_BUSY_RETRY)
        backoff(++attempt);
    return rc;
}

static bool eat(struct philosopher *p, axstm_collection *c)
{
    for (int i = 0; i < 2; i++) {
        int expected = 0;
        if (!atomic_compare_exchange_strong(&fork_holder[p->fork_index[i]], &expected, p->id)) {
            violation("philosopher %d took %s, held by %d", p->id, p->forks[i], expected);
            return false;
        }
    }
    sleep_ns(20000);
    for (int i = 0; i < 2; i++)
        atomic_store(&fork_holder[p->fork_index[i]], 0);
    /* Release: the same collection, committed again with both forks empty. */
    int rc;
    if ((rc = axstm_value_set(axstm_collection_at(c, 0), "", 0)) != AXSTM_OK ||
        (rc = axstm_value_set(axstm_collection_at(c, 1), "", 0)) != AXSTM_OK) {
        unexpected("axstm_value_set (release)", rc);
        return false;
    }
    rc = commit_busy(c);
    if (rc != AXSTM_OK) {
        /* Nobody may commit a fork we hold: their snapshot saw it taken. */
        unexpected("release commit", rc);
        return false;
    }
    p->meals++;
    atomic_fetch_add_explicit(&meals_total, 1, memory_order_relaxed);
    return true;
}

static void *philosopher(void *arg)
{
    struct philosopher *p = arg;
    uint32_t rng = (uint32_t)p->id * 2654435761u | 1;
    const char *keys[2] = {p->forks[0], p->forks[1]};
    axstm_collection *c;
    int rc;
    unsigned attempt = 0;
    while ((rc = axstm_using(store, keys, 2, &c)) == AXSTM_BUSY_RETRY)
        backoff(++attempt);
    if (rc != AXSTM_OK) {
        unexpected("axstm_using (forks)", rc);
        return NULL;
    }
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        /* Think a random 10-200 us so neighbours do not collide in step. */
        sleep_ns(10000 + (long)(xorshift(&rng) % 190000));
        while ((rc = axstm_collection_refresh(c)) == AXSTM_BUSY_RETRY)
            sched_yield();
        if (rc != AXSTM_OK) {
            unexpected("axstm_collection_refresh (forks)", rc);
            break;
        }
        if (!fork_free(axstm_collection_at(c, 0)) || !fork_free(axstm_collection_at(c, 1)))
            continue;
        if ((rc = axstm_value_set_str(axstm_collection_at(c, 0), p->name)) != AXSTM_OK ||
            (rc = axstm_value_set_str(axstm_collection_at(c, 1), p->name)) != AXSTM_OK) {
            unexpected("axstm_value_set_str (take)", rc);
            break;
        }
        rc = axstm_collection_commit(c);
        if (rc == AXSTM_CONCURRENT_UPDATE || rc == AXSTM_BUSY_RETRY)
            continue; /* a neighbour was quicker: think again */
        if (rc != AXSTM_OK) {
            unexpected("take commit", rc);
            break;
        }
        if (!eat(p, c))
            break;
    }
    axstm_collection_free(c);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Final checks                                                       */
/* ------------------------------------------------------------------ */

static int64_t final_total(void)
{
    int64_t sum = 0;
    int rc = axstm_atomically(store, audit_body, &sum);
    if (rc != AXSTM_OK && rc != BROKEN)
        unexpected("axstm_atomically (final audit)", rc);
    return sum;
}

struct fork_check {
    int busy;
};

static int visit_fork(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    struct fork_check *fc = arg;
    (void)version;
    (void)data;
    if (strncmp(key, "fork.", 5) == 0 && len != 0)
        fc->busy++;
    return 0;
}

static void check_queues(const struct consumer *cons, int ncons)
{
    for (int q = 0; q < NQUEUES; q++) {
        axstm_value *h, *t;
        int64_t head = -1, tail = -2;
        if (axstm_usevar(store, rings[q].head, &h) != AXSTM_OK) {
            violation("usevar %s after the run", rings[q].head);
            continue;
        }
        if (axstm_usevar(store, rings[q].tail, &t) != AXSTM_OK) {
            axstm_value_free(h);
            violation("usevar %s after the run", rings[q].tail);
            continue;
        }
        axstm_value_get_i64(h, &head);
        axstm_value_get_i64(t, &tail);
        axstm_value_free(h);
        axstm_value_free(t);
        if (head != tail)
            violation("ring %d not drained: head %" PRId64 ", tail %" PRId64, q, head, tail);
    }
    for (int p = 0; p < PRODUCERS; p++) {
        struct tally seen = {0, 0, 0};
        for (int i = 0; i < ncons; i++) {
            seen.count += cons[i].seen[p].count;
            seen.sum += cons[i].seen[p].sum;
            seen.hash += cons[i].seen[p].hash;
        }
        if (seen.count != produced[p].count || seen.sum != produced[p].sum ||
            seen.hash != produced[p].hash)
            violation("producer %d put %" PRIu64 " items, consumers took %" PRIu64
                      " (or other ones)",
                      p, produced[p].count, seen.count);
    }
}

/* ------------------------------------------------------------------ */
/* Main                                                               */
/* ------------------------------------------------------------------ */

#define TXN_TELLERS 2
#define NCONSUMERS 3
#define MAX_THREADS 32
/* Keys the workloads can hold at once: accounts, the rings' slots, heads,
 * tails and flags, the forks, the key queue's three and its waiting items. */
#define MAX_KEYS (ACCOUNTS + NQUEUES * (RING + 3) + NPHIL + 3 + KQ_MAX)

static pthread_t threads[MAX_THREADS];
static int nthreads;

static void start(void *(*fn)(void *), void *arg)
{
    if (nthreads == MAX_THREADS || pthread_create(&threads[nthreads], NULL, fn, arg) != 0) {
        fprintf(stderr, "soak: cannot start a thread\n");
        exit(1);
    }
    nthreads++;
}

static void setup(void)
{
    for (int i = 0; i < ACCOUNTS; i++) {
        snprintf(account[i], KEY_LEN, "bank.%02d", i);
        put_i64(account[i], OPENING);
    }
    for (int q = 0; q < NQUEUES; q++) {
        struct ring *r = &rings[q];
        snprintf(r->head, KEY_LEN, "q%d.head", q);
        snprintf(r->tail, KEY_LEN, "q%d.tail", q);
        snprintf(r->closed, KEY_LEN, "q%d.closed", q);
        for (int i = 0; i < RING; i++)
            snprintf(r->slot[i], KEY_LEN, "q%d.%02d", q, i);
        put_i64(r->head, 0);
        put_i64(r->tail, 0);
        put_i64(r->closed, 0);
    }
    put_i64(kq_head, 0);
    put_i64(kq_tail, 0);
    put_i64(kq_closed, 0);
}

static double parse_seconds(const char *s, double fallback)
{
    if (s == NULL)
        return fallback;
    char *end;
    double x = strtod(s, &end);
    if (*end != '\0' || !(x > 0)) {
        fprintf(stderr, "usage: soak [SECONDS [INTERVAL]]\n");
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    double duration = parse_seconds(argc > 1 ? argv[1] : NULL, 60);
    double interval = parse_seconds(argc > 2 ? argv[2] : NULL, 5);
    setvbuf(stdout, NULL, _IOLBF, 0);

    store = axstm_store_new();
    if (store == NULL) {
        fprintf(stderr, "soak: out of memory\n");
        return 1;
    }
    setup();

    static struct philosopher phil[NPHIL];
    static struct consumer cons[NCONSUMERS];
    static struct kq_consumer kq_cons[KQ_CONSUMERS];
    for (int i = 0; i < TXN_TELLERS; i++)
        start(txn_teller, (void *)(uintptr_t)(i + 1));
    start(handle_teller, (void *)(uintptr_t)(TXN_TELLERS + 1));
    start(auditor, NULL);
    int bank_threads = nthreads;
    for (int i = 0; i < NPHIL; i++) {
        struct philosopher *p = &phil[i];
        p->id = i + 1;
        snprintf(p->name, sizeof p->name, "phil.%d", i + 1);
        p->fork_index[0] = i;
        p->fork_index[1] = (i + 1) % NPHIL;
        snprintf(p->forks[0], KEY_LEN, "fork.%d", p->fork_index[0] + 1);
        snprintf(p->forks[1], KEY_LEN, "fork.%d", p->fork_index[1] + 1);
        start(philosopher, p);
    }
    int phil_threads = nthreads;
    for (int i = 0; i < PRODUCERS; i++)
        start(producer, (void *)(uintptr_t)i);
    for (int i = 0; i < KQ_PRODUCERS; i++)
        start(kq_producer, (void *)(uintptr_t)i);
    int producer_threads = nthreads;
    for (int i = 0; i < NCONSUMERS; i++) {
        cons[i].which = i;
        for (int p = 0; p < PRODUCERS; p++)
            for (int q = 0; q < NQUEUES; q++)
                cons[i].last[p][q] = -1;
        start(consumer, &cons[i]);
    }
    for (int i = 0; i < KQ_CONSUMERS; i++) {
        for (int p = 0; p < KQ_PRODUCERS; p++)
            kq_cons[i].last[p] = -1;
        start(kq_consumer_main, &kq_cons[i]);
    }

    uint64_t rss_start = rss_bytes();
    printf("soak: %.0f s, bank (%d accounts, %d threads), queue (%d rings of %d, %d producers, "
           "%d consumers), key queue (a key per item, at most %d waiting, %d producers, "
           "%d consumers), %d philosophers\n",
           duration, ACCOUNTS, bank_threads, NQUEUES, RING, PRODUCERS, NCONSUMERS, KQ_MAX,
           KQ_PRODUCERS, KQ_CONSUMERS, NPHIL);
    printf("soak: RSS at start %.1f MiB, store %" PRIu64 " keys, %.1f KiB\n",
           (double)rss_start / 1048576.0, store_keys(), (double)store_bytes() / 1024.0);

    double t0 = now_s(), last = t0, next = t0 + interval;
    unsigned long long last_tr = 0, last_items = 0, last_meals = 0, last_kq = 0;
    /* Threads' stacks and the allocator's per-thread arenas fill during the
     * first interval: growth is judged from there. */
    uint64_t rss_warm = 0;
    for (;;) {
        double t = now_s();
        bool done = t - t0 >= duration || atomic_load(&violated);
        if (t >= next || done) {
            unsigned long long tr = atomic_load(&transfers), it = atomic_load(&consumed_items),
                               me = atomic_load(&meals_total), kq = atomic_load(&kq_consumed);
            double dt = t - last > 0 ? t - last : 1;
            uint64_t rss = rss_bytes(), keys = store_keys();
            if (rss_warm == 0)
                rss_warm = rss;
            printf("soak: %6.1f s  bank %8.0f transfers/s  queue %8.0f items/s  "
                   "key queue %8.0f items/s  meals %6.0f/s  RSS %.1f MiB  store %" PRIu64
                   " keys %.1f KiB\n",
                   t - t0, (double)(tr - last_tr) / dt, (double)(it - last_items) / dt,
                   (double)(kq - last_kq) / dt, (double)(me - last_meals) / dt,
                   (double)rss / 1048576.0, keys, (double)store_bytes() / 1024.0);
            /* A key queue that kept a key per item ever put would grow
             * without bound; this one holds at most KQ_MAX item keys.  The
             * counters are summed over threads while they run: some slack. */
            if (keys > MAX_KEYS + 16)
                violation("the store holds %" PRIu64 " keys, more than the %d the workloads "
                          "can have at once",
                          keys, MAX_KEYS);
            last_tr = tr;
            last_items = it;
            last_meals = me;
            last_kq = kq;
            last = t;
            next += interval;
        }
        if (done)
            break;
        double wait = next - now_s();
        if (t0 + duration - now_s() < wait)
            wait = t0 + duration - now_s();
        /* Wake at least every 100 ms to notice a violation early. */
        sleep_ns(wait <= 0 ? 0 : wait > 0.1 ? 100000000L : (long)(wait * 1e9));
    }

    /* Stop: everyone but the consumers ends its round; then the rings are
     * closed and the consumers drain them. */
    atomic_store(&stop, true);
    for (int i = 0; i < producer_threads; i++)
        pthread_join(threads[i], NULL);
    int rc = axstm_atomically(store, close_body, NULL);
    if (rc != AXSTM_OK)
        unexpected("axstm_atomically (close)", rc);
    for (int i = producer_threads; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    (void)phil_threads;

    int64_t total = final_total();
    if (total != TOTAL)
        violation("bank total %" PRId64 " at the end, expected %" PRId64, total, TOTAL);
    check_queues(cons, NCONSUMERS);
    check_key_queue(kq_cons, KQ_CONSUMERS);
    for (int i = 0; i < NPHIL; i++)
        if (phil[i].meals == 0)
            violation("philosopher %d never ate", phil[i].id);
    struct fork_check fc = {0};
    if ((rc = axstm_store_foreach(store, visit_fork, &fc)) != AXSTM_OK)
        unexpected("axstm_store_foreach", rc);
    if (fc.busy != 0)
        violation("%d forks still held after everyone stopped", fc.busy);

    axstm_stats st;
    axstm_store_stats(store, &st);
    uint64_t rss_end = rss_bytes();
    printf("soak: %llu transfers (%llu rolled back for overdraft), %llu audits, "
           "%llu queue items, %llu key queue items (each its own key), %llu meals\n",
           atomic_load(&transfers), atomic_load(&overdrawn), atomic_load(&audits),
           atomic_load(&consumed_items), atomic_load(&kq_consumed), atomic_load(&meals_total));
    if (st.keys > MAX_KEYS - KQ_MAX)
        violation("%" PRIu64 " keys at the end, more than the %d fixed ones", st.keys,
                  MAX_KEYS - KQ_MAX);
    printf("soak: store: %" PRIu64 " keys, %" PRIu64 " commits, %" PRIu64 " conflicts, %" PRIu64
           " busy, %" PRIu64 " waits, %.1f KiB\n",
           st.keys, st.commits, st.conflicts, st.busy, st.retries_waited,
           (double)st.bytes / 1024.0);
    printf("soak: RSS at start %.1f MiB, after the first interval %.1f MiB, at end %.1f MiB\n",
           (double)rss_start / 1048576.0, (double)rss_warm / 1048576.0,
           (double)rss_end / 1048576.0);
    axstm_store_free(store);

    bool bad = atomic_load(&violated);
    printf("soak: %s\n", bad ? "FAILED" : "ok: every invariant held");
    return bad ? 1 : 0;
}
