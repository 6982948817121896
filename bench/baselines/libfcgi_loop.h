/* libfcgi_loop.h: the bare libfcgi accept loop the libfcgi baselines share; each gives only its answer. */
#ifndef BENCH_LIBFCGI_LOOP_H
#define BENCH_LIBFCGI_LOOP_H

#include <fcgiapp.h>

/* Writes one request's answer (the CGI head and body) to request->out. */
typedef void libfcgi_respond_fn(FCGX_Request *request);

/* The whole program: parses `PROGRAM SOCKET [PROCESSES]`, listens, forks PROCESSES
 * children that each accept, respond and finish until stopped (prefork.h). name
 * prefixes the messages. Returns the exit status. */
int libfcgi_loop_main(int argc, char **argv, const char *name, libfcgi_respond_fn *respond);

#endif
