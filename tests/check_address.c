/* SPDX-License-Identifier: MIT */
/*
 * check_address.c -- store addresses (lib/address.h) and axstm_store_open:
 * every part of a redis address is read as meant, every malformed address
 * is AXSTM_EINVAL, and an allocation failure anywhere is AXSTM_ENOMEM with
 * nothing leaked.
 */
#include <string.h>

#include "testutil.h"

#include "address.h"
#include "alloc.h"

static struct axstm__address parse_ok(const char *uri)
{
    struct axstm__address a;
    int rc = axstm__address_parse(uri, &a);
    ck_assert_msg(rc == AXSTM_OK, "\"%s\": %s", uri, axstm_strerror(rc));
    return a;
}

static void assert_str(const char *got, const char *want, const char *what)
{
    if (want == NULL)
        ck_assert_msg(got == NULL, "%s is \"%s\", not absent", what, got);
    else
        ck_assert_msg(got != NULL && strcmp(got, want) == 0, "%s is \"%s\", not \"%s\"", what,
                      got != NULL ? got : "(absent)", want);
}

/* ------------------------------------------------------------------ */
/* What a good address means                                          */
/* ------------------------------------------------------------------ */

START_TEST(mem_is_an_in_process_store)
{
    struct axstm__address a = parse_ok("mem:");
    ck_assert_int_eq(a.kind, AXSTM__ADDRESS_MEM);
    ck_assert_ptr_null(a.host);
    ck_assert_ptr_null(a.prefix);
    axstm__address_free(&a);
    a = parse_ok("MEM:");
    ck_assert_int_eq(a.kind, AXSTM__ADDRESS_MEM);
    axstm__address_free(&a);
}
END_TEST

START_TEST(redis_host_alone_takes_every_default)
{
    struct axstm__address a = parse_ok("redis://localhost");
    ck_assert_int_eq(a.kind, AXSTM__ADDRESS_REDIS_TCP);
    assert_str(a.host, "localhost", "host");
    ck_assert_int_eq(a.port, 6379);
    ck_assert_int_eq(a.db, 0);
    assert_str(a.prefix, "axstm:", "prefix");
    ck_assert_int_eq(a.timeout_ms, 1000);
    ck_assert(!a.first_read_cached);
    assert_str(a.user, NULL, "user");
    assert_str(a.password, NULL, "password");
    assert_str(a.path, NULL, "path");
    axstm__address_free(&a);
}
END_TEST

START_TEST(redis_every_part_given)
{
    struct axstm__address a = parse_ok(
        "redis://alice:s3cret@127.0.0.1:7000/3?prefix=bank%3A&timeout_ms=250&first_read=cache");
    assert_str(a.user, "alice", "user");
    assert_str(a.password, "s3cret", "password");
    assert_str(a.host, "127.0.0.1", "host");
    ck_assert_int_eq(a.port, 7000);
    ck_assert_int_eq(a.db, 3);
    assert_str(a.prefix, "bank:", "prefix");
    ck_assert_int_eq(a.timeout_ms, 250);
    ck_assert(a.first_read_cached);
    axstm__address_free(&a);
    a = parse_ok("redis+unix:///s?first_read=server");
    ck_assert(!a.first_read_cached);
    axstm__address_free(&a);
}
END_TEST

START_TEST(password_alone_and_escapes_in_it)
{
    /* Redis's usual form: no user, a password holding escaped delimiters. */
    struct axstm__address a = parse_ok("redis://:p%40ss%3Aw%2Fd%26@localhost/");
    assert_str(a.user, NULL, "user");
    assert_str(a.password, "p@ss:w/d&", "password");
    ck_assert_int_eq(a.db, 0);
    axstm__address_free(&a);
    /* An unescaped ':' after the first belongs to the password. */
    a = parse_ok("redis://bob:a:b@localhost");
    assert_str(a.user, "bob", "user");
    assert_str(a.password, "a:b", "password");
    axstm__address_free(&a);
}
END_TEST

START_TEST(ipv6_literal_in_brackets)
{
    struct axstm__address a = parse_ok("redis://[::1]:6380");
    assert_str(a.host, "::1", "host");
    ck_assert_int_eq(a.port, 6380);
    axstm__address_free(&a);
    a = parse_ok("redis://[::1]");
    ck_assert_int_eq(a.port, 6379);
    axstm__address_free(&a);
}
END_TEST

START_TEST(unix_socket_with_options)
{
    struct axstm__address a =
        parse_ok("redis+unix:///tmp/a%20dir/redis.sock?db=2&prefix={bank}:&timeout_ms=50");
    ck_assert_int_eq(a.kind, AXSTM__ADDRESS_REDIS_UNIX);
    assert_str(a.path, "/tmp/a dir/redis.sock", "path");
    assert_str(a.host, NULL, "host");
    ck_assert_int_eq(a.db, 2);
    assert_str(a.prefix, "{bank}:", "prefix");
    ck_assert_int_eq(a.timeout_ms, 50);
    axstm__address_free(&a);
    a = parse_ok("redis+unix:///s?password=open%26sesame&user=ali");
    assert_str(a.user, "ali", "user");
    assert_str(a.password, "open&sesame", "password");
    axstm__address_free(&a);
}
END_TEST

START_TEST(scheme_is_read_without_regard_to_case)
{
    struct axstm__address a = parse_ok("Redis+Unix:///run/redis.sock");
    ck_assert_int_eq(a.kind, AXSTM__ADDRESS_REDIS_UNIX);
    axstm__address_free(&a);
    a = parse_ok("REDIS://h");
    ck_assert_int_eq(a.kind, AXSTM__ADDRESS_REDIS_TCP);
    axstm__address_free(&a);
}
END_TEST

START_TEST(limits_of_numbers_are_taken)
{
    struct axstm__address a = parse_ok("redis://h:65535/2147483647?timeout_ms=2147483647");
    ck_assert_int_eq(a.port, 65535);
    ck_assert_int_eq(a.db, 2147483647);
    ck_assert_int_eq(a.timeout_ms, 2147483647);
    axstm__address_free(&a);
    a = parse_ok("redis://h:1?timeout_ms=1");
    ck_assert_int_eq(a.port, 1);
    ck_assert_int_eq(a.timeout_ms, 1);
    axstm__address_free(&a);
}
END_TEST

/* ------------------------------------------------------------------ */
/* What is refused                                                    */
/* ------------------------------------------------------------------ */

static const char *const malformed[] = {
    "",
    "mem",
    "mem:x",
    "mem://",
    "memory:",
    "http://localhost",
    "redis:",
    "redis:/localhost",
    "redis://",
    "redis://:6379",
    "redis://user@",
    "redis://a@b@localhost",
    "redis://local host",
    "redis://localhost:",
    "redis://localhost:0",
    "redis://localhost:65536",
    "redis://localhost:-1",
    "redis://localhost:+1",
    "redis://localhost:6379x",
    "redis://localhost:99999999999",
    "redis://[::1",
    "redis://[]",
    "redis://[::1]x",
    "redis://[::1]:",
    "redis://local%host",
    "redis://localhost/x",
    "redis://localhost/-1",
    "redis://localhost/1/2",
    "redis://localhost/2147483648",
    "redis://localhost?",
    "redis://localhost?prefix",
    "redis://localhost?prefix=",
    "redis://localhost?prefix=a&",
    "redis://localhost?&prefix=a",
    "redis://localhost?prefix=a&prefix=b",
    "redis://localhost?timeout_ms=0",
    "redis://localhost?timeout_ms=1&timeout_ms=2",
    "redis://localhost?timeout_ms=2147483648",
    "redis://localhost?timeout_ms=1s",
    "redis://localhost?db=1",
    "redis://localhost?unknown=1",
    "redis://localhost?first_read=",
    "redis://localhost?first_read=Cache",
    "redis://localhost?first_read=cached",
    "redis://localhost?first_read=cache&first_read=cache",
    "redis://localhost?first_read=server&first_read=cache",
    "redis://localhost?Prefix=a",
    "redis://localhost#fragment",
    "redis://localhost?prefix=a%",
    "redis://localhost?prefix=a%4",
    "redis://localhost?prefix=a%zz",
    "redis://localhost?prefix=a%00b",
    "redis://:%@localhost",
    "redis+unix://",
    "redis+unix:///",
    "redis+unix://relative/path",
    "redis+unix://host/path",
    "redis+unix:///p?db=",
    "redis+unix:///p?db=x",
    "redis+unix:///p?db=1&db=2",
    "redis+unix:///with space",
    "redis+unix:///p?password=",
    "redis+unix:///p?password=a&password=b",
    "redis+unix:///p?user=a&user=b",
    "redis://h?password=a",
    "redis://h?user=a",
    "redis+unix:///tab\there",
};

START_TEST(malformed_address_is_einval)
{
    const char *uri = malformed[_i];
    struct axstm__address a;
    int rc = axstm__address_parse(uri, &a);
    ck_assert_msg(rc == AXSTM_EINVAL, "\"%s\": %s, not EINVAL", uri, axstm_strerror(rc));
    /* Nothing is left to free, and freeing is still safe. */
    ck_assert_ptr_null(a.host);
    ck_assert_ptr_null(a.path);
    ck_assert_ptr_null(a.user);
    ck_assert_ptr_null(a.password);
    ck_assert_ptr_null(a.prefix);
    axstm__address_free(&a);
}
END_TEST

START_TEST(null_address_is_einval)
{
    struct axstm__address a;
    ck_assert_int_eq(axstm__address_parse(NULL, &a), AXSTM_EINVAL);
    axstm__address_free(&a);
}
END_TEST

/* Every allocation of a parse, failed in turn. */
START_TEST(allocation_failure_is_enomem_and_leaks_nothing)
{
    const char *uri = "redis://u:p@h:1/2?prefix=x";
    unsigned long needed, n;
    struct axstm__address a;
    unsigned long before = axstm__alloc_count();
    a = parse_ok(uri);
    needed = axstm__alloc_count() - before;
    axstm__address_free(&a);
    ck_assert_uint_eq(needed, 4); /* user, password, host, prefix */
    for (n = 1; n <= needed; n++) {
        axstm__alloc_fail_after(n, 0);
        int rc = axstm__address_parse(uri, &a);
        axstm__alloc_fail_after(0, 0);
        ck_assert_msg(rc == AXSTM_ENOMEM, "allocation %lu failed: %s", n, axstm_strerror(rc));
        ck_assert_ptr_null(a.host);
        ck_assert_ptr_null(a.prefix);
        axstm__address_free(&a);
    }
}
END_TEST

static Suite *address_suite(void)
{
    Suite *s = suite_create("address");
    TCase *tc = tcase_create("Meaning");
    tcase_add_test(tc, mem_is_an_in_process_store);
    tcase_add_test(tc, redis_host_alone_takes_every_default);
    tcase_add_test(tc, redis_every_part_given);
    tcase_add_test(tc, password_alone_and_escapes_in_it);
    tcase_add_test(tc, ipv6_literal_in_brackets);
    tcase_add_test(tc, unix_socket_with_options);
    tcase_add_test(tc, scheme_is_read_without_regard_to_case);
    tcase_add_test(tc, limits_of_numbers_are_taken);
    suite_add_tcase(s, tc);

    tc = tcase_create("Refusals");
    tcase_add_loop_test(tc, malformed_address_is_einval, 0,
                        (int)(sizeof malformed / sizeof malformed[0]));
    tcase_add_test(tc, null_address_is_einval);
    tcase_add_test(tc, allocation_failure_is_enomem_and_leaks_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(address_suite());
}
