"""The master under hostile conditions: a PostgreSQL that never answers, a reload whose
sockets cannot all be opened, idle and bursting clients on the status socket, a
request path that is not UTF-8, workers killed while they start, quick repeated HUPs
(USR2, the binary upgrade: test_upgrade.py).

The hung PostgreSQL is a fake one written here (the fault is the server itself); every
other test goes through the real sockets of the stack or of a perfcgi the test starts.
"""

import http.client as httpclient
import os
import signal
import socket
import struct
import threading
import time

from harness import (STACK, WORKERS, HungPostgres, OwnPerfcgi, Skip, app_socket, assert_app_answer, children_of,
                     fcgi_connect, fcgi_request, free_port, get, http, json_body, master_http, pm_status,
                     proc_stat_fields, settled, status_socket, wait_until, wait_workers)

SETTLE = 60


# --- a PostgreSQL that logs in and then never answers (harness.HungPostgres) ------------------

def _timed_master_http(path, timeout=5):
    t0 = time.monotonic()
    try:
        status, h, body = master_http(path, timeout=timeout)
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}", time.monotonic() - t0
    return status, body, time.monotonic() - t0


def test_hung_postgresql_does_not_freeze_the_master():
    with HungPostgres() as pg, \
            OwnPerfcgi(name="hungpg", workers=2,
                       database_url=f"postgresql://perfcgi@127.0.0.1:{pg.port}/perfcgi") as own:
        workers = set(wait_workers(2))
        victim = sorted(workers)[0]
        worst, answers, problems, killed_at = 0.0, 0, [], None
        t_end = time.monotonic() + 6
        while time.monotonic() < t_end:
            for path in ("/healthz", "/readyz", "/status"):
                status, body, took = _timed_master_http(path)
                worst = max(worst, took)
                answers += 1
                want = 503 if path == "/readyz" else 200
                if status != want:
                    problems.append(f"{path}: {status} after {took:.2f}s: {body[:200]!r}")
                elif path == "/readyz":
                    obj = json_body(body)
                    if obj.get("backend") != "postgresql" or obj.get("error") != "backend_unavailable":
                        problems.append(f"/readyz: {obj}")
                if took >= 1.0:
                    problems.append(f"{path} took {took:.2f}s")
            if killed_at is None and time.monotonic() > t_end - 4:
                os.kill(victim, signal.SIGKILL)  # the master must still reap and replace it
                killed_at = time.monotonic()
            if len(problems) > 5:
                break
            time.sleep(0.01)
        assert pg.logins >= 1 and pg.queries >= 1, \
            f"the fake PostgreSQL saw {pg.logins} logins, {pg.queries} queries: the probe never reached it"
        assert not problems, f"worst answer {worst:.2f}s over {answers}: " + "; ".join(problems[:6])
        print(f"    {answers} answers from the status socket, the slowest in {worst * 1000:.0f} ms "
              f"({pg.logins} logins, {pg.queries} queries, {pg.cancels} cancel requests held by the fake)")
        # The prober stuck in the fake's cancel request is killed and replaced.
        wait_until(lambda: "stuck on a probe; replacing it" in own.log_text(), 10,
                   message="the stuck prober replaced")
        new = wait_until(lambda: (k := settled(2)) and victim not in k and k, 10, interval=0.1,
                         message=f"worker {victim} (SIGKILL) replaced")
        assert len(set(new) - workers) == 1, (workers, new)
        s, h, b = get("/")
        assert_app_answer(s, h, b)
        t0 = time.monotonic()
        os.kill(own.pid, signal.SIGTERM)
        rc = own.wait(10)
        took = time.monotonic() - t0
        assert rc == 0, f"exit {rc} after TERM: {own.log_text()[-800:]}"
        print(f"    TERM: the master exited in {took * 1000:.0f} ms")


def test_the_prober_is_no_worker():
    # The backend prober: a child of the master with no slot and no socket, run as
    # `user` when started as root, gone with the master.
    root = os.geteuid() == 0
    with OwnPerfcgi(name="prober", workers=2, **({"user": "nobody"} if root else {})) as own:
        kids = wait_workers(2)
        probers = wait_until(lambda: children_of(own.pid, probe=True), 10, message="a backend prober")
        assert len(probers) == 1, probers
        prober = probers[0]
        assert prober not in kids and pm_status()["total_processes"] == 2
        def sockets(pid):
            links = []
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:  # closed meanwhile
                    pass
            return {t for t in links if t.startswith("socket:")}
        # Its own connections to Redis and PostgreSQL come and go; none of the master's.
        inherited = sockets(prober) & sockets(own.pid)
        assert not inherited, f"the prober holds the master's sockets: {inherited}"
        if root:
            import pwd
            with open(f"/proc/{prober}/status") as f:
                uid = next(int(ln.split()[1]) for ln in f if ln.startswith("Uid:"))
            assert uid == pwd.getpwnam("nobody").pw_uid, f"the prober runs as uid {uid}"
        wait_until(lambda: master_http("/readyz")[0] == 200, 10, message="/readyz 200 from the prober's results")
        # Gone with the master, workers too (as `user`: the parent-death signal is set
        # after the privilege drop, which would clear it).
        os.kill(own.pid, signal.SIGKILL)
        for pid in [prober] + kids:
            wait_until(lambda: not proc_stat_fields(pid) or proc_stat_fields(pid)[0] == "Z", 10,
                       message=f"child {pid} gone with its master")


# --- a reload whose sockets cannot all be opened --------------------------------------------------

def test_failed_reload_keeps_the_running_sockets():
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    try:
        with OwnPerfcgi(name="badsock", workers=2) as own:
            old = set(wait_workers(2))
            new_bind = os.path.join(STACK.run_dir, "badsock-new.sock")
            own.write_config(bind=f"unix:{new_bind}", status_bind=f"127.0.0.1:{held.getsockname()[1]}")
            os.kill(own.pid, signal.SIGHUP)
            logged = wait_until(lambda: [ln for ln in own.log_text().splitlines() if "reload:" in ln], 20,
                                message="the failed reload logged")
            assert any("running configuration stays" in ln for ln in logged), logged
            # Everything as before: the FastCGI socket, the status socket, the workers.
            assert os.path.exists(app_socket()), f"{app_socket()} is gone after a failed reload"
            with fcgi_connect() as c:
                code, out = fcgi_request(c, "/", "after=badhup")
            assert code == 200, f"FastCGI on the old socket after a failed reload: {code} {out[:200]!r}"
            for _ in range(5):
                s, h, b = get("/")
                assert_app_answer(s, h, b)
            status, h, body = master_http("/healthz")
            assert status == 200, (status, body)
            assert not os.path.exists(new_bind), f"{new_bind} was left behind by the failed reload"
            assert set(wait_workers(2)) == old, "the workers changed after a failed reload"

            # A status_bind that can be opened: served there from now on, the old one closed.
            port = free_port()
            own.write_config(bind=f"unix:{app_socket()}", status_bind=f"127.0.0.1:{port}")
            os.kill(own.pid, signal.SIGHUP)

            def moved():
                conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=5)
                try:
                    conn.request("GET", "/healthz")
                    resp = conn.getresponse()
                    return resp.status == 200 and resp.read() == b'{"status":"ok"}'
                except OSError:
                    return False
                finally:
                    conn.close()
            wait_until(moved, 20, message=f"/healthz on the new status_bind 127.0.0.1:{port}")
            assert not os.path.exists(status_socket()), "the old status socket is still there after the reload"
            s, h, b = get("/")
            assert_app_answer(s, h, b)
    finally:
        held.close()


# --- the status server: idle clients, bursts ---------------------------------------------------

def _status_client():
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(20)
    c.connect(status_socket())
    return c


def test_status_drops_a_silent_client_and_serves_others():
    wait_workers(WORKERS)
    idle = _status_client()
    try:
        time.sleep(1)
        status, h, body = master_http("/healthz", timeout=5)
        assert status == 200 and json_body(body) == {"status": "ok"}, (status, body)
        # Nothing else talks to the status socket now: the timeout (5 s) must fire by itself.
        t0 = time.monotonic()
        idle.settimeout(15)
        try:
            data = idle.recv(4096)
        except socket.timeout:
            raise AssertionError("a client that sent nothing was still connected 15 s later") from None
        except ConnectionResetError:
            data = b""
        took = time.monotonic() - t0 + 1
        assert data == b"" or data.startswith(b"HTTP/1."), data[:200]
        print(f"    the silent client was dropped after {took:.1f} s")
    finally:
        idle.close()


def test_status_burst_does_not_evict_requests_in_flight():
    wait_workers(WORKERS)
    # Requests whose head is half sent, then a burst of idle connections, then the rest of
    # each head: each must get its answer.
    in_flight, idle = [], []
    try:
        for i in range(6):
            c = _status_client()
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: status\r\n")
            in_flight.append(c)
        for _ in range(60):
            idle.append(_status_client())
        time.sleep(0.3)
        got = []
        for c in in_flight:
            c.sendall(b"X-Burst: 1\r\n\r\n")
            data = b""
            try:
                while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError as exc:
                data += f" [{type(exc).__name__}]".encode()
            got.append(data)
        bad = [d[:120] for d in got if not (d.startswith(b"HTTP/1.1 200") and d.endswith(b'{"status":"ok"}'))]
        assert not bad, f"{len(bad)} of {len(got)} requests in flight lost during a burst of 60 connections: {bad}"
        # And a fresh request is served meanwhile.
        assert master_http("/status", timeout=5)[0] == 200
    finally:
        for c in in_flight + idle:
            c.close()


# --- a request path that is not UTF-8 -------------------------------------------------------------

def test_status_full_keeps_rows_of_non_utf8_paths():
    wait_workers(WORKERS)
    long_path = "/" + "é" * 80  # 160 bytes: cut at 127 in the middle of a character
    served = {}
    # The last one sent is the last_uri of its worker.
    for path in ("/" + "%C3%A9" * 80, "/%C3%28?x=1", "/%FF"):
        s, h, b = get(path)
        assert s == 404, (path, s, b[:200])
        served[path] = int(h["X-Worker"])
    for _ in range(5):
        status, h, body = master_http("/status?full")
        assert status == 200, (status, body[:200])
        body.decode("utf-8")  # strict: valid UTF-8
        st = json_body(body)
        rows = st["processes"]
        assert len(rows) == st["total_processes"] == WORKERS, f"{len(rows)} rows for {st['total_processes']} workers"
        by_pid = {r["pid"]: r["last_uri"] for r in rows}
        assert set(served.values()) <= set(by_pid), (served, by_pid)
        for uri in by_pid.values():
            if uri.startswith("GET /é"):  # cut on a whole character
                assert long_path.startswith(uri[len("GET "):]) and len(uri.encode()) <= 127, uri
        assert by_pid[served["/%FF"]] == "GET /%FF", by_pid
        time.sleep(0.1)
    # Through Nginx too: the same JSON.
    s, h, b = http("GET", "/status?full")
    assert s == 200 and len(json_body(b)["processes"]) == WORKERS, (s, b[:300])


# --- workers killed while they start; quick repeated HUPs -----------------------------------------

def _signal_next_child(master, known, sig, timeout=10):
    """Sends sig to the first child of master not in known as soon as it appears (it is
    still starting then); its pid. Pids grow: the next child is just above the highest
    known one unless other processes were started meanwhile. Only ever a child of this
    master is signalled; one that is gone before the signal reaches it is passed over."""
    deadline = time.monotonic() + timeout
    while True:
        hint = max(known | {master})
        fast = time.monotonic() + 1
        pid = None
        while pid is None and time.monotonic() < fast:
            for candidate in range(hint + 1, hint + 200):
                fields = proc_stat_fields(candidate)
                if fields and int(fields[1]) == master and candidate not in known and fields[0] != "Z":
                    pid = candidate
                    break
        if pid is None:  # a busy machine took the pids after hint: find it the slow way
            left = max(0.1, deadline - time.monotonic())
            pid = min(wait_until(lambda: set(children_of(master)) - known, left, interval=0.01,
                                 message=f"a new child of {master}"))
        try:
            os.kill(pid, sig)
            return pid
        except ProcessLookupError:
            known.add(pid)
            if time.monotonic() > deadline:
                raise AssertionError(f"no child of {master} lived long enough to be signalled") from None


def test_workers_killed_while_starting_do_not_stop_the_master():
    with OwnPerfcgi(name="oomkill", workers=1) as own:
        first = wait_workers(1)
        known = set(first) | set(children_of(own.pid, probe=True))
        os.kill(first[0], signal.SIGKILL)
        killed = []
        for _ in range(4):
            try:
                pid = _signal_next_child(own.pid, known, signal.SIGKILL)
            except AssertionError:
                assert own.p.poll() is None, \
                    f"the master stopped (exit {own.p.returncode}) after workers were SIGKILLed at start " \
                    f"{killed}: {own.log_text()[-600:]}"
                raise
            killed.append(pid)
            known.add(pid)
            known |= set(children_of(own.pid, probe=True))
        new = wait_until(lambda: (k := settled(1)) and not set(k) & known and k, SETTLE, interval=0.1,
                         message="a worker serving after 4 were SIGKILLed while starting")
        assert own.p.poll() is None, \
            f"the master stopped (exit {own.p.returncode}) after workers were SIGKILLed at start: " \
            f"{own.log_text()[-600:]}"
        assert "cannot boot" not in own.log_text(), own.log_text()[-600:]
        s, h, b = get("/")
        assert int(assert_app_answer(s, h, b)["worker"]) in new


def test_quick_hups_do_not_start_a_generation_each():
    # 8 workers, HUPs 20 ms apart: each HUP lands while the previous one's workers start.
    n = 8
    with OwnPerfcgi(name="quickhup", workers=n, graceful_timeout=30) as own:
        wait_workers(n)
        peak, stop = [0], threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], len(children_of(own.pid)))
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            for _ in range(5):
                os.kill(own.pid, signal.SIGHUP)
                time.sleep(0.02)
            # Workers retired while starting serve nothing: they go at once, not after
            # graceful_timeout (30 s).
            final = wait_workers(n, 15)
            time.sleep(0.5)
        finally:
            stop.set()
            t.join(10)
        assert own.p.poll() is None, own.log_text()[-500:]
        limit = 2 * n + 4
        assert peak[0] <= limit, f"{peak[0]} worker processes at once after 5 quick HUPs (workers = {n}, " \
                                 f"at most {limit} expected)"
        assert len(final) == n and len(children_of(own.pid)) == n, final
        print(f"    at most {peak[0]} worker processes during 5 HUPs 20 ms apart (workers = {n})")
        s, h, b = get("/")
        assert_app_answer(s, h, b)


# --- a worker that scribbles over its scoreboard slot ---------------------------------------------

def _slot_offset(mem, start, size, pid):
    """Offset in the scoreboard mapping of the slot whose pid field holds pid (the slots
    follow a 4096-byte header; each starts with pid, then state)."""
    data = os.pread(mem, size, start)
    needle = struct.pack("=ii", pid, 2)  # that worker, idle
    at = data.find(needle, 4096)
    while at >= 0 and at % 8:
        at = data.find(needle, at + 1)
    return at


def test_status_survives_a_corrupt_slot():
    if os.geteuid() != 0:
        raise Skip("needs root (writes into the master's shared memory through /proc/PID/mem)")
    with OwnPerfcgi(name="corrupt", workers=2) as own:
        kids = wait_workers(2)
        mark = f"/?slotmark={os.getpid()}{time.monotonic_ns()}"
        s, h, b = get(mark)
        victim = int(assert_app_answer(s, h, b)["worker"])
        wait_until(lambda: next((r for r in pm_status(full=True)["processes"] if r["pid"] == victim
                                 and r["state"] == "idle"), None), 10, message=f"worker {victim} idle")
        # The scoreboard's slots: the shared anonymous mapping of the master that holds
        # the victim's (its request records are in another).
        maps = []
        with open(f"/proc/{own.pid}/maps") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5] == "/dev/zero" and "s" in fields[1]:
                    lo, hi = (int(x, 16) for x in fields[0].split("-"))
                    maps.append((hi - lo, lo))
        assert maps, "no shared anonymous mapping in the master"
        mem = os.open(f"/proc/{own.pid}/mem", os.O_RDWR)
        try:
            off, start = next(((o, lo) for size, lo in sorted(maps, reverse=True)
                               if (o := _slot_offset(mem, lo, size, victim)) > 0), (-1, 0))
            assert off > 0, f"the slot of worker {victim} was not found"
            uri = os.pread(mem, 4096, start + off).find(f"GET {mark}".encode())
            assert uri > 0, "the last_uri of the victim's slot was not found"
            # A state that does not exist, and a last_uri with no NUL that is not UTF-8.
            os.pwrite(mem, struct.pack("=i", 99), start + off + 4)
            os.pwrite(mem, b"\xff" * 128, start + off + uri)
            for _ in range(3):
                status, h, body = master_http("/status?full")
                assert status == 200, (status, body[:300])
                body.decode("utf-8")
                rows = json_body(body)["processes"]
                assert {r["pid"] for r in rows} == set(kids), (rows, kids)
                bad = next(r for r in rows if r["pid"] == victim)
                assert bad["state"] == "unknown" and bad["last_uri"].startswith("%FF%FF"), bad
            assert own.p.poll() is None, own.log_text()[-500:]
            assert master_http("/metrics")[0] == 200
        finally:
            os.close(mem)


# --- a signal that reaches a worker before its own handlers are set -------------------------------

def test_a_signal_to_a_starting_worker_does_not_reach_the_master():
    # Sent to a freshly forked worker before it has set its handlers, a signal must not
    # run the master's handler there (which writes into the master's own signal pipe):
    # TTIN to a new worker would then make the master start one more.
    with OwnPerfcgi(name="forksig", workers=2) as own:
        known = set(wait_workers(2)) | set(children_of(own.pid, probe=True))
        hit = 0
        for _ in range(30):
            # Every child there is now is known, so the next one is the replacement.
            known |= set(children_of(own.pid, probe=True))
            victim = wait_until(lambda: sorted(children_of(own.pid)), 10, interval=0.05, message="a worker")[0]
            os.kill(victim, signal.SIGKILL)
            pid = _signal_next_child(own.pid, known, signal.SIGTTIN)
            known.add(pid)
            hit += 1
            wait_until(lambda: "TTIN" in own.log_text() or settled(2), 10, interval=0.05,
                       message="2 workers serving again")
            if "TTIN" in own.log_text():
                break
            time.sleep(0.2)  # under the crash back-off (5 deaths a second)
        assert own.p.poll() is None, own.log_text()[-500:]
        ttin = [ln for ln in own.log_text().splitlines() if "TTIN" in ln]
        assert not ttin, f"{len(ttin)} of {hit} TTINs sent to starting workers reached the master: {ttin[:3]}"
        assert len(children_of(own.pid)) == 2, children_of(own.pid)
