/* self: this process's own id, read from the kernel once per process. */
#ifndef PERFCGI_SELF_H
#define PERFCGI_SELF_H

#include <sys/types.h>

/* getpid() without a system call per use: every answer carries it (X-Worker,
 * "worker"), and glibc no longer caches it. Correct across fork. */
pid_t self_pid(void);

#endif
