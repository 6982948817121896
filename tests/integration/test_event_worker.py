"""The event worker's own FastCGI codec, spoken to directly: kept-alive connections,
management records, protocol errors, aborts, limits, and a second real client (cgi-fcgi).

No stack needed: each test starts bin/perfcgi --worker-class event on a private unix
socket. Endpoints that need no backend (/, /cpu-intensive) are enough here; the
backends of the event class are covered by the whole suite run with that class.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

from harness import PERFCGI_BIN, Proc, Skip, free_port, wait_until

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


def test_event_params_over_the_limit_close_the_connection():
    with EventServer() as s:
        c = Conn(s.sock)
        big = pair("HTTP_X_BIG", "x" * 60000)
        c.send(record(BEGIN, 1, struct.pack(">HB5x", 1, KEEP_CONN)) + record(PARAMS, 1, big) + record(PARAMS, 1, big))
        assert wait_until(c.closed, 10, message="params over the limit close the connection")
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


def test_event_serves_cgi_fcgi():
    if not shutil.which("cgi-fcgi"):
        raise Skip("cgi-fcgi (libfcgi-bin) is not installed")
    with EventServer() as s:
        env = dict(os.environ, REQUEST_METHOD="GET", DOCUMENT_URI="/cpu-intensive", QUERY_STRING="n=1000")
        r = subprocess.run(["cgi-fcgi", "-bind", "-connect", s.sock], env=env, capture_output=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(b"Status: 200 OK\r\n") and b'"primes":168' in r.stdout, r.stdout


def test_event_worker_stops_gracefully():
    with EventServer() as s:
        c = Conn(s.sock)
        c.send(request(1, "/"))
        c.response(1)
        os.kill(s.proc.pid, signal.SIGTERM)
        rc, _, err = s.proc.wait(30)
        assert rc == 0, f"exit {rc}: {err}"
        assert c.record() is None, "the idle kept connection survived the stop"
        c.close()
        assert not os.path.exists(s.sock), "the socket file is left behind"
