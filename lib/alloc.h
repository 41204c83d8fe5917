/*
 * alloc.h -- every allocation of the library goes through here, so tests can
 * make any one of them fail.
 */
#ifndef AXSTM_ALLOC_H
#define AXSTM_ALLOC_H

#include <stddef.h>

/* malloc/calloc/free with overflow checks; NULL on failure (or injected failure). */
void *axstm__malloc(size_t size);
void *axstm__calloc(size_t count, size_t size);
/* align: a power of two, multiple of sizeof(void *). */
void *axstm__aligned_alloc(size_t align, size_t size);
void axstm__free(void *p);

/*
 * Test hook: make the calling thread's n-th allocation from now fail
 * (n >= 1), and every one after it too when `sticky` is non-zero.  n == 0
 * turns injection off.  Other threads are not affected.
 */
void axstm__alloc_fail_after(unsigned long n, int sticky);

/* Test hook: allocations the calling thread has attempted. */
unsigned long axstm__alloc_count(void);

#endif
