/* SPDX-License-Identifier: MIT */
/*
 * bank.h -- the bank benchmark's accounts and one transfer per row, shared
 * by bench/bank.c, bench/bank_gnutm.c (the only file built with -fgnu-tm)
 * and bench/scale.c (its "16 accounts at 2 threads" table).
 *
 * A transfer moves a small amount between two distinct random accounts,
 * each named "account-<i>".  The names are made once, before any timing;
 * every transfer then looks both accounts up by name, as a program holding
 * only names would.  Every row keeps the total of all balances constant,
 * which is checked after each run.
 */
#ifndef AXSTM_BANK_H
#define AXSTM_BANK_H

#include "axstm.h"
#include "benchutil.h"

#include <sched.h>

#define BANK_INITIAL 1000

/* One mutex per account: the table maps a name to its account number. */
struct bank_account {
    pthread_mutex_t lock;
    int64_t balance;
};

struct bank {
    size_t n;
    struct bench_names names;
    /* axstm rows: one store holding every account as an 8-byte value. */
    axstm_store *store;
    /* "mutex around the table" and GCC TM rows: name -> balance. */
    struct bench_map map;
    pthread_mutex_t map_lock;
    /* "mutex per account" row: name -> index into accounts. */
    struct bench_map index;
    struct bank_account *accounts;
    /* "kept handles" row: per worker thread, a handle per account, made
     * once (bank_keep_handles) and kept across runs. */
    axstm_value **kept[BENCH_MAX_THREADS];
    /* TinySTM row (bank_tinystm.c): the accounts as words, by number. */
    void *tinystm;
};

/* The rows.  Worker bodies: bank_body_* below; GCC TM in bank_gnutm.c. */
enum bank_row {
    BANK_USING,         /* axstm_using of the two keys + collection commit */
    BANK_ATOMICALLY,    /* axstm_atomically, txn_get_i64/txn_set_i64 */
    BANK_KEPT,          /* a handle kept per account, axstm_values_commit */
    BANK_MUTEX_TABLE,   /* one mutex around the string-keyed table */
    BANK_MUTEX_ACCOUNT, /* lock-free lookup, then the two account mutexes */
    BANK_TINYSTM,       /* TinySTM: an account per word, found by number */
    BANK_GNU_TM,        /* __transaction_atomic around lookup + update */
    BANK_ROWS
};

/* extra[] counters a worker keeps beside its ops. */
enum { BANK_X_CONFLICTS, BANK_X_BUSY, BANK_X_IRREVOCABLE, BANK_X_SAMPLES };

/* Two distinct accounts and an amount of 1..16. */
static inline void bank_pick(struct bench_worker *w, size_t n, size_t *from, size_t *to,
                             int64_t *amount)
{
    size_t a = bench_rng_below(&w->rng, n);
    size_t b = bench_rng_below(&w->rng, n - 1);
    *from = a;
    *to = b >= a ? b + 1 : b;
    *amount = 1 + (int64_t)(bench_rng_next(&w->rng) & 15);
}

/*
 * Called on each BUSY_RETRY in a row.  "Call again" is the whole protocol,
 * but a key lock is held by a committer that may have been descheduled
 * (a loaded machine, more threads than CPUs): after a burst of immediate
 * retries, give the CPU away so the holder can finish, as any careful
 * caller of a try-lock API does.
 */
static inline void bank_busy(uint64_t *busy, unsigned *spins)
{
    ++*busy;
    if (++*spins % 64 == 0)
        sched_yield();
}

/* ---- row: axstm using + commit -------------------------------------- */

/*
 * Axon's way: check both keys out, change the private copies, commit.
 * CONCURRENT_UPDATE: someone committed meanwhile, so refresh and redo the
 * work on the new values; BUSY_RETRY: nothing happened, call again.
 */
static inline int bank_transfer_using(axstm_store *s, const char *from, const char *to,
                                      int64_t amount, uint64_t *conflicts, uint64_t *busy)
{
    const char *const keys[2] = {from, to};
    axstm_collection *c;
    unsigned spins = 0;
    int rc;
    while ((rc = axstm_using(s, keys, 2, &c)) == AXSTM_BUSY_RETRY)
        bank_busy(busy, &spins);
    if (rc != AXSTM_OK)
        return rc;
    for (;;) {
        int64_t a, b;
        axstm_value *va = axstm_collection_at(c, 0), *vb = axstm_collection_at(c, 1);
        if ((rc = axstm_value_get_i64(va, &a)) != AXSTM_OK ||
            (rc = axstm_value_get_i64(vb, &b)) != AXSTM_OK ||
            (rc = axstm_value_set_i64(va, a - amount)) != AXSTM_OK ||
            (rc = axstm_value_set_i64(vb, b + amount)) != AXSTM_OK)
            break;
        while ((rc = axstm_collection_commit(c)) == AXSTM_BUSY_RETRY)
            bank_busy(busy, &spins);
        if (rc != AXSTM_CONCURRENT_UPDATE)
            break;
        ++*conflicts;
        while ((rc = axstm_collection_refresh(c)) == AXSTM_BUSY_RETRY)
            bank_busy(busy, &spins);
        if (rc != AXSTM_OK)
            break;
    }
    axstm_collection_free(c);
    return rc;
}

/* ---- row: axstm atomically ------------------------------------------ */

struct bank_xfer {
    const char *from, *to;
    int64_t amount;
};

static inline int bank_xfer_body(axstm_txn *tx, void *arg)
{
    const struct bank_xfer *x = arg;
    int64_t a, b;
    int rc;
    if ((rc = axstm_txn_get_i64(tx, x->from, &a)) != AXSTM_OK ||
        (rc = axstm_txn_get_i64(tx, x->to, &b)) != AXSTM_OK ||
        (rc = axstm_txn_set_i64(tx, x->from, a - x->amount)) != AXSTM_OK)
        return rc;
    return axstm_txn_set_i64(tx, x->to, b + x->amount);
}

/* ---- row: kept handles + axstm_values_commit ----------------------- */

/*
 * For a program that uses the same keys again and again: a handle per
 * account, made once (each name looked up once) and kept; a transfer
 * changes the two handles and commits them together, with no lookup,
 * checkout or allocation.  CONCURRENT_UPDATE: another thread committed
 * one of them since this thread last looked, so refresh both and redo the
 * work; BUSY_RETRY: call again.  `together`: refresh them with one
 * axstm_values_refresh (one round trip on a store kept in Redis: what
 * bench/remote does) rather than one at a time (in process, where each
 * refresh is a few loads and needs only its own key unlocked, not both at
 * one instant).
 */
static inline int bank_transfer_kept(axstm_value *from, axstm_value *to, int64_t amount,
                                     bool together, uint64_t *conflicts, uint64_t *busy)
{
    axstm_value *const both[2] = {from, to};
    unsigned spins = 0;
    for (;;) {
        int64_t a, b;
        int rc;
        if ((rc = axstm_value_get_i64(from, &a)) != AXSTM_OK ||
            (rc = axstm_value_get_i64(to, &b)) != AXSTM_OK ||
            (rc = axstm_value_set_i64(from, a - amount)) != AXSTM_OK ||
            (rc = axstm_value_set_i64(to, b + amount)) != AXSTM_OK)
            return rc;
        while ((rc = axstm_values_commit(both, 2)) == AXSTM_BUSY_RETRY)
            bank_busy(busy, &spins);
        if (rc != AXSTM_CONCURRENT_UPDATE)
            return rc;
        ++*conflicts;
        if (together) {
            while ((rc = axstm_values_refresh(both, 2)) == AXSTM_BUSY_RETRY)
                bank_busy(busy, &spins);
            if (rc != AXSTM_OK)
                return rc;
            continue;
        }
        for (int i = 0; i < 2; i++) {
            while ((rc = axstm_value_refresh(both[i])) == AXSTM_BUSY_RETRY)
                bank_busy(busy, &spins);
            if (rc != AXSTM_OK)
                return rc;
        }
    }
}

/* ---- rows: the hand-written table ----------------------------------- */

static inline int bank_transfer_mutex_table(struct bank *bk, const char *from, const char *to,
                                            int64_t amount)
{
    pthread_mutex_lock(&bk->map_lock);
    struct bench_node *a = bench_map_find(&bk->map, from);
    struct bench_node *b = bench_map_find(&bk->map, to);
    if (a != NULL && b != NULL) {
        a->value -= amount;
        b->value += amount;
    }
    pthread_mutex_unlock(&bk->map_lock);
    return a != NULL && b != NULL ? 0 : AXSTM_EINVAL;
}

/* The table is built before the threads start and never changes, so the
 * lookups need no lock; the two account locks are taken in address order,
 * so two opposite transfers cannot deadlock. */
static inline int bank_transfer_mutex_account(struct bank *bk, const char *from, const char *to,
                                              int64_t amount)
{
    struct bench_node *na = bench_map_find(&bk->index, from);
    struct bench_node *nb = bench_map_find(&bk->index, to);
    if (na == NULL || nb == NULL)
        return AXSTM_EINVAL;
    struct bank_account *a = &bk->accounts[na->value], *b = &bk->accounts[nb->value];
    struct bank_account *first = a < b ? a : b, *second = a < b ? b : a;
    pthread_mutex_lock(&first->lock);
    pthread_mutex_lock(&second->lock);
    a->balance -= amount;
    b->balance += amount;
    pthread_mutex_unlock(&second->lock);
    pthread_mutex_unlock(&first->lock);
    return 0;
}

/* ---- worker bodies, one per row ------------------------------------- */

/* Each loops until the window closes; an unexpected error stops the thread
 * and is reported by the caller (a correctness failure, exit 1). */

static inline void bank_body_using(struct bench_worker *w)
{
    struct bank *bk = w->arg;
    while (!bench_stopped(w)) {
        size_t a, b;
        int64_t amount;
        bank_pick(w, bk->n, &a, &b, &amount);
        int rc =
            bank_transfer_using(bk->store, bench_name(&bk->names, a), bench_name(&bk->names, b),
                                amount, &w->extra[BANK_X_CONFLICTS], &w->extra[BANK_X_BUSY]);
        if (rc != AXSTM_OK) {
            w->failed = rc;
            return;
        }
        w->ops++;
    }
}

static inline void bank_body_atomically(struct bench_worker *w)
{
    struct bank *bk = w->arg;
    while (!bench_stopped(w)) {
        size_t a, b;
        struct bank_xfer x;
        bank_pick(w, bk->n, &a, &b, &x.amount);
        x.from = bench_name(&bk->names, a);
        x.to = bench_name(&bk->names, b);
        int rc = axstm_atomically(bk->store, bank_xfer_body, &x);
        if (rc != AXSTM_OK) {
            w->failed = rc;
            return;
        }
        w->ops++;
    }
}

static inline void bank_body_kept(struct bench_worker *w)
{
    struct bank *bk = w->arg;
    axstm_value **kept = bk->kept[w->index];
    while (!bench_stopped(w)) {
        size_t a, b;
        int64_t amount;
        bank_pick(w, bk->n, &a, &b, &amount);
        int rc = bank_transfer_kept(kept[a], kept[b], amount, false, &w->extra[BANK_X_CONFLICTS],
                                    &w->extra[BANK_X_BUSY]);
        if (rc != AXSTM_OK) {
            w->failed = rc;
            return;
        }
        w->ops++;
    }
}

static inline void bank_body_mutex_table(struct bench_worker *w)
{
    struct bank *bk = w->arg;
    while (!bench_stopped(w)) {
        size_t a, b;
        int64_t amount;
        bank_pick(w, bk->n, &a, &b, &amount);
        int rc = bank_transfer_mutex_table(bk, bench_name(&bk->names, a), bench_name(&bk->names, b),
                                           amount);
        if (rc != 0) {
            w->failed = rc;
            return;
        }
        w->ops++;
    }
}

static inline void bank_body_mutex_account(struct bench_worker *w)
{
    struct bank *bk = w->arg;
    while (!bench_stopped(w)) {
        size_t a, b;
        int64_t amount;
        bank_pick(w, bk->n, &a, &b, &amount);
        int rc = bank_transfer_mutex_account(bk, bench_name(&bk->names, a),
                                             bench_name(&bk->names, b), amount);
        if (rc != 0) {
            w->failed = rc;
            return;
        }
        w->ops++;
    }
}

/* ---- TinySTM (bench/bank_tinystm.c) --------------------------------- */

#ifdef AXSTM_HAVE_TINYSTM
/* The accounts as TinySTM words: made (0, or -1 out of memory), freed,
 * summed, and the worker body of the BANK_TINYSTM row. */
int bank_tinystm_init(struct bank *bk);
void bank_tinystm_free(struct bank *bk);
int64_t bank_tinystm_total(struct bank *bk);
void bank_tinystm_body(struct bench_worker *w);
#endif

/* ---- setup and checks ----------------------------------------------- */

/*
 * Makes n accounts of BANK_INITIAL each, for the rows asked for: the
 * store when with_store, the tables when with_tables.  Returns 0 or -1
 * (out of memory, or an axstm error, printed).
 */
static inline int bank_init(struct bank *bk, size_t n, bool with_store, bool with_tables)
{
    memset(bk, 0, sizeof *bk);
    bk->n = n;
    if (bench_names_init(&bk->names, "account-", n) != 0)
        return -1;
    if (with_store) {
        bk->store = axstm_store_new();
        if (bk->store == NULL)
            return -1;
        for (size_t i = 0; i < n; i++) {
            axstm_value *v;
            int rc = axstm_usevar(bk->store, bench_name(&bk->names, i), &v);
            if (rc == AXSTM_OK) {
                rc = axstm_value_set_i64(v, BANK_INITIAL);
                if (rc == AXSTM_OK)
                    rc = axstm_value_commit(v);
                axstm_value_free(v);
            }
            if (rc != AXSTM_OK) {
                fprintf(stderr, "bank: creating %s: %s\n", bench_name(&bk->names, i),
                        axstm_strerror(rc));
                return -1;
            }
        }
    }
    if (with_tables) {
        if (bench_map_init(&bk->map, n) != 0 || bench_map_init(&bk->index, n) != 0)
            return -1;
        pthread_mutex_init(&bk->map_lock, NULL);
        bk->accounts = calloc(n, sizeof *bk->accounts);
        if (bk->accounts == NULL)
            return -1;
        for (size_t i = 0; i < n; i++) {
            const char *name = bench_name(&bk->names, i);
            if (bench_map_put(&bk->map, name, BANK_INITIAL) == NULL ||
                bench_map_put(&bk->index, name, (int64_t)i) == NULL)
                return -1;
            pthread_mutex_init(&bk->accounts[i].lock, NULL);
            bk->accounts[i].balance = BANK_INITIAL;
        }
#ifdef AXSTM_HAVE_TINYSTM
        if (bank_tinystm_init(bk) != 0)
            return -1;
#endif
    }
    return 0;
}

/*
 * Handle sets for the kept rows (here and in bench/remote.c): for each of
 * `threads` threads, kept[t] holds a handle per account of s (named by
 * names), made on first use and otherwise refreshed, since other rows
 * have moved the balances meanwhile.  Called before a timed run, outside
 * its window: resolving the names once is the point of those rows.
 * Returns 0, or -1 (an axstm error, printed).
 */
static inline int bank_keep_handles(axstm_store *s, const struct bench_names *names, size_t n,
                                    axstm_value **kept[], unsigned threads)
{
    for (unsigned t = 0; t < threads && t < BENCH_MAX_THREADS; t++) {
        bool make = kept[t] == NULL;
        if (make && (kept[t] = calloc(n, sizeof *kept[t])) == NULL)
            return -1;
        for (size_t i = 0; i < n; i++) {
            int rc;
            do
                rc = make ? axstm_usevar(s, bench_name(names, i), &kept[t][i])
                          : axstm_value_refresh(kept[t][i]);
            while (rc == AXSTM_BUSY_RETRY);
            if (rc != AXSTM_OK) {
                fprintf(stderr, "keeping a handle on %s: %s\n", bench_name(names, i),
                        axstm_strerror(rc));
                return -1;
            }
        }
    }
    return 0;
}

/* Frees the handle sets bank_keep_handles made (nsets of them at most). */
static inline void bank_drop_handles(axstm_value **kept[], unsigned nsets, size_t n)
{
    for (unsigned t = 0; t < nsets; t++) {
        for (size_t i = 0; kept[t] != NULL && i < n; i++)
            axstm_value_free(kept[t][i]);
        free(kept[t]);
        kept[t] = NULL;
    }
}

static inline void bank_free(struct bank *bk)
{
    bank_drop_handles(bk->kept, BENCH_MAX_THREADS, bk->n);
    axstm_store_free(bk->store);
    if (bk->map.bucket != NULL) {
        bench_map_free(&bk->map);
        bench_map_free(&bk->index);
        pthread_mutex_destroy(&bk->map_lock);
    }
    if (bk->accounts != NULL) {
        for (size_t i = 0; i < bk->n; i++)
            pthread_mutex_destroy(&bk->accounts[i].lock);
        free(bk->accounts);
    }
#ifdef AXSTM_HAVE_TINYSTM
    bank_tinystm_free(bk);
#endif
    bench_names_free(&bk->names);
}

struct bank_sum {
    int64_t sum;
    size_t keys;
};

static inline int bank_sum_visit(const char *key, uint64_t version, const void *data, size_t len,
                                 void *arg)
{
    (void)key;
    (void)version;
    struct bank_sum *s = arg;
    int64_t x;
    if (len != sizeof x)
        return 1;
    memcpy(&x, data, sizeof x);
    s->sum += x;
    s->keys++;
    return 0;
}

/* The total over the accounts the row uses; *ok false when a key is
 * missing or malformed. */
static inline int64_t bank_total(struct bank *bk, enum bank_row row, bool *ok)
{
    *ok = true;
    switch (row) {
    case BANK_USING:
    case BANK_ATOMICALLY:
    case BANK_KEPT: {
        struct bank_sum s = {0, 0};
        *ok = axstm_store_foreach(bk->store, bank_sum_visit, &s) == AXSTM_OK && s.keys == bk->n;
        return s.sum;
    }
#ifdef AXSTM_HAVE_TINYSTM
    case BANK_TINYSTM:
        return bank_tinystm_total(bk);
#endif
    case BANK_MUTEX_ACCOUNT: {
        int64_t sum = 0;
        for (size_t i = 0; i < bk->n; i++)
            sum += bk->accounts[i].balance;
        return sum;
    }
    default:
        *ok = bk->map.count == bk->n;
        return bench_map_sum(&bk->map);
    }
}

/* ---- GCC TM (bench/bank_gnutm.c) ------------------------------------ */

#ifdef AXSTM_HAVE_GNU_TM
/* The worker body of the BANK_GNU_TM row: arg is the struct bank.  Counts
 * in extra[BANK_X_IRREVOCABLE] how many of extra[BANK_X_SAMPLES] sampled
 * transactions libitm ran serial-irrevocably (the method in effect). */
void bank_gnutm_body(struct bench_worker *w);
#endif

#endif
