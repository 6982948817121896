#!/usr/bin/env python3
"""nginx_templates.py: nginx/perfcgi.conf.template rendered for perfcgi's default settings
(bin/perfcgi --print-config), with and without the event class's upstream keepalive,
keeps Nginx's timeouts where perfcgi needs them (deploy/nginx_timeouts.sh check): a
template edit or a new default that breaks them fails here. The check itself is tested
on settings that break each relation. Exits 0 when all hold. Standard library only."""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOL = str(REPO / "deploy" / "nginx_timeouts.sh")


def defaults():
    out = subprocess.run([str(REPO / "bin" / "perfcgi"), "--print-config"], capture_output=True, text=True,
                         check=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}).stdout
    conf = dict(re.findall(r"^(\w+) = (.*)$", out, re.M))
    return conf["timeout"], conf["keepalive_timeout"]


def render(keepalive_line, dst):
    env = dict(os.environ, NGINX_LISTEN_ADDR="127.0.0.1", NGINX_PORT="8080", NGINX_APP_SERVER="unix:/run/p.sock",
               NGINX_STATUS_SERVER="unix:/run/s.sock", NGINX_CACHE_DIR="/var/cache/p",
               NGINX_UPSTREAM_KEEPALIVE=keepalive_line, NGINX_FASTCGI_KEEP_CONN="on")
    names = " ".join(f"${k}" for k in env if k.startswith("NGINX_"))
    with open(REPO / "nginx" / "perfcgi.conf.template") as src, open(dst, "w") as out:
        subprocess.run(["envsubst", names], stdin=src, stdout=out, env=env, check=True)


def check(conf, timeout, keepalive):
    r = subprocess.run([TOOL, "check", conf, timeout, keepalive], capture_output=True, text=True)
    return r.returncode, r.stdout


def main():
    timeout, keepalive = defaults()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        event_line = subprocess.run([TOOL, "keepalive", keepalive], capture_output=True, text=True,
                                    check=True).stdout.strip()
        for label, line in (("event", event_line), ("sync/thread", "# no keepalive")):
            conf = os.path.join(tmp, f"{label.replace('/', '-')}.conf")
            render(line, conf)
            rc, out = check(conf, timeout, keepalive)
            if rc != 0 or out:
                failures.append(f"{label} with the defaults (timeout {timeout}, keepalive_timeout {keepalive}):\n{out}")
            if label == "event":
                # Each relation broken once: the check must say so.
                for args, word in (((str(10**6), keepalive), "fastcgi_read_timeout"),
                                   ((timeout, "1"), "keepalive_timeout")):
                    rc, out = check(conf, *args)
                    if rc == 0 or word not in out:
                        failures.append(f"check {args} says nothing of {word}: {out!r}")
    for f in failures:
        print(f"nginx_templates: {f}", file=sys.stderr)
    print(f"nginx templates: {'FAILED' if failures else 'ok'} (timeout {timeout}, keepalive_timeout {keepalive})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
