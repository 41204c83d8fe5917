/* SPDX-License-Identifier: MIT */
/*
 * held.c -- memory held for replaced values once the threads that replaced
 * them go idle or exit.
 *
 * The scenario: W writer threads each commit C values of L bytes to a key
 * of their own (a fresh usevar + set + commit + free each time), then go
 * idle; then they exit; then one other thread commits A more values to a
 * key of its own.  Only W + 1 values are live at the end, but every commit
 * replaced one: what the store still holds beyond the live values is
 * replaced values not yet reclaimed.  Defaults: 64 x 255 x 60 KiB, then
 * 100 000 commits of 60 KiB (--quick: 16 x 64, then 10 000).
 *
 * Held memory is axstm_store_stats().bytes (it counts a blob until it is
 * freed), cross-checked with the C library's bytes in use (mallinfo2,
 * where glibc has it: the whole process, a little more than the store).
 * The line to meet, at each of the three points: held < 4 x live + 8 MiB.
 * No timing is measured.
 */
#include "axstm.h"
#include "benchutil.h"

#if defined(__GLIBC__)
#include <malloc.h>
#if __GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)
#define HAVE_MALLINFO2 1
#endif
#endif

#define MIB (1024.0 * 1024.0)

struct settings {
    unsigned writers;
    unsigned long commits;
    size_t len;
    unsigned long after;
};

struct shared {
    const struct settings *set;
    axstm_store *store;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned done; /* writers that finished their commits */
    bool go;       /* the writers may exit */
    int failed;    /* the first error any thread met */
};

struct writer {
    struct shared *sh;
    pthread_t thread;
    char key[32];
};

static void fail(const char *what, int rc)
{
    fprintf(stderr, "held: FAILED: %s: %s\n", what, axstm_strerror(rc));
    exit(1);
}

/* Commits `n` values of set->len bytes to key, each from a fresh handle;
 * returns AXSTM_OK or the first error. */
static int commit_many(axstm_store *s, const char *key, size_t len, unsigned long n)
{
    unsigned char *buf = malloc(len);
    if (buf == NULL)
        return AXSTM_ENOMEM;
    int rc = AXSTM_OK;
    for (unsigned long i = 0; i < n && rc == AXSTM_OK; i++) {
        axstm_value *v = NULL;
        memset(buf, (int)(i % 251) + 1, len);
        while ((rc = axstm_usevar(s, key, &v)) == AXSTM_BUSY_RETRY)
            ;
        if (rc != AXSTM_OK)
            break;
        rc = axstm_value_set(v, buf, len);
        while (rc == AXSTM_OK && (rc = axstm_value_commit(v)) == AXSTM_BUSY_RETRY)
            rc = AXSTM_OK;
        axstm_value_free(v);
    }
    free(buf);
    return rc;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct shared *sh = w->sh;
    int rc = commit_many(sh->store, w->key, sh->set->len, sh->set->commits);
    pthread_mutex_lock(&sh->lock);
    if (rc != AXSTM_OK && sh->failed == AXSTM_OK)
        sh->failed = rc;
    sh->done++;
    pthread_cond_broadcast(&sh->cond);
    while (!sh->go) /* idle: alive, but calling nothing */
        pthread_cond_wait(&sh->cond, &sh->lock);
    pthread_mutex_unlock(&sh->lock);
    return NULL;
}

static void *other_main(void *arg)
{
    struct shared *sh = arg;
    int rc = commit_many(sh->store, "other", sh->set->len, sh->set->after);
    if (rc != AXSTM_OK)
        sh->failed = rc;
    return NULL;
}

/* Bytes the C library has handed out and not had back (0: unknown). */
static double malloc_in_use(void)
{
#if defined(HAVE_MALLINFO2)
    struct mallinfo2 mi = mallinfo2();
    return (double)mi.uordblks + (double)mi.hblkhd;
#else
    return 0;
#endif
}

struct point {
    const char *name;
    double held, in_use;
};

static struct point measure(axstm_store *s, const char *name, double base_in_use)
{
    axstm_stats st;
    int rc = axstm_store_stats(s, &st);
    if (rc != AXSTM_OK)
        fail("store_stats", rc);
    struct point p = {name, (double)st.bytes, malloc_in_use() - base_in_use};
    return p;
}

static bool parse_count(const char *a, const char *prefix, unsigned long max, unsigned long *out)
{
    size_t n = strlen(prefix);
    if (strncmp(a, prefix, n) != 0)
        return false;
    char *end;
    errno = 0;
    unsigned long v = strtoul(a + n, &end, 10);
    if (errno != 0 || end == a + n || *end != '\0' || v < 1 || v > max) {
        fprintf(stderr, "held: bad argument '%s' (1..%lu)\n", a, max);
        exit(2);
    }
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    bool extra[argc > 0 ? argc : 1];
    struct bench_config cfg;
    bench_config_init(&cfg, argc, argv, extra);
    struct settings set = {64, 255, 60 * 1024, 100000};
    if (cfg.quick) {
        set.writers = 16;
        set.commits = 64;
        set.after = 10000;
    }
    for (int i = 1; i < argc; i++) {
        unsigned long v;
        if (!extra[i])
            continue;
        if (parse_count(argv[i], "--writers=", BENCH_MAX_THREADS * 16, &v))
            set.writers = (unsigned)v;
        else if (parse_count(argv[i], "--commits=", 100000000, &v))
            set.commits = v;
        else if (parse_count(argv[i], "--len=", AXSTM_VALUE_MAX, &v))
            set.len = v;
        else if (parse_count(argv[i], "--after=", 100000000, &v))
            set.after = v;
        else {
            fprintf(stderr,
                    "held: bad argument '%s' (also: --writers=N --commits=N "
                    "--len=BYTES --after=N)\n",
                    argv[i]);
            return 2;
        }
    }

    bench_print_machine(&cfg, "memory held for replaced values after their writers go idle "
                              "or exit");
    printf("scenario: %u threads x %lu commits of %zu bytes to a key of their own; idle; exit; "
           "then %lu commits of %zu bytes by one other thread\n\n",
           set.writers, set.commits, set.len, set.after, set.len);

    double base_in_use = malloc_in_use();
    struct shared sh = {.set = &set, .failed = AXSTM_OK};
    pthread_mutex_init(&sh.lock, NULL);
    pthread_cond_init(&sh.cond, NULL);
    sh.store = axstm_store_new();
    if (sh.store == NULL)
        fail("store_new", AXSTM_ENOMEM);
    struct writer *w = calloc(set.writers, sizeof *w);
    if (w == NULL)
        fail("calloc", AXSTM_ENOMEM);
    for (unsigned i = 0; i < set.writers; i++) {
        w[i].sh = &sh;
        snprintf(w[i].key, sizeof w[i].key, "writer-%u", i);
        if (pthread_create(&w[i].thread, NULL, writer_main, &w[i]) != 0)
            fail("pthread_create", AXSTM_ENOMEM);
    }

    struct point pt[3];
    pthread_mutex_lock(&sh.lock);
    while (sh.done < set.writers)
        pthread_cond_wait(&sh.cond, &sh.lock);
    pthread_mutex_unlock(&sh.lock);
    pt[0] = measure(sh.store, "writers idle", base_in_use);

    pthread_mutex_lock(&sh.lock);
    sh.go = true;
    pthread_cond_broadcast(&sh.cond);
    pthread_mutex_unlock(&sh.lock);
    for (unsigned i = 0; i < set.writers; i++)
        pthread_join(w[i].thread, NULL);
    pt[1] = measure(sh.store, "writers exited", base_in_use);

    pthread_t other;
    if (pthread_create(&other, NULL, other_main, &sh) != 0)
        fail("pthread_create", AXSTM_ENOMEM);
    pthread_join(other, NULL);
    char after_name[64];
    snprintf(after_name, sizeof after_name, "after %lu more commits", set.after);
    pt[2] = measure(sh.store, after_name, base_in_use);
    if (sh.failed != AXSTM_OK)
        fail("a commit", sh.failed);

    /* What must be held: the live values (one per key) and the store's
     * own bookkeeping, as in a store that never replaced anything. */
    double live = (double)(set.writers + 1) * (double)set.len;
    double bound = 4 * live + 8 * MIB;
    static const char *const cols[] = {"point", "held MiB", "malloc MiB", "held / live"};
    struct bench_table t;
    bench_table_begin(&t, 4, cols, 30);
    bool met = true;
    for (int i = 0; i < 3; i++) {
        bench_table_cell(&t, "%s", pt[i].name);
        bench_table_cell(&t, "%.1f", pt[i].held / MIB);
#if defined(HAVE_MALLINFO2)
        bench_table_cell(&t, "%.1f", pt[i].in_use / MIB);
#else
        bench_table_cell(&t, "%s", "n/a");
#endif
        bench_table_cell(&t, "%.2fx", pt[i].held / live);
        met = met && pt[i].held < bound;
    }
    printf("live values: %.1f MiB; target: held < 4 x live + 8 MiB = %.1f MiB at every point: "
           "%s\n",
           live / MIB, bound / MIB, bench_met(met));

    axstm_store_free(sh.store);
    free(w);
    pthread_cond_destroy(&sh.cond);
    pthread_mutex_destroy(&sh.lock);
    return 0;
}
