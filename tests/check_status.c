/* SPDX-License-Identifier: MIT */
/*
 * check_status.c -- the list of codes and axstm_strerror; errors are
 * returned, never printed; the version macros and functions agree.
 */
#include <limits.h>
#include <unistd.h>

#include "testutil.h"

#include "alloc.h"

#define CODE_VALUE_(name, value, msg) AXSTM_##name,
static const int codes[] = {AXSTM_CODE_MAP(CODE_VALUE_)};
#undef CODE_VALUE_

#define CODE_NAME_(name, value, msg) #name,
static const char *const code_names[] = {AXSTM_CODE_MAP(CODE_NAME_)};
#undef CODE_NAME_

#define NCODES (sizeof codes / sizeof codes[0])

/* ------------------------------------------------------------------ */
/* Codes                                                              */
/* ------------------------------------------------------------------ */

START_TEST(ok_is_zero_and_the_rest_negative)
{
    size_t i;
    ck_assert_int_eq(AXSTM_OK, 0);
    ck_assert_int_eq(codes[0], AXSTM_OK);
    for (i = 1; i < NCODES; i++)
        ck_assert_msg(codes[i] < 0, "AXSTM_%s is %d, not negative", code_names[i], codes[i]);
}
END_TEST

START_TEST(codes_are_distinct)
{
    size_t i, j;
    for (i = 0; i < NCODES; i++)
        for (j = i + 1; j < NCODES; j++)
            ck_assert_msg(codes[i] != codes[j], "AXSTM_%s == AXSTM_%s", code_names[i],
                          code_names[j]);
}
END_TEST

START_TEST(every_named_code_is_in_the_map)
{
    /* The codes API.md names must all come from the one list. */
    static const int named[] = {
        AXSTM_OK,         AXSTM_CONCURRENT_UPDATE,
        AXSTM_BUSY_RETRY, AXSTM_RETRY,
        AXSTM_ETIMEDOUT,  AXSTM_EINVAL,
        AXSTM_E2BIG,      AXSTM_ENOMEM,
        AXSTM_ENOVALUE,   AXSTM_ETYPE,
    };
    size_t i, j;
    for (i = 0; i < sizeof named / sizeof named[0]; i++) {
        int found = 0;
        for (j = 0; j < NCODES; j++)
            found |= named[i] == codes[j];
        ck_assert_msg(found, "code %d is not in AXSTM_CODE_MAP", named[i]);
    }
}
END_TEST

/* ------------------------------------------------------------------ */
/* Messages                                                           */
/* ------------------------------------------------------------------ */

START_TEST(every_code_has_a_message)
{
    size_t i;
    for (i = 0; i < NCODES; i++) {
        const char *m = axstm_strerror(codes[i]);
        ck_assert_msg(m != NULL, "strerror(AXSTM_%s) is NULL", code_names[i]);
        ck_assert_msg(m[0] != '\0', "strerror(AXSTM_%s) is empty", code_names[i]);
    }
}
END_TEST

START_TEST(messages_are_distinct)
{
    size_t i, j;
    for (i = 0; i < NCODES; i++)
        for (j = i + 1; j < NCODES; j++)
            ck_assert_msg(strcmp(axstm_strerror(codes[i]), axstm_strerror(codes[j])) != 0,
                          "AXSTM_%s and AXSTM_%s share a message", code_names[i], code_names[j]);
}
END_TEST

START_TEST(message_comes_from_the_map)
{
#define CODE_CHECK_(name, value, msg) ck_assert_str_eq(axstm_strerror(AXSTM_##name), msg);
    AXSTM_CODE_MAP(CODE_CHECK_)
#undef CODE_CHECK_
}
END_TEST

static void assert_unknown_message(int code)
{
    const char *m = axstm_strerror(code);
    size_t i;
    ck_assert_msg(m != NULL, "strerror(%d) is NULL", code);
    ck_assert_msg(m[0] != '\0', "strerror(%d) is empty", code);
    /* An unknown code must not pass for one of the library's. */
    for (i = 0; i < NCODES; i++)
        ck_assert_msg(strcmp(m, axstm_strerror(codes[i])) != 0, "strerror(%d) reads as AXSTM_%s",
                      code, code_names[i]);
}

START_TEST(unknown_negative_codes)
{
    int min = 0;
    size_t i;
    for (i = 0; i < NCODES; i++)
        if (codes[i] < min)
            min = codes[i];
    assert_unknown_message(min - 1);
    assert_unknown_message(-1000);
    assert_unknown_message(INT_MIN);
}
END_TEST

START_TEST(positive_codes_are_the_callers)
{
    assert_unknown_message(1);
    assert_unknown_message(42);
    assert_unknown_message(INT_MAX);
    /* Caller-defined codes are not "unknown errors". */
    ck_assert_str_ne(axstm_strerror(1), axstm_strerror(INT_MIN));
}
END_TEST

/* ------------------------------------------------------------------ */
/* Version                                                            */
/* ------------------------------------------------------------------ */

/* The macros are meant for #if: a program tests them before compiling. */
#if !defined(AXSTM_VERSION_MAJOR) || !defined(AXSTM_VERSION_MINOR) || \
    !defined(AXSTM_VERSION_PATCH) || !defined(AXSTM_VERSION_HEX)
#error "axstm.h does not define the AXSTM_VERSION_ numbers"
#elif AXSTM_VERSION_HEX != \
    ((AXSTM_VERSION_MAJOR << 16) | (AXSTM_VERSION_MINOR << 8) | AXSTM_VERSION_PATCH)
#error "AXSTM_VERSION_HEX does not encode MAJOR.MINOR.PATCH"
#endif

START_TEST(version_numbers_fit_the_hex)
{
    /* Each number must fit its byte, or a later release could compare
     * smaller. */
    ck_assert_int_ge(AXSTM_VERSION_MAJOR, 0);
    ck_assert_int_le(AXSTM_VERSION_MAJOR, 255);
    ck_assert_int_ge(AXSTM_VERSION_MINOR, 0);
    ck_assert_int_le(AXSTM_VERSION_MINOR, 255);
    ck_assert_int_ge(AXSTM_VERSION_PATCH, 0);
    ck_assert_int_le(AXSTM_VERSION_PATCH, 255);
    ck_assert_uint_eq(AXSTM_VERSION_HEX >> 16, AXSTM_VERSION_MAJOR);
    ck_assert_uint_eq((AXSTM_VERSION_HEX >> 8) & 0xff, AXSTM_VERSION_MINOR);
    ck_assert_uint_eq(AXSTM_VERSION_HEX & 0xff, AXSTM_VERSION_PATCH);
}
END_TEST

START_TEST(version_string_spells_the_numbers)
{
    char spelt[32];
    snprintf(spelt, sizeof spelt, "%d.%d.%d", AXSTM_VERSION_MAJOR, AXSTM_VERSION_MINOR,
             AXSTM_VERSION_PATCH);
    ck_assert_str_eq(AXSTM_VERSION_STRING, spelt);
#ifdef PACKAGE_VERSION
    /* configure's version, from the same numbers at the top of configure.ac. */
    ck_assert_str_eq(AXSTM_VERSION_STRING, PACKAGE_VERSION);
#endif
}
END_TEST

START_TEST(library_reports_the_version_compiled_against)
{
    /* This program is built with the library it runs with. */
    ck_assert_uint_eq(axstm_version(), AXSTM_VERSION_HEX);
    ck_assert_ptr_nonnull(axstm_version_string());
    ck_assert_str_eq(axstm_version_string(), AXSTM_VERSION_STRING);
}
END_TEST

START_TEST(library_version_and_string_agree)
{
    unsigned major, minor, patch;
    char tail;
    ck_assert_int_eq(sscanf(axstm_version_string(), "%u.%u.%u%c", &major, &minor, &patch, &tail),
                     3);
    ck_assert_uint_eq(axstm_version(), major << 16 | minor << 8 | patch);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Errors                                                             */
/* ------------------------------------------------------------------ */

/*
 * Runs fn(arg) with stdout and stderr going to a scratch file.  Returns the
 * number of bytes written there, the first of them in first[0..cap).
 */
static long bytes_printed(void (*fn)(void *), void *arg, char *first, size_t cap)
{
    FILE *scratch = tmpfile();
    int out, err;
    long n;
    size_t got;

    ck_assert_ptr_nonnull(scratch);
    fflush(stdout);
    fflush(stderr);
    out = dup(STDOUT_FILENO);
    err = dup(STDERR_FILENO);
    ck_assert(out >= 0 && err >= 0);
    ck_assert(dup2(fileno(scratch), STDOUT_FILENO) >= 0);
    ck_assert(dup2(fileno(scratch), STDERR_FILENO) >= 0);
    fn(arg);
    fflush(stdout);
    fflush(stderr);
    dup2(out, STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    close(out);
    close(err);

    ck_assert_int_eq(fseek(scratch, 0, SEEK_END), 0);
    n = ftell(scratch);
    rewind(scratch);
    got = fread(first, 1, cap - 1, scratch);
    first[got] = '\0';
    for (; got > 0; got--) /* one line, for the failure message */
        if (first[got - 1] == '\n')
            first[got - 1] = ' ';
    fclose(scratch);
    return n;
}

struct error_run {
    int wrong; /* calls that did not answer the code expected */
};

static void expect(struct error_run *r, int got, int want)
{
    if (got != want)
        r->wrong++;
}

/* Every kind of error the Store API returns, and its successes around
 * them.  Asserts nothing itself: it runs with the output redirected. */
static void every_error(void *arg)
{
    static char long_key[AXSTM_KEY_MAX + 2];
    static const unsigned char three[3] = {1, 2, 3};
    const char *const bad_keys[] = {"fine", ""};
    const char *const long_keys[] = {"fine", long_key};
    const char *const pair[] = {"pair.1", "pair.2"};
    const char *const fresh[] = {"fresh"};
    struct error_run *r = arg;
    axstm_store *s = axstm_store_new(), *nomem;
    axstm_value *a = NULL, *b = NULL, *v = NULL;
    axstm_collection *c = NULL, *d = NULL, *cv = NULL;
    axstm_stats st;
    const char *str;
    int64_t x;
    size_t i;

    if (s == NULL) {
        r->wrong++;
        return;
    }
    memset(long_key, 'k', AXSTM_KEY_MAX + 1);

    /* Bad arguments. */
    expect(r, axstm_usevar(NULL, "k", &v), AXSTM_EINVAL);
    expect(r, axstm_usevar(s, NULL, &v), AXSTM_EINVAL);
    expect(r, axstm_usevar(s, "", &v), AXSTM_EINVAL);
    expect(r, axstm_usevar(s, long_key, &v), AXSTM_E2BIG);
    expect(r, axstm_usevar(s, "k", NULL), AXSTM_EINVAL);
    expect(r, axstm_using(s, bad_keys, 2, &cv), AXSTM_EINVAL);
    expect(r, axstm_using(s, long_keys, 2, &cv), AXSTM_E2BIG);
    expect(r, axstm_using(s, NULL, 2, &cv), AXSTM_EINVAL);
    expect(r, axstm_value_commit(NULL), AXSTM_EINVAL);
    expect(r, axstm_value_refresh(NULL), AXSTM_EINVAL);
    expect(r, axstm_collection_commit(NULL), AXSTM_EINVAL);
    expect(r, axstm_collection_refresh(NULL), AXSTM_EINVAL);
    expect(r, axstm_store_stats(NULL, &st), AXSTM_EINVAL);
    expect(r, axstm_store_foreach(s, NULL, NULL), AXSTM_EINVAL);

    /* Values: missing, of the wrong type, too big, and a conflict. */
    expect(r, axstm_usevar(s, "k", &a), AXSTM_OK);
    expect(r, axstm_usevar(s, "k", &b), AXSTM_OK);
    if (a != NULL && b != NULL) {
        expect(r, axstm_value_get_i64(a, &x), AXSTM_ENOVALUE);
        expect(r, axstm_value_get_str(a, &str), AXSTM_ENOVALUE);
        expect(r, axstm_value_set(a, NULL, 1), AXSTM_EINVAL);
        expect(r, axstm_value_set(a, three, (size_t)AXSTM_VALUE_MAX + 1), AXSTM_E2BIG);
        expect(r, axstm_value_set_str(a, NULL), AXSTM_EINVAL);
        expect(r, axstm_value_set(a, three, sizeof three), AXSTM_OK);
        expect(r, axstm_value_get_i64(a, &x), AXSTM_ETYPE);
        expect(r, axstm_value_get_str(a, &str), AXSTM_ETYPE);
        expect(r, axstm_value_commit(a), AXSTM_OK);
        expect(r, axstm_value_commit(b), AXSTM_CONCURRENT_UPDATE);
    }

    /* Collections: borrowed values, and a conflict. */
    expect(r, axstm_using(s, pair, 2, &c), AXSTM_OK);
    expect(r, axstm_using(s, pair, 2, &d), AXSTM_OK);
    if (c != NULL && d != NULL) {
        expect(r, axstm_value_commit(axstm_collection_at(c, 0)), AXSTM_EINVAL);
        expect(r, axstm_value_refresh(axstm_collection_at(c, 0)), AXSTM_EINVAL);
        expect(r, axstm_collection_commit(c), AXSTM_OK);
        expect(r, axstm_collection_commit(d), AXSTM_CONCURRENT_UPDATE);
    }

    /* Out of memory, from the first allocation of each call on. */
    axstm__alloc_fail_after(1, 1);
    expect(r, axstm_usevar(s, "new", &v), AXSTM_ENOMEM);
    expect(r, axstm_using(s, fresh, 1, &cv), AXSTM_ENOMEM);
    if (a != NULL)
        expect(r, axstm_value_set(a, long_key, 100), AXSTM_ENOMEM);
    nomem = axstm_store_new();
    axstm__alloc_fail_after(0, 0);
    if (nomem != NULL) {
        r->wrong++;
        axstm_store_free(nomem);
    }

    for (i = 0; i < NCODES; i++)
        (void)axstm_strerror(codes[i]);
    (void)axstm_strerror(1);
    (void)axstm_strerror(INT_MIN);

    axstm_collection_free(c);
    axstm_collection_free(d);
    axstm_value_free(a);
    axstm_value_free(b);
    axstm_store_free(s);
}

START_TEST(errors_are_returned_not_printed)
{
    /* The library reports through return codes only: it never prints, not
     * even for bad arguments, conflicts or running out of memory. */
    struct error_run r = {0};
    char first[256];
    long printed = bytes_printed(every_error, &r, first, sizeof first);
    ck_assert_msg(printed == 0, "the library printed %ld bytes: \"%s\"", printed, first);
    ck_assert_msg(r.wrong == 0, "%d calls did not answer the code expected", r.wrong);
}
END_TEST

static Suite *status_suite(void)
{
    Suite *s = suite_create("status");
    TCase *tc;

    tc = tcase_create("Codes");
    tcase_add_test(tc, ok_is_zero_and_the_rest_negative);
    tcase_add_test(tc, codes_are_distinct);
    tcase_add_test(tc, every_named_code_is_in_the_map);
    suite_add_tcase(s, tc);

    tc = tcase_create("Messages");
    tcase_add_test(tc, every_code_has_a_message);
    tcase_add_test(tc, messages_are_distinct);
    tcase_add_test(tc, message_comes_from_the_map);
    tcase_add_test(tc, unknown_negative_codes);
    tcase_add_test(tc, positive_codes_are_the_callers);
    suite_add_tcase(s, tc);

    tc = tcase_create("Version");
    tcase_add_test(tc, version_numbers_fit_the_hex);
    tcase_add_test(tc, version_string_spells_the_numbers);
    tcase_add_test(tc, library_reports_the_version_compiled_against);
    tcase_add_test(tc, library_version_and_string_agree);
    suite_add_tcase(s, tc);

    tc = tcase_create("Errors");
    tcase_add_test(tc, errors_are_returned_not_printed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(status_suite());
}
