"""The endpoints through Nginx: answers, fields, headers, HEAD, the operations paths.

Requests that mean to reach the application send X-No-Cache: 1 (harness.get/head do by
default). /cached-data categories used here: 0, 1, 7 (the default), 50, 80, 99.
"""

import os
import threading

from harness import (MAX_HELD_MB, assert_app_answer, category_stats, cpu_ticks, get, head,
                     http, json_body, need_local_stack, psql, redis_cli, wait_until, worker_is_sanitized, worker_pids)

# Only answers through Nginx and the backends' data: runs on the docker-compose stack too.
RUNS_ON_EXTERNAL_STACK = True


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def primes_upto(n):
    sieve = bytearray([1]) * (n + 1)
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(n ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return sum(sieve)


# --- / ---------------------------------------------------------------------------------------

def test_hello_world():
    status, h, body = get("/")
    obj = assert_app_answer(status, h, body)
    assert obj["message"] == "Hello, World!", obj
    assert h["Cache-Control"] == "public, max-age=1", h.get("Cache-Control")
    assert set(obj) == {"message", "elapsed_ms", "worker"}, obj


def test_every_answer_names_a_live_worker():
    pids = set(worker_pids())
    assert len(pids) == 4, f"expected 4 workers, found {sorted(pids)}"
    seen = set()
    for _ in range(12):
        status, h, body = get("/")
        obj = assert_app_answer(status, h, body)
        seen.add(obj["worker"])
    assert seen <= pids, f"answers from pids {sorted(seen - pids)} that are not workers {sorted(pids)}"


# --- /cpu-intensive ----------------------------------------------------------------------------

def test_cpu_intensive_counts_primes():
    for n, expected in ((2, 1), (3, 2), (10, 4), (1000, 168), (7919, 1000), (50000, 5133)):
        status, h, body = get(f"/cpu-intensive?n={n}")
        obj = assert_app_answer(status, h, body)
        assert obj["n"] == n and obj["primes"] == expected, f"n={n}: {obj}, expected primes={expected}"
        assert h["Cache-Control"] == "no-store", h.get("Cache-Control")


def test_cpu_intensive_default_n_is_50000():
    status, h, body = get("/cpu-intensive")
    obj = assert_app_answer(status, h, body)
    assert obj["n"] == 50000 and obj["primes"] == 5133, obj


def test_cpu_intensive_upper_bound_accepted():
    status, h, body = get("/cpu-intensive?n=10000000")
    obj = assert_app_answer(status, h, body)
    assert obj["n"] == 10000000 and obj["primes"] == 664579, obj


def test_cpu_intensive_matches_a_sieve():
    for n in (97, 100, 101, 4096, 12345, 99991):
        status, h, body = get(f"/cpu-intensive?n={n}")
        obj = assert_app_answer(status, h, body)
        assert obj["primes"] == primes_upto(n), f"n={n}: {obj['primes']} != {primes_upto(n)}"


# --- /io-intensive and /mixed -------------------------------------------------------------------

def _assert_waits(obj, ms):
    for k in ("waited_ms", "db_ms", "pool_wait_ms"):
        assert isinstance(obj.get(k), (int, float)) and obj[k] >= 0, f"{k}: {obj}"
    assert obj["db_ms"] >= ms - 1, f"db_ms {obj['db_ms']} < ms {ms}: {obj}"
    assert abs(obj["waited_ms"] - (obj["pool_wait_ms"] + obj["db_ms"])) <= 0.01, \
        f"waited_ms != pool_wait_ms + db_ms: {obj}"
    assert obj["elapsed_ms"] >= obj["waited_ms"] - 0.01, f"elapsed_ms < waited_ms: {obj}"


def test_io_intensive_waits_in_the_database():
    for ms in (0, 1, 50, 120):
        status, h, body = get(f"/io-intensive?ms={ms}")
        obj = assert_app_answer(status, h, body)
        _assert_waits(obj, ms)
        assert h["Cache-Control"] == "no-store", h.get("Cache-Control")
        assert "n" not in obj and "primes" not in obj, obj


def test_io_intensive_default_ms_is_100():
    status, h, body = get("/io-intensive")
    obj = assert_app_answer(status, h, body)
    _assert_waits(obj, 100)


def test_io_intensive_waits_without_spinning():
    # A sync worker waiting 2 s on pg_sleep must not burn CPU meanwhile. Tests run one at a
    # time, so the workers' CPU time over the request is this request's (plus noise).
    need_local_stack("reads the workers' CPU time in /proc")
    hz = os.sysconf("SC_CLK_TCK")
    pids = worker_pids()
    before = {p: cpu_ticks(p) for p in pids}
    status, h, body = get("/io-intensive?ms=2000")
    obj = assert_app_answer(status, h, body)
    _assert_waits(obj, 2000)
    used = sum(cpu_ticks(p) - before[p] for p in pids if p in before)
    assert used < hz, f"workers used {used / hz:.2f}s of CPU during a 2 s database wait"


def test_mixed_does_cpu_then_io():
    status, h, body = get("/mixed?n=1000&ms=30")
    obj = assert_app_answer(status, h, body)
    assert obj["n"] == 1000 and obj["primes"] == 168, obj
    _assert_waits(obj, 30)
    assert h["Cache-Control"] == "no-store", h.get("Cache-Control")


def test_mixed_defaults():
    status, h, body = get("/mixed")
    obj = assert_app_answer(status, h, body)
    assert obj["n"] == 20000 and obj["primes"] == 2262, obj
    _assert_waits(obj, 50)


# --- /cached-data ------------------------------------------------------------------------------

def _cached(category, no_cache=True):
    status, h, body = get(f"/cached-data?category={category}", no_cache=no_cache)
    obj = assert_app_answer(status, h, body)
    return obj, h


def test_cached_data_stats_match_the_database():
    for c in (0, 1, 50, 99):
        redis_cli("DEL", f"perfcgi:cached-data:{c}")
        expected = category_stats(c)
        for _ in range(2):  # from the database, then from Redis
            obj, h = _cached(c)
            assert obj["category"] == c, obj
            assert obj["stats"] == expected, f"category {c}: {obj['stats']} != psql {expected}"
            assert isinstance(obj["stats"]["count"], int), obj
            for k in ("sum", "avg", "min", "max"):
                assert isinstance(obj["stats"][k], str), f"{k} is not a string: {obj}"
            assert h["Cache-Control"] == "public, max-age=5", h.get("Cache-Control")
            assert h.get("X-Cache") in ("HIT", "MISS"), h.get("X-Cache")


def test_cached_data_default_category_is_7():
    status, h2, body = get("/cached-data")
    obj2 = assert_app_answer(status, h2, body)
    assert obj2["category"] == 7, obj2
    assert obj2["stats"] == category_stats(7), obj2


def test_cached_data_ttl_and_source_fields():
    c = 1
    redis_cli("DEL", f"perfcgi:cached-data:{c}")
    obj, h = _cached(c)
    assert obj["source"] == "database" and h["X-Cache"] == "MISS", (obj, h.get("X-Cache"))
    assert obj["ttl"] == 60, obj
    obj, h = _cached(c)
    assert obj["source"] == "cache" and h["X-Cache"] == "HIT", (obj, h.get("X-Cache"))
    assert isinstance(obj["ttl"], int) and 1 <= obj["ttl"] <= 60, obj
    # Redis holds it with the configured TTL.
    ttl = int(redis_cli("TTL", f"perfcgi:cached-data:{c}"))
    assert 1 <= ttl <= 60, f"redis TTL {ttl}"


# --- /expensive-computation --------------------------------------------------------------------

def test_fibonacci_known_values():
    cases = [(93, "fast", "12200160415121876738"), (93, "memo", "12200160415121876738"),
             (30, "naive", "832040"), (0, "naive", "0"), (0, "memo", "0"), (0, "fast", "0"),
             (1, "fast", "1"), (2, "memo", "1"), (40, "naive", "102334155")]
    for n, method, expected in cases:
        status, h, body = get(f"/expensive-computation?n={n}&method={method}")
        obj = assert_app_answer(status, h, body)
        assert obj["n"] == n and obj["method"] == method, obj
        assert obj["result"] == expected, f"F({n}) by {method}: {obj['result']!r} != {expected!r}"
        assert h["Cache-Control"] == "public, max-age=3600", h.get("Cache-Control")


def test_fibonacci_defaults_are_naive_30():
    status, h, body = get("/expensive-computation")
    obj = assert_app_answer(status, h, body)
    assert (obj["n"], obj["method"], obj["result"]) == (30, "naive", "832040"), obj


def test_fibonacci_every_method_agrees_with_reference():
    for method, top in (("fast", 93), ("memo", 93), ("naive", 27)):
        for n in range(0, top + 1):
            status, h, body = get(f"/expensive-computation?n={n}&method={method}")
            obj = assert_app_answer(status, h, body)
            assert isinstance(obj["result"], str), obj
            assert obj["result"] == str(fib(n)), f"F({n}) by {method}: {obj['result']} != {fib(n)}"


# --- /memory-test ------------------------------------------------------------------------------

def test_memory_test_touches_and_releases_memory():
    status, h, body = get("/memory-test?mb=32")
    obj = assert_app_answer(status, h, body)
    assert obj["mb"] == 32 and obj["held_mb"] >= 0, obj
    for k in ("rss_before_kb", "rss_peak_kb", "rss_after_kb", "held_mb"):
        assert isinstance(obj[k], int), f"{k}: {obj}"
    assert obj["rss_peak_kb"] >= obj["rss_before_kb"] + 0.9 * 32 * 1024, f"peak too low: {obj}"
    assert obj["rss_after_kb"] <= obj["rss_peak_kb"] - 0.5 * 32 * 1024, f"not released: {obj}"
    assert isinstance(obj["checksum"], str) and obj["checksum"], obj
    assert h["Cache-Control"] == "no-store", h.get("Cache-Control")


def test_memory_test_default_is_10_mb():
    status, h, body = get("/memory-test")
    obj = assert_app_answer(status, h, body)
    assert obj["mb"] == 10, obj
    assert obj["rss_peak_kb"] >= obj["rss_before_kb"] + 0.9 * 10 * 1024, obj


def test_memory_test_gives_back_every_size_at_once():
    # The block is back with the OS before the answer leaves, whatever backs it: 2 MiB
    # pages (10), a block under one (1), 2 MiB pages and a 1 MiB tail (11). Sixteen
    # requests of each reach every worker. (An AddressSanitizer build keeps the shadow of
    # an address range the first time it is unmapped: an eighth of the block.)
    for mb in (10, 1, 11):
        for _ in range(16):
            status, h, body = get(f"/memory-test?mb={mb}")
            obj = assert_app_answer(status, h, body)
            assert obj["rss_peak_kb"] >= obj["rss_before_kb"] + 0.9 * mb * 1024, f"peak too low: {obj}"
            shadow_kb = mb * 1024 // 8 if worker_is_sanitized(obj["worker"]) else 0
            assert obj["rss_after_kb"] - obj["rss_before_kb"] <= 1024 + shadow_kb, f"not given back: {obj}"


def test_memory_test_checksum_depends_only_on_size():
    sums = {}
    for mb in (1, 2, 3, 1, 2, 3, 1, 2, 3):
        status, h, body = get(f"/memory-test?mb={mb}")
        obj = assert_app_answer(status, h, body)
        sums.setdefault(mb, set()).add(obj["checksum"])
    assert all(len(s) == 1 for s in sums.values()), f"checksums vary: {sums}"
    assert len({next(iter(s)) for s in sums.values()}) == 3, f"different sizes, same checksum: {sums}"


def test_memory_hold_is_capped_by_max_held_mb():
    # 5 MiB held per request; max_held_mb=8, so a worker's second hold is refused. With 4
    # workers, at most 4 holds succeed before every worker refuses.
    got_507 = False
    for i in range(30):
        status, h, body = get("/memory-test?mb=5&hold=1")
        if status == 507:
            obj = json_body(body)
            assert obj["error"] == "insufficient_storage", obj
            assert h.get("Cache-Control") == "no-store", h.get("Cache-Control")
            assert "X-Worker" in h, dict(h)
            got_507 = True
            break
        obj = assert_app_answer(status, h, body)
        assert obj["held_mb"] <= MAX_HELD_MB, f"a worker holds {obj['held_mb']} MiB > {MAX_HELD_MB}: {obj}"
        assert obj["held_mb"] >= 5, f"hold=1 but held_mb {obj['held_mb']}: {obj}"
        assert obj["rss_after_kb"] >= obj["rss_before_kb"] + 0.9 * 5 * 1024, f"not held: {obj}"
    assert got_507, "30 requests of mb=5&hold=1 never got 507"
    # Still serving, never reporting more than the cap.
    for _ in range(8):
        status, h, body = get("/memory-test?mb=1")
        obj = assert_app_answer(status, h, body)
        assert obj["held_mb"] <= MAX_HELD_MB, obj


def test_memory_hold_larger_than_cap_refused():
    status, h, body = get(f"/memory-test?mb={MAX_HELD_MB + 1}&hold=1")
    assert status == 507, f"status {status}: {body!r}"
    assert json_body(body)["error"] == "insufficient_storage", body


# --- HEAD ----------------------------------------------------------------------------------------

HEAD_URLS = [
    "/",
    "/cpu-intensive?n=100",
    "/io-intensive?ms=1",
    "/mixed?n=100&ms=1",
    "/cached-data?category=80",
    "/expensive-computation?n=10&method=fast",
    "/memory-test?mb=1",
    "/no-such-endpoint",
    "/cpu-intensive?n=abc",
]


def test_head_has_the_headers_of_get_and_no_body():
    for url in HEAD_URLS:
        gs, gh, gb = get(url)
        hs, hh, hb = head(url)
        assert hs == gs, f"HEAD {url}: status {hs}, GET {gs}"
        assert hb == b"", f"HEAD {url} has a body: {hb[:100]!r}"
        assert gb, f"GET {url} has no body"
        for name in ("Content-Type", "Cache-Control", "X-Worker", "X-Cache-Status"):
            assert name in hh, f"HEAD {url}: no {name} header ({dict(hh)})"
            if name not in ("X-Worker",):
                assert hh[name] == gh.get(name), f"HEAD {url}: {name} {hh[name]!r}, GET {gh.get(name)!r}"
        assert ("X-Cache" in hh) == ("X-Cache" in gh), f"HEAD {url}: X-Cache differs ({dict(hh)} vs {dict(gh)})"


# --- operations paths ------------------------------------------------------------------------------

def test_healthz_ok():
    status, h, body = http("GET", "/healthz")
    assert status == 200, (status, body)
    assert json_body(body) == {"status": "ok"}, body
    assert h.get("Content-Type") == "application/json", dict(h)


def test_readyz_ok_when_backends_answer():
    status, h, body = http("GET", "/readyz")
    assert status == 200, (status, body)
    obj = json_body(body)
    assert obj["status"] == "ok", obj


def test_ops_paths_head_and_other_methods():
    for path in ("/healthz", "/readyz"):
        status, h, body = http("HEAD", path)
        assert status == 200 and body == b"", (path, status, body)
        assert h.get("Content-Type") == "application/json", (path, dict(h))
        # 405 with Allow, as for every endpoint (and as RFC 9110 requires of a 405).
        status, h, body = http("POST", path, body=b"x")
        assert status == 405, (path, status, body)
        assert json_body(body).get("error") == "method_not_allowed", (path, body)
        assert h.get("Allow") == "GET, HEAD", f"POST {path}: 405 without 'Allow: GET, HEAD' ({dict(h)})"


def test_ops_paths_denied_to_other_client_addresses():
    # Nginx serves them to 127.0.0.1 and ::1 only: a client connecting from 127.0.0.2
    # stands in for a remote one. The application itself stays reachable from there.
    status, h, body = http("GET", "/healthz", source="127.0.0.2")
    assert status == 403, f"/healthz from 127.0.0.2: {status} {body!r}"
    assert json_body(body)["error"] == "forbidden", body
    status, h, body = http("GET", "/", headers={"X-No-Cache": "1"}, source="127.0.0.2")
    assert status == 200, (status, body)


def test_ops_paths_answer_while_every_worker_is_busy():
    # Four 10 s database waits occupy the four sync workers; /healthz and /readyz come
    # from the master, so they still answer. pg_stat_activity proves the workers were busy
    # before and after.
    sleeping = ("SELECT count(*) FROM pg_stat_activity "
                "WHERE state = 'active' AND query LIKE 'SELECT pg_sleep(%'")
    results = []

    def busy():
        results.append(get("/io-intensive?ms=10000"))

    threads = [threading.Thread(target=busy) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: int(psql(sleeping)) >= 4, timeout=20,
                   message="four workers busy in pg_sleep")
        status, h, body = http("GET", "/healthz")
        assert status == 200 and json_body(body) == {"status": "ok"}, (status, body)
        status, h, body = http("GET", "/readyz")
        assert status == 200, (status, body)
        still = int(psql(sleeping))
        assert still >= 4, f"only {still} workers still busy: the check did not overlap the load"
    finally:
        for t in threads:
            t.join(60)
    assert len(results) == 4 and all(r[0] == 200 for r in results), [r[0] for r in results]
