/* SPDX-License-Identifier: MIT */
/*
 * workload.c -- threads mixing every way of changing a store, recorded for
 * the history checker (history.c).
 *
 * Keys come in pairs: a data key "h<k>" and its companion "t<k>" (the
 * tomb, key index nkeys + k).  Every delete of a data key writes a fresh
 * value to its tomb in the same commit, and the tomb is written only
 * together with its data key, so whenever a data key is absent its tomb
 * names the delete that left it so (no value: never written).  A read that
 * finds a data key absent reads the tomb too, in the same snapshot, and
 * records which delete it saw; a write that brings the key back names that
 * delete as the write it overwrote.
 *
 * Each worker repeatedly picks one of:
 *   using       axstm_using of 2-3 data keys and their tombs, every key set
 *               to a fresh value or (about one data key in four) deleted
 *               with axstm_value_delete, its tomb set (an Axon commit
 *               writes every key of the handle anyway); committed; on
 *               AXSTM_CONCURRENT_UPDATE the attempt is recorded as aborted,
 *               the collection refreshed (which creates deleted keys again)
 *               and the work redone.  After a success the same handle is
 *               sometimes changed and committed again without a new
 *               checkout, which must fail if that commit deleted a key.
 *   usevar      the same with one data key and a value handle, which never
 *               deletes (the tomb could not be written with it); a key
 *               found absent is created again, its tomb read with a
 *               usevar of its own.  That read is valid when the commit
 *               succeeds (the tomb changes only with the key), and only
 *               then: a commit of the key and its tomb may land between
 *               the two checkouts, and the attempt then fails.  So the
 *               read of the absent key is recorded only for an attempt
 *               that committed.
 *   handles     the same as using, on a value handle of its own per data
 *               key and tomb (each a checkout of its own: usevar, refresh)
 *               committed together with axstm_values_commit.  The separate
 *               checkouts are no snapshot, so what an attempt read is
 *               recorded only when its commit succeeds (which checks every
 *               key still holds what was read).
 *   snapshot    axstm_using of 2-4 data keys and their tombs, only read.
 *   atomically  read-modify-write of 1-4 data keys in axstm_atomically: a
 *               fresh value, or (one in four) axstm_txn_delete and the
 *               tomb; a key found absent is mostly created again, else
 *               left absent (sometimes with a delete that has nothing to
 *               do).  Every run of the body is an attempt of its own.
 *   atomic-ro   axstm_atomically reading 2-8 data keys.
 * Every value written is hist_value_encode(txid, key, what it replaced), so
 * every read names the write it saw.  The run is cut into windows: a window
 * ends when a thread's log is full or time is up; the threads are joined,
 * the window checked, and the store's final state compared with the last
 * write of each key before the next window starts.
 */
#include "history.h"

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Most reads and writes one transaction records (atomically: 4 data keys,
 * each read, its tomb read, written or deleted, the tomb written). */
#define MAX_OPS 16
/* Ops per transaction the logs are sized for (about 6.5 on average). */
#define OPS_PER_TXN 8
#define DEFAULT_TXNS_PER_THREAD ((size_t)1 << 16)
/* A body's own code (positive) for "the log is full": rolls back. */
#define BODY_LOG_FULL 1
/* Most data keys one transaction touches (atomic-ro). */
#define MAX_DATA 8

struct shared {
    axstm_store *store;
    hist_recorder *rec;
    uint32_t ndata;    /* data keys 0..ndata-1; their tombs ndata..2*ndata-1 */
    const char **keys; /* 2 * ndata names */
    int64_t deadline;
    atomic_int window_over; /* written once per window: not on the hot path */
    atomic_int failed;
    char error[256]; /* by the thread that set failed from 0 to 1 */
};

/* Each on its own cache lines: rng and busy are written all the time. */
struct worker {
    _Alignas(128) struct shared *sh;
    axstm_store *store; /* the run's, or a worker process's own */
    hist_log *log;
    uint64_t rng;
    uint64_t busy;
    pthread_t thread;
    pid_t pid;
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

static uint32_t tomb(const struct shared *sh, uint32_t k)
{
    return sh->ndata + k;
}

/* n distinct data keys, into idx[]. */
static void pick_keys(struct worker *w, uint32_t *idx, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        bool dup;
        do {
            idx[i] = pick(w, w->sh->ndata);
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
#define CALL_AGAIN_WHILE_BUSY(w, rc, call)            \
    do {                                              \
        unsigned busy_round_ = 0;                     \
        while (((rc) = (call)) == AXSTM_BUSY_RETRY) { \
            (w)->busy++;                              \
            if (++busy_round_ < 16) {                 \
                sched_yield();                        \
            } else {                                  \
                struct timespec ts_ = {0, 2000};      \
                nanosleep(&ts_, NULL);                \
            }                                         \
        }                                             \
    } while (0)

/* ------------------------------------------------------------------ */
/* Handles: using and usevar                                          */
/* ------------------------------------------------------------------ */

/* The writer named by a tomb's bytes (0: no value). */
static uint64_t tomb_wid(struct worker *w, uint32_t k, const void *data, size_t len)
{
    uint64_t prev;
    return hist_value_decode(data, len, tomb(w->sh, k), &prev);
}

/* A data key's tomb, read with a checkout of its own (usevar). */
static bool read_tomb(struct worker *w, uint32_t k, uint64_t *wid)
{
    axstm_value *t = NULL;
    int rc;
    CALL_AGAIN_WHILE_BUSY(w, rc, axstm_usevar(w->store, w->sh->keys[tomb(w->sh, k)], &t));
    if (rc != AXSTM_OK) {
        fail(w, "usevar (tomb): %s", axstm_strerror(rc));
        return false;
    }
    size_t len;
    const void *data = axstm_value_data(t, &len);
    *wid = tomb_wid(w, k, data, len);
    axstm_value_free(t);
    return true;
}

/*
 * A handle set: n data keys, each with its value handle dv[i] and, in a
 * collection, its tomb's tv[i] (NULL for a single usevar handle, which
 * then never deletes: absent_id[i] names the delete its key was found
 * after, read beforehand).
 */
struct handles {
    enum hist_kind kind;
    unsigned n;
    uint32_t idx[4];
    axstm_value *dv[4], *tv[4];
    uint64_t absent_id[4];
    /* HIST_HANDLES: every handle, committed with axstm_values_commit; its
     * reads are recorded only once a commit succeeds. */
    axstm_value *all[8];
    bool reads_unsure;
};

/* What one round of changes did to data key i, for the record. */
struct planned {
    uint64_t over;  /* the write it replaced (a value, or a delete) */
    uint64_t tover; /* the tomb's */
    bool del;
    /* Found absent by a single usevar handle, whose tomb was read with a
     * checkout of its own: recorded only if the attempt commits. */
    bool absent_unsure;
    uint64_t absent_version;
    /* What was read, when the handle set's reads are unsure. */
    uint64_t wid, prev, version, twid, tprev, tversion;
};

/*
 * Reads every key of the handle set, records it, and sets fresh values
 * naming txid (or deletes data keys, writing their tombs).  fresh: the
 * handles were just checked out (a re-commit round reads the handle's own
 * state: an absent key's version there is not the store's).
 */
static bool read_and_change(struct worker *w, const struct handles *h, uint64_t txid, bool fresh,
                            struct planned *pl)
{
    for (unsigned i = 0; i < h->n; i++) {
        uint32_t k = h->idx[i];
        size_t len;
        const void *data = axstm_value_data(h->dv[i], &len);
        uint64_t prev, twid = 0;
        if (h->tv[i] != NULL) {
            size_t tlen;
            const void *tdata = axstm_value_data(h->tv[i], &tlen);
            uint64_t tprev;
            twid = hist_value_decode(tdata, tlen, tomb(w->sh, k), &tprev);
            pl[i].twid = twid;
            pl[i].tprev = tprev;
            pl[i].tversion = axstm_value_version(h->tv[i]);
            if (!h->reads_unsure)
                hist_read(w->log, tomb(w->sh, k), twid, tprev, pl[i].tversion);
        } else {
            twid = h->absent_id[i];
        }
        bool absent = data == NULL;
        pl[i].absent_unsure = false;
        if (absent) {
            uint64_t version = fresh ? axstm_value_version(h->dv[i]) : HIST_NO_VERSION;
            pl[i].over = twid;
            if (h->tv[i] == NULL || h->reads_unsure) {
                pl[i].absent_unsure = true;
                pl[i].absent_version = version;
            } else {
                hist_read_absent(w->log, k, twid, version);
            }
        } else {
            pl[i].over = hist_value_decode(data, len, k, &prev);
            pl[i].prev = prev;
            pl[i].version = axstm_value_version(h->dv[i]);
            if (!h->reads_unsure)
                hist_read(w->log, k, pl[i].over, prev, pl[i].version);
        }
        pl[i].tover = twid;
        /* Delete one present key in four; a key found absent is deleted
         * again (left absent: every key of a handle is written) one time
         * in three, else created again. */
        pl[i].del = h->tv[i] != NULL && pick(w, absent ? 3 : 4) == 0;
        unsigned char buf[HIST_VALUE_SIZE];
        int rc;
        if (pl[i].del) {
            rc = axstm_value_delete(h->dv[i]);
        } else {
            hist_value_encode(buf, txid, k, pl[i].over);
            rc = axstm_value_set(h->dv[i], buf, sizeof buf);
        }
        if (rc == AXSTM_OK && h->tv[i] != NULL) {
            hist_value_encode(buf, txid, tomb(w->sh, k), twid);
            rc = axstm_value_set(h->tv[i], buf, sizeof buf);
        }
        if (rc != AXSTM_OK) {
            fail(w, "value_set/delete: %s", axstm_strerror(rc));
            return false;
        }
    }
    return true;
}

/* Records round's writes; versions from the handles, or unknown.  A
 * committed round also records the reads it could only now be sure of. */
static void record_writes(struct worker *w, const struct handles *h, const struct planned *pl,
                          bool committed)
{
    for (unsigned i = 0; i < h->n; i++) {
        uint32_t k = h->idx[i];
        uint64_t v = committed ? axstm_value_version(h->dv[i]) : HIST_NO_VERSION;
        if (committed && h->reads_unsure) {
            hist_read(w->log, tomb(w->sh, k), pl[i].twid, pl[i].tprev, pl[i].tversion);
            if (!pl[i].absent_unsure)
                hist_read(w->log, k, pl[i].over, pl[i].prev, pl[i].version);
        }
        if (committed && pl[i].absent_unsure)
            hist_read_absent(w->log, k, pl[i].over, pl[i].absent_version);
        if (pl[i].del)
            hist_delete(w->log, k, pl[i].over, v);
        else
            hist_write(w->log, k, pl[i].over, v);
        if (h->tv[i] != NULL)
            hist_write(w->log, tomb(w->sh, k), pl[i].tover,
                       committed ? axstm_value_version(h->tv[i]) : HIST_NO_VERSION);
    }
}

/* For a single usevar handle: the delete its key was found absent after. */
static bool find_absent_ids(struct worker *w, struct handles *h)
{
    for (unsigned i = 0; i < h->n; i++)
        if (h->tv[i] == NULL && axstm_value_data(h->dv[i], NULL) == NULL &&
            !read_tomb(w, h->idx[i], &h->absent_id[i]))
            return false;
    return true;
}

/*
 * The Axon loop on a checked-out handle (a collection c, or one value):
 * change, commit; on a conflict record the attempt as aborted, refresh and
 * redo.  start is when the checkout began.
 */
static void axon_rmw(struct worker *w, struct handles *h, axstm_collection *c, int64_t start)
{
    struct planned pl[4];
    bool fresh = true, deleted_last = false; /* the last commit deleted a key */
    if (!find_absent_ids(w, h))
        return;
    while (room(w)) {
        uint64_t txid = hist_begin(w->log, h->kind, start);
        if (!read_and_change(w, h, txid, fresh, pl))
            return;
        int rc;
        if (c != NULL)
            CALL_AGAIN_WHILE_BUSY(w, rc, axstm_collection_commit(c));
        else if (h->kind == HIST_HANDLES)
            CALL_AGAIN_WHILE_BUSY(w, rc, axstm_values_commit(h->all, 2 * h->n));
        else
            CALL_AGAIN_WHILE_BUSY(w, rc, axstm_value_commit(h->dv[0]));
        int64_t end = hist_now();
        if (rc == AXSTM_OK && deleted_last) {
            /* Nobody can commit over a deleted key without checking it
             * out again: the handle that deleted it least of all. */
            fail(w, "%s: committed again over a key its last commit deleted",
                 hist_kind_name(h->kind));
            return;
        }
        if (rc == AXSTM_OK) {
            record_writes(w, h, pl, true);
            hist_end(w->log, HIST_COMMITTED, end);
            /* Sometimes change and commit the same handle again: its state
             * still derives from the checkout that began at start. */
            if (pick(w, 4) != 0 || over(w))
                return;
            fresh = false;
            for (unsigned i = 0; i < h->n; i++)
                deleted_last |= pl[i].del;
            continue;
        }
        if (rc != AXSTM_CONCURRENT_UPDATE) {
            fail(w, "%s commit: %s", hist_kind_name(h->kind), axstm_strerror(rc));
            return;
        }
        /* The writes are kept so that a read of one is named a dirty read. */
        record_writes(w, h, pl, false);
        hist_end(w->log, HIST_ABORTED, end);
        if (over(w))
            return;
        start = hist_now();
        rc = AXSTM_OK;
        if (c != NULL)
            CALL_AGAIN_WHILE_BUSY(w, rc, axstm_collection_refresh(c));
        else if (h->kind != HIST_HANDLES)
            CALL_AGAIN_WHILE_BUSY(w, rc, axstm_value_refresh(h->dv[0]));
        for (unsigned i = 0; h->kind == HIST_HANDLES && i < 2 * h->n && rc == AXSTM_OK; i++)
            CALL_AGAIN_WHILE_BUSY(w, rc, axstm_value_refresh(h->all[i]));
        if (rc != AXSTM_OK) {
            fail(w, "%s refresh: %s", hist_kind_name(h->kind), axstm_strerror(rc));
            return;
        }
        fresh = true;
        deleted_last = false;
        if (!find_absent_ids(w, h))
            return;
    }
}

static void do_using(struct worker *w, bool read_only)
{
    struct shared *sh = w->sh;
    unsigned max = read_only ? 4 : 3;
    unsigned n = 2 + pick(w, max - 1);
    if (n > sh->ndata)
        n = sh->ndata;
    struct handles h;
    memset(&h, 0, sizeof h);
    h.kind = read_only ? HIST_SNAPSHOT : HIST_USING;
    h.n = n;
    const char *names[8];
    pick_keys(w, h.idx, n);
    for (unsigned i = 0; i < n; i++) {
        names[2 * i] = sh->keys[h.idx[i]];
        names[2 * i + 1] = sh->keys[tomb(sh, h.idx[i])];
    }
    axstm_collection *c = NULL;
    int64_t start = hist_now();
    int rc;
    CALL_AGAIN_WHILE_BUSY(w, rc, axstm_using(w->store, names, 2 * n, &c));
    if (rc != AXSTM_OK) {
        fail(w, "using: %s", axstm_strerror(rc));
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        h.dv[i] = axstm_collection_at(c, 2 * i);
        h.tv[i] = axstm_collection_at(c, 2 * i + 1);
    }
    if (!read_only) {
        axon_rmw(w, &h, c, start);
    } else {
        hist_begin(w->log, HIST_SNAPSHOT, start);
        for (unsigned i = 0; i < n; i++) {
            uint32_t k = h.idx[i];
            size_t len, tlen;
            const void *data = axstm_value_data(h.dv[i], &len);
            const void *tdata = axstm_value_data(h.tv[i], &tlen);
            uint64_t prev, twid = hist_value_decode(tdata, tlen, tomb(sh, k), &prev);
            hist_read(w->log, tomb(sh, k), twid, prev, axstm_value_version(h.tv[i]));
            if (data == NULL) {
                hist_read_absent(w->log, k, twid, axstm_value_version(h.dv[i]));
            } else {
                uint64_t wid = hist_value_decode(data, len, k, &prev);
                hist_read(w->log, k, wid, prev, axstm_value_version(h.dv[i]));
            }
        }
        hist_end(w->log, HIST_COMMITTED, hist_now());
    }
    axstm_collection_free(c);
}

static void do_handles(struct worker *w)
{
    struct shared *sh = w->sh;
    unsigned n = 2 + pick(w, 2);
    if (n > sh->ndata)
        n = sh->ndata;
    struct handles h;
    memset(&h, 0, sizeof h);
    h.kind = HIST_HANDLES;
    h.n = n;
    h.reads_unsure = true;
    pick_keys(w, h.idx, n);
    int64_t start = hist_now();
    int rc = AXSTM_OK;
    for (unsigned i = 0; i < 2 * n && rc == AXSTM_OK; i++) {
        uint32_t k = i % 2 == 0 ? h.idx[i / 2] : tomb(sh, h.idx[i / 2]);
        CALL_AGAIN_WHILE_BUSY(w, rc, axstm_usevar(w->store, sh->keys[k], &h.all[i]));
    }
    if (rc != AXSTM_OK) {
        fail(w, "usevar: %s", axstm_strerror(rc));
    } else {
        for (unsigned i = 0; i < n; i++) {
            h.dv[i] = h.all[2 * i];
            h.tv[i] = h.all[2 * i + 1];
        }
        axon_rmw(w, &h, NULL, start);
    }
    for (unsigned i = 0; i < 2 * n; i++)
        axstm_value_free(h.all[i]);
}

static void do_usevar(struct worker *w)
{
    struct handles h;
    memset(&h, 0, sizeof h);
    h.kind = HIST_USEVAR;
    h.n = 1;
    h.idx[0] = pick(w, w->sh->ndata);
    int64_t start = hist_now();
    int rc;
    CALL_AGAIN_WHILE_BUSY(w, rc, axstm_usevar(w->store, w->sh->keys[h.idx[0]], &h.dv[0]));
    if (rc != AXSTM_OK) {
        fail(w, "usevar: %s", axstm_strerror(rc));
        return;
    }
    axon_rmw(w, &h, NULL, start);
    axstm_value_free(h.dv[0]);
}

/* ------------------------------------------------------------------ */
/* Transactions                                                       */
/* ------------------------------------------------------------------ */

struct body_arg {
    struct worker *w;
    uint32_t idx[MAX_DATA];
    unsigned n;
    bool read_only;
};

/* Reads key (a data key's tomb, or any key) in a body: the writer named. */
static int txn_read(axstm_txn *tx, struct worker *w, uint32_t key, uint64_t *wid)
{
    const void *data = NULL;
    size_t len = 0;
    int rc = axstm_txn_get(tx, w->sh->keys[key], &data, &len);
    if (rc == AXSTM_ENOVALUE) {
        data = NULL;
        len = 0;
    } else if (rc != AXSTM_OK) {
        return rc;
    }
    uint64_t prev;
    *wid = hist_value_decode(data, len, key, &prev);
    hist_read(w->log, key, *wid, prev, HIST_NO_VERSION);
    return AXSTM_OK;
}

/* One run of the body is one attempt: a run that follows another means the
 * earlier one failed, so it is closed as aborted here. */
static int body(axstm_txn *tx, void *arg)
{
    struct body_arg *a = arg;
    struct worker *w = a->w;
    struct shared *sh = w->sh;
    int64_t now = hist_now();
    hist_end(w->log, HIST_ABORTED, now); /* no-op unless a run is open */
    if (!hist_log_room(w->log, MAX_OPS))
        return BODY_LOG_FULL;
    uint64_t txid = hist_begin(w->log, a->read_only ? HIST_ATOMIC_RO : HIST_ATOMIC, now);
    for (unsigned i = 0; i < a->n; i++) {
        uint32_t k = a->idx[i];
        const char *key = sh->keys[k];
        const void *data = NULL;
        size_t len = 0;
        uint64_t wid, twid = 0, prev;
        bool have_tomb = false;
        int rc = axstm_txn_get(tx, key, &data, &len);
        bool absent = rc == AXSTM_ENOVALUE;
        if (absent) {
            /* Which delete left it absent: the tomb, in the same snapshot. */
            if ((rc = txn_read(tx, w, tomb(sh, k), &twid)) != AXSTM_OK)
                return rc;
            have_tomb = true;
            wid = twid;
            hist_read_absent(w->log, k, twid, HIST_NO_VERSION);
        } else if (rc == AXSTM_OK) {
            wid = hist_value_decode(data, len, k, &prev);
            hist_read(w->log, k, wid, prev, HIST_NO_VERSION);
        } else {
            return rc;
        }
        if (a->read_only)
            continue;
        unsigned char buf[HIST_VALUE_SIZE];
        unsigned choice = pick(w, 4);
        if (!absent && choice == 0) {
            /* Delete it, and say so in its tomb. */
            if (!have_tomb && (rc = txn_read(tx, w, tomb(sh, k), &twid)) != AXSTM_OK)
                return rc;
            if ((rc = axstm_txn_delete(tx, key)) != AXSTM_OK)
                return rc;
            hist_delete(w->log, k, wid, HIST_NO_VERSION);
            hist_value_encode(buf, txid, tomb(sh, k), twid);
            if ((rc = axstm_txn_set(tx, sh->keys[tomb(sh, k)], buf, sizeof buf)) != AXSTM_OK)
                return rc;
            hist_write(w->log, tomb(sh, k), twid, HIST_NO_VERSION);
            continue;
        }
        if (absent && choice == 0) {
            /* Leave it absent: a delete of a key that does not exist
             * changes nothing (no write is recorded). */
            if (pick(w, 2) == 0 && (rc = axstm_txn_delete(tx, key)) != AXSTM_OK)
                return rc;
            continue;
        }
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
    if (a.n > w->sh->ndata)
        a.n = w->sh->ndata;
    pick_keys(w, a.idx, a.n);
    int rc = axstm_atomically(w->store, body, &a);
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
        if (p < 20)
            do_using(w, false);
        else if (p < 30)
            do_handles(w);
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

/* What the store holds for each key, gathered by foreach (which creates
 * nothing, and does not visit absent keys). */
struct final_state {
    const struct shared *sh;
    uint64_t *wid, *version;
    bool *present, *seen;
};

static int visit_final(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    struct final_state *f = arg;
    char *end;
    if ((key[0] != 'h' && key[0] != 't') || key[1] < '0' || key[1] > '9')
        return 1;
    unsigned long n = strtoul(key + 1, &end, 10);
    if (*end != '\0' || n >= f->sh->ndata)
        return 1;
    uint32_t k = key[0] == 'h' ? (uint32_t)n : tomb(f->sh, (uint32_t)n);
    uint64_t prev;
    if (f->seen[k])
        return 2;
    f->seen[k] = true;
    f->present[k] = data != NULL;
    f->wid[k] = hist_value_decode(data, len, k, &prev);
    f->version[k] = version;
    return 0;
}

/* Reads each key's committed state back from the store and holds it
 * against the last write the checker placed: a data key the store does
 * not hold (or holds with no value) must have been left absent by the
 * delete its tomb names. */
static int verify_store(struct shared *sh, struct hist_run_result *res)
{
    uint32_t nkeys = 2 * sh->ndata;
    struct final_state f = {sh, calloc(nkeys, sizeof *f.wid), calloc(nkeys, sizeof *f.version),
                            calloc(nkeys, sizeof *f.present), calloc(nkeys, sizeof *f.seen)};
    int rc = -1;
    if (f.wid == NULL || f.version == NULL || f.present == NULL || f.seen == NULL) {
        run_error(res, "out of memory");
        goto out;
    }
    int walk = axstm_store_foreach(sh->store, visit_final, &f);
    if (walk != AXSTM_OK) {
        run_error(res, "foreach after the window: %s",
                  walk == 1   ? "a key the workload never made"
                  : walk == 2 ? "a key visited twice"
                              : axstm_strerror(walk));
        goto out;
    }
    for (uint32_t k = 0; k < nkeys; k++) {
        if (k < sh->ndata && !f.present[k])
            hist_verify_final_absent(sh->rec, k, f.wid[tomb(sh, k)], f.version[k], &res->report);
        else
            hist_verify_final(sh->rec, k, f.wid[k], f.version[k], &res->report);
    }
    rc = 0;
out:
    free(f.wid);
    free(f.version);
    free(f.present);
    free(f.seen);
    return rc;
}

/* Memory that worker processes share with the run (the workers' state,
 * the window's flags, the first error), zeroed. */
static void *shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* A worker process: its own store, opened from the run's address. */
static int worker_process(struct worker *w, const char *address)
{
    axstm_store *s = NULL;
    int rc = axstm_store_open(address, &s);
    if (rc != AXSTM_OK) {
        fail(w, "worker process: opening %s: %s", address, axstm_strerror(rc));
        return 1;
    }
    /* A copy of its own: w is shared with the run, which must not see this
     * process's store; what the run reads back (busy) is copied back. */
    struct worker mine = *w;
    mine.store = s;
    worker_main(&mine);
    w->busy = mine.busy;
    w->rng = mine.rng; /* the next window goes on from here */
    axstm_store_free(s);
    return 0;
}

/* Starts the window's workers: threads, or processes (cfg->processes).
 * Returns how many started. */
static unsigned start_workers(const struct hist_run_config *cfg, struct worker *workers)
{
    unsigned started = 0;
    for (; started < cfg->threads; started++) {
        struct worker *w = &workers[started];
        if (!cfg->processes) {
            if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
                break;
            continue;
        }
        fflush(NULL);
        pid_t pid = fork(); /* w is shared: only the parent writes w->pid */
        if (pid < 0)
            break;
        if (pid == 0)
            _exit(worker_process(w, cfg->address));
        w->pid = pid;
    }
    return started;
}

/* Waits for them; false when a process did not end well. */
static bool join_workers(const struct hist_run_config *cfg, struct worker *workers, unsigned n)
{
    bool ok = true;
    for (unsigned t = 0; t < n; t++) {
        if (!cfg->processes) {
            pthread_join(workers[t].thread, NULL);
            continue;
        }
        int status;
        ok &= waitpid(workers[t].pid, &status, 0) == workers[t].pid && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0;
    }
    return ok;
}

long hist_run(const struct hist_run_config *cfg, struct hist_run_result *res)
{
    memset(res, 0, sizeof *res);
    hist_report_init(&res->report);
    if (cfg->threads == 0 || cfg->threads > HIST_MAX_THREADS || cfg->nkeys == 0 ||
        cfg->nkeys > HIST_MAX_KEYS / 2 || (cfg->processes && cfg->address == NULL)) {
        run_error(res, "bad configuration");
        return -1;
    }
    size_t cap = cfg->txns_per_thread ? cfg->txns_per_thread : DEFAULT_TXNS_PER_THREAD;
    /* Shared with worker processes: the run's state and the workers'. */
    struct shared *shm = shared_alloc(sizeof *shm);
    size_t workers_size = cfg->threads * sizeof(struct worker);
    struct worker *workers = shared_alloc(workers_size);
    long result = -1;
    if (shm == NULL || workers == NULL) {
        run_error(res, "out of memory");
        if (shm != NULL)
            munmap(shm, sizeof *shm);
        if (workers != NULL)
            munmap(workers, workers_size);
        return -1;
    }
    shm->ndata = cfg->nkeys;
    int open_rc = AXSTM_OK;
    if (cfg->address != NULL)
        open_rc = axstm_store_open(cfg->address, &shm->store);
    else
        shm->store = axstm_store_new();
    shm->rec = hist_recorder_new(cfg->threads, 2 * cfg->nkeys, cap, cap * OPS_PER_TXN + MAX_OPS);
    if (shm->rec != NULL && cfg->aborts_any_time)
        hist_recorder_aborts_any_time(shm->rec);
    char(*names)[16] = calloc(2 * (size_t)cfg->nkeys, sizeof *names);
    shm->keys = calloc(2 * (size_t)cfg->nkeys, sizeof *shm->keys);
    if (open_rc != AXSTM_OK) {
        run_error(res, "opening %s: %s", cfg->address, axstm_strerror(open_rc));
        goto out;
    }
    if (shm->store == NULL || shm->rec == NULL || names == NULL || shm->keys == NULL) {
        run_error(res, "out of memory");
        goto out;
    }
    for (uint32_t k = 0; k < cfg->nkeys; k++) {
        snprintf(names[k], sizeof names[k], "h%" PRIu32, k);
        snprintf(names[tomb(shm, k)], sizeof names[k], "t%" PRIu32, k);
        shm->keys[k] = names[k];
        shm->keys[tomb(shm, k)] = names[tomb(shm, k)];
    }
    atomic_init(&shm->failed, 0);
    uint64_t seed = (uint64_t)hist_now() | 1;
    for (unsigned t = 0; t < cfg->threads; t++) {
        workers[t].sh = shm;
        workers[t].store = shm->store;
        workers[t].log = hist_recorder_log(shm->rec, t);
        workers[t].rng = (seed + t * UINT64_C(0x9E3779B97F4A7C15)) | 1;
    }

    /* cfg->seconds is running time: windows stop the clock while they are
     * checked, so a run does as much work however slow the checker is. */
    int64_t budget = (int64_t)(cfg->seconds * 1e9), ran = 0;
    int64_t t_begin = hist_now();
    for (;;) {
        int64_t t_window = hist_now();
        shm->deadline = t_window + (budget - ran);
        atomic_store(&shm->window_over, 0);
        unsigned started = start_workers(cfg, workers);
        if (started < cfg->threads)
            end_window(&workers[0]);
        bool joined = join_workers(cfg, workers, started);
        if (started < cfg->threads) {
            run_error(res, cfg->processes ? "fork failed" : "pthread_create failed");
            goto out;
        }
        if (!joined && !atomic_load(&shm->failed)) {
            run_error(res, "a worker process died");
            goto out;
        }
        if (atomic_load(&shm->failed)) {
            run_error(res, "%s", shm->error);
            goto out;
        }
        int64_t t_check = hist_now();
        ran += t_check - t_window;
        long v = hist_check(shm->rec, &res->report);
        if (v < 0) {
            run_error(res, "the checker ran out of memory");
            goto out;
        }
        if (verify_store(shm, res) != 0)
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
        hist_recorder_next_window(shm->rec);
    }
    res->seconds = (double)(hist_now() - t_begin) / 1e9;
    for (unsigned t = 0; t < cfg->threads; t++)
        res->busy += workers[t].busy;
    result = (long)res->report.violations;
out:
    free(shm->keys);
    free(names);
    hist_recorder_free(shm->rec);
    axstm_store_free(shm->store);
    munmap(workers, workers_size);
    munmap(shm, sizeof *shm);
    return result;
}
