/* clock: the two clocks perfcgi reads. */
#ifndef PERFCGI_CLOCK_H
#define PERFCGI_CLOCK_H

#include <time.h>

/* Monotonic milliseconds, for durations and deadlines. */
static inline double clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Wall-clock seconds since the epoch, for values shared between processes. */
static inline double clock_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
