/* SPDX-License-Identifier: MIT */
/*
 * redis.c -- a store kept in a Redis server (redis.h).
 *
 * Connections: a hiredis connection may be used by one thread at a time
 * and is useless after its first error, while handles move between
 * threads and live indefinitely.  So no connection belongs to a handle or
 * a thread: each call takes one from the store's pool of idle connections
 * (a mutex held for a few instructions), makes its one round trip, and
 * gives it back, or closes it after an error.  A call that finds the pool
 * empty opens a new connection, so the pool grows to the number of calls
 * that ever ran at once.
 *
 * The server runs one script per call (redis_scripts.h), by its SHA1;
 * after a restart the server has forgotten the scripts and answers
 * NOSCRIPT, and the call loads them again and repeats itself (the script
 * did not run, so even a commit may be sent again).
 */
#include "redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "axstm-internal.h"
#include "hash.h"
#include "redis_cache.h"
#include "redis_scripts.h"

enum script {
    SCRIPT_CHECKOUT,
    SCRIPT_COMMIT,
    SCRIPT_READ,
    SCRIPT_TXCOMMIT,
    SCRIPT_RESOLVE,
    SCRIPT_HOLD,
    SCRIPT_RELEASE,
    SCRIPT_STATS,
    SCRIPTS
};

static const char *const script_text[SCRIPTS] = {
    AXSTM__LUA_CHECKOUT, AXSTM__LUA_COMMIT, AXSTM__LUA_READ,    AXSTM__LUA_TXCOMMIT,
    AXSTM__LUA_RESOLVE,  AXSTM__LUA_HOLD,   AXSTM__LUA_RELEASE, AXSTM__LUA_STATS};

/* The names every script takes first (redis_scripts.h). */
enum meta { META_BIRTHS, META_KEYS, META_STATS, METAS };
static const char *const meta_suffix[METAS] = {"births", "keys", "stats"};

/* One connection to the server, with its name in the commit record. */
struct conn {
    redisContext *ctx;
    uint64_t seq; /* of the last commit sent on it */
    char name[64];
};

/* What a script answers that is not a reply: the server forgot it. */
#define NO_SCRIPT 1

struct axstm__redis {
    struct axstm__address addr;
    char *meta[METAS];
    char *channel; /* where commits publish the names they changed */
    char sha[SCRIPTS][41];
    pthread_mutex_t lock; /* guards idle, nidle, idle_cap, pid */
    struct conn **idle;
    size_t nidle, idle_cap;
    pid_t pid;                              /* the process the idle connections belong to */
    char client[17];                        /* this store's random name, in its connections' */
    struct axstm__listen *listen;           /* the subscriber (redis_listen.c) */
    struct axstm__rcache *cache;            /* keys' last known state (redis_cache.h), if
                                             * first_read=cache; else NULL */
    _Atomic unsigned long long connections; /* opened so far */
};

/* ------------------------------------------------------------------ */
/* SIGPIPE                                                            */
/* ------------------------------------------------------------------ */

/*
 * A write to a connection the server has closed raises SIGPIPE, which
 * would kill a program that did not ignore it.  Around each round trip
 * the calling thread blocks the signal, and afterwards takes away a
 * SIGPIPE that the round trip raised (one that was pending before is left
 * as it was), so the program never sees one of ours.
 */
struct pipe_guard {
    sigset_t old;
    bool was_pending;
    int cancel_state; /* and no cancellation meanwhile (see below) */
};

/* A round trip's reads and writes are cancellation points, which the
 * library promises no call but axstm_atomically(_timed) contains
 * (axstm.h): a thread cancelled there would leave the connection half
 * used and leak it.  So cancellation is held off too. */
static void pipe_guard_begin(struct pipe_guard *g)
{
    g->cancel_state = axstm__cancel_off();
    sigset_t pipe_only, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_only, &g->old);
}

static void pipe_guard_end(struct pipe_guard *g)
{
    sigset_t pipe_only, pending;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigemptyset(&pending);
    if (!g->was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
        const struct timespec now = {0, 0};
        while (sigtimedwait(&pipe_only, NULL, &now) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    axstm__cancel_restore(g->cancel_state);
}

/* ------------------------------------------------------------------ */
/* Connections                                                        */
/* ------------------------------------------------------------------ */

static struct timeval timeout_of(const struct axstm__redis *r)
{
    int ms = r->addr.timeout_ms;
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

/* What an error reply means for the caller. */
static int code_of_error(const redisReply *reply)
{
    static const char *const busy[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN"};
    const char *text = reply->str != NULL ? reply->str : "";
    if (strncmp(text, "NOSCRIPT", 8) == 0)
        return NO_SCRIPT;
    for (size_t i = 0; i < sizeof busy / sizeof busy[0]; i++)
        if (strncmp(text, busy[i], strlen(busy[i])) == 0)
            return AXSTM_BUSY_RETRY;
    if (strncmp(text, "OOM", 3) == 0)
        return AXSTM_ENOMEM;
    return AXSTM_EIO; /* foreign data, wrong password, a script error... */
}

/*
 * One command, whole: sends it and reads its answer into *out (owned by
 * the caller).  *sent says whether the command had left whole, which is
 * what makes a lost answer to a commit in doubt.
 */
static int round_trip(redisContext *c, int argc, const char **argv, const size_t *lens,
                      redisReply **out, bool *sent)
{
    struct pipe_guard g;
    int rc = AXSTM_OK, done = 0;
    void *reply = NULL;
    *sent = false;
    *out = NULL;
    if (redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK)
        return c->err == REDIS_ERR_OOM ? AXSTM_ENOMEM : AXSTM_EIO;
    pipe_guard_begin(&g);
    while (rc == AXSTM_OK && !done)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            rc = AXSTM_EIO;
    if (rc == AXSTM_OK) {
        *sent = true;
        if (redisGetReply(c, &reply) != REDIS_OK || reply == NULL)
            rc = AXSTM_EIO;
    }
    pipe_guard_end(&g);
    *out = reply;
    return rc;
}

/* A command whose answer must be +OK (AUTH, SELECT). */
static int expect_ok(redisContext *c, int argc, const char **argv, const size_t *lens)
{
    redisReply *reply;
    bool sent;
    int rc = round_trip(c, argc, argv, lens, &reply, &sent);
    if (rc == AXSTM_OK && reply->type == REDIS_REPLY_ERROR)
        rc = code_of_error(reply) == AXSTM_BUSY_RETRY ? AXSTM_BUSY_RETRY : AXSTM_EIO;
    else if (rc == AXSTM_OK && reply->type != REDIS_REPLY_STATUS)
        rc = AXSTM_EIO;
    freeReplyObject(reply);
    return rc;
}

/* Opens a connection: connects, logs in, selects the database, and names
 * the connection for the commit record (redis_scripts.h): the store's
 * client name, the process and a count make a name no other connection
 * of any process ever had. */
static int connect_one_(struct axstm__redis *r, struct conn **out);

/* connect() and the login are cancellation points: held off, as in
 * round_trip. */
static int connect_one(struct axstm__redis *r, struct conn **out)
{
    int cancel_state = axstm__cancel_off();
    int rc = connect_one_(r, out);
    axstm__cancel_restore(cancel_state);
    return rc;
}

static int connect_one_(struct axstm__redis *r, struct conn **out)
{
    const struct axstm__address *a = &r->addr;
    struct conn *conn = axstm__malloc(sizeof *conn);
    if (conn == NULL)
        return AXSTM_ENOMEM;
    struct timeval tv = timeout_of(r);
    redisContext *c = a->kind == AXSTM__ADDRESS_REDIS_UNIX
                          ? redisConnectUnixWithTimeout(a->path, tv)
                          : redisConnectWithTimeout(a->host, a->port, tv);
    if (c == NULL) {
        axstm__free(conn);
        return AXSTM_ENOMEM;
    }
    int rc = c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK ? AXSTM_OK : AXSTM_EIO;
    if (rc == AXSTM_OK && a->password != NULL) {
        const char *argv[3] = {"AUTH", a->user, a->password};
        size_t lens[3] = {4, a->user != NULL ? strlen(a->user) : 0, strlen(a->password)};
        if (a->user == NULL) {
            argv[1] = a->password;
            lens[1] = lens[2];
        }
        rc = expect_ok(c, a->user != NULL ? 3 : 2, argv, lens);
    }
    if (rc == AXSTM_OK && a->db != 0) {
        char db[16];
        int n = snprintf(db, sizeof db, "%d", a->db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, (size_t)n};
        rc = expect_ok(c, 2, argv, lens);
    }
    if (rc != AXSTM_OK) {
        redisFree(c);
        axstm__free(conn);
        return rc;
    }
    conn->ctx = c;
    conn->seq = 0;
    unsigned long long count = atomic_fetch_add(&r->connections, 1) + 1;
    snprintf(conn->name, sizeof conn->name, "%s.%ld.%llu", r->client, (long)getpid(), count);
    *out = conn;
    return AXSTM_OK;
}

static void conn_free(struct conn *c)
{
    if (c != NULL) {
        int cancel_state = axstm__cancel_off(); /* close() is a cancellation point */
        redisFree(c->ctx);
        axstm__cancel_restore(cancel_state);
        axstm__free(c);
    }
}

/* An idle connection (*reused set), or a new one.  In the child of a fork
 * the idle connections are the parent's too (the same sockets): the child
 * closes its copies, sending nothing, and opens its own. */
static int take_connection(struct axstm__redis *r, struct conn **out, bool *reused)
{
    struct conn *c = NULL;
    pid_t me = getpid();
    pthread_mutex_lock(&r->lock);
    if (r->pid != me) {
        while (r->nidle > 0)
            conn_free(r->idle[--r->nidle]);
        r->pid = me;
    }
    if (r->nidle > 0)
        c = r->idle[--r->nidle];
    pthread_mutex_unlock(&r->lock);
    *reused = c != NULL;
    if (c != NULL) {
        *out = c;
        return AXSTM_OK;
    }
    return connect_one(r, out);
}

/* Gives c back to the pool, or closes it when it failed or the pool
 * cannot grow. */
static void give_back(struct axstm__redis *r, struct conn *c)
{
    if (c == NULL)
        return;
    if (c->ctx->err == 0) {
        pthread_mutex_lock(&r->lock);
        if (r->pid != getpid()) {
            /* Taken before a fork, given back in the child: the parent's. */
            pthread_mutex_unlock(&r->lock);
            conn_free(c);
            return;
        }
        if (r->nidle == r->idle_cap) {
            size_t cap = r->idle_cap * 2 + 4;
            struct conn **grown = axstm__malloc(cap * sizeof *grown);
            if (grown != NULL) {
                if (r->nidle != 0)
                    memcpy(grown, r->idle, r->nidle * sizeof *grown);
                axstm__free(r->idle);
                r->idle = grown;
                r->idle_cap = cap;
            }
        }
        bool kept = r->nidle < r->idle_cap;
        if (kept)
            r->idle[r->nidle++] = c;
        pthread_mutex_unlock(&r->lock);
        if (kept)
            return;
    }
    conn_free(c);
}

/*
 * round_trip on a connection from the pool.  An idle connection may have
 * been closed by the server meanwhile (it restarted, or dropped idle
 * clients): when one fails, the call is made once more on a new
 * connection, provided the command did not leave whole or repeating it
 * changes nothing (repeat_ok).  *c may be replaced, or NULL.
 */
static int pooled_trip(struct axstm__redis *r, struct conn **c, bool *reused, bool repeat_ok,
                       int argc, const char **argv, const size_t *lens, redisReply **out,
                       bool *sent)
{
    int rc = round_trip((*c)->ctx, argc, argv, lens, out, sent);
    if (rc == AXSTM_OK || !*reused || (*sent && !repeat_ok))
        return rc;
    freeReplyObject(*out);
    *out = NULL;
    conn_free(*c);
    *c = NULL;
    *reused = false;
    rc = connect_one(r, c);
    if (rc != AXSTM_OK)
        return rc;
    return round_trip((*c)->ctx, argc, argv, lens, out, sent);
}

/* ------------------------------------------------------------------ */
/* Scripts                                                            */
/* ------------------------------------------------------------------ */

/* SCRIPT LOAD of one script on c, keeping its SHA1. */
static int load_script(struct axstm__redis *r, redisContext *c, enum script which)
{
    const char *argv[3] = {"SCRIPT", "LOAD", script_text[which]};
    size_t lens[3] = {6, 4, strlen(script_text[which])};
    redisReply *reply;
    bool sent;
    int rc = round_trip(c, 3, argv, lens, &reply, &sent);
    if (rc == AXSTM_OK && reply->type == REDIS_REPLY_ERROR)
        rc = code_of_error(reply) == AXSTM_BUSY_RETRY ? AXSTM_BUSY_RETRY : AXSTM_EIO;
    else if (rc == AXSTM_OK && (reply->type != REDIS_REPLY_STRING || reply->len != 40))
        rc = AXSTM_EIO;
    if (rc == AXSTM_OK) {
        /* The same text always has the same SHA1: concurrent loads agree. */
        pthread_mutex_lock(&r->lock);
        memcpy(r->sha[which], reply->str, 40);
        r->sha[which][40] = '\0';
        pthread_mutex_unlock(&r->lock);
    }
    freeReplyObject(reply);
    return rc;
}

static bool is_commit(enum script which)
{
    return which == SCRIPT_COMMIT || which == SCRIPT_TXCOMMIT;
}

/*
 * Runs a script on *c: argv[0..2] are left for EVALSHA, the SHA1 and the
 * number of keys (the caller fills from argv[3]: the meta names, then its
 * keys, then its arguments).  *reply is owned by the caller on AXSTM_OK;
 * an error reply has already become its code.  *sent: whether the last
 * try left whole.  A commit is never sent twice here.
 */
static int run_on(struct axstm__redis *r, struct conn **c, bool *reused, enum script which,
                  int argc, const char **argv, size_t *lens, size_t nkeys, redisReply **reply,
                  bool *sent)
{
    char sha[41], numkeys[24];
    int n = snprintf(numkeys, sizeof numkeys, "%zu", nkeys);
    int rc = AXSTM_EIO;
    *reply = NULL;
    *sent = false;
    for (int attempt = 0; attempt < 2; attempt++) {
        pthread_mutex_lock(&r->lock);
        memcpy(sha, r->sha[which], sizeof sha);
        pthread_mutex_unlock(&r->lock);
        argv[0] = "EVALSHA";
        lens[0] = 7;
        argv[1] = sha;
        lens[1] = 40;
        argv[2] = numkeys;
        lens[2] = (size_t)n;
        rc = pooled_trip(r, c, reused, !is_commit(which), argc, argv, lens, reply, sent);
        if (rc != AXSTM_OK || (*reply)->type != REDIS_REPLY_ERROR)
            break;
        rc = code_of_error(*reply);
        freeReplyObject(*reply);
        *reply = NULL;
        *sent = false; /* answered with an error: it did not run */
        if (rc != NO_SCRIPT)
            break;
        rc = load_script(r, (*c)->ctx, which);
        if (rc != AXSTM_OK)
            break;
        rc = AXSTM_EIO; /* if the second attempt is NOSCRIPT again */
    }
    if (rc != AXSTM_OK) {
        freeReplyObject(*reply);
        *reply = NULL;
    }
    return rc;
}

/* run_on with a connection from the pool, for scripts that change nothing
 * or whose repetition is harmless (a checkout's creating a key is). */
static int run_script(struct axstm__redis *r, enum script which, int argc, const char **argv,
                      size_t *lens, size_t nkeys, redisReply **reply)
{
    struct conn *c;
    bool reused, sent;
    int rc = take_connection(r, &c, &reused);
    if (rc != AXSTM_OK)
        return rc;
    rc = run_on(r, &c, &reused, which, argc, argv, lens, nkeys, reply, &sent);
    give_back(r, c);
    return rc;
}

/* Copies a string answer into buf (cap bytes, NUL-terminated). */
static int answer_of(const redisReply *reply, char *buf, size_t cap)
{
    if ((reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_STATUS) ||
        reply->len >= cap)
        return AXSTM_EIO;
    memcpy(buf, reply->str, reply->len);
    buf[reply->len] = '\0';
    return AXSTM_OK;
}

/*
 * What became of the commit number seq on the connection named `name`,
 * whose answer was lost: asked on a new connection (*c), for up to the
 * timeout while the server is loading.  *answer gets the commit's own
 * answer, or "fenced": it did not run and never will.
 */
static int resolve(struct axstm__redis *r, const char *name, uint64_t seq, struct conn **c,
                   char *answer, size_t cap)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int rc = connect_one(r, c);
    if (rc != AXSTM_OK) {
        *c = NULL;
        return rc;
    }
    char number[24];
    int n = snprintf(number, sizeof number, "%llu", (unsigned long long)seq);
    for (;;) {
        const char *argv[3 + METAS + 2];
        size_t lens[3 + METAS + 2];
        for (int m = 0; m < METAS; m++) {
            argv[3 + m] = r->meta[m];
            lens[3 + m] = strlen(r->meta[m]);
        }
        argv[3 + METAS] = name;
        lens[3 + METAS] = strlen(name);
        argv[4 + METAS] = number;
        lens[4 + METAS] = (size_t)n;
        bool reused = false, sent;
        redisReply *reply;
        rc = run_on(r, c, &reused, SCRIPT_RESOLVE, 5 + METAS, argv, lens, METAS, &reply, &sent);
        if (rc == AXSTM_OK)
            rc = answer_of(reply, answer, cap);
        freeReplyObject(reply);
        if (rc != AXSTM_BUSY_RETRY)
            return rc;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t ms =
            (int64_t)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (ms >= r->addr.timeout_ms)
            return rc;
        const struct timespec pause = {0, 10 * 1000 * 1000};
        int cancel_state = axstm__cancel_off();
        nanosleep(&pause, NULL);
        axstm__cancel_restore(cancel_state);
    }
}

_Atomic int axstm__redis_lose_answer;

/*
 * Runs a commit script (argv as for run_on; its first two arguments,
 * after the keys, are left for the commit's name).  answer (cap bytes,
 * allocated before: nothing may fail for want of memory once a commit may
 * have run) gets the script's string answer on AXSTM_OK.  A commit
 * whose answer is lost is looked up in the commit record: if it ran, its
 * recorded answer is the answer; if not, it is fenced off and sent again
 * on a new connection.  AXSTM_EINDOUBT only when even that could not be
 * learnt (the server is gone or stopped), after up to one more timeout.
 */
static int run_commit(struct axstm__redis *r, enum script which, int argc, const char **argv,
                      size_t *lens, size_t nkeys, char *answer, size_t cap)
{
    struct conn *c;
    bool reused;
    int rc = take_connection(r, &c, &reused);
    if (rc != AXSTM_OK)
        return rc;
    char seq[24];
    for (int sends = 0; sends < 3; sends++) {
        int n = snprintf(seq, sizeof seq, "%llu", (unsigned long long)++c->seq);
        argv[3 + nkeys] = c->name;
        lens[3 + nkeys] = strlen(c->name);
        argv[4 + nkeys] = seq;
        lens[4 + nkeys] = (size_t)n;
        bool sent;
        redisReply *reply;
        int lose = atomic_exchange(&axstm__redis_lose_answer, AXSTM__REDIS_ANSWER_KEPT);
        if (lose == AXSTM__REDIS_NEVER_RUN) {
            rc = AXSTM_EIO; /* as if it left whole and the server never ran it */
            sent = true;
        } else {
            rc = run_on(r, &c, &reused, which, argc, argv, lens, nkeys, &reply, &sent);
            if (rc == AXSTM_OK && lose == AXSTM__REDIS_ANSWER_LOST) {
                freeReplyObject(reply); /* it ran; its answer goes missing */
                rc = AXSTM_EIO;
            }
        }
        if (rc == AXSTM_OK) {
            rc = answer_of(reply, answer, cap);
            freeReplyObject(reply);
            break;
        }
        if (!sent || c == NULL)
            break; /* it never reached the server */
        char name[sizeof c->name];
        memcpy(name, c->name, sizeof name);
        uint64_t number = c->seq;
        conn_free(c);
        rc = resolve(r, name, number, &c, answer, cap);
        if (rc != AXSTM_OK) {
            rc = AXSTM_EINDOUBT;
            break;
        }
        if (strcmp(answer, "fenced") != 0)
            break;      /* it ran: answer is what it answered */
        rc = AXSTM_EIO; /* if no send is left */
        reused = false;
    }
    give_back(r, c);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Opening and closing                                                */
/* ------------------------------------------------------------------ */

static char *concat(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = axstm__malloc(na + nb + 1);
    if (s != NULL) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

int axstm__redis_open(const struct axstm__address *a, struct axstm__redis **out)
{
    struct axstm__redis *r = axstm__calloc(1, sizeof *r);
    if (r == NULL)
        return AXSTM_ENOMEM;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        axstm__free(r);
        return AXSTM_ENOMEM;
    }
    r->pid = getpid();
    struct axstm__hash_key name;
    axstm__hash_seed(&name); /* random: no two stores share a client name */
    snprintf(r->client, sizeof r->client, "%016llx", (unsigned long long)(name.k0 ^ name.k1));
    /* The address's strings are borrowed until the copies below. */
    r->addr = *a;
    r->addr.host = r->addr.path = r->addr.user = r->addr.password = r->addr.prefix = NULL;
    int rc = AXSTM_OK;
    const char *const *from[] = {(const char *const *)&a->host, (const char *const *)&a->path,
                                 (const char *const *)&a->user, (const char *const *)&a->password,
                                 (const char *const *)&a->prefix};
    char **to[] = {&r->addr.host, &r->addr.path, &r->addr.user, &r->addr.password, &r->addr.prefix};
    for (size_t i = 0; i < sizeof to / sizeof to[0] && rc == AXSTM_OK; i++)
        if (*from[i] != NULL && (*to[i] = concat(*from[i], "")) == NULL)
            rc = AXSTM_ENOMEM;
    for (int m = 0; m < METAS && rc == AXSTM_OK; m++)
        if ((r->meta[m] = concat(a->prefix, meta_suffix[m])) == NULL)
            rc = AXSTM_ENOMEM;
    if (rc == AXSTM_OK && (r->channel = concat(a->prefix, "changes")) == NULL)
        rc = AXSTM_ENOMEM;
    if (rc == AXSTM_OK)
        rc = axstm__listen_create(&r->listen);
    if (rc == AXSTM_OK && a->first_read_cached && (r->cache = axstm__rcache_new()) == NULL)
        rc = AXSTM_ENOMEM;

    struct conn *c = NULL;
    if (rc == AXSTM_OK)
        rc = connect_one(r, &c);
    for (int s = 0; s < SCRIPTS && rc == AXSTM_OK; s++)
        rc = load_script(r, c->ctx, s);
    give_back(r, c);
    if (rc != AXSTM_OK) {
        axstm__redis_close(r);
        return rc;
    }
    *out = r;
    return AXSTM_OK;
}

/* Takes the idle connections' names out of the commit record (one
 * command, on one of them): a connection closed in good order has no
 * commit in doubt.  Best effort: a failure leaves a few bytes behind. */
static void forget_names(struct axstm__redis *r)
{
    if (r->nidle == 0 || r->pid != getpid())
        return;
    size_t argc = 2 + r->nidle;
    const char **argv = axstm__malloc(argc * (sizeof *argv + sizeof(size_t)));
    if (argv == NULL)
        return;
    size_t *lens = (size_t *)(argv + argc);
    argv[0] = "HDEL";
    lens[0] = 4;
    argv[1] = r->meta[META_STATS];
    lens[1] = strlen(r->meta[META_STATS]);
    for (size_t i = 0; i < r->nidle; i++) {
        argv[2 + i] = r->idle[i]->name;
        lens[2 + i] = strlen(r->idle[i]->name);
    }
    redisReply *reply;
    bool sent;
    if (round_trip(r->idle[0]->ctx, (int)argc, argv, lens, &reply, &sent) == AXSTM_OK)
        freeReplyObject(reply);
    axstm__free(argv);
}

void axstm__redis_close(struct axstm__redis *r)
{
    if (r == NULL)
        return;
    axstm__listen_stop(r->listen);
    axstm__rcache_free(r->cache);
    forget_names(r);
    for (size_t i = 0; i < r->nidle; i++)
        conn_free(r->idle[i]);
    axstm__free(r->idle);
    for (int m = 0; m < METAS; m++)
        axstm__free(r->meta[m]);
    axstm__free(r->channel);
    axstm__address_free(&r->addr);
    pthread_mutex_destroy(&r->lock);
    axstm__free(r);
}

struct axstm__listen *axstm__redis_listen_of(struct axstm__redis *r)
{
    return r->listen;
}

int axstm__redis_timeout_ms(const struct axstm__redis *r)
{
    return r->addr.timeout_ms;
}

const char *axstm__redis_client(const struct axstm__redis *r)
{
    return r->client;
}

struct axstm__rcache *axstm__redis_cache(struct axstm__redis *r)
{
    return r->cache;
}

int axstm__redis_subscribe(struct axstm__redis *r, redisContext **out)
{
    struct conn *conn;
    int rc = connect_one(r, &conn);
    if (rc != AXSTM_OK)
        return rc;
    redisContext *c = conn->ctx;
    axstm__free(conn);
    const char *argv[2] = {"SUBSCRIBE", r->channel};
    size_t lens[2] = {9, strlen(r->channel)};
    redisReply *reply;
    bool sent;
    rc = round_trip(c, 2, argv, lens, &reply, &sent);
    if (rc == AXSTM_OK && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
                           reply->element[0]->type != REDIS_REPLY_STRING ||
                           strcmp(reply->element[0]->str, "subscribe") != 0))
        rc = AXSTM_EIO;
    freeReplyObject(reply);
    /* From now on it waits for messages as long as it takes. */
    if (rc == AXSTM_OK && redisSetTimeout(c, (struct timeval){0, 0}) != REDIS_OK)
        rc = AXSTM_EIO;
    if (rc != AXSTM_OK) {
        redisFree(c);
        return rc;
    }
    *out = c;
    return AXSTM_OK;
}

/* ------------------------------------------------------------------ */
/* Arguments and answers                                              */
/* ------------------------------------------------------------------ */

/*
 * The argument vector of a script over n keys: 3 words for EVALSHA, the
 * meta names, the n keys' hash names, then `per_key` words per key and
 * `extra` more.  The hash names live in one block after the vectors.
 */
struct args {
    const char **argv;
    size_t *lens;
    int argc;
    size_t nkeys;
    char *names; /* where the next hash name goes */
    const char *prefix;
    size_t prefix_len;
};

/* Room for a script's arguments: `words` words after the meta names,
 * of which `keys` are keys' hash names of `name_bytes` bytes in all
 * (their names without the prefix).  args_key adds them, then
 * args_push the script's other arguments. */
static int args_alloc(struct axstm__redis *r, size_t keys, size_t name_bytes, size_t words,
                      struct args *out)
{
    size_t prefix = strlen(r->addr.prefix);
    if (keys > SIZE_MAX / 64 || words > INT32_MAX - 3 - METAS ||
        name_bytes > SIZE_MAX / 2 - keys * (prefix + 2))
        return AXSTM_E2BIG;
    words += 3 + METAS;
    void *block =
        axstm__malloc(words * (sizeof(char *) + sizeof(size_t)) + name_bytes + keys * (prefix + 2));
    if (block == NULL)
        return AXSTM_ENOMEM;
    out->argv = block;
    out->lens = (size_t *)(out->argv + words);
    out->names = (char *)(out->lens + words);
    out->argc = 3;
    for (int m = 0; m < METAS; m++) {
        out->argv[out->argc] = r->meta[m];
        out->lens[out->argc++] = strlen(r->meta[m]);
    }
    out->nkeys = METAS;
    out->prefix = r->addr.prefix;
    out->prefix_len = prefix;
    return AXSTM_OK;
}

/* Adds the hash name of key (len bytes) to KEYS. */
static void args_key(struct args *a, const char *key, size_t len)
{
    char *p = a->names;
    memcpy(p, a->prefix, a->prefix_len);
    memcpy(p + a->prefix_len, "k:", 2);
    memcpy(p + a->prefix_len + 2, key, len);
    a->argv[a->argc] = p;
    a->lens[a->argc++] = a->prefix_len + 2 + len;
    a->names += a->prefix_len + 2 + len;
    a->nkeys++;
}

/* The arguments of a script over the keys of values[0..n): their hash
 * names, then room for `per_key` words per key and `extra` more. */
static int args_make(struct axstm__redis *r, axstm_value *const *values, size_t n, size_t per_key,
                     size_t extra, struct args *out)
{
    size_t names = 0;
    for (size_t i = 0; i < n; i++)
        names += values[i]->keylen;
    if (n > SIZE_MAX / 8)
        return AXSTM_E2BIG;
    int rc = args_alloc(r, n, names, n + n * per_key + extra, out);
    for (size_t i = 0; i < n && rc == AXSTM_OK; i++)
        args_key(out, values[i]->key, values[i]->keylen);
    return rc;
}

static void args_push(struct args *a, const char *word, size_t len)
{
    a->argv[a->argc] = word;
    a->lens[a->argc++] = len;
}

static void args_free(struct args *a)
{
    axstm__free((void *)a->argv);
}

/* A decimal number the server sent, as a string or an integer. */
static bool parse_u64(const redisReply *e, uint64_t *out)
{
    if (e->type == REDIS_REPLY_INTEGER) {
        if (e->integer < 0)
            return false;
        *out = (uint64_t)e->integer;
        return true;
    }
    if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < e->len; i++) {
        unsigned d = (unsigned)(e->str[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* ------------------------------------------------------------------ */
/* Checkout, commit                                                   */
/* ------------------------------------------------------------------ */

/* Reads the checkout script's answer for n keys into the values, all or
 * nothing; absent keys (only when not creating) get present[i] false. */
static int adopt_answer(struct axstm__rcache *cache, const redisReply *reply,
                        axstm_value *const *values, size_t n, bool *present)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != n)
        return AXSTM_EIO;
    struct axstm__val small[8];
    struct axstm__val *vals = n <= 8 ? small : axstm__calloc(n, sizeof *vals);
    if (vals == NULL)
        return AXSTM_ENOMEM;
    uint64_t version, born;
    int rc = AXSTM_OK;
    size_t made = 0;
    for (size_t i = 0; i < n && rc == AXSTM_OK; i++, made++) {
        const redisReply *k = reply->element[i];
        vals[i] = (struct axstm__val){0, 0};
        if (k->type != REDIS_REPLY_ARRAY || (k->elements != 3 && k->elements != 0)) {
            rc = AXSTM_EIO;
        } else if (k->elements == 3) {
            const redisReply *d = k->element[2];
            if (!parse_u64(k->element[0], &version) || !parse_u64(k->element[1], &born))
                rc = AXSTM_EIO;
            else if (d->type == REDIS_REPLY_STRING)
                rc = d->len > AXSTM_VALUE_MAX ? AXSTM_EIO
                                              : axstm__val_make(&vals[i], d->str, d->len);
            else if (d->type != REDIS_REPLY_NIL)
                rc = AXSTM_EIO;
        }
    }
    if (rc == AXSTM_OK) {
        for (size_t i = 0; i < n; i++) {
            const redisReply *k = reply->element[i];
            present[i] = k->elements == 3;
            if (!present[i])
                continue;
            parse_u64(k->element[0], &version);
            parse_u64(k->element[1], &born);
            axstm__val_release(&values[i]->item.val);
            values[i]->item.val = vals[i];
            values[i]->item.version = version;
            values[i]->item.seen = born;
            axstm__rcache_put(cache, values[i]->key, values[i]->keylen, version, born, &vals[i]);
        }
    } else {
        for (size_t i = 0; i < made; i++)
            axstm__val_release(&vals[i]);
    }
    if (vals != small)
        axstm__free(vals);
    return rc;
}

static int checkout(struct axstm__redis *r, axstm_value *const *values, size_t n, bool create,
                    bool *present)
{
    struct args a;
    int rc = args_make(r, values, n, 1, 1, &a);
    if (rc != AXSTM_OK)
        return rc;
    args_push(&a, create ? "1" : "0", 1);
    for (size_t i = 0; i < n; i++)
        args_push(&a, values[i]->key, values[i]->keylen);
    redisReply *reply = NULL;
    rc = run_script(r, SCRIPT_CHECKOUT, a.argc, a.argv, a.lens, a.nkeys, &reply);
    if (rc == AXSTM_OK)
        rc = adopt_answer(r->cache, reply, values, n, present);
    freeReplyObject(reply);
    args_free(&a);
    return rc;
}

int axstm__redis_checkout(struct axstm__redis *r, axstm_value *const *values, size_t n)
{
    bool small[8];
    bool *present = n <= 8 ? small : axstm__malloc(n * sizeof *present);
    if (present == NULL)
        return AXSTM_ENOMEM;
    int rc = checkout(r, values, n, true, present);
    if (present != small)
        axstm__free(present);
    return rc;
}

/* Reads the numbers of a commit's answer ("1,stamp,..." or "0"):
 * *status, then up to max more into out[]; *count gets how many. */
static bool parse_answer(const char *answer, uint64_t *status, uint64_t *out, size_t max,
                         size_t *count)
{
    const char *p = answer;
    size_t k = 0;
    for (size_t field = 0;; field++) {
        uint64_t v = 0;
        const char *start = p;
        while (*p >= '0' && *p <= '9') {
            unsigned d = (unsigned)(*p - '0');
            if (v > (UINT64_MAX - d) / 10)
                return false;
            v = v * 10 + d;
            p++;
        }
        if (p == start)
            return false;
        if (field == 0)
            *status = v;
        else if (k < max)
            out[k++] = v;
        else
            return false;
        if (*p == '\0')
            break;
        if (*p++ != ',')
            return false;
    }
    *count = k;
    return true;
}

/* What a commit does to a key, as the commit scripts take it: "d"
 * (delete), "n" (no value) or "s" and the bytes. */
static void args_push_write(struct args *a, const struct axstm__val *v)
{
    size_t len;
    const void *data = axstm__val_data(v, &len);
    if (v->meta & AXSTM__VAL_DELETE) {
        args_push(a, "d", 1);
    } else if (data == NULL) {
        args_push(a, "n", 1);
    } else {
        args_push(a, "s", 1);
        args_push(a, len != 0 ? data : "", len);
    }
}

/* The first two words of a commit script's arguments: its name on the
 * connection, which run_commit fills. */
static void args_push_commit_name(struct args *a)
{
    args_push(a, "", 0);
    args_push(a, "", 0);
}

int axstm__redis_commit(struct axstm__redis *r, axstm_value *const *values, size_t n)
{
    struct args a;
    int rc = args_make(r, values, n, 6, 3, &a);
    if (rc != AXSTM_OK)
        return rc;
    /* Per key three decimal words: the version checked out, the next one
     * and the incarnation. */
    char *numbers = axstm__malloc(n * 3 * 21 + 1);
    char answer[64]; /* "1,stamp", "0", "busy" or "fenced" */
    if (numbers == NULL) {
        args_free(&a);
        return AXSTM_ENOMEM;
    }
    args_push_commit_name(&a);
    char *p = numbers;
    for (size_t i = 0; i < n; i++) {
        const struct axstm__item *it = &values[i]->item;
        const unsigned long long words[3] = {it->version, it->version + 1, it->seen};
        args_push(&a, values[i]->key, values[i]->keylen);
        for (int w = 0; w < 3; w++) {
            int len = snprintf(p, 21, "%llu", words[w]);
            args_push(&a, p, (size_t)len);
            p += len + 1;
        }
        args_push_write(&a, &it->val);
    }
    args_push(&a, r->channel, strlen(r->channel));

    rc = run_commit(r, SCRIPT_COMMIT, a.argc, a.argv, a.lens, a.nkeys, answer, sizeof answer);
    if (rc == AXSTM_OK) {
        uint64_t status, stamp;
        size_t count;
        if (strcmp(answer, "busy") == 0)
            rc = AXSTM_BUSY_RETRY; /* held for a transaction that kept losing */
        else if (!parse_answer(answer, &status, &stamp, 1, &count) || status > 1)
            rc = AXSTM_EIO;
        else if (status == 0)
            rc = AXSTM_CONCURRENT_UPDATE;
    }
    /* Each key now has the next version, in the same incarnation. */
    for (size_t i = 0; i < n && rc == AXSTM_OK; i++) {
        values[i]->item.version++;
        if (values[i]->item.val.meta & AXSTM__VAL_DELETE)
            axstm__rcache_drop(r->cache, values[i]->key, values[i]->keylen);
        else
            axstm__rcache_put(r->cache, values[i]->key, values[i]->keylen, values[i]->item.version,
                              values[i]->item.seen, &values[i]->item.val);
    }
    for (size_t i = 0; i < n && rc != AXSTM_OK; i++)
        axstm__rcache_drop(r->cache, values[i]->key, values[i]->keylen); /* may have changed */
    /* Ours, so the subscriber leaves them to us (redis_listen.c); one in
     * doubt may have happened. */
    for (size_t i = 0; i < n && (rc == AXSTM_OK || rc == AXSTM_EINDOUBT); i++)
        axstm__listen_fire_keys(r, &values[i]->key, &values[i]->keylen, 1);
    axstm__free(numbers);
    args_free(&a);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Transactions                                                       */
/* ------------------------------------------------------------------ */

/* Room for the decimal words of n reads' versions and incarnations. */
#define READ_WORDS_BYTES(n) ((n)*2 * 21)

/* Pushes each read's version and incarnation ("-" "-" when it was read
 * absent), writing the numbers into *p. */
static void args_push_reads(struct args *a, const struct axstm__remote_read *reads, size_t n,
                            char *p)
{
    for (size_t i = 0; i < n; i++) {
        if (!reads[i].present) {
            args_push(a, "-", 1);
            args_push(a, "-", 1);
            continue;
        }
        int len = snprintf(p, 21, "%llu", (unsigned long long)reads[i].version);
        args_push(a, p, (size_t)len);
        p += len + 1;
        len = snprintf(p, 21, "%llu", (unsigned long long)reads[i].born);
        args_push(a, p, (size_t)len);
        p += len + 1;
    }
}

/* A READ that found reads changed answers their states now: the cache
 * learns them (each {place, version, incarnation, data}, or {place} when
 * the key is gone), so that the attempt run again has its first read
 * right.  Anything malformed is passed over: it only costs a round trip. */
static void learn_changed(struct axstm__rcache *cache, const redisReply *reply,
                          const struct axstm__remote_read *reads, size_t n)
{
    for (size_t e = 1; cache != NULL && e < reply->elements; e++) {
        const redisReply *k = reply->element[e];
        uint64_t place, version, born;
        if (k->type != REDIS_REPLY_ARRAY || (k->elements != 4 && k->elements != 1) ||
            !parse_u64(k->element[0], &place) || place == 0 || place > n)
            continue;
        const struct axstm__remote_read *at = &reads[place - 1];
        const redisReply *d = k->elements == 4 ? k->element[3] : NULL;
        struct axstm__val got = {0, 0};
        if (k->elements == 1 || !parse_u64(k->element[1], &version) ||
            !parse_u64(k->element[2], &born) ||
            (d->type != REDIS_REPLY_STRING && d->type != REDIS_REPLY_NIL) ||
            (d->type == REDIS_REPLY_STRING &&
             (d->len > AXSTM_VALUE_MAX || axstm__val_make(&got, d->str, d->len) != AXSTM_OK))) {
            axstm__rcache_drop(cache, at->key, at->keylen);
            continue;
        }
        axstm__rcache_put(cache, at->key, at->keylen, version, born, &got);
        axstm__val_release(&got);
    }
}

/* One target's state in a READ answer: {version, incarnation, data or
 * nil[, stamp or nil]}, or {} when the key is absent. */
static int adopt_target(const redisReply *k, struct axstm__remote_read *target,
                        struct axstm__val *val)
{
    if (k->type != REDIS_REPLY_ARRAY || (k->elements != 0 && k->elements != 3 && k->elements != 4))
        return AXSTM_EIO;
    if (k->elements == 0) {
        target->present = false;
        target->version = target->born = 0;
        *val = (struct axstm__val){0, 0};
        return AXSTM_OK;
    }
    uint64_t version, born;
    const redisReply *d = k->element[2];
    if (!parse_u64(k->element[0], &version) || !parse_u64(k->element[1], &born))
        return AXSTM_EIO;
    struct axstm__val got = {0, 0};
    if (d->type == REDIS_REPLY_STRING) {
        if (d->len > AXSTM_VALUE_MAX)
            return AXSTM_EIO;
        int rc = axstm__val_make(&got, d->str, d->len);
        if (rc != AXSTM_OK)
            return rc;
    } else if (d->type != REDIS_REPLY_NIL) {
        return AXSTM_EIO;
    }
    target->present = true;
    target->version = version;
    target->born = born;
    *val = got;
    return AXSTM_OK;
}

/* Reads the READ script's answer: the clock, and the targets, all or
 * nothing.  READS_NEEDED when the server needs the reads that were not
 * sent. */
#define READS_NEEDED 2
static int adopt_read(struct axstm__rcache *cache, const redisReply *reply,
                      const struct axstm__remote_read *reads, size_t n,
                      struct axstm__remote_read *targets, struct axstm__val *vals, size_t ntargets,
                      struct axstm__remote_clock *clock)
{
    uint64_t status, at;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0 ||
        !parse_u64(reply->element[0], &status) || status > 2)
        return AXSTM_EIO;
    if (status == 0) {
        learn_changed(cache, reply, reads, n);
        return AXSTM_CONCURRENT_UPDATE;
    }
    if (status == 2)
        return reply->elements == 1 ? READS_NEEDED : AXSTM_EIO;
    if (reply->elements != 2 + ntargets)
        return AXSTM_EIO;
    const redisReply *c = reply->element[1];
    struct axstm__remote_clock now = {false, 0};
    if (parse_u64(c, &at))
        now = (struct axstm__remote_clock){true, at};
    else if (c->type != REDIS_REPLY_STRING || c->len != 1 || c->str[0] != '-')
        return AXSTM_EIO;
    int rc = AXSTM_OK;
    size_t made = 0;
    for (; made < ntargets && rc == AXSTM_OK; made++)
        rc = adopt_target(reply->element[2 + made], &targets[made], &vals[made]);
    if (rc != AXSTM_OK) {
        for (size_t i = 0; i + 1 < made; i++)
            axstm__val_release(&vals[i]);
        return rc;
    }
    *clock = now;
    return AXSTM_OK;
}

/* One READ, sending reads[0..sent); clock as the script takes it. */
static int read_once(struct axstm__redis *r, const struct axstm__remote_read *reads, size_t sent,
                     const char *clock_word, struct axstm__remote_read *targets,
                     struct axstm__val *vals, size_t ntargets, struct axstm__remote_clock *clock)
{
    size_t names = 0;
    for (size_t i = 0; i < ntargets; i++)
        names += targets[i].keylen;
    for (size_t i = 0; i < sent; i++)
        names += reads[i].keylen;
    struct args a;
    size_t keys = sent + ntargets;
    if (keys < sent)
        return AXSTM_E2BIG;
    int rc = args_alloc(r, keys, names, keys + 2 + 2 * sent, &a);
    if (rc != AXSTM_OK)
        return rc;
    char *numbers = axstm__malloc(READ_WORDS_BYTES(sent) + 24);
    if (numbers == NULL) {
        args_free(&a);
        return AXSTM_ENOMEM;
    }
    for (size_t i = 0; i < sent; i++)
        args_key(&a, reads[i].key, reads[i].keylen);
    for (size_t i = 0; i < ntargets; i++)
        args_key(&a, targets[i].key, targets[i].keylen);
    int len = snprintf(numbers, 24, "%zu", sent);
    args_push(&a, numbers, (size_t)len);
    args_push(&a, clock_word, strlen(clock_word));
    args_push_reads(&a, reads, sent, numbers + len + 1);
    redisReply *reply = NULL;
    rc = run_script(r, SCRIPT_READ, a.argc, a.argv, a.lens, a.nkeys, &reply);
    if (rc == AXSTM_OK)
        rc = adopt_read(r->cache, reply, reads, sent, targets, vals, ntargets, clock);
    freeReplyObject(reply);
    axstm__free(numbers);
    args_free(&a);
    return rc;
}

/* Reads before which a read checks them all rather than keep a clock:
 * a few checks cost less than the clock's bookkeeping. */
#define READS_BEFORE_CLOCK 4

int axstm__redis_read(struct axstm__redis *r, const struct axstm__remote_read *reads, size_t n,
                      struct axstm__remote_read *targets, struct axstm__val *vals, size_t ntargets,
                      struct axstm__remote_clock *clock)
{
    char word[24];
    if (clock->known)
        snprintf(word, sizeof word, "%llu", (unsigned long long)clock->at);
    else
        snprintf(word, sizeof word, "%s", n + ntargets >= READS_BEFORE_CLOCK ? "-" : "?");
    /* With a clock, a read leaves the reads before out: the server asks
     * for them when a key changed since. */
    size_t sent = clock->known && ntargets != 0 ? 0 : n;
    int rc = read_once(r, reads, sent, word, targets, vals, ntargets, clock);
    if (rc == READS_NEEDED)
        rc = sent < n ? read_once(r, reads, n, word, targets, vals, ntargets, clock) : AXSTM_EIO;
    return rc;
}

int axstm__redis_txn_commit(struct axstm__redis *r, const char *token,
                            const struct axstm__remote_read *reads, size_t nreads,
                            const struct axstm__remote_write *writes, size_t nwrites)
{
    size_t names = 0;
    for (size_t i = 0; i < nreads; i++)
        names += reads[i].keylen;
    for (size_t i = 0; i < nwrites; i++)
        names += writes[i].keylen;
    struct args a;
    size_t keys = nreads + nwrites;
    int rc = args_alloc(r, keys, names, keys + 5 + 2 * nreads + 3 * nwrites, &a);
    if (rc != AXSTM_OK)
        return rc;
    char *numbers = axstm__malloc(READ_WORDS_BYTES(nreads) + 24);
    char answer[64]; /* "1,stamp", "0" or "fenced" */
    if (numbers == NULL) {
        args_free(&a);
        return AXSTM_ENOMEM;
    }
    for (size_t i = 0; i < nreads; i++)
        args_key(&a, reads[i].key, reads[i].keylen);
    for (size_t i = 0; i < nwrites; i++)
        args_key(&a, writes[i].key, writes[i].keylen);
    args_push_commit_name(&a);
    if (token == NULL)
        token = "-";
    args_push(&a, token, strlen(token));
    int len = snprintf(numbers, 24, "%zu", nreads);
    args_push(&a, numbers, (size_t)len);
    args_push_reads(&a, reads, nreads, numbers + len + 1);
    for (size_t i = 0; i < nwrites; i++) {
        args_push(&a, writes[i].key, writes[i].keylen);
        args_push_write(&a, &writes[i].val);
    }
    args_push(&a, r->channel, strlen(r->channel));

    rc = run_commit(r, SCRIPT_TXCOMMIT, a.argc, a.argv, a.lens, a.nkeys, answer, sizeof answer);
    if (rc == AXSTM_OK) {
        uint64_t status, stamp;
        size_t count;
        if (strcmp(answer, "busy") == 0)
            rc = AXSTM_BUSY_RETRY;
        else if (!parse_answer(answer, &status, &stamp, 1, &count) || status > 1)
            rc = AXSTM_EIO;
        else if (status == 0)
            rc = AXSTM_CONCURRENT_UPDATE;
    }
    for (size_t i = 0; i < nwrites && (rc == AXSTM_OK || rc == AXSTM_EINDOUBT); i++)
        axstm__listen_fire_keys(r, &writes[i].key, &writes[i].keylen, 1);
    axstm__free(numbers);
    args_free(&a);
    return rc;
}

/* HOLD or RELEASE over the keys names[0..n) for token; for HOLD, *since
 * is when the run first asked (0: never; set on return), and *held says
 * whether the hold was given. */
static int hold_script(struct axstm__redis *r, enum script which, const char *token,
                       const char *const names[], const size_t lens[], size_t n, uint64_t *since,
                       bool *held)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += lens[i];
    struct args a;
    int rc = args_alloc(r, n, bytes, 2 * n + 3, &a);
    if (rc != AXSTM_OK)
        return rc;
    for (size_t i = 0; i < n; i++)
        args_key(&a, names[i], lens[i]);
    char ttl[24], asked[24];
    args_push(&a, token, strlen(token));
    if (which == SCRIPT_HOLD) {
        args_push(&a, ttl, (size_t)snprintf(ttl, sizeof ttl, "%d", r->addr.timeout_ms));
        args_push(&a, asked,
                  (size_t)snprintf(asked, sizeof asked, "%llu", (unsigned long long)*since));
    }
    for (size_t i = 0; i < n; i++)
        args_push(&a, names[i], lens[i]);
    redisReply *reply = NULL;
    rc = run_script(r, which, a.argc, a.argv, a.lens, a.nkeys, &reply);
    if (which == SCRIPT_HOLD) {
        uint64_t got, when;
        if (rc == AXSTM_OK &&
            (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
             !parse_u64(reply->element[0], &got) || !parse_u64(reply->element[1], &when)))
            rc = AXSTM_EIO;
        if (rc == AXSTM_OK) {
            *held = got == 1;
            *since = when;
        }
    } else if (rc == AXSTM_OK && reply->type != REDIS_REPLY_INTEGER) {
        rc = AXSTM_EIO;
    }
    freeReplyObject(reply);
    args_free(&a);
    return rc;
}

int axstm__redis_hold(struct axstm__redis *r, const char *token, const char *const names[],
                      const size_t lens[], size_t n, uint64_t *since, bool *held)
{
    return hold_script(r, SCRIPT_HOLD, token, names, lens, n, since, held);
}

void axstm__redis_release(struct axstm__redis *r, const char *token, const char *const names[],
                          const size_t lens[], size_t n)
{
    hold_script(r, SCRIPT_RELEASE, token, names, lens, n, NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* Foreach, stats                                                     */
/* ------------------------------------------------------------------ */

/* One page of the key set: SSCAN from *cursor, reading the names into a
 * fresh array of values (their keys pointing into the reply). */
static int scan_page(struct axstm__redis *r, char *cursor, size_t cursor_cap, redisReply **reply)
{
    const char *argv[6] = {"SSCAN", r->meta[META_KEYS], cursor, "COUNT", "256", NULL};
    size_t lens[6] = {5, strlen(r->meta[META_KEYS]), strlen(cursor), 5, 3, 0};
    struct conn *c;
    bool reused, sent;
    int rc = take_connection(r, &c, &reused);
    if (rc != AXSTM_OK)
        return rc;
    rc = pooled_trip(r, &c, &reused, true, 5, argv, lens, reply, &sent);
    give_back(r, c);
    if (rc != AXSTM_OK)
        return rc;
    const redisReply *a = *reply;
    if (a->type == REDIS_REPLY_ERROR) {
        rc = code_of_error(a) == AXSTM_BUSY_RETRY ? AXSTM_BUSY_RETRY : AXSTM_EIO;
    } else if (a->type != REDIS_REPLY_ARRAY || a->elements != 2 ||
               a->element[0]->type != REDIS_REPLY_STRING || a->element[0]->len >= cursor_cap ||
               a->element[1]->type != REDIS_REPLY_ARRAY) {
        rc = AXSTM_EIO;
    } else {
        memcpy(cursor, a->element[0]->str, a->element[0]->len);
        cursor[a->element[0]->len] = '\0';
    }
    if (rc != AXSTM_OK) {
        freeReplyObject(*reply);
        *reply = NULL;
    }
    return rc;
}

int axstm__redis_foreach(struct axstm__redis *r, axstm_visit_fn visit, void *arg)
{
    char cursor[32] = "0";
    do {
        redisReply *page;
        int rc = scan_page(r, cursor, sizeof cursor, &page);
        if (rc != AXSTM_OK)
            return rc;
        const redisReply *names = page->element[1];
        size_t n = names->elements;
        axstm_value *values = n != 0 ? axstm__calloc(n, sizeof *values) : NULL;
        axstm_value **each = n != 0 ? axstm__malloc(n * sizeof *each) : NULL;
        bool *present = n != 0 ? axstm__malloc(n * sizeof *present) : NULL;
        if (n != 0 && (values == NULL || each == NULL || present == NULL))
            rc = AXSTM_ENOMEM;
        for (size_t i = 0; i < n && rc == AXSTM_OK; i++) {
            const redisReply *name = names->element[i];
            if (name->type != REDIS_REPLY_STRING || name->len == 0 || name->len > AXSTM_KEY_MAX ||
                memchr(name->str, '\0', name->len) != NULL)
                rc = AXSTM_EIO;
            values[i].key = name->str;
            values[i].keylen = name->len;
            each[i] = &values[i];
        }
        if (rc == AXSTM_OK && n != 0)
            rc = checkout(r, each, n, false, present);
        for (size_t i = 0; i < n && rc == AXSTM_OK; i++) {
            if (!present[i])
                continue; /* deleted since the scan saw it */
            size_t len = 0;
            const void *data = axstm__val_data(&values[i].item.val, &len);
            rc = visit(values[i].key, values[i].item.version, data, len, arg);
        }
        for (size_t i = 0; values != NULL && i < n; i++)
            axstm__val_release(&values[i].item.val);
        axstm__free(values);
        axstm__free(each);
        axstm__free(present);
        freeReplyObject(page);
        if (rc != AXSTM_OK)
            return rc;
    } while (strcmp(cursor, "0") != 0);
    return AXSTM_OK;
}

int axstm__redis_stats(struct axstm__redis *r, axstm_stats *out)
{
    struct args a;
    int rc = args_make(r, NULL, 0, 0, 0, &a);
    if (rc != AXSTM_OK)
        return rc;
    redisReply *reply = NULL;
    rc = run_script(r, SCRIPT_STATS, a.argc, a.argv, a.lens, a.nkeys, &reply);
    uint64_t f[4];
    if (rc == AXSTM_OK && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4))
        rc = AXSTM_EIO;
    for (size_t i = 0; i < 4 && rc == AXSTM_OK; i++)
        if (!parse_u64(reply->element[i], &f[i]))
            rc = AXSTM_EIO;
    if (rc == AXSTM_OK) {
        out->keys = f[0];
        out->commits = f[1];
        out->conflicts = f[2];
        out->bytes = f[3];
    }
    freeReplyObject(reply);
    args_free(&a);
    return rc;
}
