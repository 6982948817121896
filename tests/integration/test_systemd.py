"""systemd, without systemd as PID 1: the test gives perfcgi the environment systemd would.

- Type=notify: the test owns a unix datagram socket, names it in NOTIFY_SOCKET and reads
  what perfcgi sends (with the sender's pid, SO_PASSCRED, as systemd does): READY=1 once
  every worker serves, STATUS= lines with live figures, RELOADING=1 with MONOTONIC_USEC=
  then READY=1 on HUP, STOPPING=1 on TERM, MAINPID= from the new master of a USR2 upgrade.
- WatchdogSec=: WATCHDOG_USEC and WATCHDOG_PID; WATCHDOG=1 arrives while the master's loop
  turns, and stops while the master is stopped (SIGSTOP).
- Socket activation: the test binds the stack's FastCGI socket itself, as perfcgi.socket
  would, and starts perfcgi with it at descriptor 3 and LISTEN_FDS/LISTEN_PID set (a tiny
  exec wrapper, WRAPPER); perfcgi serves on it, and a restart (stop, start a new one on the
  socket the test keeps open) under load through Nginx fails no request. A LISTEN_FDS
  socket that matches no bind stops start-up with a message naming it.
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from harness import (PERFCGI_BIN, STACK, WORKER_CLASS, WORKERS, Load, NginxErrorWatch, OwnPerfcgi, app_socket,
                     assert_app_answer, clean_env, free_port, get, proc_alive, stack, wait_ready, wait_until,
                     wait_workers)

# Executes argv[2:] with the descriptors listed in argv[1] moved to 3, 4, ... and
# LISTEN_FDS, LISTEN_PID (and WATCHDOG_PID when WATCHDOG_USEC is set) naming this process,
# as systemd does for a service (the pid stays the same through exec).
WRAPPER = """
import fcntl, os, sys
fds = [int(x) for x in sys.argv[1].split(",") if x]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
if fds:
    os.environ.update(LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid()))
if os.environ.get("WATCHDOG_USEC"):
    os.environ["WATCHDOG_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""
PATHS = ["/io-intensive?ms=5", "/", "/io-intensive?ms=100", "/cached-data?category=44"]
# The restarts' load: requests in flight at each stop, none waiting on PostgreSQL (a sync
# worker stopping under load can sit in a PostgreSQL wait until graceful_timeout, whether
# or not the socket is activated: a separate problem, not this test's).
RESTART_PATHS = ["/", "/cpu-intensive?n=200000", "/expensive-computation?n=25&method=naive"]
SETTLE = 90  # seconds for a stop or an upgrade to finish (graceful_timeout is 30)


def wrapper(*fds):
    return [sys.executable, "-c", WRAPPER, ",".join(str(fd) for fd in fds)]


class NotifySocket:
    """A unix datagram socket in place of systemd's NOTIFY_SOCKET: a thread keeps every
    message as (sender pid, {field: value}), in order."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pcgi-sd-", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify", daemon=True)
        self._thread.start()

    def _read(self):
        creds = struct.calcsize("3i")
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(creds))
            except socket.timeout:
                continue
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:creds])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self.lock:
                self.messages.append((pid, fields))

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def wait(self, what, predicate, start=0, timeout=60):
        """The index and the first message from index `start` on that satisfies predicate(pid, fields)."""
        def found():
            msgs = self.snapshot()
            for i in range(start, len(msgs)):
                if predicate(*msgs[i]):
                    return i, msgs[i]
            return None
        try:
            return wait_until(found, timeout, interval=0.05, message=what)
        except AssertionError:
            raise AssertionError(f"{what}: not sent; messages: {self.snapshot()[start:][-20:]}") from None

    def count(self, key, pid=None, start=0):
        return sum(1 for p, f in self.snapshot()[start:] if key in f and (pid is None or p == pid))


def status_figures(text):
    """'4 workers (1 busy, 3 idle); 120 requests, 30.5 req/s; listen queue 0; queue wait 0.4 ms'
    (after an optional 'state: ') -> (workers, busy, idle, requests, rate)."""
    text = text.split(": ", 1)[1] if text.split(" ", 1)[0].endswith(":") else text
    workers, rest = text.split(" workers (", 1)
    busy, rest = rest.split(" busy, ", 1)
    idle, rest = rest.split(" idle); ", 1)
    requests, rest = rest.split(" requests, ", 1)
    rate = rest.split(" req/s", 1)[0]
    assert "; listen queue " in rest and "; queue wait " in rest, text
    return int(workers), int(busy), int(idle), int(requests), float(rate)


class ActivatedSocket:
    """The stack's FastCGI socket file, bound and listened on by the test as systemd's
    perfcgi.socket would: it outlives every perfcgi started on it."""

    def __enter__(self):
        stack("stop", "perfcgi")
        self.path = app_socket()
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o660)  # perfcgi's socket_mode
        self.sock.listen(1024)
        return self

    def __exit__(self, *exc):
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
        return False

    def fd(self):
        return self.sock.fileno()


def test_systemd_notify_ready_status_reload_and_stop():
    with NotifySocket() as ns, OwnPerfcgi(name="sd-notify", env={"NOTIFY_SOCKET": ns.path}) as own:
        # READY=1 from the master, once every worker serves: its STATUS= says so.
        i, (pid, f) = ns.wait("READY=1", lambda p, f: "READY" in f)
        assert pid == own.pid and f["READY"] == "1", (pid, own.pid, f)
        workers, busy, idle, _, _ = status_figures(f["STATUS"])
        assert (workers, busy + idle) == (WORKERS, WORKERS), f["STATUS"]
        assert not any("READY" in m for _, m in ns.snapshot()[:i]), "READY=1 sent twice"
        s, h, b = get("/")
        assert_app_answer(s, h, b)
        wait_ready()
        # STATUS= lines follow the load: requests served, and their rate.
        with Load(PATHS, threads=4) as load:
            load.wait_for(40)
            _, (pid, f) = ns.wait("a STATUS= line with requests and a rate",
                                  lambda p, f: "STATUS" in f and status_figures(f["STATUS"])[4] > 0, start=i + 1)
            assert pid == own.pid
            assert status_figures(f["STATUS"])[3] > 0, f["STATUS"]
        assert not load.failures, load.summary()
        # HUP: RELOADING=1 with the monotonic clock's now, then READY=1 once new workers serve.
        old = set(wait_workers(WORKERS))
        mark = len(ns.snapshot())
        before_us = time.monotonic_ns() // 1000
        os.kill(own.pid, signal.SIGHUP)
        j, (pid, f) = ns.wait("RELOADING=1", lambda p, f: "RELOADING" in f, start=mark)
        assert pid == own.pid and f["RELOADING"] == "1", f
        assert before_us <= int(f["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000, (before_us, f)
        k, (pid, f) = ns.wait("READY=1 after the reload", lambda p, f: "READY" in f, start=j + 1)
        assert pid == own.pid
        new = set(wait_workers(WORKERS))
        assert not new & old, "READY=1 came before the new workers replaced the old ones"
        assert "reloaded:" in own.log_text()
        # TERM: STOPPING=1, then a clean exit. No watchdog was asked for: none was petted.
        mark = len(ns.snapshot())
        os.kill(own.pid, signal.SIGTERM)
        ns.wait("STOPPING=1", lambda p, f: f.get("STOPPING") == "1" and p == own.pid, start=mark)
        assert own.wait(SETTLE) == 0, own.log_text()[-1500:]
        assert ns.count("WATCHDOG") == 0, "WATCHDOG=1 sent without WATCHDOG_USEC"
        assert all(p == own.pid for p, _ in ns.snapshot()), "a process other than the master notified"


def test_systemd_watchdog_is_petted_while_the_master_loop_turns():
    interval_us = 400000
    with NotifySocket() as ns:
        env = {"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": interval_us}
        with OwnPerfcgi(name="sd-watchdog", env=env, wrapper=wrapper()) as own:
            ns.wait("5 WATCHDOG=1", lambda p, f: ns.count("WATCHDOG", pid=own.pid) >= 5)
            assert f"systemd watchdog: every {interval_us / 2e6:g} s" in own.log_text()
            # A master that does not turn its loop does not pet: stopped, it sends nothing.
            os.kill(own.pid, signal.SIGSTOP)
            try:
                time.sleep(0.1)
                stopped = ns.count("WATCHDOG")
                time.sleep(4 * interval_us / 1e6)  # two intervals: a running master pets 8 times
                assert ns.count("WATCHDOG") == stopped, "WATCHDOG=1 sent by a stopped master"
            finally:
                os.kill(own.pid, signal.SIGCONT)
            ns.wait("WATCHDOG=1 again", lambda p, f: ns.count("WATCHDOG") >= stopped + 3)
            assert {p for p, f in ns.snapshot() if "WATCHDOG" in f} == {own.pid}


def test_systemd_socket_activation_serves_and_a_restart_refuses_nothing():
    with ActivatedSocket() as act, NotifySocket() as ns:
        inode = os.stat(act.path).st_ino
        with OwnPerfcgi(name="sd-activation", env={"NOTIFY_SOCKET": ns.path}, pass_fds=(act.fd(),),
                        wrapper=wrapper(act.fd())) as own:
            # The file is still the test's socket: perfcgi took it, it did not bind its own.
            assert os.stat(act.path).st_ino == inode
            ns.wait("READY=1", lambda p, f: "READY" in f)
            s, h, b = get("/")
            assert_app_answer(s, h, b)
            with NginxErrorWatch() as nginx_log, Load(RESTART_PATHS, threads=8) as load:
                load.wait_for(50)
                first = own.pid
                for _ in range(2):  # systemctl restart: stop, then start on the same socket
                    mark = len(ns.snapshot())
                    os.kill(own.pid, signal.SIGTERM)
                    assert own.wait(SETTLE) == 0, own.log_text()[-1500:]
                    assert os.path.exists(act.path) and os.stat(act.path).st_ino == inode, \
                        "perfcgi removed systemd's socket file"
                    ns.wait("STOPPING=1", lambda p, f: "STOPPING" in f, start=mark)
                    served = load.ok
                    own.start()
                    ns.wait("READY=1 of the new perfcgi", lambda p, f: "READY" in f and p == own.pid, start=mark)
                    load.wait_for(served + 30)
                assert own.pid != first
            assert not load.failures, (f"requests failed through the restarts: {load.summary()}; the log's warnings: "
                                       + " | ".join(ln for ln in own.log_text().splitlines()
                                                    if "warning" in ln or "error" in ln)[-3000:])
            nginx_log.assert_none_dropped("restarts on an activated socket")
            assert set(load.served_by) & set(wait_workers(WORKERS)), "no request served by the new perfcgi"
            assert "cannot listen" not in own.log_text()
            print(f"  figures: two restarts on the activated socket under load: {load.summary()}", flush=True)


def test_systemd_usr2_tells_systemd_the_new_master():
    with ActivatedSocket() as act, NotifySocket() as ns:
        env = {"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": 1000000}
        with OwnPerfcgi(name="sd-upgrade", env=env, pass_fds=(act.fd(),), wrapper=wrapper(act.fd())) as own:
            ns.wait("READY=1", lambda p, f: "READY" in f)
            pidfile = own.settings["pidfile"]
            mark = len(ns.snapshot())
            os.kill(own.pid, signal.SIGUSR2)
            assert own.wait(SETTLE) == 0, own.log_text()[-1500:]  # the old master retired
            new = int(open(pidfile).read().split()[0])
            assert new != own.pid and proc_alive(new)
            i, (pid, f) = ns.wait("MAINPID=", lambda p, f: "MAINPID" in f, start=mark)
            assert (pid, int(f["MAINPID"]), f.get("READY")) == (new, new, "1"), (pid, new, f)
            assert ns.count("STOPPING", start=mark) == 0, "the upgrade told systemd the service stops"
            # The watchdog follows the new master (WATCHDOG_PID names it).
            ns.wait("WATCHDOG=1 from the new master", lambda p, f: ns.count("WATCHDOG", pid=new, start=i) >= 3)
            s, h, b = get("/")
            assert_app_answer(s, h, b)
            os.kill(new, signal.SIGTERM)
            ns.wait("STOPPING=1 from the new master", lambda p, f: "STOPPING" in f and p == new, start=i)
            wait_until(lambda: not proc_alive(new), SETTLE, message="the new master gone")
            # The new master adopted the socket as systemd's: it leaves its file.
            assert os.path.exists(act.path), "the new master removed systemd's socket file"
            assert f"USR2: started new master {new}" in own.log_text()


def test_systemd_listen_fds_matching_no_bind_stops_start_up():
    with tempfile.TemporaryDirectory(prefix="pcgi-sd-", dir="/tmp") as tmp:
        bind = os.path.join(tmp, "app.sock")
        cases = []
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.bind(("127.0.0.1", free_port()))
        tcp.listen(8)
        cases.append((tcp, f"descriptor 3 (LISTEN_FDS) listens on 127.0.0.1:{tcp.getsockname()[1]}, which is no "
                           "bind or status_bind address"))
        dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        cases.append((dgram, "descriptor 3 (LISTEN_FDS) is not a listening stream socket"))
        try:
            for sock, message in cases:
                r = subprocess.run(wrapper(sock.fileno()) + [str(PERFCGI_BIN), "--bind", f"unix:{bind}",
                                                             "--status-bind", f"127.0.0.1:{free_port()}",
                                                             "--worker-class", WORKER_CLASS, "--workers", "1"],
                                   pass_fds=(sock.fileno(),), env=clean_env(), capture_output=True, text=True,
                                   timeout=60, stdin=subprocess.DEVNULL)
                assert r.returncode == 1, f"exit {r.returncode}: {r.stderr}"
                assert f"perfcgi: socket activation: {message}" in r.stderr, r.stderr
                assert not os.path.exists(bind), "perfcgi bound its socket despite the bad LISTEN_FDS"
        finally:
            for sock, _ in cases:
                sock.close()
