"""Hostile clients through the stack: forged log lines, memory pinned on every worker,
load endpoints hammered from another host.

Through the stack's Nginx (and its unix socket for a raw FastCGI client); perfcgi is
restarted with other settings where a test needs it (perfcgi_with), and the usual one
comes back afterwards.
"""

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.parse

from harness import (MAX_HELD_MB, REPO, STACK, WORKERS, Skip, app_socket, assert_app_answer, fcgi_connect,
                     fcgi_request, free_port, get, json_body, perfcgi_with, status_socket, wait_until,
                     wait_workers)

# One access line; inside the quoted request, a quote or a backslash only escaped.
ACCESS_LINE = re.compile(r'^(?P<remote>\S+) - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                         r'"(?P<method>[A-Z]+) (?P<target>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d+) '
                         r'(?P<ms>\d+(?:\.\d+)?) (?P<pid>\d+)$')
FORGED = '127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET /forged" 200 1 1.0 1'


def _lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().split("\n")[:-1]
    except FileNotFoundError:
        return []


# --- CR/LF in request data reach no log raw ---------------------------------------------------------

def _log_forged_request(target, **settings):
    """perfcgi restarted with its access log in a file of its own (and settings), target
    sent (a 404), then a request after it: the file's lines once that one is there."""
    log = os.path.join(STACK.run_dir, "access-forge.log")
    try:
        with perfcgi_with(access_log=log, **settings):
            status, h, body = get(target)
            assert status == 404 and "X-Worker" in h, (status, dict(h), body)
            s, h2, b = get("/?after=forge")
            assert_app_answer(s, h2, b)
            return wait_until(lambda: (ls := _lines(log)) and any("after=forge" in ln for ln in ls) and ls, 10,
                              message="the access lines")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)


def test_crlf_in_a_decoded_path_cannot_forge_access_log_lines():
    path = "/no-such\r\n" + FORGED + '\\"'
    lines = _log_forged_request(urllib.parse.quote(path, safe="/"))
    bad = [ln for ln in lines if not ACCESS_LINE.match(ln)]
    assert not bad, f"lines that are not one access line each: {bad}"
    targets = [ACCESS_LINE.match(ln)["target"] for ln in lines]
    assert not any(t.startswith("/forged") for t in targets), f"a forged line: {lines}"
    escaped = "/no-such\\x0d\\x0a" + FORGED.replace('"', '\\"') + '\\\\\\"'
    assert escaped in targets, f"the request is not logged escaped ({escaped!r}): {targets}"


def test_crlf_in_a_decoded_path_cannot_forge_json_or_template_lines():
    # The same attack on access_log_format: a template (tab-separated, each value escaped
    # as in the default line) and JSON lines (any byte valid JSON: control bytes \u00XX,
    # bytes that are not UTF-8 %XX). A forged JSON object rides in the path too.
    forged_json = '{"uri":"/forged","status":200}'
    path = "/no-such\r\n" + FORGED + "\n" + forged_json + '\\"\t\u00e9'
    target = urllib.parse.quote(path, safe="/") + "%FF"  # and a byte that is not UTF-8
    for fmt in ("$uri\t$request_uri\t$status\t%(r)s", "json"):
        lines = _log_forged_request(target, access_log_format=fmt)
        if fmt == "json":
            rows = [json.loads(ln) for ln in lines]  # fails on a line that is not one object
            assert all(set(r) != {"uri", "status"} for r in rows), f"a forged object: {lines}"
            uris = [r["uri"] for r in rows]
            assert path + "%FF" in uris, f"not read back as sent: {uris}"
            assert target in [r["request_uri"] for r in rows], rows
        else:
            cols = [ln.split("\t") for ln in lines]
            assert all(len(c) == 4 for c in cols), f"lines that are not one access line each: {lines}"
            uris = [c[0] for c in cols]
            assert not any(u.startswith(("/forged", "{")) for u in uris), f"a forged line: {lines}"
            escaped = ("/no-such\\x0d\\x0a" + FORGED.replace('"', '\\"') + "\\x0a" +
                       forged_json.replace('"', '\\"') + '\\\\\\"\\x09\u00e9\ufffd')
            assert escaped in uris, f"the request is not logged escaped ({escaped!r}): {uris}"


def test_crlf_in_fastcgi_params_cannot_forge_error_log_lines():
    # A raw FastCGI client puts CR/LF in QUERY_STRING of a request that outlives
    # `timeout`: the master's "busy for over" line quotes it.
    marker = f"forge{os.getpid()}"
    with perfcgi_with(timeout=1):
        start = len(STACK.log_tail("perfcgi.log", 10 ** 6) or "")
        sock = fcgi_connect(app_socket(), timeout=30)
        try:
            try:
                fcgi_request(sock, "/cpu-intensive", f"n=10000000&x=\r\n{marker} [master] error: \"forged\"")
            except (OSError, EOFError):
                pass  # the worker is aborted mid-request
        finally:
            sock.close()
        text = wait_until(lambda: (t := (STACK.log_tail("perfcgi.log", 10 ** 6) or "")[start:]) and
                          "busy for over" in t and t, 20, message="the master's timeout line")
    # The master's lines that quote the request (its timeout line, and the slowlog's
    # record before the kill): each quotes it escaped, none starts a line of its own.
    lines = [ln for ln in text.split("\n") if marker in ln]
    escaped = f'\\x0d\\x0a{marker} [master] error: \\"forged\\"'
    assert lines and any("busy for over" in ln for ln in lines), lines
    assert all(escaped in ln and "[master]" in ln.split(marker)[0] for ln in lines), \
        f"the query reached the error log raw, a line of its own: {lines}"


# --- max_held_mb caps the whole server ---------------------------------------------------------------

def _hold(mb):
    status, h, body = get(f"/memory-test?mb={mb}&hold=1")
    obj = json_body(body)
    assert status in (200, 507) and "X-Worker" in h, (status, dict(h), body)
    if status == 507:
        assert obj["error"] == "insufficient_storage", obj
    else:
        total = obj.get("held_total_mb", obj["held_mb"])
        assert total <= MAX_HELD_MB, f"{total} MiB held > {MAX_HELD_MB}: {obj}"
    return status, int(h["X-Worker"]), obj


def test_max_held_mb_caps_all_workers_together():
    mb = 3
    fits = MAX_HELD_MB // mb  # 2 holds of 3 MiB fit in 8, a third does not, whichever worker
    # One request at a time per thread worker, as a sync worker: a thread worker's threads
    # can take every hold of a run, and then no other worker shows the cross-worker cap
    # (which the scoreboard applies alike to every class).
    with perfcgi_with(max_held_mb=MAX_HELD_MB, threads=1):
        holders, refused_by, ok = {}, set(), 0

        def had_room():
            # A refusal a per-worker cap would not have made: that worker still had room
            # of its own (with two workers each holding one block, every refusal is one).
            return [pid for pid in refused_by if holders.get(pid, 0) + mb <= MAX_HELD_MB]
        # Concurrent rounds spread the holds over the workers. Rounds go on (refusals are
        # cheap) until a worker with room of its own refuses.
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            for _ in range(60):
                for status, pid, obj in pool.map(lambda _: _hold(mb), range(16)):
                    if status == 200:
                        ok += 1
                        holders[pid] = holders.get(pid, 0) + mb
                    else:
                        refused_by.add(pid)
                if had_room():
                    break
        assert ok == fits, f"{ok} holds of {mb} MiB succeeded with max_held_mb={MAX_HELD_MB} " \
                           f"({WORKERS} workers; held per worker: {holders})"
        assert had_room(), f"no worker with room of its own was refused (holders {holders}, refusals by " \
                           f"{sorted(refused_by)}): the cross-worker cap was not exercised"
        # A holder dies: the master gives its share back, and it can be held again.
        victim = next(iter(holders))
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in wait_workers(WORKERS), 30, message=f"worker {victim} replaced")
        freed = holders[victim]
        got = [_hold(mb) for _ in range(freed // mb + 1)]
        assert [s for s, _, _ in got] == [200] * (freed // mb) + [507], \
            f"after worker {victim} holding {freed} MiB was killed: {[(s, o) for s, _, o in got]}"
        assert got[-2][2]["held_total_mb"] == fits * mb, got[-2][2]


# --- Nginx rate-limits the load endpoints for clients not on loopback -------------------------------

NS_HOST, NS_CLIENT = "198.18.42.1", "198.18.42.2"  # 198.18.0.0/15: set aside for benchmarks
# Sequential requests, each on a new connection: (status, Retry-After, body) per request.
BURST = """
import http.client, json, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for i in range(n):
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", f"/cpu-intensive?n=100&burst={i}", headers={"X-No-Cache": "1"})
    r = c.getresponse()
    out.append([r.status, r.getheader("Retry-After"), r.read().decode("utf-8", "replace")])
    c.close()
print(json.dumps(out))
"""


def _run(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


@contextlib.contextmanager
def _netns():
    """A network namespace of its own, joined to this host by a veth pair: the host side
    NS_HOST/30, the namespace side NS_CLIENT/30. Removed on the way out, whatever happens."""
    if os.geteuid() != 0:
        raise Skip("NOT RUN: needs root (creates a network namespace)")
    if not shutil.which("ip") or _run("ip", "netns", "list", check=False).returncode != 0:
        raise Skip("NOT RUN: `ip netns` is not available (apt-get install -y iproute2)")
    ns, veth = f"pcgi-rl-{os.getpid()}", f"pcgrl{os.getpid() % 100000}"
    try:
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", veth + "h", "type", "veth", "peer", "name", veth + "n")
        _run("ip", "link", "set", veth + "n", "netns", ns)
        _run("ip", "addr", "add", f"{NS_HOST}/30", "dev", veth + "h")
        _run("ip", "link", "set", veth + "h", "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{NS_CLIENT}/30", "dev", veth + "n")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", veth + "n", "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        _run("ip", "link", "del", veth + "h", check=False)  # takes its peer along
        _run("ip", "netns", "del", ns, check=False)


def _render(template, variables):
    text = template.read_text()
    for k, v in variables.items():
        text = text.replace("${" + k + "}", v)
    assert "${NGINX_" not in text, f"{template}: a variable left unrendered"
    return text


@contextlib.contextmanager
def _private_nginx(listen, port):
    """An Nginx of its own on listen:port, rendered from the same templates as the stack's
    (nginx/nginx.conf.template around the shared nginx/perfcgi.conf.template), in front
    of the stack's perfcgi. Stopped and removed on the way out."""
    d = tempfile.mkdtemp(prefix="pcgi-ngx-", dir="/tmp")
    variables = {"NGINX_RUN_DIR": d, "NGINX_USER_DIRECTIVE": "user root;", "NGINX_WORKER_PROCESSES": "1",
                 "NGINX_LISTEN_ADDR": listen, "NGINX_PORT": str(port),
                 "NGINX_APP_SERVER": f"unix:{app_socket()}", "NGINX_STATUS_SERVER": f"unix:{status_socket()}",
                 "NGINX_CACHE_DIR": f"{d}/nginx/cache", "NGINX_UPSTREAM_KEEPALIVE": "# none",
                 "NGINX_FASTCGI_KEEP_CONN": "off"}
    os.makedirs(f"{d}/nginx")
    with open(f"{d}/perfcgi.conf", "w") as f:
        f.write(_render(REPO / "nginx" / "perfcgi.conf.template", variables))
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(_render(REPO / "nginx" / "nginx.conf.template", variables))
    nginx = ["nginx", "-p", f"{d}/", "-c", f"{d}/nginx.conf", "-e", f"{d}/nginx-error.log"]
    try:
        _run(*nginx)
        pid = int(wait_until(lambda: open(f"{d}/nginx.pid").read().strip(), 10, message="nginx pid"))
        yield
    finally:
        with contextlib.suppress(Exception):
            pid = int(open(f"{d}/nginx.pid").read().strip())
            os.kill(pid, signal.SIGQUIT)
            wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, message="private nginx stopped")
        shutil.rmtree(d, ignore_errors=True)


def _burst(prefix, host, port, n=60):
    r = _run(*prefix, "python3", "-c", BURST, host, str(port), str(n))
    return json.loads(r.stdout)


def test_nginx_rate_limits_load_endpoints_for_clients_not_on_loopback():
    with _netns() as ns:
        port = free_port()
        with _private_nginx(NS_HOST, port):
            remote = _burst(["ip", "netns", "exec", ns], NS_HOST, port)
        local = _burst([], "127.0.0.1", STACK.port)
    statuses = [s for s, _, _ in remote]
    limited = [(s, ra, b) for s, ra, b in remote if s == 429]
    assert limited, f"60 quick requests from {NS_CLIENT} (not loopback): no 429, statuses {statuses}"
    assert statuses.count(200) >= 20, f"the burst allowance did not pass: {statuses}"
    assert set(statuses) <= {200, 429}, statuses
    for s, retry_after, body in limited:
        assert retry_after and retry_after.isdigit(), f"429 without Retry-After: {retry_after!r}"
        obj = json.loads(body)
        assert obj["error"] == "too_many_requests" and obj["message"], obj
    assert [s for s, _, _ in local] == [200] * len(local), \
        f"the same burst from loopback was limited: {[s for s, _, _ in local]}"
