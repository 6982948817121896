"""bench/perfbench/load.py: runs the load tools once each and parses their figures:
wrk (closed loop: every connection sends its next request when the last is answered)
and npm's loadtest (open loop: a request every 1/rate seconds, answered or not)."""
import json
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
WRK_SCRIPT = BENCH / "wrk" / "report.lua"
OPENLOOP = BENCH / "openloop.mjs"
NO_CACHE = "X-No-Cache: 1"

# Every figure a measurement has, whichever tool made it (None: the tool has no such figure).
FIELDS = ("requests", "rps", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "non2xx",
          "connect_errors", "read_errors", "write_errors", "timeouts", "cache_hits", "cache_misses")


class LoadError(RuntimeError):
    pass


def _run(cmd, marker, limit_s):
    """Runs a load tool; the JSON object on its line starting with marker."""
    try:
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=limit_s, cwd=BENCH)
    except subprocess.TimeoutExpired as e:
        raise LoadError(f"{cmd[0]} did not finish within {limit_s:.0f} s") from e
    for line in out.stdout.splitlines():
        if line.startswith(marker):
            return json.loads(line[len(marker):])
    raise LoadError(f"{cmd[0]} printed no result (exit {out.returncode}): "
                    f"{(out.stderr or out.stdout).strip()[-400:]}")


# Runs this short that count the cache hold wrk's Lua garbage collector (bench/wrk/report.lua).
# Created cold-key waves on steady event workers, the two alternated, 6 each: p99 median
# 9.4 ms held, 12.9 ms collecting (ranges 8.1-25.7 and 7.2-38.3 overlap: a small gain,
# since wrk's coordinated-omission correction multiplies any pause of its own). Held for
# 2 s at 40,000 answers a second, wrk's RSS was 45 MB (5.6 MB collecting).
HOLD_GC_MAX_S = 2


def wrk(url, connections, seconds, headers=(), mix=None, count_cache=False, timeout_s=30):
    """One wrk run. mix: {path: weight} sent instead of url's path; count_cache: count
    X-Cache-Status. A request unanswered after timeout_s counts as a timeout."""
    threads = max(1, min(2, connections))
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s",
           "-s", str(WRK_SCRIPT)]
    for h in headers:
        cmd += ["-H", h]
    cmd += [url, "--"]
    if mix:
        cmd += ["mix", ",".join(f"{p}={w}" for p, w in mix.items())]
    if count_cache:
        cmd.append("cache")
        if seconds <= HOLD_GC_MAX_S:
            cmd.append("hold-gc")
    r = _run(cmd, "WRKJSON ", seconds + timeout_s + 30)
    out = {k: r.get(k) for k in FIELDS}
    if not count_cache:
        out["cache_hits"] = out["cache_misses"] = None
    return out


def openloop(url, rate, seconds, headers=()):
    """Latency while holding `rate` requests a second for `seconds`."""
    cmd = ["node", str(OPENLOOP), url, str(rate), str(seconds), *headers]
    r = _run(cmd, "OPENLOOPJSON ", seconds + 60)
    out = {k: r.get(k) for k in FIELDS}
    # loadtest tells answers >= 400 from failures of the connection, not their kind.
    out.update(connect_errors=r["socket_errors"], read_errors=0, write_errors=0, timeouts=0,
               cache_hits=None, cache_misses=None)
    return out


def wrk_version():
    r = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    words = (r.stdout + r.stderr).split()
    return words[1] if len(words) > 1 else "unknown"


def loadtest_version():
    try:
        return json.loads((BENCH / "node_modules" / "loadtest" / "package.json").read_text())["version"]
    except OSError:
        return None
