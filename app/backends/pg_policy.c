/* pg_policy: the PostgreSQL pools' rules, once for both drivers: sizes, recycle, overflow linger, retry-once, which status. */
#include "backends/pg_policy.h"

#include <stdio.h>
#include <string.h>

void pg_policy_init(struct pg_policy *pol, const struct settings *cfg)
{
    pol->size = cfg->pool_size;
    pol->max = cfg->pool_size + cfg->pool_max_overflow;
    pol->timeout_ms = cfg->pool_timeout * 1e3;
    pol->recycle_ms = cfg->pool_recycle * 1e3;
}

int pg_policy_may_open(const struct pg_policy *pol, int open)
{
    return open < pol->max;
}

int pg_policy_recycle_due(const struct pg_policy *pol, double opened_ms, double now_ms)
{
    return pol->recycle_ms > 0 && now_ms - opened_ms > pol->recycle_ms;
}

int pg_policy_overflow_expired(const struct pg_policy *pol, int open, double idle_since_ms, double now_ms)
{
    return open > pol->size && now_ms - idle_since_ms >= PG_OVERFLOW_LINGER_MS;
}

double pg_policy_wait_until(const struct pg_policy *pol, double now_ms, double deadline_ms)
{
    double until = now_ms + pol->timeout_ms;
    return until < deadline_ms ? until : deadline_ms;
}

enum backend_status pg_policy_wait_failed(double deadline_ms, double now_ms, struct pg_pool_stats *stats)
{
    if (now_ms >= deadline_ms) return BACKEND_DEADLINE;
    stats->timeouts++;
    return BACKEND_POOL_TIMEOUT;
}

int pg_policy_checkin(struct pg_pool_stats *stats, enum backend_status status)
{
    stats->checkouts++; /* counted on return: each successful checkout returns once */
    return status == BACKEND_OK || status == BACKEND_FAILED;
}

int pg_policy_retry(int reused, int retried)
{
    return reused && !retried;
}

enum backend_status pg_policy_judge(int result_ok, const char *sqlstate, int conn_ok)
{
    if (result_ok) return BACKEND_OK;
    if (!conn_ok) return BACKEND_DOWN;
    if (sqlstate && strcmp(sqlstate, "57014") == 0) return BACKEND_DEADLINE; /* statement timeout */
    /* Class 08 (connection) and 57P (operator intervention: shutdown, crash). */
    if (sqlstate && (strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "57P", 3) == 0)) return BACKEND_DOWN;
    return BACKEND_FAILED;
}

void pg_policy_first_line(const char *msg, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s", msg ? msg : "");
    err[strcspn(err, "\n")] = '\0';
}
