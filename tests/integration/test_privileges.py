"""perfcgi started as root: the files it opens and the users it runs as, and secrets it prints.

No stack needed: bin/perfcgi runs on its own (free loopback ports, sockets in temporary
directories). The root-only tests skip, saying so, when the suite does not run as root.
Every process started here is ended by its pid (its own process group) before the test
returns, and every directory made here is removed.
"""

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile

from harness import PERFCGI_BIN, Proc, Skip, clean_env, free_port, wait_until

NEEDS_STACK = False
EXIT_TIMEOUT = 15
# How long a perfcgi that should have refused to start gets before it counts as running.
REFUSE_WITHIN = 5
SECRET = "s3cr3t-Pa55"


def need_root():
    if os.geteuid() != 0:
        raise Skip("NOT RUN: needs root (perfcgi only changes users and owners when started as root)")


@contextlib.contextmanager
def worker_dir():
    """A directory owned by the worker user (nobody), as a run or log directory may be,
    and a root-only file elsewhere (0600, owned by root) that a link may point to."""
    nobody = pwd.getpwnam("nobody")
    d = tempfile.mkdtemp(prefix="pcgi-priv-", dir="/tmp")
    safe = tempfile.mkdtemp(prefix="pcgi-root-", dir="/tmp")
    try:
        os.chown(d, nobody.pw_uid, nobody.pw_gid)
        target = os.path.join(safe, "root-only")
        with open(target, "w") as f:
            f.write("root's own content\n")
        os.chmod(target, 0o600)
        yield d, target
    finally:
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(safe, ignore_errors=True)


def file_state(path):
    st = os.lstat(path)
    with open(path, "rb") as f:
        return {"uid": st.st_uid, "gid": st.st_gid, "mode": oct(stat.S_IMODE(st.st_mode)), "content": f.read()}


def base_args(d, **extra):
    args = [str(PERFCGI_BIN), "--user", "nobody", "--workers", "1", "--bind", f"unix:{d}/app.sock",
            "--status-bind", f"127.0.0.1:{free_port()}"]
    for k, v in extra.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return args


def run_refused(args):
    """Runs perfcgi, which must exit on its own within REFUSE_WITHIN s: (rc, stderr),
    or None if it was still running (it is killed then)."""
    with Proc(args) as p:
        try:
            rc, _, err = p.wait(REFUSE_WITHIN)
        except AssertionError:
            return None
        return rc, err


# --- item: the master follows no symlink ---------------------------------------------------------

def test_root_refuses_symlinked_logs_and_pidfile():
    need_root()
    problems = []
    for setting in ("error_log", "access_log", "pidfile"):
        with worker_dir() as (d, target):
            before = file_state(target)
            link = os.path.join(d, setting + ".file")
            os.symlink(target, link)  # what the worker user could plant in its directory
            got = run_refused(base_args(d, **{setting: link}))
            after = file_state(target)
            if after != before:
                problems.append(f"{setting} = {link} -> {target}: the root-only file changed: {before} -> {after}")
            if got is None:
                problems.append(f"{setting} = {link} (a symlink): perfcgi started anyway")
            elif got[0] == 0 or not (setting in got[1] and link in got[1] and "symbolic link" in got[1]):
                problems.append(f"{setting}: exit {got[0]}, the message does not say which file and why: "
                                f"{got[1].strip()!r}")
    assert not problems, "; ".join(problems)


def test_usr1_and_hup_follow_no_symlink_planted_after_start():
    need_root()
    with worker_dir() as (d, target):
        before = file_state(target)
        log, sock = os.path.join(d, "error.log"), os.path.join(d, "app.sock")
        with Proc(base_args(d, error_log=log)) as p:
            wait_until(lambda: os.path.exists(sock) and os.path.getsize(log) > 0, 20, message="perfcgi listening")
            nobody = pwd.getpwnam("nobody")
            assert os.lstat(sock).st_uid == nobody.pw_uid, "the socket was not given to the worker user"
            mode = stat.S_IMODE(os.lstat(sock).st_mode)
            assert mode == 0o660, f"socket mode {oct(mode)}, socket_mode is 0660"
            # The worker user moves its log away and swaps the log and the socket for links
            # to a root-only file; then a rotation (USR1) and a reload (HUP).
            os.rename(log, log + ".1")
            for path in (log, sock):
                os.symlink(target, path + ".planted")
                os.rename(path + ".planted", path)
            os.kill(p.pid, signal.SIGUSR1)
            os.kill(p.pid, signal.SIGHUP)
            wait_until(lambda: any("reloaded" in open(f, errors="replace").read() for f in (log + ".1", target)),
                       20, message="the reload logged")
            after = file_state(target)
            assert after == before, f"USR1 + HUP wrote to or chowned the target of the links at {log} and " \
                                    f"{sock}: {before} -> {after}"
            assert p.p.poll() is None, "the master died on the reload"


# --- item: group without user ----------------------------------------------------------------------

def test_root_refuses_group_without_user():
    need_root()
    with tempfile.TemporaryDirectory(prefix="pcgi-grp-") as d:
        args = [str(PERFCGI_BIN), "--group", "nogroup", "--workers", "1", "--bind", f"unix:{d}/app.sock",
                "--status-bind", f"127.0.0.1:{free_port()}"]
        got = run_refused(args)
        assert got is not None, "--group without --user as root: perfcgi started, workers would run as uid 0"
        rc, err = got
        assert rc != 0 and "group" in err and "user" in err, \
            f"exit {rc}; the message must name group and user: {err.strip()!r}"


def test_reload_to_group_without_user_is_refused():
    need_root()
    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryDirectory(prefix="pcgi-grp-") as d:
        config, log = os.path.join(d, "perfcgi.ini"), os.path.join(d, "error.log")
        common = (f"[perfcgi]\nbind = unix:{d}/app.sock\nstatus_bind = 127.0.0.1:{free_port()}\nworkers = 1\n"
                  f"error_log = {log}\ngroup = nogroup\n")
        with open(config, "w") as f:
            f.write(common + "user = nobody\n")
        with Proc([str(PERFCGI_BIN), "-c", config]) as p:
            def worker_uids():
                kids = [int(t) for t in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()]
                return {k: _uid(k) for k in kids}
            wait_until(lambda: (u := worker_uids()) and set(u.values()) == {nobody.pw_uid}, 20,
                       message="a worker running as nobody")
            with open(config, "w") as f:
                f.write(common)  # user dropped, group kept
            os.kill(p.pid, signal.SIGHUP)
            wait_until(lambda: "reload:" in open(log).read() or "reloaded" in open(log).read(), 20,
                       message="the reload logged")
            text = open(log).read()
            uids = worker_uids()
            assert "reloaded" not in text and "group" in text, f"a reload to group without user: {text[-600:]!r}"
            assert set(uids.values()) == {nobody.pw_uid}, f"workers after the reload: {uids}"
            assert p.p.poll() is None, "the master died on the refused reload"


def _uid(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("Uid:"))


# --- item: secrets are masked ----------------------------------------------------------------------

def test_print_config_and_errors_mask_passwords():
    r = subprocess.run([str(PERFCGI_BIN), "--print-config", "--redis-url", f"redis://:{SECRET}@127.0.0.1:6379/0"],
                       env=clean_env(PERFCGI_DATABASE_URL=f"postgresql://perfcgi:{SECRET}@127.0.0.1/perfcgi"),
                       capture_output=True, text=True, timeout=EXIT_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout, f"--print-config prints the passwords: {r.stdout!r}"
    assert "redis_url = redis://:****@127.0.0.1:6379/0\n" in r.stdout, r.stdout
    assert "database_url = postgresql://perfcgi:****@127.0.0.1/perfcgi\n" in r.stdout, r.stdout
    # A start-up error on a bad redis_url names it, masked.
    bad = f"redis://:{SECRET}@127.0.0.1:99999/0"
    r = subprocess.run([str(PERFCGI_BIN), "--redis-url", bad, "--bind", f"127.0.0.1:{free_port()}",
                        "--status-bind", f"127.0.0.1:{free_port()}"],
                       env=clean_env(), capture_output=True, text=True, timeout=EXIT_TIMEOUT)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert SECRET not in r.stderr, f"the error echoes the password: {r.stderr!r}"
    assert "--redis-url" in r.stderr and "redis://:****@127.0.0.1:99999/0" in r.stderr, r.stderr


def test_reload_with_a_bad_redis_url_logs_it_masked():
    with tempfile.TemporaryDirectory(prefix="pcgi-sec-") as d:
        config, log = os.path.join(d, "perfcgi.ini"), os.path.join(d, "error.log")
        common = (f"[perfcgi]\nbind = unix:{d}/app.sock\nstatus_bind = 127.0.0.1:{free_port()}\nworkers = 1\n"
                  f"error_log = {log}\n")
        with open(config, "w") as f:
            f.write(common)
        with Proc([str(PERFCGI_BIN), "-c", config]) as p:
            wait_until(lambda: os.path.exists(f"{d}/app.sock") and os.path.getsize(log) > 0, 20,
                       message="perfcgi listening")
            with open(config, "w") as f:
                f.write(common + f"redis_url = redis://:{SECRET}@127.0.0.1:99999/0\n")
            os.kill(p.pid, signal.SIGHUP)
            wait_until(lambda: "reload:" in open(log).read(), 20, message="the refused reload logged")
            text = open(log).read()
            assert p.p.poll() is None, "the master died on a bad reload"
        assert SECRET not in text, f"the log shows the password: {text!r}"
        assert "redis://:****@127.0.0.1:99999/0" in text, text
