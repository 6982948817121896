/* exchange: the life of one request, from routing to the rendered answer (the answers
 * themselves are made in answer.c, which the endpoints call: no loop through the routes). */
#include "core/exchange.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/self.h"
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
                     r->status, reason(r->status), r->body_len, (long)self_pid(),
                     r->cache_control ? r->cache_control : "no-store", x_cache, retry_after,
                     r->allow ? "Allow: GET, HEAD\r\n" : "");
    return n < 0 || (size_t)n >= buflen ? 0 : (size_t)n;
}
