/* SPDX-License-Identifier: MIT */
/*
 * check_delete.c -- deleting keys (axstm_value_delete, axstm_txn_delete),
 * and what transactions, watches and foreach leave behind.
 *
 *   Handles        a delete is a change of the private copy, published by
 *                  the next commit with everything else it writes; handles
 *                  checked out before it get AXSTM_CONCURRENT_UPDATE, also
 *                  once the name has been created again and committed up to
 *                  the same version (no ABA), however often, with the
 *                  entry's memory reused meanwhile.
 *   Watches, retry a delete is a commit of the key: watches fire, waiting
 *                  transactions wake; a watch follows a name through
 *                  deletes and re-creations; waiting on a missing key wakes
 *                  when a commit creates it.
 *   Transactions   axstm_txn_delete: later reads see AXSTM_ENOVALUE, the
 *                  commit removes the key, a rollback or a retried or_else
 *                  branch removes nothing, a missing key needs no delete;
 *                  a key deleted after a body's snapshot still reads as it
 *                  was in that snapshot (or the read is a conflict).
 *   No key left    a transaction that does not commit (own code, library
 *   behind         code, timeout, out of memory), one that only reads, and
 *                  a watch create no key.
 *   Reclamation    a foreach visitor that waits does not hold back the
 *                  reclamation of values that others replace meanwhile.
 *   Memory         a key per item, created and deleted, runs in flat memory;
 *                  a handle's commit that reaches the entry of its key
 *                  after it was freed, or reused for another key, changes
 *                  nothing (it holds the entry neither pinned nor gated).
 *   Concurrency    threads create, commit and delete keys of a shared name
 *                  space under an auditor; a key-per-item queue; a handle
 *                  held across deletes never commits over a newer
 *                  incarnation.
 *
 * Workers and bodies only record what they saw; the test's thread asserts
 * after joining them.  No test asserts a timing: a thread that must be
 * woken waits under a generous watchdog, which only turns a hang into a
 * failure.  Under valgrind (seen in LD_PRELOAD) and ThreadSanitizer the
 * long loops are shorter.
 */
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

#include "testutil.h"

/* For a handle's entry address (memory reuse) and the allocation hooks. */
#include "axstm-internal.h"

#if defined(__SANITIZE_THREAD__)
#define DT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DT_TSAN 1
#endif
#endif
#ifndef DT_TSAN
#define DT_TSAN 0
#endif

/* ------------------------------------------------------------------ */
/* Helpers                                                            */
/* ------------------------------------------------------------------ */

/* A loop count: a tenth of it under valgrind, a quarter under TSan. */
static unsigned long scaled(unsigned long n)
{
    if (tu_under_valgrind())
        return n / 10;
    return DT_TSAN ? n / 4 : n;
}

/* How long a thread may wait for something that must happen: never
 * reached when all is well, it only turns a hang into a failure. */
#define WATCHDOG_NS ((int64_t)60 * 1000 * 1000 * 1000)

/* Waits (yielding, then napping) until *flag is set, or *done says the
 * thread that would set it has finished.  Returns whether flag was set. */
static int await_flag(atomic_int *flag, atomic_int *done)
{
    unsigned attempt = 0;
    while (!atomic_load(flag)) {
        if (atomic_load(done))
            return atomic_load(flag);
        tu_backoff(++attempt);
    }
    return 1;
}

/* Deletes key through a fresh value handle. */
static void delete_key(axstm_store *s, const char *key)
{
    axstm_value *v = tu_usevar_ok(s, key);
    ck_assert_int_eq(axstm_value_delete(v), AXSTM_OK);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
}

/* key holds the int64 x at version. */
static void assert_i64(axstm_store *s, const char *key, uint64_t version, int64_t x)
{
    tu_entry e;
    int64_t got = 0;
    ck_assert_msg(tu_lookup(s, key, &e), "%s is not in the store", key);
    ck_assert_msg(e.has_value && e.len == 8, "%s: no 8-byte value", key);
    memcpy(&got, e.data, 8);
    free(e.data);
    ck_assert_msg(e.version == version && got == x, "%s: %lld at version %llu, not %lld at %llu",
                  key, (long long)got, (unsigned long long)e.version, (long long)x,
                  (unsigned long long)version);
}

/* key exists with no value, at version. */
static void assert_no_value(axstm_store *s, const char *key, uint64_t version)
{
    tu_entry e;
    ck_assert_msg(tu_lookup(s, key, &e), "%s is not in the store", key);
    free(e.data);
    ck_assert_msg(!e.has_value, "%s has a value", key);
    ck_assert_uint_eq(e.version, version);
}

/* The store holds n keys, by its counter and by foreach. */
static void assert_keys(axstm_store *s, uint64_t n)
{
    ck_assert_uint_eq(tu_stats_ok(s).keys, n);
    ck_assert_uint_eq(tu_foreach_count(s), n);
}

/* 1 when the watch's descriptor is readable right now, else 0. */
static int readable(const axstm_watch *w)
{
    struct pollfd p;
    int rc;
    p.fd = axstm_watch_fd(w);
    p.events = POLLIN;
    p.revents = 0;
    ck_assert_int_ge(p.fd, 0);
    while ((rc = poll(&p, 1, 0)) < 0 && errno == EINTR)
        ;
    ck_assert_msg(rc >= 0, "poll: %s", strerror(errno));
    return rc == 1 && (p.revents & POLLIN) != 0;
}

static axstm_watch *watch_ok(axstm_store *s, const char *const keys[], size_t n)
{
    axstm_watch *w = NULL;
    int rc;
    TU_RETRY(rc, axstm_watch_new(s, keys, n, &w));
    ck_assert_msg(rc == AXSTM_OK, "watch_new: %s", axstm_strerror(rc));
    ck_assert_ptr_nonnull(w);
    return w;
}

/* ------------------------------------------------------------------ */
/* A transaction body that runs a list of operations                  */
/* ------------------------------------------------------------------ */

enum { OP_SET = 1, OP_SET_BLOB, OP_DEL, OP_GET };

/* One operation of a script and what it answered in the last run. */
struct op {
    int op;
    const char *key;
    int64_t x; /* OP_SET: the value; OP_SET_BLOB: the byte repeated */
    int rc;
    int64_t got; /* OP_GET: what was read (untouched: -12345) */
};

#define BLOB_LEN 32

struct script {
    struct op *ops;
    size_t n;
    int ret; /* what the body returns once every operation is done */
    unsigned runs;
};

/* Runs the operations in order; a code other than OK and ENOVALUE is
 * passed straight back (a conflict re-runs the body). */
static int script_body(axstm_txn *tx, void *arg)
{
    struct script *sc = arg;
    size_t i;
    sc->runs++;
    for (i = 0; i < sc->n; i++) {
        struct op *o = &sc->ops[i];
        unsigned char blob[BLOB_LEN];
        o->got = -12345;
        switch (o->op) {
        case OP_SET:
            o->rc = axstm_txn_set_i64(tx, o->key, o->x);
            break;
        case OP_SET_BLOB:
            memset(blob, (int)o->x, sizeof blob);
            o->rc = axstm_txn_set(tx, o->key, blob, sizeof blob);
            break;
        case OP_DEL:
            o->rc = axstm_txn_delete(tx, o->key);
            break;
        default:
            o->rc = axstm_txn_get_i64(tx, o->key, &o->got);
            break;
        }
        if (o->rc != AXSTM_OK && o->rc != AXSTM_ENOVALUE)
            return o->rc;
    }
    return sc->ret;
}

static int run_script(axstm_store *s, struct op *ops, size_t n, int ret)
{
    struct script sc;
    sc.ops = ops;
    sc.n = n;
    sc.ret = ret;
    sc.runs = 0;
    return axstm_atomically(s, script_body, &sc);
}

#define NOPS(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------ */
/* Deletion through handles                                           */
/* ------------------------------------------------------------------ */

START_TEST(value_delete_hides_value_and_commit_removes_key)
{
    static const char big[] = "a value longer than eight bytes";
    axstm_store *s = tu_store_ok();
    tu_snapshot before, after;
    axstm_value *h;
    axstm_stats st;
    int64_t x = 77;
    const char *str = NULL;

    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "a", 2);
    tu_put_bytes(s, "big", big, sizeof big);
    tu_put_i64(s, "b", 3);
    assert_keys(s, 3);
    tu_snapshot_take(s, &before);

    /* The delete is a change of the private copy: no value... */
    h = tu_usevar_ok(s, "a");
    ck_assert_uint_eq(axstm_value_version(h), 2);
    ck_assert_int_eq(axstm_value_delete(h), AXSTM_OK);
    tu_assert_no_value(h);
    ck_assert_int_eq(axstm_value_get_i64(h, &x), AXSTM_ENOVALUE);
    ck_assert_int_eq(x, 77);
    ck_assert_int_eq(axstm_value_get_str(h, &str), AXSTM_ENOVALUE);
    ck_assert_ptr_null(str);
    /* ...and the store is as it was until the commit. */
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    tu_snapshot_free(&after);
    assert_keys(s, 3);

    st = tu_stats_ok(s);
    ck_assert_int_eq(tu_commit(h), AXSTM_OK);
    ck_assert_uint_eq(tu_stats_ok(s).commits, st.commits + 1);
    tu_assert_absent(s, "a");
    assert_keys(s, 2);
    assert_i64(s, "b", 1, 3);
    axstm_value_free(h);

    /* A value held in a blob goes the same way (valgrind and ASan see its
     * memory go back). */
    delete_key(s, "big");
    tu_assert_absent(s, "big");
    assert_keys(s, 1);
    assert_i64(s, "b", 1, 3);

    /* A delete undone by a set before the commit writes the value. */
    h = tu_usevar_ok(s, "b");
    ck_assert_int_eq(axstm_value_delete(h), AXSTM_OK);
    tu_set_i64_ok(h, 4);
    ck_assert_int_eq(tu_commit(h), AXSTM_OK);
    axstm_value_free(h);
    assert_i64(s, "b", 2, 4);
    assert_keys(s, 1);

    tu_snapshot_free(&before);
    axstm_store_free(s);
}
END_TEST

START_TEST(collection_commit_deletes_all_or_nothing)
{
    static const char *const ab[] = {"a", "b"};
    static const char *const xyc[] = {"x", "y", "c"};
    axstm_store *s = tu_store_ok();
    tu_snapshot before, after;
    axstm_collection *c, *d;
    axstm_value *e;

    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "b", 2);
    tu_put_i64(s, "c", 3);

    /* Delete one key and set another: one commit does both. */
    c = tu_using_ok(s, ab, 2);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_value(c, "a")), AXSTM_OK);
    tu_set_i64_ok(axstm_collection_value(c, "b"), 20);
    tu_assert_no_value(axstm_collection_value(c, "a"));
    tu_snapshot_take(s, &before);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    axstm_collection_free(c);
    tu_assert_absent(s, "a");
    assert_i64(s, "b", 2, 20);
    assert_i64(s, "c", 1, 3);
    assert_keys(s, 2);
    tu_snapshot_free(&before);

    /* A rejected collection commit with a delete writes nothing. */
    tu_put_i64(s, "x", 1);
    tu_put_i64(s, "y", 1);
    d = tu_using_ok(s, xyc, 3);
    e = tu_usevar_ok(s, "y");
    tu_set_i64_ok(e, 9);
    ck_assert_int_eq(tu_commit(e), AXSTM_OK);
    axstm_value_free(e);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_value(d, "x")), AXSTM_OK);
    tu_set_i64_ok(axstm_collection_value(d, "y"), 5);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_value(d, "c")), AXSTM_OK);
    tu_snapshot_take(s, &before);
    ck_assert_int_eq(tu_ccommit(d), AXSTM_CONCURRENT_UPDATE);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    assert_i64(s, "x", 1, 1);
    assert_i64(s, "y", 2, 9);
    assert_i64(s, "c", 1, 3);
    assert_keys(s, 4);
    /* The rejected collection is unchanged: its delete is still there. */
    tu_assert_no_value(axstm_collection_value(d, "x"));

    /* Refreshed, it can delete both. */
    tu_crefresh_ok(d);
    ck_assert_int_eq(tu_get_i64_ok(axstm_collection_value(d, "x")), 1);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_value(d, "x")), AXSTM_OK);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_value(d, "c")), AXSTM_OK);
    ck_assert_int_eq(tu_ccommit(d), AXSTM_OK);
    axstm_collection_free(d);
    tu_assert_absent(s, "x");
    tu_assert_absent(s, "c");
    assert_i64(s, "y", 3, 9);
    assert_i64(s, "b", 2, 20);
    assert_keys(s, 2);
    axstm_store_free(s);
}
END_TEST

START_TEST(handles_checked_out_before_delete_conflict)
{
    static const char *const ko[] = {"k", "other"};
    axstm_store *s = tu_store_ok();
    axstm_value *stale, *deleter, *txn_stale;
    axstm_collection *stale_c;
    axstm_stats st;
    struct op del[] = {{OP_DEL, "other", 0, 0, 0}};

    tu_put_i64(s, "k", 1);
    tu_put_i64(s, "other", 2);
    stale = tu_usevar_ok(s, "k");
    stale_c = tu_using_ok(s, ko, 2);
    txn_stale = tu_usevar_ok(s, "other");
    deleter = tu_usevar_ok(s, "k");
    ck_assert_int_eq(axstm_value_delete(deleter), AXSTM_OK);
    ck_assert_int_eq(tu_commit(deleter), AXSTM_OK);
    tu_assert_absent(s, "k");
    st = tu_stats_ok(s);

    /* The stale commits are rejected and do not bring the key back. */
    tu_set_i64_ok(stale, 5);
    ck_assert_int_eq(tu_commit(stale), AXSTM_CONCURRENT_UPDATE);
    tu_assert_absent(s, "k");
    tu_set_i64_ok(axstm_collection_value(stale_c, "k"), 6);
    tu_set_i64_ok(axstm_collection_value(stale_c, "other"), 7);
    ck_assert_int_eq(tu_ccommit(stale_c), AXSTM_CONCURRENT_UPDATE);
    tu_assert_absent(s, "k");
    assert_i64(s, "other", 1, 2);
    ck_assert_uint_eq(tu_stats_ok(s).conflicts, st.conflicts + 2);

    /* A delete by a transaction is a commit of the key as well. */
    ck_assert_int_eq(run_script(s, del, 1, AXSTM_OK), AXSTM_OK);
    ck_assert_int_eq(del[0].rc, AXSTM_OK);
    tu_assert_absent(s, "other");
    tu_set_i64_ok(txn_stale, 8);
    ck_assert_int_eq(tu_commit(txn_stale), AXSTM_CONCURRENT_UPDATE);
    tu_assert_absent(s, "other");
    assert_keys(s, 0);

    axstm_value_free(stale);
    axstm_value_free(txn_stale);
    axstm_value_free(deleter);
    axstm_collection_free(stale_c);
    axstm_store_free(s);
}
END_TEST

START_TEST(deleting_handle_cannot_commit_again)
{
    static const char *const kj[] = {"k", "j"};
    axstm_store *s = tu_store_ok();
    axstm_value *deleter;
    axstm_collection *c;

    tu_put_i64(s, "k", 1);
    deleter = tu_usevar_ok(s, "k");
    ck_assert_int_eq(axstm_value_delete(deleter), AXSTM_OK);
    ck_assert_int_eq(tu_commit(deleter), AXSTM_OK);
    /* Committed again as it is (still a delete), or with a value. */
    ck_assert_int_eq(tu_commit(deleter), AXSTM_CONCURRENT_UPDATE);
    tu_set_i64_ok(deleter, 3);
    ck_assert_int_eq(tu_commit(deleter), AXSTM_CONCURRENT_UPDATE);
    tu_assert_absent(s, "k");
    assert_keys(s, 0);

    /* Even after the name was created again by someone else. */
    tu_put_i64(s, "k", 10);
    ck_assert_int_eq(tu_commit(deleter), AXSTM_CONCURRENT_UPDATE);
    assert_i64(s, "k", 1, 10);
    axstm_value_free(deleter);

    /* The same for a collection that deleted one of its keys. */
    tu_put_i64(s, "j", 1);
    c = tu_using_ok(s, kj, 2);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_value(c, "k")), AXSTM_OK);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    tu_assert_absent(s, "k");
    assert_i64(s, "j", 2, 1);
    tu_set_i64_ok(axstm_collection_value(c, "j"), 5);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_CONCURRENT_UPDATE);
    assert_i64(s, "j", 2, 1);
    tu_assert_absent(s, "k");
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

START_TEST(stale_handle_conflicts_with_recreated_key_at_same_version)
{
    static const char *const k1[] = {"k"};
    axstm_store *s = tu_store_ok();
    axstm_value *stale, *fresh;
    axstm_collection *stale_c;
    int i;

    tu_put_i64(s, "k", 1);
    tu_put_i64(s, "k", 2);
    tu_put_i64(s, "k", 3);
    stale = tu_usevar_ok(s, "k");
    stale_c = tu_using_ok(s, k1, 1);
    ck_assert_uint_eq(axstm_value_version(stale), 3);

    delete_key(s, "k");
    /* usevar creates the name afresh: version 0, no value. */
    fresh = tu_usevar_ok(s, "k");
    ck_assert_uint_eq(axstm_value_version(fresh), 0);
    tu_assert_no_value(fresh);
    assert_no_value(s, "k", 0);
    assert_keys(s, 1);
    for (i = 1; i <= 3; i++) {
        tu_set_i64_ok(fresh, 100 * i);
        ck_assert_int_eq(tu_commit(fresh), AXSTM_OK);
    }
    ck_assert_uint_eq(axstm_value_version(fresh), axstm_value_version(stale));
    assert_i64(s, "k", 3, 300);

    /* Same name, same version number: still another key. */
    tu_set_i64_ok(stale, 999);
    ck_assert_int_eq(tu_commit(stale), AXSTM_CONCURRENT_UPDATE);
    tu_set_i64_ok(axstm_collection_at(stale_c, 0), 998);
    ck_assert_int_eq(tu_ccommit(stale_c), AXSTM_CONCURRENT_UPDATE);
    assert_i64(s, "k", 3, 300);

    /* Refreshed, the stale handles see the new key and may commit. */
    tu_refresh_ok(stale);
    ck_assert_int_eq(tu_get_i64_ok(stale), 300);
    tu_set_i64_ok(stale, 400);
    ck_assert_int_eq(tu_commit(stale), AXSTM_OK);
    assert_i64(s, "k", 4, 400);

    axstm_value_free(stale);
    axstm_value_free(fresh);
    axstm_collection_free(stale_c);
    axstm_store_free(s);
}
END_TEST

/*
 * The stale handle's entry is taken out and freed by the first deletes,
 * and entries are reused for new keys (table.h): after enough cycles the
 * name is created again in the very memory the stale handle points at,
 * born again at version 1, the stale handle's version.
 */
START_TEST(stale_handle_conflicts_after_many_recreations_with_reused_memory)
{
    static const char *const k1[] = {"k"};
    const unsigned long cycles = 10000;
    axstm_store *s = tu_store_ok();
    axstm_value *stale;
    axstm_collection *stale_c;
    struct axstm__entry *orig;
    unsigned long i, reused = 0, wrong_fresh = 0, stale_ok = 0, stale_c_ok = 0, other = 0;

    tu_put_i64(s, "k", -1);
    stale = tu_usevar_ok(s, "k");
    stale_c = tu_using_ok(s, k1, 1);
    ck_assert_uint_eq(axstm_value_version(stale), 1);
    orig = stale->item.entry;

    for (i = 0; i < cycles; i++) {
        axstm_value *d = NULL, *h = NULL;
        int rc;
        /* Delete through one handle, create again through another. */
        TU_RETRY(rc, axstm_usevar(s, "k", &d));
        if (rc == AXSTM_OK) {
            (void)axstm_value_delete(d);
            TU_RETRY(rc, axstm_value_commit(d));
            axstm_value_free(d);
        }
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_usevar(s, "k", &h));
        if (rc != AXSTM_OK) {
            other++;
            break;
        }
        if (axstm_value_version(h) != 0 || axstm_value_data(h, NULL) != NULL)
            wrong_fresh++;
        (void)axstm_value_set_i64(h, (int64_t)i);
        TU_RETRY(rc, axstm_value_commit(h));
        if (rc != AXSTM_OK || axstm_value_version(h) != 1)
            wrong_fresh++;
        reused += h->item.entry == orig;
        axstm_value_free(h);

        (void)axstm_value_set_i64(stale, 1000000 + (int64_t)i);
        TU_RETRY(rc, axstm_value_commit(stale));
        stale_ok += rc == AXSTM_OK;
        other += rc != AXSTM_OK && rc != AXSTM_CONCURRENT_UPDATE;
        (void)axstm_value_set_i64(axstm_collection_at(stale_c, 0), 2000000 + (int64_t)i);
        TU_RETRY(rc, axstm_collection_commit(stale_c));
        stale_c_ok += rc == AXSTM_OK;
        other += rc != AXSTM_OK && rc != AXSTM_CONCURRENT_UPDATE;
        if (stale_ok + stale_c_ok != 0)
            break;
    }
    ck_assert_msg(stale_ok == 0 && stale_c_ok == 0,
                  "cycle %lu: a handle checked out before the first delete committed over "
                  "the re-created key (value handle %lu, collection %lu; memory reused %lu "
                  "times)",
                  i, stale_ok, stale_c_ok, reused);
    ck_assert_uint_eq(other, 0);
    ck_assert_uint_eq(wrong_fresh, 0);
    ck_assert_msg(reused > 0,
                  "the key's entry was never reused in %lu cycles: "
                  "the test did not reach the case it is about",
                  cycles);
    assert_i64(s, "k", 1, (int64_t)cycles - 1);
    assert_keys(s, 1);
    axstm_value_free(stale);
    axstm_collection_free(stale_c);
    axstm_store_free(s);
}
END_TEST

/* Deletes "k" through a handle of its own. */
static void delete_k(axstm_store *s)
{
    axstm_value *d = tu_usevar_ok(s, "k");
    ck_assert_int_eq(axstm_value_delete(d), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(d), AXSTM_OK);
    axstm_value_free(d);
}

/* Commits x through h as if h's commit had looked at the table's removal
 * count just before its key was taken out (the race a commit, which is
 * neither pinned nor in the gate, cannot exclude): the fast path, straight
 * at an entry that may be freed or reused. */
static int commit_as_if_raced(axstm_store *s, axstm_value *h, int64_t x)
{
    ck_assert_int_eq(axstm_value_set_i64(h, x), AXSTM_OK);
    h->removals = axstm__table_removals(&s->table);
    return axstm_value_commit(h);
}

START_TEST(stale_commit_on_freed_or_reused_entry_changes_nothing)
{
    enum { TRIES = 1000 };
    axstm_store *s = tu_store_ok();
    tu_put_i64(s, "k", 1);
    axstm_value *stale = tu_usevar_ok(s, "k");
    struct axstm__entry *e = stale->item.entry;

    /* Freed: taken out, and reclaimed (nothing is pinned). */
    delete_k(s);
    for (int i = 0; i < 3; i++)
        axstm__epoch_reclaim(&s->epoch);
    ck_assert_msg(atomic_load(&e->vlock) == AXSTM__DEAD, "the entry was not taken out");
    ck_assert_int_eq(commit_as_if_raced(s, stale, 2), AXSTM_BUSY_RETRY);
    ck_assert_uint_eq(atomic_load(&e->vlock), AXSTM__DEAD);
    /* The next try sees the removal count moved: the key is gone. */
    stale->removals--;
    ck_assert_int_eq(axstm_value_commit(stale), AXSTM_CONCURRENT_UPDATE);

    /* Reused: keys of the same size class are created until one lands in
     * the entry's shard and gets its memory back off the free list, which
     * must be whole. */
    axstm_value *reuser = NULL;
    char name[8];
    uint64_t created = 0;
    for (int i = 0; i < TRIES && reuser == NULL; i++, created++) {
        snprintf(name, sizeof name, "r%03d", i);
        axstm_value *h = tu_usevar_ok(s, name);
        if (h->item.entry == e)
            reuser = h;
        else
            axstm_value_free(h);
    }
    ck_assert_msg(reuser != NULL, "the entry's memory was not reused in %d tries", TRIES);
    ck_assert_int_eq(axstm_value_set_i64(reuser, 7), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(reuser), AXSTM_OK);
    uint64_t version = axstm_value_version(reuser);
    ck_assert_int_eq(commit_as_if_raced(s, stale, 3), AXSTM_CONCURRENT_UPDATE);
    /* The key that owns the memory now is as it was, and not left locked. */
    assert_i64(s, name, version, 7);
    ck_assert_int_eq(axstm_value_set_i64(reuser, 8), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(reuser), AXSTM_OK);
    assert_i64(s, name, version + 1, 8);
    assert_keys(s, created);
    axstm_value_free(reuser);
    axstm_value_free(stale);
    axstm_store_free(s);
}
END_TEST

START_TEST(refresh_after_delete_recreates_the_key)
{
    static const char *const kj[] = {"k", "j"};
    axstm_store *s = tu_store_ok();
    axstm_value *h, *d;
    axstm_collection *c, *e;

    tu_put_i64(s, "k", 5);
    tu_put_i64(s, "k", 6);
    h = tu_usevar_ok(s, "k");
    delete_key(s, "k");
    assert_keys(s, 0);

    /* A refresh re-creates the key, as usevar would... */
    tu_refresh_ok(h);
    ck_assert_uint_eq(axstm_value_version(h), 0);
    tu_assert_no_value(h);
    assert_no_value(s, "k", 0);
    assert_keys(s, 1);
    /* ...and the handle then commits like any other. */
    tu_set_i64_ok(h, 7);
    ck_assert_int_eq(tu_commit(h), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(h), 1);
    assert_i64(s, "k", 1, 7);

    /* The deleting handle itself, refreshed. */
    d = tu_usevar_ok(s, "k");
    ck_assert_int_eq(axstm_value_delete(d), AXSTM_OK);
    ck_assert_int_eq(tu_commit(d), AXSTM_OK);
    assert_keys(s, 0);
    tu_refresh_ok(d);
    ck_assert_uint_eq(axstm_value_version(d), 0);
    tu_assert_no_value(d);
    tu_set_i64_ok(d, 8);
    ck_assert_int_eq(tu_commit(d), AXSTM_OK);
    assert_i64(s, "k", 1, 8);
    /* And h, checked out before that delete, is stale again. */
    tu_set_i64_ok(h, 9);
    ck_assert_int_eq(tu_commit(h), AXSTM_CONCURRENT_UPDATE);
    assert_i64(s, "k", 1, 8);

    /* A collection whose keys were deleted by another. */
    tu_put_i64(s, "j", 1);
    c = tu_using_ok(s, kj, 2);
    e = tu_using_ok(s, kj, 2);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_at(e, 0)), AXSTM_OK);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_at(e, 1)), AXSTM_OK);
    ck_assert_int_eq(tu_ccommit(e), AXSTM_OK);
    axstm_collection_free(e);
    assert_keys(s, 0);
    tu_crefresh_ok(c);
    assert_keys(s, 2);
    ck_assert_uint_eq(axstm_value_version(axstm_collection_value(c, "k")), 0);
    ck_assert_uint_eq(axstm_value_version(axstm_collection_value(c, "j")), 0);
    tu_assert_no_value(axstm_collection_value(c, "k"));
    tu_assert_no_value(axstm_collection_value(c, "j"));
    tu_set_i64_ok(axstm_collection_value(c, "j"), 2);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    assert_no_value(s, "k", 1);
    assert_i64(s, "j", 1, 2);
    axstm_collection_free(c);

    axstm_value_free(h);
    axstm_value_free(d);
    axstm_store_free(s);
}
END_TEST

/* Two handles of one version: a delete and a set race; whichever commits
 * first wins, and the other is rejected. */
START_TEST(delete_and_commit_of_one_version_only_one_wins)
{
    axstm_store *s = tu_store_ok();
    axstm_value *a, *b;

    /* The delete first: the set is rejected and brings nothing back. */
    tu_put_i64(s, "k", 1);
    a = tu_usevar_ok(s, "k");
    b = tu_usevar_ok(s, "k");
    ck_assert_int_eq(axstm_value_delete(a), AXSTM_OK);
    tu_set_i64_ok(b, 2);
    ck_assert_int_eq(tu_commit(a), AXSTM_OK);
    ck_assert_int_eq(tu_commit(b), AXSTM_CONCURRENT_UPDATE);
    tu_assert_absent(s, "k");
    axstm_value_free(a);
    axstm_value_free(b);

    /* The set first: the delete is rejected and the key stays. */
    tu_put_i64(s, "k", 1);
    a = tu_usevar_ok(s, "k");
    b = tu_usevar_ok(s, "k");
    ck_assert_int_eq(axstm_value_delete(a), AXSTM_OK);
    tu_set_i64_ok(b, 2);
    ck_assert_int_eq(tu_commit(b), AXSTM_OK);
    ck_assert_int_eq(tu_commit(a), AXSTM_CONCURRENT_UPDATE);
    assert_i64(s, "k", 2, 2);
    assert_keys(s, 1);
    axstm_value_free(a);
    axstm_value_free(b);
    axstm_store_free(s);
}
END_TEST

START_TEST(delete_of_key_never_given_a_value)
{
    static const char *const ee[] = {"e1", "e2"};
    axstm_store *s = tu_store_ok();
    axstm_value *h;
    axstm_collection *c;

    h = tu_usevar_ok(s, "empty");
    ck_assert_uint_eq(axstm_value_version(h), 0);
    assert_no_value(s, "empty", 0);
    assert_keys(s, 1);
    ck_assert_int_eq(axstm_value_delete(h), AXSTM_OK);
    ck_assert_int_eq(tu_commit(h), AXSTM_OK);
    axstm_value_free(h);
    tu_assert_absent(s, "empty");
    assert_keys(s, 0);

    c = tu_using_ok(s, ee, 2);
    assert_keys(s, 2);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_at(c, 0)), AXSTM_OK);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_at(c, 1)), AXSTM_OK);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    axstm_collection_free(c);
    assert_keys(s, 0);
    axstm_store_free(s);
}
END_TEST

START_TEST(empty_collection_and_borrowed_value_delete)
{
    static const char *const ab[] = {"a", "b"};
    axstm_store *s = tu_store_ok();
    axstm_collection *c;
    axstm_value *v;

    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "b", 2);

    /* An empty collection commits and does nothing. */
    c = tu_using_ok(s, NULL, 0);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    axstm_collection_free(c);
    assert_keys(s, 2);

    /* A borrowed value deletes like any other, committed with its
     * collection only. */
    c = tu_using_ok(s, ab, 2);
    v = axstm_collection_value(c, "a");
    ck_assert_int_eq(axstm_value_delete(v), AXSTM_OK);
    tu_assert_no_value(v);
    ck_assert_int_eq(axstm_value_commit(v), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_value_refresh(v), AXSTM_EINVAL);
    axstm_value_free(v); /* a no-op for a borrowed value */
    assert_i64(s, "a", 1, 1);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    tu_assert_no_value(axstm_collection_value(c, "a"));
    axstm_collection_free(c);
    tu_assert_absent(s, "a");
    assert_i64(s, "b", 2, 2);
    assert_keys(s, 1);
    axstm_store_free(s);
}
END_TEST

static int txn_delete_einval_body(axstm_txn *tx, void *arg)
{
    int *rc = arg;
    char longkey[AXSTM_KEY_MAX + 2];
    memset(longkey, 'x', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    rc[0] = axstm_txn_delete(tx, NULL);
    rc[1] = axstm_txn_delete(tx, "");
    rc[2] = axstm_txn_delete(tx, longkey);
    rc[3] = axstm_txn_delete(NULL, "k");
    return AXSTM_OK;
}

START_TEST(delete_bad_input_is_einval)
{
    axstm_store *s = tu_store_ok();
    int rc[4] = {1, 1, 1, 1};

    ck_assert_int_eq(axstm_value_delete(NULL), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_txn_delete(NULL, "k"), AXSTM_EINVAL);
    tu_put_i64(s, "k", 1);
    ck_assert_int_eq(axstm_atomically(s, txn_delete_einval_body, rc), AXSTM_OK);
    ck_assert_int_eq(rc[0], AXSTM_EINVAL);
    ck_assert_int_eq(rc[1], AXSTM_EINVAL);
    ck_assert_int_eq(rc[2], AXSTM_E2BIG);
    ck_assert_int_eq(rc[3], AXSTM_EINVAL);
    assert_i64(s, "k", 1, 1);
    assert_keys(s, 1);
    axstm_store_free(s);
}
END_TEST

/* A visitor that deletes every key it visits, through the store. */
struct deleting_visitor {
    axstm_store *s;
    unsigned visits, errors;
    unsigned char seen[64];
};

static int deleting_visit(const char *key, uint64_t version, const void *data, size_t len,
                          void *arg)
{
    struct deleting_visitor *dv = arg;
    axstm_value *v = NULL;
    int rc, i = atoi(key + 2);
    (void)data;
    (void)len;
    dv->visits++;
    if (strncmp(key, "d.", 2) != 0 || i < 0 || i >= 64 || version != 1 || dv->seen[i]++) {
        dv->errors++;
        return 0;
    }
    TU_RETRY(rc, axstm_usevar(dv->s, key, &v));
    if (rc != AXSTM_OK) {
        dv->errors++;
        return 0;
    }
    if (axstm_value_delete(v) != AXSTM_OK)
        dv->errors++;
    TU_RETRY(rc, axstm_value_commit(v));
    if (rc != AXSTM_OK)
        dv->errors++;
    axstm_value_free(v);
    return 0;
}

START_TEST(foreach_visitor_may_delete_what_it_visits)
{
    axstm_store *s = tu_store_ok();
    struct deleting_visitor dv;
    int i;

    for (i = 0; i < 64; i++) {
        char key[16];
        snprintf(key, sizeof key, "d.%d", i);
        tu_put_i64(s, key, i);
    }
    memset(&dv, 0, sizeof dv);
    dv.s = s;
    ck_assert_int_eq(axstm_store_foreach(s, deleting_visit, &dv), AXSTM_OK);
    ck_assert_uint_eq(dv.errors, 0);
    ck_assert_uint_eq(dv.visits, 64);
    assert_keys(s, 0);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Watches and waiting transactions                                   */
/* ------------------------------------------------------------------ */

START_TEST(watch_fires_when_key_is_deleted)
{
    static const char *const bc[] = {"b", "c"};
    axstm_store *s = tu_store_ok();
    axstm_watch *wa, *wb, *wc, *wd;
    axstm_collection *col;
    axstm_value *stale;
    struct op del_c[] = {{OP_DEL, "c", 0, 0, 0}};

    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "b", 2);
    tu_put_i64(s, "c", 3);
    tu_put_i64(s, "d", 4);
    wa = watch_ok(s, (const char *const[]){"a"}, 1);
    wb = watch_ok(s, &bc[0], 1);
    wc = watch_ok(s, &bc[1], 1);
    ck_assert(!readable(wa) && !readable(wb) && !readable(wc));

    /* By a value handle. */
    delete_key(s, "a");
    ck_assert(readable(wa));
    ck_assert(!readable(wb) && !readable(wc));

    /* By a collection: deleting b, setting c. */
    col = tu_using_ok(s, bc, 2);
    ck_assert_int_eq(axstm_value_delete(axstm_collection_value(col, "b")), AXSTM_OK);
    tu_set_i64_ok(axstm_collection_value(col, "c"), 30);
    ck_assert_int_eq(tu_ccommit(col), AXSTM_OK);
    axstm_collection_free(col);
    ck_assert(readable(wb) && readable(wc));

    /* By a transaction. */
    ck_assert_int_eq(axstm_watch_rearm(wc), AXSTM_OK);
    ck_assert(!readable(wc));
    ck_assert_int_eq(run_script(s, del_c, 1, AXSTM_OK), AXSTM_OK);
    ck_assert(readable(wc));
    assert_keys(s, 1);

    /* A rejected delete commits nothing, so it wakes nobody. */
    wd = watch_ok(s, (const char *const[]){"d"}, 1);
    stale = tu_usevar_ok(s, "d");
    tu_put_i64(s, "d", 5);
    ck_assert(readable(wd));
    ck_assert_int_eq(axstm_watch_rearm(wd), AXSTM_OK);
    ck_assert_int_eq(axstm_value_delete(stale), AXSTM_OK);
    ck_assert_int_eq(tu_commit(stale), AXSTM_CONCURRENT_UPDATE);
    ck_assert(!readable(wd));
    assert_i64(s, "d", 2, 5);
    axstm_value_free(stale);

    axstm_watch_free(wa);
    axstm_watch_free(wb);
    axstm_watch_free(wc);
    axstm_watch_free(wd);
    axstm_store_free(s);
}
END_TEST

START_TEST(watch_follows_name_through_delete_and_recreate)
{
    static const char *const k1[] = {"k"};
    axstm_store *s = tu_store_ok();
    axstm_watch *w, *late;
    int round;

    tu_put_i64(s, "k", 0);
    w = watch_ok(s, k1, 1);
    for (round = 1; round <= 6; round++) {
        axstm_value *h;
        struct op set_k[] = {{OP_SET, "k", round, 0, 0}};

        ck_assert(!readable(w));
        if (round % 2)
            delete_key(s, "k");
        else
            ck_assert_int_eq(run_script(s, (struct op[]){{OP_DEL, "k", 0, 0, 0}}, 1, AXSTM_OK),
                             AXSTM_OK);
        ck_assert_msg(readable(w), "round %d: the delete did not fire", round);
        ck_assert_int_eq(axstm_watch_rearm(w), AXSTM_OK);
        /* The watch keeps no key alive. */
        assert_keys(s, 0);

        /* Created again: by usevar (no commit yet, so no event) and a
         * commit, or by a transaction's commit. */
        if (round % 3) {
            h = tu_usevar_ok(s, "k");
            assert_keys(s, 1);
            ck_assert_msg(!readable(w), "round %d: a checkout fired the watch", round);
            tu_set_i64_ok(h, round);
            ck_assert_int_eq(tu_commit(h), AXSTM_OK);
            axstm_value_free(h);
        } else {
            ck_assert_int_eq(run_script(s, set_k, 1, AXSTM_OK), AXSTM_OK);
        }
        ck_assert_msg(readable(w), "round %d: the re-created key's commit did not fire", round);
        ck_assert_int_eq(axstm_watch_rearm(w), AXSTM_OK);
        tu_put_i64(s, "k", 100 + round);
        ck_assert_msg(readable(w), "round %d: a later commit did not fire", round);
        ck_assert_int_eq(axstm_watch_rearm(w), AXSTM_OK);
        assert_i64(s, "k", 2, 100 + round);
    }

    /* A watch made while the key is deleted fires when it comes back. */
    delete_key(s, "k");
    ck_assert_int_eq(axstm_watch_rearm(w), AXSTM_OK);
    late = watch_ok(s, k1, 1);
    assert_keys(s, 0);
    ck_assert(!readable(late));
    tu_put_i64(s, "k", 1);
    ck_assert(readable(late) && readable(w));
    axstm_watch_free(late);
    axstm_watch_free(w);
    assert_keys(s, 1);
    axstm_store_free(s);
}
END_TEST

struct waiter_arg {
    const char *key;
    int64_t got;
    unsigned runs;
};

/* Waits until key has a value. */
static int wait_for_value_body(axstm_txn *tx, void *arg)
{
    struct waiter_arg *w = arg;
    int rc;
    w->runs++;
    rc = axstm_txn_get_i64(tx, w->key, &w->got);
    return rc == AXSTM_ENOVALUE ? AXSTM_RETRY : rc;
}

START_TEST(try_atomically_watch_on_missing_key_fires_on_first_commit)
{
    axstm_store *s = tu_store_ok();
    struct waiter_arg wa = {"later", -1, 0};
    struct waiter_arg wg = {"gone", -1, 0};
    axstm_watch *w = NULL, *w2 = NULL;
    axstm_value *h;

    ck_assert_int_eq(axstm_try_atomically(s, wait_for_value_body, &wa, &w), AXSTM_RETRY);
    ck_assert_ptr_nonnull(w);
    assert_keys(s, 0);
    ck_assert(!readable(w));
    /* Created by a checkout: not a commit yet. */
    h = tu_usevar_ok(s, "later");
    ck_assert(!readable(w));
    tu_set_i64_ok(h, 42);
    ck_assert_int_eq(tu_commit(h), AXSTM_OK);
    axstm_value_free(h);
    ck_assert(readable(w));
    axstm_watch_free(w);
    ck_assert_int_eq(axstm_try_atomically(s, wait_for_value_body, &wa, &w), AXSTM_OK);
    ck_assert_int_eq(wa.got, 42);

    /* A key that existed and was deleted is missing just the same. */
    tu_put_i64(s, "gone", 1);
    delete_key(s, "gone");
    ck_assert_int_eq(axstm_try_atomically(s, wait_for_value_body, &wg, &w2), AXSTM_RETRY);
    ck_assert_ptr_nonnull(w2);
    assert_keys(s, 1);
    ck_assert(!readable(w2));
    tu_put_i64(s, "gone", 2);
    ck_assert(readable(w2));
    axstm_watch_free(w2);
    ck_assert_int_eq(axstm_try_atomically(s, wait_for_value_body, &wg, &w2), AXSTM_OK);
    ck_assert_int_eq(wg.got, 2);
    assert_keys(s, 2);
    axstm_store_free(s);
}
END_TEST

/* A transaction blocked in AXSTM_RETRY, run on a thread of its own. */
struct blocked {
    axstm_store *s;
    const char *key;
    atomic_int armed, done;
    int saw_no_value;
    int64_t got;
    unsigned runs;
    int rc;
};

/* Waits while key holds 1; done when it is deleted (or has no value). */
static int wait_while_one_body(axstm_txn *tx, void *arg)
{
    struct blocked *b = arg;
    int rc;
    b->runs++;
    b->saw_no_value = 0;
    rc = axstm_txn_get_i64(tx, b->key, &b->got);
    if (rc == AXSTM_ENOVALUE) {
        b->saw_no_value = 1;
        return AXSTM_OK;
    }
    if (rc != AXSTM_OK)
        return rc;
    if (b->got != 1)
        return AXSTM_OK;
    atomic_store(&b->armed, 1);
    return AXSTM_RETRY;
}

/* Waits until key has a value. */
static int wait_for_key_body(axstm_txn *tx, void *arg)
{
    struct blocked *b = arg;
    int rc;
    b->runs++;
    rc = axstm_txn_get_i64(tx, b->key, &b->got);
    if (rc == AXSTM_ENOVALUE) {
        b->saw_no_value = 1;
        atomic_store(&b->armed, 1);
        return AXSTM_RETRY;
    }
    return rc;
}

static void *wait_while_one_main(void *arg)
{
    struct blocked *b = arg;
    b->rc = axstm_atomically_timed(b->s, wait_while_one_body, b, WATCHDOG_NS);
    atomic_store(&b->done, 1);
    return NULL;
}

static void *wait_for_key_main(void *arg)
{
    struct blocked *b = arg;
    b->rc = axstm_atomically_timed(b->s, wait_for_key_body, b, WATCHDOG_NS);
    atomic_store(&b->done, 1);
    return NULL;
}

static void blocked_init(struct blocked *b, axstm_store *s, const char *key)
{
    b->s = s;
    b->key = key;
    atomic_init(&b->armed, 0);
    atomic_init(&b->done, 0);
    b->saw_no_value = 0;
    b->got = -1;
    b->runs = 0;
    b->rc = 12345;
}

/* Whether the key is deleted by a value handle, a collection (with another
 * key set in the same commit) or a transaction. */
enum { BY_HANDLE, BY_COLLECTION, BY_TXN, BY_COUNT };

START_TEST(retry_waiter_wakes_when_key_is_deleted)
{
    int how;
    for (how = 0; how < BY_COUNT; how++) {
        static const char *const ko[] = {"k", "other"};
        axstm_store *s = tu_store_ok();
        struct blocked b;
        pthread_t t;
        axstm_stats st;

        tu_put_i64(s, "k", 1);
        tu_put_i64(s, "other", 0);
        st = tu_stats_ok(s);
        blocked_init(&b, s, "k");
        tu_start(&t, wait_while_one_main, &b);
        ck_assert_msg(await_flag(&b.armed, &b.done), "waiter ended: %s", axstm_strerror(b.rc));
        if (how == BY_HANDLE) {
            delete_key(s, "k");
        } else if (how == BY_COLLECTION) {
            axstm_collection *c = tu_using_ok(s, ko, 2);
            ck_assert_int_eq(axstm_value_delete(axstm_collection_value(c, "k")), AXSTM_OK);
            tu_set_i64_ok(axstm_collection_value(c, "other"), 1);
            ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
            axstm_collection_free(c);
        } else {
            struct op del[] = {{OP_DEL, "k", 0, 0, 0}};
            ck_assert_int_eq(run_script(s, del, 1, AXSTM_OK), AXSTM_OK);
        }
        tu_join(t);
        ck_assert_msg(b.rc == AXSTM_OK, "deleted by %d: the waiter returned %s", how,
                      axstm_strerror(b.rc));
        ck_assert_msg(b.saw_no_value, "deleted by %d: the waiter saw %lld", how, (long long)b.got);
        ck_assert_uint_ge(b.runs, 2);
        ck_assert_uint_ge(tu_stats_ok(s).retries_waited, st.retries_waited + 1);
        /* Waiting on it, and reading it gone, did not bring it back. */
        tu_assert_absent(s, "k");
        assert_keys(s, 1);
        axstm_store_free(s);
    }
}
END_TEST

START_TEST(retry_waiter_wakes_when_missing_key_is_created)
{
    int how, deleted_first;
    for (deleted_first = 0; deleted_first < 2; deleted_first++)
        for (how = 0; how < BY_COUNT; how++) {
            static const char *const ko[] = {"k", "other"};
            axstm_store *s = tu_store_ok();
            struct blocked b;
            pthread_t t;

            if (deleted_first) {
                tu_put_i64(s, "k", 1);
                delete_key(s, "k");
            }
            blocked_init(&b, s, "k");
            tu_start(&t, wait_for_key_main, &b);
            ck_assert_msg(await_flag(&b.armed, &b.done), "waiter ended: %s", axstm_strerror(b.rc));
            /* The waiter creates no key. */
            assert_keys(s, 0);
            if (how == BY_HANDLE) {
                tu_put_i64(s, "k", 7);
            } else if (how == BY_COLLECTION) {
                axstm_collection *c = tu_using_ok(s, ko, 2);
                tu_set_i64_ok(axstm_collection_value(c, "k"), 7);
                ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
                axstm_collection_free(c);
            } else {
                struct op set[] = {{OP_SET, "k", 7, 0, 0}};
                ck_assert_int_eq(run_script(s, set, 1, AXSTM_OK), AXSTM_OK);
            }
            tu_join(t);
            ck_assert_msg(b.rc == AXSTM_OK, "created by %d (deleted first: %d): %s", how,
                          deleted_first, axstm_strerror(b.rc));
            ck_assert_int_eq(b.got, 7);
            ck_assert(b.saw_no_value);
            assert_i64(s, "k", 1, 7);
            axstm_store_free(s);
        }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Deletion in transactions                                           */
/* ------------------------------------------------------------------ */

START_TEST(txn_delete_later_reads_see_enovalue_and_commit_removes)
{
    axstm_store *s = tu_store_ok();
    static const char big[] = "a value longer than eight bytes";
    axstm_value *stale;
    struct op ops[] = {
        {OP_GET, "k", 0, 0, 0},   /* 0: 5 */
        {OP_DEL, "k", 0, 0, 0},   /* 1 */
        {OP_GET, "k", 0, 0, 0},   /* 2: ENOVALUE */
        {OP_DEL, "big", 0, 0, 0}, /* 3 */
        {OP_GET, "big", 0, 0, 0}, /* 4: ENOVALUE */
        {OP_SET, "j", 7, 0, 0},   /* 5 */
        {OP_DEL, "k", 0, 0, 0},   /* 6: a second delete is fine */
        {OP_GET, "k", 0, 0, 0},   /* 7: ENOVALUE */
    };
    axstm_stats st;

    tu_put_i64(s, "k", 5);
    tu_put_bytes(s, "big", big, sizeof big);
    tu_put_i64(s, "j", 6);
    stale = tu_usevar_ok(s, "k");
    st = tu_stats_ok(s);
    ck_assert_int_eq(run_script(s, ops, NOPS(ops), AXSTM_OK), AXSTM_OK);
    ck_assert_int_eq(ops[0].rc, AXSTM_OK);
    ck_assert_int_eq(ops[0].got, 5);
    ck_assert_int_eq(ops[1].rc, AXSTM_OK);
    ck_assert_int_eq(ops[2].rc, AXSTM_ENOVALUE);
    ck_assert_int_eq(ops[2].got, -12345);
    ck_assert_int_eq(ops[3].rc, AXSTM_OK);
    ck_assert_int_eq(ops[4].rc, AXSTM_ENOVALUE);
    ck_assert_int_eq(ops[6].rc, AXSTM_OK);
    ck_assert_int_eq(ops[7].rc, AXSTM_ENOVALUE);
    ck_assert_uint_eq(tu_stats_ok(s).commits, st.commits + 1);
    tu_assert_absent(s, "k");
    tu_assert_absent(s, "big");
    assert_i64(s, "j", 2, 7);
    assert_keys(s, 1);
    /* A handle checked out before the transaction's delete is stale. */
    tu_set_i64_ok(stale, 9);
    ck_assert_int_eq(tu_commit(stale), AXSTM_CONCURRENT_UPDATE);
    tu_assert_absent(s, "k");
    axstm_value_free(stale);
    axstm_store_free(s);
}
END_TEST

/* A body that reads the raw bytes of a deleted key. */
static int get_after_delete_body(axstm_txn *tx, void *arg)
{
    int *rc = arg;
    const void *data = &data;
    size_t len = 99;
    TU_TRY(axstm_txn_delete(tx, "k"));
    rc[0] = axstm_txn_get(tx, "k", &data, &len);
    rc[1] = data == (const void *)&data && len == 99; /* untouched */
    rc[2] = axstm_txn_get(tx, "k", NULL, NULL);
    return AXSTM_OK;
}

START_TEST(txn_get_of_deleted_key_leaves_outputs_untouched)
{
    axstm_store *s = tu_store_ok();
    int rc[3] = {1, 0, 1};
    tu_put_i64(s, "k", 1);
    ck_assert_int_eq(axstm_atomically(s, get_after_delete_body, rc), AXSTM_OK);
    ck_assert_int_eq(rc[0], AXSTM_ENOVALUE);
    ck_assert_int_eq(rc[1], 1);
    ck_assert_int_eq(rc[2], AXSTM_ENOVALUE);
    assert_keys(s, 0);
    axstm_store_free(s);
}
END_TEST

/*
 * Opacity across a delete.  "a" is 1 exactly while "x" exists (10): one
 * commit deletes x and sets a to 0.  A body reads a (1), then -- on its
 * first run only -- lets another thread make that commit, then reads x.
 * It may see x as 10 or be told its snapshot is gone (a conflict); it
 * must never see a == 1 with x missing, and least of all commit that
 * (read-only) view.  With kept != 0 a watch on x keeps x's deleted entry
 * in the table; without, the delete takes it out at once, and the body's
 * read of x finds no entry at all.
 */
struct deleted_after {
    axstm_store *s;
    sem_t go, done;
    unsigned runs;
    int posted, first_x_rc, last_x_rc, helper_rc;
    int64_t first_a, last_a, last_x;
};

static void *delete_x_helper(void *arg)
{
    static const char *const ax[] = {"a", "x"};
    struct deleted_after *d = arg;
    axstm_collection *c = NULL;
    int rc;
    tu_sem_wait_ok(&d->go);
    TU_RETRY(rc, axstm_using(d->s, ax, 2, &c));
    if (rc == AXSTM_OK) {
        (void)axstm_value_delete(axstm_collection_value(c, "x"));
        (void)axstm_value_set_i64(axstm_collection_value(c, "a"), 0);
        TU_RETRY(rc, axstm_collection_commit(c));
        axstm_collection_free(c);
    }
    d->helper_rc = rc;
    sem_post(&d->done);
    return NULL;
}

static int read_a_then_x_body(axstm_txn *tx, void *arg)
{
    struct deleted_after *d = arg;
    int64_t a = -1, x = -1;
    int rc;
    d->runs++;
    TU_TRY(axstm_txn_get_i64(tx, "a", &a));
    if (d->runs == 1) {
        d->posted = 1;
        sem_post(&d->go);
        tu_sem_wait_ok(&d->done);
    }
    rc = axstm_txn_get_i64(tx, "x", &x);
    if (d->runs == 1) {
        d->first_a = a;
        d->first_x_rc = rc;
    }
    d->last_a = a;
    d->last_x_rc = rc;
    d->last_x = x;
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    return AXSTM_OK; /* read-only: commits what it saw */
}

START_TEST(txn_read_of_key_deleted_after_snapshot_is_consistent)
{
    int kept;
    for (kept = 1; kept >= 0; kept--) {
        axstm_store *s = tu_store_ok();
        struct deleted_after d;
        axstm_watch *w = NULL;
        pthread_t t;
        int rc;

        tu_put_i64(s, "a", 1);
        tu_put_i64(s, "x", 10);
        if (kept)
            w = watch_ok(s, (const char *const[]){"x"}, 1);
        memset(&d, 0, sizeof d);
        d.s = s;
        d.helper_rc = 12345;
        ck_assert_int_eq(sem_init(&d.go, 0, 0), 0);
        ck_assert_int_eq(sem_init(&d.done, 0, 0), 0);
        tu_start(&t, delete_x_helper, &d);
        rc = axstm_atomically(s, read_a_then_x_body, &d);
        if (!d.posted)
            sem_post(&d.go); /* the body never got there: fail, not hang */
        tu_join(t);
        ck_assert_int_eq(d.posted, 1);
        ck_assert_int_eq(d.helper_rc, AXSTM_OK);
        ck_assert_int_eq(rc, AXSTM_OK);
        assert_i64(s, "a", 2, 0);
        tu_assert_absent(s, "x");
        axstm_watch_free(w);
        sem_destroy(&d.go);
        sem_destroy(&d.done);
        axstm_store_free(s); /* before the asserts that catch the bug: no leak */
        ck_assert_msg(!(d.first_a == 1 && d.first_x_rc == AXSTM_ENOVALUE),
                      "%s: a body saw a == 1 (read before the delete) and x missing (deleted "
                      "after its snapshot): a state no serial order produces",
                      kept ? "entry kept by a watch" : "entry taken out");
        ck_assert_msg((d.last_a == 1 && d.last_x_rc == AXSTM_OK && d.last_x == 10) ||
                          (d.last_a == 0 && d.last_x_rc == AXSTM_ENOVALUE),
                      "%s: a read-only transaction committed a == %lld with x %s",
                      kept ? "entry kept by a watch" : "entry taken out", (long long)d.last_a,
                      axstm_strerror(d.last_x_rc));
    }
}
END_TEST

#define OWN_CODE 7

START_TEST(txn_delete_rolled_back_removes_nothing)
{
    axstm_store *s = tu_store_ok();
    tu_snapshot before, after;
    struct op own[] = {
        {OP_DEL, "k", 0, 0, 0},
        {OP_SET, "j", 9, 0, 0},
        {OP_DEL, "big", 0, 0, 0},
        {OP_GET, "k", 0, 0, 0},
    };
    /* The library's own code: an 8-byte read of a 32-byte value. */
    struct op lib[] = {
        {OP_DEL, "k", 0, 0, 0},
        {OP_GET, "big", 0, 0, 0},
    };
    unsigned char blob[BLOB_LEN];

    memset(blob, 1, sizeof blob);
    tu_put_i64(s, "k", 1);
    tu_put_i64(s, "j", 2);
    tu_put_bytes(s, "big", blob, sizeof blob);
    tu_snapshot_take(s, &before);

    ck_assert_int_eq(run_script(s, own, NOPS(own), OWN_CODE), OWN_CODE);
    ck_assert_int_eq(own[0].rc, AXSTM_OK);
    ck_assert_int_eq(own[3].rc, AXSTM_ENOVALUE);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    tu_snapshot_free(&after);

    ck_assert_int_eq(run_script(s, lib, NOPS(lib), AXSTM_OK), AXSTM_ETYPE);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    tu_snapshot_free(&after);
    assert_keys(s, 3);
    tu_snapshot_free(&before);
    axstm_store_free(s);
}
END_TEST

struct or_else_arg {
    int first_del_rc, first_get_rc, second_get_rc;
    int64_t second_got;
};

static int del_then_retry(axstm_txn *tx, void *arg)
{
    struct or_else_arg *a = arg;
    int64_t x;
    a->first_del_rc = axstm_txn_delete(tx, "k");
    a->first_get_rc = axstm_txn_get_i64(tx, "k", &x);
    if (a->first_del_rc != AXSTM_OK)
        return a->first_del_rc;
    return AXSTM_RETRY;
}

static int read_and_set(axstm_txn *tx, void *arg)
{
    struct or_else_arg *a = arg;
    a->second_get_rc = axstm_txn_get_i64(tx, "k", &a->second_got);
    if (a->second_get_rc != AXSTM_OK && a->second_get_rc != AXSTM_ENOVALUE)
        return a->second_get_rc;
    return axstm_txn_set_i64(tx, "took", 1);
}

static int or_else_body(axstm_txn *tx, void *arg)
{
    return axstm_or_else(tx, del_then_retry, read_and_set, arg);
}

START_TEST(or_else_discards_delete_of_retried_branch)
{
    axstm_store *s = tu_store_ok();
    struct or_else_arg a = {1, 1, 1, -1};

    tu_put_i64(s, "k", 5);
    ck_assert_int_eq(axstm_atomically(s, or_else_body, &a), AXSTM_OK);
    ck_assert_int_eq(a.first_del_rc, AXSTM_OK);
    ck_assert_int_eq(a.first_get_rc, AXSTM_ENOVALUE);
    /* The second branch does not see the first one's delete... */
    ck_assert_int_eq(a.second_get_rc, AXSTM_OK);
    ck_assert_int_eq(a.second_got, 5);
    /* ...and the commit does not publish it. */
    assert_i64(s, "k", 1, 5);
    assert_i64(s, "took", 1, 1);
    assert_keys(s, 2);
    axstm_store_free(s);
}
END_TEST

START_TEST(txn_delete_of_missing_key_creates_nothing)
{
    axstm_store *s = tu_store_ok();
    struct op ghost[] = {
        {OP_DEL, "ghost", 0, 0, 0},
        {OP_GET, "ghost", 0, 0, 0},
    };
    struct op with_set[] = {
        {OP_DEL, "ghost", 0, 0, 0},
        {OP_SET, "real", 1, 0, 0},
    };
    /* A key set and then deleted by the same body never exists. */
    struct op set_del[] = {
        {OP_SET, "temp", 1, 0, 0},
        {OP_DEL, "temp", 0, 0, 0},
        {OP_GET, "temp", 0, 0, 0},
    };
    /* Deleted (needlessly) and then set: it exists. */
    struct op del_set[] = {
        {OP_DEL, "x", 0, 0, 0},
        {OP_SET, "x", 3, 0, 0},
        {OP_GET, "x", 0, 0, 0},
    };
    axstm_stats st = tu_stats_ok(s);

    ck_assert_int_eq(run_script(s, ghost, NOPS(ghost), AXSTM_OK), AXSTM_OK);
    ck_assert_int_eq(ghost[0].rc, AXSTM_OK);
    ck_assert_int_eq(ghost[1].rc, AXSTM_ENOVALUE);
    assert_keys(s, 0);

    ck_assert_int_eq(run_script(s, with_set, NOPS(with_set), AXSTM_OK), AXSTM_OK);
    ck_assert_int_eq(with_set[0].rc, AXSTM_OK);
    tu_assert_absent(s, "ghost");
    assert_i64(s, "real", 1, 1);
    assert_keys(s, 1);

    ck_assert_int_eq(run_script(s, set_del, NOPS(set_del), AXSTM_OK), AXSTM_OK);
    ck_assert_int_eq(set_del[1].rc, AXSTM_OK);
    ck_assert_int_eq(set_del[2].rc, AXSTM_ENOVALUE);
    tu_assert_absent(s, "temp");
    assert_keys(s, 1);

    ck_assert_int_eq(run_script(s, del_set, NOPS(del_set), AXSTM_OK), AXSTM_OK);
    ck_assert_int_eq(del_set[2].rc, AXSTM_OK);
    ck_assert_int_eq(del_set[2].got, 3);
    assert_i64(s, "x", 1, 3);
    assert_keys(s, 2);
    ck_assert_uint_ge(tu_stats_ok(s).commits, st.commits + 2);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* A transaction that does not commit leaves no key behind (item 3)   */
/* ------------------------------------------------------------------ */

START_TEST(rolled_back_sets_of_new_keys_leave_no_key)
{
    axstm_store *s = tu_store_ok();
    tu_snapshot before, after;
    struct op own[] = {
        {OP_SET, "n1", 1, 0, 0},
        {OP_SET_BLOB, "n2", 2, 0, 0},
    };
    struct op lib[] = {
        {OP_SET, "n1", 1, 0, 0},
        {OP_SET_BLOB, "n2", 2, 0, 0},
        {OP_GET, "blob", 0, 0, 0}, /* AXSTM_ETYPE */
    };
    struct op waits[] = {
        {OP_SET, "n1", 1, 0, 0},
        {OP_SET_BLOB, "n2", 2, 0, 0},
        {OP_GET, "flag", 0, 0, 0}, /* missing: the body retries */
    };
    struct script sc = {waits, NOPS(waits), AXSTM_RETRY, 0};
    axstm_watch *w = NULL;
    unsigned char blob[BLOB_LEN];

    /* Into an empty store first. */
    ck_assert_int_eq(run_script(s, own, NOPS(own), OWN_CODE), OWN_CODE);
    ck_assert_int_eq(own[1].rc, AXSTM_OK);
    assert_keys(s, 0);

    memset(blob, 3, sizeof blob);
    tu_put_bytes(s, "blob", blob, sizeof blob);
    tu_snapshot_take(s, &before);

    ck_assert_int_eq(run_script(s, own, NOPS(own), OWN_CODE), OWN_CODE);
    ck_assert_int_eq(run_script(s, lib, NOPS(lib), AXSTM_OK), AXSTM_ETYPE);
    /* Timed out, without waiting and after waiting. */
    ck_assert_int_eq(axstm_atomically_timed(s, script_body, &sc, 0), AXSTM_ETIMEDOUT);
    ck_assert_int_eq(axstm_atomically_timed(s, script_body, &sc, 1000 * 1000), AXSTM_ETIMEDOUT);
    /* Retried without blocking: the watch keeps no key either. */
    ck_assert_int_eq(axstm_try_atomically(s, script_body, &sc, &w), AXSTM_RETRY);
    ck_assert_ptr_nonnull(w);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    tu_snapshot_free(&after);
    assert_keys(s, 1);
    axstm_watch_free(w);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    tu_snapshot_free(&after);
    assert_keys(s, 1);
    tu_snapshot_free(&before);
    axstm_store_free(s);
}
END_TEST

static int read_missing_body(axstm_txn *tx, void *arg)
{
    int *rc = arg;
    const void *data = NULL;
    size_t len = 0;
    int64_t x;
    rc[0] = axstm_txn_get(tx, "m1", &data, &len);
    rc[1] = axstm_txn_get_i64(tx, "m2", &x);
    rc[2] = axstm_txn_get(tx, "m3", NULL, NULL);
    rc[3] = axstm_txn_get_i64(tx, "m2", &x); /* again */
    return AXSTM_OK;
}

START_TEST(reads_of_missing_keys_create_no_key)
{
    axstm_store *s = tu_store_ok();
    int rc[4] = {1, 1, 1, 1}, i;
    axstm_stats st = tu_stats_ok(s);

    ck_assert_int_eq(axstm_atomically(s, read_missing_body, rc), AXSTM_OK);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(rc[i], AXSTM_ENOVALUE);
    assert_keys(s, 0);
    /* Read-only: nothing was committed. */
    ck_assert_uint_eq(tu_stats_ok(s).commits, st.commits);

    /* With other keys about, the same. */
    tu_put_i64(s, "present", 1);
    ck_assert_int_eq(axstm_atomically(s, read_missing_body, rc), AXSTM_OK);
    assert_keys(s, 1);
    assert_i64(s, "present", 1, 1);
    axstm_store_free(s);
}
END_TEST

/* Twenty new keys (more than a commit sorts without allocating), a blob,
 * a read of a missing key. */
#define AF_NEW 20
static char af_names[AF_NEW][16];

static void af_ops(struct op *ops)
{
    int i;
    for (i = 0; i < AF_NEW; i++) {
        snprintf(af_names[i], sizeof af_names[i], "new.%d", i);
        ops[i] = (struct op){OP_SET, af_names[i], i, 0, 0};
    }
    ops[AF_NEW] = (struct op){OP_SET_BLOB, "blob", 4, 0, 0};
    ops[AF_NEW + 1] = (struct op){OP_GET, "missing", 0, 0, 0};
}

/* After an out-of-memory failure: only "old" is in the store, as it was. */
static void af_assert_only_old(axstm_store *s, unsigned long n, int sticky, const char *what)
{
    axstm_stats st = tu_stats_ok(s);
    uint64_t seen = tu_foreach_count(s);
    ck_assert_msg(st.keys == 1 && seen == 1,
                  "%s failed with ENOMEM at allocation %lu (sticky %d): %llu keys by the "
                  "count, %llu by foreach, not 1",
                  what, n, sticky, (unsigned long long)st.keys, (unsigned long long)seen);
    assert_i64(s, "old", 1, 1);
}

START_TEST(out_of_memory_transaction_creates_no_key)
{
    int sticky, kind;
    for (kind = 0; kind < 2; kind++)
        for (sticky = 1; sticky >= 0; sticky--) {
            unsigned long n, made = 0, enomem = 0;
            for (n = 1; n < 100000; n++) {
                axstm_store *s = tu_store_ok();
                struct op ops[AF_NEW + 2];
                struct script sc;
                axstm_watch *w = NULL;
                unsigned long count;
                int rc;

                tu_put_i64(s, "old", 1);
                af_ops(ops);
                sc.ops = ops;
                sc.n = NOPS(ops);
                /* kind 0 commits; kind 1 retries without blocking, and
                 * must hand out a watch. */
                sc.ret = kind == 0 ? AXSTM_OK : AXSTM_RETRY;
                sc.runs = 0;
                count = axstm__alloc_count();
                axstm__alloc_fail_after(n, sticky);
                rc = kind == 0 ? axstm_atomically(s, script_body, &sc)
                               : axstm_try_atomically(s, script_body, &sc, &w);
                axstm__alloc_fail_after(0, 0);
                made = axstm__alloc_count() - count;
                if (rc == AXSTM_ENOMEM) {
                    enomem++;
                    ck_assert_ptr_null(w);
                    af_assert_only_old(s, n, sticky,
                                       kind == 0 ? "axstm_atomically" : "axstm_try_atomically");
                } else if (kind == 0) {
                    ck_assert_msg(rc == AXSTM_OK, "n=%lu sticky=%d: %s", n, sticky,
                                  axstm_strerror(rc));
                    assert_keys(s, 1 + AF_NEW + 1);
                } else {
                    ck_assert_msg(rc == AXSTM_RETRY, "n=%lu sticky=%d: %s", n, sticky,
                                  axstm_strerror(rc));
                    ck_assert_ptr_nonnull(w);
                    af_assert_only_old(s, n, sticky, "a retried axstm_try_atomically");
                    axstm_watch_free(w);
                    af_assert_only_old(s, n, sticky, "a retried axstm_try_atomically");
                }
                axstm_store_free(s);
                if (made < n)
                    break;
            }
            ck_assert_msg(made < n, "still allocating after %lu", n);
            ck_assert_msg(enomem > 0, "no allocation failure reached the caller");
        }
}
END_TEST

START_TEST(watch_on_missing_keys_creates_no_key_and_fires_on_commit)
{
    static const char *const keys[] = {"m1", "m2", "m3", "m2"};
    axstm_store *s = tu_store_ok();
    axstm_watch *w;
    unsigned long n, made = 0, enomem = 0;
    int sticky;

    w = watch_ok(s, keys, 4);
    assert_keys(s, 0);
    ck_assert(!readable(w));
    tu_put_i64(s, "m2", 1);
    ck_assert(readable(w));
    assert_keys(s, 1);
    axstm_watch_free(w);
    assert_keys(s, 1);
    tu_assert_absent(s, "m1");
    tu_assert_absent(s, "m3");
    axstm_store_free(s);

    /* Out of memory at any point: no key either. */
    for (sticky = 1; sticky >= 0; sticky--)
        for (n = 1; n < 100000; n++) {
            unsigned long count;
            int rc;
            s = tu_store_ok();
            w = NULL;
            count = axstm__alloc_count();
            axstm__alloc_fail_after(n, sticky);
            rc = axstm_watch_new(s, keys, 4, &w);
            axstm__alloc_fail_after(0, 0);
            made = axstm__alloc_count() - count;
            if (rc == AXSTM_ENOMEM) {
                enomem++;
                ck_assert_ptr_null(w);
            } else {
                ck_assert_msg(rc == AXSTM_OK, "n=%lu: %s", n, axstm_strerror(rc));
            }
            ck_assert_msg(tu_stats_ok(s).keys == 0 && tu_foreach_count(s) == 0,
                          "watch_new (%s, n=%lu sticky=%d) left a key", axstm_strerror(rc), n,
                          sticky);
            if (w != NULL) {
                tu_put_i64(s, "m3", 1);
                ck_assert(readable(w));
                axstm_watch_free(w);
            }
            axstm_store_free(s);
            if (made < n)
                break;
        }
    ck_assert_uint_gt(enomem, 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* A foreach visitor that waits does not stop reclamation (item 5)    */
/* ------------------------------------------------------------------ */

#define MIB ((size_t)1024 * 1024)
#define BIG_COMMITS 64

struct slow_walk {
    axstm_store *s;
    sem_t visiting, release;
    unsigned visits, torn;
    int rc;
};

/* Waits on its first visit until released; checks that "big" is whole. */
static int slow_visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    struct slow_walk *w = arg;
    const unsigned char *p = data;
    size_t i;
    (void)version;
    if (strcmp(key, "big") == 0) {
        if (p == NULL || len != MIB)
            w->torn++;
        for (i = 1; p != NULL && i < len; i++)
            if (p[i] != p[0]) {
                w->torn++;
                break;
            }
    }
    if (w->visits++ == 0) {
        sem_post(&w->visiting);
        tu_sem_wait_ok(&w->release);
    }
    return 0;
}

static void *slow_walk_main(void *arg)
{
    struct slow_walk *w = arg;
    w->rc = axstm_store_foreach(w->s, slow_visit, w);
    if (w->visits == 0)
        sem_post(&w->visiting); /* (fails the test, rather than hang it) */
    return NULL;
}

/*
 * While a visitor waits on its first visit, this thread replaces a 1 MiB
 * value 64 times.  Each commit retires the value it replaces, and the
 * committing thread reclaims at the end of its own commit: nothing but a
 * reader still pinned can hold that back.  Measured before the visitor is
 * released, the store's memory must hold a few of those values, not all.
 */
START_TEST(waiting_foreach_visitor_does_not_hold_back_reclamation)
{
    axstm_store *s = tu_store_ok();
    struct slow_walk w;
    unsigned char *buf = tu_xmalloc(MIB);
    axstm_value *h;
    axstm_stats before, after;
    pthread_t t;
    int i;

    memset(buf, 0, MIB);
    tu_put_bytes(s, "big", buf, MIB);
    tu_put_i64(s, "small", 1);
    before = tu_stats_ok(s);
    w.s = s;
    w.visits = w.torn = 0;
    w.rc = 12345;
    ck_assert_int_eq(sem_init(&w.visiting, 0, 0), 0);
    ck_assert_int_eq(sem_init(&w.release, 0, 0), 0);
    tu_start(&t, slow_walk_main, &w);
    tu_sem_wait_ok(&w.visiting);

    h = tu_usevar_ok(s, "big");
    for (i = 1; i <= BIG_COMMITS; i++) {
        memset(buf, i, MIB);
        ck_assert_int_eq(axstm_value_set(h, buf, MIB), AXSTM_OK);
        ck_assert_int_eq(tu_commit(h), AXSTM_OK);
    }
    after = tu_stats_ok(s);
    axstm_value_free(h);
    sem_post(&w.release);
    tu_join(t);

    ck_assert_int_eq(w.rc, AXSTM_OK);
    ck_assert_uint_eq(w.visits, 2);
    ck_assert_uint_eq(w.torn, 0);
    ck_assert_msg(after.bytes < 16 * MIB,
                  "after %d commits of 1 MiB while a foreach visitor waited, the store "
                  "holds %.1f MiB (%.1f MiB before): replaced values are not reclaimed "
                  "while the visitor waits",
                  BIG_COMMITS, (double)after.bytes / (double)MIB,
                  (double)before.bytes / (double)MIB);
    sem_destroy(&w.visiting);
    sem_destroy(&w.release);
    free(buf);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Memory                                                             */
/* ------------------------------------------------------------------ */

/*
 * A key per item: created, committed, deleted, committed, by a value
 * handle, a collection or a transaction in turn.  Memory after the first
 * few thousand items (every shard has its arena by then) must stay put.
 */
/*
 * An entry keeps its value's kind in the top bits of its version word
 * (entry.h), and versions wrap to 0 there.  A key at the last version
 * commits to version 0 with every value kind intact, and a handle checked
 * out at the last version, whose number is now the higher one, still
 * conflicts: the lock word decides, not the numbers (white-box).
 */
START_TEST(version_wraps_without_touching_values_or_the_rule)
{
    static const char big[] = "a value too long to be held inline in the entry";
    axstm_store *s = tu_store_ok();
    axstm_value *blob = tu_usevar_ok(s, "blob"), *small = tu_usevar_ok(s, "small");
    ck_assert_int_eq(axstm_value_set(blob, big, sizeof big), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(blob), AXSTM_OK);
    ck_assert_int_eq(axstm_value_set_i64(small, -7), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(small), AXSTM_OK);

    /* Nobody else runs: the test may write under no lock. */
    axstm__entry_set_version_locked(blob->item.entry, AXSTM__VERSION_MASK);
    axstm__entry_set_version_locked(small->item.entry, AXSTM__VERSION_MASK);
    ck_assert_int_eq(axstm_value_refresh(blob), AXSTM_OK);
    ck_assert_int_eq(axstm_value_refresh(small), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(blob), AXSTM__VERSION_MASK);
    size_t len;
    const void *data = axstm_value_data(blob, &len);
    ck_assert_uint_eq(len, sizeof big);
    ck_assert_mem_eq(data, big, sizeof big);
    int64_t x;
    ck_assert_int_eq(axstm_value_get_i64(small, &x), AXSTM_OK);
    ck_assert_int_eq(x, -7);

    axstm_value *stale = tu_usevar_ok(s, "small");
    ck_assert_uint_eq(axstm_value_version(stale), AXSTM__VERSION_MASK);
    ck_assert_int_eq(axstm_value_set_i64(small, 8), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(small), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(small), 0);
    ck_assert_int_eq(axstm_value_set_i64(stale, 9), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(stale), AXSTM_CONCURRENT_UPDATE);
    ck_assert_int_eq(axstm_value_commit(blob), AXSTM_OK); /* unchanged: shares its blob */
    ck_assert_uint_eq(axstm_value_version(blob), 0);

    tu_entry e;
    ck_assert(tu_lookup(s, "blob", &e));
    ck_assert_uint_eq(e.version, 0);
    ck_assert_uint_eq(e.len, sizeof big);
    ck_assert_mem_eq(e.data, big, sizeof big);
    free(e.data);
    assert_i64(s, "small", 0, 8);
    /* And on from there, as from any version. */
    ck_assert_int_eq(axstm_value_commit(small), AXSTM_OK);
    assert_i64(s, "small", 1, 8);
    axstm_value_free(stale);
    axstm_value_free(blob);
    axstm_value_free(small);
    axstm_store_free(s);
}
END_TEST

START_TEST(key_per_item_churn_keeps_memory_flat)
{
    const unsigned long items = scaled(200000), base_at = 4000;
    const uint64_t slack = 64 * 1024;
    axstm_store *s = tu_store_ok();
    unsigned char blob[BLOB_LEN];
    uint64_t base = 0, most = 0, max_keys = 0;
    unsigned long i, failed = 0;
    int last_rc = AXSTM_OK;
    axstm_stats st;

    memset(blob, 7, sizeof blob);
    for (i = 0; i < items; i++) {
        char key[32];
        const char *keyp = key;
        int rc[4] = {AXSTM_OK, AXSTM_OK, AXSTM_OK, AXSTM_OK}, k;
        snprintf(key, sizeof key, "item.%lu", i);
        if (i % 3 == 0) {
            axstm_value *h = NULL;
            TU_RETRY(rc[0], axstm_usevar(s, key, &h));
            if (rc[0] == AXSTM_OK) {
                rc[1] = axstm_value_set(h, blob, sizeof blob);
                TU_RETRY(rc[2], axstm_value_commit(h));
                (void)axstm_value_delete(h);
                TU_RETRY(rc[3], axstm_value_commit(h));
                axstm_value_free(h);
            }
        } else if (i % 3 == 1) {
            axstm_collection *c = NULL;
            TU_RETRY(rc[0], axstm_using(s, &keyp, 1, &c));
            if (rc[0] == AXSTM_OK) {
                rc[1] = axstm_value_set_i64(axstm_collection_at(c, 0), (int64_t)i);
                TU_RETRY(rc[2], axstm_collection_commit(c));
                (void)axstm_value_delete(axstm_collection_at(c, 0));
                TU_RETRY(rc[3], axstm_collection_commit(c));
                axstm_collection_free(c);
            }
        } else {
            struct op set[] = {{OP_SET_BLOB, key, 5, 0, 0}};
            struct op del[] = {{OP_DEL, key, 0, 0, 0}};
            rc[0] = run_script(s, set, 1, AXSTM_OK);
            rc[1] = run_script(s, del, 1, AXSTM_OK);
        }
        for (k = 0; k < 4; k++)
            if (rc[k] != AXSTM_OK) {
                failed++;
                last_rc = rc[k];
            }
        if ((i + 1) % 1000 == 0) {
            memset(&st, 0, sizeof st);
            (void)axstm_store_stats(s, &st);
            if (st.keys > max_keys)
                max_keys = st.keys;
            if (i + 1 == base_at)
                base = st.bytes;
            else if (i + 1 > base_at && st.bytes > most)
                most = st.bytes;
        }
    }
    ck_assert_msg(failed == 0, "%lu calls failed, the last with %s", failed,
                  axstm_strerror(last_rc));
    st = tu_stats_ok(s);
    ck_assert_uint_eq(max_keys, 0);
    assert_keys(s, 0);
    ck_assert_msg(most <= base + slack && st.bytes <= base + slack,
                  "after %lu items: %llu bytes (at most %llu on the way), after %lu: %llu", items,
                  (unsigned long long)st.bytes, (unsigned long long)most, base_at,
                  (unsigned long long)base);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Concurrency: incarnations                                          */
/* ------------------------------------------------------------------ */

/*
 * The keys of the concurrent tests hold (id, gen): an incarnation is made
 * by a commit that found no value and wrote (a new unique id, 0); a commit
 * that found (id, gen) writes (id, gen + 1) or deletes the key.  Every
 * successful commit is logged.  Afterwards, for every name and id: the
 * gens written are exactly 0, 1, ..., max (a repeat is a lost update, or a
 * handle that committed over a later incarnation); the id was deleted at
 * most once, at its max; and every id but the name's live one was deleted.
 * A key's version is always gen + 1 (0 when it has no value).
 */
struct incval {
    uint64_t id, gen;
};

enum { REC_WROTE = 1, REC_DELETED = 2 };

struct rec {
    uint64_t id, gen;
    uint32_t name, kind;
};

struct reclog {
    struct rec *v;
    size_t n, cap;
    int overflow;
};

static void log_add(struct reclog *l, uint32_t name, uint32_t kind, struct incval iv)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        struct rec *v = realloc(l->v, cap * sizeof *v);
        if (v == NULL) {
            l->overflow = 1;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].id = iv.id;
    l->v[l->n].gen = iv.gen;
    l->v[l->n].name = name;
    l->v[l->n].kind = kind;
    l->n++;
}

/* 1: (id, gen) with version gen + 1; 0: no value at version 0; -1: anything
 * else (a value of the wrong size, or a version that does not match). */
static int read_inc(const void *data, size_t len, uint64_t version, struct incval *out)
{
    if (data == NULL)
        return version == 0 ? 0 : -1;
    if (len != sizeof *out)
        return -1;
    memcpy(out, data, sizeof *out);
    return version == out->gen + 1 ? 1 : -1;
}

static int read_inc_value(const axstm_value *v, struct incval *out)
{
    size_t len;
    const void *data = axstm_value_data(v, &len);
    return read_inc(data, len, axstm_value_version(v), out);
}

static int rec_cmp(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;
    if (x->name != y->name)
        return x->name < y->name ? -1 : 1;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    return x->gen < y->gen ? -1 : x->gen > y->gen;
}

static void check_incarnations(axstm_store *s, struct reclog *const *logs, size_t nlogs,
                               const char *const names[], size_t nnames)
{
    size_t total = 0, i, j, k;
    struct rec *all;
    unsigned *live = calloc(nnames, sizeof *live);
    tu_snapshot snap;

    ck_assert_ptr_nonnull(live);
    for (i = 0; i < nlogs; i++) {
        ck_assert_msg(!logs[i]->overflow, "a log ran out of memory");
        total += logs[i]->n;
    }
    all = tu_xmalloc((total ? total : 1) * sizeof *all);
    for (i = 0, k = 0; i < nlogs; i++)
        for (j = 0; j < logs[i]->n; j++)
            all[k++] = logs[i]->v[j];
    qsort(all, total, sizeof *all, rec_cmp);
    tu_snapshot_take(s, &snap);

    for (i = 0; i < total; i = j) {
        const struct rec *r = &all[i];
        const char *name = names[r->name];
        const tu_entry *e = tu_snapshot_find(&snap, name);
        uint64_t writes = 0;
        size_t deletes = 0;
        for (j = i; j < total && all[j].name == r->name && all[j].id == r->id; j++) {
            if (all[j].kind == REC_WROTE) {
                if (all[j].gen != writes)
                    ck_abort_msg("%s, incarnation %#llx: gen %llu committed where %llu was due "
                                 "(a lost update, or a commit over a dead incarnation)",
                                 name, (unsigned long long)r->id, (unsigned long long)all[j].gen,
                                 (unsigned long long)writes);
                writes++;
            } else {
                deletes++;
                if (writes == 0 || all[j].gen != writes - 1)
                    ck_abort_msg("%s, incarnation %#llx: deleted at gen %llu, but gens 0..%lld "
                                 "were committed",
                                 name, (unsigned long long)r->id, (unsigned long long)all[j].gen,
                                 (long long)writes - 1);
            }
        }
        ck_assert_msg(deletes <= 1, "%s, incarnation %#llx deleted %zu times", name,
                      (unsigned long long)r->id, deletes);
        if (deletes == 0) {
            struct incval fv;
            int has = e != NULL && e->has_value && e->len == sizeof fv;
            if (has)
                memcpy(&fv, e->data, sizeof fv);
            ck_assert_msg(has && fv.id == r->id && fv.gen == writes - 1,
                          "%s, incarnation %#llx (gens 0..%llu) was never deleted, yet the "
                          "key does not hold it at the end",
                          name, (unsigned long long)r->id, (unsigned long long)writes - 1);
            live[r->name]++;
        }
    }
    for (i = 0; i < nnames; i++) {
        const tu_entry *e = tu_snapshot_find(&snap, names[i]);
        struct incval fv;
        int got = e == NULL ? 0
                            : read_inc(e->has_value ? (const void *)e->data : NULL,
                                       e->has_value ? e->len : 0, e->version, &fv);
        /* (A value of 0 length is never written.) */
        if (e != NULL && e->has_value && e->len == 0)
            got = -1;
        ck_assert_msg(got >= 0, "%s: a wrong state at the end (version %llu, %zu bytes)", names[i],
                      e ? (unsigned long long)e->version : 0ULL, e ? e->len : 0);
        ck_assert_msg(live[i] == (unsigned)got,
                      "%s: %u incarnations left undeleted, the key holds %d", names[i], live[i],
                      got);
    }
    tu_snapshot_free(&snap);
    free(all);
    free(live);
}

/* A new incarnation's id: unique per thread and sequence number. */
static uint64_t new_id(unsigned thread, uint64_t *seq)
{
    return (uint64_t)(thread + 1) << 40 | ++*seq;
}

/* ------------------------------------------------------------------ */
/* Concurrency: a shared name space under an auditor                  */
/* ------------------------------------------------------------------ */

#define NAMES 16
#define WORKERS 3

static char shared_names[NAMES][8];
static const char *shared_name_ptr[NAMES];

static void shared_names_init(void)
{
    int i;
    for (i = 0; i < NAMES; i++) {
        snprintf(shared_names[i], sizeof shared_names[i], "n.%d", i);
        shared_name_ptr[i] = shared_names[i];
    }
}

static uint32_t name_index(const char *key)
{
    return (uint32_t)atoi(key + 2);
}

enum { MODE_HANDLES, MODE_COLLECTIONS, MODE_TXN };

struct worker {
    axstm_store *s;
    unsigned id;
    int mode;
    unsigned long ops;
    uint64_t rng, seq;
    struct reclog log;
    unsigned long commits, deletes, conflicts, errors;
    int last_error;
    atomic_int *running;
};

static void worker_error(struct worker *w, int code)
{
    w->errors++;
    w->last_error = code;
}

/* What to do with a checked-out value: 1 wrote, 2 deleted, 0 deleted an
 * incarnation with no value (not logged); *iv becomes what is logged. */
static int decide(struct worker *w, axstm_value *v, int has, struct incval *iv)
{
    uint64_t r = tu_rand(&w->rng);
    if (has ? r % 4 == 0 : r % 8 == 0) {
        (void)axstm_value_delete(v);
        return has ? 2 : 0;
    }
    if (has) {
        iv->gen++;
    } else {
        iv->id = new_id(w->id, &w->seq);
        iv->gen = 0;
    }
    if (axstm_value_set(v, iv, sizeof *iv) != AXSTM_OK)
        worker_error(w, AXSTM_ENOMEM);
    return 1;
}

static void log_decision(struct worker *w, uint32_t name, int what, struct incval iv)
{
    if (what == 1)
        log_add(&w->log, name, REC_WROTE, iv);
    else if (what == 2)
        log_add(&w->log, name, REC_DELETED, iv);
    w->deletes += what != 1;
}

static void worker_handles(struct worker *w)
{
    axstm_value *held[2] = {NULL, NULL};
    unsigned long op;
    for (op = 0; op < w->ops; op++) {
        uint64_t r = tu_rand(&w->rng);
        axstm_value **slot = &held[r & 1];
        struct incval iv;
        int rc, has, what;
        if (*slot == NULL) {
            TU_RETRY(rc, axstm_usevar(w->s, shared_name_ptr[(r >> 8) % NAMES], slot));
            if (rc != AXSTM_OK) {
                *slot = NULL;
                worker_error(w, rc);
                continue;
            }
            if (read_inc_value(*slot, &iv) < 0)
                worker_error(w, 1000);
            continue; /* committed later, after other work */
        }
        has = read_inc_value(*slot, &iv);
        if (has < 0) {
            worker_error(w, 1001);
            has = 0;
        }
        what = decide(w, *slot, has, &iv);
        TU_RETRY(rc, axstm_value_commit(*slot));
        if (rc == AXSTM_OK) {
            w->commits++;
            log_decision(w, name_index(axstm_value_key(*slot)), what, iv);
        } else if (rc == AXSTM_CONCURRENT_UPDATE) {
            w->conflicts++;
        } else {
            worker_error(w, rc);
        }
        axstm_value_free(*slot);
        *slot = NULL;
    }
    axstm_value_free(held[0]);
    axstm_value_free(held[1]);
}

static void worker_collections(struct worker *w)
{
    unsigned long op;
    for (op = 0; op < w->ops; op++) {
        uint64_t r = tu_rand(&w->rng);
        const char *keys[2];
        axstm_collection *c;
        struct incval iv[2];
        int what[2], rc;
        size_t i;
        keys[0] = shared_name_ptr[r % NAMES];
        keys[1] = shared_name_ptr[(r % NAMES + 1 + (r >> 8) % (NAMES - 1)) % NAMES];
        TU_RETRY(rc, axstm_using(w->s, keys, 2, &c));
        if (rc != AXSTM_OK) {
            worker_error(w, rc);
            continue;
        }
        for (i = 0; i < 2; i++) {
            axstm_value *v = axstm_collection_at(c, i);
            int has = read_inc_value(v, &iv[i]);
            if (has < 0) {
                worker_error(w, 1002);
                has = 0;
            }
            what[i] = decide(w, v, has, &iv[i]);
        }
        TU_RETRY(rc, axstm_collection_commit(c));
        if (rc == AXSTM_OK) {
            w->commits++;
            for (i = 0; i < 2; i++)
                log_decision(w, name_index(keys[i]), what[i], iv[i]);
        } else if (rc == AXSTM_CONCURRENT_UPDATE) {
            w->conflicts++;
        } else {
            worker_error(w, rc);
        }
        axstm_collection_free(c);
    }
}

struct txn_step {
    struct worker *w;
    const char *key;
    int what;
    struct incval iv;
};

#define BAD_STATE 77

static int txn_step_body(axstm_txn *tx, void *arg)
{
    struct txn_step *st = arg;
    const void *data;
    size_t len;
    uint64_t r = tu_rand(&st->w->rng);
    int rc = axstm_txn_get(tx, st->key, &data, &len);
    if (rc == AXSTM_ENOVALUE) {
        st->iv.id = new_id(st->w->id, &st->w->seq);
        st->iv.gen = 0;
        st->what = 1;
        return axstm_txn_set(tx, st->key, &st->iv, sizeof st->iv);
    }
    if (rc != AXSTM_OK)
        return rc;
    if (len != sizeof st->iv)
        return BAD_STATE;
    memcpy(&st->iv, data, sizeof st->iv);
    if (r % 4 == 0) {
        st->what = 2;
        rc = axstm_txn_delete(tx, st->key);
        if (rc == AXSTM_OK && axstm_txn_get(tx, st->key, NULL, NULL) != AXSTM_ENOVALUE)
            return BAD_STATE;
        return rc;
    }
    st->what = 1;
    st->iv.gen++;
    return axstm_txn_set(tx, st->key, &st->iv, sizeof st->iv);
}

static void worker_txn(struct worker *w)
{
    unsigned long op;
    for (op = 0; op < w->ops; op++) {
        struct txn_step st;
        int rc;
        st.w = w;
        st.key = shared_name_ptr[tu_rand(&w->rng) % NAMES];
        rc = axstm_atomically(w->s, txn_step_body, &st);
        if (rc == AXSTM_OK) {
            w->commits++;
            log_decision(w, name_index(st.key), st.what, st.iv);
        } else {
            worker_error(w, rc);
        }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (w->mode == MODE_HANDLES)
        worker_handles(w);
    else if (w->mode == MODE_COLLECTIONS)
        worker_collections(w);
    else
        worker_txn(w);
    atomic_fetch_sub(w->running, 1);
    return NULL;
}

struct auditor {
    axstm_store *s;
    atomic_int *running;
    unsigned long snapshots, walks, errors;
    int last_error;
};

static int audit_visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    struct auditor *a = arg;
    struct incval iv;
    if (strncmp(key, "n.", 2) != 0 || read_inc(data, len, version, &iv) < 0) {
        a->errors++;
        a->last_error = 2000;
    }
    return 0;
}

static void *auditor_main(void *arg)
{
    struct auditor *a = arg;
    unsigned long round = 0;
    while (atomic_load(a->running) > 0 || round < 2) {
        axstm_collection *c;
        size_t i;
        int rc;
        round++;
        TU_RETRY(rc, axstm_using(a->s, shared_name_ptr, NAMES, &c));
        if (rc != AXSTM_OK) {
            a->errors++;
            a->last_error = rc;
        } else {
            for (i = 0; i < axstm_collection_size(c); i++) {
                struct incval iv;
                if (read_inc_value(axstm_collection_at(c, i), &iv) < 0) {
                    a->errors++;
                    a->last_error = 2001;
                }
            }
            a->snapshots++;
            axstm_collection_free(c);
        }
        rc = axstm_store_foreach(a->s, audit_visit, a);
        if (rc != AXSTM_OK) {
            a->errors++;
            a->last_error = rc;
        }
        a->walks++;
        sched_yield();
    }
    return NULL;
}

START_TEST(shared_names_created_and_deleted_under_auditor)
{
    axstm_store *s = tu_store_ok();
    struct worker w[WORKERS];
    struct reclog *logs[WORKERS];
    struct auditor a;
    atomic_int running;
    pthread_t t[WORKERS], ta;
    unsigned long commits = 0, deletes = 0;
    uint64_t present = 0;
    int i;

    shared_names_init();
    atomic_init(&running, WORKERS);
    memset(w, 0, sizeof w);
    for (i = 0; i < WORKERS; i++) {
        w[i].s = s;
        w[i].id = (unsigned)i;
        w[i].mode = i % 3;
        w[i].ops = scaled(6000);
        w[i].rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1);
        w[i].running = &running;
        logs[i] = &w[i].log;
    }
    memset(&a, 0, sizeof a);
    a.s = s;
    a.running = &running;
    tu_start(&ta, auditor_main, &a);
    for (i = 0; i < WORKERS; i++)
        tu_start(&t[i], worker_main, &w[i]);
    for (i = 0; i < WORKERS; i++)
        tu_join(t[i]);
    tu_join(ta);

    for (i = 0; i < WORKERS; i++) {
        ck_assert_msg(w[i].errors == 0, "worker %d (mode %d): %lu errors, the last %d (%s)", i,
                      w[i].mode, w[i].errors, w[i].last_error, axstm_strerror(w[i].last_error));
        commits += w[i].commits;
        deletes += w[i].deletes;
    }
    ck_assert_msg(a.errors == 0, "auditor: %lu errors, the last %d", a.errors, a.last_error);
    ck_assert_uint_gt(a.snapshots, 0);
    ck_assert_uint_gt(commits, 0);
    ck_assert_uint_gt(deletes, 0);
    check_incarnations(s, logs, WORKERS, shared_name_ptr, NAMES);
    /* The count agrees with what is there. */
    for (i = 0; i < NAMES; i++) {
        tu_entry e;
        if (tu_lookup(s, shared_name_ptr[i], &e)) {
            present++;
            free(e.data);
        }
    }
    assert_keys(s, present);
    for (i = 0; i < WORKERS; i++)
        free(w[i].log.v);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Concurrency: a queue with a key per item                           */
/* ------------------------------------------------------------------ */

#define Q_PRODUCERS 2
#define Q_CONSUMERS 2
#define Q_MISSING 50
#define Q_STILL_THERE 51

struct qput {
    int64_t value;
    char key[32];
};

static int q_index(axstm_txn *tx, const char *key, int64_t *x)
{
    int rc = axstm_txn_get_i64(tx, key, x);
    if (rc == AXSTM_ENOVALUE) {
        *x = 0;
        return AXSTM_OK;
    }
    return rc;
}

static int qput_body(axstm_txn *tx, void *arg)
{
    struct qput *p = arg;
    int64_t t;
    TU_TRY(q_index(tx, "q.tail", &t));
    snprintf(p->key, sizeof p->key, "q.item.%lld", (long long)t);
    TU_TRY(axstm_txn_set_i64(tx, p->key, p->value));
    return axstm_txn_set_i64(tx, "q.tail", t + 1);
}

static int qtake_body(axstm_txn *tx, void *arg)
{
    struct qput *p = arg;
    int64_t h, t, x;
    int rc;
    TU_TRY(q_index(tx, "q.head", &h));
    TU_TRY(q_index(tx, "q.tail", &t));
    if (h >= t)
        return AXSTM_RETRY;
    snprintf(p->key, sizeof p->key, "q.item.%lld", (long long)h);
    rc = axstm_txn_get_i64(tx, p->key, &p->value);
    if (rc == AXSTM_ENOVALUE)
        return Q_MISSING;
    TU_TRY(rc);
    TU_TRY(axstm_txn_delete(tx, p->key));
    rc = axstm_txn_get_i64(tx, p->key, &x);
    if (rc != AXSTM_ENOVALUE)
        return rc == AXSTM_OK ? Q_STILL_THERE : rc;
    return axstm_txn_set_i64(tx, "q.head", h + 1);
}

struct qworker {
    axstm_store *s;
    unsigned id;
    long n;
    int64_t *got;
    long done;
    int rc;
};

static void *producer_main(void *arg)
{
    struct qworker *q = arg;
    long i;
    q->rc = AXSTM_OK;
    for (i = 0; i < q->n; i++) {
        struct qput p;
        p.value = (int64_t)((uint64_t)(q->id + 1) << 32 | (uint64_t)i);
        q->rc = axstm_atomically(q->s, qput_body, &p);
        if (q->rc != AXSTM_OK)
            break;
        q->done++;
    }
    return NULL;
}

static void *consumer_main(void *arg)
{
    struct qworker *q = arg;
    long i;
    q->rc = AXSTM_OK;
    for (i = 0; i < q->n; i++) {
        struct qput p;
        q->rc = axstm_atomically_timed(q->s, qtake_body, &p, WATCHDOG_NS);
        if (q->rc != AXSTM_OK)
            break;
        q->got[q->done++] = p.value;
    }
    return NULL;
}

static int i64_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(key_per_item_queue_delivers_each_item_once)
{
    const long per_producer = (long)scaled(3000);
    const long total = per_producer * Q_PRODUCERS;
    axstm_store *s = tu_store_ok();
    struct qworker prod[Q_PRODUCERS], cons[Q_CONSUMERS];
    pthread_t tp[Q_PRODUCERS], tc[Q_CONSUMERS];
    int64_t *all = tu_xmalloc((size_t)total * sizeof *all);
    long i, k = 0;
    tu_snapshot snap;

    for (i = 0; i < Q_CONSUMERS; i++) {
        cons[i] = (struct qworker){s, (unsigned)i, total / Q_CONSUMERS, NULL, 0, 12345};
        cons[i].got = tu_xmalloc((size_t)cons[i].n * sizeof *cons[i].got);
        tu_start(&tc[i], consumer_main, &cons[i]);
    }
    for (i = 0; i < Q_PRODUCERS; i++) {
        prod[i] = (struct qworker){s, (unsigned)i, per_producer, NULL, 0, 12345};
        tu_start(&tp[i], producer_main, &prod[i]);
    }
    for (i = 0; i < Q_PRODUCERS; i++)
        tu_join(tp[i]);
    for (i = 0; i < Q_CONSUMERS; i++)
        tu_join(tc[i]);

    for (i = 0; i < Q_PRODUCERS; i++)
        ck_assert_msg(prod[i].rc == AXSTM_OK && prod[i].done == per_producer,
                      "producer %ld: %s after %ld items", i, axstm_strerror(prod[i].rc),
                      prod[i].done);
    for (i = 0; i < Q_CONSUMERS; i++)
        if (cons[i].rc == Q_MISSING) {
            long done = cons[i].done, c;
            for (c = 0; c < Q_CONSUMERS; c++)
                free(cons[c].got);
            free(all);
            axstm_store_free(s); /* no leak reported on top of the failure */
            ck_abort_msg("consumer %ld, after %ld items: a body saw head < tail but the head "
                         "item missing (consumed and deleted after its snapshot)",
                         i, done);
        }
    for (i = 0; i < Q_CONSUMERS; i++) {
        long j;
        ck_assert_msg(cons[i].rc == AXSTM_OK && cons[i].done == cons[i].n,
                      "consumer %ld: %d (%s) after %ld items", i, cons[i].rc,
                      axstm_strerror(cons[i].rc), cons[i].done);
        for (j = 0; j < cons[i].done; j++)
            all[k++] = cons[i].got[j];
        free(cons[i].got);
    }
    ck_assert_int_eq(k, total);
    qsort(all, (size_t)total, sizeof *all, i64_cmp);
    for (i = 0; i < total; i++) {
        int64_t want =
            (int64_t)((uint64_t)(i / per_producer + 1) << 32 | (uint64_t)(i % per_producer));
        ck_assert_msg(all[i] == want, "item %lld consumed %s", (long long)want,
                      all[i] < want ? "twice" : "never");
    }
    free(all);

    /* Only the counters are left. */
    assert_i64(s, "q.head", (uint64_t)total, total);
    assert_i64(s, "q.tail", (uint64_t)total, total);
    assert_keys(s, 2);
    tu_snapshot_take(s, &snap);
    ck_assert_uint_eq(snap.n, 2);
    tu_snapshot_free(&snap);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Concurrency: a handle held across deletes                          */
/* ------------------------------------------------------------------ */

/*
 * Churners turn one key over: a collection of "k" and "deletes" either
 * creates an incarnation of k, advances it, or deletes it and counts the
 * delete in "deletes" in the same commit.  The stale thread checks k out,
 * then reads "deletes" (after the checkout), then waits until "deletes"
 * has grown: a delete of k committed after its checkout, so its commit
 * must be rejected, whatever happened to k since.  Every fourth round it
 * waits for hundreds of deletes, so that the memory of the entry it holds
 * has been freed and reused for k meanwhile; every other round it commits
 * at once instead, which may succeed.
 */
#define CHURNERS 2
#define LONG_WAIT 600

static const char *const stale_names[] = {"k"};

struct churner {
    axstm_store *s;
    unsigned id;
    uint64_t rng, seq;
    struct reclog log;
    atomic_int *stop;
    unsigned long commits, deletes, errors;
    int last_error;
};

static void *churner_main(void *arg)
{
    static const char *const keys[] = {"k", "deletes"};
    struct churner *c = arg;
    while (!atomic_load(c->stop)) {
        axstm_collection *col;
        axstm_value *vk, *vd;
        struct incval iv;
        int64_t d = 0;
        int rc, has, deleting = 0;
        TU_RETRY(rc, axstm_using(c->s, keys, 2, &col));
        if (rc != AXSTM_OK) {
            c->errors++;
            c->last_error = rc;
            continue;
        }
        vk = axstm_collection_value(col, "k");
        vd = axstm_collection_value(col, "deletes");
        has = read_inc_value(vk, &iv);
        rc = axstm_value_get_i64(vd, &d);
        if (has < 0 || (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)) {
            /* A wrong state (a lost update, say): counted, and deleted so
             * that the run goes on (the stale thread waits for deletes). */
            c->errors++;
            c->last_error = 3000;
            (void)axstm_value_delete(vk);
            (void)axstm_value_set_i64(vd, d + 1);
            TU_RETRY(rc, axstm_collection_commit(col));
            axstm_collection_free(col);
            continue;
        }
        if (has && tu_rand(&c->rng) % 2 == 0) {
            deleting = 1;
            (void)axstm_value_delete(vk);
            (void)axstm_value_set_i64(vd, d + 1);
        } else {
            if (has) {
                iv.gen++;
            } else {
                iv.id = new_id(c->id, &c->seq);
                iv.gen = 0;
            }
            (void)axstm_value_set(vk, &iv, sizeof iv);
        }
        TU_RETRY(rc, axstm_collection_commit(col));
        if (rc == AXSTM_OK) {
            c->commits++;
            c->deletes += (unsigned long)deleting;
            log_add(&c->log, 0, deleting ? REC_DELETED : REC_WROTE, iv);
        } else if (rc != AXSTM_CONCURRENT_UPDATE) {
            c->errors++;
            c->last_error = rc;
        }
        axstm_collection_free(col);
    }
    return NULL;
}

struct stale_holder {
    axstm_store *s;
    unsigned long rounds;
    uint64_t seq;
    struct reclog log;
    atomic_int *stop;
    unsigned long must_fail, wrongly_committed, free_commits, errors;
    int last_error;
};

static int64_t deletes_of(axstm_value *d)
{
    int64_t x = 0;
    (void)axstm_value_get_i64(d, &x);
    return x;
}

static void *stale_holder_main(void *arg)
{
    struct stale_holder *h = arg;
    unsigned long round;
    for (round = 0; round < h->rounds; round++) {
        axstm_value *k = NULL, *d = NULL;
        struct incval iv;
        int64_t d0;
        /* Deletes to wait for: 1, none, 1, many. */
        int64_t wait = round % 4 == 3 ? LONG_WAIT : round % 2 == 0;
        int rc, has;
        TU_RETRY(rc, axstm_usevar(h->s, "k", &k));
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_usevar(h->s, "deletes", &d));
        if (rc != AXSTM_OK) {
            h->errors++;
            h->last_error = rc;
            axstm_value_free(k);
            continue;
        }
        has = read_inc_value(k, &iv);
        if (has < 0) {
            h->errors++;
            h->last_error = 4000;
            has = 0;
        }
        d0 = deletes_of(d);
        if (wait) {
            unsigned attempt = 0;
            while (deletes_of(d) < d0 + wait) {
                tu_backoff(++attempt);
                TU_RETRY(rc, axstm_value_refresh(d));
                if (rc != AXSTM_OK) {
                    h->errors++;
                    h->last_error = rc;
                    break;
                }
            }
        }
        if (has) {
            iv.gen++;
        } else {
            iv.id = new_id(100, &h->seq);
            iv.gen = 0;
        }
        (void)axstm_value_set(k, &iv, sizeof iv);
        TU_RETRY(rc, axstm_value_commit(k));
        if (rc == AXSTM_OK) {
            log_add(&h->log, 0, REC_WROTE, iv);
            if (wait)
                h->wrongly_committed++;
            else
                h->free_commits++;
        } else if (rc != AXSTM_CONCURRENT_UPDATE) {
            h->errors++;
            h->last_error = rc;
        }
        h->must_fail += wait != 0;
        axstm_value_free(k);
        axstm_value_free(d);
    }
    atomic_store(h->stop, 1);
    return NULL;
}

START_TEST(stale_handle_never_commits_over_newer_incarnation)
{
    axstm_store *s = tu_store_ok();
    struct churner c[CHURNERS];
    struct stale_holder h;
    struct reclog *logs[CHURNERS + 1];
    atomic_int stop;
    pthread_t tc[CHURNERS], th;
    unsigned long deletes = 0;
    int i;

    tu_put_i64(s, "deletes", 0);
    atomic_init(&stop, 0);
    memset(c, 0, sizeof c);
    memset(&h, 0, sizeof h);
    h.s = s;
    h.rounds = tu_under_valgrind() ? 20 : 100;
    h.stop = &stop;
    logs[CHURNERS] = &h.log;
    for (i = 0; i < CHURNERS; i++) {
        c[i].s = s;
        c[i].id = (unsigned)i;
        c[i].rng = 0x2545f4914f6cdd1dULL * (uint64_t)(i + 1);
        c[i].stop = &stop;
        logs[i] = &c[i].log;
        tu_start(&tc[i], churner_main, &c[i]);
    }
    tu_start(&th, stale_holder_main, &h);
    tu_join(th);
    for (i = 0; i < CHURNERS; i++)
        tu_join(tc[i]);

    ck_assert_msg(h.wrongly_committed == 0,
                  "%lu of %lu commits of a handle whose key was deleted after its checkout "
                  "succeeded",
                  h.wrongly_committed, h.must_fail);
    for (i = 0; i < CHURNERS; i++) {
        ck_assert_msg(c[i].errors == 0, "churner %d: %lu errors, the last %d", i, c[i].errors,
                      c[i].last_error);
        deletes += c[i].deletes;
    }
    ck_assert_msg(h.errors == 0, "stale holder: %lu errors, the last %d", h.errors, h.last_error);
    ck_assert_uint_eq(h.must_fail, h.rounds / 4 * 3);
    ck_assert_uint_ge(deletes, h.must_fail);
    check_incarnations(s, logs, CHURNERS + 1, stale_names, 1);
    for (i = 0; i < CHURNERS; i++)
        free(c[i].log.v);
    free(h.log.v);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Suite                                                              */
/* ------------------------------------------------------------------ */

static Suite *delete_suite(void)
{
    Suite *s = suite_create("delete");
    TCase *tc;

    tc = tcase_create("Handles");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, value_delete_hides_value_and_commit_removes_key);
    tcase_add_test(tc, collection_commit_deletes_all_or_nothing);
    tcase_add_test(tc, handles_checked_out_before_delete_conflict);
    tcase_add_test(tc, deleting_handle_cannot_commit_again);
    tcase_add_test(tc, stale_handle_conflicts_with_recreated_key_at_same_version);
    tcase_add_test(tc, stale_handle_conflicts_after_many_recreations_with_reused_memory);
    tcase_add_test(tc, refresh_after_delete_recreates_the_key);
    tcase_add_test(tc, delete_and_commit_of_one_version_only_one_wins);
    tcase_add_test(tc, delete_of_key_never_given_a_value);
    tcase_add_test(tc, empty_collection_and_borrowed_value_delete);
    tcase_add_test(tc, delete_bad_input_is_einval);
    tcase_add_test(tc, foreach_visitor_may_delete_what_it_visits);
    suite_add_tcase(s, tc);

    tc = tcase_create("Watches and waiting");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, watch_fires_when_key_is_deleted);
    tcase_add_test(tc, watch_follows_name_through_delete_and_recreate);
    tcase_add_test(tc, try_atomically_watch_on_missing_key_fires_on_first_commit);
    tcase_add_test(tc, retry_waiter_wakes_when_key_is_deleted);
    tcase_add_test(tc, retry_waiter_wakes_when_missing_key_is_created);
    suite_add_tcase(s, tc);

    tc = tcase_create("Transactions");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, txn_delete_later_reads_see_enovalue_and_commit_removes);
    tcase_add_test(tc, txn_get_of_deleted_key_leaves_outputs_untouched);
    tcase_add_test(tc, txn_delete_rolled_back_removes_nothing);
    tcase_add_test(tc, or_else_discards_delete_of_retried_branch);
    tcase_add_test(tc, txn_delete_of_missing_key_creates_nothing);
    tcase_add_test(tc, txn_read_of_key_deleted_after_snapshot_is_consistent);
    suite_add_tcase(s, tc);

    tc = tcase_create("No key left behind");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, rolled_back_sets_of_new_keys_leave_no_key);
    tcase_add_test(tc, reads_of_missing_keys_create_no_key);
    tcase_add_test(tc, out_of_memory_transaction_creates_no_key);
    tcase_add_test(tc, watch_on_missing_keys_creates_no_key_and_fires_on_commit);
    suite_add_tcase(s, tc);

    tc = tcase_create("Reclamation");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, waiting_foreach_visitor_does_not_hold_back_reclamation);
    suite_add_tcase(s, tc);

    tc = tcase_create("Memory");
    tcase_set_tags(tc, "local"); /* this process's memory */
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, key_per_item_churn_keeps_memory_flat);
    tcase_add_test(tc, stale_commit_on_freed_or_reused_entry_changes_nothing);
    tcase_add_test(tc, version_wraps_without_touching_values_or_the_rule);
    suite_add_tcase(s, tc);

    tc = tcase_create("Concurrency");
    tcase_set_tags(tc, "long"); /* thousands of round trips on a remote store */
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, shared_names_created_and_deleted_under_auditor);
    tcase_add_test(tc, key_per_item_queue_delivers_each_item_once);
    tcase_add_test(tc, stale_handle_never_commits_over_newer_incarnation);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(delete_suite());
}
