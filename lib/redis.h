/* SPDX-License-Identifier: MIT */
/*
 * redis.h -- a store kept in a Redis server (redis.c): the calls the
 * public functions make when their store is remote.
 *
 * Handles work the same on both kinds of store: a handle holds its keys'
 * names and, per key, the version and incarnation it checked out and the
 * value it will commit (struct axstm__item with no entry).  Each call here
 * is one round trip to the server, running one script (redis_scripts.h).
 *
 * Codes, beyond each call's own: AXSTM_EIO (no server, refused, timed out,
 * an answer that makes no sense, foreign data under the prefix), with
 * nothing changed; AXSTM_EINDOUBT (a commit was sent and the connection
 * was lost before its answer: it took effect entirely or not at all);
 * AXSTM_BUSY_RETRY (the server is loading its data, or busy running a
 * script); AXSTM_ENOMEM (here, or the server out of memory: nothing
 * written).  No call waits longer than the address's timeout_ms for the
 * server, and none lets SIGPIPE reach the process.
 */
#ifndef AXSTM_REDIS_H
#define AXSTM_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "address.h"
#include "axstm.h"
#include "blob.h"

struct axstm__redis;

/* A key a transaction read from a Redis store (redis_txn.c): its version
 * and incarnation then, or that it was absent. */
struct axstm__remote_read {
    const char *key;
    size_t keylen;
    uint64_t version, born;
    bool present;
};

/* A key a transaction writes: its value, or AXSTM__VAL_DELETE. */
struct axstm__remote_write {
    const char *key;
    size_t keylen;
    struct axstm__val val;
};

/* A registration for the names of keys whose commits wake it (watches and
 * waiting transactions; redis_listen.c). */
struct axstm__listener;

/*
 * A test hook: the next commit (of any store) loses its answer, as if its
 * connection died at that moment: AXSTM__REDIS_ANSWER_LOST after the
 * server ran it, AXSTM__REDIS_NEVER_RUN with the command sent but never
 * run.  The commit then learns what happened from the commit record.
 */
enum { AXSTM__REDIS_ANSWER_KEPT, AXSTM__REDIS_ANSWER_LOST, AXSTM__REDIS_NEVER_RUN };
extern _Atomic int axstm__redis_lose_answer;

#ifdef AXSTM_HAVE_HIREDIS

/* Connects to the server of a (a redis address), checks it answers and
 * loads the scripts.  *out is owned by the caller (axstm__redis_close). */
int axstm__redis_open(const struct axstm__address *a, struct axstm__redis **out);

/* Closes every connection.  Keys stay in the server. */
void axstm__redis_close(struct axstm__redis *r);

/*
 * Reads *values[0..n) (distinct keys; key and keylen set) as one snapshot,
 * creating the missing keys (version 0, no value) as axstm_usevar does:
 * each value's version, incarnation and value are replaced.  On failure
 * nothing changes (a key created before a failure stays created only if
 * the server ran the script: as in-process, creating is not undone).
 */
int axstm__redis_checkout(struct axstm__redis *r, axstm_value *const *values, size_t n);

/*
 * Commits *values[0..n) (distinct keys) under Axon's rule, all or nothing: AXSTM_OK (each
 * version and incarnation updated), AXSTM_CONCURRENT_UPDATE (nothing
 * written, values unchanged), or a code of the kind above.
 */
int axstm__redis_commit(struct axstm__redis *r, axstm_value *const *values, size_t n);


/* axstm_store_foreach and axstm_store_stats on the server's keys. */
int axstm__redis_foreach(struct axstm__redis *r, axstm_visit_fn visit, void *arg);
int axstm__redis_stats(struct axstm__redis *r, axstm_stats *out);

/* A transaction attempt's commit clock (redis_scripts.h, READ): the
 * store's commit count at a moment when every key the attempt has read
 * was as it read it; kept once the attempt has read a few keys. */
struct axstm__remote_clock {
    bool known;
    uint64_t at;
};

/*
 * A transaction's read.  Reads targets[0..ntargets) (key and keylen set;
 * each target's present, version and born, and vals[], owned by the
 * caller on AXSTM_OK; no value: meta 0) consistently with reads[0..n), as
 * of a moment inside the call, in one round trip.  Without a clock, the
 * server checks that every key of reads[0..n) is still as it was read
 * (AXSTM_CONCURRENT_UPDATE if not), and sets *clock once there are a few
 * reads.  With one, that check is needed only when a target changed
 * since the clock (and then costs a second round trip), and moves *clock
 * to now.  Without targets: only the check.  Creates nothing.
 */
int axstm__redis_read(struct axstm__redis *r, const struct axstm__remote_read *reads, size_t n,
                      struct axstm__remote_read *targets, struct axstm__val *vals, size_t ntargets,
                      struct axstm__remote_clock *clock);

/*
 * A transaction's commit: if every key of reads[0..nreads) is still as it
 * was read, writes writes[0..nwrites) (distinct keys) all at once and
 * publishes their names; else AXSTM_CONCURRENT_UPDATE, nothing written;
 * AXSTM_BUSY_RETRY when a key written is held by another run (token: this
 * run's, or NULL).
 */
int axstm__redis_txn_commit(struct axstm__redis *r, const char *token,
                            const struct axstm__remote_read *reads, size_t nreads,
                            const struct axstm__remote_write *writes, size_t nwrites);

/*
 * Priority for a transaction run that keeps losing, named by token: for
 * the timeout, commits by anyone else that write one of names[0..n) answer
 * AXSTM_BUSY_RETRY without running (axstm__redis_txn_commit with this
 * token is not stopped).  *since: when the run first asked for a hold (0
 * the first time; the server's clock, set on return); a run that asked
 * earlier takes a hold over, so runs get their keys in the order they
 * first asked.  *held is false when a run that asked as early or earlier
 * holds one of them.  _release ends it early (best effort: it also ends by
 * itself).
 */
int axstm__redis_hold(struct axstm__redis *r, const char *token, const char *const names[],
                      const size_t lens[], size_t n, uint64_t *since, bool *held);
void axstm__redis_release(struct axstm__redis *r, const char *token, const char *const names[],
                          const size_t lens[], size_t n);

/* Between redis.c and redis_listen.c: the subscriber's state, made and
 * stopped with the store; a new connection subscribed to the store's
 * change channel, which then waits without a timeout. */
struct axstm__listen;
struct redisContext;
int axstm__listen_create(struct axstm__listen **out);
void axstm__listen_stop(struct axstm__listen *t);
struct axstm__listen *axstm__redis_listen_of(struct axstm__redis *r);
int axstm__redis_timeout_ms(const struct axstm__redis *r);
/* The store's client name, the first part of its connections' names. */
const char *axstm__redis_client(const struct axstm__redis *r);
int axstm__redis_subscribe(struct axstm__redis *r, struct redisContext **out);
/* What this process last learnt of the store's keys (redis_cache.h), or
 * NULL unless the store was opened with first_read=cache (every cache call
 * takes NULL as "knows nothing"). */
struct axstm__rcache *axstm__redis_cache(struct axstm__redis *r);

/*
 * Listeners (redis_listen.c).  A listener holds copies of key names; it
 * fires when a commit by any client publishes one of them, and also each
 * time the store's subscriber connection is made again (what was
 * published while it was away is lost, so everyone must look again).  A
 * listener with an eventfd writes to it when it fires.
 */
int axstm__listener_new(const char *const keys[], const size_t lens[], size_t n, int fd,
                        struct axstm__listener **out);
void axstm__listener_free(struct axstm__listener *l);
/* Links l on r's subscriber (starting it) and waits until the subscriber
 * has its subscription, so that no commit after this returns is missed:
 * AXSTM_EIO when that takes longer than the timeout. */
int axstm__listen_add(struct axstm__redis *r, struct axstm__listener *l);
void axstm__listen_remove(struct axstm__redis *r, struct axstm__listener *l);
/* Fires this process's listeners of keys[0..n) at once: a commit of ours
 * wakes them before it returns, as in process (the subscriber will fire
 * them again when the change message comes round, which is harmless). */
void axstm__listen_fire_keys(struct axstm__redis *r, const char *const keys[], const size_t lens[],
                             size_t n);
/* Fires l now (a change found by the caller). */
void axstm__listen_fire(struct axstm__redis *r, struct axstm__listener *l);
/* Waits until l fires (true) or *deadline passes (NULL: none; false). */
bool axstm__listen_wait(struct axstm__redis *r, struct axstm__listener *l,
                        const struct timespec *deadline);
/* Drains l's eventfd and clears its fired state (a watch re-armed). */
void axstm__listen_rearm(struct axstm__redis *r, struct axstm__listener *l);

#else

/* Built without hiredis: no address opens a Redis store, so no store is
 * remote and nothing else here is ever called. */
static inline int axstm__redis_open(const struct axstm__address *a, struct axstm__redis **out)
{
    (void)a;
    (void)out;
    return AXSTM_EINVAL;
}

static inline void axstm__redis_close(struct axstm__redis *r)
{
    (void)r;
}

#define AXSTM__NO_REDIS_(r) ((void)(r), AXSTM_EINVAL)
#define axstm__redis_checkout(r, values, n) ((void)(values), (void)(n), AXSTM__NO_REDIS_(r))
#define axstm__redis_commit(r, values, n) ((void)(values), (void)(n), AXSTM__NO_REDIS_(r))
#define axstm__redis_foreach(r, visit, arg) ((void)(visit), (void)(arg), AXSTM__NO_REDIS_(r))
#define axstm__redis_stats(r, out) ((void)(out), AXSTM__NO_REDIS_(r))
#define axstm__listener_new(keys, lens, n, fd, out) \
    ((void)(keys), (void)(lens), (void)(n), (void)(fd), (void)(out), AXSTM_EINVAL)
#define axstm__listener_free(l) ((void)(l))
#define axstm__listen_add(r, l) ((void)(l), AXSTM__NO_REDIS_(r))
#define axstm__listen_remove(r, l) ((void)(r), (void)(l))
#define axstm__listen_fire(r, l) ((void)(r), (void)(l))
#define axstm__listen_rearm(r, l) ((void)(r), (void)(l))

#endif

#endif
