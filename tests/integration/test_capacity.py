"""Capacity checks (issue 12, item 7): the PostgreSQL connections the workers' pools may
open against the server's max_connections, asked at start and on HUP (a warning naming
the numbers, or "check skipped" when the server cannot be asked); the file descriptors a
worker may hold against RLIMIT_NOFILE (the soft limit raised at start, start-up and a
HUP refused when even the hard limit is too low). The template relations of Nginx's
timeouts: tests/test_nginx_templates.py (docs tier)."""

import os
import re
import resource
import signal
import subprocess

from harness import (PERFCGI_BIN, REPO, STACK, WORKER_CLASS, HungPostgres, OwnPerfcgi, children_of, clean_env, free_ports, get,
                     master_http, psql, wait_until, wait_workers)

# The setting each class's descriptors grow with, and a value that needs about 1,000.
BIG = {"event": ("worker_connections", 500), "thread": ("threads", 500), "sync": ("pool_max_overflow", 1000)}


def _logged(own, needle, message):
    try:
        return wait_until(lambda: [ln for ln in own.log_text().splitlines() if needle in ln], 20, message=message)
    except AssertionError:
        raise AssertionError(f"{message}: no line with {needle!r} in {own.log_text()[-1500:]}") from None


def test_capacity_postgresql_warning_names_the_numbers():
    max_conn = int(psql("SHOW max_connections"))
    overflow = max_conn  # 2 x (5 + max_connections) + 1 is always too many
    with OwnPerfcgi(name="cappg", workers=2, pool_size=5, pool_max_overflow=overflow) as own:
        most = 2 * (5 + overflow) + 1
        lines = _logged(own, "PostgreSQL connections at most", "the start-up warning")
        line = lines[0]
        assert "warning" in line and line.split("warning: ")[1].startswith("start: "), line
        assert f"workers 2 x (pool_size 5 + pool_max_overflow {overflow}) + 1 for the prober = {most}" in line, line
        assert f"the server allows {max_conn} (" in line, line
        assert "PgBouncer" in line and "pool_max_overflow" in line.split(":")[-1], line
        # A HUP with settings that fit: the same check again, then an info line.
        own.write_config(pool_max_overflow=10)
        os.kill(own.pid, signal.SIGHUP)
        ok = _logged(own, "reload: PostgreSQL connections: workers 2 x (pool_size 5 + pool_max_overflow 10) + 1 = 31",
                     "the reload's check")
        assert f"of max_connections {max_conn}" in ok[0], ok


def test_capacity_postgresql_down_check_skipped():
    down = free_ports(1)[0]
    with OwnPerfcgi(name="capdown", workers=2, database_url=f"postgresql://perfcgi@127.0.0.1:{down}/perfcgi") as own:
        lines = _logged(own, "PostgreSQL connections check skipped", "check skipped")
        assert "start:" in lines[0] and str(down) in lines[0], lines
        assert master_http("/healthz")[0] == 200  # it started all the same


def test_capacity_postgresql_that_never_answers_check_skipped():
    # It logs in and never answers the query: the check gives up after 2 s in all.
    with HungPostgres() as pg, \
            OwnPerfcgi(name="caphung", workers=2, database_url=f"postgresql://perfcgi@127.0.0.1:{pg.port}/perfcgi") as own:
        lines = _logged(own, "PostgreSQL connections check skipped", "check skipped")
        assert "start:" in lines[0] and "no answer within 2 s" in lines[0], lines
        assert master_http("/healthz")[0] == 200


def test_capacity_check_on_hup_does_not_hold_the_master():
    # The reload's check waits up to 2 s on a server that logs in and never answers: the
    # prober asks it, so the master answers /status while the check still waits.
    with HungPostgres() as pg, \
            OwnPerfcgi(name="caphup", workers=2, database_url=f"postgresql://perfcgi@127.0.0.1:{pg.port}/perfcgi") as own:
        _logged(own, "start: PostgreSQL connections check skipped", "the start-up check")
        os.kill(own.pid, signal.SIGHUP)
        wait_until(lambda: pg.apps.count("perfcgi-capacity") == 2, 20, message="the reload's check logged in")
        status, _, body = master_http("/status")
        assert status == 200, (status, body[:200])
        assert "reload: PostgreSQL connections check skipped" not in own.log_text(), \
            "the master answered /status only once the reload's check had given up"
        lines = _logged(own, "reload: PostgreSQL connections check skipped", "the reload's check skipped")
        assert "no answer within 2 s" in lines[0], lines


def _standalone(limits, *args, out=subprocess.PIPE):
    """bin/perfcgi with RLIMIT_NOFILE (soft, hard), on free ports, PostgreSQL unreachable."""
    app, status, pg = free_ports(3)
    cmd = [str(PERFCGI_BIN), "--worker-class", WORKER_CLASS, "--workers", "1", "--bind", f"127.0.0.1:{app}",
           "--status-bind", f"127.0.0.1:{status}", "--database-url", f"postgresql://perfcgi@127.0.0.1:{pg}/perfcgi",
           *args]
    return subprocess.Popen(cmd, env=clean_env(), cwd=str(REPO), stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits))


def test_capacity_files_hard_limit_refuses_start():
    name, value = BIG[WORKER_CLASS]
    p = _standalone((256, 256), f"--{name.replace('_', '-')}", str(value))
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 1, (p.returncode, out)
    assert f"each {WORKER_CLASS} worker may hold" in out and f"{name} " in out, out
    assert "the hard limit on open files (RLIMIT_NOFILE) is 256" in out and "raise the hard limit" in out, out


def _soft_nofile(pid):
    with open(f"/proc/{pid}/limits") as f:
        return int(next(ln for ln in f if ln.startswith("Max open files")).split()[3])


def test_capacity_files_soft_limit_raised_at_start():
    log = os.path.join(STACK.run_dir, "capraise.log")
    with open(log, "w") as f:
        p = _standalone((24, 8192), out=f)
    try:
        def raised():
            with open(log) as f:
                m = re.search(r"open files limit \(soft\) raised from 24 to (\d+)", f.read())
            return int(m.group(1)) if m else None
        need = wait_until(raised, 20, message="the raise logged")
        kids = wait_until(lambda: children_of(p.pid), 20, message="a worker")
        assert _soft_nofile(p.pid) == need and all(_soft_nofile(k) == need for k in kids), need
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def test_capacity_files_reload_that_does_not_fit_is_refused():
    name, value = BIG[WORKER_CLASS]
    with OwnPerfcgi(name="capfd", workers=2) as own:
        old = set(wait_workers(2))
        resource.prlimit(own.pid, resource.RLIMIT_NOFILE, (512, 512))
        own.write_config(**{name: value})
        os.kill(own.pid, signal.SIGHUP)
        lines = _logged(own, "reload: each", "the refused reload")
        assert "is 512" in lines[0] and "running configuration stays" in lines[0], lines
        status, _, body = get("/")
        assert status == 200, (status, body[:200])
        assert set(wait_workers(2)) == old, "the workers changed after a refused reload"
