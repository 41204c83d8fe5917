/* SPDX-License-Identifier: MIT */
/*
 * check_txn.c -- transactions: atomically, rollback, read-your-own-writes,
 * interplay with Axon handles, or_else, blocking retry, opacity,
 * serializability, progress under contention, and allocation failure inside
 * a transaction.
 *
 * Bodies never assert: they may run on a worker thread, and even on the
 * test's own thread an assert would jump out of axstm_atomically.  They
 * record what they saw; the test's thread asserts once the call returned
 * and every thread it started has been joined.
 *
 * $AXSTM_TXN_TIME_SCALE (default 1) scales the timed runs (the opacity
 * and bank runs), e.g. 0.3 to shorten them under valgrind; above 1 it also
 * stretches the watchdogs.  The default tests what each test names.
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "testutil.h"

#include "alloc.h"
#include "axstm-internal.h" /* white-box: a key's waiters */

/* ------------------------------------------------------------------ */
/* Helpers                                                            */
/* ------------------------------------------------------------------ */

/* A caller's own rollback code, as the seed's NotEnoughMoney. */
#define NOT_ENOUGH_MONEY 1
/* A body's own code: its watchdog ran out. */
#define GAVE_UP 2

/* Inside a body: pass any code but AXSTM_OK straight back. */
#define TX_TRY(call)                                                           \
    do {                                                                       \
        int tx_rc_ = (call);                                                   \
        if (tx_rc_ != AXSTM_OK)                                                \
            return tx_rc_;                                                     \
    } while (0)

static double time_scale(void)
{
    const char *env = getenv("AXSTM_TXN_TIME_SCALE");
    if (env != NULL && *env != '\0') {
        char *end;
        double d = strtod(env, &end);
        if (end != env && d > 0.0 && d < 1000.0)
            return d;
    }
    return 1.0;
}

/* A timed run of `base` seconds, scaled. */
static double run_seconds(double base)
{
    return base * time_scale();
}

/* How long a thread may wait for something that must happen (never less
 * than 30 s: slow machines and sanitizers are not failures). */
static double watchdog_seconds(void)
{
    double k = time_scale();
    return 30.0 * (k > 1.0 ? k : 1.0);
}

static int64_t ns_of(double seconds)
{
    return (int64_t)(seconds * 1e9);
}

/* The timeout of a wait for a commit due in some milliseconds: a guard
 * against a wait that is never woken (a hang), never a timing. */
static int64_t wake_timeout_ns(void)
{
    return ns_of(watchdog_seconds());
}

/* Sets key to x through a handle (test's thread, nobody else writing). */
static void put_i64(axstm_store *s, const char *key, int64_t x)
{
    axstm_value *v = tu_usevar_ok(s, key);
    tu_set_i64_ok(v, x);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
}

static void put_bytes(axstm_store *s, const char *key, const void *data, size_t len)
{
    axstm_value *v = tu_usevar_ok(s, key);
    ck_assert_int_eq(axstm_value_set(v, data, len), AXSTM_OK);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
}

/* The committed version of an existing key, as a handle sees it. */
static uint64_t version_of(axstm_store *s, const char *key)
{
    axstm_value *v = tu_usevar_ok(s, key);
    uint64_t ver = axstm_value_version(v);
    axstm_value_free(v);
    return ver;
}

/* The committed int64 of an existing key, as a handle sees it. */
static int64_t i64_of(axstm_store *s, const char *key)
{
    axstm_value *v = tu_usevar_ok(s, key);
    int64_t x = tu_get_i64_ok(v);
    axstm_value_free(v);
    return x;
}

/* key is not in the store, as foreach sees it (creates nothing). */
static void assert_absent(axstm_store *s, const char *key)
{
    tu_snapshot snap;
    tu_snapshot_take(s, &snap);
    ck_assert_msg(tu_snapshot_find(&snap, key) == NULL, "%s is in the store", key);
    tu_snapshot_free(&snap);
}

/* Committed (version, value) of key, read by foreach (creates nothing). */
static void assert_committed(axstm_store *s, const char *key, uint64_t version,
                             int has_value, int64_t x)
{
    tu_snapshot snap;
    const tu_entry *e;
    tu_snapshot_take(s, &snap);
    e = tu_snapshot_find(&snap, key);
    ck_assert_msg(e != NULL, "%s not in the store", key);
    ck_assert_msg(e->version == version, "%s at version %llu, not %llu", key,
                  (unsigned long long)e->version, (unsigned long long)version);
    ck_assert_msg(e->has_value == has_value, "%s: value presence %d, not %d", key,
                  e->has_value, has_value);
    if (has_value) {
        int64_t got;
        ck_assert_msg(e->len == 8, "%s holds %zu bytes, not 8", key, e->len);
        memcpy(&got, e->data, 8);
        ck_assert_msg(got == x, "%s holds %lld, not %lld", key, (long long)got,
                      (long long)x);
    }
    tu_snapshot_free(&snap);
}

/* Sleeps in small steps until *flag is set or the watchdog runs out;
 * returns whether it was set.  For worker threads. */
static int await_flag(atomic_int *flag)
{
    double give_up = tu_now() + watchdog_seconds();
    while (!atomic_load(flag)) {
        if (tu_now() > give_up)
            return 0;
        tu_sleep_ns(200000);
    }
    return 1;
}

/* A body that sets keys[0..n) to x. */
struct setter {
    const char *const *keys;
    size_t n;
    int64_t x;
};

static int set_body(axstm_txn *tx, void *arg)
{
    const struct setter *st = arg;
    size_t i;
    for (i = 0; i < st->n; i++)
        TX_TRY(axstm_txn_set_i64(tx, st->keys[i], st->x));
    return AXSTM_OK;
}

/* Worker side: commit keys[0..n) = x through a transaction. */
static int commit_by_txn(axstm_store *s, const char *const *keys, size_t n, int64_t x)
{
    struct setter st = { keys, n, x };
    return axstm_atomically(s, set_body, &st);
}

/* Worker side: commit keys[0..n) = x through an Axon handle (a value for
 * one key, a collection for more). */
static int commit_by_handle(axstm_store *s, const char *const *keys, size_t n, int64_t x)
{
    int rc;
    size_t i;
    if (n == 1) {
        axstm_value *v;
        TU_RETRY(rc, axstm_usevar(s, keys[0], &v));
        if (rc != AXSTM_OK)
            return rc;
        rc = axstm_value_set_i64(v, x);
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_value_commit(v));
        axstm_value_free(v);
        return rc;
    } else {
        axstm_collection *c;
        TU_RETRY(rc, axstm_using(s, keys, n, &c));
        if (rc != AXSTM_OK)
            return rc;
        for (i = 0; i < n && rc == AXSTM_OK; i++)
            rc = axstm_value_set_i64(axstm_collection_at(c, i), x);
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_collection_commit(c));
        axstm_collection_free(c);
        return rc;
    }
}

/* ------------------------------------------------------------------ */
/* An interloper: another thread's commit in the middle of a body      */
/* ------------------------------------------------------------------ */

/*
 * The body (running on the test's thread) calls interloper_meet() at the
 * point where it wants someone else's commit to land; the interloper thread
 * then runs its op while the body is held, and lets it go on.  Only the
 * first meeting does anything, so a re-run body passes straight through.
 */
struct interloper {
    axstm_store *s;
    pthread_barrier_t go, done;
    int (*op)(struct interloper *);
    const char *keys[2];
    size_t nkeys;
    int64_t x;
    int rc;   /* recorded by the interloper thread */
    int met;  /* test's thread only */
    pthread_t th;
};

static void *interloper_main(void *arg)
{
    struct interloper *it = arg;
    pthread_barrier_wait(&it->go);
    it->rc = it->op(it);
    pthread_barrier_wait(&it->done);
    return NULL;
}

static void interloper_start(struct interloper *it, axstm_store *s,
                             int (*op)(struct interloper *), int64_t x,
                             const char *k0, const char *k1)
{
    memset(it, 0, sizeof *it);
    it->s = s;
    it->op = op;
    it->x = x;
    it->keys[0] = k0;
    it->keys[1] = k1;
    it->nkeys = k1 != NULL ? 2 : 1;
    it->rc = INT_MIN;
    ck_assert_int_eq(pthread_barrier_init(&it->go, NULL, 2), 0);
    ck_assert_int_eq(pthread_barrier_init(&it->done, NULL, 2), 0);
    ck_assert_int_eq(pthread_create(&it->th, NULL, interloper_main, it), 0);
}

static void interloper_meet(struct interloper *it)
{
    if (it->met)
        return;
    it->met = 1;
    pthread_barrier_wait(&it->go);
    pthread_barrier_wait(&it->done);
}

/* Joins the interloper; returns whether the body met it.  If it did not,
 * the interloper is released here so that it does not outlive the test. */
static int interloper_finish(struct interloper *it)
{
    int met = it->met;
    interloper_meet(it);
    pthread_join(it->th, NULL);
    pthread_barrier_destroy(&it->go);
    pthread_barrier_destroy(&it->done);
    return met;
}

static int op_txn_set(struct interloper *it)
{
    return commit_by_txn(it->s, it->keys, it->nkeys, it->x);
}

static int op_handle_set(struct interloper *it)
{
    return commit_by_handle(it->s, it->keys, it->nkeys, it->x);
}

/* ------------------------------------------------------------------ */
/* A delayed committer: commits once a waiting body has said it retries */
/* ------------------------------------------------------------------ */

struct later {
    axstm_store *s;
    atomic_int armed;  /* set by the body just before it returns AXSTM_RETRY */
    double delay;      /* seconds between armed and the commit */
    int (*op)(struct later *);
    const char *key;
    int64_t x;
    int rc;            /* recorded by the thread; INT_MIN: never armed */
    pthread_t th;
};

static void *later_main(void *arg)
{
    struct later *l = arg;
    if (!await_flag(&l->armed))
        return NULL;
    tu_sleep_s(l->delay);
    l->rc = l->op(l);
    return NULL;
}

static void later_start(struct later *l, axstm_store *s, int (*op)(struct later *),
                        double delay, const char *key, int64_t x)
{
    l->s = s;
    atomic_init(&l->armed, 0);
    l->delay = delay;
    l->op = op;
    l->key = key;
    l->x = x;
    l->rc = INT_MIN;
    ck_assert_int_eq(pthread_create(&l->th, NULL, later_main, l), 0);
}

/* Joins; if the body never armed it, arms it so it gives up at once. */
static void later_join(struct later *l)
{
    if (!atomic_load(&l->armed)) {
        l->delay = 0;
        atomic_store(&l->armed, 1);
    }
    pthread_join(l->th, NULL);
}

static void arm(struct later *l)
{
    if (l != NULL)
        atomic_store(&l->armed, 1);
}

static int later_txn_set(struct later *l)
{
    return commit_by_txn(l->s, &l->key, 1, l->x);
}

static int later_handle_set(struct later *l)
{
    return commit_by_handle(l->s, &l->key, 1, l->x);
}

/* ------------------------------------------------------------------ */
/* The seed's queue: <q>.head, <q>.tail and one key per slot           */
/* ------------------------------------------------------------------ */

static void qkey(char *buf, size_t size, const char *q, const char *what)
{
    snprintf(buf, size, "%s.%s", q, what);
}

static void qslot(char *buf, size_t size, const char *q, int64_t i)
{
    snprintf(buf, size, "%s.%lld", q, (long long)i);
}

/* A counter that may have no value yet (then 0). */
static int get_count(axstm_txn *tx, const char *key, int64_t *out)
{
    int rc = axstm_txn_get_i64(tx, key, out);
    if (rc == AXSTM_ENOVALUE) {
        *out = 0;
        rc = AXSTM_OK;
    }
    return rc;
}

static int q_put(axstm_txn *tx, const char *q, int64_t x)
{
    char tail_key[64], slot[64];
    int64_t tail;
    qkey(tail_key, sizeof tail_key, q, "tail");
    TX_TRY(get_count(tx, tail_key, &tail));
    qslot(slot, sizeof slot, q, tail);
    TX_TRY(axstm_txn_set_i64(tx, slot, x));
    return axstm_txn_set_i64(tx, tail_key, tail + 1);
}

/* The seed's blocking get: AXSTM_RETRY when the queue is empty. */
static int q_get(axstm_txn *tx, const char *q, int64_t *out)
{
    char head_key[64], tail_key[64], slot[64];
    int64_t head, tail;
    qkey(head_key, sizeof head_key, q, "head");
    qkey(tail_key, sizeof tail_key, q, "tail");
    TX_TRY(get_count(tx, head_key, &head));
    TX_TRY(get_count(tx, tail_key, &tail));
    if (head == tail)
        return AXSTM_RETRY;
    qslot(slot, sizeof slot, q, head);
    TX_TRY(axstm_txn_get_i64(tx, slot, out));
    return axstm_txn_set_i64(tx, head_key, head + 1);
}

struct putter {
    const char *q;
    int64_t x;
};

static int put_body(axstm_txn *tx, void *arg)
{
    const struct putter *p = arg;
    return q_put(tx, p->q, p->x);
}

static void q_put_ok(axstm_store *s, const char *q, int64_t x)
{
    struct putter p = { q, x };
    ck_assert_int_eq(axstm_atomically(s, put_body, &p), AXSTM_OK);
}

struct getter {
    const char *q;
    int64_t item;
    unsigned runs;
    struct later *later; /* armed when the body first finds the queue empty */
};

static int get_body(axstm_txn *tx, void *arg)
{
    struct getter *g = arg;
    int rc;
    g->runs++;
    rc = q_get(tx, g->q, &g->item);
    if (rc == AXSTM_RETRY)
        arm(g->later);
    return rc;
}

static int later_put(struct later *l)
{
    struct putter p = { l->key, l->x };
    return axstm_atomically(l->s, put_body, &p);
}

/* ------------------------------------------------------------------ */
/* Atomically                                                         */
/* ------------------------------------------------------------------ */

struct moves {
    unsigned runs;
};

/* a += r, b += r, c = 7 (a new key); r only read. */
static int publish_body(axstm_txn *tx, void *arg)
{
    struct moves *m = arg;
    int64_t a, b, r;
    m->runs++;
    TX_TRY(axstm_txn_get_i64(tx, "a", &a));
    TX_TRY(axstm_txn_get_i64(tx, "b", &b));
    TX_TRY(axstm_txn_get_i64(tx, "r", &r));
    TX_TRY(axstm_txn_set_i64(tx, "a", a + r));
    TX_TRY(axstm_txn_set_i64(tx, "b", b + r));
    return axstm_txn_set_i64(tx, "c", 7);
}

START_TEST(commit_publishes_writes_only_written_keys_get_versions)
{
    axstm_store *s = tu_store_ok();
    struct moves m = { 0 };
    axstm_stats before;

    put_i64(s, "a", 1);
    put_i64(s, "b", 2);
    put_i64(s, "r", 10);
    before = tu_stats_ok(s);
    ck_assert_int_eq(axstm_atomically(s, publish_body, &m), AXSTM_OK);
    ck_assert_uint_eq(m.runs, 1);
    ck_assert_uint_eq(tu_stats_ok(s).commits, before.commits + 1);

    assert_committed(s, "a", 2, 1, 11);
    assert_committed(s, "b", 2, 1, 12);
    assert_committed(s, "c", 1, 1, 7);
    /* Only read: neither version nor value moved. */
    assert_committed(s, "r", 1, 1, 10);
    ck_assert_uint_eq(version_of(s, "r"), 1);
    ck_assert_uint_eq(version_of(s, "a"), 2);
    ck_assert_uint_eq(version_of(s, "c"), 1);
    axstm_store_free(s);
}
END_TEST

struct ryw {
    int rc[8];
    int64_t seen[8];
};

static int ryw_body(axstm_txn *tx, void *arg)
{
    struct ryw *r = arg;
    /* A new key: set, read, set twice more, read. */
    TX_TRY(axstm_txn_set_i64(tx, "fresh", 1));
    r->rc[0] = axstm_txn_get_i64(tx, "fresh", &r->seen[0]);
    TX_TRY(axstm_txn_set_i64(tx, "fresh", 2));
    TX_TRY(axstm_txn_set_i64(tx, "fresh", 3));
    r->rc[1] = axstm_txn_get_i64(tx, "fresh", &r->seen[1]);
    /* A committed key: read, set, read. */
    r->rc[2] = axstm_txn_get_i64(tx, "old", &r->seen[2]);
    TX_TRY(axstm_txn_set_i64(tx, "old", r->seen[2] + 1));
    r->rc[3] = axstm_txn_get_i64(tx, "old", &r->seen[3]);
    /* A key with no value: read, set, read. */
    r->rc[4] = axstm_txn_get_i64(tx, "empty", &r->seen[4]);
    TX_TRY(axstm_txn_set_i64(tx, "empty", 9));
    r->rc[5] = axstm_txn_get_i64(tx, "empty", &r->seen[5]);
    return AXSTM_OK;
}

START_TEST(reads_see_own_writes)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v;
    struct ryw r;

    memset(&r, 0, sizeof r);
    put_i64(s, "old", 5);
    v = tu_usevar_ok(s, "empty");
    axstm_value_free(v);
    ck_assert_int_eq(axstm_atomically(s, ryw_body, &r), AXSTM_OK);
    ck_assert_int_eq(r.rc[0], AXSTM_OK);
    ck_assert_int_eq(r.seen[0], 1);
    ck_assert_int_eq(r.rc[1], AXSTM_OK);
    ck_assert_int_eq(r.seen[1], 3); /* the latest of three */
    ck_assert_int_eq(r.rc[2], AXSTM_OK);
    ck_assert_int_eq(r.seen[2], 5);
    ck_assert_int_eq(r.rc[3], AXSTM_OK);
    ck_assert_int_eq(r.seen[3], 6);
    ck_assert_int_eq(r.rc[4], AXSTM_ENOVALUE);
    ck_assert_int_eq(r.rc[5], AXSTM_OK);
    ck_assert_int_eq(r.seen[5], 9);
    /* Set three times, published once: one new version. */
    assert_committed(s, "fresh", 1, 1, 3);
    assert_committed(s, "old", 2, 1, 6);
    assert_committed(s, "empty", 1, 1, 9);
    axstm_store_free(s);
}
END_TEST

/* The seed's short transfer: take, give, then complain. */
struct transfer {
    const char *from, *to;
    int64_t amount;
    unsigned runs;
    int64_t from_inside; /* the balance the body saw after taking */
};

static int transfer_body(axstm_txn *tx, void *arg)
{
    struct transfer *t = arg;
    int64_t src, dst;
    t->runs++;
    TX_TRY(axstm_txn_get_i64(tx, t->from, &src));
    TX_TRY(axstm_txn_get_i64(tx, t->to, &dst));
    TX_TRY(axstm_txn_set_i64(tx, t->from, src - t->amount));
    TX_TRY(axstm_txn_set_i64(tx, t->to, dst + t->amount));
    TX_TRY(axstm_txn_get_i64(tx, t->from, &t->from_inside));
    if (t->from_inside < 0)
        return NOT_ENOUGH_MONEY;
    return AXSTM_OK;
}

START_TEST(own_code_rolls_back_seed_transfer)
{
    axstm_store *s = tu_store_ok();
    struct transfer t = { "source", "target", 80, 0, 0 };
    tu_snapshot before, after;
    axstm_stats st;

    put_i64(s, "source", 50);
    put_i64(s, "target", 100);
    tu_snapshot_take(s, &before);
    st = tu_stats_ok(s);
    ck_assert_int_eq(axstm_atomically(s, transfer_body, &t), NOT_ENOUGH_MONEY);
    ck_assert_uint_eq(t.runs, 1); /* rolled back, not re-run */
    ck_assert_int_eq(t.from_inside, -30);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    ck_assert_uint_eq(tu_stats_ok(s).commits, st.commits);
    tu_snapshot_free(&after);
    tu_snapshot_free(&before);

    t.amount = 30;
    t.runs = 0;
    ck_assert_int_eq(axstm_atomically(s, transfer_body, &t), AXSTM_OK);
    ck_assert_uint_eq(t.runs, 1);
    assert_committed(s, "source", 2, 1, 20);
    assert_committed(s, "target", 2, 1, 130);
    axstm_store_free(s);
}
END_TEST

struct give_back {
    int code;
    unsigned runs;
};

static int write_then_fail_body(axstm_txn *tx, void *arg)
{
    struct give_back *g = arg;
    g->runs++;
    TX_TRY(axstm_txn_set_i64(tx, "k", 99));
    TX_TRY(axstm_txn_set_i64(tx, "other", 99));
    return g->code;
}

/* Passes the ENOVALUE of a real read of a key with no value back. */
static int read_missing_body(axstm_txn *tx, void *arg)
{
    struct give_back *g = arg;
    int64_t x;
    g->runs++;
    TX_TRY(axstm_txn_set_i64(tx, "k", 99));
    TX_TRY(axstm_txn_get_i64(tx, "nothing", &x));
    return AXSTM_OK;
}

START_TEST(library_code_rolls_back)
{
    static const int codes[] = { AXSTM_ENOVALUE, AXSTM_ETYPE, AXSTM_EINVAL,
                                 AXSTM_E2BIG, AXSTM_ENOMEM, AXSTM_ETIMEDOUT,
                                 42, INT_MAX };
    axstm_store *s = tu_store_ok();
    tu_snapshot before, after;
    struct give_back g;
    size_t i;

    put_i64(s, "k", 1);
    put_i64(s, "other", 2);
    axstm_value_free(tu_usevar_ok(s, "nothing")); /* a key with no value */
    tu_snapshot_take(s, &before);
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        g.code = codes[i];
        g.runs = 0;
        ck_assert_int_eq(axstm_atomically(s, write_then_fail_body, &g), codes[i]);
        ck_assert_uint_eq(g.runs, 1);
        tu_snapshot_take(s, &after);
        tu_snapshot_assert_equal(&before, &after);
        tu_snapshot_free(&after);
    }
    /* The natural way: a failed read's code passed back. */
    g.runs = 0;
    ck_assert_int_eq(axstm_atomically(s, read_missing_body, &g), AXSTM_ENOVALUE);
    ck_assert_uint_eq(g.runs, 1);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    tu_snapshot_free(&after);
    tu_snapshot_free(&before);
    axstm_store_free(s);
}
END_TEST

/* Reads a, lets another thread commit, writes b = a + 1. */
struct rerun {
    struct interloper *it;
    unsigned runs;
    int64_t first_a;
};

static int rerun_body(axstm_txn *tx, void *arg)
{
    struct rerun *r = arg;
    int64_t a;
    r->runs++;
    TX_TRY(axstm_txn_get_i64(tx, "a", &a));
    if (r->runs == 1)
        r->first_a = a;
    interloper_meet(r->it);
    return axstm_txn_set_i64(tx, "b", a + 1);
}

/* A commit of a (and of k1, when given) by op lands between the body's read
 * of a and its commit: the body must run again and see it. */
static void assert_conflict_reruns(int (*op)(struct interloper *), const char *k1)
{
    axstm_store *s = tu_store_ok();
    struct interloper it;
    struct rerun r = { &it, 0, -1 };
    axstm_stats st;
    int rc;

    put_i64(s, "a", 0);
    put_i64(s, "b", 0);
    if (k1 != NULL)
        put_i64(s, k1, 0);
    st = tu_stats_ok(s);
    interloper_start(&it, s, op, 100, "a", k1);
    rc = axstm_atomically(s, rerun_body, &r);
    ck_assert_msg(interloper_finish(&it), "the body never reached the interloper");
    ck_assert_int_eq(it.rc, AXSTM_OK);
    ck_assert_int_eq(rc, AXSTM_OK);
    ck_assert_int_eq(r.first_a, 0);
    ck_assert_uint_eq(r.runs, 2);
    ck_assert_uint_gt(tu_stats_ok(s).conflicts, st.conflicts);
    assert_committed(s, "a", 2, 1, 100);
    assert_committed(s, "b", 2, 1, 101); /* from the second run's a */
    ck_assert_uint_eq(version_of(s, "b"), 2);
    axstm_store_free(s);
}

START_TEST(conflict_reruns_body)
{
    assert_conflict_reruns(op_txn_set, NULL);
}
END_TEST

static int flaky_body(axstm_txn *tx, void *arg)
{
    struct give_back *g = arg;
    g->runs++;
    TX_TRY(axstm_txn_set_i64(tx, "k", (int64_t)g->runs));
    return g->runs == 1 ? g->code : AXSTM_OK;
}

START_TEST(passed_back_conflict_reruns_body)
{
    /* "A code returned by an axstm_txn_* call ... should be passed straight
     * back: the body is then simply run again." */
    static const int codes[] = { AXSTM_CONCURRENT_UPDATE, AXSTM_BUSY_RETRY };
    size_t i;
    for (i = 0; i < 2; i++) {
        axstm_store *s = tu_store_ok();
        struct give_back g = { codes[i], 0 };
        ck_assert_int_eq(axstm_atomically(s, flaky_body, &g), AXSTM_OK);
        ck_assert_uint_eq(g.runs, 2);
        assert_committed(s, "k", 1, 1, 2); /* only the second run's write */
        axstm_store_free(s);
    }
}
END_TEST

static const char sentinel_byte = 's';
#define SENTINEL_PTR ((const void *)&sentinel_byte)

struct missing {
    int rc[5];
    const void *data[2];
    size_t len[2];
    int64_t x;
};

static int missing_body(axstm_txn *tx, void *arg)
{
    struct missing *m = arg;
    const void *d = SENTINEL_PTR;
    size_t l = 777;
    m->rc[0] = axstm_txn_get(tx, "never", &d, &l);
    m->data[0] = d;
    m->len[0] = l;
    d = SENTINEL_PTR;
    l = 777;
    m->rc[1] = axstm_txn_get(tx, "novalue", &d, &l);
    m->data[1] = d;
    m->len[1] = l;
    m->rc[2] = axstm_txn_get(tx, "present", NULL, NULL);
    m->rc[3] = axstm_txn_get(tx, "never", NULL, NULL);
    m->x = 12345;
    m->rc[4] = axstm_txn_get_i64(tx, "never", &m->x);
    return AXSTM_OK;
}

START_TEST(get_of_missing_key_is_enovalue)
{
    axstm_store *s = tu_store_ok();
    struct missing m;

    memset(&m, 0, sizeof m);
    put_i64(s, "present", 3);
    axstm_value_free(tu_usevar_ok(s, "novalue"));
    ck_assert_int_eq(axstm_atomically(s, missing_body, &m), AXSTM_OK);
    ck_assert_int_eq(m.rc[0], AXSTM_ENOVALUE);
    ck_assert_ptr_eq(m.data[0], SENTINEL_PTR);
    ck_assert_uint_eq(m.len[0], 777);
    ck_assert_int_eq(m.rc[1], AXSTM_ENOVALUE);
    ck_assert_ptr_eq(m.data[1], SENTINEL_PTR);
    ck_assert_uint_eq(m.len[1], 777);
    ck_assert_int_eq(m.rc[2], AXSTM_OK);
    ck_assert_int_eq(m.rc[3], AXSTM_ENOVALUE);
    ck_assert_int_eq(m.rc[4], AXSTM_ENOVALUE);
    ck_assert_int_eq(m.x, 12345);
    /* Reading a key creates nothing; nothing was published. */
    assert_absent(s, "never");
    assert_committed(s, "novalue", 0, 0, 0);
    assert_committed(s, "present", 1, 1, 3);
    axstm_store_free(s);
}
END_TEST

struct types {
    int rc[6];
    int64_t x;
};

static int types_body(axstm_txn *tx, void *arg)
{
    struct types *t = arg;
    t->x = 777;
    t->rc[0] = axstm_txn_get_i64(tx, "four", &t->x);
    t->rc[1] = axstm_txn_get_i64(tx, "zero", &t->x);
    t->rc[2] = axstm_txn_get_i64(tx, "nine", &t->x);
    t->rc[3] = axstm_txn_get_i64(tx, "four", NULL);
    TX_TRY(axstm_txn_set(tx, "mine", "abc", 3));
    t->rc[4] = axstm_txn_get_i64(tx, "mine", &t->x);
    t->rc[5] = axstm_txn_get_i64(tx, "eight", &t->x);
    return AXSTM_OK;
}

START_TEST(get_i64_of_wrong_size_is_etype)
{
    axstm_store *s = tu_store_ok();
    struct types t;
    memset(&t, 0, sizeof t);
    put_bytes(s, "four", "abcd", 4);
    put_bytes(s, "zero", "", 0);
    put_bytes(s, "nine", "123456789", 9);
    put_i64(s, "eight", -8);
    ck_assert_int_eq(axstm_atomically(s, types_body, &t), AXSTM_OK);
    ck_assert_int_eq(t.rc[0], AXSTM_ETYPE);
    ck_assert_int_eq(t.rc[1], AXSTM_ETYPE);
    ck_assert_int_eq(t.rc[2], AXSTM_ETYPE);
    ck_assert_int_eq(t.rc[3], AXSTM_EINVAL);
    ck_assert_int_eq(t.rc[4], AXSTM_ETYPE); /* its own 3-byte write */
    ck_assert_int_eq(t.rc[5], AXSTM_OK);
    ck_assert_int_eq(t.x, -8); /* untouched until the good read */
    axstm_store_free(s);
}
END_TEST

struct empty_value {
    int rc;
    size_t len;
};

static int set_empty_body(axstm_txn *tx, void *arg)
{
    struct empty_value *e = arg;
    const void *d;
    TX_TRY(axstm_txn_set(tx, "e", NULL, 0));
    e->len = 777;
    e->rc = axstm_txn_get(tx, "e", &d, &e->len);
    return AXSTM_OK;
}

static int get_empty_body(axstm_txn *tx, void *arg)
{
    struct empty_value *e = arg;
    const void *d;
    e->len = 777;
    e->rc = axstm_txn_get(tx, "e", &d, &e->len);
    return AXSTM_OK;
}

START_TEST(empty_value_is_a_value)
{
    axstm_store *s = tu_store_ok();
    struct empty_value e = { INT_MIN, 0 };
    tu_snapshot snap;
    const tu_entry *en;

    ck_assert_int_eq(axstm_atomically(s, set_empty_body, &e), AXSTM_OK);
    ck_assert_int_eq(e.rc, AXSTM_OK);
    ck_assert_uint_eq(e.len, 0);
    tu_snapshot_take(s, &snap);
    en = tu_snapshot_find(&snap, "e");
    ck_assert_ptr_nonnull(en);
    ck_assert_int_eq(en->has_value, 1);
    ck_assert_uint_eq(en->len, 0);
    ck_assert_uint_eq(en->version, 1);
    tu_snapshot_free(&snap);
    e.rc = INT_MIN;
    ck_assert_int_eq(axstm_atomically(s, get_empty_body, &e), AXSTM_OK);
    ck_assert_int_eq(e.rc, AXSTM_OK);
    ck_assert_uint_eq(e.len, 0);
    axstm_store_free(s);
}
END_TEST

#define BIG_LEN (70 * 1024) /* over the size that makes a commit reclaim at once */

struct stable {
    struct interloper *it;
    unsigned runs;
    int first_same, second_same, third_same, after_commits_same;
};

static int all_bytes(const void *p, size_t len, unsigned char c)
{
    const unsigned char *b = p;
    size_t i;
    for (i = 0; i < len; i++)
        if (b[i] != c)
            return 0;
    return 1;
}

static int stable_body(axstm_txn *tx, void *arg)
{
    struct stable *st = arg;
    const void *p1, *p2, *p3;
    size_t l1, l2, l3;
    st->runs++;
    TX_TRY(axstm_txn_get(tx, "k", &p1, &l1));
    TX_TRY(axstm_txn_set(tx, "k", "second", 7));
    TX_TRY(axstm_txn_get(tx, "k", &p2, &l2));
    TX_TRY(axstm_txn_set(tx, "k", "third", 6));
    TX_TRY(axstm_txn_get(tx, "k", &p3, &l3));
    /* All three still hold their bytes. */
    st->first_same = l1 == BIG_LEN && all_bytes(p1, l1, 'A');
    st->second_same = l2 == 7 && memcmp(p2, "second", 7) == 0;
    st->third_same = l3 == 6 && memcmp(p3, "third", 6) == 0;
    return AXSTM_OK;
}

START_TEST(got_data_stays_valid_after_own_set)
{
    axstm_store *s = tu_store_ok();
    struct stable st;
    unsigned char *big = tu_xmalloc(BIG_LEN);
    tu_snapshot snap;
    const tu_entry *e;

    memset(&st, 0, sizeof st);
    memset(big, 'A', BIG_LEN);
    put_bytes(s, "k", big, BIG_LEN);
    free(big);
    ck_assert_int_eq(axstm_atomically(s, stable_body, &st), AXSTM_OK);
    ck_assert_uint_eq(st.runs, 1);
    ck_assert(st.first_same);
    ck_assert(st.second_same);
    ck_assert(st.third_same);
    tu_snapshot_take(s, &snap);
    e = tu_snapshot_find(&snap, "k");
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->version, 2);
    ck_assert_uint_eq(e->len, 6);
    ck_assert_mem_eq(e->data, "third", 6);
    tu_snapshot_free(&snap);
    axstm_store_free(s);
}
END_TEST

/* Many small reads and writes: the attempt's logs grow (and may move)
 * while earlier pointers from axstm_txn_get are still held. */
enum { GROW_READS = 40, GROW_WRITES = 24 };

struct grow {
    int bad_read, bad_own, rc;
};

static int grow_body(axstm_txn *tx, void *arg)
{
    struct grow *g = arg;
    const void *rp[GROW_READS], *wp[GROW_WRITES];
    char key[16];
    size_t len;
    int i;

    for (i = 0; i < GROW_READS; i++) {
        snprintf(key, sizeof key, "r.%02d", i);
        TX_TRY(axstm_txn_get(tx, key, &rp[i], &len));
        if (len != 8)
            return AXSTM_ETYPE;
    }
    for (i = 0; i < GROW_WRITES; i++) {
        int64_t x = 1000 + i;
        snprintf(key, sizeof key, "w.%02d", i);
        TX_TRY(axstm_txn_set_i64(tx, key, x));
        TX_TRY(axstm_txn_get(tx, key, &wp[i], &len));
        /* Overwritten later: the old bytes must stay as they were. */
        TX_TRY(axstm_txn_set_i64(tx, key, -x));
    }
    for (i = 0; i < GROW_READS; i++) {
        int64_t x;
        memcpy(&x, rp[i], 8);
        g->bad_read += x != i;
    }
    for (i = 0; i < GROW_WRITES; i++) {
        int64_t x;
        memcpy(&x, wp[i], 8);
        g->bad_own += x != 1000 + i;
    }
    return AXSTM_OK;
}

START_TEST(got_data_stays_valid_as_the_attempt_grows)
{
    axstm_store *s = tu_store_ok();
    struct grow g = { 0, 0, 0 };
    char key[16];
    int i;

    for (i = 0; i < GROW_READS; i++) {
        snprintf(key, sizeof key, "r.%02d", i);
        put_i64(s, key, i);
    }
    ck_assert_int_eq(axstm_atomically(s, grow_body, &g), AXSTM_OK);
    ck_assert_msg(g.bad_read == 0, "%d bytes read earlier changed", g.bad_read);
    ck_assert_msg(g.bad_own == 0, "%d bytes of own writes read earlier changed", g.bad_own);
    for (i = 0; i < GROW_WRITES; i++) {
        snprintf(key, sizeof key, "w.%02d", i);
        assert_committed(s, key, 1, 1, -(1000 + i));
    }
    axstm_store_free(s);
}
END_TEST

/* The interloper replaces k many times with big values, so the store
 * retires (and tries to free) the bytes the body holds. */
static int op_many_big_commits(struct interloper *it)
{
    unsigned char *big = malloc(BIG_LEN);
    axstm_value *v = NULL;
    int rc, i;
    if (big == NULL)
        return AXSTM_ENOMEM;
    TU_RETRY(rc, axstm_usevar(it->s, it->keys[0], &v));
    for (i = 0; i < 130 && rc == AXSTM_OK; i++) {
        memset(big, 'a' + i % 26, BIG_LEN);
        rc = axstm_value_set(v, big, BIG_LEN);
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_value_commit(v));
    }
    axstm_value_free(v);
    free(big);
    return rc;
}

static int hold_bytes_body(axstm_txn *tx, void *arg)
{
    struct stable *st = arg;
    const void *p;
    size_t len;
    st->runs++;
    TX_TRY(axstm_txn_get(tx, "k", &p, &len));
    interloper_meet(st->it);
    if (st->runs == 1)
        st->after_commits_same = len == BIG_LEN && all_bytes(p, len, 'A');
    return AXSTM_OK;
}

START_TEST(got_data_stays_valid_while_others_commit)
{
    axstm_store *s = tu_store_ok();
    struct interloper it;
    struct stable st;
    unsigned char *big = tu_xmalloc(BIG_LEN);
    int rc;

    memset(&st, 0, sizeof st);
    st.it = &it;
    memset(big, 'A', BIG_LEN);
    put_bytes(s, "k", big, BIG_LEN);
    free(big);
    interloper_start(&it, s, op_many_big_commits, 0, "k", NULL);
    rc = axstm_atomically(s, hold_bytes_body, &st);
    ck_assert(interloper_finish(&it));
    ck_assert_int_eq(it.rc, AXSTM_OK);
    ck_assert_int_eq(rc, AXSTM_OK);
    ck_assert_msg(st.after_commits_same,
                  "bytes from axstm_txn_get changed while the attempt ran");
    ck_assert_uint_eq(version_of(s, "k"), 131);
    axstm_store_free(s);
}
END_TEST

/* ---- bad input ---- */

static char long_key[AXSTM_KEY_MAX + 2];

static void make_long_key(void)
{
    memset(long_key, 'L', AXSTM_KEY_MAX + 1);
    long_key[AXSTM_KEY_MAX + 1] = '\0';
}

struct bad {
    axstm_store *s;
    int rc[24];
    int n;
    unsigned inner_runs;
};

static int inner_body(axstm_txn *tx, void *arg)
{
    struct bad *b = arg;
    (void)tx;
    b->inner_runs++;
    return AXSTM_OK;
}

static const int bad_expected[] = {
    AXSTM_EINVAL, AXSTM_EINVAL, AXSTM_E2BIG,                 /* get keys */
    AXSTM_EINVAL, AXSTM_EINVAL, AXSTM_E2BIG,                 /* set keys */
    AXSTM_EINVAL, AXSTM_E2BIG, AXSTM_EINVAL,                 /* set data */
    AXSTM_EINVAL, AXSTM_E2BIG, AXSTM_EINVAL,                 /* get_i64 */
    AXSTM_EINVAL, AXSTM_EINVAL, AXSTM_E2BIG,                 /* set_i64 */
    AXSTM_EINVAL, AXSTM_EINVAL,                              /* or_else */
    AXSTM_EINVAL, AXSTM_EINVAL,                              /* nesting */
    AXSTM_EINVAL, AXSTM_EINVAL,                              /* NULL tx */
    AXSTM_OK,                                                /* still fine */
};

static int bad_body(axstm_txn *tx, void *arg)
{
    struct bad *b = arg;
    const void *d = SENTINEL_PTR;
    size_t l = 0;
    int64_t x = 0;
    static const char buf[4] = "abc";
    int i = 0;

    b->rc[i++] = axstm_txn_get(tx, NULL, &d, &l);
    b->rc[i++] = axstm_txn_get(tx, "", &d, &l);
    b->rc[i++] = axstm_txn_get(tx, long_key, &d, &l);
    b->rc[i++] = axstm_txn_set(tx, NULL, buf, 3);
    b->rc[i++] = axstm_txn_set(tx, "", buf, 3);
    b->rc[i++] = axstm_txn_set(tx, long_key, buf, 3);
    b->rc[i++] = axstm_txn_set(tx, "k", NULL, 1);
    /* Checked before a byte is read: buf is far shorter. */
    b->rc[i++] = axstm_txn_set(tx, "k", buf, AXSTM_VALUE_MAX + 1);
    b->rc[i++] = axstm_txn_set(tx, "k", NULL, SIZE_MAX);
    b->rc[i++] = axstm_txn_get_i64(tx, NULL, &x);
    b->rc[i++] = axstm_txn_get_i64(tx, long_key, &x);
    b->rc[i++] = axstm_txn_get_i64(tx, "k", NULL);
    b->rc[i++] = axstm_txn_set_i64(tx, NULL, 1);
    b->rc[i++] = axstm_txn_set_i64(tx, "", 1);
    b->rc[i++] = axstm_txn_set_i64(tx, long_key, 1);
    b->rc[i++] = axstm_or_else(tx, NULL, inner_body, b);
    b->rc[i++] = axstm_or_else(tx, inner_body, NULL, b);
    b->rc[i++] = axstm_atomically(b->s, inner_body, b);
    b->rc[i++] = axstm_atomically_timed(b->s, inner_body, b, 1000000);
    b->rc[i++] = axstm_txn_get(NULL, "k", &d, &l);
    b->rc[i++] = axstm_txn_set(NULL, "k", buf, 3);
    /* None of that spoilt the transaction. */
    b->rc[i++] = axstm_txn_set_i64(tx, "k", 5);
    b->n = i;
    if (d != SENTINEL_PTR)
        b->rc[0] = INT_MIN; /* a failed get wrote *data */
    return AXSTM_OK;
}

START_TEST(bad_input_inside_a_body)
{
    axstm_store *s = tu_store_ok();
    struct bad b;
    int i;

    make_long_key();
    memset(&b, 0, sizeof b);
    b.s = s;
    put_i64(s, "k", 0);
    ck_assert_int_eq(axstm_atomically(s, bad_body, &b), AXSTM_OK);
    ck_assert_int_eq(b.n, (int)(sizeof bad_expected / sizeof bad_expected[0]));
    for (i = 0; i < b.n; i++)
        ck_assert_msg(b.rc[i] == bad_expected[i], "call %d gave %d (%s), not %d", i,
                      b.rc[i], axstm_strerror(b.rc[i]), bad_expected[i]);
    ck_assert_uint_eq(b.inner_runs, 0);
    /* Bad keys created nothing; the good write was committed. */
    ck_assert_uint_eq(tu_stats_ok(s).keys, 1);
    assert_committed(s, "k", 2, 1, 5);
    axstm_store_free(s);
}
END_TEST

START_TEST(bad_input_outside_a_body)
{
    axstm_store *s = tu_store_ok();
    struct bad b;
    const void *d = SENTINEL_PTR;
    size_t l = 0;
    int64_t x = 0;

    memset(&b, 0, sizeof b);
    b.s = s;
    ck_assert_int_eq(axstm_atomically(NULL, inner_body, &b), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_atomically(s, NULL, &b), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_atomically_timed(NULL, inner_body, &b, 0), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_atomically_timed(s, NULL, &b, 0), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_atomically_timed(s, inner_body, &b, -1), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_atomically_timed(s, inner_body, &b, INT64_MIN), AXSTM_EINVAL);
    ck_assert_uint_eq(b.inner_runs, 0);
    ck_assert_int_eq(axstm_or_else(NULL, inner_body, inner_body, &b), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_txn_get(NULL, "k", &d, &l), AXSTM_EINVAL);
    ck_assert_ptr_eq(d, SENTINEL_PTR);
    ck_assert_int_eq(axstm_txn_set(NULL, "k", "x", 1), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_txn_get_i64(NULL, "k", &x), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_txn_set_i64(NULL, "k", 1), AXSTM_EINVAL);
    ck_assert_uint_eq(b.inner_runs, 0);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0);
    /* And nothing is left half-set up: the next call works. */
    ck_assert_int_eq(axstm_atomically(s, inner_body, &b), AXSTM_OK);
    ck_assert_uint_eq(b.inner_runs, 1);
    ck_assert_int_eq(axstm_atomically_timed(s, inner_body, &b, 0), AXSTM_OK);
    ck_assert_uint_eq(b.inner_runs, 2);
    axstm_store_free(s);
}
END_TEST

/* A transaction held open on another thread, so that this thread can try
 * to use it from outside its body. */
struct holder {
    axstm_store *s;
    pthread_barrier_t opened, may_close;
    axstm_txn *tx;
    int rc;
};

static int hold_body(axstm_txn *tx, void *arg)
{
    struct holder *h = arg;
    h->tx = tx;
    pthread_barrier_wait(&h->opened);
    pthread_barrier_wait(&h->may_close);
    return axstm_txn_set_i64(tx, "held", 1);
}

static void *holder_main(void *arg)
{
    struct holder *h = arg;
    h->rc = axstm_atomically(h->s, hold_body, h);
    return NULL;
}

START_TEST(txn_used_outside_its_body_is_einval)
{
    axstm_store *s = tu_store_ok();
    struct holder h;
    struct bad b;
    pthread_t th;
    int rc[5];
    int64_t x = 0;
    const void *d = SENTINEL_PTR;
    size_t l = 0;

    memset(&b, 0, sizeof b);
    memset(&h, 0, sizeof h);
    h.s = s;
    h.rc = INT_MIN;
    put_i64(s, "held", 0);
    ck_assert_int_eq(pthread_barrier_init(&h.opened, NULL, 2), 0);
    ck_assert_int_eq(pthread_barrier_init(&h.may_close, NULL, 2), 0);
    ck_assert_int_eq(pthread_create(&th, NULL, holder_main, &h), 0);
    pthread_barrier_wait(&h.opened);
    /* h.tx is live, but this thread is outside any body. */
    rc[0] = axstm_or_else(h.tx, inner_body, inner_body, &b);
    rc[1] = axstm_txn_get(h.tx, "held", &d, &l);
    rc[2] = axstm_txn_set_i64(h.tx, "held", 2);
    rc[3] = axstm_txn_get_i64(h.tx, "held", &x);
    rc[4] = axstm_txn_set(h.tx, "other", "x", 1);
    pthread_barrier_wait(&h.may_close);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&h.opened);
    pthread_barrier_destroy(&h.may_close);

    ck_assert_int_eq(rc[0], AXSTM_EINVAL);
    ck_assert_int_eq(rc[1], AXSTM_EINVAL);
    ck_assert_int_eq(rc[2], AXSTM_EINVAL);
    ck_assert_int_eq(rc[3], AXSTM_EINVAL);
    ck_assert_int_eq(rc[4], AXSTM_EINVAL);
    ck_assert_uint_eq(b.inner_runs, 0);
    ck_assert_ptr_eq(d, SENTINEL_PTR);
    ck_assert_int_eq(h.rc, AXSTM_OK);
    assert_committed(s, "held", 2, 1, 1);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 1);
    axstm_store_free(s);
}
END_TEST

struct blind {
    int write;
    unsigned runs;
};

static int retry_blind_body(axstm_txn *tx, void *arg)
{
    struct blind *bl = arg;
    bl->runs++;
    if (bl->write)
        TX_TRY(axstm_txn_set_i64(tx, "k", 3));
    return AXSTM_RETRY;
}

START_TEST(retry_without_reads_is_einval)
{
    axstm_store *s = tu_store_ok();
    struct blind bl = { 0, 0 };
    tu_snapshot before, after;
    double t0;

    put_i64(s, "k", 1);
    tu_snapshot_take(s, &before);
    /* Timed first (refused at once, not after the timeout), so that a wait
     * that never ends shows as a failure rather than a hang.  The timeout is
     * long: a call that waited for it cannot have returned sooner, and a
     * call refused at once returns well within it on any machine. */
    t0 = tu_now();
    ck_assert_int_eq(axstm_atomically_timed(s, retry_blind_body, &bl,
                                            ns_of(watchdog_seconds())),
                     AXSTM_EINVAL);
    ck_assert_double_lt(tu_now() - t0, watchdog_seconds());
    ck_assert_uint_eq(bl.runs, 1);
    bl.runs = 0;
    ck_assert_int_eq(axstm_atomically(s, retry_blind_body, &bl), AXSTM_EINVAL);
    ck_assert_uint_eq(bl.runs, 1);
    bl.write = 1;
    bl.runs = 0;
    ck_assert_int_eq(axstm_atomically(s, retry_blind_body, &bl), AXSTM_EINVAL);
    ck_assert_uint_eq(bl.runs, 1);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Interop with handles                                               */
/* ------------------------------------------------------------------ */

static int bump_k_body(axstm_txn *tx, void *arg)
{
    int64_t k;
    (void)arg;
    TX_TRY(axstm_txn_get_i64(tx, "k", &k));
    return axstm_txn_set_i64(tx, "k", k + 1);
}

START_TEST(txn_commit_makes_stale_handles_fail)
{
    static const char *const kj[] = { "k", "j" };
    axstm_store *s = tu_store_ok();
    axstm_value *h;
    axstm_collection *c;

    put_i64(s, "k", 1);
    put_i64(s, "j", 1);
    h = tu_usevar_ok(s, "k");
    c = tu_using_ok(s, kj, 2);
    ck_assert_int_eq(axstm_atomically(s, bump_k_body, NULL), AXSTM_OK);
    assert_committed(s, "k", 2, 1, 2);

    tu_set_i64_ok(h, 10);
    ck_assert_int_eq(tu_commit(h), AXSTM_CONCURRENT_UPDATE);
    ck_assert_uint_eq(axstm_value_version(h), 1);
    tu_set_i64_ok(axstm_collection_value(c, "j"), 10);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_CONCURRENT_UPDATE);
    assert_committed(s, "k", 2, 1, 2);
    assert_committed(s, "j", 1, 1, 1);

    /* A refreshed handle sees the transaction's write and goes on. */
    tu_refresh_ok(h);
    ck_assert_uint_eq(axstm_value_version(h), 2);
    ck_assert_int_eq(tu_get_i64_ok(h), 2);
    tu_set_i64_ok(h, 3);
    ck_assert_int_eq(tu_commit(h), AXSTM_OK);
    assert_committed(s, "k", 3, 1, 3);
    /* And the next transaction sees the handle's. */
    ck_assert_int_eq(axstm_atomically(s, bump_k_body, NULL), AXSTM_OK);
    assert_committed(s, "k", 4, 1, 4);
    axstm_value_free(h);
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

static int copy_k_to_j_body(axstm_txn *tx, void *arg)
{
    int64_t k;
    (void)arg;
    TX_TRY(axstm_txn_get_i64(tx, "k", &k));
    return axstm_txn_set_i64(tx, "j", k);
}

START_TEST(txn_read_leaves_handles_current)
{
    axstm_store *s = tu_store_ok();
    axstm_value *h;

    put_i64(s, "k", 7);
    h = tu_usevar_ok(s, "k");
    ck_assert_int_eq(axstm_atomically(s, copy_k_to_j_body, NULL), AXSTM_OK);
    assert_committed(s, "j", 1, 1, 7);
    /* k was only read: its version did not move, so h is still current. */
    ck_assert_uint_eq(version_of(s, "k"), 1);
    tu_set_i64_ok(h, 8);
    ck_assert_int_eq(tu_commit(h), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(h), 2);
    axstm_value_free(h);
    axstm_store_free(s);
}
END_TEST

START_TEST(handle_commit_between_read_and_commit_reruns)
{
    assert_conflict_reruns(op_handle_set, NULL);
}
END_TEST

START_TEST(collection_commit_between_read_and_commit_reruns)
{
    assert_conflict_reruns(op_handle_set, "z");
}
END_TEST

/* ------------------------------------------------------------------ */
/* or_else                                                            */
/* ------------------------------------------------------------------ */

struct alt {
    unsigned runs[4];
    int rc_or_else;
    int code;  /* what a branch returns */
    int seen_rc[6];
    int64_t seen[6];
    struct later *later;
};

static void alt_init(struct alt *a)
{
    size_t i;
    memset(a, 0, sizeof *a);
    for (i = 0; i < 6; i++) {
        a->seen_rc[i] = INT_MIN;
        a->seen[i] = INT64_MIN;
    }
}

static int o1_first(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[0]++;
    TX_TRY(axstm_txn_set_i64(tx, "a", 100));
    TX_TRY(axstm_txn_set_i64(tx, "fb", 1));
    return AXSTM_RETRY;
}

static int o1_second(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[1]++;
    a->seen_rc[1] = axstm_txn_get_i64(tx, "a", &a->seen[1]);
    return axstm_txn_set_i64(tx, "sb", 2);
}

static int o1_body(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    /* Written before the or_else: not the first branch's to drop. */
    TX_TRY(axstm_txn_set_i64(tx, "pre", 1));
    a->rc_or_else = axstm_or_else(tx, o1_first, o1_second, a);
    TX_TRY(a->rc_or_else);
    a->seen_rc[2] = axstm_txn_get_i64(tx, "a", &a->seen[2]);
    a->seen_rc[3] = axstm_txn_get_i64(tx, "sb", &a->seen[3]);
    a->seen_rc[4] = axstm_txn_get_i64(tx, "fb", &a->seen[4]);
    a->seen_rc[5] = axstm_txn_get_i64(tx, "pre", &a->seen[5]);
    return AXSTM_OK;
}

START_TEST(first_retries_second_commits)
{
    axstm_store *s = tu_store_ok();
    struct alt a;

    alt_init(&a);
    put_i64(s, "a", 1);
    put_i64(s, "fb", 0);
    put_i64(s, "sb", 0);
    ck_assert_int_eq(axstm_atomically(s, o1_body, &a), AXSTM_OK);
    ck_assert_int_eq(a.rc_or_else, AXSTM_OK);
    ck_assert_uint_eq(a.runs[0], 1);
    ck_assert_uint_eq(a.runs[1], 1);
    /* The second branch, and what follows, do not see the first's writes. */
    ck_assert_int_eq(a.seen_rc[1], AXSTM_OK);
    ck_assert_int_eq(a.seen[1], 1);
    ck_assert_int_eq(a.seen[2], 1);
    ck_assert_int_eq(a.seen[3], 2);
    ck_assert_int_eq(a.seen[4], 0);
    ck_assert_int_eq(a.seen_rc[5], AXSTM_OK);
    ck_assert_int_eq(a.seen[5], 1);
    assert_committed(s, "a", 1, 1, 1);
    assert_committed(s, "fb", 1, 1, 0);
    assert_committed(s, "sb", 2, 1, 2);
    assert_committed(s, "pre", 1, 1, 1);
    axstm_store_free(s);
}
END_TEST

static int o2_first(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[0]++;
    TX_TRY(axstm_txn_set_i64(tx, "a", 5));
    return a->code;
}

static int o2_second(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[1]++;
    return axstm_txn_set_i64(tx, "a", 6);
}

static int o2_body(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->rc_or_else = axstm_or_else(tx, o2_first, o2_second, a);
    return a->rc_or_else;
}

START_TEST(first_succeeds_second_never_runs)
{
    axstm_store *s = tu_store_ok();
    struct alt a;

    alt_init(&a);
    a.code = AXSTM_OK;
    put_i64(s, "a", 1);
    ck_assert_int_eq(axstm_atomically(s, o2_body, &a), AXSTM_OK);
    ck_assert_uint_eq(a.runs[0], 1);
    ck_assert_uint_eq(a.runs[1], 0);
    assert_committed(s, "a", 2, 1, 5);
    axstm_store_free(s);
}
END_TEST

START_TEST(first_code_is_returned_as_is)
{
    static const int codes[] = { 42, NOT_ENOUGH_MONEY, AXSTM_ENOVALUE, AXSTM_ETYPE };
    size_t i;
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        axstm_store *s = tu_store_ok();
        struct alt a;
        alt_init(&a);
        a.code = codes[i];
        put_i64(s, "a", 1);
        ck_assert_int_eq(axstm_atomically(s, o2_body, &a), codes[i]);
        ck_assert_int_eq(a.rc_or_else, codes[i]);
        ck_assert_uint_eq(a.runs[0], 1);
        ck_assert_uint_eq(a.runs[1], 0);
        assert_committed(s, "a", 1, 1, 1); /* rolled back */
        axstm_store_free(s);
    }
}
END_TEST

static int read_a_retry(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[0]++;
    a->seen_rc[0] = axstm_txn_get_i64(tx, "a", &a->seen[0]);
    TX_TRY(axstm_txn_set_i64(tx, "a", 50));
    return AXSTM_RETRY;
}

static int read_b_retry(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[1]++;
    a->seen_rc[1] = axstm_txn_get_i64(tx, "b", &a->seen[1]);
    TX_TRY(axstm_txn_set_i64(tx, "b", 60));
    return AXSTM_RETRY;
}

static int both_retry_body(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->rc_or_else = axstm_or_else(tx, read_a_retry, read_b_retry, a);
    return a->rc_or_else;
}

START_TEST(both_retry_whole_transaction_waits)
{
    axstm_store *s = tu_store_ok();
    struct alt a;
    tu_snapshot before, after;
    double t0, took;
    int rc;

    alt_init(&a);
    put_i64(s, "a", 1);
    put_i64(s, "b", 2);
    tu_snapshot_take(s, &before);
    t0 = tu_now();
    rc = axstm_atomically_timed(s, both_retry_body, &a, ns_of(0.05));
    took = tu_now() - t0;
    ck_assert_int_eq(rc, AXSTM_ETIMEDOUT);
    ck_assert_int_eq(a.rc_or_else, AXSTM_RETRY);
    ck_assert_msg(took >= 0.05, "gave up after %.4f s, before the timeout", took);
    /* It slept rather than spun: nobody committed, so no re-run. */
    ck_assert_uint_eq(a.runs[0], 1);
    ck_assert_uint_eq(a.runs[1], 1);
    ck_assert_int_eq(a.seen[0], 1);
    ck_assert_int_eq(a.seen[1], 2);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    axstm_store_free(s);
}
END_TEST

/* Three alternatives; only the third succeeds.  seen[0..1]: s as the first
 * two branches saw it; seen[2..4]: s, k1, k2 as the third saw them. */
static int n_f1(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[0]++;
    a->seen_rc[0] = axstm_txn_get_i64(tx, "s", &a->seen[0]);
    TX_TRY(axstm_txn_set_i64(tx, "k1", 1));
    TX_TRY(axstm_txn_set_i64(tx, "s", 1));
    return AXSTM_RETRY;
}

static int n_f1_ok(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[0]++;
    a->seen_rc[0] = axstm_txn_get_i64(tx, "s", &a->seen[0]);
    TX_TRY(axstm_txn_set_i64(tx, "k1", 1));
    TX_TRY(axstm_txn_set_i64(tx, "s", 1));
    return AXSTM_OK;
}

static int n_f2(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[1]++;
    a->seen_rc[1] = axstm_txn_get_i64(tx, "s", &a->seen[1]);
    TX_TRY(axstm_txn_set_i64(tx, "k2", 1));
    TX_TRY(axstm_txn_set_i64(tx, "s", 2));
    return AXSTM_RETRY;
}

static int n_f3(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[2]++;
    a->seen_rc[2] = axstm_txn_get_i64(tx, "s", &a->seen[2]);
    a->seen_rc[3] = axstm_txn_get_i64(tx, "k1", &a->seen[3]);
    a->seen_rc[4] = axstm_txn_get_i64(tx, "k2", &a->seen[4]);
    return axstm_txn_set_i64(tx, "k3", 1);
}

static int n_f12(axstm_txn *tx, void *arg)
{
    return axstm_or_else(tx, n_f1, n_f2, arg);
}

/* Writes k4, then picks between f2 and f3: k4 must survive f2's retry. */
static int n_f23(axstm_txn *tx, void *arg)
{
    TX_TRY(axstm_txn_set_i64(tx, "k4", 4));
    return axstm_or_else(tx, n_f2, n_f3, arg);
}

/* An inner or_else that succeeds (with writes) inside a branch that then
 * retries: the inner branch's writes go too. */
static int n_g1(axstm_txn *tx, void *arg)
{
    TX_TRY(axstm_or_else(tx, n_f1_ok, n_f2, arg));
    return AXSTM_RETRY;
}

static int nest_left_body(axstm_txn *tx, void *arg)
{
    return axstm_or_else(tx, n_f12, n_f3, arg);
}

static int nest_right_body(axstm_txn *tx, void *arg)
{
    return axstm_or_else(tx, n_f1, n_f23, arg);
}

static int nest_inner_ok_body(axstm_txn *tx, void *arg)
{
    return axstm_or_else(tx, n_g1, n_f3, arg);
}

static void assert_nested(axstm_fn body, unsigned second_runs, int k4)
{
    axstm_store *s = tu_store_ok();
    struct alt a;

    alt_init(&a);
    put_i64(s, "s", 0);
    put_i64(s, "k1", 0);
    put_i64(s, "k2", 0);
    put_i64(s, "k3", 0);
    put_i64(s, "k4", 0);
    ck_assert_int_eq(axstm_atomically(s, body, &a), AXSTM_OK);
    ck_assert_uint_eq(a.runs[0], 1);
    ck_assert_uint_eq(a.runs[1], second_runs);
    ck_assert_uint_eq(a.runs[2], 1);
    ck_assert_int_eq(a.seen[0], 0);
    if (second_runs)
        ck_assert_int_eq(a.seen[1], 0); /* the first branch's s = 1 was dropped */
    ck_assert_int_eq(a.seen_rc[2], AXSTM_OK);
    ck_assert_int_eq(a.seen[2], 0);
    ck_assert_int_eq(a.seen[3], 0);
    ck_assert_int_eq(a.seen[4], 0);
    assert_committed(s, "s", 1, 1, 0);
    assert_committed(s, "k1", 1, 1, 0);
    assert_committed(s, "k2", 1, 1, 0);
    assert_committed(s, "k3", 2, 1, 1);
    if (k4)
        assert_committed(s, "k4", 2, 1, 4);
    else
        assert_committed(s, "k4", 1, 1, 0);
    axstm_store_free(s);
}

START_TEST(nested_or_else_only_third_succeeds)
{
    assert_nested(nest_left_body, 1, 0);     /* (f1 | f2) | f3 */
    assert_nested(nest_right_body, 1, 1);    /* f1 | (k4, f2 | f3) */
    assert_nested(nest_inner_ok_body, 0, 0); /* ((f1 ok | f2), retry) | f3 */
}
END_TEST

/* The first branch waits for A, the second for B. */
static int w_first(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    int64_t x;
    int rc;
    a->runs[0]++;
    rc = axstm_txn_get_i64(tx, "A", &x);
    if (rc == AXSTM_ENOVALUE)
        return AXSTM_RETRY;
    TX_TRY(rc);
    a->seen[0] = x;
    return axstm_txn_set_i64(tx, "took", x);
}

static int w_second(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    int64_t x;
    int rc;
    a->runs[1]++;
    rc = axstm_txn_get_i64(tx, "B", &x);
    if (rc == AXSTM_ENOVALUE) {
        arm(a->later);
        return AXSTM_RETRY;
    }
    TX_TRY(rc);
    a->seen[1] = x;
    return axstm_txn_set_i64(tx, "took", -x);
}

static int wait_either_body(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->rc_or_else = axstm_or_else(tx, w_first, w_second, a);
    return a->rc_or_else;
}

START_TEST(retried_first_branch_reads_are_waited_on)
{
    axstm_store *s = tu_store_ok();
    struct later l;
    struct alt a;
    axstm_stats st;
    double t0, took;
    int rc;

    alt_init(&a);
    a.later = &l;
    st = tu_stats_ok(s);
    later_start(&l, s, later_txn_set, 0.05, "A", 5);
    t0 = tu_now();
    rc = axstm_atomically_timed(s, wait_either_body, &a, wake_timeout_ns());
    took = tu_now() - t0;
    later_join(&l);

    ck_assert_int_eq(l.rc, AXSTM_OK);
    ck_assert_msg(rc == AXSTM_OK, "waiting on the first branch's read: %s",
                  axstm_strerror(rc));
    ck_assert_int_eq(a.seen[0], 5);
    ck_assert_msg(took >= 0.04, "returned after %.4f s: did not wait", took);
    ck_assert_uint_ge(a.runs[0], 2);
    ck_assert_msg(a.runs[0] <= 3, "first branch ran %u times: busy waiting?", a.runs[0]);
    ck_assert_uint_ge(tu_stats_ok(s).retries_waited, st.retries_waited + 1);
    assert_committed(s, "took", 1, 1, 5);
    assert_absent(s, "B"); /* waited on, never created */
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Blocking retry                                                     */
/* ------------------------------------------------------------------ */

START_TEST(blocking_get_waits_for_put)
{
    axstm_store *s = tu_store_ok();
    struct later l;
    struct getter g = { "q", -1, 0, &l };
    axstm_stats st;
    double t0, took;
    int rc;

    st = tu_stats_ok(s);
    later_start(&l, s, later_put, 0.02, "q", 42);
    t0 = tu_now();
    rc = axstm_atomically(s, get_body, &g);
    took = tu_now() - t0;
    later_join(&l);

    ck_assert_int_eq(l.rc, AXSTM_OK);
    ck_assert_int_eq(rc, AXSTM_OK);
    ck_assert_int_eq(g.item, 42);
    ck_assert_msg(took >= 0.015, "returned after %.4f s", took);
    /* Once empty, once after the wake-up: no busy waiting. */
    ck_assert_uint_ge(g.runs, 2);
    ck_assert_msg(g.runs <= 3, "the body ran %u times: busy waiting?", g.runs);
    ck_assert_uint_ge(tu_stats_ok(s).retries_waited, st.retries_waited + 1);
    assert_committed(s, "q.head", 1, 1, 1);
    assert_committed(s, "q.tail", 1, 1, 1);
    axstm_store_free(s);
}
END_TEST

START_TEST(timed_get_times_out)
{
    const double timeout = 0.1;
    axstm_store *s = tu_store_ok();
    struct getter g = { "q", -1, 0, NULL };
    tu_snapshot before, after;
    double t0, took;
    int rc;

    /* An empty queue whose keys exist. */
    q_put_ok(s, "q", 1);
    ck_assert_int_eq(axstm_atomically(s, get_body, &g), AXSTM_OK);
    tu_snapshot_take(s, &before);

    g.runs = 0;
    t0 = tu_now();
    rc = axstm_atomically_timed(s, get_body, &g, ns_of(timeout));
    took = tu_now() - t0;
    ck_assert_int_eq(rc, AXSTM_ETIMEDOUT);
    /* At or after its deadline (which the library guarantees), and not
     * long after it: only as a guard against a call that would not end,
     * since how soon a thread runs again is up to the scheduler. */
    ck_assert_msg(took >= timeout, "gave up after %.4f s, before %.3f s", took, timeout);
    ck_assert_msg(took < timeout + watchdog_seconds(), "gave up only after %.4f s", took);
    ck_assert_uint_eq(g.runs, 1);

    /* Timeout 0 never waits: one run, and it returns (the bound is only a
     * guard against a call that would wait for good). */
    g.runs = 0;
    t0 = tu_now();
    ck_assert_int_eq(axstm_atomically_timed(s, get_body, &g, 0), AXSTM_ETIMEDOUT);
    ck_assert_double_lt(tu_now() - t0, watchdog_seconds());
    ck_assert_uint_eq(g.runs, 1);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);

    /* Neither timeout matters when there is no need to wait. */
    q_put_ok(s, "q", 7);
    ck_assert_int_eq(axstm_atomically_timed(s, get_body, &g, 0), AXSTM_OK);
    ck_assert_int_eq(g.item, 7);
    q_put_ok(s, "q", 8);
    ck_assert_int_eq(axstm_atomically_timed(s, get_body, &g, ns_of(timeout)), AXSTM_OK);
    ck_assert_int_eq(g.item, 8);
    axstm_store_free(s);
}
END_TEST

START_TEST(timed_get_returns_when_put_comes_in_time)
{
    axstm_store *s = tu_store_ok();
    struct later l;
    struct getter g = { "q", -1, 0, &l };
    int rc;

    later_start(&l, s, later_put, 0.02, "q", 9);
    rc = axstm_atomically_timed(s, get_body, &g, wake_timeout_ns());
    later_join(&l);
    ck_assert_int_eq(l.rc, AXSTM_OK);
    ck_assert_int_eq(rc, AXSTM_OK);
    ck_assert_int_eq(g.item, 9);
    ck_assert_uint_le(g.runs, 3);
    axstm_store_free(s);
}
END_TEST

/* A timed call keeps its deadline however busy the keys it read are.  Two
 * writers commit "busy" as fast as they can while the body reads it and
 * retries, so most waits end at once (the key has changed again since the
 * body read it) and some reads find the key locked (a conflict, then a
 * backoff).  The body takes the time itself.  Its first run comes after
 * the call took its own deadline, so "first run + timeout" is at or after
 * that deadline, and a run that begins later than that began after the
 * deadline, whatever the speed of the machine.  Once the deadline has
 * passed a run that does not commit ends the call, and this body never
 * commits: at most one run of each call may begin after it. */
enum { BT_WRITERS = 2, BT_CALLS = 20, BT_LATE_RUNS_MAX = 1 };
#define BT_TIMEOUT_NS 1000000 /* 1 ms */

/* CLOCK_MONOTONIC in nanoseconds: exact, unlike tu_now's double. */
static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct bt_run {
    axstm_store *s;
    atomic_int stop;
    atomic_long commits; /* by all writers */
};

struct bt_writer {
    struct bt_run *run;
    long errors;
    int last_rc;
};

static void *bt_writer_main(void *arg)
{
    struct bt_writer *w = arg;
    axstm_value *v = NULL;
    int64_t x;
    int rc;

    TU_RETRY(rc, axstm_usevar(w->run->s, "busy", &v));
    while (rc == AXSTM_OK && !atomic_load_explicit(&w->run->stop, memory_order_relaxed)) {
        rc = axstm_value_get_i64(v, &x);
        if (rc == AXSTM_OK)
            rc = axstm_value_set_i64(v, x + 1);
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_value_commit(v));
        if (rc == AXSTM_CONCURRENT_UPDATE)
            TU_RETRY(rc, axstm_value_refresh(v));
        else if (rc == AXSTM_OK)
            atomic_fetch_add(&w->run->commits, 1);
    }
    if (rc != AXSTM_OK) {
        w->errors++;
        w->last_rc = rc;
    }
    axstm_value_free(v);
    return NULL;
}

struct bt_call {
    int64_t deadline; /* set by the first run */
    unsigned runs, late_runs;
};

static int bt_body(axstm_txn *tx, void *arg)
{
    struct bt_call *c = arg;
    int64_t now = mono_ns();
    int64_t x;
    if (c->runs++ == 0)
        c->deadline = now + BT_TIMEOUT_NS;
    else if (now > c->deadline && ++c->late_runs > BT_LATE_RUNS_MAX)
        return GAVE_UP; /* so that a broken deadline fails, not hangs */
    TX_TRY(axstm_txn_get_i64(tx, "busy", &x));
    return AXSTM_RETRY;
}

START_TEST(timed_call_keeps_deadline_under_busy_keys)
{
    struct bt_run run;
    struct bt_writer w[BT_WRITERS];
    pthread_t th[BT_WRITERS];
    struct bt_call c = { 0, 0, 0 };
    double give_up;
    int i, calls = 0, rc = AXSTM_ETIMEDOUT;

    run.s = tu_store_ok();
    atomic_init(&run.stop, 0);
    atomic_init(&run.commits, 0);
    put_i64(run.s, "busy", 0);
    memset(w, 0, sizeof w);
    for (i = 0; i < BT_WRITERS; i++) {
        w[i].run = &run;
        ck_assert_int_eq(pthread_create(&th[i], NULL, bt_writer_main, &w[i]), 0);
    }
    give_up = tu_now() + watchdog_seconds();
    while (atomic_load(&run.commits) < 2 * BT_WRITERS && tu_now() < give_up)
        sched_yield();
    while (calls < BT_CALLS && rc == AXSTM_ETIMEDOUT) {
        memset(&c, 0, sizeof c);
        rc = axstm_atomically_timed(run.s, bt_body, &c, BT_TIMEOUT_NS);
        calls++;
    }
    atomic_store(&run.stop, 1);
    for (i = 0; i < BT_WRITERS; i++)
        pthread_join(th[i], NULL);

    for (i = 0; i < BT_WRITERS; i++)
        ck_assert_msg(w[i].errors == 0, "writer %d: %s", i, axstm_strerror(w[i].last_rc));
    ck_assert_msg(rc == AXSTM_ETIMEDOUT,
                  "call %d of %d: %s after %u runs, %u of them begun past the deadline", calls,
                  BT_CALLS, rc == GAVE_UP ? "still running" : axstm_strerror(rc), c.runs,
                  c.late_runs);
    axstm_store_free(run.s);
}
END_TEST

/* A timed call does not queue behind an irrevocable transaction, whose
 * length it cannot know.  The holder keeps losing until it runs
 * irrevocably (it then holds "k" locked, which it sees as its own checkout
 * of "k" being busy) and stays in its body until told to end.  The timed
 * call keeps finding "k" locked, so it too soon wants to run irrevocably;
 * it must time out while the holder still holds, not once it is gone: the
 * holder holds until told (or until a guard against a hang runs out). */
struct irr_holder {
    axstm_store *s;
    atomic_int holding, release, let_go;
    unsigned runs;
    int rc;
};

static int irr_holder_body(axstm_txn *tx, void *arg)
{
    struct irr_holder *h = arg;
    axstm_value *v = NULL;
    double give_up;
    int64_t x;
    int rc;

    if (++h->runs > 1000)
        return GAVE_UP;
    TX_TRY(axstm_txn_get_i64(tx, "k", &x));
    rc = axstm_usevar(h->s, "k", &v); /* nobody else commits "k" */
    axstm_value_free(v);
    if (rc != AXSTM_BUSY_RETRY)
        return AXSTM_CONCURRENT_UPDATE; /* not irrevocable yet: lose */
    atomic_store(&h->holding, 1);
    give_up = tu_now() + watchdog_seconds();
    while (!atomic_load(&h->release) && tu_now() < give_up)
        tu_sleep_ns(200000);
    atomic_store(&h->let_go, 1);
    return AXSTM_OK;
}

static void *irr_holder_main(void *arg)
{
    struct irr_holder *h = arg;
    h->rc = axstm_atomically(h->s, irr_holder_body, h);
    atomic_store(&h->holding, 1); /* also when it failed: do not wait for it */
    return NULL;
}

static int read_k_retry_body(axstm_txn *tx, void *arg)
{
    int64_t x;
    ++*(unsigned *)arg;
    TX_TRY(axstm_txn_get_i64(tx, "k", &x));
    return AXSTM_RETRY;
}

START_TEST(timed_call_does_not_queue_for_irrevocable)
{
    struct irr_holder h;
    pthread_t th;
    unsigned runs = 0;
    int rc, let_go;

    memset(&h, 0, sizeof h);
    h.s = tu_store_ok();
    atomic_init(&h.holding, 0);
    atomic_init(&h.release, 0);
    atomic_init(&h.let_go, 0);
    put_i64(h.s, "k", 1);
    ck_assert_int_eq(pthread_create(&th, NULL, irr_holder_main, &h), 0);
    ck_assert(await_flag(&h.holding));
    rc = axstm_atomically_timed(h.s, read_k_retry_body, &runs, ns_of(0.02));
    let_go = atomic_load(&h.let_go);
    atomic_store(&h.release, 1);
    pthread_join(th, NULL);

    ck_assert_msg(h.rc == AXSTM_OK, "holder: %s", axstm_strerror(h.rc));
    ck_assert_msg(!let_go, "the timed call waited for the irrevocable transaction to end");
    ck_assert_int_eq(rc, AXSTM_ETIMEDOUT);
    ck_assert_uint_ge(runs, 1);
    assert_committed(h.s, "k", 1, 1, 1);
    axstm_store_free(h.s);
}
END_TEST

struct valwait {
    const char *key;
    int64_t x;
    unsigned runs;
    struct later *later;
};

static int valwait_body(axstm_txn *tx, void *arg)
{
    struct valwait *w = arg;
    int rc;
    w->runs++;
    rc = axstm_txn_get_i64(tx, w->key, &w->x);
    if (rc == AXSTM_ENOVALUE) {
        arm(w->later);
        return AXSTM_RETRY;
    }
    return rc;
}

static void assert_wakes_on_first_value(int create_first, int (*op)(struct later *))
{
    axstm_store *s = tu_store_ok();
    struct later l;
    struct valwait w = { "v", -1, 0, &l };
    double t0, took;
    int rc;

    if (create_first)
        axstm_value_free(tu_usevar_ok(s, "v"));
    later_start(&l, s, op, 0.02, "v", 7);
    t0 = tu_now();
    rc = axstm_atomically_timed(s, valwait_body, &w, wake_timeout_ns());
    took = tu_now() - t0;
    later_join(&l);
    ck_assert_int_eq(l.rc, AXSTM_OK);
    ck_assert_msg(rc == AXSTM_OK, "waiting for a first value: %s", axstm_strerror(rc));
    ck_assert_int_eq(w.x, 7);
    ck_assert_msg(took >= 0.015, "returned after %.4f s", took);
    ck_assert_uint_ge(w.runs, 2);
    ck_assert_msg(w.runs <= 3, "the body ran %u times: busy waiting?", w.runs);
    axstm_store_free(s);
}

START_TEST(wait_on_key_that_does_not_exist)
{
    assert_wakes_on_first_value(0, later_handle_set);
    assert_wakes_on_first_value(0, later_txn_set);
}
END_TEST

START_TEST(wait_on_key_with_no_value)
{
    assert_wakes_on_first_value(1, later_txn_set);
    assert_wakes_on_first_value(1, later_handle_set);
}
END_TEST

/* The blocked transactions registered on a key (white-box: its list of
 * waiters, as a commit walks it; 0 when the key has no entry), and how
 * many of them have been notified (their semaphore posted) without having
 * taken it yet. */
static size_t waiters_on(axstm_store *s, const char *key, size_t *notified)
{
    struct axstm__keyref ref = { key, strlen(key), 0, NULL };
    size_t n = 0;
    /* Pinned throughout: neither the entry nor a node taken out meanwhile
     * is freed under us. */
    unsigned pin = axstm__epoch_pin(&s->epoch);
    *notified = 0;
    axstm__table_find(&s->table, &ref);
    for (struct axstm__waitnode *node = ref.entry != NULL ? atomic_load(&ref.entry->waiters)
                                                          : NULL;
         node != NULL; node = atomic_load(&node->next)) {
        int posted = 0;
        n++;
        if (node->waiter->fd < 0 && sem_getvalue(&node->waiter->sem, &posted) == 0 &&
            posted > 0)
            ++*notified;
    }
    axstm__epoch_unpin(&s->epoch, pin);
    return n;
}

/*
 * A waiter on "watched" must sleep through commits of other keys.  Those
 * keys are not idle: another thread waits on all of them (the decoys), so
 * their commits do wake someone, and with DECOYS keys some of them share
 * the watched key's place in whatever structure finds a key's waiters.
 * The unrelated commits begin once the waiter is registered on "watched"
 * (white-box), so its wait spans every one of them however slow the
 * machine: after them it must still be registered, not notified, its body
 * run once; then a commit of "watched" ends its wait.
 */
enum { DECOYS = 256, UNRELATED_COMMITS = 2 * DECOYS };
static char decoy_names[DECOYS][16];

struct unrelated {
    axstm_store *s;
    atomic_int decoy_armed;
    long decoy_runs;
    int decoy_rc;
};

static int decoy_body(axstm_txn *tx, void *arg)
{
    struct unrelated *u = arg;
    int64_t x;
    int i, rc;
    u->decoy_runs++;
    rc = axstm_txn_get_i64(tx, "stop", &x);
    if (rc == AXSTM_OK)
        return AXSTM_OK;
    if (rc != AXSTM_ENOVALUE)
        return rc;
    for (i = 0; i < DECOYS; i++) {
        rc = axstm_txn_get_i64(tx, decoy_names[i], &x);
        if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
            return rc;
    }
    atomic_store(&u->decoy_armed, 1);
    return AXSTM_RETRY;
}

static void *decoy_main(void *arg)
{
    struct unrelated *u = arg;
    u->decoy_rc = axstm_atomically_timed(u->s, decoy_body, u, ns_of(watchdog_seconds()));
    atomic_store(&u->decoy_armed, 1);
    return NULL;
}

struct watched {
    axstm_store *s;
    atomic_uint runs;
    atomic_int armed, done;
    int64_t x;
    int rc;
};

static int watch_body(axstm_txn *tx, void *arg)
{
    struct watched *w = arg;
    atomic_fetch_add(&w->runs, 1);
    TX_TRY(axstm_txn_get_i64(tx, "watched", &w->x));
    if (w->x != 0)
        return AXSTM_OK;
    atomic_store(&w->armed, 1);
    return AXSTM_RETRY;
}

static void *watched_main(void *arg)
{
    struct watched *w = arg;
    /* The timeout is a guard against a hang only. */
    w->rc = axstm_atomically_timed(w->s, watch_body, w, ns_of(watchdog_seconds()));
    atomic_store(&w->done, 1);
    return NULL;
}

START_TEST(unrelated_commits_do_not_wake)
{
    axstm_store *s = tu_store_ok();
    struct unrelated u;
    struct watched w;
    pthread_t waiter, decoy;
    size_t registered = 0, notified = 0, still = 0, notified_after = 0;
    long commits = 0, errors = 0;
    int i, last_rc = AXSTM_OK, done_after;
    unsigned runs_after;
    double give_up;

    memset(&u, 0, sizeof u);
    u.s = s;
    atomic_init(&u.decoy_armed, 0);
    u.decoy_rc = INT_MIN;
    memset(&w, 0, sizeof w);
    w.s = s;
    atomic_init(&w.runs, 0);
    atomic_init(&w.armed, 0);
    atomic_init(&w.done, 0);
    w.rc = INT_MIN;
    put_i64(s, "watched", 0);
    for (i = 0; i < DECOYS; i++)
        snprintf(decoy_names[i], sizeof decoy_names[i], "decoy.%03d", i);
    ck_assert_int_eq(pthread_create(&decoy, NULL, decoy_main, &u), 0);
    ck_assert_int_eq(pthread_create(&waiter, NULL, watched_main, &w), 0);

    /* The waiter has found "watched" at 0 and is registered on it (asleep,
     * or on its way there: either way a commit of another key must not
     * touch it). */
    ck_assert(await_flag(&u.decoy_armed));
    ck_assert(await_flag(&w.armed));
    give_up = tu_now() + watchdog_seconds();
    while ((registered = waiters_on(s, "watched", &notified)) == 0 &&
           !atomic_load(&w.done) && tu_now() < give_up)
        tu_sleep_ns(200000);
    for (i = 0; registered == 1 && i < UNRELATED_COMMITS; i++) {
        const char *k = decoy_names[i % DECOYS];
        int rc = i % 2 ? commit_by_txn(s, &k, 1, i) : commit_by_handle(s, &k, 1, i);
        if (rc == AXSTM_OK) {
            commits++;
        } else {
            errors++;
            last_rc = rc;
        }
    }
    still = waiters_on(s, "watched", &notified_after);
    runs_after = atomic_load(&w.runs);
    done_after = atomic_load(&w.done);
    /* Now the commit it waits for. */
    put_i64(s, "watched", 1);
    pthread_join(waiter, NULL);
    put_i64(s, "stop", 1);
    pthread_join(decoy, NULL);

    ck_assert_msg(registered == 1 && notified == 0,
                  "%zu waiters on \"watched\" (%zu notified) before the other commits",
                  registered, notified);
    ck_assert_msg(errors == 0, "unrelated commit: %s", axstm_strerror(last_rc));
    ck_assert_int_eq(commits, UNRELATED_COMMITS);
    ck_assert_msg(!done_after && runs_after == 1 && still == 1 && notified_after == 0,
                  "after %ld commits of other keys: the wait %s, the body ran %u times, "
                  "%zu waiters (%zu notified)",
                  commits, done_after ? "ended" : "goes on", runs_after, still,
                  notified_after);
    ck_assert_msg(w.rc == AXSTM_OK, "waiting on \"watched\": %s", axstm_strerror(w.rc));
    ck_assert_int_eq(w.x, 1);
    ck_assert_uint_eq(atomic_load(&w.runs), 2);
    ck_assert_msg(u.decoy_rc == AXSTM_OK, "decoy waiter: %s", axstm_strerror(u.decoy_rc));
    ck_assert_int_ge(u.decoy_runs, 2); /* the decoys' commits did wake it */
    assert_committed(s, "watched", 2, 1, 1);
    axstm_store_free(s);
}
END_TEST

/*
 * The commit a waiter needs lands between its read and its sleep.  In odd
 * rounds the body itself waits for that commit before it says AXSTM_RETRY
 * (so the commit surely lands after the read, before any sleep); in even
 * rounds the committer spins on the body's signal and commits while the
 * library is on its way to sleep.  A wake-up lost in either window would
 * leave the waiter asleep for good (here: until its timeout).
 */
enum { PP_ROUNDS = 2000 };

struct pingpong {
    axstm_store *s;
    atomic_int armed_round, committed_round, stop;
    int round;
    int rc, commit_errors, committer_lost, body_lost, last_commit_rc;
};

static int pp_wait_body(axstm_txn *tx, void *arg)
{
    struct pingpong *pp = arg;
    int64_t x;
    int rc = axstm_txn_get_i64(tx, "ball", &x);
    if (rc == AXSTM_OK && x >= pp->round)
        return AXSTM_OK;
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    atomic_store(&pp->armed_round, pp->round);
    if (pp->round % 2) {
        double give_up = tu_now() + watchdog_seconds();
        while (atomic_load(&pp->committed_round) < pp->round) {
            if (tu_now() > give_up) {
                pp->body_lost = 1;
                break;
            }
            sched_yield();
        }
    }
    return AXSTM_RETRY;
}

static void *pp_committer_main(void *arg)
{
    struct pingpong *pp = arg;
    const char *k = "ball";
    int round;
    for (round = 1; round <= PP_ROUNDS; round++) {
        double give_up = tu_now() + watchdog_seconds();
        unsigned spins = 0;
        int rc;
        while (atomic_load(&pp->armed_round) < round) {
            if (atomic_load(&pp->stop))
                return NULL;
            if (++spins % 256 == 0) {
                if (tu_now() > give_up) {
                    pp->committer_lost = 1;
                    return NULL;
                }
                sched_yield();
            }
        }
        rc = round % 4 < 2 ? commit_by_txn(pp->s, &k, 1, round)
                           : commit_by_handle(pp->s, &k, 1, round);
        if (rc != AXSTM_OK) {
            pp->commit_errors++;
            pp->last_commit_rc = rc;
        }
        atomic_store(&pp->committed_round, round);
    }
    return NULL;
}

START_TEST(wakeup_right_after_retry_is_not_lost)
{
    struct pingpong pp;
    pthread_t th;
    int64_t timeout = ns_of(watchdog_seconds()); /* a guard against a hang */

    memset(&pp, 0, sizeof pp);
    pp.s = tu_store_ok();
    atomic_init(&pp.armed_round, 0);
    atomic_init(&pp.committed_round, 0);
    atomic_init(&pp.stop, 0);
    pp.rc = AXSTM_OK;
    ck_assert_int_eq(pthread_create(&th, NULL, pp_committer_main, &pp), 0);
    for (pp.round = 1; pp.round <= PP_ROUNDS; pp.round++) {
        pp.rc = axstm_atomically_timed(pp.s, pp_wait_body, &pp, timeout);
        if (pp.rc != AXSTM_OK)
            break;
    }
    atomic_store(&pp.stop, 1);
    pthread_join(th, NULL);

    ck_assert_msg(pp.rc == AXSTM_OK, "round %d: %s (a lost wake-up?)", pp.round,
                  axstm_strerror(pp.rc));
    ck_assert_msg(pp.commit_errors == 0, "commit: %s", axstm_strerror(pp.last_commit_rc));
    ck_assert_int_eq(pp.committer_lost, 0);
    ck_assert_int_eq(pp.body_lost, 0);
    assert_committed(pp.s, "ball", PP_ROUNDS, 1, PP_ROUNDS);
    axstm_store_free(pp.s);
}
END_TEST

/* ---- no lost wake-up: many consumers, many producers ---- */

enum { QW_CONSUMERS = 4, QW_PRODUCERS = 4, QW_ITEMS = 2000 };
#define QW_SENTINEL (-1)

struct qw_run {
    axstm_store *s;
    int two_queues;
    atomic_int armed;
};

struct qw_consumer {
    struct qw_run *run;
    int64_t item;
    int armed;
    int64_t *got;
    size_t ngot;
    int sentinels, errors, last_rc;
};

struct qw_producer {
    struct qw_run *run;
    int index;
    int errors, last_rc, not_armed;
};

static int qw_get1(axstm_txn *tx, void *arg)
{
    struct qw_consumer *c = arg;
    return q_get(tx, "q1", &c->item);
}

static int qw_get2(axstm_txn *tx, void *arg)
{
    struct qw_consumer *c = arg;
    return q_get(tx, "q2", &c->item);
}

static int qw_body(axstm_txn *tx, void *arg)
{
    struct qw_consumer *c = arg;
    int rc = c->run->two_queues ? axstm_or_else(tx, qw_get1, qw_get2, c) : qw_get1(tx, c);
    if (rc == AXSTM_RETRY && !c->armed) {
        c->armed = 1;
        atomic_fetch_add(&c->run->armed, 1);
    }
    return rc;
}

static void *qw_consumer_main(void *arg)
{
    struct qw_consumer *c = arg;
    int64_t timeout = ns_of(watchdog_seconds());
    for (;;) {
        int rc = axstm_atomically_timed(c->run->s, qw_body, c, timeout);
        if (rc != AXSTM_OK) {
            c->errors++;
            c->last_rc = rc;
            return NULL;
        }
        if (c->item == QW_SENTINEL) {
            c->sentinels++;
            return NULL;
        }
        if (c->ngot == QW_ITEMS) {
            c->errors++;
            return NULL;
        }
        c->got[c->ngot++] = c->item;
    }
}

static void *qw_producer_main(void *arg)
{
    struct qw_producer *p = arg;
    const int per = QW_ITEMS / QW_PRODUCERS;
    double give_up = tu_now() + watchdog_seconds();
    int i;
    /* Start once every consumer has found the queues empty, so that all of
     * them go to sleep at least once. */
    while (atomic_load(&p->run->armed) < QW_CONSUMERS) {
        if (tu_now() > give_up) {
            p->not_armed = 1;
            break;
        }
        tu_sleep_ns(200000);
    }
    tu_sleep_ns(10000000); /* and has had time to fall asleep */
    for (i = 0; i < per; i++) {
        struct putter pt;
        int rc;
        pt.q = p->run->two_queues && i % 2 ? "q2" : "q1";
        pt.x = (int64_t)p->index * per + i;
        rc = axstm_atomically(p->run->s, put_body, &pt);
        if (rc != AXSTM_OK) {
            p->errors++;
            p->last_rc = rc;
        }
        if (i % 8 == 7)
            sched_yield(); /* let consumers drain the queue and wait again */
    }
    return NULL;
}

static void assert_no_lost_wakeup(int two_queues)
{
    struct qw_run run;
    struct qw_consumer cons[QW_CONSUMERS];
    struct qw_producer prod[QW_PRODUCERS];
    pthread_t cth[QW_CONSUMERS], pth[QW_PRODUCERS];
    unsigned char *seen = tu_xmalloc(QW_ITEMS);
    size_t total = 0, k;
    int i;

    memset(&run, 0, sizeof run);
    run.s = tu_store_ok();
    run.two_queues = two_queues;
    atomic_init(&run.armed, 0);
    memset(cons, 0, sizeof cons);
    memset(prod, 0, sizeof prod);
    memset(seen, 0, QW_ITEMS);
    for (i = 0; i < QW_CONSUMERS; i++) {
        cons[i].run = &run;
        cons[i].got = tu_xmalloc(QW_ITEMS * sizeof *cons[i].got);
        ck_assert_int_eq(pthread_create(&cth[i], NULL, qw_consumer_main, &cons[i]), 0);
    }
    for (i = 0; i < QW_PRODUCERS; i++) {
        prod[i].run = &run;
        prod[i].index = i;
        ck_assert_int_eq(pthread_create(&pth[i], NULL, qw_producer_main, &prod[i]), 0);
    }
    for (i = 0; i < QW_PRODUCERS; i++)
        pthread_join(pth[i], NULL);
    /* One sentinel per consumer: each stops at the first it takes. */
    for (i = 0; i < QW_CONSUMERS; i++) {
        struct putter pt = { two_queues && i % 2 ? "q2" : "q1", QW_SENTINEL };
        int rc = axstm_atomically(run.s, put_body, &pt);
        if (rc != AXSTM_OK)
            prod[0].errors++, prod[0].last_rc = rc;
    }
    for (i = 0; i < QW_CONSUMERS; i++)
        pthread_join(cth[i], NULL);

    for (i = 0; i < QW_PRODUCERS; i++) {
        ck_assert_msg(prod[i].errors == 0, "producer %d: %s", i,
                      axstm_strerror(prod[i].last_rc));
        ck_assert_msg(!prod[i].not_armed, "the consumers never all found the queue empty");
    }
    for (i = 0; i < QW_CONSUMERS; i++) {
        ck_assert_msg(cons[i].errors == 0, "consumer %d: %s (a lost wake-up?)", i,
                      axstm_strerror(cons[i].last_rc));
        ck_assert_int_eq(cons[i].sentinels, 1);
        for (k = 0; k < cons[i].ngot; k++) {
            int64_t x = cons[i].got[k];
            ck_assert_msg(x >= 0 && x < QW_ITEMS, "consumer %d got %lld", i, (long long)x);
            ck_assert_msg(seen[x] == 0, "item %lld delivered twice", (long long)x);
            seen[x] = 1;
        }
        total += cons[i].ngot;
        free(cons[i].got);
    }
    ck_assert_uint_eq(total, QW_ITEMS);
    ck_assert_uint_ge(tu_stats_ok(run.s).retries_waited, QW_CONSUMERS);
    free(seen);
    axstm_store_free(run.s);
}

START_TEST(no_lost_wakeup_one_queue)
{
    assert_no_lost_wakeup(0);
}
END_TEST

START_TEST(no_lost_wakeup_or_else_over_two_queues)
{
    assert_no_lost_wakeup(1);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Opacity                                                            */
/* ------------------------------------------------------------------ */

/* Reads a, lets another thread commit a and c together, then reads c. */
struct stale {
    struct interloper *it;
    unsigned runs;
    int c_rc;
    int64_t a_first, c_first;
    int64_t d;
};

static int stale_body(axstm_txn *tx, void *arg)
{
    struct stale *st = arg;
    int64_t a, c;
    int rc;
    st->runs++;
    TX_TRY(axstm_txn_get_i64(tx, "a", &a));
    interloper_meet(st->it);
    rc = axstm_txn_get_i64(tx, "c", &c);
    if (st->runs == 1) {
        st->a_first = a;
        st->c_rc = rc;
        st->c_first = rc == AXSTM_OK ? c : INT64_MIN;
    }
    TX_TRY(rc);
    st->d = a + c;
    return axstm_txn_set_i64(tx, "d", a + c);
}

static void assert_stale_read_refused(int (*op)(struct interloper *))
{
    axstm_store *s = tu_store_ok();
    struct interloper it;
    struct stale st;
    int rc;

    memset(&st, 0, sizeof st);
    st.it = &it;
    put_i64(s, "a", 0);
    put_i64(s, "c", 0);
    interloper_start(&it, s, op, 1, "a", "c");
    rc = axstm_atomically(s, stale_body, &st);
    ck_assert(interloper_finish(&it));
    ck_assert_int_eq(it.rc, AXSTM_OK);
    ck_assert_int_eq(rc, AXSTM_OK);
    ck_assert_int_eq(st.a_first, 0);
    /* The first run read a = 0; c = 1 (committed with a = 1) would be a
     * state no serial order gives.  The read must fail, or give c = 0. */
    ck_assert_msg(st.c_rc == AXSTM_CONCURRENT_UPDATE ||
                      (st.c_rc == AXSTM_OK && st.c_first == 0),
                  "after a = 0 the body read c: %s, %lld", axstm_strerror(st.c_rc),
                  (long long)st.c_first);
    ck_assert_uint_eq(st.runs, 2);
    assert_committed(s, "d", 1, 1, 2);
    axstm_store_free(s);
}

START_TEST(stale_snapshot_read_is_refused)
{
    assert_stale_read_refused(op_txn_set);
    assert_stale_read_refused(op_handle_set);
}
END_TEST

/* The run lasts until the writer has committed this many times and each
 * reader has finished this many transactions (and its time is up). */
enum { XY_QUOTA = 10 };

struct xy_run {
    axstm_store *s;
    tu_clock clock;
    int via_handles;
    long writes, write_errors;
    int last_rc;
};

struct xy_reader {
    struct xy_run *run;
    uint64_t seed;
    int order;
    unsigned spin;
    long bodies, checked, broken, errors, done;
    int last_rc;
    int64_t bad_x, bad_y;
};

static int xy_write_body(axstm_txn *tx, void *arg)
{
    const int64_t *i = arg;
    TX_TRY(axstm_txn_set_i64(tx, "x", *i));
    return axstm_txn_set_i64(tx, "y", -*i);
}

static void *xy_writer_main(void *arg)
{
    static const char *const keys[] = { "x", "y" };
    struct xy_run *r = arg;
    axstm_collection *c = NULL;
    unsigned long rounds = 0;
    int64_t i = 0;
    int rc;

    if (r->via_handles) {
        TU_RETRY(rc, axstm_using(r->s, keys, 2, &c));
        if (rc != AXSTM_OK) {
            r->write_errors++;
            r->last_rc = rc;
            return NULL;
        }
    }
    while (!tu_time_up(&r->clock, &rounds)) {
        i++;
        if (r->via_handles) {
            rc = axstm_value_set_i64(axstm_collection_at(c, 0), i);
            if (rc == AXSTM_OK)
                rc = axstm_value_set_i64(axstm_collection_at(c, 1), -i);
            if (rc == AXSTM_OK)
                TU_RETRY(rc, axstm_collection_commit(c));
        } else {
            rc = axstm_atomically(r->s, xy_write_body, &i);
        }
        if (rc == AXSTM_OK) {
            if (++r->writes == XY_QUOTA)
                tu_clock_paid(&r->clock);
        } else {
            /* The only writer: neither a conflict nor anything else. */
            r->write_errors++;
            r->last_rc = rc;
            break;
        }
    }
    axstm_collection_free(c);
    return NULL;
}

static int xy_read_body(axstm_txn *tx, void *arg)
{
    struct xy_reader *rd = arg;
    const char *first = rd->order ? "y" : "x", *second = rd->order ? "x" : "y";
    volatile unsigned sink = 0;
    int64_t a, b;
    unsigned i;
    int rc;

    rd->bodies++;
    rc = axstm_txn_get_i64(tx, first, &a);
    if (rc == AXSTM_OK) {
        for (i = 0; i < rd->spin; i++)
            sink += i;
        (void)sink;
        rc = axstm_txn_get_i64(tx, second, &b);
    }
    if (rc != AXSTM_OK) {
        if (rc != AXSTM_CONCURRENT_UPDATE && rc != AXSTM_BUSY_RETRY) {
            rd->errors++;
            rd->last_rc = rc;
        }
        return rc;
    }
    rd->checked++;
    if (a + b != 0) {
        rd->broken++;
        rd->bad_x = rd->order ? b : a;
        rd->bad_y = rd->order ? a : b;
    }
    return AXSTM_OK;
}

static void *xy_reader_main(void *arg)
{
    struct xy_reader *rd = arg;
    unsigned long rounds = 0;
    while (!tu_time_up(&rd->run->clock, &rounds)) {
        int rc;
        rd->order ^= 1;
        rd->spin = (unsigned)(tu_rand(&rd->seed) % 4000);
        rc = axstm_atomically(rd->run->s, xy_read_body, rd);
        if (rc == AXSTM_OK) {
            if (++rd->done == XY_QUOTA)
                tu_clock_paid(&rd->run->clock);
        } else {
            rd->errors++;
            rd->last_rc = rc;
        }
    }
    return NULL;
}

static void assert_invariant_holds_inside_readers(int via_handles)
{
    enum { READERS = 2 };
    struct xy_run run;
    struct xy_reader rd[READERS];
    pthread_t writer, readers[READERS];
    int i;

    memset(&run, 0, sizeof run);
    run.s = tu_store_ok();
    run.via_handles = via_handles;
    put_i64(run.s, "x", 0);
    put_i64(run.s, "y", 0);
    memset(rd, 0, sizeof rd);
    tu_clock_start(&run.clock, run_seconds(0.3));
    tu_clock_owe(&run.clock, 1 + READERS);
    for (i = 0; i < READERS; i++) {
        rd[i].run = &run;
        rd[i].seed = 0x9e3779b97f4a7c15u * (uint64_t)(i + 1);
        ck_assert_int_eq(pthread_create(&readers[i], NULL, xy_reader_main, &rd[i]), 0);
    }
    ck_assert_int_eq(pthread_create(&writer, NULL, xy_writer_main, &run), 0);
    pthread_join(writer, NULL);
    for (i = 0; i < READERS; i++)
        pthread_join(readers[i], NULL);

    ck_assert_msg(run.write_errors == 0, "writer: %s", axstm_strerror(run.last_rc));
    ck_assert_int_ge(run.writes, XY_QUOTA);
    for (i = 0; i < READERS; i++) {
        ck_assert_msg(rd[i].broken == 0,
                      "reader %d saw x + y != 0 inside %ld of %ld bodies (x=%lld y=%lld)",
                      i, rd[i].broken, rd[i].checked, (long long)rd[i].bad_x,
                      (long long)rd[i].bad_y);
        ck_assert_msg(rd[i].errors == 0, "reader %d: %s", i, axstm_strerror(rd[i].last_rc));
        ck_assert_int_ge(rd[i].done, XY_QUOTA);
    }
    {
        int64_t x = i64_of(run.s, "x"), y = i64_of(run.s, "y");
        ck_assert_int_eq(x, run.writes);
        ck_assert_int_eq(y, -run.writes);
    }
    axstm_store_free(run.s);
}

START_TEST(invariant_holds_inside_readers_txn_writer)
{
    assert_invariant_holds_inside_readers(0);
}
END_TEST

START_TEST(invariant_holds_inside_readers_handle_writer)
{
    assert_invariant_holds_inside_readers(1);
}
END_TEST

struct pair_sum {
    int64_t sum;
};

static int read_two_body(axstm_txn *tx, void *arg)
{
    struct pair_sum *p = arg;
    int64_t k, j;
    TX_TRY(axstm_txn_get_i64(tx, "k", &k));
    TX_TRY(axstm_txn_get_i64(tx, "j", &j));
    p->sum = k + j;
    return AXSTM_OK;
}

/* Reads a, writes k and a, then retries. */
static int write_then_retry(axstm_txn *tx, void *arg)
{
    int64_t a;
    (void)arg;
    TX_TRY(axstm_txn_get_i64(tx, "a", &a));
    TX_TRY(axstm_txn_set_i64(tx, "k", 100));
    TX_TRY(axstm_txn_set_i64(tx, "a", a + 1));
    return AXSTM_RETRY;
}

static int drop_then_read_body(axstm_txn *tx, void *arg)
{
    return axstm_or_else(tx, write_then_retry, read_two_body, arg);
}

START_TEST(read_only_transaction_publishes_nothing)
{
    axstm_store *s = tu_store_ok();
    struct pair_sum p = { 0 };
    axstm_value *h;
    axstm_stats st;

    put_i64(s, "k", 5);
    put_i64(s, "j", 6);
    put_i64(s, "a", 1);
    h = tu_usevar_ok(s, "k");
    st = tu_stats_ok(s);
    ck_assert_int_eq(axstm_atomically(s, read_two_body, &p), AXSTM_OK);
    ck_assert_int_eq(p.sum, 11);
    /* A retried branch's writes are dropped: read-only again. */
    p.sum = 0;
    ck_assert_int_eq(axstm_atomically(s, drop_then_read_body, &p), AXSTM_OK);
    ck_assert_int_eq(p.sum, 11);
    ck_assert_uint_eq(tu_stats_ok(s).commits, st.commits);
    ck_assert_uint_eq(version_of(s, "k"), 1);
    ck_assert_uint_eq(version_of(s, "j"), 1);
    assert_committed(s, "a", 1, 1, 1);
    /* So a handle checked out before is still current. */
    ck_assert_int_eq(tu_commit(h), AXSTM_OK);
    axstm_value_free(h);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Serializability                                                    */
/* ------------------------------------------------------------------ */

enum { BANK_ACCOUNTS = 16, BANK_INITIAL = 1000, BANK_TELLERS = 3 };
static char bank_names[BANK_ACCOUNTS][16];

static void name_accounts(void)
{
    int i;
    for (i = 0; i < BANK_ACCOUNTS; i++)
        snprintf(bank_names[i], sizeof bank_names[i], "account.%02d", i);
}

/* The run lasts until each teller has made this many transfers, some
 * transfer has been refused (a rollback) and the auditor has audited this
 * many times (and its time is up). */
enum { BANK_QUOTA = 10 };

struct bank_run {
    axstm_store *s;
    tu_clock clock;
    atomic_int refused_once;
};

struct teller {
    struct bank_run *run;
    uint64_t seed;
    long ok, refused, errors;
    int last_rc;
};

struct auditor {
    struct bank_run *run;
    long audits, checked, wrong, negative, errors;
    int last_rc;
    int64_t bad_sum;
};

static void *teller_main(void *arg)
{
    struct teller *t = arg;
    unsigned long rounds = 0;
    while (!tu_time_up(&t->run->clock, &rounds)) {
        int from = (int)(tu_rand(&t->seed) % BANK_ACCOUNTS);
        int to = (from + 1 + (int)(tu_rand(&t->seed) % (BANK_ACCOUNTS - 1))) % BANK_ACCOUNTS;
        struct transfer tr;
        int rc;
        tr.from = bank_names[from];
        tr.to = bank_names[to];
        tr.amount = 1 + (int64_t)(tu_rand(&t->seed) % 1500);
        tr.runs = 0;
        rc = axstm_atomically(t->run->s, transfer_body, &tr);
        if (rc == AXSTM_OK) {
            if (++t->ok == BANK_QUOTA)
                tu_clock_paid(&t->run->clock);
        } else if (rc == NOT_ENOUGH_MONEY) {
            t->refused++;
            if (!atomic_exchange(&t->run->refused_once, 1))
                tu_clock_paid(&t->run->clock);
        } else {
            t->errors++;
            t->last_rc = rc;
        }
    }
    return NULL;
}

static int audit_body(axstm_txn *tx, void *arg)
{
    struct auditor *a = arg;
    int64_t sum = 0, x;
    int i;
    for (i = 0; i < BANK_ACCOUNTS; i++) {
        TX_TRY(axstm_txn_get_i64(tx, bank_names[i], &x));
        if (x < 0)
            a->negative++;
        sum += x;
    }
    /* Inside the body, before commit: opacity says this is a real state. */
    a->checked++;
    if (sum != (int64_t)BANK_ACCOUNTS * BANK_INITIAL) {
        a->wrong++;
        a->bad_sum = sum;
    }
    return AXSTM_OK;
}

static void *auditor_main(void *arg)
{
    struct auditor *a = arg;
    unsigned long rounds = 0;
    while (!tu_time_up(&a->run->clock, &rounds)) {
        int rc = axstm_atomically(a->run->s, audit_body, a);
        if (rc == AXSTM_OK) {
            if (++a->audits == BANK_QUOTA)
                tu_clock_paid(&a->run->clock);
        } else {
            a->errors++;
            a->last_rc = rc;
        }
    }
    return NULL;
}

START_TEST(bank_total_is_conserved)
{
    struct bank_run run;
    struct teller tellers[BANK_TELLERS];
    struct auditor aud;
    pthread_t tth[BANK_TELLERS], ath;
    long ok = 0, refused = 0;
    int64_t sum = 0;
    int i;

    name_accounts();
    memset(&run, 0, sizeof run);
    run.s = tu_store_ok();
    for (i = 0; i < BANK_ACCOUNTS; i++)
        put_i64(run.s, bank_names[i], BANK_INITIAL);
    memset(tellers, 0, sizeof tellers);
    memset(&aud, 0, sizeof aud);
    aud.run = &run;
    atomic_init(&run.refused_once, 0);
    tu_clock_start(&run.clock, run_seconds(0.4));
    /* Each teller, one refusal, the auditor. */
    tu_clock_owe(&run.clock, BANK_TELLERS + 2);
    for (i = 0; i < BANK_TELLERS; i++) {
        tellers[i].run = &run;
        tellers[i].seed = 0x2545f4914f6cdd1du * (uint64_t)(i + 3);
        ck_assert_int_eq(pthread_create(&tth[i], NULL, teller_main, &tellers[i]), 0);
    }
    ck_assert_int_eq(pthread_create(&ath, NULL, auditor_main, &aud), 0);
    for (i = 0; i < BANK_TELLERS; i++)
        pthread_join(tth[i], NULL);
    pthread_join(ath, NULL);

    for (i = 0; i < BANK_TELLERS; i++) {
        ck_assert_msg(tellers[i].errors == 0, "teller %d: %s", i,
                      axstm_strerror(tellers[i].last_rc));
        ck_assert_msg(tellers[i].ok >= BANK_QUOTA, "teller %d made %ld transfers", i,
                      tellers[i].ok);
        ok += tellers[i].ok;
        refused += tellers[i].refused;
    }
    ck_assert_int_gt(ok, 0);
    ck_assert_int_gt(refused, 0); /* rollback was exercised */
    ck_assert_msg(aud.errors == 0, "auditor: %s", axstm_strerror(aud.last_rc));
    ck_assert_int_ge(aud.audits, BANK_QUOTA);
    ck_assert_msg(aud.wrong == 0, "the auditor saw %ld wrong totals of %ld (e.g. %lld)",
                  aud.wrong, aud.checked, (long long)aud.bad_sum);
    ck_assert_int_eq(aud.negative, 0);
    for (i = 0; i < BANK_ACCOUNTS; i++) {
        int64_t x = i64_of(run.s, bank_names[i]);
        ck_assert_msg(x >= 0, "%s ends at %lld", bank_names[i], (long long)x);
        sum += x;
    }
    ck_assert_int_eq(sum, (int64_t)BANK_ACCOUNTS * BANK_INITIAL);
    axstm_store_free(run.s);
}
END_TEST

/* Write skew: with a + b = 1, two transactions each take 1 if a + b >= 1,
 * one from a and one from b.  Run one after the other, the second is
 * refused; validating only the keys written would let both commit. */
struct skew {
    struct interloper *it;
    unsigned runs;
};

static int take_from(axstm_txn *tx, const char *key)
{
    int64_t a, b, x;
    TX_TRY(axstm_txn_get_i64(tx, "a", &a));
    TX_TRY(axstm_txn_get_i64(tx, "b", &b));
    if (a + b < 1)
        return NOT_ENOUGH_MONEY;
    TX_TRY(axstm_txn_get_i64(tx, key, &x));
    return axstm_txn_set_i64(tx, key, x - 1);
}

/* Reads both, lets the other taker commit, then decides on what it read:
 * only the commit can see that b changed. */
static int skew_body(axstm_txn *tx, void *arg)
{
    struct skew *sk = arg;
    int64_t a, b;
    sk->runs++;
    TX_TRY(axstm_txn_get_i64(tx, "a", &a));
    TX_TRY(axstm_txn_get_i64(tx, "b", &b));
    interloper_meet(sk->it);
    if (a + b < 1)
        return NOT_ENOUGH_MONEY;
    return axstm_txn_set_i64(tx, "a", a - 1);
}

static int take_from_b_body(axstm_txn *tx, void *arg)
{
    (void)arg;
    return take_from(tx, "b");
}

static int op_take_from_b(struct interloper *it)
{
    return axstm_atomically(it->s, take_from_b_body, NULL);
}

START_TEST(write_skew_is_prevented)
{
    axstm_store *s = tu_store_ok();
    struct interloper it;
    struct skew sk = { &it, 0 };
    int rc;

    put_i64(s, "a", 0);
    put_i64(s, "b", 1);
    interloper_start(&it, s, op_take_from_b, 0, "b", NULL);
    rc = axstm_atomically(s, skew_body, &sk);
    ck_assert(interloper_finish(&it));
    ck_assert_int_eq(it.rc, AXSTM_OK);
    ck_assert_msg(rc == NOT_ENOUGH_MONEY, "the second taker got %s",
                  rc == AXSTM_OK ? "through: write skew" : axstm_strerror(rc));
    ck_assert_uint_eq(sk.runs, 2);
    assert_committed(s, "a", 1, 1, 0);
    assert_committed(s, "b", 2, 1, 0);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Progress                                                           */
/* ------------------------------------------------------------------ */

enum { PG_KEYS = 64, PG_HOT = 31, PG_ROUNDS = 20, PG_MAX_RUNS = 64, PG_GIVE_UP_RUNS = 1000 };
static char pg_names[PG_KEYS][8];

struct pg_run {
    axstm_store *s;
    atomic_int stop, started;
    atomic_long hot_commits; /* by all hammers */
};

struct hammer {
    struct pg_run *run;
    int via_handle;
    long done, errors;
    int last_rc;
};

struct big {
    struct pg_run *run;
    double give_up;
    unsigned long runs, call_runs;
};

static int incr_hot_body(axstm_txn *tx, void *arg)
{
    int64_t x;
    (void)arg;
    TX_TRY(axstm_txn_get_i64(tx, pg_names[PG_HOT], &x));
    return axstm_txn_set_i64(tx, pg_names[PG_HOT], x + 1);
}

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    axstm_value *v = NULL;
    int rc;

    if (h->via_handle) {
        TU_RETRY(rc, axstm_usevar(h->run->s, pg_names[PG_HOT], &v));
        if (rc != AXSTM_OK) {
            h->errors++;
            h->last_rc = rc;
            atomic_fetch_add(&h->run->started, 1);
            return NULL;
        }
    }
    while (!atomic_load_explicit(&h->run->stop, memory_order_relaxed)) {
        if (h->via_handle) {
            int64_t x;
            rc = axstm_value_get_i64(v, &x);
            if (rc == AXSTM_OK)
                rc = axstm_value_set_i64(v, x + 1);
            if (rc == AXSTM_OK)
                TU_RETRY(rc, axstm_value_commit(v));
            if (rc == AXSTM_CONCURRENT_UPDATE) {
                TU_RETRY(rc, axstm_value_refresh(v));
                continue;
            }
        } else {
            rc = axstm_atomically(h->run->s, incr_hot_body, NULL);
        }
        if (rc != AXSTM_OK) {
            h->errors++;
            h->last_rc = rc;
            break;
        }
        atomic_fetch_add(&h->run->hot_commits, 1);
        if (h->done++ == 0)
            atomic_fetch_add(&h->run->started, 1);
    }
    if (h->done == 0 && h->errors == 0)
        atomic_fetch_add(&h->run->started, 1);
    axstm_value_free(v);
    return NULL;
}

/* Waits (at most 2 ms) until the hammers have committed the hot key twice
 * more: the second of those began after the caller's read of it. */
static void let_hammers_commit(struct pg_run *run)
{
    long seen = atomic_load(&run->hot_commits);
    double until = tu_now() + 0.002;
    while (atomic_load(&run->hot_commits) < seen + 2 && tu_now() < until)
        sched_yield();
}

/* Reads all 64 keys, then increments each.  After reading the hot key it
 * lets the hammers commit it, as happens to a long transaction, whatever
 * the number of cores: an attempt that only validates at commit then
 * always loses, and only a way to run without losing lets it finish. */
static int big_body(axstm_txn *tx, void *arg)
{
    struct big *b = arg;
    int64_t x[PG_KEYS];
    int i;
    b->runs++;
    if (++b->call_runs > PG_GIVE_UP_RUNS || tu_now() > b->give_up)
        return GAVE_UP;
    for (i = 0; i < PG_KEYS; i++) {
        TX_TRY(axstm_txn_get_i64(tx, pg_names[i], &x[i]));
        if (i == PG_HOT)
            let_hammers_commit(b->run);
    }
    for (i = 0; i < PG_KEYS; i++)
        TX_TRY(axstm_txn_set_i64(tx, pg_names[i], x[i] + 1));
    return AXSTM_OK;
}

START_TEST(long_transaction_finishes_under_hammering)
{
    enum { HAMMERS = 2 };
    struct pg_run run;
    struct hammer h[HAMMERS];
    struct big b;
    pthread_t th[HAMMERS];
    double give_up;
    int i, rounds = 0, rc = AXSTM_OK;
    long hammered = 0;
    unsigned long most_runs = 0;

    for (i = 0; i < PG_KEYS; i++)
        snprintf(pg_names[i], sizeof pg_names[i], "p.%02d", i);
    memset(&run, 0, sizeof run);
    run.s = tu_store_ok();
    atomic_init(&run.stop, 0);
    atomic_init(&run.started, 0);
    atomic_init(&run.hot_commits, 0);
    for (i = 0; i < PG_KEYS; i++)
        put_i64(run.s, pg_names[i], 0);
    memset(h, 0, sizeof h);
    for (i = 0; i < HAMMERS; i++) {
        h[i].run = &run;
        h[i].via_handle = i % 2;
        ck_assert_int_eq(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    /* Both hammers are going before the first big transaction. */
    give_up = tu_now() + watchdog_seconds();
    while (atomic_load(&run.started) < HAMMERS && tu_now() < give_up)
        tu_sleep_ns(200000);
    b.run = &run;
    b.give_up = give_up;
    b.runs = 0;
    while (rounds < PG_ROUNDS) {
        b.call_runs = 0;
        rc = axstm_atomically(run.s, big_body, &b);
        if (b.call_runs > most_runs)
            most_runs = b.call_runs;
        if (rc != AXSTM_OK)
            break;
        rounds++;
    }
    atomic_store(&run.stop, 1);
    for (i = 0; i < HAMMERS; i++)
        pthread_join(th[i], NULL);

    ck_assert_msg(rc == AXSTM_OK, "the big transaction %s after %d rounds (%lu runs)",
                  rc == GAVE_UP ? "starved" : axstm_strerror(rc), rounds, b.runs);
    /* Not starving means a bounded number of lost attempts, not a lucky
     * quiet moment: the fallback comes after a handful of them. */
    ck_assert_msg(most_runs <= PG_MAX_RUNS, "one big transaction ran %lu times",
                  most_runs);
    for (i = 0; i < HAMMERS; i++) {
        ck_assert_msg(h[i].errors == 0, "hammer %d: %s", i, axstm_strerror(h[i].last_rc));
        ck_assert_msg(h[i].done > 0, "hammer %d never committed", i);
        hammered += h[i].done;
    }
    for (i = 0; i < PG_KEYS; i++) {
        int64_t want = PG_ROUNDS + (i == PG_HOT ? hammered : 0);
        int64_t x = i64_of(run.s, pg_names[i]);
        ck_assert_msg(x == want, "%s is %lld, not %lld", pg_names[i], (long long)x,
                      (long long)want);
    }
    axstm_store_free(run.s);
}
END_TEST

/* A body that keeps losing (here: says so itself) still finishes, and what
 * it writes in its last run is what is published. */
struct loser {
    unsigned runs, losses;
};

static int loser_body(axstm_txn *tx, void *arg)
{
    struct loser *l = arg;
    int64_t a, b, r;
    l->runs++;
    TX_TRY(axstm_txn_get_i64(tx, "r", &r));
    TX_TRY(axstm_txn_get_i64(tx, "a", &a));
    TX_TRY(axstm_txn_get_i64(tx, "b", &b));
    TX_TRY(axstm_txn_set_i64(tx, "a", a + r));
    TX_TRY(axstm_txn_set_i64(tx, "c", (int64_t)l->runs));
    TX_TRY(axstm_txn_get_i64(tx, "a", &a));
    if (l->runs <= l->losses)
        return AXSTM_CONCURRENT_UPDATE;
    return axstm_txn_set_i64(tx, "b", a + b);
}

START_TEST(body_that_keeps_losing_finishes)
{
    axstm_store *s = tu_store_ok();
    static const char *const keys[] = { "r", "a", "b", "c" };
    struct loser l = { 0, 25 };
    size_t i;
    put_i64(s, "r", 1);
    put_i64(s, "a", 1);
    put_i64(s, "b", 10);
    ck_assert_int_eq(axstm_atomically(s, loser_body, &l), AXSTM_OK);
    ck_assert_uint_eq(l.runs, 26);
    /* Whatever mode that last run used, it left no key locked: with nobody
     * else running, a commit of each succeeds at the first try. */
    for (i = 0; i < 4; i++) {
        axstm_value *v = NULL;
        int rc = axstm_usevar(s, keys[i], &v);
        if (rc == AXSTM_OK)
            rc = axstm_value_commit(v);
        axstm_value_free(v);
        ck_assert_msg(rc == AXSTM_OK, "%s: %s", keys[i], axstm_strerror(rc));
    }
    assert_committed(s, "r", 2, 1, 1);
    assert_committed(s, "a", 3, 1, 2);
    assert_committed(s, "b", 3, 1, 12);
    assert_committed(s, "c", 2, 1, 26);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Allocation failure                                                 */
/* ------------------------------------------------------------------ */

enum { AF_KEYS = 48, AF_WIDE = 24 };
static char af_names[AF_KEYS][8];

/* Values are 8 bytes (held inline by the store) or AF_WIDE bytes (held in
 * an allocated blob): the number first, then a fixed pattern. */
static int af_wide;

static int af_get(axstm_txn *tx, const char *key, int64_t *x)
{
    const void *d;
    size_t len;
    TX_TRY(axstm_txn_get(tx, key, &d, &len));
    if (len != (af_wide ? AF_WIDE : 8))
        return AXSTM_ETYPE;
    memcpy(x, d, 8);
    return AXSTM_OK;
}

static void af_encode(unsigned char *buf, int64_t x)
{
    memcpy(buf, &x, 8);
    memset(buf + 8, 'w', AF_WIDE - 8);
}

static int af_set(axstm_txn *tx, const char *key, int64_t x)
{
    unsigned char buf[AF_WIDE];
    af_encode(buf, x);
    return axstm_txn_set(tx, key, buf, af_wide ? AF_WIDE : 8);
}

/* Reads keys [0, reads), adds 1000 to keys [0, writes); the first
 * `losses` runs give up with CONCURRENT_UPDATE (so that the last run is
 * one a losing transaction gets: the irrevocable kind). */
struct af_spec {
    int reads, writes;
    unsigned losses, runs;
};

static int af_rw_body(axstm_txn *tx, void *arg)
{
    struct af_spec *sp = arg;
    int64_t x[AF_KEYS];
    int i;
    sp->runs++;
    for (i = 0; i < sp->reads; i++)
        TX_TRY(af_get(tx, af_names[i], &x[i]));
    for (i = 0; i < sp->writes; i++)
        TX_TRY(af_set(tx, af_names[i], x[i] + 1000));
    return sp->runs <= sp->losses ? AXSTM_CONCURRENT_UPDATE : AXSTM_OK;
}

/* First branch: +1000 to keys 0..5, then retries; second: +1000 to 6..11. */
static int af_first(axstm_txn *tx, void *arg)
{
    int64_t x;
    int i;
    (void)arg;
    for (i = 0; i < 6; i++) {
        TX_TRY(af_get(tx, af_names[i], &x));
        TX_TRY(af_set(tx, af_names[i], x + 1000));
    }
    return AXSTM_RETRY;
}

static int af_second(axstm_txn *tx, void *arg)
{
    int64_t x;
    int i;
    (void)arg;
    for (i = 6; i < 12; i++) {
        TX_TRY(af_get(tx, af_names[i], &x));
        TX_TRY(af_set(tx, af_names[i], x + 1000));
    }
    return AXSTM_OK;
}

static int af_or_else_body(axstm_txn *tx, void *arg)
{
    return axstm_or_else(tx, af_first, af_second, arg);
}

static int af_wait_body(axstm_txn *tx, void *arg)
{
    int64_t x;
    (void)arg;
    TX_TRY(af_get(tx, af_names[0], &x));
    TX_TRY(af_get(tx, af_names[1], &x));
    return AXSTM_RETRY;
}

/* Writes 1 + i to ten keys that do not exist yet (always 8 bytes). */
static int af_new_keys_body(axstm_txn *tx, void *arg)
{
    char key[16];
    int64_t x;
    int i;
    (void)arg;
    for (i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "new.%d", i);
        TX_TRY(get_count(tx, key, &x));
        TX_TRY(axstm_txn_set_i64(tx, key, x + 1 + i));
    }
    return AXSTM_OK;
}

struct af_case {
    const char *name;
    int (*call)(axstm_store *s);
    int wide;      /* values of AF_WIDE bytes rather than 8 */
    int ok_code;   /* what the call gives when no allocation fails */
    int added;     /* keys [from, from + added) get +1000 on success */
    int from;
    int new_keys;  /* the call names keys that do not exist yet */
};

static int af_call_three(axstm_store *s)
{
    struct af_spec sp = { 3, 3, 0, 0 };
    return axstm_atomically(s, af_rw_body, &sp);
}

static int af_call_many(axstm_store *s)
{
    struct af_spec sp = { 40, 20, 0, 0 };
    return axstm_atomically(s, af_rw_body, &sp);
}

static int af_call_losing(axstm_store *s)
{
    struct af_spec sp = { 40, 20, 10, 0 };
    return axstm_atomically(s, af_rw_body, &sp);
}

static int af_call_or_else(axstm_store *s)
{
    return axstm_atomically(s, af_or_else_body, NULL);
}

static int af_call_wait(axstm_store *s)
{
    return axstm_atomically_timed(s, af_wait_body, NULL, 1000000);
}

static int af_call_new_keys(axstm_store *s)
{
    return axstm_atomically(s, af_new_keys_body, NULL);
}

static const struct af_case af_cases[] = {
    { "three writes", af_call_three, 1, AXSTM_OK, 3, 0, 0 },
    { "40 reads, 20 writes, inline values", af_call_many, 0, AXSTM_OK, 20, 0, 0 },
    { "40 reads, 20 writes, blobs", af_call_many, 1, AXSTM_OK, 20, 0, 0 },
    { "40 reads, 20 writes after losing", af_call_losing, 1, AXSTM_OK, 20, 0, 0 },
    { "or_else", af_call_or_else, 1, AXSTM_OK, 6, 6, 0 },
    { "retry wait", af_call_wait, 0, AXSTM_ETIMEDOUT, 0, 0, 0 },
    { "new keys", af_call_new_keys, 0, AXSTM_OK, 0, 0, 1 },
};

static void af_setup(axstm_store *s)
{
    unsigned char buf[AF_WIDE];
    int i;
    for (i = 0; i < AF_KEYS; i++) {
        snprintf(af_names[i], sizeof af_names[i], "k%02d", i);
        af_encode(buf, i);
        put_bytes(s, af_names[i], buf, af_wide ? AF_WIDE : 8);
    }
}

/* After ENOMEM: every key as before.  Keys the call names but that did not
 * exist may have been created (as any read of them creates them), with no
 * value and at version 0, and nothing else. */
static void af_assert_unchanged(const struct af_case *ac, const tu_snapshot *before,
                                const tu_snapshot *after, unsigned long n)
{
    size_t i;
    if (!ac->new_keys) {
        tu_snapshot_assert_equal(before, after);
        return;
    }
    for (i = 0; i < after->n; i++) {
        const tu_entry *x = &after->e[i];
        const tu_entry *y = tu_snapshot_find(before, x->key);
        if (y == NULL) {
            ck_assert_msg(strncmp(x->key, "new.", 4) == 0, "n=%lu: %s appeared", n, x->key);
            ck_assert_msg(x->version == 0 && !x->has_value,
                          "n=%lu: %s written though the call failed", n, x->key);
        } else {
            ck_assert_msg(x->version == y->version && x->has_value == y->has_value &&
                              x->len == y->len &&
                              (x->len == 0 || memcmp(x->data, y->data, x->len) == 0),
                          "n=%lu: %s changed though the call failed", n, x->key);
        }
    }
    ck_assert_uint_ge(after->n, before->n);
}

static void af_assert_done(const struct af_case *ac, axstm_store *s, unsigned long n)
{
    tu_snapshot snap;
    int i;
    tu_snapshot_take(s, &snap);
    for (i = 0; i < AF_KEYS; i++) {
        const tu_entry *e = tu_snapshot_find(&snap, af_names[i]);
        int added = i >= ac->from && i < ac->from + ac->added;
        unsigned char want[AF_WIDE];
        size_t len = af_wide ? AF_WIDE : 8;
        af_encode(want, i + (added ? 1000 : 0));
        ck_assert_msg(e != NULL && e->has_value && e->len == len, "n=%lu: %s lost", n,
                      af_names[i]);
        ck_assert_msg(memcmp(e->data, want, len) == 0 && e->version == (added ? 2u : 1u),
                      "n=%lu %s: %s is wrong at version %llu", n, ac->name, af_names[i],
                      (unsigned long long)e->version);
    }
    if (ac->new_keys)
        for (i = 0; i < 10; i++) {
            char key[16];
            const tu_entry *e;
            int64_t x = 0;
            snprintf(key, sizeof key, "new.%d", i);
            e = tu_snapshot_find(&snap, key);
            ck_assert_msg(e != NULL && e->has_value && e->len == 8 && e->version == 1,
                          "n=%lu: %s not written", n, key);
            memcpy(&x, e->data, 8);
            ck_assert_int_eq(x, 1 + i);
        }
    tu_snapshot_free(&snap);
}

/* Makes the n-th allocation of the call fail (and every later one when
 * sticky), for n = 1, 2, ... until the call no longer reaches the n-th. */
static void af_sweep(const struct af_case *ac, int sticky)
{
    unsigned long n, made = 0;
    int enomem = 0;
    af_wide = ac->wide;
    for (n = 1; n < 100000; n++) {
        axstm_store *s = tu_store_ok();
        tu_snapshot before, after;
        unsigned long count;
        int rc;

        af_setup(s);
        tu_snapshot_take(s, &before);
        count = axstm__alloc_count();
        axstm__alloc_fail_after(n, sticky);
        rc = ac->call(s);
        axstm__alloc_fail_after(0, 0);
        made = axstm__alloc_count() - count;
        if (rc == AXSTM_ENOMEM) {
            enomem++;
            ck_assert_msg(made >= n, "%s: ENOMEM with no failed allocation (n=%lu)",
                          ac->name, n);
            tu_snapshot_take(s, &after);
            af_assert_unchanged(ac, &before, &after, n);
            tu_snapshot_free(&after);
            /* And nothing was left locked or half-done: it works now. */
            rc = ac->call(s);
            ck_assert_msg(rc == ac->ok_code, "%s after ENOMEM (n=%lu): %s", ac->name, n,
                          axstm_strerror(rc));
        } else {
            ck_assert_msg(rc == ac->ok_code, "%s, n=%lu sticky=%d: %s", ac->name, n,
                          sticky, axstm_strerror(rc));
        }
        af_assert_done(ac, s, n);
        tu_snapshot_free(&before);
        axstm_store_free(s);
        if (made < n)
            break;
    }
    ck_assert_msg(made < n, "%s: still allocating after %lu", ac->name, n);
    ck_assert_msg(enomem > 0, "%s: no allocation failure ever reached the caller",
                  ac->name);
}

START_TEST(allocation_failure_changes_nothing)
{
    af_sweep(&af_cases[_i], 1);
    af_sweep(&af_cases[_i], 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Suite                                                              */
/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* Cancellation                                                       */
/* ------------------------------------------------------------------ */

/* Waits for "cancel.key" to get a value. */
static int wait_for_cancel_key(axstm_txn *tx, void *arg)
{
    int64_t v;
    int rc = axstm_txn_get_i64(tx, "cancel.key", &v);
    (void)arg;
    if (rc == AXSTM_ENOVALUE)
        return AXSTM_RETRY;
    return rc;
}

struct cancel_waiter {
    axstm_store *s;
    _Atomic int started;
    int rc;
};

static void *cancel_waiter_main(void *arg)
{
    struct cancel_waiter *cw = arg;
    atomic_store(&cw->started, 1);
    cw->rc = axstm_atomically(cw->s, wait_for_cancel_key, NULL);
    return NULL;
}

/* Lets a waiter start and register its wait on "cancel.key", the n-th
 * waiter there (white-box).  It may not be asleep yet, only on its way:
 * either way the only cancellation point ahead of it is that sleep. */
static void let_it_sleep(struct cancel_waiter *cw, size_t n)
{
    double give_up = tu_now() + watchdog_seconds(); /* a guard against a hang */
    size_t notified;
    while (!atomic_load(&cw->started))
        sched_yield();
    while (waiters_on(cw->s, "cancel.key", &notified) < n && tu_now() < give_up)
        tu_sleep_ns(200000);
}

/* A thread cancelled while blocked in AXSTM_RETRY leaves the store usable:
 * its registration on the key is undone, so a later commit of that key
 * neither touches its dead stack nor fails to wake the others. */
START_TEST(cancel_blocked_waiter_leaves_store_usable)
{
    axstm_store *s = tu_store_ok();
    struct cancel_waiter doomed = {s, 0, 12345}, survivor = {s, 0, 12345};
    pthread_t a, b;
    void *res;

    /* The survivor starts first, so that the cancelled thread's stack is
     * not handed to it afterwards (glibc reuses stacks), which could hide
     * a registration left pointing there. */
    ck_assert_int_eq(pthread_create(&b, NULL, cancel_waiter_main, &survivor), 0);
    let_it_sleep(&survivor, 1);
    ck_assert_int_eq(pthread_create(&a, NULL, cancel_waiter_main, &doomed), 0);
    let_it_sleep(&doomed, 2);
    ck_assert_int_eq(pthread_cancel(a), 0);
    ck_assert_int_eq(pthread_join(a, &res), 0);
    ck_assert_ptr_eq(res, PTHREAD_CANCELED);
    ck_assert_int_eq(doomed.rc, 12345); /* it never returned */

    put_i64(s, "cancel.key", 7);
    ck_assert_int_eq(pthread_join(b, NULL), 0);
    ck_assert_int_eq(survivor.rc, AXSTM_OK);

    /* And this thread can still run transactions of its own. */
    ck_assert_int_eq(axstm_atomically(s, wait_for_cancel_key, NULL), AXSTM_OK);
    axstm_store_free(s);
}
END_TEST

static Suite *txn_suite(void)
{
    Suite *s = suite_create("txn");
    TCase *tc;

    tc = tcase_create("Atomically");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, commit_publishes_writes_only_written_keys_get_versions);
    tcase_add_test(tc, reads_see_own_writes);
    tcase_add_test(tc, own_code_rolls_back_seed_transfer);
    tcase_add_test(tc, library_code_rolls_back);
    tcase_add_test(tc, conflict_reruns_body);
    tcase_add_test(tc, passed_back_conflict_reruns_body);
    tcase_add_test(tc, get_of_missing_key_is_enovalue);
    tcase_add_test(tc, get_i64_of_wrong_size_is_etype);
    tcase_add_test(tc, empty_value_is_a_value);
    tcase_add_test(tc, got_data_stays_valid_after_own_set);
    tcase_add_test(tc, got_data_stays_valid_as_the_attempt_grows);
    tcase_add_test(tc, got_data_stays_valid_while_others_commit);
    tcase_add_test(tc, bad_input_inside_a_body);
    tcase_add_test(tc, bad_input_outside_a_body);
    tcase_add_test(tc, txn_used_outside_its_body_is_einval);
    tcase_add_test(tc, retry_without_reads_is_einval);
    suite_add_tcase(s, tc);

    tc = tcase_create("Interop with handles");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, txn_commit_makes_stale_handles_fail);
    tcase_add_test(tc, txn_read_leaves_handles_current);
    tcase_add_test(tc, handle_commit_between_read_and_commit_reruns);
    tcase_add_test(tc, collection_commit_between_read_and_commit_reruns);
    suite_add_tcase(s, tc);

    tc = tcase_create("or_else");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, first_retries_second_commits);
    tcase_add_test(tc, first_succeeds_second_never_runs);
    tcase_add_test(tc, first_code_is_returned_as_is);
    tcase_add_test(tc, both_retry_whole_transaction_waits);
    tcase_add_test(tc, nested_or_else_only_third_succeeds);
    tcase_add_test(tc, retried_first_branch_reads_are_waited_on);
    suite_add_tcase(s, tc);

    tc = tcase_create("Blocking retry");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, blocking_get_waits_for_put);
    tcase_add_test(tc, timed_get_times_out);
    tcase_add_test(tc, timed_get_returns_when_put_comes_in_time);
    tcase_add_test(tc, timed_call_keeps_deadline_under_busy_keys);
    tcase_add_test(tc, timed_call_does_not_queue_for_irrevocable);
    tcase_add_test(tc, wait_on_key_that_does_not_exist);
    tcase_add_test(tc, wait_on_key_with_no_value);
    tcase_add_test(tc, unrelated_commits_do_not_wake);
    tcase_add_test(tc, wakeup_right_after_retry_is_not_lost);
    tcase_add_test(tc, no_lost_wakeup_one_queue);
    tcase_add_test(tc, no_lost_wakeup_or_else_over_two_queues);
    suite_add_tcase(s, tc);

    tc = tcase_create("Opacity");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, stale_snapshot_read_is_refused);
    tcase_add_test(tc, invariant_holds_inside_readers_txn_writer);
    tcase_add_test(tc, invariant_holds_inside_readers_handle_writer);
    tcase_add_test(tc, read_only_transaction_publishes_nothing);
    suite_add_tcase(s, tc);

    tc = tcase_create("Serializability");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, bank_total_is_conserved);
    tcase_add_test(tc, write_skew_is_prevented);
    suite_add_tcase(s, tc);

    tc = tcase_create("Progress");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, long_transaction_finishes_under_hammering);
    tcase_add_test(tc, body_that_keeps_losing_finishes);
    suite_add_tcase(s, tc);

    tc = tcase_create("Cancellation");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, cancel_blocked_waiter_leaves_store_usable);
    suite_add_tcase(s, tc);

    tc = tcase_create("Allocation failure");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, allocation_failure_changes_nothing, 0,
                        (int)(sizeof af_cases / sizeof af_cases[0]));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(txn_suite());
}
