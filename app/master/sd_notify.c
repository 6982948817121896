/* sd_notify: what the master tells systemd (Type=notify): readiness, reloads, the stop, live figures, the watchdog. */
#define _GNU_SOURCE
#include "master/sd_notify.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "base/clock.h"
#include "base/log.h"

/* STATUS= lines at most this often (systemd shows the latest in `systemctl status`). */
#define STATUS_EVERY_MS 1000.0

static struct {
    int enabled;          /* NOTIFY_SOCKET is set */
    uint64_t watchdog_us; /* WatchdogSec=, 0: none */
    double next_pet_ms, next_status_ms;
    /* At the previous STATUS= line: for the rate and the mean queue wait since. */
    double last_ms;
    uint64_t last_accepted, last_wait_count, last_wait_us;
} notify;

void notify_init(void)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    memset(&notify, 0, sizeof notify);
    notify.enabled = sock && *sock;
    uint64_t usec = 0;
    if (notify.enabled && sd_watchdog_enabled(0, &usec) > 0) notify.watchdog_us = usec;
    if (notify.watchdog_us) log_info("systemd watchdog: every %.3g s", (double)notify.watchdog_us / 2e6);
}

/* Sends state; a failure is logged once (systemd may be gone, the socket wrong). */
static void send_state(const char *state)
{
    static int warned;
    int rc = sd_notify(0, state);
    if (rc < 0 && !warned) {
        warned = 1;
        log_warning("cannot notify systemd (NOTIFY_SOCKET): %s", strerror(-rc));
    }
}

/* "STATUS=..." with the figures since the previous line, into out. */
static void status_line(const struct status_view *v, const char *state, char *out, size_t outlen)
{
    struct status_peaks none = {0};
    struct status_totals t;
    status_add_up(v, &none, &t);
    uint64_t wait_count = 0, wait_us = 0;
    for (int r = 0; r < SCOREBOARD_ROUTES; r++) {
        wait_count += t.c.wait_count[r];
        wait_us += t.c.wait_sum_us[r];
    }
    double now = clock_ms(), span_s = (now - notify.last_ms) / 1e3;
    double rate = notify.last_ms > 0 && span_s > 0 && t.accepted >= notify.last_accepted
                      ? (double)(t.accepted - notify.last_accepted) / span_s
                      : 0;
    uint64_t waited = wait_count > notify.last_wait_count ? wait_count - notify.last_wait_count : 0;
    char wait[48] = "-";
    if (waited && wait_us >= notify.last_wait_us)
        snprintf(wait, sizeof wait, "%.1f ms", (double)(wait_us - notify.last_wait_us) / 1e3 / (double)waited);
    snprintf(out, outlen,
             "STATUS=%s%s%d workers (%d busy, %d idle); %" PRIu64 " requests, %.1f req/s; listen queue %d; "
             "queue wait %s",
             state ? state : "", state ? ": " : "", t.total, t.workers[STATUS_ACTIVE], t.workers[STATUS_IDLE],
             t.accepted, rate, t.listen_queue, wait);
    notify.last_ms = now;
    notify.last_accepted = t.accepted;
    notify.last_wait_count = wait_count;
    notify.last_wait_us = wait_us;
    notify.next_status_ms = now + STATUS_EVERY_MS;
}

void notify_ready(const struct status_view *v, int main_pid)
{
    if (!notify.enabled) return;
    char status[512], msg[600];
    status_line(v, NULL, status, sizeof status);
    if (main_pid) snprintf(msg, sizeof msg, "MAINPID=%ld\nREADY=1\n%s", (long)getpid(), status);
    else snprintf(msg, sizeof msg, "READY=1\n%s", status);
    send_state(msg);
}

void notify_reloading(void)
{
    if (!notify.enabled) return;
    char msg[96];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%" PRId64, clock_us());
    send_state(msg);
}

void notify_stopping(void)
{
    if (notify.enabled) send_state("STOPPING=1");
}

int notify_enabled(void)
{
    return notify.enabled;
}

int notify_status_due(void)
{
    return notify.enabled && clock_ms() >= notify.next_status_ms;
}

void notify_status(const struct status_view *v, const char *state)
{
    if (!notify_status_due()) return;
    char status[512];
    status_line(v, state, status, sizeof status);
    send_state(status);
}

int notify_watchdog(void)
{
    if (!notify.watchdog_us) return INT_MAX;
    double now = clock_ms(), half_ms = (double)notify.watchdog_us / 2e3;
    if (now >= notify.next_pet_ms) {
        send_state("WATCHDOG=1");
        notify.next_pet_ms = now + half_ms;
    }
    double left = notify.next_pet_ms - now;
    return (int)left + 1; /* never early: a wake-up before it is due would pet nothing */
}

void notify_exec_env(void)
{
    char pid[24];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    if (getenv("WATCHDOG_PID")) setenv("WATCHDOG_PID", pid, 1);
}
