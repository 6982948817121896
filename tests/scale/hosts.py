"""hosts: the scale test's private network, its app hosts and the Nginx upstream over them.

A bridge in the root namespace holds the test network's first address (where Redis and
PostgreSQL listen, next to loopback); each app host is a network namespace joined to the
bridge by a veth pair, with an address of its own, `lo` up, running perfcgi bound to TCP
on that address (FastCGI and status). Every name starts with PREFIX, so that a run can
remove what an earlier, killed run left behind.

Standard library only; root (ip netns) required.
"""

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import harness

PREFIX = "pcgsc"
BRIDGE = PREFIX + "-br"
# Inside a namespace of its own nothing else listens: fixed ports cannot collide there.
APP_PORT, STATUS_PORT = 9000, 9001


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def free_subnet():
    """A 10.213.N.0/24 that no address or route of this machine overlaps."""
    used = []
    for line in ip("-4", "-o", "addr").splitlines() + ip("-4", "route").splitlines():
        for m in re.finditer(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)\b", line):
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(m.group(1), strict=False))
    for n in range(1, 255):
        net = ipaddress.ip_network(f"10.213.{n}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.213.N.0/24 for the test network")


def cleanup():
    """Removes every namespace, its processes, and every link named PREFIX*."""
    for ns in ip("netns", "list", check=False).split("\n"):
        ns = ns.split(" ")[0]
        if not ns.startswith(PREFIX):
            continue
        for pid in ip("netns", "pids", ns, check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        ip("netns", "del", ns, check=False)
    for line in ip("-o", "link", check=False).splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX):
            ip("link", "del", name, check=False)


class Network:
    def __init__(self, hosts):
        self.net = free_subnet()
        addrs = list(self.net.hosts())
        self.gateway = str(addrs[0])
        self.host_addrs = [str(addrs[10 + i]) for i in range(hosts)]

    def create(self):
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        for i, addr in enumerate(self.host_addrs, 1):
            ns, veth = f"{PREFIX}-h{i}", f"{PREFIX}-v{i}"
            ip("netns", "add", ns)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", veth, "master", BRIDGE, "up")
            ip("-n", ns, "addr", "add", f"{addr}/{self.net.prefixlen}", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")


class Adopted:
    """The new master of a USR2 upgrade: forked by the old one and reparented once that
    exits, so not our child; what of Popen a Host uses (no exit status to read)."""

    def __init__(self, pid):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None and not harness.proc_alive(self.pid):
            self.returncode = 0
        return self.returncode

    def wait(self, timeout):
        harness.wait_until(lambda: self.poll() is not None, timeout, interval=0.05,
                           message=f"master {self.pid} exited")
        return self.returncode


class Host:
    """perfcgi in namespace PREFIX-hN: started with `ip netns exec`, which execs it (the
    pid is the master's), in its own session so that the whole group can be killed: the
    new master of a USR2 upgrade stays in it too."""

    def __init__(self, n, addr, settings, log_dir):
        self.n, self.addr = n, addr
        self.ns, self.veth = f"{PREFIX}-h{n}", f"{PREFIX}-v{n}"
        self.settings = settings  # perfcgi's flags, name -> value
        self.log = os.path.join(log_dir, f"host{n}.log")
        self.pidfile = os.path.join(log_dir, f"host{n}.pid")
        self.p = self.session = None

    @property
    def server(self):
        return f"{self.addr}:{APP_PORT}"

    def start(self):
        args = ["ip", "netns", "exec", self.ns, str(harness.PERFCGI_BIN),
                "--bind", self.server, "--status-bind", f"{self.addr}:{STATUS_PORT}", "--access-log", "",
                "--pidfile", self.pidfile]
        for k, v in self.settings.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        with open(self.log, "ab") as logf:
            self.p = subprocess.Popen(args, env=harness.clean_env(), stdin=subprocess.DEVNULL, stdout=logf,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.session = self.p.pid
        harness.wait_until(self.serving, 30, message=f"host {self.n} serving")

    def serving(self):
        if self.p.poll() is not None:
            raise AssertionError(f"host {self.n}'s perfcgi exited with {self.p.returncode}: "
                                 f"{harness.read_text(self.log)[-800:]}")
        st = self.status()
        return st["idle_processes"] + st["active_processes"] == int(self.settings["workers"])

    def status(self, full=False):
        url = f"http://{self.addr}:{STATUS_PORT}/status" + ("?full" if full else "")
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def ready(self):
        """/readyz: 200 once its master reached Redis and PostgreSQL over the test network."""
        try:
            with urllib.request.urlopen(f"http://{self.addr}:{STATUS_PORT}/readyz", timeout=5) as r:
                return r.status == 200
        except urllib.error.HTTPError as e:
            raise AssertionError(f"/readyz {e.code}: {e.read()[:300]!r}") from None

    def accepted(self):
        return self.status()["accepted_conn"]

    def connections(self):
        """TCP connections the namespace accepted so far (the kernel's count, per namespace)."""
        snmp = subprocess.run(["ip", "netns", "exec", self.ns, "cat", "/proc/net/snmp"], capture_output=True,
                              text=True, check=True, timeout=10).stdout
        names, values = (ln.split()[1:] for ln in snmp.splitlines() if ln.startswith("Tcp:"))
        return int(values[names.index("PassiveOpens")])

    def requests(self):
        return sum(p["requests"] for p in self.status(full=True)["processes"])

    def signal(self, sig):
        os.kill(self.p.pid, sig)

    def wait(self, timeout):
        return self.p.wait(timeout=timeout)

    def kill(self):
        if isinstance(self.p, Adopted):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.session, signal.SIGKILL)
            self.p.wait(10)
        elif self.p is not None:
            harness.kill_session(self.p, lambda: self.p.wait(timeout=10))

    def upgrade(self, timeout=30):
        """USR2: the binary runs again as a new master on the inherited sockets; returns
        once the old master has exited (0) and the new one's workers all serve: (seconds
        from USR2 to the old master's exit, ms from USR2 until the new master served, as
        it logs)."""
        old = self.p.pid
        t0 = time.monotonic()
        self.signal(signal.SIGUSR2)
        rc = self.p.wait(timeout=timeout)
        switch_s = time.monotonic() - t0
        assert rc == 0, f"host {self.n}: the old master exited with {rc}: {harness.read_text(self.log)[-800:]}"
        new = int(harness.read_text(self.pidfile).split()[0])
        assert new != old and harness.proc_alive(new), f"host {self.n}: new master {new} (old {old})"
        assert not os.path.exists(self.pidfile + ".oldbin"), f"host {self.n}: .oldbin left"
        self.p = Adopted(new)
        served = re.search(rf"USR2: new master {new} serves \((\d+) ms after USR2\)", harness.read_text(self.log))
        assert served, f"host {self.n}: {harness.read_text(self.log)[-800:]}"
        harness.wait_until(self.serving, 10, message=f"host {self.n}'s new master serving")
        return switch_s, int(served.group(1))

    def link(self, up):
        ip("link", "set", self.veth, "up" if up else "down")


# --- Nginx: the stack's rendered configuration, its upstream over the hosts ----------------

# The directives of the rendered nginx/perfcgi.conf.template that a tier of several hosts
# changes: a failed host is skipped for FAIL_TIMEOUT after one failure, an unreachable one
# costs CONNECT_TIMEOUT before the next host is tried, and a timeout is retried too
# (every request of the test is an idempotent GET). READ_TIMEOUT bounds how long a request
# in flight on a host whose link is cut waits before it is retried elsewhere: above any
# request of this test, far below the template's (sized for the application's 30 s).
FAIL_TIMEOUT, CONNECT_TIMEOUT, READ_TIMEOUT = "2s", "300ms", "3s"
DIRECTIVES = {
    r"fastcgi_connect_timeout \S+;": f"fastcgi_connect_timeout {CONNECT_TIMEOUT};",
    r"fastcgi_read_timeout \S+;": f"fastcgi_read_timeout {READ_TIMEOUT};",
    r"fastcgi_next_upstream error;": "fastcgi_next_upstream error timeout;",
    r"fastcgi_next_upstream_tries \S+;": "fastcgi_next_upstream_tries 3;",
}
UPSTREAM_SERVER = r"(upstream perfcgi_app \{\s*\n)\s*server [^\n]*;\n"


def upstream_conf(template_text, hosts):
    """The stack's rendered perfcgi.conf with the perfcgi_app upstream over `hosts` and the
    directives above; its keepalive line (the event class's) stays as rendered. Each
    substitution must match exactly once, so a change of the template fails here."""
    servers = "".join(f"    server {h.server} max_fails=1 fail_timeout={FAIL_TIMEOUT};\n" for h in hosts)
    text, n = re.subn(UPSTREAM_SERVER, lambda m: m.group(1) + servers, template_text)
    if n != 1:
        raise RuntimeError("perfcgi.conf: the perfcgi_app upstream's server line was not found")
    for pattern, repl in DIRECTIVES.items():
        text, n = re.subn(pattern, repl, text)
        if n != 1:
            raise RuntimeError(f"perfcgi.conf: {pattern!r} matched {n} times, not once")
    return text


class Nginx:
    """The stack's Nginx, pointed at some of the hosts by rewriting its perfcgi.conf."""

    def __init__(self, stack):
        self.run_dir = stack.run_dir
        self.conf = os.path.join(self.run_dir, "perfcgi.conf")
        with open(self.conf) as f:
            self.rendered = f.read()

    def render(self, worker_class):
        """The stack renders (and reloads) its configuration for another worker class:
        the event class's upstream keepalive and fastcgi_keep_conn on."""
        harness.stack("start", "nginx", env={"PERFCGI_WORKER_CLASS": worker_class})
        with open(self.conf) as f:
            self.rendered = f.read()

    def point_at(self, hosts):
        with open(self.conf, "w") as f:
            f.write(upstream_conf(self.rendered, hosts))
        old = self.workers()
        subprocess.run(["nginx", "-p", self.run_dir + "/", "-c", os.path.join(self.run_dir, "nginx.conf"),
                        "-s", "reload"], check=True, capture_output=True, timeout=30)
        # The reload is done when no worker of the old configuration is left.
        harness.wait_until(lambda: not (old & self.workers()), 30, interval=0.1, message="nginx reloaded")

    def workers(self):
        with open(os.path.join(self.run_dir, "nginx.pid")) as f:
            master = int(f.read().split()[0])
        return set(harness.children_of(master))

