/* SPDX-License-Identifier: MIT */
/*
 * redis_cache.c -- the last known state of small keys of a Redis store
 * (see redis_cache.h for what an entry promises and what it does not).
 *
 * SLOTS slots; a key may be in either of two, both named by a hash of it
 * (two choices: at 1024 keys, 1 in 8 of them would share a slot with
 * another if each had one); LOCKS locks, slot s under lock s % LOCKS,
 * only ever tried, one at a time.  An entry is allocated before its lock
 * is tried and freed after it is let go, so nothing that can take time
 * happens under a lock.  A put that finds one of the key's slots busy may
 * leave the key in both: a lookup takes the newer of the two (a later
 * incarnation, or a later version of the same one), a put replaces the
 * one it finds, and a drop clears both.
 */
#include "redis_cache.h"

#include <pthread.h>
#include <string.h>

#include "alloc.h"

#define SLOTS 8192
#define LOCKS 64
#define KEY_MOST 200   /* longer keys are not kept */
#define VALUE_MOST 256 /* nor longer values */

struct entry {
    uint64_t version, born;
    struct axstm__val val;
    size_t len;
    char key[];
};

struct axstm__rcache {
    pthread_mutex_t locks[LOCKS];
    struct entry *slots[SLOTS];
};

struct axstm__rcache *axstm__rcache_new(void)
{
    struct axstm__rcache *c = axstm__calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    for (int i = 0; i < LOCKS; i++)
        if (pthread_mutex_init(&c->locks[i], NULL) != 0) {
            while (i-- > 0)
                pthread_mutex_destroy(&c->locks[i]);
            axstm__free(c);
            return NULL;
        }
    return c;
}

static void entry_free(struct entry *e)
{
    if (e != NULL) {
        axstm__val_release(&e->val);
        axstm__free(e);
    }
}

void axstm__rcache_free(struct axstm__rcache *c)
{
    if (c == NULL)
        return;
    for (size_t s = 0; s < SLOTS; s++)
        entry_free(c->slots[s]);
    for (int i = 0; i < LOCKS; i++)
        pthread_mutex_destroy(&c->locks[i]);
    axstm__free(c);
}

/* FNV-1a: the key's two slots.  A flood of keys on the same slots only
 * makes them miss. */
static void slots_of(const char *key, size_t len, size_t slot[2])
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    slot[0] = (size_t)h % SLOTS;
    slot[1] = (size_t)(h >> 32) % SLOTS;
    if (slot[1] == slot[0])
        slot[1] = (slot[0] + 1) % SLOTS;
}

static bool holds(const struct entry *e, const char *key, size_t len)
{
    return e != NULL && e->len == len && memcmp(e->key, key, len) == 0;
}

static bool cacheable(size_t len, const struct axstm__val *val)
{
    size_t vlen;
    (void)axstm__val_data(val, &vlen);
    return len <= KEY_MOST && vlen <= VALUE_MOST && !(val->meta & AXSTM__VAL_DELETE);
}

bool axstm__rcache_get(struct axstm__rcache *c, const char *key, size_t len, uint64_t *version,
                       uint64_t *born, struct axstm__val *val)
{
    if (c == NULL || len > KEY_MOST)
        return false;
    size_t slot[2];
    slots_of(key, len, slot);
    bool hit = false;
    for (int i = 0; i < 2; i++) {
        pthread_mutex_t *lock = &c->locks[slot[i] % LOCKS];
        if (pthread_mutex_trylock(lock) != 0)
            continue;
        const struct entry *e = c->slots[slot[i]];
        /* In both slots (see above): the newer news. */
        if (holds(e, key, len) &&
            (!hit || e->born > *born || (e->born == *born && e->version > *version))) {
            if (hit)
                axstm__val_release(val);
            *version = e->version;
            *born = e->born;
            *val = e->val;
            axstm__val_retain(val);
            hit = true;
        }
        pthread_mutex_unlock(lock);
    }
    return hit;
}

/* Where a put goes: 0 or 1, the key's slot if it is in one, else an
 * empty one, else the first (whose key is put out). */
enum fit { FIT_KEY, FIT_EMPTY, FIT_OTHER, FIT_BUSY };

static enum fit fit_of(struct axstm__rcache *c, size_t s, const char *key, size_t len)
{
    pthread_mutex_t *lock = &c->locks[s % LOCKS];
    if (pthread_mutex_trylock(lock) != 0)
        return FIT_BUSY;
    const struct entry *e = c->slots[s];
    enum fit f = e == NULL ? FIT_EMPTY : holds(e, key, len) ? FIT_KEY : FIT_OTHER;
    pthread_mutex_unlock(lock);
    return f;
}

void axstm__rcache_put(struct axstm__rcache *c, const char *key, size_t len, uint64_t version,
                       uint64_t born, const struct axstm__val *val)
{
    if (c == NULL)
        return;
    struct entry *e = cacheable(len, val) ? axstm__malloc(sizeof *e + len) : NULL;
    if (e == NULL) {
        axstm__rcache_drop(c, key, len); /* what was known is old now */
        return;
    }
    e->version = version;
    e->born = born;
    e->val = *val;
    axstm__val_retain(&e->val);
    e->len = len;
    memcpy(e->key, key, len);
    size_t slot[2];
    slots_of(key, len, slot);
    enum fit f[2] = {fit_of(c, slot[0], key, len), fit_of(c, slot[1], key, len)};
    size_t s = f[1] == FIT_KEY || (f[1] == FIT_EMPTY && f[0] != FIT_KEY) ? slot[1] : slot[0];
    pthread_mutex_t *lock = &c->locks[s % LOCKS];
    if (pthread_mutex_trylock(lock) == 0) {
        struct entry *old = c->slots[s];
        /* A slower thread may bring older news of the same key. */
        if (!holds(old, key, len) || old->born != born || old->version <= version) {
            c->slots[s] = e;
            e = old;
        }
        pthread_mutex_unlock(lock);
    }
    entry_free(e);
}

void axstm__rcache_drop(struct axstm__rcache *c, const char *key, size_t len)
{
    if (c == NULL || len > KEY_MOST)
        return;
    size_t slot[2];
    slots_of(key, len, slot);
    for (int i = 0; i < 2; i++) {
        pthread_mutex_t *lock = &c->locks[slot[i] % LOCKS];
        struct entry *old = NULL;
        if (pthread_mutex_trylock(lock) == 0) {
            if (holds(c->slots[slot[i]], key, len)) {
                old = c->slots[slot[i]];
                c->slots[slot[i]] = NULL;
            }
            pthread_mutex_unlock(lock);
        }
        /* A busy lock leaves the entry: the server's checks still catch it. */
        entry_free(old);
    }
}
