/* upgrade: the binary upgrade on USR2: the binary's path, the sockets handed over, the pidfile. */
#define _GNU_SOURCE
#include "master/upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/pidfile.h"
#include "base/settings.h"
#include "base/signals.h"

/* Sockets of both kinds (bind and status_bind) may be handed over. */
#define UPGRADE_MAX_FDS (2 * SETTINGS_MAX_BINDS)

static char binary[PATH_MAX];
static pid_t old_master;
static struct {
    int fd;
    char addr[128];
    int adopted;
    int activated; /* systemd's socket (activation): its file is never removed */
} inherited[UPGRADE_MAX_FDS];
static int ninherited;

/* Relative to the working directory of the start, which may change later. */
static int absolute(const char *path, char *out, size_t outlen)
{
    if (path[0] == '/') return snprintf(out, outlen, "%s", path) < (int)outlen ? 0 : -1;
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return -1;
    while (path[0] == '.' && path[1] == '/') path += 2; /* the log names it plainly */
    return snprintf(out, outlen, "%s/%s", cwd, path) < (int)outlen ? 0 : -1;
}

/* As execvp would find a bare name: the first executable file of that name on PATH. */
static int search_path(const char *name, char *out, size_t outlen)
{
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        char candidate[PATH_MAX];
        if (snprintf(candidate, sizeof candidate, "%.*s/%s", (int)len, len ? path : ".", name) <
                (int)sizeof candidate &&
            access(candidate, X_OK) == 0)
            return absolute(candidate, out, outlen);
        path += len + (path[len] == ':');
    }
    return -1;
}

int upgrade_inherit(int fd, const char *addr, size_t len, int activated)
{
    if (ninherited >= UPGRADE_MAX_FDS || fd <= STDERR_FILENO || len == 0 || len >= sizeof inherited[0].addr)
        return -1;
    inherited[ninherited].fd = fd;
    inherited[ninherited].adopted = 0;
    inherited[ninherited].activated = activated;
    memcpy(inherited[ninherited].addr, addr, len);
    inherited[ninherited].addr[len] = '\0';
    ninherited++;
    return 0;
}

/* "3=unix:/run/x.sock;4/systemd=127.0.0.1:9000": fds and addresses, at most
 * UPGRADE_MAX_FDS; "/systemd" marks a socket of systemd's socket activation. */
static void parse_fds(const char *text)
{
    while (text && *text) {
        char *end;
        long fd = strtol(text, &end, 10);
        int activated = strncmp(end, UPGRADE_ACTIVATED_MARK, strlen(UPGRADE_ACTIVATED_MARK)) == 0;
        if (activated) end += strlen(UPGRADE_ACTIVATED_MARK);
        if (end != text && *end == '=' && fd < INT_MAX) upgrade_inherit((int)fd, end + 1, strcspn(end + 1, ";"), activated);
        text = strchr(text, ';');
        if (text) text++;
    }
}

void upgrade_init(const char *argv0)
{
    ninherited = 0;
    old_master = 0;
    int found = !argv0                ? -1
                : strchr(argv0, '/') ? absolute(argv0, binary, sizeof binary)
                                     : search_path(argv0, binary, sizeof binary);
    if (found != 0) binary[0] = '\0';
    const char *fds = getenv(UPGRADE_LISTEN_FDS_VAR), *from = getenv(UPGRADE_FROM_VAR);
    if (from) {
        long pid = strtol(from, NULL, 10);
        old_master = pid > 1 && pid <= INT_MAX ? (pid_t)pid : 0;
    }
    parse_fds(fds);
    unsetenv(UPGRADE_LISTEN_FDS_VAR);
    unsetenv(UPGRADE_FROM_VAR);
}

pid_t upgrade_old_master(void)
{
    return old_master;
}

int upgrade_adopt(struct listener *l, const char *addr, int backlog, char *err, size_t errlen)
{
    for (int i = 0; i < ninherited; i++) {
        if (inherited[i].adopted || strcmp(inherited[i].addr, addr) != 0) continue;
        if (listener_adopt(l, inherited[i].fd, addr, backlog, err, errlen) != 0) return -1;
        l->activated = inherited[i].activated;
        inherited[i].adopted = 1;
        return 1;
    }
    return 0;
}

void upgrade_close_unused(void)
{
    for (int i = 0; i < ninherited; i++)
        if (!inherited[i].adopted) close(inherited[i].fd);
    ninherited = 0;
}

const char *upgrade_refusal(void)
{
    if (getpid() == 1)
        return "the master is PID 1, whose exit would end the container; use HUP to reload the configuration";
    if (!binary[0]) return "the path perfcgi was started from is unknown; restart it instead";
    return NULL;
}

const char *upgrade_binary(void)
{
    return binary;
}

const char *upgrade_oldbin_path(const char *pidfile, char *out, size_t outlen)
{
    if (!pidfile || !pidfile[0]) return NULL;
    return snprintf(out, outlen, "%s.oldbin", pidfile) < (int)outlen ? out : NULL;
}

int upgrade_move_pidfile(const char *pidfile)
{
    char oldbin[PATH_MAX];
    if (!pidfile || !pidfile[0]) return 0;
    if (!upgrade_oldbin_path(pidfile, oldbin, sizeof oldbin)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return rename(pidfile, oldbin) == 0 || errno == ENOENT ? 0 : -1;
}

void upgrade_restore_pidfile(const char *pidfile)
{
    char oldbin[PATH_MAX];
    if (!upgrade_oldbin_path(pidfile, oldbin, sizeof oldbin)) return;
    if (rename(oldbin, pidfile) != 0) pidfile_write(pidfile);
}

void upgrade_exec(const struct listener *ls, int n, char **argv)
{
    char fds[UPGRADE_MAX_FDS * 148] = "", pid[24];
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        /* A ';' in an address would cut the list: that socket is not handed over,
         * and the new master fails to bind it (and is rolled back). */
        if (strchr(ls[i].addr, ';') || ls[i].fd < 0) continue;
        int flags = fcntl(ls[i].fd, F_GETFD);
        if (flags < 0 || fcntl(ls[i].fd, F_SETFD, flags & ~FD_CLOEXEC) != 0) continue;
        int w = snprintf(fds + used, sizeof fds - used, "%s%d%s=%s", used ? ";" : "", ls[i].fd,
                         ls[i].activated ? UPGRADE_ACTIVATED_MARK : "", ls[i].addr);
        if (w > 0 && (size_t)w < sizeof fds - used) used += (size_t)w;
    }
    snprintf(pid, sizeof pid, "%ld", (long)getppid());
    if (setenv(UPGRADE_LISTEN_FDS_VAR, fds, 1) != 0 || setenv(UPGRADE_FROM_VAR, pid, 1) != 0) return;
    signals_unblock_all();
    execv(binary, argv);
}
