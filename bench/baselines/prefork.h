/* prefork.h: the command line and the process model shared by the baseline FastCGI responders. */
#ifndef BENCH_PREFORK_H
#define BENCH_PREFORK_H

/* A baseline's command line: `PROGRAM SOCKET [PROCESSES]`, SOCKET being
 * "unix:/abs/path.sock" or "HOST:PORT". */
struct baseline_args {
    const char *socket;    /* as given */
    const char *unix_path; /* the path after "unix:", or NULL for HOST:PORT */
    int processes;
};

/* Fills args from argv; on a bad command line prints the usage and returns -1. */
int baseline_args_parse(int argc, char **argv, struct baseline_args *args);

/* Socket mode of the unix sockets: Nginx's workers may run as another user. */
#define BASELINE_SOCKET_MODE 0666
/* Listen queue, as perfcgi's default `backlog`. */
#define BASELINE_BACKLOG 2048

/* Forks `processes` children that each run serve(ctx) on the already open listening
 * socket, then waits. TERM or INT stops them all (returns 0); a child that dies on its
 * own stops them all too (returns 1): a baseline short of processes would measure
 * something else. The children get the default signal dispositions back. */
int prefork_run(int processes, void (*serve)(void *ctx), void *ctx);

#endif
