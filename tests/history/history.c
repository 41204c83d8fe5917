/* SPDX-License-Identifier: MIT */
/*
 * history.c -- a recorder of transaction histories and a checker that they
 * are strictly serializable.
 *
 * What is recorded
 * ----------------
 * Each worker thread appends to its own log (hist_log): preallocated arrays
 * of transactions and of their reads and writes, written by that thread
 * only, so recording adds no shared writes (and no synchronisation) to the
 * run being observed.  A transaction record holds its txid, its start time
 * (CLOCK_MONOTONIC, taken before the checkout or the first read), its end
 * time (taken after the commit returned), its kind and its outcome.  Every
 * attempt is a record of its own: an Axon commit that failed with
 * AXSTM_CONCURRENT_UPDATE, or a run of an axstm_atomically body that was run
 * again, is recorded as aborted, and the retry is a new record.
 *
 * Values name their writer
 * ------------------------
 * A checker must know which write every read saw.  Axon handles expose
 * versions, transactions do not, so instead every value the workloads
 * write is self-describing (16 bytes, hist_value_encode):
 *
 *     word 0:  tag (16 bits) | txid of the writer (48 bits)
 *     word 1:  key index (16 bits) | txid of the write it overwrote (48)
 *
 * txid = (thread + 1) << 36 | the thread's sequence number: unique to the
 * attempt, aborted ones included, so a read of an aborted attempt's write
 * is seen for what it is.  A read records the txid it decoded (0 for "no
 * value"), so it identifies exactly one write.  The "overwrote" link is
 * what makes per-key version orders recoverable without versions: the
 * workloads only read-modify-write, so each write knows the write it
 * replaced (it read it in the same transaction).  Axon commits write every
 * key of the handle, changed or not, so the workloads give every key of a
 * committed handle a fresh value: a value is then never committed twice.
 * The key index and the tag catch bytes that land in the wrong key or are
 * not a value at all.  Where a thread knows versions (Axon handles:
 * axstm_value_version before and after commit) it records them too, and
 * the checker holds them against the order the links give.  A blind write
 * may record HIST_PREV_UNKNOWN; it is then placed by its version.
 *
 * Deletes
 * -------
 * A delete is a write whose value is "absent": it overwrites the write it
 * read, like any other, and the absent state it leaves is named by the
 * delete's txid.  A read that finds a key absent records the delete it saw
 * (workload.c learns it from a companion key written by every delete), so
 * it too identifies exactly one write, and a write that brings the key
 * back names that delete as the write it overwrote.  The one difference is
 * in versions: a key deleted and created again starts its versions afresh,
 * so its absent state reads as version 0 and the next write makes version
 * 1; version forks are looked for only among keys not deleted in the
 * window (within one life of a key the links find them anyway).  A read of
 * an absent state whose named writer wrote a value (or of a value whose
 * writer deleted the key) is a read of something never written.
 *
 * What is checked (hist_check)
 * ----------------------------
 *  1. Per key, the committed writes are chained from the key's initial
 *     state by their "overwrote" links (blind writes by version).  Two
 *     committed writes over the same write are a lost update; a write no
 *     chain reaches, or a version out of step with its place, is a gap;
 *     two committed writes making the same version are a fork.
 *  2. Every read of a committed transaction, and of an aborted attempt
 *     (opacity: an attempt that later fails must still have seen one
 *     consistent state), must see a committed write of that key (else a
 *     dirty read, or a read of a value never written) with the bytes that
 *     writer wrote and the version it made.  A read of a write whose
 *     successor had ended before the reader started is a stale read.
 *  3. The dependency graph over committed transactions and aborted readers:
 *     ww (a write to the next write of the key), wr (a write to its
 *     readers) and rw (a reader to the write that replaced what it read).
 *     A cycle means no serial order explains the history.  Kahn's algorithm
 *     finds whether there is one; on failure the shortest cycle through a
 *     node on one is found by BFS and printed with its edges.
 *  4. Real time (strict serializability): if T1 ended before T2 started, T1
 *     must come first (for T2 an aborted attempt, unless the recorder says
 *     hist_recorder_aborts_any_time; so too the stale reads of step 2).  Adding those edges directly would be O(n^2), so
 *     each transaction instead gets a "time node" at its end, the time
 *     nodes are chained in end-time order, T -> its time node, and the
 *     latest time node that ended before T started -> T.  A path T1 -> ...
 *     -> T2 through time nodes exists exactly when T1 ended before T2
 *     started, so the graph with these 3n edges has a cycle exactly when
 *     the one with all real-time edges does.  This second pass runs only
 *     when the first found no cycle, so a failure names the right reason.
 * Everything is arrays and counting: O(n log n) for the sort by end time,
 * O(n + edges) otherwise, no recursion.
 *
 * Windows
 * -------
 * Long runs check in windows to bound memory: the threads stop, the window
 * is checked, and the last write of each key becomes the next window's
 * initial state (hist_recorder_next_window).  Transaction ids keep counting
 * across windows, so a value from an earlier window is never mistaken for a
 * newer one; a read of one is reported (never written in this window).
 */
#include "history.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define VALUE_TAG UINT64_C(0xA57C)
#define SEQ_MASK ((UINT64_C(1) << HIST_SEQ_BITS) - 1)
#define NONE UINT32_MAX
/* Descriptions kept per kind of violation (the rest are only counted). */
#define TEXT_PER_KIND 3
/* Transactions printed of a cycle before "...". */
#define CYCLE_PRINT_MAX 12

/* ------------------------------------------------------------------ */
/* Values                                                             */
/* ------------------------------------------------------------------ */

void hist_value_encode(unsigned char out[HIST_VALUE_SIZE], uint64_t txid, uint32_t key,
                       uint64_t prev)
{
    uint64_t w[2];
    w[0] = VALUE_TAG << 48 | (txid & HIST_TXID_MASK);
    w[1] = (uint64_t)(key & 0xffff) << 48 | (prev & HIST_TXID_MASK);
    memcpy(out, w, sizeof w);
}

uint64_t hist_value_decode(const void *data, size_t len, uint32_t key, uint64_t *prev)
{
    uint64_t w[2];
    *prev = HIST_PREV_UNKNOWN;
    if (data == NULL)
        return 0;
    if (len != HIST_VALUE_SIZE)
        return HIST_WID_GARBAGE;
    memcpy(w, data, sizeof w);
    if (w[0] >> 48 != VALUE_TAG || w[1] >> 48 != (key & 0xffff) || (w[0] & HIST_TXID_MASK) == 0)
        return HIST_WID_GARBAGE;
    *prev = w[1] & HIST_TXID_MASK;
    return w[0] & HIST_TXID_MASK;
}

int64_t hist_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Recorder                                                           */
/* ------------------------------------------------------------------ */

struct hist_recorder {
    unsigned nthreads;
    uint32_t nkeys;
    hist_log **logs; /* each on its own cache lines: no false sharing */
    uint64_t *init_wid, *init_version;
    uint64_t *final_wid, *final_version; /* as the last hist_check found */
    bool *init_absent, *final_absent;    /* absent: left by a delete (wid) */
    bool have_final;
    bool aborts_any_time; /* hist_recorder_aborts_any_time */
};

void hist_recorder_aborts_any_time(hist_recorder *r)
{
    r->aborts_any_time = true;
}

/* Whether real time binds transaction t (hist_recorder_aborts_any_time). */
static bool bound_by_real_time(const hist_recorder *r, const struct hist_txn *t)
{
    return !r->aborts_any_time || t->outcome != HIST_ABORTED;
}

/* Whether the initial state of key is absent (never written, or deleted). */
static bool init_is_absent(const hist_recorder *r, uint32_t key)
{
    return r->init_absent[key] || r->init_wid[key] == 0;
}

static void *xcalloc(size_t n, size_t size)
{
    return calloc(n ? n : 1, size ? size : 1);
}

/* A log lives in one shared anonymous mapping (header, transactions,
 * operations), so that a worker that is a forked process, not a thread,
 * writes where the checker reads (hist_run's processes). */
static size_t log_header_size(void)
{
    return (sizeof(hist_log) + 127) / 128 * 128;
}

static size_t log_size(size_t cap_txns, size_t cap_ops)
{
    return log_header_size() + cap_txns * sizeof(struct hist_txn) +
           cap_ops * sizeof(struct hist_op);
}

static void log_free(hist_log *l)
{
    if (l != NULL)
        munmap(l, log_size(l->cap_txns, l->cap_ops));
}

static hist_log *log_new(unsigned thread, size_t cap_txns, size_t cap_ops)
{
    void *block = mmap(NULL, log_size(cap_txns, cap_ops), PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED)
        return NULL;
    hist_log *l = block; /* the mapping is zeroed and page-aligned */
    l->thread = thread;
    l->cap_txns = cap_txns;
    l->cap_ops = cap_ops;
    l->txns = (struct hist_txn *)((char *)block + log_header_size());
    l->ops = (struct hist_op *)(l->txns + cap_txns);
    return l;
}

hist_recorder *hist_recorder_new(unsigned nthreads, uint32_t nkeys, size_t txns_per_thread,
                                 size_t ops_per_thread)
{
    if (nthreads == 0 || nthreads > HIST_MAX_THREADS || nkeys == 0 || nkeys > HIST_MAX_KEYS ||
        txns_per_thread == 0 || txns_per_thread > SEQ_MASK ||
        txns_per_thread > SIZE_MAX / sizeof(struct hist_txn) || ops_per_thread > UINT32_MAX ||
        ops_per_thread > SIZE_MAX / sizeof(struct hist_op))
        return NULL;
    hist_recorder *r = xcalloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->nthreads = nthreads;
    r->nkeys = nkeys;
    r->logs = xcalloc(nthreads, sizeof *r->logs);
    r->init_wid = xcalloc(nkeys, sizeof *r->init_wid);
    r->init_version = xcalloc(nkeys, sizeof *r->init_version);
    r->final_wid = xcalloc(nkeys, sizeof *r->final_wid);
    r->final_version = xcalloc(nkeys, sizeof *r->final_version);
    r->init_absent = xcalloc(nkeys, sizeof *r->init_absent);
    r->final_absent = xcalloc(nkeys, sizeof *r->final_absent);
    if (r->logs == NULL || r->init_wid == NULL || r->init_version == NULL || r->final_wid == NULL ||
        r->final_version == NULL || r->init_absent == NULL || r->final_absent == NULL) {
        hist_recorder_free(r);
        return NULL;
    }
    for (unsigned t = 0; t < nthreads; t++)
        if ((r->logs[t] = log_new(t, txns_per_thread, ops_per_thread)) == NULL) {
            hist_recorder_free(r);
            return NULL;
        }
    return r;
}

void hist_recorder_free(hist_recorder *r)
{
    if (r == NULL)
        return;
    if (r->logs != NULL)
        for (unsigned t = 0; t < r->nthreads; t++)
            log_free(r->logs[t]);
    free(r->logs);
    free(r->init_wid);
    free(r->init_version);
    free(r->final_wid);
    free(r->final_version);
    free(r->init_absent);
    free(r->final_absent);
    free(r);
}

hist_log *hist_recorder_log(hist_recorder *r, unsigned thread)
{
    return thread < r->nthreads ? r->logs[thread] : NULL;
}

unsigned hist_recorder_threads(const hist_recorder *r)
{
    return r->nthreads;
}

uint32_t hist_recorder_keys(const hist_recorder *r)
{
    return r->nkeys;
}

void hist_recorder_set_initial(hist_recorder *r, uint32_t key, uint64_t wid, uint64_t version)
{
    if (key < r->nkeys) {
        r->init_wid[key] = wid;
        r->init_version[key] = version;
        r->init_absent[key] = wid == 0;
    }
}

void hist_recorder_set_initial_absent(hist_recorder *r, uint32_t key, uint64_t wid)
{
    if (key < r->nkeys) {
        r->init_wid[key] = wid;
        r->init_version[key] = 0;
        r->init_absent[key] = true;
    }
}

void hist_recorder_next_window(hist_recorder *r)
{
    if (r->have_final) {
        memcpy(r->init_wid, r->final_wid, r->nkeys * sizeof *r->init_wid);
        memcpy(r->init_version, r->final_version, r->nkeys * sizeof *r->init_version);
        memcpy(r->init_absent, r->final_absent, r->nkeys * sizeof *r->init_absent);
    }
    r->have_final = false;
    for (unsigned t = 0; t < r->nthreads; t++) {
        hist_log *l = r->logs[t];
        l->ntxns = l->nops = 0;
        l->first_seq = l->next_seq;
        l->open = false;
    }
}

bool hist_log_room(const hist_log *l, size_t nops)
{
    return l->ntxns < l->cap_txns && l->cap_ops - l->nops >= nops;
}

uint64_t hist_begin(hist_log *l, enum hist_kind kind, int64_t start)
{
    /* Callers check hist_log_room first; a full log must not scribble. */
    if (l->ntxns >= l->cap_txns) {
        fprintf(stderr, "history: log of thread %u overflowed\n", l->thread);
        abort();
    }
    struct hist_txn *t = &l->txns[l->ntxns++];
    t->id = (uint64_t)(l->thread + 1) << HIST_SEQ_BITS | (l->next_seq++ & SEQ_MASK);
    t->start = start;
    t->end = start;
    t->first_op = (uint32_t)l->nops;
    t->nops = 0;
    t->kind = (uint8_t)kind;
    t->outcome = HIST_OPEN;
    l->open = true;
    return t->id;
}

static void add_op(hist_log *l, uint32_t key, uint64_t wid, uint64_t prev, uint64_t version,
                   bool is_write, bool absent)
{
    if (!l->open || l->nops >= l->cap_ops || l->txns[l->ntxns - 1].nops == UINT16_MAX) {
        fprintf(stderr, "history: op outside a transaction or log full (thread %u)\n", l->thread);
        abort();
    }
    l->ops[l->nops++] = (struct hist_op){wid, prev, version, key, is_write, absent};
    l->txns[l->ntxns - 1].nops++;
}

void hist_read(hist_log *l, uint32_t key, uint64_t wid, uint64_t prev, uint64_t version)
{
    add_op(l, key, wid, prev, version, false, false);
}

void hist_write(hist_log *l, uint32_t key, uint64_t prev, uint64_t version)
{
    add_op(l, key, 0, prev, version, true, false);
}

void hist_read_absent(hist_log *l, uint32_t key, uint64_t deleter, uint64_t version)
{
    add_op(l, key, deleter, HIST_PREV_UNKNOWN, version, false, true);
}

void hist_delete(hist_log *l, uint32_t key, uint64_t prev, uint64_t version)
{
    add_op(l, key, 0, prev, version, true, true);
}

void hist_end(hist_log *l, enum hist_outcome outcome, int64_t end)
{
    if (!l->open)
        return;
    struct hist_txn *t = &l->txns[l->ntxns - 1];
    t->outcome = (uint8_t)outcome;
    t->end = end;
    l->open = false;
}

struct hist_txn *hist_open_txn(hist_log *l)
{
    return l->open ? &l->txns[l->ntxns - 1] : NULL;
}

/* ------------------------------------------------------------------ */
/* Reports                                                            */
/* ------------------------------------------------------------------ */

static const char *const violation_names[HIST_V_NKINDS] = {
    [HIST_V_CYCLE] = "cycle (not serializable)",
    [HIST_V_REALTIME] = "real-time order violated",
    [HIST_V_DIRTY_READ] = "dirty read",
    [HIST_V_NEVER_WRITTEN] = "read of a value never written",
    [HIST_V_STALE_READ] = "stale read",
    [HIST_V_LOST_UPDATE] = "lost update",
    [HIST_V_FORK] = "version fork",
    [HIST_V_GAP] = "version gap",
    [HIST_V_FINAL] = "final state differs",
    [HIST_V_MALFORMED] = "malformed history",
};

static const char *const kind_names[HIST_NKINDS] = {
    [HIST_USING] = "using",       [HIST_USEVAR] = "usevar",           [HIST_SNAPSHOT] = "snapshot",
    [HIST_ATOMIC] = "atomically", [HIST_ATOMIC_RO] = "atomically-ro", [HIST_HANDLES] = "handles",
};

const char *hist_violation_name(enum hist_violation v)
{
    return (unsigned)v < HIST_V_NKINDS ? violation_names[v] : "?";
}

const char *hist_kind_name(enum hist_kind k)
{
    return (unsigned)k < HIST_NKINDS ? kind_names[k] : "?";
}

void hist_report_init(hist_report *rep)
{
    memset(rep, 0, sizeof *rep);
}

static void report_text(hist_report *rep, const char *s)
{
    size_t room = sizeof rep->text - rep->len;
    if (room <= 1)
        return;
    int n = snprintf(rep->text + rep->len, room, "%s\n", s);
    if (n > 0)
        rep->len += (size_t)n < room ? (size_t)n : room - 1;
}

__attribute__((format(printf, 3, 4))) static void violation(hist_report *rep, enum hist_violation v,
                                                            const char *fmt, ...)
{
    rep->violations++;
    rep->kinds |= 1u << v;
    if (++rep->count[v] > TEXT_PER_KIND)
        return;
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "%s: ", violation_names[v]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof buf)
        vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    report_text(rep, buf);
}

void hist_report_print(const hist_report *rep, FILE *out)
{
    fprintf(out,
            "  %" PRIu64 " transactions checked (%" PRIu64 " committed, %" PRIu64
            " aborted attempts), %" PRIu64 " reads, %" PRIu64 " writes, %" PRIu64 " edges\n",
            rep->txns, rep->committed, rep->aborted, rep->reads, rep->writes, rep->edges);
    fprintf(out, "  %" PRIu64 " committed deletes, %" PRIu64 " reads of an absent key\n",
            rep->deletes, rep->absent_reads);
    fprintf(out, "  committed by kind:");
    for (int k = 0; k < HIST_NKINDS; k++)
        fprintf(out, " %s %" PRIu64, kind_names[k], rep->by_kind[k]);
    fprintf(out, "\n  violations: %" PRIu64 "\n", rep->violations);
    for (int v = 0; v < HIST_V_NKINDS; v++)
        if (rep->count[v] != 0)
            fprintf(out, "    %s: %" PRIu64 "\n", violation_names[v], rep->count[v]);
    if (rep->len != 0)
        fprintf(out, "%s", rep->text);
}

/* ------------------------------------------------------------------ */
/* The checker                                                        */
/* ------------------------------------------------------------------ */

enum edge_type { E_WW, E_WR, E_RW, E_RT };

struct edge {
    uint32_t from, to;
    uint32_t key;
    uint32_t type;
};

/* A committed write, placed in its key's version order. */
struct cwrite {
    uint32_t txn; /* global index */
    uint32_t key;
    uint64_t prev, version; /* as recorded */
    uint64_t made;          /* the version a read of it sees (a delete: 0) */
    uint32_t next;          /* the committed write linked over it, or NONE */
    uint32_t pos;           /* 1-based place in its key's order; 0: not placed */
    bool lost;              /* the loser of a lost update (reported) */
    bool del;               /* a delete: it leaves the key absent */
};

struct checker {
    hist_recorder *r;
    hist_report *rep;
    size_t n; /* transactions */
    const struct hist_txn **txn;
    const struct hist_op **ops; /* each transaction's ops */
    size_t *base;               /* first global index of each thread */
    bool *in_graph;
    int64_t t0;

    struct cwrite *cw;
    size_t ncw;
    uint32_t *cw_first; /* n + 1: each transaction's committed writes */

    uint32_t *init_next; /* per key: the write over the initial state */
    uint32_t *chain_off; /* per key (nkeys + 1): its order in chain[] */
    uint32_t *chain_len;
    uint32_t *chain;

    struct edge *edges;
    size_t nedges, capedges;
};

static void checker_free(struct checker *c)
{
    free(c->txn);
    free(c->ops);
    free(c->base);
    free(c->in_graph);
    free(c->cw);
    free(c->cw_first);
    free(c->init_next);
    free(c->chain_off);
    free(c->chain_len);
    free(c->chain);
    free(c->edges);
}

static int add_edge(struct checker *c, uint32_t from, uint32_t to, uint32_t key,
                    enum edge_type type)
{
    if (c->nedges == c->capedges) {
        if (c->capedges >= NONE / 2)
            return -1; /* edge indices are 32 bits: use smaller windows */
        size_t cap = c->capedges ? c->capedges * 2 : 1024;
        struct edge *e = realloc(c->edges, cap * sizeof *e);
        if (e == NULL)
            return -1;
        c->edges = e;
        c->capedges = cap;
    }
    c->edges[c->nedges++] = (struct edge){from, to, key, (uint32_t)type};
    return 0;
}

/* Global index of the transaction with this txid, or NONE. */
static uint32_t find_txn(const struct checker *c, uint64_t txid)
{
    uint64_t thread = txid >> HIST_SEQ_BITS;
    if (thread == 0 || thread > c->r->nthreads)
        return NONE;
    const hist_log *l = c->r->logs[thread - 1];
    uint64_t seq = txid & SEQ_MASK;
    if (seq < l->first_seq || seq - l->first_seq >= l->ntxns)
        return NONE;
    size_t g = c->base[thread - 1] + (size_t)(seq - l->first_seq);
    return c->txn[g]->id == txid ? (uint32_t)g : NONE;
}

/* The committed write of key by transaction g, or NONE. */
static uint32_t find_cwrite(const struct checker *c, uint32_t g, uint32_t key)
{
    for (uint32_t i = c->cw_first[g]; i < c->cw_first[g + 1]; i++)
        if (c->cw[i].key == key)
            return i;
    return NONE;
}

/* Whether transaction g recorded a write of key (committed or not). */
static bool wrote_key(const struct checker *c, uint32_t g, uint32_t key)
{
    for (uint32_t i = 0; i < c->txn[g]->nops; i++)
        if (c->ops[g][i].is_write && c->ops[g][i].key == key)
            return true;
    return false;
}

/* Whether transaction g recorded a read of key seeing wid. */
static bool read_key(const struct checker *c, uint32_t g, uint32_t key, uint64_t wid)
{
    for (uint32_t i = 0; i < c->txn[g]->nops; i++)
        if (!c->ops[g][i].is_write && c->ops[g][i].key == key && c->ops[g][i].wid == wid)
            return true;
    return false;
}

static const char *outcome_name(unsigned o)
{
    return o == HIST_COMMITTED ? "committed" : o == HIST_ABORTED ? "aborted" : "open";
}

/* "T2.15 (atomically, committed, 12.345-13.001 us)" into buf. */
static const char *describe(const struct checker *c, uint32_t g, char *buf, size_t size)
{
    const struct hist_txn *t = c->txn[g];
    snprintf(buf, size, "T%" PRIu64 ".%" PRIu64 " (%s, %s, %.3f-%.3f us)",
             (t->id >> HIST_SEQ_BITS) - 1, t->id & SEQ_MASK, hist_kind_name(t->kind),
             outcome_name(t->outcome), (double)(t->start - c->t0) / 1e3,
             (double)(t->end - c->t0) / 1e3);
    return buf;
}

/* "T2.15" for a txid, whether or not it is in this window. */
static const char *txid_name(uint64_t txid, char *buf, size_t size)
{
    if (txid == 0)
        snprintf(buf, size, "no value");
    else if (txid == HIST_WID_GARBAGE)
        snprintf(buf, size, "garbage bytes");
    else if (txid == HIST_PREV_UNKNOWN)
        snprintf(buf, size, "unknown");
    else
        snprintf(buf, size, "T%" PRIu64 ".%" PRIu64, (txid >> HIST_SEQ_BITS) - 1, txid & SEQ_MASK);
    return buf;
}

/* "holding T2.15", "absent after T2.15" or "never written" into buf. */
static const char *state_name(uint64_t wid, bool absent, char *buf, size_t size)
{
    char t[48];
    if (wid == 0)
        snprintf(buf, size, "never written");
    else
        snprintf(buf, size, "%s %s", absent ? "absent after" : "holding",
                 txid_name(wid, t, sizeof t));
    return buf;
}

/* Gathers every log's transactions under one global index. */
static int gather(struct checker *c)
{
    hist_recorder *r = c->r;
    c->base = xcalloc(r->nthreads, sizeof *c->base);
    if (c->base == NULL)
        return -1;
    size_t n = 0;
    for (unsigned t = 0; t < r->nthreads; t++) {
        c->base[t] = n;
        n += r->logs[t]->ntxns;
    }
    if (n >= (size_t)1 << 31) /* node ids (with time nodes) are 32 bits */
        return -1;
    c->n = n;
    c->txn = xcalloc(n, sizeof *c->txn);
    c->ops = xcalloc(n, sizeof *c->ops);
    c->in_graph = xcalloc(n, sizeof *c->in_graph);
    if (c->txn == NULL || c->ops == NULL || c->in_graph == NULL)
        return -1;
    bool first = true;
    for (unsigned t = 0; t < r->nthreads; t++) {
        const hist_log *l = r->logs[t];
        for (size_t i = 0; i < l->ntxns; i++) {
            size_t g = c->base[t] + i;
            c->txn[g] = &l->txns[i];
            c->ops[g] = &l->ops[l->txns[i].first_op];
            if (first || l->txns[i].start < c->t0)
                c->t0 = l->txns[i].start;
            first = false;
        }
    }
    return 0;
}

/* Counts, sanity checks, and the list of committed writes. */
static int collect(struct checker *c)
{
    hist_report *rep = c->rep;
    uint32_t nkeys = c->r->nkeys;
    size_t nw = 0;
    char b1[128];
    for (size_t g = 0; g < c->n; g++) {
        const struct hist_txn *t = c->txn[g];
        const struct hist_op *ops = c->ops[g];
        bool committed = t->outcome == HIST_COMMITTED;
        size_t reads = 0;
        rep->txns++;
        if (committed) {
            rep->committed++;
            if (t->kind < HIST_NKINDS)
                rep->by_kind[t->kind]++;
        } else {
            rep->aborted++;
        }
        if (t->end < t->start)
            violation(rep, HIST_V_MALFORMED, "%s ends before it starts",
                      describe(c, (uint32_t)g, b1, sizeof b1));
        for (uint32_t i = 0; i < t->nops; i++) {
            if (ops[i].key >= nkeys) {
                violation(rep, HIST_V_MALFORMED, "%s uses key %" PRIu32 " of %" PRIu32,
                          describe(c, (uint32_t)g, b1, sizeof b1), ops[i].key, nkeys);
                return 1;
            }
            if (!ops[i].is_write) {
                reads++;
                rep->absent_reads += ops[i].absent;
                continue;
            }
            if (!committed)
                continue;
            rep->deletes += ops[i].absent;
            for (uint32_t j = 0; j < i; j++)
                if (ops[j].is_write && ops[j].key == ops[i].key) {
                    violation(rep, HIST_V_MALFORMED, "%s writes x%" PRIu32 " twice",
                              describe(c, (uint32_t)g, b1, sizeof b1), ops[i].key);
                    return 1;
                }
            nw++;
        }
        rep->reads += reads;
        /* Committed transactions, and aborted attempts that read something
         * (they must have seen a consistent state too), are in the graph. */
        c->in_graph[g] = committed || reads != 0;
    }
    if (nw >= NONE)
        return -1;
    rep->writes += nw;
    c->cw = xcalloc(nw, sizeof *c->cw);
    c->cw_first = xcalloc(c->n + 1, sizeof *c->cw_first);
    if (c->cw == NULL || c->cw_first == NULL)
        return -1;
    for (size_t g = 0; g < c->n; g++) {
        c->cw_first[g] = (uint32_t)c->ncw;
        if (c->txn[g]->outcome != HIST_COMMITTED)
            continue;
        for (uint32_t i = 0; i < c->txn[g]->nops; i++) {
            const struct hist_op *o = &c->ops[g][i];
            if (o->is_write)
                c->cw[c->ncw++] = (struct cwrite){(uint32_t)g, o->key, o->prev, o->version,    0,
                                                  NONE,        0,      false,   o->absent != 0};
        }
    }
    c->cw_first[c->n] = (uint32_t)c->ncw;
    return 0;
}

struct by_version {
    uint32_t key;
    uint32_t cw;
    uint64_t version;
};

static int cmp_by_version(const void *a, const void *b)
{
    const struct by_version *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    return x->cw < y->cw ? -1 : x->cw > y->cw;
}

/*
 * Step 1: per key, the order of committed writes.  Links first (each
 * write names the write it overwrote), blind writes by version.
 */
static int order_writes(struct checker *c)
{
    hist_recorder *r = c->r;
    hist_report *rep = c->rep;
    uint32_t nkeys = r->nkeys;
    char b1[128], b2[128], b3[64];
    c->init_next = malloc(nkeys * sizeof *c->init_next);
    c->chain_off = xcalloc(nkeys + 1, sizeof *c->chain_off);
    c->chain_len = xcalloc(nkeys, sizeof *c->chain_len);
    c->chain = xcalloc(c->ncw, sizeof *c->chain);
    /* Writes with a known version, sorted by (key, version): forks, and
     * the places of blind writes. */
    struct by_version *bv = xcalloc(c->ncw, sizeof *bv);
    uint32_t *bv_off = xcalloc(nkeys + 1, sizeof *bv_off);
    /* Keys deleted in this window: their versions start again after each
     * delete, so equal versions are no fork there. */
    bool *deleted = xcalloc(nkeys, sizeof *deleted);
    if (c->init_next == NULL || c->chain_off == NULL || c->chain_len == NULL || c->chain == NULL ||
        bv == NULL || bv_off == NULL || deleted == NULL) {
        free(bv);
        free(bv_off);
        free(deleted);
        return -1;
    }
    for (uint32_t i = 0; i < c->ncw; i++)
        deleted[c->cw[i].key] |= c->cw[i].del;
    for (uint32_t k = 0; k < nkeys; k++)
        c->init_next[k] = NONE;

    /* Links. */
    for (uint32_t i = 0; i < c->ncw; i++) {
        struct cwrite *w = &c->cw[i];
        c->chain_off[w->key + 1]++;
        if (w->prev == HIST_PREV_UNKNOWN)
            continue;
        uint32_t *slot = NULL;
        if (w->prev == r->init_wid[w->key]) {
            slot = &c->init_next[w->key];
        } else {
            uint32_t g = find_txn(c, w->prev);
            uint32_t p = g == NONE ? NONE : find_cwrite(c, g, w->key);
            if (p == NONE) {
                /* Its own read of that value is reported by step 2. */
                if (!read_key(c, w->txn, w->key, w->prev))
                    violation(rep, HIST_V_NEVER_WRITTEN,
                              "%s wrote x%" PRIu32 " over %s, which never committed it",
                              describe(c, w->txn, b1, sizeof b1), w->key,
                              txid_name(w->prev, b3, sizeof b3));
                continue;
            }
            slot = &c->cw[p].next;
        }
        if (*slot != NONE) {
            violation(rep, HIST_V_LOST_UPDATE, "%s and %s both overwrote %s of x%" PRIu32,
                      describe(c, c->cw[*slot].txn, b1, sizeof b1),
                      describe(c, w->txn, b2, sizeof b2), txid_name(w->prev, b3, sizeof b3),
                      w->key);
            w->lost = true;
            continue;
        }
        *slot = i;
    }
    for (uint32_t k = 0; k < nkeys; k++)
        c->chain_off[k + 1] += c->chain_off[k];

    /* Versions: forks, and the sorted list blind writes are placed from. */
    size_t nbv = 0;
    for (uint32_t i = 0; i < c->ncw; i++)
        if (c->cw[i].version != HIST_NO_VERSION) {
            bv[nbv++] = (struct by_version){c->cw[i].key, i, c->cw[i].version};
            bv_off[c->cw[i].key + 1]++;
        }
    for (uint32_t k = 0; k < nkeys; k++)
        bv_off[k + 1] += bv_off[k];
    qsort(bv, nbv, sizeof *bv, cmp_by_version);
    for (size_t i = 1; i < nbv; i++)
        if (bv[i].key == bv[i - 1].key && bv[i].version == bv[i - 1].version && !deleted[bv[i].key])
            violation(rep, HIST_V_FORK, "%s and %s both made version %" PRIu64 " of x%" PRIu32,
                      describe(c, c->cw[bv[i - 1].cw].txn, b1, sizeof b1),
                      describe(c, c->cw[bv[i].cw].txn, b2, sizeof b2), bv[i].version, bv[i].key);

    /* Walk each key's order from its initial state. */
    for (uint32_t k = 0; k < nkeys; k++) {
        uint32_t cur = NONE, len = 0;
        uint64_t ver = r->init_version[k];
        size_t blind = bv_off[k];
        for (;;) {
            uint32_t nxt = cur == NONE ? c->init_next[k] : c->cw[cur].next;
            if (nxt == NONE) {
                /* A blind write holding the next version continues it. */
                while (blind < bv_off[k + 1] &&
                       (bv[blind].version <= ver || c->cw[bv[blind].cw].prev != HIST_PREV_UNKNOWN ||
                        c->cw[bv[blind].cw].pos != 0))
                    blind++;
                if (blind < bv_off[k + 1] && bv[blind].version == ver + 1)
                    nxt = bv[blind].cw;
            }
            if (nxt == NONE)
                break;
            struct cwrite *w = &c->cw[nxt];
            if (w->pos != 0) {
                violation(rep, HIST_V_GAP, "the order of x%" PRIu32 " loops back to %s", k,
                          describe(c, w->txn, b1, sizeof b1));
                break;
            }
            w->pos = ++len;
            c->chain[c->chain_off[k] + len - 1] = nxt;
            if (w->version != HIST_NO_VERSION && w->version != ver + 1) {
                violation(rep, HIST_V_GAP,
                          "%s made version %" PRIu64 " of x%" PRIu32
                          ", but it follows version %" PRIu64,
                          describe(c, w->txn, b1, sizeof b1), w->version, k, ver);
                ver = w->version; /* report the gap once, not every later write */
            } else {
                ver++;
            }
            if (w->del)
                ver = 0; /* absent: the key's next life starts at version 1 */
            w->made = ver;
            cur = nxt;
        }
        c->chain_len[k] = len;
        r->final_wid[k] = cur == NONE ? r->init_wid[k] : c->txn[c->cw[cur].txn]->id;
        r->final_version[k] = ver;
        r->final_absent[k] = cur == NONE ? init_is_absent(r, k) : c->cw[cur].del;
    }
    r->have_final = true;

    for (uint32_t i = 0; i < c->ncw; i++) {
        const struct cwrite *w = &c->cw[i];
        if (w->pos == 0 && !w->lost)
            violation(rep, HIST_V_GAP,
                      "%s wrote x%" PRIu32 " (over %s, version %" PRIu64
                      "), which is not in the key's order from its initial state",
                      describe(c, w->txn, b1, sizeof b1), w->key, txid_name(w->prev, b3, sizeof b3),
                      w->version);
    }
    free(bv);
    free(bv_off);
    free(deleted);
    return 0;
}

/* Step 2: every read, and the wr, rw and ww edges. */
static int check_reads(struct checker *c)
{
    hist_recorder *r = c->r;
    hist_report *rep = c->rep;
    char b1[128], b2[128], b3[64], b4[64];

    /* ww: along each key's order. */
    for (uint32_t k = 0; k < r->nkeys; k++)
        for (uint32_t i = 1; i < c->chain_len[k]; i++) {
            uint32_t a = c->cw[c->chain[c->chain_off[k] + i - 1]].txn;
            uint32_t b = c->cw[c->chain[c->chain_off[k] + i]].txn;
            if (a != b && add_edge(c, a, b, k, E_WW) != 0)
                return -1;
        }

    for (uint32_t g = 0; g < c->n; g++) {
        if (!c->in_graph[g])
            continue;
        const struct hist_txn *t = c->txn[g];
        for (uint32_t i = 0; i < t->nops; i++) {
            const struct hist_op *o = &c->ops[g][i];
            if (o->is_write)
                continue;
            uint32_t k = o->key, pos, writer = NONE;
            uint64_t made;
            if (o->wid == HIST_WID_GARBAGE) {
                violation(rep, HIST_V_NEVER_WRITTEN, "%s read garbage bytes from x%" PRIu32,
                          describe(c, g, b1, sizeof b1), k);
                continue;
            }
            if (o->wid == r->init_wid[k] && (o->wid == 0 || !o->absent == !init_is_absent(r, k))) {
                pos = 0;
                made = r->init_version[k];
            } else if (o->wid == r->init_wid[k] || (o->absent && o->wid == 0)) {
                violation(
                    rep, HIST_V_NEVER_WRITTEN, "%s found x%" PRIu32 " %s, but it was %s at first",
                    describe(c, g, b1, sizeof b1), k, state_name(o->wid, o->absent, b3, sizeof b3),
                    state_name(r->init_wid[k], init_is_absent(r, k), b4, sizeof b4));
                continue;
            } else {
                uint32_t w = o->wid == 0 ? NONE : find_txn(c, o->wid);
                if (w == g)
                    continue; /* its own write: nothing to check, no edge */
                uint32_t p = w == NONE ? NONE : find_cwrite(c, w, k);
                if (p == NONE) {
                    if (w != NONE && c->txn[w]->outcome != HIST_COMMITTED && wrote_key(c, w, k))
                        violation(rep, HIST_V_DIRTY_READ, "%s read x%" PRIu32 " as written by %s",
                                  describe(c, g, b1, sizeof b1), k, describe(c, w, b2, sizeof b2));
                    else
                        violation(rep, HIST_V_NEVER_WRITTEN,
                                  "%s read x%" PRIu32
                                  " as %s, which no transaction of this window committed",
                                  describe(c, g, b1, sizeof b1), k,
                                  txid_name(o->wid, b3, sizeof b3));
                    continue;
                }
                if (c->cw[p].del != (o->absent != 0)) {
                    violation(rep, HIST_V_NEVER_WRITTEN, "%s found x%" PRIu32 " %s %s, which %s it",
                              describe(c, g, b1, sizeof b1), k,
                              o->absent ? "absent after" : "holding a value of",
                              describe(c, w, b2, sizeof b2),
                              c->cw[p].del ? "deleted" : "wrote a value to");
                    continue;
                }
                if (c->cw[p].pos == 0)
                    continue; /* an unplaced write: reported by step 1 */
                if (o->prev != HIST_PREV_UNKNOWN && c->cw[p].prev != HIST_PREV_UNKNOWN &&
                    o->prev != c->cw[p].prev) {
                    violation(rep, HIST_V_NEVER_WRITTEN,
                              "%s read x%" PRIu32 " as %s over %s, but that write was over %s",
                              describe(c, g, b1, sizeof b1), k, txid_name(o->wid, b2, sizeof b2),
                              txid_name(o->prev, b3, sizeof b3),
                              txid_name(c->cw[p].prev, b4, sizeof b4));
                    continue;
                }
                pos = c->cw[p].pos;
                made = c->cw[p].made;
                writer = w;
            }
            if (o->version != HIST_NO_VERSION && o->version != made)
                violation(rep, HIST_V_GAP,
                          "%s read x%" PRIu32 " at version %" PRIu64
                          ", but the value it saw is version %" PRIu64,
                          describe(c, g, b1, sizeof b1), k, o->version, made);
            if (writer != NONE && add_edge(c, writer, g, k, E_WR) != 0)
                return -1;
            if (pos < c->chain_len[k]) {
                uint32_t next = c->cw[c->chain[c->chain_off[k] + pos]].txn;
                if (next == g)
                    continue;
                if (c->txn[next]->end < t->start && bound_by_real_time(c->r, t))
                    violation(rep, HIST_V_STALE_READ,
                              "%s read x%" PRIu32 " as %s, but %s had replaced it before",
                              describe(c, g, b1, sizeof b1), k, txid_name(o->wid, b3, sizeof b3),
                              describe(c, next, b2, sizeof b2));
                if (add_edge(c, g, next, k, E_RW) != 0)
                    return -1;
            }
        }
    }
    return 0;
}

struct by_end {
    int64_t end;
    uint32_t node;
};

static int cmp_by_end(const void *a, const void *b)
{
    const struct by_end *x = a, *y = b;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->node < y->node ? -1 : x->node > y->node;
}

/*
 * Step 4's edges: a time node per graph member at its end, chained in end
 * order; T -> its time node; the last time node ended before T started
 * -> T.  Time node r is node n + r.
 */
static int add_realtime_edges(struct checker *c, size_t *nodes)
{
    size_t m = 0;
    for (size_t g = 0; g < c->n; g++)
        m += c->in_graph[g];
    struct by_end *order = xcalloc(m, sizeof *order);
    if (order == NULL)
        return -1;
    m = 0;
    for (size_t g = 0; g < c->n; g++)
        if (c->in_graph[g])
            order[m++] = (struct by_end){c->txn[g]->end, (uint32_t)g};
    qsort(order, m, sizeof *order, cmp_by_end);
    uint32_t aux = (uint32_t)c->n;
    int rc = 0;
    for (size_t i = 0; i < m && rc == 0; i++) {
        rc = add_edge(c, order[i].node, aux + (uint32_t)i, 0, E_RT);
        if (rc == 0 && i + 1 < m)
            rc = add_edge(c, aux + (uint32_t)i, aux + (uint32_t)i + 1, 0, E_RT);
    }
    for (size_t g = 0; g < c->n && rc == 0; g++) {
        if (!c->in_graph[g] || !bound_by_real_time(c->r, c->txn[g]))
            continue; /* (an attempt that may have begun earlier than it did) */
        /* The number of ends strictly before g's start. */
        int64_t start = c->txn[g]->start;
        size_t lo = 0, hi = m;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (order[mid].end < start)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo > 0)
            rc = add_edge(c, aux + (uint32_t)(lo - 1), (uint32_t)g, 0, E_RT);
    }
    free(order);
    *nodes = c->n + m;
    return rc;
}

/*
 * Reports the cycle of edges cyc[0..n) (cyc[s0] leaves a transaction) as
 * violation v: "T -wr x3-> T' -rt-> T'' -rw x1-> (back)", with runs of
 * time nodes folded into one "rt" step.
 */
static void print_cycle(struct checker *c, const uint32_t *cyc, size_t n, size_t s0,
                        enum hist_violation v)
{
    static const char *const names[] = {"ww", "wr", "rw", "rt"};
    char buf[3072], b1[128];
    size_t len = 0, txns = 0;
    uint32_t first = c->edges[cyc[s0]].from;
    int w = snprintf(buf, sizeof buf, "%s", describe(c, first, b1, sizeof b1));
    len = w > 0 ? (size_t)w : 0;
    for (size_t i = 0; i < n; i++) {
        const struct edge *e = &c->edges[cyc[(s0 + i) % n]];
        if (e->to >= c->n)
            continue; /* into a time node: the step ends further on */
        txns++;
        char lab[32];
        if (e->type == E_RT)
            snprintf(lab, sizeof lab, "rt");
        else
            snprintf(lab, sizeof lab, "%s x%" PRIu32, names[e->type], e->key);
        if (txns > CYCLE_PRINT_MAX && e->to != first) {
            if (txns == CYCLE_PRINT_MAX + 1 && len + 8 < sizeof buf)
                len += (size_t)snprintf(buf + len, sizeof buf - len, " -> ...");
            continue;
        }
        if (len + 1 < sizeof buf) {
            w = snprintf(buf + len, sizeof buf - len, " -%s-> %s", lab,
                         e->to == first ? "(back)" : describe(c, e->to, b1, sizeof b1));
            if (w > 0)
                len = len + (size_t)w < sizeof buf ? len + (size_t)w : sizeof buf - 1;
        }
    }
    violation(c->rep, v, "%zu transactions in a cycle: %s", txns, buf);
}

/*
 * Kahn's algorithm over the first m edges.  Returns 0 when acyclic, 1 with
 * the shortest cycle through a node on a cycle described in *rep as
 * violation v, -1 out of memory.
 */
static int find_cycle(struct checker *c, size_t nodes, size_t m, enum hist_violation v)
{
    uint32_t *off = xcalloc(nodes + 1, sizeof *off);
    uint32_t *adj = xcalloc(m, sizeof *adj); /* edge indices, by source */
    uint32_t *indeg = xcalloc(nodes, sizeof *indeg);
    uint32_t *queue = xcalloc(nodes, sizeof *queue);
    uint32_t *via = NULL;
    int rc = -1;
    if (off == NULL || adj == NULL || indeg == NULL || queue == NULL)
        goto out;
    for (size_t i = 0; i < m; i++) {
        off[c->edges[i].from + 1]++;
        indeg[c->edges[i].to]++;
    }
    for (size_t x = 0; x < nodes; x++)
        off[x + 1] += off[x];
    {
        /* Fill by source, using queue[] as the cursors. */
        for (size_t x = 0; x < nodes; x++)
            queue[x] = off[x];
        for (size_t i = 0; i < m; i++)
            adj[queue[c->edges[i].from]++] = (uint32_t)i;
    }
    size_t head = 0, tail = 0;
    for (size_t x = 0; x < nodes; x++)
        if (indeg[x] == 0)
            queue[tail++] = (uint32_t)x;
    while (head < tail) {
        uint32_t x = queue[head++];
        for (uint32_t j = off[x]; j < off[x + 1]; j++)
            if (--indeg[c->edges[adj[j]].to] == 0)
                queue[tail++] = c->edges[adj[j]].to;
    }
    if (tail == nodes) {
        rc = 0;
        goto out;
    }

    /*
     * Every node left has a predecessor left (its in-degree never reached
     * 0), so walking backwards from one must come round to a node seen
     * before: that node is on a cycle.  queue[] now marks the walk.
     */
    via = malloc(nodes * sizeof *via);
    if (via == NULL)
        goto out;
    /* Predecessor lookup needs edges by target: reuse adj, by target now. */
    memset(off, 0, (nodes + 1) * sizeof *off);
    for (size_t i = 0; i < m; i++)
        off[c->edges[i].to + 1]++;
    for (size_t x = 0; x < nodes; x++)
        off[x + 1] += off[x];
    for (size_t x = 0; x < nodes; x++)
        via[x] = off[x];
    for (size_t i = 0; i < m; i++)
        adj[via[c->edges[i].to]++] = (uint32_t)i;
    for (size_t x = 0; x < nodes; x++)
        queue[x] = 0;
    uint32_t x = NONE;
    for (size_t y = 0; y < nodes && x == NONE; y++)
        if (indeg[y] != 0)
            x = (uint32_t)y;
    while (queue[x] == 0) {
        queue[x] = 1;
        uint32_t pred = NONE;
        for (uint32_t j = off[x]; j < off[x + 1] && pred == NONE; j++)
            if (indeg[c->edges[adj[j]].from] != 0)
                pred = c->edges[adj[j]].from;
        if (pred == NONE)
            break; /* cannot happen: see above */
        x = pred;
    }

    /* The shortest cycle through x: BFS backwards from x over nodes left,
     * until x is reached again; via[] holds each node's edge towards x. */
    for (size_t y = 0; y < nodes; y++)
        via[y] = NONE;
    head = tail = 0;
    queue[tail++] = x;
    bool found = false;
    while (head < tail && !found) {
        uint32_t y = queue[head++];
        for (uint32_t j = off[y]; j < off[y + 1]; j++) {
            uint32_t e = adj[j], p = c->edges[e].from;
            if (indeg[p] == 0 || via[p] != NONE)
                continue;
            via[p] = e;
            if (p == x) {
                found = true;
                break;
            }
            queue[tail++] = p;
        }
    }

    if (!found) { /* cannot happen: x is on a cycle */
        violation(c->rep, v, "a cycle (not traced)");
        rc = 1;
        goto out;
    }
    /* The cycle's edges in order, from x round to x; queue[] holds them. */
    size_t ncyc = 0;
    uint32_t y = x;
    do {
        queue[ncyc++] = via[y];
        y = c->edges[via[y]].to;
    } while (y != x && ncyc < nodes);
    /* Start at a transaction: x may be a time node (they only chain, so
     * every cycle has a transaction). */
    size_t s0 = 0;
    while (s0 < ncyc && c->edges[queue[s0]].from >= c->n)
        s0++;
    if (s0 == ncyc)
        s0 = 0;
    print_cycle(c, queue, ncyc, s0, v);
    rc = 1;
out:
    free(off);
    free(adj);
    free(indeg);
    free(queue);
    free(via);
    return rc;
}

long hist_check(hist_recorder *r, hist_report *rep)
{
    struct checker c;
    memset(&c, 0, sizeof c);
    c.r = r;
    c.rep = rep;
    uint64_t before = rep->violations;
    int rc = gather(&c);
    if (rc == 0)
        rc = collect(&c);
    if (rc == 0)
        rc = order_writes(&c);
    if (rc == 0)
        rc = check_reads(&c);
    size_t dep = c.nedges, nodes = c.n;
    if (rc == 0)
        rc = find_cycle(&c, nodes, dep, HIST_V_CYCLE);
    /* Real time only matters once the history is serializable at all. */
    if (rc == 0)
        rc = add_realtime_edges(&c, &nodes);
    if (rc == 0)
        rc = find_cycle(&c, nodes, c.nedges, HIST_V_REALTIME);
    rep->edges += c.nedges;
    checker_free(&c);
    if (rc < 0)
        return -1;
    return (long)(rep->violations - before);
}

/* Whether key's final state is (wid, version, absent or not). */
static bool verify_final(hist_recorder *r, uint32_t key, uint64_t wid, uint64_t version,
                         bool absent, hist_report *rep)
{
    if (key >= r->nkeys || !r->have_final)
        return false;
    if (r->final_wid[key] == wid && r->final_version[key] == version &&
        (wid == 0 || r->final_absent[key] == absent))
        return true;
    char b1[64], b2[64];
    violation(rep, HIST_V_FINAL,
              "x%" PRIu32 " holds %s%s at version %" PRIu64
              ", but its last committed write is %s%s at version %" PRIu64,
              key, absent ? "absent after " : "", txid_name(wid, b1, sizeof b1), version,
              r->final_absent[key] && r->final_wid[key] != 0 ? "a delete by " : "",
              txid_name(r->final_wid[key], b2, sizeof b2), r->final_version[key]);
    return false;
}

bool hist_verify_final(hist_recorder *r, uint32_t key, uint64_t wid, uint64_t version,
                       hist_report *rep)
{
    return verify_final(r, key, wid, version, wid == 0, rep);
}

bool hist_verify_final_absent(hist_recorder *r, uint32_t key, uint64_t deleter, uint64_t version,
                              hist_report *rep)
{
    return verify_final(r, key, deleter, version, true, rep);
}
