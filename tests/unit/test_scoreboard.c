/* Unit tests of scoreboard: memory held by all workers, counted against one cap;
 * which event worker takes a new connection; busy time and queue waits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/scoreboard.h"

static void holds_count_against_one_cap_and_come_back_when_a_worker_goes(void **state)
{
    (void)state;
    struct scoreboard_slot *slots = scoreboard_create(4);
    assert_non_null(slots);
    assert_int_equal(scoreboard_hold(&slots[0], 3, 8), 0);
    assert_int_equal(scoreboard_hold(&slots[1], 3, 8), 0);
    assert_int_equal(scoreboard_hold(&slots[2], 3, 8), -1); /* 9 > 8, whichever worker asks */
    assert_int_equal(scoreboard_held_mb(), 6);
    assert_int_equal(scoreboard_hold(&slots[2], 2, 8), 0); /* exactly the cap */
    assert_int_equal(scoreboard_held_mb(), 8);
    assert_int_equal(scoreboard_hold(&slots[2], -2, 8), 0); /* given back (a failed map) */
    assert_int_equal(atomic_load(&slots[2].held_mb), 0);
    /* The worker of slot 0 dies: its 3 MiB are free again. */
    scoreboard_release_held(&slots[0]);
    assert_int_equal(scoreboard_held_mb(), 3);
    assert_int_equal(atomic_load(&slots[0].held_mb), 0);
    assert_int_equal(scoreboard_hold(&slots[3], 5, 8), 0);
    assert_int_equal(scoreboard_held_mb(), 8);
    scoreboard_release_held(&slots[1]);
    scoreboard_release_held(&slots[3]);
    assert_int_equal(scoreboard_held_mb(), 0);
    scoreboard_destroy(slots, 4);
}

/* Slot i serves with `connections[i]`, idle when `busy[i]` is 0, accepting when
 * `accepting[i]` is 1; slot `me` is this process. */
static struct scoreboard_slot *serving(int n, const int *connections, const int *busy, const int *accepting, int me)
{
    struct scoreboard_slot *slots = scoreboard_create(n);
    assert_non_null(slots);
    scoreboard_set_used(n);
    for (int i = 0; i < n; i++) {
        atomic_store(&slots[i].pid, 100 + i);
        atomic_store(&slots[i].state, busy[i] ? SLOT_BUSY : SLOT_IDLE);
        atomic_store(&slots[i].active, busy[i]);
        atomic_store(&slots[i].connections, connections[i]);
        atomic_store(&slots[i].accepting, accepting[i]);
    }
    scoreboard_self = &slots[me];
    return slots;
}

static int yields(int me, const int *connections, const int *busy, const int *accepting)
{
    struct scoreboard_slot *slots = serving(4, connections, busy, accepting, me);
    int yield = scoreboard_should_yield(connections[me], 2);
    scoreboard_self = NULL;
    scoreboard_destroy(slots, 4);
    return yield;
}

static void the_first_idle_worker_takes_a_new_connection(void **state)
{
    (void)state;
    const int all[4] = {1, 1, 1, 1}, none_busy[4] = {0}, conns[4] = {40, 20, 0, 0};
    /* Light load stays where it is: the first idle worker takes it, however many it holds. */
    assert_false(yields(0, conns, none_busy, all));
    assert_true(yields(1, conns, none_busy, all));
    assert_true(yields(3, conns, none_busy, all));
    /* A worker with requests in flight leaves it to an idle one, later in slot order too. */
    const int first_busy[4] = {1, 0, 0, 0};
    assert_true(yields(0, conns, first_busy, all));
    assert_false(yields(1, conns, first_busy, all));
    assert_true(yields(2, conns, first_busy, all));
    /* An idle worker that does not accept (full, draining, stopping) is passed over. */
    const int first_closed[4] = {0, 1, 1, 1};
    assert_false(yields(1, conns, none_busy, first_closed));
}

static void when_all_are_busy_connections_spread_by_count(void **state)
{
    (void)state;
    const int all[4] = {1, 1, 1, 1}, all_busy[4] = {1, 1, 1, 1}, conns[4] = {9, 7, 6, 3};
    assert_true(yields(0, conns, all_busy, all)); /* 9 > 3 + 2 */
    assert_true(yields(1, conns, all_busy, all)); /* 7 > 3 + 2 */
    assert_false(yields(3, conns, all_busy, all)); /* the least loaded */
    /* A sibling that does not accept is not the least loaded. */
    const int last_closed[4] = {1, 1, 1, 0};
    assert_true(yields(0, conns, all_busy, last_closed));  /* 9 > 6 + 2 */
    assert_false(yields(1, conns, all_busy, last_closed)); /* 7 <= 6 + 2 */
    assert_false(yields(2, conns, all_busy, last_closed)); /* the least loaded of those accepting */
}

static void busy_time_adds_the_spans_with_a_request_in_flight(void **state)
{
    (void)state;
    struct scoreboard_slot *slots = scoreboard_create(1);
    assert_non_null(slots);
    struct scoreboard_slot *s = &slots[0];
    const int64_t t0 = 5000000; /* a monotonic clock some seconds old */
    assert_int_equal(scoreboard_busy_us(s, t0), 0);
    scoreboard_busy(s, 1, t0);
    assert_int_equal(scoreboard_busy_us(s, t0 + 300), 300); /* busy: it grows with the clock */
    scoreboard_busy(s, 1, t0 + 100);                        /* already busy: nothing changes */
    assert_int_equal(scoreboard_busy_us(s, t0 + 400), 400);
    scoreboard_busy(s, 0, t0 + 500);
    assert_int_equal(scoreboard_busy_us(s, t0 + 9000), 500); /* idle: it stays */
    scoreboard_busy(s, 0, t0 + 9500);                        /* already idle */
    scoreboard_busy(s, 1, t0 + 10000);
    scoreboard_busy(s, 0, t0 + 10250);
    assert_int_equal(scoreboard_busy_us(s, t0 + 20000), 750);
    scoreboard_destroy(slots, 1);
}

static void queue_waits_land_in_their_bucket_and_the_worst_is_kept(void **state)
{
    (void)state;
    struct scoreboard_slot *slots = scoreboard_create(1);
    assert_non_null(slots);
    struct scoreboard_slot *s = &slots[0];
    scoreboard_count_wait(s, 0, 0);        /* the smallest bucket, 1 ms */
    scoreboard_count_wait(s, 0, 1000);     /* exactly its bound */
    scoreboard_count_wait(s, 0, 300000);   /* 0.3 s: the 0.5 s bucket */
    scoreboard_count_wait(s, 0, 60000000); /* above the last: only +Inf (the count) */
    scoreboard_count_wait(s, -1, 2000);    /* no route: the last row */
    const struct scoreboard_counters *c = &s->counters;
    assert_int_equal(c->wait_bucket[0][0], 2);
    assert_true(scoreboard_wait_le[8] == 0.5);
    assert_int_equal(c->wait_bucket[0][8], 1);
    assert_int_equal(c->wait_count[0], 4);
    assert_int_equal(c->wait_sum_us[0], 60301000);
    assert_int_equal(c->wait_count[SCOREBOARD_ROUTES - 1], 1);
    assert_int_equal(atomic_load(&s->worst_wait_us), 60000000);
    scoreboard_destroy(slots, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(holds_count_against_one_cap_and_come_back_when_a_worker_goes),
        cmocka_unit_test(the_first_idle_worker_takes_a_new_connection),
        cmocka_unit_test(when_all_are_busy_connections_spread_by_count),
        cmocka_unit_test(busy_time_adds_the_spans_with_a_request_in_flight),
        cmocka_unit_test(queue_waits_land_in_their_bucket_and_the_worst_is_kept),
    };
    return cmocka_run_group_tests_name("scoreboard", tests, NULL, NULL);
}
