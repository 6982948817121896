# Recommendations derived from one run's steps: best configuration per endpoint, whether the cache paid, sweep verdicts.
"""recommend(steps, p99_bound_ms, cores) -> the `recommendations` object of results.json.

Nothing is hard-coded: every answer comes from the steps given, and a group that was not
measured (a quick run, a --url run) is simply absent. A difference counts as significant
only when the ranges of the repetitions do not overlap (min of one above max of the other).
"""

MAX_FAILED_FRACTION = 0.001  # steps failing more requests than this are not candidates
FORMULAS = {"2*cores+1": lambda cores: 2 * cores + 1, "cores*4": lambda cores: cores * 4}
SWEEP_GROUPS = ("workers", "pool_size", "threads", "worker_connections")
SETTING_FIELDS = ("workers", "pool_size", "pool_max_overflow", "threads", "worker_connections",
                  "max_requests")


def acceptable(step):
    """A step whose failures stay under 0.1% of its requests (or that failed nothing)."""
    failed = step.get("failed") or 0
    requests = step.get("requests") or 0
    return step.get("rps") is not None and (
        failed == 0 or (requests > 0 and failed / requests < MAX_FAILED_FRACTION))


def within(step, bound):
    """Meets the p99 bound (every step does when the run set none)."""
    if bound is None:
        return True
    return step.get("p99_ms") is not None and step["p99_ms"] <= bound


def ranked(steps, bound, outside_by_rps=False):
    """Steps best first: those within the p99 bound by median rps, then the rest by p99
    (or by rps: a sweep at one concurrency asks which value serves most)."""
    inside = sorted((s for s in steps if within(s, bound)), key=lambda s: -s["rps"])
    outside_key = (lambda s: -s["rps"]) if outside_by_rps else (
        lambda s: (s.get("p99_ms") is None, s.get("p99_ms") or 0, -s["rps"]))
    return inside + sorted((s for s in steps if not within(s, bound)), key=outside_key)


def summary(step):
    """The fields a recommendation shows of a step."""
    settings = step.get("settings") or {}
    picked = {"step_id": step["id"], "class": step.get("class"),
              "concurrency": step.get("concurrency")}
    picked.update({field: settings.get(field) for field in SETTING_FIELDS})
    picked.update({field: step.get(field) for field in ("rps", "rps_min", "rps_max", "p99_ms")})
    picked["config"] = describe(step)
    return picked


UNJUDGED = "a single repetition: no spread to judge significance by"


def significant(better, other):
    """True when the repetitions' ranges do not overlap (better's worst above other's best);
    None when either step had a single repetition, whose range says nothing."""
    if min(better.get("reps") or 2, other.get("reps") or 2) < 2:
        return None
    low, high = better.get("rps_min"), other.get("rps_max")
    return low is not None and high is not None and low > high


def margin_pct(better, other):
    if not other.get("rps"):
        return None
    return round((better["rps"] - other["rps"]) / other["rps"] * 100, 1)


def ms(value):
    return "unknown" if value is None else f"{value:,.1f} ms"


def rate(value):
    return "unknown" if value is None else f"{value:,.0f} req/s"


# The settings that tell configurations of a class apart (threads only matter to the
# thread class; worker_connections to the event class).
DESCRIBED = {"sync": ("workers",), "thread": ("workers", "threads", "pool_size"),
             "event": ("workers", "pool_size", "worker_connections")}


def describe(step):
    """A configuration in words: its class and the settings that tell it apart."""
    settings = step.get("settings") or {}
    keys = DESCRIBED.get(step.get("class"), ("workers", "threads", "pool_size"))
    parts = [f"{k} {settings[k]}" for k in keys if settings.get(k) is not None]
    where = f"{step.get('concurrency')} connections"
    return f"{step.get('class')} ({', '.join(parts + [where])})"


def comparison(best, runner_up, same_class):
    """The verdict sentence for best against runner-up."""
    margin = margin_pct(best, runner_up)
    if same_class:
        subject = f"{describe(best)} leads the next configuration {describe(runner_up)}"
    else:
        subject = f"{best.get('class')} leads {runner_up.get('class')}"
    judged = significant(best, runner_up)
    if judged:
        if same_class:
            return f"{subject} by {margin}% (outside the spread of the repetitions)"
        return (f"{best.get('class')} wins by {margin}% over {runner_up.get('class')} "
                f"(outside the spread of the repetitions)")
    if judged is None:
        return f"{subject} by {margin}% ({UNJUDGED})"
    return (f"no significant difference: {subject} by {margin}%, within the spread "
            f"of the repetitions")


def endpoint_recommendation(endpoint, steps, bound):
    order = ranked(steps, bound)
    best = order[0]
    within_bound = within(best, bound)
    pool = [s for s in order if within(s, bound) == within_bound]
    other_classes = [s for s in pool if s.get("class") != best.get("class")]
    classes = {s.get("class") for s in steps}
    if other_classes:
        runner_up, same_class = other_classes[0], False
    elif len(classes) == 1 and len(pool) > 1:
        runner_up, same_class = pool[1], True
    else:
        runner_up, same_class = None, False
    entry = {"endpoint": endpoint, "best": summary(best),
             "runner_up": summary(runner_up) if runner_up else None,
             "margin_pct": margin_pct(best, runner_up) if runner_up else None,
             "significant": significant(best, runner_up) if runner_up else None,
             "within_bound": within_bound}
    if runner_up:
        verdict = comparison(best, runner_up, same_class)
    elif len(classes) > 1:
        verdict = f"only {best.get('class')} met the p99 bound of {bound} ms"
    else:
        verdict = f"only one configuration was measured: {describe(best)}"
    if not within_bound:
        verdict = (f"no step met the p99 bound of {bound} ms; the lowest p99 was "
                   f"{ms(best.get('p99_ms'))} with {describe(best)}; " + verdict)
    else:
        limit = f"within p99 {bound} ms" if bound is not None else "(no p99 bound set)"
        verdict = (f"best {limit}: {describe(best)} at {rate(best['rps'])}, "
                   f"p99 {ms(best.get('p99_ms'))}; " + verdict)
    entry["verdict"] = verdict
    return entry


def endpoints_section(steps, bound):
    candidates = [s for s in steps if s.get("kind") in ("matrix", "sweep")
                  and s.get("cache") == "bypass" and s.get("class") and acceptable(s)]
    endpoints = sorted({s.get("endpoint") for s in candidates})
    return [endpoint_recommendation(e, [s for s in candidates if s.get("endpoint") == e], bound)
            for e in endpoints]


def ratio(numerator, denominator):
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


def cache_section(steps):
    """Cache "on" against "bypass" for the same class, endpoint and concurrency, with the
    cold wave's p99 against the warm one where a cold wave was measured."""
    key = lambda s: (s.get("class"), s.get("endpoint"), s.get("concurrency"))  # noqa: E731
    bypass = {key(s): s for s in steps if s.get("kind") == "matrix" and s.get("cache") == "bypass"}
    waves = [s for s in steps if s.get("kind") == "cold_wave"]
    entries = []
    for on in (s for s in steps if s.get("kind") == "matrix" and s.get("cache") == "on"):
        off = bypass.get(key(on))
        if not off:
            continue
        rps_ratio = ratio(on.get("rps"), off.get("rps"))
        judged = significant(on, off)
        paid = bool(rps_ratio and rps_ratio > 1 and judged is not False)
        entry = {"endpoint": on["endpoint"], "class": on.get("class"),
                 "concurrency": on.get("concurrency"), "bypass_rps": off.get("rps"),
                 "on_rps": on.get("rps"), "ratio": rps_ratio,
                 "bypass_p99_ms": off.get("p99_ms"), "on_p99_ms": on.get("p99_ms"),
                 "p99_ratio": ratio(off.get("p99_ms"), on.get("p99_ms")),
                 "hit_ratio": on.get("cache_hit_ratio"), "paid": paid}
        where = f"on {on['endpoint']} ({on.get('class')}, {on.get('concurrency')} connections)"
        if paid:
            verdict = f"the cache paid {where}: {rps_ratio}x the requests/s" + (
                f" ({UNJUDGED})" if judged is None else "")
        elif judged is False and rps_ratio and rps_ratio > 1:
            verdict = (f"the cache did not pay significantly {where}: {rps_ratio}x the "
                       "requests/s, within the spread")
        else:
            verdict = f"the cache did not pay {where}: {rps_ratio}x the requests/s"
        verdict += f", p99 {ms(off.get('p99_ms'))} -> {ms(on.get('p99_ms'))}"
        matching = [w for w in waves if w.get("endpoint") == on["endpoint"]
                    and w.get("class") == on.get("class")]
        # The first second of a new entry (a wave without sweep_value is one), and of
        # an expired one, where Nginx serves the stale copy while one request refreshes it.
        for kind, label in (("created", "cold-key wave's"), ("expired", "expired-entry wave's")):
            wave = next((w for w in matching if w.get("concurrency") == on.get("concurrency")
                         and (w.get("sweep_value") or "created") == kind), None)
            if not wave:
                continue
            suffix = "" if kind == "created" else "_expired"
            entry["cold_p99_ms" + suffix] = wave.get("p99_ms")
            entry["cold_vs_warm_p99" + suffix] = ratio(wave.get("p99_ms"), on.get("p99_ms"))
            verdict += (f"; the {label} p99 was {ms(wave.get('p99_ms'))}, "
                        f"{entry['cold_vs_warm_p99' + suffix]}x the warm cache's")
        entry["verdict"] = verdict
        entries.append(entry)
    return entries


def series_of(steps, group):
    """Sweep steps of one group, split by what they hold fixed (class, endpoint, connections)."""
    series = {}
    for step in steps:
        if step.get("kind") == "sweep" and step.get("group") == group \
                and step.get("sweep_value") is not None and acceptable(step):
            key = (step.get("endpoint"), step.get("class"), step.get("concurrency"))
            series.setdefault(key, []).append(step)
    return {key: sorted(members, key=lambda s: s["sweep_value"])
            for key, members in sorted(series.items(), key=lambda kv: str(kv[0]))}


def max_requests_section(steps):
    all_series = []
    for (endpoint, cls, concurrency), members in series_of(steps, "max_requests").items():
        reference = next((s for s in members if s["sweep_value"] == 0), None)
        values, costs = [], []
        for step in members:
            value = {"max_requests": step["sweep_value"], "rps": step["rps"],
                     "rps_min": step.get("rps_min"), "rps_max": step.get("rps_max"),
                     "p99_ms": step.get("p99_ms")}
            if reference and step is not reference:
                value["cost_pct"] = round((reference["rps"] - step["rps"])
                                          / reference["rps"] * 100, 1)
                value["significant"] = (significant(reference, step)
                                        or significant(step, reference))
                costs.append(f"max_requests {step['sweep_value']} cost {value['cost_pct']}% "
                             f"of the requests/s"
                             + ("" if value["significant"] else
                                " (no significant difference: within the spread)"
                                if value["significant"] is False else f" ({UNJUDGED})"))
            values.append(value)
        where = f"on {endpoint} ({cls}, {concurrency} connections)"
        verdict = (f"{where}: " + "; ".join(costs) if costs else
                   f"{where}: no run with max_requests 0 to compare against")
        all_series.append({"endpoint": endpoint, "class": cls, "concurrency": concurrency,
                           "values": values, "verdict": verdict})
    if not all_series:
        return None
    first = all_series[0]
    return {"values": first["values"], "verdict": "; ".join(s["verdict"] for s in all_series),
            "series": all_series}


def sweep_section(steps, group, bound, cores=None):
    """Best value of a swept setting per endpoint and class; for workers, how the
    chapter's formulas did on this machine (their rps as % of the best)."""
    entries = []
    label = group.replace("_", " ")
    for (endpoint, cls, concurrency), members in series_of(steps, group).items():
        order = ranked(members, bound, outside_by_rps=True)
        best = order[0]
        entry = {"endpoint": endpoint, "class": cls, "concurrency": concurrency,
                 f"best_{group}": best["sweep_value"], "best_rps": best["rps"],
                 "best_p99_ms": best.get("p99_ms"), "within_bound": within(best, bound),
                 "curve": [{"value": s["sweep_value"], "rps": s["rps"],
                            "p99_ms": s.get("p99_ms")} for s in members]}
        verdict = (f"on {endpoint} ({cls}, {concurrency} connections) {label} "
                   f"{best['sweep_value']} did best: {rate(best['rps'])}, "
                   f"p99 {ms(best.get('p99_ms'))}"
                   + ("" if entry["within_bound"] else f" (no value met the p99 bound of {bound} ms)"))
        runner_up = order[1] if len(order) > 1 else None
        if runner_up and significant(best, runner_up) is False:
            verdict += (f"; no significant difference with {label} {runner_up['sweep_value']}")
        if group == "workers" and cores:
            formula_rps, formula_pct, said = {}, {}, []
            for name, formula in FORMULAS.items():
                value = formula(cores)
                step = next((s for s in members if s["sweep_value"] == value), None)
                formula_rps[name] = step["rps"] if step else None
                formula_pct[name] = (round(step["rps"] / best["rps"] * 100, 1)
                                     if step and best["rps"] else None)
                said.append(f"{name} = {value} reached {formula_pct[name]}% of it"
                            if step else f"{name} = {value} was not measured")
            entry.update(formula_rps=formula_rps, formula_pct=formula_pct)
            verdict += "; " + ", ".join(said)
        entry["verdict"] = verdict
        entries.append(entry)
    return entries


def recommend(steps, p99_bound_ms, cores):
    """The recommendations object of results.json, from the steps of one run."""
    result = {"p99_bound_ms": p99_bound_ms, "endpoints": endpoints_section(steps, p99_bound_ms),
              "notes": []}
    cache = cache_section(steps)
    if cache:
        result["cache"] = cache
    max_requests = max_requests_section(steps)
    if max_requests:
        result["max_requests"] = max_requests
    for group in SWEEP_GROUPS:
        entries = sweep_section(steps, group, p99_bound_ms, cores)
        if not entries:
            continue
        if group == "workers":
            result["workers"] = {"formulas": {name: f(cores) for name, f in FORMULAS.items()}
                                 if cores else {}, "per_endpoint": entries}
        else:
            result[group] = {"per_endpoint": entries}
    excluded = [s["id"] for s in steps if s.get("kind") in ("matrix", "sweep")
                and not acceptable(s)]
    if excluded:
        result["notes"].append(
            f"{len(excluded)} step(s) left out of the recommendations for failing 0.1% or more "
            f"of their requests: {', '.join(excluded)}")
    for entry in result["endpoints"]:
        if not entry["within_bound"]:
            result["notes"].append(f"no configuration of {entry['endpoint']} met the p99 bound "
                                   f"of {p99_bound_ms} ms at the concurrencies measured")
    return result
