/* pg_pool: a worker process's PostgreSQL connections, shared by its threads (blocking I/O under pg_policy's rules). */
#include "backends/pg_pool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/pg_conn.h"
#include "base/clock.h"

struct pg_slot {
    PGconn *conn; /* NULL: a free slot */
    double opened_ms, idle_ms; /* idle since idle_ms when not busy */
    int busy;
};

struct pg_pool {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    char *conninfo;
    struct pg_policy policy;
    int open, busy;  /* slots with a connection (or one being opened); checked out */
    struct pg_pool_stats stats;
    struct pg_slot *slots; /* policy.max of them */
};

struct pg_pool *pg_pool_new(const struct settings *cfg)
{
    struct pg_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pg_policy_init(&p->policy, cfg);
    p->conninfo = strdup(cfg->database_url);
    p->slots = calloc((size_t)p->policy.max, sizeof *p->slots);
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->freed, &attr);
    pthread_condattr_destroy(&attr);
    if (!p->conninfo || !p->slots) {
        pg_pool_free(p);
        return NULL;
    }
    return p;
}

void pg_pool_free(struct pg_pool *p)
{
    if (!p) return;
    for (int i = 0; p->slots && i < p->policy.max; i++)
        if (p->slots[i].conn) PQfinish(p->slots[i].conn);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->freed);
    free(p->slots);
    free(p->conninfo);
    free(p);
}

/* Waits until fd is ready for events or deadline_ms passes: 1, 0 on timeout, -1. */
static int pg_pool_wait_fd(int fd, short events, double deadline_ms)
{
    for (;;) {
        double left = deadline_ms - clock_ms();
        if (left <= 0) return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, (int)left + 1);
        if (rc > 0) return 1;
        if (rc == 0) continue; /* re-check the clock */
        if (errno != EINTR) return -1;
    }
}

/* Connects without blocking past deadline_ms (libpq's own connect_timeout
 * counts whole seconds, and at least two). */
static PGconn *pg_pool_connect_by(const char *conninfo, double deadline_ms, char *err, size_t errlen)
{
    PGconn *conn = pg_conn_start(conninfo);
    if (!conn) {
        snprintf(err, errlen, PG_MSG_OUT_OF_MEMORY);
        return NULL;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int ready = pg_pool_wait_fd(PQsocket(conn), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline_ms);
        if (ready <= 0) {
            snprintf(err, errlen, PG_MSG_CONNECT_TIMEOUT);
            PQfinish(conn);
            return NULL;
        }
        st = PQconnectPoll(conn);
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        pg_conn_error(conn, err, errlen);
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* Waits on cond until signalled or until_ms (monotonic): 0, or -1 on timeout. */
static int pg_pool_timed_wait(pthread_cond_t *cond, pthread_mutex_t *lock, double until_ms)
{
    double left = until_ms - clock_ms();
    if (left <= 0) return -1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = (long long)ts.tv_nsec + (long long)(left * 1e6);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    return pthread_cond_timedwait(cond, lock, &ts) == ETIMEDOUT ? -1 : 0;
}

/* Takes a connection, opening one if the pool may grow, else waiting; *reused
 * says whether it was kept from before. BACKEND_OK, or the failure in res. */
static enum backend_status pg_pool_checkout(struct pg_pool *p, double deadline_ms, struct pg_slot **out, int *reused,
                                            struct backend_result *res)
{
    double wait_until_ms = pg_policy_wait_until(&p->policy, clock_ms(), deadline_ms);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        struct pg_slot *idle = NULL, *empty = NULL;
        for (int i = 0; i < p->policy.max; i++) {
            struct pg_slot *s = &p->slots[i];
            if (s->conn && !s->busy && !idle) idle = s;
            if (!s->conn && !s->busy && !empty) empty = s;
        }
        if (idle) {
            idle->busy = 1;
            p->busy++;
            pthread_mutex_unlock(&p->lock);
            if (pg_conn_reusable(&p->policy, idle->conn, idle->opened_ms, clock_ms())) {
                *out = idle;
                *reused = 1;
                return BACKEND_OK;
            }
            PQfinish(idle->conn); /* replace it with a new one below */
            idle->conn = NULL;
            pthread_mutex_lock(&p->lock);
            p->open--;
            empty = idle;
            p->busy--;
            idle->busy = 0;
        }
        if (empty && pg_policy_may_open(&p->policy, p->open)) {
            empty->busy = 1; /* reserved while connecting, outside the lock */
            p->open++;
            p->busy++;
            pthread_mutex_unlock(&p->lock);
            PGconn *conn = pg_pool_connect_by(p->conninfo, wait_until_ms, res->message, sizeof res->message);
            pthread_mutex_lock(&p->lock);
            p->stats.connects++;
            if (!conn) {
                p->stats.connect_failures++;
                empty->busy = 0;
                p->open--;
                p->busy--;
                pthread_cond_signal(&p->freed);
                pthread_mutex_unlock(&p->lock);
                return BACKEND_DOWN;
            }
            empty->conn = conn;
            empty->opened_ms = clock_ms();
            pthread_mutex_unlock(&p->lock);
            *out = empty;
            *reused = 0;
            return BACKEND_OK;
        }
        if (pg_pool_timed_wait(&p->freed, &p->lock, wait_until_ms) != 0) break;
    }
    enum backend_status st = pg_policy_wait_failed(deadline_ms, clock_ms(), &p->stats);
    pthread_mutex_unlock(&p->lock);
    snprintf(res->message, sizeof res->message, PG_MSG_POOL_TIMEOUT);
    return st;
}

static void pg_pool_slot_close(struct pg_pool *p, struct pg_slot *s)
{
    PQfinish(s->conn);
    s->conn = NULL;
    p->open--;
}

/* Returns a connection after a query that ended with status: kept (an
 * overflow one lingers: pg_pool_trim closes it) or closed, as the policy says. */
static void pg_pool_checkin(struct pg_pool *p, struct pg_slot *s, enum backend_status status)
{
    pthread_mutex_lock(&p->lock);
    if (pg_policy_checkin(&p->stats, status)) s->idle_ms = clock_ms();
    else pg_pool_slot_close(p, s);
    s->busy = 0;
    p->busy--;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}

int pg_pool_trim(struct pg_pool *p)
{
    int closed = 0;
    pthread_mutex_lock(&p->lock);
    double now = clock_ms();
    for (int i = 0; i < p->policy.max; i++) {
        struct pg_slot *s = &p->slots[i];
        if (s->conn && !s->busy && pg_policy_overflow_expired(&p->policy, p->open, s->idle_ms, now)) {
            pg_pool_slot_close(p, s);
            closed++;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return closed;
}

/* Asks the server to cancel what conn runs (a short blocking exchange on a
 * connection of its own: libpq 15 has no non-blocking cancel). */
static void pg_pool_cancel(PGconn *conn)
{
    char errbuf[256];
    PGcancel *c = PQgetCancel(conn);
    if (c) {
        PQcancel(c, errbuf, sizeof errbuf);
        PQfreeCancel(c);
    }
}

/* Sends op and waits for its one result, at most until deadline_ms: OK with
 * *out, DOWN (the connection broke), DEADLINE or FAILED, with err. */
static enum backend_status pg_pool_query(PGconn *conn, const struct backend_op *op, double deadline_ms, PGresult **out,
                                         char *err, size_t errlen)
{
    *out = NULL;
    if (!PQsendQueryParams(conn, op->sql, op->nparams, NULL, op->params, NULL, NULL, 0)) goto broken;
    PGresult *last = NULL, *r;
    for (;;) {
        while (PQisBusy(conn)) {
            int ready = pg_pool_wait_fd(PQsocket(conn), POLLIN, deadline_ms);
            if (ready == 0) {
                pg_pool_cancel(conn);
                PQclear(last);
                snprintf(err, errlen, PG_MSG_DEADLINE_CANCELLED);
                return BACKEND_DEADLINE;
            }
            if (ready < 0 || !PQconsumeInput(conn)) goto broken_last;
        }
        r = PQgetResult(conn);
        if (!r) break;
        PQclear(last);
        last = r;
    }
    if (!last) goto broken;
    enum backend_status st = pg_result_status(conn, last, err, errlen);
    if (st == BACKEND_OK) *out = last;
    else PQclear(last);
    return st;
broken_last:
    PQclear(last);
broken:
    pg_conn_error(conn, err, errlen);
    return BACKEND_DOWN;
}

PGresult *pg_pool_run(struct pg_pool *p, const struct backend_op *op, double deadline_ms,
                      struct backend_result *res)
{
    memset(res, 0, sizeof *res);
    PGresult *result = NULL;
    for (int retried = 0;; retried = 1) {
        struct pg_slot *slot = NULL;
        int reused = 0;
        double t_wait = clock_ms();
        res->status = pg_pool_checkout(p, deadline_ms, &slot, &reused, res);
        res->pool_wait_ms += clock_ms() - t_wait;
        if (res->status != BACKEND_OK) return NULL;
        double t_query = clock_ms();
        res->status = pg_pool_query(slot->conn, op, deadline_ms, &result, res->message, sizeof res->message);
        res->db_ms = clock_ms() - t_query;
        pg_pool_checkin(p, slot, res->status);
        if (res->status != BACKEND_DOWN || !pg_policy_retry(reused, retried)) break;
    }
    if (res->status == BACKEND_OK) pg_result_fill(result, res);
    return result;
}

void pg_pool_stats(struct pg_pool *p, struct pg_pool_stats *out)
{
    pthread_mutex_lock(&p->lock);
    *out = p->stats;
    out->open = p->open;
    out->busy = p->busy;
    pthread_mutex_unlock(&p->lock);
}

int pg_ping(const char *conninfo, int timeout_ms, char *err, size_t errlen)
{
    double deadline = clock_ms() + timeout_ms;
    PGconn *conn = pg_pool_connect_by(conninfo, deadline, err, errlen);
    if (!conn) return -1;
    struct backend_op op = {.kind = BACKEND_PG, .sql = "SELECT 1"};
    PGresult *r;
    enum backend_status st = pg_pool_query(conn, &op, deadline, &r, err, errlen);
    PQclear(r);
    PQfinish(conn);
    return st == BACKEND_OK ? 0 : -1;
}
