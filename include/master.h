/* master: the arbiter: spawns workers, reaps and replaces them, stops them. */
#ifndef PERFCGI_MASTER_H
#define PERFCGI_MASTER_H

#include "listener.h"
#include "settings.h"

/* Runs until stopped by a signal; returns the process exit code. */
int master_run(const struct settings *cfg, const struct listener *listeners, int nlisteners,
               const struct listener *status_listeners, int nstatus);

#endif
