/* probe: readiness: a child of the master checks Redis and PostgreSQL; /readyz reads what it found. */
#ifndef PERFCGI_PROBE_H
#define PERFCGI_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/settings.h"

enum probe_backend { PROBE_REDIS, PROBE_PG, PROBE_BACKENDS };
/* "redis", "postgresql": the names /readyz uses. */
extern const char *const probe_backend_names[PROBE_BACKENDS];

/* Shared memory the prober writes and the master's status server reads. */
struct probe_board;

/* Maps a board shared with every process forked afterwards; NULL on failure. */
struct probe_board *probe_board_create(void);
void probe_board_destroy(struct probe_board *b);

/* The master, before forking a prober: it counts as alive from now on. */
void probe_board_restart(struct probe_board *b);
/* The prober: PostgreSQL's connections left for the workers (capacity_postgresql's
 * answer, < 0 when unknown). The master: 1 and that figure when one came since *seen
 * (updated), else 0. */
void probe_board_capacity_set(struct probe_board *b, long pg_left);
int probe_board_capacity_take(const struct probe_board *b, unsigned *seen, long *pg_left);
/* Whether a probe has been under way (or the prober silent) for too long: the
 * master then kills the prober and starts another. */
int probe_board_stuck(const struct probe_board *b);

/* 1 when the backend's latest probe succeeded and is recent; else 0 and why
 * in err (the backend's error, or that no answer came for a while). */
int probe_board_ready(const struct probe_board *b, enum probe_backend which, char *err, size_t errlen);
/* The /readyz answer: every backend's state, and which is down; *all_up is 1
 * when none is. NULL if it could not be built. */
json_t *probe_readyz_json(const struct probe_board *b, int *all_up);

/* Entry point of the forked prober (signals blocked on entry): probes every
 * backend once a second, each on its own thread, until killed; never returns.
 * With capacity_when ("start", "reload"), it also checks PostgreSQL's connections
 * once (capacity_postgresql), on a thread of its own: the master never waits on it,
 * and takes the answer from the board (probe_board_capacity_take). */
void probe_main(struct probe_board *b, const struct settings *cfg, pid_t master_pid, const char *capacity_when)
    __attribute__((noreturn));

#endif
