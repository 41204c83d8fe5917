/* SPDX-License-Identifier: MIT */
/*
 * philosophers.c -- Axon.STM's dining philosophers.
 *
 *   demo/philosophers [--store ADDRESS] [SECONDS]
 *                     (default mem:, 5 s; decimals such as 0.5 work)
 *
 * Five threads share five forks, keys "fork.1".."fork.5".  A philosopher
 * checks out its two forks with one using(), and takes them by writing its
 * name into both when neither has an owner; a conflicting or busy commit
 * means "try again a little later".  Commits never block, so there is no
 * deadlock.  The program fails if anyone starves or two philosophers ever
 * hold the same fork.
 *
 * ADDRESS is any address axstm_store_open takes.  With a store kept in
 * Redis (redis+unix:///path/to/socket?prefix=table: or redis://host...),
 * every process started on the same address and prefix sits at the same
 * table: five philosophers each, all sharing the same five forks.  Names
 * then carry the host and process id, so that a philosopher of another
 * process is another owner, and Ctrl-C lets everyone put their forks down
 * before the program ends (a process killed with SIGKILL while eating
 * leaves its forks taken: a new prefix starts a clean table).
 */
#include <axstm.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NPHIL 5
#define EAT_NS 50000L
#define STOPPED 1 /* a caller-defined code: positive, unlike the library's */
#define NAME_LEN 96

/* Set by SIGINT or SIGTERM on a shared store: stop early, forks put down. */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

struct table {
    axstm_store *store;
    int shared; /* a store other processes may use too */
    atomic_bool stop;
    /* Who holds each fork, kept apart from the store to check it. */
    atomic_int holder[NPHIL + 1];
};

struct philosopher {
    struct table *table;
    int id, forks[2];
    char name[NAME_LEN], keys[2][32];
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

/* Whether the collection's copy of both forks holds p's name. */
static int both_mine(const struct philosopher *p, axstm_collection *c)
{
    const char *a, *b;

    return axstm_value_get_str(axstm_collection_at(c, 0), &a) == AXSTM_OK &&
           axstm_value_get_str(axstm_collection_at(c, 1), &b) == AXSTM_OK &&
           strcmp(a, p->name) == 0 && strcmp(b, p->name) == 0;
}

/*
 * After AXSTM_EINDOUBT (a store kept in Redis: the connection was lost
 * after the commit was sent, so it took effect entirely or not at all):
 * refreshes c until the server answers again, for a few seconds at most,
 * and sets *mine to whether both forks now hold p's name.  Returns AXSTM_OK
 * or the error that stopped it.
 */
static int settle_doubt(struct philosopher *p, axstm_collection *c, int *mine)
{
    int rc;

    for (int tries = 0; tries < 30; tries++) {
        rc = axstm_collection_refresh(c);
        if (rc == AXSTM_OK) {
            *mine = both_mine(p, c);
            return AXSTM_OK;
        }
        if (rc != AXSTM_BUSY_RETRY && rc != AXSTM_EIO)
            return rc;
        /* The server restarting or loading its data: give it time. */
        sleep_for((struct timespec){0, 100000000L});
    }
    return rc;
}

/* Returns AXSTM_OK holding both forks, STOPPED, or a library error. */
static int take_forks(struct philosopher *p, axstm_collection *c)
{
    for (;;) {
        int rc, mine;

        if (atomic_load(&p->table->stop))
            return STOPPED;
        rc = axstm_collection_refresh(c);
        if (rc == AXSTM_OK && fork_is_free(axstm_collection_at(c, 0)) &&
            fork_is_free(axstm_collection_at(c, 1))) {
            if ((rc = axstm_value_set_str(axstm_collection_at(c, 0), p->name)) == AXSTM_OK &&
                (rc = axstm_value_set_str(axstm_collection_at(c, 1), p->name)) == AXSTM_OK)
                rc = axstm_collection_commit(c);
            if (rc == AXSTM_EINDOUBT && (rc = settle_doubt(p, c, &mine)) == AXSTM_OK)
                rc = mine ? AXSTM_OK : AXSTM_CONCURRENT_UPDATE;
            if (rc == AXSTM_OK)
                return AXSTM_OK;
        }
        if (rc != AXSTM_OK && rc != AXSTM_CONCURRENT_UPDATE && rc != AXSTM_BUSY_RETRY)
            return rc;
        nap(p);
    }
}

/* Releases both forks by committing the same collection again: no checkout. */
static int release_forks(struct philosopher *p, axstm_collection *c)
{
    for (;;) {
        int rc, mine;

        if ((rc = axstm_value_set(axstm_collection_at(c, 0), "", 0)) != AXSTM_OK ||
            (rc = axstm_value_set(axstm_collection_at(c, 1), "", 0)) != AXSTM_OK)
            return rc;
        while ((rc = axstm_collection_commit(c)) == AXSTM_BUSY_RETRY)
            nap(p);
        if (rc != AXSTM_EINDOUBT)
            return rc;
        /* Put down or not?  Still ours: put them down again. */
        if ((rc = settle_doubt(p, c, &mine)) != AXSTM_OK || !mine)
            return rc;
    }
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
        if ((rc = release_forks(p, c)) != AXSTM_OK) {
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

static int parse_args(int argc, char **argv, const char **store, double *secs)
{
    int have_secs = 0;
    char *end;

    *store = "mem:";
    *secs = 5.0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--store") == 0 && i + 1 < argc) {
            *store = argv[++i];
        } else if (strncmp(argv[i], "--store=", 8) == 0) {
            *store = argv[i] + 8;
        } else if (!have_secs) {
            errno = 0;
            *secs = strtod(argv[i], &end);
            if (errno != 0 || end == argv[i] || *end != '\0' || !isfinite(*secs) || *secs <= 0 ||
                *secs > 86400)
                return 0;
            have_secs = 1;
        } else {
            return 0;
        }
    }
    return 1;
}

/* Opens the store at address, saying why not in terms of the address. */
static axstm_store *open_store(const char *address)
{
    axstm_store *s;
    int rc = axstm_store_open(address, &s);

    if (rc == AXSTM_OK)
        return s;
    if (rc == AXSTM_EINVAL)
        fprintf(stderr,
                "philosophers: '%s' is not a store address this build can open (mem:, and "
                "redis:// or redis+unix:// where libaxstm was built with hiredis)\n",
                address);
    else if (rc == AXSTM_EIO)
        fprintf(stderr, "philosophers: cannot reach the server of '%s': %s\n", address,
                axstm_strerror(rc));
    else
        fprintf(stderr, "philosophers: opening '%s': %s\n", address, axstm_strerror(rc));
    return NULL;
}

/* What went wrong, for a code a philosopher stopped on. */
static const char *explain(int rc)
{
    switch (rc) {
    case AXSTM_EIO:
        return "lost the store's server (refused, reset or timed out); is it still running?";
    case AXSTM_EINDOUBT:
        return "lost the store's server after a commit was sent, and it did not come back to "
               "tell whether the commit happened";
    case AXSTM_BUSY_RETRY:
        return "the store's server stayed busy (loading its data?)";
    default:
        return axstm_strerror(rc);
    }
}

/* Sleeps secs seconds, or until SIGINT or SIGTERM when they are caught;
 * returns the seconds slept. */
static double sleep_seconds(double secs)
{
    struct timespec t0, now;
    double slept = 0;

    if (clock_gettime(CLOCK_MONOTONIC, &t0) != 0)
        return 0;
    while (!interrupted && clock_gettime(CLOCK_MONOTONIC, &now) == 0) {
        slept = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
        double left = secs - slept;
        if (left <= 0)
            break;
        if (left > 0.05)
            left = 0.05;
        /* A caught signal cuts the nap short: the loop then looks at the
         * flag. */
        struct timespec nap_time = {0, (long)(left * 1e9)};
        nanosleep(&nap_time, NULL);
    }
    return slept;
}

int main(int argc, char **argv)
{
    static struct table table;
    struct philosopher phil[NPHIL];
    pthread_t threads[NPHIL];
    struct timespec now;
    axstm_stats st;
    unsigned long total = 0;
    const char *address;
    char host[64] = "";
    double secs;
    int started = 0, ok = 1, rc;

    if (!parse_args(argc, argv, &address, &secs)) {
        fprintf(stderr,
                "usage: %s [--store ADDRESS] [SECONDS]\n"
                "  ADDRESS: mem: (default), redis+unix:///path/to/socket?prefix=NAME or\n"
                "           redis://host[:port]?prefix=NAME: every process on the same address\n"
                "           and prefix shares the five forks\n"
                "  SECONDS: a number > 0 (default 5)\n",
                argv[0]);
        return 2;
    }
    if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
        perror("philosophers: clock_gettime");
        return 1;
    }
    table.store = open_store(address);
    if (table.store == NULL)
        return 1;
    table.shared = strcmp(address, "mem:") != 0;
    if (table.shared) {
        /* Forks left taken would starve the other processes' philosophers:
         * Ctrl-C ends the dinner and puts them down. */
        struct sigaction sa;

        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_interrupt;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        if (gethostname(host, sizeof host - 1) != 0)
            snprintf(host, sizeof host, "?");
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
        /* On a shared table another process has its philosopher.1 too. */
        if (table.shared)
            snprintf(p->name, sizeof p->name, "philosopher.%d@%s:%ld", p->id, host, (long)getpid());
        else
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
    if (ok) {
        double slept = sleep_seconds(secs);

        if (interrupted)
            secs = slept; /* the dinner ended early: say how long it lasted */
    }
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
            fprintf(stderr, "philosophers: %s: %s\n", p->name, explain(p->rc));
        if (p->meals == 0)
            fprintf(stderr, "philosophers: %s never ate%s\n", p->name,
                    table.shared && p->rc == AXSTM_OK
                        ? " (on a shared table a fork stays taken when its holder's process "
                          "was killed while eating: a new prefix starts a clean table)"
                        : "");
        if (p->failure != NULL || p->rc != AXSTM_OK || p->meals == 0)
            ok = 0;
    }
    printf("total %lu meals in %g s%s\n", total, secs, interrupted ? " (interrupted)" : "");
    rc = axstm_store_stats(table.store, &st);
    if (rc == AXSTM_OK && !table.shared)
        printf("store: %" PRIu64 " commits, %" PRIu64 " conflicts, %" PRIu64 " busy\n", st.commits,
               st.conflicts, st.busy);
    else if (rc == AXSTM_OK) /* the server counts commits and conflicts of every process */
        printf("store (every process at this table, since the prefix was first used): %" PRIu64
               " commits, %" PRIu64 " conflicts; this process: %" PRIu64 " busy\n",
               st.commits, st.conflicts, st.busy);
    else {
        fprintf(stderr, "philosophers: axstm_store_stats: %s\n", explain(rc));
        ok = 0;
    }
    axstm_store_free(table.store);
    return ok ? 0 : 1;
}
