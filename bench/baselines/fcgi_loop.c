/* fcgi_loop.c: the bare libfcgi accept loop, perfcgi's sync worker with nothing else: a bound for that class. */
#include <fcgiapp.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prefork.h"
#include "response.h"

static void serve(void *ctx)
{
    int listen_fd = *(int *)ctx;
    FCGX_Request request;
    if (FCGX_InitRequest(&request, listen_fd, 0) != 0) {
        fprintf(stderr, "fcgi-loop: FCGX_InitRequest failed\n");
        return;
    }
    while (FCGX_Accept_r(&request) == 0) {
        FCGX_PutStr(BASELINE_RESPONSE, (int)BASELINE_RESPONSE_LEN, request.out);
        FCGX_Finish_r(&request);
    }
    fprintf(stderr, "fcgi-loop: FCGX_Accept_r failed\n");
}

int main(int argc, char **argv)
{
    struct baseline_args args;
    if (baseline_args_parse(argc, argv, &args) != 0) return 2;
    if (FCGX_Init() != 0) {
        fprintf(stderr, "fcgi-loop: FCGX_Init failed\n");
        return 1;
    }
    /* libfcgi reads a path without ':' as a unix socket, "HOST:PORT" as TCP. */
    const char *where = args.unix_path ? args.unix_path : args.socket;
    if (args.unix_path) unlink(args.unix_path); /* a socket left by a killed run */
    int listen_fd = FCGX_OpenSocket(where, BASELINE_BACKLOG);
    if (listen_fd < 0) {
        fprintf(stderr, "fcgi-loop: cannot listen on %s\n", args.socket);
        return 1;
    }
    if (args.unix_path && chmod(args.unix_path, BASELINE_SOCKET_MODE) != 0) {
        perror("fcgi-loop: chmod");
        return 1;
    }
    int rc = prefork_run(args.processes, serve, &listen_fd);
    if (args.unix_path) unlink(args.unix_path);
    return rc;
}
