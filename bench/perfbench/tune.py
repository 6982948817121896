"""bench/perfbench/tune.py: the tuner. For a mix of endpoints (weights) and a p99 target
it searches perfcgi's settings one parameter at a time, as the tuning chapter tells its
reader to (class, then workers, then threads, then the pool), measuring every candidate
side by side (rounds: A B C, A B C ...), and writes the winner as perfcgi.tuned.ini,
loadable with `perfcgi -c`, and the matching Nginx upstream, each setting commented
with the measurement that chose it."""
import datetime
import os
import resource
import subprocess

from . import plan, results

# PostgreSQL connections kept free for everything that is not perfcgi's pools
# (psql, the readiness probe, maintenance).
PG_RESERVE = 10


def parse_mix(text):
    """'/=0.5,/io-intensive?ms=20=0.3' -> {path: weight}; endpoints get SPEC's defaults."""
    mix = {}
    for item in text.split(","):
        path, sep, weight = item.strip().rpartition("=")
        try:
            w = float(weight)
        except ValueError:
            w = -1
        if not sep or not path.startswith("/") or w <= 0:
            raise ValueError(f"--mix: '{item}' is not PATH=WEIGHT with a positive weight")
        mix[plan.PATHS.get(path, path)] = mix.get(plan.PATHS.get(path, path), 0) + w
    total = sum(mix.values())
    return {p: round(w / total, 4) for p, w in mix.items()}


def score(step, p99_target):
    """Sort key, higher is better: steps that meet the target and fail nothing first, by
    req/s; then the others, by lowest p99."""
    ok = step["failed"] == 0 and step["p99_ms"] is not None and step["p99_ms"] <= p99_target
    return (1, step["rps"] or 0) if ok else (0, -(step["p99_ms"] or float("inf")))


def cheapest_first(ranked, p99_target, cost):
    """ranked [(step, settings)], best first -> the same with the cheapest candidate that
    meets the target and whose runs overlap the best's moved to the front."""
    top = ranked[0][0]
    if score(top, p99_target)[0] == 0:
        return ranked
    alike = [se for se in ranked if score(se[0], p99_target)[0] == 1 and se[0]["rps_max"] >= top["rps_min"]]
    pick = min(alike, key=lambda se: cost(se[1]))
    return [pick] + [se for se in ranked if se is not pick]


class Tuner:
    def __init__(self, run, target, mix, p99_target, concurrency, reps, classes, pg_max_connections, log=print):
        self.run, self.target, self.mix = run, target, mix
        self.p99, self.conc, self.reps, self.classes = p99_target, concurrency, reps, classes
        self.pg_max = pg_max_connections
        self.log = log
        self.chosen = {}       # setting -> value
        self.why = {}          # setting -> comment lines
        self.cores = os.cpu_count() or 1

    def _stage(self, name, candidates, cost=None):
        """Measures each candidate (a settings dict added to the chosen ones) reps times,
        interleaved; keeps the best, or, when cost (settings -> a number: processes,
        connections) is given, the cheapest whose runs overlap the best's (a difference
        the runs cannot tell apart is not worth more memory or connections)."""
        phases = []
        for label, extra in candidates:
            settings = {**self.chosen, **extra}
            step = plan.Step("tune", "mix", self.conc, cls=settings.get("worker_class"), group=name,
                             sweep_value=label, path="/", mix=self.mix)
            phases.append(plan.Phase("stack", settings, [step], label=f"{name} = {label}"))
        self.run.total += len(phases) * self.reps
        for rep in range(1, self.reps + 1):
            for ph in phases:
                if not self.run.run_phase(ph, rep):
                    raise KeyboardInterrupt
        ranked = sorted(((results.aggregate(ph.steps[0], self.run.rows[ph.steps[0].id]), extra)
                         for ph, (label, extra) in zip(phases, candidates)),
                        key=lambda se: score(se[0], self.p99), reverse=True)
        cheaper = ""
        if cost and self.reps > 1:
            top = ranked[0][0]
            ranked = cheapest_first(ranked, self.p99, cost)
            if ranked[0][0] is not top:
                cheaper = (f" -- chosen over {top['sweep_value']} ({top['rps']:,.0f} req/s): the runs overlap, "
                           f"and it costs less")
        best, extra = ranked[0]
        self.chosen.update(extra)
        others = "; ".join(f"{s['sweep_value']}: {s['rps']:,.0f} req/s, p99 {s['p99_ms']:.0f} ms"
                           + (f", {s['failed']} failed" if s["failed"] else "") for s, _ in ranked[1:])
        spread = f" (runs {best['rps_min']:,.0f}..{best['rps_max']:,.0f})" if best["reps"] > 1 else ""
        verdict = f"{best['rps']:,.0f} req/s{spread}, p99 {best['p99_ms']:.0f} ms"
        second = ranked[1][0] if len(ranked) > 1 else None
        if score(best, self.p99)[0] == 0:
            verdict += f" -- no candidate met p99 <= {self.p99:g} ms: the lowest p99 won"
        elif cheaper:
            verdict += cheaper
        elif second and score(second, self.p99)[0] == 1 and best["rps_min"] <= second["rps_max"]:
            verdict += (f" -- {second['sweep_value']} is within the spread of the runs: no significant difference"
                        if best["reps"] > 1 else f" -- one run each: {second['sweep_value']} is close, re-measure")
        self.why[next(iter(extra))] = [f"{name} = {best['sweep_value']}: {verdict}"] + \
            ([f"  against {others}"] if others else [])
        self.log(f"tune: {name} = {best['sweep_value']} ({verdict})")
        return [s for s, _ in ranked]

    def pg_connections(self, size=None, overflow=None):
        """The PostgreSQL connections the chosen settings may open at most: a worker
        holds one per request it runs at once, up to its pool's size and overflow."""
        eff = self.target.effective(self.chosen)
        size = eff["pool_size"] if size is None else size
        overflow = eff["pool_max_overflow"] if overflow is None else overflow
        cls = eff["worker_class"]
        at_once = 1 if cls == "sync" else eff["threads"] if cls == "thread" else eff["worker_connections"]
        return eff["workers"] * min(at_once, size + overflow)

    def _pool_fits(self, size, overflow):
        return self.pg_max is None or self.pg_connections(size, overflow) <= self.pg_max - PG_RESERVE

    def search(self, quick=False):
        c = self.cores
        self._stage("worker_class", [(cls, {"worker_class": cls}) for cls in self.classes])
        cls = self.chosen["worker_class"]
        counts = sorted({c, 2 * c + 1, 4 * c} if quick else {c, 2 * c + 1, 4 * c, 8 * c})
        self._stage("workers", [(w, {"workers": w}) for w in counts], cost=lambda e: e["workers"])
        if cls == "thread" and not quick:
            self._stage("threads", [(t, {"threads": t}) for t in (4, 16, 32)], cost=lambda e: e["threads"])
        if cls == "sync":
            return  # one request at a time: a sync worker holds one PostgreSQL connection at most
        pools = [(5, 10), (5, 0), (10, 0)] if quick else [(5, 10), (5, 0), (10, 0), (20, 0), (40, 0)]
        fitting = [(s, o) for s, o in pools if self._pool_fits(s, o)]
        if fitting:
            self._stage("pool", [(f"{s}+{o}", {"pool_size": s, "pool_max_overflow": o}) for s, o in fitting],
                        cost=lambda e: e["pool_size"] + e["pool_max_overflow"])

    # --- the files ---
    def ini_text(self, machine, plan_info):
        eff = self.target.effective(self.chosen)
        pool = (eff["pool_size"], eff["pool_max_overflow"])
        workers = eff["workers"]
        mix = ", ".join(f"{p} {w * 100:.0f}%" for p, w in self.mix.items())
        lines = [
            "# perfcgi.tuned.ini: written by `make tune` (bench/engine.py tune) on "
            + datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") + ".",
            f"# For the mix {mix} at {self.conc} connections through Nginx, p99 target {self.p99:g} ms,",
            f"# on {machine['cores']} cores, {machine['memory_mib']} MiB, {machine['cpu_model']}, kernel {machine['kernel']}.",
            f"# Each candidate: {plan_info['warmup_s']:g} s warm-up, then {self.reps} run(s) of "
            f"{plan_info['duration_s']:g} s, interleaved; figures are medians (runs min..max).",
            "# Load it with `perfcgi -c perfcgi.tuned.ini` (your bind, backends and paths as flags,",
            "# variables or more keys), or put these keys into the file a running master was started",
            "# with and send it HUP: every worker is replaced, no request fails.",
            "# Re-measure on the machine that serves: these figures are this machine's.",
            "",
            "[perfcgi]",
        ]
        for key in ("worker_class", "workers", "threads", "pool_size", "pool_max_overflow"):
            if key not in self.chosen:
                continue
            if key in self.why:  # a new group: settings chosen together follow their comment
                lines += ["", *(f"# {w}" for w in self.why[key])]
            lines.append(f"{key} = {self.chosen[key]}")
        lines.append("")
        lines += [f"# Capacity: {workers} workers x (pool_size {pool[0]} + pool_max_overflow {pool[1]}, and one"
                  f" connection per request a worker runs at once) = {self.pg_connections()} PostgreSQL connections"
                  " at most"
                  + (f", of max_connections = {self.pg_max} ({PG_RESERVE} kept for others)." if self.pg_max else "."),
                  f"# File descriptors: {self.fd_note()}"]
        return "\n".join(lines) + "\n"

    def fd_note(self):
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        eff = self.target.effective(self.chosen)
        cls = eff["worker_class"]
        per_worker = 1 if cls == "sync" else eff["threads"] if cls == "thread" else eff["worker_connections"]
        need = per_worker + eff["pool_size"] + eff["pool_max_overflow"] + 16
        what = f"worker_connections {per_worker}" if cls == "event" else "connections"
        verdict = "fits" if need <= soft else "does NOT fit: raise LimitNOFILE / ulimit -n"
        return f"a worker needs about {need} ({what}, pool, logs, sockets); the limit here is {soft}: {verdict}."

    def nginx_text(self):
        cls = self.chosen["worker_class"]
        head = [f"# perfcgi.tuned.nginx.conf: the upstream for perfcgi.tuned.ini ({cls} workers), written with it.",
                "# Replace perfcgi's upstream block with this one; the server address is yours."]
        if cls == "event":
            keep = max(16, min(1024, self.conc))
            return "\n".join(head + [
                f"# Event workers multiplex kept-alive FastCGI connections: Nginx keeps up to {keep} idle per",
                "# worker process (the load measured had that many at once), for less than perfcgi's",
                "# keepalive_timeout (5 s), and gives every connection up after 10 s so a retiring worker drains.",
                "upstream perfcgi_app {",
                "    server unix:/run/perfcgi/perfcgi.sock max_fails=0;",
                f"    keepalive {keep};",
                "    keepalive_timeout 4s;",
                "    keepalive_time 10s;",
                "}",
                "# and in the location that passes to it:",
                "#     fastcgi_keep_conn on;",
            ]) + "\n"
        return "\n".join(head + [
            f"# {cls} workers serve one connection at a time per {'thread' if cls == 'thread' else 'process'}:",
            "# no kept-alive connections (a kept one would hold a worker between requests).",
            "upstream perfcgi_app {",
            "    server unix:/run/perfcgi/perfcgi.sock max_fails=0;",
            "}",
            "# and in the location that passes to it:",
            "#     fastcgi_keep_conn off;",
        ]) + "\n"


def pg_max_connections(target):
    """max_connections of the stack's PostgreSQL, or None."""
    try:
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(target.pg_port), "-U", "perfcgi", "-d", "perfcgi",
                              "-Atc", "SHOW max_connections"], capture_output=True, text=True, timeout=10)
        return int(out.stdout.strip())
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
