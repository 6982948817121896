/* pidfile: the file naming the master's pid, written and removed safely. */
#ifndef PERFCGI_PIDFILE_H
#define PERFCGI_PIDFILE_H

/* Writes this process's pid to path: 0, or -1 with errno (ELOOP: a symbolic
 * link, EPERM: not a regular file of its own). */
int pidfile_write(const char *path);
/* Removes path if it names this process: after a binary upgrade it names the
 * new master, which the old one must leave it to. */
void pidfile_remove(const char *path);

#endif
