#!/usr/bin/env python3
"""run.py: the perfcgi integration suite.

    python3 tests/integration/run.py [FILTER ...]

Runs the test_* functions of the test_*.py modules next to this file, in file order and
then definition order; with FILTERs, only the tests whose name contains one of them.
Tests that need the stack share one (harness.STACK), started once and stopped at the end,
also on failure, Ctrl-C or SIGTERM. Prints one line per test (a skipped one with its
reason), the end of the stack's logs if anything failed, and last a single line
"N passed, N failed, N skipped": a skip is not a pass. Exits 0 only if nothing failed.

A module that sets NEEDS_STACK = False (e.g. the settings tests) runs without a stack;
the stack is only started if some selected test needs it. TEST_WORKER_CLASS (sync,
thread or event; default sync) picks the stack's worker class; the modules without a
stack run in the sync pass only, unless TEST_STANDALONE=1 (tests/run.sh sets it for the
pass on the sanitizer build): then they run in that pass too, except the modules that
set RUNS_PERFCGI_BIN = False (they do not run the binary under test).

Sanitizer reports fail the run (a test "sanitizers_report_nothing" at the end): every
sanitizer runtime started below this process writes its reports into one directory
(log_path in ASAN_OPTIONS and UBSAN_OPTIONS), and the stack's perfcgi.log, the logs of
the perfcgi processes the tests start themselves and the stderr of those run through
harness.Proc are read too (harness.sanitizer_sources()).

Against an external stack (TEST_BASE_PORT, TEST_REDIS_PORT, TEST_PG_PORT: see harness.py)
nothing is started: the modules that set RUNS_ON_EXTERNAL_STACK = True run against it,
the tests of the other stack modules are reported as skipped ("needs the local stack"),
and the modules without a stack do not run (they did in the local sync pass).
Standard library only.
"""

import atexit
import importlib
import inspect
import os
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ left in the work tree

import harness  # noqa: E402

LOG_LINES = 30
LOGS = ("perfcgi.log", "nginx-error.log")
# TEST_STANDALONE=1: the modules without a stack run in this pass too (see above).
STANDALONE = os.environ.get("TEST_STANDALONE") == "1"


def discover(filters):
    tests, seen = [], {}
    for path in sorted(HERE.glob("test_*.py")):
        mod = importlib.import_module(path.stem)
        needs_stack = getattr(mod, "NEEDS_STACK", True)
        funcs = [f for name, f in vars(mod).items()
                 if name.startswith("test_") and inspect.isfunction(f) and f.__module__ == mod.__name__]
        funcs.sort(key=lambda f: f.__code__.co_firstlineno)
        for f in funcs:
            if f.__name__ in seen:
                raise SystemExit(f"run.py: test {f.__name__} is defined in both {seen[f.__name__]} and {path.name}")
            seen[f.__name__] = path.name
            if harness.EXTERNAL_STACK and needs_stack and not getattr(mod, "RUNS_ON_EXTERNAL_STACK", False):
                f = local_stack_only(f, path.name)
            standalone = STANDALONE and getattr(mod, "RUNS_PERFCGI_BIN", True)
            tests.append((f.__name__, f, needs_stack, standalone))
    if filters:
        tests = [t for t in tests if any(s in t[0] for s in filters)]
    if harness.EXTERNAL_STACK:
        tests = [t for t in tests if t[2]]
    elif harness.WORKER_CLASS != "sync":
        # Modules without the stack start their own perfcgi: the class of the stack
        # does not change them, so they run in the local sync pass, and again only on
        # another build of the binary (TEST_STANDALONE=1).
        tests = [t for t in tests if t[2] or t[3]]
    return [t[:3] for t in tests]


def local_stack_only(func, module):
    """func, skipped instead of run: its module controls the stack (run.py's docstring)."""
    def skipped():
        raise harness.Skip(f"needs the local stack ({module} stops, restarts or signals its services)")
    skipped.__name__ = func.__name__
    return skipped


def one_line(text, limit=600):
    text = " | ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reason_of(exc):
    """One line: the message and where in a test module it was raised."""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).parent == HERE and Path(frame.filename).name.startswith("test_"):
            where = f" ({Path(frame.filename).name}:{frame.lineno})"
    if isinstance(exc, AssertionError):
        msg = str(exc) or "assertion failed"
    else:
        msg = f"{type(exc).__name__}: {exc}"
    return one_line(msg) + where


class Interrupted(BaseException):
    pass


def on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def stop_stack():
    # A second Ctrl-C must not interrupt the clean-up.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    harness.STACK.stop()


def main(argv):
    filters = argv[1:]
    tests = discover(filters)
    if not tests:
        print("no test matches " + " ".join(filters))
        print("0 passed, 0 failed, 0 skipped")
        return 1

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(harness.STACK.stop)  # idempotent; the finally below normally does it

    passed = failed = skipped = 0
    harness.sanitizer_reports_to_dir()
    failed_with_stack = False
    logs = []
    started = time.monotonic()
    interrupted = None
    current = None
    reports = []
    try:
        stack_error = None
        if any(needs for _, _, needs in tests):
            t0 = time.monotonic()
            if harness.STACK.external:
                print("using the external stack (TEST_BASE_PORT, TEST_REDIS_PORT, TEST_PG_PORT) ...", flush=True)
            else:
                print("starting the stack (deploy/stack.sh up) ...", flush=True)
            try:
                harness.STACK.start()
                print(f"stack up in {time.monotonic() - t0:.1f}s: {harness.STACK.describe()}", flush=True)
            except Exception as exc:  # noqa: BLE001
                stack_error = exc
                print(f"the stack did not start: {exc}", flush=True)
                failed_with_stack = True

        for name, func, needs_stack in tests:
            if needs_stack and stack_error is not None:
                failed += 1
                print(f"FAIL {name}: the stack did not start", flush=True)
                continue
            t0 = time.monotonic()
            current = name
            try:
                func()
            except harness.Skip as exc:
                skipped += 1
                print(f"SKIP {name} ({time.monotonic() - t0:.1f}s): {one_line(exc)}", flush=True)
            except Exception as exc:  # noqa: BLE001 - a failing test, whatever it raised
                failed += 1
                failed_with_stack |= needs_stack
                print(f"FAIL {name}: {reason_of(exc)}", flush=True)
            else:
                passed += 1
                print(f"ok   {name} ({time.monotonic() - t0:.1f}s)", flush=True)
            current = None
        # Read now: the logs in RUN_DIR go with the stack.
        reports = harness.sanitizer_reports()
        failed_with_stack |= bool(reports) and harness.STACK.started
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = str(exc) or "SIGINT"
        if current:
            failed += 1
            print(f"FAIL {current}: interrupted", flush=True)
        print(f"\ninterrupted ({interrupted}): stopping the stack", flush=True)
        failed_with_stack = failed_with_stack or harness.STACK.started
    finally:
        if failed_with_stack and harness.STACK.run_dir:
            for name in LOGS:
                tail = harness.STACK.log_tail(name, LOG_LINES)
                if tail is not None:
                    logs.append((name, tail))
        stop_stack()
    # An ASan or UBSan build reports without failing a request: to the report directory
    # (also what the stack's perfcgi said while stopping), or to a log or stderr when a
    # test gave other options.
    reports = harness.sanitizer_reports(reports)
    if reports:
        failed += 1
        where = sorted({w for w, _ in reports})
        print(f"FAIL sanitizers_report_nothing: {len(reports)} report line(s) in {', '.join(where)}; "
              f"first: {one_line(reports[0][1])}", flush=True)
    harness.sanitizer_dir_cleanup(keep=bool(reports))

    for name, tail in logs:
        print(f"--- last {LOG_LINES} lines of RUN_DIR/{name} ---")
        print(tail.rstrip("\n") if tail.strip() else "(empty)")
        print("---")
    print(f"run time {time.monotonic() - started:.1f}s")
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    if interrupted:
        return 130
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
