/* proc: what the kernel tells about a process, read from /proc. */
#include "base/proc.h"

#include <stdio.h>
#include <unistd.h>

long proc_rss_kb(pid_t pid)
{
    char path[64];
    long pages_total, pages_resident;
    if (pid == 0)
        snprintf(path, sizeof path, "/proc/self/statm");
    else
        snprintf(path, sizeof path, "/proc/%ld/statm", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int got = fscanf(f, "%ld %ld", &pages_total, &pages_resident);
    fclose(f);
    return got == 2 ? pages_resident * (sysconf(_SC_PAGESIZE) / 1024) : 0;
}
