"""Caching: Nginx's FastCGI cache in front, and the Redis cache-aside of /cached-data.

Each Nginx cache test uses URLs that no other test requests without X-No-Cache, so the
order of tests does not matter. /cached-data categories used here: 30, 40, 41, 45.
"""

import json
import threading
import time

from harness import (CACHE_TTL, assert_app_answer, category_stats, get, head, json_body, master_http,
                     metric_sum, parse_metrics, redis_cli, until_cache_hit)

# Only answers through Nginx and the backends' data: runs on the docker-compose stack too.
RUNS_ON_EXTERNAL_STACK = True


# --- Nginx --------------------------------------------------------------------------------------

def test_nginx_caches_expensive_computation():
    url = "/expensive-computation?n=25&method=fast"
    s1, h1, b1 = get(url, no_cache=False)
    assert_app_answer(s1, h1, b1)
    assert h1["X-Cache-Status"] == "MISS", h1.get("X-Cache-Status")
    assert json_body(b1)["result"] == "75025", b1
    (s2, h2, b2), misses = until_cache_hit(url)
    stored = [(h1["X-Worker"], b1)] + [(h["X-Worker"], b) for _, h, b in misses]
    assert s2 == 200, (s2, b2)
    assert (h2.get("X-Worker"), b2) in stored, \
        f"a HIT must replay a stored answer (body and X-Worker): {h2.get('X-Worker')} {b2!r} not in {stored}"
    assert h2["Cache-Control"] == "public, max-age=3600", h2.get("Cache-Control")
    # And keeps doing so.
    s3, h3, b3 = get(url, no_cache=False)
    assert h3["X-Cache-Status"] == "HIT" and b3 == b2 and h3["X-Worker"] == h2["X-Worker"], \
        (h3.get("X-Cache-Status"), b3, b2)


def test_nginx_cache_key_is_the_whole_query_string():
    base = "/expensive-computation?n=28&method=fast"
    until_cache_hit(base)
    for other in ("/expensive-computation?method=fast&n=28", "/expensive-computation?n=28&method=fast&x=1",
                  "/expensive-computation?n=29&method=fast"):
        s, h, b = get(other, no_cache=False)
        assert s == 200, (other, s, b)
        assert h["X-Cache-Status"] == "MISS", f"{other}: X-Cache-Status {h.get('X-Cache-Status')}"


def test_x_no_cache_bypasses_and_stores_nothing():
    url = "/expensive-computation?n=27&method=fast"
    for _ in range(2):
        s, h, b = get(url, no_cache=True)
        assert_app_answer(s, h, b)
        assert h["X-Cache-Status"] == "BYPASS", h.get("X-Cache-Status")
    s, h, b = get(url, no_cache=False)
    assert h["X-Cache-Status"] == "MISS", f"the bypassed answers were stored: {h.get('X-Cache-Status')}"
    until_cache_hit(url)
    # With the entry stored, X-No-Cache still goes to the application.
    s, h, b = get(url, no_cache=True)
    assert h["X-Cache-Status"] == "BYPASS", h.get("X-Cache-Status")


def test_x_no_cache_0_uses_the_cache_and_head_is_bypassed_too():
    url = "/expensive-computation?n=24&method=fast"
    s, h, b = head(url, no_cache=True)
    assert s == 200 and h["X-Cache-Status"] == "BYPASS", (s, h.get("X-Cache-Status"))
    statuses = []
    for i in range(20):  # "X-No-Cache: 0" is no bypass: the answer is stored, then served
        s, h, b = get(url, no_cache=False, headers={"X-No-Cache": "0"})
        assert_app_answer(s, h, b)
        statuses.append(h["X-Cache-Status"])
        if statuses[-1] == "HIT":
            break
        time.sleep(0.05 * i)
    assert statuses[0] == "MISS" and statuses[-1] == "HIT", statuses


def test_no_store_endpoints_are_never_cached():
    for url in ("/cpu-intensive?n=1234", "/io-intensive?ms=2", "/mixed?n=99&ms=1", "/memory-test?mb=1"):
        statuses = []
        for _ in range(3):
            s, h, b = get(url, no_cache=False)
            assert_app_answer(s, h, b)
            assert h["Cache-Control"] == "no-store", (url, h.get("Cache-Control"))
            statuses.append(h["X-Cache-Status"])
            time.sleep(0.05)
        assert "HIT" not in statuses, f"{url}: {statuses}"


def test_head_and_get_are_cached_separately():
    url = "/expensive-computation?n=26&method=memo"
    s, h, b = head(url, no_cache=False)
    assert s == 200 and b == b"", (s, b)
    assert h["X-Cache-Status"] == "MISS", h.get("X-Cache-Status")
    (s, h, b), _ = until_cache_hit(url, method="HEAD")  # the HEAD answer is stored ...
    assert s == 200 and b == b"", f"HEAD from the cache has a body: {b!r}"
    assert h["Content-Type"] == "application/json" and h["Cache-Control"] == "public, max-age=3600", dict(h)
    s, h, b = get(url, no_cache=False)  # ... but never serves a GET
    assert s == 200 and h["X-Cache-Status"] == "MISS", \
        f"GET after HEAD: {h.get('X-Cache-Status')} (the HEAD answer must not serve a GET)"
    assert json_body(b)["result"] == "121393", b
    (s, h, b2), _ = until_cache_hit(url)
    assert json_body(b2)["result"] == "121393", b2
    s, h, b = head(url, no_cache=False)
    assert s == 200 and b == b"" and h["X-Cache-Status"] == "HIT", (h.get("X-Cache-Status"), b)


# --- Redis (/cached-data) ------------------------------------------------------------------------

def test_cached_data_miss_then_hit():
    c = 30
    redis_cli("DEL", f"perfcgi:cached-data:{c}")
    expected = category_stats(c)
    s, h, b = get(f"/cached-data?category={c}")
    obj = assert_app_answer(s, h, b)
    assert h["X-Cache"] == "MISS" and obj["source"] == "database", (h.get("X-Cache"), obj)
    assert obj["stats"] == expected and obj["ttl"] == CACHE_TTL, (obj, expected)
    for _ in range(3):
        s, h, b = get(f"/cached-data?category={c}")
        obj = assert_app_answer(s, h, b)
        assert h["X-Cache"] == "HIT" and obj["source"] == "cache", (h.get("X-Cache"), obj)
        assert obj["stats"] == expected, (obj, expected)
        assert 1 <= obj["ttl"] <= CACHE_TTL, obj
    # The value lives in Redis under the documented key, with the cache TTL.
    assert redis_cli("EXISTS", f"perfcgi:cached-data:{c}") == "1"
    assert 1 <= int(redis_cli("TTL", f"perfcgi:cached-data:{c}")) <= CACHE_TTL


def test_cached_data_stampede_single_recompute():
    c = 40
    expected = category_stats(c)
    for round_ in range(3):
        redis_cli("DEL", f"perfcgi:cached-data:{c}", f"perfcgi:cached-data:{c}:lock")
        results = [None] * 16
        barrier = threading.Barrier(16)

        def one(i):
            barrier.wait()
            results[i] = get(f"/cached-data?category={c}")

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(r is not None for r in results), "a request did not finish"
        sources = []
        for s, h, b in results:
            obj = assert_app_answer(s, h, b)
            assert obj["stats"] == expected, f"round {round_}: {obj['stats']} != {expected}"
            sources.append((obj["source"], h.get("X-Cache")))
        db = [x for x in sources if x[0] == "database"]
        assert len(db) == 1, f"round {round_}: {len(db)} recomputes among 16 concurrent requests: {sources}"
        assert db[0][1] == "MISS", sources
        assert all(x == ("cache", "HIT") for x in sources if x[0] != "database"), sources


def _cached_data_computations():
    """How many /cached-data answers the application has computed from PostgreSQL."""
    status, _, body = master_http("/metrics")
    assert status == 200, (status, body[:200])
    m = parse_metrics(body.decode())
    return (metric_sum(m, "perfcgi_cache_requests_total", result="miss")
            + metric_sum(m, "perfcgi_cache_requests_total", result="bypass"))


def test_cached_data_cold_wave_through_nginx_computes_once():
    """64 concurrent requests for a key new to Nginx's cache and to Redis: whichever way
    each is answered (Nginx's cache, or the application after Nginx's cache lock gave up
    waiting), PostgreSQL computes the value once."""
    c, n = 41, 64
    expected = category_stats(c)
    for round_ in range(2):
        redis_cli("DEL", f"perfcgi:cached-data:{c}", f"perfcgi:cached-data:{c}:lock")
        url = f"/cached-data?category={c}&wave={round_}-{time.time_ns()}"  # a new Nginx key
        before = _cached_data_computations()
        results = [None] * n
        barrier = threading.Barrier(n)

        def one(i):
            barrier.wait()
            results[i] = get(url, no_cache=False)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(r is not None for r in results), "a request did not finish"
        for s, h, b in results:
            obj = assert_app_answer(s, h, b)
            assert obj["stats"] == expected, f"round {round_}: {obj['stats']} != {expected}"
            assert h["X-Cache-Status"] in ("MISS", "HIT"), h.get("X-Cache-Status")
        computed = _cached_data_computations() - before
        assert computed == 1, f"round {round_}: {computed} database computations for {n} concurrent requests"


def test_cached_data_repairs_a_corrupt_cache_entry():
    c = 45
    key = f"perfcgi:cached-data:{c}"
    expected = category_stats(c)
    for junk in ("not json", '{"stats":1}', json.dumps({"stats": {"count": 1}})):
        redis_cli("SET", key, junk, "EX", "60")
        s, h, b = get(f"/cached-data?category={c}")
        obj = assert_app_answer(s, h, b)
        assert obj["stats"] == expected, f"served {obj['stats']} for cached {junk!r}, expected {expected}"
        assert obj["source"] == "database", f"{junk!r}: {obj}"
        s, h, b = get(f"/cached-data?category={c}")
        obj = assert_app_answer(s, h, b)
        assert obj["source"] == "cache" and obj["stats"] == expected, f"after repairing {junk!r}: {obj}"

