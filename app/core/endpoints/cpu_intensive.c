/* endpoint /cpu-intensive: counts the primes up to n, all on the CPU. */
#include "core/compute.h"
#include "core/endpoint.h"

struct cpu_intensive_state {
    long n;
};
ENDPOINT_STATE_FITS(struct cpu_intensive_state);

static int cpu_intensive_parse(struct exchange *ex)
{
    struct cpu_intensive_state *s = exchange_state(ex);
    return endpoint_param_long(ex, "n", 50000, 2, 10000000, &s->n);
}

static enum step cpu_intensive_step(struct exchange *ex, const struct backend_result *res)
{
    (void)res;
    struct cpu_intensive_state *s = exchange_state(ex);
    long primes = compute_count_primes(s->n);
    return exchange_reply(ex, json_pack("{s:I,s:I}", "n", (json_int_t)s->n, "primes", (json_int_t)primes));
}

const struct endpoint endpoint_cpu_intensive = {
    .path = "/cpu-intensive",
    .name = "cpu_intensive",
    .cache_control = "no-store",
    .state_size = sizeof(struct cpu_intensive_state),
    .parse = cpu_intensive_parse,
    .step = cpu_intensive_step,
};
