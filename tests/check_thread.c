/* SPDX-License-Identifier: MIT */
/*
 * check_thread.c -- what the library keeps per thread.
 *
 *   Slots         every live thread has a slot of its own below 64, the
 *                 lowest free one; a thread that exits gives its slot back
 *                 to the next thread; threads beyond 64 at once share slot
 *                 64 and still count every commit (thread.c).
 *   Reclamation   readers check out values big enough to be heap blobs
 *                 while writers replace them: every value a reader sees is
 *                 whole, with unfenced pins (membarrier) and with fenced
 *                 ones; replaced values are freed, not piled up, also
 *                 those of threads that went idle or exited (epoch.c).
 *   Handle cache  a handle may be freed by another thread than the one
 *                 that made it and its block reused there; threads exit
 *                 with full caches and leave nothing behind; injected
 *                 allocation failures reach checkouts the cache would have
 *                 served (alloc.c).
 *
 * The slot tests assume that the only threads of the process that ever
 * called the library are the test's own thread and the threads the running
 * test started: true in a forked test (Check's default), and with
 * CK_FORK=no too, since every test joins all its threads (a joined thread
 * has given its slot back).
 *
 * Workers only record what they saw; the test's thread asserts after join.
 * Under valgrind (seen in LD_PRELOAD) the longest loops are ten times
 * shorter.  No test asserts a timing: the timed run is bounded by both a
 * count and a deadline, and asserts only what the run saw.
 */
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "testutil.h"

#include "axstm-internal.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                            */
/* ------------------------------------------------------------------ */

/* A loop count: a tenth of it under valgrind. */
static unsigned long scaled(unsigned long n)
{
    return tu_under_valgrind() ? n / 10 : n;
}

/* A worker's own error code: a value was not what it should be. */
#define WRONG_VALUE 1

/* Worker side: counts an error, keeping the first code. */
static void note_error(long *errors, int *first, int rc)
{
    if ((*errors)++ == 0)
        *first = rc;
}

/* Worker side: commits key = x (redoing the work on a conflict); returns
 * AXSTM_OK or the first other answer.  BUSY_RETRY answers are counted in
 * *busy. */
static int put_i64(axstm_store *s, const char *key, int64_t x, long *busy)
{
    axstm_value *v = NULL;
    int rc;
    TU_RETRY_COUNT(rc, axstm_usevar(s, key, &v), busy);
    if (rc != AXSTM_OK)
        return rc;
    for (;;) {
        rc = axstm_value_set_i64(v, x);
        if (rc == AXSTM_OK)
            TU_RETRY_COUNT(rc, axstm_value_commit(v), busy);
        if (rc != AXSTM_CONCURRENT_UPDATE)
            break;
        TU_RETRY_COUNT(rc, axstm_value_refresh(v), busy);
        if (rc != AXSTM_OK)
            break;
    }
    axstm_value_free(v);
    return rc;
}

/* The committed version of key (0 when it does not exist). */
static uint64_t version_of(axstm_store *s, const char *key)
{
    tu_entry e;
    if (!tu_lookup(s, key, &e))
        return 0;
    free(e.data);
    return e.version;
}

/* ------------------------------------------------------------------ */
/* Slots                                                              */
/* ------------------------------------------------------------------ */

/*
 * The test's own slot, taken before it starts any thread (so with no other
 * thread alive): a slot of its own.  Every test calls this first, so that
 * with CK_FORK=no the test's thread never happens to take its slot while a
 * crowd of workers holds them all.
 */
static unsigned test_thread_slot(void)
{
    unsigned mine = axstm__thread_slot();
    ck_assert_uint_lt(mine, AXSTM__SLOTS);
    return mine;
}

/* The k-th lowest slot (from 0) other than `held`: where the k-th of
 * threads started one after another lands while they all live. */
static unsigned nth_free_slot(unsigned held, unsigned k)
{
    for (unsigned slot = 0; slot < AXSTM__SLOTS; slot++)
        if (slot != held && k-- == 0)
            return slot;
    return AXSTM__SHARED_SLOT;
}

/* A thread that commits its key (its first call: that takes its slot),
 * notes its slot, says so on `ready` and exits once `release` is posted.
 * ready and release may be NULL: then it exits at once. */
struct probe {
    axstm_store *s;
    char key[32];
    sem_t *ready, *release;
    pthread_t thread;
    unsigned slot;
    int rc;
    long busy;
};

static void *probe_main(void *arg)
{
    struct probe *p = arg;
    p->rc = put_i64(p->s, p->key, 1, &p->busy);
    p->slot = axstm__thread_slot();
    if (p->ready != NULL)
        sem_post(p->ready);
    if (p->release != NULL)
        tu_sem_wait_ok(p->release);
    return NULL;
}

static void probe_start(struct probe *p, axstm_store *s, const char *key, sem_t *ready,
                        sem_t *release)
{
    memset(p, 0, sizeof *p);
    p->s = s;
    snprintf(p->key, sizeof p->key, "%s", key);
    p->ready = ready;
    p->release = release;
    p->slot = 12345;
    tu_start(&p->thread, probe_main, p);
}

/* Starts a probe and joins it: it has exited, so its slot is free again. */
static unsigned probe_run(axstm_store *s, const char *key)
{
    struct probe p;
    probe_start(&p, s, key, NULL, NULL);
    tu_join(p.thread);
    ck_assert_msg(p.rc == AXSTM_OK, "probe: %s", axstm_strerror(p.rc));
    return p.slot;
}

/* Two threads alive at once each get a slot of their own (below 64, not
 * the test thread's), the lowest two free: no thread shares another's
 * slot while there are free ones, or plain updates would be lost. */
START_TEST(live_threads_have_slots_of_their_own)
{
    axstm_store *s = tu_store_ok();
    unsigned mine = test_thread_slot(), lo, hi;
    sem_t ready, release;
    struct probe p[2];
    int i;

    ck_assert_int_eq(sem_init(&ready, 0, 0), 0);
    ck_assert_int_eq(sem_init(&release, 0, 0), 0);
    probe_start(&p[0], s, "a", &ready, &release);
    probe_start(&p[1], s, "b", &ready, &release);
    /* Both have their slots and neither has exited. */
    tu_sem_wait_ok(&ready);
    tu_sem_wait_ok(&ready);
    sem_post(&release);
    sem_post(&release);
    for (i = 0; i < 2; i++)
        tu_join(p[i].thread);
    for (i = 0; i < 2; i++) {
        ck_assert_msg(p[i].rc == AXSTM_OK, "probe %d: %s", i, axstm_strerror(p[i].rc));
        ck_assert_uint_lt(p[i].slot, AXSTM__SLOTS);
        ck_assert_uint_ne(p[i].slot, mine);
    }
    ck_assert_uint_ne(p[0].slot, p[1].slot);
    lo = p[0].slot < p[1].slot ? p[0].slot : p[1].slot;
    hi = p[0].slot < p[1].slot ? p[1].slot : p[0].slot;
    ck_assert_uint_eq(lo, nth_free_slot(mine, 0));
    ck_assert_uint_eq(hi, nth_free_slot(mine, 1));
    /* The test's thread keeps its slot. */
    ck_assert_uint_eq(axstm__thread_slot(), mine);
    ck_assert_uint_eq(tu_stats_ok(s).commits, 2);
    sem_destroy(&ready);
    sem_destroy(&release);
    axstm_store_free(s);
}
END_TEST

/* A thread that exited gave its slot back (its thread-exit destructor ran
 * before pthread_join returned): the next thread gets the same slot, and
 * a slot freed below a live thread's is the one handed out next. */
START_TEST(exited_thread_gives_its_slot_back)
{
    axstm_store *s = tu_store_ok();
    unsigned mine = test_thread_slot(), first, c;
    sem_t ready, release1, release2;
    struct probe h1, h2;

    /* One after another: the same slot, the lowest free. */
    first = probe_run(s, "first");
    ck_assert_uint_eq(first, nth_free_slot(mine, 0));
    ck_assert_uint_eq(probe_run(s, "second"), first);
    ck_assert_uint_eq(probe_run(s, "third"), first);

    /* h1 and h2 hold the two lowest free slots; h1 exits; the next thread
     * gets h1's slot back, below the one h2 still holds. */
    ck_assert_int_eq(sem_init(&ready, 0, 0), 0);
    ck_assert_int_eq(sem_init(&release1, 0, 0), 0);
    ck_assert_int_eq(sem_init(&release2, 0, 0), 0);
    probe_start(&h1, s, "h1", &ready, &release1);
    tu_sem_wait_ok(&ready);
    probe_start(&h2, s, "h2", &ready, &release2);
    tu_sem_wait_ok(&ready);
    sem_post(&release1);
    tu_join(h1.thread);
    c = probe_run(s, "c");
    sem_post(&release2);
    tu_join(h2.thread);
    ck_assert_int_eq(h1.rc, AXSTM_OK);
    ck_assert_int_eq(h2.rc, AXSTM_OK);
    ck_assert_uint_eq(h1.slot, nth_free_slot(mine, 0));
    ck_assert_uint_eq(h2.slot, nth_free_slot(mine, 1));
    ck_assert_uint_eq(c, h1.slot);

    /* Every commit of those exited threads still counts. */
    ck_assert_uint_eq(tu_stats_ok(s).commits, 6);
    sem_destroy(&ready);
    sem_destroy(&release1);
    sem_destroy(&release2);
    axstm_store_free(s);
}
END_TEST

/* More threads alive at once than there are slots. */
#define CROWD 80

struct crowd {
    axstm_store *s;
    pthread_barrier_t all_have_slots;
    unsigned long commits_each;
    /* The threads in the shared slot commit first, alone, so that they run
     * on every core at once: that is when unsafe updates get lost.  The
     * others wait (asleep: spinning would take the cores) till they are
     * done, and then commit. */
    atomic_uint in_shared_slot;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned shared_done;
};

struct crowd_worker {
    struct crowd *crowd;
    pthread_t thread;
    int index;
    unsigned slot, slot_after;
    long busy, errors;
    int first_error;
};

static void *crowd_main(void *arg)
{
    struct crowd_worker *w = arg;
    struct crowd *c = w->crowd;
    axstm_value *v = NULL;
    char key[32];
    int rc;

    /* Taken before the barrier: nobody exits (and frees a slot) before all
     * CROWD threads hold one, so at least CROWD - 64 share slot 64. */
    w->slot = axstm__thread_slot();
    if (w->slot == AXSTM__SHARED_SLOT)
        atomic_fetch_add(&c->in_shared_slot, 1);
    pthread_barrier_wait(&c->all_have_slots);

    if (w->slot != AXSTM__SHARED_SLOT) {
        pthread_mutex_lock(&c->lock);
        while (c->shared_done < atomic_load(&c->in_shared_slot))
            pthread_cond_wait(&c->cond, &c->lock);
        pthread_mutex_unlock(&c->lock);
    }
    snprintf(key, sizeof key, "crowd.%d", w->index);
    TU_RETRY_COUNT(rc, axstm_usevar(c->s, key, &v), &w->busy);
    if (rc != AXSTM_OK) {
        note_error(&w->errors, &w->first_error, rc);
    } else {
        for (unsigned long k = 0; k < c->commits_each; k++) {
            rc = axstm_value_set_i64(v, (int64_t)k);
            if (rc == AXSTM_OK)
                TU_RETRY_COUNT(rc, axstm_value_commit(v), &w->busy);
            if (rc != AXSTM_OK)
                note_error(&w->errors, &w->first_error, rc);
        }
        axstm_value_free(v);
    }
    w->slot_after = axstm__thread_slot();
    if (w->slot == AXSTM__SHARED_SLOT) {
        pthread_mutex_lock(&c->lock);
        if (++c->shared_done == atomic_load(&c->in_shared_slot))
            pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
    }
    return NULL;
}

/* 80 threads alive at once each make exactly K commits of their own key:
 * 63 of them get the slots the test's thread does not hold, the other 17
 * share slot 64 and count with atomic read-modify-writes.  The store's commit and busy
 * counters must come out exact: a plain load+store in the shared slot (or
 * two threads given the same exclusive slot) would lose some of those
 * updates. */
START_TEST(threads_beyond_the_slots_share_one_and_count_exactly)
{
    static struct crowd_worker w[CROWD];
    struct crowd c;
    axstm_stats st;
    bool taken[AXSTM__SLOTS] = {false};
    unsigned mine = test_thread_slot(), shared = 0, own = 0;
    long busy = 0;
    tu_snapshot snap;
    int i;

    memset(w, 0, sizeof w);
    memset(&c, 0, sizeof c);
    c.s = tu_store_ok();
    c.commits_each = scaled(5000);
    atomic_init(&c.in_shared_slot, 0);
    ck_assert_int_eq(pthread_barrier_init(&c.all_have_slots, NULL, CROWD), 0);
    ck_assert_int_eq(pthread_mutex_init(&c.lock, NULL), 0);
    ck_assert_int_eq(pthread_cond_init(&c.cond, NULL), 0);
    for (i = 0; i < CROWD; i++) {
        w[i].crowd = &c;
        w[i].index = i;
        tu_start(&w[i].thread, crowd_main, &w[i]);
    }
    for (i = 0; i < CROWD; i++)
        tu_join(w[i].thread);
    pthread_barrier_destroy(&c.all_have_slots);
    pthread_mutex_destroy(&c.lock);
    pthread_cond_destroy(&c.cond);

    for (i = 0; i < CROWD; i++) {
        ck_assert_msg(w[i].errors == 0, "worker %d: %ld errors, first %s", i, w[i].errors,
                      axstm_strerror(w[i].first_error));
        ck_assert_uint_eq(w[i].slot_after, w[i].slot); /* a thread keeps its slot */
        busy += w[i].busy;
        if (w[i].slot == AXSTM__SHARED_SLOT) {
            shared++;
        } else {
            ck_assert_uint_lt(w[i].slot, AXSTM__SLOTS);
            ck_assert_msg(!taken[w[i].slot], "slot %u given to two live threads", w[i].slot);
            ck_assert_uint_ne(w[i].slot, mine);
            taken[w[i].slot] = true;
            own++;
        }
    }
    /* Every free slot went to one of them before any went shared. */
    ck_assert_uint_eq(own, AXSTM__SLOTS - 1);
    ck_assert_uint_eq(shared, CROWD - own);
    ck_assert_uint_ge(shared, CROWD - AXSTM__SLOTS);

    st = tu_stats_ok(c.s);
    ck_assert_uint_eq(st.keys, CROWD);
    ck_assert_uint_eq(st.commits, (uint64_t)CROWD * c.commits_each);
    ck_assert_uint_eq(st.busy, (uint64_t)busy);
    ck_assert_uint_eq(st.conflicts, 0);
    /* And every commit reached its key. */
    tu_snapshot_take(c.s, &snap);
    ck_assert_uint_eq(snap.n, CROWD);
    for (i = 0; i < CROWD; i++)
        if (snap.e[i].version != c.commits_each)
            ck_abort_msg("%s: version %llu", snap.e[i].key, (unsigned long long)snap.e[i].version);
    tu_snapshot_free(&snap);
    axstm_store_free(c.s);
}
END_TEST

/* Hundreds of threads one after another (far more than 64 over the life
 * of the process) each get a slot of its own, always the same lowest free
 * one: slots are recycled, not used up; and each one's commit counts. */
START_TEST(short_lived_threads_recycle_slots)
{
    axstm_store *s = tu_store_ok();
    unsigned mine = test_thread_slot();
    unsigned long n = tu_under_valgrind() ? 100 : 300, i, wrong = 0;
    unsigned first_wrong = 0;
    uint64_t versions;
    char key[32];

    for (i = 0; i < n; i++) {
        unsigned slot;
        snprintf(key, sizeof key, "seq.%lu", i % 4);
        slot = probe_run(s, key);
        if (slot != nth_free_slot(mine, 0) && wrong++ == 0)
            first_wrong = slot;
    }
    ck_assert_msg(wrong == 0, "%lu of %lu threads did not get slot %u (first: %u)", wrong, n,
                  nth_free_slot(mine, 0), first_wrong);
    ck_assert_uint_eq(tu_stats_ok(s).commits, n);
    versions = 0;
    for (i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "seq.%lu", i);
        versions += version_of(s, key);
    }
    ck_assert_uint_eq(versions, n);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Reclamation                                                        */
/* ------------------------------------------------------------------ */

/*
 * Values larger than AXSTM__INLINE_MAX are heap blobs, freed through epoch
 * reclamation once replaced.  A writer's value is n bytes all equal to one
 * byte b (never 0), with n a function of b between 9 and 200: a reader that
 * got a freed or reused blob would see mixed bytes or a length that does not
 * go with them (and ASan or valgrind would report the read).
 */
#define BLOB_KEYS 4
#define BLOB_MIN (AXSTM__INLINE_MAX + 1)
#define BLOB_MAX 200

static size_t blob_len(unsigned char b)
{
    return BLOB_MIN + (size_t)b * 37u % (BLOB_MAX - BLOB_MIN + 1);
}

static bool blob_whole(const void *data, size_t len)
{
    const unsigned char *p = data;
    if (p == NULL || len < BLOB_MIN || len > BLOB_MAX || p[0] == 0 || len != blob_len(p[0]))
        return false;
    for (size_t i = 1; i < len; i++)
        if (p[i] != p[0])
            return false;
    return true;
}

/* The pin mode for a test: unfenced where the system allows, or fenced
 * (forced).  The flag is set once, at the first store's creation; forcing
 * it off is safe while no other thread uses the library, and it is put
 * back at the end (with CK_FORK=no later tests share it). */
struct pin_mode {
    bool saved;
};

static void pin_mode_enter(struct pin_mode *m, bool unfenced)
{
    m->saved = atomic_load(&axstm__pins_unfenced);
    if (!unfenced)
        atomic_store(&axstm__pins_unfenced, false);
    else if (!m->saved)
        printf("note: no membarrier here; the unfenced run runs fenced\n");
}

static void pin_mode_leave(struct pin_mode *m)
{
    atomic_store(&axstm__pins_unfenced, m->saved);
}

#define CHURN_WRITERS 2
#define CHURN_READERS 3

struct churn {
    axstm_store *s;
    char names[BLOB_KEYS][16];
    const char *keys[BLOB_KEYS];
    unsigned long min_writes, max_writes;
    atomic_int readers_ready; /* readers that have read once */
    atomic_int writers_left;
    /* The test's thread stops the writers between writes to measure (a
     * writer at a pause counts itself in `paused`), and ends the run with
     * `enough`: writers past min_writes then stop without writing again. */
    atomic_int pause, paused, at_min, enough;
};

struct churn_writer {
    struct churn *c;
    pthread_t thread;
    uint64_t seed;
    unsigned id;
    unsigned long writes; /* successful commits */
    uint64_t published;   /* blob bytes they published */
    long errors;
    int first_error;
    unsigned char buf[BLOB_MAX];
};

struct churn_reader {
    struct churn *c;
    pthread_t thread;
    uint64_t seed;
    unsigned long reads[3]; /* by usevar, using, atomically */
    long torn, errors;
    int first_error;
};

struct txn_put {
    const char *key;
    const unsigned char *data;
    size_t len;
};

static int put_body(axstm_txn *tx, void *arg)
{
    struct txn_put *p = arg;
    return axstm_txn_set(tx, p->key, p->data, p->len);
}

/* Publishes one new value of a random key; returns its length, or 0. */
static size_t churn_write(struct churn_writer *w, unsigned long n)
{
    struct churn *c = w->c;
    const char *key = c->keys[tu_rand(&w->seed) % BLOB_KEYS];
    unsigned char b = (unsigned char)(1 + (n * 2 + w->id) % 255);
    size_t len = blob_len(b);
    axstm_value *v = NULL;
    int rc;

    memset(w->buf, b, len);
    if (n % 4 == 3) {
        /* Through a transaction: a different commit path, same retire. */
        struct txn_put p = {key, w->buf, len};
        rc = axstm_atomically(c->s, put_body, &p);
        if (rc != AXSTM_OK) {
            note_error(&w->errors, &w->first_error, rc);
            return 0;
        }
        return len;
    }
    TU_RETRY(rc, axstm_usevar(c->s, key, &v));
    if (rc != AXSTM_OK) {
        note_error(&w->errors, &w->first_error, rc);
        return 0;
    }
    for (;;) {
        rc = axstm_value_set(v, w->buf, len);
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_value_commit(v));
        if (rc != AXSTM_CONCURRENT_UPDATE)
            break;
        TU_RETRY(rc, axstm_value_refresh(v));
        if (rc != AXSTM_OK)
            break;
    }
    axstm_value_free(v);
    if (rc != AXSTM_OK) {
        note_error(&w->errors, &w->first_error, rc);
        return 0;
    }
    return len;
}

static void *churn_writer_main(void *arg)
{
    struct churn_writer *w = arg;
    struct churn *c = w->c;
    unsigned long n = 0;
    bool at_min = false;

    /* Every reader is at it before the first replacement. */
    while (atomic_load(&c->readers_ready) < CHURN_READERS)
        sched_yield();
    /* At least min_writes, so that reclamation runs many times; then until
     * the test's thread has seen enough reclaimed. */
    for (;;) {
        size_t len;
        if (n >= c->min_writes && !at_min) {
            at_min = true;
            atomic_fetch_add(&c->at_min, 1);
        }
        if (at_min && atomic_load(&c->enough))
            break;
        if (atomic_load(&c->pause)) {
            atomic_fetch_add(&c->paused, 1);
            while (atomic_load(&c->pause))
                sched_yield();
            atomic_fetch_sub(&c->paused, 1);
            continue;
        }
        /* Past max_writes only slowly: a reader held up while pinned keeps
         * everything replaced since from being freed. */
        if (n >= c->max_writes)
            tu_sleep_ns(1000000);
        len = churn_write(w, n++);
        if (len != 0) {
            w->writes++;
            w->published += axstm__blob_size(len);
        }
    }
    atomic_fetch_sub(&c->writers_left, 1);
    return NULL;
}

struct txn_look {
    struct churn *c;
    long torn;
};

/* Reads every key inside a transaction: the bytes are borrowed from the
 * blobs themselves, kept alive only by the transaction's pin. */
static int look_body(axstm_txn *tx, void *arg)
{
    struct txn_look *l = arg;
    for (int i = 0; i < BLOB_KEYS; i++) {
        const void *data;
        size_t len;
        int rc = axstm_txn_get(tx, l->c->keys[i], &data, &len);
        if (rc != AXSTM_OK)
            return rc;
        if (!blob_whole(data, len))
            l->torn++;
    }
    return AXSTM_OK;
}

static void *churn_reader_main(void *arg)
{
    struct churn_reader *r = arg;
    struct churn *c = r->c;
    unsigned long n;
    int rc;

    /* The first round runs whatever the writers do (they wait for it). */
    for (n = 0; n == 0 || atomic_load(&c->writers_left) > 0; n++) {
        size_t len;
        switch (n % 3) {
        case 0: {
            axstm_value *v = NULL;
            const void *data;
            TU_RETRY(rc, axstm_usevar(c->s, c->keys[tu_rand(&r->seed) % BLOB_KEYS], &v));
            if (rc != AXSTM_OK) {
                note_error(&r->errors, &r->first_error, rc);
                break;
            }
            data = axstm_value_data(v, &len);
            if (!blob_whole(data, len))
                r->torn++;
            axstm_value_free(v);
            r->reads[0]++;
            break;
        }
        case 1: {
            axstm_collection *col = NULL;
            TU_RETRY(rc, axstm_using(c->s, c->keys, BLOB_KEYS, &col));
            if (rc != AXSTM_OK) {
                note_error(&r->errors, &r->first_error, rc);
                break;
            }
            for (size_t i = 0; i < BLOB_KEYS; i++) {
                const void *data = axstm_value_data(axstm_collection_at(col, i), &len);
                if (!blob_whole(data, len))
                    r->torn++;
            }
            axstm_collection_free(col);
            r->reads[1]++;
            break;
        }
        default: {
            struct txn_look l = {c, 0};
            rc = axstm_atomically(c->s, look_body, &l);
            r->torn += l.torn;
            if (rc != AXSTM_OK)
                note_error(&r->errors, &r->first_error, rc);
            else
                r->reads[2]++;
            break;
        }
        }
        if (n == 0)
            atomic_fetch_add(&c->readers_ready, 1);
    }
    return NULL;
}

/*
 * 3 readers check out (usevar, using, and inside transactions) keys whose
 * values 2 writers keep replacing by new blobs of 9..200 bytes, for about
 * half a second (at least 2000 replacements each): every value seen is
 * whole.  A blob freed while a reader could still reach it shows up torn
 * here, or as a use after free under ASan and valgrind.  Reclamation must
 * have freed a good part of what was replaced while the readers were at
 * it, or the run proves little; how soon is up to the scheduler (a reader
 * preempted while pinned holds everything back), so the run goes on until
 * it has, measured with the writers paused, or a hang guard runs out.
 */
static void churn_run(bool unfenced)
{
    static struct churn c;
    static struct churn_writer w[CHURN_WRITERS];
    static struct churn_reader r[CHURN_READERS];
    struct pin_mode mode;
    axstm_stats st0, st1;
    uint64_t published = 0;
    int64_t reclaimed;
    unsigned long writes = 0;
    long torn = 0;
    double run_end, give_up;
    int i;

    (void)test_thread_slot();
    memset(&c, 0, sizeof c);
    memset(w, 0, sizeof w);
    memset(r, 0, sizeof r);
    c.s = tu_store_ok();
    pin_mode_enter(&mode, unfenced);
    for (i = 0; i < BLOB_KEYS; i++) {
        axstm_value *v;
        unsigned char buf[BLOB_MAX];
        size_t len = blob_len((unsigned char)(200 + i));
        snprintf(c.names[i], sizeof c.names[i], "blob.%d", i);
        c.keys[i] = c.names[i];
        memset(buf, 200 + i, len);
        v = tu_usevar_ok(c.s, c.keys[i]);
        ck_assert_int_eq(axstm_value_set(v, buf, len), AXSTM_OK);
        ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        axstm_value_free(v);
    }
    st0 = tu_stats_ok(c.s);
    c.min_writes = 2000; /* over 7 reclaim rounds each (epoch.c) */
    c.max_writes = 200000;
    atomic_init(&c.readers_ready, 0);
    atomic_init(&c.writers_left, CHURN_WRITERS);
    atomic_init(&c.pause, 0);
    atomic_init(&c.paused, 0);
    atomic_init(&c.at_min, 0);
    atomic_init(&c.enough, 0);
    run_end = tu_now() + 0.5;
    give_up = run_end + TU_HANG_GUARD_S; /* a guard against a hang only */
    for (i = 0; i < CHURN_READERS; i++) {
        r[i].c = &c;
        r[i].seed = 0x9e3779b97f4a7c15u * (uint64_t)(i + 1);
        tu_start(&r[i].thread, churn_reader_main, &r[i]);
    }
    for (i = 0; i < CHURN_WRITERS; i++) {
        w[i].c = &c;
        w[i].id = (unsigned)i;
        w[i].seed = 0xda942042e4dd58b5u * (uint64_t)(i + 7);
        tu_start(&w[i].thread, churn_writer_main, &w[i]);
    }
    /* Once the run's time is up and every writer has made min_writes,
     * look at what has been reclaimed, with the writers paused between two
     * writes (so that nothing is published or reclaimed meanwhile): the
     * run ends once it is a quarter of what they published. */
    for (;;) {
        bool hung;
        tu_sleep_ns(1000000);
        hung = tu_now() > give_up;
        if (!hung && (tu_now() < run_end || atomic_load(&c.at_min) < CHURN_WRITERS))
            continue;
        atomic_store(&c.pause, 1);
        while (atomic_load(&c.paused) < CHURN_WRITERS)
            sched_yield();
        published = 0;
        for (i = 0; i < CHURN_WRITERS; i++)
            published += w[i].published;
        st1 = tu_stats_ok(c.s);
        reclaimed = (int64_t)published - (int64_t)(st1.bytes - st0.bytes);
        if (hung || reclaimed >= (int64_t)(published / 4))
            atomic_store(&c.enough, 1);
        atomic_store(&c.pause, 0);
        if (atomic_load(&c.enough))
            break;
    }
    published = 0;
    for (i = 0; i < CHURN_WRITERS; i++)
        tu_join(w[i].thread);
    for (i = 0; i < CHURN_READERS; i++)
        tu_join(r[i].thread);
    st1 = tu_stats_ok(c.s);
    pin_mode_leave(&mode);

    for (i = 0; i < CHURN_WRITERS; i++) {
        ck_assert_msg(w[i].errors == 0, "writer %d: %ld errors, first %s", i, w[i].errors,
                      axstm_strerror(w[i].first_error));
        ck_assert_uint_ge(w[i].writes, c.min_writes);
        writes += w[i].writes;
        published += w[i].published;
    }
    for (i = 0; i < CHURN_READERS; i++) {
        ck_assert_msg(r[i].errors == 0, "reader %d: %ld errors, first %s", i, r[i].errors,
                      axstm_strerror(r[i].first_error));
        ck_assert_uint_gt(r[i].reads[0] + r[i].reads[1] + r[i].reads[2], 0);
        torn += r[i].torn;
    }
    ck_assert_msg(torn == 0, "%ld torn values seen", torn);
    /* The commits are all there.  And the store's value memory grew by
     * what the writers published less what was reclaimed: reclamation
     * freed a good part of the replaced blobs while the readers were at it
     * (else this run proves little), and never more than there was. */
    ck_assert_uint_eq(st1.commits - st0.commits, writes);
    reclaimed = (int64_t)published - (int64_t)(st1.bytes - st0.bytes);
    ck_assert_msg(reclaimed >= (int64_t)(published / 4), "%lld of %llu bytes reclaimed",
                  (long long)reclaimed, (unsigned long long)published);
    ck_assert_int_le(reclaimed, (int64_t)(published + BLOB_KEYS * axstm__blob_size(BLOB_MAX)));
    axstm_store_free(c.s);
}

START_TEST(readers_see_whole_values_unfenced)
{
    churn_run(true);
}
END_TEST

START_TEST(readers_see_whole_values_fenced)
{
    churn_run(false);
}
END_TEST

#define BIG_LEN 1000
#define BIG_READERS 2

struct big {
    axstm_store *s;
    atomic_int done;
};

/* Commits the i-th 1000-byte value through v (the only writer of "big");
 * returns AXSTM_OK or what went wrong.  (No assert here: in a loop of
 * 100000, each Check assert would cost a write.) */
static int put_big(axstm_value *v, unsigned long i)
{
    unsigned char buf[BIG_LEN];
    int rc;
    memset(buf, (int)(1 + i % 251), sizeof buf);
    rc = axstm_value_set(v, buf, sizeof buf);
    if (rc == AXSTM_OK)
        TU_RETRY(rc, axstm_value_commit(v));
    return rc;
}

/* A checked-out "big" is whole: 1000 equal bytes, never 0. */
static bool big_whole(const unsigned char *p, size_t len)
{
    if (p == NULL || len != BIG_LEN || p[0] == 0)
        return false;
    for (size_t i = 1; i < len; i++)
        if (p[i] != p[0])
            return false;
    return true;
}

struct big_reader {
    struct big *b;
    pthread_t thread;
    unsigned long reads;
    long torn, errors;
    int first_error;
};

static void *big_reader_main(void *arg)
{
    struct big_reader *r = arg;
    while (!atomic_load(&r->b->done)) {
        axstm_value *v = NULL;
        const unsigned char *p;
        size_t len;
        int rc;
        TU_RETRY(rc, axstm_usevar(r->b->s, "big", &v));
        if (rc != AXSTM_OK) {
            note_error(&r->errors, &r->first_error, rc);
            continue;
        }
        p = axstm_value_data(v, &len);
        if (!big_whole(p, len))
            r->torn++;
        axstm_value_free(v);
        r->reads++;
    }
    return NULL;
}

/*
 * 100000 replacements of a 1000-byte value (100 MB published), with two
 * readers checking it out meanwhile, then more with the readers stopped:
 * the store's memory stays below 2 MB.  Replaced values are freed, in both
 * pin modes (loop 0: unfenced where the system allows, 1: fenced): the
 * unfenced reclaimer does not give up for want of a barrier.
 */
START_TEST(replaced_values_are_reclaimed)
{
    static struct big_reader r[BIG_READERS];
    bool unfenced = _i == 0;
    unsigned long n = scaled(100000), i;
    struct pin_mode mode;
    struct big b;
    axstm_value *v;
    axstm_stats st0, st1;
    int k, rc = AXSTM_OK;

    (void)test_thread_slot();
    memset(r, 0, sizeof r);
    b.s = tu_store_ok();
    atomic_init(&b.done, 0);
    pin_mode_enter(&mode, unfenced);
    v = tu_usevar_ok(b.s, "big");
    ck_assert_int_eq(put_big(v, 0), AXSTM_OK);
    st0 = tu_stats_ok(b.s);
    for (k = 0; k < BIG_READERS; k++) {
        r[k].b = &b;
        tu_start(&r[k].thread, big_reader_main, &r[k]);
    }
    for (i = 1; i <= n; i++)
        if ((rc = put_big(v, i)) != AXSTM_OK)
            break;
    atomic_store(&b.done, 1);
    for (k = 0; k < BIG_READERS; k++)
        tu_join(r[k].thread);
    /* No reader now: a few more replacements (past two reclaim rounds)
     * free whatever readers held back. */
    for (i = 0; rc == AXSTM_OK && i < 1024; i++)
        rc = put_big(v, n + 1 + i);
    st1 = tu_stats_ok(b.s);
    axstm_value_free(v);
    pin_mode_leave(&mode);

    ck_assert_msg(rc == AXSTM_OK, "replacing: %s", axstm_strerror(rc));

    for (k = 0; k < BIG_READERS; k++) {
        ck_assert_msg(r[k].errors == 0, "reader %d: %ld errors, first %s", k, r[k].errors,
                      axstm_strerror(r[k].first_error));
        ck_assert_int_eq(r[k].torn, 0);
    }
    ck_assert_uint_eq(st1.commits - st0.commits, n + 1024);
    ck_assert_msg(st1.bytes < st0.bytes + 2 * 1024 * 1024,
                  "%llu bytes held after %lu replacements (%llu at the start)",
                  (unsigned long long)st1.bytes, n + 1024, (unsigned long long)st0.bytes);
    axstm_store_free(b.s);
}
END_TEST

#define IDLE_WRITERS 16
#define IDLE_COMMITS 64
#define IDLE_LEN ((size_t)60 * 1024)
#define MIB ((uint64_t)1024 * 1024)

struct idle_writer {
    axstm_store *s;
    pthread_t thread;
    unsigned id;
    char key[32];
    sem_t *done, *release;
    int rc;
};

/* Commits n values of IDLE_LEN bytes (each all `fill + i`) to key, each
 * from a fresh handle; returns AXSTM_OK or the first other answer. */
static int put_big_values(axstm_store *s, const char *key, unsigned fill, unsigned n)
{
    unsigned char *buf = malloc(IDLE_LEN);
    int rc = buf != NULL ? AXSTM_OK : AXSTM_ENOMEM;
    for (unsigned i = 0; i < n && rc == AXSTM_OK; i++) {
        axstm_value *v = NULL;
        memset(buf, (int)(1 + (fill + i) % 251), IDLE_LEN);
        TU_RETRY(rc, axstm_usevar(s, key, &v));
        if (rc != AXSTM_OK)
            break;
        rc = axstm_value_set(v, buf, IDLE_LEN);
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_value_commit(v));
        axstm_value_free(v);
    }
    free(buf);
    return rc;
}

/* Commits its values, says so, then calls nothing until released. */
static void *idle_writer_main(void *arg)
{
    struct idle_writer *w = arg;
    w->rc = put_big_values(w->s, w->key, w->id, IDLE_COMMITS);
    sem_post(w->done);
    tu_sem_wait_ok(w->release);
    return NULL;
}

/* The bytes of blobs the store holds: live values and replaced ones not
 * yet freed (its byte count less its own struct and its key table). */
static uint64_t value_bytes_held(axstm_store *s)
{
    axstm_stats st = tu_stats_ok(s);
    return st.bytes - sizeof *s - axstm__table_bytes(&s->table);
}

/*
 * 16 threads each commit 64 values of 60 KB to a key of their own, then
 * stay alive but call nothing: the store may hold no more than 4 x the
 * live values + 8 MiB, though no thread will ever reclaim its own slot
 * again (a slot reclaims by bytes retired, not only by count).  Then they
 * exit, and the test's thread commits 64 values to its own key: its
 * reclaims free what the others left behind, so that only the live values
 * and less than 1 MiB of the test thread's own latest replacements remain
 * (the byte bound alone would leave up to 16 x 256 KiB).
 * Held memory is the store's own count (it counts a blob until it is
 * freed); nothing here depends on timing.
 */
START_TEST(idle_and_exited_threads_leave_little_behind)
{
    static struct idle_writer w[IDLE_WRITERS];
    sem_t done, release;
    uint64_t live = (IDLE_WRITERS + 1) * axstm__blob_size(IDLE_LEN);
    uint64_t idle, exited, after;
    axstm_stats st;
    int i;

    (void)test_thread_slot();
    axstm_store *s = tu_store_ok();
    ck_assert_int_eq(sem_init(&done, 0, 0), 0);
    ck_assert_int_eq(sem_init(&release, 0, 0), 0);
    for (i = 0; i < IDLE_WRITERS; i++) {
        w[i].s = s;
        w[i].id = (unsigned)i;
        snprintf(w[i].key, sizeof w[i].key, "idle.%d", i);
        w[i].done = &done;
        w[i].release = &release;
        w[i].rc = AXSTM_OK;
        tu_start(&w[i].thread, idle_writer_main, &w[i]);
    }
    for (i = 0; i < IDLE_WRITERS; i++)
        tu_sem_wait_ok(&done);
    st = tu_stats_ok(s);
    idle = st.bytes;
    for (i = 0; i < IDLE_WRITERS; i++)
        sem_post(&release);
    for (i = 0; i < IDLE_WRITERS; i++)
        tu_join(w[i].thread);
    st = tu_stats_ok(s);
    exited = st.bytes;
    ck_assert_int_eq(put_big_values(s, "idle.mine", 0, IDLE_COMMITS), AXSTM_OK);
    after = value_bytes_held(s);
    st = tu_stats_ok(s);

    for (i = 0; i < IDLE_WRITERS; i++)
        ck_assert_msg(w[i].rc == AXSTM_OK, "writer %d: %s", i, axstm_strerror(w[i].rc));
    ck_assert_uint_eq(st.commits, (IDLE_WRITERS + 1) * IDLE_COMMITS);
    ck_assert_msg(idle < 4 * live + 8 * MIB, "writers idle: %llu bytes held, %llu live",
                  (unsigned long long)idle, (unsigned long long)live);
    ck_assert_msg(exited < 4 * live + 8 * MIB, "writers exited: %llu bytes held, %llu live",
                  (unsigned long long)exited, (unsigned long long)live);
    ck_assert_msg(after >= live && after < live + MIB,
                  "%llu bytes of values held after the test thread's commits, %llu live",
                  (unsigned long long)after, (unsigned long long)live);
    sem_destroy(&done);
    sem_destroy(&release);
    axstm_store_free(s);
}
END_TEST

/* Where the system has membarrier (expedited, private), the first store
 * registers for it and pins go unfenced; where it has not, pins must keep
 * their fence.  (Without this, the unfenced run above might silently run
 * fenced.) */
START_TEST(pins_go_unfenced_where_membarrier_works)
{
    axstm_store *s = tu_store_ok();
    bool expect = false, unfenced;
#if defined(__linux__) && defined(SYS_membarrier)
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0);
    expect = cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
             (cmds & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) &&
             syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0;
#endif
    if (!expect)
        printf("note: no expedited membarrier here; pins must stay fenced\n");
    unfenced = atomic_load(&axstm__pins_unfenced);
    ck_assert_msg(unfenced == expect, "pins unfenced: %d; membarrier works: %d", unfenced, expect);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Handle cache                                                       */
/* ------------------------------------------------------------------ */

#define MOVED 8

/*
 * Whether a block came back from the thread's cache, not from malloc: the
 * test allocates decoys of the cache's size classes (alloc.c) before the
 * checkout, and they would take a block freed to malloc (glibc hands the
 * last freed chunk of a size out first; ASan and valgrind never hand it
 * out again soon).  A block the library kept cannot go to a decoy.
 */
struct decoys {
    void *volatile p[2]; /* volatile: the compiler may not drop them */
};

static void decoys_take(struct decoys *d)
{
    d->p[0] = malloc(64);
    d->p[1] = malloc(512);
}

static void decoys_free(struct decoys *d)
{
    free(d->p[0]);
    free(d->p[1]);
}

static const char *const trio[] = {"h.0", "h.1", "h.2"};
static const char *const five[] = {"h.0", "h.1", "h.2", "h.3", "h.4"};

/* Handles made by one thread, freed and reused by another. */
struct handoff {
    axstm_store *s;
    axstm_value *v[MOVED];
    axstm_collection *c[MOVED];
    long errors;
    int first_error;
    /* The receiver's next checkout after a free got the freed block. */
    bool value_block_reused, collection_block_reused;
};

static void *maker_main(void *arg)
{
    struct handoff *h = arg;
    char key[32];
    int rc;
    for (int i = 0; i < MOVED; i++) {
        snprintf(key, sizeof key, "h.%d", i);
        TU_RETRY(rc, axstm_usevar(h->s, key, &h->v[i]));
        if (rc != AXSTM_OK)
            note_error(&h->errors, &h->first_error, rc);
        TU_RETRY(rc, axstm_using(h->s, trio, 3, &h->c[i]));
        if (rc != AXSTM_OK)
            note_error(&h->errors, &h->first_error, rc);
    }
    /* Warm this thread's own cache too, so that it has blocks to free at
     * exit after handing the others over. */
    for (int i = 0; i < 2; i++) {
        axstm_value *v = NULL;
        axstm_collection *c = NULL;
        TU_RETRY(rc, axstm_usevar(h->s, "h.0", &v));
        if (rc == AXSTM_OK)
            axstm_value_free(v);
        TU_RETRY(rc, axstm_using(h->s, five, 5, &c));
        if (rc == AXSTM_OK)
            axstm_collection_free(c);
    }
    return NULL;
}

/* Each key h.i holds i at version 1 (set up by the test). */
static bool holds(axstm_value *v, int64_t want)
{
    int64_t x;
    return v != NULL && axstm_value_get_i64(v, &x) == AXSTM_OK && x == want;
}

static void *receiver_main(void *arg)
{
    struct handoff *h = arg;
    axstm_value *v = NULL;
    axstm_collection *c = NULL;
    struct decoys d;
    void *block;
    int rc;

    /* The handles work here, and free here. */
    for (int i = 0; i < MOVED; i++) {
        if (!holds(h->v[i], i) || !holds(axstm_collection_at(h->c[i], 2), 2))
            note_error(&h->errors, &h->first_error, WRONG_VALUE);
    }
    /* One freed (into this thread's empty cache), then a checkout: it
     * gets that block, made in the other thread. */
    block = h->v[0];
    axstm_value_free(h->v[0]);
    decoys_take(&d);
    TU_RETRY(rc, axstm_usevar(h->s, "h.5", &v));
    decoys_free(&d);
    if (rc != AXSTM_OK)
        note_error(&h->errors, &h->first_error, rc);
    h->value_block_reused = (void *)v == block;
    /* A collection's block is made at its size class: one made for three
     * keys holds five. */
    block = h->c[0];
    axstm_collection_free(h->c[0]);
    decoys_take(&d);
    TU_RETRY(rc, axstm_using(h->s, five, 5, &c));
    decoys_free(&d);
    if (rc != AXSTM_OK)
        note_error(&h->errors, &h->first_error, rc);
    h->collection_block_reused = (void *)c == block;

    /* The reused blocks work: change and commit through them. */
    if (!holds(v, 5))
        note_error(&h->errors, &h->first_error, WRONG_VALUE);
    else if (axstm_value_set_i64(v, 50) != AXSTM_OK)
        note_error(&h->errors, &h->first_error, WRONG_VALUE);
    else {
        TU_RETRY(rc, axstm_value_commit(v));
        if (rc != AXSTM_OK)
            note_error(&h->errors, &h->first_error, rc);
    }
    for (size_t i = 0; i < 5; i++) {
        axstm_value *e = axstm_collection_at(c, i);
        if (!holds(e, (int64_t)i) || axstm_value_set_i64(e, (int64_t)i + 100) != AXSTM_OK)
            note_error(&h->errors, &h->first_error, WRONG_VALUE);
    }
    TU_RETRY(rc, axstm_collection_commit(c));
    if (rc != AXSTM_OK)
        note_error(&h->errors, &h->first_error, rc);

    /* The rest: more than the cache holds, so some go to the heap. */
    for (int i = 1; i < MOVED; i++) {
        axstm_value_free(h->v[i]);
        axstm_collection_free(h->c[i]);
    }
    /* And hand these two to the test's thread. */
    h->v[0] = v;
    h->c[0] = c;
    return NULL;
}

/* A value and a collection made in one thread can be read and freed in
 * another, and the freed blocks serve that other thread's next checkouts;
 * a thread exits with blocks made elsewhere in its cache. */
START_TEST(handles_are_freed_and_reused_across_threads)
{
    static struct handoff h;
    pthread_t t;
    char key[32];
    long busy = 0;
    int i;

    (void)test_thread_slot();
    memset(&h, 0, sizeof h);
    h.s = tu_store_ok();
    for (i = 0; i < MOVED; i++) {
        snprintf(key, sizeof key, "h.%d", i);
        ck_assert_int_eq(put_i64(h.s, key, i, &busy), AXSTM_OK);
    }
    tu_start(&t, maker_main, &h);
    tu_join(t);
    ck_assert_msg(h.errors == 0, "maker: %ld errors, first %s", h.errors,
                  axstm_strerror(h.first_error));
    tu_start(&t, receiver_main, &h);
    tu_join(t);
    ck_assert_msg(h.errors == 0, "receiver: %ld errors, first %s", h.errors,
                  axstm_strerror(h.first_error));
    ck_assert_msg(h.value_block_reused, "a value freed in the receiver was not reused there");
    ck_assert_msg(h.collection_block_reused,
                  "a collection freed in the receiver was not reused there");

    /* The test's thread frees (and caches) what the receiver made, and
     * its own next checkouts reuse those blocks. */
    ck_assert(holds(h.v[0], 50));
    ck_assert_uint_eq(axstm_value_version(h.v[0]), 2);
    ck_assert(holds(axstm_collection_at(h.c[0], 4), 104));
    {
        void *vb = h.v[0], *cb = h.c[0];
        /* With CK_FORK=no this thread's cache may be full from earlier
         * tests: a checkout each, held, makes room for one block. */
        axstm_value *spare_v = tu_usevar_ok(h.s, "h.7"), *v;
        axstm_collection *spare_c = tu_using_ok(h.s, trio, 3), *c;
        struct decoys d;
        axstm_value_free(h.v[0]);
        axstm_collection_free(h.c[0]);
        decoys_take(&d);
        v = tu_usevar_ok(h.s, "h.6");
        c = tu_using_ok(h.s, trio, 3);
        decoys_free(&d);
        ck_assert_ptr_eq(v, vb);
        ck_assert_ptr_eq(c, cb);
        ck_assert(holds(v, 6));
        ck_assert(holds(axstm_collection_at(c, 0), 100));
        axstm_value_free(v);
        axstm_collection_free(c);
        axstm_value_free(spare_v);
        axstm_collection_free(spare_c);
    }
    ck_assert_uint_eq(version_of(h.s, "h.5"), 2);
    ck_assert_uint_eq(version_of(h.s, "h.4"), 2);
    axstm_store_free(h.s);
}
END_TEST

#define HOARD 6 /* handles of each kind held at once: more than a cache keeps */

struct cache_churn {
    axstm_store *s;
    unsigned long rounds;
    long errors;
    int first_error;
    pthread_t thread;
};

/* Checkouts and frees, then a full cache at exit. */
static void *cache_churn_main(void *arg)
{
    struct cache_churn *w = arg;
    axstm_value *v[HOARD];
    axstm_collection *c[HOARD];
    int rc;

    for (unsigned long n = 0; n < w->rounds; n++) {
        axstm_value *one = NULL;
        axstm_collection *col = NULL;
        TU_RETRY(rc, axstm_usevar(w->s, five[n % 5], &one));
        if (rc != AXSTM_OK || !holds(one, (int64_t)(n % 5)))
            note_error(&w->errors, &w->first_error, rc != AXSTM_OK ? rc : WRONG_VALUE);
        axstm_value_free(one);
        TU_RETRY(rc, axstm_using(w->s, n % 2 ? trio : five, n % 2 ? 3 : 5, &col));
        if (rc != AXSTM_OK || !holds(axstm_collection_at(col, 1), 1))
            note_error(&w->errors, &w->first_error, rc != AXSTM_OK ? rc : WRONG_VALUE);
        axstm_collection_free(col);
    }
    for (int i = 0; i < HOARD; i++) {
        v[i] = NULL;
        c[i] = NULL;
        TU_RETRY(rc, axstm_usevar(w->s, five[i % 5], &v[i]));
        if (rc != AXSTM_OK)
            note_error(&w->errors, &w->first_error, rc);
        TU_RETRY(rc, axstm_using(w->s, trio, 3, &c[i]));
        if (rc != AXSTM_OK)
            note_error(&w->errors, &w->first_error, rc);
    }
    for (int i = 0; i < HOARD; i++) {
        axstm_value_free(v[i]);
        axstm_collection_free(c[i]);
    }
    return NULL;
}

#define CHURNERS 50
#define ONE_BY_ONE 20

static void check_churner(const struct cache_churn *w, int i)
{
    ck_assert_msg(w->errors == 0, "thread %d: %ld errors, first %s", i, w->errors,
                  axstm_strerror(w->first_error));
}

/* CHURNERS threads at once. */
static void cache_churn_wave(axstm_store *s, unsigned long rounds)
{
    static struct cache_churn w[CHURNERS];
    int i;
    memset(w, 0, sizeof w);
    for (i = 0; i < CHURNERS; i++) {
        w[i].s = s;
        w[i].rounds = rounds;
        tu_start(&w[i].thread, cache_churn_main, &w[i]);
    }
    for (i = 0; i < CHURNERS; i++)
        tu_join(w[i].thread);
    for (i = 0; i < CHURNERS; i++)
        check_churner(&w[i], i);
}

/* One thread, joined. */
static void cache_churn_one(axstm_store *s, unsigned long rounds)
{
    struct cache_churn w;
    memset(&w, 0, sizeof w);
    w.s = s;
    w.rounds = rounds;
    tu_start(&w.thread, cache_churn_main, &w);
    tu_join(w.thread);
    check_churner(&w, 0);
}

/* Bytes the C library's malloc has handed out and not got back, or -1
 * when that cannot be told. */
static long long heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    return (long long)mallinfo2().uordblks;
#else
    return -1;
#endif
}

/* Whether heap_in_use() sees this process's allocations (not so under
 * ASan or valgrind, whose malloc is their own). */
static bool heap_in_use_works(void)
{
    enum { N = 1000, SIZE = 100 };
    static void *p[N];
    long long before = heap_in_use(), after;
    int i;
    if (before < 0)
        return false;
    for (i = 0; i < N; i++)
        p[i] = malloc(SIZE);
    after = heap_in_use();
    for (i = 0; i < N; i++)
        free(p[i]);
    return after - before >= (long long)N * SIZE;
}

/*
 * 50 threads at once each make and free 1000 values and 1000 collections,
 * end with a full cache, and exit: all runs cleanly.  Then 20 more such
 * threads one after another, and (with glibc's malloc) the heap is where
 * it was before them: each exiting thread freed its cache.  One after
 * another, because a thread that exits hands its malloc arena to the next:
 * no arena is made meanwhile, whose bookkeeping would look like a leak.
 * (Under ASan and valgrind the leak check is theirs, but a cache left
 * behind would stay reachable from the library's list of caches, which
 * they do not report: this check is the one that sees it.)
 */
START_TEST(exiting_threads_free_their_caches)
{
    axstm_store *s = tu_store_ok();
    long long before, after;
    long busy = 0;
    bool measure;
    int i;

    (void)test_thread_slot();
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(put_i64(s, five[i], i, &busy), AXSTM_OK);
    cache_churn_wave(s, scaled(1000));

    cache_churn_one(s, 10); /* the first may still set up an arena */
    measure = heap_in_use_works();
    before = heap_in_use();
    for (i = 0; i < ONE_BY_ONE; i++)
        cache_churn_one(s, 10);
    after = heap_in_use();
    if (measure) {
        /* A cache left behind holds over 4 * (64 + 512) bytes: 46 kB here. */
        ck_assert_msg(after - before < ONE_BY_ONE * 4 * (64 + 512) / 4,
                      "the heap grew by %lld bytes over %d threads", after - before, ONE_BY_ONE);
    } else {
        printf("note: malloc is not glibc's here; the leak check is the tool's\n");
    }
    ck_assert_uint_eq(tu_stats_ok(s).keys, 5);
    axstm_store_free(s);
}
END_TEST

/* Injected failures count a checkout served from the cache like any
 * other: warm the cache, then the first allocation failing makes usevar
 * and using return AXSTM_ENOMEM, write no handle and create no key. */
START_TEST(injected_failure_reaches_cached_checkouts)
{
    axstm_store *s = tu_store_ok();
    axstm_value *const v_sentinel = (axstm_value *)&s;
    axstm_collection *const c_sentinel = (axstm_collection *)&s;
    const char *const mixed[] = {"old", "new.1", "new.2"};
    axstm_value *v, *out_v;
    axstm_collection *c, *out_c;
    void *vblock, *cblock;
    struct decoys d;
    unsigned long count;
    long busy = 0;
    int rc, sticky;

    (void)test_thread_slot();
    ck_assert_int_eq(put_i64(s, "old", 42, &busy), AXSTM_OK);
    for (sticky = 0; sticky <= 1; sticky++) {
        /* Warm: a value block and a collection block in the cache. */
        v = tu_usevar_ok(s, "old");
        c = tu_using_ok(s, trio, 3);
        vblock = v;
        cblock = c;
        axstm_value_free(v);
        axstm_collection_free(c);

        /* An existing key, a new key, a collection with new keys. */
        out_v = v_sentinel;
        count = axstm__alloc_count();
        axstm__alloc_fail_after(1, sticky);
        rc = axstm_usevar(s, "old", &out_v);
        axstm__alloc_fail_after(0, 0);
        ck_assert_int_eq(rc, AXSTM_ENOMEM);
        ck_assert_ptr_eq(out_v, v_sentinel);
        ck_assert_uint_ge(axstm__alloc_count() - count, 1);

        axstm__alloc_fail_after(1, sticky);
        rc = axstm_usevar(s, "new.0", &out_v);
        axstm__alloc_fail_after(0, 0);
        ck_assert_int_eq(rc, AXSTM_ENOMEM);
        ck_assert_ptr_eq(out_v, v_sentinel);

        out_c = c_sentinel;
        axstm__alloc_fail_after(1, sticky);
        rc = axstm_using(s, mixed, 3, &out_c);
        axstm__alloc_fail_after(0, 0);
        ck_assert_int_eq(rc, AXSTM_ENOMEM);
        ck_assert_ptr_eq(out_c, c_sentinel);

        /* Nothing created, nothing changed. */
        ck_assert_uint_eq(tu_stats_ok(s).keys, 4); /* old, h.0, h.1, h.2 */
        ck_assert_uint_eq(version_of(s, "old"), 1);

        /* The cache did hold blocks for those checkouts (they were not
         * lost to the failures): the next ones get them, and still count
         * as allocations. */
        decoys_take(&d);
        count = axstm__alloc_count();
        v = tu_usevar_ok(s, "old");
        ck_assert_uint_ge(axstm__alloc_count() - count, 1);
        c = tu_using_ok(s, trio, 3);
        decoys_free(&d);
        ck_assert_ptr_eq(v, vblock);
        ck_assert_ptr_eq(c, cblock);
        ck_assert_int_eq(tu_get_i64_ok(v), 42);
        axstm_value_free(v);
        axstm_collection_free(c);
    }
    axstm_store_free(s);
}
END_TEST

static Suite *thread_suite(void)
{
    Suite *s = suite_create("thread");
    TCase *tc;

    tc = tcase_create("Slots");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, live_threads_have_slots_of_their_own);
    tcase_add_test(tc, exited_thread_gives_its_slot_back);
    tcase_add_test(tc, threads_beyond_the_slots_share_one_and_count_exactly);
    tcase_add_test(tc, short_lived_threads_recycle_slots);
    suite_add_tcase(s, tc);

    tc = tcase_create("Reclamation");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, pins_go_unfenced_where_membarrier_works);
    tcase_add_test(tc, readers_see_whole_values_unfenced);
    tcase_add_test(tc, readers_see_whole_values_fenced);
    tcase_add_loop_test(tc, replaced_values_are_reclaimed, 0, 2);
    tcase_add_test(tc, idle_and_exited_threads_leave_little_behind);
    suite_add_tcase(s, tc);

    tc = tcase_create("Handle cache");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, handles_are_freed_and_reused_across_threads);
    tcase_add_test(tc, exiting_threads_free_their_caches);
    tcase_add_test(tc, injected_failure_reaches_cached_checkouts);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(thread_suite());
}
