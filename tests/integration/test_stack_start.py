"""Starting a stack when a port chosen free is taken before the stack binds it.

No shared stack: the test starts a private one (harness.Stack) on a port that another
socket holds, and stops it again, whatever happens.
"""

import http.client
import socket

from harness import Stack, free_ports, need_local_stack

NEEDS_STACK = False
# It runs the stack's own perfcgi start-up, nothing the sanitizer pass must see again.
RUNS_PERFCGI_BIN = False


def test_stack_start_takes_new_ports_when_one_was_taken():
    need_local_stack("starts a local stack")
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    tries = []

    def choose():
        # The first choice collides on the Nginx port, as a port chosen, closed and
        # bound meanwhile by another program would.
        ports = free_ports(4)
        tries.append(ports)
        return ports if len(tries) > 1 else [taken] + ports[1:]

    stack = Stack(choose)
    try:
        stack.start()
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
        try:
            conn.request("GET", "/readyz")
            status = conn.getresponse().status
        finally:
            conn.close()
    finally:
        stack.stop()
        holder.close()
    assert len(tries) == 2, f"{len(tries)} choices of ports (2 expected: the taken one, then new ones)"
    assert stack.port != taken and stack.port == tries[1][0], (stack.port, taken, tries)
    assert any(str(taken) in c for c in stack.collisions), f"the collision reported: {stack.collisions}"
    assert status == 200, f"/readyz of the stack started on new ports: {status}"
