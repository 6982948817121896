/* master: the arbiter: spawns workers, reaps and replaces them, stops them. */
#define _GNU_SOURCE
#include "master.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "status.h"
#include "worker.h"

#define MAX_POLLFDS 64
/* More worker deaths than this within CRASH_WINDOW_MS slow respawning down. */
#define CRASH_BURST 5
#define CRASH_WINDOW_MS 1000.0
#define CRASH_BACKOFF_MS 1000.0
/* How long a quick stop waits before killing. */
#define QUICK_STOP_MS 2000.0

enum stop_mode { RUNNING, STOP_GRACEFUL, STOP_QUICK };

struct master {
    const struct settings *cfg;
    const struct listener *listeners;
    int nlisteners;
    const struct listener *status_listeners;
    int nstatus;
    struct status_server *status;
    struct status_view view;
    pid_t *workers; /* 0 = an empty slot */
    int nworkers;
    enum stop_mode stop;
    int exit_code;
    double respawn_after_ms;
    double recent_deaths_since_ms;
    int recent_deaths;
};

/* Signal handlers only write the signal number to this pipe; the loop does the work. */
static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(signal_pipe[1], &b, 1);
    (void)w;
    errno = saved;
}

static int install_signals(void)
{
    if (pipe2(signal_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return -1;
    static const int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGCHLD, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1};
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    return 0;
}

static void reset_signals_in_child(void)
{
    close(signal_pipe[0]);
    close(signal_pipe[1]);
}

static int live_workers(const struct master *m)
{
    int n = 0;
    for (int i = 0; i < m->nworkers; i++) n += m->workers[i] > 0;
    return n;
}

static void spawn(struct master *m, int slot)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork failed: %s", strerror(errno));
        m->respawn_after_ms = clock_ms() + CRASH_BACKOFF_MS;
        return;
    }
    if (pid == 0) {
        reset_signals_in_child();
        status_server_free(m->status); /* the status sockets belong to the master */
        for (int i = 0; i < m->nstatus; i++) close(m->status_listeners[i].fd);
        struct worker_env env = {m->cfg, m->listeners, m->nlisteners, getppid()};
        worker_main(&env);
    }
    m->workers[slot] = pid;
    log_debug("worker %ld started", (long)pid);
}

static void spawn_missing(struct master *m)
{
    if (m->stop != RUNNING || clock_ms() < m->respawn_after_ms) return;
    for (int i = 0; i < m->nworkers; i++)
        if (m->workers[i] == 0) spawn(m, i);
}

static void signal_workers(struct master *m, int sig)
{
    for (int i = 0; i < m->nworkers; i++)
        if (m->workers[i] > 0) kill(m->workers[i], sig);
}

static void begin_stop(struct master *m, enum stop_mode mode)
{
    if (m->stop == STOP_QUICK || m->stop == mode) return;
    m->stop = mode;
    log_info(mode == STOP_GRACEFUL ? "stopping gracefully" : "stopping now");
    signal_workers(m, mode == STOP_GRACEFUL ? SIGTERM : SIGQUIT);
}

static void note_death(struct master *m)
{
    double now = clock_ms();
    if (now - m->recent_deaths_since_ms > CRASH_WINDOW_MS) {
        m->recent_deaths_since_ms = now;
        m->recent_deaths = 0;
    }
    if (++m->recent_deaths > CRASH_BURST) {
        log_warning("workers are dying fast; respawning in %.0f ms", CRASH_BACKOFF_MS);
        m->respawn_after_ms = now + CRASH_BACKOFF_MS;
    }
}

static void reap(struct master *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int slot = -1;
        for (int i = 0; i < m->nworkers; i++)
            if (m->workers[i] == pid) slot = i;
        if (slot < 0) continue;
        m->workers[slot] = 0;
        if (m->stop != RUNNING) continue;
        if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_BOOT_FAILED) {
            log_error("worker %ld could not boot; stopping (see the lines above for why)", (long)pid);
            m->exit_code = 1;
            begin_stop(m, STOP_QUICK);
            continue;
        }
        if (WIFSIGNALED(status))
            log_warning("worker %ld was killed by signal %d; replacing it", (long)pid, WTERMSIG(status));
        else
            log_warning("worker %ld exited with status %d; replacing it", (long)pid, WEXITSTATUS(status));
        note_death(m);
    }
}

static void handle_signals(struct master *m)
{
    unsigned char sigs[64];
    ssize_t n;
    while ((n = read(signal_pipe[0], sigs, sizeof sigs)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            switch (sigs[i]) {
            case SIGCHLD: reap(m); break;
            case SIGTERM: begin_stop(m, STOP_GRACEFUL); break;
            case SIGINT:
            case SIGQUIT: begin_stop(m, STOP_QUICK); break;
            case SIGUSR1:
                log_reopen();
                signal_workers(m, SIGUSR1);
                break;
            default: log_info("signal %d is not handled yet; ignored", sigs[i]); break;
            }
        }
    }
}

int master_run(const struct settings *cfg, const struct listener *listeners, int nlisteners,
               const struct listener *status_listeners, int nstatus)
{
    struct master m = {.cfg = cfg,
                       .listeners = listeners,
                       .nlisteners = nlisteners,
                       .status_listeners = status_listeners,
                       .nstatus = nstatus};
    m.nworkers = settings_worker_count(cfg);
    m.workers = calloc((size_t)m.nworkers, sizeof *m.workers);
    m.status = status_server_new(status_listeners, nstatus);
    m.view = (struct status_view){.cfg = cfg, .start_wall_s = clock_wall_s()};
    if (!m.workers || !m.status || install_signals() != 0) {
        log_error("cannot start the master: %s", strerror(errno));
        return 1;
    }
    log_info("perfcgi %s: %d %s workers on %s", settings_version(), m.nworkers,
             settings_class_name(cfg->worker_class), listeners[0].addr);

    double stop_deadline_ms = 0;
    for (;;) {
        spawn_missing(&m);
        m.view.total_processes = live_workers(&m);
        if (m.stop != RUNNING) {
            if (m.view.total_processes == 0) break;
            if (stop_deadline_ms == 0)
                stop_deadline_ms = clock_ms() + (m.stop == STOP_GRACEFUL ? cfg->graceful_timeout * 1e3 : QUICK_STOP_MS);
            if (clock_ms() >= stop_deadline_ms) {
                log_warning("%d workers still running at the stop deadline; killing them", m.view.total_processes);
                signal_workers(&m, SIGKILL);
                stop_deadline_ms = clock_ms() + QUICK_STOP_MS;
            }
        }
        struct pollfd fds[MAX_POLLFDS];
        fds[0] = (struct pollfd){.fd = signal_pipe[0], .events = POLLIN};
        int n = 1 + status_server_pollfds(m.status, fds + 1, MAX_POLLFDS - 1);
        int rc = poll(fds, (nfds_t)n, m.stop != RUNNING || m.respawn_after_ms > clock_ms() ? 100 : 1000);
        if (rc < 0 && errno != EINTR) {
            log_error("poll failed: %s", strerror(errno));
            break;
        }
        if (rc <= 0) {
            reap(&m); /* a lost SIGCHLD byte must not leave a slot empty */
            continue;
        }
        if (fds[0].revents) handle_signals(&m);
        status_server_handle(m.status, fds + 1, n - 1, &m.view);
    }
    log_info("stopped");
    status_server_free(m.status);
    free(m.workers);
    return m.exit_code;
}
