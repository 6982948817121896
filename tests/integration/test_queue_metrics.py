"""Queue wait and busy seconds (issue 12, item 6), for the stack's worker class, through
Nginx (it stamps each request: fastcgi_param REQUEST_START $msec).

perfcgi runs with 2 workers that take one request each (threads=1, worker_connections=1),
so 6 slow requests at once queue whatever the class. Times are not asserted: that the
queue-wait histogram counted the requests and moved above its smallest bucket, that busy
seconds grew under load, stay flat at rest and survive the workers' replacement.
"""

import concurrent.futures
import os
import time

import signal

from harness import (WORKER_CLASS, get, master_http, metric_sum, parse_metrics, perfcgi_with, pm_status, settled,
                     signal_master, wait_until)

SLOW = 6


def metrics():
    status, h, body = master_http("/metrics")
    assert status == 200, (status, body[:200])
    return parse_metrics(body.decode())


def waits(m, le=None):
    if le is None:
        return metric_sum(m, "perfcgi_request_queue_wait_seconds_count", endpoint="io_intensive")
    return metric_sum(m, "perfcgi_request_queue_wait_seconds_bucket", endpoint="io_intensive", le=le)


def busy(m):
    return metric_sum(m, "perfcgi_busy_seconds_total", **{"class": WORKER_CLASS})


def test_queue_wait_and_busy_seconds_when_requests_outnumber_workers():
    tag = f"qw{os.getpid()}"
    with perfcgi_with(workers=2, threads=1, worker_connections=1):
        before = metrics()
        assert metric_sum(before, "perfcgi_workers", **{"class": WORKER_CLASS}) == 2, "the worker count gauge"
        slow = [f"/io-intensive?ms=200&{tag}={i}" for i in range(SLOW)]
        with concurrent.futures.ThreadPoolExecutor(SLOW) as pool:
            answers = list(pool.map(get, slow))
        assert all(s == 200 for s, h, b in answers), [(s, b[:100]) for s, h, b in answers]
        after = metrics()
        counted = waits(after) - waits(before)
        assert counted >= SLOW, f"{SLOW} stamped requests, {counted} queue waits counted"
        smallest = waits(after, "0.001") - waits(before, "0.001")
        assert counted - smallest > 0, \
            f"{SLOW} requests on 2 workers that take one each, yet every wait is in the smallest bucket"
        assert busy(after) > busy(before), f"busy seconds did not grow under load: {busy(before)} {busy(after)}"
        st = pm_status()
        assert st["queue_wait"]["io_intensive"]["count"] >= SLOW, st["queue_wait"]
        assert st["busy_seconds"] >= busy(after) - 0.001, (st["busy_seconds"], busy(after))

        rest = busy(metrics())
        time.sleep(1.5)
        assert busy(metrics()) == rest, "busy seconds grew with no request in flight"

        # Workers replaced by a reload: what they were busy for stays counted.
        old = set(settled(2))
        signal_master(signal.SIGHUP)

        def replaced():
            pids = settled(2)
            return pids and old.isdisjoint(pids)
        wait_until(replaced, 30, message="2 new workers after HUP")
        assert busy(metrics()) >= rest, f"busy seconds dropped when workers were replaced: {rest} {busy(metrics())}"
        assert metrics()[("perfcgi_request_queue_wait_seconds_count", (("endpoint", "io_intensive"),))] \
            == waits(after), "queue waits of replaced workers are kept"
