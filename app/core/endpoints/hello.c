/* endpoint /: the smallest answer, the baseline of every measure. */
#include "core/endpoint.h"

/* Its fixed part, written once: only elapsed_ms and worker change. */
static enum step hello_step(struct exchange *ex, const struct backend_result *res)
{
    (void)res;
    return exchange_reply_members(ex, "{\"message\":\"Hello, World!\"");
}

const struct endpoint endpoint_hello = {
    .path = "/",
    .name = "hello",
    .cache_control = "public, max-age=1",
    .step = hello_step,
};
