/* worker: what every worker class shares: start-up, signals, the blocking driver. */
#define _GNU_SOURCE
#include "worker/worker.h"

#include <errno.h>
#include <grp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "core/routes.h"
#include "base/scoreboard.h"

volatile sig_atomic_t worker_stopping;
volatile sig_atomic_t worker_reopen_logs;

/* max_requests plus this worker's share of the jitter (0 = never), drawn once
 * at start-up, before any thread serves; and the requests taken so far. */
static long request_limit;
static atomic_long requests_taken;

static void draw_request_limit(const struct settings *cfg)
{
    unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    long jitter = cfg->max_requests_jitter ? (long)(rand_r(&seed) % (cfg->max_requests_jitter + 1)) : 0;
    request_limit = cfg->max_requests ? cfg->max_requests + jitter : 0;
}

static const struct worker_driver drivers[] = {
    [WORKER_SYNC] = {"sync", worker_sync_run},
    [WORKER_THREAD] = {"thread", worker_thread_run},
    [WORKER_EVENT] = {"event", worker_event_run},
};

const struct worker_driver *worker_driver_for(enum worker_class c)
{
    return &drivers[c];
}

static void on_term(int sig)
{
    (void)sig;
    worker_stopping = 1;
}

static void on_usr1(int sig)
{
    (void)sig;
    worker_reopen_logs = 1;
}

static void on_quit(int sig)
{
    (void)sig;
    _exit(0);
}

/* The master aborts a worker stuck on one request; it has logged why. */
static void on_abort(int sig)
{
    (void)sig;
    _exit(1);
}

/* No SA_RESTART: a blocking accept must return so the worker sees the flag. */
static void worker_signals(void)
{
    struct sigaction sa = {0};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_quit;
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_abort;
    sigaction(SIGABRT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTTIN, &sa, NULL);
    sigaction(SIGTTOU, &sa, NULL);
    /* A handler, not SIG_IGN: libfcgi replaces an ignored SIGUSR1 with its
     * own, which stops accepting. */
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

int worker_drop_privileges(const struct settings *cfg)
{
    uid_t uid;
    gid_t gid;
    char err[256];
    int owner = settings_owner(cfg, &uid, &gid, err, sizeof err);
    if (owner <= 0) {
        if (owner < 0) log_error("%s", err);
        return owner;
    }
    if (gid == (gid_t)-1) gid = getgid();
    if ((cfg->user[0] ? initgroups(cfg->user, gid) : setgroups(0, NULL)) != 0 || setgid(gid) != 0 ||
        (uid != (uid_t)-1 && setuid(uid) != 0)) {
        log_error("cannot switch to user %s group %s: %s", cfg->user, cfg->group, strerror(errno));
        return -1;
    }
    return 0;
}

void worker_main(const struct worker_env *env)
{
    log_set_role("worker");
    worker_signals();
    if (worker_drop_privileges(env->cfg) != 0) _exit(WORKER_EXIT_BOOT_FAILED);
    /* Do not outlive the master. After the privilege drop: a change of
     * credentials clears the parent-death signal. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != env->master_pid) _exit(0);
    draw_request_limit(env->cfg);
    const struct worker_driver *wc = worker_driver_for(env->cfg->worker_class);
    if (!wc->run) {
        log_error("worker class %s is not available in this build", wc->name);
        _exit(WORKER_EXIT_BOOT_FAILED);
    }
    _exit(wc->run(env));
}

/* A variable's value, NULL when it is absent or empty: some front ends send
 * every CGI variable, empty or not (Caddy: DOCUMENT_URI and SCRIPT_NAME). */
static const char *param_value(const char *kv, const char *name, size_t name_len)
{
    return strncmp(kv, name, name_len) == 0 && kv[name_len] ? kv + name_len : NULL;
}

#define PARAM(kv, name) param_value(kv, name "=", sizeof name)

/* Copies the first n bytes of each part into buf as one string. */
static const char *join_path(char *buf, size_t len, const char *a, size_t alen, const char *b)
{
    if (alen >= len) alen = len - 1;
    memcpy(buf, a, alen);
    snprintf(buf + alen, len - alen, "%s", b);
    return buf;
}

void worker_request_from_params(struct request *req, char **envp, char *path_buf, size_t path_len)
{
    memset(req, 0, sizeof *req);
    const char *request_uri = NULL, *document_uri = NULL, *script_name = NULL, *path_info = NULL,
               *content_length = NULL, *v;
    for (char **e = envp; e && *e; e++) {
        const char *kv = *e;
        switch (kv[0]) {
        case 'C':
            if ((v = PARAM(kv, "CONTENT_LENGTH"))) content_length = v;
            break;
        case 'D':
            if ((v = PARAM(kv, "DOCUMENT_URI"))) document_uri = v;
            break;
        case 'P':
            if ((v = PARAM(kv, "PATH_INFO"))) path_info = v;
            break;
        case 'Q':
            if ((v = PARAM(kv, "QUERY_STRING"))) req->query = v;
            break;
        case 'R':
            if ((v = PARAM(kv, "REQUEST_METHOD"))) req->method = v;
            else if ((v = PARAM(kv, "REQUEST_URI"))) request_uri = v;
            else if ((v = PARAM(kv, "REMOTE_ADDR"))) req->remote_addr = v;
            break;
        case 'S':
            if ((v = PARAM(kv, "SCRIPT_NAME"))) script_name = v;
            break;
        }
    }
    /* Nginx sends DOCUMENT_URI (decoded, normalised); other front ends send
     * REQUEST_URI (Caddy, lighttpd, Apache, HAProxy, h2o), or only the CGI pair
     * SCRIPT_NAME + PATH_INFO (cgi-fcgi and hand-written clients). */
    size_t request_path_len = request_uri ? strcspn(request_uri, "?") : 0;
    if (document_uri) req->path = document_uri;
    else if (request_path_len) req->path = join_path(path_buf, path_len, request_uri, request_path_len, "");
    else if (script_name || path_info)
        req->path = join_path(path_buf, path_len, script_name ? script_name : "",
                              script_name ? strlen(script_name) : 0, path_info ? path_info : "");
    else req->path = "/";
    if (!req->query) req->query = "";
    if (!req->method) req->method = "GET";
    if (content_length) {
        char *end;
        errno = 0;
        long long n = strtoll(content_length, &end, 10);
        req->content_length = errno || *end || n < 0 ? -1 : n;
    }
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void worker_run_blocking(struct exchange *ex, struct blocking_backends *b)
{
    struct backend_result res;
    PGresult *pg = NULL;
    enum step s = exchange_step(ex, NULL);
    while (s == STEP_BACKEND) {
        memset(&res, 0, sizeof res);
        switch (ex->op.kind) {
        case BACKEND_REDIS:
            redis_client_run(b->redis, &ex->op, &res);
            break;
        case BACKEND_PG:
            pg = pg_pool_run(b->pool, &ex->op, ex->deadline_ms, &res);
            break;
        case BACKEND_HTTP: {
            char err[160];
            if (!b->http && !(b->http = http_client_new(err, sizeof err))) {
                res.status = BACKEND_DOWN;
                snprintf(res.message, sizeof res.message, "%s", err);
                break;
            }
            http_client_run(b->http, &ex->op, ex->deadline_ms, &res);
            break;
        }
        case BACKEND_SLEEP:
            sleep_ms(ex->op.sleep_ms);
            res.status = BACKEND_OK;
            break;
        case BACKEND_NONE:
            break;
        }
        s = exchange_step(ex, &res);
        PQclear(pg);
        pg = NULL;
    }
}

static void wake_master(const struct worker_env *env)
{
    char b = 1;
    ssize_t w = write(env->wake_fd, &b, 1); /* a full pipe already wakes it */
    (void)w;
}

void worker_ready(const struct worker_env *env)
{
    if (scoreboard_self) atomic_store(&scoreboard_self->state, SLOT_IDLE);
    wake_master(env);
}

/* The requests in flight, oldest first (requests begin in time order). */
static pthread_mutex_t inflight_lock = PTHREAD_MUTEX_INITIALIZER;
static struct worker_request *inflight_head, *inflight_tail;
static int inflight_count;

static void publish_inflight(void)
{
    scoreboard_set_busy(scoreboard_self, inflight_count, inflight_head ? inflight_head->started_us : 0,
                        inflight_head ? inflight_head->uri : "");
}

static void inflight_link(struct worker_request *wr)
{
    wr->next = NULL;
    wr->prev = inflight_tail;
    if (inflight_tail) inflight_tail->next = wr;
    else inflight_head = wr;
    inflight_tail = wr;
    inflight_count++;
}

static void inflight_unlink(struct worker_request *wr)
{
    if (wr->prev) wr->prev->next = wr->next;
    else inflight_head = wr->next;
    if (wr->next) wr->next->prev = wr->prev;
    else inflight_tail = wr->prev;
    inflight_count--;
}

void worker_request_reading(struct worker_request *wr)
{
    wr->started_us = clock_us();
    wr->reading = 1;
    snprintf(wr->uri, sizeof wr->uri, "(reading a request)");
    pthread_mutex_lock(&inflight_lock);
    inflight_link(wr);
    publish_inflight();
    pthread_mutex_unlock(&inflight_lock);
}

void worker_request_drop(struct worker_request *wr)
{
    pthread_mutex_lock(&inflight_lock);
    inflight_unlink(wr);
    wr->reading = 0;
    publish_inflight();
    pthread_mutex_unlock(&inflight_lock);
}

void worker_request_begin(struct worker_request *wr, const struct exchange *ex)
{
    wr->begun_us = clock_us();
    const struct request *q = &ex->req;
    pthread_mutex_lock(&inflight_lock);
    if ((size_t)snprintf(wr->uri, sizeof wr->uri, "%s %s%s%s", q->method, q->path, q->query[0] ? "?" : "", q->query) >=
        sizeof wr->uri)
        scoreboard_cut_utf8(wr->uri);
    if (wr->reading) { /* already in flight, in its place by age */
        wr->reading = 0;
    } else {
        wr->started_us = wr->begun_us;
        inflight_link(wr);
    }
    scoreboard_set_uri(scoreboard_self, wr->uri);
    publish_inflight();
    pthread_mutex_unlock(&inflight_lock);
}

int worker_take_request(void)
{
    if (!request_limit) return 1;
    if (atomic_fetch_add(&requests_taken, 1) < request_limit) return 1;
    atomic_fetch_sub(&requests_taken, 1);
    return 0;
}

void worker_give_back_request(void)
{
    if (request_limit) atomic_fetch_sub(&requests_taken, 1);
}

int worker_at_limit(void)
{
    return request_limit && atomic_load(&requests_taken) >= request_limit;
}

void worker_publish_pool(const struct pg_pool_stats *pool)
{
    struct scoreboard_slot *s = scoreboard_self;
    if (!s) return;
    atomic_store(&s->pool_open, pool->open);
    atomic_store(&s->pool_busy, pool->busy);
    s->counters.pool_checkouts = pool->checkouts;
    s->counters.pool_timeouts = pool->timeouts;
    s->counters.pool_connects = pool->connects;
    s->counters.pool_connect_failures = pool->connect_failures;
}

void worker_request_end(const struct worker_env *env, struct worker_request *wr, const struct exchange *ex,
                        const struct pg_pool_stats *pool)
{
    struct scoreboard_slot *s = scoreboard_self;
    const struct settings *cfg = env->cfg;
    int route = route_index(ex->route);
    int64_t took_us = clock_us() - wr->begun_us;
    pthread_mutex_lock(&inflight_lock);
    inflight_unlink(wr);
    scoreboard_count(s, route, ex->resp.status, ex->resp.x_cache, took_us, cfg->timeout * 1e3 / 2);
    publish_inflight();
    pthread_mutex_unlock(&inflight_lock);
    log_access(ex->req.remote_addr, ex->req.method, ex->req.path, ex->req.query, ex->resp.status,
               ex->head_only ? 0 : ex->resp.body_len, (double)took_us / 1e3);
    if (!s) return;
    if (ex->pool_wait_ms > 0)
        __atomic_fetch_add(&s->counters.pool_wait_us, (uint64_t)(ex->pool_wait_ms * 1e3), __ATOMIC_RELAXED);
    if (pool) worker_publish_pool(pool);
    long limit = request_limit;
    if (limit && (long)atomic_load(&s->requests) >= limit && !atomic_exchange(&s->wants_retire, 1)) {
        log_debug("served %ld requests; asking to be replaced", limit);
        wake_master(env);
    }
}

void worker_idle_until_stopped(void)
{
    while (!worker_stopping) {
        worker_housekeeping();
        struct timespec ts = {0, 100 * 1000000L}; /* a signal cuts it short */
        nanosleep(&ts, NULL);
    }
}

void worker_housekeeping(void)
{
    if (worker_reopen_logs) {
        worker_reopen_logs = 0;
        if (log_reopen() != 0) log_warning("cannot reopen the logs (still writing the old files): %s", strerror(errno));
    }
}
