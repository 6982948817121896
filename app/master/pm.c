/* pm: how many workers to run, decided each tick from what the master measures (PHP-FPM's pm, and adaptive). */
#include "master/pm.h"

#include <math.h>
#include <string.h>

const char *const pm_action_names[PM_ACTIONS] = {[PM_SPAWN] = "spawn", [PM_RETIRE] = "retire", [PM_HOLD] = "hold"};
const char *const pm_reason_names[PM_REASONS] = {
    [PM_MIN_SPARE] = "min_spare",       [PM_MAX_SPARE] = "max_spare",     [PM_QUEUED] = "queued",
    [PM_QUEUE_WAIT] = "queue_wait",     [PM_BUSY] = "busy",               [PM_IDLE_TIMEOUT] = "idle_timeout",
    [PM_MAX_CHILDREN] = "max_children", [PM_RSS_BUDGET] = "rss_budget",   [PM_PG_CONNECTIONS] = "pg_connections",
};

const enum pm_action pm_reason_action[PM_REASONS] = {
    [PM_MIN_SPARE] = PM_SPAWN,      [PM_MAX_SPARE] = PM_RETIRE,  [PM_QUEUED] = PM_SPAWN,
    [PM_QUEUE_WAIT] = PM_SPAWN,     [PM_BUSY] = PM_SPAWN,        [PM_IDLE_TIMEOUT] = PM_RETIRE,
    [PM_MAX_CHILDREN] = PM_HOLD,    [PM_RSS_BUDGET] = PM_HOLD,   [PM_PG_CONNECTIONS] = PM_HOLD,
};

/* Adaptive grows from this busy ratio (while it rises), and shrinks only below the
 * other with the wait under a quarter of the target: the gap is the hysteresis. */
#define BUSY_GROW 0.8
#define BUSY_LOW 0.5

static const struct pm_decision NOTHING = {PM_NOTHING, PM_MIN_SPARE, 0};

void pm_config_from(struct pm_config *c, const struct settings *cfg, long pg_left)
{
    *c = (struct pm_config){.mode = cfg->pm, .max_children = settings_pm_children(cfg),
                            .min_spare = cfg->pm_min_spare_servers, .max_spare = cfg->pm_max_spare_servers,
                            .max_spawn_rate = cfg->pm_max_spawn_rate,
                            .idle_timeout_ms = cfg->pm_process_idle_timeout * 1e3,
                            .target_wait_ms = cfg->pm_target_queue_wait_ms,
                            .rss_budget_kb = (long)cfg->pm_rss_budget_mb * 1024, .pg_left = pg_left,
                            .pg_per_worker = cfg->pool_size + cfg->pool_max_overflow};
}

/* Workers that may still be added, and what limits them most. Only adaptive
 * knows the RSS budget and PostgreSQL's connections. */
static int room(const struct pm_config *c, const struct pm_figures *f, enum pm_reason *cap)
{
    long r = c->max_children - f->workers;
    *cap = PM_MAX_CHILDREN;
    if (c->mode == PM_ADAPTIVE && c->rss_budget_kb && f->rss_kb_max > 0) {
        long fit = (c->rss_budget_kb - f->rss_kb_total) / f->rss_kb_max; /* each as big as the biggest */
        if (fit < r) r = fit, *cap = PM_RSS_BUDGET;
    }
    if (c->mode == PM_ADAPTIVE && c->pg_left >= 0 && c->pg_per_worker > 0) {
        long fit = c->pg_left / c->pg_per_worker - f->workers;
        if (fit < r) r = fit, *cap = PM_PG_CONNECTIONS;
    }
    return r < 0 ? 0 : (int)r;
}

/* Nothing more is wanted: the next growth starts at 1 again. */
static void relax(struct pm_state *st)
{
    st->spawn_rate = 1;
    st->holding = 0;
}

/* want more workers for why: as many as the spawn rate and the room allow (the
 * rate doubles for the next tick, as PHP-FPM's), or one hold per episode. */
static struct pm_decision grow(const struct pm_config *c, const struct pm_figures *f, struct pm_state *st, int want,
                               enum pm_reason why)
{
    enum pm_reason cap;
    int n = room(c, f, &cap);
    if (n <= 0) {
        if (st->holding == (int)cap + 1) return NOTHING;
        st->holding = (int)cap + 1;
        return (struct pm_decision){PM_HOLD, cap, 0};
    }
    st->holding = 0;
    if (st->spawn_rate < 1) st->spawn_rate = 1;
    if (want > st->spawn_rate) want = st->spawn_rate;
    if (want > n) want = n;
    st->spawn_rate = st->spawn_rate * 2 > c->max_spawn_rate ? c->max_spawn_rate : st->spawn_rate * 2;
    return (struct pm_decision){PM_SPAWN, why, want};
}

static struct pm_decision retire_one(enum pm_reason why)
{
    return (struct pm_decision){PM_RETIRE, why, 1};
}

/* Whether fewer workers would do (`low`) for the idle timeout by now: then one
 * idle worker a tick goes while it lasts. Counted for the pool, not per worker:
 * under light load the kernel hands connections round the idle workers, so none
 * of them stays idle long, yet most of them are idle. */
static int low_long_enough(const struct pm_config *c, const struct pm_figures *f, struct pm_state *st, int low)
{
    if (!low) {
        st->low_since_ms = 0;
        return 0;
    }
    if (!st->low_since_ms) st->low_since_ms = f->now_ms;
    return f->idle > 0 && f->now_ms - st->low_since_ms >= c->idle_timeout_ms;
}

/* Idle workers between min and max spare; starting ones count as idle (soon).
 * Unlike PHP-FPM, the surplus goes once it lasted the idle timeout: a lull
 * between bursts does not churn workers. */
static struct pm_decision dynamic(const struct pm_config *c, const struct pm_figures *f, struct pm_state *st)
{
    int idle = f->idle + f->starting;
    if (idle < c->min_spare) {
        st->low_since_ms = 0;
        return grow(c, f, st, c->min_spare - idle, PM_MIN_SPARE);
    }
    relax(st);
    if (low_long_enough(c, f, st, idle > c->max_spare)) return retire_one(PM_MAX_SPARE);
    return NOTHING;
}

/* None at rest: one started per waiting connection no idle worker takes. */
static struct pm_decision ondemand(const struct pm_config *c, const struct pm_figures *f, struct pm_state *st)
{
    if (f->queued > 0 && f->idle + f->starting == 0) return grow(c, f, st, f->queued, PM_QUEUED);
    relax(st);
    if (f->idle > 0 && f->longest_idle_ms >= c->idle_timeout_ms) return retire_one(PM_IDLE_TIMEOUT);
    return NOTHING;
}

/* Steers by queue wait: grows at half the target, or earlier on a rising busy
 * ratio or waiting connections (the wait is measured once a request is taken: it
 * lags); waits for the workers it started before growing again; shrinks after
 * pm_process_idle_timeout of low wait, one idle worker at a time. */
static struct pm_decision adaptive(const struct pm_config *c, const struct pm_figures *f, struct pm_state *st)
{
    int serving = f->workers - f->starting;
    double ratio = serving > 0 ? (double)f->busy / serving : f->queued > 0;
    double prev = st->prev_busy_ratio;
    st->prev_busy_ratio = ratio;
    if (f->workers < c->min_spare) return grow(c, f, st, c->min_spare - f->workers, PM_MIN_SPARE);
    int want = 0;
    enum pm_reason why = PM_QUEUE_WAIT;
    if (f->wait_p99_ms >= c->target_wait_ms / 2) {
        want = c->max_children; /* the spawn rate limits it */
    } else if (f->queued > 0 && f->idle == 0) {
        want = f->queued;
        why = PM_QUEUED;
    } else if (ratio >= BUSY_GROW && ratio > prev) {
        want = (int)ceil(f->busy / (BUSY_GROW - 0.1)) - serving; /* back to 0.7 busy */
        if (want < 1) want = 1;
        why = PM_BUSY;
    }
    if (want > 0 || f->starting > 0) { /* those starting first: their effect is not seen yet */
        st->low_since_ms = 0;
        return f->starting > 0 ? NOTHING : grow(c, f, st, want, why);
    }
    /* Between the thresholds the spawn rate stays: a worker seen idle for a tick
     * just after it started does not make the next growth start at 1 again. */
    int low = f->wait_p99_ms < c->target_wait_ms / 4 && ratio < BUSY_LOW && f->queued == 0;
    if (low) relax(st);
    if (low_long_enough(c, f, st, low) && f->workers > c->min_spare) return retire_one(PM_IDLE_TIMEOUT);
    return NOTHING;
}

struct pm_decision pm_decide(const struct pm_config *c, const struct pm_figures *f, struct pm_state *st)
{
    switch (c->mode) {
    case PM_DYNAMIC: return dynamic(c, f, st);
    case PM_ONDEMAND: return ondemand(c, f, st);
    case PM_ADAPTIVE: return adaptive(c, f, st);
    default: return NOTHING;
    }
}

int pm_listens(const struct pm_config *c, const struct pm_figures *f)
{
    enum pm_reason cap;
    return (c->mode == PM_ONDEMAND || c->mode == PM_ADAPTIVE) && f->idle + f->starting == 0 && room(c, f, &cap) > 0;
}

double pm_wait_p99_ms(const uint64_t counts[PM_WAIT_BUCKETS])
{
    uint64_t total = 0;
    for (int b = 0; b < PM_WAIT_BUCKETS; b++) total += counts[b];
    if (!total) return -1;
    double rank = 0.99 * (double)total, below = 0;
    for (int b = 0; b < SCOREBOARD_BUCKETS; b++) {
        if (below + (double)counts[b] >= rank) {
            double lo = b ? scoreboard_wait_le[b - 1] : 0, hi = scoreboard_wait_le[b];
            return (lo + (hi - lo) * (rank - below) / (double)counts[b]) * 1e3;
        }
        below += (double)counts[b];
    }
    return scoreboard_wait_le[SCOREBOARD_BUCKETS - 1] * 1e3;
}

void pm_add_waits(uint64_t into[PM_WAIT_BUCKETS], const struct scoreboard_counters *c)
{
    for (int r = 0; r < SCOREBOARD_ROUTES; r++) {
        uint64_t bucketed = 0;
        for (int b = 0; b < SCOREBOARD_BUCKETS; b++) {
            bucketed += c->wait_bucket[r][b];
            into[b] += c->wait_bucket[r][b];
        }
        into[SCOREBOARD_BUCKETS] += c->wait_count[r] > bucketed ? c->wait_count[r] - bucketed : 0;
    }
}

double pm_window_p99_ms(struct pm_window *w, const uint64_t cumulative[PM_WAIT_BUCKETS])
{
    /* The oldest entry of a full ring is the one this tick overwrites. */
    const uint64_t *oldest = w->filled == PM_WINDOW ? w->ring[w->next] : w->ring[0];
    uint64_t delta[PM_WAIT_BUCKETS];
    for (int b = 0; b < PM_WAIT_BUCKETS; b++)
        delta[b] = w->filled && cumulative[b] >= oldest[b] ? cumulative[b] - oldest[b] : 0;
    memcpy(w->ring[w->next], cumulative, sizeof w->ring[0]);
    w->next = (w->next + 1) % PM_WINDOW;
    if (w->filled < PM_WINDOW) w->filled++;
    return pm_wait_p99_ms(delta);
}
