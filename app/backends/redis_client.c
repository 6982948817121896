/* redis_client: a blocking Redis connection that reconnects by itself. */
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
    double retry_after_ms;
};

static redisContext *connect_to(const struct redis_address *a, int timeout_ms, char *err, size_t errlen)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *ctx = a->unix_path[0] ? redisConnectUnixWithTimeout(a->unix_path, tv)
                                        : redisConnectWithTimeout(a->host, a->port, tv);
    if (!ctx || ctx->err) goto fail;
    if (redisSetTimeout(ctx, tv) != REDIS_OK) goto fail;
    redisReply *r = NULL;
    if (a->password[0]) {
        r = redisCommand(ctx, "AUTH %s", a->password);
        if (!r || r->type == REDIS_REPLY_ERROR) goto fail_reply;
        freeReplyObject(r);
    }
    if (a->db) {
        r = redisCommand(ctx, "SELECT %d", a->db);
        if (!r || r->type == REDIS_REPLY_ERROR) goto fail_reply;
        freeReplyObject(r);
    }
    return ctx;
fail_reply:
    snprintf(err, errlen, "%s", r ? r->str : ctx->errstr);
    if (r) freeReplyObject(r);
    redisFree(ctx);
    return NULL;
fail:
    snprintf(err, errlen, "%s", ctx ? ctx->errstr : "out of memory");
    if (ctx) redisFree(ctx);
    return NULL;
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
static int ensure_connected(struct redis_client *c, struct backend_result *res)
{
    if (c->ctx) return 0;
    res->status = BACKEND_DOWN;
    if (clock_ms() < c->retry_after_ms) {
        snprintf(res->message, sizeof res->message, "redis: reconnecting");
        return -1;
    }
    c->ctx = connect_to(&c->addr, REDIS_TIMEOUT_MS, res->message, sizeof res->message);
    if (!c->ctx) {
        c->retry_after_ms = clock_ms() + REDIS_RETRY_MS;
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
        if (ensure_connected(c, res) != 0) return;
        r = redisCommandArgv(c->ctx, op->argc, (const char **)op->argv, op->argvlen); /* 0.14 lacks const */
        if (!r) {
            snprintf(res->message, sizeof res->message, "redis: %s", c->ctx->errstr);
            redisFree(c->ctx);
            c->ctx = NULL;
            if (!reused) break;
        }
    }
    if (!r) {
        res->status = BACKEND_DOWN;
        return;
    }
    c->last = r;
    redis_reply_fill(r, res);
}

void redis_reply_fill(const redisReply *r, struct backend_result *res)
{
    res->status = BACKEND_OK;
    switch (r->type) {
    case REDIS_REPLY_NIL: res->redis_kind = REDIS_NIL; break;
    case REDIS_REPLY_STRING: res->redis_kind = REDIS_STRING; break;
    case REDIS_REPLY_STATUS: res->redis_kind = REDIS_STATUS; break;
    case REDIS_REPLY_ERROR: res->redis_kind = REDIS_ERROR; break;
    case REDIS_REPLY_INTEGER: res->redis_kind = REDIS_INTEGER; break;
    default: res->redis_kind = REDIS_OTHER; break;
    }
    res->str = r->str;
    res->len = r->len;
    res->integer = r->integer;
}

int redis_client_ping(const char *url, int timeout_ms, char *err, size_t errlen)
{
    struct redis_address a;
    if (redis_url_parse(url, &a, err, errlen) != 0) return -1;
    redisContext *ctx = connect_to(&a, timeout_ms, err, errlen);
    if (!ctx) return -1;
    redisReply *r = redisCommand(ctx, "PING");
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok) snprintf(err, errlen, "%s", r ? r->str : ctx->errstr);
    if (r) freeReplyObject(r);
    redisFree(ctx);
    return ok ? 0 : -1;
}
