/* master: the arbiter: spawns, replaces, recycles, reloads and stops the workers. */
#ifndef PERFCGI_MASTER_H
#define PERFCGI_MASTER_H

#include "base/listener.h"
#include "base/settings.h"

/*
 * Runs until stopped by a signal; returns the process exit code. Takes
 * ownership of cfg (heap-allocated) and of the listeners; argc/argv/envp are
 * read again on HUP (and argv executed again on USR2). pidfile (NULL: none) is
 * the file main wrote, which a binary upgrade moves to .oldbin and back.
 */
int master_run(struct settings *cfg, int argc, char **argv, char **envp, const struct listener *listeners,
               int nlisteners, const struct listener *status_listeners, int nstatus, const char *pidfile);

#endif
