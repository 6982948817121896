/* worker_sync: one request at a time per process, with libfcgi. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <fcgiapp.h>

#include "log.h"
#include "worker.h"

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
    char path[1024];
    struct exchange ex;
    worker_request_from_params(&req, fr->envp, path, sizeof path);
    exchange_start(&ex, &req, env->cfg);
    worker_request_begin(&ex);
    worker_run_blocking(&ex, b);
    respond(fr, &ex);
    worker_request_end(env, &ex, b->pool); /* while the request's strings live */
    FCGX_Finish_r(fr);
    exchange_clear(&ex);
}

/* With several binds the listeners are non-blocking: wait until one has a
 * connection, then accept there (a worker that loses the race sees EAGAIN). */
static int wait_for_listener(const struct worker_env *env)
{
    struct pollfd pfd[SETTINGS_MAX_BINDS];
    for (int i = 0; i < env->nlisteners; i++) pfd[i] = (struct pollfd){.fd = env->listeners[i].fd, .events = POLLIN};
    for (;;) {
        if (worker_stopping) return -1;
        int rc = poll(pfd, (nfds_t)env->nlisteners, -1);
        if (rc < 0 && errno != EINTR) return -1;
        for (int i = 0; rc > 0 && i < env->nlisteners; i++)
            if (pfd[i].revents & POLLIN) return i;
    }
}

int worker_sync_run(const struct worker_env *env)
{
    const struct settings *cfg = env->cfg;
    if (FCGX_Init() != 0) {
        log_error("libfcgi failed to initialise");
        return WORKER_EXIT_BOOT_FAILED;
    }
    char err[256];
    struct blocking_backends b = {redis_client_new(cfg->redis_url, err, sizeof err), pg_pool_new(cfg)};
    if (!b.redis || !b.pool) {
        log_error("cannot set up the backends: %s", b.redis ? "out of memory" : err);
        return WORKER_EXIT_BOOT_FAILED;
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
    /* With several binds, a worker that loses the race for a connection must
     * not block on that one socket while the others have connections. */
    if (env->nlisteners > 1)
        for (int i = 0; i < env->nlisteners; i++)
            fcntl(env->listeners[i].fd, F_SETFL, fcntl(env->listeners[i].fd, F_GETFL) | O_NONBLOCK);
    FCGX_Request reqs[SETTINGS_MAX_BINDS];
    for (int i = 0; i < env->nlisteners; i++) FCGX_InitRequest(&reqs[i], env->listeners[i].fd, FCGI_FAIL_ACCEPT_ON_INTR);
    worker_ready(env);

    while (!worker_stopping) {
        worker_housekeeping();
        int which = env->nlisteners == 1 ? 0 : wait_for_listener(env);
        if (which < 0) break;
        FCGX_Request *fr = &reqs[which];
        int rc = FCGX_Accept_r(fr);
        if (rc < 0) {
            if (worker_stopping) break;
            if (rc == -EINTR || rc == -EAGAIN || rc == -EWOULDBLOCK) continue;
            log_error("accept on %s failed: %s", env->listeners[which].addr, strerror(-rc));
            break;
        }
        serve_one(fr, env, &b);
    }
    for (int i = 0; i < env->nlisteners; i++) FCGX_Free(&reqs[i], 0);
    redis_client_free(b.redis);
    pg_pool_free(b.pool);
    return 0;
}
