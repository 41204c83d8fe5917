/* SPDX-License-Identifier: MIT */
/*
 * check_dlopen.c -- the shared library loaded with dlopen and closed while
 * a thread that used it is still alive.
 *
 *   Unload        a thread checks out, commits and frees a value through
 *                 dlsym'd functions, then waits; the main thread dlcloses
 *                 the library; then the thread exits, which runs the
 *                 library's thread-exit destructors (slot give-back, handle
 *                 cache).  They must still be there to run.
 *
 * The program does not link the library: it loads the shared object that
 * `make` built, $top_builddir/lib/.libs/<dlname> (dlname read from
 * lib/libaxstm.la, as check_symbols.sh does; top_builddir defaults to the
 * current directory).  A library configured with --disable-shared has an
 * empty dlname: the program then exits 77, automake's "skipped".
 *
 * The scenario runs in a child process so that a crash at thread exit is
 * reported as a failure, not taken for the death of the whole suite (with
 * CK_FORK=no there is no other process to catch it).  The child reports by
 * its exit status; it never calls Check.  Its waits are on pipes, never on
 * a clock.
 */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "axstm.h"

/* ------------------------------------------------------------------ */
/* Finding the shared object                                          */
/* ------------------------------------------------------------------ */

static char so_path[4096];

/* 1: so_path is the built shared object; 0: none was built; -1: the .la
 * could not be read (reported on stderr). */
static int find_shared_object(void)
{
    const char *top = getenv("top_builddir");
    char la[4096], line[1024];
    if (top == NULL || *top == '\0')
        top = ".";
    if ((size_t)snprintf(la, sizeof la, "%s/lib/libaxstm.la", top) >= sizeof la)
        return -1;
    FILE *f = fopen(la, "r");
    if (f == NULL) {
        fprintf(stderr, "check_dlopen: cannot read %s: %s\n", la, strerror(errno));
        return -1;
    }
    static const char tag[] = "dlname='";
    int found = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, tag, sizeof tag - 1) != 0)
            continue;
        const char *p = line + sizeof tag - 1;
        size_t n = strcspn(p, "'");
        if (p[n] != '\'')
            break;
        if (n == 0) {
            found = 0;
            break;
        }
        if ((size_t)snprintf(so_path, sizeof so_path, "%s/lib/.libs/%.*s", top, (int)n, p) <
            sizeof so_path)
            found = 1;
        break;
    }
    fclose(f);
    if (found < 0)
        fprintf(stderr, "check_dlopen: no usable dlname line in %s\n", la);
    return found;
}

/* ------------------------------------------------------------------ */
/* The child's scenario                                               */
/* ------------------------------------------------------------------ */

/* The child's exit statuses, so that the test can say what went wrong. */
enum {
    CHILD_OK = 0,
    CHILD_DLOPEN = 10,
    CHILD_DLSYM,
    CHILD_PIPE,
    CHILD_THREAD,
    CHILD_LIBRARY,
    CHILD_DLCLOSE,
    CHILD_JOIN,
};

/* The functions the worker calls, typed straight from the header. */
struct api {
    __typeof__(&axstm_store_new) store_new;
    __typeof__(&axstm_usevar) usevar;
    __typeof__(&axstm_value_set_i64) value_set_i64;
    __typeof__(&axstm_value_commit) value_commit;
    __typeof__(&axstm_value_free) value_free;
    __typeof__(&axstm_store_free) store_free;
};

struct worker {
    struct api api;
    int used_fd;    /* the worker writes one byte here once it used the library */
    int release_fd; /* ... and exits when it can read from this one */
    int failed;     /* nonzero: a call of the library failed */
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    const struct api *a = &w->api;
    axstm_value *v = NULL;
    int rc;
    char byte = 'u';

    axstm_store *s = a->store_new();
    if (s == NULL) {
        w->failed = 1;
    } else {
        /* The store is this thread's alone, so nothing can be busy; the
         * loops only keep the calls honest to the API's contract. */
        while ((rc = a->usevar(s, "k", &v)) == AXSTM_BUSY_RETRY)
            ;
        if (rc == AXSTM_OK) {
            if (a->value_set_i64(v, 42) != AXSTM_OK)
                w->failed = 1;
            while ((rc = a->value_commit(v)) == AXSTM_BUSY_RETRY)
                ;
            if (rc != AXSTM_OK)
                w->failed = 1;
            /* Freed into this thread's handle cache, which only the
             * thread-exit destructor frees. */
            a->value_free(v);
        } else {
            w->failed = 1;
        }
        a->store_free(s);
    }
    if (write(w->used_fd, &byte, 1) != 1)
        w->failed = 1;
    while (read(w->release_fd, &byte, 1) < 0 && errno == EINTR)
        ;
    return NULL; /* the library's thread-exit destructors run now */
}

/* POSIX lets dlsym's object pointer be converted to a function pointer. */
#define LOAD(h, field, name) ((w.api.field = (__typeof__(w.api.field))dlsym((h), (name))) != NULL)

static int dlclose_scenario(void)
{
    struct worker w = {.failed = 0};
    int used[2], release[2];
    pthread_t t;
    char byte = 'r';

    void *h = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "check_dlopen: dlopen: %s\n", dlerror());
        return CHILD_DLOPEN;
    }
    if (!(LOAD(h, store_new, "axstm_store_new") && LOAD(h, usevar, "axstm_usevar") &&
          LOAD(h, value_set_i64, "axstm_value_set_i64") &&
          LOAD(h, value_commit, "axstm_value_commit") && LOAD(h, value_free, "axstm_value_free") &&
          LOAD(h, store_free, "axstm_store_free"))) {
        fprintf(stderr, "check_dlopen: dlsym: %s\n", dlerror());
        return CHILD_DLSYM;
    }
    if (pipe(used) != 0 || pipe(release) != 0)
        return CHILD_PIPE;
    w.used_fd = used[1];
    w.release_fd = release[0];
    if (pthread_create(&t, NULL, worker_main, &w) != 0)
        return CHILD_THREAD;

    ssize_t n;
    while ((n = read(used[0], &byte, 1)) < 0 && errno == EINTR)
        ;
    if (n != 1)
        return CHILD_THREAD;
    if (dlclose(h) != 0) {
        fprintf(stderr, "check_dlopen: dlclose: %s\n", dlerror());
        return CHILD_DLCLOSE;
    }
    if (write(release[1], &byte, 1) != 1)
        return CHILD_PIPE;
    if (pthread_join(t, NULL) != 0)
        return CHILD_JOIN;
    return w.failed ? CHILD_LIBRARY : CHILD_OK;
}

/* Runs fn in a child process; returns its wait status. */
static int in_child(int (*fn)(void))
{
    /* Nothing buffered may be written twice, by parent and child. */
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ne(pid, -1);
    if (pid == 0)
        exit(fn()); /* exit, not _exit: leak checkers look at the child too */
    int status;
    pid_t r;
    while ((r = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
        ;
    ck_assert_int_eq(r, pid);
    return status;
}

/* ------------------------------------------------------------------ */
/* Tests                                                              */
/* ------------------------------------------------------------------ */

START_TEST(thread_exits_after_dlclose)
{
    int status = in_child(dlclose_scenario);
    ck_assert_msg(!WIFSIGNALED(status), "the child died of signal %d (%s)", WTERMSIG(status),
                  strsignal(WTERMSIG(status)));
    ck_assert(WIFEXITED(status));
    ck_assert_msg(WEXITSTATUS(status) == CHILD_OK, "the child exited with status %d",
                  WEXITSTATUS(status));
}
END_TEST

static Suite *dlopen_suite(void)
{
    Suite *s = suite_create("dlopen");
    TCase *tc = tcase_create("Unload");
    tcase_add_test(tc, thread_exits_after_dlclose);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    switch (find_shared_object()) {
    case 0:
        printf("check_dlopen: the shared library was not built; skipping\n");
        return 77;
    case 1:
        break;
    default:
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(dlopen_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
