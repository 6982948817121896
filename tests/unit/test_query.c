/* Unit tests of query: parameter lookup, percent-decoding, strict integers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/query.h"

static void first_occurrence_wins(void **state)
{
    (void)state;
    char buf[16];
    assert_int_equal(query_get("n=10&n=20", "n", buf, sizeof buf), QUERY_FOUND);
    assert_string_equal(buf, "10");
    assert_int_equal(query_get("a=1&n=3", "n", buf, sizeof buf), QUERY_FOUND);
    assert_string_equal(buf, "3");
}

static void absent_and_prefix_names_are_not_matches(void **state)
{
    (void)state;
    char buf[16];
    assert_int_equal(query_get("", "n", buf, sizeof buf), QUERY_ABSENT);
    assert_int_equal(query_get("nn=1&xn=2", "n", buf, sizeof buf), QUERY_ABSENT);
    assert_int_equal(query_get(NULL, "n", buf, sizeof buf), QUERY_ABSENT);
}

static void values_are_percent_decoded(void **state)
{
    (void)state;
    char buf[16];
    assert_int_equal(query_get("n=%31%30", "n", buf, sizeof buf), QUERY_FOUND);
    assert_string_equal(buf, "10");
    assert_int_equal(query_get("%6e=7", "n", buf, sizeof buf), QUERY_FOUND);
    assert_string_equal(buf, "7");
    assert_int_equal(query_get("m=a+b", "m", buf, sizeof buf), QUERY_FOUND);
    assert_string_equal(buf, "a b");
    assert_int_equal(query_get("m=%zz%4", "m", buf, sizeof buf), QUERY_FOUND);
    assert_string_equal(buf, "%zz%4");
}

static void empty_and_bare_names_are_empty_values(void **state)
{
    (void)state;
    char buf[16];
    assert_int_equal(query_get("n=", "n", buf, sizeof buf), QUERY_FOUND);
    assert_string_equal(buf, "");
    assert_int_equal(query_get("n", "n", buf, sizeof buf), QUERY_FOUND);
    assert_string_equal(buf, "");
}

static void long_or_nul_values_are_invalid(void **state)
{
    (void)state;
    char buf[4];
    assert_int_equal(query_get("n=12345", "n", buf, sizeof buf), QUERY_INVALID);
    assert_int_equal(query_get("n=1%002", "n", buf, sizeof buf), QUERY_INVALID);
}

static void integers_are_strict(void **state)
{
    (void)state;
    long v;
    assert_int_equal(query_parse_long("42", &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(query_parse_long("-7", &v), 0);
    assert_int_equal(v, -7);
    assert_int_equal(query_parse_long("+7", &v), 0);
    const char *bad[] = {"", "-", "1.5", "0x10", " 1", "1 ", "abc", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(query_parse_long(bad[i], &v), -1);
}

static void get_long_applies_default_and_range(void **state)
{
    (void)state;
    long v;
    assert_int_equal(query_get_long("", "n", 5, 2, 10, &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(query_get_long("n=10", "n", 5, 2, 10, &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(query_get_long("n=11", "n", 5, 2, 10, &v), -1);
    assert_int_equal(query_get_long("n=1", "n", 5, 2, 10, &v), -1);
    assert_int_equal(query_get_long("n=", "n", 5, 2, 10, &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(first_occurrence_wins),
        cmocka_unit_test(absent_and_prefix_names_are_not_matches),
        cmocka_unit_test(values_are_percent_decoded),
        cmocka_unit_test(empty_and_bare_names_are_empty_values),
        cmocka_unit_test(long_or_nul_values_are_invalid),
        cmocka_unit_test(integers_are_strict),
        cmocka_unit_test(get_long_applies_default_and_range),
    };
    return cmocka_run_group_tests_name("query", tests, NULL, NULL);
}
