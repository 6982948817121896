/* pg_pool: a worker process's PostgreSQL connections, shared by its threads (blocking I/O under pg_policy's rules). */
#ifndef PERFCGI_PG_POOL_H
#define PERFCGI_PG_POOL_H

#include <libpq-fe.h>

#include "core/backend.h"
#include "backends/pg_policy.h"
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

void pg_pool_stats(struct pg_pool *pool, struct pg_pool_stats *out);

/* Closes the idle overflow connections past their linger time (the thread
 * class's main thread calls it every PG_OVERFLOW_SWEEP_MS); how many. */
int pg_pool_trim(struct pg_pool *pool);

/* SELECT 1 on a connection of its own: 0 when PostgreSQL answers. */
int pg_ping(const char *conninfo, int timeout_ms, char *err, size_t errlen);

#endif
