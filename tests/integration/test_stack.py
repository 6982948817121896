"""deploy/stack.sh itself on the suite's stack: later commands act on the stack `up` started.

Runs stack.sh with RUN_DIR alone (no ports, no PERFCGI_* settings), as a user would after
`PORT=8081 REDIS_PORT=16380 PG_PORT=15433 make up`. Every service stopped is started
again, and the stack is ready again, before a test returns.
"""

import subprocess

from harness import (STACK, STACK_CMD_TIMEOUT, STACK_SH, REPO, WORKER_CLASS, WORKERS, clean_env, http,
                     need_local_stack, pm_status, redis_cli, restore_perfcgi, wait_ready, wait_until,
                     wait_workers)


def bare_stack_sh(*args):
    """stack.sh ARGS with RUN_DIR only: whatever else it needs, it must remember."""
    need_local_stack("runs deploy/stack.sh")
    r = subprocess.run([str(STACK_SH), *args], env=clean_env(RUN_DIR=STACK.run_dir), cwd=str(REPO),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=STACK_CMD_TIMEOUT)
    assert r.returncode == 0, f"stack.sh {' '.join(args)} (RUN_DIR only): exit {r.returncode}: {r.stdout}{r.stderr}"
    return r.stdout


def test_stack_commands_remember_the_ports_and_settings_of_up():
    lines = {ln.split()[0]: ln for ln in bare_stack_sh("status").splitlines() if ln.strip()}
    for svc, where in (("redis", f"redis://127.0.0.1:{STACK.redis_port}/0"),
                       ("postgres", f"@127.0.0.1:{STACK.pg_port}/"), ("nginx", f"http://127.0.0.1:{STACK.port}/")):
        assert where in lines.get(svc, ""), f"status without the ports: {lines.get(svc)!r} lacks {where}"
    bare_stack_sh("stop", "redis")
    try:
        wait_until(lambda: http("GET", "/readyz")[0] == 503, 30, message="/readyz 503 with Redis stopped")
    finally:
        bare_stack_sh("start", "redis")
    assert redis_cli("PING") == "PONG", f"no Redis on the stack's port {STACK.redis_port}"
    wait_ready(30)
    # perfcgi too: the settings `up` gave it (worker class, workers) come back with it.
    try:
        bare_stack_sh("stop", "perfcgi")
        bare_stack_sh("start", "perfcgi")
        wait_workers(WORKERS)
        st = pm_status()
        assert (st["worker_class"], st["total_processes"]) == (WORKER_CLASS, WORKERS), \
            f"perfcgi restarted without its settings: {st['total_processes']} {st['worker_class']} workers"
        wait_ready(30)
    except BaseException:
        restore_perfcgi()
        raise
