"""Every FastCGI front end that Debian packages, in front of every worker class.

Nginx (plain, and keep-conn with an upstream keepalive pool as PHP-FPM setups have it),
lighttpd mod_fastcgi, Apache mod_proxy_fcgi, HAProxy fcgi-app, h2o, Caddy and cgi-fcgi
each send their own set of CGI variables (Caddy: DOCUMENT_URI and SCRIPT_NAME empty) and
use connections their own way. For each class (sync, thread, event) a private perfcgi
serves on a free loopback port, and each front end, started once per class on a free
loopback port with its configuration in a temp dir, must answer `GET /`, `GET /?x=1`,
`HEAD /` (no body) and `POST /` (405 JSON with Allow) from the application. A front end
that is not installed is a skip, never a pass.

No stack needed: `/` uses no backend. System services are never used.
"""

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import PrivatePerfcgi, Skip, clean_env, free_port, kill_session, read_text, recv_all, wait_until

NEEDS_STACK = False

CLASSES = ("sync", "thread", "event")
HTTP_TIMEOUT = 15
START_TIMEOUT = 20


def perfcgi(worker_class, **settings):
    """A private perfcgi of one class on a free loopback TCP port."""
    return PrivatePerfcgi(worker_class, tcp=True, **settings)


def need(*binaries):
    missing = [b for b in binaries if not shutil.which(b)]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed (deploy/install-deps.sh test)")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


# --- the front ends: each writes its configuration and returns its command line --------

def nginx_conf(d, port, app, keep_conn=False):
    need("nginx")
    if not os.path.exists("/etc/nginx/fastcgi_params"):
        raise Skip("/etc/nginx/fastcgi_params is missing (nginx-common)")
    temps = "".join(f"    {k}_temp_path {d}/{k};\n" for k in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi"))
    pool = "keepalive 16;" if keep_conn else ""
    conf = write(f"{d}/nginx.conf", f"""{'user root;' if os.geteuid() == 0 else ''}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
{temps}
    upstream app {{
        server {app[0]}:{app[1]} max_fails=0;
        {pool}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include /etc/nginx/fastcgi_params;
            fastcgi_pass app;
            fastcgi_keep_conn {'on' if keep_conn else 'off'};
            fastcgi_connect_timeout 5s;
            fastcgi_read_timeout 10s;
        }}
    }}
}}
""")
    return ["nginx", "-p", d + "/", "-c", conf, "-e", f"{d}/error.log", "-g", "daemon off;"], {}


def nginx_keep_conn_conf(d, port, app):
    return nginx_conf(d, port, app, keep_conn=True)


def lighttpd_conf(d, port, app):
    need("lighttpd")
    conf = write(f"{d}/lighttpd.conf", f"""server.document-root = "{d}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{d}/error.log"
server.modules = ("mod_fastcgi")
fastcgi.server = ("/" => (("host" => "{app[0]}", "port" => {app[1]}, "check-local" => "disable")))
""")
    return ["lighttpd", "-D", "-f", conf], {}


def apache_conf(d, port, app):
    need("apache2")
    mods = "/usr/lib/apache2/modules"
    if not os.path.exists(f"{mods}/mod_proxy_fcgi.so"):
        raise Skip("mod_proxy_fcgi is not installed (apache2)")
    owner = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
    conf = write(f"{d}/apache2.conf", f"""ServerRoot "{d}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {d}/apache2.pid
ErrorLog {d}/error.log
LogLevel warn
Mutex posixsem
{owner}LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule proxy_module {mods}/mod_proxy.so
LoadModule proxy_fcgi_module {mods}/mod_proxy_fcgi.so
ProxyPass "/" "fcgi://{app[0]}:{app[1]}/"
""")
    return ["apache2", "-X", "-d", d, "-f", conf], {}


def haproxy_conf(d, port, app):
    need("haproxy")
    conf = write(f"{d}/haproxy.cfg", f"""defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
fcgi-app perfcgi
    docroot {d}
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    use-fcgi-app perfcgi
    server perfcgi {app[0]}:{app[1]} proto fcgi
""")
    return ["haproxy", "-db", "-f", conf], {}


def h2o_conf(d, port, app):
    need("h2o")
    conf = write(f"{d}/h2o.conf", f"""{'user: root' if os.geteuid() == 0 else ''}
listen:
  host: 127.0.0.1
  port: {port}
pid-file: {d}/h2o.pid
error-log: {d}/error.log
hosts:
  default:
    paths:
      /:
        fastcgi.connect:
          host: {app[0]}
          port: {app[1]}
          type: tcp
""")
    return ["h2o", "-m", "worker", "-c", conf], {}


def caddy_conf(d, port, app):
    need("caddy")
    conf = write(f"{d}/Caddyfile", f"""{{
    admin off
    auto_https off
}}
http://:{port} {{
    bind 127.0.0.1
    reverse_proxy {app[0]}:{app[1]} {{
        transport fastcgi {{
            root {d}
        }}
    }}
}}
""")
    home = {"HOME": d, "XDG_CONFIG_HOME": f"{d}/config", "XDG_DATA_HOME": f"{d}/data"}
    return ["caddy", "run", "--config", conf, "--adapter", "caddyfile"], home


class FrontEnd:
    """One front end, started with its configuration in a temp dir, on a free port."""

    def __init__(self, render, app):
        self.render, self.app = render, app
        self.dir = self.p = None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="pcgi-fe-", dir="/tmp")
        os.chmod(self.dir, 0o755)  # workers that drop root still reach their temp files
        try:
            self.port = free_port()
            args, env = self.render(self.dir, self.port, self.app)
            self.out = os.path.join(self.dir, "out.log")
            with open(self.out, "ab") as out:
                self.p = subprocess.Popen(args, env=clean_env(**env), cwd=self.dir, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

            def listening():
                if self.p.poll() is not None:
                    raise AssertionError(f"{args[0]} exited with {self.p.returncode}: {self.logs()}")
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            wait_until(listening, START_TIMEOUT, interval=0.1, message=f"{args[0]} listening")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def logs(self):
        return "".join(f" [{name}] " + read_text(os.path.join(self.dir, name))[-600:]
                       for name in ("out.log", "error.log"))

    def __exit__(self, *exc):
        try:
            if self.p is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.p.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.p.wait(timeout=5)
                kill_session(self.p, lambda: self.p.wait(timeout=10))
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


def http_request(port, method, path, body=None):
    """(status, headers {lower name: value}, body) on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw_head(port):
    """HEAD / over a raw socket: (status, headers, whatever bytes follow the headers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT) as s:
        s.sendall(b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % port)
        data = recv_all(s)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def check_answers(port):
    """The four answers every front end must pass on: a list of what went wrong."""
    problems = []

    def check(what, cond, detail):
        if not cond:
            problems.append(f"{what}: {detail}")

    for path in ("/", "/?x=1"):
        st, h, body = http_request(port, "GET", path)
        try:
            obj = json.loads(body)
        except ValueError:
            obj = None
        check(f"GET {path}", st == 200 and isinstance(obj, dict) and obj.get("message") == "Hello, World!"
              and h.get("x-worker", "").isdigit(), f"{st} x-worker={h.get('x-worker')} {body[:200]!r}")
    st, h, rest = raw_head(port)
    check("HEAD /", st == 200 and rest == b"" and h.get("x-worker", "").isdigit(),
          f"{st} x-worker={h.get('x-worker')} body after the headers: {rest[:200]!r}")
    st, h, body = http_request(port, "POST", "/", body=b"a=1")
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    check("POST /", st == 405 and isinstance(obj, dict) and obj.get("error") == "method_not_allowed"
          and h.get("allow") == "GET, HEAD" and h.get("x-worker", "").isdigit(),
          f"{st} allow={h.get('allow')} x-worker={h.get('x-worker')} {body[:200]!r}")
    return problems


def check_front_end(render):
    """Every class behind one front end; all the problems of all classes in one failure."""
    problems = []
    for worker_class in CLASSES:
        with perfcgi(worker_class, workers=2, threads=2) as pc, FrontEnd(render, pc.address) as fe:
            try:
                found = check_answers(fe.port)
            except Exception as exc:  # noqa: BLE001 - reported with the class
                found = [f"{type(exc).__name__}: {exc}"]
            problems += [f"{worker_class}: {p}" for p in found]
            if found:
                problems.append(f"{worker_class} logs: {fe.logs()[-400:]}")
    assert not problems, "; ".join(problems)


def test_frontend_nginx():
    check_front_end(nginx_conf)


def test_frontend_nginx_keep_conn():
    check_front_end(nginx_keep_conn_conf)


def test_frontend_lighttpd():
    check_front_end(lighttpd_conf)


def test_frontend_apache_proxy_fcgi():
    check_front_end(apache_conf)


def test_frontend_haproxy_fcgi_app():
    check_front_end(haproxy_conf)


def test_frontend_h2o():
    check_front_end(h2o_conf)


def test_frontend_caddy():
    check_front_end(caddy_conf)


def cgi_fcgi(app, method, query="", body=b""):
    """One request through cgi-fcgi with the CGI variables a web server would set:
    (status line, headers {lower name: value}, body)."""
    env = clean_env(GATEWAY_INTERFACE="CGI/1.1", SERVER_PROTOCOL="HTTP/1.1", REQUEST_METHOD=method,
                    SCRIPT_NAME="", PATH_INFO="/", QUERY_STRING=query,
                    REQUEST_URI="/" + ("?" + query if query else ""), REMOTE_ADDR="127.0.0.1",
                    SERVER_NAME="localhost", SERVER_PORT="80", CONTENT_LENGTH=str(len(body)))
    r = subprocess.run(["cgi-fcgi", "-bind", "-connect", "%s:%d" % app], env=env, input=body,
                       capture_output=True, timeout=HTTP_TIMEOUT)
    assert r.returncode == 0, f"cgi-fcgi exit {r.returncode}: {r.stderr[-300:]!r}"
    head, _, rest = r.stdout.partition(b"\r\n\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in head.decode("latin-1").split("\r\n"))}
    return headers.get("status", ""), headers, rest


def test_frontend_cgi_fcgi():
    need("cgi-fcgi")
    problems = []
    for worker_class in CLASSES:
        with perfcgi(worker_class, workers=2, threads=2) as pc:
            for query in ("", "x=1"):
                st, h, body = cgi_fcgi(pc.address, "GET", query)
                if not (st.startswith("200") and b"Hello, World!" in body and h.get("x-worker", "").isdigit()):
                    problems.append(f"{worker_class} GET /?{query}: {st} {body[:200]!r}")
            st, h, body = cgi_fcgi(pc.address, "HEAD")
            if not (st.startswith("200") and body == b"" and h.get("x-worker", "").isdigit()):
                problems.append(f"{worker_class} HEAD /: {st} body {body[:200]!r}")
            st, h, body = cgi_fcgi(pc.address, "POST", body=b"a=1")
            if not (st.startswith("405") and b'"method_not_allowed"' in body and h.get("allow") == "GET, HEAD"):
                problems.append(f"{worker_class} POST /: {st} allow={h.get('allow')} {body[:200]!r}")
    assert not problems, "; ".join(problems)


# --- kept-alive FastCGI connections under load -----------------------------------------

CLIENTS = 8
REQUESTS_PER_CLIENT = 300


def keep_conn_load(worker_class):
    """Nginx with an upstream keepalive pool (16) and fastcgi_keep_conn on, in front of 2
    workers (2 threads each for the thread class), 8 clients each sending 300 sequential
    GETs on a kept-alive HTTP connection: every answer a 200 from the application."""
    need("nginx")
    ok, failures = [0], []
    lock = threading.Lock()
    with perfcgi(worker_class, workers=2, threads=2) as pc, FrontEnd(nginx_keep_conn_conf, pc.address) as fe:
        def client(i):
            conn = http.client.HTTPConnection("127.0.0.1", fe.port, timeout=HTTP_TIMEOUT)
            try:
                for k in range(REQUESTS_PER_CLIENT):
                    path = "/" if (i + k) % 2 else "/?x=1"
                    try:
                        conn.request("GET", path)
                        resp = conn.getresponse()
                        body = resp.read()
                        good = resp.status == 200 and (resp.getheader("X-Worker") or "").isdigit()
                        what = None if good else f"{resp.status} {body[:120]!r}"
                    except Exception as exc:  # noqa: BLE001 - every error is a failure
                        what = f"{type(exc).__name__}: {exc}"
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", fe.port, timeout=HTTP_TIMEOUT)
                    with lock:
                        if what is None:
                            ok[0] += 1
                        else:
                            failures.append(f"{path}: {what}")
                        if len(failures) > 20:
                            return
            finally:
                conn.close()
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        took = time.monotonic() - t0
        assert not any(t.is_alive() for t in threads), "clients still running after 240 s"
        assert not failures, (f"{worker_class}: {len(failures)} failed of {ok[0] + len(failures)} "
                              f"(first: {failures[:3]}); nginx: {fe.logs()[-400:]}")
        assert ok[0] == CLIENTS * REQUESTS_PER_CLIENT, ok[0]
        print(f"    {worker_class}: {ok[0]} requests, 0 failed, {took:.1f}s")


def test_frontend_nginx_keep_conn_load_sync():
    keep_conn_load("sync")


def test_frontend_nginx_keep_conn_load_thread():
    keep_conn_load("thread")


def test_frontend_nginx_keep_conn_load_event():
    keep_conn_load("event")
