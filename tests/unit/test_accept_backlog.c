/* Unit tests of accept_backlog: what an event worker takes without yielding after a pause. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "worker/accept_backlog.h"

/* Nothing seen, nothing owed: every new connection is chosen for. */
static void nothing_is_owed_before_a_pause(void **state)
{
    (void)state;
    struct accept_backlog b = {{0}};
    for (int i = 0; i < SETTINGS_MAX_BINDS; i++) assert_false(accept_backlog_owed(&b, i));
    accept_backlog_seen(&b, 0, 0); /* the one taken at the pause's end was the last */
    assert_false(accept_backlog_owed(&b, 0));
    accept_backlog_seen(&b, 0, -1); /* the kernel could not say */
    assert_false(accept_backlog_owed(&b, 0));
}

/* Under steady load the queue never empties: the owing still ends once as many have
 * been taken as were queued at the pause's end. */
static void steady_load_ends_it_after_the_queue_seen(void **state)
{
    (void)state;
    struct accept_backlog b = {{0}};
    accept_backlog_seen(&b, 0, 3);
    for (int taken = 0; taken < 3; taken++) {
        assert_true(accept_backlog_owed(&b, 0));
        accept_backlog_after(&b, 0, ACCEPT_TOOK);
    }
    assert_false(accept_backlog_owed(&b, 0));
}

/* An empty queue (a sibling took the last ones) ends it at once; an empty queue on one
 * listener leaves another's owing as it was. */
static void an_empty_queue_ends_it_on_that_listener_only(void **state)
{
    (void)state;
    struct accept_backlog b = {{0}};
    accept_backlog_seen(&b, 0, 50);
    accept_backlog_seen(&b, 1, 2);
    accept_backlog_after(&b, 0, ACCEPT_NONE);
    assert_false(accept_backlog_owed(&b, 0));
    assert_true(accept_backlog_owed(&b, 1));
    accept_backlog_after(&b, 1, ACCEPT_TOOK);
    assert_true(accept_backlog_owed(&b, 1));
    accept_backlog_after(&b, 1, ACCEPT_TOOK);
    assert_false(accept_backlog_owed(&b, 1));
}

/* A connection that could not be taken counts as one (the owing ends even if every
 * accept fails); a full worker owes nothing more. */
static void failures_count_and_a_full_worker_owes_nothing(void **state)
{
    (void)state;
    struct accept_backlog b = {{0}};
    accept_backlog_seen(&b, 0, 2);
    accept_backlog_after(&b, 0, ACCEPT_FAILED);
    assert_true(accept_backlog_owed(&b, 0));
    accept_backlog_after(&b, 0, ACCEPT_FAILED);
    assert_false(accept_backlog_owed(&b, 0));
    accept_backlog_seen(&b, 0, 9);
    accept_backlog_after(&b, 0, ACCEPT_FULL);
    assert_false(accept_backlog_owed(&b, 0));
    accept_backlog_after(&b, 0, ACCEPT_TOOK); /* not owed: stays at nothing */
    assert_false(accept_backlog_owed(&b, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nothing_is_owed_before_a_pause),
        cmocka_unit_test(steady_load_ends_it_after_the_queue_seen),
        cmocka_unit_test(an_empty_queue_ends_it_on_that_listener_only),
        cmocka_unit_test(failures_count_and_a_full_worker_owes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
