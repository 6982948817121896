/* worker_request: the bookkeeping around each request of any class: scoreboard, access log, max_requests. */
#define _GNU_SOURCE
#include "worker/worker_request.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/scoreboard.h"
#include "base/self.h"
#include "core/endpoint.h"
#include "core/routes.h"

/* max_requests plus this worker's share of the jitter (0 = never), drawn once
 * at start-up, before any thread serves; and the requests taken so far. */
static long request_limit;
static atomic_long requests_taken;

void worker_request_limit_draw(const struct settings *cfg)
{
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    long jitter = cfg->max_requests_jitter ? (long)(rand_r(&seed) % (cfg->max_requests_jitter + 1)) : 0;
    request_limit = cfg->max_requests ? cfg->max_requests + jitter : 0;
}

/* The requests in flight, oldest first (requests begin in time order). */
static pthread_mutex_t inflight_lock = PTHREAD_MUTEX_INITIALIZER;
/* Only the thread class serves from several threads: the others take no lock. */
static int inflight_shared;

void worker_request_threaded(void)
{
    inflight_shared = 1;
}

static void inflight_lock_take(void)
{
    if (inflight_shared) pthread_mutex_lock(&inflight_lock);
}

static void inflight_lock_give(void)
{
    if (inflight_shared) pthread_mutex_unlock(&inflight_lock);
}
static struct list_node inflight = {&inflight, &inflight};
static int inflight_count;

static void publish_inflight(void)
{
    struct list_node *first = list_first(&inflight);
    const struct worker_request *oldest = first ? list_entry(first, struct worker_request, link) : NULL;
    scoreboard_set_busy(scoreboard_self, inflight_count, oldest ? oldest->started_us : 0, oldest ? oldest->uri : "");
}

/* now_us: the clock the caller read anyway; the first request in and the last
 * out mark the worker busy and idle (its busy seconds). */
static void inflight_link(struct worker_request *wr, int64_t now_us)
{
    list_push_back(&inflight, &wr->link);
    if (inflight_count++ == 0) scoreboard_busy(scoreboard_self, 1, now_us);
}

static void inflight_unlink(struct worker_request *wr, int64_t now_us)
{
    list_remove(&wr->link);
    if (--inflight_count == 0) scoreboard_busy(scoreboard_self, 0, now_us);
}

void worker_request_reading(struct worker_request *wr)
{
    wr->started_us = clock_us();
    wr->reading = 1;
    static const char reading[] = "(reading a request)";
    _Static_assert(sizeof reading <= sizeof wr->uri, "the placeholder fits");
    memcpy(wr->uri, reading, sizeof reading);
    wr->steps = 0;
    wr->rec = worker_inflight_take(wr->started_us);
    inflight_lock_take();
    inflight_link(wr, wr->started_us);
    publish_inflight();
    inflight_lock_give();
}

void worker_request_drop(struct worker_request *wr)
{
    int64_t now_us = clock_us();
    inflight_lock_take();
    inflight_unlink(wr, now_us);
    wr->reading = 0;
    publish_inflight();
    inflight_lock_give();
    worker_inflight_release(wr->rec);
}

void worker_request_begin(struct worker_request *wr, const struct exchange *ex)
{
    wr->begun_us = clock_us();
    const struct request *q = &ex->req;
    inflight_lock_take();
    /* "METHOD /path?query", cut on a whole character when it does not fit. */
    const char *parts[] = {q->method, " ", q->path, q->query[0] ? "?" : "", q->query};
    size_t at = 0;
    int cut = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0] && !cut; i++) {
        size_t n = strlen(parts[i]);
        if (n >= sizeof wr->uri - at) {
            n = sizeof wr->uri - 1 - at;
            cut = 1;
        }
        memcpy(wr->uri + at, parts[i], n);
        at += n;
    }
    wr->uri[at] = '\0';
    if (cut) scoreboard_cut_utf8(wr->uri);
    if (wr->reading) { /* already in flight, in its place by age */
        wr->reading = 0;
    } else {
        wr->started_us = wr->begun_us;
        wr->steps = 0;
        wr->rec = worker_inflight_take(wr->started_us);
        inflight_link(wr, wr->begun_us);
    }
    worker_inflight_uri(wr->rec, wr->uri);
    scoreboard_set_uri(scoreboard_self, wr->uri);
    publish_inflight();
    inflight_lock_give();
}

int worker_take_request(void)
{
    if (!request_limit) return 1;
    if (atomic_fetch_add(&requests_taken, 1) < request_limit) return 1;
    atomic_fetch_sub(&requests_taken, 1);
    return 0;
}

void worker_give_back_request(void)
{
    if (request_limit) atomic_fetch_sub(&requests_taken, 1);
}

int worker_at_limit(void)
{
    return request_limit && atomic_load(&requests_taken) >= request_limit;
}

void worker_publish_pool(const struct pg_pool_stats *pool)
{
    struct scoreboard_slot *s = scoreboard_self;
    if (!s) return;
    atomic_store(&s->pool_open, pool->open);
    atomic_store(&s->pool_busy, pool->busy);
    s->counters.pool_checkouts = pool->checkouts;
    s->counters.pool_timeouts = pool->timeouts;
    s->counters.pool_connects = pool->connects;
    s->counters.pool_connect_failures = pool->connect_failures;
}

/* Queue wait: from the time the front end stamped on the request (REQUEST_START,
 * its wall clock) to when this worker took it up (wr->started_us, monotonic, put
 * on the wall clock now_us by the time since end_us). Clocks of two hosts may
 * disagree by more than the wait: a negative wait counts as 0. -1: no stamp. */
static int64_t queue_wait(const struct worker_request *wr, const struct request *q, int64_t end_us, int64_t now_us)
{
    if (!(q->request_start > 0)) return -1;
    int64_t wait_us = now_us - (end_us - wr->started_us) - (int64_t)(q->request_start * 1e6 + 0.5);
    return wait_us > 0 ? wait_us : 0;
}

/* The access line; now_us: the wall clock at end_us, queue_wait_us: -1 for none. */
static void log_request(const struct settings *cfg, const struct exchange *ex, int64_t now_us,
                        int64_t queue_wait_us, int64_t took_us)
{
    if (!log_access_on()) return;
    const struct request *q = &ex->req;
    struct access_record r = {
        .remote_addr = q->remote_addr, .method = q->method, .path = q->path, .query = q->query,
        .request_uri = q->request_uri, .request_id = q->request_id, .endpoint = ex->route ? ex->route->name : NULL,
        .worker_class = settings_class_name(cfg->worker_class), .status = ex->resp.status,
        .body_bytes = ex->head_only ? 0 : ex->resp.body_len, .took_us = took_us, .now_us = now_us,
        .queue_wait_us = queue_wait_us, .pid = (long)self_pid(),
    };
    log_access(&r);
}

void worker_request_doing(struct worker_request *wr, const struct exchange *ex, enum inflight_doing doing)
{
    if (doing == INFLIGHT_WAITING) wr->steps++;
    worker_inflight_state(wr->rec, ex, wr->steps, doing);
}

void worker_request_end(const struct worker_env *env, struct worker_request *wr, const struct exchange *ex,
                        const struct pg_pool_stats *pool)
{
    struct scoreboard_slot *s = scoreboard_self;
    const struct settings *cfg = env->cfg;
    int route = route_index(ex->route);
    int64_t end_us = clock_us(), took_us = end_us - wr->begun_us;
    /* The wall clock only when something needs it: a stamped request or the access log. */
    int64_t now_us = ex->req.request_start > 0 || log_access_on() ? (int64_t)(clock_wall_s() * 1e6) : 0;
    int64_t wait_us = queue_wait(wr, &ex->req, end_us, now_us);
    inflight_lock_take();
    inflight_unlink(wr, end_us);
    scoreboard_count(s, route, ex->resp.status, ex->resp.x_cache, took_us, cfg->timeout * 1e3 / 2);
    if (wait_us >= 0) scoreboard_count_wait(s, route, wait_us);
    publish_inflight();
    inflight_lock_give();
    worker_inflight_release(wr->rec);
    log_request(cfg, ex, now_us, wait_us, took_us);
    if (!s) return;
    if (ex->pool_wait_ms > 0)
        __atomic_fetch_add(&s->counters.pool_wait_us, (uint64_t)(ex->pool_wait_ms * 1e3), __ATOMIC_RELAXED);
    if (pool) worker_publish_pool(pool);
    long limit = request_limit;
    if (limit && (long)atomic_load(&s->requests) >= limit && !atomic_exchange(&s->wants_retire, 1)) {
        log_debug("served %ld requests; asking to be replaced", limit);
        worker_wake_master(env);
    }
}

