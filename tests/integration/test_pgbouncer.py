"""PgBouncer (Debian's, deploy/pgbouncer.ini via `stack.sh start pgbouncer`) between perfcgi
and the stack's PostgreSQL in transaction pooling mode (issue 13, item 2): every endpoint
answers through it, PostgreSQL's server connections stay at its default_pool_size while
perfcgi holds many more client connections, a PgBouncer restart is survived without
restarting perfcgi, and the capacity check says it counts the pooler's clients."""

import contextlib
import subprocess
import time

from harness import (STACK, WORKER_CLASS, Load, OwnPerfcgi, assert_app_answer, category_stats, clean_env,
                     free_ports, get, master_http, master_pid, psql, redis_cli, stack, wait_until,
                     worker_pids)

# Per class, perfcgi settings under which a load of LOAD_THREADS concurrent slow requests
# keeps many more PostgreSQL client connections open than PgBouncer's pool of POOL.
POOL = 2
LOAD_THREADS = 12
CLASS_SETTINGS = {"sync": {"workers": 6}, "thread": {"workers": 2, "threads": 6},
                  "event": {"workers": 2}}


@contextlib.contextmanager
def pgbouncer(pool_size=POOL, max_client_conn=1000):
    """stack.sh's pgbouncer on a free port; yields (port, env for stack.sh); stopped on exit."""
    port = free_ports(1)[0]
    env = {"PGBOUNCER_PORT": str(port), "PGBOUNCER_POOL_SIZE": str(pool_size),
           "PGBOUNCER_MAX_CLIENT_CONN": str(max_client_conn)}
    stack("start", "pgbouncer", env=env)
    try:
        yield port, env
    finally:
        stack("stop", "pgbouncer", env=env)


def through(port, name="pgbouncer", **settings):
    """perfcgi of this test with its database_url at PgBouncer's port (its log: RUN_DIR/NAME.log)."""
    s = dict(CLASS_SETTINGS[WORKER_CLASS], **settings)
    return OwnPerfcgi(name=name, database_url=f"postgresql://perfcgi@127.0.0.1:{port}/perfcgi", **s)


def admin(port, command):
    """A SHOW command on PgBouncer's admin console: a list of dicts, one per row."""
    r = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "perfcgi", "-d", "pgbouncer",
                        "-A", "-F", "\t", "-P", "footer=off", "-c", command],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                       env=clean_env(PGCONNECT_TIMEOUT="10"))
    assert r.returncode == 0, f"{command} on pgbouncer's console: {r.stderr.strip()}"
    lines = r.stdout.rstrip("\n").split("\n")
    head = lines[0].split("\t")
    return [dict(zip(head, ln.split("\t"))) for ln in lines[1:] if ln]


def server_connections():
    """PostgreSQL's client backends on database perfcgi (psql's own not counted): with
    perfcgi going through PgBouncer, PgBouncer's server connections."""
    return int(psql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'perfcgi'"
                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"))


def client_connections(port):
    return len([c for c in admin(port, "SHOW CLIENTS") if c["database"] == "perfcgi"])


def pool(port):
    """SHOW POOLS' row of database perfcgi, and its server connections (all states)."""
    row = next(p for p in admin(port, "SHOW POOLS") if p["database"] == "perfcgi")
    return row, sum(int(row[k]) for k in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))


def pooler_line(own):
    return wait_until(lambda: [ln for ln in own.log_text().splitlines()
                               if "through a connection pooler (PgBouncer" in ln], 20,
                      message="the capacity check's pooler line")[0]


def test_pgbouncer_every_endpoint_answers():
    with pgbouncer() as (port, _), through(port) as own:
        # The capacity check counts perfcgi's connections as PgBouncer's clients.
        line = pooler_line(own)
        assert "info: start: PostgreSQL connections: through a connection pooler" in line, line
        assert "client connections at most, of the pooler's max_client_conn 1000" in line, line
        assert master_http("/readyz")[0] == 200
        for path in ("/", "/cpu-intensive?n=1000", "/expensive-computation?n=20", "/memory-test?mb=1",
                     "/async-request?ms=5"):
            assert_app_answer(*get(path))
        for ms in (0, 30):
            obj = assert_app_answer(*get(f"/io-intensive?ms={ms}"))
            assert obj["db_ms"] >= ms, obj
        obj = assert_app_answer(*get("/mixed?n=1000&ms=10"))
        assert obj["primes"] == 168 and obj["db_ms"] >= 10, obj
        for c in (0, 1, 50):
            redis_cli("DEL", f"perfcgi:cached-data:{c}")
            obj = assert_app_answer(*get(f"/cached-data?category={c}"))
            assert obj["source"] == "database" and obj["stats"] == category_stats(c), obj
        # What went through PgBouncer: its stats count the queries on database perfcgi.
        stats = {r["database"]: r for r in admin(port, "SHOW STATS")}
        assert int(stats["perfcgi"]["total_query_count"]) >= 5, stats["perfcgi"]


def test_pgbouncer_server_connections_stay_at_pool_size():
    with pgbouncer() as (port, _), through(port), \
            Load(["/io-intensive?ms=100"], threads=LOAD_THREADS) as load:
        load.wait_for(LOAD_THREADS * 3)
        most_servers = most_clients = 0
        for _ in range(20):
            most_servers = max(most_servers, server_connections())
            most_clients = max(most_clients, client_connections(port))
            time.sleep(0.1)
        row, servers = pool(port)
        load.stop()
        print(f"{WORKER_CLASS}: PostgreSQL server connections at most {most_servers} "
              f"(default_pool_size {POOL}), perfcgi's client connections at most {most_clients}; "
              f"pool {row}; load {load.summary()}")
        assert not load.failures, load.summary()
        assert 1 <= most_servers <= POOL, (most_servers, row)
        assert most_clients >= 2 * POOL, (most_clients, row)
        assert servers <= POOL, row


def test_pgbouncer_restart_service_resumes():
    with pgbouncer() as (port, env), through(port):
        master, workers = master_pid(), worker_pids()
        with Load(["/io-intensive?ms=10"], threads=4) as load:
            load.wait_for(50)
            down = time.monotonic()
            stack("stop", "pgbouncer", env=env)
            time.sleep(1)
            stack("start", "pgbouncer", env=env)
            up = time.monotonic()
            ok_at_up = load.ok
            load.wait_for(ok_at_up + 100)
            load.stop()
        # A request in flight when it came back may still fail: 3 s for those.
        late = [f for f in load.failures if f[0] > up + 3]
        after_up = sum(1 for f in load.failures if f[0] > up)
        print(f"{WORKER_CLASS}: PgBouncer stopped and started again in {up - down:.1f} s: {load.sent} sent, "
              f"{load.ok} ok, {len(load.failures)} failed (503 backend_unavailable), {after_up} of them after "
              f"it answered again")
        assert not late, (f"{len(late)} late, first at +{late[0][0] - up:.2f} s, last at +{late[-1][0] - up:.2f} s: "
                          f"{late[0][2][:200]} / {late[-1][2][:200]}; {load.summary()}")
        assert all(f[0] >= down for f in load.failures), load.summary()
        assert (master_pid(), worker_pids()) == (master, workers), "perfcgi restarted"
        # The last 100 requests all answered 200: service resumed by itself.
        assert load.ok >= ok_at_up + 100


def sleeping_queries():
    return int(psql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                    " AND query LIKE 'SELECT pg_sleep%'"))


def test_pgbouncer_deadline_frees_the_server_connection():
    # A query that outlives the request's deadline, with one server connection in
    # PgBouncer's pool: sync and thread workers cancel it (PQcancel, which PgBouncer
    # forwards to the server running it), the event class drops its connection
    # (PgBouncer then closes that server connection; PostgreSQL ends the sleep when it
    # next writes). Either way the pool serves the next request.
    # timeout=3: the backend wait ends 1 s before the master would abort the worker.
    with pgbouncer(pool_size=1) as (port, _), through(port, timeout=3):
        status, h, body = get("/io-intensive?ms=10000")
        assert status == 504 and b'"timeout"' in body, (status, body[:300])
        if WORKER_CLASS != "event":
            wait_until(lambda: sleeping_queries() == 0, 5, message="the server's pg_sleep cancelled")
        obj = assert_app_answer(*get("/io-intensive?ms=0"))
        assert obj["db_ms"] >= 0, obj
        row, servers = pool(port)
        assert servers <= 1, row


def test_pgbouncer_capacity_check_counts_clients_against_max_client_conn():
    with pgbouncer(max_client_conn=20) as (port, _), \
            through(port, name="pgbcap", workers=2, pool_size=5, pool_max_overflow=10) as own:
        line = pooler_line(own)
        assert "warning: start:" in line, line
        assert "workers 2 x (pool_size 5 + pool_max_overflow 10) + 1 = 31 client connections at most" in line, line
        assert "the pooler's max_client_conn is 20: lower workers or pool_max_overflow, or raise" in line, line
        assert "max_connections" not in line, line
