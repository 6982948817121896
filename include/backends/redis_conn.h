/* redis_conn: a Redis connection's rules, once for both clients: timeouts, reconnect backoff, the AUTH/SELECT handshake, what a reply means. */
#ifndef PERFCGI_REDIS_CONN_H
#define PERFCGI_REDIS_CONN_H

#include <stddef.h>

#include "core/backend.h"
#include "base/redis_url.h"

/*
 * redis_client (blocking hiredis) and redis_async (hiredis on libuv) follow
 * these rules and supply only the I/O.
 */

/* A command slower than this counts as Redis being down (the cache is an
 * optimisation: better to bypass it than to stall the request). */
#define REDIS_TIMEOUT_MS 1000
/* After a failed connect, answer "down" at once for this long instead of
 * making every request pay for a connect attempt. */
#define REDIS_RETRY_MS 500

/* The commands a new connection runs before any other, in order: AUTH when
 * the URL has a password, SELECT when it names a database other than 0. */
struct redis_handshake {
    int n;
    struct redis_handshake_cmd {
        int argc;
        const char *argv[2];
        size_t argvlen[2];
    } cmd[2];
    char db[12]; /* SELECT's argument */
};
/* Fills hs for a; its strings point into a and hs, which must outlive it. */
void redis_conn_handshake(const struct redis_address *a, struct redis_handshake *hs);

/* Judges a handshake command's reply (NULL: the connection failed, with
 * conn_err): 0 when it went through, else -1 with err. */
struct redisReply;
int redis_conn_handshake_ok(const struct redisReply *r, const char *conn_err, char *err, size_t errlen);

/* Points res at a hiredis reply: BACKEND_OK, and what kind of reply it is. */
void redis_reply_fill(const struct redisReply *r, struct backend_result *res);

/* Fills res as "Redis is down", with why in its message. */
void redis_conn_down(struct backend_result *res, const char *why);
#define REDIS_MSG_RECONNECTING "reconnecting"

/* When a client may try to connect again after a failure. */
struct redis_backoff {
    double retry_after_ms;
};
/* 1 while a connect failed less than REDIS_RETRY_MS before now_ms: answer "down" at once. */
int redis_backoff_waiting(const struct redis_backoff *b, double now_ms);
/* A connect failed, or a connection was dropped as stalled, at now_ms. */
void redis_backoff_failed(struct redis_backoff *b, double now_ms);

#endif
