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

#include <stddef.h>

#include "address.h"
#include "axstm.h"

struct axstm__redis;

#ifdef AXSTM_HAVE_HIREDIS

/* Connects to the server of a (a redis address), checks it answers and
 * loads the scripts.  *out is owned by the caller (axstm__redis_close). */
int axstm__redis_open(const struct axstm__address *a, struct axstm__redis **out);

/* Closes every connection.  Keys stay in the server. */
void axstm__redis_close(struct axstm__redis *r);

/*
 * Reads values[0..n) (distinct keys; key and keylen set) as one snapshot,
 * creating the missing keys (version 0, no value) as axstm_usevar does:
 * each value's version, incarnation and value are replaced.  On failure
 * nothing changes (a key created before a failure stays created only if
 * the server ran the script: as in-process, creating is not undone).
 */
int axstm__redis_checkout(struct axstm__redis *r, axstm_value *values, size_t n);

/*
 * Commits values[0..n) under Axon's rule, all or nothing: AXSTM_OK (each
 * version and incarnation updated), AXSTM_CONCURRENT_UPDATE (nothing
 * written, values unchanged), or a code of the kind above.
 */
int axstm__redis_commit(struct axstm__redis *r, axstm_value *values, size_t n);

/* axstm_store_foreach and axstm_store_stats on the server's keys. */
int axstm__redis_foreach(struct axstm__redis *r, axstm_visit_fn visit, void *arg);
int axstm__redis_stats(struct axstm__redis *r, axstm_stats *out);

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

#endif

#endif
