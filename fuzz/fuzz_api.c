/* SPDX-License-Identifier: MIT */
/*
 * fuzz_api.c -- a libFuzzer target: the public API, driven by the fuzzer's
 * bytes, checked against a small sequential model of the Axon rules.
 *
 * Each input is a program run on a fresh store by one thread: usevar, using,
 * set, delete, commit (of a value, a collection, or several values at
 * once), refresh, free, the getters, collection access,
 * foreach, stats, transactions (axstm_atomically, axstm_try_atomically,
 * axstm_atomically_timed, with or_else, txn_delete) and watches.  The model
 * is the table key -> (exists, incarnation, version, value) plus the
 * private state of every handle.  Deletes: a committed delete removes the
 * key (foreach and stats.keys no longer see it); handles checked out
 * before it get AXSTM_CONCURRENT_UPDATE for good, also once the key is
 * created again (a new incarnation, whatever its version); usevar, using
 * and refresh create it again at version 0 with no value; reads of a
 * transaction after its own delete give AXSTM_ENOVALUE.  Transactions and
 * watches create no key: only a transaction's commit of a write does.  Every return code, out-parameter and byte is compared with the
 * model, and after every operation so is the whole store (through foreach),
 * its counters, every handle and every watch's descriptor.  A difference
 * aborts with a message on stderr, which libFuzzer reports as a crash.
 * With one thread AXSTM_BUSY_RETRY and AXSTM_CONCURRENT_UPDATE inside a
 * transaction are impossible, so either is a difference too.
 *
 * Before an operation the input may arm an allocation failure
 * (axstm__alloc_fail_after): a call documented to return AXSTM_ENOMEM may
 * then do so and must have changed nothing; any other call must behave as
 * if nothing had been armed.
 *
 * Where the contract leaves a choice the model accepts either answer: which
 * of two bad arguments is reported.  A transaction's delete of a key that
 * does not exist, and that the attempt has not written, "needs no delete":
 * it is a read of the key's absence (a wait watches it), and changes,
 * counts and fires nothing.
 *
 * The encoding (every byte is read with u8(); a short input reads zeros):
 *   op:       one byte; (b & 0x3f) % OP_COUNT is the operation; when
 *             (b & 0xc0) == 0xc0 a second byte f arms a failure of the
 *             (1 + (f & 0x1f))-th allocation, of every one after it too
 *             when f & 0x20.
 *   key:      one byte, see decode_key (8 short names, one of AXSTM_KEY_MAX
 *             bytes, generated names "g<n>", "", one byte too long, NULL).
 *   target:   slot byte and selector byte, see pick_target.
 *   program:  see decode_body.
 */
#include "axstm.h"
#include "alloc.h"

#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ------------------------------------------------------------------ */
/* Input and failure reports                                          */
/* ------------------------------------------------------------------ */

struct input {
    const uint8_t *p;
    size_t n;
};

static uint8_t u8(struct input *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static uint64_t u64(struct input *in)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = x << 8 | u8(in);
    return x;
}

static unsigned long op_index;
static const char *op_name = "setup";

static _Noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static _Noreturn void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "fuzz_api: model mismatch at op %lu (%s): ", op_index, op_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

#define CHECK(cond, ...)       \
    do {                       \
        if (!(cond))           \
            fail(__VA_ARGS__); \
    } while (0)

/* FUZZ_API_TRACE=1 in the environment prints every checked call: for
 * reading what a crashing input does. */
static bool trace;

/* A set of acceptable codes: bit -code for each (all library codes are <= 0). */
#define BIT(code) (1u << -(code))

static void expect_in(const char *call, int got, unsigned mask)
{
    if (trace)
        fprintf(stderr, "    %s -> %d\n", call, got);
    CHECK(got <= 0 && got > -32 && (mask & BIT(got)),
          "%s returned %d (%s), not what the model allows (mask %#x)", call, got,
          axstm_strerror(got), mask);
}

static void expect_rc(const char *call, int got, int want)
{
    if (trace)
        fprintf(stderr, "    %s -> %d\n", call, got);
    CHECK(got == want, "%s returned %d (%s), the model says %d (%s)", call, got,
          axstm_strerror(got), want, axstm_strerror(want));
}

/* Allocation failure armed by the input for the current operation. */
static bool injecting;
static unsigned long inject_n;
static int inject_sticky;

/* Arms the failure just around a library call, so that the harness's own
 * checks in between run without it. */
static void arm(void)
{
    if (injecting)
        axstm__alloc_fail_after(inject_n, inject_sticky);
}

static void disarm(void)
{
    axstm__alloc_fail_after(0, 0);
}

/* True when rc is an AXSTM_ENOMEM the armed failure explains. */
static bool injected_enomem(int rc)
{
    if (trace && injecting && rc == AXSTM_ENOMEM)
        fprintf(stderr, "    (AXSTM_ENOMEM from the armed failure)\n");
    return injecting && rc == AXSTM_ENOMEM;
}

/* ------------------------------------------------------------------ */
/* Keys                                                               */
/* ------------------------------------------------------------------ */

#define NSHORT 8
#define LONG_KEY NSHORT /* the key of exactly AXSTM_KEY_MAX bytes */
#define NFIXED (NSHORT + 1)
#define NGEN 256 /* "g0".."g255": enough keys to grow the table's shards */
#define NKEYS (NFIXED + NGEN)

static const char *const short_names[NSHORT] = {"a",      "b",      "c",      "d",
                                                "acct.1", "acct.2", "fork.1", "\xc3\xa9"};
static char long_ok[AXSTM_KEY_MAX + 1];
static char long_bad[AXSTM_KEY_MAX + 2];
static char gen_names[NGEN][8];

static void init_names(void)
{
    static bool done;
    if (done)
        return;
    memset(long_ok, 'L', AXSTM_KEY_MAX);
    long_ok[AXSTM_KEY_MAX] = '\0';
    memset(long_bad, 'L', AXSTM_KEY_MAX + 1);
    long_bad[AXSTM_KEY_MAX + 1] = '\0';
    for (int i = 0; i < NGEN; i++)
        snprintf(gen_names[i], sizeof gen_names[i], "g%d", i);
    done = true;
}

static const char *key_name(int idx)
{
    if (idx < NSHORT)
        return short_names[idx];
    if (idx == LONG_KEY)
        return long_ok;
    return gen_names[idx - NFIXED];
}

/* The model's index of a key string, or -1 for a key the model never made. */
static int lookup_key(const char *s)
{
    size_t len = strlen(s);
    if (len == AXSTM_KEY_MAX)
        return strcmp(s, long_ok) == 0 ? LONG_KEY : -1;
    if (s[0] == 'g' && len >= 2 && len <= 4) {
        int n = atoi(s + 1);
        if (n >= 0 && n < NGEN && strcmp(s, gen_names[n]) == 0)
            return NFIXED + n;
        return -1;
    }
    for (int i = 0; i < NSHORT; i++)
        if (strcmp(s, short_names[i]) == 0)
            return i;
    return -1;
}

/* A key as passed to the API: valid (idx >= 0) or not (err says why). */
struct kref {
    const char *s;
    int idx;
    int err;
};

static bool key_used[NKEYS]; /* this input named the key (see tidy_gone) */

static struct kref valid_key(int idx)
{
    key_used[idx] = true;
    return (struct kref){key_name(idx), idx, AXSTM_OK};
}

static struct kref decode_key(uint8_t b)
{
    switch (b & 15) {
    case 8:
        return valid_key(LONG_KEY);
    case 9:
        return valid_key(NFIXED + (b >> 4));
    case 10:
        return (struct kref){"", -1, AXSTM_EINVAL};
    case 11:
        return (struct kref){long_bad, -1, AXSTM_E2BIG};
    case 12:
        return (struct kref){NULL, -1, AXSTM_EINVAL};
    case 13:
    case 14:
    case 15:
        return valid_key((b >> 4) & 7);
    default:
        return valid_key(b & 7);
    }
}

/* ------------------------------------------------------------------ */
/* The model                                                          */
/* ------------------------------------------------------------------ */

#define VMAX 24 /* the longest value the input can make */

struct mval {
    bool has; /* false: no value (distinct from an empty one) */
    bool del; /* a delete (a handle's or a transaction's change; has false) */
    uint8_t len;
    uint8_t b[VMAX];
};

struct mkey {
    bool exists;
    uint64_t born; /* the incarnation: a new one each time the key is created */
    uint64_t version;
    struct mval val;
};

/* A handle's private copy of one key. */
struct mitem {
    int key;
    uint64_t born; /* the incarnation checked out */
    uint64_t version;
    struct mval val;
};

#define NSLOTS 6
#define SLOT_MAX 64 /* keys of the biggest collection (op_bulk) */

enum slot_kind { SLOT_EMPTY, SLOT_VALUE, SLOT_COLL };

struct slot {
    enum slot_kind kind;
    axstm_value *v;
    axstm_collection *c;
    size_t n; /* items: 1 for a value */
    struct mitem it[SLOT_MAX];
};

#define NWATCH 3

struct wslot {
    axstm_watch *w; /* NULL: free */
    bool fired;
    bool keys[NKEYS];
};

static struct {
    struct mkey k[NKEYS];
    uint64_t nkeys, commits, conflicts, busy, births;
    struct slot slot[NSLOTS];
    struct wslot w[NWATCH];
} M;

static axstm_store *S;

static void model_create(int key)
{
    if (!M.k[key].exists) {
        M.k[key].exists = true;
        M.k[key].born = ++M.births;
        M.k[key].version = 0;
        M.k[key].val = (struct mval){0};
        M.nkeys++;
    }
}

/* A committed delete: the key is no more (its next life starts afresh). */
static void model_remove(int key)
{
    if (M.k[key].exists) {
        M.k[key].exists = false;
        M.k[key].version = 0;
        M.k[key].val = (struct mval){0};
        M.nkeys--;
    }
}

static struct mitem checkout(int key)
{
    return (struct mitem){key, M.k[key].born, M.k[key].version, M.k[key].val};
}

static void fire(int key)
{
    for (int i = 0; i < NWATCH; i++)
        if (M.w[i].w != NULL && M.w[i].keys[key])
            M.w[i].fired = true;
}

/* Axon's commit rule on items[0..n) (distinct keys), with deletes: a key
 * deleted (or deleted and created again) since the checkout is a conflict
 * whatever the versions say. */
static int model_commit(struct mitem *items, size_t n)
{
    if (n == 0)
        return AXSTM_OK;
    for (size_t i = 0; i < n; i++) {
        const struct mkey *k = &M.k[items[i].key];
        if (!k->exists || k->born != items[i].born || k->version > items[i].version) {
            M.conflicts++;
            return AXSTM_CONCURRENT_UPDATE;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct mkey *k = &M.k[items[i].key];
        /* A handle's version never runs ahead of its key's. */
        CHECK(k->version == items[i].version, "model: handle of %s at %llu, key at %llu",
              key_name(items[i].key), (unsigned long long)items[i].version,
              (unsigned long long)k->version);
        items[i].version++;
        if (items[i].val.del) {
            model_remove(items[i].key);
        } else {
            k->version = items[i].version;
            k->val = items[i].val;
        }
        fire(items[i].key);
    }
    M.commits++;
    return AXSTM_OK;
}

static void mval_set(struct mval *v, const void *data, size_t len)
{
    v->has = true;
    v->del = false;
    v->len = (uint8_t)len;
    if (len != 0)
        memcpy(v->b, data, len);
}

static const struct mval mval_delete = {false, true, 0, {0}};

/* ------------------------------------------------------------------ */
/* Comparing the library with the model                               */
/* ------------------------------------------------------------------ */

static void check_bytes(const char *what, const char *key, const void *data, size_t len,
                        const struct mval *want)
{
    if (!want->has) {
        CHECK(data == NULL && len == 0, "%s of %s: %zu bytes, the model has no value", what, key,
              len);
        return;
    }
    CHECK(data != NULL, "%s of %s: no value, the model has %u bytes", what, key, want->len);
    CHECK(len == want->len, "%s of %s: %zu bytes, the model has %u", what, key, len, want->len);
    CHECK(len == 0 || memcmp(data, want->b, len) == 0, "%s of %s: bytes differ from the model",
          what, key);
}

static void check_handle(axstm_value *v, const struct mitem *it)
{
    const char *key = axstm_value_key(v);
    CHECK(key != NULL && strcmp(key, key_name(it->key)) == 0, "handle's key is %.20s, not %.20s",
          key ? key : "(null)", key_name(it->key));
    CHECK(axstm_value_version(v) == it->version, "handle of %.20s at version %llu, model %llu", key,
          (unsigned long long)axstm_value_version(v), (unsigned long long)it->version);
    size_t len = 12345;
    const void *data = axstm_value_data(v, &len);
    check_bytes("axstm_value_data", key, data, len, &it->val);
}

struct walk {
    bool seen[NKEYS];
    uint64_t visits;
    uint64_t stop_after; /* visits before returning code; UINT64_MAX: never */
    int code;
    bool reenter; /* check the key out from inside the visit too */
};

static int visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    struct walk *w = arg;
    CHECK(key != NULL, "foreach visited a NULL key");
    int idx = lookup_key(key);
    CHECK(idx >= 0, "foreach visited %.40s, a key the model never made", key);
    CHECK(!w->seen[idx], "foreach visited %.40s twice", key);
    w->seen[idx] = true;
    w->visits++;
    const struct mkey *k = &M.k[idx];
    CHECK(k->exists, "foreach visited %.40s, which the model does not have", key);
    CHECK(version == k->version, "foreach: %.40s at version %llu, model %llu", key,
          (unsigned long long)version, (unsigned long long)k->version);
    check_bytes("foreach", key, data, len, &k->val);
    if (w->reenter) {
        /* visit "may call any function of this library" */
        axstm_value *v = NULL;
        expect_rc("axstm_usevar inside foreach", axstm_usevar(S, key, &v), AXSTM_OK);
        struct mitem it = checkout(idx);
        check_handle(v, &it);
        axstm_value_free(v);
    }
    return w->visits == w->stop_after ? w->code : 0;
}

static void check_store(void)
{
    struct walk w;
    memset(&w, 0, sizeof w);
    w.stop_after = UINT64_MAX;
    expect_rc("axstm_store_foreach", axstm_store_foreach(S, visit, &w), AXSTM_OK);
    CHECK(w.visits == M.nkeys, "foreach visited %llu keys, the model has %llu",
          (unsigned long long)w.visits, (unsigned long long)M.nkeys);

    axstm_stats st;
    expect_rc("axstm_store_stats", axstm_store_stats(S, &st), AXSTM_OK);
    CHECK(st.keys == M.nkeys, "stats: %llu keys, model %llu", (unsigned long long)st.keys,
          (unsigned long long)M.nkeys);
    CHECK(st.commits == M.commits, "stats: %llu commits, model %llu",
          (unsigned long long)st.commits, (unsigned long long)M.commits);
    CHECK(st.conflicts == M.conflicts, "stats: %llu conflicts, model %llu",
          (unsigned long long)st.conflicts, (unsigned long long)M.conflicts);
    CHECK(st.busy == M.busy, "stats: %llu busy with one thread", (unsigned long long)st.busy);
    CHECK(st.retries_waited == 0, "stats: %llu waits, and nobody could wake one",
          (unsigned long long)st.retries_waited);
    CHECK(st.bytes > 0, "stats: a store holding 0 bytes");
}

static bool fd_readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, 0);
    CHECK(n >= 0, "poll on a watch descriptor failed");
    return n == 1 && (p.revents & POLLIN);
}

static void check_all(void)
{
    check_store();
    for (int i = 0; i < NSLOTS; i++) {
        struct slot *sl = &M.slot[i];
        if (sl->kind == SLOT_VALUE) {
            check_handle(sl->v, &sl->it[0]);
        } else if (sl->kind == SLOT_COLL) {
            CHECK(axstm_collection_size(sl->c) == sl->n, "collection of %zu keys, model %zu",
                  axstm_collection_size(sl->c), sl->n);
            for (size_t j = 0; j < sl->n; j++) {
                axstm_value *v = axstm_collection_at(sl->c, j);
                CHECK(v != NULL, "collection_at(%zu) of %zu is NULL", j, sl->n);
                check_handle(v, &sl->it[j]);
            }
            CHECK(axstm_collection_at(sl->c, sl->n) == NULL, "collection_at past the end");
        }
    }
    for (int i = 0; i < NWATCH; i++)
        if (M.w[i].w != NULL) {
            int fd = axstm_watch_fd(M.w[i].w);
            CHECK(fd >= 0, "watch_fd gave %d", fd);
            bool r = fd_readable(fd);
            CHECK(r == M.w[i].fired, "watch %d is %sreadable, the model says it %s fired", i,
                  r ? "" : "not ", M.w[i].fired ? "has" : "has not");
        }
}

/* ------------------------------------------------------------------ */
/* Handles                                                            */
/* ------------------------------------------------------------------ */

static void slot_release(struct slot *sl)
{
    if (sl->kind == SLOT_VALUE)
        axstm_value_free(sl->v);
    else if (sl->kind == SLOT_COLL)
        axstm_collection_free(sl->c);
    sl->kind = SLOT_EMPTY;
    sl->v = NULL;
    sl->c = NULL;
    sl->n = 0;
}

static struct slot *pick_slot(struct input *in)
{
    return &M.slot[u8(in) % NSLOTS];
}

/* A value handle to act on and its model. */
struct target {
    axstm_value *v;
    struct mitem *it;
    bool borrowed;
};

/*
 * A value slot gives its handle; a collection gives one of its values,
 * by position (sel odd) or by key (sel even).  Returns false when there is
 * none to act on (after checking the lookup said so too).
 */
static bool pick_target(struct input *in, struct target *t)
{
    struct slot *sl = pick_slot(in);
    uint8_t sel = u8(in);
    if (sl->kind == SLOT_EMPTY)
        return false;
    if (sl->kind == SLOT_VALUE) {
        *t = (struct target){sl->v, &sl->it[0], false};
        return true;
    }
    size_t i;
    axstm_value *v;
    if (sel & 1) {
        i = (size_t)(sel >> 1) % (sl->n + 1);
        v = axstm_collection_at(sl->c, i);
    } else {
        struct kref k = decode_key(sel >> 1);
        v = axstm_collection_value(sl->c, k.s);
        for (i = 0; i < sl->n && (k.idx < 0 || sl->it[i].key != k.idx); i++)
            ;
        CHECK(i == sl->n || v == axstm_collection_at(sl->c, i),
              "collection_value(%.20s) is not collection_at(%zu)", k.s ? k.s : "(null)", i);
    }
    if (i == sl->n) {
        CHECK(v == NULL, "a collection gave a value for a key or position it does not hold");
        return false;
    }
    CHECK(v != NULL, "collection lookup of item %zu gave NULL", i);
    *t = (struct target){v, &sl->it[i], true};
    return true;
}

static void op_usevar(struct input *in)
{
    struct slot *sl = pick_slot(in);
    struct kref k = decode_key(u8(in));
    slot_release(sl);
    axstm_value *v = (axstm_value *)&M; /* a canary: must stay untouched on failure */
    arm();
    int rc = axstm_usevar(S, k.s, &v);
    disarm();
    if (k.idx < 0) {
        expect_rc("axstm_usevar(bad key)", rc, k.err);
    } else if (!injected_enomem(rc)) {
        expect_rc("axstm_usevar", rc, AXSTM_OK);
        model_create(k.idx);
        sl->kind = SLOT_VALUE;
        sl->v = v;
        sl->n = 1;
        sl->it[0] = checkout(k.idx);
        return;
    }
    CHECK(v == (axstm_value *)&M, "axstm_usevar wrote *out on failure");
}

/* using(keys[0..n)) into sl, with the model's expectation. */
static void do_using(struct slot *sl, const struct kref *keys, size_t n, bool null_keys)
{
    const char *names[SLOT_MAX];
    unsigned bad = 0;
    for (size_t i = 0; i < n; i++) {
        names[i] = keys[i].s;
        if (keys[i].idx < 0)
            bad |= BIT(keys[i].err);
    }
    slot_release(sl);
    axstm_collection *c = (axstm_collection *)&M;
    arm();
    int rc = axstm_using(S, null_keys ? NULL : names, n, &c);
    disarm();
    if (bad != 0) {
        /* Which bad key is reported first is not specified. */
        expect_in("axstm_using(bad key)", rc, bad);
    } else if (!injected_enomem(rc)) {
        expect_rc("axstm_using", rc, AXSTM_OK);
        sl->kind = SLOT_COLL;
        sl->c = c;
        sl->n = 0;
        for (size_t i = 0; i < n; i++) {
            model_create(keys[i].idx);
            size_t j = 0;
            while (j < sl->n && sl->it[j].key != keys[i].idx)
                j++;
            if (j == sl->n) /* duplicates count once, first appearance wins */
                sl->it[sl->n++] = checkout(keys[i].idx);
        }
        return;
    }
    CHECK(c == (axstm_collection *)&M, "axstm_using wrote *out on failure");
}

static void op_using(struct input *in)
{
    struct slot *sl = pick_slot(in);
    uint8_t nk = u8(in) % 6;
    if (nk == 5) { /* nkeys 0 with no array at all */
        do_using(sl, NULL, 0, true);
        return;
    }
    struct kref keys[4];
    for (size_t i = 0; i < nk; i++)
        keys[i] = decode_key(u8(in));
    do_using(sl, keys, nk, false);
}

/* Many generated keys at once: grows the table's shards, and with a step
 * of 0 is one key repeated. */
static void op_bulk(struct input *in)
{
    struct slot *sl = pick_slot(in);
    size_t n = 1 + u8(in) % 48;
    unsigned start = u8(in), step = u8(in) % 8;
    struct kref keys[SLOT_MAX];
    for (size_t i = 0; i < n; i++)
        keys[i] = valid_key(NFIXED + (int)((start + i * step) % NGEN));
    do_using(sl, keys, n, false);
}

static void op_set(struct input *in)
{
    struct target t;
    if (!pick_target(in, &t))
        return;
    uint8_t kind = u8(in) % 10;
    uint8_t buf[VMAX + 1];
    struct mval want = {0};
    int rc, expect = AXSTM_OK;
    const char *call = "axstm_value_set";
    size_t len;
    const void *cur;

    switch (kind) {
    case 0: {
        int64_t x = (int64_t)u64(in);
        call = "axstm_value_set_i64";
        arm();
        rc = axstm_value_set_i64(t.v, x);
        disarm();
        mval_set(&want, &x, sizeof x);
        break;
    }
    case 1: { /* a string of up to 15 bytes; a zero byte ends it early */
        len = u8(in) % 16;
        for (size_t i = 0; i < len; i++)
            buf[i] = u8(in);
        buf[len] = '\0';
        call = "axstm_value_set_str";
        arm();
        rc = axstm_value_set_str(t.v, (const char *)buf);
        disarm();
        mval_set(&want, buf, strlen((const char *)buf) + 1);
        break;
    }
    case 2:
    case 3: /* raw bytes: up to 8 inline in the entry, more in a blob */
        len = u8(in) % 21;
        for (size_t i = 0; i < len; i++)
            buf[i] = u8(in);
        arm();
        rc = axstm_value_set(t.v, buf, len);
        disarm();
        mval_set(&want, buf, len);
        break;
    case 4: /* NULL with length 0 is an empty value, not "no value" */
        arm();
        rc = axstm_value_set(t.v, NULL, 0);
        disarm();
        mval_set(&want, NULL, 0);
        break;
    case 5:
        rc = axstm_value_set(t.v, NULL, 1 + u8(in) % 20);
        expect = AXSTM_EINVAL;
        break;
    case 6: /* must be refused before a byte of buf is read */
        rc = axstm_value_set(t.v, buf, AXSTM_VALUE_MAX + 1);
        expect = AXSTM_E2BIG;
        break;
    case 7:
        call = "axstm_value_set_str(NULL)";
        rc = axstm_value_set_str(t.v, NULL);
        expect = AXSTM_EINVAL;
        break;
    default: /* the handle's own bytes, or their tail: set from itself */
        cur = axstm_value_data(t.v, &len);
        if (kind == 9 && len > 0) {
            cur = (const uint8_t *)cur + 1;
            len--;
        }
        if (cur != NULL)
            mval_set(&want, cur, len);
        else
            mval_set(&want, NULL, 0);
        arm();
        rc = axstm_value_set(t.v, cur, len);
        disarm();
        break;
    }
    if (expect == AXSTM_OK && injected_enomem(rc))
        return; /* the handle keeps its old bytes: check_all sees it */
    expect_rc(call, rc, expect);
    if (expect == AXSTM_OK)
        t.it->val = want;
}

static void op_commit(struct input *in)
{
    struct slot *sl = pick_slot(in);
    uint8_t sel = u8(in);
    int rc;
    arm();
    switch (sl->kind) {
    case SLOT_EMPTY:
        rc = axstm_value_commit(NULL);
        disarm();
        expect_rc("axstm_value_commit(NULL)", rc, AXSTM_EINVAL);
        expect_rc("axstm_collection_commit(NULL)", axstm_collection_commit(NULL), AXSTM_EINVAL);
        return;
    case SLOT_VALUE:
        rc = axstm_value_commit(sl->v);
        disarm();
        expect_rc("axstm_value_commit", rc, model_commit(sl->it, 1));
        return;
    case SLOT_COLL:
        if ((sel & 3) == 0 && sl->n > 0) { /* a borrowed value alone: refused */
            rc = axstm_value_commit(axstm_collection_at(sl->c, sel % sl->n));
            disarm();
            expect_rc("axstm_value_commit(borrowed)", rc, AXSTM_EINVAL);
            return;
        }
        rc = axstm_collection_commit(sl->c);
        disarm();
        expect_rc("axstm_collection_commit", rc, model_commit(sl->it, sl->n));
        return;
    }
}

/*
 * axstm_values_commit of the value slots a mask byte picks (bit i: slot
 * i), in an order a second byte rotates; that byte may also add a bad
 * argument: NULL, a value borrowed from a collection, or the first handle
 * again.  Two slots holding handles of one key are a bad argument too.
 */
static void op_values(struct input *in)
{
    uint8_t mask = u8(in), extra = u8(in);
    axstm_value *vals[NSLOTS + 1];
    struct mitem items[NSLOTS];
    int from[NSLOTS];
    size_t n = 0;
    bool bad = false;
    for (int i = 0; i < NSLOTS; i++) {
        int k = (i + extra % NSLOTS) % NSLOTS;
        struct slot *sl = &M.slot[k];
        if (!(mask >> k & 1) || sl->kind != SLOT_VALUE)
            continue;
        for (size_t j = 0; j < n; j++)
            bad |= items[j].key == sl->it[0].key;
        vals[n] = sl->v;
        items[n] = sl->it[0];
        from[n++] = k;
    }
    size_t count = n;
    switch (extra >> 4 & 3) {
    case 1:
        vals[count++] = NULL;
        bad = true;
        break;
    case 2:
        for (int k = 0; k < NSLOTS; k++)
            if (M.slot[k].kind == SLOT_COLL && M.slot[k].n > 0) {
                vals[count++] = axstm_collection_at(M.slot[k].c, 0);
                bad = true;
                break;
            }
        break;
    case 3:
        if (n > 0) {
            vals[count++] = vals[0];
            bad = true;
        }
        break;
    }
    arm();
    int rc = axstm_values_commit(vals, count);
    disarm();
    if (bad) {
        expect_rc("axstm_values_commit(bad)", rc, AXSTM_EINVAL);
        return;
    }
    int want = model_commit(items, n);
    expect_rc("axstm_values_commit", rc, want);
    if (want == AXSTM_OK)
        for (size_t j = 0; j < n; j++)
            M.slot[from[j]].it[0] = items[j];
}

static void op_refresh(struct input *in)
{
    struct slot *sl = pick_slot(in);
    uint8_t sel = u8(in);
    int rc;
    arm();
    switch (sl->kind) {
    case SLOT_EMPTY:
        rc = axstm_value_refresh(NULL);
        disarm();
        expect_rc("axstm_value_refresh(NULL)", rc, AXSTM_EINVAL);
        expect_rc("axstm_collection_refresh(NULL)", axstm_collection_refresh(NULL), AXSTM_EINVAL);
        return;
    case SLOT_VALUE:
        rc = axstm_value_refresh(sl->v);
        disarm();
        /* Refreshing a handle of a deleted key creates it again, which may
         * run out of memory (nothing changed then: check_all sees it). */
        if (!M.k[sl->it[0].key].exists && injected_enomem(rc))
            return;
        expect_rc("axstm_value_refresh", rc, AXSTM_OK);
        model_create(sl->it[0].key);
        sl->it[0] = checkout(sl->it[0].key);
        return;
    case SLOT_COLL:
        if ((sel & 3) == 0 && sl->n > 0) {
            rc = axstm_value_refresh(axstm_collection_at(sl->c, sel % sl->n));
            disarm();
            expect_rc("axstm_value_refresh(borrowed)", rc, AXSTM_EINVAL);
            return;
        }
        rc = axstm_collection_refresh(sl->c);
        disarm();
        bool missing = false;
        for (size_t i = 0; i < sl->n; i++)
            missing |= !M.k[sl->it[i].key].exists;
        if (missing && injected_enomem(rc))
            return;
        expect_rc("axstm_collection_refresh", rc, AXSTM_OK);
        for (size_t i = 0; i < sl->n; i++) {
            model_create(sl->it[i].key);
            sl->it[i] = checkout(sl->it[i].key);
        }
        return;
    }
}

/* axstm_value_delete: a local change, like set (no value from then on);
 * the next commit of the handle or its collection removes the key. */
static void op_delete(struct input *in)
{
    struct target t;
    if (!pick_target(in, &t)) {
        expect_rc("axstm_value_delete(NULL)", axstm_value_delete(NULL), AXSTM_EINVAL);
        return;
    }
    arm(); /* it allocates nothing: an armed failure must change nothing */
    int rc = axstm_value_delete(t.v);
    disarm();
    expect_rc("axstm_value_delete", rc, AXSTM_OK);
    t.it->val = mval_delete;
    /* Often commit it at once, so that keys do go. */
    uint8_t then = u8(in);
    if ((then & 3) == 0)
        return;
    struct slot *sl = NULL;
    for (int i = 0; i < NSLOTS && sl == NULL; i++)
        if (M.slot[i].kind != SLOT_EMPTY &&
            (M.slot[i].kind == SLOT_VALUE
                 ? M.slot[i].v == t.v
                 : t.it >= M.slot[i].it && t.it < M.slot[i].it + M.slot[i].n))
            sl = &M.slot[i];
    CHECK(sl != NULL, "harness: the deleted handle has no slot");
    if (sl->kind == SLOT_VALUE)
        expect_rc("axstm_value_commit(delete)", axstm_value_commit(sl->v), model_commit(sl->it, 1));
    else
        expect_rc("axstm_collection_commit(delete)", axstm_collection_commit(sl->c),
                  model_commit(sl->it, sl->n));
}

static void op_free(struct input *in)
{
    struct slot *sl = pick_slot(in);
    uint8_t sel = u8(in);
    if (sl->kind == SLOT_COLL && (sel & 1) && sl->n > 0) {
        /* Freeing a borrowed value does nothing: the collection stays whole. */
        axstm_value_free(axstm_collection_at(sl->c, sel % sl->n));
        return;
    }
    if (sl->kind == SLOT_EMPTY) {
        axstm_value_free(NULL);
        axstm_collection_free(NULL);
    }
    slot_release(sl);
}

static void op_get(struct input *in)
{
    struct target t;
    if (!pick_target(in, &t))
        return;
    const struct mval *m = &t.it->val;
    uint8_t variant = u8(in) % 4;
    arm();
    if (variant == 0) {
        int64_t x = 0x5a5a5a5a;
        int rc = axstm_value_get_i64(t.v, &x);
        disarm();
        if (!m->has) {
            expect_rc("axstm_value_get_i64", rc, AXSTM_ENOVALUE);
        } else if (m->len != 8) {
            expect_rc("axstm_value_get_i64", rc, AXSTM_ETYPE);
        } else {
            expect_rc("axstm_value_get_i64", rc, AXSTM_OK);
            CHECK(memcmp(&x, m->b, 8) == 0, "axstm_value_get_i64: wrong number");
            return;
        }
        CHECK(x == 0x5a5a5a5a, "axstm_value_get_i64 wrote *out on failure");
    } else if (variant == 1) {
        const char *s = "canary";
        int rc = axstm_value_get_str(t.v, &s);
        disarm();
        if (!m->has) {
            expect_rc("axstm_value_get_str", rc, AXSTM_ENOVALUE);
        } else if (m->len == 0 || memchr(m->b, '\0', m->len) != m->b + m->len - 1) {
            expect_rc("axstm_value_get_str", rc, AXSTM_ETYPE);
        } else {
            expect_rc("axstm_value_get_str", rc, AXSTM_OK);
            CHECK(s == axstm_value_data(t.v, NULL), "get_str does not point at the bytes");
            CHECK(strcmp(s, (const char *)m->b) == 0, "axstm_value_get_str: wrong string");
            return;
        }
        CHECK(strcmp(s, "canary") == 0, "axstm_value_get_str wrote *out on failure");
    } else if (variant == 2) {
        const void *d = axstm_value_data(t.v, NULL); /* len may be NULL */
        disarm();
        CHECK((d != NULL) == m->has, "axstm_value_data(len NULL) disagrees on having a value");
    } else {
        disarm();
        check_handle(t.v, t.it);
        expect_rc("axstm_value_get_i64(out NULL)", axstm_value_get_i64(t.v, NULL), AXSTM_EINVAL);
        expect_rc("axstm_value_get_str(out NULL)", axstm_value_get_str(t.v, NULL), AXSTM_EINVAL);
    }
}

static void op_collection(struct input *in)
{
    struct slot *sl = pick_slot(in);
    struct kref k = decode_key(u8(in));
    if (sl->kind != SLOT_COLL) {
        CHECK(axstm_collection_size(NULL) == 0, "collection_size(NULL) is not 0");
        CHECK(axstm_collection_at(NULL, 0) == NULL, "collection_at(NULL) is not NULL");
        CHECK(axstm_collection_value(NULL, "a") == NULL, "collection_value(NULL) not NULL");
        return;
    }
    CHECK(axstm_collection_size(sl->c) == sl->n, "collection_size %zu, model %zu",
          axstm_collection_size(sl->c), sl->n);
    for (size_t i = 0; i < sl->n; i++)
        CHECK(axstm_collection_value(sl->c, key_name(sl->it[i].key)) ==
                  axstm_collection_at(sl->c, i),
              "collection_value(%.20s) is not collection_at(%zu)", key_name(sl->it[i].key), i);
    CHECK(axstm_collection_at(sl->c, SIZE_MAX) == NULL, "collection_at(SIZE_MAX) not NULL");
    CHECK(axstm_collection_value(sl->c, NULL) == NULL, "collection_value(NULL key) not NULL");
    size_t i = 0;
    while (i < sl->n && (k.idx < 0 || sl->it[i].key != k.idx))
        i++;
    axstm_value *v = axstm_collection_value(sl->c, k.s);
    CHECK(v == (i < sl->n ? axstm_collection_at(sl->c, i) : NULL), "collection_value(%.20s) wrong",
          k.s ? k.s : "(null)");
}

static void op_foreach(struct input *in)
{
    struct walk w;
    memset(&w, 0, sizeof w);
    w.stop_after = 1 + u8(in) % 16;
    w.code = (int8_t)u8(in);
    if (w.code == 0)
        w.code = 42;
    w.reenter = u8(in) & 1;
    int rc = axstm_store_foreach(S, visit, &w);
    if (w.stop_after <= M.nkeys) {
        expect_rc("axstm_store_foreach(stopped)", rc, w.code);
        CHECK(w.visits == w.stop_after, "foreach went on after its visit returned %d", w.code);
    } else {
        expect_rc("axstm_store_foreach", rc, AXSTM_OK);
        CHECK(w.visits == M.nkeys, "foreach visited %llu of %llu keys",
              (unsigned long long)w.visits, (unsigned long long)M.nkeys);
    }
}

/* ------------------------------------------------------------------ */
/* Watches                                                            */
/* ------------------------------------------------------------------ */

static void watch_release(struct wslot *ws)
{
    axstm_watch_free(ws->w);
    ws->w = NULL;
    ws->fired = false;
    memset(ws->keys, 0, sizeof ws->keys);
}

static void op_watch(struct input *in)
{
    uint8_t sub = u8(in) % 4;
    struct wslot *ws = &M.w[u8(in) % NWATCH];
    if (sub == 0) {
        watch_release(ws);
        size_t nk = u8(in) % 5;
        struct kref keys[4];
        const char *names[4];
        unsigned bad = 0;
        for (size_t i = 0; i < nk; i++) {
            keys[i] = decode_key(u8(in));
            names[i] = keys[i].s;
            if (keys[i].idx < 0)
                bad |= BIT(keys[i].err);
        }
        axstm_watch *w = (axstm_watch *)&M;
        arm();
        int rc = axstm_watch_new(S, nk ? names : NULL, nk, &w);
        disarm();
        if (bad != 0) {
            expect_in("axstm_watch_new(bad key)", rc, bad);
        } else if (!injected_enomem(rc)) {
            expect_rc("axstm_watch_new", rc, AXSTM_OK);
            ws->w = w;
            for (size_t i = 0; i < nk; i++)
                ws->keys[keys[i].idx] = true; /* watching creates no key */
            return;
        }
        CHECK(w == (axstm_watch *)&M, "axstm_watch_new wrote *out on failure");
    } else if (sub == 1) {
        if (ws->w == NULL) {
            expect_rc("axstm_watch_rearm(NULL)", axstm_watch_rearm(NULL), AXSTM_EINVAL);
            return;
        }
        expect_rc("axstm_watch_rearm", axstm_watch_rearm(ws->w), AXSTM_OK);
        ws->fired = false;
    } else if (sub == 2) {
        watch_release(ws);
    } else {
        if (ws->w == NULL)
            expect_rc("axstm_watch_fd(NULL)", axstm_watch_fd(NULL), AXSTM_EINVAL);
        else
            CHECK(axstm_watch_fd(ws->w) >= 0, "axstm_watch_fd < 0");
    }
}

/* ------------------------------------------------------------------ */
/* Transactions                                                       */
/* ------------------------------------------------------------------ */

enum {
    T_GET,      /* key, how (data and len, len only, neither, neither after a prefetch) */
    T_GET_I64,  /* key */
    T_SET,      /* key, value */
    T_SET_BAD,  /* key, which: NULL data with a length, or too long */
    T_OR_ELSE,  /* first body, second body */
    T_NESTED,   /* calls that are refused inside a body */
    T_GET_MANY, /* count, start: reads past the inline arrays */
    T_SET_MANY, /* count, start, x: writes past the inline arrays */
    T_DELETE,   /* key */
    T_KINDS
};

#define TB_MAX 12  /* bodies per program */
#define TOP_MAX 10 /* operations per body */
#define MANY_MAX 40
#define WLOG_MAX (TB_MAX * TOP_MAX * MANY_MAX)
#define KEPT_MAX 512

struct top {
    uint8_t kind, how, count;
    struct kref key;
    struct mval val;
    int64_t x;
    int a, b; /* T_OR_ELSE: bodies */
};

struct tbody {
    int nops;
    struct top op[TOP_MAX];
    int result; /* what the body returns when every operation went well */
};

struct prog {
    int nb;
    struct tbody b[TB_MAX];
};

static struct kref many_key(unsigned start, unsigned i)
{
    unsigned k = (start + i) % (NFIXED + 16);
    return valid_key((int)k);
}

/*
 * A body: nops = u8 % (TOP_MAX + 1), the operations, then its result:
 * t = u8 % 8: 0..3 commit (0); 4, 5 AXSTM_RETRY where allowed, else 0;
 * 6, 7 a positive rollback code 1 + u8 % 100.  AXSTM_RETRY is allowed in
 * the first branch of an or_else, and elsewhere only where the run may
 * return it (axstm_try_atomically, axstm_atomically_timed): a body that
 * retried under axstm_atomically would wait forever for another thread.
 */
static void decode_body(struct input *in, struct prog *p, int bi, int depth, bool retry_ok)
{
    struct tbody *b = &p->b[bi];
    b->nops = u8(in) % (TOP_MAX + 1);
    for (int i = 0; i < b->nops; i++) {
        struct top *o = &b->op[i];
        memset(o, 0, sizeof *o);
        o->kind = u8(in) % T_KINDS;
        if (o->kind == T_OR_ELSE && (depth >= 3 || p->nb + 2 > TB_MAX))
            o->kind = T_GET;
        switch (o->kind) {
        case T_GET:
            o->key = decode_key(u8(in));
            o->how = u8(in) % 4;
            break;
        case T_GET_I64:
        case T_DELETE:
            o->key = decode_key(u8(in));
            break;
        case T_SET: {
            o->key = decode_key(u8(in));
            uint8_t v = u8(in) % 3;
            if (v == 0) {
                int64_t x = (int64_t)u64(in);
                mval_set(&o->val, &x, sizeof x);
            } else if (v == 1) {
                uint8_t buf[VMAX];
                size_t len = u8(in) % 21;
                for (size_t j = 0; j < len; j++)
                    buf[j] = u8(in);
                mval_set(&o->val, buf, len);
            } else {
                o->how = 1; /* NULL data, length 0: an empty value */
                mval_set(&o->val, NULL, 0);
            }
            break;
        }
        case T_SET_BAD:
            o->key = decode_key(u8(in));
            o->how = u8(in) & 1;
            break;
        case T_OR_ELSE: /* both bodies' places are taken before either is filled */
            o->a = p->nb++;
            o->b = p->nb++;
            decode_body(in, p, o->a, depth + 1, true);
            decode_body(in, p, o->b, depth + 1, retry_ok);
            break;
        case T_GET_MANY:
        case T_SET_MANY:
            o->count = 1 + u8(in) % MANY_MAX;
            o->how = u8(in);
            o->x = (int8_t)u8(in);
            break;
        default:
            break;
        }
    }
    uint8_t t = u8(in) % 8;
    if (t < 4 || (t < 6 && !retry_ok))
        b->result = AXSTM_OK;
    else if (t < 6)
        b->result = AXSTM_RETRY;
    else
        b->result = 1 + u8(in) % 100;
}

struct wlog {
    int key;
    bool live; /* false once an or_else dropped it */
    struct mval val;
};

struct frame {
    int a, b, calls, first_rc, second_rc;
    size_t mark; /* write log length when the or_else began */
};

/* Bytes handed out by axstm_txn_get: they must stay put until the attempt ends. */
struct kept {
    const void *p;
    struct mval val;
};

static struct run {
    const struct prog *p;
    int calls, body_rc;
    struct wlog w[WLOG_MAX];
    size_t nw;
    bool read[NKEYS];
    size_t nreads;
    struct frame fr[8];
    int nfr;
    struct kept kept[KEPT_MAX];
    size_t nkept;
} R;

static int top_fn(axstm_txn *tx, void *arg);

/* What the attempt sees for key: its own latest live write (a delete:
 * no value), or the committed value (no value for a key that does not
 * exist: reading creates nothing).  A read of the store is recorded (a
 * wait watches it, whether the key exists or not). */
static const struct mval *tx_view(struct run *r, int key)
{
    static const struct mval none;
    for (size_t i = r->nw; i-- > 0;)
        if (r->w[i].live && r->w[i].key == key)
            return r->w[i].val.del ? &none : &r->w[i].val;
    r->read[key] = true;
    r->nreads++;
    return M.k[key].exists ? &M.k[key].val : &none;
}

/* A txn call failed with an injected ENOMEM: it changed nothing, and
 * created no key (transactions never do), so neither does the model. */
static int tx_enomem(struct run *r, const struct kref *k)
{
    (void)r;
    (void)k;
    return AXSTM_ENOMEM;
}

static int tx_get(axstm_txn *tx, struct run *r, const struct kref *k, int how)
{
    static const char canary[] = "canary";
    const void *data = canary;
    size_t len = 777;
    int rc;
    if (how == 0)
        rc = axstm_txn_get(tx, k->s, &data, &len);
    else if (how == 1)
        rc = axstm_txn_get(tx, k->s, NULL, &len);
    else if (how == 2)
        rc = axstm_txn_get(tx, k->s, NULL, NULL);
    else {
        /* The key prefetched (twice: the second is passed over), then got. */
        const char *const keys[2] = {k->s, k->s};
        rc = axstm_txn_prefetch(tx, keys, 2);
        if (k->idx < 0) {
            expect_rc("axstm_txn_prefetch(bad key)", rc, k->err);
            return AXSTM_OK;
        }
        if (injected_enomem(rc))
            return tx_enomem(r, k);
        expect_rc("axstm_txn_prefetch", rc, AXSTM_OK);
        rc = axstm_txn_get(tx, k->s, NULL, NULL);
    }
    if (k->idx < 0) {
        expect_rc("axstm_txn_get(bad key)", rc, k->err);
        return AXSTM_OK; /* nothing happened: go on */
    }
    if (injected_enomem(rc))
        return tx_enomem(r, k);
    const struct mval *want = tx_view(r, k->idx);
    if (!want->has) {
        expect_rc("axstm_txn_get", rc, AXSTM_ENOVALUE);
        CHECK(data == canary && len == 777, "axstm_txn_get wrote its out-parameters on ENOVALUE");
        return AXSTM_OK;
    }
    expect_rc("axstm_txn_get", rc, AXSTM_OK);
    if (how >= 2)
        return AXSTM_OK;
    CHECK(len == want->len, "axstm_txn_get of %.20s: %zu bytes, model %u", k->s, len, want->len);
    if (how == 0) {
        check_bytes("axstm_txn_get", k->s, data, len, want);
        if (r->nkept < KEPT_MAX)
            r->kept[r->nkept++] = (struct kept){data, *want};
    } else {
        CHECK(data == canary, "axstm_txn_get wrote *data although it was NULL");
    }
    return AXSTM_OK;
}

static int tx_get_i64(axstm_txn *tx, struct run *r, const struct kref *k)
{
    int64_t x = 0x5a5a;
    int rc = axstm_txn_get_i64(tx, k->s, &x);
    if (k->idx < 0) {
        expect_rc("axstm_txn_get_i64(bad key)", rc, k->err);
        return AXSTM_OK;
    }
    if (injected_enomem(rc))
        return tx_enomem(r, k);
    const struct mval *want = tx_view(r, k->idx);
    if (want->has && want->len == 8) {
        expect_rc("axstm_txn_get_i64", rc, AXSTM_OK);
        CHECK(memcmp(&x, want->b, 8) == 0, "axstm_txn_get_i64: wrong number");
        return AXSTM_OK;
    }
    expect_rc("axstm_txn_get_i64", rc, want->has ? AXSTM_ETYPE : AXSTM_ENOVALUE);
    CHECK(x == 0x5a5a, "axstm_txn_get_i64 wrote *out on failure");
    return AXSTM_OK;
}

static int tx_set(axstm_txn *tx, struct run *r, const struct kref *k, const struct mval *v,
                  bool null_data)
{
    int rc = axstm_txn_set(tx, k->s, null_data ? NULL : v->b, v->len);
    if (k->idx < 0) {
        expect_rc("axstm_txn_set(bad key)", rc, k->err);
        return AXSTM_OK;
    }
    if (injected_enomem(rc))
        return tx_enomem(r, k);
    expect_rc("axstm_txn_set", rc, AXSTM_OK);
    CHECK(r->nw < WLOG_MAX, "harness: write log full");
    r->w[r->nw++] = (struct wlog){k->idx, true, *v};
    return AXSTM_OK;
}

static bool watched(int key)
{
    for (int i = 0; i < NWATCH; i++)
        if (M.w[i].w != NULL && M.w[i].keys[key])
            return true;
    return false;
}

static int tx_delete(axstm_txn *tx, struct run *r, const struct kref *k)
{
    int rc = axstm_txn_delete(tx, k->s);
    if (k->idx < 0) {
        expect_rc("axstm_txn_delete(bad key)", rc, k->err);
        return AXSTM_OK;
    }
    if (injected_enomem(rc))
        return tx_enomem(r, k);
    expect_rc("axstm_txn_delete", rc, AXSTM_OK);
    /* A key that does not exist, which this attempt has not written: its
     * absence is read instead (see the top of this file). */
    bool written = false;
    for (size_t i = 0; i < r->nw && !written; i++)
        written = r->w[i].live && r->w[i].key == k->idx;
    if (!written && !M.k[k->idx].exists) {
        (void)tx_view(r, k->idx);
        return AXSTM_OK;
    }
    CHECK(r->nw < WLOG_MAX, "harness: write log full");
    r->w[r->nw++] = (struct wlog){k->idx, true, mval_delete};
    return AXSTM_OK;
}

static int exec_body(axstm_txn *tx, struct run *r, int bi);

/* Both branches of every or_else: the innermost frame says which is due. */
static int branch_fn(axstm_txn *tx, void *arg)
{
    struct run *r = arg;
    CHECK(r->nfr > 0, "an or_else branch ran outside its or_else");
    struct frame *f = &r->fr[r->nfr - 1];
    int which = f->calls++;
    CHECK(which < 2, "or_else ran a third branch");
    if (which == 1) {
        CHECK(f->first_rc == AXSTM_RETRY, "or_else ran its second branch after %d", f->first_rc);
        for (size_t i = f->mark; i < r->nw; i++)
            r->w[i].live = false; /* the first branch's writes are dropped */
    }
    int rc = exec_body(tx, r, which == 0 ? f->a : f->b);
    if (which == 0)
        f->first_rc = rc;
    else
        f->second_rc = rc;
    return rc;
}

static int nested_calls(axstm_txn *tx, struct run *r)
{
    int calls = r->calls;
    expect_rc("axstm_atomically inside a body", axstm_atomically(S, top_fn, r), AXSTM_EINVAL);
    axstm_watch *w = (axstm_watch *)&M;
    expect_rc("axstm_try_atomically inside a body", axstm_try_atomically(S, top_fn, r, &w),
              AXSTM_EINVAL);
    CHECK(w == (axstm_watch *)&M, "axstm_try_atomically wrote *w on EINVAL");
    expect_rc("axstm_atomically_timed inside a body", axstm_atomically_timed(S, top_fn, r, 0),
              AXSTM_EINVAL);
    CHECK(r->calls == calls, "a nested transaction ran its body");
    expect_rc("axstm_or_else(first NULL)", axstm_or_else(tx, NULL, branch_fn, r), AXSTM_EINVAL);
    expect_rc("axstm_or_else(second NULL)", axstm_or_else(tx, branch_fn, NULL, r), AXSTM_EINVAL);
    expect_rc("axstm_or_else(tx NULL)", axstm_or_else(NULL, branch_fn, branch_fn, r), AXSTM_EINVAL);
    expect_rc("axstm_txn_get(tx NULL)", axstm_txn_get(NULL, "a", NULL, NULL), AXSTM_EINVAL);
    expect_rc("axstm_txn_set(tx NULL)", axstm_txn_set(NULL, "a", "x", 1), AXSTM_EINVAL);
    expect_rc("axstm_txn_get_i64(out NULL)", axstm_txn_get_i64(tx, "a", NULL), AXSTM_EINVAL);
    expect_rc("axstm_txn_delete(tx NULL)", axstm_txn_delete(NULL, "a"), AXSTM_EINVAL);
    static const char *const one[1] = {"a"};
    expect_rc("axstm_txn_prefetch(tx NULL)", axstm_txn_prefetch(NULL, one, 1), AXSTM_EINVAL);
    expect_rc("axstm_txn_prefetch(keys NULL)", axstm_txn_prefetch(tx, NULL, 1), AXSTM_EINVAL);
    return AXSTM_OK;
}

static int exec_op(axstm_txn *tx, struct run *r, const struct top *o)
{
    switch (o->kind) {
    case T_GET:
        return tx_get(tx, r, &o->key, o->how);
    case T_GET_I64:
        return tx_get_i64(tx, r, &o->key);
    case T_SET:
        return tx_set(tx, r, &o->key, &o->val, o->how == 1);
    case T_DELETE:
        return tx_delete(tx, r, &o->key);
    case T_SET_BAD: {
        int rc = o->how ? axstm_txn_set(tx, o->key.s, "x", AXSTM_VALUE_MAX + 1)
                        : axstm_txn_set(tx, o->key.s, NULL, 3);
        unsigned mask = BIT(o->how ? AXSTM_E2BIG : AXSTM_EINVAL);
        if (o->key.idx < 0)
            mask |= BIT(o->key.err); /* which of two errors wins is not specified */
        expect_in("axstm_txn_set(bad value)", rc, mask);
        return AXSTM_OK;
    }
    case T_OR_ELSE: {
        CHECK(r->nfr < 8, "harness: or_else too deep");
        struct frame *f = &r->fr[r->nfr++];
        *f = (struct frame){o->a, o->b, 0, 0, 0, r->nw};
        int rc = axstm_or_else(tx, branch_fn, branch_fn, r);
        r->nfr--;
        CHECK(f->calls == 1 || f->calls == 2, "or_else ran %d branches", f->calls);
        expect_rc("axstm_or_else", rc, f->calls == 1 ? f->first_rc : f->second_rc);
        return rc;
    }
    case T_NESTED:
        return nested_calls(tx, r);
    case T_GET_MANY:
        for (unsigned i = 0; i < o->count; i++) {
            struct kref k = many_key(o->how, i);
            int rc = tx_get(tx, r, &k, 0);
            if (rc != AXSTM_OK)
                return rc;
        }
        return AXSTM_OK;
    case T_SET_MANY:
        for (unsigned i = 0; i < o->count; i++) {
            struct kref k = many_key(o->how, i);
            int64_t x = o->x + (int64_t)i;
            struct mval v;
            mval_set(&v, &x, sizeof x);
            int rc = tx_set(tx, r, &k, &v, false);
            if (rc != AXSTM_OK)
                return rc;
        }
        return AXSTM_OK;
    default:
        fail("harness: unknown transaction op %u", o->kind);
    }
}

static int exec_body(axstm_txn *tx, struct run *r, int bi)
{
    const struct tbody *b = &r->p->b[bi];
    for (int i = 0; i < b->nops; i++) {
        int rc = exec_op(tx, r, &b->op[i]);
        /* Library codes are passed straight back, as bodies should. */
        if (rc != AXSTM_OK)
            return rc;
    }
    return b->result;
}

static int top_fn(axstm_txn *tx, void *arg)
{
    struct run *r = arg;
    /* With one thread nothing can conflict: a re-run is a mismatch. */
    CHECK(++r->calls == 1, "the body ran %d times with no other thread", r->calls);
    int rc = exec_body(tx, r, 0);
    for (size_t i = 0; i < r->nkept; i++)
        check_bytes("bytes kept from axstm_txn_get", "(kept)", r->kept[i].p, r->kept[i].val.len,
                    &r->kept[i].val);
    r->body_rc = rc;
    return rc;
}

/* Publishes the attempt's latest live write of each key: a set creates a
 * missing key (a new incarnation, at version 1), a delete removes it (one
 * of a key that does not exist changes nothing, but is a commit of it). */
static void tx_apply(struct run *r)
{
    bool done[NKEYS] = {0};
    bool any = false;
    for (size_t i = r->nw; i-- > 0;) {
        struct wlog *w = &r->w[i];
        if (!w->live || done[w->key])
            continue;
        done[w->key] = true;
        any = true;
        if (w->val.del) {
            model_remove(w->key);
        } else {
            model_create(w->key);
            M.k[w->key].version++;
            M.k[w->key].val = w->val;
        }
        fire(w->key);
    }
    if (any)
        M.commits++; /* a read-only transaction publishes nothing */
}

enum { MODE_ATOMICALLY, MODE_TRY, MODE_TIMED };

static void op_txn(struct input *in, int mode)
{
    static struct prog p;
    int64_t timeout = 0;
    if (mode == MODE_TIMED) {
        static const int64_t timeouts[4] = {0, 1000, -1, 0};
        timeout = timeouts[u8(in) % 4];
    }
    p.nb = 1;
    decode_body(in, &p, 0, 0, mode != MODE_ATOMICALLY);

    struct run *r = &R;
    r->p = &p;
    r->calls = 0;
    r->body_rc = 0;
    r->nw = 0;
    r->nreads = 0;
    r->nfr = 0;
    r->nkept = 0;
    memset(r->read, 0, sizeof r->read);

    axstm_watch *w = (axstm_watch *)&M;
    int rc;
    const char *call;
    arm();
    if (mode == MODE_ATOMICALLY) {
        call = "axstm_atomically";
        rc = axstm_atomically(S, top_fn, r);
    } else if (mode == MODE_TRY) {
        call = "axstm_try_atomically";
        rc = axstm_try_atomically(S, top_fn, r, &w);
    } else {
        call = "axstm_atomically_timed";
        rc = axstm_atomically_timed(S, top_fn, r, timeout);
    }
    disarm();
    if (timeout < 0) {
        expect_rc("axstm_atomically_timed(negative)", rc, AXSTM_EINVAL);
        CHECK(r->calls == 0, "a refused transaction ran its body");
        return;
    }
    CHECK(r->calls == 1, "%s ran the body %d times", call, r->calls);

    if (r->body_rc == AXSTM_OK) {
        if (injected_enomem(rc))
            ; /* the commit's own allocation failed: nothing published */
        else {
            expect_rc(call, rc, AXSTM_OK);
            tx_apply(r);
        }
    } else if (r->body_rc == AXSTM_RETRY) {
        CHECK(mode != MODE_ATOMICALLY, "harness: a body retried under axstm_atomically");
        if (r->nreads == 0)
            expect_rc(call, rc, AXSTM_EINVAL); /* it would wait forever */
        else if (!injected_enomem(rc))
            expect_rc(call, rc, mode == MODE_TRY ? AXSTM_RETRY : AXSTM_ETIMEDOUT);
    } else {
        expect_rc(call, rc, r->body_rc); /* rolled back, nothing published */
    }

    if (mode != MODE_TRY)
        return;
    if (rc != AXSTM_RETRY) {
        CHECK(w == (axstm_watch *)&M, "axstm_try_atomically wrote *w without AXSTM_RETRY");
        return;
    }
    CHECK(w != NULL && w != (axstm_watch *)&M, "axstm_try_atomically gave no watch");
    /* The watch covers every key the attempt read, in any branch. */
    struct wslot *ws = NULL;
    for (int i = 0; i < NWATCH && ws == NULL; i++)
        if (M.w[i].w == NULL)
            ws = &M.w[i];
    if (ws == NULL) {
        CHECK(fd_readable(axstm_watch_fd(w)) == false, "a fresh watch is readable");
        axstm_watch_free(w);
        return;
    }
    ws->w = w;
    ws->fired = false;
    memcpy(ws->keys, r->read, sizeof ws->keys);
}

/* ------------------------------------------------------------------ */
/* Arguments the API must refuse, and the store under allocation failure */
/* ------------------------------------------------------------------ */

static int never_fn(axstm_txn *tx, void *arg)
{
    (void)tx;
    (void)arg;
    fail("a refused transaction ran its body");
}

static int never_visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    (void)key;
    (void)version;
    (void)data;
    (void)len;
    (void)arg;
    fail("a refused foreach visited a key");
}

/*
 * One key committed over and over with values too long to be inline: every
 * commit retires a blob, and every 64 retirements run a reclamation, while
 * the slots' handles may still share an old blob (check_all then reads it).
 */
static void churn(struct input *in)
{
    struct kref k = decode_key(u8(in));
    unsigned count = 1 + u8(in) % 80;
    uint8_t seed = u8(in);
    if (k.idx < 0)
        return;
    axstm_value *v;
    expect_rc("axstm_usevar", axstm_usevar(S, k.s, &v), AXSTM_OK);
    model_create(k.idx);
    struct mitem it = checkout(k.idx);
    for (unsigned i = 0; i < count; i++) {
        uint8_t buf[VMAX];
        size_t len = 9 + i % 12;
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)(seed + i + j);
        expect_rc("axstm_value_set", axstm_value_set(v, buf, len), AXSTM_OK);
        mval_set(&it.val, buf, len);
        expect_rc("axstm_value_commit", axstm_value_commit(v), model_commit(&it, 1));
    }
    check_handle(v, &it);
    axstm_value_free(v);
}

static void op_misc(struct input *in)
{
    uint8_t what = u8(in);
    if ((what & 3) == 2) {
        churn(in);
        return;
    }
    if (what & 1) {
        /* A store made while allocations fail: NULL or a working store. */
        axstm__alloc_fail_after(1 + (what >> 1) % 8, what & 0x80);
        axstm_store *s = axstm_store_new();
        disarm();
        if (s != NULL) {
            axstm_value *v;
            expect_rc("usevar on a store made under failure", axstm_usevar(s, "a", &v), AXSTM_OK);
            expect_rc("commit on a store made under failure", axstm_value_commit(v), AXSTM_OK);
            axstm_value_free(v);
            axstm_store_free(s);
        }
        return;
    }
    axstm_value *v = (axstm_value *)&M;
    axstm_collection *c = (axstm_collection *)&M;
    const char *keys[1] = {"a"};
    expect_rc("axstm_usevar(NULL store)", axstm_usevar(NULL, "a", &v), AXSTM_EINVAL);
    expect_rc("axstm_usevar(NULL out)", axstm_usevar(S, "a", NULL), AXSTM_EINVAL);
    expect_rc("axstm_using(NULL store)", axstm_using(NULL, keys, 1, &c), AXSTM_EINVAL);
    expect_rc("axstm_using(NULL keys)", axstm_using(S, NULL, 1, &c), AXSTM_EINVAL);
    expect_rc("axstm_using(NULL out)", axstm_using(S, keys, 1, NULL), AXSTM_EINVAL);
    CHECK(v == (axstm_value *)&M && c == (axstm_collection *)&M, "*out written on EINVAL");
    expect_rc("axstm_value_set(NULL)", axstm_value_set(NULL, "x", 1), AXSTM_EINVAL);
    expect_rc("axstm_value_set_i64(NULL)", axstm_value_set_i64(NULL, 1), AXSTM_EINVAL);
    expect_rc("axstm_value_set_str(NULL)", axstm_value_set_str(NULL, "x"), AXSTM_EINVAL);
    int64_t x;
    const char *s;
    expect_rc("axstm_value_get_i64(NULL)", axstm_value_get_i64(NULL, &x), AXSTM_EINVAL);
    expect_rc("axstm_value_get_str(NULL)", axstm_value_get_str(NULL, &s), AXSTM_EINVAL);
    CHECK(axstm_value_key(NULL) == NULL, "axstm_value_key(NULL)");
    CHECK(axstm_value_version(NULL) == 0, "axstm_value_version(NULL)");
    size_t len = 99;
    CHECK(axstm_value_data(NULL, &len) == NULL && len == 0, "axstm_value_data(NULL)");
    expect_rc("axstm_atomically(NULL store)", axstm_atomically(NULL, never_fn, NULL), AXSTM_EINVAL);
    expect_rc("axstm_atomically(NULL fn)", axstm_atomically(S, NULL, NULL), AXSTM_EINVAL);
    expect_rc("axstm_atomically_timed(NULL fn)", axstm_atomically_timed(S, NULL, NULL, 0),
              AXSTM_EINVAL);
    axstm_watch *w = (axstm_watch *)&M;
    expect_rc("axstm_try_atomically(NULL w)", axstm_try_atomically(S, never_fn, NULL, NULL),
              AXSTM_EINVAL);
    expect_rc("axstm_try_atomically(NULL fn)", axstm_try_atomically(S, NULL, NULL, &w),
              AXSTM_EINVAL);
    expect_rc("axstm_or_else outside a body", axstm_or_else(NULL, never_fn, never_fn, NULL),
              AXSTM_EINVAL);
    expect_rc("axstm_txn_get outside a body", axstm_txn_get(NULL, "a", NULL, NULL), AXSTM_EINVAL);
    expect_rc("axstm_txn_set_i64 outside a body", axstm_txn_set_i64(NULL, "a", 1), AXSTM_EINVAL);
    expect_rc("axstm_watch_new(NULL store)", axstm_watch_new(NULL, keys, 1, &w), AXSTM_EINVAL);
    expect_rc("axstm_watch_new(NULL keys)", axstm_watch_new(S, NULL, 1, &w), AXSTM_EINVAL);
    expect_rc("axstm_watch_new(NULL out)", axstm_watch_new(S, keys, 1, NULL), AXSTM_EINVAL);
    CHECK(w == (axstm_watch *)&M, "*w written on EINVAL");
    axstm_watch_free(NULL);
    expect_rc("axstm_store_foreach(NULL)", axstm_store_foreach(NULL, never_visit, NULL),
              AXSTM_EINVAL);
    expect_rc("axstm_store_foreach(NULL visit)", axstm_store_foreach(S, NULL, NULL), AXSTM_EINVAL);
    axstm_stats st;
    expect_rc("axstm_store_stats(NULL)", axstm_store_stats(NULL, &st), AXSTM_EINVAL);
    expect_rc("axstm_store_stats(NULL out)", axstm_store_stats(S, NULL), AXSTM_EINVAL);
    axstm_store_free(NULL);
    for (int code = -12; code <= 3; code++)
        CHECK(axstm_strerror(code) != NULL && axstm_strerror(code)[0] != '\0',
              "axstm_strerror(%d) is empty", code);
}

/*
 * After a call made while an allocation failure was armed: a key that does
 * not exist may still have an entry in the table, which a removal could
 * not take out (it allocates; the entry stays "until a later chance").
 * The API cannot show it: a transaction's delete of a key that does not
 * exist reads its absence whether an entry is left or not (see the top of
 * this file).  A transaction that reads the key and rolls back gives it
 * its later chance all the same, so that the operations that follow run
 * on the table a run without armed failures would have, and the removal
 * path runs after failures too.  One key per transaction, so that nothing
 * can make it run twice.
 */
static int tidy_fn(axstm_txn *tx, void *arg)
{
    const int *key = arg;
    expect_rc("axstm_txn_get (tidy)", axstm_txn_get(tx, key_name(*key), NULL, NULL),
              AXSTM_ENOVALUE);
    return 99; /* roll back */
}

static void tidy_gone(void)
{
    for (int k = 0; k < NKEYS; k++)
        if (key_used[k] && !M.k[k].exists && !watched(k))
            expect_rc("axstm_atomically (tidy)", axstm_atomically(S, tidy_fn, &k), 99);
}

/* ------------------------------------------------------------------ */
/* The driver                                                         */
/* ------------------------------------------------------------------ */

enum {
    OP_USEVAR,
    OP_USING,
    OP_SET,
    OP_SET2,
    OP_COMMIT,
    OP_REFRESH,
    OP_FREE,
    OP_GET,
    OP_COLLECTION,
    OP_FOREACH,
    OP_ATOMICALLY,
    OP_TRY,
    OP_TIMED,
    OP_WATCH,
    OP_BULK,
    OP_MISC,
    OP_DELETE,
    OP_VALUES,
    OP_COUNT
};

static const char *const op_names[OP_COUNT] = {
    "usevar",           "using",        "set",        "set",
    "commit",           "refresh",      "free",       "get",
    "collection",       "foreach",      "atomically", "try_atomically",
    "atomically_timed", "watch",        "bulk using", "misc",
    "delete",           "values_commit"};

#define MAX_OPS 256 /* keeps every input quick */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init_names();
    trace = getenv("FUZZ_API_TRACE") != NULL;
    memset(&M, 0, sizeof M);
    memset(key_used, 0, sizeof key_used);
    op_index = 0;
    op_name = "axstm_store_new";
    injecting = false;
    S = axstm_store_new();
    CHECK(S != NULL, "axstm_store_new failed");
    check_all();

    struct input in = {data, size};
    for (op_index = 1; in.n > 0 && op_index <= MAX_OPS; op_index++) {
        uint8_t b = u8(&in);
        injecting = false;
        if ((b & 0xc0) == 0xc0) {
            uint8_t f = u8(&in);
            injecting = true;
            inject_n = 1 + (f & 0x1f);
            inject_sticky = (f & 0x20) != 0;
        }
        int op = (b & 0x3f) % OP_COUNT;
        op_name = op_names[op];
        if (trace)
            fprintf(stderr, "op %lu: %s%s\n", op_index, op_name,
                    injecting ? " (allocation failure armed)" : "");
        switch (op) {
        case OP_USEVAR:
            op_usevar(&in);
            break;
        case OP_USING:
            op_using(&in);
            break;
        case OP_SET:
        case OP_SET2:
            op_set(&in);
            break;
        case OP_COMMIT:
            op_commit(&in);
            break;
        case OP_REFRESH:
            op_refresh(&in);
            break;
        case OP_FREE:
            op_free(&in);
            break;
        case OP_GET:
            op_get(&in);
            break;
        case OP_COLLECTION:
            op_collection(&in);
            break;
        case OP_FOREACH:
            op_foreach(&in);
            break;
        case OP_ATOMICALLY:
            op_txn(&in, MODE_ATOMICALLY);
            break;
        case OP_TRY:
            op_txn(&in, MODE_TRY);
            break;
        case OP_TIMED:
            op_txn(&in, MODE_TIMED);
            break;
        case OP_WATCH:
            op_watch(&in);
            break;
        case OP_BULK:
            op_bulk(&in);
            break;
        case OP_DELETE:
            op_delete(&in);
            break;
        case OP_VALUES:
            op_values(&in);
            break;
        default:
            op_misc(&in);
            break;
        }
        if (injecting) {
            injecting = false;
            tidy_gone();
        }
        check_all();
    }

    op_name = "teardown";
    for (int i = 0; i < NSLOTS; i++)
        slot_release(&M.slot[i]);
    for (int i = 0; i < NWATCH; i++)
        watch_release(&M.w[i]);
    axstm_store_free(S);
    S = NULL;
    return 0;
}
