/* SPDX-License-Identifier: MIT */
/*
 * check_collection.c -- Collection handles (Axon using): the scenarios,
 * duplicates, borrowed values, all-or-nothing commits, consistent snapshots.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "testutil.h"

static const char *const three[] = {"account_one", "account_two", "myaccount"};

static axstm_value *at(axstm_collection *c, const char *key)
{
    axstm_value *v = axstm_collection_value(c, key);
    ck_assert_msg(v != NULL, "%s not in the collection", key);
    return v;
}

/* ------------------------------------------------------------------ */
/* Axon rules                                                         */
/* ------------------------------------------------------------------ */

/* SPEC scenario 2, first half: 50, 100, myaccount unset; all at version 1. */
static axstm_store *three_accounts(void)
{
    axstm_store *s = tu_store_ok();
    axstm_collection *d = tu_using_ok(s, three, 3);
    ck_assert_uint_eq(axstm_collection_size(d), 3);
    tu_set_i64_ok(at(d, "account_one"), 50);
    tu_set_i64_ok(at(d, "account_two"), 100);
    ck_assert_int_eq(tu_ccommit(d), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(at(d, "account_one")), 1);
    ck_assert_uint_eq(axstm_value_version(at(d, "account_two")), 1);
    ck_assert_uint_eq(axstm_value_version(at(d, "myaccount")), 1);
    axstm_collection_free(d);
    tu_assert_committed(s, "account_one", 1, 1, 50);
    tu_assert_committed(s, "account_two", 1, 1, 100);
    tu_assert_committed(s, "myaccount", 1, 0, 0); /* written with no value */
    return s;
}

START_TEST(scenario_three_accounts)
{
    axstm_store *s = three_accounts();
    axstm_collection *d = tu_using_ok(s, three, 3);
    int64_t one = tu_get_i64_ok(at(d, "account_one"));
    int64_t two = tu_get_i64_ok(at(d, "account_two"));
    int64_t mine = 0;

    ck_assert_int_eq(axstm_value_get_i64(at(d, "myaccount"), &mine), AXSTM_ENOVALUE);
    tu_set_i64_ok(at(d, "myaccount"), mine + one + two);
    tu_set_i64_ok(at(d, "account_one"), 0);
    tu_set_i64_ok(at(d, "account_two"), 0);
    ck_assert_int_eq(tu_ccommit(d), AXSTM_OK);
    axstm_collection_free(d);

    tu_assert_committed(s, "account_one", 2, 1, 0);
    tu_assert_committed(s, "account_two", 2, 1, 0);
    tu_assert_committed(s, "myaccount", 2, 1, 150);
    axstm_store_free(s);
}
END_TEST

START_TEST(scenario_overlapping_collections)
{
    static const char *const e_keys[] = {"account_one", "myaccount"};
    axstm_store *s = three_accounts();
    axstm_collection *d = tu_using_ok(s, three, 3);
    axstm_collection *e = tu_using_ok(s, e_keys, 2);

    /* E commits unchanged: its keys still move to version 2. */
    ck_assert_int_eq(tu_ccommit(e), AXSTM_OK);
    tu_assert_committed(s, "account_one", 2, 1, 50);
    tu_assert_committed(s, "myaccount", 2, 0, 0);
    tu_assert_committed(s, "account_two", 1, 1, 100);

    /* D then fails and writes nothing, not even account_two. */
    tu_set_i64_ok(at(d, "account_one"), 1);
    tu_set_i64_ok(at(d, "account_two"), 2);
    tu_set_i64_ok(at(d, "myaccount"), 3);
    ck_assert_int_eq(tu_ccommit(d), AXSTM_CONCURRENT_UPDATE);
    tu_assert_committed(s, "account_one", 2, 1, 50);
    tu_assert_committed(s, "account_two", 1, 1, 100);
    tu_assert_committed(s, "myaccount", 2, 0, 0);

    /* D is unchanged: its versions and private values are as they were. */
    ck_assert_uint_eq(axstm_value_version(at(d, "account_one")), 1);
    ck_assert_uint_eq(axstm_value_version(at(d, "account_two")), 1);
    ck_assert_uint_eq(axstm_value_version(at(d, "myaccount")), 1);
    ck_assert_int_eq(tu_get_i64_ok(at(d, "account_one")), 1);
    ck_assert_int_eq(tu_get_i64_ok(at(d, "account_two")), 2);
    ck_assert_int_eq(tu_get_i64_ok(at(d, "myaccount")), 3);

    axstm_collection_free(d);
    axstm_collection_free(e);
    axstm_store_free(s);
}
END_TEST

START_TEST(using_creates_missing_keys)
{
    static const char *const keys[] = {"old", "new1", "new2"};
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "old");
    axstm_collection *c;

    tu_set_i64_ok(v, 7);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);

    c = tu_using_ok(s, keys, 3);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 3);
    ck_assert_uint_eq(axstm_value_version(at(c, "old")), 1);
    ck_assert_int_eq(tu_get_i64_ok(at(c, "old")), 7);
    ck_assert_uint_eq(axstm_value_version(at(c, "new1")), 0);
    tu_assert_no_value(at(c, "new1"));
    tu_assert_no_value(at(c, "new2"));
    axstm_collection_free(c);
    /* They stay though nothing was committed. */
    tu_assert_committed(s, "new1", 0, 0, 0);
    tu_assert_committed(s, "new2", 0, 0, 0);
    axstm_store_free(s);
}
END_TEST

START_TEST(duplicate_keys_count_once)
{
    static const char *const keys[] = {"a", "b", "a", "c", "b", "a"};
    axstm_store *s = tu_store_ok();
    axstm_collection *c = tu_using_ok(s, keys, 6);

    ck_assert_uint_eq(axstm_collection_size(c), 3);
    ck_assert_str_eq(axstm_value_key(axstm_collection_at(c, 0)), "a");
    ck_assert_str_eq(axstm_value_key(axstm_collection_at(c, 1)), "b");
    ck_assert_str_eq(axstm_value_key(axstm_collection_at(c, 2)), "c");
    ck_assert_ptr_null(axstm_collection_at(c, 3));
    ck_assert_ptr_eq(axstm_collection_value(c, "a"), axstm_collection_at(c, 0));
    ck_assert_ptr_eq(axstm_collection_value(c, "c"), axstm_collection_at(c, 2));
    ck_assert_uint_eq(tu_stats_ok(s).keys, 3);

    tu_set_i64_ok(at(c, "a"), 1);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    /* Written once: version 1, not 2 or 3. */
    tu_assert_committed(s, "a", 1, 1, 1);
    tu_assert_committed(s, "b", 1, 0, 0);
    ck_assert_uint_eq(axstm_value_version(at(c, "a")), 1);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    tu_assert_committed(s, "a", 2, 1, 1);
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

/* Above 8 keys using() takes another path (a sort instead of in-place
 * insertion): the same rules must hold there. */
START_TEST(duplicate_keys_count_once_among_many)
{
    static const char *const keys[] = {"k7", "k1",  "k7",  "k9", "k2", "k1", "k3",
                                       "k8", "k4",  "k9",  "k5", "k0", "k6", "k7",
                                       "k2", "k10", "k11", "k0", "k5", "k12"};
    static const char *const distinct[] = {"k7", "k1", "k9", "k2",  "k3",  "k8", "k4",
                                           "k5", "k0", "k6", "k10", "k11", "k12"};
    const size_t nkeys = sizeof keys / sizeof *keys, n = sizeof distinct / sizeof *distinct;
    axstm_store *s = tu_store_ok();
    axstm_collection *c = tu_using_ok(s, keys, nkeys);
    size_t i;

    ck_assert_uint_eq(axstm_collection_size(c), n);
    for (i = 0; i < n; i++) {
        ck_assert_str_eq(axstm_value_key(axstm_collection_at(c, i)), distinct[i]);
        tu_set_i64_ok(axstm_collection_at(c, i), (int64_t)i);
    }
    ck_assert_uint_eq(tu_stats_ok(s).keys, n);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    for (i = 0; i < n; i++)
        tu_assert_committed(s, distinct[i], 1, 1, (int64_t)i);
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

START_TEST(order_of_first_appearance)
{
    static const char *const keys[] = {"zeta", "alpha", "mu", "beta"};
    axstm_store *s = tu_store_ok();
    axstm_collection *c = tu_using_ok(s, keys, 4);
    size_t i;
    for (i = 0; i < 4; i++)
        ck_assert_str_eq(axstm_value_key(axstm_collection_at(c, i)), keys[i]);
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

START_TEST(empty_collection)
{
    axstm_store *s = tu_store_ok();
    axstm_collection *c = NULL;
    ck_assert_int_eq(axstm_using(s, NULL, 0, &c), AXSTM_OK);
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(axstm_collection_size(c), 0);
    ck_assert_ptr_null(axstm_collection_at(c, 0));
    ck_assert_ptr_null(axstm_collection_value(c, "a"));
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    tu_crefresh_ok(c);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    axstm_collection_free(c);

    /* A non-NULL array with nkeys 0 is empty too. */
    ck_assert_int_eq(axstm_using(s, three, 0, &c), AXSTM_OK);
    ck_assert_uint_eq(axstm_collection_size(c), 0);
    axstm_collection_free(c);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0);
    axstm_store_free(s);
}
END_TEST

START_TEST(committing_an_empty_collection_does_nothing)
{
    /* API.md: an empty collection's commit "succeeds and does nothing":
     * no key, version or value changes, and no commit is counted. */
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "k");
    axstm_collection *c = NULL;
    axstm_stats before, after;
    tu_snapshot was, is;

    tu_set_i64_ok(v, 1);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    before = tu_stats_ok(s);
    tu_snapshot_take(s, &was);

    ck_assert_int_eq(axstm_using(s, NULL, 0, &c), AXSTM_OK);
    ck_assert_int_eq(axstm_collection_commit(c), AXSTM_OK);
    ck_assert_int_eq(axstm_collection_commit(c), AXSTM_OK);
    axstm_collection_free(c);

    after = tu_stats_ok(s);
    ck_assert_uint_eq(after.commits, before.commits);
    ck_assert_uint_eq(after.conflicts, before.conflicts);
    ck_assert_uint_eq(after.keys, before.keys);
    tu_snapshot_take(s, &is);
    tu_snapshot_assert_equal(&was, &is);
    /* Nor did it make the value's checkout stale. */
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    tu_snapshot_free(&was);
    tu_snapshot_free(&is);
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

START_TEST(lookups_out_of_range)
{
    axstm_store *s = tu_store_ok();
    axstm_collection *c = tu_using_ok(s, three, 3);
    ck_assert_ptr_nonnull(axstm_collection_at(c, 2));
    ck_assert_ptr_null(axstm_collection_at(c, 3));
    ck_assert_ptr_null(axstm_collection_at(c, SIZE_MAX));
    ck_assert_ptr_null(axstm_collection_at(NULL, 0));
    ck_assert_ptr_null(axstm_collection_value(c, "account_three"));
    ck_assert_ptr_null(axstm_collection_value(c, "account"));
    ck_assert_ptr_null(axstm_collection_value(c, ""));
    ck_assert_ptr_null(axstm_collection_value(c, NULL));
    ck_assert_ptr_null(axstm_collection_value(NULL, "myaccount"));
    ck_assert_uint_eq(axstm_collection_size(NULL), 0);
    /* Looking up did not create keys. */
    ck_assert_uint_eq(tu_stats_ok(s).keys, 3);
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

START_TEST(borrowed_values_commit_with_the_collection)
{
    axstm_store *s = tu_store_ok();
    axstm_collection *c = tu_using_ok(s, three, 3);
    axstm_value *v = axstm_collection_at(c, 0);

    tu_set_i64_ok(v, 42);
    ck_assert_int_eq(axstm_value_commit(v), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_value_refresh(v), AXSTM_EINVAL);
    /* Neither reached the store, nor undid the local change. */
    tu_assert_committed(s, "account_one", 0, 0, 0);
    ck_assert_int_eq(tu_get_i64_ok(v), 42);
    ck_assert_uint_eq(axstm_value_version(v), 0);

    /* Freeing a borrowed value does nothing: the collection still works
     * (ASan/valgrind catch a real free here). */
    axstm_value_free(v);
    axstm_value_free(axstm_collection_at(c, 1));
    ck_assert_ptr_eq(axstm_collection_at(c, 0), v);
    ck_assert_int_eq(tu_get_i64_ok(v), 42);
    tu_set_i64_ok(axstm_collection_at(c, 1), 43);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    tu_assert_committed(s, "account_one", 1, 1, 42);
    tu_assert_committed(s, "account_two", 1, 1, 43);
    ck_assert_uint_eq(axstm_value_version(v), 1);
    ck_assert_str_eq(axstm_value_key(v), "account_one");
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

START_TEST(commit_is_all_or_nothing)
{
    axstm_store *s = tu_store_ok();
    axstm_collection *c = tu_using_ok(s, three, 3);
    axstm_value *other = tu_usevar_ok(s, "account_two");
    axstm_stats st;

    tu_set_i64_ok(other, 1);
    ck_assert_int_eq(tu_commit(other), AXSTM_OK);

    tu_set_i64_ok(at(c, "account_one"), 10);
    tu_set_i64_ok(at(c, "account_two"), 20);
    tu_set_i64_ok(at(c, "myaccount"), 30);
    st = tu_stats_ok(s);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_CONCURRENT_UPDATE);
    ck_assert_uint_eq(tu_stats_ok(s).commits, st.commits);
    /* The keys nobody else touched were not written either. */
    tu_assert_committed(s, "account_one", 0, 0, 0);
    tu_assert_committed(s, "account_two", 1, 1, 1);
    tu_assert_committed(s, "myaccount", 0, 0, 0);
    /* And the collection kept its versions and values. */
    ck_assert_uint_eq(axstm_value_version(at(c, "account_one")), 0);
    ck_assert_uint_eq(axstm_value_version(at(c, "account_two")), 0);
    ck_assert_int_eq(tu_get_i64_ok(at(c, "account_two")), 20);

    /* The last key conflicting is as fatal as the first. */
    tu_crefresh_ok(c);
    tu_set_i64_ok(at(c, "account_one"), 10);
    axstm_value_free(other);
    other = tu_usevar_ok(s, "myaccount");
    ck_assert_int_eq(tu_commit(other), AXSTM_OK);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_CONCURRENT_UPDATE);
    tu_assert_committed(s, "account_one", 0, 0, 0);

    tu_crefresh_ok(c);
    tu_set_i64_ok(at(c, "account_one"), 10);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    tu_assert_committed(s, "account_one", 1, 1, 10);
    tu_assert_committed(s, "account_two", 2, 1, 1);
    tu_assert_committed(s, "myaccount", 2, 0, 0);
    axstm_value_free(other);
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

START_TEST(refresh_takes_a_new_snapshot)
{
    axstm_store *s = three_accounts();
    axstm_collection *c = tu_using_ok(s, three, 3);
    axstm_collection *w = tu_using_ok(s, three, 3);

    tu_set_i64_ok(at(c, "account_one"), -1); /* local, to be dropped */
    tu_set_i64_ok(at(w, "account_two"), 99);
    tu_set_i64_ok(at(w, "myaccount"), 1);
    ck_assert_int_eq(tu_ccommit(w), AXSTM_OK);

    /* Before refresh c still sees its own snapshot. */
    ck_assert_int_eq(tu_get_i64_ok(at(c, "account_two")), 100);
    tu_assert_no_value(at(c, "myaccount"));

    tu_crefresh_ok(c);
    ck_assert_uint_eq(axstm_collection_size(c), 3);
    ck_assert_int_eq(tu_get_i64_ok(at(c, "account_one")), 50);
    ck_assert_int_eq(tu_get_i64_ok(at(c, "account_two")), 99);
    ck_assert_int_eq(tu_get_i64_ok(at(c, "myaccount")), 1);
    ck_assert_uint_eq(axstm_value_version(at(c, "account_one")), 2);
    ck_assert_uint_eq(axstm_value_version(at(c, "myaccount")), 2);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    tu_assert_committed(s, "account_two", 3, 1, 99);
    axstm_collection_free(c);
    axstm_collection_free(w);
    axstm_store_free(s);
}
END_TEST

START_TEST(collection_sees_value_commits)
{
    /* Value and collection commits guard the same versions. */
    axstm_store *s = tu_store_ok();
    axstm_collection *c = tu_using_ok(s, three, 3);
    axstm_value *v = tu_usevar_ok(s, "myaccount");
    ck_assert_int_eq(tu_ccommit(c), AXSTM_OK);
    ck_assert_int_eq(tu_commit(v), AXSTM_CONCURRENT_UPDATE);
    tu_refresh_ok(v);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    ck_assert_int_eq(tu_ccommit(c), AXSTM_CONCURRENT_UPDATE);
    axstm_value_free(v);
    axstm_collection_free(c);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Bad input                                                          */
/* ------------------------------------------------------------------ */

START_TEST(using_bad_input)
{
    axstm_store *s = tu_store_ok();
    axstm_collection *c, *sentinel = (axstm_collection *)&c;

    c = sentinel;
    ck_assert_int_eq(axstm_using(NULL, three, 3, &c), AXSTM_EINVAL);
    ck_assert_ptr_eq(c, sentinel);
    ck_assert_int_eq(axstm_using(s, NULL, 3, &c), AXSTM_EINVAL);
    ck_assert_ptr_eq(c, sentinel);
    ck_assert_int_eq(axstm_using(s, three, 3, NULL), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_using(s, NULL, 0, NULL), AXSTM_EINVAL);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0);
    axstm_store_free(s);
}
END_TEST

static void assert_rejected_creates_nothing(const char *const keys[], size_t n, int code)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "existing");
    axstm_collection *c, *sentinel = (axstm_collection *)&c;
    tu_snapshot before, after;

    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
    tu_snapshot_take(s, &before);
    c = sentinel;
    ck_assert_int_eq(axstm_using(s, keys, n, &c), code);
    ck_assert_ptr_eq(c, sentinel);
    tu_snapshot_take(s, &after);
    tu_snapshot_assert_equal(&before, &after);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 1);
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    axstm_store_free(s);
}

START_TEST(bad_key_in_array_creates_nothing)
{
    static char long_key[AXSTM_KEY_MAX + 2];
    const char *keys[4];

    memset(long_key, 'L', AXSTM_KEY_MAX + 1);
    long_key[AXSTM_KEY_MAX + 1] = '\0';

    /* The bad key first, in the middle and last: none of the good ones may
     * be created, wherever the check happens. */
    keys[0] = NULL, keys[1] = "new1", keys[2] = "existing", keys[3] = "new2";
    assert_rejected_creates_nothing(keys, 4, AXSTM_EINVAL);
    keys[0] = "new1", keys[1] = "existing", keys[2] = NULL, keys[3] = "new2";
    assert_rejected_creates_nothing(keys, 4, AXSTM_EINVAL);
    keys[0] = "new1", keys[1] = "new2", keys[2] = "existing", keys[3] = "";
    assert_rejected_creates_nothing(keys, 4, AXSTM_EINVAL);
    keys[0] = "new1", keys[1] = "existing", keys[2] = "new2", keys[3] = long_key;
    assert_rejected_creates_nothing(keys, 4, AXSTM_E2BIG);
    keys[0] = long_key, keys[1] = "new1";
    assert_rejected_creates_nothing(keys, 2, AXSTM_E2BIG);
}
END_TEST

START_TEST(longest_key_in_array)
{
    static char key[AXSTM_KEY_MAX + 1];
    const char *keys[2];
    axstm_store *s = tu_store_ok();
    axstm_collection *c;

    memset(key, 'M', AXSTM_KEY_MAX);
    keys[0] = key, keys[1] = "short";
    c = tu_using_ok(s, keys, 2);
    ck_assert_str_eq(axstm_value_key(axstm_collection_at(c, 0)), key);
    ck_assert_ptr_eq(axstm_collection_value(c, key), axstm_collection_at(c, 0));
    axstm_collection_free(c);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 2);
    axstm_store_free(s);
}
END_TEST

START_TEST(collection_functions_of_null)
{
    ck_assert_int_eq(axstm_collection_commit(NULL), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_collection_refresh(NULL), AXSTM_EINVAL);
    axstm_collection_free(NULL);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Concurrency                                                        */
/* ------------------------------------------------------------------ */

/* x and y, and more pairs like them.  The writer commits x = i, y = -i to
 * one pair at a time, in turn; a reader snapshots all of them.  A commit
 * whose two keys fall on both sides of where a reader's sweep has got to is
 * what a snapshot without validation would tear. */
#define PAIR_KEYS 32
static char xy_names[PAIR_KEYS][8];
static const char *xy[PAIR_KEYS];

static void name_pairs(void)
{
    int k;
    for (k = 0; k < PAIR_KEYS; k++) {
        if (k < 2)
            snprintf(xy_names[k], sizeof xy_names[k], "%s", k ? "y" : "x");
        else
            snprintf(xy_names[k], sizeof xy_names[k], "%c%d", k % 2 ? 'y' : 'x', k / 2 + 1);
        xy[k] = xy_names[k];
    }
}

/* The run lasts until the writer has committed this many times and each
 * reader has taken this many snapshots (and its time is up). */
#define PAIR_QUOTA 10

struct pair_run {
    axstm_store *s;
    tu_clock clock;
    /* Recorded by the writer. */
    long writes, write_errors;
};

struct pair_reader {
    struct pair_run *run;
    long snapshots, torn, errors;
};

static void *pair_writer(void *arg)
{
    struct pair_run *r = arg;
    axstm_collection *pairs[PAIR_KEYS / 2];
    int64_t i = 0;
    int rc, p;
    unsigned long rounds = 0;

    for (p = 0; p < PAIR_KEYS / 2; p++) {
        TU_RETRY(rc, axstm_using(r->s, &xy[2 * p], 2, &pairs[p]));
        if (rc != AXSTM_OK) {
            r->write_errors++;
            while (p-- > 0)
                axstm_collection_free(pairs[p]);
            return NULL;
        }
    }
    while (!tu_time_up(&r->clock, &rounds)) {
        axstm_collection *c = pairs[i % (PAIR_KEYS / 2)];
        i++;
        if (axstm_value_set_i64(axstm_collection_at(c, 0), i) != AXSTM_OK ||
            axstm_value_set_i64(axstm_collection_at(c, 1), -i) != AXSTM_OK) {
            r->write_errors++;
            break;
        }
        TU_RETRY(rc, axstm_collection_commit(c));
        if (rc == AXSTM_OK) {
            if (++r->writes == PAIR_QUOTA)
                tu_clock_paid(&r->clock);
        } else if (rc == AXSTM_CONCURRENT_UPDATE) {
            r->write_errors++; /* the only writer cannot conflict */
            TU_RETRY(rc, axstm_collection_refresh(c));
        } else {
            r->write_errors++;
            break;
        }
    }
    for (p = 0; p < PAIR_KEYS / 2; p++)
        axstm_collection_free(pairs[p]);
    return NULL;
}

/* 0: consistent; 1: torn; -1: unreadable. */
static int pair_check(axstm_collection *c)
{
    int p;
    for (p = 0; p < PAIR_KEYS / 2; p++) {
        axstm_value *x = axstm_collection_at(c, (size_t)(2 * p));
        axstm_value *y = axstm_collection_at(c, (size_t)(2 * p + 1));
        int64_t a, b;
        int ra = axstm_value_get_i64(x, &a), rb = axstm_value_get_i64(y, &b);
        if (ra == AXSTM_ENOVALUE && rb == AXSTM_ENOVALUE)
            continue; /* before this pair's first write */
        if (ra == AXSTM_ENOVALUE || rb == AXSTM_ENOVALUE)
            return 1;
        if (ra != AXSTM_OK || rb != AXSTM_OK)
            return -1;
        if (a + b != 0 || axstm_value_version(x) != axstm_value_version(y))
            return 1;
    }
    return 0;
}

static void *pair_reader_main(void *arg)
{
    struct pair_reader *rd = arg;
    axstm_collection *kept = NULL;
    int rc, k;
    unsigned long rounds = 0;

    TU_RETRY(rc, axstm_using(rd->run->s, xy, PAIR_KEYS, &kept));
    if (rc != AXSTM_OK) {
        rd->errors++;
        return NULL;
    }
    while (!tu_time_up(&rd->run->clock, &rounds)) {
        /* Alternate fresh checkouts and refreshes of a kept one. */
        axstm_collection *c = NULL;
        TU_RETRY(rc, axstm_using(rd->run->s, xy, PAIR_KEYS, &c));
        if (rc != AXSTM_OK) {
            rd->errors++;
            break;
        }
        k = pair_check(c);
        axstm_collection_free(c);
        rd->snapshots++;
        if (k == 1)
            rd->torn++;
        else if (k < 0)
            rd->errors++;

        TU_RETRY(rc, axstm_collection_refresh(kept));
        if (rc != AXSTM_OK) {
            rd->errors++;
            break;
        }
        k = pair_check(kept);
        rd->snapshots++;
        if (k == 1)
            rd->torn++;
        else if (k < 0)
            rd->errors++;
        if (rd->snapshots == 2 * PAIR_QUOTA)
            tu_clock_paid(&rd->run->clock);
    }
    axstm_collection_free(kept);
    return NULL;
}

START_TEST(snapshot_is_consistent_under_a_writer)
{
    enum { READERS = 2 };
    struct pair_run run;
    struct pair_reader rd[READERS];
    pthread_t writer, readers[READERS];
    double seconds = tu_stress_seconds() / 2;
    int i;

    name_pairs();
    memset(&run, 0, sizeof run);
    run.s = tu_store_ok();
    tu_clock_start(&run.clock, seconds);
    tu_clock_owe(&run.clock, 1 + READERS);
    memset(rd, 0, sizeof rd);
    for (i = 0; i < READERS; i++) {
        rd[i].run = &run;
        ck_assert_int_eq(pthread_create(&readers[i], NULL, pair_reader_main, &rd[i]), 0);
    }
    ck_assert_int_eq(pthread_create(&writer, NULL, pair_writer, &run), 0);
    pthread_join(writer, NULL);
    for (i = 0; i < READERS; i++)
        pthread_join(readers[i], NULL);

    ck_assert_int_eq(run.write_errors, 0);
    ck_assert_int_ge(run.writes, PAIR_QUOTA);
    for (i = 0; i < READERS; i++) {
        ck_assert_msg(rd[i].torn == 0, "reader %d saw %ld torn snapshots of %ld", i, rd[i].torn,
                      rd[i].snapshots);
        ck_assert_int_eq(rd[i].errors, 0);
        ck_assert_int_ge(rd[i].snapshots, 2 * PAIR_QUOTA);
    }
    {
        /* The writer's last commit is in the store. */
        long last = run.writes;
        int p = (int)((last - 1) % (PAIR_KEYS / 2));
        tu_assert_committed(run.s, xy[2 * p], (uint64_t)((last - 1) / (PAIR_KEYS / 2) + 1), 1,
                            last);
        tu_assert_committed(run.s, xy[2 * p + 1], (uint64_t)((last - 1) / (PAIR_KEYS / 2) + 1), 1,
                            -last);
    }
    axstm_store_free(run.s);
}
END_TEST

static Suite *collection_suite(void)
{
    Suite *s = suite_create("collection");
    TCase *tc;

    tc = tcase_create("Axon rules");
    tcase_add_test(tc, scenario_three_accounts);
    tcase_add_test(tc, scenario_overlapping_collections);
    tcase_add_test(tc, using_creates_missing_keys);
    tcase_add_test(tc, duplicate_keys_count_once);
    tcase_add_test(tc, duplicate_keys_count_once_among_many);
    tcase_add_test(tc, order_of_first_appearance);
    tcase_add_test(tc, empty_collection);
    tcase_add_test(tc, committing_an_empty_collection_does_nothing);
    tcase_add_test(tc, lookups_out_of_range);
    tcase_add_test(tc, borrowed_values_commit_with_the_collection);
    tcase_add_test(tc, commit_is_all_or_nothing);
    tcase_add_test(tc, refresh_takes_a_new_snapshot);
    tcase_add_test(tc, collection_sees_value_commits);
    suite_add_tcase(s, tc);

    tc = tcase_create("Bad input");
    tcase_add_test(tc, using_bad_input);
    tcase_add_test(tc, bad_key_in_array_creates_nothing);
    tcase_add_test(tc, longest_key_in_array);
    tcase_add_test(tc, collection_functions_of_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("Concurrency");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, snapshot_is_consistent_under_a_writer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(collection_suite());
}
