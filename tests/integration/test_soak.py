"""Nothing leaks: a bounded soak of the stack's perfcgi (the class of this pass) under
mixed load through Nginx, while workers are killed, Redis and PostgreSQL restart and
malformed FastCGI reaches perfcgi's socket. Afterwards the master is the same process,
every answer was a 200 or a clean JSON error, and the file descriptors and resident size
of the master and of the workers that lived through it all did not grow.

File descriptors and RSS are read from /proc in a quiet moment (no load, no FastCGI
connection open to the process), once after a warm-up and once at the end, so that
pools, caches and allocator arenas are already at their working size the first time.
The figures are printed for the record.
"""

import contextlib
import json
import os
import signal
import socket
import struct
import threading
import time
from collections import Counter

from harness import (WORKER_CLASS, WORKERS, app_socket, assert_app_answer, get, http, master_pid, settled, stack,
                     wait_ready, wait_until, wait_workers)

FD_SLACK = 8                 # descriptors a process may gain over the soak
RSS_SLACK_KB = 8 * 1024      # resident KiB a process may gain over the soak
QUIET_TIMEOUT = 10           # seconds for kept-alive FastCGI connections to close (Nginx: 4 s)
LOAD_THREADS = 6
# Mixed load: every endpoint family, and requests that must get a clean JSON 4xx.
MIXED = [("GET", "/"), ("GET", "/cached-data?category=81"), ("GET", "/io-intensive?ms=5"),
         ("GET", "/cpu-intensive?n=2000"), ("GET", "/memory-test?mb=1"), ("GET", "/cached-data?category=82"),
         ("GET", "/expensive-computation?n=25&method=memo"), ("GET", "/cpu-intensive?n=abc"),
         ("GET", "/no-such-page"), ("POST", "/"), ("GET", "/mixed?n=500&ms=2")]


class MixedLoad:
    """LOAD_THREADS threads loop over MIXED through Nginx until stop(); every answer is
    counted by status, and any answer that is neither a 200 with a JSON object carrying
    "worker" nor a JSON error object ({"error": ...}) is kept as unclean."""

    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = Counter()
        self.unclean = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(LOAD_THREADS)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _run(self, k):
        while not self._stop.is_set():
            method, path = MIXED[k % len(MIXED)]
            k += 1
            status, what = None, None
            try:
                status, h, body = http(method, path, headers={"X-No-Cache": "1"}, body=b"a=b" if method == "POST" else None)
                obj = json.loads(body) if h.get("Content-Type") == "application/json" else None
                if not isinstance(obj, dict):
                    what = f"{status} not a JSON object: {body[:120]!r}"
                elif status == 200 and not isinstance(obj.get("worker"), int):
                    what = f"200 without worker: {body[:120]!r}"
                elif status != 200 and not isinstance(obj.get("error"), str):
                    what = f"{status} without an error code: {body[:120]!r}"
            except Exception as exc:  # noqa: BLE001 - any failure to get an answer is unclean
                what = f"{type(exc).__name__}: {exc}"
            with self.lock:
                self.statuses[status if status is not None else "no answer"] += 1
                if what:
                    self.unclean.append(f"{method} {path}: {what}")

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(60)
        assert not any(t.is_alive() for t in self._threads), "load threads still running"

    def total(self):
        return sum(self.statuses.values())


# --- malformed FastCGI, straight to perfcgi's socket -------------------------------------------

def _record(rtype, content, version=1, request_id=1, declared=None):
    length = len(content) if declared is None else declared
    return struct.pack("!BBHHBx", version, rtype, request_id, length, 0) + content


BEGIN = _record(1, struct.pack("!HB5x", 1, 0))
MALFORMED = [
    ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256))),
    ("truncated header", BEGIN[:5]),
    ("truncated record", _record(1, b"\x00\x01\x00", declared=8)),
    ("wrong version", _record(1, struct.pack("!HB5x", 1, 0), version=7) + _record(4, b"", version=7)),
    ("params cut short", BEGIN + _record(4, b"\x0e\x03REQUEST_METHOD", declared=40)),
    ("unknown type", BEGIN + _record(42, b"xyz")),
    ("huge length", BEGIN + _record(4, b"\xff" * 64, declared=65535)),
]


def send_malformed(name, data):
    """Sends data on a fresh connection, reads what comes back for up to a second, closes."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        s.connect(app_socket())
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass


class MalformedSender:
    """Every `interval` seconds, one round of MALFORMED in a thread; counts the rounds."""

    def __init__(self, interval=1.5):
        self.interval = interval
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        return False

    def _run(self):
        while not self._stop.is_set():
            for name, data in MALFORMED:
                send_malformed(name, data)
            self.rounds += 1
            self._stop.wait(self.interval)


# --- /proc figures ------------------------------------------------------------------------------

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def fastcgi_connections(pid):
    """Accepted FastCGI connections pid holds: its unix sockets bound to perfcgi's socket
    path that are connected (not the listener)."""
    path = app_socket()
    connected = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == path and parts[5] == "03":
                connected.add(parts[6])
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:[") and link[8:-1] in connected:
                n += 1
    return n


def quiet_figures(pids):
    """{pid: (fds, rss_kb)} once no FastCGI connection is left open (or QUIET_TIMEOUT
    passed: a connection that stays open then counts in the figures)."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: all(fastcgi_connections(p) == 0 for p in pids), QUIET_TIMEOUT, interval=0.2)
    time.sleep(0.3)
    return {p: (fd_count(p), rss_kb(p)) for p in pids}


def under_asan(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


# --- the soak -----------------------------------------------------------------------------------

def _restart(service):
    stack("stop", service)
    time.sleep(1.0)
    stack("start", service)


def _kill_worker(pid, seen):
    """kill -9 a worker, and wait for the master to replace it; returns the new pid."""
    os.kill(pid, signal.SIGKILL)
    now = wait_until(lambda: (k := settled(WORKERS)) and pid not in k and k, 60, interval=0.1,
                     message=f"worker {pid} replaced")
    fresh = sorted(set(now) - seen)
    seen.update(now)
    return fresh[-1] if fresh else None


def test_soak_nothing_leaks_under_faults():
    master = master_pid()
    originals = wait_workers(WORKERS)
    started = time.monotonic()

    # Warm-up: every endpoint, pools and caches at their working size.
    with MixedLoad() as warm, MalformedSender():
        time.sleep(6)
    before = quiet_figures([master] + originals)

    # The soak: load and malformed FastCGI all along; workers killed, backends restarted.
    victim = originals[0]
    survivors = originals[1:]
    seen = set(originals)
    events = []
    with MixedLoad() as load, MalformedSender() as malformed:
        time.sleep(3)
        fresh = _kill_worker(victim, seen)
        events.append(f"kill -9 worker {victim}")
        time.sleep(3)
        _restart("redis")
        events.append("redis restarted")
        time.sleep(3)
        if fresh:
            _kill_worker(fresh, seen)
            events.append(f"kill -9 worker {fresh}")
        time.sleep(3)
        _restart("postgres")
        events.append("postgres restarted")
        wait_until(lambda: get("/io-intensive?ms=1")[0] == 200, 30, message="PostgreSQL serving again")
        time.sleep(3)
        fresh = wait_workers(WORKERS)
        newest = sorted(set(fresh) - set(originals))
        if newest:
            _kill_worker(newest[-1], seen)
            events.append(f"kill -9 worker {newest[-1]}")
        time.sleep(4)
        _restart("redis")
        events.append("redis restarted")
        time.sleep(3)
    wait_workers(WORKERS)
    wait_ready()
    soak_s = time.monotonic() - started
    alive = [p for p in survivors if p in wait_workers(WORKERS)]
    after = quiet_figures([master] + alive)

    asan = under_asan(master)
    print(f"soak ({WORKER_CLASS}): {soak_s:.0f} s, {load.total()} requests during the faults "
          f"({warm.total()} in the warm-up), {malformed.rounds} rounds of {len(MALFORMED)} malformed "
          f"FastCGI connections; events: {', '.join(events)}")
    print("  answers by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(load.statuses.items(), key=str)))
    print(f"  unclean answers: {len(load.unclean)}")
    for p in [master] + survivors:
        role = "master" if p == master else "worker"
        if p in after:
            print(f"  {role} {p}: fds {before[p][0]} -> {after[p][0]}, "
                  f"RSS {before[p][1]} -> {after[p][1]} KiB ({after[p][1] - before[p][1]:+d})")
        else:
            print(f"  {role} {p}: did not live through the soak")

    assert master_pid() == master, f"the master changed: {master} -> {master_pid()}"
    assert len(alive) == len(survivors), f"workers {sorted(set(survivors) - set(alive))} did not live through the soak"
    assert not load.unclean, f"{len(load.unclean)} unclean answers of {load.total()}: {load.unclean[:5]}"
    assert load.statuses[200] >= 200, f"too little load to prove anything: {dict(load.statuses)}"
    grew = {p: (before[p][0], after[p][0]) for p in after if after[p][0] > before[p][0] + FD_SLACK}
    assert not grew, f"file descriptors grew by more than {FD_SLACK} (pid: before, after): {grew}"
    if asan:
        print("  RSS not bounded: an AddressSanitizer build keeps freed memory in its quarantine")
        return
    bloated = {p: (before[p][1], after[p][1]) for p in after if after[p][1] > before[p][1] + RSS_SLACK_KB}
    assert not bloated, f"RSS grew by more than {RSS_SLACK_KB // 1024} MiB (pid: KiB before, after): {bloated}"
    s, h, b = get("/")
    assert_app_answer(s, h, b)
