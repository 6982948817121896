"""bench/perfbench/results.py: one measurement -> a row; a step's rows -> its medians and
spread; the run -> results.json and results.csv (the format: BENCH_SCHEMA in README)."""
import csv
import json
import math
import statistics
from pathlib import Path

FAILURES = {"non2xx": "non2xx", "connect": "connect_errors", "read": "read_errors",
            "write": "write_errors", "timeout": "timeouts"}
LATENCY = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")
CSV_COLUMNS = ("step_id", "kind", "group", "class", "baseline", "endpoint", "path", "concurrency", "cache",
               "rate", "sweep_value", "rep", "rps", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms",
               "requests", "non2xx", "connect_errors", "read_errors", "write_errors", "timeouts",
               "cache_hit_ratio", "workers_cpu_s", "workers_peak_rss_kb", "master_cpu_s", "nginx_cpu_s",
               "nginx_peak_rss_kb", "redis_cpu_s", "postgresql_cpu_s", "postgresql_peak_rss_kb",
               "worker_class", "workers", "pool_size", "threads", "worker_connections", "max_requests")
# The CSV's resource columns: (column, group, figure).
RESOURCE_COLUMNS = (("workers_cpu_s", "perfcgi_workers", "cpu_s"), ("workers_peak_rss_kb", "perfcgi_workers", "peak_rss_kb"),
                    ("master_cpu_s", "perfcgi_master", "cpu_s"), ("nginx_cpu_s", "nginx", "cpu_s"),
                    ("nginx_peak_rss_kb", "nginx", "peak_rss_kb"), ("redis_cpu_s", "redis", "cpu_s"),
                    ("postgresql_cpu_s", "postgresql", "cpu_s"), ("postgresql_peak_rss_kb", "postgresql", "peak_rss_kb"))


def hit_ratio(hits, misses):
    if hits is None or misses is None or hits + misses == 0:
        return None
    return round(hits / (hits + misses), 4)


def make_row(step, rep, rate, figures, resources, metrics_delta, settings):
    row = {"step_id": step.id, "kind": step.kind, "group": step.group, "class": step.cls,
           "baseline": step.baseline, "endpoint": step.endpoint, "path": step.path,
           "concurrency": step.concurrency, "cache": step.cache, "rate": rate,
           "sweep_value": step.sweep_value, "rep": rep, "front": step.front, "rss_return_kb": None,
           "nginx_p99_ms": None, "warm_p99_ms": None}
    row.update({k: _round(figures.get(k)) for k in ("rps", *LATENCY, "requests", *FAILURES.values())})
    row["cache_hit_ratio"] = hit_ratio(figures.get("cache_hits"), figures.get("cache_misses"))
    for column, group, figure in RESOURCE_COLUMNS:
        row[column] = resources.get(group, {}).get(figure)
    row["resources"] = resources
    row["metrics_delta"] = metrics_delta
    row["settings"] = settings
    return row


def _round(v):
    return round(v, 3) if isinstance(v, float) else v


def _median(values):
    values = [v for v in values if v is not None]
    return _round(statistics.median(values)) if values else None


def percentile(values, p):
    """The nearest-rank p-th percentile of values, None when there are none."""
    values = sorted(values)
    if not values:
        return None
    return _round(values[max(0, math.ceil(p / 100 * len(values)) - 1)])


def aggregate(step, rows, note=""):
    """A step's repetitions -> the step (medians, spread as min..max, failures summed)."""
    first = rows[0]
    out = {"id": step.id, "kind": step.kind, "group": step.group, "class": step.cls, "baseline": step.baseline,
           "endpoint": step.endpoint, "path": step.path, "concurrency": step.concurrency, "cache": step.cache,
           "rate": _median(r["rate"] for r in rows), "settings": first["settings"],
           "sweep_value": step.sweep_value, "front": step.front, "reps": len(rows)}
    rps = [r["rps"] for r in rows if r["rps"] is not None]
    p99 = [r["p99_ms"] for r in rows if r["p99_ms"] is not None]
    out.update(rps=_median(rps), rps_min=min(rps, default=None), rps_max=max(rps, default=None))
    for k in LATENCY:
        out[k] = _median(r[k] for r in rows)
    out.update(p99_min=min(p99, default=None), p99_max=max(p99, default=None))
    out["requests"] = sum(r["requests"] or 0 for r in rows)
    out["failed_by_kind"] = {kind: sum(r[col] or 0 for r in rows) for kind, col in FAILURES.items()}
    out["failed"] = sum(out["failed_by_kind"].values())
    ratios = [r["cache_hit_ratio"] for r in rows]
    out["cache_hit_ratio"] = _median(ratios)
    groups = sorted({g for r in rows for g in r["resources"]})
    out["resources"] = {g: {f: _median(r["resources"].get(g, {}).get(f) for r in rows)
                            for f in ("cpu_s", "peak_rss_kb", "processes")} for g in groups}
    keys = sorted({k for r in rows for k in r["metrics_delta"]})
    out["metrics_delta"] = {k: _median(r["metrics_delta"].get(k, 0) for r in rows) for k in keys}
    # The worst repetition: the target is RSS back after every request.
    returns = [r.get("rss_return_kb") for r in rows if r.get("rss_return_kb") is not None]
    out["rss_return_kb"] = max(returns, default=None)
    # Cold waves only: their p99 in Nginx's own log, and the client's on the warm URL.
    for k in ("nginx_p99_ms", "warm_p99_ms"):
        out[k] = _median(r.get(k) for r in rows)
    out["note"] = note
    return out


def aggregate_idle(probes):
    """The idle probes (one per class and round) -> one entry per class: the median of the
    rounds' medians over the workers, the largest worker of any round."""
    out = []
    for cls in dict.fromkeys(p["class"] for p in probes):
        mine = [p for p in probes if p["class"] == cls]
        out.append({"class": cls, "reps": len(mine), "workers": max(len(p["workers"]) for p in mine),
                    "idle_worker_rss_kb": {"median": _median(p["median_kb"] for p in mine),
                                           "max": max(p["max_kb"] for p in mine)},
                    # Older runs have no Pss or private figures: None then.
                    "idle_worker_pss_kb": _median(p.get("pss_median_kb") for p in mine),
                    "idle_worker_private_kb": _median(p.get("private_median_kb") for p in mine),
                    "workers_with_both_backends": min(p["with_both_backends"] for p in mine),
                    "settings": mine[0]["settings"], "probes": mine})
    return out


def write(results, out_dir):
    """results.json and results.csv into out_dir (rewritten whole, so a run stopped at
    any point leaves both complete up to its last measurement)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out_dir / "results.json")
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in results["rows"]:
            s = r["settings"] or {}
            w.writerow([_csv(r.get(c, s.get(c))) for c in CSV_COLUMNS])


def _csv(v):
    return "" if v is None else v
