/* redis_async: the event worker's Redis connection: hiredis's async API on the libuv loop. */
#include "backends/redis_async.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "base/clock.h"
#include "backends/redis_client.h"

/* A command sent and not yet answered; replies come back in order. */
struct pending {
    struct pending *next;
    struct redis_async *owner;
    redis_async_cb cb;
    void *ctx;
    double sent_ms;
};

struct redis_async {
    uv_loop_t *loop;
    struct redis_address addr;
    redisAsyncContext *ac;
    double retry_after_ms;
    struct pending *head, *tail;
    uv_timer_t watchdog; /* drops a connection whose oldest reply is late */
    int watchdog_on;
};

static void fail_now(redis_async_cb cb, void *ctx, const char *why)
{
    struct backend_result res = {.status = BACKEND_DOWN};
    snprintf(res.message, sizeof res.message, "redis: %s", why);
    cb(ctx, &res);
}

/* hiredis calls this for every reply, and with NULL for every command still
 * pending when the connection goes away. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct pending *p = privdata;
    struct redis_async *r = p->owner;
    if (r && r->head == p) {
        r->head = p->next;
        if (!r->head) r->tail = NULL;
    }
    if (reply) {
        struct backend_result res = {0};
        redis_reply_fill(reply, &res);
        p->cb(p->ctx, &res);
    } else {
        fail_now(p->cb, p->ctx, ac && ac->errstr[0] ? ac->errstr : "connection lost");
    }
    free(p);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_async *r = ac->data;
    if (status != REDIS_OK && r) {
        r->ac = NULL; /* hiredis frees it, failing the pending commands */
        r->retry_after_ms = clock_ms() + REDIS_RETRY_MS;
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct redis_async *r = ac->data;
    if (r && r->ac == ac) r->ac = NULL;
}

/* Replies later than REDIS_TIMEOUT_MS mean a stalled server: drop the
 * connection, which fails everything pending at once. */
static void on_watchdog(uv_timer_t *t)
{
    struct redis_async *r = t->data;
    if (r->head && clock_ms() - r->head->sent_ms > REDIS_TIMEOUT_MS && r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        r->retry_after_ms = clock_ms() + REDIS_RETRY_MS;
        redisAsyncFree(ac);
    }
}

static int connect_async(struct redis_async *r, char *err, size_t errlen)
{
    const struct redis_address *a = &r->addr;
    redisAsyncContext *ac = a->unix_path[0] ? redisAsyncConnectUnix(a->unix_path) : redisAsyncConnect(a->host, a->port);
    if (!ac || ac->err) {
        snprintf(err, errlen, "%s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        r->retry_after_ms = clock_ms() + REDIS_RETRY_MS;
        return -1;
    }
    ac->data = r;
    redisLibuvAttach(ac, r->loop);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Queued first, so they run before any command on this connection. */
    if (a->password[0]) redisAsyncCommand(ac, NULL, NULL, "AUTH %s", a->password);
    if (a->db) redisAsyncCommand(ac, NULL, NULL, "SELECT %d", a->db);
    r->ac = ac;
    return 0;
}

struct redis_async *redis_async_new(uv_loop_t *loop, const char *url, char *err, size_t errlen)
{
    struct redis_async *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->loop = loop;
    if (redis_url_parse(url, &r->addr, err, errlen) != 0) {
        free(r);
        return NULL;
    }
    uv_timer_init(loop, &r->watchdog);
    r->watchdog.data = r;
    return r;
}

void redis_async_run(struct redis_async *r, const struct backend_op *op, redis_async_cb cb, void *ctx)
{
    char err[128];
    if (!r->ac) {
        if (clock_ms() < r->retry_after_ms) {
            fail_now(cb, ctx, "reconnecting");
            return;
        }
        if (connect_async(r, err, sizeof err) != 0) {
            fail_now(cb, ctx, err);
            return;
        }
    }
    struct pending *p = calloc(1, sizeof *p);
    if (!p) {
        fail_now(cb, ctx, "out of memory");
        return;
    }
    *p = (struct pending){.owner = r, .cb = cb, .ctx = ctx, .sent_ms = clock_ms()};
    if (redisAsyncCommandArgv(r->ac, on_reply, p, op->argc, (const char **)op->argv, op->argvlen) != REDIS_OK) {
        free(p);
        fail_now(cb, ctx, "cannot send the command");
        return;
    }
    if (r->tail) r->tail->next = p;
    else r->head = p;
    r->tail = p;
    if (!r->watchdog_on) {
        uv_timer_start(&r->watchdog, on_watchdog, REDIS_TIMEOUT_MS / 4, REDIS_TIMEOUT_MS / 4);
        r->watchdog_on = 1;
    }
}

static void free_after_close(uv_handle_t *h)
{
    free(h->data);
}

void redis_async_free(struct redis_async *r)
{
    if (!r) return;
    /* Pending commands are failed by redisAsyncFree; they must not touch r. */
    for (struct pending *p = r->head; p; p = p->next) p->owner = NULL;
    r->head = r->tail = NULL;
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    uv_timer_stop(&r->watchdog);
    r->watchdog.data = r;
    uv_close((uv_handle_t *)&r->watchdog, free_after_close);
}
