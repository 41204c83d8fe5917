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
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "axstm-internal.h"
#include "redis_scripts.h"

enum script { SCRIPT_CHECKOUT, SCRIPT_COMMIT, SCRIPT_STATS, SCRIPTS };

static const char *const script_text[SCRIPTS] = {AXSTM__LUA_CHECKOUT, AXSTM__LUA_COMMIT,
                                                 AXSTM__LUA_STATS};

/* The names every script takes first (redis_scripts.h). */
enum meta { META_BIRTHS, META_CLOCK, META_KEYS, META_STATS, METAS };
static const char *const meta_suffix[METAS] = {"births", "clock", "keys", "stats"};

/* What a script answers that is not a reply: the server forgot it. */
#define NO_SCRIPT 1

struct axstm__redis {
    struct axstm__address addr;
    char *meta[METAS];
    char *channel; /* where commits publish the names they changed */
    char sha[SCRIPTS][41];
    pthread_mutex_t lock; /* guards idle, nidle, idle_cap, pid */
    redisContext **idle;
    size_t nidle, idle_cap;
    pid_t pid; /* the process the idle connections belong to */
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
};

static void pipe_guard_begin(struct pipe_guard *g)
{
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

static int connect_one(struct axstm__redis *r, redisContext **out)
{
    const struct axstm__address *a = &r->addr;
    struct timeval tv = timeout_of(r);
    redisContext *c = a->kind == AXSTM__ADDRESS_REDIS_UNIX
                          ? redisConnectUnixWithTimeout(a->path, tv)
                          : redisConnectWithTimeout(a->host, a->port, tv);
    if (c == NULL)
        return AXSTM_ENOMEM;
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
        return rc;
    }
    *out = c;
    return AXSTM_OK;
}

/* An idle connection (*reused set), or a new one.  In the child of a fork
 * the idle connections are the parent's too (the same sockets): the child
 * closes its copies, sending nothing, and opens its own. */
static int take_connection(struct axstm__redis *r, redisContext **out, bool *reused)
{
    redisContext *c = NULL;
    pid_t me = getpid();
    pthread_mutex_lock(&r->lock);
    if (r->pid != me) {
        while (r->nidle > 0)
            redisFree(r->idle[--r->nidle]);
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
static void give_back(struct axstm__redis *r, redisContext *c)
{
    if (c->err == 0) {
        pthread_mutex_lock(&r->lock);
        if (r->pid != getpid()) {
            /* Taken before a fork, given back in the child: the parent's. */
            pthread_mutex_unlock(&r->lock);
            redisFree(c);
            return;
        }
        if (r->nidle == r->idle_cap) {
            size_t cap = r->idle_cap * 2 + 4;
            redisContext **grown = axstm__malloc(cap * sizeof *grown);
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
    redisFree(c);
}

/*
 * round_trip on a connection from the pool.  An idle connection may have
 * been closed by the server meanwhile (it restarted, or dropped idle
 * clients): when one fails, the call is made once more on a new
 * connection, provided the command did not leave whole or repeating it
 * changes nothing (repeat_ok).  *c may be replaced.
 */
static int pooled_trip(struct axstm__redis *r, redisContext **c, bool *reused, bool repeat_ok,
                       int argc, const char **argv, const size_t *lens, redisReply **out,
                       bool *sent)
{
    int rc = round_trip(*c, argc, argv, lens, out, sent);
    if (rc == AXSTM_OK || !*reused || (*sent && !repeat_ok))
        return rc;
    freeReplyObject(*out);
    *out = NULL;
    redisFree(*c);
    *reused = false;
    rc = connect_one(r, c);
    if (rc != AXSTM_OK) {
        *c = NULL;
        return rc;
    }
    return round_trip(*c, argc, argv, lens, out, sent);
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

/*
 * Runs a script: argv[0..2] are left for EVALSHA, the SHA1 and the number
 * of keys (the caller fills from argv[3]: the meta names, then its keys,
 * then its arguments).  *reply is owned by the caller on AXSTM_OK; an
 * error reply has already become its code.  A commit that lost its answer
 * is AXSTM_EINDOUBT.
 */
static int run_script(struct axstm__redis *r, enum script which, int argc, const char **argv,
                      size_t *lens, size_t nkeys, redisReply **reply)
{
    char sha[41], numkeys[24];
    int n = snprintf(numkeys, sizeof numkeys, "%zu", nkeys);
    redisContext *c;
    bool reused;
    int rc = take_connection(r, &c, &reused);
    if (rc != AXSTM_OK)
        return rc;
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
        bool sent;
        rc = pooled_trip(r, &c, &reused, which != SCRIPT_COMMIT, argc, argv, lens, reply, &sent);
        if (rc != AXSTM_OK) {
            if (sent && which == SCRIPT_COMMIT)
                rc = AXSTM_EINDOUBT;
            break;
        }
        if ((*reply)->type != REDIS_REPLY_ERROR)
            break;
        rc = code_of_error(*reply);
        freeReplyObject(*reply);
        *reply = NULL;
        if (rc != NO_SCRIPT)
            break;
        rc = load_script(r, c, which);
        if (rc != AXSTM_OK)
            break;
        rc = AXSTM_EIO; /* if the second attempt is NOSCRIPT again */
    }
    if (c != NULL)
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

    redisContext *c = NULL;
    if (rc == AXSTM_OK)
        rc = connect_one(r, &c);
    for (int s = 0; s < SCRIPTS && rc == AXSTM_OK; s++)
        rc = load_script(r, c, s);
    if (c != NULL)
        give_back(r, c);
    if (rc != AXSTM_OK) {
        axstm__redis_close(r);
        return rc;
    }
    *out = r;
    return AXSTM_OK;
}

void axstm__redis_close(struct axstm__redis *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->nidle; i++)
        redisFree(r->idle[i]);
    axstm__free(r->idle);
    for (int m = 0; m < METAS; m++)
        axstm__free(r->meta[m]);
    axstm__free(r->channel);
    axstm__address_free(&r->addr);
    pthread_mutex_destroy(&r->lock);
    axstm__free(r);
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
};

static int args_make(struct axstm__redis *r, const axstm_value *values, size_t n, size_t per_key,
                     size_t extra, struct args *out)
{
    size_t prefix = strlen(r->addr.prefix);
    size_t words = 3 + METAS + n + n * per_key + extra;
    size_t names = 0;
    for (size_t i = 0; i < n; i++)
        names += prefix + 2 + values[i].keylen;
    if (words > INT32_MAX || n > SIZE_MAX / 4)
        return AXSTM_E2BIG;
    void *block = axstm__malloc(words * (sizeof(char *) + sizeof(size_t)) + names);
    if (block == NULL)
        return AXSTM_ENOMEM;
    out->argv = block;
    out->lens = (size_t *)(out->argv + words);
    char *p = (char *)(out->lens + words);
    out->argc = 3;
    for (int m = 0; m < METAS; m++) {
        out->argv[out->argc] = r->meta[m];
        out->lens[out->argc++] = strlen(r->meta[m]);
    }
    for (size_t i = 0; i < n; i++) {
        out->argv[out->argc] = p;
        out->lens[out->argc++] = prefix + 2 + values[i].keylen;
        memcpy(p, r->addr.prefix, prefix);
        memcpy(p + prefix, "k:", 2);
        memcpy(p + prefix + 2, values[i].key, values[i].keylen);
        p += prefix + 2 + values[i].keylen;
    }
    out->nkeys = METAS + n;
    return AXSTM_OK;
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
static int adopt_answer(const redisReply *reply, axstm_value *values, size_t n, bool *present)
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
            axstm__val_release(&values[i].item.val);
            values[i].item.val = vals[i];
            values[i].item.version = version;
            values[i].item.born = born;
        }
    } else {
        for (size_t i = 0; i < made; i++)
            axstm__val_release(&vals[i]);
    }
    if (vals != small)
        axstm__free(vals);
    return rc;
}

static int checkout(struct axstm__redis *r, axstm_value *values, size_t n, bool create,
                    bool *present)
{
    struct args a;
    int rc = args_make(r, values, n, 1, 1, &a);
    if (rc != AXSTM_OK)
        return rc;
    args_push(&a, create ? "1" : "0", 1);
    for (size_t i = 0; i < n; i++)
        args_push(&a, values[i].key, values[i].keylen);
    redisReply *reply = NULL;
    rc = run_script(r, SCRIPT_CHECKOUT, a.argc, a.argv, a.lens, a.nkeys, &reply);
    if (rc == AXSTM_OK)
        rc = adopt_answer(reply, values, n, present);
    freeReplyObject(reply);
    args_free(&a);
    return rc;
}

int axstm__redis_checkout(struct axstm__redis *r, axstm_value *values, size_t n)
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

int axstm__redis_commit(struct axstm__redis *r, axstm_value *values, size_t n)
{
    struct args a;
    int rc = args_make(r, values, n, 5, 2, &a);
    if (rc != AXSTM_OK)
        return rc;
    /* Versions and incarnations as decimal words, in one block. */
    char *numbers = axstm__malloc(n * 2 * 21 + 1);
    if (numbers == NULL) {
        args_free(&a);
        return AXSTM_ENOMEM;
    }
    args_push(&a, "-", 1);
    char *p = numbers;
    for (size_t i = 0; i < n; i++) {
        const struct axstm__item *it = &values[i].item;
        args_push(&a, values[i].key, values[i].keylen);
        int len = snprintf(p, 21, "%llu", (unsigned long long)it->version);
        args_push(&a, p, (size_t)len);
        p += len + 1;
        len = snprintf(p, 21, "%llu", (unsigned long long)it->born);
        args_push(&a, p, (size_t)len);
        p += len + 1;
        size_t dlen;
        const void *data = axstm__val_data(&it->val, &dlen);
        if (it->val.meta & AXSTM__VAL_DELETE) {
            args_push(&a, "d", 1);
        } else if (data == NULL) {
            args_push(&a, "n", 1);
        } else {
            args_push(&a, "s", 1);
            args_push(&a, dlen != 0 ? data : "", dlen);
        }
    }
    args_push(&a, r->channel, strlen(r->channel));

    redisReply *reply = NULL;
    rc = run_script(r, SCRIPT_COMMIT, a.argc, a.argv, a.lens, a.nkeys, &reply);
    if (rc == AXSTM_OK) {
        uint64_t status;
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0 ||
            !parse_u64(reply->element[0], &status))
            rc = AXSTM_EIO;
        else if (status == 0)
            rc = AXSTM_CONCURRENT_UPDATE;
        else if (reply->elements != 2 + 2 * n)
            rc = AXSTM_EIO;
    }
    if (rc == AXSTM_OK) {
        /* Committed: an answer we cannot read leaves the commit done but
         * the handles not knowing their versions, which is doubt. */
        uint64_t version[2];
        for (size_t i = 0; i < n && rc == AXSTM_OK; i++)
            if (!parse_u64(reply->element[2 + 2 * i], &version[0]) ||
                !parse_u64(reply->element[3 + 2 * i], &version[1]))
                rc = AXSTM_EINDOUBT;
        for (size_t i = 0; i < n && rc == AXSTM_OK; i++) {
            parse_u64(reply->element[2 + 2 * i], &values[i].item.version);
            parse_u64(reply->element[3 + 2 * i], &values[i].item.born);
        }
    }
    freeReplyObject(reply);
    axstm__free(numbers);
    args_free(&a);
    return rc;
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
    redisContext *c;
    bool reused, sent;
    int rc = take_connection(r, &c, &reused);
    if (rc != AXSTM_OK)
        return rc;
    rc = pooled_trip(r, &c, &reused, true, 5, argv, lens, reply, &sent);
    if (c != NULL)
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
        bool *present = n != 0 ? axstm__malloc(n * sizeof *present) : NULL;
        if (n != 0 && (values == NULL || present == NULL))
            rc = AXSTM_ENOMEM;
        for (size_t i = 0; i < n && rc == AXSTM_OK; i++) {
            const redisReply *name = names->element[i];
            if (name->type != REDIS_REPLY_STRING || name->len == 0 || name->len > AXSTM_KEY_MAX ||
                memchr(name->str, '\0', name->len) != NULL)
                rc = AXSTM_EIO;
            values[i].key = name->str;
            values[i].keylen = name->len;
        }
        if (rc == AXSTM_OK && n != 0)
            rc = checkout(r, values, n, false, present);
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
