"""harness: the shared perfcgi stack of an integration run, and helpers for the tests.

One stack (PostgreSQL, Redis, perfcgi, Nginx) per run, started with `deploy/stack.sh up`
in a fresh RUN_DIR under /tmp on free loopback ports (chosen again, and `up` run again, when
another program took one before the stack bound it), stopped with `deploy/stack.sh down`
and removed at the end. run.py owns its life; tests only use the helpers below.

An external stack instead (deploy/compose-test.sh: the docker-compose stack): with
TEST_BASE_PORT (its Nginx), TEST_REDIS_PORT and TEST_PG_PORT set, all on 127.0.0.1, the
harness starts and stops nothing and points its helpers there; PGPASSWORD reaches psql and
REDISCLI_AUTH redis-cli (the compose stack's Redis has a password),
TEST_STATUS_PORT (optional) is perfcgi's status socket (else /status goes through Nginx),
TEST_UPSTREAM_PORT (optional) the external API /async-request calls, as the stack's
perfcgi reaches it (tests that call it directly skip without).
That stack must run perfcgi with STACK_SETTINGS. Tests that control the stack (stop or
start services, restart perfcgi, signal its master, read its log or unix sockets) skip
there with "needs the local stack"; run.py runs only the modules that declare
RUNS_ON_EXTERNAL_STACK = True.

Standard library only.
"""

import contextlib
import http.client as httpclient
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STACK_SH = REPO / "deploy" / "stack.sh"
# The binary under test: bin/perfcgi, or $PERFCGI_BIN (stack.sh's own variable, e.g. an
# ASan build). perfcgi never sees that variable: stack.sh and clean_env() drop it.
PERFCGI_BIN = Path(os.environ.get("PERFCGI_BIN") or REPO / "bin" / "perfcgi").resolve()

# perfcgi settings of the test stack. Every PERFCGI_* variable must be a known setting:
# an unknown one stops perfcgi at start-up.
# The worker class the stack runs (tests/run.sh runs the suite once per class).
WORKER_CLASS = os.environ.get("TEST_WORKER_CLASS", "sync")
STACK_SETTINGS = {
    "PERFCGI_WORKER_CLASS": WORKER_CLASS,
    "PERFCGI_WORKERS": "4",
    "PERFCGI_POOL_TIMEOUT": "2",
    "PERFCGI_MAX_HELD_MB": "8",
    "PERFCGI_CACHE_TTL": "60",
}
WORKERS = int(STACK_SETTINGS["PERFCGI_WORKERS"])
# Slow requests per worker that make every worker busy: sync serves one at a time,
# thread `threads` (4 by default), event any number: 3 spread over the workers and
# stay within one worker's pool (pool_size + pool_max_overflow = 15) even unevenly.
REQUESTS_PER_WORKER = {"sync": 1, "thread": 4, "event": 3}[WORKER_CLASS]
CACHE_TTL = int(STACK_SETTINGS["PERFCGI_CACHE_TTL"])
MAX_HELD_MB = int(STACK_SETTINGS["PERFCGI_MAX_HELD_MB"])

# Variables of stack.sh (and of perfcgi) that must come from us, not from the caller.
_STACK_VARS = ("RUN_DIR", "PORT", "REDIS_PORT", "PG_PORT", "UPSTREAM_PORT", "PERFCGI_BIN", "WAIT_TIMEOUT",
               "STOP_TIMEOUT", "PG_BINDIR", "NGINX_WORKER_PROCESSES", "NGINX_LISTEN_ADDR")

# The external stack's ports, if any (see the docstring); Stack.start() checks them.
EXTERNAL_PORT_VARS = ("TEST_BASE_PORT", "TEST_REDIS_PORT", "TEST_PG_PORT")
EXTERNAL_STACK = any(os.environ.get(v) for v in EXTERNAL_PORT_VARS + ("TEST_STATUS_PORT", "TEST_UPSTREAM_PORT"))

STACK_UP_TIMEOUT = 300    # seconds for `stack.sh up` (initdb and seeding included)
STACK_UP_TRIES = 4        # `stack.sh up` again, on new ports, when one was taken meanwhile
STACK_CMD_TIMEOUT = 180   # seconds for any other stack.sh command
HTTP_TIMEOUT = 30


class Skip(Exception):
    """Raised by a test that cannot run here; run.py reports it with a note."""


def need_local_stack(what):
    """Skips the calling test on an external stack, which it must not or cannot control."""
    if EXTERNAL_STACK:
        raise Skip(f"needs the local stack ({what})")


# --- environment helpers, usable without a stack ---------------------------------------------

def clean_env(**extra):
    """The caller's environment without any PERFCGI_* or stack variable, plus extra."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PERFCGI_") and not k.startswith("NGINX_") and k not in _STACK_VARS}
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --- sanitizer reports of every perfcgi a run starts ------------------------------------------

_SANITIZER = {"dir": None, "files": [], "texts": []}
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def sanitizer_reports_to_dir():
    """Points every sanitizer runtime started from here on (the stack's perfcgi, the ones
    tests start, their workers) at one report directory: log_path in ASAN_OPTIONS and
    UBSAN_OPTIONS, which clean_env() passes on. World-writable (sticky), so workers that
    dropped to another user can write there too. run.py calls it once, first."""
    if _SANITIZER["dir"]:
        return _SANITIZER["dir"]
    d = tempfile.mkdtemp(prefix="pcgi-san-", dir="/tmp")
    os.chmod(d, 0o1777)
    _SANITIZER["dir"] = d
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        old = os.environ.get(var, "")
        os.environ[var] = (old + ":" if old else "") + f"log_path={d}/report"
    return d


def sanitizer_log(path, what=None):
    """Registers a log file of a perfcgi a test started: run.py reads it for reports."""
    _SANITIZER["files"].append((what or os.path.basename(path), path))


def sanitizer_text(what, text):
    """Registers the output of a perfcgi a test ran (its stderr): read for reports."""
    if text:
        _SANITIZER["texts"].append((what, text))


def _report_lines(what, text):
    lines = [ln for ln in text.splitlines() if any(m in ln for m in SANITIZER_MARKS)]
    return [(what, ln) for ln in lines]


def sanitizer_reports(seen=()):
    """(where, line) of every sanitizer report line found so far, after those in seen:
    the report directory, the stack's perfcgi.log, the registered logs and outputs."""
    found = list(seen)
    sources = []
    d = _SANITIZER["dir"]
    if d and os.path.isdir(d):
        sources += [(f"report {name}", os.path.join(d, name)) for name in sorted(os.listdir(d))]
    if STACK.run_dir:
        sources.append(("RUN_DIR/perfcgi.log", os.path.join(STACK.run_dir, "perfcgi.log")))
    sources += _SANITIZER["files"]
    texts = list(_SANITIZER["texts"])
    for what, path in sources:
        try:
            with open(path, errors="replace") as f:
                texts.append((what, f.read()))
        except OSError:
            pass
    for what, text in texts:
        lines = _report_lines(what, text)
        if not lines and what.startswith("report ") and text.strip():
            lines = [(what, text.strip().splitlines()[0])]  # a report file is a report
        found += [ln for ln in lines if ln not in found]
    return found


def sanitizer_dir_cleanup(keep=False):
    """Removes the report directory (kept, and named on stderr, if it holds reports)."""
    d = _SANITIZER["dir"]
    if not d:
        return
    if keep and os.listdir(d):
        sys.stderr.write(f"sanitizer reports kept in {d}\n")
    else:
        shutil.rmtree(d, ignore_errors=True)


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bind_free(s):
    """Binds s to a free loopback port below the kernel's ephemeral range; the port.
    Outgoing connections (thousands in a load test) take their local ports from that
    range, never from below it, so a port chosen here is still free when its server
    binds it a moment later."""
    high = _ephemeral_low()
    low = max(10000, high - 12000)
    for _ in range(200):
        port = random.randrange(low, high)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def free_port():
    """A loopback port nobody listens on right now, outside the ephemeral range: chosen,
    not reserved (Stack.start chooses again should another server take it meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return _bind_free(s)


def free_ports(n):
    """n distinct free loopback ports (all held open while choosing, so no duplicates)."""
    socks = []
    try:
        ports = []
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            ports.append(_bind_free(s))
        return ports
    finally:
        for s in socks:
            s.close()


def wait_until(predicate, timeout=20.0, interval=0.2, message=None):
    """Polls predicate() until it returns a true value (returned) or timeout passes.

    Exceptions raised by predicate count as "not yet"; the last one is reported."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            extra = f" (last error: {type(last_exc).__name__}: {last_exc})" if last_exc else ""
            raise AssertionError(f"{what}: not true within {timeout:g}s{extra}")
        time.sleep(interval)


def read_text(path):
    """A text file's content, "" if it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def recv_all(sock):
    """Everything a connected socket receives until the peer closes it."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def proc_stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def worker_is_sanitized(pid):
    """Whether worker pid runs an AddressSanitizer build (False when it is not on this host)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def private_kb(pid):
    """Memory pid alone uses (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup), KiB."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean:", "Private_Dirty:")))


def proc_alive(pid):
    """A live process, not a zombie."""
    fields = proc_stat_fields(pid)
    return fields is not None and fields[0] != "Z"


# The comm of perfcgi's backend prober, the one child of the master that is no worker.
PROBE_COMM = "perfcgi-probe"


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def children_of(ppid, probe=False):
    """Pids of the live (non-zombie) children of ppid: perfcgi's workers. The
    backend prober is left out, unless probe=True (then only it is listed)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = proc_stat_fields(entry)
        if fields and fields[0] != "Z" and int(fields[1]) == ppid and (proc_comm(entry) == PROBE_COMM) == probe:
            out.append(int(entry))
    return sorted(out)


def process_group_members(pgid):
    """Pids of the live processes in process group pgid."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat_fields(entry)
            if fields and fields[0] != "Z" and int(fields[2]) == pgid:
                out.append(int(entry))
    return out


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks (0 if it is gone)."""
    fields = proc_stat_fields(pid)
    if not fields:
        return 0
    return int(fields[11]) + int(fields[12])


# --- the stack -----------------------------------------------------------------------------

def _port_from_env(name):
    value = os.environ.get(name, "")
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise RuntimeError(f"external stack: {name}={value!r} is not a port number")
    return int(value)


# What stack.sh (and the logs it shows) say when a port it was given is taken: by the
# time a service binds it, a port chosen free may have been bound by another program.
PORT_TAKEN = ("is taken by another program", "Address already in use")


class Stack:
    def __init__(self, choose_ports=None):
        # () -> (nginx, redis, postgres, external API) ports; called again after a collision.
        self.choose_ports = choose_ports or (lambda: free_ports(4))
        self.run_dir = None
        self.port = self.redis_port = self.pg_port = self.status_port = self.upstream_port = None
        self.env = None
        self.started = False
        self.external = EXTERNAL_STACK

    def describe(self):
        where = f"port={self.port} redis={self.redis_port} postgres={self.pg_port}"
        if self.external:
            return f"external stack ({WORKER_CLASS} workers): {where} status={self.status_port or 'via nginx'}"
        return f"{WORKER_CLASS} workers: RUN_DIR={self.run_dir} {where}"

    def start(self):
        if self.external:
            return self._attach()
        if not os.access(PERFCGI_BIN, os.X_OK):
            raise RuntimeError(f"{PERFCGI_BIN} is missing: build it with 'make' first")
        # Short: unix socket paths are limited to 107 bytes.
        self.run_dir = tempfile.mkdtemp(prefix="pcgi-", dir="/tmp")
        # As root, PostgreSQL runs as 'postgres', which must reach the cluster below
        # RUN_DIR (mkdtemp makes it 0700). Otherwise stack.sh puts the cluster elsewhere
        # in /tmp behind a symlink (cleaned up in stop() too).
        os.chmod(self.run_dir, 0o755)
        self.started = True  # from here on, stop() has something to clean up
        self.collisions = []
        for attempt in range(1, STACK_UP_TRIES + 1):
            self.port, self.redis_port, self.pg_port, self.upstream_port = self.choose_ports()
            self.env = clean_env(RUN_DIR=self.run_dir, PORT=self.port, REDIS_PORT=self.redis_port,
                                 PG_PORT=self.pg_port, UPSTREAM_PORT=self.upstream_port, PERFCGI_BIN=PERFCGI_BIN,
                                 **STACK_SETTINGS)
            r = subprocess.run([str(STACK_SH), "up"], env=self.env, cwd=str(REPO), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=STACK_UP_TIMEOUT)
            if r.returncode == 0:
                return
            out = r.stdout + r.stderr
            taken = [ln.strip() for ln in out.splitlines() if any(m in ln for m in PORT_TAKEN)]
            if not taken or attempt == STACK_UP_TRIES:
                raise RuntimeError(f"deploy/stack.sh up failed (exit {r.returncode}, try {attempt}):\n{out}")
            # What did start goes down; the next try has new ports (stack.env follows).
            self.collisions.append(taken[0])
            sys.stderr.write(f"stack.sh up: a port was taken ({taken[0]}): again on new ports\n")
            self._stack_sh("down")

    def _attach(self):
        """Uses the external stack: checks that it answers and runs the suite's settings."""
        missing = [v for v in EXTERNAL_PORT_VARS if not os.environ.get(v)]
        if missing:
            raise RuntimeError(f"external stack: {', '.join(EXTERNAL_PORT_VARS)} must all be set "
                               f"(missing: {', '.join(missing)})")
        self.port, self.redis_port, self.pg_port = (_port_from_env(v) for v in EXTERNAL_PORT_VARS)
        if os.environ.get("TEST_STATUS_PORT"):
            self.status_port = _port_from_env("TEST_STATUS_PORT")
        if os.environ.get("TEST_UPSTREAM_PORT"):
            self.upstream_port = _port_from_env("TEST_UPSTREAM_PORT")
        self.started = True  # stop() only forgets it

        def fits():
            st = pm_status()
            return (st["worker_class"], st["total_processes"]) == (WORKER_CLASS, WORKERS)
        try:
            wait_until(fits, 60, interval=0.5, message="the external stack serving")
        except AssertionError as exc:
            try:
                st = pm_status()
                seen = f"it runs {st['total_processes']} {st['worker_class']} workers"
            except Exception as exc2:  # noqa: BLE001
                seen = f"its /status does not answer ({type(exc2).__name__}: {exc2})"
            raise RuntimeError(f"external stack at 127.0.0.1:{self.port}: {seen}; the suite expects "
                               f"{WORKERS} {WORKER_CLASS} workers and these settings: "
                               + " ".join(f"{k}={v}" for k, v in STACK_SETTINGS.items())
                               + f" ({exc})") from None

    def stop(self):
        if not self.started:
            return
        self.started = False
        if self.external:
            return  # not ours to stop
        try:
            self._stack_sh("down")
        finally:
            self._remove_run_dir()

    def _stack_sh(self, cmd):
        """stack.sh CMD with this stack's environment; a failure is a warning only."""
        try:
            r = subprocess.run([str(STACK_SH), cmd], env=self.env, cwd=str(REPO),
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=STACK_CMD_TIMEOUT)
            if r.returncode != 0:
                sys.stderr.write(f"warning: deploy/stack.sh {cmd} failed (exit {r.returncode}):\n"
                                 f"{r.stdout}{r.stderr}")
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"warning: deploy/stack.sh {cmd} timed out\n")

    def _remove_run_dir(self):
        if not self.run_dir or not os.path.isdir(self.run_dir):
            return
        pg = os.path.join(self.run_dir, "postgres")
        if os.path.islink(pg):
            target = os.path.realpath(pg)
            if target.startswith("/tmp/perfcgi-pg."):
                shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def log_tail(self, name, lines=30):
        if not self.run_dir:
            return None
        path = os.path.join(self.run_dir, name)
        try:
            with open(path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return None

    def master_pid(self):
        need_local_stack("signals perfcgi's master")
        with open(os.path.join(self.run_dir, "perfcgi.pid")) as f:
            return int(f.read().split()[0])


STACK = Stack()


def _need_stack():
    if not STACK.started:
        raise RuntimeError("the stack is not running (run the tests through run.py)")


# --- helpers for tests ---------------------------------------------------------------------

class Headers(dict):
    """A case-insensitive dict of response headers (repeated ones joined with ', ')."""

    def __init__(self, items=()):
        super().__init__()
        for k, v in items:
            k = k.lower()
            super().__setitem__(k, f"{dict.__getitem__(self, k)}, {v}" if k in self else v)

    def __getitem__(self, k):
        return super().__getitem__(k.lower())

    def __contains__(self, k):
        return super().__contains__(k.lower())

    def get(self, k, default=None):
        return super().get(k.lower(), default)


def http(method, path, headers=None, body=None, source=None, timeout=HTTP_TIMEOUT):
    """One request to Nginx on a new connection: (status, Headers, body bytes)."""
    _need_stack()
    conn = httpclient.HTTPConnection("127.0.0.1", STACK.port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        try:
            conn.request(method, path, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer (413) and stop reading before a large body is sent.
            pass
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, Headers(resp.getheaders()), data
    finally:
        conn.close()


def get(path, no_cache=True, headers=None):
    """GET, with X-No-Cache: 1 unless no_cache is False (then the Nginx cache applies)."""
    h = dict(headers or {})
    if no_cache:
        h["X-No-Cache"] = "1"
    return http("GET", path, headers=h)


def head(path, no_cache=True, headers=None):
    h = dict(headers or {})
    if no_cache:
        h["X-No-Cache"] = "1"
    return http("HEAD", path, headers=h)


def until_cache_hit(path, method="GET", tries=20):
    """Requests path through Nginx's cache (no X-No-Cache) until it answers HIT.

    Returns (hit, misses): the HIT answer and the answers before it. More than one MISS
    is possible: Nginx commits a cache entry only after it has read the end of the
    FastCGI response, which can be after the client already has the whole answer, so a
    request sent right then still misses."""
    misses = []
    for i in range(tries):
        status, h, body = http(method, path)
        if h.get("X-Cache-Status") == "HIT":
            return (status, h, body), misses
        assert h.get("X-Cache-Status") in ("MISS", "EXPIRED"), \
            f"{method} {path}: X-Cache-Status {h.get('X-Cache-Status')!r} ({status})"
        misses.append((status, h, body))
        time.sleep(0.05 * i)
    raise AssertionError(f"{method} {path}: no cache HIT in {tries} requests")


def json_body(body):
    """The body as one JSON object (fails the test otherwise)."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AssertionError(f"body is not JSON ({exc}): {body[:200]!r}") from None
    assert isinstance(obj, dict), f"body is JSON but not an object: {body[:200]!r}"
    return obj


def stack(cmd, service, env=None):
    """deploy/stack.sh CMD SERVICE with the stack's environment (plus env, e.g. extra
    PERFCGI_* settings for `start perfcgi`); fails unless it succeeds."""
    _need_stack()
    need_local_stack(f"deploy/stack.sh {cmd} {service}")
    r = subprocess.run([str(STACK_SH), cmd, service], env=dict(STACK.env, **(env or {})), cwd=str(REPO),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=STACK_CMD_TIMEOUT)
    if r.returncode != 0:
        raise AssertionError(f"stack.sh {cmd} {service} failed (exit {r.returncode}): "
                             f"{r.stdout}{r.stderr}")
    return r.stdout


def redis_cli(*args):
    """redis-cli against the stack's Redis; its output without the final newline."""
    _need_stack()
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(STACK.redis_port), *map(str, args)],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise AssertionError(f"redis-cli {' '.join(map(str, args))} failed: {r.stderr.strip()}")
    return r.stdout.rstrip("\n")


def psql(sql):
    """One SQL command through psql on the stack's database: its unaligned output (-At)."""
    _need_stack()
    r = subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(STACK.pg_port), "-U", "perfcgi",
                        "-d", "perfcgi", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env=clean_env(PGCONNECT_TIMEOUT="10"))
    if r.returncode != 0:
        raise AssertionError(f"psql failed on {sql!r}: {r.stderr.strip()}")
    return r.stdout.rstrip("\n")


def category_stats(category):
    """The /cached-data aggregate of a category as PostgreSQL computes it."""
    row = psql("SELECT count(*), sum(value), round(avg(value), 4), min(value), max(value) "
               f"FROM items WHERE category = {int(category)}")
    count, total, avg, lo, hi = row.split("|")
    return {"count": int(count), "sum": total, "avg": avg, "min": lo, "max": hi}


def worker_pids():
    """The live workers of the stack's perfcgi master.

    On an external stack: the pids /status lists, as its pid namespace numbers them (the
    X-Worker values), to compare answers with, never to signal or to read in /proc."""
    _need_stack()
    if STACK.external:
        return sorted(row["pid"] for row in pm_status(full=True)["processes"])
    return children_of(STACK.master_pid())


def assert_app_answer(status, headers, body, expect_status=200):
    """The shape every application answer has; returns the JSON object."""
    assert status == expect_status, f"status {status}, expected {expect_status}: {body[:300]!r}"
    assert headers.get("Content-Type") == "application/json", \
        f"Content-Type {headers.get('Content-Type')!r}"
    assert "X-Worker" in headers, f"no X-Worker header: {dict(headers)}"
    assert headers["X-Worker"].isdigit(), f"X-Worker {headers['X-Worker']!r} is not a pid"
    assert "X-Cache-Status" in headers, f"no X-Cache-Status header: {dict(headers)}"
    obj = json_body(body)
    if expect_status == 200:
        assert isinstance(obj.get("elapsed_ms"), (int, float)) and not isinstance(obj["elapsed_ms"], bool), \
            f"elapsed_ms missing or not a number: {obj}"
        assert obj["elapsed_ms"] >= 0, obj
        assert isinstance(obj.get("worker"), int) and not isinstance(obj["worker"], bool), \
            f"worker missing or not an int: {obj}"
        assert obj["worker"] == int(headers["X-Worker"]), \
            f"worker {obj['worker']} != X-Worker {headers['X-Worker']}"
    else:
        assert isinstance(obj.get("error"), str), f"error answer without an error code: {obj}"
        assert headers.get("Cache-Control") == "no-store", \
            f"error answer with Cache-Control {headers.get('Cache-Control')!r}"
    return obj


def assert_error(status, headers, body, expect_status, code, from_app=True):
    """An error answer: status, JSON with error == code; from the app unless from_app=False."""
    assert status == expect_status, f"status {status}, expected {expect_status}: {body[:300]!r}"
    assert headers.get("Content-Type") == "application/json", \
        f"Content-Type {headers.get('Content-Type')!r}: {body[:200]!r}"
    obj = json_body(body)
    assert obj.get("error") == code, f"error {obj.get('error')!r}, expected {code!r}: {obj}"
    if from_app:
        assert "X-Worker" in headers, f"no X-Worker on an application error: {dict(headers)}"
        assert headers.get("Cache-Control") == "no-store", \
            f"error answer with Cache-Control {headers.get('Cache-Control')!r}"
    return obj


# --- processes started by tests -------------------------------------------------------------

class Proc:
    """A process started by a test (in its own session), always ended by `with`."""

    def __init__(self, args, env=None, **kw):
        self.p = subprocess.Popen(args, env=env if env is not None else clean_env(), cwd=str(REPO),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
        self.pid = self.p.pid
        # The stderr of a perfcgi is read for sanitizer reports (the TERM and HUP paths
        # of the tests' own processes), whether the test reads it or not.
        self.perfcgi = Path(args[0]).resolve() == PERFCGI_BIN

    def _communicate(self, timeout):
        out, err = self.p.communicate(timeout=timeout)
        if self.perfcgi:
            sanitizer_text(f"stderr of perfcgi pid {self.pid}", err)
        return out, err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        return False

    def wait(self, timeout):
        """Waits for the exit: (returncode, stdout, stderr); fails if it does not exit."""
        try:
            out, err = self._communicate(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pid {self.pid} did not exit within {timeout}s") from None
        return self.p.returncode, out, err

    def kill(self):
        kill_session(self.p, lambda: self._communicate(10))


def kill_session(p, reap):
    """Ends a process started in its own session (the master and the workers it forked
    share pgid == pid): SIGKILL to the group, reap() it, then any member left over."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        reap()
    except (subprocess.TimeoutExpired, ValueError):
        pass
    # Workers die with their master (PDEATHSIG); make sure none of this group lingers.
    if process_group_members(p.pid):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --- the process manager: the master's status socket, load, perfcgi with other settings ----

class _UnixHTTPConnection(httpclient.HTTPConnection):
    """http.client over a unix socket (the master's status_bind in the stack)."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


def status_socket():
    _need_stack()
    need_local_stack("talks to perfcgi's unix sockets")
    return os.path.join(STACK.run_dir, "status.sock")


def app_socket():
    _need_stack()
    need_local_stack("talks to perfcgi's unix sockets")
    return os.path.join(STACK.run_dir, "perfcgi.sock")


def master_http(path, method="GET", timeout=10):
    """One request straight to the master's status socket (not through Nginx):
    (status, Headers, body bytes). On an external stack, to its TEST_STATUS_PORT, or
    through its Nginx (which serves the operations paths to loopback) without one."""
    _need_stack()
    if STACK.external and not STACK.status_port:
        return http(method, path, timeout=timeout)
    if STACK.external:
        conn = httpclient.HTTPConnection("127.0.0.1", STACK.status_port, timeout=timeout)
    else:
        conn = _UnixHTTPConnection(status_socket(), timeout)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, Headers(resp.getheaders()), data
    finally:
        conn.close()


def pm_status(full=False):
    """The master's /status (or /status?full) as a dict, read from its status socket."""
    status, h, body = master_http("/status?full" if full else "/status")
    assert status == 200, f"/status answered {status}: {body[:300]!r}"
    return json_body(body)


def restarts():
    """worker_restarts of /status: reason -> count."""
    return dict(pm_status()["worker_restarts"])


def parse_metrics(text):
    """Prometheus text -> {(name, ((label, value), ...)): float}; comments skipped.

    Label values of perfcgi hold no quotes, commas or braces: a simple split does."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        if "{" in head:
            name, labels = head.split("{", 1)
            pairs = []
            for item in labels.rstrip("}").split(","):
                k, v = item.split("=", 1)
                pairs.append((k, v.strip('"')))
            key = (name, tuple(sorted(pairs)))
        else:
            key = (head, ())
        assert key not in out, f"metric {key} appears twice"
        out[key] = float(value)
    return out


def metric_sum(metrics, name, **labels):
    """The sum of the samples of one metric whose labels include `labels`."""
    return sum(v for (n, ls), v in metrics.items()
               if n == name and all((k, str(val)) in ls for k, val in labels.items()))


def master_pid():
    _need_stack()
    return STACK.master_pid()


def signal_master(sig):
    os.kill(master_pid(), sig)


def settled(n):
    """The pids of exactly n serving workers (none starting, none retiring), else None:
    /status total_processes == n, none starting, and n live children."""
    st = pm_status(full=True)
    kids = children_of(master_pid())
    rows = st["processes"]
    if st["total_processes"] != n or len(kids) != n or len(rows) != n:
        return None
    if any(r["state"] == "starting" for r in rows) or sorted(r["pid"] for r in rows) != kids:
        return None
    return kids


def wait_workers(n, timeout=60):
    """Waits until the master has exactly n serving workers; returns their pids."""
    return wait_until(lambda: settled(n), timeout, interval=0.1, message=f"{n} workers serving")


def wait_ready(timeout=60):
    def ready():
        status, h, body = http("GET", "/readyz", timeout=10)
        return status == 200
    wait_until(ready, timeout, message="/readyz 200")


def restore_perfcgi():
    """Whatever perfcgi runs on the stack's sockets is stopped, and the stack's usual one
    (its settings, WORKERS workers) started again and waited for."""
    stack("stop", "perfcgi")
    stack("start", "perfcgi")
    wait_workers(WORKERS)
    wait_ready()


@contextlib.contextmanager
def perfcgi_with(**settings):
    """The stack's perfcgi restarted through stack.sh with extra settings
    (perfcgi_with(max_requests=50) -> PERFCGI_MAX_REQUESTS=50), the usual one again
    afterwards whatever happens. Yields the master's pid."""
    env = {"PERFCGI_" + k.upper(): str(v) for k, v in settings.items()}
    stack("stop", "perfcgi")
    try:
        stack("start", "perfcgi", env=env)
        wait_workers(int(settings.get("workers", WORKERS)))
        yield master_pid()
    finally:
        restore_perfcgi()


def stack_perfcgi_settings():
    """The settings stack.sh gives perfcgi in this stack, as config-file keys."""
    _need_stack()
    need_local_stack("runs perfcgi on the stack's sockets")
    run = STACK.run_dir
    s = {k[len("PERFCGI_"):].lower(): v for k, v in STACK_SETTINGS.items()}
    s.update(bind=f"unix:{run}/perfcgi.sock", status_bind=f"unix:{run}/status.sock",
             redis_url=f"redis://127.0.0.1:{STACK.redis_port}/0",
             database_url=f"postgresql://perfcgi@127.0.0.1:{STACK.pg_port}/perfcgi",
             upstream_url=upstream_url(), pidfile=f"{run}/perfcgi.pid")
    return s


def upstream_url():
    """The URL of the stack's external API (what /async-request calls), from here."""
    _need_stack()
    if not STACK.upstream_port:
        raise Skip("the external stack's external API port is unknown (set TEST_UPSTREAM_PORT)")
    return f"http://127.0.0.1:{STACK.upstream_port}/"


def config_text(settings):
    return "[perfcgi]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())


class OwnPerfcgi:
    """bin/perfcgi (or `binary`, e.g. a copy for a binary upgrade) started by the test
    itself, with `-c FILE` (settings in the file only, no PERFCGI_* variable, so a HUP
    re-reads them all) on the stack's sockets, so Nginx reaches it. The test owns the
    process: its exit status, its log (RUN_DIR/NAME.log, stdout and stderr). With `with`: the stack's perfcgi is stopped first, and on the
    way out this one is killed (its whole process group) and the usual one restored.
    `env`: variables added to its environment; `pass_fds`: descriptors it inherits;
    `wrapper`: a command line that executes perfcgi's (appended to it) in its own process.
    start() starts it again once it has exited (a restart)."""

    def __init__(self, name="own", args=(), binary=None, env=None, pass_fds=(), wrapper=(), start_workers=None,
                 **settings):
        _need_stack()
        need_local_stack("runs its own perfcgi on the stack's sockets")
        self.binary = str(binary or PERFCGI_BIN)
        self.config = os.path.join(STACK.run_dir, f"{name}.ini")
        self.log = os.path.join(STACK.run_dir, f"{name}.log")
        sanitizer_log(self.log, f"RUN_DIR/{name}.log")
        self.args = list(args)
        self.env, self.pass_fds, self.wrapper = dict(env or {}), tuple(pass_fds), list(wrapper)
        self.settings = dict(stack_perfcgi_settings(), **{k: str(v) for k, v in settings.items()})
        self.p = None
        self.pid = None
        # Workers to wait for at start: `workers`, unless pm starts another count.
        self.start_workers = int(self.settings.get("workers", WORKERS)) if start_workers is None else start_workers

    def write_config(self, text=None, **changes):
        """Rewrites the config file: `text` as is, or the settings with `changes`."""
        if text is None:
            self.settings.update({k: str(v) for k, v in changes.items()})
            text = config_text(self.settings)
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config)
        return text

    def __enter__(self):
        stack("stop", "perfcgi")
        try:
            self.write_config()
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self):
        """Starts it and waits until every worker serves."""
        with open(self.log, "ab") as logf:
            self.p = subprocess.Popen([*self.wrapper, self.binary, "-c", self.config, *self.args],
                                      env=clean_env(**self.env), pass_fds=self.pass_fds, cwd=str(REPO),
                                      stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.pid = self.p.pid

        def serving():
            if self.p.poll() is not None:
                raise AssertionError(f"perfcgi exited with {self.p.returncode} at start-up: "
                                     f"{self.log_text()[-800:]}")
            return os.path.exists(app_socket()) and master_http("/healthz", timeout=5)[0] == 200
        try:
            wait_until(serving, 30, message="own perfcgi serving /healthz")
        except AssertionError:
            if self.p.poll() is not None:
                raise AssertionError(f"perfcgi exited with {self.p.returncode} at start-up: "
                                     f"{self.log_text()[-800:]}") from None
            raise
        if self.start_workers:
            wait_workers(self.start_workers)

    def __exit__(self, *exc):
        try:
            self.kill()
        finally:
            for path in (self.config, self.config + ".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            restore_perfcgi()
        return False

    def wait(self, timeout):
        """Waits for the master to exit; its status (fails the test if it does not exit)."""
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"perfcgi (pid {self.pid}) did not exit within {timeout}s") from None

    def kill(self):
        if self.p is None:
            return
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(timeout=10)
        # Workers die with their master (PDEATHSIG); make sure none of the group lingers.
        if process_group_members(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            wait_until(lambda: not process_group_members(self.pid), 10,
                       message=f"process group {self.pid} gone")

    def log_text(self):
        return read_text(self.log)


class PrivatePerfcgi:
    """bin/perfcgi started by a test that needs no stack: its FastCGI listener on a unix
    socket in a temp dir (or a free loopback TCP port with tcp=True), its status socket
    on a free loopback port, no access log; `/` needs no backend. Settings as flags
    (max_requests=5 -> --max-requests 5). Waits until every worker serves; `with` kills
    the whole process group and removes the temp dir."""

    def __init__(self, worker_class, tcp=False, **settings):
        self.worker_class, self.tcp = worker_class, tcp
        self.settings = dict(settings)
        self.workers = int(self.settings.setdefault("workers", 1))
        self.dir = self.proc = None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="pcgi-p-", dir="/tmp")
        try:
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self):
        if self.tcp:
            self.address = ("127.0.0.1", free_port())
            self.bind = "%s:%d" % self.address
        else:
            self.address = os.path.join(self.dir, "app.sock")
            self.bind = "unix:" + self.address
        self.status_port = free_port()
        args = [str(PERFCGI_BIN), "--worker-class", self.worker_class, "--bind", self.bind,
                "--status-bind", f"127.0.0.1:{self.status_port}", "--access-log", ""]
        for k, v in self.settings.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        self.log = os.path.join(self.dir, "perfcgi.log")
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(args, env=clean_env(), cwd=str(REPO), stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

        def serving():
            if self.proc.poll() is not None:
                raise AssertionError(f"perfcgi exited with {self.proc.returncode}: {self.log_text()[-800:]}")
            rows = self.status(full=True)["processes"]
            return len(rows) == self.workers and all(r["state"] in ("idle", "busy") for r in rows)
        try:
            wait_until(serving, 30, interval=0.1, message=f"private {self.worker_class} perfcgi serving")
        except AssertionError:
            if self.proc.poll() is not None:
                raise AssertionError(f"perfcgi exited with {self.proc.returncode}: "
                                     f"{self.log_text()[-800:]}") from None
            raise

    def status(self, full=False):
        conn = httpclient.HTTPConnection("127.0.0.1", self.status_port, timeout=10)
        try:
            conn.request("GET", "/status?full" if full else "/status")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def connect(self, timeout=HTTP_TIMEOUT):
        return fcgi_connect(self.address, timeout)

    def request(self, uri="/", query="", method="GET", timeout=HTTP_TIMEOUT):
        """One FastCGI request on a new connection: (status code, raw CGI output)."""
        with contextlib.closing(self.connect(timeout)) as s:
            return fcgi_request(s, uri, query, method)

    def log_text(self):
        return read_text(self.log)

    def stop(self):
        if self.proc is not None:
            kill_session(self.proc, lambda: self.proc.wait(timeout=10))

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


class Load:
    """Load through Nginx: `threads` threads loop over `paths` (X-No-Cache: 1), each
    request on a new connection, until stop(). Counts every request exactly: sent ==
    ok + len(failures) once stopped. A failure is any answer but a 200 carrying a JSON
    object with "worker", or any connection error / timeout."""

    def __init__(self, paths, threads=8, timeout=HTTP_TIMEOUT, headers=None):
        self.paths = list(paths)
        self.nthreads = threads
        self.timeout = timeout
        self.headers = {"X-No-Cache": "1"} if headers is None else dict(headers)
        self.lock = threading.Lock()
        self.sent = self.ok = 0
        self.failures = []      # (monotonic time, path, what)
        self.served_by = {}     # X-Worker pid -> 200 answers
        self._stop = threading.Event()
        self._threads = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        for i in range(self.nthreads):
            t = threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, i):
        k = i
        while not self._stop.is_set():
            path = self.paths[k % len(self.paths)]
            k += 1
            with self.lock:
                self.sent += 1
            pid = None
            try:
                status, h, body = http("GET", path, headers=self.headers, timeout=self.timeout)
                obj = json.loads(body) if status == 200 else None
                if isinstance(obj, dict) and isinstance(obj.get("worker"), int):
                    pid = obj["worker"]
                    what = None
                else:
                    what = f"{status} {body[:160]!r}"
            except Exception as exc:  # noqa: BLE001 - every error is a failed request
                what = f"{type(exc).__name__}: {exc}"
            with self.lock:
                if what is None:
                    self.ok += 1
                    self.served_by[pid] = self.served_by.get(pid, 0) + 1
                else:
                    self.failures.append((time.monotonic(), path, what))

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 15)
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"load threads still running: {alive}"
        assert self.sent == self.ok + len(self.failures), (self.sent, self.ok, len(self.failures))

    def wait_for(self, n, timeout=60):
        """Waits until at least n requests got a 200."""
        wait_until(lambda: self.ok >= n, timeout, interval=0.05, message=f"{n} requests served")

    def summary(self):
        fails = "; ".join(f"{p}: {w}" for _, p, w in self.failures[:5])
        return f"{self.sent} sent, {self.ok} ok, {len(self.failures)} failed" + (f" ({fails})" if fails else "")


class NginxErrorWatch:
    """What Nginx's error log (RUN_DIR/nginx-error.log) gains between entering and
    dropped(): the lines that say an upstream connection was closed or reset under a
    request. Nginx retries a GET whose kept-alive connection fails, so a load of GETs
    can see only 200s while perfcgi drops connections; this log still says so."""

    MARKS = ("upstream prematurely closed", "recv() failed", "reset by peer", "Broken pipe")

    def __init__(self):
        _need_stack()
        need_local_stack("reads the stack's Nginx error log")
        self.path = os.path.join(STACK.run_dir, "nginx-error.log")
        self.start = 0

    def __enter__(self):
        try:
            self.start = os.path.getsize(self.path)
        except FileNotFoundError:
            self.start = 0
        return self

    def __exit__(self, *exc):
        return False

    def dropped(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.start)
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        return [ln for ln in text.splitlines() if any(m in ln for m in self.MARKS)]

    def assert_none_dropped(self, what):
        lines = self.dropped()
        assert not lines, (f"Nginx logged {len(lines)} dropped upstream connection(s) during {what} "
                           f"(answers may have been retried): " + " | ".join(ln[:300] for ln in lines[:3]))


class StatusWatch:
    """Reads the master's /status every `interval` seconds in a thread, keeping every
    answer (and every failure to get one) until stop()."""

    def __init__(self, interval=0.05, full=False):
        self.interval = interval
        self.full = full
        self.samples = []   # (monotonic time, dict)
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-watch", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), pm_status(self.full)))
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join(30)

    def assert_never_decreases(self, key="accepted_conn"):
        assert not self.errors, f"/status failed {len(self.errors)} times: {self.errors[:3]}"
        assert len(self.samples) >= 2, f"only {len(self.samples)} /status samples"
        values = [s[key] for _, s in self.samples]
        drops = [(a, b) for a, b in zip(values, values[1:]) if b < a]
        assert not drops, f"{key} went down between successive /status reads: {drops[:5]} (of {len(values)} reads)"
        return values


# --- a minimal FastCGI client (responder role, one request per connection) -----------------

FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 3, 4, 5, 6


def _fcgi_record(rtype, content, request_id=1):
    return struct.pack("!BBHHBx", 1, rtype, request_id, len(content), 0) + content


def _fcgi_pairs(params):
    out = b""
    for k, v in params.items():
        k, v = k.encode(), v.encode()
        for n in (len(k), len(v)):
            out += bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)
        out += k + v
    return out


def fcgi_connect(path=None, timeout=HTTP_TIMEOUT):
    """A connected socket to perfcgi's FastCGI listener: the stack's by default, a unix
    socket path, or a (host, port) pair."""
    s = socket.socket(socket.AF_INET if isinstance(path, tuple) else socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path or app_socket())
    except OSError:
        s.close()
        raise
    return s


def fcgi_request(sock, uri="/", query="", method="GET"):
    """Sends one FastCGI request on a connected socket and reads the answer to its
    END_REQUEST: (status code or None, raw CGI output). Raises OSError / EOFError when the
    server drops the connection."""
    params = {"REQUEST_METHOD": method, "DOCUMENT_URI": uri, "QUERY_STRING": query,
              "REQUEST_URI": uri + ("?" + query if query else ""), "SERVER_PROTOCOL": "HTTP/1.1",
              "REMOTE_ADDR": "127.0.0.1", "GATEWAY_INTERFACE": "CGI/1.1"}
    sock.sendall(_fcgi_record(FCGI_BEGIN_REQUEST, struct.pack("!HB5x", 1, 0)) +
                 _fcgi_record(FCGI_PARAMS, _fcgi_pairs(params)) + _fcgi_record(FCGI_PARAMS, b"") +
                 _fcgi_record(FCGI_STDIN, b""))
    buf, out = b"", b""

    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError(f"the server closed the connection after {len(out) + len(buf)} bytes, "
                               f"before END_REQUEST")
            buf += chunk
        data, buf = buf[:n], buf[n:]
        return data

    while True:
        _, rtype, _, length, padding = struct.unpack("!BBHHBx", need(8))
        content = need(length + padding)[:length]
        if rtype == FCGI_STDOUT:
            out += content
        elif rtype == FCGI_END_REQUEST:
            break
    text = out.decode("utf-8", "replace")
    first = text.split("\r\n", 1)[0].split("\n", 1)[0]
    code = int(first.split()[1]) if first.startswith("Status: ") else None
    return code, text


# --- a PostgreSQL that logs in and then never answers -----------------------------------------

class HungPostgres:
    """Listens on a free loopback port, answers the startup packet (AuthenticationOk,
    ParameterStatus, BackendKeyData, ReadyForQuery), then reads queries and never answers
    them. Cancel requests are read and their connections held open, as a server that
    never gets to them. Counts logins, queries, cancels and sessions ended, and keeps the
    application_name of each login (in `apps`)."""

    SSL_REQUEST, GSS_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.conns = []
        self.apps = []
        self.logins = self.queries = self.cancels = self.ended = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]

    def __enter__(self):
        self._threads[0].start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.listener.close()
        with self._lock:
            for c in self.conns:
                c.close()
        for t in self._threads:
            t.join(5)
        return False

    def _accept(self):
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                c, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self.conns.append(c)
                t = threading.Thread(target=self._serve, args=(c,), daemon=True)
                self._threads.append(t)
            t.start()

    def _read(self, c, n):
        buf = b""
        while len(buf) < n and not self._stop.is_set():
            try:
                chunk = c.recv(n - len(buf))
            except socket.timeout:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf if len(buf) == n else None

    def _serve(self, c):
        c.settimeout(0.2)
        while True:  # the startup phase: SSL/GSS requests, then a startup or cancel packet
            head = self._read(c, 4)
            if head is None:
                return
            body = self._read(c, struct.unpack("!I", head)[0] - 4)
            if body is None:
                return
            code = struct.unpack("!I", body[:4])[0]
            if code in (self.SSL_REQUEST, self.GSS_REQUEST):
                c.sendall(b"N")
                continue
            if code == self.CANCEL_REQUEST:
                with self._lock:
                    self.cancels += 1
                while self._read(c, 1) is not None:  # held open, never acted upon
                    pass
                return
            break
        msgs = [b"R" + struct.pack("!II", 8, 0)]
        for k, v in (("server_version", "15.0"), ("client_encoding", "UTF8"), ("server_encoding", "UTF8"),
                     ("DateStyle", "ISO, MDY"), ("integer_datetimes", "on"),
                     ("standard_conforming_strings", "on")):
            payload = k.encode() + b"\0" + v.encode() + b"\0"
            msgs.append(b"S" + struct.pack("!I", 4 + len(payload)) + payload)
        msgs.append(b"K" + struct.pack("!III", 12, 4242, 1234))
        msgs.append(b"Z" + struct.pack("!I", 5) + b"I")
        c.sendall(b"".join(msgs))
        words = body[4:].split(b"\0")
        params = dict(zip(words[0::2], words[1::2]))
        with self._lock:
            self.logins += 1
            self.apps.append(params.get(b"application_name", b"").decode(errors="replace"))
        while True:  # queries: read, never answered
            head = self._read(c, 5)
            if head is None or self._read(c, struct.unpack("!I", head[1:])[0] - 4) is None:
                with self._lock:
                    self.ended += 1  # the client left (or the test ends)
                return
            with self._lock:
                self.queries += 1
