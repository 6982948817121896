/* accept_backlog: the connections an event worker takes without yielding after a pause. */
#ifndef PERFCGI_ACCEPT_BACKLOG_H
#define PERFCGI_ACCEPT_BACKLOG_H

#include "base/settings.h"

/* What one accept on a listener came to. */
enum accept_outcome {
    ACCEPT_TOOK,   /* a connection taken */
    ACCEPT_FAILED, /* not taken, for another reason than an empty queue (dropped, out of descriptors) */
    ACCEPT_NONE,   /* none waits (EAGAIN): the listener's queue is empty */
    ACCEPT_FULL,   /* worker_connections reached: the worker stops accepting */
};

/*
 * A worker that yields a new connection to a sibling pauses; a connection still waiting
 * when the pause ends has outwaited its sibling, and so have the ones queued behind it:
 * the worker takes them without yielding. Per listener, how many it still owes: the
 * queue seen at the pause's end, so that a steady load does not keep the worker from
 * yielding for ever, and an empty queue (EAGAIN) ends it at once: the queue is first in,
 * first out, so by then every connection seen has been taken, by this worker or a
 * sibling. An empty queue on one listener ends nothing on another.
 */
struct accept_backlog {
    int left[SETTINGS_MAX_BINDS];
};

/* The pause is over and a connection still waiting on listener i was taken, with
 * `queued` more behind it. */
void accept_backlog_seen(struct accept_backlog *b, int i, int queued);
/* Whether the next connection on listener i is taken without asking whether to yield. */
int accept_backlog_owed(const struct accept_backlog *b, int i);
/* After an accept on listener i while owed. */
void accept_backlog_after(struct accept_backlog *b, int i, enum accept_outcome r);

#endif
