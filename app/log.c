/* log: levelled error-log lines that name the process role and pid. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_fd = STDERR_FILENO;
static enum log_level log_threshold = LOG_INFO;
static char log_path[4096];
static const char *log_role = "master";

static int open_path(void)
{
    if (log_path[0] == '\0' || strcmp(log_path, "-") == 0) return STDERR_FILENO;
    return open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

int log_open(const char *path, enum log_level level)
{
    log_threshold = level;
    snprintf(log_path, sizeof log_path, "%s", path ? path : "");
    return log_reopen();
}

int log_reopen(void)
{
    int fd = open_path();
    if (fd < 0) return -1;
    if (log_fd != STDERR_FILENO && log_fd != fd) close(log_fd);
    log_fd = fd;
    return 0;
}

void log_set_role(const char *role)
{
    log_role = role;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"debug", "info", "warning", "error"};
    if (level < log_threshold) return;
    int saved = errno;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ld [%ld] [%s] %s: ", (long)tv.tv_usec / 1000,
                          (long)getpid(), log_role, names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    n = m < 0 ? n : n + (size_t)m < sizeof line - 1 ? n + (size_t)m : sizeof line - 2;
    line[n++] = '\n';
    /* One write per line, so lines of different processes do not interleave. */
    ssize_t w = write(log_fd, line, n);
    (void)w;
    errno = saved;
}
