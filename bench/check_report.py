#!/usr/bin/python3
# Well-formedness check of one benchmark run's folder: results, CSV, reports, and the HTML page in headless Chromium.
"""Usage: check_report.py RUN_DIR

Never judges speed: only that the run's results and reports are complete and well formed.
One line per check, `ok <what>` or `FAIL <what>: <why>`, then `N passed, N failed`;
exit status 0 only when nothing failed.
"""
import csv
import json
import numbers
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perfbench.report_render import markdown_cell  # noqa: E402
from perfbench.report_targets import MET, NOT_MEASURED, NOT_MET, target_rows  # noqa: E402
from perfbench.results import CSV_COLUMNS  # noqa: E402  (the engine's own column list)

RUN_KEYS = {"id": str, "profile": str, "started": str, "interrupted": bool, "target": str,
            "plan": dict}
PLAN_KEYS = ("warmup_s", "duration_s", "reps", "p99_bound_ms", "reference_concurrency",
             "steps_planned", "steps_done")
STEP_KEYS = {"id": str, "kind": str, "endpoint": str, "concurrency": int, "cache": str,
             "settings": dict, "reps": int, "failed_by_kind": dict, "resources": dict}
STEP_NUMBERS = ("rps", "rps_min", "rps_max", "mean_ms", "p50_ms", "p90_ms", "p99_ms",
                "p99_min", "p99_max", "max_ms", "requests", "failed", "rate", "cache_hit_ratio")
# Where a step's figures come from: the Nginx in front (None: a --url server).
FRONTS = ("stack", "minimal", None)
# A row's figures: every CSV column but the labels (a sweep's value may be a word: a class).
ROW_NUMBERS = tuple(c for c in CSV_COLUMNS if c not in (
    "step_id", "kind", "group", "class", "baseline", "endpoint", "path", "cache", "sweep_value", "worker_class"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM_TIMEOUT_S = 60


class Checker:
    """Counts and prints the outcome of each check."""

    def __init__(self):
        self.passed = self.failed = 0

    def report(self, what, problem=None):
        if problem:
            self.failed += 1
            print(f"FAIL {what}: {problem}")
        else:
            self.passed += 1
            print(f"ok {what}")


def bad_numbers(record, label, keys=None):
    """Problems of a record's numbers: each must be a number >= 0 or null (nested dicts too)."""
    problems = []
    for key, value in record.items():
        if keys is not None and key not in keys:
            continue
        if isinstance(value, dict):
            problems += bad_numbers(value, f"{label}.{key}")
        elif value is None or isinstance(value, bool) or isinstance(value, str):
            if keys is not None and isinstance(value, (str, bool)):
                problems.append(f"{label}.{key} is {value!r}, not a number")
        elif isinstance(value, numbers.Number):
            if value != value or value < 0:
                problems.append(f"{label}.{key} = {value}")
    return problems


def schema_problems(results):
    """Problems of results.json against the shared schema (keys and types only)."""
    problems = []
    if results.get("schema") != 1:
        problems.append(f"schema is {results.get('schema')!r}, not 1")
    run = results.get("run")
    if not isinstance(run, dict):
        return problems + ["run is missing"]
    problems += [f"run.{k} missing or not {t.__name__}" for k, t in RUN_KEYS.items()
                 if not isinstance(run.get(k), t)]
    plan = run.get("plan") if isinstance(run.get("plan"), dict) else {}
    problems += [f"run.plan.{k} missing" for k in PLAN_KEYS if k not in plan]
    problems += bad_numbers(plan, "run.plan", PLAN_KEYS)
    machine = results.get("machine")
    if not isinstance(machine, dict) or not isinstance(machine.get("versions"), dict):
        problems.append("machine or machine.versions is missing")
    elif not isinstance(machine.get("cores"), int) or machine["cores"] < 1:
        problems.append("machine.cores is not a positive integer")
    steps, rows = results.get("steps"), results.get("rows")
    if not isinstance(steps, list) or not steps:
        return problems + ["steps is empty or missing"]
    if not isinstance(rows, list) or not rows:
        return problems + ["rows is empty or missing"]
    if not isinstance(results.get("recommendations"), dict):
        problems.append("recommendations is missing")
    step_ids = set()
    # Runs from before the front steps (the kept reference, the tests' fixture) have
    # neither these fields nor idle_workers; a run that has one has them all.
    current = any("front" in step for step in steps)
    for step in steps:
        label = f"step {step.get('id')}"
        problems += [f"{label}: {k} missing or not {t.__name__}" for k, t in STEP_KEYS.items()
                     if not isinstance(step.get(k), t)]
        problems += bad_numbers(step, label, STEP_NUMBERS)
        problems += bad_numbers(step.get("resources") or {}, f"{label}.resources")
        problems += bad_numbers(step.get("failed_by_kind") or {}, f"{label}.failed_by_kind")
        if step.get("id") in step_ids:
            problems.append(f"{label}: id repeated")
        step_ids.add(step.get("id"))
        if current:
            problems += front_problems(step, label, run.get("target"))
    for index, row in enumerate(rows):
        if row.get("step_id") not in step_ids:
            problems.append(f"row {index}: step_id {row.get('step_id')!r} is not a step")
        problems += bad_numbers(row, f"row {index}", ROW_NUMBERS)
    if current:
        problems += idle_problems(results.get("idle_workers"))
    return problems


def front_problems(step, label, target):
    """The front and the RSS-return fields: present, of their kind, and where they belong."""
    problems = []
    if "front" not in step or step["front"] not in FRONTS:
        problems.append(f"{label}: front is {step.get('front')!r}, not one of {FRONTS}")
    elif step.get("kind") == "front" and (step["front"] != "minimal" or "front=minimal" not in step["id"]):
        problems.append(f"{label}: a front step must be front=minimal, in its id too")
    if "rss_return_kb" not in step:
        problems.append(f"{label}: rss_return_kb missing")
    else:
        problems += bad_numbers(step, label, ("rss_return_kb",))
        memory_step = (target == "stack" and step.get("kind") == "matrix"
                       and step.get("endpoint") == "/memory-test" and step.get("requests"))
        if memory_step and step["rss_return_kb"] is None:
            problems.append(f"{label}: a /memory-test step of the stack without rss_return_kb")
    return problems


def idle_problems(idle):
    """idle_workers: one entry per class, RSS figures positive and ordered."""
    if not isinstance(idle, list):
        return ["idle_workers is missing or not a list"]
    problems = []
    for entry in idle:
        label = f"idle_workers {entry.get('class')}"
        rss = entry.get("idle_worker_rss_kb")
        if not isinstance(rss, dict) or not all(isinstance(rss.get(k), numbers.Number) and rss[k] > 0
                                                 for k in ("median", "max")):
            problems.append(f"{label}: idle_worker_rss_kb needs a positive median and max")
        elif rss["median"] > rss["max"]:
            problems.append(f"{label}: median {rss['median']} above max {rss['max']}")
        if not isinstance(entry.get("workers"), int) or entry["workers"] < 1:
            problems.append(f"{label}: workers is not a positive count")
        problems += bad_numbers(entry, label, ("reps", "workers", "workers_with_both_backends"))
    return problems


def targets_problem(results, markdown):
    """The Targets section of a stack run: each target computed from results.json is a
    row of report.md, with a verdict of the three words."""
    if (results.get("run") or {}).get("target") != "stack":
        return None
    if "\n## Targets\n" not in markdown:
        return "no Targets section"
    rows = target_rows(results)
    missing = [r[0] for r in rows if "| " + " | ".join(markdown_cell(c) for c in r) + " |" not in markdown]
    if missing:
        return f"rows missing or different: {'; '.join(missing[:3])}"
    odd = [r[0] for r in rows if r[3] not in (MET, NOT_MET, NOT_MEASURED)]
    return f"verdicts not met/not met/not measured: {'; '.join(odd)}" if odd else None


def csv_problem(path, expected_rows):
    if not path.is_file():
        return "missing"
    with open(path, newline="") as source:
        table = list(csv.reader(source))
    if not table or table[0] != list(CSV_COLUMNS):
        return "the header is not the schema's columns"
    if len(table) - 1 != expected_rows:
        return f"{len(table) - 1} rows, results.json has {expected_rows}"
    return None


def referenced_charts(markdown):
    return sorted(set(re.findall(r"!\[[^\]]*\]\((charts/[^)\s]+\.png)\)", markdown)))


def run_chromium(page, scratch):
    """Loads the page in headless Chromium; returns (DOM dump, log lines) or raises."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        raise RuntimeError("chromium is not installed")
    # --no-sandbox: the check runs as root, where Chromium's sandbox refuses to start.
    command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--dump-dom",
               "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0",
               "--no-first-run", f"--user-data-dir={scratch}", page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S)
    return done.stdout, done.stderr.splitlines()


def console_messages(log_lines, page):
    """Console messages and errors Chromium logged about this page. The page itself
    writes nothing to the console, so any console line from it means a script error,
    a failed resource or a console.error."""
    uri = page.resolve().as_uri()
    return [line for line in log_lines
            if (":CONSOLE" in line or ":ERROR:" in line) and (uri in line or page.name in line)]


def load_page(checker, what, page, profile):
    """Chromium's (DOM dump, log lines) for the page, or None once `what` is reported failed."""
    try:
        return run_chromium(page, profile)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as error:
        checker.report(what, str(error))
        return None


def check_page(checker, page, chart_count):
    with tempfile.TemporaryDirectory(prefix="check-report-") as scratch:
        scratch = Path(scratch)
        loaded_page = load_page(checker, "report.html renders in headless Chromium", page,
                                scratch / "profile")
        if loaded_page is None:
            return
        dom, log = loaded_page
        checker.report("report.html renders in headless Chromium",
                       None if "<body" in dom else "no DOM was dumped")
        found = re.search(r'data-charts-loaded="(\d+)/(\d+)"', dom)
        expected = f"{chart_count}/{chart_count}"
        loaded = f"{found.group(1)}/{found.group(2)}" if found else None
        checker.report(f"report.html loads its {chart_count} charts",
                       None if loaded == expected else
                       f"data-charts-loaded is {loaded!r}, expected {expected!r}")
        messages = console_messages(log, page)
        checker.report("report.html logs no console error",
                       "; ".join(messages[:3]) if messages else None)
        # The detection above must really see an error: plant one in a copy of the page.
        planted = scratch / page.name
        planted.write_text(page.read_text().replace(
            "</body>", "<script>console.error('planted by check_report');</script></body>"))
        what = "the console check catches a planted error"
        loaded_planted = load_page(checker, what, planted, scratch / "profile-planted")
        if loaded_planted is not None:
            checker.report(what, None if console_messages(loaded_planted[1], planted)
                           else "it went unnoticed")


def check(run_dir):
    checker = Checker()
    try:
        results = json.loads((run_dir / "results.json").read_text())
        checker.report("results.json parses")
    except (OSError, ValueError) as error:
        checker.report("results.json parses", str(error))
        return checker
    problems = schema_problems(results)
    checker.report("results.json follows the schema",
                   "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)"
                                              if len(problems) > 5 else "") if problems else None)
    rows = results.get("rows") if isinstance(results.get("rows"), list) else []
    checker.report("results.csv has the header and one line per row",
                   csv_problem(run_dir / "results.csv", len(rows)))
    markdown_path = run_dir / "report.md"
    if not markdown_path.is_file():
        checker.report("report.md exists", "missing")
        return checker
    markdown = markdown_path.read_text()
    checker.report("report.md exists")
    steps = results.get("steps") if isinstance(results.get("steps"), list) else []
    endpoints = sorted({s.get("endpoint") for s in steps
                        if isinstance(s, dict) and s.get("kind") == "matrix"})
    missing = [e for e in endpoints if f"`{e}`" not in markdown and f" {e} " not in markdown]
    checker.report(f"report.md mentions the {len(endpoints)} matrix endpoints",
                   f"missing {', '.join(missing)}" if missing else None)
    checker.report("report.md's Targets section has every target, computed from the steps",
                   targets_problem(results, markdown))
    charts = referenced_charts(markdown)
    broken = [c for c in charts if not (run_dir / c).is_file()
              or (run_dir / c).read_bytes()[:8] != PNG_MAGIC]
    checker.report(f"report.md's {len(charts)} charts exist and are PNG",
                   f"not a PNG file: {', '.join(broken)}" if broken
                   else "no chart is referenced, yet the run has matrix steps"
                   if endpoints and not charts else None)
    page = run_dir / "report.html"
    if not page.is_file():
        checker.report("report.html exists", "missing")
        return checker
    checker.report("report.html exists")
    check_page(checker, page, len(charts))
    return checker


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    checker = check(Path(sys.argv[1]))
    print(f"{checker.passed} passed, {checker.failed} failed")
    return 0 if checker.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
