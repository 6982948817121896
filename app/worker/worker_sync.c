/* worker_sync: the libfcgi serving loop: requests served blocking, one at a time per thread
 * (the sync class runs one in its only thread; the thread class, one per serving thread). */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/scoreboard.h"
#include "base/signals.h"
#include "fastcgi/fcgi_params.h"
#include "worker/worker_blocking.h"
#include "worker/worker_request.h"
#include "worker/worker_sync.h"

/* Writes the answer of a finished exchange; a HEAD answer has no body. */
static void sync_respond(FCGX_Request *fr, const struct exchange *ex)
{
    char head[512];
    size_t n = exchange_head(ex, head, sizeof head);
    FCGX_PutStr(head, (int)n, fr->out);
    if (!ex->head_only && ex->resp.body_len) FCGX_PutStr(ex->resp.body, (int)ex->resp.body_len, fr->out);
}

/* How long a peer may stall while sending a request or taking its answer
 * before its connection is dropped: request_read_timeout, kept below half of
 * `timeout` so the connection goes before the master kills the whole worker. */
static double read_timeout(const struct settings *cfg)
{
    return cfg->request_read_timeout < cfg->timeout / 2 ? cfg->request_read_timeout : cfg->timeout / 2;
}

/* Reads what is left of the request body, so a kept connection starts at the
 * next request; a body that does not end within the limit closes it instead. */
static void drain_stdin(FCGX_Request *fr)
{
    char buf[8192];
    long left = 1L << 20;
    int n;
    while (left > 0 && (n = FCGX_GetStr(buf, sizeof buf, fr->in)) > 0) left -= n;
    if (left <= 0 || FCGX_GetError(fr->in)) fr->keepConnection = 0;
}

/* What one serving thread waits on: the listeners (EPOLLEXCLUSIVE wakes one
 * waiting worker or thread per connection instead of all of them; they are
 * non-blocking, so one that still loses the race gets EAGAIN) and, between
 * requests, the connection it keeps for the web server (fastcgi_keep_conn). */
struct waiter {
    const struct worker_env *env;
    int epfd;
    FCGX_Request fr;   /* its ipcFd is the kept connection between requests, else -1 */
    int64_t kept_until_us;
    sigset_t wait_mask; /* the signals that may interrupt a wait, and only a wait */
    int sigfd;          /* readable while one of those is pending (signals_serving_fd), or -1 */
};

#define KEPT_EVENT UINT32_MAX
#define SIGNAL_EVENT (UINT32_MAX - 1)
enum { WAIT_KEPT = -3, WAIT_AGAIN = -2, WAIT_ERROR = -1 };

static int waiter_open(struct waiter *w, const struct worker_env *env)
{
    w->env = env;
    w->sigfd = -1;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; w->epfd >= 0 && i < env->nlisteners; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u32 = (uint32_t)i};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, env->listeners[i].fd, &ev) != 0) {
            close(w->epfd);
            w->epfd = -1;
        }
    }
    /* No listening socket of its own: libfcgi reads and answers requests on
     * connections we accept, and never accepts one itself. */
    FCGX_InitRequest(&w->fr, -1, 0);
    return w->epfd < 0 ? -1 : 0;
}

/* Between requests, the kept connection waits for the next one. */
static void keep(struct waiter *w)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = KEPT_EVENT};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->fr.ipcFd, &ev) != 0) {
        close(w->fr.ipcFd);
        w->fr.ipcFd = -1;
        return;
    }
    w->kept_until_us = clock_us() + (int64_t)(w->env->cfg->keepalive_timeout * 1e6);
}

/* Closes the kept connection if it is idle; 0 if a request has arrived on it
 * meanwhile: that one is served first. Nginx retries a request it sent on a
 * cached connection that turns out closed, and drops closed ones from its
 * cache, so giving an idle one up loses nothing. */
static int give_up_kept(struct waiter *w)
{
    struct pollfd p = {.fd = w->fr.ipcFd, .events = POLLIN};
    if (poll(&p, 1, 0) == 1) return 0;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->fr.ipcFd, NULL);
    close(w->fr.ipcFd);
    w->fr.ipcFd = -1;
    return 1;
}

/* Waits for work: a request on the kept connection (WAIT_KEPT), or a
 * listener with a connection (its index). A kept connection that stays idle
 * past keepalive_timeout, or while a new connection waits, is given up: an
 * idle one must not keep the listen queue waiting. */
static int wait_for_work(struct waiter *w)
{
    struct epoll_event evs[SETTINGS_MAX_BINDS + 2]; /* the listeners, the kept connection, the signals */
    int kept = w->fr.ipcFd >= 0, timeout_ms = -1;
    if (kept) {
        int64_t left_us = w->kept_until_us - clock_us();
        timeout_ms = left_us > 0 ? (int)((left_us + 999) / 1000) : 0;
    }
    int n = epoll_pwait(w->epfd, evs, SETTINGS_MAX_BINDS + 2, timeout_ms, &w->wait_mask);
    if (n < 0) return errno == EINTR ? WAIT_AGAIN : WAIT_ERROR; /* a signal: look at the flags */
    if (n == 0) return give_up_kept(w) ? WAIT_AGAIN : WAIT_KEPT;
    int listener = -1;
    for (int i = 0; i < n; i++) /* under steady load work is always ready: a TERM gets in here */
        if (evs[i].data.u32 == SIGNAL_EVENT && signals_take_pending(&w->wait_mask)) return WAIT_AGAIN;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u32 == SIGNAL_EVENT) continue;
        if (evs[i].data.u32 == KEPT_EVENT) return WAIT_KEPT;
        listener = (int)evs[i].data.u32;
    }
    if (kept && !give_up_kept(w)) return WAIT_KEPT;
    return listener >= 0 ? listener : WAIT_AGAIN;
}

/* Accepts a connection with read and send timeouts of its own (accepted unix
 * connections do not inherit them from the listener): a peer that stops
 * half-way through a request, or stops reading its answer, frees the worker
 * after read_timeout. -1 with errno EAGAIN: another worker took it. */
static int accept_connection(struct waiter *w, int which)
{
    const struct listener *l = &w->env->listeners[which];
    int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return -1;
    double t = read_timeout(w->env->cfg);
    struct timeval tv = {(time_t)t, (suseconds_t)((t - (double)(time_t)t) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (!l->unix_path[0]) { /* small records, each answered at once: no Nagle */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* Whether a connection waits on a listener (as this thread's epoll sees it;
 * the kept connection is not in the set while a request is served). */
static int connection_waiting(struct waiter *w)
{
    struct epoll_event ev;
    return epoll_wait(w->epfd, &ev, 1, 0) == 1;
}

static void serve_one(struct waiter *w, struct blocking_backends *b, struct worker_request *wr)
{
    FCGX_Request *fr = &w->fr;
    struct request req;
    char path[1024];
    struct exchange ex;
    fcgi_params_to_request(&req, fr->envp, path, sizeof path);
    exchange_start(&ex, &req, w->env->cfg);
    worker_request_begin(wr, &ex);
    worker_run_blocking(&ex, b, wr);
    sync_respond(fr, &ex);
    drain_stdin(fr);
    /* A connection waits, or this was the last request before max_requests:
     * close this one with the answer instead of keeping it, so the web server
     * sees it end before it could send another request on it (giving it up
     * later can cross a request in flight). */
    if (fr->keepConnection && (worker_stopping || worker_at_limit() || connection_waiting(w))) fr->keepConnection = 0;
    struct pg_pool_stats ps;
    pg_pool_stats(b->pool, &ps);
    worker_request_end(w->env, wr, &ex, &ps); /* while the request's strings live */
    FCGX_Finish_r(fr);
    exchange_clear(&ex);
}

/* Reads the request on w->fr.ipcFd, counted busy meanwhile; 0, or -1 when it
 * could not be read (libfcgi has closed the connection). */
static int read_request(struct waiter *w, struct worker_request *wr)
{
    worker_request_reading(wr);
    /* libfcgi first finishes the previous request: it must keep our
     * connection. Closing never drains: the request is read to its end, and a
     * peer that sends on and on must not hold the worker. */
    w->fr.keepConnection = 1;
    w->fr.detached = 1;
    if (FCGX_Accept_r(&w->fr) == 0) return 0;
    worker_request_drop(wr);
    w->fr.ipcFd = -1;
    return -1;
}

/* Stopping: answers the connections queued on the listeners at this moment
 * (each closed after its answer); the master closes the listeners once every
 * worker is gone. */
static void drain_backlog(struct waiter *w, struct blocking_backends *b)
{
    for (int i = 0; i < w->env->nlisteners; i++) {
        for (int n = worker_backlog(w->env, i); n > 0; n--) {
            if (!worker_take_request()) return; /* past max_requests, the replacement takes them */
            w->fr.ipcFd = accept_connection(w, i);
            if (w->fr.ipcFd < 0) { /* none left: other workers took them */
                worker_give_back_request();
                break;
            }
            struct worker_request wr;
            if (read_request(w, &wr) == 0) serve_one(w, b, &wr);
            else worker_give_back_request();
            if (w->fr.ipcFd >= 0) close(w->fr.ipcFd);
            w->fr.ipcFd = -1;
        }
    }
}

void *worker_sync_serve(void *server)
{
    struct sync_server *sv = server;
    const struct worker_env *env = sv->env;
    char err[256];
    struct blocking_backends b = {redis_client_new(env->cfg->redis_url, err, sizeof err), sv->pool, NULL};
    if (!b.redis) {
        log_error("cannot set up Redis: %s", err);
        return NULL;
    }
    struct waiter w;
    if (waiter_open(&w, env) != 0) {
        log_error("cannot watch the listeners: %s", strerror(errno));
        redis_client_free(b.redis);
        worker_stopping = 1;
        return NULL;
    }
    /* The stop and wake-up signals are taken only inside the wait, so one that
     * comes just before it is not lost, and none interrupts a request. */
    signals_serving_thread(&w.wait_mask);
    /* A sync worker's own signals, watched beside the work (the thread class's main
     * thread takes them for its serving threads). */
    if (env->cfg->worker_class == WORKER_SYNC && (w.sigfd = signals_serving_fd(&w.wait_mask)) >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = SIGNAL_EVENT};
        epoll_ctl(w.epfd, EPOLL_CTL_ADD, w.sigfd, &ev);
    }
    while (!worker_stopping) {
        if (env->cfg->worker_class == WORKER_SYNC) worker_housekeeping();
        if (!worker_take_request()) {
            /* max_requests reached: the master retires this worker (a thread
             * just ends; the process waits for its signal). */
            if (env->cfg->worker_class == WORKER_SYNC) {
                signals_set_mask(&w.wait_mask); /* TERM must reach it now */
                worker_idle_until_stopped();
            }
            break;
        }
        int which = wait_for_work(&w);
        if (which == WAIT_AGAIN || which == WAIT_ERROR) worker_give_back_request();
        if (which == WAIT_AGAIN) continue;
        if (which == WAIT_ERROR) break;
        if (which >= 0) {
            w.fr.ipcFd = accept_connection(&w, which);
            if (w.fr.ipcFd < 0) {
                worker_give_back_request();
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) continue;
                log_error("accept on %s failed: %s", env->listeners[which].addr, strerror(errno));
                worker_stopping = 1;
                break;
            }
        } else if (which == WAIT_KEPT) {
            epoll_ctl(w.epfd, EPOLL_CTL_DEL, w.fr.ipcFd, NULL);
        }
        struct worker_request wr;
        if (read_request(&w, &wr) != 0) {
            worker_give_back_request();
            continue;
        }
        serve_one(&w, &b, &wr);
        if (w.fr.ipcFd >= 0) keep(&w);
    }
    if (w.fr.ipcFd >= 0) close(w.fr.ipcFd); /* an idle kept connection */
    w.fr.ipcFd = -1;
    if (worker_stopping) drain_backlog(&w, &b);
    FCGX_Free(&w.fr, 0);
    close(w.epfd);
    if (w.sigfd >= 0) close(w.sigfd);
    redis_client_free(b.redis);
    http_client_free(b.http);
    return NULL;
}

struct pg_pool *worker_sync_boot(const struct worker_env *env)
{
    const struct settings *cfg = env->cfg;
    if (FCGX_Init() != 0) {
        log_error("libfcgi failed to initialise");
        return NULL;
    }
    struct pg_pool *pool = pg_pool_new(cfg);
    if (!pool) log_error("cannot set up the PostgreSQL pool: out of memory");
    return pool;
}

int worker_sync_run(const struct worker_env *env)
{
    struct sync_server sv = {.env = env, .pool = worker_sync_boot(env)};
    if (!sv.pool) return WORKER_EXIT_BOOT_FAILED;
    worker_ready(env);
    worker_sync_serve(&sv);
    pg_pool_free(sv.pool);
    return 0;
}
