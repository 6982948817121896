"""Errors: parameter validation, unknown paths and methods, size limits, error headers.

Every request that means to reach the application sends X-No-Cache: 1, except where a
test checks that Nginx does not cache an error.
"""

import urllib.parse

from harness import assert_app_answer, assert_error, get, head, http

# Only answers through Nginx and the backends' data: runs on the docker-compose stack too.
RUNS_ON_EXTERNAL_STACK = True


def _bad_param(path, param, lo, hi):
    status, h, body = get(path)
    obj = assert_error(status, h, body, 400, "bad_request")
    assert obj.get("param") == param, f"{path}: param {obj.get('param')!r}, expected {param!r}: {obj}"
    expected = f"{param} must be an integer in [{lo}, {hi}]"
    assert obj.get("message") == expected, f"{path}: message {obj.get('message')!r}, expected {expected!r}"
    return obj


def test_bad_integer_parameters_get_400_naming_the_parameter():
    for value in ("abc", "1", "10000001", "", "1.5", "0x10", "-5", "1e3", "%20", "10abc", "99999999999999999999"):
        _bad_param(f"/cpu-intensive?n={value}", "n", 2, 10000000)


def test_every_parameter_is_range_checked():
    cases = [
        ("/io-intensive?ms=-1", "ms", 0, 10000),
        ("/io-intensive?ms=10001", "ms", 0, 10000),
        ("/mixed?n=1", "n", 2, 10000000),
        ("/mixed?ms=10001", "ms", 0, 10000),
        ("/mixed?n=100&ms=x", "ms", 0, 10000),
        ("/cached-data?category=100", "category", 0, 99),
        ("/cached-data?category=-1", "category", 0, 99),
        ("/expensive-computation?n=41", "n", 0, 40),
        ("/expensive-computation?n=41&method=naive", "n", 0, 40),
        ("/expensive-computation?n=94&method=fast", "n", 0, 93),
        ("/expensive-computation?n=94&method=memo", "n", 0, 93),
        ("/expensive-computation?n=-1&method=fast", "n", 0, 93),
        ("/memory-test?mb=0", "mb", 1, 256),
        ("/memory-test?mb=257", "mb", 1, 256),
        ("/memory-test?hold=2", "hold", 0, 1),
        ("/memory-test?mb=1&hold=yes", "hold", 0, 1),
    ]
    for path, param, lo, hi in cases:
        _bad_param(path, param, lo, hi)


def test_range_bounds_are_inclusive():
    for path in ("/cpu-intensive?n=2", "/io-intensive?ms=0", "/mixed?n=2&ms=0", "/cached-data?category=0",
                 "/cached-data?category=99", "/expensive-computation?n=0&method=naive",
                 "/expensive-computation?n=93&method=fast", "/memory-test?mb=1&hold=0"):
        status, h, body = get(path)
        assert_app_answer(status, h, body)


def test_bad_fibonacci_method_gets_400():
    for value in ("bogus", "", "fast2", "naive%00"):
        status, h, body = get(f"/expensive-computation?n=5&method={value}")
        obj = assert_error(status, h, body, 400, "bad_request")
        assert obj.get("param") == "method", obj


def test_first_occurrence_of_a_repeated_parameter_wins():
    status, h, body = get("/cpu-intensive?n=10&n=20")
    obj = assert_app_answer(status, h, body)
    assert obj["n"] == 10 and obj["primes"] == 4, obj
    status, h, body = get("/cpu-intensive?n=10&n=abc")
    assert assert_app_answer(status, h, body)["n"] == 10
    status, h, body = get("/cpu-intensive?n=abc&n=10")
    assert_error(status, h, body, 400, "bad_request")
    status, h, body = get("/expensive-computation?n=12&method=fast&method=bogus")
    obj = assert_app_answer(status, h, body)
    assert obj["method"] == "fast" and obj["result"] == "144", obj


def test_unknown_parameters_are_ignored():
    status, h, body = get("/cpu-intensive?foo=bar&n=100&nn=7&N=3&x")
    obj = assert_app_answer(status, h, body)
    assert obj["n"] == 100 and obj["primes"] == 25, obj
    status, h, body = get("/?n=abc&anything=1")
    assert assert_app_answer(status, h, body)["message"] == "Hello, World!"


def test_percent_encoding_is_decoded():
    status, h, body = get("/cpu-intensive?n=%31%30")
    assert assert_app_answer(status, h, body)["n"] == 10
    status, h, body = get("/cpu-intensive?%6E=12")
    assert assert_app_answer(status, h, body)["n"] == 12
    status, h, body = get("/expensive-computation?n=20&method=%66%61%73%74")
    obj = assert_app_answer(status, h, body)
    assert obj["method"] == "fast" and obj["result"] == "6765", obj
    # An encoded NUL or separator inside a value does not sneak through.
    for value in ("1%000", "1%262"):
        _bad_param(f"/cpu-intensive?n={value}", "n", 2, 10000000)


def test_unknown_path_gets_404_from_the_application():
    for path in ("/no-such-endpoint", "/cpu-intensive/", "/CPU-INTENSIVE", "/cpu-intensive/x", "/index.php"):
        status, h, body = get(path)
        assert_error(status, h, body, 404, "not_found")


def test_other_methods_get_405_with_allow():
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for path in ("/", "/cpu-intensive", "/cached-data?category=3"):
            body = b"a=b" if method in ("POST", "PUT", "PATCH") else None
            status, h, data = http(method, path, headers={"X-No-Cache": "1"}, body=body)
            assert_error(status, h, data, 405, "method_not_allowed")
            assert h.get("Allow") == "GET, HEAD", f"{method} {path}: Allow {h.get('Allow')!r}"


def test_long_query_string_gets_413_from_the_application():
    # Over the application's 2048-byte limit, under Nginx's 8k request line.
    q = "n=10&pad=" + "a" * 2100
    status, h, body = get(f"/cpu-intensive?{q}")
    assert_error(status, h, body, 413, "too_large")
    # Exactly 2048 bytes is still fine.
    q = "n=10&pad="
    q += "a" * (2048 - len(q))
    status, h, body = get(f"/cpu-intensive?{q}")
    assert assert_app_answer(status, h, body)["n"] == 10


def test_large_request_body_gets_413_json_from_nginx():
    status, h, body = http("POST", "/", headers={"X-No-Cache": "1", "Content-Type": "application/octet-stream"},
                           body=b"x" * (1024 * 1024 + 4096))
    assert_error(status, h, body, 413, "too_large", from_app=False)


def test_overlong_uri_gets_414_json_from_nginx():
    status, h, body = get("/cpu-intensive?n=10&pad=" + "a" * 9000)
    assert_error(status, h, body, 414, "too_large", from_app=False)


def test_many_request_headers_are_served_by_every_class():
    # 300 headers become over 300 FastCGI params (with Nginx's own): served, as by any class.
    headers = {f"X-H-{i}": f"v{i}" for i in range(1, 301)}
    headers["X-No-Cache"] = "1"
    status, h, body = http("GET", "/cpu-intensive?n=100", headers=headers)
    assert assert_app_answer(status, h, body)["primes"] == 25
    # Close to the most Nginx takes by default (max_headers 1000): still served.
    headers = {f"X-H-{i}": f"v{i}" for i in range(1, 991)}
    headers["X-No-Cache"] = "1"
    status, h, body = http("GET", "/cpu-intensive?n=100", headers=headers)
    assert assert_app_answer(status, h, body)["primes"] == 25
    # More than Nginx takes (headers or their buffers, 4 x 8k): its own JSON 400, not a 502.
    headers = {f"X{i:04x}": "y" * 8 for i in range(4000)}
    status, h, body = http("GET", "/cpu-intensive?n=100", headers=headers)
    assert_error(status, h, body, 400, "too_large", from_app=False)


def test_errors_are_no_store_and_never_cached_by_nginx():
    # Without X-No-Cache: Nginx may cache, but must not keep an error.
    urls = ["/expensive-computation?n=99&method=fast", "/cached-data?category=123",
            "/not-cached-404", "/expensive-computation?n=5&method=nope"]
    for url in urls:
        for attempt in range(2):
            status, h, body = get(url, no_cache=False)
            assert status in (400, 404), (url, status, body)
            assert h.get("X-Worker", "").isdigit(), f"{url}: no X-Worker, not the application's answer: {dict(h)}"
            assert h.get("Cache-Control") == "no-store", f"{url}: Cache-Control {h.get('Cache-Control')!r}"
            assert h.get("X-Cache-Status") != "HIT", f"{url}: an error came from the Nginx cache"


def test_error_bodies_are_single_json_objects_with_message():
    # The application's own errors (Nginx's 502 without perfcgi is JSON with a message
    # too: the status and X-Worker say who answered).
    for url, expect, code in (("/cpu-intensive?n=abc", 400, "bad_request"), ("/nope", 404, "not_found"),
                              ("/expensive-computation?method=x", 400, "bad_request")):
        status, h, body = get(url)
        obj = assert_error(status, h, body, expect, code)
        assert isinstance(obj.get("message"), str) and obj["message"], obj
        assert body.count(b"{") >= 1 and body.strip().endswith(b"}"), body


def test_x_cache_status_on_every_response():
    # The contract: Nginx adds X-Cache-Status to every response (the Nginx configuration
    # says so too: "Every response, including errors made by Nginx, says what the cache
    # did"). Collects every kind of answer that lacks it, or that is not the answer
    # expected (status, and X-Worker where the application answers: Nginx's own 502
    # carries X-Cache-Status too).
    app, master, nginx = "application", "master", "Nginx"
    checks = [
        ("GET /", 200, app, lambda: get("/")),
        ("GET / (cacheable)", 200, app, lambda: get("/expensive-computation?n=3&method=fast", no_cache=False)),
        ("HEAD /", 200, app, lambda: head("/")),
        ("GET 404", 404, app, lambda: get("/nope")),
        ("GET 400", 400, app, lambda: get("/cpu-intensive?n=x")),
        ("POST / (405)", 405, app, lambda: http("POST", "/", body=b"a=b")),
        ("DELETE /cpu-intensive (405)", 405, app, lambda: http("DELETE", "/cpu-intensive")),
        ("POST with a 1 MiB+ body (Nginx 413)", 413, nginx,
         lambda: http("POST", "/", body=b"x" * (1024 * 1024 + 4096))),
        ("GET with a 9k URI (Nginx 414)", 414, nginx, lambda: get("/?pad=" + "a" * 9000)),
        ("GET /healthz", 200, master, lambda: http("GET", "/healthz")),
        ("GET /readyz", 200, master, lambda: http("GET", "/readyz")),
        ("GET /healthz from 127.0.0.2 (Nginx 403)", 403, nginx,
         lambda: http("GET", "/healthz", source="127.0.0.2")),
    ]
    missing, wrong = [], []
    for what, expect, source, call in checks:
        status, h, body = call()
        if "X-Cache-Status" not in h:
            missing.append(f"{what} -> {status}")
        if status != expect:
            wrong.append(f"{what}: {status}, expected {expect} from the {source}: {body[:120]!r}")
        elif source == app and not h.get("X-Worker", "").isdigit():
            wrong.append(f"{what}: no X-Worker pid on an answer of the application: {dict(h)}")
    assert not missing, "no X-Cache-Status header on: " + "; ".join(missing)
    assert not wrong, "; ".join(wrong)


def test_percent_encoded_path_is_routed_on_the_decoded_path():
    # Nginx hands the application the decoded, normalised path (DOCUMENT_URI).
    for path in ("/cpu%2Dintensive?n=10", "//cpu-intensive?n=10", "/x/../cpu-intensive?n=10"):
        status, h, body = get(path)
        assert assert_app_answer(status, h, body)["n"] == 10, path
    status, h, body = get("/" + urllib.parse.quote("cpu-intensive?n=10", safe=""))
    assert_error(status, h, body, 404, "not_found")
