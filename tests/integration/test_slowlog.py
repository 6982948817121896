"""A slowlog that says why (issue 12, item 5), through Nginx, for every worker class: a
request busy past request_slowlog_timeout gets one record naming its endpoint, its
parameters, its state and the backend operation it waits on (the SQL text), or, in CPU,
the stack of the thread serving it; a `timeout` kill is preceded by that record; and
/status?full shows each request in flight with its state and pending operation.
"""

import re
import threading

from harness import WORKER_CLASS, OwnPerfcgi, get, metric_sum, master_http, parse_metrics, pm_status, wait_until

# A /cpu-intensive request that stays in CPU for well over a second (seconds here).
CPU_PATH = "/cpu-intensive?n=10000000"
# Requests one worker serves at once in these tests: a sync worker one, the others several.
AT_ONCE = 1 if WORKER_CLASS == "sync" else 3


class Requests:
    """GETs sent at once through Nginx, each on its own thread; their statuses by path."""

    def __init__(self, paths):
        self.status = {}
        self.threads = [threading.Thread(target=self._get, args=(p,), daemon=True) for p in paths]

    def _get(self, path):
        self.status[path] = get(path)[0]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        for t in self.threads:
            t.join(60)
        return False


def slowlog_lines(own, needle):
    return [line for line in own.log_text().splitlines() if "slowlog" in line and needle in line]


def in_flight():
    """Every request in flight, over all workers, from /status?full."""
    return [r for p in pm_status(full=True)["processes"] for r in p["in_flight"]]


def test_slowlog_names_the_sql_a_request_waits_on_and_status_full_shows_it():
    paths = [f"/io-intensive?ms={2500 + 100 * i}" for i in range(AT_ONCE)]
    with OwnPerfcgi(name="slowlog", workers=1, threads=AT_ONCE, request_slowlog_timeout=0.5) as own:
        with Requests(paths) as reqs:
            def all_waiting():
                rows = {r["uri"]: r for r in in_flight()}
                mine = [rows.get("GET " + p) for p in paths]
                return all(r and "waiting on postgresql" in r["state"] for r in mine) and mine
            rows = wait_until(all_waiting, 10, interval=0.05,
                              message=f"/status?full showing {len(paths)} requests waiting on PostgreSQL")
            for r, p in zip(rows, paths):
                ms = int(p.split("=")[1])
                assert r["state"] == "io_intensive step 1: waiting on postgresql", r
                assert r["op"] == f"SELECT pg_sleep($1) -- $1='{ms / 1000:.3f}'", r
                assert r["op_ms"] <= r["busy_ms"], r
        assert all(s == 200 for s in reqs.status.values()), reqs.status
        for p in paths:
            lines = slowlog_lines(own, f'"GET {p}"')
            assert len(lines) == 1, f"one slowlog record for {p}, got {lines}"
            line = lines[0]
            assert re.search(rf"slowlog: worker \d+ \({WORKER_CLASS}\) busy ", line), line
            assert "io_intensive step 1: waiting on postgresql for " in line, line
            assert "SELECT pg_sleep($1)" in line and "stack" not in line, line
        status = pm_status()
        assert status["slowlog_records"] == len(paths), status["slowlog_records"]
        metrics = parse_metrics(master_http("/metrics")[2].decode())
        assert metric_sum(metrics, "perfcgi_slowlog_records_total") == len(paths)


def test_slowlog_gives_the_stack_of_a_request_in_cpu():
    with OwnPerfcgi(name="slowlog", workers=1, request_slowlog_timeout=0.3) as own:
        with Requests([CPU_PATH]) as reqs:
            wait_until(lambda: slowlog_lines(own, CPU_PATH), 20, message="a slowlog record of the CPU-bound request")
        assert reqs.status[CPU_PATH] == 200, reqs.status
        lines = slowlog_lines(own, CPU_PATH)
        assert len(lines) == 1, lines
        assert "cpu_intensive step 0: in CPU; stack: compute_count_primes+0x" in lines[0], lines[0]
        # Down to the class's serving loop: the frames are this request's thread's.
        loop = {"sync": "worker_sync_serve", "thread": "worker_sync_serve", "event": "uv_run"}[WORKER_CLASS]
        assert "cpu_intensive_step" in lines[0] and loop in lines[0], lines[0]


def test_slowlog_record_precedes_a_timeout_kill():
    # request_slowlog_timeout off: the kill writes its record anyway.
    with OwnPerfcgi(name="slowlog", workers=1, timeout=1) as own:
        with Requests([CPU_PATH]) as reqs:
            pass
        assert reqs.status[CPU_PATH] == 502, reqs.status
        text = wait_until(lambda: "aborting it" in (t := own.log_text()) and t, 10,
                          message="the master aborting the hung worker")
        lines = text.splitlines()
        record = [i for i, line in enumerate(lines) if "slowlog before the timeout kill" in line]
        abort = [i for i, line in enumerate(lines) if "aborting it" in line]
        assert len(record) == 1, record
        assert record[0] < abort[0], lines[record[0]:abort[0] + 1]
        line = lines[record[0]]
        assert f'"GET {CPU_PATH}"' in line and "in CPU; stack: compute_count_primes+0x" in line, line
