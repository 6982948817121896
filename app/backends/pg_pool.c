/* pg_pool: a worker process's PostgreSQL connections, shared by its threads. */
#include "backends/pg_pool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    int size, max;   /* kept connections; kept + overflow */
    int open, busy;  /* slots with a connection (or one being opened); checked out */
    struct pg_pool_stats stats;
    double timeout_ms, recycle_ms;
    struct pg_slot *slots;
};

struct pg_pool *pg_pool_new(const struct settings *cfg)
{
    struct pg_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->size = cfg->pool_size;
    p->max = cfg->pool_size + cfg->pool_max_overflow;
    p->timeout_ms = cfg->pool_timeout * 1e3;
    p->recycle_ms = cfg->pool_recycle * 1e3;
    p->conninfo = strdup(cfg->database_url);
    p->slots = calloc((size_t)p->max, sizeof *p->slots);
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
    for (int i = 0; p->slots && i < p->max; i++)
        if (p->slots[i].conn) PQfinish(p->slots[i].conn);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->freed);
    free(p->slots);
    free(p->conninfo);
    free(p);
}

/* Waits until fd is ready for events or deadline_ms passes: 1, 0 on timeout, -1. */
static int wait_fd(int fd, short events, double deadline_ms)
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

/* A server that shuts down tells idle connections why; libpq would print that
 * to stderr. The connection's failure is reported where it is used instead. */
static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

void pg_conn_quiet(PGconn *conn)
{
    PQsetNoticeProcessor(conn, quiet_notice, NULL);
}

/* Connects without blocking past deadline_ms (libpq's own connect_timeout
 * counts whole seconds, and at least two). */
static PGconn *connect_by(const char *conninfo, double deadline_ms, char *err, size_t errlen)
{
    PGconn *conn = PQconnectStart(conninfo);
    if (!conn) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pg_conn_quiet(conn);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int ready = wait_fd(PQsocket(conn), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline_ms);
        if (ready <= 0) {
            snprintf(err, errlen, "connect timed out");
            PQfinish(conn);
            return NULL;
        }
        st = PQconnectPoll(conn);
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(conn));
        err[strcspn(err, "\n")] = '\0';
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* An idle connection is usable unless the server closed it or said goodbye
 * (a restart sends a FATAL notice, then EOF): both make the socket readable.
 * This catches dead connections without a round trip. */
int pg_conn_healthy(PGconn *conn)
{
    if (PQstatus(conn) != CONNECTION_OK) return 0;
    struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
    if (poll(&pfd, 1, 0) == 0) return 1;
    return PQconsumeInput(conn) && PQstatus(conn) == CONNECTION_OK && !PQisBusy(conn);
}

/* Waits on cond until signalled or until_ms (monotonic): 0, or -1 on timeout. */
static int timed_wait(pthread_cond_t *cond, pthread_mutex_t *lock, double until_ms)
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

enum checkout { CHECKOUT_OK, CHECKOUT_DOWN, CHECKOUT_TIMEOUT };

/* Takes a connection, opening one if the pool may grow, else waiting. */
static enum checkout checkout(struct pg_pool *p, double deadline_ms, struct pg_slot **out, int *fresh,
                              char *err, size_t errlen)
{
    double wait_until_ms = clock_ms() + p->timeout_ms;
    if (wait_until_ms > deadline_ms) wait_until_ms = deadline_ms;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        struct pg_slot *idle = NULL, *empty = NULL;
        for (int i = 0; i < p->max; i++) {
            struct pg_slot *s = &p->slots[i];
            if (s->conn && !s->busy && !idle) idle = s;
            if (!s->conn && !s->busy && !empty) empty = s;
        }
        if (idle) {
            idle->busy = 1;
            p->busy++;
            pthread_mutex_unlock(&p->lock);
            double now = clock_ms();
            int stale = p->recycle_ms > 0 && now - idle->opened_ms > p->recycle_ms;
            if (!stale && pg_conn_healthy(idle->conn)) {
                *out = idle;
                *fresh = 0;
                return CHECKOUT_OK;
            }
            PQfinish(idle->conn); /* replace it with a new one below */
            idle->conn = NULL;
            pthread_mutex_lock(&p->lock);
            p->open--;
            empty = idle;
            p->busy--;
            idle->busy = 0;
        }
        if (empty && p->open < p->max) {
            empty->busy = 1; /* reserved while connecting, outside the lock */
            p->open++;
            p->busy++;
            pthread_mutex_unlock(&p->lock);
            PGconn *conn = connect_by(p->conninfo, wait_until_ms, err, errlen);
            pthread_mutex_lock(&p->lock);
            p->stats.connects++;
            if (!conn) {
                p->stats.connect_failures++;
                empty->busy = 0;
                p->open--;
                p->busy--;
                pthread_cond_signal(&p->freed);
                pthread_mutex_unlock(&p->lock);
                return CHECKOUT_DOWN;
            }
            empty->conn = conn;
            empty->opened_ms = clock_ms();
            pthread_mutex_unlock(&p->lock);
            *out = empty;
            *fresh = 1;
            return CHECKOUT_OK;
        }
        if (timed_wait(&p->freed, &p->lock, wait_until_ms) != 0) break;
    }
    p->stats.timeouts++;
    pthread_mutex_unlock(&p->lock);
    snprintf(err, errlen, "no connection free within pool_timeout");
    return CHECKOUT_TIMEOUT;
}

static void slot_close(struct pg_pool *p, struct pg_slot *s)
{
    PQfinish(s->conn);
    s->conn = NULL;
    p->open--;
}

/* Returns a connection; broken ones are closed, overflow ones linger
 * (pg_pool_trim closes them). */
static void checkin(struct pg_pool *p, struct pg_slot *s, int broken)
{
    pthread_mutex_lock(&p->lock);
    p->stats.checkouts++; /* counted on return: each successful checkout returns once */
    if (broken) slot_close(p, s);
    else s->idle_ms = clock_ms();
    s->busy = 0;
    p->busy--;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}

int pg_overflow_expired(int open, int size, double idle_since_ms, double now_ms)
{
    return open > size && now_ms - idle_since_ms >= PG_OVERFLOW_LINGER_MS;
}

int pg_pool_trim(struct pg_pool *p)
{
    int closed = 0;
    pthread_mutex_lock(&p->lock);
    double now = clock_ms();
    for (int i = 0; i < p->max; i++) {
        struct pg_slot *s = &p->slots[i];
        if (s->conn && !s->busy && pg_overflow_expired(p->open, p->size, s->idle_ms, now)) {
            slot_close(p, s);
            closed++;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return closed;
}

enum query_outcome { QUERY_OK, QUERY_BROKEN, QUERY_DEADLINE, QUERY_ERROR };

enum backend_status pg_result_status(PGconn *conn, const PGresult *r, char *err, size_t errlen)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return BACKEND_OK;
    const char *sqlstate = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    err[strcspn(err, "\n")] = '\0';
    if (PQstatus(conn) != CONNECTION_OK) return BACKEND_DOWN;
    if (sqlstate && strcmp(sqlstate, "57014") == 0) return BACKEND_DEADLINE; /* statement timeout */
    /* Class 08 (connection) and 57P (operator intervention: shutdown, crash). */
    if (sqlstate && (strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "57P", 3) == 0)) return BACKEND_DOWN;
    return BACKEND_FAILED;
}

void pg_result_fill(const PGresult *r, struct backend_result *res)
{
    res->nrows = PQntuples(r);
    res->ncols = PQnfields(r);
    for (int i = 0; res->nrows > 0 && i < res->ncols && i < BACKEND_MAX_COLS; i++)
        res->values[i] = PQgetisnull(r, 0, i) ? NULL : PQgetvalue(r, 0, i);
}

void pg_conn_cancel(PGconn *conn)
{
    char errbuf[256];
    PGcancel *c = PQgetCancel(conn);
    if (c) {
        PQcancel(c, errbuf, sizeof errbuf);
        PQfreeCancel(c);
    }
}

/* Sends op and waits for its one result, at most until deadline_ms. */
static enum query_outcome query(PGconn *conn, const struct backend_op *op, double deadline_ms, PGresult **out,
                                char *err, size_t errlen)
{
    *out = NULL;
    if (!PQsendQueryParams(conn, op->sql, op->nparams, NULL, op->params, NULL, NULL, 0)) goto broken;
    PGresult *last = NULL, *r;
    for (;;) {
        while (PQisBusy(conn)) {
            int ready = wait_fd(PQsocket(conn), POLLIN, deadline_ms);
            if (ready == 0) {
                pg_conn_cancel(conn);
                PQclear(last);
                snprintf(err, errlen, "query cancelled at the request deadline");
                return QUERY_DEADLINE;
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
    if (st == BACKEND_OK) {
        *out = last;
        return QUERY_OK;
    }
    PQclear(last);
    return st == BACKEND_DOWN ? QUERY_BROKEN : st == BACKEND_DEADLINE ? QUERY_DEADLINE : QUERY_ERROR;
broken_last:
    PQclear(last);
broken:
    snprintf(err, errlen, "%s", PQerrorMessage(conn));
    err[strcspn(err, "\n")] = '\0';
    return QUERY_BROKEN;
}

PGresult *pg_pool_run(struct pg_pool *p, const struct backend_op *op, double deadline_ms,
                      struct backend_result *res)
{
    memset(res, 0, sizeof *res);
    res->status = BACKEND_DOWN; /* until a query says otherwise */
    PGresult *result = NULL;
    /* A kept connection may have died with a server restart unnoticed: then
     * one more try on a fresh one. The queries are read-only, so a retry is safe. */
    for (int attempt = 0; attempt < 2; attempt++) {
        struct pg_slot *slot;
        int fresh;
        double t_wait = clock_ms();
        enum checkout c = checkout(p, deadline_ms, &slot, &fresh, res->message, sizeof res->message);
        res->pool_wait_ms += clock_ms() - t_wait;
        if (c != CHECKOUT_OK) {
            res->status = c == CHECKOUT_TIMEOUT ? (clock_ms() >= deadline_ms ? BACKEND_DEADLINE : BACKEND_POOL_TIMEOUT)
                                                : BACKEND_DOWN;
            return NULL;
        }
        double t_query = clock_ms();
        enum query_outcome q = query(slot->conn, op, deadline_ms, &result, res->message, sizeof res->message);
        res->db_ms = clock_ms() - t_query;
        checkin(p, slot, q == QUERY_BROKEN || q == QUERY_DEADLINE);
        if (q == QUERY_BROKEN && !fresh && attempt == 0) continue;
        switch (q) {
        case QUERY_OK: res->status = BACKEND_OK; break;
        case QUERY_BROKEN: res->status = BACKEND_DOWN; break;
        case QUERY_DEADLINE: res->status = BACKEND_DEADLINE; break;
        case QUERY_ERROR: res->status = BACKEND_FAILED; break;
        }
        break;
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
    PGconn *conn = connect_by(conninfo, deadline, err, errlen);
    if (!conn) return -1;
    struct backend_op op = {.kind = BACKEND_PG, .sql = "SELECT 1"};
    PGresult *r;
    enum query_outcome q = query(conn, &op, deadline, &r, err, errlen);
    PQclear(r);
    PQfinish(conn);
    return q == QUERY_OK ? 0 : -1;
}
