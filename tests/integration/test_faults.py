"""Backend faults: Redis, PostgreSQL or perfcgi itself going away, and coming back.

Every test that stops a service starts it again in a finally block, and waits until the
stack is ready again before it returns. /cached-data categories used here: 60, 70, 71, 72.
"""

import os
import signal
import socket
import time

from harness import (CACHE_TTL, WORKERS, assert_app_answer, assert_error, category_stats, get, http,
                     json_body, perfcgi_with, proc_alive, redis_cli, stack, until_cache_hit, wait_until,
                     wait_workers, worker_pids)

RECOVERY_TIMEOUT = 30


def _readyz():
    status, h, body = http("GET", "/readyz")
    return status, json_body(body)


def _ready():
    return _readyz()[0] == 200


def test_redis_down_bypass():
    c = 60
    key = f"perfcgi:cached-data:{c}"
    expected = category_stats(c)
    redis_cli("DEL", key)
    stack("stop", "redis")
    try:
        for _ in range(4):
            s, h, b = get(f"/cached-data?category={c}")
            obj = assert_app_answer(s, h, b)
            assert h.get("X-Cache") == "BYPASS", f"X-Cache {h.get('X-Cache')!r} with Redis down"
            assert obj["source"] == "database", obj
            assert obj["stats"] == expected, (obj, expected)
        # /readyz follows what the master's backend prober last saw (once a second).
        status, obj = wait_until(lambda: (r := _readyz())[0] == 503 and r, 10, message="/readyz 503 with Redis down")
        assert obj.get("backend") == "redis", obj
        # Endpoints without Redis do not care.
        s, h, b = get("/io-intensive?ms=1")
        assert_app_answer(s, h, b)
    finally:
        stack("start", "redis")

    wait_until(_ready, RECOVERY_TIMEOUT, message="/readyz 200 after Redis came back")
    # Back to cache-aside by itself: a MISS (which stores), then HITs. Workers that have
    # not noticed yet may still BYPASS for a moment; none may answer wrong data.
    seen, deadline = [], time.monotonic() + RECOVERY_TIMEOUT
    while not ("MISS" in seen and seen[-1] == "HIT"):
        assert time.monotonic() < deadline, f"no MISS then HIT within {RECOVERY_TIMEOUT}s: {seen}"
        s, h, b = get(f"/cached-data?category={c}")
        obj = assert_app_answer(s, h, b)
        assert obj["stats"] == expected, (obj, expected)
        x = h.get("X-Cache")
        assert (x, obj["source"]) in (("BYPASS", "database"), ("MISS", "database"), ("HIT", "cache")), (x, obj)
        seen.append(x)
        time.sleep(0.1)
    assert 1 <= int(redis_cli("TTL", key)) <= CACHE_TTL


def test_postgres_down_503():
    cold, warm, via_nginx = 70, 71, 72
    expected = {c: category_stats(c) for c in (cold, warm, via_nginx)}
    redis_cli("DEL", *(f"perfcgi:cached-data:{c}" for c in (cold, warm, via_nginx)))
    s, h, b = get(f"/cached-data?category={warm}")  # now in Redis
    assert assert_app_answer(s, h, b)["source"] == "database"
    before = set(worker_pids())
    assert len(before) == 4, before

    stack("stop", "postgres")
    try:
        for path in ["/io-intensive?ms=1"] * 6 + ["/mixed?n=10&ms=1", f"/cached-data?category={cold}"]:
            s, h, b = get(path)
            obj = assert_error(s, h, b, 503, "backend_unavailable")
            assert obj.get("backend") == "postgresql", f"{path}: {obj}"
            assert h.get("Retry-After", "").strip().isdigit(), f"{path}: Retry-After {h.get('Retry-After')!r}"
            pid = int(h["X-Worker"])
            assert pid in before and proc_alive(pid), f"{path}: answered by {pid}, workers were {before}"
        # Through Nginx's cache too: the error must not be stored.
        s, h, b = get(f"/cached-data?category={via_nginx}", no_cache=False)
        assert_error(s, h, b, 503, "backend_unavailable")
        # Redis still has what it had: served, and right.
        s, h, b = get(f"/cached-data?category={warm}")
        obj = assert_app_answer(s, h, b)
        assert obj["source"] == "cache" and obj["stats"] == expected[warm], obj
        # Endpoints without PostgreSQL do not care.
        s, h, b = get("/")
        assert_app_answer(s, h, b)
        status, obj = wait_until(lambda: (r := _readyz())[0] == 503 and r, 10,
                                 message="/readyz 503 with PostgreSQL down")
        assert obj.get("backend") == "postgresql", (status, obj)
        assert set(worker_pids()) == before, f"workers changed: {before} -> {set(worker_pids())}"
    finally:
        stack("start", "postgres")

    def io_ok():
        s, h, b = get("/io-intensive?ms=1")
        return s == 200
    wait_until(io_ok, RECOVERY_TIMEOUT, message="/io-intensive 200 after PostgreSQL came back")
    # Every worker's pool reconnects by itself: from now on, no failure at all.
    for i in range(12):
        s, h, b = get("/io-intensive?ms=1")
        assert_app_answer(s, h, b)
    s, h, b = get(f"/cached-data?category={cold}")
    obj = assert_app_answer(s, h, b)
    assert obj["stats"] == expected[cold], obj
    s, h, b = get(f"/cached-data?category={via_nginx}", no_cache=False)
    obj = assert_app_answer(s, h, b)
    assert obj["stats"] == expected[via_nginx], obj
    assert h["X-Cache-Status"] != "HIT", "the 503 had been cached by Nginx"
    assert set(worker_pids()) == before, "workers were replaced: a backend fault crashed one"
    wait_until(_ready, RECOVERY_TIMEOUT, message="/readyz 200 after PostgreSQL came back")


def test_killed_worker_is_replaced():
    before = worker_pids()
    assert len(before) == 4, before
    victim = before[0]
    os.kill(victim, signal.SIGKILL)

    def replaced():
        now = worker_pids()
        return victim not in now and len(now) == 4 and now
    now = wait_until(replaced, RECOVERY_TIMEOUT, message=f"worker {victim} replaced")
    assert len(set(now) - set(before)) == 1, (before, now)
    for _ in range(12):
        s, h, b = get("/")
        obj = assert_app_answer(s, h, b)
        assert obj["worker"] in now, (obj["worker"], now)


def test_perfcgi_down_nginx_answers_502_json():
    cached = "/expensive-computation?n=31&method=fast"
    until_cache_hit(cached)
    stack("stop", "perfcgi")
    try:
        s, h, b = get("/cpu-intensive?n=10")
        obj = assert_error(s, h, b, 502, "backend_unavailable", from_app=False)
        assert obj.get("backend") == "perfcgi", obj
        assert h.get("Retry-After", "").strip().isdigit(), dict(h)
        s, h, b = http("GET", "/healthz")
        assert s in (502, 503) and json_body(b).get("error") == "backend_unavailable", (s, b)
        # A fresh answer in Nginx's cache is still served.
        s, h, b = get(cached, no_cache=False)
        assert s == 200 and h.get("X-Cache-Status") == "HIT", (s, h.get("X-Cache-Status"), b)
        assert json_body(b)["result"] == "1346269", b
    finally:
        stack("start", "perfcgi")
    wait_until(_ready, RECOVERY_TIMEOUT, message="/readyz 200 after perfcgi came back")
    s, h, b = get("/")
    assert_app_answer(s, h, b)
    assert len(worker_pids()) == 4


def test_unanswering_postgresql_gets_503_within_pool_timeout():
    # A "PostgreSQL" whose kernel completes the TCP handshake but that never answers
    # the startup message: the pool's connect must give up at pool_timeout.
    pool_timeout = 2
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        url = f"postgresql://perfcgi@127.0.0.1:{hole.getsockname()[1]}/perfcgi"
        with perfcgi_with(database_url=url, pool_timeout=pool_timeout):
            kids = set(wait_workers(WORKERS))
            for path in ("/io-intensive?ms=1", "/mixed?n=10&ms=1"):
                t0 = time.monotonic()
                s, h, b = get(path)
                took = time.monotonic() - t0
                obj = assert_error(s, h, b, 503, "backend_unavailable")
                assert obj.get("backend") == "postgresql", f"{path}: {obj}"
                assert h.get("Retry-After", "").strip().isdigit(), f"{path}: Retry-After {h.get('Retry-After')!r}"
                assert int(h["X-Worker"]) in kids, (h["X-Worker"], kids)
                print(f"{path}: 503 backend_unavailable after {took:.3f} s (pool_timeout = {pool_timeout} s)")
                assert pool_timeout - 0.25 <= took <= pool_timeout + 1.5, \
                    f"{path}: 503 after {took:.3f} s, pool_timeout is {pool_timeout} s"
            # Endpoints without PostgreSQL do not wait for it.
            s, h, b = get("/")
            assert_app_answer(s, h, b)
            assert set(worker_pids()) == kids, "workers were replaced while PostgreSQL did not answer"
