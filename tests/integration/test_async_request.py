"""/async-request through the stack's Nginx: one HTTP GET to the external API (the stack's
echo Nginx, or the compose stack's upstream service), its JSON passed back. Runs against the
compose stack too; the faults and the event class's overlap are in
test_async_request_faults.py (they start a perfcgi of their own).
"""

from harness import assert_app_answer, assert_error, get, head, http, metric_sum, parse_metrics

RUNS_ON_EXTERNAL_STACK = True


def assert_async_fields(obj, ms, status=200):
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
        assert_async_fields(obj, ms)
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
