#!/usr/bin/python3
# Writes a run's report (report.md, report.html, charts/*.png) from its results.json; as a program, also refreshes the recommendations.
"""Usage: report.py RUN_DIR

Recomputes the recommendations from RUN_DIR/results.json (and writes them back into it),
then writes RUN_DIR/report.md, RUN_DIR/report.html and RUN_DIR/charts/*.png.
Run with /usr/bin/python3 (Debian's, which has matplotlib).
"""
import json
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a program: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perfbench import report_charts  # noqa: E402
from perfbench.recommend import recommend  # noqa: E402
from perfbench.report_charts import fmt, reference_concurrency  # noqa: E402
from perfbench.report_render import (Bullets, Heading, Image, Paragraph, Table,  # noqa: E402
                                     to_html, to_markdown)
from perfbench.report_targets import targets_section  # noqa: E402


def yes_no(value):
    return "–" if value is None else ("yes" if value else "no")


def run_section(results):
    run = results.get("run") or {}
    plan = run.get("plan") or {}
    machine = results.get("machine") or {}
    target = ("the perfcgi stack the engine started and reconfigured"
              if run.get("target") == "stack"
              else "a server given with --url (measured only: nothing started or reconfigured)")
    blocks = [Heading(1, f"perfcgi benchmark: run {run.get('id', '?')} ({run.get('profile', '?')})"),
              Paragraph(f"Measured {target}, at `{run.get('base_url', '?')}`, from "
                        f"{run.get('started', '?')} to {run.get('finished', '?')} "
                        f"({fmt(run.get('duration_s'))} s)."
                        + (" The run was interrupted: only the steps measured before the "
                           "stop are reported." if run.get("interrupted") else "")),
              Heading(2, "Machine"),
              Table(["machine", "value"],
                    [["cores", machine.get("cores", "–")],
                     ["memory", f"{fmt(machine.get('memory_mib'))} MiB"],
                     ["CPU", machine.get("cpu_model", "–")], ["kernel", machine.get("kernel", "–")],
                     ["OS", machine.get("os", "–")]]
                    + [[f"{name} version", version]
                       for name, version in (machine.get("versions") or {}).items()]),
              Heading(2, "Plan"),
              Table(["plan", "value"],
                    [["warm-up per step", f"{fmt(plan.get('warmup_s'))} s"],
                     ["measured per repetition", f"{fmt(plan.get('duration_s'))} s"],
                     ["repetitions per step", fmt(plan.get("reps"))],
                     ["p99 bound for the recommendations", f"{fmt(plan.get('p99_bound_ms'))} ms"],
                     ["reference concurrency", fmt(plan.get("reference_concurrency"))],
                     ["steps done / planned",
                      f"{fmt(plan.get('steps_done'))} / {fmt(plan.get('steps_planned'))}"],
                     ["interrupted", yes_no(run.get("interrupted"))]])]
    return blocks


def headline_section(results):
    conc = reference_concurrency(results)
    steps = results.get("steps") or []
    matrix = [s for s in steps if s.get("kind") == "matrix" and s.get("cache") == "bypass"
              and s.get("concurrency") == conc]
    if not matrix:
        return []
    baselines = [s for s in steps if s.get("kind") == "baseline" and s.get("concurrency") == conc]
    classes = report_charts.in_order(s.get("class") for s in matrix)
    names = report_charts.in_order(s.get("baseline") for s in baselines)
    headers = ["endpoint"] + [f"{c} req/s (p99 ms)" for c in classes] \
        + [f"baseline {n} req/s" for n in names]
    rows = []
    for endpoint in report_charts.in_order(s["endpoint"] for s in matrix + baselines):
        row = [f"`{endpoint}`"]
        for cls in classes:
            step = next((s for s in matrix if s["endpoint"] == endpoint and s.get("class") == cls),
                        None)
            row.append(f"{fmt(step.get('rps'))} ({fmt(step.get('p99_ms'))})" if step else "–")
        for name in names:
            step = next((s for s in baselines if s["endpoint"] == endpoint
                         and s.get("baseline") == name), None)
            row.append(fmt(step.get("rps")) if step else "–")
        rows.append(row)
    return [Heading(2, f"Headline: {conc} connections, cache bypassed"),
            Paragraph("Median requests/s per class and endpoint, with the p99 latency in ms "
                      "in brackets; the baselines show the limit of this machine (Nginx alone) "
                      "and of the FastCGI protocol (bare responders behind the same Nginx)."),
            Table(headers, rows)]


def endpoint_row(entry):
    best, runner_up = entry.get("best") or {}, entry.get("runner_up") or {}
    margin = entry.get("margin_pct")
    return [f"`{entry['endpoint']}`", best.get("config", "–"), fmt(best.get("rps")),
            fmt(best.get("p99_ms")), runner_up.get("config", "–"), fmt(runner_up.get("rps")),
            "–" if margin is None else f"{fmt(margin)}%", yes_no(entry.get("significant")),
            yes_no(entry.get("within_bound"))]


def recommendations_section(results):
    recs = results.get("recommendations") or {}
    bound = recs.get("p99_bound_ms")
    blocks = [Heading(2, "Recommendations"),
              Paragraph(f"Derived from this run's steps only (cache bypassed, steps failing "
                        f"under 0.1% of their requests), within a p99 bound of {fmt(bound)} ms. "
                        "A difference is significant when the repetitions' ranges do not "
                        "overlap.")]
    endpoints = recs.get("endpoints") or []
    if endpoints:
        blocks.append(Bullets([f"`{e['endpoint']}`: {e.get('verdict', '')}" for e in endpoints]))
        blocks.append(Table(
            ["endpoint", "best", "req/s", "p99 ms", "runner-up", "runner-up req/s", "margin",
             "significant", "within bound"],
            [endpoint_row(e) for e in endpoints]))
    cache = recs.get("cache") or []
    if cache:
        blocks += [Heading(3, "Did the cache pay?"),
                   Table(["endpoint", "class", "connections", "on / bypass req/s",
                          "bypass p99 ms", "on p99 ms", "cold wave p99 ms", "paid"],
                         [[f"`{c['endpoint']}`", c.get("class"), c.get("concurrency"),
                           f"{fmt(c.get('ratio'), 2)}x", fmt(c.get("bypass_p99_ms")),
                           fmt(c.get("on_p99_ms")), fmt(c.get("cold_p99_ms")),
                           yes_no(c.get("paid"))] for c in cache]),
                   Bullets([c["verdict"] for c in cache if "cold_p99_ms" in c]
                           or [cache[0]["verdict"]])]
    sentences = []
    if recs.get("max_requests"):
        sentences.append(f"max_requests: {recs['max_requests'].get('verdict')}")
    for group in ("workers", "pool_size", "threads", "worker_connections"):
        sentences += [f"{group}: {e.get('verdict')}"
                      for e in (recs.get(group) or {}).get("per_endpoint", [])]
    if sentences:
        blocks += [Heading(3, "Settings swept one at a time"), Bullets(sentences)]
    if recs.get("notes"):
        blocks += [Heading(3, "Notes"), Bullets(recs["notes"])]
    if len(blocks) == 2:
        blocks.append(Paragraph("Nothing to recommend from: this run has no matrix or sweep "
                                "step with the cache bypassed."))
    return blocks


def chart_sections(results, charts_dir):
    blocks = [Heading(2, "Charts")]
    problems = []
    for draw in report_charts.all_charts():
        try:
            chart = draw(results, charts_dir)
        except Exception:  # one broken chart must not cost the rest of the report
            problems.append(traceback.format_exc(limit=2).strip().splitlines()[-1])
            continue
        if chart:
            blocks += [Heading(3, chart.title), Paragraph(chart.about),
                       Image(chart.title, f"charts/{chart.file}"),
                       Table(chart.headers, chart.rows)]
    if len(blocks) == 1:
        blocks.append(Paragraph("No chart: this run measured none of the matrix, sweep, cache, "
                                "open-loop or resource figures the charts draw; every step is "
                                "in the last table."))
    if problems:
        print("report: some charts could not be drawn: " + "; ".join(problems), file=sys.stderr)
        blocks += [Paragraph("Charts left out because they could not be drawn: "
                             + "; ".join(problems))]
    return blocks


def every_step(results):
    """The appendix: each step's figures, whatever its kind, so nothing measured is hidden."""
    steps = results.get("steps") or []
    if not steps:
        return []
    return [Heading(2, "Every step"),
            Paragraph("Medians over the repetitions; failed requests summed over them."),
            Table(["step", "req/s", "spread (min..max)", "p50 ms", "p99 ms", "p99 spread",
                   "requests", "failed", "note"],
                  [[f"`{s.get('id')}`", fmt(s.get("rps")), report_charts.spread(s),
                    fmt(s.get("p50_ms")), fmt(s.get("p99_ms")),
                    f"{fmt(s.get('p99_min'))}..{fmt(s.get('p99_max'))}", fmt(s.get("requests")),
                    failures(s), s.get("note") or ""] for s in steps])]


def failures(step):
    """Failed requests with their kinds, e.g. `12 (timeout 10, non2xx 2)`."""
    kinds = ", ".join(f"{kind} {count}" for kind, count in (step.get("failed_by_kind") or {}).items()
                      if count)
    return f"{fmt(step.get('failed'))} ({kinds})" if kinds else fmt(step.get("failed"))


def how_to_read(results):
    reps = ((results.get("run") or {}).get("plan") or {}).get("reps")
    repetitions = (f"the median of {fmt(reps)} repetitions of a step, each after a warm-up; "
                   "the spread is the minimum..maximum over those repetitions, and a "
                   "difference inside it is not significant" if reps != 1 else
                   "from a single repetition of a step, after a warm-up: there is no spread, "
                   "so no difference can be called significant")
    return [Heading(2, "How to read this"),
            Paragraph(f"Every figure is {repetitions}. Requests/s, "
                      "mean and percentiles come from wrk's latency distribution, measured "
                      "through Nginx: closed-loop, so each connection waits for its answer "
                      "before sending the next and a slow server is sent less (queueing is "
                      "partly hidden). The open-loop rows hold a fixed request rate whatever "
                      "the answers, so their percentiles include the time requests waited in "
                      "queues. Failed requests are counted by kind: non-2xx answers, connect, "
                      "read and write errors, and timeouts; a step failing 0.1% or more of its "
                      "requests is left out of the recommendations. CPU seconds and peak RSS "
                      "are read from /proc per component during the measured run.")]


def document(results, charts_dir):
    return (run_section(results) + headline_section(results) + targets_section(results)
            + recommendations_section(results)
            + chart_sections(results, charts_dir) + how_to_read(results) + every_step(results))


def write_report(results: dict, out_dir: Path):
    """Writes report.md, report.html and charts/*.png for one run into out_dir."""
    out_dir = Path(out_dir)
    charts_dir = out_dir / "charts"
    charts_dir.mkdir(parents=True, exist_ok=True)
    blocks = document(results, charts_dir)
    (out_dir / "report.md").write_text(to_markdown(blocks))
    title = blocks[0].text
    (out_dir / "report.html").write_text(to_html(blocks, title, out_dir))


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    run_dir = Path(sys.argv[1])
    results_path = run_dir / "results.json"
    results = json.loads(results_path.read_text())
    plan = (results.get("run") or {}).get("plan") or {}
    results["recommendations"] = recommend(results.get("steps") or [],
                                           plan.get("p99_bound_ms"),
                                           (results.get("machine") or {}).get("cores"))
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, run_dir)
    print(f"report: {run_dir / 'report.md'}, {run_dir / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
