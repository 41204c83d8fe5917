/* SPDX-License-Identifier: MIT */
/*
 * ops.c -- single-thread cost in ns per operation of the basic calls, at
 * store sizes 1 000 / 100 000 / 10 000 000 keys, for a hot key (the same
 * key every time: everything in cache) and a random key (at 10 M keys,
 * mostly cache misses), next to the same lookups in the plain hand-written
 * table of benchutil.h at the same size.
 *
 * Each store and table is built once per size and reused by every row.
 * Every operation draws its key(s) and takes a prebuilt name, in every row
 * alike, so the rows differ only by what they call.
 *
 * Deleting keys has rows of its own, measured after every run of the rows
 * above them (so those are measured exactly as before):
 *   - the delete of an existing key, through a handle (usevar + delete +
 *     commit + free) and in a transaction (axstm_txn_delete).  A batch
 *     deletes BATCH distinct keys, drawn before the clock starts (hot:
 *     the same BATCH keys every batch), which get their values back after
 *     it stops, so the store keeps its size;
 *   - a key per item: usevar of a name that is not in the store (created),
 *     set + commit, delete + commit, free (hot: one name every time;
 *     random: one of as many names as the store has keys, none of them
 *     in it).
 */
#include "axstm.h"
#include "benchutil.h"

/* Operations between two reads of the clock: the clock costs < 1%. */
#define BATCH 256

/* Above this estimate the 10 M size is skipped (the issue allows ~8 GiB). */
#define MEMORY_LIMIT ((uint64_t)8 << 30)

enum row {
    R_USEVAR,
    R_USEVAR_COMMIT,
    R_USING4,
    R_ATOM1,
    R_ATOM4,
    R_LOOKUP,
    R_MUTEX_UPDATE,
    R_DELETE, /* rows from here on delete keys: measured after the others */
    R_TXN_DELETE,
    R_CREATE_DELETE,
    NROWS
};

static const char *const row_name[NROWS] = {
    "usevar + free",
    "usevar + set_i64 + commit + free",
    "using 4 keys + set x4 + commit + free",
    "atomically, 1 key read+write",
    "atomically, 4 keys read+write",
    "plain table: lookup",
    "plain table: mutex + lookup + update",
    "usevar + delete + commit + free",
    "atomically, 1 key deleted",
    "create after delete (key per item)",
};

struct ctx {
    size_t n;
    struct bench_names names;
    struct bench_names fresh; /* names not in the store (key per item) */
    unsigned char *drawn;     /* n flags: drawn for this batch of deletes */
    axstm_store *store;
    struct bench_map map;
    pthread_mutex_t lock;
    struct bench_rng rng;
    size_t hot; /* first of the hot keys (4 in a row for the 4-key rows) */
    double seconds;
};

static void fail(const char *what, int rc)
{
    fprintf(stderr, "ops: FAILED: %s: %s\n", what, axstm_strerror(rc));
    exit(1);
}

static inline void pick(struct ctx *c, bool hot, size_t nkeys, const char **k)
{
    for (size_t i = 0; i < nkeys; i++)
        k[i] = bench_name(&c->names, hot ? c->hot + i : bench_rng_below(&c->rng, c->n));
}

/* As pick, from the names that are not in the store. */
static inline void pick_fresh(struct ctx *c, bool hot, const char **k)
{
    k[0] = bench_name(&c->fresh, hot ? c->hot : bench_rng_below(&c->rng, c->n));
}

/*
 * The timing loop of every row, returning ns per operation: the body (the
 * last argument; variadic because a body may contain commas) runs with
 * k[0..nkeys) set, in batches, until the window has passed.
 */
#define TIMED(c, hot, nkeys, ...)                         \
    do {                                                  \
        uint64_t ops_ = 0, t0_ = bench_now_ns(), el_;     \
        uint64_t limit_ = (uint64_t)((c)->seconds * 1e9); \
        do {                                              \
            for (unsigned b_ = 0; b_ < BATCH; b_++) {     \
                const char *k[4];                         \
                pick((c), (hot), (nkeys), k);             \
                __VA_ARGS__                               \
            }                                             \
            ops_ += BATCH;                                \
            el_ = bench_now_ns() - t0_;                   \
        } while (el_ < limit_);                           \
        return (double)el_ / (double)ops_;                \
    } while (0)

static double row_usevar(struct ctx *c, bool hot)
{
    TIMED(c, hot, 1, {
        axstm_value *v;
        int rc = axstm_usevar(c->store, k[0], &v);
        if (rc != AXSTM_OK)
            fail("usevar", rc);
        axstm_value_free(v);
    });
}

static double row_usevar_commit(struct ctx *c, bool hot)
{
    TIMED(c, hot, 1, {
        axstm_value *v;
        int64_t x;
        int rc = axstm_usevar(c->store, k[0], &v);
        if (rc == AXSTM_OK && (rc = axstm_value_get_i64(v, &x)) == AXSTM_OK &&
            (rc = axstm_value_set_i64(v, x + 1)) == AXSTM_OK)
            rc = axstm_value_commit(v);
        if (rc != AXSTM_OK)
            fail("usevar + set + commit", rc);
        axstm_value_free(v);
    });
}

static double row_using4(struct ctx *c, bool hot)
{
    TIMED(c, hot, 4, {
        axstm_collection *col;
        int rc = axstm_using(c->store, k, 4, &col);
        if (rc != AXSTM_OK)
            fail("using", rc);
        /* Random keys may repeat: a collection holds each key once. */
        for (size_t i = 0; i < axstm_collection_size(col) && rc == AXSTM_OK; i++) {
            axstm_value *v = axstm_collection_at(col, i);
            int64_t x;
            if ((rc = axstm_value_get_i64(v, &x)) == AXSTM_OK)
                rc = axstm_value_set_i64(v, x + 1);
        }
        if (rc == AXSTM_OK)
            rc = axstm_collection_commit(col);
        if (rc != AXSTM_OK)
            fail("using + commit", rc);
        axstm_collection_free(col);
    });
}

struct incr {
    const char *const *keys;
    size_t n;
};

static int incr_body(axstm_txn *tx, void *arg)
{
    const struct incr *in = arg;
    for (size_t i = 0; i < in->n; i++) {
        int64_t x;
        int rc = axstm_txn_get_i64(tx, in->keys[i], &x);
        if (rc == AXSTM_OK)
            rc = axstm_txn_set_i64(tx, in->keys[i], x + 1);
        if (rc != AXSTM_OK)
            return rc;
    }
    return 0;
}

static double row_atomically(struct ctx *c, bool hot, size_t nkeys)
{
    TIMED(c, hot, nkeys, {
        struct incr in = {k, nkeys};
        int rc = axstm_atomically(c->store, incr_body, &in);
        if (rc != AXSTM_OK)
            fail("atomically", rc);
    });
}

/* Deletes key k through a handle, or in a transaction. */
static int delete_body(axstm_txn *tx, void *arg)
{
    return axstm_txn_delete(tx, arg);
}

static void delete_key(struct ctx *c, const char *k, bool txn)
{
    int rc;
    if (txn) {
        rc = axstm_atomically(c->store, delete_body, (void *)k);
    } else {
        axstm_value *v;
        rc = axstm_usevar(c->store, k, &v);
        if (rc == AXSTM_OK) {
            if ((rc = axstm_value_delete(v)) == AXSTM_OK)
                rc = axstm_value_commit(v);
            axstm_value_free(v);
        }
    }
    if (rc != AXSTM_OK)
        fail(txn ? "atomically (txn_delete)" : "usevar + delete + commit", rc);
}

/* Gives key k back a value (untimed, after a batch of deletes). */
static void restore_key(struct ctx *c, const char *k)
{
    axstm_value *v;
    int rc = axstm_usevar(c->store, k, &v);
    if (rc == AXSTM_OK) {
        if ((rc = axstm_value_set_i64(v, 0)) == AXSTM_OK)
            rc = axstm_value_commit(v);
        axstm_value_free(v);
    }
    if (rc != AXSTM_OK)
        fail("restoring a deleted key", rc);
}

/*
 * The delete rows: batches of BATCH distinct existing keys, drawn and
 * given back their values outside the clock, deleted inside it, until
 * the deletes alone have taken the window.
 */
static double row_delete(struct ctx *c, bool hot, bool txn)
{
    const char *k[BATCH];
    size_t idx[BATCH];
    uint64_t ops = 0, spent = 0;
    uint64_t limit = (uint64_t)(c->seconds * 1e9);
    do {
        for (unsigned b = 0; b < BATCH; b++) {
            size_t i = hot ? c->hot + b : bench_rng_below(&c->rng, c->n);
            while (!hot && c->drawn[i])
                i = bench_rng_below(&c->rng, c->n);
            if (!hot)
                c->drawn[i] = 1;
            idx[b] = i;
            k[b] = bench_name(&c->names, i);
        }
        uint64_t t0 = bench_now_ns();
        for (unsigned b = 0; b < BATCH; b++)
            delete_key(c, k[b], txn);
        spent += bench_now_ns() - t0;
        ops += BATCH;
        for (unsigned b = 0; b < BATCH; b++) {
            restore_key(c, k[b]);
            c->drawn[idx[b]] = 0;
        }
    } while (spent < limit);
    axstm_stats st;
    if (axstm_store_stats(c->store, &st) != AXSTM_OK || st.keys != c->n)
        fail("the store's size after the deletes", AXSTM_EINVAL);
    return (double)spent / (double)ops;
}

/* A key per item: created by usevar, given a value, deleted. */
static double row_create_delete(struct ctx *c, bool hot)
{
    uint64_t ops = 0, t0 = bench_now_ns(), el;
    uint64_t limit = (uint64_t)(c->seconds * 1e9);
    do {
        for (unsigned b = 0; b < BATCH; b++) {
            const char *k[1];
            pick_fresh(c, hot, k);
            axstm_value *v;
            int rc = axstm_usevar(c->store, k[0], &v);
            if (rc != AXSTM_OK)
                fail("usevar (new key)", rc);
            if ((rc = axstm_value_set_i64(v, 1)) == AXSTM_OK &&
                (rc = axstm_value_commit(v)) == AXSTM_OK &&
                (rc = axstm_value_delete(v)) == AXSTM_OK)
                rc = axstm_value_commit(v);
            if (rc != AXSTM_OK)
                fail("create + commit + delete + commit", rc);
            axstm_value_free(v);
        }
        ops += BATCH;
        el = bench_now_ns() - t0;
    } while (el < limit);
    return (double)el / (double)ops;
}

static double row_lookup(struct ctx *c, bool hot)
{
    TIMED(c, hot, 1, {
        const struct bench_node *nd = bench_map_find(&c->map, k[0]);
        if (nd == NULL)
            fail("plain lookup", AXSTM_EINVAL);
        bench_use((uint64_t)nd->value);
    });
}

static double row_mutex_update(struct ctx *c, bool hot)
{
    TIMED(c, hot, 1, {
        pthread_mutex_lock(&c->lock);
        struct bench_node *nd = bench_map_find(&c->map, k[0]);
        if (nd != NULL)
            nd->value++;
        pthread_mutex_unlock(&c->lock);
        if (nd == NULL)
            fail("plain lookup", AXSTM_EINVAL);
    });
}

static double measure(struct ctx *c, enum row r, bool hot)
{
    switch (r) {
    case R_USEVAR:
        return row_usevar(c, hot);
    case R_USEVAR_COMMIT:
        return row_usevar_commit(c, hot);
    case R_USING4:
        return row_using4(c, hot);
    case R_ATOM1:
        return row_atomically(c, hot, 1);
    case R_ATOM4:
        return row_atomically(c, hot, 4);
    case R_LOOKUP:
        return row_lookup(c, hot);
    case R_MUTEX_UPDATE:
        return row_mutex_update(c, hot);
    case R_DELETE:
        return row_delete(c, hot, false);
    case R_TXN_DELETE:
        return row_delete(c, hot, true);
    default:
        return row_create_delete(c, hot);
    }
}

/* Builds the store and the table; returns the seconds each took. */
static void build(struct ctx *c, double *store_s, double *table_s)
{
    uint64_t t0 = bench_now_ns();
    c->store = axstm_store_new();
    if (c->store == NULL)
        fail("store_new", AXSTM_ENOMEM);
    for (size_t i = 0; i < c->n; i++) {
        axstm_value *v;
        int rc = axstm_usevar(c->store, bench_name(&c->names, i), &v);
        if (rc == AXSTM_OK) {
            if ((rc = axstm_value_set_i64(v, 0)) == AXSTM_OK)
                rc = axstm_value_commit(v);
            axstm_value_free(v);
        }
        if (rc != AXSTM_OK)
            fail("building the store", rc);
    }
    uint64_t t1 = bench_now_ns();
    if (bench_map_init(&c->map, c->n) != 0)
        fail("building the table", AXSTM_ENOMEM);
    for (size_t i = 0; i < c->n; i++)
        if (bench_map_put(&c->map, bench_name(&c->names, i), 0) == NULL)
            fail("building the table", AXSTM_ENOMEM);
    *store_s = (double)(t1 - t0) / 1e9;
    *table_s = (double)(bench_now_ns() - t1) / 1e9;
}

/* Measures one size and prints its table; returns the bytes per key it
 * took (store + table + names), for the next size's memory estimate. */
static double bench_size(const struct bench_config *cfg, size_t n)
{
    static double ns[NROWS][2][BENCH_MAX_RUNS];
    struct ctx c;
    memset(&c, 0, sizeof c);
    c.n = n;
    c.hot = n / 2;
    c.seconds = cfg->seconds;
    bench_rng_seed(&c.rng, n);
    pthread_mutex_init(&c.lock, NULL);
    uint64_t rss0 = bench_rss_bytes();
    if (bench_names_init(&c.names, "key-", n) != 0)
        fail("names", AXSTM_ENOMEM);
    double store_s, table_s;
    build(&c, &store_s, &table_s);
    uint64_t rss1 = bench_rss_bytes();
    /* After the memory figure: the rows that delete keys need these. */
    c.drawn = calloc(n, 1);
    if (c.drawn == NULL || bench_names_init(&c.fresh, "new-", n) != 0)
        fail("names", AXSTM_ENOMEM);

    for (unsigned run = 0; run < cfg->runs; run++)
        for (int r = 0; r < R_DELETE; r++)
            for (int hot = 1; hot >= 0; hot--)
                ns[r][hot][run] = measure(&c, (enum row)r, hot);
    for (unsigned run = 0; run < cfg->runs; run++)
        for (int r = R_DELETE; r < NROWS; r++)
            for (int hot = 1; hot >= 0; hot--)
                ns[r][hot][run] = measure(&c, (enum row)r, hot);

    printf("%zu keys (built in %.2f s: store %.2f s, plain table %.2f s)\n", n, store_s + table_s,
           store_s, table_s);
    static const char *const cols[] = {"operation", "hot ns/op", "random ns/op", "hot / lookup",
                                       "random / lookup"};
    struct bench_table t;
    bench_table_begin(&t, 5, cols, 38);
    double usevar_ratio = 0;
    for (int r = 0; r < NROWS; r++) {
        double med[2], ratio[2];
        for (int hot = 0; hot < 2; hot++) {
            double tmp[BENCH_MAX_RUNS];
            memcpy(tmp, ns[r][hot], cfg->runs * sizeof *tmp);
            med[hot] = bench_median(tmp, cfg->runs);
            for (unsigned run = 0; run < cfg->runs; run++)
                tmp[run] = ns[r][hot][run] / ns[R_LOOKUP][hot][run];
            ratio[hot] = bench_median(tmp, cfg->runs);
        }
        if (r == R_USEVAR)
            usevar_ratio = ratio[0];
        bench_table_cell(&t, "%s", row_name[r]);
        bench_table_cell(&t, "%.1f", med[1]);
        bench_table_cell(&t, "%.1f", med[0]);
        bench_table_cell(&t, "%.2fx", ratio[1]);
        bench_table_cell(&t, "%.2fx", ratio[0]);
    }
    printf("usevar random / plain lookup random at %zu keys: %.2fx", n, usevar_ratio);
    if (n == 10000000)
        printf(" (target <= 1.5x): %s", bench_met(usevar_ratio <= 1.5));
    printf("\n\n");
    fflush(stdout);

    axstm_store_free(c.store);
    bench_map_free(&c.map);
    bench_names_free(&c.names);
    bench_names_free(&c.fresh);
    free(c.drawn);
    pthread_mutex_destroy(&c.lock);
    return rss1 > rss0 ? (double)(rss1 - rss0) / (double)n : 0;
}

int main(int argc, char **argv)
{
    struct bench_config cfg;
    bench_config_init(&cfg, argc, argv, NULL);
    bench_print_header(&cfg, "single-thread ns per operation, hot and random keys");
    static const size_t full[] = {1000, 100000, 10000000}, quick[] = {1000, 100000};
    const size_t *sizes = cfg.quick ? quick : full;
    size_t nsizes = cfg.quick ? 2 : 3;
    double per_key = 0;
    for (size_t i = 0; i < nsizes; i++) {
        size_t n = sizes[i];
        /* Estimate from the size before (with a margin), so a machine too
         * small for 10 M keys says so instead of swapping or dying. */
        uint64_t need = (uint64_t)(per_key * 1.25 * (double)n);
        uint64_t avail = bench_mem_available();
        if (per_key > 0 && (need > MEMORY_LIMIT || (avail != 0 && need > avail / 10 * 8))) {
            printf("%zu keys: skipped: would need about %.1f GiB (limit %.1f GiB, %.1f GiB "
                   "available)\n\n",
                   n, (double)need / (1 << 30), (double)MEMORY_LIMIT / (1 << 30),
                   (double)avail / (1 << 30));
            continue;
        }
        per_key = bench_size(&cfg, n);
    }
    return 0;
}
