/* Unit tests of redis_conn: the Redis connection's rules, which both clients follow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <hiredis/hiredis.h>

#include "backends/redis_conn.h"

static void handshake_follows_the_url(void **state)
{
    (void)state;
    struct redis_address a;
    struct redis_handshake hs;
    char err[128];
    assert_int_equal(redis_url_parse("redis://127.0.0.1:6379", &a, err, sizeof err), 0);
    redis_conn_handshake(&a, &hs);
    assert_int_equal(hs.n, 0);
    assert_int_equal(redis_url_parse("redis://:s3cret@cache/2", &a, err, sizeof err), 0);
    redis_conn_handshake(&a, &hs);
    assert_int_equal(hs.n, 2);
    /* AUTH first: SELECT is refused before it. */
    assert_string_equal(hs.cmd[0].argv[0], "AUTH");
    assert_string_equal(hs.cmd[0].argv[1], "s3cret");
    assert_int_equal(hs.cmd[0].argvlen[1], 6);
    assert_string_equal(hs.cmd[1].argv[0], "SELECT");
    assert_string_equal(hs.cmd[1].argv[1], "2");
    assert_int_equal(hs.cmd[1].argvlen[1], 1);
    assert_int_equal(redis_url_parse("unix:///run/redis.sock?db=3", &a, err, sizeof err), 0);
    redis_conn_handshake(&a, &hs);
    assert_int_equal(hs.n, 1);
    assert_string_equal(hs.cmd[0].argv[0], "SELECT");
}

static void handshake_replies_are_judged(void **state)
{
    (void)state;
    char err[64] = "";
    redisReply ok = {.type = REDIS_REPLY_STATUS, .str = "OK", .len = 2};
    redisReply refused = {.type = REDIS_REPLY_ERROR, .str = "WRONGPASS invalid password", .len = 26};
    assert_int_equal(redis_conn_handshake_ok(&ok, "", err, sizeof err), 0);
    assert_int_equal(redis_conn_handshake_ok(&refused, "", err, sizeof err), -1);
    assert_string_equal(err, "WRONGPASS invalid password");
    assert_int_equal(redis_conn_handshake_ok(NULL, "Connection reset by peer", err, sizeof err), -1);
    assert_string_equal(err, "Connection reset by peer");
}

static void replies_map_to_a_result(void **state)
{
    (void)state;
    struct backend_result res = {0};
    redisReply s = {.type = REDIS_REPLY_STRING, .str = "abc", .len = 3};
    redis_reply_fill(&s, &res);
    assert_int_equal(res.status, BACKEND_OK);
    assert_int_equal(res.redis_kind, REDIS_STRING);
    assert_int_equal(res.len, 3);
    redisReply i = {.type = REDIS_REPLY_INTEGER, .integer = 42};
    redis_reply_fill(&i, &res);
    assert_int_equal(res.redis_kind, REDIS_INTEGER);
    assert_int_equal(res.integer, 42);
    redisReply nil = {.type = REDIS_REPLY_NIL};
    redis_reply_fill(&nil, &res);
    assert_int_equal(res.redis_kind, REDIS_NIL);
    redisReply e = {.type = REDIS_REPLY_ERROR, .str = "ERR", .len = 3};
    redis_reply_fill(&e, &res);
    assert_int_equal(res.status, BACKEND_OK); /* Redis answered: the endpoint judges the error */
    assert_int_equal(res.redis_kind, REDIS_ERROR);
    redisReply arr = {.type = REDIS_REPLY_ARRAY};
    redis_reply_fill(&arr, &res);
    assert_int_equal(res.redis_kind, REDIS_OTHER);
}

static void down_and_backoff(void **state)
{
    (void)state;
    struct backend_result res = {0};
    redis_conn_down(&res, REDIS_MSG_RECONNECTING);
    assert_int_equal(res.status, BACKEND_DOWN);
    assert_string_equal(res.message, "redis: reconnecting");
    struct redis_backoff b = {0};
    assert_false(redis_backoff_waiting(&b, 1000));
    redis_backoff_failed(&b, 1000);
    assert_true(redis_backoff_waiting(&b, 1000 + REDIS_RETRY_MS - 1));
    assert_false(redis_backoff_waiting(&b, 1000 + REDIS_RETRY_MS));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handshake_follows_the_url),
        cmocka_unit_test(handshake_replies_are_judged),
        cmocka_unit_test(replies_map_to_a_result),
        cmocka_unit_test(down_and_backoff),
    };
    return cmocka_run_group_tests_name("redis_conn", tests, NULL, NULL);
}
