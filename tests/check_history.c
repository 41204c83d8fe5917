/* SPDX-License-Identifier: MIT */
/*
 * check_history.c -- the history checker (tests/history/), and the store
 * held against it.
 *
 *   Checker  hand-made histories: a serial and a concurrent one that are
 *            correct must pass; each kind of anomaly (lost update, write
 *            skew, stale, dirty and never-written reads, real-time order,
 *            forked and gapped version orders) must be rejected for the
 *            right reason.  The same with deletes: keys deleted and
 *            created again (versions starting afresh) must pass; stale or
 *            dirty reads of an absent key, two creations over one delete,
 *            a value read where a delete was (and the other way round),
 *            wrong versions after a delete and a final state that
 *            disagrees must be rejected.  Also windows, and a large
 *            history in bounded time.
 *   Store    short real runs, 4 threads mixing using/commit, usevar/commit,
 *            snapshots and axstm_atomically, deleting keys (value_delete,
 *            txn_delete) and creating them again, on 4 keys (contention)
 *            and on 1024 keys; every history must check with 0
 *            violations.
 *            $AXSTM_HISTORY_SECONDS sets the seconds per run (default 0.3).
 */
#include <inttypes.h>

#include "history.h"
#include "redisutil.h"
#include "testutil.h"

enum { X, Y, Z };

/* ------------------------------------------------------------------ */
/* Building histories by hand                                         */
/* ------------------------------------------------------------------ */

static hist_recorder *new_history(unsigned threads, uint32_t keys)
{
    hist_recorder *r = hist_recorder_new(threads, keys, 64, 512);
    ck_assert_ptr_nonnull(r);
    return r;
}

static hist_log *lg(hist_recorder *r, unsigned thread)
{
    hist_log *l = hist_recorder_log(r, thread);
    ck_assert_ptr_nonnull(l);
    return l;
}

static uint64_t begin(hist_recorder *r, unsigned thread, enum hist_kind kind, int64_t start)
{
    ck_assert(hist_log_room(lg(r, thread), 16));
    return hist_begin(lg(r, thread), kind, start);
}

/* A read that saw wid (version if known); the bytes' "overwrote" word is
 * not checked (HIST_PREV_UNKNOWN). */
static void rd(hist_recorder *r, unsigned thread, uint32_t key, uint64_t wid, uint64_t version)
{
    hist_read(lg(r, thread), key, wid, HIST_PREV_UNKNOWN, version);
}

static void wr(hist_recorder *r, unsigned thread, uint32_t key, uint64_t prev, uint64_t version)
{
    hist_write(lg(r, thread), key, prev, version);
}

/* Read-modify-write: saw prev, wrote over it. */
static void rmw(hist_recorder *r, unsigned thread, uint32_t key, uint64_t prev,
                uint64_t read_version, uint64_t new_version)
{
    rd(r, thread, key, prev, read_version);
    wr(r, thread, key, prev, new_version);
}

static void end(hist_recorder *r, unsigned thread, enum hist_outcome outcome, int64_t t)
{
    hist_end(lg(r, thread), outcome, t);
}

#define NV HIST_NO_VERSION

/* A read that found key absent, left by the delete `deleter` (0: never
 * written). */
static void rd_absent(hist_recorder *r, unsigned thread, uint32_t key, uint64_t deleter,
                      uint64_t version)
{
    hist_read_absent(lg(r, thread), key, deleter, version);
}

static void del(hist_recorder *r, unsigned thread, uint32_t key, uint64_t prev, uint64_t version)
{
    hist_delete(lg(r, thread), key, prev, version);
}

static void expect_ok(hist_recorder *r)
{
    hist_report rep;
    hist_report_init(&rep);
    long v = hist_check(r, &rep);
    if (v != 0)
        hist_report_print(&rep, stderr);
    ck_assert_int_eq(v, 0);
}

/* The checker rejects the history, for (at least) the reason `want`. */
static void expect_violation(hist_recorder *r, enum hist_violation want)
{
    hist_report rep;
    hist_report_init(&rep);
    long v = hist_check(r, &rep);
    ck_assert_int_gt(v, 0);
    if (!(rep.kinds & (1u << want))) {
        hist_report_print(&rep, stderr);
        ck_abort_msg("expected a %s", hist_violation_name(want));
    }
    /* The description is the checker's product too: show one per kind. */
    printf("rejected as expected (%s):\n%s", hist_violation_name(want), rep.text);
}

/* ------------------------------------------------------------------ */
/* Checker: correct histories                                         */
/* ------------------------------------------------------------------ */

START_TEST(serial_history_passes)
{
    hist_recorder *r = new_history(2, 2);
    /* T0: using x,y (Axon: versions known) from nothing to version 1. */
    uint64_t t0 = begin(r, 0, HIST_USING, 10);
    rmw(r, 0, X, 0, 0, 1);
    rmw(r, 0, Y, 0, 0, 1);
    end(r, 0, HIST_COMMITTED, 20);
    /* An attempt that overlapped T0's successor and lost. */
    begin(r, 1, HIST_USEVAR, 25);
    rmw(r, 1, X, t0, 1, NV);
    end(r, 1, HIST_ABORTED, 45);
    uint64_t t1 = begin(r, 1, HIST_USING, 30);
    rmw(r, 1, X, t0, 1, 2);
    rmw(r, 1, Y, t0, 1, 2);
    end(r, 1, HIST_COMMITTED, 40);
    begin(r, 0, HIST_ATOMIC_RO, 50);
    rd(r, 0, X, t1, NV);
    rd(r, 0, Y, t1, NV);
    end(r, 0, HIST_COMMITTED, 60);
    uint64_t t3 = begin(r, 1, HIST_ATOMIC, 70);
    rmw(r, 1, X, t1, NV, NV);
    end(r, 1, HIST_COMMITTED, 80);
    begin(r, 0, HIST_SNAPSHOT, 90);
    rd(r, 0, X, t3, 3); /* version 3: the atomically write counted */
    rd(r, 0, Y, t1, 2);
    end(r, 0, HIST_COMMITTED, 100);
    expect_ok(r);
    hist_recorder_free(r);
}
END_TEST

START_TEST(concurrent_history_passes)
{
    hist_recorder *r = new_history(3, 2);
    uint64_t t1 = begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 100);
    uint64_t t2 = begin(r, 1, HIST_ATOMIC, 10);
    rmw(r, 1, Y, 0, NV, NV);
    end(r, 1, HIST_COMMITTED, 50);
    /* Overlaps both: may see T1's x and the old y (order T1, T3, T2). */
    begin(r, 2, HIST_ATOMIC_RO, 20);
    rd(r, 2, X, t1, NV);
    rd(r, 2, Y, 0, NV);
    end(r, 2, HIST_COMMITTED, 120);
    /* An aborted attempt that saw a consistent state (after T1 and T2). */
    begin(r, 1, HIST_ATOMIC, 60);
    rd(r, 1, X, t1, NV);
    rd(r, 1, Y, t2, NV);
    wr(r, 1, Y, t2, NV);
    end(r, 1, HIST_ABORTED, 70);
    /* An Axon handle committed, then changed and committed again without a
     * new checkout: both attempts began with the checkout at 130. */
    uint64_t t5 = begin(r, 1, HIST_USEVAR, 130);
    rmw(r, 1, X, t1, 1, 2);
    end(r, 1, HIST_COMMITTED, 140);
    begin(r, 1, HIST_USEVAR, 130);
    rmw(r, 1, X, t5, 2, 3);
    end(r, 1, HIST_COMMITTED, 150);
    expect_ok(r);
    hist_recorder_free(r);
}
END_TEST

/* A window's last writes become the next window's initial state. */
START_TEST(windows_carry_state)
{
    hist_recorder *r = new_history(1, 1);
    uint64_t t1 = begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 10);
    uint64_t t2 = begin(r, 0, HIST_ATOMIC, 20);
    rmw(r, 0, X, t1, NV, NV);
    end(r, 0, HIST_COMMITTED, 30);
    expect_ok(r);
    hist_report rep;
    hist_report_init(&rep);
    ck_assert(hist_verify_final(r, X, t2, 2, &rep));
    ck_assert(!hist_verify_final(r, X, t1, 1, &rep));
    ck_assert(rep.kinds & (1u << HIST_V_FINAL));

    hist_recorder_next_window(r);
    begin(r, 0, HIST_USEVAR, 40);
    rmw(r, 0, X, t2, 2, 3);
    end(r, 0, HIST_COMMITTED, 50);
    expect_ok(r);

    /* A read of a value from an earlier window that is not the latest. */
    hist_recorder_next_window(r);
    begin(r, 0, HIST_ATOMIC_RO, 60);
    rd(r, 0, X, t1, NV);
    end(r, 0, HIST_COMMITTED, 70);
    expect_violation(r, HIST_V_NEVER_WRITTEN);
    hist_recorder_free(r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Checker: anomalies                                                 */
/* ------------------------------------------------------------------ */

START_TEST(lost_update_rejected)
{
    hist_recorder *r = new_history(2, 1);
    begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 10);
    begin(r, 1, HIST_ATOMIC, 5);
    rmw(r, 1, X, 0, NV, NV);
    end(r, 1, HIST_COMMITTED, 15);
    expect_violation(r, HIST_V_LOST_UPDATE);
    hist_recorder_free(r);
}
END_TEST

/* x + y >= 0 kept by each alone: both read x and y, one lowers x, the
 * other y.  Each read what the other overwrote: rw both ways. */
START_TEST(write_skew_rejected)
{
    hist_recorder *r = new_history(2, 2);
    begin(r, 0, HIST_ATOMIC, 0);
    rd(r, 0, X, 0, NV);
    rd(r, 0, Y, 0, NV);
    wr(r, 0, X, 0, NV);
    end(r, 0, HIST_COMMITTED, 10);
    begin(r, 1, HIST_ATOMIC, 0);
    rd(r, 1, X, 0, NV);
    rd(r, 1, Y, 0, NV);
    wr(r, 1, Y, 0, NV);
    end(r, 1, HIST_COMMITTED, 10);
    expect_violation(r, HIST_V_CYCLE);
    hist_recorder_free(r);
}
END_TEST

START_TEST(stale_read_rejected)
{
    hist_recorder *r = new_history(2, 1);
    begin(r, 0, HIST_USEVAR, 0);
    rmw(r, 0, X, 0, 0, 1);
    end(r, 0, HIST_COMMITTED, 10);
    begin(r, 1, HIST_ATOMIC_RO, 20); /* after T1 ended, sees the old x */
    rd(r, 1, X, 0, NV);
    end(r, 1, HIST_COMMITTED, 30);
    expect_violation(r, HIST_V_STALE_READ);
    hist_recorder_free(r);
}
END_TEST

/* With hist_recorder_aborts_any_time, an aborted attempt may read what was
 * replaced before it began; a committed transaction still may not. */
START_TEST(stale_read_of_an_aborted_attempt_allowed_only_when_asked)
{
    for (int asked = 0; asked < 2; asked++) {
        hist_recorder *r = new_history(2, 1);
        if (asked)
            hist_recorder_aborts_any_time(r);
        uint64_t t1 = begin(r, 0, HIST_USEVAR, 0);
        rmw(r, 0, X, 0, 0, 1);
        end(r, 0, HIST_COMMITTED, 10);
        begin(r, 1, HIST_ATOMIC, 20); /* after T1 ended, sees the old x */
        rd(r, 1, X, 0, NV);
        end(r, 1, HIST_ABORTED, 30);
        begin(r, 1, HIST_ATOMIC, 40); /* and again, the current one */
        rmw(r, 1, X, t1, NV, NV);
        end(r, 1, HIST_COMMITTED, 50);
        if (asked)
            expect_ok(r);
        else
            expect_violation(r, HIST_V_STALE_READ);
        hist_recorder_free(r);
    }
    hist_recorder *r = new_history(2, 1);
    hist_recorder_aborts_any_time(r);
    begin(r, 0, HIST_USEVAR, 0);
    rmw(r, 0, X, 0, 0, 1);
    end(r, 0, HIST_COMMITTED, 10);
    begin(r, 1, HIST_ATOMIC_RO, 20);
    rd(r, 1, X, 0, NV);
    end(r, 1, HIST_COMMITTED, 30);
    expect_violation(r, HIST_V_STALE_READ);
    hist_recorder_free(r);
}
END_TEST

START_TEST(dirty_read_rejected)
{
    hist_recorder *r = new_history(2, 1);
    uint64_t t1 = begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    end(r, 0, HIST_ABORTED, 10);
    begin(r, 1, HIST_ATOMIC_RO, 20);
    rd(r, 1, X, t1, NV);
    end(r, 1, HIST_COMMITTED, 30);
    expect_violation(r, HIST_V_DIRTY_READ);
    hist_recorder_free(r);
}
END_TEST

START_TEST(never_written_rejected)
{
    hist_recorder *r = new_history(2, 3);
    uint64_t t1 = begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, Z, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 10);
    begin(r, 1, HIST_ATOMIC_RO, 20);
    /* A txid nobody has: thread 0, sequence 999. */
    rd(r, 1, X, (uint64_t)1 << HIST_SEQ_BITS | 999, NV);
    /* Bytes that are no value of this format. */
    uint64_t prev;
    uint64_t w = hist_value_decode("not sixteen", 11, Y, &prev);
    ck_assert_uint_eq(w, HIST_WID_GARBAGE);
    rd(r, 1, Y, w, NV);
    /* T1's txid, but bytes that say it overwrote something else. */
    hist_read(lg(r, 1), Z, t1, t1, NV);
    end(r, 1, HIST_COMMITTED, 30);
    hist_report rep;
    hist_report_init(&rep);
    ck_assert_int_eq(hist_check(r, &rep), 3);
    ck_assert_uint_eq(rep.count[HIST_V_NEVER_WRITTEN], 3);
    printf("rejected as expected:\n%s", rep.text);
    hist_recorder_free(r);

    /* A value written for one key, read from another. */
    unsigned char buf[HIST_VALUE_SIZE];
    hist_value_encode(buf, t1, Z, 0);
    ck_assert_uint_eq(hist_value_decode(buf, sizeof buf, Z, &prev), t1);
    ck_assert_uint_eq(hist_value_decode(buf, sizeof buf, X, &prev), HIST_WID_GARBAGE);
}
END_TEST

/*
 * Serializable (T2, T3, T1) but not in real time: T1 ended before T2
 * began, yet T3, which saw T2's y, did not see T1's x.  No read is stale
 * by itself (T3 began before T1 ended).
 */
START_TEST(realtime_violation_rejected)
{
    hist_recorder *r = new_history(3, 2);
    begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 10);
    uint64_t t2 = begin(r, 1, HIST_ATOMIC, 20);
    rmw(r, 1, Y, 0, NV, NV);
    end(r, 1, HIST_COMMITTED, 30);
    begin(r, 2, HIST_ATOMIC_RO, 0);
    rd(r, 2, Y, t2, NV);
    rd(r, 2, X, 0, NV);
    end(r, 2, HIST_COMMITTED, 40);
    hist_report rep;
    hist_report_init(&rep);
    ck_assert_int_gt(hist_check(r, &rep), 0);
    ck_assert_msg(rep.kinds == 1u << HIST_V_REALTIME, "%s", rep.text);
    printf("rejected as expected:\n%s", rep.text);
    hist_recorder_free(r);
}
END_TEST

/* Two blind writes (placed by version) both claim version 1. */
START_TEST(version_fork_rejected)
{
    hist_recorder *r = new_history(2, 1);
    begin(r, 0, HIST_USEVAR, 0);
    wr(r, 0, X, HIST_PREV_UNKNOWN, 1);
    end(r, 0, HIST_COMMITTED, 10);
    begin(r, 1, HIST_USEVAR, 5);
    wr(r, 1, X, HIST_PREV_UNKNOWN, 1);
    end(r, 1, HIST_COMMITTED, 15);
    expect_violation(r, HIST_V_FORK);
    hist_recorder_free(r);
}
END_TEST

START_TEST(version_gap_rejected)
{
    hist_recorder *r = new_history(1, 1);
    uint64_t t1 = begin(r, 0, HIST_USEVAR, 0);
    rmw(r, 0, X, 0, 0, 1);
    end(r, 0, HIST_COMMITTED, 10);
    begin(r, 0, HIST_USEVAR, 20);
    rmw(r, 0, X, t1, 1, 3); /* version 2 went missing */
    end(r, 0, HIST_COMMITTED, 30);
    expect_violation(r, HIST_V_GAP);
    hist_recorder_free(r);
}
END_TEST

/* A cycle of three through ww, wr and rw edges on three keys. */
START_TEST(long_cycle_rejected)
{
    hist_recorder *r = new_history(3, 3);
    /* T1 writes x; T2 reads x=T1, writes y; T3 reads y=T2, and reads z
     * before T1's write of z... which T1 made after T3's read: T3 -> T1. */
    uint64_t t1 = begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    rmw(r, 0, Z, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 100);
    uint64_t t2 = begin(r, 1, HIST_ATOMIC, 0);
    rd(r, 1, X, t1, NV);
    rmw(r, 1, Y, 0, NV, NV);
    end(r, 1, HIST_COMMITTED, 100);
    begin(r, 2, HIST_ATOMIC_RO, 0);
    rd(r, 2, Y, t2, NV);
    rd(r, 2, Z, 0, NV);
    end(r, 2, HIST_COMMITTED, 100);
    expect_violation(r, HIST_V_CYCLE);
    hist_recorder_free(r);
}
END_TEST

/*
 * A large history (threads x 50000 transactions on 64 keys, overlapping
 * in time) checks in bounded work, and a single bad read among them is
 * still found.  The bound is on the graph the checker builds, not on the
 * seconds it takes, which depend on the machine, its load and any
 * sanitizer (a 30 s limit failed under gcc's TSan in a parallel `make
 * check` on two busy cores): they are printed, not asserted.
 */
START_TEST(large_history_is_checked_fast)
{
    enum { THREADS = 4, PER_THREAD = 50000, KEYS = 64 };
    hist_recorder *r = hist_recorder_new(THREADS, KEYS, PER_THREAD, 4 * PER_THREAD);
    ck_assert_ptr_nonnull(r);
    uint64_t last[KEYS] = {0}, ver[KEYS] = {0}, seed = 12345;
    /* One global serial order, handed out round robin to the threads; each
     * transaction overlaps its neighbours (start i*10, end i*10 + 25). */
    for (int64_t i = 0; i < (int64_t)THREADS * PER_THREAD; i++) {
        unsigned t = (unsigned)(i % THREADS);
        uint32_t k = (uint32_t)(tu_rand(&seed) % KEYS), k2 = (k + 1) % KEYS;
        hist_log *l = hist_recorder_log(r, t);
        uint64_t id = hist_begin(l, HIST_USING, i * 10);
        hist_read(l, k2, last[k2], HIST_PREV_UNKNOWN, ver[k2]);
        hist_read(l, k, last[k], HIST_PREV_UNKNOWN, ver[k]);
        hist_write(l, k, last[k], ver[k] + 1);
        hist_end(l, HIST_COMMITTED, i * 10 + 25);
        last[k] = id;
        ver[k]++;
    }
    hist_report rep;
    hist_report_init(&rep);
    double t0 = tu_now();
    long v = hist_check(r, &rep);
    double took = tu_now() - t0;
    if (v != 0)
        hist_report_print(&rep, stderr);
    ck_assert_int_eq(v, 0);
    printf("checked %d transactions in %.3f s, %llu edges\n", THREADS * PER_THREAD, took,
           (unsigned long long)rep.edges);
    /* Linear, as history.c promises: per read one wr and one rw edge, per
     * write one ww edge, per transaction three real-time edges (where all
     * real-time pairs would be quadratic). */
    ck_assert_uint_eq(rep.txns, (uint64_t)THREADS * PER_THREAD);
    ck_assert_uint_le(rep.edges, 2 * rep.reads + rep.writes + 3 * rep.txns);

    /* Now one more that reads a long-replaced value of x. */
    hist_recorder_next_window(r);
    hist_log *l = hist_recorder_log(r, 0);
    hist_begin(l, HIST_ATOMIC_RO, (int64_t)THREADS * PER_THREAD * 10 + 100);
    hist_read(l, X, 0, HIST_PREV_UNKNOWN, HIST_NO_VERSION);
    hist_end(l, HIST_COMMITTED, (int64_t)THREADS * PER_THREAD * 10 + 110);
    expect_violation(r, HIST_V_NEVER_WRITTEN);
    hist_recorder_free(r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Checker: deletes                                                   */
/* ------------------------------------------------------------------ */

/*
 * x never written, created, deleted (by a handle: version 2), found absent,
 * created again at version 1 (usevar), deleted in a transaction, created
 * again in a transaction: versions start afresh after each delete, and no
 * fork is seen in the repeated version numbers.  y is read along the way.
 */
START_TEST(delete_history_passes)
{
    hist_recorder *r = new_history(2, 2);
    begin(r, 0, HIST_ATOMIC_RO, 0);
    rd_absent(r, 0, X, 0, NV); /* never written */
    end(r, 0, HIST_COMMITTED, 5);
    uint64_t t1 = begin(r, 0, HIST_USING, 10);
    rd_absent(r, 0, X, 0, 0);
    wr(r, 0, X, 0, 1);
    rmw(r, 0, Y, 0, 0, 1);
    end(r, 0, HIST_COMMITTED, 20);
    uint64_t d2 = begin(r, 1, HIST_USING, 30);
    rd(r, 1, X, t1, 1);
    del(r, 1, X, t1, 2);
    end(r, 1, HIST_COMMITTED, 40);
    /* A reader overlapping the delete may still see the value ... */
    begin(r, 0, HIST_ATOMIC_RO, 35);
    rd(r, 0, X, t1, NV);
    end(r, 0, HIST_COMMITTED, 45);
    /* ... one after it sees x absent, at version 0. */
    begin(r, 0, HIST_SNAPSHOT, 50);
    rd_absent(r, 0, X, d2, 0);
    rd(r, 0, Y, t1, 1);
    end(r, 0, HIST_COMMITTED, 55);
    /* An attempt to create it again that lost to the one below. */
    begin(r, 0, HIST_ATOMIC, 56);
    rd_absent(r, 0, X, d2, NV);
    wr(r, 0, X, d2, NV);
    end(r, 0, HIST_ABORTED, 70);
    uint64_t t4 = begin(r, 1, HIST_USEVAR, 60);
    rd_absent(r, 1, X, d2, 0);
    wr(r, 1, X, d2, 1);
    end(r, 1, HIST_COMMITTED, 65);
    uint64_t d5 = begin(r, 1, HIST_ATOMIC, 80);
    rd(r, 1, X, t4, NV);
    del(r, 1, X, t4, NV);
    end(r, 1, HIST_COMMITTED, 90);
    uint64_t t6 = begin(r, 0, HIST_ATOMIC, 100);
    rd_absent(r, 0, X, d5, NV);
    wr(r, 0, X, d5, NV);
    end(r, 0, HIST_COMMITTED, 110);
    begin(r, 1, HIST_USEVAR, 120);
    rd(r, 1, X, t6, 1);
    wr(r, 1, X, t6, 2);
    end(r, 1, HIST_COMMITTED, 130);
    expect_ok(r);
    hist_recorder_free(r);
}
END_TEST

/* A key absent at the end of a window is absent at the start of the next,
 * and the store's final state is held against it. */
START_TEST(windows_carry_deletes)
{
    hist_recorder *r = new_history(1, 2);
    uint64_t t1 = begin(r, 0, HIST_USEVAR, 0);
    rmw(r, 0, X, 0, 0, 1);
    end(r, 0, HIST_COMMITTED, 10);
    uint64_t d2 = begin(r, 0, HIST_USING, 20);
    rd(r, 0, X, t1, 1);
    del(r, 0, X, t1, 2);
    end(r, 0, HIST_COMMITTED, 30);
    expect_ok(r);
    hist_report rep;
    hist_report_init(&rep);
    ck_assert(hist_verify_final_absent(r, X, d2, 0, &rep));
    ck_assert(hist_verify_final(r, Y, 0, 0, &rep)); /* never written */
    ck_assert_uint_eq(rep.violations, 0);
    /* The store still holding the value, or absent after another delete,
     * or at another version, disagrees. */
    ck_assert(!hist_verify_final(r, X, t1, 1, &rep));
    ck_assert(!hist_verify_final_absent(r, X, t1, 0, &rep));
    ck_assert(!hist_verify_final_absent(r, X, d2, 2, &rep));
    ck_assert(!hist_verify_final(r, X, 0, 0, &rep));
    ck_assert_uint_eq(rep.count[HIST_V_FINAL], 4);
    printf("rejected as expected:\n%s", rep.text);

    hist_recorder_next_window(r);
    begin(r, 0, HIST_ATOMIC_RO, 40);
    rd_absent(r, 0, X, d2, NV);
    end(r, 0, HIST_COMMITTED, 50);
    uint64_t t3 = begin(r, 0, HIST_USEVAR, 60);
    rd_absent(r, 0, X, d2, 0);
    wr(r, 0, X, d2, 1);
    end(r, 0, HIST_COMMITTED, 70);
    expect_ok(r);
    hist_report_init(&rep);
    ck_assert(hist_verify_final(r, X, t3, 1, &rep));

    /* Absent at the start: "never written" is not what it was. */
    hist_recorder_next_window(r);
    hist_recorder_set_initial_absent(r, X, d2);
    begin(r, 0, HIST_ATOMIC_RO, 80);
    rd_absent(r, 0, X, 0, NV);
    end(r, 0, HIST_COMMITTED, 90);
    expect_violation(r, HIST_V_NEVER_WRITTEN);
    hist_recorder_free(r);
}
END_TEST

/* A read of the absent state a delete left, after a write had created the
 * key again before the reader started. */
START_TEST(stale_absent_read_rejected)
{
    hist_recorder *r = new_history(2, 1);
    uint64_t t1 = begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 10);
    uint64_t d2 = begin(r, 0, HIST_ATOMIC, 20);
    rd(r, 0, X, t1, NV);
    del(r, 0, X, t1, NV);
    end(r, 0, HIST_COMMITTED, 30);
    begin(r, 0, HIST_ATOMIC, 40);
    rd_absent(r, 0, X, d2, NV);
    wr(r, 0, X, d2, NV);
    end(r, 0, HIST_COMMITTED, 50);
    begin(r, 1, HIST_ATOMIC_RO, 60);
    rd_absent(r, 1, X, d2, NV);
    end(r, 1, HIST_COMMITTED, 70);
    expect_violation(r, HIST_V_STALE_READ);
    hist_recorder_free(r);
}
END_TEST

/* A value read after the delete of it had ended. */
START_TEST(read_after_delete_rejected)
{
    hist_recorder *r = new_history(2, 1);
    uint64_t t1 = begin(r, 0, HIST_USEVAR, 0);
    rmw(r, 0, X, 0, 0, 1);
    end(r, 0, HIST_COMMITTED, 10);
    begin(r, 0, HIST_USEVAR, 20);
    rd(r, 0, X, t1, 1);
    del(r, 0, X, t1, 2);
    end(r, 0, HIST_COMMITTED, 30);
    begin(r, 1, HIST_SNAPSHOT, 40);
    rd(r, 1, X, t1, 1);
    end(r, 1, HIST_COMMITTED, 50);
    expect_violation(r, HIST_V_STALE_READ);
    hist_recorder_free(r);
}
END_TEST

/* Two transactions both created the key again over the same delete. */
START_TEST(two_creations_over_one_delete_rejected)
{
    hist_recorder *r = new_history(3, 1);
    uint64_t t1 = begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 10);
    uint64_t d2 = begin(r, 0, HIST_ATOMIC, 20);
    rd(r, 0, X, t1, NV);
    del(r, 0, X, t1, NV);
    end(r, 0, HIST_COMMITTED, 30);
    begin(r, 1, HIST_USEVAR, 40);
    rd_absent(r, 1, X, d2, 0);
    wr(r, 1, X, d2, 1);
    end(r, 1, HIST_COMMITTED, 50);
    begin(r, 2, HIST_ATOMIC, 40);
    rd_absent(r, 2, X, d2, NV);
    wr(r, 2, X, d2, NV);
    end(r, 2, HIST_COMMITTED, 55);
    expect_violation(r, HIST_V_LOST_UPDATE);
    hist_recorder_free(r);
}
END_TEST

/* Absent where a value was written, a value where a delete was: neither
 * was ever the key's state. */
START_TEST(absent_and_value_mixed_up_rejected)
{
    hist_recorder *r = new_history(2, 2);
    uint64_t t1 = begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    rmw(r, 0, Y, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 10);
    uint64_t d2 = begin(r, 0, HIST_ATOMIC, 20);
    rd(r, 0, Y, t1, NV);
    del(r, 0, Y, t1, NV);
    end(r, 0, HIST_COMMITTED, 30);
    begin(r, 1, HIST_ATOMIC_RO, 40);
    rd_absent(r, 1, X, t1, NV); /* T1 wrote x a value */
    rd(r, 1, Y, d2, NV);        /* D2 deleted y */
    end(r, 1, HIST_COMMITTED, 50);
    hist_report rep;
    hist_report_init(&rep);
    ck_assert_int_eq(hist_check(r, &rep), 2);
    ck_assert_uint_eq(rep.count[HIST_V_NEVER_WRITTEN], 2);
    printf("rejected as expected:\n%s", rep.text);
    hist_recorder_free(r);
}
END_TEST

/* The absence left by a delete that rolled back. */
START_TEST(dirty_absent_read_rejected)
{
    hist_recorder *r = new_history(2, 1);
    uint64_t t1 = begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 10);
    uint64_t d2 = begin(r, 0, HIST_ATOMIC, 20);
    rd(r, 0, X, t1, NV);
    del(r, 0, X, t1, NV);
    end(r, 0, HIST_ABORTED, 30);
    begin(r, 1, HIST_ATOMIC_RO, 25);
    rd_absent(r, 1, X, d2, NV);
    end(r, 1, HIST_COMMITTED, 40);
    expect_violation(r, HIST_V_DIRTY_READ);
    hist_recorder_free(r);
}
END_TEST

/* Versions after a delete: the key created again must be at version 1,
 * and its absent state read as version 0. */
START_TEST(versions_after_delete_rejected)
{
    hist_recorder *r = new_history(2, 1);
    uint64_t t1 = begin(r, 0, HIST_USEVAR, 0);
    rmw(r, 0, X, 0, 0, 1);
    end(r, 0, HIST_COMMITTED, 10);
    uint64_t d2 = begin(r, 0, HIST_USEVAR, 20);
    rd(r, 0, X, t1, 1);
    del(r, 0, X, t1, 2);
    end(r, 0, HIST_COMMITTED, 30);
    begin(r, 0, HIST_USEVAR, 40);
    rd_absent(r, 0, X, d2, 2); /* the deleted key's old version */
    wr(r, 0, X, d2, 3);        /* counting on from it */
    end(r, 0, HIST_COMMITTED, 50);
    hist_report rep;
    hist_report_init(&rep);
    ck_assert_int_eq(hist_check(r, &rep), 2);
    ck_assert_uint_eq(rep.count[HIST_V_GAP], 2);
    printf("rejected as expected:\n%s", rep.text);
    hist_recorder_free(r);
}
END_TEST

/* Write skew through deletes: each reads both keys and deletes one, so
 * each missed the other's delete (rw both ways). */
START_TEST(delete_skew_rejected)
{
    hist_recorder *r = new_history(3, 2);
    uint64_t t1 = begin(r, 0, HIST_ATOMIC, 0);
    rmw(r, 0, X, 0, NV, NV);
    rmw(r, 0, Y, 0, NV, NV);
    end(r, 0, HIST_COMMITTED, 10);
    begin(r, 1, HIST_ATOMIC, 20);
    rd(r, 1, X, t1, NV);
    rd(r, 1, Y, t1, NV);
    del(r, 1, X, t1, NV);
    end(r, 1, HIST_COMMITTED, 30);
    begin(r, 2, HIST_ATOMIC, 20);
    rd(r, 2, X, t1, NV);
    rd(r, 2, Y, t1, NV);
    del(r, 2, Y, t1, NV);
    end(r, 2, HIST_COMMITTED, 30);
    expect_violation(r, HIST_V_CYCLE);
    hist_recorder_free(r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Store: real runs                                                   */
/* ------------------------------------------------------------------ */

static double history_seconds(void)
{
    return tu_env_number("AXSTM_HISTORY_SECONDS", 0.3, 86400.0);
}

/* The run recorded enough to prove something: the whole mix ran. */
static bool mix_complete(const hist_report *rep)
{
    if (rep->txns < 1000 || rep->deletes == 0 || rep->absent_reads == 0)
        return false;
    for (int k = 0; k < HIST_NKINDS; k++)
        if (rep->by_kind[k] == 0)
            return false;
    return true;
}

/* A run of the mixed workload on a store: a new in-process one (address
 * NULL), or the one at address, with worker processes instead of threads
 * when `processes` is set. */
static void run_store_at(uint32_t nkeys, const char *address, bool processes, bool aborts_any_time)
{
    struct hist_run_config cfg = {processes ? 3 : 4, nkeys,     history_seconds(), 0, NULL,
                                  address,           processes, aborts_any_time};
    static struct hist_run_result res;
    double give_up = tu_now() + 60.0; /* a guard against a hang only */
    long v;
    /* On a slow or loaded machine (valgrind runs this ~50 times slower) a
     * short run records too little to prove anything: run again, longer
     * (up to 8 s a run), until one has recorded the whole mix. */
    char fresh[256];
    for (int attempt = 0;; attempt++) {
        /* A run starts from a store with no keys: on a server, each run
         * gets a prefix of its own. */
        if (address != NULL) {
            snprintf(fresh, sizeof fresh, "%s%cprefix=history%d:", address,
                     strchr(address, '?') != NULL ? '&' : '?', attempt);
            cfg.address = fresh;
        }
        v = hist_run(&cfg, &res);
        if (v != 0 || mix_complete(&res.report) || tu_now() > give_up)
            break;
        cfg.seconds = cfg.seconds * 4 < 8.0 ? cfg.seconds * 4 : 8.0;
    }
    printf("Store%s, %u %s, %" PRIu32 " keys, %.2f s (+%.2f s checking, %" PRIu64
           " windows, %" PRIu64 " busy retries):\n",
           address != NULL ? " in Redis" : "", cfg.threads, processes ? "processes" : "threads",
           nkeys, res.seconds, res.check_seconds, res.windows, res.busy);
    hist_report_print(&res.report, stdout);
    fflush(stdout);
    ck_assert_msg(v >= 0, "the run failed: %s", res.report.text);
    ck_assert_msg(v == 0, "%ld violations; first:\n%s", v, res.report.text);
    /* The mix ran: every kind committed something. */
    ck_assert_uint_ge(res.report.txns, 1000);
    for (int k = 0; k < HIST_NKINDS; k++)
        ck_assert_msg(res.report.by_kind[k] > 0, "no %s committed",
                      hist_kind_name((enum hist_kind)k));
    /* Keys were deleted, found absent, and created again. */
    ck_assert_uint_gt(res.report.deletes, 0);
    ck_assert_uint_gt(res.report.absent_reads, 0);
}

START_TEST(store_few_keys_is_strictly_serializable)
{
    run_store_at(4, NULL, false, false);
}
END_TEST

START_TEST(store_many_keys_is_strictly_serializable)
{
    run_store_at(1024, NULL, false, false);
}
END_TEST

/* Three processes on one store kept in Redis, each with a store of its
 * own opened from the address plus options (a string starting with '&',
 * or ""): the history of all of them together must pass the checker.
 * Skipped without redis-server, or in a build without hiredis. */
static void run_redis_processes(const char *options, bool aborts_any_time)
{
    axstm_store *probe = NULL;
    if (axstm_store_open("redis+unix:///nonexistent/axstm-probe", &probe) == AXSTM_EINVAL)
        return; /* built without hiredis */
    struct tu_redis server;
    if (!tu_redis_start(&server))
        return; /* no redis-server on this machine */
    char address[sizeof server.address + 32];
    snprintf(address, sizeof address, "%s%s", server.address, options);
    run_store_at(4, address, true, aborts_any_time);
    tu_redis_stop(&server);
}

/* Strictly serializable (CLOCK_MONOTONIC is one clock for the machine, so
 * real-time order holds across processes too), aborted attempts included. */
START_TEST(store_in_redis_from_processes_is_strictly_serializable)
{
    run_redis_processes("", false);
}
END_TEST

/* The same with first_read=cache: committed transactions strictly
 * serializable still, aborted attempts consistent with a serial order. */
START_TEST(store_in_redis_reading_first_from_cache_is_serializable)
{
    run_redis_processes("&first_read=cache", true);
}
END_TEST

static Suite *history_suite(void)
{
    Suite *s = suite_create("history");
    TCase *tc = tcase_create("Checker");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, serial_history_passes);
    tcase_add_test(tc, concurrent_history_passes);
    tcase_add_test(tc, windows_carry_state);
    tcase_add_test(tc, lost_update_rejected);
    tcase_add_test(tc, write_skew_rejected);
    tcase_add_test(tc, stale_read_rejected);
    tcase_add_test(tc, stale_read_of_an_aborted_attempt_allowed_only_when_asked);
    tcase_add_test(tc, dirty_read_rejected);
    tcase_add_test(tc, never_written_rejected);
    tcase_add_test(tc, realtime_violation_rejected);
    tcase_add_test(tc, version_fork_rejected);
    tcase_add_test(tc, version_gap_rejected);
    tcase_add_test(tc, long_cycle_rejected);
    tcase_add_test(tc, large_history_is_checked_fast);
    suite_add_tcase(s, tc);

    tc = tcase_create("Deletes");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, delete_history_passes);
    tcase_add_test(tc, windows_carry_deletes);
    tcase_add_test(tc, stale_absent_read_rejected);
    tcase_add_test(tc, read_after_delete_rejected);
    tcase_add_test(tc, two_creations_over_one_delete_rejected);
    tcase_add_test(tc, absent_and_value_mixed_up_rejected);
    tcase_add_test(tc, dirty_absent_read_rejected);
    tcase_add_test(tc, versions_after_delete_rejected);
    tcase_add_test(tc, delete_skew_rejected);
    suite_add_tcase(s, tc);

    tc = tcase_create("Store");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, store_few_keys_is_strictly_serializable);
    tcase_add_test(tc, store_many_keys_is_strictly_serializable);
    tcase_add_test(tc, store_in_redis_from_processes_is_strictly_serializable);
    tcase_add_test(tc, store_in_redis_reading_first_from_cache_is_serializable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(history_suite());
}
