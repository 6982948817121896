/* libfcgi_loop.c: the bare libfcgi accept loop (accept, answer, finish) in prefork processes, shared by the libfcgi baselines. */
#include "libfcgi_loop.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prefork.h"

struct libfcgi_loop {
    int listen_fd;
    const char *name;
    libfcgi_respond_fn *respond;
};

static void libfcgi_loop_serve(void *ctx)
{
    const struct libfcgi_loop *loop = ctx;
    FCGX_Request request;
    if (FCGX_InitRequest(&request, loop->listen_fd, 0) != 0) {
        fprintf(stderr, "%s: FCGX_InitRequest failed\n", loop->name);
        return;
    }
    while (FCGX_Accept_r(&request) == 0) {
        loop->respond(&request);
        FCGX_Finish_r(&request);
    }
    fprintf(stderr, "%s: FCGX_Accept_r failed\n", loop->name);
}

int libfcgi_loop_main(int argc, char **argv, const char *name, libfcgi_respond_fn *respond)
{
    struct baseline_args args;
    if (baseline_args_parse(argc, argv, &args) != 0) return 2;
    if (FCGX_Init() != 0) {
        fprintf(stderr, "%s: FCGX_Init failed\n", name);
        return 1;
    }
    /* libfcgi reads a path without ':' as a unix socket, "HOST:PORT" as TCP. */
    const char *where = args.unix_path ? args.unix_path : args.socket;
    if (args.unix_path) unlink(args.unix_path); /* a socket left by a killed run */
    struct libfcgi_loop loop = {FCGX_OpenSocket(where, BASELINE_BACKLOG), name, respond};
    if (loop.listen_fd < 0) {
        fprintf(stderr, "%s: cannot listen on %s\n", name, args.socket);
        return 1;
    }
    if (args.unix_path && chmod(args.unix_path, BASELINE_SOCKET_MODE) != 0) {
        fprintf(stderr, "%s: chmod %s failed\n", name, args.unix_path);
        return 1;
    }
    int rc = prefork_run(args.processes, libfcgi_loop_serve, &loop);
    if (args.unix_path) unlink(args.unix_path);
    return rc;
}
