/* SPDX-License-Identifier: MIT */
/*
 * check_txn.c -- transactions (axstm_atomically): commit and rollback,
 * read-your-own-writes, read bytes that stay valid, bad input, the
 * interplay with Axon handles, and allocation failure inside a
 * transaction.
 *
 * The other transaction tests: check_or_else.c (axstm_or_else),
 * check_retry.c (blocking retry, timed calls, cancellation) and
 * check_isolation.c (opacity, serializability, progress).  txnutil.h holds
 * what they share and says how they work: bodies only record, the test's
 * thread asserts.
 */
#include "txnutil.h"

#include "alloc.h"

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
    TU_TRY(axstm_txn_get_i64(tx, "a", &a));
    TU_TRY(axstm_txn_get_i64(tx, "b", &b));
    TU_TRY(axstm_txn_get_i64(tx, "r", &r));
    TU_TRY(axstm_txn_set_i64(tx, "a", a + r));
    TU_TRY(axstm_txn_set_i64(tx, "b", b + r));
    return axstm_txn_set_i64(tx, "c", 7);
}

START_TEST(commit_publishes_writes_only_written_keys_get_versions)
{
    axstm_store *s = tu_store_ok();
    struct moves m = {0};
    axstm_stats before;

    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "b", 2);
    tu_put_i64(s, "r", 10);
    before = tu_stats_ok(s);
    ck_assert_int_eq(axstm_atomically(s, publish_body, &m), AXSTM_OK);
    ck_assert_uint_eq(m.runs, 1);
    ck_assert_uint_eq(tu_stats_ok(s).commits, before.commits + 1);

    tu_assert_committed(s, "a", 2, 1, 11);
    tu_assert_committed(s, "b", 2, 1, 12);
    tu_assert_committed(s, "c", 1, 1, 7);
    /* Only read: neither version nor value moved. */
    tu_assert_committed(s, "r", 1, 1, 10);
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
    TU_TRY(axstm_txn_set_i64(tx, "fresh", 1));
    r->rc[0] = axstm_txn_get_i64(tx, "fresh", &r->seen[0]);
    TU_TRY(axstm_txn_set_i64(tx, "fresh", 2));
    TU_TRY(axstm_txn_set_i64(tx, "fresh", 3));
    r->rc[1] = axstm_txn_get_i64(tx, "fresh", &r->seen[1]);
    /* A committed key: read, set, read. */
    r->rc[2] = axstm_txn_get_i64(tx, "old", &r->seen[2]);
    TU_TRY(axstm_txn_set_i64(tx, "old", r->seen[2] + 1));
    r->rc[3] = axstm_txn_get_i64(tx, "old", &r->seen[3]);
    /* A key with no value: read, set, read. */
    r->rc[4] = axstm_txn_get_i64(tx, "empty", &r->seen[4]);
    TU_TRY(axstm_txn_set_i64(tx, "empty", 9));
    r->rc[5] = axstm_txn_get_i64(tx, "empty", &r->seen[5]);
    return AXSTM_OK;
}

START_TEST(reads_see_own_writes)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v;
    struct ryw r;

    memset(&r, 0, sizeof r);
    tu_put_i64(s, "old", 5);
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
    tu_assert_committed(s, "fresh", 1, 1, 3);
    tu_assert_committed(s, "old", 2, 1, 6);
    tu_assert_committed(s, "empty", 1, 1, 9);
    axstm_store_free(s);
}
END_TEST

START_TEST(own_code_rolls_back_seed_transfer)
{
    axstm_store *s = tu_store_ok();
    struct transfer t = {"source", "target", 80, 0, 0};
    tu_snapshot before, after;
    axstm_stats st;

    tu_put_i64(s, "source", 50);
    tu_put_i64(s, "target", 100);
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
    tu_assert_committed(s, "source", 2, 1, 20);
    tu_assert_committed(s, "target", 2, 1, 130);
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
    TU_TRY(axstm_txn_set_i64(tx, "k", 99));
    TU_TRY(axstm_txn_set_i64(tx, "other", 99));
    return g->code;
}

/* Passes the ENOVALUE of a real read of a key with no value back. */
static int read_missing_body(axstm_txn *tx, void *arg)
{
    struct give_back *g = arg;
    int64_t x;
    g->runs++;
    TU_TRY(axstm_txn_set_i64(tx, "k", 99));
    TU_TRY(axstm_txn_get_i64(tx, "nothing", &x));
    return AXSTM_OK;
}

START_TEST(library_code_rolls_back)
{
    static const int codes[] = {AXSTM_ENOVALUE, AXSTM_ETYPE,     AXSTM_EINVAL, AXSTM_E2BIG,
                                AXSTM_ENOMEM,   AXSTM_ETIMEDOUT, 42,           INT_MAX};
    axstm_store *s = tu_store_ok();
    tu_snapshot before, after;
    struct give_back g;
    size_t i;

    tu_put_i64(s, "k", 1);
    tu_put_i64(s, "other", 2);
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
    TU_TRY(axstm_txn_get_i64(tx, "a", &a));
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
    struct rerun r = {&it, 0, -1};
    axstm_stats st;
    int rc;

    tu_put_i64(s, "a", 0);
    tu_put_i64(s, "b", 0);
    if (k1 != NULL)
        tu_put_i64(s, k1, 0);
    st = tu_stats_ok(s);
    interloper_start(&it, s, op, 100, "a", k1);
    rc = axstm_atomically(s, rerun_body, &r);
    ck_assert_msg(interloper_finish(&it), "the body never reached the interloper");
    ck_assert_int_eq(it.rc, AXSTM_OK);
    ck_assert_int_eq(rc, AXSTM_OK);
    ck_assert_int_eq(r.first_a, 0);
    ck_assert_uint_eq(r.runs, 2);
    ck_assert_uint_gt(tu_stats_ok(s).conflicts, st.conflicts);
    tu_assert_committed(s, "a", 2, 1, 100);
    tu_assert_committed(s, "b", 2, 1, 101); /* from the second run's a */
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
    TU_TRY(axstm_txn_set_i64(tx, "k", (int64_t)g->runs));
    return g->runs == 1 ? g->code : AXSTM_OK;
}

START_TEST(passed_back_conflict_reruns_body)
{
    /* "A code returned by an axstm_txn_* call ... should be passed straight
     * back: the body is then simply run again." */
    static const int codes[] = {AXSTM_CONCURRENT_UPDATE, AXSTM_BUSY_RETRY};
    size_t i;
    for (i = 0; i < 2; i++) {
        axstm_store *s = tu_store_ok();
        struct give_back g = {codes[i], 0};
        ck_assert_int_eq(axstm_atomically(s, flaky_body, &g), AXSTM_OK);
        ck_assert_uint_eq(g.runs, 2);
        tu_assert_committed(s, "k", 1, 1, 2); /* only the second run's write */
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
    tu_put_i64(s, "present", 3);
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
    tu_assert_absent(s, "never");
    tu_assert_committed(s, "novalue", 0, 0, 0);
    tu_assert_committed(s, "present", 1, 1, 3);
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
    TU_TRY(axstm_txn_set(tx, "mine", "abc", 3));
    t->rc[4] = axstm_txn_get_i64(tx, "mine", &t->x);
    t->rc[5] = axstm_txn_get_i64(tx, "eight", &t->x);
    return AXSTM_OK;
}

START_TEST(get_i64_of_wrong_size_is_etype)
{
    axstm_store *s = tu_store_ok();
    struct types t;
    memset(&t, 0, sizeof t);
    tu_put_bytes(s, "four", "abcd", 4);
    tu_put_bytes(s, "zero", "", 0);
    tu_put_bytes(s, "nine", "123456789", 9);
    tu_put_i64(s, "eight", -8);
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
    TU_TRY(axstm_txn_set(tx, "e", NULL, 0));
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
    struct empty_value e = {INT_MIN, 0};
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
    TU_TRY(axstm_txn_get(tx, "k", &p1, &l1));
    TU_TRY(axstm_txn_set(tx, "k", "second", 7));
    TU_TRY(axstm_txn_get(tx, "k", &p2, &l2));
    TU_TRY(axstm_txn_set(tx, "k", "third", 6));
    TU_TRY(axstm_txn_get(tx, "k", &p3, &l3));
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
    tu_put_bytes(s, "k", big, BIG_LEN);
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
        TU_TRY(axstm_txn_get(tx, key, &rp[i], &len));
        if (len != 8)
            return AXSTM_ETYPE;
    }
    for (i = 0; i < GROW_WRITES; i++) {
        int64_t x = 1000 + i;
        snprintf(key, sizeof key, "w.%02d", i);
        TU_TRY(axstm_txn_set_i64(tx, key, x));
        TU_TRY(axstm_txn_get(tx, key, &wp[i], &len));
        /* Overwritten later: the old bytes must stay as they were. */
        TU_TRY(axstm_txn_set_i64(tx, key, -x));
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
    struct grow g = {0, 0, 0};
    char key[16];
    int i;

    for (i = 0; i < GROW_READS; i++) {
        snprintf(key, sizeof key, "r.%02d", i);
        tu_put_i64(s, key, i);
    }
    ck_assert_int_eq(axstm_atomically(s, grow_body, &g), AXSTM_OK);
    ck_assert_msg(g.bad_read == 0, "%d bytes read earlier changed", g.bad_read);
    ck_assert_msg(g.bad_own == 0, "%d bytes of own writes read earlier changed", g.bad_own);
    for (i = 0; i < GROW_WRITES; i++) {
        snprintf(key, sizeof key, "w.%02d", i);
        tu_assert_committed(s, key, 1, 1, -(1000 + i));
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
    TU_TRY(axstm_txn_get(tx, "k", &p, &len));
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
    tu_put_bytes(s, "k", big, BIG_LEN);
    free(big);
    interloper_start(&it, s, op_many_big_commits, 0, "k", NULL);
    rc = axstm_atomically(s, hold_bytes_body, &st);
    ck_assert(interloper_finish(&it));
    ck_assert_int_eq(it.rc, AXSTM_OK);
    ck_assert_int_eq(rc, AXSTM_OK);
    ck_assert_msg(st.after_commits_same, "bytes from axstm_txn_get changed while the attempt ran");
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
    AXSTM_EINVAL, AXSTM_EINVAL, AXSTM_E2BIG,  /* get keys */
    AXSTM_EINVAL, AXSTM_EINVAL, AXSTM_E2BIG,  /* set keys */
    AXSTM_EINVAL, AXSTM_E2BIG,  AXSTM_EINVAL, /* set data */
    AXSTM_EINVAL, AXSTM_E2BIG,  AXSTM_EINVAL, /* get_i64 */
    AXSTM_EINVAL, AXSTM_EINVAL, AXSTM_E2BIG,  /* set_i64 */
    AXSTM_EINVAL, AXSTM_EINVAL,               /* or_else */
    AXSTM_EINVAL, AXSTM_EINVAL,               /* nesting */
    AXSTM_EINVAL, AXSTM_EINVAL,               /* NULL tx */
    AXSTM_OK,                                 /* still fine */
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
    tu_put_i64(s, "k", 0);
    ck_assert_int_eq(axstm_atomically(s, bad_body, &b), AXSTM_OK);
    ck_assert_int_eq(b.n, (int)(sizeof bad_expected / sizeof bad_expected[0]));
    for (i = 0; i < b.n; i++)
        ck_assert_msg(b.rc[i] == bad_expected[i], "call %d gave %d (%s), not %d", i, b.rc[i],
                      axstm_strerror(b.rc[i]), bad_expected[i]);
    ck_assert_uint_eq(b.inner_runs, 0);
    /* Bad keys created nothing; the good write was committed. */
    ck_assert_uint_eq(tu_stats_ok(s).keys, 1);
    tu_assert_committed(s, "k", 2, 1, 5);
    axstm_store_free(s);
}
END_TEST

/* Prefetches a, b and a missing key, lets another thread commit a, then
 * reads only b (and the missing key) and writes c = b + 1: a, though never
 * got, was read, so its commit in between must run the body again. */
struct prefetching {
    struct interloper *it;
    unsigned runs;
    int missing_rc, again_rc;
};

static int prefetch_body(axstm_txn *tx, void *arg)
{
    struct prefetching *p = arg;
    static const char *const keys[] = {"a", "b", "missing", "b"};
    int64_t b;
    p->runs++;
    TU_TRY(axstm_txn_prefetch(tx, keys, 4));
    interloper_meet(p->it);
    TU_TRY(axstm_txn_get_i64(tx, "b", &b));
    p->missing_rc = axstm_txn_get(tx, "missing", NULL, NULL);
    p->again_rc = axstm_txn_prefetch(tx, keys, 2); /* read already: nothing to do */
    return axstm_txn_set_i64(tx, "c", b + 1);
}

START_TEST(prefetched_keys_count_as_read)
{
    axstm_store *s = tu_store_ok();
    struct interloper it;
    struct prefetching p = {&it, 0, 0, -1};
    tu_put_i64(s, "a", 0);
    tu_put_i64(s, "b", 41);
    interloper_start(&it, s, op_txn_set, 100, "a", NULL);
    int rc = axstm_atomically(s, prefetch_body, &p);
    ck_assert_msg(interloper_finish(&it), "the body never reached the interloper");
    ck_assert_int_eq(it.rc, AXSTM_OK);
    ck_assert_int_eq(rc, AXSTM_OK);
    ck_assert_uint_eq(p.runs, 2);
    ck_assert_int_eq(p.missing_rc, AXSTM_ENOVALUE);
    ck_assert_int_eq(p.again_rc, AXSTM_OK);
    tu_assert_committed(s, "a", 2, 1, 100);
    tu_assert_committed(s, "c", 1, 1, 42);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 3); /* the missing key was not created */
    axstm_store_free(s);
}
END_TEST

/* Bad arguments to axstm_txn_prefetch read nothing: a body that only
 * tries them and returns its own code leaves the store as it was, and a
 * good prefetch after them works. */
struct bad_prefetch {
    int rc[6];
};

static int bad_prefetch_body(axstm_txn *tx, void *arg)
{
    struct bad_prefetch *b = arg;
    const char *empty[] = {"k", ""};
    const char *null_key[] = {"k", NULL};
    const char *too_long[] = {"k", long_key};
    const char *good[] = {"k", "k"};
    b->rc[0] = axstm_txn_prefetch(tx, NULL, 1);
    b->rc[1] = axstm_txn_prefetch(tx, empty, 2);
    b->rc[2] = axstm_txn_prefetch(tx, null_key, 2);
    b->rc[3] = axstm_txn_prefetch(tx, too_long, 2);
    b->rc[4] = axstm_txn_prefetch(tx, NULL, 0);
    b->rc[5] = axstm_txn_prefetch(tx, good, 2);
    return 77;
}

START_TEST(prefetch_of_bad_keys_is_einval_and_reads_nothing)
{
    axstm_store *s = tu_store_ok();
    struct bad_prefetch b;
    static const int want[] = {AXSTM_EINVAL, AXSTM_EINVAL, AXSTM_EINVAL,
                               AXSTM_E2BIG,  AXSTM_OK,     AXSTM_OK};
    make_long_key();
    tu_put_i64(s, "k", 7);
    axstm_stats before = tu_stats_ok(s);
    ck_assert_int_eq(axstm_atomically(s, bad_prefetch_body, &b), 77);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(b.rc[i] == want[i], "call %zu gave %d (%s), not %d", i, b.rc[i],
                      axstm_strerror(b.rc[i]), want[i]);
    axstm_stats after = tu_stats_ok(s);
    ck_assert_uint_eq(after.keys, before.keys);
    ck_assert_uint_eq(after.commits, before.commits);
    tu_assert_committed(s, "k", 1, 1, 7);
    /* Outside a body. */
    static const char *const keys[] = {"k"};
    ck_assert_int_eq(axstm_txn_prefetch(NULL, keys, 1), AXSTM_EINVAL);
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
    tu_put_i64(s, "held", 0);
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
    tu_assert_committed(s, "held", 2, 1, 1);
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
        TU_TRY(axstm_txn_set_i64(tx, "k", 3));
    return AXSTM_RETRY;
}

START_TEST(retry_without_reads_is_einval)
{
    axstm_store *s = tu_store_ok();
    struct blind bl = {0, 0};
    tu_snapshot before, after;
    double t0;

    tu_put_i64(s, "k", 1);
    tu_snapshot_take(s, &before);
    /* Timed first (refused at once, not after the timeout), so that a wait
     * that never ends shows as a failure rather than a hang.  The timeout is
     * long: a call that waited for it cannot have returned sooner, and a
     * call refused at once returns well within it on any machine. */
    t0 = tu_now();
    ck_assert_int_eq(axstm_atomically_timed(s, retry_blind_body, &bl, ns_of(watchdog_seconds())),
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
    TU_TRY(axstm_txn_get_i64(tx, "k", &k));
    return axstm_txn_set_i64(tx, "k", k + 1);
}

START_TEST(txn_commit_makes_stale_handles_fail)
{
    static const char *const kj[] = {"k", "j"};
    axstm_store *s = tu_store_ok();
    axstm_value *h;
    axstm_collection *c;

    tu_put_i64(s, "k", 1);
    tu_put_i64(s, "j", 1);
    h = tu_usevar_ok(s, "k");
    c = tu_using_ok(s, kj, 2);
    ck_assert_int_eq(axstm_atomically(s, bump_k_body, NULL), AXSTM_OK);
    tu_assert_committed(s, "k", 2, 1, 2);

    tu_set_i64_ok(h, 10);
    ck_assert_int_eq(tu_commit(h), AXSTM_CONCURRENT_UPDATE);
    ck_assert_uint_eq(axstm_value_version(h), 1);
    tu_set_i64_ok(axstm_collection_value(c, "j"), 10);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_CONCURRENT_UPDATE);
    tu_assert_committed(s, "k", 2, 1, 2);
    tu_assert_committed(s, "j", 1, 1, 1);

    /* A refreshed handle sees the transaction's write and goes on. */
    tu_refresh_ok(h);
    ck_assert_uint_eq(axstm_value_version(h), 2);
    ck_assert_int_eq(tu_get_i64_ok(h), 2);
    tu_set_i64_ok(h, 3);
    ck_assert_int_eq(tu_commit(h), AXSTM_OK);
    tu_assert_committed(s, "k", 3, 1, 3);
    /* And the next transaction sees the handle's. */
    ck_assert_int_eq(axstm_atomically(s, bump_k_body, NULL), AXSTM_OK);
    tu_assert_committed(s, "k", 4, 1, 4);
    axstm_value_free(h);
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

static int copy_k_to_j_body(axstm_txn *tx, void *arg)
{
    int64_t k;
    (void)arg;
    TU_TRY(axstm_txn_get_i64(tx, "k", &k));
    return axstm_txn_set_i64(tx, "j", k);
}

START_TEST(txn_read_leaves_handles_current)
{
    axstm_store *s = tu_store_ok();
    axstm_value *h;

    tu_put_i64(s, "k", 7);
    h = tu_usevar_ok(s, "k");
    ck_assert_int_eq(axstm_atomically(s, copy_k_to_j_body, NULL), AXSTM_OK);
    tu_assert_committed(s, "j", 1, 1, 7);
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
    TU_TRY(axstm_txn_get(tx, key, &d, &len));
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
        TU_TRY(af_get(tx, af_names[i], &x[i]));
    for (i = 0; i < sp->writes; i++)
        TU_TRY(af_set(tx, af_names[i], x[i] + 1000));
    return sp->runs <= sp->losses ? AXSTM_CONCURRENT_UPDATE : AXSTM_OK;
}

/* First branch: +1000 to keys 0..5, then retries; second: +1000 to 6..11. */
static int af_first(axstm_txn *tx, void *arg)
{
    int64_t x;
    int i;
    (void)arg;
    for (i = 0; i < 6; i++) {
        TU_TRY(af_get(tx, af_names[i], &x));
        TU_TRY(af_set(tx, af_names[i], x + 1000));
    }
    return AXSTM_RETRY;
}

static int af_second(axstm_txn *tx, void *arg)
{
    int64_t x;
    int i;
    (void)arg;
    for (i = 6; i < 12; i++) {
        TU_TRY(af_get(tx, af_names[i], &x));
        TU_TRY(af_set(tx, af_names[i], x + 1000));
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
    TU_TRY(af_get(tx, af_names[0], &x));
    TU_TRY(af_get(tx, af_names[1], &x));
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
        TU_TRY(get_count(tx, key, &x));
        TU_TRY(axstm_txn_set_i64(tx, key, x + 1 + i));
    }
    return AXSTM_OK;
}

struct af_case {
    const char *name;
    int (*call)(axstm_store *s);
    int wide;    /* values of AF_WIDE bytes rather than 8 */
    int ok_code; /* what the call gives when no allocation fails */
    int added;   /* keys [from, from + added) get +1000 on success */
    int from;
    int new_keys; /* the call names keys that do not exist yet */
};

static int af_call_three(axstm_store *s)
{
    struct af_spec sp = {3, 3, 0, 0};
    return axstm_atomically(s, af_rw_body, &sp);
}

static int af_call_many(axstm_store *s)
{
    struct af_spec sp = {40, 20, 0, 0};
    return axstm_atomically(s, af_rw_body, &sp);
}

static int af_call_losing(axstm_store *s)
{
    struct af_spec sp = {40, 20, 10, 0};
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
    {"three writes", af_call_three, 1, AXSTM_OK, 3, 0, 0},
    {"40 reads, 20 writes, inline values", af_call_many, 0, AXSTM_OK, 20, 0, 0},
    {"40 reads, 20 writes, blobs", af_call_many, 1, AXSTM_OK, 20, 0, 0},
    {"40 reads, 20 writes after losing", af_call_losing, 1, AXSTM_OK, 20, 0, 0},
    {"or_else", af_call_or_else, 1, AXSTM_OK, 6, 6, 0},
    {"retry wait", af_call_wait, 0, AXSTM_ETIMEDOUT, 0, 0, 0},
    {"new keys", af_call_new_keys, 0, AXSTM_OK, 0, 0, 1},
};

static void af_setup(axstm_store *s)
{
    unsigned char buf[AF_WIDE];
    int i;
    for (i = 0; i < AF_KEYS; i++) {
        snprintf(af_names[i], sizeof af_names[i], "k%02d", i);
        af_encode(buf, i);
        tu_put_bytes(s, af_names[i], buf, af_wide ? AF_WIDE : 8);
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
        ck_assert_msg(e != NULL && e->has_value && e->len == len, "n=%lu: %s lost", n, af_names[i]);
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
            ck_assert_msg(made >= n, "%s: ENOMEM with no failed allocation (n=%lu)", ac->name, n);
            tu_snapshot_take(s, &after);
            af_assert_unchanged(ac, &before, &after, n);
            tu_snapshot_free(&after);
            /* And nothing was left locked or half-done: it works now. */
            rc = ac->call(s);
            ck_assert_msg(rc == ac->ok_code, "%s after ENOMEM (n=%lu): %s", ac->name, n,
                          axstm_strerror(rc));
        } else {
            ck_assert_msg(rc == ac->ok_code, "%s, n=%lu sticky=%d: %s", ac->name, n, sticky,
                          axstm_strerror(rc));
        }
        af_assert_done(ac, s, n);
        tu_snapshot_free(&before);
        axstm_store_free(s);
        if (made < n)
            break;
    }
    ck_assert_msg(made < n, "%s: still allocating after %lu", ac->name, n);
    ck_assert_msg(enomem > 0, "%s: no allocation failure ever reached the caller", ac->name);
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
    tcase_add_test(tc, prefetched_keys_count_as_read);
    tcase_add_test(tc, prefetch_of_bad_keys_is_einval_and_reads_nothing);
    suite_add_tcase(s, tc);

    tc = tcase_create("Interop with handles");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, txn_commit_makes_stale_handles_fail);
    tcase_add_test(tc, txn_read_leaves_handles_current);
    tcase_add_test(tc, handle_commit_between_read_and_commit_reruns);
    tcase_add_test(tc, collection_commit_between_read_and_commit_reruns);
    suite_add_tcase(s, tc);

    tc = tcase_create("Allocation failure");
    tcase_set_tags(tc, "local"); /* injected into this process's allocator */
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
