/*
 * alloc.c -- the library's one door to the heap.
 *
 * Every allocation passes through here so that a test can make the n-th one
 * fail and check that the call reports AXSTM_ENOMEM and changes nothing.
 * Counting and injection are per thread: a shared counter would be a cache
 * line every allocating thread writes.
 */
#include "axstm-internal.h"

#include <stdint.h>
#include <stdlib.h>

/* Per thread, so that counting costs the hot path no shared write. */
static _Thread_local unsigned long alloc_calls;
static _Thread_local unsigned long fail_at; /* 0: off; else the call that fails */
static _Thread_local int fail_sticky;

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
