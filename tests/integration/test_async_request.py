"""/async-request: one HTTP GET to the external API (the stack's echo Nginx, upstream_url),
its JSON passed back; the upstream down, slow, or answering something else than JSON; and
the event class overlapping many such waits in one process.

The faults use a private perfcgi (harness.PrivatePerfcgi, spoken to in FastCGI) pointed at
a closed port, at a server of the test's own, or given a short timeout: the stack's own
perfcgi is left alone.
"""

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import (WORKER_CLASS, PrivatePerfcgi, assert_app_answer, assert_error, free_port, get, head, http,
                     metric_sum, parse_metrics, upstream_url)


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


def _assert_fields(obj, ms, status=200):
    assert set(obj) == {"upstream_status", "upstream_ms", "upstream", "elapsed_ms", "worker"}, obj
    assert obj["upstream_status"] == status, obj
    assert obj["upstream"] == {"ms": ms}, obj
    assert isinstance(obj["upstream_ms"], float), obj
    # The upstream sleeps ms (echo_sleep, on Nginx's millisecond timer); the round trip
    # is inside the handler's time.
    assert ms - 1 <= obj["upstream_ms"] <= obj["elapsed_ms"] + 0.01, obj


# --- answers ----------------------------------------------------------------------------------

def test_async_request_passes_the_upstream_answer_back():
    for query, ms in (("ms=0", 0), ("ms=1", 1), ("ms=50", 50), ("ms=250", 250), ("", 100)):
        status, h, body = get("/async-request" + ("?" + query if query else ""))
        obj = assert_app_answer(status, h, body)
        _assert_fields(obj, ms)
        assert h["Cache-Control"] == "no-store", h.get("Cache-Control")
        assert obj["upstream_ms"] < ms + 1000, f"ms={ms}: a round trip of {obj['upstream_ms']} ms"


def test_async_request_head_has_the_get_headers_and_no_body():
    status, h, body = head("/async-request?ms=5")
    assert status == 200, status
    assert body == b"", body
    assert h.get("Content-Type") == "application/json" and h.get("Cache-Control") == "no-store", dict(h)
    assert h["X-Worker"].isdigit(), dict(h)


def test_async_request_ms_out_of_range_is_400():
    for query in ("ms=-1", "ms=10001", "ms=abc", "ms=1.5", "ms="):
        status, h, body = get(f"/async-request?{query}")
        obj = assert_error(status, h, body, 400, "bad_request")
        assert obj.get("param") == "ms", f"{query}: {obj}"
        assert "[0, 10000]" in obj.get("message", ""), f"{query}: {obj}"


def test_async_request_is_counted_in_metrics_under_its_name():
    def counted():
        status, _, body = http("GET", "/metrics")
        assert status == 200, status
        m = parse_metrics(body.decode())
        return (metric_sum(m, "perfcgi_requests_total", endpoint="async_request", status="2xx"),
                metric_sum(m, "perfcgi_request_duration_seconds_count", endpoint="async_request"))
    before = counted()
    status, h, body = get("/async-request?ms=1")
    assert_app_answer(status, h, body)
    after = counted()
    assert after[0] >= before[0] + 1 and after[1] >= before[1] + 1, (before, after)


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
        _assert_fields(json.loads(body), 20)


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
            _assert_fields(o, ms)
            # Each waited about its own ms, not for the others' turn.
            assert o["elapsed_ms"] < ms + 1000, o
        # One at a time would take n * ms = 10 s.
        print(f"{n} GETs of {ms} ms on one event worker: {took:.2f} s")
        assert took < 4, f"{n} requests of {ms} ms took {took:.2f}s on one event worker: not overlapped"
