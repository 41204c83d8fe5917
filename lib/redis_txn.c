/* SPDX-License-Identifier: MIT */
/*
 * redis_txn.c -- axstm_atomically, AXSTM_RETRY and axstm_or_else on a store
 * kept in Redis.
 *
 * The server does what locks and the clock do in process (txn.c):
 *   - The first read of a key in an attempt is one round trip, a script
 *     that reads the key consistently with every key read before
 *     (redis_scripts.h, READ), so that the body never sees a mixed state
 *     (opacity); a key read again is answered from the attempt's own
 *     copy.  The first few reads each have the keys read before checked;
 *     from then on the attempt keeps a commit clock, the store's commit
 *     count when all its reads were still as read: a key no commit wrote
 *     since needs no look at the keys read before, so a read costs the
 *     same however many came before it, and only a key that did change
 *     has them checked (and, if none changed, the clock moves on).
 *   - With first_read=cache in the store's address, the attempt's very
 *     first read is answered, with no round trip, from what this process
 *     knows of the key (redis_cache.h: from its own reads, checkouts and
 *     commits) when it knows something.  One value alone is always
 *     consistent, so the body still never sees a mixed state; but it may
 *     be old, so it counts as read at that version and the server checks
 *     it like every read: at the next read, at the commit, or, when
 *     neither comes (a read-only body, a body that answers its own code,
 *     AXSTM_RETRY with no wait), in a check of its own before the call
 *     returns.  An old one costs a run of the body again, never a wrong
 *     answer (a read that finds keys changed brings their states now, so
 *     the attempt run again reads its first key right; a commit that
 *     finds one changed forgets what the attempt read; and an attempt
 *     after two in a row that lost with a read from the cache asks the
 *     server, so no run depends on the cache to finish).  A transfer
 *     between two keys is then two round trips: the second read and the
 *     commit.  What it gives up: an attempt that is then run again may
 *     have seen a value that another client had replaced before the call
 *     began (consistent with a serial order, not with real time);
 *     without the option every read is as of a moment inside the call.
 *   - Writes go to a private log (read-your-own-writes; or_else drops a
 *     branch's writes by marking them dead).  Nothing is sent until the
 *     commit: one round trip, a script that checks the reads once more and
 *     then writes every key, all or nothing (TXCOMMIT).  A read-only
 *     attempt needs no commit: its last read saw all its reads as they
 *     were, which is the moment it serializes at.
 *   - Keys that do not exist are read as absent, and the commit checks
 *     they still are; only a commit that writes a key creates it, so a
 *     transaction that does not commit leaves no key behind.
 *   - AXSTM_RETRY: the attempt's keys are handed to a listener
 *     (redis_listen.c), the reads are checked once more after it is
 *     subscribed (a commit in between is seen either way), and the thread
 *     sleeps until a commit of one of them, by any process, fires it.
 *
 * Progress: a run that has lost HOLD_AFTER attempts in a row asks the
 * server for a hold on the keys of its last attempt (redis_scripts.h,
 * HOLD): for one timeout, other clients' commits that write them answer
 * AXSTM_BUSY_RETRY without running, so its next attempt cannot lose
 * (unless it uses other keys, or a run that asked earlier took the hold
 * over: it asks again at each loss after).  Only one run holds a key at a
 * time, and holds go to runs
 * in the order they first asked (taken over if need be), so no run waits
 * forever.  A hold ends with the run or the timeout: nobody waits longer
 * than that for it.
 *
 * Values handed out by axstm_txn_get live in per-key records that stay
 * put until the attempt ends.
 */
#include "redis_txn.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "axstm-internal.h"
#include "redis.h"
#include "redis_cache.h"

AXSTM__TLS void *axstm__remote_running;

/* Lost attempts in a row after which a run holds its keys. */
#define HOLD_AFTER 8

/* A key this attempt read or wrote, with the value read or to write. */
struct rkey {
    struct axstm__val val;
    size_t len;
    char key[];
};

struct rwrite {
    struct rkey *k;
    bool live; /* false once an or_else branch is dropped */
};

struct rtx {
    axstm_store *store;
    struct axstm__redis *r;
    bool doomed;                      /* a read found the attempt's reads stale */
    bool unchecked;                   /* the first read came from the cache, unchecked since */
    bool cached;                      /* this attempt's first read came from the cache */
    unsigned cache_losses;            /* attempts in a row lost with a read from the
                            * cache: after two, the next asks the server
                            * (progress, whatever the cache holds) */
    struct axstm__remote_clock clock; /* the attempt's (redis.h) */
    struct axstm__remote_read *reads;
    struct rkey **read_keys;
    size_t nreads, reads_cap;
    struct rwrite *writes;
    size_t nwrites, writes_cap;
    struct axstm__listener *listener; /* while waiting */
    /* The keys this run holds (names in records with no value). */
    struct rkey **held;
    size_t nheld;
    char token[96];      /* the run's name in its holds and commits */
    uint64_t hold_since; /* when it first asked for a hold (server ms), or 0 */
};

static struct rtx *current(axstm_txn *tx)
{
    return tx != NULL && (void *)tx == axstm__remote_running ? (struct rtx *)(void *)tx : NULL;
}

static struct rkey *rkey_new(const char *key, size_t len, struct axstm__val val)
{
    struct rkey *k = axstm__malloc(sizeof *k + len + 1);
    if (k != NULL) {
        k->val = val;
        k->len = len;
        memcpy(k->key, key, len);
        k->key[len] = '\0';
    }
    return k;
}

static void rkey_free(struct rkey *k)
{
    axstm__val_release(&k->val);
    axstm__free(k);
}

/* Room for `more` more reads and one more write. */
static int reserve(struct rtx *t, size_t more)
{
    if (t->reads_cap - t->nreads < more) {
        if (more > SIZE_MAX / 4 - t->reads_cap)
            return AXSTM_ENOMEM;
        size_t cap = t->reads_cap * 2 + 8;
        if (cap - t->nreads < more)
            cap = t->nreads + more;
        struct axstm__remote_read *reads = axstm__malloc(cap * sizeof *reads);
        struct rkey **keys = axstm__malloc(cap * sizeof *keys);
        if (reads == NULL || keys == NULL) {
            axstm__free(reads);
            axstm__free(keys);
            return AXSTM_ENOMEM;
        }
        if (t->nreads != 0) {
            memcpy(reads, t->reads, t->nreads * sizeof *reads);
            memcpy(keys, t->read_keys, t->nreads * sizeof *keys);
        }
        axstm__free(t->reads);
        axstm__free(t->read_keys);
        t->reads = reads;
        t->read_keys = keys;
        t->reads_cap = cap;
    }
    if (t->nwrites == t->writes_cap) {
        size_t cap = t->writes_cap * 2 + 8;
        struct rwrite *writes = axstm__malloc(cap * sizeof *writes);
        if (writes == NULL)
            return AXSTM_ENOMEM;
        if (t->nwrites != 0)
            memcpy(writes, t->writes, t->nwrites * sizeof *writes);
        axstm__free(t->writes);
        t->writes = writes;
        t->writes_cap = cap;
    }
    return AXSTM_OK;
}

static bool same_key(const struct rkey *k, const char *key, size_t len)
{
    return k->len == len && memcmp(k->key, key, len) == 0;
}

/* This attempt's latest live write of key, or NULL. */
static struct rkey *find_write(const struct rtx *t, const char *key, size_t len)
{
    for (size_t i = t->nwrites; i-- > 0;)
        if (t->writes[i].live && same_key(t->writes[i].k, key, len))
            return t->writes[i].k;
    return NULL;
}

static size_t find_read_at(const struct rtx *t, const char *key, size_t len)
{
    size_t i = 0;
    while (i < t->nreads && !same_key(t->read_keys[i], key, len))
        i++;
    return i;
}

static struct rkey *find_read(const struct rtx *t, const char *key, size_t len)
{
    size_t i = find_read_at(t, key, len);
    return i < t->nreads ? t->read_keys[i] : NULL;
}

/* A commit found a key read changed: what the cache knows of them may be
 * old.  (A read that finds one changed teaches the cache its state now:
 * redis.c.) */
static void forget_reads(const struct rtx *t)
{
    struct axstm__rcache *cache = axstm__redis_cache(t->r);
    for (size_t i = 0; cache != NULL && i < t->nreads; i++)
        axstm__rcache_drop(cache, t->reads[i].key, t->reads[i].keylen);
}

/* Has the server check that every key read is still as it was read. */
static int check_reads(struct rtx *t)
{
    int rc = axstm__redis_read(t->r, t->reads, t->nreads, NULL, NULL, 0, &t->clock);
    if (rc == AXSTM_OK)
        t->unchecked = false;
    return rc;
}

/* After a commit: what the cache learns from it.  A key written that was
 * read as present now has the next version of the same incarnation (the
 * commit checked the read); any other key written is forgotten. */
static void learn_writes(const struct rtx *t, const struct axstm__remote_write *writes, size_t n,
                         int rc)
{
    struct axstm__rcache *cache = axstm__redis_cache(t->r);
    for (size_t i = 0; cache != NULL && i < n; i++) { /* no cache: nothing to learn */
        size_t at = find_read_at(t, writes[i].key, writes[i].keylen);
        if (rc == AXSTM_OK && at < t->nreads && t->reads[at].present &&
            !(writes[i].val.meta & AXSTM__VAL_DELETE))
            axstm__rcache_put(cache, writes[i].key, writes[i].keylen, t->reads[at].version + 1,
                              t->reads[at].born, &writes[i].val);
        else
            axstm__rcache_drop(cache, writes[i].key, writes[i].keylen);
    }
}

int axstm__remote_get(axstm_txn *tx, const char *key, const struct axstm__val **val)
{
    struct rtx *t = current(tx);
    size_t len;
    if (t == NULL)
        return AXSTM_EINVAL;
    int rc = axstm__check_key(key, &len);
    if (rc != AXSTM_OK)
        return rc;
    struct rkey *k = find_write(t, key, len);
    if (k == NULL)
        k = find_read(t, key, len);
    if (k != NULL) {
        *val = &k->val;
        return AXSTM_OK;
    }
    if (t->doomed)
        return AXSTM_CONCURRENT_UPDATE;
    if ((rc = reserve(t, 1)) != AXSTM_OK)
        return rc;
    struct axstm__remote_read target = {key, len, 0, 0, false};
    struct axstm__val got;
    struct axstm__rcache *cache = axstm__redis_cache(t->r);
    if (t->nreads == 0 && t->cache_losses < 2 &&
        axstm__rcache_get(cache, key, len, &target.version, &target.born, &got)) {
        target.present = true; /* a state the key had: checked later */
        t->unchecked = t->cached = true;
    } else {
        rc = axstm__redis_read(t->r, t->reads, t->nreads, &target, &got, 1, &t->clock);
        if (rc == AXSTM_CONCURRENT_UPDATE)
            t->doomed = true; /* even if the body carries on, it cannot commit */
        if (rc != AXSTM_OK)
            return rc;
        t->unchecked = false; /* the server checked every read before */
        if (target.present)
            axstm__rcache_put(cache, key, len, target.version, target.born, &got);
    }
    if ((k = rkey_new(key, len, got)) == NULL) {
        axstm__val_release(&got);
        return AXSTM_ENOMEM;
    }
    target.key = k->key;
    t->reads[t->nreads] = target;
    t->read_keys[t->nreads++] = k;
    *val = &k->val;
    return AXSTM_OK;
}

int axstm__remote_prefetch(axstm_txn *tx, const char *const keys[], size_t nkeys)
{
    struct rtx *t = current(tx);
    if (t == NULL)
        return AXSTM_EINVAL;
    int rc = axstm__check_keys(keys, nkeys);
    if (rc != AXSTM_OK)
        return rc;
    if (t->doomed)
        return AXSTM_CONCURRENT_UPDATE;
    if (nkeys >= SIZE_MAX / sizeof(struct axstm__remote_read))
        return AXSTM_ENOMEM; /* no such array fits in memory */
    struct axstm__remote_read *targets = axstm__malloc((nkeys + 1) * sizeof *targets);
    struct axstm__val *vals = axstm__malloc((nkeys + 1) * sizeof *vals);
    rc = targets != NULL && vals != NULL ? reserve(t, nkeys) : AXSTM_ENOMEM;
    /* The keys not read nor written yet, each once. */
    size_t m = 0;
    for (size_t i = 0; i < nkeys && rc == AXSTM_OK; i++) {
        size_t len = strlen(keys[i]);
        bool known = find_write(t, keys[i], len) != NULL || find_read(t, keys[i], len) != NULL;
        for (size_t j = 0; j < m && !known; j++)
            known = targets[j].keylen == len && memcmp(targets[j].key, keys[i], len) == 0;
        if (!known)
            targets[m++] = (struct axstm__remote_read){keys[i], len, 0, 0, false};
    }
    if (rc == AXSTM_OK && m != 0) {
        rc = axstm__redis_read(t->r, t->reads, t->nreads, targets, vals, m, &t->clock);
        if (rc == AXSTM_CONCURRENT_UPDATE)
            t->doomed = true;
        if (rc == AXSTM_OK)
            t->unchecked = false; /* the server checked every read before */
        struct axstm__rcache *cache = axstm__redis_cache(t->r);
        for (size_t i = 0; i < m && rc == AXSTM_OK; i++) {
            struct rkey *k = rkey_new(targets[i].key, targets[i].keylen, vals[i]);
            if (k == NULL) {
                /* The rest are not kept: read again if asked for. */
                for (size_t j = i; j < m; j++)
                    axstm__val_release(&vals[j]);
                rc = AXSTM_ENOMEM;
                break;
            }
            if (targets[i].present)
                axstm__rcache_put(cache, k->key, k->len, targets[i].version, targets[i].born,
                                  &k->val);
            targets[i].key = k->key;
            t->reads[t->nreads] = targets[i];
            t->read_keys[t->nreads++] = k;
        }
    }
    axstm__free(targets);
    axstm__free(vals);
    return rc;
}

/* Logs a write of key: its value, or a delete. */
static int log_write(struct rtx *t, const char *key, struct axstm__val val)
{
    size_t len;
    int rc = axstm__check_key(key, &len);
    if (rc == AXSTM_OK)
        rc = reserve(t, 0);
    struct rkey *k = rc == AXSTM_OK ? rkey_new(key, len, val) : NULL;
    if (k == NULL) {
        axstm__val_release(&val);
        return rc != AXSTM_OK ? rc : AXSTM_ENOMEM;
    }
    t->writes[t->nwrites++] = (struct rwrite){k, true};
    return AXSTM_OK;
}

int axstm__remote_set(axstm_txn *tx, const char *key, const void *data, size_t len)
{
    struct rtx *t = current(tx);
    if (t == NULL || (data == NULL && len != 0))
        return AXSTM_EINVAL;
    if (len > AXSTM_VALUE_MAX)
        return AXSTM_E2BIG;
    struct axstm__val val = {0, 0};
    int rc = axstm__val_make(&val, data, len);
    return rc == AXSTM_OK ? log_write(t, key, val) : rc;
}

int axstm__remote_delete(axstm_txn *tx, const char *key)
{
    struct rtx *t = current(tx);
    if (t == NULL)
        return AXSTM_EINVAL;
    return log_write(t, key, (struct axstm__val){0, AXSTM__VAL_DELETE});
}

int axstm__remote_or_else(axstm_txn *tx, axstm_fn first, axstm_fn second, void *arg)
{
    struct rtx *t = current(tx);
    if (t == NULL || first == NULL || second == NULL)
        return AXSTM_EINVAL;
    size_t mark = t->nwrites;
    int rc = first(tx, arg);
    if (rc != AXSTM_RETRY)
        return rc;
    for (size_t i = mark; i < t->nwrites; i++)
        t->writes[i].live = false; /* the reads stay: a wait watches them too */
    return second(tx, arg);
}

/* Sends the attempt's writes (each key's latest live one) with its reads. */
static int commit(struct rtx *t)
{
    if (t->doomed)
        return AXSTM_CONCURRENT_UPDATE;
    size_t n = 0;
    struct axstm__remote_write small[16], *writes = small;
    if (t->nwrites > 16 && (writes = axstm__malloc(t->nwrites * sizeof *writes)) == NULL)
        return AXSTM_ENOMEM;
    for (size_t i = t->nwrites; i-- > 0;) {
        struct rkey *k = t->writes[i].k;
        if (!t->writes[i].live || find_write(t, k->key, k->len) != k)
            continue; /* dropped, or not the key's latest */
        writes[n++] = (struct axstm__remote_write){k->key, k->len, k->val};
    }
    const char *token = t->nheld != 0 ? t->token : NULL;
    int rc;
    if (n == 0) {
        /* Read-only: done, unless the body rests on a read from the cache
         * that no read after it had the server check. */
        rc = t->unchecked ? check_reads(t) : AXSTM_OK;
    } else {
        rc = axstm__redis_txn_commit(t->r, token, t->reads, t->nreads, writes, n);
        if (rc == AXSTM_CONCURRENT_UPDATE)
            forget_reads(t);
        if (rc != AXSTM_BUSY_RETRY)
            learn_writes(t, writes, n, rc);
    }
    if (writes != small)
        axstm__free(writes);
    return rc;
}

static void end_attempt(struct rtx *t)
{
    for (size_t i = 0; i < t->nreads; i++)
        rkey_free(t->read_keys[i]);
    for (size_t i = 0; i < t->nwrites; i++)
        rkey_free(t->writes[i].k);
    t->nreads = t->nwrites = 0;
    t->doomed = t->unchecked = t->cached = false;
    t->clock.known = false;
}

/* Runs the body once and commits; the reads stay for a wait. */
static int attempt(struct rtx *t, axstm_fn fn, void *arg)
{
    end_attempt(t);
    axstm__remote_running = t;
    int rc = fn((axstm_txn *)(void *)t, arg);
    axstm__remote_running = NULL;
    if (rc == AXSTM_OK) {
        rc = commit(t);
    } else if (rc == AXSTM_RETRY && t->doomed) {
        rc = AXSTM_CONCURRENT_UPDATE; /* it waited on what it misread */
    } else if (t->unchecked && rc != AXSTM_CONCURRENT_UPDATE && rc != AXSTM_RETRY) {
        /* Whatever the body answers rests on a read from the cache: the
         * server must say that it is still so, or the body runs again.
         * (A wait checks its reads anyway: run_attempts.) */
        int checked = check_reads(t);
        if (checked != AXSTM_OK)
            rc = checked;
    }
    if (rc == AXSTM_RETRY && t->nreads == 0)
        rc = AXSTM_EINVAL; /* nothing read could ever change */
    if (rc == AXSTM_CONCURRENT_UPDATE)
        axstm__count(t->store, AXSTM__CONFLICTS);
    t->cache_losses = rc == AXSTM_CONCURRENT_UPDATE && t->cached ? t->cache_losses + 1 : 0;
    return rc;
}

/* The names of the keys read, as arrays (small ones inside *n). */
struct read_names {
    const char *small_keys[16];
    size_t small_lens[16];
    const char **keys;
    size_t *lens;
};

static int read_names(const struct rtx *t, struct read_names *n)
{
    n->keys = n->small_keys;
    n->lens = n->small_lens;
    if (t->nreads > 16) {
        n->keys = axstm__malloc(t->nreads * (sizeof *n->keys + sizeof *n->lens));
        if (n->keys == NULL)
            return AXSTM_ENOMEM;
        n->lens = (size_t *)(n->keys + t->nreads);
    }
    for (size_t i = 0; i < t->nreads; i++) {
        n->keys[i] = t->reads[i].key;
        n->lens[i] = t->reads[i].keylen;
    }
    return AXSTM_OK;
}

static void read_names_free(struct read_names *n)
{
    if (n->keys != n->small_keys)
        axstm__free(n->keys);
}

/* Takes the listener out and frees it (also when cancelled in a wait). */
static void drop_listener(void *arg)
{
    struct rtx *t = arg;
    if (t->listener != NULL) {
        axstm__listen_remove(t->r, t->listener);
        axstm__listener_free(t->listener);
        t->listener = NULL;
    }
}

/* After AXSTM_RETRY: sleeps until a key read changes (AXSTM_OK), the
 * deadline passes (AXSTM_ETIMEDOUT), or the server cannot say. */
static int wait_for_change(struct rtx *t, const struct timespec *deadline)
{
    struct read_names names;
    int rc = read_names(t, &names);
    if (rc != AXSTM_OK)
        return rc;
    rc = axstm__listener_new(names.keys, names.lens, t->nreads, -1, &t->listener);
    read_names_free(&names);
    if (rc != AXSTM_OK)
        return rc;
    rc = axstm__listen_add(t->r, t->listener);
    if (rc == AXSTM_OK) {
        /* Subscribed: a commit from now on fires us; one before, this sees. */
        rc = check_reads(t);
        if (rc == AXSTM_CONCURRENT_UPDATE) {
            rc = AXSTM_OK;
        } else if (rc == AXSTM_OK) {
            pthread_cleanup_push(drop_listener, t);
            rc = axstm__listen_wait(t->r, t->listener, deadline) ? AXSTM_OK : AXSTM_ETIMEDOUT;
            pthread_cleanup_pop(0);
        }
    }
    drop_listener(t);
    return rc;
}

/* axstm_try_atomically's AXSTM_RETRY: a watch over the keys read, readable
 * at once if one has changed already. */
static int hand_out_watch(struct rtx *t, axstm_watch **out)
{
    struct read_names names;
    axstm_watch *w;
    int rc = read_names(t, &names);
    if (rc != AXSTM_OK)
        return rc;
    rc = axstm__watch_remote(t->store, names.keys, names.lens, t->nreads, &w);
    read_names_free(&names);
    if (rc != AXSTM_OK)
        return rc;
    rc = check_reads(t);
    if (rc == AXSTM_CONCURRENT_UPDATE) {
        axstm__watch_remote_fire(w);
        rc = AXSTM_OK;
    }
    if (rc != AXSTM_OK) {
        axstm_watch_free(w);
        return rc;
    }
    *out = w;
    return AXSTM_RETRY;
}

/* Names of the held keys, as arrays (small ones in the caller's). */
static void held_names(const struct rtx *t, const char **keys, size_t *lens)
{
    for (size_t i = 0; i < t->nheld; i++) {
        keys[i] = t->held[i]->key;
        lens[i] = t->held[i]->len;
    }
}

static void release_hold(struct rtx *t)
{
    if (t->nheld == 0)
        return;
    const char *small_keys[16], **keys = small_keys;
    size_t small_lens[16], *lens = small_lens;
    if (t->nheld > 16) {
        keys = axstm__malloc(t->nheld * (sizeof *keys + sizeof *lens));
        lens = keys != NULL ? (size_t *)(keys + t->nheld) : NULL;
    }
    if (keys != NULL) {
        held_names(t, keys, lens);
        axstm__redis_release(t->r, t->token, keys, lens, t->nheld);
    } /* else it ends with its timeout */
    if (keys != small_keys)
        axstm__free(keys);
    for (size_t i = 0; i < t->nheld; i++)
        rkey_free(t->held[i]);
    axstm__free(t->held);
    t->held = NULL;
    t->nheld = 0;
}

/* Holds the keys the last attempt read or wrote, if no other run holds
 * one of them.  Failing to is no error: the run carries on as before. */
static void take_hold(struct rtx *t)
{
    static _Atomic unsigned long runs; /* one count for all threads: tokens never repeat */
    release_hold(t);
    size_t most = t->nreads + t->nwrites;
    if (most == 0)
        return;
    struct rkey **held = axstm__malloc(most * sizeof *held);
    const char **keys = axstm__malloc(most * (sizeof *keys + sizeof(size_t)));
    if (held == NULL || keys == NULL) {
        axstm__free(held);
        axstm__free(keys);
        return;
    }
    size_t *lens = (size_t *)(keys + most), n = 0;
    bool copied = true;
    for (size_t i = 0; i < most && copied; i++) {
        const struct rkey *k = i < t->nreads ? t->read_keys[i] : t->writes[i - t->nreads].k;
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++)
            seen = same_key(held[j], k->key, k->len);
        if (seen)
            continue;
        if ((held[n] = rkey_new(k->key, k->len, (struct axstm__val){0, 0})) == NULL) {
            copied = false;
        } else {
            keys[n] = held[n]->key;
            lens[n] = held[n]->len;
            n++;
        }
    }
    if (t->hold_since == 0) /* the first time: a name for the run */
        snprintf(t->token, sizeof t->token, "%s.%ld.t%lu", axstm__redis_client(t->r),
                 (long)getpid(), atomic_fetch_add(&runs, 1) + 1);
    bool got = false;
    if (copied &&
        axstm__redis_hold(t->r, t->token, keys, lens, n, &t->hold_since, &got) == AXSTM_OK && got) {
        t->held = held;
        t->nheld = n;
    } else {
        for (size_t i = 0; i < n; i++)
            rkey_free(held[i]);
        axstm__free(held);
    }
    axstm__free(keys);
}

static void run_end(void *arg)
{
    struct rtx *t = arg;
    axstm__remote_running = NULL;
    release_hold(t);
    drop_listener(t);
    end_attempt(t);
    axstm__free(t->reads);
    axstm__free(t->read_keys);
    axstm__free(t->writes);
}

/* Whether rc ends the run at once. */
static bool final_result(int rc)
{
    return rc != AXSTM_CONCURRENT_UPDATE && rc != AXSTM_BUSY_RETRY && rc != AXSTM_RETRY;
}

/* Runs attempts until one ends the call: the sleeps are here. */
static int run_attempts(struct rtx *t, axstm_fn fn, void *arg, const struct axstm__run_mode *mode)
{
    unsigned failures = 0;
    for (;;) {
        int rc = attempt(t, fn, arg);
        if (final_result(rc))
            return rc;
        if (rc != AXSTM_RETRY) {
            failures++;
            /* Hold its keys once it has lost HOLD_AFTER times, and ask
             * again at every loss after: its keys may have changed, and a
             * run that asked earlier may have taken its hold over. */
            if (mode->watch == NULL && failures >= HOLD_AFTER)
                take_hold(t);
            if (mode->watch != NULL) {
                if (failures >= AXSTM__TRY_ATTEMPTS)
                    return AXSTM_BUSY_RETRY;
                continue;
            }
            if (axstm__past(mode->deadline))
                return AXSTM_ETIMEDOUT;
            axstm__backoff(failures, mode->deadline);
            continue;
        }
        if (mode->watch != NULL)
            return hand_out_watch(t, mode->watch);
        if (mode->never_wait) {
            /* Nothing would change while it waits, unless the read from
             * the cache was old already. */
            rc = t->unchecked ? check_reads(t) : AXSTM_OK;
            if (rc == AXSTM_CONCURRENT_UPDATE) {
                t->cache_losses = 2; /* once more, asking the server */
                continue;
            }
            return rc == AXSTM_OK ? AXSTM_ETIMEDOUT : rc;
        }
        rc = wait_for_change(t, mode->deadline);
        if (rc != AXSTM_OK)
            return rc;
        axstm__count(t->store, AXSTM__WAITED);
        if (axstm__past(mode->deadline))
            return AXSTM_ETIMEDOUT;
        failures = 0;
    }
}

int axstm__remote_run(axstm_store *s, axstm_fn fn, void *arg, const struct axstm__run_mode *mode)
{
    if (axstm__remote_running != NULL)
        return AXSTM_EINVAL; /* bodies must not nest runs */
    struct rtx t;
    memset(&t, 0, sizeof t);
    t.store = s;
    t.r = s->remote;
    int rc;
    /* Waits and backoff sleeps are cancellation points, as in process. */
    pthread_cleanup_push(run_end, &t);
    rc = run_attempts(&t, fn, arg, mode);
    pthread_cleanup_pop(1);
    return rc;
}
