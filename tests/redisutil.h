/* SPDX-License-Identifier: MIT */
/*
 * redisutil.h -- a redis-server of the test's own: started on a unix
 * socket in a fresh temporary directory (no TCP port, no persistence
 * unless asked), stopped by its pid.  Header-only, like testutil.h.
 *
 * A test that needs a server calls tu_redis_start(); when redis-server is
 * not installed it returns false and the caller skips (the only reason a
 * Redis test may skip).
 */
#ifndef AXSTM_TEST_REDISUTIL_H
#define AXSTM_TEST_REDISUTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

struct tu_redis {
    pid_t pid;
    const char *const *extra; /* the server's extra words, for a restart */
    char dir[64];
    char socket[96];
    char log[96];
    char address[160]; /* redis+unix://<socket>?timeout_ms=... */
};

/* Whether a redis-server can be run here at all. */
static inline bool tu_redis_available(void)
{
    const char *path = getenv("PATH");
    char buf[512];
    if (path == NULL)
        return false;
    while (*path != '\0') {
        size_t n = strcspn(path, ":");
        if (n > 0 && n < sizeof buf - 16) {
            memcpy(buf, path, n);
            strcpy(buf + n, "/redis-server");
            if (access(buf, X_OK) == 0)
                return true;
        }
        path += n + (path[n] == ':');
    }
    return false;
}

/* Whether the server answers on its socket (a connect is enough: it
 * listens only once it has loaded its data). */
static inline bool tu_redis_listening_(const struct tu_redis *r)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    bool ok;
    if (fd < 0)
        return false;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", r->socket);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/*
 * Starts a server.  extra: more command-line words for it (NULL-ended,
 * may be NULL), e.g. {"--appendonly", "yes", NULL}.  timeout_ms goes into
 * the address.  Returns false if redis-server is not installed; any
 * other failure fails the test.
 */
/* Runs the server of r (its directory and socket made) and waits until it
 * listens. */
static inline void tu_redis_launch_(struct tu_redis *r)
{
    char *argv[32];
    int argc = 0;
    const char *const *extra = r->extra;
    double give_up;
    argv[argc++] = (char *)"redis-server";
    argv[argc++] = (char *)"--port";
    argv[argc++] = (char *)"0";
    argv[argc++] = (char *)"--unixsocket";
    argv[argc++] = r->socket;
    argv[argc++] = (char *)"--unixsocketperm";
    argv[argc++] = (char *)"700";
    argv[argc++] = (char *)"--dir";
    argv[argc++] = r->dir;
    argv[argc++] = (char *)"--save";
    argv[argc++] = (char *)"";
    argv[argc++] = (char *)"--daemonize";
    argv[argc++] = (char *)"no";
    argv[argc++] = (char *)"--logfile";
    argv[argc++] = r->log;
    for (; extra != NULL && *extra != NULL && argc < 31; extra++)
        argv[argc++] = (char *)*extra;
    argv[argc] = NULL;
    r->pid = fork();
    ck_assert_msg(r->pid >= 0, "fork: %s", strerror(errno));
    if (r->pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp("redis-server", argv);
        _exit(127);
    }
    /* Wait for it to listen: a generous watchdog, no timing assumption. */
    give_up = tu_now() + 60;
    while (!tu_redis_listening_(r)) {
        int status;
        ck_assert_msg(waitpid(r->pid, &status, WNOHANG) == 0, "redis-server exited at start");
        ck_assert_msg(tu_now() < give_up, "redis-server did not listen within 60 s");
        tu_sleep_ns(2000000);
    }
}

static inline bool tu_redis_start_with(struct tu_redis *r, const char *const *extra, int timeout_ms)
{
    if (!tu_redis_available())
        return false;
    r->extra = extra;
    snprintf(r->dir, sizeof r->dir, "/tmp/axstm-redis-XXXXXX");
    ck_assert_msg(mkdtemp(r->dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(r->socket, sizeof r->socket, "%s/redis.sock", r->dir);
    snprintf(r->log, sizeof r->log, "%s/redis.log", r->dir);
    snprintf(r->address, sizeof r->address, "redis+unix://%s?timeout_ms=%d", r->socket, timeout_ms);
    tu_redis_launch_(r);
    return true;
}

static inline bool tu_redis_start(struct tu_redis *r)
{
    return tu_redis_start_with(r, NULL, 5000);
}

/*
 * Runs `redis-cli -s <socket> words...` (NULL-ended, at most 8 words),
 * its output thrown away: for planting data behind the library's back.
 * Returns whether it ran and succeeded (false also when redis-cli is not
 * installed).
 */
static inline bool tu_redis_cli(const struct tu_redis *r, const char *const *words)
{
    char *argv[12];
    int argc = 0, status;
    argv[argc++] = (char *)"redis-cli";
    argv[argc++] = (char *)"-s";
    argv[argc++] = (char *)r->socket;
    for (; *words != NULL && argc < 11; words++)
        argv[argc++] = (char *)*words;
    argv[argc] = NULL;
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp("redis-cli", argv);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid)
        return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* Kills the server (SIGKILL: nothing is saved) and waits for it. */
static inline void tu_redis_kill(struct tu_redis *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
    }
}

/* Starts the server again, in the same directory (so with whatever it
 * persisted there) and on the same socket.  A server still running is
 * killed first: two on one socket path would split the clients between
 * them. */
static inline void tu_redis_restart(struct tu_redis *r)
{
    tu_redis_kill(r);
    unlink(r->socket);
    tu_redis_launch_(r);
}

/* Kills the server and removes its directory. */
static inline void tu_redis_stop(struct tu_redis *r)
{
    DIR *d;
    struct dirent *e;
    char path[sizeof r->dir + sizeof e->d_name + 1];
    tu_redis_kill(r);
    d = opendir(r->dir);
    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", r->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(r->dir);
}

/* A store opened from address, or the test fails (needs check.h). */
static inline axstm_store *tu_redis_open_ok(const char *address)
{
    axstm_store *s = NULL;
    int rc = axstm_store_open(address, &s);
    ck_assert_msg(rc == AXSTM_OK, "open %s: %s", address, axstm_strerror(rc));
    ck_assert_ptr_nonnull(s);
    return s;
}

#endif
