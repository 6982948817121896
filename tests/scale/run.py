#!/usr/bin/env python3
"""tests/scale/run.py [--out DIR] [TEST ...]: the multi-host scale test (`make scale-test`).

Three app hosts (network namespaces, tests/scale/hosts.py) behind the stack's Nginx, with
the stack's Redis and PostgreSQL reached over the test network, directly or through the
stack's PgBouncer (transaction pooling). Under load through Nginx, every request's status
counted: throughput on 1, 2 and 3 hosts; one host SIGKILLed, then restarted; one host's
link cut, then restored; a rolling restart, one host at a time, with the TERM drain, then
with the USR2 binary upgrade; PostgreSQL's server connections without and with PgBouncer;
PgBouncer restarted; the event class behind the upstream's keepalive. Asserts behaviour,
never speed; prints the figures and writes them to DIR/scale.json (default build/scale).
Ends with `N passed, N failed`. Root required.
"""

import argparse
import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import harness  # noqa: E402
import hosts as scale_hosts  # noqa: E402
# PgBouncer's admin console and PostgreSQL's client backends, as the integration test reads them.
from test_pgbouncer import client_connections, pool, server_connections  # noqa: E402

HOSTS = 3
WORKERS = 4         # sync workers per host
LOAD_SECONDS = 4
IO_MS = 100         # /io-intensive?ms= of the scaling figure: hosts x WORKERS / 0.1 s
# The database and the cache (Redis cache-aside), both over the test network.
FAILOVER_PATHS = ["/io-intensive?ms=20", "/cached-data?category=7"]
FAILOVER_CLIENTS = 12
# PgBouncer's default_pool_size: far below the hosts' HOSTS x WORKERS busy connections
# (a sync worker holds one at a time; pool_size and pool_max_overflow stay as default).
PGBOUNCER_POOL = 3


def database_url(net, pgbouncer_port=None):
    """The one place the hosts' database URL is made: PostgreSQL, or PgBouncer in front of it."""
    return f"postgresql://perfcgi@{net.gateway}:{pgbouncer_port or harness.STACK.pg_port}/perfcgi"


def host_settings(net, worker_class="sync", pgbouncer_port=None):
    return {"worker_class": worker_class, "workers": WORKERS,
            "redis_url": f"redis://{net.gateway}:{harness.STACK.redis_port}/0",
            "database_url": database_url(net, pgbouncer_port), "drain_delay": 1, "graceful_timeout": 10}


# --- load through Nginx -----------------------------------------------------------------------

class Load(harness.Load):
    """The harness's load (every request counted, a new connection each), timed."""

    def start(self):
        self.t0 = time.monotonic()
        super().start()

    def stop(self):
        super().stop()
        self.seconds = time.monotonic() - self.t0

    def figures(self):
        return {"requests": self.sent, "failed": len(self.failures), "seconds": round(self.seconds, 2),
                "req_per_s": round(self.sent / self.seconds, 1), "failures": [w for _, _, w in self.failures[:5]]}


class UpstreamErrors(harness.NginxErrorWatch):
    """The upstream errors Nginx logs meanwhile: what it met on a lost host (and retried,
    for every request that did not fail)."""
    MARKS = harness.NginxErrorWatch.MARKS + ("connect() failed", "timed out", "no live upstreams")


def wrk(path, seconds, connections=16):
    """wrk against Nginx: (req/s, non-2xx or socket errors)."""
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "-H", "X-No-Cache: 1",
                          f"http://127.0.0.1:{harness.STACK.port}{path}"],
                         capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = float(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Requests/sec:")))
    bad = sum(int(n) for ln in out.splitlines() if "Non-2xx" in ln or "Socket errors" in ln
              for n in ln.replace(",", " ").split() if n.isdigit())
    return rps, bad


# --- the scenarios ------------------------------------------------------------------------------

def rejoin_seconds(host, since, base=0):
    """Waits until the host (restarted, or its link back) serves again through Nginx:
    seconds from `since` to its first connection accepted past `base` (load running)."""
    harness.wait_until(lambda: host.accepted() > base, 20, interval=0.05, message=f"host {host.n} rejoined")
    return round(time.monotonic() - since, 2)


def kill_and_restart(host):
    """SIGKILL to the host's perfcgi (its whole group), a restart 2 s later: the seconds
    from the restart until it serves again through Nginx."""
    host.kill()
    time.sleep(2)
    restarted = time.monotonic()
    host.start()
    return rejoin_seconds(host, restarted)


def test_scaling(ctx):
    """io-intensive scales with hosts (waiting needs no core); `/` does not (2 cores)."""
    res = ctx.results["scaling"] = {"io_intensive": {}, "root": {}}
    for n in range(1, HOSTS + 1):
        ctx.nginx.point_at(ctx.hosts[:n])
        before = [h.accepted() for h in ctx.hosts]
        with Load([f"/io-intensive?ms={IO_MS}"], threads=2 * n * WORKERS) as load:
            time.sleep(LOAD_SECONDS)
        served = [h.accepted() - b for h, b in zip(ctx.hosts, before)]
        s = load.figures()
        s["expected_req_per_s"] = n * WORKERS * 1000 // IO_MS
        s["served_per_host"] = served[:n]
        res["io_intensive"][n] = s
        print(f"  io-intensive?ms={IO_MS}, {n} host(s) x {WORKERS} sync workers: {s['req_per_s']} req/s "
              f"(~{s['expected_req_per_s']} expected), {s['failed']} failed of {s['requests']}, per host {served[:n]}")
        assert s["failed"] == 0, s
        assert all(x > 0 for x in served[:n]), f"a host served nothing: {served}"
        rps, bad = wrk("/", 3)
        res["root"][n] = {"req_per_s": round(rps, 1), "failed": bad}
        print(f"  /, {n} host(s): {rps:.0f} req/s (wrk, 16 connections), {bad} failed")
        assert bad == 0
    io = res["io_intensive"]
    assert io[HOSTS]["req_per_s"] > 1.5 * io[1]["req_per_s"], "3 hosts do not serve more than 1 on io-intensive"


def test_kill(ctx):
    """SIGKILL of one host's perfcgi under load: failures bounded by its workers' requests
    in flight; it rejoins by itself once restarted."""
    victim = ctx.hosts[0]
    with UpstreamErrors() as errors, Load(FAILOVER_PATHS, FAILOVER_CLIENTS) as load:
        time.sleep(1)
        rejoin = kill_and_restart(victim)
        time.sleep(1)
    s = dict(load.figures(), upstream_errors=len(errors.dropped()), rejoin_seconds=rejoin, bound=WORKERS)
    ctx.results["failover_kill"] = s
    print(f"  SIGKILL host 1: {s['failed']} failed of {s['requests']} (bound {WORKERS}; Nginx met "
          f"{s['upstream_errors']} upstream errors), "
          f"rejoined {rejoin}s after its restart")
    assert s["failed"] <= WORKERS, s


def test_link_cut(ctx):
    """One host's link down under load: 0 failures (next_upstream error timeout); it rejoins
    once the link is back."""
    victim = ctx.hosts[1]
    with UpstreamErrors() as errors, Load(FAILOVER_PATHS, FAILOVER_CLIENTS) as load:
        time.sleep(1)
        victim.link(False)
        time.sleep(2)
        restored = time.monotonic()
        victim.link(True)
        # What it accepted before the cut, read once it answers again: only new ones count.
        base = harness.wait_until(lambda: victim.accepted() + 1, 10, interval=0.05) - 1
        rejoin = rejoin_seconds(victim, restored, base)
        time.sleep(1)
    s = dict(load.figures(), upstream_errors=len(errors.dropped()), rejoin_seconds=rejoin)
    ctx.results["failover_link"] = s
    print(f"  link of host 2 down for 2 s: {s['failed']} failed of {s['requests']} (Nginx met "
          f"{s['upstream_errors']} upstream errors), "
          f"rejoined {rejoin}s after the link came up")
    assert s["failed"] == 0, s


def test_rolling(ctx):
    """One host at a time: TERM (drain_delay, then the graceful stop), restart, rejoin;
    0 failed requests. Nginx keeps sending during the drain (perfcgi still accepts);
    once perfcgi stops listening, the connection is refused and Nginx retries another."""
    steps = []
    with UpstreamErrors() as errors, Load(FAILOVER_PATHS, FAILOVER_CLIENTS) as load:
        time.sleep(0.5)
        for h in ctx.hosts:
            t0 = time.monotonic()
            h.signal(signal.SIGTERM)
            rc = h.wait(30)
            assert rc == 0, f"host {h.n} exited with {rc} after TERM"
            stopped = time.monotonic()
            h.start()
            steps.append({"host": h.n, "drain_and_stop_s": round(stopped - t0, 2),
                          "rejoin_s": rejoin_seconds(h, stopped)})
        time.sleep(0.5)
    s = dict(load.figures(), upstream_errors=len(errors.dropped()), steps=steps)
    ctx.results["rolling"] = s
    print(f"  rolling restart of {HOSTS} hosts: {s['failed']} failed of {s['requests']} (Nginx met "
          f"{s['upstream_errors']} upstream errors); {steps}")
    assert s["failed"] == 0, s


def test_event_keepalive(ctx):
    """Event workers behind the upstream's keepalive: connections are reused; SIGKILL of one
    host under load fails at most its requests in flight; it rejoins once restarted."""
    ctx.nginx.render("event")
    ctx.pgbouncer_port = None
    for h in ctx.hosts:
        h.kill()
        h.settings = host_settings(ctx.net, "event")
        h.start()
    ctx.nginx.point_at(ctx.hosts)
    victim, others = ctx.hosts[2], ctx.hosts[:2]
    with UpstreamErrors() as errors, Load(FAILOVER_PATHS, FAILOVER_CLIENTS) as load:
        time.sleep(1)
        before = [(h.requests(), h.connections()) for h in others]
        time.sleep(1)
        reuse = [(r1 - r0, c1 - c0) for (r0, c0), (r1, c1) in
                 zip(before, [(h.requests(), h.connections()) for h in others])]
        rejoin = kill_and_restart(victim)
        time.sleep(1)
    s = dict(load.figures(), upstream_errors=len(errors.dropped()), rejoin_seconds=rejoin, bound=FAILOVER_CLIENTS,
             requests_and_connections_in_1s_per_host=reuse)
    ctx.results["event_keepalive_kill"] = s
    print(f"  event class, keepalive: (requests, connections opened) in 1 s on hosts 1-2 {reuse}; SIGKILL host 3: "
          f"{s['failed']} failed of {s['requests']} (Nginx met {s['upstream_errors']} upstream errors), "
          f"rejoined {rejoin}s after its restart")
    # A connection per request without keepalive; with it, a few connections in a second.
    assert all(req > 2 * conns for req, conns in reuse), f"connections not kept alive: {reuse}"
    assert s["failed"] <= FAILOVER_CLIENTS, s


def test_rolling_usr2(ctx):
    """One host at a time: USR2 (a new master on the inherited sockets; the old one retires
    once it serves) under load: 0 failed requests, every host's new master serving."""
    steps = []
    with UpstreamErrors() as errors, Load(FAILOVER_PATHS, FAILOVER_CLIENTS) as load:
        time.sleep(0.5)
        for h in ctx.hosts:
            old = h.p.pid
            switch_s, serving_ms = h.upgrade()
            # Served through Nginx by the new master's workers (its own count starts at 0).
            harness.wait_until(lambda: h.accepted() > 0, 10, interval=0.05, message=f"host {h.n}'s new master accepts")
            steps.append({"host": h.n, "old_master": old, "new_master": h.p.pid,
                          "new_serving_ms": serving_ms, "old_gone_s": round(switch_s, 2)})
        time.sleep(0.5)
    s = dict(load.figures(), upstream_errors=len(errors.dropped()), steps=steps)
    ctx.results["rolling_usr2"] = s
    print(f"  USR2 upgrade of {HOSTS} hosts, one at a time: {s['failed']} failed of {s['requests']} (Nginx met "
          f"{s['upstream_errors']} upstream errors); per host (new master serving, old gone): "
          + ", ".join(f"{st['new_serving_ms']} ms, {st['old_gone_s']} s" for st in steps))
    assert s["failed"] == 0, s


def connections_at_peak(ctx):
    """io-intensive?ms=IO_MS across all hosts, enough clients for every worker to hold a
    database connection: the most PostgreSQL server connections seen (and, through
    PgBouncer, its most client connections, its pool's server connections and SHOW POOLS'
    row when most clients were waiting or active), and the load's figures."""
    ctx.nginx.point_at(ctx.hosts)
    most = {"server_connections": 0}
    if ctx.pgbouncer_port:
        most.update(pgbouncer_clients=0, pgbouncer_pool_servers=0, pool_row_at_peak=None)
    with Load([f"/io-intensive?ms={IO_MS}"], threads=2 * HOSTS * WORKERS) as load:
        load.wait_for(HOSTS * WORKERS)
        end = time.monotonic() + LOAD_SECONDS / 2
        while time.monotonic() < end:
            most["server_connections"] = max(most["server_connections"], server_connections())
            if ctx.pgbouncer_port:
                most["pgbouncer_clients"] = max(most["pgbouncer_clients"], client_connections(ctx.pgbouncer_port))
                row, servers = pool(ctx.pgbouncer_port)
                most["pgbouncer_pool_servers"] = max(most["pgbouncer_pool_servers"], servers)
                busy = lambda r: int(r["cl_active"]) + int(r["cl_waiting"])  # noqa: E731
                if most["pool_row_at_peak"] is None or busy(row) > busy(most["pool_row_at_peak"]):
                    most["pool_row_at_peak"] = row
            time.sleep(0.05)
    return dict(most, load=load.figures())


def test_pgbouncer_connections(ctx):
    """The same load without and with PgBouncer: directly, a server connection per busy
    worker; through it, at most its pool while the hosts hold many more clients."""
    res = ctx.results["pgbouncer"] = {"pool_size": PGBOUNCER_POOL, "pool_mode": "transaction",
                                      "busy_connections_wanted": HOSTS * WORKERS}
    ctx.use_pgbouncer(False)
    res["without"] = connections_at_peak(ctx)
    ctx.use_pgbouncer(True)
    res["with"] = connections_at_peak(ctx)
    w, p = res["without"], res["with"]
    print(f"  PostgreSQL server connections at the peak of io-intensive?ms={IO_MS} over {HOSTS} hosts x {WORKERS} "
          f"sync workers: {w['server_connections']} without PgBouncer, {p['server_connections']} with (its pool "
          f"{PGBOUNCER_POOL}, pool servers {p['pgbouncer_pool_servers']}), PgBouncer clients {p['pgbouncer_clients']} "
          f"(at the peak {p['pool_row_at_peak']['cl_active']} active, {p['pool_row_at_peak']['cl_waiting']} waiting); "
          f"failed {w['load']['failed']} of {w['load']['requests']} without, {p['load']['failed']} of "
          f"{p['load']['requests']} with")
    assert w["load"]["failed"] == 0 and p["load"]["failed"] == 0, res
    assert w["server_connections"] >= HOSTS * WORKERS, w
    assert 1 <= p["server_connections"] <= PGBOUNCER_POOL, p
    assert p["pgbouncer_pool_servers"] <= PGBOUNCER_POOL, p
    assert p["pgbouncer_clients"] > PGBOUNCER_POOL, p


def test_pgbouncer_restart(ctx):
    """PgBouncer stopped and started again under load through Nginx: requests fail at most
    while it is down (and a moment after); every host serves 200s again, not restarted."""
    ctx.use_pgbouncer(True)
    ctx.nginx.point_at(ctx.hosts)
    masters = [h.p.pid for h in ctx.hosts]
    workers = {h.n: {p["pid"] for p in h.status(full=True)["processes"]} for h in ctx.hosts}
    back = {}  # host -> seconds from the start command until its workers' first 200

    def all_back(since, before):
        for n, pids in workers.items():
            if n not in back and any(load.served_by.get(p, 0) > before.get(p, 0) for p in pids):
                back[n] = round(time.monotonic() - since, 2)
        return len(back) == HOSTS

    # Every request needs PostgreSQL (/cached-data may answer from Redis meanwhile).
    with Load([FAILOVER_PATHS[0]], FAILOVER_CLIENTS) as load, ThreadPoolExecutor(1) as pool_:
        load.wait_for(50)
        down = time.monotonic()
        harness.stack("stop", "pgbouncer", env=ctx.pgbouncer_env)
        stopped = time.monotonic()
        time.sleep(1)
        # Started in the background (stack.sh returns once a query goes through): the
        # hosts' recovery is timed from the start command on, PgBouncer's own start included.
        before, starting = dict(load.served_by), time.monotonic()
        started = pool_.submit(harness.stack, "start", "pgbouncer", env=ctx.pgbouncer_env)
        harness.wait_until(lambda: all_back(starting, before), 30, interval=0.02,
                           message="every host serving after PgBouncer's restart")
        started.result(timeout=60)
        up = time.monotonic()
        load.wait_for(load.ok + 100)
    last_failure = max((f[0] for f in load.failures), default=starting)
    s = dict(load.figures(), stop_s=round(stopped - down, 2), start_s=round(up - starting, 2),
             hosts_back_after_start_s=back, last_failure_after_start_s=round(max(0.0, last_failure - starting), 2))
    ctx.results["pgbouncer_restart"] = s
    print(f"  PgBouncer stopped ({s['stop_s']} s), down 1 s, started again ({s['start_s']} s until stack.sh saw "
          f"it answer): {s['failed']} failed of {s['requests']}; every host served 200s again "
          f"{back} s after the start command, the last failure {s['last_failure_after_start_s']} s after it")
    # A request in flight when it came back may still fail: 3 s for those.
    assert all(down <= f[0] <= up + 3 for f in load.failures), s
    assert [h.p.pid for h in ctx.hosts] == masters, "perfcgi restarted"
    assert {h.n: {p["pid"] for p in h.status(full=True)["processes"]} for h in ctx.hosts} == workers, \
        "workers replaced"


TESTS = [test_scaling, test_kill, test_link_cut, test_rolling, test_rolling_usr2, test_pgbouncer_connections,
         test_pgbouncer_restart, test_event_keepalive]


# --- the run -------------------------------------------------------------------------------------

class Context:
    def __init__(self, out):
        self.out = out
        self.net = self.hosts = self.nginx = None
        self.pgbouncer_port = self.pgbouncer_env = None  # the hosts' database_url names it when set
        self.results = {"hosts": HOSTS, "workers_per_host": WORKERS, "worker_class": "sync",
                        "cpus": os.cpu_count(), "load_seconds": LOAD_SECONDS}

    def start(self):
        # What an earlier run killed with SIGKILL left: its stack, its namespaces and links.
        state = os.path.join(self.out, "stack-run-dir")
        if os.path.exists(state):
            old = harness.Stack()
            old.run_dir = harness.read_text(state).strip()
            if os.path.isdir(old.run_dir):
                old.env, old.started, old.external = harness.clean_env(RUN_DIR=old.run_dir), True, False
                old.stop()
            os.unlink(state)
        scale_hosts.cleanup()
        self.net = scale_hosts.Network(HOSTS)
        self.net.create()
        os.environ["BACKEND_LISTEN"] = f"127.0.0.1 {self.net.gateway}"
        harness.STACK.start()
        with open(state, "w") as f:
            f.write(harness.STACK.run_dir + "\n")
        # The test network's hosts may log in (trust, as loopback in the stack's cluster).
        hba = os.path.join(harness.STACK.run_dir, "postgres", "data", "pg_hba.conf")
        with open(hba, "a") as f:
            f.write(f"host all all {self.net.net} trust\n")
        harness.psql("SELECT pg_reload_conf()")
        harness.stack("stop", "perfcgi")
        self.hosts = [scale_hosts.Host(i + 1, a, host_settings(self.net), self.out)
                      for i, a in enumerate(self.net.host_addrs)]
        for h in self.hosts:
            h.start()
        for h in self.hosts:
            harness.wait_until(h.ready, 15, message=f"host {h.n} ready (Redis and PostgreSQL reached)")
        self.nginx = scale_hosts.Nginx(harness.STACK)
        self.nginx.point_at(self.hosts)

    def use_pgbouncer(self, on):
        """The hosts' database_url at PgBouncer (started on its first use, listening on
        loopback and the test network's gateway) or at PostgreSQL: hosts restarted on a change."""
        if on and not self.pgbouncer_env:
            self.pgbouncer_env = {"PGBOUNCER_PORT": str(harness.free_ports(1)[0]),
                                  "PGBOUNCER_LISTEN_ADDR": f"127.0.0.1,{self.net.gateway}",
                                  "PGBOUNCER_POOL_SIZE": str(PGBOUNCER_POOL)}
            harness.stack("start", "pgbouncer", env=self.pgbouncer_env)
        port = self.pgbouncer_env["PGBOUNCER_PORT"] if on else None
        if port == self.pgbouncer_port:
            return
        self.pgbouncer_port = port
        for h in self.hosts:
            h.kill()
            h.settings = host_settings(self.net, pgbouncer_port=port)
            h.start()
        for h in self.hosts:
            harness.wait_until(h.ready, 15, message=f"host {h.n} ready")

    def stop(self):
        for h in self.hosts or ():
            h.kill()
        harness.STACK.stop()
        scale_hosts.cleanup()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.out, "stack-run-dir"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(harness.REPO / "build" / "scale"))
    ap.add_argument("tests", nargs="*", help="substrings of test names to run (default: all)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("SKIP the scale test: network namespaces, links and addresses need root")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    os.makedirs(args.out, exist_ok=True)
    ctx = Context(args.out)
    atexit.register(ctx.stop)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    passed = failed = 0
    t0 = time.monotonic()
    try:
        ctx.start()
        for test in TESTS:
            if args.tests and not any(s in test.__name__ for s in args.tests):
                continue
            print(f"{test.__name__}: {test.__doc__.splitlines()[0]}", flush=True)
            try:
                test(ctx)
                passed += 1
                print(f"PASS {test.__name__}", flush=True)
            except Exception:  # noqa: BLE001
                failed += 1
                traceback.print_exc()
                print(f"FAIL {test.__name__}", flush=True)
                # Whatever the test left down comes back for the next one.
                if ctx.pgbouncer_env:
                    harness.stack("start", "pgbouncer", env=ctx.pgbouncer_env)
                for h in ctx.hosts:
                    h.link(True)
                    if h.p.poll() is not None:
                        h.start()
                ctx.nginx.point_at(ctx.hosts)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        failed += 1
    finally:
        ctx.stop()
    ctx.results["run_seconds"] = round(time.monotonic() - t0, 1)
    with open(os.path.join(args.out, "scale.json"), "w") as f:
        json.dump(ctx.results, f, indent=2)
        f.write("\n")
    print(f"figures: {os.path.join(args.out, 'scale.json')}; run time {ctx.results['run_seconds']} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
