/* proc: what the kernel tells about a process, read from /proc. */
#ifndef PERFCGI_PROC_H
#define PERFCGI_PROC_H

#include <sys/types.h>

/* Resident set size of process pid (0: this process) in KiB; 0 if it cannot be read. */
long proc_rss_kb(pid_t pid);

#endif
