# The report's Targets section: each performance target perfcgi holds itself to, its figure computed from this run's steps, met or not.
"""Every figure here is a ratio or a value taken from the run's own steps (and idle
probes); only the goals are fixed, as perfcgi sets them. A target whose steps the run
did not measure says so instead of guessing."""
from perfbench.report_charts import fmt, reference_concurrency
from perfbench.report_render import Heading, Paragraph, Table

# The goals: ratios are "at least", the others "at most".
MEMORY_PEER_RPS = 1470         # /memory-test: the best Python peer's figure (Gunicorn gevent, 4 workers, c64) ...
MEMORY_PEER_GOAL = 1.5         # ... to be passed by this much, the memory still returned
RSS_RETURN_GOAL_KB = 1024      # a worker's RSS back within 1 MiB after every request
SYNC_LOOP_GOAL = 0.95          # `/`, sync against the bare libfcgi loop
EVENT_RESPONDER_GOAL = 0.9     # `/`, event against the bare kept-alive responder
STACK_NGINX_GOAL = 0.95        # the stack's Nginx against the minimal one, same perfcgi
COLD_WAVE_P99_GOAL_MS = 50     # the first second of a cold key through the cache
HIGH_CONCURRENCY = 2000        # `/` at this many connections, event class ...
HIGH_CONCURRENCY_GOAL = 0.8    # ... against the reference level
IDLE_RSS_GOAL_KB = 4096        # an idle worker with both backend connections open

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"
SOCKET_ERRORS = ("connect", "read", "write", "timeout")


def _ratio(a, b):
    return a / b if a is not None and b else None


def _times(ratio):
    """A ratio as "0.93x"; a small one keeps three significant digits (not "0.00x")."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.3g}x"


def _at_least(value, goal):
    return NOT_MEASURED if value is None else MET if value >= goal else NOT_MET


def _at_most(value, goal):
    return NOT_MEASURED if value is None else MET if value <= goal else NOT_MET


def _find(steps, **equal):
    return next((s for s in steps if all(s.get(k) == v for k, v in equal.items())), None)


def _spread(step, versus):
    """The ratio's range over the repetitions (lowest of one side over highest of the
    other, and the reverse), or "" after a single repetition."""
    if min(step.get("reps") or 1, versus.get("reps") or 1) < 2:
        return ""
    low, high = _ratio(step.get("rps_min"), versus.get("rps_max")), _ratio(step.get("rps_max"), versus.get("rps_min"))
    return "" if low is None or high is None else f", repetitions {_times(low)}..{_times(high)}"


def _rps_ratio_line(what, step, versus, goal, versus_name):
    ratio = _ratio(step.get("rps"), (versus or {}).get("rps"))
    measured = "–" if ratio is None else (f"{_times(ratio)} ({fmt(step.get('rps'))} / "
                                          f"{fmt(versus.get('rps'))} req/s{_spread(step, versus)})")
    return [what, measured, f"≥ {goal}x {versus_name}", _at_least(ratio, goal)]


def memory_lines(steps, conc):
    """/memory-test against the best peer's figure, with two baselines beside it: the
    kept-block one serves the peer's way (no page faults, RSS never back) at C's speed, the
    ceiling of keeping the block; the fresh-block one does perfcgi's own work (a fresh
    block faulted in and returned each time) in a bare libfcgi loop, the bound of that work
    on this machine through the same Nginx."""
    goal_rps = MEMORY_PEER_RPS * MEMORY_PEER_GOAL
    lines = []
    for step in (s for s in steps if s.get("kind") == "matrix" and s.get("endpoint") == "/memory-test"
                 and s.get("cache") == "bypass" and s.get("concurrency") == conc):
        beside = ""
        for name, what in (("memory-fresh", "fresh-block"), ("memory-reuse", "kept-block")):
            baseline = _find(steps, kind="baseline", baseline=name, concurrency=conc)
            ratio = _ratio(step.get("rps"), (baseline or {}).get("rps"))
            if ratio is not None:
                beside += f"; {_times(ratio)} the {what} baseline's {fmt(baseline.get('rps'))}"
        lines.append([f"`{step['path']}`, {step['class']}, c{conc}", f"{fmt(step.get('rps'))} req/s{beside}",
                      f"≥ {MEMORY_PEER_GOAL}x the best peer's {fmt(MEMORY_PEER_RPS)} = {fmt(goal_rps)} req/s",
                      _at_least(step.get("rps"), goal_rps)])
        kb = step.get("rss_return_kb")
        lines.append([f"`/memory-test` RSS after the request, {step['class']}",
                      "–" if kb is None else f"{fmt(kb)} KiB above before (worst request)",
                      f"≤ {RSS_RETURN_GOAL_KB} KiB", _at_most(kb, RSS_RETURN_GOAL_KB)])
    if not lines:
        lines.append(["`/memory-test?mb=10`", "–", f"≥ {fmt(goal_rps)} req/s", NOT_MEASURED])
    return lines


def overhead_lines(steps, conc):
    """`/` behind the minimal Nginx against the bare responders behind it; and the stack's
    Nginx against the minimal one, in front of the same perfcgi."""
    lines = []
    for cls, name, goal in (("sync", "libfcgi-loop", SYNC_LOOP_GOAL),
                            ("event", "nonblocking-fcgi", EVENT_RESPONDER_GOAL)):
        front = _find(steps, kind="front", endpoint="/", concurrency=conc, **{"class": cls})
        base = _find(steps, kind="baseline", baseline=name, endpoint="/", concurrency=conc)
        if front:
            lines.append(_rps_ratio_line(f"`/`, {cls} behind the minimal Nginx, c{conc}", front, base, goal,
                                         f"baseline {name}"))
        else:
            lines.append([f"`/`, {cls} against baseline {name}", "–", f"≥ {goal}x", NOT_MEASURED])
    for front in (s for s in steps if s.get("kind") == "front" and s.get("concurrency") == conc):
        stack = _find(steps, kind="matrix", cache="bypass", endpoint=front["endpoint"], concurrency=conc,
                      **{"class": front.get("class")})
        if stack:
            lines.append(_rps_ratio_line(f"the stack's Nginx, `{front['endpoint']}`, {front['class']}, c{conc}",
                                         stack, front, STACK_NGINX_GOAL, "the minimal Nginx"))
    if not any(s.get("kind") == "front" for s in steps):
        lines.append(["the stack's Nginx against the minimal one", "–", f"≥ {STACK_NGINX_GOAL}x", NOT_MEASURED])
    return lines


def cold_wave_lines(steps, conc):
    """Judged on the client's p99, with two figures beside it that tell where it comes
    from: the same client on the same URL once warm, for the same second, and the wave
    in the stack's Nginx log ($request_time, requests as they were answered). wrk corrects
    for coordinated omission: a request that waited longer than twice the mean interval
    between a connection's requests is counted with the requests a steady client would
    have sent meanwhile, so the few dozen first requests that wait on the cold entry can
    carry the client's p99 while Nginx's own stays low."""
    waves = [s for s in steps if s.get("kind") == "cold_wave" and s.get("concurrency") == conc]
    lines = []
    for w in waves:
        what = f"cold-key wave p99, {w['class']}, {w.get('sweep_value') or 'created'}, c{conc}"
        beside = []
        if w.get("warm_p99_ms") is not None:
            beside.append(f"warm, the same second: {fmt(w['warm_p99_ms'])} ms")
        nginx = w.get("nginx_p99_ms")
        if nginx is not None:  # Nginx logs whole milliseconds
            beside.append("in Nginx's log: " + ("under 1 ms" if nginx < 1 else f"{fmt(nginx)} ms"))
        measured = f"{fmt(w.get('p99_ms'))} ms" + (f" ({'; '.join(beside)})" if beside else "")
        lines.append([what, measured, f"≤ {COLD_WAVE_P99_GOAL_MS} ms", _at_most(w.get("p99_ms"), COLD_WAVE_P99_GOAL_MS)])
    return lines or [["cold-key wave p99", "–", f"≤ {COLD_WAVE_P99_GOAL_MS} ms", NOT_MEASURED]]


def high_concurrency_lines(steps, conc):
    """The event class at HIGH_CONCURRENCY against the reference level, with two ratios
    beside it: the same perfcgi behind the minimal Nginx (what is left once the stack's
    Nginx is taken out), and the bare kept-alive responder behind it (what the minimal
    Nginx and the client lose to that many connections on this machine, with no perfcgi
    at all)."""
    what = f"`/` at {HIGH_CONCURRENCY:,} connections against {conc}, event"
    high = _find(steps, kind="matrix", cache="bypass", endpoint="/", concurrency=HIGH_CONCURRENCY,
                 **{"class": "event"})
    low = _find(steps, kind="matrix", cache="bypass", endpoint="/", concurrency=conc, **{"class": "event"})
    goal = f"≥ {HIGH_CONCURRENCY_GOAL}x, 0 socket errors"
    if not high or not low:
        return [[what, "– (the full profile measures it)", goal, NOT_MEASURED]]
    ratio = _ratio(high.get("rps"), low.get("rps"))
    kinds = high.get("failed_by_kind") or {}
    errors = sum(kinds.get(k) or 0 for k in SOCKET_ERRORS)
    verdict = _at_least(ratio, HIGH_CONCURRENCY_GOAL)
    if verdict == MET and errors:
        verdict = NOT_MET
    measured = (f"{'–' if ratio is None else _times(ratio)} ({fmt(high.get('rps'))} / {fmt(low.get('rps'))} "
                f"req/s), {errors} socket errors, {kinds.get('non2xx') or 0} non-2xx, p99 {fmt(high.get('p99_ms'))} ms")
    front = [(_find(steps, kind="front", endpoint="/", concurrency=c, **{"class": "event"}) or {}).get("rps")
             for c in (HIGH_CONCURRENCY, conc)]
    bare = [(_find(steps, kind="baseline", baseline="nonblocking-fcgi", endpoint="/", concurrency=c) or {}).get("rps")
            for c in (HIGH_CONCURRENCY, conc)]
    if _ratio(*front) is not None:
        measured += f"; behind the minimal Nginx: {_times(_ratio(*front))}"
        if bare[0]:  # the two side by side at the high level: perfcgi's own cost there
            measured += f" ({fmt(front[0])} req/s, {_times(_ratio(front[0], bare[0]))} the bare responder's)"
    if _ratio(*bare) is not None:
        measured += f"; the bare responder's own: {_times(_ratio(*bare))}"
    return [[what, measured, goal, verdict]]


def idle_lines(idle):
    lines = []
    for entry in idle:
        rss = entry.get("idle_worker_rss_kb") or {}
        both = entry.get("workers_with_both_backends")
        measured = (f"max {fmt(rss.get('max'))} KiB, median {fmt(rss.get('median'))} KiB over "
                    f"{entry.get('workers')} workers ({both} with both backend connections open)")
        if entry.get("idle_worker_pss_kb") is not None:
            # RSS counts the shared libraries' pages in every process that maps them.
            measured += (f"; Pss median {fmt(entry['idle_worker_pss_kb'])} KiB, private median "
                         f"{fmt(entry.get('idle_worker_private_kb'))} KiB")
        verdict = _at_most(rss.get("max"), IDLE_RSS_GOAL_KB)
        lines.append([f"idle RSS per worker, {entry.get('class')}", measured, f"≤ {IDLE_RSS_GOAL_KB} KiB", verdict])
    return lines or [["idle RSS per worker", "–", f"≤ {IDLE_RSS_GOAL_KB} KiB", NOT_MEASURED]]


def target_rows(results):
    """[target, measured, goal, verdict] for each target, from the run's figures."""
    steps = results.get("steps") or []
    conc = reference_concurrency(results)
    return (memory_lines(steps, conc) + overhead_lines(steps, conc) + cold_wave_lines(steps, conc)
            + high_concurrency_lines(steps, conc) + idle_lines(results.get("idle_workers") or []))


def targets_section(results):
    if (results.get("run") or {}).get("target") != "stack":
        return []
    rows = target_rows(results)
    met = sum(1 for r in rows if r[3] == MET)
    judged = sum(1 for r in rows if r[3] != NOT_MEASURED)
    return [Heading(2, "Targets"),
            Paragraph(f"The performance targets, each computed from this run's steps: {met} of {judged} measured "
                      "met. Ratios are medians of requests/s taken side by side in this run; the "
                      "baselines and the minimal Nginx are bench/baselines/. \"No endpoint slower "
                      "than before\" needs an earlier run: compare the headline tables of the two."),
            Table(["target", "measured", "goal", "verdict"], rows)]
