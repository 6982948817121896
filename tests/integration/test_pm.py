"""A worker count that follows load (issue 12, item 4), for the stack's worker class, through
Nginx: pm dynamic starts pm_start_servers, grows under a load step and retires the surplus
after pm_process_idle_timeout; ondemand starts none and serves the first request; adaptive
spawns on a load step while the measured queue wait is still under its target and retires
after the idle timeout; no request fails either way; bad combinations are refused at start.

Workers take one request each (threads=1; event: worker_connections=2, see ONE_AT_A_TIME),
so a step of concurrent slow requests queues whatever the class. Times are not asserted, only what was decided.
"""

import re
import shutil
import signal
import subprocess
import time

from harness import (PERFCGI_BIN, WORKER_CLASS, Load, OwnPerfcgi, clean_env, get, master_http, metric_sum,
                     parse_metrics, pm_status, restarts, wait_until)

# An event worker keeps Nginx's connections (upstream keepalive, one pool per Nginx
# process): with room for a second one, a worker holding an idle kept-alive connection
# still takes a new one, rather than leave it in the backlog until the keepalive ends.
ONE_AT_A_TIME = {"threads": 1, "worker_connections": 2 if WORKER_CLASS == "event" else 1}
STEP = [f"/io-intensive?ms=200&pm={i}" for i in range(8)]
LIGHT = ["/io-intensive?ms=5"]
SPAWN_LINE = re.compile(r"pm: spawning (\d+) workers? \((\w+)\): .* queue wait p99 ([\d.]+) ms \(target (\d+) ms\)")


def workers():
    return pm_status()["total_processes"]


def decisions(action, reason):
    status, _, body = master_http("/metrics")
    assert status == 200, status
    return metric_sum(parse_metrics(body.decode()), "perfcgi_pm_decisions_total", action=action, reason=reason)


def assert_promtool_clean():
    promtool = shutil.which("promtool")
    if not promtool:
        return  # test_metrics_pass_promtool says it is missing
    status, _, body = master_http("/metrics")
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    report = (r.stdout + r.stderr).decode(errors="replace").strip()
    assert r.returncode == 0 and not report, f"promtool check metrics: exit {r.returncode}: {report}"


def pm_lines(own):
    return "".join(line for line in own.log_text().splitlines(True) if " pm: " in line or "TERM" in line)[-3000:]


def waiting(own, predicate, seconds, message, **kw):
    """wait_until, with the controller's log lines in the failure."""
    try:
        return wait_until(predicate, seconds, message=message, **kw)
    except AssertionError as e:
        raise AssertionError(f"{e}; {pm_status()['pm']}; the log's pm lines:\n{pm_lines(own)}") from None


def grow_under_step(peak_above, seconds=30):
    """Runs the load step until more than peak_above workers run; the Load, still running."""
    load = Load(STEP, threads=len(STEP))
    load.start()
    try:
        wait_until(lambda: workers() > peak_above, seconds, message=f"more than {peak_above} workers under the step")
    except BaseException:
        load.stop()
        raise
    return load


def test_pm_dynamic_grows_under_a_load_step_and_retires_after_the_idle_timeout():
    with OwnPerfcgi(name="pmdyn", start_workers=2, pm="dynamic", workers=6, pm_start_servers=2,
                    pm_min_spare_servers=1, pm_max_spare_servers=2, pm_process_idle_timeout=1,
                    **ONE_AT_A_TIME) as own, Load(LIGHT, threads=1) as light:
        st = pm_status()
        assert st["pm"]["mode"] == "dynamic" and st["total_processes"] == 2, (st["pm"], st["total_processes"])
        step = grow_under_step(2)
        step.wait_for(30)
        peak = workers()
        step.stop()
        assert not step.failures, step.summary()
        assert peak <= 6, f"{peak} workers, pm_max_children is 6"
        assert decisions("spawn", "min_spare") >= 1
        # Load down to one request at a time: the surplus above 2 idle goes after 1 s
        # (how many stay depends on the class: an event worker holding one of Nginx's
        # kept-alive connections, with worker_connections=1, takes no other one).
        waiting(own, lambda: workers() < peak and decisions("retire", "max_spare") >= 1, 30,
                "fewer workers than at the peak, retired for max_spare")
        light.wait_for(light.ok + 5)
        assert restarts()["pm"] >= 1
        log = own.log_text()
        assert "pm: spawning" in log and "(max_spare)" in log, log[-2000:]
        # A reload: a new generation of pm_start_servers, the old workers all replaced.
        old = {row["pid"] for row in pm_status(full=True)["processes"]}
        own.p.send_signal(signal.SIGHUP)
        def replaced():
            rows = pm_status(full=True)["processes"]
            return len(rows) >= 2 and all(r["state"] != "starting" and r["pid"] not in old for r in rows)
        waiting(own, replaced, 30, "every worker replaced after HUP")
        light.wait_for(light.ok + 5)
        assert_promtool_clean()
    assert not light.failures, light.summary()


def test_pm_ondemand_starts_no_worker_and_serves_the_first_request():
    with OwnPerfcgi(name="pmond", start_workers=0, pm="ondemand", workers=3, pm_process_idle_timeout=1,
                    **ONE_AT_A_TIME) as own:
        assert workers() == 0
        status, _, body = get("/io-intensive?ms=1")
        assert status == 200, (status, body[:200])
        assert decisions("spawn", "queued") >= 1
        waiting(own, lambda: workers() == 0, 30, "the idle worker retired after 1 s")
        assert decisions("retire", "idle_timeout") >= 1
        st = pm_status()["pm"]
        assert st["last"]["action"] == "retire" and st["last"]["reason"] == "idle_timeout", st
        # And again from none, under a step this time.
        with Load(STEP[:4], threads=4) as step:
            step.wait_for(20)
        assert not step.failures, step.summary()
        assert "pm: spawning" in own.log_text()


def test_pm_adaptive_spawns_before_the_queue_wait_reaches_its_target():
    target = 1000
    with OwnPerfcgi(name="pmada", start_workers=1, pm="adaptive", workers=8, pm_start_servers=1,
                    pm_min_spare_servers=1, pm_process_idle_timeout=1, pm_target_queue_wait_ms=target,
                    **ONE_AT_A_TIME) as own:
        assert pm_status()["pm"]["mode"] == "adaptive"
        rows = []
        t0 = time.monotonic()

        def sample():
            st = pm_status()
            rows.append((time.monotonic() - t0, st["total_processes"], st["pm"]["queue_wait_p99_ms"]))
            return st["total_processes"]
        step = Load(STEP, threads=len(STEP))
        step.start()
        try:
            wait_until(lambda: sample() > 3, 30, interval=0.2, message="adaptive grew under the step")
            step.wait_for(40)
            for _ in range(5):
                sample()
                time.sleep(0.2)
        finally:
            step.stop()
        assert not step.failures, step.summary()
        spawns = [(int(n), why, float(wait), int(t)) for n, why, wait, t in SPAWN_LINE.findall(own.log_text())]
        assert spawns, own.log_text()[-2000:]
        first = spawns[0]
        assert first[2] < first[3], f"the first spawn came with the queue wait at its target already: {first}"
        assert decisions("spawn", "busy") + decisions("spawn", "queued") + decisions("spawn", "queue_wait") >= 1
        # Step down: back to pm_min_spare_servers after the idle timeout.
        waiting(own, lambda: sample() == 1, 30, "adaptive back to 1 worker", interval=0.2)
        assert decisions("retire", "idle_timeout") >= 1
        assert_promtool_clean()
        print("  adaptive, load step of 8 x /io-intensive?ms=200 then none (t s, workers, queue wait p99 ms):")
        for t, n, wait in rows:
            print(f"    {t:5.1f} {n:3d} {wait if wait is not None else '-'}")
        print(f"  spawn decisions (count, reason, p99 ms, target ms): {spawns}")


def test_pm_bad_combinations_are_refused_at_start():
    cases = [
        (["--pm", "dynamic", "--workers", "8", "--pm-min-spare-servers", "4", "--pm-max-spare-servers", "2"],
         "pm_min_spare_servers (4) must not exceed pm_max_spare_servers (2)"),
        (["--pm", "dynamic", "--workers", "2"], "pm_max_spare_servers (3) must not exceed pm_max_children (2)"),
        (["--pm", "dynamic", "--workers", "8", "--pm-start-servers", "5"],
         "pm_start_servers (5) must be between pm_min_spare_servers (1) and pm_max_spare_servers (3)"),
        (["--pm", "adaptive", "--pm-max-children", "2", "--pm-start-servers", "3"],
         "pm_start_servers (3) must be between pm_min_spare_servers (1) and pm_max_children (2)"),
        (["--pm", "sometimes"], "--pm: 'sometimes' must be one of static, dynamic, ondemand, adaptive"),
    ]
    for args, message in cases:
        # An unused unix socket: were a combination accepted, nothing else is touched.
        p = subprocess.run([str(PERFCGI_BIN), "--bind", "unix:/nonexistent/pm.sock", *args], env=clean_env(),
                           capture_output=True, text=True, timeout=20)
        assert p.returncode != 0 and message in p.stderr, (args, p.returncode, p.stderr[-500:])


def test_pm_dynamic_through_a_usr2_upgrade():
    """The new master of a binary upgrade starts pm_start_servers and takes over once they
    serve, with pm running on both sides; no request fails."""
    from test_upgrade import binary_dir, upgrade_round
    exe = binary_dir("pm-upgrade-bin")
    with OwnPerfcgi(name="pmupg", binary=exe, start_workers=4, pm="dynamic", workers=6, pm_start_servers=4,
                    pm_max_spare_servers=4, pm_process_idle_timeout=1) as own, Load(LIGHT, threads=2) as load:
        load.wait_for(10)
        old_master, old_workers, new_master, new_workers, through, _ = upgrade_round(own, exe, PERFCGI_BIN, load)
        assert new_master != old_master and not new_workers & old_workers, (old_master, new_master)
        load.wait_for(load.ok + 10)
        st = pm_status()
        assert st["pm"]["mode"] == "dynamic" and st["upgrade"] == "none", st["pm"]
    assert not load.failures, load.summary()
