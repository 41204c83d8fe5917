/* SPDX-License-Identifier: MIT */
/*
 * redis_listen.c -- how a process learns of other processes' commits to a
 * store kept in Redis: one subscriber thread per store, on a connection of
 * its own subscribed to the store's change channel, where every commit
 * publishes the names of the keys it wrote (redis_scripts.h).
 *
 * Watches and waiting transactions register listeners, each a copy of the
 * key names it cares about; the subscriber fires a listener when a name of
 * it arrives.  Pub/sub loses what is published while a subscriber is away,
 * so each time the subscription is made (again), every listener fires:
 * whoever waits looks again and loses nothing.  A listener added before
 * the subscription stands, and the caller then re-reading its keys, cover
 * the moment in between: axstm__listen_add returns only once subscribed.
 *
 * The subscriber is started by the first listener and stopped by
 * axstm__listen_stop (the store being freed), which shuts its socket down
 * under the lock so that its blocking read returns.  In the child of a
 * fork it does not exist: the first listener there starts one of its own,
 * and listeners the parent had are forgotten (they cannot fire there).
 */
#include "redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "axstm-internal.h"
#include "redis_cache.h"

struct axstm__listener {
    struct axstm__listener *prev, *next;
    bool linked;
    bool fired; /* under the lock */
    int fd;     /* an eventfd written when it fires, or -1 */
    size_t n;
    size_t *lens;
    char **keys;
};

struct axstm__listen {
    pthread_mutex_t lock;   /* guards everything below */
    pthread_cond_t changed; /* a listener fired, or the subscription moved */
    struct axstm__listener head;
    pid_t pid;         /* the process the subscriber runs in */
    bool started;      /* a subscriber thread exists */
    bool stopping;     /* it must end */
    bool subscribed;   /* it holds a subscription now */
    uint64_t failures; /* connections that failed since the last success */
    redisContext *ctx; /* its connection, while it has one */
    pthread_t thread;
};

int axstm__listener_new(const char *const keys[], const size_t lens[], size_t n, int fd,
                        struct axstm__listener **out)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += lens[i] + 1;
    struct axstm__listener *l =
        axstm__malloc(sizeof *l + n * (sizeof *l->keys + sizeof *l->lens) + bytes);
    if (l == NULL)
        return AXSTM_ENOMEM;
    l->prev = l->next = NULL;
    l->linked = l->fired = false;
    l->fd = fd;
    l->n = n;
    l->keys = (char **)(l + 1);
    l->lens = (size_t *)(l->keys + n);
    char *p = (char *)(l->lens + n);
    for (size_t i = 0; i < n; i++) {
        l->keys[i] = p;
        l->lens[i] = lens[i];
        memcpy(p, keys[i], lens[i]);
        p[lens[i]] = '\0';
        p += lens[i] + 1;
    }
    *out = l;
    return AXSTM_OK;
}

void axstm__listener_free(struct axstm__listener *l)
{
    axstm__free(l);
}

int axstm__listen_create(struct axstm__listen **out)
{
    struct axstm__listen *t = axstm__calloc(1, sizeof *t);
    if (t == NULL)
        return AXSTM_ENOMEM;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int failed = pthread_mutex_init(&t->lock, NULL);
    if (!failed && pthread_cond_init(&t->changed, &attr) != 0) {
        pthread_mutex_destroy(&t->lock);
        failed = 1;
    }
    pthread_condattr_destroy(&attr);
    if (failed) {
        axstm__free(t);
        return AXSTM_ENOMEM;
    }
    t->head.prev = t->head.next = &t->head;
    t->pid = getpid();
    *out = t;
    return AXSTM_OK;
}

/* Fires l (locked). */
static void fire(struct axstm__listen *t, struct axstm__listener *l)
{
    if (!l->fired && l->fd >= 0) {
        uint64_t one = 1;
        int cancel_state = axstm__cancel_off();
        while (write(l->fd, &one, sizeof one) < 0 && errno == EINTR)
            ;
        axstm__cancel_restore(cancel_state);
    }
    l->fired = true;
    pthread_cond_broadcast(&t->changed);
}

static void fire_all(struct axstm__listen *t)
{
    for (struct axstm__listener *l = t->head.next; l != &t->head; l = l->next)
        fire(t, l);
    pthread_cond_broadcast(&t->changed);
}

static void fire_name(struct axstm__listen *t, const char *name, size_t len)
{
    for (struct axstm__listener *l = t->head.next; l != &t->head; l = l->next)
        for (size_t i = 0; i < l->n; i++)
            if (l->lens[i] == len && memcmp(l->keys[i], name, len) == 0) {
                fire(t, l);
                break;
            }
}

/* A pause before connecting again after `failures` failures in a row:
 * from 5 ms up to half a second.  Ends early when the store stops. */
static void pause_before_retry(struct axstm__listen *t, uint64_t failures)
{
    long ms = failures < 7 ? 5L << failures : 500;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!t->stopping && pthread_cond_timedwait(&t->changed, &t->lock, &until) == 0)
        ;
}

/* Fires the listeners of the names a pushed message carries: the names a
 * commit wrote, after the committing connection's name, separated by NUL
 * bytes.  Our own commits fired their listeners before they returned
 * (axstm__listen_fire_keys): firing them again here would wake a watch
 * that was re-armed meanwhile for nothing, so messages from connections
 * of ours (named after the store's client name) are passed over.  Another
 * process's commit also makes the cache forget the names (while a
 * subscriber runs; the server checks every cached read in any case).
 * Locked. */
static void fire_message(struct axstm__redis *r, struct axstm__listen *t, const redisReply *m)
{
    const char *client = axstm__redis_client(r);
    if (m->type != REDIS_REPLY_ARRAY || m->elements != 3 ||
        m->element[0]->type != REDIS_REPLY_STRING || strcmp(m->element[0]->str, "message") != 0 ||
        m->element[2]->type != REDIS_REPLY_STRING)
        return;
    const char *p = m->element[2]->str, *end = p + m->element[2]->len;
    const char *name_end = memchr(p, '\0', (size_t)(end - p));
    if (name_end == NULL)
        return;
    size_t ours = strlen(client);
    if ((size_t)(name_end - p) > ours && memcmp(p, client, ours) == 0 && p[ours] == '.')
        return;
    for (p = name_end + 1; p <= end; p++) {
        const char *next = memchr(p, '\0', (size_t)(end - p));
        if (next == NULL)
            next = end;
        fire_name(t, p, (size_t)(next - p));
        axstm__rcache_drop(axstm__redis_cache(r), p, (size_t)(next - p));
        p = next;
    }
}

struct subscriber_arg {
    struct axstm__redis *r;
    struct axstm__listen *t;
};

static void *subscriber(void *arg)
{
    struct axstm__redis *r = ((struct subscriber_arg *)arg)->r;
    struct axstm__listen *t = ((struct subscriber_arg *)arg)->t;
    axstm__free(arg);
    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        pthread_mutex_unlock(&t->lock);
        redisContext *c = NULL;
        int rc = axstm__redis_subscribe(r, &c);
        pthread_mutex_lock(&t->lock);
        if (rc != AXSTM_OK) {
            t->failures++;
            pthread_cond_broadcast(&t->changed); /* waiters for it give up */
            pause_before_retry(t, t->failures);
            continue;
        }
        t->ctx = c;
        if (t->stopping)
            break;
        t->subscribed = true;
        t->failures = 0;
        fire_all(t);
        for (;;) {
            pthread_mutex_unlock(&t->lock);
            void *reply = NULL;
            bool ok = redisGetReply(c, &reply) == REDIS_OK && reply != NULL;
            pthread_mutex_lock(&t->lock);
            if (!ok || t->stopping) {
                freeReplyObject(reply);
                break;
            }
            fire_message(r, t, reply);
            freeReplyObject(reply);
        }
        t->subscribed = false;
        t->ctx = NULL;
        redisFree(c);
        c = NULL;
    }
    if (t->ctx != NULL) {
        redisFree(t->ctx);
        t->ctx = NULL;
    }
    t->subscribed = false;
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* Starts the subscriber unless it runs (locked).  In a forked child the
 * parent's does not: everything about it is forgotten first. */
static int start(struct axstm__redis *r, struct axstm__listen *t)
{
    if (t->pid != getpid()) {
        t->pid = getpid();
        t->started = t->subscribed = false;
        t->ctx = NULL;
        t->failures = 0;
        for (struct axstm__listener *l = t->head.next; l != &t->head; l = l->next)
            l->linked = false;
        t->head.prev = t->head.next = &t->head;
    }
    if (t->started)
        return AXSTM_OK;
    struct subscriber_arg *arg = axstm__malloc(sizeof *arg);
    if (arg == NULL)
        return AXSTM_ENOMEM;
    arg->r = r;
    arg->t = t;
    /* The subscriber must not take signals meant for the program. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int failed = pthread_create(&t->thread, NULL, subscriber, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (failed) {
        axstm__free(arg);
        return AXSTM_ENOMEM;
    }
    t->started = true;
    return AXSTM_OK;
}

/* The deadline of one timeout from now. */
static struct timespec timeout_from_now(int ms)
{
    struct timespec d;
    clock_gettime(CLOCK_MONOTONIC, &d);
    d.tv_sec += ms / 1000;
    d.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (d.tv_nsec >= 1000000000L) {
        d.tv_sec++;
        d.tv_nsec -= 1000000000L;
    }
    return d;
}

static void unlink_locked(struct axstm__listener *l)
{
    if (l->linked) {
        l->prev->next = l->next;
        l->next->prev = l->prev;
        l->linked = false;
    }
}

int axstm__listen_add(struct axstm__redis *r, struct axstm__listener *l)
{
    struct axstm__listen *t = axstm__redis_listen_of(r);
    struct timespec deadline = timeout_from_now(axstm__redis_timeout_ms(r));
    int cancel_state = axstm__cancel_off();
    pthread_mutex_lock(&t->lock);
    int rc = start(r, t);
    if (rc == AXSTM_OK) {
        l->fired = false;
        l->prev = t->head.prev;
        l->next = &t->head;
        t->head.prev->next = l;
        t->head.prev = l;
        l->linked = true;
        /* Until subscribed, or the timeout: a failure to connect wakes us,
         * but the subscriber keeps trying, so only the clock ends this. */
        bool waited = !t->subscribed;
        while (!t->subscribed && rc == AXSTM_OK)
            if (pthread_cond_timedwait(&t->changed, &t->lock, &deadline) == ETIMEDOUT)
                rc = t->subscribed ? AXSTM_OK : AXSTM_EIO;
        if (rc != AXSTM_OK) {
            unlink_locked(l);
        } else if (waited) {
            /* Fired by the subscription we waited for, which is not news
             * to a listener that was not there before: the caller looks
             * at its keys after this returns. */
            uint64_t count;
            while (l->fd >= 0 && read(l->fd, &count, sizeof count) < 0 && errno == EINTR)
                ;
            l->fired = false;
        }
    }
    pthread_mutex_unlock(&t->lock);
    axstm__cancel_restore(cancel_state);
    return rc;
}

void axstm__listen_remove(struct axstm__redis *r, struct axstm__listener *l)
{
    struct axstm__listen *t = axstm__redis_listen_of(r);
    pthread_mutex_lock(&t->lock);
    if (t->pid == getpid())
        unlink_locked(l);
    pthread_mutex_unlock(&t->lock);
}

void axstm__listen_fire(struct axstm__redis *r, struct axstm__listener *l)
{
    struct axstm__listen *t = axstm__redis_listen_of(r);
    pthread_mutex_lock(&t->lock);
    fire(t, l);
    pthread_mutex_unlock(&t->lock);
}

void axstm__listen_fire_keys(struct axstm__redis *r, const char *const keys[], const size_t lens[],
                             size_t n)
{
    struct axstm__listen *t = axstm__redis_listen_of(r);
    int cancel_state = axstm__cancel_off(); /* fire() may write */
    pthread_mutex_lock(&t->lock);
    if (t->pid == getpid())
        for (size_t i = 0; i < n; i++)
            fire_name(t, keys[i], lens[i]);
    pthread_mutex_unlock(&t->lock);
    axstm__cancel_restore(cancel_state);
}

void axstm__listen_rearm(struct axstm__redis *r, struct axstm__listener *l)
{
    struct axstm__listen *t = axstm__redis_listen_of(r);
    uint64_t count;
    int cancel_state = axstm__cancel_off();
    /* Under the lock: a fire writes only to a listener not fired yet, so
     * draining and clearing must not let one in between. */
    pthread_mutex_lock(&t->lock);
    while (l->fd >= 0 && read(l->fd, &count, sizeof count) < 0 && errno == EINTR)
        ;
    l->fired = false;
    pthread_mutex_unlock(&t->lock);
    axstm__cancel_restore(cancel_state);
}

static void unlock_listen(void *arg)
{
    pthread_mutex_unlock(arg);
}

bool axstm__listen_wait(struct axstm__redis *r, struct axstm__listener *l,
                        const struct timespec *deadline)
{
    struct axstm__listen *t = axstm__redis_listen_of(r);
    bool timed_out = false, fired;
    pthread_mutex_lock(&t->lock);
    /* A cancellation point (axstm_atomically's wait): the lock is let go
     * of, and the caller's own handler takes the listener out. */
    pthread_cleanup_push(unlock_listen, &t->lock);
    while (!l->fired && !timed_out) {
        if (deadline == NULL)
            pthread_cond_wait(&t->changed, &t->lock);
        else
            timed_out = pthread_cond_timedwait(&t->changed, &t->lock, deadline) == ETIMEDOUT;
    }
    fired = l->fired;
    pthread_cleanup_pop(1);
    return fired;
}

void axstm__listen_stop(struct axstm__listen *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    bool ours = t->started && t->pid == getpid();
    t->stopping = true;
    if (t->ctx != NULL && ours)
        shutdown(t->ctx->fd, SHUT_RDWR); /* its read returns */
    pthread_cond_broadcast(&t->changed);
    pthread_mutex_unlock(&t->lock);
    if (ours)
        pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->changed);
    pthread_mutex_destroy(&t->lock);
    axstm__free(t);
}
