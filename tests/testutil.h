/* SPDX-License-Identifier: MIT */
/*
 * testutil.h -- helpers shared by the Check programs in tests/.
 *
 * Header-only: every helper is `static inline`, so a test file that does not
 * use one gets no unused-function warning.  Helpers that assert with Check
 * (those whose name ends in _ok, tu_start, tu_put_i64, tu_assert_* ...)
 * belong to the thread running the test; worker threads use the plain
 * retry macros, the clock and tu_rand, and record what they saw.
 * txnutil.h adds the harness of the transaction tests.
 */
#ifndef AXSTM_TESTUTIL_H
#define AXSTM_TESTUTIL_H

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "axstm.h"

/*
 * AXSTM_BUSY_RETRY is a valid answer of any call that may contend: it means
 * "nothing happened, call again".  Repeat `call` until it says something
 * else and leave that in `rc`.  Between attempts yield, and after a run of
 * them sleep a little: the lock holder may be a thread that is not running
 * (two cores, or valgrind running one thread at a time).
 */
#define TU_RETRY(rc, call)                          \
    do {                                            \
        unsigned tu_attempt_ = 0;                   \
        while (((rc) = (call)) == AXSTM_BUSY_RETRY) \
            tu_backoff(++tu_attempt_);              \
    } while (0)

/* As TU_RETRY, and add the number of BUSY_RETRY answers to `*counter`. */
#define TU_RETRY_COUNT(rc, call, counter)             \
    do {                                              \
        unsigned tu_attempt_ = 0;                     \
        while (((rc) = (call)) == AXSTM_BUSY_RETRY) { \
            ++*(counter);                             \
            tu_backoff(++tu_attempt_);                \
        }                                             \
    } while (0)

static inline void tu_backoff(unsigned attempt)
{
    if (attempt < 16) {
        sched_yield();
    } else {
        struct timespec ts = {0, 1000};
        nanosleep(&ts, NULL);
    }
}

/* Inside a transaction body: pass any code but AXSTM_OK straight back.
 * (Bodies never assert: an assert would jump out of axstm_atomically.) */
#define TU_TRY(call)            \
    do {                        \
        int tu_rc_ = (call);    \
        if (tu_rc_ != AXSTM_OK) \
            return tu_rc_;      \
    } while (0)

/* ------------------------------------------------------------------ */
/* Threads                                                            */
/* ------------------------------------------------------------------ */

static inline void tu_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    ck_assert_int_eq(pthread_create(t, NULL, fn, arg), 0);
}

static inline void tu_join(pthread_t t)
{
    ck_assert_int_eq(pthread_join(t, NULL), 0);
}

static inline void tu_sem_wait_ok(sem_t *sem)
{
    while (sem_wait(sem) != 0 && errno == EINTR)
        ;
}

/* Valgrind runs one thread at a time, some 50 times slower: long loops
 * are shortened under it (seen in LD_PRELOAD). */
static inline int tu_under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p != NULL && (strstr(p, "vgpreload") != NULL || strstr(p, "valgrind") != NULL);
}

/* ------------------------------------------------------------------ */
/* Time                                                               */
/* ------------------------------------------------------------------ */

static inline double tu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void tu_sleep_ns(long ns)
{
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static inline void tu_sleep_s(double seconds)
{
    tu_sleep_ns((long)(seconds * 1e9));
}

/* The number in the environment variable `name` if it is one above 0 and
 * below `limit`, else `dflt`. */
static inline double tu_env_number(const char *name, double dflt, double limit)
{
    const char *env = getenv(name);
    if (env != NULL && *env != '\0') {
        char *end;
        double d = strtod(env, &end);
        if (end != env && d > 0.0 && d < limit)
            return d;
    }
    return dflt;
}

/* Seconds per stress configuration: $AXSTM_STRESS_SECONDS, default 1. */
static inline double tu_stress_seconds(void)
{
    return tu_env_number("AXSTM_STRESS_SECONDS", 1.0, 86400.0);
}

/*
 * The end of a timed run.  Workers watch the clock themselves rather than
 * wait for the test's thread to tell them: under valgrind's serialising
 * scheduler a thread waking from sleep may not run again for a long time
 * while others spin.  tu_clock_start() before starting the workers; each
 * worker calls tu_time_up() once per round of work.
 *
 * A run that must show progress (every worker made some transfers, a
 * reader got a snapshot) says so with quotas, never by hoping the time is
 * long enough: on a loaded machine a thread may not run at all for a
 * second.  tu_clock_owe(c, n) before starting the workers; each quota, once
 * met, calls tu_clock_paid() (once).  The run then ends when its time is up
 * and every quota is paid.  Only a run still owing TU_HANG_GUARD_S seconds
 * after its time ends anyway, as a guard against a hang, not as a timing:
 * the test then fails on what was owed.
 */
#define TU_HANG_GUARD_S 60.0

typedef struct tu_clock {
    double deadline; /* the run's time */
    double guard;    /* deadline + TU_HANG_GUARD_S */
    atomic_int stop;
    atomic_int owed; /* quotas not met yet */
} tu_clock;

static inline void tu_clock_start(tu_clock *c, double seconds)
{
    c->deadline = tu_now() + seconds;
    c->guard = c->deadline + TU_HANG_GUARD_S;
    atomic_init(&c->stop, 0);
    atomic_init(&c->owed, 0);
}

/* n more quotas must be met before the run ends (before the workers start). */
static inline void tu_clock_owe(tu_clock *c, int n)
{
    atomic_fetch_add(&c->owed, n);
}

/* One quota is met: call once per quota. */
static inline void tu_clock_paid(tu_clock *c)
{
    atomic_fetch_sub(&c->owed, 1);
}

/* Non-zero once the run is over: its time is up and nothing is owed, or
 * the hang guard ran out.  `rounds` is the caller's own counter: the clock
 * is read every 16th call. */
static inline int tu_time_up(tu_clock *c, unsigned long *rounds)
{
    if (atomic_load_explicit(&c->stop, memory_order_relaxed))
        return 1;
    if ((++*rounds & 15) == 0) {
        double now = tu_now();
        if ((now >= c->deadline && atomic_load(&c->owed) <= 0) || now >= c->guard) {
            atomic_store(&c->stop, 1);
            return 1;
        }
    }
    return 0;
}

/* Non-zero once any worker has seen the run end. */
static inline int tu_stopped(tu_clock *c)
{
    return atomic_load_explicit(&c->stop, memory_order_relaxed);
}

/* A small per-thread PRNG (xorshift64*), so workers share no state. */
static inline uint64_t tu_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(2685821657736338717);
}

/* ------------------------------------------------------------------ */
/* Calls that must succeed (main test thread only)                    */
/* ------------------------------------------------------------------ */

/*
 * The store factory: an in-process store, or, when AXSTM_TEST_STORE names
 * a store address (tests/on_redis.sh sets one), a store opened there under
 * a prefix no other store of any test ever had, so that tests sharing one
 * server never see each other's keys.  Suites whose store semantics hold
 * on both kinds of store get their stores here.
 */
static inline axstm_store *tu_store_ok(void)
{
    const char *address = getenv("AXSTM_TEST_STORE");
    if (address == NULL || *address == '\0') {
        axstm_store *s = axstm_store_new();
        ck_assert_ptr_nonnull(s);
        return s;
    }
    static unsigned opened;
    char uri[1024];
    /* A long timeout: the largest values take seconds on a loaded machine. */
    int n = snprintf(uri, sizeof uri, "%s%cprefix=t%ld.%u:&timeout_ms=60000", address,
                     strchr(address, '?') != NULL ? '&' : '?', (long)getpid(), opened++);
    ck_assert(n > 0 && (size_t)n < sizeof uri);
    axstm_store *s = NULL;
    int rc = axstm_store_open(uri, &s);
    ck_assert_msg(rc == AXSTM_OK, "open %s: %s", uri, axstm_strerror(rc));
    return s;
}

/* Whether the suite runs on a remote store (tu_store_ok). */
static inline bool tu_store_is_remote(void)
{
    const char *address = getenv("AXSTM_TEST_STORE");
    return address != NULL && *address != '\0';
}

static inline axstm_value *tu_usevar_ok(axstm_store *s, const char *key)
{
    axstm_value *v = NULL;
    int rc;
    TU_RETRY(rc, axstm_usevar(s, key, &v));
    ck_assert_msg(rc == AXSTM_OK, "usevar(%s): %s", key, axstm_strerror(rc));
    ck_assert_ptr_nonnull(v);
    return v;
}

static inline axstm_collection *tu_using_ok(axstm_store *s, const char *const keys[], size_t nkeys)
{
    axstm_collection *c = NULL;
    int rc;
    TU_RETRY(rc, axstm_using(s, keys, nkeys, &c));
    ck_assert_msg(rc == AXSTM_OK, "using: %s", axstm_strerror(rc));
    ck_assert_ptr_nonnull(c);
    return c;
}

/* Commit, retrying BUSY_RETRY; returns OK or CONCURRENT_UPDATE (asserted). */
static inline int tu_commit(axstm_value *v)
{
    int rc;
    TU_RETRY(rc, axstm_value_commit(v));
    ck_assert_msg(rc == AXSTM_OK || rc == AXSTM_CONCURRENT_UPDATE, "value_commit: %s",
                  axstm_strerror(rc));
    return rc;
}

static inline int tu_ccommit(axstm_collection *c)
{
    int rc;
    TU_RETRY(rc, axstm_collection_commit(c));
    ck_assert_msg(rc == AXSTM_OK || rc == AXSTM_CONCURRENT_UPDATE, "collection_commit: %s",
                  axstm_strerror(rc));
    return rc;
}

static inline void tu_refresh_ok(axstm_value *v)
{
    int rc;
    TU_RETRY(rc, axstm_value_refresh(v));
    ck_assert_msg(rc == AXSTM_OK, "value_refresh: %s", axstm_strerror(rc));
}

static inline void tu_crefresh_ok(axstm_collection *c)
{
    int rc;
    TU_RETRY(rc, axstm_collection_refresh(c));
    ck_assert_msg(rc == AXSTM_OK, "collection_refresh: %s", axstm_strerror(rc));
}

static inline axstm_stats tu_stats_ok(axstm_store *s)
{
    axstm_stats st;
    int rc;
    memset(&st, 0, sizeof st);
    TU_RETRY(rc, axstm_store_stats(s, &st));
    ck_assert_msg(rc == AXSTM_OK, "store_stats: %s", axstm_strerror(rc));
    return st;
}

static inline int64_t tu_get_i64_ok(const axstm_value *v)
{
    int64_t x = 0;
    int rc = axstm_value_get_i64(v, &x);
    ck_assert_msg(rc == AXSTM_OK, "get_i64(%s): %s", axstm_value_key(v), axstm_strerror(rc));
    return x;
}

static inline void tu_set_i64_ok(axstm_value *v, int64_t x)
{
    ck_assert_int_eq(axstm_value_set_i64(v, x), AXSTM_OK);
}

static inline void tu_set_str_ok(axstm_value *v, const char *str)
{
    ck_assert_int_eq(axstm_value_set_str(v, str), AXSTM_OK);
}

/* Commits key = x through a fresh value handle (nobody else writing). */
static inline void tu_put_i64(axstm_store *s, const char *key, int64_t x)
{
    axstm_value *v = tu_usevar_ok(s, key);
    tu_set_i64_ok(v, x);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
}

static inline void tu_put_bytes(axstm_store *s, const char *key, const void *data, size_t len)
{
    axstm_value *v = tu_usevar_ok(s, key);
    ck_assert_int_eq(axstm_value_set(v, data, len), AXSTM_OK);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
}

/* The handle holds exactly the string `want` (with its NUL). */
static inline void tu_assert_str(const axstm_value *v, const char *want)
{
    const char *got = NULL;
    int rc = axstm_value_get_str(v, &got);
    ck_assert_msg(rc == AXSTM_OK, "get_str(%s): %s", axstm_value_key(v), axstm_strerror(rc));
    ck_assert_str_eq(got, want);
}

/* The handle holds no value at all (as opposed to an empty one). */
static inline void tu_assert_no_value(const axstm_value *v)
{
    size_t len = 12345;
    ck_assert_ptr_null(axstm_value_data(v, &len));
    ck_assert_uint_eq(len, 0);
}

/* ------------------------------------------------------------------ */
/* Looking at the store without creating keys                         */
/* ------------------------------------------------------------------ */

typedef struct tu_entry {
    char *key;
    uint64_t version;
    int has_value; /* 0: data was NULL ("no value yet") */
    size_t len;
    unsigned char *data; /* a copy; NULL when !has_value or len == 0 */
} tu_entry;

typedef struct tu_snapshot {
    tu_entry *e;
    size_t n, cap;
} tu_snapshot;

static inline void *tu_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        ck_abort_msg("test ran out of memory");
    return p;
}

static inline char *tu_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = tu_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static inline int tu_snapshot_visit_(const char *key, uint64_t version, const void *data,
                                     size_t len, void *arg)
{
    tu_snapshot *snap = arg;
    tu_entry *e;
    if (snap->n == snap->cap) {
        size_t cap = snap->cap ? snap->cap * 2 : 64;
        tu_entry *ne = realloc(snap->e, cap * sizeof *ne);
        if (ne == NULL)
            return 1000; /* reported by tu_snapshot_take */
        snap->e = ne;
        snap->cap = cap;
    }
    e = &snap->e[snap->n++];
    e->key = tu_xstrdup(key);
    e->version = version;
    e->has_value = data != NULL;
    e->len = len;
    e->data = NULL;
    if (data != NULL && len > 0) {
        e->data = tu_xmalloc(len);
        memcpy(e->data, data, len);
    }
    return 0;
}

static inline int tu_entry_cmp_(const void *a, const void *b)
{
    return strcmp(((const tu_entry *)a)->key, ((const tu_entry *)b)->key);
}

/* The whole committed state of the store, sorted by key. */
static inline void tu_snapshot_take(axstm_store *s, tu_snapshot *snap)
{
    int rc;
    memset(snap, 0, sizeof *snap);
    rc = axstm_store_foreach(s, tu_snapshot_visit_, snap);
    ck_assert_msg(rc == AXSTM_OK, "store_foreach: %d", rc);
    if (snap->n > 1)
        qsort(snap->e, snap->n, sizeof *snap->e, tu_entry_cmp_);
}

static inline void tu_snapshot_free(tu_snapshot *snap)
{
    size_t i;
    for (i = 0; i < snap->n; i++) {
        free(snap->e[i].key);
        free(snap->e[i].data);
    }
    free(snap->e);
    memset(snap, 0, sizeof *snap);
}

/* Two snapshots show the same keys, versions and values.  (Compared
 * without an assert per entry: each Check assert costs a write.) */
static inline void tu_snapshot_assert_equal(const tu_snapshot *a, const tu_snapshot *b)
{
    size_t i;
    ck_assert_msg(a->n == b->n, "%zu keys, then %zu", a->n, b->n);
    for (i = 0; i < a->n; i++) {
        const tu_entry *x = &a->e[i], *y = &b->e[i];
        if (strcmp(x->key, y->key) != 0)
            ck_abort_msg("key %s, then %s", x->key, y->key);
        if (x->version != y->version)
            ck_abort_msg("%s: version %llu, then %llu", x->key, (unsigned long long)x->version,
                         (unsigned long long)y->version);
        if (x->has_value != y->has_value)
            ck_abort_msg("%s: value presence %d, then %d", x->key, x->has_value, y->has_value);
        if (x->len != y->len)
            ck_abort_msg("%s: length %zu, then %zu", x->key, x->len, y->len);
        if (x->len > 0 && memcmp(x->data, y->data, x->len) != 0)
            ck_abort_msg("%s: bytes differ", x->key);
    }
}

/* The entry for `key` in a snapshot, or NULL. */
static inline const tu_entry *tu_snapshot_find(const tu_snapshot *snap, const char *key)
{
    tu_entry probe;
    if (snap->n == 0)
        return NULL; /* snap->e is NULL: bsearch may not be given it */
    probe.key = (char *)key;
    return bsearch(&probe, snap->e, snap->n, sizeof *snap->e, tu_entry_cmp_);
}

/* The committed state of one key: 1 with *out filled (out->data is the
 * caller's to free, out->key is NULL), or 0 when the key is not in the
 * store (*out zeroed). */
static inline int tu_lookup(axstm_store *s, const char *key, tu_entry *out)
{
    tu_snapshot snap;
    const tu_entry *e;
    memset(out, 0, sizeof *out);
    tu_snapshot_take(s, &snap);
    e = tu_snapshot_find(&snap, key);
    if (e != NULL) {
        *out = *e;
        out->key = NULL;
        out->data = NULL;
        if (e->len > 0) {
            out->data = tu_xmalloc(e->len);
            memcpy(out->data, e->data, e->len);
        }
    }
    tu_snapshot_free(&snap);
    return e != NULL;
}

static inline void tu_assert_absent(axstm_store *s, const char *key)
{
    tu_entry e;
    if (tu_lookup(s, key, &e)) {
        free(e.data);
        ck_abort_msg("%s is in the store (version %llu)", key, (unsigned long long)e.version);
    }
}

/* key is in the store at `version`, holding the int64 x, or no value at
 * all when !has_value. */
static inline void tu_assert_committed(axstm_store *s, const char *key, uint64_t version,
                                       int has_value, int64_t x)
{
    tu_entry e;
    int64_t got = 0;
    int found = tu_lookup(s, key, &e);
    ck_assert_msg(found, "%s not in the store", key);
    if (e.len == 8)
        memcpy(&got, e.data, 8);
    free(e.data);
    ck_assert_msg(e.version == version, "%s at version %llu, not %llu", key,
                  (unsigned long long)e.version, (unsigned long long)version);
    ck_assert_msg(e.has_value == has_value, "%s: value presence %d, not %d", key, e.has_value,
                  has_value);
    if (has_value) {
        ck_assert_msg(e.len == 8, "%s holds %zu bytes, not 8", key, e.len);
        ck_assert_msg(got == x, "%s holds %lld, not %lld", key, (long long)got, (long long)x);
    }
}

/* Number of keys foreach visits. */
static inline int tu_count_visit_(const char *key, uint64_t version, const void *data, size_t len,
                                  void *arg)
{
    (void)key;
    (void)version;
    (void)data;
    (void)len;
    ++*(uint64_t *)arg;
    return 0;
}

static inline uint64_t tu_foreach_count(axstm_store *s)
{
    uint64_t n = 0;
    int rc = axstm_store_foreach(s, tu_count_visit_, &n);
    ck_assert_int_eq(rc, AXSTM_OK);
    return n;
}

/* ------------------------------------------------------------------ */
/* Calls made with a cancellation request pending                     */
/* ------------------------------------------------------------------ */

struct tu_doomed_ {
    pthread_barrier_t gate;
    void (*fn)(void *);
    void *arg;
    atomic_int returned;
};

static inline void *tu_doomed_main_(void *p)
{
    struct tu_doomed_ *d = p;
    /* Between these two the test's thread cancels us.  A barrier is not a
     * cancellation point, and cancellation stays enabled and deferred (the
     * defaults), so the request is pending when fn begins. */
    pthread_barrier_wait(&d->gate);
    pthread_barrier_wait(&d->gate);
    d->fn(d->arg);
    atomic_store(&d->returned, 1);
    pthread_testcancel();
    return NULL;
}

/*
 * Runs fn(arg) on a new thread that has a cancellation request pending
 * when fn begins, and that calls pthread_testcancel() right after fn.
 * Returns 1 when fn returned, 0 when the thread was cancelled inside it.
 * Asserts that the thread ended cancelled: a call that returned must have
 * left the request pending, and cancellation enabled.
 */
static inline int tu_call_with_cancel_pending(void (*fn)(void *), void *arg)
{
    struct tu_doomed_ d;
    pthread_t t;
    void *res = NULL;
    d.fn = fn;
    d.arg = arg;
    atomic_init(&d.returned, 0);
    ck_assert_int_eq(pthread_barrier_init(&d.gate, NULL, 2), 0);
    ck_assert_int_eq(pthread_create(&t, NULL, tu_doomed_main_, &d), 0);
    pthread_barrier_wait(&d.gate);
    ck_assert_int_eq(pthread_cancel(t), 0);
    pthread_barrier_wait(&d.gate);
    ck_assert_int_eq(pthread_join(t, &res), 0);
    pthread_barrier_destroy(&d.gate);
    ck_assert_msg(res == PTHREAD_CANCELED, "the cancellation request was lost");
    return atomic_load(&d.returned);
}

/* ------------------------------------------------------------------ */
/* Running a suite                                                    */
/* ------------------------------------------------------------------ */

static inline int tu_run(Suite *suite)
{
    SRunner *sr = srunner_create(suite);
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
