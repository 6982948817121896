/* endpoint /expensive-computation: Fibonacci F(n) by the method asked for. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/query.h"
#include "core/compute.h"
#include "core/endpoint.h"

enum fib_method { FIB_NAIVE, FIB_MEMO, FIB_FAST, FIB_METHODS };

static const struct {
    const char *name;
    long max_n;
} fib_methods[FIB_METHODS] = {[FIB_NAIVE] = {"naive", 40}, [FIB_MEMO] = {"memo", 93}, [FIB_FAST] = {"fast", 93}};

struct expensive_computation_state {
    long n;
    enum fib_method method;
};
ENDPOINT_STATE_FITS(struct expensive_computation_state);

static int expensive_computation_parse(struct exchange *ex)
{
    struct expensive_computation_state *s = exchange_state(ex);
    char method[16];
    s->method = FIB_NAIVE;
    enum query_found found = query_get(ex->req.query, "method", method, sizeof method);
    if (found != QUERY_ABSENT) {
        s->method = FIB_METHODS;
        for (int m = 0; found == QUERY_FOUND && m < FIB_METHODS; m++)
            if (strcmp(method, fib_methods[m].name) == 0) s->method = (enum fib_method)m;
        if (s->method == FIB_METHODS) {
            exchange_bad_param(ex, "method", "method must be one of naive, memo, fast");
            return -1;
        }
    }
    return endpoint_param_long(ex, "n", 30, 0, fib_methods[s->method].max_n, &s->n);
}

static enum step expensive_computation_step(struct exchange *ex, const struct backend_result *res)
{
    (void)res;
    struct expensive_computation_state *s = exchange_state(ex);
    int n = (int)s->n;
    uint64_t f = s->method == FIB_MEMO   ? compute_fib_memo(n)
                 : s->method == FIB_FAST ? compute_fib_fast(n)
                                         : compute_fib_naive(n);
    char digits[24];
    snprintf(digits, sizeof digits, "%" PRIu64, f);
    return exchange_reply(ex, json_pack("{s:I,s:s,s:s}", "n", (json_int_t)n, "method", fib_methods[s->method].name,
                                        "result", digits));
}

const struct endpoint endpoint_expensive_computation = {
    .path = "/expensive-computation",
    .name = "expensive_computation",
    .cache_control = "public, max-age=3600",
    .state_size = sizeof(struct expensive_computation_state),
    .parse = expensive_computation_parse,
    .step = expensive_computation_step,
};
