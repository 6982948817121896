/* endpoint /io-intensive: waits on one PostgreSQL round trip (pg_sleep) through the pool. */
#include "core/endpoint.h"
#include "core/pg_sleep.h"

struct io_intensive_state {
    long ms;
    struct pg_sleep sleep;
};
ENDPOINT_STATE_FITS(struct io_intensive_state);

static int io_intensive_parse(struct exchange *ex)
{
    struct io_intensive_state *s = exchange_state(ex);
    return endpoint_param_long(ex, "ms", 100, 0, 10000, &s->ms);
}

static enum step io_intensive_step(struct exchange *ex, const struct backend_result *res)
{
    struct io_intensive_state *s = exchange_state(ex);
    if (res) return pg_sleep_done(ex, &s->sleep, res);
    return pg_sleep_start(ex, &s->sleep, s->ms, json_object());
}

static void io_intensive_clear(struct exchange *ex)
{
    struct io_intensive_state *s = exchange_state(ex);
    pg_sleep_clear(&s->sleep);
}

const struct endpoint endpoint_io_intensive = {
    .path = "/io-intensive",
    .name = "io_intensive",
    .cache_control = "no-store",
    .state_size = sizeof(struct io_intensive_state),
    .parse = io_intensive_parse,
    .step = io_intensive_step,
    .clear = io_intensive_clear,
};
