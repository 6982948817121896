#!/usr/bin/python3
# Deterministic generator of a small but realistic results.json, to develop the report against.
"""Usage: make_fixture.py [RUN_DIR]

Writes tests/bench/fixture_results.json; with RUN_DIR, also RUN_DIR/results.json and
RUN_DIR/results.csv, a run folder the report and its checker can be tried on.
The figures follow a simple queueing model (a capacity per class and endpoint, latency from
Little's law) with a few per cent of seeded noise between repetitions, so the charts and the
recommendations look like those of a real run on a 2-core machine.
"""
import csv
import json
import random
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "bench"))
from check_report import CSV_COLUMNS, CSV_SETTINGS_COLUMNS  # noqa: E402

CORES = 2
DURATION_S = 5
REPS = 3
CLASSES = ("sync", "thread", "event")
ENDPOINTS = {"/": "/", "/cpu-intensive": "/cpu-intensive?n=50000",
             "/io-intensive": "/io-intensive?ms=100", "/mixed": "/mixed?n=20000&ms=50"}
CONCURRENCIES = (16, 64, 256)
DEFAULTS = {"workers": 5, "pool_size": 5, "pool_max_overflow": 5, "threads": 4,
            "worker_connections": 1000, "max_requests": 0}

rng = random.Random(9)


def settings_for(worker_class, **overrides):
    settings = dict(DEFAULTS, worker_class=worker_class)
    if worker_class != "thread":
        settings["threads"] = 1
    settings.update(overrides)
    return settings


def capacity(endpoint, settings):
    """Requests/s the configuration can sustain: CPU-bound work is capped by the cores,
    database waits by the number of requests in flight the class allows."""
    cls, workers = settings["worker_class"], settings["workers"]
    in_flight = {"sync": workers, "thread": workers * settings["threads"],
                 "event": workers * (settings["pool_size"] + settings["pool_max_overflow"])}[cls]
    cpu_ms = {"/": 0.2, "/cpu-intensive": 4.5, "/io-intensive": 0.3, "/mixed": 2.0}[endpoint]
    wait_ms = {"/": 0.0, "/cpu-intensive": 0.0, "/io-intensive": 100.0, "/mixed": 50.0}[endpoint]
    cpu_cap = CORES * 1000.0 / cpu_ms * (0.93 if cls == "thread" else 1.0)
    cpu_cap *= min(1.0, workers / CORES)
    if wait_ms == 0:
        return cpu_cap
    if cls == "event":
        in_flight = min(in_flight, workers * settings["worker_connections"])
    return min(cpu_cap, in_flight * 1000.0 / (wait_ms + cpu_ms))


def repetition(endpoint, concurrency, settings, cost=1.0, noise=0.03):
    """One repetition's figures for a closed-loop run at `concurrency` connections."""
    service_ms = 1000.0 / capacity(endpoint, settings) if settings else 0.08
    rps = min(concurrency * 1000.0 / (service_ms + 0.5), 1000.0 / service_ms * cost)
    rps *= 1 + rng.uniform(-noise, noise)
    mean = concurrency * 1000.0 / rps
    return {"rps": round(rps, 1), "mean_ms": round(mean, 2), "p50_ms": round(mean * 0.92, 2),
            "p90_ms": round(mean * 1.35, 2), "p99_ms": round(mean * rng.uniform(1.8, 2.2), 2),
            "max_ms": round(mean * rng.uniform(2.6, 3.4), 2), "requests": int(rps * DURATION_S)}


def resources(rep, settings, baseline):
    busy = min(1.0, rep["rps"] / 9000.0)
    groups = {"nginx": {"cpu_s": round(DURATION_S * 0.8 * busy + 0.05, 2),
                        "peak_rss_kb": 21000 + rng.randint(0, 800), "processes": 3}}
    if baseline:
        groups["baseline"] = {"cpu_s": round(DURATION_S * 0.6 * busy, 2),
                              "peak_rss_kb": 3000, "processes": 1}
        return groups
    workers = settings["workers"]
    groups["perfcgi_workers"] = {"cpu_s": round(DURATION_S * CORES * 0.7 * min(1.0, busy * 3), 2),
                                 "peak_rss_kb": workers * (4200 + 900 * settings["threads"]),
                                 "processes": workers}
    groups["perfcgi_master"] = {"cpu_s": 0.02, "peak_rss_kb": 4800, "processes": 1}
    groups["redis"] = {"cpu_s": 0.01, "peak_rss_kb": 9000, "processes": 1}
    groups["postgresql"] = {"cpu_s": round(0.2 + rep["requests"] / 20000.0, 2),
                            "peak_rss_kb": 60000 + 2500 * workers, "processes": 6}
    return groups


def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def make_step(step_id, kind, group, endpoint, concurrency, settings, cache="bypass",
              baseline=None, sweep_value=None, rate=None, cost=1.0, hit_ratio=None, path=None):
    reps = []
    for _ in range(REPS):
        rep = repetition(endpoint, concurrency, settings if not baseline else None, cost)
        if rate is not None:  # open loop: the rate is held, latency grows as it nears capacity
            utilisation = min(0.97, rate / capacity(endpoint, settings))
            base = 1000.0 / capacity(endpoint, settings) * (1 + 1.0 / (1 - utilisation))
            rep.update(rps=round(rate * rng.uniform(0.99, 1.0), 1), mean_ms=round(base, 2),
                       p50_ms=round(base * 0.9, 2), p90_ms=round(base * 1.8, 2),
                       p99_ms=round(base * rng.uniform(3.5, 4.5), 2),
                       max_ms=round(base * 6, 2), requests=int(rate * DURATION_S))
        rep["resources"] = resources(rep, settings, baseline)
        rep["failed_by_kind"] = {"non2xx": 0, "connect": 0, "read": 0, "write": 0,
                                 "timeout": 0}
        if endpoint == "/io-intensive" and settings.get("worker_class") == "sync" \
                and concurrency == 256:
            rep["failed_by_kind"]["timeout"] = rng.randint(20, 40)
        rep["cache_hit_ratio"] = hit_ratio
        reps.append(rep)
    cls = None if baseline else settings["worker_class"]
    step = {"id": step_id, "kind": kind, "group": group, "class": cls, "baseline": baseline,
            "endpoint": endpoint, "path": path or ENDPOINTS[endpoint],
            "concurrency": concurrency, "cache": cache, "rate": rate,
            "settings": {} if baseline else settings, "sweep_value": sweep_value, "reps": REPS}
    rps = [r["rps"] for r in reps]
    step.update(rps=round(statistics.median(rps), 1), rps_min=min(rps), rps_max=max(rps))
    for field in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"):
        step[field] = median_of(r[field] for r in reps)
    step.update(p99_min=min(r["p99_ms"] for r in reps), p99_max=max(r["p99_ms"] for r in reps))
    step["requests"] = sum(r["requests"] for r in reps)
    step["failed_by_kind"] = {kind_: sum(r["failed_by_kind"][kind_] for r in reps)
                              for kind_ in reps[0]["failed_by_kind"]}
    step["failed"] = sum(step["failed_by_kind"].values())
    step["cache_hit_ratio"] = hit_ratio
    step["resources"] = {
        name: {key: median_of(r["resources"][name][key] for r in reps)
               for key in ("cpu_s", "peak_rss_kb", "processes")}
        for name in reps[0]["resources"]}
    step["metrics_delta"] = {} if baseline else {
        "perfcgi_pool_checkouts_total": step["requests"] if "io" in endpoint or "mixed" in endpoint else 0,
        "perfcgi_pool_timeouts_total": step["failed_by_kind"]["timeout"],
        "perfcgi_pool_connects_total": settings["workers"]}
    step["note"] = ""
    return step, reps


def row_of(step, rep_index, rep):
    res = rep["resources"]
    group = lambda name, key: res.get(name, {}).get(key)  # noqa: E731
    fk = rep["failed_by_kind"]
    return {"step_id": step["id"], "kind": step["kind"], "group": step["group"],
            "class": step["class"], "baseline": step["baseline"], "endpoint": step["endpoint"],
            "path": step["path"], "concurrency": step["concurrency"], "cache": step["cache"],
            "rate": step["rate"], "sweep_value": step["sweep_value"], "rep": rep_index,
            "rps": rep["rps"], "mean_ms": rep["mean_ms"], "p50_ms": rep["p50_ms"],
            "p90_ms": rep["p90_ms"], "p99_ms": rep["p99_ms"], "max_ms": rep["max_ms"],
            "requests": rep["requests"], "non2xx": fk["non2xx"], "connect_errors": fk["connect"],
            "read_errors": fk["read"], "write_errors": fk["write"], "timeouts": fk["timeout"],
            "cache_hit_ratio": rep["cache_hit_ratio"],
            "workers_cpu_s": group("perfcgi_workers", "cpu_s"),
            "workers_peak_rss_kb": group("perfcgi_workers", "peak_rss_kb"),
            "master_cpu_s": group("perfcgi_master", "cpu_s"),
            "nginx_cpu_s": group("nginx", "cpu_s"), "nginx_peak_rss_kb": group("nginx", "peak_rss_kb"),
            "redis_cpu_s": group("redis", "cpu_s"), "postgresql_cpu_s": group("postgresql", "cpu_s"),
            "postgresql_peak_rss_kb": group("postgresql", "peak_rss_kb")}


def build():
    steps, rows = [], []

    def add(step_and_reps):
        step, reps = step_and_reps
        steps.append(step)
        rows.extend(row_of(step, i + 1, rep) for i, rep in enumerate(reps))

    for cls in CLASSES:
        for endpoint in ENDPOINTS:
            for conc in CONCURRENCIES:
                add(make_step(f"matrix/{cls}/{endpoint}/c{conc}/bypass", "matrix", "matrix",
                              endpoint, conc, settings_for(cls)))
        for conc in CONCURRENCIES:  # the Nginx cache on `/`: far faster, nearly all hits
            add(make_step(f"matrix/{cls}///c{conc}/on", "matrix", "matrix", "/", conc,
                          settings_for(cls), cache="on", cost=3.5, hit_ratio=0.998))
        add(make_step(f"cold_wave/{cls}///c64", "cold_wave", "cold_wave", "/", 64,
                      settings_for(cls), cache="on", cost=0.6, hit_ratio=0.02))
    for name in ("nginx-return-200", "libfcgi-loop", "nonblocking-fcgi"):
        cost = {"nginx-return-200": 2.4, "libfcgi-loop": 1.25, "nonblocking-fcgi": 1.4}[name]
        for conc in CONCURRENCIES:
            add(make_step(f"baseline/{name}/c{conc}", "baseline", "baseline", "/", conc,
                          settings_for("sync"), baseline=name, cost=cost))
    for endpoint, cls in (("/cpu-intensive", "sync"), ("/io-intensive", "sync")):
        for workers in (1, 2, 5, 8, 16):
            add(make_step(f"sweep/workers/{cls}/{endpoint}/c64/{workers}", "sweep", "workers",
                          endpoint, 64, settings_for(cls, workers=workers), sweep_value=workers))
    for pool in (1, 2, 5, 10, 20):
        add(make_step(f"sweep/pool_size/event//io-intensive/c256/{pool}", "sweep", "pool_size",
                      "/io-intensive", 256, settings_for("event", pool_size=pool,
                                                         pool_max_overflow=0),
                      sweep_value=pool))
    for threads in (1, 2, 4, 8):
        add(make_step(f"sweep/threads/thread//io-intensive/c64/{threads}", "sweep", "threads",
                      "/io-intensive", 64, settings_for("thread", threads=threads),
                      sweep_value=threads))
    for max_requests, cost in ((0, 1.0), (100, 0.88)):
        add(make_step(f"sweep/max_requests/sync///c64/{max_requests}", "sweep", "max_requests",
                      "/", 64, settings_for("sync", max_requests=max_requests),
                      sweep_value=max_requests, cost=cost))
    for rate in (200, 600):
        add(make_step(f"openloop/event//io-intensive/r{rate}", "openloop", "openloop",
                      "/io-intensive", 64, settings_for("event"), rate=rate))
    return steps, rows


def results():
    steps, rows = build()
    return {
        "schema": 1,
        "run": {"id": "2026-12-01T12-30-00-full", "profile": "full",
                "started": "2026-12-01T12:30:00Z", "finished": "2026-12-01T12:58:41Z",
                "duration_s": 1721.4, "interrupted": False, "target": "stack",
                "base_url": "http://127.0.0.1:18080",
                "plan": {"warmup_s": 2, "duration_s": DURATION_S, "reps": REPS,
                         "p99_bound_ms": 250, "reference_concurrency": 64,
                         "steps_planned": len(steps), "steps_done": len(steps)}},
        "machine": {"cores": CORES, "memory_mib": 24000, "kernel": "6.1.0-28-amd64",
                    "cpu_model": "AMD EPYC 7B13", "os": "Debian GNU/Linux 12 (bookworm)",
                    "versions": {"perfcgi": "git 6019147", "nginx": "1.22.1",
                                 "redis": "7.0.15", "postgresql": "15.10", "wrk": "4.1.0",
                                 "loadtest": "8.2.1"}},
        "steps": steps, "rows": rows, "recommendations": {},
    }


def write_csv(rows, steps, path):
    settings = {s["id"]: s["settings"] for s in steps}
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS + CSV_SETTINGS_COLUMNS)
        for row in rows:
            extra = [settings[row["step_id"]].get(c, "") for c in CSV_SETTINGS_COLUMNS]
            writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS] + extra)


def main():
    data = results()
    text = json.dumps(data, indent=1) + "\n"
    (HERE / "fixture_results.json").write_text(text)
    if len(sys.argv) > 1:
        run_dir = Path(sys.argv[1])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "results.json").write_text(text)
        write_csv(data["rows"], data["steps"], run_dir / "results.csv")


if __name__ == "__main__":
    main()
