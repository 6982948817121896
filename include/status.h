/* status: the master's HTTP operations endpoints: /healthz, /readyz, /status, /metrics. */
#ifndef PERFCGI_STATUS_H
#define PERFCGI_STATUS_H

#include <stddef.h>
#include <stdio.h>

#include "listener.h"
#include "master.h"
#include "probe.h"
#include "scoreboard.h"
#include "settings.h"

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
/* Called with the server's lock held (see status_server_lock). */
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
 * The operations endpoints, served by libmicrohttpd on a thread of its own
 * (with a connection limit and an idle timeout), so the master's loop never
 * waits for a status client. That thread does libmicrohttpd's work, answers
 * included, under the server's lock; the master holds the lock while it changes
 * what the snapshot points to (settings, totals, sockets, the slots in use) and
 * while it forks.
 */
struct status_server;

/* NULL if a socket cannot be served. */
struct status_server *status_server_new(const struct listener *listeners, int n, status_snapshot_fn snapshot,
                                        const void *ctx);
/* Stops serving (waits for the thread); the sockets stay open. */
void status_server_free(struct status_server *s);
/* Serves these sockets from now on: stops serving the others, starts on new
 * ones. Takes the lock itself. */
void status_server_set_listeners(struct status_server *s, const struct listener *listeners, int n);
/* In a freshly forked child: closes the server's own pipe (its sockets and
 * epoll instances are the child's to close), and touches nothing else. */
void status_server_close_in_child(struct status_server *s);
void status_server_lock(struct status_server *s);
void status_server_unlock(struct status_server *s);
/* Updates the peaks (the master calls it every tick). */
void status_sample(struct status_server *s);

#endif
