/* SPDX-License-Identifier: MIT */
/*
 * history.h -- recording transaction histories and checking that they are
 * strictly serializable (see history.c for the design), plus the workloads
 * that produce such histories from a real store (workload.c).
 *
 * Used by tests/check_history.c (hand-made histories and short real runs)
 * and tests/history/stress_history.c (long runs, `make stress`).  Nothing
 * here depends on Check, so the stress program links without it.
 */
#ifndef AXSTM_HISTORY_H
#define AXSTM_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "axstm.h"

/* ------------------------------------------------------------------ */
/* Transaction ids and self-describing values                         */
/* ------------------------------------------------------------------ */

/*
 * A transaction id (txid) is 48 bits: (thread + 1) << 36 | sequence number.
 * Every recorded attempt gets its own, so a value names the attempt that
 * wrote it.  0 is never a txid: it stands for "no value" (a key that was
 * never written).
 *
 * Deletes are writes too: a delete writes "absent", and the absent state
 * it leaves is named by the txid of the delete, as a value is named by its
 * writer.  A read that finds a key absent must say which delete it saw
 * (the workloads learn it from a companion key that every delete writes,
 * see workload.c); absent with txid 0 is the state of a key never written.
 * Versions start again with each life of a key: its absent state reads as
 * version 0, and the write that brings it back makes version 1.
 */
#define HIST_THREAD_BITS 12
#define HIST_SEQ_BITS 36
#define HIST_MAX_THREADS ((1u << HIST_THREAD_BITS) - 2) /* the last is reserved */
#define HIST_MAX_KEYS 65536u                            /* key index: 16 bits */
#define HIST_TXID_MASK ((UINT64_C(1) << 48) - 1)

/* The "previous write" of a blind write: unknown, order it by version. */
#define HIST_PREV_UNKNOWN HIST_TXID_MASK
/* What a read records when the bytes it saw are no value this format makes. */
#define HIST_WID_GARBAGE UINT64_MAX
/* A version that the recording thread could not know (axstm_atomically). */
#define HIST_NO_VERSION UINT64_MAX

/* Every value written by the workloads is this many bytes. */
#define HIST_VALUE_SIZE 16

/* Fills out[] with the value written by txid to key, having read prev. */
void hist_value_encode(unsigned char out[HIST_VALUE_SIZE], uint64_t txid, uint32_t key,
                       uint64_t prev);

/*
 * Decodes bytes read from key: returns the txid that wrote them and sets
 * *prev to the write it overwrote.  NULL data (no value) gives 0 and *prev
 * HIST_PREV_UNKNOWN.  Bytes that are not a value for this key (wrong size,
 * tag or key) give HIST_WID_GARBAGE.
 */
uint64_t hist_value_decode(const void *data, size_t len, uint32_t key, uint64_t *prev);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t hist_now(void);

/* ------------------------------------------------------------------ */
/* Recording                                                          */
/* ------------------------------------------------------------------ */

enum hist_kind {
    HIST_USING,     /* axstm_using + collection commit (read-modify-write) */
    HIST_USEVAR,    /* axstm_usevar + value commit (one key) */
    HIST_SNAPSHOT,  /* axstm_using, read only, never committed */
    HIST_ATOMIC,    /* axstm_atomically, read-modify-write */
    HIST_ATOMIC_RO, /* axstm_atomically, read only */
    HIST_HANDLES,   /* kept usevar handles + axstm_values_commit */
    HIST_NKINDS
};

enum hist_outcome { HIST_OPEN, HIST_COMMITTED, HIST_ABORTED };

/* One read or write of a transaction. */
struct hist_op {
    uint64_t wid;     /* read: txid seen (0: no value); write: unused */
    uint64_t prev;    /* read: the prev stored in the value; write: the
                       * txid it overwrote (HIST_PREV_UNKNOWN: blind) */
    uint64_t version; /* version seen / made, or HIST_NO_VERSION */
    uint32_t key;
    uint16_t is_write;
    uint16_t absent; /* write: a delete; read: found the key absent, left
                      * by the delete wid (0: never written) */
};

struct hist_txn {
    uint64_t id; /* txid */
    int64_t start, end;
    uint32_t first_op; /* index into its log's ops */
    uint16_t nops;
    uint8_t kind;    /* enum hist_kind */
    uint8_t outcome; /* enum hist_outcome */
};

/*
 * One thread's log: append-only, preallocated, written by that thread only
 * (nothing shared is written while recording).  Read by the checker after
 * the recording threads have been joined.
 */
typedef struct hist_log {
    struct hist_txn *txns;
    struct hist_op *ops;
    size_t ntxns, cap_txns;
    size_t nops, cap_ops;
    uint64_t first_seq; /* sequence number of txns[0] */
    uint64_t next_seq;
    unsigned thread;
    bool open; /* txns[ntxns - 1] has begun and not ended */
} hist_log;

typedef struct hist_recorder hist_recorder;

/*
 * A recorder for nthreads threads over keys 0..nkeys-1, each thread's log
 * holding up to txns_per_thread transactions and ops_per_thread reads and
 * writes.  Every key starts with no value at version 0.  NULL when out of
 * memory or the sizes are out of range.
 */
hist_recorder *hist_recorder_new(unsigned nthreads, uint32_t nkeys, size_t txns_per_thread,
                                 size_t ops_per_thread);
void hist_recorder_free(hist_recorder *r);
/* From now on, aborted attempts need only be consistent with a serial
 * order, not with real time: an attempt may have read a value another
 * transaction had replaced before it began (a store opened with
 * first_read=cache).  Committed transactions are held to real time still. */
void hist_recorder_aborts_any_time(hist_recorder *r);
hist_log *hist_recorder_log(hist_recorder *r, unsigned thread);
unsigned hist_recorder_threads(const hist_recorder *r);
uint32_t hist_recorder_keys(const hist_recorder *r);

/* Sets what key holds before the first transaction of the history. */
void hist_recorder_set_initial(hist_recorder *r, uint32_t key, uint64_t wid, uint64_t version);
/* Or: key is absent at first, deleted by wid (0: never written). */
void hist_recorder_set_initial_absent(hist_recorder *r, uint32_t key, uint64_t wid);

/*
 * Starts a new window: empties every log and makes the key states the last
 * hist_check found the initial ones.  Transaction ids keep counting, so a
 * value left from an earlier window is never mistaken for a new one.
 */
void hist_recorder_next_window(hist_recorder *r);

/* True when the log has room for one more transaction of up to nops ops. */
bool hist_log_room(const hist_log *l, size_t nops);

/* Opens a transaction (the log must have room); returns its txid. */
uint64_t hist_begin(hist_log *l, enum hist_kind kind, int64_t start);
/* Records a read of key: the txid and prev decoded from the bytes seen. */
void hist_read(hist_log *l, uint32_t key, uint64_t wid, uint64_t prev, uint64_t version);
/* Records a write of key (by the open transaction) over prev. */
void hist_write(hist_log *l, uint32_t key, uint64_t prev, uint64_t version);
/* Records a read that found key absent, as left by the delete `deleter`
 * (0: never written); version as seen (0), or HIST_NO_VERSION. */
void hist_read_absent(hist_log *l, uint32_t key, uint64_t deleter, uint64_t version);
/* Records a delete of key (by the open transaction) over prev; version is
 * the one the handle holds after the commit (prev's + 1), or unknown. */
void hist_delete(hist_log *l, uint32_t key, uint64_t prev, uint64_t version);
/* Closes the open transaction. */
void hist_end(hist_log *l, enum hist_outcome outcome, int64_t end);
/* The open transaction, or NULL. */
struct hist_txn *hist_open_txn(hist_log *l);

/* ------------------------------------------------------------------ */
/* Checking                                                           */
/* ------------------------------------------------------------------ */

enum hist_violation {
    HIST_V_CYCLE,         /* dependency cycle: not serializable */
    HIST_V_REALTIME,      /* serializable, but only against real time */
    HIST_V_DIRTY_READ,    /* read of a write by an aborted attempt */
    HIST_V_NEVER_WRITTEN, /* read of a value no transaction wrote */
    HIST_V_STALE_READ,    /* read of a value overwritten before it started */
    HIST_V_LOST_UPDATE,   /* two committed writes over the same write */
    HIST_V_FORK,          /* two committed writes made the same version */
    HIST_V_GAP,           /* versions out of step with the write order */
    HIST_V_FINAL,         /* the store's final state is not the last write */
    HIST_V_MALFORMED,     /* the history itself is inconsistent */
    HIST_V_NKINDS
};

#define HIST_REPORT_TEXT 8192

/* What hist_check found; it accumulates, so one report can span windows. */
typedef struct hist_report {
    uint64_t txns, committed, aborted; /* records checked */
    uint64_t by_kind[HIST_NKINDS];     /* committed, per kind */
    uint64_t reads, writes, edges;
    uint64_t deletes;      /* committed writes that were deletes */
    uint64_t absent_reads; /* reads that found a key absent */
    uint64_t violations;
    uint64_t count[HIST_V_NKINDS];
    unsigned kinds; /* bit (1u << enum hist_violation) for each kind found */
    size_t len;
    char text[HIST_REPORT_TEXT]; /* the first few descriptions */
} hist_report;

void hist_report_init(hist_report *rep);
const char *hist_violation_name(enum hist_violation v);
const char *hist_kind_name(enum hist_kind k);

/*
 * Checks the history in r (all threads joined).  Adds what it found to
 * *rep and returns the number of violations found in this call, or -1
 * when out of memory.  Remembers each key's last committed write for
 * hist_verify_final and hist_recorder_next_window.
 */
long hist_check(hist_recorder *r, hist_report *rep);

/*
 * Compares what the store holds for key (txid decoded from its bytes and
 * version) with the last write hist_check placed; a mismatch is a
 * HIST_V_FINAL violation added to *rep.  Returns true when they agree.
 * wid 0 (no value) agrees with a key never written.
 */
bool hist_verify_final(hist_recorder *r, uint32_t key, uint64_t wid, uint64_t version,
                       hist_report *rep);

/* The same for a key the store does not hold (or holds with no value, at
 * version), which the delete `deleter` left absent (0: never written). */
bool hist_verify_final_absent(hist_recorder *r, uint32_t key, uint64_t deleter, uint64_t version,
                              hist_report *rep);

/* Prints the report's totals and text. */
void hist_report_print(const hist_report *rep, FILE *out);

/* ------------------------------------------------------------------ */
/* Workloads against a real store (workload.c)                        */
/* ------------------------------------------------------------------ */

struct hist_run_config {
    unsigned threads; /* workers: threads, or processes (below) */
    uint32_t nkeys;
    double seconds;         /* of running; checking comes on top */
    size_t txns_per_thread; /* log size: a window ends when one fills */
    FILE *progress;         /* a line per window, or NULL */
    const char *address;    /* of the store (axstm_store_open); NULL: a new
                             * in-process store */
    bool processes;         /* workers are forked processes, each opening
                             * its own store from address (required) */
    bool aborts_any_time;   /* see hist_recorder_aborts_any_time */
};

struct hist_run_result {
    uint64_t windows;
    uint64_t busy;        /* AXSTM_BUSY_RETRY answers, retried */
    double seconds;       /* in all, from start to end */
    double check_seconds; /* of them, checking */
    hist_report report;
};

/*
 * Runs the mixed workload (using/commit, usevar/commit, snapshots,
 * axstm_atomically read-modify-write and read-only; deletes with
 * axstm_value_delete and axstm_txn_delete, and keys created again) with
 * cfg->threads threads on cfg->nkeys keys (and as many companion keys, see
 * workload.c) of a new store for cfg->seconds (of running:
 * the clock stops while a window is checked), checking the history window
 * by window.  Returns the number of violations (0: the
 * library behaved), or -1 when the run itself could not be made (out of
 * memory, a thread could not start, an unexpected error code: described
 * in res->report.text).
 */
long hist_run(const struct hist_run_config *cfg, struct hist_run_result *res);

#endif
