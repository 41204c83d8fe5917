/* SPDX-License-Identifier: MIT */
/*
 * check_alloc.c -- allocation failure.  For each main call, make its n-th
 * allocation fail for n = 1, 2, 3, ... until the call makes fewer than n
 * allocations; every time the call must either succeed or return
 * AXSTM_ENOMEM having changed nothing (jansson's way).  Run under valgrind or
 * ASan to see that the failure paths leak nothing.
 */
#include "testutil.h"

#include "alloc.h"

#define BIG 4096

struct fctx {
    axstm_store *s;
    axstm_value *v, *w;
    axstm_collection *c;
    axstm_value *out_v;
    axstm_collection *out_c;
    axstm_stats st;
    uint64_t visits;
    tu_snapshot before;
    uint64_t keys_before;
    axstm_value *kept[12];
    unsigned char big[BIG];
};

struct fault_case {
    void (*setup)(struct fctx *);
    int (*call)(struct fctx *);
    void (*check_failed)(struct fctx *); /* after AXSTM_ENOMEM */
    void (*check_done)(struct fctx *);   /* after AXSTM_OK */
    void (*teardown)(struct fctx *);
};

static axstm_value *const v_sentinel = (axstm_value *)&v_sentinel;
static axstm_collection *const c_sentinel = (axstm_collection *)&c_sentinel;

static struct fctx state; /* the case's state; big, so not on the stack */

static void fresh_setup(const struct fault_case *fc)
{
    memset(&state, 0, sizeof state);
    state.out_v = v_sentinel;
    state.out_c = c_sentinel;
    fc->setup(&state);
}

/* One call with the n-th allocation failing; checks the outcome and says
 * how many allocations the call attempted. */
static unsigned long call_failing(const struct fault_case *fc, unsigned long n, int sticky,
                                  int *enomem)
{
    unsigned long count = axstm__alloc_count(), made;
    int rc;

    axstm__alloc_fail_after(n, sticky);
    rc = fc->call(&state);
    axstm__alloc_fail_after(0, 0);
    made = axstm__alloc_count() - count;
    if (rc == AXSTM_ENOMEM) {
        ck_assert_msg(made >= n, "ENOMEM with no failed allocation (n=%lu)", n);
        ++*enomem;
        fc->check_failed(&state);
    } else {
        ck_assert_msg(rc == AXSTM_OK, "n=%lu sticky=%d: %s", n, sticky, axstm_strerror(rc));
        fc->check_done(&state);
    }
    return made;
}

/*
 * Runs fc with the n-th allocation failing, for every n that the call
 * reaches.  sticky: every allocation after the n-th fails too.  Returns how
 * many calls gave AXSTM_ENOMEM.
 *
 * Two sweeps, because which allocations a call makes depends on the store's
 * random hash seed (which table shards must grow):
 *   - on one state: a failed call must leave everything as it was, so the
 *     next n runs on the same state, and the call makes the same
 *     allocations in the same order, minus any it may keep from a failed
 *     attempt (a grown shard array is invisible and may stay);
 *   - on fresh states, several per n, so that the allocations a kept one
 *     skipped in the first sweep get their turn too.
 */
#define FRESH_TRIALS 8

static int run_faults(const struct fault_case *fc, int sticky)
{
    unsigned long n, made;
    int enomem = 0, fresh = 1, t, reached;

    for (n = 1;; n++) {
        int before = enomem;
        ck_assert_msg(n < 100000, "call never stops allocating");
        if (fresh)
            fresh_setup(fc);
        made = call_failing(fc, n, sticky, &enomem);
        fresh = enomem == before;
        if (fresh) {
            fc->teardown(&state);
            if (made < n)
                break; /* the n-th allocation never happened */
        }
    }

    for (n = 1, reached = 1; reached; n++) {
        ck_assert_msg(n < 100000, "call never stops allocating");
        for (t = reached = 0; t < FRESH_TRIALS; t++) {
            fresh_setup(fc);
            reached |= call_failing(fc, n, sticky, &enomem) >= n;
            fc->teardown(&state);
        }
    }
    return enomem;
}

static void run_both(const struct fault_case *fc, int must_allocate)
{
    int sticky = run_faults(fc, 1);
    int once = run_faults(fc, 0);
    if (must_allocate) {
        ck_assert_msg(sticky > 0, "no allocation failure reached the caller");
        ck_assert_msg(once > 0, "no single allocation failure reached the caller");
    }
}

/* ------------------------------------------------------------------ */
/* A store with some state                                            */
/* ------------------------------------------------------------------ */

/* "old" = 42 at version 1, "empty" empty at 1, "none" no value at 0, and
 * some filler; remembers the committed state. */
static void setup_store(struct fctx *x)
{
    axstm_value *v;
    char key[32];
    int i;

    x->s = tu_store_ok();
    tu_put_i64(x->s, "old", 42);
    v = tu_usevar_ok(x->s, "empty");
    ck_assert_int_eq(axstm_value_set(v, NULL, 0), AXSTM_OK);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
    v = tu_usevar_ok(x->s, "none");
    axstm_value_free(v);
    for (i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "fill.%d", i);
        tu_put_i64(x->s, key, i);
    }
    for (i = 0; i < BIG; i++)
        x->big[i] = (unsigned char)(i * 7 + 1);
}

static void remember(struct fctx *x)
{
    tu_snapshot_take(x->s, &x->before);
    x->keys_before = tu_stats_ok(x->s).keys;
}

/* The committed state is what remember() saw. */
static void assert_store_unchanged(struct fctx *x)
{
    tu_snapshot now;
    tu_snapshot_take(x->s, &now);
    tu_snapshot_assert_equal(&x->before, &now);
    tu_snapshot_free(&now);
    ck_assert_uint_eq(tu_stats_ok(x->s).keys, x->keys_before);
}

static void assert_holds_i64(const axstm_value *v, uint64_t version, int64_t n)
{
    ck_assert_uint_eq(axstm_value_version(v), version);
    ck_assert_int_eq(tu_get_i64_ok(v), n);
}

static void assert_holds_big(const struct fctx *x, const axstm_value *v, uint64_t version)
{
    size_t len;
    const void *p = axstm_value_data(v, &len);
    ck_assert_uint_eq(axstm_value_version(v), version);
    ck_assert_uint_eq(len, BIG);
    ck_assert(memcmp(p, x->big, BIG) == 0);
}

static void assert_committed_big(struct fctx *x, const char *key, uint64_t version)
{
    tu_snapshot now;
    const tu_entry *e;
    tu_snapshot_take(x->s, &now);
    e = tu_snapshot_find(&now, key);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->version, version);
    ck_assert_uint_eq(e->len, BIG);
    ck_assert(memcmp(e->data, x->big, BIG) == 0);
    tu_snapshot_free(&now);
}

static void teardown_all(struct fctx *x)
{
    tu_snapshot_free(&x->before);
    if (x->out_v != v_sentinel)
        axstm_value_free(x->out_v);
    if (x->out_c != c_sentinel)
        axstm_collection_free(x->out_c);
    axstm_value_free(x->v);
    axstm_value_free(x->w);
    axstm_collection_free(x->c);
    axstm_store_free(x->s);
}

static void nothing(struct fctx *x)
{
    (void)x;
}

/* ------------------------------------------------------------------ */
/* store_new                                                          */
/* ------------------------------------------------------------------ */

static int call_store_new(struct fctx *x)
{
    x->s = axstm_store_new();
    return x->s != NULL ? AXSTM_OK : AXSTM_ENOMEM;
}

static void done_store_new(struct fctx *x)
{
    /* The store works. */
    tu_put_i64(x->s, "k", 1);
    ck_assert_uint_eq(tu_stats_ok(x->s).keys, 1);
}

START_TEST(store_new_out_of_memory)
{
    static const struct fault_case fc = {nothing, call_store_new, nothing, done_store_new,
                                         teardown_all};
    run_both(&fc, 1);
}
END_TEST

/* ------------------------------------------------------------------ */
/* usevar                                                             */
/* ------------------------------------------------------------------ */

static void setup_remember(struct fctx *x)
{
    setup_store(x);
    remember(x);
}

static int call_usevar_new(struct fctx *x)
{
    return axstm_usevar(x->s, "brand.new", &x->out_v);
}

static void failed_usevar(struct fctx *x)
{
    ck_assert_ptr_eq(x->out_v, v_sentinel);
    assert_store_unchanged(x);
}

static void done_usevar_new(struct fctx *x)
{
    ck_assert_ptr_ne(x->out_v, v_sentinel);
    ck_assert_str_eq(axstm_value_key(x->out_v), "brand.new");
    ck_assert_uint_eq(axstm_value_version(x->out_v), 0);
    tu_assert_no_value(x->out_v);
    ck_assert_uint_eq(tu_stats_ok(x->s).keys, x->keys_before + 1);
}

START_TEST(usevar_new_key_out_of_memory)
{
    static const struct fault_case fc = {setup_remember, call_usevar_new, failed_usevar,
                                         done_usevar_new, teardown_all};
    run_both(&fc, 1);
}
END_TEST

static int call_usevar_old(struct fctx *x)
{
    return axstm_usevar(x->s, "old", &x->out_v);
}

static void done_usevar_old(struct fctx *x)
{
    assert_holds_i64(x->out_v, 1, 42);
    assert_store_unchanged(x);
}

START_TEST(usevar_existing_key_out_of_memory)
{
    static const struct fault_case fc = {setup_remember, call_usevar_old, failed_usevar,
                                         done_usevar_old, teardown_all};
    run_both(&fc, 1);
}
END_TEST

/* Creates keys one by one from an empty store, every creation under every
 * fault, so that failures while a shard grows are covered too.  (Plain
 * checks in the loop, one assert at the end: each Check assert costs a
 * write.) */
START_TEST(key_creation_during_growth_out_of_memory)
{
    enum { KEYS = 1500 };
    axstm_store *s = tu_store_ok();
    unsigned long i, n;
    long enomem = 0, wrong = 0;
    char key[32];
    char first[128] = "";

#define WRONG(...)                                      \
    do {                                                \
        if (wrong++ == 0)                               \
            snprintf(first, sizeof first, __VA_ARGS__); \
    } while (0)

    for (i = 0; i < KEYS; i++) {
        snprintf(key, sizeof key, "grow.%lu", i);
        for (n = 1;; n++) {
            axstm_value *v = v_sentinel;
            axstm_stats st;
            int rc;
            axstm__alloc_fail_after(n, 1);
            rc = axstm_usevar(s, key, &v);
            axstm__alloc_fail_after(0, 0);
            if (axstm_store_stats(s, &st) != AXSTM_OK)
                WRONG("stats failed");
            if (rc == AXSTM_ENOMEM) {
                enomem++;
                /* Not created; the earlier ones all still there. */
                if (v != v_sentinel)
                    WRONG("%s: out-parameter written on ENOMEM", key);
                if (st.keys != i)
                    WRONG("%s: ENOMEM with %llu keys, not %lu", key, (unsigned long long)st.keys,
                          i);
                continue;
            }
            if (rc != AXSTM_OK)
                WRONG("%s: %s", key, axstm_strerror(rc));
            else if (strcmp(axstm_value_key(v), key) != 0 || st.keys != i + 1)
                WRONG("%s: created wrong", key);
            if (rc == AXSTM_OK)
                axstm_value_free(v);
            break;
        }
        if (i % 100 == 99 || i == KEYS - 1) {
            /* Every key exists once, at version 0 with no value. */
            tu_snapshot snap;
            size_t j;
            tu_snapshot_take(s, &snap);
            if (snap.n != i + 1)
                WRONG("after grow.%lu: %zu keys", i, snap.n);
            for (j = 0; j < snap.n; j++)
                if (snap.e[j].version != 0 || snap.e[j].has_value ||
                    (j > 0 && strcmp(snap.e[j - 1].key, snap.e[j].key) == 0))
                    WRONG("%s: wrong after growth", snap.e[j].key);
            tu_snapshot_free(&snap);
        }
    }
#undef WRONG
    ck_assert_msg(wrong == 0, "%ld wrong, first: %s", wrong, first);
    ck_assert_int_gt(enomem, 0);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* using                                                              */
/* ------------------------------------------------------------------ */

static const char *const mixed_keys[] = {"n1", "old", "n2", "n3"};

static int call_using_mixed(struct fctx *x)
{
    return axstm_using(x->s, mixed_keys, 4, &x->out_c);
}

static void failed_using(struct fctx *x)
{
    ck_assert_ptr_eq(x->out_c, c_sentinel);
    assert_store_unchanged(x);
}

static void done_using_mixed(struct fctx *x)
{
    ck_assert_ptr_ne(x->out_c, c_sentinel);
    ck_assert_uint_eq(axstm_collection_size(x->out_c), 4);
    assert_holds_i64(axstm_collection_value(x->out_c, "old"), 1, 42);
    tu_assert_no_value(axstm_collection_value(x->out_c, "n2"));
    ck_assert_uint_eq(tu_stats_ok(x->s).keys, x->keys_before + 3);
}

START_TEST(using_out_of_memory)
{
    static const struct fault_case fc = {setup_remember, call_using_mixed, failed_using,
                                         done_using_mixed, teardown_all};
    run_both(&fc, 1);
}
END_TEST

/* Many new keys at once: they land in every shard. */
enum { WIDE = 300 };
static char wide_names[WIDE][32];
static const char *wide_keys[WIDE];

static void setup_wide(struct fctx *x)
{
    int i;
    for (i = 0; i < WIDE; i++) {
        snprintf(wide_names[i], sizeof wide_names[i], "wide.%d", i);
        wide_keys[i] = wide_names[i];
    }
    wide_keys[WIDE / 2] = "old"; /* one existing key among them */
    setup_remember(x);
}

static int call_using_wide(struct fctx *x)
{
    return axstm_using(x->s, wide_keys, WIDE, &x->out_c);
}

static void done_using_wide(struct fctx *x)
{
    ck_assert_uint_eq(axstm_collection_size(x->out_c), WIDE);
    ck_assert_uint_eq(tu_stats_ok(x->s).keys, x->keys_before + WIDE - 1);
}

START_TEST(using_many_new_keys_out_of_memory)
{
    static const struct fault_case fc = {setup_wide, call_using_wide, failed_using, done_using_wide,
                                         teardown_all};
    run_faults(&fc, 1);
    ck_assert_int_gt(run_faults(&fc, 0), 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* value_set                                                          */
/* ------------------------------------------------------------------ */

static void setup_handle(struct fctx *x)
{
    setup_store(x);
    x->v = tu_usevar_ok(x->s, "old");
    remember(x);
}

static int call_set_big(struct fctx *x)
{
    return axstm_value_set(x->v, x->big, BIG);
}

static void failed_set(struct fctx *x)
{
    assert_holds_i64(x->v, 1, 42); /* the handle keeps its old bytes */
    assert_store_unchanged(x);
}

static void done_set_big(struct fctx *x)
{
    assert_holds_big(x, x->v, 1);
    assert_store_unchanged(x);
}

START_TEST(value_set_out_of_memory)
{
    static const struct fault_case fc = {setup_handle, call_set_big, failed_set, done_set_big,
                                         teardown_all};
    run_both(&fc, 1);
}
END_TEST

static int call_set_str(struct fctx *x)
{
    return axstm_value_set_str(x->v, "a string value");
}

static void done_set_str(struct fctx *x)
{
    tu_assert_str(x->v, "a string value");
    assert_store_unchanged(x);
}

START_TEST(value_set_str_out_of_memory)
{
    static const struct fault_case fc = {setup_handle, call_set_str, failed_set, done_set_str,
                                         teardown_all};
    run_both(&fc, 0);
}
END_TEST

static int call_set_i64(struct fctx *x)
{
    return axstm_value_set_i64(x->v, -5);
}

static void done_set_i64(struct fctx *x)
{
    assert_holds_i64(x->v, 1, -5);
    assert_store_unchanged(x);
}

START_TEST(value_set_i64_out_of_memory)
{
    static const struct fault_case fc = {setup_handle, call_set_i64, failed_set, done_set_i64,
                                         teardown_all};
    run_both(&fc, 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Commits                                                            */
/* ------------------------------------------------------------------ */

static void setup_changed_handle(struct fctx *x)
{
    setup_store(x);
    x->v = tu_usevar_ok(x->s, "old");
    ck_assert_int_eq(axstm_value_set(x->v, x->big, BIG), AXSTM_OK);
    remember(x);
}

static int call_commit(struct fctx *x)
{
    return axstm_value_commit(x->v);
}

static void failed_commit(struct fctx *x)
{
    assert_holds_big(x, x->v, 1);
    assert_store_unchanged(x);
}

static void done_commit(struct fctx *x)
{
    assert_holds_big(x, x->v, 2);
    assert_committed_big(x, "old", 2);
}

START_TEST(value_commit_out_of_memory)
{
    static const struct fault_case fc = {setup_changed_handle, call_commit, failed_commit,
                                         done_commit, teardown_all};
    run_both(&fc, 0);
}
END_TEST

static const char *const coll_keys[] = {"old", "none", "fill.3"};

static void setup_changed_collection(struct fctx *x)
{
    size_t i;
    setup_store(x);
    x->c = tu_using_ok(x->s, coll_keys, 3);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(axstm_value_set(axstm_collection_at(x->c, i), x->big, BIG), AXSTM_OK);
    remember(x);
}

static int call_ccommit(struct fctx *x)
{
    return axstm_collection_commit(x->c);
}

static void failed_ccommit(struct fctx *x)
{
    assert_holds_big(x, axstm_collection_at(x->c, 0), 1);
    assert_holds_big(x, axstm_collection_at(x->c, 1), 0);
    assert_holds_big(x, axstm_collection_at(x->c, 2), 1);
    assert_store_unchanged(x);
}

static void done_ccommit(struct fctx *x)
{
    assert_holds_big(x, axstm_collection_at(x->c, 1), 1);
    assert_committed_big(x, "old", 2);
    assert_committed_big(x, "none", 1);
    assert_committed_big(x, "fill.3", 2);
}

START_TEST(collection_commit_out_of_memory)
{
    static const struct fault_case fc = {setup_changed_collection, call_ccommit, failed_ccommit,
                                         done_ccommit, teardown_all};
    run_both(&fc, 0);
}
END_TEST

/* More kept handles than axstm_values_commit orders on the stack. */
#define KEPT (sizeof state.kept / sizeof state.kept[0])

static void setup_kept_handles(struct fctx *x)
{
    char key[32];
    setup_store(x);
    for (size_t i = 0; i < KEPT; i++) {
        snprintf(key, sizeof key, "fill.%zu", i);
        x->kept[i] = tu_usevar_ok(x->s, key);
        ck_assert_int_eq(axstm_value_set(x->kept[i], x->big, BIG), AXSTM_OK);
    }
    remember(x);
}

static int call_values_commit(struct fctx *x)
{
    return axstm_values_commit(x->kept, KEPT);
}

static void failed_values_commit(struct fctx *x)
{
    for (size_t i = 0; i < KEPT; i++)
        assert_holds_big(x, x->kept[i], 1);
    assert_store_unchanged(x);
}

static void done_values_commit(struct fctx *x)
{
    char key[32];
    for (size_t i = 0; i < KEPT; i++) {
        assert_holds_big(x, x->kept[i], 2);
        snprintf(key, sizeof key, "fill.%zu", i);
        assert_committed_big(x, key, 2);
    }
}

static void teardown_kept_handles(struct fctx *x)
{
    for (size_t i = 0; i < KEPT; i++)
        axstm_value_free(x->kept[i]);
    teardown_all(x);
}

START_TEST(values_commit_out_of_memory)
{
    static const struct fault_case fc = {setup_kept_handles, call_values_commit,
                                         failed_values_commit, done_values_commit,
                                         teardown_kept_handles};
    run_both(&fc, 1);
}
END_TEST

/* The kept handles committed (version 2), then changed locally. */
static void setup_changed_kept_handles(struct fctx *x)
{
    setup_kept_handles(x);
    ck_assert_int_eq(axstm_values_commit(x->kept, KEPT), AXSTM_OK);
    for (size_t i = 0; i < KEPT; i++)
        tu_set_str_ok(x->kept[i], "local");
    tu_snapshot_free(&x->before); /* what setup_kept_handles remembered */
    remember(x);
}

static int call_values_refresh(struct fctx *x)
{
    return axstm_values_refresh(x->kept, KEPT);
}

static void failed_values_refresh(struct fctx *x)
{
    for (size_t i = 0; i < KEPT; i++) {
        ck_assert_uint_eq(axstm_value_version(x->kept[i]), 2);
        tu_assert_str(x->kept[i], "local");
    }
    assert_store_unchanged(x);
}

static void done_values_refresh(struct fctx *x)
{
    for (size_t i = 0; i < KEPT; i++)
        assert_holds_big(x, x->kept[i], 2);
    assert_store_unchanged(x);
}

START_TEST(values_refresh_out_of_memory)
{
    static const struct fault_case fc = {setup_changed_kept_handles, call_values_refresh,
                                         failed_values_refresh, done_values_refresh,
                                         teardown_kept_handles};
    run_both(&fc, 1);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Refresh                                                            */
/* ------------------------------------------------------------------ */

/* x->v holds "local" at version 1; the store has big at version 2. */
static void setup_stale_handle(struct fctx *x)
{
    setup_store(x);
    x->v = tu_usevar_ok(x->s, "old");
    x->w = tu_usevar_ok(x->s, "old");
    ck_assert_int_eq(axstm_value_set(x->w, x->big, BIG), AXSTM_OK);
    ck_assert_int_eq(tu_commit(x->w), AXSTM_OK);
    tu_set_str_ok(x->v, "local");
    remember(x);
}

static int call_refresh(struct fctx *x)
{
    return axstm_value_refresh(x->v);
}

static void failed_refresh(struct fctx *x)
{
    ck_assert_uint_eq(axstm_value_version(x->v), 1);
    tu_assert_str(x->v, "local");
    assert_store_unchanged(x);
}

static void done_refresh(struct fctx *x)
{
    assert_holds_big(x, x->v, 2);
    assert_store_unchanged(x);
}

START_TEST(value_refresh_out_of_memory)
{
    static const struct fault_case fc = {setup_stale_handle, call_refresh, failed_refresh,
                                         done_refresh, teardown_all};
    run_both(&fc, 0);
}
END_TEST

static void setup_stale_collection(struct fctx *x)
{
    setup_store(x);
    x->c = tu_using_ok(x->s, coll_keys, 3);
    x->w = tu_usevar_ok(x->s, "none");
    ck_assert_int_eq(axstm_value_set(x->w, x->big, BIG), AXSTM_OK);
    ck_assert_int_eq(tu_commit(x->w), AXSTM_OK);
    tu_set_str_ok(axstm_collection_at(x->c, 0), "local");
    remember(x);
}

static int call_crefresh(struct fctx *x)
{
    return axstm_collection_refresh(x->c);
}

static void failed_crefresh(struct fctx *x)
{
    tu_assert_str(axstm_collection_at(x->c, 0), "local");
    ck_assert_uint_eq(axstm_value_version(axstm_collection_at(x->c, 1)), 0);
    tu_assert_no_value(axstm_collection_at(x->c, 1));
    assert_store_unchanged(x);
}

static void done_crefresh(struct fctx *x)
{
    assert_holds_i64(axstm_collection_at(x->c, 0), 1, 42);
    assert_holds_big(x, axstm_collection_at(x->c, 1), 1);
    assert_holds_i64(axstm_collection_at(x->c, 2), 1, 3);
    assert_store_unchanged(x);
}

START_TEST(collection_refresh_out_of_memory)
{
    static const struct fault_case fc = {setup_stale_collection, call_crefresh, failed_crefresh,
                                         done_crefresh, teardown_all};
    run_both(&fc, 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Introspection                                                      */
/* ------------------------------------------------------------------ */

static int call_stats(struct fctx *x)
{
    memset(&x->st, 0xab, sizeof x->st);
    return axstm_store_stats(x->s, &x->st);
}

static void failed_stats(struct fctx *x)
{
    axstm_stats sentinel;
    memset(&sentinel, 0xab, sizeof sentinel);
    ck_assert_mem_eq(&x->st, &sentinel, sizeof sentinel);
    assert_store_unchanged(x);
}

static void done_stats(struct fctx *x)
{
    ck_assert_uint_eq(x->st.keys, x->keys_before);
    assert_store_unchanged(x);
}

START_TEST(stats_out_of_memory)
{
    static const struct fault_case fc = {setup_remember, call_stats, failed_stats, done_stats,
                                         teardown_all};
    run_both(&fc, 0);
}
END_TEST

static int call_foreach(struct fctx *x)
{
    x->visits = 0;
    return axstm_store_foreach(x->s, tu_count_visit_, &x->visits);
}

static void failed_foreach(struct fctx *x)
{
    assert_store_unchanged(x);
}

static void done_foreach(struct fctx *x)
{
    ck_assert_uint_eq(x->visits, x->keys_before);
    assert_store_unchanged(x);
}

START_TEST(foreach_out_of_memory)
{
    static const struct fault_case fc = {setup_remember, call_foreach, failed_foreach, done_foreach,
                                         teardown_all};
    run_both(&fc, 0);
}
END_TEST

START_TEST(injection_hook_works)
{
    /* The hook itself: without it every test above would pass vacuously. */
    void *p;
    unsigned long before = axstm__alloc_count();
    axstm__alloc_fail_after(2, 0);
    p = axstm__malloc(16);
    ck_assert_ptr_nonnull(p);
    axstm__free(p);
    ck_assert_ptr_null(axstm__malloc(16)); /* the 2nd */
    p = axstm__calloc(4, 4);               /* not sticky: the 3rd works */
    ck_assert_ptr_nonnull(p);
    axstm__free(p);
    axstm__alloc_fail_after(1, 1);
    ck_assert_ptr_null(axstm__malloc(1));
    ck_assert_ptr_null(axstm__calloc(1, 1));
    axstm__alloc_fail_after(0, 0);
    p = axstm__malloc(1);
    ck_assert_ptr_nonnull(p);
    axstm__free(p);
    ck_assert_uint_eq(axstm__alloc_count() - before, 6);
    /* Overflow is caught, not wrapped. */
    ck_assert_ptr_null(axstm__calloc(SIZE_MAX / 2, 4));
}
END_TEST

static Suite *alloc_suite(void)
{
    Suite *s = suite_create("alloc");
    TCase *tc;

    tc = tcase_create("Hook");
    tcase_add_test(tc, injection_hook_works);
    suite_add_tcase(s, tc);

    tc = tcase_create("Out of memory");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, store_new_out_of_memory);
    tcase_add_test(tc, usevar_new_key_out_of_memory);
    tcase_add_test(tc, usevar_existing_key_out_of_memory);
    tcase_add_test(tc, key_creation_during_growth_out_of_memory);
    tcase_add_test(tc, using_out_of_memory);
    tcase_add_test(tc, using_many_new_keys_out_of_memory);
    tcase_add_test(tc, value_set_out_of_memory);
    tcase_add_test(tc, value_set_str_out_of_memory);
    tcase_add_test(tc, value_set_i64_out_of_memory);
    tcase_add_test(tc, value_commit_out_of_memory);
    tcase_add_test(tc, collection_commit_out_of_memory);
    tcase_add_test(tc, values_commit_out_of_memory);
    tcase_add_test(tc, values_refresh_out_of_memory);
    tcase_add_test(tc, value_refresh_out_of_memory);
    tcase_add_test(tc, collection_refresh_out_of_memory);
    tcase_add_test(tc, stats_out_of_memory);
    tcase_add_test(tc, foreach_out_of_memory);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(alloc_suite());
}
