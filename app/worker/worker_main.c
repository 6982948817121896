/* worker_main: a freshly forked worker process: signals, privileges, then its class runs
 * (the class table). The top of the worker layer: the classes below it never call it. */
#define _GNU_SOURCE
#include "worker/worker_main.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "backends/http_common.h"
#include "base/log.h"
#include "base/signals.h"
#include "worker/worker.h"
#include "worker/worker_inflight.h"
#include "worker/worker_request.h"

static const struct worker_driver drivers[] = {
    [WORKER_SYNC] = {"sync", worker_sync_run},
    [WORKER_THREAD] = {"thread", worker_thread_run},
    [WORKER_EVENT] = {"event", worker_event_run},
};

const struct worker_driver *worker_driver_for(enum worker_class c)
{
    return &drivers[c];
}

static void *worker_main_no_work(void *arg)
{
    return arg;
}

void worker_main_prefork(const struct settings *cfg)
{
    /* libpq's default gssencmode=prefer loads Kerberos and reads its configuration in
     * every process that connects (about 1.5 MiB resident a worker) for a handshake
     * that fails without a ticket. A database_url naming gssencmode, or PGGSSENCMODE
     * set by the operator, still decides. */
    setenv("PGGSSENCMODE", "disable", 0);
    /* libcurl's global set-up (OpenSSL's with it) runs its code once here, as libcurl
     * asks: workers never touch those pages, which stay out of their resident memory
     * (~2.5 MiB a worker once /async-request has run). A failure is logged here,
     * and /async-request answers it with its error. */
    char err[256];
    if (http_common_init(err, sizeof err) != 0) log_warning("%s", err);
    worker_inflight_prefork();
    /* libc reaches the dynamic linker's TLS set-up through lazily bound calls: each
     * thread worker's first threads would look them up themselves, mapping in the
     * symbol tables of every loaded library (~850 KiB a worker). Two threads bind both
     * calls here once: the first allocates a stack, the second reuses it. */
    if (cfg->worker_class != WORKER_THREAD) return;
    for (int i = 0; i < 2; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker_main_no_work, NULL) == 0) pthread_join(t, NULL);
    }
}

void worker_main(const struct worker_env *env)
{
    log_set_role("worker");
    signals_worker(&worker_stopping, &worker_reopen_logs);
    worker_inflight_signals();
    if (worker_drop_privileges(env->cfg) != 0) _exit(WORKER_EXIT_BOOT_FAILED);
    /* Do not outlive the master. After the privilege drop: a change of
     * credentials clears the parent-death signal. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != env->master_pid) _exit(0);
    worker_request_limit_draw(env->cfg);
    const struct worker_driver *wc = worker_driver_for(env->cfg->worker_class);
    if (!wc->run) {
        log_error("worker class %s is not available in this build", wc->name);
        _exit(WORKER_EXIT_BOOT_FAILED);
    }
    _exit(wc->run(env));
}
