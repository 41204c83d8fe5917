/* SPDX-License-Identifier: MIT */
/*
 * alloc.c -- the library's one door to the heap.
 *
 * Every allocation passes through here so that a test can make the n-th one
 * fail and check that the call reports AXSTM_ENOMEM and changes nothing.
 * Counting and injection are per thread: a shared counter would be a cache
 * line every allocating thread writes.
 */
#include "alloc.h"

#include "thread.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

/* Per thread, so that counting costs the hot path no shared write. */
static AXSTM__TLS unsigned long alloc_calls;
static AXSTM__TLS unsigned long fail_at; /* 0: off; else the call that fails */
static AXSTM__TLS int fail_sticky;

void axstm__alloc_fail_after(unsigned long n, int sticky)
{
    fail_sticky = sticky != 0;
    fail_at = n == 0 ? 0 : alloc_calls + n;
}

unsigned long axstm__alloc_count(void)
{
    return alloc_calls;
}

/* Counts the call and says whether it must fail. */
static int injected_failure(void)
{
    unsigned long call = ++alloc_calls;
    if (fail_at == 0)
        return 0;
    return call == fail_at || (call > fail_at && fail_sticky);
}

void *axstm__malloc(size_t size)
{
    if (injected_failure())
        return NULL;
    return malloc(size ? size : 1);
}

void *axstm__calloc(size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size)
        return NULL;
    if (injected_failure())
        return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *axstm__aligned_alloc(size_t align, size_t size)
{
    void *p = NULL;
    if (injected_failure())
        return NULL;
    if (posix_memalign(&p, align, size ? size : 1) != 0)
        return NULL;
    return p;
}

void axstm__free(void *p)
{
    free(p);
}

/* ---- the per-thread cache of handle blocks -------------------------- */

enum { CLASSES = 2, DEPTH = 4 };
/* A value handle with its key; a collection of a few keys. */
#define class_size ((const size_t[CLASSES]){128, 2048})

struct handle_cache {
    struct handle_cache *prev, *next; /* every live cache, for leak checkers */
    unsigned n[CLASSES];
    void *block[CLASSES][DEPTH];
};

/* NULL until this thread first frees a handle; CLOSED once its exit
 * destructor ran (later calls, from other destructors, bypass the cache). */
static AXSTM__TLS struct handle_cache *my_cache;
#define CLOSED ((struct handle_cache *)(uintptr_t)1)

static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static pthread_key_t cache_key;
static int cache_key_ok;
/* The caches hang off this list so that the blocks of a thread still
 * running at exit (the main thread) stay reachable, not "leaked". */
static pthread_mutex_t caches_lock = PTHREAD_MUTEX_INITIALIZER;
static struct handle_cache *caches;

static void cache_destroy(void *arg)
{
    struct handle_cache *c = arg;
    pthread_mutex_lock(&caches_lock);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        caches = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&caches_lock);
    for (int k = 0; k < CLASSES; k++)
        while (c->n[k] > 0)
            free(c->block[k][--c->n[k]]);
    free(c);
    my_cache = CLOSED;
}

/* Around fork() (fork.c): taken before, and given back after it in the
 * parent and in the child alike, so that no child finds the list held by
 * one of the threads it does not have (its new threads would block on it
 * for good when they make or drop their caches). */
void axstm__caches_before_fork(void)
{
    pthread_mutex_lock(&caches_lock);
}

void axstm__caches_after_fork(void)
{
    pthread_mutex_unlock(&caches_lock);
}

static void cache_key_create(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_destroy) == 0;
}

/* This thread's cache, made on first use; NULL when there is none. */
static struct handle_cache *cache_open(void)
{
    if (my_cache != NULL)
        return my_cache != CLOSED ? my_cache : NULL;
    pthread_once(&cache_once, cache_key_create);
    struct handle_cache *c = cache_key_ok ? calloc(1, sizeof *c) : NULL;
    if (c == NULL)
        return NULL; /* no cache: handles go straight to the heap */
    if (pthread_setspecific(cache_key, c) != 0) {
        free(c);
        return NULL;
    }
    pthread_mutex_lock(&caches_lock);
    c->next = caches;
    if (caches != NULL)
        caches->prev = c;
    caches = c;
    pthread_mutex_unlock(&caches_lock);
    my_cache = c;
    return c;
}

static int class_of(size_t size)
{
    return size <= class_size[0] ? 0 : size <= class_size[1] ? 1 : -1;
}

/* A cache that is there (not NULL, not CLOSED). */
static int cache_usable(const struct handle_cache *c)
{
    return (uintptr_t)c > (uintptr_t)CLOSED;
}

void *axstm__handle_alloc(size_t size)
{
    if (injected_failure())
        return NULL;
    int k = class_of(size);
    if (k < 0)
        return malloc(size);
    struct handle_cache *c = my_cache;
    if (cache_usable(c) && c->n[k] > 0)
        return c->block[k][--c->n[k]];
    /* Made at the class size, so that any block of a class fits any
     * handle of that class when it comes back. */
    return malloc(class_size[k]);
}

/* handle_free's other cases: no cache yet, a full one, a big block. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline))
#endif
static void
handle_free_slow(void *p, int k)
{
    struct handle_cache *c = k >= 0 ? cache_open() : NULL;
    if (c != NULL && c->n[k] < DEPTH) {
        c->block[k][c->n[k]++] = p;
        return;
    }
    free(p);
}

void axstm__handle_free(void *p, size_t size)
{
    if (p == NULL)
        return;
    int k = class_of(size);
    /* The common case first, with no call: this thread's cache has room. */
    struct handle_cache *c = my_cache;
    if (k >= 0 && cache_usable(c) && c->n[k] < DEPTH) {
        c->block[k][c->n[k]++] = p;
        return;
    }
    handle_free_slow(p, k);
}
