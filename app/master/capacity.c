/* capacity: what the settings ask of the machine and of PostgreSQL, checked at start and on HUP. */
#include "master/capacity.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "base/clock.h"
#include "base/log.h"

/* Descriptors a worker holds besides its connections: stdio, the error and access
 * logs, the master's pipes, the event loop's own (epoll, signal and async fds),
 * a Redis connection and the odd /proc read: 32 is about twice what they add up to. */
#define FDS_FIXED 32
/* Per request served at once: its FastCGI connection and the backend sockets it may
 * hold besides. A sync process or a thread keeps its own Redis connection and upstream
 * HTTP client; an event worker shares one Redis connection (in FDS_FIXED) but may wait
 * on one upstream HTTP call per connection. */
#define FDS_PER_REQUEST_BLOCKING 3
#define FDS_PER_REQUEST_EVENT 2
/* The PostgreSQL check's whole budget (connect and query): a server that logs in and
 * never answers must not hold the prober's check for long. The prober holds one
 * connection too. */
#define PG_CHECK_MS 2000.0
#define PG_PROBER_CONNECTIONS 1

static int requests_at_once(const struct settings *cfg, int *per_request)
{
    *per_request = FDS_PER_REQUEST_BLOCKING;
    switch (cfg->worker_class) {
    case WORKER_EVENT: *per_request = FDS_PER_REQUEST_EVENT; return cfg->worker_connections;
    case WORKER_THREAD: return cfg->threads;
    case WORKER_SYNC: break;
    }
    return 1;
}

/* What each worker may hold: see FDS_FIXED and FDS_PER_REQUEST_*; its PostgreSQL pool
 * (pool_size + pool_max_overflow) and its listeners come on top. */
int capacity_fds_needed(const struct settings *cfg)
{
    int per;
    int n = requests_at_once(cfg, &per);
    return n * per + FDS_FIXED + cfg->bind.count + cfg->pool_size + cfg->pool_max_overflow;
}

static const char *needs_what(const struct settings *cfg)
{
    switch (cfg->worker_class) {
    case WORKER_EVENT: return "worker_connections";
    case WORKER_THREAD: return "threads";
    case WORKER_SYNC: break;
    }
    return "connections";
}

int capacity_files(const struct settings *cfg, char *note, size_t notelen, char *err, size_t errlen)
{
    struct rlimit rl;
    int per;
    int n = requests_at_once(cfg, &per);
    rlim_t need = (rlim_t)capacity_fds_needed(cfg);
    note[0] = '\0';
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        snprintf(err, errlen, "cannot read the file descriptor limit: %s", strerror(errno));
        return -1;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) return 0;
    char what[256];
    snprintf(what, sizeof what,
             "each %s worker may hold %ld file descriptors (%s %d x %d + %d for logs, pipes, the event loop and Redis"
             " + %d listeners + pool_size %d + pool_max_overflow %d)",
             settings_class_name(cfg->worker_class), (long)need, needs_what(cfg), n, per, FDS_FIXED, cfg->bind.count,
             cfg->pool_size, cfg->pool_max_overflow);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        snprintf(err, errlen,
                 "%s; the hard limit on open files (RLIMIT_NOFILE) is %ld: lower %s, or raise the hard limit"
                 " (ulimit -Hn as root, LimitNOFILE= in the systemd unit, ulimits: nofile in docker-compose)",
                 what, (long)rl.rlim_max, cfg->worker_class == WORKER_SYNC ? "pool_max_overflow" : needs_what(cfg));
        return -1;
    }
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        snprintf(err, errlen, "%s; cannot raise the open files limit from %ld: %s", what, (long)was, strerror(errno));
        return -1;
    }
    snprintf(note, notelen, "%s: open files limit (soft) raised from %ld to %ld", what, (long)was, (long)need);
    return 0;
}

/* One integer from the first row of r, column i. */
static long field(PGresult *r, int i)
{
    return PQgetisnull(r, 0, i) ? 0 : atol(PQgetvalue(r, 0, i));
}

/* Connections open by others: every client backend but this one at start; on a reload
 * the running workers hold connections of this role that go with them, so only other
 * roles' count then. */
static const char CHECK_SQL[] =
    "SELECT current_setting('max_connections')::int,"
    " current_setting('superuser_reserved_connections')::int,"
    " coalesce(current_setting('reserved_connections', true), '0')::int,"
    " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)::int,"
    " coalesce((SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user), -1),"
    " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    "  AND ($1 = 'start' OR usename IS DISTINCT FROM current_user)),"
    " current_user,"
    " pg_backend_pid()";

/* Waits for c's socket (to read, or to write) until deadline_ms: 0 once ready. A
 * signal that interrupts the wait does not end it. */
static int pg_wait(PGconn *c, int write, double deadline_ms)
{
    struct pollfd pfd = {.fd = PQsocket(c), .events = write ? POLLOUT : POLLIN};
    for (double left; pfd.fd >= 0 && (left = deadline_ms - clock_ms()) > 0;) {
        int rc = poll(&pfd, 1, (int)left + 1);
        if (rc == 1) return 0;
        if (rc == 0 || errno != EINTR) break;
    }
    return -1;
}

/* The result of sql (with $1 = param; without param, the simple query protocol, the
 * only one PgBouncer's admin console speaks), or NULL with why (a static string or c's
 * message). */
static PGresult *pg_ask(PGconn *c, const char *sql, const char *param, double deadline_ms, const char **why)
{
    *why = "out of memory";
    if (!c) return NULL;
    PostgresPollingStatusType st = PQstatus(c) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        if (pg_wait(c, st == PGRES_POLLING_WRITING, deadline_ms) != 0) {
            *why = "no answer within 2 s";
            return NULL;
        }
        st = PQconnectPoll(c);
    }
    const char *params[] = {param};
    if (st == PGRES_POLLING_FAILED ||
        !(param ? PQsendQueryParams(c, sql, 1, NULL, params, NULL, NULL, 0) : PQsendQuery(c, sql))) {
        *why = PQerrorMessage(c);
        return NULL;
    }
    int flushing;
    while ((flushing = PQflush(c)) == 1)
        if (pg_wait(c, 1, deadline_ms) != 0) break;
    while (flushing == 0 && PQisBusy(c))
        if (pg_wait(c, 0, deadline_ms) != 0 || !PQconsumeInput(c)) break;
    if (flushing != 0 || PQisBusy(c)) {
        *why = flushing < 0 || PQstatus(c) != CONNECTION_OK ? PQerrorMessage(c) : "no answer within 2 s";
        return NULL;
    }
    PGresult *r = PQgetResult(c);
    *why = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
    return r;
}

/* PgBouncer's max_client_conn, from SHOW CONFIG on its admin console (database_url
 * with dbname pgbouncer: the role must be in its admin_users or stats_users), or -1
 * with why. */
static long pooler_max_clients(const struct settings *cfg, double deadline_ms, const char **why)
{
    const char *keys[] = {"dbname", "dbname", "application_name", NULL};
    const char *vals[] = {cfg->database_url, "pgbouncer", "perfcgi-capacity", NULL};
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    PGresult *r = pg_ask(c, "SHOW CONFIG", NULL, deadline_ms, why);
    long max = -1;
    for (int i = 0; r && PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r) && PQnfields(r) > 1; i++)
        if (strcmp(PQgetvalue(r, i, 0), "max_client_conn") == 0) max = atol(PQgetvalue(r, i, 1));
    if (max < 0 && r && PQresultStatus(r) == PGRES_TUPLES_OK) *why = "no max_client_conn in SHOW CONFIG";
    PQclear(r);
    PQfinish(c);
    return max;
}

/* Through a pooler the workers' connections are its clients: checked against its
 * max_client_conn when its admin console tells it. */
static void capacity_pooler(const struct settings *cfg, const char *when, double deadline_ms, long server_pid,
                            long client_pid, long most)
{
    const char *why;
    long max_clients = pooler_max_clients(cfg, deadline_ms, &why);
    char head[320];
    snprintf(head, sizeof head,
             "%s: PostgreSQL connections: through a connection pooler (PgBouncer: the server runs the query as pid"
             " %ld, the connection was given pid %ld): workers %d x (pool_size %d + pool_max_overflow %d) + 1 = %ld"
             " client connections at most",
             when, server_pid, client_pid, settings_pm_children(cfg), cfg->pool_size, cfg->pool_max_overflow, most);
    if (max_clients < 0)
        log_info("%s, which the pooler's max_client_conn must allow (its admin console did not tell: %.*s);"
                 " PostgreSQL's max_connections bounds the pooler's server connections (default_pool_size)",
                 head, (int)strcspn(why, "\n"), why);
    else if (most <= max_clients)
        log_info("%s, of the pooler's max_client_conn %ld (other hosts' clients count too); PostgreSQL's"
                 " max_connections bounds the pooler's server connections (default_pool_size)", head, max_clients);
    else
        log_warning("%s; the pooler's max_client_conn is %ld: lower workers or pool_max_overflow, or raise"
                    " max_client_conn", head, max_clients);
}

long capacity_postgresql(const struct settings *cfg, const char *when)
{
    const char *keys[] = {"dbname", "application_name", NULL};
    const char *vals[] = {cfg->database_url, "perfcgi-capacity", NULL};
    double deadline = clock_ms() + PG_CHECK_MS;
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    const char *why;
    PGresult *r = pg_ask(c, CHECK_SQL, when, deadline, &why);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        log_warning("%s: PostgreSQL connections check skipped: cannot ask the server: %.*s", when,
                    (int)strcspn(why, "\n"), why);
        PQclear(r);
        PQfinish(c);
        return -1;
    }
    char role[64];
    snprintf(role, sizeof role, "%s", PQgetvalue(r, 0, 6));
    long max = field(r, 0), su_reserved = field(r, 1), reserved = field(r, 2), super = field(r, 3),
         connlimit = field(r, 4), others = field(r, 5), server_pid = field(r, 7);
    /* A pooler (PgBouncer) hands its clients a backend key of its own, and runs the
     * query on one of its server connections: the pids differ. */
    long client_pid = PQbackendPID(c);
    PQclear(r);
    PQfinish(c);

    int workers = settings_pm_children(cfg);
    long per = cfg->pool_size + cfg->pool_max_overflow;
    long most = workers * per + PG_PROBER_CONNECTIONS;
    if (server_pid != client_pid) {
        /* The server's numbers bound the pooler's server connections, not perfcgi's:
         * no limit on the workers from here, then. */
        capacity_pooler(cfg, when, deadline, server_pid, client_pid, most);
        return -1;
    }
    long for_role = super ? max : max - su_reserved - reserved;
    char limit[160] = "";
    if (connlimit >= 0 && connlimit < for_role) {
        for_role = connlimit;
        snprintf(limit, sizeof limit, ", CONNECTION LIMIT %ld of role %s", connlimit, role);
    }
    long left = for_role - others;
    if (most <= left) {
        log_info("%s: PostgreSQL connections: workers %d x (pool_size %d + pool_max_overflow %d) + 1 = %ld at most,"
                 " %ld left of max_connections %ld", when, workers, cfg->pool_size, cfg->pool_max_overflow, most, left,
                 max);
        return left - PG_PROBER_CONNECTIONS;
    }
    log_warning("%s: workers %d x (pool_size %d + pool_max_overflow %d) + 1 for the prober = %ld PostgreSQL"
                " connections at most; the server allows %ld (%ld for role %s: superuser_reserved_connections %ld,"
                " reserved_connections %ld%s; %ld open by others%s), so %ld are left: lower workers or"
                " pool_max_overflow, raise max_connections, or put PgBouncer in front",
                when, workers, cfg->pool_size, cfg->pool_max_overflow, most, max, for_role, role,
                super ? 0 : su_reserved, super ? 0 : reserved, limit, others,
                strcmp(when, "start") == 0 ? "" : ", other roles only", left);
    return left - PG_PROBER_CONNECTIONS < 0 ? 0 : left - PG_PROBER_CONNECTIONS;
}
