/* pidfile: the file naming the master's pid, written and removed safely. */
#include "base/pidfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* As root in a directory the worker user may write to: never through a symlink
 * (O_NOFOLLOW), a FIFO (O_NONBLOCK, then the type check) or a second name of
 * another file, which is only truncated once it proved to be none of those. */
int pidfile_write(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    struct stat st;
    char line[32];
    int n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    int rc = fstat(fd, &st) != 0 ? -1 : !S_ISREG(st.st_mode) || st.st_nlink > 1 ? (errno = EPERM, -1) : 0;
    if (rc == 0 && (ftruncate(fd, 0) != 0 || write(fd, line, (size_t)n) != n)) rc = -1;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

void pidfile_remove(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return;
    char line[32];
    ssize_t n = read(fd, line, sizeof line - 1);
    close(fd);
    if (n <= 0) return;
    line[n] = '\0';
    if (strtol(line, NULL, 10) == (long)getpid()) unlink(path);
}
