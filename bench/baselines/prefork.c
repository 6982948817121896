/* prefork.c: the baselines' command line, and N children serving one listening socket until TERM/INT. */
#include "prefork.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROCESSES 1024

int baseline_args_parse(int argc, char **argv, struct baseline_args *args)
{
    char *end = NULL;
    long n = 1;
    if (argc >= 3) {
        errno = 0;
        n = strtol(argv[2], &end, 10);
    }
    if (argc < 2 || argc > 3 || (argc == 3 && (errno || *end || end == argv[2] || n < 1 || n > MAX_PROCESSES))) {
        fprintf(stderr, "usage: %s unix:/abs/path.sock|HOST:PORT [PROCESSES (1..%d, default 1)]\n", argv[0],
                MAX_PROCESSES);
        return -1;
    }
    args->socket = argv[1];
    args->unix_path = strncmp(argv[1], "unix:", 5) == 0 ? argv[1] + 5 : NULL;
    if (args->unix_path && args->unix_path[0] != '/') {
        fprintf(stderr, "%s: the unix socket path must be absolute: %s\n", argv[0], argv[1]);
        return -1;
    }
    args->processes = (int)n;
    return 0;
}

static void stop_children(const pid_t *children, int count)
{
    for (int i = 0; i < count; i++)
        if (children[i] > 0) kill(children[i], SIGTERM);
    for (int i = 0; i < count; i++)
        if (children[i] > 0)
            while (waitpid(children[i], NULL, 0) < 0 && errno == EINTR) {
            }
}

/* The child that just exited, if it is one of ours: marked gone so it is not waited again. */
static int forget_child(pid_t *children, int count, pid_t pid)
{
    for (int i = 0; i < count; i++)
        if (children[i] == pid) {
            children[i] = 0;
            return 1;
        }
    return 0;
}

int prefork_run(int processes, void (*serve)(void *ctx), void *ctx)
{
    sigset_t stop_signals, previous;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGCHLD);
    /* Blocked before the first fork, so no signal is lost between forks and sigwait. */
    sigprocmask(SIG_BLOCK, &stop_signals, &previous);
    /* A peer that closes first must cost an EPIPE, not the process. */
    signal(SIGPIPE, SIG_IGN);

    pid_t children[MAX_PROCESSES] = {0};
    for (int i = 0; i < processes; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            stop_children(children, i);
            return 1;
        }
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            sigprocmask(SIG_SETMASK, &previous, NULL);
            serve(ctx);
            _exit(1); /* serve returns only when it cannot go on */
        }
        children[i] = pid;
    }

    for (;;) {
        int sig = 0;
        if (sigwait(&stop_signals, &sig) != 0) continue;
        if (sig != SIGCHLD) {
            stop_children(children, processes);
            return 0;
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            if (!forget_child(children, processes, pid)) continue;
            if (WIFSIGNALED(status))
                fprintf(stderr, "baseline: process %ld was killed by signal %d: stopping\n", (long)pid, WTERMSIG(status));
            else
                fprintf(stderr, "baseline: process %ld exited with status %d: stopping\n", (long)pid, WEXITSTATUS(status));
            stop_children(children, processes);
            return 1;
        }
    }
}
