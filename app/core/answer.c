/* answer: how an exchange ends, a 200 with the endpoint's JSON or a JSON error. Called by
 * the endpoints and by the exchange's own checks (declared in core/exchange.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/self.h"
#include "core/endpoint.h"
#include "core/exchange.h"

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
    json_object_set_new(obj, "worker", json_integer(self_pid()));
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
