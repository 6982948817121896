/* pg_async: the event worker's PostgreSQL pool: libpq's non-blocking calls on the loop, under pg_policy's rules. */
#ifndef PERFCGI_PG_ASYNC_H
#define PERFCGI_PG_ASYNC_H

#include <uv.h>

#include "core/backend.h"
#include "backends/pg_policy.h"
#include "base/settings.h"

struct pg_async;

/*
 * Called once per pg_async_run with the outcome; res->values point into
 * result, which the pool clears after the callback returns (NULL on failure).
 */
typedef void (*pg_async_cb)(void *ctx, const struct backend_result *res);

/* Called with the pool's figures after it closed idle overflow connections
 * by itself (no request saw it happen). */
typedef void (*pg_async_trimmed_cb)(const struct pg_pool_stats *stats);

/* Connections open lazily; waiters queue and fail with BACKEND_POOL_TIMEOUT
 * after pool_timeout. Overflow connections linger PG_OVERFLOW_LINGER_MS once
 * idle; trimmed (may be NULL) hears when they go. */
struct pg_async *pg_async_new(uv_loop_t *loop, const struct settings *cfg, pg_async_trimmed_cb trimmed);
/* Closes every connection; pending callbacks run first with BACKEND_DOWN. */
void pg_async_free(struct pg_async *pool);

/* Runs op's query on a pooled connection, dropping the connection at deadline_ms
 * (monotonic) without waiting for the server.
 * op and its strings must live until cb runs. */
void pg_async_run(struct pg_async *pool, const struct backend_op *op, double deadline_ms, pg_async_cb cb, void *ctx);

void pg_async_stats(const struct pg_async *pool, struct pg_pool_stats *out);

#endif
