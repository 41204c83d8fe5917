/* SPDX-License-Identifier: MIT */
/*
 * bank_gnutm.c -- the bank row run by GCC's transactional memory: the same
 * hand-written table as the mutex rows, with the name lookups and the
 * update inside one __transaction_atomic.  The only file built with
 * -fgnu-tm, so that the instrumentation cannot touch the other rows.
 *
 * libitm chooses its method (how transactions run) once per process, at the
 * first transaction, from ITM_DEFAULT_METHOD; without it a single thread
 * runs serial-irrevocable (no instrumentation cost at all) and threads
 * switch to a retryable method as they join.  bench/bank.c sets the
 * variable or re-executes itself without it; this file checks what is
 * really in effect by asking libitm inside sampled transactions.
 */
#include "bank.h"

/* libitm's ABI (libitm.h is not installed by Debian's gcc): how the
 * calling transaction executes.  transaction_pure: calling it from inside a
 * transaction needs no instrumentation. */
enum bank_itm_how { BANK_ITM_OUTSIDE = 0, BANK_ITM_RETRYABLE = 1, BANK_ITM_IRREVOCABLE = 2 };
extern enum bank_itm_how _ITM_inTransaction(void) __attribute__((transaction_pure));

/* Ask libitm about one transaction in this many: the call is cheap but not
 * free, and a sample is enough to tell which method runs. */
#define SAMPLE_EVERY 16

void bank_gnutm_body(struct bench_worker *w)
{
    struct bank *bk = w->arg;
    struct bench_map *m = &bk->map;
    while (!bench_stopped(w)) {
        size_t a, b;
        int64_t amount;
        bank_pick(w, bk->n, &a, &b, &amount);
        const char *from = bench_name(&bk->names, a), *to = bench_name(&bk->names, b);
        bool sample = w->ops % SAMPLE_EVERY == 0, found;
        enum bank_itm_how how = BANK_ITM_OUTSIDE;
        __transaction_atomic
        {
            struct bench_node *x = bench_map_find(m, from);
            struct bench_node *y = bench_map_find(m, to);
            found = x != NULL && y != NULL;
            if (found) {
                x->value -= amount;
                y->value += amount;
            }
            if (sample)
                how = _ITM_inTransaction();
        }
        if (!found) {
            w->failed = AXSTM_EINVAL;
            return;
        }
        if (sample) {
            w->extra[BANK_X_SAMPLES]++;
            w->extra[BANK_X_IRREVOCABLE] += how == BANK_ITM_IRREVOCABLE;
        }
        w->ops++;
    }
}
