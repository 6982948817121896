/* status: the master's HTTP operations endpoints: /healthz, /readyz, /status, /metrics. */
#ifndef PERFCGI_STATUS_H
#define PERFCGI_STATUS_H

#include <poll.h>
#include <stddef.h>
#include <stdio.h>

#include "base/listener.h"
#include "master/master.h"
#include "master/probe.h"
#include "base/scoreboard.h"
#include "base/settings.h"

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
};
typedef void (*status_snapshot_fn)(const void *ctx, struct status_view *out);

/* Figures sampled over time rather than read at one instant. */
struct status_peaks {
    int max_listen_queue;
    int max_active;
    uint64_t max_children_reached; /* times every worker was seen busy */
    int all_busy;
};

/* Updates peaks from the view. */
void status_peaks_sample(struct status_peaks *peaks, const struct status_view *v);

/*
 * The operations endpoints, served by libmicrohttpd (with a connection limit
 * and an idle timeout) from the master's own loop: its sockets are
 * non-blocking, so status_server_run only does what is ready and the loop
 * never waits for a status client. No thread: the master forks workers, and a
 * child must not start with a lock another thread held.
 */
struct status_server;

/* NULL if a socket cannot be served. */
struct status_server *status_server_new(const struct listener *listeners, int n, status_snapshot_fn snapshot,
                                        const void *ctx);
/* Stops serving; the sockets stay open. */
void status_server_free(struct status_server *s);
/* Serves these sockets from now on: stops serving the others, starts on new ones. */
void status_server_set_listeners(struct status_server *s, const struct listener *listeners, int n);
/* Appends the descriptors to poll for (at most max; returns how many) and
 * lowers *timeout_ms to when libmicrohttpd next has work (its timeouts). */
int status_server_pollfds(const struct status_server *s, struct pollfd *fds, int max, int *timeout_ms);
/* Accepts, reads, answers and times out what is ready; never blocks. */
void status_server_run(struct status_server *s);
/* Updates the peaks (the master calls it every tick). */
void status_sample(struct status_server *s);

#endif
