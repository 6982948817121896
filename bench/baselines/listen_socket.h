/* listen_socket.h: a non-blocking listening socket for a baseline's "unix:/path" or "HOST:PORT". */
#ifndef BENCH_LISTEN_SOCKET_H
#define BENCH_LISTEN_SOCKET_H

#include "prefork.h"

/* Binds and listens (a stale unix socket file is replaced, the new one gets
 * BASELINE_SOCKET_MODE); returns the descriptor, or -1 after saying why on stderr. */
int listen_socket_open(const struct baseline_args *args);

#endif
