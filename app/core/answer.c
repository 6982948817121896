/* answer: how an exchange ends, a 200 with the endpoint's JSON or a JSON error. Called by
 * the endpoints and by the exchange's own checks (declared in core/exchange.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/decimal.h"
#include "base/self.h"
#include "core/endpoint.h"
#include "core/exchange.h"

/* Every answer's real numbers, elapsed_ms among them, are written by jansson with
 * 15 significant digits. */
#define ANSWER_REAL_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

/* Ends the exchange with obj as the body; takes obj's reference. */
static enum step finish(struct exchange *ex, int status, json_t *obj)
{
    ex->resp.status = status;
    ex->resp.body = json_dumps(obj, ANSWER_REAL_FLAGS);
    json_decref(obj);
    if (!ex->resp.body) { /* out of memory: still answer in JSON */
        ex->resp.status = 500;
        ex->resp.body = strdup("{\"error\":\"internal_error\"}");
    }
    ex->resp.body_len = ex->resp.body ? strlen(ex->resp.body) : 0;
    ex->op.kind = BACKEND_NONE;
    return STEP_DONE;
}

size_t exchange_elapsed_text(double ms, char out[EXCHANGE_ELAPSED_TEXT])
{
    /* decimal_round(ms * 1e3) / 1e3 in %.15g is exactly its whole number of thousandths
     * below 1e12 ms (the double is within 2^-53 of it, far under the 15th digit),
     * so it is written from that integer, which costs no floating-point printing. */
    double thousandths = decimal_round(ms * 1e3);
    if (!(thousandths >= 0 && thousandths < 1e15)) { /* negative, huge, NaN: as jansson does it */
        json_t *real = json_real(thousandths / 1e3);
        size_t n = real ? json_dumpb(real, out, EXCHANGE_ELAPSED_TEXT - 1, JSON_ENCODE_ANY | ANSWER_REAL_FLAGS) : 0;
        json_decref(real);
        if (n >= EXCHANGE_ELAPSED_TEXT) n = 0;
        out[n] = '\0';
        return n;
    }
    unsigned long long k = (unsigned long long)thousandths;
    unsigned frac = (unsigned)(k % 1000);
    size_t n = decimal_write(out, k / 1000);
    out[n++] = '.';
    /* %g drops the fraction's trailing zeros; jansson adds ".0" to a whole number. */
    out[n++] = (char)('0' + frac / 100);
    if (frac % 100) {
        out[n++] = (char)('0' + frac / 10 % 10);
        if (frac % 10) out[n++] = (char)('0' + frac % 10);
    }
    out[n] = '\0';
    return n;
}

enum step exchange_reply_members(struct exchange *ex, const char *members)
{
    char elapsed[EXCHANGE_ELAPSED_TEXT];
    char worker[DECIMAL_MAX];
    size_t members_len = strlen(members), elapsed_len = exchange_elapsed_text(clock_ms() - ex->started_ms, elapsed);
    size_t worker_len = decimal_write(worker, (unsigned long long)self_pid());
    static const char elapsed_key[] = ",\"elapsed_ms\":", worker_key[] = ",\"worker\":";
    size_t len = members_len + sizeof elapsed_key - 1 + elapsed_len + sizeof worker_key - 1 + worker_len + 1;
    char *body = malloc(len + 1);
    if (!body) return finish(ex, 500, NULL); /* out of memory: still answer in JSON */
    char *at = body;
    const struct {
        const char *text;
        size_t len;
    } parts[] = {{members, members_len},
                 {elapsed_key, sizeof elapsed_key - 1},
                 {elapsed, elapsed_len},
                 {worker_key, sizeof worker_key - 1},
                 {worker, worker_len},
                 {"}", 2}}; /* with the NUL */
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        memcpy(at, parts[i].text, parts[i].len);
        at += parts[i].len;
    }
    ex->resp.status = 200;
    ex->resp.body = body;
    ex->resp.body_len = len;
    ex->resp.cache_control = ex->route->cache_control;
    ex->op.kind = BACKEND_NONE;
    return STEP_DONE;
}

enum step exchange_reply(struct exchange *ex, json_t *obj)
{
    double elapsed = clock_ms() - ex->started_ms;
    json_object_set_new(obj, "elapsed_ms", json_real(decimal_round(elapsed * 1e3) / 1e3));
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
