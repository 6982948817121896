/* worker_blocking: the blocking driver: runs an exchange doing each backend operation in turn (sync and thread classes). */
#ifndef PERFCGI_WORKER_BLOCKING_H
#define PERFCGI_WORKER_BLOCKING_H

#include "backends/http_client.h"
#include "backends/pg_pool.h"
#include "backends/redis_client.h"
#include "core/exchange.h"
#include "worker/worker_request.h"

/* The backends of one thread of a blocking worker class. */
struct blocking_backends {
    struct redis_client *redis;
    struct pg_pool *pool;
    struct http_client *http; /* made by the first upstream request */
};

/* Runs an exchange to its answer, doing each backend operation blocking, and
 * says in wr's record what it does. */
void worker_run_blocking(struct exchange *ex, struct blocking_backends *b, struct worker_request *wr);

#endif
