/* SPDX-License-Identifier: MIT */
/*
 * check_store.c -- store lifecycle, stats, foreach, the key table.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "testutil.h"

#include "axstm-internal.h" /* the key hash, tested directly */

/* ------------------------------------------------------------------ */
/* Lifecycle                                                          */
/* ------------------------------------------------------------------ */

START_TEST(new_store_is_empty)
{
    axstm_store *s = tu_store_ok();
    axstm_stats st = tu_stats_ok(s);
    ck_assert_uint_eq(st.keys, 0);
    ck_assert_uint_eq(st.commits, 0);
    ck_assert_uint_eq(st.conflicts, 0);
    ck_assert_uint_eq(st.busy, 0);
    ck_assert_uint_eq(st.retries_waited, 0);
    ck_assert_uint_eq(tu_foreach_count(s), 0);
    axstm_store_free(s);
}
END_TEST

START_TEST(free_null_is_a_no_op)
{
    axstm_store_free(NULL);
}
END_TEST

START_TEST(stores_are_independent)
{
    axstm_store *a = tu_store_ok(), *b = tu_store_ok();
    axstm_value *va = tu_usevar_ok(a, "shared.name");
    axstm_value *vb;

    tu_set_i64_ok(va, 1);
    ck_assert_int_eq(tu_commit(va), AXSTM_OK);
    ck_assert_uint_eq(tu_stats_ok(b).keys, 0);

    vb = tu_usevar_ok(b, "shared.name");
    ck_assert_uint_eq(axstm_value_version(vb), 0);
    tu_assert_no_value(vb);
    ck_assert_uint_eq(tu_stats_ok(a).commits, 1);
    ck_assert_uint_eq(tu_stats_ok(b).commits, 0);

    axstm_value_free(va);
    axstm_value_free(vb);
    axstm_store_free(a);
    axstm_store_free(b);
}
END_TEST

START_TEST(free_releases_committed_values)
{
    /* Run under valgrind/ASan: a store holding values must free them all. */
    axstm_store *s = tu_store_ok();
    static const char *const keys[] = {"a", "b", "c"};
    axstm_collection *c = tu_using_ok(s, keys, 3);
    size_t i;
    for (i = 0; i < 3; i++)
        tu_set_str_ok(axstm_collection_at(c, i), keys[i]);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Stats                                                              */
/* ------------------------------------------------------------------ */

START_TEST(stats_count_keys)
{
    axstm_store *s = tu_store_ok();
    static const char *const keys[] = {"k1", "k4", "k5", "k4"};
    axstm_value *v;
    axstm_collection *c;

    v = tu_usevar_ok(s, "k1");
    ck_assert_uint_eq(tu_stats_ok(s).keys, 1);
    axstm_value_free(v);
    v = tu_usevar_ok(s, "k1"); /* existing: not counted again */
    ck_assert_uint_eq(tu_stats_ok(s).keys, 1);
    axstm_value_free(v);
    v = tu_usevar_ok(s, "k2");
    axstm_value_free(v);
    v = tu_usevar_ok(s, "k3");
    axstm_value_free(v);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 3);

    c = tu_using_ok(s, keys, 4); /* one existing, two new, one duplicate */
    ck_assert_uint_eq(tu_stats_ok(s).keys, 5);
    axstm_collection_free(c);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 5);
    axstm_store_free(s);
}
END_TEST

START_TEST(stats_count_commits_and_conflicts)
{
    axstm_store *s = tu_store_ok();
    static const char *const keys[] = {"x", "y", "z"};
    axstm_value *a = tu_usevar_ok(s, "x");
    axstm_value *b = tu_usevar_ok(s, "x");
    axstm_collection *c;
    axstm_stats st;

    ck_assert_int_eq(tu_commit(a), AXSTM_OK);
    st = tu_stats_ok(s);
    ck_assert_uint_eq(st.commits, 1);
    ck_assert_uint_eq(st.conflicts, 0);

    ck_assert_int_eq(tu_commit(b), AXSTM_CONCURRENT_UPDATE);
    st = tu_stats_ok(s);
    ck_assert_uint_eq(st.commits, 1);
    ck_assert_uint_eq(st.conflicts, 1);

    ck_assert_int_eq(tu_commit(a), AXSTM_OK);
    ck_assert_uint_eq(tu_stats_ok(s).commits, 2);

    /* A collection commit is one commit, however many keys it writes. */
    c = tu_using_ok(s, keys, 3);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    st = tu_stats_ok(s);
    ck_assert_uint_eq(st.commits, 3);
    ck_assert_uint_eq(st.conflicts, 1);

    /* ... and a rejected one is one conflict. */
    tu_refresh_ok(a); /* the collection wrote x */
    ck_assert_int_eq(tu_commit(a), AXSTM_OK);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_CONCURRENT_UPDATE);
    st = tu_stats_ok(s);
    ck_assert_uint_eq(st.commits, 4);
    ck_assert_uint_eq(st.conflicts, 2);

    /* Single-threaded, nothing can be busy. */
    ck_assert_uint_eq(st.busy, 0);
    ck_assert_uint_eq(st.retries_waited, 0);

    axstm_collection_free(c);
    axstm_value_free(a);
    axstm_value_free(b);
    axstm_store_free(s);
}
END_TEST

/* Answers of a run of calls that should all succeed at once. */
struct tally {
    long busy, other;
};

static int tally(struct tally *t, int rc)
{
    if (rc == AXSTM_BUSY_RETRY)
        t->busy++;
    else if (rc != AXSTM_OK)
        t->other++;
    return rc;
}

START_TEST(no_busy_retry_without_contention)
{
    /* AXSTM_BUSY_RETRY means only that a lock was held at that instant.
     * One thread alone holds no lock between calls, so however many
     * checkouts, refreshes and commits it makes, none may answer it. */
    static const char *const keys[] = {"a", "b", "c"};
    axstm_store *s = tu_store_ok();
    axstm_value *v = NULL;
    axstm_collection *c = NULL;
    struct tally t = {0, 0};
    axstm_stats st;
    int i;

    ck_assert_int_eq(tally(&t, axstm_usevar(s, "a", &v)), AXSTM_OK);
    ck_assert_int_eq(tally(&t, axstm_using(s, keys, 3, &c)), AXSTM_OK);
    for (i = 0; i < 1000; i++) {
        axstm_value *w = NULL;
        axstm_collection *d = NULL;

        tally(&t, axstm_value_set_i64(v, i));
        tally(&t, axstm_value_commit(v));
        tally(&t, axstm_collection_refresh(c)); /* c sees v's commit */
        tally(&t, axstm_collection_commit(c));
        tally(&t, axstm_value_refresh(v)); /* and v sees c's */
        if (tally(&t, axstm_usevar(s, "b", &w)) == AXSTM_OK)
            axstm_value_free(w);
        if (tally(&t, axstm_using(s, keys, 3, &d)) == AXSTM_OK)
            axstm_collection_free(d);
    }
    ck_assert_msg(t.busy == 0, "%ld BUSY_RETRY answers to a lone thread", t.busy);
    ck_assert_msg(t.other == 0, "%ld calls failed otherwise", t.other);
    st = tu_stats_ok(s);
    ck_assert_uint_eq(st.busy, 0);
    ck_assert_uint_eq(st.commits, 2000);
    ck_assert_uint_eq(st.conflicts, 0);
    axstm_collection_free(c);
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

START_TEST(stats_bytes_follow_values)
{
    enum { BIG = 4 * 1024 * 1024 };
    axstm_store *s = tu_store_ok();
    axstm_value *v;
    unsigned char *big = tu_xmalloc(BIG);
    uint64_t before, with_big, after = 0;
    int i;

    v = tu_usevar_ok(s, "blob");
    tu_set_i64_ok(v, 1);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    before = tu_stats_ok(s).bytes;
    ck_assert_uint_gt(before, 0);

    memset(big, 0x5a, BIG);
    ck_assert_int_eq(axstm_value_set(v, big, BIG), AXSTM_OK);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    with_big = tu_stats_ok(s).bytes;
    ck_assert_msg(with_big >= before + BIG, "a committed 4 MiB value is not counted: %llu -> %llu",
                  (unsigned long long)before, (unsigned long long)with_big);

    /* Overwrite it with a small value and drop every handle that could still
     * see the big one.  Reclamation may be deferred, so give the store a
     * number of further commits to catch up, but it must catch up. */
    tu_set_i64_ok(v, 2);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
    for (i = 0; i < 1000; i++) {
        after = tu_stats_ok(s).bytes;
        if (after < with_big - BIG / 2)
            break;
        v = tu_usevar_ok(s, "blob");
        tu_set_i64_ok(v, 3 + i);
        ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        axstm_value_free(v);
    }
    ck_assert_msg(after < with_big - BIG / 2,
                  "4 MiB still held after overwrite: %llu bytes (was %llu)",
                  (unsigned long long)after, (unsigned long long)with_big);
    free(big);
    axstm_store_free(s);
}
END_TEST

START_TEST(stats_bytes_grow_with_keys)
{
    axstm_store *s = tu_store_ok();
    uint64_t before = tu_stats_ok(s).bytes;
    char key[32];
    int i;
    for (i = 0; i < 1000; i++) {
        axstm_value *v;
        snprintf(key, sizeof key, "key.%d", i);
        v = tu_usevar_ok(s, key);
        axstm_value_free(v);
    }
    /* A thousand keys cost at least their names. */
    ck_assert_uint_gt(tu_stats_ok(s).bytes, before + 1000 * 5);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* foreach                                                            */
/* ------------------------------------------------------------------ */

START_TEST(foreach_visits_every_key_once)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v;
    tu_snapshot snap;
    const tu_entry *e;

    v = tu_usevar_ok(s, "never"); /* created, never committed */
    axstm_value_free(v);

    v = tu_usevar_ok(s, "nothing"); /* committed with no value */
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);

    v = tu_usevar_ok(s, "empty"); /* empty value, committed twice */
    ck_assert_int_eq(axstm_value_set(v, NULL, 0), AXSTM_OK);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);

    v = tu_usevar_ok(s, "text");
    tu_set_str_ok(v, "xy");
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    tu_set_str_ok(v, "xyz"); /* local only */
    axstm_value_free(v);

    tu_snapshot_take(s, &snap);
    ck_assert_uint_eq(snap.n, 4);
    /* Sorted by key, so duplicates would sit next to each other. */
    ck_assert_str_eq(snap.e[0].key, "empty");
    ck_assert_str_eq(snap.e[1].key, "never");
    ck_assert_str_eq(snap.e[2].key, "nothing");
    ck_assert_str_eq(snap.e[3].key, "text");

    e = tu_snapshot_find(&snap, "never");
    ck_assert_uint_eq(e->version, 0);
    ck_assert_int_eq(e->has_value, 0);
    ck_assert_uint_eq(e->len, 0);

    e = tu_snapshot_find(&snap, "nothing");
    ck_assert_uint_eq(e->version, 1);
    ck_assert_int_eq(e->has_value, 0);
    ck_assert_uint_eq(e->len, 0);

    e = tu_snapshot_find(&snap, "empty");
    ck_assert_uint_eq(e->version, 2);
    ck_assert_int_eq(e->has_value, 1);
    ck_assert_uint_eq(e->len, 0);

    e = tu_snapshot_find(&snap, "text");
    ck_assert_uint_eq(e->version, 1);
    ck_assert_int_eq(e->has_value, 1);
    ck_assert_uint_eq(e->len, 3);
    ck_assert_mem_eq(e->data, "xy", 3);

    tu_snapshot_free(&snap);
    axstm_store_free(s);
}
END_TEST

struct stop_walk {
    int visits;
    int stop_at;
    int code;
};

static int stop_visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    struct stop_walk *w = arg;
    (void)key;
    (void)version;
    (void)data;
    (void)len;
    return ++w->visits == w->stop_at ? w->code : 0;
}

START_TEST(foreach_stops_on_non_zero)
{
    axstm_store *s = tu_store_ok();
    char key[16];
    struct stop_walk w;
    int i;
    for (i = 0; i < 10; i++) {
        axstm_value *v;
        snprintf(key, sizeof key, "k%d", i);
        v = tu_usevar_ok(s, key);
        axstm_value_free(v);
    }

    w.visits = 0, w.stop_at = 3, w.code = 7;
    ck_assert_int_eq(axstm_store_foreach(s, stop_visit, &w), 7);
    ck_assert_int_eq(w.visits, 3);

    /* Negative codes are passed back as they are too. */
    w.visits = 0, w.stop_at = 1, w.code = -42;
    ck_assert_int_eq(axstm_store_foreach(s, stop_visit, &w), -42);
    ck_assert_int_eq(w.visits, 1);

    w.visits = 0, w.stop_at = 10, w.code = 1;
    ck_assert_int_eq(axstm_store_foreach(s, stop_visit, &w), 1);
    ck_assert_int_eq(w.visits, 10);

    w.visits = 0, w.stop_at = 11, w.code = 1; /* never reached */
    ck_assert_int_eq(axstm_store_foreach(s, stop_visit, &w), AXSTM_OK);
    ck_assert_int_eq(w.visits, 10);
    axstm_store_free(s);
}
END_TEST

struct reentrant_walk {
    axstm_store *s;
    int visits;
    int failures; /* calls inside visit that did not do what they should */
};

static int reentrant_visit(const char *key, uint64_t version, const void *data, size_t len,
                           void *arg)
{
    struct reentrant_walk *w = arg;
    axstm_value *v = NULL;
    axstm_stats st;
    int rc, spins = 0;
    (void)data;
    (void)len;

    w->visits++;
    do
        rc = axstm_usevar(w->s, key, &v);
    while (rc == AXSTM_BUSY_RETRY && ++spins < 1000000);
    if (rc != AXSTM_OK) {
        w->failures++;
        return 0;
    }
    if (axstm_value_version(v) != version)
        w->failures++;
    if (axstm_value_set_i64(v, (int64_t)version + 100) != AXSTM_OK)
        w->failures++;
    spins = 0;
    do
        rc = axstm_value_commit(v);
    while (rc == AXSTM_BUSY_RETRY && ++spins < 1000000);
    if (rc != AXSTM_OK)
        w->failures++;
    axstm_value_free(v);
    if (axstm_store_stats(w->s, &st) != AXSTM_OK)
        w->failures++;
    return 0;
}

START_TEST(foreach_callback_may_call_the_library)
{
    axstm_store *s = tu_store_ok();
    struct reentrant_walk w = {s, 0, 0};
    tu_snapshot snap;
    size_t i;
    char key[16];

    for (i = 0; i < 20; i++) {
        axstm_value *v;
        snprintf(key, sizeof key, "k%zu", i);
        v = tu_usevar_ok(s, key);
        if (i % 2)
            ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        axstm_value_free(v);
    }
    ck_assert_int_eq(axstm_store_foreach(s, reentrant_visit, &w), AXSTM_OK);
    ck_assert_int_eq(w.failures, 0);
    ck_assert_int_eq(w.visits, 20);

    /* Every key got exactly one commit from inside the walk. */
    tu_snapshot_take(s, &snap);
    ck_assert_uint_eq(snap.n, 20);
    for (i = 0; i < snap.n; i++) {
        int n = atoi(snap.e[i].key + 1);
        uint64_t want = (uint64_t)(n % 2) + 1;
        int64_t x;
        ck_assert_uint_eq(snap.e[i].version, want);
        ck_assert_uint_eq(snap.e[i].len, 8);
        memcpy(&x, snap.e[i].data, 8);
        ck_assert_int_eq(x, (int64_t)want - 1 + 100);
    }
    tu_snapshot_free(&snap);
    ck_assert_uint_eq(tu_stats_ok(s).commits, 10 + 20);
    axstm_store_free(s);
}
END_TEST

START_TEST(foreach_of_empty_store)
{
    axstm_store *s = tu_store_ok();
    struct stop_walk w = {0, 1, 5};
    ck_assert_int_eq(axstm_store_foreach(s, stop_visit, &w), AXSTM_OK);
    ck_assert_int_eq(w.visits, 0);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Bad input                                                          */
/* ------------------------------------------------------------------ */

START_TEST(stats_bad_input)
{
    axstm_store *s = tu_store_ok();
    axstm_stats st, sentinel;
    memset(&sentinel, 0xab, sizeof sentinel);
    st = sentinel;
    ck_assert_int_eq(axstm_store_stats(NULL, &st), AXSTM_EINVAL);
    ck_assert_mem_eq(&st, &sentinel, sizeof st);
    ck_assert_int_eq(axstm_store_stats(s, NULL), AXSTM_EINVAL);
    axstm_store_free(s);
}
END_TEST

START_TEST(foreach_bad_input)
{
    axstm_store *s = tu_store_ok();
    struct stop_walk w = {0, 1, 5};
    axstm_value *v = tu_usevar_ok(s, "k");
    axstm_value_free(v);
    ck_assert_int_eq(axstm_store_foreach(NULL, stop_visit, &w), AXSTM_EINVAL);
    ck_assert_int_eq(w.visits, 0);
    ck_assert_int_eq(axstm_store_foreach(s, NULL, &w), AXSTM_EINVAL);
    axstm_store_free(s);
}
END_TEST

static int null_arg_visit(const char *key, uint64_t version, const void *data, size_t len,
                          void *arg)
{
    (void)key;
    (void)version;
    (void)data;
    (void)len;
    return arg == NULL ? 3 : 4;
}

START_TEST(foreach_passes_arg_through)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "k");
    axstm_value_free(v);
    ck_assert_int_eq(axstm_store_foreach(s, null_arg_visit, NULL), 3);
    ck_assert_int_eq(axstm_store_foreach(s, null_arg_visit, s), 4);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Key table                                                          */
/* ------------------------------------------------------------------ */

enum { MANY = 300000 }; /* over 4 000 keys a shard: dense arrays (table.c) */

static int many_visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    unsigned char *seen = arg;
    long i;
    int64_t x;
    if (strncmp(key, "key.", 4) != 0)
        return 1;
    i = strtol(key + 4, NULL, 10);
    if (i < 0 || i >= MANY || seen[i])
        return 2;
    if (version != 1 || data == NULL || len != 8)
        return 3;
    memcpy(&x, data, 8);
    if (x != i * 7)
        return 4;
    seen[i] = 1;
    return 0;
}

/* Check's asserts cost a write each (they mark the test's progress), so the
 * hot loops below count failures and assert once. */
START_TEST(many_keys)
{
    axstm_store *s = tu_store_ok();
    unsigned char *seen = calloc(MANY, 1);
    char key[32];
    long bad = 0, first_bad = -1;
    int i, rc;

    ck_assert_ptr_nonnull(seen);
    for (i = 0; i < MANY; i++) {
        axstm_value *v = NULL;
        snprintf(key, sizeof key, "key.%d", i);
        TU_RETRY(rc, axstm_usevar(s, key, &v));
        if (rc != AXSTM_OK) {
            bad++;
            continue;
        }
        if (axstm_value_version(v) != 0 || axstm_value_set_i64(v, (int64_t)i * 7) != AXSTM_OK)
            bad++;
        TU_RETRY(rc, axstm_value_commit(v));
        if (rc != AXSTM_OK)
            bad++;
        axstm_value_free(v);
        if (bad && first_bad < 0)
            first_bad = i;
    }
    ck_assert_msg(bad == 0, "%ld failures creating keys, first at key.%ld", bad, first_bad);
    ck_assert_uint_eq(tu_stats_ok(s).keys, MANY);

    for (i = 0; i < MANY; i++) {
        axstm_value *v = NULL;
        int64_t x;
        snprintf(key, sizeof key, "key.%d", i);
        TU_RETRY(rc, axstm_usevar(s, key, &v));
        if (rc != AXSTM_OK) {
            bad++;
            continue;
        }
        if (strcmp(axstm_value_key(v), key) != 0 || axstm_value_version(v) != 1 ||
            axstm_value_get_i64(v, &x) != AXSTM_OK || x != (int64_t)i * 7)
            bad++;
        axstm_value_free(v);
        if (bad && first_bad < 0)
            first_bad = i;
    }
    ck_assert_msg(bad == 0, "%ld keys read back wrong, first key.%ld", bad, first_bad);
    /* Finding them created none. */
    ck_assert_uint_eq(tu_stats_ok(s).keys, MANY);

    ck_assert_int_eq(axstm_store_foreach(s, many_visit, seen), AXSTM_OK);
    for (i = 0; i < MANY; i++)
        if (!seen[i])
            bad++;
    ck_assert_msg(bad == 0, "%ld keys not visited", bad);
    free(seen);
    axstm_store_free(s);
}
END_TEST

/*
 * Long keys take 1152-byte entries, 28 to a 32 KiB chunk, so 10 000 of
 * them fill several chunks in every shard and make each shard's chunk
 * directory grow (lib/table.c); deleted ones are reused for new keys by
 * the reference they had.  Every key must read back as written.
 */
enum { LONG_KEYS = 10000, LONG_KEY_LEN = 1000 };

static void long_key(char *key, int i)
{
    memset(key, 'x', LONG_KEY_LEN);
    snprintf(key, 16, "L%06d.", i);
    key[strlen(key)] = 'x'; /* snprintf's NUL, covered again */
    key[LONG_KEY_LEN] = '\0';
}

/* Commits x to the long key i, or deletes it (del); counts failures. */
static long put_long(axstm_store *s, int i, int64_t x, int del)
{
    char key[LONG_KEY_LEN + 1];
    axstm_value *v = NULL;
    int rc;
    long_key(key, i);
    TU_RETRY(rc, axstm_usevar(s, key, &v));
    if (rc != AXSTM_OK)
        return 1;
    rc = del ? axstm_value_delete(v) : axstm_value_set_i64(v, x);
    if (rc == AXSTM_OK)
        TU_RETRY(rc, axstm_value_commit(v));
    axstm_value_free(v);
    return rc != AXSTM_OK;
}

/* Counts the long keys 0..n-1 (every step-th from first) that do not hold
 * x(i). */
static long check_long(axstm_store *s, int first, int step, int64_t sign)
{
    char key[LONG_KEY_LEN + 1];
    long bad = 0;
    for (int i = first; i < LONG_KEYS; i += step) {
        axstm_value *v = NULL;
        int64_t x = 0;
        int rc;
        long_key(key, i);
        TU_RETRY(rc, axstm_usevar(s, key, &v));
        if (rc != AXSTM_OK) {
            bad++;
            continue;
        }
        if (strcmp(axstm_value_key(v), key) != 0 || axstm_value_get_i64(v, &x) != AXSTM_OK ||
            x != sign * i)
            bad++;
        axstm_value_free(v);
    }
    return bad;
}

START_TEST(long_keys_fill_many_chunks_and_come_back)
{
    axstm_store *s = tu_store_ok();
    long bad = 0;
    for (int i = 0; i < LONG_KEYS; i++)
        bad += put_long(s, i, i, 0);
    ck_assert_msg(bad == 0, "%ld long keys not created", bad);
    ck_assert_uint_eq(tu_stats_ok(s).keys, LONG_KEYS);
    ck_assert_int_eq(check_long(s, 0, 1, 1), 0);
    size_t most = 0;
    for (size_t i = 0; i < AXSTM__SHARDS; i++)
        if (s->table.shard[i].nchunks > most)
            most = s->table.shard[i].nchunks;
    ck_assert_msg(most > 4, "no shard's directory grew (at most %zu chunks)", most);

    /* Half of them deleted, then created again with other values: their
     * entries' memory comes back from the free lists, once reclaimed. */
    for (int i = 0; i < LONG_KEYS; i += 2)
        bad += put_long(s, i, 0, 1);
    ck_assert_msg(bad == 0, "%ld long keys not deleted", bad);
    ck_assert_uint_eq(tu_stats_ok(s).keys, LONG_KEYS / 2);
    for (int i = 0; i < 3; i++)
        axstm__epoch_reclaim(&s->epoch);
    for (int i = 0; i < LONG_KEYS; i += 2)
        bad += put_long(s, i, -(int64_t)i, 0);
    ck_assert_msg(bad == 0, "%ld long keys not created again", bad);
    ck_assert_uint_eq(tu_stats_ok(s).keys, LONG_KEYS);
    ck_assert_int_eq(check_long(s, 0, 2, -1), 0);
    ck_assert_int_eq(check_long(s, 1, 2, 1), 0);
    axstm_store_free(s);
}
END_TEST

/* Readers of existing keys while a writer adds long keys: the readers'
 * lookups run while shards rebuild their arrays and replace their chunk
 * directories (ThreadSanitizer sees the hand-over). */
struct growth_reader {
    axstm_store *s;
    _Atomic int *done;
    long bad, reads;
};

enum { STEADY_KEYS = 256 };

static void *growth_read(void *arg)
{
    struct growth_reader *r = arg;
    char key[32];
    for (int round = 0; !atomic_load(r->done) || round < 2; round++)
        for (int i = 0; i < STEADY_KEYS; i++) {
            axstm_value *v = NULL;
            int64_t x = 0;
            int rc;
            snprintf(key, sizeof key, "steady.%d", i);
            TU_RETRY(rc, axstm_usevar(r->s, key, &v));
            if (rc != AXSTM_OK || axstm_value_get_i64(v, &x) != AXSTM_OK || x != i)
                r->bad++;
            axstm_value_free(v);
            r->reads++;
        }
    return NULL;
}

START_TEST(lookups_while_shards_grow)
{
    axstm_store *s = tu_store_ok();
    char key[32];
    for (int i = 0; i < STEADY_KEYS; i++) {
        snprintf(key, sizeof key, "steady.%d", i);
        tu_put_i64(s, key, i);
    }
    _Atomic int done = 0;
    struct growth_reader r[2] = {{s, &done, 0, 0}, {s, &done, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, growth_read, &r[i]), 0);
    long bad = 0;
    for (int i = 0; i < LONG_KEYS; i++)
        bad += put_long(s, i, i, 0);
    atomic_store(&done, 1);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    ck_assert_msg(bad == 0, "%ld long keys not created", bad);
    ck_assert_msg(r[0].bad == 0 && r[1].bad == 0, "%ld and %ld of %ld and %ld reads wrong",
                  r[0].bad, r[1].bad, r[0].reads, r[1].reads);
    ck_assert_int_eq(check_long(s, 0, 1, 1), 0);
    ck_assert_uint_eq(tu_stats_ok(s).keys, LONG_KEYS + STEADY_KEYS);
    axstm_store_free(s);
}
END_TEST

/*
 * The key hash (lib/hash.h) places keys: its top 6 bits pick the shard, its
 * low bits the slot, bits 50..56 the probe tag.  Names that differ only in
 * a counter, as most programs' keys do, must spread evenly over all three,
 * or lookups slow down (a hash that ignored a byte would put every such key
 * in a few shards).  Fixed random keys keep the test deterministic.
 */
#define SPREAD_KEYS 65536

/* Pearson's chi-square of counts[0..n) against an even spread. */
static double chi_square(const unsigned *counts, size_t n, double total)
{
    double expect = total / (double)n, x = 0;
    for (size_t i = 0; i < n; i++) {
        double d = counts[i] - expect;
        x += d * d / expect;
    }
    return x;
}

START_TEST(hash_spreads_similar_keys)
{
    const struct axstm__hash_key seeds[2] = {{0x243f6a8885a308d3u, 0x13198a2e03707344u},
                                             {0xa4093822299f31d0u, 0x082efa98ec4e6c89u}};
    static unsigned shard[64], low[1024], tag[128];
    char key[64];
    for (int s = 0; s < 2; s++) {
        memset(shard, 0, sizeof shard);
        memset(low, 0, sizeof low);
        memset(tag, 0, sizeof tag);
        for (int i = 0; i < SPREAD_KEYS; i++) {
            int len = snprintf(key, sizeof key, i % 2 ? "account-%d" : "user:%d:balance", i);
            uint64_t h = axstm__hash(&seeds[s], key, (size_t)len);
            shard[h >> 58]++;
            low[h & 1023]++;
            tag[h >> 50 & 127]++;
        }
        /* Chi-square with k-1 degrees of freedom has mean k-1 and standard
         * deviation sqrt(2(k-1)) (11.2, 45.2 and 15.9 here); allow six. */
        ck_assert_double_lt(chi_square(shard, 64, SPREAD_KEYS), 63 + 6 * 11.2);
        ck_assert_double_lt(chi_square(low, 1024, SPREAD_KEYS), 1023 + 6 * 45.2);
        ck_assert_double_lt(chi_square(tag, 128, SPREAD_KEYS), 127 + 6 * 15.9);
    }
}
END_TEST

START_TEST(hash_depends_on_every_byte_and_the_seed)
{
    const struct axstm__hash_key a = {0x9e3779b97f4a7c15u, 0xbf58476d1ce4e5b9u};
    const struct axstm__hash_key b = {0x9e3779b97f4a7c15u, 0xbf58476d1ce4e5bau};
    unsigned char key[40];
    for (size_t len = 1; len <= sizeof key; len++) {
        memset(key, 'k', len);
        uint64_t h = axstm__hash(&a, key, len);
        /* The seed matters, and so does the length (a prefix differs). */
        ck_assert(h != axstm__hash(&b, key, len));
        if (len > 1)
            ck_assert(h != axstm__hash(&a, key, len - 1));
        /* Flipping any one bit of any byte changes about half the bits. */
        double changed = 0;
        for (size_t i = 0; i < len; i++)
            for (int bit = 0; bit < 8; bit++) {
                key[i] ^= (unsigned char)(1u << bit);
                changed += __builtin_popcountll(h ^ axstm__hash(&a, key, len));
                key[i] ^= (unsigned char)(1u << bit);
            }
        double mean = changed / (double)(8 * len);
        ck_assert_msg(mean > 24 && mean < 40, "len %zu: %.1f bits change on average", len, mean);
    }
}
END_TEST

START_TEST(similar_keys_stay_apart)
{
    /* Keys a weak hash would collide: one byte apart, prefixes of each
     * other, differing only in their last byte of a long run. */
    axstm_store *s = tu_store_ok();
    char key[AXSTM_KEY_MAX + 1];
    int n = 0, c, i;
    tu_snapshot snap;

    for (c = 1; c < 256; c++) { /* every one-byte key */
        axstm_value *v;
        key[0] = (char)c, key[1] = '\0';
        v = tu_usevar_ok(s, key);
        tu_set_i64_ok(v, c);
        ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        axstm_value_free(v);
        n++;
    }
    for (i = 2; i <= 64; i++) { /* "aa", "aaa", ...: prefixes of each other */
        axstm_value *v;
        memset(key, 'a', (size_t)i);
        key[i] = '\0';
        v = tu_usevar_ok(s, key);
        tu_set_i64_ok(v, 1000 + i);
        ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        axstm_value_free(v);
        n++;
    }
    memset(key, 'z', AXSTM_KEY_MAX);
    key[AXSTM_KEY_MAX] = '\0';
    for (c = 'a'; c <= 'y'; c++) { /* long keys differing in the last byte */
        axstm_value *v;
        key[AXSTM_KEY_MAX - 1] = (char)c;
        v = tu_usevar_ok(s, key);
        tu_set_i64_ok(v, 2000 + c);
        ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        axstm_value_free(v);
        n++;
    }
    ck_assert_uint_eq(tu_stats_ok(s).keys, (uint64_t)n);

    /* Read them all back: each holds its own value, at version 1. */
    tu_snapshot_take(s, &snap);
    ck_assert_uint_eq(snap.n, (uint64_t)n);
    for (c = 1; c < 256; c++) {
        const tu_entry *e;
        int64_t x;
        key[0] = (char)c, key[1] = '\0';
        e = tu_snapshot_find(&snap, key);
        ck_assert_ptr_nonnull(e);
        ck_assert_uint_eq(e->version, 1);
        memcpy(&x, e->data, 8);
        ck_assert_int_eq(x, c);
    }
    for (i = 2; i <= 64; i++) {
        axstm_value *v;
        memset(key, 'a', (size_t)i);
        key[i] = '\0';
        v = tu_usevar_ok(s, key);
        ck_assert_int_eq(tu_get_i64_ok(v), 1000 + i);
        axstm_value_free(v);
    }
    memset(key, 'z', AXSTM_KEY_MAX);
    key[AXSTM_KEY_MAX] = '\0';
    for (c = 'a'; c <= 'y'; c++) {
        axstm_value *v;
        key[AXSTM_KEY_MAX - 1] = (char)c;
        v = tu_usevar_ok(s, key);
        ck_assert_int_eq(tu_get_i64_ok(v), 2000 + c);
        axstm_value_free(v);
    }
    ck_assert_uint_eq(tu_stats_ok(s).keys, (uint64_t)n);
    tu_snapshot_free(&snap);
    axstm_store_free(s);
}
END_TEST

START_TEST(key_is_copied)
{
    axstm_store *s = tu_store_ok();
    char key[8] = "mine";
    axstm_value *v = tu_usevar_ok(s, key), *w;
    strcpy(key, "gone");
    ck_assert_str_eq(axstm_value_key(v), "mine");
    axstm_value_free(v);
    w = tu_usevar_ok(s, "mine");
    ck_assert_str_eq(axstm_value_key(w), "mine");
    ck_assert_uint_eq(tu_stats_ok(s).keys, 1);
    axstm_value_free(w);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Cancellation                                                       */
/* ------------------------------------------------------------------ */

static void new_store(void *arg)
{
    *(axstm_store **)arg = axstm_store_new();
}

/* axstm_store_new draws the store's hash key from the system (getrandom,
 * or /dev/urandom): system calls that are cancellation points.  No call
 * but axstm_atomically's waits may act on a cancellation request
 * (axstm.h); acting there would leak the store being made. */
START_TEST(new_with_cancel_pending)
{
    axstm_store *s = NULL;
    ck_assert_msg(tu_call_with_cancel_pending(new_store, &s),
                  "axstm_store_new acted on a cancellation request");
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0);
    axstm_store_free(s);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc;

    tc = tcase_create("Lifecycle");
    tcase_add_test(tc, new_store_is_empty);
    tcase_add_test(tc, free_null_is_a_no_op);
    tcase_add_test(tc, stores_are_independent);
    tcase_add_test(tc, free_releases_committed_values);
    suite_add_tcase(s, tc);

    tc = tcase_create("Stats");
    tcase_add_test(tc, stats_count_keys);
    tcase_add_test(tc, stats_count_commits_and_conflicts);
    tcase_add_test(tc, no_busy_retry_without_contention);
    suite_add_tcase(s, tc);

    /* Memory held by this process (a remote store counts its values' bytes). */
    tc = tcase_create("Stats, in process");
    tcase_set_tags(tc, "local");
    tcase_add_test(tc, stats_bytes_follow_values);
    tcase_add_test(tc, stats_bytes_grow_with_keys);
    suite_add_tcase(s, tc);

    tc = tcase_create("Foreach");
    tcase_add_test(tc, foreach_visits_every_key_once);
    tcase_add_test(tc, foreach_stops_on_non_zero);
    tcase_add_test(tc, foreach_callback_may_call_the_library);
    tcase_add_test(tc, foreach_of_empty_store);
    tcase_add_test(tc, foreach_passes_arg_through);
    suite_add_tcase(s, tc);

    tc = tcase_create("Bad input");
    tcase_add_test(tc, stats_bad_input);
    tcase_add_test(tc, foreach_bad_input);
    suite_add_tcase(s, tc);

    tc = tcase_create("Key table");
    tcase_set_tags(tc, "long"); /* tens of thousands of keys */
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, many_keys);
    tcase_add_test(tc, similar_keys_stay_apart);
    tcase_add_test(tc, hash_spreads_similar_keys);
    tcase_add_test(tc, hash_depends_on_every_byte_and_the_seed);
    tcase_add_test(tc, key_is_copied);
    suite_add_tcase(s, tc);

    tc = tcase_create("Key table, in process");
    tcase_set_tags(tc, "local"); /* this process's table and its chunks */
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, long_keys_fill_many_chunks_and_come_back);
    tcase_add_test(tc, lookups_while_shards_grow);
    suite_add_tcase(s, tc);

    tc = tcase_create("Cancellation");
    tcase_add_test(tc, new_with_cancel_pending);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(store_suite());
}
