/* SPDX-License-Identifier: MIT */
/*
 * redis_cache.h -- what this process last learnt of keys in a Redis store,
 * so that a transaction's first read costs no round trip (redis_txn.c).
 *
 * An entry says "key K had version V, incarnation B and this value".  A
 * key has one value at any (version, incarnation): every write bumps the
 * version, every creation takes a new incarnation.  So an entry is never
 * wrong, only perhaps old, and whoever uses one must have the server check
 * it (every read after it and every commit do).  Nothing here is needed
 * for correctness: a miss, a skipped update or an entry dropped at random
 * costs a round trip, never a wrong answer.
 *
 * Bounded: a fixed number of slots, each holding one key (a key takes the
 * slot its hash names, putting out the one there), only small keys and
 * values.  No call waits: a slot's lock is only ever tried, and a busy one
 * makes a lookup miss and an update be skipped.  That also keeps a child
 * forked while another thread held a lock safe (that slot stays unused).
 */
#ifndef AXSTM_REDIS_CACHE_H
#define AXSTM_REDIS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blob.h"

struct axstm__rcache;

/* A new, empty cache, or NULL when out of memory. */
struct axstm__rcache *axstm__rcache_new(void);
void axstm__rcache_free(struct axstm__rcache *c);

/* Whether key[0..len) is known: then *version, *born and *val (a
 * reference of the caller's) are what was last learnt. */
/* Each of these takes a NULL cache as one that knows nothing. */
bool axstm__rcache_get(struct axstm__rcache *c, const char *key, size_t len, uint64_t *version,
                       uint64_t *born, struct axstm__val *val);

/* Learns that key had version, born and val (the cache takes a reference
 * of its own).  An older version of the same incarnation than the one
 * known is not taken. */
void axstm__rcache_put(struct axstm__rcache *c, const char *key, size_t len, uint64_t version,
                       uint64_t born, const struct axstm__val *val);

/* Forgets key (it changed, or may have). */
void axstm__rcache_drop(struct axstm__rcache *c, const char *key, size_t len);

#endif
