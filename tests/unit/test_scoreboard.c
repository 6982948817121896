/* Unit tests of scoreboard: memory held by all workers, counted against one cap. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(holds_count_against_one_cap_and_come_back_when_a_worker_goes),
    };
    return cmocka_run_group_tests_name("scoreboard", tests, NULL, NULL);
}
