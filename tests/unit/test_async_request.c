/* Unit tests of /async-request's state machine, fed with canned HTTP results. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "base/settings.h"
#include "core/exchange.h"

static struct settings cfg;

static void load(const char *upstream_url)
{
    char *argv[] = {"perfcgi", "--upstream-url", (char *)upstream_url, NULL};
    char *envp[] = {NULL};
    enum settings_action action;
    char err[256];
    assert_int_equal(settings_load(&cfg, 3, argv, envp, &action, err, sizeof err), 0);
}

static int setup(void **state)
{
    (void)state;
    load("http://127.0.0.1:18080/api");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    settings_free(&cfg);
    return 0;
}

static enum step start(struct exchange *ex, const char *query)
{
    struct request req = {.method = "GET", .path = "/async-request", .query = query};
    exchange_start(ex, &req, &cfg);
    return exchange_step(ex, NULL);
}

/* The answer's JSON (caller json_decref's). */
static json_t *answer(const struct exchange *ex, int status)
{
    assert_int_equal(ex->resp.status, status);
    json_t *doc = json_loads(ex->resp.body, 0, NULL);
    assert_non_null(doc);
    return doc;
}

static struct backend_result http_ok(int status, const char *body)
{
    struct backend_result r = {.status = BACKEND_OK, .http_status = status, .str = body, .len = strlen(body),
                               .http_ms = 42.5};
    return r;
}

static void asks_for_one_get_with_ms(void **state)
{
    (void)state;
    struct exchange ex;
    assert_int_equal(start(&ex, "ms=250"), STEP_BACKEND);
    assert_int_equal(ex.op.kind, BACKEND_HTTP);
    assert_string_equal(ex.op.url, "http://127.0.0.1:18080/api?ms=250");
    exchange_clear(&ex);
    assert_int_equal(start(&ex, ""), STEP_BACKEND);
    assert_string_equal(ex.op.url, "http://127.0.0.1:18080/api?ms=100");
    exchange_clear(&ex);
    settings_free(&cfg);
    load("http://example.test/slow?key=v");
    assert_int_equal(start(&ex, "ms=0"), STEP_BACKEND);
    assert_string_equal(ex.op.url, "http://example.test/slow?key=v&ms=0");
    exchange_clear(&ex);
    settings_free(&cfg);
    setup(NULL);
}

static void passes_the_upstream_object_back(void **state)
{
    (void)state;
    struct exchange ex;
    start(&ex, "ms=5");
    struct backend_result res = http_ok(201, "{\"ms\":5,\"nested\":[1,2]}");
    assert_int_equal(exchange_step(&ex, &res), STEP_DONE);
    json_t *doc = answer(&ex, 200);
    assert_int_equal(json_integer_value(json_object_get(doc, "upstream_status")), 201);
    assert_true(json_real_value(json_object_get(doc, "upstream_ms")) == 42.5);
    json_t *want = json_loads("{\"ms\":5,\"nested\":[1,2]}", 0, NULL);
    assert_true(json_equal(json_object_get(doc, "upstream"), want));
    assert_non_null(json_object_get(doc, "elapsed_ms"));
    assert_non_null(json_object_get(doc, "worker"));
    assert_string_equal(ex.resp.cache_control, "no-store");
    json_decref(want);
    json_decref(doc);
    exchange_clear(&ex);
}

static void what_is_not_a_json_object_is_503(void **state)
{
    (void)state;
    const char *bodies[] = {"", "not json", "[1,2]", "\"text\"", "{\"cut\": "};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct exchange ex;
        start(&ex, "ms=1");
        struct backend_result res = http_ok(200, bodies[i]);
        assert_int_equal(exchange_step(&ex, &res), STEP_DONE);
        json_t *doc = answer(&ex, 503);
        assert_string_equal(json_string_value(json_object_get(doc, "error")), "backend_unavailable");
        assert_string_equal(json_string_value(json_object_get(doc, "backend")), "upstream");
        assert_non_null(strstr(json_string_value(json_object_get(doc, "message")), "not a JSON object"));
        assert_true(ex.resp.retry_after > 0);
        json_decref(doc);
        exchange_clear(&ex);
    }
}

static void faults_map_to_503_and_504(void **state)
{
    (void)state;
    struct exchange ex;
    start(&ex, "ms=1");
    struct backend_result down = {.status = BACKEND_DOWN, .message = "Connection refused"};
    assert_int_equal(exchange_step(&ex, &down), STEP_DONE);
    json_t *doc = answer(&ex, 503);
    assert_string_equal(json_string_value(json_object_get(doc, "backend")), "upstream");
    assert_true(ex.resp.retry_after > 0);
    json_decref(doc);
    exchange_clear(&ex);

    start(&ex, "ms=9000");
    struct backend_result late = {.status = BACKEND_DEADLINE};
    assert_int_equal(exchange_step(&ex, &late), STEP_DONE);
    doc = answer(&ex, 504);
    assert_string_equal(json_string_value(json_object_get(doc, "error")), "timeout");
    json_decref(doc);
    exchange_clear(&ex);
}

static void ms_out_of_range_is_400(void **state)
{
    (void)state;
    const char *queries[] = {"ms=-1", "ms=10001", "ms=x", "ms="};
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        struct exchange ex;
        assert_int_equal(start(&ex, queries[i]), STEP_DONE);
        json_t *doc = answer(&ex, 400);
        assert_string_equal(json_string_value(json_object_get(doc, "param")), "ms");
        json_decref(doc);
        exchange_clear(&ex);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(asks_for_one_get_with_ms),
        cmocka_unit_test(passes_the_upstream_object_back),
        cmocka_unit_test(what_is_not_a_json_object_is_503),
        cmocka_unit_test(faults_map_to_503_and_504),
        cmocka_unit_test(ms_out_of_range_is_400),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
