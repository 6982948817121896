/* worker_blocking: the blocking driver: runs an exchange doing each backend operation in turn (sync and thread classes). */
#define _GNU_SOURCE
#include "worker/worker_blocking.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void worker_run_blocking(struct exchange *ex, struct blocking_backends *b, struct worker_request *wr)
{
    struct backend_result res;
    PGresult *pg = NULL;
    worker_request_doing(wr, ex, INFLIGHT_CPU);
    enum step s = exchange_step(ex, NULL);
    while (s == STEP_BACKEND) {
        memset(&res, 0, sizeof res);
        worker_request_doing(wr, ex, INFLIGHT_WAITING);
        switch (ex->op.kind) {
        case BACKEND_REDIS:
            redis_client_run(b->redis, &ex->op, &res);
            break;
        case BACKEND_PG:
            pg = pg_pool_run(b->pool, &ex->op, ex->deadline_ms, &res);
            break;
        case BACKEND_HTTP: {
            char err[160];
            if (!b->http && !(b->http = http_client_new(err, sizeof err))) {
                res.status = BACKEND_DOWN;
                snprintf(res.message, sizeof res.message, "%s", err);
                break;
            }
            http_client_run(b->http, &ex->op, ex->deadline_ms, &res);
            break;
        }
        case BACKEND_SLEEP:
            sleep_ms(ex->op.sleep_ms);
            res.status = BACKEND_OK;
            break;
        case BACKEND_NONE:
            break;
        }
        worker_request_doing(wr, ex, INFLIGHT_CPU);
        s = exchange_step(ex, &res);
        PQclear(pg);
        pg = NULL;
    }
    worker_request_doing(wr, ex, INFLIGHT_ANSWERING);
}
