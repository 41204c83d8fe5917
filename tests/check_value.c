/* SPDX-License-Identifier: MIT */
/*
 * check_value.c -- Value handles (Axon usevar): the Axon rules for one key,
 * typed access, limits, bad input, and one key read under writers.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "testutil.h"

/* The key's committed (version, value) as foreach sees it; creates nothing. */
static tu_entry committed(axstm_store *s, const char *key)
{
    tu_entry out;
    int found = tu_lookup(s, key, &out);
    ck_assert_msg(found, "key %s is not in the store", key);
    return out;
}

static void assert_committed_str(axstm_store *s, const char *key, uint64_t version, const char *str)
{
    tu_entry e = committed(s, key);
    ck_assert_msg(e.version == version, "%s at version %llu, not %llu", key,
                  (unsigned long long)e.version, (unsigned long long)version);
    if (str == NULL) {
        ck_assert_msg(!e.has_value, "%s has a value", key);
    } else {
        ck_assert_msg(e.has_value, "%s has no value", key);
        ck_assert_uint_eq(e.len, strlen(str) + 1);
        ck_assert_mem_eq(e.data, str, e.len);
    }
    free(e.data);
}

static void assert_committed_i64(axstm_store *s, const char *key, uint64_t version, int64_t x)
{
    tu_entry e = committed(s, key);
    int64_t got;
    ck_assert_uint_eq(e.version, version);
    ck_assert_uint_eq(e.len, 8);
    memcpy(&got, e.data, 8);
    ck_assert_int_eq(got, x);
    free(e.data);
}

/* ------------------------------------------------------------------ */
/* Axon rules                                                         */
/* ------------------------------------------------------------------ */

START_TEST(scenario_greeting)
{
    /* SPEC scenario 1. */
    axstm_store *s = tu_store_ok();
    axstm_value *greeting = tu_usevar_ok(s, "hello"), *other;

    tu_assert_no_value(greeting);
    ck_assert_uint_eq(axstm_value_version(greeting), 0);
    tu_set_str_ok(greeting, "Hello World");
    ck_assert_int_eq(tu_commit(greeting), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(greeting), 1);
    assert_committed_str(s, "hello", 1, "Hello World");

    other = tu_usevar_ok(s, "hello");
    ck_assert_uint_eq(axstm_value_version(other), 1);
    tu_assert_str(other, "Hello World");
    tu_set_str_ok(other, "Woo");
    ck_assert_int_eq(tu_commit(other), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(other), 2);

    tu_set_str_ok(greeting, "Woo");
    ck_assert_int_eq(tu_commit(greeting), AXSTM_CONCURRENT_UPDATE);
    ck_assert_uint_eq(axstm_value_version(greeting), 1);
    tu_assert_str(greeting, "Woo");
    assert_committed_str(s, "hello", 2, "Woo");

    axstm_value_free(greeting);
    axstm_value_free(other);
    axstm_store_free(s);
}
END_TEST

struct accounts {
    int64_t balance[3];
    char owner[16];
};

START_TEST(scenario_struct_two_holders)
{
    /* SPEC scenario 4. */
    axstm_store *s = tu_store_ok();
    axstm_value *d = tu_usevar_ok(s, "accounts"), *e;
    struct accounts a = {{50, 100, 0}, "D"}, b;
    size_t len;
    const void *p;

    ck_assert_int_eq(axstm_value_set(d, &a, sizeof a), AXSTM_OK);
    ck_assert_int_eq(tu_commit(d), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(d), 1);

    /* D keeps changing its private copy. */
    a.balance[2] = a.balance[0] + a.balance[1];
    a.balance[0] = a.balance[1] = 0;
    ck_assert_int_eq(axstm_value_set(d, &a, sizeof a), AXSTM_OK);

    /* E sees the committed struct, not D's private change. */
    e = tu_usevar_ok(s, "accounts");
    ck_assert_uint_eq(axstm_value_version(e), 1);
    p = axstm_value_data(e, &len);
    ck_assert_uint_eq(len, sizeof b);
    memcpy(&b, p, sizeof b);
    ck_assert_int_eq(b.balance[0], 50);
    ck_assert_int_eq(b.balance[1], 100);
    ck_assert_int_eq(b.balance[2], 0);
    ck_assert_str_eq(b.owner, "D");

    b.balance[1] -= 25;
    b.balance[2] += 25;
    strcpy(b.owner, "E");
    ck_assert_int_eq(axstm_value_set(e, &b, sizeof b), AXSTM_OK);
    ck_assert_int_eq(tu_commit(e), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(e), 2);

    ck_assert_int_eq(tu_commit(d), AXSTM_CONCURRENT_UPDATE);
    ck_assert_uint_eq(axstm_value_version(d), 1);
    p = axstm_value_data(d, &len); /* D's private copy survives */
    ck_assert_uint_eq(len, sizeof a);
    ck_assert_mem_eq(p, &a, sizeof a);

    {
        tu_entry c = committed(s, "accounts");
        ck_assert_uint_eq(c.version, 2);
        ck_assert_uint_eq(c.len, sizeof b);
        ck_assert_mem_eq(c.data, &b, sizeof b);
        free(c.data);
    }
    axstm_value_free(d);
    axstm_value_free(e);
    axstm_store_free(s);
}
END_TEST

START_TEST(usevar_creates_key_that_stays)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "ghost");
    ck_assert_str_eq(axstm_value_key(v), "ghost");
    ck_assert_uint_eq(axstm_value_version(v), 0);
    tu_assert_no_value(v);
    axstm_value_free(v); /* never committed */

    ck_assert_uint_eq(tu_stats_ok(s).keys, 1);
    assert_committed_str(s, "ghost", 0, NULL);

    v = tu_usevar_ok(s, "ghost");
    ck_assert_uint_eq(axstm_value_version(v), 0);
    tu_assert_no_value(v);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 1);
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

START_TEST(no_value_differs_from_empty_value)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "k"), *w;
    size_t len = 99;

    ck_assert_ptr_null(axstm_value_data(v, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_null(axstm_value_data(v, NULL)); /* len may be NULL */

    ck_assert_int_eq(axstm_value_set(v, NULL, 0), AXSTM_OK);
    len = 99;
    ck_assert_ptr_nonnull(axstm_value_data(v, &len));
    ck_assert_uint_eq(len, 0);
    ck_assert_ptr_nonnull(axstm_value_data(v, NULL));
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);

    w = tu_usevar_ok(s, "k");
    len = 99;
    ck_assert_ptr_nonnull(axstm_value_data(w, &len));
    ck_assert_uint_eq(len, 0);
    {
        tu_entry e = committed(s, "k");
        ck_assert_int_eq(e.has_value, 1);
        ck_assert_uint_eq(e.len, 0);
    }

    /* An empty value from a non-NULL pointer is the same empty value. */
    ck_assert_int_eq(axstm_value_set(w, "ignored", 0), AXSTM_OK);
    len = 99;
    ck_assert_ptr_nonnull(axstm_value_data(w, &len));
    ck_assert_uint_eq(len, 0);
    axstm_value_free(v);
    axstm_value_free(w);
    axstm_store_free(s);
}
END_TEST

START_TEST(checkout_is_a_private_snapshot)
{
    axstm_store *s = tu_store_ok();
    axstm_value *a = tu_usevar_ok(s, "k"), *b = tu_usevar_ok(s, "k"), *c;

    tu_set_str_ok(a, "one");
    ck_assert_int_eq(tu_commit(a), AXSTM_OK);
    /* b was checked out before: a's commit does not reach it. */
    ck_assert_uint_eq(axstm_value_version(b), 0);
    tu_assert_no_value(b);

    /* Changing a handle does not change the store before commit. */
    tu_set_str_ok(a, "two");
    assert_committed_str(s, "k", 1, "one");
    c = tu_usevar_ok(s, "k");
    tu_assert_str(c, "one");
    tu_assert_str(a, "two");

    /* ... nor other handles, even after commit. */
    ck_assert_int_eq(tu_commit(a), AXSTM_OK);
    tu_assert_str(c, "one");
    ck_assert_uint_eq(axstm_value_version(c), 1);
    tu_assert_no_value(b);

    /* The handle owns a copy of what was set. */
    {
        char buf[8] = "three";
        ck_assert_int_eq(axstm_value_set(c, buf, strlen(buf) + 1), AXSTM_OK);
        strcpy(buf, "xxxxx");
        tu_assert_str(c, "three");
    }
    axstm_value_free(a);
    axstm_value_free(b);
    axstm_value_free(c);
    assert_committed_str(s, "k", 2, "two");
    axstm_store_free(s);
}
END_TEST

START_TEST(commit_rejected_iff_store_is_newer)
{
    axstm_store *s = tu_store_ok();
    axstm_value *a = tu_usevar_ok(s, "k"), *b = tu_usevar_ok(s, "k");
    axstm_value *other = tu_usevar_ok(s, "other");
    axstm_stats st;

    /* Same version (0 == 0): accepted. */
    tu_set_i64_ok(a, 1);
    ck_assert_int_eq(tu_commit(a), AXSTM_OK);
    /* Committing another key does not make k's handles stale. */
    ck_assert_int_eq(tu_commit(other), AXSTM_OK);
    ck_assert_int_eq(tu_commit(a), AXSTM_OK); /* 1 == 1: accepted */
    assert_committed_i64(s, "k", 2, 1);

    /* b is at 0, the store at 2: rejected, and nothing moves. */
    tu_set_i64_ok(b, 99);
    st = tu_stats_ok(s);
    ck_assert_int_eq(tu_commit(b), AXSTM_CONCURRENT_UPDATE);
    ck_assert_uint_eq(axstm_value_version(b), 0);
    ck_assert_int_eq(tu_get_i64_ok(b), 99);
    assert_committed_i64(s, "k", 2, 1);
    ck_assert_uint_eq(tu_stats_ok(s).conflicts, st.conflicts + 1);
    ck_assert_uint_eq(tu_stats_ok(s).commits, st.commits);

    /* Rejected again: a failed commit changes nothing, so retrying it
     * cannot succeed by accident. */
    ck_assert_int_eq(tu_commit(b), AXSTM_CONCURRENT_UPDATE);
    ck_assert_uint_eq(axstm_value_version(b), 0);

    /* Once brought up to date, it is accepted. */
    tu_refresh_ok(b);
    ck_assert_uint_eq(axstm_value_version(b), 2);
    tu_set_i64_ok(b, 99);
    ck_assert_int_eq(tu_commit(b), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(b), 3);
    assert_committed_i64(s, "k", 3, 99);

    /* And now a is the stale one. */
    ck_assert_int_eq(tu_commit(a), AXSTM_CONCURRENT_UPDATE);
    assert_committed_i64(s, "k", 3, 99);

    axstm_value_free(a);
    axstm_value_free(b);
    axstm_value_free(other);
    axstm_store_free(s);
}
END_TEST

START_TEST(two_new_handles_race_for_a_new_key)
{
    axstm_store *s = tu_store_ok();
    axstm_value *a = tu_usevar_ok(s, "fresh"), *b = tu_usevar_ok(s, "fresh");
    tu_set_str_ok(a, "a");
    tu_set_str_ok(b, "b");
    ck_assert_int_eq(tu_commit(a), AXSTM_OK);
    ck_assert_int_eq(tu_commit(b), AXSTM_CONCURRENT_UPDATE);
    assert_committed_str(s, "fresh", 1, "a");
    axstm_value_free(a);
    axstm_value_free(b);
    axstm_store_free(s);
}
END_TEST

START_TEST(commit_writes_unchanged_values)
{
    axstm_store *s = tu_store_ok();
    axstm_value *a = tu_usevar_ok(s, "k"), *b, *n;

    tu_set_i64_ok(a, 5);
    ck_assert_int_eq(tu_commit(a), AXSTM_OK);

    /* An unchanged checkout committed still bumps the version ... */
    b = tu_usevar_ok(s, "k");
    ck_assert_int_eq(tu_commit(b), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(b), 2);
    assert_committed_i64(s, "k", 2, 5);
    /* ... so the first holder is now stale. */
    ck_assert_int_eq(tu_commit(a), AXSTM_CONCURRENT_UPDATE);

    /* "No value" commits keep no value but bump the version. */
    n = tu_usevar_ok(s, "nothing");
    ck_assert_int_eq(tu_commit(n), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(n), 1);
    tu_assert_no_value(n);
    assert_committed_str(s, "nothing", 1, NULL);
    ck_assert_int_eq(tu_commit(n), AXSTM_OK);
    assert_committed_str(s, "nothing", 2, NULL);
    axstm_value_free(n);
    n = tu_usevar_ok(s, "nothing");
    ck_assert_uint_eq(axstm_value_version(n), 2);
    tu_assert_no_value(n);

    axstm_value_free(a);
    axstm_value_free(b);
    axstm_value_free(n);
    axstm_store_free(s);
}
END_TEST

START_TEST(commit_again_without_checkout)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "counter");
    int64_t i;

    for (i = 1; i <= 5; i++) {
        tu_set_i64_ok(v, i * 10);
        ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        ck_assert_uint_eq(axstm_value_version(v), (uint64_t)i);
        ck_assert_int_eq(tu_get_i64_ok(v), i * 10);
        assert_committed_i64(s, "counter", (uint64_t)i, i * 10);
    }
    /* Twice in a row with no change in between. */
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    assert_committed_i64(s, "counter", 7, 50);
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

START_TEST(refresh_picks_up_committed_state)
{
    axstm_store *s = tu_store_ok();
    axstm_value *a = tu_usevar_ok(s, "k"), *b = tu_usevar_ok(s, "k");

    /* With nothing new in the store, refresh drops the local change. */
    tu_set_str_ok(a, "local");
    tu_refresh_ok(a);
    tu_assert_no_value(a);
    ck_assert_uint_eq(axstm_value_version(a), 0);

    tu_set_str_ok(b, "theirs");
    ck_assert_int_eq(tu_commit(b), AXSTM_OK);
    tu_set_str_ok(a, "mine");
    tu_refresh_ok(a);
    ck_assert_uint_eq(axstm_value_version(a), 1);
    tu_assert_str(a, "theirs");

    /* Refresh reads the committed state, not b's private one. */
    tu_set_str_ok(b, "private");
    tu_refresh_ok(a);
    tu_assert_str(a, "theirs");
    tu_assert_str(b, "private");

    /* After refresh the handle commits. */
    tu_set_str_ok(a, "mine");
    ck_assert_int_eq(tu_commit(a), AXSTM_OK);
    assert_committed_str(s, "k", 2, "mine");
    axstm_value_free(a);
    axstm_value_free(b);
    axstm_store_free(s);
}
END_TEST

START_TEST(key_survives_its_handle)
{
    axstm_store *s = tu_store_ok();
    char key[16] = "name";
    axstm_value *v = tu_usevar_ok(s, key);
    const char *k;
    memset(key, 'x', sizeof key - 1);
    k = axstm_value_key(v);
    ck_assert_str_eq(k, "name");
    axstm_value_free(v);
    /* Valid as long as the store. */
    ck_assert_str_eq(k, "name");
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Typed values                                                       */
/* ------------------------------------------------------------------ */

START_TEST(i64_round_trips)
{
    static const int64_t xs[] = {0, 1, -1, 1000, INT64_MIN, INT64_MAX};
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "n"), *w;
    size_t i, len;
    for (i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        int64_t raw;
        tu_set_i64_ok(v, xs[i]);
        ck_assert_int_eq(tu_get_i64_ok(v), xs[i]);
        memcpy(&raw, axstm_value_data(v, &len), sizeof raw); /* host order */
        ck_assert_uint_eq(len, 8);
        ck_assert_int_eq(raw, xs[i]);
        ck_assert_int_eq(tu_commit(v), AXSTM_OK);
        w = tu_usevar_ok(s, "n");
        ck_assert_int_eq(tu_get_i64_ok(w), xs[i]);
        axstm_value_free(w);
    }
    /* Any 8 bytes are an int64. */
    {
        int64_t x = 0x0102030405060708;
        ck_assert_int_eq(axstm_value_set(v, &x, sizeof x), AXSTM_OK);
        ck_assert_int_eq(tu_get_i64_ok(v), 0x0102030405060708);
    }
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

START_TEST(i64_wrong_size_or_no_value)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "n");
    static const unsigned char nine[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    int64_t x = 77;

    ck_assert_int_eq(axstm_value_get_i64(v, &x), AXSTM_ENOVALUE);
    ck_assert_int_eq(x, 77);

    ck_assert_int_eq(axstm_value_set(v, nine, 7), AXSTM_OK);
    ck_assert_int_eq(axstm_value_get_i64(v, &x), AXSTM_ETYPE);
    ck_assert_int_eq(x, 77);
    ck_assert_int_eq(axstm_value_set(v, nine, 9), AXSTM_OK);
    ck_assert_int_eq(axstm_value_get_i64(v, &x), AXSTM_ETYPE);
    ck_assert_int_eq(x, 77);
    ck_assert_int_eq(axstm_value_set(v, NULL, 0), AXSTM_OK);
    ck_assert_int_eq(axstm_value_get_i64(v, &x), AXSTM_ETYPE);
    ck_assert_int_eq(x, 77);
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

START_TEST(str_round_trips)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "s"), *w;
    size_t len;
    const void *p;

    tu_set_str_ok(v, "abc");
    p = axstm_value_data(v, &len);
    ck_assert_uint_eq(len, 4); /* with its NUL */
    ck_assert_mem_eq(p, "abc", 4);
    tu_assert_str(v, "abc");
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    w = tu_usevar_ok(s, "s");
    tu_assert_str(w, "abc");

    tu_set_str_ok(v, ""); /* the empty string is one NUL byte */
    p = axstm_value_data(v, &len);
    ck_assert_uint_eq(len, 1);
    tu_assert_str(v, "");

    /* Bytes set by value_set that happen to be a string read as one. */
    ck_assert_int_eq(axstm_value_set(v, "xyz", 4), AXSTM_OK);
    tu_assert_str(v, "xyz");
    axstm_value_free(v);
    axstm_value_free(w);
    axstm_store_free(s);
}
END_TEST

START_TEST(str_not_nul_terminated)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "s");
    const char *out = "sentinel";

    ck_assert_int_eq(axstm_value_get_str(v, &out), AXSTM_ENOVALUE);
    ck_assert_str_eq(out, "sentinel");

    ck_assert_int_eq(axstm_value_set(v, "abc", 3), AXSTM_OK); /* no NUL */
    ck_assert_int_eq(axstm_value_get_str(v, &out), AXSTM_ETYPE);
    ck_assert_str_eq(out, "sentinel");

    ck_assert_int_eq(axstm_value_set(v, "a\0b", 4), AXSTM_OK); /* NUL inside */
    ck_assert_int_eq(axstm_value_get_str(v, &out), AXSTM_ETYPE);
    ck_assert_str_eq(out, "sentinel");

    ck_assert_int_eq(axstm_value_set(v, NULL, 0), AXSTM_OK); /* empty */
    ck_assert_int_eq(axstm_value_get_str(v, &out), AXSTM_ETYPE);
    ck_assert_str_eq(out, "sentinel");

    tu_set_i64_ok(v, 0); /* eight NULs */
    ck_assert_int_eq(axstm_value_get_str(v, &out), AXSTM_ETYPE);
    ck_assert_str_eq(out, "sentinel");
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Limits                                                             */
/* ------------------------------------------------------------------ */

START_TEST(longest_key)
{
    axstm_store *s = tu_store_ok();
    char *key = tu_xmalloc(AXSTM_KEY_MAX + 2);
    axstm_value *v = NULL, *sentinel = (axstm_value *)&v;

    memset(key, 'k', AXSTM_KEY_MAX + 1);
    key[AXSTM_KEY_MAX] = '\0';
    v = tu_usevar_ok(s, key);
    ck_assert_str_eq(axstm_value_key(v), key);
    tu_set_str_ok(v, "long");
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
    assert_committed_str(s, key, 1, "long");

    key[AXSTM_KEY_MAX] = 'k';
    key[AXSTM_KEY_MAX + 1] = '\0';
    v = sentinel;
    ck_assert_int_eq(axstm_usevar(s, key, &v), AXSTM_E2BIG);
    ck_assert_ptr_eq(v, sentinel);
    ck_assert_uint_eq(tu_stats_ok(s).keys, 1);
    free(key);
    axstm_store_free(s);
}
END_TEST

START_TEST(oversized_value_is_not_read)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "k");
    char small[4] = "abc";
    size_t len;

    tu_set_str_ok(v, "kept");
    /* The buffer is far smaller than len: reading it would be caught by
     * ASan/valgrind, so E2BIG must come from len alone. */
    ck_assert_int_eq(axstm_value_set(v, small, AXSTM_VALUE_MAX + 1), AXSTM_E2BIG);
    ck_assert_int_eq(axstm_value_set(v, small, SIZE_MAX), AXSTM_E2BIG);
    ck_assert_int_eq(axstm_value_set(v, small, SIZE_MAX / 2 + 1), AXSTM_E2BIG);
    tu_assert_str(v, "kept");
    axstm_value_data(v, &len);
    ck_assert_uint_eq(len, 5);
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

START_TEST(megabytes_round_trip)
{
    enum { N = 3 * 1024 * 1024 + 7 };
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "blob"), *w;
    unsigned char *buf = tu_xmalloc(N);
    const unsigned char *p;
    size_t i, len;

    for (i = 0; i < N; i++)
        buf[i] = (unsigned char)(i * 131 + (i >> 11));
    ck_assert_int_eq(axstm_value_set(v, buf, N), AXSTM_OK);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    w = tu_usevar_ok(s, "blob");
    p = axstm_value_data(w, &len);
    ck_assert_uint_eq(len, N);
    ck_assert(memcmp(p, buf, N) == 0);
    axstm_value_free(v);
    axstm_value_free(w);
    free(buf);
    axstm_store_free(s);
}
END_TEST

START_TEST(largest_value_is_accepted)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "max");
    unsigned char *buf = calloc(1, AXSTM_VALUE_MAX);
    size_t len;
    const unsigned char *p;

    ck_assert_ptr_nonnull(buf);
    buf[0] = 1;
    buf[AXSTM_VALUE_MAX - 1] = 2;
    ck_assert_int_eq(axstm_value_set(v, buf, AXSTM_VALUE_MAX), AXSTM_OK);
    free(buf);
    p = axstm_value_data(v, &len);
    ck_assert_uint_eq(len, AXSTM_VALUE_MAX);
    ck_assert_uint_eq(p[0], 1);
    ck_assert_uint_eq(p[AXSTM_VALUE_MAX - 1], 2);
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Bad input                                                          */
/* ------------------------------------------------------------------ */

START_TEST(usevar_bad_input)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v, *sentinel = (axstm_value *)&v;

    v = sentinel;
    ck_assert_int_eq(axstm_usevar(NULL, "k", &v), AXSTM_EINVAL);
    ck_assert_ptr_eq(v, sentinel);
    ck_assert_int_eq(axstm_usevar(s, NULL, &v), AXSTM_EINVAL);
    ck_assert_ptr_eq(v, sentinel);
    ck_assert_int_eq(axstm_usevar(s, "", &v), AXSTM_EINVAL);
    ck_assert_ptr_eq(v, sentinel);
    ck_assert_int_eq(axstm_usevar(s, "k", NULL), AXSTM_EINVAL);
    /* None of these created a key. */
    ck_assert_uint_eq(tu_stats_ok(s).keys, 0);
    ck_assert_uint_eq(tu_foreach_count(s), 0);
    axstm_store_free(s);
}
END_TEST

START_TEST(getters_of_null)
{
    size_t len = 5;
    ck_assert_ptr_null(axstm_value_key(NULL));
    ck_assert_uint_eq(axstm_value_version(NULL), 0);
    ck_assert_ptr_null(axstm_value_data(NULL, &len));
    ck_assert_ptr_null(axstm_value_data(NULL, NULL));
    axstm_value_free(NULL);
}
END_TEST

START_TEST(set_bad_input)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "k");

    tu_set_str_ok(v, "before");
    ck_assert_int_eq(axstm_value_set(NULL, "x", 1), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_value_set(v, NULL, 1), AXSTM_EINVAL);
    tu_assert_str(v, "before");
    ck_assert_int_eq(axstm_value_set_i64(NULL, 1), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_value_set_str(NULL, "x"), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_value_set_str(v, NULL), AXSTM_EINVAL);
    tu_assert_str(v, "before");
    ck_assert_uint_eq(axstm_value_version(v), 0);
    /* Failed sets did not reach the store either. */
    ck_assert_int_eq(tu_commit(v), AXSTM_OK);
    assert_committed_str(s, "k", 1, "before");
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

START_TEST(get_bad_input)
{
    axstm_store *s = tu_store_ok();
    axstm_value *v = tu_usevar_ok(s, "k");
    int64_t x = 3;
    const char *str = "sentinel";

    tu_set_i64_ok(v, 9);
    ck_assert_int_eq(axstm_value_get_i64(NULL, &x), AXSTM_EINVAL);
    ck_assert_int_eq(x, 3);
    ck_assert_int_eq(axstm_value_get_i64(v, NULL), AXSTM_EINVAL);
    tu_set_str_ok(v, "s");
    ck_assert_int_eq(axstm_value_get_str(NULL, &str), AXSTM_EINVAL);
    ck_assert_str_eq(str, "sentinel");
    ck_assert_int_eq(axstm_value_get_str(v, NULL), AXSTM_EINVAL);
    tu_assert_str(v, "s");
    axstm_value_free(v);
    axstm_store_free(s);
}
END_TEST

START_TEST(commit_and_refresh_of_null)
{
    ck_assert_int_eq(axstm_value_commit(NULL), AXSTM_EINVAL);
    ck_assert_int_eq(axstm_value_refresh(NULL), AXSTM_EINVAL);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Concurrency                                                        */
/* ------------------------------------------------------------------ */

/*
 * One key read alone under writers.  Writers commit a key with the version
 * that commit gives it as its value (on a conflict they refresh and try
 * again); readers refresh handles on the same key (and now and then check
 * it out afresh and walk the store), and every look must see the version
 * and the value of one commit.  A collection re-checks all its keys' lock
 * words after reading them; a key read alone has only its own read, so a
 * torn read of one key shows here and nowhere else.  Catching one needs a
 * reader between two loads when a writer's stores land, so the run lasts
 * $AXSTM_STRESS_SECONDS (default 1) and moves through several keys, whose
 * entries sit differently in memory (some tear far more readily).
 */
#define TICK_KEYS 16
static char tick_names[TICK_KEYS][24];
/* The run lasts until each writer has committed and each reader looked
 * this many times: past its time it stays on the last key till then (or
 * until a guard against a hang runs out). */
#define TICK_QUOTA 100

struct tick_run {
    axstm_store *s;
    double start, seconds;
    atomic_long commits, write_errors;
    atomic_int owed; /* quotas not met yet */
};

struct tick_reader {
    struct tick_run *run;
    pthread_t thread;
    long looks, torn, errors;
};

/* The key everybody works on now, or -1 once the run is over. */
static int tick_phase(struct tick_run *r)
{
    double elapsed = tu_now() - r->start;
    if (elapsed >= r->seconds) {
        if (atomic_load(&r->owed) <= 0 || elapsed >= r->seconds + TU_HANG_GUARD_S)
            return -1;
        return TICK_KEYS - 1;
    }
    return (int)(elapsed / r->seconds * TICK_KEYS);
}

/* Handles on every tick key: 0, or -1 (holding none) on failure. */
static int tick_handles(axstm_store *s, axstm_value *v[TICK_KEYS])
{
    int k, rc;
    for (k = 0; k < TICK_KEYS; k++) {
        TU_RETRY(rc, axstm_usevar(s, tick_names[k], &v[k]));
        if (rc != AXSTM_OK) {
            while (k-- > 0)
                axstm_value_free(v[k]);
            return -1;
        }
    }
    return 0;
}

static void tick_free(axstm_value *v[TICK_KEYS])
{
    int k;
    for (k = 0; k < TICK_KEYS; k++)
        axstm_value_free(v[k]);
}

static void *tick_writer(void *arg)
{
    struct tick_run *r = arg;
    axstm_value *v[TICK_KEYS];
    unsigned long rounds = 0;
    long mine = 0;
    int rc, p;

    if (tick_handles(r->s, v) != 0) {
        atomic_fetch_add(&r->write_errors, 1);
        return NULL;
    }
    for (p = tick_phase(r); p >= 0;) {
        if (axstm_value_set_i64(v[p], (int64_t)axstm_value_version(v[p]) + 1) != AXSTM_OK) {
            atomic_fetch_add(&r->write_errors, 1);
            break;
        }
        TU_RETRY(rc, axstm_value_commit(v[p]));
        if (rc == AXSTM_CONCURRENT_UPDATE) /* another writer was first */
            TU_RETRY(rc, axstm_value_refresh(v[p]));
        else if (rc == AXSTM_OK) {
            atomic_fetch_add_explicit(&r->commits, 1, memory_order_relaxed);
            if (++mine == TICK_QUOTA)
                atomic_fetch_sub(&r->owed, 1);
        }
        if (rc != AXSTM_OK) {
            atomic_fetch_add(&r->write_errors, 1);
            break;
        }
        if ((++rounds & 63) == 0)
            p = tick_phase(r);
    }
    tick_free(v);
    return NULL;
}

/* Counts one look at a key's (version, value). */
static void tick_look(struct tick_reader *rd, uint64_t version, const void *data, size_t len)
{
    int64_t x;
    rd->looks++;
    if (data == NULL) {
        if (version != 0)
            rd->torn++; /* a committed version without its value */
        return;
    }
    if (len != sizeof x) {
        rd->errors++;
        return;
    }
    memcpy(&x, data, sizeof x);
    if ((uint64_t)x != version)
        rd->torn++;
}

static void tick_look_handle(struct tick_reader *rd, const axstm_value *v)
{
    size_t len;
    const void *data = axstm_value_data(v, &len);
    tick_look(rd, axstm_value_version(v), data, len);
}

static int tick_visit(const char *key, uint64_t version, const void *data, size_t len, void *arg)
{
    (void)key;
    tick_look(arg, version, data, len);
    return 0;
}

static void *tick_reader_main(void *arg)
{
    struct tick_reader *rd = arg;
    struct tick_run *r = rd->run;
    axstm_value *v[TICK_KEYS];
    unsigned long rounds = 0;
    int rc, p, paid = 0;

    if (tick_handles(r->s, v) != 0) {
        rd->errors++;
        return NULL;
    }
    for (p = tick_phase(r); p >= 0;) {
        /* Spin a little on BUSY_RETRY before yielding: a writer holds the
         * lock for a few instructions, and a reader that left the CPU each
         * time would seldom be reading while a writer writes. */
        unsigned spins = 0;
        while ((rc = axstm_value_refresh(v[p])) == AXSTM_BUSY_RETRY)
            if (++spins % 64 == 0)
                sched_yield();
        if (rc != AXSTM_OK) {
            rd->errors++;
            break;
        }
        tick_look_handle(rd, v[p]);
        if (!paid && rd->looks >= TICK_QUOTA) {
            paid = 1;
            atomic_fetch_sub(&r->owed, 1);
        }

        if ((++rounds & 63) == 0) {
            axstm_value *fresh = NULL;
            TU_RETRY(rc, axstm_usevar(r->s, tick_names[p], &fresh));
            if (rc != AXSTM_OK) {
                rd->errors++;
                break;
            }
            tick_look_handle(rd, fresh);
            axstm_value_free(fresh);
            if (axstm_store_foreach(r->s, tick_visit, rd) != AXSTM_OK)
                rd->errors++;
            p = tick_phase(r);
        }
    }
    tick_free(v);
    return NULL;
}

START_TEST(one_key_is_read_whole_under_writers)
{
    enum { WRITERS = 3, READERS = 3 };
    struct tick_run run;
    struct tick_reader rd[READERS];
    pthread_t writers[WRITERS];
    uint64_t versions = 0;
    tu_snapshot snap;
    size_t j;
    int k;

    memset(&run, 0, sizeof run);
    memset(rd, 0, sizeof rd);
    run.s = tu_store_ok();
    atomic_init(&run.commits, 0);
    atomic_init(&run.write_errors, 0);
    for (k = 0; k < TICK_KEYS; k++) {
        axstm_value *v;
        /* Names of different lengths: entries of different sizes. */
        snprintf(tick_names[k], sizeof tick_names[k], "tick.%d.%.*s", k, k % 9, "xxxxxxxx");
        v = tu_usevar_ok(run.s, tick_names[k]);
        axstm_value_free(v);
    }
    run.seconds = tu_stress_seconds();
    atomic_init(&run.owed, WRITERS + READERS);
    run.start = tu_now();
    for (k = 0; k < READERS; k++) {
        rd[k].run = &run;
        ck_assert_int_eq(pthread_create(&rd[k].thread, NULL, tick_reader_main, &rd[k]), 0);
    }
    for (k = 0; k < WRITERS; k++)
        ck_assert_int_eq(pthread_create(&writers[k], NULL, tick_writer, &run), 0);
    for (k = 0; k < WRITERS; k++)
        pthread_join(writers[k], NULL);
    for (k = 0; k < READERS; k++)
        pthread_join(rd[k].thread, NULL);

    ck_assert_int_eq(atomic_load(&run.write_errors), 0);
    ck_assert_int_ge(atomic_load(&run.commits), WRITERS * TICK_QUOTA);
    for (k = 0; k < READERS; k++) {
        ck_assert_msg(rd[k].torn == 0,
                      "reader %d: %ld of %ld looks saw a version "
                      "with another commit's value",
                      k, rd[k].torn, rd[k].looks);
        ck_assert_int_eq(rd[k].errors, 0);
        ck_assert_int_ge(rd[k].looks, TICK_QUOTA);
    }

    /* The store agrees: each key's value is its version, and the versions
     * add up to the commits. */
    tu_snapshot_take(run.s, &snap);
    ck_assert_uint_eq(snap.n, TICK_KEYS);
    for (j = 0; j < snap.n; j++) {
        int64_t x = 0;
        if (snap.e[j].version != 0) {
            ck_assert_uint_eq(snap.e[j].len, sizeof x);
            memcpy(&x, snap.e[j].data, sizeof x);
        }
        ck_assert_uint_eq((uint64_t)x, snap.e[j].version);
        versions += snap.e[j].version;
    }
    ck_assert_uint_eq(versions, (uint64_t)atomic_load(&run.commits));
    tu_snapshot_free(&snap);
    axstm_store_free(run.s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Several handles committed together (axstm_values_commit)           */
/* ------------------------------------------------------------------ */

static int values_commit(axstm_value *const values[], size_t n)
{
    int rc;
    TU_RETRY(rc, axstm_values_commit(values, n));
    return rc;
}

/* All or nothing, by Axon's rule: one key committed by someone else since
 * its handle's version rejects the whole commit, leaving every key and
 * every handle as it was; refreshed, the same handles commit. */
START_TEST(values_commit_all_or_nothing)
{
    axstm_store *s = tu_store_ok();
    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "b", 2);
    tu_put_i64(s, "c", 3);
    axstm_value *v[3] = {tu_usevar_ok(s, "a"), tu_usevar_ok(s, "b"), tu_usevar_ok(s, "c")};
    for (int i = 0; i < 3; i++)
        tu_set_i64_ok(v[i], 10 + i);

    axstm_value *other = tu_usevar_ok(s, "b");
    tu_set_i64_ok(other, 99);
    ck_assert_int_eq(tu_commit(other), AXSTM_OK);

    uint64_t conflicts = tu_stats_ok(s).conflicts;
    ck_assert_int_eq(values_commit(v, 3), AXSTM_CONCURRENT_UPDATE);
    ck_assert_uint_eq(tu_stats_ok(s).conflicts, conflicts + 1);
    tu_assert_committed(s, "a", 1, 1, 1);
    tu_assert_committed(s, "b", 2, 1, 99);
    tu_assert_committed(s, "c", 1, 1, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(axstm_value_version(v[i]), 1);
        ck_assert_int_eq(tu_get_i64_ok(v[i]), 10 + i);
    }

    tu_refresh_ok(v[1]);
    ck_assert_int_eq(tu_get_i64_ok(v[1]), 99);
    tu_set_i64_ok(v[1], 11);
    ck_assert_int_eq(values_commit(v, 3), AXSTM_OK);
    tu_assert_committed(s, "a", 2, 1, 10);
    tu_assert_committed(s, "b", 3, 1, 11);
    tu_assert_committed(s, "c", 2, 1, 12);
    ck_assert_uint_eq(axstm_value_version(v[0]), 2);
    ck_assert_uint_eq(axstm_value_version(v[1]), 3);
    ck_assert_uint_eq(axstm_value_version(v[2]), 2);

    /* What a commit that lost tells the others: b's old holder loses. */
    tu_set_i64_ok(other, 0);
    ck_assert_int_eq(tu_commit(other), AXSTM_CONCURRENT_UPDATE);
    axstm_value_free(other);
    for (int i = 0; i < 3; i++)
        axstm_value_free(v[i]);
    axstm_store_free(s);
}
END_TEST

/* Kept handles commit again and again with no refresh while nobody else
 * writes, unchanged values included (their versions move, as Axon's do),
 * and in any order of the handles. */
START_TEST(values_commit_keeps_the_handles)
{
    axstm_store *s = tu_store_ok();
    axstm_value *x = tu_usevar_ok(s, "x"), *y = tu_usevar_ok(s, "y");
    tu_set_i64_ok(x, 100);
    tu_set_i64_ok(y, 0);
    for (int round = 1; round <= 10; round++) {
        axstm_value *pair[2] = {round % 2 ? x : y, round % 2 ? y : x};
        if (round > 1) {
            tu_set_i64_ok(x, tu_get_i64_ok(x) - 1);
            if (round % 3 != 0) /* y left as it is every third round */
                tu_set_i64_ok(y, tu_get_i64_ok(y) + 1);
        }
        ck_assert_int_eq(values_commit(pair, 2), AXSTM_OK);
        ck_assert_uint_eq(axstm_value_version(x), (uint64_t)round);
        ck_assert_uint_eq(axstm_value_version(y), (uint64_t)round);
    }
    tu_assert_committed(s, "x", 10, 1, 91);
    tu_assert_committed(s, "y", 10, 1, 6);
    /* One handle alone, and none, are commits too. */
    ck_assert_int_eq(values_commit(&x, 1), AXSTM_OK);
    tu_assert_committed(s, "x", 11, 1, 91);
    ck_assert_int_eq(axstm_values_commit(&x, 0), AXSTM_OK);
    ck_assert_int_eq(axstm_values_commit(NULL, 0), AXSTM_OK);
    tu_assert_committed(s, "x", 11, 1, 91);
    axstm_value_free(x);
    axstm_value_free(y);
    axstm_store_free(s);
}
END_TEST

/* A handle marked for deletion deletes its key with the others' writes;
 * a handle of a key deleted since (even created again) loses. */
START_TEST(values_commit_deletes_and_sees_deletes)
{
    axstm_store *s = tu_store_ok();
    tu_put_i64(s, "keep", 1);
    tu_put_i64(s, "drop", 2);
    axstm_value *keep = tu_usevar_ok(s, "keep"), *drop = tu_usevar_ok(s, "drop");
    tu_set_i64_ok(keep, 3);
    ck_assert_int_eq(axstm_value_delete(drop), AXSTM_OK);
    axstm_value *pair[2] = {keep, drop};
    ck_assert_int_eq(values_commit(pair, 2), AXSTM_OK);
    tu_assert_committed(s, "keep", 2, 1, 3);
    tu_assert_absent(s, "drop");

    /* Another handle deletes "keep" and a third creates it again. */
    axstm_value *other = tu_usevar_ok(s, "keep");
    ck_assert_int_eq(axstm_value_delete(other), AXSTM_OK);
    ck_assert_int_eq(tu_commit(other), AXSTM_OK);
    axstm_value_free(other);
    tu_put_i64(s, "keep", 7);
    axstm_value *fresh = tu_usevar_ok(s, "fresh");
    pair[1] = fresh;
    tu_set_i64_ok(keep, 4);
    tu_set_i64_ok(fresh, 5);
    ck_assert_int_eq(values_commit(pair, 2), AXSTM_CONCURRENT_UPDATE);
    tu_assert_committed(s, "keep", 1, 1, 7);
    tu_assert_committed(s, "fresh", 0, 0, 0);
    tu_refresh_ok(keep);
    tu_set_i64_ok(keep, 4);
    ck_assert_int_eq(values_commit(pair, 2), AXSTM_OK);
    tu_assert_committed(s, "keep", 2, 1, 4);
    tu_assert_committed(s, "fresh", 1, 1, 5);
    axstm_value_free(keep);
    axstm_value_free(drop);
    axstm_value_free(fresh);
    axstm_store_free(s);
}
END_TEST

/* More handles than fit the stack: the same rules, duplicates found. */
START_TEST(values_commit_many_handles)
{
    enum { N = 40 };
    axstm_store *s = tu_store_ok();
    axstm_value *v[N];
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "many-%d", (i * 17) % N);
        v[i] = tu_usevar_ok(s, name);
        tu_set_i64_ok(v[i], i);
    }
    ck_assert_int_eq(values_commit(v, N), AXSTM_OK);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(axstm_value_version(v[i]), 1);
        tu_assert_committed(s, axstm_value_key(v[i]), 1, 1, i);
    }
    axstm_value *again = tu_usevar_ok(s, axstm_value_key(v[N / 2]));
    axstm_value *saved = v[N - 1];
    v[N - 1] = again;
    ck_assert_int_eq(axstm_values_commit(v, N), AXSTM_EINVAL);
    v[N - 1] = saved;
    tu_set_i64_ok(again, -1);
    ck_assert_int_eq(tu_commit(again), AXSTM_OK);
    ck_assert_int_eq(values_commit(v, N), AXSTM_CONCURRENT_UPDATE);
    for (int i = 0; i < N; i++)
        ck_assert_uint_eq(axstm_value_version(v[i]), 1);
    tu_assert_committed(s, axstm_value_key(v[0]), 1, 1, 0);
    axstm_value_free(again);
    for (int i = 0; i < N; i++)
        axstm_value_free(v[i]);
    axstm_store_free(s);
}
END_TEST

/* Each bad argument is AXSTM_EINVAL with nothing written. */
/* a = 1 and b = 2 committed at version 1; handles of them changed to 10
 * and 20. */
static void two_changed_handles(axstm_store *s, axstm_value **a, axstm_value **b)
{
    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "b", 2);
    *a = tu_usevar_ok(s, "a");
    *b = tu_usevar_ok(s, "b");
    tu_set_i64_ok(*a, 10);
    tu_set_i64_ok(*b, 20);
}

/* Every bad list of handles is AXSTM_EINVAL for fn (axstm_values_commit
 * or axstm_values_refresh) and changes nothing: a and b keep their local
 * 10 and 20 at version 1. */
static void assert_bad_lists_are_einval(int (*fn)(axstm_value *const[], size_t), axstm_store *s,
                                        axstm_value *a, axstm_value *b)
{
    axstm_store *t = tu_store_ok();
    axstm_value *a2 = tu_usevar_ok(s, "a"), *elsewhere = tu_usevar_ok(t, "b");
    const char *keys[1] = {"b"};
    axstm_collection *c = tu_using_ok(s, keys, 1);
    ck_assert_int_eq(fn(NULL, 2), AXSTM_EINVAL);
    axstm_value *with_null[2] = {a, NULL}, *null_first[2] = {NULL, a};
    ck_assert_int_eq(fn(with_null, 2), AXSTM_EINVAL);
    ck_assert_int_eq(fn(null_first, 1), AXSTM_EINVAL);
    axstm_value *borrowed[2] = {a, axstm_collection_at(c, 0)};
    ck_assert_int_eq(fn(borrowed, 2), AXSTM_EINVAL);
    ck_assert_int_eq(fn(&borrowed[1], 1), AXSTM_EINVAL);
    axstm_value *two_stores[2] = {a, elsewhere};
    ck_assert_int_eq(fn(two_stores, 2), AXSTM_EINVAL);
    axstm_value *same_key[3] = {a, b, a2}, *same_handle[2] = {b, b};
    ck_assert_int_eq(fn(same_key, 3), AXSTM_EINVAL);
    ck_assert_int_eq(fn(same_handle, 2), AXSTM_EINVAL);
    ck_assert_uint_eq(axstm_value_version(a), 1);
    ck_assert_int_eq(tu_get_i64_ok(a), 10);
    ck_assert_int_eq(tu_get_i64_ok(b), 20);
    axstm_collection_free(c);
    axstm_value_free(a2);
    axstm_value_free(elsewhere);
    axstm_store_free(t);
}

START_TEST(values_commit_bad_input)
{
    axstm_store *s = tu_store_ok();
    axstm_value *a, *b;
    two_changed_handles(s, &a, &b);
    assert_bad_lists_are_einval(axstm_values_commit, s, a, b);
    tu_assert_committed(s, "a", 1, 1, 1);
    tu_assert_committed(s, "b", 1, 1, 2);
    axstm_value *good[2] = {b, a};
    ck_assert_int_eq(values_commit(good, 2), AXSTM_OK);
    tu_assert_committed(s, "a", 2, 1, 10);
    tu_assert_committed(s, "b", 2, 1, 20);
    axstm_value_free(a);
    axstm_value_free(b);
    axstm_store_free(s);
}
END_TEST


START_TEST(values_refresh_drops_changes_and_brings_back_deleted_keys)
{
    axstm_store *s = tu_store_ok();
    tu_put_i64(s, "a", 1);
    tu_put_i64(s, "b", 2);
    axstm_value *v[3] = {tu_usevar_ok(s, "a"), tu_usevar_ok(s, "b"), tu_usevar_ok(s, "c")};
    for (int i = 0; i < 3; i++)
        tu_set_i64_ok(v[i], 10 + i);
    axstm_value *other = tu_usevar_ok(s, "a");
    tu_set_i64_ok(other, 5);
    ck_assert_int_eq(tu_commit(other), AXSTM_OK);
    axstm_value_free(other);
    /* b deleted, by another handle: its handle gets the key born again. */
    other = tu_usevar_ok(s, "b");
    ck_assert_int_eq(axstm_value_delete(other), AXSTM_OK);
    ck_assert_int_eq(tu_commit(other), AXSTM_OK);
    axstm_value_free(other);

    ck_assert_int_eq(axstm_values_refresh(v, 3), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(v[0]), 2);
    ck_assert_int_eq(tu_get_i64_ok(v[0]), 5);
    ck_assert_uint_eq(axstm_value_version(v[1]), 0);
    ck_assert_ptr_null(axstm_value_data(v[1], NULL));
    ck_assert_uint_eq(axstm_value_version(v[2]), 0);
    ck_assert_ptr_null(axstm_value_data(v[2], NULL));
    /* Current again: they commit. */
    for (int i = 0; i < 3; i++)
        tu_set_i64_ok(v[i], 20 + i);
    ck_assert_int_eq(values_commit(v, 3), AXSTM_OK);
    tu_assert_committed(s, "a", 3, 1, 20);
    tu_assert_committed(s, "b", 1, 1, 21);
    tu_assert_committed(s, "c", 1, 1, 22);
    ck_assert_int_eq(axstm_values_refresh(v, 0), AXSTM_OK);
    ck_assert_int_eq(axstm_values_refresh(NULL, 0), AXSTM_OK);
    for (int i = 0; i < 3; i++)
        axstm_value_free(v[i]);
    axstm_store_free(s);
}
END_TEST

START_TEST(values_refresh_bad_input_changes_nothing)
{
    axstm_store *s = tu_store_ok();
    axstm_value *a, *b;
    two_changed_handles(s, &a, &b);
    tu_put_i64(s, "a", 3); /* a refresh would change a */
    assert_bad_lists_are_einval(axstm_values_refresh, s, a, b);
    axstm_value *good[2] = {b, a};
    ck_assert_int_eq(axstm_values_refresh(good, 2), AXSTM_OK);
    ck_assert_uint_eq(axstm_value_version(a), 2);
    ck_assert_int_eq(tu_get_i64_ok(a), 3);
    ck_assert_int_eq(tu_get_i64_ok(b), 2);
    axstm_value_free(a);
    axstm_value_free(b);
    axstm_store_free(s);
}
END_TEST

/* One snapshot: while another thread moves money between the accounts
 * (all of them together, so that the total stays), a refresh of the kept
 * handles always sees the total; refreshing them one by one would not. */
#define SNAP_ACCOUNTS 12 /* more than values_refresh orders on the stack */

struct mover {
    axstm_store *s;
    pthread_t thread;
    atomic_bool stop;
    long moves;
    int rc;
};

static void *move_money(void *arg)
{
    struct mover *m = arg;
    axstm_value *h[SNAP_ACCOUNTS];
    char name[32];
    int rc = AXSTM_OK;
    for (int i = 0; i < SNAP_ACCOUNTS && rc == AXSTM_OK; i++) {
        snprintf(name, sizeof name, "snap-%d", i);
        TU_RETRY(rc, axstm_usevar(m->s, name, &h[i]));
    }
    for (long round = 0; rc == AXSTM_OK && !atomic_load(&m->stop); round++) {
        /* Every account's balance moves on by one place. */
        int64_t x[SNAP_ACCOUNTS];
        for (int i = 0; i < SNAP_ACCOUNTS && rc == AXSTM_OK; i++)
            rc = axstm_value_get_i64(h[i], &x[i]);
        for (int i = 0; i < SNAP_ACCOUNTS && rc == AXSTM_OK; i++)
            rc = axstm_value_set_i64(h[i], x[(i + 1) % SNAP_ACCOUNTS]);
        if (rc == AXSTM_OK)
            TU_RETRY(rc, axstm_values_commit(h, SNAP_ACCOUNTS));
        if (rc == AXSTM_CONCURRENT_UPDATE)
            TU_RETRY(rc, axstm_values_refresh(h, SNAP_ACCOUNTS));
        else if (rc == AXSTM_OK)
            m->moves++;
    }
    m->rc = rc;
    for (int i = 0; i < SNAP_ACCOUNTS; i++)
        axstm_value_free(h[i]);
    return NULL;
}

START_TEST(values_refresh_takes_one_snapshot)
{
    axstm_store *s = tu_store_ok();
    char name[32];
    axstm_value *h[SNAP_ACCOUNTS];
    int64_t total = 0;
    for (int i = 0; i < SNAP_ACCOUNTS; i++) {
        snprintf(name, sizeof name, "snap-%d", i);
        tu_put_i64(s, name, (int64_t)1 << i);
        total += (int64_t)1 << i;
        h[i] = tu_usevar_ok(s, name);
    }
    struct mover m = {s, 0, false, 0, AXSTM_OK};
    tu_start(&m.thread, move_money, &m);
    int rounds = tu_store_is_remote() ? 300 : (tu_under_valgrind() ? 300 : 3000);
    for (int r = 0; r < rounds; r++) {
        int rc;
        TU_RETRY(rc, axstm_values_refresh(h, SNAP_ACCOUNTS));
        ck_assert_int_eq(rc, AXSTM_OK);
        int64_t sum = 0, mask = 0;
        for (int i = 0; i < SNAP_ACCOUNTS; i++) {
            int64_t x = tu_get_i64_ok(h[i]);
            sum += x;
            mask |= x;
        }
        ck_assert_msg(sum == total && mask == total, "round %d: a mix of two states", r);
    }
    atomic_store(&m.stop, true);
    tu_join(m.thread);
    ck_assert_int_eq(m.rc, AXSTM_OK);
    for (int i = 0; i < SNAP_ACCOUNTS; i++)
        axstm_value_free(h[i]);
    axstm_store_free(s);
}
END_TEST

/*
 * Transfers between kept handles from several threads, each thread with a
 * handle per account: the total never moves, and every key's version is
 * exactly its number of commits (each transfer bumps two keys).
 */
#define KEPT_ACCOUNTS 8
#define KEPT_THREADS 4

struct kept_worker {
    axstm_store *s;
    pthread_t thread;
    unsigned seed;
    long transfers, target, conflicts, errors;
};

static void *kept_transfers(void *arg)
{
    struct kept_worker *w = arg;
    axstm_value *h[KEPT_ACCOUNTS] = {NULL};
    char name[32];
    uint64_t rng = w->seed * 0x9e3779b97f4a7c15u + 1;
    int rc = AXSTM_OK;
    for (int i = 0; i < KEPT_ACCOUNTS && rc == AXSTM_OK; i++) {
        snprintf(name, sizeof name, "acct-%d", i);
        TU_RETRY(rc, axstm_usevar(w->s, name, &h[i]));
    }
    while (rc == AXSTM_OK && w->transfers < w->target) {
        size_t a = tu_rand(&rng) % KEPT_ACCOUNTS, b = tu_rand(&rng) % (KEPT_ACCOUNTS - 1);
        b += b >= a;
        int64_t x, y, amount = (int64_t)(tu_rand(&rng) % 5);
        axstm_value *pair[2] = {h[a], h[b]};
        if ((rc = axstm_value_get_i64(h[a], &x)) != AXSTM_OK ||
            (rc = axstm_value_get_i64(h[b], &y)) != AXSTM_OK ||
            (rc = axstm_value_set_i64(h[a], x - amount)) != AXSTM_OK ||
            (rc = axstm_value_set_i64(h[b], y + amount)) != AXSTM_OK)
            break;
        TU_RETRY(rc, axstm_values_commit(pair, 2));
        if (rc == AXSTM_OK) {
            w->transfers++;
        } else if (rc == AXSTM_CONCURRENT_UPDATE) {
            w->conflicts++;
            TU_RETRY(rc, axstm_values_refresh(pair, 2));
        }
    }
    if (rc != AXSTM_OK)
        w->errors++;
    for (int i = 0; i < KEPT_ACCOUNTS; i++)
        axstm_value_free(h[i]);
    return NULL;
}

START_TEST(kept_handle_transfers_lose_nothing)
{
    axstm_store *s = tu_store_ok();
    char name[32];
    for (int i = 0; i < KEPT_ACCOUNTS; i++) {
        snprintf(name, sizeof name, "acct-%d", i);
        tu_put_i64(s, name, 100);
    }
    long per_thread = tu_store_is_remote() ? 150 : (tu_under_valgrind() ? 2000 : 20000);
    struct kept_worker w[KEPT_THREADS];
    for (int t = 0; t < KEPT_THREADS; t++) {
        w[t] = (struct kept_worker){s, 0, (unsigned)t + 1, 0, per_thread, 0, 0};
        tu_start(&w[t].thread, kept_transfers, &w[t]);
    }
    long transfers = 0;
    for (int t = 0; t < KEPT_THREADS; t++) {
        tu_join(w[t].thread);
        ck_assert_int_eq(w[t].errors, 0);
        transfers += w[t].transfers;
    }
    ck_assert_int_eq(transfers, KEPT_THREADS * per_thread);
    tu_snapshot snap;
    tu_snapshot_take(s, &snap);
    ck_assert_uint_eq(snap.n, KEPT_ACCOUNTS);
    uint64_t versions = 0;
    int64_t total = 0;
    for (size_t i = 0; i < snap.n; i++) {
        int64_t x;
        ck_assert_uint_eq(snap.e[i].len, sizeof x);
        memcpy(&x, snap.e[i].data, sizeof x);
        total += x;
        versions += snap.e[i].version;
    }
    tu_snapshot_free(&snap);
    ck_assert_int_eq(total, 100 * KEPT_ACCOUNTS);
    ck_assert_uint_eq(versions, (uint64_t)KEPT_ACCOUNTS + 2 * (uint64_t)transfers);
    axstm_store_free(s);
}
END_TEST

static Suite *value_suite(void)
{
    Suite *s = suite_create("value");
    TCase *tc;

    tc = tcase_create("Axon rules");
    tcase_add_test(tc, scenario_greeting);
    tcase_add_test(tc, scenario_struct_two_holders);
    tcase_add_test(tc, usevar_creates_key_that_stays);
    tcase_add_test(tc, no_value_differs_from_empty_value);
    tcase_add_test(tc, checkout_is_a_private_snapshot);
    tcase_add_test(tc, commit_rejected_iff_store_is_newer);
    tcase_add_test(tc, two_new_handles_race_for_a_new_key);
    tcase_add_test(tc, commit_writes_unchanged_values);
    tcase_add_test(tc, commit_again_without_checkout);
    tcase_add_test(tc, refresh_picks_up_committed_state);
    tcase_add_test(tc, key_survives_its_handle);
    suite_add_tcase(s, tc);

    tc = tcase_create("Typed values");
    tcase_add_test(tc, i64_round_trips);
    tcase_add_test(tc, i64_wrong_size_or_no_value);
    tcase_add_test(tc, str_round_trips);
    tcase_add_test(tc, str_not_nul_terminated);
    suite_add_tcase(s, tc);

    tc = tcase_create("Limits");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, longest_key);
    tcase_add_test(tc, oversized_value_is_not_read);
    tcase_add_test(tc, megabytes_round_trip);
    tcase_add_test(tc, largest_value_is_accepted);
    suite_add_tcase(s, tc);

    tc = tcase_create("Bad input");
    tcase_add_test(tc, usevar_bad_input);
    tcase_add_test(tc, getters_of_null);
    tcase_add_test(tc, set_bad_input);
    tcase_add_test(tc, get_bad_input);
    tcase_add_test(tc, commit_and_refresh_of_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("Several handles");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, values_commit_all_or_nothing);
    tcase_add_test(tc, values_commit_keeps_the_handles);
    tcase_add_test(tc, values_commit_deletes_and_sees_deletes);
    tcase_add_test(tc, values_commit_many_handles);
    tcase_add_test(tc, values_commit_bad_input);
    tcase_add_test(tc, kept_handle_transfers_lose_nothing);
    tcase_add_test(tc, values_refresh_drops_changes_and_brings_back_deleted_keys);
    tcase_add_test(tc, values_refresh_bad_input_changes_nothing);
    tcase_add_test(tc, values_refresh_takes_one_snapshot);
    suite_add_tcase(s, tc);

    tc = tcase_create("Concurrency");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, one_key_is_read_whole_under_writers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(value_suite());
}
