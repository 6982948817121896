/* pg_policy: the PostgreSQL pools' rules, once for both drivers: sizes, recycle, overflow linger, retry-once, which status. */
#ifndef PERFCGI_PG_POLICY_H
#define PERFCGI_PG_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "base/settings.h"

/*
 * Plain data in, decisions out: no locks, no sockets, no clock of its own.
 * pg_pool (blocking: mutex and condition variable) and pg_async (libuv) ask
 * these functions and supply only the I/O: how they wait, connect and send.
 */

/* What a pool counts (the metrics' pool_* figures). */
struct pg_pool_stats {
    int open, busy; /* connections now, and how many are checked out */
    uint64_t checkouts, timeouts, connects, connect_failures;
};

/* The settings a pool follows, in milliseconds. */
struct pg_policy {
    int size, max; /* kept connections; kept + overflow */
    double timeout_ms, recycle_ms; /* pool_timeout; pool_recycle (0: never) */
};

/* Connections above pool_size (overflow) stay open once idle, for the next
 * request, until idle this long: long enough that a steady load above
 * pool_size reuses them (each new connection costs PostgreSQL a backend
 * fork, far more than the query), short enough that a burst's extra
 * connections go soon after it. */
#define PG_OVERFLOW_LINGER_MS 2000
/* How often the pools look for overflow connections past their linger time. */
#define PG_OVERFLOW_SWEEP_MS (PG_OVERFLOW_LINGER_MS / 2)

/* What a failed query says (in the error JSON's message), whichever driver ran it. */
#define PG_MSG_POOL_TIMEOUT "no connection free within pool_timeout"
#define PG_MSG_CONNECT_TIMEOUT "connect timed out"
#define PG_MSG_OUT_OF_MEMORY "out of memory"
#define PG_MSG_SHUTTING_DOWN "shutting down"
/* At the deadline the blocking pool cancels the query (it may block on the
 * cancel's own connection); the event pool drops the connection instead,
 * since a hung server would hold its loop: the message says which. */
#define PG_MSG_DEADLINE_CANCELLED "query cancelled at the request deadline"
#define PG_MSG_DEADLINE_DROPPED "query dropped at the request deadline"

void pg_policy_init(struct pg_policy *pol, const struct settings *cfg);

/* 1 when a pool with `open` connections (those being opened included) may open another. */
int pg_policy_may_open(const struct pg_policy *pol, int open);

/* 1 when a connection opened at opened_ms is past pool_recycle: it is closed
 * at checkout, and a fresh one takes its place. */
int pg_policy_recycle_due(const struct pg_policy *pol, double opened_ms, double now_ms);

/* 1 when an idle connection of a pool with `open` of them, idle since
 * idle_since_ms, is overflow past its linger time: the sweep closes it. */
int pg_policy_overflow_expired(const struct pg_policy *pol, int open, double idle_since_ms, double now_ms);

/* When a wait for a connection that begins at now_ms gives up: after
 * pool_timeout, or at the request's deadline if that comes first. A connect
 * made for the waiter is bounded the same way. */
double pg_policy_wait_until(const struct pg_policy *pol, double now_ms, double deadline_ms);

/* A wait for a connection ended at now_ms without one: BACKEND_DEADLINE when
 * the request's deadline has passed, else BACKEND_POOL_TIMEOUT, which
 * stats->timeouts counts. The message is PG_MSG_POOL_TIMEOUT either way. */
enum backend_status pg_policy_wait_failed(double deadline_ms, double now_ms, struct pg_pool_stats *stats);

/* A checked-out connection comes back after its query ended with status:
 * counts the checkout; 1 when the connection may serve again (the query ran,
 * or the server refused it), 0 when it must be closed (it broke, or it
 * outlived the deadline and may still run the query). */
int pg_policy_checkin(struct pg_pool_stats *stats, enum backend_status status);

/* A query broke (BACKEND_DOWN) on its connection: 1 when it runs once more,
 * on a fresh connection. Only a connection kept from before (reused) may
 * have died unnoticed with a server restart, and only once; the queries are
 * read-only, so running one again is safe. */
int pg_policy_retry(int reused, int retried);

/* What a query's final result means, from what libpq says of it: the result
 * is a success (result_ok), its SQLSTATE (may be NULL) and whether the
 * connection is still up (conn_ok). OK, DOWN (connection lost, server
 * shutting down), DEADLINE (statement timeout) or FAILED. */
enum backend_status pg_policy_judge(int result_ok, const char *sqlstate, int conn_ok);

/* The first line of a libpq message (they end in a newline, some have more lines). */
void pg_policy_first_line(const char *msg, char *err, size_t errlen);

#endif
