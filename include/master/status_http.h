/* status_http: /healthz, /readyz, /status and /metrics served by libmicrohttpd in the master's loop. */
#ifndef PERFCGI_STATUS_HTTP_H
#define PERFCGI_STATUS_HTTP_H

#include <poll.h>

#include "base/listener.h"
#include "master/status_figures.h"

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
