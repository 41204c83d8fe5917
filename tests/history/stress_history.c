/* SPDX-License-Identifier: MIT */
/*
 * stress_history.c -- the long run of the history checker, for `make
 * stress`: the workloads of check_history's "Store" case for minutes,
 * millions of transactions, checked window by window (bounded memory).
 *
 *   stress_history [SECONDS [THREADS [TXNS_PER_THREAD_PER_WINDOW]]]
 *
 * SECONDS (default 60) of running are shared out over the configurations:
 * 4 keys (every transaction contends), 64 keys, 1024 keys (little
 * contention).  Checking the windows comes on top (about as long again).  THREADS
 * defaults to 4.  Prints the transactions checked and the violations per
 * configuration; exits 1 on any violation or failed run.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "history.h"

static double arg_double(int argc, char **argv, int i, double dflt, double lo, double hi)
{
    if (argc <= i)
        return dflt;
    char *end;
    double d = strtod(argv[i], &end);
    if (end == argv[i] || *end != '\0' || d < lo || d > hi) {
        fprintf(stderr, "stress_history: bad argument '%s' (%g..%g)\n", argv[i], lo, hi);
        exit(2);
    }
    return d;
}

int main(int argc, char **argv)
{
    static const uint32_t key_counts[] = {4, 64, 1024};
    const size_t nconfigs = sizeof key_counts / sizeof key_counts[0];
    double seconds = arg_double(argc, argv, 1, 60.0, 0.01, 7.0 * 24 * 3600);
    unsigned threads = (unsigned)arg_double(argc, argv, 2, 4, 1, HIST_MAX_THREADS);
    size_t per_window = (size_t)arg_double(argc, argv, 3, 1 << 17, 64, 1 << 26);

    printf("stress_history: %.1f s over %zu configurations, %u threads, windows of up to "
           "%zu transactions per thread\n",
           seconds, nconfigs, threads, per_window);
    uint64_t total = 0, violations = 0;
    int status = 0;
    for (size_t i = 0; i < nconfigs; i++) {
        struct hist_run_config cfg = {threads,    key_counts[i], seconds / (double)nconfigs,
                                      per_window, stdout,        NULL,
                                      false,      false};
        static struct hist_run_result res;
        printf("== %u threads, %" PRIu32 " keys, %.1f s\n", threads, key_counts[i], cfg.seconds);
        fflush(stdout);
        long v = hist_run(&cfg, &res);
        if (v < 0) {
            printf("run failed: %s\n", res.report.text);
            status = 1;
            continue;
        }
        printf("  %.1f s running, %.1f s checking, %" PRIu64 " windows, %" PRIu64
               " busy retries, %.0f committed transactions/s\n",
               res.seconds - res.check_seconds, res.check_seconds, res.windows, res.busy,
               (double)res.report.committed / (res.seconds - res.check_seconds));
        hist_report_print(&res.report, stdout);
        fflush(stdout);
        total += res.report.txns;
        violations += res.report.violations;
        if (v != 0)
            status = 1;
    }
    printf("stress_history: %" PRIu64 " transactions checked, %" PRIu64 " violations: %s\n", total,
           violations, status == 0 ? "PASS" : "FAIL");
    return status;
}
