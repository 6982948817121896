/* pg_conn: the libpq calls both PostgreSQL pools make the same way (start a connect, judge a result, check an idle connection). */
#include "backends/pg_conn.h"

#include <poll.h>

/* A server that shuts down tells idle connections why; libpq would print that
 * to stderr. The connection's failure is reported where it is used instead. */
static void pg_conn_ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *pg_conn_start(const char *conninfo)
{
    PGconn *conn = PQconnectStart(conninfo);
    if (conn) PQsetNoticeProcessor(conn, pg_conn_ignore_notice, NULL);
    return conn;
}

void pg_conn_error(PGconn *conn, char *err, size_t errlen)
{
    pg_policy_first_line(PQerrorMessage(conn), err, errlen);
}

/* A restart sends idle connections a FATAL notice, then EOF: both make the
 * socket readable, so a poll without waiting catches dead connections. */
int pg_conn_healthy(PGconn *conn)
{
    if (PQstatus(conn) != CONNECTION_OK) return 0;
    struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
    if (poll(&pfd, 1, 0) == 0) return 1;
    return PQconsumeInput(conn) && PQstatus(conn) == CONNECTION_OK && !PQisBusy(conn);
}

int pg_conn_reusable(const struct pg_policy *pol, PGconn *conn, double opened_ms, double now_ms)
{
    return !pg_policy_recycle_due(pol, opened_ms, now_ms) && pg_conn_healthy(conn);
}

enum backend_status pg_result_status(PGconn *conn, const PGresult *r, char *err, size_t errlen)
{
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
    if (!ok) pg_policy_first_line(PQresultErrorMessage(r), err, errlen);
    return pg_policy_judge(ok, PQresultErrorField(r, PG_DIAG_SQLSTATE), PQstatus(conn) == CONNECTION_OK);
}

void pg_result_fill(const PGresult *r, struct backend_result *res)
{
    res->nrows = PQntuples(r);
    res->ncols = PQnfields(r);
    for (int i = 0; res->nrows > 0 && i < res->ncols && i < BACKEND_MAX_COLS; i++)
        res->values[i] = PQgetisnull(r, 0, i) ? NULL : PQgetvalue(r, 0, i);
}
