/* log: levelled error-log lines that name the process role and pid. */
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "base/escape.h"
#include "base/self.h"

static int log_fd = STDERR_FILENO;
static enum log_level log_threshold = LOG_INFO;
static char log_path[4096];
static const char *log_role = "master";
static int access_fd = -1; /* -1: off */
static char access_path[4096];
/* Compiled in the master (start-up, HUP) before it forks: workers only read it. */
static struct access_format access_fmt;

/* O_NOFOLLOW: the master runs as root in directories the worker user may
 * write to, and a symlink planted there must not make root append to, or
 * later give away, the file it points to. */
static int open_path(const char *path)
{
    if (strcmp(path, "-") == 0) return STDERR_FILENO;
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
}

/* Replaces *fd with a fresh descriptor for path; keeps the old one on failure. */
static int reopen(int *fd, const char *path)
{
    int fresh = path[0] ? open_path(path) : -1;
    if (path[0] && fresh < 0) return -1;
    if (*fd > STDERR_FILENO && *fd != fresh) close(*fd);
    *fd = fresh;
    return 0;
}

int log_open(const char *path, enum log_level level)
{
    log_threshold = level;
    snprintf(log_path, sizeof log_path, "%s", path ? path : "");
    return reopen(&log_fd, log_path[0] ? log_path : "-");
}

int log_reopen(void)
{
    int rc = reopen(&log_fd, log_path[0] ? log_path : "-");
    return reopen(&access_fd, access_path) | rc;
}

/* Gives the file open on fd to uid/gid if it is a regular file with one name
 * (else leaves it alone): 0, or -1 with err naming path. */
static int give_fd(int fd, const char *path, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    /* Only a file of its own: never a device, nor a second name of another file. */
    if (!S_ISREG(st.st_mode) || st.st_nlink > 1) return 0;
    if (fchown(fd, uid, gid) == 0) return 0;
    snprintf(err, errlen, "cannot give %s to the worker user: %s", path, strerror(errno));
    return -1;
}

/* By descriptor, never by path: the path may have been replaced since it was opened. */
void log_chown(const struct settings *cfg)
{
    uid_t uid;
    gid_t gid;
    char err[512];
    int owner = settings_owner(cfg, &uid, &gid, err, sizeof err);
    if (owner < 0) log_msg(LOG_WARNING, "cannot give the log files away: %s", err);
    if (owner <= 0) return;
    const char *paths[] = {log_path, access_path};
    const int fds[] = {log_fd, access_fd};
    for (int i = 0; i < 2; i++)
        if (fds[i] > STDERR_FILENO && give_fd(fds[i], paths[i], uid, gid, err, sizeof err) != 0)
            log_msg(LOG_WARNING, "%s", err);
}

int log_access_open(const char *path)
{
    snprintf(access_path, sizeof access_path, "%s", path ? path : "");
    return reopen(&access_fd, access_path);
}

const char *log_escape(const char *in, char *out, size_t outlen)
{
    if (outlen) out[escape_text(out, outlen - 1, in)] = '\0';
    return out;
}

int log_access_format(const char *spec, char *err, size_t errlen)
{
    struct access_format fresh;
    if (access_format_compile(&fresh, spec, err, errlen) != 0) return -1;
    access_format_free(&access_fmt);
    access_fmt = fresh;
    return 0;
}

int log_access_on(void)
{
    return access_fd >= 0 && access_fmt.nsegs;
}

void log_access(const struct access_record *r)
{
    if (!log_access_on()) return;
    /* On the stack, not thread-local: a thread's static TLS is zeroed, every page of
     * it, when the thread starts, so a thread-local line would cost each serving
     * thread 16 KiB of resident memory, logging or not. Here only the pages written
     * are touched. */
    char line[ACCESS_LINE_MAX];
    size_t n = access_format_render(&access_fmt, r, line);
    /* One write per line, so lines of different processes do not interleave. */
    ssize_t w = write(access_fd, line, n);
    (void)w;
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
                          (long)self_pid(), log_role, names[level]);
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
