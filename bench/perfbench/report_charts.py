# The report's charts (matplotlib, Agg backend): one function per chart, each also giving the table of its figures.
"""Each chart function takes results.json's dict and the charts folder, and returns a Chart
(file name, title, what it shows, the table of its figures) or None when the run holds no
data for it. Null figures are skipped, never drawn as zero."""
import math
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

CLASS_COLORS = {"sync": "#4C72B0", "thread": "#DD8452", "event": "#55A868", "url": "#8172B3"}
BASELINE_COLORS = ["#7F7F7F", "#B0B0B0", "#D0D0D0"]
COMPONENTS = [("perfcgi_workers", "workers", "#4C72B0"), ("perfcgi_master", "master", "#8172B3"),
              ("nginx", "nginx", "#55A868"), ("redis", "redis", "#C44E52"),
              ("postgresql", "postgresql", "#DD8452"), ("baseline", "baseline", "#7F7F7F")]
PERCENTILE_STYLES = [("p50_ms", "p50", ":"), ("p90_ms", "p90", "--"), ("p99_ms", "p99", "-")]
SWEEP_LABELS = {"workers": "worker processes", "pool_size": "PostgreSQL pool size per worker",
                "threads": "threads per worker", "worker_connections": "worker_connections"}
DPI = 100


@dataclass
class Chart:
    file: str
    title: str
    about: str
    headers: list
    rows: list = field(default_factory=list)


def number(value):
    """A figure as a float, or None when it is missing."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def fmt(value, digits=1):
    if number(value) is None or math.isnan(value):
        return "–"
    if abs(value) >= 100 or isinstance(value, int):
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def kib_to_mib(value):
    value = number(value)
    return None if value is None else value / 1024


def spread(step):
    return f"{fmt(step.get('rps_min'))}..{fmt(step.get('rps_max'))}"


def color_of(cls, index=0):
    return CLASS_COLORS.get(cls, plt.cm.tab10(index % 10))


def in_order(values):
    """Distinct values in first-seen order (the engine's order: classes, endpoints)."""
    seen = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def reference_concurrency(results):
    """The plan's reference concurrency if the matrix measured it, else its most used one."""
    wanted = (results.get("run") or {}).get("plan", {}).get("reference_concurrency")
    levels = [s.get("concurrency") for s in results.get("steps", []) if s.get("kind") == "matrix"]
    if wanted in levels or not levels:
        return wanted
    return max(set(levels), key=levels.count)


def steps_of(results, kind, **equal):
    return [s for s in results.get("steps", []) if s.get("kind") == kind
            and all(s.get(k) == v for k, v in equal.items())]


def error_bars(steps):
    """Matplotlib's yerr for median rps with the repetitions' min..max (0 when unknown)."""
    lower = [max(0.0, (number(s.get("rps")) or 0) - (number(s.get("rps_min")) or number(s.get("rps")) or 0))
             for s in steps]
    upper = [max(0.0, (number(s.get("rps_max")) or number(s.get("rps")) or 0) - (number(s.get("rps")) or 0))
             for s in steps]
    return [lower, upper]


def plain_log_axis(axis):
    """Log-scale ticks at 1, 2, 5 per decade, written as plain numbers (1000, not 10^3), so
    even a range narrower than a decade has labels."""
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def save(figure, charts_dir, name, legend_room=0.0):
    """Writes the figure, leaving `legend_room` (a fraction of its height) at the bottom for
    a figure-wide legend."""
    figure.tight_layout(rect=(0, legend_room, 1, 1))
    figure.savefig(charts_dir / name, dpi=DPI)
    plt.close(figure)
    return name


def grid(count, width=5.0, height=3.6, columns=2):
    """A figure with `count` subplots, and the list of those in use (spares hidden)."""
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    if count == 1:  # a lone plot gets the width of two, so figure-wide legends fit
        width *= 1.6
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                                squeeze=False)
    flat = [ax for row in axes for ax in row]
    for spare in flat[count:]:
        spare.set_visible(False)
    return figure, flat[:count]


def rps_by_class(results, charts_dir):
    conc = reference_concurrency(results)
    matrix = [s for s in steps_of(results, "matrix", cache="bypass", concurrency=conc)
              if number(s.get("rps")) is not None]
    baselines = [s for s in steps_of(results, "baseline", concurrency=conc)
                 if number(s.get("rps")) is not None]
    if not matrix:
        return None
    endpoints = in_order(s["endpoint"] for s in matrix)
    classes = in_order(s.get("class") for s in matrix)
    names = in_order(s.get("baseline") for s in baselines)
    slots = len(classes) + len(names)
    width = 0.8 / slots
    figure, ax = plt.subplots(figsize=(10, 5))
    chart = Chart("rps_by_class.png", f"Requests/s by worker class, {conc} connections",
                  f"Median requests/s of each class per endpoint at {conc} connections with the "
                  "Nginx cache bypassed; the whiskers span the repetitions (min..max)."
                  + (" Grey hatched bars are the calibration baselines, measured behind the same "
                     "Nginx." if baselines else "") + " Log scale.",
                  ["endpoint", "class / baseline", "req/s", "spread (min..max)", "p99 ms"])
    for slot, label in enumerate(classes + names):
        is_class = slot < len(classes)
        xs, members = [], []
        for index, endpoint in enumerate(endpoints):
            step = next((s for s in (matrix if is_class else baselines) if s["endpoint"] == endpoint
                         and (s.get("class") if is_class else s.get("baseline")) == label), None)
            if step:
                xs.append(index - 0.4 + width * (slot + 0.5))
                members.append(step)
                chart.rows.append([f"`{endpoint}`", label if is_class else f"baseline {label}",
                                   fmt(step["rps"]), spread(step), fmt(step.get("p99_ms"))])
        color = color_of(label, slot) if is_class else BASELINE_COLORS[(slot - len(classes)) % 3]
        ax.bar(xs, [s["rps"] for s in members], width, yerr=error_bars(members), capsize=3,
               color=color, label=label if is_class else f"baseline: {label}",
               hatch=None if is_class else "//", edgecolor="white" if is_class else "#555555")
    ax.set_xticks(range(len(endpoints)), endpoints)
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    ax.set_ylabel("requests/s (median, log scale)")
    ax.set_xlabel("endpoint")
    ax.set_title(chart.title)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    save(figure, charts_dir, chart.file)
    return chart


def latency_percentiles(results, charts_dir):
    matrix = [s for s in steps_of(results, "matrix", cache="bypass")
              if any(number(s.get(key)) is not None for key, _, _ in PERCENTILE_STYLES)]
    endpoints = in_order(s["endpoint"] for s in matrix)
    if not endpoints:
        return None
    bound = number((results.get("run") or {}).get("plan", {}).get("p99_bound_ms"))
    figure, axes = grid(len(endpoints))
    classes = in_order(s.get("class") for s in matrix)
    chart = Chart("latency_percentiles.png", "Latency percentiles against concurrency",
                  "p50 (dotted), p90 (dashed) and p99 (solid) latency per endpoint against the "
                  "number of connections, one colour per class, cache bypassed; the red line "
                  "is the p99 bound. Both axes logarithmic.",
                  ["endpoint", "class", "connections", "req/s", "p50 ms", "p90 ms", "p99 ms"])
    for ax, endpoint in zip(axes, endpoints):
        here = [s for s in matrix if s["endpoint"] == endpoint]
        for index, cls in enumerate(in_order(s.get("class") for s in here)):
            line = sorted((s for s in here if s.get("class") == cls), key=lambda s: s["concurrency"])
            for key, name, style in PERCENTILE_STYLES:
                points = [(s["concurrency"], number(s.get(key))) for s in line
                          if number(s.get(key)) is not None]
                if points:
                    ax.plot(*zip(*points), style, marker="o", markersize=3,
                            color=color_of(cls, classes.index(cls)))
            chart.rows += [[f"`{endpoint}`", cls, s["concurrency"], fmt(s.get("rps")),
                            fmt(s.get("p50_ms")), fmt(s.get("p90_ms")), fmt(s.get("p99_ms"))]
                           for s in line]
        if bound:
            ax.axhline(bound, color="red", linewidth=0.8)
        levels = sorted({s["concurrency"] for s in here})
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_axis(ax.yaxis)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlim(min(levels) / 1.5, max(levels) * 1.5)
        ax.minorticks_off()
        ax.set_title(endpoint)
        ax.set_xlabel("connections")
        ax.set_ylabel("latency (ms, log scale)")
        ax.grid(which="both", alpha=0.3)
    handles = [Line2D([], [], color=color_of(c, i), linewidth=3, label=c)
               for i, c in enumerate(classes)]
    handles += [Line2D([], [], color="#333333", linestyle=style, label=name)
                for _, name, style in PERCENTILE_STYLES]
    if bound:
        handles.append(Line2D([], [], color="red", linewidth=0.8,
                              label=f"p99 bound {fmt(bound)} ms"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9)
    figure.suptitle(chart.title)
    save(figure, charts_dir, chart.file, legend_room=0.05)
    return chart


def sweep_series(results, group):
    """The sweep's steps split by what they hold fixed: [((endpoint, class, connections),
    steps by increasing value)], skipping steps without a value or a rate."""
    steps = [s for s in steps_of(results, "sweep", group=group)
             if number(s.get("sweep_value")) is not None and number(s.get("rps")) is not None]
    fixed = lambda s: (s["endpoint"], s.get("class"), s.get("concurrency"))  # noqa: E731
    return [(key, sorted((s for s in steps if fixed(s) == key), key=lambda s: s["sweep_value"]))
            for key in in_order(fixed(s) for s in steps)]


def sweep_curve(results, charts_dir, group):
    series = sweep_series(results, group)
    if not series:
        return None
    label = SWEEP_LABELS.get(group, group)
    cores = (results.get("machine") or {}).get("cores")
    figure, axes = grid(len(series))
    about = (f"Median requests/s (bars: min..max of the repetitions, left axis) and p99 "
             f"(dashed, right axis) against {label}, one setting changed at a time.")
    if group == "workers" and cores:
        about += (f" The dotted lines mark the chapter's formulas on this {cores}-core machine: "
                  f"2*cores+1 = {2 * cores + 1} (2c+1) and cores*4 = {cores * 4} (4c).")
    chart = Chart(f"sweep_{group}.png", f"{label[0].upper()}{label[1:]} sweep", about,
                  ["endpoint", "class", "connections", group, "req/s", "spread (min..max)",
                   "p99 ms"])
    for index, (ax, ((endpoint, cls, conc), line)) in enumerate(zip(axes, series)):
        xs = [s["sweep_value"] for s in line]
        ax.errorbar(xs, [s["rps"] for s in line], yerr=error_bars(line), marker="o", capsize=3,
                    color=color_of(cls, index))
        ax.set_ylim(bottom=0)
        latency = ax.twinx()
        points = [(s["sweep_value"], number(s.get("p99_ms"))) for s in line
                  if number(s.get("p99_ms")) is not None]
        if points:
            latency.plot(*zip(*points), "--", marker="x", color="#C44E52")
        latency.set_ylabel("p99 latency (ms)", color="#C44E52")
        latency.set_ylim(bottom=0)
        formulas = ({2 * cores + 1: "(2c+1)", cores * 4: "(4c)"}
                    if group == "workers" and cores else {})
        for value in formulas:
            ax.axvline(value, linestyle=":", color="#555555")
        if len(set(xs)) > 2 and max(xs) / max(min(xs), 1) > 8:
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        # Each measured value is a tick; a formula's value says which formula it is.
        ticks = sorted(set(xs) | set(formulas))
        ax.set_xticks(ticks, [f"{x}\n{formulas[x]}" if x in formulas else str(x) for x in ticks])
        ax.set_title(f"{endpoint} - {cls}, {conc} connections", fontsize=10)
        ax.set_xlabel(label)
        ax.set_ylabel("requests/s (median)")
        ax.grid(alpha=0.3)
        chart.rows += [[f"`{endpoint}`", cls, conc, s["sweep_value"], fmt(s["rps"]), spread(s),
                        fmt(s.get("p99_ms"))] for s in line]
    figure.legend(handles=[Line2D([], [], color="#333333", marker="o",
                                  label="requests/s, median and min..max (left axis)"),
                           Line2D([], [], color="#C44E52", linestyle="--", marker="x",
                                  label="p99 latency (right axis)")],
                  loc="lower center", ncol=2, fontsize=9)
    figure.suptitle(chart.title)
    save(figure, charts_dir, chart.file, legend_room=0.06)
    return chart


def max_requests_cost(results, charts_dir):
    series = sweep_series(results, "max_requests")
    if not series:
        return None
    figure, axes = grid(len(series), width=5, height=3.6)
    chart = Chart("max_requests.png", "What max_requests costs",
                  "Median requests/s with each max_requests value (0 = workers are never "
                  "recycled); the label is the cost against 0, the whiskers the repetitions' "
                  "min..max.",
                  ["endpoint", "class", "connections", "max_requests", "req/s",
                   "spread (min..max)", "cost vs 0", "p99 ms"])
    for index, (ax, (key, line)) in enumerate(zip(axes, series)):
        reference = next((s for s in line if s["sweep_value"] == 0), None)
        labels = [str(s["sweep_value"]) for s in line]
        bars = ax.bar(labels, [s["rps"] for s in line], yerr=error_bars(line), capsize=4,
                      color=color_of(key[1], index))
        for bar, step in zip(bars, line):
            cost = (f"-{(reference['rps'] - step['rps']) / reference['rps'] * 100:.1f}%"
                    if reference and step is not reference and reference["rps"] else "")
            ax.annotate(cost, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        xytext=(0, 12), textcoords="offset points", ha="center", fontsize=8)
            chart.rows.append([f"`{key[0]}`", key[1], key[2], step["sweep_value"],
                               fmt(step["rps"]), spread(step), cost or "–",
                               fmt(step.get("p99_ms"))])
        ax.set_title(f"{key[0]} - {key[1]}, {key[2]} connections", fontsize=10)
        ax.set_xlabel("max_requests (requests before a worker is recycled)")
        ax.set_ylabel("requests/s (median)")
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle(chart.title)
    save(figure, charts_dir, chart.file)
    return chart


def cache_effect(results, charts_dir):
    conc = reference_concurrency(results)
    on_steps = steps_of(results, "matrix", cache="on")
    if not on_steps:
        return None
    levels = {s.get("concurrency") for s in on_steps}
    conc = conc if conc in levels else min(levels, key=lambda c: (c is None, c))
    pairs = []
    for on in (s for s in on_steps if s.get("concurrency") == conc):
        off = next((s for s in steps_of(results, "matrix", cache="bypass", concurrency=conc)
                    if s["endpoint"] == on["endpoint"] and s.get("class") == on.get("class")), None)
        waves = [w for w in steps_of(results, "cold_wave") if w["endpoint"] == on["endpoint"]
                 and w.get("class") == on.get("class")]
        wave = next((w for w in waves if w.get("concurrency") == conc), waves[0] if waves else None)
        pairs.append((f"{on['endpoint']}\n{on.get('class')}", on, off, wave))
    chart = Chart("cache.png", f"Nginx cache on against bypassed, {conc} connections",
                  "Left: median requests/s with the cache bypassed (X-No-Cache: 1), with it on "
                  "(warm), and in the first second after the entry went cold (the cold-key "
                  "wave). Right: their p99 latency (log scale).",
                  ["endpoint", "class", "bypass req/s", "on req/s", "ratio", "bypass p99 ms",
                   "on p99 ms", "hit ratio", "cold wave p99 ms"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    variants = [("bypass", 2, "#4C72B0"), ("on (warm)", 1, "#55A868"), ("cold wave", 3, "#C44E52")]
    width = 0.8 / len(variants)
    for slot, (name, position, color) in enumerate(variants):
        members = [(index, pair[position]) for index, pair in enumerate(pairs)
                   if pair[position] is not None]
        xs = [index - 0.4 + width * (slot + 0.5) for index, _ in members]
        rps = [number(s.get("rps")) or 0 for _, s in members]
        left.bar(xs, rps, width, yerr=error_bars([s for _, s in members]), capsize=3,
                 color=color, label=name)
        p99 = [number(s.get("p99_ms")) for _, s in members]
        right.bar([x for x, v in zip(xs, p99) if v], [v for v in p99 if v], width, color=color,
                  label=name)
    for ax in (left, right):
        ax.set_xticks(range(len(pairs)), [p[0] for p in pairs], fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    left.set_ylabel("requests/s (median)")
    left.set_title("throughput")
    right.set_yscale("log")
    plain_log_axis(right.yaxis)
    right.set_ylabel("p99 latency (ms, log scale)")
    right.set_title("p99 latency")
    for _, on, off, wave in pairs:
        ratio = (f"{on['rps'] / off['rps']:.2f}x" if off and number(off.get("rps"))
                 and number(on.get("rps")) is not None else "–")
        chart.rows.append([f"`{on['endpoint']}`", on.get("class"),
                           fmt(off.get("rps")) if off else "–", fmt(on.get("rps")), ratio,
                           fmt(off.get("p99_ms")) if off else "–", fmt(on.get("p99_ms")),
                           fmt(on.get("cache_hit_ratio"), 3),
                           fmt(wave.get("p99_ms")) if wave else "–"])
    handles, names = left.get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9)
    figure.suptitle(chart.title)
    save(figure, charts_dir, chart.file, legend_room=0.07)
    return chart


def openloop_latency(results, charts_dir):
    steps = [s for s in steps_of(results, "openloop") if number(s.get("rate")) is not None]
    if not steps:
        return None
    series = in_order((s["endpoint"], s.get("class")) for s in steps)
    figure, ax = plt.subplots(figsize=(8, 4.5))
    chart = Chart("openloop.png", "Latency at a fixed request rate (open loop)",
                  "Latency percentiles while the load tool holds a fixed request rate, whatever "
                  "the server's answers: queueing shows here, where a closed-loop tool like wrk "
                  "slows down with the server and hides it. Log y.",
                  ["endpoint", "class", "rate held (req/s)", "achieved req/s", "p50 ms",
                   "p90 ms", "p99 ms", "max ms"])
    for index, (endpoint, cls) in enumerate(series):
        line = sorted((s for s in steps if (s["endpoint"], s.get("class")) == (endpoint, cls)),
                      key=lambda s: s["rate"])
        for key, name, style in PERCENTILE_STYLES:
            points = [(s["rate"], number(s.get(key))) for s in line if number(s.get(key))]
            if points:
                ax.plot(*zip(*points), style, marker="o", color=color_of(cls, index),
                        label=f"{endpoint} {cls} {name}")
        chart.rows += [[f"`{endpoint}`", cls, fmt(s["rate"]), fmt(s.get("rps")),
                        fmt(s.get("p50_ms")), fmt(s.get("p90_ms")), fmt(s.get("p99_ms")),
                        fmt(s.get("max_ms"))] for s in line]
    ax.set_yscale("log")
    plain_log_axis(ax.yaxis)
    ax.set_xlabel("request rate held (requests/s)")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title(chart.title)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(figure, charts_dir, chart.file)
    return chart


def resource_use(results, charts_dir):
    conc = reference_concurrency(results)
    steps = [s for s in steps_of(results, "matrix", cache="bypass", concurrency=conc)
             if s.get("resources")]
    steps += [s for s in steps_of(results, "baseline", concurrency=conc) if s.get("resources")]
    if not steps:
        return None
    present = [c for c in COMPONENTS if any(c[0] in s["resources"] for s in steps)]
    labels = [f"{s.get('class') or s.get('baseline')} {s['endpoint']}" for s in steps]
    figure, (cpu, rss) = plt.subplots(2, 1, figsize=(max(8, 0.65 * len(steps) + 2), 8))
    chart = Chart("resources.png", f"Resource use per component, {conc} connections",
                  "CPU seconds used during a measured run (median of the repetitions; top) and "
                  "the highest summed resident memory (bottom) of each component, stacked, per "
                  "endpoint and class; baselines at the right. Read from /proc as top would.",
                  ["endpoint", "class / baseline"]
                  + [f"{short} CPU s" for _, short, _ in present]
                  + [f"{short} peak RSS MiB" for _, short, _ in present])
    cpu_bottom = [0.0] * len(steps)
    rss_bottom = [0.0] * len(steps)
    for key, short, color in present:
        cpu_values = [number((s["resources"].get(key) or {}).get("cpu_s")) or 0 for s in steps]
        rss_values = [kib_to_mib((s["resources"].get(key) or {}).get("peak_rss_kb")) or 0
                      for s in steps]
        cpu.bar(range(len(steps)), cpu_values, bottom=cpu_bottom, color=color, label=short)
        rss.bar(range(len(steps)), rss_values, bottom=rss_bottom, color=color, label=short)
        cpu_bottom = [a + b for a, b in zip(cpu_bottom, cpu_values)]
        rss_bottom = [a + b for a, b in zip(rss_bottom, rss_values)]
    for ax, unit, tops in ((cpu, "CPU seconds per run", cpu_bottom),
                           (rss, "peak RSS (MiB)", rss_bottom)):
        ax.set_ylim(0, max(tops + [1e-9]) * 1.08)
        ax.set_xticks(range(len(steps)), labels, fontsize=8, rotation=35, ha="right",
                      rotation_mode="anchor")
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
    handles, names = cpu.get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9)
    figure.suptitle(chart.title)
    for step in steps:
        res = step["resources"]
        chart.rows.append(
            [f"`{step['endpoint']}`", step.get("class") or f"baseline {step.get('baseline')}"]
            + [fmt((res.get(key) or {}).get("cpu_s"), 2) for key, _, _ in present]
            + [fmt(kib_to_mib((res.get(key) or {}).get("peak_rss_kb"))) for key, _, _ in present])
    save(figure, charts_dir, chart.file, legend_room=0.04)
    return chart


def all_charts():
    """The chart functions in the report's order."""
    sweeps = [lambda r, d, g=group: sweep_curve(r, d, g) for group in SWEEP_LABELS]
    return [rps_by_class, latency_percentiles] + sweeps[:2] + [max_requests_cost] + sweeps[2:] \
        + [cache_effect, openloop_latency, resource_use]
