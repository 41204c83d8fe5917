/* SPDX-License-Identifier: MIT */
/*
 * accounts.c -- Axon.STM's accounts example: two overlapping collections,
 * the later commit refused, and the standard redo loop that fixes it.
 */
#include <axstm.h>

#include <inttypes.h>
#include <stdio.h>

#define NACCOUNTS 3

static const char *const accounts[NACCOUNTS] = {"account_one", "account_two", "myaccount"};

static int expect(int ok, const char *what)
{
    if (!ok)
        fprintf(stderr, "accounts: unexpected: %s\n", what);
    return ok;
}

static int expect_rc(int rc, int want, const char *what)
{
    if (rc != want)
        fprintf(stderr, "accounts: %s: got \"%s\", expected \"%s\"\n", what, axstm_strerror(rc),
                axstm_strerror(want));
    return rc == want;
}

/* An account that never got a value holds nothing. */
static int balance(const axstm_value *v, int64_t *out)
{
    int rc = axstm_value_get_i64(v, out);

    if (rc == AXSTM_ENOVALUE) {
        *out = 0;
        rc = AXSTM_OK;
    }
    return rc;
}

/* The work that is redone after a conflict: move all money into myaccount. */
static int move_all(axstm_collection *c)
{
    axstm_value *one = axstm_collection_value(c, "account_one");
    axstm_value *two = axstm_collection_value(c, "account_two");
    axstm_value *mine = axstm_collection_value(c, "myaccount");
    int64_t a, b, m;
    int rc;

    if ((rc = balance(one, &a)) || (rc = balance(two, &b)) || (rc = balance(mine, &m)))
        return rc;
    if ((rc = axstm_value_set_i64(one, 0)) || (rc = axstm_value_set_i64(two, 0)))
        return rc;
    return axstm_value_set_i64(mine, a + b + m);
}

static void show(const char *title, axstm_collection *c)
{
    printf("%s\n", title);
    for (size_t i = 0; i < axstm_collection_size(c); i++) {
        const axstm_value *v = axstm_collection_at(c, i);
        int64_t x;

        if (axstm_value_get_i64(v, &x) == AXSTM_OK)
            printf("  %-12s %8" PRId64 "   version %" PRIu64 "\n", axstm_value_key(v), x,
                   axstm_value_version(v));
        else
            printf("  %-12s %8s   version %" PRIu64 "\n", axstm_value_key(v), "no value",
                   axstm_value_version(v));
    }
}

/* True when c holds the given balances (-1: no value) at the given versions. */
static int is(axstm_collection *c, const int64_t want[], const uint64_t ver[])
{
    for (size_t i = 0; i < NACCOUNTS; i++) {
        const axstm_value *v = axstm_collection_at(c, i);
        int64_t x;
        int rc = axstm_value_get_i64(v, &x);

        if (rc == AXSTM_ENOVALUE) {
            x = -1;
            rc = AXSTM_OK;
        }
        if (rc != AXSTM_OK || x != want[i] || axstm_value_version(v) != ver[i])
            return 0;
    }
    return 1;
}

int main(void)
{
    static const int64_t funded[] = {50, 100, -1}, moved[] = {0, 0, 150};
    static const uint64_t v1[] = {1, 1, 1}, v3[] = {3, 2, 3};
    static const char *const e_keys[] = {"account_one", "myaccount"};
    axstm_store *s = axstm_store_new();
    axstm_collection *setup = NULL, *d = NULL, *e = NULL, *check = NULL;
    int ok = 0, rc, attempt;

    if (!expect(s != NULL, "axstm_store_new: out of memory"))
        return 1;

    /*
     * Only this thread uses the store, so using() cannot be busy here; the
     * redo loop below handles BUSY_RETRY anyway, as threaded code must.
     */
    if (!expect_rc(axstm_using(s, accounts, NACCOUNTS, &setup), AXSTM_OK, "using") ||
        !expect_rc(axstm_value_set_i64(axstm_collection_at(setup, 0), 50), AXSTM_OK, "set") ||
        !expect_rc(axstm_value_set_i64(axstm_collection_at(setup, 1), 100), AXSTM_OK, "set") ||
        !expect_rc(axstm_collection_commit(setup), AXSTM_OK, "setup commit") ||
        !expect(is(setup, funded, v1), "50 / 100 / no value, all at version 1"))
        goto out;
    show("using(account_one, account_two, myaccount), set 50 and 100, commit:", setup);

    /* Two overlapping checkouts; E commits first, even without changes. */
    if (!expect_rc(axstm_using(s, accounts, NACCOUNTS, &d), AXSTM_OK, "using D") ||
        !expect_rc(axstm_using(s, e_keys, 2, &e), AXSTM_OK, "using E") ||
        !expect_rc(axstm_collection_commit(e), AXSTM_OK, "E's commit"))
        goto out;
    show("D = using(all three); E = using(account_one, myaccount); E.commit():", e);

    /*
     * The standard redo loop: on CONCURRENT_UPDATE refresh and redo the work;
     * on BUSY_RETRY nothing changed, so just call again.
     */
    for (attempt = 1;; attempt++) {
        rc = move_all(d);
        if (rc == AXSTM_OK) {
            do
                rc = axstm_collection_commit(d);
            while (rc == AXSTM_BUSY_RETRY);
        }
        if (rc != AXSTM_CONCURRENT_UPDATE)
            break;
        printf("D moves all money to myaccount, commit (attempt %d): "
               "AXSTM_CONCURRENT_UPDATE: %s\n",
               attempt, axstm_strerror(rc));
        do
            rc = axstm_collection_refresh(d);
        while (rc == AXSTM_BUSY_RETRY);
        if (rc != AXSTM_OK)
            break;
        printf("D.refresh(), redo\n");
    }
    if (!expect_rc(rc, AXSTM_OK, "D's redo loop") ||
        !expect(attempt == 2, "exactly one conflict, then success"))
        goto out;
    printf("D's commit (attempt %d): ok\n", attempt);

    /*
     * A fresh checkout shows the store: the refused commit wrote nothing
     * (account_two went from version 1 straight to 2).
     */
    if (!expect_rc(axstm_using(s, accounts, NACCOUNTS, &check), AXSTM_OK, "using") ||
        !expect(is(check, moved, v3), "0 / 0 / 150 at versions 3 / 2 / 3"))
        goto out;
    show("final balances:", check);
    ok = 1;

out:
    axstm_collection_free(check);
    axstm_collection_free(e);
    axstm_collection_free(d);
    axstm_collection_free(setup);
    axstm_store_free(s);
    return ok ? 0 : 1;
}
