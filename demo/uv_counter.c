/* SPDX-License-Identifier: MIT */
/*
 * uv_counter.c -- a libuv loop watching a counter that threads increment.
 *
 *   demo/uv_counter [INCREMENTS]     (default 100000)
 *
 * Two worker threads increment the key "counter" with axstm_atomically,
 * INCREMENTS in all.  The libuv loop (on the main thread) never blocks on
 * the store: it holds one watch on "counter" for the whole run and polls
 * its descriptor with a uv_poll_t.  Each time the descriptor is readable it
 * re-arms the watch first (so a commit that lands while it reads is not
 * lost: it makes the descriptor readable again), then reads the value with
 * axstm_try_atomically and records it.  A uv_timer prints progress once a
 * second.  The loop stops when it has seen the target value.
 *
 * Checked at the end: the loop saw the final value equal to INCREMENTS,
 * no value it read was smaller than the one before (a counter only goes
 * up), and the store agrees.  A wake-up may find the value it was woken
 * for already read (a commit between the re-arm and the read fires the
 * watch once more): counted as "stale", which is fine.  Exit status 1 on
 * any violation, or when the counter stops short of the target.
 *
 * This is the other way of using watches: one long-lived watch re-armed
 * each time, where demo/eventloop takes a fresh single-use watch from each
 * try_atomically that retries.
 */
#include <axstm.h>

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define NWORKERS 2
#define FAILED 1 /* the loop could not go on: a caller code, not the library's */

/* Workers that have returned, for the loop's stall check. */
static atomic_int workers_done;

struct app {
    axstm_store *store;
    axstm_watch *watch;
    uv_loop_t *loop;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_idle_t again; /* reads again on the next turn after AXSTM_BUSY_RETRY */
    int64_t target;
    int64_t last;        /* the last value the loop read (0 before) */
    int64_t last_tick;   /* the value at the previous timer tick */
    unsigned long fires; /* times the descriptor was readable */
    unsigned long reads; /* values read that were new */
    unsigned long stale; /* reads that found no new value */
    unsigned long busy;
    unsigned long wrong; /* values that went backwards */
    uint64_t start_ns;
    int done, rc;
};

struct worker {
    axstm_store *store;
    int64_t count;
    int rc;
};

/* ------------------------------------------------------------------ */
/* Workers: plain threads                                             */
/* ------------------------------------------------------------------ */

static int increment_body(axstm_txn *tx, void *arg)
{
    int64_t x;
    int rc = axstm_txn_get_i64(tx, "counter", &x);
    (void)arg;
    if (rc == AXSTM_ENOVALUE)
        x = 0;
    else if (rc != AXSTM_OK)
        return rc;
    return axstm_txn_set_i64(tx, "counter", x + 1);
}

static void work(void *arg)
{
    struct worker *w = arg;
    for (int64_t i = 0; i < w->count; i++) {
        int rc = axstm_atomically(w->store, increment_body, NULL);
        if (rc != AXSTM_OK) {
            w->rc = rc;
            break;
        }
    }
    atomic_fetch_add(&workers_done, 1);
}

/* ------------------------------------------------------------------ */
/* The loop                                                           */
/* ------------------------------------------------------------------ */

static int read_body(axstm_txn *tx, void *arg)
{
    int rc = axstm_txn_get_i64(tx, "counter", arg);
    if (rc == AXSTM_ENOVALUE) {
        *(int64_t *)arg = 0;
        rc = AXSTM_OK;
    }
    return rc;
}

static void stop(struct app *a, int rc)
{
    if (a->done)
        return;
    a->done = 1;
    a->rc = rc;
    uv_poll_stop(&a->poll);
    uv_timer_stop(&a->timer);
    uv_idle_stop(&a->again);
}

static void read_counter(struct app *a);

static void on_again(uv_idle_t *h)
{
    uv_idle_stop(h);
    read_counter(h->data);
}

/* Reads the counter once and records it. */
static void read_counter(struct app *a)
{
    int64_t x;
    axstm_watch *unused = NULL;
    int rc = axstm_try_atomically(a->store, read_body, &x, &unused);

    if (rc == AXSTM_BUSY_RETRY) {
        /* Never wait in the loop: try again on its next turn. */
        a->busy++;
        uv_idle_start(&a->again, on_again);
        return;
    }
    if (rc != AXSTM_OK) { /* the body never retries: no watch to free */
        fprintf(stderr, "uv_counter: reading the counter: %s\n", axstm_strerror(rc));
        stop(a, rc);
        return;
    }
    if (x < a->last) {
        if (a->wrong++ == 0)
            fprintf(stderr, "uv_counter: counter went back from %" PRId64 " to %" PRId64 "\n",
                    a->last, x);
    } else if (x == a->last) {
        a->stale++; /* re-armed after a commit we had already read: fine */
    } else {
        a->reads++;
        if (a->reads <= 5)
            printf("  fire %lu: counter = %" PRId64 "\n", a->fires, x);
        a->last = x;
    }
    if (x >= a->target)
        stop(a, AXSTM_OK);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    struct app *a = h->data;

    if (status < 0) {
        fprintf(stderr, "uv_counter: poll: %s\n", uv_strerror(status));
        stop(a, FAILED);
        return;
    }
    if (!(events & UV_READABLE))
        return;
    a->fires++;
    /* Re-arm before reading: a commit after this point fires again. */
    axstm_watch_rearm(a->watch);
    read_counter(a);
}

static void on_tick(uv_timer_t *h)
{
    struct app *a = h->data;
    double secs = (double)(uv_hrtime() - a->start_ns) / 1e9;
    printf("%5.1f s: counter %" PRId64 " of %" PRId64 ", %lu fires\n", secs, a->last, a->target,
           a->fires);
    fflush(stdout);
    /* Every worker has returned and a whole second brought nothing new: the
     * target will never come.  Stop rather than wait forever. */
    if (atomic_load(&workers_done) == NWORKERS && a->last == a->last_tick) {
        fprintf(stderr, "uv_counter: stalled at %" PRId64 " of %" PRId64 "\n", a->last, a->target);
        stop(a, FAILED);
    }
    a->last_tick = a->last;
}

static int parse_count(int argc, char **argv, int64_t *n)
{
    char *end;
    long long v;

    *n = 100000;
    if (argc > 2)
        return 0;
    if (argc == 2) {
        errno = 0;
        v = strtoll(argv[1], &end, 10);
        if (errno != 0 || end == argv[1] || *end != '\0' || v < 1 || v > ((int64_t)1 << 40))
            return 0;
        *n = v;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static const char *const keys[] = {"counter"};
    struct worker workers[NWORKERS];
    uv_thread_t threads[NWORKERS];
    struct app a;
    axstm_stats st;
    int64_t total, final = -1;
    double secs;
    int ok = 1, rc, started = 0;

    memset(&a, 0, sizeof a);
    if (!parse_count(argc, argv, &total)) {
        fprintf(stderr, "usage: %s [INCREMENTS]   (default 100000)\n", argv[0]);
        return 2;
    }
    a.target = total;
    a.store = axstm_store_new();
    if (a.store == NULL) {
        fprintf(stderr, "uv_counter: out of memory\n");
        return 1;
    }
    /* Watch first, then start the workers, so no increment is missed. */
    while ((rc = axstm_watch_new(a.store, keys, 1, &a.watch)) == AXSTM_BUSY_RETRY)
        ;
    if (rc != AXSTM_OK) {
        fprintf(stderr, "uv_counter: watch: %s\n", axstm_strerror(rc));
        return 1;
    }

    a.loop = uv_default_loop();
    a.poll.data = a.timer.data = a.again.data = &a;
    if (uv_poll_init(a.loop, &a.poll, axstm_watch_fd(a.watch)) != 0 ||
        uv_timer_init(a.loop, &a.timer) != 0 || uv_idle_init(a.loop, &a.again) != 0 ||
        uv_poll_start(&a.poll, UV_READABLE, on_readable) != 0 ||
        uv_timer_start(&a.timer, on_tick, 1000, 1000) != 0) {
        fprintf(stderr, "uv_counter: cannot set up the loop\n");
        return 1;
    }

    printf("uv_counter: %d threads increment \"counter\" to %" PRId64 "; a libuv loop watches it\n",
           NWORKERS, total);
    a.start_ns = uv_hrtime();
    for (int i = 0; i < NWORKERS; i++) {
        workers[i] = (struct worker){a.store, total / NWORKERS + (i < total % NWORKERS), AXSTM_OK};
        if (uv_thread_create(&threads[i], work, &workers[i]) != 0) {
            fprintf(stderr, "uv_counter: cannot start a worker\n");
            ok = 0;
            break;
        }
        started++;
    }
    if (started == NWORKERS) {
        uv_run(a.loop, UV_RUN_DEFAULT); /* until stop() has stopped every handle */
    } else {
        stop(&a, FAILED);
    }
    secs = (double)(uv_hrtime() - a.start_ns) / 1e9;
    for (int i = 0; i < started; i++) {
        uv_thread_join(&threads[i]);
        if (workers[i].rc != AXSTM_OK) {
            fprintf(stderr, "uv_counter: worker %d: %s\n", i, axstm_strerror(workers[i].rc));
            ok = 0;
        }
    }

    /* libuv must let go of the descriptor before the watch closes it. */
    uv_close((uv_handle_t *)&a.poll, NULL);
    uv_close((uv_handle_t *)&a.timer, NULL);
    uv_close((uv_handle_t *)&a.again, NULL);
    uv_run(a.loop, UV_RUN_DEFAULT);
    uv_loop_close(a.loop);
    axstm_watch_free(a.watch);

    {
        axstm_value *v;
        while ((rc = axstm_usevar(a.store, "counter", &v)) == AXSTM_BUSY_RETRY)
            ;
        if (rc == AXSTM_OK) {
            if (axstm_value_get_i64(v, &final) != AXSTM_OK)
                final = -1;
            axstm_value_free(v);
        }
    }
    if (a.rc != AXSTM_OK || a.wrong != 0 || a.last != total || final != total)
        ok = 0;
    printf("the loop saw %" PRId64 " (store: %" PRId64 ", expected %" PRId64 ") in %.3f s: %s\n",
           a.last, final, total, secs, ok ? "correct" : "WRONG");
    printf("%lu fires, %lu new values read (%.1f increments per fire), %lu stale, %lu busy\n",
           a.fires, a.reads, a.reads ? (double)total / (double)a.reads : 0.0, a.stale, a.busy);
    if (axstm_store_stats(a.store, &st) == AXSTM_OK)
        printf("store: %" PRIu64 " keys, %" PRIu64 " commits, %" PRIu64 " conflicts, %" PRIu64
               " busy, %" PRIu64 " bytes\n",
               st.keys, st.commits, st.conflicts, st.busy, st.bytes);
    else
        ok = 0;
    axstm_store_free(a.store);
    return ok ? 0 : 1;
}
