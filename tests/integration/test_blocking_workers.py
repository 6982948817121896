"""The sync and thread classes against peers that stall or keep their connection: a
request sent half-way, or sent one byte at a time, must not pin the only worker; a
kept-alive connection (FCGI_KEEP_CONN) gets its next request served, is closed after
keepalive_timeout idle, and gives way to a connection waiting in the listen queue; a
thread-class worker stops promptly on TERM.

No stack needed: each test starts its own perfcgi (harness.PrivatePerfcgi) with one
worker and one thread, so one pinned connection would block every other request.
"""

import os
import signal
import struct
import threading
import time

from harness import PrivatePerfcgi, wait_until
from test_event_worker import Conn, request

NEEDS_STACK = False

BEGIN, PARAMS = 1, 4
# A normal request must be answered within this, where a pinned worker never answers.
ANSWER_BOUND = 8.0


def half_sent_request():
    """BEGIN_REQUEST, then a PARAMS record announcing 200 bytes of which 20 are sent."""
    begin = struct.pack("!BBHHBx", 1, BEGIN, 1, 8, 0) + struct.pack("!HB5x", 1, 0)
    params = struct.pack("!BBHHBx", 1, PARAMS, 1, 200, 0) + b"\x0e\x03REQUEST_METHOD"[:20]
    return begin + params


def answered_in_time(pc):
    """A normal request on a second connection: how long its 200 took, or None if it got
    none within ANSWER_BOUND + 5 s."""
    t0 = time.monotonic()
    try:
        code, text = pc.request("/", timeout=ANSWER_BOUND + 5)
    except (OSError, EOFError):
        return None
    took = time.monotonic() - t0
    assert code == 200 and "Hello, World!" in text, (code, text[:300])
    return took


def busy_while_reading(pc):
    """Whether /status shows the worker busy while it waits for the rest of the request."""
    def busy():
        st = pc.status(full=True)
        return st["active_processes"] == 1 and st["processes"][0]["state"] == "busy"
    try:
        return wait_until(busy, 0.9, interval=0.05)
    except AssertionError:
        return False


def check_half_sent_request(worker_class, tcp):
    with PrivatePerfcgi(worker_class, tcp=tcp, workers=1, threads=1, timeout=2) as pc:
        hostile = pc.connect()
        try:
            hostile.sendall(half_sent_request())
            busy = busy_while_reading(pc)
            took = answered_in_time(pc)
            assert took is not None and took < ANSWER_BOUND, \
                f"no answer within {ANSWER_BOUND + 5:g}s behind a half-sent request (took {took})"
            assert busy, "the worker reading the half-sent request was not counted busy"
            print(f"    {worker_class} {'tcp' if tcp else 'unix'}: answered after {took:.2f}s")
        finally:
            hostile.close()


def test_sync_half_sent_request_does_not_pin_the_worker_unix():
    check_half_sent_request("sync", tcp=False)


def test_sync_half_sent_request_does_not_pin_the_worker_tcp():
    check_half_sent_request("sync", tcp=True)


def test_thread_half_sent_request_does_not_pin_the_worker_unix():
    check_half_sent_request("thread", tcp=False)


def test_thread_half_sent_request_does_not_pin_the_worker_tcp():
    check_half_sent_request("thread", tcp=True)


def check_trickled_request(worker_class):
    """A peer that sends one byte of its request every 0.4 s never hits the socket's read
    timeout (1 s here); the master's `timeout` (2 s) must still free the worker: it counts
    a worker reading a request as busy."""
    with PrivatePerfcgi(worker_class, workers=1, threads=1, timeout=2) as pc:
        hostile = pc.connect()
        stop = threading.Event()

        def trickle():
            data = half_sent_request() + b"x" * 200
            for i in range(len(data)):
                if stop.is_set():
                    return
                try:
                    hostile.send(data[i:i + 1])
                except OSError:
                    return
                stop.wait(0.4 if i >= 8 else 0)
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            time.sleep(0.5)
            took = answered_in_time(pc)
            assert took is not None and took < ANSWER_BOUND, \
                f"no answer within {ANSWER_BOUND + 5:g}s behind a trickling request (took {took})"
            print(f"    {worker_class}: answered after {took:.2f}s")
        finally:
            stop.set()
            hostile.close()
            t.join(5)


def test_sync_trickled_request_does_not_pin_the_worker():
    check_trickled_request("sync")


def test_thread_trickled_request_does_not_pin_the_worker():
    check_trickled_request("thread")


def check_kept_connection(worker_class):
    with PrivatePerfcgi(worker_class, workers=1, threads=1, keepalive_timeout=30) as pc:
        kept = Conn(pc.address, timeout=5)
        try:
            for rid, query in ((1, ""), (2, "x=1")):  # the second on the same connection
                kept.send(request(rid, "/", query))
                out, status = kept.response(rid)
                assert status == 0 and b"Hello, World!" in out, out[:300]
            # Idle now, and the only worker's: a new connection must not wait 30 s for it.
            t0 = time.monotonic()
            other = Conn(pc.address, timeout=5)
            try:
                other.send(request(1, "/", keep=False))
                out, status = other.response(1)
                took = time.monotonic() - t0
                assert status == 0 and b"Hello, World!" in out, out[:300]
            finally:
                other.close()
            assert kept.closed(wait=2), "the idle kept connection is still open after giving way"
            print(f"    {worker_class}: a waiting connection served after {took:.3f}s")
        finally:
            kept.close()
    with PrivatePerfcgi(worker_class, workers=1, threads=1, keepalive_timeout=1) as pc:
        kept = Conn(pc.address, timeout=5)
        try:
            kept.send(request(1, "/"))
            kept.response(1)
            t0 = time.monotonic()
            assert kept.closed(wait=4), "an idle kept connection outlived keepalive_timeout (1 s) by 3 s"
            print(f"    {worker_class}: idle kept connection closed after {time.monotonic() - t0:.2f}s")
            assert pc.request("/")[0] == 200
        finally:
            kept.close()


def test_sync_kept_connection_served_and_given_up():
    check_kept_connection("sync")


def test_thread_kept_connection_served_and_given_up():
    check_kept_connection("thread")


def test_thread_worker_stops_promptly_on_term():
    """TERM of an idle thread-class perfcgi, ten times: each stop is well under
    graceful_timeout (20 s). A stop signal lost by a serving thread would hold it there
    until SIGKILL."""
    took = []
    for _ in range(10):
        with PrivatePerfcgi("thread", workers=2, threads=4, graceful_timeout=20) as pc:
            pc.request("/")
            t0 = time.monotonic()
            os.kill(pc.pid, signal.SIGTERM)
            try:
                pc.proc.wait(timeout=15)
            except Exception:  # noqa: BLE001 - reported below
                pass
            took.append(time.monotonic() - t0)
            assert pc.proc.returncode == 0, f"exit {pc.proc.returncode} after {took[-1]:.1f}s: {pc.log_text()[-600:]}"
    slow = [round(t, 1) for t in took if t >= 10]
    assert not slow, f"stops that took 10 s or more: {slow} (all: {[round(t, 2) for t in took]})"
    print(f"    stop times: max {max(took):.2f}s")
