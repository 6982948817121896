/* signals: which signals each process and thread of perfcgi takes, and how: every handler,
 * signal list and signal mask is set here (as PHP-FPM's fpm_signals.c). The roles keep the
 * flags; the handlers here only set them, or write the signal to the master's pipe. */
#ifndef PERFCGI_SIGNALS_H
#define PERFCGI_SIGNALS_H

#include <signal.h>

/* The master: each signal it acts on only writes its number to notify_fd,
 * for the master's loop to act on; interrupted calls restart. SIGPIPE is
 * ignored. */
void signals_master(int notify_fd);
/* The master: from now on a SIGWINCH from pid (the new master of a binary
 * upgrade, once it serves) is written to notify_fd; from any other sender, or
 * with pid 0, it is ignored. */
void signals_master_new_master(pid_t pid);
/* In a fresh child of the master: the master's handlers, which would write
 * into the master's pipe, back to their defaults. */
void signals_child_default(void);
/* Every signal unblocked (the child of the master that executes the new binary:
 * the mask survives exec). */
void signals_unblock_all(void);
/* Around fork: every signal blocked, so that the child runs no handler until
 * it has set its own; the parent then restores old (errno kept). */
void signals_block_all(sigset_t *old);
void signals_restore(const sigset_t *old);

/* A worker process: TERM sets *stop, USR1 sets *reopen, QUIT and INT exit
 * at once, ABRT (the master's "stuck on one request") exits 1, the terminal
 * and job signals are ignored; then every signal is unblocked. */
void signals_worker(volatile sig_atomic_t *stop, volatile sig_atomic_t *reopen);
/* A thread that serves FastCGI requests blocking (sync and thread classes):
 * blocks the stop and wake-up signals but inside its wait, so one that comes
 * just before the wait is not lost and none interrupts a request. wait_mask
 * gets the mask for the wait (epoll_pwait). */
void signals_serving_thread(sigset_t *wait_mask);
/* A wait that finds work at once (epoll_pwait with events ready) returns without
 * taking a signal that came meanwhile: it stays pending, blocked again, for as long
 * as work keeps waiting. signals_serving_fd: a signalfd (non-blocking) of the stop
 * and wake-up signals the wait mask lets in, to watch beside the work: readable while
 * one is pending; -1 when the mask lets none in. signals_take_pending: takes such a
 * signal (its handler runs now): 1 if there was one. */
int signals_serving_fd(const sigset_t *wait_mask);
int signals_take_pending(const sigset_t *wait_mask);
/* The thread class's main thread, before it starts the serving threads
 * (which inherit its mask): SIGUSR2 only ends a serving thread's wait; the
 * process's signals are blocked but inside the main thread's own wait, whose
 * mask wait_mask gets (ppoll). */
void signals_thread_main(sigset_t *wait_mask);
/* Sets the calling thread's mask (a sync worker at max_requests: TERM must
 * reach it while it idles). */
void signals_set_mask(const sigset_t *mask);

/* The signal with which the master asks a worker's thread for its stack
 * (the slowlog), its record's index in si_value; and, in a worker, its handler
 * (SA_RESTART: a blocking call it interrupts goes on). */
#define SIGNALS_STACK (SIGRTMIN + 2)
void signals_worker_stack(void (*handler)(int, siginfo_t *, void *));
/* Sends SIGNALS_STACK with value index to thread tid of process pid; 0, or -1 (errno). */
int signals_send_stack(pid_t pid, pid_t tid, int index);

/* The backend prober: dies on TERM, INT and QUIT, ignores the rest. */
void signals_probe(void);

#endif
