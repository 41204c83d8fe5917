/* SPDX-License-Identifier: MIT */
/*
 * queue.c -- the stm package's queue: put, a get that blocks with
 * AXSTM_RETRY, and or_else taking from whichever of two queues has an item.
 *
 *   demo/queue [ITEMS_PER_PRODUCER]     (default 20000)
 *
 * A queue named q is a few keys of the store: "q.head" and "q.tail" (int64
 * indexes), "q.closed" (int64, 1 once no more puts will come) and one key
 * "q.<index>" per item waiting in it.  The get that takes an item deletes
 * its key in the same transaction, so the store holds a key only per item
 * still queued: however many items go through, memory stays flat.
 *
 * Two producers put distinct items into queues "a" and "b" in turn.  Two
 * consumers take from "a" with a blocking get; a third takes from either
 * queue with or_else (like select).  Once the producers are done the main
 * thread closes both queues; a consumer that finds its queue empty and
 * closed returns the caller code QUEUE_CLOSED, which rolls its transaction
 * back and ends its loop.  The main thread then checks that every item was
 * delivered exactly once and in queue order, and that no item key is left
 * in the store.  While items move, a line every second gives the items
 * taken so far, the process's resident memory and the store's keys and
 * bytes.
 *
 * A second phase measures how long a blocked get takes to wake after a put:
 * one consumer waits on the empty queue "lat"; the main thread puts the
 * CLOCK_MONOTONIC time into an item, and the consumer takes the difference.
 */
#include <axstm.h>

#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PRODUCERS 2
#define A_CONSUMERS 2 /* consumers of queue "a"; one more takes from a or b */
#define CONSUMERS (A_CONSUMERS + 1)
#define ITEM_BASE INT64_C(1000000000) /* producer p's i-th item: p*ITEM_BASE + i */
#define MAX_ITEMS 100000000L
#define LATENCY_ROUNDS 1000
#define LATENCY_PAUSE_NS 200000L /* long enough for the consumer to block */
/* A get waiting this long is taken for a lost wake-up instead of hanging. */
#define GET_TIMEOUT_NS (INT64_C(60) * 1000000000)
#define KEY_LEN 48
#define PROGRESS_NS INT64_C(1000000000) /* a progress line this often */

/* Caller-defined codes: positive, so they never clash with the library's. */
#define QUEUE_CLOSED 1

struct queue {
    char name[8], head[KEY_LEN], tail[KEY_LEN], closed[KEY_LEN];
};

struct put {
    const struct queue *q;
    int64_t item;
};

/* What the consumers took, checked as they go, so that the check needs no
 * memory per item beyond one bit: items are p * ITEM_BASE + i. */
struct delivery {
    long items;             /* per producer */
    _Atomic uint64_t *seen; /* a bit per item: taken once already */
};

struct consumer {
    axstm_store *store;
    const char *label;
    const struct queue *queues[2];
    size_t nqueues;
    int64_t item; /* what the last run of the body took ... */
    size_t from;  /* ... and from which of queues[] */
    int latency;  /* store now - item instead of item (the timing phase) */
    int64_t *got; /* the timing phase: every latency, in order */
    size_t n, cap;
    struct delivery *check;     /* phase 1: every item is checked here */
    int64_t last[PRODUCERS][2]; /* the last index of each producer, per queue */
    unsigned long bogus, dup, disorder, misrouted;
    unsigned long per_queue[2];
    atomic_size_t taken; /* n, for the main thread */
    int rc;
};

struct producer {
    axstm_store *store;
    const struct queue *queues[2];
    int id;
    long items;
    int rc;
    atomic_bool done;
};

static void queue_init(struct queue *q, const char *name)
{
    snprintf(q->name, sizeof q->name, "%s", name);
    snprintf(q->head, sizeof q->head, "%s.head", name);
    snprintf(q->tail, sizeof q->tail, "%s.tail", name);
    snprintf(q->closed, sizeof q->closed, "%s.closed", name);
}

static void item_key(char *key, size_t size, const struct queue *q, int64_t index)
{
    snprintf(key, size, "%s.%" PRId64, q->name, index);
}

/* CLOCK_MONOTONIC in nanoseconds.  main checks once that the clock works. */
static int64_t now_ns(void)
{
    struct timespec t;

    if (clock_gettime(CLOCK_MONOTONIC, &t) != 0)
        return 0;
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void sleep_ns(long ns)
{
    struct timespec t = {ns / 1000000000L, ns % 1000000000L};

    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        continue;
}

/* ------------------------------------------------------------------ */
/* The transactions                                                   */
/* ------------------------------------------------------------------ */

/* Creates empty, open queues: arg is a NULL-terminated array of them. */
static int open_queues(axstm_txn *tx, void *arg)
{
    const struct queue *const *qs = arg;
    int rc;

    for (; *qs != NULL; qs++)
        if ((rc = axstm_txn_set_i64(tx, (*qs)->head, 0)) != AXSTM_OK ||
            (rc = axstm_txn_set_i64(tx, (*qs)->tail, 0)) != AXSTM_OK ||
            (rc = axstm_txn_set_i64(tx, (*qs)->closed, 0)) != AXSTM_OK)
            return rc;
    return AXSTM_OK;
}

/* Closes queues, as open_queues.  Done after the last put has committed. */
static int close_queues(axstm_txn *tx, void *arg)
{
    const struct queue *const *qs = arg;
    int rc;

    for (; *qs != NULL; qs++)
        if ((rc = axstm_txn_set_i64(tx, (*qs)->closed, 1)) != AXSTM_OK)
            return rc;
    return AXSTM_OK;
}

/* The seed's put (TList.append): the item goes to a new key at the tail. */
static int put(axstm_txn *tx, void *arg)
{
    const struct put *p = arg;
    char key[KEY_LEN];
    int64_t tail;
    int rc;

    if ((rc = axstm_txn_get_i64(tx, p->q->tail, &tail)) != AXSTM_OK)
        return rc;
    item_key(key, sizeof key, p->q, tail);
    if ((rc = axstm_txn_set_i64(tx, key, p->item)) != AXSTM_OK)
        return rc;
    return axstm_txn_set_i64(tx, p->q->tail, tail + 1);
}

/* put, stamping the item with the time of this run (the timing phase). */
static int put_stamp(axstm_txn *tx, void *arg)
{
    struct put *p = arg;

    p->item = now_ns();
    return put(tx, arg);
}

/*
 * The seed's blocking get: takes the item at the head, or returns
 * AXSTM_RETRY when there is none, so that the transaction sleeps until
 * something it read changes.  Taking an item deletes its key, in the same
 * transaction: the queue keeps no key for an item once it is taken.
 *
 * The queue is empty when the key at the head has no value.  Testing that
 * instead of head == tail keeps the tail out of the gets' reads, so puts and
 * gets touch different keys (and do not conflict) unless the queue is
 * empty.  Reading the missing key creates nothing, but the waiting get
 * watches it all the same: the next put, which writes it, wakes the get.
 */
static int get(axstm_txn *tx, const struct queue *q, int64_t *item)
{
    char key[KEY_LEN];
    int64_t head;
    int rc;

    if ((rc = axstm_txn_get_i64(tx, q->head, &head)) != AXSTM_OK)
        return rc;
    item_key(key, sizeof key, q, head);
    rc = axstm_txn_get_i64(tx, key, item);
    if (rc == AXSTM_ENOVALUE)
        return AXSTM_RETRY;
    if (rc != AXSTM_OK)
        return rc;
    if ((rc = axstm_txn_delete(tx, key)) != AXSTM_OK)
        return rc;
    return axstm_txn_set_i64(tx, q->head, head + 1);
}

/*
 * After every get of c retried: QUEUE_CLOSED when all of c's queues are
 * closed (and so empty for good: closing comes after the last put), else
 * AXSTM_RETRY.  The closed keys join the keys the wait watches, so closing
 * wakes the consumer.
 */
static int closed_or_retry(axstm_txn *tx, const struct consumer *c)
{
    for (size_t i = 0; i < c->nqueues; i++) {
        int64_t closed;
        int rc = axstm_txn_get_i64(tx, c->queues[i]->closed, &closed);

        if (rc != AXSTM_OK)
            return rc;
        if (!closed)
            return AXSTM_RETRY;
    }
    return QUEUE_CLOSED;
}

static int take_first(axstm_txn *tx, void *arg)
{
    struct consumer *c = arg;

    c->from = 0;
    return get(tx, c->queues[0], &c->item);
}

static int take_second(axstm_txn *tx, void *arg)
{
    struct consumer *c = arg;

    c->from = 1;
    return get(tx, c->queues[1], &c->item);
}

/* A consumer of one queue. */
static int take(axstm_txn *tx, void *arg)
{
    int rc = take_first(tx, arg);

    return rc == AXSTM_RETRY ? closed_or_retry(tx, arg) : rc;
}

/* A consumer of two queues: the first that has an item, like select.  When
 * both retry, both sets of reads are watched. */
static int take_either(axstm_txn *tx, void *arg)
{
    int rc = axstm_or_else(tx, take_first, take_second, arg);

    return rc == AXSTM_RETRY ? closed_or_retry(tx, arg) : rc;
}

/* ------------------------------------------------------------------ */
/* Threads                                                            */
/* ------------------------------------------------------------------ */

static void *produce(void *arg)
{
    struct producer *p = arg;

    for (long i = 0; i < p->items; i++) {
        struct put put_arg = {p->queues[i % 2], p->id * ITEM_BASE + i};
        int rc = axstm_atomically(p->store, put, &put_arg);

        if (rc != AXSTM_OK) {
            p->rc = rc;
            break;
        }
    }
    atomic_store(&p->done, true);
    return NULL;
}

/*
 * Phase 1: checks one item as it is taken.  Every item must be taken
 * exactly once, by a consumer of its queue, and each consumer must take one
 * producer's items of one queue in the order they were put (a FIFO seen by
 * several consumers is still in order for each).
 */
static void check_item(struct consumer *c, int64_t x)
{
    struct delivery *d = c->check;
    int64_t p = x / ITEM_BASE, i = x % ITEM_BASE;
    size_t q, bit;

    if (x < 0 || p >= PRODUCERS || i >= d->items) {
        c->bogus++;
        return;
    }
    bit = (size_t)(p * d->items + i);
    if (atomic_fetch_or(&d->seen[bit / 64], UINT64_C(1) << (bit % 64)) &
        (UINT64_C(1) << (bit % 64)))
        c->dup++;
    q = (size_t)(i % 2);
    if (c->nqueues == 1 && q != 0)
        c->misrouted++; /* a consumer of "a" got an item put into "b" */
    if (i <= c->last[p][q])
        c->disorder++;
    c->last[p][q] = i;
}

static int record(struct consumer *c, int64_t x)
{
    if (c->check != NULL) {
        check_item(c, x);
        atomic_store(&c->taken, ++c->n);
        return AXSTM_OK;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        int64_t *grown = realloc(c->got, cap * sizeof *grown);

        if (grown == NULL)
            return AXSTM_ENOMEM;
        c->got = grown;
        c->cap = cap;
    }
    c->got[c->n++] = x;
    atomic_store(&c->taken, c->n);
    return AXSTM_OK;
}

static void *consume(void *arg)
{
    struct consumer *c = arg;
    axstm_fn body = c->nqueues == 1 ? take : take_either;

    for (;;) {
        int rc = axstm_atomically_timed(c->store, body, c, GET_TIMEOUT_NS);

        if (rc == AXSTM_OK) {
            c->per_queue[c->from]++;
            rc = record(c, c->latency ? now_ns() - c->item : c->item);
        }
        if (rc != AXSTM_OK) {
            if (rc != QUEUE_CLOSED)
                c->rc = rc;
            break;
        }
    }
    atomic_store(&c->taken, (size_t)-1); /* tells the timing phase: gone */
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Checks and figures                                                 */
/* ------------------------------------------------------------------ */

/* After phase 1: what check_item found, and the items nobody took.
 * Returns the number of violations. */
static unsigned long check_delivery(const struct consumer *cons, size_t ncons,
                                    const struct delivery *d)
{
    size_t total = (size_t)PRODUCERS * (size_t)d->items;
    unsigned long bogus = 0, dup = 0, lost = 0, disorder = 0, misrouted = 0;

    for (size_t k = 0; k < ncons; k++) {
        bogus += cons[k].bogus;
        dup += cons[k].dup;
        disorder += cons[k].disorder;
        misrouted += cons[k].misrouted;
    }
    for (size_t i = 0; i < total; i++)
        lost += !(atomic_load_explicit(&d->seen[i / 64], memory_order_relaxed) &
                  (UINT64_C(1) << (i % 64)));
    printf("check: %lu lost, %lu duplicated, %lu out of order, %lu from the wrong queue, "
           "%lu unknown\n",
           lost, dup, disorder, misrouted, bogus);
    return bogus + dup + lost + disorder + misrouted;
}

/* Resident memory of this process in MiB (0 if unknown). */
static double rss_mib(void)
{
    unsigned long size, resident;
    FILE *f = fopen("/proc/self/statm", "r");
    int n;

    if (f == NULL)
        return 0;
    n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0 : 0;
}

/* One progress line: items taken so far, memory, and the store's keys. */
static void progress(axstm_store *s, int64_t t0, const struct consumer *cons, int ncons)
{
    axstm_stats st;
    size_t taken = 0;

    for (int i = 0; i < ncons; i++) {
        size_t n = atomic_load(&cons[i].taken);

        taken += n != (size_t)-1 ? n : cons[i].n; /* -1: it has ended */
    }
    if (axstm_store_stats(s, &st) != AXSTM_OK)
        memset(&st, 0, sizeof st);
    printf("  %6.1f s: %zu items taken, RSS %.1f MiB, store %" PRIu64 " keys, %.1f KiB\n",
           (double)(now_ns() - t0) / 1e9, taken, rss_mib(), st.keys, (double)st.bytes / 1024.0);
    fflush(stdout);
}

/* Counts the keys of the queues' items (a key "<name>.<digits>"). */
static int count_item_keys(const char *key, uint64_t version, const void *data, size_t len,
                           void *arg)
{
    unsigned long *n = arg;
    const char *dot = strrchr(key, '.');

    (void)version;
    (void)data;
    (void)len;
    if (dot != NULL && dot[1] >= '0' && dot[1] <= '9')
        ++*n;
    return 0;
}

static int by_value(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static int print_stats(axstm_store *s, const char *title)
{
    axstm_stats st;
    int rc = axstm_store_stats(s, &st);

    if (rc != AXSTM_OK) {
        fprintf(stderr, "queue: axstm_store_stats: %s\n", axstm_strerror(rc));
        return 0;
    }
    printf("%s: %" PRIu64 " commits, %" PRIu64 " conflicts, %" PRIu64 " busy, %" PRIu64
           " retries waited, %" PRIu64 " keys\n",
           title, st.commits, st.conflicts, st.busy, st.retries_waited, st.keys);
    return 1;
}

static int run_atomically(axstm_store *s, axstm_fn fn, void *arg, const char *what)
{
    int rc = axstm_atomically(s, fn, arg);

    if (rc != AXSTM_OK)
        fprintf(stderr, "queue: %s: %s\n", what, axstm_strerror(rc));
    return rc == AXSTM_OK;
}

/* ------------------------------------------------------------------ */
/* Phase 1: producers and consumers                                   */
/* ------------------------------------------------------------------ */

static int move_items(axstm_store *s, struct queue *a, struct queue *b, long items)
{
    static const char *const labels[CONSUMERS] = {"a1", "a2", "a|b"};
    const struct queue *both[] = {a, b, NULL};
    struct producer prod[PRODUCERS];
    struct consumer cons[CONSUMERS];
    pthread_t pt[PRODUCERS], ct[CONSUMERS];
    int nprod = 0, ncons = 0, ok = 1, rc;
    int64_t t0, t1, next;
    struct delivery check;
    size_t words = ((size_t)PRODUCERS * (size_t)items + 63) / 64;
    unsigned long left = 0;

    /* Written through now, so that it adds nothing to the memory figures
     * while items move. */
    check.items = items;
    check.seen = malloc(words * sizeof *check.seen);
    if (check.seen == NULL) {
        fprintf(stderr, "queue: out of memory for the check\n");
        return 0;
    }
    for (size_t i = 0; i < words; i++)
        atomic_init(&check.seen[i], 0);
    memset(prod, 0, sizeof prod);
    memset(cons, 0, sizeof cons);
    /* Consumers first: they find the queues empty and block. */
    for (; ncons < CONSUMERS; ncons++) {
        struct consumer *c = &cons[ncons];

        c->store = s;
        c->label = labels[ncons];
        c->queues[0] = a;
        c->queues[1] = b;
        c->nqueues = ncons < A_CONSUMERS ? 1 : 2;
        c->check = &check;
        for (int p = 0; p < PRODUCERS; p++)
            c->last[p][0] = c->last[p][1] = -1;
        atomic_init(&c->taken, 0);
        if ((rc = pthread_create(&ct[ncons], NULL, consume, c)) != 0) {
            fprintf(stderr, "queue: pthread_create: %s\n", strerror(rc));
            ok = 0;
            break;
        }
    }
    t0 = now_ns();
    for (; ok && nprod < PRODUCERS; nprod++) {
        struct producer *p = &prod[nprod];

        p->store = s;
        p->queues[0] = a;
        p->queues[1] = b;
        p->id = nprod;
        p->items = items;
        atomic_init(&p->done, false);
        if ((rc = pthread_create(&pt[nprod], NULL, produce, p)) != 0) {
            fprintf(stderr, "queue: pthread_create: %s\n", strerror(rc));
            ok = 0;
            break;
        }
    }
    progress(s, t0, cons, ncons);
    next = t0 + PROGRESS_NS;
    for (int i = 0; i < nprod; i++)
        while (!atomic_load(&prod[i].done)) {
            sleep_ns(10000000L);
            if (now_ns() >= next) {
                progress(s, t0, cons, ncons);
                next += PROGRESS_NS;
            }
        }
    for (int i = 0; i < nprod; i++)
        if ((rc = pthread_join(pt[i], NULL)) != 0) {
            fprintf(stderr, "queue: pthread_join: %s\n", strerror(rc));
            exit(1); /* a thread may still use the store: do not free it */
        }
    /* Closing also ends the consumers after a failure above. */
    if (!run_atomically(s, close_queues, both, "closing the queues")) {
        /* They would wait for ever: let the timeout end them. */
        ok = 0;
    }
    for (int i = 0; i < ncons; i++)
        if ((rc = pthread_join(ct[i], NULL)) != 0) {
            fprintf(stderr, "queue: pthread_join: %s\n", strerror(rc));
            exit(1);
        }
    t1 = now_ns();
    progress(s, t0, cons, ncons);

    for (int i = 0; i < nprod; i++)
        if (prod[i].rc != AXSTM_OK) {
            fprintf(stderr, "queue: producer %d: %s\n", i, axstm_strerror(prod[i].rc));
            ok = 0;
        }
    if (ok) {
        double secs = (double)(t1 - t0) / 1e9;
        long moved = 0;

        for (int i = 0; i < ncons; i++)
            moved += (long)cons[i].n;
        printf("%d producers, %d consumers: moved %ld items in %.3f s, %.0f items/s\n", PRODUCERS,
               CONSUMERS, moved, secs, secs > 0 ? (double)moved / secs : 0.0);
    }
    for (int i = 0; i < ncons; i++) {
        const struct consumer *c = &cons[i];

        if (c->nqueues == 1)
            printf("  consumer %-3s took %7zu from a\n", c->label, c->n);
        else
            printf("  consumer %-3s took %7zu (or_else: %lu from a, %lu from b)\n", c->label, c->n,
                   c->per_queue[0], c->per_queue[1]);
        if (c->rc != AXSTM_OK) {
            fprintf(stderr, "queue: consumer %s: %s\n", c->label,
                    c->rc == AXSTM_ETIMEDOUT ? "waited 60 s for an item (lost wake-up?)"
                                             : axstm_strerror(c->rc));
            ok = 0;
        }
    }
    if (ok && check_delivery(cons, (size_t)ncons, &check) != 0)
        ok = 0;
    /* Every item taken was deleted with it. */
    if ((rc = axstm_store_foreach(s, count_item_keys, &left)) != AXSTM_OK) {
        fprintf(stderr, "queue: axstm_store_foreach: %s\n", axstm_strerror(rc));
        ok = 0;
    } else if (ok && left != 0) {
        fprintf(stderr, "queue: %lu item keys left in the store after every item was taken\n",
                left);
        ok = 0;
    }
    free(check.seen);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Phase 2: how long a blocked get takes to wake after a put           */
/* ------------------------------------------------------------------ */

static int wake_latency(axstm_store *s, struct queue *lat)
{
    const struct queue *only[] = {lat, NULL};
    struct consumer c;
    struct put p = {lat, 0};
    pthread_t t;
    axstm_stats before, after;
    int ok = 1, rc;
    size_t rounds = 0;

    memset(&c, 0, sizeof c);
    c.store = s;
    c.label = "lat";
    c.queues[0] = lat;
    c.nqueues = 1;
    c.latency = 1;
    atomic_init(&c.taken, 0);
    if ((rc = axstm_store_stats(s, &before)) != AXSTM_OK) {
        fprintf(stderr, "queue: axstm_store_stats: %s\n", axstm_strerror(rc));
        return 0;
    }
    if ((rc = pthread_create(&t, NULL, consume, &c)) != 0) {
        fprintf(stderr, "queue: pthread_create: %s\n", strerror(rc));
        return 0;
    }
    for (; rounds < LATENCY_ROUNDS; rounds++) {
        size_t taken;

        /* Wait until the last item is taken, then give the consumer time to
         * run its get again, find the queue empty and fall asleep. */
        while ((taken = atomic_load(&c.taken)) < rounds)
            sleep_ns(10000);
        if (taken != rounds) /* the consumer is gone */
            break;
        sleep_ns(LATENCY_PAUSE_NS);
        if (!run_atomically(s, put_stamp, &p, "put"))
            break;
    }
    while (atomic_load(&c.taken) < rounds)
        sleep_ns(10000);
    if ((rc = axstm_store_stats(s, &after)) != AXSTM_OK) {
        fprintf(stderr, "queue: axstm_store_stats: %s\n", axstm_strerror(rc));
        ok = 0;
    }
    if (!run_atomically(s, close_queues, only, "closing the queue"))
        ok = 0; /* the consumer's timeout ends it */
    if ((rc = pthread_join(t, NULL)) != 0) {
        fprintf(stderr, "queue: pthread_join: %s\n", strerror(rc));
        exit(1);
    }
    if (c.rc != AXSTM_OK) {
        fprintf(stderr, "queue: consumer lat: %s\n", axstm_strerror(c.rc));
        ok = 0;
    }
    if (c.n != LATENCY_ROUNDS) {
        fprintf(stderr, "queue: %zu of %d stamped items arrived\n", c.n, LATENCY_ROUNDS);
        ok = 0;
    }
    if (ok) {
        qsort(c.got, c.n, sizeof *c.got, by_value);
        /* Every retry waited for is one get that was asleep when its put
         * came: the figures are wake-ups only if that is (nearly) all. */
        printf("wake-up after put: median %.1f us, p99 %.1f us, max %.1f us "
               "(%zu gets, %" PRIu64 " of them blocked first)\n",
               (double)c.got[c.n / 2] / 1e3, (double)c.got[(c.n * 99 + 99) / 100 - 1] / 1e3,
               (double)c.got[c.n - 1] / 1e3, c.n, after.retries_waited - before.retries_waited);
    }
    free(c.got);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Main                                                               */
/* ------------------------------------------------------------------ */

static int parse_items(int argc, char **argv, long *items)
{
    char *end;

    *items = 20000;
    if (argc > 2)
        return 0;
    if (argc == 2) {
        errno = 0;
        *items = strtol(argv[1], &end, 10);
        if (errno != 0 || end == argv[1] || *end != '\0' || *items < 1 || *items > MAX_ITEMS)
            return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    struct queue a, b, lat;
    const struct queue *all[] = {&a, &b, &lat, NULL};
    struct timespec probe;
    axstm_store *s;
    long items;
    int ok;

    if (!parse_items(argc, argv, &items)) {
        fprintf(stderr, "usage: %s [ITEMS_PER_PRODUCER]   (1..%ld; default 20000)\n", argv[0],
                MAX_ITEMS);
        return 2;
    }
    /* now_ns() relies on this clock; it cannot start failing later. */
    if (clock_gettime(CLOCK_MONOTONIC, &probe) != 0) {
        perror("queue: clock_gettime");
        return 1;
    }
    if ((s = axstm_store_new()) == NULL) {
        fprintf(stderr, "queue: axstm_store_new: out of memory\n");
        return 1;
    }
    queue_init(&a, "a");
    queue_init(&b, "b");
    queue_init(&lat, "lat");
    ok = run_atomically(s, open_queues, all, "opening the queues");
    if (ok)
        ok = move_items(s, &a, &b, items);
    if (!print_stats(s, "store"))
        ok = 0;
    if (ok)
        ok = wake_latency(s, &lat);
    axstm_store_free(s);
    return ok ? 0 : 1;
}
