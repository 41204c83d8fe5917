/* SPDX-License-Identifier: MIT */
/*
 * watch.c -- what watches cost: wake-up latency and commit overhead.
 *
 *   bench/watch [--quick] [--runs=N]
 *
 * (a) Wake-up latency: one thread sleeps in poll() on a watch's descriptor,
 *     another commits the watched key; the time from just before the
 *     commit to poll() returning, median and p99 over 10 000 events (2 000
 *     with --quick).  Before each commit the committer waits until the
 *     poller is back in poll(), and a little longer so that it is really
 *     asleep: every event is a real wake-up, never one already queued.
 *     The same is measured for a bare eventfd write: the floor that any
 *     descriptor-based wake-up pays.  The two rows are measured in
 *     alternating blocks (after a warm-up block that is not counted), so a
 *     noisy moment of the machine hits both alike.
 * (b) Commit cost: one value handle, set_i64 + commit in a loop of 1 000 000
 *     (200 000 with --quick; no checkout per commit), on a key with no
 *     watch, with a watch on that key, and with a watch on a different
 *     key.  A watch that nobody re-arms is notified by the first commit
 *     only, so one more row re-arms it after every commit: each commit
 *     then pays the full notification (and the row the re-arm's read()).
 *     Median of --runs runs (default 5), rows interleaved within each run;
 *     a ratio is the median of the per-run ratios.
 *
 * Times come from CLOCK_MONOTONIC.  Timings are reported, never asserted;
 * exit status 1 only when a call fails.
 */
#include "axstm.h"
#include "benchutil.h"

#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>

#define BLOCKS 5        /* (a): alternating blocks per row */
#define SETTLE_NS 50000 /* (a): how long the committer lets the poller fall asleep */

static void fail(const char *what, int rc)
{
    fprintf(stderr, "watch: FAILED: %s: %s\n", what, axstm_strerror(rc));
    exit(1);
}

/* ------------------------------------------------------------------ */
/* (a) wake-up latency                                                */
/* ------------------------------------------------------------------ */

struct pingpong {
    axstm_watch *watch; /* NULL: the bare eventfd row */
    axstm_value *value; /* the committer's handle on the watched key */
    int fd;             /* what the poller polls */
    size_t events;
    atomic_size_t ready; /* events the poller is ready for: it is in poll() */
    _Atomic uint64_t t0; /* when the current event's commit began */
    uint64_t *latency;   /* per event, written by the poller */
    int failed;
};

static void *poller(void *arg)
{
    struct pingpong *pp = arg;
    struct pollfd p = {pp->fd, POLLIN, 0};

    for (size_t i = 0; i < pp->events; i++) {
        uint64_t junk;
        atomic_store(&pp->ready, i + 1);
        while (poll(&p, 1, -1) < 0)
            if (errno != EINTR) {
                pp->failed = 1;
                return NULL;
            }
        pp->latency[i] = bench_now_ns() - atomic_load(&pp->t0);
        /* Consume the event: re-arm the watch, or read the bare eventfd. */
        if (pp->watch != NULL)
            axstm_watch_rearm(pp->watch);
        else if (read(pp->fd, &junk, sizeof junk) < 0)
            pp->failed = 1;
    }
    return NULL;
}

static void spin_ns(uint64_t ns)
{
    uint64_t until = bench_now_ns() + ns;
    while (bench_now_ns() < until)
        ;
}

/* One block of pp->events events; fills pp->latency[0..events). */
static void measure_wakeups(struct pingpong *pp)
{
    pthread_t t;
    int rc;

    atomic_store(&pp->ready, 0);
    if (pthread_create(&t, NULL, poller, pp) != 0) {
        fprintf(stderr, "watch: FAILED: cannot create a thread\n");
        exit(1);
    }
    for (size_t i = 0; i < pp->events; i++) {
        while (atomic_load(&pp->ready) != i + 1)
            sched_yield();
        spin_ns(SETTLE_NS);
        atomic_store(&pp->t0, bench_now_ns());
        if (pp->value != NULL) {
            if ((rc = axstm_value_set_i64(pp->value, (int64_t)i)) != AXSTM_OK)
                fail("set_i64", rc);
            while ((rc = axstm_value_commit(pp->value)) == AXSTM_BUSY_RETRY)
                ;
            if (rc != AXSTM_OK)
                fail("commit", rc);
        } else {
            uint64_t one = 1;
            if (write(pp->fd, &one, sizeof one) != (ssize_t)sizeof one) {
                perror("watch: FAILED: eventfd write");
                exit(1);
            }
        }
    }
    pthread_join(t, NULL);
    if (pp->failed) {
        fprintf(stderr, "watch: FAILED: the poller's poll or read failed\n");
        exit(1);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void latency_table(size_t events)
{
    static const char *const cols[] = {"wake-up (us)", "median", "p99", "max"};
    static const char *const rows[2] = {
        "axstm commit -> watch fd readable",
        "bare eventfd write -> readable (floor)",
    };
    const char *key = "watched";
    size_t block = (events + BLOCKS - 1) / BLOCKS;
    struct pingpong pp[2];
    axstm_store *s = axstm_store_new();
    struct bench_table t;
    int rc;

    events = block * BLOCKS;
    if (s == NULL)
        fail("store_new", AXSTM_ENOMEM);
    for (int r = 0; r < 2; r++) {
        memset(&pp[r], 0, sizeof pp[r]);
        pp[r].latency = calloc(events, sizeof *pp[r].latency);
        if (pp[r].latency == NULL)
            fail("calloc", AXSTM_ENOMEM);
    }
    if ((rc = axstm_watch_new(s, &key, 1, &pp[0].watch)) != AXSTM_OK)
        fail("watch_new", rc);
    if ((rc = axstm_usevar(s, key, &pp[0].value)) != AXSTM_OK)
        fail("usevar", rc);
    pp[0].fd = axstm_watch_fd(pp[0].watch);
    pp[1].fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (pp[1].fd < 0) {
        perror("watch: FAILED: eventfd");
        exit(1);
    }

    uint64_t *base[2] = {pp[0].latency, pp[1].latency};
    for (int b = -1; b < BLOCKS; b++) /* block -1 warms up; block 0 overwrites it */
        for (int r = 0; r < 2; r++) {
            pp[r].events = block;
            pp[r].latency = base[r] + (b < 0 ? 0 : (size_t)b * block);
            measure_wakeups(&pp[r]);
        }

    printf("(a) wake-up latency: commit -> poll() returns, %zu events per row, "
           "committer and poller on two threads\n\n",
           events);
    bench_table_begin(&t, 4, cols, 40);
    for (int r = 0; r < 2; r++) {
        uint64_t *lat = base[r];
        qsort(lat, events, sizeof *lat, cmp_u64);
        bench_table_cell(&t, "%s", rows[r]);
        bench_table_cell(&t, "%.1f", (double)lat[events / 2] / 1e3);
        bench_table_cell(&t, "%.1f", (double)lat[events * 99 / 100] / 1e3);
        bench_table_cell(&t, "%.1f", (double)lat[events - 1] / 1e3);
        free(lat);
    }
    axstm_value_free(pp[0].value);
    axstm_watch_free(pp[0].watch);
    close(pp[1].fd);
    axstm_store_free(s);
}

/* ------------------------------------------------------------------ */
/* (b) commit cost                                                    */
/* ------------------------------------------------------------------ */

enum row { NO_WATCH, WATCH_SAME_KEY, WATCH_REARMED, WATCH_OTHER_KEY, NROWS };

static const char *const row_name[NROWS] = {
    "no watch",
    "one watch on the committed key",
    "  the same, re-armed after each commit",
    "one watch on a different key",
};

/* ns per set_i64 + commit, over `commits` commits of one handle. */
static double commit_cost(enum row r, size_t commits)
{
    axstm_store *s = axstm_store_new();
    axstm_value *v;
    axstm_watch *w = NULL;
    const char *watched = r == WATCH_OTHER_KEY ? "other" : "key";
    int rc;

    if (s == NULL)
        fail("store_new", AXSTM_ENOMEM);
    if ((rc = axstm_usevar(s, "key", &v)) != AXSTM_OK)
        fail("usevar", rc);
    if (r != NO_WATCH && (rc = axstm_watch_new(s, &watched, 1, &w)) != AXSTM_OK)
        fail("watch_new", rc);
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < commits; i++) {
        axstm_value_set_i64(v, (int64_t)i);
        if ((rc = axstm_value_commit(v)) != AXSTM_OK)
            fail("commit", rc);
        if (r == WATCH_REARMED)
            axstm_watch_rearm(w);
    }
    uint64_t t1 = bench_now_ns();
    axstm_watch_free(w);
    axstm_value_free(v);
    axstm_store_free(s);
    return (double)(t1 - t0) / (double)commits;
}

static void commit_table(const struct bench_config *cfg, size_t commits)
{
    static const char *const cols[] = {"commit cost", "ns/commit", "ratio", "min", "max"};
    double ns[NROWS][BENCH_MAX_RUNS], ratio[NROWS][BENCH_MAX_RUNS];
    struct bench_table t;

    for (unsigned run = 0; run < cfg->runs; run++)
        for (int r = 0; r < NROWS; r++) {
            ns[r][run] = commit_cost((enum row)r, commits);
            if (r != NO_WATCH)
                ratio[r][run] = ns[r][run] / ns[NO_WATCH][run];
        }
    printf("\n(b) commit cost: one value handle, set_i64 + commit, %zu commits per run, "
           "median of %u runs\n\n",
           commits, cfg->runs);
    bench_table_begin(&t, 5, cols, 40);
    for (int r = 0; r < NROWS; r++) {
        bench_table_cell(&t, "%s", row_name[r]);
        bench_table_cell(&t, "%.1f", bench_median(ns[r], cfg->runs));
        bench_table_cell(&t, "%.2f", r == NO_WATCH ? 1.0 : bench_median(ratio[r], cfg->runs));
        bench_table_cell(&t, "%.1f", bench_min(ns[r], cfg->runs));
        bench_table_cell(&t, "%.1f", bench_max(ns[r], cfg->runs));
    }
}

int main(int argc, char **argv)
{
    struct bench_config cfg;

    bench_config_init(&cfg, argc, argv, NULL);
    bench_print_header(&cfg, "watches: wake-up latency and what they add to a commit");
    latency_table(cfg.quick ? 2000 : 10000);
    commit_table(&cfg, cfg.quick ? 200000 : 1000000);
    return 0;
}
