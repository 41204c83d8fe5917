/* SPDX-License-Identifier: MIT */
/*
 * hello.c -- Axon.STM's greeting example: one named value, two handles, a
 * commit that must fail, and the right way to redo it.
 *
 * Only this thread uses the store, so no lock can be busy and
 * AXSTM_BUSY_RETRY cannot happen here; the redo loop in accounts.c shows how
 * threaded code handles it.
 */
#include <axstm.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Reports a broken expectation on stderr; returns ok so callers can stop. */
static int expect(int ok, const char *what)
{
    if (!ok)
        fprintf(stderr, "hello: unexpected: %s\n", what);
    return ok;
}

static int expect_rc(int rc, int want, const char *what)
{
    if (rc != want)
        fprintf(stderr, "hello: %s: got \"%s\", expected \"%s\"\n", what, axstm_strerror(rc),
                axstm_strerror(want));
    return rc == want;
}

/* True when v's private copy is the string want, based on version ver. */
static int holds(const axstm_value *v, const char *want, uint64_t ver)
{
    const char *str;

    return axstm_value_get_str(v, &str) == AXSTM_OK && strcmp(str, want) == 0 &&
           axstm_value_version(v) == ver;
}

static void show(const char *step, const axstm_value *v)
{
    const char *str;

    if (axstm_value_get_str(v, &str) == AXSTM_OK)
        printf("%-38s \"%s\", version %" PRIu64 "\n", step, str, axstm_value_version(v));
    else
        printf("%-38s no value, version %" PRIu64 "\n", step, axstm_value_version(v));
}

int main(void)
{
    axstm_store *s = axstm_store_new();
    axstm_value *greeting = NULL, *other = NULL;
    int ok = 0, rc;

    if (!expect(s != NULL, "axstm_store_new: out of memory"))
        return 1;

    /* A key that does not exist yet is created, with no value. */
    if (!expect_rc(axstm_usevar(s, "hello", &greeting), AXSTM_OK, "usevar") ||
        !expect(axstm_value_data(greeting, NULL) == NULL && axstm_value_version(greeting) == 0,
                "a new key has no value and version 0"))
        goto out;
    show("greeting = usevar(\"hello\"):", greeting);

    if (!expect_rc(axstm_value_set_str(greeting, "Hello World"), AXSTM_OK, "set") ||
        !expect_rc(axstm_value_commit(greeting), AXSTM_OK, "first commit") ||
        !expect(holds(greeting, "Hello World", 1), "version 1 after commit"))
        goto out;
    show("greeting.set(\"Hello World\"), commit:", greeting);

    /* A second handle, as another thread would have, changes the value. */
    if (!expect_rc(axstm_usevar(s, "hello", &other), AXSTM_OK, "second usevar") ||
        !expect(holds(other, "Hello World", 1), "second handle sees version 1"))
        goto out;
    show("other = usevar(\"hello\"):", other);
    if (!expect_rc(axstm_value_set_str(other, "Woo"), AXSTM_OK, "set") ||
        !expect_rc(axstm_value_commit(other), AXSTM_OK, "second handle's commit") ||
        !expect(holds(other, "Woo", 2), "version 2 after commit"))
        goto out;
    show("other.set(\"Woo\"), commit:", other);

    /* greeting was checked out at version 1, so its commit must be refused. */
    if (!expect_rc(axstm_value_set_str(greeting, "Woo"), AXSTM_OK, "set"))
        goto out;
    rc = axstm_value_commit(greeting);
    if (!expect_rc(rc, AXSTM_CONCURRENT_UPDATE, "stale commit") ||
        !expect(holds(greeting, "Woo", 1), "a refused commit leaves the handle as it was"))
        goto out;
    printf("%-38s AXSTM_CONCURRENT_UPDATE: %s\n",
           "greeting.set(\"Woo\"), commit:", axstm_strerror(rc));

    /* The right way: re-read the committed state, redo the work, commit. */
    if (!expect_rc(axstm_value_refresh(greeting), AXSTM_OK, "refresh") ||
        !expect(holds(greeting, "Woo", 2), "refresh reads version 2"))
        goto out;
    show("greeting.refresh():", greeting);
    if (!expect_rc(axstm_value_set_str(greeting, "Woo"), AXSTM_OK, "set") ||
        !expect_rc(axstm_value_commit(greeting), AXSTM_OK, "redone commit") ||
        !expect(holds(greeting, "Woo", 3), "version 3 after the redone commit"))
        goto out;
    show("greeting.set(\"Woo\"), commit:", greeting);
    ok = 1;

out:
    axstm_value_free(other);
    axstm_value_free(greeting);
    axstm_store_free(s);
    return ok ? 0 : 1;
}
