/* sd_notify: what the master tells systemd (Type=notify): readiness, reloads, the stop, live figures, the watchdog. */
#ifndef PERFCGI_SD_NOTIFY_H
#define PERFCGI_SD_NOTIFY_H

#include "master/status_figures.h"

/*
 * Everything here does nothing unless systemd asked for it: NOTIFY_SOCKET for the
 * messages, WATCHDOG_USEC (and WATCHDOG_PID, if set, this process) for the watchdog.
 * Only the master calls these; the variables stay in the environment, for the new
 * master of a binary upgrade (see notify_exec_env).
 */
void notify_init(void);
/* READY=1 with the STATUS= line; with MAINPID= too when `main_pid` (the new master of
 * a binary upgrade, which systemd follows from then on: NotifyAccess=all). */
void notify_ready(const struct status_view *v, int main_pid);
/* RELOADING=1 with MONOTONIC_USEC=now (HUP); READY=1 follows once the reload is done. */
void notify_reloading(void);
/* STOPPING=1 (TERM, QUIT, INT). */
void notify_stopping(void);
/* A STATUS= line with the live figures, at most about once a second: workers busy
 * and idle, requests, their rate since the previous line, the listen queue and the
 * mean queue wait since the previous line; `state` ("reloading", ...) or NULL first. */
void notify_status(const struct status_view *v, const char *state);
/* Whether systemd listens (NOTIFY_SOCKET), and whether a STATUS= line is due: the
 * master builds the figures only then. */
int notify_enabled(void);
int notify_status_due(void);
/* WATCHDOG=1 when half the interval has passed since the last one; called on every
 * turn of the master's loop, so that a master stuck anywhere stops petting it.
 * Returns the milliseconds until the next is due (INT_MAX without a watchdog), for
 * the loop's poll timeout. */
int notify_watchdog(void);
/* In the child that executes the new master of a binary upgrade: WATCHDOG_PID names
 * it, so that the new master pets the watchdog as the old one did. */
void notify_exec_env(void);

#endif
