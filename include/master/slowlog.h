/* slowlog: the master's record of a request busy too long (request_slowlog_timeout, or
 * before a `timeout` kill): endpoint, state, the backend operation it waits on, its stack. */
#ifndef PERFCGI_SLOWLOG_H
#define PERFCGI_SLOWLOG_H

#include <stdint.h>
#include <sys/types.h>

#include "base/scoreboard.h"
#include "base/settings.h"

/* A copy of one in-flight record, taken while the worker goes on (gen checked
 * around the copy), strings cut and made valid UTF-8. */
/* "cached_data step 12: waiting on postgresql", and room to spare. */
#define SLOWLOG_STATE 64

struct slowlog_view {
    uint32_t gen;
    int64_t started_us, op_started_us;
    char uri[3 * SCOREBOARD_URI], state[SLOWLOG_STATE], op[3 * SCOREBOARD_OP]; /* bytes not UTF-8 become %XX */
};
/* 0 when the record holds a request, copied into v; -1 when it is free or changed meanwhile. */
int slowlog_read(const struct scoreboard_req *r, struct slowlog_view *v);

/* At each tick, for the worker pid of slot s: writes one warning for each
 * request busy longer than request_slowlog_timeout (when not 0) and not
 * reported yet, and, when killing (the worker is past `timeout`), for each
 * request past `timeout`. A request in CPU first gets its stack: the worker's
 * thread is signalled, and the record waits for its answer a tick or two.
 * Returns 1 once the records of a kill are written (the kill may go), 0 to
 * come back next tick. *written counts the records. */
int slowlog_check(const struct settings *cfg, struct scoreboard_slot *s, pid_t pid, int64_t now_us, int killing,
                  uint64_t *written);

#endif
