/* status: the master's HTTP operations endpoints: /healthz, /readyz, /status, /metrics. */
#ifndef PERFCGI_STATUS_H
#define PERFCGI_STATUS_H

#include <poll.h>
#include <stddef.h>
#include <stdio.h>

#include "listener.h"
#include "master.h"
#include "scoreboard.h"
#include "settings.h"

/* What the master shows: its settings, the live slots and what the dead left. */
struct status_view {
    const struct settings *cfg;
    const struct scoreboard_slot *slots;
    int nslots;
    const struct master_stats *stats;
    const struct listener *listeners;
    int nlisteners;
};
typedef void (*status_snapshot_fn)(const void *ctx, struct status_view *out);

/* Figures sampled over time rather than read at one instant. */
struct status_peaks {
    int max_listen_queue;
    int max_active;
    uint64_t max_children_reached; /* times every worker was seen busy */
    int all_busy;
};

/* Writes the HTTP response to one request head into out. */
void status_respond(const struct status_view *v, const struct status_peaks *peaks, const char *head, FILE *out);
/* Updates peaks from the view (the master calls it every tick). */
void status_peaks_sample(struct status_peaks *peaks, const struct status_view *v);

struct status_server;

struct status_server *status_server_new(const struct listener *listeners, int n, status_snapshot_fn snapshot,
                                        const void *ctx);
void status_server_free(struct status_server *s);
void status_server_set_listeners(struct status_server *s, const struct listener *listeners, int n);
void status_sample(struct status_server *s);
/* Appends the descriptors to poll (listeners, then clients); returns how many. */
int status_server_pollfds(const struct status_server *s, struct pollfd *fds, int max);
/* Accepts, reads and answers after a poll over the descriptors it added. */
void status_server_handle(struct status_server *s, const struct pollfd *fds, int n);

#endif
