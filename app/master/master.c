/* master: the arbiter: spawns, replaces, recycles, reloads and stops the workers. */
#define _GNU_SOURCE
#include "master/master.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/proc.h"
#include "master/capacity.h"
#include "master/pm.h"
#include "master/probe.h"
#include "master/sd_notify.h"
#include "master/slowlog.h"
#include "base/scoreboard.h"
#include "base/signals.h"
#include "master/status_http.h"
#include "master/upgrade.h"
#include "worker/worker_main.h"

/* Slots for the largest pool plus as many replacements starting beside it. */
#define MAX_SLOTS (2 * 1024 + 16)
/* The loop wakes at least this often to check hung and bloated workers. */
#define TICK_MS 100
/* More worker deaths than this within CRASH_WINDOW_MS slow respawning down. */
#define CRASH_BURST 5
#define CRASH_WINDOW_MS 1000.0
#define CRASH_BACKOFF_MS 1000.0
/* This many workers in a row dying before they ever served stops the master. */
#define BOOT_FAILURES_MAX 3
/* A quick stop, or a worker sent SIGABRT, gets this long before SIGKILL. */
#define KILL_AFTER_MS 2000.0
/* A backend prober that died by itself is started again after this long. */
#define PROBE_RESPAWN_MS 1000.0

enum stop_mode { RUNNING, STOP_GRACEFUL, STOP_QUICK };
enum phase { PHASE_STARTING, PHASE_SERVING, PHASE_RETIRING };
/* A binary upgrade, as the old master: the new one boots, then serves (this one retires). */
enum upgrade_state { UPGRADE_NONE, UPGRADE_STARTING, UPGRADE_RETIRING };

struct worker_rec {
    pid_t pid; /* 0: unused record */
    int slot;
    enum phase phase;
    int replace;              /* retire once a replacement serves; the reason, or -1 */
    enum restart_reason why;  /* of a retirement under way */
    double retire_sent_ms;    /* when TERM or ABRT went out */
    int killed;               /* SIGKILL sent */
    double idle_since_ms;     /* pm: since when nothing was in flight (0: not seen yet) */
    int64_t busy_seen;        /* pm: the slot's busy_mark then; a change means it served since */
};

struct master {
    struct settings *cfg;
    int argc;
    char **argv, **envp;
    struct listener listeners[SETTINGS_MAX_BINDS], status_listeners[SETTINGS_MAX_BINDS];
    int nlisteners, nstatus;
    struct status_server *status;
    struct scoreboard_slot *slots;
    int slots_used; /* high-water mark */
    struct worker_rec workers[MAX_SLOTS];
    int target; /* workers wanted */
    enum stop_mode stop;
    double stop_deadline_ms;
    int exit_code;
    double respawn_after_ms, deaths_since_ms;
    int deaths, boot_failures;
    struct master_stats stats;
    struct probe_board *probe; /* what the prober found, for /readyz */
    pid_t probe_pid;           /* 0: none running */
    double probe_after_ms;
    const char *capacity_when; /* "start" or "reload": the next prober checks PostgreSQL's connections first */
    unsigned capacity_seen;    /* the prober's last capacity figure taken (probe_board_capacity_take) */
    const char *pidfile; /* NULL: none */
    enum upgrade_state upgrade;
    pid_t new_master; /* the upgrade's, while it runs */
    double upgrade_started_ms;
    pid_t old_master; /* as the new master of an upgrade, until it was told to retire */
    double drain_until_ms; /* TERM came: the graceful stop begins then; 0: no drain */
    struct pm_config pm;
    struct pm_state pm_state;
    struct pm_window pm_window;
    struct pm_stats pm_stats;
    int pm_listen;       /* poll the listeners: a waiting connection is pm's to act on */
    int listener_ready;  /* the poll found one readable since the last tick */
    /* systemd: READY=1 is due once every worker serves (at start: READY_STARTING, after
     * a HUP: READY_RELOADING); with MAINPID= as the new master of a binary upgrade. */
    enum { READY_SENT, READY_STARTING, READY_RELOADING } ready_due;
    int main_pid_due;
};

/* Signal handlers only write the signal number here; the loop does the work. */
static int signal_pipe[2] = {-1, -1};
/* Workers write a byte here when their slot changed in a way the master must see now. */
static int wake_pipe[2] = {-1, -1};

static int install_signals(void)
{
    if (pipe2(signal_pipe, O_NONBLOCK | O_CLOEXEC) != 0 || pipe2(wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return -1;
    signals_master(signal_pipe[1]);
    return 0;
}

/* In a fresh child: closes every socket and epoll instance it inherited (the
 * status sockets and clients, the status server's epoll) but those in keep. */
static void close_inherited(const struct listener *keep, int nkeep)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name), kept = fd <= STDERR_FILENO || fd == dirfd(d);
        for (int i = 0; i < nkeep; i++) kept |= keep[i].fd == fd;
        struct stat st;
        char path[64], target[64] = "";
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t len = kept ? -1 : readlink(path, target, sizeof target - 1);
        if (len > 0) target[len] = '\0';
        if (!kept && ((fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) || strcmp(target, "anon_inode:[eventpoll]") == 0))
            close(fd);
    }
    closedir(d);
}

/* Forks a child of the master. In it, signals stay blocked until it has set
 * its own handlers (the worker and prober entry points unblock them), and it
 * keeps neither the master's pipes (but the write end of wake_pipe if `wake`)
 * nor any socket but `keep`. Returns as fork(). */
static pid_t fork_child(const struct listener *keep, int nkeep, int wake)
{
    sigset_t old;
    signals_block_all(&old);
    pid_t pid = fork();
    if (pid != 0) {
        signals_restore(&old);
        return pid;
    }
    signals_child_default();
    close(signal_pipe[0]);
    close(signal_pipe[1]);
    close(wake_pipe[0]);
    if (!wake) close(wake_pipe[1]);
    close_inherited(keep, nkeep);
    return 0;
}

static int free_slot(struct master *m)
{
    for (int i = 0; i < MAX_SLOTS; i++) {
        if (m->workers[i].pid == 0) {
            if (i >= m->slots_used) {
                m->slots_used = i + 1;
                scoreboard_set_used(m->slots_used);
            }
            return i;
        }
    }
    return -1;
}

static void spawn(struct master *m)
{
    int slot = free_slot(m);
    if (slot < 0) return;
    memset(&m->slots[slot], 0, sizeof m->slots[slot]);
    memset(scoreboard_reqs(&m->slots[slot]), 0, SCOREBOARD_REQS * sizeof(struct scoreboard_req));
    atomic_store(&m->slots[slot].state, SLOT_STARTING);
    pid_t pid = fork_child(m->listeners, m->nlisteners, 1);
    if (pid < 0) {
        log_error("fork failed: %s", strerror(errno));
        m->respawn_after_ms = clock_ms() + CRASH_BACKOFF_MS;
        return;
    }
    if (pid == 0) {
        scoreboard_take(&m->slots[slot]);
        atomic_store(&scoreboard_self->pid, getpid());
        struct worker_env env = {m->cfg, m->listeners, m->nlisteners, getppid(), wake_pipe[1]};
        worker_main(&env);
    }
    atomic_store(&m->slots[slot].pid, pid);
    m->workers[slot] = (struct worker_rec){.pid = pid, .slot = slot, .phase = PHASE_STARTING, .replace = -1};
    log_debug("worker %ld started in slot %d", (long)pid, slot);
}

/* The backend prober: a child that is no worker (no slot, no socket). */
static void probe_start(struct master *m)
{
    probe_board_restart(m->probe);
    pid_t pid = fork_child(NULL, 0, 0);
    if (pid < 0) {
        log_error("cannot start the backend prober: fork failed: %s", strerror(errno));
        m->probe_after_ms = clock_ms() + PROBE_RESPAWN_MS;
        return;
    }
    if (pid == 0) probe_main(m->probe, m->cfg, getppid(), m->capacity_when);
    m->probe_pid = pid;
    m->capacity_when = NULL;
    log_debug("backend prober %ld started", (long)pid);
}

/* SIGKILL, never waited for: reap() collects it whenever it is gone. */
static void probe_kill(struct master *m)
{
    if (m->probe_pid > 0) kill(m->probe_pid, SIGKILL);
    m->probe_pid = 0;
}

/* Keeps one prober running, and replaces one stuck on a backend call. */
static void probe_check(struct master *m)
{
    if (m->stop != RUNNING) return;
    if (m->probe_pid == 0) {
        if (clock_ms() >= m->probe_after_ms) probe_start(m);
    } else if (probe_board_stuck(m->probe)) {
        log_warning("the backend prober %ld is stuck on a probe; replacing it", (long)m->probe_pid);
        probe_kill(m);
        probe_start(m);
    }
}

static void retire(struct worker_rec *w, enum restart_reason why, int sig)
{
    if (w->phase == PHASE_RETIRING) return;
    w->phase = PHASE_RETIRING;
    w->why = why;
    w->retire_sent_ms = clock_ms();
    kill(w->pid, sig);
    log_info("retiring worker %ld (%s)", (long)w->pid, restart_reason_names[why]);
}

static void signal_all(struct master *m, int sig)
{
    for (int i = 0; i < m->slots_used; i++)
        if (m->workers[i].pid > 0) kill(m->workers[i].pid, sig);
}

static void begin_stop(struct master *m, enum stop_mode mode)
{
    if (m->stop == STOP_QUICK || m->stop == mode) return;
    m->stop = mode;
    m->stop_deadline_ms = clock_ms() + (mode == STOP_GRACEFUL ? m->cfg->graceful_timeout * 1e3 : KILL_AFTER_MS);
    probe_kill(m);
    log_info(mode == STOP_GRACEFUL ? "stopping gracefully" : "stopping now");
    signal_all(m, mode == STOP_GRACEFUL ? SIGTERM : SIGQUIT);
}

/* TERM: /readyz turns 503 at once while the workers keep serving and accepting
 * for drain_delay, so a load balancer that still routes here loses nothing;
 * then the graceful stop. A second TERM skips the rest of the delay. */
static void begin_drain(struct master *m)
{
    if (m->stop != RUNNING) return;
    if (m->drain_until_ms || m->cfg->drain_delay <= 0) {
        if (m->drain_until_ms) log_info("TERM again: the drain ends now");
        begin_stop(m, STOP_GRACEFUL);
        return;
    }
    m->drain_until_ms = clock_ms() + m->cfg->drain_delay * 1e3;
    log_info("draining: /readyz answers 503; the graceful stop begins in %g s", m->cfg->drain_delay);
}

static void note_crash(struct master *m)
{
    double now = clock_ms();
    if (now - m->deaths_since_ms > CRASH_WINDOW_MS) {
        m->deaths_since_ms = now;
        m->deaths = 0;
    }
    if (++m->deaths > CRASH_BURST) {
        log_warning("workers are dying fast; respawning in %.0f ms", CRASH_BACKOFF_MS);
        m->respawn_after_ms = now + CRASH_BACKOFF_MS;
    }
}

/* Whether a worker that died before serving failed by itself (an exit status,
 * a crash) rather than was killed from outside (the OOM killer's SIGKILL, an
 * operator's TERM): only the former says workers cannot boot. */
static int died_by_itself(int status)
{
    if (WIFEXITED(status)) return WEXITSTATUS(status) != 0;
    switch (WTERMSIG(status)) {
    case SIGSEGV:
    case SIGBUS:
    case SIGILL:
    case SIGFPE:
    case SIGABRT:
    case SIGSYS:
        return 1;
    default:
        return 0;
    }
}

/* A worker is gone: fold its counters into the totals and decide what it means. */
static void reaped(struct master *m, struct worker_rec *w, int status)
{
    struct scoreboard_slot *s = &m->slots[w->slot];
    scoreboard_add(&m->stats.totals, &s->counters);
    m->stats.totals.busy_us += scoreboard_busy_us(s, clock_us());
    scoreboard_release_held(s); /* what it held died with it */
    /* Requests it had accepted count as accepted even if it died holding them. */
    m->stats.requests_before += atomic_load(&s->requests) + (uint64_t)atomic_load(&s->active);
    atomic_store(&s->state, SLOT_FREE);
    atomic_store(&s->pid, 0);
    struct worker_rec gone = *w;
    memset(w, 0, sizeof *w);
    int counted = m->stop == RUNNING;
    if (counted) m->stats.restarts[gone.phase == PHASE_RETIRING ? gone.why : RESTART_CRASH]++;
    if (!counted || gone.phase == PHASE_RETIRING) return;

    int boot_failed = WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_BOOT_FAILED;
    if (WIFSIGNALED(status))
        log_warning("worker %ld was killed by signal %d; replacing it", (long)gone.pid, WTERMSIG(status));
    else
        log_warning("worker %ld exited with status %d; replacing it", (long)gone.pid, WEXITSTATUS(status));
    if (gone.phase == PHASE_STARTING && died_by_itself(status) &&
        (boot_failed || ++m->boot_failures >= BOOT_FAILURES_MAX)) {
        log_error("workers cannot boot (see the lines above for why); stopping");
        m->exit_code = 1;
        begin_stop(m, STOP_QUICK);
        return;
    }
    note_crash(m);
}

/* Every listening socket, of both kinds: those a new master inherits. */
static int all_listeners(const struct master *m, struct listener *out)
{
    memcpy(out, m->listeners, sizeof *out * (size_t)m->nlisteners);
    memcpy(out + m->nlisteners, m->status_listeners, sizeof *out * (size_t)m->nstatus);
    return m->nlisteners + m->nstatus;
}

/* While another master serves the same sockets, closing one leaves its unix socket file. */
static void share_listeners(struct master *m, int shared)
{
    for (int i = 0; i < m->nlisteners; i++) m->listeners[i].shared = shared;
    for (int i = 0; i < m->nstatus; i++) m->status_listeners[i].shared = shared;
}

/* USR2: the binary at the path perfcgi was started from is executed again, with the
 * same arguments and the listening sockets inherited; this master serves on until the
 * new one says it serves (SIGWINCH), or rolls back if the new one exits before. */
static void upgrade_start(struct master *m)
{
    const char *refusal = m->stop != RUNNING || m->drain_until_ms ? "the master is stopping" : upgrade_refusal();
    if (!refusal && m->upgrade != UPGRADE_NONE) refusal = "an upgrade is under way already";
    if (refusal) {
        log_warning("USR2: %s; ignored", refusal);
        return;
    }
    if (upgrade_move_pidfile(m->pidfile) != 0) {
        log_error("USR2: cannot move the pidfile %s to .oldbin: %s; no upgrade", m->pidfile, strerror(errno));
        return;
    }
    struct listener keep[2 * SETTINGS_MAX_BINDS];
    int n = all_listeners(m, keep);
    pid_t pid = fork_child(keep, n, 0);
    if (pid < 0) {
        log_error("USR2: fork failed: %s; no upgrade", strerror(errno));
        upgrade_restore_pidfile(m->pidfile);
        return;
    }
    if (pid == 0) {
        notify_exec_env();
        upgrade_exec(keep, n, m->argv);
        log_error("USR2: cannot execute %s: %s", upgrade_binary(), strerror(errno));
        _exit(127);
    }
    signals_master_new_master(pid);
    m->upgrade = UPGRADE_STARTING;
    m->new_master = pid;
    m->upgrade_started_ms = clock_ms();
    share_listeners(m, 1);
    log_info("USR2: started new master %ld (%s)", (long)pid, upgrade_binary());
}

/* The new master serves (its SIGWINCH): this one stops gracefully, leaving it the
 * sockets, their files and the pidfile. */
static void upgrade_served(struct master *m)
{
    if (m->upgrade != UPGRADE_STARTING) return;
    m->upgrade = UPGRADE_RETIRING;
    signals_master_new_master(0);
    log_info("USR2: new master %ld serves (%.0f ms after USR2); retiring", (long)m->new_master,
             clock_ms() - m->upgrade_started_ms);
    begin_stop(m, STOP_GRACEFUL);
}

/* The new master is gone. Before it served (a failed boot, or QUIT, INT or TERM sent
 * to it): the upgrade is rolled back and this master serves on as before. */
static void upgrade_reaped(struct master *m, int status)
{
    char how[64];
    if (WIFEXITED(status)) snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
    else snprintf(how, sizeof how, "was killed by signal %d", WTERMSIG(status));
    if (m->upgrade == UPGRADE_STARTING) {
        log_error("USR2: the new master %ld %s before it served; upgrade rolled back, this master serves on",
                  (long)m->new_master, how);
        upgrade_restore_pidfile(m->pidfile);
        share_listeners(m, 0);
        m->upgrade = UPGRADE_NONE;
    } else {
        log_info("the new master %ld %s", (long)m->new_master, how);
    }
    m->new_master = 0;
    signals_master_new_master(0);
}

static int workers_serving(const struct master *m)
{
    int serving = 0;
    for (int i = 0; i < m->slots_used; i++) serving += m->workers[i].pid > 0 && m->workers[i].phase == PHASE_SERVING;
    return serving;
}

/* Workers of a reload not yet replaced (reload_batch holds some back). */
static int reload_pending(const struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->slots_used; i++)
        n += m->workers[i].pid && m->workers[i].phase != PHASE_RETIRING && m->workers[i].replace == RESTART_RELOAD;
    return n;
}

/* As the new master of an upgrade, once every worker serves (as a reload's replacements
 * must before the workers they replace go): the old master is told to retire, and the
 * sockets are this master's alone (their files go with it). */
static void upgrade_take_over(struct master *m)
{
    if (!m->old_master || m->stop != RUNNING) return;
    if (workers_serving(m) < m->target) return;
    if (getppid() == m->old_master && kill(m->old_master, SIGWINCH) == 0)
        log_info("new master serving; old master %ld told to retire", (long)m->old_master);
    else
        log_warning("new master serving; the old master %ld is gone already", (long)m->old_master);
    share_listeners(m, 0);
    m->old_master = 0;
}

static void reap(struct master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == m->probe_pid) { /* it died by itself: we kill it with probe_kill() */
            log_warning("the backend prober %ld exited (status %d); restarting it", (long)pid, status);
            m->probe_pid = 0;
            m->probe_after_ms = clock_ms() + PROBE_RESPAWN_MS;
            continue;
        }
        if (pid == m->new_master) {
            upgrade_reaped(m, status);
            continue;
        }
        for (int i = 0; i < m->slots_used; i++) {
            if (m->workers[i].pid == pid) {
                reaped(m, &m->workers[i], status);
                break;
            }
        }
    }
}

/* Looks at every worker: boot done, hung, bloated, asking to be recycled. */
static void check_workers(struct master *m)
{
    double now = clock_ms();
    int64_t now_us = clock_us();
    const struct settings *cfg = m->cfg;
    for (int i = 0; i < m->slots_used; i++) {
        struct worker_rec *w = &m->workers[i];
        if (w->pid == 0) continue;
        struct scoreboard_slot *s = &m->slots[i];
        int state = atomic_load(&s->state);
        if (w->phase == PHASE_STARTING && (state == SLOT_IDLE || state == SLOT_BUSY)) {
            w->phase = PHASE_SERVING;
            m->boot_failures = 0;
        }
        long rss = proc_rss_kb(w->pid);
        atomic_store(&s->rss_kb, rss);
        if (w->phase == PHASE_RETIRING) {
            double grace = w->why == RESTART_TIMEOUT ? KILL_AFTER_MS : cfg->graceful_timeout * 1e3;
            if (!w->killed && now - w->retire_sent_ms > grace) {
                log_warning("worker %ld did not stop in time; killing it", (long)w->pid);
                kill(w->pid, SIGKILL);
                w->killed = 1;
            }
            continue;
        }
        int64_t started = atomic_load(&s->request_started_us);
        int hung = state == SLOT_BUSY && started && (double)(now_us - started) / 1e6 > cfg->timeout;
        /* The slowlog's records, and before a kill the hung request's own: the
         * kill waits a tick or two for the stack of a request in CPU. */
        if ((hung || (cfg->request_slowlog_timeout > 0 && state == SLOT_BUSY)) &&
            !slowlog_check(cfg, s, w->pid, now_us, hung, &m->stats.slowlog_records) && hung)
            continue;
        if (hung) {
            /* The worker wrote it: bounded and escaped before it reaches the log. */
            char raw[sizeof s->oldest_uri + 1], uri[4 * sizeof s->oldest_uri];
            memcpy(raw, s->oldest_uri, sizeof s->oldest_uri);
            raw[sizeof s->oldest_uri] = '\0';
            log_error("worker %ld has been busy for over %g s on \"%s\"; aborting it", (long)w->pid, cfg->timeout,
                      log_escape(raw, uri, sizeof uri));
            retire(w, RESTART_TIMEOUT, SIGABRT);
            continue;
        }
        if (w->replace < 0 && cfg->max_worker_rss_mb && rss > (long)cfg->max_worker_rss_mb * 1024) {
            log_info("worker %ld uses %ld MiB, over max_worker_rss_mb; replacing it", (long)w->pid, rss / 1024);
            w->replace = RESTART_MAX_RSS;
        }
        if (w->replace < 0 && atomic_load(&s->wants_retire)) w->replace = RESTART_MAX_REQUESTS;
    }
}

/* Keeps `target` workers serving: starts replacements first, and retires the
 * workers they replace only once they serve, so capacity never dips. */
static void balance(struct master *m)
{
    if (m->stop != RUNNING) return;
    int serving = 0, starting = 0, keep = 0, reloading = 0, overlap = 0;
    for (int i = 0; i < m->slots_used; i++) {
        struct worker_rec *w = &m->workers[i];
        if (w->pid == 0) continue;
        /* A reload's old worker still exiting counts in its batch's overlap. */
        if (w->phase == PHASE_RETIRING) {
            overlap += w->why == RESTART_RELOAD;
            continue;
        }
        if (w->phase == PHASE_STARTING) starting++;
        else serving++;
        if (w->replace < 0) keep++;
        reloading += w->replace == RESTART_RELOAD;
    }
    /* Workers to let go: those marked for replacement once enough others serve
     * (first, so that a batch's old worker counts in its overlap at once), then
     * the oldest beyond the target (TTOU). */
    int surplus = serving - m->target;
    for (int i = 0; i < m->slots_used && surplus > 0; i++) {
        struct worker_rec *w = &m->workers[i];
        if (w->pid && w->phase == PHASE_SERVING && w->replace >= 0) {
            reloading -= w->replace == RESTART_RELOAD;
            overlap += w->replace == RESTART_RELOAD;
            retire(w, (enum restart_reason)w->replace, SIGTERM);
            surplus--;
        }
    }
    /* reload_batch: a reload starts at most that many new workers at a time,
     * the next once an old one has been replaced and has exited. */
    int room = (reloading || overlap) && m->cfg->reload_batch ? m->cfg->reload_batch - starting - overlap : m->target;
    if (clock_ms() >= m->respawn_after_ms)
        for (int n = keep; n < m->target && room > 0; n++) spawn(m), starting++, room--;
    for (int i = 0; i < m->slots_used && surplus > 0 && starting == 0; i++) {
        struct worker_rec *w = &m->workers[i];
        if (w->pid && w->phase == PHASE_SERVING) {
            retire(w, RESTART_SCALE_DOWN, SIGTERM);
            surplus--;
        }
    }
}

/* pm's bounds from the settings, afresh (start, HUP); PostgreSQL's connections left
 * for the workers, or -1. */
/* PostgreSQL's connections left for the workers, once the prober has asked. */
static void pm_take_capacity(struct master *m)
{
    long left;
    if (probe_board_capacity_take(m->probe, &m->capacity_seen, &left)) m->pm.pg_left = left;
}

/* pm's bounds from the settings in force. PostgreSQL's connections are unknown until
 * the prober has asked (pm_take_capacity): a figure from before is dropped. */
static void pm_configure(struct master *m)
{
    long stale;
    probe_board_capacity_take(m->probe, &m->capacity_seen, &stale);
    pm_config_from(&m->pm, m->cfg, -1);
    m->pm_state = (struct pm_state){.spawn_rate = 1};
    m->pm_stats.mode = m->cfg->pm;
    m->pm_stats.target = m->target;
    m->pm_stats.wait_p99_ms = -1; /* pm static measures none */
}

/* What pm decides on; *longest: the idle worker idle longest (NULL: none). Workers
 * retiring or marked for replacement are not pm's to count. */
static void pm_measure(struct master *m, struct pm_figures *f, struct worker_rec **longest)
{
    double now = clock_ms();
    *f = (struct pm_figures){.now_ms = now};
    *longest = NULL;
    uint64_t waits[PM_WAIT_BUCKETS] = {0};
    pm_add_waits(waits, &m->stats.totals);
    for (int i = 0; i < m->slots_used; i++) {
        struct worker_rec *w = &m->workers[i];
        if (!w->pid) continue;
        struct scoreboard_slot *s = &m->slots[i];
        pm_add_waits(waits, &s->counters);
        if (w->phase == PHASE_RETIRING || w->replace >= 0) continue;
        f->workers++;
        long rss = atomic_load(&s->rss_kb);
        f->rss_kb_total += rss;
        if (rss > f->rss_kb_max) f->rss_kb_max = rss;
        if (w->phase == PHASE_STARTING) {
            f->starting++;
            continue;
        }
        int64_t mark = atomic_load(&s->busy_mark); /* changes with every request served */
        /* An event worker full of kept-alive connections takes no new one: not idle. */
        int busy = atomic_load(&s->active) > 0 ||
                   (m->cfg->worker_class == WORKER_EVENT && !atomic_load(&s->accepting));
        if (busy || !w->idle_since_ms || mark != w->busy_seen) {
            w->idle_since_ms = now;
            w->busy_seen = mark;
        }
        if (busy) {
            f->busy++;
            continue;
        }
        f->idle++;
        if (!*longest || w->idle_since_ms < (*longest)->idle_since_ms) *longest = w;
    }
    if (*longest) f->longest_idle_ms = now - (*longest)->idle_since_ms;
    for (int i = 0; i < m->nlisteners; i++) {
        int queued, backlog;
        if (listener_queue(&m->listeners[i], &queued, &backlog) == 0) f->queued += queued;
    }
    if (m->listener_ready && !f->queued) f->queued = 1;
    m->listener_ready = 0;
    f->wait_p99_ms = pm_window_p99_ms(&m->pm_window, waits);
}

/* pm's decision of this tick, applied through the target balance() keeps; taken
 * only once the workers wanted are there (not while a reload or a respawn fills).
 * It goes on while draining: the workers still accept then. */
static void pm_tick(struct master *m)
{
    m->pm_listen = 0;
    m->pm_stats.target = m->target;
    if (m->pm.mode == PM_STATIC) return;
    struct pm_figures f;
    struct worker_rec *longest;
    pm_measure(m, &f, &longest);
    m->pm_stats.wait_p99_ms = f.wait_p99_ms;
    if (m->stop != RUNNING || m->old_master || f.workers < m->target) return;
    struct pm_decision d = pm_decide(&m->pm, &f, &m->pm_state);
    if (d.action == PM_NOTHING) m->pm_listen = pm_listens(&m->pm, &f);
    if (d.action == PM_NOTHING || (d.action == PM_RETIRE && !longest)) return;
    char figures[200];
    snprintf(figures, sizeof figures,
             "%d workers (most %d), %d idle, %d busy, %d starting, %d queued, queue wait p99 %.1f ms (target %g ms)",
             f.workers, m->pm.max_children, f.idle, f.busy, f.starting, f.queued,
             f.wait_p99_ms < 0 ? 0 : f.wait_p99_ms, m->pm.target_wait_ms);
    const char *why = pm_reason_names[d.reason];
    if (d.action == PM_SPAWN) {
        m->target = f.workers + d.count;
        log_info("pm: spawning %d worker%s (%s): %s", d.count, d.count == 1 ? "" : "s", why, figures);
    } else if (d.action == PM_RETIRE) {
        m->target = f.workers - 1;
        log_info("pm: retiring worker %ld, idle %.1f s (%s): %s", (long)longest->pid, f.longest_idle_ms / 1e3, why,
                 figures);
        retire(longest, RESTART_PM, SIGTERM);
    } else {
        log_warning("pm: more workers wanted, none added (%s): %s", why, figures);
    }
    struct pm_stats *st = &m->pm_stats;
    st->decisions[d.action][d.reason]++;
    st->has_last = 1;
    st->last_action = d.action;
    st->last_reason = d.reason;
    st->last_wall_s = clock_wall_s();
    st->last_wait_p99_ms = f.wait_p99_ms;
    st->last_workers = f.workers;
    st->target = m->target;
}

/* The sockets of a reload: a bind reuses the running socket of the same
 * address, or is a socket opened for it. */
struct socket_set {
    struct listener ls[SETTINGS_MAX_BINDS];
    int opened[SETTINGS_MAX_BINDS];
    int n;
};

/* Closes the sockets the set opened (a reload that does not happen). */
static void sockets_abandon(struct socket_set *set)
{
    for (int i = 0; i < set->n; i++)
        if (set->opened[i]) listener_close(&set->ls[i]);
    set->n = 0;
}

/* Opens what binds needs beyond the running sockets; touches none of those. */
static int sockets_prepare(const struct settings_binds *binds, const struct listener *running, int nrunning,
                           const struct settings *cfg, struct socket_set *set, char *err, size_t errlen)
{
    int used[SETTINGS_MAX_BINDS] = {0};
    set->n = 0;
    for (int i = 0; i < binds->count; i++) {
        int found = -1;
        for (int j = 0; j < nrunning && found < 0; j++)
            if (!used[j] && strcmp(running[j].addr, binds->addr[i]) == 0) found = j;
        if (found >= 0) {
            set->ls[i] = running[found];
            used[found] = 1;
        } else if (listener_open(&set->ls[i], binds->addr[i], cfg->backlog, cfg->socket_mode, err, errlen) != 0) {
            sockets_abandon(set);
            return -1;
        }
        set->opened[i] = found < 0;
        set->n = i + 1;
    }
    return 0;
}

/* The set replaces the running sockets; those it does not reuse are closed. */
static void sockets_commit(const struct socket_set *set, struct listener *running, int *nrunning)
{
    for (int j = 0; j < *nrunning; j++) {
        int reused = 0;
        for (int i = 0; i < set->n; i++) reused |= !set->opened[i] && set->ls[i].fd == running[j].fd;
        if (!reused) listener_close(&running[j]);
    }
    memcpy(running, set->ls, sizeof set->ls[0] * (size_t)set->n);
    *nrunning = set->n;
}

/* HUP: read the configuration again; on success new workers replace every old
 * one. Every new socket is opened before anything changes: if one cannot be,
 * the running sockets, settings and workers stay as they are. */
static void reload(struct master *m)
{
    struct settings *next = calloc(1, sizeof *next);
    enum settings_action action;
    char err[1024];
    uid_t uid;
    gid_t gid;
    if (!next || settings_load(next, m->argc, m->argv, m->envp, &action, err, sizeof err) != 0 ||
        settings_owner(next, &uid, &gid, err, sizeof err) < 0) {
        log_error("reload: %s; the running configuration stays", next ? err : "out of memory");
        settings_free(next);
        free(next);
        return;
    }
    char note[512];
    if (capacity_files(next, note, sizeof note, err, sizeof err) != 0) {
        log_error("reload: %s; the running configuration stays", err);
        settings_free(next);
        free(next);
        return;
    }
    if (note[0]) log_info("reload: %s", note);
    struct socket_set binds = {.n = 0}, status = {.n = 0};
    if (sockets_prepare(&next->bind, m->listeners, m->nlisteners, next, &binds, err, sizeof err) != 0 ||
        sockets_prepare(&next->status_bind, m->status_listeners, m->nstatus, next, &status, err, sizeof err) != 0) {
        sockets_abandon(&binds); /* a set that failed has closed its own */
        log_error("reload: cannot listen on %s; the running configuration stays", err);
        settings_free(next);
        free(next);
        return;
    }
    struct settings *old = m->cfg;
    sockets_commit(&binds, m->listeners, &m->nlisteners);
    sockets_commit(&status, m->status_listeners, &m->nstatus);
    m->cfg = next;
    settings_free(old);
    free(old);
    status_server_set_listeners(m->status, m->status_listeners, m->nstatus);
    /* A file that cannot be opened (a symlink is not followed) keeps the old one. */
    if (log_open(next->error_log, next->log_level) != 0)
        log_error("reload: cannot open error_log %s: %s; writing to the old one", next->error_log, strerror(errno));
    if (log_access_open(next->access_log) != 0)
        log_error("reload: cannot open access_log %s: %s; writing to the old one", next->access_log,
                  strerror(errno));
    if (log_access_format(next->access_log_format, err, sizeof err) != 0)
        log_error("reload: access_log_format: %s; the old format stays", err);
    log_chown(next);
    if (settings_owner(next, &uid, &gid, err, sizeof err) > 0)
        for (int i = 0; i < m->nlisteners; i++)
            if (listener_chown(&m->listeners[i], uid, gid, err, sizeof err) != 0) log_warning("reload: %s", err);
    m->target = settings_pm_start(next);
    /* Workers still starting were meant to replace others under the previous
     * settings: they serve nothing yet, so they go now instead of once their own
     * replacements serve (k quick HUPs would otherwise start k generations). */
    for (int i = 0; i < m->slots_used; i++) {
        struct worker_rec *w = &m->workers[i];
        if (!w->pid || w->phase == PHASE_RETIRING) continue;
        if (w->phase == PHASE_STARTING) retire(w, RESTART_RELOAD, SIGTERM);
        else w->replace = RESTART_RELOAD;
    }
    probe_kill(m); /* the next one probes the backends of the new settings, and checks their capacity */
    m->capacity_when = "reload";
    log_info("reloaded: %d %s workers (pm %s) replace the running ones", m->target,
             settings_class_name(next->worker_class), settings_pm_name(next->pm));
    pm_configure(m);
}

/* TTIN (+1), TTOU (-1): one worker more or fewer, in [1, 1024]; pm static only,
 * as the other modes set the count themselves. */
static void resize(struct master *m, int by)
{
    const char *sig = by > 0 ? "TTIN" : "TTOU";
    if (m->cfg->pm != PM_STATIC) {
        log_info("%s: ignored, pm %s sets the worker count", sig, settings_pm_name(m->cfg->pm));
        return;
    }
    if (m->target + by >= 1 && m->target + by <= 1024) m->target += by;
    log_info("%s: %d workers wanted", sig, m->target);
}

static void handle_signals(struct master *m)
{
    unsigned char sigs[64];
    ssize_t n;
    while ((n = read(signal_pipe[0], sigs, sizeof sigs)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            switch (sigs[i]) {
            case SIGCHLD: reap(m); break;
            case SIGTERM:
                notify_stopping();
                begin_drain(m);
                break;
            case SIGINT:
            case SIGQUIT:
                notify_stopping();
                begin_stop(m, STOP_QUICK);
                break;
            case SIGHUP:
                if (m->stop != RUNNING || m->drain_until_ms) break;
                /* READY=1 once the new workers serve (at once if the reload failed). */
                notify_reloading();
                m->ready_due = READY_RELOADING;
                reload(m);
                break;
            case SIGTTIN:
            case SIGTTOU: resize(m, sigs[i] == SIGTTIN ? 1 : -1); break;
            case SIGUSR2: upgrade_start(m); break;
            case SIGWINCH: upgrade_served(m); break;
            case SIGUSR1:
                if (log_reopen() != 0) log_error("USR1: cannot reopen the logs: %s", strerror(errno));
                log_chown(m->cfg); /* new files, for workers run as `user` */
                signal_all(m, SIGUSR1);
                break;
            }
        }
    }
}

static int live_workers(const struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->slots_used; i++) n += m->workers[i].pid > 0;
    return n;
}

static void snapshot(const void *ctx, struct status_view *v)
{
    const struct master *m = ctx;
    v->cfg = m->cfg;
    v->slots = m->slots;
    v->nslots = m->slots_used;
    v->stats = &m->stats;
    v->listeners = m->listeners;
    v->nlisteners = m->nlisteners;
    v->probe = m->probe;
    v->upgrade = m->old_master                    ? "taking_over"
                 : m->upgrade == UPGRADE_STARTING ? "starting"
                 : m->upgrade == UPGRADE_RETIRING ? "retiring"
                                                  : "none";
    v->upgrade_pid = m->old_master ? m->old_master : m->new_master;
    v->draining = m->stop != RUNNING || m->drain_until_ms;
    v->reload_pending = reload_pending(m);
    v->pm = &m->pm_stats;
}

/* What systemd hears on the master's tick: READY=1 once every wanted worker serves
 * and no old one waits for its replacement (the first time, after a reload, and as
 * the new master of an upgrade once it took over), then a STATUS= line now and then.
 * An old master retiring for an upgrade, or a new one still taking over, leaves the
 * talking to the other. */
static void tell_systemd(struct master *m)
{
    if (!notify_enabled() || m->old_master || m->upgrade == UPGRADE_RETIRING) return;
    int ready = m->ready_due && m->stop == RUNNING && workers_serving(m) >= m->target && !reload_pending(m);
    if (!ready && !notify_status_due()) return;
    struct status_view v;
    snapshot(m, &v);
    if (ready) {
        notify_ready(&v, m->main_pid_due);
        m->ready_due = READY_SENT;
        m->main_pid_due = 0;
        return;
    }
    notify_status(&v, m->stop != RUNNING || m->drain_until_ms   ? "stopping"
                      : m->ready_due == READY_RELOADING         ? "reloading"
                      : m->ready_due == READY_STARTING          ? "starting"
                                                                : NULL);
}

int master_run(struct settings *cfg, int argc, char **argv, char **envp, const struct listener *listeners,
               int nlisteners, const struct listener *status_listeners, int nstatus, const char *pidfile)
{
    struct master *m = calloc(1, sizeof *m);
    if (!m) return 1;
    *m = (struct master){.cfg = cfg, .argc = argc, .argv = argv, .envp = envp, .nlisteners = nlisteners,
                         .nstatus = nstatus, .target = settings_pm_start(cfg), .pidfile = pidfile,
                         .old_master = upgrade_old_master(), .ready_due = READY_STARTING};
    m->main_pid_due = m->old_master != 0;
    memcpy(m->listeners, listeners, sizeof *listeners * (size_t)nlisteners);
    memcpy(m->status_listeners, status_listeners, sizeof *status_listeners * (size_t)nstatus);
    m->slots = scoreboard_create(MAX_SLOTS);
    m->probe = probe_board_create();
    m->stats.start_wall_s = clock_wall_s();
    if (!m->slots || !m->probe || install_signals() != 0 ||
        !(m->status = status_server_new(m->status_listeners, m->nstatus, snapshot, m))) {
        log_error("cannot start the master: %s", strerror(errno));
        return 1;
    }
    log_info("perfcgi %s: %d %s workers (pm %s, at most %d) on %s", settings_version(), m->target,
             settings_class_name(cfg->worker_class), settings_pm_name(cfg->pm), settings_pm_children(cfg),
             m->listeners[0].addr);
    if (m->old_master) log_info("new master of a binary upgrade from master %ld", (long)m->old_master);
    m->capacity_when = "start"; /* asked by the first prober: a server slow to answer never holds this loop */
    pm_configure(m);
    notify_init();

    double next_check_ms = 0;
    for (;;) {
        if (clock_ms() >= next_check_ms) {
            check_workers(m);
            upgrade_take_over(m);
            probe_check(m);
            pm_take_capacity(m);
            tell_systemd(m);
            status_sample(m->status);
            listen_overflow_sample(&m->stats.overflow, m->listeners, m->nlisteners, m->slots, m->slots_used);
            pm_tick(m);
            next_check_ms = clock_ms() + TICK_MS;
        }
        balance(m);
        if (m->stop == RUNNING && m->drain_until_ms && clock_ms() >= m->drain_until_ms) begin_stop(m, STOP_GRACEFUL);
        if (m->stop != RUNNING) {
            if (live_workers(m) == 0) break;
            if (clock_ms() >= m->stop_deadline_ms) {
                log_warning("%d workers still running at the stop deadline; killing them", live_workers(m));
                signal_all(m, SIGKILL);
                m->stop_deadline_ms = clock_ms() + KILL_AFTER_MS;
            }
        }
        struct pollfd fds[2 + 2 * SETTINGS_MAX_BINDS];
        fds[0] = (struct pollfd){.fd = signal_pipe[0], .events = POLLIN};
        fds[1] = (struct pollfd){.fd = wake_pipe[0], .events = POLLIN};
        int timeout_ms = TICK_MS, pet_ms = notify_watchdog();
        if (pet_ms < timeout_ms) timeout_ms = pet_ms;
        int nfds = 2 + status_server_pollfds(m->status, fds + 2, SETTINGS_MAX_BINDS, &timeout_ms);
        /* Only while no worker is idle: a connection then waits for pm, and idle
         * workers' requests never wake the master. */
        int first_listener = nfds;
        for (int i = 0; m->pm_listen && m->stop == RUNNING && i < m->nlisteners; i++)
            fds[nfds++] = (struct pollfd){.fd = m->listeners[i].fd, .events = POLLIN};
        int rc = poll(fds, (nfds_t)nfds, timeout_ms);
        if (rc < 0 && errno != EINTR) {
            log_error("poll failed: %s", strerror(errno));
            break;
        }
        reap(m); /* a lost SIGCHLD byte must not leave a worker unreaped */
        status_server_run(m->status); /* what is ready, and its timeouts */
        if (rc <= 0) continue;
        for (int i = first_listener; i < nfds; i++)
            if (fds[i].revents) {
                m->listener_ready = 1;
                m->pm_listen = 0; /* until the tick has acted on it */
                next_check_ms = 0;
            }
        if (fds[0].revents) handle_signals(m);
        if (fds[1].revents) {
            char drain[256];
            while (read(wake_pipe[0], drain, sizeof drain) > 0) {
            }
            next_check_ms = 0;
        }
    }
    log_info("stopped");
    char oldbin[PATH_MAX];
    if (m->upgrade != UPGRADE_NONE && upgrade_oldbin_path(m->pidfile, oldbin, sizeof oldbin)) unlink(oldbin);
    probe_kill(m);
    status_server_free(m->status);
    for (int i = 0; i < m->nlisteners; i++) listener_close(&m->listeners[i]);
    for (int i = 0; i < m->nstatus; i++) listener_close(&m->status_listeners[i]);
    scoreboard_destroy(m->slots, MAX_SLOTS);
    probe_board_destroy(m->probe);
    int rc = m->exit_code;
    settings_free(m->cfg);
    free(m->cfg);
    free(m);
    return rc;
}
