/* endpoint /cached-data: a category's aggregates, cache-aside in Redis with stampede protection. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "core/endpoint.h"

static const char SQL_CATEGORY_STATS[] =
    "SELECT count(*), sum(value), round(avg(value), 4), min(value), max(value) "
    "FROM items WHERE category = $1";

/* Returns the cached value, or takes the recompute lock (1), or reports that
 * another worker holds it (0): one round trip, atomically. */
static const char LUA_GET_OR_LOCK[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if v then return v end "
    "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
    "return 0";

/* Stores the value and releases the lock if this request still owns it. */
static const char LUA_STORE_AND_UNLOCK[] =
    "if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end "
    "if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end "
    "return 1";

/* Waiters poll for the winner's result at these intervals: capped at 5 ms, so a
 * waiter answers at most 5 ms after the result is stored. A cold key's wave through
 * Nginx (whose lock waiters come here after 5 ms) then lasts about one computation:
 * its first requests wait that long, and a load tool that corrects for coordinated
 * omission counts every request it would have sent meanwhile as waiting too. 64
 * waiters cost Redis some 13,000 cheap reads a second while a computation lasts. */
#define LOCK_POLL_FIRST_MS 2
#define LOCK_POLL_MAX_MS 5

/* Which operation the exchange waits on. */
enum cached_data_at { CACHED_GET, CACHED_GET_OR_LOCK, CACHED_WAITED, CACHED_QUERY, CACHED_STORE };

struct cached_data_state {
    long category;
    enum cached_data_at at;
    /* the operations' arguments, which live until their results come */
    char key[48], lock_key[48], token[48];
    char category_arg[24], lock_ms_arg[24], ttl_arg[24];
    char *value; /* what the store writes, malloc'd */
    double wait_until_ms; /* waiters stop polling and compute it themselves */
    int poll_ms;
    int bypass;    /* Redis failed: straight to PostgreSQL, nothing stored */
    int lock_held; /* this request took the recompute lock */
};
ENDPOINT_STATE_FITS(struct cached_data_state);

static int cached_data_parse(struct exchange *ex)
{
    struct cached_data_state *s = exchange_state(ex);
    return endpoint_param_long(ex, "category", 7, 0, 99, &s->category);
}

/* How long the recompute lock lives, and how long others wait for it: the
 * winner may wait pool_timeout for a connection, then run the query. */
static long cached_data_lock_ms(const struct exchange *ex)
{
    return (long)(ex->cfg->pool_timeout * 1e3) + 5000;
}

static enum step cached_data_answer(struct exchange *ex, json_t *stats, const char *source, long ttl)
{
    struct cached_data_state *s = exchange_state(ex);
    json_t *obj = json_pack("{s:I,s:s,s:O,s:I}", "category", (json_int_t)s->category, "source", source,
                            "stats", stats, "ttl", (json_int_t)ttl);
    return exchange_reply(ex, obj);
}

/* A cached value is {"stats":{...},"expires_at":EPOCH}; 0 if v is one. */
static int cached_data_hit(struct exchange *ex, const char *v, size_t len)
{
    json_t *doc = json_loadb(v, len, 0, NULL);
    json_t *stats = json_object_get(doc, "stats");
    json_t *expires = json_object_get(doc, "expires_at");
    if (!json_is_object(stats) || !json_is_number(expires)) {
        json_decref(doc);
        return -1;
    }
    /* Whole seconds left, rounded up in integers (no libm: see decimal_round). */
    double left = json_number_value(expires) - clock_wall_s();
    long ttl = (long)left;
    if (ttl < left) ttl++;
    if (ttl < 1) ttl = 1;
    ex->resp.x_cache = "HIT";
    cached_data_answer(ex, stats, "cache", ttl);
    json_decref(doc);
    return 0;
}

static enum step cached_data_query(struct exchange *ex)
{
    struct cached_data_state *s = exchange_state(ex);
    snprintf(s->category_arg, sizeof s->category_arg, "%ld", s->category);
    const char *params[] = {s->category_arg};
    s->at = CACHED_QUERY;
    return backend_pg(&ex->op, SQL_CATEGORY_STATS, 1, params);
}

static enum step cached_data_bypass(struct exchange *ex)
{
    struct cached_data_state *s = exchange_state(ex);
    s->bypass = 1;
    s->lock_held = 0;
    return cached_data_query(ex);
}

static enum step cached_data_get_or_lock(struct exchange *ex)
{
    struct cached_data_state *s = exchange_state(ex);
    snprintf(s->lock_ms_arg, sizeof s->lock_ms_arg, "%ld", cached_data_lock_ms(ex));
    const char *argv[] = {"EVAL", LUA_GET_OR_LOCK, "2", s->key, s->lock_key, s->token, s->lock_ms_arg};
    s->at = CACHED_GET_OR_LOCK;
    return backend_redis(&ex->op, 7, argv);
}

static json_t *cached_data_stats(const struct backend_result *res)
{
    if (res->nrows != 1 || res->ncols != 5 || !res->values[0]) return NULL;
    json_t *stats = json_object();
    json_object_set_new(stats, "count", json_integer(strtoll(res->values[0], NULL, 10)));
    static const char *const names[] = {"sum", "avg", "min", "max"};
    for (int i = 0; i < 4; i++)
        json_object_set_new(stats, names[i], res->values[i + 1] ? json_string(res->values[i + 1]) : json_null());
    return stats;
}

/* The query answered: build the answer, then store it and release the lock. */
static enum step cached_data_computed(struct exchange *ex, const struct backend_result *res)
{
    struct cached_data_state *s = exchange_state(ex);
    json_t *stats = res->status == BACKEND_OK ? cached_data_stats(res) : NULL;
    if (!stats) {
        if (res->status != BACKEND_OK)
            exchange_backend_error(ex, res, "postgresql");
        else
            exchange_error(ex, 500, "internal_error", "unexpected aggregate result");
        if (!s->lock_held) return STEP_DONE;
        s->value = strdup(""); /* only release the lock */
    } else {
        ex->resp.x_cache = s->bypass ? "BYPASS" : "MISS";
        json_t *doc = json_pack("{s:O,s:f}", "stats", stats, "expires_at", clock_wall_s() + ex->cfg->cache_ttl);
        s->value = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15));
        json_decref(doc);
        cached_data_answer(ex, stats, "database", ex->cfg->cache_ttl);
        json_decref(stats);
        if (s->bypass || !s->value) return STEP_DONE;
    }
    /* The answer is ready; one more round trip stores it for the others. */
    snprintf(s->ttl_arg, sizeof s->ttl_arg, "%d", ex->cfg->cache_ttl);
    const char *argv[] = {"EVAL", LUA_STORE_AND_UNLOCK, "2", s->key, s->lock_key, s->value, s->ttl_arg, s->token};
    s->at = CACHED_STORE;
    return backend_redis(&ex->op, 8, argv);
}

static enum step cached_data_step(struct exchange *ex, const struct backend_result *res)
{
    struct cached_data_state *s = exchange_state(ex);
    if (!res) {
        snprintf(s->key, sizeof s->key, "perfcgi:cached-data:%ld", s->category);
        snprintf(s->lock_key, sizeof s->lock_key, "perfcgi:cached-data:%ld:lock", s->category);
        const char *argv[] = {"GET", s->key};
        s->at = CACHED_GET;
        return backend_redis(&ex->op, 2, argv);
    }
    switch (s->at) {
    case CACHED_GET:
        if (res->status != BACKEND_OK || res->redis_kind == REDIS_ERROR) return cached_data_bypass(ex);
        if (res->redis_kind == REDIS_STRING && cached_data_hit(ex, res->str, res->len) == 0) return STEP_DONE;
        /* A miss (or a value that does not parse): take the lock or wait. */
        snprintf(s->token, sizeof s->token, "%ld:%p:%.0f", (long)getpid(), (void *)ex, ex->started_ms * 1e3);
        s->wait_until_ms = ex->started_ms + (double)cached_data_lock_ms(ex);
        return cached_data_get_or_lock(ex);
    case CACHED_GET_OR_LOCK:
        if (res->status != BACKEND_OK || res->redis_kind == REDIS_ERROR) return cached_data_bypass(ex);
        if (res->redis_kind == REDIS_STRING && cached_data_hit(ex, res->str, res->len) == 0) return STEP_DONE;
        if (res->redis_kind == REDIS_INTEGER && res->integer == 1) {
            s->lock_held = 1;
            return cached_data_query(ex);
        }
        if (res->redis_kind == REDIS_INTEGER && res->integer == 0 && clock_ms() < s->wait_until_ms) {
            /* Another worker is computing it: poll with a growing interval. */
            s->poll_ms = s->poll_ms < LOCK_POLL_FIRST_MS ? LOCK_POLL_FIRST_MS : s->poll_ms * 2;
            if (s->poll_ms > LOCK_POLL_MAX_MS) s->poll_ms = LOCK_POLL_MAX_MS;
            s->at = CACHED_WAITED;
            return backend_sleep(&ex->op, s->poll_ms);
        }
        /* Waited long enough, or a value that does not parse: compute it ourselves. */
        return cached_data_query(ex);
    case CACHED_WAITED:
        return cached_data_get_or_lock(ex);
    case CACHED_QUERY:
        return cached_data_computed(ex, res);
    case CACHED_STORE:
        return STEP_DONE; /* the answer stands whatever the store did */
    }
    return exchange_error(ex, 500, "internal_error", "bad state");
}

static void cached_data_clear(struct exchange *ex)
{
    struct cached_data_state *s = exchange_state(ex);
    free(s->value);
    s->value = NULL;
}

const struct endpoint endpoint_cached_data = {
    .path = "/cached-data",
    .name = "cached_data",
    .cache_control = "public, max-age=5",
    .state_size = sizeof(struct cached_data_state),
    .parse = cached_data_parse,
    .step = cached_data_step,
    .clear = cached_data_clear,
};
