/* exchange: the life of one request, from routing to the rendered answer (the answers
 * themselves are made in answer.c, which the endpoints call: no loop through the routes). */
#include "core/exchange.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/decimal.h"
#include "base/self.h"
#include "core/endpoint.h"
#include "core/routes.h"

/* Limits checked before any endpoint runs. */
#define MAX_QUERY_BYTES 2048
#define MAX_BODY_BYTES (1 << 20)
/* Backend waits stop this long before `timeout`, so the client gets a clean
 * 504 before the master would kill the worker. */
#define DEADLINE_MARGIN_MS 1000.0

/* What exchange_start and exchange_clear zero: all but the endpoint's state,
 * whose state_size bytes are zeroed once the exchange is routed (a request
 * zeroes only what its endpoint uses). */
#define EXCHANGE_COMMON_BYTES offsetof(struct exchange, state)

void exchange_start(struct exchange *ex, const struct request *req, const struct settings *cfg)
{
    memset(ex, 0, EXCHANGE_COMMON_BYTES);
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
    memset(ex, 0, EXCHANGE_COMMON_BYTES);
}

/* Routing and the checks every endpoint shares, in the order a client expects:
 * unknown path, then method, then size limits, then parameters. */
static enum step begin(struct exchange *ex)
{
    ex->route = route_find(ex->req.path);
    if (!ex->route) return exchange_error(ex, 404, "not_found", "no endpoint at this path");
    memset(ex->state.bytes, 0, ex->route->state_size);
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

/* Appends to the head being written; `at` becomes NULL once it does not fit
 * (the last byte of the buffer stays for the NUL). */
struct exchange_head_writer {
    char *at, *end;
};

static void head_put(struct exchange_head_writer *w, const char *s, size_t n)
{
    if (!w->at) return;
    if ((size_t)(w->end - w->at) <= n) {
        w->at = NULL;
        return;
    }
    memcpy(w->at, s, n);
    w->at += n;
}

static void head_text(struct exchange_head_writer *w, const char *s)
{
    head_put(w, s, strlen(s));
}

static void head_number(struct exchange_head_writer *w, long long v)
{
    char digits[DECIMAL_MAX + 1];
    size_t n = 0;
    if (v < 0) digits[n++] = '-';
    n += decimal_write(digits + n, v < 0 ? 0 - (unsigned long long)v : (unsigned long long)v);
    head_put(w, digits, n);
}

/* Written piece by piece, not with printf: every answer has one. */
size_t exchange_head(const struct exchange *ex, char *buf, size_t buflen)
{
    const struct response *r = &ex->resp;
    struct exchange_head_writer w = {buf, buf + buflen};
    if (!buflen) return 0;
    head_text(&w, "Status: ");
    head_number(&w, r->status);
    head_text(&w, " ");
    head_text(&w, reason(r->status));
    head_text(&w, "\r\nContent-Type: application/json\r\nContent-Length: ");
    head_number(&w, (long long)r->body_len);
    head_text(&w, "\r\nX-Worker: ");
    head_number(&w, self_pid());
    head_text(&w, "\r\nCache-Control: ");
    head_text(&w, r->cache_control ? r->cache_control : "no-store");
    head_text(&w, "\r\n");
    if (r->x_cache) {
        head_text(&w, "X-Cache: ");
        head_text(&w, r->x_cache);
        head_text(&w, "\r\n");
    }
    if (r->retry_after > 0) {
        head_text(&w, "Retry-After: ");
        head_number(&w, r->retry_after);
        head_text(&w, "\r\n");
    }
    if (r->allow) head_text(&w, "Allow: GET, HEAD\r\n");
    head_text(&w, "\r\n");
    if (!w.at) return 0;
    *w.at = '\0';
    return (size_t)(w.at - buf);
}
