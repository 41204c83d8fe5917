/* SPDX-License-Identifier: MIT */
/*
 * txnutil.h -- the harness of the transaction tests: check_txn,
 * check_or_else, check_retry and check_isolation.  A helper that only one
 * of them uses stays in its file.
 *
 * Bodies never assert: they may run on a worker thread, and even on the
 * test's own thread an assert would jump out of axstm_atomically.  They
 * record what they saw; the test's thread asserts once the call returned
 * and every thread it started has been joined.
 *
 * $AXSTM_TXN_TIME_SCALE (default 1) scales the timed runs (the opacity
 * and bank runs), e.g. 0.3 to shorten them under valgrind; above 1 it also
 * stretches the watchdogs.  The default tests what each test names.
 *
 * Header-only, as testutil.h: every helper is `static inline`, so a file
 * that does not use one gets no unused-function warning.
 */
#ifndef AXSTM_TXNUTIL_H
#define AXSTM_TXNUTIL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "testutil.h"

/* ------------------------------------------------------------------ */
/* Codes, time, reading the store, writing it from a worker           */
/* ------------------------------------------------------------------ */

/* A caller's own rollback code, as the seed's NotEnoughMoney. */
#define NOT_ENOUGH_MONEY 1
/* A body's own code: its watchdog ran out. */
#define GAVE_UP 2

/* $AXSTM_TXN_TIME_SCALE, default 1. */
static inline double time_scale(void)
{
    return tu_env_number("AXSTM_TXN_TIME_SCALE", 1.0, 1000.0);
}

/* A timed run of `base` seconds, scaled. */
static inline double run_seconds(double base)
{
    return base * time_scale();
}

/* How long a thread may wait for something that must happen (never less
 * than 30 s: slow machines and sanitizers are not failures). */
static inline double watchdog_seconds(void)
{
    double k = time_scale();
    return 30.0 * (k > 1.0 ? k : 1.0);
}

static inline int64_t ns_of(double seconds)
{
    return (int64_t)(seconds * 1e9);
}

/* The timeout of a wait for a commit due in some milliseconds: a guard
 * against a wait that is never woken (a hang), never a timing. */
static inline int64_t wake_timeout_ns(void)
{
    return ns_of(watchdog_seconds());
}

/* The committed version of an existing key, as a handle sees it. */
static inline uint64_t version_of(axstm_store *s, const char *key)
{
    axstm_value *v = tu_usevar_ok(s, key);
    uint64_t ver = axstm_value_version(v);
    axstm_value_free(v);
    return ver;
}

/* The committed int64 of an existing key, as a handle sees it. */
static inline int64_t i64_of(axstm_store *s, const char *key)
{
    axstm_value *v = tu_usevar_ok(s, key);
    int64_t x = tu_get_i64_ok(v);
    axstm_value_free(v);
    return x;
}

/* Sleeps in small steps until *flag is set or the watchdog runs out;
 * returns whether it was set.  For worker threads. */
static inline int await_flag(atomic_int *flag)
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

static inline int set_body(axstm_txn *tx, void *arg)
{
    const struct setter *st = arg;
    size_t i;
    for (i = 0; i < st->n; i++)
        TU_TRY(axstm_txn_set_i64(tx, st->keys[i], st->x));
    return AXSTM_OK;
}

/* Worker side: commit keys[0..n) = x through a transaction. */
static inline int commit_by_txn(axstm_store *s, const char *const *keys, size_t n, int64_t x)
{
    struct setter st = {keys, n, x};
    return axstm_atomically(s, set_body, &st);
}

/* Worker side: commit keys[0..n) = x through an Axon handle (a value for
 * one key, a collection for more). */
static inline int commit_by_handle(axstm_store *s, const char *const *keys, size_t n, int64_t x)
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
    int rc;  /* recorded by the interloper thread */
    int met; /* test's thread only */
    pthread_t th;
};

static inline void *interloper_main(void *arg)
{
    struct interloper *it = arg;
    pthread_barrier_wait(&it->go);
    it->rc = it->op(it);
    pthread_barrier_wait(&it->done);
    return NULL;
}

static inline void interloper_start(struct interloper *it, axstm_store *s,
                                    int (*op)(struct interloper *), int64_t x, const char *k0,
                                    const char *k1)
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

static inline void interloper_meet(struct interloper *it)
{
    if (it->met)
        return;
    it->met = 1;
    pthread_barrier_wait(&it->go);
    pthread_barrier_wait(&it->done);
}

/* Joins the interloper; returns whether the body met it.  If it did not,
 * the interloper is released here so that it does not outlive the test. */
static inline int interloper_finish(struct interloper *it)
{
    int met = it->met;
    interloper_meet(it);
    pthread_join(it->th, NULL);
    pthread_barrier_destroy(&it->go);
    pthread_barrier_destroy(&it->done);
    return met;
}

static inline int op_txn_set(struct interloper *it)
{
    return commit_by_txn(it->s, it->keys, it->nkeys, it->x);
}

static inline int op_handle_set(struct interloper *it)
{
    return commit_by_handle(it->s, it->keys, it->nkeys, it->x);
}

/* ------------------------------------------------------------------ */
/* A delayed committer: commits once a waiting body has said it retries */
/* ------------------------------------------------------------------ */

struct later {
    axstm_store *s;
    atomic_int armed; /* set by the body just before it returns AXSTM_RETRY */
    double delay;     /* seconds between armed and the commit */
    int (*op)(struct later *);
    const char *key;
    int64_t x;
    int rc; /* recorded by the thread; INT_MIN: never armed */
    pthread_t th;
};

static inline void *later_main(void *arg)
{
    struct later *l = arg;
    if (!await_flag(&l->armed))
        return NULL;
    tu_sleep_s(l->delay);
    l->rc = l->op(l);
    return NULL;
}

static inline void later_start(struct later *l, axstm_store *s, int (*op)(struct later *),
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
static inline void later_join(struct later *l)
{
    if (!atomic_load(&l->armed)) {
        l->delay = 0;
        atomic_store(&l->armed, 1);
    }
    pthread_join(l->th, NULL);
}

static inline void arm(struct later *l)
{
    if (l != NULL)
        atomic_store(&l->armed, 1);
}

static inline int later_txn_set(struct later *l)
{
    return commit_by_txn(l->s, &l->key, 1, l->x);
}

static inline int later_handle_set(struct later *l)
{
    return commit_by_handle(l->s, &l->key, 1, l->x);
}

/* ------------------------------------------------------------------ */
/* The seed's transfer, and a counter                                 */
/* ------------------------------------------------------------------ */

/* The seed's short transfer: take, give, then complain. */
struct transfer {
    const char *from, *to;
    int64_t amount;
    unsigned runs;
    int64_t from_inside; /* the balance the body saw after taking */
};

static inline int transfer_body(axstm_txn *tx, void *arg)
{
    struct transfer *t = arg;
    int64_t src, dst;
    t->runs++;
    TU_TRY(axstm_txn_get_i64(tx, t->from, &src));
    TU_TRY(axstm_txn_get_i64(tx, t->to, &dst));
    TU_TRY(axstm_txn_set_i64(tx, t->from, src - t->amount));
    TU_TRY(axstm_txn_set_i64(tx, t->to, dst + t->amount));
    TU_TRY(axstm_txn_get_i64(tx, t->from, &t->from_inside));
    if (t->from_inside < 0)
        return NOT_ENOUGH_MONEY;
    return AXSTM_OK;
}

/* A counter that may have no value yet (then 0). */
static inline int get_count(axstm_txn *tx, const char *key, int64_t *out)
{
    int rc = axstm_txn_get_i64(tx, key, out);
    if (rc == AXSTM_ENOVALUE) {
        *out = 0;
        rc = AXSTM_OK;
    }
    return rc;
}

#endif
