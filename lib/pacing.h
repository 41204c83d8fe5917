/* SPDX-License-Identifier: MIT */
/*
 * pacing.h -- what both kinds of transaction run share (txn.c in process,
 * redis_txn.c on a Redis store): how a run may wait, its deadline, and
 * the backoff between failed attempts.
 */
#ifndef AXSTM_PACING_H
#define AXSTM_PACING_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "axstm.h"

/* How a run may wait when the body returns AXSTM_RETRY. */
struct axstm__run_mode {
    const struct timespec *deadline; /* NULL: no limit; else it ends every
                                      * wait, backoff and re-run */
    bool never_wait;                 /* timeout 0: AXSTM_ETIMEDOUT at once */
    axstm_watch **watch;             /* non-NULL: never block, hand out a watch */
};

/* axstm_try_atomically gives up with AXSTM_BUSY_RETRY after this many
 * conflicts in a row (it may neither sleep nor run irrevocably). */
#define AXSTM__TRY_ATTEMPTS 64

/* Nanoseconds from now until *deadline (CLOCK_MONOTONIC), 0 once it has
 * passed.  Only short spans are ever compared with it, so anything past a
 * second away is "a long time" (and no distant deadline can overflow). */
static inline int64_t axstm__ns_left(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    time_t sec = deadline->tv_sec - now.tv_sec;
    if (sec > 1)
        return INT64_MAX;
    int64_t left = (int64_t)sec * 1000000000 + (deadline->tv_nsec - now.tv_nsec);
    return left > 0 ? left : 0;
}

/* Whether a deadline (NULL: none) has passed. */
static inline bool axstm__past(const struct timespec *deadline)
{
    return deadline != NULL && axstm__ns_left(deadline) == 0;
}

/* Randomised, bounded exponential backoff after the n-th failure in a row
 * (txn.c).  A sleep never reaches past the deadline (NULL: none). */
void axstm__backoff(unsigned failures, const struct timespec *deadline);

#endif
