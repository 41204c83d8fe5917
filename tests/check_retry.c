/* SPDX-License-Identifier: MIT */
/*
 * check_retry.c -- blocking retry: a body that returns AXSTM_RETRY sleeps
 * until a key it read is committed (the seed's queue); timed calls keep
 * their deadline, also under busy keys and behind an irrevocable
 * transaction; a wait on a key that has no value or does not exist yet;
 * commits of other keys wake nobody, and no wake-up is lost.  A thread
 * cancelled while it waits leaves the store usable.
 *
 * The harness (bodies only record, the test's thread asserts; watchdogs
 * that turn a hang into a failure, never a timing) is in txnutil.h.
 */
#include "txnutil.h"

#include "axstm-internal.h" /* white-box: a key's waiters */

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

static int q_put(axstm_txn *tx, const char *q, int64_t x)
{
    char tail_key[64], slot[64];
    int64_t tail;
    qkey(tail_key, sizeof tail_key, q, "tail");
    TU_TRY(get_count(tx, tail_key, &tail));
    qslot(slot, sizeof slot, q, tail);
    TU_TRY(axstm_txn_set_i64(tx, slot, x));
    return axstm_txn_set_i64(tx, tail_key, tail + 1);
}

/* The seed's blocking get: AXSTM_RETRY when the queue is empty. */
static int q_get(axstm_txn *tx, const char *q, int64_t *out)
{
    char head_key[64], tail_key[64], slot[64];
    int64_t head, tail;
    qkey(head_key, sizeof head_key, q, "head");
    qkey(tail_key, sizeof tail_key, q, "tail");
    TU_TRY(get_count(tx, head_key, &head));
    TU_TRY(get_count(tx, tail_key, &tail));
    if (head == tail)
        return AXSTM_RETRY;
    qslot(slot, sizeof slot, q, head);
    TU_TRY(axstm_txn_get_i64(tx, slot, out));
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
    struct putter p = {q, x};
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
    struct putter p = {l->key, l->x};
    return axstm_atomically(l->s, put_body, &p);
}

/* ------------------------------------------------------------------ */
/* Blocking retry                                                     */
/* ------------------------------------------------------------------ */

START_TEST(blocking_get_waits_for_put)
{
    axstm_store *s = tu_store_ok();
    struct later l;
    struct getter g = {"q", -1, 0, &l};
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
    tu_assert_committed(s, "q.head", 1, 1, 1);
    tu_assert_committed(s, "q.tail", 1, 1, 1);
    axstm_store_free(s);
}
END_TEST

START_TEST(timed_get_times_out)
{
    const double timeout = 0.1;
    axstm_store *s = tu_store_ok();
    struct getter g = {"q", -1, 0, NULL};
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
    struct getter g = {"q", -1, 0, &l};
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
    TU_TRY(axstm_txn_get_i64(tx, "busy", &x));
    return AXSTM_RETRY;
}

START_TEST(timed_call_keeps_deadline_under_busy_keys)
{
    struct bt_run run;
    struct bt_writer w[BT_WRITERS];
    pthread_t th[BT_WRITERS];
    struct bt_call c = {0, 0, 0};
    double give_up;
    int i, calls = 0, rc = AXSTM_ETIMEDOUT;

    run.s = tu_store_ok();
    atomic_init(&run.stop, 0);
    atomic_init(&run.commits, 0);
    tu_put_i64(run.s, "busy", 0);
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
    TU_TRY(axstm_txn_get_i64(tx, "k", &x));
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
    TU_TRY(axstm_txn_get_i64(tx, "k", &x));
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
    tu_put_i64(h.s, "k", 1);
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
    tu_assert_committed(h.s, "k", 1, 1, 1);
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
    struct valwait w = {"v", -1, 0, &l};
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
    struct axstm__keyref ref = {key, strlen(key), 0, NULL};
    size_t n = 0;
    /* Pinned throughout: neither the entry nor a node taken out meanwhile
     * is freed under us. */
    unsigned pin = axstm__epoch_pin(&s->epoch);
    *notified = 0;
    axstm__table_find(&s->table, &ref);
    for (struct axstm__waitnode *node = ref.entry != NULL ? atomic_load(&ref.entry->waiters) : NULL;
         node != NULL; node = atomic_load(&node->next)) {
        int posted = 0;
        n++;
        if (node->waiter->fd < 0 && sem_getvalue(&node->waiter->sem, &posted) == 0 && posted > 0)
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
    TU_TRY(axstm_txn_get_i64(tx, "watched", &w->x));
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
    tu_put_i64(s, "watched", 0);
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
    while ((registered = waiters_on(s, "watched", &notified)) == 0 && !atomic_load(&w.done) &&
           tu_now() < give_up)
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
    tu_put_i64(s, "watched", 1);
    pthread_join(waiter, NULL);
    tu_put_i64(s, "stop", 1);
    pthread_join(decoy, NULL);

    ck_assert_msg(registered == 1 && notified == 0,
                  "%zu waiters on \"watched\" (%zu notified) before the other commits", registered,
                  notified);
    ck_assert_msg(errors == 0, "unrelated commit: %s", axstm_strerror(last_rc));
    ck_assert_int_eq(commits, UNRELATED_COMMITS);
    ck_assert_msg(!done_after && runs_after == 1 && still == 1 && notified_after == 0,
                  "after %ld commits of other keys: the wait %s, the body ran %u times, "
                  "%zu waiters (%zu notified)",
                  commits, done_after ? "ended" : "goes on", runs_after, still, notified_after);
    ck_assert_msg(w.rc == AXSTM_OK, "waiting on \"watched\": %s", axstm_strerror(w.rc));
    ck_assert_int_eq(w.x, 1);
    ck_assert_uint_eq(atomic_load(&w.runs), 2);
    ck_assert_msg(u.decoy_rc == AXSTM_OK, "decoy waiter: %s", axstm_strerror(u.decoy_rc));
    ck_assert_int_ge(u.decoy_runs, 2); /* the decoys' commits did wake it */
    tu_assert_committed(s, "watched", 2, 1, 1);
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
    tu_assert_committed(pp.s, "ball", PP_ROUNDS, 1, PP_ROUNDS);
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
        struct putter pt = {two_queues && i % 2 ? "q2" : "q1", QW_SENTINEL};
        int rc = axstm_atomically(run.s, put_body, &pt);
        if (rc != AXSTM_OK)
            prod[0].errors++, prod[0].last_rc = rc;
    }
    for (i = 0; i < QW_CONSUMERS; i++)
        pthread_join(cth[i], NULL);

    for (i = 0; i < QW_PRODUCERS; i++) {
        ck_assert_msg(prod[i].errors == 0, "producer %d: %s", i, axstm_strerror(prod[i].last_rc));
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
    if (tu_store_is_remote()) {
        /* Its waiters are not in this process's tables: give it a moment
         * to reach its wait (cancelling it before is a test too). */
        tu_sleep_s(0.05);
        return;
    }
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

    tu_put_i64(s, "cancel.key", 7);
    ck_assert_int_eq(pthread_join(b, NULL), 0);
    ck_assert_int_eq(survivor.rc, AXSTM_OK);

    /* And this thread can still run transactions of its own. */
    ck_assert_int_eq(axstm_atomically(s, wait_for_cancel_key, NULL), AXSTM_OK);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Suite                                                              */
/* ------------------------------------------------------------------ */

static Suite *retry_suite(void)
{
    Suite *s = suite_create("retry");
    TCase *tc;

    tc = tcase_create("Blocking retry");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, blocking_get_waits_for_put);
    tcase_add_test(tc, timed_get_times_out);
    tcase_add_test(tc, timed_get_returns_when_put_comes_in_time);
    tcase_add_test(tc, timed_call_keeps_deadline_under_busy_keys);
    tcase_add_test(tc, wait_on_key_that_does_not_exist);
    tcase_add_test(tc, wait_on_key_with_no_value);
    tcase_add_test(tc, wakeup_right_after_retry_is_not_lost);
    tcase_add_test(tc, no_lost_wakeup_one_queue);
    tcase_add_test(tc, no_lost_wakeup_or_else_over_two_queues);
    suite_add_tcase(s, tc);

    /* What only the in-process store has: irrevocable runs, its waiter lists. */
    tc = tcase_create("Blocking retry, in process");
    tcase_set_tags(tc, "local");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, timed_call_does_not_queue_for_irrevocable);
    tcase_add_test(tc, unrelated_commits_do_not_wake);
    suite_add_tcase(s, tc);

    tc = tcase_create("Cancellation");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, cancel_blocked_waiter_leaves_store_usable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(retry_suite());
}
