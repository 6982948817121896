/* redis_async: the event worker's Redis connection: hiredis's async API on the libuv loop, under redis_conn's rules. */
#include "backends/redis_async.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "backends/redis_conn.h"
#include "base/clock.h"
#include "base/list.h"
#include "base/redis_url.h"

/* A command sent and not yet answered; replies come back in order. */
struct redis_pending {
    struct list_node link; /* in its owner's pending list, oldest first */
    struct redis_async *owner;
    redis_async_cb cb;
    void *ctx;
    double sent_ms;
};

struct redis_async {
    uv_loop_t *loop;
    struct redis_address addr;
    redisAsyncContext *ac;
    struct redis_backoff backoff;
    struct list_node pending; /* struct redis_pending */
    uv_timer_t watchdog; /* drops a connection whose oldest reply is late */
    int watchdog_on;
};

static void redis_async_fail(redis_async_cb cb, void *ctx, const char *why)
{
    struct backend_result res = {0};
    redis_conn_down(&res, why);
    cb(ctx, &res);
}

/* Drops the connection (hiredis fails what is pending on it) and waits
 * REDIS_RETRY_MS before the next connect. Safe inside a hiredis callback. */
static void redis_async_drop(struct redis_async *r)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    redis_backoff_failed(&r->backoff, clock_ms());
    redisAsyncFree(ac);
}

/* hiredis calls this for every reply, and with NULL for every command still
 * pending when the connection goes away. */
static void redis_async_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_pending *p = privdata;
    if (p->owner) list_remove(&p->link);
    if (reply) {
        struct backend_result res = {0};
        redis_reply_fill(reply, &res);
        p->cb(p->ctx, &res);
    } else {
        redis_async_fail(p->cb, p->ctx, ac && ac->errstr[0] ? ac->errstr : "connection lost");
    }
    free(p);
}

/* A handshake command's reply: a refused AUTH or SELECT drops the
 * connection, failing the commands queued behind it. */
static void redis_async_on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    struct redis_async *r = ac->data;
    char err[128];
    if (!reply || !r || r->ac != ac) return; /* the connection is going anyway */
    if (redis_conn_handshake_ok(reply, ac->errstr, err, sizeof err) != 0) redis_async_drop(r);
}

static void redis_async_on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_async *r = ac->data;
    if (status != REDIS_OK && r) {
        r->ac = NULL; /* hiredis frees it, failing the pending commands */
        redis_backoff_failed(&r->backoff, clock_ms());
    }
}

static void redis_async_on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct redis_async *r = ac->data;
    if (r && r->ac == ac) r->ac = NULL;
}

/* Replies later than REDIS_TIMEOUT_MS mean a stalled server: drop the
 * connection, which fails everything pending at once. */
static void redis_async_on_watchdog(uv_timer_t *t)
{
    struct redis_async *r = t->data;
    struct list_node *oldest = list_first(&r->pending);
    if (oldest && r->ac && clock_ms() - list_entry(oldest, struct redis_pending, link)->sent_ms > REDIS_TIMEOUT_MS)
        redis_async_drop(r);
}

static int redis_async_connect(struct redis_async *r, char *err, size_t errlen)
{
    const struct redis_address *a = &r->addr;
    redisAsyncContext *ac = a->unix_path[0] ? redisAsyncConnectUnix(a->unix_path) : redisAsyncConnect(a->host, a->port);
    if (!ac || ac->err) {
        snprintf(err, errlen, "%s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        redis_backoff_failed(&r->backoff, clock_ms());
        return -1;
    }
    ac->data = r;
    redisLibuvAttach(ac, r->loop);
    redisAsyncSetConnectCallback(ac, redis_async_on_connect);
    redisAsyncSetDisconnectCallback(ac, redis_async_on_disconnect);
    /* Queued first, so they run before any command on this connection. */
    struct redis_handshake hs;
    redis_conn_handshake(a, &hs);
    for (int i = 0; i < hs.n; i++)
        redisAsyncCommandArgv(ac, redis_async_on_handshake, NULL, hs.cmd[i].argc, hs.cmd[i].argv, hs.cmd[i].argvlen);
    r->ac = ac;
    return 0;
}

struct redis_async *redis_async_new(uv_loop_t *loop, const char *url, char *err, size_t errlen)
{
    struct redis_async *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->loop = loop;
    list_init(&r->pending);
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
        if (redis_backoff_waiting(&r->backoff, clock_ms())) {
            redis_async_fail(cb, ctx, REDIS_MSG_RECONNECTING);
            return;
        }
        if (redis_async_connect(r, err, sizeof err) != 0) {
            redis_async_fail(cb, ctx, err);
            return;
        }
    }
    struct redis_pending *p = calloc(1, sizeof *p);
    if (!p) {
        redis_async_fail(cb, ctx, "out of memory");
        return;
    }
    *p = (struct redis_pending){.owner = r, .cb = cb, .ctx = ctx, .sent_ms = clock_ms()};
    if (redisAsyncCommandArgv(r->ac, redis_async_on_reply, p, op->argc, (const char **)op->argv, op->argvlen) != REDIS_OK) {
        free(p);
        redis_async_fail(cb, ctx, "cannot send the command");
        return;
    }
    list_push_back(&r->pending, &p->link);
    if (!r->watchdog_on) {
        uv_timer_start(&r->watchdog, redis_async_on_watchdog, REDIS_TIMEOUT_MS / 4, REDIS_TIMEOUT_MS / 4);
        r->watchdog_on = 1;
    }
}

static void redis_async_free_after_close(uv_handle_t *h)
{
    free(h->data);
}

void redis_async_free(struct redis_async *r)
{
    if (!r) return;
    /* Pending commands are failed by redisAsyncFree; they must not touch r. */
    struct list_node *n, *next;
    list_for_each_safe(n, next, &r->pending) {
        list_remove(n);
        list_entry(n, struct redis_pending, link)->owner = NULL;
    }
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    uv_timer_stop(&r->watchdog);
    r->watchdog.data = r;
    uv_close((uv_handle_t *)&r->watchdog, redis_async_free_after_close);
}
