/* pg_pool: a worker process's PostgreSQL connections, shared by its threads. */
#ifndef PERFCGI_PG_POOL_H
#define PERFCGI_PG_POOL_H

#include <stdint.h>

#include <libpq-fe.h>

#include "core/backend.h"
#include "base/settings.h"

struct pg_pool;

/* Connections open lazily, on first checkout. NULL when out of memory. */
struct pg_pool *pg_pool_new(const struct settings *cfg);
void pg_pool_free(struct pg_pool *pool);

/*
 * Checks out a connection (waiting up to pool_timeout), runs the query of op
 * and checks the connection back in. res->values point into the returned
 * PGresult, which the caller PQclear()s once done with them (NULL on failure).
 * The query is cancelled if it runs past deadline_ms (monotonic).
 */
PGresult *pg_pool_run(struct pg_pool *pool, const struct backend_op *op, double deadline_ms,
                      struct backend_result *res);

struct pg_pool_stats {
    int open, busy; /* connections now, and how many are checked out */
    uint64_t checkouts, timeouts, connects, connect_failures;
};
void pg_pool_stats(struct pg_pool *pool, struct pg_pool_stats *out);

/* Connections above pool_size (overflow) stay open once idle, for the next
 * request, until idle this long: long enough that a steady load above
 * pool_size reuses them (each new connection costs PostgreSQL a backend
 * fork, far more than the query), short enough that a burst's extra
 * connections go soon after it. */
#define PG_OVERFLOW_LINGER_MS 2000
/* How often the pools look for overflow connections past their linger time. */
#define PG_OVERFLOW_SWEEP_MS (PG_OVERFLOW_LINGER_MS / 2)
/* Shared with pg_async: 1 when an idle connection of a pool with `open` of
 * them, `size` kept, idle since idle_since_ms, is overflow past its linger. */
int pg_overflow_expired(int open, int size, double idle_since_ms, double now_ms);
/* Closes the idle overflow connections past their linger time (the thread
 * class's main thread calls it every PG_OVERFLOW_SWEEP_MS); how many. */
int pg_pool_trim(struct pg_pool *pool);

/* Shared with pg_async. An idle connection is usable unless the server
 * closed it or said goodbye; checked without a round trip. */
int pg_conn_healthy(PGconn *conn);
/* What a query's final result means: OK, DOWN (connection lost, server
 * shutting down), DEADLINE (cancelled) or FAILED; err gets the message. */
enum backend_status pg_result_status(PGconn *conn, const PGresult *r, char *err, size_t errlen);
/* Asks the server to cancel what conn runs (a short blocking exchange on a
 * connection of its own: libpq 15 has no non-blocking cancel). */
void pg_conn_cancel(PGconn *conn);
/* Keeps libpq's notices (a shutting-down server's farewell) off stderr. */
void pg_conn_quiet(PGconn *conn);
/* Points res at the first row of r. */
void pg_result_fill(const PGresult *r, struct backend_result *res);

/* SELECT 1 on a connection of its own: 0 when PostgreSQL answers. */
int pg_ping(const char *conninfo, int timeout_ms, char *err, size_t errlen);

#endif
