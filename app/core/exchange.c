/* exchange: the life of one request, from routing to the rendered answer. */
#include "core/exchange.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "core/endpoint.h"
#include "core/routes.h"

/* Limits checked before any endpoint runs. */
#define MAX_QUERY_BYTES 2048
#define MAX_BODY_BYTES (1 << 20)
/* Backend waits stop this long before `timeout`, so the client gets a clean
 * 504 before the master would kill the worker. */
#define DEADLINE_MARGIN_MS 1000.0

void exchange_start(struct exchange *ex, const struct request *req, const struct settings *cfg)
{
    memset(ex, 0, sizeof *ex);
    ex->req = *req;
    if (!ex->req.query) ex->req.query = "";
    if (!ex->req.path) ex->req.path = "";
    if (!ex->req.method) ex->req.method = "";
    ex->cfg = cfg;
    ex->started_ms = clock_ms();
    double budget = cfg->timeout * 1e3;
    ex->deadline_ms = ex->started_ms + (budget > 2 * DEADLINE_MARGIN_MS ? budget - DEADLINE_MARGIN_MS : budget);
}

void exchange_clear(struct exchange *ex)
{
    if (ex->route && ex->route->clear) ex->route->clear(ex);
    free(ex->resp.body);
    memset(ex, 0, sizeof *ex);
}

/* Ends the exchange with obj as the body; takes obj's reference. */
static enum step finish(struct exchange *ex, int status, json_t *obj)
{
    ex->resp.status = status;
    ex->resp.body = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(obj);
    if (!ex->resp.body) { /* out of memory: still answer in JSON */
        ex->resp.status = 500;
        ex->resp.body = strdup("{\"error\":\"internal_error\"}");
    }
    ex->resp.body_len = ex->resp.body ? strlen(ex->resp.body) : 0;
    ex->op.kind = BACKEND_NONE;
    return STEP_DONE;
}

enum step exchange_reply(struct exchange *ex, json_t *obj)
{
    double elapsed = clock_ms() - ex->started_ms;
    json_object_set_new(obj, "elapsed_ms", json_real(round(elapsed * 1e3) / 1e3));
    json_object_set_new(obj, "worker", json_integer(getpid()));
    ex->resp.cache_control = ex->route->cache_control;
    return finish(ex, 200, obj);
}

static enum step verror(struct exchange *ex, int status, const char *code, const char *param,
                        const char *fmt, va_list ap)
{
    char message[256];
    vsnprintf(message, sizeof message, fmt, ap);
    json_t *obj = json_object();
    json_object_set_new(obj, "error", json_string(code));
    if (param) json_object_set_new(obj, "param", json_string(param));
    json_object_set_new(obj, "message", json_string(message));
    ex->resp.cache_control = "no-store";
    return finish(ex, status, obj);
}

enum step exchange_error(struct exchange *ex, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum step s = verror(ex, status, code, NULL, fmt, ap);
    va_end(ap);
    return s;
}

enum step exchange_bad_param(struct exchange *ex, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum step s = verror(ex, 400, "bad_request", param, fmt, ap);
    va_end(ap);
    return s;
}

enum step exchange_backend_error(struct exchange *ex, const struct backend_result *res,
                                 const char *backend)
{
    enum step s;
    switch (res->status) {
    case BACKEND_POOL_TIMEOUT:
        s = exchange_error(ex, 503, "pool_timeout", "no %s connection free within pool_timeout", backend);
        ex->resp.retry_after = 1;
        return s;
    case BACKEND_DEADLINE:
        return exchange_error(ex, 504, "timeout", "the request outlived its deadline waiting for %s", backend);
    case BACKEND_FAILED:
        return exchange_error(ex, 500, "internal_error", "%s: %s", backend, res->message);
    default: {
        json_t *obj = json_object();
        json_object_set_new(obj, "error", json_string("backend_unavailable"));
        json_object_set_new(obj, "backend", json_string(backend));
        json_object_set_new(obj, "message", json_string(res->message[0] ? res->message : "unreachable"));
        ex->resp.cache_control = "no-store";
        ex->resp.retry_after = 1;
        return finish(ex, 503, obj);
    }
    }
}

/* Routing and the checks every endpoint shares, in the order a client expects:
 * unknown path, then method, then size limits, then parameters. */
static enum step begin(struct exchange *ex)
{
    ex->route = route_find(ex->req.path);
    if (!ex->route) return exchange_error(ex, 404, "not_found", "no endpoint at this path");
    if (strcmp(ex->req.method, "HEAD") == 0) {
        ex->head_only = 1;
    } else if (strcmp(ex->req.method, "GET") != 0) {
        exchange_error(ex, 405, "method_not_allowed", "only GET and HEAD are allowed");
        ex->resp.allow = 1;
        return STEP_DONE;
    }
    if (ex->req.too_large) return exchange_error(ex, 413, "too_large", "%s", ex->req.too_large);
    if (strlen(ex->req.query) > MAX_QUERY_BYTES)
        return exchange_error(ex, 413, "too_large", "the query string is over %d bytes", MAX_QUERY_BYTES);
    if (ex->req.content_length < 0) return exchange_error(ex, 400, "bad_request", "CONTENT_LENGTH is not a length");
    if (ex->req.content_length > MAX_BODY_BYTES)
        return exchange_error(ex, 413, "too_large", "the request body is over %d bytes", MAX_BODY_BYTES);
    if (ex->route->parse && ex->route->parse(ex) != 0) return STEP_DONE;
    return ex->route->step(ex, NULL);
}

enum step exchange_step(struct exchange *ex, const struct backend_result *res)
{
    if (!ex->route && !ex->resp.body) return begin(ex);
    if (res) ex->pool_wait_ms += res->pool_wait_ms;
    return ex->route->step(ex, res);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
    }
}

size_t exchange_head(const struct exchange *ex, char *buf, size_t buflen)
{
    const struct response *r = &ex->resp;
    char x_cache[32] = "", retry_after[32] = "";
    if (r->x_cache) snprintf(x_cache, sizeof x_cache, "X-Cache: %s\r\n", r->x_cache);
    if (r->retry_after > 0) snprintf(retry_after, sizeof retry_after, "Retry-After: %d\r\n", r->retry_after);
    int n = snprintf(buf, buflen,
                     "Status: %d %s\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n"
                     "X-Worker: %ld\r\n"
                     "Cache-Control: %s\r\n"
                     "%s%s%s\r\n",
                     r->status, reason(r->status), r->body_len, (long)getpid(),
                     r->cache_control ? r->cache_control : "no-store", x_cache, retry_after,
                     r->allow ? "Allow: GET, HEAD\r\n" : "");
    return n < 0 || (size_t)n >= buflen ? 0 : (size_t)n;
}
