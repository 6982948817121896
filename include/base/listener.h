/* listener: the sockets the master opens before forking its workers. */
#ifndef PERFCGI_LISTENER_H
#define PERFCGI_LISTENER_H

#include <stddef.h>
#include <sys/types.h>

struct listener {
    int fd;
    char addr[128];      /* as configured: unix:PATH or HOST:PORT */
    char unix_path[108]; /* "" for TCP */
    int shared;          /* another master serves it too (binary upgrade): closing leaves the file */
    int activated;       /* systemd's (socket activation): it made the file, which stays */
};

/* An address as configured, taken apart: unix:PATH, or HOST:PORT ([v6]:PORT). */
struct listener_address {
    char unix_path[108]; /* "" for TCP */
    char host[128];      /* without the brackets of [v6] */
    char port[8];
};
/* Takes addr apart, 0; or -1 with the reason in err. The settings check each
 * bind with it, so that what they accept is what listener_open can open. */
int listener_parse(const char *addr, struct listener_address *out, char *err, size_t errlen);

/*
 * Binds and listens on addr (unix:PATH or HOST:PORT, [v6]:PORT), non-blocking:
 * every worker class waits for readiness, then accepts (a worker that loses
 * the race sees EAGAIN instead of blocking). A stale unix
 * socket that nobody answers on is replaced; one in use is an error. Returns
 * 0, or -1 with the reason in err.
 */
int listener_open(struct listener *l, const char *addr, int backlog, int unix_mode, char *err, size_t errlen);
/*
 * Takes over fd, a listening socket inherited from the master of a binary
 * upgrade, as the socket of addr: it must be a listening socket of addr's
 * family. Marked shared (the old master still serves it: the file stays);
 * the backlog is set again. 0, or -1 with the reason in err.
 */
int listener_adopt(struct listener *l, int fd, const char *addr, int backlog, char *err, size_t errlen);
/* Connections waiting to be accepted, and the queue's size, as the kernel
 * reports them (TCP_INFO for TCP, sock_diag for unix sockets): 0 or -1. */
int listener_queue(const struct listener *l, int *queued, int *backlog);
/* Gives a unix socket file to uid/gid (-1 keeps one); TCP: nothing to do. */
int listener_chown(const struct listener *l, uid_t uid, gid_t gid, char *err, size_t errlen);
/* Closes the socket and removes a unix socket file (unless shared or activated). */
void listener_close(struct listener *l);

#endif
