"""test_bench.py: the tuner's files in use. `make tune` (bench/engine.py tune) writes
perfcgi.tuned.ini and an Nginx upstream: the file loads with `perfcgi -c`, says why each
setting was chosen, and applying it to a running perfcgi with HUP under load through
Nginx changes no request's outcome (from whichever class this pass runs to the class the
tuner chose). The tuner runs once, on a private stack of its own; the passes of the
other classes reuse its files (build/bench-tune) while they are newer than the code."""
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

from harness import (PERFCGI_BIN, REPO, Load, OwnPerfcgi, config_text, pm_status, stack_perfcgi_settings,
                     wait_until)

TUNED_DIR = REPO / "build" / "bench-tune"
TUNED_INI = TUNED_DIR / "perfcgi.tuned.ini"
TUNED_NGINX = TUNED_DIR / "perfcgi.tuned.nginx.conf"
TUNE_TIMEOUT = 600
# The settings the tuner may write, and nothing else.
TUNED_KEYS = {"worker_class", "workers", "threads", "pool_size", "pool_max_overflow"}


def tuned_files():
    """The tuner's two files, made by a quick tune unless a fresh pair exists."""
    # The tuner runs bin/perfcgi whichever binary this pass tests.
    code = [*REPO.glob("bench/perfbench/*.py"), REPO / "bench" / "engine.py", REPO / "bin" / "perfcgi"]
    newest = max(p.stat().st_mtime for p in code)
    if not (TUNED_INI.exists() and TUNED_NGINX.exists() and TUNED_INI.stat().st_mtime > newest):
        TUNED_DIR.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["/usr/bin/python3", "bench/engine.py", "tune", "--quick", "--classes", "sync,event",
                            "--mix", "/=0.7,/io-intensive?ms=10=0.3", "--p99", "200", "--out", str(TUNED_INI),
                            "--measurements", str(TUNED_DIR / "measurements")],
                           cwd=str(REPO), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=TUNE_TIMEOUT, env={k: v for k, v in os.environ.items() if not k.startswith("PERFCGI")})
        assert r.returncode == 0, f"the tuner failed (exit {r.returncode}): {(r.stdout + r.stderr)[-1500:]}"
    return TUNED_INI.read_text(), TUNED_NGINX.read_text()


def tuned_values(ini):
    return dict(re.findall(r"^(\w+) = (\S+)$", ini, re.M))


def test_tuned_ini_loads_and_says_why():
    ini, nginx = tuned_files()
    values = tuned_values(ini)
    assert values and set(values) <= TUNED_KEYS, f"unexpected keys in the tuned file: {values}"
    assert {"worker_class", "workers"} <= set(values), values
    # Every setting (or group of settings chosen together: the pool's two) is preceded
    # by the measurement that chose it.
    lines = ini.splitlines()
    is_key = re.compile(r"^\w+ = ")
    for i, line in enumerate(lines):
        if is_key.match(line):
            top = i
            while top > 0 and is_key.match(lines[top - 1]):
                top -= 1
            assert top > 0 and lines[top - 1].startswith("#") and \
                "req/s" in "\n".join(lines[max(0, top - 3):top]), f"no measurement above '{line}':\n{ini}"
    assert re.search(r"PostgreSQL connections at most", ini), ini
    r = subprocess.run([str(PERFCGI_BIN), "-c", str(TUNED_INI), "--print-config"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if not k.startswith("PERFCGI_")}, timeout=10)
    assert r.returncode == 0, f"perfcgi -c refuses the tuned file: {r.stderr}"
    printed = dict(re.findall(r"^(\w+) = (.*)$", r.stdout, re.M))
    for k, v in values.items():
        assert printed[k] == v, f"{k}: the file says {v}, perfcgi runs {printed[k]}"
    # The upstream fits the class: kept-alive connections for event workers only.
    assert "upstream perfcgi_app" in nginx
    assert ("keepalive " in nginx) == (values["worker_class"] == "event"), nginx
    with tempfile.TemporaryDirectory() as d:
        Path(d, "upstream.conf").write_text(nginx)
        Path(d, "nginx.conf").write_text(f"pid {d}/nginx.pid; error_log {d}/error.log; events {{}}\n"
                                         f"http {{ include {d}/upstream.conf; }}\n")
        r = subprocess.run(["nginx", "-t", "-q", "-p", d + "/", "-c", f"{d}/nginx.conf"], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 0, f"nginx -t refuses the tuned upstream: {r.stderr}"


def test_tuned_ini_applied_with_hup_under_load_fails_no_request():
    ini, _ = tuned_files()
    values = tuned_values(ini)
    base = {k: v for k, v in stack_perfcgi_settings().items() if k not in TUNED_KEYS}
    paths = ["/", "/io-intensive?ms=10", "/cached-data?category=12", "/cpu-intensive?n=5000"]
    with OwnPerfcgi("tuned") as own, Load(paths, threads=8) as load:
        load.wait_for(50)
        # The deployment's own keys, then the tuned file as the tuner wrote it.
        own.write_config(text=config_text(base) + "\n" + ini)
        os.kill(own.pid, signal.SIGHUP)
        want = (values["worker_class"], int(values["workers"]))

        def applied():
            st = pm_status()
            return (st["worker_class"], st["total_processes"]) == want and st["idle_processes"] + \
                st["active_processes"] == want[1]
        wait_until(applied, 60, message=f"the tuned settings {want} in force")
        served = load.ok
        load.wait_for(served + 100)
    assert not load.failures, f"requests failed while the tuned file was applied: {load.summary()}"
    assert load.ok >= 150, f"too little load to prove anything: {load.summary()}"
