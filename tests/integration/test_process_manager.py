"""The process manager, driven through Nginx under concurrent load: reload, recycling
(max_requests, max_worker_rss_mb), crashed and hung workers, TTIN/TTOU, graceful stop,
/status and /metrics, the access log, privileges and the listen queue.

Tests that need other settings restart perfcgi, either through stack.sh with extra
PERFCGI_* variables (harness.perfcgi_with) or as the test's own process with a config
file (harness.OwnPerfcgi, for HUP re-reading the file and for the exit status), on the
stack's sockets so Nginx reaches it. Both bring the stack's usual perfcgi (WORKERS
workers, the harness settings) back before the test returns, whatever happened.

Every wait is bounded with generous limits: the machine is shared and noisy, so the
tests assert behaviour, never speed.
"""

import contextlib
import datetime
import os
import re
import shutil
import signal
import subprocess
import threading
import time

from harness import (PERFCGI_BIN, REQUESTS_PER_WORKER, STACK, WORKER_CLASS, WORKERS, Load, OwnPerfcgi, Proc, Skip,
                     NginxErrorWatch, StatusWatch,
                     app_socket, assert_app_answer, assert_error, children_of, config_text, fcgi_connect,
                     fcgi_request, free_port, get, head, http, json_body, master_pid, metric_sum,
                     parse_metrics, perfcgi_with, pm_status, proc_alive, process_group_members, psql, restarts,
                     restore_perfcgi, settled, signal_master, stack, stack_perfcgi_settings, status_socket,
                     wait_until, wait_workers)

SETTLE = 60          # seconds for workers to be replaced / started / stopped
REASONS = {"crash", "timeout", "max_requests", "max_rss", "reload", "scale_down", "pm"}


class Background:
    """fn(*args) in a thread; result(timeout) returns its value or raises its exception."""

    def __init__(self, fn, *args, **kw):
        self.value = self.error = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, args, kw), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kw):
        try:
            self.value = fn(*args, **kw)
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self.error = exc
        finally:
            self._done.set()

    def running(self):
        return not self._done.is_set()

    def result(self, timeout=90):
        if not self._done.wait(timeout):
            raise AssertionError(f"a background request did not finish within {timeout}s")
        if self.error is not None:
            raise self.error
        return self.value


def busy_row(predicate=lambda r: True):
    """The pid of a worker of the master that /status?full shows busy (and matching)."""
    kids = set(children_of(master_pid()))
    for r in pm_status(full=True)["processes"]:
        if r["state"] == "busy" and r["pid"] in kids and predicate(r):
            return r["pid"]
    return None


def stack_log():
    with open(os.path.join(STACK.run_dir, "perfcgi.log"), errors="replace") as f:
        return f.read()


def delta(before, after):
    return {k: after[k] - before[k] for k in after}


def proc_ids(pid, field):
    """The four ids of the Uid: or Gid: line of /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return [int(x) for x in line.split()[1:5]]
    raise AssertionError(f"no {field} in /proc/{pid}/status")


# --- reload, recycling, crashes --------------------------------------------------------------

def test_reload_under_load_fails_no_request():
    reloads = 5
    old = set(wait_workers(WORKERS))
    before = restarts()
    # Quick requests, and slower ones that are in flight when the old workers get TERM.
    paths = ["/io-intensive?ms=5", "/", "/io-intensive?ms=200", "/cached-data?category=43", "/mixed?n=2000&ms=50"]
    with NginxErrorWatch() as nginx_log, StatusWatch() as watch, Load(paths, threads=8) as load:
        load.wait_for(50)
        for _ in range(reloads):
            signal_master(signal.SIGHUP)
            time.sleep(0.5)
        # The last generation serves, alone, and none of the first is left.
        new = wait_until(lambda: (k := settled(WORKERS)) and not set(k) & old and k, SETTLE,
                         interval=0.1, message="a new generation of workers after the reloads")
        served = load.ok
        load.wait_for(served + 50)
    after = restarts()
    assert not load.failures, f"requests failed during {reloads} HUPs: {load.summary()}"
    # With upstream keepalive (event class) Nginx retries a GET on a dropped connection:
    # an answer of 200 may hide one; its error log does not.
    nginx_log.assert_none_dropped(f"{reloads} HUPs under load")
    assert load.ok >= 100, f"too little load to prove anything: {load.summary()}"
    changed = delta(before, after)
    assert changed["reload"] >= WORKERS, \
        f"worker_restarts.reload grew by {changed['reload']} after {reloads} HUPs (>= {WORKERS} expected): {after}"
    assert changed["crash"] == 0 and changed["timeout"] == 0, f"workers crashed or hung during the reloads: {changed}"
    assert set(new) & set(load.served_by), f"no request was served by the new workers {new}"
    watch.assert_never_decreases("accepted_conn")
    # New workers start before old ones go: the pool never shrinks below its size.
    low = min(st["total_processes"] for _, st in watch.samples)
    assert low >= WORKERS, f"total_processes fell to {low} during the reloads"


def test_usr1_and_hup_do_not_drop_an_accepted_connection():
    # A worker that has accepted a FastCGI connection owns it: a signal reaching the
    # worker before the request has arrived (USR1: reopen the logs; TERM: retire after a
    # HUP) must not lose that request. Through Nginx the window is microseconds (Nginx
    # writes right after connecting), and shows as a rare 502 with "writev() failed (32:
    # Broken pipe) while sending request to upstream" during reloads, recycling (see the
    # max_requests test) or log rotation; a FastCGI client that sends its request 0.5 s
    # after connecting holds the window open.
    # The control: the same late request, no signal.
    with fcgi_connect() as c:
        time.sleep(0.5)
        code, out = fcgi_request(c, "/", "sig=none")
    assert code == 200, f"a request sent 0.5 s after connecting, no signal: {code} {out[:200]!r}"

    problems = []
    for sig in (signal.SIGUSR1, signal.SIGHUP):
        for _ in range(3):
            old = set(wait_workers(WORKERS))
            with fcgi_connect() as c:
                t0 = time.monotonic()
                time.sleep(0.2)  # an idle worker accepts it and waits for the request
                signal_master(sig)
                time.sleep(0.3)
                # libfcgi drops a connection silent for 2 s by design: stay well within.
                late = time.monotonic() - t0 > 1.5
                try:
                    code, out = fcgi_request(c, "/", f"sig={sig.name}")
                    result = None if code == 200 else f"status {code}: {out[:200]!r}"
                except (OSError, EOFError) as exc:
                    result = f"{type(exc).__name__}: {exc}"
            if sig == signal.SIGHUP:
                wait_until(lambda: (k := settled(WORKERS)) and not set(k) & old, SETTLE, interval=0.1,
                           message="new workers after the HUP")
            if not (late and result):
                break
        if result:
            problems.append(f"kill -{sig.name[3:]} <master> 0.2 s after connecting, request sent 0.5 s "
                            f"after connecting: {result}")
    assert not problems, "a connection a worker had accepted was dropped: " + "; ".join(problems)


def test_recycled_workers_exit_once_replaced():
    # A worker at max_requests stops taking requests and waits for the master's TERM: it
    # must take it then, not linger until graceful_timeout (30 s here) holding its backend
    # connections (with many recycles a second, PostgreSQL ran out of connections).
    with perfcgi_with(max_requests=5):
        with Load(["/", "/io-intensive?ms=1"], threads=4) as load:
            wait_until(lambda: restarts()["max_requests"] >= 2 * WORKERS, SETTLE, interval=0.1,
                       message="workers recycled")
        assert not load.failures, load.summary()
        recycled = restarts()["max_requests"]
        kids = wait_until(lambda: settled(WORKERS), 10, interval=0.1,
                          message=f"{WORKERS} workers and no recycled one left within 10 s")
        assert len(kids) == WORKERS, kids
        assert recycled >= 2 * WORKERS


def test_max_requests_recycles_without_failures():
    # Every recycled worker is retired with TERM, mostly while idle in accept: a rare
    # failure here (a 502 after "writev() failed (32: Broken pipe)") is the dropped
    # accepted connection that test_usr1_and_hup_do_not_drop_an_accepted_connection
    # provokes on purpose.
    max_requests, jitter = 50, 10
    with perfcgi_with(max_requests=max_requests, max_requests_jitter=jitter):
        old = set(wait_workers(WORKERS))
        with StatusWatch(full=True) as watch, Load(["/io-intensive?ms=5", "/"], threads=8) as load:
            started = time.monotonic()
            # A few seconds, and at least one recycling round of every first worker.
            wait_until(lambda: time.monotonic() - started >= 4 and restarts()["max_requests"] >= WORKERS,
                       SETTLE, interval=0.2, message="every worker recycled once (max_requests)")
        st = pm_status(full=True)
        status, h, body = http("GET", "/metrics")
        assert status == 200, (status, body[:200])
        metrics = parse_metrics(body.decode())
        now = set(wait_workers(WORKERS))
    assert not load.failures, f"requests failed while workers were recycled: {load.summary()}"
    assert st["worker_restarts"]["max_requests"] > 0, st["worker_restarts"]
    assert not old & now, f"first workers {sorted(old)} still serve: {sorted(now)}"
    assert st["worker_restarts"]["crash"] == 0, f"a worker crashed: {st['worker_restarts']}"
    values = watch.assert_never_decreases("accepted_conn")
    total = metric_sum(metrics, "perfcgi_requests_total")
    assert total >= load.sent, \
        f"perfcgi_requests_total sums to {total:g}, fewer than the {load.sent} requests sent (counters lost with recycled workers?)"
    assert st["accepted_conn"] >= load.sent and values[-1] <= st["accepted_conn"], \
        f"accepted_conn {st['accepted_conn']} < {load.sent} requests sent"
    # No worker serves beyond its limit (max_requests plus at most the jitter), in any
    # /status read of the run: it stops taking requests, asks, and is replaced.
    most = {}
    for _, sample in watch.samples + [(0, st)]:
        for r in sample["processes"]:
            most[r["pid"]] = max(most.get(r["pid"], 0), r["requests"])
    over = {pid: n for pid, n in most.items() if n > max_requests + jitter}
    assert not over, f"workers served more than max_requests + max_requests_jitter = " \
                     f"{max_requests + jitter} requests (pid: requests): {over}"
    assert sum(n >= max_requests for n in most.values()) >= WORKERS, f"too few workers reached max_requests: {most}"


def test_kill_9_busy_worker_is_replaced():
    wait_workers(WORKERS)
    before = restarts()
    with Load(["/io-intensive?ms=300"], threads=6) as load:
        load.wait_for(8)
        victim = wait_until(lambda: busy_row(lambda r: "/io-intensive" in r["last_uri"]), 20, interval=0.02,
                            message="a worker busy on /io-intensive")
        os.kill(victim, signal.SIGKILL)
        now = wait_until(lambda: (k := settled(WORKERS)) and victim not in k and k, SETTLE, interval=0.1,
                         message=f"worker {victim} replaced")
        served = load.ok
        load.wait_for(served + 12)
    after = restarts()
    # A sync worker holds one request; a thread or event worker may hold every
    # request in flight (the load runs 6 at a time).
    held = 1 if WORKER_CLASS == "sync" else 6
    assert len(load.failures) <= held, \
        f"kill -9 of one {WORKER_CLASS} worker failed more than the {held} request(s) it could hold: {load.summary()}"
    for _, path, what in load.failures:
        assert what.startswith("502 "), f"the killed worker's request: {path}: {what}"
    assert after["crash"] - before["crash"] >= 1, f"worker_restarts.crash did not grow: {before} -> {after}"
    assert pm_status()["total_processes"] == WORKERS
    assert not proc_alive(victim) and victim not in now


def test_accepted_conn_keeps_the_request_of_a_killed_worker():
    # accepted_conn counts the request a busy worker is on; when that worker is killed,
    # the request was still accepted: the figure must not go down ("counters survive
    # worker recycling; accepted_conn never goes down").
    wait_workers(WORKERS)
    slow = Background(get, "/io-intensive?ms=5000&acc=1")
    try:
        victim = wait_until(lambda: busy_row(lambda r: "acc=1" in r["last_uri"]), 20, interval=0.02,
                            message="a worker busy on the slow request")
        accepted = pm_status()["accepted_conn"]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: (k := settled(WORKERS)) and victim not in k, SETTLE, interval=0.1,
                   message=f"worker {victim} replaced")
        after = pm_status()["accepted_conn"]
    finally:
        status, h, body = slow.result(60)
    # 502, or 200 when Nginx retried it: with the event class the request came on a
    # kept-alive connection, and Nginx retries a GET whose kept connection fails.
    assert status == 502 or (status == 200 and WORKER_CLASS == "event"), (status, body[:200])
    assert after >= accepted, \
        f"accepted_conn went down from {accepted} to {after} when worker {victim}, busy on an accepted request, was killed"


def _hang_a_worker(mark):
    """A long CPU request in the background (seconds, past a timeout of 1 s), and the
    pid of the worker busy on it."""
    hang = Background(get, f"/cpu-intensive?n=10000000&{mark}")
    victim = wait_until(lambda: busy_row(lambda r: mark in r["last_uri"]), 20, interval=0.02,
                        message="a worker busy on the long CPU request")
    return hang, victim


def test_hung_worker_is_killed_others_unaffected():
    with perfcgi_with(timeout=1):
        before = restarts()
        hang, victim = _hang_a_worker("hang=1")
        quick = []
        while hang.running() and len(quick) < 2000:
            quick.append(get("/"))
        status, h, body = hang.result(60)
        if status == 200 and json_body(body).get("elapsed_ms", 0) < 1000:
            raise Skip(f"/cpu-intensive?n=10000000 took {json_body(body)['elapsed_ms']} ms here, "
                       f"under timeout=1 s: no hang to provoke")
        obj = assert_error(status, h, body, 502, "backend_unavailable", from_app=False)
        assert obj.get("backend") == "perfcgi", obj
        bad = [(s, b[:100]) for s, _, b in quick if s != 200]
        assert not bad, f"requests sent during the hang failed: {bad[:5]} ({len(bad)} of {len(quick)})"
        assert len(quick) >= 3, f"only {len(quick)} requests during the hang"
        if WORKER_CLASS != "thread":  # a thread worker's other threads go on serving
            assert all(int(hh["X-Worker"]) != victim for _, hh, _ in quick), "the hung worker answered"
        wait_until(lambda: restarts()["timeout"] >= before["timeout"] + 1, 20,
                   message="worker_restarts.timeout grew")
        wait_until(lambda: not proc_alive(victim), 20, message=f"hung worker {victim} gone")
        now = wait_until(lambda: settled(WORKERS), SETTLE, message="back to WORKERS workers")
        assert victim not in now
        after = restarts()
        assert after["crash"] == before["crash"], f"the kill counted as a crash too: {before} -> {after}"
        log = stack_log()
        assert re.search(rf"worker {victim} has been busy for over .*cpu-intensive", log), \
            f"no log line names hung worker {victim}: {log[-800:]}"


# --- scaling and stopping ---------------------------------------------------------------------

def test_ttin_ttou_follow_total_processes():
    wait_workers(WORKERS)
    before = restarts()
    ok = False
    try:
        n = WORKERS
        for _ in range(2):
            signal_master(signal.SIGTTIN)
            n += 1
            wait_workers(n, SETTLE)
        assert pm_status()["total_processes"] == WORKERS + 2
        s, h, b = get("/")
        assert_app_answer(s, h, b)
        while n > 1:
            signal_master(signal.SIGTTOU)
            n -= 1
            wait_workers(n, SETTLE)
            s, h, b = get("/")
            assert_app_answer(s, h, b)
        # Never below one worker.
        last = wait_workers(1)
        signal_master(signal.SIGTTOU)
        time.sleep(1.0)
        assert wait_workers(1) == last, "TTOU at one worker changed the worker"
        st = pm_status()
        assert st["total_processes"] == 1, st
        s, h, b = get("/")
        assert assert_app_answer(s, h, b)["worker"] == last[0]
        after = restarts()
        assert after["scale_down"] - before["scale_down"] == WORKERS + 1, \
            f"scale_down grew by {after['scale_down'] - before['scale_down']}, expected {WORKERS + 1}: {after}"
        assert after["crash"] == before["crash"], (before, after)
        while n < WORKERS:
            signal_master(signal.SIGTTIN)
            n += 1
            wait_workers(n, SETTLE)
        ok = True
    finally:
        if not ok:
            restore_perfcgi()


def test_term_lets_in_flight_requests_finish():
    with OwnPerfcgi(name="term") as own:
        pidfile = own.settings["pidfile"]
        slow = [Background(get, f"/io-intensive?ms=1500&term={i}") for i in range(WORKERS * REQUESTS_PER_WORKER)]
        try:
            # Every request accepted by a worker (not still in the kernel's queue).
            wait_until(lambda: sum(r.get("active_requests", r["state"] == "busy")
                                   for r in pm_status(full=True)["processes"]) == len(slow), 20,
                       interval=0.02, message="every slow request in a worker")
            os.kill(own.pid, signal.SIGTERM)
        finally:
            answers = [b.result(60) for b in slow]
        rc = own.wait(60)
        for i, (s, h, b) in enumerate(answers):
            obj = assert_app_answer(s, h, b)
            assert obj["waited_ms"] >= 1500 * 0.9, obj
        assert rc == 0, f"the master exited {rc} after TERM: {own.log_text()[-600:]}"
        assert not os.path.exists(app_socket()), "the FastCGI socket is left behind"
        assert not os.path.exists(status_socket()), "the status socket is left behind"
        assert not os.path.exists(pidfile), "the pidfile is left behind"
        assert "stopping gracefully" in own.log_text(), own.log_text()[-600:]


def test_invalid_config_on_hup_keeps_old_workers():
    with OwnPerfcgi(name="hup", workers=2) as own:
        old = set(wait_workers(2))
        before = restarts()
        text = config_text(dict(own.settings, workers="lots"))
        line = 1 + text.splitlines().index("workers = lots")
        own.write_config(text)
        with Load(["/", "/io-intensive?ms=5"], threads=4) as load:
            load.wait_for(20)
            os.kill(own.pid, signal.SIGHUP)
            logged = wait_until(lambda: [ln for ln in own.log_text().splitlines() if "reload:" in ln], 20,
                                message="the failed reload logged")
            served = load.ok
            load.wait_for(served + 40)
        assert not load.failures, f"requests failed after a HUP with an invalid config: {load.summary()}"
        assert any(f"{own.config}:{line}" in ln and "running configuration stays" in ln for ln in logged), \
            f"the reload error does not name {own.config}:{line}: {logged}"
        assert set(wait_workers(2)) == old, "the workers changed after a HUP with an invalid config"
        assert restarts() == before, (before, restarts())

        # A valid change now takes effect, still with no failed request.
        own.write_config(workers=3)
        with Load(["/", "/io-intensive?ms=5"], threads=4) as load:
            load.wait_for(20)
            os.kill(own.pid, signal.SIGHUP)
            new = wait_until(lambda: (k := settled(3)) and not set(k) & old and k, SETTLE, interval=0.1,
                             message="3 new workers after the HUP")
            served = load.ok
            load.wait_for(served + 40)
        assert not load.failures, f"requests failed during a valid reload: {load.summary()}"
        st = pm_status()
        assert st["total_processes"] == 3, st
        assert st["worker_restarts"]["reload"] - before["reload"] >= 2, st["worker_restarts"]
        assert set(new) & set(load.served_by), "the new workers serve nothing"


# --- /status and /metrics ------------------------------------------------------------------------

def test_status_answers_while_all_workers_busy():
    wait_workers(WORKERS)
    reached = pm_status()["max_children_reached"]
    slow = [Background(get, f"/io-intensive?ms=4000&busy={i}") for i in range(WORKERS * REQUESTS_PER_WORKER + 2)]
    try:
        wait_until(lambda: (st := pm_status())["active_processes"] == st["total_processes"] == WORKERS, 20,
                   interval=0.02, message="every worker busy")
        answers = {path: http("GET", path, timeout=10) for path in ("/status", "/healthz", "/metrics")}
        in_flight = sum(b.running() for b in slow)
        for path, (s, h, b) in answers.items():
            assert s == 200, f"{path} answered {s} while every worker was busy: {b[:200]!r}"
        st = json_body(answers["/status"][2])
        assert st["active_processes"] == st["total_processes"] == WORKERS and st["idle_processes"] == 0, st
        assert json_body(answers["/healthz"][2]) == {"status": "ok"}
        m = parse_metrics(answers["/metrics"][2].decode())
        assert m[("perfcgi_processes", (("state", "active"),))] == WORKERS, m[("perfcgi_processes", (("state", "active"),))]
        assert in_flight >= 1, "the slow requests were over before the answers came"
        wait_until(lambda: pm_status()["max_children_reached"] >= reached + 1, 10,
                   message=f"max_children_reached above {reached}")
        assert pm_status()["max_active_processes"] >= WORKERS
    finally:
        results = [b.result(60) for b in slow]
    for s, h, b in results:
        assert_app_answer(s, h, b)


ENDPOINT_TRAFFIC = [
    ("/", 200, "hello"),
    ("/cpu-intensive?n=1000", 200, "cpu_intensive"),
    ("/cpu-intensive?n=x", 400, "cpu_intensive"),
    ("/io-intensive?ms=1", 200, "io_intensive"),
    ("/mixed?n=100&ms=1", 200, "mixed"),
    ("/cached-data?category=41", 200, "cached_data"),
    ("/cached-data?category=41", 200, "cached_data"),
    ("/expensive-computation?n=20&method=fast", 200, "expensive_computation"),
    ("/memory-test?mb=1", 200, "memory_test"),
    ("/no-such-page", 404, "other"),
]


def test_metrics_pass_promtool():
    promtool = shutil.which("promtool")
    if not promtool:
        raise Skip("promtool not found (apt-get install -y prometheus)")
    for path, want, _ in ENDPOINT_TRAFFIC:
        s, h, b = get(path)
        assert s == want, f"{path}: {s} {b[:200]!r}"
    status, h, body = http("GET", "/metrics")
    assert status == 200, (status, body[:200])
    assert h.get("Content-Type", "").startswith("text/plain; version=0.0.4"), h.get("Content-Type")
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    report = (r.stdout + r.stderr).decode(errors="replace").strip()
    assert r.returncode == 0 and not report, f"promtool check metrics: exit {r.returncode}: {report}"

    m = parse_metrics(body.decode())
    assert all(name.startswith("perfcgi_") for name, _ in m), [n for n, _ in m if not n.startswith("perfcgi_")]
    for path, want, endpoint in ENDPOINT_TRAFFIC:
        klass = f"{str(want)[0]}xx"
        assert metric_sum(m, "perfcgi_requests_total", endpoint=endpoint, status=klass) >= 1, \
            f"{path}: no perfcgi_requests_total{{endpoint={endpoint},status={klass}}}"
    assert metric_sum(m, "perfcgi_cache_requests_total") >= 2
    reasons = {dict(ls)["reason"] for n, ls in m if n == "perfcgi_worker_restarts_total"}
    assert reasons == REASONS, reasons
    # Histograms: cumulative buckets, +Inf == _count, per endpoint.
    endpoints = {dict(ls)["endpoint"] for n, ls in m if n == "perfcgi_request_duration_seconds_count"}
    assert {e for _, _, e in ENDPOINT_TRAFFIC} <= endpoints, endpoints
    for e in endpoints:
        buckets = sorted(((float(dict(ls)["le"]), v) for (n, ls), v in m.items()
                          if n == "perfcgi_request_duration_seconds_bucket" and dict(ls)["endpoint"] == e))
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"{e}: buckets not cumulative: {buckets}"
        count = m[("perfcgi_request_duration_seconds_count", (("endpoint", e),))]
        assert buckets[-1][0] == float("inf") and buckets[-1][1] == count, (e, buckets[-1], count)
        if count:
            assert m[("perfcgi_request_duration_seconds_sum", (("endpoint", e),))] > 0, e


def test_status_full_rows():
    kids = set(wait_workers(WORKERS))
    now = time.time()
    st = pm_status(full=True)
    ints = ("start_time", "start_since", "accepted_conn", "listen_queue", "max_listen_queue", "listen_queue_len",
            "idle_processes", "active_processes", "total_processes", "max_active_processes",
            "max_children_reached", "slow_requests")
    want = set(ints) | {"pool", "worker_class", "worker_restarts", "processes"}
    assert want <= set(st), f"/status?full lacks {want - set(st)}"
    for k in ints:
        assert type(st[k]) is int and st[k] >= 0, f"{k} = {st[k]!r}"
    assert st["pool"] == "perfcgi" and st["worker_class"] == WORKER_CLASS, st
    assert abs(st["start_time"] + st["start_since"] - now) <= 5, (st["start_time"], st["start_since"], now)
    assert st["total_processes"] == WORKERS == st["idle_processes"] + st["active_processes"], st
    assert st["max_listen_queue"] >= st["listen_queue"] and st["listen_queue_len"] >= 1, st
    assert set(st["worker_restarts"]) == REASONS, st["worker_restarts"]
    assert all(type(v) is int and v >= 0 for v in st["worker_restarts"].values()), st["worker_restarts"]
    rows = st["processes"]
    assert len(rows) == WORKERS and {r["pid"] for r in rows} == kids, (rows, kids)
    for r in rows:
        assert {"pid", "state", "requests", "request_duration_ms", "rss_kb", "last_uri"} <= set(r), r
        assert type(r["pid"]) is int and r["state"] in ("starting", "idle", "busy"), r
        assert type(r["requests"]) is int and r["requests"] >= 0, r
        assert type(r["request_duration_ms"]) is float and r["request_duration_ms"] >= 0, r
        assert type(r["rss_kb"]) is int and r["rss_kb"] > 0, r
        assert type(r["last_uri"]) is str, r
    # Without ?full: the same figures, no rows; through Nginx too.
    plain = pm_status()
    assert want - {"processes"} <= set(plain) and "processes" not in plain, set(plain)
    s, h, b = http("GET", "/status?full")
    assert s == 200 and h.get("Content-Type") == "application/json" and "processes" in json_body(b), (s, b[:200])

    # last_uri is each worker's last request, with its method and query string.
    for i, (method, path) in enumerate([("GET", "/cpu-intensive?n=1234&row=a"), ("HEAD", "/expensive-computation?n=9&method=fast&row=b"),
                                        ("GET", "/no-such-page?row=c"), ("GET", "/?row=d")]):
        s, h, b = (head if method == "HEAD" else get)(path)
        pid = int(h["X-Worker"])
        row = wait_until(lambda: next((r for r in pm_status(full=True)["processes"]
                                       if r["pid"] == pid and r["state"] == "idle"), None), 10)
        assert row["last_uri"] == f"{method} {path}", f"worker {pid} last_uri {row['last_uri']!r}, expected {method} {path!r}"
        assert row["requests"] >= 1 and row["request_duration_ms"] >= 0, row

    # A request in flight: its worker is busy on it, and its duration grows.
    slow = Background(get, "/io-intensive?ms=1500&row=slow")
    try:
        pid = wait_until(lambda: busy_row(lambda r: r["last_uri"] == "GET /io-intensive?ms=1500&row=slow"), 20,
                         interval=0.02, message="a busy row for the slow request")
        first = next(r for r in pm_status(full=True)["processes"] if r["pid"] == pid)
        time.sleep(0.3)
        second = next(r for r in pm_status(full=True)["processes"] if r["pid"] == pid)
        st = pm_status()
    finally:
        s, h, b = slow.result(60)
    assert_app_answer(s, h, b)
    if second["state"] == "busy":
        assert second["request_duration_ms"] > first["request_duration_ms"] > 0, (first, second)
    assert st["active_processes"] >= 1, st


def test_max_worker_rss_recycles_the_bloated_worker():
    limit_mb = 40
    with perfcgi_with(max_worker_rss_mb=limit_mb, max_held_mb=256):
        wait_workers(WORKERS)
        before = restarts()
        held, bloated = [], None
        with Load(["/"], threads=2) as load:
            for _ in range(60):
                s, h, b = get("/memory-test?mb=16&hold=1")
                held.append((s, b[:200]))
                if s != 200:
                    break
                obj = json_body(b)
                if obj["rss_after_kb"] > limit_mb * 1024:
                    bloated = obj["worker"]
                    break
            assert all(s == 200 for s, _ in held), f"/memory-test?hold=1 failed: {held[-1]}"
            assert bloated, f"no worker went above {limit_mb} MiB in {len(held)} requests"
            wait_until(lambda: restarts()["max_rss"] >= before["max_rss"] + 1, SETTLE,
                       message="worker_restarts.max_rss grew")
            wait_until(lambda: not proc_alive(bloated), SETTLE, message=f"bloated worker {bloated} gone")
            now = wait_until(lambda: settled(WORKERS), SETTLE, message="back to WORKERS workers")
            served = load.ok
            load.wait_for(served + 10)
        assert bloated not in now
        assert not load.failures, f"requests failed while the bloated worker was replaced: {load.summary()}"
        after = restarts()
        assert after["crash"] == before["crash"], (before, after)


# --- logs and privileges -------------------------------------------------------------------------

ACCESS_LINE = re.compile(r'^(?P<remote>\S+) - - \[(?P<when>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
                         r'"(?P<method>[A-Z]+) (?P<target>[^" ]+)" (?P<status>\d{3}) (?P<bytes>\d+) '
                         r'(?P<ms>\d+(?:\.\d+)?) (?P<pid>\d+)$')


def _read_lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def _parse_access(lines, path):
    out = []
    for ln in lines:
        m = ACCESS_LINE.match(ln)
        assert m, f"{path}: line does not match the access log format: {ln!r}"
        out.append(m.groupdict())
    return out


def test_access_log_and_usr1_reopen():
    log = os.path.join(STACK.run_dir, "access.log")
    with perfcgi_with(access_log=log) as master:
        kids = set(wait_workers(WORKERS))
        sent = {}
        for method, path in [("GET", "/?al=1"), ("GET", "/cpu-intensive?n=100&al=2"), ("HEAD", "/?al=3"),
                             ("GET", "/cpu-intensive?n=x&al=4"), ("GET", "/no-such-page?al=5")]:
            s, h, b = (head if method == "HEAD" else get)(path)
            sent[path] = (method, s, len(b), int(h["X-Worker"]))
        lines = wait_until(lambda: (ls := _read_lines(log)) and len(ls) >= len(sent) and ls, 10,
                           message="access log lines")
        entries = {e["target"]: e for e in _parse_access(lines, log)}
        now = datetime.datetime.now(datetime.timezone.utc)
        for path, (method, status, size, pid) in sent.items():
            e = entries.get(path)
            assert e, f"no access log line for {method} {path}: {lines}"
            assert e["method"] == method and int(e["status"]) == status, (path, e)
            assert int(e["bytes"]) == size, f"{path}: {e['bytes']} bytes logged, {size} received"
            assert int(e["pid"]) == pid and pid in kids, (path, e, pid)
            assert e["remote"] == "127.0.0.1", e
            when = datetime.datetime.strptime(e["when"], "%d/%b/%Y:%H:%M:%S %z")
            assert abs((now - when).total_seconds()) < 300, (e["when"], now)

        # Rotation: move the file away, USR1, and new requests go to a new file.
        _rotate_and_check(log, master)


def _rotate_and_check(log, master):
    """Renames the access log, sends USR1 to the master, and checks that requests sent
    afterwards are all logged to a new file at the original path, none to the old one."""
    os.rename(log, log + ".1")
    try:
        os.kill(master, signal.SIGUSR1)
        wait_until(lambda: os.path.exists(log), 10, message="a new access log after USR1")
        time.sleep(0.5)  # every worker gets the signal
        marks = [f"/?rot={i}" for i in range(24)]
        served_by = set()
        for path in marks:
            s, h, b = get(path)
            assert_app_answer(s, h, b)
            served_by.add(int(h["X-Worker"]))

        def targets(path):
            return {e["target"]: int(e["pid"]) for e in _parse_access(_read_lines(path), path)}

        def logged_somewhere():
            seen = {**targets(log + ".1"), **targets(log)}
            return all(p in seen for p in marks)
        try:
            wait_until(logged_somewhere, 10, message="the new requests in an access log")
        except AssertionError:
            pass  # reported below, with where each one went
        new_t, old_t = targets(log), targets(log + ".1")
        missing = [p for p in marks if p not in new_t and p not in old_t]
        stray = sorted({old_t[p] for p in marks if p in old_t})
        assert not missing and not stray and all(p in new_t for p in marks), \
            f"after USR1 (rename, then kill -USR1 {master}): of {len(marks)} requests served by workers " \
            f"{sorted(served_by)}, {sum(p in new_t for p in marks)} went to the new {log}, " \
            f"{sum(p in old_t for p in marks)} to the rotated file (workers {stray} kept writing there), " \
            f"{len(missing)} to neither"
    finally:
        for path in (log, log + ".1"):
            if os.path.exists(path):
                os.unlink(path)


def test_usr1_reopens_the_access_log_of_workers_run_as_nobody():
    # Log rotation must work when the workers have dropped to `user`: they can no longer
    # open a root-owned file in a root-owned directory themselves.
    if os.geteuid() != 0:
        raise Skip("needs root (user is only used when started as root)")
    log = os.path.join(STACK.run_dir, "access-nobody.log")
    with perfcgi_with(user="nobody", access_log=log) as master:
        wait_workers(WORKERS)
        s, h, b = get("/?before=1")
        assert_app_answer(s, h, b)
        wait_until(lambda: any("before=1" in ln for ln in _read_lines(log)), 10,
                   message="the access log written by workers run as nobody")
        _rotate_and_check(log, master)


def test_unbootable_workers_stop_the_master():
    if os.geteuid() != 0:
        raise Skip("needs root (user is only used when started as root)")
    s = stack_perfcgi_settings()
    args = [str(PERFCGI_BIN), "--user", "no-such-user", "--workers", "2",
            "--bind", f"127.0.0.1:{free_port()}", "--status-bind", f"127.0.0.1:{free_port()}",
            "--redis-url", s["redis_url"], "--database-url", s["database_url"]]
    with Proc(args) as p:
        rc, out, err = p.wait(30)
    assert rc == 1, f"exit {rc} with --user no-such-user (1 expected): {err.strip()[-500:]}"
    assert "no-such-user" in err, f"the message does not name the user: {err.strip()!r}"
    assert err.count("\n") < 30, f"looks like a fork loop ({err.count(chr(10))} lines): {err[-500:]!r}"


def test_workers_drop_to_user_nobody():
    if os.geteuid() != 0:
        raise Skip("needs root (user is only used when started as root)")
    import pwd
    nobody = pwd.getpwnam("nobody")
    with perfcgi_with(user="nobody") as master:
        kids = wait_workers(WORKERS)
        assert proc_ids(master, "Uid") == [0, 0, 0, 0], f"the master runs as {proc_ids(master, 'Uid')}"
        for pid in kids:
            assert proc_ids(pid, "Uid") == [nobody.pw_uid] * 4, f"worker {pid}: Uid {proc_ids(pid, 'Uid')}"
            assert proc_ids(pid, "Gid") == [nobody.pw_gid] * 4, f"worker {pid}: Gid {proc_ids(pid, 'Gid')}"
        st = os.stat(app_socket())
        assert st.st_uid == nobody.pw_uid, f"{app_socket()} is owned by uid {st.st_uid}"
        for path in ("/", "/io-intensive?ms=1", "/cached-data?category=42", "/cpu-intensive?n=100"):
            s, h, b = get(path)
            obj = assert_app_answer(s, h, b)
            assert obj["worker"] in kids, (obj["worker"], kids)


# --- the listen queue -----------------------------------------------------------------------------

def test_listen_queue_is_read_from_the_kernel():
    if WORKER_CLASS == "event":
        raise Skip("an event worker accepts every connection at once: nothing waits in the kernel")
    # One request at a time in the one worker, so the others wait in the kernel's queue.
    with perfcgi_with(workers=1, threads=1):
        wait_workers(1)
        slow = [Background(get, f"/io-intensive?ms=500&lq={i}") for i in range(20)]
        seen = []
        try:
            while any(b.running() for b in slow) and len(seen) < 5000:
                st = pm_status()
                seen.append((st["listen_queue"], st["max_listen_queue"], st["listen_queue_len"], st["active_processes"]))
                time.sleep(0.05)
        finally:
            answers = [b.result(90) for b in slow]
        for s, h, b in answers:
            assert_app_answer(s, h, b)
        peak = max(q for q, _, _, _ in seen)
        assert peak > 0, f"listen_queue never above 0 with 1 worker and 20 concurrent slow requests: {seen[:20]}"
        assert all(mx >= q for q, mx, _, _ in seen), [x for x in seen if x[1] < x[0]][:5]
        # The backlog (2048 by default), as the kernel caps it.
        with open("/proc/sys/net/core/somaxconn") as f:
            backlog = min(2048, int(f.read()))
        assert all(ln == backlog for _, _, ln, _ in seen), {ln for _, _, ln, _ in seen}
        assert any(a == 1 for _, _, _, a in seen), "/status never showed the worker busy"
        final = pm_status()
        assert final["max_listen_queue"] >= peak and final["listen_queue"] == 0, (final, peak)


# --- README promises: the pool, request deadlines, stopping, crashes, logs -------------------

def _log_since(offset):
    """The stack's perfcgi log from byte `offset` on (the lines a test provoked)."""
    with open(os.path.join(STACK.run_dir, "perfcgi.log"), "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _log_size():
    return os.path.getsize(os.path.join(STACK.run_dir, "perfcgi.log"))


def _pg_sleeps_running():
    """Queries of perfcgi's pool that PostgreSQL is running pg_sleep for right now."""
    return int(psql("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid()"))


def _perfcgi_backends():
    """The PostgreSQL backend pids serving perfcgi's connections (psql's own excluded)."""
    out = psql("SELECT pid FROM pg_stat_activity WHERE datname = 'perfcgi' AND backend_type = 'client backend' "
               "AND pid <> pg_backend_pid()")
    return {int(x) for x in out.split()}


def test_busy_pool_answers_503_pool_timeout_after_pool_timeout():
    if WORKER_CLASS == "sync":
        raise Skip("a sync worker runs one request at a time: its own pool is never busy when a request asks")
    pool_timeout = 2
    with perfcgi_with(workers=1, threads=2, pool_size=1, pool_max_overflow=0, pool_timeout=pool_timeout):
        (pid,) = wait_workers(1)
        holder = Background(get, "/io-intensive?ms=6000&hold=1")
        try:
            wait_until(lambda: _pg_sleeps_running() >= 1, 20, message="the pool's only connection in use")
            t0 = time.monotonic()
            s, h, b = get("/io-intensive?ms=1&waiter=1")
            took = time.monotonic() - t0
        finally:
            hs, hh, hb = holder.result(60)
        # Through Nginx, from the application: JSON, its code, the worker that answered.
        obj = assert_error(s, h, b, 503, "pool_timeout")
        assert int(h["X-Worker"]) == pid, (h["X-Worker"], pid)
        assert h.get("Retry-After", "").strip().isdigit(), f"Retry-After {h.get('Retry-After')!r}"
        assert isinstance(obj.get("message"), str) and obj["message"], obj
        print(f"503 pool_timeout after {took:.3f} s (pool_timeout = {pool_timeout} s)")
        # The documented bound: it waited for a connection about pool_timeout, no less,
        # and gave up then (not when the holder finished, 6 s after it began).
        assert pool_timeout - 0.25 <= took <= pool_timeout + 1.5, \
            f"503 pool_timeout after {took:.3f} s, pool_timeout is {pool_timeout} s"
        assert_app_answer(hs, hh, hb)
        m = parse_metrics(http("GET", "/metrics")[2].decode())
        assert metric_sum(m, "perfcgi_pool_timeouts_total") >= 1, "perfcgi_pool_timeouts_total did not count it"
        # The time it waited counts as pool wait, although the wait ended in an error.
        waited = metric_sum(m, "perfcgi_pool_wait_seconds_total")
        assert waited >= pool_timeout - 0.25, f"perfcgi_pool_wait_seconds_total is {waited} after a {took:.3f} s wait"


def test_backend_wait_past_the_deadline_answers_504_timeout():
    timeout = 3  # backend waits end one second before: at 2 s
    with perfcgi_with(timeout=timeout):
        kids = set(wait_workers(WORKERS))
        before = restarts()
        t0 = time.monotonic()
        s, h, b = get("/io-intensive?ms=6000&late=1")
        took = time.monotonic() - t0
        obj = assert_error(s, h, b, 504, "timeout")
        assert int(h["X-Worker"]) in kids, (h["X-Worker"], kids)
        assert isinstance(obj.get("message"), str) and obj["message"], obj
        print(f"504 timeout after {took:.3f} s (timeout = {timeout} s, deadline {timeout - 1} s)")
        # At the deadline, one second before timeout: not after it (the master would
        # then have killed the worker, and Nginx answered its own 502).
        assert timeout - 1 - 0.25 <= took < timeout, f"504 after {took:.3f} s, the deadline is {timeout - 1} s"
        # The application answered in time: its master did not have to kill the worker.
        s, h, b = get("/io-intensive?ms=1")
        assert_app_answer(s, h, b)
        assert restarts() == before, (before, restarts())
        assert set(wait_workers(WORKERS)) == kids


def test_slow_requests_counts_requests_over_half_the_timeout():
    timeout = 4  # slow: over 2 s; backend waits end at 3 s
    with perfcgi_with(timeout=timeout):
        wait_workers(WORKERS)
        first = pm_status()["slow_requests"]
        s, h, b = get("/io-intensive?ms=300&fast=1")
        assert_app_answer(s, h, b)
        assert pm_status()["slow_requests"] == first, "a 0.3 s request counted as slow (timeout 4 s)"
        s, h, b = get("/io-intensive?ms=2400&slow=1")
        assert_app_answer(s, h, b)
        wait_until(lambda: pm_status()["slow_requests"] == first + 1, 10,
                   message="slow_requests counted the 2.4 s request (over timeout/2 = 2 s)")
        m = parse_metrics(http("GET", "/metrics")[2].decode())
        assert m[("perfcgi_slow_requests_total", ())] == first + 1, m[("perfcgi_slow_requests_total", ())]


def _quick_stop(sig):
    """A request with seconds of work left, then `sig` to the master: (master's exit
    status, seconds the master took to exit, the request's answer, the log)."""
    with OwnPerfcgi(name=f"stop-{sig.name.lower()}", graceful_timeout=30) as own:
        slow = Background(get, "/io-intensive?ms=8000&quick=1")
        try:
            wait_until(lambda: busy_row(lambda r: "quick=1" in r["last_uri"]), 20, interval=0.02,
                       message="a worker busy on the slow request")
            t0 = time.monotonic()
            os.kill(own.pid, sig)
            rc = own.wait(20)
            took = time.monotonic() - t0
            left = process_group_members(own.pid)
        finally:
            answer = slow.result(60)
        assert not left, f"{sig.name}: processes {left} outlived the master"
        return rc, took, answer, own.log_text()


def test_quit_and_int_stop_at_once_cutting_requests_in_flight():
    for sig in (signal.SIGQUIT, signal.SIGINT):
        rc, took, (s, h, b), log = _quick_stop(sig)
        print(f"{sig.name}: the master exited {rc} after {took:.3f} s with 8 s of work in flight")
        assert rc == 0, f"{sig.name}: exit {rc}: {log[-600:]}"
        assert "stopping now" in log, f"{sig.name}: {log[-600:]}"
        # Quick: not the 8 s the request needed, nor graceful_timeout (30 s).
        assert took < 5, f"{sig.name}: the master took {took:.1f} s to stop with a request in flight"
        # The request was cut: Nginx answers its own JSON 502, not the application's 200.
        assert_error(s, h, b, 502, "backend_unavailable", from_app=False)


def test_term_kills_requests_still_running_at_graceful_timeout():
    graceful = 2
    with OwnPerfcgi(name="graceful", graceful_timeout=graceful) as own:
        slow = Background(get, "/io-intensive?ms=9000&graceful=1")
        try:
            wait_until(lambda: busy_row(lambda r: "graceful=1" in r["last_uri"]), 20, interval=0.02,
                       message="a worker busy on the slow request")
            t0 = time.monotonic()
            os.kill(own.pid, signal.SIGTERM)
            rc = own.wait(30)
            took = time.monotonic() - t0
            left = process_group_members(own.pid)
        finally:
            s, h, b = slow.result(60)
        assert not left, f"processes {left} outlived the master"
        log = own.log_text()
    print(f"TERM: the master exited {rc} after {took:.3f} s (graceful_timeout = {graceful} s, 9 s of work in flight)")
    assert "stopping gracefully" in log and "still running at the stop deadline; killing them" in log, log[-800:]
    # Not before the deadline (the request was given its time), and not the 9 s it wanted.
    assert graceful - 0.25 <= took <= graceful + 1.5, f"the master exited {took:.2f} s after TERM"
    assert rc == 0, f"exit {rc}: {log[-600:]}"
    assert_error(s, h, b, 502, "backend_unavailable", from_app=False)


def test_crash_storm_slows_respawning_down():
    wait_workers(WORKERS)
    offset = _log_size()
    before = restarts()
    first_seen = {}  # pid -> when /status first listed it
    ready, killed = set(), []
    started = time.monotonic()
    try:
        # Every worker dies as soon as it serves (seen ready in two reads, so its start
        # is over: a worker that dies starting counts as unbootable), for 5 s.
        while time.monotonic() - started < 5:
            now = time.monotonic()
            for r in pm_status(full=True)["processes"]:
                first_seen.setdefault(r["pid"], now)
                if r["state"] in ("idle", "busy"):
                    if r["pid"] in ready and r["pid"] not in killed:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(r["pid"], signal.SIGKILL)
                        killed.append(r["pid"])
                    ready.add(r["pid"])
            time.sleep(0.01)
    finally:
        after = wait_workers(WORKERS, SETTLE)
    log = _log_since(offset)
    spawned = sorted(t for pid, t in first_seen.items() if t > started)
    gaps = [b - a for a, b in zip(spawned, spawned[1:])]
    print(f"crash storm: {len(killed)} workers killed, {len(spawned)} spawned in 5 s, "
          f"longest pause between spawns {max(gaps, default=0):.2f} s")
    assert "workers are dying fast; respawning in" in log, f"no back-off logged: {log[-800:]}"
    assert restarts()["crash"] - before["crash"] == len(killed), (before, restarts(), len(killed))
    # Slowed down: the master waits before it forks again, so spawning pauses for most of
    # a second at least once, and 5 s of instant deaths cost a bounded number of forks.
    assert max(gaps, default=0) >= 0.7, f"no pause in spawning: {[round(g, 2) for g in gaps]}"
    assert len(spawned) <= 60, f"{len(spawned)} workers forked in 5 s"
    s, h, b = get("/")
    assert assert_app_answer(s, h, b)["worker"] in after


def test_pool_recycle_reopens_connections_older_than_it():
    with perfcgi_with(workers=1, threads=1, pool_size=1, pool_max_overflow=0, pool_recycle=1):
        wait_workers(1)

        def connects():
            m = parse_metrics(http("GET", "/metrics")[2].decode())
            return metric_sum(m, "perfcgi_pool_connects_total")

        def request():
            s, h, b = get("/io-intensive?ms=1")
            assert_app_answer(s, h, b)
        # The connections of the perfcgi before this one may take a moment to go.
        wait_until(lambda: not _perfcgi_backends(), 20, message="no PostgreSQL connection before the first request")
        request()
        # The readiness prober's ping shows here for a moment each second: wait it out.
        first = wait_until(lambda: len(b := _perfcgi_backends()) == 1 and b, 10,
                           message="one PostgreSQL connection after the first request")
        opened = connects()
        # Younger than pool_recycle: the same connection serves.
        request()
        assert connects() == opened, (opened, connects())
        wait_until(lambda: _perfcgi_backends() == first, 10, message=f"the same PostgreSQL backend {first}")
        # Older than pool_recycle: closed and opened again, on checkout.
        time.sleep(1.5)
        request()
        assert connects() == opened + 1, f"perfcgi_pool_connects_total {opened} -> {connects()} after pool_recycle"
        wait_until(lambda: (b := _perfcgi_backends()) and not b & first and len(b) == 1, 10,
                   message=f"PostgreSQL backend {first} closed after pool_recycle, one new one open")


def test_pool_overflow_connections_linger_under_steady_load():
    if WORKER_CLASS == "sync":
        raise Skip("a sync worker runs one request at a time: its pool never grows past pool_size")
    size, overflow = 1, 4
    with perfcgi_with(workers=1, threads=8, pool_size=size, pool_max_overflow=overflow):
        wait_workers(1)

        def pool():
            m = parse_metrics(http("GET", "/metrics")[2].decode())
            return {"connects": metric_sum(m, "perfcgi_pool_connects_total"),
                    "checkouts": metric_sum(m, "perfcgi_pool_checkouts_total"),
                    "open": metric_sum(m, "perfcgi_pool_connections", state="open")}
        before = pool()
        # More concurrent queries than pool_size but fewer than its maximum, steadily:
        # no request waits for a connection, so each one released above pool_size
        # finds no taker; the pool must keep it for the next request instead of
        # opening one per request.
        with Load(["/io-intensive?ms=50"], threads=size + 2) as load:
            time.sleep(3)
            load.wait_for(150, 60)
            during = pool()
        assert not load.failures, load.summary()
        connects = during["connects"] - before["connects"]
        checkouts = during["checkouts"] - before["checkouts"]
        print(f"steady load: {load.summary()}; {connects:.0f} connects for {checkouts:.0f} checkouts, "
              f"{during['open']:.0f} open")
        assert checkouts >= 100, f"only {checkouts} checkouts under load"
        assert connects <= 10, f"{connects:.0f} PostgreSQL connections opened for {checkouts:.0f} checkouts"
        # The load over, the overflow connections go after their linger time (2 s).
        t0 = time.monotonic()
        wait_until(lambda: pool()["open"] <= size and len(_perfcgi_backends()) <= size, 15,
                   message=f"the pool back to pool_size ({size}) once idle")
        print(f"pool back to {size} connection(s) {time.monotonic() - t0:.1f} s after the load")


def test_preload_serves_and_checks_the_database_url_before_forking():
    with OwnPerfcgi(name="preload", preload="true"):
        s, h, b = get("/expensive-computation?n=93&method=memo")
        assert assert_app_answer(s, h, b)["result"] == "12200160415121876738"
        s, h, b = get("/io-intensive?ms=1")
        assert_app_answer(s, h, b)
    bad = "definitely not a connection string"
    base = [str(PERFCGI_BIN), "--workers", "1", "--database-url", bad,
            "--bind", f"127.0.0.1:{free_port()}", "--status-bind", f"127.0.0.1:{free_port()}"]
    with Proc(base + ["--preload"]) as p:
        rc, out, err = p.wait(20)
    assert rc != 0, f"--preload with database_url {bad!r} started (exit {rc}): {err[-400:]}"
    assert "database_url" in err, f"the message does not name database_url: {err.strip()!r}"
    assert err.count("\n") < 5, err
    # Without preload the URL is only tried by the workers, on the first request.
    with Proc(base) as p:
        time.sleep(1.0)
        assert p.p.poll() is None, f"without --preload perfcgi stopped: {p.p.stderr.read()[-400:]}"


def test_usr1_makes_workers_reopen_the_error_log():
    log = os.path.join(STACK.run_dir, "error-rotate.log")
    limit = 12
    try:
        with perfcgi_with(workers=1, error_log=log, log_level="debug", max_requests=limit) as master:
            (pid,) = wait_workers(1)
            before = 3
            for i in range(before):
                assert_app_answer(*get(f"/?before={i}"))
            os.rename(log, log + ".1")
            os.kill(master, signal.SIGUSR1)
            wait_until(lambda: os.path.exists(log), 10, message="a new error log after USR1")
            time.sleep(0.5)  # the worker gets the signal too
            # The same worker, which opened the old file, reaches max_requests and says so.
            for i in range(limit - before):
                s, h, b = get(f"/?after={i}")
                assert_app_answer(s, h, b)
                assert int(h["X-Worker"]) == pid, "another worker served before the limit"
            mark = f"[{pid}] [worker]"
            new = wait_until(lambda: [ln for ln in _read_lines(log) if mark in ln], 10,
                             message=f"worker {pid}'s lines in the new error log")
            old = [ln for ln in _read_lines(log + ".1") if mark in ln and "asking to be replaced" in ln]
            assert any("asking to be replaced" in ln for ln in new), new
            assert not old, f"worker {pid} still wrote to the rotated file: {old}"
    finally:
        for path in (log, log + ".1"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def test_workers_auto_is_two_per_core_plus_one_for_sync_four_per_core_else():
    cores = os.sysconf("SC_NPROCESSORS_ONLN")
    want = 2 * cores + 1 if WORKER_CLASS == "sync" else 4 * cores
    stack("stop", "perfcgi")
    try:
        stack("start", "perfcgi", env={"PERFCGI_WORKERS": "auto"})
        kids = wait_workers(want)
        assert pm_status()["total_processes"] == want == len(kids)
        s, h, b = get("/")
        assert assert_app_answer(s, h, b)["worker"] in kids
    finally:
        restore_perfcgi()


def test_hung_worker_gets_sigabrt_and_exits_before_sigkill():
    with perfcgi_with(timeout=1):
        offset = _log_size()
        hang, victim = _hang_a_worker("abrt=1")
        s, h, b = hang.result(60)
        if s == 200:
            raise Skip(f"/cpu-intensive?n=10000000 took {json_body(b)['elapsed_ms']} ms here, under timeout=1 s")
        wait_until(lambda: not proc_alive(victim), 20, message=f"hung worker {victim} gone")
        wait_workers(WORKERS)
        log = _log_since(offset)
    assert re.search(rf"worker {victim} has been busy for over .*; aborting it", log), log[-800:]
    # Its SIGABRT handler ended it: the master never needed SIGKILL.
    assert f"worker {victim} did not stop in time; killing it" not in log, log[-800:]
    assert_error(s, h, b, 502, "backend_unavailable", from_app=False)
