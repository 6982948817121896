/* worker_sync: the sync and thread classes: libfcgi requests served blocking,
 * one per thread (sync: the process's only thread; thread: `threads` of them). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "log.h"
#include "worker.h"

/* One serving thread: its own FastCGI requests and Redis connection; the
 * process's PostgreSQL pool is shared. */
struct server {
    const struct worker_env *env;
    struct pg_pool *pool;
    pthread_t thread;
    int started;
};

/* Writes the answer of a finished exchange; a HEAD answer has no body. */
static void respond(FCGX_Request *fr, const struct exchange *ex)
{
    char head[512];
    size_t n = exchange_head(ex, head, sizeof head);
    FCGX_PutStr(head, (int)n, fr->out);
    if (!ex->head_only && ex->resp.body_len) FCGX_PutStr(ex->resp.body, (int)ex->resp.body_len, fr->out);
}

static void serve_one(FCGX_Request *fr, const struct worker_env *env, struct blocking_backends *b)
{
    struct request req;
    struct worker_request wr;
    char path[1024];
    struct exchange ex;
    worker_request_from_params(&req, fr->envp, path, sizeof path);
    exchange_start(&ex, &req, env->cfg);
    worker_request_begin(&wr, &ex);
    worker_run_blocking(&ex, b);
    respond(fr, &ex);
    struct pg_pool_stats ps;
    pg_pool_stats(b->pool, &ps);
    worker_request_end(env, &wr, &ex, &ps); /* while the request's strings live */
    FCGX_Finish_r(fr);
    exchange_clear(&ex);
}

/* Waits until a listener has a connection. EPOLLEXCLUSIVE wakes one waiting
 * worker (or thread) per connection instead of all of them; the listeners are
 * non-blocking, so a worker that still loses the race gets EAGAIN. */
static int wait_for_listener(int epfd)
{
    struct epoll_event ev;
    int n = epoll_wait(epfd, &ev, 1, -1);
    if (n == 1) return (int)ev.data.u32;
    return n < 0 && errno != EINTR ? -1 : -2; /* -2: a signal; look at the flags */
}

/* While libfcgi accepts, a signal must not interrupt it: after accepting a
 * unix connection it polls for the first bytes, and gives the connection up if
 * that poll is interrupted. The signals wait until the request is read. */
static void accept_request(FCGX_Request *fr, int *rc)
{
    sigset_t quiet, previous;
    sigemptyset(&quiet);
    int sigs[] = {SIGTERM, SIGUSR1, SIGUSR2, SIGHUP, SIGTTIN, SIGTTOU};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&quiet, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &quiet, &previous);
    *rc = FCGX_Accept_r(fr);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
}

static int listeners_epoll(const struct worker_env *env)
{
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; epfd >= 0 && i < env->nlisteners; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, env->listeners[i].fd, &ev) != 0) {
            close(epfd);
            epfd = -1;
        }
    }
    return epfd;
}

/* Accepts and serves until the worker stops. */
static void *serve(void *arg)
{
    struct server *sv = arg;
    const struct worker_env *env = sv->env;
    char err[256];
    struct blocking_backends b = {redis_client_new(env->cfg->redis_url, err, sizeof err), sv->pool};
    if (!b.redis) {
        log_error("cannot set up Redis: %s", err);
        return NULL;
    }
    int epfd = listeners_epoll(env);
    if (epfd < 0) {
        log_error("cannot watch the listeners: %s", strerror(errno));
        redis_client_free(b.redis);
        worker_stopping = 1;
        return NULL;
    }
    FCGX_Request reqs[SETTINGS_MAX_BINDS];
    for (int i = 0; i < env->nlisteners; i++) FCGX_InitRequest(&reqs[i], env->listeners[i].fd, FCGI_FAIL_ACCEPT_ON_INTR);
    while (!worker_stopping) {
        if (env->cfg->worker_class == WORKER_SYNC) worker_housekeeping();
        if (!worker_take_request()) {
            /* max_requests reached: the master retires this worker (a thread
             * just ends; the process waits for its signal). */
            if (env->cfg->worker_class == WORKER_SYNC) worker_idle_until_stopped();
            break;
        }
        int which = wait_for_listener(epfd);
        if (which < 0) worker_give_back_request();
        if (which == -2) continue;
        if (which < 0) break;
        FCGX_Request *fr = &reqs[which];
        int rc;
        accept_request(fr, &rc);
        if (rc < 0) {
            worker_give_back_request();
            if (rc == -EINTR || rc == -EAGAIN || rc == -EWOULDBLOCK) continue; /* lost the race */
            log_error("accept on %s failed: %s", env->listeners[which].addr, strerror(-rc));
            worker_stopping = 1;
            break;
        }
        serve_one(fr, env, &b);
    }
    for (int i = 0; i < env->nlisteners; i++) FCGX_Free(&reqs[i], 0);
    close(epfd);
    redis_client_free(b.redis);
    return NULL;
}

/* What both classes do before serving; NULL pool on failure. */
static struct pg_pool *boot(const struct worker_env *env)
{
    const struct settings *cfg = env->cfg;
    if (FCGX_Init() != 0) {
        log_error("libfcgi failed to initialise");
        return NULL;
    }
    /* Accepted TCP connections inherit these: a peer that stops sending or
     * reading mid-request frees the worker after `timeout` instead of pinning
     * it. (Unix connections do not inherit them; libfcgi drops one that sends
     * nothing within 2 s of its accept.) */
    struct timeval tv = {(time_t)cfg->timeout, (suseconds_t)((cfg->timeout - (double)(time_t)cfg->timeout) * 1e6)};
    for (int i = 0; i < env->nlisteners; i++) {
        setsockopt(env->listeners[i].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(env->listeners[i].fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    struct pg_pool *pool = pg_pool_new(cfg);
    if (!pool) log_error("cannot set up the PostgreSQL pool: out of memory");
    return pool;
}

int worker_sync_run(const struct worker_env *env)
{
    struct server sv = {.env = env, .pool = boot(env)};
    if (!sv.pool) return WORKER_EXIT_BOOT_FAILED;
    worker_ready(env);
    serve(&sv);
    pg_pool_free(sv.pool);
    return 0;
}

static void on_wakeup(int sig)
{
    (void)sig; /* only interrupts a blocking accept */
}

/* The main thread takes the signals and does the housekeeping; the serving
 * threads block them, and get SIGUSR2 to leave a blocking accept at the end. */
int worker_thread_run(const struct worker_env *env)
{
    struct pg_pool *pool = boot(env);
    if (!pool) return WORKER_EXIT_BOOT_FAILED;
    int n = env->cfg->threads;
    struct server *servers = calloc((size_t)n, sizeof *servers);
    if (!servers) return WORKER_EXIT_BOOT_FAILED;

    struct sigaction sa = {0};
    sa.sa_handler = on_wakeup;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
    sigset_t handled, previous;
    sigemptyset(&handled);
    int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP, SIGTTIN, SIGTTOU};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&handled, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &handled, &previous);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        servers[i] = (struct server){.env = env, .pool = pool};
        if (pthread_create(&servers[i].thread, NULL, serve, &servers[i]) != 0) {
            log_error("cannot start thread %d of %d", i + 1, n);
            worker_stopping = 1;
            rc = WORKER_EXIT_BOOT_FAILED;
            break;
        }
        servers[i].started = 1;
    }
    if (rc == 0) worker_ready(env);
    /* Signals are blocked here except inside sigsuspend, so none is lost
     * between the check and the wait. */
    while (!worker_stopping) {
        sigsuspend(&previous);
        worker_housekeeping();
    }
    for (int i = 0; i < n; i++)
        if (servers[i].started) pthread_kill(servers[i].thread, SIGUSR2);
    for (int i = 0; i < n; i++)
        if (servers[i].started) pthread_join(servers[i].thread, NULL);
    free(servers);
    pg_pool_free(pool);
    return rc;
}
