"""Hostile clients through the stack: forged log lines, memory pinned on every worker,
load endpoints hammered from another host.

Through the stack's Nginx (and its unix socket for a raw FastCGI client); perfcgi is
restarted with other settings where a test needs it (perfcgi_with), and the usual one
comes back afterwards.
"""

import os
import re
import time
import urllib.parse

from harness import (STACK, WORKERS, app_socket, assert_app_answer, fcgi_connect, fcgi_request, get,
                     perfcgi_with, wait_until)

# One access line; inside the quoted request, a quote or a backslash only escaped.
ACCESS_LINE = re.compile(r'^(?P<remote>\S+) - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                         r'"(?P<method>[A-Z]+) (?P<target>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d+) '
                         r'(?P<ms>\d+(?:\.\d+)?) (?P<pid>\d+)$')
FORGED = '127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET /forged" 200 1 1.0 1'


def _lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read().split("\n")[:-1]
    except FileNotFoundError:
        return []


# --- CR/LF in request data reach no log raw ---------------------------------------------------------

def test_crlf_in_a_decoded_path_cannot_forge_access_log_lines():
    log = os.path.join(STACK.run_dir, "access-forge.log")
    path = "/no-such\r\n" + FORGED + '\\"'
    with perfcgi_with(access_log=log):
        status, h, body = get(urllib.parse.quote(path, safe="/"))
        assert status == 404 and "X-Worker" in h, (status, dict(h), body)
        s, h2, b = get("/?after=forge")
        assert_app_answer(s, h2, b)
        lines = wait_until(lambda: (ls := _lines(log)) and any("after=forge" in ln for ln in ls) and ls, 10,
                           message="the access lines")
    try:
        bad = [ln for ln in lines if not ACCESS_LINE.match(ln)]
        assert not bad, f"lines that are not one access line each: {bad}"
        targets = [ACCESS_LINE.match(ln)["target"] for ln in lines]
        assert not any(t.startswith("/forged") for t in targets), f"a forged line: {lines}"
        escaped = "/no-such\\x0d\\x0a" + FORGED.replace('"', '\\"') + '\\\\\\"'
        assert escaped in targets, f"the request is not logged escaped ({escaped!r}): {targets}"
    finally:
        os.unlink(log)


def test_crlf_in_fastcgi_params_cannot_forge_error_log_lines():
    # A raw FastCGI client puts CR/LF in QUERY_STRING of a request that outlives
    # `timeout`: the master's "busy for over" line quotes it.
    marker = f"forge{os.getpid()}"
    with perfcgi_with(timeout=1):
        start = len(STACK.log_tail("perfcgi.log", 10 ** 6) or "")
        sock = fcgi_connect(app_socket(), timeout=30)
        try:
            try:
                fcgi_request(sock, "/cpu-intensive", f"n=10000000&x=\r\n{marker} [master] error: \"forged\"")
            except (OSError, EOFError):
                pass  # the worker is aborted mid-request
        finally:
            sock.close()
        text = wait_until(lambda: (t := (STACK.log_tail("perfcgi.log", 10 ** 6) or "")[start:]) and
                          "busy for over" in t and t, 20, message="the master's timeout line")
    lines = [ln for ln in text.split("\n") if marker in ln]
    assert lines and all("busy for over" in ln for ln in lines), \
        f"the query reached the error log raw, a line of its own: {lines}"
    assert f'\\x0d\\x0a{marker} [master] error: \\"forged\\"' in lines[0], lines[0]
