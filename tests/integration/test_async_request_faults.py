"""/async-request's faults and the event class's overlap: a private perfcgi (harness.
PrivatePerfcgi, spoken to in FastCGI) pointed at a closed port, at a server of the test's
own, or given a short timeout, and one event worker given many waits at once; the stack's
own perfcgi is left alone.
"""

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import WORKER_CLASS, PrivatePerfcgi, free_port, upstream_url
from test_async_request import assert_async_fields


def _cgi(out):
    """A raw CGI answer as (status, headers with lower-case names, body)."""
    header, _, body = out.partition("\r\n\r\n")
    headers = {}
    for line in header.split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(headers["status"].split()[0]), headers, body


def _private_get(p, query, timeout=30):
    code, out = p.request("/async-request", query, timeout=timeout)
    return _cgi(out)


# --- faults -----------------------------------------------------------------------------------

def test_async_request_upstream_down_is_503_naming_upstream():
    closed = free_port()
    with PrivatePerfcgi(WORKER_CLASS, upstream_url=f"http://127.0.0.1:{closed}/api") as p:
        for _ in range(3):  # and the worker goes on serving
            status, h, body = _private_get(p, "ms=10")
            assert status == 503, (status, body)
            obj = json.loads(body)
            assert obj["error"] == "backend_unavailable" and obj["backend"] == "upstream", obj
            assert obj.get("message"), obj
            assert h.get("retry-after", "").isdigit(), h
            assert h.get("cache-control") == "no-store", h
        status, _, body = _private_get(p, "")
        assert status == 503, (status, body)
        assert p.proc.poll() is None, "perfcgi exited"


def test_async_request_slower_than_the_deadline_is_504():
    # timeout=3: backend waits end 1 s before, at 2 s; the upstream would take 5.
    with PrivatePerfcgi(WORKER_CLASS, timeout=3, upstream_url=upstream_url()) as p:
        started = time.monotonic()
        status, h, body = _private_get(p, "ms=5000")
        took = time.monotonic() - started
        assert status == 504, (status, body)
        obj = json.loads(body)
        assert obj["error"] == "timeout", obj
        assert 1.5 <= took < 3.5, f"the 504 came after {took:.2f}s (deadline at 2 s)"
        # Within the deadline, the same worker answers.
        status, _, body = _private_get(p, "ms=20")
        assert status == 200, (status, body)
        assert_async_fields(json.loads(body), 20)


class _Answers(BaseHTTPRequestHandler):
    """An upstream that answers 200 with the body its path names."""
    bodies = {"/text": (b"not json at all", "text/plain"), "/array": (b"[1, 2, 3]", "application/json"),
              "/cut": (b'{"ms": ', "application/json"), "/teapot": (b'{"short": "stout"}', "application/json")}

    def do_GET(self):  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        body, ctype = self.bodies.get(path, (b"{}", "application/json"))
        self.send_response(418 if path == "/teapot" else 200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _upstream_of_our_own():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def test_async_request_answer_that_is_not_a_json_object_is_503():
    with _upstream_of_our_own() as port:
        for path in ("/text", "/array", "/cut"):
            with PrivatePerfcgi(WORKER_CLASS, upstream_url=f"http://127.0.0.1:{port}{path}") as p:
                status, h, body = _private_get(p, "ms=1")
                assert status == 503, (path, status, body)
                obj = json.loads(body)
                assert obj["error"] == "backend_unavailable" and obj["backend"] == "upstream", (path, obj)
                assert "JSON object" in obj["message"], (path, obj)
                assert h.get("retry-after", "").isdigit(), (path, h)
        # Any status with a JSON object is the upstream's answer: passed back as it is,
        # and the URL's own query keeps its place (ms joins it with &).
        with PrivatePerfcgi(WORKER_CLASS, upstream_url=f"http://127.0.0.1:{port}/teapot?x=1") as p:
            status, _, body = _private_get(p, "ms=1")
            assert status == 200, (status, body)
            obj = json.loads(body)
            assert obj["upstream_status"] == 418 and obj["upstream"] == {"short": "stout"}, obj


# --- the event class overlaps the waits ---------------------------------------------------------

def test_async_request_one_event_worker_overlaps_many_waits():
    n, ms = 20, 500
    with PrivatePerfcgi("event", workers=1, upstream_url=upstream_url()) as p:
        results, errors = [None] * n, []

        def one(i):
            try:
                results[i] = _private_get(p, f"ms={ms}")
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        took = time.monotonic() - started
        assert not errors, errors
        objs = []
        for status, _, body in results:
            assert status == 200, (status, body)
            objs.append(json.loads(body))
        assert len({o["worker"] for o in objs}) == 1, objs
        for o in objs:
            assert_async_fields(o, ms)
            # Each waited about its own ms, not for the others' turn.
            assert o["elapsed_ms"] < ms + 1000, o
        # One at a time would take n * ms = 10 s.
        print(f"{n} GETs of {ms} ms on one event worker: {took:.2f} s")
        assert took < 4, f"{n} requests of {ms} ms took {took:.2f}s on one event worker: not overlapped"
