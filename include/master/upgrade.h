/* upgrade: the binary upgrade on USR2, as Nginx and Gunicorn do it. The old master
 * executes the binary again with its listening sockets inherited; the new master adopts
 * them instead of binding, and once its workers serve it tells the old one (SIGWINCH),
 * which stops gracefully. A new master that exits before it serves is rolled back. */
#ifndef PERFCGI_UPGRADE_H
#define PERFCGI_UPGRADE_H

#include <stddef.h>
#include <sys/types.h>

#include "base/listener.h"

/* The environment of the new master: its inherited sockets, "FD=ADDRESS;..." with each
 * address as configured, and the pid of the old master. */
#define UPGRADE_LISTEN_FDS_VAR "PERFCGI_LISTEN_FDS"
#define UPGRADE_FROM_VAR "PERFCGI_UPGRADE_FROM"
/* After an fd in UPGRADE_LISTEN_FDS_VAR ("3/systemd=unix:..."): a socket systemd made
 * (socket activation), whose unix socket file no master removes. */
#define UPGRADE_ACTIVATED_MARK "/systemd"

/*
 * At start-up, before the settings are read (they reject unknown PERFCGI_*
 * variables) and before any chdir: resolves argv0 to the absolute path USR2
 * executes (not /proc/self/exe, which names the old inode once the file is
 * replaced), and takes the two variables above out of the environment, so that
 * neither the settings nor the workers see them.
 */
void upgrade_init(const char *argv0);
/* The old master's pid when this process is the new master of an upgrade, else 0. */
pid_t upgrade_old_master(void);
/* Adds fd, a socket inherited otherwise (socket activation), as the socket of addr
 * (its first len bytes) for upgrade_adopt: 0, or -1 if the table is full. */
int upgrade_inherit(int fd, const char *addr, size_t len, int activated);
/* Opens l for addr from the inherited socket of that address: 1; 0 when none
 * was inherited (open it as usual); -1 with the reason in err. */
int upgrade_adopt(struct listener *l, const char *addr, int backlog, char *err, size_t errlen);
/* Closes the inherited sockets no bind adopted. */
void upgrade_close_unused(void);

/* ---- the old master ---- */

/* Why USR2 cannot upgrade this master (PID 1, no binary path), or NULL. */
const char *upgrade_refusal(void);
/* "<pidfile>.oldbin" into out (NULL when there is no pidfile or it does not fit). */
const char *upgrade_oldbin_path(const char *pidfile, char *out, size_t outlen);
/* Moves the pidfile to .oldbin (a missing one is no error): 0, or -1 with errno. */
int upgrade_move_pidfile(const char *pidfile);
/* Rollback: moves .oldbin back to the pidfile (writes it again if that fails). */
void upgrade_restore_pidfile(const char *pidfile);
/* In the child forked for the new master (signals blocked, other sockets closed):
 * executes the binary with argv, the sockets ls inherited and named in the
 * environment. Returns only if the exec failed (errno set). */
void upgrade_exec(const struct listener *ls, int n, char **argv);
/* The path upgrade_exec executes. */
const char *upgrade_binary(void);

#endif
