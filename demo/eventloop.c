/* SPDX-License-Identifier: MIT */
/*
 * eventloop.c -- a blocking-style queue consumer served by a poll() loop.
 *
 *   demo/eventloop [ITEMS]     (default 100000)
 *
 * Two worker threads produce items into a bounded FIFO queue that lives in
 * the store; one single-threaded poll() loop consumes them.  The queue is
 * the keys "q.head" and "q.tail" (counters, no value = 0) and the ring of
 * slots "q.<i>" (i = position % CAPACITY).
 *
 *   - A producer is an ordinary thread: axstm_atomically, whose body
 *     returns AXSTM_RETRY while the queue is full, so the thread sleeps
 *     until the consumer has taken something.
 *   - The consumer is written as if it blocked the same way ("take; if the
 *     queue is empty, retry"), but runs through axstm_try_atomically: where
 *     a thread would sleep, the loop gets a watch instead, puts its
 *     descriptor into poll() next to a timer, and calls again once it is
 *     readable.  The loop never blocks anywhere else.
 *
 * Every item carries its producer and sequence number.  At the end the
 * demo checks that each item arrived exactly once and each producer's
 * items in order, prints items/s, how often the loop slept in poll() on a
 * watch, and the store's counters.  Exit status 1 on any violation.
 */
#include <axstm.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define NPRODUCERS 2
#define CAPACITY 1024 /* slots in the ring: producers wait when it is full */
#define BATCH 256     /* takes between two looks at the timer */
#define SYS_ERROR 1   /* a system call failed (positive: not a library code) */
#define STALLED 2     /* items missing and nobody left to put them */

/* An item: producer in the top bits, its sequence number below. */
#define ITEM(p, seq) (((int64_t)(p) << 48) | (int64_t)(seq))
#define ITEM_PRODUCER(x) ((int)((x) >> 48))
#define ITEM_SEQ(x) ((x) & (((int64_t)1 << 48) - 1))

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void slot_key(char *buf, size_t size, int64_t pos)
{
    snprintf(buf, size, "q.%" PRId64, pos % CAPACITY);
}

/* Reads a counter of the queue; a key with no value yet counts as 0. */
static int get_counter(axstm_txn *tx, const char *key, int64_t *out)
{
    int rc = axstm_txn_get_i64(tx, key, out);
    if (rc == AXSTM_ENOVALUE) {
        *out = 0;
        rc = AXSTM_OK;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* The queue, as transaction bodies                                   */
/* ------------------------------------------------------------------ */

/* put: append one item, or wait (AXSTM_RETRY) while the ring is full. */
static int put_body(axstm_txn *tx, void *arg)
{
    int64_t item = *(const int64_t *)arg, head, tail;
    char key[32];
    int rc;

    if ((rc = get_counter(tx, "q.head", &head)) != AXSTM_OK ||
        (rc = get_counter(tx, "q.tail", &tail)) != AXSTM_OK)
        return rc;
    if (tail - head >= CAPACITY)
        return AXSTM_RETRY;
    slot_key(key, sizeof key, tail);
    if ((rc = axstm_txn_set_i64(tx, key, item)) != AXSTM_OK)
        return rc;
    return axstm_txn_set_i64(tx, "q.tail", tail + 1);
}

/* get: take the oldest item, or wait (AXSTM_RETRY) while there is none. */
static int get_body(axstm_txn *tx, void *arg)
{
    int64_t *item = arg, head, tail;
    char key[32];
    int rc;

    if ((rc = get_counter(tx, "q.head", &head)) != AXSTM_OK ||
        (rc = get_counter(tx, "q.tail", &tail)) != AXSTM_OK)
        return rc;
    if (head == tail)
        return AXSTM_RETRY;
    slot_key(key, sizeof key, head);
    if ((rc = axstm_txn_get_i64(tx, key, item)) != AXSTM_OK)
        return rc;
    return axstm_txn_set_i64(tx, "q.head", head + 1);
}

/* ------------------------------------------------------------------ */
/* Producers: plain threads that may block                            */
/* ------------------------------------------------------------------ */

struct producer {
    axstm_store *store;
    int id;
    int64_t count;
    int rc; /* AXSTM_OK, or why the producer stopped */
};

/* Producers that have returned, for the loop's stall check. */
static atomic_int producers_done;

static void *produce(void *arg)
{
    struct producer *p = arg;

    for (int64_t seq = 0; seq < p->count; seq++) {
        int64_t item = ITEM(p->id, seq);
        int rc = axstm_atomically(p->store, put_body, &item);
        if (rc != AXSTM_OK) {
            p->rc = rc;
            break;
        }
    }
    atomic_fetch_add(&producers_done, 1);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The consumer: one poll() loop                                      */
/* ------------------------------------------------------------------ */

struct consumer {
    int64_t items; /* expected in all */
    int64_t delivered;
    int64_t next_seq[NPRODUCERS]; /* per producer, FIFO order */
    unsigned char *seen[NPRODUCERS];
    int64_t per_producer;
    unsigned long sleeps, busy, wrong;
};

/* Records one item; counts anything that breaks exactly-once FIFO. */
static void deliver(struct consumer *c, int64_t item)
{
    int p = ITEM_PRODUCER(item);
    int64_t seq = ITEM_SEQ(item);

    if (p < 0 || p >= NPRODUCERS || seq >= c->per_producer) {
        if (c->wrong++ == 0)
            fprintf(stderr, "eventloop: item %" PRId64 " was never produced\n", item);
        return;
    }
    if (c->seen[p][seq] != 0 && c->wrong++ == 0)
        fprintf(stderr, "eventloop: item %d/%" PRId64 " delivered twice\n", p, seq);
    c->seen[p][seq] = 1;
    if (seq != c->next_seq[p] && c->wrong++ == 0)
        fprintf(stderr, "eventloop: producer %d: item %" PRId64 " came when %" PRId64 " was due\n",
                p, seq, c->next_seq[p]);
    c->next_seq[p] = seq + 1;
    c->delivered++;
}

/* Takes items until the queue is empty (then *w is a watch to wait on),
 * BATCH items were taken, or the store was busy.  Returns AXSTM_OK or a
 * fatal error. */
static int take_some(axstm_store *s, struct consumer *c, axstm_watch **w)
{
    for (int n = 0; n < BATCH && c->delivered < c->items; n++) {
        int64_t item;
        int rc = axstm_try_atomically(s, get_body, &item, w);
        if (rc == AXSTM_OK) {
            deliver(c, item);
        } else if (rc == AXSTM_BUSY_RETRY) {
            c->busy++; /* producers kept colliding with us: call again soon */
            return AXSTM_OK;
        } else if (rc == AXSTM_RETRY) {
            return AXSTM_OK; /* empty: *w is set */
        } else {
            return rc;
        }
    }
    return AXSTM_OK;
}

static int run_loop(axstm_store *s, struct consumer *c, double start)
{
    struct itimerspec second = {{1, 0}, {1, 0}};
    int64_t last_delivered = 0;
    int tfd, rc = AXSTM_OK;
    axstm_watch *w = NULL;

    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0 || timerfd_settime(tfd, 0, &second, NULL) != 0) {
        perror("eventloop: timerfd");
        if (tfd >= 0)
            close(tfd);
        return SYS_ERROR;
    }
    while (c->delivered < c->items) {
        struct pollfd fds[2] = {{tfd, POLLIN, 0}, {-1, POLLIN, 0}};
        int n;

        if (w == NULL && (rc = take_some(s, c, &w)) != AXSTM_OK)
            break;
        if (c->delivered == c->items)
            break;
        /* With a watch: sleep until the queue may have changed or the
         * timer ticks.  Without one there is more to do: only look. */
        if (w != NULL) {
            fds[1].fd = axstm_watch_fd(w);
            c->sleeps++;
        }
        while ((n = poll(fds, 2, w != NULL ? -1 : 0)) < 0 && errno == EINTR)
            ;
        if (n < 0) {
            perror("eventloop: poll");
            rc = SYS_ERROR;
            break;
        }
        if (fds[0].revents & POLLIN) {
            uint64_t ticks;
            double t = now_s() - start;
            if (read(tfd, &ticks, sizeof ticks) == (ssize_t)sizeof ticks)
                printf("%5.1f s: %" PRId64 " items delivered (%.0f/s in the last second), "
                       "%lu sleeps in poll\n",
                       t, c->delivered, (double)(c->delivered - last_delivered) / (double)ticks,
                       c->sleeps);
            fflush(stdout);
            /* Every producer has returned and a whole second brought
             * nothing: the missing items will never come.  Stop rather
             * than sleep forever on the watch. */
            if (atomic_load(&producers_done) == NPRODUCERS && c->delivered == last_delivered) {
                fprintf(stderr,
                        "eventloop: stalled: %" PRId64 " of %" PRId64
                        " items delivered and no producer left\n",
                        c->delivered, c->items);
                rc = STALLED;
                break;
            }
            last_delivered = c->delivered;
        }
        if (w != NULL && (fds[1].revents & POLLIN)) {
            /* Something the consumer read has changed: take again.  (A try
             * watch is single-use: free it and get a new one next time.) */
            axstm_watch_free(w);
            w = NULL;
        }
    }
    axstm_watch_free(w);
    close(tfd);
    return rc;
}

static int parse_items(int argc, char **argv, int64_t *items)
{
    char *end;
    long long n;

    *items = 100000;
    if (argc > 2)
        return 0;
    if (argc == 2) {
        errno = 0;
        n = strtoll(argv[1], &end, 10);
        if (errno != 0 || end == argv[1] || *end != '\0' || n < NPRODUCERS ||
            n > ((int64_t)1 << 40))
            return 0;
        *items = n;
    }
    return 1;
}

int main(int argc, char **argv)
{
    struct producer prod[NPRODUCERS];
    pthread_t threads[NPRODUCERS];
    struct consumer c;
    axstm_store *s;
    axstm_stats st;
    double start, secs;
    int ok = 1, rc;

    memset(&c, 0, sizeof c);
    if (!parse_items(argc, argv, &c.items)) {
        fprintf(stderr, "usage: %s [ITEMS]   (at least %d; default 100000)\n", argv[0], NPRODUCERS);
        return 2;
    }
    c.items -= c.items % NPRODUCERS; /* an equal share each */
    c.per_producer = c.items / NPRODUCERS;
    for (int p = 0; p < NPRODUCERS; p++)
        if ((c.seen[p] = calloc((size_t)c.per_producer, 1)) == NULL) {
            fprintf(stderr, "eventloop: out of memory\n");
            return 1;
        }
    s = axstm_store_new();
    if (s == NULL) {
        fprintf(stderr, "eventloop: out of memory\n");
        return 1;
    }

    printf("eventloop: %d producer threads, one poll() loop consuming %" PRId64
           " items through a queue of %d slots\n",
           NPRODUCERS, c.items, CAPACITY);
    start = now_s();
    for (int p = 0; p < NPRODUCERS; p++) {
        prod[p] = (struct producer){s, p, c.per_producer, AXSTM_OK};
        if (pthread_create(&threads[p], NULL, produce, &prod[p]) != 0) {
            fprintf(stderr, "eventloop: cannot start a producer\n");
            return 1;
        }
    }
    rc = run_loop(s, &c, start);
    secs = now_s() - start;
    if (rc != AXSTM_OK) {
        if (rc != SYS_ERROR && rc != STALLED)
            fprintf(stderr, "eventloop: consumer stopped: %s\n", axstm_strerror(rc));
        /* Producers may wait for room forever now: nothing more to check. */
        return 1;
    }
    for (int p = 0; p < NPRODUCERS; p++) {
        pthread_join(threads[p], NULL);
        if (prod[p].rc != AXSTM_OK) {
            fprintf(stderr, "eventloop: producer %d: %s\n", p, axstm_strerror(prod[p].rc));
            ok = 0;
        }
    }

    for (int p = 0; p < NPRODUCERS; p++) {
        int64_t missing = 0;
        for (int64_t i = 0; i < c.per_producer; i++)
            missing += c.seen[p][i] == 0;
        if (missing != 0) {
            fprintf(stderr, "eventloop: producer %d: %" PRId64 " items never delivered\n", p,
                    missing);
            ok = 0;
        }
        free(c.seen[p]);
    }
    if (c.wrong != 0 || c.delivered != c.items)
        ok = 0;

    printf("delivered %" PRId64 " items in %.3f s: %.0f items/s, each exactly once and in "
           "order: %s\n",
           c.delivered, secs, (double)c.delivered / secs, ok ? "yes" : "NO");
    printf("the loop slept in poll() on a watch %lu times; %lu busy retries\n", c.sleeps, c.busy);
    if (axstm_store_stats(s, &st) == AXSTM_OK)
        printf("store: %" PRIu64 " keys, %" PRIu64 " commits, %" PRIu64 " conflicts, %" PRIu64
               " busy, %" PRIu64 " waits in retry, %" PRIu64 " bytes\n",
               st.keys, st.commits, st.conflicts, st.busy, st.retries_waited, st.bytes);
    else
        ok = 0;
    axstm_store_free(s);
    return ok ? 0 : 1;
}
