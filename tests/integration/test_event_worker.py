"""The event worker's own FastCGI codec, spoken to directly: kept-alive connections,
management records, protocol errors, aborts, limits, and a second real client (cgi-fcgi).

No stack needed: each test starts bin/perfcgi --worker-class event on a private unix
socket. Endpoints that need no backend (/, /cpu-intensive) are enough here; the
backends of the event class are covered by the whole suite run with that class.
"""

import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

from harness import (PERFCGI_BIN, HungPostgres, Proc, Skip, children_of, free_port, private_kb, wait_until,
                     worker_is_sanitized)

NEEDS_STACK = False

BEGIN, ABORT, END, PARAMS, STDIN, STDOUT, STDERR = 1, 2, 3, 4, 5, 6, 7
GET_VALUES, GET_VALUES_RESULT, UNKNOWN_TYPE = 9, 10, 11
KEEP_CONN = 1


def record(rtype, rid, content=b"", version=1):
    pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBx", version, rtype, rid, len(content), pad) + content + b"\0" * pad


def pair(name, value):
    def length(n):
        return struct.pack(">B", n) if n < 128 else struct.pack(">I", n | 0x80000000)
    name, value = name.encode(), value.encode()
    return length(len(name)) + length(len(value)) + name + value


def request(rid, path, query="", method="GET", keep=True):
    params = b"".join(pair(k, v) for k, v in (("REQUEST_METHOD", method), ("DOCUMENT_URI", path),
                                             ("QUERY_STRING", query), ("REMOTE_ADDR", "127.0.0.1")))
    return (record(BEGIN, rid, struct.pack(">HB5x", 1, KEEP_CONN if keep else 0))
            + record(PARAMS, rid, params) + record(PARAMS, rid) + record(STDIN, rid))


class Conn:
    """A FastCGI client connection reading whole records."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def record(self):
        """(type, request id, content), or None at EOF."""
        while True:
            if len(self.buf) >= 8:
                _, rtype, rid, clen, pad = struct.unpack(">BBHHBx", self.buf[:8])
                if len(self.buf) >= 8 + clen + pad:
                    content = self.buf[8:8 + clen]
                    self.buf = self.buf[8 + clen + pad:]
                    return rtype, rid, content
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data

    def response(self, rid):
        """The stdout of request rid up to its END_REQUEST: (stdout bytes, protocol status)."""
        out = b""
        while True:
            rec = self.record()
            assert rec is not None, "the connection closed before END_REQUEST"
            rtype, got_id, content = rec
            assert got_id == rid, f"a record for request {got_id} while waiting for {rid}"
            if rtype == STDOUT:
                out += content
            elif rtype == END:
                return out, content[4]

    def closed(self, wait=0.5):
        """Whether the server closed the connection (it has nothing to send)."""
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(10)

    def close(self):
        self.sock.close()


class EventServer:
    def __init__(self, *extra):
        self.extra = extra

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="pcgi-e-", dir="/tmp")
        self.sock = os.path.join(self.dir, "ev.sock")
        self.status_port = free_port()
        self.proc = Proc([str(PERFCGI_BIN), "--worker-class", "event", "--workers", "1",
                          "--bind", f"unix:{self.sock}", "--status-bind", f"127.0.0.1:{self.status_port}",
                          "--access-log", "", *self.extra]).__enter__()
        wait_until(lambda: os.path.exists(self.sock), 20, message="socket created")

        def answers():
            c = Conn(self.sock)
            try:
                c.send(request(1, "/", keep=False))
                out, status = c.response(1)
                return status == 0 and b"Hello, World!" in out
            finally:
                c.close()
        wait_until(answers, 20, message="the event worker answers")
        return self

    def in_flight(self):
        """Requests the worker has in flight, from the master's /status?full."""
        conn = http.client.HTTPConnection("127.0.0.1", self.status_port, timeout=10)
        try:
            conn.request("GET", "/status?full")
            rows = json.loads(conn.getresponse().read())["processes"]
        finally:
            conn.close()
        return sum(r["active_requests"] for r in rows)

    def __exit__(self, *exc):
        self.proc.__exit__(*exc)
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def status_line(stdout):
    return stdout.split(b"\r\n", 1)[0].decode()


def test_event_kept_connection_serves_requests_in_turn():
    with EventServer() as s:
        c = Conn(s.sock)
        for rid, (path, query, expect) in enumerate([("/", "", b"Hello, World!"),
                                                     ("/cpu-intensive", "n=1000", b'"primes":168'),
                                                     ("/nope", "", b'"not_found"')], start=1):
            c.send(request(rid, path, query))
            out, status = c.response(rid)
            assert status == 0, f"protocol status {status}"
            assert expect in out, out
        c.send(request(9, "/", method="HEAD"))
        out, _ = c.response(9)
        assert status_line(out) == "Status: 200 OK" and out.endswith(b"\r\n\r\n"), f"HEAD: {out!r}"
        assert not c.closed(), "the kept connection was closed"
        c.close()


def test_event_connection_without_keep_conn_is_closed_after_the_answer():
    with EventServer() as s:
        c = Conn(s.sock)
        c.send(request(1, "/", keep=False))
        out, status = c.response(1)
        assert status == 0 and b"Hello" in out
        assert c.record() is None, "the connection stays open without FCGI_KEEP_CONN"
        c.close()


def test_event_get_values_and_unknown_type():
    with EventServer("--worker-connections", "77") as s:
        c = Conn(s.sock)
        c.send(record(GET_VALUES, 0, pair("FCGI_MPXS_CONNS", "") + pair("FCGI_MAX_CONNS", "")))
        rtype, rid, content = c.record()
        assert (rtype, rid) == (GET_VALUES_RESULT, 0), (rtype, rid)
        assert b"FCGI_MPXS_CONNS0" in content and b"FCGI_MAX_CONNS77" in content, content
        c.send(record(42, 0, b"whatever"))
        rtype, rid, content = c.record()
        assert (rtype, rid, content[0]) == (UNKNOWN_TYPE, 0, 42), (rtype, rid, content)
        c.send(request(1, "/"))
        out, _ = c.response(1)
        assert b"Hello" in out, "the connection does not serve after management records"
        c.close()


def test_event_second_request_on_a_busy_connection_is_refused():
    with EventServer() as s:
        c = Conn(s.sock)
        # Request 2 begins before request 1 has its stdin end: no multiplexing.
        begin1 = record(BEGIN, 1, struct.pack(">HB5x", 1, KEEP_CONN)) + record(PARAMS, 1, pair("DOCUMENT_URI", "/"))
        c.send(begin1 + record(PARAMS, 1) + record(BEGIN, 2, struct.pack(">HB5x", 1, KEEP_CONN)) + record(STDIN, 1))
        answers = {}
        while len(answers) < 2:
            rtype, rid, content = c.record()
            if rtype == END:
                answers[rid] = content[4]
        assert answers == {1: 0, 2: 1}, f"END_REQUEST statuses {answers} (1 = FCGI_CANT_MPX_CONN)"
        c.close()


def test_event_protocol_error_closes_only_that_connection():
    with EventServer() as s:
        good = Conn(s.sock)
        good.send(request(1, "/"))
        assert b"Hello" in good.response(1)[0]
        for garbage in (record(BEGIN, 1, struct.pack(">HB5x", 1, 0), version=2),  # bad version
                        record(BEGIN, 1, b"\0" * 16),                              # begin of 16 bytes
                        b"\x01\x01\x00\x01\xff\xff\x00\x00" + b"\x00" * 64):      # truncated, then EOF
            bad = Conn(s.sock, timeout=5)
            try:
                bad.send(garbage)
                if garbage.startswith(b"\x01\x01\x00\x01\xff\xff"):
                    bad.sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed while we were still sending: what the test wants
            assert wait_until(bad.closed, 10, message="the bad connection is closed")
            bad.close()
        # A record for a request that is not active is ignored (FastCGI 1.0), not an error.
        good.send(record(PARAMS, 7, pair("A", "b")) + request(2, "/cpu-intensive", "n=100"))
        out, status = good.response(2)
        assert status == 0 and b'"primes":25' in out, "the good connection suffered from the bad ones"
        good.close()


def test_event_params_over_the_limit_get_413_and_the_connection_goes_on():
    # Over 64 KiB of params, and over 8192 pairs: a JSON 413 once the request is read
    # (not a dropped connection, which Nginx reports as 502), then the kept connection serves.
    start = pair("REQUEST_METHOD", "GET") + pair("DOCUMENT_URI", "/cpu-intensive") + pair("QUERY_STRING", "n=100")
    big = pair("HTTP_X_BIG", "x" * 60000)
    many = b"".join(pair(f"X{i:04x}", "") for i in range(8200))  # 57 KB: over the count, not the bytes
    with EventServer() as s:
        c = Conn(s.sock)
        for rid, stream in ((1, start + big + big), (2, start + many)):
            records = b"".join(record(PARAMS, rid, stream[i:i + 65528]) for i in range(0, len(stream), 65528))
            c.send(begin(rid) + records + record(PARAMS, rid) + record(STDIN, rid))
            out, status = c.response(rid)
            head, _, body = out.partition(b"\r\n\r\n")
            assert status == 0 and status_line(out) == "Status: 413 Content Too Large", out[:300]
            answer = json.loads(body)
            assert answer["error"] == "too_large" and "FastCGI params" in answer["message"], answer
        c.send(request(3, "/cpu-intensive", "n=100"))
        out, _ = c.response(3)
        assert b'"primes":25' in out, "the connection does not serve after params over the limit"
        # At the limits exactly: 8192 pairs in 64 KiB are served.
        rest = 8192 - 5  # start (3), REMOTE_ADDR and HTTP_PAD
        fill = [pair(f"X{i:04x}", "") for i in range(rest)]
        stream = start + pair("REMOTE_ADDR", "127.0.0.1") + b"".join(fill)
        stream += pair("HTTP_PAD", "p" * (65536 - len(stream) - len(pair("HTTP_PAD", "")) - 3))
        assert len(stream) == 65536, len(stream)
        records = b"".join(record(PARAMS, 4, stream[i:i + 65528]) for i in range(0, len(stream), 65528))
        c.send(begin(4) + records + record(PARAMS, 4) + record(STDIN, 4))
        out, _ = c.response(4)
        assert b'"primes":25' in out, f"params at the limits: {out[:300]!r}"
        c.close()


def test_event_abort_request_ends_it():
    with EventServer() as s:
        c = Conn(s.sock)
        # Aborted before its stdin ends, so before the endpoint ran.
        c.send(record(BEGIN, 1, struct.pack(">HB5x", 1, KEEP_CONN)) + record(PARAMS, 1, pair("DOCUMENT_URI", "/"))
               + record(PARAMS, 1) + record(ABORT, 1))
        out, status = c.response(1)
        assert status == 0 and out == b"", f"an aborted request answered {out!r}"
        c.send(request(2, "/"))
        assert b"Hello" in c.response(2)[0], "the connection does not serve after an abort"
        c.close()
        assert wait_until(lambda: s.in_flight() == 0, 10, message="the aborted request is not left in flight")


def test_event_client_leaving_before_stdin_leaves_nothing_in_flight():
    with EventServer() as s:
        c = Conn(s.sock)
        c.send(record(BEGIN, 1, struct.pack(">HB5x", 1, KEEP_CONN)) + record(PARAMS, 1, pair("DOCUMENT_URI", "/"))
               + record(PARAMS, 1))
        wait_until(lambda: s.in_flight() == 1, 10, message="the request begun")
        c.close()
        wait_until(lambda: s.in_flight() == 0, 10, message="the abandoned request is not left in flight")


def test_event_idle_kept_connection_times_out():
    with EventServer("--keepalive-timeout", "1") as s:
        c = Conn(s.sock)
        c.send(request(1, "/"))
        c.response(1)
        started = time.monotonic()
        assert c.record() is None, "an idle kept connection stayed open"
        assert time.monotonic() - started < 10
        c.close()


def test_event_worker_connections_bounds_open_connections():
    with EventServer("--worker-connections", "2", "--keepalive-timeout", "30") as s:
        held = [Conn(s.sock), Conn(s.sock)]
        for i, c in enumerate(held):
            c.send(request(1, "/"))
            c.response(1)
        third = Conn(s.sock, timeout=2)
        third.send(request(1, "/"))
        try:
            third.record()
            raise AssertionError("a third connection was served over worker_connections=2")
        except socket.timeout:
            pass
        held[0].close()
        third.sock.settimeout(10)
        out, status = third.response(1)
        assert b"Hello" in out, "the waiting connection was not served once one closed"
        third.close()
        held[1].close()


def many_connections(n):
    """Room for n more open files in this process (a skip when the hard limit has none)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        if hard != resource.RLIM_INFINITY and hard < n + 200:
            raise Skip(f"needs {n + 200} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 200, hard))


@contextlib.contextmanager
def connections(server, n, first):
    """n connections to server, each sending `first`; all closed on the way out."""
    held = []
    try:
        for _ in range(n):
            held.append(Conn(server.sock))
            held[-1].send(first)
        yield held
    finally:
        for c in held:
            c.close()


def glibc_worker(server):
    (worker,) = children_of(server.proc.pid)
    if worker_is_sanitized(worker):
        raise Skip("an AddressSanitizer build allocates with its own allocator, not glibc's")
    return worker


def test_event_idle_kept_connections_hold_no_buffers():
    # Between requests a connection lends its parser's room and its output buffer to
    # the worker's spares: a kept connection costs its struct, not 2-4 KiB more.
    n = 600
    many_connections(n)
    with EventServer("--keepalive-timeout", "60") as s:
        worker = glibc_worker(s)
        before = private_kb(worker)
        with connections(s, n, request(1, "/", query="pad=" + "x" * 1500)) as held:
            for c in held:
                out, status = c.response(1)
                assert status == 0 and b"Hello" in out, out[:200]
            grown = private_kb(worker) - before
            assert grown < n * 1.5, f"{n} idle kept connections hold {grown} KiB: over 1.5 KiB each"
            for c in held[:50]:  # and each serves its next request
                c.send(request(2, "/", query="pad=" + "y" * 1500))
                assert b"Hello" in c.response(2)[0]


def test_event_worker_gives_back_what_closed_connections_used_once_it_rests():
    # glibc's malloc kept every byte a burst of connections had used (their structs and
    # buffers, interleaved with what stays): a worker held megabytes after Nginx let
    # them go. Once it rests, it hands the free pages back (malloc_trim). Requests
    # half sent hold their params' buffers.
    n = 600
    many_connections(n)
    half = (record(BEGIN, 1, struct.pack(">HB5x", 1, KEEP_CONN))
            + record(PARAMS, 1, pair("REQUEST_METHOD", "GET") + pair("PAD", "x" * 1800)))
    with EventServer("--request-read-timeout", "60") as s:
        worker = glibc_worker(s)
        before = private_kb(worker)
        with connections(s, n, half):
            wait_until(lambda: private_kb(worker) - before > n * 2, 15,
                       message=f"{n} half-sent requests loading the worker's heap")
            grown = private_kb(worker) - before
        wait_until(lambda: private_kb(worker) - before < grown / 4, 15,
                   message=f"the worker giving back most of the {grown} KiB its {n} closed connections used")
        c = Conn(s.sock)  # and it serves on
        c.send(request(1, "/", keep=False))
        assert b"Hello" in c.response(1)[0]
        c.close()


def test_event_serves_cgi_fcgi():
    if not shutil.which("cgi-fcgi"):
        raise Skip("cgi-fcgi (libfcgi-bin) is not installed")
    with EventServer() as s:
        env = dict(os.environ, REQUEST_METHOD="GET", DOCUMENT_URI="/cpu-intensive", QUERY_STRING="n=1000")
        r = subprocess.run(["cgi-fcgi", "-bind", "-connect", s.sock], env=env, capture_output=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(b"Status: 200 OK\r\n") and b'"primes":168' in r.stdout, r.stdout


def test_event_worker_stops_gracefully():
    # Nginx may send a request on a cached connection at any moment: a stopping worker that
    # closed its idle kept connections lost such a request (Nginx logs "upstream
    # prematurely closed" or a reset and retries a GET; anything else fails). It answers
    # it, and leaves the connection to its client or, idle, to keepalive_timeout.
    with EventServer("--keepalive-timeout", "2") as s:
        c = Conn(s.sock)
        c.send(request(1, "/"))
        c.response(1)
        os.kill(s.proc.pid, signal.SIGTERM)
        time.sleep(0.5)  # the worker has taken the stop by now
        c.send(request(2, "/"))
        out, status = c.response(2)
        assert status == 0 and b"Hello, World!" in out, out
        assert not c.closed(0.5), "a stopping worker closed a kept connection under its client"
        rc, _, err = s.proc.wait(30)
        assert rc == 0, f"exit {rc}: {err}"
        assert c.record() is None, "the idle kept connection survived the stop"
        c.close()
        assert not os.path.exists(s.sock), "the socket file is left behind"


# --- a hostile or broken peer: backpressure, read timeout, a hung PostgreSQL -----------------

def worker_pid(server):
    """The one worker of an EventServer (started with --workers 1)."""
    return wait_until(lambda: (children_of(server.proc.pid) or [None])[0], 20, message="the worker runs")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def begin(rid, keep=True):
    return record(BEGIN, rid, struct.pack(">HB5x", 1, KEEP_CONN if keep else 0))


def answers_hello(path, timeout=10):
    """One GET / on a new connection: the seconds it took (fails if not answered)."""
    started = time.monotonic()
    c = Conn(path, timeout=timeout)
    try:
        c.send(request(1, "/", keep=False))
        out, status = c.response(1)
    finally:
        c.close()
    assert status == 0 and b"Hello, World!" in out, out
    return time.monotonic() - started, int(out.split(b"X-Worker: ", 1)[1].split(b"\r\n", 1)[0])


def test_event_client_not_reading_its_answers_is_not_buffered_without_bound():
    # Records that each ask for an answer (unknown types, FCGI_GET_VALUES), sent as fast as
    # the worker takes them by a client that never reads: the worker must stop reading
    # that connection while its answers pile up, not buffer them all.
    unit = record(42, 0) + record(GET_VALUES, 0, pair("FCGI_MAX_CONNS", ""))
    chunk = unit * (1024 * 1024 // len(unit))
    with EventServer("--keepalive-timeout", "60") as s:
        pid = worker_pid(s)
        before = rss_kb(pid)
        flood = Conn(s.sock)
        flood.sock.setblocking(False)
        sent, limit, stalled_since = 0, 64 * 1024 * 1024, None
        while sent < limit:
            try:
                n = flood.sock.send(chunk[sent % len(chunk):])
                sent += n
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 2:
                    break  # the worker stopped reading: what the test wants
                time.sleep(0.01)
        grown_mb = (rss_kb(pid) - before) / 1024
        print(f"flood: {sent / 2**20:.2f} MiB taken in before the worker stopped reading; RSS grew {grown_mb:.1f} MB")
        # Other clients are served meanwhile, by the same worker.
        answers_hello(s.sock)
        assert grown_mb < 32, (f"the worker grew by {grown_mb:.0f} MB buffering answers nobody reads "
                               f"({sent / 2**20:.1f} MiB of records taken in)")
        assert sent < limit, f"all {limit >> 20} MiB of records were taken in without their answers being read"
        # Reading the answers lets the worker read the rest: every record is answered, then
        # the connection serves a request. A unit is 32 bytes: UNKNOWN (8) and GET_VALUES
        # (24), answered with 16 and 32 bytes.
        flood.sock.setblocking(True)
        flood.sock.settimeout(10)
        units, tail = divmod(sent, len(unit))
        expect = units * 48 + (16 if tail >= 8 else 0)
        got = 0
        while got < expect:
            data = flood.sock.recv(min(1 << 20, expect - got))
            assert data, f"the connection closed after {got} of {expect} answer bytes"
            got += len(data)
        flood.send((unit[tail:] if tail else b"") + request(1, "/"))
        stdout = b""
        while True:
            rtype, rid, content = flood.record()
            if rid == 1 and rtype == STDOUT:
                stdout += content
            elif rid == 1 and rtype == END:
                break
        assert b"Hello" in stdout, "the connection does not serve after the flood"
        flood.close()


def test_event_request_not_sent_in_time_is_closed():
    # BEGIN only; BEGIN and half a PARAMS record; params but half the body: each is closed
    # after request_read_timeout although keepalive_timeout is far away.
    partial_params = begin(1) + record(PARAMS, 1, pair("DOCUMENT_URI", "/") * 4)[:20]
    half_body = (begin(1) + record(PARAMS, 1, pair("DOCUMENT_URI", "/") + pair("REQUEST_METHOD", "GET"))
                 + record(PARAMS, 1) + record(STDIN, 1, b"x" * 100))
    with EventServer("--request-read-timeout", "1", "--keepalive-timeout", "30") as s:
        conns = []
        for data in (begin(1), partial_params, half_body):
            c = Conn(s.sock)
            c.send(data)
            conns.append(c)
        started = time.monotonic()
        for c, what in zip(conns, ("BEGIN only", "BEGIN and part of PARAMS", "part of the body")):
            assert wait_until(lambda: c.closed(0.2), 10, interval=0, message=f"{what}: closed"), what
            c.close()
        waited = time.monotonic() - started
        assert waited >= 0.8, f"closed after {waited:.1f}s, before request_read_timeout (1 s)"
        assert wait_until(lambda: s.in_flight() == 0, 10, message="nothing left in flight")
        # A kept connection that served gets the same deadline for its next request.
        c = Conn(s.sock)
        c.send(request(1, "/"))
        c.response(1)
        c.send(begin(2))
        assert wait_until(lambda: c.closed(0.2), 10, interval=0, message="a stalled second request is closed")
        c.close()
        answers_hello(s.sock)


def test_event_requests_not_sent_do_not_hold_worker_connections():
    with EventServer("--request-read-timeout", "1", "--keepalive-timeout", "30", "--worker-connections", "4") as s:
        stalled = []
        for _ in range(4):
            c = Conn(s.sock)
            c.send(begin(1))
            stalled.append(c)
        time.sleep(0.2)  # the four are accepted before the next one comes
        # The fifth client is served once the stalled ones are closed, within a few seconds.
        took, _ = answers_hello(s.sock, timeout=8)
        assert took >= 0.5, f"served after {took:.2f}s: worker_connections=4 did not hold"
        for c in stalled:
            assert c.closed(2), "a stalled connection is still open"
            c.close()


def test_event_second_begin_without_keep_conn_leaves_the_first_request_alone():
    # Request 1 (keep_conn=0) is half sent when request 2 begins (keep_conn=0 too): 2 is
    # refused with FCGI_CANT_MPX_CONN, 1 goes on and is answered, then the connection closes.
    params = pair("REQUEST_METHOD", "GET") + pair("DOCUMENT_URI", "/cpu-intensive") + pair("QUERY_STRING", "n=1000")
    with EventServer() as s:
        c = Conn(s.sock)
        c.send(begin(1, keep=False) + record(PARAMS, 1, params))
        c.send(begin(2, keep=False))
        rtype, rid, content = c.record()
        assert (rtype, rid, content[4]) == (END, 2, 1), f"request 2: {(rtype, rid, content)} (wanted CANT_MPX_CONN)"
        c.send(record(PARAMS, 1) + record(STDIN, 1))
        out, status = c.response(1)
        assert status == 0 and b'"primes":168' in out, f"request 1: {out!r}"
        assert c.record() is None, "the connection stays open after request 1 (keep_conn=0)"
        c.close()


def test_event_query_past_its_deadline_does_not_block_the_loop():
    # A query on a PostgreSQL that never answers outlives the request's deadline (timeout=3:
    # backend waits end at 2 s). The worker drops that connection without a blocking cancel,
    # answers 504, and its loop answers / promptly all along.
    with HungPostgres() as pg:
        url = f"postgresql://perfcgi@127.0.0.1:{pg.port}/perfcgi?sslmode=disable&connect_timeout=5"
        with EventServer("--timeout", "3", "--database-url", url, "--pool-size", "1",
                         "--redis-url", f"redis://127.0.0.1:{free_port()}/0") as s:
            result = {}

            def io():
                c = Conn(s.sock, timeout=15)
                try:
                    c.send(request(1, "/io-intensive", "ms=5000", keep=False))
                    result["answer"] = c.response(1)
                except Exception as exc:  # noqa: BLE001 - reported below
                    result["error"] = exc
                finally:
                    c.close()
            t = threading.Thread(target=io)
            started = time.monotonic()
            t.start()
            latencies, workers = [], set()
            while time.monotonic() - started < 4.5:
                try:
                    took, pid = answers_hello(s.sock, timeout=5)
                    latencies.append(took)
                    workers.add(pid)
                except (AssertionError, OSError) as exc:
                    latencies.append(float("inf"))
                    print(f"/ failed: {exc}")
                time.sleep(0.05)
            t.join(15)
            worst = max(latencies)
            print(f"/ during the hung query: {len(latencies)} answers, worst {worst * 1000:.0f} ms, workers {workers}")
            assert worst < 1, f"/ took {worst:.2f}s while a query passed its deadline (the loop blocked)"
            assert len(workers) == 1, f"/ answered by workers {workers}: the one blocked was killed and replaced"
            assert "answer" in result, f"/io-intensive got no answer: {result.get('error')}"
            out, _ = result["answer"]
            head, _, body = out.partition(b"\r\n\r\n")
            assert status_line(out) in ("Status: 504 Gateway Timeout", "Status: 503 Service Unavailable"), out
            assert json.loads(body)["error"] in ("timeout", "backend_unavailable"), body
            assert pg.logins >= 1, "the fake PostgreSQL saw no login"
            assert wait_until(lambda: pg.ended >= 1, 5, message="the timed-out connection is dropped")
