/* SPDX-License-Identifier: MIT */
/*
 * check_stress.c -- threads against one store, bounded by time, not count.
 *
 *   bank          TinySTM's bank: transfers between random accounts with
 *                 using/commit/refresh loops; the total is conserved, and an
 *                 auditor's whole-bank snapshots always see it conserved.
 *   philosophers  SPEC scenario 5: forks as keys; nobody ever shares a fork.
 *   key creation  new keys created while others are read: every key exists
 *                 exactly once, existing keys never change under readers.
 *
 * $AXSTM_STRESS_SECONDS sets the time per configuration (default 1).
 * Workers only record what they saw; the test's thread asserts after join.
 * What each worker must get done (some transfers, some meals) is a quota
 * that the run waits for (testutil.h), never what fits in the time: on a
 * loaded machine a thread may not run at all for a second.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>

#include "testutil.h"

/* ------------------------------------------------------------------ */
/* Bank                                                               */
/* ------------------------------------------------------------------ */

#define INITIAL 1000

struct bank {
    axstm_store *s;
    int naccounts;
    char (*names)[32];
    const char **keys;
    tu_clock clock;
    /* Raised by the auditor when commits keep landing inside its whole-bank
     * snapshot: tellers then pause between transfers until it gets one. */
    atomic_int audit_starving;
};

struct teller {
    struct bank *bank;
    pthread_t thread;
    uint64_t seed;
    long transfers, touches; /* successful commits of each kind */
    long conflicts, busy, errors;
};

struct auditor {
    struct bank *bank;
    pthread_t thread;
    long snapshots, wrong_totals, busy, errors;
    long starved; /* times it had to ask the tellers to pause */
};

/* BUSY_RETRY answers in a row before the auditor asks for a pause. */
#define AUDITOR_PATIENCE 64

/* The run lasts until every teller has made this many transfers and the
 * auditor has had this many snapshots (and its time is up). */
#define TELLER_QUOTA 10
#define AUDIT_QUOTA 10

/* Moves a random amount between two random distinct accounts. */
static void transfer(struct teller *t)
{
    struct bank *b = t->bank;
    unsigned n = (unsigned)b->naccounts;
    unsigned from = (unsigned)(tu_rand(&t->seed) % n);
    unsigned to = (unsigned)(tu_rand(&t->seed) % (n - 1));
    const char *keys[2];
    axstm_collection *c = NULL;
    int rc;

    if (to >= from)
        to++;
    keys[0] = b->keys[from];
    keys[1] = b->keys[to];
    TU_RETRY_COUNT(rc, axstm_using(b->s, keys, 2, &c), &t->busy);
    if (rc != AXSTM_OK) {
        t->errors++;
        return;
    }
    for (;;) {
        axstm_value *va = axstm_collection_at(c, 0);
        axstm_value *vb = axstm_collection_at(c, 1);
        int64_t xa, xb, amount = (int64_t)(tu_rand(&t->seed) % 50);

        if (axstm_value_get_i64(va, &xa) != AXSTM_OK || axstm_value_get_i64(vb, &xb) != AXSTM_OK ||
            axstm_value_set_i64(va, xa - amount) != AXSTM_OK ||
            axstm_value_set_i64(vb, xb + amount) != AXSTM_OK) {
            t->errors++;
            break;
        }
        /* BUSY_RETRY: nothing changed, so the same commit is simply
         * repeated; CONCURRENT_UPDATE: redo the work on fresh values. */
        TU_RETRY_COUNT(rc, axstm_collection_commit(c), &t->busy);
        if (rc == AXSTM_OK) {
            t->transfers++;
            break;
        }
        if (rc != AXSTM_CONCURRENT_UPDATE) {
            t->errors++;
            break;
        }
        t->conflicts++;
        if (tu_stopped(&b->clock))
            break;
        TU_RETRY_COUNT(rc, axstm_collection_refresh(c), &t->busy);
        if (rc != AXSTM_OK) {
            t->errors++;
            break;
        }
    }
    axstm_collection_free(c);
}

/* Writes one account's value back unchanged: a commit that conserves. */
static void touch(struct teller *t)
{
    struct bank *b = t->bank;
    const char *key = b->keys[tu_rand(&t->seed) % (unsigned)b->naccounts];
    axstm_value *v = NULL;
    int rc;

    TU_RETRY_COUNT(rc, axstm_usevar(b->s, key, &v), &t->busy);
    if (rc != AXSTM_OK) {
        t->errors++;
        return;
    }
    for (;;) {
        TU_RETRY_COUNT(rc, axstm_value_commit(v), &t->busy);
        if (rc == AXSTM_OK) {
            t->touches++;
            break;
        }
        if (rc != AXSTM_CONCURRENT_UPDATE) {
            t->errors++;
            break;
        }
        t->conflicts++;
        if (tu_stopped(&b->clock))
            break;
        TU_RETRY_COUNT(rc, axstm_value_refresh(v), &t->busy);
        if (rc != AXSTM_OK) {
            t->errors++;
            break;
        }
    }
    axstm_value_free(v);
}

static void *teller_main(void *arg)
{
    struct teller *t = arg;
    unsigned long op = 0, rounds = 0;
    int paid = 0;
    while (!tu_time_up(&t->bank->clock, &rounds)) {
        if (atomic_load_explicit(&t->bank->audit_starving, memory_order_relaxed)) {
            sched_yield();
            continue;
        }
        if (++op % 16 == 0)
            touch(t);
        else
            transfer(t);
        if (!paid && t->transfers >= TELLER_QUOTA) {
            paid = 1;
            tu_clock_paid(&t->bank->clock);
        }
    }
    return NULL;
}

/* Sum of a whole-bank snapshot, or -1 when a value is not an int64. */
static int64_t bank_total(axstm_collection *c)
{
    size_t i, n = axstm_collection_size(c);
    int64_t sum = 0;
    for (i = 0; i < n; i++) {
        int64_t x;
        if (axstm_value_get_i64(axstm_collection_at(c, i), &x) != AXSTM_OK)
            return -1;
        sum += x;
    }
    return sum;
}

static void *auditor_main(void *arg)
{
    struct auditor *a = arg;
    struct bank *b = a->bank;
    int64_t want = (int64_t)b->naccounts * INITIAL;
    axstm_collection *kept = NULL;
    int rc, round = 0, busy_in_a_row = 0;
    unsigned long rounds = 0;

    while (!tu_time_up(&b->clock, &rounds)) {
        axstm_collection *c = NULL;

        /* Alternate fresh checkouts with refreshes of a kept one (the
         * first fresh one is kept). */
        if (kept == NULL || ++round % 2) {
            rc = axstm_using(b->s, b->keys, (size_t)b->naccounts, &c);
        } else {
            rc = axstm_collection_refresh(kept);
            c = kept;
        }
        if (rc == AXSTM_BUSY_RETRY) {
            a->busy++;
            if (++busy_in_a_row == AUDITOR_PATIENCE) {
                a->starved++;
                atomic_store(&b->audit_starving, 1);
            }
            sched_yield();
            continue;
        }
        if (rc != AXSTM_OK) {
            a->errors++;
            break;
        }
        busy_in_a_row = 0;
        atomic_store(&b->audit_starving, 0);
        if (++a->snapshots == AUDIT_QUOTA)
            tu_clock_paid(&b->clock);
        if (bank_total(c) != want)
            a->wrong_totals++;
        if (kept == NULL)
            kept = c;
        else if (c != kept)
            axstm_collection_free(c);
    }
    atomic_store(&b->audit_starving, 0);
    axstm_collection_free(kept);
    return NULL;
}

static int sum_visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    int64_t x;
    (void)key;
    (void)version;
    if (data == NULL || len != 8)
        return 1;
    memcpy(&x, data, 8);
    *(int64_t *)arg += x;
    return 0;
}

static const struct {
    int threads, accounts;
} bank_configs[] = {
    {1, 4}, {2, 4}, {4, 4}, {1, 1024}, {2, 1024}, {4, 1024},
};

START_TEST(bank_total_is_conserved)
{
    const int nthreads = bank_configs[_i].threads;
    const int naccounts = bank_configs[_i].accounts;
    double seconds = tu_stress_seconds(), t0, elapsed;
    struct bank b;
    struct teller tellers[4];
    struct auditor aud;
    axstm_collection *c;
    axstm_stats st;
    long commits = 0, conflicts = 0, busy = 0;
    int64_t total = 0;
    int i;

    memset(&b, 0, sizeof b);
    b.s = tu_store_ok();
    b.naccounts = naccounts;
    b.names = calloc((size_t)naccounts, sizeof *b.names);
    b.keys = calloc((size_t)naccounts, sizeof *b.keys);
    ck_assert(b.names != NULL && b.keys != NULL);
    for (i = 0; i < naccounts; i++) {
        snprintf(b.names[i], sizeof b.names[i], "acct.%d", i);
        b.keys[i] = b.names[i];
    }
    c = tu_using_ok(b.s, b.keys, (size_t)naccounts);
    for (i = 0; i < naccounts; i++)
        tu_set_i64_ok(axstm_collection_at(c, (size_t)i), INITIAL);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    axstm_collection_free(c);
    atomic_init(&b.audit_starving, 0);

    memset(tellers, 0, sizeof tellers);
    memset(&aud, 0, sizeof aud);
    aud.bank = &b;
    t0 = tu_now();
    tu_clock_start(&b.clock, seconds);
    tu_clock_owe(&b.clock, nthreads + 1);
    for (i = 0; i < nthreads; i++) {
        tellers[i].bank = &b;
        tellers[i].seed = UINT64_C(0x9E3779B97F4A7C15) * (uint64_t)(i + 1);
        tu_start(&tellers[i].thread, teller_main, &tellers[i]);
    }
    tu_start(&aud.thread, auditor_main, &aud);
    for (i = 0; i < nthreads; i++)
        pthread_join(tellers[i].thread, NULL);
    pthread_join(aud.thread, NULL);
    elapsed = tu_now() - t0;

    for (i = 0; i < nthreads; i++) {
        ck_assert_msg(tellers[i].errors == 0, "teller %d: %ld errors", i, tellers[i].errors);
        ck_assert_msg(tellers[i].transfers >= TELLER_QUOTA,
                      "teller %d made %ld transfers in %.0f s (the hang guard)", i,
                      tellers[i].transfers, elapsed);
        commits += tellers[i].transfers + tellers[i].touches;
        conflicts += tellers[i].conflicts;
        busy += tellers[i].busy;
    }
    ck_assert_int_eq(aud.errors, 0);
    ck_assert_msg(aud.wrong_totals == 0, "%ld of %ld audits saw a wrong total", aud.wrong_totals,
                  aud.snapshots);
    ck_assert_msg(aud.snapshots >= AUDIT_QUOTA,
                  "the auditor got %ld snapshots in %.0f s (the hang guard)", aud.snapshots,
                  elapsed);

    /* The total is conserved, seen through using and through foreach. */
    c = tu_using_ok(b.s, b.keys, (size_t)naccounts);
    ck_assert_int_eq(bank_total(c), (int64_t)naccounts * INITIAL);
    axstm_collection_free(c);
    ck_assert_int_eq(axstm_store_foreach(b.s, sum_visit, &total), AXSTM_OK);
    ck_assert_int_eq(total, (int64_t)naccounts * INITIAL);

    /* The store counted what the threads saw: every commit (plus the setup
     * one), every conflict and every BUSY_RETRY answer. */
    st = tu_stats_ok(b.s);
    ck_assert_uint_eq(st.keys, (uint64_t)naccounts);
    ck_assert_uint_eq(st.commits, (uint64_t)commits + 1);
    ck_assert_uint_eq(st.conflicts, (uint64_t)conflicts);
    ck_assert_uint_eq(st.busy, (uint64_t)(busy + aud.busy));

    printf("bank: threads=%d accounts=%d commits/s=%.0f conflicts/s=%.0f "
           "busy/s=%.0f audits/s=%.0f audit-pauses=%ld (%.2f s)\n",
           nthreads, naccounts, (double)commits / elapsed, (double)conflicts / elapsed,
           (double)(busy + aud.busy) / elapsed, (double)aud.snapshots / elapsed, aud.starved,
           elapsed);
    fflush(stdout);

    free(b.names);
    free(b.keys);
    axstm_store_free(b.s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Philosophers                                                       */
/* ------------------------------------------------------------------ */

#define PHILOSOPHERS 5
/* The run lasts until every philosopher has eaten this many times. */
#define MEAL_QUOTA 3

struct table {
    axstm_store *s;
    tu_clock clock;
};

struct philosopher {
    struct table *table;
    pthread_t thread;
    int id;
    char name[32];
    char forks[2][32];
    long meals, attempts, conflicts, busy;
    long release_failures; /* releasing owned forks was rejected */
    long shared_forks;     /* while eating, a fork did not hold my name */
    long errors;
};

static int fork_is_free(const axstm_value *v)
{
    size_t len;
    return axstm_value_data(v, &len) == NULL || len == 0;
}

/* While eating: both forks, as committed, carry my name. */
static void check_my_forks(struct philosopher *p)
{
    int i, rc;
    for (i = 0; i < 2; i++) {
        axstm_value *v = NULL;
        const char *owner;
        TU_RETRY_COUNT(rc, axstm_usevar(p->table->s, p->forks[i], &v), &p->busy);
        if (rc != AXSTM_OK) {
            p->errors++;
            continue;
        }
        if (axstm_value_get_str(v, &owner) != AXSTM_OK || strcmp(owner, p->name) != 0)
            p->shared_forks++;
        axstm_value_free(v);
    }
}

static void *philosopher_main(void *arg)
{
    struct philosopher *p = arg;
    const char *keys[2] = {p->forks[0], p->forks[1]};
    uint64_t seed = (uint64_t)p->id * 7919 + 17;
    unsigned long rounds = 0;

    while (!tu_time_up(&p->table->clock, &rounds)) {
        axstm_collection *c = NULL;
        int rc;

        p->attempts++;
        rc = axstm_using(p->table->s, keys, 2, &c);
        if (rc == AXSTM_BUSY_RETRY) {
            p->busy++;
            tu_sleep_ns(50000);
            continue;
        }
        if (rc != AXSTM_OK) {
            p->errors++;
            break;
        }
        if (!fork_is_free(axstm_collection_at(c, 0)) || !fork_is_free(axstm_collection_at(c, 1))) {
            axstm_collection_free(c);
            tu_sleep_ns(50000);
            continue;
        }
        if (axstm_value_set_str(axstm_collection_at(c, 0), p->name) != AXSTM_OK ||
            axstm_value_set_str(axstm_collection_at(c, 1), p->name) != AXSTM_OK) {
            p->errors++;
            axstm_collection_free(c);
            break;
        }
        rc = axstm_collection_commit(c);
        if (rc == AXSTM_CONCURRENT_UPDATE || rc == AXSTM_BUSY_RETRY) {
            if (rc == AXSTM_BUSY_RETRY)
                p->busy++;
            else
                p->conflicts++;
            axstm_collection_free(c);
            tu_sleep_ns(50000);
            continue;
        }
        if (rc != AXSTM_OK) {
            p->errors++;
            axstm_collection_free(c);
            break;
        }

        /* Eating. */
        check_my_forks(p);
        tu_sleep_ns((long)(tu_rand(&seed) % 100000));
        check_my_forks(p);
        if (++p->meals == MEAL_QUOTA)
            tu_clock_paid(&p->table->clock);

        /* Release with the same collection, no new checkout: nobody else
         * may have committed my forks, so only BUSY_RETRY can delay it. */
        if (axstm_value_set(axstm_collection_at(c, 0), "", 0) != AXSTM_OK ||
            axstm_value_set(axstm_collection_at(c, 1), "", 0) != AXSTM_OK) {
            p->errors++;
            axstm_collection_free(c);
            break;
        }
        TU_RETRY_COUNT(rc, axstm_collection_commit(c), &p->busy);
        if (rc != AXSTM_OK)
            p->release_failures++;
        axstm_collection_free(c);
        if (rc != AXSTM_OK)
            break; /* the forks stay taken: stop rather than spin */

        /* Thinking. */
        tu_sleep_ns((long)(tu_rand(&seed) % 100000));
    }
    return NULL;
}

START_TEST(philosophers_share_no_fork)
{
    struct table t;
    struct philosopher ph[PHILOSOPHERS];
    tu_snapshot snap;
    int i;

    t.s = tu_store_ok();
    memset(ph, 0, sizeof ph);
    for (i = 0; i < PHILOSOPHERS; i++) {
        ph[i].table = &t;
        ph[i].id = i + 1;
        snprintf(ph[i].name, sizeof ph[i].name, "philosopher.%d", i + 1);
        snprintf(ph[i].forks[0], sizeof ph[i].forks[0], "fork.%d", i + 1);
        snprintf(ph[i].forks[1], sizeof ph[i].forks[1], "fork.%d", (i + 1) % PHILOSOPHERS + 1);
    }
    tu_clock_start(&t.clock, tu_stress_seconds());
    tu_clock_owe(&t.clock, PHILOSOPHERS);
    for (i = 0; i < PHILOSOPHERS; i++)
        tu_start(&ph[i].thread, philosopher_main, &ph[i]);
    for (i = 0; i < PHILOSOPHERS; i++)
        pthread_join(ph[i].thread, NULL);

    printf("philosophers:");
    for (i = 0; i < PHILOSOPHERS; i++)
        printf(" %ld", ph[i].meals);
    printf(" meals\n");
    fflush(stdout);

    for (i = 0; i < PHILOSOPHERS; i++) {
        ck_assert_msg(ph[i].errors == 0, "%s: %ld errors", ph[i].name, ph[i].errors);
        ck_assert_msg(ph[i].shared_forks == 0, "%s saw its fork owned by another", ph[i].name);
        ck_assert_msg(ph[i].release_failures == 0, "%s could not release", ph[i].name);
        ck_assert_msg(ph[i].meals >= MEAL_QUOTA, "%s starved: %ld meals (%ld attempts)", ph[i].name,
                      ph[i].meals, ph[i].attempts);
    }
    /* Every fork is back on the table, empty. */
    tu_snapshot_take(t.s, &snap);
    ck_assert_uint_eq(snap.n, PHILOSOPHERS);
    for (i = 0; i < PHILOSOPHERS; i++) {
        ck_assert_int_eq(snap.e[i].has_value, 1);
        ck_assert_uint_eq(snap.e[i].len, 0);
    }
    tu_snapshot_free(&snap);
    axstm_store_free(t.s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Key creation                                                       */
/* ------------------------------------------------------------------ */

#define FIXED 16
#define CREATORS 4
#define READERS 2
#define MAX_NEW 30000 /* per creator */
#define BATCH 8
/* The run lasts until every creator has made this many keys and every
 * reader has read this many times, while the creators are still going. */
#define CREATE_QUOTA BATCH
#define READ_QUOTA 16

struct creation {
    axstm_store *s;
    atomic_int creators_left;
    tu_clock clock;
};

struct creator {
    struct creation *run;
    pthread_t thread;
    int id;
    long created, busy, errors;
};

struct checker {
    struct creation *run;
    pthread_t thread;
    long reads, wrong, busy, errors;
};

static void creator_key(char *buf, size_t size, int id, long i)
{
    snprintf(buf, size, "new.%d.%ld", id, i);
}

static void *creator_main(void *arg)
{
    struct creator *cr = arg;
    char names[BATCH][32];
    const char *keys[BATCH];
    unsigned long rounds = 0;
    int rc, j, paid = 0;

    /* Even creators use usevar, odd ones using() of a batch of new keys.
     * One that has made all its keys stays until the run ends, so that the
     * readers read while creators are still at it. */
    while (!tu_time_up(&cr->run->clock, &rounds)) {
        if (!paid && cr->created >= CREATE_QUOTA) {
            paid = 1;
            tu_clock_paid(&cr->run->clock);
        }
        if (cr->created >= MAX_NEW) {
            tu_sleep_ns(100000);
            continue;
        }
        if (cr->id % 2 == 0) {
            axstm_value *v = NULL;
            creator_key(names[0], sizeof names[0], cr->id, cr->created);
            TU_RETRY_COUNT(rc, axstm_usevar(cr->run->s, names[0], &v), &cr->busy);
            if (rc != AXSTM_OK) {
                cr->errors++;
                break;
            }
            if (axstm_value_version(v) != 0 || axstm_value_data(v, NULL) != NULL)
                cr->errors++; /* a new key must be new */
            axstm_value_free(v);
            cr->created++;
        } else {
            axstm_collection *c = NULL;
            for (j = 0; j < BATCH; j++) {
                creator_key(names[j], sizeof names[j], cr->id, cr->created + j);
                keys[j] = names[j];
            }
            TU_RETRY_COUNT(rc, axstm_using(cr->run->s, keys, BATCH, &c), &cr->busy);
            if (rc != AXSTM_OK) {
                cr->errors++;
                break;
            }
            for (j = 0; j < BATCH; j++)
                if (axstm_value_version(axstm_collection_at(c, (size_t)j)) != 0)
                    cr->errors++;
            axstm_collection_free(c);
            cr->created += BATCH;
        }
    }
    atomic_fetch_sub(&cr->run->creators_left, 1);
    return NULL;
}

static void *checker_main(void *arg)
{
    static const char *const fixed_keys[FIXED] = {
        "fixed.0",  "fixed.1",  "fixed.2",  "fixed.3",  "fixed.4",  "fixed.5",
        "fixed.6",  "fixed.7",  "fixed.8",  "fixed.9",  "fixed.10", "fixed.11",
        "fixed.12", "fixed.13", "fixed.14", "fixed.15",
    };
    struct checker *ck = arg;
    uint64_t seed = (uint64_t)(uintptr_t)ck | 1;
    int rc, i;

    while (atomic_load(&ck->run->creators_left) > 0) {
        int k = (int)(tu_rand(&seed) % FIXED);
        axstm_value *v = NULL;
        axstm_collection *c = NULL;
        int64_t x;

        TU_RETRY_COUNT(rc, axstm_usevar(ck->run->s, fixed_keys[k], &v), &ck->busy);
        if (rc != AXSTM_OK) {
            ck->errors++;
            break;
        }
        if (axstm_value_version(v) != 1 || axstm_value_get_i64(v, &x) != AXSTM_OK || x != k)
            ck->wrong++;
        axstm_value_free(v);
        if (++ck->reads == READ_QUOTA)
            tu_clock_paid(&ck->run->clock);

        if (ck->reads % 8 == 0) {
            TU_RETRY_COUNT(rc, axstm_using(ck->run->s, fixed_keys, FIXED, &c), &ck->busy);
            if (rc != AXSTM_OK) {
                ck->errors++;
                break;
            }
            for (i = 0; i < FIXED; i++) {
                axstm_value *w = axstm_collection_at(c, (size_t)i);
                if (axstm_value_version(w) != 1 || axstm_value_get_i64(w, &x) != AXSTM_OK || x != i)
                    ck->wrong++;
            }
            axstm_collection_free(c);
        }
    }
    return NULL;
}

struct seen_keys {
    unsigned char *seen[CREATORS];
    long fixed, strays, duplicates;
};

static int seen_visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    struct seen_keys *sk = arg;
    int id;
    long i;
    (void)version;
    (void)data;
    (void)len;
    if (strncmp(key, "fixed.", 6) == 0) {
        sk->fixed++;
    } else if (sscanf(key, "new.%d.%ld", &id, &i) == 2 && id >= 0 && id < CREATORS && i >= 0 &&
               i < MAX_NEW + BATCH) {
        if (sk->seen[id][i]++)
            sk->duplicates++;
    } else {
        sk->strays++;
    }
    return 0;
}

START_TEST(keys_created_concurrently_exist_once)
{
    struct creation run;
    struct creator cr[CREATORS];
    struct checker ck[READERS];
    struct seen_keys sk;
    uint64_t total_new = 0;
    char key[32];
    int i;
    long j;

    run.s = tu_store_ok();
    for (i = 0; i < FIXED; i++) {
        axstm_value *v;
        snprintf(key, sizeof key, "fixed.%d", i);
        v = tu_usevar_ok(run.s, key);
        tu_set_i64_ok(v, i);
        ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        axstm_value_free(v);
    }
    atomic_init(&run.creators_left, CREATORS);
    tu_clock_start(&run.clock, tu_stress_seconds());
    tu_clock_owe(&run.clock, CREATORS + READERS);
    memset(cr, 0, sizeof cr);
    memset(ck, 0, sizeof ck);
    for (i = 0; i < READERS; i++) {
        ck[i].run = &run;
        tu_start(&ck[i].thread, checker_main, &ck[i]);
    }
    for (i = 0; i < CREATORS; i++) {
        cr[i].run = &run;
        cr[i].id = i;
        tu_start(&cr[i].thread, creator_main, &cr[i]);
    }
    for (i = 0; i < CREATORS; i++)
        pthread_join(cr[i].thread, NULL);
    for (i = 0; i < READERS; i++)
        pthread_join(ck[i].thread, NULL);

    for (i = 0; i < CREATORS; i++) {
        ck_assert_msg(cr[i].errors == 0, "creator %d: %ld errors", i, cr[i].errors);
        ck_assert_msg(cr[i].created >= CREATE_QUOTA, "creator %d made %ld keys", i, cr[i].created);
        total_new += (uint64_t)cr[i].created;
    }
    for (i = 0; i < READERS; i++) {
        ck_assert_int_eq(ck[i].errors, 0);
        ck_assert_msg(ck[i].wrong == 0, "reader %d saw %ld wrong values", i, ck[i].wrong);
        ck_assert_msg(ck[i].reads >= READ_QUOTA, "reader %d read %ld times", i, ck[i].reads);
    }
    printf("key creation: %" PRIu64 " keys by %d threads, %ld+%ld reads\n", total_new, CREATORS,
           ck[0].reads, ck[1].reads);
    fflush(stdout);

    ck_assert_uint_eq(tu_stats_ok(run.s).keys, FIXED + total_new);
    memset(&sk, 0, sizeof sk);
    for (i = 0; i < CREATORS; i++) {
        sk.seen[i] = calloc(MAX_NEW + BATCH, 1);
        ck_assert_ptr_nonnull(sk.seen[i]);
    }
    ck_assert_int_eq(axstm_store_foreach(run.s, seen_visit, &sk), AXSTM_OK);
    ck_assert_int_eq(sk.fixed, FIXED);
    ck_assert_int_eq(sk.strays, 0);
    ck_assert_int_eq(sk.duplicates, 0);
    for (i = 0; i < CREATORS; i++) {
        for (j = 0; j < cr[i].created; j++)
            ck_assert_msg(sk.seen[i][j] == 1, "new.%d.%ld missing", i, j);
        free(sk.seen[i]);
    }
    axstm_store_free(run.s);
}
END_TEST

/* Several threads race to create the same new keys and count on them. */

#define RACE_KEYS 2000
#define RACERS 4

struct racer {
    axstm_store *s;
    pthread_t thread;
    int id;
    long conflicts, busy, errors;
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    char key[32];
    int k, rc;

    for (k = 0; k < RACE_KEYS; k++) {
        /* Half the racers walk the keys backwards, so creations cross. */
        int n = r->id % 2 ? RACE_KEYS - 1 - k : k;
        axstm_value *v = NULL;
        snprintf(key, sizeof key, "race.%d", n);
        TU_RETRY_COUNT(rc, axstm_usevar(r->s, key, &v), &r->busy);
        if (rc != AXSTM_OK) {
            r->errors++;
            return NULL;
        }
        for (;;) { /* increment, redoing on conflict */
            int64_t x = 0;
            rc = axstm_value_get_i64(v, &x);
            if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE) {
                r->errors++;
                break;
            }
            if (axstm_value_set_i64(v, x + 1) != AXSTM_OK) {
                r->errors++;
                break;
            }
            TU_RETRY_COUNT(rc, axstm_value_commit(v), &r->busy);
            if (rc == AXSTM_OK)
                break;
            if (rc != AXSTM_CONCURRENT_UPDATE) {
                r->errors++;
                break;
            }
            r->conflicts++;
            TU_RETRY_COUNT(rc, axstm_value_refresh(v), &r->busy);
            if (rc != AXSTM_OK) {
                r->errors++;
                break;
            }
        }
        axstm_value_free(v);
    }
    return NULL;
}

static int race_visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    long *bad = arg;
    int64_t x;
    (void)key;
    if (version != RACERS || data == NULL || len != 8) {
        ++*bad;
        return 0;
    }
    memcpy(&x, data, 8);
    if (x != RACERS)
        ++*bad;
    return 0;
}

START_TEST(same_new_keys_raced_exist_once)
{
    struct racer r[RACERS];
    long bad = 0;
    int i;
    axstm_store *s = tu_store_ok();

    memset(r, 0, sizeof r);
    for (i = 0; i < RACERS; i++) {
        r[i].s = s;
        r[i].id = i;
        tu_start(&r[i].thread, racer_main, &r[i]);
    }
    for (i = 0; i < RACERS; i++)
        pthread_join(r[i].thread, NULL);
    for (i = 0; i < RACERS; i++)
        ck_assert_msg(r[i].errors == 0, "racer %d: %ld errors", i, r[i].errors);

    /* One key per name, incremented once by every racer: no lost update,
     * not even on the commit that raced the key's creation. */
    ck_assert_uint_eq(tu_stats_ok(s).keys, RACE_KEYS);
    ck_assert_uint_eq(tu_foreach_count(s), RACE_KEYS);
    ck_assert_int_eq(axstm_store_foreach(s, race_visit, &bad), AXSTM_OK);
    ck_assert_int_eq(bad, 0);
    axstm_store_free(s);
}
END_TEST

static Suite *stress_suite(void)
{
    Suite *s = suite_create("stress");
    TCase *tc;

    tc = tcase_create("Bank");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, bank_total_is_conserved, 0,
                        (int)(sizeof bank_configs / sizeof bank_configs[0]));
    suite_add_tcase(s, tc);

    tc = tcase_create("Philosophers");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, philosophers_share_no_fork);
    suite_add_tcase(s, tc);

    tc = tcase_create("Key creation");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, keys_created_concurrently_exist_once);
    tcase_add_test(tc, same_new_keys_raced_exist_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(stress_suite());
}
