/* pg_sleep: the PostgreSQL round trip /io-intensive and /mixed wait on, and its timings. */
#include "core/pg_sleep.h"

#include <stdio.h>

#include "base/decimal.h"

static const char SQL_SLEEP[] = "SELECT pg_sleep($1)";

enum step pg_sleep_start(struct exchange *ex, struct pg_sleep *ps, long ms, json_t *reply)
{
    snprintf(ps->seconds, sizeof ps->seconds, "%.3f", (double)ms / 1e3);
    json_decref(ps->reply);
    ps->reply = reply;
    const char *params[] = {ps->seconds};
    return backend_pg(&ex->op, SQL_SLEEP, 1, params);
}

/* Milliseconds rounded to the microsecond, as a JSON number. */
static json_t *pg_sleep_ms(double ms)
{
    return json_real(decimal_round(ms * 1e3) / 1e3);
}

enum step pg_sleep_done(struct exchange *ex, struct pg_sleep *ps, const struct backend_result *res)
{
    if (res->status != BACKEND_OK) return exchange_backend_error(ex, res, "postgresql");
    json_t *obj = ps->reply;
    ps->reply = NULL;
    json_object_set_new(obj, "waited_ms", pg_sleep_ms(res->pool_wait_ms + res->db_ms));
    json_object_set_new(obj, "db_ms", pg_sleep_ms(res->db_ms));
    json_object_set_new(obj, "pool_wait_ms", pg_sleep_ms(res->pool_wait_ms));
    return exchange_reply(ex, obj);
}

void pg_sleep_clear(struct pg_sleep *ps)
{
    json_decref(ps->reply);
    ps->reply = NULL;
}
