/* SPDX-License-Identifier: MIT */
/*
 * calls.c -- the operations whose instruction counts the Performance
 * section gives, each run OPS times in a function of its own, so that
 * callgrind can count them: `make bench-calls` runs this program under
 * valgrind --tool=callgrind and prints instructions per operation (times
 * on this kind of machine wobble by 2x between runs; instruction counts
 * repeat to within a few).
 *
 *   bench/calls [OPS]
 *
 * The store holds 1024 keys named like account-17, each with an 8-byte
 * value; the keys of each operation are picked by a fixed pseudo-random
 * sequence (the same in every run).  The operations:
 *   kept:        axstm_value_set_i64 + axstm_value_commit on one handle
 *                kept across the loop (a disjoint-key writer);
 *   usevar:      axstm_usevar + axstm_value_free;
 *   commit:      axstm_usevar + get_i64 + set_i64 + commit + free;
 *   using:       axstm_using of two keys + 2 get_i64 + 2 set_i64 +
 *                collection commit + free (a transfer through handles);
 *   handles:     the same transfer between two of 1024 handles kept
 *                across the loop (made before it): 2 get_i64 + 2 set_i64 +
 *                axstm_values_commit (bench/bank.h's kept row);
 *   atomically:  axstm_atomically of a transfer between two keys;
 *   mutex:       the same transfer under one mutex around a string-keyed
 *                hash table (what a user writes instead; bench/bank.h);
 *   loop:        the loop and the key picking alone, to subtract.
 * Exit status 0, or 1 when a call fails.
 */
#include "bank.h"

#define KEYS 1024
#define DEFAULT_OPS 100000

static struct bank bk; /* the accounts: in a store and in the mutex's table */
static unsigned seed = 1;
static long ops = DEFAULT_OPS;

static unsigned pick(void)
{
    seed = seed * 1103515245u + 12345u;
    return (seed >> 8) % KEYS;
}

static void pick_two(unsigned *a, unsigned *b)
{
    *a = pick();
    *b = pick();
    if (*a == *b)
        *b = (*b + 1) % KEYS;
}

static const char *name(unsigned i)
{
    return bench_name(&bk.names, i);
}

static void check(int rc, const char *what)
{
    if (rc != AXSTM_OK) {
        fprintf(stderr, "calls: %s: %s\n", what, axstm_strerror(rc));
        exit(1);
    }
}

__attribute__((noinline)) static void op_loop(void)
{
    for (long i = 0; i < ops; i++) {
        unsigned a, b;
        pick_two(&a, &b);
        __asm__ volatile("" ::"r"(a), "r"(b));
    }
}

__attribute__((noinline)) static void op_kept(void)
{
    axstm_value *v;
    check(axstm_usevar(bk.store, name(5), &v), "usevar");
    for (long i = 0; i < ops; i++) {
        axstm_value_set_i64(v, i);
        check(axstm_value_commit(v), "commit");
    }
    axstm_value_free(v);
}

__attribute__((noinline)) static void op_usevar(void)
{
    for (long i = 0; i < ops; i++) {
        axstm_value *v;
        check(axstm_usevar(bk.store, name(pick()), &v), "usevar");
        axstm_value_free(v);
    }
}

__attribute__((noinline)) static void op_commit(void)
{
    for (long i = 0; i < ops; i++) {
        axstm_value *v;
        int64_t x = 0;
        check(axstm_usevar(bk.store, name(pick()), &v), "usevar");
        axstm_value_get_i64(v, &x);
        axstm_value_set_i64(v, x + 1);
        check(axstm_value_commit(v), "commit");
        axstm_value_free(v);
    }
}

__attribute__((noinline)) static void op_using(void)
{
    for (long i = 0; i < ops; i++) {
        unsigned a, b;
        pick_two(&a, &b);
        uint64_t conflicts = 0, busy = 0;
        check(bank_transfer_using(bk.store, name(a), name(b), 1, &conflicts, &busy),
              "using transfer");
    }
}

__attribute__((noinline)) static void op_handles(void)
{
    for (long i = 0; i < ops; i++) {
        unsigned a, b;
        pick_two(&a, &b);
        uint64_t conflicts = 0, busy = 0;
        check(bank_transfer_kept(bk.kept[0][a], bk.kept[0][b], 1, false, &conflicts, &busy),
              "kept transfer");
    }
}

__attribute__((noinline)) static void op_atomically(void)
{
    for (long i = 0; i < ops; i++) {
        unsigned a, b;
        pick_two(&a, &b);
        struct bank_xfer t = {name(a), name(b), 1};
        check(axstm_atomically(bk.store, bank_xfer_body, &t), "atomically");
    }
}

__attribute__((noinline)) static void op_mutex(void)
{
    for (long i = 0; i < ops; i++) {
        unsigned a, b;
        pick_two(&a, &b);
        check(bank_transfer_mutex_table(&bk, name(a), name(b), 1), "mutex transfer");
    }
}

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && (ops = strtol(argv[1], NULL, 10)) <= 0)) {
        fprintf(stderr, "usage: %s [OPS]\n", argv[0]);
        return 2;
    }
    if (bank_init(&bk, KEYS, true, true) != 0)
        check(AXSTM_ENOMEM, "making the accounts");
    if (bank_keep_handles(bk.store, &bk.names, bk.n, bk.kept, 1) != 0)
        check(AXSTM_ENOMEM, "keeping a handle per account");
    op_loop();
    op_kept();
    op_usevar();
    op_commit();
    op_using();
    op_handles();
    op_atomically();
    op_mutex();
    bank_free(&bk);
    printf("calls: %ld of each operation done\n", ops);
    return 0;
}
