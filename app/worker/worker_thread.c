/* worker_thread: the thread class: `threads` serving threads run the libfcgi serving loop,
 * the main thread takes the signals and trims the shared pool. */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "base/log.h"
#include "base/signals.h"
#include "worker/worker_request.h"
#include "worker/worker_sync.h"

/* The main thread takes the signals and does the housekeeping; the serving
 * threads block them, and get SIGUSR2 to leave their wait at the end. */
int worker_thread_run(const struct worker_env *env)
{
    struct pg_pool *pool = worker_sync_boot(env);
    if (!pool) return WORKER_EXIT_BOOT_FAILED;
    int n = env->cfg->threads;
    struct sync_server *servers = calloc((size_t)n, sizeof *servers);
    if (!servers) return WORKER_EXIT_BOOT_FAILED;

    sigset_t previous;
    signals_thread_main(&previous);
    worker_request_threaded();
    int rc = 0;
    for (int i = 0; i < n; i++) {
        servers[i] = (struct sync_server){.env = env, .pool = pool};
        if (pthread_create(&servers[i].thread, NULL, worker_sync_serve, &servers[i]) != 0) {
            log_error("cannot start thread %d of %d", i + 1, n);
            worker_stopping = 1;
            rc = WORKER_EXIT_BOOT_FAILED;
            break;
        }
        servers[i].started = 1;
    }
    if (rc == 0) worker_ready(env);
    /* Signals are blocked here except inside the wait, so none is lost
     * between the check and the wait. The wait also ends every
     * PG_OVERFLOW_SWEEP_MS, to close the pool's lingering overflow
     * connections even when no request comes. */
    const struct timespec sweep = {PG_OVERFLOW_SWEEP_MS / 1000, PG_OVERFLOW_SWEEP_MS % 1000 * 1000000L};
    while (!worker_stopping) {
        ppoll(NULL, 0, &sweep, &previous);
        worker_housekeeping();
        if (pg_pool_trim(pool) > 0) {
            struct pg_pool_stats ps;
            pg_pool_stats(pool, &ps);
            worker_publish_pool(&ps);
        }
    }
    for (int i = 0; i < n; i++)
        if (servers[i].started) pthread_kill(servers[i].thread, SIGUSR2);
    for (int i = 0; i < n; i++)
        if (servers[i].started) pthread_join(servers[i].thread, NULL);
    free(servers);
    pg_pool_free(pool);
    return rc;
}
