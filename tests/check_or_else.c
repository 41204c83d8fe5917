/* SPDX-License-Identifier: MIT */
/*
 * check_or_else.c -- axstm_or_else: the second branch runs only when the
 * first retries, and neither it nor what follows sees the first's writes;
 * the first's other codes come back as they are; choices nest; when both
 * branches retry, the whole transaction waits on what either of them read.
 *
 * The harness (bodies only record, the test's thread asserts) is in
 * txnutil.h.
 */
#include "txnutil.h"

/* ------------------------------------------------------------------ */
/* or_else                                                            */
/* ------------------------------------------------------------------ */

struct alt {
    unsigned runs[4];
    int rc_or_else;
    int code; /* what a branch returns */
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
    TU_TRY(axstm_txn_set_i64(tx, "a", 100));
    TU_TRY(axstm_txn_set_i64(tx, "fb", 1));
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
    TU_TRY(axstm_txn_set_i64(tx, "pre", 1));
    a->rc_or_else = axstm_or_else(tx, o1_first, o1_second, a);
    TU_TRY(a->rc_or_else);
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
    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "fb", 0);
    tu_put_i64(s, "sb", 0);
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
    tu_assert_committed(s, "a", 1, 1, 1);
    tu_assert_committed(s, "fb", 1, 1, 0);
    tu_assert_committed(s, "sb", 2, 1, 2);
    tu_assert_committed(s, "pre", 1, 1, 1);
    axstm_store_free(s);
}
END_TEST

static int o2_first(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[0]++;
    TU_TRY(axstm_txn_set_i64(tx, "a", 5));
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
    tu_put_i64(s, "a", 1);
    ck_assert_int_eq(axstm_atomically(s, o2_body, &a), AXSTM_OK);
    ck_assert_uint_eq(a.runs[0], 1);
    ck_assert_uint_eq(a.runs[1], 0);
    tu_assert_committed(s, "a", 2, 1, 5);
    axstm_store_free(s);
}
END_TEST

START_TEST(first_code_is_returned_as_is)
{
    static const int codes[] = {42, NOT_ENOUGH_MONEY, AXSTM_ENOVALUE, AXSTM_ETYPE};
    size_t i;
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        axstm_store *s = tu_store_ok();
        struct alt a;
        alt_init(&a);
        a.code = codes[i];
        tu_put_i64(s, "a", 1);
        ck_assert_int_eq(axstm_atomically(s, o2_body, &a), codes[i]);
        ck_assert_int_eq(a.rc_or_else, codes[i]);
        ck_assert_uint_eq(a.runs[0], 1);
        ck_assert_uint_eq(a.runs[1], 0);
        tu_assert_committed(s, "a", 1, 1, 1); /* rolled back */
        axstm_store_free(s);
    }
}
END_TEST

static int read_a_retry(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[0]++;
    a->seen_rc[0] = axstm_txn_get_i64(tx, "a", &a->seen[0]);
    TU_TRY(axstm_txn_set_i64(tx, "a", 50));
    return AXSTM_RETRY;
}

static int read_b_retry(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[1]++;
    a->seen_rc[1] = axstm_txn_get_i64(tx, "b", &a->seen[1]);
    TU_TRY(axstm_txn_set_i64(tx, "b", 60));
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
    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "b", 2);
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
    TU_TRY(axstm_txn_set_i64(tx, "k1", 1));
    TU_TRY(axstm_txn_set_i64(tx, "s", 1));
    return AXSTM_RETRY;
}

static int n_f1_ok(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[0]++;
    a->seen_rc[0] = axstm_txn_get_i64(tx, "s", &a->seen[0]);
    TU_TRY(axstm_txn_set_i64(tx, "k1", 1));
    TU_TRY(axstm_txn_set_i64(tx, "s", 1));
    return AXSTM_OK;
}

static int n_f2(axstm_txn *tx, void *arg)
{
    struct alt *a = arg;
    a->runs[1]++;
    a->seen_rc[1] = axstm_txn_get_i64(tx, "s", &a->seen[1]);
    TU_TRY(axstm_txn_set_i64(tx, "k2", 1));
    TU_TRY(axstm_txn_set_i64(tx, "s", 2));
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
    TU_TRY(axstm_txn_set_i64(tx, "k4", 4));
    return axstm_or_else(tx, n_f2, n_f3, arg);
}

/* An inner or_else that succeeds (with writes) inside a branch that then
 * retries: the inner branch's writes go too. */
static int n_g1(axstm_txn *tx, void *arg)
{
    TU_TRY(axstm_or_else(tx, n_f1_ok, n_f2, arg));
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
    tu_put_i64(s, "s", 0);
    tu_put_i64(s, "k1", 0);
    tu_put_i64(s, "k2", 0);
    tu_put_i64(s, "k3", 0);
    tu_put_i64(s, "k4", 0);
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
    tu_assert_committed(s, "s", 1, 1, 0);
    tu_assert_committed(s, "k1", 1, 1, 0);
    tu_assert_committed(s, "k2", 1, 1, 0);
    tu_assert_committed(s, "k3", 2, 1, 1);
    if (k4)
        tu_assert_committed(s, "k4", 2, 1, 4);
    else
        tu_assert_committed(s, "k4", 1, 1, 0);
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
    TU_TRY(rc);
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
    TU_TRY(rc);
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
    ck_assert_msg(rc == AXSTM_OK, "waiting on the first branch's read: %s", axstm_strerror(rc));
    ck_assert_int_eq(a.seen[0], 5);
    ck_assert_msg(took >= 0.04, "returned after %.4f s: did not wait", took);
    ck_assert_uint_ge(a.runs[0], 2);
    ck_assert_msg(a.runs[0] <= 3, "first branch ran %u times: busy waiting?", a.runs[0]);
    ck_assert_uint_ge(tu_stats_ok(s).retries_waited, st.retries_waited + 1);
    tu_assert_committed(s, "took", 1, 1, 5);
    tu_assert_absent(s, "B"); /* waited on, never created */
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Suite                                                              */
/* ------------------------------------------------------------------ */

static Suite *or_else_suite(void)
{
    Suite *s = suite_create("or_else");
    TCase *tc;

    tc = tcase_create("or_else");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, first_retries_second_commits);
    tcase_add_test(tc, first_succeeds_second_never_runs);
    tcase_add_test(tc, first_code_is_returned_as_is);
    tcase_add_test(tc, both_retry_whole_transaction_waits);
    tcase_add_test(tc, nested_or_else_only_third_succeeds);
    tcase_add_test(tc, retried_first_branch_reads_are_waited_on);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(or_else_suite());
}
