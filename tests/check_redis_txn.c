/* SPDX-License-Identifier: MIT */
/*
 * check_redis_txn.c -- transactions, waits and watches on a store kept in
 * Redis: axstm_atomically with its reads consistent (opacity) and its
 * commit all or nothing across processes, a body that does not commit
 * leaving nothing, or_else, AXSTM_RETRY woken by another process's commit
 * (a blocking queue between two processes), timed waits, and watches and
 * axstm_try_atomically's watch made readable by another process; every
 * read as of a moment inside the call, or with first_read=cache a first
 * read answered from what the process knew, checked by the server; a
 * transfer costs three round trips, or two.
 */
#include <hiredis/hiredis.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "redisutil.h"
#include "testutil.h"

static struct tu_redis server;

#define SKIP_WITHOUT_SERVER()                                                      \
    do {                                                                           \
        if (!tu_redis_start(&server))                                              \
            return; /* no redis-server on this machine: nothing to test against */ \
    } while (0)

/* What a test holds while it forks, kept reachable from here: valgrind
 * checks a child's leaks when it exits, and the parent's store and
 * watches, which the child never frees, would count as lost. */
static axstm_store *volatile held_store; /* volatile: written, never read */
static axstm_watch *volatile held_watches[2];

static axstm_store *open_held(void)
{
    axstm_store *s = tu_redis_open_ok(server.address);
    held_store = s;
    return s;
}

/* Waits for a child and checks it exited with 0. */
static void reap_ok(pid_t pid, const char *what)
{
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (status %d)", what,
                  status);
}

/* Whether fd is readable within ms milliseconds. */
static bool readable(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

/* ------------------------------------------------------------------ */
/* One process                                                        */
/* ------------------------------------------------------------------ */

static int write_and_read_back(axstm_txn *tx, void *arg)
{
    (void)arg;
    int64_t x = 0;
    int rc = axstm_txn_get_i64(tx, "a", &x);
    if (rc != AXSTM_ENOVALUE)
        return rc == AXSTM_OK ? 100 : rc; /* "a" must not exist yet */
    if ((rc = axstm_txn_set_i64(tx, "a", 41)) != AXSTM_OK ||
        (rc = axstm_txn_get_i64(tx, "a", &x)) != AXSTM_OK)
        return rc;
    if (x != 41)
        return 101;
    if ((rc = axstm_txn_set_i64(tx, "a", x + 1)) != AXSTM_OK ||
        (rc = axstm_txn_set(tx, "b", "bee", 4)) != AXSTM_OK ||
        (rc = axstm_txn_delete(tx, "never-was")) != AXSTM_OK)
        return rc;
    const void *data = NULL;
    size_t len = 0;
    if ((rc = axstm_txn_get(tx, "b", &data, &len)) != AXSTM_OK)
        return rc;
    return len == 4 && memcmp(data, "bee", 4) == 0 ? AXSTM_OK : 102;
}

START_TEST(atomically_commits_its_writes_and_reads_its_own)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = tu_redis_open_ok(server.address);
    ck_assert_int_eq(axstm_atomically(s, write_and_read_back, NULL), AXSTM_OK);
    axstm_store *other = tu_redis_open_ok(server.address);
    axstm_value *v = tu_usevar_ok(other, "a");
    ck_assert_int_eq(tu_get_i64_ok(v), 42);
    ck_assert_uint_eq(axstm_value_version(v), 1);
    axstm_value_free(v);
    axstm_stats st = tu_stats_ok(other);
    ck_assert_uint_eq(st.keys, 2); /* a and b: deleting what never was made nothing */
    axstm_store_free(other);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* Writes, then gives up with its own code. */
static int write_then_give_up(axstm_txn *tx, void *arg)
{
    (void)arg;
    int rc = axstm_txn_set_i64(tx, "made", 1);
    if (rc == AXSTM_OK)
        rc = axstm_txn_set_i64(tx, "also-made", 2);
    return rc == AXSTM_OK ? 77 : rc;
}

static int read_absent(axstm_txn *tx, void *arg)
{
    int64_t x;
    *(int *)arg = axstm_txn_get_i64(tx, "absent", &x);
    return AXSTM_OK;
}

START_TEST(a_transaction_that_does_not_commit_leaves_no_key)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = tu_redis_open_ok(server.address);
    ck_assert_int_eq(axstm_atomically(s, write_then_give_up, NULL), 77);
    int seen = 0;
    ck_assert_int_eq(axstm_atomically(s, read_absent, &seen), AXSTM_OK);
    ck_assert_int_eq(seen, AXSTM_ENOVALUE);
    axstm_stats st = tu_stats_ok(s);
    ck_assert_uint_eq(st.keys, 0);
    ck_assert_uint_eq(st.commits, 0);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

static int first_branch(axstm_txn *tx, void *arg)
{
    (void)arg;
    int rc = axstm_txn_set_i64(tx, "left", 1);
    int64_t x;
    if (rc == AXSTM_OK)
        rc = axstm_txn_get_i64(tx, "gate", &x);
    return rc == AXSTM_ENOVALUE ? AXSTM_RETRY : rc;
}

static int second_branch(axstm_txn *tx, void *arg)
{
    (void)arg;
    return axstm_txn_set_i64(tx, "right", 2);
}

static int choose(axstm_txn *tx, void *arg)
{
    return axstm_or_else(tx, first_branch, second_branch, arg);
}

START_TEST(or_else_drops_the_first_branch_writes)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = tu_redis_open_ok(server.address);
    ck_assert_int_eq(axstm_atomically(s, choose, NULL), AXSTM_OK);
    axstm_stats st = tu_stats_ok(s);
    ck_assert_uint_eq(st.keys, 1);
    axstm_value *v = tu_usevar_ok(s, "right");
    ck_assert_int_eq(tu_get_i64_ok(v), 2);
    axstm_value_free(v);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

static int wait_forever(axstm_txn *tx, void *arg)
{
    (void)arg;
    int64_t x;
    int rc = axstm_txn_get_i64(tx, "nobody-writes-this", &x);
    return rc == AXSTM_ENOVALUE ? AXSTM_RETRY : rc;
}

START_TEST(a_timed_wait_times_out)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = tu_redis_open_ok(server.address);
    ck_assert_int_eq(axstm_atomically_timed(s, wait_forever, NULL, 0), AXSTM_ETIMEDOUT);
    ck_assert_int_eq(axstm_atomically_timed(s, wait_forever, NULL, 50 * 1000 * 1000),
                     AXSTM_ETIMEDOUT);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

static int nested(axstm_txn *tx, void *arg)
{
    (void)tx;
    return axstm_atomically_timed(arg, wait_forever, NULL, 0);
}

static int retry_having_read_nothing(axstm_txn *tx, void *arg)
{
    (void)tx;
    (void)arg;
    return AXSTM_RETRY;
}

START_TEST(bad_calls_are_einval)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = tu_redis_open_ok(server.address);
    ck_assert_int_eq(axstm_atomically(s, nested, s), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_txn_set_i64(NULL, "k", 1), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_txn_get_i64(NULL, "k", &(int64_t){0}), AXSTM_EINVAL);
    /* A body that read nothing could never be woken. */
    ck_assert_int_eq(axstm_atomically(s, retry_having_read_nothing, NULL), AXSTM_EINVAL);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Several processes                                                  */
/* ------------------------------------------------------------------ */

#define ACCOUNTS 4
#define START_BALANCE 100
#define TRANSFERS 150
#define PROCESSES 2

static const char *const accounts[ACCOUNTS] = {"acct-0", "acct-1", "acct-2", "acct-3"};

struct transfer {
    int from, to;
};

static int transfer(axstm_txn *tx, void *arg)
{
    const struct transfer *t = arg;
    int64_t a, b;
    int rc;
    if ((rc = axstm_txn_get_i64(tx, accounts[t->from], &a)) != AXSTM_OK ||
        (rc = axstm_txn_get_i64(tx, accounts[t->to], &b)) != AXSTM_OK ||
        (rc = axstm_txn_set_i64(tx, accounts[t->from], a - 1)) != AXSTM_OK ||
        (rc = axstm_txn_set_i64(tx, accounts[t->to], b + 1)) != AXSTM_OK)
        return rc;
    return AXSTM_OK;
}

/* Sums every account; a sum that is not the total is an inconsistent
 * snapshot, seen by the body even if its attempt would not commit. */
static int audit(axstm_txn *tx, void *arg)
{
    int *bad = arg;
    int64_t sum = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        int64_t x;
        int rc = axstm_txn_get_i64(tx, accounts[i], &x);
        if (rc != AXSTM_OK)
            return rc;
        sum += x;
    }
    if (sum != (int64_t)ACCOUNTS * START_BALANCE)
        (*bad)++;
    return AXSTM_OK;
}

static int transfer_process(unsigned seed)
{
    axstm_store *s = NULL;
    if (axstm_store_open(server.address, &s) != AXSTM_OK)
        return 1;
    uint64_t state = seed;
    for (int i = 0; i < TRANSFERS; i++) {
        struct transfer t;
        t.from = (int)(tu_rand(&state) % ACCOUNTS);
        t.to = (int)((unsigned)t.from + 1 + tu_rand(&state) % (ACCOUNTS - 1)) % ACCOUNTS;
        if (axstm_atomically(s, transfer, &t) != AXSTM_OK) {
            axstm_store_free(s);
            return 1;
        }
    }
    axstm_store_free(s);
    return 0;
}

static int open_accounts(axstm_txn *tx, void *arg)
{
    (void)arg;
    for (int i = 0; i < ACCOUNTS; i++) {
        int rc = axstm_txn_set_i64(tx, accounts[i], START_BALANCE);
        if (rc != AXSTM_OK)
            return rc;
    }
    return AXSTM_OK;
}

START_TEST(transfers_from_several_processes_are_serializable_and_opaque)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_held();
    ck_assert_int_eq(axstm_atomically(s, open_accounts, NULL), AXSTM_OK);
    pid_t pids[PROCESSES];
    for (int p = 0; p < PROCESSES; p++) {
        pids[p] = fork();
        ck_assert_int_ge(pids[p], 0);
        if (pids[p] == 0)
            _exit(transfer_process(7u + (unsigned)p));
    }
    /* The auditor runs beside them until both are done. */
    int bad = 0, audits = 0, alive = PROCESSES;
    while (alive > 0) {
        ck_assert_int_eq(axstm_atomically(s, audit, &bad), AXSTM_OK);
        audits++;
        alive = 0;
        for (int p = 0; p < PROCESSES; p++)
            if (pids[p] != 0) {
                int status;
                pid_t got = waitpid(pids[p], &status, WNOHANG);
                ck_assert_int_ge(got, 0);
                if (got == 0) {
                    alive++;
                } else {
                    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                                  "transfer process failed (status %d)", status);
                    pids[p] = 0;
                }
            }
    }
    ck_assert_int_eq(bad, 0);
    ck_assert_int_gt(audits, 0);
    /* Every transfer committed exactly once: two versions each. */
    uint64_t versions = 0;
    int64_t total = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        axstm_value *v = tu_usevar_ok(s, accounts[i]);
        versions += axstm_value_version(v);
        total += tu_get_i64_ok(v);
        axstm_value_free(v);
    }
    ck_assert_int_eq(total, (int64_t)ACCOUNTS * START_BALANCE);
    ck_assert_uint_eq(versions, ACCOUNTS + 2 * PROCESSES * TRANSFERS);
    ck_assert_uint_eq(tu_stats_ok(s).commits, 1 + PROCESSES * TRANSFERS);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* A queue of one slot between two processes: put waits while it is full,
 * take while it is empty; each wait is woken by the other's commit. */
#define ITEMS 30

static int put(axstm_txn *tx, void *arg)
{
    int64_t x;
    int rc = axstm_txn_get_i64(tx, "slot", &x);
    if (rc == AXSTM_OK)
        return AXSTM_RETRY; /* full */
    if (rc != AXSTM_ENOVALUE)
        return rc;
    return axstm_txn_set_i64(tx, "slot", *(int64_t *)arg);
}

static int take(axstm_txn *tx, void *arg)
{
    int rc = axstm_txn_get_i64(tx, "slot", arg);
    if (rc == AXSTM_ENOVALUE)
        return AXSTM_RETRY; /* empty */
    return rc == AXSTM_OK ? axstm_txn_delete(tx, "slot") : rc;
}

static int consumer(void)
{
    axstm_store *s = NULL;
    if (axstm_store_open(server.address, &s) != AXSTM_OK)
        return 1;
    int64_t sum = 0;
    for (int i = 0; i < ITEMS; i++) {
        int64_t x;
        if (axstm_atomically(s, take, &x) != AXSTM_OK)
            return 2;
        sum += x;
    }
    axstm_stats st;
    int rc = axstm_store_stats(s, &st);
    axstm_store_free(s);
    if (rc != AXSTM_OK)
        return 3;
    return sum == (int64_t)ITEMS * (ITEMS + 1) / 2 ? 0 : 4;
}

START_TEST(a_blocking_queue_between_two_processes)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_held();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(consumer());
    for (int64_t i = 1; i <= ITEMS; i++)
        ck_assert_int_eq(axstm_atomically(s, put, &i), AXSTM_OK);
    reap_ok(pid, "consumer");
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0); /* the last item was taken */
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* A child's commit of key, through a handle of its own store. */
static void commit_in_child(const char *key, int64_t x)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        axstm_store *s = NULL;
        axstm_value *v = NULL;
        int rc = axstm_store_open(server.address, &s);
        if (rc == AXSTM_OK)
            rc = axstm_usevar(s, key, &v);
        if (rc == AXSTM_OK)
            rc = axstm_value_set_i64(v, x);
        if (rc == AXSTM_OK)
            rc = axstm_value_commit(v);
        axstm_value_free(v);
        axstm_store_free(s);
        _exit(rc == AXSTM_OK ? 0 : 1);
    }
    reap_ok(pid, "committer");
}

START_TEST(a_watch_is_fired_by_another_process)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_held();
    static const char *const watched[] = {"w1", "w2"};
    static const char *const other[] = {"elsewhere"};
    axstm_watch *w = NULL, *quiet = NULL;
    ck_assert_int_eq(axstm_watch_new(s, watched, 2, &w), AXSTM_OK);
    ck_assert_int_eq(axstm_watch_new(s, other, 1, &quiet), AXSTM_OK);
    held_watches[0] = w;
    held_watches[1] = quiet;
    int fd = axstm_watch_fd(w);
    ck_assert_int_ge(fd, 0);
    ck_assert(!readable(fd, 0));
    commit_in_child("w2", 5); /* a key that did not exist */
    ck_assert(readable(fd, 20000));
    ck_assert_int_eq(axstm_watch_rearm(w), AXSTM_OK);
    ck_assert(!readable(fd, 0));
    commit_in_child("w1", 6);
    ck_assert(readable(fd, 20000));
    ck_assert(!readable(axstm_watch_fd(quiet), 0));
    axstm_watch_free(quiet);
    axstm_watch_free(w);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

static int wait_for_flag(axstm_txn *tx, void *arg)
{
    int rc = axstm_txn_get_i64(tx, "flag", arg);
    return rc == AXSTM_ENOVALUE ? AXSTM_RETRY : rc;
}

START_TEST(try_atomically_hands_out_a_watch_that_another_process_fires)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_held();
    axstm_watch *w = NULL;
    int64_t x = 0;
    ck_assert_int_eq(axstm_try_atomically(s, wait_for_flag, &x, &w), AXSTM_RETRY);
    ck_assert_ptr_nonnull(w);
    held_watches[0] = w;
    ck_assert(!readable(axstm_watch_fd(w), 0));
    commit_in_child("flag", 9);
    ck_assert(readable(axstm_watch_fd(w), 20000));
    axstm_watch_free(w);
    w = NULL;
    ck_assert_int_eq(axstm_try_atomically(s, wait_for_flag, &x, &w), AXSTM_OK);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(x, 9);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* A wait outlives the server's restart: the subscriber connects again,
 * every waiter looks again, and the commit after the restart wakes it. */
static int waiter_process(void)
{
    axstm_store *s = NULL;
    if (axstm_store_open(server.address, &s) != AXSTM_OK)
        return 1;
    int64_t x = 0;
    int rc;
    /* EIO while the server is away ends a run: the waiter starts again. */
    while ((rc = axstm_atomically(s, wait_for_flag, &x)) == AXSTM_EIO)
        tu_sleep_s(0.01);
    axstm_store_free(s);
    return rc == AXSTM_OK && x == 3 ? 0 : 2;
}

/* Whether the server has a subscriber on some channel: a waiter's. */
static bool has_a_subscriber(void)
{
    redisContext *c = redisConnectUnix(server.socket);
    ck_assert(c != NULL && c->err == 0);
    redisReply *r = redisCommand(c, "PUBSUB CHANNELS");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_ARRAY);
    bool some = r->elements > 0;
    freeReplyObject(r);
    redisFree(c);
    return some;
}

START_TEST(a_wait_survives_a_server_restart)
{
    SKIP_WITHOUT_SERVER();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(waiter_process());
    /* The waiter waits (its subscription stands) before the server is
     * killed and started again on the same socket, empty. */
    while (!has_a_subscriber()) {
        ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0, "the waiter ended before it waited");
        tu_sleep_s(0.01);
    }
    tu_redis_restart(&server);
    axstm_store *s = tu_redis_open_ok(server.address);
    axstm_value *v = tu_usevar_ok(s, "flag");
    tu_set_i64_ok(v, 3);
    ck_assert_int_eq(axstm_value_commit(v), AXSTM_OK);
    axstm_value_free(v);
    reap_ok(pid, "waiter");
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* ------------------------------------------------------------------ */
/* What this process knows of a key                                   */
/* ------------------------------------------------------------------ */

/*
 * With first_read=cache, a transaction's first read may be answered from
 * what this process last learnt of the key, with no round trip; the
 * server must then check it before anything rests on it.  Without, every
 * read asks the server.  "other" stands for another process: a store of
 * its own, so this process's store does not learn of its commits (no
 * subscriber runs: nothing here waits or watches).
 */

static axstm_store *open_first_read_cache(void)
{
    char address[sizeof server.address + 32];
    snprintf(address, sizeof address, "%s&first_read=cache", server.address);
    return tu_redis_open_ok(address);
}

/* Calls of EVALSHA the server has run since its counts were reset: each is
 * one round trip of the library's (every call of it runs one script). */
static long long script_calls(redisContext *c)
{
    redisReply *r = redisCommand(c, "INFO commandstats");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    long long calls = 0;
    const char *p = strstr(r->str, "cmdstat_evalsha:calls=");
    if (p != NULL)
        calls = strtoll(p + strlen("cmdstat_evalsha:calls="), NULL, 10);
    freeReplyObject(r);
    return calls;
}

static void reset_counts(redisContext *c)
{
    redisReply *r = redisCommand(c, "CONFIG RESETSTAT");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
}

struct seen {
    int runs;
    int64_t first; /* what the first run read */
    int64_t want;  /* the body answers its own code unless it reads this */
};

/* Reads k into *x, noting the first run's value. */
static int note_k(axstm_txn *tx, struct seen *w, int64_t *x)
{
    *x = 0;
    int rc = axstm_txn_get_i64(tx, "k", x);
    if (w->runs++ == 0)
        w->first = *x;
    return rc;
}

static int read_k(axstm_txn *tx, void *arg)
{
    struct seen *w = arg;
    int64_t x;
    int rc = note_k(tx, w, &x);
    if (rc != AXSTM_OK)
        return rc;
    return x == w->want ? AXSTM_OK : 50;
}

/* Reads k and answers OK whatever it is: a read-only transaction. */
static int only_read_k(axstm_txn *tx, void *arg)
{
    struct seen *w = arg;
    int64_t x;
    int rc = note_k(tx, w, &x);
    w->want = x; /* here: what the last run read */
    return rc;
}

static int increment_k(axstm_txn *tx, void *arg)
{
    int64_t x;
    int rc = note_k(tx, arg, &x);
    return rc == AXSTM_OK ? axstm_txn_set_i64(tx, "k", x + 1) : rc;
}

static int retry_until_k_is_wanted(axstm_txn *tx, void *arg)
{
    int rc = read_k(tx, arg);
    return rc == 50 ? AXSTM_RETRY : rc;
}

START_TEST(by_default_every_read_is_as_of_a_moment_inside_the_call)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = tu_redis_open_ok(server.address);
    axstm_store *other = tu_redis_open_ok(server.address);
    struct seen w = {0, 0, 0};
    tu_put_i64(s, "k", 1);
    tu_put_i64(other, "k", 2);
    ck_assert_int_eq(axstm_atomically(s, only_read_k, &w), AXSTM_OK);
    ck_assert_int_eq(w.runs, 1);
    ck_assert_int_eq(w.first, 2);
    axstm_store_free(other);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(a_read_of_what_this_process_knew_is_checked_before_anything_rests_on_it)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_first_read_cache();
    axstm_store *other = tu_redis_open_ok(server.address);
    struct seen w;

    tu_put_i64(s, "k", 1); /* s knows k = 1 */
    tu_put_i64(other, "k", 2);
    /* Read-only: the answer is checked although nothing is committed. */
    w = (struct seen){0, 0, 0};
    ck_assert_int_eq(axstm_atomically(s, only_read_k, &w), AXSTM_OK);
    ck_assert_int_eq(w.runs, 2); /* the first run read the old 1 */
    ck_assert_int_eq(w.first, 1);
    ck_assert_int_eq(w.want, 2);

    /* The body's own code rests on its read: checked too. */
    tu_put_i64(other, "k", 3);
    w = (struct seen){0, 0, 3};
    ck_assert_int_eq(axstm_atomically(s, read_k, &w), AXSTM_OK);
    ck_assert_int_eq(w.runs, 2);
    ck_assert_int_eq(w.first, 2);

    /* A commit checks it. */
    tu_put_i64(other, "k", 4);
    w = (struct seen){0, 0, 0};
    ck_assert_int_eq(axstm_atomically(s, increment_k, &w), AXSTM_OK);
    ck_assert_int_eq(w.runs, 2);
    ck_assert_int_eq(w.first, 3);
    axstm_value *v = tu_usevar_ok(other, "k");
    ck_assert_int_eq(tu_get_i64_ok(v), 5);
    ck_assert_uint_eq(axstm_value_version(v), 5);
    axstm_value_free(v);

    /* A retry that is told to time out at once rests on it too. */
    tu_put_i64(other, "k", 6);
    w = (struct seen){0, 0, 6};
    ck_assert_int_eq(axstm_atomically_timed(s, retry_until_k_is_wanted, &w, 0), AXSTM_OK);
    ck_assert_int_eq(w.runs, 2);
    ck_assert_int_eq(w.first, 5);
    axstm_store_free(other);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(a_transfer_takes_three_round_trips_or_two_with_first_read_cache)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *strict = tu_redis_open_ok(server.address);
    axstm_store *s = open_first_read_cache();
    redisContext *c = redisConnectUnix(server.socket);
    ck_assert_msg(c != NULL && c->err == 0, "connect to %s", server.socket);
    struct transfer t = {0, 1}; /* one unit from acct-0 to acct-1 */
    tu_put_i64(s, accounts[0], 1000);
    tu_put_i64(s, accounts[1], 0);
    ck_assert_int_eq(axstm_atomically(s, transfer, &t), AXSTM_OK);
    reset_counts(c);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(axstm_atomically(strict, transfer, &t), AXSTM_OK);
    ck_assert_int_eq(script_calls(c), 30);                         /* two reads and the commit */
    ck_assert_int_eq(axstm_atomically(s, transfer, &t), AXSTM_OK); /* s learns */
    reset_counts(c);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(axstm_atomically(s, transfer, &t), AXSTM_OK);
    /* The second read and the commit: the first read is known. */
    ck_assert_int_eq(script_calls(c), 20);

    /* Once another process wrote acct-0, a transfer costs a round trip more. */
    axstm_store *other = tu_redis_open_ok(server.address);
    tu_put_i64(other, accounts[0], 500);
    reset_counts(c);
    ck_assert_int_eq(axstm_atomically(s, transfer, &t), AXSTM_OK);
    /* A read that failed its check and brought acct-0's state now, then
     * the second read and the commit. */
    ck_assert_int_eq(script_calls(c), 3);
    axstm_value *v = tu_usevar_ok(other, accounts[0]);
    ck_assert_int_eq(tu_get_i64_ok(v), 499);
    axstm_value_free(v);
    v = tu_usevar_ok(other, accounts[1]);
    ck_assert_int_eq(tu_get_i64_ok(v), 23);
    axstm_value_free(v);
    axstm_store_free(other);
    redisFree(c);
    axstm_store_free(strict);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* ------------------------------------------------------------------ */
/* The commit clock                                                   */
/* ------------------------------------------------------------------ */

/* Calls of the command `name` the server has run since its counts were
 * reset, those run by scripts included. */
static long long command_calls(redisContext *c, const char *name)
{
    char field[64];
    snprintf(field, sizeof field, "cmdstat_%s:calls=", name);
    redisReply *r = redisCommand(c, "INFO commandstats");
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_STRING);
    long long calls = 0;
    const char *p = strstr(r->str, field);
    if (p != NULL)
        calls = strtoll(p + strlen(field), NULL, 10);
    freeReplyObject(r);
    return calls;
}

#define MANY_READS 200

/* Keys n0..n199, each holding its number. */
static void put_many(axstm_store *s)
{
    for (int i = 0; i < MANY_READS; i++) {
        char key[16];
        snprintf(key, sizeof key, "n%d", i);
        tu_put_i64(s, key, i);
    }
}

static int sum_many(axstm_txn *tx, void *arg)
{
    int64_t *sum = arg;
    *sum = 0;
    for (int i = 0; i < MANY_READS; i++) {
        char key[16];
        int64_t x;
        snprintf(key, sizeof key, "n%d", i);
        int rc = axstm_txn_get_i64(tx, key, &x);
        if (rc != AXSTM_OK)
            return rc;
        *sum += x;
    }
    return AXSTM_OK;
}

/* A read costs the same however many came before it in the attempt: one
 * round trip reading one key's hash, not a check of every key read
 * before (which made a transaction of n reads cost n^2 / 2 of them).
 * Only the first few reads check those before them. */
START_TEST(a_read_costs_the_same_however_many_came_before)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = tu_redis_open_ok(server.address);
    redisContext *c = redisConnectUnix(server.socket);
    ck_assert_msg(c != NULL && c->err == 0, "connect to %s", server.socket);
    put_many(s);
    reset_counts(c);
    int64_t sum = 0;
    ck_assert_int_eq(axstm_atomically(s, sum_many, &sum), AXSTM_OK);
    ck_assert_int_eq(sum, MANY_READS * (MANY_READS - 1) / 2);
    ck_assert_int_eq(script_calls(c), MANY_READS); /* read-only: no commit */
    /* One hash read per key, and the checks of the first few reads
     * (without the clock: 200 * 201 / 2). */
    long long hmget = command_calls(c, "hmget");
    ck_assert_msg(hmget >= MANY_READS && hmget <= MANY_READS + 16, "%lld hash reads", hmget);
    redisFree(c);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* A body that reads `before` keys, the first of them "a" (the others
 * fillers), then "b"; between the two, on its first run only, another
 * client ("other") commits: both a and b (kept equal), only b, or deletes
 * both.  A run that saw a and b from two different states is noted. */
enum change { CHANGE_BOTH, CHANGE_B, DELETE_BOTH };
struct between {
    axstm_store *other;
    enum change change;
    int before, runs;
    bool mixed;
    int64_t b; /* what the last run read of b (-1: absent) */
};

static int64_t read_or_absent(axstm_txn *tx, const char *key, int *rc)
{
    int64_t x = -1;
    *rc = axstm_txn_get_i64(tx, key, &x);
    if (*rc == AXSTM_ENOVALUE) {
        *rc = AXSTM_OK;
        x = -1;
    }
    return x;
}

static void other_commits(struct between *m)
{
    axstm_value *a = tu_usevar_ok(m->other, "a");
    axstm_value *b = tu_usevar_ok(m->other, "b");
    int64_t x = tu_get_i64_ok(b);
    if (m->change == DELETE_BOTH) {
        ck_assert_int_eq(axstm_value_delete(a), AXSTM_OK);
        ck_assert_int_eq(axstm_value_delete(b), AXSTM_OK);
    } else {
        if (m->change == CHANGE_BOTH)
            ck_assert_int_eq(axstm_value_set_i64(a, x + 1), AXSTM_OK);
        ck_assert_int_eq(axstm_value_set_i64(b, x + 1), AXSTM_OK);
    }
    axstm_value *both[2] = {b, a}; /* b alone for CHANGE_B */
    ck_assert_int_eq(axstm_values_commit(both, m->change == CHANGE_B ? 1 : 2), AXSTM_OK);
    axstm_value_free(a);
    axstm_value_free(b);
}

static int read_a_then_b(axstm_txn *tx, void *arg)
{
    struct between *m = arg;
    int rc;
    int64_t a = read_or_absent(tx, "a", &rc);
    for (int i = 1; i < m->before && rc == AXSTM_OK; i++) {
        char key[24];
        snprintf(key, sizeof key, "filler%d", i);
        read_or_absent(tx, key, &rc);
    }
    if (rc != AXSTM_OK)
        return rc;
    if (m->runs++ == 0)
        other_commits(m);
    int64_t b = read_or_absent(tx, "b", &rc);
    if (rc != AXSTM_OK)
        return rc;
    m->b = b;
    /* a and b are equal in every state but the one after CHANGE_B. */
    if (m->change != CHANGE_B && a != b)
        m->mixed = true;
    if (m->change == CHANGE_B && !((a == 7 && b == 7) || (a == 7 && b == 8)))
        m->mixed = true;
    return AXSTM_OK;
}

static void run_between(axstm_store *s, axstm_store *other, enum change change, int before,
                        int want_runs, int64_t want_b)
{
    tu_put_i64(s, "a", 7);
    tu_put_i64(s, "b", 7);
    for (int i = 1; i < before; i++) {
        char key[24];
        snprintf(key, sizeof key, "filler%d", i);
        tu_put_i64(s, key, i);
    }
    struct between m = {other, change, before, 0, false, 0};
    ck_assert_int_eq(axstm_atomically(s, read_a_then_b, &m), AXSTM_OK);
    ck_assert_msg(!m.mixed, "change %d, %d reads before: a and b from two states", change, before);
    ck_assert_int_eq(m.runs, want_runs);
    ck_assert_int_eq(m.b, want_b);
}

/* The clock: a key another client committed after the attempt's first
 * read has the reads before it checked.  When they changed too the body
 * runs again (it never sees two states mixed); when they did not, the
 * clock moves on and the body goes on with the new value.  A key absent
 * now may have been deleted since, so it is checked the same way.  With
 * few reads before, they go with the read; with many, the server asks
 * for them. */
START_TEST(a_key_changed_since_the_clock_has_the_reads_before_checked)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = tu_redis_open_ok(server.address);
    axstm_store *other = tu_redis_open_ok(server.address);
    static const int befores[] = {1, 3, 10};
    for (size_t i = 0; i < sizeof befores / sizeof befores[0]; i++) {
        run_between(s, other, CHANGE_BOTH, befores[i], 2, 8);
        run_between(s, other, CHANGE_B, befores[i], 1, 8);
        run_between(s, other, DELETE_BOTH, befores[i], 2, -1);
    }
    axstm_store_free(other);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

static int prefetched_transfer(axstm_txn *tx, void *arg)
{
    const struct transfer *t = arg;
    const char *const keys[] = {accounts[t->from], accounts[t->to]};
    int rc = axstm_txn_prefetch(tx, keys, 2);
    return rc == AXSTM_OK ? transfer(tx, arg) : rc;
}

static int prefetch_many(axstm_txn *tx, void *arg)
{
    static char names[MANY_READS][16];
    const char *keys[MANY_READS];
    for (int i = 0; i < MANY_READS; i++) {
        snprintf(names[i], sizeof names[i], "n%d", i);
        keys[i] = names[i];
    }
    int rc = axstm_txn_prefetch(tx, keys, MANY_READS);
    return rc == AXSTM_OK ? sum_many(tx, arg) : rc;
}

/* A body that names its keys first reads them all in one round trip: a
 * transfer is two (the reads and the commit), 200 reads one. */
START_TEST(a_prefetch_is_one_round_trip)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = tu_redis_open_ok(server.address);
    redisContext *c = redisConnectUnix(server.socket);
    ck_assert_msg(c != NULL && c->err == 0, "connect to %s", server.socket);
    struct transfer t = {0, 1};
    tu_put_i64(s, accounts[0], 1000);
    tu_put_i64(s, accounts[1], 0);
    reset_counts(c);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(axstm_atomically(s, prefetched_transfer, &t), AXSTM_OK);
    ck_assert_int_eq(script_calls(c), 20);
    axstm_value *v = tu_usevar_ok(s, accounts[1]);
    ck_assert_int_eq(tu_get_i64_ok(v), 10);
    axstm_value_free(v);

    put_many(s);
    reset_counts(c);
    int64_t sum = 0;
    ck_assert_int_eq(axstm_atomically(s, prefetch_many, &sum), AXSTM_OK);
    ck_assert_int_eq(sum, MANY_READS * (MANY_READS - 1) / 2);
    ck_assert_int_eq(script_calls(c), 1);
    redisFree(c);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* Kept handles that lost a commit are brought up to date together: one
 * round trip for all of them. */
START_TEST(values_refresh_is_one_round_trip)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = tu_redis_open_ok(server.address);
    redisContext *c = redisConnectUnix(server.socket);
    ck_assert_msg(c != NULL && c->err == 0, "connect to %s", server.socket);
    put_many(s);
    axstm_value *h[MANY_READS];
    for (int i = 0; i < MANY_READS; i++) {
        char key[16];
        snprintf(key, sizeof key, "n%d", i);
        h[i] = tu_usevar_ok(s, key);
    }
    tu_put_i64(s, "n7", 700);
    reset_counts(c);
    ck_assert_int_eq(axstm_values_refresh(h, MANY_READS), AXSTM_OK);
    ck_assert_int_eq(script_calls(c), 1);
    ck_assert_int_eq(tu_get_i64_ok(h[7]), 700);
    ck_assert_uint_eq(axstm_value_version(h[7]), 2);
    for (int i = 0; i < MANY_READS; i++)
        axstm_value_free(h[i]);
    redisFree(c);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

static Suite *redis_txn_suite(void)
{
    Suite *s = suite_create("redis transactions");
    TCase *tc = tcase_create("One process");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, atomically_commits_its_writes_and_reads_its_own);
    tcase_add_test(tc, a_transaction_that_does_not_commit_leaves_no_key);
    tcase_add_test(tc, or_else_drops_the_first_branch_writes);
    tcase_add_test(tc, a_timed_wait_times_out);
    tcase_add_test(tc, bad_calls_are_einval);
    tcase_add_test(tc, by_default_every_read_is_as_of_a_moment_inside_the_call);
    tcase_add_test(tc, a_read_of_what_this_process_knew_is_checked_before_anything_rests_on_it);
    tcase_add_test(tc, a_transfer_takes_three_round_trips_or_two_with_first_read_cache);
    suite_add_tcase(s, tc);

    tc = tcase_create("Commit clock");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_read_costs_the_same_however_many_came_before);
    tcase_add_test(tc, a_key_changed_since_the_clock_has_the_reads_before_checked);
    tcase_add_test(tc, a_prefetch_is_one_round_trip);
    tcase_add_test(tc, values_refresh_is_one_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("Several processes");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, transfers_from_several_processes_are_serializable_and_opaque);
    tcase_add_test(tc, a_blocking_queue_between_two_processes);
    tcase_add_test(tc, a_watch_is_fired_by_another_process);
    tcase_add_test(tc, try_atomically_hands_out_a_watch_that_another_process_fires);
    tcase_add_test(tc, a_wait_survives_a_server_restart);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(redis_txn_suite());
}
