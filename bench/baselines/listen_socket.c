/* listen_socket.c: opens the non-blocking listening socket of the non-blocking baseline. */
#include "listen_socket.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int open_unix(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    unlink(path); /* a socket left by a killed run */
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || chmod(path, BASELINE_SOCKET_MODE) != 0 ||
        listen(fd, BASELINE_BACKLOG) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int open_tcp(const char *spec)
{
    const char *colon = strrchr(spec, ':');
    char host[256];
    size_t host_len = colon ? (size_t)(colon - spec) : 0;
    if (!colon || host_len >= sizeof host) {
        errno = EINVAL; /* not HOST:PORT */
        return -1;
    }
    memcpy(host, spec, host_len);
    host[host_len] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *found = NULL;
    int gai = getaddrinfo(host_len ? host : NULL, colon + 1, &hints, &found);
    if (gai != 0) {
        fprintf(stderr, "listen: %s: %s\n", spec, gai_strerror(gai));
        errno = EINVAL;
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = found; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, BASELINE_BACKLOG) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(found);
    return fd;
}

int listen_socket_open(const struct baseline_args *args)
{
    int fd = args->unix_path ? open_unix(args->unix_path) : open_tcp(args->socket);
    if (fd < 0) fprintf(stderr, "listen: cannot listen on %s: %m\n", args->socket);
    return fd;
}
