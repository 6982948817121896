/* signals: which signals each process and thread of perfcgi takes, and how: every handler,
 * signal list and signal mask is set here. */
#define _GNU_SOURCE
#include "base/signals.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The signals the master acts on (its loop says what each does). */
static const int master_signals[] = {SIGTERM, SIGINT, SIGQUIT, SIGCHLD, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};

/* What a role does on one signal: a handler, SIG_IGN or SIG_DFL. */
struct signal_action {
    int sig;
    void (*handler)(int);
};

static void set_handler(int sig, void (*handler)(int), int flags)
{
    struct sigaction sa = {0};
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static void set_handlers(const int *sigs, size_t n, void (*handler)(int), int flags)
{
    for (size_t i = 0; i < n; i++) set_handler(sigs[i], handler, flags);
}

static void set_actions(const struct signal_action *a, size_t n, int flags)
{
    for (size_t i = 0; i < n; i++) set_handler(a[i].sig, a[i].handler, flags);
}

static sigset_t set_of(const int *sigs, size_t n)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < n; i++) sigaddset(&set, sigs[i]);
    return set;
}

static void unblock_all(void)
{
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
}

/* ---- the master ---- */

static int master_notify_fd = -1;

static void master_on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(master_notify_fd, &b, 1);
    (void)w;
    errno = saved;
}

/* The new master of a binary upgrade says it serves with SIGWINCH: only its
 * own counts (a terminal sends WINCH to its foreground group on a resize). */
static volatile sig_atomic_t master_new_master;

static void master_on_winch(int sig, siginfo_t *info, void *uc)
{
    (void)uc;
    if (master_new_master > 0 && info->si_pid == master_new_master) master_on_signal(sig);
}

void signals_master(int notify_fd)
{
    master_notify_fd = notify_fd;
    set_handlers(master_signals, COUNT(master_signals), master_on_signal, SA_RESTART);
    set_handler(SIGPIPE, SIG_IGN, SA_RESTART);
    struct sigaction sa = {0};
    sa.sa_sigaction = master_on_winch;
    sa.sa_flags = SA_RESTART | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGWINCH, &sa, NULL);
}

void signals_master_new_master(pid_t pid)
{
    master_new_master = pid;
}

void signals_child_default(void)
{
    set_handlers(master_signals, COUNT(master_signals), SIG_DFL, 0);
    set_handler(SIGWINCH, SIG_DFL, 0);
}

void signals_unblock_all(void)
{
    unblock_all();
}

void signals_block_all(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, old);
}

void signals_restore(const sigset_t *old)
{
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, old, NULL);
    errno = saved;
}

/* ---- a worker process ---- */

static volatile sig_atomic_t *worker_stop_flag, *worker_reopen_flag;

static void worker_on_term(int sig)
{
    (void)sig;
    *worker_stop_flag = 1;
}

static void worker_on_usr1(int sig)
{
    (void)sig;
    *worker_reopen_flag = 1;
}

static void worker_on_quit(int sig)
{
    (void)sig;
    _exit(0);
}

/* The master aborts a worker stuck on one request; it has logged why. */
static void worker_on_abort(int sig)
{
    (void)sig;
    _exit(1);
}

static const struct signal_action worker_actions[] = {
    {SIGTERM, worker_on_term},
    {SIGQUIT, worker_on_quit},
    {SIGINT, worker_on_quit},
    {SIGABRT, worker_on_abort},
    {SIGPIPE, SIG_IGN},
    {SIGHUP, SIG_IGN},
    {SIGTTIN, SIG_IGN},
    {SIGTTOU, SIG_IGN},
    /* A handler, not SIG_IGN: libfcgi replaces an ignored SIGUSR1 with its
     * own, which stops accepting. */
    {SIGUSR1, worker_on_usr1},
    {SIGCHLD, SIG_DFL},
};

/* No SA_RESTART: a blocking accept must return so the worker sees the flag. */
void signals_worker(volatile sig_atomic_t *stop, volatile sig_atomic_t *reopen)
{
    worker_stop_flag = stop;
    worker_reopen_flag = reopen;
    set_actions(worker_actions, COUNT(worker_actions), 0);
    unblock_all();
}

/* What a serving thread takes only inside its wait: stop, reopen the logs, wake up. */
static const int serving_wake[] = {SIGTERM, SIGUSR1, SIGUSR2};

void signals_serving_thread(sigset_t *wait_mask)
{
    sigset_t set = set_of(serving_wake, COUNT(serving_wake));
    pthread_sigmask(SIG_BLOCK, &set, wait_mask);
}

int signals_serving_fd(const sigset_t *wait_mask)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < COUNT(serving_wake); i++)
        if (!sigismember(wait_mask, serving_wake[i])) sigaddset(&set, serving_wake[i]);
    if (sigisemptyset(&set)) return -1;
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int signals_take_pending(const sigset_t *wait_mask)
{
    sigset_t pending;
    if (sigpending(&pending) != 0) return 0;
    for (size_t i = 0; i < COUNT(serving_wake); i++) {
        if (!sigismember(&pending, serving_wake[i]) || sigismember(wait_mask, serving_wake[i])) continue;
        sigset_t serving;
        pthread_sigmask(SIG_SETMASK, wait_mask, &serving); /* the handler runs here */
        pthread_sigmask(SIG_SETMASK, &serving, NULL);
        return 1;
    }
    return 0;
}

static void thread_on_wakeup(int sig)
{
    (void)sig; /* only interrupts a serving thread's wait */
}

void signals_thread_main(sigset_t *wait_mask)
{
    static const int handled[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP, SIGTTIN, SIGTTOU};
    set_handler(SIGUSR2, thread_on_wakeup, 0);
    sigset_t set = set_of(handled, COUNT(handled));
    pthread_sigmask(SIG_BLOCK, &set, wait_mask);
}

void signals_set_mask(const sigset_t *mask)
{
    pthread_sigmask(SIG_SETMASK, mask, NULL);
}

void signals_worker_stack(void (*handler)(int, siginfo_t *, void *))
{
    struct sigaction sa = {0};
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_RESTART | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGNALS_STACK, &sa, NULL);
}

int signals_send_stack(pid_t pid, pid_t tid, int index)
{
    /* sigqueue for one thread: a value (SI_QUEUE) may go to another process. */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = SIGNALS_STACK;
    si.si_code = SI_QUEUE;
    si.si_pid = getpid();
    si.si_uid = getuid();
    si.si_value.sival_int = index;
    return (int)syscall(SYS_rt_tgsigqueueinfo, pid, tid, SIGNALS_STACK, &si);
}

/* ---- the backend prober ---- */

void signals_probe(void)
{
    static const int ignored[] = {SIGPIPE, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU};
    set_handlers(ignored, COUNT(ignored), SIG_IGN, 0);
    unblock_all();
}
