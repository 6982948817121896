/* worker_main: the entry of a worker process, and the class table. */
#ifndef PERFCGI_WORKER_MAIN_H
#define PERFCGI_WORKER_MAIN_H

#include "worker/worker.h"

struct worker_driver {
    const char *name;
    /* Serves until told to stop; returns the process exit code. */
    int (*run)(const struct worker_env *env);
};

const struct worker_driver *worker_driver_for(enum worker_class c);

/* In the master, once before it forks the first worker: start-up work that every
 * worker would otherwise do, and keep resident, on its own. */
void worker_main_prefork(const struct settings *cfg);

/* Entry point of a freshly forked worker process (signals blocked on entry
 * until its handlers are set); never returns. */
void worker_main(const struct worker_env *env) __attribute__((noreturn));

#endif
