/* Unit tests of pg_policy: the PostgreSQL pools' rules, which both drivers follow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "backends/pg_policy.h"

/* pool_size 1, 4 overflow, pool_timeout 5 s, pool_recycle 60 s. */
static struct pg_policy policy(int size)
{
    return (struct pg_policy){.size = size, .max = size + 4, .timeout_ms = 5000, .recycle_ms = 60000};
}

static void overflow_lingers_then_expires(void **state)
{
    (void)state;
    double idle_since = 10000, linger = PG_OVERFLOW_LINGER_MS;
    struct pg_policy one = policy(1), five = policy(5);
    /* Above pool_size: kept while younger than the linger time, due after it. */
    assert_false(pg_policy_overflow_expired(&one, 3, idle_since, idle_since));
    assert_false(pg_policy_overflow_expired(&one, 3, idle_since, idle_since + linger - 1));
    assert_true(pg_policy_overflow_expired(&one, 3, idle_since, idle_since + linger));
    /* Within pool_size a connection is kept however long it idles. */
    assert_false(pg_policy_overflow_expired(&one, 1, idle_since, idle_since + 100 * linger));
    assert_false(pg_policy_overflow_expired(&five, 2, idle_since, idle_since + 100 * linger));
}

static void sizes_come_from_the_settings(void **state)
{
    (void)state;
    struct settings cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.pool_size = 3;
    cfg.pool_max_overflow = 2;
    cfg.pool_timeout = 1.5;
    cfg.pool_recycle = 0;
    struct pg_policy p;
    pg_policy_init(&p, &cfg);
    assert_int_equal(p.size, 3);
    assert_int_equal(p.max, 5);
    assert_true(p.timeout_ms == 1500);
    /* The pool grows up to pool_size + pool_max_overflow, no further. */
    assert_true(pg_policy_may_open(&p, 4));
    assert_false(pg_policy_may_open(&p, 5));
    /* pool_recycle 0: never recycled. */
    assert_false(pg_policy_recycle_due(&p, 0, 1e12));
}

static void recycled_past_pool_recycle(void **state)
{
    (void)state;
    struct pg_policy p = policy(1);
    assert_false(pg_policy_recycle_due(&p, 1000, 1000 + 60000));
    assert_true(pg_policy_recycle_due(&p, 1000, 1000 + 60001));
}

static void a_wait_ends_at_pool_timeout_or_the_deadline(void **state)
{
    (void)state;
    struct pg_policy p = policy(1);
    assert_true(pg_policy_wait_until(&p, 100, 100000) == 5100);
    assert_true(pg_policy_wait_until(&p, 100, 2000) == 2000);
    struct pg_pool_stats st = {0};
    /* Before the deadline: pool_timeout, counted. */
    assert_int_equal(pg_policy_wait_failed(2000, 1999, &st), BACKEND_POOL_TIMEOUT);
    assert_int_equal(st.timeouts, 1);
    /* At or past the deadline: the request's own timeout, not the pool's. */
    assert_int_equal(pg_policy_wait_failed(2000, 2000, &st), BACKEND_DEADLINE);
    assert_int_equal(st.timeouts, 1);
}

static void checkin_counts_and_keeps_only_sound_connections(void **state)
{
    (void)state;
    struct pg_pool_stats st = {0};
    assert_true(pg_policy_checkin(&st, BACKEND_OK));
    assert_true(pg_policy_checkin(&st, BACKEND_FAILED));
    assert_false(pg_policy_checkin(&st, BACKEND_DOWN));
    assert_false(pg_policy_checkin(&st, BACKEND_DEADLINE));
    assert_int_equal(st.checkouts, 4);
}

static void retry_once_on_a_kept_connection(void **state)
{
    (void)state;
    assert_true(pg_policy_retry(1, 0));
    assert_false(pg_policy_retry(1, 1));
    assert_false(pg_policy_retry(0, 0)); /* a fresh connection that broke: the server is down */
}

static void judging_a_result(void **state)
{
    (void)state;
    assert_int_equal(pg_policy_judge(1, NULL, 1), BACKEND_OK);
    assert_int_equal(pg_policy_judge(0, "42601", 1), BACKEND_FAILED);
    assert_int_equal(pg_policy_judge(0, NULL, 1), BACKEND_FAILED);
    assert_int_equal(pg_policy_judge(0, "42601", 0), BACKEND_DOWN);
    assert_int_equal(pg_policy_judge(0, "57014", 1), BACKEND_DEADLINE);
    assert_int_equal(pg_policy_judge(0, "57P01", 1), BACKEND_DOWN);
    assert_int_equal(pg_policy_judge(0, "08006", 1), BACKEND_DOWN);
}

static void messages_keep_their_first_line(void **state)
{
    (void)state;
    char err[16];
    pg_policy_first_line("FATAL: gone\nDETAIL: x\n", err, sizeof err);
    assert_string_equal(err, "FATAL: gone");
    pg_policy_first_line("a message longer than the buffer", err, sizeof err);
    assert_string_equal(err, "a message longe");
    pg_policy_first_line(NULL, err, sizeof err);
    assert_string_equal(err, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(overflow_lingers_then_expires),
        cmocka_unit_test(sizes_come_from_the_settings),
        cmocka_unit_test(recycled_past_pool_recycle),
        cmocka_unit_test(a_wait_ends_at_pool_timeout_or_the_deadline),
        cmocka_unit_test(checkin_counts_and_keeps_only_sound_connections),
        cmocka_unit_test(retry_once_on_a_kept_connection),
        cmocka_unit_test(judging_a_result),
        cmocka_unit_test(messages_keep_their_first_line),
    };
    return cmocka_run_group_tests_name("pg_policy", tests, NULL, NULL);
}
