/* Unit tests of log: request data escaped for one log line and a quoted field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "base/log.h"

static void escape_control_bytes_quotes_and_backslashes(void **state)
{
    (void)state;
    char out[256];
    assert_string_equal(log_escape("/a\r\nb", out, sizeof out), "/a\\x0d\\x0ab");
    assert_string_equal(log_escape("say \"hi\"\\", out, sizeof out), "say \\\"hi\\\"\\\\");
    assert_string_equal(log_escape("\x01\x1f\x7f", out, sizeof out), "\\x01\\x1f\\x7f");
    /* UTF-8 and spaces pass as they are. */
    assert_string_equal(log_escape("/caf\xc3\xa9 x", out, sizeof out), "/caf\xc3\xa9 x");
    assert_string_equal(log_escape(NULL, out, sizeof out), "");
}

static void escape_cuts_between_sequences(void **state)
{
    (void)state;
    char out[6];
    /* "ab" fits, "\x0d" (4 bytes) would not: cut before it, never inside. */
    assert_string_equal(log_escape("ab\rcd", out, sizeof out), "ab");
    assert_string_equal(log_escape("abcdefgh", out, sizeof out), "abcde");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escape_control_bytes_quotes_and_backslashes),
        cmocka_unit_test(escape_cuts_between_sequences),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
