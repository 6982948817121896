/* endpoints: the seven endpoints as state machines over backend results. */
#include "core/endpoints.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "core/compute.h"
#include "base/query.h"
#include "base/scoreboard.h"

/* Reads one integer parameter into *out, or answers 400 naming it. */
static int param_long(struct exchange *ex, const char *name, long def, long lo, long hi, long *out)
{
    if (query_get_long(ex->req.query, name, def, lo, hi, out) == 0) return 0;
    exchange_bad_param(ex, name, "%s must be an integer in [%ld, %ld]", name, lo, hi);
    return -1;
}

static json_t *pg_wait_fields(json_t *obj, const struct exchange *ex)
{
    json_object_set_new(obj, "waited_ms", json_real(round((ex->pool_wait_ms + ex->db_ms) * 1e3) / 1e3));
    json_object_set_new(obj, "db_ms", json_real(round(ex->db_ms * 1e3) / 1e3));
    json_object_set_new(obj, "pool_wait_ms", json_real(round(ex->pool_wait_ms * 1e3) / 1e3));
    return obj;
}

/* ---- / ---- */

int endpoint_none_parse(struct exchange *ex)
{
    (void)ex;
    return 0;
}

enum step endpoint_hello(struct exchange *ex, const struct backend_result *res)
{
    (void)res;
    return exchange_reply(ex, json_pack("{s:s}", "message", "Hello, World!"));
}

/* ---- /cpu-intensive ---- */

int endpoint_cpu_parse(struct exchange *ex)
{
    return param_long(ex, "n", 50000, 2, 10000000, &ex->p.n);
}

enum step endpoint_cpu(struct exchange *ex, const struct backend_result *res)
{
    (void)res;
    long primes = compute_count_primes(ex->p.n);
    return exchange_reply(ex, json_pack("{s:I,s:I}", "n", (json_int_t)ex->p.n, "primes", (json_int_t)primes));
}

/* ---- /io-intensive and /mixed: one pg_sleep round trip ---- */

static const char SQL_SLEEP[] = "SELECT pg_sleep($1)";

/* Asks for the pg_sleep of ex->p.ms (state 0), then takes its result (state 1). */
static enum step sleep_in_db(struct exchange *ex, const struct backend_result *res, json_t *fields)
{
    if (!res) {
        snprintf(ex->arg[0], sizeof ex->arg[0], "%.3f", (double)ex->p.ms / 1e3);
        const char *params[] = {ex->arg[0]};
        json_decref(ex->reply);
        ex->reply = fields;
        return exchange_pg(ex, SQL_SLEEP, 1, params);
    }
    ex->pool_wait_ms = res->pool_wait_ms; /* counted in /metrics even when the wait ended in an error */
    if (res->status != BACKEND_OK) return exchange_backend_error(ex, res, "postgresql");
    ex->db_ms = res->db_ms;
    json_t *obj = pg_wait_fields(ex->reply, ex);
    ex->reply = NULL;
    return exchange_reply(ex, obj);
}

int endpoint_io_parse(struct exchange *ex)
{
    return param_long(ex, "ms", 100, 0, 10000, &ex->p.ms);
}

enum step endpoint_io(struct exchange *ex, const struct backend_result *res)
{
    return sleep_in_db(ex, res, res ? NULL : json_object());
}

int endpoint_mixed_parse(struct exchange *ex)
{
    if (param_long(ex, "n", 20000, 2, 10000000, &ex->p.n) != 0) return -1;
    return param_long(ex, "ms", 50, 0, 10000, &ex->p.ms);
}

enum step endpoint_mixed(struct exchange *ex, const struct backend_result *res)
{
    if (res) return sleep_in_db(ex, res, NULL);
    long primes = compute_count_primes(ex->p.n);
    return sleep_in_db(ex, NULL, json_pack("{s:I,s:I}", "n", (json_int_t)ex->p.n, "primes", (json_int_t)primes));
}

/* ---- /cached-data: cache-aside with stampede protection ---- */

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

enum cached_state { CACHED_GET, CACHED_GET_OR_LOCK, CACHED_WAITED, CACHED_QUERY, CACHED_STORE };

/* Waiters poll for the winner's result at these intervals. */
#define LOCK_POLL_FIRST_MS 5
#define LOCK_POLL_MAX_MS 50

int endpoint_cached_parse(struct exchange *ex)
{
    return param_long(ex, "category", 7, 0, 99, &ex->p.category);
}

/* How long the recompute lock lives, and how long others wait for it: the
 * winner may wait pool_timeout for a connection, then run the query. */
static long lock_ms(const struct exchange *ex)
{
    return (long)(ex->cfg->pool_timeout * 1e3) + 5000;
}

static enum step cached_answer(struct exchange *ex, json_t *stats, const char *source, long ttl)
{
    json_t *obj = json_pack("{s:I,s:s,s:O,s:I}", "category", (json_int_t)ex->p.category, "source", source,
                            "stats", stats, "ttl", (json_int_t)ttl);
    return exchange_reply(ex, obj);
}

/* A cached value is {"stats":{...},"expires_at":EPOCH}; 0 if v is one. */
static int cached_hit(struct exchange *ex, const char *v, size_t len)
{
    json_t *doc = json_loadb(v, len, 0, NULL);
    json_t *stats = json_object_get(doc, "stats");
    json_t *expires = json_object_get(doc, "expires_at");
    if (!json_is_object(stats) || !json_is_number(expires)) {
        json_decref(doc);
        return -1;
    }
    long ttl = (long)ceil(json_number_value(expires) - clock_wall_s());
    if (ttl < 1) ttl = 1;
    ex->resp.x_cache = "HIT";
    cached_answer(ex, stats, "cache", ttl);
    json_decref(doc);
    return 0;
}

static enum step cached_query(struct exchange *ex)
{
    snprintf(ex->arg[0], sizeof ex->arg[0], "%ld", ex->p.category);
    const char *params[] = {ex->arg[0]};
    ex->state = CACHED_QUERY;
    return exchange_pg(ex, SQL_CATEGORY_STATS, 1, params);
}

static enum step cached_bypass(struct exchange *ex)
{
    ex->bypass = 1;
    ex->lock_held = 0;
    return cached_query(ex);
}

static enum step cached_get_or_lock(struct exchange *ex)
{
    snprintf(ex->arg[1], sizeof ex->arg[1], "%ld", lock_ms(ex));
    const char *argv[] = {"EVAL", LUA_GET_OR_LOCK, "2", ex->key, ex->lock_key, ex->token, ex->arg[1]};
    ex->state = CACHED_GET_OR_LOCK;
    return exchange_redis(ex, 7, argv);
}

static json_t *stats_from_row(const struct backend_result *res)
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
static enum step cached_computed(struct exchange *ex, const struct backend_result *res)
{
    json_t *stats = res->status == BACKEND_OK ? stats_from_row(res) : NULL;
    if (!stats) {
        if (res->status != BACKEND_OK)
            exchange_backend_error(ex, res, "postgresql");
        else
            exchange_error(ex, 500, "internal_error", "unexpected aggregate result");
        if (!ex->lock_held) return STEP_DONE;
        ex->value = strdup(""); /* only release the lock */
    } else {
        ex->resp.x_cache = ex->bypass ? "BYPASS" : "MISS";
        json_t *doc = json_pack("{s:O,s:f}", "stats", stats, "expires_at", clock_wall_s() + ex->cfg->cache_ttl);
        ex->value = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(15));
        json_decref(doc);
        cached_answer(ex, stats, "database", ex->cfg->cache_ttl);
        json_decref(stats);
        if (ex->bypass || !ex->value) return STEP_DONE;
    }
    /* The answer is ready; one more round trip stores it for the others. */
    snprintf(ex->arg[1], sizeof ex->arg[1], "%d", ex->cfg->cache_ttl);
    const char *argv[] = {"EVAL", LUA_STORE_AND_UNLOCK, "2", ex->key, ex->lock_key, ex->value, ex->arg[1], ex->token};
    ex->state = CACHED_STORE;
    return exchange_redis(ex, 8, argv);
}

enum step endpoint_cached(struct exchange *ex, const struct backend_result *res)
{
    if (!res) {
        snprintf(ex->key, sizeof ex->key, "perfcgi:cached-data:%ld", ex->p.category);
        snprintf(ex->lock_key, sizeof ex->lock_key, "perfcgi:cached-data:%ld:lock", ex->p.category);
        const char *argv[] = {"GET", ex->key};
        ex->state = CACHED_GET;
        return exchange_redis(ex, 2, argv);
    }
    switch ((enum cached_state)ex->state) {
    case CACHED_GET:
        if (res->status != BACKEND_OK || res->redis_kind == REDIS_ERROR) return cached_bypass(ex);
        if (res->redis_kind == REDIS_STRING && cached_hit(ex, res->str, res->len) == 0) return STEP_DONE;
        /* A miss (or a value that does not parse): take the lock or wait. */
        snprintf(ex->token, sizeof ex->token, "%ld:%p:%.0f", (long)getpid(), (void *)ex, ex->started_ms * 1e3);
        ex->wait_until_ms = ex->started_ms + (double)lock_ms(ex);
        return cached_get_or_lock(ex);
    case CACHED_GET_OR_LOCK:
        if (res->status != BACKEND_OK || res->redis_kind == REDIS_ERROR) return cached_bypass(ex);
        if (res->redis_kind == REDIS_STRING && cached_hit(ex, res->str, res->len) == 0) return STEP_DONE;
        if (res->redis_kind == REDIS_INTEGER && res->integer == 1) {
            ex->lock_held = 1;
            return cached_query(ex);
        }
        if (res->redis_kind == REDIS_INTEGER && res->integer == 0 && clock_ms() < ex->wait_until_ms) {
            /* Another worker is computing it: poll with a growing interval. */
            ex->poll_ms = ex->poll_ms < LOCK_POLL_FIRST_MS ? LOCK_POLL_FIRST_MS : ex->poll_ms * 2;
            if (ex->poll_ms > LOCK_POLL_MAX_MS) ex->poll_ms = LOCK_POLL_MAX_MS;
            ex->state = CACHED_WAITED;
            return exchange_sleep(ex, ex->poll_ms);
        }
        /* Waited long enough, or a value that does not parse: compute it ourselves. */
        return cached_query(ex);
    case CACHED_WAITED:
        return cached_get_or_lock(ex);
    case CACHED_QUERY:
        return cached_computed(ex, res);
    case CACHED_STORE:
        return STEP_DONE; /* the answer stands whatever the store did */
    }
    return exchange_error(ex, 500, "internal_error", "bad state");
}

/* ---- /expensive-computation ---- */

static const struct {
    const char *name;
    long max_n;
} fib_methods[] = {[FIB_NAIVE] = {"naive", 40}, [FIB_MEMO] = {"memo", 93}, [FIB_FAST] = {"fast", 93}};

int endpoint_fib_parse(struct exchange *ex)
{
    char method[16];
    ex->p.method = FIB_NAIVE;
    enum query_found found = query_get(ex->req.query, "method", method, sizeof method);
    if (found != QUERY_ABSENT) {
        ex->p.method = -1;
        for (int m = 0; found == QUERY_FOUND && m < 3; m++)
            if (strcmp(method, fib_methods[m].name) == 0) ex->p.method = m;
        if (ex->p.method < 0) {
            exchange_bad_param(ex, "method", "method must be one of naive, memo, fast");
            return -1;
        }
    }
    return param_long(ex, "n", 30, 0, fib_methods[ex->p.method].max_n, &ex->p.n);
}

enum step endpoint_fib(struct exchange *ex, const struct backend_result *res)
{
    (void)res;
    int n = (int)ex->p.n;
    uint64_t f = ex->p.method == FIB_MEMO   ? compute_fib_memo(n)
                 : ex->p.method == FIB_FAST ? compute_fib_fast(n)
                                            : compute_fib_naive(n);
    char digits[24];
    snprintf(digits, sizeof digits, "%" PRIu64, f);
    return exchange_reply(ex, json_pack("{s:I,s:s,s:s}", "n", (json_int_t)n, "method",
                                        fib_methods[ex->p.method].name, "result", digits));
}

/* ---- /memory-test ---- */

int endpoint_memory_parse(struct exchange *ex)
{
    if (param_long(ex, "mb", 10, 1, ex->cfg->max_request_mb, &ex->p.mb) != 0) return -1;
    return param_long(ex, "hold", 0, 0, 1, &ex->p.hold);
}

enum step endpoint_memory(struct exchange *ex, const struct backend_result *res)
{
    (void)res;
    struct memory_report m;
    long cap = ex->cfg->max_held_mb;
    /* max_held_mb caps all workers together, reserved before mapping so that
     * concurrent requests in any worker cannot overshoot it. */
    if (ex->p.hold && scoreboard_hold(scoreboard_self, ex->p.mb, cap) != 0)
        return exchange_error(ex, 507, "insufficient_storage",
                              "holding %ld MiB more would pass max_held_mb (%ld), held by all workers together "
                              "(%ld MiB now)", ex->p.mb, cap, scoreboard_held_mb());
    enum memory_status done = compute_touch_memory(ex->p.mb, (int)ex->p.hold, cap, &m);
    if (done != MEMORY_OK && ex->p.hold) scoreboard_hold(scoreboard_self, -ex->p.mb, cap);
    if (done != MEMORY_OK) return exchange_error(ex, 507, "insufficient_storage", "could not map %ld MiB", ex->p.mb);
    char checksum[24];
    snprintf(checksum, sizeof checksum, "%016" PRIx64, m.checksum);
    return exchange_reply(ex, json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "mb", (json_int_t)ex->p.mb,
                                        "rss_before_kb", (json_int_t)m.rss_before_kb, "rss_peak_kb",
                                        (json_int_t)m.rss_peak_kb, "rss_after_kb", (json_int_t)m.rss_after_kb,
                                        "held_mb", (json_int_t)m.held_mb, "held_total_mb",
                                        (json_int_t)scoreboard_held_mb(), "checksum", checksum));
}
