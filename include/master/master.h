/* master: the arbiter: spawns, replaces, recycles, reloads and stops the workers. */
#ifndef PERFCGI_MASTER_H
#define PERFCGI_MASTER_H

#include <stdint.h>

#include "base/listener.h"
#include "base/scoreboard.h"
#include "base/settings.h"

enum restart_reason {
    RESTART_CRASH,        /* died on its own */
    RESTART_TIMEOUT,      /* busy on one request past `timeout` */
    RESTART_MAX_REQUESTS, /* recycled after max_requests (+ jitter) */
    RESTART_MAX_RSS,      /* recycled above max_worker_rss_mb */
    RESTART_RELOAD,       /* replaced by HUP */
    RESTART_SCALE_DOWN,   /* TTOU */
    RESTART_REASONS
};
extern const char *const master_restart_reason_names[RESTART_REASONS];

/* What the master keeps beyond the live slots, for /status and /metrics. */
struct master_stats {
    double start_wall_s;
    struct scoreboard_counters totals; /* of workers that are gone */
    uint64_t requests_before;          /* requests served by workers that are gone */
    uint64_t restarts[RESTART_REASONS];
};

/*
 * Runs until stopped by a signal; returns the process exit code. Takes
 * ownership of cfg (heap-allocated) and of the listeners; argc/argv/envp are
 * read again on HUP.
 */
int master_run(struct settings *cfg, int argc, char **argv, char **envp, const struct listener *listeners,
               int nlisteners, const struct listener *status_listeners, int nstatus);

#endif
