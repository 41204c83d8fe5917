/*
 * check_status.c -- the list of codes and axstm_strerror.
 */
#include <limits.h>

#include "testutil.h"

#define CODE_VALUE_(name, value, msg) AXSTM_##name,
static const int codes[] = { AXSTM_CODE_MAP(CODE_VALUE_) };
#undef CODE_VALUE_

#define CODE_NAME_(name, value, msg) #name,
static const char *const code_names[] = { AXSTM_CODE_MAP(CODE_NAME_) };
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
        ck_assert_msg(codes[i] < 0, "AXSTM_%s is %d, not negative",
                      code_names[i], codes[i]);
}
END_TEST

START_TEST(codes_are_distinct)
{
    size_t i, j;
    for (i = 0; i < NCODES; i++)
        for (j = i + 1; j < NCODES; j++)
            ck_assert_msg(codes[i] != codes[j], "AXSTM_%s == AXSTM_%s",
                          code_names[i], code_names[j]);
}
END_TEST

START_TEST(every_named_code_is_in_the_map)
{
    /* The codes API.md names must all come from the one list. */
    static const int named[] = {
        AXSTM_OK,     AXSTM_CONCURRENT_UPDATE, AXSTM_BUSY_RETRY,
        AXSTM_RETRY,  AXSTM_ETIMEDOUT,         AXSTM_EINVAL,
        AXSTM_E2BIG,  AXSTM_ENOMEM,            AXSTM_ENOVALUE,
        AXSTM_ETYPE,
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
        ck_assert_msg(m[0] != '\0', "strerror(AXSTM_%s) is empty",
                      code_names[i]);
    }
}
END_TEST

START_TEST(messages_are_distinct)
{
    size_t i, j;
    for (i = 0; i < NCODES; i++)
        for (j = i + 1; j < NCODES; j++)
            ck_assert_msg(strcmp(axstm_strerror(codes[i]),
                                 axstm_strerror(codes[j])) != 0,
                          "AXSTM_%s and AXSTM_%s share a message",
                          code_names[i], code_names[j]);
}
END_TEST

START_TEST(message_comes_from_the_map)
{
#define CODE_CHECK_(name, value, msg)                                          \
    ck_assert_str_eq(axstm_strerror(AXSTM_##name), msg);
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
        ck_assert_msg(strcmp(m, axstm_strerror(codes[i])) != 0,
                      "strerror(%d) reads as AXSTM_%s", code, code_names[i]);
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
    return s;
}

int main(void)
{
    return tu_run(status_suite());
}
