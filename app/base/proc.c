/* proc: what the kernel tells about a process, read from /proc. */
#include "base/proc.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The resident field (the second) of a statm text, in KiB; 0 if it is not there. */
static long proc_statm_resident_kb(const char *text)
{
    char *end;
    strtol(text, &end, 10);
    if (end == text) return 0;
    const char *resident = end;
    long pages = strtol(resident, &end, 10);
    if (end == resident) return 0;
    return pages * (sysconf(_SC_PAGESIZE) / 1024);
}

/* One read of a whole statm file from offset 0 (it is a few dozen bytes). */
static long proc_statm_read_kb(int fd)
{
    char text[128];
    ssize_t got = pread(fd, text, sizeof text - 1, 0);
    if (got <= 0) return 0;
    text[got] = '\0';
    return proc_statm_resident_kb(text);
}

/*
 * This process's own statm stays open: /memory-test reads it three times a
 * request, and an open + read + close (through stdio: a FILE and its buffer
 * allocated each time) costs several times one pread. The descriptor names
 * the process that opened it (/proc/self is resolved at open), so a forked
 * child forgets its parent's and opens its own.
 */
static _Atomic int proc_self_statm = -1;
static pthread_once_t proc_self_statm_once = PTHREAD_ONCE_INIT;

static void proc_self_statm_forget(void)
{
    int fd = atomic_exchange(&proc_self_statm, -1);
    if (fd >= 0) close(fd);
}

static void proc_self_statm_watch_forks(void)
{
    pthread_atfork(NULL, NULL, proc_self_statm_forget);
}

static int proc_self_statm_fd(void)
{
    int fd = atomic_load_explicit(&proc_self_statm, memory_order_acquire);
    if (fd >= 0) return fd;
    pthread_once(&proc_self_statm_once, proc_self_statm_watch_forks);
    fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int none = -1; /* two threads may race here: the loser keeps the winner's */
    if (!atomic_compare_exchange_strong(&proc_self_statm, &none, fd)) {
        close(fd);
        fd = none;
    }
    return fd;
}

long proc_rss_kb(pid_t pid)
{
    if (pid == 0) {
        int self = proc_self_statm_fd();
        return self < 0 ? 0 : proc_statm_read_kb(self);
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/statm", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    long kb = proc_statm_read_kb(fd);
    close(fd);
    return kb;
}
