"""bench/perfbench/procs.py: CPU time and peak resident memory of groups of processes,
read from /proc as top reads them, sampled in a thread while a measurement runs.

CPU time of a group over a run = the CPU its live members used during the run, plus what
members that exited during the run used in it (their parent, the group's reaper, collects
their whole life's time as cutime when it reaps them; what they had used before the run
is taken off again)."""
import os
import threading

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
SAMPLE_S = 0.2


def stat(pid):
    """(cpu ticks, children's cpu ticks, rss KiB) of a process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state): utime 14, stime 15, cutime 16, cstime 17, rss 24
    return (int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]),
            int(fields[21]) * PAGE_KB)


def memory(pid):
    """{"pss_kb", "private_kb"} of a process from /proc/PID/smaps_rollup, or None if gone.
    RSS counts every page a process maps, the shared libraries' code that every worker
    and the master map once between them included; Pss shares such a page out among its
    users, and private pages (clean or dirty) are the process's alone."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Pss", "Private_Clean", "Private_Dirty"):
                    fields[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if len(fields) < 3:
        return None
    return {"pss_kb": fields["Pss"], "private_kb": fields["Private_Clean"] + fields["Private_Dirty"]}


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class Group:
    """members() -> the pids of the group now; reaper: the pid that reaps them, or None."""

    def __init__(self, name, members, reaper=None):
        self.name, self.members, self.reaper = name, members, reaper


class Sampler:
    def __init__(self, groups):
        self.groups = groups
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self.first = {g.name: {} for g in self.groups}  # pid -> (cpu at first sight, seen at start?)
        self.last = {g.name: {} for g in self.groups}
        self.peak = {g.name: 0 for g in self.groups}
        self.most = {g.name: 0 for g in self.groups}
        self.reaped0 = {g.name: self._reaped(g) for g in self.groups}
        self._sample(at_start=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample(at_start=False)

    @staticmethod
    def _reaped(g):
        s = stat(g.reaper) if g.reaper else None
        return s[1] if s else 0

    def _loop(self):
        while not self._stop.wait(SAMPLE_S):
            self._sample(at_start=False)

    def _sample(self, at_start):
        for g in self.groups:
            rss, alive = 0, 0
            for pid in g.members():
                s = stat(pid)
                if s is None:
                    continue
                alive += 1
                rss += s[2]
                self.first[g.name].setdefault(pid, (s[0], at_start))
                self.last[g.name][pid] = s[0]
            self.peak[g.name] = max(self.peak[g.name], rss)
            self.most[g.name] = max(self.most[g.name], alive)

    def result(self):
        """{group: {cpu_s, peak_rss_kb, processes}} over the sampled run."""
        out = {}
        for g in self.groups:
            alive_now = set(g.members())
            ticks = self._reaped(g) - self.reaped0[g.name] if g.reaper else 0
            for pid, (cpu0, at_start) in self.first[g.name].items():
                if pid in alive_now:
                    ticks += self.last[g.name][pid] - cpu0
                elif at_start and g.reaper:
                    ticks -= cpu0  # its life before the run is in the reaper's cutime too
                elif not g.reaper:
                    ticks += self.last[g.name][pid] - cpu0
            out[g.name] = {"cpu_s": round(max(ticks, 0) / TICK, 3), "peak_rss_kb": self.peak[g.name],
                           "processes": self.most[g.name]}
        return out


def _tcp_peer_ports():
    """{socket inode: remote port} of every established TCP connection (IPv4 and IPv6)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "01":  # 01: ESTABLISHED
                out[fields[9]] = int(fields[2].rsplit(":", 1)[1], 16)
    return out


def peer_ports(pids):
    """{pid: [remote port of each established TCP connection it holds]}: which backends a
    process has a connection open to."""
    peers = _tcp_peer_ports()
    out = {}
    for pid in pids:
        ports = []
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            fds = []
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                port = peers.get(link[8:-1])
                if port is not None:
                    ports.append(port)
        out[pid] = ports
    return out
