/* worker: what every worker class shares in its process: flags, privileges, the master. */
#ifndef PERFCGI_WORKER_H
#define PERFCGI_WORKER_H

#include <signal.h>
#include <sys/types.h>

#include "base/listener.h"
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

/* The classes, each run by worker_main (worker_sync.c, worker_thread.c, worker_event.c). */
int worker_sync_run(const struct worker_env *env);
int worker_thread_run(const struct worker_env *env);
int worker_event_run(const struct worker_env *env);

/* Started as root with `user` (and `group`) set: become them for good (the
 * workers and the backend prober). 0, or -1 after logging why. */
int worker_drop_privileges(const struct settings *cfg);

/* Set by the worker's signal handlers. */
extern volatile sig_atomic_t worker_stopping, worker_reopen_logs;

/* Tells the master this worker serves (call once booted). */
void worker_ready(const struct worker_env *env);
/* Makes the master look at this worker's slot now. */
void worker_wake_master(const struct worker_env *env);
/* Sleeps until the master stops the worker, reopening the logs on USR1. */
void worker_idle_until_stopped(void);
/* Connections queued on listener i at this moment (0 if the kernel does not
 * say): how many a stopping worker still takes, so that the backlog is
 * answered rather than reset, while new arrivals cannot hold it forever. */
int worker_backlog(const struct worker_env *env, int i);
/* Between requests: reopen logs after USR1. */
void worker_housekeeping(void);

#endif
