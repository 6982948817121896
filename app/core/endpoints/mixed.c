/* endpoint /mixed: the /cpu-intensive work for n, then the /io-intensive wait for ms. */
#include "core/compute.h"
#include "core/endpoint.h"
#include "core/pg_sleep.h"

struct mixed_state {
    long n, ms;
    struct pg_sleep sleep;
};
ENDPOINT_STATE_FITS(struct mixed_state);

static int mixed_parse(struct exchange *ex)
{
    struct mixed_state *s = exchange_state(ex);
    if (endpoint_param_long(ex, "n", 20000, 2, 10000000, &s->n) != 0) return -1;
    return endpoint_param_long(ex, "ms", 50, 0, 10000, &s->ms);
}

static enum step mixed_step(struct exchange *ex, const struct backend_result *res)
{
    struct mixed_state *s = exchange_state(ex);
    if (res) return pg_sleep_done(ex, &s->sleep, res);
    long primes = compute_count_primes(s->n);
    return pg_sleep_start(ex, &s->sleep, s->ms,
                          json_pack("{s:I,s:I}", "n", (json_int_t)s->n, "primes", (json_int_t)primes));
}

static void mixed_clear(struct exchange *ex)
{
    struct mixed_state *s = exchange_state(ex);
    pg_sleep_clear(&s->sleep);
}

const struct endpoint endpoint_mixed = {
    .path = "/mixed",
    .name = "mixed",
    .cache_control = "no-store",
    .state_size = sizeof(struct mixed_state),
    .parse = mixed_parse,
    .step = mixed_step,
    .clear = mixed_clear,
};
