/* worker_sync: the libfcgi serving loop: requests served blocking, one at a time per thread
 * (the sync class runs one in its only thread; the thread class, one per serving thread). */
#ifndef PERFCGI_WORKER_SYNC_H
#define PERFCGI_WORKER_SYNC_H

#include <pthread.h>

#include "backends/pg_pool.h"
#include "worker/worker.h"

/* One serving thread: its own FastCGI requests and Redis connection; the
 * process's PostgreSQL pool is shared. */
struct sync_server {
    const struct worker_env *env;
    struct pg_pool *pool;
    pthread_t thread;
    int started;
};

/* What both classes do before serving: the pool, or NULL after logging why. */
struct pg_pool *worker_sync_boot(const struct worker_env *env);
/* Serves until the worker stops (a struct sync_server *; a pthread start routine). */
void *worker_sync_serve(void *server);

#endif
