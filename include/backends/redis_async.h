/* redis_async: the event worker's Redis connection: hiredis's async API on the libuv loop, under redis_conn's rules. */
#ifndef PERFCGI_REDIS_ASYNC_H
#define PERFCGI_REDIS_ASYNC_H

#include <stddef.h>

#include <uv.h>

#include "core/backend.h"

struct redis_async;

/* Called once per command; res points into the reply only during the call.
 * A call made before redis_async_run returns carries no reply (only a failure). */
typedef void (*redis_async_cb)(void *ctx, const struct backend_result *res);

/* Does not connect: the first command does. NULL with err on a bad URL. */
struct redis_async *redis_async_new(uv_loop_t *loop, const char *url, char *err, size_t errlen);
/* Fails pending commands with BACKEND_DOWN and closes the connection. */
void redis_async_free(struct redis_async *r);
/* Sends one command (pipelined behind the others); argv must live until cb. */
void redis_async_run(struct redis_async *r, const struct backend_op *op, redis_async_cb cb, void *ctx);

#endif
