/* endpoint /memory-test: maps, touches and frees (or, with hold, keeps) mb MiB. */
#include <inttypes.h>
#include <stdio.h>

#include "base/scoreboard.h"
#include "core/compute.h"
#include "core/endpoint.h"

struct memory_test_state {
    long mb, hold;
};
ENDPOINT_STATE_FITS(struct memory_test_state);

static int memory_test_parse(struct exchange *ex)
{
    struct memory_test_state *s = exchange_state(ex);
    if (endpoint_param_long(ex, "mb", 10, 1, ex->cfg->max_request_mb, &s->mb) != 0) return -1;
    return endpoint_param_long(ex, "hold", 0, 0, 1, &s->hold);
}

static enum step memory_test_step(struct exchange *ex, const struct backend_result *res)
{
    (void)res;
    struct memory_test_state *s = exchange_state(ex);
    struct memory_report m;
    long cap = ex->cfg->max_held_mb;
    /* max_held_mb caps all workers together, reserved before mapping so that
     * concurrent requests in any worker cannot overshoot it. */
    if (s->hold && scoreboard_hold(scoreboard_self, s->mb, cap) != 0)
        return exchange_error(ex, 507, "insufficient_storage",
                              "holding %ld MiB more would pass max_held_mb (%ld), held by all workers together "
                              "(%ld MiB now)", s->mb, cap, scoreboard_held_mb());
    enum memory_status done = compute_touch_memory(s->mb, (int)s->hold, cap, &m);
    if (done != MEMORY_OK && s->hold) scoreboard_hold(scoreboard_self, -s->mb, cap);
    if (done != MEMORY_OK) return exchange_error(ex, 507, "insufficient_storage", "could not map %ld MiB", s->mb);
    char checksum[24];
    snprintf(checksum, sizeof checksum, "%016" PRIx64, m.checksum);
    return exchange_reply(ex, json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "mb", (json_int_t)s->mb,
                                        "rss_before_kb", (json_int_t)m.rss_before_kb, "rss_peak_kb",
                                        (json_int_t)m.rss_peak_kb, "rss_after_kb", (json_int_t)m.rss_after_kb,
                                        "held_mb", (json_int_t)m.held_mb, "held_total_mb",
                                        (json_int_t)scoreboard_held_mb(), "checksum", checksum));
}

const struct endpoint endpoint_memory_test = {
    .path = "/memory-test",
    .name = "memory_test",
    .cache_control = "no-store",
    .state_size = sizeof(struct memory_test_state),
    .parse = memory_test_parse,
    .step = memory_test_step,
};
