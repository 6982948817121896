"""Drain on TERM and reloads in batches (issue 12, item 3), through Nginx, for every
worker class: /readyz turns 503 at once while the workers keep serving for drain_delay,
a second TERM cuts the delay short, connections queued in the listen backlog when the
graceful stop begins are answered rather than reset, and reload_batch caps the workers
running at once during a HUP.
"""

import os
import signal
import threading
import time

from harness import (PROBE_COMM, WORKER_CLASS, Load, OwnPerfcgi, assert_app_answer, children_of, get, json_body,
                     master_http, pm_status, proc_comm, restarts, settled, wait_until)
from test_process_manager import Background

SETTLE = 60


def readyz():
    status, _, body = master_http("/readyz")
    return status, json_body(body)


def test_term_drains_for_drain_delay_with_readyz_503():
    delay = 2
    with OwnPerfcgi(name="drain", drain_delay=delay) as own:
        wait_until(lambda: readyz()[0] == 200, 30, message="/readyz 200 before the TERM")
        with Load(["/", "/io-intensive?ms=20"], threads=4) as load:
            load.wait_for(20)
            t0 = time.monotonic()
            os.kill(own.pid, signal.SIGTERM)
            status, body = wait_until(lambda: (r := readyz())[0] == 503 and r, 5,
                                      interval=0.02, message="/readyz 503 after TERM")
            served = load.ok
            assert body.get("draining") is True, body
            assert "stopping gracefully" not in own.log_text(), "the graceful stop began before the delay"
            assert master_http("/healthz")[0] == 200, "/healthz must stay 200 while draining"
            # Still serving, and still accepting new connections, during the delay.
            time.sleep(max(0.0, t0 + delay * 0.9 - time.monotonic()))
            during = load.ok - served
            assert own.p.poll() is None, "the master exited within drain_delay"
        # Requests that fail once the graceful stop has closed the listeners are not the
        # drain's: only those before the delay could have ended count.
        early = [f for f in load.failures if f[0] < t0 + delay]
        assert not early, f"requests failed during the drain delay: {load.summary()}"
        assert during > 0, f"no request answered during the drain delay: {load.summary()}"
        rc = own.wait(60)
        elapsed = time.monotonic() - t0
        log = own.log_text()
        assert rc == 0, f"the master exited {rc}: {log[-600:]}"
        assert elapsed >= delay, f"the master exited {elapsed:.2f} s after TERM, before drain_delay"
        assert log.index("draining:") < log.index("stopping gracefully"), log[-800:]


def test_second_term_cuts_the_drain_short():
    with OwnPerfcgi(name="drain2", drain_delay=600) as own:
        os.kill(own.pid, signal.SIGTERM)
        wait_until(lambda: readyz()[0] == 503, 5, interval=0.02, message="/readyz 503 after TERM")
        s, h, b = get("/")  # still serving
        assert_app_answer(s, h, b)
        os.kill(own.pid, signal.SIGTERM)
        rc = own.wait(60)  # far within the 600 s delay
        log = own.log_text()
        assert rc == 0, f"the master exited {rc}: {log[-600:]}"
        assert "TERM again: the drain ends now" in log, log[-800:]


def test_quit_during_the_drain_stops_at_once():
    with OwnPerfcgi(name="drain3", drain_delay=600) as own:
        os.kill(own.pid, signal.SIGTERM)
        wait_until(lambda: readyz()[0] == 503, 5, interval=0.02, message="/readyz 503 after TERM")
        os.kill(own.pid, signal.SIGQUIT)
        own.wait(60)  # far within the 600 s delay
        log = own.log_text()
        assert "stopping now" in log and "stopping gracefully" not in log, log[-800:]


def test_graceful_stop_answers_connections_queued_in_the_backlog():
    # One worker serving one connection at a time, busy on a slow request; more requests
    # wait in the kernel's listen queue when TERM comes: every one is answered.
    queued = 4
    with OwnPerfcgi(name="backlog", workers=1, threads=1, worker_connections=1) as own:
        slow = Background(get, "/io-intensive?ms=1500&slow=1")
        wait_until(lambda: any(r["state"] == "busy" for r in pm_status(full=True)["processes"]), 20,
                   interval=0.02, message="the slow request in the worker")
        waiting = [Background(get, f"/?queued={i}") for i in range(queued)]
        wait_until(lambda: pm_status()["listen_queue"] >= queued, 20, interval=0.02,
                   message=f"{queued} connections in the listen queue")
        assert slow.running(), "the slow request ended before TERM: nothing was queued behind it"
        os.kill(own.pid, signal.SIGTERM)
        assert_app_answer(*slow.result(60))
        for i, b in enumerate(waiting):
            obj = assert_app_answer(*b.result(60))
            assert obj, f"queued request {i}"
        rc = own.wait(60)
        assert rc == 0, f"the master exited {rc}: {own.log_text()[-600:]}"


def test_reload_batch_caps_workers_during_hup():
    workers, batch = 4, 1
    with OwnPerfcgi(name="batch", workers=workers, reload_batch=batch) as own:
        old = set(settled(workers) or [])
        assert len(old) == workers
        before = restarts()
        most, pending, stop = [0], [0], threading.Event()

        def sample():
            while not stop.is_set():
                kids = children_of(own.pid)
                if len(kids) > workers + batch:
                    # A child just forked is named perfcgi-probe a moment later if it is
                    # the backend prober (restarted by the reload): not a worker.
                    time.sleep(0.05)
                    kids = [k for k in kids if proc_comm(k) != PROBE_COMM]
                if len(kids) > most[0]:
                    most[0] = len(kids)
                    most.append([(k, proc_comm(k)) for k in kids])
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            with Load(["/", "/io-intensive?ms=20"], threads=6) as load:
                load.wait_for(20)
                os.kill(own.pid, signal.SIGHUP)
                wait_until(lambda: (p := pm_status()["reload_pending"]) > 0 and pending.append(p) is None, 10,
                           interval=0.01, message="a reload under way in /status")
                new = wait_until(lambda: (k := settled(workers)) and not set(k) & old and k, SETTLE,
                                 interval=0.05, message=f"{workers} new workers after the HUP")
                served = load.ok
                load.wait_for(served + 20)
        finally:
            stop.set()
            sampler.join(10)
        assert not load.failures, f"requests failed during a batched reload: {load.summary()}"
        assert most[0] <= workers + batch, \
            f"{most[0]} worker processes at once with workers={workers}, reload_batch={batch}: {most[1:]}"
        assert restarts()["reload"] - before["reload"] >= workers, restarts()
        assert set(new) & set(load.served_by), "the new workers serve nothing"


def test_graceful_stop_under_steady_load_ends_without_the_deadline_kill():
    # Load that never lets a listener's queue empty: a sync or thread worker always finds
    # work waiting, and its wait then returns at once. The TERM must still reach it (it
    # stayed pending until graceful_timeout, and the master killed the worker mid-request).
    # An event worker closes no kept-alive connection on a stop (closing one races with
    # Nginx reusing it): those end with Nginx's keepalive_time, 10 s in the stack's
    # configuration (a connection opened just before the TERM lives on that long after it),
    # so its deadline is well above that.
    deadline = 25 if WORKER_CLASS == "event" else 8
    with OwnPerfcgi(name="steady", workers=2, graceful_timeout=deadline) as own:
        with Load(["/io-intensive?ms=20", "/"], threads=12) as load:
            load.wait_for(100)
            t0 = time.monotonic()
            os.kill(own.pid, signal.SIGTERM)
            rc = own.wait(60)
            print(f"    stopped {time.monotonic() - t0:.2f} s after TERM, under load")
        log = own.log_text()
        assert rc == 0, f"the master exited {rc}: {log[-600:]}"
        assert "still running at the stop deadline" not in log, \
            f"workers kept serving past the TERM until graceful_timeout: {log[-800:]}"
