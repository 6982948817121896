/* worker: what every worker class shares, and the class table. */
#ifndef PERFCGI_WORKER_H
#define PERFCGI_WORKER_H

#include <signal.h>

#include "core/exchange.h"
#include "base/listener.h"
#include "backends/http_client.h"
#include "backends/pg_pool.h"
#include "backends/redis_client.h"
#include "base/settings.h"

/* A worker that exits with this cannot serve at all (bad settings, unusable
 * socket): the master stops instead of forking it again and again. */
#define WORKER_EXIT_BOOT_FAILED 3

struct worker_env {
    const struct settings *cfg;
    const struct listener *listeners;
    int nlisteners;
    pid_t master_pid;
    int wake_fd; /* a byte here makes the master look at our slot now */
};

struct worker_driver {
    const char *name;
    /* Serves until told to stop; returns the process exit code. */
    int (*run)(const struct worker_env *env);
};

const struct worker_driver *worker_driver_for(enum worker_class c);

/* Started as root with `user` (and `group`) set: become them for good (the
 * workers and the backend prober). 0, or -1 after logging why. */
int worker_drop_privileges(const struct settings *cfg);

/* Entry point of a freshly forked worker process (signals blocked on entry
 * until its handlers are set); never returns. */
void worker_main(const struct worker_env *env) __attribute__((noreturn));

/* Set by the worker's signal handlers. */
extern volatile sig_atomic_t worker_stopping, worker_reopen_logs;

/* The backends of one thread of a blocking worker class. */
struct blocking_backends {
    struct redis_client *redis;
    struct pg_pool *pool;
    struct http_client *http; /* made by the first upstream request */
};

/* Runs an exchange to its answer, doing each backend operation blocking. */
void worker_run_blocking(struct exchange *ex, struct blocking_backends *b);

/* Tells the master this worker serves (call once booted). */
void worker_ready(const struct worker_env *env);

/* One request in flight, kept by the driver next to its exchange: the worker
 * publishes how many are in flight and since when the oldest, so the master
 * can tell a hung worker of any class. */
struct worker_request {
    struct worker_request *prev, *next;
    int64_t started_us; /* since when it is in flight, its params being read included */
    int64_t begun_us;   /* since when its answer is being made */
    int reading;        /* in flight since worker_request_reading, not begun yet */
    char uri[128];      /* "GET /path?query", for the master's log if it hangs */
};
/* A request whose params are still being read is in flight too: the master's
 * `timeout` covers a peer that stops half-way. Then either begin, or drop if
 * the request could not be read. */
void worker_request_reading(struct worker_request *wr);
void worker_request_drop(struct worker_request *wr);
/* Bookkeeping around one request: scoreboard, access log, max_requests. */
void worker_request_begin(struct worker_request *wr, const struct exchange *ex);
void worker_request_end(const struct worker_env *env, struct worker_request *wr, const struct exchange *ex,
                        const struct pg_pool_stats *pool);
/* Shows the pool's figures in /status and /metrics: at each request's end,
 * and when a pool closed idle connections by itself. */
void worker_publish_pool(const struct pg_pool_stats *pool);
/* max_requests (plus jitter) is a bound: a worker takes one of its requests
 * before it accepts a connection (1), or learns it has none left (0); it then
 * takes no more and waits to be retired. A take that accepted nothing is
 * given back. worker_at_limit(): every request taken. */
int worker_take_request(void);
void worker_give_back_request(void);
int worker_at_limit(void);
/* Sleeps until the master stops the worker, reopening the logs on USR1. */
void worker_idle_until_stopped(void);
/* Between requests: reopen logs after USR1. */
void worker_housekeeping(void);

/* Fills req from FastCGI parameters (a NULL-terminated "NAME=value" array). */
void worker_request_from_params(struct request *req, char **envp, char *path_buf, size_t path_len);

int worker_sync_run(const struct worker_env *env);
int worker_thread_run(const struct worker_env *env);
int worker_event_run(const struct worker_env *env);

#endif
