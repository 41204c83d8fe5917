/* SPDX-License-Identifier: MIT */
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
 * Handles (values, collections) are made and freed once per checkout: the
 * hottest allocation there is.  These keep a few freed handle blocks per
 * thread for the next checkout, so a checkout loop calls malloc only while
 * the cache warms up.  Blocks are binned by size class; a block may be
 * freed by another thread than the one that made it.  handle_alloc counts
 * and fails like axstm__malloc (tests see no difference); the size passed to
 * handle_free must be the one passed to handle_alloc.
 */
void *axstm__handle_alloc(size_t size);
void axstm__handle_free(void *p, size_t size);

/* fork() handlers (fork.c): hold the list of handle caches across a fork
 * (every cache stays on it: those of the parent's other threads, still
 * reachable, are never used again in the child). */
void axstm__caches_before_fork(void);
void axstm__caches_after_fork(void);

/*
 * Test hook: make the calling thread's n-th allocation from now fail
 * (n >= 1), and every one after it too when `sticky` is non-zero.  n == 0
 * turns injection off.  Other threads are not affected.
 */
void axstm__alloc_fail_after(unsigned long n, int sticky);

/* Test hook: allocations the calling thread has attempted. */
unsigned long axstm__alloc_count(void);

#endif
