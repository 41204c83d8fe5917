/* SPDX-License-Identifier: MIT */
/*
 * check_watch.c -- watches (a descriptor per watch, for event loops) and
 * axstm_try_atomically, the transaction that never blocks.
 *
 * A commit notifies the watches of its keys before it returns, so in a
 * single thread "readable" and "not readable" are exact answers: the tests
 * poll with a zero timeout.  Only the tests that involve a second thread
 * wait (with a generous timeout that is never reached when all is well).
 */
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <unistd.h>

#include "testutil.h"

#include "alloc.h"
#include "axstm-internal.h" /* white-box: the wait buckets, a key's waiters */

static axstm_watch *const w_sentinel = (axstm_watch *)&w_sentinel;

/* ------------------------------------------------------------------ */
/* Helpers                                                            */
/* ------------------------------------------------------------------ */

/* 1 when fd polls readable within timeout_ms (0: right now), else 0. */
static int fd_readable(int fd, int timeout_ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    int rc;
    while ((rc = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    ck_assert_msg(rc >= 0, "poll: %s", strerror(errno));
    return rc == 1 && (p.revents & POLLIN) != 0;
}

static int readable(const axstm_watch *w)
{
    int fd = axstm_watch_fd(w);
    ck_assert_int_ge(fd, 0);
    return fd_readable(fd, 0);
}

static axstm_watch *watch_ok(axstm_store *s, const char *const keys[], size_t n)
{
    axstm_watch *w = w_sentinel;
    int rc;
    TU_RETRY(rc, axstm_watch_new(s, keys, n, &w));
    ck_assert_msg(rc == AXSTM_OK, "watch_new: %s", axstm_strerror(rc));
    ck_assert_ptr_ne(w, w_sentinel);
    ck_assert_ptr_nonnull(w);
    return w;
}

static axstm_watch *watch1_ok(axstm_store *s, const char *key)
{
    return watch_ok(s, &key, 1);
}

static void rearm_ok(axstm_watch *w)
{
    ck_assert_int_eq(axstm_watch_rearm(w), AXSTM_OK);
}

/* Commits x to every key of keys[0..n) with one collection commit. */
static void put_all(axstm_store *s, const char *const keys[], size_t n, int64_t x)
{
    axstm_collection *c = tu_using_ok(s, keys, n);
    size_t i;
    for (i = 0; i < axstm_collection_size(c); i++)
        tu_set_i64_ok(axstm_collection_at(c, i), x);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    axstm_collection_free(c);
}

/* A transaction body that writes arg->x to arg->key. */
struct put_arg {
    const char *key;
    int64_t x;
};

static int put_body(axstm_txn *tx, void *arg)
{
    const struct put_arg *p = arg;
    return axstm_txn_set_i64(tx, p->key, p->x);
}

static int txn_put(axstm_store *s, const char *key, int64_t x)
{
    struct put_arg p = {key, x};
    return axstm_atomically(s, put_body, &p);
}

/* Entries in /proc/self/fd: the process's open descriptors (the directory
 * stream's own descriptor counts every time, so differences are exact). */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    ck_assert_msg(d != NULL, "/proc/self/fd: %s", strerror(errno));
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* The highest descriptor open now below limit.  (valgrind keeps its own
 * descriptors above the soft limit it reports.) */
static int max_fd_below(rlim_t limit)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = -1;
    ck_assert_msg(d != NULL, "/proc/self/fd: %s", strerror(errno));
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && atoi(e->d_name) > n && (rlim_t)atoi(e->d_name) < limit)
            n = atoi(e->d_name);
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------ */
/* Firing                                                             */
/* ------------------------------------------------------------------ */

START_TEST(not_readable_before_a_change)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v, *stale;
    axstm_watch *w;

    /* Commits made before the watch do not count. */
    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "a", 2);
    w = watch1_ok(s, "a");
    ck_assert(!readable(w));

    /* Checking out, changing a private copy, refreshing: no commit. */
    v = tu_usevar_ok(s, "a");
    tu_set_i64_ok(v, 3);
    tu_refresh_ok(v);
    ck_assert(!readable(w));

    /* A rejected commit writes nothing, so it wakes nobody. */
    stale = tu_usevar_ok(s, "a");
    tu_set_i64_ok(v, 4);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    ck_assert(readable(w));
    rearm_ok(w);
    tu_set_i64_ok(stale, 5);
    ck_assert_int_eq(tu_commit(stale), AXSTM_CONCURRENT_UPDATE);
    ck_assert(!readable(w));

    axstm_value_free(v);
    axstm_value_free(stale);
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

START_TEST(fires_on_value_commit)
{
    axstm_store *s = tu_store_ok();
    axstm_watch *w = watch1_ok(s, "a");
    ck_assert(!readable(w));
    tu_put_i64(s, "a", 1);
    ck_assert(readable(w));
    /* Readable stays readable until re-armed: polling does not consume. */
    ck_assert(readable(w));
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

START_TEST(fires_on_collection_commit)
{
    static const char *const keys[] = {"x", "a", "y"};
    axstm_store *s = tu_store_ok();
    axstm_watch *w = watch1_ok(s, "a");
    axstm_collection *c = tu_using_ok(s, keys, 3);

    ck_assert(!readable(w));
    /* Written unchanged, as Axon does: still a commit of "a". */
    tu_set_i64_ok(axstm_collection_value(c, "x"), 1);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    ck_assert(readable(w));
    axstm_collection_free(c);
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

static int read_a_body(axstm_txn *tx, void *arg)
{
    int64_t x;
    int rc = axstm_txn_get_i64(tx, "a", &x);
    if (rc == AXSTM_OK)
        *(int64_t *)arg = x;
    return rc;
}

static int fail_after_write_body(axstm_txn *tx, void *arg)
{
    int rc = axstm_txn_set_i64(tx, "a", 99);
    (void)arg;
    return rc != AXSTM_OK ? rc : 7; /* a caller's code: roll back */
}

START_TEST(fires_on_atomically)
{
    axstm_store *s = tu_store_ok();
    axstm_watch *w = watch1_ok(s, "a");
    int64_t x = 0;

    ck_assert_int_eq(txn_put(s, "b", 1), AXSTM_OK);
    ck_assert(!readable(w));
    ck_assert_int_eq(txn_put(s, "a", 5), AXSTM_OK);
    ck_assert(readable(w));
    rearm_ok(w);

    /* Reading "a" publishes nothing; rolling back a write of it neither. */
    ck_assert_int_eq(axstm_atomically(s, read_a_body, &x), AXSTM_OK);
    ck_assert_int_eq(x, 5);
    ck_assert(!readable(w));
    ck_assert_int_eq(axstm_atomically(s, fail_after_write_body, NULL), 7);
    ck_assert(!readable(w));
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

START_TEST(works_with_poll_epoll_and_select)
{
    axstm_store *s = tu_store_ok();
    axstm_watch *w = watch1_ok(s, "a");
    int fd = axstm_watch_fd(w);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev, got;
    struct timeval zero;
    fd_set rd;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_lt(fd, FD_SETSIZE);
    ck_assert_int_ge(ep, 0);
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
    ck_assert_int_eq(epoll_wait(ep, &got, 1, 0), 0);
    FD_ZERO(&rd);
    FD_SET(fd, &rd);
    zero.tv_sec = zero.tv_usec = 0;
    ck_assert_int_eq(select(fd + 1, &rd, NULL, NULL, &zero), 0);

    tu_put_i64(s, "a", 1);
    ck_assert_int_eq(epoll_wait(ep, &got, 1, 0), 1);
    ck_assert(got.events & EPOLLIN);
    FD_ZERO(&rd);
    FD_SET(fd, &rd);
    zero.tv_sec = zero.tv_usec = 0;
    ck_assert_int_eq(select(fd + 1, &rd, NULL, NULL, &zero), 1);
    ck_assert(FD_ISSET(fd, &rd));

    rearm_ok(w);
    ck_assert_int_eq(epoll_wait(ep, &got, 1, 0), 0);
    close(ep);
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

/* A loop asleep in poll() is woken by another thread's commit. */
struct later_commit {
    axstm_store *s;
    int rc;
};

static void *commit_later(void *arg)
{
    struct later_commit *lc = arg;
    axstm_value *v = NULL;
    int rc;
    tu_sleep_ns(20 * 1000 * 1000);
    TU_RETRY(rc, axstm_usevar(lc->s, "a", &v));
    if (rc == AXSTM_OK) {
        rc = axstm_value_set_i64(v, 1);
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_value_commit(v));
        axstm_value_free(v);
    }
    lc->rc = rc;
    return NULL;
}

START_TEST(wakes_a_sleeping_poll)
{
    axstm_store *s = tu_store_ok();
    axstm_watch *w = watch1_ok(s, "a");
    struct later_commit lc = {s, -100};
    pthread_t t;
    double t0;
    int woke;

    ck_assert_int_eq(pthread_create(&t, NULL, commit_later, &lc), 0);
    t0 = tu_now();
    woke = fd_readable(axstm_watch_fd(w), 30000);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(lc.rc, AXSTM_OK);
    ck_assert(woke);
    ck_assert_msg(tu_now() - t0 < 20.0, "woke only after %.1f s", tu_now() - t0);
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Re-arm                                                             */
/* ------------------------------------------------------------------ */

START_TEST(rearm_consumes_the_event)
{
    axstm_store *s = tu_store_ok();
    axstm_watch *w = watch1_ok(s, "a");
    int round;

    /* Re-arming with nothing pending is fine and changes nothing. */
    rearm_ok(w);
    ck_assert(!readable(w));
    for (round = 0; round < 3; round++) {
        tu_put_i64(s, "a", round);
        ck_assert(readable(w));
        rearm_ok(w);
        ck_assert(!readable(w));
        rearm_ok(w);
        ck_assert(!readable(w));
    }
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

START_TEST(one_rearm_consumes_many_commits)
{
    static const char *const keys[] = {"a", "b"};
    axstm_store *s = tu_store_ok();
    axstm_watch *w = watch_ok(s, keys, 2);
    int i;

    for (i = 0; i < 10; i++)
        tu_put_i64(s, keys[i % 2], i);
    put_all(s, keys, 2, 11); /* one commit of both keys */
    ck_assert_int_eq(txn_put(s, "b", 12), AXSTM_OK);
    ck_assert(readable(w));
    rearm_ok(w);
    ck_assert(!readable(w));
    tu_put_i64(s, "b", 13);
    ck_assert(readable(w));
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

/* A long-lived watch used the documented way -- re-arm, then read --
 * while another thread commits as fast as it can: no commit may be lost
 * between the re-arm and the read, so the loop must see the last value and
 * never sleep through it.  (A lost one leaves the descriptor quiet while
 * the value it missed sits in the store: poll() times out.)  The loop runs
 * for a while rather than to a count, for many re-arms racing commits. */
struct counter_run {
    axstm_store *s;
    atomic_int stop;
    /* Written by the worker only; the loop reads it to know the worker
     * has got going (a loaded machine may not run it at once). */
    atomic_llong committed;
    int rc;
};

static int incr_body(axstm_txn *tx, void *arg)
{
    int64_t x;
    int rc = axstm_txn_get_i64(tx, "c", &x);
    (void)arg;
    if (rc == AXSTM_ENOVALUE)
        x = 0;
    else if (rc != AXSTM_OK)
        return rc;
    return axstm_txn_set_i64(tx, "c", x + 1);
}

static void *count_up(void *arg)
{
    struct counter_run *r = arg;
    int rc = AXSTM_OK;
    while (rc == AXSTM_OK && !atomic_load_explicit(&r->stop, memory_order_relaxed)) {
        rc = axstm_atomically(r->s, incr_body, NULL);
        if (rc == AXSTM_OK &&
            (atomic_fetch_add_explicit(&r->committed, 1, memory_order_relaxed) + 1) % 4 == 0)
            sched_yield(); /* spread commits over the loop's re-arm/read */
    }
    r->rc = rc;
    return NULL;
}

static int read_c_body(axstm_txn *tx, void *arg)
{
    int rc = axstm_txn_get_i64(tx, "c", arg);
    if (rc == AXSTM_ENOVALUE) {
        *(int64_t *)arg = 0;
        rc = AXSTM_OK;
    }
    return rc;
}

START_TEST(rearm_then_read_loses_nothing)
{
    static const char *const c[] = {"c"};
    struct counter_run run;
    axstm_watch *w, *unused = w_sentinel;
    int64_t x = 0, last = 0;
    long wakeups = 0, went_back = 0, timeouts = 0, errors = 0;
    double stop_at, give_up;
    long long committed = -1;
    int joined = 0;
    pthread_t t;

    memset(&run, 0, sizeof run);
    run.s = tu_store_ok();
    atomic_init(&run.stop, 0);
    atomic_init(&run.committed, 0);
    w = watch_ok(run.s, c, 1);
    ck_assert_int_eq(pthread_create(&t, NULL, count_up, &run), 0);
    stop_at = tu_now() + 0.4;
    give_up = tu_now() + 20.0;
    /* Until the worker has stopped and the loop has read its last commit. */
    while (!joined || last < committed) {
        int rc, wait_ms;
        /* Stop the worker once the time is up and it has done some work. */
        if (!joined && tu_now() >= stop_at &&
            (atomic_load(&run.committed) >= 1000 || tu_now() >= give_up)) {
            atomic_store(&run.stop, 1);
            ck_assert_int_eq(pthread_join(t, NULL), 0);
            joined = 1;
            committed = atomic_load(&run.committed);
            continue;
        }
        /* While the worker runs, wake up at stop_at at the latest; once it
         * is gone, anything unread must show at once (2 s is for a slow
         * machine: correct code returns immediately). */
        wait_ms = joined ? 2000 : (int)((stop_at - tu_now()) * 1000) + 1;
        if (!joined && wait_ms < 10)
            wait_ms = 10; /* past stop_at, waiting for the worker's first commits */
        if (!fd_readable(axstm_watch_fd(w), wait_ms > 0 ? wait_ms : 0)) {
            if (joined) {
                timeouts++;
                break;
            }
            continue;
        }
        wakeups++;
        rearm_ok(w);
        TU_RETRY(rc, axstm_try_atomically(run.s, read_c_body, &x, &unused));
        if (rc != AXSTM_OK) {
            errors++;
            break;
        }
        went_back += x < last;
        last = x;
    }
    if (!joined) {
        atomic_store(&run.stop, 1);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
    }
    ck_assert_int_eq(run.rc, AXSTM_OK);
    ck_assert_int_eq(errors, 0);
    ck_assert_int_eq(went_back, 0);
    ck_assert_int_eq(timeouts, 0);
    ck_assert_int_ge(committed, 1000);
    ck_assert_msg(last == committed, "the loop saw %lld of %lld increments, then silence",
                  (long long)last, committed);
    ck_assert_int_gt(wakeups, 0);
    ck_assert_ptr_eq(unused, w_sentinel); /* the read never retried */
    axstm_watch_free(w);
    axstm_store_free(run.s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Keys                                                               */
/* ------------------------------------------------------------------ */

START_TEST(unwatched_keys_do_not_wake)
{
    enum { OTHERS = 500 };
    static const char *const others[] = {"b", "c"};
    static char names[OTHERS][16];
    const char *keys[OTHERS];
    axstm_store *s = tu_store_ok();
    axstm_watch *w = watch1_ok(s, "a"), *wo;
    int i;

    tu_put_i64(s, "b", 1);
    put_all(s, others, 2, 2);
    ck_assert_int_eq(txn_put(s, "c", 3), AXSTM_OK);
    ck_assert(!readable(w));

    /* Enough other keys, watched by another watch, that many share "a"'s
     * wait bucket: a commit must wake the watches of its own keys, not
     * every watch of its neighbours. */
    for (i = 0; i < OTHERS; i++) {
        snprintf(names[i], sizeof names[i], "other.%d", i);
        keys[i] = names[i];
    }
    wo = watch_ok(s, keys, OTHERS);
    for (i = 0; i < OTHERS; i++)
        tu_put_i64(s, keys[i], i);
    ck_assert(readable(wo));
    ck_assert(!readable(w));
    /* Prefixes and extensions of the name are other keys too. */
    tu_put_i64(s, "aa", 1);
    tu_put_i64(s, "A", 1);
    ck_assert(!readable(w));
    tu_put_i64(s, "a", 1);
    ck_assert(readable(w));
    axstm_watch_free(w);
    axstm_watch_free(wo);
    axstm_store_free(s);
}
END_TEST

START_TEST(key_created_later)
{
    static const char *const keys[] = {"later.1", "later.2"};
    axstm_store *s = tu_store_ok();
    axstm_watch *w = watch1_ok(s, "later");
    axstm_watch *w2 = watch_ok(s, keys, 2);
    tu_snapshot snap;
    const tu_entry *e;

    /* Watching creates no key: nobody committed one. */
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0);
    tu_snapshot_take(s, &snap);
    e = tu_snapshot_find(&snap, "later");
    ck_assert_ptr_null(e);
    tu_snapshot_free(&snap);
    ck_assert(!readable(w));

    tu_put_i64(s, "later", 1);
    ck_assert(readable(w));
    ck_assert(!readable(w2));
    /* The first commit may come from a transaction, too. */
    ck_assert_int_eq(txn_put(s, "later.2", 1), AXSTM_OK);
    ck_assert(readable(w2));
    axstm_watch_free(w);
    axstm_watch_free(w2);
    axstm_store_free(s);
}
END_TEST

START_TEST(many_watches_on_one_key)
{
    enum { N = 64 };
    axstm_store *s = tu_store_ok();
    axstm_watch *w[N];
    int i, fired = 0, still = 0;

    for (i = 0; i < N; i++)
        w[i] = watch1_ok(s, "a");
    for (i = 0; i < N; i++)
        ck_assert(!readable(w[i]));
    tu_put_i64(s, "a", 1);
    for (i = 0; i < N; i++)
        fired += readable(w[i]);
    ck_assert_int_eq(fired, N);

    /* Re-arming one leaves the others readable; freeing some (from the
     * middle of the key's list too) leaves the rest working. */
    rearm_ok(w[0]);
    ck_assert(!readable(w[0]));
    ck_assert(readable(w[1]));
    for (i = 0; i < N; i += 2) {
        axstm_watch_free(w[i]);
        w[i] = NULL;
    }
    for (i = 1; i < N; i += 2)
        rearm_ok(w[i]);
    tu_put_i64(s, "a", 2);
    for (i = 1; i < N; i += 2)
        fired += readable(w[i]);
    ck_assert_int_eq(fired, N + N / 2);
    for (i = 1; i < N; i += 2) {
        rearm_ok(w[i]);
        still += readable(w[i]);
        axstm_watch_free(w[i]);
    }
    ck_assert_int_eq(still, 0);
    axstm_store_free(s);
}
END_TEST

START_TEST(one_watch_on_many_keys)
{
    enum { N = 40 };
    static char names[N][16];
    const char *keys[N + 2];
    axstm_store *s = tu_store_ok();
    axstm_watch *w;
    int i, fired = 0, quiet = 0;

    for (i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "k.%d", i);
        keys[i] = names[i];
    }
    /* Duplicates watch the same key. */
    keys[N] = names[0];
    keys[N + 1] = names[N - 1];
    w = watch_ok(s, keys, N + 2);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0); /* watching creates no key */
    for (i = 0; i < N; i++) {
        quiet += !readable(w);
        tu_put_i64(s, keys[i], i);
        fired += readable(w);
        rearm_ok(w);
    }
    ck_assert_int_eq(quiet, N);
    ck_assert_int_eq(fired, N);
    ck_assert(!readable(w));
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

START_TEST(no_keys_never_fires)
{
    static const char *const keys[] = {"a"};
    axstm_store *s = tu_store_ok();
    axstm_watch *w0 = watch_ok(s, NULL, 0);
    axstm_watch *w1 = watch_ok(s, keys, 0);

    tu_put_i64(s, "a", 1);
    put_all(s, keys, 1, 2);
    ck_assert_int_eq(txn_put(s, "b", 3), AXSTM_OK);
    ck_assert(!readable(w0));
    ck_assert(!readable(w1));
    ck_assert_int_ge(axstm_watch_fd(w0), 0);
    rearm_ok(w0);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 2);
    axstm_watch_free(w0);
    axstm_watch_free(w1);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* try_atomically                                                     */
/* ------------------------------------------------------------------ */

/* Takes "q" when it has a value (writing it back empty-handed), else
 * retries: the queue consumer's shape, on one slot. */
struct take {
    int runs;
    int64_t got;
};

static int take_body(axstm_txn *tx, void *arg)
{
    struct take *t = arg;
    int64_t x;
    int rc;

    t->runs++;
    rc = axstm_txn_get_i64(tx, "q", &x);
    if (rc == AXSTM_ENOVALUE || (rc == AXSTM_OK && x == 0))
        return AXSTM_RETRY;
    if (rc != AXSTM_OK)
        return rc;
    t->got = x;
    return axstm_txn_set_i64(tx, "q", 0);
}

static int try_ok(axstm_store *s, axstm_fn fn, void *arg, axstm_watch **w)
{
    int rc;
    TU_RETRY(rc, axstm_try_atomically(s, fn, arg, w));
    return rc;
}

START_TEST(try_commits_without_a_watch)
{
    axstm_store *s = tu_store_ok();
    axstm_watch *w = w_sentinel, *other = watch1_ok(s, "q");
    struct take t = {0, 0};
    int64_t x = -1;

    tu_put_i64(s, "q", 42);
    rearm_ok(other);
    ck_assert_int_eq(try_ok(s, take_body, &t, &w), AXSTM_OK);
    ck_assert_ptr_eq(w, w_sentinel);
    ck_assert_int_eq(t.got, 42);
    ck_assert_int_eq(t.runs, 1);
    /* Published like any commit: the value, and other watches fire. */
    ck_assert_int_eq(axstm_atomically(s, read_a_body, &x), AXSTM_ENOVALUE);
    ck_assert(readable(other));
    {
        axstm_value *v = tu_usevar_ok(s, "q");
        ck_assert_int_eq(tu_get_i64_ok(v), 0);
        ck_assert_uint_eq(axstm_value_version(v), 2);
        axstm_value_free(v);
    }
    axstm_watch_free(other);
    axstm_store_free(s);
}
END_TEST

START_TEST(try_retry_gives_a_watch)
{
    axstm_store *s = tu_store_ok();
    axstm_watch *w = w_sentinel;
    struct take t = {0, 0};
    axstm_stats before;

    /* "q" does not exist yet: reading it creates it, and the watch covers
     * it. */
    before = tu_stats_ok(s);
    ck_assert_int_eq(try_ok(s, take_body, &t, &w), AXSTM_RETRY);
    ck_assert_ptr_ne(w, w_sentinel);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(t.runs, 1);
    ck_assert_uint_eq(tu_stats_ok(s).commits, before.commits);
    ck_assert(!readable(w));

    tu_put_i64(s, "unread", 1);
    ck_assert(!readable(w));
    tu_put_i64(s, "q", 0); /* a commit of q, though still "empty" */
    ck_assert(readable(w));

    /* It is an ordinary watch: re-arm and it fires on the next commit. */
    rearm_ok(w);
    ck_assert(!readable(w));
    tu_put_i64(s, "q", 0);
    ck_assert(readable(w));
    axstm_watch_free(w);

    /* The next attempt's watch starts quiet, and fires on q's next commit. */
    w = w_sentinel;
    ck_assert_int_eq(try_ok(s, take_body, &t, &w), AXSTM_RETRY);
    ck_assert_ptr_ne(w, w_sentinel);
    ck_assert(!readable(w));
    tu_put_i64(s, "q", 7);
    ck_assert(readable(w));
    axstm_watch_free(w);

    w = w_sentinel;
    ck_assert_int_eq(try_ok(s, take_body, &t, &w), AXSTM_OK);
    ck_assert_ptr_eq(w, w_sentinel);
    ck_assert_int_eq(t.got, 7);
    axstm_store_free(s);
}
END_TEST

/* The race the fire-if-changed check exists for, made deterministic: the
 * body reads "k", then (first run only) another thread commits "k" and is
 * joined, and only then does the body return AXSTM_RETRY.  The commit came
 * before the watch existed, yet it changed what the attempt read: the
 * watch must be readable at once, or an event loop would sleep forever. */
struct race {
    axstm_store *s;
    const char *victim; /* the key the helper commits */
    int runs;
    int helper_rc;
    int via_txn; /* helper commits through axstm_atomically */
};

static void *race_helper(void *arg)
{
    struct race *r = arg;
    int rc;
    if (r->via_txn) {
        rc = txn_put(r->s, r->victim, 1000);
    } else {
        axstm_value *v = NULL;
        TU_RETRY(rc, axstm_usevar(r->s, r->victim, &v));
        if (rc == AXSTM_OK) {
            rc = axstm_value_set_i64(v, 1000);
            if (rc == AXSTM_OK)
                TU_RETRY(rc, axstm_value_commit(v));
            axstm_value_free(v);
        }
    }
    r->helper_rc = rc;
    return NULL;
}

static void race_now(struct race *r)
{
    pthread_t t;
    if (pthread_create(&t, NULL, race_helper, r) != 0) {
        r->helper_rc = -1000;
        return;
    }
    pthread_join(t, NULL);
}

static int race_body(axstm_txn *tx, void *arg)
{
    struct race *r = arg;
    int64_t x;
    int rc = axstm_txn_get_i64(tx, "k", &x);
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    rc = axstm_txn_get_i64(tx, "k2", &x);
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    if (++r->runs == 1)
        race_now(r);
    return AXSTM_RETRY;
}

static void run_race(const char *victim, int via_txn, int has_value)
{
    axstm_store *s = tu_store_ok();
    struct race r = {s, victim, 0, -100, via_txn};
    axstm_watch *w = w_sentinel;

    if (has_value) {
        tu_put_i64(s, "k", 1);
        tu_put_i64(s, "k2", 2);
    }
    ck_assert_int_eq(try_ok(s, race_body, &r, &w), AXSTM_RETRY);
    ck_assert_int_eq(r.helper_rc, AXSTM_OK);
    ck_assert_int_eq(r.runs, 1);
    ck_assert_ptr_ne(w, w_sentinel);
    ck_assert_msg(readable(w), "a commit of %s between the read and the watch was lost", victim);
    axstm_watch_free(w);
    axstm_store_free(s);
}

START_TEST(try_commit_between_read_and_watch)
{
    run_race("k", 0, 1);
    run_race("k2", 0, 1);
    run_race("k", 1, 1);
    run_race("k2", 0, 0); /* the key had no value when read */
    run_race("k", 1, 0);
}
END_TEST

/* or_else: the watch covers what both branches read. */
struct branches {
    struct race race; /* first run of the first branch commits race.victim */
    int first_runs, second_runs;
};

static int first_branch(axstm_txn *tx, void *arg)
{
    struct branches *b = arg;
    int rc = axstm_txn_get(tx, "left", NULL, NULL);
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    /* A write the retry discards; the read of "left" stays. */
    rc = axstm_txn_set_i64(tx, "scratch", 1);
    if (rc != AXSTM_OK)
        return rc;
    if (++b->first_runs == 1 && b->race.victim != NULL)
        race_now(&b->race);
    return AXSTM_RETRY;
}

static int second_branch(axstm_txn *tx, void *arg)
{
    struct branches *b = arg;
    int rc = axstm_txn_get(tx, "right", NULL, NULL);
    b->second_runs++;
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    return AXSTM_RETRY;
}

static int either_body(axstm_txn *tx, void *arg)
{
    return axstm_or_else(tx, first_branch, second_branch, arg);
}

START_TEST(try_watch_covers_both_branches)
{
    axstm_store *s = tu_store_ok();
    struct branches b;
    axstm_watch *w = w_sentinel;
    int64_t scratch;

    memset(&b, 0, sizeof b);
    b.race.s = s;
    ck_assert_int_eq(try_ok(s, either_body, &b, &w), AXSTM_RETRY);
    ck_assert_int_eq(b.first_runs, 1);
    ck_assert_int_eq(b.second_runs, 1);
    ck_assert(!readable(w));
    tu_put_i64(s, "left", 1);
    ck_assert(readable(w));
    rearm_ok(w);
    tu_put_i64(s, "unrelated", 1);
    ck_assert(!readable(w));
    tu_put_i64(s, "right", 1);
    ck_assert(readable(w));
    axstm_watch_free(w);
    /* The first branch's write was discarded: nothing was published. */
    {
        axstm_value *v = tu_usevar_ok(s, "scratch");
        ck_assert_int_eq(axstm_value_get_i64(v, &scratch), AXSTM_ENOVALUE);
        ck_assert_uint_eq(axstm_value_version(v), 0);
        axstm_value_free(v);
    }

    /* A commit of the first branch's key that lands while the second
     * branch runs is not lost either. */
    memset(&b, 0, sizeof b);
    b.race.s = s;
    b.race.victim = "left";
    b.race.helper_rc = -100;
    w = w_sentinel;
    ck_assert_int_eq(try_ok(s, either_body, &b, &w), AXSTM_RETRY);
    ck_assert_int_eq(b.race.helper_rc, AXSTM_OK);
    ck_assert(readable(w));
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

static int rollback_body(axstm_txn *tx, void *arg)
{
    int rc = axstm_txn_set_i64(tx, "x", 5);
    if (rc != AXSTM_OK)
        return rc;
    return *(int *)arg;
}

START_TEST(try_returns_other_codes_as_is)
{
    static const int codes[] = {1, 42, AXSTM_ETYPE, AXSTM_ENOVALUE, AXSTM_EINVAL};
    axstm_store *s = tu_store_ok();
    axstm_watch *seen = watch1_ok(s, "x");
    axstm_stats before = tu_stats_ok(s);
    size_t i;

    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        axstm_watch *w = w_sentinel;
        int code = codes[i];
        ck_assert_int_eq(try_ok(s, rollback_body, &code, &w), code);
        ck_assert_ptr_eq(w, w_sentinel);
    }
    /* Nothing published: no commit, "x" still without a value, and the
     * watch on it quiet. */
    ck_assert_uint_eq(tu_stats_ok(s).commits, before.commits);
    ck_assert(!readable(seen));
    {
        axstm_value *v = tu_usevar_ok(s, "x");
        tu_assert_no_value(v);
        ck_assert_uint_eq(axstm_value_version(v), 0);
        axstm_value_free(v);
    }
    axstm_watch_free(seen);
    axstm_store_free(s);
}
END_TEST

static int always_retry_body(axstm_txn *tx, void *arg)
{
    int rc = axstm_txn_get(tx, "never", NULL, NULL);
    ++*(int *)arg;
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    return AXSTM_RETRY;
}

static int always_code_body(axstm_txn *tx, void *arg)
{
    int *p = arg; /* p[0]: the code to return; p[1]: runs */
    int rc = axstm_txn_get(tx, "a", NULL, NULL);
    p[1]++;
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    return p[0];
}

START_TEST(try_never_blocks)
{
    enum { CALLS = 300 };
    axstm_store *s = tu_store_ok();
    int runs = 0, i, quiet = 0, retried = 0;
    double t0 = tu_now();

    /* A body that retries forever: every call comes straight back with a
     * watch (which stays quiet: nobody commits "never"). */
    for (i = 0; i < CALLS; i++) {
        axstm_watch *w = w_sentinel;
        int rc = axstm_try_atomically(s, always_retry_body, &runs, &w);
        retried += rc == AXSTM_RETRY && w != w_sentinel;
        if (w != w_sentinel) {
            quiet += !readable(w);
            axstm_watch_free(w);
        }
    }
    ck_assert_int_eq(retried, CALLS);
    ck_assert_int_eq(quiet, CALLS);
    ck_assert_int_eq(runs, CALLS);

    /* A body that keeps conflicting (or finding locks busy) is re-run a
     * bounded number of times, without sleeping, then BUSY_RETRY. */
    {
        int p[2] = {AXSTM_CONCURRENT_UPDATE, 0};
        axstm_watch *w = w_sentinel;
        ck_assert_int_eq(axstm_try_atomically(s, always_code_body, p, &w), AXSTM_BUSY_RETRY);
        ck_assert_ptr_eq(w, w_sentinel);
        ck_assert_int_gt(p[1], 1);
        ck_assert_int_lt(p[1], 100000);
        p[0] = AXSTM_BUSY_RETRY;
        p[1] = 0;
        ck_assert_int_eq(axstm_try_atomically(s, always_code_body, p, &w), AXSTM_BUSY_RETRY);
        ck_assert_ptr_eq(w, w_sentinel);
        ck_assert_int_gt(p[1], 1);
        ck_assert_int_lt(p[1], 100000);
    }
    /* Generous for sanitizers and valgrind; a blocking call takes forever. */
    ck_assert_msg(tu_now() - t0 < 20.0, "took %.1f s", tu_now() - t0);
    axstm_store_free(s);
}
END_TEST

/* Calls axstm_try_atomically on the store arg from inside a body: 3 when
 * that was refused as it must be, else 4. */
static int nested_body(axstm_txn *tx, void *arg)
{
    axstm_watch *w = w_sentinel;
    int runs = 0, rc;
    (void)tx;
    rc = axstm_try_atomically(arg, always_retry_body, &runs, &w);
    return rc == AXSTM_EINVAL && w == w_sentinel && runs == 0 ? 3 : 4;
}

static int read_nothing_body(axstm_txn *tx, void *arg)
{
    (void)tx;
    ++*(int *)arg;
    return AXSTM_RETRY;
}

START_TEST(try_bad_input)
{
    axstm_store *s = tu_store_ok();
    axstm_watch *w = w_sentinel;
    int runs = 0;

    ck_assert_int_eq(axstm_try_atomically(s, always_retry_body, &runs, NULL), AXSTM_EINVAL);
    ck_assert_int_eq(runs, 0); /* the body never ran */
    ck_assert_int_eq(axstm_try_atomically(NULL, always_retry_body, &runs, &w), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_try_atomically(s, NULL, &runs, &w), AXSTM_EINVAL);
    ck_assert_ptr_eq(w, w_sentinel);
    ck_assert_int_eq(runs, 0);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0);

    /* From inside a body, as for axstm_atomically. */
    ck_assert_int_eq(axstm_atomically(s, nested_body, s), 3);

    /* Retrying having read nothing could never wake: EINVAL, no watch. */
    ck_assert_int_eq(axstm_try_atomically(s, read_nothing_body, &runs, &w), AXSTM_EINVAL);
    ck_assert_ptr_eq(w, w_sentinel);
    ck_assert_int_eq(runs, 1);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* A consumer served by watches (the event-loop pattern, small)       */
/* ------------------------------------------------------------------ */

#define SLOT_ITEMS 2000

static int put_when_free_body(axstm_txn *tx, void *arg)
{
    const struct put_arg *p = arg;
    int64_t x;
    int rc = axstm_txn_get_i64(tx, p->key, &x);
    if (rc == AXSTM_OK && x != 0)
        return AXSTM_RETRY;
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    return axstm_txn_set_i64(tx, p->key, p->x);
}

/* Puts 1..SLOT_ITEMS into the one slot "q", each time blocking in
 * AXSTM_RETRY until the consumer has emptied it. */
static void *slot_producer(void *arg)
{
    axstm_store *s = arg;
    int64_t i;
    for (i = 1; i <= SLOT_ITEMS; i++) {
        struct put_arg p = {"q", i};
        if (axstm_atomically(s, put_when_free_body, &p) != AXSTM_OK)
            return (void *)1;
    }
    return NULL;
}

START_TEST(consumer_in_a_poll_loop)
{
    axstm_store *s = tu_store_ok();
    pthread_t t;
    struct take tk = {0, 0};
    int64_t expect = 1;
    long sleeps = 0, wrong = 0, timeouts = 0, errors = 0;
    void *ret;

    ck_assert_int_eq(pthread_create(&t, NULL, slot_producer, s), 0);
    while (expect <= SLOT_ITEMS && wrong + timeouts + errors == 0) {
        axstm_watch *w = NULL;
        int rc = axstm_try_atomically(s, take_body, &tk, &w);
        if (rc == AXSTM_OK) {
            wrong += tk.got != expect++;
        } else if (rc == AXSTM_RETRY) {
            sleeps++;
            if (!fd_readable(axstm_watch_fd(w), 30000))
                timeouts++;
            axstm_watch_free(w);
        } else if (rc != AXSTM_BUSY_RETRY) {
            errors++;
        }
    }
    ck_assert_int_eq(pthread_join(t, &ret), 0);
    ck_assert_ptr_null(ret);
    ck_assert_int_eq(errors, 0);
    ck_assert_int_eq(timeouts, 0);
    ck_assert_int_eq(wrong, 0);
    ck_assert_int_eq(expect, SLOT_ITEMS + 1);
    /* One slot: the consumer must have waited on it now and then. */
    ck_assert_int_gt(sleeps, 0);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Concurrency                                                        */
/* ------------------------------------------------------------------ */

static const char *const hot[] = {"hot.a", "hot.b", "hot.c"};

struct hammer {
    axstm_store *s;
    atomic_int stop;
    int id;
    atomic_long commits; /* read by the test's thread while it runs */
    long errors;
};

/* Commits its keys as fast as it can until told to stop. */
static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    axstm_value *v[2] = {NULL, NULL};
    int64_t i = 0;
    int rc, k;

    for (k = 0; k < 2; k++) {
        TU_RETRY(rc, axstm_usevar(h->s, hot[(h->id + k) % 3], &v[k]));
        if (rc != AXSTM_OK) {
            h->errors++;
            goto out;
        }
    }
    while (!atomic_load_explicit(&h->stop, memory_order_relaxed)) {
        axstm_value *x = v[i % 2];
        if (h->id == 2) {
            /* One hammer commits through transactions. */
            rc = txn_put(h->s, hot[i % 3], i);
        } else {
            rc = axstm_value_set_i64(x, i);
            if (rc == AXSTM_OK)
                rc = axstm_value_commit(x);
            if (rc == AXSTM_CONCURRENT_UPDATE || rc == AXSTM_BUSY_RETRY) {
                int r2;
                TU_RETRY(r2, axstm_value_refresh(x));
                rc = r2 == AXSTM_OK ? AXSTM_BUSY_RETRY : r2;
            }
        }
        if (rc == AXSTM_OK)
            atomic_fetch_add_explicit(&h->commits, 1, memory_order_relaxed);
        else if (rc != AXSTM_BUSY_RETRY)
            h->errors++;
        i++;
    }
out:
    axstm_value_free(v[0]);
    axstm_value_free(v[1]);
    return NULL;
}

static void stop_hammers(struct hammer *h, pthread_t *t, int n)
{
    int i;
    for (i = 0; i < n; i++)
        atomic_store(&h[i].stop, 1);
    for (i = 0; i < n; i++)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
}

static int all_committed(struct hammer *h, int n)
{
    int i;
    for (i = 0; i < n; i++)
        if (atomic_load_explicit(&h[i].commits, memory_order_relaxed) == 0)
            return 0;
    return 1;
}

static int read_hot_body(axstm_txn *tx, void *arg)
{
    int rc = axstm_txn_get(tx, hot[*(int *)arg % 3], NULL, NULL);
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    return AXSTM_RETRY;
}

/*
 * Watches made and freed in a tight loop while three threads commit their
 * keys as fast as they can: freeing must never race with a commit that is
 * notifying the same watch (TSan and ASan see it if it does), and every
 * watch that is waited for fires.
 */
START_TEST(free_while_others_commit)
{
    enum { HAMMERS = 3, MAX_ROUNDS = 20000 };
    axstm_store *s = tu_store_ok();
    struct hammer h[HAMMERS];
    pthread_t t[HAMMERS];
    axstm_watch *batch[8];
    long rounds = 0, waited = 0, fired = 0, errors = 0;
    double deadline, give_up;
    int i, rc;

    for (i = 0; i < HAMMERS; i++) {
        memset(&h[i], 0, sizeof h[i]);
        h[i].s = s;
        h[i].id = i;
        atomic_init(&h[i].stop, 0);
        atomic_init(&h[i].commits, 0);
    }
    /* Create the keys first, so the hammers start committing at once. */
    put_all(s, hot, 3, 0);
    for (i = 0; i < HAMMERS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);

    /* At least 50 rounds and 0.5 s (or MAX_ROUNDS), and on until every
     * hammer has committed: a loaded machine may start one late. */
    deadline = tu_now() + 0.5;
    give_up = deadline + 20.0;
    while ((rounds < MAX_ROUNDS && (rounds < 50 || tu_now() < deadline)) ||
           (!all_committed(h, HAMMERS) && tu_now() < give_up)) {
        axstm_watch *w = NULL;
        int which = (int)(rounds % 4);
        if (which == 0) {
            /* Wait for it, then free it. */
            TU_RETRY(rc, axstm_watch_new(s, hot, 3, &w));
            if (rc != AXSTM_OK) {
                errors++;
                break;
            }
            waited++;
            fired += fd_readable(axstm_watch_fd(w), 30000);
            rearm_ok(w);
            axstm_watch_free(w);
        } else if (which == 1) {
            /* Free it at once, notifications perhaps in flight. */
            TU_RETRY(rc, axstm_watch_new(s, &hot[rounds % 3], 1, &w));
            if (rc != AXSTM_OK) {
                errors++;
                break;
            }
            axstm_watch_free(w);
        } else if (which == 2) {
            /* A watch from try_atomically, freed at once. */
            int k = (int)rounds;
            TU_RETRY(rc, axstm_try_atomically(s, read_hot_body, &k, &w));
            if (rc != AXSTM_RETRY) {
                errors++;
                break;
            }
            axstm_watch_free(w);
        } else {
            /* Several on one key, freed in another order than made. */
            for (i = 0; i < 8; i++) {
                TU_RETRY(rc, axstm_watch_new(s, &hot[0], 1, &batch[i]));
                if (rc != AXSTM_OK) {
                    errors++;
                    break;
                }
            }
            if (i < 8) {
                while (i-- > 0)
                    axstm_watch_free(batch[i]);
                break;
            }
            for (i = 0; i < 8; i += 2)
                axstm_watch_free(batch[i]);
            for (i = 1; i < 8; i += 2)
                axstm_watch_free(batch[i]);
        }
        rounds++;
    }
    stop_hammers(h, t, HAMMERS);
    ck_assert_int_eq(errors, 0);
    ck_assert_int_ge(rounds, 50);
    ck_assert_int_eq(fired, waited);
    for (i = 0; i < HAMMERS; i++) {
        ck_assert_int_eq(h[i].errors, 0);
        ck_assert_int_gt(atomic_load(&h[i].commits), 0);
    }
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Descriptors                                                        */
/* ------------------------------------------------------------------ */

START_TEST(no_descriptor_leaks)
{
    enum { N = 1000, HELD = 100 };
    axstm_store *s = tu_store_ok();
    axstm_watch *held[HELD];
    int before, during, i, retried = 0, k = 0;

    put_all(s, hot, 3, 0);
    before = count_fds();
    for (i = 0; i < N; i++) {
        axstm_watch *w = watch_ok(s, hot, 3);
        if (i % 3 == 0)
            tu_put_i64(s, hot[i % 3], i); /* some freed readable */
        axstm_watch_free(w);
    }
    for (i = 0; i < N; i++) {
        axstm_watch *w = NULL;
        if (try_ok(s, read_hot_body, &k, &w) == AXSTM_RETRY) {
            retried++;
            axstm_watch_free(w);
        }
        k++;
    }
    ck_assert_int_eq(retried, N);
    /* One descriptor per live watch. */
    for (i = 0; i < HELD; i++)
        held[i] = watch1_ok(s, hot[i % 3]);
    during = count_fds();
    for (i = 0; i < HELD; i++)
        axstm_watch_free(held[i]);
    ck_assert_int_eq(during, before + HELD);
    ck_assert_int_eq(count_fds(), before);
    axstm_store_free(s);
    ck_assert_int_eq(count_fds(), before);
}
END_TEST

/* Out of descriptors is AXSTM_ENOMEM, and changes nothing. */
START_TEST(out_of_descriptors)
{
    enum { SPARE = 4 };
    static const char *const a[] = {"a"};
    axstm_store *s = tu_store_ok();
    struct rlimit old, low;
    int dups[256], ndup = 0, dup_errno = 0, before, runs = 0, rc_none, rc_key, rc_try;
    axstm_watch *w = w_sentinel;
    tu_snapshot snap_before, snap_after;
    axstm_stats st;

    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "never", 1);
    tu_snapshot_take(s, &snap_before);
    st = tu_stats_ok(s);
    before = count_fds();
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)max_fd_below(old.rlim_cur) + 1 + SPARE;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    /* Use up every descriptor below the limit. */
    while (ndup < (int)(sizeof dups / sizeof dups[0])) {
        int fd = dup(0);
        if (fd < 0) {
            dup_errno = errno;
            break;
        }
        dups[ndup++] = fd;
    }
    /* Every kind of watch needs a descriptor: none, one key, a retry. */
    rc_none = axstm_watch_new(s, NULL, 0, &w);
    rc_key = axstm_watch_new(s, a, 1, &w);
    rc_try = axstm_try_atomically(s, always_retry_body, &runs, &w);
    /* Descriptors back before any assert can end the test. */
    while (ndup > 0)
        close(dups[--ndup]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    ck_assert_int_eq(dup_errno, EMFILE);
    ck_assert_int_eq(rc_none, AXSTM_ENOMEM);
    ck_assert_int_eq(rc_key, AXSTM_ENOMEM);
    ck_assert_int_eq(rc_try, AXSTM_ENOMEM);
    ck_assert_ptr_eq(w, w_sentinel);
    ck_assert_int_eq(runs, 1);
    ck_assert_int_eq(count_fds(), before);
    tu_snapshot_take(s, &snap_after);
    tu_snapshot_assert_equal(&snap_before, &snap_after);
    ck_assert_uint_eq(tu_stats_ok(s).commits, st.commits);
    tu_snapshot_free(&snap_before);
    tu_snapshot_free(&snap_after);

    /* With descriptors back, it works. */
    w = watch1_ok(s, "a");
    tu_put_i64(s, "a", 2);
    ck_assert(readable(w));
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Bad input                                                          */
/* ------------------------------------------------------------------ */

static void assert_rejected(axstm_store *s, const char *const keys[], size_t n, int code)
{
    axstm_watch *w = w_sentinel;
    uint64_t keys_before = tu_stats_ok(s).keys;
    int fds = count_fds();
    ck_assert_int_eq(axstm_watch_new(s, keys, n, &w), code);
    ck_assert_ptr_eq(w, w_sentinel);
    ck_assert_uint_eq(tu_stats_ok(s).keys, keys_before);
    ck_assert_int_eq(count_fds(), fds);
}

START_TEST(watch_bad_input)
{
    static char long_key[AXSTM_KEY_MAX + 2], longest[AXSTM_KEY_MAX + 1];
    static const char *const a[] = {"a"};
    const char *keys[3];
    axstm_store *s = tu_store_ok();
    axstm_watch *w = w_sentinel;

    memset(long_key, 'L', AXSTM_KEY_MAX + 1);
    memset(longest, 'M', AXSTM_KEY_MAX);

    ck_assert_int_eq(axstm_watch_new(NULL, a, 1, &w), AXSTM_EINVAL);
    ck_assert_ptr_eq(w, w_sentinel);
    ck_assert_int_eq(axstm_watch_new(s, a, 1, NULL), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_watch_new(s, NULL, 0, NULL), AXSTM_EINVAL);
    assert_rejected(s, NULL, 1, AXSTM_EINVAL);

    /* A bad key anywhere: nothing created, not even the good keys. */
    keys[0] = NULL, keys[1] = "new1", keys[2] = "new2";
    assert_rejected(s, keys, 3, AXSTM_EINVAL);
    keys[0] = "new1", keys[1] = "", keys[2] = "new2";
    assert_rejected(s, keys, 3, AXSTM_EINVAL);
    keys[0] = "new1", keys[1] = "new2", keys[2] = long_key;
    assert_rejected(s, keys, 3, AXSTM_E2BIG);
    keys[0] = long_key;
    assert_rejected(s, keys, 1, AXSTM_E2BIG);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0);

    /* The longest key is fine. */
    w = watch1_ok(s, longest);
    tu_put_i64(s, longest, 1);
    ck_assert(readable(w));
    axstm_watch_free(w);

    ck_assert_int_lt(axstm_watch_fd(NULL), 0);
    ck_assert_int_eq(axstm_watch_fd(NULL), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_watch_rearm(NULL), AXSTM_EINVAL);
    axstm_watch_free(NULL);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Allocation failure                                                 */
/* ------------------------------------------------------------------ */

/*
 * Runs call with its n-th allocation failing, for every n the call reaches
 * (sticky: every later one fails too), several times per n on fresh stores
 * (which allocations happen depends on the store's random hash seed).  On
 * AXSTM_ENOMEM check_failed runs, otherwise check_done; both may assert.
 * Counts the calls that failed and those that did not.
 *
 * A failed call must leave every key as it was, hold no descriptor and
 * publish nothing.  Keys it was to create may exist afterwards (all of
 * them, with no value) when the failure came after their creation: a
 * transaction's reads create keys too, and an empty key is what a
 * checkout would have made of it anyway.
 */
struct alloc_case {
    void (*setup)(axstm_store *s);
    int (*call)(axstm_store *s, axstm_watch **w);
    int ok_code;       /* what the call returns when it does not fail */
    uint64_t new_keys; /* keys the call creates */
    void (*check_done)(axstm_store *s, axstm_watch *w);
    int no_new_keys_on_failure; /* stricter: a failed call creates no key */
};

struct alloc_result {
    long enomem, done;
};

static void sweep_allocations(const struct alloc_case *ac, int sticky, struct alloc_result *res)
{
    unsigned long n;
    int reached = 1, trial;

    for (n = 1; reached; n++) {
        ck_assert_msg(n < 10000, "the call never stops allocating");
        reached = 0;
        for (trial = 0; trial < 6; trial++) {
            axstm_store *s = tu_store_ok();
            axstm_watch *w = w_sentinel;
            tu_snapshot before, after;
            uint64_t keys_before, commits_before, count;
            int fds, rc;
            size_t i, j;

            ac->setup(s);
            tu_snapshot_take(s, &before);
            keys_before = tu_stats_ok(s).keys;
            commits_before = tu_stats_ok(s).commits;
            fds = count_fds();
            count = axstm__alloc_count();
            axstm__alloc_fail_after(n, sticky);
            rc = ac->call(s, &w);
            axstm__alloc_fail_after(0, 0);
            reached |= axstm__alloc_count() - count >= n;
            /* One descriptor per watch handed out, none otherwise. */
            ck_assert_int_eq(count_fds(), fds + (w != w_sentinel));
            if (rc != AXSTM_ENOMEM) {
                ck_assert_msg(rc == ac->ok_code, "n=%lu: %s", n, axstm_strerror(rc));
                res->done++;
                ac->check_done(s, w);
            } else {
                uint64_t keys_now = tu_stats_ok(s).keys;
                res->enomem++;
                ck_assert_ptr_eq(w, w_sentinel);
                ck_assert_uint_eq(tu_stats_ok(s).commits, commits_before);
                /* Every key that existed is as it was; new keys, if any,
                 * were created with no value (as a read creates them). */
                tu_snapshot_take(s, &after);
                for (i = j = 0; i < after.n; i++) {
                    const tu_entry *e = &after.e[i];
                    if (j < before.n && strcmp(before.e[j].key, e->key) == 0) {
                        ck_assert_uint_eq(e->version, before.e[j].version);
                        ck_assert_int_eq(e->has_value, before.e[j].has_value);
                        j++;
                    } else {
                        ck_assert_msg(e->version == 0 && !e->has_value,
                                      "%s written by a failed call", e->key);
                    }
                }
                ck_assert_uint_eq(j, before.n);
                tu_snapshot_free(&after);
                ck_assert_msg(keys_now == keys_before || (!ac->no_new_keys_on_failure &&
                                                          keys_now == keys_before + ac->new_keys),
                              "n=%lu: %llu keys, then %llu", n, (unsigned long long)keys_before,
                              (unsigned long long)keys_now);
            }
            tu_snapshot_free(&before);
            if (w != w_sentinel)
                axstm_watch_free(w);
            axstm_store_free(s);
            /* Nothing held on to a descriptor. */
            ck_assert_int_eq(count_fds(), fds);
        }
    }
}

static const char *const mixed[] = {"new1", "old", "new2", "new1"};

static void setup_old(axstm_store *s)
{
    char key[16];
    int i;
    tu_put_i64(s, "old", 42);
    for (i = 0; i < 40; i++) {
        snprintf(key, sizeof key, "r.%d", i);
        tu_put_i64(s, key, i);
    }
}

static int call_watch_new(axstm_store *s, axstm_watch **w)
{
    return axstm_watch_new(s, mixed, 4, w);
}

static void done_watch_new(axstm_store *s, axstm_watch *w)
{
    ck_assert_ptr_ne(w, w_sentinel);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 41); /* watching creates no key */
    ck_assert(!readable(w));
    tu_put_i64(s, "new2", 1);
    ck_assert(readable(w));
}

START_TEST(watch_new_out_of_memory)
{
    /* watch_new allocates everything before it creates a key. */
    static const struct alloc_case ac = {setup_old, call_watch_new, AXSTM_OK, 2, done_watch_new, 1};
    struct alloc_result sticky = {0, 0}, once = {0, 0};
    sweep_allocations(&ac, 1, &sticky);
    sweep_allocations(&ac, 0, &once);
    ck_assert_int_gt(sticky.enomem, 0);
    ck_assert_int_gt(once.enomem, 0);
    ck_assert_int_gt(sticky.done + once.done, 0);
}
END_TEST

/* Reads "old", then 40 keys (more than a transaction keeps inline), one
 * of them new, and retries. */
static int read_many_body(axstm_txn *tx, void *arg)
{
    char key[16];
    int i, rc;
    (void)arg;
    rc = axstm_txn_get(tx, "old", NULL, NULL);
    for (i = 0; i < 41 && (rc == AXSTM_OK || rc == AXSTM_ENOVALUE); i++) {
        snprintf(key, sizeof key, "r.%d", i); /* r.40 is new */
        rc = axstm_txn_get(tx, key, NULL, NULL);
    }
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    return AXSTM_RETRY;
}

static int call_try_retry(axstm_store *s, axstm_watch **w)
{
    int rc;
    TU_RETRY(rc, axstm_try_atomically(s, read_many_body, NULL, w));
    return rc;
}

static void done_try_retry(axstm_store *s, axstm_watch *w)
{
    ck_assert_ptr_ne(w, w_sentinel);
    ck_assert(!readable(w));
    tu_put_i64(s, "r.40", 1);
    ck_assert(readable(w));
}

START_TEST(try_retry_out_of_memory)
{
    /* Not strict: a read creates its key (as documented, so that a retry
     * can wait on it), and an allocation failing after that read leaves
     * the key behind, with no value. */
    static const struct alloc_case ac = {setup_old, call_try_retry, AXSTM_RETRY,
                                         1,         done_try_retry, 0};
    struct alloc_result sticky = {0, 0}, once = {0, 0};
    sweep_allocations(&ac, 1, &sticky);
    sweep_allocations(&ac, 0, &once);
    ck_assert_int_gt(sticky.enomem, 0);
    ck_assert_int_gt(once.enomem, 0);
}
END_TEST

/* Writes 20 keys (more than inline) of 100 bytes and commits. */
static int write_many_body(axstm_txn *tx, void *arg)
{
    char key[16], data[100];
    int i, rc = AXSTM_OK;
    (void)arg;
    memset(data, 'x', sizeof data);
    for (i = 0; i < 20 && rc == AXSTM_OK; i++) {
        snprintf(key, sizeof key, "r.%d", i);
        rc = axstm_txn_set(tx, key, data, sizeof data);
    }
    return rc;
}

static int call_try_commit(axstm_store *s, axstm_watch **w)
{
    int rc;
    TU_RETRY(rc, axstm_try_atomically(s, write_many_body, NULL, w));
    return rc;
}

static void done_try_commit(axstm_store *s, axstm_watch *w)
{
    axstm_value *v = tu_usevar_ok(s, "r.19");
    size_t len = 0;
    ck_assert_ptr_eq(w, w_sentinel);
    ck_assert_ptr_nonnull(axstm_value_data(v, &len));
    ck_assert_uint_eq(len, 100);
    axstm_value_free(v);
}

START_TEST(try_commit_out_of_memory)
{
    static const struct alloc_case ac = {setup_old, call_try_commit, AXSTM_OK,
                                         0,         done_try_commit, 1};
    struct alloc_result sticky = {0, 0}, once = {0, 0};
    sweep_allocations(&ac, 1, &sticky);
    sweep_allocations(&ac, 0, &once);
    ck_assert_int_gt(sticky.enomem, 0);
    ck_assert_int_gt(once.enomem, 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Cancellation                                                       */
/* ------------------------------------------------------------------ */

/* Each watch call that makes a system call which is a cancellation point
 * (read, write, close), made with a cancellation request pending: no call
 * but axstm_atomically's waits may act on it (axstm.h), so the call
 * completes and the request acts at the caller's next cancellation point.
 * Acting inside would leak the watch, its descriptor or the store's
 * registration of it. */

static void free_watch(void *arg)
{
    axstm_watch_free(arg);
}

START_TEST(free_with_cancel_pending)
{
    axstm_store *s = tu_store_ok();
    int fds = count_fds();
    axstm_watch *w = watch1_ok(s, "k");

    tu_put_i64(s, "k", 1); /* readable: nothing left to write, only to close */
    ck_assert(readable(w));
    ck_assert_msg(tu_call_with_cancel_pending(free_watch, w),
                  "axstm_watch_free acted on a cancellation request");
    /* Its descriptor is closed (nothing else opened one meanwhile). */
    ck_assert_int_eq(count_fds(), fds);
    tu_put_i64(s, "k", 2);
    axstm_store_free(s);
}
END_TEST

struct rearm_call {
    axstm_watch *w;
    int rc;
};

static void rearm_watch(void *arg)
{
    struct rearm_call *r = arg;
    r->rc = axstm_watch_rearm(r->w);
}

START_TEST(rearm_with_cancel_pending)
{
    axstm_store *s = tu_store_ok();
    struct rearm_call r = {watch1_ok(s, "k"), 12345};

    tu_put_i64(s, "k", 1);
    ck_assert(readable(r.w));
    ck_assert_msg(tu_call_with_cancel_pending(rearm_watch, &r),
                  "axstm_watch_rearm acted on a cancellation request");
    ck_assert_int_eq(r.rc, AXSTM_OK);
    ck_assert(!readable(r.w)); /* the event was consumed */
    tu_put_i64(s, "k", 2);
    ck_assert(readable(r.w));
    axstm_watch_free(r.w);
    axstm_store_free(s);
}
END_TEST

/* axstm_watch_new that fails after making its descriptor closes it. */
struct new_call {
    axstm_store *s;
    unsigned long fail_at;
    int rc;
    axstm_watch *w;
};

static void new_watch_failing(void *arg)
{
    static const char *const fresh[] = {"fresh"};
    struct new_call *c = arg;
    axstm__alloc_fail_after(c->fail_at, 1);
    c->rc = axstm_watch_new(c->s, fresh, 1, &c->w);
    axstm__alloc_fail_after(0, 0);
}

START_TEST(failed_new_with_cancel_pending)
{
    axstm_store *s = tu_store_ok();
    int fds = count_fds();
    struct new_call c = {s, 0, 12345, w_sentinel};
    unsigned long n;

    /* Each allocation in turn fails (and every later one), each time on a
     * new thread, until the call has nothing left to fail. */
    for (n = 1; c.rc != AXSTM_OK; n++) {
        ck_assert_msg(n < 1000, "the call never stops allocating");
        c.fail_at = n;
        c.rc = 12345;
        ck_assert_msg(tu_call_with_cancel_pending(new_watch_failing, &c),
                      "axstm_watch_new, allocation %lu failing: it acted on a cancellation request",
                      n);
        ck_assert_msg(c.rc == AXSTM_OK || c.rc == AXSTM_ENOMEM, "%s", axstm_strerror(c.rc));
        ck_assert_int_eq(count_fds(), fds + (c.rc == AXSTM_OK));
    }
    ck_assert_ptr_ne(c.w, w_sentinel);
    tu_put_i64(s, "fresh", 1);
    ck_assert(readable(c.w));
    axstm_watch_free(c.w);
    ck_assert_int_eq(count_fds(), fds);
    axstm_store_free(s);
}
END_TEST

/* The body reads "k", then commits "k" itself through a handle (as another
 * thread might have, between the read and the watch) and retries: the
 * watch axstm_try_atomically hands out must be readable at once, which
 * takes a write to its descriptor. */
struct self_race {
    axstm_store *s;
    int runs, commit_rc, rc;
    axstm_watch *w;
};

static int self_race_body(axstm_txn *tx, void *arg)
{
    struct self_race *r = arg;
    axstm_value *v = NULL;
    int64_t x;
    int rc = axstm_txn_get_i64(tx, "k", &x);
    if (rc != AXSTM_OK)
        return rc;
    if (r->runs++ == 0) {
        r->commit_rc = axstm_usevar(r->s, "k", &v);
        if (r->commit_rc == AXSTM_OK)
            r->commit_rc = axstm_value_set_i64(v, x + 1);
        if (r->commit_rc == AXSTM_OK)
            r->commit_rc = axstm_value_commit(v);
        axstm_value_free(v);
    }
    return AXSTM_RETRY;
}

static void try_self_race(void *arg)
{
    struct self_race *r = arg;
    r->rc = axstm_try_atomically(r->s, self_race_body, r, &r->w);
}

START_TEST(try_with_cancel_pending)
{
    int fds = count_fds();
    axstm_store *s = tu_store_ok();
    struct self_race r = {s, 0, 12345, 12345, w_sentinel};

    tu_put_i64(s, "k", 1);
    ck_assert_msg(tu_call_with_cancel_pending(try_self_race, &r),
                  "axstm_try_atomically acted on a cancellation request");
    ck_assert_int_eq(r.runs, 1);
    ck_assert_int_eq(r.commit_rc, AXSTM_OK);
    ck_assert_int_eq(r.rc, AXSTM_RETRY);
    ck_assert_ptr_ne(r.w, w_sentinel);
    ck_assert(readable(r.w));
    axstm_watch_free(r.w);
    axstm_store_free(s);
    /* Freed with its store: a remote store's connections too. */
    ck_assert_int_eq(count_fds(), fds);
}
END_TEST

/* ------------------------------------------------------------------ */


/* ------------------------------------------------------------------ */
/* What a commit pays for watches, and what it may wait for           */
/* ------------------------------------------------------------------ */

/* The entry of an existing key (white-box). */
static struct axstm__entry *entry_of(axstm_store *s, const char *key)
{
    struct axstm__keyref ref = {key, strlen(key), 0, NULL};
    unsigned pin = axstm__epoch_pin(&s->epoch);
    axstm__table_find(&s->table, &ref);
    axstm__epoch_unpin(&s->epoch, pin);
    return ref.entry;
}

/* How many waiters a commit of key would walk (white-box, as axstm__wake
 * walks them). */
static size_t waiters_walked(axstm_store *s, const char *key)
{
    struct axstm__entry *e = entry_of(s, key);
    size_t n = 0;
    ck_assert_ptr_nonnull(e);
    for (struct axstm__waitnode *node = atomic_load(&e->waiters); node != NULL;
         node = atomic_load(&node->next))
        n++;
    return n;
}

/*
 * A commit pays only for the watches on the keys it writes: with many
 * watches on other keys (all of which land in every one of the old shared
 * wait buckets), a commit of a key walks exactly that key's watches.
 */
START_TEST(commit_walks_only_its_keys_watches)
{
    enum { OTHERS = 2000, MINE = 3 };
    static char names[OTHERS][16];
    axstm_store *s = tu_store_ok();
    axstm_watch **others = calloc(OTHERS, sizeof *others), *mine[MINE];
    int i;

    ck_assert_ptr_nonnull(others);
    tu_put_i64(s, "mine", 0);
    tu_put_i64(s, "quiet", 0);
    for (i = 0; i < OTHERS; i++) {
        snprintf(names[i], sizeof names[i], "other.%d", i);
        others[i] = watch1_ok(s, names[i]);
    }
    for (i = 0; i < MINE; i++)
        mine[i] = watch1_ok(s, "mine");
    ck_assert_uint_eq(waiters_walked(s, "mine"), MINE);
    ck_assert_uint_eq(waiters_walked(s, "quiet"), 0);
    tu_put_i64(s, "mine", 1);
    for (i = 0; i < MINE; i++)
        ck_assert(readable(mine[i]));
    for (i = 0; i < OTHERS; i++)
        ck_assert(!readable(others[i]));
    /* Freed watches leave the list. */
    axstm_watch_free(mine[0]);
    ck_assert_uint_eq(waiters_walked(s, "mine"), MINE - 1);
    for (i = 1; i < MINE; i++)
        axstm_watch_free(mine[i]);
    for (i = 0; i < OTHERS; i++)
        axstm_watch_free(others[i]);
    free(others);
    axstm_store_free(s);
}
END_TEST

struct lone_commit {
    axstm_store *s;
    const char *key;
    atomic_int done;
    int rc;
};

static void *lone_commit_main(void *arg)
{
    struct lone_commit *lc = arg;
    axstm_value *v;
    int rc;
    TU_RETRY(rc, axstm_usevar(lc->s, lc->key, &v));
    if (rc == AXSTM_OK) {
        axstm_value_set_i64(v, 7);
        TU_RETRY(rc, axstm_value_commit(v));
        axstm_value_free(v);
    }
    lc->rc = rc;
    atomic_store(&lc->done, 1);
    return NULL;
}

/*
 * No commit waits for another thread: a commit that wakes a watch and a
 * blocked transaction completes while the waiting side's lock for its key
 * is held by someone else (here, the test itself, standing for a thread
 * that is registering or unregistering a waiter at that instant).  The old
 * commit took its key's wait bucket lock to walk the waiters, and would
 * hang here: the test then fails on its generous deadline (60 s, a guard
 * against a hang, not a timing).
 */
static int blocked_get(axstm_txn *tx, void *arg)
{
    int64_t x;
    (void)arg;
    int rc = axstm_txn_get_i64(tx, "hot", &x);
    if (rc == AXSTM_OK && x == 0)
        return AXSTM_RETRY;
    return rc;
}

struct blocked_waiter {
    axstm_store *s;
    int rc;
};

static void *blocked_waiter_main(void *arg)
{
    struct blocked_waiter *bw = arg;
    bw->rc = axstm_atomically(bw->s, blocked_get, NULL);
    return NULL;
}

START_TEST(commit_takes_no_lock_of_the_waiting_side)
{
    axstm_store *s = tu_store_ok();
    struct lone_commit lc = {s, "hot", 0, -1};
    struct blocked_waiter bw = {s, -1};
    pthread_t committer, waiter;
    axstm_watch *w;

    tu_put_i64(s, "hot", 0);
    w = watch1_ok(s, "hot");
    ck_assert_int_eq(pthread_create(&waiter, NULL, blocked_waiter_main, &bw), 0);
    /* Wait until the transaction is registered on "hot" (the watch plus
     * its node: two waiters). */
    while (waiters_walked(s, "hot") < 2)
        tu_sleep_ns(100000);

    /* The lock of "hot"'s bucket, found as wait.c finds it (holding all
     * 64 would overflow ThreadSanitizer's table of locks held at once). */
    pthread_mutex_t *held =
        &s->wait[(uint64_t)(uintptr_t)entry_of(s, "hot") * UINT64_C(0x9e3779b97f4a7c15) >> 58].lock;
    pthread_mutex_lock(held);
    ck_assert_int_eq(pthread_create(&committer, NULL, lone_commit_main, &lc), 0);
    double until = tu_now() + 60;
    while (!atomic_load(&lc.done) && tu_now() < until)
        tu_sleep_ns(1000000);
    int finished = atomic_load(&lc.done);
    pthread_mutex_unlock(held);
    ck_assert_msg(finished, "a commit waited for a lock of the waiting side");
    ck_assert_int_eq(pthread_join(committer, NULL), 0);
    ck_assert_int_eq(lc.rc, AXSTM_OK);
    ck_assert(readable(w));
    ck_assert_int_eq(pthread_join(waiter, NULL), 0);
    ck_assert_int_eq(bw.rc, AXSTM_OK);
    axstm_watch_free(w);
    axstm_store_free(s);
}
END_TEST

static Suite *watch_suite(void)
{
    Suite *s = suite_create("watch");
    TCase *tc;

    tc = tcase_create("Firing");
    tcase_add_test(tc, not_readable_before_a_change);
    tcase_add_test(tc, fires_on_value_commit);
    tcase_add_test(tc, fires_on_collection_commit);
    tcase_add_test(tc, fires_on_atomically);
    tcase_add_test(tc, works_with_poll_epoll_and_select);
    tcase_add_test(tc, wakes_a_sleeping_poll);
    suite_add_tcase(s, tc);

    tc = tcase_create("Re-arm");
    tcase_add_test(tc, rearm_consumes_the_event);
    tcase_add_test(tc, one_rearm_consumes_many_commits);
    tcase_add_test(tc, rearm_then_read_loses_nothing);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("Keys");
    tcase_add_test(tc, unwatched_keys_do_not_wake);
    tcase_add_test(tc, key_created_later);
    tcase_add_test(tc, many_watches_on_one_key);
    tcase_add_test(tc, one_watch_on_many_keys);
    tcase_add_test(tc, no_keys_never_fires);
    suite_add_tcase(s, tc);

    tc = tcase_create("try_atomically");
    tcase_add_test(tc, try_commits_without_a_watch);
    tcase_add_test(tc, try_retry_gives_a_watch);
    tcase_add_test(tc, try_commit_between_read_and_watch);
    tcase_add_test(tc, try_returns_other_codes_as_is);
    tcase_add_test(tc, try_never_blocks);
    tcase_add_test(tc, try_bad_input);
    tcase_add_test(tc, consumer_in_a_poll_loop);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    /* A commit inside the attempt: in process the attempt retries on what it read; a remote
     * store's reads see it and run the attempt again, so the watch rightly stays quiet. */
    tc = tcase_create("try_atomically, in process");
    tcase_set_tags(tc, "local");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, try_watch_covers_both_branches);
    suite_add_tcase(s, tc);

    tc = tcase_create("Concurrency");
    tcase_add_test(tc, free_while_others_commit);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    /* The in-process store's waiter lists. */
    tc = tcase_create("Concurrency, in process");
    tcase_set_tags(tc, "local");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, commit_walks_only_its_keys_watches);
    tcase_add_test(tc, commit_takes_no_lock_of_the_waiting_side);
    suite_add_tcase(s, tc);

    tc = tcase_create("Descriptors");
    tcase_add_test(tc, out_of_descriptors);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    /* Counting this process's descriptors: a remote store also holds connections. */
    tc = tcase_create("Descriptors, in process");
    tcase_set_tags(tc, "local");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, no_descriptor_leaks);
    tcase_add_test(tc, free_with_cancel_pending);
    tcase_add_test(tc, failed_new_with_cancel_pending);
    suite_add_tcase(s, tc);

    tc = tcase_create("Bad input");
    tcase_add_test(tc, watch_bad_input);
    suite_add_tcase(s, tc);

    tc = tcase_create("Cancellation");
    tcase_add_test(tc, rearm_with_cancel_pending);
    tcase_add_test(tc, try_with_cancel_pending);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("Allocation failure");
    tcase_set_tags(tc, "local"); /* descriptors counted, and this process's allocator */
    tcase_add_test(tc, watch_new_out_of_memory);
    tcase_add_test(tc, try_retry_out_of_memory);
    tcase_add_test(tc, try_commit_out_of_memory);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(watch_suite());
}
