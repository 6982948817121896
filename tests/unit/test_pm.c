/* Unit tests of pm: given the bounds and one tick's figures, the decision and its reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "master/pm.h"

static struct pm_config config(enum pm_mode mode)
{
    return (struct pm_config){.mode = mode, .max_children = 8, .min_spare = 1, .max_spare = 3, .max_spawn_rate = 4,
                              .idle_timeout_ms = 1000, .target_wait_ms = 100, .pg_left = -1, .pg_per_worker = 15};
}

/* n workers serving, `busy` of them with requests in flight. */
static struct pm_figures serving(int n, int busy)
{
    return (struct pm_figures){.now_ms = 10000, .workers = n, .idle = n - busy, .busy = busy, .wait_p99_ms = -1};
}

static void expect(struct pm_decision d, enum pm_action action, enum pm_reason reason, int count)
{
    assert_int_equal(d.action, action);
    if (action == PM_NOTHING) return;
    assert_string_equal(pm_reason_names[d.reason], pm_reason_names[reason]);
    assert_int_equal(d.reason, reason);
    assert_int_equal(d.count, count);
}

static void static_never_decides(void **state)
{
    (void)state;
    struct pm_config c = config(PM_STATIC);
    struct pm_state st = {.spawn_rate = 1};
    struct pm_figures f = serving(2, 2);
    f.queued = 10;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    assert_false(pm_listens(&c, &f));
}

/* Below min spare: 1, then 2, then 4 (the spawn rate doubles, to pm_max_spawn_rate);
 * the rate falls back to 1 once enough are idle. */
static void dynamic_spawns_with_doubling_below_min_spare(void **state)
{
    (void)state;
    struct pm_config c = config(PM_DYNAMIC);
    c.min_spare = 6;
    c.max_spare = 7;
    c.max_children = 30;
    struct pm_state st = {.spawn_rate = 1};
    struct pm_figures f = serving(2, 2);
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_MIN_SPARE, 1);
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_MIN_SPARE, 2);
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_MIN_SPARE, 4);
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_MIN_SPARE, 4); /* pm_max_spawn_rate */
    f = serving(8, 2);
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    f = serving(8, 8);
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_MIN_SPARE, 1);
}

/* Starting workers count as idle: no second spawn while the first boots. */
static void dynamic_counts_starting_workers_as_idle(void **state)
{
    (void)state;
    struct pm_config c = config(PM_DYNAMIC);
    struct pm_state st = {.spawn_rate = 1};
    struct pm_figures f = serving(3, 2);
    f.idle = 0;
    f.starting = 1;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
}

/* Never above pm_max_children: one hold per episode, then nothing until it ends. */
static void dynamic_holds_at_max_children_once(void **state)
{
    (void)state;
    struct pm_config c = config(PM_DYNAMIC);
    struct pm_state st = {.spawn_rate = 1};
    struct pm_figures f = serving(8, 8);
    expect(pm_decide(&c, &f, &st), PM_HOLD, PM_MAX_CHILDREN, 0);
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    f = serving(8, 6);
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    f = serving(8, 8);
    expect(pm_decide(&c, &f, &st), PM_HOLD, PM_MAX_CHILDREN, 0);
}

/* Above max spare for the idle timeout (however short each worker's idle spell:
 * light load goes round them), one a tick; a busy spell in between starts it over. */
static void dynamic_retires_above_max_spare_after_the_idle_timeout(void **state)
{
    (void)state;
    struct pm_config c = config(PM_DYNAMIC);
    struct pm_state st = {.spawn_rate = 1};
    struct pm_figures f = serving(6, 1);
    f.longest_idle_ms = 50;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    f.now_ms += 999;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    f.busy = 4; /* 2 idle: not above max spare */
    f.idle = 2;
    f.now_ms += 1000;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    f.busy = 1;
    f.idle = 5;
    f.now_ms += 1100;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    f.now_ms += 1000;
    expect(pm_decide(&c, &f, &st), PM_RETIRE, PM_MAX_SPARE, 1);
    f.workers = 5;
    f.idle = 4;
    f.now_ms += 100;
    expect(pm_decide(&c, &f, &st), PM_RETIRE, PM_MAX_SPARE, 1);
    f.workers = 4;
    f.idle = 3;
    f.now_ms += 100;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
}

static void ondemand_spawns_for_a_waiting_connection_and_retires_idle_ones(void **state)
{
    (void)state;
    struct pm_config c = config(PM_ONDEMAND);
    struct pm_state st = {.spawn_rate = 1};
    struct pm_figures f = serving(0, 0);
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    assert_true(pm_listens(&c, &f));
    f.queued = 1;
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_QUEUED, 1);
    f = serving(1, 1);
    f.queued = 3;
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_QUEUED, 2); /* doubled */
    f = serving(2, 1);
    f.queued = 3; /* an idle worker takes it */
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    assert_false(pm_listens(&c, &f));
    f.longest_idle_ms = 1000;
    expect(pm_decide(&c, &f, &st), PM_RETIRE, PM_IDLE_TIMEOUT, 1);
    f = serving(1, 0); /* down to none */
    f.longest_idle_ms = 2000;
    expect(pm_decide(&c, &f, &st), PM_RETIRE, PM_IDLE_TIMEOUT, 1);
    f = serving(8, 8);
    assert_false(pm_listens(&c, &f)); /* no room: the master need not wake */
}

/* A rising busy ratio grows the workers while the queue wait is still far under its target. */
static void adaptive_grows_before_the_wait_reaches_the_target(void **state)
{
    (void)state;
    struct pm_config c = config(PM_ADAPTIVE);
    struct pm_state st = {.spawn_rate = 1};
    struct pm_figures f = serving(2, 0);
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    f = serving(2, 2);
    f.wait_p99_ms = 1;
    struct pm_decision d = pm_decide(&c, &f, &st);
    expect(d, PM_SPAWN, PM_BUSY, 1);
    /* While they start, no more. */
    f = serving(3, 2);
    f.idle = 0;
    f.starting = 1;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    /* The wait at half the target: grow, at the (doubled) spawn rate. */
    f = serving(3, 3);
    f.wait_p99_ms = 50;
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_QUEUE_WAIT, 2);
    /* Waiting connections and no idle worker. */
    f = serving(5, 5);
    f.queued = 1;
    f.wait_p99_ms = 10;
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_QUEUED, 1);
}

/* Busy at 1.0 but not rising, no queue, low wait: enough workers, none added. */
static void adaptive_holds_steady_at_full_use_without_waits(void **state)
{
    (void)state;
    struct pm_config c = config(PM_ADAPTIVE);
    struct pm_state st = {.spawn_rate = 1, .prev_busy_ratio = 1.0};
    struct pm_figures f = serving(4, 4);
    f.wait_p99_ms = 2;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
}

/* Shrinks only after the wait was low for the idle timeout, down to min spare;
 * a wait between a quarter and half the target neither grows nor shrinks. */
static void adaptive_shrinks_after_a_low_wait_lasts(void **state)
{
    (void)state;
    struct pm_config c = config(PM_ADAPTIVE);
    c.min_spare = 2;
    struct pm_state st = {.spawn_rate = 1};
    struct pm_figures f = serving(5, 1);
    f.longest_idle_ms = 5000;
    f.wait_p99_ms = 30; /* between 25 and 50: the hysteresis band */
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    f.wait_p99_ms = 5;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0); /* low since now */
    f.now_ms += 999;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0);
    f.now_ms += 1;
    expect(pm_decide(&c, &f, &st), PM_RETIRE, PM_IDLE_TIMEOUT, 1);
    f = serving(2, 0);
    f.now_ms += 5000;
    f.longest_idle_ms = 5000;
    expect(pm_decide(&c, &f, &st), PM_NOTHING, 0, 0); /* min spare */
    f = serving(1, 0);
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_MIN_SPARE, 1);
}

/* The RSS budget and PostgreSQL's connections cap growth, each named as the reason. */
static void adaptive_is_capped_by_rss_and_postgresql(void **state)
{
    (void)state;
    struct pm_config c = config(PM_ADAPTIVE);
    c.rss_budget_kb = 100 * 1024;
    struct pm_state st = {.spawn_rate = 1};
    struct pm_figures f = serving(4, 4);
    f.wait_p99_ms = 80;
    f.rss_kb_total = 4 * 20 * 1024;
    f.rss_kb_max = 21 * 1024; /* 80 + 21 > 100 */
    expect(pm_decide(&c, &f, &st), PM_HOLD, PM_RSS_BUDGET, 0);
    f.rss_kb_max = 20 * 1024;
    expect(pm_decide(&c, &f, &st), PM_SPAWN, PM_QUEUE_WAIT, 1);
    c.rss_budget_kb = 0;
    c.pg_left = 4 * 15 + 14; /* not enough for a fifth pool */
    expect(pm_decide(&c, &f, &st), PM_HOLD, PM_PG_CONNECTIONS, 0);
    assert_false(pm_listens(&c, &f));
}

static void the_p99_is_interpolated_in_its_bucket(void **state)
{
    (void)state;
    uint64_t h[PM_WAIT_BUCKETS] = {0};
    assert_true(pm_wait_p99_ms(h) < 0);
    h[0] = 100; /* all under 1 ms */
    assert_true(pm_wait_p99_ms(h) <= 1.0);
    h[0] = 0;
    h[8] = 100; /* (0.25 s, 0.5 s] */
    double p = pm_wait_p99_ms(h);
    assert_true(p > 250 && p <= 500);
    h[8] = 0;
    h[SCOREBOARD_BUCKETS] = 1; /* above the largest bound */
    assert_true(pm_wait_p99_ms(h) >= scoreboard_wait_le[SCOREBOARD_BUCKETS - 1] * 1e3);
}

/* The window holds the last PM_WINDOW ticks: an old burst of waits leaves it. */
static void the_window_forgets_old_waits(void **state)
{
    (void)state;
    struct pm_window w;
    memset(&w, 0, sizeof w);
    uint64_t cum[PM_WAIT_BUCKETS] = {0};
    assert_true(pm_window_p99_ms(&w, cum) < 0);
    cum[9] = 50; /* (0.5 s, 1 s] */
    assert_true(pm_window_p99_ms(&w, cum) > 500);
    for (int i = 0; i < PM_WINDOW - 1; i++) assert_true(pm_window_p99_ms(&w, cum) > 500);
    assert_true(pm_window_p99_ms(&w, cum) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(static_never_decides),
        cmocka_unit_test(dynamic_spawns_with_doubling_below_min_spare),
        cmocka_unit_test(dynamic_counts_starting_workers_as_idle),
        cmocka_unit_test(dynamic_holds_at_max_children_once),
        cmocka_unit_test(dynamic_retires_above_max_spare_after_the_idle_timeout),
        cmocka_unit_test(ondemand_spawns_for_a_waiting_connection_and_retires_idle_ones),
        cmocka_unit_test(adaptive_grows_before_the_wait_reaches_the_target),
        cmocka_unit_test(adaptive_holds_steady_at_full_use_without_waits),
        cmocka_unit_test(adaptive_shrinks_after_a_low_wait_lasts),
        cmocka_unit_test(adaptive_is_capped_by_rss_and_postgresql),
        cmocka_unit_test(the_p99_is_interpolated_in_its_bucket),
        cmocka_unit_test(the_window_forgets_old_waits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
