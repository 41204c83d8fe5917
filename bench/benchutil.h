/* SPDX-License-Identifier: MIT */
/*
 * benchutil.h -- what the bench/ programs share: clocks, medians, a fast
 * per-thread random generator, timed runs of a team of threads, a tiny
 * table printer, settings from the command line and the environment, the
 * resident set size, and the plain string-keyed hash table that stands for
 * "what a user writes by hand" in every comparison.
 *
 * Everything is static inline: each program is a single file plus this
 * header, and the compiler sees the whole hot loop of every row.
 *
 * How the numbers are made (every program):
 *   - a cell is the median of RUNS timed windows of SECONDS each;
 *   - rows are interleaved within each run (run 1: row A, row B...; run 2:
 *     row A, row B...), so slow drift of a noisy machine hits all rows
 *     alike, and a ratio between two rows is the median of the per-run
 *     ratios, never a ratio of numbers taken minutes apart;
 *   - timings are reported, never asserted.  Only correctness is checked
 *     (totals conserved, every thread made progress): exit status 1.
 */
#ifndef AXSTM_BENCHUTIL_H
#define AXSTM_BENCHUTIL_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MAX_THREADS 64
#define BENCH_MAX_RUNS 101
#define BENCH_MAX_COLS 16

/* ------------------------------------------------------------------ */
/* Time                                                               */
/* ------------------------------------------------------------------ */

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void bench_sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Keeps the compiler from deleting a computation whose result is unused
 * (a lookup that is only timed), without storing it anywhere. */
static inline void bench_use(uint64_t x)
{
    __asm__ volatile("" : : "r"(x));
}

/* ------------------------------------------------------------------ */
/* Statistics                                                         */
/* ------------------------------------------------------------------ */

/* Median of v[0..n) (v is reordered).  0 for n == 0. */
static inline double bench_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    /* Insertion sort: n is a run count, a handful. */
    for (size_t i = 1; i < n; i++) {
        double x = v[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static inline double bench_min(const double *v, size_t n)
{
    double m = n ? v[0] : 0;
    for (size_t i = 1; i < n; i++)
        m = v[i] < m ? v[i] : m;
    return m;
}

static inline double bench_max(const double *v, size_t n)
{
    double m = n ? v[0] : 0;
    for (size_t i = 1; i < n; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

/* ------------------------------------------------------------------ */
/* Random numbers                                                     */
/* ------------------------------------------------------------------ */

/* splitmix64: turns any seed (0, 1, 2...) into a well-mixed state. */
static inline uint64_t bench_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* xorshift64*: a few cycles per number and no shared state, so drawing
 * account numbers costs every row the same and never contends. */
struct bench_rng {
    uint64_t s;
};

static inline void bench_rng_seed(struct bench_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    r->s = bench_splitmix64(&x) | 1; /* xorshift must never hold 0 */
}

static inline uint64_t bench_rng_next(struct bench_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * UINT64_C(0x2545f4914f6cdd1d);
}

/* A number in [0, n), n > 0: the high half of a 64x64 product (Lemire),
 * which avoids a division and is unbiased enough for a benchmark. */
static inline size_t bench_rng_below(struct bench_rng *r, size_t n)
{
    return (size_t)(((unsigned __int128)bench_rng_next(r) * n) >> 64);
}

/* ------------------------------------------------------------------ */
/* Settings                                                           */
/* ------------------------------------------------------------------ */

struct bench_config {
    const char *prog;
    bool quick;     /* --quick: fewer sizes, runs and seconds (CI) */
    unsigned runs;  /* timed windows per cell; the median is reported */
    double seconds; /* length of one window */
    unsigned threads[8];
    size_t nthreads; /* thread counts to measure (bank) */
    unsigned ncpu;
};

static inline void bench_usage(const char *prog, FILE *to)
{
    fprintf(to,
            "usage: %s [--quick] [--runs=N] [--seconds=S] [--threads=1,2,...]\n"
            "  --quick        fewer sizes, %u runs of %.1f s per cell (proves it runs)\n"
            "  --runs=N       timed runs per cell, median reported (default 5;\n"
            "                 environment AXSTM_BENCH_RUNS)\n"
            "  --seconds=S    length of one timed run (default 0.5;\n"
            "                 environment AXSTM_BENCH_SECONDS)\n"
            "  --threads=LIST thread counts where a program varies them\n"
            "                 (default 1,2 and 4 when there are 4 CPUs)\n",
            prog, 3u, 0.2);
}

static inline bool bench_parse_runs(const char *s, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > BENCH_MAX_RUNS)
        return false;
    *out = (unsigned)v;
    return true;
}

static inline bool bench_parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v > 0.001 && v < 3600))
        return false;
    *out = v;
    return true;
}

static inline bool bench_parse_threads(const char *s, struct bench_config *c)
{
    c->nthreads = 0;
    while (*s != '\0') {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v < 1 || v > BENCH_MAX_THREADS ||
            c->nthreads == sizeof c->threads / sizeof c->threads[0])
            return false;
        c->threads[c->nthreads++] = (unsigned)v;
        s = end;
        if (*s == ',')
            s++;
        else if (*s != '\0')
            return false;
    }
    return c->nthreads > 0;
}

/*
 * Reads the settings: defaults (5 runs of 0.5 s; --quick: 3 of 0.2 s), then
 * the environment, then the command line, each overriding the one before.
 * Arguments it does not know are left for the caller when `extra` is
 * non-NULL (it receives a bool per argv slot); otherwise they are an error.
 * Exits with status 2 on a bad argument, 0 after --help.
 */
static inline void bench_config_init(struct bench_config *c, int argc, char **argv, bool *extra)
{
    const char *slash = argc > 0 ? strrchr(argv[0], '/') : NULL;
    c->prog = argc > 0 ? (slash ? slash + 1 : argv[0]) : "bench";
    c->quick = false;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0)
            c->quick = true;
    c->runs = c->quick ? 3 : 5;
    c->seconds = c->quick ? 0.2 : 0.5;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->ncpu = ncpu > 0 ? (unsigned)ncpu : 1;
    c->nthreads = 0;
    c->threads[c->nthreads++] = 1;
    c->threads[c->nthreads++] = 2;
    if (c->ncpu >= 4)
        c->threads[c->nthreads++] = 4;

    const char *env = getenv("AXSTM_BENCH_RUNS");
    if (env != NULL && *env != '\0' && !bench_parse_runs(env, &c->runs)) {
        fprintf(stderr, "%s: bad AXSTM_BENCH_RUNS=%s (1..%d)\n", c->prog, env, BENCH_MAX_RUNS);
        exit(2);
    }
    env = getenv("AXSTM_BENCH_SECONDS");
    if (env != NULL && *env != '\0' && !bench_parse_seconds(env, &c->seconds)) {
        fprintf(stderr, "%s: bad AXSTM_BENCH_SECONDS=%s\n", c->prog, env);
        exit(2);
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool ok = true;
        if (extra != NULL)
            extra[i] = false;
        if (strcmp(a, "--quick") == 0)
            continue;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            bench_usage(c->prog, stdout);
            exit(0);
        }
        if (strncmp(a, "--runs=", 7) == 0)
            ok = bench_parse_runs(a + 7, &c->runs);
        else if (strncmp(a, "--seconds=", 10) == 0)
            ok = bench_parse_seconds(a + 10, &c->seconds);
        else if (strncmp(a, "--threads=", 10) == 0)
            ok = bench_parse_threads(a + 10, c);
        else if (extra != NULL)
            extra[i] = true;
        else
            ok = false;
        if (!ok) {
            fprintf(stderr, "%s: bad argument '%s'\n", c->prog, a);
            bench_usage(c->prog, stderr);
            exit(2);
        }
    }
}

/* ------------------------------------------------------------------ */
/* The machine                                                        */
/* ------------------------------------------------------------------ */

static inline void bench_cpu_model(char *buf, size_t size)
{
    snprintf(buf, size, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL)
        return;
    char line[512];
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "model name", 10) != 0)
            continue;
        const char *p = strchr(line, ':');
        if (p == NULL)
            continue;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        snprintf(buf, size, "%s", p);
        buf[strcspn(buf, "\n")] = '\0';
        break;
    }
    fclose(f);
}

/* What ran where: the first lines of every program's output. */
static inline void bench_print_machine(const struct bench_config *c, const char *what)
{
    char model[256];
    bench_cpu_model(model, sizeof model);
    struct utsname u;
    if (uname(&u) != 0)
        snprintf(u.release, sizeof u.release, "?");
    printf("%s: %s\n", c->prog, what);
    printf("machine: %u CPUs online, %s, Linux %s\n", c->ncpu, model, u.release);
#if defined(__clang__)
    printf("compiler: clang %s\n", __clang_version__);
#elif defined(__GNUC__)
    printf("compiler: gcc %s\n", __VERSION__);
#endif
    /* Other work on the machine moves the numbers: say how busy it was. */
    double load[3];
    if (getloadavg(load, 3) == 3)
        printf("load average at start: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
}

/* The header of a timing program: the machine, then how cells are made. */
static inline void bench_print_header(const struct bench_config *c, const char *what)
{
    bench_print_machine(c, what);
    printf("method: median of %u runs of %.2f s per cell%s; ratios are medians of "
           "per-run ratios between rows of the same run\n\n",
           c->runs, c->seconds, c->quick ? " (--quick)" : "");
}

/* Resident set size in bytes, from /proc/self/statm (0 when unknown). */
static inline uint64_t bench_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    unsigned long long size = 0, resident = 0;
    int got = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return got == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

/* MemAvailable from /proc/meminfo in bytes (0 when unknown). */
static inline uint64_t bench_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (f == NULL)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

/* ------------------------------------------------------------------ */
/* A tiny table printer                                               */
/* ------------------------------------------------------------------ */

/* Column 0 is left-aligned (row names), the others right-aligned. */
struct bench_table {
    int ncols;
    int col; /* next column to print */
    int width[BENCH_MAX_COLS];
};

static inline void bench_table_begin(struct bench_table *t, int ncols, const char *const names[],
                                     int first_width)
{
    t->ncols = ncols < BENCH_MAX_COLS ? ncols : BENCH_MAX_COLS;
    t->col = 0;
    int total = 0;
    for (int i = 0; i < t->ncols; i++) {
        int w = (int)strlen(names[i]);
        if (i == 0 && w < first_width)
            w = first_width;
        if (i > 0 && w < 10)
            w = 10;
        t->width[i] = w;
        printf(i == 0 ? "%-*s" : "  %*s", w, names[i]);
        total += w + (i ? 2 : 0);
    }
    printf("\n");
    for (int i = 0; i < total; i++)
        putchar('-');
    printf("\n");
}

__attribute__((format(printf, 2, 3))) static inline void bench_table_cell(struct bench_table *t,
                                                                          const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    int i = t->col;
    printf(i == 0 ? "%-*s" : "  %*s", t->width[i < t->ncols ? i : t->ncols - 1], buf);
    if (++t->col >= t->ncols) {
        printf("\n");
        t->col = 0;
    }
}

/* Formats a rate as e.g. "12.34M" (per second). */
static inline const char *bench_fmt_rate(char *buf, size_t size, double per_s)
{
    if (per_s >= 1e9)
        snprintf(buf, size, "%.2fG", per_s / 1e9);
    else if (per_s >= 1e6)
        snprintf(buf, size, "%.2fM", per_s / 1e6);
    else if (per_s >= 1e3)
        snprintf(buf, size, "%.1fk", per_s / 1e3);
    else
        snprintf(buf, size, "%.0f", per_s);
    return buf;
}

/* "met" or "NOT met", for target lines. */
static inline const char *bench_met(bool met)
{
    return met ? "met" : "NOT met";
}

/* ------------------------------------------------------------------ */
/* Timed runs of a team of threads                                    */
/* ------------------------------------------------------------------ */

/*
 * One thread of a timed run.  The body loops until bench_stopped() and
 * counts its operations in ops; on an unexpected error it stores the code
 * in failed and returns.  Each worker sits on its own cache lines so that
 * counting never contends between threads.
 */
struct bench_worker {
    _Alignas(128) unsigned index;
    unsigned nthreads;
    uint64_t ops;
    uint64_t extra[4]; /* the body's own counters (e.g. conflicts) */
    int failed;
    struct bench_rng rng;
    void *arg;
    const _Atomic int *stop;
    pthread_barrier_t *start;
    void (*body)(struct bench_worker *w);
};

static inline bool bench_stopped(const struct bench_worker *w)
{
    return atomic_load_explicit(w->stop, memory_order_relaxed) != 0;
}

struct bench_team_result {
    double seconds;
    uint64_t total;
    uint64_t per_thread[BENCH_MAX_THREADS];
    uint64_t extra[4]; /* summed over threads */
    int failed;        /* the first worker's error, 0 if none */
};

static inline void *bench_worker_main(void *p)
{
    struct bench_worker *w = p;
    pthread_barrier_wait(w->start);
    w->body(w);
    return NULL;
}

/*
 * Runs body on nthreads threads for `seconds`: all start together at a
 * barrier, the calling thread sleeps through the window, raises the stop
 * flag and joins them.  seed makes each thread's random stream different
 * (and different per run).  Returns 0, or -1 when threads cannot be made.
 */
static inline int bench_team_run(unsigned nthreads, double seconds,
                                 void (*body)(struct bench_worker *w), void *arg, uint64_t seed,
                                 struct bench_team_result *out)
{
    if (nthreads < 1 || nthreads > BENCH_MAX_THREADS)
        return -1;
    static struct bench_worker workers[BENCH_MAX_THREADS];
    pthread_t tid[BENCH_MAX_THREADS];
    pthread_barrier_t start;
    _Atomic int stop = 0;
    if (pthread_barrier_init(&start, NULL, nthreads + 1) != 0)
        return -1;
    for (unsigned i = 0; i < nthreads; i++) {
        struct bench_worker *w = &workers[i];
        memset(w, 0, sizeof *w);
        w->index = i;
        w->nthreads = nthreads;
        bench_rng_seed(&w->rng, seed * 1000003u + i);
        w->arg = arg;
        w->stop = &stop;
        w->start = &start;
        w->body = body;
        if (pthread_create(&tid[i], NULL, bench_worker_main, w) != 0) {
            fprintf(stderr, "bench: cannot create thread %u\n", i);
            exit(1); /* the barrier would wait forever for it */
        }
    }
    pthread_barrier_wait(&start);
    uint64_t t0 = bench_now_ns();
    bench_sleep_ns((uint64_t)(seconds * 1e9));
    atomic_store_explicit(&stop, 1, memory_order_relaxed);
    uint64_t t1 = bench_now_ns();
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(tid[i], NULL);
        out->per_thread[i] = workers[i].ops;
        out->total += workers[i].ops;
        for (int k = 0; k < 4; k++)
            out->extra[k] += workers[i].extra[k];
        if (out->failed == 0)
            out->failed = workers[i].failed;
    }
    pthread_barrier_destroy(&start);
    out->seconds = (double)(t1 - t0) / 1e9;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Key names, made before any timing                                  */
/* ------------------------------------------------------------------ */

/* n names "<prefix><i>" in one block at a fixed stride, so name i is one
 * multiplication away and formatting is never timed. */
struct bench_names {
    char *buf;
    size_t stride;
    size_t n;
    double mean_bytes; /* mean strlen + 1 */
};

static inline int bench_names_init(struct bench_names *nm, const char *prefix, size_t n)
{
    char tmp[64];
    int widest = snprintf(tmp, sizeof tmp, "%s%zu", prefix, n ? n - 1 : 0);
    nm->stride = (size_t)widest + 1;
    nm->n = n;
    nm->buf = malloc(n * nm->stride + 1);
    if (nm->buf == NULL)
        return -1;
    double bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += snprintf(nm->buf + i * nm->stride, nm->stride, "%s%zu", prefix, i) + 1;
    nm->mean_bytes = n ? bytes / (double)n : 0;
    return 0;
}

static inline const char *bench_name(const struct bench_names *nm, size_t i)
{
    return nm->buf + i * nm->stride;
}

static inline void bench_names_free(struct bench_names *nm)
{
    free(nm->buf);
    nm->buf = NULL;
}

/* ------------------------------------------------------------------ */
/* The plain table: what a user writes by hand                        */
/* ------------------------------------------------------------------ */

/*
 * A chained hash table from NUL-terminated strings to int64 values, as a
 * competent user writes it: FNV-1a of the key, a power-of-two bucket array
 * that doubles at load factor 1, one malloc per node with the key stored
 * in the node, and the full hash kept in the node so that a chain walk
 * compares strings only on a real match.  Not thread-safe: the benchmarks
 * put their own locks around it.
 *
 * The key comparison is a plain byte loop rather than strcmp/memcmp on
 * purpose: bench/bank_gnutm.c runs this same lookup inside
 * __transaction_atomic, where GCC refuses calls to library functions that
 * are not transaction-safe.  Keys are short, so it costs the other rows
 * next to nothing (and the hash check skips it on every miss).
 */
struct bench_node {
    struct bench_node *next;
    uint64_t hash;
    int64_t value;
    char key[];
};

struct bench_map {
    struct bench_node **bucket;
    size_t mask; /* buckets - 1 */
    size_t count;
};

static inline uint64_t bench_fnv1a(const char *s)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static inline bool bench_streq(const char *a, const char *b)
{
    while (*a != '\0' && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

static inline int bench_map_init(struct bench_map *m, size_t expected)
{
    size_t buckets = 16;
    while (buckets < expected)
        buckets *= 2;
    m->bucket = calloc(buckets, sizeof *m->bucket);
    m->mask = buckets - 1;
    m->count = 0;
    return m->bucket != NULL ? 0 : -1;
}

static inline struct bench_node *bench_map_find(const struct bench_map *m, const char *key)
{
    uint64_t h = bench_fnv1a(key);
    for (struct bench_node *n = m->bucket[h & m->mask]; n != NULL; n = n->next)
        if (n->hash == h && bench_streq(n->key, key))
            return n;
    return NULL;
}

static inline int bench_map_grow(struct bench_map *m)
{
    size_t buckets = (m->mask + 1) * 2;
    struct bench_node **b = calloc(buckets, sizeof *b);
    if (b == NULL)
        return -1;
    for (size_t i = 0; i <= m->mask; i++) {
        struct bench_node *n = m->bucket[i];
        while (n != NULL) {
            struct bench_node *next = n->next;
            n->next = b[n->hash & (buckets - 1)];
            b[n->hash & (buckets - 1)] = n;
            n = next;
        }
    }
    free(m->bucket);
    m->bucket = b;
    m->mask = buckets - 1;
    return 0;
}

/* Inserts key (or finds it) and sets its value.  NULL when out of memory. */
static inline struct bench_node *bench_map_put(struct bench_map *m, const char *key, int64_t value)
{
    struct bench_node *n = bench_map_find(m, key);
    if (n == NULL) {
        if (m->count >= m->mask + 1 && bench_map_grow(m) != 0)
            return NULL;
        size_t len = strlen(key);
        n = malloc(sizeof *n + len + 1);
        if (n == NULL)
            return NULL;
        n->hash = bench_fnv1a(key);
        memcpy(n->key, key, len + 1);
        n->next = m->bucket[n->hash & m->mask];
        m->bucket[n->hash & m->mask] = n;
        m->count++;
    }
    n->value = value;
    return n;
}

/* Sum of all values (the conservation check). */
static inline int64_t bench_map_sum(const struct bench_map *m)
{
    int64_t sum = 0;
    for (size_t i = 0; i <= m->mask; i++)
        for (const struct bench_node *n = m->bucket[i]; n != NULL; n = n->next)
            sum += n->value;
    return sum;
}

static inline void bench_map_free(struct bench_map *m)
{
    for (size_t i = 0; i <= m->mask; i++) {
        struct bench_node *n = m->bucket[i];
        while (n != NULL) {
            struct bench_node *next = n->next;
            free(n);
            n = next;
        }
    }
    free(m->bucket);
    m->bucket = NULL;
}

#endif
