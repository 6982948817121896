#!/usr/bin/python3
"""bench/engine.py: perfcgi's benchmark engine, behind `make bench`, `make bench-quick`,
`make tune` and bench/benchmark_test.sh.

  bench/engine.py run [--profile quick|full|chapter] [--url BASE] [options]
  bench/engine.py tune --mix '/=0.5,/cached-data=0.3,/io-intensive=0.2' --p99 100
  bench/engine.py report RUN_DIR      (recommendations and report again, from results.json)

Run with Debian's /usr/bin/python3 (the report's charts need its python3-matplotlib)."""
import argparse
import json
import datetime
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perfbench import machine, plan, runner, target  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def csv_list(conv=str):
    return lambda text: tuple(conv(x.strip()) for x in text.split(",") if x.strip())


def run_args(sub):
    r = sub.add_parser("run", help="measure: the matrix, the sweeps, the baselines; then the report")
    r.add_argument("--profile", choices=("quick", "full", "chapter"), default="full")
    r.add_argument("--url", help="measure the server at this base URL only (start and change nothing)")
    r.add_argument("--classes", type=csv_list(), help="worker classes, e.g. sync,event")
    r.add_argument("--endpoints", type=csv_list(), help="endpoints, e.g. /,/cpu-intensive")
    r.add_argument("--concurrency", type=csv_list(int), help="connection counts, e.g. 16,64,256")
    r.add_argument("--duration", type=float, help="seconds per measurement")
    r.add_argument("--warmup", type=float, help="seconds of warm-up before each measurement")
    r.add_argument("--reps", type=int, help="repetitions (rounds over the whole plan)")
    r.add_argument("--max-minutes", type=float, help="time bound of the whole run")
    r.add_argument("--p99-bound", type=float, default=250.0, help="p99 (ms) a recommendation must meet")
    r.add_argument("--out", type=Path, help="run folder (default bench/results/<run id>)")
    r.add_argument("--no-baselines", action="store_true", help="leave out the calibration baselines")
    r.add_argument("--no-sweeps", action="store_true", help="leave out the one-parameter sweeps")
    r.add_argument("--no-report", action="store_true", help="results only (CSV and JSON)")
    r.add_argument("--ab", action="store_true", help="print each step as ab prints a run")


def tune_args(sub):
    t = sub.add_parser("tune", help="search the settings for a mix of endpoints; write perfcgi.tuned.ini")
    t.add_argument("--mix", required=True, help="PATH=WEIGHT,... e.g. '/=0.5,/cached-data=0.3,/io-intensive=0.2'")
    t.add_argument("--p99", type=float, default=250.0, help="the p99 target in ms (default 250)")
    t.add_argument("--concurrency", type=int, default=64, help="connections of the load (default 64)")
    t.add_argument("--classes", type=csv_list(), default=plan.CLASSES, help="worker classes to try")
    t.add_argument("--reps", type=int, help="runs per candidate (default 3; --quick 1)")
    t.add_argument("--duration", type=float, help="seconds per run (default 4; --quick 1)")
    t.add_argument("--quick", action="store_true", help="fewer candidates, one short run each (a smoke test)")
    t.add_argument("--max-minutes", type=float, default=30)
    t.add_argument("--out", type=Path, default=Path("perfcgi.tuned.ini"))
    t.add_argument("--nginx-out", type=Path, help="default: next to --out, perfcgi.tuned.nginx.conf")
    t.add_argument("--measurements", type=Path, help="folder of the search's results (default bench/results/<id>)")


def apply_overrides(p, a):
    if a.classes:
        bad = set(a.classes) - set(plan.CLASSES)
        if bad:
            sys.exit(f"bench: unknown worker class {', '.join(sorted(bad))} (sync, thread, event)")
        p.classes = a.classes
        p.openloop_classes = tuple(c for c in p.openloop_classes if c in a.classes) or a.classes[:1]
    if a.endpoints:
        bad = set(a.endpoints) - set(plan.PATHS)
        if bad:
            sys.exit(f"bench: unknown endpoint {', '.join(sorted(bad))} ({', '.join(plan.PATHS)})")
        p.endpoints = a.endpoints
    if a.concurrency:
        if min(a.concurrency) < 1:
            sys.exit("bench: --concurrency takes positive connection counts")
        p.concurrency, p.reference = a.concurrency, a.concurrency[len(a.concurrency) // 2]
        p.wide_endpoints = ()
    for name in ("duration", "warmup", "reps", "max_minutes"):
        v = getattr(a, name)
        if v is not None:
            if v < 0 or (name != "warmup" and v == 0):
                sys.exit(f"bench: --{name.replace('_', '-')} must be positive")
            setattr(p, {"duration": "duration_s", "warmup": "warmup_s"}.get(name, name), v)
    if a.no_baselines:
        p.baselines = False
    if a.no_sweeps:
        p.sweeps = {}
    if a.url:
        p.baselines = False
        p.sweeps = {}
        p.openloop = {}


def served(base_url, endpoints):
    """The endpoints the target serves (a 404 means it does not)."""
    out = []
    for ep in endpoints:
        status, _ = target.http_get(base_url + plan.PATHS[ep], timeout=30, headers={"X-No-Cache": "1"})
        if status not in (0, 404):
            out.append(ep)
    return out


def stop_on_signals():
    """Ctrl-C and TERM stop a run with what it measured kept (also when started in the
    background, where the shell hands it SIGINT ignored); a second one during the
    teardown is ignored (see the finally clauses)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def new_doc(run_id, p, main, p99_bound, planned):
    """results.json before the first measurement (the format: bench/README.md)."""
    return {"schema": 1,
            "run": {"id": run_id, "profile": p.name, "started": runner.now_iso(), "finished": None,
                    "duration_s": 0, "interrupted": False, "target": main.kind, "base_url": main.base_url,
                    "plan": {"warmup_s": p.warmup_s, "duration_s": p.duration_s, "reps": p.reps,
                             "p99_bound_ms": p99_bound, "reference_concurrency": p.reference,
                             "max_minutes": p.max_minutes, "steps_planned": planned, "steps_done": 0},
                    "notes": []},
            "machine": machine.describe(main.versions()), "steps": [], "rows": [], "idle_workers": [],
            "recommendations": {}}


def print_ab(steps):
    """Each step in ab's words, as the tuning chapter's benchmark_test.sh prints them."""
    for s in steps:
        rps, conc = s["rps"] or 0, s["concurrency"]
        who = f"{s['class']} workers" if s["class"] not in (None, "url") else (s["baseline"] or "server")
        how = f"concurrency {conc}" + (", cache on" if s["cache"] == "on" else "")
        how += ", behind the minimal Nginx" if s["kind"] == "front" else ""
        how += f", open loop at {s['rate']} req/s" if s["rate"] else ""
        print(f"\n== {who}: {s['path']}  ({how})")
        print(f"Requests per second:    {rps:.2f} [#/sec] (mean)")
        if rps:
            print(f"Time per request:       {conc * 1000 / rps:.3f} [ms] (mean)")
            print(f"Time per request:       {1000 / rps:.3f} [ms] (mean, across all concurrent requests)")
        print(f"Failed requests:        {s['failed']}"
              + (f"   ({', '.join(f'{k} {v}' for k, v in s['failed_by_kind'].items() if v)})" if s["failed"] else ""))
        print(f"Latency p50, p99:       {s['p50_ms']} ms, {s['p99_ms']} ms")


def finish(out_dir, doc):
    """Recommendations from the run's own figures, then the report."""
    from perfbench import recommend, report, results
    doc["recommendations"] = recommend.recommend(doc["steps"], doc["run"]["plan"]["p99_bound_ms"],
                                                 doc["machine"]["cores"])
    results.write(doc, out_dir)
    report.write_report(doc, out_dir)


def cmd_run(a):
    p = plan.profiles()[a.profile]
    apply_overrides(p, a)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%S")
    run_id = f"{stamp}-{'url' if a.url else p.name}"
    out_dir = a.out or RESULTS / run_id
    runner.raise_fd_limit()
    targets = {}
    stop_on_signals()
    try:
        main = target.UrlTarget(a.url) if a.url else target.StackTarget()
        targets[main.kind] = main
        print(f"bench: {'measuring ' + a.url if a.url else 'starting a private stack'} ...", flush=True)
        main.up()
        if p.baselines:
            # The minimal Nginx fronts the stack's perfcgi too (the "front" steps).
            targets["baseline"] = target.BaselineTarget(main.app_socket() if main.kind == "stack" else None)
            targets["baseline"].up()
        eps = served(main.base_url, p.endpoints)
        missing = [e for e in p.endpoints if e not in eps]
        phases = plan.build(p, eps, main.kind)
        doc = new_doc(run_id, p, main, a.p99_bound, sum(len(ph.steps) for ph in phases))
        doc["run"]["notes"] += [f"{e} is not served by this target (404): left out" for e in missing]
        run = runner.Run(p, phases, targets, out_dir, doc)
        print(f"bench: {run.total} measurements in {len(phases)} configurations, {p.reps} round(s); "
              f"results in {out_dir}", flush=True)
        run.run()
        run.save()
    except (target.TargetError, runner.load.LoadError) as e:
        sys.exit(f"bench: {e}")
    except KeyboardInterrupt:
        print("\nbench: interrupted before the first measurement", file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        runner.stop_targets(targets)
    if a.ab:
        print_ab(doc["steps"])
    if not a.no_report:
        finish(out_dir, doc)
    print(f"\nbench: {doc['run']['plan']['steps_done']} steps measured in {doc['run']['duration_s']:.0f} s"
          f"{' (interrupted)' if doc['run']['interrupted'] else ''}: {out_dir}/")
    return 1 if doc["run"]["interrupted"] else 0


def cmd_tune(a):
    from perfbench import tune
    try:
        mix = tune.parse_mix(a.mix)
    except ValueError as e:
        sys.exit(f"bench: {e}")
    if set(a.classes) - set(plan.CLASSES) or a.p99 <= 0 or a.concurrency < 1:
        sys.exit("bench: tune takes classes among sync, thread, event, a positive --p99 and --concurrency")
    p = plan.Profile("tune", warmup_s=1, duration_s=a.duration or (1 if a.quick else 4),
                     reps=a.reps or (1 if a.quick else 3), max_minutes=a.max_minutes, reference=a.concurrency)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%S")
    out_dir = a.measurements or RESULTS / f"{stamp}-tune"
    nginx_out = a.nginx_out or a.out.with_name(a.out.name.removesuffix(".ini") + ".nginx.conf")
    runner.raise_fd_limit()
    stop_on_signals()
    stack = target.StackTarget()
    targets = {"stack": stack}
    try:
        print("bench: starting a private stack to tune on ...", flush=True)
        stack.up()
        for path in mix:
            if target.http_get(stack.base_url + path, timeout=30, headers={"X-No-Cache": "1"})[0] != 200:
                sys.exit(f"bench: {path} does not answer 200 on perfcgi: check the mix")
        doc = new_doc(f"{stamp}-tune", p, stack, a.p99, 0)
        doc["run"]["mix"] = mix
        run = runner.Run(p, [], targets, out_dir, doc)
        tuner = tune.Tuner(run, stack, mix, a.p99, a.concurrency, p.reps, a.classes, tune.pg_max_connections(stack))
        tuner.search(quick=a.quick)
    except (target.TargetError, runner.load.LoadError) as e:
        sys.exit(f"bench: {e}")
    except KeyboardInterrupt:
        sys.exit("\nbench: tuning interrupted: nothing written")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        runner.stop_targets(targets)
    run.save()
    for f in (a.out, nginx_out):
        f.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(tuner.ini_text(doc["machine"], doc["run"]["plan"]))
    nginx_out.write_text(tuner.nginx_text())
    print(f"\nbench: wrote {a.out} and {nginx_out} (the measurements: {out_dir}/)\n")
    print(a.out.read_text())
    return 0


def main():
    ap = argparse.ArgumentParser(prog="bench/engine.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run_args(sub)
    tune_args(sub)
    rep = sub.add_parser("report", help="recommendations and report again from RUN_DIR/results.json")
    rep.add_argument("run_dir", type=Path)
    a = ap.parse_args()
    if a.cmd == "run":
        return cmd_run(a)
    if a.cmd == "tune":
        return cmd_tune(a)
    if a.cmd == "report":
        doc = json.loads((a.run_dir / "results.json").read_text())
        finish(a.run_dir, doc)
        return 0


if __name__ == "__main__":
    sys.exit(main())
