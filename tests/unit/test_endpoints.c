/* Unit tests of routing and the endpoint state machines, fed with canned backend results. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/decimal.h"
#include "core/endpoint.h"
#include "core/exchange.h"
#include "core/routes.h"
#include "base/settings.h"

static struct settings cfg;

static int setup(void **state)
{
    (void)state;
    char *argv[] = {"perfcgi", "--max-request-mb", "64", "--cache-ttl", "60", NULL};
    char *envp[] = {NULL};
    enum settings_action action;
    char err[256];
    return settings_load(&cfg, 5, argv, envp, &action, err, sizeof err);
}

static int teardown(void **state)
{
    (void)state;
    settings_free(&cfg);
    return 0;
}

static enum step start(struct exchange *ex, const char *method, const char *path, const char *query)
{
    struct request req = {.method = method, .path = path, .query = query};
    exchange_start(ex, &req, &cfg);
    return exchange_step(ex, NULL);
}

/* The parsed body of a finished exchange (caller json_decref's). */
static json_t *body(const struct exchange *ex)
{
    json_t *doc = json_loads(ex->resp.body, 0, NULL);
    assert_non_null(doc);
    return doc;
}

static void assert_error(const struct exchange *ex, int status, const char *code)
{
    assert_int_equal(ex->resp.status, status);
    json_t *doc = body(ex);
    assert_string_equal(json_string_value(json_object_get(doc, "error")), code);
    json_decref(doc);
    assert_string_equal(ex->resp.cache_control, "no-store");
}

static struct backend_result ok_result(void)
{
    struct backend_result r = {.status = BACKEND_OK};
    return r;
}

static void hello_answers_at_once(void **state)
{
    (void)state;
    struct exchange ex;
    assert_int_equal(start(&ex, "GET", "/", ""), STEP_DONE);
    assert_int_equal(ex.resp.status, 200);
    json_t *doc = body(&ex);
    assert_string_equal(json_string_value(json_object_get(doc, "message")), "Hello, World!");
    assert_int_equal(json_integer_value(json_object_get(doc, "worker")), getpid());
    assert_true(json_is_real(json_object_get(doc, "elapsed_ms")));
    json_decref(doc);
    exchange_clear(&ex);
}

/* jansson's rendering of doc, as the answers write their JSON. */
static char *jansson_text(const json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
    assert_non_null(text);
    return text;
}

/* `/` writes its body without building JSON: the bytes are the ones jansson writes. */
static void hello_body_is_what_jansson_writes(void **state)
{
    (void)state;
    struct exchange ex;
    assert_int_equal(start(&ex, "GET", "/", ""), STEP_DONE);
    json_t *doc = body(&ex);
    char *expect = jansson_text(doc);
    assert_string_equal(ex.resp.body, expect);
    assert_int_equal(ex.resp.body_len, strlen(expect));
    assert_string_equal(ex.resp.cache_control, "public, max-age=1");
    assert_int_equal(json_object_size(doc), 3);
    free(expect);
    json_decref(doc);
    exchange_clear(&ex);
}

/* elapsed_ms written from its thousandths is what jansson writes for the rounded real. */
static void elapsed_text_is_what_jansson_writes(void **state)
{
    (void)state;
    const double fixed[] = {0,       0.0004,   0.0005,  0.001,     0.01,        0.1,       0.12,
                            0.216,   0.26,     0.9995,  1,         1.5,         9.999,     10,
                            12.3456, 100.0004, 999.999, 1000.0005, 123456.789,  1e6,       86400000.001,
                            1e9,     1e11 + 0.5, 1e12,  1e13,      -0.4,        -1.25,     -3000.5};
    unsigned seed = 11;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] + 20000; i++) {
        double ms;
        if (i < sizeof fixed / sizeof fixed[0]) ms = fixed[i];
        else if (i % 2) ms = (double)rand_r(&seed) / RAND_MAX * 50.0; /* the usual range */
        else ms = (double)rand_r(&seed) * (double)rand_r(&seed) / 1e3;
        char text[EXCHANGE_ELAPSED_TEXT];
        size_t n = exchange_elapsed_text(ms, text);
        json_t *real = json_real(round(ms * 1e3) / 1e3);
        char *expect = jansson_text(real);
        assert_string_equal(text, expect);
        assert_int_equal(n, strlen(expect));
        free(expect);
        json_decref(real);
    }
}

/* decimal_round is libm's round(): halves away from zero, the sign of zero kept. */
static void decimal_round_is_libm_round(void **state)
{
    (void)state;
    const double fixed[] = {0,   -0.0, 0.5, -0.5, 1.5, -1.5, 2.5,  0.49999999999999994, -0.49999999999999994,
                            4503599627370495.5, 4503599627370497.0, 1e18 + 0.5, 9.5e18, -9.5e18, 1e300, INFINITY};
    unsigned seed = 7;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] + 20000; i++) {
        double x = i < sizeof fixed / sizeof fixed[0] ? fixed[i]
                   : ((double)rand_r(&seed) - RAND_MAX / 2.0) / (1 + rand_r(&seed) % 1000) * 1e3;
        double got = decimal_round(x), want = round(x);
        assert_true(got == want);
        assert_int_equal(signbit(got) != 0, signbit(want) != 0);
    }
    assert_true(isnan(decimal_round(NAN)));
}

static void routing_errors_come_in_order(void **state)
{
    (void)state;
    struct exchange ex;
    assert_int_equal(start(&ex, "POST", "/nowhere", ""), STEP_DONE);
    assert_error(&ex, 404, "not_found");
    exchange_clear(&ex);

    assert_int_equal(start(&ex, "DELETE", "/cpu-intensive", "n=abc"), STEP_DONE);
    assert_error(&ex, 405, "method_not_allowed");
    assert_true(ex.resp.allow);
    exchange_clear(&ex);

    char query[3000];
    memset(query, 'a', sizeof query - 1);
    query[sizeof query - 1] = '\0';
    assert_int_equal(start(&ex, "GET", "/", query), STEP_DONE);
    assert_error(&ex, 413, "too_large");
    exchange_clear(&ex);

    struct request req = {.method = "GET", .path = "/", .query = "", .content_length = 5 << 20};
    exchange_start(&ex, &req, &cfg);
    assert_int_equal(exchange_step(&ex, NULL), STEP_DONE);
    assert_error(&ex, 413, "too_large");
    exchange_clear(&ex);
}

static void head_is_get_without_body(void **state)
{
    (void)state;
    struct exchange ex;
    assert_int_equal(start(&ex, "HEAD", "/expensive-computation", "n=10&method=fast"), STEP_DONE);
    assert_true(ex.head_only);
    assert_int_equal(ex.resp.status, 200);
    assert_string_equal(ex.resp.cache_control, "public, max-age=3600");
    exchange_clear(&ex);
}

static void bad_parameters_name_the_parameter(void **state)
{
    (void)state;
    struct {
        const char *path, *query, *param, *message;
    } cases[] = {
        {"/cpu-intensive", "n=abc", "n", "n must be an integer in [2, 10000000]"},
        {"/cpu-intensive", "n=1", "n", "n must be an integer in [2, 10000000]"},
        {"/io-intensive", "ms=10001", "ms", "ms must be an integer in [0, 10000]"},
        {"/mixed", "n=5&ms=-1", "ms", "ms must be an integer in [0, 10000]"},
        {"/cached-data", "category=100", "category", "category must be an integer in [0, 99]"},
        {"/expensive-computation", "n=41", "n", "n must be an integer in [0, 40]"},
        {"/expensive-computation", "n=94&method=fast", "n", "n must be an integer in [0, 93]"},
        {"/expensive-computation", "method=slow", "method", "method must be one of naive, memo, fast"},
        {"/memory-test", "mb=65", "mb", "mb must be an integer in [1, 64]"},
        {"/memory-test", "hold=2", "hold", "hold must be an integer in [0, 1]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct exchange ex;
        assert_int_equal(start(&ex, "GET", cases[i].path, cases[i].query), STEP_DONE);
        assert_error(&ex, 400, "bad_request");
        json_t *doc = body(&ex);
        assert_string_equal(json_string_value(json_object_get(doc, "param")), cases[i].param);
        assert_string_equal(json_string_value(json_object_get(doc, "message")), cases[i].message);
        json_decref(doc);
        exchange_clear(&ex);
    }
}

static void cpu_and_fibonacci_compute(void **state)
{
    (void)state;
    struct exchange ex;
    assert_int_equal(start(&ex, "GET", "/cpu-intensive", "n=1000&n=5"), STEP_DONE);
    json_t *doc = body(&ex);
    assert_int_equal(json_integer_value(json_object_get(doc, "n")), 1000);
    assert_int_equal(json_integer_value(json_object_get(doc, "primes")), 168);
    json_decref(doc);
    exchange_clear(&ex);

    assert_int_equal(start(&ex, "GET", "/expensive-computation", "method=memo&n=93"), STEP_DONE);
    doc = body(&ex);
    assert_string_equal(json_string_value(json_object_get(doc, "result")), "12200160415121876738");
    assert_string_equal(json_string_value(json_object_get(doc, "method")), "memo");
    json_decref(doc);
    exchange_clear(&ex);
}

static void io_asks_for_pg_sleep_and_reports_timings(void **state)
{
    (void)state;
    struct exchange ex;
    assert_int_equal(start(&ex, "GET", "/io-intensive", "ms=20"), STEP_BACKEND);
    assert_int_equal(ex.op.kind, BACKEND_PG);
    assert_string_equal(ex.op.sql, "SELECT pg_sleep($1)");
    assert_int_equal(ex.op.nparams, 1);
    assert_string_equal(ex.op.params[0], "0.020");
    struct backend_result r = ok_result();
    r.nrows = 1;
    r.ncols = 1;
    r.pool_wait_ms = 1.5;
    r.db_ms = 20.25;
    assert_int_equal(exchange_step(&ex, &r), STEP_DONE);
    assert_int_equal(ex.resp.status, 200);
    json_t *doc = body(&ex);
    assert_true(json_real_value(json_object_get(doc, "db_ms")) == 20.25);
    assert_true(json_real_value(json_object_get(doc, "pool_wait_ms")) == 1.5);
    assert_true(json_real_value(json_object_get(doc, "waited_ms")) == 21.75);
    json_decref(doc);
    assert_true(ex.pool_wait_ms == 1.5); /* for /metrics */
    exchange_clear(&ex);
}

/* Under ASan, a leak here means an endpoint's clear misses what its state holds. */
static void an_exchange_cleared_mid_flight_frees_its_state(void **state)
{
    (void)state;
    struct exchange ex;
    assert_int_equal(start(&ex, "GET", "/mixed", "n=10&ms=1"), STEP_BACKEND);
    exchange_clear(&ex);
    assert_int_equal(start(&ex, "GET", "/io-intensive", "ms=1"), STEP_BACKEND);
    exchange_clear(&ex);
    assert_int_equal(start(&ex, "GET", "/cached-data", "category=3"), STEP_BACKEND);
    struct backend_result r = {.status = BACKEND_DOWN};
    assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND); /* Redis down: the query runs */
    exchange_clear(&ex);
    start(&ex, "GET", "/cached-data", "category=3");
    r = (struct backend_result){.status = BACKEND_OK, .redis_kind = REDIS_NIL};
    exchange_step(&ex, &r);
    r = (struct backend_result){.status = BACKEND_OK, .redis_kind = REDIS_INTEGER, .integer = 1};
    exchange_step(&ex, &r);
    r = (struct backend_result){.status = BACKEND_OK, .nrows = 1, .ncols = 5, .values = {"1", "1", "1", "1", "1"}};
    assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND); /* the store runs with the value it holds */
    exchange_clear(&ex);
}

static void pg_failures_map_to_their_errors(void **state)
{
    (void)state;
    struct {
        enum backend_status status;
        int http;
        const char *code;
        int retry_after;
    } cases[] = {
        {BACKEND_DOWN, 503, "backend_unavailable", 1},
        {BACKEND_POOL_TIMEOUT, 503, "pool_timeout", 1},
        {BACKEND_DEADLINE, 504, "timeout", 0},
        {BACKEND_FAILED, 500, "internal_error", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct exchange ex;
        assert_int_equal(start(&ex, "GET", "/mixed", "n=10&ms=1"), STEP_BACKEND);
        struct backend_result r = {.status = cases[i].status};
        assert_int_equal(exchange_step(&ex, &r), STEP_DONE);
        assert_error(&ex, cases[i].http, cases[i].code);
        assert_int_equal(ex.resp.retry_after, cases[i].retry_after);
        if (cases[i].status == BACKEND_DOWN) {
            json_t *doc = body(&ex);
            assert_string_equal(json_string_value(json_object_get(doc, "backend")), "postgresql");
            json_decref(doc);
        }
        exchange_clear(&ex);
    }
}

/* ---- /cached-data ---- */

static struct backend_result redis_reply(enum redis_reply_kind kind, const char *str, long long integer)
{
    struct backend_result r = ok_result();
    r.redis_kind = kind;
    r.str = str;
    r.len = str ? strlen(str) : 0;
    r.integer = integer;
    return r;
}

static struct backend_result stats_row(void)
{
    struct backend_result r = ok_result();
    r.nrows = 1;
    r.ncols = 5;
    r.values[0] = "1000";
    r.values[1] = "500070.00";
    r.values[2] = "500.0700";
    r.values[3] = "0.57";
    r.values[4] = "999.57";
    return r;
}

static void assert_cached_answer(const struct exchange *ex, const char *x_cache, const char *source)
{
    assert_int_equal(ex->resp.status, 200);
    assert_string_equal(ex->resp.x_cache, x_cache);
    assert_string_equal(ex->resp.cache_control, "public, max-age=5");
    json_t *doc = body(ex);
    assert_string_equal(json_string_value(json_object_get(doc, "source")), source);
    assert_int_equal(json_integer_value(json_object_get(doc, "category")), 3);
    json_t *stats = json_object_get(doc, "stats");
    assert_int_equal(json_integer_value(json_object_get(stats, "count")), 1000);
    assert_string_equal(json_string_value(json_object_get(stats, "sum")), "500070.00");
    assert_string_equal(json_string_value(json_object_get(stats, "avg")), "500.0700");
    json_decref(doc);
}

static void cached_hit_is_one_get(void **state)
{
    (void)state;
    struct exchange ex;
    assert_int_equal(start(&ex, "GET", "/cached-data", "category=3"), STEP_BACKEND);
    assert_int_equal(ex.op.kind, BACKEND_REDIS);
    assert_string_equal(ex.op.argv[0], "GET");
    assert_string_equal(ex.op.argv[1], "perfcgi:cached-data:3");
    char value[256];
    snprintf(value, sizeof value,
             "{\"stats\":{\"count\":1000,\"sum\":\"500070.00\",\"avg\":\"500.0700\",\"min\":\"0.57\","
             "\"max\":\"999.57\"},\"expires_at\":%.3f}",
             clock_wall_s() + 30.2);
    struct backend_result r = redis_reply(REDIS_STRING, value, 0);
    assert_int_equal(exchange_step(&ex, &r), STEP_DONE);
    assert_cached_answer(&ex, "HIT", "cache");
    json_t *doc = body(&ex);
    assert_int_equal(json_integer_value(json_object_get(doc, "ttl")), 31);
    json_decref(doc);
    exchange_clear(&ex);
}

static void cached_miss_locks_queries_stores_and_unlocks(void **state)
{
    (void)state;
    struct exchange ex;
    assert_int_equal(start(&ex, "GET", "/cached-data", "category=3"), STEP_BACKEND);
    struct backend_result r = redis_reply(REDIS_NIL, NULL, 0);
    assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND);
    assert_string_equal(ex.op.argv[0], "EVAL"); /* get-or-lock */
    assert_string_equal(ex.op.argv[3], "perfcgi:cached-data:3");
    assert_string_equal(ex.op.argv[4], "perfcgi:cached-data:3:lock");
    char token[64];
    snprintf(token, sizeof token, "%s", ex.op.argv[5]);
    r = redis_reply(REDIS_INTEGER, NULL, 1);
    assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND);
    assert_int_equal(ex.op.kind, BACKEND_PG);
    assert_string_equal(ex.op.params[0], "3");
    r = stats_row();
    assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND);
    /* The answer is ready before the store runs. */
    assert_cached_answer(&ex, "MISS", "database");
    assert_string_equal(ex.op.argv[0], "EVAL"); /* store-and-unlock */
    assert_string_equal(ex.op.argv[6], "60");
    assert_string_equal(ex.op.argv[7], token);
    json_t *stored = json_loads(ex.op.argv[5], 0, NULL);
    assert_non_null(json_object_get(stored, "stats"));
    assert_true(json_number_value(json_object_get(stored, "expires_at")) > clock_wall_s() + 59);
    json_decref(stored);
    r = redis_reply(REDIS_INTEGER, NULL, 1);
    assert_int_equal(exchange_step(&ex, &r), STEP_DONE);
    assert_cached_answer(&ex, "MISS", "database");
    exchange_clear(&ex);
}

static void cached_waiter_polls_until_the_value_appears(void **state)
{
    (void)state;
    struct exchange ex;
    start(&ex, "GET", "/cached-data", "category=3");
    struct backend_result r = redis_reply(REDIS_NIL, NULL, 0);
    exchange_step(&ex, &r);
    int last_sleep = 0;
    for (int i = 0; i < 4; i++) {
        r = redis_reply(REDIS_INTEGER, NULL, 0); /* somebody else holds the lock */
        assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND);
        assert_int_equal(ex.op.kind, BACKEND_SLEEP);
        assert_true(ex.op.sleep_ms >= last_sleep && ex.op.sleep_ms <= 50);
        last_sleep = ex.op.sleep_ms;
        r = ok_result();
        assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND);
        assert_string_equal(ex.op.argv[0], "EVAL");
    }
    char value[256];
    snprintf(value, sizeof value,
             "{\"stats\":{\"count\":1000,\"sum\":\"500070.00\",\"avg\":\"500.0700\",\"min\":\"0.57\","
             "\"max\":\"999.57\"},\"expires_at\":%.3f}",
             clock_wall_s() + 60);
    r = redis_reply(REDIS_STRING, value, 0);
    assert_int_equal(exchange_step(&ex, &r), STEP_DONE);
    assert_cached_answer(&ex, "HIT", "cache");
    exchange_clear(&ex);
}

static void cached_redis_down_bypasses_to_the_database(void **state)
{
    (void)state;
    struct exchange ex;
    start(&ex, "GET", "/cached-data", "category=3");
    struct backend_result r = {.status = BACKEND_DOWN};
    assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND);
    assert_int_equal(ex.op.kind, BACKEND_PG);
    r = stats_row();
    assert_int_equal(exchange_step(&ex, &r), STEP_DONE); /* nothing to store */
    assert_cached_answer(&ex, "BYPASS", "database");
    exchange_clear(&ex);
}

static void cached_corrupt_value_is_recomputed(void **state)
{
    (void)state;
    struct exchange ex;
    start(&ex, "GET", "/cached-data", "category=3");
    struct backend_result r = redis_reply(REDIS_STRING, "{not json", 0);
    assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND);
    assert_string_equal(ex.op.argv[0], "EVAL");
    r = redis_reply(REDIS_INTEGER, NULL, 1);
    assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND);
    assert_int_equal(ex.op.kind, BACKEND_PG);
    exchange_clear(&ex);
}

static void cached_db_down_answers_503_and_releases_the_lock(void **state)
{
    (void)state;
    struct exchange ex;
    start(&ex, "GET", "/cached-data", "category=3");
    struct backend_result r = redis_reply(REDIS_NIL, NULL, 0);
    exchange_step(&ex, &r);
    r = redis_reply(REDIS_INTEGER, NULL, 1);
    exchange_step(&ex, &r);
    r = (struct backend_result){.status = BACKEND_DOWN};
    assert_int_equal(exchange_step(&ex, &r), STEP_BACKEND);
    assert_error(&ex, 503, "backend_unavailable");
    assert_string_equal(ex.op.argv[0], "EVAL");
    assert_string_equal(ex.op.argv[5], ""); /* store nothing, only unlock */
    r = redis_reply(REDIS_INTEGER, NULL, 1);
    assert_int_equal(exchange_step(&ex, &r), STEP_DONE);
    assert_error(&ex, 503, "backend_unavailable");
    exchange_clear(&ex);
}

static void memory_hold_over_the_limit_is_507(void **state)
{
    (void)state;
    struct exchange ex;
    char query[32];
    snprintf(query, sizeof query, "mb=%d&hold=1", cfg.max_held_mb > 64 ? 64 : cfg.max_held_mb);
    int saw_507 = 0;
    for (int i = 0; i < 20 && !saw_507; i++) {
        start(&ex, "GET", "/memory-test", query);
        saw_507 = ex.resp.status == 507;
        if (!saw_507) assert_int_equal(ex.resp.status, 200);
        exchange_clear(&ex);
    }
    assert_true(saw_507);
    start(&ex, "GET", "/memory-test", "mb=1&hold=1");
    assert_error(&ex, 507, "insufficient_storage");
    exchange_clear(&ex);
}

static void head_block_has_every_header(void **state)
{
    (void)state;
    struct exchange ex;
    start(&ex, "PUT", "/", "");
    ex.resp.retry_after = 2;
    ex.resp.x_cache = "MISS";
    char head[512], expect[64];
    size_t n = exchange_head(&ex, head, sizeof head);
    assert_true(n > 0 && n == strlen(head));
    assert_non_null(strstr(head, "Status: 405 Method Not Allowed\r\n"));
    assert_non_null(strstr(head, "Content-Type: application/json\r\n"));
    snprintf(expect, sizeof expect, "X-Worker: %ld\r\n", (long)getpid());
    assert_non_null(strstr(head, expect));
    snprintf(expect, sizeof expect, "Content-Length: %zu\r\n", ex.resp.body_len);
    assert_non_null(strstr(head, expect));
    assert_non_null(strstr(head, "Allow: GET, HEAD\r\n"));
    assert_non_null(strstr(head, "Retry-After: 2\r\n"));
    assert_non_null(strstr(head, "X-Cache: MISS\r\n"));
    assert_non_null(strstr(head, "Cache-Control: no-store\r\n"));
    assert_true(strcmp(head + n - 4, "\r\n\r\n") == 0);
    assert_int_equal(exchange_head(&ex, head, 16), 0);
    exchange_clear(&ex);
}

static void every_route_is_found(void **state)
{
    (void)state;
    static const struct {
        const char *path, *name, *cache_control;
    } routes[] = {
        {"/", "hello", "public, max-age=1"},
        {"/cpu-intensive", "cpu_intensive", "no-store"},
        {"/io-intensive", "io_intensive", "no-store"},
        {"/mixed", "mixed", "no-store"},
        {"/cached-data", "cached_data", "public, max-age=5"},
        {"/expensive-computation", "expensive_computation", "public, max-age=3600"},
        {"/memory-test", "memory_test", "no-store"},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct endpoint *e = route_find(routes[i].path);
        assert_non_null(e);
        assert_string_equal(e->name, routes[i].name);
        assert_string_equal(e->cache_control, routes[i].cache_control);
    }
    for (int i = 0; i < ROUTE_COUNT; i++) {
        const struct endpoint *e = route_table[i];
        assert_ptr_equal(route_find(e->path), e);
        assert_int_equal(route_index(e), i);
        assert_true(e->state_size <= EXCHANGE_STATE_MAX);
        /* Only state_size bytes of the state are zeroed: one that parses or frees keeps state. */
        if (e->parse || e->clear) assert_true(e->state_size > 0);
        for (int j = 0; j < i; j++) assert_string_not_equal(route_table[j]->name, e->name);
    }
    assert_int_equal(route_index(NULL), ROUTE_NONE);
    assert_null(route_find("/cpu-intensive/"));
    assert_null(route_find(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hello_answers_at_once),
        cmocka_unit_test(hello_body_is_what_jansson_writes),
        cmocka_unit_test(elapsed_text_is_what_jansson_writes),
        cmocka_unit_test(decimal_round_is_libm_round),
        cmocka_unit_test(routing_errors_come_in_order),
        cmocka_unit_test(head_is_get_without_body),
        cmocka_unit_test(bad_parameters_name_the_parameter),
        cmocka_unit_test(cpu_and_fibonacci_compute),
        cmocka_unit_test(io_asks_for_pg_sleep_and_reports_timings),
        cmocka_unit_test(an_exchange_cleared_mid_flight_frees_its_state),
        cmocka_unit_test(pg_failures_map_to_their_errors),
        cmocka_unit_test(cached_hit_is_one_get),
        cmocka_unit_test(cached_miss_locks_queries_stores_and_unlocks),
        cmocka_unit_test(cached_waiter_polls_until_the_value_appears),
        cmocka_unit_test(cached_redis_down_bypasses_to_the_database),
        cmocka_unit_test(cached_corrupt_value_is_recomputed),
        cmocka_unit_test(cached_db_down_answers_503_and_releases_the_lock),
        cmocka_unit_test(memory_hold_over_the_limit_is_507),
        cmocka_unit_test(head_block_has_every_header),
        cmocka_unit_test(every_route_is_found),
    };
    return cmocka_run_group_tests_name("endpoints", tests, setup, teardown);
}
