/* capacity: what the settings ask of the machine and of PostgreSQL, checked at start and on HUP. */
#ifndef PERFCGI_CAPACITY_H
#define PERFCGI_CAPACITY_H

#include <stddef.h>

#include "base/settings.h"

/* File descriptors one worker of cfg may hold at once: its FastCGI connections and
 * what it holds besides (see capacity.c for the margin). */
int capacity_fds_needed(const struct settings *cfg);

/*
 * RLIMIT_NOFILE against capacity_fds_needed(cfg): 0 when the soft limit holds it,
 * raising the soft limit (up to the hard one, as Nginx's worker_rlimit_nofile) if it
 * must, with what was done in note (empty if nothing); -1 with err naming the numbers
 * and what to change when even the hard limit cannot.
 */
int capacity_files(const struct settings *cfg, char *note, size_t notelen, char *err, size_t errlen);

/*
 * Run by the backend prober, never by the master (it blocks up to 2 s).
 * Asks PostgreSQL once (a short connection, 2 s for all of it) for max_connections,
 * its reserved connections and the connections others hold, and logs a warning when
 * the workers' pools may open more than is left, or that the check was skipped when
 * PostgreSQL cannot be asked. Never refuses: the pools open lazily and pool_timeout
 * bounds a wait for a connection. The workers are pm's most (settings_pm_children).
 * Through a connection pooler (PgBouncer: the server's backend pid is not the one the
 * connection was given), the server's numbers are the pooler's: it logs what the pooler
 * must allow instead. Returns the connections left for the workers (the prober's taken
 * off), or -1 when PostgreSQL could not be asked or sits behind a pooler: pm adaptive
 * stays under it.
 */
long capacity_postgresql(const struct settings *cfg, const char *when);

#endif
