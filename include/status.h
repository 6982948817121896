/* status: the master's HTTP operations endpoints (/healthz, /readyz, ...). */
#ifndef PERFCGI_STATUS_H
#define PERFCGI_STATUS_H

#include <poll.h>
#include <stddef.h>

#include "listener.h"
#include "settings.h"

/* What the master knows that /status reports. */
struct status_view {
    const struct settings *cfg;
    double start_wall_s;
    int total_processes;
};

/* Builds the HTTP response to one request head; returns its length. */
size_t status_respond(const struct status_view *view, const char *head, char *out, size_t outlen);

struct status_server;

struct status_server *status_server_new(const struct listener *listeners, int n);
void status_server_free(struct status_server *s);
/* Appends the descriptors to poll (listeners, then clients); returns how many. */
int status_server_pollfds(const struct status_server *s, struct pollfd *fds, int max);
/* Accepts, reads and answers after a poll over the descriptors it added. */
void status_server_handle(struct status_server *s, const struct pollfd *fds, int n, const struct status_view *view);

#endif
