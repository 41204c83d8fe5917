/*
 * workload.c -- threads mixing every way of changing a store, recorded for
 * the history checker (history.c).
 *
 * Each worker repeatedly picks one of:
 *   using       axstm_using of 2-3 keys, every key set to a fresh value
 *               (an Axon commit writes every key of the handle anyway),
 *               committed; on AXSTM_CONCURRENT_UPDATE the attempt is
 *               recorded as aborted, the collection refreshed and the work
 *               redone.  After a success the same handle is sometimes
 *               changed and committed again without a new checkout.
 *   usevar      the same with one key and a value handle.
 *   snapshot    axstm_using of 2-4 keys, only read (a consistent snapshot).
 *   atomically  read-modify-write of 1-4 keys in axstm_atomically; every run
 *               of the body is an attempt of its own.
 *   atomic-ro   axstm_atomically reading 2-8 keys.
 * Every value written is hist_value_encode(txid, key, what it replaced), so
 * every read names the write it saw.  The run is cut into windows: a window
 * ends when a thread's log is full or time is up; the threads are joined,
 * the window checked, and the store's final state compared with the last
 * write of each key before the next window starts.
 */
#define _GNU_SOURCE

#include "history.h"

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Most reads and writes one transaction records (atomic-ro: 8 reads). */
#define MAX_OPS 8
/* Ops per transaction the logs are sized for (3.9 on average). */
#define OPS_PER_TXN 5
#define DEFAULT_TXNS_PER_THREAD ((size_t)1 << 16)
/* A body's own code (positive) for "the log is full": rolls back. */
#define BODY_LOG_FULL 1

struct shared {
    axstm_store *store;
    hist_recorder *rec;
    uint32_t nkeys;
    const char **keys;
    int64_t deadline;
    atomic_int window_over; /* written once per window: not on the hot path */
    atomic_int failed;
    char error[256]; /* by the thread that set failed from 0 to 1 */
};

/* Each on its own cache lines: rng and busy are written all the time. */
struct worker {
    _Alignas(128) struct shared *sh;
    hist_log *log;
    uint64_t rng;
    uint64_t busy;
    pthread_t thread;
};

static uint64_t next_rand(uint64_t *state)
{
    /* xorshift64*: per-thread, no shared state. */
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(2685821657736338717);
}

static unsigned pick(struct worker *w, unsigned n)
{
    return (unsigned)(next_rand(&w->rng) % n);
}

/* n distinct keys out of the store's, into idx[]. */
static void pick_keys(struct worker *w, uint32_t *idx, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        bool dup;
        do {
            idx[i] = pick(w, w->sh->nkeys);
            dup = false;
            for (unsigned j = 0; j < i; j++)
                dup |= idx[j] == idx[i];
        } while (dup);
    }
}

static void fail(struct worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct worker *w, const char *fmt, ...)
{
    int expected = 0;
    if (atomic_compare_exchange_strong(&w->sh->failed, &expected, 1)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->sh->error, sizeof w->sh->error, fmt, ap);
        va_end(ap);
    }
    atomic_store(&w->sh->window_over, 1);
}

static bool over(struct worker *w)
{
    return atomic_load_explicit(&w->sh->window_over, memory_order_relaxed) != 0;
}

static void end_window(struct worker *w)
{
    atomic_store_explicit(&w->sh->window_over, 1, memory_order_relaxed);
}

/* Room for another attempt; if not, the window ends for everyone. */
static bool room(struct worker *w)
{
    if (hist_log_room(w->log, MAX_OPS))
        return true;
    end_window(w);
    return false;
}

/*
 * AXSTM_BUSY_RETRY means "nothing happened, call again".  Yield between
 * calls and sleep after a run of them: with more threads than cores the
 * lock holder may be waiting for this core.
 */
#define CALL_AGAIN_WHILE_BUSY(w, rc, call)                                                \
    do {                                                                                  \
        unsigned busy_round_ = 0;                                                         \
        while (((rc) = (call)) == AXSTM_BUSY_RETRY) {                                     \
            (w)->busy++;                                                                  \
            if (++busy_round_ < 16) {                                                     \
                sched_yield();                                                            \
            } else {                                                                      \
                struct timespec ts_ = {0, 2000};                                          \
                nanosleep(&ts_, NULL);                                                    \
            }                                                                             \
        }                                                                                 \
    } while (0)

/* ------------------------------------------------------------------ */
/* Handles: using and usevar                                          */
/* ------------------------------------------------------------------ */

/* Reads every value of the handle set, records it, and sets a fresh value
 * naming txid.  wid[] gets what each key held. */
static bool read_and_set(struct worker *w, axstm_value *const *v, const uint32_t *idx,
                         unsigned n, uint64_t txid, uint64_t *wid)
{
    for (unsigned i = 0; i < n; i++) {
        size_t len;
        const void *data = axstm_value_data(v[i], &len);
        uint64_t prev;
        wid[i] = hist_value_decode(data, len, idx[i], &prev);
        hist_read(w->log, idx[i], wid[i], prev, axstm_value_version(v[i]));
        unsigned char buf[HIST_VALUE_SIZE];
        hist_value_encode(buf, txid, idx[i], wid[i]);
        int rc = axstm_value_set(v[i], buf, sizeof buf);
        if (rc != AXSTM_OK) {
            fail(w, "value_set: %s", axstm_strerror(rc));
            return false;
        }
    }
    return true;
}

/*
 * The Axon loop on a checked-out handle (a collection c, or one value):
 * change, commit; on a conflict record the attempt as aborted, refresh and
 * redo.  start is when the checkout began.
 */
static void axon_rmw(struct worker *w, enum hist_kind kind, axstm_collection *c,
                     axstm_value *single, const uint32_t *idx, unsigned n, int64_t start)
{
    axstm_value *v[4];
    uint64_t wid[4];
    for (unsigned i = 0; i < n; i++)
        v[i] = c != NULL ? axstm_collection_at(c, i) : single;
    while (room(w)) {
        uint64_t txid = hist_begin(w->log, kind, start);
        if (!read_and_set(w, v, idx, n, txid, wid))
            return;
        int rc;
        if (c != NULL)
            CALL_AGAIN_WHILE_BUSY(w, rc, axstm_collection_commit(c));
        else
            CALL_AGAIN_WHILE_BUSY(w, rc, axstm_value_commit(single));
        int64_t end = hist_now();
        if (rc == AXSTM_OK) {
            for (unsigned i = 0; i < n; i++)
                hist_write(w->log, idx[i], wid[i], axstm_value_version(v[i]));
            hist_end(w->log, HIST_COMMITTED, end);
            /* Sometimes change and commit the same handle again: its state
             * still derives from the checkout that began at start. */
            if (pick(w, 4) != 0 || over(w))
                return;
            continue;
        }
        if (rc != AXSTM_CONCURRENT_UPDATE) {
            fail(w, "%s commit: %s", hist_kind_name(kind), axstm_strerror(rc));
            return;
        }
        /* The writes are kept so that a read of one is named a dirty read. */
        for (unsigned i = 0; i < n; i++)
            hist_write(w->log, idx[i], wid[i], HIST_NO_VERSION);
        hist_end(w->log, HIST_ABORTED, end);
        if (over(w))
            return;
        start = hist_now();
        if (c != NULL)
            CALL_AGAIN_WHILE_BUSY(w, rc, axstm_collection_refresh(c));
        else
            CALL_AGAIN_WHILE_BUSY(w, rc, axstm_value_refresh(single));
        if (rc != AXSTM_OK) {
            fail(w, "%s refresh: %s", hist_kind_name(kind), axstm_strerror(rc));
            return;
        }
    }
}

static void do_using(struct worker *w, bool read_only)
{
    struct shared *sh = w->sh;
    unsigned max = read_only ? 4 : 3;
    unsigned n = 2 + pick(w, max - 1);
    if (n > sh->nkeys)
        n = sh->nkeys;
    uint32_t idx[4];
    const char *names[4];
    pick_keys(w, idx, n);
    for (unsigned i = 0; i < n; i++)
        names[i] = sh->keys[idx[i]];
    axstm_collection *c = NULL;
    int64_t start = hist_now();
    int rc;
    CALL_AGAIN_WHILE_BUSY(w, rc, axstm_using(sh->store, names, n, &c));
    if (rc != AXSTM_OK) {
        fail(w, "using: %s", axstm_strerror(rc));
        return;
    }
    if (!read_only) {
        axon_rmw(w, HIST_USING, c, NULL, idx, n, start);
    } else {
        hist_begin(w->log, HIST_SNAPSHOT, start);
        for (unsigned i = 0; i < n; i++) {
            axstm_value *v = axstm_collection_at(c, i);
            size_t len;
            const void *data = axstm_value_data(v, &len);
            uint64_t prev, wid = hist_value_decode(data, len, idx[i], &prev);
            hist_read(w->log, idx[i], wid, prev, axstm_value_version(v));
        }
        hist_end(w->log, HIST_COMMITTED, hist_now());
    }
    axstm_collection_free(c);
}

static void do_usevar(struct worker *w)
{
    uint32_t idx = pick(w, w->sh->nkeys);
    axstm_value *v = NULL;
    int64_t start = hist_now();
    int rc;
    CALL_AGAIN_WHILE_BUSY(w, rc, axstm_usevar(w->sh->store, w->sh->keys[idx], &v));
    if (rc != AXSTM_OK) {
        fail(w, "usevar: %s", axstm_strerror(rc));
        return;
    }
    axon_rmw(w, HIST_USEVAR, NULL, v, &idx, 1, start);
    axstm_value_free(v);
}

/* ------------------------------------------------------------------ */
/* Transactions                                                       */
/* ------------------------------------------------------------------ */

struct body_arg {
    struct worker *w;
    uint32_t idx[MAX_OPS];
    unsigned n;
    bool read_only;
};

/* One run of the body is one attempt: a run that follows another means the
 * earlier one failed, so it is closed as aborted here. */
static int body(axstm_txn *tx, void *arg)
{
    struct body_arg *a = arg;
    struct worker *w = a->w;
    int64_t now = hist_now();
    hist_end(w->log, HIST_ABORTED, now); /* no-op unless a run is open */
    if (!hist_log_room(w->log, MAX_OPS))
        return BODY_LOG_FULL;
    uint64_t txid = hist_begin(w->log, a->read_only ? HIST_ATOMIC_RO : HIST_ATOMIC, now);
    for (unsigned i = 0; i < a->n; i++) {
        uint32_t k = a->idx[i];
        const char *key = w->sh->keys[k];
        const void *data = NULL;
        size_t len = 0;
        int rc = axstm_txn_get(tx, key, &data, &len);
        if (rc == AXSTM_ENOVALUE) {
            data = NULL;
            len = 0;
        } else if (rc != AXSTM_OK) {
            return rc;
        }
        uint64_t prev, wid = hist_value_decode(data, len, k, &prev);
        hist_read(w->log, k, wid, prev, HIST_NO_VERSION);
        if (a->read_only)
            continue;
        unsigned char buf[HIST_VALUE_SIZE];
        hist_value_encode(buf, txid, k, wid);
        rc = axstm_txn_set(tx, key, buf, sizeof buf);
        if (rc != AXSTM_OK)
            return rc;
        hist_write(w->log, k, wid, HIST_NO_VERSION);
    }
    return 0;
}

static void do_atomically(struct worker *w, bool read_only)
{
    struct body_arg a;
    a.w = w;
    a.read_only = read_only;
    a.n = read_only ? 2 + pick(w, 7) : 1 + pick(w, 4);
    if (a.n > w->sh->nkeys)
        a.n = w->sh->nkeys;
    pick_keys(w, a.idx, a.n);
    int rc = axstm_atomically(w->sh->store, body, &a);
    hist_end(w->log, rc == AXSTM_OK ? HIST_COMMITTED : HIST_ABORTED, hist_now());
    if (rc == BODY_LOG_FULL)
        end_window(w);
    else if (rc != AXSTM_OK)
        fail(w, "atomically: %s", axstm_strerror(rc));
}

/* ------------------------------------------------------------------ */
/* Threads and windows                                                */
/* ------------------------------------------------------------------ */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    while (!over(w) && room(w)) {
        if (hist_now() >= w->sh->deadline) {
            end_window(w);
            break;
        }
        unsigned p = pick(w, 100);
        if (p < 25)
            do_using(w, false);
        else if (p < 45)
            do_usevar(w);
        else if (p < 55)
            do_using(w, true);
        else if (p < 85)
            do_atomically(w, false);
        else
            do_atomically(w, true);
    }
    return NULL;
}

static void run_error(struct hist_run_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void run_error(struct hist_run_result *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->report.text, sizeof res->report.text, fmt, ap);
    va_end(ap);
    res->report.len = strlen(res->report.text);
}

/* Reads each key's committed state back from the store and holds it
 * against the last write the checker placed. */
static int verify_store(struct shared *sh, struct hist_run_result *res)
{
    for (uint32_t k = 0; k < sh->nkeys; k++) {
        axstm_value *v = NULL;
        int rc;
        while ((rc = axstm_usevar(sh->store, sh->keys[k], &v)) == AXSTM_BUSY_RETRY)
            sched_yield();
        if (rc != AXSTM_OK) {
            run_error(res, "usevar after the window: %s", axstm_strerror(rc));
            return -1;
        }
        size_t len;
        const void *data = axstm_value_data(v, &len);
        uint64_t prev, wid = hist_value_decode(data, len, k, &prev);
        hist_verify_final(sh->rec, k, wid, axstm_value_version(v), &res->report);
        axstm_value_free(v);
    }
    return 0;
}

long hist_run(const struct hist_run_config *cfg, struct hist_run_result *res)
{
    memset(res, 0, sizeof *res);
    hist_report_init(&res->report);
    if (cfg->threads == 0 || cfg->threads > HIST_MAX_THREADS || cfg->nkeys == 0 ||
        cfg->nkeys > HIST_MAX_KEYS) {
        run_error(res, "bad configuration");
        return -1;
    }
    size_t cap = cfg->txns_per_thread ? cfg->txns_per_thread : DEFAULT_TXNS_PER_THREAD;
    struct shared sh;
    memset(&sh, 0, sizeof sh);
    sh.nkeys = cfg->nkeys;
    sh.store = axstm_store_new();
    sh.rec = hist_recorder_new(cfg->threads, cfg->nkeys, cap, cap * OPS_PER_TXN + MAX_OPS);
    char(*names)[16] = calloc(cfg->nkeys, sizeof *names);
    sh.keys = calloc(cfg->nkeys, sizeof *sh.keys);
    struct worker *workers = aligned_alloc(_Alignof(struct worker),
                                           cfg->threads * sizeof(struct worker));
    long result = -1;
    if (sh.store == NULL || sh.rec == NULL || names == NULL || sh.keys == NULL ||
        workers == NULL) {
        run_error(res, "out of memory");
        goto out;
    }
    for (uint32_t k = 0; k < cfg->nkeys; k++) {
        snprintf(names[k], sizeof names[k], "h%" PRIu32, k);
        sh.keys[k] = names[k];
    }
    memset(workers, 0, cfg->threads * sizeof *workers);
    atomic_init(&sh.failed, 0);
    uint64_t seed = (uint64_t)hist_now() | 1;
    for (unsigned t = 0; t < cfg->threads; t++) {
        workers[t].sh = &sh;
        workers[t].log = hist_recorder_log(sh.rec, t);
        workers[t].rng = (seed + t * UINT64_C(0x9E3779B97F4A7C15)) | 1;
    }

    /* cfg->seconds is running time: windows stop the clock while they are
     * checked, so a run does as much work however slow the checker is. */
    int64_t budget = (int64_t)(cfg->seconds * 1e9), ran = 0;
    int64_t t_begin = hist_now();
    for (;;) {
        int64_t t_window = hist_now();
        sh.deadline = t_window + (budget - ran);
        atomic_store(&sh.window_over, 0);
        unsigned started = 0;
        for (; started < cfg->threads; started++)
            if (pthread_create(&workers[started].thread, NULL, worker_main,
                               &workers[started]) != 0)
                break;
        if (started < cfg->threads)
            end_window(&workers[0]);
        for (unsigned t = 0; t < started; t++)
            pthread_join(workers[t].thread, NULL);
        if (started < cfg->threads) {
            run_error(res, "pthread_create failed");
            goto out;
        }
        if (atomic_load(&sh.failed)) {
            run_error(res, "%s", sh.error);
            goto out;
        }
        int64_t t_check = hist_now();
        ran += t_check - t_window;
        long v = hist_check(sh.rec, &res->report);
        if (v < 0) {
            run_error(res, "the checker ran out of memory");
            goto out;
        }
        if (verify_store(&sh, res) != 0)
            goto out;
        int64_t t_done = hist_now();
        res->check_seconds += (double)(t_done - t_check) / 1e9;
        res->windows++;
        if (cfg->progress != NULL)
            fprintf(cfg->progress,
                    "  window %" PRIu64 ": %" PRIu64 " transactions so far, %" PRIu64
                    " violations, checked in %.2f s\n",
                    res->windows, res->report.txns, res->report.violations,
                    (double)(t_done - t_check) / 1e9);
        if (res->report.violations != 0 || ran >= budget)
            break;
        hist_recorder_next_window(sh.rec);
    }
    res->seconds = (double)(hist_now() - t_begin) / 1e9;
    for (unsigned t = 0; t < cfg->threads; t++)
        res->busy += workers[t].busy;
    result = (long)res->report.violations;
out:
    free(workers);
    free(sh.keys);
    free(names);
    hist_recorder_free(sh.rec);
    axstm_store_free(sh.store);
    return result;
}
