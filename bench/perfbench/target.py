"""bench/perfbench/target.py: what the benchmark measures, and how it changes it.

StackTarget: a private perfcgi stack (PostgreSQL, Redis, perfcgi, Nginx, deploy/stack.sh)
on free loopback ports, reconfigured between steps. UrlTarget: any server that serves the
same endpoints (--url), measured only. BaselineTarget: the calibration servers of
bench/baselines behind their own minimal Nginx, which also fronts the stack's perfcgi."""
import json
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import procs

REPO = Path(__file__).resolve().parents[2]
STACK_SH = REPO / "deploy" / "stack.sh"
BASELINES_SH = REPO / "bench" / "baselines" / "run.sh"

# The settings the benchmark varies; every perfcgi start gives all of them, so nothing
# from an earlier step leaks into the next.
VARIED = ("worker_class", "workers", "threads", "worker_connections", "pool_size",
          "pool_max_overflow", "max_requests", "max_requests_jitter")


# The stack's access log format (nginx/nginx.conf.template) gives $request_time as rt=S.mmm.
REQUEST_TIME = re.compile(rb" rt=([0-9.]+)")


class TargetError(RuntimeError):
    pass


def http_get(url, timeout=5.0, headers=None):
    """(status, body) of one GET; status 0 when nothing answered."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError):
        return 0, ""


def parse_metrics(text):
    """Prometheus text -> {name{labels}: value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def _free_port():
    """A loopback port below the ephemeral range (where the load tools' own outgoing
    connections never take it before its server binds it)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        high = int(f.read().split()[0])
    with socket.socket() as s:
        for _ in range(200):
            port = random.randrange(max(10000, high - 12000), high)
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise TargetError("no free loopback port")


def _pid_file(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tree(pid, keep=lambda p: True):
    """pid and its children (one level), as a callable for procs.Group."""
    def members():
        if pid is None or procs.stat(pid) is None:
            return []
        return [pid] + [c for c in procs.children(pid) if keep(c)]
    return members


class UrlTarget:
    """A server someone else runs: measured, never started or reconfigured."""
    kind = "url"

    def __init__(self, base_url):
        self.base_url = base_url.rstrip("/")

    def up(self):
        status, _ = http_get(self.base_url + "/")
        if status == 0:
            raise TargetError(f"nothing answers at {self.base_url}/")

    def configure(self, settings):
        if settings:
            raise TargetError("a --url target cannot be reconfigured")
        return {}

    def groups(self):
        return []

    def metrics(self):
        status, body = http_get(self.base_url + "/metrics", timeout=3)
        return parse_metrics(body) if status == 200 else {}

    def make_cold(self, *categories):
        pass  # someone else's Redis: only the Nginx cache key is made fresh

    def access_log_size(self):
        return None  # someone else's Nginx: its log is not ours to read

    def request_times_ms(self, marker, since):
        return []

    def versions(self):
        return {}

    def down(self):
        pass


class StackTarget:
    """perfcgi's own stack, private to this run."""
    kind = "stack"

    def __init__(self, perfcgi_bin=None, keep_dir=False):
        self.perfcgi_bin = Path(perfcgi_bin or REPO / "bin" / "perfcgi").resolve()
        self.keep_dir = keep_dir
        self.run_dir = None
        self.settings = None
        self.env = None

    # --- lifecycle ---
    def up(self):
        if not os.access(self.perfcgi_bin, os.X_OK):
            raise TargetError(f"{self.perfcgi_bin} is missing: run 'make' first")
        # Short: unix socket paths are limited to 107 bytes. 0755: PostgreSQL runs as
        # 'postgres' under root and must reach its cluster below it.
        self.run_dir = tempfile.mkdtemp(prefix="pcgi-bench-", dir="/tmp")
        os.chmod(self.run_dir, 0o755)
        for attempt in range(3):
            self.port, self.redis_port, self.pg_port = _free_port(), _free_port(), _free_port()
            # The external API's port too: its default is shared by every stack on the machine.
            upstream_port = _free_port()
            self.env = {k: v for k, v in os.environ.items() if not k.startswith("PERFCGI_")}
            self.env.update(RUN_DIR=self.run_dir, PORT=str(self.port), REDIS_PORT=str(self.redis_port),
                            PG_PORT=str(self.pg_port), UPSTREAM_PORT=str(upstream_port),
                            PERFCGI_BIN=str(self.perfcgi_bin))
            r = self._stack("up", check=False)
            if r.returncode == 0:
                self.base_url = f"http://127.0.0.1:{self.port}"
                self.settings = self.effective({})
                return
            self._stack("down", check=False)
        raise TargetError(f"deploy/stack.sh up failed:\n{r.stdout}{r.stderr}")

    def down(self):
        if self.run_dir:
            self._stack("down", check=False)
            if not self.keep_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def app_socket(self):
        """perfcgi's FastCGI socket (deploy/stack.sh's default bind), the same across restarts."""
        return f"unix:{self.run_dir}/perfcgi.sock"

    def _stack(self, *args, env=None, check=True):
        r = subprocess.run([str(STACK_SH), *args], env=env or self.env, cwd=str(REPO),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
        if check and r.returncode != 0:
            raise TargetError(f"deploy/stack.sh {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
        return r

    # --- settings ---
    @staticmethod
    def _settings_env(settings):
        return {"PERFCGI_" + k.upper(): str(v) for k, v in settings.items()}

    def effective(self, settings):
        """The values of VARIED perfcgi would run with, given these (the rest default)."""
        env = dict(self.env or os.environ)
        env = {k: v for k, v in env.items() if not k.startswith("PERFCGI_")}
        env.update(self._settings_env(settings))
        out = subprocess.run([str(self.perfcgi_bin), "--print-config"], env=env, capture_output=True,
                             text=True, check=True).stdout
        values = dict(re.findall(r"^(\w+) = (.*)$", out, re.M))
        got = {k: values[k] for k in VARIED}
        if got["workers"] == "auto":  # the rule SPEC.md gives, on this machine
            cores = os.cpu_count() or 1
            got["workers"] = str(2 * cores + 1 if got["worker_class"] == "sync" else cores * 4)
        return {k: (int(v) if v.isdigit() else v) for k, v in got.items()}

    def configure(self, settings):
        """Restarts perfcgi with these settings (the rest default) unless it runs them
        already, and re-renders Nginx (upstream keepalive follows the class). Returns the
        values in force."""
        wanted = self.effective(settings)
        if wanted == self.settings:
            return wanted
        self._stack("stop", "perfcgi")
        env = dict(self.env)
        env.update(self._settings_env(wanted))
        self._stack("start", "perfcgi", env=env)
        self._stack("start", "nginx", env=env)
        self.settings = wanted
        self._wait_ready()
        return wanted

    def wait_idle(self, limit_s=90):
        """Waits until no worker is busy and nothing is queued: requests a finished run
        left behind (its clients gone) are still served and would weigh on the next."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            status, body = http_get(self.base_url + "/status", timeout=3)
            try:
                st = json.loads(body) if status == 200 else {}
            except ValueError:
                st = {}
            if st.get("active_processes") == 0 and st.get("listen_queue") == 0:
                return
            time.sleep(0.2)

    def _wait_ready(self):
        for _ in range(100):
            if http_get(self.base_url + "/readyz")[0] == 200 and http_get(self.base_url + "/")[0] == 200:
                return
            time.sleep(0.1)
        raise TargetError("the stack did not become ready after a restart")

    # --- what the sampler and the report read ---
    def workers(self):
        """perfcgi's worker processes now (the master's children but its prober)."""
        master = _pid_file(Path(self.run_dir) / "perfcgi.pid")
        if not master or procs.stat(master) is None:
            return []
        return [c for c in procs.children(master) if procs.comm(c) != "perfcgi-probe"]

    def groups(self):
        rd = Path(self.run_dir)
        master = _pid_file(rd / "perfcgi.pid")
        nginx = _pid_file(rd / "nginx.pid")
        redis = _pid_file(rd / "redis.pid")
        pg = _pid_file(Path(os.path.realpath(rd / "postgres")) / "data" / "postmaster.pid")
        is_prober = lambda p: procs.comm(p) == "perfcgi-probe"
        return [
            procs.Group("perfcgi_workers", self.workers, reaper=master),
            procs.Group("perfcgi_master", _tree(master, is_prober)),
            procs.Group("nginx", _tree(nginx), reaper=nginx),
            procs.Group("redis", _tree(redis), reaper=redis),
            procs.Group("postgresql", _tree(pg), reaper=pg),
        ]

    def metrics(self):
        status, body = http_get(self.base_url + "/metrics", timeout=3)
        return parse_metrics(body) if status == 200 else {}

    def make_cold(self, *categories):
        """Forgets /cached-data's Redis entries for these categories (the Nginx entry is
        made cold by a fresh URL)."""
        keys = [f"perfcgi:cached-data:{c}" for c in categories]
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "DEL", *keys], capture_output=True, timeout=10)

    def _access_log(self):
        return Path(self.run_dir) / "nginx-access.log"

    def access_log_size(self):
        """Where the next line of the stack's Nginx access log will start."""
        try:
            return self._access_log().stat().st_size
        except OSError:
            return 0

    def request_times_ms(self, marker, since):
        """Nginx's $request_time (ms) of each request logged from byte `since` on whose
        line holds marker (the log is buffered: flushed within a second)."""
        times, wanted = [], marker.encode()
        try:
            with open(self._access_log(), "rb") as log:
                log.seek(since)
                for line in log:
                    if wanted in line:
                        m = REQUEST_TIME.search(line)
                        if m:
                            times.append(float(m.group(1)) * 1000)
        except OSError:
            pass
        return times

    def versions(self):
        def first_line(cmd):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
                return (r.stdout + r.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                return None
        pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        def grab(text, pattern):
            m = re.search(pattern, text or "")
            return m.group(1) if m else text
        return {
            "perfcgi": grab(first_line([str(self.perfcgi_bin), "--version"]), r"perfcgi (\S+)"),
            "nginx": grab(first_line(["nginx", "-v"]), r"nginx/(\S+)"),
            "redis": grab(first_line(["redis-server", "--version"]), r"v=(\S+)"),
            "postgresql": grab(first_line([str(pg_bin[-1]), "--version"]) if pg_bin else None, r"(\d+\.\d+)"),
        }


class BaselineTarget:
    """bench/baselines: Nginx alone, a bare libfcgi loop, a bare non-blocking responder,
    libfcgi loops serving /memory-test from a kept block and from a fresh one; and the same
    minimal Nginx in front of a perfcgi (perfcgi_socket), one port per upstream kind."""
    kind = "baseline"
    NAMES = ("nginx-return-200", "libfcgi-loop", "nonblocking-fcgi", "memory-reuse", "memory-fresh")
    PATHS = {"nginx-return-200": "/baseline/return-200", "libfcgi-loop": "/baseline/libfcgi-loop",
             "nonblocking-fcgi": "/baseline/nonblocking-fcgi", "memory-reuse": "/baseline/memory-reuse",
             "memory-fresh": "/baseline/memory-fresh"}

    def __init__(self, perfcgi_socket=None):
        self.run_dir = None
        self.perfcgi_socket = perfcgi_socket

    def url(self, step):
        """A baseline step's URL: its path, with the query of the endpoint's request."""
        query = step.path.partition("?")[2]
        return self.base_url + self.PATHS[step.baseline] + (f"?{query}" if query else "")

    def front_url(self, cls):
        """Base URL of perfcgi behind this Nginx: kept-alive connections for the event class,
        as the stack's Nginx has them, a connection per request otherwise."""
        return f"http://127.0.0.1:{self.kept_port if cls == 'event' else self.closed_port}"

    def up(self):
        self.run_dir = tempfile.mkdtemp(prefix="pcgi-base-", dir="/tmp")
        os.chmod(self.run_dir, 0o755)
        self.port = _free_port()
        env = dict(os.environ)
        if self.perfcgi_socket:
            self.closed_port, self.kept_port = _free_port(), _free_port()
            env.update(BENCH_PERFCGI_SOCKET=self.perfcgi_socket, BENCH_PERFCGI_PORT=str(self.closed_port),
                       BENCH_PERFCGI_KEPT_PORT=str(self.kept_port))
        r = subprocess.run([str(BASELINES_SH), "start", self.run_dir, str(self.port)], cwd=str(REPO), env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.down()
            raise TargetError(f"bench/baselines/run.sh start failed:\n{r.stdout}{r.stderr}")
        self.base_url = f"http://127.0.0.1:{self.port}"

    def down(self):
        if self.run_dir:
            subprocess.run([str(BASELINES_SH), "stop", self.run_dir], cwd=str(REPO), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def groups(self):
        pids = []
        for f in Path(self.run_dir).glob("*.pid"):
            pid = _pid_file(f)
            if pid:
                pids.append(pid)
        def members():
            out = []
            for p in pids:
                out += _tree(p)()
            return sorted(set(out))
        return [procs.Group("baseline", members, reaper=None)]

    def metrics(self):
        return {}
