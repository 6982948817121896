"""access_log_format through the stack's Nginx, for the stack's worker class: a template of
every Nginx-style variable and Gunicorn atom, JSON lines, and a HUP that changes the format
(or is refused for a bad one). The request id and the queue wait come from Nginx
(fastcgi_param REQUEST_ID $perfcgi_request_id, REQUEST_START $msec): the id must be the one
Nginx logged for the same request, the wait a number, never negative.

perfcgi is restarted with the settings each test needs (perfcgi_with, or its own process
with a config file for the HUP), and the usual one comes back afterwards.
"""

import concurrent.futures
import contextlib
import datetime
import json
import os
import re
import signal
import struct
import time

from harness import (STACK, WORKER_CLASS, WORKERS, OwnPerfcgi, _fcgi_pairs, _fcgi_record, fcgi_connect, get, head,
                     perfcgi_with, settled, wait_until, wait_workers)

# The variables, in the order of the JSON fields.
FIELDS = ["remote_addr", "request", "request_method", "request_uri", "uri", "args", "status", "body_bytes_sent",
          "request_time", "request_time_ms", "msec", "time_local", "time_iso8601", "pid", "request_id",
          "queue_wait", "worker_class", "endpoint"]
ATOMS = ["h", "t", "r", "s", "b", "m", "U", "q", "D", "M", "L", "p"]
# Tab-separated: a tab in request data is escaped (\x09), so it cannot add a column.
TEMPLATE = "\t".join([f"${{{f}}}" if i % 2 else f"${f}" for i, f in enumerate(FIELDS)] +
                     [f"%({a})s" for a in ATOMS])
ENDPOINT = {"/": "hello", "/cpu-intensive": "cpu_intensive", "/io-intensive": "io_intensive"}
SECONDS_MS = re.compile(r"^\d+\.\d{3}$")  # seconds with milliseconds, never negative
# The stack's request id: Nginx's start of the request, the connection's serial, the
# request's number on it.
REQUEST_ID = r"\d+\.\d{3}-\d+-\d+"
NGINX_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" .* rid=(?P<rid>\S+)$')


def read_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").split("\n")[:-1]
    except FileNotFoundError:
        return []


def nginx_request_ids():
    """(method, target) -> the request id Nginx logged (its log is flushed every second)."""
    ids = {}
    for ln in read_lines(os.path.join(STACK.run_dir, "nginx-access.log")):
        m = NGINX_LINE.search(ln)
        if m:
            ids[(m["method"], m["target"])] = m["rid"]
    return ids


def send(requests):
    """[(method, target)] through Nginx, past its cache: {(method, target): (status, bytes, pid)}."""
    out = {}
    for method, target in requests:
        status, h, body = (head if method == "HEAD" else get)(target)
        assert "X-Worker" in h, f"{method} {target}: {status} not from perfcgi: {body[:200]!r}"
        out[(method, target)] = (status, len(body), int(h["X-Worker"]))
    return out


def logged(path, tag, count, parse):
    """The lines of path whose request carries tag, parsed, once there are count of them."""
    def ready():
        rows = [parse(ln) for ln in read_lines(path) if tag in ln]
        return len(rows) >= count and rows
    return wait_until(ready, 20, message=f"{count} access lines tagged {tag} in {path}")


def check_ids(rows, sent):
    """Each line's request_id is the one Nginx logged for that request, and each is unique."""
    ids = wait_until(lambda: (i := nginx_request_ids()) and all(k in i for k in sent) and i, 20,
                     message="Nginx's log lines of the requests")
    for row in rows:
        key = (row["request_method"], row["request_uri"])
        assert row["request_id"] == ids[key], f"{key}: perfcgi logged id {row['request_id']}, Nginx {ids[key]}"
    assert len({r["request_id"] for r in rows}) == len(rows), f"request ids repeat: {rows}"


def check_common(row, sent, now):
    """What every format shows of a request that went through the stack's Nginx."""
    method, target = row["request_method"], row["request_uri"]
    assert (method, target) in sent, f"a line for a request not sent: {row}"
    status, size, pid = sent[(method, target)]
    path, _, query = target.partition("?")
    assert row["remote_addr"] == "127.0.0.1", row
    assert row["request"] == f"{method} {target}", row
    assert (row["uri"], row["args"]) == (path, query), row
    assert int(row["status"]) == status and int(row["body_bytes_sent"]) == size, (row, status, size)
    assert int(row["pid"]) == pid, f"{target}: pid {row['pid']} logged, X-Worker {pid}"
    assert row["worker_class"] == WORKER_CLASS, row
    assert row["endpoint"] in (ENDPOINT.get(path), None, "-"), row
    assert (row["endpoint"] in (None, "-")) == (path not in ENDPOINT), row
    when = datetime.datetime.strptime(row["time_local"], "%d/%b/%Y:%H:%M:%S %z")
    assert abs(when.timestamp() - now) < 300, (row["time_local"], now)
    assert datetime.datetime.fromisoformat(row["time_iso8601"]) == when, row
    assert abs(float(row["msec"]) - when.timestamp()) < 1, row


@contextlib.contextmanager
def access_log(name, **settings):
    """perfcgi restarted with its access log in RUN_DIR/NAME (and settings): yields the
    path; the file goes afterwards."""
    log = os.path.join(STACK.run_dir, name)
    try:
        with perfcgi_with(access_log=log, **settings):
            yield log
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)


def parse_template(line):
    cols = line.split("\t")
    assert len(cols) == len(FIELDS) + len(ATOMS), f"not one line of {len(FIELDS) + len(ATOMS)} columns: {line!r}"
    return dict(zip(FIELDS + [f"%({a})s" for a in ATOMS], cols))


def test_access_log_format_template_through_nginx():
    tag = f"tpl{os.getpid()}"
    requests = [("GET", f"/?{tag}=1"), ("GET", f"/cpu-intensive?n=100&{tag}=2"), ("HEAD", f"/?{tag}=3"),
                ("GET", f"/cpu-intensive?n=x&{tag}=4"), ("GET", f"/no-such-page?{tag}=5")]
    with access_log("access-template.log", access_log_format=TEMPLATE) as log:
        sent = send(requests)
        rows = logged(log, tag, len(requests), parse_template)
        assert len(rows) == len(requests), f"one line per request: {rows}"
        now = time.time()
        for row in rows:
            check_common(row, sent, now)
            assert SECONDS_MS.match(row["queue_wait"]), f"queue_wait is not a non-negative number: {row}"
            assert SECONDS_MS.match(row["request_time"]), row
            micros = int(row["%(D)s"])
            assert row["request_time_ms"] == f"{micros // 1000}.{micros % 1000:03d}", row
            assert int(row["%(M)s"]) == micros // 1000, row
            assert row["%(L)s"] == f"{micros // 10 ** 6}.{micros % 10 ** 6:06d}", row
            ms = (micros + 500) // 1000  # $request_time: rounded to the millisecond
            assert row["request_time"] == f"{ms // 1000}.{ms % 1000:03d}", row
            # Gunicorn's atoms, as Gunicorn writes them.
            assert row["%(h)s"] == row["remote_addr"] and row["%(t)s"] == f"[{row['time_local']}]", row
            assert (row["%(r)s"], row["%(s)s"], row["%(b)s"], row["%(m)s"]) == \
                (row["request"], row["status"], row["body_bytes_sent"], row["request_method"]), row
            assert (row["%(U)s"], row["%(q)s"], row["%(p)s"]) == (row["uri"], row["args"], f"<{row['pid']}>"), row
            assert re.match(rf"^{REQUEST_ID}$", row["request_id"]), row
        check_ids(rows, sent)


def test_access_log_json_lines_through_nginx():
    tag = f"json{os.getpid()}"
    quick = [("GET", f"/?{tag}=1"), ("GET", f"/cpu-intensive?n=100&{tag}=2"), ("HEAD", f"/?{tag}=3"),
             ("GET", f"/no-such-page?{tag}=4")]
    # More slow requests at once than the workers take at once: some wait in the listen
    # queue (sync: one request per worker), and the wait shows.
    slow = [("GET", f"/io-intensive?ms=200&{tag}=s{i}") for i in range(3 * WORKERS)]
    with access_log("access-json.log", access_log_format="json") as log:
        sent = send(quick)
        with concurrent.futures.ThreadPoolExecutor(len(slow)) as pool:
            for answer in pool.map(lambda r: send([r]), slow):
                sent.update(answer)
        rows = logged(log, tag, len(sent), json.loads)
        assert len(rows) == len(sent), f"one line per request: {len(rows)} lines, {len(sent)} requests"
        now = time.time()
        for row in rows:
            assert list(row) == FIELDS, f"the fields, in order: {list(row)}"
            for name in ("status", "body_bytes_sent", "pid"):
                assert type(row[name]) is int, (name, row)
            for name in ("request_time", "request_time_ms", "msec", "queue_wait"):
                assert type(row[name]) in (int, float) and row[name] >= 0, (name, row)
            check_common(row, sent, now)
        check_ids(rows, sent)
        if WORKER_CLASS == "sync":
            waited = [r for r in rows if r["uri"] == "/io-intensive" and r["queue_wait"] >= 0.15]
            assert len(waited) >= WORKERS, \
                f"{len(slow)} requests of 200 ms on {WORKERS} sync workers, yet the waits were " \
                f"{sorted(r['queue_wait'] for r in rows if r['uri'] == '/io-intensive')}"


def test_hup_changes_the_access_log_format_and_refuses_a_bad_one():
    log = os.path.join(STACK.run_dir, "access-hup.log")
    tag = f"hup{os.getpid()}"
    try:
        with OwnPerfcgi(name="accesshup", workers=2, access_log=log,
                        access_log_format="$request_id $uri?$args") as own:
            old = set(wait_workers(2))
            send([("GET", f"/?{tag}=1")])
            own.write_config(access_log_format="$status $nope")
            os.kill(own.pid, signal.SIGHUP)
            refused = wait_until(lambda: [ln for ln in own.log_text().splitlines() if "reload:" in ln], 20,
                                 message="the refused reload logged")
            assert any(f"{own.config}:" in ln and "access_log_format: unknown variable '$nope'" in ln and
                       "running configuration stays" in ln for ln in refused), refused
            assert set(wait_workers(2)) == old, "the workers changed after a refused reload"
            send([("GET", f"/?{tag}=2")])

            own.write_config(access_log_format="json")
            os.kill(own.pid, signal.SIGHUP)
            wait_until(lambda: (k := settled(2)) and not set(k) & old, 60, message="new workers after the HUP")
            send([("GET", f"/?{tag}=3")])
            lines = wait_until(lambda: (ls := [ln for ln in read_lines(log) if tag in ln]) and len(ls) >= 3 and ls,
                               20, message="three access lines")
        assert re.match(rf"^{REQUEST_ID} /\?{tag}=1$", lines[0]), lines
        assert re.match(rf"^{REQUEST_ID} /\?{tag}=2$", lines[1]), f"the old format after a refused HUP: {lines}"
        row = json.loads(lines[2])
        assert (row["uri"], row["args"]) == ("/", f"{tag}=3"), f"JSON after the HUP: {lines}"
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)


def test_aborted_request_logs_its_own_uri_after_the_next_one():
    # The web server aborts a request waiting on PostgreSQL and sends the next one on the
    # same kept connection: the first still logs its own uri and args when it ends (the
    # event worker's strings point into the connection's params, which the next request
    # would reuse: the aborted one takes them over).
    tag = f"abort{os.getpid()}"

    def request(rid, uri, query):
        params = {"REQUEST_METHOD": "GET", "DOCUMENT_URI": uri, "QUERY_STRING": query,
                  "REQUEST_URI": f"{uri}?{query}", "REMOTE_ADDR": "127.0.0.1"}
        return (_fcgi_record(1, struct.pack("!HB5x", 1, 1), rid) + _fcgi_record(4, _fcgi_pairs(params), rid)
                + _fcgi_record(4, b"", rid) + _fcgi_record(5, b"", rid))

    def answered(sock, rid):
        """Reads up to request rid's END_REQUEST (others' records may come first);
        False if the connection closes before."""
        buf = b""
        while True:
            while len(buf) < 8 or len(buf) < 8 + struct.unpack("!BBHHBx", buf[:8])[3] + buf[6]:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    return False
                if not chunk:
                    return False
                buf += chunk
            _, rtype, got, length, padding = struct.unpack("!BBHHBx", buf[:8])
            buf = buf[8 + length + padding:]
            if rtype == 3 and got == rid:
                return True

    with access_log("access-abort.log", access_log_format="json") as log:
        sock = fcgi_connect()
        try:
            sock.sendall(request(1, "/io-intensive", f"ms=300&{tag}=1"))
            time.sleep(0.1)
            sock.sendall(_fcgi_record(2, b"", 1) + request(2, "/cpu-intensive", f"n=10&{tag}=2"))
            kept = answered(sock, 2)
        finally:
            sock.close()
        # libfcgi (sync, thread) ends the connection on the abort: the next request
        # then comes on a new one.
        assert kept or WORKER_CLASS != "event", "the event worker closed the connection after an abort"
        if not kept:
            sock = fcgi_connect()
            try:
                sock.sendall(request(2, "/cpu-intensive", f"n=10&{tag}=2"))
                assert answered(sock, 2), "request 2 on a new connection unanswered"
            finally:
                sock.close()
        rows = logged(log, tag, 2, json.loads)
        got = sorted((r["uri"], r["args"]) for r in rows)
        assert got == [("/cpu-intensive", f"n=10&{tag}=2"), ("/io-intensive", f"ms=300&{tag}=1")], rows
