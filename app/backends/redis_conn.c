/* redis_conn: a Redis connection's rules, once for both clients: timeouts, reconnect backoff, the AUTH/SELECT handshake, what a reply means. */
#include "backends/redis_conn.h"

#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

void redis_conn_handshake(const struct redis_address *a, struct redis_handshake *hs)
{
    hs->n = 0;
    if (a->password[0]) {
        struct redis_handshake_cmd *c = &hs->cmd[hs->n++];
        *c = (struct redis_handshake_cmd){2, {"AUTH", a->password}, {4, strlen(a->password)}};
    }
    if (a->db) {
        snprintf(hs->db, sizeof hs->db, "%d", a->db);
        struct redis_handshake_cmd *c = &hs->cmd[hs->n++];
        *c = (struct redis_handshake_cmd){2, {"SELECT", hs->db}, {6, strlen(hs->db)}};
    }
}

int redis_conn_handshake_ok(const redisReply *r, const char *conn_err, char *err, size_t errlen)
{
    if (r && r->type != REDIS_REPLY_ERROR) return 0;
    snprintf(err, errlen, "%s", r ? r->str : conn_err);
    return -1;
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

void redis_conn_down(struct backend_result *res, const char *why)
{
    res->status = BACKEND_DOWN;
    snprintf(res->message, sizeof res->message, "redis: %s", why);
}

int redis_backoff_waiting(const struct redis_backoff *b, double now_ms)
{
    return now_ms < b->retry_after_ms;
}

void redis_backoff_failed(struct redis_backoff *b, double now_ms)
{
    b->retry_after_ms = now_ms + REDIS_RETRY_MS;
}
