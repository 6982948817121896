/* pg_async: the event worker's PostgreSQL pool: libpq's non-blocking calls on the loop, under pg_policy's rules. */
#include "backends/pg_async.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "backends/pg_conn.h"
#include "base/clock.h"
#include "base/list.h"

/* One query asked for: waiting for a connection, then running on one. */
struct pg_job {
    struct list_node queued; /* in the pool's wait queue while it waits */
    struct pg_async *pool;
    const struct backend_op *op;
    double deadline_ms, queued_ms, started_ms;
    pg_async_cb cb;
    void *ctx;
    uv_timer_t timer; /* pool_timeout while queued, then the deadline */
    struct pg_conn_a *conn;
    PGresult *last;
    int reused;  /* its connection was kept from before, not opened for it */
    int retried, done;
};

enum pg_conn_state { CONN_CONNECTING, CONN_IDLE, CONN_BUSY };

/* A pooled connection and the poll handle of its current socket. */
struct pg_conn_a {
    struct list_node link; /* in the pool's connections, newest first */
    struct pg_async *pool;
    PGconn *pg;
    uv_poll_t *poll;
    int fd;
    enum pg_conn_state state;
    double opened_ms, idle_ms; /* idle since idle_ms when CONN_IDLE */
    struct pg_job *job;
};

struct pg_async {
    uv_loop_t *loop;
    char *conninfo;
    struct pg_policy policy;
    struct list_node conns; /* struct pg_conn_a */
    int open;
    struct list_node queue; /* struct pg_job waiting for a connection, oldest first */
    struct pg_pool_stats stats;
    uv_timer_t *sweep; /* closes overflow connections past their linger */
    pg_async_trimmed_cb trimmed;
};

static void pg_async_conn_drive(struct pg_conn_a *c);
static void pg_async_dispatch(struct pg_async *p);
static void pg_async_on_sweep(uv_timer_t *t);

struct pg_async *pg_async_new(uv_loop_t *loop, const struct settings *cfg, pg_async_trimmed_cb trimmed)
{
    struct pg_async *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->loop = loop;
    p->conninfo = strdup(cfg->database_url);
    pg_policy_init(&p->policy, cfg);
    list_init(&p->conns);
    list_init(&p->queue);
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
    uv_timer_start(p->sweep, pg_async_on_sweep, PG_OVERFLOW_SWEEP_MS, PG_OVERFLOW_SWEEP_MS);
    uv_unref((uv_handle_t *)p->sweep); /* a stopping worker's loop ends without waiting for it */
    return p;
}

void pg_async_stats(const struct pg_async *p, struct pg_pool_stats *out)
{
    *out = p->stats;
    out->open = p->open;
    out->busy = 0;
    struct list_node *n;
    list_for_each(n, &p->conns) out->busy += list_entry(n, struct pg_conn_a, link)->state != CONN_IDLE;
}

/* ---- jobs ---- */

static void pg_async_free_timer(uv_handle_t *h)
{
    free(h->data);
}

/* Ends a job: the callback runs once, then the job goes once its timer closed. */
static void pg_async_job_finish(struct pg_job *j, enum backend_status status, const char *why)
{
    if (j->done) return;
    j->done = 1;
    struct backend_result res = {.status = status};
    if (status == BACKEND_OK) pg_result_fill(j->last, &res);
    else snprintf(res.message, sizeof res.message, "%s", why ? why : "");
    double now = clock_ms();
    res.pool_wait_ms = (j->started_ms ? j->started_ms : now) - j->queued_ms;
    res.db_ms = j->started_ms ? now - j->started_ms : 0;
    j->cb(j->ctx, &res);
    PQclear(j->last);
    j->last = NULL;
    uv_timer_stop(&j->timer);
    j->timer.data = j;
    uv_close((uv_handle_t *)&j->timer, pg_async_free_timer);
}

/* ---- connections ---- */

static void pg_async_free_handle(uv_handle_t *h)
{
    free(h);
}

static void pg_async_conn_unwatch(struct pg_conn_a *c)
{
    if (!c->poll) return;
    uv_poll_stop(c->poll);
    uv_close((uv_handle_t *)c->poll, pg_async_free_handle);
    c->poll = NULL;
    c->fd = -1;
}

static void pg_async_conn_close(struct pg_conn_a *c)
{
    pg_async_conn_unwatch(c);
    list_remove(&c->link);
    PQfinish(c->pg);
    c->pool->open--;
    free(c);
}

static void pg_async_on_io(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    pg_async_conn_drive(h->data);
}

/* Polls the connection's socket for what libpq waits on (it may change
 * sockets while connecting, trying one address after another). */
static void pg_async_conn_watch(struct pg_conn_a *c, int writable)
{
    int fd = PQsocket(c->pg);
    if (fd != c->fd) {
        pg_async_conn_unwatch(c);
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
    uv_poll_start(c->poll, UV_READABLE | (writable ? UV_WRITABLE : 0), pg_async_on_io);
}

/* The connection sits idle for the next job: a readable socket means the server left. */
static void pg_async_conn_idle(struct pg_conn_a *c)
{
    c->job = NULL;
    c->state = CONN_IDLE;
    c->idle_ms = clock_ms();
    pg_async_conn_watch(c, 0);
}

/* The job on c ended with status: c goes back to the pool or is closed, as
 * the policy says, and the next waiter may have it. */
static void pg_async_checkin(struct pg_conn_a *c, enum backend_status status)
{
    struct pg_async *p = c->pool;
    c->job = NULL;
    if (pg_policy_checkin(&p->stats, status)) pg_async_conn_idle(c);
    else pg_async_conn_close(c);
    pg_async_dispatch(p);
}

/* The connection failed to open, or broke under its job: closed; the job runs
 * once more if the policy says so, else fails with why (or libpq's error). */
static void pg_async_conn_broken(struct pg_conn_a *c, const char *why)
{
    struct pg_job *j = c->job;
    struct pg_async *p = c->pool;
    char msg[160];
    if (why && *why) snprintf(msg, sizeof msg, "%s", why);
    else pg_conn_error(c->pg, msg, sizeof msg);
    c->job = NULL;
    if (c->state == CONN_CONNECTING) p->stats.connect_failures++;
    else if (j) pg_policy_checkin(&p->stats, BACKEND_DOWN);
    pg_async_conn_close(c);
    if (j && !j->done) {
        if (pg_policy_retry(j->reused, j->retried)) {
            j->retried = 1;
            j->conn = NULL;
            list_push_front(&p->queue, &j->queued); /* first in line again */
        } else {
            pg_async_job_finish(j, BACKEND_DOWN, msg);
        }
    }
    pg_async_dispatch(p);
}

static void pg_async_on_job_timer(uv_timer_t *t);

static void pg_async_start_query(struct pg_conn_a *c)
{
    struct pg_job *j = c->job;
    c->state = CONN_BUSY;
    j->started_ms = clock_ms();
    /* From now on the timer guards the query against the request's deadline. */
    double left = j->deadline_ms - j->started_ms;
    uv_timer_start(&j->timer, pg_async_on_job_timer, left > 0 ? (uint64_t)left : 0, 0);
    if (!PQsendQueryParams(c->pg, j->op->sql, j->op->nparams, NULL, j->op->params, NULL, NULL, 0)) {
        pg_async_conn_broken(c, NULL);
        return;
    }
    int flush = PQflush(c->pg);
    if (flush < 0) {
        pg_async_conn_broken(c, NULL);
        return;
    }
    pg_async_conn_watch(c, flush == 1);
}

/* Closes the idle overflow connections past their linger time. */
static void pg_async_on_sweep(uv_timer_t *t)
{
    struct pg_async *p = t->data;
    double now = clock_ms();
    int closed = 0;
    struct list_node *n, *next;
    list_for_each_safe(n, next, &p->conns) {
        struct pg_conn_a *c = list_entry(n, struct pg_conn_a, link);
        if (c->state == CONN_IDLE && !c->job && pg_policy_overflow_expired(&p->policy, p->open, c->idle_ms, now)) {
            pg_async_conn_close(c);
            closed++;
        }
    }
    if (closed && p->trimmed) {
        struct pg_pool_stats st;
        pg_async_stats(p, &st);
        p->trimmed(&st);
    }
}

/* The job's query answered its last result: judge it and end the job. */
static void pg_async_query_done(struct pg_conn_a *c)
{
    struct pg_job *j = c->job;
    char err[160] = "";
    enum backend_status st = j->last ? pg_result_status(c->pg, j->last, err, sizeof err) : BACKEND_DOWN;
    if (st == BACKEND_DOWN) {
        pg_async_conn_broken(c, err);
        return;
    }
    pg_async_job_finish(j, st, err);
    pg_async_checkin(c, st);
}

/* Advances whatever the connection is doing, after its socket woke us. */
static void pg_async_conn_drive(struct pg_conn_a *c)
{
    struct pg_job *j = c->job;
    if (c->state == CONN_CONNECTING) {
        PostgresPollingStatusType st = PQconnectPoll(c->pg);
        if (st == PGRES_POLLING_FAILED) {
            pg_async_conn_broken(c, NULL);
        } else if (st == PGRES_POLLING_OK) {
            PQsetnonblocking(c->pg, 1);
            c->opened_ms = clock_ms();
            if (j && !j->done) {
                pg_async_start_query(c);
            } else {
                pg_async_conn_idle(c);
                pg_async_dispatch(c->pool);
            }
        } else {
            /* libpq may have closed the socket and opened another one under
             * the same number (trying the next address): watch it afresh. */
            pg_async_conn_unwatch(c);
            pg_async_conn_watch(c, st == PGRES_POLLING_WRITING);
        }
        return;
    }
    if (c->state == CONN_IDLE) {
        if (!pg_conn_healthy(c->pg)) pg_async_conn_close(c);
        return;
    }
    /* CONN_BUSY: flush what is left, then read results until the last. */
    int flush = PQflush(c->pg);
    if (flush < 0 || !PQconsumeInput(c->pg)) {
        pg_async_conn_broken(c, NULL);
        return;
    }
    if (flush == 1) {
        pg_async_conn_watch(c, 1);
        return;
    }
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            if (!j || j->done) { /* the job gave up (deadline): the connection is not trusted */
                pg_async_conn_close(c);
                pg_async_dispatch(c->pool);
                return;
            }
            pg_async_query_done(c);
            return;
        }
        if (j) {
            PQclear(j->last);
            j->last = r;
        } else {
            PQclear(r);
        }
    }
    pg_async_conn_watch(c, 0);
}

/* A new connection for job j, connecting; NULL when out of memory. */
static struct pg_conn_a *pg_async_conn_open(struct pg_async *p, struct pg_job *j)
{
    struct pg_conn_a *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->pool = p;
    c->fd = -1;
    c->state = CONN_CONNECTING;
    c->pg = pg_conn_start(p->conninfo);
    c->job = j;
    j->conn = c;
    j->reused = 0;
    p->stats.connects++;
    p->open++;
    list_push_front(&p->conns, &c->link);
    return c;
}

/* ---- scheduling ---- */

static void pg_async_on_job_timer(uv_timer_t *t)
{
    struct pg_job *j = t->data;
    struct pg_async *p = j->pool;
    struct pg_conn_a *c = j->conn;
    if (!c) { /* still queued */
        list_remove(&j->queued);
        pg_async_job_finish(j, pg_policy_wait_failed(j->deadline_ms, clock_ms(), &p->stats), PG_MSG_POOL_TIMEOUT);
        return;
    }
    j->conn = NULL;
    if (c->state == CONN_CONNECTING) {
        /* The wait's bound (pg_policy_wait_until) also bounds the connect made for it. */
        p->stats.connect_failures++;
        c->job = NULL;
        pg_async_conn_close(c);
        pg_async_job_finish(j, BACKEND_DOWN, PG_MSG_CONNECT_TIMEOUT);
        pg_async_dispatch(p);
        return;
    }
    /* The query outlived the request's deadline: drop its connection (a new
     * one replaces it when needed). No PQcancel: it opens a connection and
     * waits for the server's answer, blocking the loop for as long as a hung
     * server holds it. Closing the socket ends the session instead; the
     * server stops the query when it next talks to the client. */
    pg_async_job_finish(j, BACKEND_DEADLINE, PG_MSG_DEADLINE_DROPPED);
    pg_async_checkin(c, BACKEND_DEADLINE);
}

/* Hands idle connections to waiters, opening new ones while the pool may grow. */
static void pg_async_dispatch(struct pg_async *p)
{
    struct list_node *first;
    while ((first = list_first(&p->queue))) {
        struct pg_conn_a *idle = NULL;
        struct list_node *n;
        list_for_each(n, &p->conns) {
            struct pg_conn_a *c = list_entry(n, struct pg_conn_a, link);
            if (c->state == CONN_IDLE && !c->job) {
                idle = c;
                break;
            }
        }
        if (idle && !pg_conn_reusable(&p->policy, idle->pg, idle->opened_ms, clock_ms())) {
            pg_async_conn_close(idle);
            continue;
        }
        if (!idle && !pg_policy_may_open(&p->policy, p->open)) return;
        struct pg_job *j = list_entry(first, struct pg_job, queued);
        list_remove(&j->queued);
        if (idle) {
            idle->job = j;
            j->conn = idle;
            j->reused = 1;
            pg_async_start_query(idle);
            continue;
        }
        struct pg_conn_a *c = pg_async_conn_open(p, j);
        if (!c) {
            pg_async_job_finish(j, BACKEND_DOWN, PG_MSG_OUT_OF_MEMORY);
            continue;
        }
        if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
            pg_async_conn_broken(c, c->pg ? NULL : PG_MSG_OUT_OF_MEMORY);
            return; /* it dispatched again */
        }
        /* The job's timer, set at pool_timeout or the deadline, bounds the connect too. */
        pg_async_conn_watch(c, 1);
    }
}

void pg_async_run(struct pg_async *p, const struct backend_op *op, double deadline_ms, pg_async_cb cb, void *ctx)
{
    struct pg_job *j = calloc(1, sizeof *j);
    if (!j) {
        struct backend_result res = {.status = BACKEND_DOWN, .message = PG_MSG_OUT_OF_MEMORY};
        cb(ctx, &res);
        return;
    }
    *j = (struct pg_job){.pool = p, .op = op, .deadline_ms = deadline_ms, .queued_ms = clock_ms(), .cb = cb, .ctx = ctx};
    uv_timer_init(p->loop, &j->timer);
    j->timer.data = j;
    double wait = pg_policy_wait_until(&p->policy, j->queued_ms, deadline_ms) - j->queued_ms;
    uv_timer_start(&j->timer, pg_async_on_job_timer, wait > 0 ? (uint64_t)wait : 0, 0);
    list_push_back(&p->queue, &j->queued);
    pg_async_dispatch(p);
}

void pg_async_free(struct pg_async *p)
{
    if (!p) return;
    struct list_node *n;
    while ((n = list_first(&p->queue))) {
        struct pg_job *j = list_entry(n, struct pg_job, queued);
        list_remove(n);
        pg_async_job_finish(j, BACKEND_DOWN, PG_MSG_SHUTTING_DOWN);
    }
    while ((n = list_first(&p->conns))) {
        struct pg_conn_a *c = list_entry(n, struct pg_conn_a, link);
        if (c->job) pg_async_job_finish(c->job, BACKEND_DOWN, PG_MSG_SHUTTING_DOWN);
        c->job = NULL;
        pg_async_conn_close(c);
    }
    uv_timer_stop(p->sweep);
    uv_close((uv_handle_t *)p->sweep, pg_async_free_handle);
    free(p->conninfo);
    free(p);
}
