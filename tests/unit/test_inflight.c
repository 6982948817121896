/* Unit tests of worker_inflight and the master's reading of it (slowlog): the record of
 * each request in flight, what it says a request waits on, the stack on request, and
 * the master's records. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/clock.h"
#include "base/scoreboard.h"
#include "base/signals.h"
#include "core/routes.h"
#include "master/slowlog.h"
#include "worker/worker_inflight.h"

static int setup(void **state)
{
    (void)state;
    scoreboard_self = scoreboard_create(1);
    return scoreboard_self ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    scoreboard_destroy(scoreboard_self, 1);
    scoreboard_self = NULL;
    return 0;
}

static void records_run_out_and_the_rest_are_counted(void **state)
{
    (void)state;
    int recs[SCOREBOARD_REQS];
    for (int i = 0; i < SCOREBOARD_REQS; i++) assert_true((recs[i] = worker_inflight_take(1000 + i)) >= 0);
    assert_int_equal(worker_inflight_take(5000), -1);
    assert_int_equal(atomic_load(&scoreboard_self->reqs_untracked), 1);
    worker_inflight_release(-1);
    assert_int_equal(atomic_load(&scoreboard_self->reqs_untracked), 0);
    /* A record given back is taken again, as another request (its gen moves on). */
    uint32_t gen = atomic_load(&scoreboard_reqs(scoreboard_self)[recs[3]].gen);
    worker_inflight_release(recs[3]);
    struct slowlog_view v;
    assert_int_equal(slowlog_read(&scoreboard_reqs(scoreboard_self)[recs[3]], &v), -1);
    assert_int_equal(worker_inflight_take(6000), recs[3]);
    assert_int_equal(atomic_load(&scoreboard_reqs(scoreboard_self)[recs[3]].gen), gen + 1);
    for (int i = 0; i < SCOREBOARD_REQS; i++) worker_inflight_release(recs[i]);
}

static struct exchange *exchange_for(const char *path)
{
    static struct exchange ex;
    memset(&ex, 0, offsetof(struct exchange, state));
    ex.req.path = path;
    ex.req.query = "";
    ex.req.method = "GET";
    return &ex;
}

static void a_wait_on_postgresql_shows_the_sql_and_its_parameters(void **state)
{
    (void)state;
    int rec = worker_inflight_take(1000);
    worker_inflight_uri(rec, "GET /io-intensive?ms=2500");
    struct exchange *ex = exchange_for("/io-intensive");
    /* Not routed yet: the endpoint is named from the path. */
    worker_inflight_state(rec, ex, 0, INFLIGHT_CPU);
    struct slowlog_view v;
    assert_int_equal(slowlog_read(&scoreboard_reqs(scoreboard_self)[rec], &v), 0);
    assert_string_equal(v.state, "io_intensive step 0: in CPU");
    assert_int_equal(v.op_started_us, 0);
    ex->route = route_find("/io-intensive");
    const char *params[] = {"2.500"};
    backend_pg(&ex->op, "SELECT pg_sleep($1)", 1, params);
    worker_inflight_state(rec, ex, 1, INFLIGHT_WAITING);
    assert_int_equal(slowlog_read(&scoreboard_reqs(scoreboard_self)[rec], &v), 0);
    assert_string_equal(v.uri, "GET /io-intensive?ms=2500");
    assert_string_equal(v.state, "io_intensive step 1: waiting on postgresql");
    assert_string_equal(v.op, "SELECT pg_sleep($1) -- $1='2.500'");
    assert_true(v.op_started_us > 0);
    worker_inflight_state(rec, ex, 1, INFLIGHT_ANSWERING);
    assert_int_equal(slowlog_read(&scoreboard_reqs(scoreboard_self)[rec], &v), 0);
    assert_string_equal(v.state, "io_intensive step 1: answering");
    assert_int_equal(v.op_started_us, SCOREBOARD_NO_STACK);
    worker_inflight_release(rec);
}

static void a_long_redis_argument_is_cut_so_that_the_keys_show(void **state)
{
    (void)state;
    int rec = worker_inflight_take(1000);
    struct exchange *ex = exchange_for("/cached-data");
    ex->route = route_find("/cached-data");
    char script[200];
    memset(script, 'x', sizeof script - 1);
    script[sizeof script - 1] = '\0';
    const char *argv[] = {"EVAL", script, "2", "perfcgi:cached-data:7"};
    backend_redis(&ex->op, 4, argv);
    worker_inflight_state(rec, ex, 2, INFLIGHT_WAITING);
    struct slowlog_view v;
    assert_int_equal(slowlog_read(&scoreboard_reqs(scoreboard_self)[rec], &v), 0);
    assert_string_equal(v.state, "cached_data step 2: waiting on redis");
    assert_non_null(strstr(v.op, "... 2 perfcgi:cached-data:7"));
    assert_true(strlen(v.op) < SCOREBOARD_OP);
    worker_inflight_release(rec);
}

static void the_stack_signal_unwinds_the_serving_thread(void **state)
{
    (void)state;
    worker_inflight_signals();
    int rec = worker_inflight_take(1000);
    struct scoreboard_req *r = &scoreboard_reqs(scoreboard_self)[rec];
    atomic_fetch_add(&r->stack_ask, 1);
    assert_int_equal(signals_send_stack(getpid(), atomic_load(&r->tid), rec), 0);
    /* Delivered to this thread before the call returns. */
    assert_int_equal(atomic_load(&r->stack_done), atomic_load(&r->stack_ask));
    assert_true(atomic_load(&r->stack_frames) >= 2);
    worker_inflight_release(rec);
}

static void the_master_asks_a_stack_only_of_a_request_in_cpu(void **state)
{
    (void)state;
    worker_inflight_signals();
    struct settings cfg = {0};
    cfg.request_slowlog_timeout = 0.5;
    cfg.timeout = 30;
    int64_t now = clock_us();
    struct exchange *ex = exchange_for("/io-intensive");
    ex->route = route_find("/io-intensive");
    const char *params[] = {"2.500"};
    backend_pg(&ex->op, "SELECT pg_sleep($1)", 1, params);
    int waits = worker_inflight_take(now - 1000000), runs = worker_inflight_take(now - 1000000),
        fresh = worker_inflight_take(now);
    worker_inflight_state(waits, ex, 1, INFLIGHT_WAITING);
    worker_inflight_state(runs, ex, 0, INFLIGHT_CPU);
    worker_inflight_state(fresh, ex, 0, INFLIGHT_CPU);
    struct scoreboard_req *r = &scoreboard_reqs(scoreboard_self)[runs];
    uint64_t written = 0;
    /* The one waiting is written at once, without a stack; the one in CPU
     * waits for its stack (this thread's: its signal comes in before the
     * call returns); the one under the threshold is left alone. */
    assert_int_equal(slowlog_check(&cfg, scoreboard_self, getpid(), clock_us(), 0, &written), 0);
    assert_int_equal(written, 1);
    assert_int_equal(atomic_load(&scoreboard_reqs(scoreboard_self)[waits].stack_ask), 0);
    assert_int_equal(atomic_load(&r->stack_ask), 1);
    assert_int_equal(atomic_load(&r->stack_done), 1);
    assert_true(atomic_load(&r->stack_frames) >= 2);
    assert_int_equal(atomic_load(&scoreboard_reqs(scoreboard_self)[fresh].stack_ask), 0);
    assert_int_equal(slowlog_check(&cfg, scoreboard_self, getpid(), clock_us(), 0, &written), 1);
    assert_int_equal(written, 2);
    /* Written once: nothing more until a kill. */
    slowlog_check(&cfg, scoreboard_self, getpid(), now + 1000000, 0, &written);
    assert_int_equal(written, 2);
    /* Before a kill, whatever request_slowlog_timeout: the requests past
     * `timeout` get their record again, a waiting one at once. */
    cfg.request_slowlog_timeout = 0;
    worker_inflight_state(runs, ex, 1, INFLIGHT_WAITING);
    worker_inflight_release(fresh);
    assert_int_equal(slowlog_check(&cfg, scoreboard_self, getpid(), now + 31000000, 1, &written), 1);
    assert_int_equal(written, 4); /* before the kill: the two past `timeout` */
    assert_int_equal(atomic_load(&r->stack_ask), 1);
    worker_inflight_release(waits);
    worker_inflight_release(runs);
}

/* The master names a request not routed yet from its uri as slowlog_read made it:
 * bytes not UTF-8 become %XX there, three times as long as the record's field. */
static void a_request_not_routed_yet_is_named_from_a_uri_of_any_length(void **state)
{
    (void)state;
    char uri[3 * SCOREBOARD_URI];
    memcpy(uri, "GET /", 5);
    memset(uri + 5, 'x', sizeof uri - 6);
    uri[sizeof uri - 1] = '\0';
    char out[SLOWLOG_STATE];
    worker_inflight_describe((uint64_t)INFLIGHT_CPU << 32, uri, out, sizeof out);
    assert_string_equal(out, "not_found step 0: in CPU");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(records_run_out_and_the_rest_are_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(a_wait_on_postgresql_shows_the_sql_and_its_parameters, setup, teardown),
        cmocka_unit_test_setup_teardown(a_long_redis_argument_is_cut_so_that_the_keys_show, setup, teardown),
        cmocka_unit_test_setup_teardown(the_stack_signal_unwinds_the_serving_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(the_master_asks_a_stack_only_of_a_request_in_cpu, setup, teardown),
        cmocka_unit_test(a_request_not_routed_yet_is_named_from_a_uri_of_any_length),
    };
    return cmocka_run_group_tests_name("inflight", tests, NULL, NULL);
}
