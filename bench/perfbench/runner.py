"""bench/perfbench/runner.py: runs a plan: configures the target phase by phase, warms
up, measures each step with the right tool while sampling the processes, and keeps
results.json/results.csv current after every measurement, so Ctrl-C or the time bound
stops the run with everything measured so far kept."""
import datetime
import itertools
import json
import resource
import statistics
import sys
import time

from . import load, procs, results
from .plan import COLD_WAVE_CATEGORY
from .target import StackTarget, TargetError, http_get

# Counters of /metrics whose change a step records (the histograms stay out).
METRIC_PREFIXES = ("perfcgi_pool_", "perfcgi_cache_requests_total", "perfcgi_worker_restarts_total",
                   "perfcgi_max_children_reached_total", "perfcgi_slow_requests_total",
                   "perfcgi_accepted_connections_total")
# /cached-data's Cache-Control max-age (SPEC.md), after which Nginx's entry has expired.
CACHED_DATA_MAX_AGE_S = 5
# Open-loop rates stay where the open-loop tool itself keeps up on one core.
OPENLOOP_MAX_RATE = 3000
# /memory-test requests sent one by one after a /memory-test step, each answer telling the
# serving worker's RSS before and after: does the memory go back after every request?
MEMORY_PROBES = 5
# The idle probe's burst: /cached-data opens each worker's Redis connection (a cache hit
# goes no further), /io-intensive?ms=0 its PostgreSQL one. The workers then settle this
# long before their RSS is read: past the stack's upstream keepalive_timeout (4 s, one
# under perfcgi's keepalive_timeout: deploy/nginx_timeouts.sh), by which Nginx has let go
# the connections the steps left open (a thousand after the 2,000-connection step), and
# past the second an event worker rests before it gives their memory back.
IDLE_BURST_MIX = {"/cached-data?category=7": 1, "/io-intensive?ms=0": 1}
IDLE_SETTLE_S = 5.5
# /cached-data's categories (SPEC.md: 0..99).
CATEGORIES = 100
# The stack's Nginx flushes its buffered access log every second (nginx/nginx.conf.template).
NGINX_LOG_FLUSH_S = 1.2


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def raise_fd_limit():
    """Thousands of connections need as many descriptors (wrk, and the servers it starts)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def metrics_delta(before, after):
    out = {}
    for k, v in after.items():
        if k.endswith("_total") or "_total{" in k:
            if k.startswith(METRIC_PREFIXES) and v - before.get(k, 0):
                out[k] = round(v - before.get(k, 0), 3)
    return out


class Run:
    def __init__(self, profile, phases, targets, out_dir, results_doc, log=print):
        self.p, self.phases, self.targets, self.out_dir = profile, phases, targets, out_dir
        self.doc = results_doc
        self.log = log
        self.rows = {}       # step id -> rows
        self.steps = {}      # step id -> Step
        self.settings = {}   # step id -> settings in force
        self.total = sum(len(ph.steps) for ph in phases) * profile.reps
        self.done = 0
        self.started = time.monotonic()
        self.deadline = self.started + profile.max_minutes * 60
        self.wave = itertools.count(1)
        self.idle = []       # one idle probe per class phase and round (_idle_probe)

    # --- progress ---
    def _eta(self):
        spent = time.monotonic() - self.started
        left = spent / self.done * (self.total - self.done) if self.done else None
        fmt = lambda s: f"{int(s) // 60}:{int(s) % 60:02d}"
        return f"{fmt(spent)} elapsed" + (f", ~{fmt(left)} left" if left is not None else "")

    def _say(self, step, row):
        failed = sum(row[c] or 0 for c in results.FAILURES.values())
        p99 = f"{row['p99_ms']:.1f} ms" if row["p99_ms"] is not None else "-"
        extra = f" at {row['rate']} req/s" if row["rate"] else ""
        self.log(f"[{self.done}/{self.total}] {step.id}{extra}: {row['rps'] or 0:.0f} req/s, p99 {p99}, "
                 f"{failed} failed ({self._eta()})")

    # --- the run ---
    def run(self):
        """Runs every round; returns normally, also when interrupted or out of time."""
        try:
            for rep in range(1, self.p.reps + 1):
                for phase in self.phases:
                    if not self.run_phase(phase, rep):
                        return
        except KeyboardInterrupt:
            self.doc["run"]["interrupted"] = True
            self.doc["run"]["notes"].append(f"interrupted (Ctrl-C or TERM) after {self.done} of {self.total} measurements")
            self.log("\ninterrupted: keeping what was measured so far")

    def run_phase(self, phase, rep):
        """Measures the phase's steps once; False when the time bound stopped it."""
        if not phase.steps:
            return True
        target = self.targets[phase.target]
        in_force = target.configure(phase.settings) if phase.target == "stack" else {}
        for step in phase.steps:
            if self._out_of_time():
                return False
            self._measure(target, step, rep, in_force)
        if phase.idle_probe and isinstance(target, StackTarget):
            if self._out_of_time():
                return False
            self._idle_probe(target, rep, in_force)
        return True

    def _out_of_time(self):
        if time.monotonic() <= self.deadline:
            return False
        self.doc["run"]["notes"].append(f"stopped by the time bound ({self.p.max_minutes} min) after "
                                        f"{self.done} of {self.total} measurements")
        self.doc["run"]["interrupted"] = True
        return True

    def _url(self, target, step):
        if step.baseline:
            return target.url(step)
        if step.kind == "front":  # the stack's perfcgi behind the baselines' minimal Nginx
            return self.targets["baseline"].front_url(step.cls) + step.path
        return target.base_url + step.path

    def _groups(self, target, step):
        """The processes sampled: a front step's Nginx is the baselines' one."""
        extra = self.targets["baseline"].groups() if step.kind == "front" else []
        return target.groups() + extra

    def _measure(self, target, step, rep, in_force):
        headers = () if step.cache == "on" else (load.NO_CACHE,)
        if isinstance(target, StackTarget):
            target.wait_idle()
        url = self._url(target, step)
        rate = None
        if step.kind == "cold_wave":
            # A fresh Nginx key (unknown parameters are ignored by the application) and
            # a forgotten Redis entry: the first second of a cache entry's life; or of its
            # life after it expired (created, then left for longer than its max-age).
            self._steady_workers(target, step)
            target.make_cold(COLD_WAVE_CATEGORY)
            wave = f"wave={next(self.wave)}-{int(time.time())}"
            url += "&" + wave
            if step.sweep_value == "expired":
                http_get(url, timeout=30)
                time.sleep(CACHED_DATA_MAX_AGE_S + 0.5)
            seconds = 1
            log_from = target.access_log_size()
        else:
            seconds = self.p.duration_s
            if self.p.warmup_s:
                load.wrk(url, step.concurrency, self.p.warmup_s, headers, mix=step.mix)
                if isinstance(target, StackTarget):
                    target.wait_idle()
        if step.kind == "openloop":
            rate = self._rate(step)
            if rate is None:
                return
        before = target.metrics()
        with procs.Sampler(self._groups(target, step)) as sampler:
            if step.kind == "openloop":
                figures = load.openloop(url, rate, seconds, headers)
            else:
                figures = load.wrk(url, step.concurrency, seconds, headers, mix=step.mix,
                                   count_cache=step.cache == "on")
        row = results.make_row(step, rep, rate, figures, sampler.result(),
                               metrics_delta(before, target.metrics()), in_force)
        if step.endpoint == "/memory-test" and step.kind == "matrix" and isinstance(target, StackTarget):
            row["rss_return_kb"] = self._rss_return(target, step)
        if step.kind == "cold_wave":
            row.update(self._wave_views(target, step, url, wave, log_from))
        self.rows.setdefault(step.id, []).append(row)
        self.steps[step.id] = step
        self.done += 1
        self._say(step, row)
        self.save()

    def _steady_workers(self, target, step):
        """Brings the stack's workers to where a running deployment's are before a cold
        wave: each has computed /cached-data from PostgreSQL (a burst over every other
        category with their Redis entries forgotten). The class's phase began with a
        restart, and its steps before the wave are answered from Redis or Nginx, so the
        wave's one computation would otherwise run on a fresh PostgreSQL connection: on
        this machine ~21 ms to connect and ~15 ms more for that backend's first scan of
        the table, a restart's cost rather than the cold key's."""
        if not isinstance(target, StackTarget):
            return
        others = [c for c in range(CATEGORIES) if c != COLD_WAVE_CATEGORY]
        target.make_cold(*others)
        load.wrk(target.base_url + "/cached-data", step.concurrency, 1, (load.NO_CACHE,),
                 mix={f"/cached-data?category={c}": 1 for c in others})
        target.wait_idle()

    def _wave_views(self, target, step, url, wave, log_from):
        """Two figures beside a cold wave's client p99: the wave in the stack's Nginx log
        (p99 of $request_time over its requests, each counted once, as answered), and the
        same client on the same URL once warm, for the same second."""
        views = {"nginx_p99_ms": None, "warm_p99_ms": None}
        if log_from is not None:
            time.sleep(NGINX_LOG_FLUSH_S)
            views["nginx_p99_ms"] = results.percentile(target.request_times_ms(wave, log_from), 99)
        if isinstance(target, StackTarget):
            target.wait_idle()
        views["warm_p99_ms"] = load.wrk(url, step.concurrency, 1, count_cache=True)["p99_ms"]
        return views

    def _rss_return(self, target, step):
        """The most a worker's RSS stayed above its level before the request, over
        MEMORY_PROBES requests sent one by one (KiB, from perfcgi's own answers); None
        when no answer told it."""
        target.wait_idle()
        deltas = []
        for _ in range(MEMORY_PROBES):
            status, body = http_get(target.base_url + step.path, timeout=30, headers={"X-No-Cache": "1"})
            try:
                answer = json.loads(body) if status == 200 else {}
                deltas.append(answer["rss_after_kb"] - answer["rss_before_kb"])
            except (ValueError, KeyError, TypeError):
                continue
        return max(deltas) if deltas else None

    def _idle_probe(self, target, rep, in_force):
        """Each worker's resident memory at rest with its backend connections open: a
        short burst reaches every worker (opening its Redis and PostgreSQL connections),
        then the workers rest, then /proc is read."""
        load.wrk(target.base_url + "/", self.p.reference, 1, (load.NO_CACHE,), mix=IDLE_BURST_MIX)
        target.wait_idle()
        time.sleep(IDLE_SETTLE_S)
        pids = target.workers()
        peers = procs.peer_ports(pids)
        workers = []
        for pid in pids:
            st, mem = procs.stat(pid), procs.memory(pid)
            if st is not None and mem is not None:
                workers.append({"pid": pid, "rss_kb": st[2], **mem,
                                "redis": peers[pid].count(target.redis_port),
                                "postgresql": peers[pid].count(target.pg_port)})
        if not workers:
            return
        rss = [w["rss_kb"] for w in workers]
        self.idle.append({"class": in_force.get("worker_class"), "rep": rep, "settings": in_force,
                          "median_kb": statistics.median(rss), "max_kb": max(rss),
                          "pss_median_kb": statistics.median(w["pss_kb"] for w in workers),
                          "private_median_kb": statistics.median(w["private_kb"] for w in workers),
                          "with_both_backends": sum(1 for w in workers if w["redis"] and w["postgresql"]),
                          "workers": workers})
        self.log(f"idle {in_force.get('worker_class')} workers: RSS median {statistics.median(rss):.0f} KiB, "
                 f"max {max(rss)} KiB over {len(rss)} ({self.idle[-1]['with_both_backends']} with both "
                 f"backend connections open); Pss median {self.idle[-1]['pss_median_kb']:.0f} KiB, "
                 f"private median {self.idle[-1]['private_median_kb']:.0f} KiB")
        self.save()

    def _rate(self, step):
        """The open-loop rate: a fraction of what the closed loop reached for the same
        class and endpoint in this run (measured earlier in the same phase)."""
        ref = [r["rps"] for sid, rows in self.rows.items() for r in rows
               if self.steps[sid].kind == "matrix" and self.steps[sid].cls == step.cls
               and self.steps[sid].endpoint == step.endpoint and self.steps[sid].concurrency == step.concurrency]
        if not ref:
            self.log(f"skipping {step.id}: no closed-loop figure to derive its rate from")
            return None
        return max(1, min(OPENLOOP_MAX_RATE, round(sorted(ref)[len(ref) // 2] * step.rate_fraction)))

    def save(self):
        self.doc["steps"] = [results.aggregate(self.steps[sid], rows) for sid, rows in self.rows.items()]
        self.doc["idle_workers"] = results.aggregate_idle(self.idle)
        self.doc["rows"] = [r for rows in self.rows.values() for r in rows]
        self.doc["run"]["plan"]["steps_done"] = len(self.rows)
        self.doc["run"]["finished"] = now_iso()
        self.doc["run"]["duration_s"] = round(time.monotonic() - self.started, 1)
        results.write(self.doc, self.out_dir)


def stop_targets(targets):
    for t in targets.values():
        try:
            t.down()
        except (TargetError, OSError) as e:
            print(f"bench: stopping {t.kind}: {e}", file=sys.stderr)
