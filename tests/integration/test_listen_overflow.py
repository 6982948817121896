"""Listen-queue overflows (issue 12, item 6): a sync perfcgi with one worker and a backlog
of 1, flooded by direct connections that send nothing (the worker holds the first, the
queue fills). On a TCP bind the kernel's TcpExtListenOverflows grows (it counts the whole
network namespace: the test asserts growth only); on a unix bind the master's samples find
the queue full. Either way /metrics and /status count it and the master warns, naming the
bind. No stack: perfcgi is the test's own.
"""

import contextlib
import errno
import http.client as httpclient
import socket

from harness import PrivatePerfcgi, parse_metrics, wait_until

NEEDS_STACK = False
FLOOD = 64


def metrics(p):
    conn = httpclient.HTTPConnection("127.0.0.1", p.status_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return parse_metrics(conn.getresponse().read().decode())
    finally:
        conn.close()


def overflows(p):
    return metrics(p).get(("perfcgi_listen_overflows_total", (("bind", p.bind),)), 0)


def flood(p, family, address):
    """FLOOD connections that send nothing, non-blocking: those the queue cannot hold are
    refused (unix: EAGAIN) or left half-open (TCP). Returns the sockets, to keep open."""
    socks = []
    for _ in range(FLOOD):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(address)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            s.close()
            raise AssertionError(f"connect: {errno.errorcode.get(err, err)}")
        socks.append(s)
    return socks


def check_overflow(p, family):
    assert overflows(p) == 0 or family == socket.AF_INET, "overflows before any flood"
    before = overflows(p)
    socks = flood(p, family, p.address)
    try:
        wait_until(lambda: overflows(p) > before, 20, message=f"listen overflows of {p.bind} counted")
        wait_until(lambda: f"listen queue of {p.bind} full" in p.log_text(), 20,
                   message="the overflow warning")
        assert p.status()["listen_overflows"] > 0, p.status()
        line = next(ln for ln in p.log_text().splitlines() if f"listen queue of {p.bind} full" in ln)
        assert "requests waited up to" in line and "raise workers or backlog" in line, line
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
    # At most one warning a minute: the flood is over well within it.
    assert p.log_text().count(f"listen queue of {p.bind} full") == 1, p.log_text()[-2000:]


def test_tcp_listen_overflows_counted_and_warned():
    with PrivatePerfcgi("sync", tcp=True, workers=1, backlog=1) as p:
        check_overflow(p, socket.AF_INET)


def test_unix_listen_queue_full_counted_and_warned():
    with PrivatePerfcgi("sync", workers=1, backlog=1) as p:
        check_overflow(p, socket.AF_UNIX)
