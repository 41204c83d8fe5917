/* SPDX-License-Identifier: MIT */
/*
 * bank.c -- transfers between two random named accounts, axstm next to
 * what a user would write instead, in one run.
 *
 * Rows (see bank.h for each transfer):
 *   using        axstm_using of the two keys, change, commit; refresh and
 *                redo on AXSTM_CONCURRENT_UPDATE, call again on BUSY_RETRY
 *   atomically   axstm_atomically with txn_get_i64/txn_set_i64
 *   kept         a handle kept per account and thread (each name looked
 *                up once, before the timed runs), the two handles changed
 *                and committed together with axstm_values_commit
 *   mutex-tbl    one pthread mutex around a string-keyed hash table (the
 *                row every ratio is taken against)
 *   mutex-acct   the same table, read without a lock (it never changes),
 *                then the two account mutexes in address order
 *   tinystm      TinySTM (bank_tinystm.c), an account per word found by
 *                number: only when configure was given TINYSTM_DIR
 *   tm-ml_wt     GCC TM, __transaction_atomic around lookup and update,
 *                libitm's real STM method (ITM_DEFAULT_METHOD=ml_wt)
 *   tm-default   the same with libitm's default method (serial-irrevocable
 *                while one thread runs)
 *
 * libitm fixes its method at the first transaction of the process, so the
 * two GCC TM rows cannot share one.  This process sets ITM_DEFAULT_METHOD=
 * ml_wt before any transaction (the row that matters for the targets is
 * then measured beside the others); tm-default is measured by the program
 * re-executing itself without the variable (--gnutm-child), which measures
 * its own mutex-tbl row interleaved with it for its ratio.  Both rows check
 * the method in effect by asking libitm (see bank_gnutm.c).
 */
#include "bank.h"

#include <sys/wait.h>

#define MAX_T (sizeof((struct bench_config *)0)->threads / sizeof(unsigned))

#ifdef AXSTM_HAVE_GNU_TM
#define HAVE_GNU_TM 1
#else
#define HAVE_GNU_TM 0
#endif

/* Columns: the five rows of this process, then tm-default from the child. */
enum { COL_TM_DEFAULT = BANK_ROWS, NCOLS };

static const char *const col_name[NCOLS] = {"using",      "atomically", "kept",     "mutex-tbl",
                                            "mutex-acct", "tinystm",    "tm-ml_wt", "tm-default"};
static const char *const ratio_name[NCOLS] = {"using/mt", "atom/mt",    "kept/mt",  "",
                                              "acct/mt",  "tinystm/mt", "ml_wt/mt", "dflt/mt*"};

static void (*const row_body[BANK_ROWS])(struct bench_worker *) = {
    bank_body_using,       bank_body_atomically,    bank_body_kept,
    bank_body_mutex_table, bank_body_mutex_account,
#ifdef AXSTM_HAVE_TINYSTM
    bank_tinystm_body,
#else
    NULL,
#endif
#ifdef AXSTM_HAVE_GNU_TM
    bank_gnutm_body,
#else
    NULL,
#endif
};

/* Everything measured for one account count. */
struct results {
    double ops[NCOLS][MAX_T][BENCH_MAX_RUNS];   /* transfers/s per run */
    double ratio[NCOLS][MAX_T][BENCH_MAX_RUNS]; /* vs mutex-tbl, same run */
    double median_ops[NCOLS][MAX_T];
    double median_ratio[NCOLS][MAX_T];
    uint64_t conflicts[NCOLS][MAX_T], busy[NCOLS][MAX_T], commits[NCOLS][MAX_T];
    uint64_t irrevocable[NCOLS][MAX_T], samples[NCOLS][MAX_T];
    bool have[NCOLS];
};

static struct results res; /* large: kept off the stack */

/*
 * One timed window of one row; returns transfers/s.  Checks the row's
 * invariant afterwards: no error, and the total of all balances unchanged.
 */
static double measure(struct bank *bk, enum bank_row row, unsigned threads, size_t ti,
                      double seconds, uint64_t seed, int col)
{
    axstm_stats before = {0}, after = {0};
    if (row == BANK_KEPT && bank_keep_handles(bk->store, &bk->names, bk->n, bk->kept, threads) != 0)
        exit(1);
    if (bk->store != NULL)
        axstm_store_stats(bk->store, &before);
    struct bench_team_result r;
    if (bench_team_run(threads, seconds, row_body[row], bk, seed, &r) != 0) {
        fprintf(stderr, "bank: cannot run %u threads\n", threads);
        exit(1);
    }
    if (r.failed != 0) {
        fprintf(stderr, "bank: FAILED: row %s, %zu accounts, %u threads: %s\n", col_name[col],
                bk->n, threads, axstm_strerror(r.failed));
        exit(1);
    }
    bool ok;
    int64_t total = bank_total(bk, row, &ok);
    if (!ok || total != (int64_t)bk->n * BANK_INITIAL) {
        fprintf(stderr,
                "bank: FAILED: row %s, %zu accounts, %u threads: total %lld, "
                "expected %lld%s\n",
                col_name[col], bk->n, threads, (long long)total, (long long)bk->n * BANK_INITIAL,
                ok ? "" : " (accounts missing)");
        exit(1);
    }
    if (bk->store != NULL && (row == BANK_USING || row == BANK_ATOMICALLY || row == BANK_KEPT)) {
        axstm_store_stats(bk->store, &after);
        res.conflicts[col][ti] += after.conflicts - before.conflicts;
        res.busy[col][ti] += after.busy - before.busy;
        res.commits[col][ti] += after.commits - before.commits;
    }
    res.irrevocable[col][ti] += r.extra[BANK_X_IRREVOCABLE];
    res.samples[col][ti] += r.extra[BANK_X_SAMPLES];
    return (double)r.total / r.seconds;
}

/* Medians of every cell and of the per-run ratios against mutex-tbl. */
static void summarise(const struct bench_config *cfg, int col, size_t ti)
{
    double tmp[BENCH_MAX_RUNS];
    memcpy(tmp, res.ops[col][ti], cfg->runs * sizeof *tmp);
    res.median_ops[col][ti] = bench_median(tmp, cfg->runs);
    memcpy(tmp, res.ratio[col][ti], cfg->runs * sizeof *tmp);
    res.median_ratio[col][ti] = bench_median(tmp, cfg->runs);
}

/* ---- the tm-default child ------------------------------------------- */

/* Child mode: tm-default and mutex-tbl interleaved, medians on stdout. */
static int gnutm_child(const struct bench_config *cfg, size_t n)
{
    struct bank bk;
    if (bank_init(&bk, n, false, true) != 0) {
        fprintf(stderr, "bank: out of memory\n");
        return 1;
    }
    for (unsigned run = 0; run < cfg->runs; run++)
        for (size_t ti = 0; ti < cfg->nthreads; ti++) {
            uint64_t seed = 7919u * run + 31u * ti + 5u;
            double tm =
                measure(&bk, BANK_GNU_TM, cfg->threads[ti], ti, cfg->seconds, seed, COL_TM_DEFAULT);
            double mt = measure(&bk, BANK_MUTEX_TABLE, cfg->threads[ti], ti, cfg->seconds, seed,
                                BANK_MUTEX_TABLE);
            res.ops[COL_TM_DEFAULT][ti][run] = tm;
            res.ratio[COL_TM_DEFAULT][ti][run] = tm / mt;
        }
    for (size_t ti = 0; ti < cfg->nthreads; ti++) {
        summarise(cfg, COL_TM_DEFAULT, ti);
        printf("cell %zu %.6g %.6g %llu %llu\n", ti, res.median_ops[COL_TM_DEFAULT][ti],
               res.median_ratio[COL_TM_DEFAULT][ti],
               (unsigned long long)res.irrevocable[COL_TM_DEFAULT][ti],
               (unsigned long long)res.samples[COL_TM_DEFAULT][ti]);
    }
    bank_free(&bk);
    return 0;
}

/*
 * Runs this program again without ITM_DEFAULT_METHOD (libitm's default)
 * to measure tm-default at n accounts; fills its column.  Returns 0, or -1
 * when the child could not run (the column is then left out).
 */
static int run_gnutm_child(const struct bench_config *cfg, size_t n)
{
    char a_n[64], a_runs[32], a_secs[64], a_threads[64];
    snprintf(a_n, sizeof a_n, "--gnutm-child=%zu", n);
    snprintf(a_runs, sizeof a_runs, "--runs=%u", cfg->runs);
    snprintf(a_secs, sizeof a_secs, "--seconds=%.17g", cfg->seconds);
    size_t off = (size_t)snprintf(a_threads, sizeof a_threads, "--threads=");
    for (size_t i = 0; i < cfg->nthreads && off < sizeof a_threads; i++)
        off += (size_t)snprintf(a_threads + off, sizeof a_threads - off, "%s%u", i ? "," : "",
                                cfg->threads[i]);

    int fd[2];
    if (pipe(fd) != 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        unsetenv("ITM_DEFAULT_METHOD");
        execl("/proc/self/exe", cfg->prog, a_n, a_runs, a_secs, a_threads, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    FILE *in = fdopen(fd[0], "r");
    char line[256];
    size_t got = 0;
    while (in != NULL && fgets(line, sizeof line, in) != NULL) {
        size_t ti;
        double ops, ratio;
        unsigned long long irr, samples;
        if (sscanf(line, "cell %zu %lg %lg %llu %llu", &ti, &ops, &ratio, &irr, &samples) == 5 &&
            ti < cfg->nthreads) {
            res.median_ops[COL_TM_DEFAULT][ti] = ops;
            res.median_ratio[COL_TM_DEFAULT][ti] = ratio;
            res.irrevocable[COL_TM_DEFAULT][ti] = irr;
            res.samples[COL_TM_DEFAULT][ti] = samples;
            got++;
        }
    }
    if (in != NULL)
        fclose(in);
    else
        close(fd[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
        fprintf(stderr, "bank: FAILED: the tm-default child did not finish\n");
        exit(1);
    }
    if (WEXITSTATUS(status) == 1) /* a correctness failure, already printed */
        exit(1);
    return WEXITSTATUS(status) == 0 && got == cfg->nthreads ? 0 : -1;
}

/* ---- the report ----------------------------------------------------- */

static void print_method(const char *what, uint64_t irrevocable, uint64_t samples)
{
    if (samples == 0)
        return;
    double share = (double)irrevocable / (double)samples;
    printf("  %s: %.1f%% of sampled transactions ran serial-irrevocable (%s)\n", what, 100 * share,
           share < 0.01   ? "a retryable STM method was in effect"
           : share > 0.99 ? "no STM method: transactions ran one at a time"
                          : "mixed: serial until more threads joined");
}

static void print_table(const struct bench_config *cfg, size_t n)
{
    const char *names[1 + 2 * NCOLS];
    int cols[2 * NCOLS], k = 0;
    names[0] = "threads";
    for (int c = 0; c < NCOLS; c++)
        if (res.have[c])
            names[1 + k] = col_name[c], cols[k++] = c;
    int nrate = k;
    for (int c = 0; c < NCOLS; c++)
        if (res.have[c] && c != BANK_MUTEX_TABLE)
            names[1 + k] = ratio_name[c], cols[k++] = c;

    printf("%zu accounts: transfers/s (median), and ratio to mutex-tbl\n", n);
    struct bench_table t;
    bench_table_begin(&t, 1 + k, names, 7);
    for (size_t ti = 0; ti < cfg->nthreads; ti++) {
        bench_table_cell(&t, "%u", cfg->threads[ti]);
        for (int i = 0; i < k; i++) {
            char buf[32];
            if (i < nrate)
                bench_table_cell(&t, "%s",
                                 bench_fmt_rate(buf, sizeof buf, res.median_ops[cols[i]][ti]));
            else
                bench_table_cell(&t, "%.2fx", res.median_ratio[cols[i]][ti]);
        }
    }
    for (size_t ti = 0; ti < cfg->nthreads; ti++) {
        int c[3] = {BANK_USING, BANK_ATOMICALLY, BANK_KEPT};
        for (int i = 0; i < 3; i++) {
            uint64_t commits = res.commits[c[i]][ti];
            if (commits == 0 || res.conflicts[c[i]][ti] + res.busy[c[i]][ti] == 0)
                continue;
            printf("  %s, %u threads: %.2f conflicts and %.2f busy per 1000 commits\n",
                   col_name[c[i]], cfg->threads[ti],
                   1000.0 * (double)res.conflicts[c[i]][ti] / (double)commits,
                   1000.0 * (double)res.busy[c[i]][ti] / (double)commits);
        }
    }
    for (size_t ti = 0; ti < cfg->nthreads; ti++) {
        char what[64];
        for (int c = BANK_GNU_TM; c <= COL_TM_DEFAULT; c++) {
            if (!res.have[c])
                continue;
            snprintf(what, sizeof what, "%s, %u thread%s", col_name[c], cfg->threads[ti],
                     cfg->threads[ti] > 1 ? "s" : "");
            print_method(what, res.irrevocable[c][ti], res.samples[c][ti]);
        }
    }
    if (res.have[COL_TM_DEFAULT])
        printf("  * dflt/mt: tm-default ran in a child process (libitm fixes its method per "
               "process), against the child's own mutex-tbl row\n");
}

/* The targets at 1024 accounts, from this run's ratios. */
static void print_targets(const struct bench_config *cfg)
{
    printf("targets (1024 accounts):\n");
    for (size_t ti = 0; ti < cfg->nthreads; ti++) {
        unsigned t = cfg->threads[ti];
        const char *th = t == 1 ? "thread" : "threads";
        /* The targets are for one thread; others are shown for context. */
        bool binding = t == 1;
        double u = res.median_ratio[BANK_USING][ti], a = res.median_ratio[BANK_ATOMICALLY][ti];
        double k = res.median_ratio[BANK_KEPT][ti], k_ns = 1e9 / res.median_ops[BANK_KEPT][ti];
        printf("  using+commit / mutex-tbl, %u %s: %.2fx (target >= 1.0x)%s%s\n", t, th, u,
               binding ? ": " : "", binding ? bench_met(u >= 1.0) : "");
        printf("  atomically / mutex-tbl, %u %s: %.2fx (target >= 0.8x)%s%s\n", t, th, a,
               binding ? ": " : "", binding ? bench_met(a >= 0.8) : "");
        printf("  kept: %.1f ns per transfer, %.2fx mutex-tbl, %u %s (target <= 45 ns)%s%s\n", k_ns,
               k, t, th, binding ? ": " : "", binding ? bench_met(k_ns <= 45.0) : "");
        if (res.have[BANK_TINYSTM]) {
            double rk[BENCH_MAX_RUNS];
            for (unsigned r = 0; r < cfg->runs; r++)
                rk[r] = res.ops[BANK_KEPT][ti][r] / res.ops[BANK_TINYSTM][ti][r];
            printf(
                "  kept / tinystm, %u %s: %.2fx, tinystm %.1f ns per transfer (level: >= 1.0x)\n",
                t, th, bench_median(rk, cfg->runs), 1e9 / res.median_ops[BANK_TINYSTM][ti]);
        }
        if (res.have[BANK_GNU_TM]) {
            /* Per-run ratios of the two rows, both measured in this run. */
            double ru[BENCH_MAX_RUNS], ra[BENCH_MAX_RUNS];
            for (unsigned r = 0; r < cfg->runs; r++) {
                ru[r] = res.ops[BANK_USING][ti][r] / res.ops[BANK_GNU_TM][ti][r];
                ra[r] = res.ops[BANK_ATOMICALLY][ti][r] / res.ops[BANK_GNU_TM][ti][r];
            }
            double mu = bench_median(ru, cfg->runs), ma = bench_median(ra, cfg->runs);
            printf("  using+commit / tm-ml_wt, %u %s: %.2fx (target > 1.0x)%s%s\n", t, th, mu,
                   binding ? ": " : "", binding ? bench_met(mu > 1.0) : "");
            printf("  atomically / tm-ml_wt, %u %s: %.2fx (target > 1.0x)%s%s\n", t, th, ma,
                   binding ? ": " : "", binding ? bench_met(ma > 1.0) : "");
        }
    }
}

static void bench_accounts(const struct bench_config *cfg, size_t n)
{
    memset(&res, 0, sizeof res);
    struct bank bk;
    uint64_t t0 = bench_now_ns();
    if (bank_init(&bk, n, true, true) != 0) {
        fprintf(stderr, "bank: cannot make %zu accounts\n", n);
        exit(1);
    }
    printf("(%zu accounts made in %.2f s)\n", n, (double)(bench_now_ns() - t0) / 1e9);
    for (int c = 0; c < BANK_ROWS; c++)
        res.have[c] = row_body[c] != NULL;

    for (unsigned run = 0; run < cfg->runs; run++)
        for (size_t ti = 0; ti < cfg->nthreads; ti++)
            for (int row = 0; row < BANK_ROWS; row++) {
                if (!res.have[row])
                    continue;
                uint64_t seed = 7919u * run + 31u * ti + (uint64_t)row;
                res.ops[row][ti][run] =
                    measure(&bk, (enum bank_row)row, cfg->threads[ti], ti, cfg->seconds, seed, row);
            }
    for (int row = 0; row < BANK_ROWS; row++)
        for (size_t ti = 0; ti < cfg->nthreads && res.have[row]; ti++) {
            for (unsigned run = 0; run < cfg->runs; run++)
                res.ratio[row][ti][run] =
                    res.ops[row][ti][run] / res.ops[BANK_MUTEX_TABLE][ti][run];
            summarise(cfg, row, ti);
        }
    bank_free(&bk);

    if (HAVE_GNU_TM) {
        res.have[COL_TM_DEFAULT] = run_gnutm_child(cfg, n) == 0;
        if (!res.have[COL_TM_DEFAULT])
            printf("(tm-default: the child run failed; column left out)\n");
    }
    print_table(cfg, n);
    if (n == 1024)
        print_targets(cfg);
    printf("\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct bench_config cfg;
    bool extra[argc > 0 ? argc : 1];
    bench_config_init(&cfg, argc, argv, extra);
    size_t child_n = 0;
    for (int i = 1; i < argc; i++) {
        if (!extra[i])
            continue;
        char *end;
        if (strncmp(argv[i], "--gnutm-child=", 14) == 0 &&
            (child_n = strtoul(argv[i] + 14, &end, 10)) >= 2 && *end == '\0')
            continue;
        fprintf(stderr, "%s: bad argument '%s'\n", cfg.prog, argv[i]);
        bench_usage(cfg.prog, stderr);
        return 2;
    }
    if (cfg.nthreads > MAX_T)
        cfg.nthreads = MAX_T;
    if (child_n != 0)
        return HAVE_GNU_TM ? gnutm_child(&cfg, child_n) : 2;

    /* Before the first transaction of this process: libitm reads it once. */
    if (HAVE_GNU_TM)
        setenv("ITM_DEFAULT_METHOD", "ml_wt", 1);

    bench_print_header(&cfg, "transfers between two random named accounts");
    if (!HAVE_GNU_TM)
        printf("(GCC TM rows left out: configure found no -fgnu-tm)\n\n");
    if (row_body[BANK_TINYSTM] == NULL)
        printf("(tinystm row left out: configure was not given TINYSTM_DIR)\n\n");
    static const size_t full[] = {16, 1024, 1000000}, quick[] = {16, 1024};
    const size_t *sizes = cfg.quick ? quick : full;
    size_t nsizes = cfg.quick ? 2 : 3;
    for (size_t i = 0; i < nsizes; i++)
        bench_accounts(&cfg, sizes[i]);
    return 0;
}
