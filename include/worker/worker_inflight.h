/* worker_inflight: the scoreboard's record of each request in flight (what it does, what
 * it waits on), and its thread's stack on the master's request (the slowlog). */
#ifndef PERFCGI_WORKER_INFLIGHT_H
#define PERFCGI_WORKER_INFLIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "core/exchange.h"

/* Takes a free record of this worker's slot for a request in flight since
 * started_us, served by the calling thread; -1 when all are taken (the request
 * is only counted) or there is no scoreboard. */
int worker_inflight_take(int64_t started_us);
/* Its request line, "GET /path?query". */
void worker_inflight_uri(int rec, const char *uri);
/* The exchange runs on the CPU, or waits on ex->op (then written out: SQL text
 * and parameters, Redis command, URL), or its answer is being written; step:
 * how many backend operations it has asked for so far. */
enum inflight_doing { INFLIGHT_READING, INFLIGHT_CPU, INFLIGHT_WAITING, INFLIGHT_ANSWERING };
void worker_inflight_state(int rec, const struct exchange *ex, int step, enum inflight_doing doing);
/* For the master: a record's `doing` word in words, "io_intensive step 1: waiting
 * on postgresql"; uri: the record's, which names the endpoint of a request not
 * routed yet. */
void worker_inflight_describe(uint64_t doing, const char *uri, char *out, size_t outlen);
void worker_inflight_release(int rec);

/* In the master before it forks: readies the unwinder, so that a worker's
 * first stack (in a signal handler) only walks frames. */
void worker_inflight_prefork(void);
/* In a worker: the handler that writes a thread's stack when the master asks. */
void worker_inflight_signals(void);

#endif
