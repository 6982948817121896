/* worker: what every worker class shares in its process: the stop and log flags, the
 * privilege drop, telling the master it serves, idling and housekeeping. */
#define _GNU_SOURCE
#include "worker/worker.h"

#include <errno.h>
#include <grp.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/listener.h"
#include "base/log.h"
#include "base/scoreboard.h"

volatile sig_atomic_t worker_stopping;
volatile sig_atomic_t worker_reopen_logs;

int worker_drop_privileges(const struct settings *cfg)
{
    uid_t uid;
    gid_t gid;
    char err[256];
    int owner = settings_owner(cfg, &uid, &gid, err, sizeof err);
    if (owner <= 0) {
        if (owner < 0) log_error("%s", err);
        return owner;
    }
    if (gid == (gid_t)-1) gid = getgid();
    if ((cfg->user[0] ? initgroups(cfg->user, gid) : setgroups(0, NULL)) != 0 || setgid(gid) != 0 ||
        (uid != (uid_t)-1 && setuid(uid) != 0)) {
        log_error("cannot switch to user %s group %s: %s", cfg->user, cfg->group, strerror(errno));
        return -1;
    }
    return 0;
}

void worker_wake_master(const struct worker_env *env)
{
    char b = 1;
    ssize_t w = write(env->wake_fd, &b, 1); /* a full pipe already wakes it */
    (void)w;
}

void worker_ready(const struct worker_env *env)
{
    if (scoreboard_self) atomic_store(&scoreboard_self->state, SLOT_IDLE);
    worker_wake_master(env);
}

void worker_idle_until_stopped(void)
{
    while (!worker_stopping) {
        worker_housekeeping();
        struct timespec ts = {0, 100 * 1000000L}; /* a signal cuts it short */
        nanosleep(&ts, NULL);
    }
}

int worker_backlog(const struct worker_env *env, int i)
{
    int queued, size;
    return listener_queue(&env->listeners[i], &queued, &size) == 0 && queued > 0 ? queued : 0;
}

void worker_housekeeping(void)
{
    if (worker_reopen_logs) {
        worker_reopen_logs = 0;
        if (log_reopen() != 0) log_warning("cannot reopen the logs (still writing the old files): %s", strerror(errno));
    }
}
