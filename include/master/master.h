/* master: the arbiter: spawns, replaces, recycles, reloads and stops the workers. */
#ifndef PERFCGI_MASTER_H
#define PERFCGI_MASTER_H

#include "base/listener.h"
#include "base/settings.h"

/*
 * Runs until stopped by a signal; returns the process exit code. Takes
 * ownership of cfg (heap-allocated) and of the listeners; argc/argv/envp are
 * read again on HUP.
 */
int master_run(struct settings *cfg, int argc, char **argv, char **envp, const struct listener *listeners,
               int nlisteners, const struct listener *status_listeners, int nstatus);

#endif
