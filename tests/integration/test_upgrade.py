"""The binary upgrade on USR2, under load through Nginx: a rebuilt binary takes over with
no failed request, and a new master that fails to boot (or is stopped before it serves)
is rolled back with the old one serving on.

Each test runs its own perfcgi (harness.OwnPerfcgi: a config file, the stack's sockets and
pidfile) from a copy of the binary in a folder of its own, so that it can replace the file
at that path as an operator's rebuild or package upgrade would: USR2 executes whatever is
at the path perfcgi was started from. The rebuilt binary is the same sources built again
into their own build directory with another version string (make rebuilds it only when a
source changed, so the runs of the other worker classes reuse it).
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from harness import (PERFCGI_BIN, REPO, STACK, WORKER_CLASS, WORKERS, Load, NginxErrorWatch, OwnPerfcgi, Skip,
                     app_socket, assert_app_answer, children_of, clean_env, free_port, get, kill_session,
                     pm_status, proc_alive, read_text, wait_until, wait_workers)

SETTLE = 90  # seconds for a new master to boot and the old one to retire (graceful_timeout is 30)
UPGRADED_VERSION = "0.1.0-upgraded"
UPGRADED_BUILD = "build/upgrade-test"
# Quick requests, and slower ones in flight when the old workers get TERM.
PATHS = ["/io-intensive?ms=5", "/", "/io-intensive?ms=200", "/cached-data?category=43", "/mixed?n=2000&ms=50"]


def rebuilt_binary():
    """perfcgi built again from these sources with version UPGRADED_VERSION: a file that
    differs from bin/perfcgi as a rebuild does (-O0: the quickest to build)."""
    target = f"{UPGRADED_BUILD}/perfcgi"
    r = subprocess.run(["make", "-s", f"-j{os.cpu_count() or 1}", f"BUILD={UPGRADED_BUILD}",
                        f'OPT=-O0 -g -DPERFCGI_VERSION=\\"{UPGRADED_VERSION}\\"', target],
                       cwd=str(REPO), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, f"building {target} failed: {r.stdout}{r.stderr}"
    assert version_of(REPO / target) == UPGRADED_VERSION, f"{target} --version"
    return REPO / target


def binary_dir(name):
    """A fresh folder in RUN_DIR holding a copy of the binary under test; its path."""
    d = os.path.join(STACK.run_dir, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    exe = os.path.join(d, "perfcgi")
    shutil.copy2(PERFCGI_BIN, exe)
    return exe


def replace_file(path, source=None, text=None):
    """Puts a new file at path (the copy of source, or a script of text) by rename, as an
    install does: the running master keeps its old inode."""
    tmp = path + ".new"
    if source is not None:
        shutil.copy2(source, tmp)
    else:
        with open(tmp, "w") as f:
            f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def pidfile_pid(path):
    return int(read_text(path).split()[0])


def log_count(own, text):
    return own.log_text().count(text)


def version_of(binary):
    return subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout.split()[-1]


def upgrade_round(own, exe, source, load):
    """Puts source at exe, sends USR2 to the master of the pidfile and waits until the old
    master has exited and the new one's workers all serve. Returns (old master, its workers,
    new master, its workers, requests sent and failed meanwhile, seconds to the old's exit)."""
    pidfile = own.settings["pidfile"]
    old_master = pidfile_pid(pidfile)
    old_workers = set(wait_workers(WORKERS))
    replace_file(exe, source=source)
    sent, failed = load.sent, len(load.failures)
    t0 = time.monotonic()
    os.kill(old_master, signal.SIGUSR2)
    if old_master == own.pid:
        rc = own.wait(SETTLE)  # our child: its exit status
        assert rc == 0, f"the old master exited with {rc}: {own.log_text()[-1500:]}"
    else:  # a new master of an earlier round: reparented, not ours to wait for
        wait_until(lambda: not proc_alive(old_master), SETTLE, interval=0.02, message=f"old master {old_master} gone")
    switch_s = time.monotonic() - t0
    through = (load.sent - sent, len(load.failures) - failed)
    new_master = pidfile_pid(pidfile)
    return old_master, old_workers, new_master, set(wait_workers(WORKERS)), through, switch_s


def test_usr2_upgrades_to_a_rebuilt_binary_under_load():
    """Three upgrades in a row under load: to the rebuilt binary, back, and to it again."""
    rebuilt = rebuilt_binary()
    original = version_of(PERFCGI_BIN)
    exe = binary_dir("upgrade-bin")
    figures = []
    with OwnPerfcgi(name="upgrade", binary=exe) as own:
        pidfile = own.settings["pidfile"]
        assert pidfile_pid(pidfile) == own.pid
        with NginxErrorWatch() as nginx_log, Load(PATHS, threads=8) as load:
            load.wait_for(50)
            for source, version in ((rebuilt, UPGRADED_VERSION), (PERFCGI_BIN, original),
                                    (rebuilt, UPGRADED_VERSION)):
                old_master, old_workers, new_master, new_workers, through, switch_s = \
                    upgrade_round(own, exe, source, load)
                log = own.log_text()
                assert new_master != old_master and proc_alive(new_master), (old_master, new_master)
                assert not new_workers & old_workers, f"old workers left: {new_workers & old_workers}"
                assert not any(proc_alive(p) for p in old_workers), "a worker of the old master outlived it"
                # The new master runs the file now at the path, not the old inode (" (deleted)").
                assert os.readlink(f"/proc/{new_master}/exe") == exe, os.readlink(f"/proc/{new_master}/exe")
                st = pm_status()
                assert (st["version"], st["upgrade"], st["upgrade_pid"]) == (version, "none", 0), st
                assert f"[{new_master}] [master] info: perfcgi {version}:" in log, log[-1500:]
                assert f"USR2: started new master {new_master}" in log, log[-1500:]
                m = re.search(rf"USR2: new master {new_master} serves \((\d+) ms after USR2\); retiring", log)
                assert m, log[-1500:]
                assert f"old master {old_master} told to retire" in log, log[-1500:]
                assert not os.path.exists(pidfile + ".oldbin"), "the .oldbin pidfile is left"
                assert os.path.exists(app_socket()), "the unix socket file is gone"
                served = load.ok
                load.wait_for(served + 30)
                assert set(new_workers) & set(load.served_by), "no request was served by the new workers"
                figures.append(f"{original if version == original else 'rebuilt'}: {through[0]} requests sent from "
                               f"USR2 to the old master's exit, {through[1]} failed, new master serving "
                               f"{int(m.group(1))} ms and old master gone {switch_s:.2f} s after USR2")
        assert not load.failures, f"requests failed through the upgrades: {load.summary()}"
        nginx_log.assert_none_dropped("USR2 upgrades under load")
        s, h, b = get("/")
        assert int(h["X-Worker"]) in children_of(new_master), h
        assert_app_answer(s, h, b)
        print("  figures: " + "; ".join(figures) + f"; whole load: {load.summary()}", flush=True)


def test_usr2_rolls_back_when_the_new_master_cannot_boot():
    exe = binary_dir("upgrade-fail-bin")
    with OwnPerfcgi(name="upgrade-fail", binary=exe) as own:
        pidfile = own.settings["pidfile"]
        workers = set(wait_workers(WORKERS))
        with NginxErrorWatch() as nginx_log, Load(PATHS, threads=8) as load:
            load.wait_for(30)
            # A binary that does not start.
            replace_file(exe, text="#!/bin/sh\nexit 1\n")
            os.kill(own.pid, signal.SIGUSR2)
            wait_until(lambda: log_count(own, "before it served") == 1, SETTLE, message="the first rollback")
            assert pidfile_pid(pidfile) == own.pid and not os.path.exists(pidfile + ".oldbin")
            # The real binary, with a configuration it rejects.
            replace_file(exe, source=PERFCGI_BIN)
            own.write_config(workers="none")
            os.kill(own.pid, signal.SIGUSR2)
            wait_until(lambda: log_count(own, "before it served") == 2, SETTLE, message="the second rollback")
            own.write_config(workers=WORKERS)
            served = load.ok
            load.wait_for(served + 30)
        log = own.log_text()
        assert not load.failures, f"requests failed through the failed upgrades: {load.summary()}"
        nginx_log.assert_none_dropped("USR2 upgrades that fail to boot")
        assert own.p.poll() is None, f"the master exited ({own.p.returncode}): {log[-1500:]}"
        rollbacks = re.findall(r"USR2: the new master \d+ (exited with status \d+) before it served; upgrade rolled "
                               r"back, this master serves on", log)
        assert rollbacks == ["exited with status 1", "exited with status 2"], log[-2000:]
        assert "'none' must be auto or an integer" in log, log[-2000:]  # the new master said why
        assert pidfile_pid(pidfile) == own.pid and not os.path.exists(pidfile + ".oldbin")
        assert set(wait_workers(WORKERS)) == workers, "the workers changed"
        assert pm_status()["upgrade"] == "none"
        s, h, b = get("/")
        assert_app_answer(s, h, b)


def test_usr2_under_way_refuses_another_and_quit_to_the_new_master_rolls_back():
    exe = binary_dir("upgrade-quit-bin")
    with OwnPerfcgi(name="upgrade-quit", binary=exe, workers=2) as own:
        pidfile = own.settings["pidfile"]
        workers = set(wait_workers(2))
        # A new master that never serves.
        replace_file(exe, text="#!/bin/sh\nexec sleep 300\n")
        os.kill(own.pid, signal.SIGUSR2)
        m = wait_until(lambda: re.search(r"USR2: started new master (\d+)", own.log_text()), 20,
                       message="USR2 logged")
        new_master = int(m.group(1))
        st = wait_until(lambda: (s := pm_status())["upgrade"] == "starting" and s, 20, message="/status upgrade")
        assert st["upgrade_pid"] == new_master, st
        assert not os.path.exists(pidfile) and pidfile_pid(pidfile + ".oldbin") == own.pid
        os.kill(own.pid, signal.SIGUSR2)
        wait_until(lambda: "USR2: an upgrade is under way already; ignored" in own.log_text(), 20,
                   message="the second USR2 refused")
        assert proc_alive(new_master), "the second USR2 touched the new master"
        os.kill(new_master, signal.SIGQUIT)
        wait_until(lambda: f"USR2: the new master {new_master} was killed by signal {int(signal.SIGQUIT)} before it "
                   "served" in own.log_text(), 20, message="the rollback logged")
        assert pidfile_pid(pidfile) == own.pid and not os.path.exists(pidfile + ".oldbin")
        st = pm_status()
        assert (st["upgrade"], st["upgrade_pid"]) == ("none", 0), st
        assert own.p.poll() is None and set(wait_workers(2)) == workers
        s, h, b = get("/")
        assert_app_answer(s, h, b)


def test_usr2_is_refused_when_the_master_is_pid_1():
    """In a container the master may be PID 1, whose exit would end it: no upgrade there."""
    if not shutil.which("unshare"):
        raise Skip("no unshare(1) to run perfcgi as PID 1 of a PID namespace")
    d = tempfile.mkdtemp(prefix="pcgi-u-", dir="/tmp")
    log, pidfile = os.path.join(d, "perfcgi.log"), os.path.join(d, "perfcgi.pid")
    args = ["unshare", "--pid", "--fork", "--mount-proc", str(PERFCGI_BIN), "--worker-class", WORKER_CLASS,
            "--workers", "1", "--bind", f"unix:{d}/app.sock", "--status-bind", f"127.0.0.1:{free_port()}",
            "--access-log", "", "--pidfile", pidfile]
    with open(log, "ab") as f:
        p = subprocess.Popen(args, env=clean_env(), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (children_of(p.pid) and re.search(r" workers .*on unix:", read_text(log))):
            if p.poll() is not None:
                raise Skip(f"no PID namespace here (unshare exited {p.returncode}): {read_text(log)[-300:]!r}")
            assert time.monotonic() < deadline, f"perfcgi as PID 1 did not start: {read_text(log)[-800:]}"
            time.sleep(0.1)
        master = children_of(p.pid)[0]  # PID 1 inside, this pid outside
        os.kill(master, signal.SIGUSR2)
        wait_until(lambda: "USR2: the master is PID 1, whose exit would end the container; use HUP" in read_text(log),
                   20, message="the refusal logged")
        time.sleep(0.5)
        text = read_text(log)
        assert "started new master" not in text, text[-800:]
        assert proc_alive(master) and os.path.exists(pidfile) and not os.path.exists(pidfile + ".oldbin"), text[-800:]
    finally:
        kill_session(p, lambda: p.wait(timeout=10))
        shutil.rmtree(d, ignore_errors=True)
