/* pg_conn: the libpq calls both PostgreSQL pools make the same way (start a connect, judge a result, check an idle connection). */
#ifndef PERFCGI_PG_CONN_H
#define PERFCGI_PG_CONN_H

#include <stddef.h>

#include <libpq-fe.h>

#include "core/backend.h"
#include "backends/pg_policy.h"

/* Starts a non-blocking connect (PQconnectStart) with the server's notices
 * kept off stderr; NULL when out of memory. The caller polls it on. */
PGconn *pg_conn_start(const char *conninfo);

/* libpq's last error on conn, its first line, into err. */
void pg_conn_error(PGconn *conn, char *err, size_t errlen);

/* An idle connection may serve the next query: younger than pool_recycle
 * (opened at opened_ms), and neither closed by the server nor told goodbye,
 * checked without a round trip. */
int pg_conn_reusable(const struct pg_policy *pol, PGconn *conn, double opened_ms, double now_ms);

/* An idle connection is usable unless the server closed it or said goodbye. */
int pg_conn_healthy(PGconn *conn);

/* What a query's final result means (pg_policy_judge); err gets the message. */
enum backend_status pg_result_status(PGconn *conn, const PGresult *r, char *err, size_t errlen);

/* Points res at the first row of r. */
void pg_result_fill(const PGresult *r, struct backend_result *res);

#endif
