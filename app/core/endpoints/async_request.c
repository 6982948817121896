/* endpoint /async-request: one HTTP GET to the external API (upstream_url), its JSON passed back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/decimal.h"
#include "core/endpoint.h"

struct async_request_state {
    long ms;
    char *url; /* upstream_url with ms added, malloc'd */
};
ENDPOINT_STATE_FITS(struct async_request_state);

static int async_request_parse(struct exchange *ex)
{
    struct async_request_state *s = exchange_state(ex);
    return endpoint_param_long(ex, "ms", 100, 0, 10000, &s->ms);
}

/* The answer, if it is a JSON object: anything else (text, an array, a cut body) is a
 * fault of the upstream, never passed on as a 200. */
static enum step async_request_answer(struct exchange *ex, const struct backend_result *res)
{
    json_t *upstream = json_loadb(res->str ? res->str : "", res->len, 0, NULL);
    if (!json_is_object(upstream)) {
        json_decref(upstream);
        struct backend_result bad = {.status = BACKEND_DOWN};
        snprintf(bad.message, sizeof bad.message, "the answer (HTTP %d, %zu bytes) is not a JSON object",
                 res->http_status, res->len);
        return exchange_backend_error(ex, &bad, "upstream");
    }
    return exchange_reply(ex, json_pack("{s:i,s:f,s:o}", "upstream_status", res->http_status, "upstream_ms",
                                        decimal_round(res->http_ms * 1e3) / 1e3, "upstream", upstream));
}

static enum step async_request_step(struct exchange *ex, const struct backend_result *res)
{
    struct async_request_state *s = exchange_state(ex);
    if (res) {
        if (res->status != BACKEND_OK) return exchange_backend_error(ex, res, "upstream");
        return async_request_answer(ex, res);
    }
    /* ms joins the URL's own query, if it has one. */
    const char *base = ex->cfg->upstream_url;
    size_t len = strlen(base) + sizeof "&ms=10000";
    s->url = malloc(len);
    if (!s->url) return exchange_error(ex, 500, "internal_error", "out of memory");
    snprintf(s->url, len, "%s%cms=%ld", base, strchr(base, '?') ? '&' : '?', s->ms);
    return backend_http(&ex->op, s->url);
}

static void async_request_clear(struct exchange *ex)
{
    struct async_request_state *s = exchange_state(ex);
    free(s->url);
}

const struct endpoint endpoint_async_request = {
    .path = "/async-request",
    .name = "async_request",
    .cache_control = "no-store",
    .state_size = sizeof(struct async_request_state),
    .parse = async_request_parse,
    .step = async_request_step,
    .clear = async_request_clear,
};
