/* worker_request: the bookkeeping around each request of any class: scoreboard, access log, max_requests. */
#ifndef PERFCGI_WORKER_REQUEST_H
#define PERFCGI_WORKER_REQUEST_H

#include <stdint.h>

#include "backends/pg_pool.h"
#include "base/list.h"
#include "base/settings.h"
#include "core/exchange.h"
#include "worker/worker.h"
#include "worker/worker_inflight.h"

/* One request in flight, kept by the driver next to its exchange: the worker
 * publishes how many are in flight and since when the oldest, so the master
 * can tell a hung worker of any class. */
struct worker_request {
    struct list_node link; /* in the worker's in-flight list, oldest first */
    int64_t started_us;    /* since when it is in flight, its params being read included */
    int64_t begun_us;      /* since when its answer is being made */
    int reading;           /* in flight since worker_request_reading, not begun yet */
    char uri[128];         /* "GET /path?query", for the master's log if it hangs */
    int rec;               /* its record in the scoreboard (worker_inflight), or -1 */
    int steps;             /* backend operations it has asked for */
};
/* A request whose params are still being read is in flight too: the master's
 * `timeout` covers a peer that stops half-way. Then either begin, or drop if
 * the request could not be read. */
void worker_request_reading(struct worker_request *wr);
/* Several threads will serve (the thread class): called before they start. */
void worker_request_threaded(void);
void worker_request_drop(struct worker_request *wr);
void worker_request_begin(struct worker_request *wr, const struct exchange *ex);
/* What the request does now, for the slowlog and /status?full: runs its
 * endpoint, waits on ex->op (counted as one more step), or writes its answer. */
void worker_request_doing(struct worker_request *wr, const struct exchange *ex, enum inflight_doing doing);
void worker_request_end(const struct worker_env *env, struct worker_request *wr, const struct exchange *ex,
                        const struct pg_pool_stats *pool);
/* Shows the pool's figures in /status and /metrics: at each request's end,
 * and when a pool closed idle connections by itself. */
void worker_publish_pool(const struct pg_pool_stats *pool);

/* max_requests plus this worker's share of the jitter: drawn once at
 * start-up, before any thread serves. */
void worker_request_limit_draw(const struct settings *cfg);
/* max_requests (plus jitter) is a bound: a worker takes one of its requests
 * before it accepts a connection (1), or learns it has none left (0); it then
 * takes no more and waits to be retired. A take that accepted nothing is
 * given back. worker_at_limit(): every request taken. */
int worker_take_request(void);
void worker_give_back_request(void);
int worker_at_limit(void);

#endif
