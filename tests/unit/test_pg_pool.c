/* Unit tests of pg_pool's rule for closing idle overflow connections, shared by both pools. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backends/pg_pool.h"

static void overflow_lingers_then_expires(void **state)
{
    (void)state;
    double idle_since = 10000, linger = PG_OVERFLOW_LINGER_MS;
    /* Above pool_size: kept while younger than the linger time, due after it. */
    assert_false(pg_overflow_expired(3, 1, idle_since, idle_since));
    assert_false(pg_overflow_expired(3, 1, idle_since, idle_since + linger - 1));
    assert_true(pg_overflow_expired(3, 1, idle_since, idle_since + linger));
    /* Within pool_size a connection is kept however long it idles. */
    assert_false(pg_overflow_expired(1, 1, idle_since, idle_since + 100 * linger));
    assert_false(pg_overflow_expired(2, 5, idle_since, idle_since + 100 * linger));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(overflow_lingers_then_expires),
    };
    return cmocka_run_group_tests_name("pg_pool", tests, NULL, NULL);
}
