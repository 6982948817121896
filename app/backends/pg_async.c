/* pg_async: the event worker's PostgreSQL pool: libpq's non-blocking calls on the loop. */
#include "backends/pg_async.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"

/* One query asked for: waiting for a connection, then running on one. */
struct pg_job {
    struct pg_job *next; /* in the wait queue */
    struct pg_async *pool;
    const struct backend_op *op;
    double deadline_ms, queued_ms, started_ms;
    pg_async_cb cb;
    void *ctx;
    uv_timer_t timer; /* pool_timeout while queued, then the deadline */
    struct pg_conn_a *conn;
    PGresult *last;
    int retried, done;
};

enum conn_state { CONN_CONNECTING, CONN_IDLE, CONN_BUSY };

/* A pooled connection and the poll handle of its current socket. */
struct pg_conn_a {
    struct pg_conn_a *next;
    struct pg_async *pool;
    PGconn *pg;
    uv_poll_t *poll;
    int fd;
    enum conn_state state;
    double opened_ms, idle_ms; /* idle since idle_ms when CONN_IDLE */
    struct pg_job *job;
};

struct pg_async {
    uv_loop_t *loop;
    char *conninfo;
    int size, max;
    double timeout_ms, recycle_ms;
    struct pg_conn_a *conns;
    int open;
    struct pg_job *queue_head, *queue_tail;
    struct pg_pool_stats stats;
    uv_timer_t *sweep; /* closes overflow connections past their linger */
    pg_async_trimmed_cb trimmed;
};

static void conn_drive(struct pg_conn_a *c);
static void dispatch(struct pg_async *p);
static void on_sweep(uv_timer_t *t);

struct pg_async *pg_async_new(uv_loop_t *loop, const struct settings *cfg, pg_async_trimmed_cb trimmed)
{
    struct pg_async *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->loop = loop;
    p->conninfo = strdup(cfg->database_url);
    p->size = cfg->pool_size;
    p->max = cfg->pool_size + cfg->pool_max_overflow;
    p->timeout_ms = cfg->pool_timeout * 1e3;
    p->recycle_ms = cfg->pool_recycle * 1e3;
    p->trimmed = trimmed;
    p->sweep = malloc(sizeof *p->sweep);
    if (!p->conninfo || !p->sweep) {
        free(p->conninfo);
        free(p->sweep);
        free(p);
        return NULL;
    }
    uv_timer_init(loop, p->sweep);
    p->sweep->data = p;
    uv_timer_start(p->sweep, on_sweep, PG_OVERFLOW_SWEEP_MS, PG_OVERFLOW_SWEEP_MS);
    uv_unref((uv_handle_t *)p->sweep); /* a stopping worker's loop ends without waiting for it */
    return p;
}

void pg_async_stats(const struct pg_async *p, struct pg_pool_stats *out)
{
    *out = p->stats;
    out->open = p->open;
    out->busy = 0;
    for (const struct pg_conn_a *c = p->conns; c; c = c->next) out->busy += c->state != CONN_IDLE;
}

/* ---- jobs ---- */

static void free_timer(uv_handle_t *h)
{
    free(h->data);
}

/* Ends a job: the callback runs once, then the job goes once its timer closed. */
static void job_finish(struct pg_job *j, enum backend_status status, const char *why)
{
    if (j->done) return;
    j->done = 1;
    struct backend_result res = {.status = status};
    if (status == BACKEND_OK) pg_result_fill(j->last, &res);
    else snprintf(res.message, sizeof res.message, "%s", why ? why : "");
    double now = clock_ms();
    res.pool_wait_ms = (j->started_ms ? j->started_ms : now) - j->queued_ms;
    res.db_ms = j->started_ms ? now - j->started_ms : 0;
    if (status == BACKEND_POOL_TIMEOUT) j->pool->stats.timeouts++;
    j->cb(j->ctx, &res);
    PQclear(j->last);
    j->last = NULL;
    uv_timer_stop(&j->timer);
    j->timer.data = j;
    uv_close((uv_handle_t *)&j->timer, free_timer);
}

static void queue_remove(struct pg_async *p, struct pg_job *j)
{
    for (struct pg_job **pp = &p->queue_head; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            if (p->queue_tail == j) {
                p->queue_tail = NULL;
                for (struct pg_job *q = p->queue_head; q; q = q->next) p->queue_tail = q;
            }
            return;
        }
    }
}

/* ---- connections ---- */

static void free_handle(uv_handle_t *h)
{
    free(h);
}

static void conn_unwatch(struct pg_conn_a *c)
{
    if (!c->poll) return;
    uv_poll_stop(c->poll);
    uv_close((uv_handle_t *)c->poll, free_handle);
    c->poll = NULL;
    c->fd = -1;
}

static void conn_close(struct pg_conn_a *c)
{
    struct pg_async *p = c->pool;
    conn_unwatch(c);
    for (struct pg_conn_a **pp = &p->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    PQfinish(c->pg);
    p->open--;
    free(c);
}

static void on_io(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    conn_drive(h->data);
}

/* Polls the connection's socket for what libpq waits on (it may change
 * sockets while connecting, trying one address after another). */
static void conn_watch(struct pg_conn_a *c, int writable)
{
    int fd = PQsocket(c->pg);
    if (fd != c->fd) {
        conn_unwatch(c);
        if (fd < 0) return;
        c->poll = malloc(sizeof *c->poll);
        if (!c->poll || uv_poll_init_socket(c->pool->loop, c->poll, fd) != 0) {
            free(c->poll);
            c->poll = NULL;
            return;
        }
        c->poll->data = c;
        c->fd = fd;
    }
    uv_poll_start(c->poll, UV_READABLE | (writable ? UV_WRITABLE : 0), on_io);
}

/* The connection failed or broke: fail or retry its job, close it. */
static void conn_broken(struct pg_conn_a *c, const char *why)
{
    struct pg_job *j = c->job;
    struct pg_async *p = c->pool;
    int was_connecting = c->state == CONN_CONNECTING;
    char msg[160];
    snprintf(msg, sizeof msg, "%s", why && *why ? why : PQerrorMessage(c->pg));
    msg[strcspn(msg, "\n")] = '\0';
    if (was_connecting) p->stats.connect_failures++;
    c->job = NULL;
    conn_close(c);
    if (j && !j->done) {
        /* A kept connection may have died with a server restart unnoticed:
         * one more try on a fresh one (the queries are read-only). */
        if (!was_connecting && !j->retried) {
            j->retried = 1;
            j->conn = NULL;
            j->next = p->queue_head;
            p->queue_head = j;
            if (!p->queue_tail) p->queue_tail = j;
        } else {
            job_finish(j, BACKEND_DOWN, msg);
        }
    }
    dispatch(p);
}

static void on_job_timer(uv_timer_t *t);

static void conn_start_query(struct pg_conn_a *c)
{
    struct pg_job *j = c->job;
    c->state = CONN_BUSY;
    j->started_ms = clock_ms();
    /* From now on the timer guards the query against the request's deadline. */
    double left = j->deadline_ms - j->started_ms;
    uv_timer_start(&j->timer, on_job_timer, left > 0 ? (uint64_t)left : 0, 0);
    if (!PQsendQueryParams(c->pg, j->op->sql, j->op->nparams, NULL, j->op->params, NULL, NULL, 0)) {
        conn_broken(c, NULL);
        return;
    }
    int flush = PQflush(c->pg);
    if (flush < 0) {
        conn_broken(c, NULL);
        return;
    }
    conn_watch(c, flush == 1);
}

/* Older than pool_recycle: closed rather than used again. */
static int conn_stale(const struct pg_conn_a *c)
{
    return c->pool->recycle_ms > 0 && clock_ms() - c->opened_ms > c->pool->recycle_ms;
}

/* The connection is free: give it to the next waiter, or keep it (an
 * overflow one lingers: on_sweep), or close it if recycled. */
static void conn_release(struct pg_conn_a *c)
{
    struct pg_async *p = c->pool;
    c->job = NULL;
    c->state = CONN_IDLE;
    p->stats.checkouts++;
    if (conn_stale(c)) {
        conn_close(c);
    } else {
        c->idle_ms = clock_ms();
        conn_watch(c, 0); /* idle: a readable socket means the server left */
    }
    dispatch(p);
}

/* Closes the idle overflow connections past their linger time. */
static void on_sweep(uv_timer_t *t)
{
    struct pg_async *p = t->data;
    double now = clock_ms();
    int closed = 0;
    for (struct pg_conn_a *c = p->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_IDLE && !c->job && pg_overflow_expired(p->open, p->size, c->idle_ms, now)) {
            conn_close(c);
            closed++;
        }
    }
    if (closed && p->trimmed) {
        struct pg_pool_stats st;
        pg_async_stats(p, &st);
        p->trimmed(&st);
    }
}

/* Advances whatever the connection is doing, after its socket woke us. */
static void conn_drive(struct pg_conn_a *c)
{
    struct pg_job *j = c->job;
    if (c->state == CONN_CONNECTING) {
        PostgresPollingStatusType st = PQconnectPoll(c->pg);
        if (st == PGRES_POLLING_FAILED) {
            conn_broken(c, NULL);
        } else if (st == PGRES_POLLING_OK) {
            PQsetnonblocking(c->pg, 1);
            c->opened_ms = clock_ms();
            if (j && !j->done) conn_start_query(c);
            else conn_release(c);
        } else {
            /* libpq may have closed the socket and opened another one under
             * the same number (trying the next address): watch it afresh. */
            conn_unwatch(c);
            conn_watch(c, st == PGRES_POLLING_WRITING);
        }
        return;
    }
    if (c->state == CONN_IDLE) {
        if (!pg_conn_healthy(c->pg)) conn_close(c);
        return;
    }
    /* CONN_BUSY: flush what is left, then read results until the last. */
    int flush = PQflush(c->pg);
    if (flush < 0 || !PQconsumeInput(c->pg)) {
        conn_broken(c, NULL);
        return;
    }
    if (flush == 1) {
        conn_watch(c, 1);
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            if (!j || j->done) { /* the job gave up (deadline): the connection is not trusted */
                conn_close(c);
                dispatch(c->pool);
                return;
            }
            char err[160] = "";
            enum backend_status st = j->last ? pg_result_status(c->pg, j->last, err, sizeof err) : BACKEND_DOWN;
            if (st == BACKEND_DOWN) {
                conn_broken(c, err);
                return;
            }
            job_finish(j, st, err);
            conn_release(c);
            return;
        }
        if (j) {
            PQclear(j->last);
            j->last = r;
        } else {
            PQclear(r);
        }
    }
    conn_watch(c, 0);
}

static struct pg_conn_a *conn_open(struct pg_async *p)
{
    struct pg_conn_a *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->pool = p;
    c->fd = -1;
    c->state = CONN_CONNECTING;
    c->pg = PQconnectStart(p->conninfo);
    if (c->pg) pg_conn_quiet(c->pg);
    p->stats.connects++;
    p->open++;
    c->next = p->conns;
    p->conns = c;
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) return c; /* failed: the caller sees it */
    conn_watch(c, 1);
    return c;
}

/* ---- scheduling ---- */

static void on_job_timer(uv_timer_t *t)
{
    struct pg_job *j = t->data;
    struct pg_async *p = j->pool;
    if (!j->conn) { /* still queued */
        queue_remove(p, j);
        int past_deadline = clock_ms() >= j->deadline_ms;
        job_finish(j, past_deadline ? BACKEND_DEADLINE : BACKEND_POOL_TIMEOUT,
                   "no connection free within pool_timeout");
        return;
    }
    struct pg_conn_a *c = j->conn;
    if (c->state == CONN_CONNECTING) {
        j->conn = NULL;
        c->job = NULL;
        conn_close(c);
        job_finish(j, BACKEND_DOWN, "connect timed out");
        dispatch(p);
        return;
    }
    /* The query outlived the request's deadline: drop its connection (a new
     * one replaces it when needed). No PQcancel: it opens a connection and
     * waits for the server's answer, blocking the loop for as long as a hung
     * server holds it. Closing the socket ends the session instead; the
     * server stops the query when it next talks to the client. */
    c->job = NULL;
    j->conn = NULL;
    job_finish(j, BACKEND_DEADLINE, "query dropped at the request deadline");
    conn_close(c);
    dispatch(p);
}

/* A queued job's timer already ends its wait at pool_timeout (or the
 * deadline): it bounds a connect the same way. */
static void assign(struct pg_conn_a *c, struct pg_job *j)
{
    c->job = j;
    j->conn = c;
    if (c->state == CONN_IDLE) conn_start_query(c);
}

/* Hands idle connections to waiters, opening new ones while the pool may grow. */
static void dispatch(struct pg_async *p)
{
    while (p->queue_head) {
        struct pg_conn_a *idle = NULL;
        for (struct pg_conn_a *c = p->conns; c && !idle; c = c->next)
            if (c->state == CONN_IDLE && !c->job) idle = c;
        /* An idle connection also ages: check it at checkout, as the blocking pool does. */
        if (idle && (conn_stale(idle) || !pg_conn_healthy(idle->pg))) {
            conn_close(idle);
            continue;
        }
        if (!idle && p->open >= p->max) return;
        struct pg_job *j = p->queue_head;
        p->queue_head = j->next;
        if (!p->queue_head) p->queue_tail = NULL;
        j->next = NULL;
        if (idle) {
            assign(idle, j);
            continue;
        }
        struct pg_conn_a *c = conn_open(p);
        if (!c) {
            job_finish(j, BACKEND_DOWN, "out of memory");
            continue;
        }
        if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
            c->job = j;
            j->conn = c;
            conn_broken(c, c->pg ? NULL : "out of memory");
            return; /* conn_broken dispatched again */
        }
        assign(c, j);
    }
}

void pg_async_run(struct pg_async *p, const struct backend_op *op, double deadline_ms, pg_async_cb cb, void *ctx)
{
    struct pg_job *j = calloc(1, sizeof *j);
    if (!j) {
        struct backend_result res = {.status = BACKEND_DOWN, .message = "out of memory"};
        cb(ctx, &res);
        return;
    }
    *j = (struct pg_job){.pool = p, .op = op, .deadline_ms = deadline_ms, .queued_ms = clock_ms(), .cb = cb, .ctx = ctx};
    uv_timer_init(p->loop, &j->timer);
    j->timer.data = j;
    double wait = p->timeout_ms < deadline_ms - j->queued_ms ? p->timeout_ms : deadline_ms - j->queued_ms;
    uv_timer_start(&j->timer, on_job_timer, wait > 0 ? (uint64_t)wait : 0, 0);
    if (p->queue_tail) p->queue_tail->next = j;
    else p->queue_head = j;
    p->queue_tail = j;
    dispatch(p);
}

void pg_async_free(struct pg_async *p)
{
    if (!p) return;
    while (p->queue_head) {
        struct pg_job *j = p->queue_head;
        p->queue_head = j->next;
        job_finish(j, BACKEND_DOWN, "shutting down");
    }
    while (p->conns) {
        struct pg_conn_a *c = p->conns;
        if (c->job) job_finish(c->job, BACKEND_DOWN, "shutting down");
        c->job = NULL;
        conn_close(c);
    }
    uv_timer_stop(p->sweep);
    uv_close((uv_handle_t *)p->sweep, free_handle);
    free(p->conninfo);
    free(p);
}
