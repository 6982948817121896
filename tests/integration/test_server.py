"""The perfcgi binary on its own: settings, sockets, signals, the compose file.

No stack needed: these tests run bin/perfcgi directly (with an environment free of
PERFCGI_* variables) and talk FastCGI to it with cgi-fcgi. Every process they start is
ended by its pid (its own process group) before the test returns.
"""

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

from harness import (PERFCGI_BIN, REPO, Proc, Skip, children_of, clean_env, cpu_ticks, free_port,
                     proc_alive, wait_until)

NEEDS_STACK = False
EXIT_TIMEOUT = 30


def perfcgi(*args, env=None, timeout=EXIT_TIMEOUT):
    """Runs bin/perfcgi to its exit: (returncode, stdout, stderr)."""
    r = subprocess.run([str(PERFCGI_BIN), *args], env=env if env is not None else clean_env(),
                       cwd=str(REPO), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def print_config(*args, env=None):
    rc, out, err = perfcgi(*args, "--print-config", env=env)
    assert rc == 0, f"--print-config {' '.join(args)} exited {rc}: {err.strip()}"
    return out


def config_dict(text):
    """key -> value (list for repeated keys) of --print-config output."""
    out = {}
    for line in text.splitlines():
        if " = " in line:
            k, v = line.split(" = ", 1)
            out.setdefault(k.strip(), []).append(v)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


class TempDir:
    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="pcgi-t-", dir="/tmp")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        return False


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def fcgi(sock, uri, query="", method="GET", timeout=60):
    """One FastCGI request through cgi-fcgi: (status code or None, raw output)."""
    env = clean_env(REQUEST_METHOD=method, DOCUMENT_URI=uri, QUERY_STRING=query,
                    REQUEST_URI=uri + ("?" + query if query else ""), SERVER_PROTOCOL="HTTP/1.1")
    r = subprocess.run(["cgi-fcgi", "-bind", "-connect", sock], env=env, capture_output=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    out = r.stdout.decode("utf-8", "replace")
    first = out.split("\r\n", 1)[0].split("\n", 1)[0]
    code = int(first.split()[1]) if first.startswith("Status: ") else None
    return code, out


def need_cgi_fcgi():
    if not shutil.which("cgi-fcgi"):
        raise Skip("cgi-fcgi is not installed (apt-get install -y libfcgi-bin)")


def serving(sock):
    def check():
        code, out = fcgi(sock, "/", timeout=10)
        return code == 200
    return check


# --- settings --------------------------------------------------------------------------------

def test_bad_flag_value_exits_2_naming_the_flag():
    for args, flag in ((["--workers", "x"], "--workers"), (["--workers=0"], "--workers"),
                       (["--backlog", "-1"], "--backlog"), (["--pool-timeout", "soon"], "--pool-timeout"),
                       (["--worker-class", "fork"], "--worker-class"), (["--socket-mode", "999"], "--socket-mode"),
                       (["--bind", "nowhere"], "--bind"), (["--log-level", "loud"], "--log-level")):
        rc, out, err = perfcgi(*args)
        assert rc == 2, f"{args}: exit {rc}, expected 2 ({err.strip()})"
        assert flag in err, f"{args}: stderr does not name {flag}: {err.strip()!r}"


def test_unknown_flag_exits_2():
    rc, out, err = perfcgi("--no-such-setting", "1")
    assert rc == 2 and "--no-such-setting" in err, (rc, err)
    rc, out, err = perfcgi("--workers")
    assert rc == 2 and "--workers" in err, (rc, err)


def test_unknown_environment_variable_exits_2_naming_it():
    rc, out, err = perfcgi(env=clean_env(PERFCGI_NO_SUCH="1"))
    assert rc == 2, f"exit {rc}: {err.strip()}"
    assert "PERFCGI_NO_SUCH" in err, err


def test_bad_environment_value_exits_2_naming_the_variable():
    rc, out, err = perfcgi(env=clean_env(PERFCGI_WORKERS="many"))
    assert rc == 2 and "PERFCGI_WORKERS" in err, (rc, err)


def test_config_file_errors_name_file_and_line():
    with TempDir() as d:
        cases = {
            "bad value": "[perfcgi]\nworkers = 2\nbacklog = lots\n",
            "unknown key": "[perfcgi]\nworkers = 2\nno_such_key = 1\n",
            "outside the section": "workers = 2\n[other]\nbacklog = 10\n",
            "not a key = value line": "[perfcgi]\n\nthis is not ini\n",
        }
        for what, text in cases.items():
            path = write(os.path.join(d, "bad.ini"), text)
            rc, out, err = perfcgi("-c", path)
            assert rc == 2, f"{what}: exit {rc} ({err.strip()})"
            line = "1" if what == "outside the section" else "3"
            assert f"{path}:{line}:" in err, f"{what}: stderr lacks {path}:{line}: -> {err.strip()!r}"
        rc, out, err = perfcgi("-c", os.path.join(d, "missing.ini"))
        assert rc == 2 and "missing.ini" in err, (rc, err)


def test_bad_access_log_format_stops_start_up_naming_setting_and_variable():
    rc, out, err = perfcgi("--access-log-format", "$remote_addr $host")
    assert rc == 2 and "--access-log-format" in err and "'$host'" in err, (rc, err)
    rc, out, err = perfcgi(env=clean_env(PERFCGI_ACCESS_LOG_FORMAT="%(h)s %(a)s"))
    assert rc == 2 and "PERFCGI_ACCESS_LOG_FORMAT" in err and "'%(a)s'" in err, (rc, err)
    with TempDir() as d:
        path = write(os.path.join(d, "bad.ini"), "[perfcgi]\nworkers = 2\naccess_log_format = ${status $uri\n")
        rc, out, err = perfcgi("-c", path)
        assert rc == 2 and f"{path}:3: access_log_format:" in err, (rc, err)
        # A good one is taken, and printed back as given.
        path = write(os.path.join(d, "good.ini"), "[perfcgi]\naccess_log_format = ${status} %(h)s\n")
        assert config_dict(print_config("-c", path))["access_log_format"] == "${status} %(h)s"


def test_print_config_round_trips_through_c():
    with TempDir() as d:
        variants = [
            [],
            ["--bind", "unix:/tmp/pcgi-x/a.sock", "--bind", "127.0.0.1:9100", "--workers", "3",
             "--pool-timeout", "0.25", "--pidfile", "/tmp/pcgi-x/perfcgi.pid", "--preload",
             "--socket-mode", "0600", "--log-level", "debug", "--worker-class", "event",
             "--database-url", "host=127.0.0.1 port=5432 dbname=perfcgi user=perfcgi",
             "--max-held-mb", "8", "--graceful-timeout", "2.5"],
        ]
        for args in variants:
            first = print_config(*args)
            path = write(os.path.join(d, "round.ini"), first)
            second = print_config("-c", path)
            assert second == first, f"{args}: -c of --print-config differs:\n{first}\n---\n{second}"
            if args:
                cfg = config_dict(first)
                assert cfg["bind"] == ["unix:/tmp/pcgi-x/a.sock", "127.0.0.1:9100"], cfg["bind"]
                assert cfg["workers"] == "3" and cfg["socket_mode"] == "0600", cfg


def test_print_config_keeps_fractional_seconds():
    # --print-config prints "the effective values": a seconds setting must come back as
    # the number it is, not rounded to 6 significant digits.
    cfg = config_dict(print_config("--graceful-timeout", "12.3456789", "--pool-recycle", "100000.5",
                                   "--pool-timeout", "1.0000001"))
    got = {k: cfg[k] for k in ("graceful_timeout", "pool_recycle", "pool_timeout")}
    bad = {k: v for k, v, want in (("graceful_timeout", got["graceful_timeout"], 12.3456789),
                                   ("pool_recycle", got["pool_recycle"], 100000.5),
                                   ("pool_timeout", got["pool_timeout"], 1.0000001))
           if float(v) != want}
    assert not bad, f"--print-config changed values: {bad}"


def test_config_file_long_values_are_read_whole():
    # A long (but valid) database URL, e.g. with options: -c must accept back what
    # --print-config printed, and read the value whole.
    problems = []
    url = "postgresql://perfcgi@127.0.0.1:5432/perfcgi?application_name=perfcgi-" + "x" * 40 + \
          "&options=-c%20statement_timeout%3D30000&connect_timeout=5&sslmode=disable" + \
          "&target_session_attrs=any&keepalives_idle=30"
    first = print_config("--database-url", url)
    with TempDir() as d:
        path = write(os.path.join(d, "long.ini"), first)
        rc, out, err = perfcgi("-c", path, "--print-config")
        if rc != 0:
            problems.append(f"-c rejects the --print-config output with a {len(url)}-character "
                            f"database_url: exit {rc}: {err.strip()}")
        elif out != first:
            problems.append("the round trip changed the configuration")
        # Worse when the part past the cut happens to look like a setting: the value is
        # silently truncated and the rest is taken as another key.
        prefix = "database_url = postgresql://perfcgi@127.0.0.1:5432/perfcgi?application_name="
        head_ = prefix + "a" * (198 - len(prefix)) + "&"
        line = head_ + "workers=9"
        path = write(os.path.join(d, "silent.ini"), "[perfcgi]\n" + line + "\n")
        rc, out, err = perfcgi("-c", path, "--print-config")
        want = line.split(" = ", 1)[1]
        if rc == 0:
            cfg = config_dict(out)
            if cfg.get("database_url") != want or cfg.get("workers") != "auto":
                problems.append(f"a {len(line)}-byte line 'database_url = ...&workers=9' was read as "
                                f"database_url={cfg.get('database_url')[-12:]!r} (truncated to "
                                f"{len(cfg.get('database_url', ''))} chars) and workers={cfg.get('workers')}")
        else:
            problems.append(f"a {len(line)}-byte database_url line is rejected: {err.strip()}")
    assert not problems, "; ".join(problems)


def test_settings_precedence_flag_env_file_default():
    with TempDir() as d:
        path = write(os.path.join(d, "p.ini"), "[perfcgi]\nbacklog = 100\ncache_ttl = 7\nbind = unix:/tmp/pcgi-f.sock\n")
        cfg = config_dict(print_config())
        assert cfg["backlog"] == "2048" and cfg["cache_ttl"] == "60", cfg
        cfg = config_dict(print_config("-c", path))
        assert cfg["backlog"] == "100" and cfg["cache_ttl"] == "7", cfg
        assert cfg["bind"] == "unix:/tmp/pcgi-f.sock", cfg["bind"]
        env = clean_env(PERFCGI_BACKLOG="200", PERFCGI_BIND="127.0.0.1:9300")
        cfg = config_dict(print_config("-c", path, env=env))
        assert cfg["backlog"] == "200" and cfg["cache_ttl"] == "7", cfg
        assert cfg["bind"] == "127.0.0.1:9300", f"env bind must replace the file's: {cfg['bind']}"
        cfg = config_dict(print_config("-c", path, "--backlog", "300", "--bind", "127.0.0.1:9401",
                                       "--bind", "127.0.0.1:9402", env=env))
        assert cfg["backlog"] == "300" and cfg["cache_ttl"] == "7", cfg
        assert cfg["bind"] == ["127.0.0.1:9401", "127.0.0.1:9402"], cfg["bind"]


def test_help_lists_every_setting():
    rc, out, err = perfcgi("--help")
    assert rc == 0, f"--help exited {rc}: {err}"
    keys = list(config_dict(print_config()))
    assert len(keys) >= 30, keys
    missing = [k for k in keys
               if "--" + k.replace("_", "-") not in out or "PERFCGI_" + k.upper() not in out]
    assert not missing, f"--help does not mention: {missing}"


def test_invalid_redis_url_is_a_settings_error():
    # "An unknown or invalid key stops start-up naming the flag, the variable, or the file
    # and line": a redis_url that is not redis://... or unix:... is invalid.
    rc, out, err = perfcgi("--redis-url", "not-a-url", "--bind", f"127.0.0.1:{free_port()}",
                           "--status-bind", f"127.0.0.1:{free_port()}", "--workers", "1")
    assert rc != 0, f"perfcgi started with --redis-url not-a-url: {err.strip()}"
    assert rc == 2 and "--redis-url" in err, \
        f"exit {rc} (settings errors exit 2), stderr should name --redis-url: {err.strip()!r}"


# --- sockets ------------------------------------------------------------------------------------

def test_bind_to_a_port_in_use_fails_clearly():
    for which in ("--bind", "--status-bind"):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            other = free_port()
            args = ["--workers", "1"]
            if which == "--bind":
                args += ["--bind", f"127.0.0.1:{port}", "--status-bind", f"127.0.0.1:{other}"]
            else:
                args += ["--bind", f"127.0.0.1:{other}", "--status-bind", f"127.0.0.1:{port}"]
            rc, out, err = perfcgi(*args, timeout=EXIT_TIMEOUT)
            assert rc != 0, f"{which} on a taken port: exit 0"
            assert f"127.0.0.1:{port}" in err and "in use" in err, f"{which}: unclear message {err.strip()!r}"


def test_unix_socket_mode_request_and_clean_stop():
    need_cgi_fcgi()
    with TempDir() as d:
        sock = os.path.join(d, "a.sock")
        pidfile = os.path.join(d, "perfcgi.pid")
        with Proc([str(PERFCGI_BIN), "--bind", f"unix:{sock}", "--status-bind", f"127.0.0.1:{free_port()}",
                   "--workers", "1", "--socket-mode", "0600", "--pidfile", pidfile]) as p:
            wait_until(lambda: os.path.exists(sock), 20, message="socket created")
            with open(pidfile) as f:
                assert f.read().strip() == str(p.pid), "the pidfile does not hold the master's pid"
            st = os.stat(sock)
            assert stat.S_ISSOCK(st.st_mode), oct(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o600, f"socket mode {oct(stat.S_IMODE(st.st_mode))}"
            wait_until(serving(sock), 20, message="FastCGI answers on the socket")
            code, out = fcgi(sock, "/")
            assert code == 200 and '"Hello, World!"' in out, out
            assert "X-Worker: " in out and "Content-Type: application/json" in out, out
            code, out = fcgi(sock, "/cpu-intensive", "n=1000")
            assert code == 200 and '"primes":168' in out, out
            code, out = fcgi(sock, "/cpu-intensive", "n=1000", method="HEAD")
            assert code == 200 and "{" not in out, f"HEAD has a body: {out!r}"
            code, out = fcgi(sock, "/nope")
            assert code == 404, out
            os.kill(p.pid, signal.SIGTERM)
            rc, _, err = p.wait(EXIT_TIMEOUT)
            assert rc == 0, f"exit {rc} after SIGTERM: {err}"
            assert not os.path.exists(sock), "the socket file is left behind after a clean stop"
            assert not os.path.exists(pidfile), "the pidfile is left behind after a clean stop"


def test_stale_unix_socket_is_replaced():
    need_cgi_fcgi()
    with TempDir() as d:
        sock = os.path.join(d, "stale.sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(sock)
        s.close()  # left behind, nobody listening
        assert os.path.exists(sock)
        with Proc([str(PERFCGI_BIN), "--bind", f"unix:{sock}", "--status-bind", f"127.0.0.1:{free_port()}",
                   "--workers", "1", "--socket-mode", "0600"]) as p:
            wait_until(serving(sock), 20, message="perfcgi serving on the formerly stale socket")
            assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
            os.kill(p.pid, signal.SIGTERM)
            rc, _, err = p.wait(EXIT_TIMEOUT)
            assert rc == 0, (rc, err)
        assert not os.path.exists(sock)


def test_live_unix_socket_is_not_stolen():
    with TempDir() as d:
        sock = os.path.join(d, "live.sock")
        with socket.socket(socket.AF_UNIX) as other:
            other.bind(sock)
            other.listen()
            rc, out, err = perfcgi("--bind", f"unix:{sock}", "--status-bind", f"127.0.0.1:{free_port()}",
                                   "--workers", "1")
            assert rc != 0, "perfcgi took over a socket another server listens on"
            assert sock in err, err
            assert os.path.exists(sock), "perfcgi removed another server's socket"
            with socket.socket(socket.AF_UNIX) as c:
                c.connect(sock)  # the other server still owns it


def _blocked_in_accept(pid):
    """The listener fd a process is blocked on in accept()/accept4(), or None."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return None
    if fields and fields[0] in ("43", "288"):  # x86_64 accept, accept4
        return int(fields[1], 16)
    return None


def _unix_listener_fd(pid, path):
    """The fd number of the listening unix socket bound to path in process pid, or None."""
    inodes = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path:
                inodes.add(fields[6])
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return int(fd)
    return None


def test_several_binds_keep_every_idle_worker_available():
    # Two binds X and Y, two workers. After a request on X, both workers must again serve
    # both binds: a long request on Y takes one worker, and a quick request on Y, sent
    # while the long one runs, must be served by the other (idle) worker.
    need_cgi_fcgi()
    with TempDir() as d:
        a, b = os.path.join(d, "a.sock"), os.path.join(d, "b.sock")
        with Proc([str(PERFCGI_BIN), "--bind", f"unix:{a}", "--bind", f"unix:{b}",
                   "--status-bind", f"127.0.0.1:{free_port()}", "--workers", "2"]) as p:
            wait_until(serving(a), 20, message="serving on the first bind")
            wait_until(serving(b), 20, message="serving on the second bind")
            workers = wait_until(lambda: len(children_of(p.pid)) == 2 and children_of(p.pid), 20)
            # One worker per CPU, so both wake up together on a new connection (the race
            # that matters here); on a single CPU the test still runs, it just catches less.
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) >= 2:
                for w, cpu in zip(workers, cpus):
                    os.sched_setaffinity(w, {cpu})
            for x, y in ((b, a), (a, b), (b, a)):
                fd_x = {w: _unix_listener_fd(w, x) for w in workers}
                stuck = []
                for _ in range(30):  # a request on X, until a worker stays blocked on X (or never)
                    code, out = fcgi(x, "/")
                    assert code == 200, out
                    time.sleep(0.05)
                    stuck = [w for w in workers if fd_x[w] is not None and _blocked_in_accept(w) == fd_x[w]]
                    if stuck:
                        break
                before = {w: cpu_ticks(w) for w in workers}
                env = clean_env(REQUEST_METHOD="GET", DOCUMENT_URI="/cpu-intensive", QUERY_STRING="n=10000000")
                with Proc(["cgi-fcgi", "-bind", "-connect", y], env=env) as long_:
                    wait_until(lambda: any(cpu_ticks(w) - before[w] >= 10 for w in workers), 30, interval=0.02,
                               message="a worker busy on the long request")
                    code, out = fcgi(y, "/", timeout=120)
                    long_running = long_.p.poll() is None
                    long_.wait(120)
                assert code == 200, out
                assert long_running, (
                    f"with one of two workers idle, a quick request on {os.path.basename(y)} was only "
                    f"served after the long one finished: worker(s) {stuck} sat blocked in accept() on "
                    f"{os.path.basename(x)} after a request there, serving no other bind (the listeners "
                    f"are blocking; worker_sync.c assumes they are non-blocking)")


def test_graceful_stop_finishes_the_request_in_flight():
    need_cgi_fcgi()
    with TempDir() as d:
        sock = os.path.join(d, "g.sock")
        with Proc([str(PERFCGI_BIN), "--bind", f"unix:{sock}", "--status-bind", f"127.0.0.1:{free_port()}",
                   "--workers", "1"]) as p:
            wait_until(serving(sock), 20, message="perfcgi serving")
            workers = wait_until(lambda: children_of(p.pid), 20, message="a worker")
            worker = workers[0]
            before = cpu_ticks(worker)
            env = clean_env(REQUEST_METHOD="GET", DOCUMENT_URI="/cpu-intensive", QUERY_STRING="n=10000000")
            with Proc(["cgi-fcgi", "-bind", "-connect", sock], env=env) as client:
                # The worker is computing once it burns CPU: the request is in flight.
                wait_until(lambda: cpu_ticks(worker) - before >= 10, 30, interval=0.02,
                           message="the worker busy on the request")
                os.kill(p.pid, signal.SIGTERM)
                crc, out, cerr = client.wait(120)
            assert "Status: 200" in out and '"primes":664579' in out, \
                f"the in-flight request did not finish after SIGTERM: {out!r} {cerr!r}"
            rc, _, err = p.wait(EXIT_TIMEOUT)
            assert rc == 0, (rc, err)
            assert not os.path.exists(sock)


def test_sigint_and_sigquit_stop_quickly_and_clean_up():
    need_cgi_fcgi()
    for sig in (signal.SIGINT, signal.SIGQUIT):
        with TempDir() as d:
            sock = os.path.join(d, "q.sock")
            with Proc([str(PERFCGI_BIN), "--bind", f"unix:{sock}", "--status-bind", f"127.0.0.1:{free_port()}",
                       "--workers", "2"]) as p:
                wait_until(serving(sock), 20, message="perfcgi serving")
                workers = children_of(p.pid)
                os.kill(p.pid, sig)
                rc, _, err = p.wait(EXIT_TIMEOUT)
                assert not os.path.exists(sock), f"{sig.name}: socket left behind"
                wait_until(lambda: not any(proc_alive(w) for w in workers), 10,
                           message=f"{sig.name}: workers gone")


def test_usr1_reopens_the_error_log():
    # Log rotation: move the file away, USR1, and the master writes to a new file.
    need_cgi_fcgi()
    with TempDir() as d:
        sock, log = os.path.join(d, "l.sock"), os.path.join(d, "error.log")
        with Proc([str(PERFCGI_BIN), "--bind", f"unix:{sock}", "--status-bind", f"127.0.0.1:{free_port()}",
                   "--workers", "1", "--error-log", log]) as p:
            wait_until(serving(sock), 20, message="perfcgi serving")
            wait_until(lambda: os.path.getsize(log) > 0, 10, message="start-up logged")
            os.rename(log, log + ".1")
            os.kill(p.pid, signal.SIGUSR1)
            wait_until(lambda: os.path.exists(log), 10, message="a new error log after USR1")
            os.kill(p.pid, signal.SIGTERM)
            rc, _, err = p.wait(EXIT_TIMEOUT)
            assert rc == 0, (rc, err)
        with open(log) as f:
            text = f.read()
        assert "stop" in text, f"the stop was not logged to the reopened file: {text!r}"


def test_unbootable_worker_stops_the_master():
    # A worker that cannot start must stop the master with a clear message, not a fork
    # loop. The reason must pass the settings and the master's start-up and fail only in
    # a forked worker's boot: the open-files limit. perfcgi starts with descriptors 3 to
    # FILLED-1 taken (inherited), serves, then its limit is lowered to FILLED: what it has
    # open stays valid, and its own poll stays far below that many descriptors. Its worker
    # is killed; the replacement inherits the limit and those descriptors, and the event
    # loop it sets up at boot needs new ones: it exits as unbootable.
    import resource
    filled = 200
    status_port = free_port()
    with TempDir() as d:
        sock = os.path.join(d, "boot.sock")
        fill = f'for ((fd = 3; fd < {filled}; fd++)); do eval "exec $fd</dev/null"; done; exec "$@"'
        with Proc(["bash", "-c", fill, "perfcgi", str(PERFCGI_BIN), "--worker-class", "event", "--workers", "1",
                   "--bind", f"unix:{sock}", "--status-bind", f"127.0.0.1:{status_port}",
                   "--access-log", ""]) as p:
            wait_until(serving(sock), 20, message="perfcgi serving")
            worker = wait_until(lambda: children_of(p.pid), 10, message="a worker")[0]
            assert len(os.listdir(f"/proc/{worker}/fd")) > filled, "the worker did not inherit the descriptors"
            _, hard = resource.prlimit(p.pid, resource.RLIMIT_NOFILE)
            resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (filled, hard))
            os.kill(worker, signal.SIGKILL)
            rc, out, err = p.wait(EXIT_TIMEOUT)
    assert rc == 1, f"exit {rc} when no worker can boot (1 expected): {err.strip()[-800:]}"
    assert "cannot boot" in err, f"the master does not say that workers cannot boot: {err.strip()[-800:]!r}"
    assert err.count("\n") < 50, f"looks like a fork loop ({err.count(chr(10))} lines): {err[-500:]!r}"


# --- packaging ----------------------------------------------------------------------------------

def test_docker_compose_config_is_valid():
    exe = shutil.which("docker-compose")
    if not exe:
        raise Skip("docker-compose is not installed")
    # docker-compose.yml alone, and with the offline override (make compose-test).
    for files in (["docker-compose.yml"], ["docker-compose.yml", "deploy/docker-compose.offline.yml"]):
        args = [a for f in files for a in ("-f", f)]
        r = subprocess.run([exe, *args, "config", "-q"], cwd=str(REPO), capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL, env=clean_env())
        assert r.returncode == 0, f"docker-compose {' '.join(args)} config -q: exit {r.returncode}: {r.stderr.strip()}"


def _compose_services(files, env):
    """docker-compose config of files: {service: its lines}, from the YAML as printed
    (services at two spaces of indentation, their keys below)."""
    exe = shutil.which("docker-compose")
    if not exe:
        raise Skip("docker-compose is not installed")
    args = [a for f in files for a in ("-f", f)]
    r = subprocess.run([exe, *args, "config"], cwd=str(REPO), capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL, env=clean_env(**env))
    assert r.returncode == 0, f"docker-compose {' '.join(args)} config: exit {r.returncode}: {r.stderr.strip()}"
    services, current, inside = {}, None, False
    for line in r.stdout.splitlines():
        if not line.startswith(" "):
            inside = line == "services:"
            current = None
        elif inside and line.startswith("  ") and not line.startswith("   ") and line.endswith(":"):
            current = services.setdefault(line.strip()[:-1], [])
        elif inside and current is not None:
            current.append(line.strip())
    return services


def test_docker_compose_services_restart_and_redis_needs_its_password():
    password = "pw" + os.urandom(6).hex()
    for files in (["docker-compose.yml"], ["docker-compose.yml", "deploy/docker-compose.offline.yml"]):
        services = _compose_services(files, {"REDIS_PASSWORD": password})
        assert {"postgres", "redis", "app"} <= set(services), f"{files}: services {sorted(services)}"
        norestart = [name for name, lines in services.items() if "restart: unless-stopped" not in lines]
        assert not norestart, f"{files}: services without restart: unless-stopped: {norestart}"
        redis = services["redis"]
        assert "- --requirepass" in redis and redis[redis.index("- --requirepass") + 1] == f"- {password}", \
            f"{files}: redis does not require REDIS_PASSWORD: {redis}"
        assert f"REDISCLI_AUTH: {password}" in redis, f"{files}: the redis health check lacks the password"
        url = [ln for ln in services["app"] if ln.startswith("PERFCGI_REDIS_URL:")]
        assert url and f"redis://:{password}@redis:" in url[0], f"{files}: the app's Redis URL: {url}"
        # The official Nginx image on a branch that still gets releases, not a frozen one.
        image = [ln.split(": ", 1)[1] for ln in services["nginx"] if ln.startswith("image: ")]
        assert image and image[0].split(":")[1].split("-")[0] in ("stable", "mainline"), \
            f"{files}: nginx image {image}: use the stable (or mainline) tag"

