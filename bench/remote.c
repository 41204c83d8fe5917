/* SPDX-License-Identifier: MIT */
/*
 * remote.c -- axstm on a store kept in Redis, against what a user writes by
 * hand with hiredis instead.
 *
 *   bench/remote [--quick] [--runs=N] [--seconds=S] [--threads=1,2,8] [ADDRESS]
 *
 * ADDRESS is redis+unix:///path/to/socket or redis://127.0.0.1[:port][/db]
 * (options as axstm_store_open takes them; a prefix given there is put in
 * front of the bench's own).  Only a unix socket or the loopback interface
 * is ever a target: the figures are about this machine.  Without an
 * address the program runs a redis-server of its own (--port 0, a unix
 * socket in a fresh directory under /tmp, no persistence) and kills it by
 * its pid at the end.  Without redis-server on PATH it says so and exits 0.
 *
 * (1) Bank transfers: move 1 unit between two random accounts of 1024 and
 *     of 16, on 1, 2 and 8 connections (one thread each), rows interleaved
 *     within each run:
 *       (a)  the loop a user writes with hiredis, one connection per
 *            thread: WATCH both keys, GET both, MULTI, SET both, EXEC,
 *            again from WATCH when EXEC answers nil (7 round trips);
 *       (a2) the same loop pipelined as a careful user writes it: WATCH+
 *            GET+GET in one round trip, MULTI+SET+SET+EXEC in another;
 *       (b)  axstm_using of the two keys, get_i64/set_i64, collection
 *            commit, refresh and redo on AXSTM_CONCURRENT_UPDATE, call
 *            again on AXSTM_BUSY_RETRY (bench/bank.h's transfer), once with
 *            one store shared by the threads (what a user does: a store is
 *            thread-safe and keeps a pool of connections) and once with a
 *            store per thread;
 *       (d)  a handle per account kept by each connection's thread on
 *            the shared store (made, or refreshed, before each run,
 *            outside the timed and counted window), the two changed and
 *            committed together with axstm_values_commit (bench/bank.h's
 *            kept transfer): one round trip while the handles are
 *            current, and a refresh of each on a conflict;
 *       (c)  axstm_atomically with the same body as bench/bank, on the
 *            shared store: "n/a" while the library answers AXSTM_EINVAL;
 *       (c2) the same on a store opened with first_read=cache (its first
 *            read from what the process knows: two round trips, not
 *            three; the other rows' commits make some of what it knows
 *            old, as other processes' would);
 *       (c3) the same body on the shared store, after it names both
 *            accounts with axstm_txn_prefetch: two round trips, every
 *            read as of a moment inside the call.
 *     Per row: transfers/s (median of the runs), its ratio to (a) and to
 *     (a2) (medians of the per-run ratios), conflicts/s, and round trips
 *     per committed transfer (rt/xfer, what the target is about), per try
 *     (rt/try: a conflict costs one more try, so this is the cost of the
 *     protocol itself) and commands per committed transfer, all three
 *     counted by the server: INFO stats on a connection
 *     of its own before and after each run, less what the two INFO calls
 *     add (measured at the start).  A round trip is one request the server
 *     read (total_reads_processed: pipelined commands sent together are one
 *     read); commands are total_commands_processed, which on Redis 7.0 also
 *     counts each command a script runs, so it measures the server's work,
 *     not the network.  Both count every client of the server: on a server
 *     of one's own they are exact.  The total of all balances is audited
 *     after every run (one snapshot of every account): exit 1 if it moved.
 * (2) The round-trip floor: PING on one connection, each timed; median
 *     latency and PINGs per second.
 * (3) Cross-process wake-up: a forked child watches a key (axstm_watch_new
 *     on a store of its own, opened from the same address) and sleeps in
 *     poll(); the parent commits the key and times from just before the
 *     commit until the child's poll() returns (the child reads the same
 *     monotonic clock and sends the time back on a pipe, which is not
 *     timed), so the commit's own round trip is inside the figure; median
 *     and p90 of 200 rounds.
 *     The same with a plain SUBSCRIBE in the child and PUBLISH in the
 *     parent.  Before each round the parent waits until the child is back
 *     in poll() and a little longer, so every round is a real wake-up.
 *
 * Timings are reported, never asserted; the targets of issue 12 are
 * printed with PASS or FAIL beside each row they concern (information
 * only).  Exit status: 0, or 1 when a call fails or an audit finds the
 * total changed, 2 on a bad argument.
 */
#include "bank.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define MAX_CONNS 64           /* threads of one row, each its own connection */
#define WAKE_ROUNDS 200        /* cross-process wake-ups timed per row */
#define WAKE_WARMUP 10         /* ... after this many that are not counted */
#define WAKE_SETTLE_NS 50000   /* how long the child is left to fall asleep */
#define WATCHDOG_MS 10000      /* a child that does not answer is a failure */
#define TIMEOUT_MS 5000        /* the longest any call waits for the server */
#define TARGET_RATIO 1.0       /* issue 12: axstm >= 1.0x WATCH/MULTI/EXEC */
#define TARGET_ROUND_TRIPS 2   /* ... with at most 2 round trips a transfer */
#define TARGET_WAKE_IN_PINGS 2 /* watch wake-up within 2x the PING floor */

/* ------------------------------------------------------------------ */
/* Failing                                                            */
/* ------------------------------------------------------------------ */

/* The server of our own, if any: killed by every way out of the program. */
static struct {
    volatile pid_t pid;
    char dir[64];
    char sock[96];
    char log[96];
} own;

static void own_server_stop(void)
{
    if (own.pid > 0) {
        kill(own.pid, SIGKILL);
        waitpid(own.pid, NULL, 0);
        own.pid = 0;
    }
    if (own.dir[0] != '\0') {
        unlink(own.sock);
        unlink(own.log);
        rmdir(own.dir);
        own.dir[0] = '\0';
    }
}

/* Ctrl-C must not leave a redis-server behind: kill(), waitpid(),
 * unlink() and rmdir() are async-signal-safe. */
static void on_signal(int sig)
{
    own_server_stop();
    _exit(128 + sig);
}

__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "remote: FAILED: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    own_server_stop();
    exit(1);
}

/* ------------------------------------------------------------------ */
/* The target: where the server is                                    */
/* ------------------------------------------------------------------ */

struct target {
    bool unix_socket;
    char path[256]; /* unix socket */
    char host[64];  /* 127.0.0.1, localhost or ::1 */
    int port;       /* 6379 unless given */
    int db;         /* SELECT, 0 unless given */
    char user[128]; /* AUTH user password, or AUTH password */
    char password[256];
    char prefix[256]; /* the user's prefix option, put before ours */
    char base[1024];  /* the address for axstm_store_open, without prefix */
};

static bool hex_digit(char c, int *v)
{
    if (c >= '0' && c <= '9')
        *v = c - '0';
    else if (c >= 'a' && c <= 'f')
        *v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
        *v = c - 'A' + 10;
    else
        return false;
    return true;
}

/* Copies [p, p + n) into out (size cap), decoding %XX as the library does. */
static bool decode(const char *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        int hi, lo;
        if (c == '%') {
            if (i + 2 >= n || !hex_digit(p[i + 1], &hi) || !hex_digit(p[i + 2], &lo) ||
                (hi == 0 && lo == 0))
                return false;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o + 1 >= cap)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

static bool parse_int(const char *p, size_t n, int lo, int hi, int *out)
{
    char buf[16];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

/*
 * Reads a redis or redis+unix address into t.  Refuses any host but the
 * loopback (see the top of the file) and says why on stderr.  The address
 * given to axstm_store_open is the same string with its prefix option
 * taken out; ours is added to it per store.
 */
static bool target_parse(const char *uri, struct target *t)
{
    memset(t, 0, sizeof *t);
    t->port = 6379;
    const char *rest;
    if (strncmp(uri, "redis+unix://", 13) == 0) {
        t->unix_socket = true;
        rest = uri + 13;
    } else if (strncmp(uri, "redis://", 8) == 0) {
        rest = uri + 8;
    } else {
        fprintf(stderr, "remote: '%s': not a redis:// or redis+unix:// address\n", uri);
        return false;
    }
    const char *query = strchr(rest, '?');
    size_t main_len = query != NULL ? (size_t)(query - rest) : strlen(rest);
    if (t->unix_socket) {
        if (main_len == 0 || rest[0] != '/' || !decode(rest, main_len, t->path, sizeof t->path)) {
            fprintf(stderr, "remote: '%s': no socket path\n", uri);
            return false;
        }
    } else {
        const char *at = memchr(rest, '@', main_len);
        const char *hp = rest;
        if (at != NULL) {
            const char *colon = memchr(rest, ':', (size_t)(at - rest));
            const char *uend = colon != NULL ? colon : at;
            if (!decode(rest, (size_t)(uend - rest), t->user, sizeof t->user) ||
                (colon != NULL &&
                 !decode(colon + 1, (size_t)(at - colon - 1), t->password, sizeof t->password))) {
                fprintf(stderr, "remote: '%s': bad user or password\n", uri);
                return false;
            }
            if (colon == NULL) { /* redis://password@host, as redis-cli reads it */
                snprintf(t->password, sizeof t->password, "%s", t->user);
                t->user[0] = '\0';
            }
            hp = at + 1;
        }
        const char *end = rest + main_len;
        const char *slash = memchr(hp, '/', (size_t)(end - hp));
        const char *hend = slash != NULL ? slash : end;
        const char *port = NULL;
        if (hp < hend && *hp == '[') {
            const char *close = memchr(hp, ']', (size_t)(hend - hp));
            if (close == NULL || (size_t)(close - hp - 1) >= sizeof t->host)
                return false;
            memcpy(t->host, hp + 1, (size_t)(close - hp - 1));
            port = close + 1 < hend && close[1] == ':' ? close + 2 : NULL;
        } else {
            const char *colon = memchr(hp, ':', (size_t)(hend - hp));
            const char *e = colon != NULL ? colon : hend;
            if ((size_t)(e - hp) >= sizeof t->host)
                return false;
            memcpy(t->host, hp, (size_t)(e - hp));
            port = colon != NULL ? colon + 1 : NULL;
        }
        if (port != NULL && !parse_int(port, (size_t)(hend - port), 1, 65535, &t->port)) {
            fprintf(stderr, "remote: '%s': bad port\n", uri);
            return false;
        }
        if (slash != NULL && slash + 1 < end &&
            !parse_int(slash + 1, (size_t)(end - slash - 1), 0, 1 << 20, &t->db)) {
            fprintf(stderr, "remote: '%s': bad database number\n", uri);
            return false;
        }
        if (strcmp(t->host, "127.0.0.1") != 0 && strcmp(t->host, "localhost") != 0 &&
            strcmp(t->host, "::1") != 0) {
            fprintf(stderr,
                    "remote: '%s': only a unix socket or the loopback interface (127.0.0.1, "
                    "localhost, [::1]) is measured here\n",
                    uri);
            return false;
        }
    }

    /* The options: db, user and password matter to our own connections;
     * every option but prefix goes on to axstm_store_open unchanged. */
    size_t blen =
        (size_t)snprintf(t->base, sizeof t->base, "%.*s?", (int)(rest - uri + main_len), uri);
    const char *o = query != NULL ? query + 1 : NULL;
    while (o != NULL && *o != '\0') {
        const char *amp = strchr(o, '&');
        size_t n = amp != NULL ? (size_t)(amp - o) : strlen(o);
        const char *eq = memchr(o, '=', n);
        size_t klen = eq != NULL ? (size_t)(eq - o) : n;
        const char *v = eq != NULL ? eq + 1 : o + n;
        size_t vlen = (size_t)(o + n - v);
        bool ok = true;
        if (klen == 6 && strncmp(o, "prefix", 6) == 0)
            ok = decode(v, vlen, t->prefix, sizeof t->prefix);
        else if (klen == 2 && strncmp(o, "db", 2) == 0)
            ok = parse_int(v, vlen, 0, 1 << 20, &t->db);
        else if (klen == 4 && strncmp(o, "user", 4) == 0)
            ok = decode(v, vlen, t->user, sizeof t->user);
        else if (klen == 8 && strncmp(o, "password", 8) == 0)
            ok = decode(v, vlen, t->password, sizeof t->password);
        if (!ok) {
            fprintf(stderr, "remote: '%s': bad option '%.*s'\n", uri, (int)n, o);
            return false;
        }
        if (!(klen == 6 && strncmp(o, "prefix", 6) == 0) && blen + n + 2 < sizeof t->base)
            blen += (size_t)snprintf(t->base + blen, sizeof t->base - blen, "%.*s&", (int)n, o);
        o = amp != NULL ? amp + 1 : NULL;
    }
    if (strstr(t->base, "timeout_ms=") == NULL && blen + 24 < sizeof t->base)
        blen +=
            (size_t)snprintf(t->base + blen, sizeof t->base - blen, "timeout_ms=%d&", TIMEOUT_MS);
    return blen + 1 < sizeof t->base;
}

/* The address of a store whose keys live under the user's prefix, then
 * ours. */
static void store_address(const struct target *t, const char *ours, char *out, size_t cap)
{
    /* Prefixes are plain names here (letters, digits, ':' and '-'), which
     * need no escape; the user's prefix went through decode(), so it is
     * sent escaped again. */
    size_t n = (size_t)snprintf(out, cap, "%sprefix=", t->base);
    for (const char *p = t->prefix; *p != '\0' && n + 4 < cap; p++)
        n += (size_t)snprintf(out + n, cap - n, "%%%02X", (unsigned char)*p);
    if (n + strlen(ours) + 1 > cap)
        fail("address too long");
    snprintf(out + n, cap - n, "%s", ours);
}

/* ------------------------------------------------------------------ */
/* Our own connections (hiredis)                                      */
/* ------------------------------------------------------------------ */

/* One command, whole; a dead connection is a failure of the bench. */
__attribute__((format(printf, 2, 3))) static redisReply *cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (r == NULL)
        fail("the server did not answer: %s", c->errstr);
    return r;
}

static redisContext *connect_to(const struct target *t, bool with_timeout)
{
    struct timeval tv = {TIMEOUT_MS / 1000, (TIMEOUT_MS % 1000) * 1000};
    redisContext *c = t->unix_socket ? redisConnectUnixWithTimeout(t->path, tv)
                                     : redisConnectWithTimeout(t->host, t->port, tv);
    if (c == NULL)
        fail("out of memory");
    if (c->err != 0)
        fail("cannot connect to %s: %s", t->unix_socket ? t->path : t->host, c->errstr);
    if (with_timeout)
        redisSetTimeout(c, tv);
    redisReply *r = NULL;
    if (t->password[0] != '\0')
        r = t->user[0] != '\0' ? cmd(c, "AUTH %s %s", t->user, t->password)
                               : cmd(c, "AUTH %s", t->password);
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        fail("AUTH: %s", r->str);
    freeReplyObject(r);
    if (t->db != 0) {
        r = cmd(c, "SELECT %d", t->db);
        if (r->type == REDIS_REPLY_ERROR)
            fail("SELECT: %s", r->str);
        freeReplyObject(r);
    }
    return c;
}

/* The server's counters of requests read and commands run. */
struct counters {
    uint64_t reads, commands;
};

static uint64_t info_field(const char *info, const char *name)
{
    const char *p = strstr(info, name);
    if (p == NULL)
        fail("INFO stats has no %s", name);
    return strtoull(p + strlen(name), NULL, 10);
}

static struct counters server_counters(redisContext *mon)
{
    redisReply *r = cmd(mon, "INFO stats");
    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)
        fail("INFO stats: unexpected answer");
    struct counters k = {info_field(r->str, "\ntotal_reads_processed:"),
                         info_field(r->str, "\ntotal_commands_processed:")};
    freeReplyObject(r);
    return k;
}

/* ------------------------------------------------------------------ */
/* A server of our own                                                */
/* ------------------------------------------------------------------ */

static bool on_path(const char *prog)
{
    const char *path = getenv("PATH");
    char buf[1024];
    while (path != NULL && *path != '\0') {
        size_t n = strcspn(path, ":");
        if (n > 0 && n + strlen(prog) + 2 < sizeof buf) {
            snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, prog);
            if (access(buf, X_OK) == 0)
                return true;
        }
        path += n + (path[n] == ':');
    }
    return false;
}

/* Starts redis-server on a unix socket in a fresh directory and waits until
 * it answers PING; fills t. */
static void own_server_start(struct target *t)
{
    snprintf(own.dir, sizeof own.dir, "/tmp/axstm-bench-XXXXXX");
    if (mkdtemp(own.dir) == NULL) {
        own.dir[0] = '\0';
        fail("mkdtemp: %s", strerror(errno));
    }
    snprintf(own.sock, sizeof own.sock, "%s/sock", own.dir);
    snprintf(own.log, sizeof own.log, "%s/log", own.dir);
    char *argv[] = {"redis-server", "--port", "0",     "--unixsocket", own.sock, "--unixsocketperm",
                    "700",          "--save", "",      "--appendonly", "no",     "--daemonize",
                    "no",           "--dir",  own.dir, "--logfile",    own.log,  NULL};
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        fail("fork: %s", strerror(errno));
    if (pid == 0) {
#ifdef __linux__
        /* Dies with us even when we are killed with SIGKILL. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp("redis-server", argv);
        _exit(127);
    }
    own.pid = pid;

    memset(t, 0, sizeof *t);
    t->unix_socket = true;
    snprintf(t->path, sizeof t->path, "%s", own.sock);
    snprintf(t->base, sizeof t->base, "redis+unix://%s?timeout_ms=%d&", own.sock, TIMEOUT_MS);
    /* A generous watchdog: only a server that never listens fails. */
    uint64_t give_up = bench_now_ns() + 30 * UINT64_C(1000000000);
    for (;;) {
        int status;
        if (waitpid(own.pid, &status, WNOHANG) == own.pid) {
            own.pid = 0;
            fail("redis-server exited at start (see %s)", own.log);
        }
        struct timeval tv = {1, 0};
        redisContext *c = redisConnectUnixWithTimeout(own.sock, tv);
        if (c != NULL && c->err == 0) {
            redisReply *r = redisCommand(c, "PING");
            bool up = r != NULL && r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            redisFree(c);
            if (up)
                return;
        } else {
            redisFree(c);
        }
        if (bench_now_ns() > give_up)
            fail("redis-server did not answer within 30 s");
        bench_sleep_ns(5000000);
    }
}

/* ------------------------------------------------------------------ */
/* The bank                                                           */
/* ------------------------------------------------------------------ */

enum row {
    ROW_WATCH,
    ROW_WATCH_PIPE,
    ROW_SHARED,
    ROW_PER_THREAD,
    ROW_KEPT,
    ROW_ATOMICALLY,
    ROW_ATOMICALLY_CACHED,
    ROW_ATOMICALLY_PREFETCH,
    NROWS
};

static const char *const row_name[NROWS] = {
    "(a)  WATCH/MULTI/EXEC",    "(a2) WATCH, pipelined",    "(b)  using, shared store",
    "(b)  using, store/thread", "(d)  kept handles",        "(c)  atomically",
    "(c2) atomically, cache",   "(c3) atomically, prefetch"};

enum { X_CONFLICTS, X_BUSY }; /* bench_worker extra[] */

struct bank_ctx {
    size_t n;
    struct bench_names names; /* "account-<i>": the axstm keys */
    struct bench_names raw;   /* "<prefix>account-<i>": the rows (a), (a2) */
    redisContext *conn[MAX_CONNS];
    axstm_store *shared;
    axstm_store *cached; /* the same address with first_read=cache */
    axstm_store *per_thread[MAX_CONNS];
    /* (d): per connection, a handle per account on the shared store. */
    axstm_value **kept[MAX_CONNS];
    unsigned nconns;
};

/* A balance read by GET: a decimal integer. */
static bool reply_i64(const redisReply *r, long long *out)
{
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        return false;
    char *end;
    errno = 0;
    *out = strtoll(r->str, &end, 10);
    return errno == 0 && end != r->str && *end == '\0';
}

static void pick(struct bench_worker *w, size_t n, size_t *from, size_t *to)
{
    int64_t amount;
    bank_pick(w, n, from, to, &amount); /* the amount is always 1 here */
}

/* (a): one command, one round trip, as redisCommand() is used in the
 * examples of hiredis. */
static void body_watch(struct bench_worker *w)
{
    struct bank_ctx *x = w->arg;
    redisContext *c = x->conn[w->index];
    while (!bench_stopped(w)) {
        size_t a, b;
        pick(w, x->n, &a, &b);
        const char *ka = bench_name(&x->raw, a), *kb = bench_name(&x->raw, b);
        for (;;) {
            long long va, vb;
            redisReply *r = redisCommand(c, "WATCH %s %s", ka, kb);
            bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            redisReply *ga = ok ? redisCommand(c, "GET %s", ka) : NULL;
            redisReply *gb = ok ? redisCommand(c, "GET %s", kb) : NULL;
            ok = reply_i64(ga, &va) && reply_i64(gb, &vb);
            freeReplyObject(ga);
            freeReplyObject(gb);
            if (ok) {
                freeReplyObject(redisCommand(c, "MULTI"));
                freeReplyObject(redisCommand(c, "SET %s %lld", ka, va - 1));
                freeReplyObject(redisCommand(c, "SET %s %lld", kb, vb + 1));
            }
            r = ok ? redisCommand(c, "EXEC") : NULL;
            if (r == NULL || (r->type != REDIS_REPLY_ARRAY && r->type != REDIS_REPLY_NIL)) {
                freeReplyObject(r);
                fprintf(stderr, "remote: (a): %s\n", c->err ? c->errstr : "unexpected answer");
                w->failed = AXSTM_EIO;
                return;
            }
            bool done = r->type == REDIS_REPLY_ARRAY;
            freeReplyObject(r);
            if (done)
                break;
            w->extra[X_CONFLICTS]++; /* a watched key changed: again */
        }
        w->ops++;
    }
}

/* Reads n pipelined answers into r[]; false when the connection failed. */
static bool get_replies(redisContext *c, redisReply **r, int n)
{
    bool ok = true;
    for (int i = 0; i < n; i++) {
        void *p = NULL;
        if (ok && redisGetReply(c, &p) != REDIS_OK)
            ok = false;
        r[i] = p;
    }
    return ok;
}

/* (a2): the same transaction in two round trips. */
static void body_watch_pipelined(struct bench_worker *w)
{
    struct bank_ctx *x = w->arg;
    redisContext *c = x->conn[w->index];
    while (!bench_stopped(w)) {
        size_t a, b;
        pick(w, x->n, &a, &b);
        const char *ka = bench_name(&x->raw, a), *kb = bench_name(&x->raw, b);
        for (;;) {
            long long va = 0, vb = 0;
            redisReply *r[4] = {NULL};
            redisAppendCommand(c, "WATCH %s %s", ka, kb);
            redisAppendCommand(c, "GET %s", ka);
            redisAppendCommand(c, "GET %s", kb);
            bool ok = get_replies(c, r, 3) && r[0]->type == REDIS_REPLY_STATUS &&
                      reply_i64(r[1], &va) && reply_i64(r[2], &vb);
            for (int i = 0; i < 3; i++)
                freeReplyObject(r[i]);
            if (ok) {
                redisAppendCommand(c, "MULTI");
                redisAppendCommand(c, "SET %s %lld", ka, va - 1);
                redisAppendCommand(c, "SET %s %lld", kb, vb + 1);
                redisAppendCommand(c, "EXEC");
                ok = get_replies(c, r, 4) &&
                     (r[3]->type == REDIS_REPLY_ARRAY || r[3]->type == REDIS_REPLY_NIL);
            }
            bool done = ok && r[3]->type == REDIS_REPLY_ARRAY;
            for (int i = 0; i < 4; i++)
                freeReplyObject(r[i]);
            if (!ok) {
                fprintf(stderr, "remote: (a2): %s\n", c->err ? c->errstr : "unexpected answer");
                w->failed = AXSTM_EIO;
                return;
            }
            if (done)
                break;
            w->extra[X_CONFLICTS]++;
        }
        w->ops++;
    }
}

static void body_using(struct bench_worker *w, axstm_store *s)
{
    struct bank_ctx *x = w->arg;
    while (!bench_stopped(w)) {
        size_t a, b;
        pick(w, x->n, &a, &b);
        int rc = bank_transfer_using(s, bench_name(&x->names, a), bench_name(&x->names, b), 1,
                                     &w->extra[X_CONFLICTS], &w->extra[X_BUSY]);
        if (rc != AXSTM_OK) {
            w->failed = rc;
            return;
        }
        w->ops++;
    }
}

static void body_shared(struct bench_worker *w)
{
    body_using(w, ((struct bank_ctx *)w->arg)->shared);
}

static void body_per_thread(struct bench_worker *w)
{
    body_using(w, ((struct bank_ctx *)w->arg)->per_thread[w->index]);
}

static void body_kept(struct bench_worker *w)
{
    struct bank_ctx *x = w->arg;
    axstm_value **kept = x->kept[w->index];
    while (!bench_stopped(w)) {
        size_t a, b;
        pick(w, x->n, &a, &b);
        int rc = bank_transfer_kept(kept[a], kept[b], 1, true, &w->extra[X_CONFLICTS],
                                    &w->extra[X_BUSY]);
        if (rc != AXSTM_OK) {
            w->failed = rc;
            return;
        }
        w->ops++;
    }
}

/* The store a transaction row runs on, or NULL for the other rows. */
static axstm_store *txn_store(const struct bank_ctx *x, enum row row)
{
    return row == ROW_ATOMICALLY || row == ROW_ATOMICALLY_PREFETCH ? x->shared
           : row == ROW_ATOMICALLY_CACHED                          ? x->cached
                                                                   : NULL;
}

/* The transfer of (c3): it names both accounts before it reads them. */
static int prefetched_xfer_body(axstm_txn *tx, void *arg)
{
    const struct bank_xfer *t = arg;
    const char *const keys[2] = {t->from, t->to};
    int rc = axstm_txn_prefetch(tx, keys, 2);
    return rc == AXSTM_OK ? bank_xfer_body(tx, arg) : rc;
}

static void body_atomically_on(struct bench_worker *w, axstm_store *s, axstm_fn fn)
{
    struct bank_ctx *x = w->arg;
    while (!bench_stopped(w)) {
        size_t a, b;
        pick(w, x->n, &a, &b);
        struct bank_xfer t = {bench_name(&x->names, a), bench_name(&x->names, b), 1};
        int rc;
        /* BUSY_RETRY: the server is loading or running a long script. */
        while ((rc = axstm_atomically(s, fn, &t)) == AXSTM_BUSY_RETRY)
            w->extra[X_BUSY]++;
        if (rc != AXSTM_OK) {
            w->failed = rc;
            return;
        }
        w->ops++;
    }
}

static void body_atomically(struct bench_worker *w)
{
    body_atomically_on(w, ((struct bank_ctx *)w->arg)->shared, bank_xfer_body);
}

static void body_atomically_cached(struct bench_worker *w)
{
    body_atomically_on(w, ((struct bank_ctx *)w->arg)->cached, bank_xfer_body);
}

static void body_atomically_prefetch(struct bench_worker *w)
{
    body_atomically_on(w, ((struct bank_ctx *)w->arg)->shared, prefetched_xfer_body);
}

static void (*const row_body[NROWS])(struct bench_worker *) = {body_watch,
                                                               body_watch_pipelined,
                                                               body_shared,
                                                               body_per_thread,
                                                               body_kept,
                                                               body_atomically,
                                                               body_atomically_cached,
                                                               body_atomically_prefetch};

/* ---- setting up and auditing ---------------------------------------- */

/* Gives every account BANK_INITIAL: MSET for (a), one commit for (b). */
static void remote_open_accounts(struct bank_ctx *x, redisContext *mon)
{
    size_t argc = 1 + 2 * x->n;
    const char **argv = malloc(argc * sizeof *argv);
    if (argv == NULL)
        fail("out of memory");
    char initial[24];
    snprintf(initial, sizeof initial, "%d", BANK_INITIAL);
    argv[0] = "MSET";
    for (size_t i = 0; i < x->n; i++) {
        argv[1 + 2 * i] = bench_name(&x->raw, i);
        argv[2 + 2 * i] = initial;
    }
    redisReply *r = redisCommandArgv(mon, (int)argc, argv, NULL);
    if (r == NULL || r->type != REDIS_REPLY_STATUS)
        fail("MSET: %s", r == NULL ? mon->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "?");
    freeReplyObject(r);
    free(argv);

    axstm_collection *c;
    const char **keys = malloc(x->n * sizeof *keys);
    if (keys == NULL)
        fail("out of memory");
    for (size_t i = 0; i < x->n; i++)
        keys[i] = bench_name(&x->names, i);
    int rc;
    while ((rc = axstm_using(x->shared, keys, x->n, &c)) == AXSTM_BUSY_RETRY)
        ;
    for (size_t i = 0; i < x->n && rc == AXSTM_OK; i++)
        rc = axstm_value_set_i64(axstm_collection_at(c, i), BANK_INITIAL);
    if (rc == AXSTM_OK)
        while ((rc = axstm_collection_commit(c)) == AXSTM_BUSY_RETRY)
            ;
    if (rc != AXSTM_OK)
        fail("opening the accounts: %s", axstm_strerror(rc));
    axstm_collection_free(c);
    free(keys);
}

/* The total of every account in one snapshot: MGET for (a), one using for
 * the axstm rows. */
static int64_t remote_total(struct bank_ctx *x, enum row row, redisContext *mon)
{
    int64_t sum = 0;
    if (row == ROW_WATCH || row == ROW_WATCH_PIPE) {
        const char **argv = malloc((1 + x->n) * sizeof *argv);
        if (argv == NULL)
            fail("out of memory");
        argv[0] = "MGET";
        for (size_t i = 0; i < x->n; i++)
            argv[1 + i] = bench_name(&x->raw, i);
        redisReply *r = redisCommandArgv(mon, (int)(1 + x->n), argv, NULL);
        free(argv);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != x->n)
            fail("MGET: %s", r == NULL ? mon->errstr : "unexpected answer");
        for (size_t i = 0; i < x->n; i++) {
            long long v;
            if (!reply_i64(r->element[i], &v))
                fail("audit: account %zu has no balance", i);
            sum += v;
        }
        freeReplyObject(r);
        return sum;
    }
    const char **keys = malloc(x->n * sizeof *keys);
    if (keys == NULL)
        fail("out of memory");
    for (size_t i = 0; i < x->n; i++)
        keys[i] = bench_name(&x->names, i);
    axstm_collection *c;
    int rc;
    while ((rc = axstm_using(x->shared, keys, x->n, &c)) == AXSTM_BUSY_RETRY)
        ;
    free(keys);
    if (rc != AXSTM_OK)
        fail("audit: axstm_using: %s", axstm_strerror(rc));
    for (size_t i = 0; i < x->n; i++) {
        int64_t v;
        rc = axstm_value_get_i64(axstm_collection_at(c, i), &v);
        if (rc != AXSTM_OK)
            fail("audit: account %zu: %s", i, axstm_strerror(rc));
        sum += v;
    }
    axstm_collection_free(c);
    return sum;
}

/* Whether axstm_atomically runs on this store (today: AXSTM_EINVAL). */
static int probe_body(axstm_txn *tx, void *arg)
{
    int64_t v;
    return axstm_txn_get_i64(tx, arg, &v);
}

/* ---- measuring ------------------------------------------------------ */

#define MAX_T (sizeof((struct bench_config *)0)->threads / sizeof(unsigned))

struct cell {
    double rate[BENCH_MAX_RUNS], ratio[BENCH_MAX_RUNS], ratio_pipe[BENCH_MAX_RUNS];
    double conflicts[BENCH_MAX_RUNS], trips[BENCH_MAX_RUNS], commands[BENCH_MAX_RUNS];
    double trips_per_try[BENCH_MAX_RUNS]; /* a try: a transfer, or a conflict */
    uint64_t busy;
};

static struct cell cells[NROWS][MAX_T]; /* of one account count: large, off the stack */
static struct counters overhead;        /* what the two INFO calls add */
static bool atomically_na;              /* axstm_atomically answers EINVAL */

static void measure(const struct bench_config *cfg, struct bank_ctx *x, redisContext *mon,
                    enum row row, size_t ti, unsigned run)
{
    unsigned threads = cfg->threads[ti];
    axstm_stats st0 = {0}, st1 = {0};
    int rc;
    /* The atomically row counts its conflicts from the store's counters;
     * asked for outside the INFO window, so it costs no round trip there. */
    axstm_store *txn = txn_store(x, row);
    /* (d)'s handles, made or refreshed (one round trip each) before the
     * timed and counted window. */
    if (row == ROW_KEPT && bank_keep_handles(x->shared, &x->names, x->n, x->kept, threads) != 0)
        fail("keeping a handle per account");
    if (txn != NULL && (rc = axstm_store_stats(txn, &st0)) != AXSTM_OK)
        fail("axstm_store_stats: %s", axstm_strerror(rc));
    struct counters k0 = server_counters(mon);
    struct bench_team_result r;
    if (bench_team_run(threads, cfg->seconds, row_body[row], x, 7919u * run + 31u * ti + row, &r) !=
        0)
        fail("cannot run %u threads", threads);
    struct counters k1 = server_counters(mon);
    if (r.failed != 0)
        fail("row %s, %zu accounts, %u connections: %s", row_name[row], x->n, threads,
             r.failed == AXSTM_EINDOUBT || r.failed == AXSTM_EIO
                 ? "the connection to the server failed"
                 : axstm_strerror(r.failed));
    if (txn != NULL && (rc = axstm_store_stats(txn, &st1)) != AXSTM_OK)
        fail("axstm_store_stats: %s", axstm_strerror(rc));
    int64_t total = remote_total(x, row, mon);
    if (total != (int64_t)x->n * BANK_INITIAL)
        fail("row %s, %zu accounts, %u connections: total %lld, expected %lld", row_name[row], x->n,
             threads, (long long)total, (long long)x->n * BANK_INITIAL);
    if (r.total == 0)
        fail("row %s, %zu accounts, %u connections: no transfer in %.2f s", row_name[row], x->n,
             threads, r.seconds);

    struct cell *c = &cells[row][ti];
    double xfers = (double)r.total;
    uint64_t conflicts = txn != NULL ? st1.conflicts - st0.conflicts : r.extra[X_CONFLICTS];
    c->rate[run] = xfers / r.seconds;
    c->conflicts[run] = (double)conflicts / r.seconds;
    c->trips[run] = (double)(k1.reads - k0.reads - overhead.reads) / xfers;
    c->trips_per_try[run] =
        (double)(k1.reads - k0.reads - overhead.reads) / (xfers + (double)conflicts);
    c->commands[run] = (double)(k1.commands - k0.commands - overhead.commands) / xfers;
    c->busy += r.extra[X_BUSY];
}

static double median_of(const double *v, unsigned n)
{
    double tmp[BENCH_MAX_RUNS];
    memcpy(tmp, v, n * sizeof *tmp);
    return bench_median(tmp, n);
}

/* Worst cases over the connection counts, for the summary. */
struct verdict {
    bool measured;
    double worst_ratio, worst_trips;
};

static struct verdict verdicts[2][NROWS]; /* [1024 accounts, 16][row] */

static const char *pass(bool ok)
{
    return ok ? "PASS" : "FAIL";
}

static void bench_accounts(const struct bench_config *cfg, const struct target *t,
                           redisContext *mon, size_t n, int vi)
{
    static unsigned seq;
    struct bank_ctx x;
    char ours[128], addr[2048];
    memset(&x, 0, sizeof x);
    memset(cells, 0, sizeof cells);
    x.n = n;
    /* Fresh names per table, so that a run never meets an earlier one's
     * keys (a server given as argument may hold them). */
    snprintf(ours, sizeof ours, "axstm-bench:%ld:%u:", (long)getpid(), seq++);
    char rawprefix[512];
    snprintf(rawprefix, sizeof rawprefix, "%s%sw:account-", t->prefix, ours);
    if (bench_names_init(&x.names, "account-", n) != 0 ||
        bench_names_init(&x.raw, rawprefix, n) != 0)
        fail("out of memory");
    strncat(ours, "s:", sizeof ours - strlen(ours) - 1);
    store_address(t, ours, addr, sizeof addr);

    unsigned most = 0;
    for (size_t i = 0; i < cfg->nthreads; i++)
        most = cfg->threads[i] > most ? cfg->threads[i] : most;
    x.nconns = most;
    int rc = axstm_store_open(addr, &x.shared);
    if (rc != AXSTM_OK)
        fail("axstm_store_open(%s): %s", addr, axstm_strerror(rc));
    char cached[sizeof addr + 32];
    snprintf(cached, sizeof cached, "%s%cfirst_read=cache", addr,
             strchr(addr, '?') != NULL ? '&' : '?');
    if ((rc = axstm_store_open(cached, &x.cached)) != AXSTM_OK)
        fail("axstm_store_open(%s): %s", cached, axstm_strerror(rc));
    /* Connections and stores are made before any timing. */
    for (unsigned i = 0; i < most; i++) {
        x.conn[i] = connect_to(t, true);
        if ((rc = axstm_store_open(addr, &x.per_thread[i])) != AXSTM_OK)
            fail("axstm_store_open: %s", axstm_strerror(rc));
    }
    remote_open_accounts(&x, mon);
    rc = axstm_atomically(x.shared, probe_body, (void *)bench_name(&x.names, 0));
    atomically_na = rc == AXSTM_EINVAL;
    if (rc != AXSTM_OK && !atomically_na)
        fail("axstm_atomically: %s", axstm_strerror(rc));

    for (unsigned run = 0; run < cfg->runs; run++)
        for (size_t ti = 0; ti < cfg->nthreads; ti++)
            for (int row = 0; row < NROWS; row++) {
                if (row >= ROW_ATOMICALLY && atomically_na)
                    continue;
                measure(cfg, &x, mon, (enum row)row, ti, run);
            }

    printf("%zu accounts: transfers/s (median of %u runs of %.2f s), ratio to (a) and to (a2) "
           "(median of per-run ratios), conflicts/s; round trips and commands per transfer "
           "counted by the server\n",
           n, cfg->runs, cfg->seconds);
    printf("%-5s  %-24s  %11s  %7s  %8s  %11s  %7s  %6s  %9s  %6s  %6s\n", "conns", "row",
           "transfers/s", "vs (a)", "vs (a2)", "conflicts/s", "rt/xfer", "rt/try", "cmds/xfer",
           ">=1.0x", "<=2 rt");
    for (int i = 0; i < 114; i++)
        putchar('-');
    putchar('\n');
    for (size_t ti = 0; ti < cfg->nthreads; ti++) {
        for (int row = 0; row < NROWS; row++) {
            struct cell *c = &cells[row][ti];
            printf("%-5u  %-24s  ", cfg->threads[ti], row_name[row]);
            if (row >= ROW_ATOMICALLY && atomically_na) {
                printf("n/a (needs remote transactions)\n");
                continue;
            }
            for (unsigned run = 0; run < cfg->runs; run++) {
                c->ratio[run] = c->rate[run] / cells[ROW_WATCH][ti].rate[run];
                c->ratio_pipe[run] = c->rate[run] / cells[ROW_WATCH_PIPE][ti].rate[run];
            }
            char rate[32], conf[32];
            double ratio = median_of(c->ratio, cfg->runs);
            /* The round-trip target is on a try: what the protocol costs.
             * A conflict makes a transfer try again, in every row alike. */
            double trips = median_of(c->trips_per_try, cfg->runs);
            printf("%11s  %6.2fx  %7.2fx  %11s  %7.2f  %6.2f  %9.2f",
                   bench_fmt_rate(rate, sizeof rate, median_of(c->rate, cfg->runs)), ratio,
                   median_of(c->ratio_pipe, cfg->runs),
                   bench_fmt_rate(conf, sizeof conf, median_of(c->conflicts, cfg->runs)),
                   median_of(c->trips, cfg->runs), trips, median_of(c->commands, cfg->runs));
            if (row == ROW_WATCH || row == ROW_WATCH_PIPE) {
                printf("  %6s  %6s\n", "-", "-");
                continue;
            }
            printf("  %6s  %6s\n", pass(ratio >= TARGET_RATIO),
                   pass(trips <= TARGET_ROUND_TRIPS + 0.005));
            struct verdict *v = &verdicts[vi][row];
            if (!v->measured || ratio < v->worst_ratio)
                v->worst_ratio = ratio;
            if (!v->measured || trips > v->worst_trips)
                v->worst_trips = trips;
            v->measured = true;
        }
    }
    for (int row = ROW_SHARED; row < NROWS; row++)
        for (size_t ti = 0; ti < cfg->nthreads; ti++)
            if (cells[row][ti].busy != 0)
                printf("  %s, %u connections: %llu AXSTM_BUSY_RETRY answers\n", row_name[row],
                       cfg->threads[ti], (unsigned long long)cells[row][ti].busy);
    printf("\n");
    fflush(stdout);

    bank_drop_handles(x.kept, most, n);
    axstm_store_free(x.shared);
    axstm_store_free(x.cached);
    for (unsigned i = 0; i < most; i++) {
        redisFree(x.conn[i]);
        axstm_store_free(x.per_thread[i]);
    }
    bench_names_free(&x.names);
    bench_names_free(&x.raw);
}

/* ------------------------------------------------------------------ */
/* The round-trip floor                                               */
/* ------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile of v[0..n), sorted in place. */
static double quantile(double *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* Returns the median microseconds of one PING. */
static double ping_floor(const struct bench_config *cfg, const struct target *t, redisContext *mon)
{
    redisContext *c = connect_to(t, true);
    size_t cap = 1 << 16, n = 0;
    double *lat = malloc(cap * sizeof *lat);
    double rates[BENCH_MAX_RUNS];
    if (lat == NULL)
        fail("out of memory");
    struct counters k0 = server_counters(mon);
    uint64_t pings = 0;
    for (unsigned run = 0; run < cfg->runs; run++) {
        uint64_t start = bench_now_ns(), end = start + (uint64_t)(cfg->seconds * 1e9), now = start;
        uint64_t count = 0;
        while (now < end) {
            redisReply *r = cmd(c, "PING");
            if (r->type != REDIS_REPLY_STATUS)
                fail("PING: unexpected answer");
            freeReplyObject(r);
            uint64_t after = bench_now_ns();
            if (n == cap) {
                double *grown = realloc(lat, 2 * cap * sizeof *lat);
                if (grown == NULL)
                    fail("out of memory");
                lat = grown;
                cap *= 2;
            }
            lat[n++] = (double)(after - now) / 1e3;
            now = after;
            count++;
        }
        rates[run] = (double)count / ((double)(now - start) / 1e9);
        pings += count;
    }
    struct counters k1 = server_counters(mon);
    double p50 = quantile(lat, n, 0.5), p90 = quantile(lat, n, 0.9);
    double rate = bench_median(rates, cfg->runs);
    char buf[32];
    printf("Round-trip floor: PING on 1 connection, %u runs of %.2f s\n", cfg->runs, cfg->seconds);
    printf("  %s PINGs/s (median of runs); %.1f us per PING (median of %zu), p90 %.1f us\n",
           bench_fmt_rate(buf, sizeof buf, rate), p50, n, p90);
    /* Checks the way round trips are counted above: one read per PING. */
    printf("  the server counted %.3f requests read and %.3f commands per PING\n\n",
           (double)(k1.reads - k0.reads - overhead.reads) / (double)pings,
           (double)(k1.commands - k0.commands - overhead.commands) / (double)pings);
    free(lat);
    redisFree(c);
    return p50;
}

/* ------------------------------------------------------------------ */
/* Cross-process wake-up                                              */
/* ------------------------------------------------------------------ */

enum wake_kind { WAKE_AXSTM, WAKE_PUBSUB };

/* What the child sends: a status first (0, or the code that stopped it),
 * then per round 'r' (armed, about to poll), 'w' (woken) with the time it
 * woke (bench_now_ns) and the value it then saw. */
static void put(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            _exit(3);
        c += k;
        n -= (size_t)k;
    }
}

/* Reads exactly n bytes within the watchdog; false on EOF or timeout. */
static bool get(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int k = poll(&pfd, 1, WATCHDOG_MS);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        ssize_t got = read(fd, c, n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        c += got;
        n -= (size_t)got;
    }
    return true;
}

static void child_axstm(int out, const char *addr, const char *key)
{
    axstm_store *s;
    axstm_watch *w = NULL;
    axstm_value *v = NULL;
    int rc = axstm_store_open(addr, &s);
    if (rc == AXSTM_OK)
        rc = axstm_watch_new(s, &key, 1, &w);
    if (rc == AXSTM_OK)
        rc = axstm_usevar(s, key, &v);
    put(out, &rc, sizeof rc);
    if (rc != AXSTM_OK)
        _exit(0);
    for (;;) {
        axstm_watch_rearm(w);
        put(out, "r", 1);
        struct pollfd pfd = {axstm_watch_fd(w), POLLIN, 0};
        while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
            ;
        uint64_t woke = bench_now_ns();
        put(out, "w", 1);
        put(out, &woke, sizeof woke);
        /* Which commit woke it: read outside the timed part. */
        int64_t seen = -1;
        while ((rc = axstm_value_refresh(v)) == AXSTM_BUSY_RETRY)
            ;
        if (rc == AXSTM_OK)
            axstm_value_get_i64(v, &seen);
        put(out, &seen, sizeof seen);
    }
}

static void child_pubsub(int out, const struct target *t, const char *channel)
{
    redisContext *c = connect_to(t, false);
    redisReply *r = redisCommand(c, "SUBSCRIBE %s", channel);
    int rc = r != NULL && r->type == REDIS_REPLY_ARRAY ? AXSTM_OK : AXSTM_EIO;
    freeReplyObject(r);
    put(out, &rc, sizeof rc);
    if (rc != AXSTM_OK)
        _exit(0);
    for (;;) {
        put(out, "r", 1);
        void *p = NULL;
        if (redisGetReply(c, &p) != REDIS_OK)
            _exit(3);
        uint64_t woke = bench_now_ns();
        put(out, "w", 1);
        put(out, &woke, sizeof woke);
        r = p;
        int64_t seen = -1;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[2]->type == REDIS_REPLY_STRING)
            seen = strtoll(r->element[2]->str, NULL, 10);
        freeReplyObject(r);
        put(out, &seen, sizeof seen);
    }
}

struct wake_result {
    bool na;
    int code;         /* why not, when na */
    double p50, p90;  /* us, from before the commit to the child's waking */
    double send_p50;  /* us, the commit (or PUBLISH) call alone */
    double after_p50; /* us, from the call's return to the child's waking */
    unsigned rounds, early;
};

static struct wake_result wake(const struct target *t, enum wake_kind kind)
{
    static unsigned seq;
    struct wake_result res = {0};
    char ours[128], addr[2048], channel[512];
    snprintf(ours, sizeof ours, "axstm-bench:%ld:wake%u:", (long)getpid(), seq++);
    store_address(t, ours, addr, sizeof addr);
    snprintf(channel, sizeof channel, "%s%schannel", t->prefix, ours);
    const char *key = "wake";

    /* The parent's side is made first: the child never uses it. */
    axstm_store *s = NULL;
    axstm_value *v = NULL;
    redisContext *pub = NULL;
    int rc = AXSTM_OK;
    if (kind == WAKE_AXSTM) {
        if ((rc = axstm_store_open(addr, &s)) != AXSTM_OK ||
            (rc = axstm_usevar(s, key, &v)) != AXSTM_OK)
            fail("wake-up: %s", axstm_strerror(rc));
    } else {
        pub = connect_to(t, true);
    }

    int fd[2];
    if (pipe(fd) != 0)
        fail("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        fail("fork: %s", strerror(errno));
    if (pid == 0) {
        /* The parent's handlers would kill its server: not ours to do. */
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        close(fd[0]);
        if (kind == WAKE_AXSTM)
            child_axstm(fd[1], addr, key);
        else
            child_pubsub(fd[1], t, channel);
        _exit(0);
    }
    close(fd[1]);
    int status = -1;
    if (!get(fd[0], &status, sizeof status))
        fail("wake-up: the child did not start");
    if (status != AXSTM_OK) {
        res.na = true;
        res.code = status;
    }
    double lat[WAKE_ROUNDS], send[WAKE_ROUNDS], after[WAKE_ROUNDS];
    for (unsigned round = 0; !res.na && round < WAKE_WARMUP + WAKE_ROUNDS; round++) {
        char c;
        if (!get(fd[0], &c, 1) || c != 'r')
            fail("wake-up: the child stopped answering");
        bench_sleep_ns(WAKE_SETTLE_NS); /* let it fall asleep in poll() */
        int64_t value = (int64_t)round + 1;
        uint64_t t0 = bench_now_ns();
        if (kind == WAKE_AXSTM) {
            if ((rc = axstm_value_set_i64(v, value)) == AXSTM_OK)
                while ((rc = axstm_value_commit(v)) == AXSTM_BUSY_RETRY)
                    ;
            if (rc != AXSTM_OK)
                fail("wake-up: commit: %s", axstm_strerror(rc));
        } else {
            redisReply *r = cmd(pub, "PUBLISH %s %lld", channel, (long long)value);
            if (r->type != REDIS_REPLY_INTEGER || r->integer != 1)
                fail("wake-up: PUBLISH reached %lld subscribers",
                     r->type == REDIS_REPLY_INTEGER ? r->integer : -1);
            freeReplyObject(r);
        }
        uint64_t t1 = bench_now_ns();
        int64_t seen;
        uint64_t t2; /* when the child woke, by the same clock */
        if (!get(fd[0], &c, 1) || c != 'w')
            fail("wake-up: the child was not woken within %d ms", WATCHDOG_MS);
        if (!get(fd[0], &t2, sizeof t2) || !get(fd[0], &seen, sizeof seen))
            fail("wake-up: the child stopped answering");
        if (seen != value) {
            res.early++; /* woken by something else: not a sample */
            continue;
        }
        if (round >= WAKE_WARMUP && res.rounds < WAKE_ROUNDS) {
            lat[res.rounds] = ((double)t2 - (double)t0) / 1e3;
            after[res.rounds] = ((double)t2 - (double)t1) / 1e3; /* < 0: woke first */
            send[res.rounds++] = (double)(t1 - t0) / 1e3;
        }
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fd[0]);
    if (!res.na) {
        res.p50 = quantile(lat, res.rounds, 0.5);
        res.p90 = quantile(lat, res.rounds, 0.9);
        res.send_p50 = quantile(send, res.rounds, 0.5);
        res.after_p50 = quantile(after, res.rounds, 0.5);
    }
    axstm_value_free(v);
    axstm_store_free(s);
    if (pub != NULL)
        redisFree(pub);
    return res;
}

/* ------------------------------------------------------------------ */
/* Leaving a server as we found it                                    */
/* ------------------------------------------------------------------ */

/* Removes every key this run made on a server given as argument (our own
 * server is simply killed): SCAN for them, UNLINK each page. */
static void remove_our_keys(redisContext *mon, const struct target *t)
{
    char pattern[1024];
    size_t n = 0;
    for (const char *p = t->prefix; *p != '\0' && n + 3 < sizeof pattern; p++) {
        if (strchr("*?[]\\", *p) != NULL)
            pattern[n++] = '\\'; /* glob characters of the user's prefix */
        pattern[n++] = *p;
    }
    snprintf(pattern + n, sizeof pattern - n, "axstm-bench:%ld:*", (long)getpid());
    char cursor[32] = "0";
    do {
        redisReply *r = cmd(mon, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= sizeof cursor ||
            r->element[1]->type != REDIS_REPLY_ARRAY)
            fail("SCAN: unexpected answer");
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        if (keys->elements > 0) {
            const char **argv = malloc((keys->elements + 1) * sizeof *argv);
            if (argv == NULL)
                fail("out of memory");
            argv[0] = "UNLINK";
            size_t *lens = malloc((keys->elements + 1) * sizeof *lens);
            if (lens == NULL)
                fail("out of memory");
            lens[0] = 6;
            for (size_t i = 0; i < keys->elements; i++) {
                argv[1 + i] = keys->element[i]->str;
                lens[1 + i] = keys->element[i]->len;
            }
            redisReply *u = redisCommandArgv(mon, (int)keys->elements + 1, argv, lens);
            if (u == NULL)
                fail("UNLINK: %s", mon->errstr);
            freeReplyObject(u);
            free(argv);
            free(lens);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
}

/* ------------------------------------------------------------------ */
/* Main                                                               */
/* ------------------------------------------------------------------ */

static void usage(const char *prog, FILE *to)
{
    bench_usage(prog, to);
    fprintf(to, "  ADDRESS        redis+unix:///path/to/socket or redis://127.0.0.1[:port][/db]\n"
                "                 (default: a redis-server of its own on a unix socket)\n"
                "  here: --threads means connections (default 1,2,8); default 5 runs of 0.3 s\n");
}

int main(int argc, char **argv)
{
    struct bench_config cfg;
    bool extra[argc > 0 ? argc : 1];
    /* Our defaults differ from benchutil.h's: what was given wins. */
    const char *env_runs = getenv("AXSTM_BENCH_RUNS"), *env_secs = getenv("AXSTM_BENCH_SECONDS");
    bool given_runs = env_runs != NULL && *env_runs != '\0',
         given_secs = env_secs != NULL && *env_secs != '\0', given_threads = false;
    const char *address = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(argc > 0 ? argv[0] : "remote", stdout);
            return 0;
        }
        given_runs |= strncmp(argv[i], "--runs=", 7) == 0;
        given_secs |= strncmp(argv[i], "--seconds=", 10) == 0;
        given_threads |= strncmp(argv[i], "--threads=", 10) == 0;
    }
    bench_config_init(&cfg, argc, argv, extra);
    for (int i = 1; i < argc; i++) {
        if (!extra[i])
            continue;
        if (address == NULL && strncmp(argv[i], "--", 2) != 0) {
            address = argv[i];
            continue;
        }
        fprintf(stderr, "%s: bad argument '%s'\n", cfg.prog, argv[i]);
        usage(cfg.prog, stderr);
        return 2;
    }
    /* Each cell about 1.5 s by default (--quick: 3 runs of 0.2 s). */
    if (!cfg.quick && !given_runs)
        cfg.runs = 5;
    if (!cfg.quick && !given_secs)
        cfg.seconds = 0.3;
    if (!given_threads) {
        cfg.nthreads = 3;
        cfg.threads[0] = 1;
        cfg.threads[1] = 2;
        cfg.threads[2] = 8;
    }
    if (cfg.nthreads > MAX_T)
        cfg.nthreads = MAX_T;
    for (size_t i = 0; i < cfg.nthreads; i++)
        if (cfg.threads[i] > MAX_CONNS) {
            fprintf(stderr, "%s: at most %d connections\n", cfg.prog, MAX_CONNS);
            return 2;
        }

    struct target t;
    if (address != NULL && !target_parse(address, &t)) {
        usage(cfg.prog, stderr);
        return 2;
    }
    /* A connection the server closed must be an error we report, not a
     * signal that kills us. */
    signal(SIGPIPE, SIG_IGN);
    if (address == NULL) {
        if (!on_path("redis-server")) {
            printf("%s: redis-server is not on PATH: skipped (give the address of a running "
                   "server to measure it)\n",
                   cfg.prog);
            return 0;
        }
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        own_server_start(&t);
    }

    bench_print_machine(&cfg, "axstm on a store kept in Redis, against hiredis by hand");
    redisContext *mon = connect_to(&t, true);
    {
        redisReply *r = cmd(mon, "INFO server");
        const char *ver = r->type == REDIS_REPLY_STRING ? strstr(r->str, "redis_version:") : NULL;
        printf("server: %s, redis %.*s\n",
               address != NULL ? address : "a redis-server of its own on a unix socket",
               ver != NULL ? (int)strcspn(ver + 14, "\r\n") : 1, ver != NULL ? ver + 14 : "?");
        freeReplyObject(r);
    }
    printf("method: rows interleaved within each run; median of %u runs of %.2f s per cell%s; "
           "one thread per connection; the total of all balances audited after every run\n",
           cfg.runs, cfg.seconds, cfg.quick ? " (--quick)" : "");
    printf("targets (issue 12; information only): axstm >= %.1fx (a) WATCH/MULTI/EXEC at every "
           "connection count, with <= %d round trips per transfer (judged on rt/try: a "
           "conflict makes any row try again); watch wake-up across processes <= %dx the PING "
           "floor\n",
           TARGET_RATIO, TARGET_ROUND_TRIPS, TARGET_WAKE_IN_PINGS);
    printf("columns: rt/xfer = requests the server read (total_reads_processed) per committed "
           "transfer; rt/try = the same per try (each conflict is one more try); cmds/xfer = "
           "commands the server ran (total_commands_processed, which counts the commands inside "
           "scripts too) per committed transfer\n\n");
    fflush(stdout);

    /* What our two INFO calls themselves add to the counters. */
    struct counters a = server_counters(mon), b = server_counters(mon);
    overhead.reads = b.reads - a.reads;
    overhead.commands = b.commands - a.commands;

    static const size_t sizes[2] = {1024, 16};
    for (int i = 0; i < 2; i++)
        bench_accounts(&cfg, &t, mon, sizes[i], i);

    double ping_us = ping_floor(&cfg, &t, mon);

    printf("Wake-up across processes: from just before the commit (or PUBLISH) until the "
           "child's poll() (or read) returns (median, p90 of %d rounds; the target is on the "
           "median); the send call alone; and from its return to the waking (< 0: it woke "
           "first)\n",
           WAKE_ROUNDS);
    struct wake_result wr[2] = {wake(&t, WAKE_AXSTM), wake(&t, WAKE_PUBSUB)};
    static const char *const wake_name[2] = {"axstm_watch_new + commit", "SUBSCRIBE + PUBLISH"};
    printf("%-26s  %9s  %9s  %12s  %13s  %8s  %9s\n", "row", "median us", "p90 us", "send call us",
           "after send us", "vs PING", "<=2x PING");
    for (int i = 0; i < 101; i++)
        putchar('-');
    putchar('\n');
    for (int i = 0; i < 2; i++) {
        printf("%-26s  ", wake_name[i]);
        if (wr[i].na) {
            printf("n/a (%s)\n", wr[i].code == AXSTM_EINVAL ? "needs remote watches"
                                                            : axstm_strerror(wr[i].code));
            continue;
        }
        printf("%9.1f  %9.1f  %12.1f  %13.1f  %7.2fx  %9s\n", wr[i].p50, wr[i].p90, wr[i].send_p50,
               wr[i].after_p50, wr[i].p50 / ping_us,
               i == 0 ? pass(wr[i].p50 <= TARGET_WAKE_IN_PINGS * ping_us) : "-");
        if (wr[i].early != 0)
            printf("  (%u wake-ups came before their commit and were left out)\n", wr[i].early);
    }
    printf("\n");

    printf("summary of the targets (the worst over the connection counts):\n");
    static const char *const size_name[2] = {"1024 accounts", "16 accounts"};
    for (int row = ROW_SHARED; row < NROWS; row++)
        for (int i = 0; i < 2; i++) {
            const struct verdict *v = &verdicts[i][row];
            if (!v->measured) {
                printf("  %-24s %-13s  n/a (needs remote transactions)\n", row_name[row],
                       size_name[i]);
                continue;
            }
            printf("  %-24s %-13s  >= %.1fx (a): %.2fx %s;  <= %d round trips a try: %.2f %s\n",
                   row_name[row], size_name[i], TARGET_RATIO, v->worst_ratio,
                   pass(v->worst_ratio >= TARGET_RATIO), TARGET_ROUND_TRIPS, v->worst_trips,
                   pass(v->worst_trips <= TARGET_ROUND_TRIPS + 0.005));
        }
    if (wr[0].na)
        printf("  watch wake-up: n/a (needs remote watches)\n");
    else
        printf("  watch wake-up: %.1f us, %.2fx the PING floor (%.1f us): %s\n", wr[0].p50,
               wr[0].p50 / ping_us, ping_us, pass(wr[0].p50 <= TARGET_WAKE_IN_PINGS * ping_us));

    if (address != NULL)
        remove_our_keys(mon, &t);
    redisFree(mon);
    own_server_stop();
    return 0;
}
