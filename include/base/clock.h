/* clock: the two clocks perfcgi reads, monotonic for durations and wall for shared values. */
#ifndef PERFCGI_CLOCK_H
#define PERFCGI_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic microseconds: durations, deadlines, and instants shared between processes
 * (CLOCK_MONOTONIC is one clock for the whole machine). */
static inline int64_t clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The same clock in milliseconds, for deadlines and timers. */
static inline double clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Wall-clock seconds since the epoch, for values shared with other hosts (cache expiry). */
static inline double clock_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
