"""The host install: `make install` into a temporary DESTDIR, then the installed files at work.

No stack needed. Each test installs into its own temporary directory (PREFIX=/usr/local
unless it tests PREFIX), checks what it needs and removes the directory. The installed
perfcgi is started the way perfcgi.service starts it, within what can be done without
systemd as PID 1: the ExecStart command line, a clean environment plus an
EnvironmentFile, working directory /, LimitNOFILE, UMask, NoNewPrivileges,
MemoryDenyWriteExecute (where the kernel has PR_SET_MDWE) and, when the tests run as
root, User=/Group= perfcgi. Its settings differ from the installed ones only by the
runtime directory, a temporary one instead of /run/perfcgi, given as PERFCGI_* variables
in that EnvironmentFile, as a user could. (The unit's sandboxing, ProtectSystem= and the
like, needs systemd: systemd-analyze verify checks it, nothing here runs it.)

A private Nginx serves the installed site (its socket and cache paths moved into the
temporary directory) on a free loopback port; as root its workers run as www-data with
group perfcgi, as Debian's Nginx does once www-data is in group perfcgi. Every process
started is ended by its process group.

As root, a missing perfcgi system user is created with the `useradd` line that
`make install` prints; it is left in place (the tests run on throwaway machines).
Standard library only.
"""

import ctypes
import grp
import http.client as httpclient
import json
import os
import pwd
import re
import resource
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

from harness import (REPO, Headers, Skip, children_of, clean_env, free_port, kill_session, process_group_members,
                     proc_alive, recv_all, wait_until)

NEEDS_STACK = False
# It installs and runs bin/perfcgi, not PERFCGI_BIN: no run on the sanitizer build.
RUNS_PERFCGI_BIN = False

PREFIX = "/usr/local"
BINARY = REPO / "bin" / "perfcgi"
CONF = "/etc/perfcgi/perfcgi.ini"
UNIT = "/lib/systemd/system/perfcgi.service"
SOCKET_UNIT = "/lib/systemd/system/perfcgi.socket"
SITE = "/etc/nginx/sites-available/perfcgi"
RUNTIME_DIR = "/run/perfcgi"  # the unit's RuntimeDirectory=perfcgi
CACHE_DIR = "/var/cache/nginx/perfcgi"
MAKE_TIMEOUT = 300            # make install may have to build the binary first
START_TIMEOUT = 30
HTTP_TIMEOUT = 30
# Variables of the caller that would change what make does.
_MAKE_VARS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DESTDIR", "PREFIX", "INSTALL")


# --- installing --------------------------------------------------------------------------------

class TempDir:
    """A temporary directory under /tmp (short: unix socket paths), mode 0755 so that the
    users the services run as can reach what is below it."""

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="pcgi-hi-", dir="/tmp")
        os.chmod(self.path, 0o755)
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        return False


def make(target, destdir, **variables):
    """make TARGET DESTDIR=destdir VAR=VALUE...: (returncode, stdout + stderr)."""
    env = {k: v for k, v in clean_env().items() if k not in _MAKE_VARS}
    args = ["make", "-s", "--no-print-directory", "-C", str(REPO), target, f"DESTDIR={destdir}"]
    args += [f"{k}={v}" for k, v in variables.items()]
    r = subprocess.run(args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=MAKE_TIMEOUT)
    return r.returncode, r.stdout + r.stderr


def install(destdir, **variables):
    variables.setdefault("PREFIX", PREFIX)
    rc, out = make("install", destdir, **variables)
    assert rc == 0, f"make install DESTDIR={destdir} failed (exit {rc}):\n{out}"
    return out


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def tree(root):
    """{relative path: (type, permission bits)} of everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
            out[os.path.relpath(path, root)] = (kind, stat.S_IMODE(st.st_mode))
    return out


def snapshot(root):
    """tree(root) with the bytes of every file."""
    out = {}
    for path, (kind, mode) in tree(root).items():
        data = None
        if kind == "file":
            with open(os.path.join(root, path), "rb") as f:
                data = f.read()
        out[path] = (kind, mode, data)
    return out


# --- reading the installed files ----------------------------------------------------------------

def help_lines():
    """setting -> its --help description, "MEANING (default: VALUE)"."""
    r = subprocess.run([str(BINARY), "--help"], env=clean_env(), capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{BINARY} --help exited {r.returncode}: {r.stderr.strip()}"
    out = {}
    for line in r.stdout.split("Settings:\n", 1)[1].splitlines():
        m = re.match(r"\s+--(\S+)(?: \S+)?\s+PERFCGI_\S+\s+(.*\(default: .*\))$", line)
        assert m, f"cannot read this --help line: {line!r}"
        out[m.group(1).replace("-", "_")] = m.group(2)
    return out


def print_config(binary, conf, env=None):
    """`binary -c conf --print-config` as a list of (key, value)."""
    r = subprocess.run([str(binary), "-c", conf, "--print-config"], env=env or clean_env(), capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{binary} -c {conf} --print-config exited {r.returncode}: {r.stderr.strip()}"
    pairs = []
    for line in r.stdout.splitlines():
        if " = " in line or line.endswith(" ="):
            k, _, v = line.partition("=")
            pairs.append((k.strip(), v.strip()))
    return pairs


def ini_entries(text):
    """The [perfcgi] keys of an ini file: [(key, value, comment lines right above it)]."""
    entries, comments, section = [], [], None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#") or s.startswith(";"):
            comments.append(s.lstrip("#;").strip())
        elif not s:
            comments = []
        elif s.startswith("["):
            section, comments = s, []
        else:
            assert section == "[perfcgi]", f"key outside [perfcgi]: {line!r}"
            k, _, v = s.partition("=")
            entries.append((k.strip(), v.strip(), comments))
            comments = []
    return entries


def unit_entries(text):
    """A unit file as {(section, key): [values]} (keys may repeat)."""
    out, section = {}, None
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("["):
            section = s.strip("[]")
            continue
        k, _, v = s.partition("=")
        out.setdefault((section, k.strip()), []).append(v.strip())
    return out


def unit_value(unit, key, section="Service"):
    values = unit.get((section, key))
    assert values, f"the unit has no {key}= in [{section}]"
    return values[-1]


def seconds(timespan):
    """A systemd time span ("45s", "1min 30s", "90") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "ms": 0.001, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*([a-z]*)", timespan):
        assert unit in units, f"cannot read the time span {timespan!r}"
        total += float(number) * units[unit]
    return total


def site_servers(site_text):
    """upstream name -> its server address."""
    return dict(re.findall(r"upstream\s+(\w+)\s*\{\s*server\s+(\S+)", site_text))


# --- the runtime directory moved into a temporary one -------------------------------------------

def perfcgi_user(install_output):
    """As root: the perfcgi user and group, created with make install's useradd line if
    missing. (uid, gid), or None when not root."""
    if os.geteuid() != 0:
        return None
    lines = [ln.strip() for ln in install_output.splitlines() if ln.strip().startswith("useradd ")]
    assert lines, f"make install printed no useradd line:\n{install_output}"
    args = shlex.split(lines[0])
    assert args[-1] == "perfcgi" and "--system" in args, f"unexpected useradd line: {lines[0]}"
    try:
        pw = pwd.getpwnam("perfcgi")
    except KeyError:
        args[0] = shutil.which("useradd") or "/usr/sbin/useradd"
        r = subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        try:
            pw = pwd.getpwnam("perfcgi")
        except KeyError:
            raise AssertionError(f"{lines[0]} failed (exit {r.returncode}): {r.stderr.strip()}") from None
    try:
        gid = grp.getgrnam("perfcgi").gr_gid
    except KeyError:
        raise AssertionError("user perfcgi exists but group perfcgi does not") from None
    return pw.pw_uid, gid


def runtime_overrides(conf_pairs, run_dir):
    """PERFCGI_* variables that move every path under /run/perfcgi into run_dir."""
    env = {}
    for key, value in conf_pairs:
        if RUNTIME_DIR + "/" in value:
            moved = value.replace(RUNTIME_DIR + "/", run_dir + "/")
            name = "PERFCGI_" + key.upper()
            assert name not in env, f"{key} is repeated in the configuration: extend this test"
            env[name] = moved
    for key in ("bind", "status_bind", "pidfile"):
        assert "PERFCGI_" + key.upper() in env, f"{key} is not under {RUNTIME_DIR} in the installed configuration"
    return env


def read_environment_file(path):
    """KEY=VALUE lines of an EnvironmentFile (comments and blank lines skipped)."""
    env = {}
    for line in read(path).splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            k, _, v = s.partition("=")
            env[k.strip()] = v.strip()
    return env


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 65, 1


class UnitProcess:
    """The installed perfcgi started as perfcgi.service starts it (see the module's
    docstring), in its own process group, its output in a log file."""

    def __init__(self, unit, destdir, env_file, log_path, as_user=True):
        self.unit = unit
        self.argv = shlex.split(unit_value(unit, "ExecStart"))
        # ExecStart's paths are the real system's: run the binary and read the
        # configuration from the DESTDIR instead.
        self.argv[0] = destdir + self.argv[0]
        assert "-c" in self.argv, f"ExecStart does not name a configuration: {self.argv}"
        i = self.argv.index("-c") + 1
        self.argv[i] = destdir + self.argv[i]
        self.uid = self.gid = None
        name = unit_value(unit, "User")
        if as_user and os.geteuid() == 0:
            self.uid = pwd.getpwnam(name).pw_uid
            self.gid = grp.getgrnam(unit_value(unit, "Group")).gr_gid
        pw = pwd.getpwuid(self.uid if self.uid is not None else os.getuid())
        # systemd's environment of a service with User=: a fixed PATH, the user's
        # identity, then the EnvironmentFile.
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name, "SHELL": pw.pw_shell}
        self.env.update(read_environment_file(env_file))
        self.nofile = int(unit_value(unit, "LimitNOFILE"))
        self.umask = int(unit.get(("Service", "UMask"), ["0022"])[-1], 8)
        self.log_path = log_path
        self.p = None

    def _preexec(self):
        uid, gid, nofile, umask = self.uid, self.gid, self.nofile, self.umask
        mdwe = unit_value(self.unit, "MemoryDenyWriteExecute") == "yes"
        no_new_privs = unit_value(self.unit, "NoNewPrivileges") == "yes"
        user = unit_value(self.unit, "User")

        def preexec():
            # LimitNOFILE; without CAP_SYS_RESOURCE (some containers) as near as allowed.
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
            except (ValueError, OSError):
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            os.umask(umask)
            if uid is not None:
                os.initgroups(user, gid)
                os.setgid(gid)
                os.setuid(uid)
            if no_new_privs:
                _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            if mdwe:
                _libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0)  # fails before Linux 6.3
        return preexec

    def start(self):
        with open(self.log_path, "ab") as log:
            self.p = subprocess.Popen(self.argv, env=self.env, cwd="/", stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=self._preexec())
        self.pid = self.p.pid
        return self

    def run_as_unit(self, argv):
        """Another command of the unit (ExecReload), with the same credentials."""
        r = subprocess.run(argv, env=self.env, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=30, preexec_fn=self._preexec())
        assert r.returncode == 0, f"{argv} exited {r.returncode}: {r.stderr.strip()}"

    def log_tail(self, lines=20):
        try:
            return "".join(read(self.log_path).splitlines(True)[-lines:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.p is None:
            return
        kill_session(self.p, lambda: self.p.wait(timeout=10))


# --- a private Nginx around the installed site -----------------------------------------------------

def nginx_user_line():
    """As root, Nginx's workers run as www-data (nobody without it) with group perfcgi:
    the credentials Debian's Nginx gets once www-data is in group perfcgi."""
    if os.geteuid() != 0:
        return "# not root: the workers run as the invoking user"
    try:
        user = pwd.getpwnam("www-data").pw_name
    except KeyError:
        user = "nobody"
    return f"user {user} perfcgi;"


def private_nginx(destdir, ngx_dir, run_dir):
    """Writes ngx_dir/nginx.conf, a minimal main configuration whose http block includes a
    copy of the installed site with its runtime and cache paths moved under run_dir and
    ngx_dir. Returns the path of nginx.conf."""
    os.makedirs(ngx_dir, exist_ok=True)
    os.chmod(ngx_dir, 0o755)
    site = read(destdir + SITE)
    for old, new in ((RUNTIME_DIR + "/", run_dir + "/"), (CACHE_DIR, os.path.join(ngx_dir, "cache"))):
        assert old in site, f"the installed site does not mention {old}"
        site = site.replace(old, new)
    os.makedirs(os.path.join(ngx_dir, "sites-enabled"), exist_ok=True)
    site_copy = write(os.path.join(ngx_dir, "sites-enabled", "perfcgi"), site)
    # The site's `include fastcgi_params;` is resolved next to nginx.conf, as in /etc/nginx.
    if not os.path.exists("/etc/nginx/fastcgi_params"):
        raise Skip("/etc/nginx/fastcgi_params is missing (apt-get install -y nginx-common)")
    shutil.copy("/etc/nginx/fastcgi_params", os.path.join(ngx_dir, "fastcgi_params"))
    temp = "\n".join(f"    {kind}_temp_path {ngx_dir}/{kind};" for kind in ("client_body", "fastcgi", "proxy",
                                                                            "uwsgi", "scgi"))
    return write(os.path.join(ngx_dir, "nginx.conf"), f"""# test wrapper around the installed perfcgi site
{nginx_user_line()}
worker_processes 1;
pid {ngx_dir}/nginx.pid;
error_log {ngx_dir}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    access_log {ngx_dir}/access.log;
{temp}
    include {site_copy};
}}
""")


def need_nginx():
    if not shutil.which("nginx"):
        raise Skip("nginx is not installed (apt-get install -y nginx)")


def nginx_args(conf):
    d = os.path.dirname(conf)
    return ["nginx", "-p", d + "/", "-c", conf, "-e", os.path.join(d, "error.log")]


class Nginx:
    def __init__(self, conf):
        self.conf, self.p = conf, None

    def start(self):
        log = open(os.path.join(os.path.dirname(self.conf), "nginx.out"), "ab")
        with log:
            self.p = subprocess.Popen(nginx_args(self.conf) + ["-g", "daemon off;"], env=clean_env(), cwd="/",
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        return self

    def stop(self):
        if self.p is None:
            return
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGQUIT)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.p.poll() is None or process_group_members(self.p.pid):
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(timeout=10)

    def log_tail(self, lines=10):
        try:
            return "".join(read(os.path.join(os.path.dirname(self.conf), "error.log")).splitlines(True)[-lines:])
        except OSError:
            return "(no log)"


def request(port, method, path, headers=None):
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, Headers(resp.getheaders()), body
    finally:
        conn.close()


def json_of(body):
    obj = json.loads(body.decode("utf-8"))
    assert isinstance(obj, dict), body[:200]
    return obj


def uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    return None


def status_socket_get(path, target):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = recv_all(s)
    finally:
        s.close()
    return int(data.split(b" ", 2)[1]), data.split(b"\r\n\r\n", 1)[1]


# --- the example configuration ---------------------------------------------------------------------

def test_host_install_example_config_matches_the_binary():
    # deploy/perfcgi.ini sets every setting the binary has, in --print-config's order, each
    # under a comment that starts with the binary's own description and default.
    path = str(REPO / "deploy" / "perfcgi.ini")
    printed = print_config(BINARY, path)
    entries = ini_entries(read(path))
    keys = [k for k, _, _ in entries]
    assert keys == [k for k, _ in printed], \
        f"deploy/perfcgi.ini keys differ from --print-config's:\n{keys}\n{[k for k, _ in printed]}"
    described = help_lines()
    stale = [f"{k}: wants '# {described[k]}' first above it, has {c[:1]}" for k, _, c in entries
             if not c or c[0] != described[k]]
    assert not stale, "deploy/perfcgi.ini comments out of step with `perfcgi --help`:\n" + "\n".join(stale)
    cfg = dict(printed)
    expect = {"bind": "unix:/run/perfcgi/perfcgi.sock", "status_bind": "unix:/run/perfcgi/status.sock",
              "pidfile": "/run/perfcgi/perfcgi.pid", "user": "perfcgi", "group": "perfcgi",
              "redis_url": "redis://127.0.0.1:6379/0", "error_log": "-", "worker_class": "sync"}
    wrong = {k: (cfg[k], v) for k, v in expect.items() if cfg[k] != v}
    assert not wrong, f"deploy/perfcgi.ini (got, wanted): {wrong}"
    mode = int(cfg["socket_mode"], 8)
    assert mode & 0o060 == 0o060 and mode & 0o007 == 0, \
        f"socket_mode {cfg['socket_mode']}: the group (the web server) must read and write, others nothing"
    # Debian's PostgreSQL over its socket, as the role named like the service's user.
    assert "host=/run/postgresql" in cfg["database_url"] and "user=perfcgi" in cfg["database_url"], \
        cfg["database_url"]
    assert cfg["access_log"] == "", "perfcgi's access log should be off (Nginx logs every request)"


# --- the files ---------------------------------------------------------------------------------------

def template_regex(variables):
    """nginx/perfcgi.conf.template as a regex with its variables set (a value None: any
    comment)."""
    text = read(REPO / "nginx" / "perfcgi.conf.template")
    used = set(re.findall(r"\$\{(NGINX_[A-Z0-9_]+)\}", text))
    assert used == set(variables), f"the template uses {sorted(used)}, this test knows {sorted(variables)}"
    parts = re.split(r"\$\{(NGINX_[A-Z0-9_]+)\}", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(re.escape(part))
        else:
            out.append("#[^\n]*" if variables[part] is None else re.escape(variables[part]))
    return "".join(out)


def site_variables(listen="127.0.0.1", port="8080"):
    return {"NGINX_LISTEN_ADDR": listen, "NGINX_PORT": port,
            "NGINX_APP_SERVER": "unix:/run/perfcgi/perfcgi.sock",
            "NGINX_STATUS_SERVER": "unix:/run/perfcgi/status.sock",
            "NGINX_CACHE_DIR": CACHE_DIR, "NGINX_UPSTREAM_KEEPALIVE": None, "NGINX_FASTCGI_KEEP_CONN": "off"}


def assert_site_is_the_template(site_text, **kw):
    m = re.search(template_regex(site_variables(**kw)) + r"\Z", site_text)
    assert m, "the installed site is not nginx/perfcgi.conf.template rendered with the host install's values"
    header = site_text[:m.start()]
    assert all(not ln.strip() or ln.startswith("#") for ln in header.splitlines()), \
        f"the site's header is not only comments: {header!r}"


def test_host_install_puts_each_file_in_place():
    with TempDir() as dest:
        out = install(dest)
        files = {p: m for p, (kind, m) in tree(dest).items() if kind == "file"}
        dirs = {p: m for p, (kind, m) in tree(dest).items() if kind == "dir"}
        expect = {"usr/local/bin/perfcgi": 0o755, "etc/perfcgi/perfcgi.ini": 0o644,
                  "lib/systemd/system/perfcgi.service": 0o644, "lib/systemd/system/perfcgi.socket": 0o644,
                  "etc/nginx/sites-available/perfcgi": 0o644}
        assert files == expect, f"installed files and modes {sorted((p, oct(m)) for p, m in files.items())}"
        assert "var/cache/nginx" in dirs, "no var/cache/nginx (the parent of the site's fastcgi_cache_path)"
        bad = {p: oct(m) for p, m in dirs.items() if m != 0o755}
        assert not bad, f"directories not 0755: {bad}"
        with open(dest + PREFIX + "/bin/perfcgi", "rb") as a, open(BINARY, "rb") as b:
            assert a.read() == b.read(), "the installed binary is not bin/perfcgi"
        assert read(dest + CONF) == read(REPO / "deploy" / "perfcgi.ini"), \
            "the configuration is not deploy/perfcgi.ini"
        unit_text = read(dest + UNIT)
        assert "@" not in unit_text.replace("$MAINPID", ""), "a placeholder is left in the unit"
        unit = unit_entries(unit_text)
        assert unit_value(unit, "ExecStart") == f"{PREFIX}/bin/perfcgi -c {CONF}", unit_value(unit, "ExecStart")
        assert_site_is_the_template(read(dest + SITE))
        assert read(dest + SOCKET_UNIT) == read(REPO / "deploy" / "perfcgi.socket"), "the socket unit is not deploy's"
        # make install creates no user: it prints how to.
        assert re.search(r"^\s*useradd --system .*perfcgi$", out, re.M), out
        assert re.search(r"^\s*usermod -aG perfcgi www-data", out, re.M), out


def test_host_install_files_agree_with_each_other():
    # The unit, the configuration and the site describe one service: the same sockets,
    # runtime directory, user, and a stop timeout above the graceful one.
    with TempDir() as dest:
        install(dest)
        unit = unit_entries(read(dest + UNIT))
        cfg = dict(print_config(dest + PREFIX + "/bin/perfcgi", dest + CONF))
        run_dir = "/run/" + unit_value(unit, "RuntimeDirectory")
        for key in ("bind", "status_bind"):
            path = cfg[key].removeprefix("unix:")
            assert os.path.dirname(path) == run_dir, f"{key} {cfg[key]} is not in the unit's {run_dir}"
        assert os.path.dirname(cfg["pidfile"]) == run_dir, cfg["pidfile"]
        servers = site_servers(read(dest + SITE))
        assert servers == {"perfcgi_app": cfg["bind"], "perfcgi_status": cfg["status_bind"]}, servers
        assert (unit_value(unit, "User"), unit_value(unit, "Group")) == (cfg["user"], cfg["group"]), \
            "the unit's User=/Group= and the configuration's user/group differ"
        stop, grace = seconds(unit_value(unit, "TimeoutStopSec")), float(cfg["graceful_timeout"])
        assert stop > grace, f"TimeoutStopSec {stop}s is not above graceful_timeout {grace}s"
        # Nginx's user reaches the sockets through their group, and only through it.
        dir_mode = int(unit.get(("Service", "RuntimeDirectoryMode"), ["0755"])[-1], 8)
        assert dir_mode & 0o010 and not dir_mode & 0o007, \
            f"RuntimeDirectoryMode {oct(dir_mode)}: the group must enter it, others not"
        assert int(unit_value(unit, "LimitNOFILE")) > int(cfg["worker_connections"])
        required = {
            "ExecReload": "/bin/kill -HUP $MAINPID", "Restart": "on-failure", "KillSignal": "SIGTERM",
            "EnvironmentFile": "-/etc/default/perfcgi", "LimitNOFILE": "65536", "NoNewPrivileges": "yes",
            "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
            "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
            "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK", "LockPersonality": "yes",
            "MemoryDenyWriteExecute": "yes", "RestrictRealtime": "yes", "SystemCallArchitectures": "native",
        }
        wrong = {k: (unit.get(("Service", k)), v) for k, v in required.items() if unit.get(("Service", k)) != [v]}
        assert not wrong, f"unit settings (got, wanted): {wrong}"
        assert unit_value(unit, "WantedBy", "Install") == "multi-user.target"
        # systemd: readiness from perfcgi, the new master of a USR2 upgrade allowed to
        # notify, a watchdog; the FastCGI socket is perfcgi.socket's, at bind's path, as
        # perfcgi would make it, in the runtime directory the service keeps.
        assert (unit_value(unit, "Type"), unit_value(unit, "NotifyAccess")) == ("notify", "all")
        assert seconds(unit_value(unit, "WatchdogSec")) > 0
        assert unit_value(unit, "Requires", "Unit") == "perfcgi.socket" == unit_value(unit, "Sockets")
        assert unit_value(unit, "RuntimeDirectoryPreserve") == "yes"
        sock = unit_entries(read(dest + SOCKET_UNIT))
        assert unit_value(sock, "ListenStream", "Socket") == cfg["bind"].removeprefix("unix:"), cfg["bind"]
        assert (unit_value(sock, "SocketUser", "Socket"), unit_value(sock, "SocketGroup", "Socket"),
                unit_value(sock, "SocketMode", "Socket")) == (cfg["user"], cfg["group"], cfg["socket_mode"])
        assert unit_value(sock, "WantedBy", "Install") == "sockets.target"


def test_host_install_is_repeatable_and_keeps_an_edited_config():
    with TempDir() as dest:
        install(dest)
        first = snapshot(dest)
        out = install(dest)
        assert "kept" not in out, out
        assert snapshot(dest) == first, "a second make install changed what is installed"
        # An edited configuration is the user's: kept by install, kept by uninstall.
        edited = read(dest + CONF).replace("workers = auto", "workers = 3")
        write(dest + CONF, edited)
        out = install(dest)
        assert "kept" in out and read(dest + CONF) == edited, out
        # The user's link in sites-enabled goes with the site (a dangling one stops Nginx).
        os.makedirs(dest + "/etc/nginx/sites-enabled")
        os.symlink("../sites-available/perfcgi", dest + "/etc/nginx/sites-enabled/perfcgi")
        rc, out = make("uninstall", dest, PREFIX=PREFIX)
        assert rc == 0, out
        left = sorted(p for p, (kind, _) in tree(dest).items() if kind != "dir")
        assert left == ["etc/perfcgi/perfcgi.ini"] and read(dest + CONF) == edited, (left, out)
        rc, out = make("uninstall", dest, PREFIX=PREFIX)
        assert rc == 0, f"a second make uninstall failed: {out}"
    with TempDir() as dest:
        install(dest)
        rc, out = make("uninstall", dest, PREFIX=PREFIX)
        assert rc == 0, out
        left = sorted(p for p, (kind, _) in tree(dest).items() if kind != "dir")
        assert not left, f"make uninstall left {left}"
        # An enabled unit is refused: its link would dangle.
        install(dest)
        wants = dest + "/etc/systemd/system/multi-user.target.wants"
        os.makedirs(wants)
        os.symlink(UNIT, wants + "/perfcgi.service")
        rc, out = make("uninstall", dest, PREFIX=PREFIX)
        assert rc != 0 and "systemctl disable" in out, out
        assert os.path.exists(dest + PREFIX + "/bin/perfcgi")


def test_host_install_honours_prefix_and_listen_variables():
    with TempDir() as dest:
        install(dest, PREFIX="/opt/perfcgi", NGINX_LISTEN_ADDR="0.0.0.0", NGINX_PORT="8089")
        assert os.access(dest + "/opt/perfcgi/bin/perfcgi", os.X_OK)
        assert not os.path.exists(dest + "/usr/local/bin/perfcgi")
        unit = unit_entries(read(dest + UNIT))
        assert unit_value(unit, "ExecStart") == f"/opt/perfcgi/bin/perfcgi -c {CONF}", unit_value(unit, "ExecStart")
        assert_site_is_the_template(read(dest + SITE), listen="0.0.0.0", port="8089")
        for bad in ({"PREFIX": "opt/perfcgi"}, {"NGINX_PORT": "http"}):
            rc, out = make("install", dest, **bad)
            assert rc != 0, f"make install {bad} succeeded"


# --- the unit and the site, checked by their own tools ------------------------------------------------

def test_host_install_units_pass_systemd_analyze_verify():
    exe = shutil.which("systemd-analyze")
    if not exe:
        raise Skip("systemd-analyze is not installed (apt-get install -y systemd): the unit was not verified")
    with TempDir() as tmp:
        dest = os.path.join(tmp, "dest")
        install(dest)
        # verify checks that ExecStart's binary exists on this machine, and `--root=` looks
        # up every command and the default targets inside the root (systemd 252), which a
        # DESTDIR does not have: verify a copy whose ExecStart points into the DESTDIR.
        text = read(dest + UNIT)
        line = f"ExecStart={PREFIX}/bin/perfcgi "
        assert text.count(line) == 1, f"no {line!r} line in the unit"
        os.makedirs(os.path.join(tmp, "verify"))
        copy = write(os.path.join(tmp, "verify", "perfcgi.service"),
                     text.replace(line, f"ExecStart={dest}{PREFIX}/bin/perfcgi "))
        socket_copy = write(os.path.join(tmp, "verify", "perfcgi.socket"), read(dest + SOCKET_UNIT))
        r = subprocess.run([exe, "verify", copy, socket_copy], env=clean_env(), capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
        output = (r.stdout + r.stderr).strip()
        assert r.returncode == 0 and not output, f"systemd-analyze verify: exit {r.returncode}: {output}"


def test_host_install_site_passes_nginx_t():
    need_nginx()
    with TempDir() as tmp:
        dest = os.path.join(tmp, "dest")
        out = install(dest)
        perfcgi_user(out)  # the wrapper's `user www-data perfcgi;` needs the group
        run_dir = os.path.join(tmp, "run")
        os.mkdir(run_dir)
        conf = private_nginx(dest, os.path.join(tmp, "nginx"), run_dir)
        r = subprocess.run(nginx_args(conf) + ["-t"], env=clean_env(), capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        output = (r.stdout + r.stderr).strip()
        assert r.returncode == 0 and "test is successful" in output, f"nginx -t: exit {r.returncode}: {output}"
        noise = [ln for ln in output.splitlines() if "[warn]" in ln or "[emerg]" in ln or "[alert]" in ln]
        assert not noise, f"nginx -t warns: {noise}"


# --- the installed server, started as the unit starts it, through the installed site ----------------

def wait_for(predicate, timeout, what, *logs):
    """wait_until, with the ends of the logs (name, callable) when it times out."""
    try:
        return wait_until(predicate, timeout, message=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; " + "; ".join(f"{name}: {tail().strip() or '(empty)'}"
                                                   for name, tail in logs)) from None


def wait_answer(port, path, ngx, svc, want=200):
    """Waits until Nginx answers path with want; names the last answer if it does not."""
    last = []

    def answers():
        last[:] = [request(port, "GET", path)[:3:2]]
        return last[0][0] == want
    try:
        return wait_until(answers, START_TIMEOUT, message=f"GET {path} answering {want}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}, last answer {last[0] if last else None}; nginx error.log: "
                             f"{ngx.log_tail().strip()}; perfcgi: {svc.log_tail().strip()}") from None


def wait_serving(svc, sockets):
    """Waits for perfcgi's sockets and its /healthz; fails at once if perfcgi exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while not all(os.path.exists(s) for s in sockets):
        if svc.p.poll() is not None:
            raise AssertionError(f"perfcgi exited ({svc.p.returncode}) at start-up: {svc.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"perfcgi's sockets {sockets}: none within {START_TIMEOUT}s: {svc.log_tail()}")
        time.sleep(0.1)
    status, body = wait_for(lambda: status_socket_get(sockets[1], "/healthz"), START_TIMEOUT,
                            "/healthz on the status socket", ("perfcgi", svc.log_tail))
    assert status == 200, (status, body)


def test_host_install_serves_through_the_installed_site():
    need_nginx()
    with TempDir() as tmp:
        dest = os.path.join(tmp, "dest")
        port = free_port()
        out = install(dest, NGINX_PORT=str(port))
        ids = perfcgi_user(out)
        unit = unit_entries(read(dest + UNIT))
        conf = print_config(dest + PREFIX + "/bin/perfcgi", dest + CONF)
        cfg = dict(conf)

        # The runtime directory systemd would create: owned by User=, RuntimeDirectoryMode.
        run_dir = os.path.join(tmp, "run")
        os.mkdir(run_dir)
        os.chmod(run_dir, int(unit.get(("Service", "RuntimeDirectoryMode"), ["0755"])[-1], 8))
        if ids:
            os.chown(run_dir, *ids)
        overrides = runtime_overrides(conf, run_dir)
        env_file = write(os.path.join(tmp, "default-perfcgi"),
                         "# /etc/default/perfcgi of a machine whose /run/perfcgi is elsewhere\n" +
                         "".join(f"{k}={v}\n" for k, v in overrides.items()), 0o600)
        app_sock = overrides["PERFCGI_BIND"].removeprefix("unix:")
        status_sock = overrides["PERFCGI_STATUS_BIND"].removeprefix("unix:")
        pidfile = overrides["PERFCGI_PIDFILE"]

        svc = UnitProcess(unit, dest, env_file, os.path.join(tmp, "perfcgi.log"))
        ngx = Nginx(private_nginx(dest, os.path.join(tmp, "nginx"), run_dir))
        try:
            svc.start()
            wait_serving(svc, [app_sock, status_sock])
            mode = int(cfg["socket_mode"], 8)
            for path in (app_sock, status_sock):
                st = os.stat(path)
                assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == mode, \
                    f"{path}: mode {oct(stat.S_IMODE(st.st_mode))}, wanted {oct(mode)}"
                if ids:
                    assert (st.st_uid, st.st_gid) == ids, f"{path} is not perfcgi:perfcgi: {st.st_uid}:{st.st_gid}"
            with open(pidfile) as f:
                assert int(f.read().split()[0]) == svc.pid, "the pid file does not name the master"

            ngx.start()
            wait_answer(port, "/healthz", ngx, svc)

            status, h, body = request(port, "GET", "/", {"X-No-Cache": "1"})
            assert status == 200, (status, body[:300], ngx.log_tail())
            assert h.get("Content-Type") == "application/json", h
            assert json_of(body).get("message") == "Hello, World!", body
            worker = int(h["X-Worker"])
            if ids:
                assert set(uid_of(worker)) == {ids[0]}, f"worker {worker} runs as uid {uid_of(worker)}, not perfcgi"
                assert set(uid_of(svc.pid)) == {ids[0]}, f"the master runs as uid {uid_of(svc.pid)}, not perfcgi"
            with open(f"/proc/{worker}/status") as f:
                assert "NoNewPrivs:\t1" in f.read(), "NoNewPrivileges=yes was not applied"

            status, h, body = request(port, "HEAD", "/", {"X-No-Cache": "1"})
            assert status == 200 and body == b"", (status, body)
            assert h.get("Content-Type") == "application/json" and "X-Worker" in h, h

            status, h, body = request(port, "GET", "/healthz")
            assert status == 200 and json_of(body) == {"status": "ok"}, (status, body)
            status, h, body = request(port, "GET", "/readyz")  # no Redis/PostgreSQL needed: 200 or 503
            assert status in (200, 503) and json_of(body), (status, body)
            status, h, body = request(port, "GET", "/status")
            assert status == 200 and isinstance(json_of(body).get("listen_queue"), int), (status, body)

            # Nginx's cache is writable by its workers: the micro-cached / becomes a HIT.
            def cache_hit():
                s, hh, _ = request(port, "GET", "/")
                assert s == 200, s
                return hh.get("X-Cache-Status") == "HIT"
            wait_until(cache_hit, 10, interval=0.05, message="a cache HIT on / (is Nginx's cache writable?)")

            # ExecReload: new workers replace the old ones, the site keeps serving.
            before = set(children_of(svc.pid))
            reload_argv = [a.replace("$MAINPID", str(svc.pid)) for a in shlex.split(unit_value(unit, "ExecReload"))]
            svc.run_as_unit(reload_argv)
            wait_for(lambda: (set(children_of(svc.pid)) and not set(children_of(svc.pid)) & before
                              and len(children_of(svc.pid)) == len(before)), START_TIMEOUT,
                     "new workers after ExecReload", ("perfcgi", svc.log_tail))
            status, h, body = request(port, "GET", "/", {"X-No-Cache": "1"})
            assert status == 200 and int(h["X-Worker"]) not in before, (status, h)

            # Stop as systemd does (KillMode=mixed: KillSignal to the master): a clean exit
            # within TimeoutStopSec, nothing left behind.
            workers = children_of(svc.pid)
            os.kill(svc.pid, signal.Signals[unit_value(unit, "KillSignal")])
            try:
                rc = svc.p.wait(timeout=seconds(unit_value(unit, "TimeoutStopSec")))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"perfcgi did not stop within TimeoutStopSec: {svc.log_tail()}") from None
            assert rc == 0, f"perfcgi exited {rc} on {unit_value(unit, 'KillSignal')}: {svc.log_tail()}"
            wait_until(lambda: not any(proc_alive(w) for w in workers), 10, message="workers gone")
            left = [p for p in (app_sock, status_sock, pidfile) if os.path.exists(p)]
            assert not left, f"left in the runtime directory after the stop: {left}"
        finally:
            ngx.stop()
            svc.stop()


def test_host_install_config_started_by_root_runs_workers_as_perfcgi():
    # Without the unit's User=, as root by hand: the configuration's user/group apply,
    # workers run as perfcgi and the FastCGI socket is theirs.
    if os.geteuid() != 0:
        raise Skip("not root: the privilege switch cannot be tried")
    with TempDir() as tmp:
        dest = os.path.join(tmp, "dest")
        ids = perfcgi_user(install(dest))
        unit = unit_entries(read(dest + UNIT))
        conf = print_config(dest + PREFIX + "/bin/perfcgi", dest + CONF)
        run_dir = os.path.join(tmp, "run")
        os.mkdir(run_dir, 0o755)
        overrides = runtime_overrides(conf, run_dir)
        env_file = write(os.path.join(tmp, "default-perfcgi"),
                         "".join(f"{k}={v}\n" for k, v in overrides.items()), 0o600)
        app_sock = overrides["PERFCGI_BIND"].removeprefix("unix:")
        status_sock = overrides["PERFCGI_STATUS_BIND"].removeprefix("unix:")
        svc = UnitProcess(unit, dest, env_file, os.path.join(tmp, "perfcgi.log"), as_user=False)
        try:
            svc.start()
            wait_serving(svc, [app_sock, status_sock])
            # A worker shows up at fork and switches user a moment later: wait for the switch.
            def switched():
                kids = children_of(svc.pid)
                return kids if kids and all(set(uid_of(w) or [ids[0]]) == {ids[0]} for w in kids) else None
            workers = wait_for(switched, START_TIMEOUT, "workers running as perfcgi", ("perfcgi", svc.log_tail))
            assert uid_of(svc.pid)[0] == 0
            wrong = {w: uid_of(w) for w in workers if set(uid_of(w) or [ids[0]]) != {ids[0]}}
            assert not wrong, f"workers not running as perfcgi ({ids[0]}): {wrong}"
            st = os.stat(app_sock)
            assert (st.st_uid, st.st_gid) == ids, f"{app_sock} is {st.st_uid}:{st.st_gid}, not perfcgi's"
            os.kill(svc.pid, signal.SIGTERM)
            rc = svc.p.wait(timeout=seconds(unit_value(unit, "TimeoutStopSec")))
            assert rc == 0, f"exit {rc}: {svc.log_tail()}"
        finally:
            svc.stop()
