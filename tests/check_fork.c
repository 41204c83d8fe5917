/* SPDX-License-Identifier: MIT */
/*
 * check_fork.c -- what the child of a fork() may do with the library
 * (axstm.h, "fork").
 *
 *   Busy parent   a parent whose threads commit, run transactions, come
 *                 and go, and hold a pin (in a foreach visitor or a
 *                 transaction body) forks 20 times; each child frees its
 *                 handles and the store made before the fork, makes a new
 *                 store, uses it from two new threads (commits and
 *                 transactions), checks what they did, frees it and exits.
 *   Cache list    a parent thread holds the list of handle caches at the
 *                 fork: the child's new threads still free handles and
 *                 exit (the library takes the list's lock around fork).
 *   Quiet parent  a store no other thread was inside a call on at the fork
 *                 stays fully usable in the child.
 * In every child, the slots of the parent's other threads are free again:
 * its two new threads get the lowest two slots other than its own.
 *
 * A child reports through its exit status only (a Check assert belongs to
 * the test's process, not to its children); it ends with _exit.  The
 * parent waits for it at most CHILD_LIMIT_S seconds, kills it if it still
 * runs, and fails the test then: a hang fails the test instead of hanging
 * the suite.  The limit is generous, not a timing: a child does a few
 * milliseconds of work.
 */
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#include "axstm-internal.h"

#if defined(HAVE_VALGRIND_MEMCHECK_H)
#include <valgrind/memcheck.h>
#endif

/*
 * ThreadSanitizer kills a child of a multithreaded parent that starts a
 * thread, which is exactly what these children must be able to do: let it
 * live (it then checks the child's new threads only).  And in a child, a
 * parent thread that had ended but was not joined yet at the fork (the
 * busy parent's short-lived threads) is a leaked thread to it: these tests
 * join every thread they start, and assert that they do.
 */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#if defined(UNDER_TSAN)
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0:report_thread_leaks=0";
}
#endif

/*
 * The sanitizers' runtimes (clang 14's) keep locks of their own that no
 * fork handler takes: ASan's allocator, TSan's bookkeeping of freed
 * memory.  A child whose parent had threads at work at the fork may block
 * for good in its first malloc or free there, whatever this library does.
 * The busy parent test is skipped under them; the other two fork while the
 * parent's other threads are idle.
 */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_SANITIZER "AddressSanitizer"
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_SANITIZER "AddressSanitizer"
#endif
#endif
#if defined(UNDER_TSAN)
#define UNDER_SANITIZER "ThreadSanitizer"
#endif

#define CHILD_LIMIT_S 60.0
#define FORKS 20
#define CHILD_THREADS 2
#define CHILD_ROUNDS 50

/* ------------------------------------------------------------------ */
/* Helpers                                                            */
/* ------------------------------------------------------------------ */

/* What a child's exit status means. */
enum child_status {
    CHILD_OK,
    CHILD_STORE_NEW,   /* axstm_store_new failed */
    CHILD_THREAD,      /* pthread_create or pthread_join failed */
    CHILD_CALL,        /* a library call answered something unexpected */
    CHILD_WRONG_VALUE, /* a key did not hold what the threads committed */
    CHILD_SLOT,        /* a new thread did not get a slot of its own */
    CHILD_MEMCHECK,    /* valgrind saw an error or a leak of the child's */
    CHILD_STATUSES
};

static const char *const child_status_name[CHILD_STATUSES] = {
    "ok",
    "axstm_store_new failed",
    "could not start or join a thread",
    "a library call failed",
    "a key did not hold what was committed",
    "a new thread did not get the lowest free slot",
    "memcheck found an error or a leak in the child",
};

/*
 * Under valgrind, a child whose parent had threads at work when it forked
 * finds blocks lost that it never had: what those threads held only in
 * registers at that instant (a value being made, say), or on stacks that
 * the child's new threads reuse.  valgrind's check at the child's exit
 * would count them.  So such a child counts memcheck's lost bytes before
 * and after it frees the store made before the fork (which must lose
 * nothing), and its errors from its start to its end; then it sends its
 * status down a pipe and ends by SIGKILL, which skips the exit check.
 * (The other tests check the same new-store work under valgrind's exit
 * check.)  Without valgrind, or its headers, it just exits.
 */
struct child_memcheck {
    bool on;
    unsigned errors;
    unsigned long lost;
    bool lost_more; /* the store's free left blocks lost */
};

static unsigned long memcheck_lost(void)
{
    unsigned long lost = 0;
#if defined(HAVE_VALGRIND_MEMCHECK_H)
    unsigned long dubious, reachable, suppressed;
    VALGRIND_DO_QUICK_LEAK_CHECK;
    VALGRIND_COUNT_LEAKS(lost, dubious, reachable, suppressed);
    (void)dubious;
    (void)reachable;
    (void)suppressed;
#endif
    return lost;
}

static void child_memcheck_start(struct child_memcheck *m)
{
    m->on = false;
    m->lost_more = false;
#if defined(HAVE_VALGRIND_MEMCHECK_H)
    if (RUNNING_ON_VALGRIND) {
        m->on = true;
        m->errors = VALGRIND_COUNT_ERRORS;
        m->lost = memcheck_lost();
    }
#endif
}

/* Frees the store and the handles made from it before the fork. */
static void child_free_old(struct child_memcheck *m, axstm_store *s, axstm_value *v,
                           axstm_collection *c)
{
    axstm_value_free(v);
    axstm_collection_free(c);
    axstm_store_free(s);
    if (m->on)
        m->lost_more = memcheck_lost() > m->lost;
}

/* Ends the child with `status`, or CHILD_MEMCHECK if memcheck saw it go
 * wrong; the status also goes down `report` (the write end of a pipe). */
static void child_end(const struct child_memcheck *m, int status, int report)
{
#if defined(HAVE_VALGRIND_MEMCHECK_H)
    if (m->on && status == CHILD_OK && (m->lost_more || VALGRIND_COUNT_ERRORS != m->errors))
        status = CHILD_MEMCHECK;
#endif
    unsigned char byte = (unsigned char)status;
    while (write(report, &byte, 1) < 0 && errno == EINTR)
        ;
    if (m->on)
        raise(SIGKILL);
    _exit(status);
}

/* The k-th lowest slot (from 0) other than `held`. */
static unsigned nth_free_slot(unsigned held, unsigned k)
{
    for (unsigned slot = 0; slot < AXSTM__SLOTS; slot++)
        if (slot != held && k-- == 0)
            return slot;
    return AXSTM__SHARED_SLOT;
}

/*
 * Waits for the child, at most CHILD_LIMIT_S seconds, then asserts that it
 * exited with CHILD_OK, or (report >= 0: the read end of the pipe given to
 * child_end) that it said CHILD_OK there and ended.  A child still running
 * then is killed.
 */
static void child_ok(pid_t pid, int round, int report)
{
    double deadline = tu_now() + CHILD_LIMIT_S;
    int status = 0;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            break;
        ck_assert_msg(got == 0 || errno == EINTR, "waitpid: %s", strerror(errno));
        if (tu_now() > deadline) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            ck_abort_msg("fork %d: the child still ran after %.0f s: killed", round, CHILD_LIMIT_S);
        }
        tu_sleep_ns(1000000);
    }
    int code;
    if (report >= 0) {
        unsigned char said = 0;
        ssize_t got;
        while ((got = read(report, &said, 1)) < 0 && errno == EINTR)
            ;
        close(report);
        ck_assert_msg(got == 1, "fork %d: the child said nothing (wait status %#x)", round,
                      (unsigned)status);
        code = said;
        /* Unless it ended itself (skipping valgrind's exit check), its
         * exit status says the same. */
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
            ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == said,
                          "fork %d: the child said %d, then ended with wait status %#x", round,
                          said, (unsigned)status);
    } else {
        ck_assert_msg(WIFEXITED(status), "fork %d: the child died of signal %d", round,
                      WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        code = WEXITSTATUS(status);
    }
    ck_assert_msg(code == CHILD_OK, "fork %d: the child exited with %d (%s)", round, code,
                  code < CHILD_STATUSES ? child_status_name[code]
                                        : "not this test's: a tool's error exit code?");
}

/* ------------------------------------------------------------------ */
/* The child's side: no Check asserts here                            */
/* ------------------------------------------------------------------ */

struct child_worker {
    axstm_store *s;
    pthread_barrier_t *all_done; /* both stay alive, on their slots, till then */
    pthread_t thread;
    unsigned id;
    unsigned slot;
    int status;
};

static int add_body(axstm_txn *tx, void *arg)
{
    int64_t n = 0;
    int rc = axstm_txn_get_i64(tx, (const char *)arg, &n);
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    return axstm_txn_set_i64(tx, (const char *)arg, n + 1);
}

/* Commits CHILD_ROUNDS values of 100 bytes to a key of its own and adds
 * 1 to "child.count" in as many transactions. */
static void *child_worker_main(void *arg)
{
    struct child_worker *w = arg;
    char key[32];
    unsigned char buf[100];
    snprintf(key, sizeof key, "child.%u", w->id);
    w->status = CHILD_OK;
    for (unsigned i = 0; i < CHILD_ROUNDS && w->status == CHILD_OK; i++) {
        axstm_value *v = NULL;
        int rc;
        memset(buf, (int)(1 + i), sizeof buf);
        TU_RETRY(rc, axstm_usevar(w->s, key, &v));
        if (rc == AXSTM_OK) {
            rc = axstm_value_set(v, buf, sizeof buf);
            if (rc == AXSTM_OK)
                TU_RETRY(rc, axstm_value_commit(v));
            axstm_value_free(v);
        }
        if (rc == AXSTM_OK)
            rc = axstm_atomically(w->s, add_body, "child.count");
        if (rc != AXSTM_OK)
            w->status = CHILD_CALL;
    }
    w->slot = axstm__thread_slot();
    pthread_barrier_wait(w->all_done);
    return NULL;
}

/* Reads key's value as an int64 into *out, and its version into
 * *version; either may be NULL.  False if a call failed. */
static bool child_read(axstm_store *s, const char *key, int64_t *out, uint64_t *version)
{
    axstm_value *v = NULL;
    int rc;
    TU_RETRY(rc, axstm_usevar(s, key, &v));
    if (rc != AXSTM_OK)
        return false;
    if (out != NULL)
        rc = axstm_value_get_i64(v, out);
    if (version != NULL)
        *version = axstm_value_version(v);
    axstm_value_free(v);
    return rc == AXSTM_OK;
}

/*
 * Two new threads use s: CHILD_ROUNDS commits each to a key of its own and
 * as many transactions on a shared counter.  Then the counter and the
 * versions must add up, and the threads must have had the lowest two free
 * slots (the forking thread's own excepted).  Returns a child_status.
 */
static int child_use(axstm_store *s, const char *count_key, int64_t count_before)
{
    struct child_worker w[CHILD_THREADS];
    pthread_barrier_t all_done;
    unsigned mine = axstm__thread_slot();
    if (pthread_barrier_init(&all_done, NULL, CHILD_THREADS) != 0)
        return CHILD_THREAD;
    for (unsigned i = 0; i < CHILD_THREADS; i++) {
        w[i].s = s;
        w[i].all_done = &all_done;
        w[i].id = i;
        w[i].slot = AXSTM__SHARED_SLOT;
        w[i].status = CHILD_THREAD;
        if (pthread_create(&w[i].thread, NULL, child_worker_main, &w[i]) != 0)
            return CHILD_THREAD;
    }
    for (unsigned i = 0; i < CHILD_THREADS; i++)
        if (pthread_join(w[i].thread, NULL) != 0)
            return CHILD_THREAD;
    pthread_barrier_destroy(&all_done);
    for (unsigned i = 0; i < CHILD_THREADS; i++)
        if (w[i].status != CHILD_OK)
            return w[i].status;
    int64_t count = 0;
    if (!child_read(s, count_key, &count, NULL))
        return CHILD_CALL;
    if (count != count_before + CHILD_THREADS * CHILD_ROUNDS)
        return CHILD_WRONG_VALUE;
    for (unsigned i = 0; i < CHILD_THREADS; i++) {
        char key[32];
        uint64_t version = 0;
        snprintf(key, sizeof key, "child.%u", i);
        if (!child_read(s, key, NULL, &version))
            return CHILD_CALL;
        if (version < CHILD_ROUNDS)
            return CHILD_WRONG_VALUE;
    }
    /* Started together, they may have taken the two slots either way. */
    unsigned a = nth_free_slot(mine, 0), b = nth_free_slot(mine, 1);
    if (!((w[0].slot == a && w[1].slot == b) || (w[0].slot == b && w[1].slot == a)))
        return CHILD_SLOT;
    return CHILD_OK;
}

/* A fresh store, used from two new threads, then freed. */
static int child_new_store(void)
{
    axstm_store *s = axstm_store_new();
    if (s == NULL)
        return CHILD_STORE_NEW;
    int status = child_use(s, "child.count", 0);
    axstm_store_free(s);
    return status;
}

/* ------------------------------------------------------------------ */
/* Busy parent                                                        */
/* ------------------------------------------------------------------ */

#define BUSY_COMMITTERS 2

struct busy {
    axstm_store *s;
    atomic_int stop;
    /* The pinner takes a pin when `pin` is posted, says `pinned`, and
     * holds it until `unpin` is posted: only around each fork, so that
     * the parent's threads reclaim what they replace meanwhile. */
    sem_t pin, pinned, unpin;
    long errors;
    int first_error;
    pthread_mutex_t errors_lock;
};

static void busy_error(struct busy *b, int rc)
{
    pthread_mutex_lock(&b->errors_lock);
    if (b->errors++ == 0)
        b->first_error = rc;
    pthread_mutex_unlock(&b->errors_lock);
}

struct committer {
    struct busy *b;
    pthread_t thread;
    unsigned id;
    /* Its handle, here rather than only in a register, so that it stays
     * reachable in a child under valgrind (see child_memcheck_start). */
    axstm_value *v;
};

static int swap_body(axstm_txn *tx, void *arg)
{
    (void)arg;
    const void *a, *b;
    size_t alen, blen;
    unsigned char copy[300];
    int rc = axstm_txn_get(tx, "busy.a", &a, &alen);
    if (rc == AXSTM_OK)
        rc = axstm_txn_get(tx, "busy.b", &b, &blen);
    if (rc != AXSTM_OK || alen > sizeof copy)
        return rc != AXSTM_OK ? rc : AXSTM_EINVAL;
    memcpy(copy, a, alen);
    rc = axstm_txn_set(tx, "busy.a", b, blen);
    if (rc == AXSTM_OK)
        rc = axstm_txn_set(tx, "busy.b", copy, alen);
    return rc;
}

/* Replaces its own key by blobs of 9..300 bytes, and swaps two shared
 * keys in transactions, until told to stop. */
static void *committer_main(void *arg)
{
    struct committer *c = arg;
    struct busy *b = c->b;
    char key[32];
    unsigned char buf[300];
    uint64_t seed = 0x9e3779b97f4a7c15u * (c->id + 1);
    snprintf(key, sizeof key, "busy.%u", c->id);
    while (!atomic_load_explicit(&b->stop, memory_order_relaxed)) {
        size_t len = 9 + tu_rand(&seed) % 292;
        int rc;
        memset(buf, (int)(len & 0xff), len);
        TU_RETRY(rc, axstm_usevar(b->s, key, &c->v));
        if (rc == AXSTM_OK) {
            rc = axstm_value_set(c->v, buf, len);
            if (rc == AXSTM_OK)
                TU_RETRY(rc, axstm_value_commit(c->v));
            axstm_value_free(c->v);
        }
        if (rc == AXSTM_OK)
            rc = axstm_atomically(b->s, swap_body, NULL);
        if (rc != AXSTM_OK)
            busy_error(b, rc);
    }
    return NULL;
}

/* Holds a pin, in a foreach visitor or in a transaction body, until the
 * test has forked. */
static int pinned_visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    (void)key;
    (void)version;
    (void)data;
    (void)len;
    struct busy *b = arg;
    sem_post(&b->pinned);
    tu_sem_wait_ok(&b->unpin);
    return 1; /* one visit is enough */
}

struct pinned_run {
    struct busy *b;
    bool held; /* the body may run again: it holds the pin once */
};

static int pinned_body(axstm_txn *tx, void *arg)
{
    struct pinned_run *run = arg;
    int rc = axstm_txn_get(tx, "busy.quiet", NULL, NULL);
    if (rc != AXSTM_OK && rc != AXSTM_ENOVALUE)
        return rc;
    if (!run->held) {
        run->held = true;
        sem_post(&run->b->pinned);
        tu_sem_wait_ok(&run->b->unpin);
    }
    return AXSTM_OK;
}

static void *pinner_main(void *arg)
{
    struct busy *b = arg;
    for (unsigned n = 0;; n++) {
        struct pinned_run run = {b, false};
        tu_sem_wait_ok(&b->pin);
        if (atomic_load(&b->stop))
            break;
        int rc = n % 2 ? axstm_atomically(b->s, pinned_body, &run)
                       : axstm_store_foreach(b->s, pinned_visit, b);
        if (rc != AXSTM_OK && rc != 1)
            busy_error(b, rc);
    }
    return NULL;
}

/* A thread that lives for one commit: slots and caches come and go. */
static void *brief_main(void *arg)
{
    struct busy *b = arg;
    axstm_value *v = NULL;
    int rc;
    TU_RETRY(rc, axstm_usevar(b->s, "busy.brief", &v));
    if (rc == AXSTM_OK) {
        rc = axstm_value_set_i64(v, 1);
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_value_commit(v));
        if (rc == AXSTM_CONCURRENT_UPDATE)
            rc = AXSTM_OK;
        axstm_value_free(v);
    }
    if (rc != AXSTM_OK)
        busy_error(b, rc);
    return NULL;
}

static void *spawner_main(void *arg)
{
    struct busy *b = arg;
    while (!atomic_load(&b->stop)) {
        pthread_t t;
        if (pthread_create(&t, NULL, brief_main, b) != 0) {
            busy_error(b, AXSTM_ENOMEM);
            break;
        }
        pthread_join(t, NULL);
    }
    return NULL;
}

/*
 * 20 times: while 2 threads commit and run transactions, a third holds a
 * pin and a fourth starts and joins short-lived threads, fork.  The child
 * frees the handles it holds of the store made before the fork, then that
 * store (which other threads were in the middle of using: their locks and
 * pins are held for good there), then makes a new store and uses it from
 * two new threads.
 */
START_TEST(child_of_busy_parent_frees_old_store_and_uses_new_ones)
{
    static struct busy b;
    static struct committer c[BUSY_COMMITTERS];
    pthread_t pinner, spawner;
    int i;

#if defined(UNDER_SANITIZER)
    printf("note: skipped under %s (its runtime's locks do not survive a fork amid "
           "allocations)\n",
           UNDER_SANITIZER);
    return;
#endif
    memset(&b, 0, sizeof b);
    b.s = tu_store_ok();
    atomic_init(&b.stop, 0);
    ck_assert_int_eq(sem_init(&b.pin, 0, 0), 0);
    ck_assert_int_eq(sem_init(&b.pinned, 0, 0), 0);
    ck_assert_int_eq(sem_init(&b.unpin, 0, 0), 0);
    ck_assert_int_eq(pthread_mutex_init(&b.errors_lock, NULL), 0);
    (void)axstm__thread_slot(); /* the test's thread: a slot of its own */
    {
        axstm_value *v = tu_usevar_ok(b.s, "busy.a");
        ck_assert_int_eq(axstm_value_set_str(v, "the a side, long enough to be a blob"), AXSTM_OK);
        ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        axstm_value_free(v);
        v = tu_usevar_ok(b.s, "busy.b");
        ck_assert_int_eq(axstm_value_set_str(v, "the b side"), AXSTM_OK);
        ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        axstm_value_free(v);
        axstm_value_free(tu_usevar_ok(b.s, "busy.quiet")); /* read, never written */
    }
    for (i = 0; i < BUSY_COMMITTERS; i++) {
        c[i].b = &b;
        c[i].id = (unsigned)i;
        tu_start(&c[i].thread, committer_main, &c[i]);
    }
    tu_start(&pinner, pinner_main, &b);
    tu_start(&spawner, spawner_main, &b);

    static const char *const pair[] = {"busy.a", "busy.b"};
    for (i = 0; i < FORKS; i++) {
        /* Handles of the test's own, to be freed by the child. */
        axstm_value *v = tu_usevar_ok(b.s, "busy.a");
        axstm_collection *col = tu_using_ok(b.s, pair, 2);
        int report[2];
        ck_assert_int_eq(pipe(report), 0);
        sem_post(&b.pin);
        tu_sem_wait_ok(&b.pinned);
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            struct child_memcheck m;
            close(report[0]);
            child_memcheck_start(&m);
            child_free_old(&m, b.s, v, col);
            child_end(&m, child_new_store(), report[1]);
        }
        sem_post(&b.unpin);
        close(report[1]);
        axstm_value_free(v);
        axstm_collection_free(col);
        ck_assert_msg(pid > 0, "fork: %s", strerror(errno));
        child_ok(pid, i, report[0]);
    }

    atomic_store(&b.stop, 1);
    for (i = 0; i < BUSY_COMMITTERS; i++)
        tu_join(c[i].thread);
    sem_post(&b.pin);
    tu_join(pinner);
    tu_join(spawner);
    ck_assert_msg(b.errors == 0, "%ld errors in the parent's threads, first %s", b.errors,
                  axstm_strerror(b.first_error));
    axstm_store_free(b.s);
    sem_destroy(&b.pin);
    sem_destroy(&b.pinned);
    sem_destroy(&b.unpin);
    pthread_mutex_destroy(&b.errors_lock);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Cache list                                                         */
/* ------------------------------------------------------------------ */

struct holder {
    sem_t held, forked;
};

/* Holds the list of handle caches for a while, as a thread adding or
 * dropping its cache does for an instant (the same lock the library takes
 * around fork); then lives on until the fork is over (a thread that has
 * ended but is not joined yet would be a "leaked thread" to TSan in the
 * child). */
static void *holder_main(void *arg)
{
    struct holder *h = arg;
    axstm__caches_before_fork();
    sem_post(&h->held);
    tu_sleep_s(0.05);
    axstm__caches_after_fork();
    tu_sem_wait_ok(&h->forked);
    return NULL;
}

/*
 * A parent thread holds the list of handle caches when the test forks
 * (had the fork not waited, the list would stay held for good in the
 * child).  The child's new threads then free handles, which adds their
 * caches to the list, and exit, which drops them.
 */
START_TEST(child_threads_free_handles_after_a_fork_amid_cache_updates)
{
    struct holder h;
    pthread_t t;
    ck_assert_int_eq(sem_init(&h.held, 0, 0), 0);
    ck_assert_int_eq(sem_init(&h.forked, 0, 0), 0);
    axstm_store_free(tu_store_ok()); /* the library's fork handlers are set */
    (void)axstm__thread_slot();
    tu_start(&t, holder_main, &h);
    tu_sem_wait_ok(&h.held);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_new_store());
    sem_post(&h.forked);
    ck_assert_msg(pid > 0, "fork: %s", strerror(errno));
    tu_join(t);
    child_ok(pid, 0, -1);
    sem_destroy(&h.held);
    sem_destroy(&h.forked);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Quiet parent                                                       */
/* ------------------------------------------------------------------ */

struct quiet {
    axstm_store *s;
    sem_t ready, release;
};

/* Uses the store, then waits, inside no call, until released. */
static void *quiet_main(void *arg)
{
    struct quiet *q = arg;
    axstm_value *v = NULL;
    int rc;
    TU_RETRY(rc, axstm_usevar(q->s, "child.count", &v));
    if (rc == AXSTM_OK)
        axstm_value_free(v);
    sem_post(&q->ready);
    tu_sem_wait_ok(&q->release);
    return NULL;
}

/*
 * Two parent threads have used the store and wait, inside no call, when
 * the test forks: the child goes on using that store from new threads (its
 * counter, set to 1000 before the fork, goes on from there) and frees it.
 */
START_TEST(child_of_quiet_parent_keeps_using_the_store)
{
    struct quiet q;
    pthread_t t[2];
    int i;
    q.s = tu_store_ok();
    ck_assert_int_eq(sem_init(&q.ready, 0, 0), 0);
    ck_assert_int_eq(sem_init(&q.release, 0, 0), 0);
    (void)axstm__thread_slot();
    axstm_value *v = tu_usevar_ok(q.s, "child.count");
    tu_set_i64_ok(v, 1000);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
    for (i = 0; i < 2; i++)
        tu_start(&t[i], quiet_main, &q);
    for (i = 0; i < 2; i++)
        tu_sem_wait_ok(&q.ready);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int status = child_use(q.s, "child.count", 1000);
        axstm_store_free(q.s);
        _exit(status);
    }
    for (i = 0; i < 2; i++)
        sem_post(&q.release);
    for (i = 0; i < 2; i++)
        tu_join(t[i]);
    ck_assert_msg(pid > 0, "fork: %s", strerror(errno));
    child_ok(pid, 0, -1);
    axstm_store_free(q.s);
    sem_destroy(&q.ready);
    sem_destroy(&q.release);
}
END_TEST

static Suite *fork_suite(void)
{
    Suite *s = suite_create("fork");
    TCase *tc = tcase_create("Fork");
    /* Above the children's own limit, so that a hung child is reported
     * as such rather than as a test timeout. */
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, child_of_busy_parent_frees_old_store_and_uses_new_ones);
    tcase_add_test(tc, child_threads_free_handles_after_a_fork_amid_cache_updates);
    tcase_add_test(tc, child_of_quiet_parent_keeps_using_the_store);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(fork_suite());
}
