/* SPDX-License-Identifier: MIT */
/*
 * philosophers.c -- Axon.STM's dining philosophers.
 *
 *   demo/philosophers [SECONDS]     (default 5; decimals such as 0.5 work)
 *
 * Five threads share five forks, keys "fork.1".."fork.5".  A philosopher
 * checks out its two forks with one using(), and takes them by writing its
 * name into both when neither has an owner; a conflicting or busy commit
 * means "try again a little later".  Commits never block, so there is no
 * deadlock.  The program fails if anyone starves or two philosophers ever
 * hold the same fork.
 */
#include <axstm.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NPHIL 5
#define EAT_NS 50000L
#define STOPPED 1 /* a caller-defined code: positive, unlike the library's */

struct table {
    axstm_store *store;
    atomic_bool stop;
    /* Who holds each fork, kept apart from the store to check it. */
    atomic_int holder[NPHIL + 1];
};

struct philosopher {
    struct table *table;
    int id, forks[2];
    char name[32], keys[2][32];
    uint32_t rng;
    unsigned long meals;
    const char *failure; /* what went wrong; NULL while all is well */
    int rc;
};

/* Sleeps the whole time t, even when a signal interrupts nanosleep. */
static void sleep_for(struct timespec t)
{
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        continue;
}

/* Waits a random 10-200 us, so two philosophers do not collide in step. */
static void nap(struct philosopher *p)
{
    p->rng ^= p->rng << 13; /* xorshift32 */
    p->rng ^= p->rng >> 17;
    p->rng ^= p->rng << 5;
    sleep_for((struct timespec){0, 10000L + (long)(p->rng % 190001u)});
}

static int fork_is_free(axstm_value *fork)
{
    size_t len;

    return axstm_value_data(fork, &len) == NULL || len == 0;
}

/* Reads key afresh from the store: does it hold p's name? */
static int fork_is_mine(struct philosopher *p, const char *key)
{
    axstm_value *v;
    const char *owner;
    int rc, mine;

    while ((rc = axstm_usevar(p->table->store, key, &v)) == AXSTM_BUSY_RETRY)
        nap(p);
    if (rc != AXSTM_OK) {
        p->rc = rc;
        return 0;
    }
    mine = axstm_value_get_str(v, &owner) == AXSTM_OK && strcmp(owner, p->name) == 0;
    axstm_value_free(v);
    return mine;
}

/* Returns AXSTM_OK holding both forks, STOPPED, or a library error. */
static int take_forks(struct philosopher *p, axstm_collection *c)
{
    for (;;) {
        int rc;

        if (atomic_load(&p->table->stop))
            return STOPPED;
        rc = axstm_collection_refresh(c);
        if (rc == AXSTM_OK && fork_is_free(axstm_collection_at(c, 0)) &&
            fork_is_free(axstm_collection_at(c, 1))) {
            if ((rc = axstm_value_set_str(axstm_collection_at(c, 0), p->name)) == AXSTM_OK &&
                (rc = axstm_value_set_str(axstm_collection_at(c, 1), p->name)) == AXSTM_OK)
                rc = axstm_collection_commit(c);
            if (rc == AXSTM_OK)
                return AXSTM_OK;
        }
        if (rc != AXSTM_OK && rc != AXSTM_CONCURRENT_UPDATE && rc != AXSTM_BUSY_RETRY)
            return rc;
        nap(p);
    }
}

/* Releases both forks by committing the same collection again: no checkout. */
static int release_forks(axstm_collection *c)
{
    int rc;

    if ((rc = axstm_value_set(axstm_collection_at(c, 0), "", 0)) != AXSTM_OK ||
        (rc = axstm_value_set(axstm_collection_at(c, 1), "", 0)) != AXSTM_OK)
        return rc;
    do
        rc = axstm_collection_commit(c);
    while (rc == AXSTM_BUSY_RETRY);
    return rc;
}

/* Eats once with both forks held; returns 0 after a broken rule. */
static int eat(struct philosopher *p)
{
    for (int i = 0; i < 2; i++) {
        int expected = 0;

        if (!atomic_compare_exchange_strong(&p->table->holder[p->forks[i]], &expected, p->id)) {
            p->failure = "took a fork that another philosopher held";
            return 0;
        }
    }
    if (!fork_is_mine(p, p->keys[0]) || !fork_is_mine(p, p->keys[1])) {
        if (p->rc == AXSTM_OK) /* else usevar failed, and p->rc says why */
            p->failure = "a fresh usevar shows a held fork with another owner";
        return 0;
    }
    sleep_for((struct timespec){0, EAT_NS});
    p->meals++;
    atomic_store(&p->table->holder[p->forks[0]], 0);
    atomic_store(&p->table->holder[p->forks[1]], 0);
    return 1;
}

static void *dine(void *arg)
{
    struct philosopher *p = arg;
    const char *keys[2] = {p->keys[0], p->keys[1]};
    axstm_collection *c;
    int rc;

    while ((rc = axstm_using(p->table->store, keys, 2, &c)) == AXSTM_BUSY_RETRY)
        nap(p);
    if (rc != AXSTM_OK) {
        p->rc = rc;
        return NULL;
    }
    while ((rc = take_forks(p, c)) == AXSTM_OK) {
        if (!eat(p))
            break;
        /* Nobody else may commit a held fork, so this cannot conflict. */
        if ((rc = release_forks(c)) != AXSTM_OK) {
            p->failure = "releasing the forks failed";
            break;
        }
        nap(p); /* think */
    }
    if (rc != AXSTM_OK && rc != STOPPED)
        p->rc = rc;
    axstm_collection_free(c);
    return NULL;
}

static int parse_seconds(int argc, char **argv, double *secs)
{
    char *end;

    *secs = 5.0;
    if (argc > 2)
        return 0;
    if (argc == 2) {
        errno = 0;
        *secs = strtod(argv[1], &end);
        if (errno != 0 || end == argv[1] || *end != '\0' || !isfinite(*secs) || *secs <= 0 ||
            *secs > 86400)
            return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static struct table table;
    struct philosopher phil[NPHIL];
    pthread_t threads[NPHIL];
    struct timespec now;
    axstm_stats st;
    unsigned long total = 0;
    double secs;
    int started = 0, ok = 1, rc;

    if (!parse_seconds(argc, argv, &secs)) {
        fprintf(stderr, "usage: %s [SECONDS]   (a number > 0; default 5)\n", argv[0]);
        return 2;
    }
    if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
        perror("philosophers: clock_gettime");
        return 1;
    }
    table.store = axstm_store_new();
    if (table.store == NULL) {
        fprintf(stderr, "philosophers: axstm_store_new: out of memory\n");
        return 1;
    }
    atomic_init(&table.stop, 0);
    for (int i = 0; i <= NPHIL; i++)
        atomic_init(&table.holder[i], 0);

    /* Philosopher i wants forks i and i % 5 + 1. */
    for (int i = 0; i < NPHIL; i++) {
        struct philosopher *p = &phil[i];

        memset(p, 0, sizeof *p);
        p->table = &table;
        p->id = i + 1;
        p->forks[0] = p->id;
        p->forks[1] = p->id % NPHIL + 1;
        snprintf(p->name, sizeof p->name, "philosopher.%d", p->id);
        snprintf(p->keys[0], sizeof p->keys[0], "fork.%d", p->forks[0]);
        snprintf(p->keys[1], sizeof p->keys[1], "fork.%d", p->forks[1]);
        p->rng = (uint32_t)now.tv_nsec ^ (uint32_t)p->id * 2654435761u;
        if (p->rng == 0)
            p->rng = 1;
    }
    for (; started < NPHIL; started++) {
        rc = pthread_create(&threads[started], NULL, dine, &phil[started]);
        if (rc != 0) {
            fprintf(stderr, "philosophers: pthread_create: %s\n", strerror(rc));
            ok = 0;
            break;
        }
    }
    if (ok)
        sleep_for((struct timespec){(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)});
    atomic_store(&table.stop, 1);
    for (int i = 0; i < started; i++) {
        rc = pthread_join(threads[i], NULL);
        if (rc != 0) {
            fprintf(stderr, "philosophers: pthread_join: %s\n", strerror(rc));
            return 1; /* a thread may still use the store: do not free it */
        }
    }

    for (int i = 0; i < started; i++) {
        struct philosopher *p = &phil[i];

        printf("%s ate %lu meals\n", p->name, p->meals);
        total += p->meals;
        if (p->failure != NULL)
            fprintf(stderr, "philosophers: %s %s\n", p->name, p->failure);
        if (p->rc != AXSTM_OK)
            fprintf(stderr, "philosophers: %s: %s\n", p->name, axstm_strerror(p->rc));
        if (p->meals == 0)
            fprintf(stderr, "philosophers: %s never ate\n", p->name);
        if (p->failure != NULL || p->rc != AXSTM_OK || p->meals == 0)
            ok = 0;
    }
    printf("total %lu meals in %g s\n", total, secs);
    rc = axstm_store_stats(table.store, &st);
    if (rc == AXSTM_OK)
        printf("store: %" PRIu64 " commits, %" PRIu64 " conflicts, %" PRIu64 " busy\n", st.commits,
               st.conflicts, st.busy);
    else {
        fprintf(stderr, "philosophers: axstm_store_stats: %s\n", axstm_strerror(rc));
        ok = 0;
    }
    axstm_store_free(table.store);
    return ok ? 0 : 1;
}
