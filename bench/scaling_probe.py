#!/usr/bin/env python3
"""bench/scaling_probe.py: the single-server figures deploy/SCALING.md sizes with, taken on
the stack's own PostgreSQL, Redis and PgBouncer (deploy/stack.sh, free loopback ports, a
throwaway RUN_DIR, stopped on exit):

- an idle PostgreSQL backend's memory (Rss, Pss, private) after one /cached-data query;
- Redis: GET, SET and the EVAL of /cached-data's miss path, with redis-benchmark;
- PostgreSQL directly and through PgBouncer (transaction pooling), with pgbench -M extended
  (perfcgi's unnamed statements).

Each load figure comes with the CPU seconds the server process spent, so ops per CPU second
(what one core of that server gives) is known even on a machine whose cores the load
generator shares. Writes bench/results/scaling/probe.json. Not part of `make test`.

    python3 bench/scaling_probe.py [--seconds 5]
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
import harness  # noqa: E402  (free_ports)

OUT = REPO / "bench" / "results" / "scaling" / "probe.json"
REFERENCE = REPO / "bench" / "results" / "reference" / "results.csv"
# The reference steps whose per-request CPU cost sizes the Nginx tier and Redis.
REFERENCE_STEPS = [f"matrix/{c}/{e}/c64/{cache}" for c in ("sync", "thread", "event")
                   for e, cache in (("/", "bypass"), ("/cached-data", "bypass"), ("/cached-data", "on"),
                                    ("/io-intensive", "bypass"), ("/cpu-intensive", "bypass"))]
CATEGORY_SQL = ("SELECT count(*), sum(value), round(avg(value), 4), min(value), max(value) "
                "FROM items WHERE category = 7")
# /cached-data's miss path (app/core/endpoints/cached_data.c, LUA_GET_OR_LOCK), on a missing key.
GET_OR_LOCK = ("local v = redis.call('GET', KEYS[1]) if v then return v end "
               "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end return 0")
# A cached value as /cached-data stores it: its size matters to GET.
CACHED_VALUE = ('{"stats":{"count":1000,"sum":"500123.45","avg":"500.1235","min":"0.07",'
                '"max":"999.93"},"expires_at":1796000000.123}')


def cpu_s(pid):
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid):
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":")
        kb[name] = int(value.split()[0])
    return {"rss_kb": kb["Rss"], "pss_kb": kb["Pss"],
            "private_kb": kb["Private_Clean"] + kb["Private_Dirty"]}


def measured(pid, cmd, env=None):
    """Runs cmd; its stdout and the CPU seconds process pid spent meanwhile."""
    before, t0 = cpu_s(pid), time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, timeout=120).stdout
    return out, round(cpu_s(pid) - before, 2), round(time.monotonic() - t0, 2)


def idle_backends(env, n=8):
    """n psql sessions, each after one /cached-data query, left idle: their backends' memory."""
    sessions, pids = [], []
    try:
        for _ in range(n):
            p = subprocess.Popen(["psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", env["PG_PORT"],
                                  "-U", "perfcgi", "-d", "perfcgi"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env)
            sessions.append(p)
            p.stdin.write(f"{CATEGORY_SQL};\nSELECT pg_backend_pid();\n")
            p.stdin.flush()
            p.stdout.readline()
            pids.append(int(p.stdout.readline()))
        time.sleep(1)
        mems = [memory_kb(pid) for pid in pids]
        return {k: statistics.median(m[k] for m in mems) for k in mems[0]} | {"backends": n}
    finally:
        for p in sessions:
            p.stdin.close()
            p.wait(timeout=10)


def redis_bench(env, pid, requests):
    port = env["REDIS_PORT"]
    cli = ["redis-cli", "-p", port]
    subprocess.run(cli + ["SET", "perfcgi:cached-data:7", CACHED_VALUE], check=True, capture_output=True)
    base = ["redis-benchmark", "-p", port, "-c", "50", "-n", str(requests), "--csv"]
    runs = {"GET (a hit)": ["GET", "perfcgi:cached-data:7"],
            "SET": ["SET", "perfcgi:scaling-probe", CACHED_VALUE],
            "EVAL get-or-lock (a miss)": ["EVAL", GET_OR_LOCK, "2", "perfcgi:scaling-probe:absent",
                                          "perfcgi:scaling-probe:lock", "token", "10"]}
    out = {}
    for name, cmd in runs.items():
        text, cpu, wall = measured(pid, base + cmd)
        # the last line: "TEST","rps","avg_latency_ms",...,"max_latency_ms"; TEST is not escaped
        rps = float(text.strip().splitlines()[-1].rsplit(",", 7)[1].strip('"'))
        out[name] = {"ops_per_s": round(rps), "requests": requests, "redis_cpu_s": cpu, "seconds": wall,
                     "ops_per_redis_cpu_s": round(requests / cpu) if cpu else None}
    return out


def pgbench(env, port, seconds, script, pgbouncer_pid=None):
    """pgbench with 32 clients on port; through PgBouncer, its CPU seconds too."""
    cmd = ["pgbench", "-n", "-M", "extended", "-c", "32", "-j", "2", "-T", str(seconds), "-f", script,
           "-h", "127.0.0.1", "-p", port, "-U", "perfcgi", "perfcgi"]
    pid = pgbouncer_pid or os.getpid()
    text, cpu, _ = measured(pid, cmd, env)
    lines = text.splitlines()
    tps = next(float(line.split("=")[1].split()[0]) for line in lines if line.startswith("tps"))
    txns = next(int(line.split(":")[1].split()[0]) for line in lines
                if line.startswith("number of transactions actually processed"))
    res = {"tps": round(tps), "transactions": txns, "clients": 32}
    if pgbouncer_pid:
        res |= {"pgbouncer_cpu_s": cpu, "transactions_per_pgbouncer_cpu_s": round(txns / cpu) if cpu else None}
    return res


def reference_per_cpu_s():
    """Requests per CPU second of Nginx, Redis and the workers in the reference run's steps:
    each repetition's requests / the process group's CPU seconds, median of the repetitions."""
    with open(REFERENCE) as f:
        rows = [r for r in csv.DictReader(f) if r["step_id"] in REFERENCE_STEPS]
    out = {}
    for step in REFERENCE_STEPS:
        reps = [r for r in rows if r["step_id"] == step]
        fig = {"rps": statistics.median(float(r["rps"]) for r in reps)}
        for group in ("nginx", "redis", "workers"):
            vals = [float(r["requests"]) / float(r[f"{group}_cpu_s"])
                    for r in reps if float(r[f"{group}_cpu_s"] or 0)]
            fig[f"requests_per_{group}_cpu_s"] = round(statistics.median(vals)) if vals else None
        out[step] = fig
    return out


def reference_cache_hits():
    """/cached-data's Redis lookups over the whole reference run, from /metrics deltas."""
    rows = json.loads(REFERENCE.with_suffix(".json").read_text())["rows"]
    got = {r: sum((row.get("metrics_delta") or {}).get(f'perfcgi_cache_requests_total{{result="{r}"}}', 0)
                  for row in rows) for r in ("hit", "miss")}
    return got | {"hit_ratio": round(got["hit"] / (got["hit"] + got["miss"]), 6)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5, help="length of each pgbench run")
    ap.add_argument("--redis-requests", type=int, default=200000)
    args = ap.parse_args()
    run_dir = tempfile.mkdtemp(prefix="perfcgi-scaling-")
    os.chmod(run_dir, 0o755)  # PostgreSQL runs as its own user when we are root
    ports = [str(p) for p in harness.free_ports(5)]
    env = dict(os.environ, RUN_DIR=run_dir, PORT=ports[0], REDIS_PORT=ports[1], PG_PORT=ports[2],
               UPSTREAM_PORT=ports[3], PGBOUNCER_PORT=ports[4])
    stack = [str(REPO / "deploy" / "stack.sh")]
    try:
        for service in ("postgres", "redis", "pgbouncer"):
            subprocess.run(stack + ["start", service], check=True, env=env, timeout=120)
        redis_pid = int(Path(run_dir, "redis.pid").read_text())
        pgb_pid = int(Path(run_dir, "pgbouncer", "pgbouncer.pid").read_text())
        version = subprocess.run(["pgbouncer", "--version"], capture_output=True,
                                 text=True).stdout.splitlines()[0]
        script = Path(run_dir, "select1.sql")
        script.write_text("SELECT 1;\n")
        query = Path(run_dir, "category.sql")
        query.write_text(CATEGORY_SQL + ";\n")
        result = {
            "what": "bench/scaling_probe.py: single-server figures for deploy/SCALING.md",
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": os.cpu_count(),
            "note": "load generator and servers share these cores; "
                    "*_per_*_cpu_s is what one core of that server gives",
            "postgresql_idle_backend": idle_backends(env),
            "redis": redis_bench(env, redis_pid, args.redis_requests),
            "pgbench_select1": {
                "direct": pgbench(env, ports[2], args.seconds, str(script)),
                "through_pgbouncer": pgbench(env, ports[4], args.seconds, str(script), pgb_pid),
            },
            "pgbench_category_query": {
                "direct": pgbench(env, ports[2], args.seconds, str(query)),
                "through_pgbouncer": pgbench(env, ports[4], args.seconds, str(query), pgb_pid),
            },
            "reference_per_cpu_s": reference_per_cpu_s(),
            "reference_cache_lookups": reference_cache_hits(),
            "pgbouncer": {"version": version, "pool_mode": "transaction", "default_pool_size": 20},
        }
    finally:
        subprocess.run(stack + ["down"], env=env, timeout=120)
        shutil.rmtree(run_dir, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
