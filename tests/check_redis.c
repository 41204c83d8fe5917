/* SPDX-License-Identifier: MIT */
/*
 * check_redis.c -- a store kept in Redis (axstm_store_open "redis..."):
 * Axon's rules on handles and collections, deleting, foreach and stats,
 * several clients and several processes on one server, and the faults
 * (no server, a server killed or stopped mid-run, foreign data, a wrong
 * password, forgotten scripts), each against a redis-server of the
 * test's own (redisutil.h).
 */
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "redis.h" /* the commit record's test hook */
#include "redisutil.h"
#include "testutil.h"

/* Each test's server; every test starts one (or skips: no redis-server). */
static struct tu_redis server;

static bool start(void)
{
    if (!tu_redis_start(&server))
        return false;
    return true;
}

#define open_ok tu_redis_open_ok

static int add_one(axstm_txn *tx, void *arg);

static axstm_value *usevar_ok(axstm_store *s, const char *key)
{
    axstm_value *v = NULL;
    int rc = axstm_usevar(s, key, &v);
    ck_assert_msg(rc == AXSTM_OK, "usevar %s: %s", key, axstm_strerror(rc));
    return v;
}

static void put_str(axstm_store *s, const char *key, const char *str)
{
    axstm_value *v = usevar_ok(s, key);
    ck_assert_int_eq(axstm_value_set_str(v, str), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(v), AXSTM_OK);
    axstm_value_free(v);
}

static void assert_str_value(axstm_store *s, const char *key, const char *want, uint64_t version)
{
    axstm_value *v = usevar_ok(s, key);
    const char *got = NULL;
    ck_assert_int_eq(axstm_value_get_str(v, &got), AXSTM_OK);
    ck_assert_str_eq(got, want);
    ck_assert_uint_eq(axstm_value_version(v), version);
    axstm_value_free(v);
}

static void assert_i64_value(axstm_store *s, const char *key, int64_t want, uint64_t version)
{
    axstm_value *v = usevar_ok(s, key);
    int64_t x = 0;
    ck_assert_int_eq(axstm_value_get_i64(v, &x), AXSTM_OK);
    ck_assert_int_eq(x, want);
    ck_assert_uint_eq(axstm_value_version(v), version);
    axstm_value_free(v);
}

#define SKIP_WITHOUT_SERVER()                                                      \
    do {                                                                           \
        if (!start())                                                              \
            return; /* no redis-server on this machine: nothing to test against */ \
    } while (0)

/* ------------------------------------------------------------------ */
/* Axon's rules                                                       */
/* ------------------------------------------------------------------ */

START_TEST(usevar_creates_a_key_with_no_value)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_ok(server.address);
    axstm_value *v = usevar_ok(s, "fresh");
    size_t len = 1;
    ck_assert_ptr_null(axstm_value_data(v, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_uint_eq(axstm_value_version(v), 0);
    ck_assert_str_eq(axstm_value_key(v), "fresh");
    axstm_stats st;
    ck_assert_int_eq(axstm_store_stats(s, &st), AXSTM_OK);
    ck_assert_uint_eq(st.keys, 1);
    axstm_value_free(v);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(commit_is_seen_by_another_client)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *a = open_ok(server.address);
    axstm_store *b = open_ok(server.address);
    put_str(a, "greeting", "Hello World");
    assert_str_value(b, "greeting", "Hello World", 1);
    put_str(b, "greeting", "Hello again");
    assert_str_value(a, "greeting", "Hello again", 2);
    axstm_store_free(a);
    /* Keys stay in the server after the store is freed. */
    axstm_store *c = open_ok(server.address);
    assert_str_value(c, "greeting", "Hello again", 2);
    axstm_store_free(c);
    axstm_store_free(b);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(stale_commit_is_concurrent_update_and_writes_nothing)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *a = open_ok(server.address);
    axstm_store *b = open_ok(server.address);
    put_str(a, "k", "one");
    axstm_value *stale = usevar_ok(a, "k");
    put_str(b, "k", "two");
    ck_assert_int_eq(axstm_value_set_str(stale, "lost"), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(stale), AXSTM_CONCURRENT_UPDATE);
    assert_str_value(b, "k", "two", 2);
    /* Refreshed, the handle commits. */
    ck_assert_int_eq(axstm_value_refresh(stale), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(stale), 2);
    ck_assert_int_eq(axstm_value_set_str(stale, "three"), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(stale), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(stale), 3);
    assert_str_value(b, "k", "three", 3);
    axstm_value_free(stale);
    axstm_stats st;
    ck_assert_int_eq(axstm_store_stats(b, &st), AXSTM_OK);
    ck_assert_uint_eq(st.conflicts, 1);
    ck_assert_uint_eq(st.commits, 3);
    axstm_store_free(a);
    axstm_store_free(b);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(collection_commits_all_or_nothing)
{
    SKIP_WITHOUT_SERVER();
    static const char *const keys[] = {"x", "y", "z"};
    axstm_store *a = open_ok(server.address);
    axstm_store *b = open_ok(server.address);
    axstm_collection *c = NULL;
    ck_assert_int_eq(axstm_using(a, keys, 3, &c), AXSTM_OK);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(axstm_value_set_i64(axstm_collection_at(c, (size_t)i), 10 + i), AXSTM_OK);
    ck_assert_int_eq(axstm_collection_commit(c), AXSTM_OK);
    /* Someone commits y: the whole collection is refused. */
    axstm_value *y = usevar_ok(b, "y");
    ck_assert_int_eq(axstm_value_set_i64(y, 99), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(y), AXSTM_OK);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(axstm_value_set_i64(axstm_collection_at(c, (size_t)i), 20 + i), AXSTM_OK);
    ck_assert_int_eq(axstm_collection_commit(c), AXSTM_CONCURRENT_UPDATE);
    int64_t got;
    axstm_value *x = usevar_ok(b, "x");
    ck_assert_int_eq(axstm_value_get_i64(x, &got), AXSTM_OK);
    ck_assert_int_eq(got, 10);
    ck_assert_uint_eq(axstm_value_version(x), 1);
    /* A refreshed collection reads one snapshot and commits. */
    ck_assert_int_eq(axstm_collection_refresh(c), AXSTM_OK);
    ck_assert_int_eq(axstm_value_get_i64(axstm_collection_value(c, "y"), &got), AXSTM_OK);
    ck_assert_int_eq(got, 99);
    ck_assert_int_eq(axstm_collection_commit(c), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(axstm_collection_value(c, "y")), 3);
    axstm_value_free(x);
    axstm_value_free(y);
    axstm_collection_free(c);
    axstm_store_free(a);
    axstm_store_free(b);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(values_of_any_bytes_and_size_round_trip)
{
    SKIP_WITHOUT_SERVER();
    enum { BIG = 3 << 20 };
    axstm_store *s = open_ok(server.address);
    unsigned char *big = tu_xmalloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (unsigned char)(i * 131 + (i >> 9));
    static const char with_nul[] = {'a', '\0', 'b', '\0'};
    axstm_value *v = usevar_ok(s, "big");
    ck_assert_int_eq(axstm_value_set(v, big, BIG), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(v), AXSTM_OK);
    axstm_value *e = usevar_ok(s, "empty");
    ck_assert_int_eq(axstm_value_set(e, NULL, 0), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(e), AXSTM_OK);
    axstm_value *n = usevar_ok(s, "nul");
    ck_assert_int_eq(axstm_value_set(n, with_nul, sizeof with_nul), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(n), AXSTM_OK);
    axstm_value_free(v);
    axstm_value_free(e);
    axstm_value_free(n);

    axstm_store *t = open_ok(server.address);
    size_t len;
    v = usevar_ok(t, "big");
    const void *data = axstm_value_data(v, &len);
    ck_assert_uint_eq(len, BIG);
    ck_assert(memcmp(data, big, BIG) == 0);
    e = usevar_ok(t, "empty");
    ck_assert_ptr_nonnull(axstm_value_data(e, &len));
    ck_assert_uint_eq(len, 0);
    n = usevar_ok(t, "nul");
    data = axstm_value_data(n, &len);
    ck_assert_uint_eq(len, sizeof with_nul);
    ck_assert(memcmp(data, with_nul, len) == 0);
    axstm_stats st;
    ck_assert_int_eq(axstm_store_stats(t, &st), AXSTM_OK);
    ck_assert_uint_eq(st.bytes, BIG + sizeof with_nul);
    axstm_value_free(v);
    axstm_value_free(e);
    axstm_value_free(n);
    free(big);
    axstm_store_free(t);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Deleting                                                           */
/* ------------------------------------------------------------------ */

START_TEST(delete_removes_the_key_and_no_stale_handle_commits_over_it)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *a = open_ok(server.address);
    axstm_store *b = open_ok(server.address);
    put_str(a, "k", "first");
    axstm_value *stale = usevar_ok(a, "k"); /* version 1 */
    axstm_value *d = usevar_ok(b, "k");
    ck_assert_int_eq(axstm_value_delete(d), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(d), AXSTM_OK);
    axstm_value_free(d);
    axstm_stats st;
    ck_assert_int_eq(axstm_store_stats(b, &st), AXSTM_OK);
    ck_assert_uint_eq(st.keys, 0);
    /* Created again and brought to the same version: still not the key
     * the stale handle checked out (no ABA). */
    put_str(b, "k", "second");
    assert_str_value(b, "k", "second", 1);
    ck_assert_int_eq(axstm_value_set_str(stale, "over"), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(stale), AXSTM_CONCURRENT_UPDATE);
    assert_str_value(b, "k", "second", 1);
    axstm_value_free(stale);
    axstm_store_free(a);
    axstm_store_free(b);
    tu_redis_stop(&server);
}
END_TEST

/* ------------------------------------------------------------------ */
/* foreach, stats, prefixes                                           */
/* ------------------------------------------------------------------ */

struct seen {
    int n;
    char keys[8][16];
    uint64_t versions[8];
    int stop_after;
};

static int record(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    struct seen *s = arg;
    (void)data;
    (void)len;
    if (s->n < 8) {
        snprintf(s->keys[s->n], sizeof s->keys[0], "%s", key);
        s->versions[s->n] = version;
    }
    s->n++;
    return s->stop_after != 0 && s->n == s->stop_after ? 42 : 0;
}

START_TEST(foreach_visits_every_key_once)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_ok(server.address);
    put_str(s, "a", "1");
    put_str(s, "b", "2");
    put_str(s, "b", "3");
    axstm_value *c = usevar_ok(s, "c"); /* no value: visited too */
    axstm_value_free(c);
    put_str(s, "gone", "x");
    axstm_value *g = usevar_ok(s, "gone");
    ck_assert_int_eq(axstm_value_delete(g), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(g), AXSTM_OK);
    axstm_value_free(g);
    struct seen seen = {0};
    ck_assert_int_eq(axstm_store_foreach(s, record, &seen), AXSTM_OK);
    ck_assert_int_eq(seen.n, 3);
    int found = 0;
    for (int i = 0; i < seen.n; i++) {
        if (strcmp(seen.keys[i], "b") == 0)
            ck_assert_uint_eq(seen.versions[i], 2);
        found |= (seen.keys[i][0] == 'a') << 0 | (seen.keys[i][0] == 'b') << 1 |
                 (seen.keys[i][0] == 'c') << 2;
    }
    ck_assert_int_eq(found, 7);
    struct seen stop = {.stop_after = 2};
    ck_assert_int_eq(axstm_store_foreach(s, record, &stop), 42);
    ck_assert_int_eq(stop.n, 2);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(prefixes_keep_stores_apart)
{
    SKIP_WITHOUT_SERVER();
    char other[256];
    snprintf(other, sizeof other, "%s&prefix=other:", server.address);
    axstm_store *a = open_ok(server.address);
    axstm_store *b = open_ok(other);
    put_str(a, "k", "in a");
    axstm_value *v = usevar_ok(b, "k");
    ck_assert_uint_eq(axstm_value_version(v), 0);
    ck_assert_ptr_null(axstm_value_data(v, NULL));
    axstm_value_free(v);
    axstm_stats st;
    ck_assert_int_eq(axstm_store_stats(a, &st), AXSTM_OK);
    ck_assert_uint_eq(st.keys, 1);
    ck_assert_uint_eq(st.commits, 1);
    ck_assert_int_eq(axstm_store_stats(b, &st), AXSTM_OK);
    ck_assert_uint_eq(st.keys, 1);
    ck_assert_uint_eq(st.commits, 0);
    axstm_store_free(a);
    axstm_store_free(b);
    tu_redis_stop(&server);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Several processes                                                  */
/* ------------------------------------------------------------------ */

enum { ACCOUNTS = 16, START_BALANCE = 100, PROCESSES = 3, TRANSFERS = 300 };

static void account_name(char *buf, size_t n, int i)
{
    snprintf(buf, n, "account-%d", i);
}

/* A child's work: TRANSFERS transfers between random accounts through
 * `using` + commit, redone on conflict.  Exits 0, or 1 on any other code. */
static int transfer_loop(const char *address, unsigned seed)
{
    axstm_store *s = NULL;
    if (axstm_store_open(address, &s) != AXSTM_OK)
        return 1;
    uint64_t state = seed;
    char na[24], nb[24];
    for (int done = 0; done < TRANSFERS;) {
        int from = (int)(tu_rand(&state) % ACCOUNTS);
        int to = (int)(tu_rand(&state) % (ACCOUNTS - 1));
        to += to >= from;
        account_name(na, sizeof na, from);
        account_name(nb, sizeof nb, to);
        const char *keys[2] = {na, nb};
        axstm_collection *c = NULL;
        int rc = axstm_using(s, keys, 2, &c);
        for (;;) {
            int64_t x, y;
            if (rc != AXSTM_OK)
                break;
            rc = axstm_value_get_i64(axstm_collection_at(c, 0), &x);
            if (rc == AXSTM_OK)
                rc = axstm_value_get_i64(axstm_collection_at(c, 1), &y);
            if (rc == AXSTM_OK)
                rc = axstm_value_set_i64(axstm_collection_at(c, 0), x - 1);
            if (rc == AXSTM_OK)
                rc = axstm_value_set_i64(axstm_collection_at(c, 1), y + 1);
            if (rc == AXSTM_OK)
                rc = axstm_collection_commit(c);
            if (rc != AXSTM_CONCURRENT_UPDATE && rc != AXSTM_BUSY_RETRY)
                break;
            rc = axstm_collection_refresh(c);
        }
        axstm_collection_free(c);
        if (rc != AXSTM_OK) {
            axstm_store_free(s);
            return 1;
        }
        done++;
    }
    axstm_store_free(s);
    return 0;
}

START_TEST(transfers_from_several_processes_conserve_the_total)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_ok(server.address);
    char name[24];
    for (int i = 0; i < ACCOUNTS; i++) {
        axstm_value *v;
        account_name(name, sizeof name, i);
        v = usevar_ok(s, name);
        ck_assert_int_eq(axstm_value_set_i64(v, START_BALANCE), AXSTM_OK);
        ck_assert_int_eq(axstm_value_commit(v), AXSTM_OK);
        axstm_value_free(v);
    }
    pid_t pids[PROCESSES];
    for (int p = 0; p < PROCESSES; p++) {
        pids[p] = fork();
        ck_assert_int_ge(pids[p], 0);
        if (pids[p] == 0)
            _exit(transfer_loop(server.address, 1000u + (unsigned)p));
    }
    for (int p = 0; p < PROCESSES; p++) {
        int status;
        ck_assert_int_eq(waitpid(pids[p], &status, 0), pids[p]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "transfer process %d failed (status %d)", p, status);
    }
    /* The auditor: the total is exact, and every commit is counted once in
     * the versions (each transfer bumps two accounts). */
    const char *keys[ACCOUNTS];
    char names[ACCOUNTS][24];
    for (int i = 0; i < ACCOUNTS; i++) {
        account_name(names[i], sizeof names[i], i);
        keys[i] = names[i];
    }
    axstm_collection *c = NULL;
    ck_assert_int_eq(axstm_using(s, keys, ACCOUNTS, &c), AXSTM_OK);
    int64_t total = 0;
    uint64_t versions = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        int64_t x;
        axstm_value *v = axstm_collection_at(c, (size_t)i);
        ck_assert_int_eq(axstm_value_get_i64(v, &x), AXSTM_OK);
        total += x;
        versions += axstm_value_version(v);
    }
    ck_assert_int_eq(total, (int64_t)ACCOUNTS * START_BALANCE);
    ck_assert_uint_eq(versions, ACCOUNTS + 2 * PROCESSES * TRANSFERS);
    axstm_stats st;
    ck_assert_int_eq(axstm_store_stats(s, &st), AXSTM_OK);
    ck_assert_uint_eq(st.commits, ACCOUNTS + PROCESSES * TRANSFERS);
    axstm_collection_free(c);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/*
 * Transfers that ride out a server's death: AXSTM_EIO and AXSTM_BUSY_RETRY
 * (the server gone, or loading) are waited out and the transfer tried
 * again; AXSTM_EINDOUBT (a commit sent, its answer lost) counts as done,
 * whichever way it went: either way the total is whole.  Gives up (1)
 * after 120 s without the server.
 */
/* What a worker saw while the server died and came back. */
struct fault_codes {
    long ok, in_doubt, eio, busy, conflicts;
};

static int transfers_through_faults(const char *address, unsigned seed, int count,
                                    struct fault_codes *seen)
{
    axstm_store *s = NULL;
    uint64_t state = seed;
    double give_up = tu_now() + 120;
    while (axstm_store_open(address, &s) != AXSTM_OK)
        if (tu_now() > give_up)
            return 1;
        else
            tu_sleep_ns(5000000);
    char na[24], nb[24];
    for (int done = 0; done < count;) {
        int from = (int)(tu_rand(&state) % ACCOUNTS);
        int to = (int)(tu_rand(&state) % (ACCOUNTS - 1));
        to += to >= from;
        account_name(na, sizeof na, from);
        account_name(nb, sizeof nb, to);
        const char *keys[2] = {na, nb};
        axstm_collection *c = NULL;
        int64_t x, y;
        int rc = axstm_using(s, keys, 2, &c);
        if (rc == AXSTM_OK)
            rc = axstm_value_get_i64(axstm_collection_at(c, 0), &x);
        if (rc == AXSTM_OK)
            rc = axstm_value_get_i64(axstm_collection_at(c, 1), &y);
        if (rc == AXSTM_OK)
            rc = axstm_value_set_i64(axstm_collection_at(c, 0), x - 1);
        if (rc == AXSTM_OK)
            rc = axstm_value_set_i64(axstm_collection_at(c, 1), y + 1);
        if (rc == AXSTM_OK)
            rc = axstm_collection_commit(c);
        axstm_collection_free(c);
        seen->ok += rc == AXSTM_OK;
        seen->in_doubt += rc == AXSTM_EINDOUBT;
        seen->eio += rc == AXSTM_EIO;
        seen->busy += rc == AXSTM_BUSY_RETRY;
        seen->conflicts += rc == AXSTM_CONCURRENT_UPDATE;
        if (rc == AXSTM_OK || rc == AXSTM_EINDOUBT) {
            done++;
        } else if (rc == AXSTM_EIO || rc == AXSTM_BUSY_RETRY) {
            if (tu_now() > give_up)
                break;
            tu_sleep_ns(5000000);
        } else if (rc != AXSTM_CONCURRENT_UPDATE) {
            break;
        }
    }
    axstm_store_free(s);
    return tu_now() > give_up ? 1 : 0;
}

START_TEST(server_killed_and_restarted_mid_run_loses_no_money)
{
    static const char *const aof[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
    enum { WORKERS = 2, EACH = 400 };
    if (!tu_redis_start_with(&server, aof, 500))
        return;
    axstm_store *s = open_ok(server.address);
    char name[24];
    for (int i = 0; i < ACCOUNTS; i++) {
        account_name(name, sizeof name, i);
        axstm_value *v = usevar_ok(s, name);
        ck_assert_int_eq(axstm_value_set_i64(v, START_BALANCE), AXSTM_OK);
        ck_assert_int_eq(axstm_value_commit(v), AXSTM_OK);
        axstm_value_free(v);
    }
    pid_t pids[WORKERS];
    struct fault_codes *seen = mmap(NULL, WORKERS * sizeof *seen, PROT_READ | PROT_WRITE,
                                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert(seen != MAP_FAILED);
    memset(seen, 0, WORKERS * sizeof *seen);
    for (int p = 0; p < WORKERS; p++) {
        pids[p] = fork();
        ck_assert_int_ge(pids[p], 0);
        if (pids[p] == 0)
            _exit(transfers_through_faults(server.address, 77u + (unsigned)p, EACH, &seen[p]));
    }
    /* Kill the server once the workers are well under way (whenever that
     * is: no timing assumed), then bring it back from its AOF. */
    double give_up = tu_now() + 120;
    for (;;) {
        axstm_stats st;
        if (axstm_store_stats(s, &st) == AXSTM_OK && st.commits >= ACCOUNTS + EACH / 2)
            break;
        ck_assert_msg(tu_now() < give_up, "the workers made no progress");
        tu_sleep_ns(1000000);
    }
    tu_redis_kill(&server);
    tu_redis_restart(&server);
    for (int p = 0; p < WORKERS; p++) {
        int status;
        ck_assert_int_eq(waitpid(pids[p], &status, 0), pids[p]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "worker %d failed (status %d)",
                      p, status);
    }
    int64_t total = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        int64_t x;
        account_name(name, sizeof name, i);
        axstm_value *v = NULL;
        int rc;
        while ((rc = axstm_usevar(s, name, &v)) == AXSTM_BUSY_RETRY)
            tu_sleep_ns(1000000);
        ck_assert_msg(rc == AXSTM_OK, "after the restart: %s", axstm_strerror(rc));
        ck_assert_int_eq(axstm_value_get_i64(v, &x), AXSTM_OK);
        total += x;
        axstm_value_free(v);
    }
    ck_assert_int_eq(total, (int64_t)ACCOUNTS * START_BALANCE);
    /* Every commit answered OK is there once; one in doubt may be. */
    long ok = 0, in_doubt = 0;
    for (int p = 0; p < WORKERS; p++) {
        printf("server killed mid-run, worker %d: %ld OK, %ld EINDOUBT, %ld EIO, %ld "
               "BUSY_RETRY, %ld CONCURRENT_UPDATE\n",
               p, seen[p].ok, seen[p].in_doubt, seen[p].eio, seen[p].busy, seen[p].conflicts);
        ok += seen[p].ok;
        in_doubt += seen[p].in_doubt;
    }
    fflush(stdout);
    axstm_stats st;
    int rc;
    while ((rc = axstm_store_stats(s, &st)) == AXSTM_BUSY_RETRY)
        tu_sleep_ns(1000000);
    ck_assert_int_eq(rc, AXSTM_OK);
    ck_assert_uint_ge(st.commits, (uint64_t)(ACCOUNTS + ok));
    ck_assert_uint_le(st.commits, (uint64_t)(ACCOUNTS + ok + in_doubt));
    munmap(seen, WORKERS * sizeof *seen);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* A store opened before a fork, used by parent and child at once: each
 * must talk to the server on connections of its own (a shared socket
 * would mix their requests and answers). */
static int bump_many(axstm_store *s, const char *key, int times)
{
    axstm_value *v = NULL;
    int rc = axstm_usevar(s, key, &v);
    for (int done = 0; done < times && rc == AXSTM_OK;) {
        int64_t x = 0;
        if (axstm_value_data(v, NULL) != NULL)
            rc = axstm_value_get_i64(v, &x);
        if (rc == AXSTM_OK)
            rc = axstm_value_set_i64(v, x + 1);
        if (rc == AXSTM_OK)
            rc = axstm_value_commit(v);
        if (rc == AXSTM_OK)
            done++;
        else if (rc == AXSTM_CONCURRENT_UPDATE)
            rc = axstm_value_refresh(v);
    }
    axstm_value_free(v);
    return rc;
}

START_TEST(a_store_used_on_both_sides_of_a_fork)
{
    SKIP_WITHOUT_SERVER();
    enum { TIMES = 200 };
    axstm_store *s = open_ok(server.address);
    ck_assert_int_eq(bump_many(s, "n", 1), AXSTM_OK); /* a connection in the pool */
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(bump_many(s, "n", TIMES) == AXSTM_OK ? 0 : 1);
    int rc = bump_many(s, "n", TIMES);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(rc == AXSTM_OK, "parent: %s", axstm_strerror(rc));
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed (%d)", status);
    axstm_value *v = usevar_ok(s, "n");
    int64_t n;
    ck_assert_int_eq(axstm_value_get_i64(v, &n), AXSTM_OK);
    ck_assert_int_eq(n, 1 + 2 * TIMES);
    axstm_value_free(v);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Faults                                                             */
/* ------------------------------------------------------------------ */

START_TEST(no_server_is_eio)
{
    axstm_store *s = (axstm_store *)&s;
    int rc = axstm_store_open("redis+unix:///nonexistent-dir/redis.sock", &s);
    ck_assert_int_eq(rc, AXSTM_EIO);
    ck_assert_ptr_eq(s, (axstm_store *)&s); /* untouched */
}
END_TEST

START_TEST(killed_server_is_eio_and_the_process_lives)
{
    SKIP_WITHOUT_SERVER();
    /* SIGPIPE at its default action: a write to the dead server must not
     * kill us. */
    struct sigaction dfl, old;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, &old);
    axstm_store *s = open_ok(server.address);
    put_str(s, "k", "v");
    axstm_value *v = usevar_ok(s, "k");
    tu_redis_kill(&server);
    ck_assert_int_eq(axstm_value_set_str(v, "w"), AXSTM_OK);
    int rc = axstm_value_commit(v);
    ck_assert_msg(rc == AXSTM_EIO || rc == AXSTM_EINDOUBT, "commit: %s", axstm_strerror(rc));
    ck_assert_uint_eq(axstm_value_version(v), 1); /* the handle is unchanged */
    ck_assert_int_eq(axstm_value_refresh(v), AXSTM_EIO);
    axstm_value *w = NULL;
    ck_assert_int_eq(axstm_usevar(s, "other", &w), AXSTM_EIO);
    ck_assert_ptr_null(w);
    axstm_stats st;
    ck_assert_int_eq(axstm_store_stats(s, &st), AXSTM_EIO);
    axstm_value_free(v);
    axstm_store_free(s);
    sigaction(SIGPIPE, &old, NULL);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(stopped_server_is_eio_after_the_timeout)
{
    if (!tu_redis_start_with(&server, NULL, 100))
        return;
    axstm_store *s = open_ok(server.address);
    put_str(s, "k", "v");
    kill(server.pid, SIGSTOP);
    axstm_value *v = NULL;
    int rc = axstm_usevar(s, "k", &v);
    kill(server.pid, SIGCONT);
    ck_assert_msg(rc == AXSTM_EIO, "usevar against a stopped server: %s", axstm_strerror(rc));
    /* The store goes on once the server answers again. */
    assert_str_value(s, "k", "v", 1);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(foreign_data_under_the_prefix_is_eio_and_nothing_is_written)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_ok(server.address);
    put_str(s, "mine", "v");
    /* Someone else's string where a key's hash should be: axstm:k:theirs. */
    static const char *const plant[] = {"SET", "axstm:k:theirs", "x", NULL};
    if (!tu_redis_cli(&server, plant)) {
        tu_redis_stop(&server);
        return; /* no redis-cli: nothing to plant the data with */
    }
    static const char *const both[] = {"mine", "theirs"};
    axstm_collection *c = NULL;
    ck_assert_int_eq(axstm_using(s, both, 2, &c), AXSTM_EIO);
    ck_assert_ptr_null(c);
    axstm_value *v = NULL;
    ck_assert_int_eq(axstm_usevar(s, "theirs", &v), AXSTM_EIO);
    assert_str_value(s, "mine", "v", 1);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* The store's own hash (counters, commit records, holds) with someone
 * else's string in it: every commit is AXSTM_EIO and writes nothing,
 * handles and transactions alike; reads go on. */
START_TEST(foreign_data_in_the_stats_hash_is_eio_and_nothing_is_written)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_ok(server.address);
    put_str(s, "mine", "v");
    ck_assert_int_eq(axstm_atomically(s, add_one, "count"), AXSTM_OK);
    static const char *const plant[] = {"SET", "axstm:stats", "x", NULL};
    if (!tu_redis_cli(&server, plant)) {
        tu_redis_stop(&server);
        return; /* no redis-cli: nothing to plant the data with */
    }
    axstm_value *v = usevar_ok(s, "mine");
    ck_assert_int_eq(axstm_value_set_str(v, "w"), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(v), AXSTM_EIO);
    ck_assert_int_eq(axstm_atomically(s, add_one, "count"), AXSTM_EIO);
    ck_assert_int_eq(axstm_atomically(s, add_one, "new"), AXSTM_EIO);
    axstm_stats st;
    ck_assert_int_eq(axstm_store_stats(s, &st), AXSTM_EIO);
    assert_str_value(s, "mine", "v", 1);
    assert_i64_value(s, "count", 1, 1);
    axstm_collection *c = NULL;
    static const char *const new_key[] = {"new"};
    ck_assert_int_eq(axstm_using(s, new_key, 1, &c), AXSTM_OK); /* creating needs no stats */
    axstm_collection_free(c);
    ck_assert_int_eq(axstm_value_refresh(v), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(v), 1);
    axstm_value_free(v);
    /* Taken away, the store works again. */
    static const char *const unplant[] = {"DEL", "axstm:stats", NULL};
    ck_assert(tu_redis_cli(&server, unplant));
    put_str(s, "mine", "w");
    assert_str_value(s, "mine", "w", 2);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

static void assert_version(axstm_store *s, const char *key, uint64_t version)
{
    axstm_value *v = usevar_ok(s, key);
    ck_assert_uint_eq(axstm_value_version(v), version);
    axstm_value_free(v);
}

/* Versions are exact decimal numbers on the server: past 2^53 (where a
 * double, and so a Lua number, can no longer count by one) and across a
 * carry, whether the client sends the next version (a handle's commit)
 * or the server works it out (a transaction's). */
START_TEST(versions_stay_exact_past_2_to_the_53)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_ok(server.address);
    static const char *const plant_odd[] = {"HSET", "axstm:k:odd", "v", "9007199254740993",
                                            "i",    "1001",        NULL};
    static const char *const plant_nines[] = {"HSET", "axstm:k:nines", "v", "9999999999999999",
                                              "i",    "1002",          NULL};
    static const char *const plant_carry[] = {"HSET", "axstm:k:carry", "v", "1999999999999999999",
                                              "i",    "1003",          NULL};
    static const char *const add_names[] = {"SADD", "axstm:keys", "odd", "nines", "carry", NULL};
    if (!tu_redis_cli(&server, plant_odd)) {
        tu_redis_stop(&server);
        return; /* no redis-cli: nothing to plant the data with */
    }
    ck_assert(tu_redis_cli(&server, plant_nines));
    ck_assert(tu_redis_cli(&server, plant_carry));
    ck_assert(tu_redis_cli(&server, add_names));
    assert_version(s, "odd", UINT64_C(9007199254740993));

    /* A handle's commit. */
    put_str(s, "odd", "a");
    put_str(s, "nines", "b");
    assert_str_value(s, "odd", "a", UINT64_C(9007199254740994));
    assert_str_value(s, "nines", "b", UINT64_C(10000000000000000));

    /* A transaction's: the server adds one. */
    ck_assert_int_eq(axstm_atomically(s, add_one, "carry"), AXSTM_OK);
    assert_version(s, "carry", UINT64_C(2000000000000000000));
    ck_assert_int_eq(axstm_atomically(s, add_one, "carry"), AXSTM_OK);
    assert_version(s, "carry", UINT64_C(2000000000000000001));
    static const char *const plant_more[] = {"HSET", "axstm:k:nines", "v", "99999999999999999",
                                             NULL};
    ck_assert(tu_redis_cli(&server, plant_more));
    axstm_value *v = usevar_ok(s, "nines");
    ck_assert_int_eq(axstm_value_set_i64(v, 5), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(v), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(v), UINT64_C(100000000000000000));
    axstm_value_free(v);
    ck_assert_int_eq(axstm_atomically(s, add_one, "nines"), AXSTM_OK);
    assert_version(s, "nines", UINT64_C(100000000000000001));
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(wrong_password_is_eio_and_right_one_works)
{
    static const char *const secret[] = {"--requirepass", "open sesame", NULL};
    if (!tu_redis_start_with(&server, secret, 5000))
        return;
    char good[256], wrong[256];
    snprintf(good, sizeof good, "%s&password=open%%20sesame", server.address);
    snprintf(wrong, sizeof wrong, "%s&password=open%%20sesam", server.address);
    axstm_store *s = NULL;
    ck_assert_int_eq(axstm_store_open(server.address, &s), AXSTM_EIO); /* none given */
    ck_assert_ptr_null(s);
    ck_assert_int_eq(axstm_store_open(wrong, &s), AXSTM_EIO);
    ck_assert_ptr_null(s);
    s = open_ok(good);
    put_str(s, "k", "v");
    assert_str_value(s, "k", "v", 1);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

START_TEST(forgotten_scripts_are_loaded_again)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_ok(server.address);
    put_str(s, "k", "v");
    static const char *const flush[] = {"SCRIPT", "FLUSH", NULL};
    if (tu_redis_cli(&server, flush)) {
        put_str(s, "k", "w");
        assert_str_value(s, "k", "w", 2);
    }
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

/* A commit whose answer was lost after the server ran it is looked up in
 * the commit record: AXSTM_OK, with the versions the commit made. */
START_TEST(a_lost_answer_of_a_commit_that_ran_is_looked_up)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_ok(server.address);
    put_str(s, "k", "one");
    axstm_value *v = usevar_ok(s, "k");
    ck_assert_int_eq(axstm_value_set_str(v, "two"), AXSTM_OK);
    atomic_store(&axstm__redis_lose_answer, AXSTM__REDIS_ANSWER_LOST);
    ck_assert_int_eq(axstm_value_commit(v), AXSTM_OK);
    ck_assert_int_eq(atomic_load(&axstm__redis_lose_answer), AXSTM__REDIS_ANSWER_KEPT);
    ck_assert_uint_eq(axstm_value_version(v), 2);
    assert_str_value(s, "k", "two", 2);
    /* The handle knows its version: it commits again without a conflict. */
    ck_assert_int_eq(axstm_value_set_str(v, "three"), AXSTM_OK);
    ck_assert_int_eq(axstm_value_commit(v), AXSTM_OK);
    assert_str_value(s, "k", "three", 3);
    axstm_value_free(v);
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

static int add_one(axstm_txn *tx, void *arg)
{
    int64_t x = 0;
    int rc = axstm_txn_get_i64(tx, arg, &x);
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    return axstm_txn_set_i64(tx, arg, x + 1);
}

/* A commit that was sent but never ran is fenced off (it can never run
 * later) and sent again: it runs exactly once.  Also for transactions,
 * whose lost answers are looked up the same way. */
START_TEST(a_commit_sent_but_never_run_is_fenced_and_sent_again)
{
    SKIP_WITHOUT_SERVER();
    axstm_store *s = open_ok(server.address);
    put_str(s, "k", "one");
    axstm_value *v = usevar_ok(s, "k");
    ck_assert_int_eq(axstm_value_set_str(v, "two"), AXSTM_OK);
    atomic_store(&axstm__redis_lose_answer, AXSTM__REDIS_NEVER_RUN);
    ck_assert_int_eq(axstm_value_commit(v), AXSTM_OK);
    assert_str_value(s, "k", "two", 2);
    axstm_value_free(v);
    /* Transactions: one lost after running, one never run; each counted
     * once. */
    atomic_store(&axstm__redis_lose_answer, AXSTM__REDIS_ANSWER_LOST);
    ck_assert_int_eq(axstm_atomically(s, add_one, "n"), AXSTM_OK);
    atomic_store(&axstm__redis_lose_answer, AXSTM__REDIS_NEVER_RUN);
    ck_assert_int_eq(axstm_atomically(s, add_one, "n"), AXSTM_OK);
    assert_i64_value(s, "n", 2, 2);
    axstm_stats st;
    ck_assert_int_eq(axstm_store_stats(s, &st), AXSTM_OK);
    ck_assert_uint_eq(st.commits, 4); /* put, the handle's, two transactions */
    axstm_store_free(s);
    tu_redis_stop(&server);
}
END_TEST

static Suite *redis_suite(void)
{
    Suite *s = suite_create("redis");
    TCase *tc = tcase_create("Axon rules");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, usevar_creates_a_key_with_no_value);
    tcase_add_test(tc, commit_is_seen_by_another_client);
    tcase_add_test(tc, stale_commit_is_concurrent_update_and_writes_nothing);
    tcase_add_test(tc, collection_commits_all_or_nothing);
    tcase_add_test(tc, values_of_any_bytes_and_size_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("Deleting");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, delete_removes_the_key_and_no_stale_handle_commits_over_it);
    suite_add_tcase(s, tc);

    tc = tcase_create("Store");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, foreach_visits_every_key_once);
    tcase_add_test(tc, prefixes_keep_stores_apart);
    tcase_add_test(tc, versions_stay_exact_past_2_to_the_53);
    suite_add_tcase(s, tc);

    tc = tcase_create("Several processes");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, transfers_from_several_processes_conserve_the_total);
    tcase_add_test(tc, a_store_used_on_both_sides_of_a_fork);
    suite_add_tcase(s, tc);

    tc = tcase_create("Faults");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, no_server_is_eio);
    tcase_add_test(tc, killed_server_is_eio_and_the_process_lives);
    tcase_add_test(tc, stopped_server_is_eio_after_the_timeout);
    tcase_add_test(tc, server_killed_and_restarted_mid_run_loses_no_money);
    tcase_add_test(tc, foreign_data_under_the_prefix_is_eio_and_nothing_is_written);
    tcase_add_test(tc, foreign_data_in_the_stats_hash_is_eio_and_nothing_is_written);
    tcase_add_test(tc, wrong_password_is_eio_and_right_one_works);
    tcase_add_test(tc, forgotten_scripts_are_loaded_again);
    tcase_add_test(tc, a_lost_answer_of_a_commit_that_ran_is_looked_up);
    tcase_add_test(tc, a_commit_sent_but_never_run_is_fenced_and_sent_again);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(redis_suite());
}
