/* SPDX-License-Identifier: MIT */
/*
 * bank_tinystm.c -- the bank row run by TinySTM, the word-based STM that
 * the kept row is measured against: each account a word of one array, a
 * transfer two loads and two stores in one transaction.  Accounts are
 * found by number, as in TinySTM's own bank test and as the kept row finds
 * its handles: no name is looked up.
 *
 * Built only when configure was given TINYSTM_DIR, a TinySTM built with its
 * own make (its include/stm.h and lib/libstm.a); nothing of it is in this
 * tree.  Its default build (write-back, encounter-time locking, a global
 * clock) is what is measured.
 */
#include "bank.h"

#include <setjmp.h>
#include <stm.h>

int bank_tinystm_init(struct bank *bk)
{
    static bool started;
    if (!started) {
        stm_init();
        started = true;
    }
    stm_word_t *words = calloc(bk->n, sizeof *words);
    if (words == NULL)
        return -1;
    for (size_t i = 0; i < bk->n; i++)
        words[i] = (stm_word_t)BANK_INITIAL;
    bk->tinystm = words;
    return 0;
}

void bank_tinystm_free(struct bank *bk)
{
    free(bk->tinystm);
    bk->tinystm = NULL;
}

int64_t bank_tinystm_total(struct bank *bk)
{
    const stm_word_t *words = bk->tinystm;
    int64_t sum = 0;
    for (size_t i = 0; i < bk->n; i++)
        sum += (int64_t)words[i];
    return sum;
}

/* One transfer; TinySTM restarts the transaction from sigsetjmp on a
 * conflict, so it returns only once committed. */
static void transfer(volatile stm_word_t *from, volatile stm_word_t *to, int64_t amount)
{
    stm_tx_attr_t attr = {.attrs = 0};
    sigjmp_buf *env = stm_start(attr);
    if (env != NULL)
        sigsetjmp(*env, 0);
    stm_word_t a = stm_load(from), b = stm_load(to);
    stm_store(from, a - (stm_word_t)amount);
    stm_store(to, b + (stm_word_t)amount);
    stm_commit();
}

void bank_tinystm_body(struct bench_worker *w)
{
    struct bank *bk = w->arg;
    stm_word_t *words = bk->tinystm;
    stm_init_thread();
    while (!bench_stopped(w)) {
        size_t a, b;
        int64_t amount;
        bank_pick(w, bk->n, &a, &b, &amount);
        transfer(&words[a], &words[b], amount);
        w->ops++;
    }
    stm_exit_thread();
}
