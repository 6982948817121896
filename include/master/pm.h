/* pm: how many workers to run, decided each tick from what the master measures (PHP-FPM's pm, and adaptive). */
#ifndef PERFCGI_PM_H
#define PERFCGI_PM_H

#include <stdint.h>

#include "base/scoreboard.h"
#include "base/settings.h"

enum pm_action { PM_SPAWN, PM_RETIRE, PM_HOLD, PM_ACTIONS, PM_NOTHING = PM_ACTIONS };
enum pm_reason {
    PM_MIN_SPARE,      /* spawn: fewer idle workers than pm_min_spare_servers (adaptive: fewer workers) */
    PM_MAX_SPARE,      /* retire: more idle than pm_max_spare_servers for pm_process_idle_timeout */
    PM_QUEUED,         /* spawn: connections wait and no worker is idle */
    PM_QUEUE_WAIT,     /* spawn: queue wait p99 at half pm_target_queue_wait_ms or above */
    PM_BUSY,           /* spawn: busy ratio at 0.8 or above and rising */
    PM_IDLE_TIMEOUT,   /* retire: idle for pm_process_idle_timeout (adaptive: the pool's wait and use low as long) */
    PM_MAX_CHILDREN,   /* hold: more wanted, pm_max_children run */
    PM_RSS_BUDGET,     /* hold: one more would pass pm_rss_budget_mb */
    PM_PG_CONNECTIONS, /* hold: one more could open more PostgreSQL connections than are left */
    PM_REASONS
};
/* "spawn", "min_spare", ...: the names the log, /status and /metrics use. */
extern const char *const pm_action_names[PM_ACTIONS];
extern const char *const pm_reason_names[PM_REASONS];
/* The one action each reason is given for. */
extern const enum pm_action pm_reason_action[PM_REASONS];

/* The bounds, from the settings and PostgreSQL. */
struct pm_config {
    enum pm_mode mode;
    int max_children, min_spare, max_spare, max_spawn_rate;
    double idle_timeout_ms, target_wait_ms;
    long rss_budget_kb;   /* 0: none */
    long pg_left;         /* PostgreSQL connections left for the workers; < 0: unknown */
    int pg_per_worker;    /* pool_size + pool_max_overflow */
};

/* What the master measured this tick. Workers: live, not retiring, not being replaced. */
struct pm_figures {
    double now_ms;
    /* idle: serving with nothing in flight (and, event, taking connections); busy: the others serving */
    int workers, starting, idle, busy;
    double longest_idle_ms;            /* of the idle worker idle longest; 0: none idle */
    int queued;                        /* connections waiting in the listen queues */
    double wait_p99_ms;                /* over the last window; < 0: no request waited in it */
    long rss_kb_total, rss_kb_max;     /* of the workers */
};

/* What the controller keeps from tick to tick. */
struct pm_state {
    int spawn_rate;     /* workers the next spawn may start: doubles while more are needed */
    double low_since_ms; /* dynamic, adaptive: since when fewer workers would do (0: they would not) */
    double prev_busy_ratio;
    int holding;        /* the hold reason + 1 of the present episode, 0: none */
};

struct pm_decision {
    enum pm_action action; /* PM_NOTHING: leave the workers as they are */
    enum pm_reason reason;
    int count; /* workers to start (spawn) or 1 (retire: the idle one idle longest) */
};

void pm_config_from(struct pm_config *c, const struct settings *cfg, long pg_left);
/* The decision of one tick: pure but for *st. */
struct pm_decision pm_decide(const struct pm_config *c, const struct pm_figures *f, struct pm_state *st);
/* Whether a connection waiting now is the controller's to act on (ondemand and
 * adaptive, no worker idle nor starting, room for one more): the master then polls
 * the listeners rather than wait for its tick. */
int pm_listens(const struct pm_config *c, const struct pm_figures *f);

/* Queue-wait histograms here: the counts of the scoreboard_wait_le buckets (not
 * cumulative), then of the waits above the largest (counted as that bound). */
#define PM_WAIT_BUCKETS (SCOREBOARD_BUCKETS + 1)
/* Adds the queue waits of one worker's counters (or the gone ones') into such a histogram. */
void pm_add_waits(uint64_t into[PM_WAIT_BUCKETS], const struct scoreboard_counters *c);
/* Its p99 in ms, interpolated in its bucket; -1 if it is empty. */
double pm_wait_p99_ms(const uint64_t counts[PM_WAIT_BUCKETS]);

/* The queue waits of the last PM_WINDOW ticks, from the cumulative counts. */
#define PM_WINDOW 10
struct pm_window {
    uint64_t ring[PM_WINDOW][PM_WAIT_BUCKETS];
    int next, filled;
};
/* Adds this tick's cumulative counts; returns the p99 of the window, in ms, or -1. */
double pm_window_p99_ms(struct pm_window *w, const uint64_t cumulative[PM_WAIT_BUCKETS]);

/* Every decision, for /status and /metrics. */
struct pm_stats {
    enum pm_mode mode;
    int target;
    uint64_t decisions[PM_ACTIONS][PM_REASONS];
    int has_last;
    enum pm_action last_action;
    enum pm_reason last_reason;
    double last_wall_s, last_wait_p99_ms;
    int last_workers;
    double wait_p99_ms; /* of the last tick; < 0: none */
};

#endif
