/* listener: the sockets the master opens before forking its workers. */
#define _GNU_SOURCE
#include "base/listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>

#include "base/query.h"

/* A unix socket file nobody accepts on is left over from a crash. */
static int unix_socket_stale(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int stale = connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0 && errno == ECONNREFUSED;
    close(fd);
    return stale;
}

int listener_parse(const char *addr, struct listener_address *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strncmp(addr, "unix:", 5) == 0) {
        size_t len = strlen(addr + 5);
        if (len == 0 || len >= sizeof out->unix_path) {
            snprintf(err, errlen, "'%s': a unix socket path must have 1 to %zu characters", addr,
                     sizeof out->unix_path - 1);
            return -1;
        }
        memcpy(out->unix_path, addr + 5, len + 1);
        return 0;
    }
    const char *colon = strrchr(addr, ':');
    long port;
    if (!colon || colon == addr || query_parse_long(colon + 1, &port) != 0 || port < 1 || port > 65535) {
        snprintf(err, errlen, "'%s' must be unix:PATH or HOST:PORT with a port in [1, 65535]", addr);
        return -1;
    }
    size_t hostlen = (size_t)(colon - addr);
    if (hostlen >= sizeof out->host) hostlen = sizeof out->host - 1;
    memcpy(out->host, addr, hostlen);
    if (out->host[0] == '[' && hostlen >= 2 && out->host[hostlen - 1] == ']') { /* [::1]:9000 */
        memmove(out->host, out->host + 1, hostlen - 2);
        out->host[hostlen - 2] = '\0';
    }
    snprintf(out->port, sizeof out->port, "%ld", port);
    return 0;
}

/* The one way a listening socket is made, unix or TCP: a non-blocking socket
 * bound to sa, listening. 0, or -1 with errno, the socket closed (and a unix
 * socket file it made removed). */
static int bind_listen(struct listener *l, const struct sockaddr *sa, socklen_t salen, int backlog, int unix_mode)
{
    l->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (l->fd < 0) return -1;
    int rc;
    if (sa->sa_family == AF_UNIX) {
        /* The socket file is born with the asked mode (bind applies the umask
         * to 0777): no window in which it is wider open, and no chmod by
         * path, which would follow a symlink planted in its place. */
        mode_t old = umask(~(mode_t)unix_mode & 0777);
        rc = bind(l->fd, sa, salen);
        umask(old);
        if (rc == 0) snprintf(l->unix_path, sizeof l->unix_path, "%s", ((const struct sockaddr_un *)sa)->sun_path);
    } else {
        int one = 1;
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        rc = bind(l->fd, sa, salen);
    }
    if (rc == 0 && listen(l->fd, backlog) == 0) return 0;
    int saved = errno;
    listener_close(l);
    errno = saved;
    return -1;
}

/* A stale socket file (left over from a crash) is replaced; one a server
 * still answers on, or any other file, is an error. */
static int open_unix(struct listener *l, const char *path, int backlog, int mode, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s: the path exists and is not a socket", l->addr);
            return -1;
        }
        if (!unix_socket_stale(&sa)) {
            snprintf(err, errlen, "%s: another server is listening there", l->addr);
            return -1;
        }
        unlink(path);
    }
    if (bind_listen(l, (const struct sockaddr *)&sa, sizeof sa, backlog, mode) == 0) return 0;
    snprintf(err, errlen, "%s: %s", l->addr, strerror(errno));
    return -1;
}

/* The first of the host's addresses that binds (an empty host: every address). */
static int open_tcp(struct listener *l, const struct listener_address *a, int backlog, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int gai = getaddrinfo(a->host[0] ? a->host : NULL, a->port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "%s: %s", l->addr, gai_strerror(gai));
        return -1;
    }
    int saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (bind_listen(l, ai->ai_addr, ai->ai_addrlen, backlog, 0) == 0) break;
        saved = errno;
    }
    freeaddrinfo(res);
    if (l->fd < 0) {
        snprintf(err, errlen, "%s: %s", l->addr, strerror(saved ? saved : EADDRNOTAVAIL));
        return -1;
    }
    return 0;
}

int listener_open(struct listener *l, const char *addr, int backlog, int unix_mode, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->fd = -1;
    snprintf(l->addr, sizeof l->addr, "%s", addr);
    struct listener_address a;
    if (listener_parse(addr, &a, err, errlen) != 0) return -1;
    if (a.unix_path[0]) return open_unix(l, a.unix_path, backlog, unix_mode, err, errlen);
    return open_tcp(l, &a, backlog, err, errlen);
}

/* The path may have been replaced since bind (its directory may belong to the
 * worker user): lchown never follows a symlink, and anything but a socket is
 * left alone. */
int listener_chown(const struct listener *l, uid_t uid, gid_t gid, char *err, size_t errlen)
{
    struct stat st;
    if (!l->unix_path[0]) return 0;
    if (lstat(l->unix_path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s is no longer a socket; left alone", l->unix_path);
        return -1;
    }
    if (lchown(l->unix_path, uid, gid) == 0) return 0;
    snprintf(err, errlen, "cannot chown %s: %s", l->unix_path, strerror(errno));
    return -1;
}

int listener_adopt(struct listener *l, int fd, const char *addr, int backlog, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->fd = -1;
    snprintf(l->addr, sizeof l->addr, "%s", addr);
    struct listener_address a;
    if (listener_parse(addr, &a, err, errlen) != 0) return -1;
    int listening = 0, domain = -1;
    socklen_t len = sizeof listening, dlen = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening ||
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) != 0 || (domain == AF_UNIX) != !!a.unix_path[0]) {
        snprintf(err, errlen, "%s: the inherited descriptor %d is not a listening socket of that address", addr, fd);
        return -1;
    }
    /* As listener_open makes them: closed on exec, non-blocking. */
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 ||
        listen(fd, backlog) != 0) {
        snprintf(err, errlen, "%s: inherited descriptor %d: %s", addr, fd, strerror(errno));
        return -1;
    }
    l->fd = fd;
    snprintf(l->unix_path, sizeof l->unix_path, "%s", a.unix_path);
    l->shared = 1;
    return 0;
}

void listener_close(struct listener *l)
{
    if (l->fd >= 0) close(l->fd);
    l->fd = -1;
    if (l->unix_path[0] && !l->shared && !l->activated) unlink(l->unix_path);
    l->unix_path[0] = '\0';
}

/* For a listening unix socket the kernel reports the accept queue as its
 * receive queue and the backlog as its send queue. */
static int unix_queue(int fd, int *queued, int *backlog)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) return -1;
    struct {
        struct nlmsghdr nlh;
        struct unix_diag_req req;
    } msg = {
        .nlh = {.nlmsg_len = sizeof msg, .nlmsg_type = SOCK_DIAG_BY_FAMILY, .nlmsg_flags = NLM_F_REQUEST},
        .req = {.sdiag_family = AF_UNIX, .udiag_states = 1u << 10 /* TCP_LISTEN */, .udiag_ino = (unsigned)st.st_ino,
                .udiag_show = UDIAG_SHOW_RQLEN, .udiag_cookie = {~0u, ~0u}},
    };
    long buf[1024];
    int rc = -1;
    struct timeval tv = {0, 200000};
    setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = send(nl, &msg, sizeof msg, 0) == (ssize_t)sizeof msg ? recv(nl, buf, sizeof buf, 0) : -1;
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (n > 0 && NLMSG_OK(h, (size_t)n) && h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
        struct unix_diag_msg *m = NLMSG_DATA(h);
        int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof *m));
        for (struct rtattr *a = (struct rtattr *)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
            if (a->rta_type == UNIX_DIAG_RQLEN) {
                struct unix_diag_rqlen *q = RTA_DATA(a);
                *queued = (int)q->udiag_rqueue;
                *backlog = (int)q->udiag_wqueue;
                rc = 0;
            }
        }
    }
    close(nl);
    return rc;
}

int listener_queue(const struct listener *l, int *queued, int *backlog)
{
    if (l->unix_path[0]) return unix_queue(l->fd, queued, backlog);
    struct tcp_info info;
    socklen_t len = sizeof info;
    if (getsockopt(l->fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
    /* For a listening socket: the accept queue and its limit. */
    *queued = (int)info.tcpi_unacked;
    *backlog = (int)info.tcpi_sacked;
    return 0;
}
