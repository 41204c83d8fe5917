/*
 * alloc.c -- the library's one door to the heap.
 *
 * Every allocation passes through here so that a test can make the n-th one
 * fail and check that the call reports AXSTM_ENOMEM and changes nothing.
 * The countdown is a single atomic: free when no test uses it, and safe when
 * a test runs threads.
 */
#include "axstm-internal.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

static _Atomic unsigned long alloc_calls;
static _Atomic unsigned long fail_at; /* 0: off; else alloc_calls value that fails */
static _Atomic int fail_sticky;

void axstm__alloc_fail_after(unsigned long n, int sticky)
{
    atomic_store(&fail_sticky, sticky != 0);
    atomic_store(&fail_at, n == 0 ? 0 : atomic_load(&alloc_calls) + n);
}

unsigned long axstm__alloc_count(void)
{
    return atomic_load_explicit(&alloc_calls, memory_order_relaxed);
}

/* Counts the call and says whether it must fail. */
static int injected_failure(void)
{
    unsigned long call = atomic_fetch_add_explicit(&alloc_calls, 1, memory_order_relaxed) + 1;
    unsigned long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
    if (at == 0)
        return 0;
    if (call == at)
        return 1;
    return call > at && atomic_load_explicit(&fail_sticky, memory_order_relaxed);
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
