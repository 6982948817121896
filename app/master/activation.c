/* activation: systemd's socket activation: the sockets of LISTEN_FDS, each taken for the bind of its address. */
#define _GNU_SOURCE
#include "master/activation.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <systemd/sd-daemon.h>

#include "base/listener.h"
#include "master/upgrade.h"

static int nfds; /* passed at SD_LISTEN_FDS_START...; < 0: LISTEN_FDS was malformed (-errno) */

void activation_init(void)
{
    nfds = sd_listen_fds(1);
}

/* The same unix socket file: the same path, or (relative, through symlinks) one realpath. */
static int same_unix_path(int fd, const char *path)
{
    if (sd_is_socket_unix(fd, SOCK_STREAM, 1, path, 0) > 0) return 1;
    struct sockaddr_un sa;
    socklen_t len = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0 || sa.sun_family != AF_UNIX || !sa.sun_path[0]) return 0;
    char a[PATH_MAX], b[PATH_MAX];
    return realpath(sa.sun_path, a) && realpath(path, b) && strcmp(a, b) == 0;
}

/* Whether fd listens on addr as a bind names it (HOST:PORT: any of its addresses). */
static int matches(int fd, const char *addr)
{
    struct listener_address a;
    char err[256];
    if (listener_parse(addr, &a, err, sizeof err) != 0) return 0;
    if (a.unix_path[0]) return same_unix_path(fd, a.unix_path);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    if (getaddrinfo(a.host[0] ? a.host : NULL, a.port, &hints, &res) != 0) return 0;
    int found = 0;
    for (struct addrinfo *ai = res; ai && !found; ai = ai->ai_next)
        found = sd_is_socket_sockaddr(fd, SOCK_STREAM, ai->ai_addr, (unsigned)ai->ai_addrlen, 1) > 0;
    freeaddrinfo(res);
    return found;
}

/* fd's address as a bind would name it, for the operator. */
static const char *describe(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    memset(&ss, 0, sizeof ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) snprintf(out, outlen, "%s", strerror(errno));
    else if (ss.ss_family == AF_UNIX) snprintf(out, outlen, "unix:%s", ((struct sockaddr_un *)&ss)->sun_path);
    else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, outlen, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, outlen, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else snprintf(out, outlen, "address family %d", ss.ss_family);
    return out;
}

int activation_match(const struct settings *cfg, char *err, size_t errlen)
{
    if (nfds < 0) {
        snprintf(err, errlen, "socket activation: LISTEN_FDS: %s", strerror(-nfds));
        return -1;
    }
    const struct settings_binds *lists[] = {&cfg->bind, &cfg->status_bind};
    int taken[2][SETTINGS_MAX_BINDS] = {{0}};
    for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + nfds; fd++) {
        char what[160];
        if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
            snprintf(err, errlen, "socket activation: descriptor %d (LISTEN_FDS) is not a listening stream socket", fd);
            return -1;
        }
        int found = 0;
        for (int k = 0; k < 2 && !found; k++) {
            for (int i = 0; i < lists[k]->count && !found; i++) {
                if (taken[k][i] || !matches(fd, lists[k]->addr[i])) continue;
                const char *addr = lists[k]->addr[i];
                if (upgrade_inherit(fd, addr, strlen(addr), 1) != 0) {
                    snprintf(err, errlen, "socket activation: too many sockets (descriptor %d, %s)", fd, addr);
                    return -1;
                }
                taken[k][i] = found = 1;
            }
        }
        if (!found) {
            snprintf(err, errlen,
                     "socket activation: descriptor %d (LISTEN_FDS) listens on %s, which is no bind or "
                     "status_bind address; add it to bind, or take it out of the socket unit",
                     fd, describe(fd, what, sizeof what));
            return -1;
        }
    }
    return 0;
}
