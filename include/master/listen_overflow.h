/* listen_overflow: connections the accept queues could not hold, counted, and warned about once a minute. */
#ifndef PERFCGI_LISTEN_OVERFLOW_H
#define PERFCGI_LISTEN_OVERFLOW_H

#include <stdint.h>

#include "base/listener.h"
#include "base/scoreboard.h"
#include "base/settings.h"

struct listen_overflow {
    /* Per bind, since the master started. TCP: the kernel's TcpExtListenOverflows,
     * which counts every TCP listener of the network namespace; unix: the samples
     * that found the accept queue full (queue >= backlog). */
    uint64_t count[SETTINGS_MAX_BINDS];
    uint64_t drops; /* TCP: TcpExtListenDrops of the namespace, since the master started */
    /* The kernel's figures at start (have_kernel: read once). */
    int have_kernel;
    uint64_t kernel_overflows0, kernel_drops0;
    /* The warning: counts at the last one and when (0: never); the window it covers
     * (at most a minute, or since the last warning) and the worst queue wait in it. */
    uint64_t reported[SETTINGS_MAX_BINDS];
    double last_warn_ms, window_start_ms;
    int64_t worst_wait_us;
};

/* Called on the master's tick: samples the queues of the n listeners, takes the
 * workers' worst queue wait, and warns while the counts grow (at most once a minute). */
void listen_overflow_sample(struct listen_overflow *o, const struct listener *l, int n,
                            struct scoreboard_slot *slots, int nslots);

#endif
