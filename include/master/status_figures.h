/* status_figures: what the master shows, its workers and its history added up for /status and /metrics. */
#ifndef PERFCGI_STATUS_FIGURES_H
#define PERFCGI_STATUS_FIGURES_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "base/listener.h"
#include "base/scoreboard.h"
#include "base/settings.h"
#include "master/listen_overflow.h"

enum restart_reason {
    RESTART_CRASH,        /* died on its own */
    RESTART_TIMEOUT,      /* busy on one request past `timeout` */
    RESTART_MAX_REQUESTS, /* recycled after max_requests (+ jitter) */
    RESTART_MAX_RSS,      /* recycled above max_worker_rss_mb */
    RESTART_RELOAD,       /* replaced by HUP */
    RESTART_SCALE_DOWN,   /* TTOU */
    RESTART_PM,           /* retired by pm (dynamic, ondemand, adaptive) */
    RESTART_REASONS
};
/* "crash", "timeout", ...: the names the log, /status and /metrics use. */
extern const char *const restart_reason_names[RESTART_REASONS];

/* What the master keeps beyond the live slots, for /status and /metrics. */
struct master_stats {
    double start_wall_s;
    struct scoreboard_counters totals; /* of workers that are gone */
    uint64_t requests_before;          /* requests served by workers that are gone */
    uint64_t restarts[RESTART_REASONS];
    uint64_t slowlog_records; /* written by the slowlog, before kills included */
    struct listen_overflow overflow;
};

struct probe_board;
struct pm_stats;

/* What the master shows: its settings, the live slots, what the dead left and
 * the prober's findings. */
struct status_view {
    const struct settings *cfg;
    const struct scoreboard_slot *slots;
    int nslots;
    const struct master_stats *stats;
    const struct listener *listeners;
    int nlisteners;
    const struct probe_board *probe;
    /* The binary upgrade under way: "none"; as the old master "starting" (the new one
     * boots) or "retiring" (it serves); as the new one "taking_over" (its workers boot). */
    const char *upgrade;
    pid_t upgrade_pid; /* the other master of the upgrade, 0 when none */
    int draining;      /* TERM came: /readyz answers 503 while the workers still accept */
    int reload_pending; /* workers of a reload not yet replaced (reload_batch) */
    const struct pm_stats *pm;
};
typedef void (*status_snapshot_fn)(const void *ctx, struct status_view *out);

/* Figures sampled over time rather than read at one instant. */
struct status_peaks {
    int max_listen_queue;
    int max_active;
    uint64_t max_children_reached; /* times every worker was seen busy */
    int all_busy;
};

/* Indexes of status_totals' by-state arrays. */
enum status_worker_state { STATUS_IDLE, STATUS_ACTIVE, STATUS_WORKER_STATES };
enum status_pool_state { STATUS_POOL_OPEN, STATUS_POOL_BUSY, STATUS_POOL_STATES };

/* The figures of one instant: every worker, live or gone, added up. */
struct status_totals {
    struct scoreboard_counters c;
    uint64_t accepted;
    int workers[STATUS_WORKER_STATES], total;
    int pool[STATUS_POOL_STATES]; /* PostgreSQL connections of every live worker */
    int listen_queue, listen_queue_len;
    /* The peaks, never below the present, and the master's history. */
    int max_listen_queue, max_active;
    uint64_t max_children_reached;
    double start_wall_s;
    uint64_t restarts[RESTART_REASONS];
    uint64_t slowlog_records;
};

void status_add_up(const struct status_view *v, const struct status_peaks *peaks, struct status_totals *t);
/* Updates peaks from the view. */
void status_peaks_sample(struct status_peaks *peaks, const struct status_view *v);

/* The /status answer (full: with a row per worker); NULL if any part could
 * not be built, for the caller to answer 500 rather than leave a figure out. */
json_t *status_json(const struct status_view *v, const struct status_peaks *peaks, int full);
/* The /metrics answer, in Prometheus' text format. */
void status_metrics_text(const struct status_view *v, const struct status_peaks *peaks, FILE *out);

#endif
