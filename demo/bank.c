/* SPDX-License-Identifier: MIT */
/*
 * bank.c -- the stm package's bank: a short transfer that rolls back when
 * it overdraws.
 *
 *   demo/bank [--store ADDRESS] [THREADS] [SECONDS] [ACCOUNTS]
 *                                    (defaults mem:, 2, 2, 64)
 *
 * Accounts "account-0".."account-<ACCOUNTS-1>" start with 1000 each.  THREADS
 * threads move random amounts between random accounts, each move one
 * transaction written as in the seed:
 *
 *     source.balance -= amount
 *     target.balance += amount
 *     if source.balance < 0: raise NotEnoughMoney
 *
 * Raising becomes returning a positive code of our own, NOT_ENOUGH_MONEY,
 * which rolls the transaction back: the two writes are never published.
 * An auditor thread sums every account inside a transaction, over and over;
 * the sum must always be the opening total.  The program fails if an audit
 * (committed or not: opacity promises a consistent view even to a run that
 * will be re-run) sees another total, or if the final total differs.
 *
 * ADDRESS is any address axstm_store_open takes.  With a store kept in
 * Redis (redis+unix:///path/to/socket?prefix=bank: or redis://host...),
 * every process started on the same address and prefix works in the same
 * bank: the first one opens the accounts (one transaction that finds none
 * of them and creates them all), the others find them open and join; each
 * process's tellers transfer and each process's auditor checks the total
 * of every account, whoever moved the money.  Every process must be given
 * the same ACCOUNTS: a bank of another size in the store is refused.  The
 * final total is then one more audit (a snapshot), since the other
 * processes may still be transferring.
 */
#include <axstm.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OPENING_BALANCE 1000
#define MAX_AMOUNT 1000 /* random amounts 1..MAX_AMOUNT: some overdraw */
#define MAX_THREADS 256
#define MAX_ACCOUNTS 100000
#define AUDIT_PAUSE_NS 1000000L /* the auditor looks once a millisecond */
#define KEY_LEN 32

/* Caller-defined codes: positive, so they never clash with the library's. */
#define NOT_ENOUGH_MONEY 1
#define NO_SUCH_ACCOUNT 2
#define OTHER_BANK 3 /* the store holds a bank with another number of accounts */

struct bank {
    axstm_store *store;
    int shared; /* a store other processes may use too */
    size_t naccounts;
    char (*names)[KEY_LEN];
    const char **listed;  /* names[i], as the list axstm_txn_prefetch takes */
    char beyond[KEY_LEN]; /* the account after the last: absent in our bank */
    int64_t expected_total;
    atomic_bool stop;
};

/* The opening transaction's argument and result. */
struct opening {
    const struct bank *bank;
    int joined; /* the accounts were open already: nothing written */
};

/* One transfer: the transaction's argument, fixed across its re-runs. */
struct transfer {
    const char *from, *to;
    int64_t amount;
};

struct teller {
    struct bank *bank;
    uint64_t rng;
    unsigned long committed, rollbacks;
    unsigned long in_doubt; /* connection lost after the commit was sent */
    int rc;                 /* the first unexpected code, AXSTM_OK while all is well */
};

struct auditor {
    struct bank *bank;
    int64_t sum;                 /* written by each run of the body */
    atomic_ulong starts;         /* every run of the body begun */
    atomic_ulong runs, bad_runs; /* every run that read all accounts */
    unsigned long audits, failures;
    int rc;
};

/* ------------------------------------------------------------------ */
/* The transactions                                                   */
/* ------------------------------------------------------------------ */

/* The seed's transfer: subtract, add, then check the source. */
static int transfer(axstm_txn *tx, void *arg)
{
    const struct transfer *t = arg;
    int64_t from, to;
    int rc;

    if ((rc = axstm_txn_get_i64(tx, t->from, &from)) != AXSTM_OK ||
        (rc = axstm_txn_set_i64(tx, t->from, from - t->amount)) != AXSTM_OK ||
        (rc = axstm_txn_get_i64(tx, t->to, &to)) != AXSTM_OK ||
        (rc = axstm_txn_set_i64(tx, t->to, to + t->amount)) != AXSTM_OK)
        return rc;
    /* Read it again: a transaction reads its own writes. */
    if ((rc = axstm_txn_get_i64(tx, t->from, &from)) != AXSTM_OK)
        return rc;
    return from < 0 ? NOT_ENOUGH_MONEY : AXSTM_OK;
}

/* Sums every account.  Read-only, so committing it publishes nothing. */
static int audit(axstm_txn *tx, void *arg)
{
    struct auditor *a = arg;
    const struct bank *b = a->bank;
    int64_t sum = 0, x;
    int rc;

    atomic_fetch_add(&a->starts, 1);
    /* Every account named first: on a store kept in Redis, one round trip
     * for all of them instead of one per account. */
    if ((rc = axstm_txn_prefetch(tx, b->listed, b->naccounts)) != AXSTM_OK)
        return rc;
    for (size_t i = 0; i < b->naccounts; i++) {
        rc = axstm_txn_get_i64(tx, b->names[i], &x);
        if (rc == AXSTM_ENOVALUE)
            return NO_SUCH_ACCOUNT; /* every account was opened: a bug */
        if (rc != AXSTM_OK)
            return rc;
        sum += x;
    }
    /* Counted here, not after commit, to check opacity: even a run that is
     * about to be re-run must never see money appear or vanish. */
    atomic_fetch_add(&a->runs, 1);
    if (sum != b->expected_total)
        atomic_fetch_add(&a->bad_runs, 1);
    a->sum = sum;
    return AXSTM_OK;
}

/*
 * Opens every account with the opening balance, all in one transaction,
 * unless they are open already: on a store shared with other processes the
 * first one opens them and the others join.  Being one transaction, two
 * processes starting together cannot both open them (one of them re-runs
 * and finds them).  A bank of another size (some of our accounts missing,
 * or the one after our last present) is OTHER_BANK: our audits would see
 * money leave through accounts they do not sum.
 */
static int open_accounts(axstm_txn *tx, void *arg)
{
    struct opening *o = arg;
    const struct bank *b = o->bank;
    size_t present = 0;
    int64_t x;
    int rc;

    for (size_t i = 0; i <= b->naccounts; i++) {
        rc = axstm_txn_get_i64(tx, i < b->naccounts ? b->names[i] : b->beyond, &x);
        if (rc == AXSTM_OK && i == b->naccounts)
            return OTHER_BANK;
        if (rc == AXSTM_OK)
            present++;
        else if (rc != AXSTM_ENOVALUE)
            return rc;
    }
    o->joined = present == b->naccounts;
    if (o->joined)
        return AXSTM_OK;
    if (present != 0)
        return OTHER_BANK;
    for (size_t i = 0; i < b->naccounts; i++)
        if ((rc = axstm_txn_set_i64(tx, b->names[i], OPENING_BALANCE)) != AXSTM_OK)
            return rc;
    return AXSTM_OK;
}

/* ------------------------------------------------------------------ */
/* Threads                                                            */
/* ------------------------------------------------------------------ */

static void sleep_ns(long ns)
{
    struct timespec t = {ns / 1000000000L, ns % 1000000000L};

    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        continue;
}

static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state; /* xorshift64 */

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static void *teller_run(void *arg)
{
    struct teller *t = arg;
    const struct bank *b = t->bank;

    while (!atomic_load_explicit(&t->bank->stop, memory_order_relaxed)) {
        size_t from = (size_t)(next_random(&t->rng) % b->naccounts);
        /* Any account but from: adding 1..n-1 modulo n never lands on it. */
        size_t to = (from + 1 + (size_t)(next_random(&t->rng) % (b->naccounts - 1))) % b->naccounts;
        struct transfer tr = {b->names[from], b->names[to],
                              1 + (int64_t)(next_random(&t->rng) % MAX_AMOUNT)};
        int rc = axstm_atomically(b->store, transfer, &tr);

        if (rc == AXSTM_OK) {
            t->committed++;
        } else if (rc == NOT_ENOUGH_MONEY) {
            t->rollbacks++;
        } else if (rc == AXSTM_EINDOUBT) {
            /* Done entirely or not at all: the total holds either way. */
            t->in_doubt++;
        } else if (rc == AXSTM_BUSY_RETRY) {
            sleep_ns(1000000); /* the server is loading its data: later */
        } else {
            t->rc = rc;
            break;
        }
    }
    return NULL;
}


static void *auditor_run(void *arg)
{
    struct auditor *a = arg;

    while (!atomic_load_explicit(&a->bank->stop, memory_order_relaxed)) {
        int rc = axstm_atomically(a->bank->store, audit, a);

        if (rc == AXSTM_BUSY_RETRY || rc == AXSTM_EINDOUBT) {
            sleep_ns(AUDIT_PAUSE_NS); /* nothing was audited: again */
            continue;
        }
        if (rc != AXSTM_OK) {
            a->rc = rc;
            break;
        }
        a->audits++;
        if (a->sum != a->bank->expected_total)
            a->failures++;
        sleep_ns(AUDIT_PAUSE_NS);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Main                                                               */
/* ------------------------------------------------------------------ */

/* Sums the committed balances by walking the store, outside any
 * transaction: a second opinion on the final total. */
static int add_balance(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    int64_t *sum = arg, x;

    (void)key;
    (void)version;
    if (data == NULL || len != sizeof x)
        return NO_SUCH_ACCOUNT;
    memcpy(&x, data, sizeof x);
    *sum += x;
    return 0;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;

    errno = 0;
    *out = strtol(s, &end, 10);
    return errno == 0 && end != s && *end == '\0' && *out >= lo && *out <= hi;
}

static int parse_args(int argc, char **argv, const char **store, long *threads, double *secs,
                      long *accounts)
{
    const char *pos[3];
    int npos = 0;
    char *end;

    *store = "mem:";
    *threads = 2;
    *secs = 2.0;
    *accounts = 64;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            *store = argv[++i];
        else if (strncmp(argv[i], "--store=", 8) == 0)
            *store = argv[i] + 8;
        else if (npos < 3)
            pos[npos++] = argv[i];
        else
            return 0;
    }
    if (npos > 0 && !parse_long(pos[0], 1, MAX_THREADS, threads))
        return 0;
    if (npos > 1) {
        errno = 0;
        *secs = strtod(pos[1], &end);
        if (errno != 0 || end == pos[1] || *end != '\0' || !isfinite(*secs) || *secs <= 0 ||
            *secs > 86400)
            return 0;
    }
    if (npos > 2 && !parse_long(pos[2], 2, MAX_ACCOUNTS, accounts))
        return 0;
    return 1;
}

/* Opens the store at address, saying why not in terms of the address. */
static axstm_store *open_store(const char *address)
{
    axstm_store *s;
    int rc = axstm_store_open(address, &s);

    if (rc == AXSTM_OK)
        return s;
    if (rc == AXSTM_EINVAL)
        fprintf(stderr,
                "bank: '%s' is not a store address this build can open (mem:, and redis:// or "
                "redis+unix:// where libaxstm was built with hiredis)\n",
                address);
    else if (rc == AXSTM_EIO)
        fprintf(stderr, "bank: cannot reach the server of '%s': %s\n", address, axstm_strerror(rc));
    else
        fprintf(stderr, "bank: opening '%s': %s\n", address, axstm_strerror(rc));
    return NULL;
}

/* What went wrong, for a code a transaction ended with. */
static const char *explain(const struct bank *b, int rc)
{
    switch (rc) {
    case NO_SUCH_ACCOUNT:
        return "an account has no value";
    case OTHER_BANK:
        return "the store holds a bank with another number of accounts: give every process the "
               "same ACCOUNTS, or use another prefix";
    case AXSTM_ETYPE:
        return "a key named like an account holds something else than a balance";
    case AXSTM_EIO:
        return "lost the store's server (refused, reset or timed out); is it still running?";
    case AXSTM_EINDOUBT:
        return "lost the store's server after a commit was sent: it took effect entirely or not "
               "at all";
    case AXSTM_EINVAL:
        /* What this library answers for transactions on a store kept in
         * Redis until it has them (axstm.h). */
        return b->shared ? "invalid argument (transactions on this kind of store need a "
                           "libaxstm that has them)"
                         : axstm_strerror(rc);
    default:
        return axstm_strerror(rc);
    }
}

/* The total of every account in one snapshot: one more audit. */
static int final_audit(struct bank *b, int64_t *total)
{
    static struct auditor a;
    int rc;

    a.bank = b;
    atomic_init(&a.starts, 0);
    atomic_init(&a.runs, 0);
    atomic_init(&a.bad_runs, 0);
    while ((rc = axstm_atomically(b->store, audit, &a)) == AXSTM_BUSY_RETRY)
        sleep_ns(AUDIT_PAUSE_NS);
    if (rc == AXSTM_OK)
        *total = a.sum;
    return rc;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;

    if (clock_gettime(CLOCK_MONOTONIC, &t1) != 0)
        return 0;
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
    static struct bank bank;
    static struct teller tellers[MAX_THREADS];
    static struct auditor auditor;
    pthread_t threads[MAX_THREADS], audit_thread;
    struct timespec start, seed;
    unsigned long committed = 0, rollbacks = 0, in_doubt = 0;
    struct opening opening = {&bank, 0};
    const char *address;
    long nthreads, naccounts;
    int64_t final_total = 0;
    double secs, elapsed;
    axstm_stats st;
    int started = 0, auditing = 0, ok = 1, rc;

    if (!parse_args(argc, argv, &address, &nthreads, &secs, &naccounts)) {
        fprintf(stderr,
                "usage: %s [--store ADDRESS] [THREADS] [SECONDS] [ACCOUNTS]\n"
                "  ADDRESS mem: (default), redis+unix:///path/to/socket?prefix=NAME or\n"
                "          redis://host[:port]?prefix=NAME: every process on the same address\n"
                "          and prefix works in the same bank (give each the same ACCOUNTS)\n"
                "  THREADS 1..%d (default 2), SECONDS > 0 (default 2),"
                " ACCOUNTS 2..%d (default 64)\n",
                argv[0], MAX_THREADS, MAX_ACCOUNTS);
        return 2;
    }
    if (clock_gettime(CLOCK_REALTIME, &seed) != 0) {
        perror("bank: clock_gettime");
        return 1;
    }
    bank.naccounts = (size_t)naccounts;
    bank.expected_total = (int64_t)naccounts * OPENING_BALANCE;
    atomic_init(&bank.stop, 0);
    bank.names = calloc(bank.naccounts, sizeof *bank.names);
    bank.listed = calloc(bank.naccounts, sizeof *bank.listed);
    if (bank.names == NULL || bank.listed == NULL) {
        fprintf(stderr, "bank: out of memory\n");
        free(bank.names);
        free(bank.listed);
        return 1;
    }
    bank.store = open_store(address);
    if (bank.store == NULL) {
        free(bank.names);
        free(bank.listed);
        return 1;
    }
    bank.shared = strcmp(address, "mem:") != 0;
    for (size_t i = 0; i < bank.naccounts; i++) {
        snprintf(bank.names[i], sizeof bank.names[i], "account-%zu", i);
        bank.listed[i] = bank.names[i];
    }
    snprintf(bank.beyond, sizeof bank.beyond, "account-%zu", bank.naccounts);
    while ((rc = axstm_atomically(bank.store, open_accounts, &opening)) == AXSTM_BUSY_RETRY)
        sleep_ns(AUDIT_PAUSE_NS);
    if (rc != AXSTM_OK) {
        fprintf(stderr, "bank: opening the accounts: %s\n", explain(&bank, rc));
        free(bank.names);
        free(bank.listed);
        axstm_store_free(bank.store);
        return 1;
    }
    if (bank.shared)
        printf("%s the %zu accounts of the bank in %s\n", opening.joined ? "joined" : "opened",
               bank.naccounts, address);

    auditor.bank = &bank;
    atomic_init(&auditor.starts, 0);
    atomic_init(&auditor.runs, 0);
    atomic_init(&auditor.bad_runs, 0);
    if (clock_gettime(CLOCK_MONOTONIC, &start) != 0) {
        perror("bank: clock_gettime");
        ok = 0;
    }
    for (; ok && started < nthreads; started++) {
        struct teller *t = &tellers[started];

        t->bank = &bank;
        /* Distinct, non-zero seeds: xorshift sticks at zero. */
        t->rng = ((uint64_t)seed.tv_nsec << 20 ^ (uint64_t)seed.tv_sec) +
                 (uint64_t)(started + 1) * 0x9E3779B97F4A7C15u;
        if (t->rng == 0)
            t->rng = 1;
        rc = pthread_create(&threads[started], NULL, teller_run, t);
        if (rc != 0) {
            fprintf(stderr, "bank: pthread_create: %s\n", strerror(rc));
            ok = 0;
            break;
        }
    }
    if (ok) {
        rc = pthread_create(&audit_thread, NULL, auditor_run, &auditor);
        if (rc != 0) {
            fprintf(stderr, "bank: pthread_create: %s\n", strerror(rc));
            ok = 0;
        } else {
            auditing = 1;
        }
    }
    if (ok)
        sleep_ns((long)(secs * 1e9));
    atomic_store(&bank.stop, 1);
    for (int i = 0; i < started; i++) {
        rc = pthread_join(threads[i], NULL);
        if (rc != 0) {
            fprintf(stderr, "bank: pthread_join: %s\n", strerror(rc));
            return 1; /* a thread may still use the store: do not free it */
        }
    }
    elapsed = seconds_since(&start);
    if (auditing && (rc = pthread_join(audit_thread, NULL)) != 0) {
        fprintf(stderr, "bank: pthread_join: %s\n", strerror(rc));
        return 1;
    }

    for (int i = 0; i < started; i++) {
        const struct teller *t = &tellers[i];

        committed += t->committed;
        rollbacks += t->rollbacks;
        in_doubt += t->in_doubt;
        if (t->rc != AXSTM_OK) {
            fprintf(stderr, "bank: teller %d: %s\n", i, explain(&bank, t->rc));
            ok = 0;
        }
    }
    if (auditor.rc != AXSTM_OK) {
        fprintf(stderr, "bank: auditor: %s\n", explain(&bank, auditor.rc));
        ok = 0;
    }

    printf("%ld threads, %zu accounts, %.2f s\n", nthreads, bank.naccounts, elapsed);
    printf("transfers: %lu committed (%.0f/s), %lu rolled back (not enough money)\n", committed,
           elapsed > 0 ? (double)committed / elapsed : 0.0, rollbacks);
    if (in_doubt != 0)
        printf("transfers in doubt (the connection was lost after the commit was sent; each "
               "happened entirely or not at all): %lu\n",
               in_doubt);
    if ((rc = axstm_store_stats(bank.store, &st)) == AXSTM_OK && !bank.shared) {
        printf("store: %" PRIu64 " commits, %" PRIu64 " conflicts, %" PRIu64 " busy\n", st.commits,
               st.conflicts, st.busy);
    } else if (rc == AXSTM_OK) { /* the server counts every process's commits */
        printf("store (every process of this bank, since the prefix was first used): %" PRIu64
               " commits, %" PRIu64 " conflicts; this process: %" PRIu64 " busy\n",
               st.commits, st.conflicts, st.busy);
    } else {
        fprintf(stderr, "bank: axstm_store_stats: %s\n", explain(&bank, rc));
        ok = 0;
    }
    /* A run ends early when a read finds the snapshot gone (or a key being
     * committed); every run that got to the end checked its sum. */
    printf("audits: %lu done, %lu failed; the audit body ran %lu times, %lu to the "
           "end, %lu of those saw a wrong total\n",
           auditor.audits, auditor.failures, atomic_load(&auditor.starts),
           atomic_load(&auditor.runs), atomic_load(&auditor.bad_runs));
    if (auditor.failures != 0 || atomic_load(&auditor.bad_runs) != 0) {
        fprintf(stderr, "bank: an audit saw money appear or vanish\n");
        ok = 0;
    }

    /* Alone in the store, a walk of it is a second opinion.  Shared, other
     * processes may still be transferring, and a walk sees each account at
     * another moment: only a snapshot (one more audit) has a total. */
    if (bank.shared) {
        rc = final_audit(&bank, &final_total);
        if (rc != AXSTM_OK)
            fprintf(stderr, "bank: the final audit: %s\n", explain(&bank, rc));
    } else {
        rc = axstm_store_foreach(bank.store, add_balance, &final_total);
        if (rc != AXSTM_OK)
            fprintf(stderr, "bank: axstm_store_foreach: %s\n",
                    rc == NO_SUCH_ACCOUNT ? "a key is not an account" : axstm_strerror(rc));
    }
    if (rc != AXSTM_OK) {
        ok = 0;
    } else {
        printf("final total%s: %" PRId64 " (expected %" PRId64 ")\n",
               bank.shared ? " (one snapshot of every account)" : "", final_total,
               bank.expected_total);
        if (final_total != bank.expected_total) {
            fprintf(stderr, "bank: the total was not conserved\n");
            ok = 0;
        }
    }
    if (ok && committed == 0) {
        fprintf(stderr, "bank: no transfer committed\n");
        ok = 0;
    }
    axstm_store_free(bank.store);
    free(bank.names);
    free(bank.listed);
    return ok ? 0 : 1;
}
