/* redis_client: a blocking Redis connection that reconnects by itself (blocking I/O under redis_conn's rules). */
#include "backends/redis_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "base/clock.h"

struct redis_client {
    struct redis_address addr;
    redisContext *ctx;
    redisReply *last;
    struct redis_backoff backoff;
};

/* Connects and runs the handshake, each step bounded by timeout_ms. */
static redisContext *redis_client_connect(const struct redis_address *a, int timeout_ms, char *err, size_t errlen)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *ctx = a->unix_path[0] ? redisConnectUnixWithTimeout(a->unix_path, tv)
                                        : redisConnectWithTimeout(a->host, a->port, tv);
    if (!ctx || ctx->err || redisSetTimeout(ctx, tv) != REDIS_OK) {
        snprintf(err, errlen, "%s", ctx ? ctx->errstr : "out of memory");
        if (ctx) redisFree(ctx);
        return NULL;
    }
    struct redis_handshake hs;
    redis_conn_handshake(a, &hs);
    for (int i = 0; i < hs.n; i++) {
        redisReply *r = redisCommandArgv(ctx, hs.cmd[i].argc, hs.cmd[i].argv, hs.cmd[i].argvlen);
        int ok = redis_conn_handshake_ok(r, ctx->errstr, err, errlen) == 0;
        if (r) freeReplyObject(r);
        if (!ok) {
            redisFree(ctx);
            return NULL;
        }
    }
    return ctx;
}

struct redis_client *redis_client_new(const char *url, char *err, size_t errlen)
{
    struct redis_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (redis_url_parse(url, &c->addr, err, errlen) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

void redis_client_free(struct redis_client *c)
{
    if (!c) return;
    if (c->last) freeReplyObject(c->last);
    if (c->ctx) redisFree(c->ctx);
    free(c);
}

/* Connects unless connected, or unless a connect failed just now. */
static int redis_client_ensure_connected(struct redis_client *c, struct backend_result *res)
{
    if (c->ctx) return 0;
    if (redis_backoff_waiting(&c->backoff, clock_ms())) {
        redis_conn_down(res, REDIS_MSG_RECONNECTING);
        return -1;
    }
    char err[sizeof res->message];
    c->ctx = redis_client_connect(&c->addr, REDIS_TIMEOUT_MS, err, sizeof err);
    if (!c->ctx) {
        redis_backoff_failed(&c->backoff, clock_ms());
        redis_conn_down(res, err);
        return -1;
    }
    return 0;
}

void redis_client_run(struct redis_client *c, const struct backend_op *op, struct backend_result *res)
{
    memset(res, 0, sizeof *res);
    if (c->last) {
        freeReplyObject(c->last);
        c->last = NULL;
    }
    redisReply *r = NULL;
    /* A connection kept from earlier may have died with a Redis restart:
     * then one retry on a fresh connection. */
    for (int attempt = 0; attempt < 2 && !r; attempt++) {
        int reused = c->ctx != NULL;
        if (redis_client_ensure_connected(c, res) != 0) return;
        r = redisCommandArgv(c->ctx, op->argc, (const char **)op->argv, op->argvlen); /* 0.14 lacks const */
        if (!r) {
            redis_conn_down(res, c->ctx->errstr);
            redisFree(c->ctx);
            c->ctx = NULL;
            if (!reused) break;
        }
    }
    if (!r) return;
    c->last = r;
    redis_reply_fill(r, res);
}

int redis_client_ping(const char *url, int timeout_ms, char *err, size_t errlen)
{
    struct redis_address a;
    if (redis_url_parse(url, &a, err, errlen) != 0) return -1;
    redisContext *ctx = redis_client_connect(&a, timeout_ms, err, errlen);
    if (!ctx) return -1;
    redisReply *r = redisCommand(ctx, "PING");
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok) snprintf(err, errlen, "%s", r ? r->str : ctx->errstr);
    if (r) freeReplyObject(r);
    redisFree(ctx);
    return ok ? 0 : -1;
}
