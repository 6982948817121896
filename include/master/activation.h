/* activation: systemd's socket activation: the sockets of LISTEN_FDS, each taken for the bind of its address. */
#ifndef PERFCGI_ACTIVATION_H
#define PERFCGI_ACTIVATION_H

#include <stddef.h>

#include "base/settings.h"

/*
 * At start-up, beside upgrade_init: takes the sockets systemd passed (LISTEN_FDS,
 * for this process: LISTEN_PID) and the two variables out of the environment, so
 * that neither the workers nor the new master of a binary upgrade see them.
 */
void activation_init(void);
/*
 * Once the settings are read: each passed socket goes to the entry of bind or
 * status_bind with its address (the same unix socket file; the same address and
 * port), which then adopts it instead of binding (upgrade_adopt), and which
 * never removes its file. An entry no socket matches is bound as usual. A socket
 * that matches no entry, or that is no listening stream socket, is an error: -1
 * with the reason in err, naming it. 0 otherwise (also without socket activation).
 */
int activation_match(const struct settings *cfg, char *err, size_t errlen);

#endif
