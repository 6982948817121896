/* listen_overflow: connections the accept queues could not hold, counted, and warned about once a minute. */
#define _GNU_SOURCE
#include "master/listen_overflow.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"

#define WARN_EVERY_MS 60000.0

/* TcpExtListenOverflows and TcpExtListenDrops of this network namespace: 0, or -1
 * when /proc/net/netstat cannot tell. Its TcpExt lines come in pairs: names, then values. */
static int kernel_listen_figures(uint64_t *overflows, uint64_t *drops)
{
    FILE *f = fopen("/proc/net/netstat", "re");
    if (!f) return -1;
    char names[8192], values[8192];
    int found = 0;
    while (!found && fgets(names, sizeof names, f)) {
        if (strncmp(names, "TcpExt:", 7) != 0 || !fgets(values, sizeof values, f)) continue;
        char *ns, *vs, *n = strtok_r(names + 7, " \n", &ns), *v = strtok_r(values + 7, " \n", &vs);
        for (; n && v; n = strtok_r(NULL, " \n", &ns), v = strtok_r(NULL, " \n", &vs)) {
            if (strcmp(n, "ListenOverflows") == 0) {
                *overflows = strtoull(v, NULL, 10);
                found |= 1;
            } else if (strcmp(n, "ListenDrops") == 0) {
                *drops = strtoull(v, NULL, 10);
                found |= 2;
            }
        }
        found = found == 3;
    }
    fclose(f);
    return found ? 0 : -1;
}

/* The workers' longest queue wait since the last tick, taken out of their slots. */
static void take_worst_wait(struct listen_overflow *o, struct scoreboard_slot *slots, int nslots)
{
    for (int i = 0; i < nslots; i++) {
        int64_t w = atomic_exchange(&slots[i].worst_wait_us, 0);
        if (w > o->worst_wait_us) o->worst_wait_us = w;
    }
}

void listen_overflow_sample(struct listen_overflow *o, const struct listener *l, int n,
                            struct scoreboard_slot *slots, int nslots)
{
    double now = clock_ms();
    if (o->window_start_ms == 0) o->window_start_ms = now;
    uint64_t overflows = 0, drops = 0;
    int tcp = 0, kernel = 0;
    for (int i = 0; i < n; i++) tcp |= !l[i].unix_path[0];
    if (tcp && kernel_listen_figures(&overflows, &drops) == 0) {
        kernel = 1;
        if (!o->have_kernel) {
            o->have_kernel = 1;
            o->kernel_overflows0 = overflows;
            o->kernel_drops0 = drops;
        }
        o->drops = drops - o->kernel_drops0;
    }
    for (int i = 0; i < n; i++) {
        int queued, backlog;
        if (l[i].unix_path[0]) {
            if (listener_queue(&l[i], &queued, &backlog) == 0 && queued >= backlog) o->count[i]++;
        } else if (kernel) { /* a tick that could not read the kernel's figures keeps the last ones */
            o->count[i] = overflows - o->kernel_overflows0;
        }
    }
    take_worst_wait(o, slots, nslots);
    int grew = 0;
    for (int i = 0; i < n; i++) grew |= o->count[i] != o->reported[i];
    if (grew && (o->last_warn_ms == 0 || now - o->last_warn_ms >= WARN_EVERY_MS)) {
        for (int i = 0; i < n; i++) {
            if (o->count[i] == o->reported[i]) continue;
            log_warning("listen queue of %s full: %" PRIu64 " %s in the last %.0f s; requests waited up to %.1f s; "
                        "raise workers or backlog",
                        l[i].addr, o->count[i] - o->reported[i],
                        l[i].unix_path[0] ? "samples found it full" : "connections refused",
                        (now - o->window_start_ms) / 1e3, (double)o->worst_wait_us / 1e6);
            o->reported[i] = o->count[i];
        }
        o->last_warn_ms = now;
    } else if (grew || now - o->window_start_ms < WARN_EVERY_MS) {
        return; /* the next warning covers this window */
    }
    /* A new window: the worst wait the next warning names is a recent one. */
    o->window_start_ms = now;
    o->worst_wait_us = 0;
}
